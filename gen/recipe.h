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

/* The shipped recipes as embedded in the library at build time (the build's
** fla_recipes.c, from cmake/embed_recipes.cmake): the Lua text of recipe
** `name` (NUL-terminated, static), or NULL when none is shipped by that name;
** the name of the i-th, sorted, or NULL past the last. */
const char *fla_builtin_recipe_text(const char *name);
const char *fla_builtin_recipe_name(int i);

/* Loads the embedded copy of shipped recipe `name` (its chunk name, for
** messages and fla_recipe_source, is "builtin:<name>.lua"). FLA_INVALID when
** no recipe of that name is shipped. */
fla_status fla_recipe_load_builtin(fla_ctx *ctx, const char *name, fla_recipe **out);

#endif
