/*
** chunk_fwd.cuh -- the chunkwise-parallel forward of the decay family on
** tensor cores (stage FLA_STAGE_CHUNK_FWD, gen/stage_chunk.c).
**
** Keys handled: FLA_DELTA 0, FLA_READ_BEFORE 0, FLA_DECAY 0 (none), 1 (const
** gamma[h]), 2 (scalar g [tok,H]); FLA_IN_BF16 1 (q, k, v, g, o bf16; h0, ht,
** gamma f32). Tiles: FLA_BT 64 tokens a chunk, FLA_WARPS 4 or 8 (of the
** output walk), FLA_BV value columns a program (multiple of 16; of 32 with 8
** warps: two halves of 4 warps); the key dim is never tiled (FLA_BK is
** ignored): each program holds the whole K x BV slice of the state.
**
** The math (runtime/cpu/chunk.c, fla-notes.md §2.2). Per chunk of C <= 64
** rows with S0 the state entering it, log gates in base 2 (g * log2 e):
**   gam_i = sum_{r <= i} g_r   (const decay: gam_i = gamma_h (i+1); none: 0)
**   O     = scale [ diag(2^gam) Q S0 + ((Q K^T) .* M .* 2^(gam_i - gam_j)) V ]
**           (M: j <= i < C)
**   S_L   = 2^gam_L S0 + (K .* 2^(gam_L - gam))^T V        gam_L = gam_{C-1}
** Every exponent is <= 0. Products run as mma.sync m16n8k16 (bf16 in, fp32
** accumulate); the state and the gate sums stay fp32; S0 is rounded to bf16
** only as the operand of Q S0 (as fla stores h in bf16), A = masked gated Q K^T
** is rounded to bf16 as the operand of A V, and K .* 2^(gam_L - gam) to bf16
** as the operand of the state update.
**
** The chunks (NC = a.num_chunks over all sequences, chunk c of sequence n =
** a.chunk_first[n] + local index, a.chunk_seq[c] = n) are cut into blocks of
** M consecutive chunks, b = 0..NB-1 (M: ck_blocklen, the same formula as
** gen/stage_chunk.c's). Four kernels:
**
**   fla_chunk_fwd_gam  (ceil(NC/4), H; scalar gates only, else not launched):
**       gam of every (chunk, head), the chunk-local cumsum of its log2 gates
**       (fla's chunk_local_cumsum) -> ws1 after the block decays (f32
**       [NC,H,64]), so that the two walks below load it beside K and V
**       instead of one warp scanning the gates while the others wait.
**   fla_chunk_fwd_h    (NB*NV1, H; its own geometry, CK1_*): for each block b
**       whose last sequence n continues into block b+1, the state of n after
**       the block assuming a
**       zero state where its part of the block begins (start = max(first chunk
**       of b, first chunk of n)):  P_b = sum over its chunks of the decayed
**       updates, and D_b = the log2 decay over those chunks. P_b -> ws0 slot
**       b (f32 [NB,H,K,V]), D_b -> ws1[b,H] (f32). Other blocks exit at once.
**   fla_chunk_fwd_scan (ceil(H*K*V/256)): per state element, blocks in
**       order: the state entering block b+1 is
**         E_{b+1} = 2^D_b X_b + P_b,   X_b = h0[n] (or 0) when n began inside
**                                      or at the start of block b, else E_b,
**       written over P_b in ws0 slot b. Also ht[n] = h0[n] (or 0) for
**       sequences with no chunk. Not launched when the blocks are few
**       (ck_fold: at most CK_FOLD_MAX_BLOCKS a sequence on average): then
**       fla_chunk_fwd_o folds the P_b of its sequence's earlier blocks itself
**       (a few L2 reads instead of a kernel: 20-45 us at 1,8192,96).
**   fla_chunk_fwd_o    (NB*NV, H): walks the chunks of block b in order with
**       the K x BV state slice in registers (8 warps: each half of BV in its
**       4 warps, Q K^T once for both: ck_o_chunk2), starting from E_b (ws0 slot b-1,
**       or folded) or h0 where a sequence begins, computes O of every chunk
**       and updates the state; writes ht where a sequence ends.
** With M = chunks per sequence (equal-length batches with enough heads), no
** block starts inside a sequence and the first two kernels do no work.
** The grids and shared memory sizes are gen/stage_chunk.c's (launches_).
**
** Not here yet: per-key decay (GLA, fla-notes §2.3), the WY family (§2.4),
** f32 inputs (check() answers FLA_UNSUPPORTED: the recurrent stage runs them).
*/

/* fla_kernel_args comes from templates/cuda/common.cuh (inlined before this). */

#if FLA_BT != 64 || (FLA_WARPS != 4 && FLA_WARPS != 8)
#error "chunk_fwd: FLA_BT 64 and FLA_WARPS 4 or 8 only"
#endif
#if FLA_DELTA || FLA_READ_BEFORE || FLA_DECAY > 2 || !FLA_IN_BF16
#error "chunk_fwd: decay family (none, const, scalar), bf16 inputs only"
#endif
#if FLA_BV % (16 * (FLA_WARPS / 4))
#error "chunk_fwd: FLA_BV must be a multiple of 16 (of 32 with 8 warps)"
#endif

/* fla_chunk_fwd_o: 4 warps per value part, CK_VH parts (8 warps: the BV
** columns in two halves of BVH, one q/k tile load and one Q K^T a chunk for
** both). Warp w: row block and key quarter wr = w % 4, value part w / 4. */
#define CK_BT 64
#define CK_NW 4                                              /* warps of one part     */
#define CK_VH (FLA_WARPS / 4)                                /* value parts a program */
#define CK_NTH (32 * FLA_WARPS)
#define CK_KW ((FLA_K + 16 * CK_NW - 1) / (16 * CK_NW) * 16) /* state keys a warp owns */
#define CK_KP (CK_KW * CK_NW)                                /* K padded              */
#define CK_MT (CK_KW / 16)                                   /* m-tiles a warp owns   */
#define CK_BV FLA_BV
#define CK_BVH (CK_BV / CK_VH)                               /* columns of one part   */
#define CK_NT (CK_BVH / 8)                                   /* n-tiles of a part     */
#define CK_NV ((FLA_V + CK_BV - 1) / CK_BV)
#define CK_LDA (CK_BT + 8) /* the gated A tile the two parts share (8 warps) */
#define CK_LDQ (CK_KP + 8) /* smem row strides (elements): +16 bytes, no bank conflicts */
#define CK_LDV (CK_BV + 8)

/* fla_chunk_fwd_h has its own geometry: 8 warps (4 when K <= 64), each owning
** KW1 keys of the state, and value tiles as wide as 64 state registers a
** thread allow (128 for K <= 128), so that K is read once per block. Keep in
** step with gen/stage_chunk.c (h_geom_). */
#define CK1_NW (FLA_K > 64 ? 8 : 4)
#define CK1_NTH (32 * CK1_NW)
#define CK1_KW ((FLA_K + 16 * CK1_NW - 1) / (16 * CK1_NW) * 16)
#define CK1_KP (CK1_KW * CK1_NW)
#define CK1_MT (CK1_KW / 16)
#define CK1_V16 ((FLA_V + 15) / 16 * 16)
#define CK1_BVMAX (128 / CK1_MT / 16 * 16)
#define CK1_BV (CK1_V16 < CK1_BVMAX ? CK1_V16 : CK1_BVMAX)
#define CK1_NT (CK1_BV / 8)
#define CK1_NV ((FLA_V + CK1_BV - 1) / CK1_BV)
#define CK1_LDQ (CK1_KP + 8)
#define CK1_LDV (CK1_BV + 8)
#define CK_LOG2E 1.4426950408889634f

/* Block length: keep in step with fwd_blocklen_() in gen/stage_chunk.c. One
** block per sequence when that gives enough programs; else the M in 8, 16,
** .., 64 with the fewest chunk steps of fla_chunk_fwd_o counted in waves of
** CK_O_SLOTS programs of 4 warps (an 8-warp program counts as two: NV is
** counted in 4-warp value parts), ceil(NB NV H / slots) M (ties: the longer blocks,
** which leave fla_chunk_fwd_h less to recompute). Measured at the ANCHORS
** shapes (bench/results/2026-11-23-chunk-fwd-split.md): o's time follows
** these steps, and the old M = NC H NV / 1024 left a last wave a third full
** at 1,8192,96 (M 24: 5 waves of 24 chunks where M 32 takes 3 of 32). */
#define CK_FUSED_MIN 256 /* programs of one block per sequence that suffice   */
#define CK_O_SLOTS 264   /* o programs resident at once: 132 SMs x 2 (H100)   */
#define CK_MIN_M 8
#define CK_MAX_M 64

__device__ __forceinline__ long long ck_blocklen(long long NC, int N, int H) {
#ifdef FLA_CHUNK_M
  (void)NC, (void)N, (void)H;
  return FLA_CHUNK_M;
#else
  const long long NV = CK_NV * CK_VH; /* value tiles counted in 4-warp programs */
  if (NC <= 0) return 1;
  if (N >= 1 && NC % N == 0 && (long long)N * H * NV >= CK_FUSED_MIN) return NC / N;
  /* unrolled: every m a constant, so its divisions are multiplies (a loop of
  ** 64-bit divides cost warp 0 microseconds per chunk when ck_load_gam
  ** computed this inside the walks: bench/results/2026-11-23-simple-gla-fwd.md) */
  long long best = CK_MIN_M, best_steps = -1;
#pragma unroll
  for (long long m = CK_MIN_M; m <= CK_MAX_M; m += 8) {
    const long long steps = (((NC + m - 1) / m) * H * NV + CK_O_SLOTS - 1) / CK_O_SLOTS * m;
    if (best_steps < 0 || steps <= best_steps) best = m, best_steps = steps;
  }
  return best;
#endif
}

/* Whether fla_chunk_fwd_o folds the earlier blocks' states itself (and the
** scan kernel is not launched): keep in step with fold_() in gen/stage_chunk.c. */
#define CK_FOLD_MAX_BLOCKS 8

__device__ __forceinline__ int ck_fold(long long NC, int N, int H) {
  const long long M = ck_blocklen(NC, N, H), NB = NC > 0 ? (NC + M - 1) / M : 0;
  return NB <= (long long)CK_FOLD_MAX_BLOCKS * N;
}

//@include "chunk_common.cuh"
//@include "chunk_tiles.cuh"

/* Scalar gates: the chunk-local cumsums come from fla_chunk_fwd_gam, loaded
** with cp.async per chunk (two buffers); other decays compute gam in warp 0. */
#if FLA_DECAY == 2
#define CK_GAM_BUFS 2
#else
#define CK_GAM_BUFS 1
#endif

/* GAM [NC,H,64] f32 in ws1, after the NB*H block decays (rounded up to 4). */
__device__ __forceinline__ float *ck_ws_gam(const fla_kernel_args &a, long long NB) {
  return (float *)a.ws1 + (NB * a.H + 3) / 4 * 4;
}

/* Chunk c's gam row into dst (16 threads, 16 bytes each; in the caller's
** commit group). gws: ck_ws_gam, computed once per program. */
__device__ __forceinline__ void ck_load_gam(const float *gws, long long H, float *dst, long long c,
                                            int h, int tid) {
#if FLA_DECAY == 2
  if (tid < CK_BT / 4) ck_cp16(ck_smem(dst + 4 * tid), gws + (c * H + h) * CK_BT + 4 * tid, 1);
#else
  (void)gws, (void)H, (void)dst, (void)c, (void)h, (void)tid;
#endif
}

//@include "chunk_out.cuh"

/* Common pointers and the block's place. */
struct ck_prog {
  int vt, h, v0, vcols;
  long long b, M, NB, c0, c1;
};

template <int NV, int BV>
__device__ __forceinline__ ck_prog ck_prog_at(const fla_kernel_args &a) {
  ck_prog p;
  p.vt = blockIdx.x % NV;
  p.b = blockIdx.x / NV;
  p.h = blockIdx.y;
  p.v0 = p.vt * BV;
  p.vcols = FLA_V - p.v0 < BV ? FLA_V - p.v0 : BV;
  long long NC = a.num_chunks;
  p.M = ck_blocklen(NC, a.N, a.H);
  p.NB = (NC + p.M - 1) / p.M;
  p.c0 = p.b * p.M;
  p.c1 = p.c0 + p.M < NC ? p.c0 + p.M : NC;
  return p;
}

/* ------------------------------------------------ kernel 0: gate cumsums */

/* One warp per (chunk, head): GAM[c,h,:] = ck_scan_g of the chunk's gates. */
extern "C" __global__ void __launch_bounds__(128) fla_chunk_fwd_gam(fla_kernel_args a) {
#if FLA_DECAY == 2
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, h = blockIdx.y;
  const long long c = (long long)blockIdx.x * 4 + w;
  if (c >= a.num_chunks) return;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  float g0 = 0.0f, g1 = 0.0f;
  ck_load_g(a, x, h, lane, g0, g1);
  const long long NC = a.num_chunks, M = ck_blocklen(NC, a.N, a.H);
  ck_scan_g(ck_ws_gam(a, (NC + M - 1) / M) + (c * a.H + h) * CK_BT, g0, g1, 0.0f, x.rows, lane);
#else
  (void)a;
#endif
}

/* ------------------------------------------------ kernel 1: block states */

/* Shared memory: Ks[2][64][LDQ1], Vs[2][64][LDV1] bf16, gam[GAM_BUFS][64] f32 (CK1_ geometry). */
extern "C" __global__ void __launch_bounds__(CK1_NTH) fla_chunk_fwd_h(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Ks = (unsigned short *)ck_sm;
  unsigned short *Vs = Ks + 2 * CK_BT * CK1_LDQ;
  float *gam = (float *)(Vs + 2 * CK_BT * CK1_LDV);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const ck_prog p = ck_prog_at<CK1_NV, CK1_BV>(a);
  if (p.b + 1 >= p.NB) return;
  const int *cs = (const int *)a.chunk_seq;
  const long long *cf = (const long long *)a.chunk_first;
  const int nl = cs[p.c1 - 1];
  if (cs[p.c1] != nl) return; /* the next block starts a sequence */
  long long start = cf[nl] > p.c0 ? cf[nl] : p.c0;
  const long long H = a.H;
  const unsigned short *kp = (const unsigned short *)a.k;
  const unsigned short *vp = (const unsigned short *)a.v;
  const int veck = (FLA_K % 8 == 0) && ((a.k & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  const float gc = ck_gamma_h(a, p.h);

  float S[CK1_MT][CK1_NT][4];
  ck_state_zero(S);
  float dsum = 0.0f;

  ck_chunk x;
  ck_chunk_at(a, start, x);
  ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(Ks, kp + (x.t0 * H + p.h) * FLA_K, H * FLA_K, x.rows, FLA_K, veck, tid);
  ck_load_tile<CK1_BV, CK1_LDV, CK1_NTH>(Vs, vp + (x.t0 * H + p.h) * FLA_V + p.v0, H * FLA_V, x.rows, p.vcols,
                              vecv, tid);
  const float *gws = ck_ws_gam(a, p.NB);
  ck_load_gam(gws, H, gam, start, p.h, tid);
  ck_commit();
  float g0 = 0.0f, g1 = 0.0f;
  if (FLA_DECAY != 2 && w == 0) ck_load_g(a, x, p.h, lane, g0, g1);

  for (long long c = start; c < p.c1; c++) {
    const int buf = (int)((c - start) & 1);
    const int rows = x.rows;
    float *gb = gam + (CK_GAM_BUFS == 2 ? buf * CK_BT : 0);
    ck_chunk xn = x;
    float gn0 = 0.0f, gn1 = 0.0f;
    if (c + 1 < p.c1) {
      ck_chunk_next(a, c, xn);
      unsigned short *Kn = Ks + (buf ^ 1) * CK_BT * CK1_LDQ;
      unsigned short *Vn = Vs + (buf ^ 1) * CK_BT * CK1_LDV;
      ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(Kn, kp + (xn.t0 * H + p.h) * FLA_K, H * FLA_K, xn.rows, FLA_K,
                                  veck, tid);
      ck_load_tile<CK1_BV, CK1_LDV, CK1_NTH>(Vn, vp + (xn.t0 * H + p.h) * FLA_V + p.v0, H * FLA_V, xn.rows,
                                  p.vcols, vecv, tid);
      ck_load_gam(gws, H, gam + (CK_GAM_BUFS == 2 ? (buf ^ 1) * CK_BT : 0), c + 1, p.h, tid);
      ck_commit();
      if (FLA_DECAY != 2 && w == 0) ck_load_g(a, xn, p.h, lane, gn0, gn1);
      ck_wait_one();
    } else {
      ck_wait_all();
    }
    if (FLA_DECAY != 2 && w == 0) ck_scan_g(gb, g0, g1, gc, rows, lane);
    __syncthreads();
#if FLA_DECAY
    dsum += gb[rows - 1];
#endif
    ck_state_update<CK1_KW, CK1_MT, CK1_NT, CK1_LDQ, CK1_LDV>(S, Ks + buf * CK_BT * CK1_LDQ,
                                                             Vs + buf * CK_BT * CK1_LDV, gb, rows, w,
                                                             lane);
    __syncthreads();
    x = xn;
    g0 = gn0, g1 = gn1;
  }
  const long long KV = (long long)FLA_K * FLA_V;
  float *P = (float *)a.ws0 + (p.b * H + p.h) * KV;
  ck_state_store<CK1_KW>(S, P, p.v0, w, lane);
  if (p.vt == 0 && tid == 0) ((float *)a.ws1)[p.b * H + p.h] = dsum;
}

/* ------------------------------------------------- kernel 2: block scan */

#define CK_SCAN_THREADS 256
#define CK_SCAN_UNROLL 8

extern "C" __global__ void __launch_bounds__(CK_SCAN_THREADS) fla_chunk_fwd_scan(fla_kernel_args a) {
  const long long KV = (long long)FLA_K * FLA_V;
  const long long H = a.H;
  const long long e = (long long)blockIdx.x * CK_SCAN_THREADS + threadIdx.x;
  const bool valid = e < H * KV;
  const int h = (int)(e / KV);
  const long long kv = e % KV;
  const int *cs = (const int *)a.chunk_seq;
  const long long *cf = (const long long *)a.chunk_first;
  const float *h0 = (const float *)a.h0;
#if FLA_STORE_HT
  /* ht[n] = h0[n] (or 0) for sequences with no chunk: 32 sequences a step per
  ** warp (every lane of the block gets here: full warps for the ballot) */
  for (int n0 = 0; n0 < a.N; n0 += 32) {
    const int n = n0 + (int)(threadIdx.x & 31);
    unsigned m = __ballot_sync(0xffffffffu, n < a.N && cf[n] == cf[n + 1]);
    while (m) {
      const int ne = n0 + __ffs(m) - 1;
      m &= m - 1;
      if (valid)
        ((float *)a.ht)[((long long)ne * H + h) * KV + kv] =
            FLA_HAS_H0 && h0 ? h0[((long long)ne * H + h) * KV + kv] : 0.0f;
    }
  }
#endif
  if (!valid) return;
  const long long NC = a.num_chunks;
  const long long M = ck_blocklen(NC, a.N, a.H);
  const long long NB = (NC + M - 1) / M;
  float *P = (float *)a.ws0;
  const float *D = (const float *)a.ws1;
  float E = 0.0f;
  for (long long b0 = 0; b0 + 1 < NB; b0 += CK_SCAN_UNROLL) {
    float pv[CK_SCAN_UNROLL], dv[CK_SCAN_UNROLL];
    int need[CK_SCAN_UNROLL], nl[CK_SCAN_UNROLL];
#pragma unroll
    for (int u = 0; u < CK_SCAN_UNROLL; u++) {
      long long b = b0 + u;
      need[u] = 0, nl[u] = 0, pv[u] = 0.0f, dv[u] = 0.0f;
      if (b + 1 < NB) {
        long long c1 = (b + 1) * M;
        nl[u] = cs[c1 - 1];
        need[u] = cs[c1] == nl[u];
        if (need[u]) {
          pv[u] = P[(b * H + h) * KV + kv];
          dv[u] = D[b * H + h];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < CK_SCAN_UNROLL; u++) {
      long long b = b0 + u;
      if (need[u]) {
        float X = E;
        if (cf[nl[u]] >= b * M) /* the sequence began inside or at the start of block b */
          X = FLA_HAS_H0 && h0 ? h0[((long long)nl[u] * H + h) * KV + kv] : 0.0f;
        E = exp2f(dv[u]) * X + pv[u];
        P[(b * H + h) * KV + kv] = E;
      }
    }
  }
}

/* ------------------------------------------------- kernel 3: the output */

/* S = 2^D S + P[key][v0 + val] (fragment layout of ck_state_load; P one head's
** K x V f32 block state from fla_chunk_fwd_h, D its log2 decay). */
template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_fold_block(float (&S)[MT][NT][4], const float *P, float D, int v0,
                                              int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
  const float e2 = exp2f(D);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = KW * w + 16 * mt + g + (e >> 1) * 8, col = v0 + 8 * j + 2 * q + (e & 1);
        const float pv = (key < FLA_K && col < FLA_V) ? P[(long long)key * FLA_V + col] : 0.0f;
        S[mt][j][e] = e2 * S[mt][j][e] + pv;
      }
}

/* Shared memory: Qs[2][64][LDQ], Ks[2][64][LDQ], Vs[2][64][LDV], Ss[KP][LDV]
** bf16, gam[2][64] f32, and with 8 warps As[64][LDA] bf16. Warp w owns output
** rows 16wr .. 16wr+15 of the chunk and state keys KW wr .. KW wr + KW-1 of its
** value part (wr = w % 4; 4 warps: the whole BV). */
#if CK_VH == 2
/* One chunk of fla_chunk_fwd_o with 8 warps: warp (wr, vh) owns output rows
** 16wr .. 16wr+15 and value columns BVH vh .. BVH vh + BVH-1 (of the program's
** BV), state keys KW wr .. and the same columns.
**   1. A = Q K^T by 16 x 16 blocks: row block wr, column blocks vh, vh + 2
**      (those <= wr), so the two parts share one Q K^T; gated, masked,
**      rounded to bf16 into As[64][LDA]; with it Oacc = Q S0 (own columns).
**   2. after the barrier: O = 2^gam .* Oacc + A V (A rows 16wr from As).
**   3. store scale O, then S = 2^gL S + (K .* 2^(gL - gam))^T V (own part).
** The upper-triangle blocks of As are never written nor read. */
__device__ __forceinline__ void ck_o_chunk2(float (&S)[CK_MT][CK_NT][4], const unsigned short *Qb,
                                            const unsigned short *Kb, const unsigned short *Vb,
                                            const unsigned short *Ss, unsigned short *As,
                                            const float *gam, int rows, int wr, int vh, int lane,
                                            unsigned short *orow, long long ld, int vcols,
                                            float scale) {
  const int g = lane >> 2, q = lane & 3;
  const int r0 = 16 * wr;
  float acc[2][2][4], oacc[CK_NT][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
#pragma unroll
  for (int j = 0; j < CK_NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) oacc[j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < CK_KP / 16; kk++) {
    unsigned qa[4];
    ck_ldm4(qa, ck_smem(Qb + (r0 + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int nb = vh + 2 * i;
      if (nb <= wr) {
        unsigned kb[4];
        ck_ldm4(kb, ck_smem(Kb + (16 * nb + (lane >> 4) * 8 + (lane & 7)) * CK_LDQ + kk * 16 +
                            ((lane >> 3) & 1) * 8));
        ck_mma(acc[i][0], qa, kb[0], kb[1]);
        ck_mma(acc[i][1], qa, kb[2], kb[3]);
      }
    }
#pragma unroll
    for (int np = 0; np < CK_NT / 2; np++) {
      unsigned sb[4];
      ck_ldm4t(sb, ck_smem(Ss + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                           CK_BVH * vh + 16 * np + (lane >> 4) * 8));
      ck_mma(oacc[2 * np], qa, sb[0], sb[1]);
      ck_mma(oacc[2 * np + 1], qa, sb[2], sb[3]);
    }
  }

  const int rA = r0 + g, rB = r0 + g + 8;
#if FLA_DECAY
  const float gA = gam[rA], gB = gam[rB];
#endif
  /* gate and mask the warp's A blocks into As (bf16) */
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int nb = vh + 2 * i;
    if (nb <= wr) {
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int cc = 16 * nb + 8 * hf + 2 * q;
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = (e < 2) ? rA : rB, col = cc + (e & 1);
          const bool in = col <= r && r < rows;
#if FLA_DECAY
          const float gr = (e < 2) ? gA : gB;
          v[e] = in ? acc[i][hf][e] * exp2f(gr - gam[col]) : 0.0f;
#else
          v[e] = in ? acc[i][hf][e] : 0.0f;
#endif
        }
        *(unsigned *)(As + rA * CK_LDA + cc) = ck_pack(v[0], v[1]);
        *(unsigned *)(As + rB * CK_LDA + cc) = ck_pack(v[2], v[3]);
      }
    }
  }
#if FLA_DECAY
  {
    const float eA = exp2f(gA), eB = exp2f(gB);
#pragma unroll
    for (int j = 0; j < CK_NT; j++) {
      oacc[j][0] *= eA, oacc[j][1] *= eA;
      oacc[j][2] *= eB, oacc[j][3] *= eB;
    }
  }
#endif
  __syncthreads();

  /* O += A V over the warp's causal k-steps (its own value part) */
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    if (kk <= wr) {
      unsigned afr[4];
      ck_ldm4(afr, ck_smem(As + (r0 + (lane & 15)) * CK_LDA + kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < CK_NT / 2; np++) {
        unsigned vb[4];
        ck_ldm4t(vb, ck_smem(Vb + (16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                             CK_BVH * vh + 16 * np + (lane >> 4) * 8));
        ck_mma(oacc[2 * np], afr, vb[0], vb[1]);
        ck_mma(oacc[2 * np + 1], afr, vb[2], vb[3]);
      }
    }
  }

  /* store O (orow, vcols: the part's own columns) */
#pragma unroll
  for (int j = 0; j < CK_NT; j++) {
    const int col = 8 * j + 2 * q;
#if FLA_V % 2 == 0
    if (col < vcols) {
      if (rA < rows)
        *(unsigned *)(orow + rA * ld + col) = ck_pack(scale * oacc[j][0], scale * oacc[j][1]);
      if (rB < rows)
        *(unsigned *)(orow + rB * ld + col) = ck_pack(scale * oacc[j][2], scale * oacc[j][3]);
    }
#else
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
      if (r < rows && cl < vcols) {
        unsigned u = ck_pack(scale * oacc[j][e], 0.0f);
        orow[r * ld + cl] = (unsigned short)(u & 0xffffu);
      }
    }
#endif
  }

  /* the state leaving the chunk (own key quarter and value part) */
  ck_state_update<CK_KW, CK_MT, CK_NT, CK_LDQ, CK_LDV>(S, Kb, Vb + CK_BVH * vh, gam, rows, wr, lane);
}
#endif

extern "C" __global__ void __launch_bounds__(CK_NTH) fla_chunk_fwd_o(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Ks = Qs + 2 * CK_BT * CK_LDQ;
  unsigned short *Vs = Ks + 2 * CK_BT * CK_LDQ;
  unsigned short *Ss = Vs + 2 * CK_BT * CK_LDV;
  float *gam = (float *)(Ss + CK_KP * CK_LDV);
  unsigned short *As = (unsigned short *)(gam + 2 * CK_BT); /* 8 warps: the shared A tile */
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int wr = w % CK_NW, vh = w / CK_NW; /* row block / key quarter, value part */
  const ck_prog p = ck_prog_at<CK_NV, CK_BV>(a);
  const int pv0 = p.v0 + CK_BVH * vh; /* the part's first value column */
  int pvcols = p.vcols - CK_BVH * vh;
  pvcols = pvcols < 0 ? 0 : pvcols > CK_BVH ? CK_BVH : pvcols;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  const long long *cf = (const long long *)a.chunk_first;
  const int fold = ck_fold(a.num_chunks, a.N, a.H);
#if FLA_STORE_HT
  if (fold && p.b == 0) /* no scan kernel: ht = h0 (or 0) for sequences with no chunk */
    for (int n = 0; n < a.N; n++) {
      if (cf[n] != cf[n + 1]) continue;
      float *dst = (float *)a.ht + ((long long)n * H + p.h) * KV;
      const float *src = FLA_HAS_H0 && a.h0 ? (const float *)a.h0 + ((long long)n * H + p.h) * KV : 0;
      for (int e = tid; e < FLA_K * p.vcols; e += CK_NTH) {
        const long long i = (long long)(e / p.vcols) * FLA_V + p.v0 + e % p.vcols;
        dst[i] = src ? src[i] : 0.0f;
      }
    }
#endif
  if (p.c0 >= a.num_chunks) return;
  const unsigned short *qp = (const unsigned short *)a.q;
  const unsigned short *kp = (const unsigned short *)a.k;
  const unsigned short *vp = (const unsigned short *)a.v;
  unsigned short *op = (unsigned short *)a.o;
  const int vecq = (FLA_K % 8 == 0) && (((a.q | a.k) & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  const float gc = ck_gamma_h(a, p.h);
  const float scale = a.scale;
  const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;

  ck_chunk x;
  ck_chunk_at(a, p.c0, x);

  float S[CK_MT][CK_NT][4];
  if (x.first || fold) {
    ck_state_load<CK_KW>(S, h0 ? h0 + ((long long)x.n * H + p.h) * KV : h0, pv0, wr, lane);
    /* the sequence began in an earlier block: fold the blocks since (their P and D from kernel 1) */
    if (!x.first)
      for (long long bb = cf[x.n] / p.M; bb < p.b; bb++)
        ck_fold_block<CK_KW>(S, (const float *)a.ws0 + (bb * H + p.h) * KV, ((const float *)a.ws1)[bb * H + p.h],
                             pv0, wr, lane);
  } else {
    ck_state_load<CK_KW>(S, (const float *)a.ws0 + ((p.b - 1) * H + p.h) * KV, pv0, wr, lane);
  }

  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Qs, qp + (x.t0 * H + p.h) * FLA_K, H * FLA_K, x.rows, FLA_K, vecq, tid);
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Ks, kp + (x.t0 * H + p.h) * FLA_K, H * FLA_K, x.rows, FLA_K, vecq, tid);
  ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Vs, vp + (x.t0 * H + p.h) * FLA_V + p.v0, H * FLA_V, x.rows, p.vcols,
                              vecv, tid);
  const float *gws = ck_ws_gam(a, p.NB);
  ck_load_gam(gws, H, gam, p.c0, p.h, tid);
  ck_commit();
  float g0 = 0.0f, g1 = 0.0f;
  if (FLA_DECAY != 2 && w == 0) ck_load_g(a, x, p.h, lane, g0, g1);

  for (long long c = p.c0; c < p.c1; c++) {
    const int buf = (int)((c - p.c0) & 1);
    const int rows = x.rows;
    float *gb = gam + (CK_GAM_BUFS == 2 ? buf * CK_BT : 0);
    ck_chunk xn = x;
    float gn0 = 0.0f, gn1 = 0.0f;
    if (c + 1 < p.c1) {
      ck_chunk_next(a, c, xn);
      const long long ro = (xn.t0 * H + p.h);
      ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Qs + (buf ^ 1) * CK_BT * CK_LDQ, qp + ro * FLA_K, H * FLA_K,
                                  xn.rows, FLA_K, vecq, tid);
      ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Ks + (buf ^ 1) * CK_BT * CK_LDQ, kp + ro * FLA_K, H * FLA_K,
                                  xn.rows, FLA_K, vecq, tid);
      ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Vs + (buf ^ 1) * CK_BT * CK_LDV, vp + ro * FLA_V + p.v0,
                                  H * FLA_V, xn.rows, p.vcols, vecv, tid);
      ck_load_gam(gws, H, gam + (CK_GAM_BUFS == 2 ? (buf ^ 1) * CK_BT : 0), c + 1, p.h, tid);
      ck_commit();
      if (FLA_DECAY != 2 && w == 0) ck_load_g(a, xn, p.h, lane, gn0, gn1);
    }
    /* a sequence starting inside the block: its initial state */
    if (x.first && c > p.c0)
      ck_state_load<CK_KW>(S, h0 ? h0 + ((long long)x.n * H + p.h) * KV : h0, pv0, wr, lane);
    /* S0 as bf16, the B operand of Q S0 */
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
      for (int j = 0; j < CK_NT; j++) {
        int key = CK_KW * wr + 16 * mt + g, col = CK_BVH * vh + 8 * j + 2 * q;
        *(unsigned *)(Ss + key * CK_LDV + col) = ck_pack(S[mt][j][0], S[mt][j][1]);
        *(unsigned *)(Ss + (key + 8) * CK_LDV + col) = ck_pack(S[mt][j][2], S[mt][j][3]);
      }
    if (FLA_DECAY != 2 && w == 0) ck_scan_g(gb, g0, g1, gc, rows, lane);
    if (c + 1 < p.c1)
      ck_wait_one();
    else
      ck_wait_all();
    __syncthreads();

    const unsigned short *Qb = Qs + buf * CK_BT * CK_LDQ;
    const unsigned short *Kb = Ks + buf * CK_BT * CK_LDQ;
    const unsigned short *Vb = Vs + buf * CK_BT * CK_LDV;
    unsigned short *orow = op + (x.t0 * H + p.h) * FLA_V + pv0;
#if CK_VH == 2
    ck_o_chunk2(S, Qb, Kb, Vb, Ss, As, gb, rows, wr, vh, lane, orow, H * FLA_V, pvcols, scale);
#else
    (void)As;
    ck_o_chunk<1>(S, Qb, Kb, Vb, Ss, gb, rows, w, lane, orow, H * FLA_V, pvcols, scale);
#endif
#if FLA_STORE_HT
    if (x.last)
      ck_state_store<CK_KW>(S, (float *)a.ht + ((long long)x.n * H + p.h) * KV, pv0, wr, lane);
#endif
    __syncthreads();
    x = xn;
    g0 = gn0, g1 = gn1;
  }
}
