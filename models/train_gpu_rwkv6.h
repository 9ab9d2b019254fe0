/*
** train_gpu_rwkv6.h -- training of RWKV-6 on a CUDA context: the device state
** of train_gpu.h, the products and column sums of train_gpu_delta.h (td_run),
** and the layer glue of templates/cuda/train_rwkv6.cuh.
**
** train_gpu_rwkv6.c: one block's forward and backward (the time mix with its
** LoRA lerps, decay and bonus, the gated per-head GroupNorm; the channel mix;
** the LayerNorms with bias).
** train_gpu_rwkv6_loss.c: fla_model_loss_backward over the blocks (layer 0's
** pre-norm, the final LayerNorm, the LM head and cross-entropy of gpu_train_head).
*/
#ifndef FLA_MODELS_TRAIN_GPU_RWKV6_H
#define FLA_MODELS_TRAIN_GPU_RWKV6_H

#include "train_gpu_delta.h"

/* The kernels of train_rwkv6.cuh, in its order. */
enum {
  RW_SHIFT, RW_SHIFT_BWD, RW_LERP, RW_LERP_BWD, RW_TANH, RW_TANH_BWD, RW_DECAY, RW_DECAY_BWD, RW_ACC,
  RW_LN_FWD, RW_LN_BWD, RW_SQRELU, RW_SQRELU_BWD, RW_SIGMUL, RW_SIGMUL_BWD, RW_COUNT
};

/* One loss_backward call: td_run's dims (I: the channel mix's width) and R
** (proj_low_rank_dim), G (gate_low_rank_dim). */
typedef struct {
  td_run td;
  int R, G;
  void *fn[RW_COUNT]; /* CUfunction */
} rw_run;

/* What one block keeps between its forward and its backward: x (its input)
** and xm (after the time mix), float32; the time mix's th = tanh(x_proj0 xx)
** [rows, 5 R], the five mixes m_n = W2_n th_n [5, rows, D] (without x_bias),
** ta = tanh(w_lora0 xn_w) [rows, G], wl = w_lora2 ta + b [rows, H K] (float32);
** r, k, v, w (the recipe's inputs), graw, o (compute); the channel mix's
** kr = Wk xk [rows, F], vv, rr [rows, D] (float32). */
typedef struct {
  dptr x, xm, th, mix, ta, wl;
  dptr r, k, v, w, graw, o;
  dptr kr, vv, rr;
} rw_kept;

/* fla_model_loss_backward for RWKV-6 (train_gpu_loss_backward's contract). */
fla_status gpu_train_rwkv6_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                                         int64_t T, float grad_scale, double *loss_sum, int64_t *count);

/* The kernels into r->fn (compiled once per context). */
fla_status rw_kernels(rw_run *r);

/* LayerNorm (or per-head GroupNorm, nh groups per row of nh dim) with weight
** w and bias b (host weight pointers), y = (xh w + b) (* silu(g)); its
** backward: dx (+= when dx_add, float32), dg, and the weight and bias
** gradients (column sums of per-element terms: groups must be r's rows x nh). */
void rw_ln_fwd(rw_run *r, dptr x, int x_bf, dptr g, const float *w, const float *b, dptr y, int y_bf,
               int64_t groups, int nh, int dim);
void rw_ln_bwd(rw_run *r, dptr x, int x_bf, dptr g, const float *w, const float *b, dptr dy, int dy_bf, dptr dx,
               int dx_bf, int dx_add, dptr dg, int64_t groups, int nh, int dim);

/* One block: buffers, its forward from kp->x into xout, its backward with dx
** the gradient of xout in, of kp->x out. */
void rw_kept_alloc(rw_run *r, rw_kept *kp, dptr x);
void rw_layer_fwd(rw_run *r, const model_layer *L, rw_kept *kp, dptr xout);
void rw_layer_bwd(rw_run *r, const model_layer *L, rw_kept *kp, dptr dx);

#endif
