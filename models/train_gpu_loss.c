/*
** train_gpu_loss.c -- fla_model_loss_backward on a CUDA context for GLA
** and RetNet (train_backward.c and grad_mixer_linear.c are the CPU's; their comments give
** the math). Residual streams and parameter gradients are float32; the inputs
** of every product are the compute dtype (bf16, or float32), accumulated in
** float32 by cuBLAS; the token mixer through the recipe op (fla_op_forward and
** fla_op_backward on device tensors).
**
** Per layer (x: input, h = n1(x), y: the gated norm's output, a: SwiGLU's):
**   q, k, v, g = h W^T;  z0 = h W0^T;  gk = max(logsigmoid(z0 W1^T + b) / 16, floor)
**   o = gla(q, k, v, gk);  y = rmsnorm(o) w silu(g) per head;  xm = x + y Wo^T
**   (RetNet: no gk, rotary on q and k, o = retention(q, k, v); without the
**   output gate y = rmsnorm(o) w)
**   h2 = n2(xm);  a = silu(h2 Wg^T) (h2 Wu^T);  x' = xm + a Wd^T
** Kept between the forward and the backward (one set refilled per layer with
** recompute): x, xm (float32), h, q, k, v, gk, g, o, y, h2, gu = [gate | up], a
** (compute dtype), z0 (float32). z1 is recomputed inside the gate's kernels.
** mlp.gate_proj and mlp.up_proj are adjacent weights [2 I, D]: one product
** each way for both. The gradient dx leaves every norm backward also in the
** compute dtype (dxb), the input of the products above it. xm's residual add
** happens inside the MLP's norm (the product writes y Wo^T, the norm adds x).
** The head: hf = nf(x_L), then per chunk of rows: logits = hf Wlm^T (float32),
** the cross-entropy's gradient d (compute dtype), dhf = d Wlm, dWlm += d^T hf.
*/
#include "internal.h"
#include "train_gpu.h"
#include "train_gpu_attn_layer.h"

#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  dptr x, xm, h, q, k, v, gk, g, o, y, h2, gu, a, z0;
  gta_kept at; /* a hybrid's softmax-attention layers (fla's `attn`) */
} kept_;

typedef struct {
  fla_model *m;
  gpu_train *t;
  nn_gpu *g;
  int64_t B, T, rows;
  int D, H, K, V, I, bf;
  int gla, gated;  /* GLA's gate (else RetNet: rotary); the output gate g */
  size_t es;  /* bytes per compute element */
  float eps, floor_;
} run_;

#define CB(r, n) gpu_train_alloc((r)->t, (r)->es * (size_t)(n)) /* compute buffer */
#define FB(r, n) gpu_train_alloc((r)->t, 4 * (size_t)(n))       /* float32 buffer */

/* ------------------------------------------------------------ kernel wrappers */

static void cast_(run_ *r, dptr x, dptr y, int64_t n) {
  int bf = r->bf;
  void *a[] = {&x, &y, &bf, &n};
  gpu_train_launch(r->t, TK_CAST, gpu_train_blocks(n), 1, 256, a);
}

static void copy_(run_ *r, dptr x, dptr y, int64_t n, int add) {
  void *a[] = {&x, &y, &n, &add};
  gpu_train_launch(r->t, TK_COPY, gpu_train_blocks(n), 1, 256, a);
}

/* RetNet's rotary on q or k [rows, H * K] in place; sign -1: its backward */
static void rotary_(run_ *r, dptr x, float sign) {
  int bf = r->bf, H = r->H, K = r->K;
  float theta = 10000.0f;
  void *a[] = {&x, &bf, &r->B, &r->T, &H, &K, &theta, &sign};
  gpu_train_launch(r->t, TK_ROTARY, gpu_train_blocks(r->rows * H * (K / 2)), 1, 256, a);
}

/* y = rmsnorm(x) w (* silu(gate)), rows of dim; with res (x float32): x += res first */
static void rms_fwd_res_(run_ *r, dptr x, int x_bf, dptr gate, dptr w, dptr y, int y_bf, int64_t rows, int dim,
                         dptr res) {
  gpu_train_rms_fwd(r->t, x, x_bf, gate, r->bf, w, y, y_bf, rows, dim, r->eps, res);
}
static void rms_fwd_(run_ *r, dptr x, int x_bf, dptr gate, dptr w, dptr y, int y_bf, int64_t rows, int dim) {
  rms_fwd_res_(r, x, x_bf, gate, w, y, y_bf, rows, dim, 0);
}

/* its backward: dx (= or +=), dgate, dw +=; dxc (when not 0): the final dx in the compute dtype */
static void rms_bwd_(run_ *r, dptr x, int x_bf, dptr gate, dptr w, dptr dy, int dy_bf, dptr dx, int dx_bf, int dx_add,
                     dptr dgate, dptr dw, int64_t rows, int dim, dptr dxc) {
  gpu_train_rms_bwd(r->t, x, x_bf, gate, r->bf, w, dy, dy_bf, dx, dx_bf, dx_add, dgate, dw, rows, dim, r->eps, dxc,
                    r->bf);
}

/* y[rows, out] (+)= x[rows, in] W[out, in]^T, x and W compute, y float32 or compute */
static void lin_(run_ *r, dptr x, int in, dptr W, int out, dptr y, int y_bf, float beta) {
  gpu_train_mm(r->t, 0, 1, r->rows, out, in, x, r->bf, in, W, r->bf, in, beta, y, y_bf, out);
}
/* dW[out, in] += dy^T x;  dx[rows, in] (+)= dy W (float32) */
static void lin_bwd_(run_ *r, dptr x, int in, dptr W, int out, dptr dy, dptr dW, dptr dx, float beta) {
  gpu_train_mm(r->t, 1, 0, out, in, r->rows, dy, r->bf, out, x, r->bf, in, 1.0f, dW, 0, in);
  if (dx) gpu_train_mm(r->t, 0, 0, r->rows, in, out, dy, r->bf, out, W, r->bf, in, beta, dx, 0, in);
}

/* ------------------------------------------------------------ the recipe op */

/* o = gla(q, k, v, gk) (forward), or dq, dk, dv, dgk from d_o (backward) */
static fla_status op_run_(run_ *r, const kept_ *kp, dptr o, dptr d_o, dptr dq, dptr dk, dptr dv, dptr dgk) {
  int64_t sk[4] = {r->B, r->T, r->H, r->K}, sv[4] = {r->B, r->T, r->H, r->V};
  gpu_op_input in[4] = {{"q", "dq", 4, sk, kp->q, dq}, {"k", "dk", 4, sk, kp->k, dk}, {"v", "dv", 4, sv, kp->v, dv},
                        {"gk", "dgk", 4, sk, kp->gk, dgk}};
  return gpu_train_op_run(r->m, r->B, r->T, 0.0, in, r->gla ? 4 : 3, o, d_o);
}

/* ------------------------------------------------------------ one layer */

/* a = silu(gate) up from gu (bwd: [dgate | dup] over gu from da = a's gradient);
** a thread per 8 outputs */
static void swiglu_(run_ *r, dptr gu, dptr a, int bwd) {
  gpu_train_swiglu(r->t, gu, gu + (dptr)r->I * r->es, 2 * r->I, a, r->bf, r->rows, r->I, bwd);
}

/* GLA's gate: gk from z0 (fwd), or dz1 from dgk (bwd), z1 = z0 W1^T + b inside */
static void gate_(run_ *r, const model_layer *L, dptr z0, dptr gk_or_dgk, dptr dz1) {
  fla_model *m = r->m;
  int HK = r->H * r->K, bf = r->bf;
  int64_t rows = r->rows;
  float lo = r->floor_;
  dptr W1 = gpu_train_w32(m, L->gk_proj1), b = gpu_train_w32(m, L->gk_proj1_b);
  unsigned gx = (unsigned)((HK + 127) / 128), gy = (unsigned)((rows + 7) / 8 < 65535 ? (rows + 7) / 8 : 65535); /* GATE_ROWS */
  if (!dz1) {
    void *a[] = {&z0, &W1, &b, &HK, &gk_or_dgk, &bf, &rows, &lo};
    gpu_train_launch(r->t, TK_GLA_GATE, gx, gy, 128, a);
  } else {
    void *a[] = {&z0, &W1, &b, &HK, &gk_or_dgk, &bf, &dz1, &rows, &lo};
    gpu_train_launch(r->t, TK_GLA_GATE_BWD, gx, gy, 128, a);
  }
}

static void mixer_fwd_(run_ *r, const model_layer *L, kept_ *kp);

/* The layer's forward from kp->x: fills kp, writes the layer's output to xout. */
static void layer_fwd_(run_ *r, const model_layer *L, kept_ *kp, dptr xout) {
  fla_model *m = r->m;
  int64_t rows = r->rows;
  int D = r->D, I = r->I, bf = r->bf;
  dptr h = kp->h;
  rms_fwd_(r, kp->x, 0, 0, gpu_train_w32(m, L->attn_norm_w), h, bf, rows, D);
  /* xm = mixer(h), then xm += x inside the MLP's norm (no copy of x) */
  if (L->is_attn) gta_fwd(m, L, r->B, r->T, h, &kp->at, kp->xm, 0.0f);
  else mixer_fwd_(r, L, kp);
  rms_fwd_res_(r, kp->xm, 0, 0, gpu_train_w32(m, L->mlp_norm_w), kp->h2, bf, rows, D, kp->x);
  /* MLP: gate and up in one product (adjacent weights) */
  lin_(r, kp->h2, D, gpu_train_wc(m, L->mlp_gate), 2 * I, kp->gu, bf, 0.0f);
  swiglu_(r, kp->gu, kp->a, 0);
  copy_(r, kp->xm, xout, rows * D, 0);
  lin_(r, kp->a, I, gpu_train_wc(m, L->mlp_down), D, xout, 0, 1.0f);
}

/* The recipe token mixer of layer_fwd_: q, k, v (g, gk) from kp->h, o, the
** gated norm's y, and xm = y Wo^T. */
static void mixer_fwd_(run_ *r, const model_layer *L, kept_ *kp) {
  fla_model *m = r->m;
  int64_t rows = r->rows;
  int D = r->D, HK = r->H * r->K, HV = r->H * r->V, bf = r->bf;
  dptr h = kp->h;
  lin_(r, h, D, gpu_train_wc(m, L->q_proj), HK, kp->q, bf, 0.0f);
  lin_(r, h, D, gpu_train_wc(m, L->k_proj), HK, kp->k, bf, 0.0f);
  lin_(r, h, D, gpu_train_wc(m, L->v_proj), HV, kp->v, bf, 0.0f);
  if (r->gated) lin_(r, h, D, gpu_train_wc(m, L->g_proj), HV, kp->g, bf, 0.0f);
  if (!r->gla) {
    rotary_(r, kp->q, 1.0f);
    rotary_(r, kp->k, 1.0f);
  } else {
    lin_(r, h, D, gpu_train_wc(m, L->gk_proj0), 16, kp->z0, 0, 0.0f);
    gate_(r, L, kp->z0, kp->gk, 0);
  }
  op_run_(r, kp, kp->o, 0, 0, 0, 0, 0);
  rms_fwd_(r, kp->o, bf, kp->g, gpu_train_w32(m, L->out_norm), kp->y, bf, rows * r->H, r->V);
  lin_(r, kp->y, HV, gpu_train_wc(m, L->o_proj), D, kp->xm, 0, 0.0f);
}

/* GLA's gate backward: dz1 = dgk / 16 sigmoid(-z1) (z1 recomputed inside),
** dW1, db, dz0, and the first projection's dW0 += dz0^T h, dh = dz0 W0 (written). */
static void gate_bwd_(run_ *r, const model_layer *L, const kept_ *kp, dptr dgk, dptr dh) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows;
  int D = r->D, HK = r->H * r->K;
  dptr dz1 = FB(r, rows * HK), dz0 = FB(r, rows * 16), dz0b = CB(r, rows * 16);
  dptr W1 = gpu_train_w32(m, L->gk_proj1);
  gate_(r, L, kp->z0, dgk, dz1);
  gpu_train_mm(t, 1, 0, HK, 16, rows, dz1, 0, HK, kp->z0, 0, 16, 1.0f, gpu_train_grad(m, L->gk_proj1), 0, 16);
  {
    dptr db = gpu_train_grad(m, L->gk_proj1_b);
    void *args[] = {&dz1, &rows, &HK, &db};
    gpu_train_launch(t, TK_COLSUM, (unsigned)((HK + 31) / 32), (unsigned)((rows + 255) / 256), 256, args);
  }
  gpu_train_mm(t, 0, 0, rows, 16, HK, dz1, 0, HK, W1, 0, 16, 0.0f, dz0, 0, 16);
  cast_(r, dz0, dz0b, rows * 16);
  lin_bwd_(r, kp->h, D, gpu_train_wc(m, L->gk_proj0), 16, dz0b, gpu_train_grad(m, L->gk_proj0), dh, 0.0f);
}

static void mixer_bwd_(run_ *r, const model_layer *L, kept_ *kp, dptr dxb, dptr dh);

/* dx: the gradient of the layer's output in, of its input out (float32);
** dxb: the same in the compute dtype, in and out (the norms' backward write it). */
static void layer_bwd_(run_ *r, const model_layer *L, kept_ *kp, dptr dx, dptr dxb) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows;
  int D = r->D, I = r->I, bf = r->bf;
  size_t mark = gpu_train_mark(t);
  dptr dh = FB(r, rows * D);
  /* MLP: dWd, da, [dgate | dup] in place over gu, then both projections at once */
  dptr da = CB(r, rows * I);
  lin_bwd_(r, kp->a, I, gpu_train_wc(m, L->mlp_down), D, dxb, gpu_train_grad(m, L->mlp_down), 0, 0.0f);
  gpu_train_mm(t, 0, 0, rows, I, D, dxb, bf, D, gpu_train_wc(m, L->mlp_down), bf, I, 0.0f, da, bf, I);
  swiglu_(r, kp->gu, da, 1);
  lin_bwd_(r, kp->h2, D, gpu_train_wc(m, L->mlp_gate), 2 * I, kp->gu, gpu_train_grad(m, L->mlp_gate), dh, 0.0f);
  rms_bwd_(r, kp->xm, 0, 0, gpu_train_w32(m, L->mlp_norm_w), dh, 0, dx, 0, 1, 0, gpu_train_grad(m, L->mlp_norm_w),
           rows, D, dxb);
  /* token mixer: dh written */
  if (L->is_attn) gta_bwd(m, L, r->B, r->T, kp->h, &kp->at, dxb, dh, 0.0f);
  else mixer_bwd_(r, L, kp, dxb, dh);
  rms_bwd_(r, kp->x, 0, 0, gpu_train_w32(m, L->attn_norm_w), dh, 0, dx, 0, 1, 0, gpu_train_grad(m, L->attn_norm_w),
           rows, D, dxb);
  gpu_train_release(t, mark);
}

/* The recipe token mixer's backward from dxb (the gradient of xm, compute
** dtype): every weight gradient and dh (written). */
static void mixer_bwd_(run_ *r, const model_layer *L, kept_ *kp, dptr dxb, dptr dh) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows;
  int D = r->D, HK = r->H * r->K, HV = r->H * r->V, bf = r->bf;
  dptr dy = FB(r, rows * HV), dO = CB(r, rows * HV), dg = CB(r, rows * HV);
  gpu_train_mm(t, 1, 0, D, HV, rows, dxb, bf, D, kp->y, bf, HV, 1.0f, gpu_train_grad(m, L->o_proj), 0, HV);
  gpu_train_mm(t, 0, 0, rows, HV, D, dxb, bf, D, gpu_train_wc(m, L->o_proj), bf, HV, 0.0f, dy, 0, HV);
  rms_bwd_(r, kp->o, bf, kp->g, gpu_train_w32(m, L->out_norm), dy, 0, dO, bf, 0, dg, gpu_train_grad(m, L->out_norm),
           rows * r->H, r->V, 0);
  dptr dq = CB(r, rows * HK), dk = CB(r, rows * HK), dv = CB(r, rows * HV), dgk = CB(r, rows * HK);
  op_run_(r, kp, 0, dO, dq, dk, dv, dgk);
  if (!r->gla) {
    rotary_(r, dq, -1.0f);
    rotary_(r, dk, -1.0f);
  } else {
    gate_bwd_(r, L, kp, dgk, dh);
  }
  /* the projections of h: dh = sum_j d_j W_j, dW_j += d_j^T h */
  dptr h = kp->h;
  lin_bwd_(r, h, D, gpu_train_wc(m, L->q_proj), HK, dq, gpu_train_grad(m, L->q_proj), dh, r->gla ? 1.0f : 0.0f);
  lin_bwd_(r, h, D, gpu_train_wc(m, L->k_proj), HK, dk, gpu_train_grad(m, L->k_proj), dh, 1.0f);
  lin_bwd_(r, h, D, gpu_train_wc(m, L->v_proj), HV, dv, gpu_train_grad(m, L->v_proj), dh, 1.0f);
  if (r->gated) lin_bwd_(r, h, D, gpu_train_wc(m, L->g_proj), HV, dg, gpu_train_grad(m, L->g_proj), dh, 1.0f);
}

/* ------------------------------------------------------------ the whole model */

static void kept_alloc_(run_ *r, kept_ *kp, dptr x) {
  int64_t rows = r->rows;
  int HK = r->H * r->K, HV = r->H * r->V;
  kp->x = x;
  kp->xm = FB(r, rows * r->D);
  kp->h = CB(r, rows * r->D), kp->h2 = CB(r, rows * r->D);
  kp->q = CB(r, rows * HK), kp->k = CB(r, rows * HK), kp->v = CB(r, rows * HV), kp->o = CB(r, rows * HV);
  kp->y = CB(r, rows * HV);
  kp->g = r->gated ? CB(r, rows * HV) : 0;
  kp->gk = r->gla ? CB(r, rows * HK) : 0;
  kp->z0 = r->gla ? FB(r, rows * 16) : 0;
  kp->gu = CB(r, rows * 2 * r->I), kp->a = CB(r, rows * r->I);
  const model_layer *La = gpu_train_attn_layer(r->m);
  if (La) gta_kept_alloc(r->m, La, rows, &kp->at);
}

fla_status gpu_train_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B, int64_t T,
                                   float grad_scale, double *loss_sum, int64_t *count) {
  gpu_train *t = m->gtrain;
  nn_gpu *g = t->g;
  const model_config *cfg = &m->cfg;
  const model_layer *L0 = gpu_train_mixer_layer(m);
  run_ r = {.m = m, .t = t, .g = g, .B = B, .T = T, .rows = B * T, .D = cfg->hidden_size, .H = L0->H, .K = L0->K,
            .V = L0->V, .I = L0->ffn_dim, .bf = t->bf, .gla = cfg->arch == ARCH_GLA, .gated = L0->g_proj != NULL,
            .es = t->bf ? 2 : 4, .eps = (float)cfg->norm_eps,
            .floor_ = isnan(cfg->clamp_min) ? -INFINITY : (float)cfg->clamp_min};
  int NL = cfg->num_layers, D = r.D;
  int64_t rows = r.rows;
  gpu_train_frame f;
  fla_status s = gpu_train_step_open(m, ids, targets, rows, &f);
  if (s == FLA_OK) s = gpu_train_bind_op(m, B, T, 0.0);
  kept_ *kp = calloc((size_t)NL, sizeof *kp);
  if (s == FLA_OK && !kp) s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  dptr lrows = 0;
  if (s != FLA_OK) goto done;
  const dptr dids = f.ids, dtg = f.targets;
  /* xs[l]: the residual stream at layer l's input; xs[NL] the final one */
  dptr xs = FB(&r, (NL + 1) * rows * D);
#define XS(l) (xs + (dptr)(l) * (dptr)(rows * D) * 4)
  gpu_train_embed(m, dids, XS(0), rows);
  for (int l = 0; l < NL; l++) {
    if (l == 0 || !m->recompute) kept_alloc_(&r, &kp[l], XS(l));
    else kp[l] = kp[0], kp[l].x = XS(l); /* one set of buffers, refilled in the backward */
    layer_fwd_(&r, &m->layers[l], &kp[l], XS(l + 1));
  }
  /* the head and the loss, chunk by chunk */
  dptr hf = CB(&r, rows * D), dx = FB(&r, rows * D), dxb = CB(&r, rows * D), dhf = FB(&r, rows * D);
  lrows = FB(&r, rows);
  dptr wf = gpu_train_w32(m, m->final_norm_w);
  rms_fwd_(&r, XS(NL), 0, 0, wf, hf, r.bf, rows, D);
  gpu_train_head(m, rows, hf, dtg, grad_scale, dhf, lrows);
  rms_bwd_(&r, XS(NL), 0, 0, wf, dhf, 0, dx, 0, 0, 0, gpu_train_grad(m, m->final_norm_w), rows, D, dxb);
  for (int l = NL - 1; l >= 0 && g->status == FLA_OK; l--) {
    if (m->recompute && l < NL - 1) layer_fwd_(&r, &m->layers[l], &kp[l], XS(l + 1)); /* refill the shared set */
    layer_bwd_(&r, &m->layers[l], &kp[l], dx, dxb);
  }
  gpu_train_embed_bwd(m, dids, dx, rows);
#undef XS
done:
  free(kp);
  return gpu_train_step_close(m, &f, s, lrows, loss_sum, count);
}
