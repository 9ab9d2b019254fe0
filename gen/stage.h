/*
** stage.h -- what each stage of gen/generate.h provides to the generator.
** One file per stage (gen/stage_prep.c, gen/stage_recurrent.c,
** gen/stage_chunk.c) defines one of these; gen/generate.c dispatches to it
** and puts the #define block of generate.h in front of its template.
*/
#ifndef FLA_STAGE_H
#define FLA_STAGE_H

#include "generate.h"

typedef struct fla_stage_impl {
  const char *name;          /* "chunk_fwd" */
  const char *template_file; /* under templates/cuda/, e.g. "chunk_fwd.cuh" */
  /* 1: the template uses only what both vendors' preludes provide (no mma,
  ** no unguarded PTX), so it is generated for HIP too (gen/generate.h). */
  int portable;
  /* 1: the template uses AMD matrix instructions: generated for HIP only. */
  int hip_only;
  /* FLA_OK, or FLA_UNSUPPORTED / FLA_INVALID with a message (via
  ** fla_set_error) for a key or a tile configuration it cannot handle.
  ** cfg has the defaults already filled in. */
  fla_status (*check)(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg);
  void (*default_config)(const fla_gen_key *key, fla_tile_config *cfg);
  /* Kernel names in launch order; returns how many. */
  int (*kernels)(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]);
  int (*launches)(const fla_gen_key *key, const fla_tile_config *cfg,
                  const fla_kernel_args *args, fla_kernel_launch *out);
  /* NULL when the stage needs no workspace. */
  void (*workspace)(const fla_gen_key *key, const fla_tile_config *cfg,
                    const fla_kernel_args *args, size_t *ws0, size_t *ws1);
} fla_stage_impl;

extern const fla_stage_impl fla_stage_prep_fwd;
extern const fla_stage_impl fla_stage_recurrent_fwd;
extern const fla_stage_impl fla_stage_chunk_fwd;
extern const fla_stage_impl fla_stage_chunk_gk_fwd;
extern const fla_stage_impl fla_stage_chunk_wy_fwd;
extern const fla_stage_impl fla_stage_chunk_kda_fwd;
extern const fla_stage_impl fla_stage_prep_bwd;
extern const fla_stage_impl fla_stage_recurrent_bwd;
extern const fla_stage_impl fla_stage_chunk_bwd;
extern const fla_stage_impl fla_stage_chunk_fwd_portable;
extern const fla_stage_impl fla_stage_chunk_gk_fwd_portable;
extern const fla_stage_impl fla_stage_chunk_wy_fwd_portable;
extern const fla_stage_impl fla_stage_chunk_bwd_portable;
extern const fla_stage_impl fla_stage_chunk_fwd_mfma;
extern const fla_stage_impl fla_stage_chunk_wy_bwd;
extern const fla_stage_impl fla_stage_chunk_gk_bwd;

/* The text of templates/cuda/<file>, embedded in the library at build time
** (so a binary does not need its source tree); NULL when unknown. The shared
** vendor-neutral files are "../common/<file>" (templates/common/). */
const char *fla_template_text(const char *file);

/* 1 when x is a power of two (tile sizes). */
static inline int fla_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

/* The tile checks of the recurrent stages, whose blocks hold whole state
** columns: BK = K, BV a power of two up to 32, warps a power of two up to
** max_warps, and kpt(k, c) (the stage's count of key rows a thread, over
** warps * 32 / BV row groups; called only once BV and warps are valid) at
** most max_kpt. FLA_INVALID with a message
** that names `stage`, the value and the limit; FLA_OK otherwise. */
fla_status fla_check_column_tiles(fla_ctx *ctx, const char *stage, const fla_gen_key *k, const fla_tile_config *c,
                                  int max_warps, int (*kpt)(const fla_gen_key *, const fla_tile_config *),
                                  int max_kpt);

#endif
