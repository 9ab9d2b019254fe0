/*
** grad_mixer_attention.c -- backward of softmax attention (mixer_attention.c's
** math) for sequences that start at position 0.
**
** Forward: q = Wq x + bq, k = Wk x + bk, v = Wv x + bv; rotary on q and k;
**   o = softmax(q k^T / sqrt(d)) v (causal, sliding window, GQA); out = Wo o.
** Products through BLAS per sequence and head (grad_math's attention).
** Backward: do = Wo^T dout; grad_math's attention backward gives dq, dk, dv;
**   the inverse rotation takes dq, dk back; each projection adds W^T d to dx.
*/
#include "internal.h"
#include "train_internal.h"

#include <string.h>

typedef struct {
  float *q, *k, *v, *o;
} attn_kept_;

fla_status grad_mixer_attention(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T, B = mc->B, T = mc->T;
  int D = m->cfg.hidden_size, Hq = L->H, Hkv = L->Hkv, d = L->K;
  int qw = Hq * d, kw = Hkv * d;
  double theta = L->attn.rope_theta;
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  grad_scratch sc;
  attn_kept_ *kp;
  float *dq, *dk, *dv, *dO;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
  } else {
    sc = grad_scratch_begin(m);
    if (!(kp = (attn_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1)) ||
        !(kp->q = grad_alloc(&sc, rows * qw)) || !(kp->k = grad_alloc(&sc, rows * kw)) ||
        !(kp->v = grad_alloc(&sc, rows * kw)) || !(kp->o = grad_alloc(&sc, rows * qw))) {
      grad_scratch_free(&sc);
      return FLA_NOMEM;
    }
    gm_linear_f(x, rows, D, L->q_proj, qw, L->qkv_bias[0], kp->q);
    gm_linear_f(x, rows, D, L->k_proj, kw, L->qkv_bias[1], kp->k);
    gm_linear_f(x, rows, D, L->v_proj, kw, L->qkv_bias[2], kp->v);
    gm_rotary_f(kp->q, B, T, Hq, d, theta, 0);
    gm_rotary_f(kp->k, B, T, Hkv, d, theta, 0);
    gm_attention_f(kp->q, kp->k, kp->v, B, T, Hq, Hkv, d, L->attn.window, kp->o);
    if (phase == GRAD_FWD) {
      gm_linear_f(kp->o, rows, qw, L->o_proj, D, NULL, gp->out);
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  if (!(dq = grad_alloc(&sc, rows * qw)) || !(dk = grad_alloc(&sc, rows * kw)) || !(dv = grad_alloc(&sc, rows * kw)) ||
      !(dO = grad_alloc(&sc, rows * qw))) {
    grad_scratch_free(&sc);
    return FLA_NOMEM;
  }
  gm_linear_bwd_f(kp->o, rows, qw, L->o_proj, D, dout, dO, 0, model_grad(m, L->o_proj), NULL);
  gm_attention_bwd_f(kp->q, kp->k, kp->v, B, T, Hq, Hkv, d, L->attn.window, dO, dq, dk, dv);
  gm_rotary_f(dq, B, T, Hq, d, theta, 1);
  gm_rotary_f(dk, B, T, Hkv, d, theta, 1);
  gm_linear_bwd_f(x, rows, D, L->q_proj, qw, dq, dx, 0, model_grad(m, L->q_proj), model_grad(m, L->qkv_bias[0]));
  gm_linear_bwd_f(x, rows, D, L->k_proj, kw, dk, dx, 1, model_grad(m, L->k_proj), model_grad(m, L->qkv_bias[1]));
  gm_linear_bwd_f(x, rows, D, L->v_proj, kw, dv, dx, 1, model_grad(m, L->v_proj), model_grad(m, L->qkv_bias[2]));
  grad_scratch_free(&sc);
  return FLA_OK;
}
