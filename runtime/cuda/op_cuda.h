/*
** op_cuda.h -- ops on the CUDA backend: the forward of a bound recipe through
** the generated stages of gen/generate.h, and the pieces of the context's
** CUDA state it runs on (runtime/cuda/backend.c).
*/
#ifndef FLA_OP_CUDA_H
#define FLA_OP_CUDA_H

#include "internal.h"
#include "cuda/cuda_api.h"
#include "generate.h"

/* --------------------------------------------- the context's CUDA state */

/* Scratch device buffers of a context, reused across calls (one op call runs
** at a time on a context). Slot numbers are fixed by op_cuda.c. */
#define FLA_CUDA_SCRATCH_SLOTS 16

/* A device buffer of at least `bytes` in scratch slot `slot`, valid until the
** next request for that slot or the context's end. Contents are undefined. */
fla_status fla_cuda_scratch(fla_ctx *ctx, int slot, size_t bytes, uint64_t *dptr);

/* A host staging buffer of at least `bytes`, owned by the context (NULL when
** out of memory). Valid until the next call. */
void *fla_cuda_host_staging(fla_ctx *ctx, size_t bytes);

/* The context's stream (NULL for a context that is not CUDA): other device
** code of the library (models/) queues its work behind the ops' on it. */
CUstream fla_cuda_ctx_stream(const fla_ctx *ctx);

/* With on = 1, fla_cuda_op_forward returns once its kernels are queued
** instead of after they finished (for callers that queue more work on the
** stream, or capture it into a CUDA graph; a kernel's failure then shows at
** the caller's next synchronisation). Only on the forward of dense batches
** whose tables are cached (a repeated forward) is nothing else synchronous. */
void fla_cuda_set_defer_sync(fla_ctx *ctx, int on);
int fla_cuda_defer_sync(const fla_ctx *ctx);

/* The device the context runs on; NULL for a context that is not CUDA. */
const fla_cuda_device_info *fla_cuda_ctx_info(const fla_ctx *ctx);

/* 1 when the context launches kernels marked early with programmatic
** dependent launch (sm_90 or later, the driver has cuLaunchKernelEx,
** $FLA_GPU_PDL is not 0 at context creation); 0 otherwise or not CUDA. */
int fla_cuda_ctx_early(const fla_ctx *ctx);

/* The functions names[0..n) of the module compiled from `source` (module
** `name` in the on-disk cache of runtime/cuda/modcache.h, for the device's
** arch). Modules are loaded once per context, keyed by a hash of
** (name, source, arch). FLA_ERROR with NVRTC's log or the driver's message. */
fla_status fla_cuda_get_kernels(fla_ctx *ctx, const char *name, const char *source,
                                char (*names)[64], int n, CUfunction *fns);

/* Launches fn with geometry l on the context's stream, passing *args by value
** (opting in to more than 48 KiB of dynamic shared memory when l asks).
** FLA_ERROR naming the kernel and the driver's message. */
fla_status fla_cuda_launch(fla_ctx *ctx, CUfunction fn, const fla_kernel_launch *l,
                           fla_kernel_args *args);

/* Waits for the context's stream; FLA_ERROR "<what>: <driver message>". */
fla_status fla_cuda_sync(fla_ctx *ctx, const char *what);

/* ------------------------------------------------------------------ ops */

/* The forward of fla_op_forward on a CUDA context, called by op.c after it
** matched the named inputs and checked every shape: in[i] is recipe input i,
** h0 and cu_seqlens may be NULL. Rules (FLA_INVALID / FLA_UNSUPPORTED with
** the reason otherwise):
**   - every tensor is a device tensor of the op's context;
**   - the recipe inputs share one dtype, bf16 or f32, and o has it too;
**   - h0 and ht are f32; cu_seqlens is i32 or i64 (read back to the host to
**     lay out sequences and chunks).
** Stages: PREP_FWD for every feature map that is not the identity (q, k,
** probe), then RECURRENT_FWD when T == 1 on a dense batch or the op's algo
** is FLA_ALGO_RECURRENT, else CHUNK_FWD when the generator handles the key
** (its FLA_UNSUPPORTED falls back to RECURRENT_FWD). Synchronous: returns
** after the kernels finished. */
struct fla_op;
fla_status fla_cuda_op_forward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                               fla_tensor *cu_seqlens, fla_tensor *o, fla_tensor *ht);

/* Compiles into the on-disk module cache, without a device, every module
** that fla_cuda_op_forward would load for op (bound on any context) with
** inputs of in_dtype (FLA_BF16 or FLA_F32), with or without h0 and ht, on a
** device of NVRTC target `arch` ("sm_90a"). *compiled (may be NULL) gets the
** number of modules that were not in the cache yet. Errors go to op's
** context. Used to warm the cache before a GPU run (in parallel threads,
** one context each). */
fla_status fla_cuda_op_precompile(struct fla_op *op, fla_dtype in_dtype, int has_h0,
                                  int store_ht, const char *arch, int *compiled);

/* The backward of fla_op_backward on a CUDA context, called by op.c after
** it matched inputs and gradients and checked every shape: in[i] is recipe
** input i, d[i] its gradient tensor or NULL (not asked for), h0, cu_seqlens,
** dht and dh0 may be NULL. Rules as for the forward, plus: d_o has the
** inputs' dtype, dht is f32, input gradients have the inputs' dtype and dh0
** is f32 (FLA_UNSUPPORTED otherwise). Stages: PREP_FWD for each feature map,
** the core backward (chunked backward stages where one handles the key,
** else RECURRENT_BWD; see op_cuda_bwd.c), then PREP_BWD for each of dq, dk,
** dp asked for. Gradients not asked for are not written; a failed check
** writes nothing. Synchronous. */
fla_status fla_cuda_op_backward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                                fla_tensor *cu_seqlens, fla_tensor *d_o, fla_tensor *dht,
                                fla_tensor *const *d, fla_tensor *dh0);

/* As fla_cuda_op_precompile, for the modules of fla_cuda_op_backward
** (with or without h0 and dht). */
fla_status fla_cuda_op_precompile_backward(struct fla_op *op, fla_dtype in_dtype, int has_h0,
                                           int has_dht, const char *arch, int *compiled);

/* The core stage fla_cuda_op_backward runs (RECURRENT_BWD, or a chunked
** backward stage), or -1 with the error in op's context. */
int fla_cuda_op_backward_core_stage(struct fla_op *op, fla_dtype in_dtype, int has_h0, int has_dht);

/* The stage fla_cuda_op_forward runs for the core of op with those inputs
** (RECURRENT_FWD or CHUNK_FWD), or -1 with the error in op's context. For
** tests and benchmarks, to report which path ran. */
int fla_cuda_op_core_stage(struct fla_op *op, fla_dtype in_dtype, int has_h0, int store_ht);

#endif
