/*
** hiprtc.h -- compiling generated HIP C++ to an AMD GPU code object with
** hipRTC (no GPU needed), and the module cache of runtime/modcache_core.h
** with hipRTC behind it.
*/
#ifndef FLA_HIP_HIPRTC_H
#define FLA_HIP_HIPRTC_H

#include <stdint.h>

#include "internal.h"

/* Compiles `source` for `arch` (an offload arch: "gfx90a", "gfx1030",
** "gfx90a:xnack-"; fla_hip_arch_ok) into a code object. Options always
** given: --offload-arch=<arch>, then fla_hiprtc_default_options; fast math
** stays off. `name` names the program in hipRTC's messages.
**
** On FLA_OK *code is malloc'd (*size bytes; free() it); *log (when log is
** not NULL) gets hipRTC's whole log, malloc'd (also on FLA_ERROR).
** FLA_UNSUPPORTED: hipRTC cannot be loaded (the message lists what was
** tried). FLA_ERROR: the compile failed; fla_errmsg is
** "hiprtc: <name> for <arch>: " and the log (start and end when long).
** FLA_INVALID: a NULL argument or a malformed arch. */
fla_status fla_hiprtc_compile_ex(fla_ctx *ctx, const char *name, const char *source,
                                 const char *arch, const char *const *extra_opts, int nopts,
                                 void **code, size_t *size, char **log);

/* The options passed after --offload-arch (part of the cache key). Sets *n. */
const char *const *fla_hiprtc_default_options(int *n);

/* 1 when buf starts with the ELF magic (an AMDGPU code object), else 0. */
int fla_hip_code_is_elf(const void *buf, size_t size);

/* The module cache (same directory, file format and rules as the CUDA one,
** runtime/cuda/modcache.h; files end in .hsaco and keys have their own
** domain, so they never meet NVRTC's). */
fla_status fla_hip_modcache_get_or_compile(fla_ctx *ctx, const char *name, const char *source,
                                           const char *arch, const char *const *opts,
                                           int nopts, void **code, size_t *size,
                                           int *was_cached, char **log);
void fla_hip_modcache_key(const char *name, const char *source, const char *arch,
                          const char *const *opts, int nopts, int major, int minor,
                          uint64_t key[2]);
int fla_hip_modcache_entry_path(const char *name, const char *source, const char *arch,
                                const char *const *opts, int nopts, char *buf, size_t len);

#endif
