/*
** stage_chunk_wy.c -- the chunkwise-parallel forward of the delta rule in WY
** form (FLA_STAGE_CHUNK_WY_FWD): key space, tile space, kernels, launch
** geometry and workspaces. The kernels and their math are in
** templates/cuda/chunk_wy_fwd.cuh (fla-notes.md §2.4, runtime/cpu/chunk.c).
**
** Handled: delta write (FLA_DELTA 1) read after the token, decay none /
** const / scalar, with or without a probe (Comba), no bonus or derived key,
** bf16 inputs, K and V up to 256. Everything else is FLA_UNSUPPORTED (the op
** falls back to the recurrent stage): f32 inputs (no fp32 tensor-core path),
** per-key decay (KDA: needs the sub-chunked per-key gate products).
**
** Tiles: BT = 64 tokens a chunk, 4 warps, BV value columns a program of the
** second and third kernels (a multiple of 16, 16..128; default 128, 32 for
** K > 128), BK 0 or K (never tiled).
**
** Five kernels, three or four launched (grid, block, dynamic shared memory):
**   fla_wy_prep    (NC, H)      128   max(NBP*64*(KP+8), 64*(VP+8))*2
**                                      + 64*68*4 + 16*68*4 + 3*64*4
**                                      (V > 128: the sum, not the max)
**   fla_wy_fwd_seg (NVA*N*P, H) 128   as fla_wy_fwd_h64; only when P > 1
**   fla_wy_fwd_h   (NVH*N*P, H) 128   NS*(2*64*(KP+8)*2 + 64*(BVH+8)*2 + 256)
**                                      + (KP + (BVH > 32 ? 0 : 64))*(BVH+8)*2
**   or fla_wy_fwd_h64 (NVH*N, H, the wide BVH; the other gets grid 0)
**   fla_wy_fwd_o   (NC*NV, H)   128   2*64*(KP+8)*2 + 64*(BV+8)*2 + KP*(BV+8)*2 + 256
** KP = K rounded up to 64, VP = V rounded up to 64, NBP = 2 with a probe
** (p and k tiles) else 1, NV = ceil(V/BV). The sequential state kernel
** takes BVH = min(BV, 32) value columns (more programs, a short chain a
** chunk), or min(BV, 64) when min(BV, 32) would give more than WY_MANY
** programs (K and W loaded once for twice the columns); NVH = ceil(V/BVH),
** NS = its pipeline stages (4 when its programs are at most WY_FEW = 64 and
** KP <= 128, else 2). P (segments_()): with few narrow programs over long
** sequences each sequence is cut into P segments; the segment pass
** fla_wy_fwd_seg (NVA = ceil(V/64) + ceil(K/64) wide tiles) writes each
** segment's B | M, and fla_wy_fwd_h runs every segment from its chained
** entering state (the math: "segments" in chunk_wy_fwd.cuh).
** Workspaces: ws0 = W bf16 [total, H, K] (padded to 16 bytes), then the chunk
** states h bf16 [NC, H, K, V]; ws1 = U bf16 [total, H, V], overwritten with Vn
** by fla_wy_fwd_h, then the chunks' gate sums gam f32 [NC, H, 64] (written
** by fla_wy_prep, read by the others), then the output kernel's flags u32
** [NC, H] (padded to 16 bytes; zeroed by fla_wy_prep, counted up by the state
** kernel, waited on by fla_wy_fwd_o, which is launched early: it runs beside
** the state kernel on the SMs that kernel leaves free), then with P > 1 the
** segments' B | M f32 [N*P, H, K, V + K].
** The kernels can need more than 48 KiB of shared memory: the launcher
** raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to smem.
*/
#include "stage.h"
#include "stage_chunk_common.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define WY_BT 64
#define WY_WARPS 4
#define WY_SMEM_MAX (227 * 1024)

static int kw_(int K) { return (K + 16 * WY_WARPS - 1) / (16 * WY_WARPS) * 16; }
static int kp_(int K) { return kw_(K) * WY_WARPS; }
static int vp_(int V) { return (V + 63) / 64 * 64; }
static int nv_(const fla_gen_key *key, const fla_tile_config *cfg) {
  return (key->V + cfg->BV - 1) / cfg->BV;
}

/* fla_wy_prep (CW_PREG / CW_PREP2 in chunk_wy_fwd.cuh): P's tile (and K's
** with a probe), V's tile in registers for V <= 128 stored over P's once W is
** done (the region at least V's tile), else its own; L and then T in place
** in one 64 x 68 fp32 array, 16 x 68 fp32 of partial products, 3 x 64 fp32. */
static unsigned smem_prep_(const fla_gen_key *key) {
  int nbp = key->has_probe ? 2 : 1, pr = nbp * WY_BT * (kp_(key->K) + 8);
  int vt = WY_BT * (vp_(key->V) + 8);
  if (vp_(key->V) <= 128) pr = pr > vt ? pr : vt;
  else pr += vt;
  return (unsigned)(pr * 2 + WY_BT * 68 * 4 + 16 * 68 * 4 + 3 * WY_BT * 4);
}

/* The state kernel's value tile (CW_BVH32 / CW_BVH64 in chunk_wy_fwd.cuh)
** and which of the two a launch takes: the wide one past WY_MANY programs of
** the narrow one (1,8192,96 and 4,4096,64 on the H100). */
#define WY_MANY 256
static int bvh_(const fla_tile_config *cfg, int wide) {
  int cap = wide ? 64 : 32;
  return cfg->BV < cap ? cfg->BV : cap;
}
static int wide_(const fla_gen_key *key, const fla_tile_config *cfg, int64_t N, int64_t H) {
  int64_t nvh = (key->V + bvh_(cfg, 0) - 1) / bvh_(cfg, 0);
  return nvh * N * H > WY_MANY;
}

/* The state kernels' warps (CW_H_WARPS, CW_SEG_WARPS, CW_H64_WARPS and
** CW_HW() in chunk_wy_fwd.cuh; keep in step): 4 for each. 8 (the value tile
** split in two column halves) measured slower at one block a SM and 2%
** faster at two (bench/results/2026-11-23-chunk-wy-fwd-5.md); a knob of the
** template, 8 only for tiles of 32 columns or more. */
#define WY_H_WARPS 4
#define WY_SEG_WARPS 4
#define WY_H64_WARPS 4
static unsigned hthreads_(int warps, int bvh) { return 32u * (warps == 8 && bvh >= 32 ? 8 : 4); }

/* The state kernel's pipeline depth (cw_stages() in chunk_wy_fwd.cuh): with
** at most WY_FEW programs (at most one block a SM on half the SMs) 4 stages
** for K <= 128, else 2 (two blocks a SM). Over 64 programs, 2 stages leave
** room beside each state block for an output block (fla_wy_fwd_o runs beside
** the state kernel): 2,16384,16 0.98 -> 1.10x fla; at 64 or fewer the output
** kernel has the free SMs, and its blocks beside the state blocks would cost
** the state kernel more than they gain (bench/results/2026-11-23-chunk-wy-overlap.md).
** ns_max: the deepest any launch can take. */
#define WY_FEW 64
static int stages_few_(const fla_gen_key *key) { return kp_(key->K) <= 128 ? 4 : 2; }
static int stages_h_(const fla_gen_key *key, int64_t programs) {
  return programs <= WY_FEW ? stages_few_(key) : 2;
}

/* Segments a sequence for the state kernels (cw_segments() in
** chunk_wy_fwd.cuh; keep in step): 1 (none) unless the narrow kernel has at
** most WY_SEG_PROGS programs; then about WY_SEG_TARGET programs of the last
** pass, each segment WY_SEG_MIN chunks or more. The segment pass costs
** (K + V) / V of a state pass and the last pass another one, so segments
** pay only when the programs fill well under a third of the GPU; and from
** 33 to 64 programs the unsegmented state kernel leaves half the SMs to the
** output kernel running beside it, which pays more (1,65536,16: 2.82 ms
** with 4 segments, 2.53 without; 2026-11-23-chunk-wy-overlap.md). */
#define WY_SEG_PROGS 32
#define WY_SEG_TARGET 256
#define WY_SEG_MIN 16
static int64_t segments_(const fla_gen_key *key, const fla_tile_config *cfg, int64_t N, int64_t H,
                         int64_t NC) {
  int64_t programs = (key->V + bvh_(cfg, 0) - 1) / bvh_(cfg, 0) * N * H;
  if (N < 1 || programs < 1 || programs > WY_SEG_PROGS) return 1;
  int64_t p = WY_SEG_TARGET / programs, pmax = NC / N / WY_SEG_MIN;
  if (p > pmax) p = pmax;
  return p < 2 ? 1 : p;
}

/* Bytes of the segments' B_s | M_s (f32 [N*P, H, K, V + K]) after gam in ws1. */
static size_t seg_bytes_(const fla_gen_key *key, int64_t P, int64_t N, int64_t H) {
  return P > 1 ? (size_t)(N * P * H * key->K * (key->V + key->K)) * 4 : 0;
}

/* Vd has its own 64 rows unless BVH > 32 (then it lies over Ss). */
static unsigned smem_h_(const fla_gen_key *key, const fla_tile_config *cfg, int wide, int ns) {
  int KP = kp_(key->K), bv = bvh_(cfg, wide);
  return (unsigned)(ns * (2 * WY_BT * (KP + 8) * 2 + WY_BT * (bv + 8) * 2 + WY_BT * 4) +
                    (KP + (bv > 32 ? 0 : WY_BT)) * (bv + 8) * 2);
}

static unsigned smem_o_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kp_(key->K);
  return (unsigned)(2 * WY_BT * (KP + 8) * 2 + WY_BT * (cfg->BV + 8) * 2 +
                    KP * (cfg->BV + 8) * 2 + 256);
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = WY_BT;
  if (cfg->warps == 0) cfg->warps = WY_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    int v16 = (key->V + 15) / 16 * 16;
    /* the output kernel: one value tile for K <= 128 (q and k read once;
    ** measured 5-10% faster than 64 on the H100), 32 beyond */
    int bv = key->K <= 128 ? 128 : 32;
    cfg->BV = v16 < bv ? v16 : bv;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (!key->delta) no = "plain writes belong to chunk_fwd / chunk_gk_fwd";
  else if (key->decay == 3) no = "per-key decay (KDA) is not done yet in chunk_wy_fwd";
  else if (key->decay < 0 || key->decay > 3) no = "unknown decay";
  else if (key->read_before) no = "reading before the token is not done in chunk_wy_fwd";
  else if (key->has_bonus) no = "the bonus term is not done in chunk_wy_fwd";
  else if (key->key_from_decay) no = "keys derived from the decay are not done in chunk_wy_fwd";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent stage)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_wy_fwd: %s", no);
  if (key->K < 1 || key->V < 1 || key->K > 256 || key->V > 256)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_wy_fwd: K = %d, V = %d outside 1..256",
                         key->K, key->V);
  if (cfg->BT != WY_BT || cfg->warps != WY_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_wy_fwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_wy_fwd: BK %d (the key dim is not tiled: BK = K = %d)", cfg->BK,
                         key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_wy_fwd: BV %d (a multiple of 16 in 16..128)",
                         cfg->BV);
  /* the state kernel's slice is K x min(BV, 32): at most 64 registers a
  ** thread for K <= 256; the output kernel holds BV / 2 accumulators */
  unsigned smh = smem_h_(key, cfg, 1, stages_few_(key));
  if (smh > WY_SMEM_MAX || smem_o_(key, cfg) > WY_SMEM_MAX || smem_prep_(key) > WY_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_wy_fwd: %u / %u / %u bytes of shared memory",
                         smem_prep_(key), smh, smem_o_(key, cfg));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)key, (void)cfg;
  snprintf(names[0], 64, "fla_wy_prep");
  snprintf(names[1], 64, "fla_wy_fwd_seg");
  snprintf(names[2], 64, "fla_wy_fwd_h");
  snprintf(names[3], 64, "fla_wy_fwd_h64");
  snprintf(names[4], 64, "fla_wy_fwd_o");
  return 5;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  int64_t NC = args->num_chunks, H = args->H, N = args->N, NV = nv_(key, cfg);
  int64_t P = segments_(key, cfg, N, H, NC);
  fla_chunk_launch_set(&out[0], "fla_wy_prep", (unsigned)NC, (unsigned)H, 32 * WY_WARPS, smem_prep_(key));
  /* the segment pass: value tiles then key tiles of the wide width, P
  ** segments a sequence */
  int64_t NVA = (key->V + bvh_(cfg, 1) - 1) / bvh_(cfg, 1) + (key->K + bvh_(cfg, 1) - 1) / bvh_(cfg, 1);
  fla_chunk_launch_set(&out[1], "fla_wy_fwd_seg", P > 1 ? (unsigned)(NVA * N * P) : 0, (unsigned)H,
                       hthreads_(WY_SEG_WARPS, bvh_(cfg, 1)),
                       smem_h_(key, cfg, 1, stages_h_(key, NVA * N * P * H)));
  if (P == 1) out[1].grid[0] = 0; /* fla_cuda_run_stage skips an empty grid */
  for (int wide = 0; wide < 2; wide++) { /* one of the two state kernels runs */
    int64_t nvh = (key->V + bvh_(cfg, wide) - 1) / bvh_(cfg, wide), progs = nvh * N * P;
    int on = wide == wide_(key, cfg, N, H);
    fla_chunk_launch_set(&out[2 + wide], wide ? "fla_wy_fwd_h64" : "fla_wy_fwd_h",
                         on ? (unsigned)progs : 0, (unsigned)H,
                         hthreads_(wide ? WY_H64_WARPS : WY_H_WARPS, bvh_(cfg, wide)),
                         smem_h_(key, cfg, wide, stages_h_(key, progs * H)));
    if (!on) out[2 + wide].grid[0] = 0;
  }
  fla_chunk_launch_set(&out[4], "fla_wy_fwd_o", (unsigned)(NC * NV), (unsigned)H, 32 * WY_WARPS, smem_o_(key, cfg));
  /* beside the state kernel, on the SMs its programs leave free: each block
  ** waits for its chunk's flag (cw_flags in chunk_wy_fwd.cuh) */
  out[4].early = 1;
  return 5;
}

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  int64_t rows = args->total * args->H;
  size_t wbytes = ((size_t)(rows * key->K) * 2 + 15) / 16 * 16;
  size_t hbytes = (size_t)((int64_t)args->num_chunks * args->H * key->K * key->V) * 2;
  *ws0 = rows > 0 ? wbytes + hbytes + 16 : 0;
  size_t ubytes = ((size_t)(rows * key->V) * 2 + 15) / 16 * 16;
  size_t gbytes = (size_t)((int64_t)args->num_chunks * args->H * WY_BT) * 4;
  size_t fbytes = ((size_t)((int64_t)args->num_chunks * args->H) * 4 + 15) / 16 * 16; /* flags */
  int64_t P = segments_(key, cfg, args->N, args->H, args->num_chunks);
  *ws1 = rows > 0 ? ubytes + gbytes + fbytes + seg_bytes_(key, P, args->N, args->H) + 16 : 0;
}

const fla_stage_impl fla_stage_chunk_wy_fwd = {
    .name = "chunk_wy_fwd",
    .template_file = "chunk_wy_fwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
