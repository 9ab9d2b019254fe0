/*
** stage_chunk_gk_bwd.c -- the chunked backward for per-key gates
** (FLA_STAGE_CHUNK_GK_BWD, GLA and HGRN2): key space, tile space, kernels,
** launch geometry and workspaces. The kernels and their math are in
** templates/cuda/chunk_gk_bwd.cuh (which splices in chunk_gk_fwd.cuh for the
** forward's per-chunk kernel and chunk_bwd_mm.cuh for warp-level products).
**
** Handled: FLA_DECAY 3 with plain writes (FLA_DELTA 0, no probe), keys given
** (GLA), bf16 inputs, K up to 256 and V up to 512; keys derived from the decay
** (HGRN2: k = 1 - e^g, GB_HGRN2_ENABLED); read before the token with the
** bonus u (RWKV-6: FLA_READ_BEFORE, FLA_HAS_BONUS) for K up to 128, as
** chunk_gk_fwd takes it. Everything else is FLA_UNSUPPORTED and the op runs
** the recurrent backward: f32 inputs (no fp32 tensor-core path), RWKV-6 past K
** = 128, other decays (chunk_bwd), the WY family.
**
** Tiles: 64 tokens a chunk, 4 warps; BV (a multiple of 16, 16..128) is the
** value slice of the two state walks (KW = ceil(K/64)*16 keys a warp, KW/16 *
** BV/8 * 4 <= 64 state registers a thread); BK = K (never tiled). The dv and
** dq/dk kernels take value tiles of 64 and 32 (fixed; the latter keeps the
** dq/dk kernel at two blocks an SM for K = 128).
**
** Four kernels, five with a bonus (grid, block, dynamic shared memory), KP = K
** padded to 64:
**   fla_chunk_gk_fwd_a     (NC, H)        256  2*64*(KP+8)*2 + 65*(KP+4)*4
**   fla_chunk_gk_bwd_walk  (N*NVW, H, 2)  128  3*(64*(KP+8)*2 + 64*(BV+8)*2 + KP*4)
**   fla_chunk_gk_bwd_dv    (NC*NVD, H)    128  64*72*2*2 + 64*(KP+8)*2 + KP*72*2
**   fla_chunk_gk_bwd_dqk   (NC, H, KS)    128  2*64*(KQ+8)*2 + 64*(KQ+4)*4
**                                              + 2*64*40*2 + 2*KQ*40*2 + 64*72*2 + 5*KQ*4
**                                              (HGRN2: + 64*(KQ+4)*4; read before: +
**                                              (KQ+4)*4; bonus: + (64+5*KQ)*4)
**   fla_chunk_gk_bwd_du    (1, H)         128  0            (bonus only: du [H,K])
** with KS = 2 key slices of KQ = KP/2 keys past KP = 128, else KS = 1, KQ = KP.
** NVW = ceil(V/BV), NVD = ceil(V/64).
** Workspaces: ws0 = NC*H*K*V bf16 (DH: the gradient of the state leaving each
** chunk); ws1 = chunk_gk_fwd's layout up to GL (2-byte elements, each part
** padded to 8): NC*H*K*V (HS), NC*H*64*64 (AW), twice NC*H*64*K (QG, KD), NC*H*K
** f32 (GL). The dq/dk kernel keeps its dG [64][K] f32 of a chunk in the QG
** and KD parts (read by the earlier kernels, free by then), and with a bonus
** the chunk's du [K] f32 in its GL slot (read by the walk only), which the du
** kernel sums over the chunks.
** The args the kernels read: q, k, v, g, h0, d_o, dht (0: none), cu,
** chunk_seq, chunk_first, ws0, ws1, N, H, num_chunks, scale (bonus: bonus);
** written: dq, dk (GLA, RWKV-6), dv (bf16, always), dg (bf16, when not 0),
** dbonus (bf16, when not 0), dh0 (f32, when not 0).
*/
#include "internal.h"
#include "stage.h"
#include "stage_chunk_common.h"

#include <stdio.h>
#include <string.h>

#define GB_BT 64
#define GB_WARPS 4
#define GB_VT 64 /* value tile of the dv kernel (GB_VT in the template) */
#define GB_VQ 32 /* value tile of the dq/dk kernel (GB_VQ in the template) */
#define GB_NS 3  /* chunks in the walk's ring (GB_NS in the template) */
#define GB_SMEM_MAX (227 * 1024)
#define GB_HGRN2_ENABLED 1 /* 0 declines HGRN2 (keys derived from the decay) */

static int kw_(int K) { return (K + 16 * GB_WARPS - 1) / (16 * GB_WARPS) * 16; }
static int kp_(int K) { return kw_(K) * GB_WARPS; }
/* key slices of the dq/dk kernel (grid z; GB_KS in the template): two past K = 128 */
static int ks_(int K) { return kp_(K) > 128 ? 2 : 1; }

/* chunk_gk_fwd's per-chunk kernel (smem_a_ in stage_chunk_gk.c: keep in step) */
static unsigned smem_a_(const fla_gen_key *key) {
  int KP = kp_(key->K);
  return (unsigned)(2 * GB_BT * (KP + 8) * 2 + (GB_BT + 1) * (KP + 4) * 4);
}

static unsigned smem_walk_(const fla_gen_key *key, const fla_tile_config *cfg) {
  int KP = kp_(key->K);
  return (unsigned)(GB_NS * (GB_BT * (KP + 8) * 2 + GB_BT * (cfg->BV + 8) * 2 + KP * 4));
}

static unsigned smem_dv_(const fla_gen_key *key) {
  int KP = kp_(key->K), LDV = GB_VT + 8;
  return (unsigned)(2 * GB_BT * LDV * 2 + GB_BT * (KP + 8) * 2 + KP * LDV * 2);
}

/* value tiles of GB_VQ, a key slice of KP / ks_ keys; HGRN2 keeps its dk in
** one more [64][KP+4] f32 array */
static unsigned smem_dqk_(const fla_gen_key *key) {
  int KP = kp_(key->K) / ks_(key->K), LDQ = GB_VQ + 8;
  return (unsigned)(2 * GB_BT * (KP + 8) * 2 + GB_BT * (KP + 4) * 4 + 2 * GB_BT * LDQ * 2 +
                    2 * KP * LDQ * 2 + GB_BT * (GB_BT + 8) * 2 + 5 * KP * 4 +
                    (key->key_from_decay ? GB_BT * (KP + 4) * 4 : 0) +
                    (key->read_before ? (KP + 4) * 4 : 0) +  /* gam's zero row -1 */
                    (key->has_bonus ? (GB_BT + 5 * KP) * 4 : 0)); /* dA's diagonal, u, du per warp */
}

static void default_config_(const fla_gen_key *key, fla_tile_config *cfg) {
  if (cfg->BT == 0) cfg->BT = GB_BT;
  if (cfg->warps == 0) cfg->warps = GB_WARPS;
  if (cfg->BK == 0) cfg->BK = key->K;
  if (cfg->BV == 0) {
    /* narrow slices: more programs for the sequential walks */
    int v16 = (key->V + 15) / 16 * 16;
    cfg->BV = v16 < 32 ? v16 : 32;
  }
}

static fla_status check_(fla_ctx *ctx, const fla_gen_key *key, const fla_tile_config *cfg) {
  const char *no = NULL;
  if (key->decay != 3) no = "only per-key decay (decay 3; the others are chunk_bwd's)";
  else if (key->delta) no = "the delta rule is not done in chunk_gk_bwd";
  else if (key->has_probe) no = "a separate probe needs the delta write";
  else if (key->has_bonus && !key->read_before) no = "a bonus needs read_before";
  else if (key->read_before && key->key_from_decay)
    no = "reading before the token with keys derived from the decay is not done";
  else if (!key->in_bf16) no = "f32 inputs have no tensor-core path (use the recurrent backward)";
  /* HGRN2 (k = 1 - e^g, dg - e^g dk): off with GB_HGRN2_ENABLED 0 */
  else if (key->key_from_decay && !GB_HGRN2_ENABLED)
    no = "keys derived from the decay (HGRN2) are not enabled yet (not run on a GPU)";
  if (no) return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_gk_bwd: %s", no);
  if (key->K < 1 || key->V < 1 || key->K > 256 || key->V > 512)
    return fla_set_error(ctx, FLA_UNSUPPORTED, "chunk_gk_bwd: K = %d, V = %d outside K 1..256, V 1..512",
                         key->K, key->V);
  /* RWKV-6 as chunk_gk_fwd takes it: K up to 128 (one key slice) */
  if (key->read_before && key->K > 128)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "chunk_gk_bwd: reading before the token (RWKV-6) at K = %d (K up to 128)", key->K);
  /* the dq/dk kernel's shared memory depends on the key alone (every K up to
  ** 256 fits, with two key slices past 128): past it, the recurrent backward */
  if (smem_dqk_(key) > GB_SMEM_MAX)
    return fla_set_error(ctx, FLA_UNSUPPORTED,
                         "chunk_gk_bwd: K = %d%s needs %u bytes of shared memory in the dq/dk kernel",
                         key->K, key->key_from_decay ? " with keys from the decay" : "", smem_dqk_(key));
  if (cfg->BT != GB_BT || cfg->warps != GB_WARPS)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_bwd: BT %d warps %d (only BT 64, 4 warps)",
                         cfg->BT, cfg->warps);
  if (cfg->BK != key->K)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_gk_bwd: BK %d (the key dim is not tiled: BK = K = %d)", cfg->BK,
                         key->K);
  if (cfg->BV < 16 || cfg->BV > 128 || cfg->BV % 16)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_bwd: BV %d (a multiple of 16 in 16..128)",
                         cfg->BV);
  int regs = kw_(key->K) / 16 * (cfg->BV / 8) * 4;
  if (regs > 64)
    return fla_set_error(ctx, FLA_INVALID,
                         "chunk_gk_bwd: BV %d with K %d needs %d state registers a thread (at most 64)",
                         cfg->BV, key->K, regs);
  if (smem_dqk_(key) > GB_SMEM_MAX || smem_walk_(key, cfg) > GB_SMEM_MAX)
    return fla_set_error(ctx, FLA_INVALID, "chunk_gk_bwd: %u / %u bytes of shared memory",
                         smem_walk_(key, cfg), smem_dqk_(key));
  return FLA_OK;
}

static int kernels_(const fla_gen_key *key, const fla_tile_config *cfg, char (*names)[64]) {
  (void)cfg;
  snprintf(names[0], 64, "fla_chunk_gk_fwd_a");
  snprintf(names[1], 64, "fla_chunk_gk_bwd_walk");
  snprintf(names[2], 64, "fla_chunk_gk_bwd_dv");
  snprintf(names[3], 64, "fla_chunk_gk_bwd_dqk");
  if (!key->has_bonus) return 4;
  snprintf(names[4], 64, "fla_chunk_gk_bwd_du");
  return 5;
}

static int launches_(const fla_gen_key *key, const fla_tile_config *cfg,
                     const fla_kernel_args *args, fla_kernel_launch *out) {
  unsigned NVW = (unsigned)((key->V + cfg->BV - 1) / cfg->BV);
  unsigned NVD = (unsigned)((key->V + GB_VT - 1) / GB_VT);
  unsigned N = (unsigned)args->N, H = (unsigned)args->H, NC = (unsigned)args->num_chunks;
  unsigned th = 32 * GB_WARPS;
  fla_chunk_launch_set(&out[0], "fla_chunk_gk_fwd_a", NC, H, 2 * th, smem_a_(key));
  if (NC == 0) out[0].grid[0] = 0; /* no chunks: skipped (fla_cuda_run_stage skips empty grids) */
  fla_chunk_launch_set(&out[1], "fla_chunk_gk_bwd_walk", N * NVW, H, th, smem_walk_(key, cfg));
  out[1].grid[2] = 2;
  fla_chunk_launch_set(&out[2], "fla_chunk_gk_bwd_dv", NC * NVD, H, th, smem_dv_(key));
  fla_chunk_launch_set(&out[3], "fla_chunk_gk_bwd_dqk", NC, H, th, smem_dqk_(key));
  out[3].grid[2] = (unsigned)ks_(key->K);
  if (NC == 0) out[2].grid[0] = out[3].grid[0] = 0;
  if (!key->has_bonus) return 4;
  /* du summed over the chunks; also with no chunks (du = 0) */
  fla_chunk_launch_set(&out[4], "fla_chunk_gk_bwd_du", 1, H, th, 0);
  return 5;
}

static int64_t pad8_(int64_t n) { return (n + 7) / 8 * 8; }

static void workspace_(const fla_gen_key *key, const fla_tile_config *cfg,
                       const fla_kernel_args *args, size_t *ws0, size_t *ws1) {
  (void)cfg;
  int64_t NC = args->num_chunks > 0 ? args->num_chunks : 0, H = args->H;
  /* 2-byte elements, each part padded to 8; keep in step with ck_ws_* */
  int64_t hs = pad8_(NC * H * key->K * key->V), aw = NC * H * GB_BT * GB_BT;
  int64_t qk = 2 * pad8_(NC * H * GB_BT * key->K), gl = 2 * pad8_(NC * H * key->K);
  *ws0 = (size_t)(NC * H * key->K * key->V) * 2;
  *ws1 = (size_t)(hs + aw + qk + gl) * 2;
}

const fla_stage_impl fla_stage_chunk_gk_bwd = {
    .name = "chunk_gk_bwd",
    .template_file = "chunk_gk_bwd.cuh",
    .check = check_,
    .default_config = default_config_,
    .kernels = kernels_,
    .launches = launches_,
    .workspace = workspace_,
};
