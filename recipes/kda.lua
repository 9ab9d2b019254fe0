-- Kimi Delta Attention (fla.ops.kda): Gated DeltaNet with a per-key decay; fla names
-- that decay g (layout [B, T, H, K]).
return recipe "kda" {
  doc        = "KDA: S_t = (I - beta_t k_t k_t^T) diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV", g = "BTHK", beta = "BTH" },
  transition = { decay = "key:g", householder = { key = "k", rate = "beta" } },
  write      = { key = "k", value = "v", rate = "beta" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 32, 64 }, BV = { 32, 64 }, warps = { 2, 4, 8 } } },
}
