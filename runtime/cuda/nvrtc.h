/*
** nvrtc.h -- compiling generated CUDA C++ to a CUBIN with NVRTC, and reading
** ptxas' resource report (registers, shared memory, spills) from its log.
*/
#ifndef FLA_CUDA_NVRTC_H
#define FLA_CUDA_NVRTC_H

#include "internal.h"

/* Compiles `source` for `arch` (a real target: "sm_80", "sm_90", "sm_90a", ...)
** into a CUBIN. `name` names the program in NVRTC's messages ("gla_fwd" gives
** "gla_fwd(12): error: ..."). Options always given: --gpu-architecture=<arch>,
** -std=c++17, -default-device; fast math stays off unless extra_opts asks
** (e.g. "--use_fast_math"). extra_opts may be NULL when nopts is 0.
**
** On FLA_OK *cubin is a malloc'd buffer of *cubin_size bytes (free() it).
** FLA_UNSUPPORTED: NVRTC cannot be loaded (the message lists the libraries
** tried). FLA_ERROR: the compile failed; fla_errmsg is
** "nvrtc: <name> for <arch>: " followed by the NVRTC log (its start and its
** last ~1100 characters when long: the first error and the summary).
** FLA_INVALID: a NULL argument or an arch that is not "sm_<digits>[letter]". */
fla_status fla_nvrtc_compile(fla_ctx *ctx, const char *name, const char *source,
                             const char *arch, const char *const *extra_opts, int nopts,
                             void **cubin, size_t *cubin_size);

/* Same, and when `log` is not NULL: ptxas is asked for its resource report
** (--ptxas-options=-v, which NVRTC 12 and 13 honour), and *log receives the
** whole NVRTC log, malloc'd and NUL-terminated (also on FLA_ERROR; NULL when
** NVRTC could not be reached). free() it. */
fla_status fla_nvrtc_compile_ex(fla_ctx *ctx, const char *name, const char *source,
                                const char *arch, const char *const *extra_opts,
                                int nopts, void **cubin, size_t *cubin_size, char **log);

/* The options fla_nvrtc_compile_ex always passes after --gpu-architecture
** (part of the module cache's key). Sets *n. */
const char *const *fla_nvrtc_default_options(int *n);

/* What ptxas reported for one kernel; -1 for what the log does not say. */
typedef struct fla_kernel_resources {
  int registers;          /* per thread */
  int smem_bytes;         /* static shared memory (dynamic comes at launch) */
  int stack_bytes;        /* stack frame: local memory per thread */
  int spill_store_bytes;
  int spill_load_bytes;
  int barriers;
} fla_kernel_resources;

/* Reads ptxas' report in an NVRTC log made with --ptxas-options=-v.
** kernel: the entry's name as ptxas prints it (the extern "C" name, or the
** mangled one); NULL takes, field by field, the maximum over every entry of
** the module. Returns how many entries matched (0: every field left -1). */
int fla_nvrtc_parse_resources(const char *log, const char *kernel,
                              fla_kernel_resources *out);

/* 1 when buf starts with the ELF magic (what a CUBIN is), else 0. */
int fla_cubin_is_elf(const void *buf, size_t size);

#endif
