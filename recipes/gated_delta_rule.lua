-- Gated DeltaNet (fla.ops.gated_delta_rule, use_qk_l2norm_in_kernel=False): decay
-- first, then the delta update.
return recipe "gated_delta_rule" {
  doc        = "Gated DeltaNet: S_t = exp(g_t)(I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV", g = "BTH", beta = "BTH" },
  transition = { decay = "scalar:g", householder = { key = "k", rate = "beta" } },
  write      = { key = "k", value = "v", rate = "beta" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 64, 128 }, BV = { 32, 64 }, warps = { 4, 8 } } },
}
