/*
** tensor.c -- tensors (allocate, wrap, copy, fill) in host memory or, on a
** GPU context (CUDA or HIP), in device memory (through runtime/gpu_mem.c), and the
** scalar and bulk conversions between the storage dtypes.
**
** The half-precision conversions are written with integer bit operations
** rather than the compiler's _Float16 so that they behave the same on every
** compiler and host, and so that rounding is exactly IEEE round-to-nearest-even.
*/
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ dtypes */

static int dtype_valid(int dtype) { return dtype >= FLA_F32 && dtype <= FLA_I64; }

static int dtype_is_float(fla_dtype d) {
  return d == FLA_F32 || d == FLA_F64 || d == FLA_BF16 || d == FLA_F16;
}

static int dtype_is_int(fla_dtype d) { return d == FLA_I32 || d == FLA_I64; }

size_t fla_dtype_size(fla_dtype dtype) {
  switch (dtype) {
  case FLA_F32: return 4;
  case FLA_F64: return 8;
  case FLA_BF16: return 2;
  case FLA_F16: return 2;
  case FLA_I32: return 4;
  case FLA_I64: return 8;
  }
  return 0;
}

const char *fla_dtype_name(fla_dtype dtype) {
  switch (dtype) {
  case FLA_F32: return "f32";
  case FLA_F64: return "f64";
  case FLA_BF16: return "bf16";
  case FLA_F16: return "f16";
  case FLA_I32: return "i32";
  case FLA_I64: return "i64";
  }
  return "?";
}

/* ------------------------------------------------------ scalar conversions */

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

float fla_bf16_to_f32(uint16_t x) { return bits_f32((uint32_t)x << 16); }

uint16_t fla_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  /* NaN: truncating could clear every mantissa bit and make it an infinity,
  ** so keep the sign and force the quiet bit. */
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
  /* Round to nearest even: add just under half an ulp, plus one more when the
  ** kept part is odd. A carry out of the mantissa bumps the exponent, which
  ** is also how the largest finite values correctly round up to infinity. */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float fla_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) /* inf and NaN keep their payload bits */
    return bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    /* Zero or subnormal: mant * 2^-24 is exact in float, so let the FPU
    ** normalise it instead of counting leading zeros by hand. */
    float mag = (float)mant * 0x1p-24f;
    return sign ? -mag : mag;
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13)); /* 112 = 127 - 15 */
}

/* Rounds `full` (an integer significand) right by `shift` bits, to nearest even. */
static uint32_t shift_round_even(uint32_t full, int shift) {
  uint32_t kept = full >> shift;
  uint32_t rem = full & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (kept & 1u))) kept++;
  return kept;
}

uint16_t fla_f32_to_f16(float x) {
  uint32_t u = f32_bits(x);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t fexp = (u >> 23) & 0xffu;
  uint32_t mant = u & 0x7fffffu;
  if (fexp == 0xff) {
    if (mant == 0) return sign | 0x7c00u;
    /* NaN: keep the top payload bits, force the quiet bit so it stays NaN. */
    return (uint16_t)(sign | 0x7e00u | (mant >> 13));
  }
  int e = (int)fexp - 127;
  if (e > 15) return sign | 0x7c00u; /* beyond 65504 + half an ulp: inf */
  if (e >= -14) {
    /* Normal half. The rounding carry may ripple into the exponent, and from
    ** exponent 30 into 31 with a zero mantissa: exactly infinity. */
    uint32_t h = ((uint32_t)(e + 15) << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
  }
  /* Subnormal half: the value in units of 2^-24 is (2^23 + mant) * 2^(e+1).
  ** Below 2^-25 (shift > 24) it rounds to zero; exactly 2^-25 is a tie that
  ** rounds to the even zero, which shift_round_even also gives. A result of
  ** 0x400 is the smallest normal, which is again the right encoding. */
  int shift = -(e + 1);
  if (shift > 24) return sign;
  return (uint16_t)(sign | shift_round_even(0x800000u | mant, shift));
}

/* Narrows a double to float with round-to-odd (truncate, then set the last bit
** when inexact). Rounding that float again to bf16 or f16 then gives exactly
** the correctly rounded result, which double -> float -> half with two
** round-to-nearest steps does not (a double rounding error on near-ties). */
static float f64_to_f32_odd(double d) {
  float f = (float)d;
  if (isnan(d) || (double)f == d) return f;
  uint32_t u = f32_bits(f);
  if (fabs((double)f) > fabs(d)) u--; /* rounded away from zero: step back */
  return bits_f32(u | 1u);
}

/* --------------------------------------------------------- bulk conversion */

#define CONVERT_BLOCK 256

/* Reads m elements of a non-f64 float dtype as float: exact. */
static void load_f32_block(float *tmp, const void *src, fla_dtype sd, int64_t off,
                           int64_t m) {
  switch (sd) {
  case FLA_F32: memcpy(tmp, (const float *)src + off, (size_t)m * sizeof(float)); break;
  case FLA_BF16:
    for (int64_t i = 0; i < m; i++) tmp[i] = fla_bf16_to_f32(((const uint16_t *)src)[off + i]);
    break;
  case FLA_F16:
    for (int64_t i = 0; i < m; i++) tmp[i] = fla_f16_to_f32(((const uint16_t *)src)[off + i]);
    break;
  case FLA_F64: /* only reached when the destination is bf16 or f16 */
    for (int64_t i = 0; i < m; i++) tmp[i] = f64_to_f32_odd(((const double *)src)[off + i]);
    break;
  default: break;
  }
}

static void store_f32_block(void *dst, fla_dtype dd, int64_t off, const float *tmp,
                            int64_t m) {
  switch (dd) {
  case FLA_F32: memcpy((float *)dst + off, tmp, (size_t)m * sizeof(float)); break;
  case FLA_F64:
    for (int64_t i = 0; i < m; i++) ((double *)dst)[off + i] = tmp[i];
    break;
  case FLA_BF16:
    for (int64_t i = 0; i < m; i++) ((uint16_t *)dst)[off + i] = fla_f32_to_bf16(tmp[i]);
    break;
  case FLA_F16:
    for (int64_t i = 0; i < m; i++) ((uint16_t *)dst)[off + i] = fla_f32_to_f16(tmp[i]);
    break;
  default: break;
  }
}

/* Every float pair goes through a small float buffer: reads of f32, bf16 and
** f16 are exact, and f64 is read round-to-odd when it is headed for a half
** type, so each pair is rounded once, correctly. f64 -> f32 is the plain cast. */
static void convert_float(void *dst, fla_dtype dd, const void *src, fla_dtype sd,
                          int64_t n) {
  if (sd == FLA_F64 && dd == FLA_F32) {
    for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = (float)((const double *)src)[i];
    return;
  }
  if (sd == FLA_F32 && dd == FLA_F64) { /* exact: no block round trip */
    for (int64_t i = 0; i < n; i++) ((double *)dst)[i] = ((const float *)src)[i];
    return;
  }
  float tmp[CONVERT_BLOCK];
  for (int64_t off = 0; off < n; off += CONVERT_BLOCK) {
    int64_t m = n - off < CONVERT_BLOCK ? n - off : CONVERT_BLOCK;
    load_f32_block(tmp, src, sd, off, m);
    store_f32_block(dst, dd, off, tmp, m);
  }
}

/* i32 <-> i64. Narrowing saturates: fla_convert has no error path for a value
** out of range, and a clamped index is easier to notice than a wrapped one. */
static void convert_int(void *dst, fla_dtype dd, const void *src, int64_t n) {
  if (dd == FLA_I64) {
    for (int64_t i = 0; i < n; i++) ((int64_t *)dst)[i] = ((const int32_t *)src)[i];
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t v = ((const int64_t *)src)[i];
    ((int32_t *)dst)[i] = v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
  }
}

int fla_convert(void *dst, fla_dtype dst_dtype, const void *src, fla_dtype src_dtype,
                int64_t n) {
  if (!dtype_valid(dst_dtype) || !dtype_valid(src_dtype) || n < 0) return -1;
  int both_float = dtype_is_float(dst_dtype) && dtype_is_float(src_dtype);
  int both_int = dtype_is_int(dst_dtype) && dtype_is_int(src_dtype);
  if (!both_float && !both_int) return -1;
  if (n == 0) return 0;
  if (dst_dtype == src_dtype)
    memcpy(dst, src, (size_t)n * fla_dtype_size(src_dtype));
  else if (both_float)
    convert_float(dst, dst_dtype, src, src_dtype, n);
  else
    convert_int(dst, dst_dtype, src, n);
  return 0;
}

/* ------------------------------------------------------- tensors: creation */

/* Checks dtype, ndim and shape, and computes numel and the byte size without
** overflow. `fn` names the public function in messages. */
static fla_status check_shape(fla_ctx *ctx, const char *fn, int dtype, int ndim,
                              const int64_t *shape, int64_t *numel, size_t *bytes) {
  char sbuf[256];
  if (!dtype_valid(dtype))
    return fla_set_error(ctx, FLA_INVALID, "%s: dtype %d is not a valid fla_dtype", fn, dtype);
  if (ndim < 0 || ndim > FLA_MAX_DIMS)
    return fla_set_error(ctx, FLA_INVALID, "%s: ndim %d is outside 0..%d", fn, ndim,
                         FLA_MAX_DIMS);
  if (ndim > 0 && !shape)
    return fla_set_error(ctx, FLA_INVALID, "%s: shape is NULL but ndim is %d", fn, ndim);
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0)
      return fla_set_error(ctx, FLA_INVALID, "%s: dimension %d of shape %s is %lld, negative",
                           fn, i, fla_shape_str(sbuf, sizeof sbuf, ndim, shape),
                           (long long)shape[i]);
  /* A zero dimension makes numel 0 whatever follows, so overflow of the other
  ** dimensions' product does not matter then. */
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) n = 0;
  for (int i = 0; i < ndim && n != 0; i++) {
    if (n > INT64_MAX / shape[i])
      return fla_set_error(ctx, FLA_INVALID, "%s: shape %s has more elements than fit in int64",
                           fn, fla_shape_str(sbuf, sizeof sbuf, ndim, shape));
    n *= shape[i];
  }
  size_t esize = fla_dtype_size((fla_dtype)dtype);
  if ((uint64_t)n > (uint64_t)PTRDIFF_MAX / esize)
    return fla_set_error(ctx, FLA_INVALID, "%s: shape %s of %s needs more bytes than fit in memory",
                         fn, fla_shape_str(sbuf, sizeof sbuf, ndim, shape),
                         fla_dtype_name((fla_dtype)dtype));
  *numel = n;
  *bytes = (size_t)n * esize;
  return FLA_OK;
}

/* Allocates the tensor struct and fills in everything but data and owned. */
static fla_status tensor_header(fla_ctx *ctx, const char *fn, fla_dtype dtype, int ndim,
                                const int64_t *shape, fla_tensor **out, size_t *bytes) {
  *out = NULL;
  if (!ctx) return FLA_INVALID;
  int64_t numel;
  fla_status st = check_shape(ctx, fn, (int)dtype, ndim, shape, &numel, bytes);
  if (st != FLA_OK) return st;
  fla_tensor *t = calloc(1, sizeof *t);
  if (!t) return fla_set_error(ctx, FLA_NOMEM, "%s: cannot allocate a tensor", fn);
  t->ctx = ctx;
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->numel = numel;
  *out = t;
  return FLA_OK;
}

/* A host tensor on any context. */
fla_status fla_tensor_new_host(fla_ctx *ctx, fla_dtype dtype, int ndim, const int64_t *shape,
                               fla_tensor **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_tensor_new: out is NULL");
  *out = NULL;
  size_t bytes;
  fla_tensor *t;
  fla_status st = tensor_header(ctx, "fla_tensor_new", dtype, ndim, shape, &t, &bytes);
  if (st != FLA_OK) return st;
  /* At least one byte so that an empty tensor still has a non-NULL pointer
  ** (calloc(0) may return NULL, which callers would take for a failure). */
  t->data = calloc(1, bytes ? bytes : 1);
  if (!t->data) {
    char sbuf[256];
    free(t);
    return fla_set_error(ctx, FLA_NOMEM, "fla_tensor_new: cannot allocate %zu bytes for %s %s",
                         bytes, fla_dtype_name(dtype),
                         fla_shape_str(sbuf, sizeof sbuf, ndim, shape));
  }
  t->owned = 1;
  *out = t;
  return FLA_OK;
}

static fla_status tensor_new_device(fla_ctx *ctx, fla_dtype dtype, int ndim, const int64_t *shape,
                                    fla_tensor **out) {
  size_t bytes;
  fla_tensor *t;
  fla_status st = tensor_header(ctx, "fla_tensor_new", dtype, ndim, shape, &t, &bytes);
  if (st != FLA_OK) return st;
  t->device = 1;
  st = fla_gpu_mem_alloc(ctx, bytes, &t->dptr);
  if (st == FLA_OK) st = fla_gpu_memset_d8(ctx, t->dptr, 0, bytes);
  if (st != FLA_OK) {
    char sbuf[256], why[FLA_ERRMSG_MAX];
    snprintf(why, sizeof why, "%s", ctx->errmsg);
    if (t->dptr) fla_gpu_mem_free(ctx, t->dptr);
    free(t);
    return fla_set_error(ctx, st, "fla_tensor_new: %s %s (%zu bytes) on the device: %s",
                         fla_dtype_name(dtype), fla_shape_str(sbuf, sizeof sbuf, ndim, shape),
                         bytes, why);
  }
  t->owned = 1;
  *out = t;
  return FLA_OK;
}

fla_status fla_tensor_new(fla_ctx *ctx, fla_dtype dtype, int ndim, const int64_t *shape,
                          fla_tensor **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_tensor_new: out is NULL");
  *out = NULL;
  if (fla_ctx_on_gpu(ctx)) return tensor_new_device(ctx, dtype, ndim, shape, out);
  return fla_tensor_new_host(ctx, dtype, ndim, shape, out);
}

fla_status fla_tensor_to_backend(fla_ctx *ctx, fla_tensor **t) {
  if (!ctx || !*t || !fla_ctx_on_gpu(ctx) || (*t)->device) return FLA_OK;
  fla_tensor *host = *t, *dev = NULL;
  fla_status st = tensor_new_device(ctx, host->dtype, host->ndim, host->shape, &dev);
  if (st == FLA_OK)
    st = fla_gpu_upload(ctx, dev->dptr, host->data, (size_t)host->numel * fla_dtype_size(host->dtype));
  fla_tensor_free(host);
  if (st != FLA_OK) {
    fla_tensor_free(dev);
    dev = NULL;
  }
  *t = dev;
  return st;
}

fla_status fla_tensor_wrap(fla_ctx *ctx, fla_dtype dtype, int ndim, const int64_t *shape,
                           void *data, fla_tensor **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_tensor_wrap: out is NULL");
  *out = NULL;
  size_t bytes;
  fla_tensor *t;
  if (fla_ctx_on_gpu(ctx))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_tensor_wrap: wraps host memory, but the context runs on the GPU "
                         "(use fla_tensor_wrap_device)");
  fla_status st = tensor_header(ctx, "fla_tensor_wrap", dtype, ndim, shape, &t, &bytes);
  if (st != FLA_OK) return st;
  if (!data && bytes > 0) {
    free(t);
    return fla_set_error(ctx, FLA_INVALID, "fla_tensor_wrap: data is NULL for %zu bytes", bytes);
  }
  t->data = data;
  t->owned = 0;
  *out = t;
  return FLA_OK;
}

fla_status fla_tensor_wrap_device(fla_ctx *ctx, fla_dtype dtype, int ndim, const int64_t *shape,
                                  uint64_t dptr, fla_tensor **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_tensor_wrap_device: out is NULL");
  *out = NULL;
  if (ctx && !fla_ctx_on_gpu(ctx))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_tensor_wrap_device: the context does not run on a GPU (CUDA or HIP)");
  size_t bytes;
  fla_tensor *t;
  fla_status st = tensor_header(ctx, "fla_tensor_wrap_device", dtype, ndim, shape, &t, &bytes);
  if (st != FLA_OK) return st;
  if (!dptr && bytes > 0) {
    free(t);
    return fla_set_error(ctx, FLA_INVALID, "fla_tensor_wrap_device: dptr is 0 for %zu bytes", bytes);
  }
  t->device = 1;
  t->dptr = dptr;
  t->owned = 0;
  *out = t;
  return FLA_OK;
}

void fla_tensor_free(fla_tensor *t) {
  if (!t) return;
  if (t->owned && t->device) fla_gpu_mem_free(t->ctx, t->dptr);
  else if (t->owned) free(t->data);
  free(t);
}

/* ------------------------------------------------------- tensors: access */

fla_dtype fla_tensor_dtype(const fla_tensor *t) { return t ? t->dtype : (fla_dtype)-1; }
int fla_tensor_ndim(const fla_tensor *t) { return t ? t->ndim : 0; }
const int64_t *fla_tensor_shape(const fla_tensor *t) { return t ? t->shape : NULL; }
int64_t fla_tensor_numel(const fla_tensor *t) { return t ? t->numel : 0; }
void *fla_tensor_data(fla_tensor *t) { return t ? t->data : NULL; }
int fla_tensor_is_device(const fla_tensor *t) { return t ? t->device : 0; }
uint64_t fla_tensor_device_ptr(const fla_tensor *t) { return t && t->device ? t->dptr : 0; }

/* ------------------------------------------------ tensors: copy and fill */

/* Checks the common arguments of copy_from/copy_to. `what` is "src" or "dst". */
static fla_status check_copy(fla_ctx *ctx, const char *fn, const fla_tensor *t,
                             const void *buf, const char *what, fla_dtype buf_dtype,
                             int64_t n) {
  char sbuf[256];
  if (!t) return fla_set_error(ctx, FLA_INVALID, "%s: tensor is NULL", fn);
  if (!dtype_valid((int)buf_dtype))
    return fla_set_error(ctx, FLA_INVALID, "%s: %s dtype %d is not a valid fla_dtype", fn,
                         what, (int)buf_dtype);
  if (n != t->numel)
    return fla_set_error(ctx, FLA_SHAPE, "%s: n is %lld but the %s %s tensor has %lld elements",
                         fn, (long long)n, fla_dtype_name(t->dtype),
                         fla_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape),
                         (long long)t->numel);
  if (!buf && n > 0) return fla_set_error(ctx, FLA_INVALID, "%s: %s is NULL", fn, what);
  int ok = (dtype_is_float(t->dtype) && dtype_is_float(buf_dtype)) ||
           (dtype_is_int(t->dtype) && dtype_is_int(buf_dtype));
  if (!ok)
    return fla_set_error(ctx, FLA_INVALID,
                         "%s: cannot convert between %s and %s (floats convert only to floats, "
                         "integers only to integers)",
                         fn, fla_dtype_name(t->dtype), fla_dtype_name(buf_dtype));
  return FLA_OK;
}

fla_status fla_tensor_copy_from(fla_ctx *ctx, fla_tensor *t, const void *src,
                                fla_dtype src_dtype, int64_t n) {
  if (!ctx && t) ctx = t->ctx; /* so the message is still kept somewhere */
  fla_status st = check_copy(ctx, "fla_tensor_copy_from", t, src, "src", src_dtype, n);
  if (st != FLA_OK) return st;
  if (t->device) {
    if (n == 0) return FLA_OK;
    size_t bytes = (size_t)n * fla_dtype_size(t->dtype);
    const void *from = src;
    void *tmp = NULL;
    if (src_dtype != t->dtype) {
      if (!(tmp = malloc(bytes)))
        return fla_set_error(ctx, FLA_NOMEM, "fla_tensor_copy_from: cannot allocate %zu bytes", bytes);
      fla_convert(tmp, t->dtype, src, src_dtype, n);
      from = tmp;
    }
    st = fla_gpu_upload(t->ctx, t->dptr, from, bytes);
    free(tmp);
    if (st != FLA_OK && ctx != t->ctx) fla_set_error(ctx, st, "%s", fla_errmsg(t->ctx));
    return st;
  }
  if (n > 0 && fla_convert(t->data, t->dtype, src, src_dtype, n) != 0)
    return fla_set_error(ctx, FLA_ERROR, "fla_tensor_copy_from: conversion failed");
  return FLA_OK;
}

fla_status fla_tensor_copy_to(fla_ctx *ctx, const fla_tensor *t, void *dst,
                              fla_dtype dst_dtype, int64_t n) {
  if (!ctx && t) ctx = t->ctx;
  fla_status st = check_copy(ctx, "fla_tensor_copy_to", t, dst, "dst", dst_dtype, n);
  if (st != FLA_OK) return st;
  if (t->device) {
    if (n == 0) return FLA_OK;
    size_t bytes = (size_t)n * fla_dtype_size(t->dtype);
    void *tmp = NULL;
    if (dst_dtype != t->dtype && !(tmp = malloc(bytes)))
      return fla_set_error(ctx, FLA_NOMEM, "fla_tensor_copy_to: cannot allocate %zu bytes", bytes);
    st = fla_gpu_download(t->ctx, tmp ? tmp : dst, t->dptr, bytes);
    if (st == FLA_OK && tmp) fla_convert(dst, dst_dtype, tmp, t->dtype, n);
    free(tmp);
    if (st != FLA_OK && ctx != t->ctx) fla_set_error(ctx, st, "%s", fla_errmsg(t->ctx));
    return st;
  }
  if (n > 0 && fla_convert(dst, dst_dtype, t->data, t->dtype, n) != 0)
    return fla_set_error(ctx, FLA_ERROR, "fla_tensor_copy_to: conversion failed");
  return FLA_OK;
}

/* The fill value as one element of an integer dtype: it must be a whole
** number in range, since silently truncating 0.5 to 0 would hide a mistake. */
static fla_status int_fill_value(fla_ctx *ctx, fla_dtype dtype, double value,
                                 unsigned char *elem) {
  double lo = dtype == FLA_I32 ? -2147483648.0 : -9223372036854775808.0;
  double hi = dtype == FLA_I32 ? 2147483648.0 : 9223372036854775808.0; /* exclusive */
  if (!(value >= lo && value < hi) || value != floor(value))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_tensor_fill: %g is not a whole number in the range of %s", value,
                         fla_dtype_name(dtype));
  if (dtype == FLA_I32) {
    int32_t v = (int32_t)value;
    memcpy(elem, &v, sizeof v);
  } else {
    int64_t v = (int64_t)value;
    memcpy(elem, &v, sizeof v);
  }
  return FLA_OK;
}

fla_status fla_tensor_fill(fla_ctx *ctx, fla_tensor *t, double value) {
  if (!ctx && t) ctx = t->ctx;
  if (!t) return fla_set_error(ctx, FLA_INVALID, "fla_tensor_fill: tensor is NULL");
  unsigned char elem[8];
  size_t esize = fla_dtype_size(t->dtype);
  if (dtype_is_int(t->dtype)) {
    fla_status st = int_fill_value(ctx, t->dtype, value, elem);
    if (st != FLA_OK) return st;
  } else {
    fla_convert(elem, t->dtype, &value, FLA_F64, 1); /* float pair: cannot fail */
  }
  if (t->device) {
    fla_status st;
    if (esize == 4) {
      uint32_t word;
      memcpy(&word, elem, 4);
      st = fla_gpu_memset_d32(t->ctx, t->dptr, word, (size_t)t->numel);
    } else if (esize == 2) {
      uint16_t half;
      memcpy(&half, elem, 2);
      st = fla_gpu_memset_d16(t->ctx, t->dptr, half, (size_t)t->numel);
    } else {
      unsigned char *buf = malloc((size_t)t->numel * esize + 1);
      if (!buf) return fla_set_error(ctx, FLA_NOMEM, "fla_tensor_fill: out of host memory for staging");
      for (int64_t i = 0; i < t->numel; i++) memcpy(buf + (size_t)i * esize, elem, esize);
      st = fla_gpu_upload(t->ctx, t->dptr, buf, (size_t)t->numel * esize);
      free(buf);
    }
    if (st != FLA_OK && ctx != t->ctx) fla_set_error(ctx, st, "%s", fla_errmsg(t->ctx));
    return st;
  }
  unsigned char *p = t->data;
  for (int64_t i = 0; i < t->numel; i++) memcpy(p + (size_t)i * esize, elem, esize);
  return FLA_OK;
}
