/*
** grad_math.c -- grad_math.h in float (the model's backward) and in double
** (the finite-difference tests): one source, grad_math_impl.h, twice.
*/
#include "grad_math.h"
#include "internal.h" /* fla_parallel_for */

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The element-wise and per-row loops run in a fixed number of blocks that
** depends only on the size (so partial sums add up in the same order whatever
** the thread count: the same bits), spread over gm_threads_ threads. */
static _Thread_local int gm_threads_ = 1;

void gm_set_threads(int n) { gm_threads_ = n > 1 ? n : 1; }

typedef void (*gm_range_fn)(void *arg, int64_t block, int64_t r0, int64_t r1);
typedef struct {
  gm_range_fn fn;
  void *arg;
  int64_t n, blocks;
} gm_job;

static int gm_block_(void *p, int64_t b) {
  gm_job *j = p;
  j->fn(j->arg, b, j->n * b / j->blocks, j->n * (b + 1) / j->blocks);
  return 0;
}

/* Blocks for n items of which grain make a worthwhile block (at most 16). */
static int64_t gm_blocks_(int64_t n, int64_t grain) {
  int64_t b = n / (grain > 0 ? grain : 1);
  return b < 1 ? 1 : b > 16 ? 16 : b;
}

static void gm_run_(gm_range_fn fn, void *arg, int64_t n, int64_t blocks) {
  if (blocks <= 1 || gm_threads_ <= 1) {
    for (int64_t b = 0; b < blocks; b++) fn(arg, b, n * b / blocks, n * (b + 1) / blocks);
    return;
  }
  gm_job j = {fn, arg, n, blocks};
  fla_parallel_for(gm_threads_, blocks, gm_block_, &j);
}

#define GM_GRAIN 16384 /* elements per block at least */

#define R float
#define S f
#define GEMM cblas_sgemm
#define EXP expf
#include "grad_math_impl.h"
#undef R
#undef S
#undef GEMM
#undef EXP

#define R double
#define S d
#define GEMM cblas_dgemm
#define EXP exp
#include "grad_math_impl.h"
#undef R
#undef S
#undef GEMM
#undef EXP
