-- Comba (fla.ops.comba): the delta correction reads the state with its own key p,
-- the write uses k.
return recipe "comba" {
  doc        = "Comba: S_t = (I - beta_t k_t p_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV", p = "BTHK", g = "BTH", beta = "BTH" },
  transition = { decay = "scalar:g", householder = { key = "p", rate = "beta" } },
  write      = { key = "k", value = "v", rate = "beta" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 64, 128 }, BV = { 32, 64 }, warps = { 4, 8 } } },
}
