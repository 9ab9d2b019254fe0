-- Linear attention (fla.ops.linear_attn with normalize=False): no decay, plain write.
return recipe "linear_attn" {
  doc    = "Linear attention: S_t = S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t)",
  inputs = { q = "BTHK", k = "BTHK", v = "BTHV" },
  write  = { key = "k", value = "v" },
  read   = { query = "q" },
  chunk  = { size = 64, tiles = { BK = { 32, 64, 128 }, BV = { 32, 64, 128 }, warps = { 4, 8 } } },
}
