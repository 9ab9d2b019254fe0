/*
** stage_prep_bwd.c -- the prep_bwd stage: templates/cuda/prep_bwd.cuh, one
** kernel, fla_prep_bwd: dx[r] = phi'(x[r])^T dy[r] row by row (runtime/
** feature.c's backward), dy in f32 (the core's gradient), x and dx in the
** input dtype. The identity map is a cast (dx = dy).
**
** Same key, tile space (warps only), limits and geometry as prep_fwd
** (gen/stage_prep.c), whose functions it shares: one warp a row, taylor2
** stages one row of x a warp in shared memory. No workspace.
*/
#include "internal.h"
#include "stage.h"

#include <string.h>

static fla_status check_(fla_ctx *ctx, const fla_gen_key *k, const fla_tile_config *c) {
  return fla_stage_prep_fwd.check(ctx, k, c); /* messages name prep_fwd's limits */
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  fla_stage_prep_fwd.default_config(key, cfg);
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key;
  (void)cfg;
  strcpy(names[0], "fla_prep_bwd");
  return 1;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  int n = fla_stage_prep_fwd.launches(key, cfg, args, out);
  strcpy(out->name, "fla_prep_bwd");
  return n;
}

const fla_stage_impl fla_stage_prep_bwd = {
    .name = "prep_bwd",
    .template_file = "prep_bwd.cuh",
    .portable = 1, /* warp sums and lane swaps through the vendor preludes */
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = NULL, /* none */
};
