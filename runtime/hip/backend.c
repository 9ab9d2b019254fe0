/*
** backend.c -- the HIP backend of a context (hip_backend.h). Mirrors
** runtime/cuda/backend.c; HIP's runtime API keeps the current device per
** thread, so each entry point sets it first (hipSetDevice is cheap).
*/
#include "hip/hip_backend.h"
#include "hip/hiprtc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hip_module {
  uint64_t key[2];
  hipModule_t mod;
  int n;
  char names[FLA_STAGE_MAX_KERNELS][64];
  hipFunction_t fn[FLA_STAGE_MAX_KERNELS];
} hip_module;

struct fla_hip_ctx {
  const fla_hip_runtime *d;
  int ordinal;
  hipStream_t stream;
  fla_hip_device_info info;
  hip_module *mods;
  int nmods, capmods;
  uint64_t scratch[FLA_HIP_SCRATCH_SLOTS]; /* the op layer's reusable buffers */
  size_t scratch_bytes[FLA_HIP_SCRATCH_SLOTS];
};

static fla_status hip_fail_(fla_ctx *ctx, fla_status st, hipError_t r, const char *what) {
  return fla_set_error(ctx, st, "%s: %s", what, fla_hip_result_str(r));
}

#define HIP_TRY(ctx, call, what)                                          \
  do {                                                                    \
    hipError_t r_ = (call);                                               \
    if (r_ != FLA_HIP_SUCCESS) return hip_fail_(ctx, FLA_ERROR, r_, what); \
  } while (0)

static fla_status enter_(fla_ctx *ctx) {
  if (!ctx || !ctx->hip) return fla_set_error(ctx, FLA_INVALID, "not a HIP context");
  HIP_TRY(ctx, ctx->hip->d->hipSetDevice(ctx->hip->ordinal), "hipSetDevice");
  return FLA_OK;
}

fla_status fla_hip_ctx_open(fla_ctx *ctx, char *err, size_t errlen) {
  char why[1024] = "";
  if (fla_hip_runtime_load(why, sizeof why) != 0) {
    snprintf(err, errlen, "%s", why);
    return FLA_NODEVICE;
  }
  if (fla_hiprtc_load(why, sizeof why) != 0) {
    snprintf(err, errlen, "hipRTC is needed to compile kernels but was not found: %s", why);
    return FLA_NODEVICE;
  }
  int count = fla_hip_device_count(why, sizeof why);
  if (count <= 0) {
    snprintf(err, errlen, "%s", count < 0 ? why : "no AMD GPU: the HIP runtime reports 0 devices");
    return FLA_NODEVICE;
  }
  int ordinal = 0;
  const char *env = getenv("FLA_HIP_DEVICE");
  if (env && *env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end || v < 0 || v >= count) {
      snprintf(err, errlen, "FLA_HIP_DEVICE=%s but there are %d HIP device(s)", env, count);
      return FLA_NODEVICE;
    }
    ordinal = (int)v;
  }
  struct fla_hip_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return FLA_NOMEM;
  }
  c->d = fla_hip_runtime_api();
  c->ordinal = ordinal;
  if (fla_hip_device_query(ordinal, &c->info, why, sizeof why) != 0) {
    snprintf(err, errlen, "%s", why);
    free(c);
    return FLA_NODEVICE;
  }
  hipError_t r;
  const char *step = NULL;
  if ((r = c->d->hipSetDevice(ordinal)) != FLA_HIP_SUCCESS) step = "hipSetDevice";
  else if ((r = c->d->hipStreamCreate(&c->stream)) != FLA_HIP_SUCCESS) step = "hipStreamCreate";
  if (step) {
    snprintf(err, errlen, "%s on device %d (%s): %s", step, ordinal, c->info.name,
             fla_hip_result_str(r));
    free(c);
    return FLA_NODEVICE;
  }
  ctx->hip = c;
  snprintf(ctx->device_name, sizeof ctx->device_name, "%.180s [%.60s]", c->info.name, c->info.arch);
  return FLA_OK;
}

void fla_hip_ctx_close(fla_ctx *ctx) {
  if (!ctx || !ctx->hip) return;
  struct fla_hip_ctx *c = ctx->hip;
  c->d->hipSetDevice(c->ordinal);
  c->d->hipStreamSynchronize(c->stream);
  for (int i = 0; i < c->nmods; i++) c->d->hipModuleUnload(c->mods[i].mod);
  for (int i = 0; i < FLA_HIP_SCRATCH_SLOTS; i++)
    if (c->scratch[i]) c->d->hipFree((void *)(uintptr_t)c->scratch[i]);
  c->d->hipStreamDestroy(c->stream);
  free(c->mods);
  free(c);
  ctx->hip = NULL;
}

const fla_hip_device_info *fla_hip_ctx_info(const fla_ctx *ctx) {
  return ctx && ctx->hip ? &ctx->hip->info : NULL;
}

/* ---------------------------------------------------------------- memory */

fla_status fla_hip_mem_alloc(fla_ctx *ctx, size_t bytes, uint64_t *dptr) {
  *dptr = 0;
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  void *p = NULL;
  hipError_t r = ctx->hip->d->hipMalloc(&p, bytes ? bytes : 1);
  if (r != FLA_HIP_SUCCESS) {
    char what[320];
    snprintf(what, sizeof what, "hipMalloc of %zu bytes on %s", bytes, ctx->hip->info.name);
    return hip_fail_(ctx, r == FLA_HIP_ERROR_OUT_OF_MEMORY ? FLA_NOMEM : FLA_ERROR, r, what);
  }
  *dptr = (uint64_t)(uintptr_t)p;
  return FLA_OK;
}

void fla_hip_mem_free(fla_ctx *ctx, uint64_t dptr) {
  if (!dptr || enter_(ctx) != FLA_OK) return;
  ctx->hip->d->hipFree((void *)(uintptr_t)dptr);
}

fla_status fla_hip_scratch(fla_ctx *ctx, int slot, size_t bytes, uint64_t *dptr) {
  *dptr = 0;
  if (!ctx || !ctx->hip) return fla_set_error(ctx, FLA_INVALID, "not a HIP context");
  if (slot < 0 || slot >= FLA_HIP_SCRATCH_SLOTS)
    return fla_set_error(ctx, FLA_ERROR, "HIP scratch slot %d outside 0..%d", slot,
                         FLA_HIP_SCRATCH_SLOTS - 1);
  struct fla_hip_ctx *c = ctx->hip;
  if (c->scratch[slot] && c->scratch_bytes[slot] >= bytes) {
    *dptr = c->scratch[slot];
    return FLA_OK;
  }
  /* Queued kernels may still read the old buffer: wait before freeing it. */
  fla_status st = fla_hip_sync(ctx, "HIP scratch");
  if (st != FLA_OK) return st;
  if (c->scratch[slot]) fla_hip_mem_free(ctx, c->scratch[slot]);
  c->scratch[slot] = 0, c->scratch_bytes[slot] = 0;
  if ((st = fla_hip_mem_alloc(ctx, bytes, &c->scratch[slot])) != FLA_OK) return st;
  c->scratch_bytes[slot] = bytes;
  *dptr = c->scratch[slot];
  return FLA_OK;
}

/* Synchronous copies and memsets run on the null stream, which is ordered
** with the context's (blocking) stream, as on CUDA. */
fla_status fla_hip_memset_d8(fla_ctx *ctx, uint64_t dptr, unsigned char v, size_t bytes) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !bytes) return st;
  HIP_TRY(ctx, ctx->hip->d->hipMemsetD8((hipDeviceptr_t)(uintptr_t)dptr, v, bytes), "hipMemsetD8");
  return FLA_OK;
}

fla_status fla_hip_memset_d16(fla_ctx *ctx, uint64_t dptr, uint16_t v, size_t count) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !count) return st;
  HIP_TRY(ctx, ctx->hip->d->hipMemsetD16((hipDeviceptr_t)(uintptr_t)dptr, v, count),
          "hipMemsetD16");
  return FLA_OK;
}

fla_status fla_hip_memset_d32(fla_ctx *ctx, uint64_t dptr, uint32_t v, size_t count) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !count) return st;
  HIP_TRY(ctx, ctx->hip->d->hipMemsetD32((hipDeviceptr_t)(uintptr_t)dptr, (int)v, count),
          "hipMemsetD32");
  return FLA_OK;
}

fla_status fla_hip_upload(fla_ctx *ctx, uint64_t dst, const void *src, size_t bytes) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !bytes) return st;
  /* hipMemcpyHtoD takes a non-const source but does not write it. */
  HIP_TRY(ctx, ctx->hip->d->hipMemcpyHtoD((hipDeviceptr_t)(uintptr_t)dst, (void *)(uintptr_t)src,
                                          bytes), "hipMemcpyHtoD");
  return FLA_OK;
}

fla_status fla_hip_download(fla_ctx *ctx, void *dst, uint64_t src, size_t bytes) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !bytes) return st;
  HIP_TRY(ctx, ctx->hip->d->hipMemcpyDtoH(dst, (hipDeviceptr_t)(uintptr_t)src, bytes),
          "hipMemcpyDtoH");
  return FLA_OK;
}

/* --------------------------------------------------------------- modules */

fla_status fla_hip_get_kernels(fla_ctx *ctx, const char *name, const char *source,
                               char (*names)[64], int n, hipFunction_t *fns) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  struct fla_hip_ctx *c = ctx->hip;
  if (n < 1 || n > FLA_STAGE_MAX_KERNELS)
    return fla_set_error(ctx, FLA_ERROR, "module '%s': %d kernels", name, n);
  uint64_t key[2];
  fla_hip_modcache_key(name, source, c->info.arch, NULL, 0, 0, 0, key);
  hip_module *m = NULL;
  for (int i = 0; i < c->nmods && !m; i++)
    if (c->mods[i].key[0] == key[0] && c->mods[i].key[1] == key[1]) m = &c->mods[i];
  if (!m) {
    if (c->nmods == c->capmods) {
      int cap = c->capmods ? 2 * c->capmods : 16;
      hip_module *grown = realloc(c->mods, sizeof *grown * (size_t)cap);
      if (!grown) return fla_set_error(ctx, FLA_NOMEM, "out of memory (module table)");
      c->mods = grown, c->capmods = cap;
    }
    void *code = NULL;
    size_t size = 0;
    st = fla_hip_modcache_get_or_compile(ctx, name, source, c->info.arch, NULL, 0, &code, &size,
                                         NULL, NULL);
    if (st != FLA_OK) return st;
    hip_module fresh;
    memset(&fresh, 0, sizeof fresh);
    memcpy(fresh.key, key, sizeof key);
    hipError_t r = c->d->hipModuleLoadData(&fresh.mod, code);
    free(code);
    if (r != FLA_HIP_SUCCESS) {
      char what[160];
      snprintf(what, sizeof what, "hipModuleLoadData of module '%s' (%s)", name, c->info.arch);
      return hip_fail_(ctx, FLA_ERROR, r, what);
    }
    c->mods[c->nmods++] = fresh;
    m = &c->mods[c->nmods - 1];
  }
  for (int k = 0; k < n; k++) {
    hipFunction_t f = NULL;
    for (int j = 0; j < m->n && !f; j++)
      if (strcmp(m->names[j], names[k]) == 0) f = m->fn[j];
    if (!f) {
      hipError_t r = c->d->hipModuleGetFunction(&f, m->mod, names[k]);
      if (r != FLA_HIP_SUCCESS) {
        char what[160];
        snprintf(what, sizeof what, "hipModuleGetFunction '%s' in module '%s'", names[k], name);
        return hip_fail_(ctx, FLA_ERROR, r, what);
      }
      if (m->n < FLA_STAGE_MAX_KERNELS) {
        snprintf(m->names[m->n], sizeof m->names[0], "%s", names[k]);
        m->fn[m->n++] = f;
      }
    }
    fns[k] = f;
  }
  return FLA_OK;
}

fla_status fla_hip_launch(fla_ctx *ctx, hipFunction_t fn, const fla_kernel_launch *l,
                          fla_kernel_args *args) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  struct fla_hip_ctx *c = ctx->hip;
  if ((int)l->smem > c->info.smem_per_block)
    return fla_set_error(ctx, FLA_ERROR,
                         "kernel %s: %u bytes of dynamic shared memory, more than the %d of %s",
                         l->name, l->smem, c->info.smem_per_block, c->info.name);
  size_t bytes = sizeof *args;
  void *extra[] = {FLA_HIP_LAUNCH_PARAM_BUFFER_POINTER, args, FLA_HIP_LAUNCH_PARAM_BUFFER_SIZE,
                   &bytes, FLA_HIP_LAUNCH_PARAM_END};
  hipError_t r = c->d->hipModuleLaunchKernel(fn, l->grid[0], l->grid[1], l->grid[2], l->block[0],
                                             l->block[1], l->block[2], l->smem, c->stream, NULL,
                                             extra);
  if (r != FLA_HIP_SUCCESS) {
    char what[256];
    snprintf(what, sizeof what,
             "kernel %s: hipModuleLaunchKernel grid (%u,%u,%u) block (%u,%u,%u) smem %u", l->name,
             l->grid[0], l->grid[1], l->grid[2], l->block[0], l->block[1], l->block[2], l->smem);
    return hip_fail_(ctx, FLA_ERROR, r, what);
  }
  return FLA_OK;
}

fla_status fla_hip_sync(fla_ctx *ctx, const char *what) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  hipError_t r = ctx->hip->d->hipStreamSynchronize(ctx->hip->stream);
  if (r != FLA_HIP_SUCCESS) return hip_fail_(ctx, FLA_ERROR, r, what);
  return FLA_OK;
}
