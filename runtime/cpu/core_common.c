/*
** core_common.c -- what the two CPU algorithms share.
*/
#include "cpu.h"

#include <string.h>

static void zero_(void *p, int64_t n, size_t esz) {
  if (p && n > 0) memset(p, 0, (size_t)n * esz);
}

void fla_core_zero_grads(const fla_core_spec *s, size_t esz, void *dq, void *dk, void *dv,
                         void *dp, void *dbeta, void *dg, void *dbonus) {
  int64_t T = s->total, H = s->H, K = s->K, V = s->V;
  zero_(dq, T * H * K, esz);
  zero_(dk, T * H * K, esz);
  zero_(dv, T * H * V, esz);
  zero_(dp, T * H * K, esz);
  zero_(dbeta, T * H, esz);
  if (s->decay == FLA_CORE_DECAY_SCALAR) zero_(dg, T * H, esz);
  if (s->decay == FLA_CORE_DECAY_KEY) zero_(dg, T * H * K, esz);
  zero_(dbonus, H * K, esz);
}
