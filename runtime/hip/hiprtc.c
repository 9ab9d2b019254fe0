/*
** hiprtc.c -- compiles generated HIP C++ into a code object through hipRTC
** (loaded at run time by hip_api.c), and puts it behind the shared module
** cache. See hiprtc.h.
*/
#include "hip/hiprtc.h"
#include "hip/hip_api.h"
#include "modcache_core.h"
#include "rtc_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -std=c++17 as for NVRTC, so the shared templates see one language. */
static const char *const default_opts[] = {"-std=c++17"};
#define NDEFAULT ((int)(sizeof default_opts / sizeof default_opts[0]))

const char *const *fla_hiprtc_default_options(int *n) {
  if (n) *n = NDEFAULT;
  return default_opts;
}

int fla_hip_code_is_elf(const void *buf, size_t size) {
  return buf && size >= 4 && memcmp(buf, "\177ELF", 4) == 0;
}

static char *read_log(const fla_hiprtc_api *api, hiprtcProgram prog) {
  size_t n = 0;
  if (api->hiprtcGetProgramLogSize(prog, &n) != FLA_HIPRTC_SUCCESS) n = 0;
  char *log = malloc(n + 1);
  if (!log) return NULL;
  if (n == 0 || api->hiprtcGetProgramLog(prog, log) != FLA_HIPRTC_SUCCESS) n = 0;
  log[n] = '\0';
  return log;
}

fla_status fla_hiprtc_compile_ex(fla_ctx *ctx, const char *name, const char *source,
                                 const char *arch, const char *const *extra_opts, int nopts,
                                 void **code, size_t *size, char **log) {
  if (code) *code = NULL;
  if (size) *size = 0;
  if (log) *log = NULL;
  if (!name || !source || !arch || !code || !size || nopts < 0 || (nopts > 0 && !extra_opts))
    return fla_set_error(ctx, FLA_INVALID, "fla_hiprtc_compile: NULL argument");
  if (!fla_hip_arch_ok(arch))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_hiprtc_compile: arch '%s' is not an offload arch such as gfx90a",
                         arch);
  for (int i = 0; i < nopts; i++)
    if (!extra_opts[i])
      return fla_set_error(ctx, FLA_INVALID, "fla_hiprtc_compile: option %d is NULL", i);
  char err[1024];
  if (fla_hiprtc_load(err, sizeof err))
    return fla_set_error(ctx, FLA_UNSUPPORTED, "hiprtc: %s", err);
  const fla_hiprtc_api *api = fla_hiprtc_api_get();

  char archopt[96];
  snprintf(archopt, sizeof archopt, "--offload-arch=%s", arch);
  const char **opts = malloc(sizeof *opts * (size_t)(nopts + NDEFAULT + 1));
  if (!opts) return fla_set_error(ctx, FLA_NOMEM, "hiprtc: out of memory");
  int nall = 0;
  opts[nall++] = archopt;
  for (int i = 0; i < NDEFAULT; i++) opts[nall++] = default_opts[i];
  for (int i = 0; i < nopts; i++) opts[nall++] = extra_opts[i];

  hiprtcProgram prog = NULL;
  hiprtcResult r = api->hiprtcCreateProgram(&prog, source, name, 0, NULL, NULL);
  if (r != FLA_HIPRTC_SUCCESS) {
    free(opts);
    return fla_set_error(ctx, r == FLA_HIPRTC_ERROR_OUT_OF_MEMORY ? FLA_NOMEM : FLA_ERROR,
                         "hiprtc: %s for %s: hiprtcCreateProgram: %s", name, arch,
                         api->hiprtcGetErrorString(r));
  }
  r = api->hiprtcCompileProgram(prog, nall, opts);
  free(opts);
  char *text = read_log(api, prog);
  fla_status st = FLA_OK;
  size_t n = 0;
  if (r != FLA_HIPRTC_SUCCESS) {
    char body[FLA_ERRMSG_MAX];
    if (text && text[0])
      fla_rtc_format_log(body, sizeof body, text);
    else
      snprintf(body, sizeof body, "%s (empty log)", api->hiprtcGetErrorString(r));
    st = fla_set_error(ctx, FLA_ERROR, "hiprtc: %s for %s: %s", name, arch, body);
  } else if (api->hiprtcGetCodeSize(prog, &n) != FLA_HIPRTC_SUCCESS || n == 0) {
    st = fla_set_error(ctx, FLA_ERROR, "hiprtc: %s for %s: no code object produced", name, arch);
  } else if (!(*code = malloc(n))) {
    st = fla_set_error(ctx, FLA_NOMEM, "hiprtc: %s: out of memory for a %zu-byte code object",
                       name, n);
  } else if ((r = api->hiprtcGetCode(prog, *code)) != FLA_HIPRTC_SUCCESS) {
    free(*code);
    *code = NULL;
    st = fla_set_error(ctx, FLA_ERROR, "hiprtc: %s for %s: hiprtcGetCode: %s", name, arch,
                       api->hiprtcGetErrorString(r));
  } else {
    *size = n;
  }
  api->hiprtcDestroyProgram(&prog);
  if (log)
    *log = text;
  else
    free(text);
  return st;
}

/* ------------------------------------------------------------ module cache */

static const fla_modcache_compiler hiprtc_ = {
    .domain = "fla-modcache-key/hip/1",
    .ext = ".hsaco",
    .version = fla_hiprtc_version,
    .default_options = fla_hiprtc_default_options,
    .compile = fla_hiprtc_compile_ex,
    .is_module = fla_hip_code_is_elf,
};

fla_status fla_hip_modcache_get_or_compile(fla_ctx *ctx, const char *name, const char *source,
                                           const char *arch, const char *const *opts,
                                           int nopts, void **code, size_t *size,
                                           int *was_cached, char **log) {
  return fla_modcache_core_get(&hiprtc_, ctx, name, source, arch, opts, nopts, code, size,
                               was_cached, log);
}

void fla_hip_modcache_key(const char *name, const char *source, const char *arch,
                          const char *const *opts, int nopts, int major, int minor,
                          uint64_t key[2]) {
  fla_modcache_core_key(&hiprtc_, name, source, arch, opts, nopts, major, minor, key);
}

int fla_hip_modcache_entry_path(const char *name, const char *source, const char *arch,
                                const char *const *opts, int nopts, char *buf, size_t len) {
  return fla_modcache_core_entry_path(&hiprtc_, name, source, arch, opts, nopts, buf, len);
}
