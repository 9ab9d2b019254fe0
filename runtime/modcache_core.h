/*
** modcache_core.h -- the vendor-neutral part of the on-disk module cache:
** the 128-bit key, the file layout, the directory, reading and writing
** entries. Each backend wraps it with its runtime compiler (NVRTC in
** runtime/cuda/modcache.c, hipRTC in runtime/hip/hip_modcache.c), described by
** an fla_modcache_compiler; the file format, directory and rules are shared
** (see runtime/cuda/modcache.h for the contract the wrappers keep).
*/
#ifndef FLA_MODCACHE_CORE_H
#define FLA_MODCACHE_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* A runtime compiler as the cache sees it. */
typedef struct fla_modcache_compiler {
  /* Hashed first into every key: a different domain never shares a key
  ** (NVRTC keeps "fla-modcache-key/1", so its keys did not change). */
  const char *domain;
  const char *ext;  /* file name ending: ".cubin", ".hsaco" */
  /* The compiler's version (part of the key); 0, or -1 when not loadable. */
  int (*version)(int *major, int *minor);
  /* The options always passed besides the target (part of the key). */
  const char *const *(*default_options)(int *n);
  /* Compiles; *log (when log is not NULL) gets the whole log, malloc'd. */
  fla_status (*compile)(fla_ctx *ctx, const char *name, const char *source, const char *arch,
                        const char *const *opts, int nopts, void **bin, size_t *size,
                        char **log);
  /* 1 when the bytes look like a module of this compiler (a cheap check). */
  int (*is_module)(const void *buf, size_t size);
} fla_modcache_compiler;

/* The key: domain, name, arch, source, the default and extra options in
** order, the compiler version, each length-prefixed. */
void fla_modcache_core_key(const fla_modcache_compiler *cc, const char *name,
                           const char *source, const char *arch, const char *const *opts,
                           int nopts, int major, int minor, uint64_t key[2]);

/* Path of the entry for the loaded compiler; 0, or -1 (no directory, no
** compiler, buf too small). */
int fla_modcache_core_entry_path(const fla_modcache_compiler *cc, const char *name,
                                 const char *source, const char *arch,
                                 const char *const *opts, int nopts, char *buf, size_t len);

/* The cached module, or a compile through cc->compile stored for next time. */
fla_status fla_modcache_core_get(const fla_modcache_compiler *cc, fla_ctx *ctx,
                                 const char *name, const char *source, const char *arch,
                                 const char *const *opts, int nopts, void **bin,
                                 size_t *size, int *was_cached, char **log);

/* The cache directory as configured by the environment ($FLA_CACHE_DIR,
** $XDG_CACHE_HOME/fla/modules, $HOME/.cache/fla/modules). 0, or -1. */
int fla_modcache_dir(char *buf, size_t len);

#endif
