/*
** mixer_rwkv6.c -- RWKV-6's time mix and channel mix (fla/layers/rwkv6.py,
** fla/models/rwkv6/modeling_rwkv6.py).
**
** Token shift: d_t = x_{t-1} - x_t, with x_{-1} the previous call's last token
** (0 at the start). Time mix, with R = proj_low_rank_dim:
**   m_n   = W2[:, nR:(n+1)R] tanh(W0 (x + d * mu))_{nR:(n+1)R} + x_bias_n,  n = r, w, k, v, g
**   r     = Wr (x + d m_r),  k = Wk (x + d m_k),  v = Wv (x + d m_v),  g = Wg (x + d m_g)
**   w     = -exp(L2 tanh(L0 (x + d m_w)) + b)
**   o     = rwkv6(r, k, v, w, u = bonus), scale 1
**   out   = Wo (groupnorm_heads(o) * silu(g))
** Channel mix: out = sigmoid(Wr (x + d mu_r)) * Wv relu(Wk (x + d mu_k))^2.
*/
#include "internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* d = shifted(x) - x per sequence; the cache gets each sequence's last token. */
static void token_shift_(const mixer_call *mc, const float *x, float *cache, float *d) {
  int D = mc->m->cfg.hidden_size;
  for (int64_t b = 0; b < mc->B; b++) {
    float *last = cache + (mc->slot0 + b) * (int64_t)D;
    for (int64_t t = 0; t < mc->T; t++) {
      const float *xt = x + (b * mc->T + t) * D;
      const float *prev = t ? xt - D : last;
      for (int i = 0; i < D; i++) d[(b * mc->T + t) * D + i] = prev[i] - xt[i];
    }
    memcpy(last, x + (b * mc->T + mc->T - 1) * D, sizeof(float) * (size_t)D);
  }
}

/* y = x + d * mu, mu per channel ([D]) or per row ([rows, D]) */
static void lerp_(const float *x, const float *d, const float *mu, int per_row, int64_t rows, int D, float *y) {
  for (int64_t r = 0; r < rows; r++)
    for (int i = 0; i < D; i++) y[r * D + i] = x[r * D + i] + d[r * D + i] * mu[per_row ? r * D + i : i];
}

fla_status mixer_rwkv6(const mixer_call *mc, const float *x, float *out) {
  const model_layer *L = mc->L;
  const model_config *cfg = &mc->m->cfg;
  fla_ctx *ctx = mc->m->ctx;
  int64_t rows = mc->B * mc->T;
  int D = cfg->hidden_size, H = L->H, K = L->K, V = L->V, R = L->low_rank;
  int G = cfg->gate_low_rank_dim;
  int64_t wmax = (int64_t)(D > 5 * R ? D : 5 * R);
  if (G > wmax) wmax = G;
  if (H * V > wmax) wmax = H * V;
  float *d = model_alloc(ctx, rows * D), *xx = model_alloc(ctx, rows * D), *lr = model_alloc(ctx, rows * wmax);
  float *mix = model_alloc(ctx, 5 * rows * D), *r = model_alloc(ctx, rows * H * K);
  float *w = model_alloc(ctx, rows * H * K), *k = model_alloc(ctx, rows * H * K);
  float *v = model_alloc(ctx, rows * H * V), *g = model_alloc(ctx, rows * H * V), *o = model_alloc(ctx, rows * H * V);
  fla_status s = FLA_NOMEM;
  if (!d || !xx || !lr || !mix || !r || !w || !k || !v || !g || !o) goto done;
  token_shift_(mc, x, mc->lc->shift_attn, d);
  /* the five data-dependent mixes m_n [rows, D] */
  lerp_(x, d, L->x_mu, 0, rows, D, xx);
  nn_linear(xx, rows, D, L->x_proj0, 5 * R, NULL, lr);
  for (int64_t i = 0; i < rows * 5 * R; i++) lr[i] = tanhf(lr[i]);
  for (int n = 0; n < 5; n++) {
    float *mn = mix + n * rows * D;
    nn_linear_strided(lr + n * R, 5 * R, rows, R, L->x_proj2 + n * R, 5 * R, D, mn, D);
    for (int64_t i = 0; i < rows; i++)
      for (int c = 0; c < D; c++) mn[i * D + c] += L->x_bias[n * D + c];
  }
  const float *Wn[5] = {L->q_proj, NULL, L->k_proj, L->v_proj, L->g_proj};
  float *dst[5] = {r, w, k, v, g};
  int C[5] = {H * K, H * K, H * K, H * V, H * V};
  for (int n = 0; n < 5; n++) {
    lerp_(x, d, mix + n * rows * D, 1, rows, D, xx);
    if (n == 1) { /* w = -exp(L2 tanh(L0 xx) + b) */
      nn_linear(xx, rows, D, L->w_lora0, G, NULL, lr);
      for (int64_t i = 0; i < rows * G; i++) lr[i] = tanhf(lr[i]);
      nn_linear(lr, rows, G, L->w_lora2, H * K, L->w_lora2_b, w);
      for (int64_t i = 0; i < rows * H * K; i++) w[i] = -expf(w[i]);
    } else {
      nn_linear(xx, rows, D, Wn[n], C[n], NULL, dst[n]);
    }
  }
  op_input in[5] = {
    {"r", r, 4, {mc->B, mc->T, H, K}},
    {"k", k, 4, {mc->B, mc->T, H, K}},
    {"v", v, 4, {mc->B, mc->T, H, V}},
    {"w", w, 4, {mc->B, mc->T, H, K}},
    {"u", (float *)L->bonus, 2, {H, K, 0, 0}},
  };
  if ((s = mixer_run_op(mc, in, 5, 1.0, o))) goto done;
  nn_groupnorm(o, rows, H * V, H, L->out_norm, L->out_norm_b, (float)cfg->norm_eps, o);
  nn_activate(g, rows * H * V, NN_ACT_SILU);
  for (int64_t i = 0; i < rows * H * V; i++) o[i] *= g[i];
  nn_linear(o, rows, H * V, L->o_proj, D, NULL, out);
done:
  free(d);
  free(xx);
  free(lr);
  free(mix);
  free(r);
  free(w);
  free(k);
  free(v);
  free(g);
  free(o);
  return s;
}

fla_status mixer_rwkv6_ffn(const mixer_call *mc, const float *x, float *out) {
  const model_layer *L = mc->L;
  fla_ctx *ctx = mc->m->ctx;
  int64_t rows = mc->B * mc->T;
  int D = mc->m->cfg.hidden_size, I = L->ffn_dim;
  float *d = model_alloc(ctx, rows * D), *xx = model_alloc(ctx, rows * D);
  float *key = model_alloc(ctx, rows * I), *rec = model_alloc(ctx, rows * D);
  fla_status s = FLA_NOMEM;
  if (!d || !xx || !key || !rec) goto done;
  token_shift_(mc, x, mc->lc->shift_ffn, d);
  lerp_(x, d, L->ffn_key_mu, 0, rows, D, xx);
  nn_linear(xx, rows, D, L->ffn_key, I, NULL, key);
  for (int64_t i = 0; i < rows * I; i++) key[i] = key[i] > 0 ? key[i] * key[i] : 0.0f; /* sqrelu */
  nn_linear(key, rows, I, L->ffn_value, D, NULL, out);
  lerp_(x, d, L->ffn_rec_mu, 0, rows, D, xx);
  nn_linear(xx, rows, D, L->ffn_rec, D, NULL, rec);
  for (int64_t i = 0; i < rows * D; i++) out[i] *= nn_sigmoid(rec[i]);
  s = FLA_OK;
done:
  free(d);
  free(xx);
  free(key);
  free(rec);
  return s;
}
