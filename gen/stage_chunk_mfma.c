/*
** stage_chunk_mfma.c -- FLA_STAGE_CHUNK_FWD_MFMA: chunk_fwd_portable's math
** with its tile products on CDNA's matrix cores
** (templates/hip/chunk_fwd_mfma.h). HIP only (fla_stage_impl.hip_only),
** CDNA2/3 only (gfx90a, gfx94x: the template refuses other archs).
** Compiled, never run (no AMD GPU); the op layer does not pick it.
**
** Keys: those of chunk_fwd_portable; bf16 or f32 inputs, K and V up to 256.
** Tiles: BT and BV in {16, 32, 48, 64}, warps in {2, 4, 8, 16} (whole
** wavefronts of 64 lanes), BK = K. Static shared memory at most 48 KiB.
** Geometry: that of every portable chunked stage (one kernel,
** fla_chunk_fwd_mfma, grid (N*H, ceil(V/BV)), 32*warps threads); no workspace.
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_portable_common.h"

#include <string.h>

/* Bytes of the template's static arrays: Qs, Ks, Vs, Ss, As, gam, eg, wl. */
static long smem_(const fla_gen_key *k, const fla_tile_config *c) {
  long bt = c->BT, bv = c->BV, kp = (k->K + 15) / 16 * 16;
  return 4 * (2 * bt * (kp + 1) + bt * bv + kp * bv + bt * (bt + 1) + 3 * bt);
}

/* BV 32 (16 when V <= 16), then the longest chunk of 32 or 16 that fits. */
static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  cfg->BK = key->K;
  cfg->warps = 4;
  cfg->BV = key->V <= 16 ? 16 : 32;
  cfg->BT = 32;
  if (smem_(key, cfg) > FLA_CP_MAX_SMEM) cfg->BT = 16;
  if (smem_(key, cfg) > FLA_CP_MAX_SMEM) cfg->BV = 16;
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->delta) no = "the delta rule is not done here";
  else if (key->decay == 3) no = "per-key decay is not done here";
  else if (key->read_before || key->has_bonus) no = "reading before the token is not done here";
  else if (key->has_probe || key->key_from_decay) no = "a probe or a derived key is not done here";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_fwd_mfma: %s", no);
  if (cfg->BT % 16 || cfg->BV % 16 || cfg->BT < 16 || cfg->BV < 16)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_fwd_mfma: BT %d and BV %d must be multiples of 16 (MFMA tiles)",
                         cfg->BT, cfg->BV);
  if (cfg->warps % 2)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_fwd_mfma: warps %d is not whole wavefronts of 64 lanes (even)",
                         cfg->warps);
  return fla_cp_check_tiles(ctx, "chunk_fwd_mfma", key, cfg, smem_);
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  strcpy(names[0], "fla_chunk_fwd_mfma");
  return 1;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  return fla_cp_launch("fla_chunk_fwd_mfma", key, cfg, args, out);
}

const fla_stage_impl fla_stage_chunk_fwd_mfma = {
    .name = "chunk_fwd_mfma",
    .template_file = "../hip/chunk_fwd_mfma.h",
    .hip_only = 1,
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = NULL, /* none */
};
