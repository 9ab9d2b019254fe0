/*
** train_params.c -- making a model trainable: float32 master weights it owns,
** a gradient of the same shape beside each, the parameter list in load order
** with fla's names, and a fresh model from a config.json with fla's
** initialisation (fla_model_create).
**
** The weights and the gradients are one block of 2 N floats (N: the number of
** weights): a weight at p has its gradient at p + N (model_grad), so every
** layer field that points at a weight also finds its gradient.
*/
#include "internal.h"
#include "model_internal.h"
#include "train_gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Moves every registered tensor into one owned block (gradients zero). */
static fla_status own_weights_(fla_model *m) {
  int64_t total = 0;
  for (int i = 0; i < m->num_params; i++) total += m->params[i].numel;
  float *block = calloc((size_t)(2 * total > 0 ? 2 * total : 1), sizeof(float));
  if (!block) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory for %lld weights and their gradients", (long long)total);
  int64_t off = 0;
  for (int i = 0; i < m->num_params; i++) {
    model_param *p = &m->params[i];
    if (*p->slot) memcpy(block + off, *p->slot, sizeof(float) * (size_t)p->numel);
    *p->slot = block + off;
    off += p->numel;
  }
  m->master = block;
  m->master_numel = total;
  model_finish_weights(m);
  weights_free(m->weights); /* the mapped files are no longer read */
  m->weights = NULL;
  return FLA_OK;
}

fla_status fla_model_enable_grad(fla_model *m) {
  if (!m) return FLA_INVALID;
  if (m->master) return FLA_OK;
  if (m->ctx->backend != FLA_BACKEND_CPU && !(m->ctx->backend == FLA_BACKEND_CUDA && m->gpu))
    return fla_set_error(m->ctx, FLA_UNSUPPORTED, "fla_model_enable_grad: training runs on the CPU and CUDA backends");
  fla_status s = m->ctx->backend == FLA_BACKEND_CUDA ? gpu_train_check(m) : FLA_OK;
  if (s == FLA_OK) s = own_weights_(m);
  if (s == FLA_OK && m->ctx->backend == FLA_BACKEND_CUDA) {
    /* compute in the weights' dtype (a bf16 model trains in bf16; its inference
    ** activations, m->gpu->adt, are float32 whatever the weights) */
    s = gpu_train_enable(m, m->gpu->g.wdt);
    if (s != FLA_OK) gpu_train_free(m); /* the host weights stay; loss_backward refuses */
  }
  return s;
}

/* ------------------------------------------------------------ initialisation */

typedef struct { uint64_t s; } init_rng;

static uint64_t next_(init_rng *r) { /* splitmix64 */
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double uniform_(init_rng *r) { return ((next_(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double normal_(init_rng *r) { /* Box-Muller, one value per pair of draws */
  double u = uniform_(r), v = uniform_(r);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static int ends_with_(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* fla's conventions (its _init_weights and the layers' own parameters):
** norm weights 1, biases 0, Linear / Conv1d / Embedding weights normal(0,
** initializer_range); Mamba-style gates: A_log = log(U(0, 16)) (KDA: U(1, 16)), dt_bias the
** inverse softplus of dt = exp(U(log 1e-3, log 0.1)) (at least 1e-4; KDA: 0);
** HGRN2's lower_bounds, RWKV-6's token-shift mixes and bonus 0. */
static void init_param_(const model_config *c, const model_param *p, float *x, init_rng *r) {
  const char *n = p->name;
  int64_t k = p->numel;
  if (strstr(n, "norm") && ends_with_(n, ".weight")) {
    for (int64_t i = 0; i < k; i++) x[i] = 1.0f;
  } else if (ends_with_(n, "bias") && !ends_with_(n, "dt_bias")) {
    for (int64_t i = 0; i < k; i++) x[i] = 0.0f; /* also RWKV-6's x_bias */
  } else if (ends_with_(n, "A_log")) { /* Gated DeltaNet: A ~ U(0, 16); KDA: U(1, 16) */
    double lo = c->arch == ARCH_KDA ? 1.0 : 0.0;
    for (int64_t i = 0; i < k; i++) x[i] = (float)log(lo + (16.0 - lo) * uniform_(r));
  } else if (ends_with_(n, "dt_bias") && c->arch == ARCH_KDA) { /* KDA starts its dt_bias at 0 */
    for (int64_t i = 0; i < k; i++) x[i] = 0.0f;
  } else if (ends_with_(n, "dt_bias")) {
    for (int64_t i = 0; i < k; i++) {
      double dt = exp(log(1e-3) + uniform_(r) * (log(0.1) - log(1e-3)));
      if (dt < 1e-4) dt = 1e-4;
      x[i] = (float)(dt + log(-expm1(-dt)));
    }
  } else if (ends_with_(n, "lower_bounds") || ends_with_(n, ".mu") || ends_with_(n, "bonus")) {
    for (int64_t i = 0; i < k; i++) x[i] = 0.0f;
  } else {
    for (int64_t i = 0; i < k; i++) x[i] = (float)(c->initializer_range * normal_(r));
  }
}

fla_status fla_model_create(fla_ctx *ctx, const char *config_path, uint64_t seed, fla_model **out) {
  return fla_model_create_ex(ctx, config_path, seed, -1, out);
}

fla_status fla_model_create_ex(fla_ctx *ctx, const char *config_path, uint64_t seed, int dtype, fla_model **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_model_create: out is NULL");
  *out = NULL;
  if (!ctx || !config_path)
    return fla_set_error(ctx, FLA_INVALID, "fla_model_create: %s is NULL", !ctx ? "ctx" : "config_path");
  if (ctx->backend != FLA_BACKEND_CPU && ctx->backend != FLA_BACKEND_CUDA)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "fla_model_create: models train on the CPU and CUDA backends");
  if (dtype != -1 && dtype != FLA_F32 && dtype != FLA_BF16)
    return fla_set_error(ctx, FLA_INVALID, "fla_model_create_ex: dtype must be FLA_F32, FLA_BF16 or -1 (bf16 on a GPU)");
  fla_model *m = calloc(1, sizeof *m);
  if (!m) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  m->ctx = ctx;
  fla_status s = model_config_load(ctx, config_path, &m->cfg);
  if (s == FLA_OK) s = model_read_text(ctx, config_path, &m->config_json);
  if (s == FLA_OK) s = model_build(m); /* registers every tensor, no data */
  if (s == FLA_OK) s = own_weights_(m);
  if (s != FLA_OK) {
    fla_model_free(m);
    return s;
  }
  init_rng r = {seed};
  for (int i = 0; i < m->num_params; i++)
    init_param_(&m->cfg, &m->params[i], (float *)*m->params[i].slot, &r);
  model_finish_weights(m);
  if (ctx->backend == FLA_BACKEND_CUDA && (s = gpu_train_enable(m, dtype == FLA_F32 ? FLA_F32 : FLA_BF16)) != FLA_OK) {
    fla_model_free(m);
    return s;
  }
  *out = m;
  return FLA_OK;
}

/* ------------------------------------------------------------ access */

int fla_model_num_params(const fla_model *m) { return m && m->master ? m->num_params : 0; }

fla_status fla_model_param(fla_model *m, int i, fla_param *out) {
  if (!m || !out) return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_model_param: NULL argument");
  if (!m->master) return fla_set_error(m->ctx, FLA_INVALID, "fla_model_param: the model is not trainable (fla_model_enable_grad)");
  if (i < 0 || i >= m->num_params)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_param: index %d is outside [0, %d)", i, m->num_params);
  const model_param *p = &m->params[i];
  memset(out, 0, sizeof *out);
  out->name = p->name;
  out->ndim = p->ndim;
  for (int d = 0; d < p->ndim; d++) out->shape[d] = p->shape[d];
  out->numel = p->numel;
  out->data = (float *)*p->slot;
  out->grad = model_grad(m, *p->slot);
  return FLA_OK;
}

void fla_model_zero_grad(fla_model *m) {
  if (gpu_train_on(m)) gpu_train_zero_grad(m); /* the host copy is refreshed by fla_model_sync_host only */
  else if (m && m->master) memset(m->master + m->master_numel, 0, sizeof(float) * (size_t)m->master_numel);
}

fla_status fla_model_sync_host(fla_model *m) {
  if (!m) return FLA_INVALID;
  if (!m->master) return fla_set_error(m->ctx, FLA_INVALID, "fla_model_sync_host: the model is not trainable");
  return gpu_train_on(m) ? gpu_train_sync_host(m) : FLA_OK;
}

fla_status fla_model_sync_device(fla_model *m) {
  if (!m) return FLA_INVALID;
  if (!m->master) return fla_set_error(m->ctx, FLA_INVALID, "fla_model_sync_device: the model is not trainable");
  return gpu_train_on(m) ? gpu_train_sync_device(m) : FLA_OK;
}

double fla_model_clip_grad_norm(fla_model *m, double max_norm) {
  if (!m || !m->master) return NAN;
  if (gpu_train_on(m)) {
    double norm = NAN;
    return gpu_train_clip(m, max_norm, &norm) == FLA_OK ? norm : NAN;
  }
  int n = m->num_params;
  fla_param *ps = malloc(sizeof(fla_param) * (size_t)n);
  if (!ps) return NAN;
  for (int i = 0; i < n; i++) fla_model_param(m, i, &ps[i]);
  double norm = fla_clip_grad_norm(n, ps, max_norm);
  free(ps);
  return norm;
}

const char *fla_model_config_json(const fla_model *m) { return m ? m->config_json : NULL; }

fla_status fla_model_set_recompute(fla_model *m, int recompute) {
  if (!m) return FLA_INVALID;
  m->recompute = recompute != 0;
  return FLA_OK;
}
