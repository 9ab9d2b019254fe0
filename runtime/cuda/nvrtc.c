/*
** nvrtc.c -- compiles generated CUDA C++ into a CUBIN through NVRTC (loaded
** at run time by cuda_api.c), and reads ptxas' resource report.
*/
#include "cuda/nvrtc.h"
#include "rtc_log.h"
#include "cuda/cuda_api.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kept in one place: the module cache hashes them into its key. */
static const char *const default_opts[] = {"-std=c++17", "-default-device"};
#define NDEFAULT ((int)(sizeof default_opts / sizeof default_opts[0]))
#define PTXAS_VERBOSE "--ptxas-options=-v"
/* NVRTC 13 keeps its own cache (in the driver's ComputeCache, only where a
** driver is installed); a hit there skips ptxas and so its -v report. When
** the report is wanted we turn that cache off; ours stores the report. */
#define NO_NVRTC_CACHE "--no-cache"
static atomic_int no_cache_known;  /* 0: untried, 1: accepted, -1: unknown option */

const char *const *fla_nvrtc_default_options(int *n) {
  if (n) *n = NDEFAULT;
  return default_opts;
}

int fla_cubin_is_elf(const void *buf, size_t size) {
  return buf && size >= 4 && memcmp(buf, "\177ELF", 4) == 0;
}

/* A real target only: "compute_XX" yields PTX and no CUBIN, and anything
** else would be an option smuggled into the command line. */
static int arch_ok(const char *arch) {
  if (strncmp(arch, "sm_", 3) != 0) return 0;
  const char *p = arch + 3;
  int digits = 0;
  for (; isdigit((unsigned char)*p); p++) digits++;
  if (digits < 2 || digits > 3) return 0;
  if (islower((unsigned char)*p)) p++;
  return *p == '\0';
}

static char *read_log(const fla_nvrtc_api *api, nvrtcProgram prog) {
  size_t n = 0;
  if (api->nvrtcGetProgramLogSize(prog, &n) != NVRTC_SUCCESS) n = 0;
  char *log = malloc(n + 1);
  if (!log) return NULL;
  if (n == 0 || api->nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) n = 0;
  log[n] = '\0';
  return log;
}

fla_status fla_nvrtc_compile_ex(fla_ctx *ctx, const char *name, const char *source,
                                const char *arch, const char *const *extra_opts,
                                int nopts, void **cubin, size_t *cubin_size, char **log) {
  if (cubin) *cubin = NULL;
  if (cubin_size) *cubin_size = 0;
  if (log) *log = NULL;
  if (!name || !source || !arch || !cubin || !cubin_size || nopts < 0 ||
      (nopts > 0 && !extra_opts))
    return fla_set_error(ctx, FLA_INVALID, "fla_nvrtc_compile: NULL argument");
  if (!arch_ok(arch))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_nvrtc_compile: arch '%s' is not a real target such as sm_90a",
                         arch);
  for (int i = 0; i < nopts; i++)
    if (!extra_opts[i])
      return fla_set_error(ctx, FLA_INVALID, "fla_nvrtc_compile: option %d is NULL", i);

  char err[1024];
  if (fla_nvrtc_load(err, sizeof err))
    return fla_set_error(ctx, FLA_UNSUPPORTED, "nvrtc: %s", err);
  const fla_nvrtc_api *api = fla_nvrtc_api_get();

  char archopt[64];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char **opts = malloc(sizeof *opts * (size_t)(nopts + NDEFAULT + 3));
  if (!opts) return fla_set_error(ctx, FLA_NOMEM, "nvrtc: out of memory");
  nvrtcProgram prog = NULL;
  nvrtcResult r = NVRTC_SUCCESS;
  char *text = NULL;
  for (int attempt = 0; attempt < 2; attempt++) {
    int no_cache = log && atomic_load(&no_cache_known) >= 0;
    int nall = 0;
    opts[nall++] = archopt;
    for (int i = 0; i < NDEFAULT; i++) opts[nall++] = default_opts[i];
    if (log) opts[nall++] = PTXAS_VERBOSE;
    if (no_cache) opts[nall++] = NO_NVRTC_CACHE;
    for (int i = 0; i < nopts; i++) opts[nall++] = extra_opts[i];

    r = api->nvrtcCreateProgram(&prog, source, name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
      free(opts);
      return fla_set_error(ctx, r == 1 ? FLA_NOMEM : FLA_ERROR,
                           "nvrtc: %s for %s: nvrtcCreateProgram: %s", name, arch,
                           api->nvrtcGetErrorString(r));
    }
    r = api->nvrtcCompileProgram(prog, nall, opts);
    text = read_log(api, prog);
    if (no_cache && r == NVRTC_ERROR_INVALID_OPTION && text && strstr(text, NO_NVRTC_CACHE)) {
      /* An NVRTC older than the option: it has no such cache either. */
      atomic_store(&no_cache_known, -1);
      free(text);
      text = NULL;
      api->nvrtcDestroyProgram(&prog);
      continue;
    }
    if (no_cache && r == NVRTC_SUCCESS) atomic_store(&no_cache_known, 1);
    break;
  }
  free(opts);
  fla_status st = FLA_OK;
  if (r != NVRTC_SUCCESS) {
    char body[FLA_ERRMSG_MAX];
    if (text && text[0])
      fla_rtc_format_log(body, sizeof body, text);
    else
      snprintf(body, sizeof body, "%s (empty log)", api->nvrtcGetErrorString(r));
    st = fla_set_error(ctx, FLA_ERROR, "nvrtc: %s for %s: %s", name, arch, body);
  } else {
    size_t n = 0;
    if (api->nvrtcGetCUBINSize(prog, &n) != NVRTC_SUCCESS || n == 0) {
      st = fla_set_error(ctx, FLA_ERROR, "nvrtc: %s for %s: no CUBIN produced", name, arch);
    } else if (!(*cubin = malloc(n))) {
      st = fla_set_error(ctx, FLA_NOMEM, "nvrtc: %s: out of memory for a %zu-byte CUBIN",
                         name, n);
    } else if ((r = api->nvrtcGetCUBIN(prog, *cubin)) != NVRTC_SUCCESS) {
      free(*cubin);
      *cubin = NULL;
      st = fla_set_error(ctx, FLA_ERROR, "nvrtc: %s for %s: nvrtcGetCUBIN: %s", name, arch,
                         api->nvrtcGetErrorString(r));
    } else {
      *cubin_size = n;
    }
  }
  api->nvrtcDestroyProgram(&prog);
  if (log)
    *log = text;
  else
    free(text);
  return st;
}

fla_status fla_nvrtc_compile(fla_ctx *ctx, const char *name, const char *source,
                             const char *arch, const char *const *extra_opts, int nopts,
                             void **cubin, size_t *cubin_size) {
  return fla_nvrtc_compile_ex(ctx, name, source, arch, extra_opts, nopts, cubin,
                              cubin_size, NULL);
}

/* ---------------------------------------------------- ptxas' resource report */

/* The integer written just before `what` on the line [s, e), or -1. */
static int number_before(const char *s, const char *e, const char *what) {
  size_t wl = strlen(what);
  for (const char *p = s; p + wl <= e; p++) {
    if (memcmp(p, what, wl) != 0) continue;
    const char *q = p;
    while (q > s && q[-1] == ' ') q--;
    const char *end = q;
    while (q > s && isdigit((unsigned char)q[-1])) q--;
    if (q == end) return -1;
    return (int)strtol(q, NULL, 10);
  }
  return -1;
}

/* The integer written just after `what` on the line, or -1. */
static int number_after(const char *s, const char *e, const char *what) {
  size_t wl = strlen(what);
  for (const char *p = s; p + wl <= e; p++) {
    if (memcmp(p, what, wl) != 0) continue;
    p += wl;
    if (p >= e || !isdigit((unsigned char)*p)) return -1;
    return (int)strtol(p, NULL, 10);
  }
  return -1;
}

static const char *find_in(const char *s, const char *e, const char *what) {
  size_t wl = strlen(what);
  for (const char *p = s; p + wl <= e; p++)
    if (memcmp(p, what, wl) == 0) return p;
  return NULL;
}

static void take_max(int *dst, int v) {
  if (v > *dst) *dst = v;
}

int fla_nvrtc_parse_resources(const char *log, const char *kernel,
                              fla_kernel_resources *out) {
  fla_kernel_resources acc = {-1, -1, -1, -1, -1, -1};
  if (out) *out = acc;
  if (!log || !out) return 0;
  int matched = 0;
  int in_entry = 0;   /* the lines now read belong to a wanted entry */
  int props_entry = 0; /* the last "Function properties" named that entry */
  char entry[512] = "";
  for (const char *s = log; *s;) {
    const char *e = strchr(s, '\n');
    if (!e) e = s + strlen(s);
    const char *p;
    if ((p = find_in(s, e, "Compiling entry function '")) != NULL) {
      p += strlen("Compiling entry function '");
      const char *q = memchr(p, '\'', (size_t)(e - p));
      size_t len = q ? (size_t)(q - p) : 0;
      if (len >= sizeof entry) len = sizeof entry - 1;
      memcpy(entry, p, len);
      entry[len] = '\0';
      in_entry = q && (!kernel || strcmp(entry, kernel) == 0);
      props_entry = 0;
      if (in_entry) matched++;
    } else if ((p = find_in(s, e, "Function properties for ")) != NULL) {
      /* Non-inlined device functions get a block of their own: skip those. */
      p += strlen("Function properties for ");
      size_t len = (size_t)(e - p);
      while (len && isspace((unsigned char)p[len - 1])) len--;
      props_entry = in_entry && len == strlen(entry) && memcmp(p, entry, len) == 0;
    } else if (props_entry && find_in(s, e, "bytes stack frame")) {
      take_max(&acc.stack_bytes, number_before(s, e, "bytes stack frame"));
      take_max(&acc.spill_store_bytes, number_before(s, e, "bytes spill stores"));
      take_max(&acc.spill_load_bytes, number_before(s, e, "bytes spill loads"));
      props_entry = 0;
    } else if (in_entry && find_in(s, e, "Used ")) {
      take_max(&acc.registers, number_after(s, e, "Used "));
      take_max(&acc.barriers, number_after(s, e, "used "));
      int smem = number_before(s, e, "bytes smem");
      /* ptxas leaves "bytes smem" out when a kernel has none. */
      take_max(&acc.smem_bytes, smem < 0 ? 0 : smem);
      in_entry = kernel ? 0 : in_entry;
    }
    s = *e ? e + 1 : e;
  }
  *out = acc;
  return matched;
}
