/*
** grad_mixer_attention.c -- backward of softmax attention (mixer_attention.c's
** math) for sequences that start at position 0.
**
** Forward: q = Wq x + bq, k = Wk x + bk, v = Wv x + bv; rotary on q and k;
**   o = softmax(q k^T / sqrt(d)) v (causal, sliding window, GQA); out = Wo o.
** Backward: do = Wo^T dout; grad_math's attention backward gives dq, dk, dv;
**   the inverse rotation takes dq, dk back; each projection adds W^T d to dx.
*/
#include "internal.h"
#include "train_internal.h"

#include <string.h>

fla_status grad_mixer_attention(const mixer_call *mc, const float *x, const float *dout, float *dx) {
  fla_model *m = mc->m;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T, B = mc->B, T = mc->T;
  int D = m->cfg.hidden_size, Hq = L->H, Hkv = L->Hkv, d = L->K;
  int qw = Hq * d, kw = Hkv * d;
  grad_scratch sc = grad_scratch_begin(m);
  float *q, *k, *v, *o, *dq, *dk, *dv, *dO;
  if (!(q = grad_alloc(&sc, rows * qw)) || !(k = grad_alloc(&sc, rows * kw)) || !(v = grad_alloc(&sc, rows * kw)) ||
      !(o = grad_alloc(&sc, rows * qw)) || !(dq = grad_alloc(&sc, rows * qw)) || !(dk = grad_alloc(&sc, rows * kw)) ||
      !(dv = grad_alloc(&sc, rows * kw)) || !(dO = grad_alloc(&sc, rows * qw))) {
    grad_scratch_free(&sc);
    return FLA_NOMEM;
  }
  double theta = L->attn.rope_theta;
  gm_linear_f(x, rows, D, L->q_proj, qw, L->qkv_bias[0], q);
  gm_linear_f(x, rows, D, L->k_proj, kw, L->qkv_bias[1], k);
  gm_linear_f(x, rows, D, L->v_proj, kw, L->qkv_bias[2], v);
  gm_rotary_f(q, B, T, Hq, d, theta, 0);
  gm_rotary_f(k, B, T, Hkv, d, theta, 0);
  gm_attention_f(q, k, v, B, T, Hq, Hkv, d, L->attn.window, o);
  gm_linear_bwd_f(o, rows, qw, L->o_proj, D, dout, dO, 0, model_grad(m, L->o_proj), NULL);
  gm_attention_bwd_f(q, k, v, B, T, Hq, Hkv, d, L->attn.window, dO, dq, dk, dv);
  gm_rotary_f(dq, B, T, Hq, d, theta, 1);
  gm_rotary_f(dk, B, T, Hkv, d, theta, 1);
  gm_linear_bwd_f(x, rows, D, L->q_proj, qw, dq, dx, 0, model_grad(m, L->q_proj), model_grad(m, L->qkv_bias[0]));
  gm_linear_bwd_f(x, rows, D, L->k_proj, kw, dk, dx, 1, model_grad(m, L->k_proj), model_grad(m, L->qkv_bias[1]));
  gm_linear_bwd_f(x, rows, D, L->v_proj, kw, dv, dx, 1, model_grad(m, L->v_proj), model_grad(m, L->qkv_bias[2]));
  grad_scratch_free(&sc);
  return FLA_OK;
}
