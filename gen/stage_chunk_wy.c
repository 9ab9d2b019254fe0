/*
** stage_chunk_wy.c -- the chunked forward for the delta rule (WY form): not generated yet.
** Its check refuses every key, so ops fall back to the recurrent stage.
*/
#include "stage.h"
#include "internal.h"

#include <string.h>

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  (void)key, (void)cfg;
  return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_wy_fwd: not generated yet");
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  (void)key;
  memset(cfg, 0, sizeof *cfg);
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg, (void)names;
  return 0;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg, const fla_kernel_args *args,
                     fla_kernel_launch *out) {
  (void)key, (void)cfg, (void)args, (void)out;
  return 0;
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg, const fla_kernel_args *args,
                       size_t *ws0, size_t *ws1) {
  (void)key, (void)cfg, (void)args;
  *ws0 = *ws1 = 0;
}

const fla_stage_impl fla_stage_chunk_wy_fwd = {
  .name = "chunk_wy_fwd",
  .template_file = "common.cuh",
  .check = check_,
  .default_config = default_config_,
  .kernels = kernels_,
  .launches = launches_,
  .workspace = workspace_,
};
