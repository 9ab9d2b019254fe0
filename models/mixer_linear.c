/*
** mixer_linear.c -- GLA, RetNet and HGRN2 (fla/layers/gla.py,
** multiscale_retention.py, hgrn2.py): projections around a decay-family recipe.
**
** GLA:    q = Wq x, k = Wk x, v = Wv x (k, v per KV head, repeated to the heads),
**         gk = logsigmoid(W1 W0 x + b) / 16, o = gla(q, k, v, gk),
**         out = Wo (rmsnorm(o) * w * silu(Wg x)) per head.
** RetNet: the same without gk, with rotary q and k, o = retention(q, k, v).
** HGRN2:  q = silu(Wq x), g = logsigmoid(Wf x) (floored by the layer's lower
**         bound lb: g = log(lb + (1 - lb) e^g)), o = hgrn2(q, v = Wi x, g) (the
**         recipe's key is 1 - e^g), out = Wo rmsnorm(o) over the whole row, with
**         eps 1e-5 whatever norm_eps says (fla's rms_norm_linear default).
*/
#include "internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x [rows, Hkv*d] -> y [rows, H*d], each KV head repeated H/Hkv times in place of
** consecutive heads (fla: repeat '... (h d) -> ... (h g) d'). */
static void repeat_heads_(const float *x, int64_t rows, int Hkv, int H, int d, float *y) {
  int g = H / Hkv;
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) memcpy(y + (r * H + h) * d, x + (r * Hkv + h / g) * d, sizeof(float) * (size_t)d);
}

static fla_status hgrn2_(const mixer_call *mc, const float *x, float *out) {
  const model_layer *L = mc->L;
  const model_config *cfg = &mc->m->cfg;
  fla_ctx *ctx = mc->m->ctx;
  int64_t rows = mc->B * mc->T;
  int D = cfg->hidden_size, F = L->H * L->K;
  float *q = model_alloc(ctx, rows * F), *g = model_alloc(ctx, rows * F), *v = model_alloc(ctx, rows * D);
  float *tmp = model_alloc(ctx, rows * (F > D ? F : D)), *o = model_alloc(ctx, rows * D);
  fla_status s = FLA_NOMEM;
  if (!q || !g || !v || !tmp || !o) goto done;
  const float *W[3] = {L->q_proj, L->f_proj, L->i_proj};
  float *dst[3] = {q, g, v};
  int C[3] = {F, F, D};
  for (int j = 0; j < 3; j++) {
    if (cfg->use_short_conv) { /* HGRN2's convolutions have no activation */
      nn_linear(x, rows, D, W[j], C[j], NULL, tmp);
      mixer_conv(mc, j, tmp, C[j], NN_ACT_NONE, dst[j]);
    } else {
      nn_linear(x, rows, D, W[j], C[j], NULL, dst[j]);
    }
  }
  nn_activate(q, rows * F, NN_ACT_SILU);
  for (int64_t r = 0; r < rows; r++)
    for (int c = 0; c < F; c++) {
      float *gi = &g[r * F + c];
      *gi = nn_logsigmoid(*gi);
      if (L->lower_bound) { /* logaddexp(log lb, log1p(-lb) + g) */
        double lb = L->lower_bound[c];
        double a = log(lb), b = log1p(-lb) + *gi, mx = fmax(a, b);
        *gi = (float)(mx + log(exp(a - mx) + exp(b - mx)));
      }
    }
  op_input in[3] = {
    {"q", q, 4, {mc->B, mc->T, L->H, L->K}},
    {"v", v, 4, {mc->B, mc->T, L->H, L->V}},
    {"gk", g, 4, {mc->B, mc->T, L->H, L->K}},
  };
  if ((s = mixer_run_op(mc, in, 3, 0.0, o))) goto done;
  /* fla's rms_norm_linear call passes no eps: its default 1e-5, not norm_eps */
  nn_rmsnorm(o, rows, D, L->out_norm, 1e-5f, tmp);
  nn_linear(tmp, rows, D, L->o_proj, D, NULL, out);
done:
  free(q);
  free(g);
  free(v);
  free(tmp);
  free(o);
  return s;
}

/* Projection j of x, through its short convolution (SiLU) when the model has them. */
static void project_(const mixer_call *mc, int j, const float *x, const float *W, int C, float *tmp,
                     float *y) {
  int64_t rows = mc->B * mc->T;
  int D = mc->m->cfg.hidden_size;
  if (!mc->m->cfg.use_short_conv) {
    nn_linear(x, rows, D, W, C, NULL, y);
    return;
  }
  nn_linear(x, rows, D, W, C, NULL, tmp);
  mixer_conv(mc, j, tmp, C, NN_ACT_SILU, y);
}

fla_status mixer_linear(const mixer_call *mc, const float *x, float *out) {
  const model_config *cfg = &mc->m->cfg;
  if (cfg->arch == ARCH_HGRN2) return hgrn2_(mc, x, out);
  const model_layer *L = mc->L;
  fla_ctx *ctx = mc->m->ctx;
  int64_t rows = mc->B * mc->T;
  int D = cfg->hidden_size, H = L->H, Hkv = L->Hkv, K = L->K, V = L->V;
  int gla = cfg->arch == ARCH_GLA;
  int64_t big = rows * ((int64_t)H * (K > V ? K : V) + 16); /* also W0 x (rank 16) */
  float *q = model_alloc(ctx, rows * H * K), *k = model_alloc(ctx, rows * H * K);
  float *v = model_alloc(ctx, rows * H * V), *gk = model_alloc(ctx, rows * H * K);
  float *t1 = model_alloc(ctx, big), *t2 = model_alloc(ctx, big), *o = model_alloc(ctx, rows * H * V);
  fla_status s = FLA_NOMEM;
  if (!q || !k || !v || !gk || !t1 || !t2 || !o) goto done;
  project_(mc, 0, x, L->q_proj, H * K, t1, q);
  if (cfg->arch == ARCH_RETNET)
    for (int64_t b = 0; b < mc->B; b++) nn_rotary(q + b * mc->T * H * K, mc->T, H, K, mc->pos[b], 10000.0);
  /* k: project, rotate (RetNet), then repeat to the query heads */
  project_(mc, 1, x, L->k_proj, Hkv * K, t1, t2);
  if (cfg->arch == ARCH_RETNET)
    for (int64_t b = 0; b < mc->B; b++) nn_rotary(t2 + b * mc->T * Hkv * K, mc->T, Hkv, K, mc->pos[b], 10000.0);
  repeat_heads_(t2, rows, Hkv, H, K, k);
  project_(mc, 2, x, L->v_proj, Hkv * V, t1, t2);
  repeat_heads_(t2, rows, Hkv, H, V, v);
  int nin = 3;
  if (gla) { /* gk = logsigmoid(W1 (W0 x) + b) / 16, floored at clamp_min */
    nn_linear(x, rows, D, L->gk_proj0, 16, NULL, t1);
    nn_linear(t1, rows, 16, L->gk_proj1, Hkv * K, L->gk_proj1_b, t2);
    for (int64_t i = 0; i < rows * Hkv * K; i++) {
      t2[i] = nn_logsigmoid(t2[i]) / 16.0f;
      if (!isnan(cfg->clamp_min) && t2[i] < cfg->clamp_min) t2[i] = (float)cfg->clamp_min;
    }
    repeat_heads_(t2, rows, Hkv, H, K, gk);
    nin = 4;
  }
  op_input in[4] = {
    {"q", q, 4, {mc->B, mc->T, H, K}},
    {"k", k, 4, {mc->B, mc->T, H, K}},
    {"v", v, 4, {mc->B, mc->T, H, V}},
    {"gk", gk, 4, {mc->B, mc->T, H, K}},
  };
  if ((s = mixer_run_op(mc, in, nin, 0.0, o))) goto done;
  if (L->g_proj) {
    nn_linear(x, rows, D, L->g_proj, H * V, NULL, t1);
    nn_rmsnorm_gated(o, t1, rows * H, V, L->out_norm, (float)cfg->norm_eps, NN_ACT_SILU, t2);
  } else {
    nn_rmsnorm(o, rows * H, V, L->out_norm, (float)cfg->norm_eps, t2);
  }
  nn_linear(t2, rows, H * V, L->o_proj, D, NULL, out);
done:
  free(q);
  free(k);
  free(v);
  free(gk);
  free(t1);
  free(t2);
  free(o);
  return s;
}
