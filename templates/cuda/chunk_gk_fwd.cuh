/*
** chunk_gk_fwd.cuh -- the chunkwise-parallel forward of per-key gates (GLA,
** HGRN2) on tensor cores (stage FLA_STAGE_CHUNK_GK_FWD, gen/stage_chunk_gk.c).
**
** Keys handled: FLA_DECAY 3 (per-key g [tok,H,K]), FLA_DELTA 0, FLA_READ_BEFORE
** 0, FLA_KEY_FROM_DECAY 0 or 1 (k = 1 - e^g computed on load, HGRN2);
** FLA_IN_BF16 1 (q, k, v, g, o bf16; h0, ht f32). Tiles: FLA_BT 64 tokens a
** chunk, FLA_WARPS 4, FLA_BV value columns a program (multiple of 16); the key
** dim is never tiled: each program holds the whole K x BV slice of the state.
**
** The math (runtime/cpu/chunk.c + gated_product.c, fla-notes.md §2.3). Per
** chunk of C <= 64 rows with S0 the state entering it, log gates in base 2:
**   gam_id = sum_{r <= i} g_rd * log2 e      (fp32, per key d; rows past the
**                                             chunk's end add 0)
**   A_ij   = sum_d q_id k_jd 2^(gam_id - gam_jd)       j <= i
**   O      = scale [ (Q .* 2^gam) S0 + A V ]
**   S_L    = diag(2^gam_L) S0 + (K .* 2^(gam_L - gam))^T V     gam_L = gam_{C-1}
** A is built from 16 x 16 blocks (warp w owns rows I = 16w .. 16w+15):
**   J < I: A_IJ = (Q_I .* 2^(gam_I - r)) (K_J .* 2^(r - gam_J))^T with r the
**          gam row 16w (the first row of I): both exponents are <= 0 since
**          gam decreases down the chunk; bf16 operands, mma.sync, fp32 sums;
**   J = I: fp32 loops, 2^(gam_id - gam_jd) with j <= i (exponent <= 0).
** Read before the token (RWKV-6, FLA_READ_BEFORE): the queries see the state
** before their token, so they use gx_i = gam_{i-1} (gam_{-1} = 0: a zero row
** in front of gam), the mask is strict (j < i), r = gx row 16w = gam row
** 16w-1, and with FLA_HAS_BONUS the diagonal gets A_ii = sum_d q_id u_d k_id
** (u = bonus [H,K]): O_i += scale (q_i . (u * k_i)) v_i.
** No exponential of a positive number is taken anywhere. (Q .* 2^gam),
** K .* 2^(gam_L - gam) and A are rounded to bf16 as mma operands; S0 is
** rounded to bf16 as the operand of Q S0 (as fla stores h in bf16); the state
** and the gate sums stay fp32.
**
** The chunk/block machinery is chunk_fwd.cuh's (keep in step): chunks cut
** into blocks of M, three kernels:
**   fla_chunk_gk_fwd_h    (NB*NV1, H): for each block whose last sequence
**       continues into the next, that sequence's state after the block from a
**       zero state, P_b -> ws0 [NB,H,K,V], and its log2 decay per key over the
**       block, D_b -> ws1 [NB,H,K].
**   fla_chunk_gk_fwd_scan (ceil(H*K*V/256)): E_{b+1}[k][v] = 2^D_b[k] X_b + P_b
**       (X_b = h0 or 0 where the sequence began in block b, else E_b), over P_b.
**   fla_chunk_gk_fwd_o    (NB*NV, H): the chunks of block b in order, state in
**       registers from E_b or h0; O of every chunk; ht where a sequence ends.
** Shared memory per kernel: gen/stage_chunk_gk.c (smem_h_, smem_o_). The output
** kernel keeps single Q, K, V tiles (CK_NBUF 1: the next chunk is loaded when
** the last is done) and reads g straight from global memory in its cumsum, so
** that two blocks fit an SM at K = 128 (measured: bench/results/
** 2026-11-22-chunk-gk-fwd.md); the block-state kernel double-buffers.
*/

#if FLA_BT != 64 || FLA_WARPS != 4
#error "chunk_gk_fwd: FLA_BT 64 and FLA_WARPS 4 only"
#endif
#if FLA_DELTA || FLA_HAS_PROBE || FLA_DECAY != 3 || !FLA_IN_BF16 || (FLA_HAS_BONUS && !FLA_READ_BEFORE)
#error "chunk_gk_fwd: per-key decay, plain write, bf16 inputs only"
#endif
#if FLA_BV % 16
#error "chunk_gk_fwd: FLA_BV must be a multiple of 16"
#endif

#define CK_BT 64
#define CK_NW 4
#define CK_NTH (32 * CK_NW)
#define CK_KW ((FLA_K + 16 * CK_NW - 1) / (16 * CK_NW) * 16) /* state keys a warp owns */
#define CK_KP (CK_KW * CK_NW)                                /* K padded              */
#define CK_MT (CK_KW / 16)                                   /* m-tiles a warp owns   */
#define CK_BV FLA_BV
#define CK_NT (CK_BV / 8)                                    /* n-tiles of the slice  */
#define CK_NV ((FLA_V + CK_BV - 1) / CK_BV)
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
#define CK_LDG (CK_KP + 4)   /* gam row stride (floats), output kernel */
#define CK1_LDG (CK1_KP + 4) /* gam row stride (floats), block-state kernel */
#define CK_NBUF 1 /* single tiles: 2 blocks an SM for K <= 128 */

/* Block length: keep in step with blocklen_() in gen/stage_chunk.c. */
#define CK_FUSED_MIN 256        /* programs of one block per sequence that suffice */
#define CK_TARGET_PROGRAMS 1024 /* else: blocks of about this many programs        */
#define CK_MIN_M 8
#define CK_MAX_M 64

__device__ __forceinline__ long long ck_blocklen(long long NC, int N, int H) {
#ifdef FLA_CHUNK_M
  (void)NC, (void)N, (void)H;
  return FLA_CHUNK_M;
#else
  const long long NV = CK_NV;
  if (NC <= 0) return 1;
  if (N >= 1 && NC % N == 0 && (long long)N * H * NV >= CK_FUSED_MIN) return NC / N;
  long long m = NC * H * NV / CK_TARGET_PROGRAMS;
  if (m < CK_MIN_M) m = CK_MIN_M;
  if (m > CK_MAX_M) m = CK_MAX_M;
  return m;
#endif
}

//@include "chunk_common.cuh"
/* ---------------------------------------------------------- tile loads */

/* rows x COLS bf16 from global (row stride ld elements) into smem (row stride
** LDS); rows >= nrows and columns >= ncols read 0. vec: 16-byte cp.async
** (ncols, ld and the base a multiple of 8 elements / 16 bytes), else plain. */
template <int COLS, int LDS, int NTH>
__device__ __forceinline__ void ck_load_tile(unsigned short *s, const unsigned short *g, long long ld,
                                             int nrows, int ncols, int vec, int tid) {
  if (vec) {
    const int P = COLS / 8;
#pragma unroll 4
    for (int p = tid; p < CK_BT * P; p += NTH) {
      int r = p / P, c = (p % P) * 8;
      int ok = r < nrows && c < ncols;
      ck_cp16(ck_smem(s + r * LDS + c), ok ? (const void *)(g + r * ld + c) : (const void *)g, ok);
    }
  } else {
    for (int p = tid; p < CK_BT * COLS; p += NTH) {
      int r = p / COLS, c = p % COLS;
      s[r * LDS + c] = (r < nrows && c < ncols) ? g[r * ld + c] : (unsigned short)0;
    }
  }
}

/* ---------------------------------------------------- state in registers */

/* Thread (warp w, lane l = 4g + q) holds S[key][val] for
**   key = KW w + 16 mt + g (+8 for elements 2, 3),
**   val = 8 j + 2 q (+1 for elements 1, 3)      (val relative to the slice). */

template <int MT, int NT>
__device__ __forceinline__ void ck_state_zero(float (&S)[MT][NT][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) S[mt][j][e] = 0.0f;
}

/* S = src[key * FLA_V + v0 + val] (src: one head's K x V f32 matrix; NULL: 0). */
template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_state_load(float (&S)[MT][NT][4], const float *src, int v0,
                                              int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = KW * w + 16 * mt + g + (e >> 1) * 8;
        int col = v0 + 8 * j + 2 * q + (e & 1);
        S[mt][j][e] = (src && key < FLA_K && col < FLA_V) ? src[(long long)key * FLA_V + col] : 0.0f;
      }
}

template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_state_store(const float (&S)[MT][NT][4], float *dst, int v0,
                                               int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = KW * w + 16 * mt + g + (e >> 1) * 8;
        int col = v0 + 8 * j + 2 * q + (e & 1);
        if (key < FLA_K && col < FLA_V) dst[(long long)key * FLA_V + col] = S[mt][j][e];
      }
}

/* ------------------------------------------------------ gates and keys */

/* gam[r][d] = sum_{r' <= r} g[r'][d] * log2 e over the chunk's 64 rows, from
** the bf16 tile Gs (rows past the chunk's end and columns past K read 0, so
** gam stays at its last value there). HGRN2: Ks[r][d] = bf16(1 - e^g[r][d])
** (0 where g is 0). One thread a column. */
template <int NTH, int KP, int LDQ, int LDG>
__device__ __forceinline__ void ck_cumsum(float *gam, const unsigned short *Gs, unsigned short *Ks,
                                          int tid) {
#if !FLA_KEY_FROM_DECAY
  (void)Ks;
#endif
  for (int c = tid; c < KP; c += NTH) {
    float s = 0.0f;
#pragma unroll 16
    for (int r = 0; r < CK_BT; r++) {
      const float gv = ck_bf2f(Gs[r * LDQ + c]);
      s += gv * CK_LOG2E;
      gam[r * LDG + c] = s;
#if FLA_KEY_FROM_DECAY
      Ks[r * LDQ + c] = (unsigned short)(ck_pack(-expm1f(gv), 0.0f) & 0xffffu);
#endif
    }
  }
}

/* The same straight from global memory (the output kernel keeps no G tile,
** so that two of its blocks fit an SM): g rows t0.. with row stride ld, rows
** >= nrows and columns >= K read 0. Consecutive threads read consecutive
** columns of a row. */
template <int NTH, int KP, int LDQ, int LDG>
__device__ __forceinline__ void ck_cumsum_global(float *gam, const unsigned short *gsrc, long long ld,
                                                 int nrows, unsigned short *Ks, int tid) {
#if !FLA_KEY_FROM_DECAY
  (void)Ks;
#endif
  for (int c = tid; c < KP; c += NTH) {
    float s = 0.0f;
#pragma unroll 16
    for (int r = 0; r < CK_BT; r++) {
      const float gv = (r < nrows && c < FLA_K) ? ck_bf2f(gsrc[r * ld + c]) : 0.0f;
      s += gv * CK_LOG2E;
      gam[r * LDG + c] = s;
#if FLA_KEY_FROM_DECAY
      Ks[r * LDQ + c] = (unsigned short)(ck_pack(-expm1f(gv), 0.0f) & 0xffffu);
#endif
    }
  }
}

/* S = diag(2^gL) S + (K .* 2^(gL - gam))^T V over the chunk's 64 tokens
** (gL = gam row rows-1, per key). Kd^T is the A operand (m = key, k = token)
** read transposed from Ks[token][key]; V the B operand read transposed from
** Vs[token][val]. Lane (g, q) of warp w holds, of ka[mt]: [0] key kA tokens
** t, t+1; [1] key kA+8 tokens t, t+1; [2] key kA, t+8, t+9; [3] kA+8, t+8, t+9
** (kA = KW w + 16 mt + g, t = 16 kk + 2 q). */
template <int KW, int MT, int NT, int LDQ, int LDV, int LDG>
__device__ __forceinline__ void ck_state_update(float (&S)[MT][NT][4], const unsigned short *Ks,
                                                const unsigned short *Vs, const float *gam,
                                                int rows, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
  const float *gL = gam + (rows - 1) * LDG;
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    const int kA = KW * w + 16 * mt + g;
    const float eA = exp2f(gL[kA]), eB = exp2f(gL[kA + 8]);
#pragma unroll
    for (int j = 0; j < NT; j++) {
      S[mt][j][0] *= eA, S[mt][j][1] *= eA;
      S[mt][j][2] *= eB, S[mt][j][3] *= eB;
    }
  }
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    unsigned ka[MT][4];
    const int t = 16 * kk + 2 * q;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      int row = 16 * kk + (lane >> 4) * 8 + (lane & 7);
      int col = KW * w + 16 * mt + ((lane >> 3) & 1) * 8;
      ck_ldm4t(ka[mt], ck_smem(Ks + row * LDQ + col));
      const int kA = KW * w + 16 * mt + g, kB = kA + 8;
      const float LA = gL[kA], LB = gL[kB];
      const float *g0 = gam + t * LDG, *g1 = g0 + LDG, *g8 = g0 + 8 * LDG, *g9 = g0 + 9 * LDG;
      ka[mt][0] = ck_scale2(ka[mt][0], exp2f(LA - g0[kA]), exp2f(LA - g1[kA]));
      ka[mt][1] = ck_scale2(ka[mt][1], exp2f(LB - g0[kB]), exp2f(LB - g1[kB]));
      ka[mt][2] = ck_scale2(ka[mt][2], exp2f(LA - g8[kA]), exp2f(LA - g9[kA]));
      ka[mt][3] = ck_scale2(ka[mt][3], exp2f(LB - g8[kB]), exp2f(LB - g9[kB]));
    }
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      unsigned vb[4];
      int row = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
      int col = 16 * np + (lane >> 4) * 8;
      ck_ldm4t(vb, ck_smem(Vs + row * LDV + col));
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        ck_mma(S[mt][2 * np], ka[mt], vb[0], vb[1]);
        ck_mma(S[mt][2 * np + 1], ka[mt], vb[2], vb[3]);
      }
    }
  }
}

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

/* ------------------------------------------------ kernel 1: block states */

/* Shared memory: Ks[2][64][LDQ1], Gs[2][64][LDQ1], Vs[2][64][LDV1] bf16,
** gam[64][LDG1] f32 (CK1_ geometry). */
extern "C" __global__ void __launch_bounds__(CK1_NTH) fla_chunk_gk_fwd_h(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Ks = (unsigned short *)ck_sm;
  unsigned short *Gs = Ks + 2 * CK_BT * CK1_LDQ;
  unsigned short *Vs = Gs + 2 * CK_BT * CK1_LDQ;
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
  const unsigned short *gp = (const unsigned short *)a.g;
  const unsigned short *vp = (const unsigned short *)a.v;
  const int veck = (FLA_K % 8 == 0) && (((a.k | a.g) & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);

  float S[CK1_MT][CK1_NT][4];
  ck_state_zero(S);
  float dsum = 0.0f; /* thread tid < K: the block's log2 decay of key tid */

  ck_chunk x;
  ck_chunk_at(a, start, x);
#if !FLA_KEY_FROM_DECAY
  ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(Ks, kp + (x.t0 * H + p.h) * FLA_K, H * FLA_K, x.rows, FLA_K, veck, tid);
#endif
  ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(Gs, gp + (x.t0 * H + p.h) * FLA_K, H * FLA_K, x.rows, FLA_K, veck, tid);
  ck_load_tile<CK1_BV, CK1_LDV, CK1_NTH>(Vs, vp + (x.t0 * H + p.h) * FLA_V + p.v0, H * FLA_V, x.rows, p.vcols,
                                         vecv, tid);
  ck_commit();

  for (long long c = start; c < p.c1; c++) {
    const int buf = (int)((c - start) & 1);
    const int rows = x.rows;
    ck_chunk xn = x;
    if (c + 1 < p.c1) {
      ck_chunk_next(a, c, xn);
      const long long ro = xn.t0 * H + p.h;
#if !FLA_KEY_FROM_DECAY
      ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(Ks + (buf ^ 1) * CK_BT * CK1_LDQ, kp + ro * FLA_K, H * FLA_K,
                                             xn.rows, FLA_K, veck, tid);
#endif
      ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(Gs + (buf ^ 1) * CK_BT * CK1_LDQ, gp + ro * FLA_K, H * FLA_K,
                                             xn.rows, FLA_K, veck, tid);
      ck_load_tile<CK1_BV, CK1_LDV, CK1_NTH>(Vs + (buf ^ 1) * CK_BT * CK1_LDV, vp + ro * FLA_V + p.v0,
                                             H * FLA_V, xn.rows, p.vcols, vecv, tid);
      ck_commit();
      ck_wait_one();
    } else {
      ck_wait_all();
    }
    __syncthreads();
    unsigned short *Kb = Ks + buf * CK_BT * CK1_LDQ;
    ck_cumsum<CK1_NTH, CK1_KP, CK1_LDQ, CK1_LDG>(gam, Gs + buf * CK_BT * CK1_LDQ, Kb, tid);
    __syncthreads();
    if (tid < CK1_KP) dsum += gam[(rows - 1) * CK1_LDG + tid];
    ck_state_update<CK1_KW, CK1_MT, CK1_NT, CK1_LDQ, CK1_LDV, CK1_LDG>(S, Kb, Vs + buf * CK_BT * CK1_LDV,
                                                                      gam, rows, w, lane);
    __syncthreads();
    x = xn;
  }
  const long long KV = (long long)FLA_K * FLA_V;
  float *P = (float *)a.ws0 + (p.b * H + p.h) * KV;
  ck_state_store<CK1_KW>(S, P, p.v0, w, lane);
  if (p.vt == 0 && tid < FLA_K) ((float *)a.ws1)[(p.b * H + p.h) * FLA_K + tid] = dsum;
}

/* ------------------------------------------------- kernel 2: block scan */

#define CK_SCAN_THREADS 256
#define CK_SCAN_UNROLL 8

extern "C" __global__ void __launch_bounds__(CK_SCAN_THREADS) fla_chunk_gk_fwd_scan(fla_kernel_args a) {
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
          dv[u] = D[(b * H + h) * FLA_K + kv / FLA_V];
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

/* One chunk for warp w (rows I = 16w .. 16w+15; lane (g, q) holds rows
** rA = 16w + g and rB = rA + 8):
**   Oacc = (Q_I .* 2^gam_I) S0;
**   A_IJ, J < I: (Q_I .* 2^(gam_I - r)) (K_J .* 2^(r - gam_J))^T, r = gam row 16w;
**   A_II: fp32 loops over the keys;
**   O = scale (Oacc + A V); store; then the state update.
** The A-operand registers of Q (ldmatrix of Q_I, keys c = 16 kk + 2q):
**   [0] rA, c, c+1   [1] rB, c, c+1   [2] rA, c+8, c+9   [3] rB, c+8, c+9;
** of K_J (B operand, tokens 16J + g): [0] tok g keys c, c+1; [1] tok g keys
** c+8, c+9; [2] tok g+8 keys c, c+1; [3] tok g+8 keys c+8, c+9. */
__device__ __forceinline__ void ck_o_chunk(float (&S)[CK_MT][CK_NT][4], const unsigned short *Qb,
                                           const unsigned short *Kb, const unsigned short *Vb,
                                           const unsigned short *Ss, const float *gam, int rows,
                                           int w, int lane, unsigned short *orow, long long ld,
                                           int vcols, float scale, const unsigned short *bon) {
  const int g = lane >> 2, q = lane & 3;
  const int r0 = 16 * w;
  const int rA = r0 + g, rB = r0 + g + 8;
  /* the queries' log gates: gam (read after) or gx = gam one row up (read before) */
  const float *gamQ = gam - FLA_READ_BEFORE * CK_LDG;
  const float *gamA = gamQ + rA * CK_LDG, *gamB = gamQ + rB * CK_LDG, *gamR = gamQ + r0 * CK_LDG;
#if !FLA_HAS_BONUS
  (void)bon;
#endif

  float acc[CK_BT / 8][4], oacc[CK_NT][4];
#pragma unroll
  for (int j = 0; j < CK_BT / 8; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
#pragma unroll
  for (int j = 0; j < CK_NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) oacc[j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < CK_KP / 16; kk++) {
    const int c = 16 * kk + 2 * q;
    unsigned qa[4];
    ck_ldm4(qa, ck_smem(Qb + (r0 + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
    const float R0 = gamR[c], R1 = gamR[c + 1], R8 = gamR[c + 8], R9 = gamR[c + 9];
    const float A0 = gamA[c], A1 = gamA[c + 1], A8 = gamA[c + 8], A9 = gamA[c + 9];
    const float B0 = gamB[c], B1 = gamB[c + 1], B8 = gamB[c + 8], B9 = gamB[c + 9];
    unsigned qs[4], qr[4];
    qs[0] = ck_scale2(qa[0], exp2f(A0), exp2f(A1));
    qs[1] = ck_scale2(qa[1], exp2f(B0), exp2f(B1));
    qs[2] = ck_scale2(qa[2], exp2f(A8), exp2f(A9));
    qs[3] = ck_scale2(qa[3], exp2f(B8), exp2f(B9));
    qr[0] = ck_scale2(qa[0], exp2f(A0 - R0), exp2f(A1 - R1));
    qr[1] = ck_scale2(qa[1], exp2f(B0 - R0), exp2f(B1 - R1));
    qr[2] = ck_scale2(qa[2], exp2f(A8 - R8), exp2f(A9 - R9));
    qr[3] = ck_scale2(qa[3], exp2f(B8 - R8), exp2f(B9 - R9));
#pragma unroll
    for (int np = 0; np < CK_BT / 16; np++) {
      if (np < w) {
        unsigned kb[4];
        ck_ldm4(kb, ck_smem(Kb + (16 * np + (lane >> 4) * 8 + (lane & 7)) * CK_LDQ + kk * 16 +
                            ((lane >> 3) & 1) * 8));
        const float *gt = gam + (16 * np + g) * CK_LDG, *gu = gt + 8 * CK_LDG;
        kb[0] = ck_scale2(kb[0], exp2f(R0 - gt[c]), exp2f(R1 - gt[c + 1]));
        kb[1] = ck_scale2(kb[1], exp2f(R8 - gt[c + 8]), exp2f(R9 - gt[c + 9]));
        kb[2] = ck_scale2(kb[2], exp2f(R0 - gu[c]), exp2f(R1 - gu[c + 1]));
        kb[3] = ck_scale2(kb[3], exp2f(R8 - gu[c + 8]), exp2f(R9 - gu[c + 9]));
        ck_mma(acc[2 * np], qr, kb[0], kb[1]);
        ck_mma(acc[2 * np + 1], qr, kb[2], kb[3]);
      }
    }
#pragma unroll
    for (int np = 0; np < CK_NT / 2; np++) {
      unsigned sb[4];
      ck_ldm4t(sb, ck_smem(Ss + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                           16 * np + (lane >> 4) * 8));
      ck_mma(oacc[2 * np], qs, sb[0], sb[1]);
      ck_mma(oacc[2 * np + 1], qs, sb[2], sb[3]);
    }
  }

  /* the diagonal block A_II in fp32: lane entries (rA | rB, 16w + 8hf + 2q + {0,1}) */
  {
    const int cb = r0 + 2 * q;
    const int c0 = cb, c1 = cb + 1, c8 = cb + 8, c9 = cb + 9;
    const unsigned short *qA = Qb + rA * CK_LDQ, *qB = Qb + rB * CK_LDQ;
    const unsigned short *k0 = Kb + c0 * CK_LDQ, *k1 = Kb + c1 * CK_LDQ;
    const unsigned short *k8 = Kb + c8 * CK_LDQ, *k9 = Kb + c9 * CK_LDQ;
    const float *h0 = gam + c0 * CK_LDG, *h1 = gam + c1 * CK_LDG;
    const float *h8 = gam + c8 * CK_LDG, *h9 = gam + c9 * CK_LDG;
    /* entries: [0] (rA,c0) [1] (rA,c1) [2] (rB,c0) [3] (rB,c1) [4] (rA,c8) [5] (rA,c9)
    **          [6] (rB,c8) [7] (rB,c9); mask j <= i (rows past the end are not stored) */
#if FLA_READ_BEFORE
    const bool m0 = c0 < rA, m1 = c1 < rA, m4 = c8 < rA, m5 = c9 < rA;
    const bool m2 = c0 < rB, m3 = c1 < rB, m6 = c8 < rB, m7 = c9 < rB;
#else
    const bool m0 = c0 <= rA, m1 = c1 <= rA, m4 = c8 <= rA, m5 = c9 <= rA;
    const bool m2 = c0 <= rB, m3 = c1 <= rB, m6 = c8 <= rB, m7 = c9 <= rB;
#endif
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    /* two keys a step: columns past K are 0 in Q and K (and gam there is 0) */
#pragma unroll 2
    for (int d = 0; d < ((FLA_K + 1) & ~1); d += 2) {
      float xa[2], xb[2], y0[2], y1[2], y8[2], y9[2];
      ck_unpack(*(const unsigned *)(qA + d), xa), ck_unpack(*(const unsigned *)(qB + d), xb);
      ck_unpack(*(const unsigned *)(k0 + d), y0), ck_unpack(*(const unsigned *)(k1 + d), y1);
      ck_unpack(*(const unsigned *)(k8 + d), y8), ck_unpack(*(const unsigned *)(k9 + d), y9);
      const float2 ga = *(const float2 *)(gamA + d), gb = *(const float2 *)(gamB + d);
      const float2 e0 = *(const float2 *)(h0 + d), e1 = *(const float2 *)(h1 + d);
      const float2 e8 = *(const float2 *)(h8 + d), e9 = *(const float2 *)(h9 + d);
      if (m0) s[0] += xa[0] * y0[0] * exp2f(ga.x - e0.x) + xa[1] * y0[1] * exp2f(ga.y - e0.y);
      if (m1) s[1] += xa[0] * y1[0] * exp2f(ga.x - e1.x) + xa[1] * y1[1] * exp2f(ga.y - e1.y);
      if (m2) s[2] += xb[0] * y0[0] * exp2f(gb.x - e0.x) + xb[1] * y0[1] * exp2f(gb.y - e0.y);
      if (m3) s[3] += xb[0] * y1[0] * exp2f(gb.x - e1.x) + xb[1] * y1[1] * exp2f(gb.y - e1.y);
      if (m4) s[4] += xa[0] * y8[0] * exp2f(ga.x - e8.x) + xa[1] * y8[1] * exp2f(ga.y - e8.y);
      if (m5) s[5] += xa[0] * y9[0] * exp2f(ga.x - e9.x) + xa[1] * y9[1] * exp2f(ga.y - e9.y);
      if (m6) s[6] += xb[0] * y8[0] * exp2f(gb.x - e8.x) + xb[1] * y8[1] * exp2f(gb.y - e8.y);
      if (m7) s[7] += xb[0] * y9[0] * exp2f(gb.x - e9.x) + xb[1] * y9[1] * exp2f(gb.y - e9.y);
#if FLA_HAS_BONUS
      /* scalar loads: bonus + h*K is 4-byte aligned only for even K */
      const float u[2] = {ck_bf2f(bon[d]), d + 1 < FLA_K ? ck_bf2f(bon[d + 1]) : 0.0f};
      if (c0 == rA) s[0] += xa[0] * y0[0] * u[0] + xa[1] * y0[1] * u[1];
      if (c1 == rA) s[1] += xa[0] * y1[0] * u[0] + xa[1] * y1[1] * u[1];
      if (c0 == rB) s[2] += xb[0] * y0[0] * u[0] + xb[1] * y0[1] * u[1];
      if (c1 == rB) s[3] += xb[0] * y1[0] * u[0] + xb[1] * y1[1] * u[1];
      if (c8 == rA) s[4] += xa[0] * y8[0] * u[0] + xa[1] * y8[1] * u[1];
      if (c9 == rA) s[5] += xa[0] * y9[0] * u[0] + xa[1] * y9[1] * u[1];
      if (c8 == rB) s[6] += xb[0] * y8[0] * u[0] + xb[1] * y8[1] * u[1];
      if (c9 == rB) s[7] += xb[0] * y9[0] * u[0] + xb[1] * y9[1] * u[1];
#endif
    }
#pragma unroll
    for (int np = 0; np < CK_BT / 16; np++)
      if (np == w) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          acc[2 * np][e] = s[e];
          acc[2 * np + 1][e] = s[4 + e];
        }
      }
  }

  /* mask, then O += A V over the warp's causal k-steps */
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    if (kk <= w) {
      unsigned af[4];
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int j = 2 * kk + hf;
        const int cc = 8 * j + 2 * q;
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = (e < 2) ? rA : rB, col = cc + (e & 1);
          v[e] = (col + (FLA_READ_BEFORE && !FLA_HAS_BONUS) <= r && r < rows) ? acc[j][e] : 0.0f;
        }
        af[2 * hf] = ck_pack(v[0], v[1]);
        af[2 * hf + 1] = ck_pack(v[2], v[3]);
      }
      unsigned afr[4] = {af[0], af[1], af[2], af[3]};
#pragma unroll
      for (int np = 0; np < CK_NT / 2; np++) {
        unsigned vb[4];
        ck_ldm4t(vb, ck_smem(Vb + (16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                             16 * np + (lane >> 4) * 8));
        ck_mma(oacc[2 * np], afr, vb[0], vb[1]);
        ck_mma(oacc[2 * np + 1], afr, vb[2], vb[3]);
      }
    }
  }

  /* store O */
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

  /* the state leaving the chunk */
  ck_state_update<CK_KW, CK_MT, CK_NT, CK_LDQ, CK_LDV, CK_LDG>(S, Kb, Vb, gam, rows, w, lane);
}

/* Shared memory: Qs, Ks [NBUF][64][LDQ], Vs[NBUF][64][LDV], Ss[KP][LDV] bf16,
** gam[1 + 64][LDG] f32 (row -1 zero). */
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_chunk_gk_fwd_o(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Ks = Qs + CK_NBUF * CK_BT * CK_LDQ;
  unsigned short *Vs = Ks + CK_NBUF * CK_BT * CK_LDQ;
  unsigned short *Ss = Vs + CK_NBUF * CK_BT * CK_LDV;
  float *gam = (float *)(Ss + CK_KP * CK_LDV) + CK_LDG; /* row -1: zeros */
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  for (int c = tid; c < CK_LDG; c += CK_NTH) gam[c - CK_LDG] = 0.0f;
  const ck_prog p = ck_prog_at<CK_NV, CK_BV>(a);
  if (p.c0 >= a.num_chunks) return;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  const unsigned short *qp = (const unsigned short *)a.q;
  const unsigned short *kp = (const unsigned short *)a.k;
  const unsigned short *gp = (const unsigned short *)a.g;
  const unsigned short *vp = (const unsigned short *)a.v;
  unsigned short *op = (unsigned short *)a.o;
  const int vecq = (FLA_K % 8 == 0) && (((a.q | a.k | a.g) & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  const float scale = a.scale;
  const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;
  const unsigned short *bon =
      FLA_HAS_BONUS ? (const unsigned short *)a.bonus + (long long)p.h * FLA_K : (const unsigned short *)0;
  (void)kp;

  ck_chunk x;
  ck_chunk_at(a, p.c0, x);

  float S[CK_MT][CK_NT][4];
  if (x.first)
    ck_state_load<CK_KW>(S, h0 ? h0 + ((long long)x.n * H + p.h) * KV : h0, p.v0, w, lane);
  else
    ck_state_load<CK_KW>(S, (const float *)a.ws0 + ((p.b - 1) * H + p.h) * KV, p.v0, w, lane);

#define CK_LOAD_CHUNK(b_, xx_)                                                                        \
  do {                                                                                                \
    const long long ro_ = (xx_).t0 * H + p.h;                                                         \
    ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Qs + (b_) * CK_BT * CK_LDQ, qp + ro_ * FLA_K, H * FLA_K,      \
                                        (xx_).rows, FLA_K, vecq, tid);                                \
    if (!FLA_KEY_FROM_DECAY)                                                                          \
      ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Ks + (b_) * CK_BT * CK_LDQ, kp + ro_ * FLA_K, H * FLA_K,    \
                                          (xx_).rows, FLA_K, vecq, tid);                              \
    ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Vs + (b_) * CK_BT * CK_LDV, vp + ro_ * FLA_V + p.v0,          \
                                        H * FLA_V, (xx_).rows, p.vcols, vecv, tid);                   \
    ck_commit();                                                                                      \
  } while (0)

  CK_LOAD_CHUNK(0, x);

  for (long long c = p.c0; c < p.c1; c++) {
    const int buf = CK_NBUF == 2 ? (int)((c - p.c0) & 1) : 0;
    const int rows = x.rows;
    ck_chunk xn = x;
    if (c + 1 < p.c1) ck_chunk_next(a, c, xn);
    if (CK_NBUF == 2 && c + 1 < p.c1) {
      CK_LOAD_CHUNK(buf ^ 1, xn);
      ck_wait_one();
    } else {
      ck_wait_all();
    }
    /* a sequence starting inside the block: its initial state */
    if (x.first && c > p.c0)
      ck_state_load<CK_KW>(S, h0 ? h0 + ((long long)x.n * H + p.h) * KV : h0, p.v0, w, lane);
    /* S0 as bf16, the B operand of Q S0 */
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
      for (int j = 0; j < CK_NT; j++) {
        int key = CK_KW * w + 16 * mt + g, col = 8 * j + 2 * q;
        *(unsigned *)(Ss + key * CK_LDV + col) = ck_pack(S[mt][j][0], S[mt][j][1]);
        *(unsigned *)(Ss + (key + 8) * CK_LDV + col) = ck_pack(S[mt][j][2], S[mt][j][3]);
      }
    __syncthreads();
    const unsigned short *Qb = Qs + buf * CK_BT * CK_LDQ;
    unsigned short *Kb = Ks + buf * CK_BT * CK_LDQ;
    const unsigned short *Vb = Vs + buf * CK_BT * CK_LDV;
    ck_cumsum_global<CK_NTH, CK_KP, CK_LDQ, CK_LDG>(gam, gp + (x.t0 * H + p.h) * FLA_K, H * FLA_K, rows,
                                                    Kb, tid);
    __syncthreads();

    unsigned short *orow = op + (x.t0 * H + p.h) * FLA_V + p.v0;
    ck_o_chunk(S, Qb, Kb, Vb, Ss, gam, rows, w, lane, orow, H * FLA_V, p.vcols, scale, bon);
#if FLA_STORE_HT
    if (x.last)
      ck_state_store<CK_KW>(S, (float *)a.ht + ((long long)x.n * H + p.h) * KV, p.v0, w, lane);
#endif
    __syncthreads();
    if (CK_NBUF == 1 && c + 1 < p.c1) CK_LOAD_CHUNK(0, xn);
    x = xn;
  }
#undef CK_LOAD_CHUNK
}
