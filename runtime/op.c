/*
** op.c -- a recipe bound to shapes, run forward and backward.
**
** The op layer owns everything around the core recurrence of runtime/cpu:
** matching named tensors to the recipe's inputs, checking shapes, converting
** dtypes, feature maps on q and k, derived keys (k = 1 - exp(gk)), constant
** decays, and mapping gradients back onto the recipe's inputs. The core then
** runs either algorithm: the float64 recurrence or the float32 chunked form.
*/
#include "internal.h"
#include "recipe.h"
#include "feature.h"
#include "cpu/cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fla_op {
  fla_ctx *ctx;
  const fla_recipe *recipe;
  const fla_ir *ir;
  int64_t B, T, H, K, V;  /* bound shape (K: input key dim)          */
  int64_t N;              /* sequences                               */
  int64_t Ks;             /* state key dim (feature map output size) */
  int64_t tokens;         /* B * T                                   */
  int varlen;
  double scale;
  int chunk;
  fla_algo algo;
  double *gamma;          /* [H] constant log decay, or NULL         */
};

/* ------------------------------------------------------------------ binding */

static int is_pow2_(int x) { return x > 0 && (x & (x - 1)) == 0; }

static fla_status bind_params_(fla_ctx *ctx, const fla_ir *ir, const fla_op_config *cfg,
                               double *values) {
  for (int i = 0; i < ir->num_params; i++) values[i] = ir->params[i].value;
  if (cfg->num_params < 0 || cfg->num_params > FLA_MAX_PARAMS)
    return fla_set_error(ctx, FLA_INVALID, "fla_op_bind: num_params %d is outside 0..%d",
                         cfg->num_params, FLA_MAX_PARAMS);
  for (int j = 0; j < cfg->num_params; j++) {
    const char *name = cfg->param_names[j];
    int found = -1;
    for (int i = 0; name && i < ir->num_params; i++)
      if (strcmp(ir->params[i].name, name) == 0) found = i;
    if (found < 0)
      return fla_set_error(ctx, FLA_INVALID, "fla_op_bind: recipe '%s' has no parameter '%s'",
                           ir->name, name ? name : "(null)");
    values[found] = cfg->param_values[j];
  }
  return FLA_OK;
}

static fla_status check_config_(fla_ctx *ctx, const fla_ir *ir, const fla_op_config *cfg) {
  const char *dims = "BTHKV";
  const int64_t vals[5] = {cfg->B, cfg->T, cfg->H, cfg->K, cfg->V};
  for (int i = 0; i < 5; i++)
    if (vals[i] < 1)
      return fla_set_error(ctx, FLA_SHAPE, "fla_op_bind: %c = %lld, must be at least 1",
                           dims[i], (long long)vals[i]);
  if (cfg->num_seqs < 0)
    return fla_set_error(ctx, FLA_SHAPE, "fla_op_bind: num_seqs = %lld is negative",
                         (long long)cfg->num_seqs);
  if (cfg->num_seqs > 0 && cfg->B != 1)
    return fla_set_error(ctx, FLA_SHAPE,
                         "fla_op_bind: a variable-length batch (num_seqs = %lld) needs B = 1, got B = %lld",
                         (long long)cfg->num_seqs, (long long)cfg->B);
  if (cfg->chunk_size != 0 && (!is_pow2_(cfg->chunk_size) || cfg->chunk_size < 16 || cfg->chunk_size > 256))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_op_bind: chunk_size %d must be a power of two in 16..256",
                         cfg->chunk_size);
  if (!(cfg->scale >= 0) || isinf(cfg->scale))
    return fla_set_error(ctx, FLA_INVALID, "fla_op_bind: scale %g must be finite and >= 0 (0: default)",
                         cfg->scale);
  if (cfg->algo != FLA_ALGO_AUTO && cfg->algo != FLA_ALGO_CHUNK && cfg->algo != FLA_ALGO_RECURRENT)
    return fla_set_error(ctx, FLA_INVALID, "fla_op_bind: unknown algo %d", (int)cfg->algo);
  /* The state is Ks x V; keep every buffer comfortably inside int64 arithmetic. */
  int64_t ks = fla_feature_dim(ir->feature_k, cfg->K);
  double elems = (double)cfg->B * (double)cfg->T * (double)cfg->H * (double)(ks > cfg->V ? ks : cfg->V);
  double state = (double)(cfg->num_seqs ? cfg->num_seqs : cfg->B) * cfg->H * (double)ks * cfg->V;
  if (elems > 4e12 || state > 4e12 || cfg->K > 65536)
    return fla_set_error(ctx, FLA_SHAPE, "fla_op_bind: shape is too large");
  return FLA_OK;
}

fla_status fla_op_bind(fla_ctx *ctx, const fla_recipe *r, const fla_op_config *cfg, fla_op **out) {
  if (out) *out = NULL;
  if (!ctx || !r || !cfg || !out)
    return fla_set_error(ctx, FLA_INVALID, "fla_op_bind: NULL argument");
  const fla_ir *ir = fla_recipe_ir(r);
  fla_status st = check_config_(ctx, ir, cfg);
  if (st != FLA_OK) return st;
  double params[FLA_MAX_PARAMS] = {0};
  st = bind_params_(ctx, ir, cfg, params);
  if (st != FLA_OK) return st;

  fla_op *op = calloc(1, sizeof *op);
  if (!op) return fla_set_error(ctx, FLA_NOMEM, "fla_op_bind: out of memory");
  op->ctx = ctx;
  op->recipe = r;
  op->ir = ir;
  op->B = cfg->B, op->T = cfg->T, op->H = cfg->H, op->K = cfg->K, op->V = cfg->V;
  op->varlen = cfg->num_seqs > 0;
  op->N = op->varlen ? cfg->num_seqs : cfg->B;
  op->Ks = fla_feature_dim(ir->feature_k, cfg->K);
  op->tokens = cfg->B * cfg->T;
  op->scale = cfg->scale > 0 ? cfg->scale : ir->scale > 0 ? ir->scale : 1.0 / sqrt((double)cfg->K);
  op->chunk = cfg->chunk_size ? cfg->chunk_size : ir->chunk_size ? ir->chunk_size : 64;
  op->algo = cfg->algo;
  if (ir->decay == FLA_DECAY_CONST) {
    op->gamma = malloc(sizeof(double) * (size_t)op->H);
    if (!op->gamma) {
      free(op);
      return fla_set_error(ctx, FLA_NOMEM, "fla_op_bind: out of memory");
    }
    st = fla_recipe_const_decay(ctx, r, (int)op->H, params, op->gamma);
    if (st != FLA_OK) {
      fla_op_free(op);
      return st;
    }
  }
  *out = op;
  return FLA_OK;
}

void fla_op_free(fla_op *op) {
  if (!op) return;
  free(op->gamma);
  free(op);
}

int64_t fla_op_state_k(const fla_op *op) { return op ? op->Ks : 0; }
int64_t fla_op_num_seqs(const fla_op *op) { return op ? op->N : 0; }

/* ---------------------------------------------------------- argument checks */

typedef struct {
  fla_tensor *in[FLA_IR_MAX_INPUTS];  /* by recipe input index */
  fla_tensor *h0, *cu_seqlens;
} op_args;

static int is_float_(fla_dtype d) { return d == FLA_F32 || d == FLA_F64 || d == FLA_BF16 || d == FLA_F16; }

/* Expected shape of recipe input i; returns ndim. */
static int input_shape_(const fla_op *op, int i, int64_t *shape) {
  switch (op->ir->inputs[i].layout) {
  case FLA_LAYOUT_BTHK: shape[0] = op->B, shape[1] = op->T, shape[2] = op->H, shape[3] = op->K; return 4;
  case FLA_LAYOUT_BTHV: shape[0] = op->B, shape[1] = op->T, shape[2] = op->H, shape[3] = op->V; return 4;
  case FLA_LAYOUT_BTH: shape[0] = op->B, shape[1] = op->T, shape[2] = op->H; return 3;
  case FLA_LAYOUT_HK: shape[0] = op->H, shape[1] = op->K; return 2;
  }
  return 0;
}

static int state_shape_(const fla_op *op, int64_t *shape) {
  shape[0] = op->N, shape[1] = op->H, shape[2] = op->Ks, shape[3] = op->V;
  return 4;
}

static int output_shape_(const fla_op *op, int64_t *shape) {
  shape[0] = op->B, shape[1] = op->T, shape[2] = op->H, shape[3] = op->V;
  return 4;
}

static fla_status check_tensor_(const fla_op *op, const char *what, const char *name,
                                const fla_tensor *t, int ndim, const int64_t *shape) {
  char got[128], want[128];
  if (!t) return fla_set_error(op->ctx, FLA_INVALID, "%s '%s' is NULL", what, name);
  int same = t->ndim == ndim;
  for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
  if (!same)
    return fla_set_error(op->ctx, FLA_SHAPE, "%s '%s' of recipe '%s' has shape %s, expected %s",
                         what, name, op->ir->name, fla_shape_str(got, sizeof got, t->ndim, t->shape),
                         fla_shape_str(want, sizeof want, ndim, shape));
  if (!is_float_(t->dtype))
    return fla_set_error(op->ctx, FLA_INVALID, "%s '%s' has dtype %s, expected a float dtype",
                         what, name, fla_dtype_name(t->dtype));
  return FLA_OK;
}

static void list_inputs_(const fla_op *op, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < op->ir->num_inputs && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s, ", op->ir->inputs[i].name);
  if (used < len) snprintf(buf + used, len - used, "h0%s", op->varlen ? ", cu_seqlens" : "");
}

static fla_status match_inputs_(const fla_op *op, const fla_arg *args, int n, op_args *a) {
  char names[512];
  memset(a, 0, sizeof *a);
  if (n < 0 || (n > 0 && !args))
    return fla_set_error(op->ctx, FLA_INVALID, "inputs: %d arguments but no array", n);
  for (int j = 0; j < n; j++) {
    const char *name = args[j].name ? args[j].name : "(null)";
    fla_tensor **slot = NULL;
    if (strcmp(name, "h0") == 0) slot = &a->h0;
    else if (strcmp(name, "cu_seqlens") == 0 && op->varlen) slot = &a->cu_seqlens;
    for (int i = 0; !slot && i < op->ir->num_inputs; i++)
      if (strcmp(op->ir->inputs[i].name, name) == 0) slot = &a->in[i];
    if (!slot) {
      list_inputs_(op, names, sizeof names);
      return fla_set_error(op->ctx, FLA_INVALID, "unknown input '%s' (recipe '%s' takes %s)", name,
                           op->ir->name, names);
    }
    if (*slot)
      return fla_set_error(op->ctx, FLA_INVALID, "input '%s' is given twice", name);
    if (!args[j].tensor)
      return fla_set_error(op->ctx, FLA_INVALID, "input '%s' is NULL", name);
    *slot = args[j].tensor;
  }
  int64_t shape[FLA_MAX_DIMS];
  for (int i = 0; i < op->ir->num_inputs; i++) {
    if (!a->in[i])
      return fla_set_error(op->ctx, FLA_INVALID, "input '%s' of recipe '%s' is missing",
                           op->ir->inputs[i].name, op->ir->name);
    int nd = input_shape_(op, i, shape);
    fla_status st = check_tensor_(op, "input", op->ir->inputs[i].name, a->in[i], nd, shape);
    if (st != FLA_OK) return st;
  }
  if (a->h0) {
    fla_status st = check_tensor_(op, "input", "h0", a->h0, state_shape_(op, shape), shape);
    if (st != FLA_OK) return st;
  }
  if (op->varlen && !a->cu_seqlens)
    return fla_set_error(op->ctx, FLA_INVALID, "input 'cu_seqlens' is missing (op bound to %lld sequences)",
                         (long long)op->N);
  return FLA_OK;
}

/* Token offsets of every sequence: n*T for dense batches, cu_seqlens checked. */
static fla_status sequence_offsets_(const fla_op *op, const op_args *a, int64_t *cu) {
  if (!op->varlen) {
    for (int64_t n = 0; n <= op->N; n++) cu[n] = n * op->T;
    return FLA_OK;
  }
  const fla_tensor *t = a->cu_seqlens;
  char got[128];
  if (t->ndim != 1 || t->shape[0] != op->N + 1)
    return fla_set_error(op->ctx, FLA_SHAPE, "input 'cu_seqlens' has shape %s, expected [%lld]",
                         fla_shape_str(got, sizeof got, t->ndim, t->shape), (long long)(op->N + 1));
  if (t->dtype != FLA_I32 && t->dtype != FLA_I64)
    return fla_set_error(op->ctx, FLA_INVALID, "input 'cu_seqlens' has dtype %s, expected i32 or i64",
                         fla_dtype_name(t->dtype));
  for (int64_t n = 0; n <= op->N; n++)
    cu[n] = t->dtype == FLA_I32 ? ((const int32_t *)t->data)[n] : ((const int64_t *)t->data)[n];
  if (cu[0] != 0)
    return fla_set_error(op->ctx, FLA_INVALID, "cu_seqlens[0] = %lld, must be 0", (long long)cu[0]);
  for (int64_t n = 1; n <= op->N; n++)
    if (cu[n] < cu[n - 1])
      return fla_set_error(op->ctx, FLA_INVALID, "cu_seqlens decreases at index %lld (%lld after %lld)",
                           (long long)n, (long long)cu[n], (long long)cu[n - 1]);
  if (cu[op->N] != op->T)
    return fla_set_error(op->ctx, FLA_INVALID, "cu_seqlens ends at %lld, must end at T = %lld",
                         (long long)cu[op->N], (long long)op->T);
  return FLA_OK;
}

/* --------------------------------------------------------- prepared inputs */

/* Everything one call needs in float64: the recipe inputs as given (raw), and
** the core's inputs after feature maps, derived keys and constant decays. */
typedef struct {
  double *raw[FLA_IR_MAX_INPUTS];
  double *q, *k, *p, *g, *h0;     /* owned when they differ from raw[] */
  int q_owned, k_owned, p_owned, g_owned;
  int64_t *cu;
  fla_core_spec spec;
  fla_core_f64 io;
  double *scratch[24];            /* outputs and gradients of the core */
  int nscratch;
} prepared;

static void prepared_free_(prepared *pp) {
  for (int i = 0; i < FLA_IR_MAX_INPUTS; i++) free(pp->raw[i]);
  if (pp->q_owned) free(pp->q);
  if (pp->k_owned) free(pp->k);
  if (pp->p_owned) free(pp->p);
  if (pp->g_owned) free(pp->g);
  free(pp->h0);
  free(pp->cu);
  for (int i = 0; i < pp->nscratch; i++) free(pp->scratch[i]);
  memset(pp, 0, sizeof *pp);
}

static double *scratch_(prepared *pp, int64_t n) {
  if (pp->nscratch >= (int)(sizeof pp->scratch / sizeof pp->scratch[0])) return NULL;
  double *x = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
  if (x) pp->scratch[pp->nscratch++] = x;
  return x;
}

static double *to_f64_(const fla_tensor *t) {
  double *x = malloc(sizeof(double) * (size_t)(t->numel > 0 ? t->numel : 1));
  if (x && fla_convert(x, FLA_F64, t->data, t->dtype, t->numel) != 0) {
    free(x);
    return NULL;
  }
  return x;
}

/* q, k, p through their feature maps (identity maps alias the raw input). */
static int apply_feature_(fla_ir_feature f, int64_t rows, int64_t d, double *raw, double **out,
                          int *owned) {
  if (f == FLA_FEATURE_IDENTITY) {
    *out = raw, *owned = 0;
    return 0;
  }
  *out = malloc(sizeof(double) * (size_t)(rows * fla_feature_dim(f, d)));
  if (!*out) return -1;
  *owned = 1;
  fla_feature_forward(f, rows, d, raw, *out);
  return 0;
}

static fla_status prepare_(const fla_op *op, const op_args *a, prepared *pp) {
  const fla_ir *ir = op->ir;
  int64_t rows = op->tokens * op->H;
  memset(pp, 0, sizeof *pp);
  pp->cu = calloc((size_t)(op->N + 1), sizeof(int64_t));
  if (!pp->cu) goto nomem;
  fla_status st = sequence_offsets_(op, a, pp->cu);
  if (st != FLA_OK) {
    prepared_free_(pp);
    return st;
  }
  for (int i = 0; i < ir->num_inputs; i++)
    if (!(pp->raw[i] = to_f64_(a->in[i]))) goto nomem;
  if (a->h0 && !(pp->h0 = to_f64_(a->h0))) goto nomem;

  if (apply_feature_(ir->feature_q, rows, op->K, pp->raw[ir->query], &pp->q, &pp->q_owned)) goto nomem;
  if (ir->key_from_decay) {
    /* HGRN2: k_t = 1 - exp(gk_t), so forgetting and writing share one gate. */
    const double *gk = pp->raw[ir->decay_input];
    if (!(pp->k = malloc(sizeof(double) * (size_t)(rows * op->K)))) goto nomem;
    pp->k_owned = 1;
    for (int64_t i = 0; i < rows * op->K; i++) pp->k[i] = -expm1(gk[i]);
  } else if (apply_feature_(ir->feature_k, rows, op->K, pp->raw[ir->key], &pp->k, &pp->k_owned)) {
    goto nomem;
  }
  if (ir->probe >= 0 &&
      apply_feature_(ir->feature_k, rows, op->K, pp->raw[ir->probe], &pp->p, &pp->p_owned))
    goto nomem;
  if (ir->decay == FLA_DECAY_CONST) {
    if (!(pp->g = malloc(sizeof(double) * (size_t)(rows > 0 ? rows : 1)))) goto nomem;
    pp->g_owned = 1;
    for (int64_t t = 0; t < op->tokens; t++)
      for (int64_t h = 0; h < op->H; h++) pp->g[t * op->H + h] = op->gamma[h];
  } else if (ir->decay != FLA_DECAY_NONE) {
    pp->g = pp->raw[ir->decay_input];
  }

  fla_core_spec *s = &pp->spec;
  s->decay = ir->decay == FLA_DECAY_NONE ? FLA_CORE_DECAY_NONE
             : ir->decay == FLA_DECAY_KEY ? FLA_CORE_DECAY_KEY : FLA_CORE_DECAY_SCALAR;
  s->delta = ir->family == FLA_FAMILY_WY;
  s->read_before = ir->read_before;
  s->N = op->N, s->H = op->H, s->K = op->Ks, s->V = op->V;
  s->total = pp->cu[op->N];
  s->cu = pp->cu;
  s->scale = op->scale;
  s->chunk = op->chunk;
  s->nthreads = fla_ctx_threads(op->ctx);

  fla_core_f64 *io = &pp->io;
  io->q = pp->q, io->k = pp->k, io->p = pp->p, io->g = pp->g, io->h0 = pp->h0;
  io->v = pp->raw[ir->value];
  io->beta = ir->rate >= 0 ? pp->raw[ir->rate] : NULL;
  io->bonus = ir->bonus >= 0 ? pp->raw[ir->bonus] : NULL;
  return FLA_OK;
nomem:
  prepared_free_(pp);
  return fla_set_error(op->ctx, FLA_NOMEM, "recipe '%s': out of memory preparing inputs", ir->name);
}

/* ----------------------------------------------------- running the core */

/* Element counts of the core's tensors, for converting them to float32. */
typedef struct {
  int64_t qk, v, g, beta, bonus, state;
} core_sizes;

static core_sizes core_sizes_(const fla_core_spec *s) {
  core_sizes z;
  int64_t rows = s->total * s->H;
  z.qk = rows * s->K;
  z.v = rows * s->V;
  z.g = s->decay == FLA_CORE_DECAY_KEY ? z.qk : rows;
  z.beta = rows;
  z.bonus = s->H * s->K;
  z.state = s->N * s->H * s->K * s->V;
  return z;
}

/* The chunked algorithm runs in float32: copy the core's inputs down and
** its outputs back up. */
static int run_chunk_(const fla_core_spec *s, fla_core_f64 *d, int backward) {
  core_sizes z = core_sizes_(s);
  fla_core_f32 f;
  memset(&f, 0, sizeof f);
  float *bufs[32] = {0};
  int nb = 0, rc = -1;
  struct { const double *x; const float **fx; int64_t n; } ins[] = {
    {d->q, &f.q, z.qk}, {d->k, &f.k, z.qk}, {d->v, &f.v, z.v}, {d->p, &f.p, z.qk},
    {d->g, &f.g, z.g}, {d->beta, &f.beta, z.beta}, {d->bonus, &f.bonus, z.bonus},
    {d->h0, &f.h0, z.state}, {d->d_o, &f.d_o, z.v}, {d->dht, &f.dht, z.state},
  };
  struct { double *x; float **fx; int64_t n; } outs[] = {
    {d->o, &f.o, z.v}, {d->ht, &f.ht, z.state}, {d->dq, &f.dq, z.qk}, {d->dk, &f.dk, z.qk},
    {d->dv, &f.dv, z.v}, {d->dp, &f.dp, z.qk}, {d->dg, &f.dg, z.g}, {d->dbeta, &f.dbeta, z.beta},
    {d->dbonus, &f.dbonus, z.bonus}, {d->dh0, &f.dh0, z.state},
  };
  for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
    if (!ins[i].x) continue;
    float *x = malloc(sizeof(float) * (size_t)(ins[i].n > 0 ? ins[i].n : 1));
    if (!x) goto done;
    bufs[nb++] = x;
    for (int64_t j = 0; j < ins[i].n; j++) x[j] = (float)ins[i].x[j];
    *ins[i].fx = x;
  }
  for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
    if (!outs[i].x) continue;
    float *x = calloc((size_t)(outs[i].n > 0 ? outs[i].n : 1), sizeof(float));
    if (!x) goto done;
    bufs[nb++] = x;
    *outs[i].fx = x;
  }
  rc = backward ? fla_cpu_chunk_backward(s, &f) : fla_cpu_chunk_forward(s, &f);
  if (rc == 0)
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
      if (outs[i].x)
        for (int64_t j = 0; j < outs[i].n; j++) outs[i].x[j] = (*outs[i].fx)[j];
done:
  for (int i = 0; i < nb; i++) free(bufs[i]);
  return rc;
}

static int use_recurrent_(const fla_op *op) {
  if (op->algo == FLA_ALGO_RECURRENT) return 1;
  if (op->algo == FLA_ALGO_CHUNK) return 0;
  return op->T == 1 && !op->varlen;
}

static fla_status run_core_(const fla_op *op, prepared *pp, int backward) {
  int rc;
  if (use_recurrent_(op))
    rc = backward ? fla_cpu_recurrent_backward(&pp->spec, &pp->io)
                  : fla_cpu_recurrent_forward(&pp->spec, &pp->io);
  else
    rc = run_chunk_(&pp->spec, &pp->io, backward);
  if (rc != 0)
    return fla_set_error(op->ctx, FLA_NOMEM, "recipe '%s': out of memory in the %s %s pass",
                         op->ir->name, use_recurrent_(op) ? "recurrent" : "chunked",
                         backward ? "backward" : "forward");
  return FLA_OK;
}

/* ------------------------------------------------------------------- forward */

static fla_status check_outputs_(const fla_op *op, const fla_tensor *o, const fla_tensor *ht,
                                 const char *oname, const char *htname) {
  int64_t shape[FLA_MAX_DIMS];
  if (o) {
    fla_status st = check_tensor_(op, "output", oname, o, output_shape_(op, shape), shape);
    if (st != FLA_OK) return st;
  }
  if (ht) {
    fla_status st = check_tensor_(op, "output", htname, ht, state_shape_(op, shape), shape);
    if (st != FLA_OK) return st;
  }
  return FLA_OK;
}

static void store_(fla_tensor *t, const double *x) {
  fla_convert(t->data, t->dtype, x, FLA_F64, t->numel);
}

fla_status fla_op_forward(fla_op *op, const fla_arg *inputs, int num_inputs, fla_tensor *o,
                          fla_tensor *ht) {
  if (!op) return FLA_INVALID;
  if (!o) return fla_set_error(op->ctx, FLA_INVALID, "fla_op_forward: output 'o' is NULL");
  op_args a;
  fla_status st = match_inputs_(op, inputs, num_inputs, &a);
  if (st == FLA_OK) st = check_outputs_(op, o, ht, "o", "ht");
  if (st != FLA_OK) return st;
  prepared pp;
  if ((st = prepare_(op, &a, &pp)) != FLA_OK) return st;
  core_sizes z = core_sizes_(&pp.spec);
  pp.io.o = scratch_(&pp, z.v);
  pp.io.ht = ht ? scratch_(&pp, z.state) : NULL;
  if (!pp.io.o || (ht && !pp.io.ht)) {
    prepared_free_(&pp);
    return fla_set_error(op->ctx, FLA_NOMEM, "fla_op_forward: out of memory");
  }
  st = run_core_(op, &pp, 0);
  if (st == FLA_OK) {
    store_(o, pp.io.o);
    if (ht) store_(ht, pp.io.ht);
  }
  prepared_free_(&pp);
  return st;
}

/* ------------------------------------------------------------------ backward */

/* The gradient tensors asked for, by recipe input index (and dh0). */
typedef struct {
  fla_tensor *d[FLA_IR_MAX_INPUTS];
  fla_tensor *dh0;
} grad_args;

static fla_status match_grads_(const fla_op *op, const fla_arg *grads, int n, grad_args *g) {
  memset(g, 0, sizeof *g);
  if (n < 0 || (n > 0 && !grads))
    return fla_set_error(op->ctx, FLA_INVALID, "grads: %d arguments but no array", n);
  int64_t shape[FLA_MAX_DIMS];
  for (int j = 0; j < n; j++) {
    const char *name = grads[j].name ? grads[j].name : "(null)";
    fla_tensor **slot = NULL;
    int idx = -1;
    if (strcmp(name, "dh0") == 0) slot = &g->dh0;
    for (int i = 0; !slot && i < op->ir->num_inputs; i++)
      if (name[0] == 'd' && strcmp(op->ir->inputs[i].name, name + 1) == 0) slot = &g->d[i], idx = i;
    if (!slot)
      return fla_set_error(op->ctx, FLA_INVALID,
                           "unknown gradient '%s' (recipe '%s': 'd' + an input name, or 'dh0')",
                           name, op->ir->name);
    if (*slot) return fla_set_error(op->ctx, FLA_INVALID, "gradient '%s' is given twice", name);
    int nd = idx >= 0 ? input_shape_(op, idx, shape) : state_shape_(op, shape);
    fla_status st = check_tensor_(op, "gradient", name, grads[j].tensor, nd, shape);
    if (st != FLA_OK) return st;
    *slot = grads[j].tensor;
  }
  return FLA_OK;
}

/* Gradient of recipe input i from the core's gradients, in float64. */
static void input_grad_(const fla_op *op, const prepared *pp, int i, double *out) {
  const fla_ir *ir = op->ir;
  const fla_core_f64 *io = &pp->io;
  int64_t rows = op->tokens * op->H;
  if (i == ir->query) {
    fla_feature_backward(ir->feature_q, rows, op->K, pp->raw[i], io->dq, out);
  } else if (i == ir->key) {
    fla_feature_backward(ir->feature_k, rows, op->K, pp->raw[i], io->dk, out);
  } else if (i == ir->probe) {
    fla_feature_backward(ir->feature_k, rows, op->K, pp->raw[i], io->dp, out);
  } else if (i == ir->value) {
    memcpy(out, io->dv, sizeof(double) * (size_t)(rows * op->V));
  } else if (i == ir->rate) {
    memcpy(out, io->dbeta, sizeof(double) * (size_t)rows);
  } else if (i == ir->bonus) {
    memcpy(out, io->dbonus, sizeof(double) * (size_t)(op->H * op->Ks));
  } else if (i == ir->decay_input) {
    int64_t n = ir->decay == FLA_DECAY_KEY ? rows * op->K : rows;
    memcpy(out, io->dg, sizeof(double) * (size_t)n);
    if (ir->key_from_decay) /* k = 1 - exp(gk): dgk -= exp(gk) dk */
      for (int64_t j = 0; j < n; j++) out[j] -= exp(pp->raw[i][j]) * io->dk[j];
  }
}

fla_status fla_op_backward(fla_op *op, const fla_arg *inputs, int num_inputs, const fla_tensor *d_o,
                           const fla_tensor *dht, const fla_arg *grads, int num_grads) {
  if (!op) return FLA_INVALID;
  if (!d_o) return fla_set_error(op->ctx, FLA_INVALID, "fla_op_backward: 'd_o' is NULL");
  op_args a;
  grad_args g;
  fla_status st = match_inputs_(op, inputs, num_inputs, &a);
  if (st == FLA_OK) st = check_outputs_(op, d_o, dht, "d_o", "dht");
  if (st == FLA_OK) st = match_grads_(op, grads, num_grads, &g);
  if (st != FLA_OK) return st;
  prepared pp;
  if ((st = prepare_(op, &a, &pp)) != FLA_OK) return st;
  core_sizes z = core_sizes_(&pp.spec);
  fla_core_f64 *io = &pp.io;
  double *d_o64 = scratch_(&pp, z.v);
  double *dht64 = dht ? scratch_(&pp, z.state) : NULL;
  io->dq = scratch_(&pp, z.qk);
  io->dk = scratch_(&pp, z.qk);
  io->dv = scratch_(&pp, z.v);
  io->dp = pp.p ? scratch_(&pp, z.qk) : NULL;
  io->dg = pp.spec.decay != FLA_CORE_DECAY_NONE ? scratch_(&pp, z.g) : NULL;
  io->dbeta = io->beta ? scratch_(&pp, z.beta) : NULL;
  io->dbonus = io->bonus ? scratch_(&pp, z.bonus) : NULL;
  io->dh0 = scratch_(&pp, z.state);
  double *gradbuf = scratch_(&pp, z.qk > z.v ? (z.qk > z.state ? z.qk : z.state) : (z.v > z.state ? z.v : z.state));
  if (!d_o64 || (dht && !dht64) || !io->dq || !io->dk || !io->dv || (pp.p && !io->dp) ||
      (pp.spec.decay != FLA_CORE_DECAY_NONE && !io->dg) || (io->beta && !io->dbeta) ||
      (io->bonus && !io->dbonus) || !io->dh0 || !gradbuf) {
    prepared_free_(&pp);
    return fla_set_error(op->ctx, FLA_NOMEM, "fla_op_backward: out of memory");
  }
  fla_convert(d_o64, FLA_F64, d_o->data, d_o->dtype, d_o->numel);
  if (dht) fla_convert(dht64, FLA_F64, dht->data, dht->dtype, dht->numel);
  io->d_o = d_o64;
  io->dht = dht64;
  st = run_core_(op, &pp, 1);
  if (st == FLA_OK) {
    for (int i = 0; i < op->ir->num_inputs; i++) {
      if (!g.d[i]) continue;
      input_grad_(op, &pp, i, gradbuf);
      store_(g.d[i], gradbuf);
    }
    if (g.dh0) store_(g.dh0, io->dh0);
  }
  prepared_free_(&pp);
  return st;
}
