/*
** test_chunk.c -- the chunkwise algorithm in float32 (runtime/cpu/chunk.c)
** against the float64 token-by-token oracle (runtime/cpu/recurrent.c).
**
** Every family configuration: decay none / scalar / per-key, times plain
** write reading after, plain write reading before with a bonus, delta write
** (probe = k) and delta write with a separate probe p. For each: T in {1, 63,
** 64, 65, 500}, (K, V) in {(48, 100), (100, 48)}, chunk 64 and 16, h0 / dht
** on and off; a varlen batch with a length-1 sequence. Then: strong decay
** (gates near -5 per step), stripes of strong gates among ordinary ones (both
** paths of the per-key diagonal sub-blocks in one chunk), delta write reading
** before, thread-count independence, no upstream gradient, an empty
** sequence, and the specs the algorithm refuses.
**
** Metric: relative RMS error ||chunk - oracle|| / ||oracle|| < 1e-4 (absolute
** RMS where the oracle is exactly zero) for o, ht and every gradient (dq, dk,
** dv, dp, dg, dbeta, dbonus, dh0). The oracle runs on the float32 inputs
** converted to float64, so only the algorithm's own rounding is measured.
** Delta-rule keys and probes are l2-normalised, gates are log-sigmoids of
** normals, beta is in (0.05, 0.95).
*/
#include "harness.h"
#include "cpu/cpu.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TOL 1e-4
/* The largest chunk the implementation accepts (16-row sub-chunks, at most
** 64 of them: runtime/cpu/gated_product.h). */
#define FLA_GP_BC_MAX_CHUNK_ 1024
#define MAXN 8

typedef struct {
  int decay, delta, read_before, probe;
} family;

typedef struct {
  int64_t N, lens[MAXN], H, K, V;
  int chunk, has_h0, has_dht;
  double gate_shift; /* strong decay: gates g - gate_shift */
  int striped;       /* gate_shift only on tokens t with (t / 16) % 3 == 0 */
  uint64_t seed;
} shape;

/* Both precisions of one problem. */
typedef struct {
  fla_core_spec s;
  int64_t cu[MAXN + 1];
  int64_t nq, nv, ng, nb, nbonus, nh;
  fla_core_f64 d;
  fla_core_f32 f;
  void *blocks[64];
  int nblocks;
} problem;

static void *alloc_(problem *P, int64_t n, size_t size) {
  void *x = calloc((size_t)(n > 0 ? n : 1), size);
  ck_assert_ptr_nonnull(x);
  ck_assert_int_lt(P->nblocks, 64);
  P->blocks[P->nblocks++] = x;
  return x;
}

static void problem_free_(problem *P) {
  for (int i = 0; i < P->nblocks; i++) free(P->blocks[i]);
}

static void l2norm_rows_(double *x, int64_t rows, int64_t K) {
  for (int64_t r = 0; r < rows; r++) {
    double n2 = 0;
    for (int64_t i = 0; i < K; i++) n2 += x[r * K + i] * x[r * K + i];
    double inv = 1.0 / sqrt(n2 > 0 ? n2 : 1);
    for (int64_t i = 0; i < K; i++) x[r * K + i] *= inv;
  }
}

/* A double tensor rounded to float (stored back in the double copy, so the
** oracle sees exactly the float inputs), and its float twin. */
static const float *twin_(problem *P, double *x, int64_t n) {
  float *f = alloc_(P, n, sizeof(float));
  for (int64_t i = 0; i < n; i++) {
    f[i] = (float)x[i];
    x[i] = f[i];
  }
  return f;
}

static double *dalloc_(problem *P, int64_t n) { return alloc_(P, n, sizeof(double)); }
static float *falloc_(problem *P, int64_t n) { return alloc_(P, n, sizeof(float)); }

static void problem_make_(problem *P, family fm, const shape *sh) {
  memset(P, 0, sizeof *P);
  th_rng r;
  th_seed(&r, sh->seed);
  P->cu[0] = 0;
  for (int64_t n = 0; n < sh->N; n++) P->cu[n + 1] = P->cu[n] + sh->lens[n];
  int64_t T = P->cu[sh->N], H = sh->H, K = sh->K, V = sh->V;
  P->s = (fla_core_spec){.decay = fm.decay, .delta = fm.delta, .read_before = fm.read_before,
                         .N = sh->N, .H = H, .K = K, .V = V, .total = T, .cu = P->cu,
                         .scale = 1.0 / sqrt((double)K), .chunk = sh->chunk, .nthreads = 2};
  P->nq = T * H * K;
  P->nv = T * H * V;
  P->ng = fm.decay == FLA_CORE_DECAY_KEY ? T * H * K : fm.decay ? T * H : 0;
  P->nb = T * H;
  P->nbonus = H * K;
  P->nh = sh->N * H * K * V;
  fla_core_f64 *d = &P->d;
  fla_core_f32 *f = &P->f;

  double *q = dalloc_(P, P->nq), *k = dalloc_(P, P->nq), *v = dalloc_(P, P->nv);
  th_fill_normal(&r, q, P->nq, 1.0);
  th_fill_normal(&r, k, P->nq, 1.0);
  th_fill_normal(&r, v, P->nv, 1.0);
  if (fm.delta) l2norm_rows_(k, T * H, K);
  d->q = q, f->q = twin_(P, q, P->nq);
  d->k = k, f->k = twin_(P, k, P->nq);
  d->v = v, f->v = twin_(P, v, P->nv);
  if (fm.delta && fm.probe) {
    double *p = dalloc_(P, P->nq);
    th_fill_normal(&r, p, P->nq, 1.0);
    l2norm_rows_(p, T * H, K);
    d->p = p, f->p = twin_(P, p, P->nq);
  }
  if (fm.decay) {
    double *g = dalloc_(P, P->ng);
    th_fill_logsigmoid(&r, g, P->ng);
    int64_t per_tok = P->ng / (T > 0 ? T : 1);
    for (int64_t i = 0; i < P->ng; i++)
      if (!sh->striped || (i / per_tok / 16) % 3 == 0) g[i] -= sh->gate_shift;
    d->g = g, f->g = twin_(P, g, P->ng);
  }
  if (fm.delta) {
    double *b = dalloc_(P, P->nb);
    for (int64_t i = 0; i < P->nb; i++) b[i] = 0.05 + 0.9 * th_uniform(&r);
    d->beta = b, f->beta = twin_(P, b, P->nb);
  }
  if (fm.read_before) {
    double *u = dalloc_(P, P->nbonus);
    th_fill_normal(&r, u, P->nbonus, 0.5);
    d->bonus = u, f->bonus = twin_(P, u, P->nbonus);
  }
  if (sh->has_h0) {
    double *h0 = dalloc_(P, P->nh);
    th_fill_normal(&r, h0, P->nh, 0.5);
    d->h0 = h0, f->h0 = twin_(P, h0, P->nh);
  }
  double *d_o = dalloc_(P, P->nv);
  th_fill_normal(&r, d_o, P->nv, 1.0);
  d->d_o = d_o, f->d_o = twin_(P, d_o, P->nv);
  if (sh->has_dht) {
    double *dht = dalloc_(P, P->nh);
    th_fill_normal(&r, dht, P->nh, 1.0);
    d->dht = dht, f->dht = twin_(P, dht, P->nh);
  }

  d->o = dalloc_(P, P->nv), f->o = falloc_(P, P->nv);
  d->ht = dalloc_(P, P->nh), f->ht = falloc_(P, P->nh);
  d->dq = dalloc_(P, P->nq), f->dq = falloc_(P, P->nq);
  d->dk = dalloc_(P, P->nq), f->dk = falloc_(P, P->nq);
  d->dv = dalloc_(P, P->nv), f->dv = falloc_(P, P->nv);
  d->dh0 = dalloc_(P, P->nh), f->dh0 = falloc_(P, P->nh);
  if (d->p) d->dp = dalloc_(P, P->nq), f->dp = falloc_(P, P->nq);
  if (d->g) d->dg = dalloc_(P, P->ng), f->dg = falloc_(P, P->ng);
  if (d->beta) d->dbeta = dalloc_(P, P->nb), f->dbeta = falloc_(P, P->nb);
  if (d->bonus) d->dbonus = dalloc_(P, P->nbonus), f->dbonus = falloc_(P, P->nbonus);
}

/* ||a - b|| / ||b|| with a float, b double; when b is identically zero (dg of
** a single token without h0: its gate multiplies a zero state) the absolute
** RMS of a, whose exact cancellations the oracle gets and float does not. */
static double rel_(const float *a, const double *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = (double)a[i] - b[i];
    num += e * e;
    den += b[i] * b[i];
  }
  if (den == 0) return n > 0 ? sqrt(num / (double)n) : 0;
  return sqrt(num / den);
}

static int all_finite_(const float *a, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(a[i])) return 0;
  return 1;
}

#define CHECK_(name, fa, db, n)                                                         \
  do {                                                                                  \
    if (fa) {                                                                           \
      ck_assert_msg(all_finite_(fa, n), "%s: %s not finite", tag, name);                \
      double e_ = rel_(fa, db, n);                                                      \
      if (e_ > worst) worst = e_;                                                       \
      ck_assert_msg(e_ < TOL, "%s: %s rel rms %.3g", tag, name, e_);                    \
    }                                                                                   \
  } while (0)

/* Runs both algorithms forward and backward and compares everything.
** Returns the worst relative error. */
static double run_case_(family fm, const shape *sh) {
  char tag[256];
  snprintf(tag, sizeof tag,
           "decay=%d delta=%d rb=%d probe=%d N=%ld T0=%ld H=%ld K=%ld V=%ld C=%d h0=%d dht=%d "
           "shift=%g",
           fm.decay, fm.delta, fm.read_before, fm.probe, (long)sh->N, (long)sh->lens[0],
           (long)sh->H, (long)sh->K, (long)sh->V, sh->chunk, sh->has_h0, sh->has_dht,
           sh->gate_shift);
  problem P;
  problem_make_(&P, fm, sh);
  ck_assert_int_eq(fla_cpu_recurrent_forward(&P.s, &P.d), 0);
  ck_assert_int_eq(fla_cpu_recurrent_backward(&P.s, &P.d), 0);
  ck_assert_int_eq(fla_cpu_chunk_forward(&P.s, &P.f), 0);
  ck_assert_int_eq(fla_cpu_chunk_backward(&P.s, &P.f), 0);
  double worst = 0;
  CHECK_("o", P.f.o, P.d.o, P.nv);
  CHECK_("ht", P.f.ht, P.d.ht, P.nh);
  CHECK_("dq", P.f.dq, P.d.dq, P.nq);
  CHECK_("dk", P.f.dk, P.d.dk, P.nq);
  CHECK_("dv", P.f.dv, P.d.dv, P.nv);
  CHECK_("dp", P.f.dp, P.d.dp, P.nq);
  CHECK_("dg", P.f.dg, P.d.dg, P.ng);
  CHECK_("dbeta", P.f.dbeta, P.d.dbeta, P.nb);
  CHECK_("dbonus", P.f.dbonus, P.d.dbonus, P.nbonus);
  CHECK_("dh0", P.f.dh0, P.d.dh0, P.nh);
  problem_free_(&P);
  return worst;
}

/* The configurations, one loop-test index each. */
static const family families_[] = {
    {FLA_CORE_DECAY_NONE, 0, 0, 0},   {FLA_CORE_DECAY_NONE, 0, 1, 0},
    {FLA_CORE_DECAY_NONE, 1, 0, 0},   {FLA_CORE_DECAY_NONE, 1, 0, 1},
    {FLA_CORE_DECAY_SCALAR, 0, 0, 0}, {FLA_CORE_DECAY_SCALAR, 0, 1, 0},
    {FLA_CORE_DECAY_SCALAR, 1, 0, 0}, {FLA_CORE_DECAY_SCALAR, 1, 0, 1},
    {FLA_CORE_DECAY_KEY, 0, 0, 0},    {FLA_CORE_DECAY_KEY, 0, 1, 0},
    {FLA_CORE_DECAY_KEY, 1, 0, 0},    {FLA_CORE_DECAY_KEY, 1, 0, 1},
};
#define NFAMILIES ((int)(sizeof families_ / sizeof families_[0]))

/* T x (K, V) x chunk, with h0 / dht alternating. */
START_TEST(test_lengths) {
  family fm = families_[_i];
  static const int64_t lens_full[] = {1, 63, 64, 65, 500}, lens_quick[] = {1, 65};
  static const int64_t kv[][2] = {{48, 100}, {100, 48}};
  const int64_t *lens = th_quick() ? lens_quick : lens_full;
  int nl = th_quick() ? 2 : 5, nkv = th_quick() ? 1 : 2;
  double worst = 0;
  int idx = 0;
  for (int li = 0; li < nl; li++)
    for (int ki = 0; ki < nkv; ki++)
      for (int chunk = 16; chunk <= 64; chunk *= 4, idx++) {
        shape sh = {.N = 1, .lens = {lens[li]}, .H = 2, .K = kv[ki][0], .V = kv[ki][1],
                    .chunk = chunk, .has_h0 = (idx & 1) == 0, .has_dht = (idx & 2) == 0,
                    .seed = 1000 + (uint64_t)(_i * 100 + idx)};
        double e = run_case_(fm, &sh);
        if (e > worst) worst = e;
      }
  fprintf(stderr, "chunk family %2d (decay %d delta %d rb %d probe %d): worst rel rms %.2e\n", _i,
          fm.decay, fm.delta, fm.read_before, fm.probe, worst);
}
END_TEST

/* Varlen: several sequences, one of length 1, chunk 16 and 64. */
START_TEST(test_varlen) {
  family fm = families_[_i];
  for (int chunk = 16; chunk <= 64; chunk *= 4) {
    shape sh = {.N = 4, .lens = {37, 1, 130, 64}, .H = 3, .K = 48, .V = 100, .chunk = chunk,
                .has_h0 = 1, .has_dht = chunk == 64, .seed = 77 + (uint64_t)_i};
    run_case_(fm, &sh);
  }
}
END_TEST

/* Gates near -5 per step: exp(gamma) underflows within a chunk; everything
** must stay finite and accurate. */
START_TEST(test_strong_decay) {
  static const family fams[] = {
      {FLA_CORE_DECAY_KEY, 0, 0, 0},    {FLA_CORE_DECAY_KEY, 0, 1, 0},
      {FLA_CORE_DECAY_KEY, 1, 0, 0},    {FLA_CORE_DECAY_KEY, 1, 0, 1},
      {FLA_CORE_DECAY_SCALAR, 0, 0, 0}, {FLA_CORE_DECAY_SCALAR, 1, 0, 0},
  };
  double worst = 0;
  for (int i = 0; i < (int)(sizeof fams / sizeof fams[0]); i++)
    for (int chunk = 16; chunk <= 64; chunk *= 4) {
      shape sh = {.N = 1, .lens = {200}, .H = 2, .K = 48, .V = 40, .chunk = chunk, .has_h0 = 1,
                  .has_dht = 1, .gate_shift = 4.3, .seed = 500 + (uint64_t)i};
      double e = run_case_(fams[i], &sh);
      if (e > worst) worst = e;
    }
  fprintf(stderr, "chunk strong decay: worst rel rms %.2e\n", worst);
}
END_TEST

/* Stripes of strong gates (16 tokens of every 48) among ordinary ones: within
** one chunk some diagonal sub-blocks are factored through their reference
** row and others take the direct path, and the factors carried from block to
** block pass through both kinds. */
START_TEST(test_mixed_decay) {
  static const family fams[] = {{FLA_CORE_DECAY_KEY, 0, 0, 0}, {FLA_CORE_DECAY_KEY, 0, 1, 0},
                                {FLA_CORE_DECAY_KEY, 1, 0, 1}};
  for (int i = 0; i < 3; i++)
    for (int chunk = 32; chunk <= 64; chunk *= 2) {
      shape sh = {.N = 1, .lens = {150}, .H = 1, .K = 40, .V = 24, .chunk = chunk, .has_h0 = 1,
                  .has_dht = 1, .gate_shift = 4.3, .striped = 1, .seed = 900 + (uint64_t)i};
      run_case_(fams[i], &sh);
    }
}
END_TEST

/* Specs the chunked algorithm refuses. */
START_TEST(test_bad_spec) {
  family fm = {FLA_CORE_DECAY_SCALAR, 1, 0, 0};
  shape sh = {.N = 1, .lens = {10}, .H = 1, .K = 8, .V = 8, .chunk = 16, .seed = 7};
  problem P;
  problem_make_(&P, fm, &sh);
  P.s.chunk = 2 * FLA_GP_BC_MAX_CHUNK_;
  ck_assert_int_eq(fla_cpu_chunk_forward(&P.s, &P.f), -1);
  P.s.chunk = 16;
  const float *beta = P.f.beta;
  P.f.beta = NULL;
  ck_assert_int_eq(fla_cpu_chunk_forward(&P.s, &P.f), -1);
  ck_assert_int_eq(fla_cpu_chunk_backward(&P.s, &P.f), -1);
  P.f.beta = beta;
  P.f.g = NULL;
  ck_assert_int_eq(fla_cpu_chunk_forward(&P.s, &P.f), -1);
  problem_free_(&P);
}
END_TEST

/* Delta write reading before (not an fla op, but the contract allows it). */
START_TEST(test_delta_read_before) {
  for (int decay = 0; decay < 3; decay++) {
    family fm = {decay, 1, 1, decay == 1};
    shape sh = {.N = 2, .lens = {65, 20}, .H = 2, .K = 48, .V = 36, .chunk = 16, .has_h0 = 1,
                .has_dht = 1, .seed = 300 + (uint64_t)decay};
    run_case_(fm, &sh);
  }
}
END_TEST

/* The result does not depend on the thread count (bit-identical). */
START_TEST(test_threads) {
  family fm = {FLA_CORE_DECAY_KEY, 0, 1, 0};
  shape sh = {.N = 3, .lens = {40, 70, 5}, .H = 2, .K = 24, .V = 20, .chunk = 16, .has_h0 = 1,
              .has_dht = 1, .seed = 42};
  problem A, B;
  problem_make_(&A, fm, &sh);
  problem_make_(&B, fm, &sh);
  A.s.nthreads = 1;
  B.s.nthreads = 4;
  ck_assert_int_eq(fla_cpu_chunk_forward(&A.s, &A.f), 0);
  ck_assert_int_eq(fla_cpu_chunk_backward(&A.s, &A.f), 0);
  ck_assert_int_eq(fla_cpu_chunk_forward(&B.s, &B.f), 0);
  ck_assert_int_eq(fla_cpu_chunk_backward(&B.s, &B.f), 0);
  ck_assert(memcmp(A.f.o, B.f.o, sizeof(float) * (size_t)A.nv) == 0);
  ck_assert(memcmp(A.f.dq, B.f.dq, sizeof(float) * (size_t)A.nq) == 0);
  ck_assert(memcmp(A.f.dg, B.f.dg, sizeof(float) * (size_t)A.ng) == 0);
  ck_assert(memcmp(A.f.dbonus, B.f.dbonus, sizeof(float) * (size_t)A.nbonus) == 0);
  problem_free_(&A);
  problem_free_(&B);
}
END_TEST

/* No d_o and no dht: every gradient is zero (and overwritten: poison first). */
START_TEST(test_zero_upstream) {
  family fm = {FLA_CORE_DECAY_SCALAR, 1, 0, 1};
  shape sh = {.N = 1, .lens = {33}, .H = 1, .K = 16, .V = 8, .chunk = 16, .has_h0 = 1,
              .seed = 5};
  problem P;
  problem_make_(&P, fm, &sh);
  P.f.d_o = NULL;
  for (int64_t i = 0; i < P.nq; i++) P.f.dq[i] = P.f.dk[i] = P.f.dp[i] = NAN;
  for (int64_t i = 0; i < P.nb; i++) P.f.dg[i] = P.f.dbeta[i] = NAN;
  ck_assert_int_eq(fla_cpu_chunk_backward(&P.s, &P.f), 0);
  for (int64_t i = 0; i < P.nq; i++) ck_assert(P.f.dq[i] == 0 && P.f.dk[i] == 0 && P.f.dp[i] == 0);
  for (int64_t i = 0; i < P.nb; i++) ck_assert(P.f.dg[i] == 0 && P.f.dbeta[i] == 0);
  for (int64_t i = 0; i < P.nh; i++) ck_assert(P.f.dh0[i] == 0);
  problem_free_(&P);
}
END_TEST

/* An empty sequence: ht = h0 and dh0 = dht. */
START_TEST(test_empty_sequence) {
  family fm = {FLA_CORE_DECAY_KEY, 1, 0, 0};
  shape sh = {.N = 2, .lens = {0, 20}, .H = 1, .K = 8, .V = 8, .chunk = 16, .has_h0 = 1,
              .has_dht = 1, .seed = 6};
  run_case_(fm, &sh);
  problem P;
  problem_make_(&P, fm, &sh);
  ck_assert_int_eq(fla_cpu_chunk_forward(&P.s, &P.f), 0);
  ck_assert_int_eq(fla_cpu_chunk_backward(&P.s, &P.f), 0);
  ck_assert(memcmp(P.f.ht, P.f.h0, sizeof(float) * 64) == 0);
  ck_assert(memcmp(P.f.dh0, P.f.dht, sizeof(float) * 64) == 0);
  problem_free_(&P);
}
END_TEST

static Suite *suite_(void) {
  Suite *s = suite_create("chunk");
  TCase *tc = tcase_create("chunk");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_lengths, 0, NFAMILIES);
  tcase_add_loop_test(tc, test_varlen, 0, NFAMILIES);
  tcase_add_test(tc, test_strong_decay);
  tcase_add_test(tc, test_mixed_decay);
  tcase_add_test(tc, test_bad_spec);
  tcase_add_test(tc, test_delta_read_before);
  tcase_add_test(tc, test_threads);
  tcase_add_test(tc, test_zero_upstream);
  tcase_add_test(tc, test_empty_sequence);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(suite_()); }
