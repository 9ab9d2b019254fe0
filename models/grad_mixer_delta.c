/*
** grad_mixer_delta.c -- backward of DeltaNet, Gated DeltaNet and KDA
** (mixer_delta.c's math), recomputing the mixer's forward.
**
** Forward: c_j = silu(conv_j(W_j x)) (silu(W_j x) without convolutions);
**   q, k = l2norm(c_q), l2norm(c_k) per head; v = c_v;
**   beta = s sigmoid(Wb x) (s = 2 with allow_neg_eigval; no b_proj: s);
**   GDN: g = -exp(A_log_h) softplus(Wa x + dt_bias_h);
**   KDA: g = -exp(A_log_{c/K}) softplus(W1 W0 x + dt_bias_c);
**   o = recipe(q, k, v, beta[, g]); y = rmsnorm(o) w gate per head with
**   gate = silu(Wg x), sigmoid(Wg1 Wg0 x + b) (KDA) or 1; out = Wo y.
** Backward of the gate: with z the softplus argument, dz = dg (-exp(A_log))
**   softplus'(z) (sigmoid(z); 1 above 20 where softplus is the identity),
**   dA_log += dg g, ddt_bias += dz. dbeta -> s sigmoid'(b).
*/
#include "internal.h"
#include "train_internal.h"

#include <math.h>
#include <string.h>

/* The forward's buffers, kept between a split forward and backward (the
** backward's own are allocated when it starts). */
#define DELTA_BUFFERS(X) X(q) X(k) X(braw) X(beta) X(z) X(g) X(f0) X(o) X(y) X(gg) X(gg0)
#define DELTA_FIELD_(n) float *n;
#define DELTA_SAVE_(n) kp->n = n;
#define DELTA_LOAD_(n) n = kp->n;
typedef struct {
  grad_proj P[3];
  DELTA_BUFFERS(DELTA_FIELD_)
} delta_kept_;

fla_status grad_mixer_delta(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_config *cfg = &m->cfg;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T, B = mc->B, T = mc->T;
  int D = cfg->hidden_size, H = L->H, K = L->K, V = L->V;
  int kda = cfg->arch == ARCH_KDA, gdn = cfg->arch == ARCH_GATED_DELTANET;
  int G = kda ? H * K : H; /* gate entries per token */
  double bscale = cfg->allow_neg_eigval ? 2.0 : 1.0;
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  grad_scratch sc;
  grad_proj P[3];
  float *q = NULL, *k = NULL, *dq = NULL, *dk = NULL, *braw = NULL, *beta = NULL, *dbeta = NULL, *z = NULL;
  float *g = NULL, *dg = NULL, *f0 = NULL, *df0 = NULL, *o = NULL, *dO = NULL, *y = NULL, *dy = NULL;
  float *gg = NULL, *dgg = NULL, *gg0 = NULL, *dgg0 = NULL;
  delta_kept_ *kp = NULL;
  fla_status s = FLA_NOMEM;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
    memcpy(P, kp->P, sizeof P);
    DELTA_BUFFERS(DELTA_LOAD_)
  } else {
    sc = grad_scratch_begin(m);
    if (phase == GRAD_FWD && !(kp = (delta_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1))) goto done;
    if (grad_proj_alloc(&sc, &P[0], L->q_proj, H * K, rows) || grad_proj_alloc(&sc, &P[1], L->k_proj, H * K, rows) ||
        grad_proj_alloc(&sc, &P[2], L->v_proj, H * V, rows) || !(q = grad_alloc(&sc, rows * H * K)) ||
        !(k = grad_alloc(&sc, rows * H * K)) || !(beta = grad_alloc(&sc, rows * H)) ||
        !(o = grad_alloc(&sc, rows * H * V)) || !(y = grad_alloc(&sc, rows * H * V)))
      goto done;
    if (L->b_proj && !(braw = grad_alloc(&sc, rows * H))) goto done;
    if ((gdn || kda) && (!(z = grad_alloc(&sc, rows * G)) || !(g = grad_alloc(&sc, rows * G)))) goto done;
    if (kda && (!(f0 = grad_alloc(&sc, rows * V)) || !(gg0 = grad_alloc(&sc, rows * V)))) goto done;
    if ((kda || L->g_proj) && !(gg = grad_alloc(&sc, rows * H * V))) goto done;
  }
  op_input in[5] = {
    {"q", q, 4, {B, T, H, K}},
    {"k", k, 4, {B, T, H, K}},
    {"v", P[2].c, 4, {B, T, H, V}},
    {"beta", beta, 3, {B, T, H, 0}},
    {"g", g, kda ? 4 : 3, {B, T, H, kda ? K : 0}},
  };
  int nin = gdn || kda ? 5 : 4;
  double eps = cfg->norm_eps;
  nn_act gact = kda ? NN_ACT_SIGMOID : NN_ACT_SILU;
  if (phase != GRAD_BWD) {
    /* forward */
    for (int j = 0; j < 3; j++) grad_proj_forward(mc, j, &P[j], x, NN_ACT_SILU);
    gm_l2norm_f(P[0].c, rows * H, K, q);
    gm_l2norm_f(P[1].c, rows * H, K, k);
    if (L->b_proj) {
      gm_linear_f(x, rows, D, L->b_proj, H, NULL, braw);
      for (int64_t i = 0; i < rows * H; i++) beta[i] = (float)(nn_sigmoid(braw[i]) * bscale);
    } else {
      for (int64_t i = 0; i < rows * H; i++) beta[i] = (float)bscale;
    }
    if (gdn) gm_linear_f(x, rows, D, L->a_proj, H, NULL, z);
    if (kda) {
      gm_linear_f(x, rows, D, L->f_proj0, V, NULL, f0);
      gm_linear_f(f0, rows, V, L->f_proj1, H * K, NULL, z);
    }
    if (gdn || kda)
      for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < G; c++) {
          int h = kda ? c / K : c;
          z[r * G + c] += L->dt_bias[c];
          g[r * G + c] = -expf(L->A_log[h]) * nn_softplus(z[r * G + c]);
        }
    if ((s = grad_op_forward(mc, in, nin, 0.0, o))) goto done;
    if (kda) {
      gm_linear_f(x, rows, D, L->g_proj0, V, NULL, gg0);
      gm_linear_f(gg0, rows, V, L->g_proj1, H * V, L->g_proj1_b, gg);
    } else if (L->g_proj) {
      gm_linear_f(x, rows, D, L->g_proj, H * V, NULL, gg);
    }
    if (gg) gm_rmsnorm_gated_f(o, gg, rows * H, V, L->out_norm, eps, gact, y);
    else gm_rmsnorm_f(o, rows * H, V, L->out_norm, eps, y);
    if (phase == GRAD_FWD) { /* the mixer's output; every buffer stays for the backward */
      gm_linear_f(y, rows, H * V, L->o_proj, D, NULL, gp->out);
      memcpy(kp->P, P, sizeof P);
      DELTA_BUFFERS(DELTA_SAVE_)
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  /* backward */
  s = FLA_NOMEM;
  for (int j = 0; j < 3; j++)
    if (grad_proj_alloc_grad(&sc, &P[j], rows)) goto done;
  if (!(dq = grad_alloc(&sc, rows * H * K)) || !(dk = grad_alloc(&sc, rows * H * K)) ||
      !(dbeta = grad_alloc(&sc, rows * H)) || !(dO = grad_alloc(&sc, rows * H * V)) || !(dy = grad_alloc(&sc, rows * H * V)))
    goto done;
  if ((gdn || kda) && !(dg = grad_alloc(&sc, rows * G))) goto done;
  if (kda && (!(df0 = grad_alloc(&sc, rows * V)) || !(dgg0 = grad_alloc(&sc, rows * V)))) goto done;
  if (gg && !(dgg = grad_alloc(&sc, rows * H * V))) goto done;
  memset(dx, 0, sizeof(float) * (size_t)(rows * D));
  gm_linear_bwd_f(y, rows, H * V, L->o_proj, D, dout, dy, 0, model_grad(m, L->o_proj), NULL);
  if (gg) {
    gm_rmsnorm_gated_bwd_f(o, gg, rows * H, V, L->out_norm, eps, gact, dy, dO, dgg, model_grad(m, L->out_norm));
    if (kda) {
      gm_linear_bwd_f(gg0, rows, V, L->g_proj1, H * V, dgg, dgg0, 0, model_grad(m, L->g_proj1), model_grad(m, L->g_proj1_b));
      gm_linear_bwd_f(x, rows, D, L->g_proj0, V, dgg0, dx, 1, model_grad(m, L->g_proj0), NULL);
    } else {
      gm_linear_bwd_f(x, rows, D, L->g_proj, H * V, dgg, dx, 1, model_grad(m, L->g_proj), NULL);
    }
  } else {
    gm_rmsnorm_bwd_f(o, rows * H, V, L->out_norm, eps, dy, dO, model_grad(m, L->out_norm));
  }
  float *d[5] = {dq, dk, P[2].dc, L->b_proj ? dbeta : NULL, dg};
  if ((s = grad_op_backward(mc, in, nin, 0.0, dO, d))) goto done;
  if (L->b_proj) { /* dbraw = dbeta s sigmoid'(braw), into dbeta */
    for (int64_t i = 0; i < rows * H; i++) {
      double sg = 1 / (1 + exp(-(double)braw[i]));
      dbeta[i] = (float)(dbeta[i] * bscale * sg * (1 - sg));
    }
    gm_linear_bwd_f(x, rows, D, L->b_proj, H, dbeta, dx, 1, model_grad(m, L->b_proj), NULL);
  }
  if (gdn || kda) { /* dz = dg (-exp(A_log)) softplus'(z), into dg */
    float *dA = model_grad(m, L->A_log), *ddt = model_grad(m, L->dt_bias);
    for (int64_t r = 0; r < rows; r++)
      for (int c = 0; c < G; c++) {
        int h = kda ? c / K : c;
        double zi = z[r * G + c], sp_grad = zi > 20 ? 1.0 : 1 / (1 + exp(-zi)), dgi = dg[r * G + c];
        dA[h] += (float)(dgi * g[r * G + c]);
        double dz = dgi * -exp((double)L->A_log[h]) * sp_grad;
        ddt[c] += (float)dz;
        dg[r * G + c] = (float)dz;
      }
    if (gdn) {
      gm_linear_bwd_f(x, rows, D, L->a_proj, H, dg, dx, 1, model_grad(m, L->a_proj), NULL);
    } else {
      gm_linear_bwd_f(f0, rows, V, L->f_proj1, H * K, dg, df0, 0, model_grad(m, L->f_proj1), NULL);
      gm_linear_bwd_f(x, rows, D, L->f_proj0, V, df0, dx, 1, model_grad(m, L->f_proj0), NULL);
    }
  }
  gm_l2norm_bwd_f(P[0].c, rows * H, K, dq, P[0].dc);
  gm_l2norm_bwd_f(P[1].c, rows * H, K, dk, P[1].dc);
  for (int j = 0; j < 3; j++) grad_proj_backward(mc, j, &P[j], x, NN_ACT_SILU, dx);
  s = FLA_OK;
done:
  grad_scratch_free(&sc);
  return s;
}
