/*
** gated_product.h -- the "gated pair product" of the chunked algorithm, its
** backward, and the few vector kernels chunk.c shares (private to
** runtime/cpu/chunk.c and gated_product.c).
**
** For c rows i, j of X, Y (c x K, row strides ldx, ldy) and log-gate cumsums
** gx, gy:
**
**   G_ij = sum_d X_id Y_jd exp(gx_id - gy_jd)    for j <= i (strict: j < i)
**   G_ij = 0                                      above the mask
**
** decay FLA_CORE_DECAY_KEY: gx, gy are c x K (row stride K), one gate per key.
** decay FLA_CORE_DECAY_SCALAR: gx, gy are c values, exp(gx_i - gy_j) for all d.
** decay FLA_CORE_DECAY_NONE: gx, gy are ignored (may be NULL).
**
** Assumption: the gates are chunk-local cumsums of log decays <= 0, so gx and
** gy are non-increasing down the rows and gx_i <= gy_j for j <= i (j < i when
** strict): every exponent inside the mask is <= 0. Gates stay in double so
** that the difference of two large cumsums keeps its precision.
**
** Y and the gates are fixed per chunk while X varies (A = G(Q, ., K, .) and
** the WY matrix G(P, ., K, .) share them), so the gate factors and the gated
** Y are prepared once (fla_gp_prepare) and reused by every product and
** backward of the chunk.
*/
#ifndef FLA_GATED_PRODUCT_H
#define FLA_GATED_PRODUCT_H

#include <stdint.h>

/* Sub-chunk size of the per-key scheme (fla's BC). */
#define FLA_GP_BC 16
/* Most sub-chunks per chunk: chunks up to FLA_GP_BC * FLA_GP_MAXB rows. */
#define FLA_GP_MAXB 64

/* Gate factors of one (gx, gy, Y) triple. Per key, for row block I (rows i0
** .. i0+bi-1) with reference r = gx at row i0:
**   ex = exp(gx_i - r_I(i))  (c x K, <= 1),
**   E_I[j] = exp(r_I - gy_j), Yr_I[j] = Y_j .* E_I[j] for j < ncol[I],
** where ncol[I] = i0 + bi when the block's own gate range max(r - gy_last,
** r - gx_last) is at most a safe bound (the diagonal block then joins the
** block's sgemm, its factors exp(r - gy_j) >= 1 bounded), else i0 (the
** diagonal block is a direct loop). Scalar decay: Es_ij = exp(gx_i - gy_j)
** for j <= i (c x c). */
typedef struct {
  int decay;
  int cancel; /* -1, or o: gx_i == gy_{i-o} exactly (see fla_gp_prepare) */
  int64_t c, K;
  const double *gx, *gy;
  const float *Y;
  int64_t ldy;
  float *ex, *E, *Yr, *Es;
  int64_t ncol[FLA_GP_MAXB], off[FLA_GP_MAXB]; /* off: first row of E_I / Yr_I */
} fla_gp_gates;

/* Floats of memory fla_gp_prepare needs, and of scratch the products need. */
int64_t fla_gp_gates_floats(int64_t c, int64_t K);
int64_t fla_gp_work_floats(int64_t c, int64_t K);

/* Fills p (its arrays carved from mem); keeps gx, gy, Y by pointer. c <=
** FLA_GP_BC * FLA_GP_MAXB.
** cancel = o >= 0 promises gx_i == gy_{i-o} exactly (o = 0: the same gates,
** reading after; o = 1: gx_i = gamma_{i-1}, reading before) and that the
** caller adds dgx_i and dgy_{i-o} into one gradient, so that the gate terms
** of the pairs (i, i-o) cancel: fla_gp_backward then leaves them out of
** both (they are the largest terms, and their rounding would swamp small
** gate gradients) and gives those pairs the exact factor 1. -1: none. */
void fla_gp_prepare(fla_gp_gates *p, int decay, int64_t c, int64_t K, const double *gx,
                    const double *gy, int cancel, const float *Y, int64_t ldy, float *mem);

/* G (c x c, row stride ldG) = G(X, gx, Y, gy) masked. work: scratch. */
void fla_gp_forward(const fla_gp_gates *p, int strict, const float *X, int64_t ldx, float *G,
                    int64_t ldG, float *work);

/* Backward of G given dG (entries above the mask are ignored):
**   dX_id = sum_j dG_ij Y_jd e^(gx_id - gy_jd)      (overwrites dX, c x K, stride K)
**   dY_jd = sum_i dG_ij X_id e^(gx_id - gy_jd)      (overwrites dY, c x K, stride K)
**   dgx   += X .* dX   (scalar: row sums),  dgy -= Y .* dY  (scalar: row sums)
**           (less the cancelling pairs' terms, see fla_gp_prepare)
** G is the forward result (scalar decay: dgx_i = sum_j dG_ij G_ij). dgx and
** dgy may be the same array, or NULL to skip. */
void fla_gp_backward(const fla_gp_gates *p, int strict, const float *X, int64_t ldx,
                     const float *G, int64_t ldG, const float *dG, int64_t lddG, float *dX,
                     float *dY, double *dgx, double *dgy, float *work);

/* Vector kernels (AVX2 when the CPU has it, else scalar), i < n:        */
/* y_i = exp((float)(a_i - b_i)); a or b NULL reads 0. Arguments above
** 88 saturate at exp(88); below -87.3 give 0. */
void fla_vexp_diff(float *y, const double *a, const double *b, int64_t n);
void fla_vmul(float *y, const float *x, const float *e, int64_t n);    /* y = x .* e  */
void fla_vmuladd(float *y, const float *x, const float *e, int64_t n); /* y += x .* e */
void fla_vscale(float *y, const float *x, float s, int64_t n);         /* y = s x     */
void fla_vaxpy(float *y, float s, const float *x, int64_t n);          /* y += s x    */
double fla_vdot(const float *x, const float *y, int64_t n);            /* in double   */
/* y_i = a_i + x_i in double (a NULL reads 0): one cumsum step of the gates. */
void fla_vaddf(double *y, const double *a, const float *x, int64_t n);
/* acc_i += s x_i y_i, in double. */
void fla_vprodacc(double *acc, double s, const float *x, const float *y, int64_t n);

#endif
