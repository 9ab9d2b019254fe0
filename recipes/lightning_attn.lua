-- Lightning attention (fla.ops.lightning_attn): a fixed per-head decay that depends on
-- the layer: log gamma_h = -(8/H) * (1 - layer_idx/num_layers) * h (already a log).
return recipe "lightning_attn" {
  doc        = "Lightning attention: S_t = gamma_h S_{t-1} + k_t v_t^T, log gamma_h = -(8/H)(1 - layer_idx/num_layers) h",
  inputs     = { q = "BTHK", k = "BTHK", v = "BTHV" },
  params     = { layer_idx = 0, num_layers = 1 },
  transition = {
    decay = { const = function(h, H, p) return -(8 / H) * (1 - p.layer_idx / p.num_layers) * h end },
  },
  write      = { key = "k", value = "v" },
  read       = { query = "q" },
  chunk      = { size = 64, tiles = { BK = { 32, 64, 128 }, BV = { 32, 64, 128 }, warps = { 4, 8 } } },
}
