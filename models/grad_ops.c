/*
** grad_ops.c -- what the mixers' backward share: the recipe op run from a
** zero state, forward and backward, the backward of the KV-head repeat, and
** scratch buffers freed together.
*/
#include "internal.h"
#include "train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

grad_scratch grad_scratch_begin(fla_model *m) {
  grad_scratch s = {m, m->arena.top, m->arena.n ? m->arena.used[m->arena.top] : 0};
  return s;
}

float *grad_alloc(grad_scratch *s, int64_t n) {
  model_arena *A = &s->m->arena;
  n = (n + 15) / 16 * 16; /* 64-byte steps */
  for (;;) {
    if (A->top == A->n) { /* a new block on top */
      if (A->n == (int)(sizeof A->p / sizeof A->p[0])) break;
      int64_t cap = 1 << 22, held = 0; /* at least all held so far: few blocks, however many layers */
      for (int t = 0; t < A->n; t++) held += A->cap[t];
      if (cap < held) cap = held;
      if (cap < n) cap = n;
      if (!(A->p[A->n] = malloc(sizeof(float) * (size_t)cap))) break;
      A->cap[A->n] = cap;
      A->used[A->n++] = 0;
    }
    int t = A->top;
    if (A->cap[t] - A->used[t] >= n) {
      float *p = A->p[t] + A->used[t];
      A->used[t] += n;
      return p;
    }
    if (A->used[t] == 0) { /* an empty block too small: grow it */
      free(A->p[t]);
      int64_t cap = n > 2 * A->cap[t] ? n : 2 * A->cap[t];
      A->cap[t] = 0;
      if (!(A->p[t] = malloc(sizeof(float) * (size_t)cap))) break;
      A->cap[t] = cap;
      continue;
    }
    if (++A->top < A->n) A->used[A->top] = 0;
  }
  fla_set_error(s->m->ctx, FLA_NOMEM, "out of memory for %lld floats of backward scratch", (long long)n);
  return NULL;
}

void grad_scratch_free(grad_scratch *s) {
  model_arena *A = &s->m->arena;
  for (int t = s->top + 1; t < A->n; t++) A->used[t] = 0;
  A->top = s->top;
  if (A->n) A->used[A->top] = s->used;
}


void grad_unrepeat_heads(const float *dx, int64_t rows, int Hkv, int H, int d, float *dy) {
  int g = H / Hkv;
  memset(dy, 0, sizeof(float) * (size_t)(rows * Hkv * d));
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) {
      const float *src = dx + (r * H + h) * d;
      float *dst = dy + (r * Hkv + h / g) * d;
      for (int i = 0; i < d; i++) dst[i] += src[i];
    }
}

/* Wraps the n inputs as tensors into args[0..n). */
static fla_status wrap_inputs_(fla_ctx *ctx, const op_input *in, int n, fla_arg *args, fla_tensor **owned) {
  for (int i = 0; i < n; i++) {
    fla_status s = fla_tensor_wrap(ctx, FLA_F32, in[i].ndim, in[i].shape, in[i].data, &owned[i]);
    if (s != FLA_OK) return s;
    args[i].name = in[i].name;
    args[i].tensor = owned[i];
  }
  return FLA_OK;
}

void openblas_set_num_threads(int);

/* The CPU recipe core (runtime/cpu/chunk.c) sets OpenBLAS to one thread on its
** first call (it parallelises over sequences and heads itself) and leaves it
** so: the backward's own products want every thread. Every call into the op
** runs with BLAS on one thread, every product of the backward with all. */
void grad_blas_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }

/* Small calls run on the calling thread (as mixer_run_op does). */
static int threads_for_(const mixer_call *mc) {
  const model_layer *L = mc->L;
  return mc->B * mc->T * L->H * (int64_t)L->K * L->V < (1 << 20) ? 1 : mc->m->ctx->nthreads;
}

fla_status grad_op_forward(const mixer_call *mc, const op_input *in, int n, double scale, float *o) {
  fla_ctx *ctx = mc->m->ctx;
  const model_layer *L = mc->L;
  fla_status s = mixer_bind_op(mc, scale);
  if (s != FLA_OK) return s;
  fla_arg args[8];
  fla_tensor *owned[8] = {0}, *ot = NULL;
  int64_t oshape[4] = {mc->B, mc->T, L->H, L->V};
  s = wrap_inputs_(ctx, in, n, args, owned);
  if (s == FLA_OK) s = fla_tensor_wrap(ctx, FLA_F32, 4, oshape, o, &ot);
  if (s == FLA_OK) {
    int threads = ctx->nthreads;
    ctx->nthreads = threads_for_(mc);
    grad_blas_threads(1);
    s = fla_op_forward(L->op, args, n, ot, NULL);
    ctx->nthreads = threads;
    grad_blas_threads(fla_ctx_threads(ctx));
  }
  for (int i = 0; i < n; i++) fla_tensor_free(owned[i]);
  fla_tensor_free(ot);
  return s;
}

fla_status grad_op_backward(const mixer_call *mc, const op_input *in, int n, double scale,
                            const float *d_o, float *const *d) {
  fla_ctx *ctx = mc->m->ctx;
  const model_layer *L = mc->L;
  fla_status s = mixer_bind_op(mc, scale);
  if (s != FLA_OK) return s;
  fla_arg args[8], grads[8];
  fla_tensor *owned[8] = {0}, *gt[8] = {0}, *dot = NULL;
  char names[8][16];
  int ng = 0;
  int64_t oshape[4] = {mc->B, mc->T, L->H, L->V};
  s = wrap_inputs_(ctx, in, n, args, owned);
  if (s == FLA_OK) s = fla_tensor_wrap(ctx, FLA_F32, 4, oshape, (void *)d_o, &dot);
  for (int i = 0; i < n && s == FLA_OK; i++) {
    if (!d[i]) continue;
    s = fla_tensor_wrap(ctx, FLA_F32, in[i].ndim, in[i].shape, d[i], &gt[ng]);
    snprintf(names[ng], sizeof names[ng], "d%s", in[i].name);
    grads[ng].name = names[ng];
    grads[ng].tensor = gt[ng];
    ng++;
  }
  if (s == FLA_OK) {
    int threads = ctx->nthreads;
    ctx->nthreads = threads_for_(mc);
    grad_blas_threads(1);
    s = fla_op_backward(L->op, args, n, dot, NULL, grads, ng);
    ctx->nthreads = threads;
    grad_blas_threads(fla_ctx_threads(ctx));
  }
  for (int i = 0; i < n; i++) fla_tensor_free(owned[i]);
  for (int i = 0; i < ng; i++) fla_tensor_free(gt[i]);
  fla_tensor_free(dot);
  return s;
}

/* One projection j of x through its optional convolution: keeps a (the
** projection), pre (before the activation) and c (the result). */

void grad_proj_forward(const mixer_call *mc, int j, grad_proj *p, const float *x, nn_act act) {
  const model_config *cfg = &mc->m->cfg;
  int64_t rows = mc->B * mc->T;
  gm_linear_f(x, rows, cfg->hidden_size, p->W, p->C, NULL, p->a);
  if (cfg->use_short_conv)
    gm_conv_f(p->a, mc->B, mc->T, p->C, cfg->conv_size, mc->L->conv[j].w, mc->L->conv[j].b, act, p->pre, p->c);
  else
    gm_act_f(p->a, rows * p->C, act, p->c);
}

/* dc -> da -> dx (+=) and the projection's and convolution's weight gradients. */
void grad_proj_backward(const mixer_call *mc, int j, grad_proj *p, const float *x, nn_act act, float *dx) {
  const fla_model *m = mc->m;
  const model_config *cfg = &m->cfg;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T;
  if (cfg->use_short_conv)
    gm_conv_bwd_f(p->a, mc->B, mc->T, p->C, cfg->conv_size, L->conv[j].w, p->pre, act, p->dc, p->da,
                  model_grad(m, L->conv[j].w), model_grad(m, L->conv[j].b));
  else
    gm_act_bwd_f(p->a, rows * p->C, act, p->dc, p->da);
  gm_linear_bwd_f(x, rows, cfg->hidden_size, p->W, p->C, p->da, dx, 1, model_grad(m, p->W), NULL);
}

fla_status grad_proj_alloc(grad_scratch *sc, grad_proj *p, const float *W, int C, int64_t rows) {
  p->W = W;
  p->C = C;
  p->dc = p->da = NULL;
  if (!(p->a = grad_alloc(sc, rows * C)) || !(p->pre = grad_alloc(sc, rows * C)) || !(p->c = grad_alloc(sc, rows * C)))
    return FLA_NOMEM;
  return FLA_OK;
}

fla_status grad_proj_alloc_grad(grad_scratch *sc, grad_proj *p, int64_t rows) {
  if (!(p->dc = grad_alloc(sc, rows * p->C)) || !(p->da = grad_alloc(sc, rows * p->C))) return FLA_NOMEM;
  return FLA_OK;
}

