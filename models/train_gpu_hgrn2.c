/*
** train_gpu_hgrn2.c -- HGRN2's token mixer on the GPU, forward and backward
** (grad_mixer_linear.c's hgrn2_ is the CPU's; its comment gives the math).
** From h = n1(x), F = H K the forget dimension:
**   a_q, a_f = h Wq^T, h Wf^T [rows, F];  a_i = h Wi^T [rows, D]  (float32, kept)
**   c_j = conv_j(a_j) (no activation; a_j without short convolutions)
**   q = silu(c_q);  gk = logsigmoid(c_f), floored in layers l >= 1:
**     gk = log(lb + (1 - lb) sigmoid(c_f)), lb = the layer's lower bound
**   o = hgrn2(q, v = c_i, gk);  y = rmsnorm(o) w over the whole row (eps 1e-5);
**   xm = x + y Wo^T
** Backward: dy = dxm Wo; the norm's dO; the recipe's dq, dv, dgk; c_q and c_f
** recomputed; dc_q = dq silu'(c_q); dc_f = dgk dgk/dc_f and the bound's
** gradient summed per column into r->dlb (train_gpu_delta_loss.c takes it to
** the raw parameter); the convolutions and projections add to dh.
*/
#include "internal.h"
#include "train_gpu_delta.h"

#include "cuda/op_cuda.h"

#define HGRN2_NORM_EPS 1e-5f /* fla's rms_norm_linear call passes none: its default */

/* this layer's lower bounds [D] on the device (0: layer 0, or none) */
static dptr lb_(const td_run *r, const model_layer *L) {
  return r->lb && L->index > 0 ? r->lb + (dptr)L->index * (dptr)r->D * 4 : 0;
}

/* o = hgrn2(q, v, gk) (forward), or dq, dv, dgk from d_o (backward) */
static fla_status op_run_(td_run *r, const td_kept *kp, dptr o, dptr d_o, dptr dq, dptr dv, dptr dgk) {
  int64_t sk[4] = {r->B, r->T, r->H, r->K}, sv[4] = {r->B, r->T, r->H, r->V};
  gpu_op_input in[3] = {{"q", "dq", 4, sk, kp->q, dq}, {"v", "dv", 4, sv, kp->v, dv}, {"gk", "dgk", 4, sk, kp->g, dgk}};
  return gpu_train_op_run(r->m, r->B, r->T, 0.0, in, 3, o, d_o);
}

void td_hgrn2_fwd(td_run *r, const model_layer *L, td_kept *kp, dptr h) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows, nF = rows * r->H * r->K;
  int D = r->D, F = r->H * r->K, HV = r->H * r->V, bf = r->bf;
  size_t mark = gpu_train_mark(t);
  dptr cq = TD_FB(r, nF), cf = TD_FB(r, nF), lb = lb_(r, L);
  const float *Wj[3] = {L->q_proj, L->f_proj, L->i_proj};
  int Cj[3] = {F, F, HV};
  for (int j = 0; j < 3; j++) td_lin(r, h, D, gpu_train_wc(m, Wj[j]), Cj[j], kp->a[j], 0);
  td_conv_fwd(r, L, 0, kp->a[0], F, 0, cq, 0);
  td_conv_fwd(r, L, 1, kp->a[1], F, 0, cf, 0);
  td_conv_fwd(r, L, 2, kp->a[2], HV, 0, kp->v, bf);
  {
    void *a[] = {&cq, &cf, &lb, &F, &kp->q, &kp->g, &bf, &nF};
    td_launch(r, TD_HGRN2_FWD, gpu_train_blocks(nF), 1, 256, a);
  }
  op_run_(r, kp, kp->o, 0, 0, 0, 0);
  dptr y = TD_CB(r, rows * HV);
  td_rms_fwd(r, kp->o, bf, 0, gpu_train_w32(m, L->out_norm), y, bf, rows, HV, HGRN2_NORM_EPS);
  {
    int64_t n = rows * D;
    int add = 0;
    void *a[] = {&kp->x, &kp->xm, &n, &add};
    gpu_train_launch(t, TK_COPY, gpu_train_blocks(n), 1, 256, a);
  }
  gpu_train_mm(t, 0, 1, rows, D, HV, y, bf, HV, gpu_train_wc(m, L->o_proj), bf, HV, 1.0f, kp->xm, 0, D);
  gpu_train_release(t, mark);
}

void td_hgrn2_bwd(td_run *r, const model_layer *L, td_kept *kp, dptr h, dptr dxb, dptr dh, int *first) {
  fla_model *m = r->m;
  gpu_train *t = r->t;
  int64_t rows = r->rows, nF = rows * r->H * r->K;
  int D = r->D, F = r->H * r->K, HV = r->H * r->V, bf = r->bf;
  size_t mark = gpu_train_mark(t);
  dptr y = TD_CB(r, rows * HV), dy = TD_FB(r, rows * HV), dO = TD_CB(r, rows * HV);
  /* the output projection and the norm */
  td_rms_fwd(r, kp->o, bf, 0, gpu_train_w32(m, L->out_norm), y, bf, rows, HV, HGRN2_NORM_EPS);
  gpu_train_mm(t, 1, 0, D, HV, rows, dxb, bf, D, y, bf, HV, 1.0f, gpu_train_grad(m, L->o_proj), 0, HV);
  gpu_train_mm(t, 0, 0, rows, HV, D, dxb, bf, D, gpu_train_wc(m, L->o_proj), bf, HV, 0.0f, dy, 0, HV);
  td_rms_bwd(r, kp->o, bf, 0, gpu_train_w32(m, L->out_norm), dy, 0, dO, bf, 0, 0, gpu_train_grad(m, L->out_norm),
             rows, HV, HGRN2_NORM_EPS);
  /* the recipe, then the gates with c_q and c_f recomputed */
  dptr dq = TD_CB(r, nF), dv = TD_CB(r, rows * HV), dgk = TD_CB(r, nF);
  op_run_(r, kp, 0, dO, dq, dv, dgk);
  dptr cq = TD_FB(r, nF), cf = TD_FB(r, nF), dcq = TD_FB(r, nF), dcf = TD_FB(r, nF), lb = lb_(r, L);
  dptr dlbe = lb ? TD_FB(r, nF) : 0;
  td_conv_fwd(r, L, 0, kp->a[0], F, 0, cq, 0);
  td_conv_fwd(r, L, 1, kp->a[1], F, 0, cf, 0);
  {
    void *a[] = {&cq, &cf, &lb, &F, &dq, &dgk, &bf, &dcq, &dcf, &dlbe, &nF};
    td_launch(r, TD_HGRN2_BWD, gpu_train_blocks(nF), 1, 256, a);
  }
  if (lb) td_colsum(r, dlbe, F, r->dlb + (dptr)L->index * (dptr)D * 4);
  /* the convolutions and the projections */
  dptr da = TD_CB(r, rows * (F > HV ? F : HV));
  const float *Wj[3] = {L->q_proj, L->f_proj, L->i_proj};
  dptr dc[3] = {dcq, dcf, dv};
  int Cj[3] = {F, F, HV}, dc_bf[3] = {0, 0, bf};
  for (int j = 0; j < 3; j++) {
    td_conv_bwd(r, L, j, kp->a[j], Cj[j], 0, dc[j], dc_bf[j], da);
    td_lin_bwd(r, h, D, gpu_train_wc(m, Wj[j]), Cj[j], da, gpu_train_grad(m, Wj[j]), dh, first);
  }
  gpu_train_release(t, mark);
}
