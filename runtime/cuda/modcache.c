/*
** modcache.c -- the CUDA side of the module cache (modcache.h): NVRTC behind
** the vendor-neutral cache of runtime/modcache_core.h.
*/
#include "cuda/modcache.h"
#include "cuda/cuda_api.h"
#include "cuda/nvrtc.h"
#include "modcache_core.h"

#include <stddef.h>

static const fla_modcache_compiler nvrtc_ = {
    .domain = "fla-modcache-key/1", /* unchanged since before the split: same keys */
    .ext = ".cubin",
    .version = fla_nvrtc_version,
    .default_options = fla_nvrtc_default_options,
    .compile = fla_nvrtc_compile_ex,
    .is_module = fla_cubin_is_elf,
};

void fla_modcache_key(const char *name, const char *source, const char *arch,
                      const char *const *opts, int nopts, int nvrtc_major,
                      int nvrtc_minor, uint64_t key[2]) {
  fla_modcache_core_key(&nvrtc_, name, source, arch, opts, nopts, nvrtc_major, nvrtc_minor, key);
}

int fla_modcache_entry_path(const char *name, const char *source, const char *arch,
                            const char *const *opts, int nopts, char *buf, size_t len) {
  return fla_modcache_core_entry_path(&nvrtc_, name, source, arch, opts, nopts, buf, len);
}

fla_status fla_modcache_get_or_compile_ex(fla_ctx *ctx, const char *name,
                                          const char *source, const char *arch,
                                          const char *const *opts, int nopts,
                                          void **cubin, size_t *size, int *was_cached,
                                          char **log) {
  return fla_modcache_core_get(&nvrtc_, ctx, name, source, arch, opts, nopts, cubin, size,
                               was_cached, log);
}

fla_status fla_modcache_get_or_compile(fla_ctx *ctx, const char *name, const char *source,
                                       const char *arch, const char *const *opts,
                                       int nopts, void **cubin, size_t *size,
                                       int *was_cached) {
  return fla_modcache_core_get(&nvrtc_, ctx, name, source, arch, opts, nopts, cubin, size,
                               was_cached, NULL);
}
