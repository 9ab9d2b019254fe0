/*
** harness_common.c -- see harness_common.h.
*/
#include "harness_common.h"
#include "cuda/nvrtc.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

fla_status fla_set_error(fla_ctx *c, fla_status status, const char *fmt, ...) {
  if (c) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
  }
  return status;
}

const char *fla_errmsg(const fla_ctx *c) { return c ? c->errmsg : "no context"; }

const char *fla_errstr(fla_status st) {
  switch (st) {
  case FLA_OK: return "ok";
  case FLA_INVALID: return "invalid argument";
  case FLA_UNSUPPORTED: return "unsupported";
  default: return "error";
  }
}

char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    free(s);
    return NULL;
  }
  s[n] = '\0';
  fclose(f);
  return s;
}

/* gen/stage.h's template lookup, from the source tree (the library embeds
** them at build time instead). Texts are kept for the process' life. */
const char *fla_template_text(const char *file) {
  static struct {
    char name[64];
    char *text;
  } cache[32];
  static int n;
  for (int i = 0; i < n; i++)
    if (!strcmp(cache[i].name, file)) return cache[i].text;
  char path[256];
  if (!strncmp(file, "../", 3))
    snprintf(path, sizeof path, "templates/%s", file + 3);
  else
    snprintf(path, sizeof path, "templates/cuda/%s", file);
  char *t = read_text(path);
  if (!t || n == 32) return t;
  snprintf(cache[n].name, sizeof cache[n].name, "%s", file);
  cache[n].text = t;
  return cache[n++].text;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

uint64_t rng_next(void) {
  uint64_t x = rng_state;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  return rng_state = x;
}

double rng_unif(void) { return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; }

double rng_normal(void) {
  return sqrt(-2.0 * log(rng_unif())) * cos(6.283185307179586 * rng_unif());
}

uint16_t f2bf(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float bf2f(uint16_t x) {
  uint32_t u = (uint32_t)x << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

fla_status compile_cached(fla_ctx *ctx, const char *arch, const char *cache_dir, const char *name,
                          const char *src, void **cubin, size_t *size, char **log) {
  uint64_t hsh = 1469598103934665603ull;
  for (const char *c = src; *c; c++) hsh = (hsh ^ (unsigned char)*c) * 1099511628211ull;
  for (const char *c = arch; *c; c++) hsh = (hsh ^ (unsigned char)*c) * 1099511628211ull;
  char path[1024];
  if (cache_dir) {
    snprintf(path, sizeof path, "%s/%016llx.cubin", cache_dir, (unsigned long long)hsh);
    FILE *f = fopen(path, "rb");
    if (f) {
      fseek(f, 0, SEEK_END);
      long n = ftell(f);
      fseek(f, 0, SEEK_SET);
      *cubin = malloc((size_t)n);
      if (fread(*cubin, 1, (size_t)n, f) == (size_t)n) {
        fclose(f);
        *size = (size_t)n;
        if (log) *log = NULL;
        return FLA_OK;
      }
      fclose(f);
      free(*cubin);
    }
  }
  fla_status st = fla_nvrtc_compile_ex(ctx, name, src, arch, NULL, 0, cubin, size, log);
  if (st == FLA_OK && cache_dir) {
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(*cubin, 1, *size, f);
      fclose(f);
    }
  }
  return st;
}

int cmp_f(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}
