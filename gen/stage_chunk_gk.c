/*
** stage_chunk_gk.c -- the chunked forward for per-key gates (FLA_STAGE_CHUNK_GK_FWD,
** GLA and HGRN2): its key space, tile space, kernels, launch geometry and
** workspaces. The kernels and their math are in templates/cuda/chunk_gk_fwd.cuh.
**
** Handled: FLA_DECAY 3 with plain writes (FLA_DELTA 0, no probe), read after
** the token (GLA, HGRN2) or before it with the bonus (RWKV-6), keys given or
** derived from the decay (HGRN2: k = 1 - e^g on load), bf16 inputs, K up to
** 128 and V up to 256. Everything else is FLA_UNSUPPORTED (the op falls back to the
** recurrent stage): f32 inputs; other decays belong to chunk_fwd, the delta
** rule to chunk_wy_fwd.
**
** Tiles as chunk_fwd's: BT = 64 tokens a chunk, 4 warps, BV value columns a
** program (multiple of 16, 16..128), BK = K (never tiled).
**
** Three kernels (grid, block, dynamic shared memory), KP, KW, NB, M, fla_chunk_h_geom_of (stage_chunk_common.h) as
** in gen/stage_chunk.c (the same block-length formula: keep in step):
**   fla_chunk_gk_fwd_h     (NB*NV1, H)   32*NW1  4*64*(KP1+8)*2 + 2*64*(BV1+8)*2
**                                                 + 64*(KP1+4)*4 + 256
**   fla_chunk_gk_fwd_scan  (ceil(H*K*V/256))  256  0
**   fla_chunk_gk_fwd_o     (NB*NV, H)    128  NBUF*(2*64*(KP+8)*2 + 64*(BV+8)*2)
**                                             + KP*(BV+8)*2 + 65*(KP+4)*4 + 256
** with NBUF = 1 (CK_NBUF in the template: single tiles, g read from global
** memory in the cumsum, so that two blocks fit an SM at K = 128).
** Workspaces: ws0 = NB*H*K*V f32 (block states), ws1 = NB*H*K f32 (block
** decays per key).
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_common.h"

#include <stdio.h>
#include <string.h>

#define GK_BT 64
#define GK_WARPS 4
#define GK_SMEM_MAX (227 * 1024)

static int kw_(int K) { return (K + 16 * GK_WARPS - 1) / (16 * GK_WARPS) * 16; }
static int nv_(const fla_gen_key *key, const fla_tile_config *cfg) {
  return (key->V + cfg->BV - 1) / cfg->BV;
}

static unsigned smem_h_(const fla_gen_key *key) {
  fla_chunk_h_geom g = fla_chunk_h_geom_of(key);
  return (unsigned)(4 * GK_BT * (g.kp + 8) * 2 + 2 * GK_BT * (g.bv + 8) * 2 + GK_BT * (g.kp + 4) * 4 +
                    256);
}

static unsigned smem_o_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kw_(key->K) * GK_WARPS;
  int nbuf = 1; /* CK_NBUF */
  return (unsigned)(nbuf * (2 * GK_BT * (KP + 8) * 2 + GK_BT * (cfg->BV + 8) * 2) +
                    KP * (cfg->BV + 8) * 2 + (GK_BT + 1) * (KP + 4) * 4 + 256);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = GK_BT;
  if (cfg->warps == 0) cfg->warps = GK_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    int v16 = (key->V + 15) / 16 * 16;
    int bv = key->K <= 128 ? 64 : 32;
    cfg->BV = v16 < bv ? v16 : bv;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->decay != 3) no = "only per-key decay (decay 3; the others are chunk_fwd's)";
  else if (key->delta) no = "the delta rule is chunk_wy_fwd's";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->has_bonus && !key->read_before) no = "a bonus needs read_before";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent stage)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_gk_fwd: %s", no);
  /* K > 128 compiles but has not been run on a GPU yet (test_gpu_ops stops at 128) */
  if (key->K < 1 || key->V < 1 || key->K > 128 || key->V > 256)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "chunk_gk_fwd: K = %d, V = %d outside K 1..128 (not tested above), V 1..256",
                         key->K, key->V);
  if (cfg->BT != GK_BT || cfg->warps != GK_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_fwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_gk_fwd: BK %d (the key dim is not tiled: BK = K = %d)", cfg->BK,
                         key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_fwd: BV %d (a multiple of 16 in 16..128)",
                         cfg->BV);
  int regs = kw_(key->K) / 16 * (cfg->BV / 8) * 4;
  if (regs > 64)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_gk_fwd: BV %d with K %d needs %d state registers a thread (at most 64)",
                         cfg->BV, key->K, regs);
  if (smem_o_(key, cfg) > GK_SMEM_MAX || smem_h_(key) > GK_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_fwd: %u / %u bytes of shared memory",
                         smem_o_(key, cfg), smem_h_(key));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_chunk_gk_fwd_h");
  snprintf(names[1], 64, "fla_chunk_gk_fwd_scan");
  snprintf(names[2], 64, "fla_chunk_gk_fwd_o");
  return 3;
}

static int64_t blocklen_args_(const fla_gen_key *key, const fla_tile_config *cfg,
                              const fla_kernel_args *args) {
  return fla_chunk_blocklen(args->num_chunks, args->N, args->H, nv_(key, cfg));
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  int64_t NC = args->num_chunks, H = args->H, NV = nv_(key, cfg);
  int64_t M = blocklen_args_(key, cfg, args);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  int64_t elems = H * key->K * key->V;
  fla_chunk_h_geom hg = fla_chunk_h_geom_of(key);
  fla_chunk_launch_set(&out[0], "fla_chunk_gk_fwd_h", (unsigned)(NB * hg.nv), (unsigned)H, 32 * (unsigned)hg.nw,
       smem_h_(key));
  fla_chunk_launch_set(&out[1], "fla_chunk_gk_fwd_scan", (unsigned)((elems + 255) / 256), 1, 256, 0);
  fla_chunk_launch_set(&out[2], "fla_chunk_gk_fwd_o", (unsigned)(NB * NV), (unsigned)H, 32 * GK_WARPS,
       smem_o_(key, cfg));
  return 3;
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  int64_t NC = args->num_chunks;
  int64_t M = blocklen_args_(key, cfg, args);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  *ws0 = (size_t)(NB * args->H * key->K * key->V) * sizeof(float);
  *ws1 = (size_t)(NB * args->H * key->K) * sizeof(float);
}

const fla_stage_impl fla_stage_chunk_gk_fwd = {
    .name = "chunk_gk_fwd",
    .template_file = "chunk_gk_fwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
