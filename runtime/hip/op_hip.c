/*
** op_hip.c -- the forward and backward of a bound recipe on the HIP backend
** (op_hip.h). The steps are those of the CUDA op layer
** (runtime/cuda/op_cuda.c, op_cuda_bwd.c), whose vendor-neutral helpers it
** calls (dtype checks, sequence offsets, kernel arguments, prep keys:
** runtime/cuda/op_cuda_internal.h); what differs is the stage list (the
** portable stages only), the target (hipRTC, the device's offload arch) and
** the launches (runtime/hip/backend.c).
*/
#include "hip/op_hip.h"
#include "cuda/op_cuda_internal.h"
#include "feature.h"
#include "hip/hip_backend.h"
#include "hip/hiprtc.h"
#include "op_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PREP_Q = 0, PREP_K, PREP_P };

/* Scratch slots (fla_hip_scratch). */
enum { HS_Q = 0, HS_K, HS_P, HS_CU, HS_WS0, HS_WS1, HS_DQ, HS_DK, HS_DP, HS_GAMMA, HS_CFIRST,
       HS_CSEQ };

/* A plan: the core stage and the feature maps' stages (src NULL: none). */
typedef struct hip_plan {
  stage_src core;
  stage_src fwd[3], bwd[3]; /* by PREP_*: map forward; map backward (backward plans) */
  hipFunction_t core_fns[FLA_STAGE_MAX_KERNELS];
  hipFunction_t fwd_fns[3][FLA_STAGE_MAX_KERNELS], bwd_fns[3][FLA_STAGE_MAX_KERNELS];
  int in_bf16, has_h0, store_ht; /* what the plan was made for */
} hip_plan;

static void plan_free_(void *p) {
  hip_plan *h = p;
  if (!h) return;
  free(h->core.src);
  for (int i = 0; i < 3; i++) free(h->fwd[i].src), free(h->bwd[i].src);
  free(h);
}

static fla_status gen_(fla_ctx *ctx, fla_stage stage, const fla_gen_key *key, stage_src *s) {
  memset(s, 0, sizeof *s);
  s->stage = stage;
  s->key = *key;
  return fla_generate_target(ctx, FLA_TARGET_HIP, stage, &s->key, &s->cfg, &s->src, s->kernels,
                             &s->nkernels);
}

static int wants_recurrent_(const fla_op *op) {
  return op->algo == FLA_ALGO_RECURRENT || (op->T == 1 && !op->varlen);
}

/* The plan for (dtype, h0, ht or dht), sources generated, nothing loaded. */
static fla_status plan_make_(fla_op *op, int backward, int in_bf16, int has_h0, int store_ht,
                             hip_plan **out) {
  static const fla_stage chunked[] = {FLA_STAGE_CHUNK_FWD_PORTABLE,
                                      FLA_STAGE_CHUNK_GK_FWD_PORTABLE,
                                      FLA_STAGE_CHUNK_WY_FWD_PORTABLE};
  const fla_ir *ir = op->ir;
  fla_ctx *ctx = op->ctx;
  hip_plan *p = calloc(1, sizeof *p);
  if (!p) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  p->in_bf16 = in_bf16, p->has_h0 = has_h0, p->store_ht = store_ht;
  fla_gen_key key;
  fla_gen_key_from_ir(ir, (int)op->Ks, (int)op->V, in_bf16, has_h0, store_ht, &key);
  fla_status st = FLA_UNSUPPORTED;
  for (int i = 0; !backward && !wants_recurrent_(op) && st == FLA_UNSUPPORTED && i < 3; i++) {
    st = gen_(ctx, chunked[i], &key, &p->core);
    if (st == FLA_UNSUPPORTED) {
      free(p->core.src);
      p->core.src = NULL;
      fla_clear_error(ctx);
    }
  }
  /* The chunked backward writes dq and dk in the input dtype straight into
  ** their tensors: only when q and k have no feature map (whose backward
  ** reads the core's f32 gradients), as on CUDA. */
  int mapped = ir->feature_q != FLA_FEATURE_IDENTITY || ir->feature_k != FLA_FEATURE_IDENTITY;
  if (backward && !mapped && !wants_recurrent_(op)) {
    st = gen_(ctx, FLA_STAGE_CHUNK_BWD_PORTABLE, &key, &p->core);
    if (st == FLA_UNSUPPORTED) {
      free(p->core.src);
      p->core.src = NULL;
      fla_clear_error(ctx);
    }
  }
  if (st == FLA_UNSUPPORTED)
    st = gen_(ctx, backward ? FLA_STAGE_RECURRENT_BWD : FLA_STAGE_RECURRENT_FWD, &key, &p->core);
  int chunked_bwd = st == FLA_OK && p->core.stage == FLA_STAGE_CHUNK_BWD_PORTABLE;
  /* q, k (unless derived from the decay) and the probe through their maps */
  fla_ir_feature maps[3] = {ir->feature_q, ir->feature_k, ir->feature_k};
  int present[3] = {1, !ir->key_from_decay, ir->probe >= 0};
  for (int i = 0; st == FLA_OK && i < 3; i++) {
    if (!present[i]) continue;
    fla_gen_key pk;
    fla_cuda_prep_key(&key, maps[i], op->K, &pk);
    if (maps[i] != FLA_FEATURE_IDENTITY) st = gen_(ctx, FLA_STAGE_PREP_FWD, &pk, &p->fwd[i]);
    if (st == FLA_OK && backward && !chunked_bwd) st = gen_(ctx, FLA_STAGE_PREP_BWD, &pk, &p->bwd[i]);
  }
  if (st != FLA_OK) {
    plan_free_(p);
    return st;
  }
  *out = p;
  return FLA_OK;
}

static fla_status load_(fla_ctx *ctx, const stage_src *s, hipFunction_t *fns) {
  if (!s->src) return FLA_OK;
  return fla_hip_get_kernels(ctx, fla_stage_name(s->stage), s->src, (char (*)[64])s->kernels,
                             s->nkernels, fns);
}

/* The op's plan (kept on the op, rebuilt when the combination changes),
** its kernels loaded. */
static fla_status plan_get_(fla_op *op, int backward, int in_bf16, int has_h0, int store_ht,
                            hip_plan **out) {
  void **slot = backward ? &op->backend_bwd_cache : &op->backend_cache;
  void (**slot_free)(void *) = backward ? &op->backend_bwd_cache_free : &op->backend_cache_free;
  hip_plan *p = *slot;
  if (p && *slot_free == plan_free_ && p->in_bf16 == in_bf16 && p->has_h0 == has_h0 &&
      p->store_ht == store_ht) {
    *out = p;
    return FLA_OK;
  }
  fla_status st = plan_make_(op, backward, in_bf16, has_h0, store_ht, &p);
  if (st != FLA_OK) return st;
  st = load_(op->ctx, &p->core, p->core_fns);
  for (int i = 0; st == FLA_OK && i < 3; i++) {
    st = load_(op->ctx, &p->fwd[i], p->fwd_fns[i]);
    if (st == FLA_OK) st = load_(op->ctx, &p->bwd[i], p->bwd_fns[i]);
  }
  if (st != FLA_OK) {
    plan_free_(p);
    return st;
  }
  if (*slot_free) (*slot_free)(*slot);
  *slot = p;
  *slot_free = plan_free_;
  *out = p;
  return FLA_OK;
}

/* Launches every kernel of stage s (empty grids skipped). */
static fla_status run_(fla_ctx *ctx, const stage_src *s, const hipFunction_t *fns,
                       fla_kernel_args *a) {
  fla_kernel_launch l[FLA_STAGE_MAX_KERNELS];
  memset(l, 0, sizeof l);
  int n = fla_stage_launches(s->stage, &s->key, &s->cfg, a, l);
  if (n != s->nkernels)
    return fla_set_error(ctx, FLA_ERROR, "stage %s: %d launches for %d kernels",
                         fla_stage_name(s->stage), n, s->nkernels);
  for (int i = 0; i < n; i++) {
    if (!l[i].name[0]) snprintf(l[i].name, sizeof l[i].name, "%s", s->kernels[i]);
    if (l[i].grid[0] == 0 || l[i].grid[1] == 0 || l[i].grid[2] == 0) continue;
    fla_status st = fla_hip_launch(ctx, fns[i], &l[i], a);
    if (st != FLA_OK) return st;
  }
  return FLA_OK;
}

static fla_status upload_slot_(fla_ctx *ctx, int slot, const void *src, size_t bytes,
                               uint64_t *dptr) {
  fla_status st = fla_hip_scratch(ctx, slot, bytes, dptr);
  return st == FLA_OK ? fla_hip_upload(ctx, *dptr, src, bytes) : st;
}

/* The chunk tables of cu for chunks of BT tokens (the chunked backward's),
** uploaded into scratch: a->chunk_first, chunk_seq, num_chunks. */
static fla_status chunk_tables_(fla_op *op, const int64_t *cu, int BT, fla_kernel_args *a) {
  int64_t *first = NULL, nc = 0;
  int32_t *seq = NULL;
  fla_status st = fla_cuda_chunk_tables_host(op, cu, BT, &first, &seq, &nc);
  if (st != FLA_OK) return st;
  if (nc > INT32_MAX) st = fla_set_error(op->ctx, FLA_SHAPE, "too many chunks (%lld)", (long long)nc);
  if (st == FLA_OK)
    st = upload_slot_(op->ctx, HS_CFIRST, first, sizeof(int64_t) * (size_t)(op->N + 1),
                      &a->chunk_first);
  if (st == FLA_OK)
    st = upload_slot_(op->ctx, HS_CSEQ, seq, sizeof(int32_t) * (size_t)(nc > 0 ? nc : 1),
                      &a->chunk_seq);
  a->num_chunks = (int32_t)nc;
  free(first);
  free(seq);
  return st;
}

/* What forward and backward share: offsets, the plan, the arguments with
** cu and gamma on the device, and the effective q, k, p (the feature maps
** run into scratch). */
static fla_status prepare_(fla_op *op, int backward, fla_tensor *const *in, fla_tensor *h0,
                           fla_tensor *cs, fla_dtype dt, int store_ht, int64_t *cu,
                           hip_plan **pp, fla_kernel_args *a) {
  fla_ctx *ctx = op->ctx;
  const fla_ir *ir = op->ir;
  if (op->N > INT32_MAX || op->H > INT32_MAX || op->H > 4096)
    return fla_set_error(ctx, FLA_SHAPE, "recipe '%s' on HIP: too many sequences or heads",
                         ir->name);
  fla_status st = fla_cuda_offsets(op, cs, cu);
  if (st == FLA_OK) st = plan_get_(op, backward, dt == FLA_BF16, h0 != NULL, store_ht, pp);
  if (st != FLA_OK) return st;
  fla_cuda_base_args(op, in, h0, cu, a);
  st = upload_slot_(ctx, HS_CU, cu, sizeof(int64_t) * (size_t)(op->N + 1), &a->cu);
  if (st == FLA_OK && op->gamma) {
    float g[4096];
    for (int64_t h = 0; h < op->H; h++) g[h] = (float)op->gamma[h];
    st = upload_slot_(ctx, HS_GAMMA, g, sizeof(float) * (size_t)op->H, &a->gamma);
  }
  int raw[3] = {ir->query, ir->key_from_decay ? -1 : ir->key, ir->probe};
  uint64_t *eff[3] = {&a->q, &a->k, &a->p};
  for (int i = 0; st == FLA_OK && i < 3; i++) {
    if (raw[i] < 0) continue;
    *eff[i] = in[raw[i]]->dptr;
    if (!(*pp)->fwd[i].src) continue;
    fla_kernel_args pa = *a;
    pa.x = in[raw[i]]->dptr;
    st = fla_hip_scratch(ctx, HS_Q + i, (size_t)(a->rows * op->Ks) * fla_dtype_size(dt), &pa.y);
    if (st == FLA_OK) st = run_(ctx, &(*pp)->fwd[i], (*pp)->fwd_fns[i], &pa);
    *eff[i] = pa.y;
  }
  return st;
}

/* The core stage's workspaces in scratch, its launch, and the wait. */
static fla_status run_core_(fla_op *op, const hip_plan *p, fla_kernel_args *a) {
  fla_ctx *ctx = op->ctx;
  size_t ws0 = 0, ws1 = 0;
  fla_stage_workspace(p->core.stage, &p->core.key, &p->core.cfg, a, &ws0, &ws1);
  fla_status st = FLA_OK;
  if (ws0) st = fla_hip_scratch(ctx, HS_WS0, ws0, &a->ws0);
  if (st == FLA_OK && ws1) st = fla_hip_scratch(ctx, HS_WS1, ws1, &a->ws1);
  if (st == FLA_OK) st = run_(ctx, &p->core, p->core_fns, a);
  return st;
}

static fla_status sync_(fla_op *op, const hip_plan *p, const char *dir) {
  char what[320];
  snprintf(what, sizeof what, "recipe '%s': %s stage %s (kernel %s) failed on the HIP device",
           op->ir->name, dir, fla_stage_name(p->core.stage), p->core.kernels[0]);
  return fla_hip_sync(op->ctx, what);
}

fla_status fla_hip_op_forward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                              fla_tensor *cu_seqlens, fla_tensor *o, fla_tensor *ht) {
  fla_dtype dt = FLA_F32;
  fla_status st = fla_cuda_check_dtypes(op, in, h0, o, ht, &dt);
  if (st != FLA_OK) return st;
  int64_t *cu = malloc(sizeof(int64_t) * (size_t)(op->N + 1));
  if (!cu) return fla_set_error(op->ctx, FLA_NOMEM, "out of memory");
  hip_plan *p = NULL;
  fla_kernel_args a;
  st = prepare_(op, 0, in, h0, cu_seqlens, dt, ht != NULL, cu, &p, &a);
  if (st == FLA_OK) {
    a.o = o->dptr;
    a.ht = ht ? ht->dptr : 0;
    st = run_core_(op, p, &a);
  }
  if (st == FLA_OK) st = sync_(op, p, "forward");
  free(cu);
  return st;
}

fla_status fla_hip_op_backward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                               fla_tensor *cu_seqlens, fla_tensor *d_o, fla_tensor *dht,
                               fla_tensor *const *d, fla_tensor *dh0) {
  fla_ctx *ctx = op->ctx;
  const fla_ir *ir = op->ir;
  fla_dtype dt = FLA_F32;
  if (d_o->dtype != in[0]->dtype)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "recipe '%s' on HIP: 'd_o' is %s; it must have the inputs' dtype (%s)",
                         ir->name, fla_dtype_name(d_o->dtype), fla_dtype_name(in[0]->dtype));
  fla_status st = fla_cuda_check_dtypes(op, in, h0, d_o, dht, &dt);
  if (st == FLA_OK) st = fla_cuda_check_grad_dtypes(op, d, dh0, dt);
  if (st != FLA_OK) return st;
  int64_t *cu = malloc(sizeof(int64_t) * (size_t)(op->N + 1));
  if (!cu) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  hip_plan *p = NULL;
  fla_kernel_args a;
  st = prepare_(op, 1, in, h0, cu_seqlens, dt, dht != NULL, cu, &p, &a);
  if (st != FLA_OK) goto done;
  a.d_o = d_o->dptr;
  a.dht = dht ? dht->dptr : 0;
  /* dv, dg, dbeta, dbonus, dh0 into the caller's tensors; the core's f32
  ** dq, dk, dp into scratch for PREP_BWD (a cast where there is no map). */
  a.dv = d[ir->value] ? d[ir->value]->dptr : 0;
  if ((ir->decay == FLA_DECAY_SCALAR || ir->decay == FLA_DECAY_KEY) && d[ir->decay_input])
    a.dg = d[ir->decay_input]->dptr;
  if (ir->rate >= 0 && d[ir->rate]) a.dbeta = d[ir->rate]->dptr;
  if (ir->bonus >= 0 && d[ir->bonus]) a.dbonus = d[ir->bonus]->dptr;
  a.dh0 = dh0 ? dh0->dptr : 0;
  int raw[3] = {ir->query, ir->key_from_decay ? -1 : ir->key, ir->probe};
  uint64_t *core_grad[3] = {&a.dq, &a.dk, &a.dp};
  int chunked = p->core.stage == FLA_STAGE_CHUNK_BWD_PORTABLE;
  for (int i = 0; st == FLA_OK && i < 3; i++) {
    if (raw[i] < 0 || !d[raw[i]]) continue;
    if (chunked) *core_grad[i] = d[raw[i]]->dptr; /* in the input dtype, no map */
    else st = fla_hip_scratch(ctx, HS_DQ + i, sizeof(float) * (size_t)(a.rows * op->Ks), core_grad[i]);
  }
  if (st == FLA_OK && chunked) st = chunk_tables_(op, cu, p->core.cfg.BT, &a);
  if (st == FLA_OK) st = run_core_(op, p, &a);
  for (int i = 0; st == FLA_OK && i < 3; i++) {
    if (raw[i] < 0 || !d[raw[i]] || chunked) continue;
    fla_kernel_args pa = a;
    pa.x = in[raw[i]]->dptr;
    pa.dy = *core_grad[i];
    pa.dx = d[raw[i]]->dptr;
    st = run_(ctx, &p->bwd[i], p->bwd_fns[i], &pa);
  }
  if (st == FLA_OK) st = sync_(op, p, "backward");
done:
  free(cu);
  return st;
}

fla_status fla_hip_op_precompile(struct fla_op *op, int backward, fla_dtype in_dtype, int has_h0,
                                 int store_ht, const char *arch, int *compiled) {
  if (compiled) *compiled = 0;
  if (!op || !arch) return FLA_INVALID;
  if (!fla_cuda_is_gpu_float(in_dtype))
    return fla_set_error(op->ctx, FLA_UNSUPPORTED, "the GPU kernels take bf16 or f32, not %s",
                         fla_dtype_name(in_dtype));
  hip_plan *p = NULL;
  fla_status st = plan_make_(op, backward, in_dtype == FLA_BF16, has_h0, store_ht, &p);
  if (st != FLA_OK) return st;
  const stage_src *all[7] = {&p->core, &p->fwd[0], &p->fwd[1], &p->fwd[2],
                             &p->bwd[0], &p->bwd[1], &p->bwd[2]};
  for (int i = 0; st == FLA_OK && i < 7; i++) {
    if (!all[i]->src) continue;
    void *code = NULL;
    size_t size = 0;
    int cached = 0;
    st = fla_hip_modcache_get_or_compile(op->ctx, fla_stage_name(all[i]->stage), all[i]->src,
                                         arch, NULL, 0, &code, &size, &cached, NULL);
    free(code);
    if (st == FLA_OK && !cached && compiled) (*compiled)++;
  }
  plan_free_(p);
  return st;
}

int fla_hip_op_core_stage(struct fla_op *op, int backward, fla_dtype in_dtype, int has_h0,
                          int store_ht) {
  if (!op) return -1;
  hip_plan *p = NULL;
  if (plan_make_(op, backward, in_dtype == FLA_BF16, has_h0, store_ht, &p) != FLA_OK) return -1;
  int stage = (int)p->core.stage;
  plan_free_(p);
  return stage;
}
