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
#include "cuda/op_cuda.h"
#include "hip/op_hip.h"
#include "op_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  for (int i = 0; i < (int)(sizeof op->ws / sizeof op->ws[0]); i++) free(op->ws[i]);
  if (op->backend_cache_free) op->backend_cache_free(op->backend_cache);
  if (op->backend_bwd_cache_free) op->backend_bwd_cache_free(op->backend_bwd_cache);
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
  if (t->device != fla_ctx_on_gpu(op->ctx))
    return fla_set_error(op->ctx, FLA_INVALID, "%s '%s' is in %s memory, but the op runs on the %s",
                         what, name, t->device ? "device" : "host", t->device ? "CPU" : "GPU");
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
  if (t->device)
    return fla_set_error(op->ctx, FLA_INVALID, "input 'cu_seqlens' is in device memory, but the op runs on the CPU");
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

/* Everything one call needs, in the dtype the algorithm computes in (the
** "work" dtype: float64 for the recurrent oracle, float32 for the chunked
** form): the recipe inputs as given (raw; aliases of the caller's memory when
** the dtypes already agree) and the core's inputs after feature maps, derived
** keys and constant decays, plus the core's outputs and gradients. */
typedef struct {
  fla_op *op;                     /* owner of the work buffers */
  fla_dtype work;
  size_t esz;
  int nowned;                     /* work buffers handed out */
  const void *raw[FLA_IR_MAX_INPUTS];
  const void *q, *k, *p, *v, *g, *beta, *bonus, *h0, *d_o, *dht;
  void *o, *ht, *dq, *dk, *dv, *dp, *dg, *dbeta, *dbonus, *dh0;
  int64_t *cu;
  fla_core_spec spec;
} prepared;

static void prepared_free_(prepared *pp) {
  free(pp->cu);
  memset(pp, 0, sizeof *pp);
}

/* A zeroed buffer of n work-dtype elements from the op's work buffers,
** valid until the next call on the op. */
static void *alloc_(prepared *pp, int64_t n) {
  fla_op *op = pp->op;
  int i = pp->nowned;
  if (i >= (int)(sizeof op->ws / sizeof op->ws[0])) return NULL;
  size_t bytes = (size_t)(n > 0 ? n : 1) * pp->esz;
  if (op->ws_bytes[i] < bytes) {
    free(op->ws[i]);
    op->ws_bytes[i] = 0;
    if (!(op->ws[i] = malloc(bytes))) return NULL;
    op->ws_bytes[i] = bytes;
  }
  pp->nowned++;
  memset(op->ws[i], 0, bytes);
  return op->ws[i];
}

/* The tensor's data in the work dtype: the tensor itself when it already is. */
static const void *load_(prepared *pp, const fla_tensor *t) {
  if (t->dtype == pp->work) return t->data;
  void *x = alloc_(pp, t->numel);
  if (x) fla_convert(x, pp->work, t->data, t->dtype, t->numel);
  return x;
}

/* Feature maps run in float64 on blocks of rows small enough to stay in
** cache (and under malloc's mmap threshold, so no page faults per call). */
#define FEATURE_BLOCK 4096

static int64_t block_rows_(int64_t width) {
  return width >= FEATURE_BLOCK ? 1 : FEATURE_BLOCK / width;
}

/* y = phi(x) for work-dtype x [rows, d] into y [rows, dout] of dtype ydt. */
static int feature_rows_(const prepared *pp, fla_ir_feature f, int64_t rows, int64_t d,
                         const void *x, const void *dy, void *y, fla_dtype ydt) {
  int64_t dout = fla_feature_dim(f, d), br = block_rows_(dout);
  size_t ysz = fla_dtype_size(ydt);
  if (pp->work == FLA_F32 && ydt == FLA_F32) { /* element-wise maps: no float64 round trip */
    int done = dy ? fla_feature_backward_f32(f, rows * d, x, dy, y) : fla_feature_forward_f32(f, rows * d, x, y);
    if (done) return 0;
  }
  double *b = malloc(sizeof(double) * (size_t)(br * (d + 2 * dout))); /* x, dy, out */
  if (!b) return -1;
  double *bx = b, *bdy = b + br * d, *bout = bdy + br * dout;
  for (int64_t r0 = 0; r0 < rows; r0 += br) {
    int64_t m = rows - r0 < br ? rows - r0 : br;
    fla_convert(bx, FLA_F64, (const char *)x + (size_t)(r0 * d) * pp->esz, pp->work, m * d);
    if (dy) { /* backward: dx [rows, d] */
      fla_convert(bdy, FLA_F64, (const char *)dy + (size_t)(r0 * dout) * pp->esz, pp->work, m * dout);
      fla_feature_backward(f, m, d, bx, bdy, bout);
      fla_convert((char *)y + (size_t)(r0 * d) * ysz, ydt, bout, FLA_F64, m * d);
    } else {
      fla_feature_forward(f, m, d, bx, bout);
      fla_convert((char *)y + (size_t)(r0 * dout) * ysz, ydt, bout, FLA_F64, m * dout);
    }
  }
  free(b);
  return 0;
}

/* The core's q, k or p: the raw input through its feature map. */
static const void *featured_(prepared *pp, fla_ir_feature f, int64_t rows, int64_t d, const void *raw) {
  if (f == FLA_FEATURE_IDENTITY) return raw;
  void *y = alloc_(pp, rows * fla_feature_dim(f, d));
  if (!y || feature_rows_(pp, f, rows, d, raw, NULL, y, pp->work)) return NULL;
  return y;
}

/* HGRN2: k_t = 1 - exp(gk_t), so forgetting and writing share one gate. */
static const void *key_from_decay_(prepared *pp, int64_t n, const void *gk) {
  char *k = alloc_(pp, n);
  double *b = k ? malloc(sizeof(double) * FEATURE_BLOCK) : NULL;
  if (!b) return NULL;
  for (int64_t i0 = 0; i0 < n; i0 += FEATURE_BLOCK) {
    int64_t m = n - i0 < FEATURE_BLOCK ? n - i0 : FEATURE_BLOCK;
    fla_convert(b, FLA_F64, (const char *)gk + (size_t)i0 * pp->esz, pp->work, m);
    for (int64_t i = 0; i < m; i++) b[i] = -expm1(b[i]);
    fla_convert(k + (size_t)i0 * pp->esz, pp->work, b, FLA_F64, m);
  }
  free(b);
  return k;
}

/* A constant per-head decay, broadcast over tokens as a scalar gate. */
static const void *const_decay_(prepared *pp, int64_t tokens, int64_t H, const double *gamma) {
  char *g = alloc_(pp, tokens * H);
  if (!g) return NULL;
  for (int64_t t = 0; t < tokens; t++)
    fla_convert(g + (size_t)(t * H) * pp->esz, pp->work, gamma, FLA_F64, H);
  return g;
}

static fla_status prepare_(fla_op *op, const op_args *a, fla_dtype work, prepared *pp) {
  const fla_ir *ir = op->ir;
  int64_t rows = op->tokens * op->H;
  memset(pp, 0, sizeof *pp);
  pp->op = op;
  pp->work = work;
  pp->esz = fla_dtype_size(work);
  pp->cu = calloc((size_t)(op->N + 1), sizeof(int64_t));
  if (!pp->cu) goto nomem;
  fla_status st = sequence_offsets_(op, a, pp->cu);
  if (st != FLA_OK) {
    prepared_free_(pp);
    return st;
  }
  for (int i = 0; i < ir->num_inputs; i++)
    if (!(pp->raw[i] = load_(pp, a->in[i]))) goto nomem;
  if (a->h0 && !(pp->h0 = load_(pp, a->h0))) goto nomem;
  if (!(pp->q = featured_(pp, ir->feature_q, rows, op->K, pp->raw[ir->query]))) goto nomem;
  pp->k = ir->key_from_decay ? key_from_decay_(pp, rows * op->K, pp->raw[ir->decay_input])
                             : featured_(pp, ir->feature_k, rows, op->K, pp->raw[ir->key]);
  if (!pp->k) goto nomem;
  if (ir->probe >= 0 && !(pp->p = featured_(pp, ir->feature_k, rows, op->K, pp->raw[ir->probe])))
    goto nomem;
  if (ir->decay == FLA_DECAY_CONST) {
    if (!(pp->g = const_decay_(pp, op->tokens, op->H, op->gamma))) goto nomem;
  } else if (ir->decay != FLA_DECAY_NONE) {
    pp->g = pp->raw[ir->decay_input];
  }
  pp->v = pp->raw[ir->value];
  pp->beta = ir->rate >= 0 ? pp->raw[ir->rate] : NULL;
  pp->bonus = ir->bonus >= 0 ? pp->raw[ir->bonus] : NULL;

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
  return FLA_OK;
nomem:
  prepared_free_(pp);
  return fla_set_error(op->ctx, FLA_NOMEM, "recipe '%s': out of memory preparing inputs", ir->name);
}

/* ----------------------------------------------------- running the core */

/* Element counts of the core's tensors. */
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

/* The typed io of either precision from the untyped pointers of pp. */
#define FILL_CORE_IO(io, pp, REAL)                                                     \
  do {                                                                                 \
    io.q = (const REAL *)pp->q, io.k = (const REAL *)pp->k, io.p = (const REAL *)pp->p; \
    io.v = (const REAL *)pp->v, io.g = (const REAL *)pp->g;                            \
    io.beta = (const REAL *)pp->beta, io.bonus = (const REAL *)pp->bonus;              \
    io.h0 = (const REAL *)pp->h0, io.d_o = (const REAL *)pp->d_o;                      \
    io.dht = (const REAL *)pp->dht;                                                    \
    io.o = (REAL *)pp->o, io.ht = (REAL *)pp->ht, io.dq = (REAL *)pp->dq;              \
    io.dk = (REAL *)pp->dk, io.dv = (REAL *)pp->dv, io.dp = (REAL *)pp->dp;            \
    io.dg = (REAL *)pp->dg, io.dbeta = (REAL *)pp->dbeta;                              \
    io.dbonus = (REAL *)pp->dbonus, io.dh0 = (REAL *)pp->dh0;                          \
  } while (0)

static int use_recurrent_(const fla_op *op) {
  if (op->algo == FLA_ALGO_RECURRENT) return 1;
  if (op->algo == FLA_ALGO_CHUNK) return 0;
  return op->T == 1 && !op->varlen;
}

static fla_dtype work_dtype_(const fla_op *op) { return use_recurrent_(op) ? FLA_F64 : FLA_F32; }

static fla_status run_core_(const fla_op *op, prepared *pp, int backward) {
  int rc;
  if (pp->work == FLA_F64) {
    fla_core_f64 io;
    FILL_CORE_IO(io, pp, double);
    rc = backward ? fla_cpu_recurrent_backward(&pp->spec, &io) : fla_cpu_recurrent_forward(&pp->spec, &io);
  } else {
    fla_core_f32 io;
    FILL_CORE_IO(io, pp, float);
    rc = backward ? fla_cpu_chunk_backward(&pp->spec, &io) : fla_cpu_chunk_forward(&pp->spec, &io);
  }
  if (rc != 0)
    return fla_set_error(op->ctx, FLA_NOMEM, "recipe '%s': out of memory in the %s %s pass",
                         op->ir->name, pp->work == FLA_F64 ? "recurrent" : "chunked",
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

/* Writes n work-dtype elements into the caller's tensor. */
static void store_(const prepared *pp, fla_tensor *t, const void *x) {
  fla_convert(t->data, t->dtype, x, pp->work, t->numel);
}

fla_status fla_op_forward(fla_op *op, const fla_arg *inputs, int num_inputs, fla_tensor *o,
                          fla_tensor *ht) {
  if (!op) return FLA_INVALID;
  if (!o) return fla_set_error(op->ctx, FLA_INVALID, "fla_op_forward: output 'o' is NULL");
  op_args a;
  fla_status st = match_inputs_(op, inputs, num_inputs, &a);
  if (st == FLA_OK) st = check_outputs_(op, o, ht, "o", "ht");
  if (st != FLA_OK) return st;
  if (op->ctx->backend == FLA_BACKEND_CUDA)
    return fla_cuda_op_forward(op, a.in, a.h0, a.cu_seqlens, o, ht);
  if (op->ctx->backend == FLA_BACKEND_HIP)
    return fla_hip_op_forward(op, a.in, a.h0, a.cu_seqlens, o, ht);
  prepared pp;
  if ((st = prepare_(op, &a, work_dtype_(op), &pp)) != FLA_OK) return st;
  core_sizes z = core_sizes_(&pp.spec);
  pp.o = alloc_(&pp, z.v);
  pp.ht = ht ? alloc_(&pp, z.state) : NULL;
  if (!pp.o || (ht && !pp.ht)) {
    prepared_free_(&pp);
    return fla_set_error(op->ctx, FLA_NOMEM, "fla_op_forward: out of memory");
  }
  st = run_core_(op, &pp, 0);
  if (st == FLA_OK) {
    store_(&pp, o, pp.o);
    if (ht) store_(&pp, ht, pp.ht);
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

/* dx = phi'(x)^T dy into the caller's tensor. */
static int feature_backward_(const prepared *pp, fla_ir_feature f, int64_t rows, int64_t d,
                             const void *x, const void *dy, fla_tensor *out) {
  if (f == FLA_FEATURE_IDENTITY) {
    store_(pp, out, dy);
    return 0;
  }
  return feature_rows_(pp, f, rows, d, x, dy, out->data, out->dtype);
}

/* k = 1 - exp(gk) shares the gate: dgk = dg - exp(gk) dk. */
static int decay_grad_with_key_(const prepared *pp, int64_t n, const void *gk, const void *dg,
                                const void *dk, fla_tensor *out) {
  double *b = malloc(sizeof(double) * 3 * FEATURE_BLOCK);
  if (!b) return -1;
  size_t osz = fla_dtype_size(out->dtype);
  for (int64_t i0 = 0; i0 < n; i0 += FEATURE_BLOCK) {
    int64_t m = n - i0 < FEATURE_BLOCK ? n - i0 : FEATURE_BLOCK;
    size_t off = (size_t)i0 * pp->esz;
    fla_convert(b, FLA_F64, (const char *)gk + off, pp->work, m);
    fla_convert(b + FEATURE_BLOCK, FLA_F64, (const char *)dg + off, pp->work, m);
    fla_convert(b + 2 * FEATURE_BLOCK, FLA_F64, (const char *)dk + off, pp->work, m);
    for (int64_t i = 0; i < m; i++) b[FEATURE_BLOCK + i] -= exp(b[i]) * b[2 * FEATURE_BLOCK + i];
    fla_convert((char *)out->data + (size_t)i0 * osz, out->dtype, b + FEATURE_BLOCK, FLA_F64, m);
  }
  free(b);
  return 0;
}

/* Gradient of recipe input i from the core's gradients, into out. */
static int input_grad_(const fla_op *op, const prepared *pp, int i, fla_tensor *out) {
  const fla_ir *ir = op->ir;
  int64_t rows = op->tokens * op->H;
  if (i == ir->query) return feature_backward_(pp, ir->feature_q, rows, op->K, pp->raw[i], pp->dq, out);
  if (i == ir->key) return feature_backward_(pp, ir->feature_k, rows, op->K, pp->raw[i], pp->dk, out);
  if (i == ir->probe) return feature_backward_(pp, ir->feature_k, rows, op->K, pp->raw[i], pp->dp, out);
  if (i == ir->decay_input && ir->key_from_decay)
    return decay_grad_with_key_(pp, rows * op->K, pp->raw[i], pp->dg, pp->dk, out);
  if (i == ir->decay_input) store_(pp, out, pp->dg);
  else if (i == ir->value) store_(pp, out, pp->dv);
  else if (i == ir->rate) store_(pp, out, pp->dbeta);
  else if (i == ir->bonus) store_(pp, out, pp->dbonus);
  return 0;
}

/* Buffers for every gradient the core produces. */
static int alloc_grads_(prepared *pp) {
  core_sizes z = core_sizes_(&pp->spec);
  pp->dq = alloc_(pp, z.qk);
  pp->dk = alloc_(pp, z.qk);
  pp->dv = alloc_(pp, z.v);
  pp->dh0 = alloc_(pp, z.state);
  if (!pp->dq || !pp->dk || !pp->dv || !pp->dh0) return -1;
  if (pp->p && !(pp->dp = alloc_(pp, z.qk))) return -1;
  if (pp->g && !(pp->dg = alloc_(pp, z.g))) return -1;
  if (pp->beta && !(pp->dbeta = alloc_(pp, z.beta))) return -1;
  if (pp->bonus && !(pp->dbonus = alloc_(pp, z.bonus))) return -1;
  return 0;
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
  if (op->ctx->backend == FLA_BACKEND_CUDA)
    return fla_cuda_op_backward(op, a.in, a.h0, a.cu_seqlens, (fla_tensor *)d_o, (fla_tensor *)dht,
                                g.d, g.dh0);
  if (op->ctx->backend == FLA_BACKEND_HIP)
    return fla_hip_op_backward(op, a.in, a.h0, a.cu_seqlens, (fla_tensor *)d_o, (fla_tensor *)dht,
                               g.d, g.dh0);
  prepared pp;
  if ((st = prepare_(op, &a, work_dtype_(op), &pp)) != FLA_OK) return st;
  pp.d_o = load_(&pp, d_o);
  pp.dht = dht ? load_(&pp, dht) : NULL;
  if (!pp.d_o || (dht && !pp.dht) || alloc_grads_(&pp)) {
    prepared_free_(&pp);
    return fla_set_error(op->ctx, FLA_NOMEM, "fla_op_backward: out of memory");
  }
  st = run_core_(op, &pp, 1);
  for (int i = 0; st == FLA_OK && i < op->ir->num_inputs; i++)
    if (g.d[i] && input_grad_(op, &pp, i, g.d[i]))
      st = fla_set_error(op->ctx, FLA_NOMEM, "fla_op_backward: out of memory");
  if (st == FLA_OK && g.dh0) store_(&pp, g.dh0, pp.dh0);
  prepared_free_(&pp);
  return st;
}
