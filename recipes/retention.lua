-- RetNet retention (fla.ops.retention): a fixed decay per head, gamma_h = 1 - 2^(-5-h).
return recipe "retention" {
  doc        = "Retention: S_t = gamma_h S_{t-1} + k_t v_t^T, gamma_h = 1 - 2^(-5-h), o_t = S_t^T (scale q_t)",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV" },
  transition = {
    -- h is the 0-based head, H the number of heads; returns log(gamma_h).
    decay = { const = function(h, H, p) return math.log(1 - 2 ^ (-5 - h)) end },
  },
  write      = { key = "k", value = "v" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 32, 64, 128 }, BV = { 32, 64, 128 }, warps = { 4, 8 } } },
}
