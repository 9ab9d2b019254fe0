/*
** stage_chunk_gk.c -- the chunked forward for per-key gates (FLA_STAGE_CHUNK_GK_FWD,
** GLA, HGRN2, RWKV-6): its key space, tile space, kernels, launch geometry and
** workspaces. The kernels and their math are in templates/cuda/chunk_gk_fwd.cuh.
**
** Handled: FLA_DECAY 3 with plain writes (FLA_DELTA 0, no probe), read after
** the token (GLA, HGRN2) or before it with the bonus (RWKV-6), keys given or
** derived from the decay (HGRN2: k = 1 - e^g on load), bf16 inputs, K up to
** 256 and V up to 512 (GLA 1.3B: K 256, V 512; RWKV-6's bonus: K up to 128). Everything else is FLA_UNSUPPORTED (the op falls back to the
** recurrent stage): f32 inputs; other decays belong to chunk_fwd, the delta
** rule to chunk_wy_fwd.
**
** Tiles: BT = 64 tokens a chunk, 4 warps, BV value columns of the output
** kernel (multiple of 16, 16..128), BK = K (never tiled). The state kernels
** have their own geometry (fla_chunk_h_geom_of, stage_chunk_common.h: NW1
** warps, KP1 padded keys, value tiles of BV1, NV1 of them).
**
** Four kernels (grid, block, dynamic shared memory), with NC chunks, M the
** block length (gk_blocklen_, = ck_blocklen in the template), NB = ceil(NC/M),
** KP = K padded to 64, NV = ceil(V/BV), in launch order:
**   fla_chunk_gk_fwd_a   (NC, H)      256     smem_a_: 2*64*(KP+8)*2 + 65*(KP+4)*4
**   fla_chunk_gk_fwd_h   (NB*NV1, H)  32*NW1  smem_h_: 3*(64*(KP1+8)*2 + 64*(BV1+8)*2
**                                                     + KP1*4)   (none when NB = 1)
**   fla_chunk_gk_fwd_hs  (NB*NV1, H)  32*NW1  smem_h_
**   fla_chunk_gk_fwd_o   (NC*NV, H)   128     smem_o_: 64*(KP+8)*2 + (KP+64)*(BV+8)*2
**                                                     + 64*72*2
** Workspaces: ws0 = NB*H*K*V f32 (block states); ws1, each part padded to 8
** elements of 2 bytes: NC*H*K*V bf16 (the state entering each chunk),
** NC*H*64*64 bf16 (A of each chunk), twice NC*H*64*K bf16 (Q .* 2^gam, K .*
** 2^(gam_L - gam)), NC*H*K f32 (gam_L), NB*H*K f32 (block decays per key).
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_common.h"

#include <stdio.h>
#include <string.h>

#define GK_BT 64
#define GK_WARPS 4
#define GK_SMEM_MAX (227 * 1024)
#define GK_NS 3 /* chunks in the state passes' ring (CK1_NS) */

static int kw_(int K) { return (K + 16 * GK_WARPS - 1) / (16 * GK_WARPS) * 16; }
static int nv_(const fla_gen_key *key, const fla_tile_config *cfg) {
  return (key->V + cfg->BV - 1) / cfg->BV;
}

static unsigned smem_h_(const fla_gen_key *key) {
  fla_chunk_h_geom g = fla_chunk_h_geom_of(key);
  return (unsigned)(GK_NS * (GK_BT * (g.kp + 8) * 2 + GK_BT * (g.bv + 8) * 2 + g.kp * 4));
}

static unsigned smem_a_(const fla_gen_key *key) {
  int KP = kw_(key->K) * GK_WARPS;
  return (unsigned)(2 * GK_BT * (KP + 8) * 2 + (GK_BT + 1) * (KP + 4) * 4);
}

static unsigned smem_o_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kw_(key->K) * GK_WARPS;
  return (unsigned)(GK_BT * (KP + 8) * 2 + (KP + GK_BT) * (cfg->BV + 8) * 2 + GK_BT * (GK_BT + 8) * 2);
}

/* Block length of the state kernels: keep in step with ck_blocklen in the
** template. Whole sequences when there are at least GK_FUSED_MIN (sequence,
** head, value tile) programs; else about GK_TARGET_PROGRAMS programs. */
#define GK_FUSED_MIN 64
#define GK_TARGET_PROGRAMS 128
#define GK_MIN_M 8

static int64_t gk_blocklen_(const fla_gen_key *key, const fla_kernel_args *args) {
  int64_t NC = args->num_chunks, N = args->N, H = args->H, NV1 = fla_chunk_h_geom_of(key).nv;
  if (NC <= 0) return 1;
  if (N >= 1 && NC % N == 0 && N * H * NV1 >= GK_FUSED_MIN) return NC / N;
  int64_t m = (NC * H * NV1 + GK_TARGET_PROGRAMS - 1) / GK_TARGET_PROGRAMS;
  return m < GK_MIN_M ? GK_MIN_M : m;
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = GK_BT;
  if (cfg->warps == 0) cfg->warps = GK_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    int v16 = (key->V + 15) / 16 * 16;
    int bv = 64; /* the output kernel's tile: 4 blocks an SM at K = 128 */
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
  /* K 256 and V 512: GLA 1.3B's heads (test_gpu_ops, test_gk_wide_keys) */
  if (key->K < 1 || key->V < 1 || key->K > 256 || key->V > 512)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_gk_fwd: K = %d, V = %d outside K 1..256, V 1..512",
                         key->K, key->V);
  /* RWKV-6's bonus past K = 128 compiles but has not run on a GPU (its
  ** models have K = 64) */
  if (key->has_bonus && key->K > 128)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "chunk_gk_fwd: the bonus (RWKV-6) at K = %d (over 128 not run on a GPU yet)",
                         key->K);
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
  if (smem_o_(key, cfg) > GK_SMEM_MAX || smem_h_(key) > GK_SMEM_MAX || smem_a_(key) > GK_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_fwd: %u / %u / %u bytes of shared memory",
                         smem_h_(key), smem_a_(key), smem_o_(key, cfg));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_chunk_gk_fwd_a");
  snprintf(names[1], 64, "fla_chunk_gk_fwd_h");
  snprintf(names[2], 64, "fla_chunk_gk_fwd_hs");
  snprintf(names[3], 64, "fla_chunk_gk_fwd_o");
  return 4;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  int64_t NC = args->num_chunks, H = args->H, NV = nv_(key, cfg);
  int64_t M = gk_blocklen_(key, args);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  fla_chunk_h_geom hg = fla_chunk_h_geom_of(key);
  unsigned th = 32 * (unsigned)hg.nw;
  fla_chunk_launch_set(&out[0], "fla_chunk_gk_fwd_a", (unsigned)NC, (unsigned)H, 64 * GK_WARPS, smem_a_(key));
  fla_chunk_launch_set(&out[1], "fla_chunk_gk_fwd_h", (unsigned)(NB * hg.nv), (unsigned)H, th, smem_h_(key));
  if (NB <= 1) out[1].grid[0] = 0; /* nothing to fold: skipped (fla_cuda_run_stage skips empty grids) */
  fla_chunk_launch_set(&out[2], "fla_chunk_gk_fwd_hs", (unsigned)(NB * hg.nv), (unsigned)H, th, smem_h_(key));
  fla_chunk_launch_set(&out[3], "fla_chunk_gk_fwd_o", (unsigned)(NC * NV), (unsigned)H, 32 * GK_WARPS,
                       smem_o_(key, cfg));
  return 4;
}

static int64_t pad8_(int64_t n) { return (n + 7) / 8 * 8; }

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  (void)cfg;
  int64_t NC = args->num_chunks, H = args->H;
  int64_t M = gk_blocklen_(key, args);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  /* elements of 2 bytes, each part padded to 8; keep in step with ck_ws_* */
  int64_t hs = pad8_(NC * H * key->K * key->V), aw = NC * H * GK_BT * GK_BT;
  int64_t qk = 2 * pad8_(NC * H * GK_BT * key->K), gl = 2 * pad8_(NC * H * key->K);
  *ws0 = (size_t)(NB * H * key->K * key->V) * sizeof(float);
  *ws1 = (size_t)(hs + aw + qk + gl) * 2 + (size_t)(NB * H * key->K) * sizeof(float);
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
