/*
** stage_recurrent.c -- the recurrent_fwd stage: templates/cuda/recurrent_fwd.cuh,
** one kernel, fla_recurrent_fwd, the token-by-token recurrence of
** runtime/cpu/cpu.h with the state in registers.
**
** Tile configuration: BT in 1..64 tokens staged in shared memory at a time
** (two buffers: the next BT tokens load while these run), BK = K (a block
** holds whole columns of the state: the delta rule reads S~^T p over all of
** K), BV in {1, 2, 4, 8, 16, 32} columns a block, warps in {1, 2, 4, 8, 16}.
** A warp holds 32 / BV row groups of RT_KPT consecutive rows (the template's
** formula, mirrored by kpt_ below), at most 128. Static shared memory (the
** template's arrays, mirrored by smem_ below) at most 48 KiB.
** Grid (N*H, ceil(V / BV)); no workspace.
*/
#include "internal.h"
#include "stage.h"

#include <string.h>

#define RT_MAX_K 2048
#define RT_MAX_V 4096
#define RT_MAX_KPT 128
#define RT_MAX_WARPS 16
#define RT_MAX_BT 64
#define RT_MAX_SMEM 49152     /* static shared memory */
#define RT_DEFAULT_SMEM 16384

/* Rows of the state each thread holds: RT_KPT of the template. */
static int kpt_(const fla_gen_key *k, const fla_tile_config *c) {
  int vec = k->in_bf16 ? 8 : 4;
  int groups = c->warps * (32 / c->BV);
  int kpt = (k->K + groups - 1) / groups;
  if (k->K % vec == 0) kpt = (kpt + vec - 1) / vec * vec;
  return kpt;
}

/* Bytes of static shared memory the template declares. */
static long smem_(const fla_gen_key *k, const fla_tile_config *c) {
  long es = k->in_bf16 ? 2 : 4;
  long rows = 1 + !k->key_from_decay + (k->delta && k->has_probe) + (k->decay == 3);
  long bytes = 2 * rows * c->BT * (long)k->K * es;  /* s_row */
  bytes = (bytes + 3) / 4 * 4;
  bytes += 2L * c->BT * c->BV * 4;                    /* s_v */
  if (k->delta) bytes += 2L * c->BT * 4;              /* s_beta */
  if (k->decay == 2) bytes += 2L * c->BT * 4;         /* s_eg */
  if (c->warps > 1) bytes += 2L * (2 + k->delta) * c->warps * c->BV * 4; /* red */
  return bytes;
}

/* Tuned for decoding (T = 1), its main use: on an H100, GDN at K = V = 128,
** H = 16 and 64 one-token sequences ran in 0.069 ms with BV=16, warps=2 and
** 0.098 ms with BV=8, warps=1 (the same at one sequence, 4.5 us launch to
** launch). So BV: 16 columns, fewer when V is smaller; warps: the fewest
** that keep 32 rows a thread; BT: the most tokens (up to 8) whose two
** buffers fit in 16 KiB. */
static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  cfg->BK = key->K;
  int bv = 1;
  while (bv < 16 && bv < key->V) bv *= 2;
  cfg->BV = bv;
  cfg->warps = 1;
  cfg->BT = 1;
  while (cfg->warps < RT_MAX_WARPS && kpt_(key, cfg) > 32) cfg->warps *= 2;
  cfg->BT = 8;
  while (cfg->BT > 1 && smem_(key, cfg) > RT_DEFAULT_SMEM) cfg->BT /= 2;
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *k, const fla_tile_config *c) {
  if (k->K > RT_MAX_K)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recurrent_fwd supports K <= %d (got K=%d)",
                         RT_MAX_K, k->K);
  fla_tile_config one = *c;
  one.BT = 1;
  one.BV = 1;
  one.warps = 1;
  if (smem_(k, &one) > RT_MAX_SMEM)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "recurrent_fwd: K=%d rows of this key need %ld bytes of shared memory "
                         "even one token at a time (at most %d)",
                         k->K, smem_(k, &one), RT_MAX_SMEM);
  if (k->V > RT_MAX_V)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recurrent_fwd supports V <= %d (got V=%d)",
                         RT_MAX_V, k->V);
  if (c->BT < 1 || c->BT > RT_MAX_BT)
    return fla_set_error(ctx, FLA_INVALID,
                         "recurrent_fwd stages 1 to %d tokens at a time: BT=%d is out of range",
                         RT_MAX_BT, c->BT);
  fla_status st = fla_check_column_tiles(ctx, "recurrent_fwd", k, c, RT_MAX_WARPS, kpt_, RT_MAX_KPT);
  if (st != FLA_OK) return st;
  long smem = smem_(k, c);
  if (smem > RT_MAX_SMEM)
    return fla_set_error(ctx, FLA_INVALID,
                         "recurrent_fwd: BT=%d tokens of K=%d need %ld bytes of shared memory "
                         "(at most %d): use a smaller BT",
                         c->BT, k->K, smem, RT_MAX_SMEM);
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key;
  (void)cfg;
  strcpy(names[0], "fla_recurrent_fwd");
  return 1;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  memset(out, 0, sizeof *out);
  strcpy(out->name, "fla_recurrent_fwd");
  int64_t pairs = (int64_t)args->N * args->H;
  out->grid[0] = pairs > 0 ? (unsigned)pairs : 1u; /* the kernel skips pairs >= N*H */
  out->grid[1] = (unsigned)((key->V + cfg->BV - 1) / cfg->BV);
  out->grid[2] = 1;
  out->block[0] = (unsigned)(32 * cfg->warps);
  out->block[1] = out->block[2] = 1;
  out->smem = 0; /* static shared memory only */
  return 1;
}

const fla_stage_impl fla_stage_recurrent_fwd = {
    .name = "recurrent_fwd",
    .template_file = "recurrent_fwd.cuh",
    .portable = 1, /* also generated for HIP */
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = NULL, /* none */
};
