-- RWKV-6 (fla.ops.rwkv6): per-key decay w, the output reads the state before the token
-- and adds the current token through the bonus u.
return recipe "rwkv6" {
  doc        = "RWKV-6: o_t = (S_{t-1} + diag(u) k_t v_t^T)^T (scale r_t), S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T",
  inputs     = { r = "BTHK", k = "BTHK", v = "BTHV", w = "BTHK", u = "HK" },
  transition = { decay = "key:w" },
  write      = { key = "k", value = "v" },
  read       = { query = "r", state = "before", bonus = "u" },
  chunk      = { size = 64, tiles = { BK = { 32, 64 }, BV = { 32, 64 }, warps = { 2, 4, 8 } } },
}
