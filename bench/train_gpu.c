/*
** train_gpu.c -- training throughput on the GPU: full optimizer steps
** (zero_grad, fla_model_loss_backward over random tokens, clipping, AdamW) of
** a model made from a config.json, timed; tokens/s, model FLOPs utilisation
** against a bf16 matmul rate, device memory, and with --profile where the
** time goes (cuBLAS products, the token mixer's forward and backward, the
** cross-entropy, the rest).
**
**   train_gpu --config bench/configs/gla-340m.json --batch 8 --seq 2048 --steps 5
**             [--dtype bf16|f32] [--recompute] [--profile] [--peak-tflops 693]
**
** Model FLOPs per token (the usual 6 N count, PaLM's MFU): 6 x the weights of
** every product (projections, MLP, LM head; not the input embedding), plus the
** chunked GLA core (chunk C = 64, per head and token: forward 4 K V + 2 C (K +
** V), backward twice that).
*/
#include "fla.h"
#include "model_internal.h"
#include "train_gpu.h"
#include "cuda/cuda_api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  const char *config = "bench/configs/gla-340m.json";
  int64_t B = 8, T = 2048;
  int steps = 5, recompute = 0, profile = 0, dtype = FLA_BF16;
  double peak = 693.0; /* ../shared/ANCHORS.md: bf16 8192^3 matmul on the H100 */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--config") && v) config = v, i++;
    else if (!strcmp(a, "--batch") && v) B = atoll(v), i++;
    else if (!strcmp(a, "--seq") && v) T = atoll(v), i++;
    else if (!strcmp(a, "--steps") && v) steps = atoi(v), i++;
    else if (!strcmp(a, "--peak-tflops") && v) peak = atof(v), i++;
    else if (!strcmp(a, "--dtype") && v) dtype = !strcmp(v, "f32") ? FLA_F32 : FLA_BF16, i++;
    else if (!strcmp(a, "--recompute")) recompute = 1;
    else if (!strcmp(a, "--profile")) profile = 1;
    else {
      fprintf(stderr, "usage: %s [--config F] [--batch B] [--seq T] [--steps N] [--dtype bf16|f32] [--recompute] "
              "[--profile] [--peak-tflops X]\n", argv[0]);
      return 2;
    }
  }
  if (profile) setenv("FLA_TRAIN_PROFILE", "1", 1);
  fla_ctx *ctx = NULL;
  char why[1024];
  if (fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, why, sizeof why) != FLA_OK) {
    printf("train_gpu: SKIP: no CUDA device (%s)\n", why);
    return 0;
  }
  fla_model *m = NULL;
  if (fla_model_create_ex(ctx, config, 1, dtype, &m) != FLA_OK) {
    fprintf(stderr, "train_gpu: %s\n", fla_errmsg(ctx));
    return 1;
  }
  fla_model_set_recompute(m, recompute);
  const model_config *c = &m->cfg;
  const model_layer *L = &m->layers[0];
  double D = c->hidden_size, HK = (double)L->H * L->K, HV = (double)L->H * L->V, I = L->ffn_dim;
  double per_layer = D * (2 * HK + 2 * HV) + D * 16 + 16 * HK + HV * D + 3 * D * I;
  double mm_weights = c->num_layers * per_layer + D * c->vocab_size;
  double core = 3.0 * L->H * (4.0 * L->K * L->V + 2.0 * 64 * (L->K + L->V)) * c->num_layers;
  double flops_tok = 6.0 * mm_weights + core;
  int64_t nweights = m->master_numel;
  printf("train_gpu: %s: %lld weights (%.1f M in products), %d layers, hidden %d, B %lld x T %lld, %s%s\n", config,
         (long long)nweights, mm_weights / 1e6, c->num_layers, c->hidden_size, (long long)B, (long long)T,
         dtype == FLA_BF16 ? "bf16" : "f32", recompute ? ", recompute" : "");
  printf("train_gpu: model FLOPs per token %.3f G (6 N %.3f G + GLA core %.3f G)\n", flops_tok / 1e9,
         6.0 * mm_weights / 1e9, core / 1e9);
  fla_adamw_options o = {0.9f, 0.95f, 1e-8f, 0.1f};
  fla_adamw *opt = NULL;
  if (fla_adamw_new_model(m, &o, &opt) != FLA_OK) {
    fprintf(stderr, "train_gpu: %s\n", fla_errmsg(ctx));
    return 1;
  }
  int64_t n = B * T;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)n), *tg = malloc(sizeof(int32_t) * (size_t)n);
  uint64_t s = 12345;
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = (int32_t)((s >> 33) % (uint64_t)c->vocab_size);
    tg[i] = 0;
  }
  for (int64_t i = 0; i + 1 < n; i++) tg[i] = ids[i + 1];
  double *times = calloc((size_t)steps + 1, sizeof(double));
  size_t free0 = 0, total = 0;
  const fla_cuda_driver *d = fla_cuda_driver_api();
  double t_loss = 0, t_opt = 0; /* over steps 1.. */
  for (int step = 0; step <= steps; step++) { /* step 0: warm-up (compiles, sizes the arena) */
    gpu_train *t = m->gtrain;
    if (step == 1) {
      memset(t->prof_s, 0, sizeof t->prof_s);
      memset(t->prof_k, 0, sizeof t->prof_k);
      memset(t->prof_n, 0, sizeof t->prof_n);
      t->nprof_mm = 0;
    }
    double t0 = now_(), loss = 0;
    int64_t count = 0;
    fla_model_zero_grad(m);
    double t1 = now_();
    fla_status st = fla_model_loss_backward(m, ids, tg, B, T, 1.0f / (float)n, &loss, &count); /* ends with a wait */
    double t2 = now_();
    double norm = st == FLA_OK ? fla_model_clip_grad_norm(m, 1.0) : 0;
    if (st == FLA_OK) st = fla_adamw_step(opt, 3e-4f); /* synchronous: ends with a stream wait */
    double dt = now_() - t0;
    if (step > 0) t_loss += t2 - t1, t_opt += dt - (t2 - t1);
    if (st != FLA_OK) {
      fprintf(stderr, "train_gpu: step %d: %s\n", step, fla_errmsg(ctx));
      return 1;
    }
    times[step] = dt;
    if (d->cuMemGetInfo) d->cuMemGetInfo(&free0, &total);
    printf("train_gpu: step %d: %.3f s (loss_backward %.3f s), loss %.4f, grad norm %.3f, %.0f tokens/s\n", step, dt,
           t2 - t1, loss / count, norm, n / dt);
  }
  qsort(times + 1, (size_t)steps, sizeof(double), cmp_);
  double med = times[1 + steps / 2];
  double tps = n / med, mfu = tps * flops_tok / (peak * 1e12);
  gpu_train *t = m->gtrain;
  double persistent = (double)nweights * (4 + 4 + (dtype == FLA_BF16 ? 2 : 0) + 8);
  printf("train_gpu: mean over the timed steps: loss_backward %.3f s, zero_grad + clipping + AdamW %.3f s\n",
         t_loss / steps, t_opt / steps);
  printf("train_gpu: median step %.3f s: %.0f tokens/s, %.1f TFLOP/s of model FLOPs, MFU %.1f%% of %.0f TFLOP/s\n",
         med, tps, tps * flops_tok / 1e12, 100 * mfu, peak);
  printf("train_gpu: memory: weights+grads+copies+moments %.2f GiB, activations (arena peak) %.2f GiB, "
         "device in use after the last step %.2f of %.2f GiB\n",
         persistent / 1073741824.0, t->peak / 1073741824.0, (total - free0) / 1073741824.0, total / 1073741824.0);
  if (profile) {
    double sum = 0, tot = 0;
    for (int i = 1; i <= steps; i++) tot += times[i];
    const char *names[GPU_PROF_COUNT] = {"cuBLAS products", "token mixer forward (fla_op_forward)",
                                         "token mixer backward (fla_op_backward)", "cross-entropy kernel",
                                         "norms, element-wise, embeddings"};
    printf("train_gpu: profile over %d steps (%.3f s, each product, op and kernel waited for):\n", steps, tot);
    for (int k = 0; k < GPU_PROF_COUNT; k++) {
      sum += t->prof_s[k];
      printf("train_gpu:   %-40s %8.3f s  %5.1f%%\n", names[k], t->prof_s[k], 100 * t->prof_s[k] / tot);
    }
    printf("train_gpu:   %-40s %8.3f s  %5.1f%%\n", "zero_grad + clipping + AdamW", t_opt, 100 * t_opt / tot);
    printf("train_gpu:   %-40s %8.3f s  %5.1f%%\n", "the rest (host: launches, waits, copies)", tot - sum - t_opt,
           100 * (tot - sum - t_opt) / tot);
    for (int k = 0; k < TK_COUNT; k++)
      if (t->prof_n[k])
        printf("train_gpu:     %-22s %5lld launches %8.3f ms each %8.3f s\n", gpu_train_kernel_name(k),
               (long long)t->prof_n[k], 1e3 * t->prof_k[k] / t->prof_n[k], t->prof_k[k]);
    double gemm_flops = 6.0 * mm_weights * n * steps;
    printf("train_gpu:   products ran at %.1f TFLOP/s\n", gemm_flops / t->prof_s[GPU_PROF_GEMM] / 1e12);
    printf("train_gpu:   products by shape (row-major C[M, N] (+)= op(A) op(B), K deep; T: transposed operand):\n");
    for (int i = 0; i < t->nprof_mm; i++) {
      double fl = 2.0 * t->prof_mm[i].M * t->prof_mm[i].N * t->prof_mm[i].K * t->prof_mm[i].n;
      printf("train_gpu:     %6lld x %6lld x %6lld %s%s %s C %s %5lld calls %7.3f ms each %7.3f s %6.1f TFLOP/s\n",
             (long long)t->prof_mm[i].M, (long long)t->prof_mm[i].N, (long long)t->prof_mm[i].K,
             t->prof_mm[i].ta ? "T" : "N", t->prof_mm[i].tb ? "T" : "N", t->prof_mm[i].acc ? "+=" : " =",
             t->prof_mm[i].c_bf ? "bf16" : "f32 ", (long long)t->prof_mm[i].n, 1e3 * t->prof_mm[i].s / t->prof_mm[i].n,
             t->prof_mm[i].s, fl / t->prof_mm[i].s / 1e12);
    }
  }
  fla_adamw_free(opt);
  fla_model_free(m);
  fla_ctx_free(ctx);
  free(ids), free(tg), free(times);
  return 0;
}
