/*
** stage_chunk_bwd.c -- the chunkwise-parallel backward stage
** (FLA_STAGE_CHUNK_BWD): key space, tile space, kernels, launch geometry and
** workspaces. The kernels and their math are in templates/cuda/chunk_bwd.cuh
** (and its warp-level helpers, chunk_bwd_mm.cuh).
**
** Handled: the decay family with plain writes read after the token (FLA_DELTA
** 0, FLA_READ_BEFORE 0, no probe, bonus or derived key), decay none / const /
** scalar, bf16 inputs, K and V up to 128 (the per-chunk kernel holds q, k, v,
** dO, h and dh of a chunk in shared memory). Everything else is
** FLA_UNSUPPORTED: f32 inputs (no fp32 tensor-core path; the recurrent
** backward runs them), per-key decay, the WY family, K or V above 128.
**
** Tiles: 64 tokens a chunk, 4 warps; BV (a multiple of 16, 16..128) is the
** value slice of the two state walks (KW = ceil(K/64)*16 keys a warp,
** KW/16 * BV/8 * 4 <= 64 state registers a thread). BK is K (not tiled).
**
** Two kernels (grid, block, dynamic shared memory):
**   fla_chunk_bwd_walk  (N*NVW, H, 2)  128   4*(64*(KP+8)*2 + 64*(BV+8)*2) + 256
**       z = 0 the state walk, z = 1 the state-gradient walk (independent)
**   fla_chunk_bwd_dqkv  (NC, H)        128   2*64*(K16+8)*2 + 2*64*(V16+8)*2
**                                            + 2*K16*(V16+8)*2 + 2*64*72*2 + 1056
** NVW = ceil(V/BV), KP = 4*KW, K16/V16 = K/V rounded up to 16.
** Workspaces: ws0 = NC*H*K*V bf16 (the state entering each chunk), ws1 = the
** same (the gradient of the state leaving each chunk).
** The args the kernels read: q, k, v, g (scalar) or gamma (const), h0, d_o,
** dht (0: none), cu, chunk_seq, chunk_first, ws0, ws1, N, H, num_chunks,
** scale; written: dq, dk, dv, dg (scalar gates), dh0 (when not 0).
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_common.h"

#include <stdio.h>
#include <string.h>

#define BWD_BT 64
#define BWD_WARPS 4
#define BWD_MAXKV 128
#define BWD_NST 4 /* cp.async stages of the walks (CK_NST) */
#define BWD_SMEM_MAX (227 * 1024)

static int kw_(int K) { return (K + 16 * BWD_WARPS - 1) / (16 * BWD_WARPS) * 16; }
static int r16_(int x) { return (x + 15) / 16 * 16; }

static unsigned smem_walk_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kw_(key->K) * BWD_WARPS;
  return (unsigned)(BWD_NST * (BWD_BT * (KP + 8) * 2 + BWD_BT * (cfg->BV + 8) * 2) + 256);
}

static unsigned smem_dqkv_(const fla_gen_key *key) {
  int K16 = r16_(key->K), V16 = r16_(key->V);
  return (unsigned)(2 * BWD_BT * (K16 + 8) * 2 + 2 * BWD_BT * (V16 + 8) * 2 +
                    2 * K16 * (V16 + 8) * 2 + 2 * BWD_BT * (BWD_BT + 8) * 2 +
                    (3 * BWD_BT + 8) * 4);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = BWD_BT;
  if (cfg->warps == 0) cfg->warps = BWD_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    /* narrow slices: more programs for the sequential walks */
    int v16 = r16_(key->V);
    cfg->BV = v16 < 32 ? v16 : 32;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->delta) no = "the WY family (delta write) is not done in chunk_bwd";
  else if (key->decay == 3) no = "per-key decay (GLA) is not done in chunk_bwd";
  else if (key->decay < 0 || key->decay > 3) no = "unknown decay";
  else if (key->read_before) no = "reading before the token (RWKV-6) is not done in chunk_bwd";
  else if (key->has_bonus) no = "the bonus term is not done in chunk_bwd";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->key_from_decay) no = "keys derived from the decay (HGRN2) are not done in chunk_bwd";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent backward)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_bwd: %s", no);
  if (key->K < 1 || key->V < 1 || key->K > BWD_MAXKV || key->V > BWD_MAXKV)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "chunk_bwd: K = %d, V = %d outside 1..%d (a chunk's q, k, v, dO, h, dh "
                         "must fit in shared memory)",
                         key->K, key->V, BWD_MAXKV);
  if (cfg->BT != BWD_BT || cfg->warps != BWD_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_bwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID, "chunk_bwd: BK %d (the key dim is not tiled: BK = K = %d)",
                         cfg->BK, key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_bwd: BV %d (a multiple of 16 in 16..128)",
                         cfg->BV);
  int regs = kw_(key->K) / 16 * (cfg->BV / 8) * 4;
  if (regs > 64)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_bwd: BV %d with K %d needs %d state registers a thread (at most 64)",
                         cfg->BV, key->K, regs);
  if (smem_dqkv_(key) > BWD_SMEM_MAX || smem_walk_(key, cfg) > BWD_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_bwd: %u bytes of shared memory", smem_dqkv_(key));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_chunk_bwd_walk");
  snprintf(names[1], 64, "fla_chunk_bwd_dqkv");
  return 2;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  unsigned NVW = (unsigned)((key->V + cfg->BV - 1) / cfg->BV);
  unsigned N = (unsigned)args->N, H = (unsigned)args->H, NC = (unsigned)args->num_chunks;
  fla_chunk_launch_set(&out[0], "fla_chunk_bwd_walk", N * NVW, H, 32 * BWD_WARPS,
                       smem_walk_(key, cfg));
  out[0].grid[2] = 2;
  fla_chunk_launch_set(&out[1], "fla_chunk_bwd_dqkv", NC, H, 32 * BWD_WARPS, smem_dqkv_(key));
  return 2;
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  (void)cfg;
  size_t states = (size_t)(args->num_chunks > 0 ? args->num_chunks : 0) * (size_t)args->H *
                  (size_t)key->K * (size_t)key->V;
  *ws0 = states * 2; /* bf16 */
  *ws1 = states * 2;
}

const fla_stage_impl fla_stage_chunk_bwd = {
    .name = "chunk_bwd",
    .template_file = "chunk_bwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
