/*
** test_tensor.c -- tensors (new, wrap, copy, fill) and the dtype conversions.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* ------------------------------------------------------------- allocation */

START_TEST(test_dtype_size_name) {
  ck_assert_uint_eq(fla_dtype_size(FLA_F32), 4);
  ck_assert_uint_eq(fla_dtype_size(FLA_F64), 8);
  ck_assert_uint_eq(fla_dtype_size(FLA_BF16), 2);
  ck_assert_uint_eq(fla_dtype_size(FLA_F16), 2);
  ck_assert_uint_eq(fla_dtype_size(FLA_I32), 4);
  ck_assert_uint_eq(fla_dtype_size(FLA_I64), 8);
  ck_assert_uint_eq(fla_dtype_size((fla_dtype)42), 0);
  ck_assert_str_eq(fla_dtype_name(FLA_BF16), "bf16");
  ck_assert_str_eq(fla_dtype_name(FLA_I64), "i64");
  ck_assert_str_eq(fla_dtype_name((fla_dtype)-1), "?");
}
END_TEST

START_TEST(test_new_basic) {
  fla_ctx *ctx = th_cpu_ctx();
  int64_t shape[3] = {2, 3, 4};
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 3, shape, &t), FLA_OK);
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(fla_tensor_dtype(t), FLA_F32);
  ck_assert_int_eq(fla_tensor_ndim(t), 3);
  ck_assert_int_eq(fla_tensor_numel(t), 24);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(fla_tensor_shape(t)[i], shape[i]);
  const float *d = fla_tensor_data(t);
  for (int i = 0; i < 24; i++) ck_assert(d[i] == 0.0f);
  fla_tensor_free(t);
  fla_tensor_free(NULL);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_new_scalar_and_empty) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F64, 0, NULL, &t), FLA_OK);
  ck_assert_int_eq(fla_tensor_numel(t), 1);
  ck_assert_int_eq(fla_tensor_ndim(t), 0);
  fla_tensor_free(t);
  /* A zero dimension makes the tensor empty even when the rest would overflow. */
  int64_t shape[3] = {INT64_MAX, 0, INT64_MAX};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_I64, 3, shape, &t), FLA_OK);
  ck_assert_int_eq(fla_tensor_numel(t), 0);
  ck_assert_ptr_nonnull(fla_tensor_data(t));
  fla_tensor_free(t);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_wrap) {
  fla_ctx *ctx = th_cpu_ctx();
  int32_t buf[6] = {1, 2, 3, 4, 5, 6};
  int64_t shape[2] = {2, 3};
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_wrap(ctx, FLA_I32, 2, shape, buf, &t), FLA_OK);
  ck_assert_ptr_eq(fla_tensor_data(t), buf);
  ck_assert_int_eq(fla_tensor_numel(t), 6);
  fla_tensor_free(t); /* must not free buf (a stack array: ASan would object) */
  ck_assert_int_eq(buf[5], 6);
  ck_assert_int_eq(fla_tensor_wrap(ctx, FLA_I32, 2, shape, NULL, &t), FLA_INVALID);
  ck_assert_ptr_null(t);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "NULL"));
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_new_bad_args) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tensor *t = (fla_tensor *)&t; /* must be reset to NULL on failure */
  int64_t neg[3] = {2, -3, 4};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 3, neg, &t), FLA_INVALID);
  ck_assert_ptr_null(t);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "dimension 1"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "-3"));

  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 9, nine, &t), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "ndim 9"));
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, -1, nine, &t), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 8, nine, &t), FLA_OK);
  fla_tensor_free(t);

  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 2, NULL, &t), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_new(ctx, (fla_dtype)17, 1, nine, &t), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "dtype 17"));
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 1, nine, NULL), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "out is NULL"));
  ck_assert_int_eq(fla_tensor_new(NULL, FLA_F32, 1, nine, &t), FLA_INVALID);
  ck_assert_ptr_null(t);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_numel_overflow) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tensor *t = NULL;
  int64_t big[2] = {(int64_t)1 << 32, (int64_t)1 << 32};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 2, big, &t), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "more elements"));
  /* numel fits in int64 but its bytes do not fit in memory. */
  int64_t wide[1] = {(int64_t)1 << 62};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 1, wide, &t), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "bytes"));
  ck_assert_int_eq(fla_tensor_wrap(ctx, FLA_F64, 1, wide, &t, &t), FLA_INVALID);
  ck_assert_ptr_null(t);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------- bf16 */

START_TEST(test_bf16_values) {
  ck_assert_uint_eq(fla_f32_to_bf16(1.0f), 0x3f80);
  ck_assert_uint_eq(fla_f32_to_bf16(-2.0f), 0xc000);
  ck_assert_uint_eq(fla_f32_to_bf16(0.0f), 0x0000);
  ck_assert_uint_eq(fla_f32_to_bf16(-0.0f), 0x8000);
  /* 1 + 2^-8 lies halfway between 1 (even) and 1 + 2^-7: to even, down. */
  ck_assert_uint_eq(fla_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  /* 1 + 3*2^-8 lies halfway between 0x3f81 (odd) and 0x3f82: up. */
  ck_assert_uint_eq(fla_f32_to_bf16(1.0f + 0x3p-8f), 0x3f82);
  /* Just above the tie rounds up. */
  ck_assert_uint_eq(fla_f32_to_bf16(bits_f32(0x3f808001u)), 0x3f81);
  ck_assert_uint_eq(fla_f32_to_bf16(INFINITY), 0x7f80);
  ck_assert_uint_eq(fla_f32_to_bf16(-INFINITY), 0xff80);
  ck_assert_uint_eq(fla_f32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds to inf */
  /* A NaN whose payload is only in the low bits must not become infinity. */
  ck_assert(isnan(fla_bf16_to_f32(fla_f32_to_bf16(bits_f32(0x7f800001u)))));
  ck_assert(isnan(fla_bf16_to_f32(fla_f32_to_bf16(bits_f32(0xffc00000u)))));
  ck_assert(fla_bf16_to_f32(0x3f80) == 1.0f);
  ck_assert(fla_bf16_to_f32(0x0001) == 0x1p-133f); /* smallest bf16 subnormal */
}
END_TEST

/* Decodes every 16-bit pattern and encodes it back: exact, NaN stays NaN.
** Returns the first pattern that fails, or -1. (Check's ck_assert costs a
** pipe write per call, so hot loops count failures and assert once.) */
static long first_round_trip_failure(float (*dec)(uint16_t), uint16_t (*enc)(float)) {
  for (uint32_t h = 0; h < 0x10000u; h++) {
    float f = dec((uint16_t)h);
    uint16_t back = enc(f);
    int ok = isnan(f) ? isnan(dec(back)) : back == h;
    if (!ok) return (long)h;
  }
  return -1;
}

START_TEST(test_bf16_round_trip_all) {
  long bad = first_round_trip_failure(fla_bf16_to_f32, fla_f32_to_bf16);
  ck_assert_msg(bad < 0, "bf16 pattern 0x%04lx does not round-trip", bad);
}
END_TEST

/* ------------------------------------------------------------------- f16 */

START_TEST(test_f16_values) {
  ck_assert_uint_eq(fla_f32_to_f16(1.0f), 0x3c00);
  ck_assert_uint_eq(fla_f32_to_f16(-2.0f), 0xc000);
  ck_assert_uint_eq(fla_f32_to_f16(-0.0f), 0x8000);
  ck_assert_uint_eq(fla_f32_to_f16(65504.0f), 0x7bff);   /* max half */
  ck_assert_uint_eq(fla_f32_to_f16(65519.0f), 0x7bff);   /* below the tie */
  ck_assert_uint_eq(fla_f32_to_f16(65520.0f), 0x7c00);   /* tie: to even = inf */
  ck_assert_uint_eq(fla_f32_to_f16(1e6f), 0x7c00);       /* overflow */
  ck_assert_uint_eq(fla_f32_to_f16(-1e30f), 0xfc00);
  ck_assert_uint_eq(fla_f32_to_f16(INFINITY), 0x7c00);
  ck_assert_uint_eq(fla_f32_to_f16(-INFINITY), 0xfc00);
  /* 1 + 2^-11 is halfway between 1 (even) and 1 + 2^-10; 1 + 3*2^-11 between
  ** 0x3c01 (odd) and 0x3c02. */
  ck_assert_uint_eq(fla_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  ck_assert_uint_eq(fla_f32_to_f16(1.0f + 0x3p-11f), 0x3c02);
  /* Subnormals: 2^-24 is the smallest, 2^-25 a tie with zero (to even: 0),
  ** 3 * 2^-25 a tie between 1 and 2 units (to even: 2). */
  ck_assert_uint_eq(fla_f32_to_f16(0x1p-24f), 0x0001);
  ck_assert_uint_eq(fla_f32_to_f16(0x1p-25f), 0x0000);
  ck_assert_uint_eq(fla_f32_to_f16(0x1.0002p-25f), 0x0001);
  ck_assert_uint_eq(fla_f32_to_f16(0x3p-25f), 0x0002);
  ck_assert_uint_eq(fla_f32_to_f16(-0x1p-24f), 0x8001);
  ck_assert_uint_eq(fla_f32_to_f16(0x3ffp-24f), 0x03ff); /* largest subnormal */
  ck_assert_uint_eq(fla_f32_to_f16(0x7ffp-25f), 0x0400); /* rounds up into the normals */
  ck_assert_uint_eq(fla_f32_to_f16(0x1p-14f), 0x0400);   /* smallest normal */
  ck_assert_uint_eq(fla_f32_to_f16(1e-10f), 0x0000);
  ck_assert_uint_eq(fla_f32_to_f16(bits_f32(0x00000001u)), 0x0000); /* f32 subnormal */
  ck_assert(fla_f16_to_f32(0x0001) == 0x1p-24f);
  ck_assert(fla_f16_to_f32(0x8001) == -0x1p-24f);
  ck_assert(fla_f16_to_f32(0x7bff) == 65504.0f);
  ck_assert(isinf(fla_f16_to_f32(0x7c00)) && fla_f16_to_f32(0x7c00) > 0);
  ck_assert(isinf(fla_f16_to_f32(0xfc00)) && fla_f16_to_f32(0xfc00) < 0);
  ck_assert(isnan(fla_f16_to_f32(0x7c01)));
  ck_assert(isnan(fla_f16_to_f32(fla_f32_to_f16(NAN))));
  ck_assert(isnan(fla_f16_to_f32(fla_f32_to_f16(bits_f32(0x7f800001u)))));
  ck_assert(signbit(fla_f16_to_f32(0x8000)));
}
END_TEST

START_TEST(test_f16_round_trip_all) {
  long bad = first_round_trip_failure(fla_f16_to_f32, fla_f32_to_f16);
  ck_assert_msg(bad < 0, "f16 pattern 0x%04lx does not round-trip", bad);
}
END_TEST

/* The result of rounding x must be no farther than either neighbour, and on
** a tie must be the even one: checked against the decoder, which the
** round-trip test covers exhaustively. */
static int is_nearest(double x, uint16_t h, float (*dec)(uint16_t), uint16_t max_finite) {
  uint16_t mag = h & 0x7fffu;
  if (mag > max_finite) return 1; /* infinity: checked by the value tests */
  double d = fabs(x - dec(h));
  if (mag > 0) {
    double dn = fabs(x - dec((uint16_t)(h - 1)));
    if (!(d < dn || (d == dn && (h & 1u) == 0))) return 0;
  }
  if (mag < max_finite) {
    double up = fabs(x - dec((uint16_t)(h + 1)));
    if (!(d < up || (d == up && (h & 1u) == 0))) return 0;
  }
  return 1;
}

START_TEST(test_random_nearest) {
  th_rng r;
  th_seed(&r, 7);
  int n = th_quick() ? 20000 : 400000;
  for (int i = 0; i < n; i++) {
    /* Random f32 bit patterns with exponents around the half range. */
    uint32_t u = (uint32_t)(th_uniform(&r) * 4294967296.0);
    uint32_t e = 100u + (uint32_t)(th_uniform(&r) * 46.0); /* 2^-27 .. 2^18 */
    u = (u & 0x807fffffu) | (e << 23);
    float x = bits_f32(u);
    if (!is_nearest(x, fla_f32_to_f16(x), fla_f16_to_f32, 0x7bffu))
      ck_abort_msg("f32 %a: f16 0x%04x is not the nearest", (double)x, fla_f32_to_f16(x));
    uint32_t v = (uint32_t)(th_uniform(&r) * 4294967296.0);
    if (((v >> 23) & 0xffu) == 0xffu) continue;
    float y = bits_f32(v);
    if (!is_nearest(y, fla_f32_to_bf16(y), fla_bf16_to_f32, 0x7f7fu))
      ck_abort_msg("f32 %a: bf16 0x%04x is not the nearest", (double)y, fla_f32_to_bf16(y));
  }
}
END_TEST

/* ------------------------------------------------------------- fla_convert */

START_TEST(test_convert_pairs) {
  const fla_dtype fl[4] = {FLA_F32, FLA_F64, FLA_BF16, FLA_F16};
  /* Values every float dtype holds exactly, so any pair must round-trip them. */
  const double vals[6] = {0.0, 1.0, -2.5, 0.375, 1024.0, -0.0078125};
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      unsigned char sa[64], sb[64];
      double back[6];
      ck_assert_int_eq(fla_convert(sa, fl[a], vals, FLA_F64, 6), 0);
      ck_assert_int_eq(fla_convert(sb, fl[b], sa, fl[a], 6), 0);
      ck_assert_int_eq(fla_convert(back, FLA_F64, sb, fl[b], 6), 0);
      for (int i = 0; i < 6; i++) ck_assert(back[i] == vals[i]);
    }
  int32_t i32[3] = {-5, 0, INT32_MAX};
  int64_t i64[3];
  ck_assert_int_eq(fla_convert(i64, FLA_I64, i32, FLA_I32, 3), 0);
  ck_assert(i64[0] == -5 && i64[2] == INT32_MAX);
  int64_t wide[3] = {(int64_t)1 << 40, -((int64_t)1 << 40), 12};
  ck_assert_int_eq(fla_convert(i32, FLA_I32, wide, FLA_I64, 3), 0);
  ck_assert(i32[0] == INT32_MAX && i32[1] == INT32_MIN && i32[2] == 12); /* saturates */
  float f[3];
  ck_assert_int_eq(fla_convert(f, FLA_F32, i32, FLA_I32, 3), -1);
  ck_assert_int_eq(fla_convert(i32, FLA_I32, f, FLA_F32, 3), -1);
  ck_assert_int_eq(fla_convert(f, (fla_dtype)9, f, FLA_F32, 3), -1);
  ck_assert_int_eq(fla_convert(f, FLA_F32, f, FLA_F32, -1), -1);
}
END_TEST

START_TEST(test_convert_f64_single_rounding) {
  /* Just above a half-way point by 2^-40: a double -> float -> half path
  ** loses the 2^-40, sees an exact tie, and rounds down to even. The correct
  ** answer is up. */
  double d[2] = {1.0 + 0x1p-11 + 0x1p-40, 1.0 + 0x1p-8 + 0x1p-40};
  uint16_t h, b;
  ck_assert_int_eq(fla_convert(&h, FLA_F16, &d[0], FLA_F64, 1), 0);
  ck_assert_uint_eq(h, 0x3c01);
  ck_assert_int_eq(fla_convert(&b, FLA_BF16, &d[1], FLA_F64, 1), 0);
  ck_assert_uint_eq(b, 0x3f81);
  /* And a large block (more than the internal buffer) of f64 -> f16/bf16. */
  enum { N = 1000 };
  static double src[N];
  static uint16_t out[N];
  th_rng r;
  th_seed(&r, 3);
  for (int i = 0; i < N; i++) src[i] = th_normal(&r) * 100.0;
  ck_assert_int_eq(fla_convert(out, FLA_F16, src, FLA_F64, N), 0);
  for (int i = 0; i < N; i++)
    if (!is_nearest(src[i], out[i], fla_f16_to_f32, 0x7bffu)) ck_abort_msg("f16 of %a", src[i]);
  ck_assert_int_eq(fla_convert(out, FLA_BF16, src, FLA_F64, N), 0);
  for (int i = 0; i < N; i++)
    if (!is_nearest(src[i], out[i], fla_bf16_to_f32, 0x7f7fu)) ck_abort_msg("bf16 of %a", src[i]);
  double huge = 1e300, tiny = 1e-300, nan = NAN;
  ck_assert_int_eq(fla_convert(&h, FLA_F16, &huge, FLA_F64, 1), 0);
  ck_assert_uint_eq(h, 0x7c00);
  ck_assert_int_eq(fla_convert(&h, FLA_F16, &tiny, FLA_F64, 1), 0);
  ck_assert_uint_eq(h, 0x0000);
  ck_assert_int_eq(fla_convert(&b, FLA_BF16, &huge, FLA_F64, 1), 0);
  ck_assert_uint_eq(b, 0x7f80);
  ck_assert_int_eq(fla_convert(&b, FLA_BF16, &nan, FLA_F64, 1), 0);
  ck_assert(isnan(fla_bf16_to_f32(b)));
}
END_TEST

/* ------------------------------------------------------------ copy & fill */

START_TEST(test_copy_from_to) {
  fla_ctx *ctx = th_cpu_ctx();
  int64_t shape[2] = {2, 3};
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_BF16, 2, shape, &t), FLA_OK);
  const double src[6] = {1, 2, 3, -4, 0.5, 1.0 + 0x1p-8};
  ck_assert_int_eq(fla_tensor_copy_from(ctx, t, src, FLA_F64, 6), FLA_OK);
  float out[6];
  ck_assert_int_eq(fla_tensor_copy_to(ctx, t, out, FLA_F32, 6), FLA_OK);
  for (int i = 0; i < 5; i++) ck_assert(out[i] == (float)src[i]);
  ck_assert(out[5] == 1.0f); /* the tie rounded to even */

  ck_assert_int_eq(fla_tensor_copy_from(ctx, t, src, FLA_F64, 5), FLA_SHAPE);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "5"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "6 elements"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "[2, 3]"));
  ck_assert_int_eq(fla_tensor_copy_to(ctx, t, out, FLA_F32, 7), FLA_SHAPE);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "7"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "6 elements"));
  int32_t ints[6];
  ck_assert_int_eq(fla_tensor_copy_to(ctx, t, ints, FLA_I32, 6), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "bf16"));
  ck_assert_int_eq(fla_tensor_copy_from(ctx, t, NULL, FLA_F32, 6), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_copy_from(ctx, NULL, src, FLA_F64, 6), FLA_INVALID);
  /* A NULL ctx still reports, on the tensor's context. */
  ck_assert_int_eq(fla_tensor_copy_from(NULL, t, src, FLA_F64, 4), FLA_SHAPE);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "4"));
  fla_tensor_free(t);

  int64_t n3[1] = {3};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_I64, 1, n3, &t), FLA_OK);
  int32_t i3[3] = {7, -8, 9};
  ck_assert_int_eq(fla_tensor_copy_from(ctx, t, i3, FLA_I32, 3), FLA_OK);
  ck_assert(((int64_t *)fla_tensor_data(t))[1] == -8);
  fla_tensor_free(t);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_fill) {
  fla_ctx *ctx = th_cpu_ctx();
  int64_t shape[1] = {5};
  const fla_dtype fl[4] = {FLA_F32, FLA_F64, FLA_BF16, FLA_F16};
  for (int k = 0; k < 4; k++) {
    fla_tensor *t = NULL;
    double out[5];
    ck_assert_int_eq(fla_tensor_new(ctx, fl[k], 1, shape, &t), FLA_OK);
    ck_assert_int_eq(fla_tensor_fill(ctx, t, -1.5), FLA_OK);
    ck_assert_int_eq(fla_tensor_copy_to(ctx, t, out, FLA_F64, 5), FLA_OK);
    for (int i = 0; i < 5; i++) ck_assert(out[i] == -1.5);
    ck_assert_int_eq(fla_tensor_fill(ctx, t, NAN), FLA_OK);
    ck_assert_int_eq(fla_tensor_copy_to(ctx, t, out, FLA_F64, 5), FLA_OK);
    for (int i = 0; i < 5; i++) ck_assert(isnan(out[i]));
    fla_tensor_free(t);
  }
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_I32, 1, shape, &t), FLA_OK);
  ck_assert_int_eq(fla_tensor_fill(ctx, t, -7), FLA_OK);
  ck_assert_int_eq(((int32_t *)fla_tensor_data(t))[4], -7);
  ck_assert_int_eq(fla_tensor_fill(ctx, t, 0.5), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_fill(ctx, t, 3e9), FLA_INVALID);
  ck_assert_int_eq(fla_tensor_fill(ctx, t, NAN), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "i32"));
  ck_assert_int_eq(((int32_t *)fla_tensor_data(t))[4], -7); /* untouched on error */
  fla_tensor_free(t);
  ck_assert_int_eq(fla_tensor_fill(ctx, NULL, 1), FLA_INVALID);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *tensor_suite(void) {
  Suite *s = suite_create("tensor");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_dtype_size_name);
  tcase_add_test(tc, test_new_basic);
  tcase_add_test(tc, test_new_scalar_and_empty);
  tcase_add_test(tc, test_wrap);
  tcase_add_test(tc, test_new_bad_args);
  tcase_add_test(tc, test_numel_overflow);
  tcase_add_test(tc, test_bf16_values);
  tcase_add_test(tc, test_bf16_round_trip_all);
  tcase_add_test(tc, test_f16_values);
  tcase_add_test(tc, test_f16_round_trip_all);
  tcase_add_test(tc, test_random_nearest);
  tcase_add_test(tc, test_convert_pairs);
  tcase_add_test(tc, test_convert_f64_single_rounding);
  tcase_add_test(tc, test_copy_from_to);
  tcase_add_test(tc, test_fill);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(tensor_suite()); }
