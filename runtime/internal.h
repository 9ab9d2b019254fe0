/*
** internal.h -- what the library's own files share and users do not see:
** the context and tensor structs, error reporting, small helpers.
*/
#ifndef FLA_INTERNAL_H
#define FLA_INTERNAL_H

#include "fla.h"

#include <stdarg.h>

#define FLA_ERRMSG_MAX 2048

struct fla_ctx {
  fla_backend backend;
  int nthreads;                 /* 0: all online processors */
  char errmsg[FLA_ERRMSG_MAX];
};

struct fla_tensor {
  fla_ctx *ctx;
  fla_dtype dtype;
  int ndim;
  int64_t shape[FLA_MAX_DIMS];
  int64_t numel;
  void *data;
  int owned;                    /* 1: data was allocated by fla_tensor_new */
};

/* Records a formatted message in ctx (when not NULL) and returns status, so
** callers write `return fla_set_error(ctx, FLA_SHAPE, "...", ...);`. */
fla_status fla_set_error(fla_ctx *ctx, fla_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void fla_clear_error(fla_ctx *ctx);

/* Number of worker threads a CPU loop should use. */
int fla_ctx_threads(const fla_ctx *ctx);

/* Runs fn(arg, i) for i in [0, count) on up to nthreads threads (the calling
** thread included). Returns the first non-zero value any call returned. */
int fla_parallel_for(int nthreads, int64_t count,
                     int (*fn)(void *arg, int64_t i), void *arg);

/* Formats a shape as "[2, 77, 2, 32]" into buf. */
const char *fla_shape_str(char *buf, size_t len, int ndim, const int64_t *shape);

/* Scalar conversions between storage formats and float. */
float    fla_bf16_to_f32(uint16_t x);
uint16_t fla_f32_to_bf16(float x);
float    fla_f16_to_f32(uint16_t x);
uint16_t fla_f32_to_f16(float x);

/* Converts n elements between dtypes (float<->float, int<->int). Returns 0,
** or -1 when the pair is not convertible. */
int fla_convert(void *dst, fla_dtype dst_dtype, const void *src,
                fla_dtype src_dtype, int64_t n);

#endif
