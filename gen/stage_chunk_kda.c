/*
** stage_chunk_kda.c -- the chunkwise-parallel forward of the delta rule with a
** per-key decay (KDA, FLA_STAGE_CHUNK_KDA_FWD): key space, tile space,
** kernels, launch geometry and workspaces. The kernels and their math are in
** templates/cuda/chunk_kda_fwd.cuh (fla-notes.md §2.4; fla's chunk_kda).
**
** Handled: delta write (FLA_DELTA 1) read after the token, per-key decay
** (FLA_DECAY 3), no probe, bonus or derived key, bf16 inputs, K and V up to
** 128. Everything else is FLA_UNSUPPORTED (chunk_wy_fwd takes the other
** decays; the op falls back to the recurrent stage).
**
** Tiles: BT = 64 tokens a chunk, 4 warps, BV value columns a program of the
** output kernel (a multiple of 16, 16..128; default V rounded up to 16, at
** most 128), BK = K (never tiled). The state kernel takes BVH = min(BV, 32).
**
** Three kernels (grid, block, dynamic shared memory):
**   fla_kda_prep  (NC, H)      256  (4*64 + 144)*(KP+8)*2 + 64*(VP+8)*2
**                                    + 64*(KP+1)*4 + 2*64*68*4 + 64*4
**   fla_kda_fwd_h (NVH*N, H)   128  2*2*64*(KP+8)*2 + 2*64*(BVH+8)*2
**                                    + KP*(BVH+8)*2 + 2*KP*4
**   fla_kda_fwd_o (NC*NV, H)   128  64*(KP+8)*2 + (64+KP)*(BV+8)*2 + 64*72*2
** KP = K rounded up to 64, VP = V rounded up to 64, NVH = ceil(V/BVH),
** NV = ceil(V/BV). Workspaces: ws0 = W, Kd, Qg bf16 [total,H,K] (each padded
** to 16 bytes), then the chunk states h bf16 [NC,H,K,V]; ws1 = U bf16
** [total,H,V] (padded; overwritten with Vn), the intra-chunk products A bf16
** [NC,H,64,64], the chunks' last gate sums G_L f32 [NC,H,KP].
*/
#include "stage.h"
#include "stage_chunk_common.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define KD_BT 64
#define KD_WARPS 4
#define KD_SMEM_MAX (227 * 1024)
#define KD_PREP_THREADS 256 /* KD_PNTH in the template */

static int kp_(int K) { return (K + 63) / 64 * 64; }
static int vp_(int V) { return (V + 63) / 64 * 64; }
static int bvh_(const fla_tile_config *cfg) { return cfg->BV < 32 ? cfg->BV : 32; }
static int64_t al16_(int64_t b) { return (b + 15) / 16 * 16; }

static unsigned smem_prep_(const fla_gen_key *key) {
  int KP = kp_(key->K);
  return (unsigned)((4 * KD_BT + 144) * (KP + 8) * 2 + KD_BT * (vp_(key->V) + 8) * 2 +
                    KD_BT * (KP + 1) * 4 + 2 * KD_BT * 68 * 4 + KD_BT * 4);
}
static unsigned smem_h_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kp_(key->K), b = bvh_(cfg);
  return (unsigned)(4 * KD_BT * (KP + 8) * 2 + 2 * KD_BT * (b + 8) * 2 + KP * (b + 8) * 2 + 2 * KP * 4);
}
static unsigned smem_o_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kp_(key->K);
  return (unsigned)(KD_BT * (KP + 8) * 2 + (KD_BT + KP) * (cfg->BV + 8) * 2 + KD_BT * 72 * 2);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = KD_BT;
  if (cfg->warps == 0) cfg->warps = KD_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    int v16 = (key->V + 15) / 16 * 16;
    cfg->BV = v16 < 128 ? v16 : 128;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (!key->delta) no = "plain writes belong to chunk_gk_fwd";
  else if (key->decay != 3) no = "only the per-key decay (other decays: chunk_wy_fwd)";
  else if (key->has_probe) no = "a probe (Comba) with a per-key decay is not done";
  else if (key->read_before) no = "reading before the token is not done";
  else if (key->has_bonus) no = "the bonus term is not done";
  else if (key->key_from_decay) no = "keys derived from the decay are not done";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent stage)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_kda_fwd: %s", no);
  if (key->K < 1 || key->V < 1 || key->K > 128 || key->V > 128)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_kda_fwd: K = %d, V = %d outside 1..128",
                         key->K, key->V);
  if (cfg->BT != KD_BT || cfg->warps != KD_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_kda_fwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_kda_fwd: BK %d (the key dim is not tiled: BK = K = %d)", cfg->BK,
                         key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_kda_fwd: BV %d (a multiple of 16 in 16..128)",
                         cfg->BV);
  if (smem_prep_(key) > KD_SMEM_MAX || smem_h_(key, cfg) > KD_SMEM_MAX ||
      smem_o_(key, cfg) > KD_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_kda_fwd: %u / %u / %u bytes of shared memory",
                         smem_prep_(key), smem_h_(key, cfg), smem_o_(key, cfg));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_kda_prep");
  snprintf(names[1], 64, "fla_kda_fwd_h");
  snprintf(names[2], 64, "fla_kda_fwd_o");
  return 3;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  int64_t NC = args->num_chunks, H = args->H, N = args->N;
  int64_t NV = (key->V + cfg->BV - 1) / cfg->BV, NVH = (key->V + bvh_(cfg) - 1) / bvh_(cfg);
  fla_chunk_launch_set(&out[0], "fla_kda_prep", (unsigned)NC, (unsigned)H, KD_PREP_THREADS,
                       smem_prep_(key));
  fla_chunk_launch_set(&out[1], "fla_kda_fwd_h", (unsigned)(NVH * N), (unsigned)H, 32 * KD_WARPS,
                       smem_h_(key, cfg));
  fla_chunk_launch_set(&out[2], "fla_kda_fwd_o", (unsigned)(NC * NV), (unsigned)H, 32 * KD_WARPS,
                       smem_o_(key, cfg));
  if (NC == 0) out[0].grid[0] = out[2].grid[0] = 0; /* fla_cuda_run_stage skips an empty grid */
  return 3;
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  (void)cfg;
  int64_t rows = args->total * args->H, NCH = (int64_t)args->num_chunks * args->H;
  int64_t kbytes = al16_(rows * key->K * 2);
  *ws0 = rows > 0 ? (size_t)(3 * kbytes + NCH * key->K * key->V * 2 + 16) : 0;
  *ws1 = rows > 0 ? (size_t)(al16_(rows * key->V * 2) + NCH * KD_BT * KD_BT * 2 +
                             NCH * kp_(key->K) * 4 + 16)
                  : 0;
}

const fla_stage_impl fla_stage_chunk_kda_fwd = {
    .name = "chunk_kda_fwd",
    .template_file = "chunk_kda_fwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
