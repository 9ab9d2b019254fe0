/*
** test_gpu_attn.c -- causal softmax attention for training on the GPU
** (models/train_gpu_attn.c, templates/cuda/train_attn.cuh) against the CPU's
** gm_attention_f / gm_attention_bwd_f on random data: o, dq, dk, dv at
** awkward shapes (T = 1, 37, 100; grouped heads; a sliding window; head dims
** 64, 100, 128), in float32 (tight) and bf16 (the CPU computes on the same
** bf16-rounded inputs; loose). Outputs are filled with NaN before each run.
** Always: the module compiles with NVRTC for sm_80 and sm_90. Without a
** usable device the GPU cases are one test that prints why it skipped.
*/
#include "harness.h"
#include "cuda/op_cuda.h"
#include "grad_math.h"
#include "internal.h"
#include "stage.h"
#include "train_gpu.h"
#include "train_gpu_attn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char gpu_why_[1024];

typedef struct {
  int64_t B, T;
  int Hq, Hkv, d;
  int64_t window;
} case_;

static const case_ cases_[] = {
  {2, 37, 4, 2, 64, 0}, {1, 100, 2, 1, 100, 16}, {3, 1, 2, 2, 128, 0}, {1, 65, 6, 3, 32, 7},
};
#define NCASES ((int)(sizeof cases_ / sizeof cases_[0]))

/* upload n floats as dtype (bf16 or float32) into fresh device memory */
static uint64_t up_(fla_ctx *ctx, const float *x, int64_t n, int bf) {
  uint64_t p = 0;
  size_t es = bf ? 2 : 4;
  ck_assert_int_eq(fla_gpu_mem_alloc(ctx, es * (size_t)n, &p), FLA_OK);
  void *h = malloc(es * (size_t)n);
  ck_assert_ptr_nonnull(h);
  if (bf)
    for (int64_t i = 0; i < n; i++) ((uint16_t *)h)[i] = fla_f32_to_bf16(x[i]);
  else
    memcpy(h, x, 4 * (size_t)n);
  ck_assert_int_eq(fla_gpu_upload(ctx, p, h, es * (size_t)n), FLA_OK);
  free(h);
  return p;
}

/* device memory of n elements filled with NaN */
static uint64_t nan_(fla_ctx *ctx, int64_t n, int bf) {
  uint64_t p = 0;
  ck_assert_int_eq(fla_gpu_mem_alloc(ctx, (bf ? 2 : 4) * (size_t)n, &p), FLA_OK);
  if (bf) ck_assert_int_eq(fla_gpu_memset_d16(ctx, p, 0x7fc0, (size_t)n), FLA_OK);
  else ck_assert_int_eq(fla_gpu_memset_d32(ctx, p, 0x7fc00000u, (size_t)n), FLA_OK);
  return p;
}

static float *down_(fla_ctx *ctx, uint64_t p, int64_t n, int bf) {
  size_t es = bf ? 2 : 4;
  void *h = malloc(es * (size_t)n);
  float *y = malloc(4 * (size_t)n);
  ck_assert(h && y);
  ck_assert_int_eq(fla_gpu_download(ctx, h, p, es * (size_t)n), FLA_OK);
  for (int64_t i = 0; i < n; i++) y[i] = bf ? fla_bf16_to_f32(((uint16_t *)h)[i]) : ((float *)h)[i];
  free(h);
  return y;
}

static float *rand_(th_rng *r, int64_t n, int bf) {
  float *x = malloc(4 * (size_t)n);
  ck_assert_ptr_nonnull(x);
  for (int64_t i = 0; i < n; i++) {
    x[i] = (float)th_normal(r);
    if (bf) x[i] = fla_bf16_to_f32(fla_f32_to_bf16(x[i])); /* the CPU sees what the GPU sees */
  }
  return x;
}

static void check_(const char *what, const case_ *c, int bf, const float *got, const float *want, int64_t n) {
  ck_assert_msg(!th_any_nan_f32(got, n), "%s: NaN left (B %lld T %lld Hq %d Hkv %d d %d window %lld %s)", what,
                (long long)c->B, (long long)c->T, c->Hq, c->Hkv, c->d, (long long)c->window, bf ? "bf16" : "f32");
  double e = th_rel_rms_f32(got, want, n), tol = bf ? 2e-2 : 1e-5;
  printf("test_gpu_attn: %-2s B %lld T %3lld Hq %d Hkv %d d %3d window %2lld %s: rel rms %.2e\n", what,
         (long long)c->B, (long long)c->T, c->Hq, c->Hkv, c->d, (long long)c->window, bf ? "bf16" : "f32 ", e);
  ck_assert_msg(e < tol, "%s: relative RMS error %.3e >= %.1e", what, e, tol);
}

/* _i: case index * 2 + (bf16) */
START_TEST(test_attention_matches_cpu) {
  const case_ *c = &cases_[_i / 2];
  int bf = _i % 2;
  fla_ctx *ctx = th_cuda_ctx();
  int64_t rows = c->B * c->T, nq = rows * c->Hq * c->d, nk = rows * c->Hkv * c->d;
  th_rng r;
  th_seed(&r, 1000 + (uint64_t)_i);
  float *q = rand_(&r, nq, bf), *k = rand_(&r, nk, bf), *v = rand_(&r, nk, bf), *dO = rand_(&r, nq, bf);
  float *o = malloc(4 * (size_t)nq), *dq = malloc(4 * (size_t)nq), *dk = malloc(4 * (size_t)nk),
        *dv = malloc(4 * (size_t)nk);
  ck_assert(o && dq && dk && dv);
  gm_attention_f(q, k, v, c->B, c->T, c->Hq, c->Hkv, c->d, c->window, o);
  gm_attention_bwd_f(q, k, v, c->B, c->T, c->Hq, c->Hkv, c->d, c->window, dO, dq, dk, dv);

  gpu_attn_shape s = {.bf = bf, .B = c->B, .T = c->T, .Hq = c->Hq, .Hkv = c->Hkv, .d = c->d, .window = c->window};
  uint64_t gq = up_(ctx, q, nq, bf), gk = up_(ctx, k, nk, bf), gv = up_(ctx, v, nk, bf), gdo = up_(ctx, dO, nq, bf);
  uint64_t go = nan_(ctx, nq, bf), glse = nan_(ctx, rows * c->Hq, 0), gD = nan_(ctx, rows * c->Hq, 0);
  uint64_t gdq = nan_(ctx, nq, bf), gdk = nan_(ctx, nk, bf), gdv = nan_(ctx, nk, bf);
  ck_assert_msg(gpu_attn_fwd(ctx, &s, gq, gk, gv, go, glse) == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert_msg(gpu_attn_bwd(ctx, &s, gq, gk, gv, go, glse, gdo, gD, gdq, gdk, gdv) == FLA_OK, "%s",
                fla_errmsg(ctx));
  ck_assert_msg(fla_cuda_sync(ctx, "attention") == FLA_OK, "%s", fla_errmsg(ctx));
  float *ho = down_(ctx, go, nq, bf), *hdq = down_(ctx, gdq, nq, bf), *hdk = down_(ctx, gdk, nk, bf),
        *hdv = down_(ctx, gdv, nk, bf);
  check_("o", c, bf, ho, o, nq);
  check_("dq", c, bf, hdq, dq, nq);
  check_("dk", c, bf, hdk, dk, nk);
  check_("dv", c, bf, hdv, dv, nk);
  uint64_t all[] = {gq, gk, gv, gdo, go, glse, gD, gdq, gdk, gdv};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fla_gpu_mem_free(ctx, all[i]);
  free(q), free(k), free(v), free(dO), free(o), free(dq), free(dk), free(dv);
  free(ho), free(hdq), free(hdk), free(hdv);
  fla_ctx_free(ctx);
}
END_TEST

/* Bad sizes are named. */
START_TEST(test_bad_shapes_named) {
  fla_ctx *ctx = th_cuda_ctx();
  gpu_attn_shape s = {.bf = 0, .B = 1, .T = 4, .Hq = 3, .Hkv = 2, .d = 64};
  ck_assert_int_eq(gpu_attn_fwd(ctx, &s, 0, 0, 0, 0, 0), FLA_INVALID);
  ck_assert_msg(strstr(fla_errmsg(ctx), "3 query heads over 2") != NULL, "%s", fla_errmsg(ctx));
  s.Hq = 2, s.d = 300;
  ck_assert_int_eq(gpu_attn_bwd(ctx, &s, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), FLA_INVALID);
  ck_assert_msg(strstr(fla_errmsg(ctx), "head dim 300") != NULL, "%s", fla_errmsg(ctx));
  fla_ctx_free(ctx);
}
END_TEST

/* The module compiles (no GPU needed: NVRTC alone). */
START_TEST(test_kernels_compile) {
  char *src = gpu_train_source("train_attn.cuh");
  ck_assert_ptr_nonnull(src);
  th_check_nvrtc_compiles("test_gpu_attn", "train_attn", src);
  free(src);
}
END_TEST

START_TEST(test_skip_no_gpu) {
  printf("test_gpu_attn: SKIP: no usable CUDA device (%s)\n", gpu_why_);
}
END_TEST

int main(void) {
  Suite *s = suite_create("gpu_attn");
  TCase *tc = tcase_create("gpu_attn");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_kernels_compile);
  if (!th_probe_cuda(gpu_why_, sizeof gpu_why_)) {
    printf("test_gpu_attn: skipped: %s\n", gpu_why_);
    tcase_add_test(tc, test_skip_no_gpu);
  } else {
    tcase_add_test(tc, test_bad_shapes_named);
    tcase_add_loop_test(tc, test_attention_matches_cpu, 0, 2 * NCASES);
  }
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
