/*
** recipe.h -- the loaded recipe object, between gen/ and the rest of the library.
*/
#ifndef FLA_RECIPE_H
#define FLA_RECIPE_H

#include "fla.h"
#include "recipe_ir.h"

/* The validated IR of a loaded recipe; owned by r. */
const fla_ir *fla_recipe_ir(const fla_recipe *r);

/* Evaluates the recipe's constant decay gamma_h (natural log) for every head
** h in [0, H) with the given parameter values (ir->num_params of them, in the
** order of ir->params). FLA_RECIPE with a message naming the recipe when the
** function errors or returns a non-number. */
fla_status fla_recipe_const_decay(fla_ctx *ctx, const fla_recipe *r, int H,
                                  const double *params, double *gamma);

/* The Lua text the recipe was loaded from (*len bytes; owned by r). The
** tuning database keys on a hash of it. */
const char *fla_recipe_text(const fla_recipe *r, size_t *len);

#endif
