/*
** feature.c -- feature maps on queries and keys, forward and backward, in
** float64 (the op layer applies them before either CPU algorithm).
*/
#include "feature.h"

#include <math.h>
#include <string.h>

#define L2NORM_EPS 1e-6

int64_t fla_feature_dim(fla_ir_feature f, int64_t d) {
  return f == FLA_FEATURE_TAYLOR2 ? 1 + d + d * d : d;
}

const char *fla_feature_name(fla_ir_feature f) {
  switch (f) {
  case FLA_FEATURE_IDENTITY: return "identity";
  case FLA_FEATURE_L2NORM: return "l2norm";
  case FLA_FEATURE_ELU1: return "elu1";
  case FLA_FEATURE_RELU: return "relu";
  case FLA_FEATURE_SILU: return "silu";
  case FLA_FEATURE_TAYLOR2: return "taylor2";
  }
  return "?";
}

static double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Element-wise maps: y = f(x), and f'(x). */
static double elementwise_(fla_ir_feature f, double x, double *deriv) {
  switch (f) {
  case FLA_FEATURE_ELU1:          /* elu(x) + 1 = x + 1 (x > 0), e^x (x <= 0) */
    if (x > 0) { *deriv = 1; return x + 1; }
    *deriv = exp(x);
    return *deriv;
  case FLA_FEATURE_RELU:
    *deriv = x > 0 ? 1 : 0;
    return x > 0 ? x : 0;
  case FLA_FEATURE_SILU: {        /* x s(x); d = s(x) (1 + x (1 - s(x))) */
    double s = sigmoid_(x);
    *deriv = s * (1 + x * (1 - s));
    return x * s;
  }
  default:
    *deriv = 1;
    return x;
  }
}

/* Taylor map of Based: phi(x) = [1, x / d^(1/4), vec(x x^T) / sqrt(2 d)], so
** phi(q) . phi(k) = 1 + q.k / sqrt(d) + (q.k)^2 / (2 d), the 2nd-order Taylor
** expansion of exp(q.k / sqrt(d)). */
static void taylor2_forward_(int64_t d, const double *x, double *y) {
  double c1 = 1.0 / sqrt(sqrt((double)d)), c2 = 1.0 / sqrt(2.0 * (double)d);
  y[0] = 1;
  for (int64_t i = 0; i < d; i++) y[1 + i] = x[i] * c1;
  for (int64_t i = 0; i < d; i++)
    for (int64_t j = 0; j < d; j++) y[1 + d + i * d + j] = x[i] * x[j] * c2;
}

/* dx_i = c1 dy_{1+i} + c2 sum_j (dy_{ij} + dy_{ji}) x_j */
static void taylor2_backward_(int64_t d, const double *x, const double *dy, double *dx) {
  double c1 = 1.0 / sqrt(sqrt((double)d)), c2 = 1.0 / sqrt(2.0 * (double)d);
  const double *dy2 = dy + 1 + d;
  for (int64_t i = 0; i < d; i++) {
    double acc = 0;
    for (int64_t j = 0; j < d; j++) acc += (dy2[i * d + j] + dy2[j * d + i]) * x[j];
    dx[i] = c1 * dy[1 + i] + c2 * acc;
  }
}

/* y = x r, r = 1 / sqrt(|x|^2 + eps); dx = r (dy - y (y . dy)) */
static void l2norm_row_(int64_t d, const double *x, double *y, const double *dy, double *dx) {
  double ss = 0;
  for (int64_t i = 0; i < d; i++) ss += x[i] * x[i];
  double r = 1.0 / sqrt(ss + L2NORM_EPS);
  if (!dy) {
    for (int64_t i = 0; i < d; i++) y[i] = x[i] * r;
    return;
  }
  double ydy = 0;
  for (int64_t i = 0; i < d; i++) ydy += x[i] * r * dy[i];
  for (int64_t i = 0; i < d; i++) dx[i] = r * (dy[i] - x[i] * r * ydy);
}

void fla_feature_forward(fla_ir_feature f, int64_t rows, int64_t d, const double *x, double *y) {
  int64_t dout = fla_feature_dim(f, d);
  for (int64_t r = 0; r < rows; r++) {
    const double *xr = x + r * d;
    double *yr = y + r * dout;
    if (f == FLA_FEATURE_TAYLOR2) {
      taylor2_forward_(d, xr, yr);
    } else if (f == FLA_FEATURE_L2NORM) {
      l2norm_row_(d, xr, yr, NULL, NULL);
    } else {
      double deriv;
      for (int64_t i = 0; i < d; i++) yr[i] = elementwise_(f, xr[i], &deriv);
    }
  }
}

void fla_feature_backward(fla_ir_feature f, int64_t rows, int64_t d, const double *x,
                          const double *dy, double *dx) {
  int64_t dout = fla_feature_dim(f, d);
  for (int64_t r = 0; r < rows; r++) {
    const double *xr = x + r * d, *dyr = dy + r * dout;
    double *dxr = dx + r * d;
    if (f == FLA_FEATURE_TAYLOR2) {
      taylor2_backward_(d, xr, dyr, dxr);
    } else if (f == FLA_FEATURE_L2NORM) {
      l2norm_row_(d, xr, NULL, dyr, dxr);
    } else {
      for (int64_t i = 0; i < d; i++) {
        double deriv;
        elementwise_(f, xr[i], &deriv);
        dxr[i] = deriv * dyr[i];
      }
    }
  }
}

/* Same maps as elementwise_, in float32: y = f(x), and f'(x) when wanted. */
static int elementwise_f32_ok_(fla_ir_feature f) {
  return f == FLA_FEATURE_IDENTITY || f == FLA_FEATURE_ELU1 || f == FLA_FEATURE_RELU ||
         f == FLA_FEATURE_SILU;
}

static float elementwise_f32_(fla_ir_feature f, float x, float *deriv) {
  switch (f) {
  case FLA_FEATURE_ELU1:
    if (x > 0) { *deriv = 1; return x + 1; }
    *deriv = expf(x);
    return *deriv;
  case FLA_FEATURE_RELU:
    *deriv = x > 0 ? 1.0f : 0.0f;
    return x > 0 ? x : 0;
  case FLA_FEATURE_SILU: {
    float sg = 1.0f / (1.0f + expf(-x));
    *deriv = sg * (1 + x * (1 - sg));
    return x * sg;
  }
  default:
    *deriv = 1;
    return x;
  }
}

int fla_feature_forward_f32(fla_ir_feature f, int64_t n, const float *x, float *y) {
  if (!elementwise_f32_ok_(f)) return 0;
  float deriv;
  for (int64_t i = 0; i < n; i++) y[i] = elementwise_f32_(f, x[i], &deriv);
  return 1;
}

int fla_feature_backward_f32(fla_ir_feature f, int64_t n, const float *x, const float *dy, float *dx) {
  if (!elementwise_f32_ok_(f)) return 0;
  for (int64_t i = 0; i < n; i++) {
    float deriv;
    elementwise_f32_(f, x[i], &deriv);
    dx[i] = deriv * dy[i];
  }
  return 1;
}
