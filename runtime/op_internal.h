/*
** op_internal.h -- the bound op, shared by the op layer (runtime/op.c) and
** the backends that run it (runtime/cuda/op_cuda.c).
*/
#ifndef FLA_OP_INTERNAL_H
#define FLA_OP_INTERNAL_H

#include "internal.h"
#include "recipe_ir.h"

struct fla_op {
  fla_ctx *ctx;
  const fla_recipe *recipe;
  const fla_ir *ir;
  int64_t B, T, H, K, V;  /* bound shape (K: input key dim)          */
  int64_t N;              /* sequences                               */
  int64_t Ks;             /* state key dim (feature map output size) */
  int64_t tokens;         /* B * T                                   */
  int varlen;
  double scale;
  int chunk;
  fla_algo algo;
  double *gamma;          /* [H] constant log decay, or NULL         */
  /* Work buffers kept between calls: a fresh allocation of this size would
  ** be page-faulted in on every call. An op runs one call at a time. */
  void *ws[40];
  size_t ws_bytes[40];
  /* What a backend keeps between calls (runtime/cuda/op_cuda.c: the plan,
  ** its kernels and device tables), freed with the op. */
  void *backend_cache;
  void (*backend_cache_free)(void *cache);
  /* The same for the backward (runtime/cuda/op_cuda_bwd.c). */
  void *backend_bwd_cache;
  void (*backend_bwd_cache_free)(void *cache);
};

#endif
