/*
** testdata.c -- random inputs for a bound recipe (fla-bench, tests).
*/
#include "testdata.h"
#include "internal.h"
#include "recipe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t s; } rng_;

static double uniform_(rng_ *r) {
  r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
  return (double)((r->s * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static double normal_(rng_ *r) {
  double u1 = uniform_(r), u2 = uniform_(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double logsigmoid_(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }

/* Allocates a tensor, fills it from x (n doubles), converting to dtype. */
static fla_status tensor_from_(fla_ctx *ctx, fla_dtype dtype, int nd, const int64_t *shape,
                               const double *x, fla_tensor **out) {
  fla_status s = fla_tensor_new(ctx, dtype, nd, shape, out);
  if (s == FLA_OK) s = fla_tensor_copy_from(ctx, *out, x, FLA_F64, fla_tensor_numel(*out));
  return s;
}

static void fill_input_(rng_ *r, const fla_ir *ir, const fla_ir_input *in, int64_t rows, int64_t d,
                        double *x) {
  int64_t n = rows * d;
  for (int64_t i = 0; i < n; i++) {
    double z = normal_(r);
    switch (in->role) {
    case FLA_ROLE_DECAY: x[i] = logsigmoid_(z); break;
    case FLA_ROLE_RATE: x[i] = 1.0 / (1.0 + exp(-z)); break;
    case FLA_ROLE_BONUS: x[i] = 0.5 * z; break;
    default: x[i] = z;
    }
  }
  /* The delta rule is stable for unit keys: normalise them, as fla's tests do. */
  int is_key = in->role == FLA_ROLE_KEY || in->role == FLA_ROLE_PROBE;
  if (ir->family == FLA_FAMILY_WY && is_key)
    for (int64_t row = 0; row < rows; row++) {
      double ss = 0;
      for (int64_t j = 0; j < d; j++) ss += x[row * d + j] * x[row * d + j];
      for (int64_t j = 0; j < d; j++) x[row * d + j] /= sqrt(ss) + 1e-12;
    }
}

static int cmp_i64_(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Offsets of N non-empty sequences over T tokens; sequence 0 has length 1
** when N >= 2 (the edge case fla's varlen tests single out). Needs T >= N. */
static void random_offsets_(rng_ *r, int64_t N, int64_t T, int64_t *cu) {
  cu[0] = 0;
  cu[N] = T;
  if (N < 2) return;
  cu[1] = 1;
  for (int64_t n = 2; n < N; n++) {
    int fresh = 0;
    while (!fresh) { /* distinct cut points in [2, T-1] */
      cu[n] = 2 + (int64_t)(uniform_(r) * (double)(T - 2));
      fresh = 1;
      for (int64_t m = 2; m < n; m++) fresh &= cu[m] != cu[n];
    }
  }
  qsort(cu + 2, (size_t)(N - 2), sizeof(int64_t), cmp_i64_);
}

fla_status fla_testdata_make(fla_ctx *ctx, const fla_recipe *rec, const fla_op_config *cfg,
                             int with_h0, fla_dtype dtype, uint64_t seed, fla_testdata *td) {
  const fla_ir *ir = fla_recipe_ir(rec);
  rng_ r = {seed * 0x9E3779B97F4A7C15ull + 12345};
  memset(td, 0, sizeof *td);
  int64_t N = cfg->num_seqs > 0 ? cfg->num_seqs : cfg->B;
  if (N > 64 || (cfg->num_seqs > 0 && cfg->T < N))
    return fla_set_error(ctx, FLA_INVALID, "fla_testdata_make: at most 64 sequences, each non-empty");
  int64_t Ks = ir->feature_k == FLA_FEATURE_TAYLOR2 ? 1 + cfg->K + cfg->K * cfg->K : cfg->K;
  int64_t rows = cfg->B * cfg->T * cfg->H;
  int64_t big = rows * (cfg->K > cfg->V ? cfg->K : cfg->V);
  int64_t state = N * cfg->H * Ks * cfg->V;
  double *x = malloc(sizeof(double) * (size_t)(big > state ? big : state) + 8);
  if (!x) return fla_set_error(ctx, FLA_NOMEM, "fla_testdata_make: out of memory");
  fla_status s = FLA_OK;
  for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) {
    const fla_ir_input *in = &ir->inputs[i];
    int64_t shape[4] = {cfg->B, cfg->T, cfg->H, cfg->K};
    int nd = 4;
    if (in->layout == FLA_LAYOUT_BTHV) shape[3] = cfg->V;
    if (in->layout == FLA_LAYOUT_BTH) nd = 3;
    if (in->layout == FLA_LAYOUT_HK) nd = 2, shape[0] = cfg->H, shape[1] = cfg->K;
    int64_t d = nd == 4 ? shape[3] : 1;
    fill_input_(&r, ir, in, in->layout == FLA_LAYOUT_HK ? cfg->H * cfg->K : rows, d, x);
    td->args[td->n].name = in->name;
    s = tensor_from_(ctx, dtype, nd, shape, x, &td->args[td->n].tensor);
    td->n++;
  }
  int64_t sshape[4] = {N, cfg->H, Ks, cfg->V}, oshape[4] = {cfg->B, cfg->T, cfg->H, cfg->V};
  if (s == FLA_OK && with_h0) {
    for (int64_t i = 0; i < state; i++) x[i] = 0.5 * normal_(&r);
    td->args[td->n].name = "h0";
    s = tensor_from_(ctx, dtype, 4, sshape, x, &td->args[td->n++].tensor);
  }
  if (s == FLA_OK && cfg->num_seqs > 0) {
    random_offsets_(&r, N, cfg->T, td->cu);
    int64_t cshape[1] = {N + 1};
    td->args[td->n].name = "cu_seqlens";
    s = fla_tensor_new(ctx, FLA_I64, 1, cshape, &td->args[td->n].tensor);
    if (s == FLA_OK) memcpy(fla_tensor_data(td->args[td->n].tensor), td->cu, sizeof(int64_t) * (size_t)(N + 1));
    td->n++;
  }
  if (s == FLA_OK) {
    for (int64_t i = 0; i < rows * cfg->V; i++) x[i] = normal_(&r);
    s = tensor_from_(ctx, dtype, 4, oshape, x, &td->d_o);
  }
  if (s == FLA_OK) {
    for (int64_t i = 0; i < state; i++) x[i] = normal_(&r);
    s = tensor_from_(ctx, dtype, 4, sshape, x, &td->dht);
  }
  free(x);
  if (s != FLA_OK) fla_testdata_free(td);
  return s;
}

void fla_testdata_free(fla_testdata *td) {
  for (int i = 0; i < td->n; i++) fla_tensor_free(td->args[i].tensor);
  fla_tensor_free(td->d_o);
  fla_tensor_free(td->dht);
  memset(td, 0, sizeof *td);
}
