/*
** tune_pick.c -- dispatch through the tuning database (tune_pick.h).
*/
#include "cuda/tune_pick.h"
#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fla_status fla_cuda_tune_ident(fla_ctx *ctx, fla_tune_ident *id) {
  const fla_cuda_device_info *info = fla_cuda_ctx_info(ctx);
  if (!info || !id) return fla_set_error(ctx, FLA_INVALID, "tuning key: not a CUDA context");
  memset(id, 0, sizeof *id);
  snprintf(id->gpu_name, sizeof id->gpu_name, "%s", info->name);
  id->cc_major = info->cc_major;
  id->cc_minor = info->cc_minor;
  id->driver_version = info->driver_version;
  int maj = 0, min = 0;
  if (fla_nvrtc_version(&maj, &min) != 0) maj = 0, min = 0;
  snprintf(id->nvrtc_version, sizeof id->nvrtc_version, "%d.%d", maj, min);
  return FLA_OK;
}

static int is_core_(fla_stage s) { return s != FLA_STAGE_PREP_FWD; }

/* Whether the stage takes cfg for key: a database edited by hand, or from
** another build, must not make a forward fail. */
static int valid_(fla_stage stage, const fla_gen_key *key, const fla_tile_config *cfg) {
  char *src = NULL;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  fla_status s = fla_generate(NULL, stage, key, cfg, &src, names, &nk);
  free(src);
  return s == FLA_OK;
}

/* One-token decoding keeps the recurrent default: the sweep times long
** sequences, whose best staging differs. */
static int is_decode_(const fla_op *op) { return op->T == 1 && !op->varlen; }

/* The tuned configuration of stage (how DEFAULT when there is none). */
static void lookup_(fla_op *op, fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                    const fla_tile_config *dflt, fla_tile_config *cfg, fla_tunedb_how *how,
                    double *ms) {
  fla_tune_ident id;
  fla_tune_key k;
  *cfg = *dflt;
  *how = FLA_TUNEDB_DEFAULT;
  *ms = -1;
  if (fla_cuda_tune_ident(ctx, &id) != FLA_OK ||
      fla_tune_key_make(NULL, &id, op->recipe, stage, key, op->H, &k) != FLA_OK)
    return;
  fla_ctx_tune_lookup(ctx, &k.key, dflt, cfg, how, ms);
}

void fla_cuda_pick_config(fla_op *op, fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                          fla_tile_config *cfg) {
  fla_tile_config dflt;
  fla_stage_default_config(stage, key, &dflt);
  *cfg = dflt;
  if (fla_ctx_tune_forced(ctx, (int)stage, cfg)) return;
  if (!op || !is_core_(stage) || (stage == FLA_STAGE_RECURRENT_FWD && is_decode_(op))) return;
  fla_tunedb_how how;
  double ms;
  lookup_(op, ctx, stage, key, &dflt, cfg, &how, &ms);
  if (how != FLA_TUNEDB_DEFAULT && !valid_(stage, key, cfg)) *cfg = dflt;
}

int fla_cuda_pick_recurrent(fla_op *op, fla_ctx *ctx, fla_stage chunk_stage, const fla_gen_key *key) {
  if (!op || op->algo != FLA_ALGO_AUTO || is_decode_(op)) return 0;
  if (fla_ctx_tune_forced(ctx, (int)chunk_stage, NULL) ||
      fla_ctx_tune_forced(ctx, FLA_STAGE_RECURRENT_FWD, NULL))
    return 0;
  fla_tile_config dc, dr, c, r;
  fla_tunedb_how hc, hr;
  double mc, mr;
  fla_stage_default_config(chunk_stage, key, &dc);
  fla_stage_default_config(FLA_STAGE_RECURRENT_FWD, key, &dr);
  lookup_(op, ctx, chunk_stage, key, &dc, &c, &hc, &mc);
  if (hc == FLA_TUNEDB_DEFAULT) return 0;
  lookup_(op, ctx, FLA_STAGE_RECURRENT_FWD, key, &dr, &r, &hr, &mr);
  return hr != FLA_TUNEDB_DEFAULT && mr >= 0 && mc >= 0 && mr < mc &&
         valid_(FLA_STAGE_RECURRENT_FWD, key, &dr);
}
