/*
** stage_chunk_portable.c -- FLA_STAGE_CHUNK_FWD_PORTABLE: the chunkwise
** forward of the decay family with scalar FMA tiles
** (templates/common/chunk_fwd_portable.h), the variant of chunk_fwd that
** needs no vendor matrix instruction, so it is generated for CUDA and HIP.
**
** Keys: those of chunk_fwd (decay none / const / scalar, plain write read
** after the token), bf16 or f32 inputs, K and V up to 256. Tiles: BT tokens
** a chunk in 1..64, BV value columns a program in 1..64, warps in {1, 2, 4,
** 8, 16}; BK = K (never tiled). Static shared memory (mirrored by smem_)
** at most 48 KiB, which fits CUDA's static limit and AMD's 64 KiB LDS. One
** kernel, fla_chunk_fwd_portable, grid (N*H, ceil(V / BV)); no workspace.
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_portable_common.h"

#include <stdio.h>
#include <string.h>

/* Bytes of the template's static arrays: Qs, Ks, Vs, Ss, As, gam, eg, wl. */
static long smem_(const fla_gen_key *k, const fla_tile_config *c) {
  long bt = c->BT, bv = c->BV, K = k->K;
  return 4 * (2 * bt * (K + 1) + bt * bv + K * bv + bt * (bt + 1) + 3 * bt);
}


void fla_cp_default_config(const fla_gen_key *key, fla_tile_config *cfg, fla_cp_smem_fn smem) {
  cfg->BK = key->K;
  cfg->warps = 4;
  cfg->BV = 1;
  while (cfg->BV < 32 && cfg->BV < key->V) cfg->BV *= 2;
  for (;;) {
    cfg->BT = 32;
    while (cfg->BT > 8 && smem(key, cfg) > FLA_CP_MAX_SMEM) cfg->BT /= 2;
    if (smem(key, cfg) <= FLA_CP_MAX_SMEM || cfg->BV == 1) break;
    cfg->BV /= 2;
  }
}

fla_status fla_cp_check_tiles(fla_ctx *ctx, const char *stage, const fla_gen_key *key,
                              const fla_tile_config *cfg, fla_cp_smem_fn smem) {
  if (key->K > FLA_CP_MAX_KV || key->V > FLA_CP_MAX_KV)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "%s: K = %d, V = %d outside 1..%d", stage, key->K,
                         key->V, FLA_CP_MAX_KV);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID, "%s: BK %d (the key dim is not tiled: BK = K = %d)",
                         stage, cfg->BK, key->K);
  if (cfg->BT < 1 || cfg->BT > FLA_CP_MAX_BT)
    return fla_set_error(ctx, FLA_INVALID, "%s: BT %d outside 1..%d", stage, cfg->BT,
                         FLA_CP_MAX_BT);
  if (cfg->BV < 1 || cfg->BV > FLA_CP_MAX_BV)
    return fla_set_error(ctx, FLA_INVALID, "%s: BV %d outside 1..%d", stage, cfg->BV,
                         FLA_CP_MAX_BV);
  if (!fla_pow2(cfg->warps) || cfg->warps > FLA_CP_MAX_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "%s: warps must be 1, 2, 4, 8 or 16 (got %d)", stage,
                         cfg->warps);
  long bytes = smem(key, cfg);
  if (bytes > FLA_CP_MAX_SMEM)
    return fla_set_error(ctx, FLA_INVALID,
                         "%s: BT=%d, BV=%d with K=%d need %ld bytes of shared memory (at most "
                         "%d): use a smaller BT or BV",
                         stage, cfg->BT, cfg->BV, key->K, bytes, FLA_CP_MAX_SMEM);
  return FLA_OK;
}

int fla_cp_launch(const char *kernel, const fla_gen_key *key, const fla_tile_config *cfg,
                  const fla_kernel_args *args, fla_kernel_launch *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", kernel);
  int64_t pairs = (int64_t)args->N * args->H;
  out->grid[0] = pairs > 0 ? (unsigned)pairs : 1u; /* the kernel skips pairs >= N*H */
  out->grid[1] = (unsigned)((key->V + cfg->BV - 1) / cfg->BV);
  out->grid[2] = 1;
  out->block[0] = (unsigned)(32 * cfg->warps);
  out->block[1] = out->block[2] = 1;
  out->smem = 0; /* static shared memory only */
  return 1;
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->delta) no = "the WY family (delta write) is chunk_wy_fwd_portable's";
  else if (key->decay == 3) no = "per-key decay (GLA) is chunk_gk_fwd_portable's";
  else if (key->read_before) no = "reading before the token (RWKV-6) is chunk_gk_fwd_portable's";
  else if (key->has_bonus) no = "the bonus term is chunk_gk_fwd_portable's";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->key_from_decay) no = "keys derived from the decay (HGRN2) are chunk_gk_fwd_portable's";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_fwd_portable: %s", no);
  return fla_cp_check_tiles(ctx, "chunk_fwd_portable", key, cfg, smem_);
}

FLA_CP_ONE_KERNEL_STAGE(fla_stage_chunk_fwd_portable, "chunk_fwd_portable", "fla_chunk_fwd_portable",
                        "../common/chunk_fwd_portable.h");
