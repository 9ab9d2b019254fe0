/*
** train_gpu_delta.c -- one DeltaNet / Gated DeltaNet / KDA block on the GPU,
** forward and backward (grad_mixer_delta.c and train_backward.c are the
** CPU's; their comments give the math). Per block (x: input, h = n1(x)):
**   a_j = h W_j^T (j = q, k, v; float32, kept)
**   c_j = silu(conv_j(a_j)) (silu(a_j) without short convolutions)
**   q, k = l2norm(c_q), l2norm(c_k) per head;  v = c_v
**   beta = s sigmoid(braw), braw = h Wb^T (s = 2 with allow_neg_eigval; s without b_proj)
**   GDN: g = -exp(A_log_h) softplus(za + dt_bias_h), za = h Wa^T
**   KDA: g = -exp(A_log_{c/K}) softplus(za + dt_bias_c) per key c, za = f0 Wf1^T, f0 = h Wf0^T
**   o = recipe(q, k, v, beta[, g]);  y = rmsnorm(o) w [silu(h Wg^T)] per head
**   (KDA: y = rmsnorm(o) w sigmoid(ggf), ggf = gg0 Wg1^T + b, gg0 = h Wg0^T)
**   xm = x + y Wo^T;  x' = xm + Wd (silu(Wg' n2(xm)) (Wu n2(xm)))
** Backward: the MLP as train_gpu_loss.c's; then dy, the gated norm's dO and
** dgg, the recipe's dq, dk, dv, dbeta, dg; the gate's dz (A_log, dt_bias by
** column sums; KDA's through both low-rank factors), beta's dbraw; c_q and c_k recomputed for the L2 norm's
** backward; each convolution's ds = dc silu'(pre), da, dw, dbias; every
** projection's dW += d^T h and dh += d W; the first norm's backward into dx.
*/
#include "internal.h"
#include "train_gpu_delta.h"

#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"
#include "stage.h"

#include <stdio.h>
#include <string.h>

static const char *td_names_[TD_COUNT] = {"td_conv_fwd",   "td_conv_bwd_ds", "td_conv_bwd_da",  "td_conv_bwd_w",
                                          "td_l2norm_fwd", "td_l2norm_bwd",  "td_beta_fwd",     "td_beta_bwd",
                                          "td_gdn_gate_fwd", "td_gdn_gate_bwd", "td_hgrn2_lb",  "td_hgrn2_lb_bwd", "td_hgrn2_fwd",
                                          "td_hgrn2_bwd", "td_sig_gate_fwd", "td_sig_gate_bwd", "td_bias_add"};

int gpu_train_delta_arch(const fla_model *m) {
  return m->cfg.arch == ARCH_GATED_DELTANET || m->cfg.arch == ARCH_DELTA_NET || m->cfg.arch == ARCH_KDA ||
         m->cfg.arch == ARCH_HGRN2 || m->cfg.arch == ARCH_TRANSFORMER;
}

fla_status td_kernels(td_run *r) {
  return gpu_train_kernels(r->m->ctx, "train_delta.cuh", td_names_, TD_COUNT, (void **)r->fn);
}

void td_launch(td_run *r, int k, unsigned gx, unsigned gy, unsigned block, void **args) {
  nn_gpu *g = r->g;
  if (g->status != FLA_OK || gx == 0 || gy == 0) return;
  double t0 = gpu_train_prof_begin(r->t);
  CUresult e = fla_cuda_driver_api()->cuLaunchKernel((CUfunction)r->fn[k], gx, gy, 1, block, 1, 1, 0,
                                                     (CUstream)g->stream, args, NULL);
  if (e != CUDA_SUCCESS)
    gl_fail(g, FLA_ERROR, "kernel %s: cuLaunchKernel grid (%u,%u) block %u: %s", td_names_[k], gx, gy, block,
            fla_cuda_result_str(e));
  gpu_train_prof_end(r->t, GPU_PROF_EW, t0);
}

/* ------------------------------------------------------------ kernel wrappers */

static void cast_(td_run *r, dptr x, dptr y, int64_t n) {
  int bf = r->bf;
  void *a[] = {&x, &y, &bf, &n};
  gpu_train_launch(r->t, TK_CAST, gpu_train_blocks(n), 1, 256, a);
}

static void copy_(td_run *r, dptr x, dptr y, int64_t n) {
  int add = 0;
  void *a[] = {&x, &y, &n, &add};
  gpu_train_launch(r->t, TK_COPY, gpu_train_blocks(n), 1, 256, a);
}

void td_rms_fwd(td_run *r, dptr x, int x_bf, dptr gate, dptr w, dptr y, int y_bf, int64_t rows, int dim, float eps) {
  gpu_train_rms_fwd(r->t, x, x_bf, gate, r->bf, w, y, y_bf, rows, dim, eps, 0);
}

void td_rms_bwd(td_run *r, dptr x, int x_bf, dptr gate, dptr w, dptr dy, int dy_bf, dptr dx, int dx_bf, int dx_add,
                dptr dgate, dptr dw, int64_t rows, int dim, float eps) {
  gpu_train_rms_bwd(r->t, x, x_bf, gate, r->bf, w, dy, dy_bf, dx, dx_bf, dx_add, dgate, dw, rows, dim, eps, 0, 0);
}

/* y[rows, out] = x[rows, in] W[out, in]^T: x and W compute, y float32 or compute */
void td_lin(td_run *r, dptr x, int in, dptr W, int out, dptr y, int y_bf) {
  gpu_train_mm(r->t, 0, 1, r->rows, out, in, x, r->bf, in, W, r->bf, in, 0.0f, y, y_bf, out);
}
/* dW[out, in] += dy^T x;  dx[rows, in] = dy W (float32), added when *first is 0 */
void td_lin_bwd(td_run *r, dptr x, int in, dptr W, int out, dptr dy, dptr dW, dptr dx, int *first) {
  gpu_train_mm(r->t, 1, 0, out, in, r->rows, dy, r->bf, out, x, r->bf, in, 1.0f, dW, 0, in);
  gpu_train_mm(r->t, 0, 0, r->rows, in, out, dy, r->bf, out, W, r->bf, in, *first ? 0.0f : 1.0f, dx, 0, in);
  *first = 0;
}

void td_colsum(td_run *r, dptr x, int cols, dptr out) {
  int64_t rows = r->rows;
  void *a[] = {&x, &rows, &cols, &out};
  gpu_train_launch(r->t, TK_COLSUM, (unsigned)((cols + 31) / 32), (unsigned)((rows + 255) / 256), 256, a);
}

void td_conv_fwd(td_run *r, const model_layer *L, int j, dptr a, int C, int silu, dptr c, int c_bf) {
  fla_model *m = r->m;
  int64_t n = r->rows * C;
  int W = r->W;
  dptr w = W ? gpu_train_w32(m, L->conv[j].w) : 0, b = W ? gpu_train_w32(m, L->conv[j].b) : 0;
  void *args[] = {&a, &r->T, &C, &W, &w, &b, &silu, &c, &c_bf, &n};
  td_launch(r, TD_CONV_FWD, gpu_train_blocks(n), 1, 256, args);
}

void td_conv_bwd(td_run *r, const model_layer *L, int j, dptr a, int C, int silu, dptr dc, int dc_bf, dptr da) {
  fla_model *m = r->m;
  int64_t n = r->rows * C;
  int W = r->W, bf = r->bf;
  dptr w = W ? gpu_train_w32(m, L->conv[j].w) : 0, b = W ? gpu_train_w32(m, L->conv[j].b) : 0;
  size_t mark = gpu_train_mark(r->t);
  dptr ds = TD_FB(r, n);
  void *a1[] = {&a, &r->T, &C, &W, &w, &b, &silu, &dc, &dc_bf, &ds, &n};
  td_launch(r, TD_CONV_BWD_DS, gpu_train_blocks(n), 1, 256, a1);
  void *a2[] = {&ds, &r->T, &C, &W, &w, &da, &bf, &n};
  td_launch(r, TD_CONV_BWD_DA, gpu_train_blocks(n), 1, 256, a2);
  if (W) {
    dptr dw = gpu_train_grad(m, L->conv[j].w), db = gpu_train_grad(m, L->conv[j].b);
    void *a3[] = {&a, &ds, &r->rows, &r->T, &C, &W, &dw, &db};
    td_launch(r, TD_CONV_BWD_W, (unsigned)((C + 31) / 32), (unsigned)((r->rows + 255) / 256), 256, a3);
  }
  gpu_train_release(r->t, mark);
}

static void l2norm_fwd_(td_run *r, dptr x, dptr y) {
  int64_t rows = r->rows * r->H;
  int dim = r->K, bf = r->bf;
  void *a[] = {&x, &y, &bf, &rows, &dim};
  td_launch(r, TD_L2NORM_FWD, (unsigned)((rows + 7) / 8), 1, 256, a);
}

static void l2norm_bwd_(td_run *r, dptr x, dptr dy, dptr dx) {
  int64_t rows = r->rows * r->H;
  int dim = r->K, bf = r->bf;
  void *a[] = {&x, &dy, &bf, &dx, &rows, &dim};
  td_launch(r, TD_L2NORM_BWD, (unsigned)((rows + 7) / 8), 1, 256, a);
}

/* ------------------------------------------------------------ the recipe op */

/* o = recipe(q, k, v, beta[, g]) (forward, d_o == 0), or dq, dk, dv, dbeta[, dg] from d_o */
static fla_status op_run_(td_run *r, const td_kept *kp, dptr o, dptr d_o, const dptr *grads) {
  int64_t sk[4] = {r->B, r->T, r->H, r->K}, sv[4] = {r->B, r->T, r->H, r->V}, sh[3] = {r->B, r->T, r->H};
  const dptr *d = grads ? grads : (const dptr[5]){0};
  gpu_op_input in[5] = {{"q", "dq", 4, sk, kp->q, d[0]}, {"k", "dk", 4, sk, kp->k, d[1]},
                        {"v", "dv", 4, sv, kp->v, d[2]}, {"beta", "dbeta", 3, sh, kp->beta, d[3]},
                        /* KDA's g: per key [B, T, H, K] */
                        {"g", "dg", r->kda ? 4 : 3, r->kda ? sk : sh, kp->g, d[4]}};
  return gpu_train_op_run(r->m, r->B, r->T, 0.0, in, r->gdn || r->kda ? 5 : 4, o, d_o);
}

/* ------------------------------------------------------------ one block */

void td_kept_alloc(td_run *r, td_kept *kp, dptr x) {
  int64_t rows = r->rows;
  int HK = r->H * r->K, HV = r->H * r->V;
  const model_layer *L0 = gpu_train_mixer_layer(r->m), *La = gpu_train_attn_layer(r->m);
  memset(kp, 0, sizeof *kp);
  kp->x = x;
  kp->xm = TD_FB(r, rows * r->D);
  kp->gate = TD_CB(r, rows * r->I), kp->up = TD_CB(r, rows * r->I);
  if (La) gta_kept_alloc(r->m, La, rows, &kp->at); /* the Transformer's layers, or a hybrid's attn */
  if (L0->is_attn) return;                          /* the Transformer: no recipe mixer */
  kp->a[0] = TD_FB(r, rows * HK), kp->a[1] = TD_FB(r, rows * HK), kp->a[2] = TD_FB(r, rows * HV);
  kp->q = TD_CB(r, rows * HK), kp->v = TD_CB(r, rows * HV), kp->o = TD_CB(r, rows * HV);
  if (r->hgrn2) { /* q, v and the forget gate gk [rows, HK] */
    kp->g = TD_CB(r, rows * HK);
    return;
  }
  kp->k = TD_CB(r, rows * HK), kp->beta = TD_CB(r, rows * r->H);
  if (L0->b_proj) kp->braw = TD_FB(r, rows * r->H);
  if (r->gdn) kp->za = TD_FB(r, rows * r->H), kp->g = TD_CB(r, rows * r->H);
  if (r->kda) {
    kp->za = TD_FB(r, rows * HK), kp->g = TD_CB(r, rows * HK);
    kp->f0 = TD_CB(r, rows * r->V), kp->gg0 = TD_CB(r, rows * r->V), kp->ggf = TD_FB(r, rows * HV);
  }
  if (L0->g_proj) kp->gg = TD_CB(r, rows * HV);
}

/* The decay gate from za: g = -exp(A_log) softplus(za + dt_bias), per head
** (Gated DeltaNet) or per key (KDA). */
static void gate_fwd_(td_run *r, const model_layer *L, td_kept *kp) {
  fla_model *m = r->m;
  int H = r->H, Kg = r->kda ? r->K : 1, bf = r->bf;
  int64_t n = r->rows * H * Kg;
  dptr dtb = gpu_train_w32(m, L->dt_bias), Al = gpu_train_w32(m, L->A_log);
  void *a[] = {&kp->za, &dtb, &Al, &H, &Kg, &kp->g, &bf, &n};
  td_launch(r, TD_GDN_GATE_FWD, gpu_train_blocks(n), 1, 256, a);
}

/* y = rmsnorm(o) w and its gate: silu(gg) (g_proj), sigmoid(ggf) (KDA, the
** ungated norm into nrm [rows, H V] float32 first), or none. */
static void out_norm_fwd_(td_run *r, const model_layer *L, const td_kept *kp, dptr y, dptr nrm) {
  int64_t nH = r->rows * r->H, n = nH * r->V;
  dptr w = gpu_train_w32(r->m, L->out_norm);
  int bf = r->bf;
  if (!r->kda) {
    td_rms_fwd(r, kp->o, bf, kp->gg, w, y, bf, nH, r->V, r->eps);
    return;
  }
  td_rms_fwd(r, kp->o, bf, 0, w, nrm, 0, nH, r->V, r->eps);
  dptr gg = kp->ggf;
  void *a[] = {&nrm, &gg, &y, &bf, &n};
  td_launch(r, TD_SIG_GATE_FWD, gpu_train_blocks(n), 1, 256, a);
}

/* dW += dy^T x and dx += dy W through a float32 dx cast to the compute dtype
** for the next product: xc = x's low-rank input [rows, in], dxc [rows, in] compute. */
static void lin_bwd_lowrank_(td_run *r, dptr x, int in, const float *W, int out, dptr dy, dptr dxc) {
  size_t mark = gpu_train_mark(r->t);
  dptr dx = TD_FB(r, r->rows * in);
  int first = 1;
  td_lin_bwd(r, x, in, gpu_train_wc(r->m, W), out, dy, gpu_train_grad(r->m, W), dx, &first);
  cast_(r, dx, dxc, r->rows * in);
  gpu_train_release(r->t, mark);
}

/* The delta-rule token mixer from h = n1(x): kp->xm = x + Wo y. */
static void delta_fwd_(td_run *r, const model_layer *L, td_kept *kp, dptr h) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows, nH = rows * r->H;
  int D = r->D, HK = r->H * r->K, HV = r->H * r->V, bf = r->bf, H = r->H;
  size_t mark = gpu_train_mark(t);
  dptr c = TD_FB(r, rows * HK);
  const float *Wj[3] = {L->q_proj, L->k_proj, L->v_proj};
  int Cj[3] = {HK, HK, HV};
  for (int j = 0; j < 3; j++) td_lin(r, h, D, gpu_train_wc(m, Wj[j]), Cj[j], kp->a[j], 0);
  td_conv_fwd(r, L, 0, kp->a[0], HK, 1, c, 0);
  l2norm_fwd_(r, c, kp->q);
  td_conv_fwd(r, L, 1, kp->a[1], HK, 1, c, 0);
  l2norm_fwd_(r, c, kp->k);
  td_conv_fwd(r, L, 2, kp->a[2], HV, 1, kp->v, bf);
  if (L->b_proj) td_lin(r, h, D, gpu_train_wc(m, L->b_proj), H, kp->braw, 0);
  {
    void *a[] = {&kp->braw, &kp->beta, &bf, &r->bscale, &nH};
    td_launch(r, TD_BETA_FWD, gpu_train_blocks(nH), 1, 256, a);
  }
  if (r->gdn) td_lin(r, h, D, gpu_train_wc(m, L->a_proj), H, kp->za, 0);
  if (r->kda) {
    td_lin(r, h, D, gpu_train_wc(m, L->f_proj0), r->V, kp->f0, bf);
    td_lin(r, kp->f0, r->V, gpu_train_wc(m, L->f_proj1), HK, kp->za, 0);
  }
  if (r->gdn || r->kda) gate_fwd_(r, L, kp);
  op_run_(r, kp, kp->o, 0, NULL);
  if (L->g_proj) td_lin(r, h, D, gpu_train_wc(m, L->g_proj), HV, kp->gg, bf);
  if (r->kda) {
    td_lin(r, h, D, gpu_train_wc(m, L->g_proj0), r->V, kp->gg0, bf);
    td_lin(r, kp->gg0, r->V, gpu_train_wc(m, L->g_proj1), HV, kp->ggf, 0);
    int64_t n = rows * HV;
    dptr b = gpu_train_w32(m, L->g_proj1_b);
    void *a[] = {&kp->ggf, &b, &HV, &n};
    td_launch(r, TD_BIAS_ADD, gpu_train_blocks(n), 1, 256, a);
  }
  dptr y = TD_CB(r, rows * HV), nrm = r->kda ? TD_FB(r, rows * HV) : 0;
  out_norm_fwd_(r, L, kp, y, nrm);
  copy_(r, kp->x, kp->xm, rows * D);
  gpu_train_mm(t, 0, 1, rows, D, HV, y, bf, HV, gpu_train_wc(m, L->o_proj), bf, HV, 1.0f, kp->xm, 0, D);
  gpu_train_release(t, mark);
}

void td_layer_fwd(td_run *r, const model_layer *L, td_kept *kp, dptr xout) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows;
  int D = r->D, I = r->I, bf = r->bf;
  size_t mark = gpu_train_mark(t);
  dptr h = TD_CB(r, rows * D);
  td_rms_fwd(r, kp->x, 0, 0, gpu_train_w32(m, L->attn_norm_w), h, bf, rows, D, r->eps);
  if (L->is_attn) {
    copy_(r, kp->x, kp->xm, rows * D);
    gta_fwd(m, L, r->B, r->T, h, &kp->at, kp->xm, 1.0f);
  } else if (r->hgrn2) {
    td_hgrn2_fwd(r, L, kp, h);
  } else {
    delta_fwd_(r, L, kp, h);
  }
  /* MLP */
  td_rms_fwd(r, kp->xm, 0, 0, gpu_train_w32(m, L->mlp_norm_w), h, bf, rows, D, r->eps);
  td_lin(r, h, D, gpu_train_wc(m, L->mlp_gate), I, kp->gate, bf);
  td_lin(r, h, D, gpu_train_wc(m, L->mlp_up), I, kp->up, bf);
  dptr a = TD_CB(r, rows * I);
  gpu_train_swiglu(t, kp->gate, kp->up, I, a, bf, rows, I, 0);
  copy_(r, kp->xm, xout, rows * D);
  gpu_train_mm(t, 0, 1, rows, D, I, a, bf, I, gpu_train_wc(m, L->mlp_down), bf, I, 1.0f, xout, 0, D);
  gpu_train_release(t, mark);
}

/* The MLP's backward: dx (the block output's gradient) stays, plus n2'^T dh. */
static void mlp_bwd_(td_run *r, const model_layer *L, const td_kept *kp, dptr dx) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows, nI = rows * r->I;
  int D = r->D, I = r->I, bf = r->bf, first = 1;
  size_t mark = gpu_train_mark(t);
  dptr h = TD_CB(r, rows * D), dxb = TD_CB(r, rows * D), dh = TD_FB(r, rows * D);
  dptr a = TD_CB(r, nI), da = TD_CB(r, nI);
  td_rms_fwd(r, kp->xm, 0, 0, gpu_train_w32(m, L->mlp_norm_w), h, bf, rows, D, r->eps);
  gpu_train_swiglu(t, kp->gate, kp->up, I, a, bf, rows, I, 0);
  cast_(r, dx, dxb, rows * D);
  gpu_train_mm(t, 1, 0, D, I, rows, dxb, bf, D, a, bf, I, 1.0f, gpu_train_grad(m, L->mlp_down), 0, I);
  gpu_train_mm(t, 0, 0, rows, I, D, dxb, bf, D, gpu_train_wc(m, L->mlp_down), bf, I, 0.0f, da, bf, I);
  gpu_train_swiglu(t, kp->gate, kp->up, I, da, bf, rows, I, 1); /* gate, up := their gradients */
  td_lin_bwd(r, h, D, gpu_train_wc(m, L->mlp_gate), I, kp->gate, gpu_train_grad(m, L->mlp_gate), dh, &first);
  td_lin_bwd(r, h, D, gpu_train_wc(m, L->mlp_up), I, kp->up, gpu_train_grad(m, L->mlp_up), dh, &first);
  td_rms_bwd(r, kp->xm, 0, 0, gpu_train_w32(m, L->mlp_norm_w), dh, 0, dx, 0, 1, 0, gpu_train_grad(m, L->mlp_norm_w),
             rows, D, r->eps);
  gpu_train_release(t, mark);
}

/* The delta-rule token mixer's backward from dxb (dx in the compute dtype): dh. */
static void delta_bwd_(td_run *r, const model_layer *L, td_kept *kp, dptr h, dptr dxb, dptr dh, int *first) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows, nH = rows * r->H;
  int D = r->D, HK = r->H * r->K, HV = r->H * r->V, bf = r->bf, H = r->H;
  size_t mark = gpu_train_mark(t);
  dptr y = TD_CB(r, rows * HV), dy = TD_FB(r, rows * HV), dO = TD_CB(r, rows * HV);
  dptr dgg = L->g_proj ? TD_CB(r, rows * HV) : 0, nrm = r->kda ? TD_FB(r, rows * HV) : 0;
  /* the output projection and the (gated) norm */
  out_norm_fwd_(r, L, kp, y, nrm);
  gpu_train_mm(t, 1, 0, D, HV, rows, dxb, bf, D, y, bf, HV, 1.0f, gpu_train_grad(m, L->o_proj), 0, HV);
  gpu_train_mm(t, 0, 0, rows, HV, D, dxb, bf, D, gpu_train_wc(m, L->o_proj), bf, HV, 0.0f, dy, 0, HV);
  if (r->kda) { /* the sigmoid gate: dggf, dy := dnrm; then the ungated norm */
    int64_t n = rows * HV;
    dptr dggf = TD_FB(r, n), dggc = TD_CB(r, n), dgg0 = TD_CB(r, rows * r->V);
    void *a[] = {&nrm, &kp->ggf, &dy, &dggf, &n};
    td_launch(r, TD_SIG_GATE_BWD, gpu_train_blocks(n), 1, 256, a);
    td_rms_bwd(r, kp->o, bf, 0, gpu_train_w32(m, L->out_norm), dy, 0, dO, bf, 0, 0, gpu_train_grad(m, L->out_norm),
               nH, r->V, r->eps);
    td_colsum(r, dggf, HV, gpu_train_grad(m, L->g_proj1_b));
    cast_(r, dggf, dggc, n);
    lin_bwd_lowrank_(r, kp->gg0, r->V, L->g_proj1, HV, dggc, dgg0);
    td_lin_bwd(r, h, D, gpu_train_wc(m, L->g_proj0), r->V, dgg0, gpu_train_grad(m, L->g_proj0), dh, first);
  } else {
    td_rms_bwd(r, kp->o, bf, kp->gg, gpu_train_w32(m, L->out_norm), dy, 0, dO, bf, 0, dgg,
               gpu_train_grad(m, L->out_norm), nH, r->V, r->eps);
  }
  if (L->g_proj) td_lin_bwd(r, h, D, gpu_train_wc(m, L->g_proj), HV, dgg, gpu_train_grad(m, L->g_proj), dh, first);
  /* the recipe */
  dptr dq = TD_CB(r, rows * HK), dk = TD_CB(r, rows * HK), dv = TD_CB(r, rows * HV), dbeta = TD_CB(r, nH);
  int Kg = r->kda ? r->K : 1; /* gate columns per head */
  int64_t nG = nH * Kg;
  dptr dg = r->gdn || r->kda ? TD_CB(r, nG) : 0;
  dptr grads[5] = {dq, dk, dv, dbeta, dg};
  op_run_(r, kp, 0, dO, grads);
  if (L->b_proj) { /* dbraw = dbeta s sigmoid'(braw), over dbeta */
    void *a[] = {&kp->braw, &dbeta, &bf, &r->bscale, &dbeta, &nH};
    td_launch(r, TD_BETA_BWD, gpu_train_blocks(nH), 1, 256, a);
    td_lin_bwd(r, h, D, gpu_train_wc(m, L->b_proj), H, dbeta, gpu_train_grad(m, L->b_proj), dh, first);
  }
  if (r->gdn || r->kda) { /* dz; dA_log += colsum(dg g) per head, ddt_bias += colsum(dz) */
    dptr dz = TD_FB(r, nG), dzc = TD_CB(r, nG), dAg = TD_FB(r, nH);
    dptr dtb = gpu_train_w32(m, L->dt_bias), Al = gpu_train_w32(m, L->A_log);
    void *a[] = {&kp->za, &dtb, &Al, &H, &Kg, &dg, &bf, &dz, &dzc, &dAg, &nH};
    td_launch(r, TD_GDN_GATE_BWD, gpu_train_blocks(nH), 1, 256, a);
    td_colsum(r, dz, H * Kg, gpu_train_grad(m, L->dt_bias));
    td_colsum(r, dAg, H, gpu_train_grad(m, L->A_log));
    if (r->gdn) {
      td_lin_bwd(r, h, D, gpu_train_wc(m, L->a_proj), H, dzc, gpu_train_grad(m, L->a_proj), dh, first);
    } else { /* za = f0 Wf1^T, f0 = h Wf0^T */
      dptr df0 = TD_CB(r, rows * r->V);
      lin_bwd_lowrank_(r, kp->f0, r->V, L->f_proj1, HK, dzc, df0);
      td_lin_bwd(r, h, D, gpu_train_wc(m, L->f_proj0), r->V, df0, gpu_train_grad(m, L->f_proj0), dh, first);
    }
  }
  /* q, k through their L2 norms (c recomputed), v; then the convolutions and projections */
  dptr c = TD_FB(r, rows * HK), dc = TD_FB(r, rows * HK), da = TD_CB(r, rows * (HK > HV ? HK : HV));
  const float *Wj[3] = {L->q_proj, L->k_proj, L->v_proj};
  dptr dj[3] = {dq, dk, dv};
  int Cj[3] = {HK, HK, HV};
  for (int j = 0; j < 3; j++) {
    if (j < 2) {
      td_conv_fwd(r, L, j, kp->a[j], HK, 1, c, 0);
      l2norm_bwd_(r, c, dj[j], dc);
      td_conv_bwd(r, L, j, kp->a[j], HK, 1, dc, 0, da);
    } else {
      td_conv_bwd(r, L, j, kp->a[j], HV, 1, dv, bf, da);
    }
    td_lin_bwd(r, h, D, gpu_train_wc(m, Wj[j]), Cj[j], da, gpu_train_grad(m, Wj[j]), dh, first);
  }
  gpu_train_release(t, mark);
}

void td_layer_bwd(td_run *r, const model_layer *L, td_kept *kp, dptr dx) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows;
  int D = r->D, bf = r->bf, first = 1;
  mlp_bwd_(r, L, kp, dx);
  size_t mark = gpu_train_mark(t);
  dptr h = TD_CB(r, rows * D), dxb = TD_CB(r, rows * D), dh = TD_FB(r, rows * D);
  td_rms_fwd(r, kp->x, 0, 0, gpu_train_w32(m, L->attn_norm_w), h, bf, rows, D, r->eps);
  cast_(r, dx, dxb, rows * D);
  if (L->is_attn) gta_bwd(m, L, r->B, r->T, h, &kp->at, dxb, dh, 0.0f);
  else if (r->hgrn2) td_hgrn2_bwd(r, L, kp, h, dxb, dh, &first);
  else delta_bwd_(r, L, kp, h, dxb, dh, &first);
  td_rms_bwd(r, kp->x, 0, 0, gpu_train_w32(m, L->attn_norm_w), dh, 0, dx, 0, 1, 0, gpu_train_grad(m, L->attn_norm_w),
             rows, D, r->eps);
  gpu_train_release(t, mark);
}
