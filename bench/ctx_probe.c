/*
** ctx_probe -- where a process's CUDA start-up time goes, step by step, with
** nothing of this library in between: dlopen of the driver, cuInit, the
** primary context, a stream, the first allocations, dlopen of NVRTC. It is
** the floor under fla-ttff's "context" figure (bench/tune_run.sh ttff runs it).
**
**   ctx_probe            (prints one line per step, in ms)
*/
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

typedef int cu_result;
typedef int cu_device;
typedef void *cu_context;
typedef void *cu_stream;
typedef unsigned long long cu_ptr;

static double now_ms_(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static double t_last;
static void step_(const char *what, int rc) {
  double t = now_ms_();
  printf("%-28s %8.2f ms%s\n", what, t - t_last, rc ? "  (failed)" : "");
  t_last = t;
}

/* dlsym into a function pointer without the object-to-function cast warning. */
#define SYM(lib, var, name) (*(void **)&(var) = dlsym((lib), (name)))

int main(void) {
  t_last = now_ms_();
  void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  step_("dlopen libcuda.so.1", !cuda);
  if (!cuda) return 1;
  cu_result (*init)(unsigned);
  cu_result (*device_get)(cu_device *, int);
  cu_result (*retain)(cu_context *, cu_device);
  cu_result (*set_current)(cu_context);
  cu_result (*stream_create)(cu_stream *, unsigned);
  cu_result (*mem_alloc)(cu_ptr *, size_t);
  if (!SYM(cuda, init, "cuInit") || !SYM(cuda, device_get, "cuDeviceGet") ||
      !SYM(cuda, retain, "cuDevicePrimaryCtxRetain") || !SYM(cuda, set_current, "cuCtxSetCurrent") ||
      !SYM(cuda, stream_create, "cuStreamCreate") || !SYM(cuda, mem_alloc, "cuMemAlloc_v2")) {
    fprintf(stderr, "ctx_probe: a driver symbol is missing\n");
    return 1;
  }
  t_last = now_ms_();
  cu_device dev = 0;
  cu_context ctx = NULL;
  cu_stream stream = NULL;
  cu_ptr p = 0;
  step_("cuInit", init(0));
  step_("cuDeviceGet", device_get(&dev, 0));
  step_("cuDevicePrimaryCtxRetain", retain(&ctx, dev));
  step_("cuCtxSetCurrent", set_current(ctx));
  step_("cuStreamCreate", stream_create(&stream, 0));
  step_("cuMemAlloc 16 MiB (first)", mem_alloc(&p, (size_t)1 << 24));
  step_("cuMemAlloc 16 MiB (second)", mem_alloc(&p, (size_t)1 << 24));
  void *nvrtc = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!nvrtc) nvrtc = dlopen("libnvrtc.so", RTLD_NOW | RTLD_LOCAL);
  step_("dlopen libnvrtc", !nvrtc);
  return 0;
}
