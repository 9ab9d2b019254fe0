/*
** fla-bench -- times recipes forward and forward+backward and checks the
** chunked algorithm against the recurrent oracle.
**
**   fla-bench --demo                      every shipped recipe on the CPU at
**                                         B=1 T=4096 H=4 K=V=128 (based: K=16)
**   fla-bench [--recipe R ...] [--shape B,T,H,K,V ...] [--device cpu]
**             [--runs N] [--no-recurrent] [--threads N]
**   fla-bench --device cuda [--recipe R ...] [--shape B,T,H,K,V ...] [--runs N]
**
** CPU: one row per (recipe, shape): chunked forward and forward+backward
** times (median of --runs), the recurrent oracle's forward+backward time,
** the speed-up, and the largest relative RMS error of o, ht and every
** gradient of the chunked form against the recurrent one.
**
** CUDA: bf16 forward times at the shapes of shared/ANCHORS.md by default,
** with the achieved bandwidth, the memory floor, and fla's time from
** ANCHORS.md where it has one; for T > 1 also forward+backward (every
** input's gradient), against fla's fwd+bwd where ANCHORS.md has one.
** Two timings of each: "GPU ms", the median over --runs calls queued back to
** back of the CUDA-event time around each call with L2 flushed before it (a
** 256 MB memset outside the events) -- the method of triton.testing.do_bench
** behind fla's ANCHORS.md figures, so the ratio to fla uses it; and "wall ms",
** the median wall clock of one synchronous call (launch and sync latency
** included, ~0.01-0.02 ms more). FLA_BENCH_ALGO=recurrent makes the GPU rows
** time the recurrent stage.
*/
#include "common.h"
#include "recipe.h"
#include "testdata.h"
#include "op_internal.h"
#include "cuda/op_cuda.h"
#include "cuda/cuda_api.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 32

typedef struct {
  int64_t B, T, H, K, V;
} shape_;

static double now_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double_(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Outputs of one algorithm: o, ht and one gradient per input (+ dh0). */
typedef struct {
  fla_tensor *o, *ht;
  int ng;
  fla_arg grads[12];
  char names[12][80];
} results_;

static void results_free_(results_ *res) {
  fla_tensor_free(res->o);
  fla_tensor_free(res->ht);
  for (int i = 0; i < res->ng; i++) fla_tensor_free(res->grads[i].tensor);
  memset(res, 0, sizeof *res);
}

static fla_status results_new_(fla_ctx *ctx, const fla_op *op, const fla_testdata *td,
                               results_ *res) {
  memset(res, 0, sizeof *res);
  fla_status s = fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->d_o), &res->o);
  if (s == FLA_OK) s = fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->dht), &res->ht);
  for (int i = 0; s == FLA_OK && i < td->n; i++) {
    if (!strcmp(td->args[i].name, "cu_seqlens")) continue;
    snprintf(res->names[res->ng], sizeof res->names[0], "d%s", td->args[i].name);
    res->grads[res->ng].name = res->names[res->ng];
    s = fla_tensor_new(ctx, FLA_F32, fla_tensor_ndim(td->args[i].tensor),
                       fla_tensor_shape(td->args[i].tensor), &res->grads[res->ng].tensor);
    res->ng++;
  }
  (void)op;
  return s;
}

/* Median seconds of `runs` forward (backward = 0) or forward+backward calls. */
static fla_status time_op_(fla_op *op, const fla_testdata *td, results_ *res, int backward, int runs,
                           double *median) {
  double t[64];
  if (runs > 64) runs = 64;
  for (int i = 0; i < runs; i++) {
    double t0 = now_();
    fla_status s = fla_op_forward(op, td->args, td->n, res->o, res->ht);
    if (s == FLA_OK && backward)
      s = fla_op_backward(op, td->args, td->n, td->d_o, td->dht, res->grads, res->ng);
    if (s != FLA_OK) return s;
    t[i] = now_() - t0;
  }
  qsort(t, (size_t)runs, sizeof t[0], cmp_double_);
  *median = t[runs / 2];
  return FLA_OK;
}

static double rel_rms_(fla_tensor *a, fla_tensor *b) {
  const float *x = fla_tensor_data(a), *y = fla_tensor_data(b);
  double num = 0, den = 0;
  for (int64_t i = 0; i < fla_tensor_numel(a); i++) {
    double d = (double)x[i] - y[i];
    num += d * d, den += (double)y[i] * y[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The largest error of the chunked results against the recurrent ones. */
static double max_err_(results_ *c, results_ *r, char *worst, size_t len) {
  double e = rel_rms_(c->o, r->o), x;
  snprintf(worst, len, "o");
  if ((x = rel_rms_(c->ht, r->ht)) > e || isnan(x)) e = x, snprintf(worst, len, "ht");
  for (int i = 0; i < c->ng; i++)
    if ((x = rel_rms_(c->grads[i].tensor, r->grads[i].tensor)) > e || isnan(x))
      e = x, snprintf(worst, len, "%s", c->grads[i].name);
  return e;
}

typedef struct {
  int runs, recurrent;
} options_;

static int bench_one_(fla_ctx *ctx, const char *name, shape_ sh, const options_ *opt) {
  fla_recipe *r = tool_load_recipe(ctx, "fla-bench", name);
  if (!r) return 1;
  const fla_ir *ir = fla_recipe_ir(r);
  if (ir->feature_k == FLA_FEATURE_TAYLOR2 && sh.K > 16) sh.K = 16; /* state is 1+K+K^2 wide */
  fla_op_config cfg = {.B = sh.B, .T = sh.T, .H = sh.H, .K = sh.K, .V = sh.V, .algo = FLA_ALGO_CHUNK};
  fla_op *chunk = NULL, *rec = NULL;
  fla_testdata td;
  memset(&td, 0, sizeof td);
  results_ rc = {0}, rr = {0};
  double t_fwd = 0, t_fb = 0, t_rec = NAN, err = NAN;
  char worst[80] = "-";
  fla_status s = fla_op_bind(ctx, r, &cfg, &chunk);
  if (s == FLA_OK) s = fla_testdata_make(ctx, r, &cfg, 1, FLA_F32, 1, &td);
  if (s == FLA_OK) s = results_new_(ctx, chunk, &td, &rc);
  if (s == FLA_OK) s = time_op_(chunk, &td, &rc, 0, opt->runs, &t_fwd);
  if (s == FLA_OK) s = time_op_(chunk, &td, &rc, 1, opt->runs, &t_fb);
  if (s == FLA_OK && opt->recurrent) {
    cfg.algo = FLA_ALGO_RECURRENT;
    s = fla_op_bind(ctx, r, &cfg, &rec);
    if (s == FLA_OK) s = results_new_(ctx, rec, &td, &rr);
    if (s == FLA_OK) s = time_op_(rec, &td, &rr, 1, 1, &t_rec);
    if (s == FLA_OK) err = max_err_(&rc, &rr, worst, sizeof worst);
  }
  if (s != FLA_OK) {
    fprintf(stderr, "fla-bench: %s: %s: %s\n", name, fla_errstr(s), fla_errmsg(ctx));
  } else {
    char shape[96];
    snprintf(shape, sizeof shape, "%lld,%lld,%lld,%lld,%lld", (long long)sh.B, (long long)sh.T,
             (long long)sh.H, (long long)sh.K, (long long)sh.V);
    printf("| %-16s | %-18s | %9.1f | %9.1f | %10.1f | %6.1fx | %.1e (%s) |\n", name, shape,
           1e3 * t_fwd, 1e3 * t_fb, 1e3 * t_rec, t_rec / t_fb, err, worst);
    fflush(stdout);
  }
  results_free_(&rc);
  results_free_(&rr);
  fla_testdata_free(&td);
  fla_op_free(chunk);
  fla_op_free(rec);
  fla_recipe_free(r);
  return s != FLA_OK;
}

/* ------------------------------------------------------------ the GPU */

/* fla's forward times and the memory floors on the H100, from
** shared/ANCHORS.md (bf16, do_bench medians), keyed by our recipe names. */
static const struct {
  const char *recipe;
  int64_t B, T, H, D;
  double fla_ms, floor_ms;
  double fla_fb_ms; /* fla's forward+backward (0: no figure in ANCHORS.md) */
} anchors_[] = {
  {"retention", 1, 8192, 96, 128, 1.021, 0.267, 3.744},      {"simple_gla", 1, 8192, 96, 128, 0.815, 0.268, 0},
  {"gla", 1, 8192, 96, 128, 2.391, 0.334, 0},            {"gated_delta_rule", 1, 8192, 96, 128, 1.641, 0.269, 0},
  {"retention", 2, 16384, 16, 128, 0.955, 0.178, 3.047},     {"simple_gla", 2, 16384, 16, 128, 0.548, 0.179, 0},
  {"gla", 2, 16384, 16, 128, 1.752, 0.222, 0},           {"gated_delta_rule", 2, 16384, 16, 128, 1.080, 0.179, 0},
  {"retention", 4, 2048, 16, 128, 0.410, 0.044, 1.800},      {"simple_gla", 4, 2048, 16, 128, 0.388, 0.045, 0},
  {"gla", 4, 2048, 16, 128, 0.990, 0.056, 0},            {"gated_delta_rule", 4, 2048, 16, 128, 0.924, 0.045, 0},
  {"retention", 4, 4096, 64, 128, 1.285, 0.356, 5.146},      {"simple_gla", 4, 4096, 64, 128, 1.030, 0.357, 0},
  {"gla", 4, 4096, 64, 128, 3.211, 0.445, 0},            {"gated_delta_rule", 4, 4096, 64, 128, 2.083, 0.359, 0},
  {"retention", 1, 65536, 16, 128, 2.251, 0.356, 7.277},     {"simple_gla", 1, 65536, 16, 128, 1.324, 0.357, 0},
  {"gla", 1, 65536, 16, 128, 4.262, 0.445, 0},           {"gated_delta_rule", 1, 65536, 16, 128, 2.736, 0.359, 0},
  {"retention", 1, 262144, 8, 128, 5.609, 0.711, 19.907},     {"simple_gla", 1, 262144, 8, 128, 3.921, 0.714, 0},
  {"gla", 1, 262144, 8, 128, 11.567, 0.889, 0},          {"gated_delta_rule", 1, 262144, 8, 128, 7.452, 0.717, 0},
  /* one-token decoding, fla's fused_recurrent_gated_delta_rule (state read and written) */
  {"gated_delta_rule", 1, 1, 16, 128, 0.0589, 0, 0},     {"gated_delta_rule", 16, 1, 16, 128, 0.1261, 0, 0},
  {"gated_delta_rule", 64, 1, 16, 128, 0.0653, 0, 0},    {"gated_delta_rule", 256, 1, 16, 128, 0.2268, 0, 0},
};
#define NANCHORS ((int)(sizeof anchors_ / sizeof anchors_[0]))

static int anchor_(const char *recipe, shape_ sh) {
  for (int i = 0; i < NANCHORS; i++)
    if (!strcmp(anchors_[i].recipe, recipe) && anchors_[i].B == sh.B && anchors_[i].T == sh.T &&
        anchors_[i].H == sh.H && anchors_[i].D == sh.K && sh.K == sh.V)
      return i;
  return -1;
}

/* Cheap pseudo-random values in each role's range (timing does not depend
** on them; correctness is the GPU test suite's job). */
static float value_(uint64_t *seed, fla_ir_role role) {
  *seed ^= *seed << 13, *seed ^= *seed >> 7, *seed ^= *seed << 17;
  float u = (float)(*seed >> 40) * (1.0f / 16777216.0f);
  return role == FLA_ROLE_DECAY ? -0.01f - 0.05f * u
         : role == FLA_ROLE_RATE ? 0.2f + 0.6f * u
         : role == FLA_ROLE_BONUS ? 0.1f * u : 2.0f * u - 1.0f;
}

static fla_status device_inputs_(fla_ctx *g, const fla_ir *ir, const fla_op_config *cfg, fla_arg *args,
                                 int64_t *bytes) {
  uint64_t seed = 88172645463325252ull;
  fla_status s = FLA_OK;
  *bytes = 0;
  for (int i = 0; i < ir->num_inputs; i++) args[i] = (fla_arg){ir->inputs[i].name, NULL};
  for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) {
    const fla_ir_input *in = &ir->inputs[i];
    int64_t shape[4] = {cfg->B, cfg->T, cfg->H, in->layout == FLA_LAYOUT_BTHV ? cfg->V : cfg->K};
    int nd = in->layout == FLA_LAYOUT_BTH ? 3 : 4;
    if (in->layout == FLA_LAYOUT_HK) nd = 2, shape[0] = cfg->H, shape[1] = cfg->K;
    s = fla_tensor_new(g, FLA_BF16, nd, shape, &args[i].tensor);
    if (s != FLA_OK) break;
    int64_t n = fla_tensor_numel(args[i].tensor), block = 1 << 22;
    float *x = malloc(sizeof(float) * (size_t)(n < block ? n : block));
    if (!x) return FLA_NOMEM;
    for (int64_t j = 0; j < (n < block ? n : block); j++) x[j] = value_(&seed, in->role);
    /* the tensor repeats one random block: enough for timing */
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    if (!h) {
      free(x);
      return FLA_NOMEM;
    }
    for (int64_t j = 0; j < n; j++) h[j] = fla_f32_to_bf16(x[j % block]);
    s = fla_tensor_copy_from(g, args[i].tensor, h, FLA_BF16, n);
    *bytes += 2 * n;
    free(h);
    free(x);
  }
  return s;
}

/* One timed GPU call: the forward, or the forward then the backward. */
typedef struct {
  fla_op *op;
  fla_arg *args, *grads;
  int nargs, ng;
  fla_tensor *o, *ht;
  int backward;
} gpu_call_;

static fla_status gpu_call_run_(const gpu_call_ *c) {
  fla_status s = fla_op_forward(c->op, c->args, c->nargs, c->o, c->ht);
  if (s == FLA_OK && c->backward) s = fla_op_backward(c->op, c->args, c->nargs, c->o, NULL, c->grads, c->ng);
  return s;
}

/* Median ms of `runs` synchronous calls by wall clock (launch and sync included). */
static fla_status gpu_wall_ms_(const gpu_call_ *c, int runs, double *med) {
  double t[64];
  fla_status s = FLA_OK;
  for (int i = 0; s == FLA_OK && i < runs; i++) {
    double t0 = now_();
    s = gpu_call_run_(c);
    t[i] = 1e3 * (now_() - t0);
  }
  if (s != FLA_OK) return s;
  qsort(t, (size_t)runs, sizeof t[0], cmp_double_);
  *med = t[runs / 2];
  return FLA_OK;
}

/* Median ms of the GPU time of `runs` calls queued back to back (the
** library's end-of-call sync deferred, fla_cuda_set_defer_sync): a CUDA
** event before and after each call, and before each the L2 flushed by a
** memset of `flush` (outside the events), as triton.testing.do_bench times
** fla. A call that waits on the host inside (uploads of varlen tables)
** counts that wait. */
static fla_status gpu_event_ms_(fla_ctx *g, const gpu_call_ *c, const fla_tensor *flush, int runs,
                                double *med) {
  const fla_cuda_driver *d = fla_cuda_driver_api();
  CUstream st = fla_cuda_ctx_stream(g);
  CUevent ev[128];
  double t[64];
  int nev = 0;
  fla_status s = fla_cuda_sync(g, "fla-bench: before timing"); /* makes the context current */
  for (; s == FLA_OK && nev < 2 * runs; nev++)
    if (d->cuEventCreate(&ev[nev], CU_EVENT_DEFAULT) != CUDA_SUCCESS)
      s = fla_set_error(g, FLA_ERROR, "fla-bench: cuEventCreate failed");
  if (!d->cuMemsetD32Async) flush = NULL; /* an old driver: no flush (optional entry point) */
  fla_cuda_set_defer_sync(g, 1);
  for (int i = 0; s == FLA_OK && i < runs; i++) {
    if (flush && d->cuMemsetD32Async(flush->dptr, 0, (size_t)flush->numel, st) != CUDA_SUCCESS)
      s = fla_set_error(g, FLA_ERROR, "fla-bench: the L2 flush (cuMemsetD32Async) failed");
    if (s == FLA_OK) d->cuEventRecord(ev[2 * i], st);
    if (s == FLA_OK) s = gpu_call_run_(c);
    if (s == FLA_OK) d->cuEventRecord(ev[2 * i + 1], st);
  }
  fla_cuda_set_defer_sync(g, 0);
  fla_status s2 = fla_cuda_sync(g, "fla-bench: the timed calls failed on the device");
  if (s == FLA_OK) s = s2;
  for (int i = 0; s == FLA_OK && i < runs; i++) {
    float ms = 0.0f;
    if (d->cuEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]) != CUDA_SUCCESS)
      s = fla_set_error(g, FLA_ERROR, "fla-bench: cuEventElapsedTime failed");
    t[i] = ms;
  }
  for (int i = 0; i < nev; i++) d->cuEventDestroy(ev[i]);
  if (s != FLA_OK) return s;
  qsort(t, (size_t)runs, sizeof t[0], cmp_double_);
  *med = t[runs / 2];
  return FLA_OK;
}

static int bench_gpu_one_(fla_ctx *g, const char *name, shape_ sh, int runs,
                          const fla_tensor *flush) {
  fla_recipe *r = tool_load_recipe(g, "fla-bench", name);
  if (!r) return 1;
  const fla_ir *ir = fla_recipe_ir(r);
  fla_op_config cfg = {.B = sh.B, .T = sh.T, .H = sh.H, .K = sh.K, .V = sh.V};
  /* FLA_BENCH_ALGO=recurrent times the token-by-token stage (a baseline) */
  const char *algo = getenv("FLA_BENCH_ALGO");
  if (algo && !strcmp(algo, "recurrent")) cfg.algo = FLA_ALGO_RECURRENT;
  fla_op *op = NULL;
  fla_arg args[FLA_IR_MAX_INPUTS];
  memset(args, 0, sizeof args);
  fla_tensor *o = NULL, *ht = NULL;
  int64_t bytes = 0;
  double med = NAN, wall = NAN;
  fla_status s = fla_op_bind(g, r, &cfg, &op);
  if (s == FLA_OK) s = device_inputs_(g, ir, &cfg, args, &bytes);
  int64_t os[4] = {sh.B, sh.T, sh.H, sh.V}, ss[4] = {sh.B, sh.H, op ? fla_op_state_k(op) : 0, sh.V};
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_BF16, 4, os, &o);
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_F32, 4, ss, &ht);
  if (s == FLA_OK) s = fla_op_forward(op, args, ir->num_inputs, o, ht); /* compiles, warms up */
  gpu_call_ call = {op, args, NULL, ir->num_inputs, 0, o, ht, 0};
  if (s == FLA_OK) s = gpu_event_ms_(g, &call, flush, runs, &med);
  if (s == FLA_OK) s = gpu_wall_ms_(&call, runs, &wall);
  /* forward + backward (T > 1): every input's gradient in bf16, d_o = o */
  double fb = NAN, fbwall = NAN;
  fla_arg grads[FLA_IR_MAX_INPUTS];
  char gnames[FLA_IR_MAX_INPUTS][80];
  int ng = 0;
  memset(grads, 0, sizeof grads);
  if (s == FLA_OK && sh.T > 1 && !getenv("FLA_BENCH_NO_BWD")) {
    for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) {
      const fla_tensor *x = args[i].tensor;
      snprintf(gnames[ng], sizeof gnames[ng], "d%s", ir->inputs[i].name);
      grads[ng].name = gnames[ng];
      s = fla_tensor_new(g, FLA_BF16, fla_tensor_ndim(x), fla_tensor_shape(x), &grads[ng].tensor);
      ng++;
    }
    int fbruns = runs < 5 ? runs : 5; /* the recurrent backward is slow at long T */
    if (s == FLA_OK) s = fla_op_backward(op, args, ir->num_inputs, o, NULL, grads, ng); /* warm-up */
    gpu_call_ fbcall = {op, args, grads, ir->num_inputs, ng, o, ht, 1};
    if (s == FLA_OK) s = gpu_event_ms_(g, &fbcall, flush, fbruns, &fb);
    if (s == FLA_OK) s = gpu_wall_ms_(&fbcall, fbruns, &fbwall);
  }
  if (s == FLA_OK) {
    bytes += 2 * fla_tensor_numel(o);
    int stage = fla_cuda_op_core_stage(op, FLA_BF16, 0, 1);
    int a = anchor_(name, sh);
    char shape[96], fla[32] = "-", ratio[32] = "-", floor[32] = "-", fbs[32] = "-", flafb[32] = "-";
    char fbw[32] = "-";
    int bstage = sh.T > 1 ? fla_cuda_op_backward_core_stage(op, FLA_BF16, 0, 0) : -1;
    if (!isnan(fb)) snprintf(fbs, sizeof fbs, "%.3f", fb);
    if (!isnan(fbwall)) snprintf(fbw, sizeof fbw, "%.3f", fbwall);
    snprintf(shape, sizeof shape, "%lld,%lld,%lld,%lld,%lld", (long long)sh.B, (long long)sh.T,
             (long long)sh.H, (long long)sh.K, (long long)sh.V);
    if (a >= 0) {
      snprintf(fla, sizeof fla, "%.3f", anchors_[a].fla_ms);
      snprintf(ratio, sizeof ratio, "%.2fx", anchors_[a].fla_ms / med);
      if (anchors_[a].floor_ms > 0) snprintf(floor, sizeof floor, "%.3f", anchors_[a].floor_ms);
      if (anchors_[a].fla_fb_ms > 0) snprintf(flafb, sizeof flafb, "%.3f", anchors_[a].fla_fb_ms);
    }
    printf("| %-16s | %-20s | %-13s | %9.3f | %9.3f | %6.2f | %8s | %8s | %7s | %-13s | %10s | %10s | "
           "%10s |\n",
           name, shape, stage >= 0 ? fla_stage_name((fla_stage)stage) : "?", med, wall,
           (double)bytes / (med * 1e9), floor, fla, ratio,
           bstage >= 0 ? fla_stage_name((fla_stage)bstage) : "-", fbs, fbw, flafb);
    fflush(stdout);
  } else {
    fprintf(stderr, "fla-bench: %s: %s: %s\n", name, fla_errstr(s), fla_errmsg(g));
  }
  for (int i = 0; i < ir->num_inputs; i++) fla_tensor_free(args[i].tensor);
  for (int i = 0; i < ng; i++) fla_tensor_free(grads[i].tensor);
  fla_tensor_free(o);
  fla_tensor_free(ht);
  fla_op_free(op);
  fla_recipe_free(r);
  return s != FLA_OK;
}

static int bench_gpu_(fla_ctx *g, const char **recipes, int nr, const shape_ *shapes, int ns, int runs) {
  printf("fla-bench on %s: bf16 forward, median of %d calls. GPU ms (compared with fla): CUDA\n"
         "events around each call, calls queued back to back, L2 flushed before each (a 256 MB memset\n"
         "outside the events) -- triton.testing.do_bench's method, which fla's ANCHORS.md figures use.\n"
         "wall ms: one synchronous call by wall clock (launch and sync latency included). TB/s = bytes\n"
         "of inputs and o over the GPU time; floor and fla from shared/ANCHORS.md; ratio = fla's time /\n"
         "our GPU time (above 1: faster than fla). fwd+bwd: forward then backward of every input's\n"
         "gradient (T > 1; median of up to 5; FLA_BENCH_NO_BWD=1 skips it), GPU and wall, against\n"
         "fla's fwd+bwd where ANCHORS.md has one.\n\n",
         fla_ctx_device_name(g), runs);
  printf("| %-16s | %-20s | %-13s | %9s | %9s | %6s | %8s | %8s | %7s | %-13s | %10s | %10s | %10s |\n",
         "recipe", "B,T,H,K,V", "stage", "fwd GPU ms", "fwd wall", "TB/s", "floor ms", "fla ms", "ratio",
         "bwd stage", "f+b GPU ms", "f+b wall", "fla f+b ms");
  printf("|------------------|----------------------|---------------|-----------|-----------|--------|----------|"
         "----------|---------|---------------|------------|------------|------------|\n");
  /* the L2 flush buffer of the GPU timing (256 MB, more than any GPU's L2) */
  fla_tensor *flush = NULL;
  int64_t fshape[1] = {64ll << 20};
  if (fla_tensor_new(g, FLA_F32, 1, fshape, &flush) != FLA_OK) {
    fprintf(stderr, "fla-bench: the 256 MB L2 flush buffer: %s\n", fla_errmsg(g));
    return 1;
  }
  int failed = 0;
  if (ns == 0) { /* the anchors (of the recipes asked for, when any) */
    for (int i = 0; i < NANCHORS; i++) {
      int wanted = nr == 0;
      for (int j = 0; j < nr; j++) wanted |= !strcmp(recipes[j], anchors_[i].recipe);
      if (!wanted) continue;
      shape_ sh = {anchors_[i].B, anchors_[i].T, anchors_[i].H, anchors_[i].D, anchors_[i].D};
      failed |= bench_gpu_one_(g, anchors_[i].recipe, sh, runs, flush);
    }
    fla_tensor_free(flush);
    return failed;
  }
  static const char *defaults[] = {"retention", "simple_gla", "gla", "gated_delta_rule"};
  if (nr == 0) recipes = defaults, nr = 4;
  for (int i = 0; i < nr; i++)
    for (int j = 0; j < ns; j++) failed |= bench_gpu_one_(g, recipes[i], shapes[j], runs, flush);
  fla_tensor_free(flush);
  return failed;
}

static int parse_shape_(const char *s, shape_ *sh) {
  long long v[5];
  char tail;
  if (sscanf(s, "%lld,%lld,%lld,%lld,%lld%c", &v[0], &v[1], &v[2], &v[3], &v[4], &tail) != 5) return -1;
  for (int i = 0; i < 5; i++)
    if (v[i] < 1) return -1;
  *sh = (shape_){v[0], v[1], v[2], v[3], v[4]};
  return 0;
}

static void usage_(void) {
  fprintf(stderr, "usage: fla-bench --demo\n"
                  "       fla-bench [--recipe R ...] [--shape B,T,H,K,V ...] [--device cpu] [--runs N]\n"
                  "                 [--no-recurrent] [--threads N]\n"
                  "       fla-bench --device cuda [--recipe R ...] [--shape B,T,H,K,V ...] [--runs N]\n"
                  "GPU rows: 'GPU ms' (compared with fla's ANCHORS.md times) is the median CUDA-event\n"
                  "time of calls queued back to back with L2 flushed before each, as\n"
                  "triton.testing.do_bench measures; 'wall' is one synchronous call by wall clock.\n"
                  "FLA_BENCH_NO_BWD=1 skips the forward+backward columns.\n");
}

int main(int argc, char **argv) {
  const char *recipes[MAX_ITEMS];
  shape_ shapes[MAX_ITEMS];
  int nr = 0, ns = 0, device = FLA_BACKEND_CPU, threads = 0;
  options_ opt = {.runs = 0, .recurrent = 1}; /* runs 0: 3 on the CPU, 20 on a GPU */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage_();
      return 0;
    } else if (!strcmp(a, "--demo")) {
      continue; /* the defaults below are the demo */
    } else if (!strcmp(a, "--recipe") && more && nr < MAX_ITEMS) {
      recipes[nr++] = argv[++i];
    } else if (!strcmp(a, "--shape") && more && ns < MAX_ITEMS) {
      if (parse_shape_(argv[++i], &shapes[ns++])) {
        fprintf(stderr, "fla-bench: --shape '%s' is not B,T,H,K,V of positive integers\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(a, "--device") && more) {
      if ((device = tool_parse_device(argv[++i])) < 0) {
        fprintf(stderr, "fla-bench: unknown device '%s' (cpu, cuda, hip, auto)\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(a, "--runs") && more) {
      opt.runs = atoi(argv[++i]);
      if (opt.runs < 1 || opt.runs > 64) {
        fprintf(stderr, "fla-bench: --runs must be 1..64\n");
        return 2;
      }
    } else if (!strcmp(a, "--threads") && more) {
      threads = atoi(argv[++i]);
    } else if (!strcmp(a, "--no-recurrent")) {
      opt.recurrent = 0;
    } else {
      usage_();
      return 2;
    }
  }
  fla_ctx *ctx;
  char why[512] = "";
  fla_status s = fla_ctx_create_ex((fla_backend)device, &ctx, why, sizeof why);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-bench: cannot use that device: %s: %s\n", fla_errstr(s), why);
    return 2;
  }
  if (fla_ctx_backend(ctx) == FLA_BACKEND_CUDA) {
    int rc = bench_gpu_(ctx, recipes, nr, shapes, ns, opt.runs ? opt.runs : 20);
    fla_ctx_free(ctx);
    return rc;
  }
  if (threads > 0 && fla_ctx_set_threads(ctx, threads) != FLA_OK) {
    fprintf(stderr, "fla-bench: %s\n", fla_errmsg(ctx));
    return 2;
  }
  if (opt.runs == 0) opt.runs = 3;
  if (nr == 0) nr = fla_recipe_list_builtin(recipes, MAX_ITEMS);
  if (nr > MAX_ITEMS) nr = MAX_ITEMS;
  if (ns == 0) shapes[ns++] = (shape_){1, 4096, 4, 128, 128};
  printf("fla-bench on the CPU (%d threads), float32 chunked vs float64 recurrent; times in ms\n\n",
         threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
  printf("| %-16s | %-18s | %9s | %9s | %10s | %7s | %s |\n", "recipe", "B,T,H,K,V", "chunk fwd",
         "chunk f+b", "recur. f+b", "speedup", "max rel err vs recurrent");
  printf("|------------------|--------------------|-----------|-----------|------------|---------|---------------------------|\n");
  int failed = 0;
  for (int i = 0; i < nr; i++)
    for (int j = 0; j < ns; j++) failed |= bench_one_(ctx, recipes[i], shapes[j], &opt);
  fla_ctx_free(ctx);
  return failed ? 1 : 0;
}
