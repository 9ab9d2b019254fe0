/*
** stage_chunk_common.h -- what the chunked stages' C sides share: a 1-D or
** 2-D launch, and the geometry of the block-state kernels of chunk_fwd and
** chunk_gk_fwd (CK1_* in the templates; keep both in step).
*/
#ifndef FLA_STAGE_CHUNK_COMMON_H
#define FLA_STAGE_CHUNK_COMMON_H

#include <stdio.h>
#include <string.h>

#include "generate.h"

/* A launch of gx x gy blocks (at least 1 each) of bx threads. */
static inline void fla_chunk_launch_set(fla_kernel_launch *l, const char *name, unsigned gx,
                                        unsigned gy, unsigned bx, unsigned smem) {
  memset(l, 0, sizeof *l);
  snprintf(l->name, sizeof l->name, "%s", name);
  l->grid[0] = gx > 0 ? gx : 1, l->grid[1] = gy > 0 ? gy : 1, l->grid[2] = 1;
  l->block[0] = bx, l->block[1] = 1, l->block[2] = 1;
  l->smem = smem;
}

/* The block-state kernel: 8 warps (4 when K <= 64), KW keys a warp, value
** tiles as wide as 64 state registers a thread allow (at most 128), so that
** each block reads K once. */
typedef struct {
  int nw, kp, bv, nv;
} fla_chunk_h_geom;

static inline fla_chunk_h_geom fla_chunk_h_geom_of(const fla_gen_key *key) {
  fla_chunk_h_geom g;
  g.nw = key->K > 64 ? 8 : 4;
  int kw = (key->K + 16 * g.nw - 1) / (16 * g.nw) * 16;
  int mt = kw / 16;
  int v16 = (key->V + 15) / 16 * 16, bvmax = 128 / mt / 16 * 16;
  g.kp = kw * g.nw;
  g.bv = v16 < bvmax ? v16 : bvmax;
  g.nv = (key->V + g.bv - 1) / g.bv;
  return g;
}

/* Block length M (chunks per block) of the chunked scalar- and per-key-gate
** stages; the templates compute the same (ck_blocklen: keep the constants in
** step). One block per sequence when the batch has equal-length sequences
** and enough (sequence, head, value tile) programs; else blocks of M chunks
** giving about FLA_CHUNK_TARGET_PROGRAMS programs, M in [8, 64]. */
#define FLA_CHUNK_FUSED_MIN 256
#define FLA_CHUNK_TARGET_PROGRAMS 1024
#define FLA_CHUNK_MIN_M 8
#define FLA_CHUNK_MAX_M 64

static inline int64_t fla_chunk_blocklen(int64_t NC, int64_t N, int64_t H, int64_t NV) {
  if (NC <= 0) return 1;
  if (N >= 1 && NC % N == 0 && N * H * NV >= FLA_CHUNK_FUSED_MIN) return NC / N;
  int64_t m = NC * H * NV / FLA_CHUNK_TARGET_PROGRAMS;
  if (m < FLA_CHUNK_MIN_M) m = FLA_CHUNK_MIN_M;
  if (m > FLA_CHUNK_MAX_M) m = FLA_CHUNK_MAX_M;
  return m;
}

#endif
