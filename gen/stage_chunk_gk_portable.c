/*
** stage_chunk_gk_portable.c -- FLA_STAGE_CHUNK_GK_FWD_PORTABLE: the
** chunkwise forward of per-key gates with scalar FMA tiles
** (templates/common/chunk_gk_fwd_portable.h), the variant of chunk_gk_fwd
** that needs no vendor matrix instruction, so it is generated for CUDA and
** HIP.
**
** Keys: per-key decay (decay 3), plain write, read after the token (GLA,
** HGRN2 with key_from_decay) or before it (RWKV-6, with or without the
** bonus), bf16 or f32 inputs, K and V up to 256. Tiles and geometry: those of
** every portable chunked stage (stage_chunk_portable_common.h). One kernel,
** fla_chunk_gk_fwd_portable; no workspace.
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_portable_common.h"

#include <string.h>

/* Bytes of the template's static arrays: Qs, Ks, Gs, Vs, Ss, As, Us. */
static long smem_(const fla_gen_key *k, const fla_tile_config *c) {
  long bt = c->BT, bv = c->BV, K = k->K;
  return 4 * (3 * bt * (K + 1) + bt * bv + K * bv + bt * (bt + 1) + (k->has_bonus ? K : 0));
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->decay != 3) no = "per-key decay only (the others are chunk_fwd_portable's)";
  else if (key->delta) no = "the delta rule is chunk_wy_fwd_portable's";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->has_bonus && !key->read_before) no = "a bonus needs read_before";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_gk_fwd_portable: %s", no);
  return fla_cp_check_tiles(ctx, "chunk_gk_fwd_portable", key, cfg, smem_);
}

FLA_CP_ONE_KERNEL_STAGE(fla_stage_chunk_gk_fwd_portable, "chunk_gk_fwd_portable", "fla_chunk_gk_fwd_portable",
                        "../common/chunk_gk_fwd_portable.h");
