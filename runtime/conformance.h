/*
** conformance.h -- running a recipe on a conformance case and comparing every
** output, final state and gradient with the reference (fla-check, tests).
*/
#ifndef FLA_CONFORMANCE_H
#define FLA_CONFORMANCE_H

#include "fla.h"

typedef struct fla_check_row {
  char tensor[64];    /* "o", "ht", "dq", ..., "g (const decay)" */
  double rel_rms;     /* ||ours - ref|| / ||ref||                */
  double tol;
} fla_check_row;

#define FLA_CHECK_MAX_ROWS 24

/* Runs case `name` of st (tensors "<name>.in.<x>", "<name>.out.o",
** "<name>.out.ht", "<name>.grad.d<x>", as in shared/conformance/README.md)
** through recipe r with algorithm algo, writing one row per compared tensor.
** A decay input may be stored as in.g or in.gk. FLA_INVALID when the case
** does not fit the recipe (missing input, unknown extra input). */
fla_status fla_check_case(fla_ctx *ctx, const fla_recipe *r, const fla_safetensors *st,
                          const char *name, fla_algo algo, double tol,
                          fla_check_row *rows, int *nrows);

/* fla_check_case with the case's inputs rounded to `dtype` (FLA_F32 or
** FLA_BF16; h0 stays f32) before the run. On a CUDA context the case is read
** and compared on the host (a CPU context of its own), the inputs are
** uploaded, the forward runs on the GPU with o in `dtype` and ht in f32, the
** backward with d_o in `dtype`, dht in f32 and the input gradients in `dtype`
** (dh0 f32), and everything is read back for the comparison. In bf16 the
** gradients of gates and rates are held to max(tol, 2e-2). *backward_skipped
** (may be NULL) is set to 0: every backend runs the backward now. */
fla_status fla_check_case_ex(fla_ctx *ctx, const fla_recipe *r, const fla_safetensors *st,
                             const char *name, fla_algo algo, fla_dtype dtype, double tol,
                             fla_check_row *rows, int *nrows, int *backward_skipped);

/* Names of the cases in st (the prefixes of "<case>.out.o"), in file order;
** returns how many, writing at most cap of them into names. */
int fla_check_list_cases(const fla_safetensors *st, char (*names)[64], int cap);

#endif
