/*
** code_object.c -- see code_object.h. The metadata note is msgpack; rather
** than decode it whole we find each key (a msgpack fixstr: 0xa0 | length,
** then the bytes, which no other key contains) and read the unsigned
** integer that follows it, once per kernel.
*/
#include "hip/code_object.h"

#include <string.h>

#define EM_AMDGPU 224

/* The msgpack unsigned integer at p (fixint, uint8/16/32), or -1. */
static long read_uint(const unsigned char *p, const unsigned char *end) {
  if (p >= end) return -1;
  if (*p < 0x80) return *p;
  if (*p == 0xcc && p + 1 < end) return p[1];
  if (*p == 0xcd && p + 2 < end) return (long)p[1] << 8 | p[2];
  if (*p == 0xce && p + 4 < end)
    return (long)p[1] << 24 | (long)p[2] << 16 | (long)p[3] << 8 | p[4];
  return -1;
}

/* Max of the values after every occurrence of key; sets *count. */
static int max_of(const unsigned char *b, size_t n, const char *key, int *count) {
  size_t kl = strlen(key);
  int best = -1, seen = 0;
  for (size_t i = 0; i + kl + 1 < n; i++) {
    if (b[i] != (0xa0 | kl) || memcmp(b + i + 1, key, kl) != 0) continue;
    long v = read_uint(b + i + 1 + kl, b + n);
    if (v < 0 || v > 0x7fffffff) continue;
    seen++;
    if (v > best) best = (int)v;
  }
  if (count && seen > *count) *count = seen;
  return best;
}

int fla_hip_code_resources(const void *code, size_t size, fla_hip_resources *out) {
  fla_hip_resources r = {-1, -1, -1, -1, -1, -1, -1};
  int kernels = 0;
  if (code && fla_hip_code_mach(code, size) >= 0) {
    const unsigned char *b = code;
    r.vgprs = max_of(b, size, ".vgpr_count", &kernels);
    r.sgprs = max_of(b, size, ".sgpr_count", NULL);
    r.vgpr_spills = max_of(b, size, ".vgpr_spill_count", NULL);
    r.sgpr_spills = max_of(b, size, ".sgpr_spill_count", NULL);
    r.stack_bytes = max_of(b, size, ".private_segment_fixed_size", NULL);
    r.lds_bytes = max_of(b, size, ".group_segment_fixed_size", NULL);
    r.wavefront_size = max_of(b, size, ".wavefront_size", NULL);
  }
  if (out) *out = r;
  return kernels;
}

int fla_hip_code_mach(const void *code, size_t size) {
  const unsigned char *b = code;
  /* 64-bit little-endian ELF: e_machine at 18, e_flags at 48. */
  if (!b || size < 64 || memcmp(b, "\177ELF", 4) != 0 || b[4] != 2 || b[5] != 1) return -1;
  if ((b[18] | b[19] << 8) != EM_AMDGPU) return -1;
  return b[48]; /* EF_AMDGPU_MACH is the low byte of e_flags */
}
