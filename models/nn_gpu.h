/*
** nn_gpu.h -- models/nn.h on the device: the same math over device pointers
** (uint64_t CUdeviceptr), queued on the CUDA context's stream. Kernels are
** templates/cuda/model_nn.cuh, compiled with NVRTC on first use; products go
** through cuBLAS (loaded with dlopen) or, for a few rows, the project's own
** matrix-vector kernel.
**
** Errors are sticky: a call that fails records its status and message in the
** context and g->status, later calls do nothing, and the caller checks
** g->status once after a sequence of calls (nn.h's functions return nothing
** either). Activations are float32; weight matrices float32 or bf16 (g->wdt).
*/
#ifndef FLA_MODELS_NN_GPU_H
#define FLA_MODELS_NN_GPU_H

#include "fla.h"
#include "nn.h"

#include <stddef.h>
#include <stdint.h>

typedef uint64_t dptr;

enum {
  NK_GEMV_F32, NK_GEMV_BF16, NK_ADD_BIAS, NK_CAST_BF16, NK_CAST_F32, NK_COPY, NK_EW, NK_SWIGLU,
  NK_REPEAT, NK_RMSNORM, NK_GROUPNORM, NK_L2NORM, NK_EMBED_F32, NK_SPLIT_BF16, NK_CONV, NK_ROTARY,
  NK_SHIFT, NK_KV_APPEND, NK_ATTN, NK_ARGMAX, NK_CAST_MULTI, NK_GEMV1_F32, NK_GEMV1_BF16,
  NK_GEMV_SWIGLU_F32, NK_GEMV_SWIGLU_BF16, NK_GEMV1_SWIGLU_F32, NK_GEMV1_SWIGLU_BF16, NK_ADD_HALVES, NK_KV_REGROW,
  NK_GEMVK_F32, NK_GEMVK_BF16, NK_GEMVK_SWIGLU_F32, NK_GEMVK_SWIGLU_BF16, NK_COUNT
};

/* The element-wise maps of the kernel `ew` (model_nn.cuh says what each does). */
typedef enum {
  EW_ADD, EW_ACT, EW_GLA_GATE, EW_HGRN2_GATE, EW_DT_GATE, EW_BETA, EW_NEG_EXP, EW_TANH, EW_SQRELU,
  EW_MUL, EW_SIGM_MUL, EW_LERP, EW_FILL, EW_ADD_COL
} ew_op;

typedef struct nn_gpu {
  fla_ctx *ctx;
  fla_status status;     /* sticky: FLA_OK until a call fails */
  fla_dtype wdt;         /* weight matrices: FLA_F32 or FLA_BF16 */
  int split_x;           /* bf16 products of many rows take x as two bf16 halves (hi + lo) */
  int gemv_rows;         /* products of up to this many rows (<= 8) use the matrix-vector kernel,
                            more go to cuBLAS: 1, or $FLA_GPU_GEMV_ROWS */
  int sms;               /* the device's multiprocessors (grids of the products) */
  int resident[NK_COUNT]; /* blocks of 256 threads a multiprocessor holds, per kernel */
  int gemvk_off;         /* 1: one-row products keep the warp-per-row kernel ($FLA_GPU_GEMVK=0) */
  int pdl;               /* 1: the products and rmsnorm are launched with programmatic dependent
                            launch (sm_90 on; $FLA_GPU_PDL=0 turns it off) */
  void *stream;          /* CUstream */
  void *fn[NK_COUNT];    /* CUfunction */
  void *cublas;          /* cublasHandle_t */
  dptr arena;            /* activations of one forward, bump-allocated */
  size_t arena_cap, arena_used, arena_peak;
  dptr *spill;           /* allocations past the arena, freed at reset */
  int nspill, capspill;
} nn_gpu;

/* Loads the kernels and cuBLAS for ctx (a CUDA context). */
fla_status nn_gpu_init(nn_gpu *g, fla_ctx *ctx, fla_dtype wdt);
void nn_gpu_free(nn_gpu *g);

/* Scratch of the current forward (aligned to 256 bytes); nn_gpu_reset frees
** all of it (and grows the arena to what the last forward needed). */
dptr nn_gpu_tmp(nn_gpu *g, size_t bytes);
#define GF(g, n) nn_gpu_tmp(g, sizeof(float) * (size_t)(n))
void nn_gpu_reset(nn_gpu *g);

/* y[M, out] (+)= x[M, in] W[out, in]^T (+ bias): x rows ldx apart, W rows ldw
** apart (W in g->wdt), y rows ldy apart; accumulate adds to y. With bf16
** weights and M > gemv_rows (cuBLAS, which wants both factors bf16), x is rounded to
** bf16, or with split_x taken as hi + lo (bf16 both): x kept to about 16 bits
** of mantissa for twice the product's arithmetic. Up to GL_SPLIT_STACK_ROWS rows
** (small decode batches, bound by reading W) hi and lo are stacked into one
** product of 2M rows, W read once, and a kernel adds the halves; more rows take
** two products, the second adding into y (at batch 64 of GLA 1.3B, 7 416
** tokens/s against 7 068-7 141 stacked: the extra kernels cost more there). */
#define GL_SPLIT_STACK_ROWS 8
void gl_linear_ex(nn_gpu *g, dptr x, int ldx, int64_t M, int in, dptr W, int ldw, int out, dptr bias,
                  dptr y, int ldy, int accumulate);
void gl_linear(nn_gpu *g, dptr x, int64_t M, int in, dptr W, int out, dptr bias, dptr y);

/* The matrix-vector kernels of decode (M <= 8 rows) with what they fuse (gemv_
** in model_nn.cuh; one row with an input 512 to 12 288 wide takes gemvk_ unless
** gemvk_off): xmode 1 normalises x's rows first (RMSNorm
** with weight nw); epi 1 applies GLA's gate max(logsigmoid(y) / 16, epa) to the
** result; yb (when not 0) receives a bf16 copy of y. The layout is the
** kernel's argument struct. */
typedef struct {
  dptr nw;
  float eps;
  int xmode, up_off, epi;
  float epa;
  dptr yb;
} gl_gemv_opts;
void gl_gemv(nn_gpu *g, dptr x, int ldx, int64_t M, int in, dptr W, int ldw, int out, dptr bias, dptr y,
             int ldy, int accumulate, const gl_gemv_opts *op);
/* y[m, j] = silu(W[j] . x_m) * (W[up_off + j] . x_m) for j < out (SwiGLU of a
** [gate; up] weight in one pass), M <= 8, with op's xmode. */
void gl_gemv_swiglu(nn_gpu *g, dptr x, int ldx, int64_t M, int in, dptr W, int ldw, int out, int up_off,
                    dptr y, int ldy, const gl_gemv_opts *op);
/* dst[k] (bf16) = src[k] (float32), n[k] elements, k < count <= 6: one launch. */
void gl_cast_multi(nn_gpu *g, int count, const dptr *src, const dptr *dst, const int64_t *n);

/* nn.h's functions (x_bf16: x holds bf16, a token mixer's output). */
void gl_rmsnorm(nn_gpu *g, dptr x, int x_bf16, int64_t rows, int dim, dptr w, float eps, dptr y);
void gl_rmsnorm_gated(nn_gpu *g, dptr x, int x_bf16, dptr gate, int64_t rows, int dim, dptr w,
                      float eps, nn_act act, dptr y);
void gl_groupnorm(nn_gpu *g, dptr x, int x_bf16, int64_t rows, int dim, int groups, dptr w, dptr b,
                  float eps, dptr y);
void gl_l2norm(nn_gpu *g, dptr x, int64_t rows, int dim);
void gl_swiglu(nn_gpu *g, dptr gate, dptr up, int ld, int64_t rows, int I, dptr out);
void gl_repeat_heads(nn_gpu *g, dptr x, int64_t rows, int Hkv, int H, int d, dptr y);
void gl_short_conv(nn_gpu *g, dptr x, int64_t B, int64_t T, int C, int W, dptr w, dptr bias, dptr cache,
                   nn_act act, dptr y);
/* pos: device int64 [B], the first position of each sequence. */
void gl_rotary(nn_gpu *g, dptr x, int64_t B, int64_t T, int H, int D, dptr pos, double theta);
void gl_token_shift(nn_gpu *g, dptr x, dptr last, dptr d, int64_t B, int64_t T, int D);
/* x[r] = E[ids[r]], E float32 [vocab, D]. */
void gl_embed(nn_gpu *g, dptr ids, dptr E, dptr x, int64_t rows, int D);
/* A key/value cache is a ring of cap rows of width w: the key of position j
** in slot j % cap (cap >= the rows a step reads: all, or window - 1 + T). */
void gl_kv_append(nn_gpu *g, dptr k, dptr v, dptr kc, dptr vc, int64_t len, int64_t T, int w, int64_t cap);
/* Positions j0 .. j0 + n - 1 from rings (ks, vs) of ocap rows into (kd, vd) of ncap. */
void gl_kv_regrow(nn_gpu *g, dptr ks, dptr vs, int64_t ocap, dptr kd, dptr vd, int64_t ncap, int64_t j0, int64_t n,
                  int w);
void gl_attention(nn_gpu *g, dptr q, int64_t T, int Hq, int d, int64_t qpos0, dptr k, dptr v,
                  int64_t L, int Hkv, int64_t window, int64_t cap, dptr o);
void gl_argmax(nn_gpu *g, dptr logits, int64_t rows, int V, dptr ids);
/* y = f(x, p, p2) element-wise over n entries, columns c = i % width. */
void gl_ew(nn_gpu *g, ew_op op, dptr y, dptr x, dptr p, dptr p2, int64_t n, int width, float a);
/* float32 -> bf16 and back, and a plain copy, of n elements. */
void gl_cast_bf16(nn_gpu *g, dptr x, dptr y, int64_t n);
void gl_cast_f32(nn_gpu *g, dptr x, dptr y, int64_t n);
void gl_copy(nn_gpu *g, dptr x, dptr y, int64_t n);

/* cuBLAS's column-major C[m, n] = op(A) op(B) + beta C, alpha 1, float32
** accumulation; each operand bf16 or float32 (training's products,
** models/train_gpu.c). Returns cuBLAS's status (sticky failure recorded). */
int gl_gemm_raw(nn_gpu *g, int ta, int tb, int m, int n, int k, dptr A, int a_bf16, int lda, dptr B, int b_bf16,
                int ldb, float beta, dptr C, int c_bf16, int ldc);

/* Launches CUfunction fn (named `name` in the error) over gx x gy blocks of
** `block` threads on g's stream; nothing after a failure (sticky status).
** gl_grid_blocks: blocks of 256 for a grid-stride loop over n, at most cap. */
void gl_launch(nn_gpu *g, void *fn, const char *name, unsigned gx, unsigned gy, unsigned block, void **params);
unsigned gl_grid_blocks(int64_t n, int64_t cap);

/* Host <-> device copies and a stream sync, with the sticky status. */
void gl_upload(nn_gpu *g, dptr dst, const void *src, size_t bytes);
void gl_download(nn_gpu *g, void *dst, dptr src, size_t bytes);
void gl_sync(nn_gpu *g, const char *what);
/* The status of the sequence of calls since the last take (FLA_OK, or the
** first failure, whose message is in the context), cleared for the next
** sequence. */
fla_status gl_take_status(nn_gpu *g);
/* Records a failure (when none is recorded yet) and returns g->status. */
fla_status gl_fail(nn_gpu *g, fla_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
