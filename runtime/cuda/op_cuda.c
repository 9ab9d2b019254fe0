/*
** op_cuda.c -- the forward of a bound recipe on the CUDA backend.
**
** The GPU path mirrors the CPU one of runtime/op.c: feature maps run first
** (stage PREP_FWD, into scratch buffers), then the core recurrence runs on the
** effective inputs (stage RECURRENT_FWD or CHUNK_FWD). Every stage's source
** comes from the generator (gen/generate.h), is compiled through the on-disk
** module cache and loaded once per context (runtime/cuda/backend.c).
*/
#include "cuda/op_cuda.h"
#include "cuda/op_cuda_internal.h"
#include "cuda/modcache.h"
#include "cuda/tune_pick.h"
#include "feature.h"
#include "op_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ plan */

enum { PREP_Q = 0, PREP_K, PREP_P };

typedef struct plan {
  stage_src core;
  stage_src prep[3];     /* by PREP_*; src NULL when that input has no map */
  int prep_shared_qk;    /* k's map is q's: one module (still two launches) */
} plan;

static void plan_free_(plan *p) {
  free(p->core.src);
  for (int i = 0; i < 3; i++) free(p->prep[i].src);
  memset(p, 0, sizeof *p);
}

/* The tile configuration: tuned (runtime/cuda/tune_pick.h), else the default. */
fla_status fla_cuda_gen_stage(fla_op *op, fla_ctx *ctx, fla_stage stage, const fla_gen_key *key, stage_src *s) {
  s->stage = stage;
  s->key = *key;
  memset(&s->cfg, 0, sizeof s->cfg);
  fla_cuda_pick_config(op, ctx, stage, key, &s->cfg);
  s->src = NULL;
  return fla_generate(ctx, stage, &s->key, &s->cfg, &s->src, s->kernels, &s->nkernels);
}

/* The prep key: only what the feature map depends on. */
void fla_cuda_prep_key(const fla_gen_key *core, fla_ir_feature f, int64_t K_in, fla_gen_key *key) {
  memset(key, 0, sizeof *key);
  key->in_bf16 = core->in_bf16;
  key->K = core->K;
  key->V = core->V;
  key->feature = (int)f;
  key->feature_in_dim = (int)K_in;
}

static int wants_recurrent_(const fla_op *op) {
  return op->algo == FLA_ALGO_RECURRENT || (op->T == 1 && !op->varlen);
}

static fla_status plan_(fla_op *op, fla_ctx *ctx, int in_bf16, int has_h0, int store_ht, plan *p) {
  const fla_ir *ir = op->ir;
  memset(p, 0, sizeof *p);
  fla_gen_key key;
  memset(&key, 0, sizeof key);
  fla_gen_key_from_ir(ir, (int)op->Ks, (int)op->V, in_bf16, has_h0, store_ht, &key);
  fla_status st = FLA_UNSUPPORTED;
  /* The first chunked stage that handles the key; none: the recurrent form. */
  static const fla_stage chunked[] = {FLA_STAGE_CHUNK_FWD, FLA_STAGE_CHUNK_GK_FWD, FLA_STAGE_CHUNK_WY_FWD,
                                      FLA_STAGE_CHUNK_KDA_FWD};
  for (int i = 0; !wants_recurrent_(op) && st == FLA_UNSUPPORTED && i < (int)(sizeof chunked / sizeof chunked[0]); i++) {
    st = fla_cuda_gen_stage(op, ctx, chunked[i], &key, &p->core);
    /* the tuning database may have found the recurrent kernel faster here */
    if (st == FLA_OK && fla_cuda_pick_recurrent(op, ctx, chunked[i], &key)) st = FLA_UNSUPPORTED;
    if (st == FLA_UNSUPPORTED) {
      free(p->core.src);
      p->core.src = NULL;
      fla_clear_error(ctx);
    }
  }
  if (st == FLA_UNSUPPORTED) st = fla_cuda_gen_stage(op, ctx, FLA_STAGE_RECURRENT_FWD, &key, &p->core);
  if (st != FLA_OK) goto fail;

  fla_ir_feature maps[3] = {ir->feature_q, FLA_FEATURE_IDENTITY, FLA_FEATURE_IDENTITY};
  if (!ir->key_from_decay) maps[PREP_K] = ir->feature_k;
  if (ir->probe >= 0) maps[PREP_P] = ir->feature_k;
  for (int i = 0; i < 3; i++) {
    if (maps[i] == FLA_FEATURE_IDENTITY) continue;
    fla_gen_key pk;
    fla_cuda_prep_key(&key, maps[i], op->K, &pk);
    if ((st = fla_cuda_gen_stage(op, ctx, FLA_STAGE_PREP_FWD, &pk, &p->prep[i])) != FLA_OK) goto fail;
  }
  return FLA_OK;
fail:
  plan_free_(p);
  return st;
}

/* ---------------------------------------------------------------- checks */

int fla_cuda_is_gpu_float(fla_dtype d) { return d == FLA_BF16 || d == FLA_F32; }

fla_status fla_cuda_check_dtypes(fla_op *op, fla_tensor *const *in, fla_tensor *h0, fla_tensor *o,
                                 fla_tensor *ht, fla_dtype *dt) {
  const fla_ir *ir = op->ir;
  fla_ctx *ctx = op->ctx;
  fla_dtype d = in[0]->dtype;
  if (!fla_cuda_is_gpu_float(d))
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "recipe '%s' on the GPU: input '%s' is %s; the GPU kernels take bf16 or f32",
                         ir->name, ir->inputs[0].name, fla_dtype_name(d));
  for (int i = 1; i < ir->num_inputs; i++)
    if (in[i]->dtype != d)
      return fla_set_error(ctx, FLA_UNSUPPORTED,
                           "recipe '%s' on the GPU: input '%s' is %s but '%s' is %s; every input "
                           "must have one dtype (bf16 or f32)",
                           ir->name, ir->inputs[i].name, fla_dtype_name(in[i]->dtype),
                           ir->inputs[0].name, fla_dtype_name(d));
  if (o->dtype != d)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "recipe '%s' on the GPU: output 'o' is %s; it must have the inputs' dtype (%s)",
                         ir->name, fla_dtype_name(o->dtype), fla_dtype_name(d));
  if (h0 && h0->dtype != FLA_F32)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recipe '%s' on the GPU: 'h0' is %s; states are f32",
                         ir->name, fla_dtype_name(h0->dtype));
  if (ht && ht->dtype != FLA_F32)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recipe '%s' on the GPU: 'ht' is %s; states are f32",
                         ir->name, fla_dtype_name(ht->dtype));
  *dt = d;
  return FLA_OK;
}

/* Token offsets of every sequence (n*T for dense batches; cu_seqlens read
** back and checked as op.c does for the CPU). cu has N+1 entries. */
fla_status fla_cuda_offsets(fla_op *op, fla_tensor *cs, int64_t *cu) {
  fla_ctx *ctx = op->ctx;
  if (!op->varlen) {
    for (int64_t n = 0; n <= op->N; n++) cu[n] = n * op->T;
    return FLA_OK;
  }
  char got[128];
  if (!cs->device)
    return fla_set_error(ctx, FLA_INVALID, "input 'cu_seqlens' is in host memory, but the op runs on the GPU");
  if (cs->ndim != 1 || cs->shape[0] != op->N + 1)
    return fla_set_error(ctx, FLA_SHAPE, "input 'cu_seqlens' has shape %s, expected [%lld]",
                         fla_shape_str(got, sizeof got, cs->ndim, cs->shape), (long long)(op->N + 1));
  if (cs->dtype != FLA_I32 && cs->dtype != FLA_I64)
    return fla_set_error(ctx, FLA_INVALID, "input 'cu_seqlens' has dtype %s, expected i32 or i64",
                         fla_dtype_name(cs->dtype));
  fla_status st = fla_tensor_copy_to(ctx, cs, cu, FLA_I64, op->N + 1);
  if (st != FLA_OK) return st;
  if (cu[0] != 0)
    return fla_set_error(ctx, FLA_INVALID, "cu_seqlens[0] = %lld, must be 0", (long long)cu[0]);
  for (int64_t n = 1; n <= op->N; n++)
    if (cu[n] < cu[n - 1])
      return fla_set_error(ctx, FLA_INVALID, "cu_seqlens decreases at index %lld (%lld after %lld)",
                           (long long)n, (long long)cu[n], (long long)cu[n - 1]);
  if (cu[op->N] != op->T)
    return fla_set_error(ctx, FLA_INVALID, "cu_seqlens ends at %lld, must end at T = %lld",
                         (long long)cu[op->N], (long long)op->T);
  return FLA_OK;
}

/* ------------------------------------------------------------- launching */

fla_status fla_cuda_upload_slot(fla_ctx *ctx, int slot, const void *src, size_t bytes, uint64_t *dptr) {
  fla_status st = fla_cuda_scratch(ctx, slot, bytes, dptr);
  if (st == FLA_OK) st = fla_cuda_upload(ctx, *dptr, src, bytes);
  return st;
}

/* The functions of stage s, loaded (compiled or from the cache) once per context. */
fla_status fla_cuda_stage_fns(fla_ctx *ctx, const stage_src *s, CUfunction *fns) {
  return fla_cuda_get_kernels(ctx, fla_stage_name(s->stage), s->src, (char (*)[64])s->kernels,
                              s->nkernels, fns);
}

/* Launches every kernel of stage s (functions fns) with args. */
fla_status fla_cuda_run_stage(fla_ctx *ctx, const stage_src *s, const CUfunction *fns,
                              fla_kernel_args *args) {
  fla_kernel_launch l[FLA_STAGE_MAX_KERNELS];
  const char *name = fla_stage_name(s->stage);
  fla_status st = FLA_OK;
  memset(l, 0, sizeof l);
  int n = fla_stage_launches(s->stage, &s->key, &s->cfg, args, l);
  if (n != s->nkernels)
    return fla_set_error(ctx, FLA_ERROR, "stage %s: %d launches for %d kernels", name, n, s->nkernels);
  for (int i = 0; i < n; i++) {
    if (strcmp(l[i].name, s->kernels[i]) != 0 && l[i].name[0])
      return fla_set_error(ctx, FLA_ERROR, "stage %s: launch %d is '%s', kernel %d is '%s'", name,
                           i, l[i].name, i, s->kernels[i]);
    if (!l[i].name[0]) snprintf(l[i].name, sizeof l[i].name, "%s", s->kernels[i]);
    if (l[i].grid[0] == 0 || l[i].grid[1] == 0 || l[i].grid[2] == 0) continue; /* nothing to do */
    if ((st = fla_cuda_launch(ctx, fns[i], &l[i], args)) != FLA_OK) return st;
  }
  return FLA_OK;
}

/* What an op keeps between forwards: the plan for one (dtype, h0, ht)
** combination, its kernels, and for dense batches the sequence and chunk
** tables and the constant decay on the device. A repeated forward (decoding,
** training steps) then neither regenerates and hashes sources nor uploads. */
typedef struct op_cache {
  int in_bf16, has_h0, store_ht;
  plan p;
  CUfunction core_fns[FLA_STAGE_MAX_KERNELS];
  CUfunction prep_fns[3][FLA_STAGE_MAX_KERNELS];
  fla_tensor *cu, *cfirst, *cseq, *gamma;  /* device copies; cu/chunk tables dense only */
  int32_t num_chunks;
} op_cache;

static void op_cache_free_(void *p) {
  op_cache *c = p;
  if (!c) return;
  plan_free_(&c->p);
  fla_tensor_free(c->cu), fla_tensor_free(c->cfirst), fla_tensor_free(c->cseq);
  fla_tensor_free(c->gamma);
  free(c);
}

/* A device tensor holding n elements of host data. */
static fla_status device_copy_(fla_ctx *ctx, fla_dtype dt, int64_t n, const void *src, fla_tensor **out) {
  int64_t shape[1] = {n > 0 ? n : 1};
  fla_status st = fla_tensor_new(ctx, dt, 1, shape, out);
  if (st == FLA_OK && n > 0) st = fla_tensor_copy_from(ctx, *out, src, dt, n);
  return st;
}

/* Chunk tables for chunk size BT on the host: first [N+1], seq [NC]. */
void fla_cuda_base_args(const fla_op *op, fla_tensor *const *in, const fla_tensor *h0,
                        const int64_t *cu, fla_kernel_args *a) {
  const fla_ir *ir = op->ir;
  memset(a, 0, sizeof *a);
  a->total = cu[op->N];
  a->rows = a->total * op->H;
  a->N = (int32_t)op->N;
  a->H = (int32_t)op->H;
  a->scale = (float)op->scale;
  a->v = in[ir->value]->dptr;
  if (ir->decay == FLA_DECAY_SCALAR || ir->decay == FLA_DECAY_KEY) a->g = in[ir->decay_input]->dptr;
  if (ir->rate >= 0) a->beta = in[ir->rate]->dptr;
  if (ir->bonus >= 0) a->bonus = in[ir->bonus]->dptr;
  a->h0 = h0 ? h0->dptr : 0;
}

fla_status fla_cuda_chunk_tables_host(fla_op *op, const int64_t *cu, int BT, int64_t **first,
                                      int32_t **seq, int64_t *nc_out) {
  int64_t N = op->N, nc = 0;
  *first = malloc(sizeof(int64_t) * (size_t)(N + 1));
  if (!*first) return fla_set_error(op->ctx, FLA_NOMEM, "out of memory (chunk tables)");
  for (int64_t n = 0; n < N; n++) {
    (*first)[n] = nc;
    nc += (cu[n + 1] - cu[n] + BT - 1) / BT;
  }
  (*first)[N] = nc;
  *seq = malloc(sizeof(int32_t) * (size_t)(nc > 0 ? nc : 1));
  if (!*seq) {
    free(*first);
    return fla_set_error(op->ctx, FLA_NOMEM, "out of memory (chunk tables)");
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = (*first)[n]; c < (*first)[n + 1]; c++) (*seq)[c] = (int32_t)n;
  *nc_out = nc;
  return FLA_OK;
}

static int core_is_chunked_(const op_cache *c) { return c->p.core.stage != FLA_STAGE_RECURRENT_FWD; }

static int core_bt_(const fla_op *op, const op_cache *c) {
  return c->p.core.cfg.BT > 0 ? c->p.core.cfg.BT : op->chunk;
}

/* Builds the cache for (dtype, h0, ht): plan, kernels, dense tables. */
static fla_status cache_build_(fla_op *op, int in_bf16, int has_h0, int store_ht, const int64_t *cu,
                               op_cache **out) {
  fla_ctx *ctx = op->ctx;
  op_cache *c = calloc(1, sizeof *c);
  if (!c) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  c->in_bf16 = in_bf16, c->has_h0 = has_h0, c->store_ht = store_ht;
  fla_status st = plan_(op, ctx, in_bf16, has_h0, store_ht, &c->p);
  if (st == FLA_OK) st = fla_cuda_stage_fns(ctx, &c->p.core, c->core_fns);
  for (int i = 0; st == FLA_OK && i < 3; i++)
    if (c->p.prep[i].src) st = fla_cuda_stage_fns(ctx, &c->p.prep[i], c->prep_fns[i]);
  if (st == FLA_OK && op->gamma) {
    float *g = malloc(sizeof(float) * (size_t)op->H);
    if (!g) st = fla_set_error(ctx, FLA_NOMEM, "out of memory");
    for (int64_t h = 0; g && h < op->H; h++) g[h] = (float)op->gamma[h];
    if (g) st = device_copy_(ctx, FLA_F32, op->H, g, &c->gamma);
    free(g);
  }
  if (st == FLA_OK && !op->varlen) {
    st = device_copy_(ctx, FLA_I64, op->N + 1, cu, &c->cu);
    if (st == FLA_OK && core_is_chunked_(c)) {
      int64_t *first = NULL, nc = 0;
      int32_t *seq = NULL;
      st = fla_cuda_chunk_tables_host(op, cu, core_bt_(op, c), &first, &seq, &nc);
      if (st == FLA_OK) st = device_copy_(ctx, FLA_I64, op->N + 1, first, &c->cfirst);
      if (st == FLA_OK) st = device_copy_(ctx, FLA_I32, nc, seq, &c->cseq);
      c->num_chunks = (int32_t)nc;
      free(first);
      free(seq);
    }
  }
  if (st != FLA_OK) {
    op_cache_free_(c);
    return st;
  }
  *out = c;
  return FLA_OK;
}

/* The op's cache for (dtype, h0, ht), rebuilt when the combination changes. */
static fla_status cache_get_(fla_op *op, int in_bf16, int has_h0, int store_ht, const int64_t *cu,
                             op_cache **out) {
  op_cache *c = op->backend_cache;
  if (c && c->in_bf16 == in_bf16 && c->has_h0 == has_h0 && c->store_ht == store_ht) {
    *out = c;
    return FLA_OK;
  }
  fla_status st = cache_build_(op, in_bf16, has_h0, store_ht, cu, &c);
  if (st != FLA_OK) return st;
  if (op->backend_cache_free) op->backend_cache_free(op->backend_cache);
  op->backend_cache = c;
  op->backend_cache_free = op_cache_free_;
  *out = c;
  return FLA_OK;
}

/* Sequence and chunk tables of this call: the cached ones for dense
** batches, uploaded into scratch for variable-length ones. */
static fla_status tables_(fla_op *op, const op_cache *c, const int64_t *cu, fla_kernel_args *a) {
  fla_ctx *ctx = op->ctx;
  if (!op->varlen) {
    a->cu = c->cu->dptr;
    if (core_is_chunked_(c)) {
      a->chunk_first = c->cfirst->dptr;
      a->chunk_seq = c->cseq->dptr;
      a->num_chunks = c->num_chunks;
    }
    return FLA_OK;
  }
  fla_status st = fla_cuda_upload_slot(ctx, SLOT_CU, cu, sizeof(int64_t) * (size_t)(op->N + 1), &a->cu);
  if (st != FLA_OK || !core_is_chunked_(c)) return st;
  return fla_cuda_upload_chunk_tables(op, cu, core_bt_(op, c), a);
}

fla_status fla_cuda_upload_chunk_tables(fla_op *op, const int64_t *cu, int BT, fla_kernel_args *a) {
  int64_t *first = NULL, nc = 0;
  int32_t *seq = NULL;
  fla_status st = fla_cuda_chunk_tables_host(op, cu, BT, &first, &seq, &nc);
  if (st != FLA_OK) return st;
  if (nc > INT32_MAX) st = fla_set_error(op->ctx, FLA_SHAPE, "too many chunks (%lld)", (long long)nc);
  if (st == FLA_OK)
    st = fla_cuda_upload_slot(op->ctx, SLOT_CFIRST, first, sizeof(int64_t) * (size_t)(op->N + 1),
                              &a->chunk_first);
  if (st == FLA_OK)
    st = fla_cuda_upload_slot(op->ctx, SLOT_CSEQ, seq, sizeof(int32_t) * (size_t)(nc > 0 ? nc : 1),
                              &a->chunk_seq);
  a->num_chunks = (int32_t)nc;
  free(first);
  free(seq);
  return st;
}

fla_status fla_cuda_op_forward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                               fla_tensor *cu_seqlens, fla_tensor *o, fla_tensor *ht) {
  fla_ctx *ctx = op->ctx;
  const fla_ir *ir = op->ir;
  fla_dtype dt = FLA_F32;
  fla_status st = fla_cuda_check_dtypes(op, in, h0, o, ht, &dt);
  if (st != FLA_OK) return st;
  if (op->N > INT32_MAX || op->H > INT32_MAX)
    return fla_set_error(ctx, FLA_SHAPE, "recipe '%s' on the GPU: too many sequences or heads", ir->name);
  int64_t *cu = malloc(sizeof(int64_t) * (size_t)(op->N + 1));
  if (!cu) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  op_cache *c = NULL;
  if ((st = fla_cuda_offsets(op, cu_seqlens, cu)) != FLA_OK) goto done;
  if ((st = cache_get_(op, dt == FLA_BF16, h0 != NULL, ht != NULL, cu, &c)) != FLA_OK) goto done;

  fla_kernel_args a;
  fla_cuda_base_args(op, in, h0, cu, &a);
  a.ht = ht ? ht->dptr : 0;
  a.o = o->dptr;
  a.gamma = c->gamma ? c->gamma->dptr : 0;
  if ((st = tables_(op, c, cu, &a)) != FLA_OK) goto done;

  /* Feature maps: x -> y row by row, into scratch. */
  int raw_index[3] = {ir->query, ir->key, ir->probe};
  uint64_t *dst[3] = {&a.q, &a.k, &a.p};
  size_t esz = fla_dtype_size(dt);
  for (int i = 0; i < 3; i++) {
    int idx = raw_index[i];
    if (idx < 0 || (i == PREP_K && ir->key_from_decay)) continue;
    if (!c->p.prep[i].src) {
      *dst[i] = in[idx]->dptr;
      continue;
    }
    fla_kernel_args pa = a;
    pa.x = in[idx]->dptr;
    int64_t dout = fla_feature_dim((fla_ir_feature)c->p.prep[i].key.feature, op->K);
    st = fla_cuda_scratch(ctx, SLOT_Q + i, (size_t)(a.rows * dout) * esz, &pa.y);
    if (st == FLA_OK) st = fla_cuda_run_stage(ctx, &c->p.prep[i], c->prep_fns[i], &pa);
    if (st != FLA_OK) goto done;
    *dst[i] = pa.y;
  }

  /* The core. */
  size_t ws0 = 0, ws1 = 0;
  fla_stage_workspace(c->p.core.stage, &c->p.core.key, &c->p.core.cfg, &a, &ws0, &ws1);
  if (ws0 && (st = fla_cuda_scratch(ctx, SLOT_WS0, ws0, &a.ws0)) != FLA_OK) goto done;
  if (ws1 && (st = fla_cuda_scratch(ctx, SLOT_WS1, ws1, &a.ws1)) != FLA_OK) goto done;
  if ((st = fla_cuda_run_stage(ctx, &c->p.core, c->core_fns, &a)) != FLA_OK) goto done;
  if (!fla_cuda_defer_sync(ctx)) {
    char what[320];
    snprintf(what, sizeof what, "recipe '%s': stage %s (kernel %s%s) failed on the device", ir->name,
             fla_stage_name(c->p.core.stage), c->p.core.kernels[0], c->p.core.nkernels > 1 ? ", ..." : "");
    st = fla_cuda_sync(ctx, what);
  }
done:
  free(cu);
  return st;
}

/* ------------------------------------------------------------ precompile */

static fla_status compile_(fla_ctx *ctx, const stage_src *s, const char *arch, int *compiled) {
  void *cubin = NULL;
  size_t size = 0;
  int cached = 0;
  fla_status st = fla_modcache_get_or_compile(ctx, fla_stage_name(s->stage), s->src, arch, NULL, 0,
                                              &cubin, &size, &cached);
  free(cubin);
  if (st == FLA_OK && !cached && compiled) (*compiled)++;
  return st;
}

fla_status fla_cuda_op_precompile(struct fla_op *op, fla_dtype in_dtype, int has_h0, int store_ht,
                                  const char *arch, int *compiled) {
  if (compiled) *compiled = 0;
  if (!op || !arch) return FLA_INVALID;
  if (!fla_cuda_is_gpu_float(in_dtype))
    return fla_set_error(op->ctx, FLA_UNSUPPORTED, "the GPU kernels take bf16 or f32, not %s",
                         fla_dtype_name(in_dtype));
  plan p;
  fla_status st = plan_(op, op->ctx, in_dtype == FLA_BF16, has_h0, store_ht, &p);
  if (st != FLA_OK) return st;
  st = compile_(op->ctx, &p.core, arch, compiled);
  for (int i = 0; st == FLA_OK && i < 3; i++)
    if (p.prep[i].src) st = compile_(op->ctx, &p.prep[i], arch, compiled);
  plan_free_(&p);
  return st;
}

int fla_cuda_op_core_stage(struct fla_op *op, fla_dtype in_dtype, int has_h0, int store_ht) {
  if (!op) return -1;
  plan p;
  if (plan_(op, op->ctx, in_dtype == FLA_BF16, has_h0, store_ht, &p) != FLA_OK) return -1;
  int stage = (int)p.core.stage;
  plan_free_(&p);
  return stage;
}
