/*
** tune_pick.h -- dispatch through the tuning database: the tile
** configuration of each stage of the CUDA forward, and the choice between
** the chunked kernels and the token-by-token one (docs/tunedb.md,
** "Dispatch").
*/
#ifndef FLA_CUDA_TUNE_PICK_H
#define FLA_CUDA_TUNE_PICK_H

#include "generate.h"
#include "op_internal.h"
#include "tune_ctx.h"

/* The device part of a tuning key for a CUDA context (name, compute
** capability, driver and NVRTC versions). FLA_INVALID for a context that is
** not CUDA. */
fla_status fla_cuda_tune_ident(fla_ctx *ctx, fla_tune_ident *id);

/* The configuration op's forward gives `stage` for the generator key `key`:
** the tuner's forced one, else the tuned one (exact, else nearest bucket),
** else the stage's default. The prep stages and one-token decoding always
** get the default (the sweep does not time them). Never fails. */
void fla_cuda_pick_config(fla_op *op, fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                          fla_tile_config *cfg);

/* 1 when the databases hold winners for both chunk_stage and the recurrent
** stage at op's bucket and the recurrent one was faster, so that dispatch
** runs the token-by-token kernel instead (only for FLA_ALGO_AUTO and while
** the tuner forces nothing). */
int fla_cuda_pick_recurrent(fla_op *op, fla_ctx *ctx, fla_stage chunk_stage, const fla_gen_key *key);

#endif
