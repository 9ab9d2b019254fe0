/*
** train_gpu_rwkv6.c -- one RWKV-6 block on the GPU, forward and backward
** (grad_mixer_rwkv6.c and train_backward.c are the CPU's; their comments give
** the math). Per block (x: input, h = LN1(x), d = shift(h) - h):
**   th = tanh(x_proj0 (h + d mu_x)),  m_n = W2_n th_n + x_bias_n  (n = r, w, k, v, g)
**   xn_n = h + d m_n;  r, k, v, graw = W{r,k,v,g} xn_n
**   ta = tanh(w_lora0 xn_w),  wl = w_lora2 ta + b,  w = -exp(wl)
**   o = rwkv6(r, k, v, w, u = bonus), scale 1
**   xm = x + Wo (groupnorm_heads(o) silu(graw))
**   h2 = LN2(xm), d2 = shift(h2) - h2
**   x' = xm + sigmoid(Wr (h2 + d2 mu_r)) Wv relu(Wk (h2 + d2 mu_k))^2
** Backward in the reverse order: the channel mix (its lerps' dmu by column
** sums, the shift's backward), LN2; then Wo, the gated norm's dO and dgraw,
** the recipe's dr, dk, dv, dw, du; dwl = dw w and the decay LoRA; the five
** branches (each lerp's dm gives dx_bias by column sums, dW2_n += dm^T th_n
** and dth_n = dm W2_n); tanh'; x_proj0, mu_x, the shift, LN1.
*/
#include "internal.h"
#include "train_gpu_rwkv6.h"

#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"
#include "stage.h"

#include <stdio.h>
#include <string.h>

static const char *rw_names_[RW_COUNT] = {"rw_shift",     "rw_shift_bwd", "rw_lerp",  "rw_lerp_bwd",  "rw_tanh",
                                          "rw_tanh_bwd",  "rw_decay",     "rw_decay_bwd", "rw_acc",   "rw_ln_fwd",
                                          "rw_ln_bwd",    "rw_sqrelu",    "rw_sqrelu_bwd", "rw_sigmul", "rw_sigmul_bwd"};

fla_status rw_kernels(rw_run *r) {
  return gpu_train_kernels(r->td.m->ctx, "train_rwkv6.cuh", rw_names_, RW_COUNT, (void **)r->fn);
}

static void launch_(rw_run *r, int k, unsigned gx, unsigned block, void **args) {
  nn_gpu *g = r->td.g;
  if (g->status != FLA_OK || gx == 0) return;
  double t0 = gpu_train_prof_begin(r->td.t);
  CUresult e = fla_cuda_driver_api()->cuLaunchKernel((CUfunction)r->fn[k], gx, 1, 1, block, 1, 1, 0,
                                                     (CUstream)g->stream, args, NULL);
  if (e != CUDA_SUCCESS)
    gl_fail(g, FLA_ERROR, "kernel %s: cuLaunchKernel grid %u block %u: %s", rw_names_[k], gx, block,
            fla_cuda_result_str(e));
  gpu_train_prof_end(r->td.t, GPU_PROF_EW, t0);
}
#define EW_(r, k, n, args) launch_((r), (k), gpu_train_blocks(n), 256, (args))
#define CB_(r, n) TD_CB(&(r)->td, n) /* compute buffer */
#define FB_(r, n) TD_FB(&(r)->td, n) /* float32 buffer */

/* ------------------------------------------------------------ kernel wrappers */

static dptr w32_(rw_run *r, const float *p) { return gpu_train_w32(r->td.m, p); }
static dptr wc_(rw_run *r, const float *p) { return gpu_train_wc(r->td.m, p); }
static dptr gr_(rw_run *r, const float *p) { return gpu_train_grad(r->td.m, p); }

static void cast_(rw_run *r, dptr x, dptr y, int64_t n) { /* float32 -> compute */
  int bf = r->td.bf;
  void *a[] = {&x, &y, &bf, &n};
  gpu_train_launch(r->td.t, TK_CAST, gpu_train_blocks(n), 1, 256, a);
}

static void copy_(rw_run *r, dptr x, dptr y, int64_t n) {
  int add = 0;
  void *a[] = {&x, &y, &n, &add};
  gpu_train_launch(r->td.t, TK_COPY, gpu_train_blocks(n), 1, 256, a);
}

static void shift_(rw_run *r, dptr x, dptr d) {
  int64_t n = r->td.rows * r->td.D;
  void *a[] = {&x, &d, &r->td.T, &r->td.D, &n};
  EW_(r, RW_SHIFT, n, a);
}

static void shift_bwd_(rw_run *r, dptr dd, dptr dx) {
  int64_t n = r->td.rows * r->td.D;
  void *a[] = {&dd, &dx, &r->td.T, &r->td.D, &n};
  EW_(r, RW_SHIFT_BWD, n, a);
}

/* y = x + d m (compute): m = mu [D] (bias 0) or mu [rows, D] + bias [D] */
static void lerp_(rw_run *r, dptr x, dptr d, dptr mu, dptr bias, dptr y) {
  int64_t n = r->td.rows * r->td.D;
  int rows_mu = bias != 0, bf = r->td.bf;
  void *a[] = {&x, &d, &mu, &rows_mu, &bias, &y, &bf, &r->td.D, &n};
  EW_(r, RW_LERP, n, a);
}

static void lerp_bwd_(rw_run *r, dptr d, dptr mu, dptr bias, dptr dxn, dptr dx, dptr dd, int first, dptr dm,
                      dptr dmc) {
  int64_t n = r->td.rows * r->td.D;
  int rows_mu = bias != 0, bf = r->td.bf;
  void *a[] = {&d, &mu, &rows_mu, &bias, &dxn, &dx, &dd, &first, &dm, &dmc, &bf, &r->td.D, &n};
  EW_(r, RW_LERP_BWD, n, a);
}

static void tanh_(rw_run *r, dptr z, dptr yc, int64_t n) {
  int bf = r->td.bf;
  void *a[] = {&z, &yc, &bf, &n};
  EW_(r, RW_TANH, n, a);
}

static void tanh_bwd_(rw_run *r, dptr th, dptr d, dptr dzc, int64_t n) {
  int bf = r->td.bf;
  void *a[] = {&th, &d, &dzc, &bf, &n};
  EW_(r, RW_TANH_BWD, n, a);
}

void rw_ln_fwd(rw_run *r, dptr x, int x_bf, dptr g, const float *w, const float *b, dptr y, int y_bf,
               int64_t groups, int nh, int dim) {
  int g_bf = r->td.bf;
  dptr wd = w32_(r, w), bd = w32_(r, b);
  float eps = r->td.eps;
  void *a[] = {&x, &x_bf, &g, &g_bf, &wd, &bd, &y, &y_bf, &groups, &nh, &dim, &eps};
  launch_(r, RW_LN_FWD, (unsigned)((groups + 7) / 8), 256, a); /* a warp per group */
}

void rw_ln_bwd(rw_run *r, dptr x, int x_bf, dptr g, const float *w, const float *b, dptr dy, int dy_bf, dptr dx,
               int dx_bf, int dx_add, dptr dg, int64_t groups, int nh, int dim) {
  int g_bf = r->td.bf, cols = nh * dim;
  size_t mark = gpu_train_mark(r->td.t);
  dptr wd = w32_(r, w), bd = w32_(r, b), pw = FB_(r, groups * dim), pb = b ? FB_(r, groups * dim) : 0;
  float eps = r->td.eps;
  void *a[] = {&x,      &x_bf, &g,  &g_bf, &wd,     &bd, &dy,  &dy_bf, &dx,
               &dx_bf,  &dx_add, &dg, &pw,   &pb,   &groups, &nh, &dim, &eps};
  launch_(r, RW_LN_BWD, (unsigned)((groups + 7) / 8), 256, a);
  /* groups = rows x nh: the terms are [rows, nh dim], weight index = column */
  td_colsum(&r->td, pw, cols, gr_(r, w));
  if (b) td_colsum(&r->td, pb, cols, gr_(r, b));
  gpu_train_release(r->td.t, mark);
}

/* ------------------------------------------------------------ the recipe op */

/* o = rwkv6(r, k, v, w, u) (forward, d_o == 0), or dr, dk, dv, dw, du from d_o;
** u: the bonus in the compute dtype [H, K]; scale 1: the CPU's grad_op_forward(.., 1.0, ..) */
static fla_status op_run_(rw_run *r, const rw_kept *kp, dptr u, dptr o, dptr d_o, const dptr *grads) {
  td_run *td = &r->td;
  int64_t sk[4] = {td->B, td->T, td->H, td->K}, sv[4] = {td->B, td->T, td->H, td->V}, su[2] = {td->H, td->K};
  const dptr *d = grads ? grads : (const dptr[5]){0};
  gpu_op_input in[5] = {{"r", "dr", 4, sk, kp->r, d[0]}, {"k", "dk", 4, sk, kp->k, d[1]},
                        {"v", "dv", 4, sv, kp->v, d[2]}, {"w", "dw", 4, sk, kp->w, d[3]}, {"u", "du", 2, su, u, d[4]}};
  return gpu_train_op_run(td->m, td->B, td->T, 1.0, in, 5, o, d_o);
}

/* ------------------------------------------------------------ one block */

/* mix n of kp (float32 [rows, D]) and x_bias's row n */
#define MIX_(r, kp, n) ((kp)->mix + (dptr)(n) * (dptr)((r)->td.rows * (r)->td.D) * 4)
#define XBIAS_(r, L, n) (w32_((r), (L)->x_bias) + (dptr)(n) * (dptr)(r)->td.D * 4)

void rw_kept_alloc(rw_run *r, rw_kept *kp, dptr x) {
  td_run *td = &r->td;
  int64_t rows = td->rows;
  int D = td->D, HK = td->H * td->K, HV = td->H * td->V;
  memset(kp, 0, sizeof *kp);
  kp->x = x;
  kp->xm = FB_(r, rows * D);
  kp->th = FB_(r, rows * 5 * r->R), kp->mix = FB_(r, 5 * rows * D);
  kp->ta = FB_(r, rows * r->G), kp->wl = FB_(r, rows * HK);
  kp->r = CB_(r, rows * HK), kp->k = CB_(r, rows * HK), kp->v = CB_(r, rows * HV), kp->w = CB_(r, rows * HK);
  kp->graw = CB_(r, rows * HV), kp->o = CB_(r, rows * HV);
  kp->kr = FB_(r, rows * td->I), kp->vv = FB_(r, rows * D), kp->rr = FB_(r, rows * D);
}

/* The projection weights of the five branches (n = r, w, k, v, g; w's is
** w_lora0) and their output widths. */
static void branches_(const rw_run *r, const model_layer *L, const float **W, int *C) {
  int HK = r->td.H * r->td.K, HV = r->td.H * r->td.V;
  W[0] = L->q_proj, W[1] = L->w_lora0, W[2] = L->k_proj, W[3] = L->v_proj, W[4] = L->g_proj;
  C[0] = HK, C[1] = r->G, C[2] = HK, C[3] = HV, C[4] = HV;
}

/* the bonus u in the compute dtype, in the arena (16-byte aligned for the op) */
static dptr bonus_(rw_run *r, const model_layer *L) {
  int64_t n = (int64_t)r->td.H * r->td.K;
  dptr u = CB_(r, n);
  cast_(r, w32_(r, L->bonus), u, n);
  return u;
}

static void tmix_fwd_(rw_run *r, const model_layer *L, rw_kept *kp, dptr h, dptr d) {
  td_run *td = &r->td;
  gpu_train *t = td->t;
  int64_t rows = td->rows;
  int D = td->D, R = r->R, G = r->G, H = td->H, HK = td->H * td->K, HV = td->H * td->V, bf = td->bf;
  size_t es = td->es, mark = gpu_train_mark(t);
  dptr xx = CB_(r, rows * D), thc = CB_(r, rows * 5 * R), tac = CB_(r, rows * G);
  /* th = tanh(x_proj0 (h + d mu_x)); m_n = W2_n th_n */
  lerp_(r, h, d, w32_(r, L->x_mu), 0, xx);
  td_lin(td, xx, D, wc_(r, L->x_proj0), 5 * R, kp->th, 0);
  tanh_(r, kp->th, thc, rows * 5 * R);
  for (int n = 0; n < 5; n++)
    gpu_train_mm(t, 0, 1, rows, D, R, thc + (dptr)(n * R) * es, bf, 5 * R, wc_(r, L->x_proj2) + (dptr)(n * R) * es, bf,
                 5 * R, 0.0f, MIX_(r, kp, n), 0, D);
  const float *W[5];
  int C[5];
  branches_(r, L, W, C);
  dptr dst[5] = {kp->r, 0, kp->k, kp->v, kp->graw};
  for (int n = 0; n < 5; n++) {
    lerp_(r, h, d, MIX_(r, kp, n), XBIAS_(r, L, n), xx);
    if (n != 1) {
      td_lin(td, xx, D, wc_(r, W[n]), C[n], dst[n], bf);
      continue;
    }
    /* w = -exp(w_lora2 tanh(w_lora0 xn_w) + b) */
    td_lin(td, xx, D, wc_(r, L->w_lora0), G, kp->ta, 0);
    tanh_(r, kp->ta, tac, rows * G);
    td_lin(td, tac, G, wc_(r, L->w_lora2), HK, kp->wl, 0);
    int64_t nw = rows * HK;
    dptr b = w32_(r, L->w_lora2_b);
    void *a[] = {&kp->wl, &b, &kp->w, &bf, &HK, &nw};
    EW_(r, RW_DECAY, nw, a);
  }
  op_run_(r, kp, bonus_(r, L), kp->o, 0, NULL);
  /* xm = x + Wo (groupnorm_heads(o) silu(graw)) */
  dptr y = CB_(r, rows * HV);
  rw_ln_fwd(r, kp->o, bf, kp->graw, L->out_norm, L->out_norm_b, y, bf, rows * H, H, td->V);
  copy_(r, kp->x, kp->xm, rows * D);
  gpu_train_mm(t, 0, 1, rows, D, HV, y, bf, HV, wc_(r, L->o_proj), bf, HV, 1.0f, kp->xm, 0, D);
  gpu_train_release(t, mark);
}

void rw_layer_fwd(rw_run *r, const model_layer *L, rw_kept *kp, dptr xout) {
  td_run *td = &r->td;
  gpu_train *t = td->t;
  int64_t rows = td->rows, n = rows * td->D;
  int D = td->D, F = td->I, bf = td->bf;
  size_t mark = gpu_train_mark(t);
  dptr h = FB_(r, n), d = FB_(r, n);
  rw_ln_fwd(r, kp->x, 0, 0, L->attn_norm_w, L->attn_norm_b, h, 0, rows, 1, D);
  shift_(r, h, d);
  tmix_fwd_(r, L, kp, h, d);
  /* the channel mix: x' = xm + sigmoid(Wr xr) Wv relu(Wk xk)^2 */
  dptr xx = CB_(r, n), kk = CB_(r, rows * F);
  rw_ln_fwd(r, kp->xm, 0, 0, L->mlp_norm_w, L->mlp_norm_b, h, 0, rows, 1, D);
  shift_(r, h, d);
  lerp_(r, h, d, w32_(r, L->ffn_key_mu), 0, xx);
  td_lin(td, xx, D, wc_(r, L->ffn_key), F, kp->kr, 0);
  {
    int64_t nk = rows * F;
    void *a[] = {&kp->kr, &kk, &bf, &nk};
    EW_(r, RW_SQRELU, nk, a);
  }
  td_lin(td, kk, F, wc_(r, L->ffn_value), D, kp->vv, 0);
  lerp_(r, h, d, w32_(r, L->ffn_rec_mu), 0, xx);
  td_lin(td, xx, D, wc_(r, L->ffn_rec), D, kp->rr, 0);
  {
    void *a[] = {&kp->xm, &kp->vv, &kp->rr, &xout, &n};
    EW_(r, RW_SIGMUL, n, a);
  }
  gpu_train_release(t, mark);
}

/* The channel mix's backward: dx (the block output's gradient) stays, plus LN2'^T dh2. */
static void cmix_bwd_(rw_run *r, const model_layer *L, rw_kept *kp, dptr dx) {
  td_run *td = &r->td;
  gpu_train *t = td->t;
  int64_t rows = td->rows, n = rows * td->D, nk = rows * td->I;
  int D = td->D, F = td->I, bf = td->bf, first = 1;
  size_t mark = gpu_train_mark(t);
  dptr h = FB_(r, n), d = FB_(r, n), dh = FB_(r, n), dd = FB_(r, n), dxn = FB_(r, n), dm = FB_(r, n);
  dptr xx = CB_(r, n), dvv = CB_(r, n), drr = CB_(r, n), kk = CB_(r, nk), dkk = FB_(r, nk), dkr = CB_(r, nk);
  rw_ln_fwd(r, kp->xm, 0, 0, L->mlp_norm_w, L->mlp_norm_b, h, 0, rows, 1, D);
  shift_(r, h, d);
  {
    void *a[] = {&kp->vv, &kp->rr, &dx, &dvv, &drr, &bf, &n};
    EW_(r, RW_SIGMUL_BWD, n, a);
  }
  {
    void *a[] = {&kp->kr, &kk, &bf, &nk};
    EW_(r, RW_SQRELU, nk, a);
  }
  td_lin_bwd(td, kk, F, wc_(r, L->ffn_value), D, dvv, gr_(r, L->ffn_value), dkk, &first);
  {
    void *a[] = {&kp->kr, &dkk, &dkr, &bf, &nk};
    EW_(r, RW_SQRELU_BWD, nk, a);
  }
  lerp_(r, h, d, w32_(r, L->ffn_key_mu), 0, xx);
  first = 1;
  td_lin_bwd(td, xx, D, wc_(r, L->ffn_key), F, dkr, gr_(r, L->ffn_key), dxn, &first);
  lerp_bwd_(r, d, w32_(r, L->ffn_key_mu), 0, dxn, dh, dd, 1, dm, 0);
  td_colsum(td, dm, D, gr_(r, L->ffn_key_mu));
  lerp_(r, h, d, w32_(r, L->ffn_rec_mu), 0, xx);
  first = 1;
  td_lin_bwd(td, xx, D, wc_(r, L->ffn_rec), D, drr, gr_(r, L->ffn_rec), dxn, &first);
  lerp_bwd_(r, d, w32_(r, L->ffn_rec_mu), 0, dxn, dh, dd, 0, dm, 0);
  td_colsum(td, dm, D, gr_(r, L->ffn_rec_mu));
  shift_bwd_(r, dd, dh);
  rw_ln_bwd(r, kp->xm, 0, 0, L->mlp_norm_w, L->mlp_norm_b, dh, 0, dx, 0, 1, 0, rows, 1, D);
  gpu_train_release(t, mark);
}

/* The time mix's backward from dxb (dx in the compute dtype): dh (float32, written). */
static void tmix_bwd_(rw_run *r, const model_layer *L, rw_kept *kp, dptr h, dptr d, dptr dxb, dptr dh) {
  td_run *td = &r->td;
  gpu_train *t = td->t;
  int64_t rows = td->rows, n = rows * td->D;
  int D = td->D, R = r->R, G = r->G, H = td->H, HK = td->H * td->K, HV = td->H * td->V, bf = td->bf, first;
  size_t es = td->es, mark = gpu_train_mark(t);
  /* the output projection and the gated norm */
  dptr y = CB_(r, rows * HV), dy = FB_(r, rows * HV), dO = CB_(r, rows * HV), dg = CB_(r, rows * HV);
  rw_ln_fwd(r, kp->o, bf, kp->graw, L->out_norm, L->out_norm_b, y, bf, rows * H, H, td->V);
  gpu_train_mm(t, 1, 0, D, HV, rows, dxb, bf, D, y, bf, HV, 1.0f, gr_(r, L->o_proj), 0, HV);
  gpu_train_mm(t, 0, 0, rows, HV, D, dxb, bf, D, wc_(r, L->o_proj), bf, HV, 0.0f, dy, 0, HV);
  rw_ln_bwd(r, kp->o, bf, kp->graw, L->out_norm, L->out_norm_b, dy, 0, dO, bf, 0, dg, rows * H, H, td->V);
  /* the recipe; du into the bonus's gradient */
  dptr dr = CB_(r, rows * HK), dk = CB_(r, rows * HK), dv = CB_(r, rows * HV), dw = CB_(r, rows * HK);
  dptr du = CB_(r, (int64_t)HK);
  dptr grads[5] = {dr, dk, dv, dw, du};
  op_run_(r, kp, bonus_(r, L), 0, dO, grads);
  {
    int64_t nu = HK;
    dptr gu = gr_(r, L->bonus);
    void *a[] = {&du, &bf, &gu, &nu};
    EW_(r, RW_ACC, nu, a);
  }
  /* dwl = dw w; the decay LoRA: w_lora2_b, w_lora2, tanh' */
  int64_t nw = rows * HK;
  dptr dwl = FB_(r, nw), dwlc = CB_(r, nw), tac = CB_(r, rows * G), dta = FB_(r, rows * G), dtac = CB_(r, rows * G);
  {
    void *a[] = {&kp->wl, &dw, &bf, &dwl, &dwlc, &nw};
    EW_(r, RW_DECAY_BWD, nw, a);
  }
  td_colsum(td, dwl, HK, gr_(r, L->w_lora2_b));
  cast_(r, kp->ta, tac, rows * G);
  first = 1;
  td_lin_bwd(td, tac, G, wc_(r, L->w_lora2), HK, dwlc, gr_(r, L->w_lora2), dta, &first);
  tanh_bwd_(r, kp->ta, dta, dtac, rows * G);
  /* the five branches: dxn_n -> dh, dd, dm_n -> dx_bias_n, dW2_n, dth_n */
  dptr dd = FB_(r, n), dxn = FB_(r, n), dm = FB_(r, n), dmc = CB_(r, n), xx = CB_(r, n);
  dptr thc = CB_(r, rows * 5 * R), dth = FB_(r, rows * 5 * R), dthc = CB_(r, rows * 5 * R);
  cast_(r, kp->th, thc, rows * 5 * R);
  const float *W[5];
  int C[5];
  branches_(r, L, W, C);
  dptr dsrc[5] = {dr, dtac, dk, dv, dg};
  for (int k = 0; k < 5; k++) {
    lerp_(r, h, d, MIX_(r, kp, k), XBIAS_(r, L, k), xx);
    first = 1;
    td_lin_bwd(td, xx, D, wc_(r, W[k]), C[k], dsrc[k], gr_(r, W[k]), dxn, &first);
    lerp_bwd_(r, d, MIX_(r, kp, k), XBIAS_(r, L, k), dxn, dh, dd, k == 0, dm, dmc);
    td_colsum(td, dm, D, gr_(r, L->x_bias) + (dptr)k * (dptr)D * 4);
    gpu_train_mm(t, 1, 0, D, R, rows, dmc, bf, D, thc + (dptr)(k * R) * es, bf, 5 * R, 1.0f,
                 gr_(r, L->x_proj2) + (dptr)(k * R) * 4, 0, 5 * R);
    gpu_train_mm(t, 0, 0, rows, R, D, dmc, bf, D, wc_(r, L->x_proj2) + (dptr)(k * R) * es, bf, 5 * R, 0.0f,
                 dth + (dptr)(k * R) * 4, 0, 5 * R);
  }
  /* tanh', x_proj0, mu_x, the shift */
  tanh_bwd_(r, kp->th, dth, dthc, rows * 5 * R);
  lerp_(r, h, d, w32_(r, L->x_mu), 0, xx);
  first = 1;
  td_lin_bwd(td, xx, D, wc_(r, L->x_proj0), 5 * R, dthc, gr_(r, L->x_proj0), dxn, &first);
  lerp_bwd_(r, d, w32_(r, L->x_mu), 0, dxn, dh, dd, 0, dm, 0);
  td_colsum(td, dm, D, gr_(r, L->x_mu));
  shift_bwd_(r, dd, dh);
  gpu_train_release(t, mark);
}

void rw_layer_bwd(rw_run *r, const model_layer *L, rw_kept *kp, dptr dx) {
  td_run *td = &r->td;
  gpu_train *t = td->t;
  int64_t rows = td->rows, n = rows * td->D;
  int D = td->D;
  cmix_bwd_(r, L, kp, dx);
  size_t mark = gpu_train_mark(t);
  dptr h = FB_(r, n), d = FB_(r, n), dh = FB_(r, n), dxb = CB_(r, n);
  rw_ln_fwd(r, kp->x, 0, 0, L->attn_norm_w, L->attn_norm_b, h, 0, rows, 1, D);
  shift_(r, h, d);
  cast_(r, dx, dxb, n);
  tmix_bwd_(r, L, kp, h, d, dxb, dh);
  rw_ln_bwd(r, kp->x, 0, 0, L->attn_norm_w, L->attn_norm_b, dh, 0, dx, 0, 1, 0, rows, 1, D);
  gpu_train_release(t, mark);
}
