/*
** grad_mixer_linear.c -- backward of GLA, RetNet and HGRN2 (mixer_linear.c's
** math), recomputing the mixer's forward with its intermediates.
**
** GLA / RetNet, forward (a_j: projections, c_j: after the SiLU convolution):
**   a_j = W_j x, c_j = silu(conv_j(a_j)) (or a_j), q = c_q, k = rep(c_k),
**   v = rep(c_v) (RetNet: rotary on c_q and c_k first);
**   GLA: z0 = W0 x, z1 = W1 z0 + b, gk = rep(max(logsigmoid(z1) / 16, clamp));
**   o = recipe(q, k, v[, gk]);  y = rmsnorm(o) w silu(Wg x) per head;  out = Wo y.
** Backward, in reverse: dy = Wo^T dout; the gated norm's backward gives do,
** dgg; the recipe's backward dq, dk, dv, dgk; summing over repeated heads,
** d logsigmoid(z)/dz = sigmoid(-z) (0 where clamped); inverse rotary; the
** convolutions' backward; every projection adds W_j^T da_j to dx.
**
** HGRN2: q = silu(c_q), f = c_f, v = c_i (convolutions without activation),
**   g = logsigmoid(f), floored: g = log(lb + (1 - lb) sigmoid(f));
**   o = hgrn2(q, v, g); out = Wo rmsnorm(o) (whole row, eps 1e-5).
**   dg/df = (1 - lb) s (1 - s) / (lb + (1 - lb) s), s = sigmoid(f);
**   dg/dlb = (1 - s) / (lb + (1 - lb) s), collected in m->dlower_bounds.
*/
#include "internal.h"
#include "train_internal.h"

#include <math.h>
#include <string.h>

static void repeat_heads_(const float *x, int64_t rows, int Hkv, int H, int d, float *y) {
  int g = H / Hkv;
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) memcpy(y + (r * H + h) * d, x + (r * Hkv + h / g) * d, sizeof(float) * (size_t)d);
}

/* What HGRN2's forward keeps for the backward (which allocates its own). */
#define HGRN2_BUFFERS(X) X(q) X(g) X(o) X(y)
#define HGRN2_FIELD_(n) float *n;
#define HGRN2_SAVE_(n) kp->n = n;
#define HGRN2_LOAD_(n) n = kp->n;
typedef struct {
  grad_proj P[3];
  HGRN2_BUFFERS(HGRN2_FIELD_)
} hgrn2_kept_;

static fla_status hgrn2_(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T;
  int D = m->cfg.hidden_size, F = L->H * L->K;
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  grad_scratch sc;
  grad_proj P[3];
  float *q = NULL, *dq = NULL, *g = NULL, *dg = NULL, *o = NULL, *dO = NULL, *y = NULL, *dy = NULL;
  hgrn2_kept_ *kp = NULL;
  fla_status s = FLA_NOMEM;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
    memcpy(P, kp->P, sizeof P);
    HGRN2_BUFFERS(HGRN2_LOAD_)
  } else {
    sc = grad_scratch_begin(m);
    if (phase == GRAD_FWD && !(kp = (hgrn2_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1))) goto done;
    if (grad_proj_alloc(&sc, &P[0], L->q_proj, F, rows) || grad_proj_alloc(&sc, &P[1], L->f_proj, F, rows) ||
        grad_proj_alloc(&sc, &P[2], L->i_proj, D, rows) || !(q = grad_alloc(&sc, rows * F)) ||
        !(g = grad_alloc(&sc, rows * F)) || !(o = grad_alloc(&sc, rows * D)) || !(y = grad_alloc(&sc, rows * D)))
      goto done;
  }
  op_input in[3] = {
    {"q", q, 4, {mc->B, mc->T, L->H, L->K}},
    {"v", P[2].c, 4, {mc->B, mc->T, L->H, L->V}},
    {"gk", g, 4, {mc->B, mc->T, L->H, L->K}},
  };
  if (phase != GRAD_BWD) {
    for (int j = 0; j < 3; j++) grad_proj_forward(mc, j, &P[j], x, NN_ACT_NONE);
    gm_act_f(P[0].c, rows * F, NN_ACT_SILU, q);
    for (int64_t r = 0; r < rows; r++)
      for (int c = 0; c < F; c++) {
        double f = P[1].c[r * F + c], ls = nn_logsigmoid((float)f);
        if (L->lower_bound) {
          double lb = L->lower_bound[c], sg = 1 / (1 + exp(-f));
          ls = log(lb + (1 - lb) * sg);
        }
        g[r * F + c] = (float)ls;
      }
    if ((s = grad_op_forward(mc, in, 3, 0.0, o))) goto done;
    gm_rmsnorm_f(o, rows, D, L->out_norm, 1e-5, y);
    if (phase == GRAD_FWD) { /* the mixer's output; every buffer stays for the backward */
      gm_linear_f(y, rows, D, L->o_proj, D, NULL, gp->out);
      memcpy(kp->P, P, sizeof P);
      HGRN2_BUFFERS(HGRN2_SAVE_)
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  s = FLA_NOMEM;
  for (int j = 0; j < 3; j++)
    if (grad_proj_alloc_grad(&sc, &P[j], rows)) goto done;
  if (!(dq = grad_alloc(&sc, rows * F)) || !(dg = grad_alloc(&sc, rows * F)) || !(dO = grad_alloc(&sc, rows * D)) ||
      !(dy = grad_alloc(&sc, rows * D)))
    goto done;
  gm_linear_bwd_f(y, rows, D, L->o_proj, D, dout, dy, 0, model_grad(m, L->o_proj), NULL);
  gm_rmsnorm_bwd_f(o, rows, D, L->out_norm, 1e-5, dy, dO, model_grad(m, L->out_norm));
  float *d[3] = {dq, P[2].dc, dg};
  if ((s = grad_op_backward(mc, in, 3, 0.0, dO, d))) goto done;
  gm_act_bwd_f(P[0].c, rows * F, NN_ACT_SILU, dq, P[0].dc);
  float *dlb = m->dlower_bounds ? m->dlower_bounds + (int64_t)L->index * D : NULL;
  for (int64_t r = 0; r < rows; r++)
    for (int c = 0; c < F; c++) {
      double f = P[1].c[r * F + c], sg = 1 / (1 + exp(-f)), dgi = dg[r * F + c];
      if (L->lower_bound) {
        double lb = L->lower_bound[c], den = lb + (1 - lb) * sg;
        P[1].dc[r * F + c] = (float)(dgi * (1 - lb) * sg * (1 - sg) / den);
        if (dlb) dlb[c] += (float)(dgi * (1 - sg) / den);
      } else {
        P[1].dc[r * F + c] = (float)(dgi * (1 - sg));
      }
    }
  memset(dx, 0, sizeof(float) * (size_t)(rows * D));
  for (int j = 0; j < 3; j++) grad_proj_backward(mc, j, &P[j], x, NN_ACT_NONE, dx);
  s = FLA_OK;
done:
  grad_scratch_free(&sc);
  return s;
}

/* What the GLA / RetNet forward keeps for the backward. */
typedef struct {
  grad_proj P[3];
  float *k, *v, *gk, *z0, *z1, *o, *gg, *y;
  int nin;
} linear_kept_;

fla_status grad_mixer_linear(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_config *cfg = &m->cfg;
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  if (cfg->arch == ARCH_HGRN2) return hgrn2_(mc, x, dout, dx, gp);
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T, B = mc->B, T = mc->T;
  int D = cfg->hidden_size, H = L->H, Hkv = L->Hkv, K = L->K, V = L->V;
  int gla = cfg->arch == ARCH_GLA, retnet = cfg->arch == ARCH_RETNET;
  nn_act act = cfg->use_short_conv ? NN_ACT_SILU : NN_ACT_NONE;
  double eps = cfg->norm_eps;
  grad_scratch sc;
  linear_kept_ *kp;
  float *dO, *dy, *dk, *dv, *dgk = NULL, *dz0 = NULL, *dgg = NULL;
  fla_status s = FLA_NOMEM;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
  } else {
    sc = grad_scratch_begin(m);
    if (!(kp = (linear_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1))) goto done;
    memset(kp, 0, sizeof *kp);
    if (grad_proj_alloc(&sc, &kp->P[0], L->q_proj, H * K, rows) || grad_proj_alloc(&sc, &kp->P[1], L->k_proj, Hkv * K, rows) ||
        grad_proj_alloc(&sc, &kp->P[2], L->v_proj, Hkv * V, rows) || !(kp->k = grad_alloc(&sc, rows * H * K)) ||
        !(kp->v = grad_alloc(&sc, rows * H * V)) || !(kp->o = grad_alloc(&sc, rows * H * V)) ||
        !(kp->y = grad_alloc(&sc, rows * H * V)))
      goto done;
    if (gla && (!(kp->gk = grad_alloc(&sc, rows * H * K)) || !(kp->z0 = grad_alloc(&sc, rows * 16)) ||
                !(kp->z1 = grad_alloc(&sc, rows * Hkv * K))))
      goto done;
    if (L->g_proj && !(kp->gg = grad_alloc(&sc, rows * H * V))) goto done;
  }
  grad_proj *P = kp->P;
  op_input in[4] = {
    {"q", P[0].c, 4, {B, T, H, K}},
    {"k", kp->k, 4, {B, T, H, K}},
    {"v", kp->v, 4, {B, T, H, V}},
    {"gk", kp->gk, 4, {B, T, H, K}},
  };
  if (phase != GRAD_BWD) { /* forward, keeping what the backward reads */
    for (int j = 0; j < 3; j++) grad_proj_forward(mc, j, &P[j], x, act);
    if (retnet) {
      gm_rotary_f(P[0].c, B, T, H, K, 10000.0, 0);
      gm_rotary_f(P[1].c, B, T, Hkv, K, 10000.0, 0);
    }
    repeat_heads_(P[1].c, rows, Hkv, H, K, kp->k);
    repeat_heads_(P[2].c, rows, Hkv, H, V, kp->v);
    kp->nin = 3;
    if (gla) { /* the gate per KV head goes through y's room (free until the norm) */
      float *g1 = kp->y;
      gm_linear_f(x, rows, D, L->gk_proj0, 16, NULL, kp->z0);
      gm_linear_f(kp->z0, rows, 16, L->gk_proj1, Hkv * K, L->gk_proj1_b, kp->z1);
      for (int64_t i = 0; i < rows * Hkv * K; i++) {
        g1[i] = nn_logsigmoid(kp->z1[i]) / 16.0f;
        if (!isnan(cfg->clamp_min) && g1[i] < cfg->clamp_min) g1[i] = (float)cfg->clamp_min;
      }
      repeat_heads_(g1, rows, Hkv, H, K, kp->gk);
      kp->nin = 4;
    }
    if ((s = grad_op_forward(mc, in, kp->nin, 0.0, kp->o))) goto done;
    if (L->g_proj) {
      gm_linear_f(x, rows, D, L->g_proj, H * V, NULL, kp->gg);
      gm_rmsnorm_gated_f(kp->o, kp->gg, rows * H, V, L->out_norm, eps, NN_ACT_SILU, kp->y);
    } else {
      gm_rmsnorm_f(kp->o, rows * H, V, L->out_norm, eps, kp->y);
    }
    if (phase == GRAD_FWD) { /* the mixer's output; the scratch stays for the backward */
      gm_linear_f(kp->y, rows, H * V, L->o_proj, D, NULL, gp->out);
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  /* backward */
  s = FLA_NOMEM;
  for (int j = 0; j < 3; j++)
    if (grad_proj_alloc_grad(&sc, &P[j], rows)) goto done;
  if (!(dO = grad_alloc(&sc, rows * H * V)) || !(dy = grad_alloc(&sc, rows * H * V)) ||
      !(dk = grad_alloc(&sc, rows * H * K)) || !(dv = grad_alloc(&sc, rows * H * V)))
    goto done;
  if (gla && (!(dgk = grad_alloc(&sc, rows * H * K)) || !(dz0 = grad_alloc(&sc, rows * 16)))) goto done;
  if (L->g_proj && !(dgg = grad_alloc(&sc, rows * H * V))) goto done;
  memset(dx, 0, sizeof(float) * (size_t)(rows * D));
  gm_linear_bwd_f(kp->y, rows, H * V, L->o_proj, D, dout, dy, 0, model_grad(m, L->o_proj), NULL);
  if (L->g_proj) {
    gm_rmsnorm_gated_bwd_f(kp->o, kp->gg, rows * H, V, L->out_norm, eps, NN_ACT_SILU, dy, dO, dgg,
                           model_grad(m, L->out_norm));
    gm_linear_bwd_f(x, rows, D, L->g_proj, H * V, dgg, dx, 1, model_grad(m, L->g_proj), NULL);
  } else {
    gm_rmsnorm_bwd_f(kp->o, rows * H, V, L->out_norm, eps, dy, dO, model_grad(m, L->out_norm));
  }
  float *d[4] = {P[0].dc, dk, dv, dgk};
  if ((s = grad_op_backward(mc, in, kp->nin, 0.0, dO, d))) goto done;
  grad_unrepeat_heads(dk, rows, Hkv, H, K, P[1].dc);
  grad_unrepeat_heads(dv, rows, Hkv, H, V, P[2].dc);
  if (gla) { /* dz1 = dgk / 16 sigmoid(-z1), 0 where the floor held; into dk's room */
    float *dz1 = dk;
    grad_unrepeat_heads(dgk, rows, Hkv, H, K, dz1);
    int floor = !isnan(cfg->clamp_min);
    for (int64_t i = 0; i < rows * Hkv * K; i++) {
      int clamped = floor && nn_logsigmoid(kp->z1[i]) / 16.0f < cfg->clamp_min;
      dz1[i] = clamped ? 0.0f : dz1[i] / 16.0f * nn_sigmoid(-kp->z1[i]);
    }
    gm_linear_bwd_f(kp->z0, rows, 16, L->gk_proj1, Hkv * K, dz1, dz0, 0, model_grad(m, L->gk_proj1),
                    model_grad(m, L->gk_proj1_b));
    gm_linear_bwd_f(x, rows, D, L->gk_proj0, 16, dz0, dx, 1, model_grad(m, L->gk_proj0), NULL);
  }
  if (retnet) {
    gm_rotary_f(P[0].dc, B, T, H, K, 10000.0, 1);
    gm_rotary_f(P[1].dc, B, T, Hkv, K, 10000.0, 1);
  }
  for (int j = 0; j < 3; j++) grad_proj_backward(mc, j, &P[j], x, act, dx);
  s = FLA_OK;
done:
  grad_scratch_free(&sc);
  return s;
}
