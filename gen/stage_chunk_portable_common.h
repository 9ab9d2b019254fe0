/*
** stage_chunk_portable_common.h -- what the portable chunked stages share
** (gen/stage_chunk_portable.c, stage_chunk_gk_portable.c,
** stage_chunk_wy_portable.c): one kernel a stage, grid (N*H, ceil(V / BV)),
** 32 * warps threads, static shared memory only (at most FLA_CP_MAX_SMEM,
** which fits CUDA's static limit and AMD's 64 KiB LDS), no workspace; BT
** tokens a chunk in 1..64, BV value columns a program in 1..64, warps in
** {1, 2, 4, 8, 16}, BK = K (never tiled), K and V up to 256.
*/
#ifndef FLA_STAGE_CHUNK_PORTABLE_COMMON_H
#define FLA_STAGE_CHUNK_PORTABLE_COMMON_H

#include "generate.h"

#define FLA_CP_MAX_KV 256
#define FLA_CP_MAX_BT 64
#define FLA_CP_MAX_BV 64
#define FLA_CP_MAX_WARPS 16
#define FLA_CP_MAX_SMEM 49152

/* Bytes of a template's static shared arrays for a key and tiles. */
typedef long (*fla_cp_smem_fn)(const fla_gen_key *key, const fla_tile_config *cfg);

/* The widest BV up to 32 that covers V, then the longest chunk (<= 32) that
** fits smem; BV halves when even 8 tokens do not. 4 warps, BK = K. */
void fla_cp_default_config(const fla_gen_key *key, fla_tile_config *cfg, fla_cp_smem_fn smem);

/* The limits above, errors naming stage: FLA_UNSUPPORTED for K or V,
** FLA_INVALID for the tiles. */
fla_status fla_cp_check_tiles(fla_ctx *ctx, const char *stage, const fla_gen_key *key,
                              const fla_tile_config *cfg, fla_cp_smem_fn smem);

/* The one launch of kernel: grid (max(N*H, 1), ceil(V / BV)), 32 * warps. */
int fla_cp_launch(const char *kernel, const fla_gen_key *key, const fla_tile_config *cfg,
                  const fla_kernel_args *args, fla_kernel_launch *out);

/* What a one-kernel portable stage has like the others: its default tiles
** (fla_cp_default_config over the file's smem_), its one kernel and launch,
** and its fla_stage_impl named `impl`. The stage file defines smem_ and
** check_ first. */
#define FLA_CP_ONE_KERNEL_STAGE(impl, stage_name, kernel_name, template_path)                 \
  static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {                 \
    fla_cp_default_config(key, cfg, smem_);                                                   \
  }                                                                                           \
  static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) { \
    (void)key, (void)cfg;                                                                     \
    strcpy(names[0], kernel_name);                                                            \
    return 1;                                                                                 \
  }                                                                                           \
  static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,                    \
                       const fla_kernel_args *args, fla_kernel_launch *out) {                 \
    return fla_cp_launch(kernel_name, key, cfg, args, out);                                   \
  }                                                                                           \
  const fla_stage_impl impl = {                                                               \
      .name = stage_name,                                                                     \
      .template_file = template_path,                                                         \
      .portable = 1,                                                                          \
      .check = check_,                                                                        \
      .default_config = default_config_,                                                      \
      .kernels = kernels_,                                                                    \
      .launches = launches_,                                                                  \
      .workspace = NULL, /* none */                                                           \
  }

#endif
