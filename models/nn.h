/*
** nn.h -- the dense math of the model layers, behind one small set of functions.
**
** Everything a layer does outside the token mixer goes through these: the CPU
** versions live in nn_cpu.c (OpenBLAS for the products); a GPU backend provides
** the same functions over device pointers. Activations are row-major float32;
** a "row" is one token. Weights follow PyTorch: a Linear's W is [out, in].
*/
#ifndef FLA_MODELS_NN_H
#define FLA_MODELS_NN_H

#include <stdint.h>

/* y[M, out] = x[M, in] W[out, in]^T (+ bias[out] when not NULL). The strided
** form reads x rows ldx apart and W rows ldw apart (column blocks of either). */
void nn_linear(const float *x, int64_t M, int in, const float *W, int out, const float *bias,
               float *y);
void nn_linear_strided(const float *x, int ldx, int64_t M, int in, const float *W, int ldw,
                       int out, float *y, int ldy);

/* y = x * rsqrt(mean(x^2) + eps) * w, per row of dim (w may be NULL: 1). */
void nn_rmsnorm(const float *x, int64_t rows, int dim, const float *w, float eps, float *y);
/* y = (x - mean) * rsqrt(var + eps) * w + b, per group of dim/groups entries of
** each row (groups = 1: LayerNorm; RWKV-6 uses one group per head). */
void nn_groupnorm(const float *x, int64_t rows, int dim, int groups, const float *w,
                  const float *b, float eps, float *y);

typedef enum { NN_ACT_NONE, NN_ACT_SILU, NN_ACT_SIGMOID } nn_act;
/* fla's FusedRMSNormGated: y = rmsnorm(x) * w * act(g), per row of dim. */
void nn_rmsnorm_gated(const float *x, const float *g, int64_t rows, int dim, const float *w,
                      float eps, nn_act act, float *y);

/* Element-wise: y += x; x = act(x); out = silu(gate) * up. */
void nn_add(float *y, const float *x, int64_t n);
void nn_activate(float *x, int64_t n, nn_act act);
void nn_swiglu(const float *gate, const float *up, int64_t n, float *out);

/* x / sqrt(sum(x^2) + 1e-6) per row of dim (the delta rule's q/k norm). */
void nn_l2norm(float *x, int64_t rows, int dim);

/* Depthwise causal convolution of width W over T tokens of B sequences:
**   y[b,t,c] = act(sum_j w[c,j] x[b, t-(W-1)+j, c] + bias[c])
** with x at negative times read from cache[b, c, 0..W-2] (oldest first), which
** is then replaced by the last W-1 inputs. x, y: [B, T, C]; y may not alias x. */
void nn_short_conv(const float *x, int64_t B, int64_t T, int C, int W, const float *w,
                   const float *bias, float *cache, nn_act act, float *y);

/* Rotary embedding (NeoX half split) in place on x [T, H, D] of one sequence
** whose first token is at position pos0: for i < D/2, f = theta^(-2i/D),
**   (x_i, x_{i+D/2}) <- (x_i cos - x_{i+D/2} sin, x_{i+D/2} cos + x_i sin), angle (pos0+t) f. */
void nn_rotary(float *x, int64_t T, int H, int D, int64_t pos0, double theta);

/* Causal softmax attention of one sequence. q [T, Hq, D] at positions
** qpos0..qpos0+T-1; keys/values [L, Hkv, D] at positions kpos0..kpos0+L-1.
** Query head h reads KV head h / (Hq/Hkv). A query at p sees keys at
** p-window+1..p (window 0: all up to p). o [T, Hq, D]. scale: D^-0.5. */
void nn_attention(const float *q, int64_t T, int Hq, int D, int64_t qpos0, const float *k,
                  const float *v, int64_t L, int Hkv, int64_t kpos0, int64_t window, float *o);

/* Scalar helpers with torch's conventions. */
float nn_sigmoid(float x);
float nn_logsigmoid(float x);
float nn_softplus(float x); /* x above 20 is returned as is */

#endif
