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
** Tiles: BT = 64 tokens a chunk, 4 warps, BV value columns a program (a
** multiple of 16, 16..128), BK 0 or K (the key dim is never tiled: a program
** holds the whole K x BV slice of the state, KW = ceil(K/64)*16 keys a warp).
**
** Five kernels, of which the launcher runs one path (the other launches get
** empty grids; grid, block, dynamic shared memory):
** the fused path (blocks of M chunks, each walked with its state in registers)
**   fla_chunk_fwd_h     (NB*NV1, H)     32*NW1   2*64*(KP1+8)*2 + 2*64*(BV1+8)*2 + 256
**   fla_chunk_fwd_scan  (ceil(H*K*V/256))    256   0
**   fla_chunk_fwd_o     (NB*NV, H)           128   4*64*(KP+8)*2 + 2*64*(BV+8)*2
**                                                   + KP*(BV+8)*2 + 256
** or the split path (fla_chunk_fwd_split: fla's chunk_fwd_h + chunk_fwd_o)
**   fla_chunk_fwd_hs    (N*NK2*NV2, H)       128   2*3*64*72*2 + 256
**   fla_chunk_fwd_op    (NC*NV, H)           128   2*64*(KP+8)*2 + 64*(BV+8)*2
**                                                   + KP*(BV+8)*2 + 256
** (NK2 = ceil(K/64), NV2 = ceil(V/BV2), BV2 = hs_bv_: 64, or 32 when there
** are fewer than 256 programs of 64 x 64 tiles).
** NV = ceil(V/BV), KP = 4*KW, NB = ceil(NC/M) blocks of M chunks (blocklen_);
** the first kernel has its own geometry (h_geom_: NW1 8 warps, 4 when K <= 64,
** KP1 = K rounded up to 16*NW1, BV1 = min(V rounded up to 16, 128 / (KP1/NW1/16)
** rounded down to 16), NV1 = ceil(V/BV1)).
** Workspaces: fused: ws0 = NB*H*K*V f32 (block states), ws1 = NB*H f32 (block
** decays); split: ws0 = NC*H*K*V bf16 (the state entering each chunk).
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

/* The block length the kernels compute for these sizes (bench/chunk_harness.c
** uses it; a source compiled with FLA_CHUNK_M defined uses that instead). */
int64_t fla_chunk_fwd_blocklen(const fla_gen_key *key, const fla_tile_config *cfg,
                               const fla_kernel_args *args);
int64_t fla_chunk_fwd_blocklen(const fla_gen_key *key, const fla_tile_config *cfg,
                               const fla_kernel_args *args) {
  return fla_chunk_blocklen(args->num_chunks, args->N, args->H, nv_(key, cfg));
}

/* The split path (fla_chunk_fwd_hs + fla_chunk_fwd_op, fla's chunk_fwd_h +
** chunk_fwd_o): states of 64 x 64 tiles stored per chunk (bf16), then every
** (chunk, value tile) on its own. Taken where the fused walk cannot have one
** block per sequence (it would recompute the states of most blocks: the
** block-state kernel reads K and V once more) and the batch looks
** equal-length with enough state-tile programs for a whole-sequence pass. */
#define CHUNK_HS_TILE 64         /* keys of a state tile; values 64, or 32 when narrow */
#define CHUNK_HS_RING 3
#define CHUNK_HS_NARROW_BELOW 256 /* fewer 64 x 64 programs: 32 values a tile         */
#define CHUNK_SPLIT_MIN_PROGRAMS 128

static int64_t hs_tiles64_(const fla_gen_key *key) {
  return (int64_t)((key->K + CHUNK_HS_TILE - 1) / CHUNK_HS_TILE) * ((key->V + 63) / 64);
}

/* The state pass's value tile (ck2_bv in the template). */
static int hs_bv_(const fla_gen_key *key, const fla_kernel_args *args) {
  return (int64_t)args->N * args->H * hs_tiles64_(key) < CHUNK_HS_NARROW_BELOW ? 32 : 64;
}

int fla_chunk_fwd_split(const fla_gen_key *key, const fla_tile_config *cfg,
                        const fla_kernel_args *args);
int fla_chunk_fwd_split(const fla_gen_key *key, const fla_tile_config *cfg,
                        const fla_kernel_args *args) {
  int64_t NC = args->num_chunks, N = args->N, H = args->H;
  if (NC <= 0 || N < 1 || NC % N) return 0;
  if (fla_chunk_blocklen(NC, N, H, nv_(key, cfg)) == NC / N) return 0; /* fused: whole sequences */
  return N * H * hs_tiles64_(key) >= CHUNK_SPLIT_MIN_PROGRAMS;
}

static unsigned smem_hs_(void) {
  return (unsigned)(2 * CHUNK_HS_RING * CHUNK_BT * (CHUNK_HS_TILE + 8) * 2 + 256);
}

static unsigned smem_op_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kw_(key->K) * CHUNK_WARPS;
  return (unsigned)(2 * CHUNK_BT * (KP + 8) * 2 + CHUNK_BT * (cfg->BV + 8) * 2 +
                    KP * (cfg->BV + 8) * 2 + 256);
}

static unsigned smem_h_(const fla_gen_key *key) {
  fla_chunk_h_geom g = fla_chunk_h_geom_of(key);
  return (unsigned)(2 * CHUNK_BT * (g.kp + 8) * 2 + 2 * CHUNK_BT * (g.bv + 8) * 2 + 256);
}

static unsigned smem_o_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kw_(key->K) * CHUNK_WARPS;
  return (unsigned)(4 * CHUNK_BT * (KP + 8) * 2 + 2 * CHUNK_BT * (cfg->BV + 8) * 2 +
                    KP * (cfg->BV + 8) * 2 + 256);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = CHUNK_BT;
  if (cfg->warps == 0) cfg->warps = CHUNK_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
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
  if (cfg->BT != CHUNK_BT || cfg->warps != CHUNK_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: BK %d (the key dim is not tiled: BK = K = %d)",
                         cfg->BK, key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: BV %d (a multiple of 16 in 16..128)",
                         cfg->BV);
  /* state registers: (KW/16) m-tiles x (BV/8) n-tiles x 4 floats a thread */
  int regs = kw_(key->K) / 16 * (cfg->BV / 8) * 4;
  if (regs > 64)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_fwd: BV %d with K %d needs %d state registers a thread (at most 64)",
                         cfg->BV, key->K, regs);
  if (smem_o_(key, cfg) > CHUNK_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_fwd: %u bytes of shared memory", smem_o_(key, cfg));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_chunk_fwd_h");
  snprintf(names[1], 64, "fla_chunk_fwd_scan");
  snprintf(names[2], 64, "fla_chunk_fwd_o");
  snprintf(names[3], 64, "fla_chunk_fwd_hs");
  snprintf(names[4], 64, "fla_chunk_fwd_op");
  return 5;
}

/* A launch the path does not take: its name, an empty grid (skipped). */
static void unused_(fla_kernel_launch *l, const char *name) {
  memset(l, 0, sizeof *l);
  snprintf(l->name, sizeof l->name, "%s", name);
}

/* The launches of the split path (1) or of the fused path with block length
** M (0; the harness forces either and M). */
int fla_chunk_fwd_launches_mode(const fla_gen_key *key, const fla_tile_config *cfg,
                                const fla_kernel_args *args, int split, int64_t M,
                                fla_kernel_launch *out);
int fla_chunk_fwd_launches_mode(const fla_gen_key *key, const fla_tile_config *cfg,
                                const fla_kernel_args *args, int split, int64_t M,
                                fla_kernel_launch *out) {
  int64_t NC = args->num_chunks, H = args->H, NV = nv_(key, cfg);
  if (split) {
    int bv = hs_bv_(key, args);
    int64_t tiles = (int64_t)((key->K + CHUNK_HS_TILE - 1) / CHUNK_HS_TILE) * ((key->V + bv - 1) / bv);
    unused_(&out[0], "fla_chunk_fwd_h");
    unused_(&out[1], "fla_chunk_fwd_scan");
    unused_(&out[2], "fla_chunk_fwd_o");
    fla_chunk_launch_set(&out[3], "fla_chunk_fwd_hs", (unsigned)(args->N * tiles), (unsigned)H,
                         32 * CHUNK_WARPS, smem_hs_());
    fla_chunk_launch_set(&out[4], "fla_chunk_fwd_op", (unsigned)(NC * NV), (unsigned)H,
                         32 * CHUNK_WARPS, smem_op_(key, cfg));
    if (NC <= 0) out[4].grid[0] = 0;
    return 5;
  }
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  int64_t elems = H * key->K * key->V;
  fla_chunk_h_geom hg = fla_chunk_h_geom_of(key);
  fla_chunk_launch_set(&out[0], "fla_chunk_fwd_h", (unsigned)(NB * hg.nv), (unsigned)H, 32 * (unsigned)hg.nw,
       smem_h_(key));
  fla_chunk_launch_set(&out[1], "fla_chunk_fwd_scan", (unsigned)((elems + 255) / 256), 1, 256, 0);
  fla_chunk_launch_set(&out[2], "fla_chunk_fwd_o", (unsigned)(NB * NV), (unsigned)H, 32 * CHUNK_WARPS, smem_o_(key, cfg));
  unused_(&out[3], "fla_chunk_fwd_hs");
  unused_(&out[4], "fla_chunk_fwd_op");
  return 5;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  return fla_chunk_fwd_launches_mode(key, cfg, args, fla_chunk_fwd_split(key, cfg, args),
                                     fla_chunk_fwd_blocklen(key, cfg, args), out);
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  int64_t NC = args->num_chunks;
  if (fla_chunk_fwd_split(key, cfg, args)) { /* HS: the state entering each chunk, bf16 */
    *ws0 = (size_t)(NC * args->H * key->K * key->V) * 2;
    *ws1 = 0;
    return;
  }
  int64_t M = fla_chunk_fwd_blocklen(key, cfg, args);
  int64_t NB = NC > 0 ? (NC + M - 1) / M : 0;
  *ws0 = (size_t)(NB * args->H * key->K * key->V) * sizeof(float);
  *ws1 = (size_t)(NB * args->H) * sizeof(float);
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
