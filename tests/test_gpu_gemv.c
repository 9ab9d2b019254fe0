/*
** test_gpu_gemv.c -- the one-row products of decode (models/nn_gpu.c, the
** kernels gemv_ and gemvk_ of templates/cuda/model_nn.cuh) against a float64
** product on the CPU over the same (bf16-rounded) weights, at the widths of
** real models (the tiny checkpoints of test_gpu_models are too narrow for
** gemvk_, which takes in >= 512): plain, with the RMSNorm of x (xmode 1), bias
** and accumulate, GLA's gate epilogue, SwiGLU of a [gate; up] weight, float32
** weights, and rows that do not fill the last group of four.
** Without a usable device the suite holds one test that prints why it skipped.
*/
#include "harness.h"
#include "nn_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char gpu_why_[1024];

static float bf16_round_(float f) { /* the kernels' f2bf: nearest even */
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  memcpy(&f, &u, 4);
  return f;
}

static float urand_(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (float)((*s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static double silu_(double v) { return v / (1.0 + exp(-v)); }
static double logsigm_(double v) { return v < 0 ? v - log1p(exp(v)) : -log1p(exp(-v)); }

/* The cases: out rows, in columns, and the mode. */
enum { PLAIN, NORM_X, BIAS_ACC, GATE_EPI, SWIGLU, NMODES };
static const int shapes_[][2] = {{6160, 2048}, {2048, 5632}, {1027, 1024}, {37, 520}};
#define NSHAPES ((int)(sizeof shapes_ / sizeof shapes_[0]))

static void run_case_(fla_ctx *ctx, int shape, int mode, fla_dtype wdt, int use_gemvk) {
  nn_gpu g;
  ck_assert_int_eq(nn_gpu_init(&g, ctx, wdt), FLA_OK);
  g.gemvk_off = !use_gemvk;
  int out = shapes_[shape][0], in = shapes_[shape][1];
  int wrows = mode == SWIGLU ? 2 * out : out;
  size_t nw_ = (size_t)wrows * (size_t)in;
  float *W = malloc(4 * nw_), *x = malloc(4 * (size_t)in), *nw = malloc(4 * (size_t)in);
  float *bias = malloc(4 * (size_t)out), *y0 = malloc(4 * (size_t)out), *y = malloc(4 * (size_t)out);
  uint64_t s = 0x9e3779b97f4a7c15ull + (uint64_t)(shape * 31 + mode);
  for (size_t i = 0; i < nw_; i++) W[i] = 0.05f * urand_(&s);
  if (wdt == FLA_BF16)
    for (size_t i = 0; i < nw_; i++) W[i] = bf16_round_(W[i]);
  for (int i = 0; i < in; i++) x[i] = 3.0f * urand_(&s), nw[i] = 1.0f + 0.5f * urand_(&s);
  for (int o = 0; o < out; o++) bias[o] = urand_(&s), y0[o] = urand_(&s);
  /* the reference, in float64 */
  double *xr = malloc(8 * (size_t)in), *ref = malloc(8 * (size_t)out);
  for (int i = 0; i < in; i++) xr[i] = x[i];
  if (mode == NORM_X) {
    double ss = 0;
    for (int i = 0; i < in; i++) ss += xr[i] * xr[i];
    double r = 1.0 / sqrt(ss / in + 1e-6);
    for (int i = 0; i < in; i++) xr[i] *= r * nw[i];
  }
  for (int o = 0; o < out; o++) {
    double a = 0, b = 0;
    for (int i = 0; i < in; i++) a += (double)W[(size_t)o * in + i] * xr[i];
    if (mode == SWIGLU)
      for (int i = 0; i < in; i++) b += (double)W[(size_t)(o + out) * in + i] * xr[i];
    if (mode == BIAS_ACC) a += bias[o] + y0[o];
    if (mode == GATE_EPI) a = fmax(logsigm_(a) / 16.0, -0.2);
    if (mode == SWIGLU) a = silu_(a) * b;
    ref[o] = a;
  }
  /* the device */
  size_t esz = wdt == FLA_BF16 ? 2 : 4;
  dptr dW = nn_gpu_tmp(&g, esz * nw_), stage = GF(&g, nw_), dx = GF(&g, in), dnw = GF(&g, in);
  dptr dbias = GF(&g, out), dy = GF(&g, out);
  gl_upload(&g, wdt == FLA_BF16 ? stage : dW, W, 4 * nw_);
  if (wdt == FLA_BF16) gl_cast_bf16(&g, stage, dW, (int64_t)nw_);
  gl_upload(&g, dx, x, 4 * (size_t)in);
  gl_upload(&g, dnw, nw, 4 * (size_t)in);
  gl_upload(&g, dbias, bias, 4 * (size_t)out);
  gl_upload(&g, dy, y0, 4 * (size_t)out);
  gl_gemv_opts op = {.xmode = 0};
  switch (mode) {
  case PLAIN: gl_gemv(&g, dx, in, 1, in, dW, in, out, 0, dy, out, 0, &op); break;
  case NORM_X:
    op.nw = dnw, op.eps = 1e-6f, op.xmode = 1;
    gl_gemv(&g, dx, in, 1, in, dW, in, out, 0, dy, out, 0, &op);
    break;
  case BIAS_ACC: gl_gemv(&g, dx, in, 1, in, dW, in, out, dbias, dy, out, 1, &op); break;
  case GATE_EPI:
    op.epi = 1, op.epa = -0.2f;
    gl_gemv(&g, dx, in, 1, in, dW, in, out, 0, dy, out, 0, &op);
    break;
  default: gl_gemv_swiglu(&g, dx, in, 1, in, dW, in, out, out, dy, out, &op); break;
  }
  gl_download(&g, y, dy, 4 * (size_t)out);
  ck_assert_msg(g.status == FLA_OK, "%s", fla_errmsg(ctx));
  double num = 0, den = 0, worst = 0;
  for (int o = 0; o < out; o++) {
    double d = y[o] - ref[o];
    num += d * d, den += ref[o] * ref[o];
    if (fabs(d) > worst) worst = fabs(d);
  }
  double rel = sqrt(num / (den > 0 ? den : 1));
  ck_assert_msg(rel < 1e-5 && isfinite(rel), "%s %s, %d x %d, mode %d: rel RMS %.3g (worst %.3g)",
                use_gemvk ? "gemvk" : "gemv", wdt == FLA_BF16 ? "bf16" : "f32", out, in, mode, rel, worst);
  free(W), free(x), free(nw), free(bias), free(y0), free(y), free(xr), free(ref);
  nn_gpu_free(&g);
}

/* _i: shape x mode, bf16 weights, the one-row kernel and the warp-per-row one. */
START_TEST(test_gemv_bf16) {
  fla_ctx *ctx = th_cuda_ctx();
  run_case_(ctx, _i / NMODES, _i % NMODES, FLA_BF16, 1);
  run_case_(ctx, _i / NMODES, _i % NMODES, FLA_BF16, 0);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_gemv_f32) {
  fla_ctx *ctx = th_cuda_ctx();
  run_case_(ctx, _i / NMODES, _i % NMODES, FLA_F32, 1);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_skip_no_gpu) { printf("test_gpu_gemv: SKIP: no usable CUDA device (%s)\n", gpu_why_); }
END_TEST

int main(void) {
  Suite *s = suite_create("gpu_gemv");
  TCase *tc = tcase_create("gpu_gemv");
  tcase_set_timeout(tc, 300);
  if (!th_probe_cuda(gpu_why_, sizeof gpu_why_)) {
    printf("test_gpu_gemv: skipped: %s\n", gpu_why_);
    tcase_add_test(tc, test_skip_no_gpu);
  } else {
    tcase_add_loop_test(tc, test_gemv_bf16, 0, NSHAPES * NMODES);
    tcase_add_loop_test(tc, test_gemv_f32, 0, NSHAPES * NMODES);
  }
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
