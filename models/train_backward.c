/*
** train_backward.c -- fla_model_loss_backward: forward, the fused LM head and
** cross-entropy, and the backward over the layers (see train_internal.h).
**
** Memory kept between the forward and the backward: the residual stream at
** each layer's input and after its token mixer, (2 L + 1) x tokens x hidden
** floats, and each layer's activations where its backward can take them
** (grad_pass, GRAD_FWD then GRAD_BWD; the scratch of layer l lies above that
** of layer l - 1 in the arena, so the backward frees them in stack order).
** Otherwise, or with fla_model_set_recompute, a layer's forward runs again
** from its kept input during its backward (activation checkpointing).
**
** Block backward (x: layer input, y = x + mixer(n1(x)), z = y + mlp(n2(y))):
**   dy = dz + n2'(y)^T mlp'^T dz;   dx = dy + n1'(x)^T mixer'^T dy.
** MLP: a = silu(Wg h) (Wu h), out = Wd a:
**   dWd += dout a^T, da = Wd^T dout, dg = da up silu'(gate), du = da silu(gate),
**   dWg += dg h^T, dWu += du h^T, dh = Wg^T dg + Wu^T du.
*/
#include "internal.h"
#include "train_internal.h"
#include "train_gpu_delta.h"
#include "train_gpu_rwkv6.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_CHUNK_FLOATS (1 << 20) /* logits held at a time: 4 MiB */

static void norm_fwd_(const fla_model *m, const float *x, int64_t rows, const float *w, const float *b, float *y) {
  int D = m->cfg.hidden_size;
  if (m->cfg.arch == ARCH_RWKV6) gm_groupnorm_f(x, rows, D, 1, w, b, m->cfg.norm_eps, y);
  else gm_rmsnorm_f(x, rows, D, w, m->cfg.norm_eps, y);
}

/* dx += n'(x)^T dy (tmp: rows x D scratch) and the norm's weight gradients. */
static void norm_bwd_(const fla_model *m, const float *x, int64_t rows, const float *w, const float *b,
                      const float *dy, float *tmp, float *dx) {
  int D = m->cfg.hidden_size;
  if (m->cfg.arch == ARCH_RWKV6)
    gm_groupnorm_bwd_f(x, rows, D, 1, w, m->cfg.norm_eps, dy, tmp, model_grad(m, w), model_grad(m, b));
  else
    gm_rmsnorm_bwd_f(x, rows, D, w, m->cfg.norm_eps, dy, tmp, model_grad(m, w));
  for (int64_t i = 0; i < rows * D; i++) dx[i] += tmp[i];
}

typedef struct {
  float *gate, *up, *a;
} mlp_kept_;

/* The MLP's forward and backward, split like the mixers' (grad_pass). */
static fla_status mlp_grad_(const mixer_call *mc, const float *h, const float *dout, float *dh, grad_pass *gp) {
  fla_model *m = mc->m;
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T;
  int D = m->cfg.hidden_size, I = L->ffn_dim;
  grad_phase phase = gp ? gp->phase : GRAD_BOTH;
  grad_scratch sc;
  mlp_kept_ *kp;
  float *da, *dg, *du;
  if (phase == GRAD_BWD) {
    sc = gp->sc;
    kp = gp->kept;
  } else {
    sc = grad_scratch_begin(m);
    if (!(kp = (mlp_kept_ *)grad_alloc(&sc, (int64_t)(sizeof *kp / sizeof(float)) + 1)) ||
        !(kp->gate = grad_alloc(&sc, rows * I)) || !(kp->up = grad_alloc(&sc, rows * I)) ||
        !(kp->a = grad_alloc(&sc, rows * I))) {
      grad_scratch_free(&sc);
      return FLA_NOMEM;
    }
    gm_linear_f(h, rows, D, L->mlp_gate, I, NULL, kp->gate);
    gm_linear_f(h, rows, D, L->mlp_up, I, NULL, kp->up);
    gm_swiglu_f(kp->gate, kp->up, rows * I, kp->a);
    if (phase == GRAD_FWD) {
      gm_linear_f(kp->a, rows, I, L->mlp_down, D, NULL, gp->out);
      gp->sc = sc;
      gp->kept = kp;
      return FLA_OK;
    }
  }
  if (!(da = grad_alloc(&sc, rows * I)) || !(dg = grad_alloc(&sc, rows * I)) || !(du = grad_alloc(&sc, rows * I))) {
    grad_scratch_free(&sc);
    return FLA_NOMEM;
  }
  gm_linear_bwd_f(kp->a, rows, I, L->mlp_down, D, dout, da, 0, model_grad(m, L->mlp_down), NULL);
  gm_swiglu_bwd_f(kp->gate, kp->up, rows * I, da, dg, du);
  gm_linear_bwd_f(h, rows, D, L->mlp_gate, I, dg, dh, 0, model_grad(m, L->mlp_gate), NULL);
  gm_linear_bwd_f(h, rows, D, L->mlp_up, I, du, dh, 1, model_grad(m, L->mlp_up), NULL);
  grad_scratch_free(&sc);
  return FLA_OK;
}

static fla_status mixer_grad_(const mixer_call *mc, const float *h, const float *dout, float *dh, grad_pass *gp) {
  if (mc->L->is_attn) return grad_mixer_attention(mc, h, dout, dh, gp);
  switch (mc->m->cfg.arch) {
  case ARCH_GLA:
  case ARCH_RETNET:
  case ARCH_HGRN2: return grad_mixer_linear(mc, h, dout, dh, gp);
  case ARCH_GATED_DELTANET:
  case ARCH_DELTA_NET:
  case ARCH_KDA: return grad_mixer_delta(mc, h, dout, dh, gp);
  case ARCH_RWKV6: return grad_mixer_rwkv6(mc, h, dout, dh, gp);
  case ARCH_TRANSFORMER: break;
  }
  return fla_set_error(mc->m->ctx, FLA_ERROR, "layer %d: no token mixer", mc->L->index);
}

/* HGRN2: lb_l = sum_{1<=j<=l} p_j with p = softmax over layers of the raw
** parameter, so dp_j = sum_{l>=j} dlb_l (j >= 1, dp_0 = 0) and
** draw_j = p_j (dp_j - sum_i p_i dp_i). */
static void lower_bounds_bwd_(fla_model *m) {
  int64_t L = m->cfg.num_layers, D = m->cfg.hidden_size;
  const float *raw = m->lower_bounds_raw;
  float *draw = model_grad(m, raw);
  for (int64_t d = 0; d < D; d++) {
    double mx = -INFINITY, sum = 0, acc = 0, dot = 0;
    for (int64_t l = 0; l < L; l++) mx = fmax(mx, raw[l * D + d]);
    for (int64_t l = 0; l < L; l++) sum += exp(raw[l * D + d] - mx);
    double dp[MODEL_MAX_LAYERS];
    for (int64_t l = L - 1; l >= 0; l--) {
      if (l >= 1) acc += m->dlower_bounds[l * D + d];
      dp[l] = l >= 1 ? acc : 0.0;
    }
    for (int64_t l = 0; l < L; l++) dot += exp(raw[l * D + d] - mx) / sum * dp[l];
    for (int64_t l = 0; l < L; l++) draw[l * D + d] += (float)(exp(raw[l * D + d] - mx) / sum * (dp[l] - dot));
  }
}

static fla_status check_args_(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B, int64_t T,
                              const double *loss_sum, const int64_t *count) {
  if (!m) return FLA_INVALID;
  if (!ids || !targets || !loss_sum || !count)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward: %s is NULL",
                         !ids ? "ids" : !targets ? "targets" : !loss_sum ? "loss_sum" : "count");
  if (!m->master)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward: the model is not trainable (call fla_model_enable_grad)");
  if (B < 1 || T < 1 || B > INT32_MAX)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward: B = %lld and T = %lld must be positive",
                         (long long)B, (long long)T);
  int V = m->cfg.vocab_size;
  for (int64_t i = 0; i < B * T; i++) {
    if (ids[i] < 0 || ids[i] >= V)
      return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward: token id %d at position %lld is outside the vocabulary [0, %d)",
                           ids[i], (long long)i, V);
    if ((targets[i] < 0 && targets[i] != -100) || targets[i] >= V)
      return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward: target %d at position %lld is outside the vocabulary [0, %d) and not -100",
                           targets[i], (long long)i, V);
  }
  return FLA_OK;
}

fla_status fla_model_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B, int64_t T,
                                   float grad_scale, double *loss_sum, int64_t *count) {
  fla_status s = check_args_(m, ids, targets, B, T, loss_sum, count);
  if (s != FLA_OK) return s;
  if (gpu_train_on(m)) {
    if (m->cfg.arch == ARCH_RWKV6) return gpu_train_rwkv6_loss_backward(m, ids, targets, B, T, grad_scale, loss_sum, count);
    return gpu_train_delta_arch(m) ? gpu_train_delta_loss_backward(m, ids, targets, B, T, grad_scale, loss_sum, count)
                                   : gpu_train_loss_backward(m, ids, targets, B, T, grad_scale, loss_sum, count);
  }
  if (m->ctx->backend != FLA_BACKEND_CPU)
    return fla_set_error(m->ctx, FLA_UNSUPPORTED, "fla_model_loss_backward: the model's device training state could not be made (fla_model_enable_grad failed)");
  const model_config *cfg = &m->cfg;
  int D = cfg->hidden_size, NL = cfg->num_layers;
  int64_t rows = B * T, RD = rows * D;
  grad_scratch sc = grad_scratch_begin(m);
  fla_cache *c = NULL;
  int64_t *pos = calloc((size_t)B, sizeof(int64_t));
  grad_pass *pass = calloc((size_t)(2 * NL), sizeof(grad_pass)); /* per layer: mixer, MLP */
  float *xs, *x0 = NULL, *h, *o, *dx, *dh, *tmp;
  if (!pos || !pass || !(xs = grad_alloc(&sc, (2 * (int64_t)NL + 1) * RD)) || !(h = grad_alloc(&sc, RD)) ||
      !(o = grad_alloc(&sc, RD)) || !(dx = grad_alloc(&sc, RD)) || !(dh = grad_alloc(&sc, RD)) ||
      !(tmp = grad_alloc(&sc, RD)) || (m->layers[0].pre_norm_w && !(x0 = grad_alloc(&sc, RD)))) {
    s = fla_set_error(m->ctx, FLA_NOMEM, "fla_model_loss_backward: out of memory for %lld tokens", (long long)rows);
    goto done;
  }
  if (m->lower_bounds_raw) {
    model_hgrn2_lower_bounds(m); /* the raw parameter may have been updated */
    free(m->dlower_bounds);
    if (!(m->dlower_bounds = calloc((size_t)(NL * D), sizeof(float)))) {
      s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
      goto done;
    }
  }
  if ((s = fla_cache_new(m, (int)B, &c))) goto done;
  grad_blas_threads(fla_ctx_threads(m->ctx)); /* the products use every thread (and every call alike) */
  gm_set_threads(fla_ctx_threads(m->ctx));
  /* forward: keep the residual stream at each layer's input and middle */
  float *x = xs + 2 * (int64_t)NL * RD; /* runs through the layers, ends as the final stream */
  for (int64_t i = 0; i < rows; i++) memcpy(x + i * D, m->embeddings + (int64_t)ids[i] * D, sizeof(float) * D);
  for (int l = 0; l < NL; l++) {
    model_layer *L = &m->layers[l];
    mixer_call mc = {m, L, &c->layers[l], 0, B, T, pos};
    if (L->pre_norm_w) {
      memcpy(x0, x, sizeof(float) * (size_t)RD);
      norm_fwd_(m, x0, rows, L->pre_norm_w, L->pre_norm_b, x);
    }
    memcpy(xs + 2 * (int64_t)l * RD, x, sizeof(float) * (size_t)RD);
    model_block_norm(m, x, rows, L->attn_norm_w, L->attn_norm_b, h);
    /* keeping activations: the grad mixer's forward when it can split */
    grad_pass *gm = &pass[2 * l], *gf = &pass[2 * l + 1];
    *gm = (grad_pass){m->recompute ? GRAD_BOTH : GRAD_FWD, o, NULL, {0}};
    s = gm->phase == GRAD_FWD ? mixer_grad_(&mc, h, NULL, NULL, gm) : FLA_UNSUPPORTED;
    if (s == FLA_UNSUPPORTED) { /* the model's forward: its op wants BLAS on one thread */
      gm->phase = GRAD_BOTH;
      grad_blas_threads(1);
      s = model_token_mixer(&mc, h, o);
      grad_blas_threads(fla_ctx_threads(m->ctx));
    }
    if (s) goto done;
    nn_add(x, o, RD);
    memcpy(xs + (2 * (int64_t)l + 1) * RD, x, sizeof(float) * (size_t)RD);
    model_block_norm(m, x, rows, L->mlp_norm_w, L->mlp_norm_b, h);
    *gf = (grad_pass){m->recompute ? GRAD_BOTH : GRAD_FWD, o, NULL, {0}};
    if (gf->phase == GRAD_FWD) s = cfg->arch == ARCH_RWKV6 ? grad_rwkv6_ffn(&mc, h, NULL, NULL, gf) : mlp_grad_(&mc, h, NULL, NULL, gf);
    else s = cfg->arch == ARCH_RWKV6 ? mixer_rwkv6_ffn(&mc, h, o) : model_mlp(&mc, h, o);
    if (s) goto done;
    nn_add(x, o, RD);
  }
  /* the head and the loss, chunk by chunk; dx = the final norm's backward */
  norm_fwd_(m, x, rows, m->final_norm_w, m->final_norm_b, h);
  int64_t chunk = HEAD_CHUNK_FLOATS / cfg->vocab_size;
  double loss = gm_head_ce_f(h, rows, D, m->lm_head, cfg->vocab_size, targets, grad_scale, chunk, dh,
                             model_grad(m, m->lm_head), count);
  if (isnan(loss)) {
    s = fla_set_error(m->ctx, FLA_NOMEM, "fla_model_loss_backward: out of memory for the logits of a chunk");
    goto done;
  }
  *loss_sum = loss;
  memset(dx, 0, sizeof(float) * (size_t)RD);
  norm_bwd_(m, x, rows, m->final_norm_w, m->final_norm_b, dh, tmp, dx);
  for (int l = NL - 1; l >= 0; l--) {
    model_layer *L = &m->layers[l];
    mixer_call mc = {m, L, &c->layers[l], 0, B, T, pos};
    const float *xin = xs + 2 * (int64_t)l * RD, *xmid = xs + (2 * (int64_t)l + 1) * RD;
    grad_pass *gm = &pass[2 * l], *gf = &pass[2 * l + 1];
    if (gm->phase == GRAD_FWD) gm->phase = GRAD_BWD;
    if (gf->phase == GRAD_FWD) gf->phase = GRAD_BWD;
    model_block_norm(m, xmid, rows, L->mlp_norm_w, L->mlp_norm_b, h);
    s = cfg->arch == ARCH_RWKV6 ? grad_rwkv6_ffn(&mc, h, dx, dh, gf) : mlp_grad_(&mc, h, dx, dh, gf);
    gf->phase = GRAD_BOTH; /* its scratch is given back */
    if (s) goto done;
    norm_bwd_(m, xmid, rows, L->mlp_norm_w, L->mlp_norm_b, dh, tmp, dx);
    model_block_norm(m, xin, rows, L->attn_norm_w, L->attn_norm_b, h);
    s = mixer_grad_(&mc, h, dx, dh, gm);
    gm->phase = GRAD_BOTH;
    if (s) goto done;
    norm_bwd_(m, xin, rows, L->attn_norm_w, L->attn_norm_b, dh, tmp, dx);
    if (L->pre_norm_w) { /* dx = pre_norm'(x0)^T dx */
      memcpy(dh, dx, sizeof(float) * (size_t)RD);
      memset(dx, 0, sizeof(float) * (size_t)RD);
      norm_bwd_(m, x0, rows, L->pre_norm_w, L->pre_norm_b, dh, tmp, dx);
    }
  }
  float *dE = model_grad(m, m->embeddings);
  for (int64_t i = 0; i < rows; i++) {
    float *row = dE + (int64_t)ids[i] * D;
    for (int d = 0; d < D; d++) row[d] += dx[i * D + d];
  }
  if (m->lower_bounds_raw) lower_bounds_bwd_(m);
done:
  grad_blas_threads(1); /* as the recipe core leaves it for the model's forward */
  fla_cache_free(c);
  free(pos);
  free(pass); /* on error, kept scratch above sc's mark goes with it */
  grad_scratch_free(&sc);
  return s;
}

fla_status fla_model_loss_backward_varlen(fla_model *m, const int32_t *ids, const int32_t *targets,
                                          const int64_t *cu_seqlens, int64_t num_docs, float grad_scale,
                                          double *loss_sum, int64_t *count) {
  if (!m) return FLA_INVALID;
  if (!cu_seqlens || !loss_sum || !count)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward_varlen: %s is NULL",
                         !cu_seqlens ? "cu_seqlens" : !loss_sum ? "loss_sum" : "count");
  if (num_docs < 1 || cu_seqlens[0] != 0)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward_varlen: %lld documents, cu_seqlens[0] = %lld (must be 0)",
                         (long long)num_docs, (long long)cu_seqlens[0]);
  for (int64_t i = 0; i < num_docs; i++)
    if (cu_seqlens[i + 1] <= cu_seqlens[i])
      return fla_set_error(m->ctx, FLA_INVALID, "fla_model_loss_backward_varlen: cu_seqlens[%lld] = %lld does not exceed cu_seqlens[%lld] = %lld (empty or backward document)",
                           (long long)(i + 1), (long long)cu_seqlens[i + 1], (long long)i, (long long)cu_seqlens[i]);
  double total = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < num_docs;) {
    int64_t T = cu_seqlens[i + 1] - cu_seqlens[i], j = i + 1;
    while (j < num_docs && cu_seqlens[j + 1] - cu_seqlens[j] == T) j++; /* a run of equal lengths: a batch */
    double l;
    int64_t c;
    fla_status s = fla_model_loss_backward(m, ids ? ids + cu_seqlens[i] : NULL, targets ? targets + cu_seqlens[i] : NULL,
                                           j - i, T, grad_scale, &l, &c);
    if (s != FLA_OK) return s;
    total += l;
    n += c;
    i = j;
  }
  *loss_sum = total;
  *count = n;
  return FLA_OK;
}
