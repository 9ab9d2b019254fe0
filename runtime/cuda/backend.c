/*
** backend.c -- the CUDA backend of a context: the driver and NVRTC (loaded
** with dlopen, runtime/cuda/cuda_api.h), one device, its primary context, one
** stream, device memory, scratch buffers reused across calls, and a table of
** loaded modules keyed by the hash of their source.
**
** Ordering: the context's stream is created blocking (CU_STREAM_DEFAULT), so
** it is ordered with the legacy default stream that the synchronous copies
** and memsets below use. A copy to the host therefore sees every kernel
** queued before it, and a copy to the device is complete when it returns.
*/
#include "internal.h"
#include "cuda/cuda_api.h"
#include "cuda/modcache.h"
#include "cuda/op_cuda.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cuda_module {
  uint64_t key[2];
  CUmodule mod;
  int n;
  char names[FLA_STAGE_MAX_KERNELS][64];
  CUfunction fn[FLA_STAGE_MAX_KERNELS];
} cuda_module;

struct fla_cuda_ctx {
  const fla_cuda_driver *d;
  CUdevice dev;
  CUcontext cu;
  CUstream stream;
  int retained;
  fla_cuda_device_info info;
  cuda_module *mods;
  int nmods, capmods;
  uint64_t scratch[FLA_CUDA_SCRATCH_SLOTS];
  size_t scratch_bytes[FLA_CUDA_SCRATCH_SLOTS];
  void *host;              /* host staging buffer */
  size_t host_bytes;
  int defer_sync;          /* fla_cuda_set_defer_sync */
  int early;               /* launches marked early go with programmatic dependent launch:
                           ** sm_90 or later, cuLaunchKernelEx, $FLA_GPU_PDL not 0 */
};

/* ----------------------------------------------------------------- errors */

static fla_status cu_fail_(fla_ctx *ctx, fla_status st, CUresult r, const char *what) {
  return fla_set_error(ctx, st, "%s: %s", what, fla_cuda_result_str(r));
}

#define CU_TRY(ctx, call, what)                                      \
  do {                                                               \
    CUresult r_ = (call);                                            \
    if (r_ != CUDA_SUCCESS) return cu_fail_(ctx, FLA_ERROR, r_, what); \
  } while (0)

/* Makes the context's CUDA context current on this thread. */
static fla_status enter_(fla_ctx *ctx) {
  if (!ctx || !ctx->cuda) return fla_set_error(ctx, FLA_INVALID, "not a CUDA context");
  struct fla_cuda_ctx *c = ctx->cuda;
  CU_TRY(ctx, c->d->cuCtxSetCurrent(c->cu), "cuCtxSetCurrent");
  return FLA_OK;
}

/* ------------------------------------------------------------ open, close */

static void put_(char *err, size_t errlen, const char *fmt, const char *a, const char *b) {
  if (err && errlen) snprintf(err, errlen, fmt, a, b);
}

/* NVRTC's loader, run beside the driver's start. Loading the 100 MB library
** takes 8 ms with a warm page cache and 160 ms with a cold one, while cuInit
** and the primary context take 160-300 ms on an H100 (bench/ctx_probe.c), so
** the two overlap instead of adding up. The result is read after the join. */
typedef struct { char why[1024]; int rc; } nvrtc_job;

static void *nvrtc_load_job_(void *arg) {
  nvrtc_job *j = arg;
  j->rc = fla_nvrtc_load(j->why, sizeof j->why);
  return NULL;
}

fla_status fla_cuda_ctx_open(fla_ctx *ctx, char *err, size_t errlen) {
  char why[1024] = "";
  nvrtc_job job = {"", -1};
  pthread_t loader;
  int threaded = pthread_create(&loader, NULL, nvrtc_load_job_, &job) == 0;
  if (!threaded) nvrtc_load_job_(&job);
  int driver_rc = fla_cuda_driver_load(why, sizeof why);
  if (threaded) pthread_join(loader, NULL);
  if (driver_rc != 0) {
    put_(err, errlen, "%s%s", why, "");
    return FLA_NODEVICE;
  }
  if (job.rc != 0) {
    put_(err, errlen, "NVRTC is needed to compile kernels but was not found: %s%s", job.why, "");
    return FLA_NODEVICE;
  }
  int count = fla_cuda_device_count(why, sizeof why);
  if (count < 0) {
    put_(err, errlen, "%s%s", why, "");
    return FLA_NODEVICE;
  }
  if (count == 0) {
    put_(err, errlen, "no CUDA device: the driver reports 0 devices%s%s", "", "");
    return FLA_NODEVICE;
  }
  int ordinal = 0;
  const char *env = getenv("FLA_CUDA_DEVICE");
  if (env && *env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end || v < 0 || v >= count) {
      char n[32];
      snprintf(n, sizeof n, "%d", count);
      put_(err, errlen, "FLA_CUDA_DEVICE=%s but there are %s CUDA device(s)", env, n);
      return FLA_NODEVICE;
    }
    ordinal = (int)v;
  }
  struct fla_cuda_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    put_(err, errlen, "out of memory%s%s", "", "");
    return FLA_NOMEM;
  }
  c->d = fla_cuda_driver_api();
  if (fla_cuda_device_query(ordinal, &c->info, why, sizeof why) != 0) {
    put_(err, errlen, "%s%s", why, "");
    free(c);
    return FLA_NODEVICE;
  }
  const char *pd = getenv("FLA_GPU_PDL");
  c->early = c->info.cc_major >= 9 && c->d->cuLaunchKernelEx && !(pd && pd[0] == '0');
  const char *step = NULL;
  CUresult r;
  if ((r = c->d->cuDeviceGet(&c->dev, ordinal)) != CUDA_SUCCESS) step = "cuDeviceGet";
  else if ((r = c->d->cuDevicePrimaryCtxRetain(&c->cu, c->dev)) != CUDA_SUCCESS)
    step = "cuDevicePrimaryCtxRetain";
  else if ((c->retained = 1, r = c->d->cuCtxSetCurrent(c->cu)) != CUDA_SUCCESS)
    step = "cuCtxSetCurrent";
  else if ((r = c->d->cuStreamCreate(&c->stream, CU_STREAM_DEFAULT)) != CUDA_SUCCESS)
    step = "cuStreamCreate";
  if (step) {
    snprintf(why, sizeof why, "%s on device %d (%s): %s", step, ordinal, c->info.name,
             fla_cuda_result_str(r));
    put_(err, errlen, "%s%s", why, "");
    if (c->retained) c->d->cuDevicePrimaryCtxRelease(c->dev);
    free(c);
    return FLA_NODEVICE;
  }
  ctx->cuda = c;
  snprintf(ctx->device_name, sizeof ctx->device_name, "%.200s [%s]", c->info.name, c->info.arch);
  return FLA_OK;
}

void fla_cuda_ctx_close(fla_ctx *ctx) {
  if (!ctx || !ctx->cuda) return;
  struct fla_cuda_ctx *c = ctx->cuda;
  c->d->cuCtxSetCurrent(c->cu);
  c->d->cuStreamSynchronize(c->stream);
  for (int i = 0; i < c->nmods; i++) c->d->cuModuleUnload(c->mods[i].mod);
  for (int i = 0; i < FLA_CUDA_SCRATCH_SLOTS; i++)
    if (c->scratch[i]) c->d->cuMemFree(c->scratch[i]);
  c->d->cuStreamDestroy(c->stream);
  c->d->cuDevicePrimaryCtxRelease(c->dev);
  free(c->mods);
  free(c->host);
  free(c);
  ctx->cuda = NULL;
}

/* ---------------------------------------------------------------- memory */

fla_status fla_cuda_mem_alloc(fla_ctx *ctx, size_t bytes, uint64_t *dptr) {
  *dptr = 0;
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  CUdeviceptr p = 0;
  CUresult r = ctx->cuda->d->cuMemAlloc(&p, bytes ? bytes : 1);
  if (r != CUDA_SUCCESS) {
    char what[320];
    snprintf(what, sizeof what, "cuMemAlloc of %zu bytes on %s", bytes, ctx->cuda->info.name);
    return cu_fail_(ctx, r == 2 /* CUDA_ERROR_OUT_OF_MEMORY */ ? FLA_NOMEM : FLA_ERROR, r, what);
  }
  *dptr = (uint64_t)p;
  return FLA_OK;
}

void fla_cuda_mem_free(fla_ctx *ctx, uint64_t dptr) {
  if (!dptr || enter_(ctx) != FLA_OK) return;
  ctx->cuda->d->cuMemFree((CUdeviceptr)dptr);
}

fla_status fla_cuda_memset_d8(fla_ctx *ctx, uint64_t dptr, unsigned char v, size_t bytes) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !bytes) return st;
  CU_TRY(ctx, ctx->cuda->d->cuMemsetD8((CUdeviceptr)dptr, v, bytes), "cuMemsetD8");
  return FLA_OK;
}

fla_status fla_cuda_memset_d32(fla_ctx *ctx, uint64_t dptr, uint32_t v, size_t count) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !count) return st;
  CU_TRY(ctx, ctx->cuda->d->cuMemsetD32((CUdeviceptr)dptr, v, count), "cuMemsetD32");
  return FLA_OK;
}

fla_status fla_cuda_memset_d16(fla_ctx *ctx, uint64_t dptr, uint16_t v, size_t count) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !count) return st;
  CU_TRY(ctx, ctx->cuda->d->cuMemsetD16((CUdeviceptr)dptr, v, count), "cuMemsetD16");
  return FLA_OK;
}

fla_status fla_cuda_upload(fla_ctx *ctx, uint64_t dst, const void *src, size_t bytes) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !bytes) return st;
  CU_TRY(ctx, ctx->cuda->d->cuMemcpyHtoD((CUdeviceptr)dst, src, bytes), "cuMemcpyHtoD");
  return FLA_OK;
}

fla_status fla_cuda_download(fla_ctx *ctx, void *dst, uint64_t src, size_t bytes) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK || !bytes) return st;
  CU_TRY(ctx, ctx->cuda->d->cuMemcpyDtoH(dst, (CUdeviceptr)src, bytes), "cuMemcpyDtoH");
  return FLA_OK;
}

fla_status fla_cuda_scratch(fla_ctx *ctx, int slot, size_t bytes, uint64_t *dptr) {
  *dptr = 0;
  if (slot < 0 || slot >= FLA_CUDA_SCRATCH_SLOTS)
    return fla_set_error(ctx, FLA_ERROR, "scratch slot %d out of range", slot);
  struct fla_cuda_ctx *c = ctx->cuda;
  if (!c) return fla_set_error(ctx, FLA_INVALID, "not a CUDA context");
  if (c->scratch_bytes[slot] < bytes || !c->scratch[slot]) {
    if (c->scratch[slot]) fla_cuda_mem_free(ctx, c->scratch[slot]);
    c->scratch[slot] = 0, c->scratch_bytes[slot] = 0;
    size_t want = bytes < 256 ? 256 : bytes;
    fla_status st = fla_cuda_mem_alloc(ctx, want, &c->scratch[slot]);
    if (st != FLA_OK) return st;
    c->scratch_bytes[slot] = want;
  }
  *dptr = c->scratch[slot];
  return FLA_OK;
}

void *fla_cuda_host_staging(fla_ctx *ctx, size_t bytes) {
  struct fla_cuda_ctx *c = ctx->cuda;
  if (!c) return NULL;
  if (c->host_bytes < bytes || !c->host) {
    free(c->host);
    c->host_bytes = 0;
    if (!(c->host = malloc(bytes ? bytes : 1))) return NULL;
    c->host_bytes = bytes;
  }
  return c->host;
}

CUstream fla_cuda_ctx_stream(const fla_ctx *ctx) {
  return ctx && ctx->cuda ? ctx->cuda->stream : NULL;
}

void fla_cuda_set_defer_sync(fla_ctx *ctx, int on) {
  if (ctx && ctx->cuda) ctx->cuda->defer_sync = on;
}

int fla_cuda_defer_sync(const fla_ctx *ctx) { return ctx && ctx->cuda && ctx->cuda->defer_sync; }

const fla_cuda_device_info *fla_cuda_ctx_info(const fla_ctx *ctx) {
  return ctx && ctx->cuda ? &ctx->cuda->info : NULL;
}

int fla_cuda_ctx_early(const fla_ctx *ctx) { return ctx && ctx->cuda && ctx->cuda->early; }

/* --------------------------------------------------------------- modules */

fla_status fla_cuda_get_kernels(fla_ctx *ctx, const char *name, const char *source,
                                char (*names)[64], int n, CUfunction *fns) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  struct fla_cuda_ctx *c = ctx->cuda;
  if (n < 1 || n > FLA_STAGE_MAX_KERNELS)
    return fla_set_error(ctx, FLA_ERROR, "module '%s': %d kernels", name, n);
  uint64_t key[2];
  fla_modcache_key(name, source, c->info.arch, NULL, 0, 0, 0, key);
  cuda_module *m = NULL;
  for (int i = 0; i < c->nmods && !m; i++)
    if (c->mods[i].key[0] == key[0] && c->mods[i].key[1] == key[1]) m = &c->mods[i];
  if (!m) {
    if (c->nmods == c->capmods) {
      int cap = c->capmods ? 2 * c->capmods : 16;
      cuda_module *grown = realloc(c->mods, sizeof *grown * (size_t)cap);
      if (!grown) return fla_set_error(ctx, FLA_NOMEM, "out of memory (module table)");
      c->mods = grown, c->capmods = cap;
    }
    void *cubin = NULL;
    size_t size = 0;
    st = fla_modcache_get_or_compile(ctx, name, source, c->info.arch, NULL, 0, &cubin, &size, NULL);
    if (st != FLA_OK) return st;
    cuda_module fresh;
    memset(&fresh, 0, sizeof fresh);
    memcpy(fresh.key, key, sizeof key);
    CUresult r = c->d->cuModuleLoadData(&fresh.mod, cubin);
    free(cubin);
    if (r != CUDA_SUCCESS) {
      char what[128];
      snprintf(what, sizeof what, "cuModuleLoadData of module '%s' (%s)", name, c->info.arch);
      return cu_fail_(ctx, FLA_ERROR, r, what);
    }
    c->mods[c->nmods++] = fresh;
    m = &c->mods[c->nmods - 1];
  }
  /* Functions by name; a module may be asked for different subsets. */
  for (int k = 0; k < n; k++) {
    CUfunction f = NULL;
    for (int j = 0; j < m->n && !f; j++)
      if (strcmp(m->names[j], names[k]) == 0) f = m->fn[j];
    if (!f) {
      CUresult r = c->d->cuModuleGetFunction(&f, m->mod, names[k]);
      if (r != CUDA_SUCCESS) {
        char what[160];
        snprintf(what, sizeof what, "cuModuleGetFunction '%s' in module '%s'", names[k], name);
        return cu_fail_(ctx, FLA_ERROR, r, what);
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

fla_status fla_cuda_launch(fla_ctx *ctx, CUfunction fn, const fla_kernel_launch *l,
                           fla_kernel_args *args) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  struct fla_cuda_ctx *c = ctx->cuda;
  if ((int)l->smem > c->info.smem_per_block) {
    if ((int)l->smem > c->info.smem_per_block_optin)
      return fla_set_error(ctx, FLA_ERROR,
                           "kernel %s: %u bytes of dynamic shared memory, more than the %d of %s",
                           l->name, l->smem, c->info.smem_per_block_optin, c->info.name);
    CUresult r = c->d->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                          (int)l->smem);
    if (r != CUDA_SUCCESS) {
      char what[128];
      snprintf(what, sizeof what, "kernel %s: cuFuncSetAttribute(max dynamic smem %u)", l->name,
               l->smem);
      return cu_fail_(ctx, FLA_ERROR, r, what);
    }
  }
  void *params[1] = {args};
  CUresult r;
  if (l->early && c->early) {
    r = fla_cuda_launch_early(c->d, fn, l->grid, l->block, l->smem, c->stream, params);
  } else {
    r = c->d->cuLaunchKernel(fn, l->grid[0], l->grid[1], l->grid[2], l->block[0], l->block[1],
                             l->block[2], l->smem, c->stream, params, NULL);
  }
  if (r != CUDA_SUCCESS) {
    char what[256];
    snprintf(what, sizeof what, "kernel %s: cuLaunchKernel grid (%u,%u,%u) block (%u,%u,%u) smem %u",
             l->name, l->grid[0], l->grid[1], l->grid[2], l->block[0], l->block[1], l->block[2],
             l->smem);
    return cu_fail_(ctx, FLA_ERROR, r, what);
  }
  return FLA_OK;
}

fla_status fla_cuda_sync(fla_ctx *ctx, const char *what) {
  fla_status st = enter_(ctx);
  if (st != FLA_OK) return st;
  CUresult r = ctx->cuda->d->cuStreamSynchronize(ctx->cuda->stream);
  if (r != CUDA_SUCCESS) return cu_fail_(ctx, FLA_ERROR, r, what);
  return FLA_OK;
}
