/*
** templates/common/math.h -- vendor-neutral device math shared by the CUDA
** and (later) HIP templates: bf16 <-> f32 by bit manipulation, the feature
** maps of runtime/feature.c in f32, small integer helpers.
**
** Inlined by gen/generate.c after the #define block, before the backend's
** common file (templates/cuda/common.cuh); it includes nothing. Only plain
** C++ and functions that CUDA and HIP both provide (expf, expm1f, sqrtf,
** __uint_as_float, __float_as_uint) belong here: no warp intrinsics.
*/
#ifndef FLA_DEVICE
#define FLA_DEVICE __device__ __forceinline__
#endif

#define FLA_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* ---------------------------------------------------------------- bf16 bits */

/* bf16 is the top half of an f32: widening is exact. */
FLA_DEVICE float fla_bf16_bits_to_f32(unsigned short b) {
  return __uint_as_float(((unsigned int)b) << 16);
}

/* Round to nearest even (NaN stays a quiet NaN), as fla_tensor_copy_from does. */
FLA_DEVICE unsigned short fla_f32_to_bf16_bits(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

/* ------------------------------------------------------------ feature maps */

/* The fla_ir_feature values (gen/recipe_ir.h). */
#define FLA_FEAT_IDENTITY 0
#define FLA_FEAT_L2NORM 1
#define FLA_FEAT_ELU1 2
#define FLA_FEAT_RELU 3
#define FLA_FEAT_SILU 4
#define FLA_FEAT_TAYLOR2 5

#define FLA_L2NORM_EPS 1e-6f

/* Output size of feature map f on inputs of size d (fla_feature_dim). */
#define FLA_FEATURE_OUT(f, d) ((f) == FLA_FEAT_TAYLOR2 ? 1 + (d) + (d) * (d) : (d))

/* The element-wise maps: elu(x) + 1, relu, silu; identity otherwise. */
FLA_DEVICE float fla_feature_elem(int f, float x) {
  switch (f) {
  case FLA_FEAT_ELU1: return x > 0.f ? x + 1.f : expf(x);
  case FLA_FEAT_RELU: return x > 0.f ? x : 0.f;
  case FLA_FEAT_SILU: return x / (1.f + expf(-x));
  default: return x;
  }
}

/* Taylor map of Based: [1, x / d^(1/4), vec(x x^T) / sqrt(2 d)]. */
FLA_DEVICE float fla_taylor2_c1(int d) { return (float)(1.0 / sqrt(sqrt((double)d))); }
FLA_DEVICE float fla_taylor2_c2(int d) { return (float)(1.0 / sqrt(2.0 * (double)d)); }

/* Element idx of the Taylor map of row x (d values, any readable memory). */
FLA_DEVICE float fla_taylor2_elem(const float *x, int d, int idx, float c1, float c2) {
  if (idx == 0) return 1.f;
  if (idx <= d) return x[idx - 1] * c1;
  int e = idx - 1 - d;
  return x[e / d] * x[e % d] * c2;
}
