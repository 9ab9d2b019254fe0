/*
** stage_chunk_wy_bwd.c -- the chunkwise-parallel backward of the delta rule
** in WY form (FLA_STAGE_CHUNK_WY_BWD): key space, tile space, kernels, launch
** geometry and workspaces. The kernels and their math are in
** templates/cuda/chunk_wy_bwd.cuh (fla's chunk_gated_delta_rule_bwd).
**
** Handled: delta write read after the token, decay none / const / scalar,
** with or without a probe (Comba), no bonus or derived key, bf16 inputs, K and
** V up to 128. Everything else is FLA_UNSUPPORTED (the op falls back to the
** recurrent backward).
**
** Tiles: BT = 64 tokens a chunk, 4 warps, BK = K (never tiled), BV value
** columns a program of the two state walks (a multiple of 16, 16..64;
** default 64). A launch takes BV or min(BV, 32) (wide_ below): narrow
** slices give more programs to long sequences with few heads.
**
** Four kernels (grid, block 128, dynamic shared memory):
**   fla_wyb_prep (NC, H)        3 or 4 * 64*(K16+8)*2 - with a probe one more -
**                               + 2*64*(V16+8)*2 + 2*64*72*2 + 2*64*68*4 + 3*64*4
**   fla_wyb_walk (N*NVW, H, 2)  2*(4*64*(KP+8) + 2*64*(BVW+8))*2
**                               + (2*KP+64)*(BVW+8)*2 + 256
**   fla_wyb_dqk  (NC, H)        2*64*(K16+8)*2 + 3*64*(V16+8)*2
**                               + 2*K16*(V16+8)*2 + 64*72*2 + (3*64+8)*4
**   fla_wyb_wy   (NC, H)        (2 or 3)*64*(K16+8)*2 + 2*64*(V16+8)*2
**                               + 3*64*72*2 + 3*64*4 + 64*68*4
** K16, V16 = K, V rounded up to 16; KP = K rounded up to 64; BVW = the walk's
** slice (BV or min(BV, 32)), NVW = ceil(V/BVW).
** Workspaces (regions 16-byte aligned; tok = total tokens):
**   ws0 = W/dW bf16 [tok,H,K] + h bf16 [NC,H,K,V] + dh bf16 [NC,H,K,V]
**         + dK partial f32 [tok,H,K] + W's low half bf16 [tok,H,K]
**   ws1 = U/Vn bf16 [tok,H,V] + dVl/dVn bf16 [tok,H,V] + T bf16 [tok,H,64]
**         + dgam partial f32 [tok,H] + U's low half bf16 [tok,H,V]
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_common.h"

#include <stdio.h>
#include <string.h>

#define WB_BT 64
#define WB_WARPS 4
#define WB_MAXKV 128
#define WB_NST 2 /* cp.async stages of the walks (WB_NST in the template) */
#define WB_SMEM_MAX (227 * 1024)

static int r16_(int x) { return (x + 15) / 16 * 16; }
static int kp_(int K) { return (K + 16 * WB_WARPS - 1) / (16 * WB_WARPS) * 16 * WB_WARPS; }

static unsigned smem_prep_(const fla_gen_key *key) {
  int K16 = r16_(key->K), V16 = r16_(key->V), nk = key->has_probe ? 3 : 2;
  return (unsigned)(nk * WB_BT * (K16 + 8) * 2 + 2 * WB_BT * (V16 + 8) * 2 +
                    2 * WB_BT * (WB_BT + 8) * 2 + 2 * WB_BT * 68 * 4 + 3 * WB_BT * 4);
}

/* The walks' value slice: BV (wide) or min(BV, 32) (narrow), one of them a
** launch: narrow while its programs fit one wave of the H100's 132 SMs (one
** block a SM: long sequences, few heads), else wide (K, Q and W read once
** for twice the columns). Also wide when both give the same slice count
** (the kernel tells them apart by its grid: fla_wyb_walk in the template). */
#define WB_WAVE 132
static int bvn_(const fla_tile_config *cfg) { return cfg->BV < 32 ? cfg->BV : 32; }
static int wide_(const fla_gen_key *key, const fla_tile_config *cfg, int64_t N, int64_t H) {
  int64_t nvn = (key->V + bvn_(cfg) - 1) / bvn_(cfg), nvw = (key->V + cfg->BV - 1) / cfg->BV;
  return nvn == nvw || 2 * N * H * nvn > WB_WAVE;
}

static unsigned smem_walk_(const fla_gen_key *key, int BV) {
  int KP = kp_(key->K);
  return (unsigned)(WB_NST * (4 * WB_BT * (KP + 8) + 2 * WB_BT * (BV + 8)) * 2 +
                    (2 * KP + WB_BT) * (BV + 8) * 2 + 256);
}

static unsigned smem_dqk_(const fla_gen_key *key) {
  int K16 = r16_(key->K), V16 = r16_(key->V);
  return (unsigned)(2 * WB_BT * (K16 + 8) * 2 + 3 * WB_BT * (V16 + 8) * 2 +
                    2 * K16 * (V16 + 8) * 2 + WB_BT * (WB_BT + 8) * 2 + (3 * WB_BT + 8) * 4);
}

static unsigned smem_wy_(const fla_gen_key *key) {
  int K16 = r16_(key->K), V16 = r16_(key->V), nk = key->has_probe ? 3 : 2;
  return (unsigned)(nk * WB_BT * (K16 + 8) * 2 + 2 * WB_BT * (V16 + 8) * 2 +
                    3 * WB_BT * (WB_BT + 8) * 2 + 3 * WB_BT * 4 + WB_BT * 68 * 4);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = WB_BT;
  if (cfg->warps == 0) cfg->warps = WB_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    int v16 = r16_(key->V);
    cfg->BV = v16 < 64 ? v16 : 64;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (!key->delta) no = "plain writes belong to chunk_bwd";
  else if (key->decay == 3) no = "per-key decay (KDA) is not done in chunk_wy_bwd";
  else if (key->decay < 0 || key->decay > 3) no = "unknown decay";
  else if (key->read_before) no = "reading before the token is not done in chunk_wy_bwd";
  else if (key->has_bonus) no = "the bonus term is not done in chunk_wy_bwd";
  else if (key->key_from_decay) no = "keys derived from the decay are not done in chunk_wy_bwd";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent backward)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_wy_bwd: %s", no);
  if (key->K < 1 || key->V < 1 || key->K > WB_MAXKV || key->V > WB_MAXKV)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "chunk_wy_bwd: K = %d, V = %d outside 1..%d (a chunk's tiles and "
                         "states must fit in shared memory)",
                         key->K, key->V, WB_MAXKV);
  if (cfg->BT != WB_BT || cfg->warps != WB_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_wy_bwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_wy_bwd: BK %d (the key dim is not tiled: BK = K = %d)", cfg->BK,
                         key->K);
  if (cfg->BV < 16 || cfg->BV > 64 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_wy_bwd: BV %d (a multiple of 16 in 16..64)",
                         cfg->BV);
  unsigned sm[4] = {smem_prep_(key), smem_walk_(key, cfg->BV), smem_dqk_(key), smem_wy_(key)};
  for (int i = 0; i < 4; i++)
    if (sm[i] > WB_SMEM_MAX)
      return fla_set_error(ctx, FLA_INVALID, "chunk_wy_bwd: kernel %d needs %u bytes of shared memory",
                           i, sm[i]);
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_wyb_prep");
  snprintf(names[1], 64, "fla_wyb_walk");
  snprintf(names[2], 64, "fla_wyb_dqk");
  snprintf(names[3], 64, "fla_wyb_wy");
  return 4;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  int bv = wide_(key, cfg, args->N, args->H) ? cfg->BV : bvn_(cfg);
  unsigned NVW = (unsigned)((key->V + bv - 1) / bv);
  unsigned N = (unsigned)args->N, H = (unsigned)args->H, NC = (unsigned)args->num_chunks;
  fla_chunk_launch_set(&out[0], "fla_wyb_prep", NC, H, 32 * WB_WARPS, smem_prep_(key));
  fla_chunk_launch_set(&out[1], "fla_wyb_walk", N * NVW, H, 32 * WB_WARPS, smem_walk_(key, bv));
  out[1].grid[2] = 2;
  fla_chunk_launch_set(&out[2], "fla_wyb_dqk", NC, H, 32 * WB_WARPS, smem_dqk_(key));
  fla_chunk_launch_set(&out[3], "fla_wyb_wy", NC, H, 32 * WB_WARPS, smem_wy_(key));
  return 4;
}

static size_t al_(size_t b) { return (b + 15) / 16 * 16; }

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  (void)cfg;
  size_t rows = (size_t)(args->total > 0 ? args->total : 0) * (size_t)args->H;
  size_t states = (size_t)(args->num_chunks > 0 ? args->num_chunks : 0) * (size_t)args->H *
                  (size_t)key->K * (size_t)key->V * 2;
  size_t K = (size_t)key->K, V = (size_t)key->V;
  *ws0 = al_(rows * K * 2) + 2 * al_(states) + al_(rows * K * 4) + rows * K * 2 + 16;
  *ws1 = 2 * al_(rows * V * 2) + al_(rows * WB_BT * 2) + al_(rows * 4) + rows * V * 2 + 16;
}

const fla_stage_impl fla_stage_chunk_wy_bwd = {
    .name = "chunk_wy_bwd",
    .template_file = "chunk_wy_bwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
