-- Gated Linear Attention (fla.ops.gla): a log decay per key dimension.
return recipe "gla" {
  doc        = "GLA: S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV", gk = "BTHK" },
  transition = { decay = "key:gk" },
  write      = { key = "k", value = "v" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 32, 64 }, BV = { 32, 64 }, warps = { 2, 4, 8 } } },
}
