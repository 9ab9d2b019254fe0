/*
** tune_plan.c -- the tuner's candidates (fla_tune_plan in tune.h): what the
** recipe's search space and the stages' checks allow, before any compile.
*/
#include "cuda/tune.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fla_tune_cfg_str(const fla_tile_config *c, char *buf, size_t len) {
  snprintf(buf, len, "BT=%d BK=%d BV=%d warps=%d", c->BT, c->BK, c->BV, c->warps);
  return buf;
}

/* Whether the stage's check takes cfg for key (the generator runs it; the
** source it writes is dropped). FLA_OK, or the generator's status. */
static fla_status check_(fla_ctx *ctx, fla_stage st, const fla_gen_key *key, const fla_tile_config *cfg) {
  char *src = NULL;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  fla_status s = fla_generate(ctx, st, key, cfg, &src, names, &nk);
  free(src);
  return s;
}

static int same_(const fla_tile_config *a, const fla_tile_config *b) {
  return a->BT == b->BT && a->BK == b->BK && a->BV == b->BV && a->warps == b->warps;
}

/* Adds cfg unless present; counts it pruned when the stage refuses it. */
static void add_(fla_ctx *ctx, fla_tune_job *job, fla_stage st, const fla_tile_config *cfg, int is_default) {
  for (int i = 0; i < job->ncand; i++)
    if (job->cand[i].stage == st && same_(&job->cand[i].cfg, cfg)) return;
  if (check_(ctx, st, &job->key, cfg) != FLA_OK) {
    fla_clear_error(ctx);
    job->npruned++;
    return;
  }
  if (job->ncand == FLA_TUNE_MAX_CANDS) {
    job->npruned++;
    return;
  }
  fla_tune_cand *c = &job->cand[job->ncand++];
  memset(c, 0, sizeof *c);
  c->stage = st;
  c->cfg = *cfg;
  c->is_default = is_default;
  c->time_ms = -1;
}

/* list = the recipe's values of dimension d, with dflt added (first). */
static int values_(const fla_ir *ir, int d, int dflt, int extra, int *list) {
  int n = 0;
  list[n++] = dflt;
  if (extra > 0 && extra != dflt) list[n++] = extra;
  for (int i = 0; i < ir->tiles_n[d]; i++) {
    int dup = 0;
    for (int j = 0; j < n; j++) dup |= list[j] == ir->tiles[d][i];
    if (!dup) list[n++] = ir->tiles[d][i];
  }
  return n;
}

static void plan_chunk_(fla_ctx *ctx, const fla_ir *ir, fla_tune_job *job, fla_stage st) {
  fla_tile_config d;
  fla_stage_default_config(st, &job->key, &d);
  add_(ctx, job, st, &d, 1);
  int bt[FLA_IR_MAX_TILES + 2], bk[FLA_IR_MAX_TILES + 2], bv[FLA_IR_MAX_TILES + 2],
      w[FLA_IR_MAX_TILES + 2];
  int nbt = values_(ir, FLA_TILE_BT, d.BT, ir->chunk_size, bt);
  int nbk = values_(ir, FLA_TILE_BK, d.BK, 0, bk);
  int nbv = values_(ir, FLA_TILE_BV, d.BV, 0, bv);
  int nw = values_(ir, FLA_TILE_WARPS, d.warps, 0, w);
  for (int a = 0; a < nbt; a++)
    for (int b = 0; b < nbk; b++)
      for (int c = 0; c < nbv; c++)
        for (int e = 0; e < nw; e++) {
          fla_tile_config cfg = {bt[a], bk[b], bv[c], w[e]};
          add_(ctx, job, st, &cfg, 0);
        }
}

/* The token-by-token kernel as the other algorithm: its default and the
** value tile halved and doubled (its BT and warps follow K; see
** gen/stage_recurrent.c). */
static void plan_recurrent_(fla_ctx *ctx, fla_tune_job *job) {
  fla_tile_config d;
  fla_stage_default_config(FLA_STAGE_RECURRENT_FWD, &job->key, &d);
  add_(ctx, job, FLA_STAGE_RECURRENT_FWD, &d, 1);
  fla_tile_config half = d, twice = d;
  half.BV = d.BV / 2;
  twice.BV = d.BV * 2;
  if (half.BV >= 1) add_(ctx, job, FLA_STAGE_RECURRENT_FWD, &half, 0);
  add_(ctx, job, FLA_STAGE_RECURRENT_FWD, &twice, 0);
}

fla_status fla_tune_plan(fla_ctx *ctx, const fla_recipe *r, const fla_tune_shape *sh,
                         fla_tune_job *job) {
  if (!r || !sh || !job) return fla_set_error(ctx, FLA_INVALID, "fla_tune_plan: NULL argument");
  memset(job, 0, sizeof *job);
  job->r = r;
  job->shape = *sh;
  job->chunk_stage = -1;
  snprintf(job->name, sizeof job->name, "%s", fla_recipe_name(r));
  const fla_ir *ir = fla_recipe_ir(r);
  fla_op_config oc = {.B = sh->B, .T = sh->T, .H = sh->H, .K = sh->K, .V = sh->V};
  fla_op *op = NULL;
  fla_status s = fla_op_bind(ctx, r, &oc, &op);
  if (s != FLA_OK) return s;
  job->Ks = fla_op_state_k(op);
  fla_op_free(op);
  if (job->Ks > 1 << 20 || sh->V > 1 << 20)
    return fla_set_error(ctx, FLA_SHAPE, "fla_tune_plan: %s: K = %lld, V = %lld are too large",
                         job->name, (long long)job->Ks, (long long)sh->V);
  fla_gen_key_from_ir(ir, (int)job->Ks, (int)sh->V, 1, 0, 1, &job->key);
  /* The chunked stage is the first that handles the key (as in op_cuda.c). */
  static const fla_stage chunked[] = {FLA_STAGE_CHUNK_FWD, FLA_STAGE_CHUNK_GK_FWD, FLA_STAGE_CHUNK_WY_FWD,
                                      FLA_STAGE_CHUNK_KDA_FWD};
  if (sh->T > 1)
    for (int i = 0; i < (int)(sizeof chunked / sizeof chunked[0]) && job->chunk_stage < 0; i++) {
      fla_tile_config d;
      fla_stage_default_config(chunked[i], &job->key, &d);
      if (check_(ctx, chunked[i], &job->key, &d) == FLA_OK) job->chunk_stage = (int)chunked[i];
      fla_clear_error(ctx);
    }
  if (job->chunk_stage >= 0) plan_chunk_(ctx, ir, job, (fla_stage)job->chunk_stage);
  plan_recurrent_(ctx, job);
  if (job->ncand == 0)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "fla_tune_plan: %s at K=%lld V=%lld: no stage takes "
                         "any configuration", job->name, (long long)job->Ks, (long long)sh->V);
  return FLA_OK;
}
