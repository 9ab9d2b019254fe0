/*
** harness.h -- helpers shared by the Check suites.
*/
#ifndef FLA_TEST_HARNESS_H
#define FLA_TEST_HARNESS_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "fla.h"

/* Path of a file under ../shared (FLA_SHARED_DIR, or $FLA_SHARED_DIR when set). */
const char *th_shared_path(const char *rel);
/* Path of a file in the source tree (FLA_SOURCE_DIR). */
const char *th_source_path(const char *rel);

/* Deterministic random numbers (xorshift64*), per-test seeded. */
typedef struct { uint64_t s; } th_rng;
void   th_seed(th_rng *r, uint64_t seed);
double th_uniform(th_rng *r);        /* [0, 1) */
double th_normal(th_rng *r);         /* standard normal */
void   th_fill_normal(th_rng *r, double *x, int64_t n, double stddev);
/* log(sigmoid(x)) of normals: typical natural-log gates in (-inf, 0). */
void   th_fill_logsigmoid(th_rng *r, double *x, int64_t n);

/* ||a - b|| / ||b|| (0 when both are zero; 1 when only b is zero). */
double th_rel_rms_f64(const double *a, const double *b, int64_t n);
double th_rel_rms_f32(const float *a, const float *b, int64_t n);
int    th_any_nan_f32(const float *a, int64_t n);

/* Seconds on the monotonic clock. */
double th_now_s(void);
/* A CPU context (the test fails when it cannot be made). */
fla_ctx *th_cpu_ctx(void);
/* A CUDA context (the test fails, with the reason, when it cannot be made). */
fla_ctx *th_cuda_ctx(void);
/* The directory of the tiny fla checkpoint `name` under
** ../shared/conformance/tiny_models (a static buffer: copy it to keep it). */
const char *th_tiny_model_dir(const char *name);

/* Files for the tests: n bytes of p into path, the whole of path (malloc'd,
** *n set), and the number of entries of a directory besides . and ..;
** each asserts that the file system did what was asked. */
void th_write_bytes(const char *path, const void *p, size_t n);
unsigned char *th_read_bytes(const char *path, size_t *n);
int th_count_entries(const char *dir);

/* FLA_TEST_QUICK set in the environment: smaller loops (sanitizer builds). */
int th_quick(void);

/* Runs a suite with CK_NORMAL output; returns the process exit code. */
int th_run_suite(Suite *s);

/* Whether a CUDA context opens, asked in a child process (the driver must not
** be initialised before Check forks the tests); why (len bytes) gets the
** reason when not. */
int th_probe_cuda(char *why, size_t len);

/* Compiles `source` (module `name`) with NVRTC for sm_80 and sm_90 and
** asserts an ELF cubin each time (no GPU needed); prints "<test>: SKIP
** compile of <name>: why" and returns when NVRTC is not available. */
void th_check_nvrtc_compiles(const char *test, const char *name, const char *source);

#endif
