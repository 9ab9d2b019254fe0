/*
** harness.c -- helpers shared by the Check suites.
*/
#include "harness.h"
#include "cuda/nvrtc.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

const char *th_shared_path(const char *rel) {
  static char buf[4096];
  const char *dir = getenv("FLA_SHARED_DIR");
  snprintf(buf, sizeof buf, "%s/%s", dir && *dir ? dir : FLA_SHARED_DIR, rel);
  return buf;
}

const char *th_source_path(const char *rel) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/%s", FLA_SOURCE_DIR, rel);
  return buf;
}

void th_seed(th_rng *r, uint64_t seed) { r->s = seed * 2685821657736338717ull + 1; }

static uint64_t th_next_(th_rng *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 2685821657736338717ull;
}

double th_uniform(th_rng *r) { return (double)(th_next_(r) >> 11) * (1.0 / 9007199254740992.0); }

double th_normal(th_rng *r) {
  double u1 = th_uniform(r), u2 = th_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void th_fill_normal(th_rng *r, double *x, int64_t n, double stddev) {
  for (int64_t i = 0; i < n; i++) x[i] = stddev * th_normal(r);
}

void th_fill_logsigmoid(th_rng *r, double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double z = th_normal(r);
    x[i] = z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z));
  }
}

double th_rel_rms_f64(const double *a, const double *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  if (den == 0) return num == 0 ? 0 : 1;
  return sqrt(num / den);
}

double th_rel_rms_f32(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  if (den == 0) return num == 0 ? 0 : 1;
  return sqrt(num / den);
}

int th_any_nan_f32(const float *a, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (isnan(a[i])) return 1;
  return 0;
}

int th_quick(void) {
  const char *q = getenv("FLA_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

int th_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

double th_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

fla_ctx *th_cpu_ctx(void) {
  fla_ctx *ctx = NULL;
  ck_assert_int_eq(fla_ctx_create(FLA_BACKEND_CPU, &ctx), FLA_OK);
  return ctx;
}

fla_ctx *th_cuda_ctx(void) {
  fla_ctx *ctx = NULL;
  char why[1024];
  ck_assert_msg(fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, why, sizeof why) == FLA_OK, "%s", why);
  return ctx;
}

const char *th_tiny_model_dir(const char *name) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s%s", th_shared_path("conformance/tiny_models/"), name);
  return buf;
}

void th_write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

unsigned char *th_read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *p = malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(p);
  ck_assert_uint_eq(fread(p, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return p;
}

int th_count_entries(const char *dir) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

int th_probe_cuda(char *why, size_t len) {
  char msg[1024] = "";
  int fds[2];
  if (pipe(fds) != 0) {
    snprintf(why, len, "pipe failed");
    return 0;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    fla_ctx *ctx = NULL;
    int ok = fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, msg, sizeof msg) == FLA_OK;
    fla_ctx_free(ctx);
    ssize_t w = write(fds[1], &ok, sizeof ok);
    w += write(fds[1], msg, sizeof msg);
    _exit(w > 0 ? 0 : 1);
  }
  close(fds[1]);
  int ok = 0;
  if (pid < 0 || read(fds[0], &ok, sizeof ok) != (ssize_t)sizeof ok ||
      read(fds[0], msg, sizeof msg) != (ssize_t)sizeof msg) {
    ok = 0;
    snprintf(msg, sizeof msg, "the probe process failed");
  }
  msg[sizeof msg - 1] = '\0';
  close(fds[0]);
  if (pid > 0) waitpid(pid, NULL, 0);
  snprintf(why, len, "%s", msg);
  return ok;
}

void th_check_nvrtc_compiles(const char *test, const char *name, const char *source) {
  ck_assert_ptr_nonnull(source);
  const char *arch[2] = {"sm_80", "sm_90"};
  fla_ctx *ctx = th_cpu_ctx();
  for (int a = 0; a < 2; a++) {
    void *cubin = NULL;
    size_t n = 0;
    fla_status s = fla_nvrtc_compile(ctx, name, source, arch[a], NULL, 0, &cubin, &n);
    if (s == FLA_UNSUPPORTED) {
      printf("%s: SKIP compile of %s: %s\n", test, name, fla_errmsg(ctx));
      break;
    }
    ck_assert_msg(s == FLA_OK, "%s for %s: %s", name, arch[a], fla_errmsg(ctx));
    ck_assert(fla_cubin_is_elf(cubin, n));
    free(cubin);
  }
  fla_ctx_free(ctx);
}
