/*
** cuda_api.c -- dlopen loaders for the CUDA driver and NVRTC, and device
** queries. See cuda_api.h.
*/
#include "cuda/cuda_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRBUF 1536

typedef struct sym_entry {
  const char *name;
  const char *fallback;  /* an older ABI name with the same signature, or NULL */
  size_t offset;         /* where the pointer goes in the table */
  int optional;
} sym_entry;

static void put_err(char *err, size_t errlen, const char *msg) {
  if (err && errlen) snprintf(err, errlen, "%s", msg);
}

/* Resolves every entry into table. Returns NULL when all required symbols
** were found, else the name of the first missing one. */
static const char *resolve(void *handle, const sym_entry *syms, size_t n, void *table) {
  for (size_t i = 0; i < n; i++) {
    void *p = dlsym(handle, syms[i].name);
    if (!p && syms[i].fallback) p = dlsym(handle, syms[i].fallback);
    if (!p && !syms[i].optional) return syms[i].name;
    /* memcpy: ISO C has no cast from void * to a function pointer, POSIX
    ** guarantees they share a representation. */
    memcpy((char *)table + syms[i].offset, &p, sizeof p);
  }
  return NULL;
}

/* ------------------------------------------------------------------ driver */

#define DRV(field, sym, fb, opt) { sym, fb, offsetof(fla_cuda_driver, field), opt }

static const sym_entry driver_syms[] = {
  DRV(cuInit, "cuInit", NULL, 0),
  DRV(cuDriverGetVersion, "cuDriverGetVersion", NULL, 0),
  DRV(cuGetErrorString, "cuGetErrorString", NULL, 0),
  DRV(cuGetErrorName, "cuGetErrorName", NULL, 0),
  DRV(cuDeviceGetCount, "cuDeviceGetCount", NULL, 0),
  DRV(cuDeviceGet, "cuDeviceGet", NULL, 0),
  DRV(cuDeviceGetName, "cuDeviceGetName", NULL, 0),
  DRV(cuDeviceGetAttribute, "cuDeviceGetAttribute", NULL, 0),
  DRV(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL, 0),
  DRV(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", 0),
  DRV(cuCtxSetCurrent, "cuCtxSetCurrent", NULL, 0),
  DRV(cuCtxSynchronize, "cuCtxSynchronize", NULL, 0),
  DRV(cuStreamCreate, "cuStreamCreate", NULL, 0),
  DRV(cuStreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy", 0),
  DRV(cuStreamSynchronize, "cuStreamSynchronize", NULL, 0),
  DRV(cuMemAlloc, "cuMemAlloc_v2", NULL, 0),
  DRV(cuMemFree, "cuMemFree_v2", NULL, 0),
  DRV(cuMemcpyHtoD, "cuMemcpyHtoD_v2", NULL, 0),
  DRV(cuMemcpyDtoH, "cuMemcpyDtoH_v2", NULL, 0),
  DRV(cuMemcpyDtoD, "cuMemcpyDtoD_v2", NULL, 0),
  DRV(cuMemsetD8, "cuMemsetD8_v2", NULL, 0),
  DRV(cuMemsetD16, "cuMemsetD16_v2", NULL, 0),
  DRV(cuMemsetD32, "cuMemsetD32_v2", NULL, 0),
  DRV(cuModuleLoadData, "cuModuleLoadData", NULL, 0),
  DRV(cuModuleUnload, "cuModuleUnload", NULL, 0),
  DRV(cuModuleGetFunction, "cuModuleGetFunction", NULL, 0),
  DRV(cuFuncGetAttribute, "cuFuncGetAttribute", NULL, 0),
  DRV(cuFuncSetAttribute, "cuFuncSetAttribute", NULL, 0),
  DRV(cuLaunchKernel, "cuLaunchKernel", NULL, 0),
  DRV(cuEventCreate, "cuEventCreate", NULL, 0),
  DRV(cuEventRecord, "cuEventRecord", NULL, 0),
  DRV(cuEventSynchronize, "cuEventSynchronize", NULL, 0),
  /* cuda.h 12.8+ maps cuEventElapsedTime to _v2; older drivers have only v1. */
  DRV(cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime", 0),
  DRV(cuEventDestroy, "cuEventDestroy_v2", "cuEventDestroy", 0),
  DRV(cuDeviceTotalMem, "cuDeviceTotalMem_v2", NULL, 1),
  DRV(cuMemGetInfo, "cuMemGetInfo_v2", NULL, 1),
  DRV(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL, 1),
  DRV(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL, 1),
  DRV(cuMemsetD32Async, "cuMemsetD32Async", NULL, 1),
  DRV(cuStreamWaitEvent, "cuStreamWaitEvent", NULL, 1),
  DRV(cuOccupancyMaxActiveBlocksPerMultiprocessor,
      "cuOccupancyMaxActiveBlocksPerMultiprocessor", NULL, 1),
  DRV(cuLaunchKernelEx, "cuLaunchKernelEx", NULL, 1),
};

static pthread_once_t driver_once_flag = PTHREAD_ONCE_INIT;
static fla_cuda_driver driver_table;
static int driver_ok;
static char driver_err[ERRBUF];

static void driver_load_once(void) {
  static const char *const names[] = {"libcuda.so.1", "libcuda.so"};
  void *h = NULL;
  const char *last = "";
  char lastbuf[512] = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) {
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    /* Keep libcuda.so.1's reason: the one that matters when it is broken. */
    if (!h && (last = dlerror()) != NULL && !lastbuf[0])
      snprintf(lastbuf, sizeof lastbuf, "%s", last);
  }
  if (!h) {
    snprintf(driver_err, sizeof driver_err,
             "CUDA driver not found (tried libcuda.so.1, libcuda.so: %s)", lastbuf);
    return;
  }
  const char *missing =
      resolve(h, driver_syms, sizeof driver_syms / sizeof driver_syms[0], &driver_table);
  if (missing) {
    snprintf(driver_err, sizeof driver_err,
             "CUDA driver too old: libcuda has no %s", missing);
    memset(&driver_table, 0, sizeof driver_table);
    dlclose(h);
    return;
  }
  CUresult r = driver_table.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char *name = NULL, *str = NULL;
    driver_table.cuGetErrorName(r, &name);
    driver_table.cuGetErrorString(r, &str);
    snprintf(driver_err, sizeof driver_err, "cuInit failed: %s (%s)",
             name ? name : "?", str ? str : "no description");
    /* The handle stays open: unloading a driver after cuInit is not safe. */
    memset(&driver_table, 0, sizeof driver_table);
    return;
  }
  driver_ok = 1;
}

int fla_cuda_driver_load(char *err, size_t errlen) {
  pthread_once(&driver_once_flag, driver_load_once);
  if (driver_ok) return 0;
  put_err(err, errlen, driver_err);
  return -1;
}

const fla_cuda_driver *fla_cuda_driver_api(void) {
  pthread_once(&driver_once_flag, driver_load_once);
  return driver_ok ? &driver_table : NULL;
}

CUresult fla_cuda_launch_early(const fla_cuda_driver *d, CUfunction f, const unsigned g[3],
                               const unsigned b[3], unsigned smem, CUstream s, void **params) {
  if (!d || !d->cuLaunchKernelEx) return CUDA_ERROR_NOT_SUPPORTED;
  fla_cuda_launch_attr at;
  memset(&at, 0, sizeof at);
  at.id = FLA_CUDA_ATTR_PDL, at.v.value = 1;
  fla_cuda_launch_config lc = {g[0], g[1], g[2], b[0], b[1], b[2], smem, s, &at, 1};
  return d->cuLaunchKernelEx(&lc, f, params, NULL);
}

const char *fla_cuda_result_str(CUresult r) {
  static _Thread_local char buf[256];
  const char *name = NULL, *str = NULL;
  if (driver_ok) {
    driver_table.cuGetErrorName(r, &name);
    driver_table.cuGetErrorString(r, &str);
  }
  if (name)
    snprintf(buf, sizeof buf, "%s: %s", name, str ? str : "");
  else
    snprintf(buf, sizeof buf, "CUresult %d", r);
  return buf;
}

/* ------------------------------------------------------------------- NVRTC */

#define NVR(field, sym) { sym, NULL, offsetof(fla_nvrtc_api, field), 0 }

static const sym_entry nvrtc_syms[] = {
  NVR(nvrtcGetErrorString, "nvrtcGetErrorString"),
  NVR(nvrtcVersion, "nvrtcVersion"),
  NVR(nvrtcCreateProgram, "nvrtcCreateProgram"),
  NVR(nvrtcCompileProgram, "nvrtcCompileProgram"),
  NVR(nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize"),
  NVR(nvrtcGetProgramLog, "nvrtcGetProgramLog"),
  NVR(nvrtcGetCUBINSize, "nvrtcGetCUBINSize"),
  NVR(nvrtcGetCUBIN, "nvrtcGetCUBIN"),
  NVR(nvrtcGetPTXSize, "nvrtcGetPTXSize"),
  NVR(nvrtcGetPTX, "nvrtcGetPTX"),
  NVR(nvrtcDestroyProgram, "nvrtcDestroyProgram"),
};

void *fla_nvrtc_try_load(const char *const *candidates, int n, fla_nvrtc_api *api,
                         char *err, size_t errlen) {
  char tried[1024] = "";
  char last[512] = "no candidates";
  size_t used = 0;
  for (int i = 0; i < n; i++) {
    if (!candidates[i] || !candidates[i][0]) continue;
    if (used < sizeof tried)
      used += (size_t)snprintf(tried + used, sizeof tried - used, "%s%s",
                               used ? ", " : "", candidates[i]);
    void *h = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = dlerror();
      snprintf(last, sizeof last, "%s", e ? e : "dlopen failed");
      continue;
    }
    fla_nvrtc_api t;
    memset(&t, 0, sizeof t);
    const char *missing = resolve(h, nvrtc_syms, sizeof nvrtc_syms / sizeof nvrtc_syms[0], &t);
    if (missing) {
      /* e.g. an NVRTC older than 11.1, which has no nvrtcGetCUBIN: try the next. */
      snprintf(last, sizeof last, "%s has no %s", candidates[i], missing);
      dlclose(h);
      continue;
    }
    if (api) *api = t;
    return h;
  }
  if (err && errlen)
    snprintf(err, errlen, "NVRTC not found (tried %s; last error: %s)", tried, last);
  return NULL;
}

static pthread_once_t nvrtc_once_flag = PTHREAD_ONCE_INIT;
static fla_nvrtc_api nvrtc_table;
static int nvrtc_ok;
static char nvrtc_err[ERRBUF];
static char nvrtc_path[512];

static void nvrtc_load_once(void) {
  static const char *const sonames[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"};
  enum { NSONAME = 3, MAXC = 16 };
  char paths[MAXC][512];
  const char *cand[MAXC];
  int n = 0;
  const char *forced = getenv("FLA_NVRTC_LIBRARY");
  if (forced && *forced) {
    /* An explicit choice is honoured alone, so a wrong path is an error
    ** rather than a silent fall-back to another version. */
    cand[n++] = forced;
  } else {
    for (int i = 0; i < NSONAME; i++) cand[n++] = sonames[i];
    const char *dirs[3] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"};
    for (int d = 0; d < 3; d++) {
      if (!dirs[d] || !dirs[d][0]) continue;
      for (int i = 0; i < NSONAME && n < MAXC; i++) {
        snprintf(paths[n], sizeof paths[n], "%s/lib64/%s", dirs[d], sonames[i]);
        cand[n] = paths[n];
        n++;
      }
    }
  }
  void *h = fla_nvrtc_try_load(cand, n, &nvrtc_table, nvrtc_err, sizeof nvrtc_err);
  if (!h) return;
  /* Record which library answered, for messages and the cache key. */
  Dl_info info;
  const char *where = NULL;
  void *sym = NULL;
  memcpy(&sym, &nvrtc_table.nvrtcVersion, sizeof sym);
  if (dladdr(sym, &info) && info.dli_fname) where = info.dli_fname;
  snprintf(nvrtc_path, sizeof nvrtc_path, "%s", where ? where : "libnvrtc");
  nvrtc_ok = 1;
}

int fla_nvrtc_load(char *err, size_t errlen) {
  pthread_once(&nvrtc_once_flag, nvrtc_load_once);
  if (nvrtc_ok) return 0;
  put_err(err, errlen, nvrtc_err);
  return -1;
}

const fla_nvrtc_api *fla_nvrtc_api_get(void) {
  pthread_once(&nvrtc_once_flag, nvrtc_load_once);
  return nvrtc_ok ? &nvrtc_table : NULL;
}

const char *fla_nvrtc_library(void) {
  pthread_once(&nvrtc_once_flag, nvrtc_load_once);
  return nvrtc_ok ? nvrtc_path : "";
}

int fla_nvrtc_version(int *major, int *minor) {
  int ma = 0, mi = 0;
  const fla_nvrtc_api *api = fla_nvrtc_api_get();
  int rc = api && api->nvrtcVersion(&ma, &mi) == NVRTC_SUCCESS ? 0 : -1;
  if (rc) ma = mi = 0;
  if (major) *major = ma;
  if (minor) *minor = mi;
  return rc;
}

/* ----------------------------------------------------------------- devices */

int fla_cuda_device_count(char *err, size_t errlen) {
  if (fla_cuda_driver_load(err, errlen)) return -1;
  int n = 0;
  CUresult r = driver_table.cuDeviceGetCount(&n);
  if (r == CUDA_ERROR_NO_DEVICE) return 0;
  if (r != CUDA_SUCCESS) {
    if (err && errlen)
      snprintf(err, errlen, "cuDeviceGetCount: %s", fla_cuda_result_str(r));
    return -1;
  }
  return n;
}

const char *fla_cuda_arch_name(int cc_major, int cc_minor, char *buf, size_t len) {
  /* From Hopper on, the "a" target unlocks the chip's own instructions;
  ** kernels are compiled for the exact device, so nothing is lost. */
  snprintf(buf, len, "sm_%d%d%s", cc_major, cc_minor, cc_major >= 9 ? "a" : "");
  return buf;
}

int fla_cuda_device_query(int ordinal, fla_cuda_device_info *out, char *err,
                          size_t errlen) {
  if (!out) {
    put_err(err, errlen, "fla_cuda_device_query: out is NULL");
    return -1;
  }
  memset(out, 0, sizeof *out);
  if (fla_cuda_driver_load(err, errlen)) return -1;
  const fla_cuda_driver *d = &driver_table;
  CUdevice dev;
  CUresult r = d->cuDeviceGet(&dev, ordinal);
  if (r != CUDA_SUCCESS) {
    if (err && errlen)
      snprintf(err, errlen, "cuDeviceGet(%d): %s", ordinal, fla_cuda_result_str(r));
    return -1;
  }
  out->ordinal = ordinal;
  if ((r = d->cuDeviceGetName(out->name, (int)sizeof out->name, dev)) != CUDA_SUCCESS) {
    if (err && errlen)
      snprintf(err, errlen, "cuDeviceGetName(%d): %s", ordinal, fla_cuda_result_str(r));
    return -1;
  }
  static const struct { int attr; size_t off; int required; } attrs[] = {
    { CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, offsetof(fla_cuda_device_info, cc_major), 1 },
    { CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, offsetof(fla_cuda_device_info, cc_minor), 1 },
    { CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, offsetof(fla_cuda_device_info, sm_count), 1 },
    { CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, offsetof(fla_cuda_device_info, smem_per_block), 1 },
    { CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, offsetof(fla_cuda_device_info, smem_per_block_optin), 1 },
    { CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, offsetof(fla_cuda_device_info, smem_per_sm), 1 },
    { CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR, offsetof(fla_cuda_device_info, regs_per_sm), 1 },
    { CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, offsetof(fla_cuda_device_info, max_threads_per_block), 1 },
    { CU_DEVICE_ATTRIBUTE_WARP_SIZE, offsetof(fla_cuda_device_info, warp_size), 1 },
    { CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, offsetof(fla_cuda_device_info, l2_bytes), 1 },
    /* Deprecated in recent drivers: may fail or read 0; not needed to run. */
    { CU_DEVICE_ATTRIBUTE_CLOCK_RATE, offsetof(fla_cuda_device_info, clock_khz), 0 },
    { CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, offsetof(fla_cuda_device_info, mem_clock_khz), 0 },
    { CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, offsetof(fla_cuda_device_info, mem_bus_bits), 0 },
  };
  for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
    int v = 0;
    r = d->cuDeviceGetAttribute(&v, attrs[i].attr, dev);
    if (r != CUDA_SUCCESS) {
      if (!attrs[i].required) continue;
      if (err && errlen)
        snprintf(err, errlen, "cuDeviceGetAttribute(%d) on device %d: %s", attrs[i].attr,
                 ordinal, fla_cuda_result_str(r));
      return -1;
    }
    memcpy((char *)out + attrs[i].off, &v, sizeof v);
  }
  if (d->cuDeviceTotalMem) d->cuDeviceTotalMem(&out->total_mem, dev);
  d->cuDriverGetVersion(&out->driver_version);
  fla_cuda_arch_name(out->cc_major, out->cc_minor, out->arch, sizeof out->arch);
  return 0;
}
