/*
** stage_chunk.c -- the chunkwise-parallel forward stage (FLA_STAGE_CHUNK_FWD):
** its key space, tile space, kernels, launch geometry and workspaces. The
** kernels and their math are in templates/cuda/chunk_fwd.cuh.
**
** Handled: the decay family with plain writes read after the token (FLA_DELTA
** 0, FLA_READ_BEFORE 0, no probe, bonus or derived key), decay none / const /
** scalar, bf16 inputs, K and V up to 256. Everything else is FLA_UNSUPPORTED
** (the op falls back to the recurrent stage): f32 inputs (no fp32 tensor-core
** path: the recurrent stage computes those in fp32), per-key decay (GLA, §2.3)
** and the WY family (§2.4) are not done yet.
**
** Tiles: BT = 64 tokens a chunk, 4 or 8 warps, BV value columns a program (a
** multiple of 16, 16..128; of 32 with 8 warps), BK 0 or K (the key dim is never
** tiled: a program holds the whole K x BV slice of the state, KW = ceil(K/64)*16
** keys a warp). 8 warps (the default for K <= 128, V > 64, BV = V rounded up to
** 32, at most 128) split BV into two halves of 4 warps that share the q/k tiles
** and Q K^T of each chunk.
**
** Four kernels (grid, block, dynamic shared memory; an empty grid is not
** launched):
**   fla_chunk_fwd_gam   (ceil(NC/4), H)      128   0     scalar gates only, else empty
**   fla_chunk_fwd_h     (NB*NV1, H)     32*NW1   2*64*(KP1+8)*2 + 2*64*(BV1+8)*2 + 512
**   fla_chunk_fwd_scan  (ceil(H*K*V/256))    256   0     empty when fold_() (o folds)
**   fla_chunk_fwd_o     (NB*NV, H)      32*warps  4*64*(KP+8)*2 + 2*64*(BV+8)*2
**                                                   + KP*(BV+8)*2 + 512
**                                                   (+ 64*72*2 with 8 warps)
** NV = ceil(V/BV), KP = 4*KW, NB = ceil(NC/M) blocks of M chunks (fwd_blocklen_,
** with NV counted in 4-warp parts: NV * warps / 4);
** the first kernel has its own geometry (h_geom_: NW1 8 warps, 4 when K <= 64,
** KP1 = K rounded up to 16*NW1, BV1 = min(V rounded up to 16, 128 / (KP1/NW1/16)
** rounded down to 16), NV1 = ceil(V/BV1)).
** Workspaces: ws0 = NB*H*K*V f32 (block states), ws1 = NB*H f32 (block decays,
** rounded up to 4) and for scalar gates NC*H*64 f32 (the chunk-local gate
** cumsums of fla_chunk_fwd_gam).
** The first and last kernels need more than 48 KiB of shared memory for K >= 64:
** the launcher raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to smem.
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_common.h"

#include <stdio.h>
#include <string.h>

#define CHUNK_BT 64
#define CHUNK_WARPS 4
#define CHUNK_SMEM_MAX (227 * 1024)

static int kw_(int K) { return (K + 16 * CHUNK_WARPS - 1) / (16 * CHUNK_WARPS) * 16; }
static int nv_(const fla_gen_key *key, const fla_tile_config *cfg) {
  return (key->V + cfg->BV - 1) / cfg->BV;
}
/* Value parts of an o program: 8 warps split BV in two halves of 4 warps. */
static int vh_(const fla_tile_config *cfg) { return cfg->warps == 8 ? 2 : 1; }

/* Block length M (ck_blocklen in the template: keep in step). One block per
** sequence when an equal-length batch has enough programs; else the M in
** 8, 16, .., 64 with the fewest chunk steps of fla_chunk_fwd_o counted in
** waves of CHUNK_O_SLOTS programs, ceil(NB NV H / slots) M, ties to the
** longer blocks (less for fla_chunk_fwd_h to recompute). Not the shared
** fla_chunk_blocklen (chunk_gk_fwd's), whose NC H NV / 1024 left the last
** wave of o a third full at 1,8192,96. */
#define CHUNK_O_SLOTS 264 /* o programs resident at once: 132 SMs x 2 (H100) */

static int64_t fwd_blocklen_(int64_t NC, int64_t N, int64_t H, int64_t NV) {
  if (NC <= 0) return 1;
  if (N >= 1 && NC % N == 0 && N * H * NV >= FLA_CHUNK_FUSED_MIN) return NC / N;
  int64_t best = FLA_CHUNK_MIN_M, best_steps = -1;
  for (int64_t m = FLA_CHUNK_MIN_M; m <= FLA_CHUNK_MAX_M; m += 8) {
    int64_t steps = (((NC + m - 1) / m) * H * NV + CHUNK_O_SLOTS - 1) / CHUNK_O_SLOTS * m;
    if (best_steps < 0 || steps <= best_steps) best = m, best_steps = steps;
  }
  return best;
}

/* The block length the kernels compute for these sizes (bench/chunk_harness.c
** uses it; a source compiled with FLA_CHUNK_M defined uses that instead). */
int64_t fla_chunk_fwd_blocklen(const fla_gen_key *key, const fla_tile_config *cfg,
                               const fla_kernel_args *args);
int64_t fla_chunk_fwd_blocklen(const fla_gen_key *key, const fla_tile_config *cfg,
                               const fla_kernel_args *args) {
  /* value tiles counted in 4-warp parts: an 8-warp program fills two slots */
  return fwd_blocklen_(args->num_chunks, args->N, args->H, (int64_t)nv_(key, cfg) * vh_(cfg));
}

/* Whether fla_chunk_fwd_o folds the block states of its sequence's earlier
** blocks itself instead of the scan kernel writing the entering states: at
** most CHUNK_FOLD_MAX_BLOCKS blocks a sequence on average (ck_fold). */
#define CHUNK_FOLD_MAX_BLOCKS 8

static int fold_(int64_t NC, int64_t N, int64_t M) {
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  return NB <= CHUNK_FOLD_MAX_BLOCKS * N;
}

/* gam[2][64] f32 after the tiles (one buffer used unless the gates are scalar) */
static unsigned smem_h_(const fla_gen_key *key) {
  fla_chunk_h_geom g = fla_chunk_h_geom_of(key);
  return (unsigned)(2 * CHUNK_BT * (g.kp + 8) * 2 + 2 * CHUNK_BT * (g.bv + 8) * 2 + 512);
}

/* + As[64][72] bf16 with 8 warps (the gated A tile both value parts read) */
static unsigned smem_o_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kw_(key->K) * CHUNK_WARPS;
  return (unsigned)(4 * CHUNK_BT * (KP + 8) * 2 + 2 * CHUNK_BT * (cfg->BV + 8) * 2 +
                    KP * (cfg->BV + 8) * 2 + 512 +
                    (vh_(cfg) == 2 ? CHUNK_BT * (CHUNK_BT + 8) * 2 : 0));
}

/* K <= 128, V > 64: one 8-warp program over up to 128 value columns (one
** q/k tile load and one Q K^T a chunk for both halves) instead of two 4-warp
** programs of 64 (bench/results/2026-11-23-simple-gla-fwd.md). */
static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = CHUNK_BT;
  if (cfg->warps == 0) cfg->warps = cfg->BV == 0 && key->K <= 128 && key->V > 64 ? 8 : CHUNK_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0 && cfg->warps == 8) {
    /* two parts of at most 128 / (KW/16) columns (64 state registers a thread) */
    int v32 = (key->V + 31) / 32 * 32, bv = 2 * (128 / (kw_(key->K) / 16)) / 32 * 32;
    if (bv > 128) bv = 128;
    cfg->BV = v32 < bv ? v32 : bv;
  }
  if (cfg->BV == 0) {
    int v16 = (key->V + 15) / 16 * 16;
    int bv = key->K <= 128 ? 64 : 32;
    cfg->BV = v16 < bv ? v16 : bv;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->delta) no = "the WY family (delta write) is not done yet in chunk_fwd";
  else if (key->decay == 3) no = "per-key decay (GLA) is not done yet in chunk_fwd";
  else if (key->decay < 0 || key->decay > 3) no = "unknown decay";
  else if (key->read_before) no = "reading before the token (RWKV-6) is not done in chunk_fwd";
  else if (key->has_bonus) no = "the bonus term is not done in chunk_fwd";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->key_from_decay) no = "keys derived from the decay (HGRN2) are not done in chunk_fwd";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent stage)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_fwd: %s", no);
  if (key->K < 1 || key->V < 1 || key->K > 256 || key->V > 256)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_fwd: K = %d, V = %d outside 1..256", key->K,
                         key->V);
  if (cfg->BT != CHUNK_BT || (cfg->warps != 4 && cfg->warps != 8))
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: BT %d warps %d (only BT 64, 4 or 8 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: BK %d (the key dim is not tiled: BK = K = %d)",
                         cfg->BK, key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % (16 * vh_(cfg)))
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_fwd: BV %d with %d warps (a multiple of %d in 16..128)", cfg->BV,
                         cfg->warps, 16 * vh_(cfg));
  /* state registers: (KW/16) m-tiles x (BV/parts/8) n-tiles x 4 floats a thread */
  int regs = kw_(key->K) / 16 * (cfg->BV / vh_(cfg) / 8) * 4;
  if (regs > 64)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_fwd: BV %d with K %d and %d warps needs %d state registers a "
                         "thread (at most 64)",
                         cfg->BV, key->K, cfg->warps, regs);
  if (smem_o_(key, cfg) > CHUNK_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: %u bytes of shared memory", smem_o_(key, cfg));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_chunk_fwd_gam");
  snprintf(names[1], 64, "fla_chunk_fwd_h");
  snprintf(names[2], 64, "fla_chunk_fwd_scan");
  snprintf(names[3], 64, "fla_chunk_fwd_o");
  return 4;
}

/* A launch that does not run: its name and an empty grid. */
static void unused_(fla_kernel_launch *l, const char *name) {
  memset(l, 0, sizeof *l);
  snprintf(l->name, sizeof l->name, "%s", name);
}

/* The launches for block length M (the harness passes its forced M). */
int fla_chunk_fwd_launches_m(const fla_gen_key *key, const fla_tile_config *cfg,
                             const fla_kernel_args *args, int64_t M, fla_kernel_launch *out);
int fla_chunk_fwd_launches_m(const fla_gen_key *key, const fla_tile_config *cfg,
                             const fla_kernel_args *args, int64_t M, fla_kernel_launch *out) {
  int64_t NC = args->num_chunks, H = args->H, NV = nv_(key, cfg);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  int64_t elems = H * key->K * key->V;
  fla_chunk_h_geom hg = fla_chunk_h_geom_of(key);
  if (key->decay == 2 && NC > 0)
    fla_chunk_launch_set(&out[0], "fla_chunk_fwd_gam", (unsigned)((NC + 3) / 4), (unsigned)H, 128, 0);
  else
    unused_(&out[0], "fla_chunk_fwd_gam");
  fla_chunk_launch_set(&out[1], "fla_chunk_fwd_h", (unsigned)(NB * hg.nv), (unsigned)H, 32 * (unsigned)hg.nw,
       smem_h_(key));
  if (fold_(NC, args->N, M))
    unused_(&out[2], "fla_chunk_fwd_scan");
  else
    fla_chunk_launch_set(&out[2], "fla_chunk_fwd_scan", (unsigned)((elems + 255) / 256), 1, 256, 0);
  fla_chunk_launch_set(&out[3], "fla_chunk_fwd_o", (unsigned)((NB > 0 ? NB : 1) * NV), (unsigned)H,
                       32 * (unsigned)cfg->warps, smem_o_(key, cfg));
  return 4;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  return fla_chunk_fwd_launches_m(key, cfg, args, fla_chunk_fwd_blocklen(key, cfg, args), out);
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  int64_t NC = args->num_chunks;
  int64_t M = fla_chunk_fwd_blocklen(key, cfg, args);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  *ws0 = (size_t)(NB * args->H * key->K * key->V) * sizeof(float);
  *ws1 = (size_t)((NB * args->H + 3) / 4 * 4 + (key->decay == 2 ? NC * args->H * CHUNK_BT : 0)) *
         sizeof(float);
}

const fla_stage_impl fla_stage_chunk_fwd = {
    .name = "chunk_fwd",
    .template_file = "chunk_fwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
