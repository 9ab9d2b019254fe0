/*
** test_nvrtc.c -- the dlopen loaders (driver, NVRTC), NVRTC compiles, ptxas'
** resource report, the on-disk module cache and, where a GPU is present, one
** mma.sync kernel run through the driver.
**
** How absence is reported, honestly:
**   - The "loaders" case runs everywhere: it needs neither NVRTC nor a GPU
**     (argument checks, key hashing, log parsing, the driver loader failing
**     cleanly where there is no libcuda.so.1).
**   - When NVRTC cannot be loaded, the NVRTC-dependent tests are NOT added;
**     the suite gets `test_skip_no_nvrtc`, which asserts nothing and prints
**     "skipped: NVRTC not found (...)", plus a real check that compiling then
**     returns FLA_UNSUPPORTED naming the libraries tried. The skip shows as
**     one passing test whose output says SKIP, never as passing compile
**     checks. Run with FLA_NVRTC_LIBRARY=/nonexistent to see this path.
**   - The "gpu" case is added only when the driver loads and sees a device;
**     otherwise main prints "skipped: no CUDA device (...)".
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "cuda/cuda_api.h"
#include "cuda/modcache.h"
#include "cuda/nvrtc.h"

static char nvrtc_why[1024];
static char driver_why[1024];

/* One warp computes D[16x8] = A[16x16] * B[16x8] with the bf16 tensor-core
** instruction; A is row-major, B is stored column-major (Bt[n][k]), D row-major.
** Fragment layouts follow the PTX ISA for m16n8k16. */
static const char *mma_source =
    "extern \"C\" __global__ void mma_bf16(const unsigned short *A, const unsigned short *Bt,\n"
    "                                      float *D) {\n"
    "  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;\n"
    "  auto pk = [](unsigned short lo, unsigned short hi) {\n"
    "    return (unsigned)lo | ((unsigned)hi << 16); };\n"
    "  unsigned a0 = pk(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);\n"
    "  unsigned a1 = pk(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);\n"
    "  unsigned a2 = pk(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);\n"
    "  unsigned a3 = pk(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);\n"
    "  unsigned b0 = pk(Bt[g * 16 + 2 * t], Bt[g * 16 + 2 * t + 1]);\n"
    "  unsigned b1 = pk(Bt[g * 16 + 2 * t + 8], Bt[g * 16 + 2 * t + 9]);\n"
    "  float d0, d1, d2, d3, z = 0.f;\n"
    "  asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 \"\n"
    "               \"{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\"\n"
    "               : \"=f\"(d0), \"=f\"(d1), \"=f\"(d2), \"=f\"(d3)\n"
    "               : \"r\"(a0), \"r\"(a1), \"r\"(a2), \"r\"(a3), \"r\"(b0), \"r\"(b1),\n"
    "                 \"f\"(z), \"f\"(z), \"f\"(z), \"f\"(z));\n"
    "  D[g * 8 + 2 * t] = d0;\n"
    "  D[g * 8 + 2 * t + 1] = d1;\n"
    "  D[(g + 8) * 8 + 2 * t] = d2;\n"
    "  D[(g + 8) * 8 + 2 * t + 1] = d3;\n"
    "}\n";

/* The syntax error is on line 3, which the message must name. */
static const char *bad_source =
    "extern \"C\" __global__ void k(float *x) {\n"
    "  x[threadIdx.x] = 1.0f;\n"
    "  x[0] = = 2.0f;\n"
    "}\n";

/* A module whose report covers shared memory, spills and a noinline helper. */
static const char *resource_source =
    "__device__ __noinline__ float helper(float *p, int i) { float t[8];\n"
    "  for (int j = 0; j < 8; j++) t[j] = p[i + j]; return t[i & 7]; }\n"
    "extern \"C\" __global__ void with_smem(float *x) {\n"
    "  __shared__ float s[256];\n"
    "  s[threadIdx.x] = x[threadIdx.x];\n"
    "  __syncthreads();\n"
    "  x[threadIdx.x] = s[255 - threadIdx.x] + helper(x, threadIdx.x);\n"
    "}\n"
    "extern \"C\" __global__ void __launch_bounds__(1024, 2) spills(float *x, const int *idx) {\n"
    "  float a[200];\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < 200; i++) a[i] = x[i * blockDim.x + threadIdx.x];\n"
    "  float s = 0;\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < 200; i++) s += a[i] * a[(i * 7) % 200] * x[idx[i]];\n"
    "  x[threadIdx.x] = s;\n"
    "}\n";

/* wgmma exists only for the arch-specific sm_90a target. */
static const char *wgmma_source =
    "extern \"C\" __global__ void fence(float *x) {\n"
    "  asm volatile(\"wgmma.fence.sync.aligned;\" ::: \"memory\");\n"
    "  x[threadIdx.x] = 0.f;\n"
    "}\n";

/* ------------------------------------------------------------ temp folders */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static char *make_tmpdir(void) {
  char *d = strdup("/tmp/fla_test_nvrtc_XXXXXX");
  ck_assert_ptr_nonnull(d);
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

/* Number of entries in dir other than . and .., or -1. */
static int count_files(const char *dir, const char *must_contain) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | grep -c -- '%s'", dir, must_contain);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  int n = -1;
  if (fscanf(p, "%d", &n) != 1) n = -1;
  pclose(p);
  return n;
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return buf;
}

/* ====================================================== tests without NVRTC */

START_TEST(test_driver_loader) {
  char err[1024] = "";
  int rc = fla_cuda_driver_load(err, sizeof err);
  if (rc != 0) {
    /* This machine has no usable driver: a clean failure, with a reason. */
    ck_assert_msg(strlen(err) > 10, "no message: '%s'", err);
    ck_assert_msg(strstr(err, "libcuda") || strstr(err, "cuInit"), "message: %s", err);
    ck_assert_ptr_null(fla_cuda_driver_api());
    char err2[1024] = "";
    ck_assert_int_ne(fla_cuda_driver_load(err2, sizeof err2), 0);
    ck_assert_str_eq(err, err2);  /* loaded once: the same answer */
    ck_assert_int_eq(fla_cuda_device_count(NULL, 0), -1);
    fla_cuda_device_info info;
    ck_assert_int_ne(fla_cuda_device_query(0, &info, err2, sizeof err2), 0);
    printf("driver loader (expected to fail here): %s\n", err);
  } else {
    ck_assert_ptr_nonnull(fla_cuda_driver_api());
    int n = fla_cuda_device_count(err, sizeof err);
    ck_assert_msg(n >= 0, "%s", err);
    int v = 0;
    ck_assert_int_eq(fla_cuda_driver_api()->cuDriverGetVersion(&v), CUDA_SUCCESS);
    ck_assert_int_gt(v, 0);
    printf("driver loaded: version %d, %d device(s)\n", v, n);
  }
  /* Small or absent buffers are allowed. */
  char tiny[4];
  fla_cuda_driver_load(tiny, sizeof tiny);
  fla_cuda_driver_load(NULL, 0);
}
END_TEST

START_TEST(test_nvrtc_try_load_reports_candidates) {
  const char *cands[] = {"/nonexistent/libnvrtc.so.99", "libnvrtc-not-here.so.7"};
  fla_nvrtc_api api;
  char err[1024] = "";
  ck_assert_ptr_null(fla_nvrtc_try_load(cands, 2, &api, err, sizeof err));
  ck_assert_msg(strstr(err, "NVRTC not found"), "%s", err);
  ck_assert_msg(strstr(err, "/nonexistent/libnvrtc.so.99"), "%s", err);
  ck_assert_msg(strstr(err, "libnvrtc-not-here.so.7"), "%s", err);
  ck_assert_ptr_null(fla_nvrtc_try_load(NULL, 0, &api, err, sizeof err));
  ck_assert_msg(strstr(err, "NVRTC not found"), "%s", err);
  /* A library that exists but is not NVRTC: reported as lacking a symbol. */
  const char *libc_only[] = {"libc.so.6"};
  ck_assert_ptr_null(fla_nvrtc_try_load(libc_only, 1, &api, err, sizeof err));
  ck_assert_msg(strstr(err, "has no nvrtc"), "%s", err);
}
END_TEST

START_TEST(test_arch_names) {
  char buf[16];
  ck_assert_str_eq(fla_cuda_arch_name(9, 0, buf, sizeof buf), "sm_90a");
  ck_assert_str_eq(fla_cuda_arch_name(8, 0, buf, sizeof buf), "sm_80");
  ck_assert_str_eq(fla_cuda_arch_name(8, 6, buf, sizeof buf), "sm_86");
  ck_assert_str_eq(fla_cuda_arch_name(10, 0, buf, sizeof buf), "sm_100a");
}
END_TEST

START_TEST(test_compile_bad_arguments) {
  /* Argument checks come before NVRTC is needed, so these run everywhere. */
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = (void *)1;
  size_t n = 7;
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", NULL, "sm_90", NULL, 0, &cubin, &n),
                   FLA_INVALID);
  ck_assert_ptr_null(cubin);
  ck_assert_uint_eq(n, 0);
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", mma_source, "sm_90", NULL, 0, NULL, &n),
                   FLA_INVALID);
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", mma_source, "sm_90", NULL, 2, &cubin, &n),
                   FLA_INVALID);
  const char *archs[] = {"compute_90", "sm_9", "sm_90 -G", "90", "sm_90ab", ""};
  for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
    ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", mma_source, archs[i], NULL, 0, &cubin, &n),
                     FLA_INVALID);
    ck_assert_msg(strstr(fla_errmsg(ctx), "not a real target"), "%s", fla_errmsg(ctx));
  }
  const char *nullopt[] = {"-lineinfo", NULL};
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", mma_source, "sm_90", nullopt, 2, &cubin, &n),
                   FLA_INVALID);
  int cached = 5;
  ck_assert_int_eq(fla_modcache_get_or_compile(ctx, NULL, mma_source, "sm_90", NULL, 0,
                                               &cubin, &n, &cached),
                   FLA_INVALID);
  ck_assert_int_eq(cached, 0);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_cache_key) {
  const char *o1[] = {"-DA=1"}, *o2[] = {"-DA=2"};
  const char *ab_c[] = {"ab", "c"}, *a_bc[] = {"a", "bc"};
  uint64_t k[10][2];
  fla_modcache_key("n", "src", "sm_90", NULL, 0, 13, 0, k[0]);
  fla_modcache_key("n", "src", "sm_90", NULL, 0, 13, 0, k[1]);
  ck_assert(k[0][0] == k[1][0] && k[0][1] == k[1][1]);
  fla_modcache_key("n", "src ", "sm_90", NULL, 0, 13, 0, k[1]);
  fla_modcache_key("n", "src", "sm_90a", NULL, 0, 13, 0, k[2]);
  fla_modcache_key("n", "src", "sm_90", o1, 1, 13, 0, k[3]);
  fla_modcache_key("n", "src", "sm_90", o2, 1, 13, 0, k[4]);
  fla_modcache_key("n", "src", "sm_90", NULL, 0, 13, 1, k[5]);
  fla_modcache_key("m", "src", "sm_90", NULL, 0, 13, 0, k[6]);
  fla_modcache_key("n", "src", "sm_90", ab_c, 2, 13, 0, k[7]);
  fla_modcache_key("n", "src", "sm_90", a_bc, 2, 13, 0, k[8]);
  fla_modcache_key("n", "src", "sm_90", NULL, 0, 12, 0, k[9]);
  for (int i = 0; i < 10; i++)
    for (int j = i + 1; j < 10; j++)
      ck_assert_msg(k[i][0] != k[j][0] && k[i][1] != k[j][1], "keys %d and %d collide", i,
                    j);
}
END_TEST

START_TEST(test_cache_dir_from_environment) {
  char buf[4096];
  setenv("FLA_CACHE_DIR", "/x/y", 1);
  ck_assert_int_eq(fla_modcache_dir(buf, sizeof buf), 0);
  ck_assert_str_eq(buf, "/x/y");
  unsetenv("FLA_CACHE_DIR");
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  ck_assert_int_eq(fla_modcache_dir(buf, sizeof buf), 0);
  ck_assert_str_eq(buf, "/xdg/fla/modules");
  setenv("XDG_CACHE_HOME", "relative/ignored", 1);
  setenv("HOME", "/home/u", 1);
  ck_assert_int_eq(fla_modcache_dir(buf, sizeof buf), 0);
  ck_assert_str_eq(buf, "/home/u/.cache/fla/modules");
  unsetenv("XDG_CACHE_HOME");
  unsetenv("HOME");
  ck_assert_int_eq(fla_modcache_dir(buf, sizeof buf), -1);
  setenv("HOME", "/home/u", 1);
  ck_assert_int_eq(fla_modcache_dir(buf, 8), -1);  /* too small: no truncated path */
}
END_TEST

/* Seen from NVRTC 13.0 with --ptxas-options=-v, plus an sm_80-style line
** (no barrier count, cmem) and a non-inlined device function's block. */
static const char *canned_log =
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Function properties for _Z6helperPfi\n"
    "ptxas         .     32 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Compiling entry function 'k3' for 'sm_90a'\n"
    "ptxas info    : Function properties for k3\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 4 registers, used 0 barriers\n"
    "ptxas info    : Compile time = 10.394 ms\n"
    "ptxas info    : Compiling entry function 'k2' for 'sm_90a'\n"
    "ptxas info    : Function properties for k2\n"
    "ptxas         .     1424 bytes stack frame, 2480 bytes spill stores, 3024 bytes spill loads\n"
    "ptxas info    : Used 32 registers, used 0 barriers, 1424 bytes cumulative stack size\n"
    "ptxas info    : Compiling entry function 'k1' for 'sm_80'\n"
    "ptxas info    : Function properties for _Z6helperPfi\n"
    "ptxas         .     64 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
    "ptxas info    : Function properties for k1\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 10 registers, 1024 bytes smem, 360 bytes cmem[0]\n";

START_TEST(test_parse_resources_canned) {
  fla_kernel_resources r;
  ck_assert_int_eq(fla_nvrtc_parse_resources(canned_log, "k2", &r), 1);
  ck_assert_int_eq(r.registers, 32);
  ck_assert_int_eq(r.stack_bytes, 1424);
  ck_assert_int_eq(r.spill_store_bytes, 2480);
  ck_assert_int_eq(r.spill_load_bytes, 3024);
  ck_assert_int_eq(r.smem_bytes, 0);
  ck_assert_int_eq(r.barriers, 0);
  ck_assert_int_eq(fla_nvrtc_parse_resources(canned_log, "k1", &r), 1);
  ck_assert_int_eq(r.registers, 10);
  ck_assert_int_eq(r.smem_bytes, 1024);
  ck_assert_int_eq(r.stack_bytes, 0);        /* not the helper's 64 */
  ck_assert_int_eq(r.spill_store_bytes, 0);
  ck_assert_int_eq(r.barriers, -1);          /* this line format has none */
  ck_assert_int_eq(fla_nvrtc_parse_resources(canned_log, NULL, &r), 3);
  ck_assert_int_eq(r.registers, 32);
  ck_assert_int_eq(r.smem_bytes, 1024);
  ck_assert_int_eq(r.spill_store_bytes, 2480);
  ck_assert_int_eq(fla_nvrtc_parse_resources(canned_log, "nope", &r), 0);
  ck_assert_int_eq(r.registers, -1);
  ck_assert_int_eq(r.smem_bytes, -1);
  ck_assert_int_eq(fla_nvrtc_parse_resources("", NULL, &r), 0);
  ck_assert_int_eq(fla_nvrtc_parse_resources(NULL, NULL, &r), 0);
  ck_assert_int_eq(r.spill_load_bytes, -1);
}
END_TEST

/* ================================================== when NVRTC is missing */

START_TEST(test_skip_no_nvrtc) {
  /* Deliberately asserts nothing: it records that the NVRTC tests were not
  ** run, and why. See the comment at the top of this file. */
  printf("test_nvrtc: SKIP: skipped: %s\n", nvrtc_why);
}
END_TEST

START_TEST(test_compile_unsupported_without_nvrtc) {
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = NULL;
  size_t n = 0;
  int cached = -1;
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", mma_source, "sm_90", NULL, 0, &cubin, &n),
                   FLA_UNSUPPORTED);
  ck_assert_msg(strstr(fla_errmsg(ctx), "NVRTC not found (tried"), "%s", fla_errmsg(ctx));
  ck_assert_ptr_null(cubin);
  ck_assert_int_eq(fla_modcache_get_or_compile(ctx, "k", mma_source, "sm_90", NULL, 0, &cubin,
                                               &n, &cached),
                   FLA_UNSUPPORTED);
  ck_assert_int_eq(cached, 0);
  ck_assert_int_eq(fla_nvrtc_version(NULL, NULL), -1);
  fla_ctx_free(ctx);
}
END_TEST

/* ======================================================== NVRTC compiles */

START_TEST(test_mma_compiles_for_each_arch) {
  fla_ctx *ctx = th_cpu_ctx();
  int ma = 0, mi = 0;
  ck_assert_int_eq(fla_nvrtc_version(&ma, &mi), 0);
  ck_assert_int_ge(ma, 11);
  const char *archs[] = {"sm_80", "sm_90", "sm_90a"};
  for (int i = 0; i < 3; i++) {
    void *cubin = NULL;
    size_t n = 0;
    double t0 = th_now_s();
    fla_status st = fla_nvrtc_compile(ctx, "mma_bf16", mma_source, archs[i], NULL, 0, &cubin,
                                      &n);
    double dt = th_now_s() - t0;
    ck_assert_msg(st == FLA_OK, "%s: %s", archs[i], fla_errmsg(ctx));
    ck_assert_ptr_nonnull(cubin);
    ck_assert_uint_gt(n, 64);
    ck_assert(fla_cubin_is_elf(cubin, n));
    printf("nvrtc %d.%d (%s): mma_bf16 for %s: %.3f s, %zu-byte cubin\n", ma, mi,
           fla_nvrtc_library(), archs[i], dt, n);
    free(cubin);
  }
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_wgmma_needs_sm_90a) {
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = NULL;
  size_t n = 0;
  ck_assert_msg(fla_nvrtc_compile(ctx, "fence", wgmma_source, "sm_90a", NULL, 0, &cubin, &n) ==
                    FLA_OK,
                "%s", fla_errmsg(ctx));
  ck_assert(fla_cubin_is_elf(cubin, n));
  free(cubin);
  cubin = NULL;
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "fence", wgmma_source, "sm_90", NULL, 0, &cubin, &n),
                   FLA_ERROR);
  ck_assert_ptr_null(cubin);
  ck_assert_msg(strstr(fla_errmsg(ctx), "nvrtc: fence for sm_90: "), "%s", fla_errmsg(ctx));
  ck_assert_msg(strstr(fla_errmsg(ctx), "wgmma"), "%s", fla_errmsg(ctx));
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_syntax_error_reports_log) {
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = NULL;
  size_t n = 0;
  char *log = NULL;
  ck_assert_int_eq(fla_nvrtc_compile_ex(ctx, "bad_kernel", bad_source, "sm_90", NULL, 0, &cubin,
                                        &n, &log),
                   FLA_ERROR);
  ck_assert_ptr_null(cubin);
  ck_assert_uint_eq(n, 0);
  const char *msg = fla_errmsg(ctx);
  ck_assert_msg(strncmp(msg, "nvrtc: bad_kernel for sm_90: ", 29) == 0, "%s", msg);
  ck_assert_msg(strstr(msg, "bad_kernel(3): error"), "no line number in: %s", msg);
  ck_assert_ptr_nonnull(log);
  ck_assert_msg(strstr(log, "bad_kernel(3)"), "%s", log);
  free(log);
  /* A bad option is a failed compile too, with NVRTC's reason. */
  const char *opt[] = {"--no-such-option"};
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "k", mma_source, "sm_90", opt, 1, &cubin, &n),
                   FLA_ERROR);
  ck_assert_msg(strstr(fla_errmsg(ctx), "nvrtc: k for sm_90: "), "%s", fla_errmsg(ctx));
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_long_log_keeps_first_error_and_summary) {
  /* 60 broken lines: the log is far longer than the message. */
  char *src = malloc(60 * 64 + 64);
  ck_assert_ptr_nonnull(src);
  size_t used = 0;
  used += (size_t)sprintf(src + used, "__global__ void k(float *x) {\n");
  for (int i = 0; i < 60; i++) used += (size_t)sprintf(src + used, "  x[0] = = %d.0f;\n", i);
  sprintf(src + used, "}\n");
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = NULL;
  size_t n = 0;
  ck_assert_int_eq(fla_nvrtc_compile(ctx, "long", src, "sm_80", NULL, 0, &cubin, &n), FLA_ERROR);
  const char *msg = fla_errmsg(ctx);
  ck_assert_msg(strstr(msg, "long(2): error"), "first error missing: %s", msg);
  ck_assert_msg(strstr(msg, "bytes of the log left out"), "%s", msg);
  ck_assert_msg(strstr(msg, "errors detected"), "summary missing: %s", msg);
  ck_assert_uint_lt(strlen(msg), FLA_ERRMSG_MAX);
  free(src);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_resources_from_ptxas) {
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = NULL;
  size_t n = 0;
  char *log = NULL;
  ck_assert_msg(fla_nvrtc_compile_ex(ctx, "resources", resource_source, "sm_90a", NULL, 0,
                                     &cubin, &n, &log) == FLA_OK,
                "%s", fla_errmsg(ctx));
  ck_assert_ptr_nonnull(log);
  fla_kernel_resources r;
  ck_assert_int_eq(fla_nvrtc_parse_resources(log, "with_smem", &r), 1);
  ck_assert_int_eq(r.smem_bytes, 1024);
  ck_assert_int_gt(r.registers, 0);
  ck_assert_int_ge(r.barriers, 1);
  ck_assert_int_eq(r.spill_store_bytes, 0);
  ck_assert_int_eq(fla_nvrtc_parse_resources(log, "spills", &r), 1);
  ck_assert_int_le(r.registers, 32);  /* 1024 threads x 2 blocks cap it at 32 */
  ck_assert_int_gt(r.spill_store_bytes, 0);
  ck_assert_int_gt(r.stack_bytes, 0);
  ck_assert_int_eq(r.smem_bytes, 0);
  ck_assert_int_eq(fla_nvrtc_parse_resources(log, NULL, &r), 2);
  printf("ptxas report for sm_90a:\n%s", log);
  free(log);
  free(cubin);
  /* Again: where a driver is installed NVRTC 13 has a cache of its own that
  ** would skip ptxas and its report; the report must still be there. */
  ck_assert_int_eq(fla_nvrtc_compile_ex(ctx, "resources", resource_source, "sm_90a", NULL, 0,
                                        &cubin, &n, &log),
                   FLA_OK);
  ck_assert_int_eq(fla_nvrtc_parse_resources(log, NULL, &r), 2);
  free(log);
  free(cubin);
  fla_ctx_free(ctx);
}
END_TEST

/* ========================================================== module cache */

static void cache_compile(fla_ctx *ctx, const char *src, void **cubin, size_t *n, int *cached) {
  fla_status st =
      fla_modcache_get_or_compile(ctx, "mma_bf16", src, "sm_90", NULL, 0, cubin, n, cached);
  ck_assert_msg(st == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert(fla_cubin_is_elf(*cubin, *n));
}

START_TEST(test_cache_hit_and_log) {
  char *dir = make_tmpdir();
  setenv("FLA_CACHE_DIR", dir, 1);
  fla_ctx *ctx = th_cpu_ctx();
  void *c1 = NULL, *c2 = NULL;
  size_t n1 = 0, n2 = 0;
  int cached = -1;
  double t0 = th_now_s();
  cache_compile(ctx, mma_source, &c1, &n1, &cached);
  double t1 = th_now_s();
  ck_assert_int_eq(cached, 0);
  cache_compile(ctx, mma_source, &c2, &n2, &cached);
  double t2 = th_now_s();
  ck_assert_int_eq(cached, 1);
  ck_assert_uint_eq(n1, n2);
  ck_assert_int_eq(memcmp(c1, c2, n1), 0);
  printf("modcache: miss %.3f s, hit %.6f s\n", t1 - t0, t2 - t1);
  char path[4096];
  ck_assert_int_eq(
      fla_modcache_entry_path("mma_bf16", mma_source, "sm_90", NULL, 0, path, sizeof path), 0);
  ck_assert_int_eq(access(path, R_OK), 0);
  ck_assert_int_eq(count_files(dir, "."), 1);    /* no temporary left behind */
  ck_assert_int_eq(count_files(dir, ".tmp."), 0);
  /* The log travels with the module, so a cached one still reports resources. */
  char *log = NULL;
  void *c3 = NULL;
  size_t n3 = 0;
  ck_assert_int_eq(fla_modcache_get_or_compile_ex(ctx, "mma_bf16", mma_source, "sm_90", NULL, 0,
                                                  &c3, &n3, &cached, &log),
                   FLA_OK);
  ck_assert_int_eq(cached, 1);
  fla_kernel_resources r;
  ck_assert_int_eq(fla_nvrtc_parse_resources(log, "mma_bf16", &r), 1);
  ck_assert_int_gt(r.registers, 0);
  free(log);
  free(c3);
  /* Other options or arch: another entry. */
  const char *opt[] = {"-DVARIANT=2"};
  void *c4 = NULL;
  size_t n4 = 0;
  ck_assert_int_eq(fla_modcache_get_or_compile(ctx, "mma_bf16", mma_source, "sm_90", opt, 1, &c4,
                                               &n4, &cached),
                   FLA_OK);
  ck_assert_int_eq(cached, 0);
  ck_assert_int_eq(count_files(dir, ".cubin"), 2);
  free(c4);
  /* A failed compile stores nothing. */
  ck_assert_int_eq(fla_modcache_get_or_compile(ctx, "bad", bad_source, "sm_90", NULL, 0, &c4,
                                               &n4, &cached),
                   FLA_ERROR);
  ck_assert_msg(strstr(fla_errmsg(ctx), "bad(3): error"), "%s", fla_errmsg(ctx));
  ck_assert_int_eq(count_files(dir, ".cubin"), 2);
  free(c1);
  free(c2);
  fla_ctx_free(ctx);
  rm_tree(dir);
  free(dir);
}
END_TEST

/* Damages the entry in one way, checks it is recompiled, rewritten and then
** served again. */
static void check_recovers(fla_ctx *ctx, const char *path, const void *good, size_t n,
                           const void *bad, size_t bad_n, const char *what) {
  write_file(path, bad, bad_n);
  void *c = NULL;
  size_t m = 0;
  int cached = -1;
  cache_compile(ctx, mma_source, &c, &m, &cached);
  ck_assert_msg(cached == 0, "%s: a damaged file was served", what);
  ck_assert_uint_eq(m, n);
  ck_assert_int_eq(memcmp(c, good, n), 0);
  free(c);
  cache_compile(ctx, mma_source, &c, &m, &cached);
  ck_assert_msg(cached == 1, "%s: not rewritten after the recompile", what);
  free(c);
}

START_TEST(test_cache_rejects_damaged_files) {
  char *dir = make_tmpdir();
  setenv("FLA_CACHE_DIR", dir, 1);
  fla_ctx *ctx = th_cpu_ctx();
  void *good = NULL;
  size_t n = 0;
  int cached = -1;
  cache_compile(ctx, mma_source, &good, &n, &cached);
  char path[4096];
  ck_assert_int_eq(
      fla_modcache_entry_path("mma_bf16", mma_source, "sm_90", NULL, 0, path, sizeof path), 0);
  size_t fn = 0;
  unsigned char *file = read_file(path, &fn);
  ck_assert_uint_gt(fn, n + 64);
  unsigned char *bad = malloc(fn);
  ck_assert_ptr_nonnull(bad);

  memcpy(bad, file, fn);
  bad[64 + n / 2] ^= 0x40;  /* one bit inside the CUBIN */
  check_recovers(ctx, path, good, n, bad, fn, "flipped cubin bit");
  memcpy(bad, file, fn);
  bad[fn - 1] ^= 0x01;      /* one bit inside the stored log */
  check_recovers(ctx, path, good, n, bad, fn, "flipped log bit");
  check_recovers(ctx, path, good, n, file, 30, "shorter than the header");
  check_recovers(ctx, path, good, n, file, fn - 100, "truncated");
  memcpy(bad, file, fn);
  bad[0] = 'X';
  check_recovers(ctx, path, good, n, bad, fn, "wrong magic");
  memcpy(bad, file, fn);
  bad[20] ^= 1;             /* another key in the header */
  check_recovers(ctx, path, good, n, bad, fn, "wrong key");
  memcpy(bad, file, fn);
  bad[33] ^= 1;             /* a size that does not add up */
  check_recovers(ctx, path, good, n, bad, fn, "wrong size");
  check_recovers(ctx, path, good, n, "", 0, "empty");
  /* A directory where the file should be: compiled, no crash. */
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  void *c = NULL;
  size_t m = 0;
  cache_compile(ctx, mma_source, &c, &m, &cached);
  ck_assert_int_eq(cached, 0);
  free(c);
  free(bad);
  free(file);
  free(good);
  fla_ctx_free(ctx);
  rm_tree(dir);
  free(dir);
}
END_TEST

START_TEST(test_cache_unwritable_dirs_still_compile) {
  char *dir = make_tmpdir();
  char file[4200], below_file[4300];
  snprintf(file, sizeof file, "%s/a_file", dir);
  write_file(file, "x", 1);
  snprintf(below_file, sizeof below_file, "%s/sub/dir", file);
  const char *dirs[] = {"/proc/forbidden", file, below_file, "/dev/null"};
  fla_ctx *ctx = th_cpu_ctx();
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    setenv("FLA_CACHE_DIR", dirs[i], 1);
    for (int round = 0; round < 2; round++) {
      void *c = NULL;
      size_t n = 0;
      int cached = -1;
      fla_status st = fla_modcache_get_or_compile(ctx, "mma_bf16", mma_source, "sm_80", NULL, 0,
                                                  &c, &n, &cached);
      ck_assert_msg(st == FLA_OK, "%s: %s", dirs[i], fla_errmsg(ctx));
      ck_assert_int_eq(cached, 0);
      ck_assert(fla_cubin_is_elf(c, n));
      free(c);
    }
  }
  /* No home at all: still compiles. */
  unsetenv("FLA_CACHE_DIR");
  unsetenv("XDG_CACHE_HOME");
  unsetenv("HOME");
  void *c = NULL;
  size_t n = 0;
  int cached = -1;
  ck_assert_int_eq(fla_modcache_get_or_compile(ctx, "mma_bf16", mma_source, "sm_80", NULL, 0, &c,
                                               &n, &cached),
                   FLA_OK);
  ck_assert_int_eq(cached, 0);
  free(c);
  /* A read-only cache directory: compiles, and when not root, writes nothing. */
  char ro[4200];
  snprintf(ro, sizeof ro, "%s/ro", dir);
  ck_assert_int_eq(mkdir(ro, 0500), 0);
  setenv("FLA_CACHE_DIR", ro, 1);
  ck_assert_int_eq(fla_modcache_get_or_compile(ctx, "mma_bf16", mma_source, "sm_80", NULL, 0, &c,
                                               &n, &cached),
                   FLA_OK);
  ck_assert_int_eq(cached, 0);
  free(c);
  if (geteuid() != 0) ck_assert_int_eq(count_files(ro, "."), 0);
  chmod(ro, 0700);
  fla_ctx_free(ctx);
  rm_tree(dir);
  free(dir);
}
END_TEST

START_TEST(test_cache_default_dirs_created) {
  char *dir = make_tmpdir();
  unsetenv("FLA_CACHE_DIR");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", dir, 1);
  fla_ctx *ctx = th_cpu_ctx();
  void *c = NULL;
  size_t n = 0;
  int cached = -1;
  cache_compile(ctx, mma_source, &c, &n, &cached);
  free(c);
  char sub[4200];
  snprintf(sub, sizeof sub, "%s/.cache/fla/modules", dir);
  ck_assert_int_eq(count_files(sub, ".cubin"), 1);
  struct stat st;
  ck_assert_int_eq(stat(sub, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0700);
  snprintf(sub, sizeof sub, "%s/xdg", dir);
  setenv("XDG_CACHE_HOME", sub, 1);
  cache_compile(ctx, mma_source, &c, &n, &cached);
  ck_assert_int_eq(cached, 0);  /* a new place: compiled again */
  free(c);
  snprintf(sub, sizeof sub, "%s/xdg/fla/modules", dir);
  ck_assert_int_eq(count_files(sub, ".cubin"), 1);
  fla_ctx_free(ctx);
  rm_tree(dir);
  free(dir);
}
END_TEST

/* ======================================================= on a real GPU */

#define CK_CU(call)                                                           \
  do {                                                                        \
    CUresult r_ = (call);                                                     \
    ck_assert_msg(r_ == CUDA_SUCCESS, "%s: %s", #call, fla_cuda_result_str(r_)); \
  } while (0)

static uint16_t bf16_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (uint16_t)(u >> 16);  /* exact: the test values have 4 mantissa bits */
}

START_TEST(test_gpu_mma_runs) {
  char err[1024];
  ck_assert_msg(fla_cuda_driver_load(err, sizeof err) == 0, "%s", err);
  const fla_cuda_driver *d = fla_cuda_driver_api();
  fla_cuda_device_info info;
  ck_assert_msg(fla_cuda_device_query(0, &info, err, sizeof err) == 0, "%s", err);
  printf("device 0: %s, cc %d.%d (%s), %d SMs, smem/block %d (opt-in %d), smem/SM %d, "
         "L2 %d B, %zu B memory, driver %d\n",
         info.name, info.cc_major, info.cc_minor, info.arch, info.sm_count, info.smem_per_block,
         info.smem_per_block_optin, info.smem_per_sm, info.l2_bytes, info.total_mem,
         info.driver_version);
  ck_assert_int_gt(info.sm_count, 0);
  ck_assert_int_gt(info.l2_bytes, 0);
  ck_assert_int_ge(info.smem_per_block_optin, info.smem_per_block);
  ck_assert_int_ge(info.cc_major, 8);  /* mma.sync bf16 needs sm_80 */

  char *dir = make_tmpdir();
  setenv("FLA_CACHE_DIR", dir, 1);
  fla_ctx *ctx = th_cpu_ctx();
  void *cubin = NULL;
  size_t n = 0;
  int cached = -1;
  char *log = NULL;
  ck_assert_msg(fla_modcache_get_or_compile_ex(ctx, "mma_bf16", mma_source, info.arch, NULL, 0,
                                               &cubin, &n, &cached, &log) == FLA_OK,
                "%s", fla_errmsg(ctx));

  CUdevice dev;
  CUcontext cu = NULL;
  CK_CU(d->cuDeviceGet(&dev, 0));
  CK_CU(d->cuDevicePrimaryCtxRetain(&cu, dev));
  CK_CU(d->cuCtxSetCurrent(cu));
  CUmodule mod = NULL;
  CUfunction fn = NULL;
  CK_CU(d->cuModuleLoadData(&mod, cubin));
  CK_CU(d->cuModuleGetFunction(&fn, mod, "mma_bf16"));
  /* ptxas' report and the driver agree on the register count. */
  int regs = 0;
  fla_kernel_resources res;
  CK_CU(d->cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn));
  ck_assert_int_eq(fla_nvrtc_parse_resources(log, "mma_bf16", &res), 1);
  ck_assert_int_eq(regs, res.registers);
  CK_CU(d->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                              info.smem_per_block_optin));

  uint16_t A[256], Bt[128];
  float D[128], ref[128], Af[256], Bf[128];
  th_rng rng;
  th_seed(&rng, 42);
  for (int i = 0; i < 256; i++) Af[i] = (float)((int)(th_uniform(&rng) * 17) - 8) / 8.0f;
  for (int i = 0; i < 128; i++) Bf[i] = (float)((int)(th_uniform(&rng) * 17) - 8) / 8.0f;
  for (int i = 0; i < 256; i++) A[i] = bf16_bits(Af[i]);
  for (int i = 0; i < 128; i++) Bt[i] = bf16_bits(Bf[i]);
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 8; c++) {
      double s = 0;
      for (int k = 0; k < 16; k++) s += (double)Af[r * 16 + k] * Bf[c * 16 + k];
      ref[r * 8 + c] = (float)s;
    }

  CUstream stream = NULL;
  CUevent e0 = NULL, e1 = NULL;
  CK_CU(d->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CK_CU(d->cuEventCreate(&e0, CU_EVENT_DEFAULT));
  CK_CU(d->cuEventCreate(&e1, CU_EVENT_DEFAULT));
  CUdeviceptr dA, dB, dD, dT;
  CK_CU(d->cuMemAlloc(&dA, sizeof A));
  CK_CU(d->cuMemAlloc(&dT, sizeof Bt));
  CK_CU(d->cuMemAlloc(&dB, sizeof Bt));
  CK_CU(d->cuMemAlloc(&dD, sizeof D));
  CK_CU(d->cuMemcpyHtoD(dA, A, sizeof A));
  CK_CU(d->cuMemcpyHtoD(dT, Bt, sizeof Bt));
  CK_CU(d->cuMemsetD8(dB, 0xff, sizeof Bt));
  CK_CU(d->cuMemcpyDtoD(dB, dT, sizeof Bt));
  CK_CU(d->cuMemsetD32(dD, 0x7fc00000u, 128));  /* NaN: every output must be written */
  void *args[] = {&dA, &dB, &dD};
  CK_CU(d->cuEventRecord(e0, stream));
  CK_CU(d->cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, stream, args, NULL));
  CK_CU(d->cuEventRecord(e1, stream));
  CK_CU(d->cuEventSynchronize(e1));
  CK_CU(d->cuStreamSynchronize(stream));
  CK_CU(d->cuCtxSynchronize());
  float ms = -1;
  CK_CU(d->cuEventElapsedTime(&ms, e0, e1));
  ck_assert(ms >= 0);
  CK_CU(d->cuMemcpyDtoH(D, dD, sizeof D));
  for (int i = 0; i < 128; i++)
    ck_assert_msg(D[i] == ref[i], "D[%d] = %g, want %g", i, (double)D[i], (double)ref[i]);
  printf("mma_bf16 on %s (%s, %s): 16x8x16 exact, kernel %.3f ms, %d registers\n", info.name,
         info.arch, cached ? "cached" : "compiled", (double)ms, regs);

  CK_CU(d->cuMemFree(dA));
  CK_CU(d->cuMemFree(dB));
  CK_CU(d->cuMemFree(dT));
  CK_CU(d->cuMemFree(dD));
  CK_CU(d->cuEventDestroy(e0));
  CK_CU(d->cuEventDestroy(e1));
  CK_CU(d->cuStreamDestroy(stream));
  CK_CU(d->cuModuleUnload(mod));
  CK_CU(d->cuDevicePrimaryCtxRelease(dev));
  free(log);
  free(cubin);
  fla_ctx_free(ctx);
  rm_tree(dir);
  free(dir);
}
END_TEST

/* Counts devices in a child process: CUDA does not survive fork() once
** initialised, and Check forks for every test. Returns -1 with driver_why
** set when the driver cannot be used. */
static int probe_devices(void) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    char why[1024] = "";
    int n = fla_cuda_device_count(why, sizeof why);
    ssize_t w = write(fds[1], &n, sizeof n);
    w += write(fds[1], why, sizeof why);
    _exit(w > 0 ? 0 : 1);
  }
  close(fds[1]);
  int n = -1;
  if (pid < 0 || read(fds[0], &n, sizeof n) != (ssize_t)sizeof n ||
      read(fds[0], driver_why, sizeof driver_why) <= 0)
    n = -1;
  driver_why[sizeof driver_why - 1] = '\0';
  close(fds[0]);
  if (pid > 0) waitpid(pid, NULL, 0);
  return n;
}

static Suite *nvrtc_suite(void) {
  Suite *s = suite_create("nvrtc");
  TCase *tc = tcase_create("loaders");
  tcase_add_test(tc, test_driver_loader);
  tcase_add_test(tc, test_nvrtc_try_load_reports_candidates);
  tcase_add_test(tc, test_arch_names);
  tcase_add_test(tc, test_compile_bad_arguments);
  tcase_add_test(tc, test_cache_key);
  tcase_add_test(tc, test_cache_dir_from_environment);
  tcase_add_test(tc, test_parse_resources_canned);
  suite_add_tcase(s, tc);

  if (fla_nvrtc_load(nvrtc_why, sizeof nvrtc_why) != 0) {
    printf("test_nvrtc: skipped: %s\n", nvrtc_why);
    TCase *skip = tcase_create("nvrtc_skipped");
    tcase_add_test(skip, test_skip_no_nvrtc);
    tcase_add_test(skip, test_compile_unsupported_without_nvrtc);
    suite_add_tcase(s, skip);
    return s;
  }
  TCase *nv = tcase_create("nvrtc");
  tcase_set_timeout(nv, 300);  /* each compile takes a fraction of a second */
  tcase_add_test(nv, test_mma_compiles_for_each_arch);
  tcase_add_test(nv, test_wgmma_needs_sm_90a);
  tcase_add_test(nv, test_syntax_error_reports_log);
  tcase_add_test(nv, test_long_log_keeps_first_error_and_summary);
  tcase_add_test(nv, test_resources_from_ptxas);
  tcase_add_test(nv, test_cache_hit_and_log);
  tcase_add_test(nv, test_cache_rejects_damaged_files);
  tcase_add_test(nv, test_cache_unwritable_dirs_still_compile);
  tcase_add_test(nv, test_cache_default_dirs_created);
  suite_add_tcase(s, nv);

  int ndev = probe_devices();
  if (ndev > 0) {
    TCase *gpu = tcase_create("gpu");
    tcase_set_timeout(gpu, 300);
    tcase_add_test(gpu, test_gpu_mma_runs);
    suite_add_tcase(s, gpu);
  } else {
    printf("test_nvrtc: skipped: no CUDA device (%s)\n",
           ndev == 0 ? "the driver reports 0 devices" : driver_why);
  }
  return s;
}

int main(void) { return th_run_suite(nvrtc_suite()); }
