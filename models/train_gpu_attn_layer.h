/*
** train_gpu_attn_layer.h -- the softmax-attention token mixer of a layer
** (a Transformer's, or fla's hybrid `attn` layers) in GPU training:
**   q, k, v = h Wq^T, h Wk^T, h Wv^T;  rotary on q and k (from position 0);
**   o = attention(q, k, v) (causal, window, GQA: train_gpu_attn.h);
**   xm (+)= o Wo^T
** and its backward (grad_mixer_attention.c is the CPU's). h is the layer's
** normed input in the compute dtype; the caller owns the norm, the residual
** and the MLP. No projection biases (qkv_bias: gpu_train_check refuses it).
*/
#ifndef FLA_MODELS_TRAIN_GPU_ATTN_LAYER_H
#define FLA_MODELS_TRAIN_GPU_ATTN_LAYER_H

#include "train_gpu.h"

/* Kept between the forward and the backward: q, k (rotated), v, o in the
** compute dtype; lse float32 [rows, Hq]. */
typedef struct {
  dptr q, k, v, o, lse;
} gta_kept;

/* kp's buffers for rows = B*T rows from m->gtrain's activation stack. */
void gta_kept_alloc(fla_model *m, const model_layer *L, int64_t rows, gta_kept *kp);

/* Fills kp from h [rows, D]; xm [rows, D] float32 = xm_beta xm + o Wo^T. */
void gta_fwd(fla_model *m, const model_layer *L, int64_t B, int64_t T, dptr h, gta_kept *kp, dptr xm, float xm_beta);

/* dxm [rows, D] (compute dtype): the gradient of xm. Adds dWq, dWk, dWv, dWo
** to the device gradients; dh [rows, D] float32 = (dh_beta 0) or += (1) the
** gradient of h. */
void gta_bwd(fla_model *m, const model_layer *L, int64_t B, int64_t T, dptr h, const gta_kept *kp, dptr dxm, dptr dh,
             float dh_beta);

#endif
