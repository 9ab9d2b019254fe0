/*
** train_gpu.c -- a trainable model on a CUDA context (train_gpu.h): the device
** blocks of master weights, gradients and compute copies, the kernels of
** templates/cuda/train_nn.cuh, the activation stack, host/device copies,
** gradient clipping and AdamW on the device.
*/
#include "internal.h"
#include "train_gpu.h"
#include "train_gpu_delta.h"

#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"
#include "stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *tk_names_[TK_COUNT] = {
  "tr_cast", "tr_copy", "tr_scale", "tr_embed", "tr_embed_bwd", "tr_rms_fwd", "tr_rms_bwd", "tr_swiglu",
  "tr_swiglu_bwd", "tr_gla_gate", "tr_gla_gate_bwd", "tr_colsum", "tr_ce", "tr_adamw", "tr_sumsq", "tr_rotary",
  "tr_rms_fwd_w", "tr_rms_bwd_w"};

const char *gpu_train_kernel_name(int k) { return k >= 0 && k < TK_COUNT ? tk_names_[k] : "?"; }

/* ------------------------------------------------------------ pointers */

dptr gpu_train_w32(const fla_model *m, const float *p) {
  return p ? m->gtrain->master + (dptr)(p - m->master) * 4 : 0;
}
dptr gpu_train_grad(const fla_model *m, const float *p) {
  return p ? m->gtrain->grad + (dptr)(p - m->master) * 4 : 0;
}
dptr gpu_train_wc(const fla_model *m, const float *p) {
  return p ? m->gtrain->wc + (dptr)(p - m->master) * (m->gtrain->bf ? 2 : 4) : 0;
}

/* ------------------------------------------------------------ launching */

/* training's element-wise kernels loop over up to ~100 M elements: twice the model's cap */
unsigned gpu_train_blocks(int64_t n) { return gl_grid_blocks(n, 16384); }

void gpu_train_launch(gpu_train *t, int k, unsigned gx, unsigned gy, unsigned block, void **args) {
  nn_gpu *g = t->g;
  if (g->status != FLA_OK || gx == 0 || gy == 0) return;
  int prof = t->profile && t->in_loss && k != TK_CE;
  double t0 = prof ? gpu_train_prof_begin(t) : 0;
  gl_launch(g, t->fn[k], tk_names_[k], gx, gy, block, args);
  if (prof) {
    double before = t->prof_s[GPU_PROF_EW];
    gpu_train_prof_end(t, GPU_PROF_EW, t0);
    t->prof_k[k] += t->prof_s[GPU_PROF_EW] - before;
    t->prof_n[k]++;
  }
}

double gpu_train_prof_begin(gpu_train *t) {
  if (!t->profile) return 0;
  gl_sync(t->g, "profile");
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void gpu_train_prof_end(gpu_train *t, int kind, double t0) {
  if (!t->profile) return;
  t->prof_s[kind] += gpu_train_prof_begin(t) - t0;
}

void gpu_train_mm(gpu_train *t, int ta, int tb, int64_t M, int64_t N, int64_t K, dptr A, int a_bf, int lda,
                  dptr B, int b_bf, int ldb, float beta, dptr C, int c_bf, int ldc) {
  /* row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the
  ** operands swap, each keeps its transpose flag */
  double t0 = gpu_train_prof_begin(t), before = t->prof_s[GPU_PROF_GEMM];
  gl_gemm_raw(t->g, tb, ta, (int)N, (int)M, (int)K, B, b_bf, ldb, A, a_bf, lda, beta, C, c_bf, ldc);
  gpu_train_prof_end(t, GPU_PROF_GEMM, t0);
  if (t->profile && t->in_loss) { /* the seconds of this shape */
    int acc = beta != 0.0f, i = 0;
    while (i < t->nprof_mm && !(t->prof_mm[i].M == M && t->prof_mm[i].N == N && t->prof_mm[i].K == K &&
                                t->prof_mm[i].ta == ta && t->prof_mm[i].tb == tb && t->prof_mm[i].acc == acc &&
                                t->prof_mm[i].c_bf == c_bf))
      i++;
    if (i == t->nprof_mm && i < GPU_PROF_MM) {
      memset(&t->prof_mm[i], 0, sizeof t->prof_mm[i]);
      t->prof_mm[i].M = M, t->prof_mm[i].N = N, t->prof_mm[i].K = K, t->prof_mm[i].ta = ta, t->prof_mm[i].tb = tb;
      t->prof_mm[i].acc = acc, t->prof_mm[i].c_bf = c_bf;
      t->nprof_mm++;
    }
    if (i < t->nprof_mm) t->prof_mm[i].s += t->prof_s[GPU_PROF_GEMM] - before, t->prof_mm[i].n++;
  }
}

/* ------------------------------------------------------------ shared kernel wrappers */

void gpu_train_rms_fwd(gpu_train *t, dptr x, int x_bf, dptr gate, int g_bf, dptr w, dptr y, int y_bf, int64_t rows,
                       int dim, float eps, dptr res) {
  void *a[] = {&x, &x_bf, &gate, &g_bf, &w, &y, &y_bf, &rows, &dim, &eps, &res};
  gpu_train_launch(t, TK_RMS_FWD_W, (unsigned)((rows + 7) / 8), 1, 256, a); /* a warp per row */
}

void gpu_train_rms_bwd(gpu_train *t, dptr x, int x_bf, dptr gate, int g_bf, dptr w, dptr dy, int dy_bf, dptr dx,
                       int dx_bf, int dx_add, dptr dgate, dptr dw, int64_t rows, int dim, float eps, dptr dxc,
                       int dxc_bf) {
  int dg_bf = g_bf;
  void *a[] = {&x,     &x_bf,  &gate, &g_bf, &w,  &dy,   &dy_bf, &dx,  &dx_bf, &dx_add,
               &dgate, &dg_bf, &dw,   &rows, &dim, &eps, &dxc,   &dxc_bf};
  if (dim <= 1024 && dim % 8 == 0) /* a warp per row, 4 rows each, 8 columns a lane */
    gpu_train_launch(t, TK_RMS_BWD_W, (unsigned)((rows + 31) / 32), 1, 256, a);
  else
    gpu_train_launch(t, TK_RMS_BWD, (unsigned)((rows + 7) / 8), 1, 256, a);
}

void gpu_train_swiglu(gpu_train *t, dptr gate, dptr up, int ld, dptr a, int bf, int64_t rows, int I, int bwd) {
  if (rows * I >= ((int64_t)1 << 31)) {
    gl_fail(t->g, FLA_UNSUPPORTED, "training on the GPU: %lld tokens x MLP width %d is over 2^31 (the SwiGLU "
            "kernels index in 32 bits): use smaller micro-batches", (long long)rows, I);
    return;
  }
  void *args[] = {&gate, &up, &ld, &a, &bf, &rows, &I}; /* both kernels: a is da in the backward */
  gpu_train_launch(t, bwd ? TK_SWIGLU_BWD : TK_SWIGLU, gpu_train_blocks((rows * I + 7) / 8), 1, 256, args);
}

/* ------------------------------------------------------------ the activation stack */

dptr gpu_train_alloc(gpu_train *t, size_t bytes) {
  nn_gpu *g = t->g;
  bytes = (bytes + 255) & ~(size_t)255;
  if (!bytes) bytes = 256;
  if (g->status != FLA_OK) return 0;
  if (t->used + bytes > t->high) t->high = t->used + bytes;
  if (t->arena && t->used + bytes <= t->cap) {
    dptr p = t->arena + t->used;
    t->used += bytes;
    return p;
  }
  /* past the arena: a block of its own until the call ends (the next call's
  ** arena holds the whole need); the stack position still advances */
  if (t->nspill == t->capspill) {
    int cap = t->capspill ? 2 * t->capspill : 16;
    dptr *grown = realloc(t->spill, sizeof(dptr) * (size_t)cap);
    if (grown) t->spill = grown;
    size_t *at = realloc(t->spill_at, sizeof(size_t) * (size_t)cap);
    if (at) t->spill_at = at;
    if (!grown || !at) return gl_fail(g, FLA_NOMEM, "out of memory"), 0;
    t->capspill = cap;
  }
  dptr p = 0;
  fla_status s = fla_cuda_mem_alloc(g->ctx, bytes, &p);
  if (s != FLA_OK) return g->status = s, 0;
  t->spill_at[t->nspill] = t->used;
  t->spill[t->nspill++] = p;
  t->used += bytes;
  return p;
}

size_t gpu_train_mark(gpu_train *t) { return t->used; }

void gpu_train_release(gpu_train *t, size_t mark) {
  /* blocks spilled above the mark go now (the first call of a size spills
  ** every layer's scratch: freeing them keeps its peak the arena's) */
  if (t->nspill && t->spill_at[t->nspill - 1] >= mark) fla_cuda_sync(t->g->ctx, "training scratch");
  while (t->nspill && t->spill_at[t->nspill - 1] >= mark) fla_cuda_mem_free(t->g->ctx, t->spill[--t->nspill]);
  t->used = mark;
}

void gpu_train_reset(gpu_train *t) {
  nn_gpu *g = t->g;
  if (t->high > t->peak) t->peak = t->high;
  if (t->nspill || t->high > t->cap) {
    fla_cuda_sync(g->ctx, "training scratch");
    for (int i = 0; i < t->nspill; i++) fla_cuda_mem_free(g->ctx, t->spill[i]);
    t->nspill = 0;
    if (t->high > t->cap) {
      if (t->arena) fla_cuda_mem_free(g->ctx, t->arena);
      t->arena = 0, t->cap = 0;
      size_t cap = t->high + t->high / 16;
      if (fla_cuda_mem_alloc(g->ctx, cap, &t->arena) == FLA_OK) t->cap = cap;
      else fla_clear_error(g->ctx); /* spills again next time */
    }
  }
  t->used = 0;
  t->high = 0;
}

/* ------------------------------------------------------------ enable / free */

/* What the device path trains: GLA and RetNet without short convolutions
** (train_gpu_loss.c), DeltaNet, Gated DeltaNet and HGRN2 with or without them
** (train_gpu_delta*.c, train_gpu_hgrn2.c), RWKV-6 (train_gpu_rwkv6*.c); no
** grouped heads. */
const model_layer *gpu_train_mixer_layer(const fla_model *m) {
  for (int l = 0; l < m->cfg.num_layers; l++)
    if (!m->layers[l].is_attn) return &m->layers[l];
  return &m->layers[0];
}

const model_layer *gpu_train_attn_layer(const fla_model *m) {
  for (int l = 0; l < m->cfg.num_layers; l++)
    if (m->layers[l].is_attn) return &m->layers[l];
  return NULL;
}

fla_status gpu_train_check(fla_model *m) {
  const model_config *c = &m->cfg;
  const char *why = NULL;
  int delta = gpu_train_delta_arch(m), rwkv6 = c->arch == ARCH_RWKV6;
  if (c->arch != ARCH_GLA && c->arch != ARCH_RETNET && !delta && !rwkv6)
    why = "only GLA, RetNet, DeltaNet, Gated DeltaNet, KDA, HGRN2, RWKV-6 and the Transformer are trained on the GPU "
          "in this version";
  else if (c->use_short_conv && !delta) why = "short convolutions (use_short_conv) are not trained on the GPU yet";
  else if (c->use_short_conv && c->conv_size > TD_CONV_MAX_W) why = "short convolutions of more than 8 taps are not trained on the GPU yet";
  for (int l = 0; !why && l < c->num_layers; l++) {
    const model_layer *L = &m->layers[l];
    if (rwkv6 && L->is_attn) why = "RWKV-6 with softmax-attention layers is not trained on the GPU yet";
    else if (L->is_attn && L->attn.qkv_bias) why = "attention projections with biases (qkv_bias) are not trained on the GPU yet";
    else if (L->is_attn && L->K > 256) why = "attention heads wider than 256 are not trained on the GPU";
    else if (!L->is_attn && L->Hkv != L->H) why = "grouped key/value heads (num_kv_heads) are not trained on the GPU yet";
  }
  if (!why && m->master && !rwkv6) /* train_params.c packs the weights in load order: gate_proj then up_proj */
    for (int l = 0; l < c->num_layers; l++)
      if (m->layers[l].mlp_up != m->layers[l].mlp_gate + (int64_t)m->layers[l].ffn_dim * c->hidden_size)
        why = "the MLP's gate_proj and up_proj weights are not adjacent (the GPU multiplies them as one matrix)";
  if (c->hidden_size > 16 * 256) why = "hidden sizes above 4096 are not trained on the GPU yet";
  if (why)
    return fla_set_error(m->ctx, FLA_UNSUPPORTED, "training on the GPU: model_type '%s': %s (train it on the CPU)",
                         c->model_type, why);
  return FLA_OK;
}

fla_status gpu_train_enable(fla_model *m, fla_dtype dtype) {
  fla_status s = gpu_train_check(m);
  if (s != FLA_OK) return s;
  gpu_train *t = calloc(1, sizeof *t);
  if (!t) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  m->gtrain = t;
  if (m->gpu) {
    t->g = &m->gpu->g;
  } else {
    t->g = &t->own;
    if ((s = nn_gpu_init(&t->own, m->ctx, dtype)) != FLA_OK) return s;
  }
  t->bf = dtype == FLA_BF16;
  const char *prof = getenv("FLA_TRAIN_PROFILE");
  t->profile = prof && prof[0] == '1';
  t->n = m->master_numel;
  if ((s = gpu_train_kernels(m->ctx, "train_nn.cuh", tk_names_, TK_COUNT, t->fn)) != FLA_OK) return s;
  size_t n4 = 4 * (size_t)t->n;
  if ((s = fla_cuda_mem_alloc(m->ctx, n4, &t->master)) || (s = fla_cuda_mem_alloc(m->ctx, n4, &t->grad)) ||
      (s = fla_cuda_mem_alloc(m->ctx, 8, &t->sumsq)))
    return s;
  if (t->bf && (s = fla_cuda_mem_alloc(m->ctx, 2 * (size_t)t->n, &t->wc))) return s;
  if (!t->bf) t->wc = t->master;
  if ((s = fla_cuda_sync(m->ctx, "training setup")) != FLA_OK) return s;
  return gpu_train_sync_device(m);
}

void gpu_train_free(fla_model *m) {
  gpu_train *t = m->gtrain;
  if (!t) return;
  fla_ctx *ctx = m->ctx;
  fla_cuda_sync(ctx, "training free");
  fla_op_free(t->op);
  for (int i = 0; i < t->nspill; i++) fla_cuda_mem_free(ctx, t->spill[i]);
  free(t->spill);
  free(t->spill_at);
  dptr bufs[] = {t->arena, t->master, t->grad, t->bf ? t->wc : 0, t->mom1, t->mom2, t->sumsq};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) fla_cuda_mem_free(ctx, bufs[i]);
  if (t->g == &t->own) nn_gpu_free(&t->own);
  free(t);
  m->gtrain = NULL;
}

/* ------------------------------------------------------------ copies */

static void refresh_copy_(gpu_train *t) { /* wc = master in bf16 */
  if (!t->bf) return;
  int bf = 1;
  int64_t n = t->n;
  void *a[] = {&t->master, &t->wc, &bf, &n};
  gpu_train_launch(t, TK_CAST, gpu_train_blocks(n), 1, 256, a);
}

fla_status gpu_train_sync_device(fla_model *m) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  gl_upload(g, t->master, m->master, 4 * (size_t)t->n);
  gl_upload(g, t->grad, m->master + t->n, 4 * (size_t)t->n);
  refresh_copy_(t);
  gl_sync(g, "weights upload");
  return gl_take_status(g);
}

fla_status gpu_train_sync_host(fla_model *m) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  gl_download(g, m->master, t->master, 4 * (size_t)t->n);
  gl_download(g, m->master + t->n, t->grad, 4 * (size_t)t->n);
  if (m->lower_bounds_raw) model_hgrn2_lower_bounds(m);
  return gl_take_status(g);
}

void gpu_train_zero_grad(fla_model *m) {
  gpu_train *t = m->gtrain;
  fla_cuda_sync(m->ctx, "zero_grad");
  fla_cuda_memset_d8(m->ctx, t->grad, 0, 4 * (size_t)t->n);
}

/* ------------------------------------------------------------ clipping and AdamW */

fla_status gpu_train_clip(fla_model *m, double max_norm, double *norm) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  double zero = 0, sum = 0;
  gl_upload(g, t->sumsq, &zero, 8);
  int64_t n = t->n;
  void *a[] = {&t->grad, &n, &t->sumsq};
  gpu_train_launch(t, TK_SUMSQ, 1024, 1, 256, a);
  gl_download(g, &sum, t->sumsq, 8);
  *norm = sqrt(sum);
  if (max_norm > 0 && *norm > max_norm) {
    float scale = (float)(max_norm / (*norm + 1e-6)); /* as fla_clip_grad_norm */
    void *b[] = {&t->grad, &n, &scale};
    gpu_train_launch(t, TK_SCALE, gpu_train_blocks(n), 1, 256, b);
  }
  return gl_take_status(g);
}

static fla_status moments_alloc_(fla_model *m) {
  gpu_train *t = m->gtrain;
  if (t->mom1) return FLA_OK;
  size_t bytes = 4 * (size_t)t->n;
  fla_status s = fla_cuda_mem_alloc(m->ctx, bytes, &t->mom1);
  if (s == FLA_OK) s = fla_cuda_mem_alloc(m->ctx, bytes, &t->mom2);
  if (s == FLA_OK) s = fla_cuda_memset_d8(m->ctx, t->mom1, 0, bytes);
  if (s == FLA_OK) s = fla_cuda_memset_d8(m->ctx, t->mom2, 0, bytes);
  return s;
}

fla_status gpu_train_adamw(fla_model *m, const int *decay, const fla_adamw_options *o, float lr, int64_t step) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  fla_status s = moments_alloc_(m);
  if (s != FLA_OK) return s;
  float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
  /* the host formula's constants, rounded as train/optim.c rounds them */
  float bc1 = (float)(1.0 - pow((double)b1, (double)step));
  float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)step));
  float step_size = lr / bc1;
  int bf = t->bf;
  /* one launch per run of parameters adjacent in the master block with the
  ** same decay (the small norms and biases would each be a launch) */
  for (int i = 0, j; i < m->num_params; i = j) {
    const float *p = *m->params[i].slot;
    int64_t n = m->params[i].numel;
    for (j = i + 1; j < m->num_params && !decay[j] == !decay[i] && *m->params[j].slot == p + n; j++)
      n += m->params[j].numel;
    float shrink = decay[i] ? 1.0f - lr * o->weight_decay : 1.0f;
    dptr pp = gpu_train_w32(m, p), gg = gpu_train_grad(m, p), m1 = t->mom1 + (pp - t->master),
         m2 = t->mom2 + (pp - t->master), wc = t->bf ? gpu_train_wc(m, p) : 0;
    void *a[] = {&pp, &gg, &m1, &m2, &wc, &bf, &n, &b1, &b2, &eps, &shrink, &step_size, &bc2_sqrt};
    gpu_train_launch(t, TK_ADAMW, gpu_train_blocks(n), 1, 256, a);
  }
  gl_sync(g, "AdamW");
  return gl_take_status(g);
}

fla_status gpu_train_moments(fla_model *m, float *const *mh, float *const *vh, int upload) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  fla_status s = moments_alloc_(m);
  if (s != FLA_OK) return s;
  for (int i = 0; i < m->num_params; i++) {
    dptr off = gpu_train_w32(m, *m->params[i].slot) - t->master;
    size_t bytes = 4 * (size_t)m->params[i].numel;
    if (upload) {
      gl_upload(g, t->mom1 + off, mh[i], bytes);
      gl_upload(g, t->mom2 + off, vh[i], bytes);
    } else {
      gl_download(g, mh[i], t->mom1 + off, bytes);
      gl_download(g, vh[i], t->mom2 + off, bytes);
    }
  }
  return gl_take_status(g);
}
