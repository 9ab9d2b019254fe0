/*
** hip_backend.h -- the HIP backend of a context, shaped like the CUDA one
** (runtime/cuda/backend.c): the runtime and hipRTC loaded with dlopen, one
** device, one stream, device memory, and a table of loaded modules keyed by
** the hash of their source, compiled through the shared module cache for
** the device's own --offload-arch.
**
** fla_ctx_create(FLA_BACKEND_HIP) opens it when an AMD GPU is present (else
** FLA_NODEVICE with what was found); ops run on it through
** runtime/hip/op_hip.h. Tests may also open it directly on a bare context.
*/
#ifndef FLA_HIP_BACKEND_H
#define FLA_HIP_BACKEND_H

#include <stdint.h>

#include "generate.h"
#include "hip/hip_api.h"
#include "internal.h"

/* Opens device $FLA_HIP_DEVICE (default 0) into ctx->hip. FLA_NODEVICE with
** the reason in err when the runtime, hipRTC or a device is missing. */
fla_status fla_hip_ctx_open(fla_ctx *ctx, char *err, size_t errlen);
/* Releases what fla_hip_ctx_open took; nothing when ctx->hip is NULL. */
void fla_hip_ctx_close(fla_ctx *ctx);
const fla_hip_device_info *fla_hip_ctx_info(const fla_ctx *ctx);

fla_status fla_hip_mem_alloc(fla_ctx *ctx, size_t bytes, uint64_t *dptr);
void fla_hip_mem_free(fla_ctx *ctx, uint64_t dptr);
fla_status fla_hip_memset_d8(fla_ctx *ctx, uint64_t dptr, unsigned char v, size_t bytes);
fla_status fla_hip_memset_d16(fla_ctx *ctx, uint64_t dptr, uint16_t v, size_t count);
fla_status fla_hip_memset_d32(fla_ctx *ctx, uint64_t dptr, uint32_t v, size_t count);
fla_status fla_hip_upload(fla_ctx *ctx, uint64_t dst, const void *src, size_t bytes);
fla_status fla_hip_download(fla_ctx *ctx, void *dst, uint64_t src, size_t bytes);

/* Scratch device buffers of a context, reused across op calls (as
** fla_cuda_scratch): a buffer of at least `bytes` in slot `slot`, valid until
** the next request for that slot or the context's end; contents undefined. */
#define FLA_HIP_SCRATCH_SLOTS 16
fla_status fla_hip_scratch(fla_ctx *ctx, int slot, size_t bytes, uint64_t *dptr);

/* The kernels `names` of the module compiled from source (by hipRTC through
** the module cache, loaded once per context). */
fla_status fla_hip_get_kernels(fla_ctx *ctx, const char *name, const char *source,
                               char (*names)[64], int n, hipFunction_t *fns);
/* Queues one kernel on the context's stream with args as its one argument. */
fla_status fla_hip_launch(fla_ctx *ctx, hipFunction_t fn, const fla_kernel_launch *l,
                          fla_kernel_args *args);
fla_status fla_hip_sync(fla_ctx *ctx, const char *what);

#endif
