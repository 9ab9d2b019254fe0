/*
** nn_gpu.c -- nn_gpu.h: the model layer's kernels (templates/cuda/model_nn.cuh
** through NVRTC and the context's module cache), cuBLAS through dlopen, and a
** bump allocator for the activations of one forward.
*/
#include "nn_gpu.h"

#include "internal.h"
#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"
#include "stage.h"

#include <dlfcn.h>
#include <glob.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ errors */

fla_status gl_fail(nn_gpu *g, fla_status s, const char *fmt, ...) {
  if (g->status != FLA_OK) return g->status;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  g->status = fla_set_error(g->ctx, s, "%s", msg);
  return g->status;
}

fla_status gl_take_status(nn_gpu *g) {
  fla_status s = g->status;
  g->status = FLA_OK;
  return s;
}

/* ------------------------------------------------------------ cuBLAS */

/* cublas_api.h's values (CUDA 12 and 13). */
#define CUBLAS_OP_N 0
#define CUBLAS_OP_T 1
#define CUDA_R_32F_ 0
#define CUDA_R_16BF_ 14
#define CUBLAS_COMPUTE_32F_ 68
#define CUBLAS_GEMM_DEFAULT_ (-1)

typedef struct {
  int (*create)(void **handle);
  int (*destroy)(void *handle);
  int (*set_stream)(void *handle, void *stream);
  int (*set_workspace)(void *handle, void *ws, size_t bytes);
  int (*gemm_ex)(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A,
                 int Atype, int lda, const void *B, int Btype, int ldb, const void *beta, void *C,
                 int Ctype, int ldc, int compute, int algo);
} cublas_api;

static cublas_api cublas_;
static char cublas_err_[1024];
static int cublas_ok_;
static pthread_once_t cublas_once_ = PTHREAD_ONCE_INIT;

/* $FLA_CUBLAS_LIBRARY, the sonames, the toolkit folders, then pip's wheel
** (nvidia-cublas) under the Python folders. */
static void *cublas_open_(void) {
  const char *env = getenv("FLA_CUBLAS_LIBRARY");
  if (env && *env) return dlopen(env, RTLD_NOW | RTLD_GLOBAL);
  const char *names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  for (int i = 0; i < 3; i++) {
    void *h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (h) return h;
  }
  const char *pats[] = {"/usr/local/cuda/lib64/libcublas.so.1*",
                        "/usr/local/cuda-*/lib64/libcublas.so.1*",
                        "/usr/local/lib/python3*/dist-packages/nvidia/cu*/lib/libcublas.so.1*",
                        "/usr/local/lib/python3*/site-packages/nvidia/cu*/lib/libcublas.so.1*",
                        "/usr/lib/python3*/dist-packages/nvidia/cu*/lib/libcublas.so.1*",
                        "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib/libcublas.so.1*",
                        "/usr/local/lib/python3*/site-packages/nvidia/cublas/lib/libcublas.so.1*"};
  for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
    glob_t gl;
    if (glob(pats[i], 0, NULL, &gl) == 0) {
      for (size_t j = gl.gl_pathc; j-- > 0;) { /* the newest version first */
        void *h = dlopen(gl.gl_pathv[j], RTLD_NOW | RTLD_GLOBAL);
        if (h) {
          globfree(&gl);
          return h;
        }
      }
      globfree(&gl);
    }
  }
  return NULL;
}

static void cublas_load_(void) {
  void *h = cublas_open_();
  if (!h) {
    snprintf(cublas_err_, sizeof cublas_err_, "cuBLAS not found (libcublas.so.13/.12, /usr/local/cuda/lib64, "
             "pip's nvidia-cublas; set FLA_CUBLAS_LIBRARY): %s", dlerror());
    return;
  }
  cublas_.create = (int (*)(void **))dlsym(h, "cublasCreate_v2");
  cublas_.destroy = (int (*)(void *))dlsym(h, "cublasDestroy_v2");
  cublas_.set_stream = (int (*)(void *, void *))dlsym(h, "cublasSetStream_v2");
  cublas_.set_workspace = (int (*)(void *, void *, size_t))dlsym(h, "cublasSetWorkspace_v2");
  *(void **)&cublas_.gemm_ex = dlsym(h, "cublasGemmEx");
  if (!cublas_.create || !cublas_.destroy || !cublas_.set_stream || !cublas_.gemm_ex) {
    snprintf(cublas_err_, sizeof cublas_err_, "cuBLAS: a symbol is missing (cublasCreate_v2, cublasGemmEx, ...)");
    return;
  }
  cublas_ok_ = 1;
}

/* ------------------------------------------------------------ init */

static const char *kernel_names_[NK_COUNT] = {
  "gemv_f32", "gemv_bf16", "add_bias", "cast_to_bf16", "cast_to_f32", "copy_f32", "ew", "swiglu",
  "repeat_heads", "rmsnorm", "groupnorm", "l2norm", "embed_f32", "split_bf16", "short_conv", "rotary",
  "token_shift", "kv_append", "attention", "argmax_rows", "cast_multi", "gemv1_f32",
  "gemv1_bf16", "gemv_swiglu_f32", "gemv_swiglu_bf16",
  "gemv1_swiglu_f32", "gemv1_swiglu_bf16", "add_halves", "kv_regrow",
  "gemvk_f32", "gemvk_bf16", "gemvk_swiglu_f32", "gemvk_swiglu_bf16"};

fla_status nn_gpu_init(nn_gpu *g, fla_ctx *ctx, fla_dtype wdt) {
  memset(g, 0, sizeof *g);
  g->ctx = ctx;
  g->wdt = wdt;
  g->stream = fla_cuda_ctx_stream(ctx);
  const fla_cuda_device_info *info = fla_cuda_ctx_info(ctx);
  g->sms = info && info->sm_count > 0 ? info->sm_count : 132;
  const char *src = fla_template_text("model_nn.cuh");
  if (!src) return gl_fail(g, FLA_ERROR, "templates/cuda/model_nn.cuh is not embedded in this build");
  for (int i = 0; i < NK_COUNT; i += FLA_STAGE_MAX_KERNELS) {
    int n = NK_COUNT - i < FLA_STAGE_MAX_KERNELS ? NK_COUNT - i : FLA_STAGE_MAX_KERNELS;
    char names[FLA_STAGE_MAX_KERNELS][64];
    for (int k = 0; k < n; k++) snprintf(names[k], sizeof names[k], "%s", kernel_names_[i + k]);
    fla_status s = fla_cuda_get_kernels(ctx, "model_nn", src, names, n, (CUfunction *)&g->fn[i]);
    if (s != FLA_OK) return g->status = s;
  }
  const fla_cuda_driver *d = fla_cuda_driver_api();
  for (int k = 0; k < NK_COUNT; k++) {
    int nb = 0;
    if (!d->cuOccupancyMaxActiveBlocksPerMultiprocessor ||
        d->cuOccupancyMaxActiveBlocksPerMultiprocessor(&nb, (CUfunction)g->fn[k], 256, 0) != CUDA_SUCCESS || nb < 1)
      nb = 2;
    g->resident[k] = nb;
  }
  /* Batches of 2 to 8 rows: the 8-row matrix-vector kernel measured 4x slower
  ** per step than one row on the H100 (GLA 1.3B, batch 8: 7.1 ms); cuBLAS
  ** instead (bench/results/2026-11-23-models-gpu.md). */
  const char *gr = getenv("FLA_GPU_GEMV_ROWS");
  g->gemv_rows = gr && atoi(gr) >= 1 && atoi(gr) <= 8 ? atoi(gr) : 1;
  const char *gk = getenv("FLA_GPU_GEMVK");
  g->gemvk_off = gk && gk[0] == '0';
  /* programmatic dependent launch: sm_90 on, unless $FLA_GPU_PDL=0 (the context's rule) */
  g->pdl = fla_cuda_ctx_early(ctx);
  pthread_once(&cublas_once_, cublas_load_);
  if (!cublas_ok_) return gl_fail(g, FLA_UNSUPPORTED, "%s", cublas_err_);
  if (cublas_.create(&g->cublas) != 0) return gl_fail(g, FLA_ERROR, "cublasCreate failed");
  cublas_.set_stream(g->cublas, g->stream);
  return FLA_OK;
}

void nn_gpu_free(nn_gpu *g) {
  if (!g->ctx) return;
  nn_gpu_reset(g);
  if (g->arena) fla_cuda_mem_free(g->ctx, g->arena);
  if (g->cublas) cublas_.destroy(g->cublas);
  free(g->spill);
  memset(g, 0, sizeof *g);
}

/* ------------------------------------------------------------ memory */

dptr nn_gpu_tmp(nn_gpu *g, size_t bytes) {
  bytes = (bytes + 255) & ~(size_t)255;
  if (!bytes) bytes = 256;
  if (g->status != FLA_OK) return 0;
  g->arena_peak += bytes;
  if (g->arena && g->arena_used + bytes <= g->arena_cap) {
    dptr p = g->arena + g->arena_used;
    g->arena_used += bytes;
    return p;
  }
  if (g->nspill == g->capspill) {
    int cap = g->capspill ? 2 * g->capspill : 16;
    dptr *grown = realloc(g->spill, sizeof(dptr) * (size_t)cap);
    if (!grown) return gl_fail(g, FLA_NOMEM, "out of memory"), 0;
    g->spill = grown, g->capspill = cap;
  }
  dptr p = 0;
  fla_status s = fla_cuda_mem_alloc(g->ctx, bytes, &p);
  if (s != FLA_OK) return g->status = s, 0;
  g->spill[g->nspill++] = p;
  return p;
}

void nn_gpu_reset(nn_gpu *g) {
  if (g->nspill) { /* the arena was too small: one block of the whole need next time */
    fla_cuda_sync(g->ctx, "model scratch");
    for (int i = 0; i < g->nspill; i++) fla_cuda_mem_free(g->ctx, g->spill[i]);
    g->nspill = 0;
    if (g->arena_peak > g->arena_cap) {
      if (g->arena) fla_cuda_mem_free(g->ctx, g->arena);
      g->arena = 0;
      size_t cap = g->arena_peak + g->arena_peak / 4;
      if (fla_cuda_mem_alloc(g->ctx, cap, &g->arena) == FLA_OK) g->arena_cap = cap;
      else g->arena_cap = 0, g->arena = 0;
    }
  }
  g->arena_used = 0;
  g->arena_peak = 0;
}

/* ------------------------------------------------------------ launching */

void gl_launch(nn_gpu *g, void *fn, const char *name, unsigned gx, unsigned gy, unsigned block, void **params) {
  if (g->status != FLA_OK || gx == 0 || gy == 0) return;
  const fla_cuda_driver *d = fla_cuda_driver_api();
  CUresult r = d->cuLaunchKernel((CUfunction)fn, gx, gy, 1, block, 1, 1, 0, (CUstream)g->stream, params, NULL);
  if (r != CUDA_SUCCESS)
    gl_fail(g, FLA_ERROR, "kernel %s: cuLaunchKernel grid (%u,%u) block %u: %s", name, gx, gy, block,
            fla_cuda_result_str(r));
}

/* The kernels that wait (pdl_wait_) before reading earlier kernels' output:
** they may be launched while the previous kernel ends. */
static int pdl_kernel_(int k) {
  switch (k) {
  case NK_GEMV_F32: case NK_GEMV_BF16: case NK_GEMV1_F32: case NK_GEMV1_BF16:
  case NK_GEMV_SWIGLU_F32: case NK_GEMV_SWIGLU_BF16: case NK_GEMV1_SWIGLU_F32: case NK_GEMV1_SWIGLU_BF16:
  case NK_GEMVK_F32: case NK_GEMVK_BF16: case NK_GEMVK_SWIGLU_F32: case NK_GEMVK_SWIGLU_BF16:
  case NK_RMSNORM: return 1;
  default: return 0;
  }
}

/* A model kernel with smem bytes of dynamic shared memory, with programmatic
** dependent launch where g->pdl and the kernel waits for it. */
static void launch_smem_(nn_gpu *g, int k, unsigned gx, unsigned gy, unsigned block, unsigned smem,
                         void **params) {
  if (!(g->pdl && pdl_kernel_(k)) && !smem) {
    gl_launch(g, g->fn[k], kernel_names_[k], gx, gy, block, params);
    return;
  }
  if (g->status != FLA_OK || gx == 0 || gy == 0) return;
  const fla_cuda_driver *d = fla_cuda_driver_api();
  CUresult r;
  if (g->pdl && pdl_kernel_(k)) {
    const unsigned grid[3] = {gx, gy, 1}, blk[3] = {block, 1, 1};
    r = fla_cuda_launch_early(d, (CUfunction)g->fn[k], grid, blk, smem, (CUstream)g->stream, params);
  } else {
    r = d->cuLaunchKernel((CUfunction)g->fn[k], gx, gy, 1, block, 1, 1, smem, (CUstream)g->stream, params, NULL);
  }
  if (r != CUDA_SUCCESS)
    gl_fail(g, FLA_ERROR, "kernel %s: launch grid (%u,%u) block %u smem %u: %s", kernel_names_[k], gx, gy, block,
            smem, fla_cuda_result_str(r));
}

static void launch_(nn_gpu *g, int k, unsigned gx, unsigned gy, unsigned block, void **params) {
  launch_smem_(g, k, gx, gy, block, 0, params);
}

unsigned gl_grid_blocks(int64_t n, int64_t cap) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

/* Blocks of 256 for a grid-stride loop over n (the model's kernels). */
static unsigned blocks_(int64_t n) { return gl_grid_blocks(n, 8192); }

#define P(x) (void *)&(x)

void gl_linear_ex(nn_gpu *g, dptr x, int ldx, int64_t M, int in, dptr W, int ldw, int out, dptr bias,
                  dptr y, int ldy, int accumulate) {
  if (g->status != FLA_OK || M <= 0 || out <= 0) return;
  if (M <= g->gemv_rows) { /* decode: a warp per output row, W read once */
    gl_gemv_opts op = {.xmode = 0};
    gl_gemv(g, x, ldx, M, in, W, ldw, out, bias, y, ldy, accumulate, &op);
    return;
  }
  float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  int type = CUDA_R_32F_, mm = (int)M;
  dptr xb = x, yp = y;
  int ldb = ldx, ldc = ldy, halves = 0;
  if (g->wdt == FLA_BF16 && g->split_x) { /* [hi; lo] = x packed, [2M, in] */
    xb = nn_gpu_tmp(g, 4 * (size_t)(M * in));
    void *a[] = {P(x), P(ldx), P(M), P(in), P(xb)};
    launch_(g, NK_SPLIT_BF16, blocks_(M * in), 1, 256, a);
    type = CUDA_R_16BF_, ldb = in;
    if (M <= GL_SPLIT_STACK_ROWS) { /* one product of 2M rows into t, then y (+)= t_hi + t_lo (+ bias) */
      halves = 1, mm = 2 * (int)M, beta = 0.0f, ldc = out;
      yp = GF(g, 2 * M * out);
    }
  } else if (g->wdt == FLA_BF16) { /* cuBLAS wants both factors in bf16: x's rows as they lie */
    int64_t span = (M - 1) * ldx + in;
    xb = nn_gpu_tmp(g, 2 * (size_t)span);
    gl_cast_bf16(g, x, xb, span);
    type = CUDA_R_16BF_;
  }
  if (g->status != FLA_OK) return;
  int r = cublas_.gemm_ex(g->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, mm, in, &alpha, (const void *)W, type,
                          ldw, (const void *)xb, type, ldb, &beta, (void *)yp, CUDA_R_32F_, ldc,
                          CUBLAS_COMPUTE_32F_, CUBLAS_GEMM_DEFAULT_);
  if (r == 0 && g->split_x && g->wdt == FLA_BF16 && !halves) { /* y += W lo */
    float one = 1.0f;
    r = cublas_.gemm_ex(g->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, mm, in, &alpha, (const void *)W, type, ldw,
                        (const void *)(xb + 2 * (size_t)(M * in)), type, ldb, &one, (void *)y, CUDA_R_32F_, ldy,
                        CUBLAS_COMPUTE_32F_, CUBLAS_GEMM_DEFAULT_);
  }
  if (r != 0) {
    gl_fail(g, FLA_ERROR, "cublasGemmEx (%lld x %d x %d, %s): status %d", (long long)M, out, in,
            g->wdt == FLA_BF16 ? "bf16" : "f32", r);
    return;
  }
  if (halves) {
    void *a[] = {P(yp), P(M), P(out), P(bias), P(y), P(ldy), P(accumulate)};
    launch_(g, NK_ADD_HALVES, blocks_(M * out), 1, 256, a);
    return;
  }
  if (bias) {
    int64_t rows = M;
    void *a[] = {P(y), P(bias), P(rows), P(out)};
    if (ldy != out) gl_fail(g, FLA_ERROR, "gl_linear_ex: a bias with a strided output");
    launch_(g, NK_ADD_BIAS, blocks_(M * out), 1, 256, a);
  }
}

/* The one-row kernel gemvk_ (model_nn.cuh) where it applies: M == 1, in a
** multiple of 8 up to 12 288 (x in 48 KiB of shared memory) and at least 512,
** ldw a multiple of 8, W and x 16-byte aligned. Its grid is one wave of
** resident blocks (the occupancy with x's shared memory), at most one block
** per group of GK_RB rows. 0 when it does not apply (the caller launches gemv_). */
static int gemvk_(nn_gpu *g, int m, dptr x, int in, dptr W, int ldw, int out, int dual, void **a) {
  if (g->gemvk_off || m != 1 || in < 512 || in > 12288 || in % 8 || ldw % 8 || (x & 15) || (W & 15)) return 0;
  int rb = dual ? 2 : 4; /* the kernels' GK_RB */
  int k = g->wdt == FLA_BF16 ? (dual ? NK_GEMVK_SWIGLU_BF16 : NK_GEMVK_BF16)
                             : (dual ? NK_GEMVK_SWIGLU_F32 : NK_GEMVK_F32);
  unsigned smem = 4u * (unsigned)in;
  const fla_cuda_driver *d = fla_cuda_driver_api();
  int nb = 0;
  if (!d->cuOccupancyMaxActiveBlocksPerMultiprocessor ||
      d->cuOccupancyMaxActiveBlocksPerMultiprocessor(&nb, (CUfunction)g->fn[k], 256, smem) != CUDA_SUCCESS || nb < 1)
    nb = 2;
  int64_t groups = (out + rb - 1) / rb, cap = (int64_t)nb * g->sms;
  launch_smem_(g, k, (unsigned)(groups < cap ? groups : cap), 1, 256, smem, a);
  return 1;
}

void gl_gemv(nn_gpu *g, dptr x, int ldx, int64_t M, int in, dptr W, int ldw, int out, dptr bias, dptr y,
             int ldy, int accumulate, const gl_gemv_opts *op) {
  if (M > 8) {
    gl_fail(g, FLA_ERROR, "gl_gemv: %lld rows (at most 8)", (long long)M);
    return;
  }
  int m = (int)M;
  gl_gemv_opts o = *op;
  void *a[] = {P(x), P(ldx), P(m), P(in), P(W), P(ldw), P(out), P(bias), P(y), P(ldy), P(accumulate), P(o)};
  if (gemvk_(g, m, x, in, W, ldw, out, 0, a)) return;
  int k = m == 1 ? (g->wdt == FLA_BF16 ? NK_GEMV1_BF16 : NK_GEMV1_F32) : (g->wdt == FLA_BF16 ? NK_GEMV_BF16 : NK_GEMV_F32);
  /* a warp per row at a time, the grid striding over rows: one wave of resident blocks */
  int64_t blocks = (out + 7) / 8, cap = (int64_t)g->resident[k] * g->sms;
  launch_(g, k, (unsigned)(blocks < cap ? blocks : cap), 1, 256, a);
}

void gl_gemv_swiglu(nn_gpu *g, dptr x, int ldx, int64_t M, int in, dptr W, int ldw, int out, int up_off,
                    dptr y, int ldy, const gl_gemv_opts *op) {
  if (M > 8) {
    gl_fail(g, FLA_ERROR, "gl_gemv_swiglu: %lld rows (at most 8)", (long long)M);
    return;
  }
  int m = (int)M, accumulate = 0;
  dptr bias = 0;
  gl_gemv_opts o = *op;
  o.up_off = up_off;
  void *a[] = {P(x), P(ldx), P(m), P(in), P(W), P(ldw), P(out), P(bias), P(y), P(ldy), P(accumulate), P(o)};
  if (gemvk_(g, m, x, in, W, ldw, out, 1, a)) return;
  int k = m == 1 ? (g->wdt == FLA_BF16 ? NK_GEMV1_SWIGLU_BF16 : NK_GEMV1_SWIGLU_F32)
                 : (g->wdt == FLA_BF16 ? NK_GEMV_SWIGLU_BF16 : NK_GEMV_SWIGLU_F32);
  int64_t blocks = (out + 7) / 8, cap = (int64_t)g->resident[k] * g->sms;
  launch_(g, k, (unsigned)(blocks < cap ? blocks : cap), 1, 256, a);
}

void gl_cast_multi(nn_gpu *g, int count, const dptr *src, const dptr *dst, const int64_t *n) {
  struct {
    uint64_t src[6], dst[6];
    int64_t n[6];
    int count;
  } L;
  memset(&L, 0, sizeof L);
  int64_t total = 0;
  if (count > 6) {
    gl_fail(g, FLA_ERROR, "gl_cast_multi: %d arrays (at most 6)", count);
    return;
  }
  for (int k = 0; k < count; k++) L.src[k] = src[k], L.dst[k] = dst[k], L.n[k] = n[k], total += n[k];
  L.count = count;
  void *a[] = {P(L)};
  launch_(g, NK_CAST_MULTI, blocks_(total), 1, 256, a);
}

void gl_linear(nn_gpu *g, dptr x, int64_t M, int in, dptr W, int out, dptr bias, dptr y) {
  gl_linear_ex(g, x, in, M, in, W, in, out, bias, y, out, 0);
}

static unsigned norm_threads_(int dim) { return dim >= 1024 ? 512 : dim >= 256 ? 256 : dim > 64 ? 128 : 64; }

void gl_rmsnorm(nn_gpu *g, dptr x, int x_bf16, int64_t rows, int dim, dptr w, float eps, dptr y) {
  dptr gate = 0;
  int act = 0;
  void *a[] = {P(x), P(x_bf16), P(gate), P(act), P(w), P(y), P(dim), P(eps)};
  launch_(g, NK_RMSNORM, (unsigned)rows, 1, norm_threads_(dim), a);
}

void gl_rmsnorm_gated(nn_gpu *g, dptr x, int x_bf16, dptr gate, int64_t rows, int dim, dptr w,
                      float eps, nn_act act, dptr y) {
  int ac = (int)act;
  void *a[] = {P(x), P(x_bf16), P(gate), P(ac), P(w), P(y), P(dim), P(eps)};
  launch_(g, NK_RMSNORM, (unsigned)rows, 1, norm_threads_(dim), a);
}

void gl_groupnorm(nn_gpu *g, dptr x, int x_bf16, int64_t rows, int dim, int groups, dptr w, dptr b,
                  float eps, dptr y) {
  void *a[] = {P(x), P(x_bf16), P(w), P(b), P(y), P(dim), P(groups), P(eps)};
  launch_(g, NK_GROUPNORM, (unsigned)rows, (unsigned)groups, norm_threads_(dim / groups), a);
}

void gl_l2norm(nn_gpu *g, dptr x, int64_t rows, int dim) {
  void *a[] = {P(x), P(rows), P(dim)};
  launch_(g, NK_L2NORM, (unsigned)((rows + 7) / 8), 1, 256, a);
}

void gl_swiglu(nn_gpu *g, dptr gate, dptr up, int ld, int64_t rows, int I, dptr out) {
  void *a[] = {P(gate), P(up), P(ld), P(out), P(rows), P(I)};
  launch_(g, NK_SWIGLU, blocks_(rows * I), 1, 256, a);
}

void gl_repeat_heads(nn_gpu *g, dptr x, int64_t rows, int Hkv, int H, int d, dptr y) {
  void *a[] = {P(x), P(rows), P(Hkv), P(H), P(d), P(y)};
  launch_(g, NK_REPEAT, blocks_(rows * H * d), 1, 256, a);
}

void gl_short_conv(nn_gpu *g, dptr x, int64_t B, int64_t T, int C, int W, dptr w, dptr bias, dptr cache,
                   nn_act act, dptr y) {
  if (W > 9) {
    gl_fail(g, FLA_UNSUPPORTED, "short convolution of width %d on the GPU (at most 9)", W);
    return;
  }
  int ac = (int)act;
  void *a[] = {P(x), P(B), P(T), P(C), P(W), P(w), P(bias), P(cache), P(ac), P(y)};
  launch_(g, NK_CONV, (unsigned)((B * C + 127) / 128), 1, 128, a);
}

void gl_rotary(nn_gpu *g, dptr x, int64_t B, int64_t T, int H, int D, dptr pos, double theta) {
  float th = (float)theta;
  void *a[] = {P(x), P(B), P(T), P(H), P(D), P(pos), P(th)};
  launch_(g, NK_ROTARY, blocks_(B * T * H * (D / 2)), 1, 256, a);
}

void gl_token_shift(nn_gpu *g, dptr x, dptr last, dptr d, int64_t B, int64_t T, int D) {
  void *a[] = {P(x), P(last), P(d), P(B), P(T), P(D)};
  launch_(g, NK_SHIFT, (unsigned)((B * D + 127) / 128), 1, 128, a);
}

void gl_embed(nn_gpu *g, dptr ids, dptr E, dptr x, int64_t rows, int D) {
  void *a[] = {P(ids), P(E), P(x), P(rows), P(D)};
  launch_(g, NK_EMBED_F32, blocks_(rows * D), 1, 256, a);
}

void gl_kv_append(nn_gpu *g, dptr k, dptr v, dptr kc, dptr vc, int64_t len, int64_t T, int w, int64_t cap) {
  void *a[] = {P(k), P(v), P(kc), P(vc), P(len), P(T), P(w), P(cap)};
  launch_(g, NK_KV_APPEND, blocks_(T * w), 1, 256, a);
}

void gl_kv_regrow(nn_gpu *g, dptr ks, dptr vs, int64_t ocap, dptr kd, dptr vd, int64_t ncap, int64_t j0, int64_t n,
                  int w) {
  void *a[] = {P(ks), P(vs), P(ocap), P(kd), P(vd), P(ncap), P(j0), P(n), P(w)};
  launch_(g, NK_KV_REGROW, blocks_(n * w), 1, 256, a);
}

void gl_attention(nn_gpu *g, dptr q, int64_t T, int Hq, int d, int64_t qpos0, dptr k, dptr v,
                  int64_t L, int Hkv, int64_t window, int64_t cap, dptr o) {
  if (d > 256) {
    gl_fail(g, FLA_UNSUPPORTED, "softmax attention with head dim %d on the GPU (at most 256)", d);
    return;
  }
  void *a[] = {P(q), P(T), P(Hq), P(d), P(qpos0), P(k), P(v), P(L), P(Hkv), P(window), P(cap), P(o)};
  launch_(g, NK_ATTN, (unsigned)((T * Hq + 3) / 4), 1, 128, a);
}

void gl_argmax(nn_gpu *g, dptr logits, int64_t rows, int V, dptr ids) {
  void *a[] = {P(logits), P(V), P(ids)};
  launch_(g, NK_ARGMAX, (unsigned)rows, 1, 256, a);
}

void gl_ew(nn_gpu *g, ew_op op, dptr y, dptr x, dptr p, dptr p2, int64_t n, int width, float a_) {
  int o = (int)op;
  void *a[] = {P(o), P(y), P(x), P(p), P(p2), P(n), P(width), P(a_)};
  launch_(g, NK_EW, blocks_(n), 1, 256, a);
}

void gl_cast_bf16(nn_gpu *g, dptr x, dptr y, int64_t n) {
  void *a[] = {P(x), P(y), P(n)};
  launch_(g, NK_CAST_BF16, blocks_(n), 1, 256, a);
}

void gl_cast_f32(nn_gpu *g, dptr x, dptr y, int64_t n) {
  void *a[] = {P(x), P(y), P(n)};
  launch_(g, NK_CAST_F32, blocks_(n), 1, 256, a);
}

void gl_copy(nn_gpu *g, dptr x, dptr y, int64_t n) {
  void *a[] = {P(x), P(y), P(n)};
  launch_(g, NK_COPY, blocks_(n), 1, 256, a);
}

/* ------------------------------------------------------------ transfers */

void gl_upload(nn_gpu *g, dptr dst, const void *src, size_t bytes) {
  if (g->status != FLA_OK || !bytes) return;
  const fla_cuda_driver *d = fla_cuda_driver_api();
  CUresult r = d->cuMemcpyHtoDAsync ? d->cuMemcpyHtoDAsync((CUdeviceptr)dst, src, bytes, (CUstream)g->stream)
                                    : d->cuMemcpyHtoD((CUdeviceptr)dst, src, bytes);
  if (r != CUDA_SUCCESS) gl_fail(g, FLA_ERROR, "upload of %zu bytes: %s", bytes, fla_cuda_result_str(r));
  /* the source is the caller's: wait until it has been read */
  else if (d->cuMemcpyHtoDAsync) gl_sync(g, "upload");
}

void gl_download(nn_gpu *g, void *dst, dptr src, size_t bytes) {
  if (g->status != FLA_OK || !bytes) return;
  const fla_cuda_driver *d = fla_cuda_driver_api();
  CUresult r = d->cuMemcpyDtoHAsync ? d->cuMemcpyDtoHAsync(dst, (CUdeviceptr)src, bytes, (CUstream)g->stream)
                                    : d->cuMemcpyDtoH(dst, (CUdeviceptr)src, bytes);
  if (r != CUDA_SUCCESS) gl_fail(g, FLA_ERROR, "download of %zu bytes: %s", bytes, fla_cuda_result_str(r));
  else gl_sync(g, "the model's kernels");
}

void gl_sync(nn_gpu *g, const char *what) {
  if (g->status != FLA_OK) return;
  fla_status s = fla_cuda_sync(g->ctx, what);
  if (s != FLA_OK) g->status = s;
}

/* ------------------------------------------------------------ raw products (training) */

int gl_gemm_raw(nn_gpu *g, int ta, int tb, int m, int n, int k, dptr A, int a_bf16, int lda, dptr B, int b_bf16,
                int ldb, float beta, dptr C, int c_bf16, int ldc) {
  if (g->status != FLA_OK) return -1;
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  float alpha = 1.0f;
  int r = cublas_.gemm_ex(g->cublas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
                          (const void *)A, a_bf16 ? CUDA_R_16BF_ : CUDA_R_32F_, lda, (const void *)B,
                          b_bf16 ? CUDA_R_16BF_ : CUDA_R_32F_, ldb, &beta, (void *)C,
                          c_bf16 ? CUDA_R_16BF_ : CUDA_R_32F_, ldc, CUBLAS_COMPUTE_32F_, CUBLAS_GEMM_DEFAULT_);
  if (r != 0)
    gl_fail(g, FLA_ERROR, "cublasGemmEx (%d x %d x %d, ta %d tb %d, bf16 %d%d%d): status %d", m, n, k, ta, tb,
            a_bf16, b_bf16, c_bf16, r);
  return r;
}
