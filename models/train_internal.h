/*
** train_internal.h -- the backward of the model layer (training).
**
** train_backward.c runs fla_model_loss_backward: a forward that keeps the
** residual stream at each layer's input and middle and (unless the model
** recomputes) each layer's activations, the fused LM head and cross-entropy
** (grad_math.h), then each layer's backward, from the kept activations or
** from a forward recomputed out of the kept input. The token mixers' backward
** (grad_mixer_*.c) differentiates the mixer, the recipe core through
** fla_op_backward.
**
** A mixer backward: x [rows, D] is the mixer's (normalised) input, dout
** [rows, D] the gradient of its output; dx [rows, D] receives the gradient of
** x (overwritten) and every weight's gradient (model_grad) is accumulated.
** Sequences start from a zero state (no cache).
*/
#ifndef FLA_MODELS_TRAIN_INTERNAL_H
#define FLA_MODELS_TRAIN_INTERNAL_H

#include "grad_math.h"
#include "model_internal.h"

/* Forward and backward in one call (GRAD_BOTH), or split: GRAD_FWD runs the
** forward, writes the mixer's output into gp->out and keeps its activations
** (gp->kept, in gp->sc's scratch, left allocated); GRAD_BWD later runs the
** backward from them and frees that scratch. A mixer that cannot split
** answers FLA_UNSUPPORTED (no error message) to GRAD_FWD. */
typedef enum { GRAD_BOTH, GRAD_FWD, GRAD_BWD } grad_phase;
typedef struct grad_pass grad_pass;

fla_status grad_mixer_linear(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp);
fla_status grad_mixer_delta(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp);
fla_status grad_mixer_attention(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp);
fla_status grad_mixer_rwkv6(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp);
fla_status grad_rwkv6_ffn(const mixer_call *mc, const float *x, const float *dout, float *dx, grad_pass *gp);

/* The layer's recipe op from a zero state: o = op(in), then d[i] = the
** gradient of sum(o * d_o) with respect to in[i] (d[i] NULL: not wanted). */
fla_status grad_op_forward(const mixer_call *mc, const op_input *in, int n, double scale, float *o);
fla_status grad_op_backward(const mixer_call *mc, const op_input *in, int n, double scale,
                            const float *d_o, float *const *d);

/* OpenBLAS's thread count (see grad_ops.c). */
void grad_blas_threads(int n);

/* Sum over the g = H / Hkv consecutive query heads that share a KV head:
** dx [rows, H*d] -> dy [rows, Hkv*d] (the backward of the repeat). */
void grad_unrepeat_heads(const float *dx, int64_t rows, int Hkv, int H, int d, float *dy);

/* One projection j (0..2) of x through the layer's optional short
** convolution j, then act: a = W x, pre = conv(a) (or a), c = act(pre).
** The backward takes dc, fills da, adds W^T da to dx and accumulates the
** gradients of W and the convolution. */
typedef struct {
  const float *W;
  int C;
  float *a, *pre, *c, *dc, *da;
} grad_proj;

/* Scratch buffers of a backward come from the model's arena, a stack of
** blocks kept between calls (no page faults, no zeroing per step): a scratch
** marks the top when it begins and gives back everything above on free.
** Scratches nest like calls. grad_alloc's memory is NOT zeroed. */
typedef struct {
  fla_model *m;
  int top;
  int64_t used;
} grad_scratch;
grad_scratch grad_scratch_begin(fla_model *m);
float *grad_alloc(grad_scratch *s, int64_t n); /* NULL (FLA_NOMEM set) on failure */
void grad_scratch_free(grad_scratch *s);

struct grad_pass {
  grad_phase phase;
  float *out;       /* GRAD_FWD: [rows, D] */
  void *kept;
  grad_scratch sc;
};

/* a, pre, c (what the forward keeps); then dc, da (the backward's) */
fla_status grad_proj_alloc(grad_scratch *sc, grad_proj *p, const float *W, int C, int64_t rows);
fla_status grad_proj_alloc_grad(grad_scratch *sc, grad_proj *p, int64_t rows);
void grad_proj_forward(const mixer_call *mc, int j, grad_proj *p, const float *x, nn_act act);
void grad_proj_backward(const mixer_call *mc, int j, grad_proj *p, const float *x, nn_act act, float *dx);

#endif
