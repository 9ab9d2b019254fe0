/*
** stage_chunk_wy_portable.c -- FLA_STAGE_CHUNK_WY_FWD_PORTABLE: the
** chunkwise forward of the delta rule with scalar FMA tiles
** (templates/common/chunk_wy_fwd_portable.h), the variant of chunk_wy_fwd
** that needs no vendor matrix instruction, so it is generated for CUDA and
** HIP.
**
** Keys: delta write read after the token, decay none / const / scalar, with
** or without a probe (Comba), bf16 or f32 inputs, K and V up to 256. Tiles
** and geometry: those of every portable chunked stage
** (stage_chunk_portable_common.h). One kernel, fla_chunk_wy_fwd_portable;
** no workspace.
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_portable_common.h"

#include <string.h>

/* Bytes of the template's static arrays: Qs, Ks, Ps, Us, Ss, As, gam, eg, wl, bt. */
static long smem_(const fla_gen_key *k, const fla_tile_config *c) {
  long bt = c->BT, bv = c->BV, K = k->K;
  return 4 * ((2 + (k->has_probe ? 1 : 0)) * bt * (K + 1) + bt * bv + K * bv + bt * (bt + 1) +
              4 * bt);
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (!key->delta) no = "the delta rule only (plain writes are chunk_fwd_portable's)";
  else if (key->decay == 3) no = "per-key decay with the delta rule (KDA) is not done here";
  else if (key->read_before) no = "reading before the token is not done with the delta rule";
  else if (key->has_bonus) no = "the bonus term is not done with the delta rule";
  else if (key->key_from_decay) no = "keys derived from the decay need a per-key decay";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_wy_fwd_portable: %s", no);
  return fla_cp_check_tiles(ctx, "chunk_wy_fwd_portable", key, cfg, smem_);
}

FLA_CP_ONE_KERNEL_STAGE(fla_stage_chunk_wy_fwd_portable, "chunk_wy_fwd_portable", "fla_chunk_wy_fwd_portable",
                        "../common/chunk_wy_fwd_portable.h");
