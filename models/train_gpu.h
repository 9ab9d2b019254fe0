/*
** train_gpu.h -- training of the model layer on a CUDA context.
**
** A trainable model on a CUDA context keeps, beside the host master block of
** train_params.c (m->master: N weights then N gradients), one device block of
** each: float32 master weights [N], float32 gradients [N], and the compute
** copy [N] the products read (bf16, or the master itself in float32 mode).
** A host weight pointer p maps to the device by its offset p - m->master, so
** every layer field finds its device weight, gradient and compute copy.
** The host copy is refreshed only by gpu_train_sync_host (checkpoints, tests).
**
** train_gpu.c: the state, the kernels of templates/cuda/train_nn.cuh, the
** activation arena, zeroing, host/device copies, clipping and AdamW.
** train_gpu_loss.c: fla_model_loss_backward on the device (GLA, RetNet).
*/
#ifndef FLA_MODELS_TRAIN_GPU_H
#define FLA_MODELS_TRAIN_GPU_H

#include "model_gpu.h"

enum {
  TK_CAST, TK_COPY, TK_SCALE, TK_EMBED, TK_EMBED_BWD, TK_RMS_FWD, TK_RMS_BWD, TK_SWIGLU, TK_SWIGLU_BWD,
  TK_GLA_GATE, TK_GLA_GATE_BWD, TK_COLSUM, TK_CE, TK_ADAMW, TK_SUMSQ, TK_ROTARY, TK_RMS_FWD_W,
  TK_RMS_BWD_W, TK_COUNT
};

/* What the profile separates: cuBLAS products, the recipe op's forward and
** backward, the cross-entropy kernel, the other kernels of loss_backward
** (norms, element-wise, embeddings). */
enum { GPU_PROF_GEMM, GPU_PROF_OP_FWD, GPU_PROF_OP_BWD, GPU_PROF_CE, GPU_PROF_EW, GPU_PROF_COUNT };
#define GPU_PROF_MM 48 /* product shapes told apart (the rest are summed only) */

typedef struct gpu_train {
  nn_gpu *g;               /* cuBLAS, the stream, the sticky status: the model's */
  nn_gpu own;              /* ... or this one, for a model made by fla_model_create */
  int bf;                  /* compute copies and product inputs in bf16 (else float32) */
  int64_t n;               /* weights */
  dptr master, grad, wc;   /* float32 [n], float32 [n], compute [n] (== master in float32) */
  dptr mom1, mom2;         /* AdamW's moments [n], made by the first step */
  void *fn[TK_COUNT];      /* CUfunction */
  fla_op *op;              /* the token mixer's recipe op, bound for (op_B, op_T) */
  int64_t op_B, op_T;
  /* activations of one loss_backward: a stack with marks */
  dptr arena;
  size_t cap, used, high;
  dptr *spill;             /* blocks past the arena, and the stack position of each */
  size_t *spill_at;
  int nspill, capspill;
  size_t peak;             /* the largest arena need seen, bytes */
  /* FLA_TRAIN_PROFILE=1: the stream is waited for around every product and
  ** recipe op, and the seconds summed per kind (bench/train_gpu.c prints them);
  ** in_loss: inside loss_backward (its other kernels count as GPU_PROF_EW) */
  int profile, in_loss;
  double prof_s[GPU_PROF_COUNT];
  double prof_k[TK_COUNT];  /* GPU_PROF_EW per kernel */
  int64_t prof_n[TK_COUNT];
  /* GPU_PROF_GEMM per product shape: row-major C[M, N] (+)= op(A) op(B), K deep */
  struct { int64_t M, N, K; int ta, tb, acc, c_bf; double s; int64_t n; } prof_mm[GPU_PROF_MM];
  int nprof_mm;
  dptr sumsq;              /* device float64 [1] */
} gpu_train;

/* The first layer whose token mixer is a recipe (not softmax attention): the
** mixer dims and recipe every such layer shares; layers[0] when all layers are
** attention. The first softmax-attention layer, or NULL (hybrids share one
** attention spec: fla's `attn`). */
const model_layer *gpu_train_mixer_layer(const fla_model *m);
const model_layer *gpu_train_attn_layer(const fla_model *m);

/* 1 when m trains on the device. */
static inline int gpu_train_on(const fla_model *m) { return m && m->gtrain != NULL; }

/* Called by fla_model_enable_grad / fla_model_create on a CUDA context after
** the host master block exists: checks the architecture (FLA_UNSUPPORTED
** naming it), makes the device blocks and uploads the weights. */
fla_status gpu_train_enable(fla_model *m, fla_dtype dtype);
/* The architecture check of gpu_train_enable alone (before any memory moves). */
fla_status gpu_train_check(fla_model *m);
void gpu_train_free(fla_model *m);

/* Device pointers of host weight p: float32 master, gradient, compute copy. */
dptr gpu_train_w32(const fla_model *m, const float *p);
dptr gpu_train_grad(const fla_model *m, const float *p);
dptr gpu_train_wc(const fla_model *m, const float *p);

/* The activation stack: gpu_train_alloc never fails alone (sticky status on
** g); gpu_train_release gives back everything allocated after mark. */
dptr gpu_train_alloc(gpu_train *t, size_t bytes);
size_t gpu_train_mark(gpu_train *t);
void gpu_train_release(gpu_train *t, size_t mark);
/* Ends a call: frees spilled blocks and grows the arena to what it needed. */
void gpu_train_reset(gpu_train *t);

/* Profiling: gpu_train_prof_begin waits for the stream and returns the time;
** gpu_train_prof_end waits again and adds the seconds to kind. No-ops unless t->profile. */
double gpu_train_prof_begin(gpu_train *t);
void gpu_train_prof_end(gpu_train *t, int kind, double t0);

/* Launches kernel k over a grid of gx x gy blocks of `block` threads. */
void gpu_train_launch(gpu_train *t, int k, unsigned gx, unsigned gy, unsigned block, void **args);
unsigned gpu_train_blocks(int64_t n);
/* The kernel's name (profiles). */
const char *gpu_train_kernel_name(int k);

/* The kernel wrappers every architecture's loop shares (train_gpu_loss.c,
** train_gpu_delta*.c): y = rmsnorm(x) w (* silu(gate)) over rows of dim, a
** warp per row; with res (x float32) x += res first, written back. */
void gpu_train_rms_fwd(gpu_train *t, dptr x, int x_bf, dptr gate, int g_bf, dptr w, dptr y, int y_bf, int64_t rows,
                       int dim, float eps, dptr res);
/* Its backward: dx (+= when dx_add, else written in dx_bf), dgate (g_bf),
** dw +=; dxc when not 0: the final dx again, in dxc_bf (the next product's input). */
void gpu_train_rms_bwd(gpu_train *t, dptr x, int x_bf, dptr gate, int g_bf, dptr w, dptr dy, int dy_bf, dptr dx,
                       int dx_bf, int dx_add, dptr dgate, dptr dw, int64_t rows, int dim, float eps, dptr dxc,
                       int dxc_bf);
/* a = silu(gate) up over rows of I (gate and up rows ld apart); bwd: gate,
** up := their gradients from a's gradient in `a`. FLA_UNSUPPORTED (sticky)
** when rows x I reaches 2^31. */
void gpu_train_swiglu(gpu_train *t, dptr gate, dptr up, int ld, dptr a, int bf, int64_t rows, int I, int bwd);

/* Row-major products on the device: C[M, N] = op(A) op(B) + beta C, op(A)
** [M, K] (A stored [M, K] with lda, or [K, M] when ta), op(B) [K, N] (B stored
** [K, N] with ldb, or [N, K] when tb); each operand bf16 when its flag is set. */
void gpu_train_mm(gpu_train *t, int ta, int tb, int64_t M, int64_t N, int64_t K, dptr A, int a_bf, int lda,
                  dptr B, int b_bf, int ldb, float beta, dptr C, int c_bf, int ldc);

/* What every architecture's step shares (train_gpu_step.c):
** the recipe op of the mixer layers (gpu_train_mixer_layer) bound into t->op
** for (B, T), rebound only when they change (scale 0: the recipe's default);
** x [rows, D] float32 = the embeddings of ids (int32 on the device), and its
** backward dE += by row; the LM head and the cross-entropy over rows chunk by
** chunk (~256 MiB of float32 logits at a time, never all of [rows, vocab]):
** from hf [rows, D] (compute dtype) and targets (int32, -100 ignored), each
** row's loss into lrows (float32), dhf [rows, D] (float32) written and
** dWlm += grad_scale d(loss)/dWlm. */
fla_status gpu_train_bind_op(fla_model *m, int64_t B, int64_t T, double scale);
/* One input of the recipe op: its name and its gradient's, shape, and the
** device buffers (compute dtype) of the input and, in the backward, its gradient. */
typedef struct {
  const char *name, *gname;
  int ndim;
  const int64_t *shape;
  dptr x, dx;
} gpu_op_input;
/* o = op(in) (forward, d_o 0), or every in[i].dx from d_o (backward); o and
** d_o [B, T, H, V] of the mixer layers; the op bound first (gpu_train_bind_op).
** The time counts as the op's in the profile; an error is kept as the model's
** sticky device status and returned. */
fla_status gpu_train_op_run(fla_model *m, int64_t B, int64_t T, double scale, const gpu_op_input *in, int nin, dptr o,
                            dptr d_o);
void gpu_train_embed(fla_model *m, dptr ids, dptr x, int64_t rows);
void gpu_train_embed_bwd(fla_model *m, dptr ids, dptr dx, int64_t rows);
void gpu_train_head(fla_model *m, int64_t rows, dptr hf, dptr targets, float grad_scale, dptr dhf, dptr lrows);

/* The source of a training module: templates/cuda/train_common.cuh followed
** by the template `file` (train_nn.cuh, train_delta.cuh, ...), malloc'd (the
** caller frees it); NULL when a template is not embedded in this build. */
char *gpu_train_source(const char *file);
/* fn[i] = kernel names[i] (i < n) of that module, compiled with NVRTC on first
** use and cached per context (fn: CUfunction). FLA_ERROR when a template is
** missing; NVRTC's and the driver's errors as fla_cuda_get_kernels. */
fla_status gpu_train_kernels(fla_ctx *ctx, const char *file, const char *const *names, int n, void **fn);

/* The frame of one step (fla_model_loss_backward), the same in every loop:
** gpu_train_step_open clears the sticky status, marks the model in a step,
** synchronizes (making the context current), counts the targets (!= -100),
** uploads ids and targets (int32) to the activation stack and takes a host
** buffer for the row losses; gpu_train_step_close downloads lrows [rows]
** float32 and sums it into *loss_sum (*count = the targets counted) when s is
** FLA_OK, then resets the stack and frees the host buffer; it returns s, or
** the download's error. Close is called once after open, whatever open returned. */
typedef struct {
  int64_t rows, n;  /* rows of the batch, targets counted */
  float *loss_rows; /* host, [rows] */
  dptr ids, targets;
} gpu_train_frame;
fla_status gpu_train_step_open(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t rows,
                               gpu_train_frame *f);
fla_status gpu_train_step_close(fla_model *m, gpu_train_frame *f, fla_status s, dptr lrows, double *loss_sum,
                                int64_t *count);

fla_status gpu_train_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                                   int64_t T, float grad_scale, double *loss_sum, int64_t *count);
void gpu_train_zero_grad(fla_model *m);
fla_status gpu_train_sync_host(fla_model *m);
fla_status gpu_train_sync_device(fla_model *m);
fla_status gpu_train_clip(fla_model *m, double max_norm, double *norm);
/* One AdamW update of every parameter (train/optim.c's formula): decay[i] per
** parameter in fla_model_param's order, t the step count after this one. */
fla_status gpu_train_adamw(fla_model *m, const int *decay, const fla_adamw_options *o, float lr, int64_t t);
/* The moments to (upload 0) or from (upload 1) host arrays, one per parameter. */
fla_status gpu_train_moments(fla_model *m, float *const *mh, float *const *vh, int upload);

#endif
