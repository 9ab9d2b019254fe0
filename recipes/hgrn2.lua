-- HGRN2 (fla.layers.hgrn2 over fla.ops.gla): GLA whose key is derived from the forget
-- gate, k_t = 1 - exp(gk_t); there is no key input.
return recipe "hgrn2" {
  doc        = "HGRN2: S_t = diag(exp(gk_t)) S_{t-1} + (1 - exp(gk_t)) v_t^T, o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", v = "BTHV", gk = "BTHK" },
  transition = { decay = "key:gk" },
  write      = { key = "1-decay", value = "v" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 32, 64 }, BV = { 32, 64 }, warps = { 2, 4, 8 } } },
}
