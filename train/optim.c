/*
** optim.c -- AdamW (decoupled weight decay, float32 state), global gradient-norm
** clipping and learning-rate schedules (include/fla.h, "training loop").
*/
#include "fla.h"
#include "internal.h"
#include "train_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fla_adamw {
  fla_ctx *ctx;
  int n;
  fla_param *params;       /* copies of the caller's descriptors */
  float **m, **v;          /* first and second moments, one array per parameter */
  int *decay;              /* 1: weight decay applies */
  fla_adamw_options opt;
  int64_t t;
  fla_model *model;        /* fla_adamw_new_model of a model trained on the GPU: the state is there */
};

/* Norms and biases (one dimension) and embeddings are not decayed: shrinking
** them toward zero only fights the scale the model needs (the usual rule). */
static int decays_(const fla_param *p) {
  return p->ndim >= 2 && strstr(p->name, "embed") == NULL;
}

void fla_adamw_free(fla_adamw *a) {
  if (!a) return;
  for (int i = 0; i < a->n; i++) {
    if (a->m) free(a->m[i]);
    if (a->v) free(a->v[i]);
  }
  free(a->m);
  free(a->v);
  free(a->decay);
  free(a->params);
  free(a);
}

fla_status fla_adamw_new(fla_ctx *ctx, int n, const fla_param *params,
                         const fla_adamw_options *opt, fla_adamw **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_adamw_new: out is NULL");
  *out = NULL;
  if (n < 1 || !params || !opt)
    return fla_set_error(ctx, FLA_INVALID, "fla_adamw_new: need n >= 1 parameters and options (n = %d)", n);
  if (!(opt->beta1 >= 0 && opt->beta1 < 1) || !(opt->beta2 >= 0 && opt->beta2 < 1))
    return fla_set_error(ctx, FLA_INVALID, "fla_adamw_new: betas (%g, %g) must lie in [0, 1)",
                         (double)opt->beta1, (double)opt->beta2);
  if (!(opt->eps > 0) || !(opt->weight_decay >= 0))
    return fla_set_error(ctx, FLA_INVALID, "fla_adamw_new: eps (%g) must be > 0 and weight_decay (%g) >= 0",
                         (double)opt->eps, (double)opt->weight_decay);
  for (int i = 0; i < n; i++) {
    if (!params[i].name || !params[i].data || !params[i].grad || params[i].numel < 1)
      return fla_set_error(ctx, FLA_INVALID, "fla_adamw_new: parameter %d ('%s') has no name, data, grad or elements",
                           i, params[i].name ? params[i].name : "?");
    for (int j = 0; j < i; j++)
      if (!strcmp(params[i].name, params[j].name))
        return fla_set_error(ctx, FLA_INVALID, "fla_adamw_new: parameter name '%s' appears twice", params[i].name);
  }
  fla_adamw *a = calloc(1, sizeof *a);
  if (!a) return fla_set_error(ctx, FLA_NOMEM, "fla_adamw_new: out of memory");
  a->ctx = ctx;
  a->n = n;
  a->opt = *opt;
  a->params = malloc(sizeof(fla_param) * (size_t)n);
  a->m = calloc((size_t)n, sizeof(float *));
  a->v = calloc((size_t)n, sizeof(float *));
  a->decay = calloc((size_t)n, sizeof(int));
  int ok = a->params && a->m && a->v && a->decay;
  for (int i = 0; ok && i < n; i++) {
    a->params[i] = params[i];
    a->m[i] = calloc((size_t)params[i].numel, sizeof(float));
    a->v[i] = calloc((size_t)params[i].numel, sizeof(float));
    a->decay[i] = decays_(&params[i]);
    ok = a->m[i] && a->v[i];
  }
  if (!ok) {
    fla_adamw_free(a);
    return fla_set_error(ctx, FLA_NOMEM, "fla_adamw_new: out of memory for the moments");
  }
  *out = a;
  return FLA_OK;
}

fla_status fla_adamw_new_model(fla_model *m, const fla_adamw_options *opt, fla_adamw **out) {
  if (!m || !out) return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_adamw_new_model: NULL argument");
  int n = fla_model_num_params(m);
  if (n < 1) return fla_set_error(m->ctx, FLA_INVALID, "fla_adamw_new_model: the model is not trainable (fla_model_enable_grad)");
  fla_param *ps = malloc(sizeof(fla_param) * (size_t)n);
  if (!ps) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  fla_status s = FLA_OK;
  for (int i = 0; s == FLA_OK && i < n; i++) s = fla_model_param(m, i, &ps[i]);
  if (s == FLA_OK) s = fla_adamw_new(m->ctx, n, ps, opt, out);
  free(ps);
  if (s == FLA_OK && gpu_train_on(m)) (*out)->model = m;
  return s;
}

fla_status fla_adamw_step(fla_adamw *a, float lr) {
  if (!a) return fla_set_error(NULL, FLA_INVALID, "fla_adamw_step: NULL optimizer");
  a->t++;
  if (a->model) return gpu_train_adamw(a->model, a->decay, &a->opt, lr, a->t);
  const float b1 = a->opt.beta1, b2 = a->opt.beta2, eps = a->opt.eps;
  /* Bias corrections in double then rounded once, as PyTorch computes them. */
  const float bc1 = (float)(1.0 - pow((double)b1, (double)a->t));
  const float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)a->t));
  const float step_size = lr / bc1;
  for (int i = 0; i < a->n; i++) {
    float *p = a->params[i].data;
    const float *g = a->params[i].grad;
    float *m = a->m[i], *v = a->v[i];
    const float shrink = a->decay[i] ? 1.0f - lr * a->opt.weight_decay : 1.0f;
    for (int64_t j = 0; j < a->params[i].numel; j++) {
      p[j] *= shrink;
      m[j] = b1 * m[j] + (1.0f - b1) * g[j];
      v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
      p[j] -= step_size * m[j] / (sqrtf(v[j]) / bc2_sqrt + eps);
    }
  }
  return FLA_OK;
}

int64_t fla_adamw_step_count(const fla_adamw *a) { return a ? a->t : 0; }

int fla_adamw_decays(const fla_adamw *a, int i) {
  return a && i >= 0 && i < a->n ? a->decay[i] : 0;
}

/* fn (fla_adamw_save or _load) on the host arrays of a GPU model's state,
** through a private CPU context: the file is read and written on the host.
** Errors are set on the state's own context. */
static fla_status through_cpu_(fla_adamw *a, const char *path, fla_status (*fn)(fla_adamw *, const char *),
                               const char *what) {
  fla_ctx *gpu = a->ctx, *io = NULL;
  fla_status s = fla_ctx_create(FLA_BACKEND_CPU, &io);
  if (s != FLA_OK) return fla_set_error(gpu, s, "%s: no CPU context", what);
  fla_model *m = a->model;
  a->ctx = io, a->model = NULL;
  s = fn(a, path);
  if (s != FLA_OK) fla_set_error(gpu, s, "%s", fla_errmsg(io));
  a->ctx = gpu, a->model = m;
  fla_ctx_free(io);
  return s;
}

/* The state file's tensors: exp_avg.<name>, exp_avg_sq.<name>, step. */
fla_status fla_adamw_save(fla_adamw *a, const char *path) {
  if (!a || !path) return fla_set_error(a ? a->ctx : NULL, FLA_INVALID, "fla_adamw_save: NULL argument");
  if (a->model) { /* the device's moments into the host arrays, written through a CPU context */
    fla_status s = gpu_train_moments(a->model, a->m, a->v, 0);
    return s == FLA_OK ? through_cpu_(a, path, fla_adamw_save, "fla_adamw_save") : s;
  }
  int count = 2 * a->n + 1;
  char **names = calloc((size_t)count, sizeof(char *));
  fla_tensor **ts = calloc((size_t)count, sizeof(fla_tensor *));
  fla_status s = names && ts ? FLA_OK : fla_set_error(a->ctx, FLA_NOMEM, "fla_adamw_save: out of memory");
  int64_t step = a->t, one = 1;
  for (int i = 0; s == FLA_OK && i < a->n; i++) {
    const fla_param *p = &a->params[i];
    for (int k = 0; s == FLA_OK && k < 2; k++) {
      int idx = 2 * i + k;
      size_t len = strlen(p->name) + 16;
      names[idx] = malloc(len);
      if (!names[idx]) {
        s = fla_set_error(a->ctx, FLA_NOMEM, "fla_adamw_save: out of memory");
        break;
      }
      snprintf(names[idx], len, "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
      s = fla_tensor_wrap(a->ctx, FLA_F32, p->ndim, p->shape, k ? a->v[i] : a->m[i], &ts[idx]);
    }
  }
  if (s == FLA_OK) {
    names[count - 1] = strdup("step");
    s = names[count - 1] ? fla_tensor_wrap(a->ctx, FLA_I64, 1, &one, &step, &ts[count - 1])
                         : fla_set_error(a->ctx, FLA_NOMEM, "fla_adamw_save: out of memory");
  }
  if (s == FLA_OK)
    s = fla_safetensors_save(a->ctx, path, count, (const char *const *)names, (const fla_tensor *const *)ts);
  for (int i = 0; i < count && names && ts; i++) {
    free(names[i]);
    fla_tensor_free(ts[i]);
  }
  free(names);
  free(ts);
  return s;
}

/* Copies tensor `name` of st (float32, n elements of the given shape) into dst. */
static fla_status load_moment_(fla_adamw *a, fla_safetensors *st, const char *path, const char *name,
                               const fla_param *p, float *dst) {
  if (fla_safetensors_find(st, name) < 0)
    return fla_set_error(a->ctx, FLA_FORMAT, "%s: optimizer state has no tensor '%s'", path, name);
  fla_tensor *t = NULL;
  fla_status s = fla_safetensors_load(a->ctx, st, name, FLA_F32, &t);
  if (s != FLA_OK) return s;
  int same = fla_tensor_ndim(t) == p->ndim;
  for (int d = 0; same && d < p->ndim; d++) same = fla_tensor_shape(t)[d] == p->shape[d];
  if (!same) {
    char got[96], want[96];
    fla_shape_str(got, sizeof got, fla_tensor_ndim(t), fla_tensor_shape(t));
    fla_shape_str(want, sizeof want, p->ndim, p->shape);
    s = fla_set_error(a->ctx, FLA_FORMAT, "%s: '%s' has shape %s, the parameter %s", path, name, got, want);
  } else {
    memcpy(dst, fla_tensor_data(t), sizeof(float) * (size_t)p->numel);
  }
  fla_tensor_free(t);
  return s;
}

fla_status fla_adamw_load(fla_adamw *a, const char *path) {
  if (!a || !path) return fla_set_error(a ? a->ctx : NULL, FLA_INVALID, "fla_adamw_load: NULL argument");
  if (a->model) { /* read through a CPU context, then the moments to the device */
    fla_status s = through_cpu_(a, path, fla_adamw_load, "fla_adamw_load");
    return s == FLA_OK ? gpu_train_moments(a->model, a->m, a->v, 1) : s;
  }
  fla_safetensors *st = NULL;
  fla_status s = fla_safetensors_open(a->ctx, path, &st);
  if (s != FLA_OK) return s;
  char name[512];
  for (int i = 0; s == FLA_OK && i < a->n; i++) {
    snprintf(name, sizeof name, "exp_avg.%s", a->params[i].name);
    s = load_moment_(a, st, path, name, &a->params[i], a->m[i]);
    snprintf(name, sizeof name, "exp_avg_sq.%s", a->params[i].name);
    if (s == FLA_OK) s = load_moment_(a, st, path, name, &a->params[i], a->v[i]);
  }
  fla_tensor *step = NULL;
  if (s == FLA_OK && fla_safetensors_find(st, "step") < 0)
    s = fla_set_error(a->ctx, FLA_FORMAT, "%s: optimizer state has no tensor 'step'", path);
  if (s == FLA_OK) s = fla_safetensors_load(a->ctx, st, "step", FLA_I64, &step);
  if (s == FLA_OK) {
    if (fla_tensor_numel(step) != 1)
      s = fla_set_error(a->ctx, FLA_FORMAT, "%s: 'step' must hold one integer", path);
    else
      a->t = *(int64_t *)fla_tensor_data(step);
  }
  fla_tensor_free(step);
  fla_safetensors_free(st);
  return s;
}

double fla_clip_grad_norm(int n, const fla_param *params, double max_norm) {
  double sum = 0;
  for (int i = 0; i < n; i++)
    for (int64_t j = 0; j < params[i].numel; j++) sum += (double)params[i].grad[j] * params[i].grad[j];
  double norm = sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    /* PyTorch's clip_grad_norm_ adds 1e-6 to the norm in the divisor. */
    float scale = (float)(max_norm / (norm + 1e-6));
    for (int i = 0; i < n; i++)
      for (int64_t j = 0; j < params[i].numel; j++) params[i].grad[j] *= scale;
  }
  return norm;
}

double fla_lr_at(const fla_lr_schedule *s, int64_t step) {
  if (!s) return 0;
  if (step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
  if (s->kind == FLA_LR_CONSTANT) return s->lr;
  int64_t span = s->total_steps - s->warmup_steps;
  if (span <= 0 || step >= s->total_steps) return s->min_lr;
  double progress = (double)(step - s->warmup_steps) / (double)span;
  return s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}
