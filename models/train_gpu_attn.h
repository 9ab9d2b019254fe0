/*
** train_gpu_attn.h -- causal softmax attention for training on a CUDA context:
** the forward keeps each row's log-sum-exp, the backward gives dq, dk, dv
** (templates/cuda/train_attn.cuh has the math; grad_math's gm_attention and
** gm_attention_bwd are the CPU's). Device pointers; the work is queued on the
** context's stream (nothing is waited for).
*/
#ifndef FLA_MODELS_TRAIN_GPU_ATTN_H
#define FLA_MODELS_TRAIN_GPU_ATTN_H

#include "fla.h"

#include <stdint.h>

/* B sequences of T tokens from position 0; Hq query heads over Hkv key/value
** heads (Hq a multiple of Hkv), head dim d (1..256), window 0 (all keys) or
** the sliding window; bf: q, k, v, o, dO, dq, dk, dv are bf16, else float32. */
typedef struct {
  int bf;
  int64_t B, T;
  int Hq, Hkv, d;
  int64_t window;
} gpu_attn_shape;

/* o [B*T, Hq*d] and lse [B*T, Hq] (float32) from q [B*T, Hq*d], k, v
** [B*T, Hkv*d]. FLA_INVALID naming the bad size; FLA_ERROR from the device. */
fla_status gpu_attn_fwd(fla_ctx *ctx, const gpu_attn_shape *s, uint64_t q, uint64_t k, uint64_t v, uint64_t o,
                        uint64_t lse);

/* dq, dk, dv (overwritten) from dO and the forward's q, k, v, o, lse;
** Dr [B*T, Hq] float32 is scratch (dO . o per row). Errors as gpu_attn_fwd. */
fla_status gpu_attn_bwd(fla_ctx *ctx, const gpu_attn_shape *s, uint64_t q, uint64_t k, uint64_t v, uint64_t o,
                        uint64_t lse, uint64_t dO, uint64_t Dr, uint64_t dq, uint64_t dk, uint64_t dv);

#endif
