/*
** stage_tiles.c -- tile checks that several stages share (gen/stage.h).
*/
#include "internal.h"
#include "stage.h"

fla_status fla_check_column_tiles(fla_ctx *ctx, const char *stage, const fla_gen_key *k, const fla_tile_config *c,
                                  int max_warps, int (*kpt)(const fla_gen_key *, const fla_tile_config *),
                                  int max_kpt) {
  if (c->BK != k->K)
    return fla_set_error(ctx, FLA_INVALID,
                         "%s keeps whole state columns in a block: BK must be K=%d (got BK=%d)", stage, k->K,
                         c->BK);
  if (!fla_pow2(c->BV) || c->BV > 32)
    return fla_set_error(ctx, FLA_INVALID, "%s: BV must be 1, 2, 4, 8, 16 or 32 (got BV=%d)", stage, c->BV);
  if (!fla_pow2(c->warps) || c->warps > max_warps)
    return fla_set_error(ctx, FLA_INVALID, "%s: warps must be 1, 2, 4, 8 or 16 (got warps=%d)", stage, c->warps);
  int rows = kpt(k, c);
  if (rows > max_kpt)
    return fla_set_error(ctx, FLA_INVALID,
                         "%s: K=%d over %d row groups (BV=%d, warps=%d) is %d rows a thread, more than %d: use "
                         "more warps or a smaller BV",
                         stage, k->K, c->warps * (32 / c->BV), c->BV, c->warps, rows, max_kpt);
  return FLA_OK;
}
