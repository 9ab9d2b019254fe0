/*
** harness_common.h -- what the standalone GPU harnesses of bench/ share
** (chunk_harness.c, chunk_bwd_harness.c, wy_harness.c): a driver-call check, the error
** helpers of runtime/core.c (not linked: it pulls in the whole CUDA
** backend), file reading, NVRTC compiles with a cubin cache, a seeded random
** stream, bf16 rounding and a float order for qsort.
** Built into each harness by its bench/build_*_harness.sh.
*/
#ifndef FLA_BENCH_HARNESS_COMMON_H
#define FLA_BENCH_HARNESS_COMMON_H

#include "internal.h"
#include "cuda/cuda_api.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A failed driver call ends the harness (exit 2) naming the call and where. */
#define CK(call)                                                                             \
  do {                                                                                       \
    CUresult r_ = (call);                                                                    \
    if (r_ != CUDA_SUCCESS) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, fla_cuda_result_str(r_)); \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

/* The whole file at path, NUL-terminated (free() it); NULL when unreadable. */
char *read_text(const char *path);

/* gen/stage.h's fla_template_text, read from templates/ under the current
** directory (run a harness from the repository root): the generator's
** source, the templates on disk. */

/* xorshift64: the same stream in every run. */
uint64_t rng_next(void);
double rng_unif(void);   /* in (0, 1) */
double rng_normal(void); /* standard normal (Box-Muller) */

/* Compiles src for arch with NVRTC (fla_nvrtc_compile_ex, messages in ctx),
** keeping the cubin in cache_dir (NULL: no cache) under a hash of src and
** arch, so a rerun of a harness compiles nothing. */
fla_status compile_cached(fla_ctx *ctx, const char *arch, const char *cache_dir, const char *name,
                          const char *src, void **cubin, size_t *size, char **log);

/* qsort's order of floats (medians of timings). */
int cmp_f(const void *a, const void *b);

/* float <-> bf16 bits, round to nearest even (NaN stays NaN). */
uint16_t f2bf(float x);
float bf2f(uint16_t x);

#endif
