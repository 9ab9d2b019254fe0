/*
** gpu_mem.c -- device memory of a context whatever its GPU vendor: the
** calls of runtime/cuda/backend.c or runtime/hip/backend.c, chosen by the
** context's backend (internal.h). Tensors (runtime/tensor.c) and the op
** layers go through these, so a device tensor works the same on both.
*/
#include "internal.h"
#include "hip/hip_backend.h"

int fla_ctx_on_gpu(const fla_ctx *ctx) {
  return ctx && (ctx->backend == FLA_BACKEND_CUDA || ctx->backend == FLA_BACKEND_HIP);
}

static int hip_(const fla_ctx *ctx) { return ctx && ctx->backend == FLA_BACKEND_HIP; }

fla_status fla_gpu_mem_alloc(fla_ctx *ctx, size_t bytes, uint64_t *dptr) {
  return hip_(ctx) ? fla_hip_mem_alloc(ctx, bytes, dptr) : fla_cuda_mem_alloc(ctx, bytes, dptr);
}

void fla_gpu_mem_free(fla_ctx *ctx, uint64_t dptr) {
  if (hip_(ctx)) fla_hip_mem_free(ctx, dptr);
  else fla_cuda_mem_free(ctx, dptr);
}

fla_status fla_gpu_memset_d8(fla_ctx *ctx, uint64_t dptr, unsigned char v, size_t bytes) {
  return hip_(ctx) ? fla_hip_memset_d8(ctx, dptr, v, bytes) : fla_cuda_memset_d8(ctx, dptr, v, bytes);
}

fla_status fla_gpu_memset_d16(fla_ctx *ctx, uint64_t dptr, uint16_t v, size_t count) {
  return hip_(ctx) ? fla_hip_memset_d16(ctx, dptr, v, count)
                   : fla_cuda_memset_d16(ctx, dptr, v, count);
}

fla_status fla_gpu_memset_d32(fla_ctx *ctx, uint64_t dptr, uint32_t v, size_t count) {
  return hip_(ctx) ? fla_hip_memset_d32(ctx, dptr, v, count)
                   : fla_cuda_memset_d32(ctx, dptr, v, count);
}

fla_status fla_gpu_upload(fla_ctx *ctx, uint64_t dst, const void *src, size_t bytes) {
  return hip_(ctx) ? fla_hip_upload(ctx, dst, src, bytes) : fla_cuda_upload(ctx, dst, src, bytes);
}

fla_status fla_gpu_download(fla_ctx *ctx, void *dst, uint64_t src, size_t bytes) {
  return hip_(ctx) ? fla_hip_download(ctx, dst, src, bytes) : fla_cuda_download(ctx, dst, src, bytes);
}
