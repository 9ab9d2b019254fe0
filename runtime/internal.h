/*
** internal.h -- what the library's own files share and users do not see:
** the context and tensor structs, error reporting, small helpers.
*/
#ifndef FLA_INTERNAL_H
#define FLA_INTERNAL_H

#include "fla.h"

#include <stdarg.h>

#define FLA_ERRMSG_MAX 2048

struct fla_cuda_ctx;             /* runtime/cuda/backend.c */
struct fla_ctx_tune;             /* tunedb/tune_ctx.c: its tuning databases */
struct fla_hip_ctx;              /* runtime/hip/backend.c */

struct fla_ctx {
  fla_backend backend;
  int nthreads;                 /* 0: all online processors */
  char errmsg[FLA_ERRMSG_MAX];
  struct fla_cuda_ctx *cuda;    /* the CUDA backend's state; NULL on the CPU */
  struct fla_hip_ctx *hip;      /* the HIP backend's state (runtime/hip/hip_backend.h) */
  char device_name[256];        /* fla_ctx_device_name */
  struct fla_ctx_tune *tune;    /* NULL until a database is asked for */
};

struct fla_tensor {
  fla_ctx *ctx;
  fla_dtype dtype;
  int ndim;
  int64_t shape[FLA_MAX_DIMS];
  int64_t numel;
  void *data;                   /* host memory; NULL for a device tensor */
  int owned;                    /* 1: data (or dptr) was allocated by fla_tensor_new */
  int device;                   /* 1: the elements live in device memory at dptr */
  uint64_t dptr;                /* CUdeviceptr of a device tensor */
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

/* ------------------------------------------------ device memory (CUDA) */
/* Implemented in runtime/cuda/backend.c. Every call makes the context's
** CUDA context current on the calling thread first, and reports failures
** with the driver's error string in ctx's message. */

/* Opens the CUDA backend for ctx: loads the driver and NVRTC, takes device
** $FLA_CUDA_DEVICE (default 0), retains its primary context and creates a
** stream. FLA_NODEVICE with the reason in err when impossible. */
fla_status fla_cuda_ctx_open(fla_ctx *ctx, char *err, size_t errlen);
/* Releases everything fla_cuda_ctx_open took (modules, scratch, stream,
** the primary context). NULL state allowed. */
void fla_cuda_ctx_close(fla_ctx *ctx);

/* Closes the context's tuning databases (tunedb/tune_ctx.c). */
void fla_ctx_tune_free(fla_ctx *ctx);

fla_status fla_cuda_mem_alloc(fla_ctx *ctx, size_t bytes, uint64_t *dptr);
void fla_cuda_mem_free(fla_ctx *ctx, uint64_t dptr);
fla_status fla_cuda_memset_d8(fla_ctx *ctx, uint64_t dptr, unsigned char v, size_t bytes);
fla_status fla_cuda_memset_d16(fla_ctx *ctx, uint64_t dptr, uint16_t v, size_t count);
fla_status fla_cuda_memset_d32(fla_ctx *ctx, uint64_t dptr, uint32_t v, size_t count);
fla_status fla_cuda_upload(fla_ctx *ctx, uint64_t dst, const void *src, size_t bytes);
fla_status fla_cuda_download(fla_ctx *ctx, void *dst, uint64_t src, size_t bytes);

/* ------------------------------------- device memory, either vendor */
/* runtime/gpu_mem.c: the calls above, or runtime/hip/backend.c's for a HIP
** context, chosen by ctx->backend. */
int fla_ctx_on_gpu(const fla_ctx *ctx); /* 1: CUDA or HIP; tensors live on the device */
fla_status fla_gpu_mem_alloc(fla_ctx *ctx, size_t bytes, uint64_t *dptr);
void fla_gpu_mem_free(fla_ctx *ctx, uint64_t dptr);
fla_status fla_gpu_memset_d8(fla_ctx *ctx, uint64_t dptr, unsigned char v, size_t bytes);
fla_status fla_gpu_memset_d16(fla_ctx *ctx, uint64_t dptr, uint16_t v, size_t count);
fla_status fla_gpu_memset_d32(fla_ctx *ctx, uint64_t dptr, uint32_t v, size_t count);
fla_status fla_gpu_upload(fla_ctx *ctx, uint64_t dst, const void *src, size_t bytes);
fla_status fla_gpu_download(fla_ctx *ctx, void *dst, uint64_t src, size_t bytes);

/* A host tensor whatever ctx's backend (for loaders that fill host memory
** and then move it with fla_tensor_to_backend). */
fla_status fla_tensor_new_host(fla_ctx *ctx, fla_dtype dtype, int ndim, const int64_t *shape,
                               fla_tensor **out);
/* When ctx runs on a GPU and *t is a host tensor: replaces *t by a device
** copy (the host tensor is freed). On error *t is freed and set to NULL. */
fla_status fla_tensor_to_backend(fla_ctx *ctx, fla_tensor **t);

#endif
