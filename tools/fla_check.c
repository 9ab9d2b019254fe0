/*
** fla-check -- runs a recipe on a conformance case and compares every output,
** final state and gradient with the reference, one line per tensor.
**
**   fla-check RECIPE FILE.safetensors CASE [--device cpu|cuda|auto]
**             [--algo chunk|recurrent|both] [--dtype f32|bf16] [--tol X]
**   fla-check --list FILE.safetensors
**
** --dtype bf16 rounds the case's inputs to bfloat16 before the run (on the
** GPU, o is then bf16 too); its default tolerance is 1e-2 instead of 1e-4.
** On the GPU (--device cuda) the forward and the backward run there: o, ht
** and every gradient of the case are compared (input gradients in the
** --dtype, dh0 in f32; in bf16 gates and rates are held to 2e-2).
**
** Exit status: 0 when every compared tensor is within tolerance, 1 when any
** is not, 2 when the check could not run (bad arguments, file, recipe, case,
** or a device that cannot be used).
*/
#include "conformance.h"
#include "common.h"

#include <math.h>
#include <stdlib.h>

static void usage_(void) {
  fprintf(stderr,
          "usage: fla-check RECIPE FILE.safetensors CASE [--device cpu|cuda|auto]\n"
          "                 [--algo chunk|recurrent|both] [--dtype f32|bf16] [--tol X]\n"
          "       fla-check --list FILE.safetensors\n"
          "RECIPE is a recipe name (gla) or a path to a .lua file. Tensors of CASE are named\n"
          "CASE.in.<x>, CASE.out.o, CASE.out.ht, CASE.grad.d<x> (see docs/recipes.md).\n");
}

static int list_cases_(fla_ctx *ctx, const char *path) {
  fla_safetensors *st;
  fla_status s = fla_safetensors_open(ctx, path, &st);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-check: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    return 2;
  }
  char names[256][64];
  int n = fla_check_list_cases(st, names, 256);
  for (int i = 0; i < n && i < 256; i++) printf("%s\n", names[i]);
  fla_safetensors_free(st);
  return 0;
}

/* Runs one algorithm; returns 0 (all within tolerance), 1, or 2 (error). */
static int check_algo_(fla_ctx *ctx, fla_recipe *r, fla_safetensors *st, const char *cs,
                       fla_algo algo, fla_dtype dtype, double tol) {
  const char *label = algo == FLA_ALGO_RECURRENT ? "recurrent" : "chunk";
  fla_check_row rows[FLA_CHECK_MAX_ROWS];
  int n = 0, skipped = 0;
  fla_status s = fla_check_case_ex(ctx, r, st, cs, algo, dtype, tol, rows, &n, &skipped);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-check: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    return 2;
  }
  int bad = 0;
  for (int i = 0; i < n; i++) {
    int ok = rows[i].rel_rms <= rows[i].tol;  /* NaN fails */
    bad |= !ok;
    printf("%-10s %-16s rel_rms %.3e  tol %.0e  %s\n", label, rows[i].tensor, rows[i].rel_rms,
           rows[i].tol, ok ? "ok" : "FAIL");
  }
  if (skipped) printf("%-10s backward: not generated for the GPU yet\n", label);
  return bad;
}

int main(int argc, char **argv) {
  const char *pos[3] = {0};
  int npos = 0, device = FLA_BACKEND_CPU, list = 0;
  const char *algo = "both";
  double tol = 0;
  fla_dtype dtype = FLA_F32;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--device") && i + 1 < argc) {
      if ((device = tool_parse_device(argv[++i])) < 0) {
        fprintf(stderr, "fla-check: unknown device '%s' (cpu, cuda, hip, auto)\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--algo") && i + 1 < argc) {
      algo = argv[++i];
    } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
      const char *d = argv[++i];
      if (!strcmp(d, "f32")) dtype = FLA_F32;
      else if (!strcmp(d, "bf16")) dtype = FLA_BF16;
      else {
        fprintf(stderr, "fla-check: --dtype must be f32 or bf16, not '%s'\n", d);
        return 2;
      }
    } else if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
      char *end;
      tol = strtod(argv[++i], &end);
      if (*end || !(tol > 0)) {
        fprintf(stderr, "fla-check: --tol '%s' is not a positive number\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--list")) {
      list = 1;
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage_();
      return 0;
    } else if (argv[i][0] == '-' || npos == 3) {
      usage_();
      return 2;
    } else {
      pos[npos++] = argv[i];
    }
  }
  if (strcmp(algo, "chunk") && strcmp(algo, "recurrent") && strcmp(algo, "both")) {
    fprintf(stderr, "fla-check: --algo must be chunk, recurrent or both, not '%s'\n", algo);
    return 2;
  }
  if ((list && npos != 1) || (!list && npos != 3)) {
    usage_();
    return 2;
  }
  if (tol == 0) tol = dtype == FLA_BF16 ? 1e-2 : 1e-4;
  fla_ctx *ctx;
  char why[1024];
  fla_status s = fla_ctx_create_ex((fla_backend)device, &ctx, why, sizeof why);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-check: cannot use device: %s: %s\n", fla_errstr(s), why);
    return 2;
  }
  if (list) {
    int rc = list_cases_(ctx, pos[0]);
    fla_ctx_free(ctx);
    return rc;
  }
  int rc = 2;
  fla_safetensors *st = NULL;
  fla_recipe *r = tool_load_recipe(ctx, "fla-check", pos[0]);
  if (r && (s = fla_safetensors_open(ctx, pos[1], &st)) != FLA_OK)
    fprintf(stderr, "fla-check: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
  if (r && st) {
    rc = 0;
    if (strcmp(algo, "recurrent")) rc |= check_algo_(ctx, r, st, pos[2], FLA_ALGO_CHUNK, dtype, tol);
    if (rc < 2 && strcmp(algo, "chunk")) rc |= check_algo_(ctx, r, st, pos[2], FLA_ALGO_RECURRENT, dtype, tol);
    if (rc > 2) rc = 2;
  }
  fla_safetensors_free(st);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
  return rc;
}
