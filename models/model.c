/*
** model.c -- loading an fla checkpoint into layers, and the forward over them.
**
** A block (fla/models/<arch>/modeling_<arch>.py) is, for every architecture but
** RWKV-6:   x += mixer(rmsnorm(x));  x += mlp(rmsnorm(x)),  mlp = down(silu(gate x) * up x)
** RWKV-6:   layer 0 first does x = layernorm(x) (norm_first); then
**           x += time_mix(layernorm(x));  x += channel_mix(layernorm(x))
** and the model is logits = lm_head(norm(blocks(embeddings[ids]))).
*/
#include "internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *model_alloc(fla_ctx *ctx, int64_t n) {
  float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  if (!p) fla_set_error(ctx, FLA_NOMEM, "cannot allocate %lld floats", (long long)n);
  return p;
}

/* ------------------------------------------------------------ loading */

#define I64(x) ((int64_t)(x))
#define TRY(expr) do { fla_status s_ = (expr); if (s_ != FLA_OK) return s_; } while (0)

fla_status model_register_param(fla_model *m, const char *name, int ndim, const int64_t *shape,
                                const float **slot) {
  if (m->num_params == m->cap_params) {
    int cap = m->cap_params ? 2 * m->cap_params : 64;
    model_param *p = realloc(m->params, sizeof *p * (size_t)cap);
    if (!p) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
    m->params = p;
    m->cap_params = cap;
  }
  model_param *p = &m->params[m->num_params++];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndim = ndim;
  p->numel = 1;
  for (int i = 0; i < ndim; i++) p->numel *= (p->shape[i] = shape[i]);
  p->slot = slot;
  return FLA_OK;
}

typedef struct {
  fla_model *m;
  int layer; /* -1: a model-level tensor */
} loader;

/* Fetches "model.layers.<layer>.<suffix>" (or the name as is at model level)
** with the shape given as ndim sizes. */
static fla_status get_(loader *ld, const float **out, const char *suffix, int ndim, ...) {
  int64_t shape[4];
  va_list ap;
  va_start(ap, ndim);
  for (int i = 0; i < ndim; i++) shape[i] = va_arg(ap, int64_t);
  va_end(ap);
  char name[256];
  if (ld->layer >= 0) snprintf(name, sizeof name, "model.layers.%d.%s", ld->layer, suffix);
  else snprintf(name, sizeof name, "%s", suffix);
  TRY(model_register_param(ld->m, name, ndim, shape, out));
  if (!ld->m->weights) { /* fla_model_create: the memory comes after the last tensor */
    *out = NULL;
    return FLA_OK;
  }
  fla_status s = weights_get(ld->m->weights, name, ndim, shape, out);
  if (s == FLA_OK && ld->m->ctx->backend == FLA_BACKEND_CUDA) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    s = gpu_register_weight(ld->m, *out, n);
  }
  return s;
}

/* Whether the files hold `name` (never for a model made from a config alone). */
static int has_(const fla_model *m, const char *name) {
  return m->weights && weights_has(m->weights, name);
}


static fla_status load_conv_(loader *ld, model_layer *L, int j, const char *name, int64_t C) {
  const model_config *c = &ld->m->cfg;
  L->conv[j].channels = (int)C;
  if (!c->use_short_conv) return FLA_OK;
  char full[64];
  snprintf(full, sizeof full, "attn.%s.weight", name);
  TRY(get_(ld, &L->conv[j].w, full, 3, C, I64(1), I64(c->conv_size)));
  snprintf(full, sizeof full, "model.layers.%d.attn.%s.bias", ld->layer, name);
  if (has_(ld->m, full)) { /* conv_bias is not in config.json */
    snprintf(full, sizeof full, "attn.%s.bias", name);
    TRY(get_(ld, &L->conv[j].b, full, 1, C));
  }
  return FLA_OK;
}

static fla_status load_attention_(loader *ld, model_layer *L) {
  int64_t D = ld->m->cfg.hidden_size, d = D / L->attn.num_heads, kv = L->attn.num_kv_heads * d;
  L->H = L->attn.num_heads;
  L->Hkv = L->attn.num_kv_heads;
  L->K = L->V = (int)d;
  TRY(get_(ld, &L->q_proj, "attn.q_proj.weight", 2, D, D));
  TRY(get_(ld, &L->k_proj, "attn.k_proj.weight", 2, kv, D));
  TRY(get_(ld, &L->v_proj, "attn.v_proj.weight", 2, kv, D));
  TRY(get_(ld, &L->o_proj, "attn.o_proj.weight", 2, D, D));
  if (L->attn.qkv_bias) {
    TRY(get_(ld, &L->qkv_bias[0], "attn.q_proj.bias", 1, D));
    TRY(get_(ld, &L->qkv_bias[1], "attn.k_proj.bias", 1, kv));
    TRY(get_(ld, &L->qkv_bias[2], "attn.v_proj.bias", 1, kv));
  }
  return FLA_OK;
}

/* GLA and RetNet: q, k, v (k, v per KV head), output gate, norm of each head. */
static fla_status load_gla_retnet_(loader *ld, model_layer *L) {
  const model_config *c = &ld->m->cfg;
  int64_t D = c->hidden_size, key = (int64_t)(D * c->expand_k), val = (int64_t)(D * c->expand_v);
  L->H = c->num_heads;
  L->Hkv = c->num_kv_heads;
  if (L->Hkv <= 0 || L->H % L->Hkv || key % L->H || val % L->H)
    return fla_set_error(ld->m->ctx, FLA_FORMAT, "config.json: num_heads %d, num_kv_heads %d do not divide the key dim %lld and value dim %lld",
                         L->H, L->Hkv, (long long)key, (long long)val);
  L->K = (int)(key / L->H);
  L->V = (int)(val / L->H);
  int64_t g = L->H / L->Hkv;
  TRY(get_(ld, &L->q_proj, "attn.q_proj.weight", 2, key, D));
  TRY(get_(ld, &L->k_proj, "attn.k_proj.weight", 2, key / g, D));
  TRY(get_(ld, &L->v_proj, "attn.v_proj.weight", 2, val / g, D));
  TRY(get_(ld, &L->o_proj, "attn.o_proj.weight", 2, D, val));
  TRY(load_conv_(ld, L, 0, "q_conv1d", key));
  TRY(load_conv_(ld, L, 1, "k_conv1d", key / g));
  TRY(load_conv_(ld, L, 2, "v_conv1d", val / g));
  if (c->use_output_gate) TRY(get_(ld, &L->g_proj, "attn.g_proj.weight", 2, val, D));
  const char *norm = c->fuse_norm && c->use_output_gate ? "attn.g_norm_swish_gate.weight" : "attn.g_norm.weight";
  TRY(get_(ld, &L->out_norm, norm, 1, I64(L->V)));
  if (c->arch == ARCH_GLA) { /* gate_low_rank_dim is fixed at 16 by GLABlock */
    TRY(get_(ld, &L->gk_proj0, "attn.gk_proj.0.weight", 2, I64(16), D));
    TRY(get_(ld, &L->gk_proj1, "attn.gk_proj.1.weight", 2, key / g, I64(16)));
    TRY(get_(ld, &L->gk_proj1_b, "attn.gk_proj.1.bias", 1, key / g));
  }
  return FLA_OK;
}

/* DeltaNet, Gated DeltaNet, KDA. */
static fla_status load_delta_(loader *ld, model_layer *L) {
  const model_config *c = &ld->m->cfg;
  int64_t D = c->hidden_size, H = c->num_heads;
  L->H = L->Hkv = (int)H;
  if (c->arch == ARCH_DELTA_NET) {
    int64_t key = (int64_t)(D * c->expand_k), val = (int64_t)(D * c->expand_v);
    if (key % H || val % H)
      return fla_set_error(ld->m->ctx, FLA_FORMAT, "config.json: num_heads %lld does not divide the key and value dims", (long long)H);
    L->K = (int)(key / H);
    L->V = (int)(val / H);
  } else {
    L->K = c->head_dim;
    L->V = (int)(c->head_dim * c->expand_v);
  }
  int64_t key = H * L->K, val = H * L->V;
  TRY(get_(ld, &L->q_proj, "attn.q_proj.weight", 2, key, D));
  TRY(get_(ld, &L->k_proj, "attn.k_proj.weight", 2, key, D));
  TRY(get_(ld, &L->v_proj, "attn.v_proj.weight", 2, val, D));
  TRY(get_(ld, &L->o_proj, "attn.o_proj.weight", 2, D, val));
  TRY(load_conv_(ld, L, 0, "q_conv1d", key));
  TRY(load_conv_(ld, L, 1, "k_conv1d", key));
  TRY(load_conv_(ld, L, 2, "v_conv1d", val));
  TRY(get_(ld, &L->out_norm, "attn.o_norm.weight", 1, I64(L->V)));
  if (c->arch != ARCH_DELTA_NET || c->use_beta) TRY(get_(ld, &L->b_proj, "attn.b_proj.weight", 2, H, D));
  if (c->arch == ARCH_GATED_DELTANET) {
    TRY(get_(ld, &L->a_proj, "attn.a_proj.weight", 2, H, D));
    TRY(get_(ld, &L->A_log, "attn.A_log", 1, H));
    TRY(get_(ld, &L->dt_bias, "attn.dt_bias", 1, H));
  }
  if (c->arch != ARCH_KDA && c->use_gate) TRY(get_(ld, &L->g_proj, "attn.g_proj.weight", 2, val, D));
  if (c->arch == ARCH_KDA) {
    TRY(get_(ld, &L->f_proj0, "attn.f_proj.0.weight", 2, I64(L->V), D));
    TRY(get_(ld, &L->f_proj1, "attn.f_proj.1.weight", 2, key, I64(L->V)));
    TRY(get_(ld, &L->A_log, "attn.A_log", 1, H));
    TRY(get_(ld, &L->dt_bias, "attn.dt_bias", 1, key));
    TRY(get_(ld, &L->g_proj0, "attn.g_proj.0.weight", 2, I64(L->V), D));
    TRY(get_(ld, &L->g_proj1, "attn.g_proj.1.weight", 2, val, I64(L->V)));
    TRY(get_(ld, &L->g_proj1_b, "attn.g_proj.1.bias", 1, val));
  }
  return FLA_OK;
}

static fla_status load_hgrn2_(loader *ld, model_layer *L) {
  const model_config *c = &ld->m->cfg;
  int64_t D = c->hidden_size;
  L->H = L->Hkv = c->num_heads;
  L->K = c->expand_ratio;
  L->V = (int)(D / c->num_heads);
  int64_t fdim = (int64_t)L->H * L->K;
  TRY(get_(ld, &L->q_proj, "attn.q_proj.weight", 2, fdim, D));
  TRY(get_(ld, &L->f_proj, "attn.f_proj.weight", 2, fdim, D));
  TRY(get_(ld, &L->i_proj, "attn.i_proj.weight", 2, D, D));
  TRY(get_(ld, &L->o_proj, "attn.o_proj.weight", 2, D, D));
  TRY(get_(ld, &L->out_norm, "attn.g_norm.weight", 1, D));
  TRY(load_conv_(ld, L, 0, "q_conv1d", fdim));
  TRY(load_conv_(ld, L, 1, "f_conv1d", fdim));
  TRY(load_conv_(ld, L, 2, "i_conv1d", D));
  return FLA_OK;
}

static fla_status load_rwkv6_(loader *ld, model_layer *L) {
  const model_config *c = &ld->m->cfg;
  int64_t D = c->hidden_size, key = (int64_t)(D * c->expand_k), val = (int64_t)(D * c->expand_v);
  int64_t R = c->proj_low_rank_dim, G = c->gate_low_rank_dim;
  L->H = L->Hkv = c->num_heads;
  L->K = (int)(key / L->H);
  L->V = (int)(val / L->H);
  L->low_rank = (int)R;
  TRY(get_(ld, &L->x_proj0, "attn.x_proj.0.linear.weight", 2, 5 * R, D));
  TRY(get_(ld, &L->x_mu, "attn.x_proj.0.mu", 1, D));
  TRY(get_(ld, &L->x_proj2, "attn.x_proj.2.weight", 2, D, 5 * R));
  TRY(get_(ld, &L->x_bias, "attn.x_bias", 2, I64(5), D));
  TRY(get_(ld, &L->q_proj, "attn.r_proj.linear.weight", 2, key, D));
  TRY(get_(ld, &L->w_lora0, "attn.w_proj.linear.lora.0.weight", 2, G, D));
  TRY(get_(ld, &L->w_lora2, "attn.w_proj.linear.lora.2.weight", 2, key, G));
  TRY(get_(ld, &L->w_lora2_b, "attn.w_proj.linear.lora.2.bias", 1, key));
  TRY(get_(ld, &L->k_proj, "attn.k_proj.linear.weight", 2, key, D));
  TRY(get_(ld, &L->v_proj, "attn.v_proj.linear.weight", 2, val, D));
  TRY(get_(ld, &L->g_proj, "attn.g_proj.linear.weight", 2, val, D));
  TRY(get_(ld, &L->bonus, "attn.bonus", 2, I64(L->H), I64(L->K)));
  TRY(get_(ld, &L->out_norm, "attn.g_norm.weight", 1, val));
  TRY(get_(ld, &L->out_norm_b, "attn.g_norm.bias", 1, val));
  TRY(get_(ld, &L->o_proj, "attn.o_proj.weight", 2, D, val));
  return FLA_OK;
}

static fla_status load_ffn_(loader *ld, model_layer *L) {
  const model_config *c = &ld->m->cfg;
  int64_t D = c->hidden_size, I = c->intermediate_size;
  L->ffn_dim = (int)I;
  if (c->arch == ARCH_RWKV6) {
    TRY(get_(ld, &L->ffn_key, "ffn.key.linear.weight", 2, I, D));
    TRY(get_(ld, &L->ffn_key_mu, "ffn.key.mu", 1, D));
    TRY(get_(ld, &L->ffn_value, "ffn.value.weight", 2, D, I));
    TRY(get_(ld, &L->ffn_rec, "ffn.receptance.linear.weight", 2, D, D));
    TRY(get_(ld, &L->ffn_rec_mu, "ffn.receptance.mu", 1, D));
    return FLA_OK;
  }
  TRY(get_(ld, &L->mlp_gate, "mlp.gate_proj.weight", 2, I, D));
  TRY(get_(ld, &L->mlp_up, "mlp.up_proj.weight", 2, I, D));
  TRY(get_(ld, &L->mlp_down, "mlp.down_proj.weight", 2, D, I));
  return FLA_OK;
}

static fla_status load_layer_(fla_model *m, int i) {
  const model_config *c = &m->cfg;
  model_layer *L = &m->layers[i];
  loader ld = {m, i};
  int64_t D = c->hidden_size;
  L->index = i;
  L->is_attn = c->has_attn[i];
  L->attn = c->attn[i];
  if (c->arch == ARCH_RWKV6) { /* LayerNorms, with biases when norm_bias */
    if (c->norm_first && i == 0) {
      TRY(get_(&ld, &L->pre_norm_w, "pre_norm.weight", 1, D));
      if (c->norm_bias) TRY(get_(&ld, &L->pre_norm_b, "pre_norm.bias", 1, D));
    }
    TRY(get_(&ld, &L->attn_norm_w, "attn_norm.weight", 1, D));
    TRY(get_(&ld, &L->mlp_norm_w, "ffn_norm.weight", 1, D));
    if (c->norm_bias) {
      TRY(get_(&ld, &L->attn_norm_b, "attn_norm.bias", 1, D));
      TRY(get_(&ld, &L->mlp_norm_b, "ffn_norm.bias", 1, D));
    }
  } else {
    TRY(get_(&ld, &L->attn_norm_w, "attn_norm.weight", 1, D));
    TRY(get_(&ld, &L->mlp_norm_w, "mlp_norm.weight", 1, D));
  }
  TRY(load_ffn_(&ld, L));
  if (L->is_attn) return load_attention_(&ld, L);
  switch (c->arch) {
  case ARCH_GLA:
  case ARCH_RETNET: return load_gla_retnet_(&ld, L);
  case ARCH_GATED_DELTANET:
  case ARCH_DELTA_NET:
  case ARCH_KDA: return load_delta_(&ld, L);
  case ARCH_HGRN2: return load_hgrn2_(&ld, L);
  case ARCH_RWKV6: return load_rwkv6_(&ld, L);
  case ARCH_TRANSFORMER: break;
  }
  return fla_set_error(m->ctx, FLA_ERROR, "layer %d: no token mixer", i);
}

static const char *recipe_of_(model_arch a) {
  switch (a) {
  case ARCH_GLA: return "gla";
  case ARCH_GATED_DELTANET: return "gated_delta_rule";
  case ARCH_RETNET: return "retention";
  case ARCH_DELTA_NET: return "delta_rule";
  case ARCH_KDA: return "kda";
  case ARCH_HGRN2: return "hgrn2";
  case ARCH_RWKV6: return "rwkv6";
  case ARCH_TRANSFORMER: return NULL;
  }
  return NULL;
}

/* HGRN2's per-layer forget-gate floors: softmax over layers, cumsum, minus the
** first (so layer 0 has none): lb[l] = sum_{j<=l} p_j - p_0. */
void model_hgrn2_lower_bounds(fla_model *m) {
  const model_config *c = &m->cfg;
  int64_t L = c->num_layers, D = c->hidden_size;
  const float *raw = m->lower_bounds_raw;
  if (!raw || !m->lower_bounds) return;
  for (int64_t d = 0; d < D; d++) {
    double mx = -INFINITY, sum = 0, acc = 0, first = 0;
    for (int64_t l = 0; l < L; l++) mx = fmax(mx, raw[l * D + d]);
    for (int64_t l = 0; l < L; l++) sum += exp(raw[l * D + d] - mx);
    for (int64_t l = 0; l < L; l++) {
      double p = exp(raw[l * D + d] - mx) / sum;
      if (l == 0) first = p;
      acc += p;
      m->lower_bounds[l * D + d] = (float)(acc - first);
    }
  }
  for (int64_t l = 1; l < L; l++) m->layers[l].lower_bound = m->lower_bounds + l * D;
}

static fla_status hgrn2_lower_bounds_(fla_model *m) {
  int64_t L = m->cfg.num_layers, D = m->cfg.hidden_size;
  loader ld = {m, -1};
  TRY(get_(&ld, &m->lower_bounds_raw, "model.lower_bounds", 2, L, D));
  if (!(m->lower_bounds = model_alloc(m->ctx, L * D))) return FLA_NOMEM;
  return FLA_OK;
}

/* Every tensor of the config, from the files or (no files) registered only. */
fla_status model_build(fla_model *m) {
  const model_config *c = &m->cfg;
  if (!(m->layers = calloc((size_t)c->num_layers, sizeof(model_layer))))
    return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  int64_t D = c->hidden_size, Vb = c->vocab_size;
  loader ld = {m, -1};
  TRY(get_(&ld, &m->embeddings, "model.embeddings.weight", 2, Vb, D));
  TRY(get_(&ld, &m->final_norm_w, "model.norm.weight", 1, D));
  if (c->arch == ARCH_RWKV6 && c->norm_bias) TRY(get_(&ld, &m->final_norm_b, "model.norm.bias", 1, D));
  m->tied_head = c->tie_word_embeddings && !has_(m, "lm_head.weight"); /* = embeddings */
  if (!m->tied_head) TRY(get_(&ld, &m->lm_head, "lm_head.weight", 2, Vb, D));
  fla_recipe *recipe = NULL;
  for (int i = 0; i < c->num_layers; i++) {
    TRY(load_layer_(m, i));
    if (!m->layers[i].is_attn) {
      if (!recipe) TRY(fla_recipe_find(m->ctx, recipe_of_(c->arch), &recipe));
      m->layers[i].recipe = recipe;
    }
  }
  if (c->arch == ARCH_HGRN2 && c->use_lower_bound) TRY(hgrn2_lower_bounds_(m));
  return m->weights ? weights_check_all_used(m->weights) : FLA_OK;
}

/* What every tensor's data being known implies: a tied head, HGRN2's floors. */
void model_finish_weights(fla_model *m) {
  if (m->tied_head) m->lm_head = m->embeddings;
  model_hgrn2_lower_bounds(m);
}

fla_status model_read_text(fla_ctx *ctx, const char *path, char **out) {
  FILE *f = fopen(path, "rb");
  if (!f) return fla_set_error(ctx, FLA_IO, "%s: cannot open", path);
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - 1 - n, f);
    if (n < cap - 1) break;
    char *nb = realloc(buf, cap *= 2);
    if (!nb) free(buf);
    buf = nb;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf) return fla_set_error(ctx, FLA_NOMEM, "%s: out of memory", path);
  if (err) {
    free(buf);
    return fla_set_error(ctx, FLA_IO, "%s: read error", path);
  }
  buf[n] = 0;
  *out = buf;
  return FLA_OK;
}

/* dir: the checkpoint; NULL: random weights from seed (config_path alone). */
static fla_status load_(fla_model *m, const char *dir, const char *config_path, uint64_t seed) {
  char path[4096];
  if (dir) snprintf(path, sizeof path, "%s/config.json", dir);
  else snprintf(path, sizeof path, "%s", config_path);
  TRY(model_config_load(m->ctx, path, &m->cfg));
  TRY(model_read_text(m->ctx, path, &m->config_json));
  if (dir) TRY(weights_open(m->ctx, dir, &m->weights));
  else TRY(weights_open_random(m->ctx, seed, &m->weights));
  TRY(model_build(m));
  model_finish_weights(m);
  return FLA_OK;
}

static fla_status load_any_(fla_ctx *ctx, const char *dir, const char *config_path, uint64_t seed,
                            int dtype, fla_model **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_model_load: out is NULL");
  *out = NULL;
  if (!ctx || (!dir && !config_path))
    return fla_set_error(ctx, FLA_INVALID, "fla_model_load: %s is NULL", !ctx ? "ctx" : "dir");
  if (ctx->backend != FLA_BACKEND_CPU && ctx->backend != FLA_BACKEND_CUDA)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "fla_model_load: models run on the CPU and CUDA backends");
  if (dtype != -1 && dtype != FLA_F32 && dtype != FLA_BF16)
    return fla_set_error(ctx, FLA_INVALID, "fla_model_load_ex: dtype must be FLA_F32, FLA_BF16 or -1 (the checkpoint's)");
  fla_model *m = calloc(1, sizeof *m);
  if (!m) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  m->ctx = ctx;
  fla_status s = load_(m, dir, config_path, seed);
  if (s == FLA_OK && ctx->backend == FLA_BACKEND_CUDA) {
    fla_dtype dt = dtype >= 0 ? (fla_dtype)dtype : weights_half(m->weights) ? FLA_BF16 : FLA_F32;
    s = gpu_model_upload(m, dt);
  }
  if (s != FLA_OK) {
    fla_model_free(m);
    return s;
  }
  *out = m;
  return FLA_OK;
}

fla_status fla_model_load(fla_ctx *ctx, const char *dir, fla_model **out) {
  return load_any_(ctx, dir, NULL, 0, -1, out);
}

fla_status fla_model_load_ex(fla_ctx *ctx, const char *dir, int dtype, fla_model **out) {
  return load_any_(ctx, dir, NULL, 0, dtype, out);
}

fla_status fla_model_load_random(fla_ctx *ctx, const char *config_path, uint64_t seed, int dtype,
                                 fla_model **out) {
  if (!config_path) return fla_set_error(ctx, FLA_INVALID, "fla_model_load_random: config_path is NULL");
  return load_any_(ctx, NULL, config_path, seed, dtype, out);
}

void fla_model_free(fla_model *m) {
  if (!m) return;
  gpu_train_free(m);
  gpu_model_free(m);
  fla_recipe *recipe = NULL;
  for (int i = 0; m->layers && i < m->cfg.num_layers; i++) {
    fla_op_free(m->layers[i].op);
    if (m->layers[i].recipe) recipe = m->layers[i].recipe;
  }
  fla_recipe_free(recipe); /* one recipe shared by the layers */
  free(m->layers);
  free(m->lower_bounds);
  weights_free(m->weights);
  free(m->params);
  free(m->config_json);
  free(m->master);
  free(m->dlower_bounds);
  for (int t = 0; t < m->arena.n; t++) free(m->arena.p[t]);
  free(m);
}

const char *fla_model_type(const fla_model *m) { return m ? m->cfg.model_type : ""; }
int fla_model_vocab_size(const fla_model *m) { return m ? m->cfg.vocab_size : 0; }
int fla_model_hidden_size(const fla_model *m) { return m ? m->cfg.hidden_size : 0; }
int fla_model_num_layers(const fla_model *m) { return m ? m->cfg.num_layers : 0; }
int fla_model_eos_token(const fla_model *m) { return m ? m->cfg.eos_token_id : -1; }
int fla_model_layer_is_attention(const fla_model *m, int i) {
  return m && i >= 0 && i < m->cfg.num_layers && m->layers[i].is_attn;
}

/* ------------------------------------------------------------ forward */

void model_block_norm(const fla_model *m, const float *x, int64_t rows, const float *w,
                        const float *b, float *y) {
  int D = m->cfg.hidden_size;
  if (m->cfg.arch == ARCH_RWKV6) nn_groupnorm(x, rows, D, 1, w, b, (float)m->cfg.norm_eps, y);
  else nn_rmsnorm(x, rows, D, w, (float)m->cfg.norm_eps, y);
}

/* mlp(x) = down(silu(gate x) * up x) */
fla_status model_mlp(const mixer_call *mc, const float *x, float *out) {
  const model_layer *L = mc->L;
  int64_t rows = mc->B * mc->T;
  int D = mc->m->cfg.hidden_size, I = L->ffn_dim;
  float *gate = model_alloc(mc->m->ctx, rows * I), *up = model_alloc(mc->m->ctx, rows * I);
  if (!gate || !up) {
    free(gate);
    free(up);
    return FLA_NOMEM;
  }
  nn_linear(x, rows, D, L->mlp_gate, I, NULL, gate);
  nn_linear(x, rows, D, L->mlp_up, I, NULL, up);
  nn_swiglu(gate, up, rows * I, gate);
  nn_linear(gate, rows, I, L->mlp_down, D, NULL, out);
  free(gate);
  free(up);
  return FLA_OK;
}

fla_status model_token_mixer(const mixer_call *mc, const float *x, float *out) {
  if (mc->L->is_attn) return mixer_attention(mc, x, out);
  switch (mc->m->cfg.arch) {
  case ARCH_GLA:
  case ARCH_RETNET:
  case ARCH_HGRN2: return mixer_linear(mc, x, out);
  case ARCH_GATED_DELTANET:
  case ARCH_DELTA_NET:
  case ARCH_KDA: return mixer_delta(mc, x, out);
  case ARCH_RWKV6: return mixer_rwkv6(mc, x, out);
  case ARCH_TRANSFORMER: break;
  }
  return fla_set_error(mc->m->ctx, FLA_ERROR, "layer %d: no token mixer", mc->L->index);
}

fla_status model_run(fla_model *m, fla_cache *c, int slot0, int64_t B, int64_t T,
                     const int32_t *ids, float *logits, int last_only) {
  const model_config *cfg = &m->cfg;
  int D = cfg->hidden_size, Vb = cfg->vocab_size;
  int64_t rows = B * T;
  for (int64_t i = 0; i < rows; i++)
    if (ids[i] < 0 || ids[i] >= Vb)
      return fla_set_error(m->ctx, FLA_INVALID, "token id %d at position %lld is outside the vocabulary [0, %d)",
                           ids[i], (long long)i, Vb);
  if (m->gpu) return gpu_model_run(m, c, slot0, B, T, ids, logits, last_only);
  if (m->ctx->backend != FLA_BACKEND_CPU) /* fla_model_create on a GPU: trainable only */
    return fla_set_error(m->ctx, FLA_UNSUPPORTED, "a model made by fla_model_create on a GPU context trains but does not run forward: save a checkpoint and load it");
  if (m->master) model_hgrn2_lower_bounds(m); /* trainable: the raw bounds may have changed */
  float *x = model_alloc(m->ctx, rows * D), *h = model_alloc(m->ctx, rows * D);
  float *o = model_alloc(m->ctx, rows * D);
  int64_t *pos = malloc(sizeof(int64_t) * (size_t)B);
  fla_status s = FLA_OK;
  if (!x || !h || !o || !pos) {
    s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory for %lld tokens", (long long)rows);
    goto done;
  }
  for (int64_t b = 0; b < B; b++) pos[b] = c->pos[slot0 + b];
  for (int64_t i = 0; i < rows; i++) memcpy(x + i * D, m->embeddings + (int64_t)ids[i] * D, sizeof(float) * D);
  for (int l = 0; l < cfg->num_layers; l++) {
    model_layer *L = &m->layers[l];
    mixer_call mc = {m, L, &c->layers[l], slot0, B, T, pos};
    if (L->pre_norm_w) nn_groupnorm(x, rows, D, 1, L->pre_norm_w, L->pre_norm_b, (float)cfg->norm_eps, x);
    model_block_norm(m, x, rows, L->attn_norm_w, L->attn_norm_b, h);
    if ((s = model_token_mixer(&mc, h, o))) goto done;
    nn_add(x, o, rows * D);
    model_block_norm(m, x, rows, L->mlp_norm_w, L->mlp_norm_b, h);
    s = cfg->arch == ARCH_RWKV6 ? mixer_rwkv6_ffn(&mc, h, o) : model_mlp(&mc, h, o);
    if (s) goto done;
    nn_add(x, o, rows * D);
  }
  if (logits) {
    int64_t n = rows;
    if (last_only) { /* keep only each sequence's last token */
      for (int64_t b = 0; b < B; b++) memmove(x + b * D, x + ((b + 1) * T - 1) * D, sizeof(float) * D);
      n = B;
    }
    model_block_norm(m, x, n, m->final_norm_w, m->final_norm_b, h);
    nn_linear(h, n, D, m->lm_head, Vb, NULL, logits);
  }
  for (int64_t b = 0; b < B; b++) c->pos[slot0 + b] += T;
done:
  free(x);
  free(h);
  free(o);
  free(pos);
  return s;
}

fla_status fla_model_forward(fla_model *m, const int32_t *ids, int64_t B, int64_t T, float *logits) {
  if (!m || !ids || !logits) return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_model_forward: NULL argument");
  if (B < 1 || T < 1 || B > INT32_MAX)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_forward: B = %lld and T = %lld must be positive",
                         (long long)B, (long long)T);
  fla_cache *c;
  TRY(fla_cache_new(m, (int)B, &c));
  fla_status s = model_run(m, c, 0, B, T, ids, logits, 0);
  fla_cache_free(c);
  return s;
}

fla_status fla_model_prefill(fla_model *m, fla_cache *c, int seq, const int32_t *ids, int64_t n,
                             float *logits, float *last_logits) {
  if (!m || !c || !ids) return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_model_prefill: NULL argument");
  if (c->m != m || seq < 0 || seq >= c->N || n < 1)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_prefill: slot %d of %d, %lld tokens, or a cache of another model",
                         seq, c->N, (long long)n);
  if (logits) {
    TRY(model_run(m, c, seq, 1, n, ids, logits, 0));
    if (last_logits) memcpy(last_logits, logits + (n - 1) * m->cfg.vocab_size, sizeof(float) * m->cfg.vocab_size);
    return FLA_OK;
  }
  return model_run(m, c, seq, 1, n, ids, last_logits, 1);
}

fla_status fla_model_decode(fla_model *m, fla_cache *c, const int32_t *ids, float *logits) {
  if (!m || !c || !ids) return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_model_decode: NULL argument");
  if (c->m != m) return fla_set_error(m->ctx, FLA_INVALID, "fla_model_decode: the cache belongs to another model");
  return model_run(m, c, 0, c->N, 1, ids, logits, 0);
}
