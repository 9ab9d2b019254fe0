/*
** nn_cpu.c -- the CPU versions of nn.h: plain loops in float32 (norm statistics
** and softmax sums in double), products through OpenBLAS.
*/
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void nn_linear_strided(const float *x, int ldx, int64_t M, int in, const float *W, int ldw,
                       int out, float *y, int ldy) {
  if (M <= 0 || out <= 0) return;
  if (M <= 4) { /* decode: sgemm would pack all of W for a few rows; y_m = W x_m */
    for (int64_t m = 0; m < M; m++)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, ldw, x + m * ldx, 1, 0.0f, y + m * ldy, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, out, in, 1.0f, x, ldx, W, ldw,
              0.0f, y, ldy);
}

void nn_linear(const float *x, int64_t M, int in, const float *W, int out, const float *bias,
               float *y) {
  nn_linear_strided(x, in, M, in, W, in, out, y, out);
  if (bias)
    for (int64_t m = 0; m < M; m++)
      for (int j = 0; j < out; j++) y[m * out + j] += bias[j];
}

/* rstd = 1 / sqrt(mean(x^2) + eps) */
static float rms_rstd_(const float *x, int dim, float eps) {
  double ss = 0;
  for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
  return (float)(1.0 / sqrt(ss / dim + eps));
}

void nn_rmsnorm(const float *x, int64_t rows, int dim, const float *w, float eps, float *y) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    float rstd = rms_rstd_(xr, dim, eps);
    for (int i = 0; i < dim; i++) yr[i] = xr[i] * rstd * (w ? w[i] : 1.0f);
  }
}

void nn_groupnorm(const float *x, int64_t rows, int dim, int groups, const float *w,
                  const float *b, float eps, float *y) {
  int gd = dim / groups;
  for (int64_t r = 0; r < rows; r++)
    for (int g = 0; g < groups; g++) {
      const float *xg = x + r * dim + g * gd;
      float *yg = y + r * dim + g * gd;
      double mean = 0, var = 0;
      for (int i = 0; i < gd; i++) mean += xg[i];
      mean /= gd;
      for (int i = 0; i < gd; i++) var += (xg[i] - mean) * (xg[i] - mean);
      float rstd = (float)(1.0 / sqrt(var / gd + eps));
      for (int i = 0; i < gd; i++) {
        int c = g * gd + i;
        yg[i] = (float)(xg[i] - mean) * rstd * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
      }
    }
}

float nn_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): no overflow either way */
float nn_logsigmoid(float x) { return fminf(x, 0.0f) - log1pf(expf(-fabsf(x))); }

float nn_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static float act_(float x, nn_act act) {
  switch (act) {
  case NN_ACT_SILU: return x * nn_sigmoid(x);
  case NN_ACT_SIGMOID: return nn_sigmoid(x);
  default: return x;
  }
}

void nn_rmsnorm_gated(const float *x, const float *g, int64_t rows, int dim, const float *w,
                      float eps, nn_act act, float *y) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * dim, *gr = g + r * dim;
    float *yr = y + r * dim;
    float rstd = rms_rstd_(xr, dim, eps);
    for (int i = 0; i < dim; i++) yr[i] = xr[i] * rstd * (w ? w[i] : 1.0f) * act_(gr[i], act);
  }
}

void nn_add(float *y, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void nn_activate(float *x, int64_t n, nn_act act) {
  if (act == NN_ACT_NONE) return;
  for (int64_t i = 0; i < n; i++) x[i] = act_(x[i], act);
}

void nn_swiglu(const float *gate, const float *up, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = gate[i] * nn_sigmoid(gate[i]) * up[i];
}

void nn_l2norm(float *x, int64_t rows, int dim) {
  for (int64_t r = 0; r < rows; r++) {
    float *xr = x + r * dim;
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
    float inv = (float)(1.0 / sqrt(ss + 1e-6));
    for (int i = 0; i < dim; i++) xr[i] *= inv;
  }
}

void nn_short_conv(const float *x, int64_t B, int64_t T, int C, int W, const float *w,
                   const float *bias, float *cache, nn_act act, float *y) {
  int P = W - 1; /* past inputs a token needs */
  float *win = malloc(sizeof(float) * (size_t)(P + T > 0 ? P + T : 1));
  for (int64_t b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      float *cc = cache + (b * C + c) * P;
      /* win = [cache (P), x[b, :, c] (T)] */
      for (int j = 0; j < P; j++) win[j] = cc[j];
      for (int64_t t = 0; t < T; t++) win[P + t] = x[(b * T + t) * C + c];
      for (int64_t t = 0; t < T; t++) {
        float s = bias ? bias[c] : 0.0f;
        for (int j = 0; j < W; j++) s += w[c * W + j] * win[t + j];
        y[(b * T + t) * C + c] = act_(s, act);
      }
      for (int j = 0; j < P; j++) cc[j] = win[T + j];
    }
  free(win);
}

void nn_rotary(float *x, int64_t T, int H, int D, int64_t pos0, double theta) {
  int half = D / 2;
  for (int i = 0; i < half; i++) {
    /* fla computes inv_freq and the angles in float32 */
    float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / D));
    for (int64_t t = 0; t < T; t++) {
      float ang = (float)(pos0 + t) * inv_freq;
      float c = cosf(ang), s = sinf(ang);
      for (int h = 0; h < H; h++) {
        float *xh = x + (t * H + h) * D;
        float a = xh[i], b = xh[i + half];
        xh[i] = a * c - b * s;
        xh[i + half] = b * c + a * s;
      }
    }
  }
}

void nn_attention(const float *q, int64_t T, int Hq, int D, int64_t qpos0, const float *k,
                  const float *v, int64_t L, int Hkv, int64_t kpos0, int64_t window, float *o) {
  int group = Hq / Hkv;
  double scale = 1.0 / sqrt((double)D);
  double *p = malloc(sizeof(double) * (size_t)(L > 0 ? L : 1));
  double *acc = malloc(sizeof(double) * (size_t)D);
  for (int64_t t = 0; t < T; t++) {
    int64_t qp = qpos0 + t;
    int64_t lo = window > 0 ? qp - window + 1 : 0; /* first visible position */
    if (lo < kpos0) lo = kpos0;
    int64_t j0 = lo - kpos0, j1 = qp - kpos0; /* key rows j0..j1 */
    if (j1 >= L) j1 = L - 1;
    for (int h = 0; h < Hq; h++) {
      const float *qh = q + (t * Hq + h) * D;
      int kh = h / group;
      double mx = -INFINITY, sum = 0;
      for (int64_t j = j0; j <= j1; j++) {
        const float *kj = k + (j * Hkv + kh) * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)qh[d] * kj[d];
        p[j - j0] = s * scale;
        if (p[j - j0] > mx) mx = p[j - j0];
      }
      memset(acc, 0, sizeof(double) * (size_t)D);
      for (int64_t j = j0; j <= j1; j++) {
        double e = exp(p[j - j0] - mx);
        sum += e;
        const float *vj = v + (j * Hkv + kh) * D;
        for (int d = 0; d < D; d++) acc[d] += e * vj[d];
      }
      float *oh = o + (t * Hq + h) * D;
      for (int d = 0; d < D; d++) oh[d] = sum > 0 ? (float)(acc[d] / sum) : 0.0f;
    }
  }
  free(p);
  free(acc);
}
