/*
** common.h -- small helpers the command-line tools share.
*/
#ifndef FLA_TOOLS_COMMON_H
#define FLA_TOOLS_COMMON_H

#include "fla.h"

#include <stdio.h>
#include <string.h>

/* A recipe given as a path (contains '/' or ends in ".lua") or a name found
** along the recipe search path. Prints the error and returns NULL on failure. */
static inline fla_recipe *tool_load_recipe(fla_ctx *ctx, const char *prog, const char *arg) {
  fla_recipe *r = NULL;
  size_t n = strlen(arg);
  int is_path = strchr(arg, '/') || (n > 4 && strcmp(arg + n - 4, ".lua") == 0);
  fla_status s = is_path ? fla_recipe_load(ctx, arg, &r) : fla_recipe_find(ctx, arg, &r);
  if (s != FLA_OK) fprintf(stderr, "%s: %s: %s\n", prog, fla_errstr(s), fla_errmsg(ctx));
  return r;
}

/* --device cpu|cuda|hip|auto -> backend; -1 when unknown. */
static inline int tool_parse_device(const char *s) {
  if (!strcmp(s, "cpu")) return FLA_BACKEND_CPU;
  if (!strcmp(s, "cuda")) return FLA_BACKEND_CUDA;
  if (!strcmp(s, "hip")) return FLA_BACKEND_HIP;
  if (!strcmp(s, "auto")) return FLA_BACKEND_AUTO;
  return -1;
}

#endif
