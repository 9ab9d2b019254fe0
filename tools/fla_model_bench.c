/*
** fla-model-bench -- prefill and decode speed of a model, from a checkpoint or
** from a config.json alone (random weights, nothing read from disk).
**
**   fla-model-bench (--config FILE | --model DIR) [--device cuda|cpu] [--dtype bf16|f32]
**                   [--prompt-len N] [--runs R] [--batch B[,B...]] [--decode-steps S]
**                   [--no-graphs] [--bf16-activations]
**   fla-model-bench --kernels       (the decode product's bandwidth, a small kernel's cost)
**
** Prefill: one sequence of --prompt-len random tokens (default 4096) into a
** fresh slot, median wall time of --runs runs after one warm-up (which
** compiles the kernels). Decode: for each batch size B, B slots prefilled with
** 16 tokens, 8 warm-up steps, then --decode-steps steps (default 128) timed one
** by one; tokens/s = B / median step time. Each step is fla_model_decode: the
** ids go up, the [B, vocab] float32 logits come back (part of the time).
** Decode steps replay a CUDA graph unless --no-graphs (FLA_CUDA_GRAPHS=0).
** Exit status: 0, 1 on a library error, 2 for bad arguments.
*/
#include "fla.h"
#include "../models/nn_gpu.h" /* internal: the --kernels probe times the model layer's own kernels */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median_(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* --kernels: the decode product alone (bf16 weights [rows, in], one row of x;
** garbage weights, the time does not depend on them) and a one-row RMSNorm, each queued n times then synchronised: the product's
** bandwidth and the cost of a small kernel back to back on the stream. */
static int kernel_probe_(fla_ctx *ctx) {
  nn_gpu g;
  if (nn_gpu_init(&g, ctx, FLA_BF16) != FLA_OK) return 1;
  /* GLA 1.3B's shapes: the LM head, q|k|v|g|gk0, gate|up (also as SwiGLU), down, o_proj;
  ** each with the warp-per-row kernel (gemv_) and the one-row kernel (gemvk_) */
  const int shapes[5][2] = {{32000, 2048}, {6160, 2048}, {11264, 2048}, {2048, 5632}, {2048, 2048}};
  for (int k = 0; k < 6; k++) {
    int dual = k == 5, rows = shapes[dual ? 2 : k][0], in = shapes[dual ? 2 : k][1], n = 50;
    /* copies of W cycled, 150 MB in all: each launch reads W from memory, not the 50 MB L2 */
    size_t bytes = 2 * (size_t)rows * (size_t)in;
    int copies = (int)(150000000 / bytes) + 1;
    dptr W = nn_gpu_tmp(&g, bytes * (size_t)copies), x = GF(&g, in), y = GF(&g, rows);
    gl_ew(&g, EW_FILL, x, 0, 0, 0, in, in, 0.01f);
    for (int v = 0; v < 2; v++) { /* warp per row, gemvk */
      g.gemvk_off = v == 0;
      gl_sync(&g, "probe");
      double a = 0;
      for (int r = -1; r < n; r++) {
        if (r == 0) gl_sync(&g, "probe"), a = now_();
        gl_gemv_opts op = {.xmode = 0};
        dptr Wr = W + bytes * (size_t)((r + 1) % copies);
        if (dual) gl_gemv_swiglu(&g, x, in, 1, in, Wr, in, rows / 2, rows / 2, y, rows / 2, &op);
        else gl_linear(&g, x, 1, in, Wr, rows, 0, y);
      }
      gl_sync(&g, "probe");
      double t = (now_() - a) / n;
      printf("gemv%s bf16 %5d x %4d, %s%s: %.2f us, %.0f GB/s\n", dual ? " swiglu" : "", rows, in,
             v == 0 ? "warp per row" : "gemvk", g.pdl ? " (PDL)" : "", 1e6 * t,
             2.0 * rows * in / t / 1e9);
    }
    g.gemvk_off = 0;
  }
  dptr x = GF(&g, 2048), w = GF(&g, 2048), y = GF(&g, 2048);
  int n = 2000;
  gl_sync(&g, "probe");
  double a = now_();
  for (int r = 0; r < n; r++) gl_rmsnorm(&g, x, 0, 1, 2048, w, 1e-6f, y);
  gl_sync(&g, "probe");
  printf("rmsnorm 1 x 2048, %d back to back: %.2f us each\n", n, 1e6 * (now_() - a) / n);
  fla_status s = g.status;
  nn_gpu_free(&g);
  return s != FLA_OK;
}

static void usage_(FILE *f) {
  fprintf(f, "usage: fla-model-bench (--config FILE | --model DIR) [--device cuda|cpu] [--dtype bf16|f32]\n"
             "                       [--prompt-len N] [--runs R] [--batch B,...] [--decode-steps S] [--no-graphs]\n"
             "                       [--bf16-activations]\n"
             "       fla-model-bench --kernels\n"
             "  --bf16-activations: bf16 token-mixer inputs and prefill products (FLA_GPU_BF16_ACTIVATIONS=1);\n"
             "                      float32 activations with bf16 weights otherwise\n");
}

static int fail_(fla_ctx *ctx, const char *what) {
  fprintf(stderr, "fla-model-bench: %s: %s\n", what, fla_errmsg(ctx));
  return 1;
}

int main(int argc, char **argv) {
  const char *config = NULL, *model = NULL, *device = "cuda", *dtype = "bf16", *batches = "1,64";
  int prompt_len = 4096, runs = 3, steps = 128, graphs = 1, probe = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-graphs")) {
      graphs = 0;
      continue;
    }
    if (!strcmp(a, "--kernels")) {
      probe = 1;
      continue;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage_(stdout);
      return 0;
    }
    if (!strcmp(a, "--bf16-activations")) {
      setenv("FLA_GPU_BF16_ACTIVATIONS", "1", 1);
      continue;
    }
    if (!v) {
      fprintf(stderr, "fla-model-bench: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (!strcmp(a, "--config")) config = v;
    else if (!strcmp(a, "--model")) model = v;
    else if (!strcmp(a, "--device")) device = v;
    else if (!strcmp(a, "--dtype")) dtype = v;
    else if (!strcmp(a, "--prompt-len")) prompt_len = atoi(v);
    else if (!strcmp(a, "--runs")) runs = atoi(v);
    else if (!strcmp(a, "--batch")) batches = v;
    else if (!strcmp(a, "--decode-steps")) steps = atoi(v);
    else {
      fprintf(stderr, "fla-model-bench: unknown option %s\n", a);
      return 2;
    }
  }
  int dt = !strcmp(dtype, "bf16") ? FLA_BF16 : !strcmp(dtype, "f32") ? FLA_F32 : -2;
  if (probe) {
    fla_ctx *pctx;
    char pwhy[1024] = "";
    if (fla_ctx_create_ex(FLA_BACKEND_CUDA, &pctx, pwhy, sizeof pwhy)) {
      fprintf(stderr, "fla-model-bench: no cuda context: %s\n", pwhy);
      return 1;
    }
    int rc = kernel_probe_(pctx);
    if (rc) fprintf(stderr, "fla-model-bench: --kernels: %s\n", fla_errmsg(pctx));
    fla_ctx_free(pctx);
    return rc;
  }
  if (!config == !model || dt == -2 || prompt_len < 0 || runs < 1 || steps < 1) {
    usage_(stderr);
    return 2;
  }
  if (!graphs) setenv("FLA_CUDA_GRAPHS", "0", 1);
  fla_ctx *ctx;
  char why[1024] = "";
  if (fla_ctx_create_ex(!strcmp(device, "cpu") ? FLA_BACKEND_CPU : FLA_BACKEND_CUDA, &ctx, why, sizeof why)) {
    fprintf(stderr, "fla-model-bench: no %s context: %s\n", device, why);
    return 1;
  }
  fla_model *m;
  double t0 = now_();
  fla_status s = config ? fla_model_load_random(ctx, config, 1, dt, &m) : fla_model_load_ex(ctx, model, dt, &m);
  if (s != FLA_OK) return fail_(ctx, "load");
  int V = fla_model_vocab_size(m);
  printf("model %s (%s), %d layers, hidden %d, vocab %d, %s %s, loaded in %.1f s\n", fla_model_type(m),
         config ? config : model, fla_model_num_layers(m), fla_model_hidden_size(m), V,
         fla_ctx_device_name(ctx), dtype, now_() - t0);
  int nids = prompt_len > 32 ? prompt_len : 32;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)nids);
  float *last = malloc(sizeof(float) * (size_t)V);
  uint64_t r = 88172645463325252ull;
  for (int i = 0; i < nids; i++) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    ids[i] = (int32_t)(r % (uint64_t)V);
  }
  if (prompt_len > 0) {
    fla_cache *c;
    if (fla_cache_new(m, 1, &c)) return fail_(ctx, "cache");
    double *t = malloc(sizeof(double) * (size_t)runs);
    for (int k = -1; k < runs; k++) { /* k = -1: warm-up */
      fla_cache_reset(c, 0);
      double a = now_();
      if (fla_model_prefill(m, c, 0, ids, prompt_len, NULL, last)) return fail_(ctx, "prefill");
      if (k >= 0) t[k] = now_() - a;
    }
    double med = median_(t, runs);
    printf("prefill  B=1  T=%d: %.2f ms (median of %d), %.0f tokens/s\n", prompt_len, 1e3 * med, runs,
           prompt_len / med);
    free(t);
    fla_cache_free(c);
  }
  for (const char *p = batches; *p;) {
    int B = atoi(p);
    if (B < 1) return 2;
    fla_cache *c;
    if (fla_cache_new(m, B, &c)) return fail_(ctx, "cache");
    for (int b = 0; b < B; b++)
      if (fla_model_prefill(m, c, b, ids + b % 8, 16, NULL, last)) return fail_(ctx, "prefill");
    int32_t *next = malloc(sizeof(int32_t) * (size_t)B);
    float *lg = malloc(sizeof(float) * (size_t)B * (size_t)V);
    double *t = malloc(sizeof(double) * (size_t)steps);
    for (int k = -8; k < steps; k++) {
      for (int b = 0; b < B; b++) next[b] = ids[(k + 8 + b) % 16];
      double a = now_();
      if (fla_model_decode(m, c, next, lg)) return fail_(ctx, "decode");
      if (k >= 0) t[k] = now_() - a;
    }
    double med = median_(t, steps), sum = 0;
    for (size_t i = 0; i < (size_t)B * (size_t)V; i++) sum += lg[i] < 0 ? -lg[i] : lg[i];
    /* sum |logits| of the last step: equal across launch variants of the same kernels */
    printf("decode   B=%-3d %s: %.3f ms per step (median of %d, min %.3f), %.0f tokens/s, sum|logits| %.9e\n", B,
           graphs ? "graphs" : "no graphs", 1e3 * med, steps, 1e3 * t[0], B / med, sum);
    free(next);
    free(lg);
    free(t);
    fla_cache_free(c);
    while (*p && *p != ',') p++;
    if (*p == ',') p++;
  }
  free(ids);
  free(last);
  fla_model_free(m);
  fla_ctx_free(ctx);
  return 0;
}
