/*
** stage_chunk_bwd_portable.c -- FLA_STAGE_CHUNK_BWD_PORTABLE: the chunkwise
** backward of the decay family with scalar FMA tiles
** (templates/common/chunk_bwd_portable.h), the variant of chunk_bwd that
** needs no vendor matrix instruction, so it is generated for CUDA and HIP.
** Its contract is chunk_bwd's: dq, dk, dv, dg in the input dtype, dh0 f32,
** chunk tables for chunks of BT tokens.
**
** Keys: decay none / const / scalar, plain write read after the token, no
** probe, bonus or derived key; bf16 or f32 inputs; K and V up to 256.
** Tiles: BT tokens a chunk (1..64), BV value columns a program of the state
** walk (1..64), warps in {1, 2, 4, 8, 16}, BK = K. Static shared memory of
** either kernel at most 48 KiB (default: BT 32 or fewer until it fits).
**
** Two kernels:
**   fla_chunk_bwd_portable_walk  (N*H, ceil(V/BV), 2)  32*warps
**   fla_chunk_bwd_portable_dqkv  (NC, H)               32*warps
** Workspaces: ws0 = ws1 = NC*H*K*V f32 (the state entering each chunk, the
** gradient of the state leaving it).
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_portable_common.h"

#include <string.h>

/* Bytes of the larger kernel's static arrays: the walk's Xs, Ys, Ss, gates;
** dqkv's Qs, Ks, Ds, Vs, Os, As, Ps, gates, red. */
static long smem_(const fla_gen_key *k, const fla_tile_config *c) {
  long bt = c->BT, bv = c->BV, K = k->K, V = k->V, nth = 32L * (c->warps ? c->warps : 4);
  long walk = bt * (K + 1) + bt * bv + K * bv + 3 * bt;
  long dqkv = 3 * bt * (K + 1) + 2 * bt * (V + 1) + 2 * bt * (bt + 1) + 4 * bt + nth;
  return 4 * (walk > dqkv ? walk : dqkv);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  fla_cp_default_config(key, cfg, smem_);
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->delta) no = "the delta rule has no chunked backward here (recurrent_bwd runs it)";
  else if (key->decay == 3) no = "per-key decay has no chunked backward here (recurrent_bwd runs it)";
  else if (key->read_before) no = "reading before the token is not done here";
  else if (key->has_bonus) no = "the bonus term is not done here";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->key_from_decay) no = "keys derived from the decay need a per-key decay";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_bwd_portable: %s", no);
  return fla_cp_check_tiles(ctx, "chunk_bwd_portable", key, cfg, smem_);
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  strcpy(names[0], "fla_chunk_bwd_portable_walk");
  strcpy(names[1], "fla_chunk_bwd_portable_dqkv");
  return 2;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  fla_cp_launch("fla_chunk_bwd_portable_walk", key, cfg, args, &out[0]);
  out[0].grid[2] = 2; /* z: the state walk, the state-gradient walk */
  memset(&out[1], 0, sizeof out[1]);
  strcpy(out[1].name, "fla_chunk_bwd_portable_dqkv");
  out[1].grid[0] = args->num_chunks > 0 ? (unsigned)args->num_chunks : 0u; /* 0: skipped */
  out[1].grid[1] = (unsigned)(args->H > 0 ? args->H : 1);
  out[1].grid[2] = 1;
  out[1].block[0] = (unsigned)(32 * cfg->warps);
  out[1].block[1] = out[1].block[2] = 1;
  return 2;
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  (void)cfg;
  int64_t n = (int64_t)(args->num_chunks > 0 ? args->num_chunks : 0) * args->H * key->K * key->V;
  *ws0 = *ws1 = sizeof(float) * (size_t)n;
}

const fla_stage_impl fla_stage_chunk_bwd_portable = {
    .name = "chunk_bwd_portable",
    .template_file = "../common/chunk_bwd_portable.h",
    .portable = 1,
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
