-- Based (fla.ops.based, use_norm=False): the 2nd-order Taylor feature map, so that
-- phi(q).phi(k) = 1 + x + x^2/2 with x = q.k / sqrt(K); the output is not rescaled.
return recipe "based" {
  doc     = "Based: S_t = S_{t-1} + phi(k_t) v_t^T, o_t = S_t^T phi(q_t), phi = taylor2 (1 + x + x^2/2 of q.k/sqrt(K))",
  inputs  = { q = "BTHK", k = "BTHK", v = "BTHV" },
  feature = { q = "taylor2", k = "taylor2" },
  write   = { key = "k", value = "v" },
  read    = { query = "q" },
  scale   = 1,
  chunk   = { size = 64, tiles = { BK = { 32, 64 }, BV = { 32, 64 }, warps = { 4, 8 } } },
}
