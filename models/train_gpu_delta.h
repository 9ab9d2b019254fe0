/*
** train_gpu_delta.h -- training of DeltaNet, Gated DeltaNet, KDA and HGRN2 on a
** CUDA context (the device state and kernels of train_gpu.h, the layer glue
** of templates/cuda/train_delta.cuh).
**
** train_gpu_delta.c: a DeltaNet / Gated DeltaNet / KDA block's forward and
** backward (short convolutions, L2 norms, beta, the gate, the recipe op, the
** gated output norm), the MLP's, and what the blocks share.
** train_gpu_hgrn2.c: an HGRN2 block's (its floored forget gate).
** train_gpu_delta_loss.c: fla_model_loss_backward over the blocks, HGRN2's
** lower bounds, the LM head and the cross-entropy.
*/
#ifndef FLA_MODELS_TRAIN_GPU_DELTA_H
#define FLA_MODELS_TRAIN_GPU_DELTA_H

#include "train_gpu.h"
#include "train_gpu_attn_layer.h"

/* The kernels of train_delta.cuh, in its order. */
enum {
  TD_CONV_FWD, TD_CONV_BWD_DS, TD_CONV_BWD_DA, TD_CONV_BWD_W, TD_L2NORM_FWD, TD_L2NORM_BWD, TD_BETA_FWD,
  TD_BETA_BWD, TD_GDN_GATE_FWD, TD_GDN_GATE_BWD, TD_HGRN2_LB, TD_HGRN2_LB_BWD, TD_HGRN2_FWD, TD_HGRN2_BWD,
  TD_SIG_GATE_FWD, TD_SIG_GATE_BWD, TD_BIAS_ADD, TD_COUNT
};
#define TD_CONV_MAX_W 8 /* CONV_MAX_W of the template */

/* One loss_backward call. */
typedef struct {
  fla_model *m;
  gpu_train *t;
  nn_gpu *g;
  int64_t B, T, rows;
  int D, H, K, V, I, bf;
  int gdn;      /* Gated DeltaNet (else DeltaNet: no gate input) */
  int kda;      /* KDA: a per-key gate [rows, H K] from a low-rank f_proj, a low-rank sigmoid output gate */
  int hgrn2;    /* HGRN2 (K: the forget dimension per head) */
  dptr lb, dlb; /* HGRN2's lower bounds [L, D] and their gradient (0 without) */
  int W;        /* convolution taps (0: no short convolutions) */
  size_t es;    /* bytes per compute element */
  float eps, bscale;
  void *fn[TD_COUNT]; /* CUfunction */
} td_run;

/* What one block keeps between its forward and its backward: x, xm and the
** projections a[q, k, v] before their convolutions (float32), braw, za
** (float32), q, k, v, beta, g, o, the output gate gg, MLP gate and up (compute);
** KDA's low-rank inputs f0 = h Wf0^T and gg0 = h Wg0^T [rows, V] (compute) and
** its output gate's argument ggf = gg0 Wg1^T + b [rows, H V] (float32). */
typedef struct {
  dptr x, xm, a[3], braw, za;
  dptr q, k, v, beta, g, o, gg, gate, up;
  dptr f0, gg0, ggf;
  gta_kept at; /* a softmax-attention layer's (the Transformer's) */
} td_kept;

/* 1 for the architectures of these files: DeltaNet, Gated DeltaNet, KDA, HGRN2,
** and the Transformer (its layers' attention: train_gpu_attn_layer.h). */
int gpu_train_delta_arch(const fla_model *m);

/* fla_model_loss_backward for them (train_gpu_loss_backward's contract). */
fla_status gpu_train_delta_loss_backward(fla_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                                         int64_t T, float grad_scale, double *loss_sum, int64_t *count);

/* The kernels of train_delta.cuh into r->fn (compiled once per context). */
fla_status td_kernels(td_run *r);
void td_launch(td_run *r, int k, unsigned gx, unsigned gy, unsigned block, void **args);

/* Buffers of one block; its forward from kp->x into xout; its backward with dx
** the gradient of xout in, of kp->x out. */
void td_kept_alloc(td_run *r, td_kept *kp, dptr x);
void td_layer_fwd(td_run *r, const model_layer *L, td_kept *kp, dptr xout);
void td_layer_bwd(td_run *r, const model_layer *L, td_kept *kp, dptr dx);
/* HGRN2's token mixer (train_gpu_hgrn2.c): h = n1(x) in, xm = x + mixer(h) out;
** its backward adds its part of dh (float32, written when *first) */
void td_hgrn2_fwd(td_run *r, const model_layer *L, td_kept *kp, dptr h);
void td_hgrn2_bwd(td_run *r, const model_layer *L, td_kept *kp, dptr h, dptr dxb, dptr dh, int *first);

/* y = rmsnorm(x) w (* silu(gate)) and its backward (the kernels of train_nn.cuh). */
void td_rms_fwd(td_run *r, dptr x, int x_bf, dptr gate, dptr w, dptr y, int y_bf, int64_t rows, int dim, float eps);
void td_rms_bwd(td_run *r, dptr x, int x_bf, dptr gate, dptr w, dptr dy, int dy_bf, dptr dx, int dx_bf, int dx_add,
                dptr dgate, dptr dw, int64_t rows, int dim, float eps);
/* The short convolution j of a layer: c = silu(conv(a)) (conv(a) unless silu);
** its backward from dc: da (compute) and the convolution's weight gradients. */
void td_conv_fwd(td_run *r, const model_layer *L, int j, dptr a, int C, int silu, dptr c, int c_bf);
void td_conv_bwd(td_run *r, const model_layer *L, int j, dptr a, int C, int silu, dptr dc, int dc_bf, dptr da);
/* y = x W^T (y float32 or compute);  dW += dy^T x, dx = dy W (written when *first, else added) */
void td_lin(td_run *r, dptr x, int in, dptr W, int out, dptr y, int y_bf);
void td_lin_bwd(td_run *r, dptr x, int in, dptr W, int out, dptr dy, dptr dW, dptr dx, int *first);
/* out[c] += sum over rows of x[rows, cols] (float32) */
void td_colsum(td_run *r, dptr x, int cols, dptr out);

#define TD_CB(r, n) gpu_train_alloc((r)->t, (r)->es * (size_t)(n)) /* compute buffer */
#define TD_FB(r, n) gpu_train_alloc((r)->t, 4 * (size_t)(n))       /* float32 buffer */

#endif
