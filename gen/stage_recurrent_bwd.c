/*
** stage_recurrent_bwd.c -- the recurrent_bwd stage: templates/cuda/recurrent_bwd.cuh,
** two kernels: fla_recurrent_bwd (the token-by-token backward of
** runtime/cpu/recurrent.c, state slices in registers, checkpointed) and
** fla_recurrent_bwd_reduce (sums the per-block partial gradients).
**
** Key: as recurrent_fwd, except that store_ht means "a dht is given" (the
** backward reads it instead of writing ht).
**
** Tile configuration: BT = the checkpoint interval in tokens (1..1024: a
** state slice saved every BT tokens, a segment of BT states replayed at a
** time), BK = K, BV in {1, 2, 4, 8, 16, 32} columns a block (the grid's
** second dim: ceil(V / BV) blocks a pair, each writing its own partial
** slice of the dq/dk/dp/dg/dbeta/dbonus sums), warps in {1, 2, 4, 8, 16}.
** A thread holds RB_KPT = ceil(K / (warps * 32 / BV)) rows (at most 64).
**
** Grid (N*H, ceil(V / BV)) for the first kernel; a grid-stride loop of
** 256-thread blocks for the second. Workspaces (f32; layout in the
** template's header): ws0 = checkpoints + per-block segment buffers,
** ws1 = partial sums.
*/
#include "internal.h"
#include "stage.h"

#include <string.h>

#define RB_MAX_K 2048
#define RB_MAX_V 4096
#define RB_MAX_KPT 64
#define RB_MAX_WARPS 16
#define RB_MAX_BT 1024
#define RB_REDUCE_THREADS 256
#define RB_REDUCE_MAX_BLOCKS 4096

static int groups_(const fla_tile_config *c) { return c->warps * (32 / c->BV); }
static int kpt_(const fla_gen_key *k, const fla_tile_config *c) {
  return (k->K + groups_(c) - 1) / groups_(c);
}
static int nv_(const fla_gen_key *k, const fla_tile_config *c) { return (k->V + c->BV - 1) / c->BV; }

/* BV 16 (fewer when V is smaller): 8 partial slices at V = 128; warps: the
** fewest that keep 8 rows a thread (registers: ~12 row arrays live); BT 64:
** checkpoints cost 1/64 of the states, a segment buffer 64 states a block. */
static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  cfg->BK = key->K;
  int bv = 1;
  while (bv < 16 && bv < key->V) bv *= 2;
  cfg->BV = bv;
  cfg->warps = 1;
  while (cfg->warps < RB_MAX_WARPS && kpt_(key, cfg) > 8) cfg->warps *= 2;
  cfg->BT = 64;
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *k, const fla_tile_config *c) {
  if (k->K > RB_MAX_K)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recurrent_bwd supports K <= %d (got K=%d)",
                         RB_MAX_K, k->K);
  if (k->V > RB_MAX_V)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recurrent_bwd supports V <= %d (got V=%d)",
                         RB_MAX_V, k->V);
  if (c->BT < 1 || c->BT > RB_MAX_BT)
    return fla_set_error(ctx, FLA_INVALID,
                         "recurrent_bwd: BT (the checkpoint interval) must be 1..%d (got %d)",
                         RB_MAX_BT, c->BT);
  return fla_check_column_tiles(ctx, "recurrent_bwd", k, c, RB_MAX_WARPS, kpt_, RB_MAX_KPT);
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key;
  (void)cfg;
  strcpy(names[0], "fla_recurrent_bwd");
  strcpy(names[1], "fla_recurrent_bwd_reduce");
  return 2;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  memset(out, 0, 2 * sizeof *out);
  strcpy(out[0].name, "fla_recurrent_bwd");
  int64_t pairs = (int64_t)args->N * args->H;
  out[0].grid[0] = pairs > 0 ? (unsigned)pairs : 1u; /* the kernel skips pairs >= N*H */
  out[0].grid[1] = (unsigned)nv_(key, cfg);
  out[0].grid[2] = 1;
  out[0].block[0] = (unsigned)(32 * cfg->warps);
  out[0].block[1] = out[0].block[2] = 1;

  strcpy(out[1].name, "fla_recurrent_bwd_reduce");
  int64_t rows = args->total * args->H;
  int64_t work = rows * key->K;
  if (work < (int64_t)args->H * key->K) work = (int64_t)args->H * key->K;
  int64_t blocks = (work + RB_REDUCE_THREADS - 1) / RB_REDUCE_THREADS;
  if (blocks < 1) blocks = 1;
  if (blocks > RB_REDUCE_MAX_BLOCKS) blocks = RB_REDUCE_MAX_BLOCKS;
  out[1].grid[0] = (unsigned)blocks;
  out[1].grid[1] = out[1].grid[2] = 1;
  out[1].block[0] = RB_REDUCE_THREADS;
  out[1].block[1] = out[1].block[2] = 1;
  return 2;
}

/* The template's layouts: ws0 = checkpoints [total/BT + N + 1][H][NV][SL]
** + segment buffers [N*H][NV][BT][SL]; ws1 = the partial sums. */
static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  int64_t N = args->N, H = args->H, T = args->total, BT = cfg->BT;
  int64_t NV = nv_(key, cfg), SL = (int64_t)kpt_(key, cfg) * 32 * cfg->warps;
  int64_t slots = T / BT + N + 1;
  *ws0 = sizeof(float) * (size_t)((slots * H * NV + N * H * NV * BT) * SL);
  int64_t R = T * H, PK = NV * R * key->K;
  int64_t f = 2 * PK;                                  /* dq, dk */
  if (key->delta && key->has_probe) f += PK;           /* dp */
  if (key->decay == 3) f += PK;                        /* dg per key */
  else if (key->decay == 2) f += NV * R;               /* dg scalar */
  if (key->delta) f += NV * R;                         /* dbeta */
  if (key->has_bonus) f += N * NV * H * key->K;        /* dbonus */
  *ws1 = sizeof(float) * (size_t)f;
}

const fla_stage_impl fla_stage_recurrent_bwd = {
    .name = "recurrent_bwd",
    .template_file = "recurrent_bwd.cuh",
    .portable = 1, /* warp sums and lane swaps through the vendor preludes */
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
