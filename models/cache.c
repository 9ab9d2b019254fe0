/*
** cache.c -- the per-sequence generation state of every layer (model_internal.h,
** layer_cache): recurrent states, convolution windows, RWKV-6 token shifts, and
** the key/value rows of softmax attention, grown as tokens come.
*/
#include "internal.h"
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

static void layer_cache_free_(layer_cache *lc, int N) {
  free(lc->state);
  for (int j = 0; j < 3; j++) free(lc->conv[j]);
  free(lc->shift_attn);
  free(lc->shift_ffn);
  for (int i = 0; lc->k && i < N; i++) free(lc->k[i]);
  for (int i = 0; lc->v && i < N; i++) free(lc->v[i]);
  free(lc->k);
  free(lc->v);
  free(lc->kv_len);
  free(lc->kv_cap);
  free(lc->kv_start);
}

void fla_cache_free(fla_cache *c) {
  if (!c) return;
  gpu_cache_free(c);
  for (int l = 0; c->layers && l < c->m->cfg.num_layers; l++) layer_cache_free_(&c->layers[l], c->N);
  free(c->layers);
  free(c->pos);
  free(c);
}

static int layer_cache_init_(const fla_model *m, const model_layer *L, layer_cache *lc, int N) {
  const model_config *cfg = &m->cfg;
  size_t n = (size_t)N;
  if (L->is_attn) {
    lc->k = calloc(n, sizeof(float *));
    lc->v = calloc(n, sizeof(float *));
    lc->kv_len = calloc(n, sizeof(int64_t));
    lc->kv_cap = calloc(n, sizeof(int64_t));
    lc->kv_start = calloc(n, sizeof(int64_t));
    return lc->k && lc->v && lc->kv_len && lc->kv_cap && lc->kv_start;
  }
  lc->state_size = (int64_t)L->H * L->K * L->V;
  if (!(lc->state = calloc(n * (size_t)lc->state_size, sizeof(float)))) return 0;
  if (cfg->use_short_conv && cfg->arch != ARCH_RWKV6)
    for (int j = 0; j < 3; j++)
      if (!(lc->conv[j] = calloc(n * (size_t)L->conv[j].channels * (size_t)(cfg->conv_size - 1) + 1, sizeof(float))))
        return 0;
  if (cfg->arch == ARCH_RWKV6) {
    lc->shift_attn = calloc(n * (size_t)cfg->hidden_size, sizeof(float));
    if (!lc->shift_attn) return 0;
  }
  return 1;
}

fla_status fla_cache_new(fla_model *m, int num_seqs, fla_cache **out) {
  if (!out) return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_cache_new: out is NULL");
  *out = NULL;
  if (!m || num_seqs < 1)
    return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_cache_new: no model, or num_seqs %d < 1", num_seqs);
  fla_cache *c = calloc(1, sizeof *c);
  if (!c) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  c->m = m;
  c->N = num_seqs;
  c->pos = calloc((size_t)num_seqs, sizeof(int64_t));
  c->layers = calloc((size_t)m->cfg.num_layers, sizeof(layer_cache));
  int ok = c->pos && c->layers;
  if (ok && m->gpu) { /* the state lives on the device */
    fla_status s = gpu_cache_new(c);
    if (s != FLA_OK) fla_cache_free(c);
    else *out = c;
    return s;
  }
  for (int l = 0; ok && l < m->cfg.num_layers; l++) {
    ok = layer_cache_init_(m, &m->layers[l], &c->layers[l], num_seqs);
    /* RWKV-6's channel mix shifts in every layer, attention or not */
    if (ok && m->cfg.arch == ARCH_RWKV6)
      ok = (c->layers[l].shift_ffn = calloc((size_t)num_seqs * (size_t)m->cfg.hidden_size, sizeof(float))) != NULL;
  }
  if (!ok) {
    fla_cache_free(c);
    return fla_set_error(m->ctx, FLA_NOMEM, "out of memory for a cache of %d sequences", num_seqs);
  }
  *out = c;
  return FLA_OK;
}

fla_status fla_cache_reset(fla_cache *c, int seq) {
  if (!c || seq < 0 || seq >= c->N) return FLA_INVALID;
  const fla_model *m = c->m;
  if (c->gpu) {
    gpu_cache_reset(c, seq);
    c->pos[seq] = 0;
    return FLA_OK;
  }
  int64_t D = m->cfg.hidden_size, W1 = m->cfg.conv_size - 1;
  for (int l = 0; l < m->cfg.num_layers; l++) {
    layer_cache *lc = &c->layers[l];
    const model_layer *L = &m->layers[l];
    if (lc->state) memset(lc->state + seq * lc->state_size, 0, sizeof(float) * (size_t)lc->state_size);
    for (int j = 0; j < 3; j++)
      if (lc->conv[j]) memset(lc->conv[j] + seq * L->conv[j].channels * W1, 0, sizeof(float) * (size_t)(L->conv[j].channels * W1));
    if (lc->shift_attn) memset(lc->shift_attn + seq * D, 0, sizeof(float) * (size_t)D);
    if (lc->shift_ffn) memset(lc->shift_ffn + seq * D, 0, sizeof(float) * (size_t)D);
    if (lc->kv_len) lc->kv_len[seq] = lc->kv_start[seq] = 0;
  }
  c->pos[seq] = 0;
  return FLA_OK;
}

int64_t fla_cache_length(const fla_cache *c, int seq) {
  return c && seq >= 0 && seq < c->N ? c->pos[seq] : 0;
}
