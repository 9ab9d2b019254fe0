/*
** grad_math.h -- the dense math of training: the forward of every layer piece
** and its backward, written once for a generic real type.
**
** grad_math.c includes grad_math_impl.h twice: with float (names gm_*_f, what
** the model's backward runs) and with double (names gm_*_d, what the tests
** differentiate by central finite differences in float64). The float forwards
** compute the same functions as nn_cpu.c (whose results the model's forward
** uses); statistics are summed in double in both.
**
** Conventions: row-major, a "row" is one token; a Linear's W is [out, in].
** Every backward ADDS into parameter gradients (dW, db, dw: accumulated over
** micro-batches) and OVERWRITES input gradients (dx) unless it says "+=".
*/
#ifndef FLA_MODELS_GRAD_MATH_H
#define FLA_MODELS_GRAD_MATH_H

#include <stdint.h>

#include "nn.h" /* nn_act */

#define GM_DECLARE(R, S)                                                                           \
  /* y[M, out] = x W^T (+ b) */                                                                    \
  void gm_linear_##S(const R *x, int64_t M, int in, const R *W, int out, const R *b, R *y);        \
  /* dW += dy^T x, db += sum_rows dy (db may be NULL), dx (= or += when acc) dy W (NULL: skip) */  \
  void gm_linear_bwd_##S(const R *x, int64_t M, int in, const R *W, int out, const R *dy, R *dx,  \
                         int acc, R *dW, R *db);                                                   \
  /* y = x rsqrt(mean x^2 + eps) w per row of dim (w NULL: 1) */                                  \
  void gm_rmsnorm_##S(const R *x, int64_t rows, int dim, const R *w, double eps, R *y);            \
  void gm_rmsnorm_bwd_##S(const R *x, int64_t rows, int dim, const R *w, double eps, const R *dy, \
                          R *dx, R *dw);                                                           \
  /* y = rmsnorm(x) w act(g) */                                                                    \
  void gm_rmsnorm_gated_##S(const R *x, const R *g, int64_t rows, int dim, const R *w, double eps, \
                            nn_act act, R *y);                                                     \
  void gm_rmsnorm_gated_bwd_##S(const R *x, const R *g, int64_t rows, int dim, const R *w,        \
                                double eps, nn_act act, const R *dy, R *dx, R *dg, R *dw);         \
  /* y = (x - mean) rsqrt(var + eps) w + b per group (w, b NULL: 1, 0) */                        \
  void gm_groupnorm_##S(const R *x, int64_t rows, int dim, int groups, const R *w, const R *b,    \
                        double eps, R *y);                                                         \
  void gm_groupnorm_bwd_##S(const R *x, int64_t rows, int dim, int groups, const R *w,            \
                            double eps, const R *dy, R *dx, R *dw, R *db);                        \
  /* y = act(x) element-wise; dx = dy act'(x) */                                                  \
  void gm_act_##S(const R *x, int64_t n, nn_act act, R *y);                                        \
  void gm_act_bwd_##S(const R *x, int64_t n, nn_act act, const R *dy, R *dx);                      \
  /* out = silu(gate) up; dgate, dup */                                                            \
  void gm_swiglu_##S(const R *gate, const R *up, int64_t n, R *out);                               \
  void gm_swiglu_bwd_##S(const R *gate, const R *up, int64_t n, const R *dout, R *dgate, R *dup); \
  /* y = x / sqrt(sum x^2 + 1e-6) per row */                                                       \
  void gm_l2norm_##S(const R *x, int64_t rows, int dim, R *y);                                     \
  void gm_l2norm_bwd_##S(const R *x, int64_t rows, int dim, const R *dy, R *dx);                   \
  /* causal depthwise conv of B sequences of T from a zero past, y = act(pre),                   \
  ** pre[b,t,c] = sum_j w[c,j] x[b,t-W+1+j,c] + bias[c]; pre may be NULL */                      \
  void gm_conv_##S(const R *x, int64_t B, int64_t T, int C, int W, const R *w, const R *bias,     \
                   nn_act act, R *pre, R *y);                                                      \
  void gm_conv_bwd_##S(const R *x, int64_t B, int64_t T, int C, int W, const R *w, const R *pre,  \
                       nn_act act, const R *dy, R *dx, R *dw, R *dbias);                           \
  /* rotary of B sequences x [B, T, H, D] from position 0 (inverse: rotate back, the backward) */ \
  void gm_rotary_##S(R *x, int64_t B, int64_t T, int H, int D, double theta, int inverse);         \
  /* causal softmax attention of B sequences from position 0 (nn_attention's math);              \
  ** backward: dq, dk, dv overwritten */                                                          \
  void gm_attention_##S(const R *q, const R *k, const R *v, int64_t B, int64_t T, int Hq, int Hkv, \
                        int D, int64_t window, R *o);                                              \
  void gm_attention_bwd_##S(const R *q, const R *k, const R *v, int64_t B, int64_t T, int Hq,     \
                            int Hkv, int D, int64_t window, const R *dout, R *dq, R *dk, R *dv);  \
  /* Cross-entropy of lm_head(h) against targets (-100: ignored), chunk rows at a time:         \
  ** returns the sum over counted rows, *count their number; when dh is not NULL,                 \
  ** dh = scale d(sum)/dh and dW += scale d(sum)/dW (the logits never all exist). */             \
  double gm_head_ce_##S(const R *h, int64_t rows, int D, const R *W, int vocab,                   \
                        const int32_t *targets, double scale, int64_t chunk, R *dh, R *dW,         \
                        int64_t *count);

GM_DECLARE(float, f)
GM_DECLARE(double, d)

/* Threads for the element-wise and per-row loops of the calling thread's
** grad_math calls (1 at first). The results do not depend on it. */
void gm_set_threads(int n);

#endif
