/*
** generate.h -- from a recipe's core recurrence to CUDA source text, and the
** launch geometry of every kernel it contains.
**
** The GPU path mirrors the CPU one (runtime/cpu/cpu.h): the op layer applies
** feature maps in a "prep" stage, and the core kernels run the recurrence of
** cpu.h on effective inputs. A stage is one or more kernels compiled from one
** source; the source is the template of templates/cuda/ behind a block of
** #defines that fix the recurrence, the shapes and the tile configuration:
**
**   FLA_K, FLA_V          state key dim (after the feature map), value dim
**   FLA_DECAY             0 none, 1 const (gamma[H] f32), 2 scalar g [tok,H],
**                         3 per-key g [tok,H,K]
**   FLA_DELTA             1: delta write (beta [tok,H], probe p or k)
**   FLA_HAS_PROBE         1: a separate probe p [tok,H,K] (Comba)
**   FLA_READ_BEFORE       1: o reads the state before the token
**   FLA_HAS_BONUS         1: + scale (q . (bonus_h * k)) v (RWKV-6)
**   FLA_KEY_FROM_DECAY    1: k = 1 - exp(g) computed on load (HGRN2)
**   FLA_IN_BF16           1: q, k, v, p, g, beta, bonus, o are bf16; else f32
**   FLA_HAS_H0, FLA_STORE_HT  (backward stages: STORE_HT = a dht is given)
**   FLA_FEATURE           prep stages only: the fla_ir_feature to apply
**   FLA_FEATURE_IN_DIM    prep stages only: its input dim D (FLA_K is then the
**                         output dim, 1 + D + D^2 for taylor2, else D)
**   FLA_BT, FLA_BK, FLA_BV, FLA_WARPS   the tile configuration
**
** Fields of the key a stage does not read are zeroed before the block is
** written (docs/kernels.md), so keys that differ only there share a module.
**
** Every kernel is `extern "C" __global__ void <name>(fla_kernel_args a)`, the
** struct below passed by value (the template declares the same struct).
** Same inputs give the same bytes: the source is canonical, so the module
** cache (runtime/cuda/modcache.h) keys on it.
*/
#ifndef FLA_GENERATE_H
#define FLA_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "fla.h"
#include "recipe_ir.h"

typedef enum fla_stage {
  FLA_STAGE_PREP_FWD = 0,   /* y = phi(x) row by row: x [rows, d] -> y [rows, dout] */
  FLA_STAGE_RECURRENT_FWD,  /* token by token, state on chip: o, ht             */
  FLA_STAGE_CHUNK_FWD,      /* chunkwise-parallel forward: o, ht (scalar gates) */
  FLA_STAGE_CHUNK_GK_FWD,   /* chunked forward, per-key gates (GLA, sub-chunks) */
  FLA_STAGE_CHUNK_WY_FWD,   /* chunked forward, delta rule (WY / UT transform)  */
  FLA_STAGE_PREP_BWD,       /* dx = phi'(x)^T dy row by row (dy f32)            */
  FLA_STAGE_RECURRENT_BWD,  /* token by token backward, checkpointed: dq..dh0   */
  FLA_STAGE_CHUNK_BWD,      /* chunked backward, decay family: dq dk dv dg dh0  */
  FLA_STAGE_CHUNK_FWD_PORTABLE, /* chunk_fwd's math with scalar FMA tiles: CUDA and HIP */
  FLA_STAGE_CHUNK_GK_FWD_PORTABLE, /* chunk_gk_fwd's math with scalar FMA tiles          */
  FLA_STAGE_CHUNK_WY_FWD_PORTABLE, /* chunk_wy_fwd's math with scalar FMA tiles          */
  FLA_STAGE_CHUNK_BWD_PORTABLE,    /* chunk_bwd's math with scalar FMA tiles             */
  FLA_STAGE_CHUNK_FWD_MFMA,        /* chunk_fwd_portable's math on CDNA MFMA: HIP only   */
  FLA_STAGE_CHUNK_KDA_FWD,         /* chunked forward, delta rule + per-key decay (KDA)  */
  FLA_STAGE_CHUNK_WY_BWD,          /* chunked backward, delta rule (WY): dq..dbeta dg dh0 */
  FLA_STAGE_CHUNK_GK_BWD,          /* chunked backward, per-key gates (GLA, HGRN2)       */
  FLA_STAGE_COUNT
} fla_stage;

const char *fla_stage_name(fla_stage s);   /* "prep_fwd", "recurrent_fwd", ... */

/* What a stage's source depends on besides the tile configuration. */
typedef struct fla_gen_key {
  int decay;            /* 0 none, 1 const, 2 scalar, 3 per-key (FLA_DECAY)   */
  int delta, has_probe, read_before, has_bonus, key_from_decay;
  int in_bf16;
  int has_h0, store_ht;
  int K, V;             /* state key dim and value dim                        */
  int feature, feature_in_dim;  /* prep stage: map and its input dim          */
} fla_gen_key;

/* The core part of a key from a recipe IR and its bound dims. */
void fla_gen_key_from_ir(const fla_ir *ir, int K_state, int V, int in_bf16, int has_h0,
                         int store_ht, fla_gen_key *key);

typedef struct fla_tile_config {
  int BT, BK, BV, warps;  /* 0: the stage's default */
} fla_tile_config;

/* The arguments every kernel receives (by value). Device pointers as 64-bit
** integers; unused ones are 0. Token-major layouts as in runtime/cpu/cpu.h. */
typedef struct fla_kernel_args {
  uint64_t q, k, v, p, g, beta, bonus;  /* effective inputs                    */
  uint64_t gamma;                       /* [H] f32 constant log decay         */
  uint64_t h0, ht;                      /* [N,H,K,V] f32                      */
  uint64_t o;                           /* [tok,H,V]                          */
  uint64_t cu;                          /* [N+1] int64 token offsets          */
  uint64_t chunk_seq;                   /* [NC] int32: sequence of chunk c    */
  uint64_t chunk_first;                 /* [N+1] int64: first chunk of seq n  */
  uint64_t ws0, ws1;                    /* stage workspaces (see fla_stage_workspace) */
  uint64_t x, y;                        /* prep: input and output rows        */
  /* Backward stages: the output gradients in, the input gradients out
  ** (layouts of the inputs they belong to; dh0 [N,H,K,V] f32). */
  uint64_t d_o, dht;
  uint64_t dq, dk, dv, dp, dg, dbeta, dbonus, dh0;
  uint64_t dx, dy;                      /* prep backward: dL/dx from dL/dy    */
  uint64_t ws2, ws3;                    /* more stage workspace               */
  int64_t total;                        /* tokens over all sequences          */
  int64_t rows;                         /* prep: number of rows               */
  int32_t N, H;
  int32_t num_chunks;                   /* NC: chunks over all sequences      */
  float scale;
} fla_kernel_args;

/* One kernel of a stage and how to launch it. */
typedef struct fla_kernel_launch {
  char name[64];
  unsigned grid[3], block[3];
  unsigned smem;        /* dynamic shared memory bytes */
  /* 1: the kernel may start while the kernel before it in the stream still
  ** runs (programmatic dependent launch, sm_90 and later, where the driver
  ** has cuLaunchKernelEx and $FLA_GPU_PDL is not 0): it then waits for what
  ** it reads by flags of its own, and is correct launched plainly too. */
  unsigned early;
} fla_kernel_launch;

#define FLA_STAGE_MAX_KERNELS 8

/* Writes the stage's source (malloc'd, NUL-terminated; free() it) and the
** names of its kernels in launch order. FLA_UNSUPPORTED (with the reason in
** fla_errmsg) for a key the stage does not handle, FLA_INVALID for a tile
** configuration outside the stage's space. */
fla_status fla_generate(fla_ctx *ctx, fla_stage stage, const fla_gen_key *key,
                        const fla_tile_config *cfg, char **source,
                        char (*kernels)[64], int *num_kernels);

/* The vendor a source is written for. HIP sources are the CUDA ones with
** templates/hip/common.hip.h in place of templates/cuda/common.cuh (and a
** "// target: hip" line); launch geometry, workspaces and tile
** configurations do not depend on the target. */
typedef enum fla_target { FLA_TARGET_CUDA = 0, FLA_TARGET_HIP } fla_target;

const char *fla_target_name(fla_target t);  /* "cuda", "hip", "?" */

/* 1 when the stage has a source for the target: for CUDA every stage but
** the AMD-only ones (chunk_fwd_mfma), for HIP the portable ones (no vendor
** matrix instructions) and the AMD-only ones. */
int fla_stage_has_target(fla_stage s, fla_target t);

/* FNV-1a 64 of the CUDA source stage s is generated from: the prelude, the
** stage's template and the templates it includes. The tuning database keys
** on it, so a rewritten kernel does not inherit the old one's tuned tiles.
** 0 for an unknown stage. */
uint64_t fla_stage_source_hash(fla_stage s);

/* fla_generate for a target (fla_generate is FLA_TARGET_CUDA). FLA_UNSUPPORTED
** for a stage without a source for the target. */
fla_status fla_generate_target(fla_ctx *ctx, fla_target target, fla_stage stage,
                               const fla_gen_key *key, const fla_tile_config *cfg,
                               char **source, char (*kernels)[64], int *num_kernels);

/* Launch geometry of every kernel of the stage for the runtime sizes in
** args (N, H, total, num_chunks, rows). Returns the number of kernels. */
int fla_stage_launches(fla_stage stage, const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, fla_kernel_launch *out);

/* Bytes of workspace ws0 and ws1 the stage needs (0 when none). */
void fla_stage_workspace(fla_stage stage, const fla_gen_key *key, const fla_tile_config *cfg,
                         const fla_kernel_args *args, size_t *ws0, size_t *ws1);

/* The stage's default tile configuration for key. */
void fla_stage_default_config(fla_stage stage, const fla_gen_key *key, fla_tile_config *cfg);

#endif
