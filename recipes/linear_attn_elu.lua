-- Linear attention with the elu(x) + 1 feature map on queries and keys.
return recipe "linear_attn_elu" {
  doc     = "Linear attention, elu+1 features: S_t = S_{t-1} + phi(k_t) v_t^T, o_t = S_t^T (scale phi(q_t))",
  inputs  = { q = "BTHK", k = "BTHK", v = "BTHV" },
  feature = { q = "elu1", k = "elu1" },
  write   = { key = "k", value = "v" },
  read    = { query = "q" },
  chunk   = { size = 64, tiles = { BK = { 32, 64, 128 }, BV = { 32, 64, 128 }, warps = { 4, 8 } } },
}
