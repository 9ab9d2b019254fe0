/*
** test_recurrent.c -- the float64 token-by-token oracle (runtime/cpu/recurrent.c):
** finite-difference gradient checks for every family configuration, tiny
** hand-computed cases, the backward's checkpoint boundaries, empty sequences
** and thread-count independence.
**
** Gradient error metric, used throughout:
**   err = |fd - an| / max(1e-8, |fd| + |an|)  <  1e-6
** with an the backward's value, L = sum(o * dO) + sum(ht * dHt) (the ht term
** only when dht is given), and fd the fourth-order central difference
**   fd = (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / (12 h),  h = 3e-3.
** Every input element is perturbed. Why not the two-point difference with
** h = 1e-6: its rounding error (about ulp(L) / h ~ 1e-9 absolute) exceeds
** 1e-6 relative on the many gradients of size 1e-4 .. 1e-6. L is a
** polynomial of degree <= 2 in every input except the gates, so the larger
** h costs no truncation error there, and for the gates it is O(h^4) ~ 1e-10.
** L is summed in long double for the same reason.
*/
#include "harness.h"
#include "cpu/cpu.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define FD_H 3e-3
#define FD_TOL 1e-6
#define MAXN 8

/* One family configuration. */
typedef struct {
  int decay, delta, read_before, probe, has_h0, has_dht;
} family;

/* A random problem: inputs, the upstream gradients, and output buffers. */
typedef struct {
  family f;
  fla_core_spec s;
  int64_t cu[MAXN + 1];
  int64_t nq, nv, ng, nb, nbonus, nh, nth; /* element counts; nth = T*H */
  double *q, *k, *v, *p, *g, *beta, *bonus, *h0; /* h0 all zeros without has_h0 */
  double *d_o, *dht;
  double *o, *ht;
  double *dq, *dk, *dv, *dp, *dg, *dbeta, *dbonus, *dh0;
} problem;

static double *alloc_(int64_t n) {
  double *x = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
  ck_assert_ptr_nonnull(x);
  return x;
}

/* Scales each [K] row of x (rows of tok*H) to unit length: delta-rule keys
** are l2-normalised in practice, which keeps I - beta k p^T contractive. */
static void l2norm_rows_(double *x, int64_t rows, int64_t K) {
  for (int64_t r = 0; r < rows; r++) {
    double n2 = 0;
    for (int64_t i = 0; i < K; i++) n2 += x[r * K + i] * x[r * K + i];
    double inv = 1.0 / sqrt(n2 > 0 ? n2 : 1);
    for (int64_t i = 0; i < K; i++) x[r * K + i] *= inv;
  }
}

static void problem_make_(problem *P, family f, int64_t N, const int64_t *lens, int64_t H,
                          int64_t K, int64_t V, uint64_t seed) {
  memset(P, 0, sizeof *P);
  ck_assert_int_le(N, MAXN);
  P->f = f;
  P->cu[0] = 0;
  for (int64_t n = 0; n < N; n++) P->cu[n + 1] = P->cu[n] + lens[n];
  int64_t T = P->cu[N];
  P->s = (fla_core_spec){.decay = f.decay, .delta = f.delta, .read_before = f.read_before,
                         .N = N, .H = H, .K = K, .V = V, .total = T, .cu = P->cu,
                         .scale = 1.0 / sqrt((double)K), .chunk = 64, .nthreads = 1};
  P->nq = T * H * K;
  P->nv = T * H * V;
  P->ng = f.decay == FLA_CORE_DECAY_KEY ? T * H * K : f.decay ? T * H : 0;
  P->nb = f.delta ? T * H : 0;
  P->nth = T * H;
  P->nbonus = f.read_before ? H * K : 0;
  P->nh = N * H * K * V;
  th_rng r;
  th_seed(&r, seed);
  P->q = alloc_(P->nq);
  P->k = alloc_(P->nq);
  P->v = alloc_(P->nv);
  th_fill_normal(&r, P->q, P->nq, 1.0);
  th_fill_normal(&r, P->k, P->nq, 1.0);
  th_fill_normal(&r, P->v, P->nv, 1.0);
  if (f.delta) l2norm_rows_(P->k, T * H, K);
  if (f.probe) {
    P->p = alloc_(P->nq);
    th_fill_normal(&r, P->p, P->nq, 1.0);
    l2norm_rows_(P->p, T * H, K);
  }
  if (P->ng) {
    P->g = alloc_(P->ng);
    th_fill_logsigmoid(&r, P->g, P->ng);
  }
  if (P->nb) {
    P->beta = alloc_(P->nb);
    for (int64_t i = 0; i < P->nb; i++) P->beta[i] = 0.05 + 0.9 * th_uniform(&r);
  }
  if (P->nbonus) {
    P->bonus = alloc_(P->nbonus);
    th_fill_normal(&r, P->bonus, P->nbonus, 1.0);
  }
  P->h0 = alloc_(P->nh);
  if (f.has_h0) th_fill_normal(&r, P->h0, P->nh, 0.5);
  P->d_o = alloc_(P->nv);
  th_fill_normal(&r, P->d_o, P->nv, 1.0);
  if (f.has_dht) {
    P->dht = alloc_(P->nh);
    th_fill_normal(&r, P->dht, P->nh, 1.0);
  }
  P->o = alloc_(P->nv);
  P->ht = alloc_(P->nh);
  P->dq = alloc_(P->nq);
  P->dk = alloc_(P->nq);
  P->dv = alloc_(P->nv);
  P->dp = alloc_(P->nq);
  P->dg = alloc_(P->ng);
  P->dbeta = alloc_(P->nth); /* full size: zeroed without delta */
  P->dbonus = alloc_(H * K);
  P->dh0 = alloc_(P->nh);
}

static void problem_free_(problem *P) {
  double *all[] = {P->q, P->k, P->v, P->p, P->g, P->beta, P->bonus, P->h0, P->d_o, P->dht,
                   P->o, P->ht, P->dq, P->dk, P->dv, P->dp, P->dg, P->dbeta, P->dbonus,
                   P->dh0};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

/* The io struct of P: h0 is passed as NULL without has_h0 (the FD pass uses
** the zero buffer instead, which must give the same results). */
static fla_core_f64 problem_io_(problem *P, int h0_buffer) {
  fla_core_f64 io;
  memset(&io, 0, sizeof io);
  io.q = P->q;
  io.k = P->k;
  io.v = P->v;
  io.p = P->p;
  io.g = P->g;
  io.beta = P->beta;
  io.bonus = P->bonus;
  io.h0 = P->f.has_h0 || h0_buffer ? P->h0 : NULL;
  io.o = P->o;
  io.ht = P->ht;
  io.d_o = P->d_o;
  io.dht = P->dht;
  io.dq = P->dq;
  io.dk = P->dk;
  io.dv = P->dv;
  io.dp = P->dp;
  io.dg = P->ng ? P->dg : NULL;
  io.dbeta = P->dbeta;
  io.dbonus = P->dbonus;
  io.dh0 = P->dh0;
  return io;
}

static double loss_(problem *P) {
  fla_core_f64 io = problem_io_(P, 1);
  ck_assert_int_eq(fla_cpu_recurrent_forward(&P->s, &io), 0);
  long double L = 0;
  for (int64_t i = 0; i < P->nv; i++) L += (long double)P->o[i] * P->d_o[i];
  if (P->dht)
    for (int64_t i = 0; i < P->nh; i++) L += (long double)P->ht[i] * P->dht[i];
  return (double)L;
}

static void fill_nan_(double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = NAN;
}

/* Runs the backward on P with every gradient buffer pre-filled with NaN, so
** that a gradient left unwritten shows. */
static void backward_(problem *P) {
  int64_t H = P->s.H, K = P->s.K;
  fill_nan_(P->dq, P->nq);
  fill_nan_(P->dk, P->nq);
  fill_nan_(P->dv, P->nv);
  fill_nan_(P->dp, P->nq);
  fill_nan_(P->dg, P->ng);
  fill_nan_(P->dbeta, P->nth);
  fill_nan_(P->dbonus, H * K);
  fill_nan_(P->dh0, P->nh);
  fla_core_f64 io = problem_io_(P, 0);
  ck_assert_int_eq(fla_cpu_recurrent_backward(&P->s, &io), 0);
}

static double rel_err_(double fd, double an) {
  double den = fabs(fd) + fabs(an);
  return fabs(fd - an) / (den > 1e-8 ? den : 1e-8);
}

/* Max error over x[idx] for idx in a list (or all when idx == NULL). */
static double fd_check_(problem *P, const char *name, double *x, const double *an, int64_t n,
                        const int64_t *idx, int64_t nidx) {
  double worst = 0;
  int64_t count = idx ? nidx : n;
  for (int64_t c = 0; c < count; c++) {
    int64_t i = idx ? idx[c] : c;
    double x0 = x[i];
    double l[4];
    static const double off[4] = {1, -1, 2, -2};
    for (int m = 0; m < 4; m++) {
      x[i] = x0 + off[m] * FD_H;
      l[m] = loss_(P);
    }
    double fd = (8 * (l[0] - l[1]) - (l[2] - l[3])) / (12 * FD_H);
    x[i] = x0;
    ck_assert_msg(isfinite(an[i]), "%s[%lld] not written", name, (long long)i);
    double e = rel_err_(fd, an[i]);
    if (e > worst) worst = e;
    ck_assert_msg(e < FD_TOL, "%s[%lld]: fd %.12g analytic %.12g err %.3g", name,
                  (long long)i, fd, an[i], e);
  }
  return worst;
}

static int all_zero_(const double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (x[i] != 0) return 0;
  return 1;
}

/* Backward once, then FD on every element of every input. Returns the worst
** error. */
static double check_all_grads_(problem *P) {
  int64_t H = P->s.H, K = P->s.K;
  backward_(P);
  double w = 0, e;
  e = fd_check_(P, "dq", P->q, P->dq, P->nq, NULL, 0);          w = fmax(w, e);
  e = fd_check_(P, "dk", P->k, P->dk, P->nq, NULL, 0);          w = fmax(w, e);
  e = fd_check_(P, "dv", P->v, P->dv, P->nv, NULL, 0);          w = fmax(w, e);
  e = fd_check_(P, "dh0", P->h0, P->dh0, P->nh, NULL, 0);       w = fmax(w, e);
  if (P->p) { e = fd_check_(P, "dp", P->p, P->dp, P->nq, NULL, 0); w = fmax(w, e); }
  else ck_assert(all_zero_(P->dp, P->nq));
  if (P->ng) { e = fd_check_(P, "dg", P->g, P->dg, P->ng, NULL, 0); w = fmax(w, e); }
  if (P->nb) { e = fd_check_(P, "dbeta", P->beta, P->dbeta, P->nb, NULL, 0); w = fmax(w, e); }
  else ck_assert(all_zero_(P->dbeta, P->nth));
  if (P->bonus) { e = fd_check_(P, "dbonus", P->bonus, P->dbonus, H * K, NULL, 0); w = fmax(w, e); }
  else ck_assert(all_zero_(P->dbonus, H * K));
  return w;
}

static const char *family_name_(family f, char *buf, size_t len) {
  static const char *dn[] = {"none", "scalar", "key"};
  snprintf(buf, len, "decay=%s %s read=%s%s h0=%d dht=%d", dn[f.decay],
           f.delta ? "delta" : "plain", f.read_before ? "before+bonus" : "after",
           f.probe ? " probe" : "", f.has_h0, f.has_dht);
  return buf;
}

/* ------------------------------------------------- (a) FD, all families */

/* _i enumerates decay (3) x write (plain, delta, delta+probe) x read (2). */
START_TEST(fd_families) {
  int decay = _i / 6, write = (_i / 2) % 3, rb = _i % 2;
  double worst = 0;
  for (int hd = 0; hd < 4; hd++) {
    family f = {.decay = decay, .delta = write > 0, .read_before = rb, .probe = write == 2,
                .has_h0 = hd & 1, .has_dht = hd >> 1};
    problem P;
    int64_t lens[2] = {5, 3};
    problem_make_(&P, f, 2, lens, 2, 3, 4, 1000 + 10 * (uint64_t)_i + (uint64_t)hd);
    double e = check_all_grads_(&P);
    if (e > worst) worst = e;
    problem_free_(&P);
  }
  char buf[128];
  family f0 = {decay, write > 0, rb, write == 2, 0, 0};
  family_name_(f0, buf, sizeof buf);
  *strstr(buf, " h0=") = 0;
  printf("fd %-42s (h0, dht: all 4) worst rel err %.2e\n", buf, worst);
}
END_TEST

/* ---------------------------------------------- (b) hand-computed cases */

/* T=2, K=V=1, scale 0.5, q = (1, 4), k = (2, 3), v = (5, 7), h0 = 1. */
typedef struct {
  int decay, delta, read_before;
  double g[2], beta[2], bonus;
  double o[2], ht;
} hand_case;

static void run_hand_(const hand_case *c) {
  int64_t cu[2] = {0, 2};
  double q[2] = {1, 4}, k[2] = {2, 3}, v[2] = {5, 7}, h0 = 1, o[2] = {0, 0}, ht = 0;
  fla_core_spec s = {.decay = c->decay, .delta = c->delta, .read_before = c->read_before,
                     .N = 1, .H = 1, .K = 1, .V = 1, .total = 2, .cu = cu, .scale = 0.5,
                     .chunk = 64, .nthreads = 1};
  fla_core_f64 io;
  memset(&io, 0, sizeof io);
  io.q = q;
  io.k = k;
  io.v = v;
  io.g = c->decay ? c->g : NULL;
  io.beta = c->delta ? c->beta : NULL;
  io.bonus = c->read_before ? &c->bonus : NULL;
  io.h0 = &h0;
  io.o = o;
  io.ht = &ht;
  ck_assert_int_eq(fla_cpu_recurrent_forward(&s, &io), 0);
  for (int t = 0; t < 2; t++)
    ck_assert_msg(fabs(o[t] - c->o[t]) <= 1e-14 * fabs(c->o[t]), "o[%d] = %.17g, want %.17g",
                  t, o[t], c->o[t]);
  ck_assert_msg(fabs(ht - c->ht) <= 1e-14 * fabs(c->ht), "ht = %.17g, want %.17g", ht, c->ht);
}

START_TEST(hand_plain) {
  /* S1 = 1 + 2*5 = 11, o1 = .5*11*1 = 5.5; S2 = 11 + 3*7 = 32, o2 = .5*32*4 = 64. */
  hand_case c = {.o = {5.5, 64}, .ht = 32};
  run_hand_(&c);
}
END_TEST

START_TEST(hand_delta) {
  /* beta = (.5, .25): u1 = .5 (5 - 1*2) = 1.5, S1 = 1 + 2*1.5 = 4, o1 = 2;
  ** u2 = .25 (7 - 4*3) = -1.25, S2 = 4 + 3*(-1.25) = .25, o2 = .5*.25*4 = .5. */
  hand_case c = {.delta = 1, .beta = {0.5, 0.25}, .o = {2, 0.5}, .ht = 0.25};
  run_hand_(&c);
}
END_TEST

START_TEST(hand_decay) {
  /* g = ln(.5), ln(.25): S1 = .5*1 + 10 = 10.5, o1 = 5.25;
  ** S2 = .25*10.5 + 21 = 23.625, o2 = .5*23.625*4 = 47.25. Same for the
  ** per-key decay, K being 1. */
  for (int d = FLA_CORE_DECAY_SCALAR; d <= FLA_CORE_DECAY_KEY; d++) {
    hand_case c = {.decay = d, .g = {log(0.5), log(0.25)}, .o = {5.25, 47.25}, .ht = 23.625};
    run_hand_(&c);
  }
}
END_TEST

START_TEST(hand_gated_delta) {
  /* g = ln(.5), beta = (.5, .25): S~1 = .5, u1 = .5 (5 - .5*2) = 2,
  ** S1 = .5 + 4 = 4.5, o1 = 2.25; g2 = 0: u2 = .25 (7 - 13.5) = -1.625,
  ** S2 = 4.5 - 4.875 = -.375, o2 = .5*(-.375)*4 = -.75. */
  hand_case c = {.decay = FLA_CORE_DECAY_SCALAR, .delta = 1, .g = {log(0.5), 0},
                 .beta = {0.5, 0.25}, .o = {2.25, -0.75}, .ht = -0.375};
  run_hand_(&c);
}
END_TEST

START_TEST(hand_read_before) {
  /* bonus .5: o1 = .5*1*1 + .5*(1*.5*2)*5 = 3; S1 = 11;
  ** o2 = .5*11*4 + .5*(4*.5*3)*7 = 22 + 21 = 43; ht = 32. */
  hand_case c = {.read_before = 1, .bonus = 0.5, .o = {3, 43}, .ht = 32};
  run_hand_(&c);
}
END_TEST

/* --------------------------------------------- (c) checkpoint boundaries */

/* Sequence lengths around the backward's checkpoint interval (64): FD on
** every input element of a single sequence of that length. */
static const int64_t ckpt_lens[] = {1, 63, 64, 65, 130};

static const family ckpt_families[] = {
    {FLA_CORE_DECAY_SCALAR, 1, 0, 0, 1, 1}, /* gated delta rule */
    {FLA_CORE_DECAY_KEY, 1, 0, 1, 1, 1},    /* KDA-like with a probe */
    {FLA_CORE_DECAY_KEY, 0, 0, 0, 1, 1},    /* GLA */
    {FLA_CORE_DECAY_KEY, 0, 1, 0, 1, 1},    /* RWKV-6 */
    {FLA_CORE_DECAY_NONE, 1, 0, 0, 0, 0},   /* DeltaNet, no states */
};

START_TEST(checkpoint_boundaries) {
  int nl = (int)(sizeof ckpt_lens / sizeof ckpt_lens[0]);
  int64_t len = ckpt_lens[_i % nl];
  family f = ckpt_families[_i / nl];
  if (th_quick() && len > 65) return;
  problem P;
  problem_make_(&P, f, 1, &len, 2, 3, 4, 5000 + (uint64_t)_i);
  double e = check_all_grads_(&P);
  char buf[128];
  printf("ckpt T=%-3lld %-50s worst rel err %.2e\n", (long long)len,
         family_name_(f, buf, sizeof buf), e);
  problem_free_(&P);
}
END_TEST

/* Several sequences whose lengths straddle the interval, in one call. */
START_TEST(checkpoint_multi_sequence) {
  family f = {FLA_CORE_DECAY_KEY, 1, 1, 1, 1, 1};
  int64_t lens[4] = {64, 1, 65, 7};
  problem P;
  problem_make_(&P, f, th_quick() ? 2 : 4, lens, 2, 3, 4, 77);
  double e = check_all_grads_(&P);
  printf("ckpt multi-sequence worst rel err %.2e\n", e);
  problem_free_(&P);
}
END_TEST

/* ------------------------------------------------ (d) empty sequences */

START_TEST(zero_length_sequence) {
  family f = {FLA_CORE_DECAY_SCALAR, 1, 0, 0, 1, 1};
  int64_t lens[4] = {4, 0, 3, 0};
  problem P;
  problem_make_(&P, f, 4, lens, 2, 3, 4, 31);
  int64_t KVH = P.s.H * P.s.K * P.s.V;
  check_all_grads_(&P);
  loss_(&P); /* refresh ht after the FD perturbations */
  for (int n = 1; n < 4; n += 2) {
    /* An empty sequence passes h0 to ht and dht to dh0 unchanged. */
    ck_assert_mem_eq(P.ht + n * KVH, P.h0 + n * KVH, sizeof(double) * (size_t)KVH);
    ck_assert_mem_eq(P.dh0 + n * KVH, P.dht + n * KVH, sizeof(double) * (size_t)KVH);
  }
  problem_free_(&P);
}
END_TEST

START_TEST(all_sequences_empty) {
  /* No tokens at all; without dht the initial-state gradient is zero. */
  for (int has_dht = 0; has_dht < 2; has_dht++) {
    family f = {FLA_CORE_DECAY_KEY, 1, 1, 1, 1, has_dht};
    int64_t lens[2] = {0, 0};
    problem P;
    problem_make_(&P, f, 2, lens, 2, 3, 4, 32);
    loss_(&P);
    ck_assert_mem_eq(P.ht, P.h0, sizeof(double) * (size_t)P.nh);
    backward_(&P);
    if (has_dht)
      ck_assert_mem_eq(P.dh0, P.dht, sizeof(double) * (size_t)P.nh);
    else
      ck_assert(all_zero_(P.dh0, P.nh));
    ck_assert(all_zero_(P.dbonus, P.s.H * P.s.K));
    problem_free_(&P);
  }
}
END_TEST

/* -------------------------------------------------------- (e) threads */

/* nthreads 1 and 2 give bit-identical outputs and gradients. */
START_TEST(threads_bit_identical) {
  static const family fams[] = {
      {FLA_CORE_DECAY_KEY, 0, 1, 0, 1, 1}, /* bonus: dbonus is reduced over pairs */
      {FLA_CORE_DECAY_SCALAR, 1, 0, 1, 1, 1},
  };
  family f = fams[_i];
  int64_t lens[3] = {70, 5, 129};
  problem A, B;
  problem_make_(&A, f, 3, lens, 3, 8, 6, 900 + (uint64_t)_i);
  problem_make_(&B, f, 3, lens, 3, 8, 6, 900 + (uint64_t)_i);
  B.s.nthreads = 2;
  loss_(&A);
  loss_(&B);
  backward_(&A);
  backward_(&B);
#define SAME(x, n) ck_assert_mem_eq(A.x, B.x, sizeof(double) * (size_t)(n))
  SAME(o, A.nv);
  SAME(ht, A.nh);
  SAME(dq, A.nq);
  SAME(dk, A.nq);
  SAME(dv, A.nv);
  SAME(dp, A.nq);
  SAME(dg, A.ng);
  SAME(dbeta, A.nth);
  SAME(dbonus, A.s.H * A.s.K);
  SAME(dh0, A.nh);
#undef SAME
  problem_free_(&A);
  problem_free_(&B);
}
END_TEST

/* Gradients not asked for (NULL) are skipped; the others stay the same. */
START_TEST(null_gradients) {
  family f = {FLA_CORE_DECAY_KEY, 1, 1, 1, 1, 1};
  int64_t lens[2] = {9, 4};
  problem P;
  problem_make_(&P, f, 2, lens, 2, 3, 4, 55);
  backward_(&P);
  double *dv = alloc_(P.nv), *dbonus = alloc_(P.s.H * P.s.K);
  memcpy(dv, P.dv, sizeof(double) * (size_t)P.nv);
  memcpy(dbonus, P.dbonus, sizeof(double) * (size_t)(P.s.H * P.s.K));
  fla_core_f64 io = problem_io_(&P, 0);
  io.dq = io.dk = io.dp = io.dg = io.dbeta = io.dh0 = NULL;
  fill_nan_(P.dv, P.nv);
  ck_assert_int_eq(fla_cpu_recurrent_backward(&P.s, &io), 0);
  ck_assert_mem_eq(dv, P.dv, sizeof(double) * (size_t)P.nv);
  ck_assert_mem_eq(dbonus, P.dbonus, sizeof(double) * (size_t)(P.s.H * P.s.K));
  io.dbonus = NULL;
  ck_assert_int_eq(fla_cpu_recurrent_backward(&P.s, &io), 0);
  ck_assert_mem_eq(dv, P.dv, sizeof(double) * (size_t)P.nv);
  free(dv);
  free(dbonus);
  problem_free_(&P);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("recurrent");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  tcase_add_loop_test(tc, fd_families, 0, 18);
  tcase_add_test(tc, hand_plain);
  tcase_add_test(tc, hand_delta);
  tcase_add_test(tc, hand_decay);
  tcase_add_test(tc, hand_gated_delta);
  tcase_add_test(tc, hand_read_before);
  tcase_add_loop_test(tc, checkpoint_boundaries, 0,
                      (int)(sizeof ckpt_lens / sizeof ckpt_lens[0] *
                            (sizeof ckpt_families / sizeof ckpt_families[0])));
  tcase_add_test(tc, checkpoint_multi_sequence);
  tcase_add_test(tc, zero_length_sequence);
  tcase_add_test(tc, all_sequences_empty);
  tcase_add_loop_test(tc, threads_bit_identical, 0, 2);
  tcase_add_test(tc, null_gradients);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(suite()); }
