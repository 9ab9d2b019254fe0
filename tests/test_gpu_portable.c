/*
** test_gpu_portable.c -- every portable stage (the ones generated for HIP
** too: fla_stage_has_target(s, FLA_TARGET_HIP)) run on whichever GPU is
** present, CUDA (its CUDA source) or AMD (its HIP source), against the CPU's
** float64 references on the same (rounded) inputs:
**
**   recurrent_fwd, chunk_fwd_portable, chunk_gk_fwd_portable,
**   chunk_wy_fwd_portable   o, ht vs fla_cpu_recurrent_forward
**   recurrent_bwd,          dq, dk, dv, dp, dg, dbeta, dbonus, dh0 vs
**   chunk_bwd_portable      fla_cpu_recurrent_backward (HGRN2's dg with the
**                           chain rule through k = 1 - e^g)
**   prep_fwd, prep_bwd      y, dx vs fla_feature_forward / _backward
**
** Core keys: one of each distinct key of the shipped recipes (decay none,
** const, scalar, per-key; plain or delta write; probe; read before with the
** bonus; keys derived from the decay), f32 and bf16 inputs, (K, V) in
** {(64, 128), (100, 100), (128, 64)}, four sequences of 1, 63, 100 and 500
** tokens (varlen), H = 2, with h0 and a given ht/dht, and once (f32, K = V =
** 100) without either; the chunked stages also at an odd tile configuration.
** Prep: every feature map, D in {64, 100, 128} (taylor2: 8 and 16), 333 rows.
** Outputs are poisoned with NaN first, so anything left unwritten fails.
** Tolerance (relative RMS): 1e-4 forward and 1e-3 backward for outputs
** stored in f32; 5e-3 for outputs stored in bf16 (rounded once).
**
** Without a GPU the test prints "SKIP" with the reason. Each test runs in its
** own (forked) process, so the driver is initialised only there. Every case
** prints one line; failures are collected and reported together.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"
#include "feature.h"
#include "generate.h"
#include "harness.h"
#include "hip/hip_backend.h"
#include "internal.h"
#include "recipe.h"

/* ------------------------------------------------------------ the device */

/* The few device calls the test needs, for either vendor. */
typedef struct dev_ops {
  const char *vendor;
  fla_target target;
  fla_status (*alloc)(fla_ctx *, size_t, uint64_t *);
  void (*free_)(fla_ctx *, uint64_t);
  fla_status (*upload)(fla_ctx *, uint64_t, const void *, size_t);
  fla_status (*download)(fla_ctx *, void *, uint64_t, size_t);
  fla_status (*memset32)(fla_ctx *, uint64_t, uint32_t, size_t);
  /* Compiles (or finds) the module and launches its n kernels in order. */
  fla_status (*run)(fla_ctx *, const char *name, const char *src, char (*names)[64], int n,
                    const fla_kernel_launch *, fla_kernel_args *);
  fla_status (*sync)(fla_ctx *, const char *);
} dev_ops;

static fla_status cuda_run_(fla_ctx *ctx, const char *name, const char *src, char (*names)[64],
                            int n, const fla_kernel_launch *l, fla_kernel_args *a) {
  CUfunction fn[FLA_STAGE_MAX_KERNELS];
  fla_status st = fla_cuda_get_kernels(ctx, name, src, names, n, fn);
  for (int i = 0; i < n && st == FLA_OK; i++) st = fla_cuda_launch(ctx, fn[i], &l[i], a);
  return st;
}

static fla_status hip_run_(fla_ctx *ctx, const char *name, const char *src, char (*names)[64],
                           int n, const fla_kernel_launch *l, fla_kernel_args *a) {
  hipFunction_t fn[FLA_STAGE_MAX_KERNELS];
  fla_status st = fla_hip_get_kernels(ctx, name, src, names, n, fn);
  for (int i = 0; i < n && st == FLA_OK; i++) st = fla_hip_launch(ctx, fn[i], &l[i], a);
  return st;
}

static const dev_ops cuda_ops = {"cuda", FLA_TARGET_CUDA, fla_cuda_mem_alloc, fla_cuda_mem_free,
                                 fla_cuda_upload, fla_cuda_download, fla_cuda_memset_d32,
                                 cuda_run_, fla_cuda_sync};
static const dev_ops hip_ops = {"hip", FLA_TARGET_HIP, fla_hip_mem_alloc, fla_hip_mem_free,
                                fla_hip_upload, fla_hip_download, fla_hip_memset_d32,
                                hip_run_, fla_hip_sync};

/* A CUDA context, else an AMD one on a bare context; NULL (and why) if none. */
static fla_ctx *open_gpu(const dev_ops **ops, char *why, size_t n) {
  fla_ctx *ctx = NULL;
  char cu[512] = "", hp[512] = "";
  if (fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, cu, sizeof cu) == FLA_OK) {
    *ops = &cuda_ops;
    return ctx;
  }
  ctx = calloc(1, sizeof *ctx);
  ck_assert_ptr_nonnull(ctx);
  if (fla_hip_ctx_open(ctx, hp, sizeof hp) == FLA_OK) {
    *ops = &hip_ops;
    return ctx;
  }
  free(ctx);
  snprintf(why, n, "CUDA: %s; HIP: %s", cu, hp);
  return NULL;
}

static void close_gpu(fla_ctx *ctx, const dev_ops *ops) {
  if (ops == &hip_ops) {
    fla_hip_ctx_close(ctx);
    free(ctx);
  } else {
    fla_ctx_free(ctx);
  }
}

/* The device buffers of one case, freed together. */
typedef struct bufs {
  fla_ctx *ctx;
  const dev_ops *ops;
  uint64_t p[40];
  int n;
} bufs;

static uint64_t dalloc(bufs *b, size_t bytes) {
  uint64_t d = 0;
  bytes = (bytes + 3) & ~(size_t)3;
  ck_assert_int_lt(b->n, 40);
  ck_assert_msg(b->ops->alloc(b->ctx, bytes ? bytes : 4, &d) == FLA_OK, "%s",
                fla_errmsg(b->ctx));
  b->p[b->n++] = d;
  return d;
}

static void bufs_free(bufs *b) {
  for (int i = 0; i < b->n; i++) b->ops->free_(b->ctx, b->p[i]);
  b->n = 0;
}

static uint16_t to_bf16(float f) { /* round to nearest even, as the templates do */
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* n values of x, rounded in place to what the device sees (bf16 or f32),
** uploaded in that type. */
static uint64_t put(bufs *b, double *x, int64_t n, int bf16) {
  size_t es = bf16 ? 2 : 4;
  void *h = malloc((size_t)n * es + 4);
  ck_assert_ptr_nonnull(h);
  for (int64_t i = 0; i < n; i++) {
    if (bf16) {
      ((uint16_t *)h)[i] = to_bf16((float)x[i]);
      x[i] = from_bf16(((uint16_t *)h)[i]);
    } else {
      ((float *)h)[i] = (float)x[i];
      x[i] = (float)x[i];
    }
  }
  uint64_t d = dalloc(b, (size_t)n * es);
  ck_assert_int_eq(b->ops->upload(b->ctx, d, h, (size_t)n * es), FLA_OK);
  free(h);
  return d;
}

/* An output of n values (bf16 or f32), filled with NaN. */
static uint64_t out_nan(bufs *b, int64_t n, int bf16) {
  size_t bytes = ((size_t)n * (bf16 ? 2 : 4) + 3) & ~(size_t)3;
  uint64_t d = dalloc(b, bytes);
  ck_assert_int_eq(b->ops->memset32(b->ctx, d, bf16 ? 0x7fc07fc0u : 0x7fc00000u, bytes / 4),
                   FLA_OK);
  return d;
}

/* n values of an output, widened to double (malloc'd). */
static double *get(bufs *b, uint64_t d, int64_t n, int bf16) {
  size_t es = bf16 ? 2 : 4;
  void *h = malloc((size_t)n * es + 4);
  double *x = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  ck_assert(h && x);
  ck_assert_int_eq(b->ops->download(b->ctx, h, d, (size_t)n * es), FLA_OK);
  for (int64_t i = 0; i < n; i++) x[i] = bf16 ? from_bf16(((uint16_t *)h)[i]) : ((float *)h)[i];
  free(h);
  return x;
}

static double rel_rms(const double *a, const double *ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = a[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (num != num) return INFINITY; /* a NaN left in the output */
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Generates the stage for the device's target, sizes its workspaces and runs
** it. FLA_UNSUPPORTED passes through (the stage does not take the key). */
static fla_status run_stage(bufs *b, fla_stage stage, const fla_gen_key *key,
                            const fla_tile_config *cfg, fla_kernel_args *a) {
  char *src = NULL;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  fla_status st = fla_generate_target(b->ctx, b->ops->target, stage, key, cfg, &src, names, &nk);
  if (st == FLA_UNSUPPORTED) return st;
  ck_assert_msg(st == FLA_OK, "%s: %s", fla_stage_name(stage), fla_errmsg(b->ctx));
  size_t w0 = 0, w1 = 0;
  fla_stage_workspace(stage, key, cfg, a, &w0, &w1);
  if (w0) a->ws0 = out_nan(b, (int64_t)(w0 / 4), 0);
  if (w1) a->ws1 = out_nan(b, (int64_t)(w1 / 4), 0);
  fla_kernel_launch l[FLA_STAGE_MAX_KERNELS];
  ck_assert_int_eq(fla_stage_launches(stage, key, cfg, a, l), nk);
  st = b->ops->run(b->ctx, fla_stage_name(stage), src, names, nk, l, a);
  ck_assert_msg(st == FLA_OK, "%s: %s", fla_stage_name(stage), fla_errmsg(b->ctx));
  st = b->ops->sync(b->ctx, fla_stage_name(stage));
  ck_assert_msg(st == FLA_OK, "%s: %s", fla_stage_name(stage), fla_errmsg(b->ctx));
  free(src);
  return FLA_OK;
}

/* One compared output: name, error, tolerance. */
typedef struct check {
  const char *what;
  double err, tol;
} check;

static int failures;

/* Prints the case's line; counts it failed when an error is over its
** tolerance. */
static void report(const char *label, const check *c, int n) {
  int bad = 0;
  char line[1024];
  int at = snprintf(line, sizeof line, "gpu_portable: %s:", label);
  for (int i = 0; i < n; i++) {
    int over = !(c[i].err <= c[i].tol);
    bad |= over;
    at += snprintf(line + at, sizeof line - (size_t)at, " %s %.2e%s", c[i].what, c[i].err,
                   over ? "(!)" : "");
    if (at >= (int)sizeof line) at = (int)sizeof line - 1;
  }
  printf("%s%s\n", line, bad ? "  FAIL" : "");
  failures += bad;
}

/* ---------------------------------------------------- the core stages */

#define NSEQ 4
static const int64_t CU[NSEQ + 1] = {0, 1, 64, 164, 664}; /* 1, 63, 100, 500 tokens */

/* Rows of x [rows, d] scaled to unit norm (delta-rule keys: a stable write). */
static void unit_rows(double *x, int64_t rows, int d) {
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int i = 0; i < d; i++) s += x[r * d + i] * x[r * d + i];
    s = s > 0 ? 1 / sqrt(s) : 0;
    for (int i = 0; i < d; i++) x[r * d + i] *= s;
  }
}

/* The inputs of a core case, host side (rounded to what the device sees). */
typedef struct core_in {
  int64_t T;
  int H, K, V;
  double *q, *k, *p, *v, *g, *beta, *bonus, *h0, *d_o, *dht;
  double gamma[2];
} core_in;

static void core_in_free(core_in *x) {
  free(x->q), free(x->k), free(x->p), free(x->v), free(x->g), free(x->beta), free(x->bonus);
  free(x->h0), free(x->d_o), free(x->dht);
}

/* Fills the inputs, uploads them into a (in the key's dtype) and sets the
** sizes. k is 1 - e^g on both sides for a key derived from the decay. */
static void core_inputs(bufs *b, const fla_gen_key *key, uint64_t seed, core_in *x,
                        fla_kernel_args *a) {
  const int H = 2, K = key->K, V = key->V, bf = key->in_bf16;
  const int64_t T = CU[NSEQ], TK = T * H * K;
  memset(x, 0, sizeof *x);
  x->T = T, x->H = H, x->K = K, x->V = V;
  th_rng rng;
  th_seed(&rng, seed);
#define ALLOC_(f, n) ck_assert_ptr_nonnull(x->f = malloc(sizeof(double) * (size_t)(n)))
  ALLOC_(q, TK);
  ALLOC_(k, TK);
  ALLOC_(p, TK);
  ALLOC_(v, T * H * V);
  ALLOC_(g, key->decay == 3 ? TK : T * H);
  ALLOC_(beta, T * H);
  ALLOC_(bonus, H * K);
  ALLOC_(h0, (int64_t)NSEQ * H * K * V);
  ALLOC_(dht, (int64_t)NSEQ * H * K * V);
  ALLOC_(d_o, T * H * V);
#undef ALLOC_
  th_fill_normal(&rng, x->q, TK, 1.0);
  th_fill_normal(&rng, x->k, TK, 1.0);
  th_fill_normal(&rng, x->p, TK, 1.0);
  if (key->delta) unit_rows(x->k, T * H, K), unit_rows(x->p, T * H, K);
  th_fill_normal(&rng, x->v, T * H * V, 1.0);
  th_fill_logsigmoid(&rng, x->g, key->decay == 3 ? TK : T * H);
  for (int64_t i = 0; i < T * H; i++) x->beta[i] = 0.05 + 0.9 * th_uniform(&rng);
  th_fill_normal(&rng, x->bonus, H * K, 0.5);
  th_fill_normal(&rng, x->h0, (int64_t)NSEQ * H * K * V, 0.5);
  th_fill_normal(&rng, x->dht, (int64_t)NSEQ * H * K * V, 0.5);
  th_fill_normal(&rng, x->d_o, T * H * V, 1.0);
  x->gamma[0] = log(1 - pow(2, -5)), x->gamma[1] = log(1 - pow(2, -6));

  memset(a, 0, sizeof *a);
  a->q = put(b, x->q, TK, bf);
  a->v = put(b, x->v, T * H * V, bf);
  if (key->decay == 3) a->g = put(b, x->g, TK, bf);
  if (key->decay == 2) a->g = put(b, x->g, T * H, bf);
  if (key->decay == 1) { /* gamma [H] f32; the CPU sees it as a scalar g a token */
    double gm[2] = {x->gamma[0], x->gamma[1]};
    a->gamma = put(b, gm, H, 0);
    x->gamma[0] = gm[0], x->gamma[1] = gm[1];
    for (int64_t t = 0; t < T; t++)
      for (int h = 0; h < H; h++) x->g[t * H + h] = gm[h];
  }
  if (key->key_from_decay)
    for (int64_t i = 0; i < TK; i++) x->k[i] = -expm1(x->g[i]);
  else
    a->k = put(b, x->k, TK, bf);
  if (key->has_probe) a->p = put(b, x->p, TK, bf);
  if (key->delta) a->beta = put(b, x->beta, T * H, bf);
  if (key->has_bonus) a->bonus = put(b, x->bonus, H * K, bf);
  if (key->has_h0) a->h0 = put(b, x->h0, (int64_t)NSEQ * H * K * V, 0);
  a->cu = dalloc(b, sizeof CU);
  ck_assert_int_eq(b->ops->upload(b->ctx, a->cu, CU, sizeof CU), FLA_OK);
  a->total = T, a->N = NSEQ, a->H = H, a->scale = (float)(1.0 / sqrt((double)K));
}

static void core_spec(const fla_gen_key *key, const core_in *x, fla_core_spec *s,
                      fla_core_f64 *io) {
  memset(s, 0, sizeof *s);
  s->decay = key->decay == 3 ? FLA_CORE_DECAY_KEY
             : key->decay    ? FLA_CORE_DECAY_SCALAR
                             : FLA_CORE_DECAY_NONE;
  s->delta = key->delta, s->read_before = key->read_before;
  s->N = NSEQ, s->H = x->H, s->K = x->K, s->V = x->V, s->total = x->T, s->cu = CU;
  s->scale = (float)(1.0 / sqrt((double)x->K));
  s->nthreads = 1;
  memset(io, 0, sizeof *io);
  io->q = x->q, io->k = x->k, io->v = x->v;
  io->p = key->has_probe ? x->p : NULL;
  io->g = key->decay ? x->g : NULL;
  io->beta = key->delta ? x->beta : NULL;
  io->bonus = key->has_bonus ? x->bonus : NULL;
  io->h0 = key->has_h0 ? x->h0 : NULL;
}

static void key_label(const fla_gen_key *k, const char *stage, const char *extra, char *out,
                      size_t n) {
  snprintf(out, n, "%s decay=%d delta=%d probe=%d before=%d bonus=%d kfd=%d %s K=%d V=%d%s%s%s",
           stage, k->decay, k->delta, k->has_probe, k->read_before, k->has_bonus,
           k->key_from_decay, k->in_bf16 ? "bf16" : "f32", k->K, k->V,
           k->has_h0 ? " h0" : "", k->store_ht ? " ht" : "", extra);
}

/* A forward stage: o and ht against the float64 recurrence. Returns 0 when
** the stage does not take the key. */
static int forward_case(fla_ctx *ctx, const dev_ops *ops, fla_stage stage,
                        const fla_gen_key *key, const fla_tile_config *cfg) {
  bufs b = {ctx, ops, {0}, 0};
  core_in x;
  fla_kernel_args a;
  core_inputs(&b, key, 11 + (uint64_t)key->K * 7 + (uint64_t)key->V, &x, &a);
  const int64_t TV = x.T * x.H * x.V, S = (int64_t)NSEQ * x.H * x.K * x.V;
  a.o = out_nan(&b, TV, key->in_bf16);
  if (key->store_ht) a.ht = out_nan(&b, S, 0);
  if (run_stage(&b, stage, key, cfg, &a) == FLA_UNSUPPORTED) {
    bufs_free(&b);
    core_in_free(&x);
    return 0;
  }
  fla_core_spec s;
  fla_core_f64 io;
  core_spec(key, &x, &s, &io);
  double *o = malloc(sizeof(double) * (size_t)TV), *ht = malloc(sizeof(double) * (size_t)S);
  ck_assert(o && ht);
  io.o = o, io.ht = key->store_ht ? ht : NULL;
  ck_assert_int_eq(fla_cpu_recurrent_forward(&s, &io), 0);
  check c[2];
  int nc = 0;
  double *og = get(&b, a.o, TV, key->in_bf16);
  c[nc++] = (check){"o", rel_rms(og, o, TV), key->in_bf16 ? 5e-3 : 1e-4};
  free(og);
  if (key->store_ht) {
    double *hg = get(&b, a.ht, S, 0);
    c[nc++] = (check){"ht", rel_rms(hg, ht, S), 1e-4};
    free(hg);
  }
  char label[256], extra[64] = "";
  if (cfg) snprintf(extra, sizeof extra, " BT=%d BV=%d warps=%d", cfg->BT, cfg->BV, cfg->warps);
  key_label(key, fla_stage_name(stage), extra, label, sizeof label);
  report(label, c, nc);
  free(o), free(ht);
  bufs_free(&b);
  core_in_free(&x);
  return 1;
}

/* The chunk tables of CU for chunks of BT tokens, uploaded: a->chunk_first,
** chunk_seq, num_chunks. */
static void chunk_tables(bufs *b, int BT, fla_kernel_args *a) {
  int64_t first[NSEQ + 1], nc = 0;
  int32_t seq[1024];
  for (int n = 0; n < NSEQ; n++) {
    first[n] = nc;
    for (int64_t c = 0; c < (CU[n + 1] - CU[n] + BT - 1) / BT; c++) {
      ck_assert_int_lt(nc, 1024);
      seq[nc++] = n;
    }
  }
  first[NSEQ] = nc;
  a->chunk_first = dalloc(b, sizeof first);
  a->chunk_seq = dalloc(b, sizeof(int32_t) * (size_t)(nc ? nc : 1));
  ck_assert_int_eq(b->ops->upload(b->ctx, a->chunk_first, first, sizeof first), FLA_OK);
  ck_assert_int_eq(b->ops->upload(b->ctx, a->chunk_seq, seq, sizeof(int32_t) * (size_t)nc), FLA_OK);
  a->num_chunks = (int32_t)nc;
}

/* A backward stage: every gradient against the float64 backward.
** recurrent_bwd writes dq, dk, dp in f32 (the core's gradients),
** chunk_bwd_portable dq, dk in the input dtype (chunk_bwd's contract).
** Returns 0 when the stage does not take the key. */
static int backward_case(fla_ctx *ctx, const dev_ops *ops, fla_stage stage,
                         const fla_gen_key *key, const fla_tile_config *cfg) {
  bufs b = {ctx, ops, {0}, 0};
  core_in x;
  fla_kernel_args a;
  const int bf = key->in_bf16;
  core_inputs(&b, key, 23 + (uint64_t)key->K * 5 + (uint64_t)key->V, &x, &a);
  const int64_t TK = x.T * x.H * x.K, TV = x.T * x.H * x.V, TH = x.T * x.H;
  const int64_t S = (int64_t)NSEQ * x.H * x.K * x.V, GN = key->decay == 3 ? TK : TH;
  a.d_o = put(&b, x.d_o, TV, bf);
  if (key->store_ht) a.dht = put(&b, x.dht, S, 0);
  const int qkbf = stage == FLA_STAGE_CHUNK_BWD_PORTABLE ? bf : 0; /* dq, dk dtype */
  a.dq = out_nan(&b, TK, qkbf);
  if (!key->key_from_decay) a.dk = out_nan(&b, TK, qkbf);
  a.dv = out_nan(&b, TV, bf);
  if (key->delta && key->has_probe) a.dp = out_nan(&b, TK, 0);
  if (key->decay >= 2) a.dg = out_nan(&b, GN, bf);
  if (key->delta) a.dbeta = out_nan(&b, TH, bf);
  if (key->has_bonus) a.dbonus = out_nan(&b, (int64_t)x.H * x.K, bf);
  a.dh0 = out_nan(&b, S, 0);
  if (stage == FLA_STAGE_CHUNK_BWD_PORTABLE) {
    fla_tile_config d;
    fla_stage_default_config(stage, key, &d);
    chunk_tables(&b, cfg && cfg->BT ? cfg->BT : d.BT, &a);
  }
  if (run_stage(&b, stage, key, cfg, &a) == FLA_UNSUPPORTED) {
    bufs_free(&b);
    core_in_free(&x);
    return 0;
  }

  fla_core_spec s;
  fla_core_f64 io;
  core_spec(key, &x, &s, &io);
  io.d_o = x.d_o, io.dht = key->store_ht ? x.dht : NULL;
  double *r[8];
  const int64_t rn[8] = {TK, TK, TV, TK, GN, TH, (int64_t)x.H * x.K, S};
  for (int i = 0; i < 8; i++) ck_assert_ptr_nonnull(r[i] = calloc((size_t)rn[i], sizeof(double)));
  io.dq = r[0], io.dk = r[1], io.dv = r[2];
  io.dp = key->delta && key->has_probe ? r[3] : NULL;
  io.dg = key->decay >= 2 ? r[4] : NULL;
  io.dbeta = key->delta ? r[5] : NULL;
  io.dbonus = key->has_bonus ? r[6] : NULL;
  io.dh0 = r[7];
  ck_assert_int_eq(fla_cpu_recurrent_backward(&s, &io), 0);
  if (key->key_from_decay) /* k = 1 - e^g: dL/dg gains -e^g dL/dk */
    for (int64_t i = 0; i < TK; i++) r[4][i] -= exp(x.g[i]) * r[1][i];

  const double tf = 1e-3, tb = bf ? 5e-3 : 1e-3; /* f32-stored, input-dtype-stored */
  const double tq = qkbf ? tb : tf;
  struct {
    const char *what;
    uint64_t d;
    int i, bf16;
    double tol;
  } outs[8] = {{"dq", a.dq, 0, qkbf, tq},  {"dk", a.dk, 1, qkbf, tq},    {"dv", a.dv, 2, bf, tb},
               {"dp", a.dp, 3, 0, tf},     {"dg", a.dg, 4, bf, tb},      {"dbeta", a.dbeta, 5, bf, tb},
               {"dbonus", a.dbonus, 6, bf, tb}, {"dh0", a.dh0, 7, 0, tf}};
  check c[8];
  int nc = 0;
  for (int i = 0; i < 8; i++) {
    if (!outs[i].d) continue;
    double *g = get(&b, outs[i].d, rn[outs[i].i], outs[i].bf16);
    c[nc++] = (check){outs[i].what, rel_rms(g, r[outs[i].i], rn[outs[i].i]), outs[i].tol};
    free(g);
  }
  char label[256], extra[64] = "";
  if (cfg) snprintf(extra, sizeof extra, " BT=%d BV=%d warps=%d", cfg->BT, cfg->BV, cfg->warps);
  key_label(key, fla_stage_name(stage), extra, label, sizeof label);
  report(label, c, nc);
  for (int i = 0; i < 8; i++) free(r[i]);
  bufs_free(&b);
  core_in_free(&x);
  return 1;
}

/* The distinct core keys of the shipped recipes (feature maps are prep's). */
static int recipe_keys(fla_gen_key *keys, int cap) {
  fla_ctx *cpu = th_cpu_ctx();
  const char *names[64];
  int nr = fla_recipe_list_builtin(names, 64), n = 0;
  for (int i = 0; i < nr; i++) {
    fla_recipe *r = NULL;
    ck_assert(fla_recipe_find(cpu, names[i], &r) == FLA_OK);
    fla_gen_key k;
    fla_gen_key_from_ir(fla_recipe_ir(r), 64, 64, 0, 1, 1, &k);
    fla_recipe_free(r);
    int seen = 0;
    for (int j = 0; j < n; j++) seen |= !memcmp(&keys[j], &k, sizeof k);
    if (!seen) {
      ck_assert_int_lt(n, cap);
      keys[n++] = k;
    }
  }
  fla_ctx_free(cpu);
  return n;
}

static const int DIMS[3][2] = {{64, 128}, {100, 100}, {128, 64}};
static const fla_stage CHUNKED[3] = {FLA_STAGE_CHUNK_FWD_PORTABLE, FLA_STAGE_CHUNK_GK_FWD_PORTABLE,
                                     FLA_STAGE_CHUNK_WY_FWD_PORTABLE};

static fla_ctx *open_or_skip(const dev_ops **ops) {
  char why[1200] = "";
  fla_ctx *ctx = open_gpu(ops, why, sizeof why);
  if (!ctx) printf("test_gpu_portable: SKIP: no GPU (%s)\n", why);
  else printf("test_gpu_portable: on %s (%s)\n", ctx->device_name, (*ops)->vendor);
  return ctx;
}

START_TEST(test_forward_stages_vs_cpu) {
  const dev_ops *ops = NULL;
  fla_ctx *ctx = open_or_skip(&ops);
  if (!ctx) return;
  fla_gen_key keys[32];
  int nkeys = recipe_keys(keys, 32), chunked = 0, recurrent = 0;
  ck_assert_int_ge(nkeys, 9);
  failures = 0;
  for (int i = 0; i < nkeys; i++) {
    int taken = 0;
    for (int bf = 0; bf <= 1; bf++)
      for (int d = 0; d < 3; d++)
        for (int plain = 0; plain <= (bf == 0 && d == 1); plain++) { /* plain: no h0, no ht */
          fla_gen_key k = keys[i];
          k.in_bf16 = bf, k.K = DIMS[d][0], k.V = DIMS[d][1];
          k.has_h0 = k.store_ht = !plain;
          recurrent += forward_case(ctx, ops, FLA_STAGE_RECURRENT_FWD, &k, NULL);
          for (int c = 0; c < 3; c++) {
            int ran = forward_case(ctx, ops, CHUNKED[c], &k, NULL);
            if (ran && bf == 0 && d == 1 && !plain) { /* an odd tile configuration */
              fla_tile_config odd = {7, 0, 24, 2};
              ck_assert(forward_case(ctx, ops, CHUNKED[c], &k, &odd));
            }
            chunked += ran, taken += ran;
          }
        }
    /* every key but KDA's (per-key gates with the delta rule) has one */
    int kda = keys[i].decay == 3 && keys[i].delta;
    ck_assert_msg(taken == (kda ? 0 : 7), "key %d: %d portable chunked runs", i, taken);
  }
  printf("test_gpu_portable: forward: %d recurrent_fwd and %d portable chunked runs, %d failed\n",
         recurrent, chunked, failures);
  ck_assert_int_eq(recurrent, nkeys * 7); /* recurrent_fwd takes every key */
  ck_assert_int_eq(failures, 0);
  close_gpu(ctx, ops);
}
END_TEST

START_TEST(test_backward_stages_vs_cpu) {
  const dev_ops *ops = NULL;
  fla_ctx *ctx = open_or_skip(&ops);
  if (!ctx) return;
  fla_gen_key keys[32];
  int nkeys = recipe_keys(keys, 32), runs = 0, chunked = 0;
  failures = 0;
  for (int i = 0; i < nkeys; i++)
    for (int bf = 0; bf <= 1; bf++)
      for (int d = 0; d < 3; d++)
        for (int plain = 0; plain <= (bf == 0 && d == 1); plain++) {
          fla_gen_key k = keys[i];
          k.in_bf16 = bf, k.K = DIMS[d][0], k.V = DIMS[d][1];
          k.has_h0 = k.store_ht = !plain;
          ck_assert(backward_case(ctx, ops, FLA_STAGE_RECURRENT_BWD, &k, NULL)), runs++;
          int cb = backward_case(ctx, ops, FLA_STAGE_CHUNK_BWD_PORTABLE, &k, NULL);
          chunked += cb;
          if (bf == 0 && d == 1 && !plain) { /* short segments, narrow blocks */
            fla_tile_config odd = {5, 0, 4, 2};
            ck_assert(backward_case(ctx, ops, FLA_STAGE_RECURRENT_BWD, &k, &odd)), runs++;
            if (cb) {
              fla_tile_config oddc = {7, 0, 24, 2};
              chunked += backward_case(ctx, ops, FLA_STAGE_CHUNK_BWD_PORTABLE, &k, &oddc);
            }
          }
        }
  printf("test_gpu_portable: backward: %d recurrent_bwd and %d chunk_bwd_portable runs, %d "
         "failed\n", runs, chunked, failures);
  ck_assert_int_eq(chunked, 3 * 8); /* the decay family's 3 keys (none, const, scalar) */
  ck_assert_int_eq(failures, 0);
  close_gpu(ctx, ops);
}
END_TEST

/* ------------------------------------------------------------- prep */

static void prep_case(fla_ctx *ctx, const dev_ops *ops, int feature, int D, int bf, int bwd) {
  bufs b = {ctx, ops, {0}, 0};
  const int64_t rows = 333, DO = fla_feature_dim((fla_ir_feature)feature, D);
  th_rng rng;
  th_seed(&rng, (uint64_t)(feature * 100 + D + bwd));
  double *x = malloc(sizeof(double) * (size_t)(rows * D));
  double *dy = malloc(sizeof(double) * (size_t)(rows * DO));
  double *ref = malloc(sizeof(double) * (size_t)(rows * (bwd ? D : DO)));
  ck_assert(x && dy && ref);
  th_fill_normal(&rng, x, rows * D, 1.0);
  th_fill_normal(&rng, dy, rows * DO, 1.0);
  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.rows = rows;
  a.x = put(&b, x, rows * D, bf);
  if (bwd) {
    a.dy = put(&b, dy, rows * DO, 0);
    a.dx = out_nan(&b, rows * D, bf);
  } else {
    a.y = out_nan(&b, rows * DO, bf);
  }
  fla_gen_key k;
  memset(&k, 0, sizeof k);
  k.feature = feature, k.feature_in_dim = D, k.in_bf16 = bf;
  ck_assert_int_eq(run_stage(&b, bwd ? FLA_STAGE_PREP_BWD : FLA_STAGE_PREP_FWD, &k, NULL, &a),
                   FLA_OK);
  if (bwd) fla_feature_backward((fla_ir_feature)feature, rows, D, x, dy, ref);
  else fla_feature_forward((fla_ir_feature)feature, rows, D, x, ref);
  int64_t n = rows * (bwd ? D : DO);
  double *g = get(&b, bwd ? a.dx : a.y, n, bf);
  check c = {bwd ? "dx" : "y", rel_rms(g, ref, n), bf ? 5e-3 : 1e-5};
  char label[128];
  snprintf(label, sizeof label, "%s %s D=%d %s", bwd ? "prep_bwd" : "prep_fwd",
           fla_feature_name((fla_ir_feature)feature), D, bf ? "bf16" : "f32");
  report(label, &c, 1);
  free(g), free(x), free(dy), free(ref);
  bufs_free(&b);
}

START_TEST(test_prep_vs_cpu) {
  const dev_ops *ops = NULL;
  fla_ctx *ctx = open_or_skip(&ops);
  if (!ctx) return;
  failures = 0;
  int runs = 0;
  for (int f = FLA_FEATURE_IDENTITY; f <= FLA_FEATURE_TAYLOR2; f++)
    for (int bf = 0; bf <= 1; bf++)
      for (int d = 0; d < 3; d++)
        for (int bwd = 0; bwd <= 1; bwd++) {
          int D = f == FLA_FEATURE_TAYLOR2 ? (d ? 16 : 8) : DIMS[d][0];
          if (f == FLA_FEATURE_TAYLOR2 && d == 2) continue;
          prep_case(ctx, ops, f, D, bf, bwd), runs++;
        }
  printf("test_gpu_portable: prep: %d runs, %d failed\n", runs, failures);
  ck_assert_int_eq(failures, 0);
  close_gpu(ctx, ops);
}
END_TEST

/* Every stage the tests above run is portable, and every portable stage is
** run above (no GPU needed). */
START_TEST(test_portable_stages_covered) {
  const fla_stage ran[] = {FLA_STAGE_PREP_FWD,      FLA_STAGE_RECURRENT_FWD,
                           FLA_STAGE_PREP_BWD,      FLA_STAGE_RECURRENT_BWD,
                           CHUNKED[0],              CHUNKED[1],
                           CHUNKED[2],              FLA_STAGE_CHUNK_BWD_PORTABLE};
  int portable = 0;
  for (int s = 0; s < FLA_STAGE_COUNT; s++)
    portable += fla_stage_has_target((fla_stage)s, FLA_TARGET_HIP) &&
                fla_stage_has_target((fla_stage)s, FLA_TARGET_CUDA);
  for (size_t i = 0; i < sizeof ran / sizeof ran[0]; i++)
    ck_assert_msg(fla_stage_has_target(ran[i], FLA_TARGET_HIP), "%s", fla_stage_name(ran[i]));
  ck_assert_int_eq(portable, (int)(sizeof ran / sizeof ran[0]));
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("gpu_portable");
  TCase *tc = tcase_create("portable");
  tcase_set_timeout(tc, 900);
  tcase_add_test(tc, test_portable_stages_covered);
  tcase_add_test(tc, test_forward_stages_vs_cpu);
  tcase_add_test(tc, test_backward_stages_vs_cpu);
  tcase_add_test(tc, test_prep_vs_cpu);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(suite()); }
