/*
** gated_product.c -- the gated pair product G(X, gx, Y, gy) of the chunked
** algorithm, its backward (gated_product.h has the definition), and the
** vector kernels chunk.c shares.
**
** Scalar or no decay: G = (X Y^T) .* exp(gx_i - gy_j), one sgemm and an
** elementwise pass; every exponent inside the mask is <= 0.
**
** Per-key decay: the gate sits inside the sum over d, so G is not one product
** unless exp(-gy) is formed, which overflows under strong decay. fla's
** sub-chunking (BC = 16): for row block I (rows i0 .. i0+bi-1) take the
** reference r = gx at row i0 and form
**
**   Xr_I = X_I .* exp(gx_I - r)      (exponents <= 0)
**   Yr_j = Y_j .* exp(r - gy_j)      (exponents <= 0 for j < i0)
**
** then G[I, 0:i0] = Xr_I Yr^T is one small sgemm. The diagonal block I x I
** joins that sgemm when its gate range is small (the factors exp(r - gy_j) >=
** 1 stay below exp(GP_SAFE_RANGE)); otherwise it is a direct loop over (i,
** j <= i, d) computing exp(gx_id - gy_jd), which is always safe.
**
** From block I-1 to block I the factors of the rows already seen change by
** exp(r_I - r_{I-1}) <= 1 per key, so E_I = E_{I-1} .* that (one exp per key
** instead of one per row and key); only the new rows take fresh exps.
**
** Backward: the pairs whose gate terms cancel once dgx and dgy are summed
** (the diagonal reading after, the first subdiagonal reading before) are the
** largest terms of dgamma; they are left out of the gate gradient exactly
** rather than added and subtracted (fla_gp_prepare's cancel).
*/
#include "cpu/gated_product.h"
#include "cpu/cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* FLA_NO_SIMD: build the scalar fallback only (tests it on AVX2 machines). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(FLA_NO_SIMD)
#define GP_X86 1
#include <immintrin.h>
#endif

/* Largest gate range inside one diagonal sub-block that may be factored
** through the reference row: exp(30) ~ 1e13 keeps products far from the float
** range and the small factors exp(-30) far above the denormals. */
#define GP_SAFE_RANGE 30.0

static int in_mask_(int strict, int64_t i, int64_t j) { return strict ? j < i : j <= i; }

/* 1 when the pairs (i, i - p->cancel) are inside the mask (their gate terms
** cancel: see fla_gp_prepare). */
static int cancels_(const fla_gp_gates *p, int strict) {
  return (p->cancel == 0 && !strict) || (p->cancel >= 1);
}

static int64_t nblocks_(int64_t c) { return (c + FLA_GP_BC - 1) / FLA_GP_BC; }

int64_t fla_gp_gates_floats(int64_t c, int64_t K) {
  int64_t nb = nblocks_(c);
  int64_t key = c * K + 2 * FLA_GP_BC * nb * (nb + 1) / 2 * K + K;
  int64_t sca = c * c;
  return key > sca ? key : sca;
}

int64_t fla_gp_work_floats(int64_t c, int64_t K) {
  int64_t key = 2 * FLA_GP_BC * K + FLA_GP_BC * c + c * K + K;
  int64_t sca = c * c;
  return key > sca ? key : sca;
}

/* ------------------------------------------------------------------------ */
/* Vector kernels                                                            */

#ifdef GP_X86
#define GP_AVX2 __attribute__((target("avx2,fma")))

static int have_avx2_(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* exp of 8 floats (Cephes expf: range reduction by ln 2 in two parts, degree-5
** polynomial, 2^n through the exponent bits; about 1 ulp). Inputs are clamped
** to [-87.3, 88]; below -87.3 the result is 0. */
GP_AVX2 static __m256 exp8_(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.0f), lo = _mm256_set1_ps(-87.33654f);
  __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  e = _mm256_slli_epi32(e, 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(under, y);
}

/* 8 doubles a - b (NULL: 0) rounded to float. */
GP_AVX2 static __m256 diff8_(const double *a, const double *b) {
  __m256d z = _mm256_setzero_pd();
  __m256d a0 = a ? _mm256_loadu_pd(a) : z, a1 = a ? _mm256_loadu_pd(a + 4) : z;
  __m256d b0 = b ? _mm256_loadu_pd(b) : z, b1 = b ? _mm256_loadu_pd(b + 4) : z;
  __m128 lo = _mm256_cvtpd_ps(_mm256_sub_pd(a0, b0)), hi = _mm256_cvtpd_ps(_mm256_sub_pd(a1, b1));
  return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

GP_AVX2 static int64_t vexp_diff_avx2_(float *y, const double *a, const double *b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, exp8_(diff8_(a ? a + i : NULL, b ? b + i : NULL)));
  return i;
}

GP_AVX2 static int64_t vmul_avx2_(float *y, const float *x, const float *e, int64_t n, int add) {
  int64_t i = 0;
  if (add)
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(e + i),
                                              _mm256_loadu_ps(y + i)));
  else
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(e + i)));
  return i;
}

GP_AVX2 static int64_t vaxpy_avx2_(float *y, float s, const float *x, int64_t n, int add) {
  __m256 sv = _mm256_set1_ps(s);
  int64_t i = 0;
  if (add)
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(sv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  else
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(sv, _mm256_loadu_ps(x + i)));
  return i;
}

/* Sum of x_i y_i for i < (n & ~3) in double; *done = that count. */
GP_AVX2 static double vdot_avx2_(const float *x, const float *y, int64_t n, int64_t *done) {
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)),
                           _mm256_cvtps_pd(_mm_loadu_ps(y + i)), acc0);
    acc1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)),
                           _mm256_cvtps_pd(_mm_loadu_ps(y + i + 4)), acc1);
  }
  __m256d acc = _mm256_add_pd(acc0, acc1);
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  *done = i;
  return _mm_cvtsd_f64(s);
}

GP_AVX2 static int64_t vaddf_avx2_(double *y, const double *a, const float *x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    _mm256_storeu_pd(y + i, a ? _mm256_add_pd(_mm256_loadu_pd(a + i), v) : v);
  }
  return i;
}

GP_AVX2 static int64_t vprodacc_avx2_(double *acc, double s, const float *x, const float *y,
                                       int64_t n) {
  __m256d sv = _mm256_set1_pd(s);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m256d p = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)),
                              _mm256_cvtps_pd(_mm_loadu_ps(y + i)));
    _mm256_storeu_pd(acc + i, _mm256_fmadd_pd(sv, p, _mm256_loadu_pd(acc + i)));
  }
  return i;
}
#endif /* GP_X86 */

void fla_vexp_diff(float *y, const double *a, const double *b, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vexp_diff_avx2_(y, a, b, n);
#endif
  for (; i < n; i++) y[i] = expf((float)((a ? a[i] : 0.0) - (b ? b[i] : 0.0)));
}

void fla_vmul(float *y, const float *x, const float *e, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vmul_avx2_(y, x, e, n, 0);
#endif
  for (; i < n; i++) y[i] = x[i] * e[i];
}

void fla_vmuladd(float *y, const float *x, const float *e, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vmul_avx2_(y, x, e, n, 1);
#endif
  for (; i < n; i++) y[i] += x[i] * e[i];
}

void fla_vscale(float *y, const float *x, float s, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vaxpy_avx2_(y, s, x, n, 0);
#endif
  for (; i < n; i++) y[i] = s * x[i];
}

void fla_vaxpy(float *y, float s, const float *x, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vaxpy_avx2_(y, s, x, n, 1);
#endif
  for (; i < n; i++) y[i] += s * x[i];
}

double fla_vdot(const float *x, const float *y, int64_t n) {
  int64_t i = 0;
  double acc = 0;
#ifdef GP_X86
  if (have_avx2_()) acc = vdot_avx2_(x, y, n, &i);
#endif
  for (; i < n; i++) acc += (double)x[i] * y[i];
  return acc;
}

void fla_vaddf(double *y, const double *a, const float *x, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vaddf_avx2_(y, a, x, n);
#endif
  for (; i < n; i++) y[i] = (a ? a[i] : 0.0) + x[i];
}

void fla_vprodacc(double *acc, double s, const float *x, const float *y, int64_t n) {
  int64_t i = 0;
#ifdef GP_X86
  if (have_avx2_()) i = vprodacc_avx2_(acc, s, x, y, n);
#endif
  for (; i < n; i++) acc[i] += s * ((double)x[i] * y[i]);
}

/* ------------------------------------------------------------------------ */
/* Gate factors                                                              */

static void prepare_key_(fla_gp_gates *p, float *mem) {
  int64_t c = p->c, K = p->K, nb = nblocks_(c);
  const double *gx = p->gx, *gy = p->gy;
  p->ex = mem;
  mem += c * K;
  float *f = mem;
  mem += K;
  int64_t rows = FLA_GP_BC * nb * (nb + 1) / 2;
  p->E = mem;
  p->Yr = mem + rows * K;
  int64_t off = 0, prev_ncol = 0, prev_off = 0;
  for (int64_t ib = 0; ib < nb; ib++) {
    int64_t i0 = ib * FLA_GP_BC, bi = c - i0 < FLA_GP_BC ? c - i0 : FLA_GP_BC;
    const double *r = gx + i0 * K;
    const double *last_x = gx + (i0 + bi - 1) * K, *last_y = gy + (i0 + bi - 1) * K;
    for (int64_t i = i0; i < i0 + bi; i++) fla_vexp_diff(p->ex + i * K, gx + i * K, r, K);
    double range = 0;
    for (int64_t d = 0; d < K; d++) {
      double a = r[d] - last_y[d], b = r[d] - last_x[d];
      if (a > range) range = a;
      if (b > range) range = b;
    }
    int64_t ncol = range <= GP_SAFE_RANGE ? i0 + bi : i0;
    float *E = p->E + off * K, *Yr = p->Yr + off * K;
    int64_t j0 = 0;
    if (prev_ncol > 0) {
      /* E_I[j] = E_{I-1}[j] .* exp(r_I - r_{I-1}) for the rows block I-1 had. */
      fla_vexp_diff(f, r, gx + (i0 - FLA_GP_BC) * K, K);
      for (int64_t j = 0; j < prev_ncol; j++) fla_vmul(E + j * K, p->E + (prev_off + j) * K, f, K);
      j0 = prev_ncol;
    }
    for (int64_t j = j0; j < ncol; j++) fla_vexp_diff(E + j * K, r, gy + j * K, K);
    for (int64_t j = 0; j < ncol; j++) fla_vmul(Yr + j * K, p->Y + j * p->ldy, E + j * K, K);
    p->ncol[ib] = ncol;
    p->off[ib] = off;
    prev_off = off;
    prev_ncol = ncol;
    off += ncol;
  }
}

void fla_gp_prepare(fla_gp_gates *p, int decay, int64_t c, int64_t K, const double *gx,
                    const double *gy, int cancel, const float *Y, int64_t ldy, float *mem) {
  memset(p, 0, sizeof *p);
  p->decay = decay, p->c = c, p->K = K, p->gx = gx, p->gy = gy, p->Y = Y, p->ldy = ldy;
  p->cancel = cancel;
  if (c <= 0) return;
  if (decay == FLA_CORE_DECAY_KEY) {
    prepare_key_(p, mem);
  } else if (decay == FLA_CORE_DECAY_SCALAR) {
    p->Es = mem;
    for (int64_t i = 0; i < c; i++)
      for (int64_t j = 0; j <= i; j++) p->Es[i * c + j] = expf((float)(gx[i] - gy[j]));
  }
}

/* ------------------------------------------------------------------------ */
/* Scalar / no decay                                                         */

/* Es_ij inside the mask, 0 outside (1 inside without decay). */
static float scalar_gate_(const fla_gp_gates *p, int strict, int64_t i, int64_t j) {
  if (!in_mask_(strict, i, j)) return 0.0f;
  return p->Es ? p->Es[i * p->c + j] : 1.0f;
}

/* G = (X Y^T) .* Es. */
static void scalar_forward_(const fla_gp_gates *p, int strict, const float *X, int64_t ldx,
                            float *G, int64_t ldG) {
  int64_t c = p->c;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)c, (int)p->K, 1.0f, X,
              (int)ldx, p->Y, (int)p->ldy, 0.0f, G, (int)ldG);
  for (int64_t i = 0; i < c; i++)
    for (int64_t j = 0; j < c; j++) G[i * ldG + j] *= scalar_gate_(p, strict, i, j);
}

/* dGE = dG .* Es;  dX = dGE Y;  dY = dGE^T X;
** dgx_i += sum_j dG_ij G_ij;  dgy_j -= sum_i dG_ij G_ij. */
static void scalar_backward_(const fla_gp_gates *p, int strict, const float *X, int64_t ldx,
                             const float *G, int64_t ldG, const float *dG, int64_t lddG,
                             float *dX, float *dY, double *dgx, double *dgy, float *dGE) {
  int64_t c = p->c, K = p->K;
  for (int64_t i = 0; i < c; i++)
    for (int64_t j = 0; j < c; j++)
      dGE[i * c + j] = dG[i * lddG + j] * scalar_gate_(p, strict, i, j);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c, (int)K, (int)c, 1.0f, dGE,
              (int)c, p->Y, (int)p->ldy, 0.0f, dX, (int)K);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, (int)K, (int)c, 1.0f, dGE,
              (int)c, X, (int)ldx, 0.0f, dY, (int)K);
  if (p->decay != FLA_CORE_DECAY_SCALAR) return;
  int cancel = cancels_(p, strict);
  for (int64_t i = 0; i < c; i++)
    for (int64_t j = 0; j < c; j++) {
      if (!in_mask_(strict, i, j) || (cancel && j == i - p->cancel)) continue;
      double t = (double)dG[i * lddG + j] * G[i * ldG + j];
      if (dgx) dgx[i] += t;
      if (dgy) dgy[j] -= t;
    }
}

/* ------------------------------------------------------------------------ */
/* Per-key decay                                                             */

/* G_ij = sum_d X_id Y_jd exp(gx_id - gy_jd) directly, for i, j in [i0, i0+bi)
** inside the mask. tmp: K floats. */
static void key_diag_forward_(const fla_gp_gates *p, int strict, int64_t i0, int64_t bi,
                              const float *X, int64_t ldx, float *G, int64_t ldG, float *tmp) {
  int64_t K = p->K;
  for (int64_t i = i0; i < i0 + bi; i++)
    for (int64_t j = i0; j <= i; j++) {
      if (!in_mask_(strict, i, j)) continue;
      fla_vexp_diff(tmp, p->gx + i * K, p->gy + j * K, K);
      fla_vmul(tmp, tmp, p->Y + j * p->ldy, K);
      G[i * ldG + j] = (float)fla_vdot(X + i * ldx, tmp, K);
    }
}

static void key_forward_(const fla_gp_gates *p, int strict, const float *X, int64_t ldx,
                         float *G, int64_t ldG, float *work) {
  int64_t c = p->c, K = p->K, nb = nblocks_(c);
  float *Xr = work, *tmp = work + FLA_GP_BC * K;
  for (int64_t i = 0; i < c; i++) memset(G + i * ldG, 0, sizeof(float) * (size_t)c);
  for (int64_t ib = 0; ib < nb; ib++) {
    int64_t i0 = ib * FLA_GP_BC, bi = c - i0 < FLA_GP_BC ? c - i0 : FLA_GP_BC, ncol = p->ncol[ib];
    if (ncol > 0) {
      for (int64_t i = 0; i < bi; i++)
        fla_vmul(Xr + i * K, X + (i0 + i) * ldx, p->ex + (i0 + i) * K, K);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bi, (int)ncol, (int)K, 1.0f, Xr,
                  (int)K, p->Yr + p->off[ib] * K, (int)K, 0.0f, G + i0 * ldG, (int)ldG);
    }
    if (ncol > i0) {
      for (int64_t i = i0; i < i0 + bi; i++)
        for (int64_t j = i0; j < i0 + bi; j++)
          if (!in_mask_(strict, i, j)) G[i * ldG + j] = 0;
    } else {
      key_diag_forward_(p, strict, i0, bi, X, ldx, G, ldG, tmp);
    }
  }
}

/* Backward of the direct diagonal block, pairs j <= i - gap:
** e = dG_ij exp(gx_i - gy_j);  dX_i += e .* Y_j;  dY_j += e .* X_i. */
static void key_diag_backward_(const fla_gp_gates *p, int64_t gap, int64_t i0, int64_t bi,
                               const float *X, int64_t ldx, const float *dG, int64_t lddG,
                               float *dX, float *dY, float *tmp) {
  int64_t K = p->K;
  for (int64_t i = i0; i < i0 + bi; i++)
    for (int64_t j = i0; j <= i - gap; j++) {
      float a = dG[i * lddG + j];
      if (a == 0) continue;
      fla_vexp_diff(tmp, p->gx + i * K, p->gy + j * K, K);
      fla_vscale(tmp, tmp, a, K);
      fla_vmuladd(dX + i * K, tmp, p->Y + j * p->ldy, K);
      fla_vmuladd(dY + j * K, tmp, X + i * ldx, K);
    }
}

/* Main pass over the pairs j <= i - gap, per block I: dGm = dG[I, 0:ncol]
** masked to them;
**   dX_I += (dGm Yr_I) .* ex;   dY_j += (dGm^T Xr_I)_j .* E_I[j]   (j < ncol);
** then dgx += X .* dX, dgy -= Y .* dY. gap = 1 + cancel when the cancelling
** pairs (i, i - cancel) are in the mask: they come last, without gate terms
** (their exp factor is exactly 1):  dX_i += dG_ij Y_j,  dY_j += dG_ij X_i.
** They are the largest terms of dgamma; leaving their rounding in would
** swamp the small gate gradients of strongly decayed chunks. */
static void key_backward_(const fla_gp_gates *p, int strict, const float *X, int64_t ldx,
                          const float *dG, int64_t lddG, float *dX, float *dY, double *dgx,
                          double *dgy, float *work) {
  int64_t c = p->c, K = p->K, nb = nblocks_(c);
  int cancel = cancels_(p, strict);
  int64_t gap = cancel ? 1 + p->cancel : strict ? 1 : 0;
  float *Xr = work, *dXr = Xr + FLA_GP_BC * K, *dGm = dXr + FLA_GP_BC * K;
  float *dYr = dGm + FLA_GP_BC * c, *tmp = dYr + c * K;
  memset(dX, 0, sizeof(float) * (size_t)(c * K));
  memset(dY, 0, sizeof(float) * (size_t)(c * K));
  for (int64_t ib = 0; ib < nb; ib++) {
    int64_t i0 = ib * FLA_GP_BC, bi = c - i0 < FLA_GP_BC ? c - i0 : FLA_GP_BC, ncol = p->ncol[ib];
    if (ncol > 0) {
      const float *E = p->E + p->off[ib] * K, *Yr = p->Yr + p->off[ib] * K;
      for (int64_t i = 0; i < bi; i++) {
        fla_vmul(Xr + i * K, X + (i0 + i) * ldx, p->ex + (i0 + i) * K, K);
        for (int64_t j = 0; j < ncol; j++)
          dGm[i * ncol + j] = j <= i0 + i - gap ? dG[(i0 + i) * lddG + j] : 0.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bi, (int)K, (int)ncol, 1.0f,
                  dGm, (int)ncol, Yr, (int)K, 0.0f, dXr, (int)K);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ncol, (int)K, (int)bi, 1.0f, dGm,
                  (int)ncol, Xr, (int)K, 0.0f, dYr, (int)K);
      for (int64_t i = 0; i < bi; i++)
        fla_vmuladd(dX + (i0 + i) * K, dXr + i * K, p->ex + (i0 + i) * K, K);
      for (int64_t j = 0; j < ncol; j++) fla_vmuladd(dY + j * K, dYr + j * K, E + j * K, K);
    }
    if (ncol == i0) key_diag_backward_(p, gap, i0, bi, X, ldx, dG, lddG, dX, dY, tmp);
  }
  for (int64_t i = 0; i < c; i++) {
    if (dgx) fla_vprodacc(dgx + i * K, 1.0, X + i * ldx, dX + i * K, K);
    if (dgy) fla_vprodacc(dgy + i * K, -1.0, p->Y + i * p->ldy, dY + i * K, K);
  }
  if (!cancel) return;
  for (int64_t i = p->cancel; i < c; i++) {
    int64_t j = i - p->cancel;
    float a = dG[i * lddG + j];
    fla_vaxpy(dX + i * K, a, p->Y + j * p->ldy, K);
    fla_vaxpy(dY + j * K, a, X + i * ldx, K);
  }
}

/* ------------------------------------------------------------------------ */

void fla_gp_forward(const fla_gp_gates *p, int strict, const float *X, int64_t ldx, float *G,
                    int64_t ldG, float *work) {
  if (p->c <= 0) return;
  if (p->decay == FLA_CORE_DECAY_KEY)
    key_forward_(p, strict, X, ldx, G, ldG, work);
  else
    scalar_forward_(p, strict, X, ldx, G, ldG);
}

void fla_gp_backward(const fla_gp_gates *p, int strict, const float *X, int64_t ldx,
                     const float *G, int64_t ldG, const float *dG, int64_t lddG, float *dX,
                     float *dY, double *dgx, double *dgy, float *work) {
  if (p->c <= 0) return;
  if (p->decay == FLA_CORE_DECAY_KEY)
    key_backward_(p, strict, X, ldx, dG, lddG, dX, dY, dgx, dgy, work);
  else
    scalar_backward_(p, strict, X, ldx, G, ldG, dG, lddG, dX, dY, dgx, dgy, work);
}
