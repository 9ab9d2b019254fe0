/*
** model_gpu.h -- the model layer on a CUDA context: the device copies of the
** weights, the device caches, and the token mixers over device pointers.
** model_gpu.c uploads and runs the blocks; mixer_gpu.c holds the mixers
** (the same math as mixer_*.c, whose comments give the formulas).
*/
#ifndef FLA_MODELS_MODEL_GPU_H
#define FLA_MODELS_MODEL_GPU_H

#include "model_internal.h"
#include "nn_gpu.h"

/* The weight matrices of a layer, in the order they are laid out in one
** device block: the projections that read the normalised input x come first
** and next to each other, so a decode step multiplies them in one pass. */
#define GPU_MATS(X)                                                                          \
  X(q_proj) X(k_proj) X(v_proj) X(g_proj) X(gk_proj0) X(a_proj) X(b_proj) X(f_proj0)        \
  X(g_proj0) X(f_proj) X(i_proj) X(o_proj) X(gk_proj1) X(f_proj1) X(g_proj1) X(x_proj0)     \
  X(x_proj2) X(w_lora0) X(w_lora2) X(ffn_key) X(ffn_value) X(ffn_rec) X(mlp_gate) X(mlp_up) \
  X(mlp_down)
/* Vectors, float32 whatever the weights' dtype. */
#define GPU_VECS(X)                                                                          \
  X(attn_norm_w) X(attn_norm_b) X(mlp_norm_w) X(mlp_norm_b) X(pre_norm_w) X(pre_norm_b)     \
  X(gk_proj1_b) X(A_log) X(dt_bias) X(g_proj1_b) X(out_norm) X(out_norm_b) X(lower_bound)   \
  X(x_mu) X(x_bias) X(w_lora2_b) X(ffn_key_mu) X(ffn_rec_mu)

#define GPU_FIELD_(n) dptr n;
typedef struct gpu_layer {
  GPU_MATS(GPU_FIELD_)
  GPU_VECS(GPU_FIELD_)
  dptr qkv_bias[3], conv_w[3], conv_b[3];
  dptr bonus;              /* RWKV-6's u, in the token mixer's dtype */
  int64_t in_rows;         /* rows of q_proj .. i_proj laid out contiguously (0: not) */
  int mlp_fused;           /* mlp_up follows mlp_gate */
  int chunkable;           /* the mixer's bf16 chunked stage: > 0 yes (2: chunk_gk_fwd), -1 no, 0 not asked */
} gpu_layer;
#undef GPU_FIELD_

typedef struct { const float *p; int64_t n; } gpu_reg;

/* With bf16 weights the token mixers run in float32 (the token-by-token
** kernel) at every length, so bf16 logits stay within 1e-2 of fla's; with
** FLA_GPU_BF16_MIXERS=1 steps longer than this many tokens give the chunked
** tensor-core kernels bf16 inputs instead, where a chunked stage handles the
** op (faster prefill, about 1.1e-2 on the tiny checkpoints). */
#define GPU_F32_MIXER_MAX_T 64

typedef struct gpu_model {
  nn_gpu g;
  fla_dtype adt;           /* the token mixers' input dtype: float32 (bf16 with FLA_GPU_BF16_ACTIVATIONS=1),
                              with FLA_GPU_BF16_MIXERS=1, bf16 for chunked prompts over
                              GPU_F32_MIXER_MAX_T tokens with bf16 weights */
  int bf16_long_mixers;    /* FLA_GPU_BF16_MIXERS=1: bf16 chunked mixers for long prompts */
  gpu_reg *reg;            /* host weights the loader handed out */
  int nreg, capreg;
  dptr *blocks;            /* device allocations of the weights */
  int nblocks, capblocks;
  dptr embeddings, final_norm_w, final_norm_b, lm_head; /* embeddings float32 */
  gpu_layer *layers;
  /* CUDA graph of a decode step (model_gpu.c): one per batch size kept */
  void *graph_exec;
  const void *graph_cache; /* the cache whose state buffers the graph uses */
  int graph_B;
  int64_t graph_T;
  dptr graph_ids, graph_pos, graph_logits;
  int use_graphs, graph_off; /* FLA_CUDA_GRAPHS=0 turns graphs off */
} gpu_model;

typedef struct {
  dptr state;              /* [N, H, K, V] f32 */
  int64_t state_size;
  dptr conv[3];            /* [N, C, W-1] */
  dptr shift_attn, shift_ffn; /* [N, D] */
  dptr *k, *v;             /* per sequence [cap, Hkv*d] */
  int64_t *kv_len, *kv_cap;
} gpu_lcache;

typedef struct gpu_cache {
  gpu_lcache *L;
} gpu_cache;

/* One token mixer call on the device (mixer_call's fields, device side). */
typedef struct {
  fla_model *m;
  model_layer *L;
  gpu_layer *W;
  gpu_lcache *lc;
  int slot0;
  int64_t B, T;
  const int64_t *pos;      /* host [B] */
  dptr dpos;               /* device int64 [B] */
  dptr xraw, nw;           /* set when gpu_fast_decode: the block's input before its
                              RMSNorm (weight nw), which the first product fuses */
} gpu_call;

/* 1 when layer L's token mixer takes the un-normalised input (xraw) for rows
** tokens: GLA and RetNet layers decoding one token, their x-projections laid
** out next to each other, no short convolution. */
int gpu_fast_decode(const fla_model *m, const model_layer *L, int64_t rows);

/* x [B*T, D] normalised input; out += the mixer's output. */
void gpu_mixer_linear(const gpu_call *c, dptr x, dptr out);
void gpu_mixer_delta(const gpu_call *c, dptr x, dptr out);
void gpu_mixer_rwkv6(const gpu_call *c, dptr x, dptr out);
void gpu_mixer_rwkv6_ffn(const gpu_call *c, dptr x, dptr out);
void gpu_mixer_attention(const gpu_call *c, dptr x, dptr out);

/* The layer's recipe op on device inputs (float32 [B, T, H, *], cast to the
** model's dtype here): continues and updates the cache's state. Returns the
** output [B, T, H, V] (in g->adt; *o_bf16 says which), 0 on failure. */
typedef struct {
  const char *name;
  dptr data;
  int ndim;
  int64_t shape[4];
  int is_param;  /* a weight in gpu_model.adt (RWKV-6's bonus) */
  dptr bf;       /* a bf16 copy made already (0: cast here when the op is bf16) */
} gpu_input;
dptr gpu_run_op(const gpu_call *c, const gpu_input *in, int n, double scale, int *o_bf16);

#endif
