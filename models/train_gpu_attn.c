/*
** train_gpu_attn.c -- train_gpu_attn.h: launches the kernels of
** templates/cuda/train_attn.cuh (one module with train_common.cuh's helpers
** in front, loaded once per context) on the context's stream.
*/
#include "internal.h"
#include "train_gpu_attn.h"
#include "train_gpu.h"

#include "cuda/cuda_api.h"
#include "cuda/op_cuda.h"
#include "stage.h"

#include <stdlib.h>
#include <string.h>

enum { AK_FWD, AK_DQ, AK_DKV, AK_COUNT };

static fla_status kernels_(fla_ctx *ctx, CUfunction *fn) {
  static const char *const names[AK_COUNT] = {"tr_attn_fwd", "tr_attn_dq", "tr_attn_dkv"};
  return gpu_train_kernels(ctx, "train_attn.cuh", names, AK_COUNT, (void **)fn);
}

static fla_status check_(fla_ctx *ctx, const gpu_attn_shape *s) {
  if (s->B < 0 || s->T < 0)
    return fla_set_error(ctx, FLA_INVALID, "attention on the GPU: B = %lld, T = %lld", (long long)s->B,
                         (long long)s->T);
  if (s->d < 1 || s->d > 256)
    return fla_set_error(ctx, FLA_INVALID, "attention on the GPU: head dim %d outside 1..256", s->d);
  if (s->Hq < 1 || s->Hkv < 1 || s->Hq % s->Hkv)
    return fla_set_error(ctx, FLA_INVALID, "attention on the GPU: %d query heads over %d key/value heads", s->Hq,
                         s->Hkv);
  if (s->window < 0)
    return fla_set_error(ctx, FLA_INVALID, "attention on the GPU: window %lld", (long long)s->window);
  return FLA_OK;
}

/* one warp per row and head: 8 warps a block */
static fla_status launch_(fla_ctx *ctx, CUfunction f, const char *what, int64_t warps, void **args) {
  if (warps <= 0) return FLA_OK;
  int64_t blocks = (warps + 7) / 8;
  if (blocks > 0x7fffffff) return fla_set_error(ctx, FLA_INVALID, "attention on the GPU: %s: too many rows", what);
  CUresult r = fla_cuda_driver_api()->cuLaunchKernel(f, (unsigned)blocks, 1, 1, 256, 1, 1, 0,
                                                     fla_cuda_ctx_stream(ctx), args, NULL);
  if (r != CUDA_SUCCESS)
    return fla_set_error(ctx, FLA_ERROR, "attention on the GPU: %s: cuLaunchKernel: %s", what,
                         fla_cuda_result_str(r));
  return FLA_OK;
}

fla_status gpu_attn_fwd(fla_ctx *ctx, const gpu_attn_shape *s, uint64_t q, uint64_t k, uint64_t v, uint64_t o,
                        uint64_t lse) {
  CUfunction fn[AK_COUNT];
  fla_status st = check_(ctx, s);
  if (st == FLA_OK) st = kernels_(ctx, fn);
  if (st != FLA_OK) return st;
  gpu_attn_shape a = *s;
  void *args[] = {&q, &k, &v, &a.bf, &a.B, &a.T, &a.Hq, &a.Hkv, &a.d, &a.window, &o, &lse};
  return launch_(ctx, fn[AK_FWD], "tr_attn_fwd", a.B * a.T * a.Hq, args);
}

fla_status gpu_attn_bwd(fla_ctx *ctx, const gpu_attn_shape *s, uint64_t q, uint64_t k, uint64_t v, uint64_t o,
                        uint64_t lse, uint64_t dO, uint64_t Dr, uint64_t dq, uint64_t dk, uint64_t dv) {
  CUfunction fn[AK_COUNT];
  fla_status st = check_(ctx, s);
  if (st == FLA_OK) st = kernels_(ctx, fn);
  if (st != FLA_OK) return st;
  gpu_attn_shape a = *s;
  void *qa[] = {&q, &k, &v, &o, &dO, &lse, &a.bf, &a.B, &a.T, &a.Hq, &a.Hkv, &a.d, &a.window, &dq, &Dr};
  st = launch_(ctx, fn[AK_DQ], "tr_attn_dq", a.B * a.T * a.Hq, qa);
  if (st != FLA_OK) return st;
  void *ka[] = {&q, &k, &v, &dO, &lse, &Dr, &a.bf, &a.B, &a.T, &a.Hq, &a.Hkv, &a.d, &a.window, &dk, &dv};
  return launch_(ctx, fn[AK_DKV], "tr_attn_dkv", a.B * a.T * a.Hkv, ka);
}
