/*
** hip_api.h -- the HIP runtime and hipRTC, reached through function tables
** that dlopen/dlsym fill at run time, like runtime/cuda/cuda_api.h.
**
** No ROCm header is needed to build: the few types and constants used are
** declared here (values from ROCm 5.2's hip_runtime_api.h and hiprtc.h). The
** two loaders are independent: hipRTC alone compiles on a machine without an
** AMD GPU (ROCm 5.x ships it inside libamdhip64.so, ROCm 6 as libhiprtc.so),
** which is how CI builds every generated HIP kernel.
*/
#ifndef FLA_HIP_API_H
#define FLA_HIP_API_H

#include <stddef.h>

/* ------------------------------------------------------------ runtime types */

typedef int hipError_t;                      /* hipSuccess == 0 */
typedef int hipDevice_t;
typedef void *hipDeviceptr_t;
typedef struct ihipModule_t *hipModule_t;
typedef struct ihipModuleSymbol_t *hipFunction_t;
typedef struct ihipStream_t *hipStream_t;

#define FLA_HIP_SUCCESS 0
#define FLA_HIP_ERROR_OUT_OF_MEMORY 2
#define FLA_HIP_ERROR_NO_DEVICE 100

/* hipDeviceAttribute_t values (ROCm 5.2; the CUDA-compatible range, kept in 6.x). */
#define FLA_HIP_ATTR_CLOCK_RATE 5
#define FLA_HIP_ATTR_L2_CACHE_SIZE 19
#define FLA_HIP_ATTR_CC_MAJOR 23
#define FLA_HIP_ATTR_MAX_THREADS_PER_BLOCK 56
#define FLA_HIP_ATTR_MEMORY_BUS_WIDTH 59
#define FLA_HIP_ATTR_MEMORY_CLOCK_RATE 60
#define FLA_HIP_ATTR_CC_MINOR 61
#define FLA_HIP_ATTR_MULTIPROCESSOR_COUNT 63
#define FLA_HIP_ATTR_MAX_SHARED_MEMORY_PER_BLOCK 74
#define FLA_HIP_ATTR_WARP_SIZE 87

/* hipModuleLaunchKernel's `extra`: the argument struct as one buffer, which
** every HIP version accepts (kernelParams came later to AMD's side). */
#define FLA_HIP_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define FLA_HIP_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)
#define FLA_HIP_LAUNCH_PARAM_END ((void *)0x03)

/* Bytes reserved for hipDeviceProp_t (792 in ROCm 5.2, about 1.5 KiB in 6.x). */
#define FLA_HIP_PROPS_BYTES 8192

typedef struct fla_hip_runtime {
  hipError_t (*hipInit)(unsigned int flags);
  hipError_t (*hipDriverGetVersion)(int *version);
  const char *(*hipGetErrorName)(hipError_t e);
  const char *(*hipGetErrorString)(hipError_t e);
  hipError_t (*hipGetDeviceCount)(int *count);
  hipError_t (*hipSetDevice)(int ordinal);
  hipError_t (*hipDeviceGetName)(char *name, int len, hipDevice_t dev);
  hipError_t (*hipDeviceGetAttribute)(int *pi, int attr, int dev);
  hipError_t (*hipGetDeviceProperties)(void *props, int dev);  /* layout per version */
  hipError_t (*hipDeviceTotalMem)(size_t *bytes, hipDevice_t dev);
  hipError_t (*hipStreamCreate)(hipStream_t *s);
  hipError_t (*hipStreamDestroy)(hipStream_t s);
  hipError_t (*hipStreamSynchronize)(hipStream_t s);
  hipError_t (*hipMalloc)(void **p, size_t bytes);
  hipError_t (*hipFree)(void *p);
  hipError_t (*hipMemcpyHtoD)(hipDeviceptr_t dst, void *src, size_t n);
  hipError_t (*hipMemcpyDtoH)(void *dst, hipDeviceptr_t src, size_t n);
  hipError_t (*hipMemsetD8)(hipDeviceptr_t dst, unsigned char v, size_t n);
  hipError_t (*hipMemsetD16)(hipDeviceptr_t dst, unsigned short v, size_t n);
  hipError_t (*hipMemsetD32)(hipDeviceptr_t dst, int v, size_t n);
  hipError_t (*hipModuleLoadData)(hipModule_t *m, const void *image);
  hipError_t (*hipModuleUnload)(hipModule_t m);
  hipError_t (*hipModuleGetFunction)(hipFunction_t *f, hipModule_t m, const char *name);
  hipError_t (*hipModuleLaunchKernel)(hipFunction_t f, unsigned gx, unsigned gy, unsigned gz,
                                      unsigned bx, unsigned by, unsigned bz, unsigned smem,
                                      hipStream_t s, void **params, void **extra);
} fla_hip_runtime;

/* ---------------------------------------------------------------- hipRTC */

typedef int hiprtcResult;                    /* HIPRTC_SUCCESS == 0 */
typedef struct _hiprtcProgram *hiprtcProgram;

#define FLA_HIPRTC_SUCCESS 0
#define FLA_HIPRTC_ERROR_OUT_OF_MEMORY 1

typedef struct fla_hiprtc_api {
  const char *(*hiprtcGetErrorString)(hiprtcResult r);
  hiprtcResult (*hiprtcVersion)(int *major, int *minor);
  hiprtcResult (*hiprtcCreateProgram)(hiprtcProgram *prog, const char *src, const char *name,
                                      int nheaders, const char **headers,
                                      const char **include_names);
  hiprtcResult (*hiprtcCompileProgram)(hiprtcProgram prog, int nopts, const char **opts);
  hiprtcResult (*hiprtcGetProgramLogSize)(hiprtcProgram prog, size_t *n);
  hiprtcResult (*hiprtcGetProgramLog)(hiprtcProgram prog, char *log);
  hiprtcResult (*hiprtcGetCodeSize)(hiprtcProgram prog, size_t *n);
  hiprtcResult (*hiprtcGetCode)(hiprtcProgram prog, char *code);
  hiprtcResult (*hiprtcDestroyProgram)(hiprtcProgram *prog);
} fla_hiprtc_api;

/* ----------------------------------------------------------------- loaders */

/* Loads hipRTC once per process (thread-safe). Tried in order:
** $FLA_HIPRTC_LIBRARY alone when set; else libhiprtc.so.6, libhiprtc.so,
** libamdhip64.so.5, libamdhip64.so through the loader path, then the same
** names in $ROCM_PATH/lib and /opt/rocm/lib. 0 when loaded; otherwise
** non-zero, and err lists what was tried and the last error. */
int fla_hiprtc_load(char *err, size_t errlen);
const fla_hiprtc_api *fla_hiprtc_api_get(void);   /* NULL when not loaded */
const char *fla_hiprtc_library(void);             /* "" when not loaded */
/* hipRTC's version; 0 when loaded, -1 (and 0.0) when not. */
int fla_hiprtc_version(int *major, int *minor);

/* Loads the HIP runtime (libamdhip64: $FLA_HIP_LIBRARY alone when set, else
** .so.6, .so.5, .so, then under $ROCM_PATH/lib and /opt/rocm/lib) and calls
** hipInit(0), once per process. 0 when usable; else non-zero with the
** reason, e.g. "hipInit failed: hipErrorNoDevice (no ROCm-capable device is
** detected)". */
int fla_hip_runtime_load(char *err, size_t errlen);
const fla_hip_runtime *fla_hip_runtime_api(void); /* NULL when not loaded */

/* "hipErrorOutOfMemory: out of memory" (thread-local buffer). */
const char *fla_hip_result_str(hipError_t r);

/* ----------------------------------------------------------- device query */

typedef struct fla_hip_device_info {
  char name[256];
  int ordinal;
  char arch[64];               /* the offload arch, e.g. "gfx90a" or "gfx90a:sramecc+:xnack-" */
  int sm_count;                /* compute units */
  int smem_per_block;          /* LDS bytes a block may use */
  int max_threads_per_block;
  int warp_size;               /* 64 on CDNA (gfx9), 32 on RDNA (gfx10+) */
  int l2_bytes;
  int clock_khz, mem_clock_khz, mem_bus_bits;
  size_t total_mem;
  int driver_version;
} fla_hip_device_info;

/* Number of AMD devices (>= 0), or -1 with err when the runtime cannot load. */
int fla_hip_device_count(char *err, size_t errlen);

/* Fills *out for device `ordinal`. The arch comes from $FLA_HIP_ARCH when set,
** else from the gcnArchName of hipGetDeviceProperties (found by its "gfx"
** prefix: the struct's layout differs between ROCm versions). 0, or non-zero
** with err. */
int fla_hip_device_query(int ordinal, fla_hip_device_info *out, char *err, size_t errlen);

/* 1 when arch is an offload arch hipRTC takes: "gfx" and 3 or 4 hex digits,
** then optional target features ":name+" / ":name-" (xnack, sramecc). */
int fla_hip_arch_ok(const char *arch);

#endif
