/*
** model_internal.h -- the structs shared by the files of the model layer:
** the parsed config.json, the weights of each layer, the model, its cache.
**
** Files: config.c (config.json), weights.c (safetensors, sharded, mapped),
** model.c (load and the forward over layers), mixer_*.c (token mixers),
** cache.c (per-sequence state), generate.c (sampling and the loop), nn.h (math).
*/
#ifndef FLA_MODELS_INTERNAL_H
#define FLA_MODELS_INTERNAL_H

#include "fla.h"
#include "nn.h"

#include <stdint.h>

#define MODEL_MAX_LAYERS 1024

typedef enum {
  ARCH_GLA, ARCH_GATED_DELTANET, ARCH_RETNET, ARCH_DELTA_NET, ARCH_KDA, ARCH_HGRN2,
  ARCH_RWKV6, ARCH_TRANSFORMER
} model_arch;

/* A layer's softmax attention (a Transformer's, or fla's hybrid `attn`). */
typedef struct {
  int num_heads, num_kv_heads, qkv_bias;
  int64_t window;            /* 0: full causal */
  double rope_theta;
} attn_spec;

/* config.json, with fla's defaults for absent fields. */
typedef struct {
  model_arch arch;
  char model_type[32];
  int vocab_size, hidden_size, num_layers, num_heads, num_kv_heads;
  int intermediate_size;     /* the MLP width, after fla's rounding */
  double hidden_ratio, norm_eps;
  double initializer_range;  /* std of the normal init (fla_model_create) */
  int eos_token_id, tie_word_embeddings;
  /* token-mixer options (the ones of the architecture) */
  double expand_k, expand_v;
  int head_dim, use_short_conv, conv_size, use_output_gate, use_gate, use_beta;
  int allow_neg_eigval, fuse_norm, expand_ratio, use_lower_bound;
  double clamp_min;          /* GLA's gate floor; NAN when none */
  int proj_low_rank_dim, gate_low_rank_dim, norm_bias, norm_first; /* RWKV-6 */
  int has_attn[MODEL_MAX_LAYERS];
  attn_spec attn[MODEL_MAX_LAYERS];
} model_config;

/* Parses dir/config.json. Errors name the file and the field. */
fla_status model_config_load(fla_ctx *ctx, const char *path, model_config *cfg);

/* ------------------------------------------------------------ weights */

typedef struct weight_store weight_store;

/* Opens dir/model.safetensors, or the shards of dir/model.safetensors.index.json. */
fla_status weights_open(fla_ctx *ctx, const char *dir, weight_store **out);
void weights_free(weight_store *ws);
/* The float32 data of tensor `name`, which must have exactly the given shape
** (ndim entries). Marks it used. FLA_FORMAT names a missing or mis-shaped one. */
fla_status weights_get(weight_store *ws, const char *name, int ndim, const int64_t *shape,
                       const float **out);
int weights_has(const weight_store *ws, const char *name);
/* FLA_FORMAT naming the first tensor of the files no weights_get asked for. */
fla_status weights_check_all_used(weight_store *ws);
/* A store without files: weights_get draws every tensor from seed (norm
** weights 1, the rest uniform in +-0.03), weights_has is 0 for every name.
** For benchmarks of a configuration (fla-generate --random-weights). */
fla_status weights_open_random(fla_ctx *ctx, uint64_t seed, weight_store **out);
/* 1 when some tensor weights_get returned was stored as bf16 or f16. */
int weights_half(const weight_store *ws);

/* ------------------------------------------------------------ layers */

typedef struct { const float *w, *b; int channels; } conv_weights; /* w [C, 1, W] */

/* One block. Pointers are NULL where the architecture has no such tensor;
** names in comments are fla's (under model.layers.N.). */
typedef struct {
  int index, is_attn;
  const float *attn_norm_w, *attn_norm_b, *mlp_norm_w, *mlp_norm_b;
  const float *pre_norm_w, *pre_norm_b;     /* RWKV-6 layer 0 */
  /* dims of the token mixer: heads, per-head key and value sizes */
  int H, Hkv, K, V;
  /* projections shared by most mixers: attn.{q,k,v,o,g}_proj */
  const float *q_proj, *k_proj, *v_proj, *o_proj, *g_proj, *qkv_bias[3];
  conv_weights conv[3];                     /* attn.{q,k,v}_conv1d (HGRN2: q, f, i) */
  const float *gk_proj0, *gk_proj1, *gk_proj1_b;    /* GLA low-rank gate */
  const float *a_proj, *b_proj, *A_log, *dt_bias;   /* GDN / KDA / DeltaNet */
  const float *f_proj0, *f_proj1, *g_proj0, *g_proj1, *g_proj1_b; /* KDA */
  const float *f_proj, *i_proj;             /* HGRN2 */
  const float *out_norm;                    /* g_norm_swish_gate, g_norm or o_norm */
  const float *out_norm_b;                  /* RWKV-6 g_norm bias */
  const float *lower_bound;                 /* HGRN2: this layer's bound [D], or NULL */
  /* RWKV-6 */
  const float *x_mu, *x_proj0, *x_proj2, *x_bias, *w_lora0, *w_lora2, *w_lora2_b, *bonus;
  const float *ffn_key, *ffn_key_mu, *ffn_value, *ffn_rec, *ffn_rec_mu;
  int low_rank, ffn_dim;
  /* MLP: mlp.{gate,up,down}_proj */
  const float *mlp_gate, *mlp_up, *mlp_down;
  attn_spec attn;
  /* the recipe op, bound for the last (B, T) it ran */
  fla_recipe *recipe;
  fla_op *op;
  int64_t op_B, op_T;
  struct gpu_layer *gpu;     /* the device copies of the weights (model_gpu.c) */
} model_layer;

/* A stack of float blocks kept between backward calls (grad_ops.c). */
typedef struct {
  float *p[32];
  int64_t cap[32], used[32];
  int n, top;
} model_arena;

/* A tensor the config implies, as the loader asked for it: fla's name, shape,
** and the field of the model or layer that points at its data. */
typedef struct {
  char name[128];
  int ndim;
  int64_t shape[4], numel;
  const float **slot;
} model_param;

struct fla_model {
  fla_ctx *ctx;
  model_config cfg;
  weight_store *weights;      /* NULL once trainable (or made by fla_model_create) */
  const float *embeddings, *final_norm_w, *final_norm_b, *lm_head;
  const float *lower_bounds_raw; /* HGRN2: the parameter [L, D] */
  float *lower_bounds;        /* HGRN2: [L, D] after softmax and cumsum */
  model_layer *layers;
  model_param *params;        /* every tensor, in load order (a tied lm_head is not one) */
  int num_params, cap_params;
  char *config_json;          /* the config.json text */
  int tied_head;              /* lm_head is the embeddings (tie_word_embeddings) */
  /* trainable: one block of 2 * master_numel floats, the weights then their
  ** gradients, so a weight at p has its gradient at p + master_numel */
  float *master;
  int64_t master_numel;
  float *dlower_bounds;       /* HGRN2 backward: d loss / d lower_bounds [L, D] */
  model_arena arena;          /* the backward's scratch (grad_ops.c) */
  int recompute;              /* fla_model_set_recompute */
  struct gpu_model *gpu;      /* non-NULL on a CUDA context (model_gpu.c) */
  struct gpu_train *gtrain;   /* non-NULL when trainable on a CUDA context (train_gpu.c) */
};

/* The gradient of the weight whose data starts at p (a trainable model's). */
static inline float *model_grad(const fla_model *m, const float *p) {
  return p ? (float *)p + m->master_numel : NULL;
}

/* Loading (model.c). model_register_param records a tensor of the config;
** model_build looks up (or, with no weight files, only registers) every tensor;
** model_finish_weights ties the head and computes HGRN2's floors once every
** tensor has its data. model_read_text: a whole file, NUL-terminated, malloc'd. */
fla_status model_register_param(fla_model *m, const char *name, int ndim, const int64_t *shape,
                                const float **slot);
fla_status model_build(fla_model *m);
void model_finish_weights(fla_model *m);
fla_status model_read_text(fla_ctx *ctx, const char *path, char **out);

/* HGRN2: recomputes m->lower_bounds from lower_bounds_raw (after an update). */
void model_hgrn2_lower_bounds(fla_model *m);

/* ------------------------------------------------------------ cache */

typedef struct {
  float *state;       /* [N, H, Ks, V] recurrent state */
  int64_t state_size; /* per sequence */
  float *conv[3];     /* [N, C, W-1] past inputs of each convolution */
  float *shift_attn, *shift_ffn; /* [N, D] RWKV-6: last inputs */
  float **k, **v;     /* per sequence [cap, Hkv*D] keys (rotated) and values */
  int64_t *kv_len, *kv_cap, *kv_start; /* rows held, capacity, position of row 0 */
} layer_cache;

struct fla_cache {
  fla_model *m;
  int N;
  int64_t *pos;       /* tokens consumed per sequence */
  layer_cache *layers;
  struct gpu_cache *gpu; /* the device state, for a model on a CUDA context */
};

/* Runs B sequences (cache slots slot0..slot0+B-1) over T new tokens each:
** logits [B, T, vocab] (NULL: not computed; last_only: only [B, vocab] of the
** last token). The chunked algorithm for T > 1, the recurrent step for T == 1. */
fla_status model_run(fla_model *m, fla_cache *c, int slot0, int64_t B, int64_t T,
                     const int32_t *ids, float *logits, int last_only);

/* The token mixers: x [B*T, D] normalised input -> out [B*T, D]. */
typedef struct {
  fla_model *m;
  model_layer *L;
  layer_cache *lc;
  int slot0;
  int64_t B, T;
  const int64_t *pos; /* [B] tokens each sequence had consumed before this call */
} mixer_call;

fla_status mixer_linear(const mixer_call *mc, const float *x, float *out);    /* GLA, RetNet, HGRN2 */
fla_status mixer_delta(const mixer_call *mc, const float *x, float *out);     /* DeltaNet, GDN, KDA */
fla_status mixer_rwkv6(const mixer_call *mc, const float *x, float *out);
fla_status mixer_rwkv6_ffn(const mixer_call *mc, const float *x, float *out);
fla_status mixer_attention(const mixer_call *mc, const float *x, float *out);

/* Runs the layer's recipe op on B x T with named inputs ([B, T, H, *] or [H, K]
** for RWKV-6's bonus), continuing and updating the cache's state. */
typedef struct { const char *name; float *data; int ndim; int64_t shape[4]; } op_input;
fla_status mixer_run_op(const mixer_call *mc, const op_input *in, int n, double scale,
                        float *o);

/* Short convolutions of projection j (0..2) with their cache; act per fla. */
void mixer_conv(const mixer_call *mc, int j, const float *x, int C, nn_act act, float *y);

/* The block's pieces, as model_run runs them (model.c). */
void model_block_norm(const fla_model *m, const float *x, int64_t rows, const float *w,
                      const float *b, float *y);
fla_status model_token_mixer(const mixer_call *mc, const float *x, float *out);
fla_status model_mlp(const mixer_call *mc, const float *x, float *out);

/* Binds the layer's op for (mc->B, mc->T) unless it already is (mixer_common.c). */
fla_status mixer_bind_op(const mixer_call *mc, double scale);

/* ------------------------------------------------------------ GPU (model_gpu.c) */

/* Remembers that host weight p (numel floats) belongs to the model, so that
** gpu_model_upload finds its size. Called for every tensor the loader gets. */
fla_status gpu_register_weight(fla_model *m, const float *p, int64_t numel);
/* Uploads every weight to the device of the model's CUDA context as dtype
** (FLA_F32 or FLA_BF16 for the matrices; vectors stay float32) and prepares
** the kernels and cuBLAS. */
fla_status gpu_model_upload(fla_model *m, fla_dtype dtype);
void gpu_model_free(fla_model *m);
/* Frees the device training state (train_gpu.c); NULL state allowed. */
void gpu_train_free(fla_model *m);
/* model_run on the device (same contract); the caches' device state. */
fla_status gpu_model_run(fla_model *m, fla_cache *c, int slot0, int64_t B, int64_t T,
                         const int32_t *ids, float *logits, int last_only);
fla_status gpu_cache_new(fla_cache *c);
void gpu_cache_free(fla_cache *c);
void gpu_cache_reset(fla_cache *c, int seq);

/* malloc of n floats that reports FLA_NOMEM: NULL on failure. */
float *model_alloc(fla_ctx *ctx, int64_t n);

#endif
