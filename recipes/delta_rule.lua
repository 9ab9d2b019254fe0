-- DeltaNet (fla.ops.delta_rule, use_qk_l2norm_in_kernel=False: pass normalised keys,
-- or add feature = { q = "l2norm", k = "l2norm" }).
return recipe "delta_rule" {
  doc        = "DeltaNet: S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV", beta = "BTH" },
  transition = { householder = { key = "k", rate = "beta" } },
  write      = { key = "k", value = "v", rate = "beta" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 64, 128 }, BV = { 32, 64 }, warps = { 4, 8 } } },
}
