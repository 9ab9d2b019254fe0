/*
** mixer_attention.c -- softmax attention (fla/layers/attn.py): a Transformer's
** layers and the `attn` layers of hybrids.
**
**   q = Wq x, k = Wk x, v = Wv x (+ biases with qkv_bias); rotary on q and k at
**   the tokens' positions; k and v appended to the sequence's cache;
**   o = softmax(q k^T / sqrt(d)) v, causal, over the last window_size keys when
**   set, KV head h / (Hq/Hkv) for query head h; out = Wo o.
** Under a window the cache keeps only the last window_size rows.
*/
#include "internal.h"
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

/* Appends n rows of width w to sequence i's cache. 0, or -1 when out of memory. */
static int append_(layer_cache *lc, int i, const float *k, const float *v, int64_t n, int w) {
  if (lc->kv_len[i] + n > lc->kv_cap[i]) {
    int64_t cap = lc->kv_cap[i] ? lc->kv_cap[i] : 64;
    while (cap < lc->kv_len[i] + n) cap *= 2;
    float *nk = realloc(lc->k[i], sizeof(float) * (size_t)(cap * w));
    if (!nk) return -1;
    lc->k[i] = nk;
    float *nv = realloc(lc->v[i], sizeof(float) * (size_t)(cap * w));
    if (!nv) return -1;
    lc->v[i] = nv;
    lc->kv_cap[i] = cap;
  }
  memcpy(lc->k[i] + lc->kv_len[i] * w, k, sizeof(float) * (size_t)(n * w));
  memcpy(lc->v[i] + lc->kv_len[i] * w, v, sizeof(float) * (size_t)(n * w));
  lc->kv_len[i] += n;
  return 0;
}

/* Drops rows no later query can see (all but the last `keep`). */
static void trim_(layer_cache *lc, int i, int64_t keep, int w) {
  int64_t drop = lc->kv_len[i] - keep;
  if (drop <= 0) return;
  memmove(lc->k[i], lc->k[i] + drop * w, sizeof(float) * (size_t)(keep * w));
  memmove(lc->v[i], lc->v[i] + drop * w, sizeof(float) * (size_t)(keep * w));
  lc->kv_len[i] = keep;
  lc->kv_start[i] += drop;
}

fla_status mixer_attention(const mixer_call *mc, const float *x, float *out) {
  const model_layer *L = mc->L;
  fla_ctx *ctx = mc->m->ctx;
  layer_cache *lc = mc->lc;
  int64_t rows = mc->B * mc->T, T = mc->T;
  int D = mc->m->cfg.hidden_size, Hq = L->H, Hkv = L->Hkv, d = L->K;
  int qw = Hq * d, kw = Hkv * d;
  float *q = model_alloc(ctx, rows * qw), *k = model_alloc(ctx, rows * kw);
  float *v = model_alloc(ctx, rows * kw), *o = model_alloc(ctx, rows * qw);
  fla_status s = FLA_NOMEM;
  if (!q || !k || !v || !o) goto done;
  nn_linear(x, rows, D, L->q_proj, qw, L->qkv_bias[0], q);
  nn_linear(x, rows, D, L->k_proj, kw, L->qkv_bias[1], k);
  nn_linear(x, rows, D, L->v_proj, kw, L->qkv_bias[2], v);
  for (int64_t b = 0; b < mc->B; b++) {
    int i = mc->slot0 + (int)b;
    float *qb = q + b * T * qw, *kb = k + b * T * kw, *vb = v + b * T * kw;
    nn_rotary(qb, T, Hq, d, mc->pos[b], L->attn.rope_theta);
    nn_rotary(kb, T, Hkv, d, mc->pos[b], L->attn.rope_theta);
    if (append_(lc, i, kb, vb, T, kw)) {
      s = fla_set_error(ctx, FLA_NOMEM, "layer %d: out of memory for the key/value cache", L->index);
      goto done;
    }
    nn_attention(qb, T, Hq, d, mc->pos[b], lc->k[i], lc->v[i], lc->kv_len[i], Hkv, lc->kv_start[i],
                 L->attn.window, o + b * T * qw);
    if (L->attn.window > 0) trim_(lc, i, L->attn.window, kw);
  }
  nn_linear(o, rows, qw, L->o_proj, D, NULL, out);
  s = FLA_OK;
done:
  free(q);
  free(k);
  free(v);
  free(o);
  return s;
}
