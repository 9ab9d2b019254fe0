/*
** op_cuda_internal.h -- what the forward (runtime/cuda/op_cuda.c) and the
** backward (runtime/cuda/op_cuda_bwd.c) of a bound recipe on the CUDA
** backend share: the context's scratch slots, a generated stage ready to
** run, and the helpers that check, generate, load and launch.
*/
#ifndef FLA_OP_CUDA_INTERNAL_H
#define FLA_OP_CUDA_INTERNAL_H

#include "cuda/op_cuda.h"
#include "op_internal.h"

/* Scratch slots of the context (see fla_cuda_scratch). */
enum {
  SLOT_Q = 0, SLOT_K, SLOT_P,     /* feature-mapped q, k, probe        */
  SLOT_CU, SLOT_CSEQ, SLOT_CFIRST, /* sequence and chunk tables         */
  SLOT_WS0, SLOT_WS1,              /* the core stage's workspaces        */
  SLOT_DQ, SLOT_DK, SLOT_DP,       /* backward: the core's f32 dq, dk, dp */
  SLOT_GAMMA,                      /* backward: constant decay [H] f32  */
  SLOT_COUNT
};

#if SLOT_COUNT > FLA_CUDA_SCRATCH_SLOTS
#error "too many scratch slots"
#endif

/* One stage to run: its key, tile configuration, source and kernels. */
typedef struct stage_src {
  fla_stage stage;
  fla_gen_key key;
  fla_tile_config cfg;
  char *src;
  char kernels[FLA_STAGE_MAX_KERNELS][64];
  int nkernels;
} stage_src;

/* s <- stage with key, its tile configuration (tuned for op, else the
** default: runtime/cuda/tune_pick.h), generated source
** (free s->src). The generator's status (FLA_UNSUPPORTED: try another). */
fla_status fla_cuda_gen_stage(struct fla_op *op, fla_ctx *ctx, fla_stage stage, const fla_gen_key *key, stage_src *s);

/* Vendor-neutral (runtime/hip/op_hip.c uses them too): the prep key,
** dtype checks, sequence offsets and the shared kernel arguments. */

/* The prep key of feature map f on K_in-dim rows (only what the map reads). */
void fla_cuda_prep_key(const fla_gen_key *core, fla_ir_feature f, int64_t K_in, fla_gen_key *key);

int fla_cuda_is_gpu_float(fla_dtype d);

/* The inputs share one dtype (bf16 or f32), o has it, h0 and ht are f32. */
fla_status fla_cuda_check_dtypes(fla_op *op, fla_tensor *const *in, fla_tensor *h0, fla_tensor *o,
                                 fla_tensor *ht, fla_dtype *dt);

/* Input gradients have the inputs' dtype dt, dh0 is f32. */
fla_status fla_cuda_check_grad_dtypes(fla_op *op, fla_tensor *const *d, fla_tensor *dh0,
                                      fla_dtype dt);

/* Token offsets (N+1) of the call: n*T, or cu_seqlens read back and checked. */
fla_status fla_cuda_offsets(fla_op *op, fla_tensor *cs, int64_t *cu);

/* Chunk tables for chunk size BT on the host: first [N+1], seq [NC] (malloc'd). */
/* a <- zeroes, then the sizes (total, rows, N, H, scale) and the recipe's
** raw v, g, beta, bonus and h0 pointers: what forward and backward share. */
void fla_cuda_base_args(const fla_op *op, fla_tensor *const *in, const fla_tensor *h0,
                        const int64_t *cu, fla_kernel_args *a);

fla_status fla_cuda_chunk_tables_host(fla_op *op, const int64_t *cu, int BT, int64_t **first,
                                      int32_t **seq, int64_t *nc_out);

/* The chunk tables of cu for chunks of BT tokens, uploaded into the
** SLOT_CFIRST / SLOT_CSEQ scratch slots: a->chunk_first, chunk_seq, num_chunks. */
fla_status fla_cuda_upload_chunk_tables(fla_op *op, const int64_t *cu, int BT, fla_kernel_args *a);

/* Scratch slot `slot` holding a copy of bytes of host src. */
fla_status fla_cuda_upload_slot(fla_ctx *ctx, int slot, const void *src, size_t bytes, uint64_t *dptr);

/* The functions of stage s, loaded once per context. */
fla_status fla_cuda_stage_fns(fla_ctx *ctx, const stage_src *s, CUfunction *fns);

/* Launches every kernel of stage s with args (empty grids skipped). */
fla_status fla_cuda_run_stage(fla_ctx *ctx, const stage_src *s, const CUfunction *fns,
                              fla_kernel_args *args);

#endif
