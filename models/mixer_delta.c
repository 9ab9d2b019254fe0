/*
** mixer_delta.c -- DeltaNet, Gated DeltaNet and KDA (fla/layers/delta_net.py,
** gated_deltanet.py, kda.py): the delta-rule family.
**
**   q, k, v = silu(conv(W{q,k,v} x))     (silu(W x) without convolutions)
**   q, k    = l2norm per head            (fla: use_qk_l2norm_in_kernel)
**   beta    = sigmoid(Wb x)              (x2 with allow_neg_eigval; DeltaNet
**                                         without use_beta: 1)
**   GDN:  g = -exp(A_log_h) softplus(Wa x + dt_bias_h)            [per head]
**   KDA:  g = -exp(A_log_h) softplus(W1 W0 x + dt_bias)           [per key]
**   o   = recipe(q, k, v, g, beta)
**   out = Wo (rmsnorm(o) * w * gate) per head, gate = silu(Wg x) (GDN with
**         use_gate, DeltaNet with use_gate), sigmoid(W1 W0 x + b) (KDA), or 1.
*/
#include "internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>

fla_status mixer_delta(const mixer_call *mc, const float *x, float *out) {
  const model_layer *L = mc->L;
  const model_config *cfg = &mc->m->cfg;
  fla_ctx *ctx = mc->m->ctx;
  int64_t rows = mc->B * mc->T;
  int D = cfg->hidden_size, H = L->H, K = L->K, V = L->V;
  int kda = cfg->arch == ARCH_KDA, gdn = cfg->arch == ARCH_GATED_DELTANET;
  int64_t wide = rows * (int64_t)H * (K > V ? K : V);
  float *q = model_alloc(ctx, rows * H * K), *k = model_alloc(ctx, rows * H * K);
  float *v = model_alloc(ctx, rows * H * V), *g = model_alloc(ctx, rows * H * K);
  float *beta = model_alloc(ctx, rows * H), *t1 = model_alloc(ctx, wide), *t2 = model_alloc(ctx, wide);
  float *o = model_alloc(ctx, rows * H * V);
  fla_status s = FLA_NOMEM;
  if (!q || !k || !v || !g || !beta || !t1 || !t2 || !o) goto done;
  const float *W[3] = {L->q_proj, L->k_proj, L->v_proj};
  float *dst[3] = {q, k, v};
  int C[3] = {H * K, H * K, H * V};
  for (int j = 0; j < 3; j++) {
    if (cfg->use_short_conv) {
      nn_linear(x, rows, D, W[j], C[j], NULL, t1);
      mixer_conv(mc, j, t1, C[j], NN_ACT_SILU, dst[j]);
    } else {
      nn_linear(x, rows, D, W[j], C[j], NULL, dst[j]);
      nn_activate(dst[j], rows * C[j], NN_ACT_SILU);
    }
  }
  nn_l2norm(q, rows * H, K);
  nn_l2norm(k, rows * H, K);
  if (L->b_proj) {
    nn_linear(x, rows, D, L->b_proj, H, NULL, beta);
    for (int64_t i = 0; i < rows * H; i++) beta[i] = nn_sigmoid(beta[i]) * (cfg->allow_neg_eigval ? 2.0f : 1.0f);
  } else {
    for (int64_t i = 0; i < rows * H; i++) beta[i] = cfg->allow_neg_eigval ? 2.0f : 1.0f;
  }
  if (gdn) {
    nn_linear(x, rows, D, L->a_proj, H, NULL, g);
    for (int64_t r = 0; r < rows; r++)
      for (int h = 0; h < H; h++)
        g[r * H + h] = -expf(L->A_log[h]) * nn_softplus(g[r * H + h] + L->dt_bias[h]);
  }
  if (kda) {
    nn_linear(x, rows, D, L->f_proj0, V, NULL, t1);
    nn_linear(t1, rows, V, L->f_proj1, H * K, NULL, g);
    for (int64_t r = 0; r < rows; r++)
      for (int c = 0; c < H * K; c++)
        g[r * H * K + c] = -expf(L->A_log[c / K]) * nn_softplus(g[r * H * K + c] + L->dt_bias[c]);
  }
  op_input in[5] = {
    {"q", q, 4, {mc->B, mc->T, H, K}},
    {"k", k, 4, {mc->B, mc->T, H, K}},
    {"v", v, 4, {mc->B, mc->T, H, V}},
    {"beta", beta, 3, {mc->B, mc->T, H, 0}},
    {"g", g, kda ? 4 : 3, {mc->B, mc->T, H, kda ? K : 0}},
  };
  if ((s = mixer_run_op(mc, in, gdn || kda ? 5 : 4, 0.0, o))) goto done;
  float eps = (float)cfg->norm_eps;
  if (kda) {
    nn_linear(x, rows, D, L->g_proj0, V, NULL, t2);
    nn_linear(t2, rows, V, L->g_proj1, H * V, L->g_proj1_b, t1);
    nn_rmsnorm_gated(o, t1, rows * H, V, L->out_norm, eps, NN_ACT_SIGMOID, t2);
  } else if (L->g_proj) {
    nn_linear(x, rows, D, L->g_proj, H * V, NULL, t1);
    nn_rmsnorm_gated(o, t1, rows * H, V, L->out_norm, eps, NN_ACT_SILU, t2);
  } else {
    nn_rmsnorm(o, rows * H, V, L->out_norm, eps, t2);
  }
  nn_linear(t2, rows, H * V, L->o_proj, D, NULL, out);
done:
  free(q);
  free(k);
  free(v);
  free(g);
  free(beta);
  free(t1);
  free(t2);
  free(o);
  return s;
}
