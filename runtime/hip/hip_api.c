/*
** hip_api.c -- dlopen loaders for the HIP runtime and hipRTC, and device
** queries. See hip_api.h.
*/
#include "hip/hip_api.h"

#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERRBUF 1536
#define MAXC 16

typedef struct sym_entry {
  const char *name;
  const char *fallback; /* another ABI name with the same signature, or NULL */
  size_t offset;
} sym_entry;

static void put_err(char *err, size_t errlen, const char *msg) {
  if (err && errlen) snprintf(err, errlen, "%s", msg);
}

/* NULL when every symbol resolved, else the first missing name. */
static const char *resolve(void *h, const sym_entry *syms, size_t n, void *table) {
  for (size_t i = 0; i < n; i++) {
    void *p = dlsym(h, syms[i].name);
    if (!p && syms[i].fallback) p = dlsym(h, syms[i].fallback);
    if (!p) return syms[i].name;
    memcpy((char *)table + syms[i].offset, &p, sizeof p); /* POSIX: same representation */
  }
  return NULL;
}

/* Candidates: $env alone when set, else the sonames, then under
** $ROCM_PATH/lib and /opt/rocm/lib. Returns the count. */
static int candidates(const char *env, const char *const *sonames, int ns,
                      char (*paths)[512], const char **cand) {
  const char *forced = getenv(env);
  if (forced && *forced) {
    cand[0] = forced; /* an explicit choice alone: a wrong path is an error */
    return 1;
  }
  int n = 0;
  for (int i = 0; i < ns; i++) cand[n++] = sonames[i];
  const char *dirs[2] = {getenv("ROCM_PATH"), "/opt/rocm"};
  for (int d = 0; d < 2; d++) {
    if (!dirs[d] || !dirs[d][0]) continue;
    for (int i = 0; i < ns && n < MAXC; i++) {
      snprintf(paths[n], 512, "%s/lib/%s", dirs[d], sonames[i]);
      cand[n] = paths[n];
      n++;
    }
  }
  return n;
}

/* The first candidate that opens and has every symbol; NULL with err. */
static void *try_load(const char *what, const char *const *cand, int n, const sym_entry *syms,
                      size_t nsyms, void *table, size_t table_size, char *err, size_t errlen) {
  char tried[1024] = "", last[512] = "no candidates";
  size_t used = 0;
  for (int i = 0; i < n; i++) {
    if (used < sizeof tried)
      used += (size_t)snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "",
                               cand[i]);
    void *h = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = dlerror();
      snprintf(last, sizeof last, "%s", e ? e : "dlopen failed");
      continue;
    }
    memset(table, 0, table_size);
    const char *missing = resolve(h, syms, nsyms, table);
    if (missing) {
      /* e.g. a ROCm 6 libamdhip64 without hiprtc*: try the next. */
      snprintf(last, sizeof last, "%s has no %s", cand[i], missing);
      memset(table, 0, table_size);
      dlclose(h);
      continue;
    }
    return h;
  }
  snprintf(err, errlen, "%s not found (tried %s; last error: %s)", what, tried, last);
  return NULL;
}

/* ------------------------------------------------------------------ hipRTC */

#define RTC(f) {#f, NULL, offsetof(fla_hiprtc_api, f)}
static const sym_entry rtc_syms[] = {
    RTC(hiprtcGetErrorString), RTC(hiprtcVersion),        RTC(hiprtcCreateProgram),
    RTC(hiprtcCompileProgram), RTC(hiprtcGetProgramLogSize), RTC(hiprtcGetProgramLog),
    RTC(hiprtcGetCodeSize),    RTC(hiprtcGetCode),        RTC(hiprtcDestroyProgram),
};

static pthread_once_t rtc_once = PTHREAD_ONCE_INIT;
static fla_hiprtc_api rtc_table;
static int rtc_ok;
static char rtc_err[ERRBUF];
static char rtc_path[512];

static void rtc_load_once(void) {
  static const char *const sonames[] = {"libhiprtc.so.6", "libhiprtc.so", "libamdhip64.so.5",
                                        "libamdhip64.so"};
  char paths[MAXC][512];
  const char *cand[MAXC];
  int n = candidates("FLA_HIPRTC_LIBRARY", sonames, 4, paths, cand);
  void *h = try_load("hipRTC", cand, n, rtc_syms, sizeof rtc_syms / sizeof rtc_syms[0],
                     &rtc_table, sizeof rtc_table, rtc_err, sizeof rtc_err);
  if (!h) return;
  Dl_info info;
  void *sym = NULL;
  memcpy(&sym, &rtc_table.hiprtcVersion, sizeof sym);
  snprintf(rtc_path, sizeof rtc_path, "%s",
           dladdr(sym, &info) && info.dli_fname ? info.dli_fname : "hiprtc");
  rtc_ok = 1;
}

int fla_hiprtc_load(char *err, size_t errlen) {
  pthread_once(&rtc_once, rtc_load_once);
  if (rtc_ok) return 0;
  put_err(err, errlen, rtc_err);
  return -1;
}

const fla_hiprtc_api *fla_hiprtc_api_get(void) {
  pthread_once(&rtc_once, rtc_load_once);
  return rtc_ok ? &rtc_table : NULL;
}

const char *fla_hiprtc_library(void) {
  pthread_once(&rtc_once, rtc_load_once);
  return rtc_ok ? rtc_path : "";
}

int fla_hiprtc_version(int *major, int *minor) {
  int ma = 0, mi = 0;
  const fla_hiprtc_api *api = fla_hiprtc_api_get();
  int rc = api && api->hiprtcVersion(&ma, &mi) == FLA_HIPRTC_SUCCESS ? 0 : -1;
  if (rc) ma = mi = 0;
  if (major) *major = ma;
  if (minor) *minor = mi;
  return rc;
}

/* ----------------------------------------------------------------- runtime */

#define RT(f) {#f, NULL, offsetof(fla_hip_runtime, f)}
static const sym_entry rt_syms[] = {
    RT(hipInit),           RT(hipDriverGetVersion),  RT(hipGetErrorName),
    RT(hipGetErrorString), RT(hipGetDeviceCount),    RT(hipSetDevice),
    RT(hipDeviceGetName),  RT(hipDeviceGetAttribute),
    /* ROCm 6 keeps the old name with the old layout; either has gcnArchName. */
    {"hipGetDevicePropertiesR0600", "hipGetDeviceProperties",
     offsetof(fla_hip_runtime, hipGetDeviceProperties)},
    RT(hipDeviceTotalMem), RT(hipStreamCreate),      RT(hipStreamDestroy),
    RT(hipStreamSynchronize), RT(hipMalloc),         RT(hipFree),
    RT(hipMemcpyHtoD),     RT(hipMemcpyDtoH),        RT(hipMemsetD8),
    RT(hipMemsetD16),      RT(hipMemsetD32),         RT(hipModuleLoadData),    RT(hipModuleUnload),
    RT(hipModuleGetFunction), RT(hipModuleLaunchKernel),
};

static pthread_once_t rt_once = PTHREAD_ONCE_INIT;
static fla_hip_runtime rt_table;
static int rt_ok;
static char rt_err[ERRBUF];

static void rt_load_once(void) {
  static const char *const sonames[] = {"libamdhip64.so.6", "libamdhip64.so.5",
                                        "libamdhip64.so"};
  char paths[MAXC][512];
  const char *cand[MAXC];
  int n = candidates("FLA_HIP_LIBRARY", sonames, 3, paths, cand);
  char why[ERRBUF - 64];
  void *h = try_load("HIP runtime", cand, n, rt_syms, sizeof rt_syms / sizeof rt_syms[0],
                     &rt_table, sizeof rt_table, why, sizeof why);
  if (!h) {
    snprintf(rt_err, sizeof rt_err, "%s", why);
    return;
  }
  hipError_t r = rt_table.hipInit(0);
  if (r != FLA_HIP_SUCCESS) {
    const char *name = rt_table.hipGetErrorName(r), *str = rt_table.hipGetErrorString(r);
    /* ROCm 5.2 says hipErrorInvalidDevice when there is no GPU at all: name the cause. */
    int kfd = access("/dev/kfd", F_OK) == 0;
    snprintf(rt_err, sizeof rt_err, "hipInit failed: %s (%s)%s", name ? name : "?",
             str ? str : "no description",
             kfd ? "" : "; no AMD GPU here (/dev/kfd, the amdgpu compute device, is missing)");
    /* The handle stays open: unloading a runtime after init is not safe. */
    memset(&rt_table, 0, sizeof rt_table);
    return;
  }
  rt_ok = 1;
}

int fla_hip_runtime_load(char *err, size_t errlen) {
  pthread_once(&rt_once, rt_load_once);
  if (rt_ok) return 0;
  put_err(err, errlen, rt_err);
  return -1;
}

const fla_hip_runtime *fla_hip_runtime_api(void) {
  pthread_once(&rt_once, rt_load_once);
  return rt_ok ? &rt_table : NULL;
}

const char *fla_hip_result_str(hipError_t r) {
  static _Thread_local char buf[256];
  const char *name = rt_ok ? rt_table.hipGetErrorName(r) : NULL;
  const char *str = rt_ok ? rt_table.hipGetErrorString(r) : NULL;
  if (name)
    snprintf(buf, sizeof buf, "%s: %s", name, str ? str : "");
  else
    snprintf(buf, sizeof buf, "hipError_t %d", r);
  return buf;
}

/* ----------------------------------------------------------------- devices */

int fla_hip_arch_ok(const char *arch) {
  if (!arch || strncmp(arch, "gfx", 3) != 0) return 0;
  const char *p = arch + 3;
  int digits = 0;
  for (; isxdigit((unsigned char)*p) && !isupper((unsigned char)*p); p++) digits++;
  if (digits < 3 || digits > 4) return 0;
  while (*p == ':') { /* target features: ":xnack-", ":sramecc+" */
    p++;
    int letters = 0;
    for (; islower((unsigned char)*p); p++) letters++;
    if (!letters || (*p != '+' && *p != '-')) return 0;
    p++;
  }
  return *p == '\0';
}

int fla_hip_device_count(char *err, size_t errlen) {
  if (fla_hip_runtime_load(err, errlen)) return -1;
  int n = 0;
  hipError_t r = rt_table.hipGetDeviceCount(&n);
  if (r == FLA_HIP_ERROR_NO_DEVICE) return 0;
  if (r != FLA_HIP_SUCCESS) {
    if (err && errlen) snprintf(err, errlen, "hipGetDeviceCount: %s", fla_hip_result_str(r));
    return -1;
  }
  return n;
}

/* The first NUL-terminated string in buf that is an offload arch. */
static int find_arch(const unsigned char *buf, size_t n, char *out, size_t cap) {
  for (size_t i = 0; i + 6 < n; i++) {
    if (buf[i] != 'g' || (i && buf[i - 1] != 0) || memcmp(buf + i, "gfx", 3) != 0) continue;
    const unsigned char *end = memchr(buf + i, 0, n - i);
    if (!end || (size_t)(end - (buf + i)) >= cap) continue;
    memcpy(out, buf + i, (size_t)(end - (buf + i)) + 1);
    if (fla_hip_arch_ok(out)) return 0;
  }
  out[0] = '\0';
  return -1;
}

int fla_hip_device_query(int ordinal, fla_hip_device_info *out, char *err, size_t errlen) {
  if (!out) {
    put_err(err, errlen, "fla_hip_device_query: out is NULL");
    return -1;
  }
  memset(out, 0, sizeof *out);
  if (fla_hip_runtime_load(err, errlen)) return -1;
  const fla_hip_runtime *d = &rt_table;
  hipError_t r;
  out->ordinal = ordinal;
  if ((r = d->hipDeviceGetName(out->name, (int)sizeof out->name, ordinal)) != FLA_HIP_SUCCESS) {
    if (err && errlen)
      snprintf(err, errlen, "hipDeviceGetName(%d): %s", ordinal, fla_hip_result_str(r));
    return -1;
  }
  static const struct { int attr; size_t off; int required; } attrs[] = {
      {FLA_HIP_ATTR_MULTIPROCESSOR_COUNT, offsetof(fla_hip_device_info, sm_count), 1},
      {FLA_HIP_ATTR_MAX_SHARED_MEMORY_PER_BLOCK, offsetof(fla_hip_device_info, smem_per_block), 1},
      {FLA_HIP_ATTR_MAX_THREADS_PER_BLOCK, offsetof(fla_hip_device_info, max_threads_per_block), 1},
      {FLA_HIP_ATTR_WARP_SIZE, offsetof(fla_hip_device_info, warp_size), 1},
      {FLA_HIP_ATTR_L2_CACHE_SIZE, offsetof(fla_hip_device_info, l2_bytes), 0},
      {FLA_HIP_ATTR_CLOCK_RATE, offsetof(fla_hip_device_info, clock_khz), 0},
      {FLA_HIP_ATTR_MEMORY_CLOCK_RATE, offsetof(fla_hip_device_info, mem_clock_khz), 0},
      {FLA_HIP_ATTR_MEMORY_BUS_WIDTH, offsetof(fla_hip_device_info, mem_bus_bits), 0},
  };
  for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
    int v = 0;
    if ((r = d->hipDeviceGetAttribute(&v, attrs[i].attr, ordinal)) != FLA_HIP_SUCCESS) {
      if (!attrs[i].required) continue;
      if (err && errlen)
        snprintf(err, errlen, "hipDeviceGetAttribute(%d) on device %d: %s", attrs[i].attr,
                 ordinal, fla_hip_result_str(r));
      return -1;
    }
    memcpy((char *)out + attrs[i].off, &v, sizeof v);
  }
  d->hipDeviceTotalMem(&out->total_mem, ordinal);
  d->hipDriverGetVersion(&out->driver_version);
  const char *forced = getenv("FLA_HIP_ARCH");
  if (forced && *forced) {
    if (!fla_hip_arch_ok(forced) || strlen(forced) >= sizeof out->arch) {
      if (err && errlen) snprintf(err, errlen, "FLA_HIP_ARCH='%s' is not an arch like gfx90a", forced);
      return -1;
    }
    snprintf(out->arch, sizeof out->arch, "%s", forced);
    return 0;
  }
  unsigned char *props = calloc(1, FLA_HIP_PROPS_BYTES);
  if (!props) {
    put_err(err, errlen, "out of memory");
    return -1;
  }
  r = d->hipGetDeviceProperties(props, ordinal);
  int found = r == FLA_HIP_SUCCESS ? find_arch(props, FLA_HIP_PROPS_BYTES, out->arch,
                                                sizeof out->arch) : -1;
  free(props);
  if (found) {
    if (err && errlen)
      snprintf(err, errlen, "device %d (%s): no gfx arch in hipGetDeviceProperties (%s); set "
               "FLA_HIP_ARCH", ordinal, out->name, r ? fla_hip_result_str(r) : "not found");
    return -1;
  }
  return 0;
}
