/*
** test_gpu_portable.c -- the portable chunked forward (FLA_STAGE_CHUNK_FWD_PORTABLE,
** templates/common/chunk_fwd_portable.h) run on whichever GPU is present,
** CUDA (its CUDA source) or AMD (its HIP source), against the CPU's float64
** recurrence (runtime/cpu/cpu.h) on the same inputs.
**
** Cases: decay none, const (gamma [H]) and scalar (g [tok,H]); f32 and bf16
** inputs; (K, V) in {(64, 64), (100, 72), (128, 128)}; three sequences of
** 1, 100 and 499 tokens (varlen), H = 2, with h0 and ht; the default tile
** configuration and one odd one. Outputs are poisoned with NaN first.
** Tolerance (relative RMS): 1e-4 for f32, 5e-3 for bf16 (o is rounded to bf16).
**
** Without a GPU the test prints "SKIP" with the reason. As of this writing
** it has run on no GPU (docs/hip.md): the CUDA run belongs on the H100.
** Each test runs in its own (forked) process, so the driver is initialised
** only there.
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
#include "generate.h"
#include "harness.h"
#include "hip/hip_backend.h"
#include "internal.h"

/* The few device calls the test needs, for either vendor. */
typedef struct dev_ops {
  const char *vendor;
  fla_target target;
  fla_status (*alloc)(fla_ctx *, size_t, uint64_t *);
  void (*free_)(fla_ctx *, uint64_t);
  fla_status (*upload)(fla_ctx *, uint64_t, const void *, size_t);
  fla_status (*download)(fla_ctx *, void *, uint64_t, size_t);
  fla_status (*memset32)(fla_ctx *, uint64_t, uint32_t, size_t);
  /* Compiles (or finds) the module and launches its one kernel. */
  fla_status (*run)(fla_ctx *, const char *src, const char *kernel, const fla_kernel_launch *,
                    fla_kernel_args *);
  fla_status (*sync)(fla_ctx *, const char *);
} dev_ops;

static fla_status cuda_run_(fla_ctx *ctx, const char *src, const char *kernel,
                            const fla_kernel_launch *l, fla_kernel_args *a) {
  char names[FLA_STAGE_MAX_KERNELS][64];
  snprintf(names[0], 64, "%s", kernel);
  CUfunction fn = NULL;
  fla_status st = fla_cuda_get_kernels(ctx, "chunk_fwd_portable", src, names, 1, &fn);
  return st != FLA_OK ? st : fla_cuda_launch(ctx, fn, l, a);
}

static fla_status hip_run_(fla_ctx *ctx, const char *src, const char *kernel,
                           const fla_kernel_launch *l, fla_kernel_args *a) {
  char names[FLA_STAGE_MAX_KERNELS][64];
  snprintf(names[0], 64, "%s", kernel);
  hipFunction_t fn = NULL;
  fla_status st = fla_hip_get_kernels(ctx, "chunk_fwd_portable", src, names, 1, &fn);
  return st != FLA_OK ? st : fla_hip_launch(ctx, fn, l, a);
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

/* n values of x (rounded to bf16 in place when bf16) uploaded as the input type. */
static uint64_t put(fla_ctx *ctx, const dev_ops *ops, double *x, int64_t n, int bf16) {
  size_t es = bf16 ? 2 : 4;
  void *buf = malloc((size_t)n * es + 1);
  ck_assert_ptr_nonnull(buf);
  for (int64_t i = 0; i < n; i++) {
    if (bf16) {
      uint16_t b = to_bf16((float)x[i]);
      ((uint16_t *)buf)[i] = b;
      x[i] = from_bf16(b);
    } else {
      ((float *)buf)[i] = (float)x[i];
      x[i] = (float)x[i];
    }
  }
  uint64_t d = 0;
  ck_assert_int_eq(ops->alloc(ctx, (size_t)n * es, &d), FLA_OK);
  ck_assert_int_eq(ops->upload(ctx, d, buf, (size_t)n * es), FLA_OK);
  free(buf);
  return d;
}

static double rel_rms(const double *a, const double *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void run_case(fla_ctx *ctx, const dev_ops *ops, int decay, int bf16, int K, int V,
                     const fla_tile_config *cfg) {
  const int H = 2, N = 3;
  const int64_t cu[4] = {0, 1, 101, 600}, T = cu[N];
  const double scale = 1.0 / sqrt((double)K);
  th_rng rng;
  th_seed(&rng, (uint64_t)(decay * 1000 + bf16 * 100 + K + V));
  double *q = malloc(sizeof(double) * (size_t)(T * H * K));
  double *k = malloc(sizeof(double) * (size_t)(T * H * K));
  double *v = malloc(sizeof(double) * (size_t)(T * H * V));
  double *g = malloc(sizeof(double) * (size_t)(T * H));
  double *h0 = malloc(sizeof(double) * (size_t)(N * H * K * V));
  double *o = malloc(sizeof(double) * (size_t)(T * H * V));
  double *ht = malloc(sizeof(double) * (size_t)(N * H * K * V));
  ck_assert(q && k && v && g && h0 && o && ht);
  th_fill_normal(&rng, q, T * H * K, 1.0);
  th_fill_normal(&rng, k, T * H * K, 1.0);
  th_fill_normal(&rng, v, T * H * V, 1.0);
  th_fill_logsigmoid(&rng, g, T * H);
  th_fill_normal(&rng, h0, N * H * K * V, 0.5);
  const double gamma[2] = {log(1 - pow(2, -5)), log(1 - pow(2, -6))};
  if (decay == 1)
    for (int64_t t = 0; t < T; t++)
      for (int h = 0; h < H; h++) g[t * H + h] = (float)gamma[h];

  fla_kernel_args a;
  memset(&a, 0, sizeof a);
  a.q = put(ctx, ops, q, T * H * K, bf16);
  a.k = put(ctx, ops, k, T * H * K, bf16);
  a.v = put(ctx, ops, v, T * H * V, bf16);
  if (decay == 2) a.g = put(ctx, ops, g, T * H, bf16);
  if (decay == 1) {
    double gm[2] = {gamma[0], gamma[1]};
    a.gamma = put(ctx, ops, gm, H, 0);
  }
  a.h0 = put(ctx, ops, h0, N * H * K * V, 0);
  uint64_t dcu = 0;
  ck_assert_int_eq(ops->alloc(ctx, sizeof cu, &dcu), FLA_OK);
  ck_assert_int_eq(ops->upload(ctx, dcu, cu, sizeof cu), FLA_OK);
  a.cu = dcu;
  size_t ob = (size_t)(T * H * V) * (bf16 ? 2 : 4), hb = (size_t)(N * H * K * V) * 4;
  ck_assert_int_eq(ops->alloc(ctx, ob, &a.o), FLA_OK);
  ck_assert_int_eq(ops->alloc(ctx, hb, &a.ht), FLA_OK);
  ck_assert_int_eq(ops->memset32(ctx, a.o, 0x7fc07fc0u, ob / 4), FLA_OK); /* NaN in both */
  ck_assert_int_eq(ops->memset32(ctx, a.ht, 0x7fc00000u, hb / 4), FLA_OK);
  a.total = T, a.N = N, a.H = H, a.scale = (float)scale;

  fla_gen_key key;
  memset(&key, 0, sizeof key);
  key.decay = decay, key.in_bf16 = bf16, key.has_h0 = 1, key.store_ht = 1, key.K = K, key.V = V;
  char *src = NULL;
  char names[FLA_STAGE_MAX_KERNELS][64];
  int nk = 0;
  ck_assert_msg(fla_generate_target(ctx, ops->target, FLA_STAGE_CHUNK_FWD_PORTABLE, &key, cfg,
                                    &src, names, &nk) == FLA_OK, "%s", fla_errmsg(ctx));
  fla_kernel_launch l;
  ck_assert_int_eq(fla_stage_launches(FLA_STAGE_CHUNK_FWD_PORTABLE, &key, cfg, &a, &l), 1);
  ck_assert_msg(ops->run(ctx, src, names[0], &l, &a) == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert_msg(ops->sync(ctx, "chunk_fwd_portable") == FLA_OK, "%s", fla_errmsg(ctx));

  /* the reference: the float64 recurrence on the same (rounded) inputs */
  fla_core_spec s;
  memset(&s, 0, sizeof s);
  s.decay = decay ? FLA_CORE_DECAY_SCALAR : FLA_CORE_DECAY_NONE;
  s.N = N, s.H = H, s.K = K, s.V = V, s.total = T, s.cu = cu, s.scale = scale, s.nthreads = 1;
  fla_core_f64 io;
  memset(&io, 0, sizeof io);
  io.q = q, io.k = k, io.v = v, io.g = decay ? g : NULL, io.h0 = h0, io.o = o, io.ht = ht;
  ck_assert_int_eq(fla_cpu_recurrent_forward(&s, &io), 0);

  void *ob_h = malloc(ob);
  float *ht_h = malloc(hb);
  double *og = malloc(sizeof(double) * (size_t)(T * H * V));
  double *hg = malloc(sizeof(double) * (size_t)(N * H * K * V));
  ck_assert(ob_h && ht_h && og && hg);
  ck_assert_int_eq(ops->download(ctx, ob_h, a.o, ob), FLA_OK);
  ck_assert_int_eq(ops->download(ctx, ht_h, a.ht, hb), FLA_OK);
  for (int64_t i = 0; i < T * H * V; i++)
    og[i] = bf16 ? from_bf16(((uint16_t *)ob_h)[i]) : ((float *)ob_h)[i];
  for (int64_t i = 0; i < N * H * K * V; i++) hg[i] = ht_h[i];
  double eo = rel_rms(og, o, T * H * V), eh = rel_rms(hg, ht, N * H * K * V);
  double tol = bf16 ? 5e-3 : 1e-4;
  printf("gpu_portable: %s decay=%d %s K=%d V=%d BT=%d BV=%d warps=%d: o %.2e ht %.2e\n",
         ops->vendor, decay, bf16 ? "bf16" : "f32", K, V, cfg ? cfg->BT : 0, cfg ? cfg->BV : 0,
         cfg ? cfg->warps : 0, eo, eh);
  ck_assert_msg(eo < tol && eh < tol, "%s decay=%d %s K=%d V=%d: o %.2e ht %.2e (tol %.0e)",
                ops->vendor, decay, bf16 ? "bf16" : "f32", K, V, eo, eh, tol);

  uint64_t bufs[] = {a.q, a.k, a.v, a.g, a.gamma, a.h0, a.cu, a.o, a.ht};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) ops->free_(ctx, bufs[i]);
  free(src), free(ob_h), free(ht_h), free(og), free(hg);
  free(q), free(k), free(v), free(g), free(h0), free(o), free(ht);
}

START_TEST(test_chunk_fwd_portable_vs_cpu) {
  const dev_ops *ops = NULL;
  char why[1200] = "";
  fla_ctx *ctx = open_gpu(&ops, why, sizeof why);
  if (!ctx) {
    printf("test_gpu_portable: SKIP: no GPU (%s)\n", why);
    return;
  }
  printf("test_gpu_portable: on %s (%s)\n", ctx->device_name, ops->vendor);
  const int dims[3][2] = {{64, 64}, {100, 72}, {128, 128}};
  for (int decay = 0; decay <= 2; decay++)
    for (int bf16 = 0; bf16 <= 1; bf16++)
      for (int d = 0; d < 3; d++) run_case(ctx, ops, decay, bf16, dims[d][0], dims[d][1], NULL);
  fla_tile_config odd = {7, 0, 24, 2};
  run_case(ctx, ops, 2, 0, 100, 72, &odd);
  close_gpu(ctx, ops);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("gpu_portable");
  TCase *tc = tcase_create("chunk_fwd_portable");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_chunk_fwd_portable_vs_cpu);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(suite()); }
