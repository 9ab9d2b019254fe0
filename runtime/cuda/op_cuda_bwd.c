/*
** op_cuda_bwd.c -- the backward of a bound recipe on the CUDA backend.
**
** Mirrors fla_op_backward's CPU path (runtime/op.c): the feature maps run
** forward again (PREP_FWD, into scratch) to give the core its effective
** inputs; the core backward stage recomputes the forward from checkpoints
** and writes dv, dg, dbeta, dbonus, dh0 directly and the core's dq, dk, dp
** as f32 into scratch; PREP_BWD then maps those onto the recipe's q, k, p
** (the feature map's backward, or a cast where there is none). Gradients
** not asked for get a 0 pointer and are not written.
**
** The core backward is chosen by bwd_core_(): chunked backward stages
** first, the token-by-token RECURRENT_BWD when none handles the key.
*/
#include "cuda/op_cuda_internal.h"
#include "cuda/modcache.h"
#include "feature.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PREP_Q = 0, PREP_K, PREP_P };

typedef struct bwd_plan {
  stage_src core;
  stage_src fwd[3], bwd[3]; /* by PREP_*: feature map forward (src NULL: none), backward */
} bwd_plan;

static void bwd_plan_free_(bwd_plan *p) {
  free(p->core.src);
  for (int i = 0; i < 3; i++) free(p->fwd[i].src), free(p->bwd[i].src);
  memset(p, 0, sizeof *p);
}

/* The chunked backward stages that write dq, dk, dv in the input dtype
** straight into their tensors (no PREP_BWD after them). */
static int writes_grads_in_place_(fla_stage s) {
  return s == FLA_STAGE_CHUNK_BWD || s == FLA_STAGE_CHUNK_WY_BWD || s == FLA_STAGE_CHUNK_GK_BWD;
}

/*
** The core backward stage for key. Chunked stages first, in order; one that
** answers FLA_UNSUPPORTED passes to the next, and RECURRENT_BWD takes any
** key the forward takes. CHUNK_BWD (the decay family, bf16), CHUNK_WY_BWD
** (the delta rule, bf16) and CHUNK_GK_BWD (per-key gates: GLA) write dq and
** dk in the input dtype straight into their tensors, so they are taken only
** when q and k have no feature map (a mapped recipe's prep_bwd reads the core's
** f32 gradients, which only RECURRENT_BWD writes).
*/
static fla_status bwd_core_(fla_op *op, const fla_gen_key *key, stage_src *core) {
  static const fla_stage chunked_[] = {FLA_STAGE_CHUNK_BWD, FLA_STAGE_CHUNK_WY_BWD, FLA_STAGE_CHUNK_GK_BWD};
  fla_ctx *ctx = op->ctx;
  fla_status st = FLA_UNSUPPORTED;
  int mapped = op->ir->feature_q != FLA_FEATURE_IDENTITY || op->ir->feature_k != FLA_FEATURE_IDENTITY;
  int recurrent = mapped || op->algo == FLA_ALGO_RECURRENT || (op->T == 1 && !op->varlen);
  for (size_t i = 0; !recurrent && st == FLA_UNSUPPORTED && i < sizeof chunked_ / sizeof chunked_[0];
       i++) {
    if (chunked_[i] == FLA_STAGE_COUNT) continue;
    st = fla_cuda_gen_stage(op, ctx, chunked_[i], key, core);
    if (st == FLA_UNSUPPORTED) {
      free(core->src);
      core->src = NULL;
      fla_clear_error(ctx);
    }
  }
  if (st == FLA_UNSUPPORTED) st = fla_cuda_gen_stage(op, ctx, FLA_STAGE_RECURRENT_BWD, key, core);
  return st;
}

static fla_status bwd_plan_(fla_op *op, int in_bf16, int has_h0, int has_dht, bwd_plan *p) {
  const fla_ir *ir = op->ir;
  fla_ctx *ctx = op->ctx;
  memset(p, 0, sizeof *p);
  fla_gen_key key;
  fla_gen_key_from_ir(ir, (int)op->Ks, (int)op->V, in_bf16, has_h0, has_dht, &key);
  fla_status st = bwd_core_(op, &key, &p->core);
  if (st != FLA_OK) goto fail;
  fla_ir_feature maps[3] = {ir->feature_q, ir->feature_k, ir->feature_k};
  int present[3] = {1, !ir->key_from_decay, ir->probe >= 0};
  for (int i = 0; i < 3; i++) {
    if (!present[i]) continue;
    fla_gen_key pk;
    fla_cuda_prep_key(&key, maps[i], op->K, &pk);
    if (maps[i] != FLA_FEATURE_IDENTITY &&
        (st = fla_cuda_gen_stage(op, ctx, FLA_STAGE_PREP_FWD, &pk, &p->fwd[i])) != FLA_OK)
      goto fail;
    if (writes_grads_in_place_(p->core.stage)) continue; /* dq, dk written in place */
    if ((st = fla_cuda_gen_stage(op, ctx, FLA_STAGE_PREP_BWD, &pk, &p->bwd[i])) != FLA_OK) goto fail;
  }
  return FLA_OK;
fail:
  bwd_plan_free_(p);
  return st;
}

/* The plan and its kernels for one (dtype, h0, dht) combination, kept on the
** op: a repeated backward (training steps) neither regenerates nor hashes
** sources. Rebuilt when the combination changes. */
typedef struct bwd_cache {
  int in_bf16, has_h0, has_dht;
  bwd_plan p;
  CUfunction core_fns[FLA_STAGE_MAX_KERNELS], fwd_fns[3][FLA_STAGE_MAX_KERNELS],
      bwd_fns[3][FLA_STAGE_MAX_KERNELS];
} bwd_cache;

static void bwd_cache_free_(void *p) {
  bwd_cache *c = p;
  if (!c) return;
  bwd_plan_free_(&c->p);
  free(c);
}

static fla_status bwd_cache_get_(fla_op *op, int in_bf16, int has_h0, int has_dht, bwd_cache **out) {
  bwd_cache *c = op->backend_bwd_cache;
  if (c && c->in_bf16 == in_bf16 && c->has_h0 == has_h0 && c->has_dht == has_dht) {
    *out = c;
    return FLA_OK;
  }
  fla_ctx *ctx = op->ctx;
  c = calloc(1, sizeof *c);
  if (!c) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  c->in_bf16 = in_bf16, c->has_h0 = has_h0, c->has_dht = has_dht;
  fla_status st = bwd_plan_(op, in_bf16, has_h0, has_dht, &c->p);
  if (st == FLA_OK) st = fla_cuda_stage_fns(ctx, &c->p.core, c->core_fns);
  for (int i = 0; st == FLA_OK && i < 3; i++) {
    if (c->p.fwd[i].src) st = fla_cuda_stage_fns(ctx, &c->p.fwd[i], c->fwd_fns[i]);
    if (st == FLA_OK && c->p.bwd[i].src) st = fla_cuda_stage_fns(ctx, &c->p.bwd[i], c->bwd_fns[i]);
  }
  if (st != FLA_OK) {
    bwd_cache_free_(c);
    return st;
  }
  if (op->backend_bwd_cache_free) op->backend_bwd_cache_free(op->backend_bwd_cache);
  op->backend_bwd_cache = c;
  op->backend_bwd_cache_free = bwd_cache_free_;
  *out = c;
  return FLA_OK;
}

/* The gradient tensors' dtypes: inputs' dtype for input gradients, f32 for dh0. */
fla_status fla_cuda_check_grad_dtypes(fla_op *op, fla_tensor *const *d, fla_tensor *dh0, fla_dtype dt) {
  const fla_ir *ir = op->ir;
  for (int i = 0; i < ir->num_inputs; i++)
    if (d[i] && d[i]->dtype != dt)
      return fla_set_error(op->ctx, FLA_UNSUPPORTED,
                           "recipe '%s' on the GPU: gradient 'd%s' is %s; input gradients have "
                           "the inputs' dtype (%s)",
                           ir->name, ir->inputs[i].name, fla_dtype_name(d[i]->dtype),
                           fla_dtype_name(dt));
  if (dh0 && dh0->dtype != FLA_F32)
    return fla_set_error(op->ctx, FLA_UNSUPPORTED,
                         "recipe '%s' on the GPU: gradient 'dh0' is %s; states are f32", ir->name,
                         fla_dtype_name(dh0->dtype));
  return FLA_OK;
}

fla_status fla_cuda_op_backward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                                fla_tensor *cu_seqlens, fla_tensor *d_o, fla_tensor *dht,
                                fla_tensor *const *d, fla_tensor *dh0) {
  fla_ctx *ctx = op->ctx;
  const fla_ir *ir = op->ir;
  fla_dtype dt = FLA_F32;
  if (d_o->dtype != in[0]->dtype)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "recipe '%s' on the GPU: 'd_o' is %s; it must have the inputs' dtype (%s)",
                         ir->name, fla_dtype_name(d_o->dtype), fla_dtype_name(in[0]->dtype));
  if (dht && dht->dtype != FLA_F32)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "recipe '%s' on the GPU: 'dht' is %s; states are f32",
                         ir->name, fla_dtype_name(dht->dtype));
  fla_status st = fla_cuda_check_dtypes(op, in, h0, d_o, dht, &dt);
  if (st != FLA_OK) return st;
  if ((st = fla_cuda_check_grad_dtypes(op, d, dh0, dt)) != FLA_OK) return st;
  if (op->N > INT32_MAX || op->H > INT32_MAX)
    return fla_set_error(ctx, FLA_SHAPE, "recipe '%s' on the GPU: too many sequences or heads", ir->name);
  int64_t *cu = malloc(sizeof(int64_t) * (size_t)(op->N + 1));
  if (!cu) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  bwd_cache *c = NULL;
  if ((st = fla_cuda_offsets(op, cu_seqlens, cu)) != FLA_OK) goto done;
  if ((st = bwd_cache_get_(op, dt == FLA_BF16, h0 != NULL, dht != NULL, &c)) != FLA_OK) goto done;
  const bwd_plan *pp = &c->p;

  fla_kernel_args a;
  fla_cuda_base_args(op, in, h0, cu, &a);
  a.d_o = d_o->dptr;
  a.dht = dht ? dht->dptr : 0;
  st = fla_cuda_upload_slot(ctx, SLOT_CU, cu, sizeof(int64_t) * (size_t)(op->N + 1), &a.cu);
  if (st != FLA_OK) goto done;
  if (op->gamma) {
    float g[4096];
    if (op->H > 4096) {
      st = fla_set_error(ctx, FLA_UNSUPPORTED, "recipe '%s' on the GPU: more than 4096 heads", ir->name);
      goto done;
    }
    for (int64_t h = 0; h < op->H; h++) g[h] = (float)op->gamma[h];
    if ((st = fla_cuda_upload_slot(ctx, SLOT_GAMMA, g, sizeof(float) * (size_t)op->H, &a.gamma)) != FLA_OK)
      goto done;
  }

  /* Effective q, k, p: the raw inputs through their feature maps. */
  int raw[3] = {ir->query, ir->key_from_decay ? -1 : ir->key, ir->probe};
  uint64_t *eff[3] = {&a.q, &a.k, &a.p};
  size_t esz = fla_dtype_size(dt);
  for (int i = 0; i < 3; i++) {
    if (raw[i] < 0) continue;
    *eff[i] = in[raw[i]]->dptr;
    if (!pp->fwd[i].src) continue;
    fla_kernel_args pa = a;
    pa.x = in[raw[i]]->dptr;
    st = fla_cuda_scratch(ctx, SLOT_Q + i, (size_t)(a.rows * op->Ks) * esz, &pa.y);
    if (st == FLA_OK) st = fla_cuda_run_stage(ctx, &pp->fwd[i], c->fwd_fns[i], &pa);
    if (st != FLA_OK) goto done;
    *eff[i] = pa.y;
  }

  /* Gradients: dv, dg, dbeta, dbonus, dh0 straight into the caller's
  ** tensors; the core's dq, dk, dp (f32) into scratch for PREP_BWD. */
  a.dv = d[ir->value] ? d[ir->value]->dptr : 0;
  if ((ir->decay == FLA_DECAY_SCALAR || ir->decay == FLA_DECAY_KEY) && d[ir->decay_input])
    a.dg = d[ir->decay_input]->dptr;
  if (ir->rate >= 0 && d[ir->rate]) a.dbeta = d[ir->rate]->dptr;
  if (ir->bonus >= 0 && d[ir->bonus]) a.dbonus = d[ir->bonus]->dptr;
  a.dh0 = dh0 ? dh0->dptr : 0;
  uint64_t *core_grad[3] = {&a.dq, &a.dk, &a.dp};
  int chunked = writes_grads_in_place_(pp->core.stage);
  for (int i = 0; i < 3; i++) {
    if (raw[i] < 0) continue;
    if (chunked) {
      /* chunk_bwd / chunk_wy_bwd write dq, dk, dp, dv (input dtype) unconditionally: the
      ** caller's tensors, or scratch for those not asked for */
      if (d[raw[i]]) *core_grad[i] = d[raw[i]]->dptr;
      else if ((st = fla_cuda_scratch(ctx, SLOT_DQ + i, esz * (size_t)(a.rows * op->Ks),
                                      core_grad[i])) != FLA_OK)
        goto done;
      continue;
    }
    if (d[raw[i]] &&
        (st = fla_cuda_scratch(ctx, SLOT_DQ + i, sizeof(float) * (size_t)(a.rows * op->Ks),
                               core_grad[i])) != FLA_OK)
      goto done;
  }
  if (chunked) {
    if (!a.dv && (st = fla_cuda_scratch(ctx, SLOT_DP, esz * (size_t)(a.rows * op->V), &a.dv)) != FLA_OK)
      goto done;
    if ((st = fla_cuda_upload_chunk_tables(op, cu, pp->core.cfg.BT, &a)) != FLA_OK) goto done;
  }

  size_t ws0 = 0, ws1 = 0;
  fla_stage_workspace(pp->core.stage, &pp->core.key, &pp->core.cfg, &a, &ws0, &ws1);
  if (ws0 && (st = fla_cuda_scratch(ctx, SLOT_WS0, ws0, &a.ws0)) != FLA_OK) goto done;
  if (ws1 && (st = fla_cuda_scratch(ctx, SLOT_WS1, ws1, &a.ws1)) != FLA_OK) goto done;
  if ((st = fla_cuda_run_stage(ctx, &pp->core, c->core_fns, &a)) != FLA_OK) goto done;

  for (int i = 0; i < 3; i++) {
    if (raw[i] < 0 || !d[raw[i]] || !pp->bwd[i].src) continue;
    fla_kernel_args pa = a;
    pa.x = in[raw[i]]->dptr;
    pa.dy = *core_grad[i];
    pa.dx = d[raw[i]]->dptr;
    if ((st = fla_cuda_run_stage(ctx, &pp->bwd[i], c->bwd_fns[i], &pa)) != FLA_OK) goto done;
  }
  {
    char what[320];
    snprintf(what, sizeof what, "recipe '%s': backward stage %s (kernels %s, %s) failed on the device",
             ir->name, fla_stage_name(pp->core.stage), pp->core.kernels[0],
             pp->core.nkernels > 1 ? pp->core.kernels[1] : "-");
    st = fla_cuda_sync(ctx, what);
  }
done:
  free(cu);
  return st;
}

fla_status fla_cuda_op_precompile_backward(struct fla_op *op, fla_dtype in_dtype, int has_h0,
                                           int has_dht, const char *arch, int *compiled) {
  if (compiled) *compiled = 0;
  if (!op || !arch) return FLA_INVALID;
  if (!fla_cuda_is_gpu_float(in_dtype))
    return fla_set_error(op->ctx, FLA_UNSUPPORTED, "the GPU kernels take bf16 or f32, not %s",
                         fla_dtype_name(in_dtype));
  bwd_plan p;
  fla_status st = bwd_plan_(op, in_dtype == FLA_BF16, has_h0, has_dht, &p);
  const stage_src *all[7] = {&p.core, &p.fwd[0], &p.fwd[1], &p.fwd[2], &p.bwd[0], &p.bwd[1], &p.bwd[2]};
  for (int i = 0; st == FLA_OK && i < 7; i++) {
    if (!all[i]->src) continue;
    void *cubin = NULL;
    size_t size = 0;
    int cached = 0;
    st = fla_modcache_get_or_compile(op->ctx, fla_stage_name(all[i]->stage), all[i]->src, arch,
                                     NULL, 0, &cubin, &size, &cached);
    free(cubin);
    if (st == FLA_OK && !cached && compiled) (*compiled)++;
  }
  bwd_plan_free_(&p); /* also after a failed plan: it is zeroed then */
  return st;
}

int fla_cuda_op_backward_core_stage(struct fla_op *op, fla_dtype in_dtype, int has_h0, int has_dht) {
  if (!op) return -1;
  bwd_plan p;
  if (bwd_plan_(op, in_dtype == FLA_BF16, has_h0, has_dht, &p) != FLA_OK) return -1;
  int stage = (int)p.core.stage;
  bwd_plan_free_(&p);
  return stage;
}
