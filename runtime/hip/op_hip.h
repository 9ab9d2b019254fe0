/*
** op_hip.h -- ops on the HIP backend: fla_op_forward and fla_op_backward of
** a bound recipe through the portable stages (the ones generated for HIP:
** fla_stage_has_target(s, FLA_TARGET_HIP)), compiled by hipRTC for the
** device's --offload-arch, launched through runtime/hip/backend.c.
**
** The same contract as the CUDA op layer (runtime/cuda/op_cuda.h: dtypes,
** shapes, which gradients are written), with the portable stages:
**   forward:  PREP_FWD for each feature map, then CHUNK_FWD_PORTABLE,
**             CHUNK_GK_FWD_PORTABLE or CHUNK_WY_FWD_PORTABLE (the first that
**             takes the key), else RECURRENT_FWD (also for FLA_ALGO_RECURRENT
**             and T == 1 on a dense batch);
**   backward: CHUNK_BWD_PORTABLE where it takes the key and q, k have no
**             feature map (it writes dq, dk in the input dtype; not for
**             FLA_ALGO_RECURRENT or T == 1 dense), else PREP_FWD for each
**             feature map, RECURRENT_BWD, then PREP_BWD for each of dq, dk,
**             dp asked for.
** Tile configurations are the stages' defaults (no AMD tuning yet).
** Synchronous: returns after the kernels finished.
**
** No AMD GPU has run this (docs/hip.md): the plans and every module they
** compile are checked without a device (fla_hip_op_precompile,
** tests/test_hip.c), and the stages' shared source runs on NVIDIA GPUs
** (tests/test_gpu_portable.c).
*/
#ifndef FLA_OP_HIP_H
#define FLA_OP_HIP_H

#include "internal.h"
#include "generate.h"

struct fla_op;

/* fla_op_forward on a HIP context, called by runtime/op.c after it matched
** the named inputs and checked every shape (in[i]: recipe input i; h0 and
** cu_seqlens may be NULL). */
fla_status fla_hip_op_forward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                              fla_tensor *cu_seqlens, fla_tensor *o, fla_tensor *ht);

/* fla_op_backward on a HIP context (d[i]: input i's gradient or NULL; dht,
** dh0 may be NULL). */
fla_status fla_hip_op_backward(struct fla_op *op, fla_tensor *const *in, fla_tensor *h0,
                               fla_tensor *cu_seqlens, fla_tensor *d_o, fla_tensor *dht,
                               fla_tensor *const *d, fla_tensor *dh0);

/* Compiles with hipRTC into the on-disk module cache, without a device,
** every module that fla_hip_op_forward (backward 0) or fla_hip_op_backward
** (backward 1) would load for op (bound on any context) with inputs of
** in_dtype (FLA_BF16 or FLA_F32), with or without h0 and ht (dht), for the
** offload arch `arch` ("gfx90a"). *compiled (may be NULL) gets the number of
** modules that were not cached yet. Errors go to op's context. */
fla_status fla_hip_op_precompile(struct fla_op *op, int backward, fla_dtype in_dtype, int has_h0,
                                 int store_ht, const char *arch, int *compiled);

/* The core stage that fla_hip_op_forward (backward 0) or _backward (1) runs
** for op with those inputs, or -1 with the error in op's context. */
int fla_hip_op_core_stage(struct fla_op *op, int backward, fla_dtype in_dtype, int has_h0,
                          int store_ht);

#endif
