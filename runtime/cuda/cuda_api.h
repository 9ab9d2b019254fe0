/*
** cuda_api.h -- the CUDA driver and NVRTC, reached through function tables
** that dlopen/dlsym fill at run time.
**
** No CUDA header is needed to build the library: the few types and constants
** used are declared here (values from CUDA 13.0's cuda.h and nvrtc.h, which are
** ABI-stable). One binary therefore runs on a machine without any GPU software
** and picks the CPU backend there (DESIGN.md §5).
**
** The two loaders are independent: NVRTC alone works on a machine without a
** driver, which is how CI compiles every generated kernel without a GPU.
*/
#ifndef FLA_CUDA_API_H
#define FLA_CUDA_API_H

#include <stddef.h>

/* ------------------------------------------------------------ driver types */

typedef int CUresult;                       /* CUDA_SUCCESS == 0 */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_NO_DEVICE 100
#define CUDA_ERROR_NOT_SUPPORTED 801

/* CUdevice_attribute values used by fla_cuda_device_query. */
#define CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK 1
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK 8
#define CU_DEVICE_ATTRIBUTE_WARP_SIZE 10
#define CU_DEVICE_ATTRIBUTE_CLOCK_RATE 13
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE 36
#define CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH 37
#define CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE 38
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR 81
#define CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR 82
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN 97

/* CUfunction_attribute values. */
#define CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK 0
#define CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES 1
#define CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES 2
#define CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES 3
#define CU_FUNC_ATTRIBUTE_NUM_REGS 4
#define CU_FUNC_ATTRIBUTE_PTX_VERSION 5
#define CU_FUNC_ATTRIBUTE_BINARY_VERSION 6
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8

#define CU_STREAM_DEFAULT 0x0
#define CU_STREAM_NON_BLOCKING 0x1
#define CU_EVENT_DEFAULT 0x0
#define CU_EVENT_DISABLE_TIMING 0x2

/* The driver entry points, by the ABI names cuda.h maps them to (the _v2
** suffixes). Optional entries are NULL when the driver lacks them. */
/* cuLaunchKernelEx's CUlaunchAttribute and CUlaunchConfig (cuda.h, CUDA 12+).
** FLA_CUDA_ATTR_PDL is CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
** with value 1 the kernel may start once every block of the kernel before it
** in the stream has run griddepcontrol.launch_dependents (or exited), instead
** of once that kernel has finished; it then waits itself for what it reads. */
#define FLA_CUDA_ATTR_PDL 6
typedef struct fla_cuda_launch_attr {
  int id;
  char pad_[4];
  union {
    char bytes[64];
    int value;
  } v;
} fla_cuda_launch_attr;
typedef struct fla_cuda_launch_config {
  unsigned gx, gy, gz, bx, by, bz, smem;
  CUstream stream;
  fla_cuda_launch_attr *attrs;
  unsigned nattrs;
} fla_cuda_launch_config;

typedef struct fla_cuda_driver {
  CUresult (*cuInit)(unsigned int flags);
  CUresult (*cuDriverGetVersion)(int *version);
  CUresult (*cuGetErrorString)(CUresult error, const char **str);
  CUresult (*cuGetErrorName)(CUresult error, const char **str);
  CUresult (*cuDeviceGetCount)(int *count);
  CUresult (*cuDeviceGet)(CUdevice *device, int ordinal);
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*cuDeviceGetAttribute)(int *pi, int attrib, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *pctx, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice dev);          /* _v2 */
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuCtxSynchronize)(void);
  CUresult (*cuStreamCreate)(CUstream *phStream, unsigned int flags);
  CUresult (*cuStreamDestroy)(CUstream hStream);                  /* _v2 */
  CUresult (*cuStreamSynchronize)(CUstream hStream);
  CUresult (*cuMemAlloc)(CUdeviceptr *dptr, size_t bytesize);     /* _v2 */
  CUresult (*cuMemFree)(CUdeviceptr dptr);                        /* _v2 */
  CUresult (*cuMemcpyHtoD)(CUdeviceptr dst, const void *src, size_t n);  /* _v2 */
  CUresult (*cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t n);        /* _v2 */
  CUresult (*cuMemcpyDtoD)(CUdeviceptr dst, CUdeviceptr src, size_t n);  /* _v2 */
  CUresult (*cuMemsetD8)(CUdeviceptr dst, unsigned char uc, size_t n);   /* _v2 */
  CUresult (*cuMemsetD16)(CUdeviceptr dst, unsigned short us, size_t n); /* _v2 */
  CUresult (*cuMemsetD32)(CUdeviceptr dst, unsigned int ui, size_t n);   /* _v2 */
  CUresult (*cuModuleLoadData)(CUmodule *module, const void *image);
  CUresult (*cuModuleUnload)(CUmodule hmod);
  CUresult (*cuModuleGetFunction)(CUfunction *hfunc, CUmodule hmod, const char *name);
  CUresult (*cuFuncGetAttribute)(int *pi, int attrib, CUfunction hfunc);
  CUresult (*cuFuncSetAttribute)(CUfunction hfunc, int attrib, int value);
  CUresult (*cuLaunchKernel)(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                             unsigned int gridDimZ, unsigned int blockDimX,
                             unsigned int blockDimY, unsigned int blockDimZ,
                             unsigned int sharedMemBytes, CUstream hStream,
                             void **kernelParams, void **extra);
  CUresult (*cuEventCreate)(CUevent *phEvent, unsigned int flags);
  CUresult (*cuEventRecord)(CUevent hEvent, CUstream hStream);
  CUresult (*cuEventSynchronize)(CUevent hEvent);
  CUresult (*cuEventElapsedTime)(float *ms, CUevent start, CUevent end); /* _v2, else v1 */
  CUresult (*cuEventDestroy)(CUevent hEvent);                     /* _v2 */
  /* Optional. */
  CUresult (*cuDeviceTotalMem)(size_t *bytes, CUdevice dev);      /* _v2 */
  CUresult (*cuMemGetInfo)(size_t *free_bytes, size_t *total);    /* _v2 */
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t n,
                                CUstream s);                      /* _v2 */
  CUresult (*cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t n,
                                CUstream s);                      /* _v2 */
  CUresult (*cuMemsetD32Async)(CUdeviceptr dst, unsigned int ui, size_t n, CUstream s);
  CUresult (*cuStreamWaitEvent)(CUstream s, CUevent e, unsigned int flags);
  CUresult (*cuOccupancyMaxActiveBlocksPerMultiprocessor)(int *num_blocks, CUfunction f,
                                                          int block_size,
                                                          size_t dyn_smem);
  /* CUDA 12+: a launch with attributes (programmatic dependent launch). */
  CUresult (*cuLaunchKernelEx)(const struct fla_cuda_launch_config *config, CUfunction f,
                               void **kernelParams, void **extra);
} fla_cuda_driver;

/* ------------------------------------------------------------- NVRTC types */

typedef int nvrtcResult;                    /* NVRTC_SUCCESS == 0 */
typedef struct _nvrtcProgram *nvrtcProgram;

#define NVRTC_SUCCESS 0
#define NVRTC_ERROR_INVALID_OPTION 5
#define NVRTC_ERROR_COMPILATION 6

typedef struct fla_nvrtc_api {
  const char *(*nvrtcGetErrorString)(nvrtcResult result);
  nvrtcResult (*nvrtcVersion)(int *major, int *minor);
  nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram *prog, const char *src, const char *name,
                                    int numHeaders, const char *const *headers,
                                    const char *const *includeNames);
  nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram prog, int numOptions,
                                     const char *const *options);
  nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram prog, size_t *logSizeRet);
  nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram prog, char *log);
  nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram prog, size_t *cubinSizeRet);
  nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram prog, char *cubin);
  nvrtcResult (*nvrtcGetPTXSize)(nvrtcProgram prog, size_t *ptxSizeRet);
  nvrtcResult (*nvrtcGetPTX)(nvrtcProgram prog, char *ptx);
  nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram *prog);
} fla_nvrtc_api;

/* ----------------------------------------------------------------- loaders */

/* Loads libcuda.so.1 (else libcuda.so), resolves the table and calls
** cuInit(0). Runs once per process (pthread_once); every later call returns
** the first result. 0 when the driver is usable; otherwise non-zero with the
** reason in err (when err is not NULL), e.g. "CUDA driver not found
** (libcuda.so.1: cannot open shared object file ...)". Thread-safe. */
int fla_cuda_driver_load(char *err, size_t errlen);

/* The driver table, or NULL when fla_cuda_driver_load has not succeeded. */
const fla_cuda_driver *fla_cuda_driver_api(void);

/* Loads NVRTC, once per process and thread-safe like the driver. Tried in
** order: $FLA_NVRTC_LIBRARY alone when set (an exact path or soname); else
** libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so through the loader path, then
** the same names in $CUDA_HOME/lib64, $CUDA_PATH/lib64 and
** /usr/local/cuda/lib64. 0 when loaded; otherwise non-zero, and err lists
** what was tried and the last dlerror. */
int fla_nvrtc_load(char *err, size_t errlen);

/* The NVRTC table, or NULL when fla_nvrtc_load has not succeeded. */
const fla_nvrtc_api *fla_nvrtc_api_get(void);

/* The path or name NVRTC was loaded from ("" when not loaded). */
const char *fla_nvrtc_library(void);

/* NVRTC's version; 0 when loaded, -1 (and 0.0) when not. */
int fla_nvrtc_version(int *major, int *minor);

/* The loader behind fla_nvrtc_load, without the process-wide state: tries
** the `n` candidates in order and, on success, fills *api and returns the
** dlopen handle (the caller owns it). NULL on failure, with the names tried
** and the last error in err. Exposed for tests. */
void *fla_nvrtc_try_load(const char *const *candidates, int n, fla_nvrtc_api *api,
                         char *err, size_t errlen);

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory" for a driver result, through the
** driver's own strings when it is loaded ("CUresult 2" otherwise). Returns a
** pointer to a thread-local buffer. */
const char *fla_cuda_result_str(CUresult r);

/* cuLaunchKernelEx with programmatic stream serialization (FLA_CUDA_ATTR_PDL):
** kernel f on grid g[3] and block b[3] may start once every block of the
** kernel before it on stream s has run griddepcontrol.launch_dependents.
** The driver's result; CUDA_ERROR_NOT_SUPPORTED when it lacks cuLaunchKernelEx. */
CUresult fla_cuda_launch_early(const fla_cuda_driver *d, CUfunction f, const unsigned g[3],
                               const unsigned b[3], unsigned smem, CUstream s, void **params);

/* --------------------------------------------------------- device queries */

typedef struct fla_cuda_device_info {
  char name[256];
  int ordinal;
  int cc_major, cc_minor;        /* compute capability, e.g. 9.0 */
  int sm_count;                  /* multiprocessors */
  int smem_per_block;            /* bytes without opting in (48 KiB) */
  int smem_per_block_optin;      /* bytes with cuFuncSetAttribute opt-in */
  int smem_per_sm;
  int regs_per_sm;
  int max_threads_per_block;
  int warp_size;
  int l2_bytes;
  int clock_khz, mem_clock_khz, mem_bus_bits;  /* 0 where the driver reports none */
  size_t total_mem;              /* 0 when cuDeviceTotalMem is missing */
  int driver_version;            /* e.g. 13000 for 13.0 */
  char arch[16];                 /* the NVRTC target (fla_cuda_arch_name) */
} fla_cuda_device_info;

/* Number of CUDA devices: >= 0, or -1 with err set when the driver cannot
** be loaded. */
int fla_cuda_device_count(char *err, size_t errlen);

/* Fills *out for device `ordinal`. 0 on success, else non-zero with err. */
int fla_cuda_device_query(int ordinal, fla_cuda_device_info *out, char *err,
                          size_t errlen);

/* The NVRTC target for a compute capability: "sm_<major><minor>a" from 9.0
** on ("sm_90a": wgmma and setmaxnreg need the arch-specific target, and we
** compile for the exact device anyway), "sm_<major><minor>" before. Writes
** into buf and returns it. */
const char *fla_cuda_arch_name(int cc_major, int cc_minor, char *buf, size_t len);

#endif
