/*
** grad_mixer_rwkv6.c -- backward of RWKV-6's time mix and channel mix
** (mixer_rwkv6.c's math) for sequences that start from a zero token shift.
**
** Token shift d_t = x_{t-1} - x_t (x_{-1} = 0): dx_t += -dd_t + dd_{t+1}.
** Lerp xn = x + d m: dx += dxn, dd += dxn m, dm = dxn d (summed over rows
** for a per-channel mu).
** Time mix: z = W0 (x + d mu), th = tanh z, m_n = W2_n th_n + x_bias_n
**   (n = r, w, k, v, g; W2_n the columns nR..(n+1)R of W2), xn_n = x + d m_n;
**   r, k, v, graw = W{r,k,v,g} xn_n;  w = -exp(L2 tanh(L0 xn_w) + b);
**   o = rwkv6(r, k, v, w, u); y = groupnorm_heads(o) silu(graw); out = Wo y.
**   dw -> d(L2 ...) = dw w (w = -exp(.)); tanh' = 1 - tanh^2.
** Channel mix: out = sigmoid(Wr xr) * Wv relu(Wk xk)^2, xr, xk lerps with
**   mu_r, mu_k:  d(relu(a)^2)/da = 2 relu(a).
*/
#include "internal.h"
#include "train_internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static void shift_(const mixer_call *mc, const float *x, float *d) {
  int D = mc->m->cfg.hidden_size;
  for (int64_t b = 0; b < mc->B; b++)
    for (int64_t t = 0; t < mc->T; t++) {
      const float *xt = x + (b * mc->T + t) * D;
      float *dt = d + (b * mc->T + t) * D;
      for (int i = 0; i < D; i++) dt[i] = (t ? xt[i - D] : 0.0f) - xt[i];
    }
}

/* dx += the shift's backward of dd */
static void shift_bwd_(const mixer_call *mc, const float *dd, float *dx) {
  int D = mc->m->cfg.hidden_size;
  for (int64_t b = 0; b < mc->B; b++)
    for (int64_t t = 0; t < mc->T; t++) {
      const float *ddt = dd + (b * mc->T + t) * D;
      float *dxt = dx + (b * mc->T + t) * D;
      for (int i = 0; i < D; i++) {
        dxt[i] -= ddt[i];
        if (t) dxt[i - D] += ddt[i];
      }
    }
}

/* y = x + d mu (mu [D], or [rows, D] when per_row) */
static void lerp_(const float *x, const float *d, const float *mu, int per_row, int64_t rows, int D, float *y) {
  for (int64_t r = 0; r < rows; r++)
    for (int i = 0; i < D; i++) y[r * D + i] = x[r * D + i] + d[r * D + i] * mu[per_row ? r * D + i : i];
}

/* The lerp's backward: dx += dxn, dd += dxn mu, and dmu (+= summed over rows
** when per channel, = per row otherwise). */
static void lerp_bwd_(const float *d, const float *mu, int per_row, int64_t rows, int D, const float *dxn,
                      float *dx, float *dd, float *dmu) {
  for (int64_t r = 0; r < rows; r++)
    for (int i = 0; i < D; i++) {
      int64_t j = r * D + i;
      dx[j] += dxn[j];
      dd[j] += dxn[j] * mu[per_row ? j : i];
      if (per_row) dmu[j] = dxn[j] * d[j];
      else dmu[i] += dxn[j] * d[j];
    }
}

/* The time mix's forward buffers, kept between a split forward and backward
** (the backward's own are allocated when it starts). */
#define RWKV_BUFFERS(X) X(d) X(xx0) X(th) X(mix) X(xn) X(r) X(k) X(v) X(graw) X(ta) X(w) X(o) X(on) X(y)
#define RWKV_FIELD_(n) float *n;
#define RWKV_SAVE_(n) kp->n = n;
#define RWKV_LOAD_(n) n = kp->n;
typedef struct {
  RWKV_BUFFERS(RWKV_FIELD_)
} rwkv_kept_;

fla_status grad_mixer_rwkv6(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_config *cfg = &m->cfg;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T, B = mc->B, T = mc->T;
  int D = cfg->hidden_size, H = L->H, K = L->K, V = L->V, R = L->low_rank, G = cfg->gate_low_rank_dim;
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  grad_scratch sc;
  float *d = NULL, *dd = NULL, *xx0 = NULL, *th = NULL, *dth = NULL, *mix = NULL, *xn = NULL, *dxn = NULL;
  float *dm = NULL, *r = NULL, *k = NULL, *v = NULL, *graw = NULL, *ta = NULL, *w = NULL, *o = NULL, *on = NULL;
  float *y = NULL, *dy = NULL, *dO = NULL, *dOn = NULL, *dr = NULL, *dk = NULL, *dv = NULL, *dw = NULL, *du = NULL;
  float *dta = NULL;
  rwkv_kept_ *kp = NULL;
  fla_status s = FLA_NOMEM;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
    RWKV_BUFFERS(RWKV_LOAD_)
  } else {
    sc = grad_scratch_begin(m);
    if (phase == GRAD_FWD && !(kp = (rwkv_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1))) goto done;
    if (!(d = grad_alloc(&sc, rows * D)) || !(xx0 = grad_alloc(&sc, rows * D)) || !(th = grad_alloc(&sc, rows * 5 * R)) ||
        !(mix = grad_alloc(&sc, 5 * rows * D)) || !(xn = grad_alloc(&sc, 5 * rows * D)) ||
        !(r = grad_alloc(&sc, rows * H * K)) || !(k = grad_alloc(&sc, rows * H * K)) ||
        !(v = grad_alloc(&sc, rows * H * V)) || !(graw = grad_alloc(&sc, rows * H * V)) ||
        !(ta = grad_alloc(&sc, rows * G)) || !(w = grad_alloc(&sc, rows * H * K)) ||
        !(o = grad_alloc(&sc, rows * H * V)) || !(on = grad_alloc(&sc, rows * H * V)) || !(y = grad_alloc(&sc, rows * H * V)))
      goto done;
  }
  const float *Wn[5] = {L->q_proj, NULL, L->k_proj, L->v_proj, L->g_proj};
  float *dst[5] = {r, NULL, k, v, graw};
  int C[5] = {H * K, H * K, H * K, H * V, H * V};
  op_input in[5] = {
    {"r", r, 4, {B, T, H, K}},
    {"k", k, 4, {B, T, H, K}},
    {"v", v, 4, {B, T, H, V}},
    {"w", w, 4, {B, T, H, K}},
    {"u", (float *)L->bonus, 2, {H, K, 0, 0}},
  };
  if (phase != GRAD_BWD) {
    /* forward */
    shift_(mc, x, d);
    lerp_(x, d, L->x_mu, 0, rows, D, xx0);
    gm_linear_f(xx0, rows, D, L->x_proj0, 5 * R, NULL, th);
    for (int64_t i = 0; i < rows * 5 * R; i++) th[i] = tanhf(th[i]);
    for (int n = 0; n < 5; n++) {
      float *mn = mix + n * rows * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, D, R, 1.0f, th + n * R, 5 * R,
                  L->x_proj2 + n * R, 5 * R, 0.0f, mn, D);
      for (int64_t i = 0; i < rows; i++)
        for (int c = 0; c < D; c++) mn[i * D + c] += L->x_bias[n * D + c];
      lerp_(x, d, mn, 1, rows, D, xn + n * rows * D);
    }
    for (int n = 0; n < 5; n++)
      if (Wn[n]) gm_linear_f(xn + n * rows * D, rows, D, Wn[n], C[n], NULL, dst[n]);
    gm_linear_f(xn + rows * D, rows, D, L->w_lora0, G, NULL, ta);
    for (int64_t i = 0; i < rows * G; i++) ta[i] = tanhf(ta[i]);
    gm_linear_f(ta, rows, G, L->w_lora2, H * K, L->w_lora2_b, w);
    for (int64_t i = 0; i < rows * H * K; i++) w[i] = -expf(w[i]);
    if ((s = grad_op_forward(mc, in, 5, 1.0, o))) goto done;
    gm_groupnorm_f(o, rows, H * V, H, L->out_norm, L->out_norm_b, cfg->norm_eps, on);
    for (int64_t i = 0; i < rows * H * V; i++) y[i] = on[i] * graw[i] * nn_sigmoid(graw[i]);
    if (phase == GRAD_FWD) { /* the mixer's output; every buffer stays for the backward */
      gm_linear_f(y, rows, H * V, L->o_proj, D, NULL, gp->out);
      RWKV_BUFFERS(RWKV_SAVE_)
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  /* backward: output, gate, norm, recipe */
  s = FLA_NOMEM;
  if (!(dd = grad_alloc(&sc, rows * D)) || !(dth = grad_alloc(&sc, rows * 5 * R)) || !(dxn = grad_alloc(&sc, rows * D)) ||
      !(dm = grad_alloc(&sc, rows * D)) || !(dta = grad_alloc(&sc, rows * G)) || !(dy = grad_alloc(&sc, rows * H * V)) ||
      !(dO = grad_alloc(&sc, rows * H * V)) || !(dOn = grad_alloc(&sc, rows * H * V)) ||
      !(dr = grad_alloc(&sc, rows * H * K)) || !(dk = grad_alloc(&sc, rows * H * K)) ||
      !(dv = grad_alloc(&sc, rows * H * V)) || !(dw = grad_alloc(&sc, rows * H * K)) || !(du = grad_alloc(&sc, H * K)))
    goto done;
  float *ddst[5] = {dr, NULL, dk, dv, dy};
  gm_linear_bwd_f(y, rows, H * V, L->o_proj, D, dout, dOn, 0, model_grad(m, L->o_proj), NULL);
  for (int64_t i = 0; i < rows * H * V; i++) {
    double sg = 1 / (1 + exp(-(double)graw[i]));
    dy[i] = (float)(dOn[i] * on[i] * sg * (1 + graw[i] * (1 - sg))); /* d graw */
    dOn[i] = (float)(dOn[i] * graw[i] * sg);
  }
  gm_groupnorm_bwd_f(o, rows, H * V, H, L->out_norm, cfg->norm_eps, dOn, dO, model_grad(m, L->out_norm),
                     model_grad(m, L->out_norm_b));
  float *dg_[5] = {dr, dk, dv, dw, du};
  if ((s = grad_op_backward(mc, in, 5, 1.0, dO, dg_))) goto done;
  float *dbonus = model_grad(m, L->bonus);
  for (int64_t i = 0; i < H * K; i++) dbonus[i] += du[i];
  /* w = -exp(wl): dwl = dw w; then L2, tanh, L0 */
  for (int64_t i = 0; i < rows * H * K; i++) dw[i] *= w[i];
  gm_linear_bwd_f(ta, rows, G, L->w_lora2, H * K, dw, dta, 0, model_grad(m, L->w_lora2), model_grad(m, L->w_lora2_b));
  for (int64_t i = 0; i < rows * G; i++) dta[i] *= 1 - ta[i] * ta[i];
  /* the five branches: dxn_n -> dx, dd, dm_n -> dth (columns n), dW2, dx_bias */
  memset(dx, 0, sizeof(float) * (size_t)(rows * D));
  memset(dd, 0, sizeof(float) * (size_t)(rows * D));
  float *dW2 = model_grad(m, L->x_proj2), *dxb = model_grad(m, L->x_bias);
  for (int n = 0; n < 5; n++) {
    const float *xnn = xn + n * rows * D, *mn = mix + n * rows * D;
    if (n == 1) gm_linear_bwd_f(xnn, rows, D, L->w_lora0, G, dta, dxn, 0, model_grad(m, L->w_lora0), NULL);
    else gm_linear_bwd_f(xnn, rows, D, Wn[n], C[n], ddst[n], dxn, 0, model_grad(m, Wn[n]), NULL);
    lerp_bwd_(d, mn, 1, rows, D, dxn, dx, dd, dm);
    for (int64_t i = 0; i < rows; i++)
      for (int c = 0; c < D; c++) dxb[n * D + c] += dm[i * D + c];
    /* dW2[:, nR:(n+1)R] += dm^T th_n;  dth_n = dm W2_n */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, R, (int)rows, 1.0f, dm, D, th + n * R, 5 * R, 1.0f,
                dW2 + n * R, 5 * R);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, R, D, 1.0f, dm, D, L->x_proj2 + n * R, 5 * R,
                0.0f, dth + n * R, 5 * R);
  }
  for (int64_t i = 0; i < rows * 5 * R; i++) dth[i] *= 1 - th[i] * th[i];
  gm_linear_bwd_f(xx0, rows, D, L->x_proj0, 5 * R, dth, dxn, 0, model_grad(m, L->x_proj0), NULL);
  lerp_bwd_(d, L->x_mu, 0, rows, D, dxn, dx, dd, model_grad(m, L->x_mu));
  shift_bwd_(mc, dd, dx);
  s = FLA_OK;
done:
  grad_scratch_free(&sc);
  return s;
}

typedef struct {
  float *d, *xk, *xr, *kr, *kk, *vv, *rr;
} ffn_kept_;

fla_status grad_rwkv6_ffn(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T;
  int D = m->cfg.hidden_size, F = L->ffn_dim; /* not F: complex.h (via cblas.h) owns it */
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  grad_scratch sc;
  ffn_kept_ *kp;
  float *dd, *dkk, *dxn;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
  } else {
    sc = grad_scratch_begin(m);
    if (!(kp = (ffn_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1)) ||
        !(kp->d = grad_alloc(&sc, rows * D)) || !(kp->xk = grad_alloc(&sc, rows * D)) ||
        !(kp->xr = grad_alloc(&sc, rows * D)) || !(kp->kr = grad_alloc(&sc, rows * F)) ||
        !(kp->kk = grad_alloc(&sc, rows * F)) || !(kp->vv = grad_alloc(&sc, rows * D)) ||
        !(kp->rr = grad_alloc(&sc, rows * D))) {
      grad_scratch_free(&sc);
      return FLA_NOMEM;
    }
    shift_(mc, x, kp->d);
    lerp_(x, kp->d, L->ffn_key_mu, 0, rows, D, kp->xk);
    gm_linear_f(kp->xk, rows, D, L->ffn_key, F, NULL, kp->kr);
    for (int64_t i = 0; i < rows * F; i++) kp->kk[i] = kp->kr[i] > 0 ? kp->kr[i] * kp->kr[i] : 0.0f;
    gm_linear_f(kp->kk, rows, F, L->ffn_value, D, NULL, kp->vv);
    lerp_(x, kp->d, L->ffn_rec_mu, 0, rows, D, kp->xr);
    gm_linear_f(kp->xr, rows, D, L->ffn_rec, D, NULL, kp->rr);
    if (phase == GRAD_FWD) { /* out = vv sigmoid(rr) */
      for (int64_t i = 0; i < rows * D; i++) gp->out[i] = kp->vv[i] * nn_sigmoid(kp->rr[i]);
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  if (!(dd = grad_alloc(&sc, rows * D)) || !(dkk = grad_alloc(&sc, rows * F)) || !(dxn = grad_alloc(&sc, rows * D))) {
    grad_scratch_free(&sc);
    return FLA_NOMEM;
  }
  float *d = kp->d, *xk = kp->xk, *xr = kp->xr, *kr = kp->kr, *kk = kp->kk, *vv = kp->vv, *rr = kp->rr;
  /* out = vv sigmoid(rr): dvv (into vv's room after use) and drr (into rr's) */
  for (int64_t i = 0; i < rows * D; i++) {
    float sg = nn_sigmoid(rr[i]);
    rr[i] = dout[i] * vv[i] * sg * (1 - sg);
    vv[i] = dout[i] * sg;
  }
  memset(dx, 0, sizeof(float) * (size_t)(rows * D));
  memset(dd, 0, sizeof(float) * (size_t)(rows * D));
  gm_linear_bwd_f(kk, rows, F, L->ffn_value, D, vv, dkk, 0, model_grad(m, L->ffn_value), NULL);
  for (int64_t i = 0; i < rows * F; i++) dkk[i] *= kr[i] > 0 ? 2 * kr[i] : 0.0f;
  gm_linear_bwd_f(xk, rows, D, L->ffn_key, F, dkk, dxn, 0, model_grad(m, L->ffn_key), NULL);
  lerp_bwd_(d, L->ffn_key_mu, 0, rows, D, dxn, dx, dd, model_grad(m, L->ffn_key_mu));
  gm_linear_bwd_f(xr, rows, D, L->ffn_rec, D, rr, dxn, 0, model_grad(m, L->ffn_rec), NULL);
  lerp_bwd_(d, L->ffn_rec_mu, 0, rows, D, dxn, dx, dd, model_grad(m, L->ffn_rec_mu));
  shift_bwd_(mc, dd, dx);
  grad_scratch_free(&sc);
  return FLA_OK;
}
