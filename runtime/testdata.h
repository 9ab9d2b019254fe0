/*
** testdata.h -- random inputs for a bound recipe, the way fla's tests make
** them: normal q, k, v (keys l2-normalised for the delta rule), gates
** log(sigmoid(x)), beta sigmoid(x). Used by fla-bench and the test suites.
*/
#ifndef FLA_TESTDATA_H
#define FLA_TESTDATA_H

#include "fla.h"

typedef struct fla_testdata {
  int n;                             /* inputs in args[] (h0, cu_seqlens included) */
  fla_arg args[12];
  fla_tensor *d_o, *dht;             /* random output gradients */
  int64_t cu[65];                    /* sequence offsets used for cu_seqlens */
} fla_testdata;

/* Fills td for recipe r bound as cfg: every recipe input, "h0" when with_h0,
** "cu_seqlens" when cfg->num_seqs > 0 (lengths drawn at random, one of them 1
** when there are at least 2 sequences; at most 64 sequences), d_o and dht.
** Tensors have dtype dtype. */
fla_status fla_testdata_make(fla_ctx *ctx, const fla_recipe *r, const fla_op_config *cfg,
                             int with_h0, fla_dtype dtype, uint64_t seed, fla_testdata *td);
void fla_testdata_free(fla_testdata *td);

#endif
