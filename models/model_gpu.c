/*
** model_gpu.c -- a loaded model on a CUDA context: the weights uploaded once,
** the caches on the device, and the forward over the blocks (model.c's, with
** nn_gpu.h and the mixers of mixer_gpu.c). Only the token ids go up and the
** logits come down per call.
**
** Decode steps replay a CUDA graph (unless FLA_CUDA_GRAPHS=0): the
** first step of a batch size is captured (the recipe ops queue without
** synchronising, fla_cuda_set_defer_sync), later steps upload the ids and
** positions into the graph's fixed buffers and launch it, which removes the
** per-kernel launch cost that bounds decoding at batch 1.
*/
#include "internal.h"
#include "model_gpu.h"
#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ weights */

fla_status gpu_register_weight(fla_model *m, const float *p, int64_t numel) {
  if (!m->gpu && !(m->gpu = calloc(1, sizeof *m->gpu)))
    return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  gpu_model *G = m->gpu;
  if (G->nreg == G->capreg) {
    int cap = G->capreg ? 2 * G->capreg : 256;
    gpu_reg *grown = realloc(G->reg, sizeof(gpu_reg) * (size_t)cap);
    if (!grown) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
    G->reg = grown, G->capreg = cap;
  }
  G->reg[G->nreg++] = (gpu_reg){p, numel};
  return FLA_OK;
}

static int64_t numel_of_(const gpu_model *G, const float *p) {
  for (int i = G->nreg - 1; i >= 0; i--)
    if (G->reg[i].p == p) return G->reg[i].n;
  return -1;
}

static fla_status block_(fla_model *m, size_t bytes, dptr *out) {
  gpu_model *G = m->gpu;
  if (G->nblocks == G->capblocks) {
    int cap = G->capblocks ? 2 * G->capblocks : 64;
    dptr *grown = realloc(G->blocks, sizeof(dptr) * (size_t)cap);
    if (!grown) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
    G->blocks = grown, G->capblocks = cap;
  }
  fla_status s = fla_cuda_mem_alloc(m->ctx, bytes, out);
  if (s == FLA_OK) G->blocks[G->nblocks++] = *out;
  return s;
}

/* Copies n floats of host p to device dst as dt: bf16 is converted on the
** device, in pieces staged through the model's scratch. */
static fla_status put_(fla_model *m, dptr dst, const float *p, int64_t n, fla_dtype dt) {
  if (dt == FLA_F32) return fla_cuda_upload(m->ctx, dst, p, sizeof(float) * (size_t)n);
  nn_gpu *g = &m->gpu->g;
  const int64_t piece = 1 << 22;
  nn_gpu_reset(g);
  dptr stage = GF(g, piece);
  for (int64_t i = 0; i < n && g->status == FLA_OK; i += piece) {
    int64_t k = n - i < piece ? n - i : piece;
    gl_upload(g, stage, p + i, sizeof(float) * (size_t)k);
    gl_cast_bf16(g, stage, dst + (dptr)i * 2, k);
  }
  gl_sync(g, "weight upload");
  return gl_take_status(g);
}

/* A pending upload: host p (n floats) into *slot. */
typedef struct { const float *p; int64_t n; dptr *slot; } up_item;

/* Lays items out in one device block (each start 256-byte aligned) and uploads them. */
static fla_status upload_group_(fla_model *m, up_item *it, int n, fla_dtype dt) {
  size_t esz = fla_dtype_size(dt), total = 0;
  for (int i = 0; i < n; i++) total += ((size_t)it[i].n * esz + 255) & ~(size_t)255;
  if (!total) return FLA_OK;
  dptr base;
  fla_status s = block_(m, total, &base);
  size_t off = 0;
  for (int i = 0; i < n && s == FLA_OK; i++) {
    *it[i].slot = base + off;
    s = put_(m, base + off, it[i].p, it[i].n, dt);
    off += ((size_t)it[i].n * esz + 255) & ~(size_t)255;
  }
  return s;
}

static fla_status missing_(fla_model *m, int layer, const char *what) {
  return fla_set_error(m->ctx, FLA_ERROR, "layer %d: weight %s was not registered for the GPU", layer, what);
}

static fla_status upload_layer_(fla_model *m, int l) {
  gpu_model *G = m->gpu;
  model_layer *L = &m->layers[l];
  gpu_layer *W = L->gpu = &G->layers[l];
  up_item it[64];
  int n = 0;
  int64_t sz;
#define MAT_(f)                                                           \
  if (L->f) {                                                             \
    if ((sz = numel_of_(G, L->f)) < 0) return missing_(m, l, #f);         \
    it[n++] = (up_item){L->f, sz, &W->f};                                 \
  }
  GPU_MATS(MAT_)
#undef MAT_
  fla_status s = upload_group_(m, it, n, G->g.wdt);
  if (s != FLA_OK) return s;
  /* the projections of x next to each other, without padding: one product in decode */
  size_t esz = fla_dtype_size(G->g.wdt);
  const float *xs[] = {L->q_proj, L->k_proj, L->v_proj, L->g_proj, L->gk_proj0, L->a_proj, L->b_proj,
                       L->f_proj0, L->g_proj0, L->f_proj, L->i_proj};
  dptr xd[] = {W->q_proj, W->k_proj, W->v_proj, W->g_proj, W->gk_proj0, W->a_proj, W->b_proj,
               W->f_proj0, W->g_proj0, W->f_proj, W->i_proj};
  int64_t rows = 0, D = m->cfg.hidden_size;
  dptr next = W->q_proj;
  int ok = W->q_proj != 0;
  for (size_t i = 0; i < sizeof xs / sizeof xs[0] && ok; i++) {
    if (!xs[i]) continue;
    int64_t e = numel_of_(G, xs[i]);
    ok = xd[i] == next && e % D == 0;
    rows += e / D;
    next = xd[i] + (dptr)e * esz;
  }
  W->in_rows = ok ? rows : 0;
  W->mlp_fused = W->mlp_gate && W->mlp_up == W->mlp_gate + (dptr)(numel_of_(G, L->mlp_gate) * (int64_t)esz);
  n = 0;
#define VEC_(f)                                                           \
  if (L->f) {                                                             \
    sz = numel_of_(G, L->f);                                              \
    if (sz < 0 && L->f == L->lower_bound) sz = D;                         \
    if (sz < 0) return missing_(m, l, #f);                                \
    it[n++] = (up_item){L->f, sz, &W->f};                                 \
  }
  GPU_VECS(VEC_)
#undef VEC_
  for (int j = 0; j < 3; j++) {
    if (L->qkv_bias[j]) it[n++] = (up_item){L->qkv_bias[j], numel_of_(G, L->qkv_bias[j]), &W->qkv_bias[j]};
    if (L->conv[j].w) it[n++] = (up_item){L->conv[j].w, numel_of_(G, L->conv[j].w), &W->conv_w[j]};
    if (L->conv[j].b) it[n++] = (up_item){L->conv[j].b, numel_of_(G, L->conv[j].b), &W->conv_b[j]};
  }
  if ((s = upload_group_(m, it, n, FLA_F32)) != FLA_OK) return s;
  if (L->bonus) {
    up_item b = {L->bonus, (int64_t)L->H * L->K, &W->bonus};
    s = upload_group_(m, &b, 1, G->adt);
  }
  return s;
}

fla_status gpu_model_upload(fla_model *m, fla_dtype dtype) {
  if (!m->gpu && !(m->gpu = calloc(1, sizeof *m->gpu))) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  gpu_model *G = m->gpu;
  /* bf16 weights, float32 activations (the mixers' inputs and outputs up to
  ** GPU_F32_MIXER_MAX_T tokens a step, the products' inputs): bf16 activations
  ** cost up to 8e-3 relative RMS of the logits on fla's tiny checkpoints
  ** (docs/models.md); FLA_GPU_BF16_ACTIVATIONS=1 trades that for bf16 mixers
  ** and one bf16 product in prefill. */
  const char *act = getenv("FLA_GPU_BF16_ACTIVATIONS");
  int bf16_act = dtype == FLA_BF16 && act && act[0] == '1';
  G->adt = bf16_act ? FLA_BF16 : FLA_F32;
  const char *bm = getenv("FLA_GPU_BF16_MIXERS");
  G->bf16_long_mixers = bm && bm[0] == '1';
  fla_status s = nn_gpu_init(&G->g, m->ctx, dtype);
  if (s != FLA_OK) return s;
  G->g.split_x = dtype == FLA_BF16 && !bf16_act;
  if (!(G->layers = calloc((size_t)m->cfg.num_layers, sizeof(gpu_layer))))
    return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  int64_t D = m->cfg.hidden_size, Vb = m->cfg.vocab_size;
  /* The embeddings stay float32 (a decode step gathers one row of them: no
  ** bandwidth to save; in bf16 they were the largest single share of the
  ** error); the LM head, read whole every step, is in the weights' dtype. A
  ** tied head gets its own copy. */
  up_item emb = {m->embeddings, Vb * D, &G->embeddings}, head = {m->lm_head, Vb * D, &G->lm_head};
  if ((s = upload_group_(m, &emb, 1, FLA_F32)) != FLA_OK) return s;
  if (dtype == FLA_F32 && m->lm_head == m->embeddings) G->lm_head = G->embeddings;
  else if ((s = upload_group_(m, &head, 1, dtype)) != FLA_OK) return s;
  up_item vecs[2] = {{m->final_norm_w, D, &G->final_norm_w}, {m->final_norm_b, D, &G->final_norm_b}};
  if ((s = upload_group_(m, vecs, m->final_norm_b ? 2 : 1, FLA_F32)) != FLA_OK) return s;
  for (int l = 0; l < m->cfg.num_layers; l++)
    if ((s = upload_layer_(m, l)) != FLA_OK) return s;
  const char *env = getenv("FLA_CUDA_GRAPHS");
  G->use_graphs = !(env && env[0] == '0');
  return fla_cuda_sync(m->ctx, "weight upload");
}

/* ------------------------------------------------------------ CUDA graphs */

typedef struct {
  CUresult (*begin)(CUstream, int mode);
  CUresult (*end)(CUstream, void **graph);
  CUresult (*instantiate)(void **exec, void *graph, unsigned long long flags);
  CUresult (*launch)(void *exec, CUstream);
  CUresult (*exec_destroy)(void *exec);
  CUresult (*destroy)(void *graph);
} graph_api;

static int graph_api_(graph_api *a) {
  static graph_api api;
  static int state; /* 0 unknown, 1 ok, -1 missing */
  if (!state) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) h = dlopen("libcuda.so", RTLD_NOW | RTLD_NOLOAD);
    if (h) {
      *(void **)&api.begin = dlsym(h, "cuStreamBeginCapture_v2");
      *(void **)&api.end = dlsym(h, "cuStreamEndCapture");
      *(void **)&api.instantiate = dlsym(h, "cuGraphInstantiateWithFlags");
      *(void **)&api.launch = dlsym(h, "cuGraphLaunch");
      *(void **)&api.exec_destroy = dlsym(h, "cuGraphExecDestroy");
      *(void **)&api.destroy = dlsym(h, "cuGraphDestroy");
    }
    state = h && api.begin && api.end && api.instantiate && api.launch && api.exec_destroy && api.destroy ? 1 : -1;
  }
  *a = api;
  return state == 1;
}

static void graph_drop_(gpu_model *G) {
  graph_api a;
  if (G->graph_exec && graph_api_(&a)) a.exec_destroy(G->graph_exec);
  G->graph_exec = NULL;
  G->graph_B = 0;
}

/* ------------------------------------------------------------ caches */

fla_status gpu_cache_new(fla_cache *c) {
  fla_model *m = c->m;
  const model_config *cfg = &m->cfg;
  gpu_cache *gc = c->gpu = calloc(1, sizeof *gc);
  if (!gc || !(gc->L = calloc((size_t)cfg->num_layers, sizeof(gpu_lcache))))
    return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  size_t N = (size_t)c->N;
  fla_status s = FLA_OK;
  for (int l = 0; l < cfg->num_layers && s == FLA_OK; l++) {
    gpu_lcache *lc = &gc->L[l];
    const model_layer *L = &m->layers[l];
    size_t bytes[6] = {0};
    dptr *slot[6] = {&lc->state, &lc->conv[0], &lc->conv[1], &lc->conv[2], &lc->shift_attn, &lc->shift_ffn};
    if (L->is_attn) {
      lc->k = calloc(N, sizeof(dptr));
      lc->v = calloc(N, sizeof(dptr));
      lc->kv_len = calloc(N, sizeof(int64_t));
      lc->kv_cap = calloc(N, sizeof(int64_t));
      if (!lc->k || !lc->v || !lc->kv_len || !lc->kv_cap) s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
    } else {
      lc->state_size = (int64_t)L->H * L->K * L->V;
      bytes[0] = N * (size_t)lc->state_size * sizeof(float);
      if (cfg->use_short_conv && cfg->arch != ARCH_RWKV6)
        for (int j = 0; j < 3; j++) bytes[1 + j] = N * (size_t)L->conv[j].channels * (size_t)(cfg->conv_size - 1) * sizeof(float);
      if (cfg->arch == ARCH_RWKV6) bytes[4] = N * (size_t)cfg->hidden_size * sizeof(float);
    }
    if (cfg->arch == ARCH_RWKV6) bytes[5] = N * (size_t)cfg->hidden_size * sizeof(float);
    for (int j = 0; j < 6 && s == FLA_OK; j++)
      if (bytes[j]) {
        s = fla_cuda_mem_alloc(m->ctx, bytes[j], slot[j]);
        if (s == FLA_OK) s = fla_cuda_memset_d8(m->ctx, *slot[j], 0, bytes[j]);
      }
  }
  return s;
}

void gpu_cache_free(fla_cache *c) {
  gpu_cache *gc = c->gpu;
  if (!gc) return;
  fla_ctx *ctx = c->m->ctx;
  fla_cuda_sync(ctx, "cache free");
  for (int l = 0; gc->L && l < c->m->cfg.num_layers; l++) {
    gpu_lcache *lc = &gc->L[l];
    fla_cuda_mem_free(ctx, lc->state);
    for (int j = 0; j < 3; j++) fla_cuda_mem_free(ctx, lc->conv[j]);
    fla_cuda_mem_free(ctx, lc->shift_attn);
    fla_cuda_mem_free(ctx, lc->shift_ffn);
    for (int i = 0; lc->k && i < c->N; i++) fla_cuda_mem_free(ctx, lc->k[i]), fla_cuda_mem_free(ctx, lc->v[i]);
    free(lc->k), free(lc->v), free(lc->kv_len), free(lc->kv_cap);
  }
  if (c->m->gpu) graph_drop_(c->m->gpu); /* its buffers may be this cache's */
  free(gc->L);
  free(gc);
  c->gpu = NULL;
}

void gpu_cache_reset(fla_cache *c, int seq) {
  fla_model *m = c->m;
  int64_t D = m->cfg.hidden_size, W1 = m->cfg.conv_size - 1;
  for (int l = 0; l < m->cfg.num_layers; l++) {
    gpu_lcache *lc = &c->gpu->L[l];
    const model_layer *L = &m->layers[l];
    if (lc->state)
      fla_cuda_memset_d8(m->ctx, lc->state + (dptr)(seq * lc->state_size) * 4, 0, 4 * (size_t)lc->state_size);
    for (int j = 0; j < 3; j++)
      if (lc->conv[j])
        fla_cuda_memset_d8(m->ctx, lc->conv[j] + (dptr)(seq * L->conv[j].channels * W1) * 4, 0,
                           4 * (size_t)(L->conv[j].channels * W1));
    if (lc->shift_attn) fla_cuda_memset_d8(m->ctx, lc->shift_attn + (dptr)(seq * D) * 4, 0, 4 * (size_t)D);
    if (lc->shift_ffn) fla_cuda_memset_d8(m->ctx, lc->shift_ffn + (dptr)(seq * D) * 4, 0, 4 * (size_t)D);
    if (lc->kv_len) lc->kv_len[seq] = 0;
  }
}

/* ------------------------------------------------------------ forward */

static void block_norm_(fla_model *m, dptr x, int64_t rows, dptr w, dptr b, dptr y) {
  nn_gpu *g = &m->gpu->g;
  int D = m->cfg.hidden_size;
  if (m->cfg.arch == ARCH_RWKV6) gl_groupnorm(g, x, 0, rows, D, 1, w, b, (float)m->cfg.norm_eps, y);
  else gl_rmsnorm(g, x, 0, rows, D, w, (float)m->cfg.norm_eps, y);
}

int gpu_fast_decode(const fla_model *m, const model_layer *L, int64_t rows) {
  const model_config *c = &m->cfg;
  return rows == 1 && !L->is_attn && (c->arch == ARCH_GLA || c->arch == ARCH_RETNET) && !c->use_short_conv &&
         L->gpu->in_rows > 0;
}

/* out += down(silu(gate h) * up h), h = rmsnorm(x) (computed here: decode
** fuses the norm and SwiGLU into the gate/up product). */
static void mlp_(const gpu_call *c, dptr x, dptr h, dptr out) {
  nn_gpu *g = &c->m->gpu->g;
  const model_config *cfg = &c->m->cfg;
  int64_t rows = c->B * c->T;
  int D = cfg->hidden_size, I = c->L->ffn_dim;
  dptr gu = GF(g, rows * 2 * I);
  if (rows <= g->gemv_rows && c->W->mlp_fused) {
    /* the norm, gate and up rows together, SwiGLU in the epilogue: a = silu(gate h) * up h */
    dptr a = GF(g, rows * I);
    gl_gemv_opts n1 = {.nw = c->W->mlp_norm_w, .eps = (float)cfg->norm_eps, .xmode = 1};
    gl_gemv_swiglu(g, x, D, rows, D, c->W->mlp_gate, D, I, I, a, I, &n1);
    gl_linear_ex(g, a, I, rows, I, c->W->mlp_down, I, D, 0, out, D, 1);
    return;
  }
  dptr a = GF(g, rows * I);
  gl_rmsnorm(g, x, 0, rows, D, c->W->mlp_norm_w, (float)cfg->norm_eps, h);
  gl_linear_ex(g, h, D, rows, D, c->W->mlp_gate, D, I, 0, gu, 2 * I, 0);
  gl_linear_ex(g, h, D, rows, D, c->W->mlp_up, D, I, 0, gu + sizeof(float) * (size_t)I, 2 * I, 0);
  gl_swiglu(g, gu, gu + sizeof(float) * (size_t)I, 2 * I, rows, I, a);
  gl_linear_ex(g, a, I, rows, I, c->W->mlp_down, I, D, 0, out, D, 1);
}

static void token_mixer_(const gpu_call *c, dptr x, dptr out) {
  if (c->L->is_attn) {
    gpu_mixer_attention(c, x, out);
    return;
  }
  switch (c->m->cfg.arch) {
  case ARCH_GLA:
  case ARCH_RETNET:
  case ARCH_HGRN2: gpu_mixer_linear(c, x, out); break;
  case ARCH_GATED_DELTANET:
  case ARCH_DELTA_NET:
  case ARCH_KDA: gpu_mixer_delta(c, x, out); break;
  case ARCH_RWKV6: gpu_mixer_rwkv6(c, x, out); break;
  case ARCH_TRANSFORMER: break;
  }
}

/* The blocks and the head, from device ids to device logits ([B or B*T, vocab]). */
static dptr body_(fla_model *m, fla_cache *c, int slot0, int64_t B, int64_t T, dptr ids, dptr dpos,
                  const int64_t *pos, int last_only, int want_logits) {
  gpu_model *G = m->gpu;
  nn_gpu *g = &G->g;
  const model_config *cfg = &m->cfg;
  int D = cfg->hidden_size, Vb = cfg->vocab_size;
  int64_t rows = B * T;
  dptr x = GF(g, rows * D), h = GF(g, rows * D);
  gl_embed(g, ids, G->embeddings, x, rows, D);
  for (int l = 0; l < cfg->num_layers && g->status == FLA_OK; l++) {
    model_layer *L = &m->layers[l];
    gpu_call gc = {m, L, L->gpu, &c->gpu->L[l], slot0, B, T, pos, dpos, 0, 0};
    if (L->gpu->pre_norm_w)
      gl_groupnorm(g, x, 0, rows, D, 1, L->gpu->pre_norm_w, L->gpu->pre_norm_b, (float)cfg->norm_eps, x);
    if (gpu_fast_decode(m, L, rows)) {
      gc.xraw = x, gc.nw = L->gpu->attn_norm_w;
    } else {
      block_norm_(m, x, rows, L->gpu->attn_norm_w, L->gpu->attn_norm_b, h);
    }
    token_mixer_(&gc, h, x);
    gc.xraw = gc.nw = 0;
    if (cfg->arch == ARCH_RWKV6) {
      block_norm_(m, x, rows, L->gpu->mlp_norm_w, L->gpu->mlp_norm_b, h);
      gpu_mixer_rwkv6_ffn(&gc, h, x);
    } else {
      mlp_(&gc, x, h, x);
    }
  }
  if (!want_logits) return 0;
  int64_t n = rows;
  if (last_only && T > 1) { /* each sequence's last token only */
    for (int64_t b = 0; b < B; b++)
      gl_copy(g, x + sizeof(float) * (size_t)(((b + 1) * T - 1) * D), h + sizeof(float) * (size_t)(b * D), D);
    gl_copy(g, h, x, B * D);
    n = B;
  }
  dptr lg = GF(g, n * Vb);
  if (n <= g->gemv_rows && cfg->arch != ARCH_RWKV6) { /* the final RMSNorm inside the head's product */
    gl_gemv_opts op = {.nw = G->final_norm_w, .eps = (float)cfg->norm_eps, .xmode = 1};
    gl_gemv(g, x, D, n, D, G->lm_head, D, Vb, 0, lg, Vb, 0, &op);
  } else {
    block_norm_(m, x, n, G->final_norm_w, G->final_norm_b, h);
    gl_linear(g, h, n, D, G->lm_head, Vb, 0, lg);
  }
  return lg;
}

/* Captures one decode step of B sequences into a graph (after a normal step
** sized the scratch and bound the ops). 0 when graphs are not available. */
static int graph_capture_(fla_model *m, fla_cache *c, int64_t B, const int64_t *pos) {
  gpu_model *G = m->gpu;
  nn_gpu *g = &G->g;
  graph_api a;
  if (!graph_api_(&a)) return 0;
  graph_drop_(G);
  CUstream st = (CUstream)g->stream;
  nn_gpu_reset(g);
  /* the graph's buffers come first in the arena, at fixed addresses */
  G->graph_ids = nn_gpu_tmp(g, sizeof(int32_t) * (size_t)B);
  G->graph_pos = nn_gpu_tmp(g, sizeof(int64_t) * (size_t)B);
  if (g->status != FLA_OK || g->nspill) return 0; /* the arena must hold the whole step */
  fla_cuda_set_defer_sync(m->ctx, 1);
  void *graph = NULL;
  if (a.begin(st, 2 /* relaxed */) != CUDA_SUCCESS) {
    fla_cuda_set_defer_sync(m->ctx, 0);
    return 0;
  }
  G->graph_logits = body_(m, c, 0, B, 1, G->graph_ids, G->graph_pos, pos, 0, 1);
  CUresult r = a.end(st, &graph);
  fla_cuda_set_defer_sync(m->ctx, 0);
  if (r != CUDA_SUCCESS || g->status != FLA_OK || g->nspill || !graph) {
    if (graph) a.destroy(graph);
    g->status = FLA_OK;
    fla_clear_error(m->ctx);
    return 0;
  }
  r = a.instantiate(&G->graph_exec, graph, 0);
  a.destroy(graph);
  if (r != CUDA_SUCCESS) {
    G->graph_exec = NULL;
    return 0;
  }
  G->graph_B = (int)B;
  G->graph_cache = c;
  return 1;
}

fla_status gpu_model_run(fla_model *m, fla_cache *c, int slot0, int64_t B, int64_t T,
                         const int32_t *ids, float *logits, int last_only) {
  gpu_model *G = m->gpu;
  nn_gpu *g = &G->g;
  if (!c->gpu) return fla_set_error(m->ctx, FLA_INVALID, "the cache was not made for this model's device");
  g->status = FLA_OK;
  fla_status s = fla_cuda_sync(m->ctx, "model forward"); /* also makes the context current */
  if (s != FLA_OK) return s;
  int Vb = m->cfg.vocab_size;
  int64_t rows = B * T, nl = last_only ? B : rows;
  int64_t *pos = malloc(sizeof(int64_t) * (size_t)B);
  if (!pos) return fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
  for (int64_t b = 0; b < B; b++) pos[b] = c->pos[slot0 + b];
  int has_attn = 0;
  for (int l = 0; l < m->cfg.num_layers; l++) has_attn |= m->layers[l].is_attn;
  int graphable = G->use_graphs && !G->graph_off && T == 1 && slot0 == 0 && !has_attn;
  if (!graphable || G->graph_B != B || G->graph_cache != c) graph_drop_(G);
  if (graphable && G->graph_exec && logits) {
    graph_api a;
    graph_api_(&a);
    gl_upload(g, G->graph_ids, ids, sizeof(int32_t) * (size_t)B);
    gl_upload(g, G->graph_pos, pos, sizeof(int64_t) * (size_t)B);
    if (g->status == FLA_OK) {
      CUresult r = a.launch(G->graph_exec, (CUstream)g->stream);
      if (r != CUDA_SUCCESS) gl_fail(g, FLA_ERROR, "cuGraphLaunch: %s", fla_cuda_result_str(r));
    }
    gl_download(g, logits, G->graph_logits, sizeof(float) * (size_t)(B * Vb));
  } else {
    graph_drop_(G); /* its buffers are in the arena this step reuses */
    nn_gpu_reset(g);
    dptr dids = nn_gpu_tmp(g, sizeof(int32_t) * (size_t)rows), dpos = nn_gpu_tmp(g, sizeof(int64_t) * (size_t)B);
    gl_upload(g, dids, ids, sizeof(int32_t) * (size_t)rows);
    gl_upload(g, dpos, pos, sizeof(int64_t) * (size_t)B);
    dptr lg = body_(m, c, slot0, B, T, dids, dpos, pos, last_only, logits != NULL);
    if (logits) gl_download(g, logits, lg, sizeof(float) * (size_t)(nl * Vb));
    else gl_sync(g, "the model's kernels");
    /* the next step of this batch size replays a graph */
    if (g->status == FLA_OK && graphable && logits && !G->graph_exec && !graph_capture_(m, c, B, pos))
      G->graph_off = 1;
  }
  free(pos);
  s = gl_take_status(g);
  if (s != FLA_OK) return s;
  for (int64_t b = 0; b < B; b++) c->pos[slot0 + b] += T;
  return FLA_OK;
}

void gpu_model_free(fla_model *m) {
  gpu_model *G = m->gpu;
  if (!G) return;
  if (G->g.ctx) {
    graph_drop_(G);
    fla_cuda_sync(m->ctx, "model free");
    for (int l = 0; m->layers && l < m->cfg.num_layers; l++) { /* ops before the scratch they use */
      fla_op_free(m->layers[l].op);
      m->layers[l].op = NULL;
      m->layers[l].gpu = NULL;
    }
    for (int i = 0; i < G->nblocks; i++) fla_cuda_mem_free(m->ctx, G->blocks[i]);
    nn_gpu_free(&G->g);
  }
  free(G->blocks);
  free(G->layers);
  free(G->reg);
  free(G);
  m->gpu = NULL;
}
