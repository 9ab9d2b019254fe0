/*
** modcache.h -- the on-disk cache of compiled modules (CUBINs), keyed by a
** 128-bit hash of everything that decides the compiler's output.
**
** Directory: $FLA_CACHE_DIR, else $XDG_CACHE_HOME/fla/modules, else
** $HOME/.cache/fla/modules (created on first write, mode 0700). One file per
** module, "<name>-<32 hex digits>.cubin": a 64-byte header (magic, format
** version, key, sizes, NVRTC version, checksum), the CUBIN, then NVRTC's log
** (which holds ptxas' resource report). Files are written to a temporary
** name and renamed into place, so readers never see half a file; a file that
** fails any check (short, wrong magic or key, bad checksum) is ignored,
** recompiled and replaced. The cache is best-effort: a directory that cannot
** be created or written (read-only home, FLA_CACHE_DIR=/dev/null) only means
** every call compiles.
*/
#ifndef FLA_CUDA_MODCACHE_H
#define FLA_CUDA_MODCACHE_H

#include <stdint.h>

#include "internal.h"
#include "modcache_core.h" /* fla_modcache_dir, and the format shared with HIP */

/* Returns the module for (name, source, arch, opts) from the cache, or
** compiles it with fla_nvrtc_compile_ex and stores it. Statuses and messages
** are fla_nvrtc_compile's. *cubin is malloc'd (free() it); *was_cached (may
** be NULL) is 1 when the module came from disk, 0 when compiled now. */
fla_status fla_modcache_get_or_compile(fla_ctx *ctx, const char *name, const char *source,
                                       const char *arch, const char *const *opts,
                                       int nopts, void **cubin, size_t *size,
                                       int *was_cached);

/* Same, and *log (when log is not NULL) receives the NVRTC log of the
** compile, stored with the module, so fla_nvrtc_parse_resources works on a
** cached module too. malloc'd and NUL-terminated; free() it. */
fla_status fla_modcache_get_or_compile_ex(fla_ctx *ctx, const char *name,
                                          const char *source, const char *arch,
                                          const char *const *opts, int nopts,
                                          void **cubin, size_t *size, int *was_cached,
                                          char **log);

/* The 128-bit key of a module: source, name, arch, the default and extra
** options in order, and the NVRTC version, each length-prefixed so no two
** different inputs share a byte stream. Needs no NVRTC. */
void fla_modcache_key(const char *name, const char *source, const char *arch,
                      const char *const *opts, int nopts, int nvrtc_major,
                      int nvrtc_minor, uint64_t key[2]);

/* Path of the file that holds (or would hold) a module, for the NVRTC that
** is loaded. 0 on success; -1 when no directory is configured, NVRTC is not
** loadable, or buf is too small. */
int fla_modcache_entry_path(const char *name, const char *source, const char *arch,
                            const char *const *opts, int nopts, char *buf, size_t len);

#endif
