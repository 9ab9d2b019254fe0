/*
** stage_prep.c -- the prep_fwd stage: templates/cuda/prep_fwd.cuh, one
** kernel, fla_prep_fwd: y[r] = phi(x[r]) row by row (runtime/feature.c).
**
** The key's feature, feature_in_dim (D) and in_bf16 decide the source (the
** generator zeroes the rest and sets K to the output dim). Tile
** configuration: warps (rows a block, one warp a row) in {1, 2, 4, 8, 16,
** 32}; BT, BK, BV unused (0). Grid: ceil(rows / warps) blocks, at most 2^20
** (the kernel loops over the rest). No workspace.
*/
#include "internal.h"
#include "stage.h"

#include <string.h>

#define PREP_MAX_D 65536
#define PREP_MAX_TAYLOR_D 1024
#define PREP_MAX_BLOCKS (1u << 20)
#define PREP_STATIC_SMEM 49152


static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  cfg->BT = cfg->BK = cfg->BV = 0;
  cfg->warps = 4;
  /* taylor2 stages one row a warp in shared memory. */
  while (key->feature == FLA_FEATURE_TAYLOR2 && cfg->warps > 1 &&
         (long)cfg->warps * key->feature_in_dim * 4 > PREP_STATIC_SMEM)
    cfg->warps /= 2;
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *k, const fla_tile_config *c) {
  int d = k->feature_in_dim;
  if (d > PREP_MAX_D)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "prep_fwd supports input dims <= %d (got %d)",
                         PREP_MAX_D, d);
  if (k->feature == FLA_FEATURE_TAYLOR2 && d > PREP_MAX_TAYLOR_D)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "prep_fwd: taylor2 supports input dims <= %d (got %d)", PREP_MAX_TAYLOR_D,
                         d);
  if (c->BT || c->BK || c->BV)
    return fla_set_error(ctx, FLA_INVALID,
                         "prep_fwd has no BT, BK or BV tiles, only warps (got BT=%d BK=%d BV=%d)",
                         c->BT, c->BK, c->BV);
  if (!fla_pow2(c->warps) || c->warps > 32)
    return fla_set_error(ctx, FLA_INVALID,
                         "prep_fwd: warps must be 1, 2, 4, 8, 16 or 32 (got warps=%d)", c->warps);
  if (k->feature == FLA_FEATURE_TAYLOR2 && (long)c->warps * d * 4 > PREP_STATIC_SMEM)
    return fla_set_error(ctx, FLA_INVALID,
                         "prep_fwd: taylor2 with D=%d needs %ld bytes of shared memory for "
                         "%d warps (at most %d): use fewer warps",
                         d, (long)c->warps * d * 4, c->warps, PREP_STATIC_SMEM);
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key;
  (void)cfg;
  strcpy(names[0], "fla_prep_fwd");
  return 1;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  (void)key;
  memset(out, 0, sizeof *out);
  strcpy(out->name, "fla_prep_fwd");
  int64_t rows = args->rows > 0 ? args->rows : 0;
  int64_t blocks = (rows + cfg->warps - 1) / cfg->warps;
  if (blocks < 1) blocks = 1;
  if (blocks > PREP_MAX_BLOCKS) blocks = PREP_MAX_BLOCKS;
  out->grid[0] = (unsigned)blocks;
  out->grid[1] = out->grid[2] = 1;
  out->block[0] = (unsigned)(32 * cfg->warps);
  out->block[1] = out->block[2] = 1;
  out->smem = 0;
  return 1;
}

const fla_stage_impl fla_stage_prep_fwd = {
    .name = "prep_fwd",
    .template_file = "prep_fwd.cuh",
    .portable = 1, /* also generated for HIP */
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = NULL, /* none */
};
