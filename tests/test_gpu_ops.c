/*
** test_gpu_ops.c -- the CUDA backend: contexts, device tensors, and the
** forward and backward of every shipped recipe on the GPU against the CPU's
** float64 recurrence on the same (bf16-rounded) inputs.
**
** How absence is reported, honestly: the GPU is probed in a child process
** (CUDA does not survive fork(), and Check forks for every test). Without a
** usable device the suite holds `test_skip_no_gpu`, which asserts nothing and
** prints "skipped: ..." with the reason, plus `test_cuda_ctx_nodevice`, a
** real check that asking for CUDA then fails cleanly with that reason and
** that FLA_BACKEND_AUTO falls back to the CPU.
**
** With a device:
**   - "device": contexts, device memory, copies, fills, wraps, safetensors
**     loads, and the errors of the GPU op (dtypes, host tensors), forward
**     and backward.
**   - "warmup": every module the forward tests use is compiled into the
**     module cache by parallel threads (NVRTC only), so the tests that follow
**     load them from disk.
**   - "forward": one test per shipped recipe (a loop test): T in {1, 63, 100,
**     500, 4096}, (K, V) in {(64,64), (100,100), (128,128)} (based: K 16 or 8:
**     its taylor2 state is 1 + K + K^2 wide), with and without h0, bf16 and
**     f32, the recurrent algorithm forced, variable-length batches with a
**     length-1 sequence. Outputs are poisoned with NaN before each run.
**     Tolerance: relative RMS < 5e-3 (bf16 inputs) or 1e-4 (f32) for o and ht.
**     Each recipe prints one summary line starting "gpu_ops:".
**   - "backward": one test per shipped recipe: every gradient (each input's
**     and dh0) of the GPU backward against the CPU's float64 recurrence on
**     the same inputs, T in {1, 63, 100, 500, 4096}, K and V in {64, 100, 128}
**     (V 256 too)
**     (based: K 16 or 8), h0 and dht given or not, bf16 and f32, a
**     variable-length batch with a length-1 sequence. Gradients are poisoned
**     with NaN first; one call asks for dv alone (the rest stays untouched).
**     Tolerance: rel RMS < 5e-3 (bf16; 2e-2 for gates and beta) or 1e-4
**     (f32). Per-key gates in bf16 (gla, hgrn2, rwkv6 up to K 128) must
**     take chunk_gk_bwd (asserted). Each recipe prints one summary line
**     starting "gpu_ops_bwd:".
**   - "wide keys": gla and hgrn2 forward at K 192..256 and V up to 512 (GLA
**     1.3B's heads: K 256, V 512) and backward at K 192..256, V up to 512, on
**     chunk_gk_fwd / chunk_gk_bwd (asserted; other recipes skip them).
**     Summary lines "gpu_ops_wide:" and "gpu_ops_bwd_wide:".
**   - "segments": the delta-rule recipes forward over long sequences with few
**     programs (T 6000..12000, H 2, dense and varlen, h0), where chunk_wy_fwd
**     cuts sequences into segments (asserted from its launches). Summary line
**     "gpu_ops_wy_segments:".
**   - "state regimes": the same recipes at H 6, 12 and 48, where the state
**     kernel runs unsegmented with the output kernel launched early beside
**     it: alone on its SMs, sharing them, and the wide kernel (asserted from
**     the launches). Summary line "gpu_ops_wy_regimes:".
**
** Forward times: tools/fla_bench.c (fla-bench --device cuda).
**
** FLA_GPU_OPS_RECIPES=a,b,...: the per-recipe tests (and the precompile) of
** these recipes only; a name that is not shipped is an error.
** FLA_GPU_OPS_PRECOMPILE=<arch> (e.g. sm_90a): no tests; compiles every
** module of the forward tests for <arch> into the module cache
** ($FLA_CACHE_DIR), so a GPU run can start from a warm cache. Needs NVRTC only.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "recipe.h"
#include "testdata.h"
#include "generate.h"
#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"

static char gpu_why[1024];
static char gpu_name[300];
static char gpu_arch[32];

#define MAX_RECIPES 64
static const char *recipes[MAX_RECIPES];
static int nrecipes;

/* ------------------------------------------------------------- the cases */

typedef struct {
  int64_t T, K, V;
  int h0;
  fla_dtype dtype;
  fla_algo algo;
  int64_t nseqs;   /* > 0: a variable-length batch of this many sequences */
} gcase;

static const gcase cases_[] = {
    /* T == 1: the recurrent stage (decoding). */
    {1, 64, 64, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {1, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {1, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    /* Awkward lengths and dims. */
    {63, 100, 100, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {63, 100, 100, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {100, 128, 128, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {100, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {100, 64, 64, 1, FLA_BF16, FLA_ALGO_RECURRENT, 0},
    {500, 64, 64, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {500, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {500, 100, 100, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {4096, 128, 128, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {4096, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {4096, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    /* f32 inputs. */
    {100, 64, 64, 1, FLA_F32, FLA_ALGO_AUTO, 0},
    {63, 128, 128, 0, FLA_F32, FLA_ALGO_RECURRENT, 0},
    {1, 100, 100, 1, FLA_F32, FLA_ALGO_AUTO, 0},
    /* Variable-length batches (sequence 0 has length 1). */
    {500, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 4},
    {300, 128, 128, 0, FLA_BF16, FLA_ALGO_AUTO, 5},
    {100, 100, 100, 1, FLA_BF16, FLA_ALGO_RECURRENT, 3},
    {257, 64, 64, 1, FLA_F32, FLA_ALGO_AUTO, 3},
};
#define NCASES ((int)(sizeof cases_ / sizeof cases_[0]))

/* Backward cases (h0 and dht given unless noted): awkward T, K, V; f32; a
** varlen batch with a length-1 sequence. */
typedef struct {
  gcase c;
  int dht;
} bcase;

static const bcase bcases_[] = {
    {{1, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{63, 100, 100, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{100, 128, 128, 0, FLA_BF16, FLA_ALGO_AUTO, 0}, 0},
    {{500, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{100, 64, 100, 1, FLA_F32, FLA_ALGO_AUTO, 0}, 1},
    {{63, 128, 128, 1, FLA_F32, FLA_ALGO_RECURRENT, 0}, 1},
    {{300, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 4}, 1},
    {{100, 100, 100, 1, FLA_F32, FLA_ALGO_AUTO, 3}, 1},
    {{4096, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    /* V = 256 (GLA 340M's head_v_dim): value tiles over 128; varlen too */
    {{200, 128, 256, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{300, 64, 256, 1, FLA_BF16, FLA_ALGO_AUTO, 3}, 1},
};
#define NBCASES ((int)(sizeof bcases_ / sizeof bcases_[0]))

/* Wide heads: K in (128, 256] and V up to 512 (GLA 1.3B: K 256, V 512) on
** chunk_gk_fwd. Recipes whose core at these keys is another stage are
** skipped; gla and hgrn2 must take chunk_gk_fwd. */
static const gcase wide_cases_[] = {
    {300, 256, 512, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {2048, 256, 512, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {130, 256, 256, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {200, 192, 100, 1, FLA_BF16, FLA_ALGO_AUTO, 3},
};
#define NWIDE ((int)(sizeof wide_cases_ / sizeof wide_cases_[0]))

/* Wide heads on chunk_gk_bwd (its dq/dk kernel in two key slices): K in
** (128, 256], V up to 512; gla and hgrn2 must take it. */
static const bcase wide_bcases_[] = {
    {{300, 256, 256, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{200, 256, 512, 0, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{260, 192, 100, 1, FLA_BF16, FLA_ALGO_AUTO, 3}, 1},
    {{150, 200, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 0},
};
#define NWIDEB ((int)(sizeof wide_bcases_ / sizeof wide_bcases_[0]))

static int is_taylor2_(const fla_recipe *r) { return fla_recipe_ir(r)->feature_k == FLA_FEATURE_TAYLOR2; }

/* Heads of every binding (0: 2); test_gk_many_heads raises it. */
static int64_t heads_;

/* The binding of case c for recipe r. */
static fla_op_config config_(const fla_recipe *r, const gcase *c) {
  fla_op_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.B = c->nseqs ? 1 : 2;
  cfg.T = c->T;
  cfg.H = heads_ > 0 ? heads_ : 2;
  cfg.K = c->K;
  cfg.V = c->V;
  cfg.num_seqs = c->nseqs;
  cfg.algo = c->algo;
  if (is_taylor2_(r)) cfg.K = c->K == 100 ? 8 : 16;
  return cfg;
}

static int skip_case_(int i) {
  /* FLA_TEST_QUICK: the first case of each kind only. */
  return th_quick() && cases_[i].T == 4096;
}

/* ------------------------------------------------------------ helpers */

static fla_ctx *cpu_ctx(void) {
  fla_ctx *ctx = NULL;
  ck_assert_int_eq(fla_ctx_create(FLA_BACKEND_CPU, &ctx), FLA_OK);
  return ctx;
}

static fla_ctx *gpu_ctx(void) {
  fla_ctx *ctx = NULL;
  char why[1024] = "";
  fla_status st = fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, why, sizeof why);
  ck_assert_msg(st == FLA_OK, "CUDA context: %s: %s", fla_errstr(st), why);
  return ctx;
}

/* A device copy of host tensor h as dtype (its own dtype when dtype < 0). */
static fla_tensor *upload_(fla_ctx *g, fla_tensor *h, int dtype) {
  fla_dtype d = dtype < 0 ? fla_tensor_dtype(h) : (fla_dtype)dtype;
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_new(g, d, fla_tensor_ndim(h), fla_tensor_shape(h), &t), FLA_OK);
  ck_assert_msg(fla_tensor_copy_from(g, t, fla_tensor_data(h), fla_tensor_dtype(h),
                                     fla_tensor_numel(h)) == FLA_OK, "%s", fla_errmsg(g));
  return t;
}

/* The device tensor's elements as host float32 (malloc'd). */
static float *download_f32_(fla_ctx *g, const fla_tensor *t) {
  float *x = malloc(sizeof(float) * (size_t)(fla_tensor_numel(t) + 1));
  ck_assert_ptr_nonnull(x);
  ck_assert_msg(fla_tensor_copy_to(g, t, x, FLA_F32, fla_tensor_numel(t)) == FLA_OK, "%s",
                fla_errmsg(g));
  return x;
}

static fla_recipe *find_(fla_ctx *ctx, const char *name) {
  fla_recipe *r = NULL;
  ck_assert_msg(fla_recipe_find(ctx, name, &r) == FLA_OK, "%s", fla_errmsg(ctx));
  return r;
}

/* ====================================================== without a device */

START_TEST(test_skip_no_gpu) {
  printf("test_gpu_ops: SKIP: no usable CUDA device (%s)\n", gpu_why);
}
END_TEST

START_TEST(test_cuda_ctx_nodevice) {
  fla_ctx *ctx = (fla_ctx *)0x1;
  char why[1024] = "x";
  ck_assert_int_eq(fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, why, sizeof why), FLA_NODEVICE);
  ck_assert_ptr_null(ctx);
  ck_assert_msg(strlen(why) > 5, "no reason given: '%s'", why);
  ck_assert_int_eq(fla_ctx_create(FLA_BACKEND_CUDA, &ctx), FLA_NODEVICE);
  char why2[256];
  ck_assert_int_eq(fla_ctx_create_ex(FLA_BACKEND_HIP, &ctx, why2, sizeof why2), FLA_NODEVICE);
  ck_assert_int_eq(fla_ctx_create_ex((fla_backend)42, &ctx, why2, sizeof why2), FLA_INVALID);
  ck_assert_int_eq(fla_ctx_create_ex(FLA_BACKEND_AUTO, &ctx, NULL, 0), FLA_OK);
  ck_assert_int_eq(fla_ctx_backend(ctx), FLA_BACKEND_CPU);
  ck_assert_str_eq(fla_ctx_device_name(ctx), "cpu");
  /* Host-only API on the CPU. */
  fla_tensor *t = NULL;
  int64_t shape[1] = {4};
  ck_assert_int_eq(fla_tensor_wrap_device(ctx, FLA_F32, 1, shape, 256, &t), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 1, shape, &t), FLA_OK);
  ck_assert_int_eq(fla_tensor_is_device(t), 0);
  ck_assert_uint_eq(fla_tensor_device_ptr(t), 0);
  fla_tensor_free(t);
  fla_ctx_free(ctx);
  printf("CUDA context refused as expected: %s\n", why);
}
END_TEST

/* ============================================================ the device */

START_TEST(test_ctx_and_tensors) {
  fla_ctx *g = gpu_ctx();
  ck_assert_int_eq(fla_ctx_backend(g), FLA_BACKEND_CUDA);
  ck_assert_ptr_nonnull(strstr(fla_ctx_device_name(g), "["));
  printf("device: %s\n", fla_ctx_device_name(g));

  int64_t shape[2] = {3, 333};
  int64_t n = 999;
  float x[999], y[999];
  for (int i = 0; i < n; i++) x[i] = (float)(i % 64) * 0.25f - 8.0f; /* exact in bf16 */

  /* New tensors are zero, and device-only. */
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 2, shape, &t), FLA_OK);
  ck_assert_int_eq(fla_tensor_is_device(t), 1);
  ck_assert_ptr_null(fla_tensor_data(t));
  ck_assert_uint_ne(fla_tensor_device_ptr(t), 0);
  ck_assert_int_eq(fla_tensor_copy_to(g, t, y, FLA_F32, n), FLA_OK);
  for (int i = 0; i < n; i++) ck_assert(y[i] == 0.0f);
  /* Round trips, converting on the way. */
  ck_assert_int_eq(fla_tensor_copy_from(g, t, x, FLA_F32, n), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_to(g, t, y, FLA_F32, n), FLA_OK);
  ck_assert_int_eq(memcmp(x, y, sizeof x), 0);
  double yd[999];
  ck_assert_int_eq(fla_tensor_copy_to(g, t, yd, FLA_F64, n), FLA_OK);
  for (int i = 0; i < n; i++) ck_assert(yd[i] == (double)x[i]);
  ck_assert_int_eq(fla_tensor_copy_to(g, t, y, FLA_F32, n - 1), FLA_SHAPE);
  ck_assert_int_eq(fla_tensor_copy_to(g, t, y, FLA_I32, n), FLA_INVALID);

  fla_tensor *b = NULL;
  ck_assert_int_eq(fla_tensor_new(g, FLA_BF16, 2, shape, &b), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_from(g, b, x, FLA_F32, n), FLA_OK); /* exact in bf16 */
  ck_assert_int_eq(fla_tensor_copy_to(g, b, y, FLA_F32, n), FLA_OK);
  ck_assert_int_eq(memcmp(x, y, sizeof x), 0);

  /* Fills: 4-byte dtypes on the device, others through staging. */
  ck_assert_int_eq(fla_tensor_fill(g, t, NAN), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_to(g, t, y, FLA_F32, n), FLA_OK);
  for (int i = 0; i < n; i++) ck_assert(isnan(y[i]));
  ck_assert_int_eq(fla_tensor_fill(g, b, -1.5), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_to(g, b, y, FLA_F32, n), FLA_OK);
  for (int i = 0; i < n; i++) ck_assert(y[i] == -1.5f);
  fla_tensor *c = NULL;
  int64_t cs[1] = {5};
  int64_t cv[5];
  ck_assert_int_eq(fla_tensor_new(g, FLA_I64, 1, cs, &c), FLA_OK);
  ck_assert_int_eq(fla_tensor_fill(g, c, 7), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_to(g, c, cv, FLA_I64, 5), FLA_OK);
  for (int i = 0; i < 5; i++) ck_assert_int_eq(cv[i], 7);
  ck_assert_int_eq(fla_tensor_fill(g, c, 0.5), FLA_INVALID);

  /* Wraps: host memory is refused, device memory is borrowed. */
  fla_tensor *w = NULL;
  ck_assert_int_eq(fla_tensor_wrap(g, FLA_F32, 2, shape, x, &w), FLA_INVALID);
  ck_assert_ptr_null(w);
  ck_assert_int_eq(fla_tensor_wrap_device(g, FLA_F32, 2, shape, 0, &w), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_wrap_device(g, FLA_BF16, 2, shape, fla_tensor_device_ptr(b), &w), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_to(g, w, y, FLA_F32, n), FLA_OK);
  ck_assert(y[5] == -1.5f);
  fla_tensor_free(w); /* borrows: b stays valid */
  ck_assert_int_eq(fla_tensor_copy_to(g, b, y, FLA_F32, n), FLA_OK);
  ck_assert(y[998] == -1.5f);

  /* safetensors: loaded on the host, uploaded; saving a device tensor is refused. */
  fla_ctx *h = cpu_ctx();
  fla_tensor *ht = NULL;
  ck_assert_int_eq(fla_tensor_new(h, FLA_F32, 2, shape, &ht), FLA_OK);
  ck_assert_int_eq(fla_tensor_copy_from(h, ht, x, FLA_F32, n), FLA_OK);
  char path[] = "/tmp/fla_test_gpu_ops_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  const char *names[1] = {"x"};
  const fla_tensor *ts[1] = {ht};
  ck_assert_int_eq(fla_safetensors_save(h, path, 1, names, ts), FLA_OK);
  fla_safetensors *st = NULL;
  ck_assert_int_eq(fla_safetensors_open(g, path, &st), FLA_OK);
  fla_tensor *loaded = NULL;
  ck_assert_int_eq(fla_safetensors_load(g, st, "x", FLA_BF16, &loaded), FLA_OK);
  ck_assert_int_eq(fla_tensor_is_device(loaded), 1);
  ck_assert_int_eq(fla_tensor_dtype(loaded), FLA_BF16);
  ck_assert_int_eq(fla_tensor_copy_to(g, loaded, y, FLA_F32, n), FLA_OK);
  ck_assert_int_eq(memcmp(x, y, sizeof x), 0);
  const fla_tensor *dts[1] = {loaded};
  ck_assert_int_eq(fla_safetensors_save(g, path, 1, names, dts), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "device"));
  fla_tensor_free(loaded);
  fla_safetensors_free(st);
  unlink(path);

  /* Out of device memory is FLA_NOMEM with the driver's words. */
  int64_t huge[2] = {1 << 20, 1 << 20};
  fla_tensor *big = NULL;
  ck_assert_int_eq(fla_tensor_new(g, FLA_F64, 2, huge, &big), FLA_NOMEM);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "cuMemAlloc"));

  fla_tensor_free(ht);
  fla_ctx_free(h);
  fla_tensor_free(t);
  fla_tensor_free(b);
  fla_tensor_free(c);
  fla_ctx_free(g);
}
END_TEST

/* The GPU op's argument rules and the backward's refusal. */
START_TEST(test_op_errors) {
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, "gla");
  fla_op_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.B = 1, cfg.T = 20, cfg.H = 2, cfg.K = 32, cfg.V = 32;
  fla_testdata td;
  ck_assert_int_eq(fla_testdata_make(h, r, &cfg, 1, FLA_BF16, 3, &td), FLA_OK);
  fla_op *opg = NULL, *oph = NULL;
  ck_assert_int_eq(fla_op_bind(g, r, &cfg, &opg), FLA_OK);
  ck_assert_int_eq(fla_op_bind(h, r, &cfg, &oph), FLA_OK);
  fla_arg dargs[12];
  for (int i = 0; i < td.n; i++) {
    dargs[i].name = td.args[i].name;
    dargs[i].tensor = upload_(g, td.args[i].tensor, !strcmp(td.args[i].name, "h0") ? FLA_F32 : -1);
  }
  int64_t os[4] = {1, 20, 2, 32}, ss[4] = {1, 2, 32, 32};
  fla_tensor *o = NULL, *ht = NULL, *o32 = NULL, *hto = NULL;
  ck_assert_int_eq(fla_tensor_new(g, FLA_BF16, 4, os, &o), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 4, os, &o32), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 4, ss, &ht), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(h, FLA_F32, 4, os, &hto), FLA_OK);

  ck_assert_msg(fla_op_forward(opg, dargs, td.n, o, ht) == FLA_OK, "%s", fla_errmsg(g));
  /* o must have the inputs' dtype; ht must be f32. */
  ck_assert_int_eq(fla_op_forward(opg, dargs, td.n, o32, ht), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "'o'"));
  fla_tensor *ht16 = NULL;
  ck_assert_int_eq(fla_tensor_new(g, FLA_BF16, 4, ss, &ht16), FLA_OK);
  ck_assert_int_eq(fla_op_forward(opg, dargs, td.n, o, ht16), FLA_UNSUPPORTED);
  /* Mixed input dtypes. */
  fla_tensor *keep = dargs[0].tensor;
  dargs[0].tensor = upload_(g, td.args[0].tensor, FLA_F32);
  ck_assert_int_eq(fla_op_forward(opg, dargs, td.n, o, ht), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "one dtype"));
  fla_tensor_free(dargs[0].tensor);
  /* f16 is not a GPU dtype. */
  dargs[0].tensor = upload_(g, td.args[0].tensor, FLA_F16);
  ck_assert_int_eq(fla_op_forward(opg, dargs, td.n, o, ht), FLA_UNSUPPORTED);
  fla_tensor_free(dargs[0].tensor);
  /* A host tensor on the GPU op, a device tensor on the CPU op. */
  dargs[0].tensor = td.args[0].tensor;
  ck_assert_int_eq(fla_op_forward(opg, dargs, td.n, o, ht), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "host memory"));
  dargs[0].tensor = keep;
  ck_assert_int_eq(fla_op_forward(oph, dargs, td.n, hto, NULL), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(h), "device memory"));
  ck_assert_int_eq(fla_op_forward(oph, td.args, td.n, o, NULL), FLA_INVALID);
  /* The backward: d_o and input gradients in the inputs' dtype, dh0 f32. */
  fla_tensor *dq = NULL, *dqb = NULL;
  int64_t qs[4] = {1, 20, 2, 32};
  ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 4, qs, &dq), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(g, FLA_BF16, 4, qs, &dqb), FLA_OK);
  fla_arg grads[1] = {{"dq", dqb}};
  ck_assert_int_eq(fla_op_backward(opg, dargs, td.n, o32, NULL, grads, 1), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "'d_o'"));
  grads[0].tensor = dq;
  ck_assert_int_eq(fla_op_backward(opg, dargs, td.n, o, NULL, grads, 1), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "'dq'"));
  ck_assert_int_eq(fla_op_backward(opg, dargs, td.n, o, ht16, grads, 1), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "'dht'"));
  grads[0].tensor = dqb;
  ck_assert_msg(fla_op_backward(opg, dargs, td.n, o, ht, grads, 1) == FLA_OK, "%s", fla_errmsg(g));
  fla_tensor_free(dqb);

  fla_tensor_free(dq);
  fla_tensor_free(ht16);
  for (int i = 0; i < td.n; i++) fla_tensor_free(dargs[i].tensor);
  fla_tensor_free(o), fla_tensor_free(o32), fla_tensor_free(ht), fla_tensor_free(hto);
  fla_op_free(opg), fla_op_free(oph);
  fla_testdata_free(&td);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* Variable-length batches: cu_seqlens rules on the GPU. */
START_TEST(test_varlen_errors) {
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, "simple_gla");
  fla_op_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.B = 1, cfg.T = 30, cfg.H = 2, cfg.K = 32, cfg.V = 32, cfg.num_seqs = 3;
  fla_testdata td;
  ck_assert_int_eq(fla_testdata_make(h, r, &cfg, 0, FLA_F32, 5, &td), FLA_OK);
  fla_op *op = NULL;
  ck_assert_int_eq(fla_op_bind(g, r, &cfg, &op), FLA_OK);
  fla_arg dargs[12];
  int icu = -1;
  for (int i = 0; i < td.n; i++) {
    dargs[i].name = td.args[i].name;
    dargs[i].tensor = upload_(g, td.args[i].tensor, -1);
    if (!strcmp(td.args[i].name, "cu_seqlens")) icu = i;
  }
  ck_assert_int_ge(icu, 0);
  int64_t os[4] = {1, 30, 2, 32};
  fla_tensor *o = NULL;
  ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 4, os, &o), FLA_OK);
  ck_assert_msg(fla_op_forward(op, dargs, td.n, o, NULL) == FLA_OK, "%s", fla_errmsg(g));
  int64_t bad[4] = {0, 1, 10, 29};
  ck_assert_int_eq(fla_tensor_copy_from(g, dargs[icu].tensor, bad, FLA_I64, 4), FLA_OK);
  ck_assert_int_eq(fla_op_forward(op, dargs, td.n, o, NULL), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(g), "T = 30"));
  fla_tensor *host_cu = td.args[icu].tensor;
  fla_tensor *dev_cu = dargs[icu].tensor;
  dargs[icu].tensor = host_cu;
  ck_assert_int_eq(fla_op_forward(op, dargs, td.n, o, NULL), FLA_INVALID);
  dargs[icu].tensor = dev_cu;
  for (int i = 0; i < td.n; i++) fla_tensor_free(dargs[i].tensor);
  fla_tensor_free(o);
  fla_op_free(op);
  fla_testdata_free(&td);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* ================================================================ warm-up */

typedef struct {
  int next, total, failed, compiled;
  pthread_mutex_t mu;
  char first_error[2048];
} warm_state;

static warm_state warm;

/* Work item i: recipe i / NCASES, case i % NCASES. */
static void *warm_worker_(void *arg) {
  (void)arg;
  fla_ctx *ctx = NULL;
  if (fla_ctx_create(FLA_BACKEND_CPU, &ctx) != FLA_OK) return NULL;
  for (;;) {
    pthread_mutex_lock(&warm.mu);
    int i = warm.next++;
    pthread_mutex_unlock(&warm.mu);
    if (i >= warm.total) break;
    const gcase *c = &cases_[i % NCASES];
    if (skip_case_(i % NCASES)) continue;
    fla_recipe *r = NULL;
    fla_op *op = NULL;
    int compiled = 0;
    fla_status st = fla_recipe_find(ctx, recipes[i / NCASES], &r);
    fla_op_config cfg;
    if (st == FLA_OK) {
      cfg = config_(r, c);
      st = fla_op_bind(ctx, r, &cfg, &op);
    }
    if (st == FLA_OK) st = fla_cuda_op_precompile(op, c->dtype, c->h0, 1, gpu_arch, &compiled);
    /* The backward's modules: for the cases of bcases_ (same recipe). */
    for (int b = 0; st == FLA_OK && b < NBCASES && i % NCASES == 0; b++) {
      const gcase *bc = &bcases_[b].c;
      fla_op *bop = NULL;
      int more = 0;
      fla_op_config bcfg = config_(r, bc);
      st = fla_op_bind(ctx, r, &bcfg, &bop);
      if (st == FLA_OK)
        st = fla_cuda_op_precompile_backward(bop, bc->dtype, bc->h0, bcases_[b].dht, gpu_arch, &more);
      compiled += more;
      fla_op_free(bop);
    }
    /* The wide-key tests' modules (test_gk_wide_keys, test_gk_bwd_wide_keys). */
    int gk_family = st == FLA_OK && fla_recipe_ir(r)->family == FLA_FAMILY_DECAY &&
                    fla_recipe_ir(r)->decay == FLA_DECAY_KEY;
    for (int b = 0; st == FLA_OK && gk_family && b < NWIDE + NWIDEB && i % NCASES == 1; b++) {
      const gcase *wc = b < NWIDE ? &wide_cases_[b] : &wide_bcases_[b - NWIDE].c;
      fla_op *wop = NULL;
      int more = 0;
      fla_op_config wcfg = config_(r, wc);
      st = fla_op_bind(ctx, r, &wcfg, &wop);
      if (st == FLA_OK && b < NWIDE)
        st = fla_cuda_op_precompile(wop, wc->dtype, wc->h0, 1, gpu_arch, &more);
      else if (st == FLA_OK)
        st = fla_cuda_op_precompile_backward(wop, wc->dtype, wc->h0, wide_bcases_[b - NWIDE].dht, gpu_arch, &more);
      compiled += more;
      fla_op_free(wop);
    }
    pthread_mutex_lock(&warm.mu);
    warm.compiled += compiled;
    if (st != FLA_OK && !warm.failed++)
      snprintf(warm.first_error, sizeof warm.first_error, "%s (T=%lld K=%lld V=%lld): %s: %s",
               recipes[i / NCASES], (long long)c->T, (long long)c->K, (long long)c->V,
               fla_errstr(st), fla_errmsg(ctx));
    pthread_mutex_unlock(&warm.mu);
    fla_op_free(op);
    fla_recipe_free(r);
  }
  fla_ctx_free(ctx);
  return NULL;
}

/* Compiles every module of the forward tests; returns the number of failures. */
static int warm_all_(int nthreads, double *seconds) {
  memset(&warm, 0, sizeof warm);
  pthread_mutex_init(&warm.mu, NULL);
  warm.total = nrecipes * NCASES;
  double t0 = th_now_s();
  pthread_t th[64];
  if (nthreads > 64) nthreads = 64;
  if (nthreads < 1) nthreads = 1;
  for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, warm_worker_, NULL);
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  *seconds = th_now_s() - t0;
  pthread_mutex_destroy(&warm.mu);
  return warm.failed;
}

START_TEST(test_warm_module_cache) {
  double s = 0;
  int nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  int failed = warm_all_(nthreads, &s);
  printf("warm-up: %d modules compiled for %s in %.1f s on %d threads (the rest were cached)\n",
         warm.compiled, gpu_arch, s, nthreads);
  ck_assert_msg(failed == 0, "%d work items failed; first: %s", failed, warm.first_error);
}
END_TEST

/* ================================================================ forward */

typedef struct {
  int runs;
  double max_o, max_ht;
  char worst[160];
  int stages[FLA_STAGE_COUNT];
  double fwd_ms_4096;    /* the second forward at the first T=4096 case */
} recipe_summary;

/* Case c of recipe r: the GPU forward against the CPU recurrence. */
static void run_case_(fla_ctx *h, fla_ctx *g, const char *name, fla_recipe *r, const gcase *c,
                      uint64_t seed, recipe_summary *sum) {
  fla_op_config cfg = config_(r, c);
  fla_testdata td;
  ck_assert_msg(fla_testdata_make(h, r, &cfg, c->h0, c->dtype, seed, &td) == FLA_OK, "%s",
                fla_errmsg(h));
  /* The oracle: float64 recurrence on the CPU, on exactly these inputs. */
  fla_op_config rc = cfg;
  rc.algo = FLA_ALGO_RECURRENT;
  fla_op *oph = NULL, *opg = NULL;
  ck_assert_int_eq(fla_op_bind(h, r, &rc, &oph), FLA_OK);
  fla_tensor *o_ref = NULL, *ht_ref = NULL;
  ck_assert_int_eq(fla_tensor_new(h, FLA_F32, 4, fla_tensor_shape(td.d_o), &o_ref), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(h, FLA_F32, 4, fla_tensor_shape(td.dht), &ht_ref), FLA_OK);
  ck_assert_msg(fla_op_forward(oph, td.args, td.n, o_ref, ht_ref) == FLA_OK, "%s", fla_errmsg(h));

  /* The GPU: device copies (states in f32), outputs poisoned. */
  ck_assert_msg(fla_op_bind(g, r, &cfg, &opg) == FLA_OK, "%s", fla_errmsg(g));
  fla_arg dargs[12];
  int has_h0 = 0;
  for (int i = 0; i < td.n; i++) {
    int is_h0 = !strcmp(td.args[i].name, "h0");
    has_h0 |= is_h0;
    dargs[i].name = td.args[i].name;
    dargs[i].tensor = upload_(g, td.args[i].tensor, is_h0 ? FLA_F32 : -1);
  }
  fla_tensor *o = NULL, *ht = NULL;
  ck_assert_int_eq(fla_tensor_new(g, c->dtype, 4, fla_tensor_shape(td.d_o), &o), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 4, fla_tensor_shape(td.dht), &ht), FLA_OK);
  ck_assert_int_eq(fla_tensor_fill(g, o, NAN), FLA_OK);
  ck_assert_int_eq(fla_tensor_fill(g, ht, NAN), FLA_OK);
  int stage = fla_cuda_op_core_stage(opg, c->dtype, has_h0, 1);
  char label[160];
  snprintf(label, sizeof label, "%s T=%lld K=%lld V=%lld h0=%d %s %s%s%s", name, (long long)cfg.T,
           (long long)cfg.K, (long long)cfg.V, c->h0, fla_dtype_name(c->dtype),
           stage >= 0 ? fla_stage_name((fla_stage)stage) : "?",
           c->algo == FLA_ALGO_RECURRENT ? " (recurrent forced)" : "",
           c->nseqs ? " varlen" : "");
  /* KDA in bf16 past one token takes the chunked per-key delta stage */
  if (!strcmp(name, "kda") && c->dtype == FLA_BF16 && c->algo != FLA_ALGO_RECURRENT &&
      (cfg.T > 1 || c->nseqs))
    ck_assert_msg(stage == FLA_STAGE_CHUNK_KDA_FWD, "%s: core stage is not chunk_kda_fwd", label);
  fla_status st = fla_op_forward(opg, dargs, td.n, o, ht);
  ck_assert_msg(st == FLA_OK, "%s: %s: %s", label, fla_errstr(st), fla_errmsg(g));
  if (cfg.T == 4096 && sum->fwd_ms_4096 == 0) {
    double t0 = th_now_s();
    ck_assert_int_eq(fla_op_forward(opg, dargs, td.n, o, ht), FLA_OK);
    sum->fwd_ms_4096 = 1e3 * (th_now_s() - t0);
  }
  float *go = download_f32_(g, o), *ght = download_f32_(g, ht);
  const float *ro = fla_tensor_data(o_ref), *rht = fla_tensor_data(ht_ref);
  double eo = th_rel_rms_f32(go, ro, fla_tensor_numel(o_ref));
  double eh = th_rel_rms_f32(ght, rht, fla_tensor_numel(ht_ref));
  if (th_any_nan_f32(go, fla_tensor_numel(o_ref))) eo = NAN;
  if (th_any_nan_f32(ght, fla_tensor_numel(ht_ref))) eh = NAN;
  double tol = c->dtype == FLA_BF16 ? 5e-3 : 1e-4;
  printf("  %-70s o %.2e  ht %.2e  %s\n", label, eo, eh, eo < tol && eh < tol ? "ok" : "FAIL");
  sum->runs++;
  if (stage >= 0) sum->stages[stage]++;
  if (!(eo <= sum->max_o) || !(eh <= sum->max_ht)) snprintf(sum->worst, sizeof sum->worst, "%s", label);
  if (!(eo <= sum->max_o)) sum->max_o = eo;
  if (!(eh <= sum->max_ht)) sum->max_ht = eh;
  ck_assert_msg(eo < tol, "%s: o rel RMS %.3e >= %.0e", label, eo, tol);
  ck_assert_msg(eh < tol, "%s: ht rel RMS %.3e >= %.0e", label, eh, tol);
  free(go);
  free(ght);
  for (int i = 0; i < td.n; i++) fla_tensor_free(dargs[i].tensor);
  fla_tensor_free(o), fla_tensor_free(ht), fla_tensor_free(o_ref), fla_tensor_free(ht_ref);
  fla_op_free(oph), fla_op_free(opg);
  fla_testdata_free(&td);
}

START_TEST(test_recipe_forward) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  recipe_summary sum;
  memset(&sum, 0, sizeof sum);
  double t0 = th_now_s();
  printf("%s on %s:\n", name, fla_ctx_device_name(g));
  for (int i = 0; i < NCASES; i++)
    if (!skip_case_(i)) run_case_(h, g, name, r, &cases_[i], 1000u * (uint64_t)_i + (uint64_t)i, &sum);
  printf("gpu_ops: %-16s %2d runs  max rel RMS o %.2e ht %.2e  stages: recurrent %d, chunk %d, "
         "chunk_gk %d, chunk_wy %d, chunk_kda %d  fwd T=4096 %.2f ms  (%.1f s)  PASS\n",
         name, sum.runs, sum.max_o, sum.max_ht, sum.stages[FLA_STAGE_RECURRENT_FWD],
         sum.stages[FLA_STAGE_CHUNK_FWD], sum.stages[FLA_STAGE_CHUNK_GK_FWD],
         sum.stages[FLA_STAGE_CHUNK_WY_FWD], sum.stages[FLA_STAGE_CHUNK_KDA_FWD], sum.fwd_ms_4096,
         th_now_s() - t0);
  fflush(stdout);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* The core forward stage the GPU context g binds for recipe r under cfg
** (bf16, ht stored), with or without h0. */
static int core_stage_(fla_ctx *g, const fla_recipe *r, const fla_op_config *cfg, int h0) {
  fla_op *op = NULL;
  ck_assert_msg(fla_op_bind(g, r, cfg, &op) == FLA_OK, "%s", fla_errmsg(g));
  int stage = fla_cuda_op_core_stage(op, FLA_BF16, h0, 1);
  fla_op_free(op);
  return stage;
}

/* Enough (sequence, head) programs that chunk_gk_fwd walks whole sequences
** in one state pass (no block fold): the cases above, with H = 2, always
** take the blocked path. Recipes whose core is another stage are skipped. */
static const gcase many_heads_cases_[] = {
    {256, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0},
    {200, 128, 128, 0, FLA_BF16, FLA_ALGO_AUTO, 0},
    {300, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 3},
};

START_TEST(test_gk_many_heads) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  heads_ = 48;
  fla_op_config cfg = config_(r, &many_heads_cases_[0]);
  int stage = core_stage_(g, r, &cfg, 1);
  recipe_summary sum;
  memset(&sum, 0, sizeof sum);
  if (stage == FLA_STAGE_CHUNK_GK_FWD) {
    int n = (int)(sizeof many_heads_cases_ / sizeof many_heads_cases_[0]);
    for (int i = 0; i < n; i++) run_case_(h, g, name, r, &many_heads_cases_[i], 7000u + (uint64_t)i, &sum);
    printf("gpu_ops_heads: %-16s %d runs (H = 48)  max rel RMS o %.2e ht %.2e  PASS\n", name, sum.runs,
           sum.max_o, sum.max_ht);
  }
  heads_ = 0;
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* Long sequences over few programs, where chunk_wy_fwd cuts each sequence
** into segments (a segment pass for every segment's B | M, then the state
** pass from the chained entering states): dense with and without h0, a
** varlen batch whose length-1 sequence has empty segments, odd K and V.
** Each case asserts that the default tiles do take segments; recipes whose
** core is another stage are skipped. */
static const gcase wy_segment_cases_[] = {
    {8192, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0},  /* 2 x 2 heads: 8 segments */
    {8192, 64, 64, 0, FLA_BF16, FLA_ALGO_AUTO, 0},    /* 8 */
    {12000, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 3}, /* 3 a sequence */
    {6000, 100, 100, 1, FLA_BF16, FLA_ALGO_AUTO, 2},  /* 2 */
};

/* The chunk_wy_fwd launches of case c (default tiles) into L; their count. */
static int wy_launches_(const fla_recipe *r, const fla_op_config *cfg, const gcase *c,
                        fla_kernel_launch *L) {
  fla_gen_key key;
  fla_gen_key_from_ir(fla_recipe_ir(r), (int)cfg->K, (int)cfg->V, 1, c->h0, 1, &key);
  int64_t N = c->nseqs ? c->nseqs : cfg->B;
  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.N = (int32_t)N, a.H = (int32_t)cfg->H, a.total = cfg->B * cfg->T;
  /* chunks: at most one partial chunk a sequence more than the dense count */
  a.num_chunks = (int32_t)(c->nseqs ? (cfg->T + 63) / 64 + N - 1 : N * ((cfg->T + 63) / 64));
  memset(L, 0, sizeof *L * FLA_STAGE_MAX_KERNELS);
  return fla_stage_launches(FLA_STAGE_CHUNK_WY_FWD, &key, NULL, &a, L);
}

/* 1 when the chunk_wy_fwd launches of case c (default tiles) run the
** segment pass (launch 1, gen/stage_chunk_wy.c). */
static int wy_takes_segments_(const fla_recipe *r, const fla_op_config *cfg, const gcase *c) {
  fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
  return wy_launches_(r, cfg, c, L) == 5 && L[1].grid[0] > 0;
}

START_TEST(test_wy_segments) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  recipe_summary sum;
  memset(&sum, 0, sizeof sum);
  int n = (int)(sizeof wy_segment_cases_ / sizeof wy_segment_cases_[0]);
  for (int i = 0; i < n; i++) {
    const gcase *c = &wy_segment_cases_[i];
    fla_op_config cfg = config_(r, c);
    int stage = core_stage_(g, r, &cfg, c->h0);
    if (stage != FLA_STAGE_CHUNK_WY_FWD) break;
    ck_assert_msg(wy_takes_segments_(r, &cfg, c), "%s case %d: no segments under the default tiles",
                  name, i);
    run_case_(h, g, name, r, c, 8000u + (uint64_t)i, &sum);
  }
  if (sum.runs)
    printf("gpu_ops_wy_segments: %-16s %d runs  max rel RMS o %.2e ht %.2e  PASS\n", name, sum.runs,
           sum.max_o, sum.max_ht);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* The state kernel's regimes without segments (gen/stage_chunk_wy.c), each
** with the output kernel launched early beside it: 0: 33..64 narrow
** programs, 4 stages, a state block alone on its SM (the output kernel on the
** free SMs); 1: 65..256, 2 stages, an output block fits beside a state block;
** 2: over 256, the wide kernel, which sets its flags at its end. The regime
** is asserted from the launches. */
static const struct {
  int64_t heads;
  gcase c;
  int regime;
} wy_regime_cases_[] = {
    {6, {600, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 0},  /* 4 x 2 x 6 = 48 programs */
    {12, {500, 128, 128, 0, FLA_BF16, FLA_ALGO_AUTO, 3}, 1}, /* 4 x 3 x 12 = 144 */
    {48, {300, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 2}, /* 4 x 2 x 48 = 384 */
};

static int wy_regime_(const fla_kernel_launch *L) {
  if (L[1].grid[0] > 0) return -1; /* segments */
  if (L[3].grid[0] > 0) return 2;
  return L[2].smem + L[4].smem > 227 * 1024 ? 0 : 1;
}

START_TEST(test_wy_state_regimes) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  recipe_summary sum;
  memset(&sum, 0, sizeof sum);
  int n = (int)(sizeof wy_regime_cases_ / sizeof wy_regime_cases_[0]);
  for (int i = 0; i < n; i++) {
    const gcase *c = &wy_regime_cases_[i].c;
    heads_ = wy_regime_cases_[i].heads;
    fla_op_config cfg = config_(r, c);
    int stage = core_stage_(g, r, &cfg, c->h0);
    if (stage != FLA_STAGE_CHUNK_WY_FWD) break;
    fla_kernel_launch L[FLA_STAGE_MAX_KERNELS];
    ck_assert_int_eq(wy_launches_(r, &cfg, c, L), 5);
    ck_assert_msg(wy_regime_(L) == wy_regime_cases_[i].regime, "%s case %d: regime %d, not %d", name, i,
                  wy_regime_(L), wy_regime_cases_[i].regime);
    ck_assert_uint_eq(L[4].early, 1);
    run_case_(h, g, name, r, c, 8500u + (uint64_t)i, &sum);
  }
  heads_ = 0;
  if (sum.runs)
    printf("gpu_ops_wy_regimes: %-16s %d runs (H = 6, 12, 48)  max rel RMS o %.2e ht %.2e  PASS\n", name,
           sum.runs, sum.max_o, sum.max_ht);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

static int must_take_gk_(const char *name) { return !strcmp(name, "gla") || !strcmp(name, "hgrn2"); }

START_TEST(test_gk_wide_keys) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  recipe_summary sum;
  memset(&sum, 0, sizeof sum);
  for (int i = 0; i < NWIDE; i++) {
    fla_op_config cfg = config_(r, &wide_cases_[i]);
    int stage = core_stage_(g, r, &cfg, wide_cases_[i].h0);
    if (must_take_gk_(name))
      ck_assert_msg(stage == FLA_STAGE_CHUNK_GK_FWD, "%s K=%lld V=%lld: core stage %d, not chunk_gk_fwd",
                    name, (long long)cfg.K, (long long)cfg.V, stage);
    if (stage == FLA_STAGE_CHUNK_GK_FWD)
      run_case_(h, g, name, r, &wide_cases_[i], 11000u + (uint64_t)i, &sum);
  }
  if (sum.runs)
    printf("gpu_ops_wide: %-16s %d runs (K 192..256, V 100..512)  max rel RMS o %.2e ht %.2e  PASS\n",
           name, sum.runs, sum.max_o, sum.max_ht);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* =============================================================== backward */

typedef struct {
  int runs;
  double max_err;        /* worst rel RMS over every gradient */
  char worst[200];
} bwd_summary;

/* Gradient tolerance: gates and rates are looser in bf16 (fla's thresholds). */
static double grad_tol_(const fla_ir *ir, int input, fla_dtype dt) {
  if (dt != FLA_BF16) return 1e-4;
  return input >= 0 && (input == ir->decay_input || input == ir->rate) ? 2e-2 : 5e-3;
}

/* 1 when case c of a recipe with IR ir must take chunk_wy_bwd: the delta rule
** with no, constant or scalar decay, no feature map, no bonus, read after the
** token, bf16, K and V <= 128, the automatic algorithm, more than one token. */
static int wy_chunked_bwd_(const fla_ir *ir, const gcase *c) {
  return ir->family == FLA_FAMILY_WY && ir->decay != FLA_DECAY_KEY && !ir->read_before &&
         ir->bonus < 0 && !ir->key_from_decay && ir->feature_q == FLA_FEATURE_IDENTITY &&
         ir->feature_k == FLA_FEATURE_IDENTITY && c->dtype == FLA_BF16 &&
         c->algo == FLA_ALGO_AUTO && c->K <= 128 && c->V <= 128 && (c->T > 1 || c->nseqs);
}

/* Case b of recipe r: every gradient of the GPU backward against the CPU's
** float64 recurrence (FLA_ALGO_RECURRENT) on the same inputs. */
static void run_bcase_(fla_ctx *h, fla_ctx *g, const char *name, fla_recipe *r, const bcase *b,
                       uint64_t seed, bwd_summary *sum) {
  const gcase *c = &b->c;
  const fla_ir *ir = fla_recipe_ir(r);
  fla_op_config cfg = config_(r, c);
  fla_testdata td;
  ck_assert_msg(fla_testdata_make(h, r, &cfg, c->h0, c->dtype, seed, &td) == FLA_OK, "%s",
                fla_errmsg(h));
  fla_op_config rc = cfg;
  rc.algo = FLA_ALGO_RECURRENT;
  fla_op *oph = NULL, *opg = NULL;
  ck_assert_int_eq(fla_op_bind(h, r, &rc, &oph), FLA_OK);
  ck_assert_msg(fla_op_bind(g, r, &cfg, &opg) == FLA_OK, "%s", fla_errmsg(g));

  /* Gradients of every input and dh0: host f32 references, device tensors
  ** in the inputs' dtype (dh0 f32) poisoned with NaN. */
  enum { MAXG = FLA_IR_MAX_INPUTS + 1 };
  fla_arg hg[MAXG], dg[MAXG];
  char names[MAXG][80];
  int gidx[MAXG], ng = 0;
  fla_arg dargs[12];
  int has_h0 = 0;
  for (int i = 0; i < td.n; i++) {
    int is_h0 = !strcmp(td.args[i].name, "h0");
    has_h0 |= is_h0;
    dargs[i].name = td.args[i].name;
    dargs[i].tensor = upload_(g, td.args[i].tensor, is_h0 ? FLA_F32 : -1);
  }
  for (int i = 0; i <= ir->num_inputs; i++) {
    const fla_tensor *like = NULL;
    if (i < ir->num_inputs) {
      for (int j = 0; j < td.n; j++)
        if (!strcmp(td.args[j].name, ir->inputs[i].name)) like = td.args[j].tensor;
    } else {
      like = td.dht;
    }
    ck_assert_ptr_nonnull(like);
    snprintf(names[ng], sizeof names[ng], "d%s", i < ir->num_inputs ? ir->inputs[i].name : "h0");
    hg[ng].name = dg[ng].name = names[ng];
    ck_assert_int_eq(fla_tensor_new(h, FLA_F32, fla_tensor_ndim(like), fla_tensor_shape(like),
                                    &hg[ng].tensor), FLA_OK);
    ck_assert_int_eq(fla_tensor_new(g, i < ir->num_inputs ? c->dtype : FLA_F32, fla_tensor_ndim(like),
                                    fla_tensor_shape(like), &dg[ng].tensor), FLA_OK);
    ck_assert_int_eq(fla_tensor_fill(g, dg[ng].tensor, NAN), FLA_OK);
    gidx[ng++] = i < ir->num_inputs ? i : -1;
  }
  fla_tensor *ddo = upload_(g, td.d_o, -1), *ddht = b->dht ? upload_(g, td.dht, FLA_F32) : NULL;
  ck_assert_msg(fla_op_backward(oph, td.args, td.n, td.d_o, b->dht ? td.dht : NULL, hg, ng) == FLA_OK,
                "%s", fla_errmsg(h));
  int stage = fla_cuda_op_backward_core_stage(opg, c->dtype, has_h0, b->dht);
  /* per-key gates with plain writes (GLA, HGRN2; RWKV-6, read before the
  ** token with the bonus, up to K 128; not kda's delta rule) in bf16 take the
  ** chunked backward whenever the op does not force the recurrent form */
  if (ir->family == FLA_FAMILY_DECAY && ir->decay == FLA_DECAY_KEY &&
      (!ir->read_before || cfg.K <= 128) && c->dtype == FLA_BF16 &&
      c->algo != FLA_ALGO_RECURRENT && (c->T > 1 || c->nseqs) &&
      cfg.K <= 256 && cfg.V <= 512)
    ck_assert_msg(stage == FLA_STAGE_CHUNK_GK_BWD, "%s K=%lld: backward stage %d, not chunk_gk_bwd",
                  name, (long long)cfg.K, stage);
  char label[200];
  snprintf(label, sizeof label, "%s T=%lld K=%lld V=%lld h0=%d dht=%d %s %s%s%s", name,
           (long long)cfg.T, (long long)cfg.K, (long long)cfg.V, c->h0, b->dht,
           fla_dtype_name(c->dtype), stage >= 0 ? fla_stage_name((fla_stage)stage) : "?",
           c->algo == FLA_ALGO_RECURRENT ? " (recurrent forced)" : "", c->nseqs ? " varlen" : "");
  /* A forward first, as training runs them: the backward must not depend on
  ** what the forward's stage (chunked or not) left in the scratch slots. */
  {
    fla_tensor *fo = NULL, *fht = NULL;
    ck_assert_int_eq(fla_tensor_new(g, c->dtype, 4, fla_tensor_shape(td.d_o), &fo), FLA_OK);
    ck_assert_int_eq(fla_tensor_new(g, FLA_F32, 4, fla_tensor_shape(td.dht), &fht), FLA_OK);
    ck_assert_msg(fla_op_forward(opg, dargs, td.n, fo, fht) == FLA_OK, "%s: forward: %s", label,
                  fla_errmsg(g));
    fla_tensor_free(fo), fla_tensor_free(fht);
  }
  if (wy_chunked_bwd_(ir, c))
    ck_assert_msg(stage == FLA_STAGE_CHUNK_WY_BWD, "%s: the chunked WY backward was not taken", label);
  fla_status st = fla_op_backward(opg, dargs, td.n, ddo, ddht, dg, ng);
  ck_assert_msg(st == FLA_OK, "%s: %s: %s", label, fla_errstr(st), fla_errmsg(g));
  char line[1024];
  int used = snprintf(line, sizeof line, "  %-74s", label);
  int bad = 0;
  char badmsg[256] = "";
  for (int k = 0; k < ng; k++) {
    int64_t n = fla_tensor_numel(hg[k].tensor);
    float *got = download_f32_(g, dg[k].tensor);
    double e = th_rel_rms_f32(got, fla_tensor_data(hg[k].tensor), n);
    if (th_any_nan_f32(got, n)) e = NAN;
    free(got);
    double tol = grad_tol_(ir, gidx[k], c->dtype);
    if (used < (int)sizeof line)
      used += snprintf(line + used, sizeof line - (size_t)used, " %s %.1e", names[k], e);
    if (!(e <= sum->max_err)) {
      sum->max_err = e;
      snprintf(sum->worst, sizeof sum->worst, "%.150s %.40s", label, names[k]);
    }
    if (!(e < tol) && !bad++)
      snprintf(badmsg, sizeof badmsg, "%.40s rel RMS %.3e >= %.0e", names[k], e, tol);
  }
  printf("%s  %s\n", line, bad ? "FAIL" : "ok");
  sum->runs++;
  ck_assert_msg(!bad, "%s: %s", label, badmsg);

  /* Only dv asked for: the same dv, nothing else touched. */
  if (c->T == 63) {
    fla_tensor *dv = NULL;
    int iv = -1;
    for (int k = 0; k < ng; k++)
      if (gidx[k] == ir->value) iv = k;
    ck_assert_int_ge(iv, 0);
    ck_assert_int_eq(fla_tensor_new(g, c->dtype, fla_tensor_ndim(dg[iv].tensor),
                                    fla_tensor_shape(dg[iv].tensor), &dv), FLA_OK);
    fla_arg one[1] = {{names[iv], dv}};
    ck_assert_int_eq(fla_tensor_fill(g, dg[0].tensor, NAN), FLA_OK);
    ck_assert_msg(fla_op_backward(opg, dargs, td.n, ddo, ddht, one, 1) == FLA_OK, "%s", fla_errmsg(g));
    float *a1 = download_f32_(g, dv), *a2 = download_f32_(g, dg[iv].tensor);
    ck_assert_int_eq(memcmp(a1, a2, sizeof(float) * (size_t)fla_tensor_numel(dv)), 0);
    free(a1), free(a2);
    if (iv != 0) {
      float *q = download_f32_(g, dg[0].tensor);
      ck_assert(th_any_nan_f32(q, 1));
      free(q);
    }
    fla_tensor_free(dv);
  }
  for (int k = 0; k < ng; k++) fla_tensor_free(hg[k].tensor), fla_tensor_free(dg[k].tensor);
  for (int i = 0; i < td.n; i++) fla_tensor_free(dargs[i].tensor);
  fla_tensor_free(ddo), fla_tensor_free(ddht);
  fla_op_free(oph), fla_op_free(opg);
  fla_testdata_free(&td);
}

START_TEST(test_recipe_backward) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  bwd_summary sum;
  memset(&sum, 0, sizeof sum);
  double t0 = th_now_s();
  printf("%s backward on %s:\n", name, fla_ctx_device_name(g));
  for (int i = 0; i < NBCASES; i++)
    if (!(th_quick() && bcases_[i].c.T == 4096)) /* FLA_TEST_QUICK: the long case skipped */
      run_bcase_(h, g, name, r, &bcases_[i], 7000u + 1000u * (uint64_t)_i + (uint64_t)i, &sum);
  printf("gpu_ops_bwd: %-16s %2d runs  max grad rel RMS %.2e (%s)  (%.1f s)  PASS\n", name, sum.runs,
         sum.max_err, sum.worst, th_now_s() - t0);
  fflush(stdout);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

START_TEST(test_gk_bwd_wide_keys) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  bwd_summary sum;
  memset(&sum, 0, sizeof sum);
  for (int i = 0; i < NWIDEB; i++) {
    const gcase *c = &wide_bcases_[i].c;
    fla_op_config cfg = config_(r, c);
    fla_op *op = NULL;
    ck_assert_msg(fla_op_bind(g, r, &cfg, &op) == FLA_OK, "%s", fla_errmsg(g));
    int stage = fla_cuda_op_backward_core_stage(op, FLA_BF16, c->h0, wide_bcases_[i].dht);
    fla_op_free(op);
    if (must_take_gk_(name))
      ck_assert_msg(stage == FLA_STAGE_CHUNK_GK_BWD, "%s K=%lld V=%lld: backward stage %d, not chunk_gk_bwd",
                    name, (long long)cfg.K, (long long)cfg.V, stage);
    if (stage == FLA_STAGE_CHUNK_GK_BWD)
      run_bcase_(h, g, name, r, &wide_bcases_[i], 12000u + (uint64_t)i, &sum);
  }
  if (sum.runs)
    printf("gpu_ops_bwd_wide: %-16s %d runs (K 192..256, V 100..512)  max grad rel RMS %.2e (%s)  PASS\n",
           name, sum.runs, sum.max_err, sum.worst);
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* Enough (sequence, head) programs that chunk_wy_bwd's walks take their wide
** value slices (the cases above, with H = 2, take the narrow ones): H = 48.
** Recipes whose backward core is another stage are skipped. The keys are
** those of bcases_ (precompiled by the warm-up: a new key costs a serial
** compile of about 20 s a recipe). */
static const bcase many_heads_bcases_[] = {
    {{256, 128, 128, 1, FLA_BF16, FLA_ALGO_AUTO, 0}, 1},
    {{300, 64, 64, 1, FLA_BF16, FLA_ALGO_AUTO, 3}, 1},
};

START_TEST(test_wy_bwd_many_heads) {
  const char *name = recipes[_i];
  fla_ctx *h = cpu_ctx(), *g = gpu_ctx();
  fla_recipe *r = find_(h, name);
  heads_ = 48;
  fla_op_config cfg = config_(r, &many_heads_bcases_[0].c);
  fla_op *op = NULL;
  ck_assert_msg(fla_op_bind(g, r, &cfg, &op) == FLA_OK, "%s", fla_errmsg(g));
  int stage = fla_cuda_op_backward_core_stage(op, FLA_BF16, 1, 1);
  fla_op_free(op);
  bwd_summary sum;
  memset(&sum, 0, sizeof sum);
  if (stage == FLA_STAGE_CHUNK_WY_BWD) {
    int n = (int)(sizeof many_heads_bcases_ / sizeof many_heads_bcases_[0]);
    for (int i = 0; i < n; i++)
      run_bcase_(h, g, name, r, &many_heads_bcases_[i], 9000u + (uint64_t)i, &sum);
    printf("gpu_ops_bwd_heads: %-16s %d runs (H = 48)  max grad rel RMS %.2e  PASS\n", name,
           sum.runs, sum.max_err);
  }
  heads_ = 0;
  fla_recipe_free(r);
  fla_ctx_free(g);
  fla_ctx_free(h);
}
END_TEST

/* ================================================================== main */

/* Creates a CUDA context in a child process: 1 when it works (name and
** arch filled), else 0 with gpu_why set. */
static int probe_gpu(void) {
  int fds[2];
  if (pipe(fds) != 0) {
    snprintf(gpu_why, sizeof gpu_why, "pipe failed");
    return 0;
  }
  pid_t pid = fork();
  if (pid == 0) {
    char msg[1024 + 256 + 16] = {0};
    fla_ctx *ctx = NULL;
    int ok = fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, msg, 1024) == FLA_OK;
    if (ok) {
      const fla_cuda_device_info *info = fla_cuda_ctx_info(ctx);
      snprintf(msg + 1024, 256, "%s", info->name);
      snprintf(msg + 1024 + 256, 16, "%s", info->arch);
    }
    fla_ctx_free(ctx);
    ssize_t w = write(fds[1], &ok, sizeof ok);
    w += write(fds[1], msg, sizeof msg);
    _exit(w > 0 ? 0 : 1);
  }
  close(fds[1]);
  int ok = 0;
  char msg[1024 + 256 + 16] = {0};
  if (pid < 0 || read(fds[0], &ok, sizeof ok) != (ssize_t)sizeof ok ||
      read(fds[0], msg, sizeof msg) != (ssize_t)sizeof msg) {
    ok = 0;
    snprintf(msg, 1024, "the probe process failed");
  }
  close(fds[0]);
  if (pid > 0) waitpid(pid, NULL, 0);
  msg[1023] = msg[1024 + 255] = msg[sizeof msg - 1] = '\0';
  memcpy(gpu_why, msg, 1024);        /* each field NUL-terminated above */
  memcpy(gpu_name, msg + 1024, 256);
  memcpy(gpu_arch, msg + 1024 + 256, 16);
  return ok;
}

static Suite *gpu_suite(void) {
  Suite *s = suite_create("gpu_ops");
  if (!probe_gpu()) {
    printf("test_gpu_ops: skipped: %s\n", gpu_why);
    TCase *skip = tcase_create("no_gpu");
    tcase_add_test(skip, test_skip_no_gpu);
    tcase_add_test(skip, test_cuda_ctx_nodevice);
    suite_add_tcase(s, skip);
    return s;
  }
  printf("test_gpu_ops: %s (%s)\n", gpu_name, gpu_arch);
  TCase *dev = tcase_create("device");
  tcase_set_timeout(dev, 300);
  tcase_add_test(dev, test_ctx_and_tensors);
  tcase_add_test(dev, test_op_errors);
  tcase_add_test(dev, test_varlen_errors);
  suite_add_tcase(s, dev);
  TCase *warmup = tcase_create("warmup");
  tcase_set_timeout(warmup, 900);
  tcase_add_test(warmup, test_warm_module_cache);
  suite_add_tcase(s, warmup);
  TCase *fwd = tcase_create("forward");
  tcase_set_timeout(fwd, 900);
  tcase_add_loop_test(fwd, test_recipe_forward, 0, nrecipes);
  tcase_add_loop_test(fwd, test_gk_many_heads, 0, nrecipes);
  tcase_add_loop_test(fwd, test_wy_segments, 0, nrecipes);
  tcase_add_loop_test(fwd, test_wy_state_regimes, 0, nrecipes);
  tcase_add_loop_test(fwd, test_gk_wide_keys, 0, nrecipes);
  suite_add_tcase(s, fwd);
  TCase *bwd = tcase_create("backward");
  tcase_set_timeout(bwd, 900);
  tcase_add_loop_test(bwd, test_recipe_backward, 0, nrecipes);
  tcase_add_loop_test(bwd, test_wy_bwd_many_heads, 0, nrecipes);
  tcase_add_loop_test(bwd, test_gk_bwd_wide_keys, 0, nrecipes);
  suite_add_tcase(s, bwd);
  return s;
}

int main(void) {
  nrecipes = fla_recipe_list_builtin(recipes, MAX_RECIPES);
  if (nrecipes > MAX_RECIPES) nrecipes = MAX_RECIPES;
  /* FLA_GPU_OPS_RECIPES=a,b,...: only these recipes (a kernel's users, to
  ** spend a short device run on them); a name that is not shipped is an error */
  const char *only = getenv("FLA_GPU_OPS_RECIPES");
  if (only && *only) {
    int kept = 0, asked = 0;
    for (int i = 0; i < nrecipes; i++) {
      const char *p = only;
      size_t len = strlen(recipes[i]);
      int want = 0;
      while (*p && !want) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        want = n == len && !strncmp(p, recipes[i], n);
        p = e ? e + 1 : p + n;
      }
      if (want) recipes[kept++] = recipes[i];
    }
    for (const char *p = only; *p;) {
      const char *e = strchr(p, ',');
      asked++;
      p = e ? e + 1 : p + strlen(p);
    }
    if (kept != asked) {
      fprintf(stderr, "test_gpu_ops: FLA_GPU_OPS_RECIPES=%s names %d recipes, %d of them shipped\n",
              only, asked, kept);
      return 1;
    }
    nrecipes = kept;
  }
  const char *arch = getenv("FLA_GPU_OPS_PRECOMPILE");
  if (arch && *arch) {
    char why[1024];
    if (fla_nvrtc_load(why, sizeof why) != 0) {
      fprintf(stderr, "test_gpu_ops: cannot precompile: %s\n", why);
      return 1;
    }
    snprintf(gpu_arch, sizeof gpu_arch, "%s", arch);
    double s = 0;
    int failed = warm_all_((int)sysconf(_SC_NPROCESSORS_ONLN), &s);
    printf("precompile for %s: %d modules compiled in %.1f s, %d failures%s%s\n", arch,
           warm.compiled, s, failed, failed ? "; first: " : "", failed ? warm.first_error : "");
    return failed ? 1 : 0;
  }
  return th_run_suite(gpu_suite());
}
