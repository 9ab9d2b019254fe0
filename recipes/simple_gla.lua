-- Simple GLA (fla.ops.simple_gla): one data-dependent log decay per head and token.
-- Mamba2's SSD is this recipe with q = C, k = B, v = x*dt, g = A*dt and scale = 1.
return recipe "simple_gla" {
  doc        = "Simple GLA: S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV", g = "BTH" },
  transition = { decay = "scalar:g" },
  write      = { key = "k", value = "v" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 32, 64, 128 }, BV = { 32, 64, 128 }, warps = { 4, 8 } } },
}
