/*
** test_gpu_train.c -- training on a CUDA context against the CPU's (the
** oracle of test_train_grad.c): on the tiny fla GLA and RetNet checkpoints
** (and, at the end, Gated DeltaNet, DeltaNet, KDA, HGRN2, the Transformer and RWKV-6), the loss and
** every parameter's gradient of fla_model_loss_backward (float32 compute
** tight, bf16 loose: see the tolerances), micro-batch accumulation,
** recomputation, AdamW steps with clipping equal to the CPU's, the loss going
** down, fla_model_create on the GPU, and the FLA_UNSUPPORTED of a model
** the GPU does not train (attention with qkv_bias).
** Always: templates/cuda/train_nn.cuh, train_delta.cuh and train_rwkv6.cuh
** compile with NVRTC for sm_80 and sm_90.
** Without a usable device the GPU cases are one test that prints why it skipped.
*/
#include "harness.h"
#include "stage.h"
#include "train_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char gpu_why_[1024];

/* float32 compute: the GPU runs the same float32 math in another order (cuBLAS
** products, the recipe's kernels): 1.1e-6 worst, 7.7e-7 overall on the H100
** (bench/results/2026-11-23-gpu-train.md). */
#define F32_TOL 1e-4
/* bf16 compute: every product's inputs rounded to 8 bits of mantissa: 1.6e-2
** worst, 1.2e-2 overall on the H100; a wrong gradient is off by ~1
** (relative), a sign flip by 2. */
#define BF16_TOL 0.1
#define BF16_TOL_TOTAL 0.05

static fla_model *trainable_(fla_ctx *ctx, const char *name, int dtype) {
  fla_model *m = NULL;
  fla_status s = fla_model_load_ex(ctx, th_tiny_model_dir(name), dtype, &m);
  ck_assert_msg(s == FLA_OK, "%s: %s", name, fla_errmsg(ctx));
  s = fla_model_enable_grad(m);
  ck_assert_msg(s == FLA_OK, "enable_grad %s: %s", name, fla_errmsg(ctx));
  return m;
}

static void batch_(uint64_t seed, int64_t n, int V, int32_t *ids, int32_t *tg) {
  th_rng r;
  th_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) {
    ids[i] = (int32_t)(th_uniform(&r) * V);
    tg[i] = (int32_t)(th_uniform(&r) * V);
  }
  tg[n / 3] = -100; /* an ignored target */
}

/* The relative RMS error of every gradient, the worst one and the whole. */
static double compare_grads_(fla_model *cpu, fla_model *gpu, double tol, double tol_total, const char *what) {
  ck_assert_int_eq(fla_model_sync_host(cpu), FLA_OK); /* a no-op on the CPU; the first model may be a GPU one */
  ck_assert_int_eq(fla_model_sync_host(gpu), FLA_OK);
  int n = fla_model_num_params(cpu);
  ck_assert_int_eq(n, fla_model_num_params(gpu));
  double worst = 0, num = 0, den = 0;
  const char *worst_name = "";
  int zeros = 0;
  for (int i = 0; i < n; i++) {
    fla_param a, b;
    ck_assert_int_eq(fla_model_param(cpu, i, &a), FLA_OK);
    ck_assert_int_eq(fla_model_param(gpu, i, &b), FLA_OK);
    ck_assert_str_eq(a.name, b.name);
    ck_assert(!th_any_nan_f32(b.grad, b.numel));
    double nn = 0, dd = 0;
    for (int64_t j = 0; j < a.numel; j++) {
      double d = (double)a.grad[j] - b.grad[j];
      nn += d * d;
      dd += (double)a.grad[j] * a.grad[j];
    }
    num += nn, den += dd;
    if (dd == 0) { /* zero for this checkpoint (e.g. a LoRA whose other half is zero-initialised): the GPU's too */
      ck_assert_msg(sqrt(nn / (double)a.numel) < 1e-12, "%s: %s: the CPU gradient is zero, the GPU's is not (RMS %.3g)",
                    what, a.name, sqrt(nn / (double)a.numel));
      printf("test_gpu_train: %s: %s: zero gradient on both (this checkpoint)\n", what, a.name);
      zeros++;
      continue;
    }
    double e = sqrt(nn / dd);
    if (e > worst) worst = e, worst_name = a.name;
  }
  ck_assert_msg(2 * zeros < n, "%s: %d of %d CPU gradients are zero (the test would check little)", what, zeros, n);
  double total = sqrt(num / den);
  printf("test_gpu_train: %s: worst gradient %s rel RMS %.3g, all gradients %.3g\n", what, worst_name, worst, total);
  ck_assert_msg(worst < tol, "%s: gradient of %s off by %.3g relative RMS (tolerance %g)", what, worst_name, worst, tol);
  ck_assert_msg(total < tol_total, "%s: all gradients off by %.3g (tolerance %g)", what, total, tol_total);
  return total;
}

/* The architectures the GPU trains: GLA, RetNet and the GLA hybrid with a
** sliding-window attention layer (train_gpu_loss.c); DeltaNet, Gated
** DeltaNet, KDA (the delta rule with short convolutions, L2-normed q and k,
** beta; Gated DeltaNet's gate and gated output norm; KDA's per-key gate through
** a low-rank f_proj and its low-rank sigmoid output gate), HGRN2 (floored
** forget gates whose per-layer lower bounds come from one raw parameter) and
** the Transformer (softmax attention with grouped heads and rotary:
** train_gpu_attn_layer.c) through the delta-family loop
** (train_gpu_delta*.c, train_gpu_hgrn2.c); RWKV-6 (token shift, LoRA lerps,
** the decay LoRA, the bonus, gated GroupNorm, the channel mix, LayerNorms
** with bias and layer 0's pre-norm: train_gpu_rwkv6*.c) through its own. */
static const char *const models_[] = {"gla",   "retnet", "gla_hybrid_swa", "gated_deltanet", "delta_net",
                                      "kda",   "hgrn2",  "transformer",    "rwkv6"};
/* one of each loop and block kind, stepped with micro-batches, recompute and AdamW */
static const char *const step_models_[] = {"gla", "gated_deltanet", "kda", "hgrn2", "transformer", "rwkv6"};
#define NELEM_(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* _i: model _i / 2, float32 (even) or bf16 (odd): loss and every gradient against the CPU */
START_TEST(test_grads_match_cpu) {
  int bf = _i % 2;
  const char *name = models_[_i / 2];
  char what[64];
  snprintf(what, sizeof what, "%s %s", name, bf ? "bf16" : "f32");
  fla_ctx *cctx = th_cpu_ctx(), *gctx = th_cuda_ctx();
  fla_model *cpu = trainable_(cctx, name, -1), *gpu = trainable_(gctx, name, bf ? FLA_BF16 : FLA_F32);
  int64_t B = 2, T = 77; /* T not a multiple of the chunk: the convolutions and the recipe's tail */
  int32_t ids[154], tg[154];
  batch_(17, B * T, fla_model_vocab_size(cpu), ids, tg);
  double lc = 0, lg = 0;
  int64_t nc = 0, ng = 0;
  ck_assert_int_eq(fla_model_loss_backward(cpu, ids, tg, B, T, 0.01f, &lc, &nc), FLA_OK);
  fla_status s = fla_model_loss_backward(gpu, ids, tg, B, T, 0.01f, &lg, &ng);
  ck_assert_msg(s == FLA_OK, "%s: %s", what, fla_errmsg(gctx));
  ck_assert_int_eq(nc, ng);
  ck_assert_int_eq(nc, B * T - 1);
  printf("test_gpu_train: %s: loss CPU %.7g GPU %.7g\n", what, lc, lg);
  ck_assert_msg(fabs(lc - lg) < (bf ? 1e-2 : 1e-5) * fabs(lc), "%s: loss CPU %.9g GPU %.9g", what, lc, lg);
  double total = compare_grads_(cpu, gpu, bf ? BF16_TOL : F32_TOL, bf ? BF16_TOL_TOTAL : F32_TOL, what);
  /* a model loaded in bf16 trains in bf16 (enable_grad takes the weights'
  ** dtype): its gradients carry bf16 rounding, far above float32's ~1e-6 */
  if (bf) ck_assert_msg(total > 10 * F32_TOL, "%s: gradients within %.3g of float32: not computed in bf16", what, total);
  fla_model_free(cpu);
  fla_model_free(gpu);
  fla_ctx_free(gctx);
  fla_ctx_free(cctx);
}
END_TEST

/* step_models_[_i]: two micro-batches with recomputation equal one batch of
** both; zero_grad clears the device's gradients */
START_TEST(test_accumulate_and_recompute) {
  const char *name = step_models_[_i];
  char what[96];
  snprintf(what, sizeof what, "%s micro-batches + recompute", name);
  fla_ctx *gctx = th_cuda_ctx();
  fla_model *a = trainable_(gctx, name, FLA_F32), *b = trainable_(gctx, name, FLA_F32);
  int64_t T = 64;
  int32_t ids[128], tg[128];
  batch_(23, 2 * T, fla_model_vocab_size(a), ids, tg);
  double l, la = 0, lb = 0;
  int64_t n;
  ck_assert_int_eq(fla_model_loss_backward(a, ids, tg, 2, T, 0.5f, &la, &n), FLA_OK);
  ck_assert_int_eq(fla_model_set_recompute(b, 1), FLA_OK);
  ck_assert_int_eq(fla_model_loss_backward(b, ids, tg, 1, T, 0.5f, &l, &n), FLA_OK);
  lb += l;
  ck_assert_int_eq(fla_model_loss_backward(b, ids + T, tg + T, 1, T, 0.5f, &l, &n), FLA_OK);
  lb += l;
  ck_assert_msg(fabs(la - lb) < 1e-5 * fabs(la), "%s: loss %.9g vs %.9g", what, la, lb);
  compare_grads_(a, b, 1e-4, 1e-4, what);
  fla_model_zero_grad(b);
  ck_assert_int_eq(fla_model_sync_host(b), FLA_OK);
  for (int i = 0; i < fla_model_num_params(b); i++) {
    fla_param p;
    ck_assert_int_eq(fla_model_param(b, i, &p), FLA_OK);
    for (int64_t j = 0; j < p.numel; j++) ck_assert_msg(p.grad[j] == 0.0f, "%s: %s not zeroed", name, p.name);
  }
  fla_model_free(a);
  fla_model_free(b);
  fla_ctx_free(gctx);
}
END_TEST

/* step_models_[_i]: three AdamW steps with clipping (to half the norm, so
** that every model clips) give the CPU's weights; the moments survive a save
** and load; a created bf16 model learns one batch (the loss falls) and, made
** on the GPU, has no forward */
START_TEST(test_adamw_and_loss_falls) {
  const char *name = step_models_[_i];
  fla_ctx *cctx = th_cpu_ctx(), *gctx = th_cuda_ctx();
  fla_model *cpu = trainable_(cctx, name, -1), *gpu = trainable_(gctx, name, FLA_F32);
  fla_adamw_options o = {0.9f, 0.95f, 1e-8f, 0.1f};
  fla_adamw *ac = NULL, *ag = NULL;
  ck_assert_int_eq(fla_adamw_new_model(cpu, &o, &ac), FLA_OK);
  ck_assert_int_eq(fla_adamw_new_model(gpu, &o, &ag), FLA_OK);
  int64_t B = 2, T = 50;
  int32_t ids[256], tg[256];
  const float lr = 1e-3f;
  for (int step = 0; step < 3; step++) {
    batch_(200 + step, B * T, fla_model_vocab_size(cpu), ids, tg);
    double l;
    int64_t n;
    fla_model_zero_grad(cpu);
    fla_model_zero_grad(gpu);
    ck_assert_int_eq(fla_model_loss_backward(cpu, ids, tg, B, T, 1.0f / 99, &l, &n), FLA_OK);
    ck_assert_int_eq(fla_model_loss_backward(gpu, ids, tg, B, T, 1.0f / 99, &l, &n), FLA_OK);
    /* the norm first (a bound no norm reaches: nothing scaled), then clipped to half of it */
    double nc = fla_model_clip_grad_norm(cpu, 1e30), ng = fla_model_clip_grad_norm(gpu, 1e30);
    ck_assert_msg(fabs(nc - ng) < 1e-3 * nc, "%s: grad norm CPU %.9g GPU %.9g", name, nc, ng);
    ck_assert_msg(nc > 0, "%s: zero gradient norm", name);
    fla_model_clip_grad_norm(cpu, 0.5 * nc);
    double after = fla_model_clip_grad_norm(gpu, 0.5 * nc);
    ck_assert_msg(fabs(after - ng) < 1e-6 * ng, "%s: the GPU's norm moved from %.9g to %.9g", name, ng, after);
    ck_assert_msg(fabs(fla_model_clip_grad_norm(gpu, 1e30) - 0.5 * nc) < 1e-3 * nc, "%s: not clipped to half", name);
    ck_assert_int_eq(fla_adamw_step(ac, lr), FLA_OK);
    ck_assert_int_eq(fla_adamw_step(ag, lr), FLA_OK);
  }
  ck_assert_int_eq(fla_model_sync_host(gpu), FLA_OK);
  /* every weight moved by ~lr per step; both must agree far below that */
  double worst = 0;
  for (int i = 0; i < fla_model_num_params(cpu); i++) {
    fla_param a, b;
    fla_model_param(cpu, i, &a);
    fla_model_param(gpu, i, &b);
    for (int64_t j = 0; j < a.numel; j++) worst = fmax(worst, fabs((double)a.data[j] - b.data[j]));
  }
  printf("test_gpu_train: %s AdamW x3: largest weight difference %.3g (lr %g)\n", name, worst, (double)lr);
  ck_assert_msg(worst < 0.1 * lr, "%s: weights differ by %.3g after 3 steps", name, worst);
  char path[] = "/tmp/fla_gpu_adamw_XXXXXX";
  int fd = mkstemp(path);
  ck_assert(fd >= 0);
  close(fd);
  ck_assert_int_eq(fla_adamw_save(ag, path), FLA_OK);
  ck_assert_int_eq(fla_adamw_load(ag, path), FLA_OK);
  ck_assert_int_eq(fla_adamw_step_count(ag), 3);
  unlink(path);
  fla_adamw_free(ac);
  fla_adamw_free(ag);
  fla_model_free(cpu);
  fla_model_free(gpu);
  /* a fresh bf16 model from the config learns a batch whose targets are a function of the input */
  char cfg[4096];
  snprintf(cfg, sizeof cfg, "%s/config.json", th_tiny_model_dir(name));
  fla_model *m = NULL;
  ck_assert_msg(fla_model_create_ex(gctx, cfg, 9, FLA_BF16, &m) == FLA_OK, "%s", fla_errmsg(gctx));
  ck_assert_int_gt(fla_model_num_params(m), 10);
  fla_adamw_options o2 = {0.9f, 0.95f, 1e-8f, 0.0f};
  fla_adamw *a = NULL;
  ck_assert_int_eq(fla_adamw_new_model(m, &o2, &a), FLA_OK);
  B = 4, T = 64;
  batch_(5, B * T, fla_model_vocab_size(m), ids, tg);
  for (int i = 0; i < B * T; i++) tg[i] = (ids[i] * 7 + 3) % 256;
  double first = 0, last = 0;
  for (int step = 0; step < 40; step++) {
    double l;
    int64_t n;
    fla_model_zero_grad(m);
    ck_assert_int_eq(fla_model_loss_backward(m, ids, tg, B, T, 1.0f / (B * T), &l, &n), FLA_OK);
    fla_model_clip_grad_norm(m, 1.0);
    ck_assert_int_eq(fla_adamw_step(a, 1e-2f), FLA_OK);
    if (step == 0) first = l / n;
    last = l / n;
  }
  printf("test_gpu_train: %s fla_model_create bf16, 40 steps on one batch: loss %.4f -> %.4f\n", name, first, last);
  ck_assert_msg(first > 5.0 && last < 0.6 * first, "%s: loss %.4f -> %.4f", name, first, last);
  float logits[256];
  ck_assert_int_eq(fla_model_forward(m, ids, 1, 1, logits), FLA_UNSUPPORTED);
  fla_adamw_free(a);
  fla_model_free(m);
  fla_ctx_free(gctx);
  fla_ctx_free(cctx);
}
END_TEST

/* An architecture the GPU does not train is refused by name: the tiny
** Transformer's config with qkv_bias (attention projections with biases),
** written to a temporary directory and created there. */
START_TEST(test_unsupported_arch_named) {
  char src[4096], dir[] = "/tmp/fla_gpu_unsup_XXXXXX", path[4200];
  snprintf(src, sizeof src, "%s/config.json", th_tiny_model_dir("transformer"));
  FILE *f = fopen(src, "rb");
  ck_assert_ptr_nonnull(f);
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *at = strstr(text, "\"qkv_bias\": false");
  ck_assert_msg(at != NULL, "the transformer's config.json has no \"qkv_bias\": false to switch");
  memcpy(at, "\"qkv_bias\": true ", strlen("\"qkv_bias\": true ")); /* same length: the comma stays */
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/config.json", dir);
  f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(text, 1, n, f), n);
  fclose(f);
  fla_ctx *gctx = th_cuda_ctx();
  fla_model *m = NULL;
  /* the same config trains on the CPU: the refusal is the GPU's */
  fla_ctx *cctx = th_cpu_ctx();
  ck_assert_msg(fla_model_create_ex(cctx, path, 1, FLA_F32, &m) == FLA_OK, "%s", fla_errmsg(cctx));
  fla_model_free(m);
  m = NULL;
  fla_ctx_free(cctx);
  ck_assert_int_eq(fla_model_create_ex(gctx, path, 1, FLA_BF16, &m), FLA_UNSUPPORTED);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(fla_errmsg(gctx), "transformer") != NULL && strstr(fla_errmsg(gctx), "qkv_bias") != NULL, "%s",
                fla_errmsg(gctx));
  unlink(path);
  rmdir(dir);
  fla_ctx_free(gctx);
}
END_TEST

/* The modules of train_nn.cuh, train_delta.cuh and train_rwkv6.cuh (each
** after train_common.cuh) compile (no GPU needed: NVRTC alone). */
START_TEST(test_kernels_compile) {
  const char *files[] = {"train_nn.cuh", "train_delta.cuh", "train_rwkv6.cuh"};
  for (int i = 0; i < 3; i++) {
    char *src = gpu_train_source(files[i]);
    ck_assert_msg(src != NULL, "%s is not embedded", files[i]);
    th_check_nvrtc_compiles("test_gpu_train", files[i], src);
    free(src);
  }
}
END_TEST

START_TEST(test_skip_no_gpu) {
  printf("test_gpu_train: SKIP: no usable CUDA device (%s)\n", gpu_why_);
}
END_TEST

int main(void) {
  Suite *s = suite_create("gpu_train");
  TCase *tc = tcase_create("gpu_train");
  tcase_set_timeout(tc, 900);
  tcase_add_test(tc, test_kernels_compile);
  int gpu = th_probe_cuda(gpu_why_, sizeof gpu_why_);
  if (!gpu) {
    printf("test_gpu_train: skipped: %s\n", gpu_why_);
    tcase_add_test(tc, test_skip_no_gpu);
  } else {
    tcase_add_test(tc, test_unsupported_arch_named);
    tcase_add_loop_test(tc, test_grads_match_cpu, 0, 2 * NELEM_(models_));
    tcase_add_loop_test(tc, test_accumulate_and_recompute, 0, NELEM_(step_models_));
    tcase_add_loop_test(tc, test_adamw_and_loss_falls, 0, NELEM_(step_models_));
  }
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
