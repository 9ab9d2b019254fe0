/*
** chunk_gk_fwd.cuh -- the chunkwise-parallel forward of per-key gates (GLA,
** HGRN2, RWKV-6) on tensor cores (stage FLA_STAGE_CHUNK_GK_FWD,
** gen/stage_chunk_gk.c).
**
** Keys handled: FLA_DECAY 3 (per-key g [tok,H,K]), FLA_DELTA 0, FLA_READ_BEFORE
** 0 or 1 (1 with FLA_HAS_BONUS: RWKV-6), FLA_KEY_FROM_DECAY 0 or 1 (k = 1 - e^g
** computed on load, HGRN2); FLA_IN_BF16 1 (q, k, v, g, o bf16; h0, ht f32).
** Chunks of FLA_BT = 64 tokens; the key dim is never tiled.
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
** K .* 2^(gam_L - gam), A and the states entering the chunks are rounded to
** bf16 as mma operands (as fla stores h and A for its output kernel); the
** running state and the gate sums stay fp32.
**
** The diagonal block's lower-left quadrant (rows 8..15, columns 0..7 of I)
** is an mma too, with r the gam row 16w+8 (gx: 16w+7), which lies between
** its rows and columns; only the two 8 x 8 triangles are fp32 loops.
**
** The work is split as fla's chunk_gla forward splits it: everything that
** needs the gate cumsum is done once per (chunk, head) in parallel; the states
** entering every chunk come from a lean serial pass over the chunks (per
** sequence, or per block of M chunks with a fold of the earlier blocks); the
** output is parallel over (chunk, head, value tile). Four kernels:
**   fla_chunk_gk_fwd_a  (NC, H): gam, then A of the chunk (masked, bonus on
**       the diagonal) -> AW [NC,H,64,64] bf16, Q .* 2^gam -> QG [NC,H,64,K]
**       bf16, K .* 2^(gam_L - gam) -> KD [NC,H,64,K] bf16, gam_L -> GL [NC,H,K] f32.
**   fla_chunk_gk_fwd_h  (NB*NV1, H): for each block of M chunks whose last
**       sequence continues into the next, that sequence's state after the
**       block from a zero state, P_b -> ws0 [NB,H,K,V] f32, and its log2
**       decay per key over the block, D_b -> D [NB,H,K] f32. Nothing to do
**       when blocks are whole sequences (M = chunks a sequence).
**   fla_chunk_gk_fwd_hs (NB*NV1, H): the state entering block b (h0 or 0 at a
**       sequence start, else the fold E = 2^D_b' E + P_b' over the earlier
**       blocks b' of the sequence), then the chunks of b in order: the state
**       entering each chunk -> HS [NC,H,K,V] bf16, S = diag(2^gam_L) S + KD^T V;
**       ht where a sequence ends (and ht = h0 or 0 for sequences with no token).
**   fla_chunk_gk_fwd_o  (NC*NV, H): O = scale [QG S0 + A V] for one value
**       tile (S0 from HS, A from AW).
** Workspaces: ws0 = P; ws1 = HS, AW, QG, KD, GL, D (offsets: ck_ws_*).
** Shared memory per kernel: gen/stage_chunk_gk.c (smem_*_).
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
#define CK_KW ((FLA_K + 16 * CK_NW - 1) / (16 * CK_NW) * 16) /* keys a warp owns (K padded) */
#define CK_KP (CK_KW * CK_NW)                                /* K padded              */
#define CK_BV FLA_BV                                         /* output kernel's value tile */
#define CK_NT (CK_BV / 8)                                    /* n-tiles of the tile   */
#define CK_NV ((FLA_V + CK_BV - 1) / CK_BV)
#define CK_LDQ (CK_KP + 8) /* smem row strides (elements): +16 bytes, no bank conflicts */
#define CK_LDV (CK_BV + 8)
#define CK_LDA (CK_BT + 8)
#define CK_A_NTH (2 * CK_NTH) /* the A kernel: two warps a row block, one a key half */

/* The state kernels (h, hs) have their own geometry: 8 warps (4 when K <= 64),
** each owning KW1 keys of the state, and value tiles as wide as 64 state
** registers a thread allow (128 for K <= 128), so that K is read once per
** block. Keep in step with gen/stage_chunk_common.h (fla_chunk_h_geom_of). */
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
#define CK1_NS 3 /* chunks in the state passes' shared-memory ring */
#define CK_LOG2E 1.4426950408889634f
#define CK_LDG (CK_KP + 4)   /* gam row stride (floats), A kernel */
/* Blocks an SM the launch bounds ask for: past K = 128 shared memory holds
** the A and state kernels to one block an SM anyway, so their registers are
** not capped (K = 256 spilled at the caps of K <= 128). */
#define CK_A_MINB (FLA_K > 128 ? 1 : 3)
#define CK1_MINB (FLA_K > 128 ? 1 : 2)

/* Block length M of the state kernels: keep in step with gk_blocklen_() in
** gen/stage_chunk_gk.c. Whole sequences when there are enough (sequence,
** head, value tile) programs for the serial pass to fill the GPU; else blocks
** giving about CK_TARGET_PROGRAMS programs (one wave: the h kernels hold one
** block an SM), each pass then costing about M chunks. */
#define CK_FUSED_MIN 64
#define CK_TARGET_PROGRAMS 128
#define CK_MIN_M 8

__device__ __forceinline__ long long ck_blocklen(long long NC, int N, int H) {
#ifdef FLA_CHUNK_M
  (void)NC, (void)N, (void)H;
  return FLA_CHUNK_M;
#else
  const long long NV = CK1_NV;
  if (NC <= 0) return 1;
  if (N >= 1 && NC % N == 0 && (long long)N * H * NV >= CK_FUSED_MIN) return NC / N;
  long long m = (NC * H * NV + CK_TARGET_PROGRAMS - 1) / CK_TARGET_PROGRAMS;
  return m < CK_MIN_M ? CK_MIN_M : m;
#endif
}

/* Workspace ws1 (elements of 2 bytes, each array padded to 8 of them): HS
** [NC,H,K,V] bf16, AW [NC,H,64,64] bf16, QG and KD [NC,H,64,K] bf16, then GL
** [NC,H,K] and D [NB,H,K] f32. Keep in step with workspace_() in
** gen/stage_chunk_gk.c. */
__device__ __forceinline__ long long ck_pad8(long long n) { return (n + 7) / 8 * 8; }
__device__ __forceinline__ unsigned short *ck_ws_hs(const fla_kernel_args &a) {
  return (unsigned short *)a.ws1;
}
__device__ __forceinline__ unsigned short *ck_ws_aw(const fla_kernel_args &a) {
  return ck_ws_hs(a) + ck_pad8((long long)a.num_chunks * a.H * FLA_K * FLA_V);
}
__device__ __forceinline__ unsigned short *ck_ws_qg(const fla_kernel_args &a) {
  return ck_ws_aw(a) + (long long)a.num_chunks * a.H * CK_BT * CK_BT;
}
__device__ __forceinline__ unsigned short *ck_ws_kd(const fla_kernel_args &a) {
  return ck_ws_qg(a) + ck_pad8((long long)a.num_chunks * a.H * CK_BT * FLA_K);
}
__device__ __forceinline__ float *ck_ws_gl(const fla_kernel_args &a) {
  return (float *)(ck_ws_kd(a) + ck_pad8((long long)a.num_chunks * a.H * CK_BT * FLA_K));
}
__device__ __forceinline__ float *ck_ws_d(const fla_kernel_args &a) {
  return ck_ws_gl(a) + ck_pad8((long long)a.num_chunks * a.H * FLA_K);
}

//@include "chunk_common.cuh"

/* 2^x for x <= 0 (MUFU; results below 2^-126 flush to 0). */
__device__ __forceinline__ float ck_ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

//@include "chunk_tiles.cuh"

/* n floats from global into smem s[0..N) (zeros past n): 16-byte cp.async
** when n is a multiple of 4 and g 16-byte aligned, else plain loads. */
template <int N, int NTH>
__device__ __forceinline__ void ck_load_row_f32(float *s, const float *g, int n, int tid) {
  if (n % 4 == 0 && ((unsigned long long)g & 15) == 0) {
    for (int p = tid; p < N / 4; p += NTH)
      ck_cp16(ck_smem(s + 4 * p), 4 * p < n ? (const void *)(g + 4 * p) : (const void *)g, 4 * p < n);
  } else {
    for (int p = tid; p < N; p += NTH) s[p] = p < n ? g[p] : 0.0f;
  }
}

/* ------------------------------------------------------ gates and keys */

/* gam[r][d] = sum_{r' <= r} g[r'][d] * log2 e over the chunk's 64 rows, g
** straight from global memory: rows t0.. with row stride ld, rows >= nrows
** and columns >= ncols (default K) read 0 (so gam stays at its last value
** past the end).
** HGRN2: Ks[r][d] = bf16(1 - e^g[r][d]) (0 where g is 0). One thread a
** column; consecutive threads read consecutive columns of a row. */
template <int NTH, int KP, int LDQ, int LDG>
__device__ __forceinline__ void ck_cumsum_global(float *gam, const unsigned short *gsrc, long long ld,
                                                 int nrows, unsigned short *Ks, int tid,
                                                 int ncols = FLA_K) {
#if !FLA_KEY_FROM_DECAY
  (void)Ks;
#endif
  /* NTH >= 2 KP: two threads a column, rows 0..31 and 32..63 (the second
  ** half adds the first's total after a barrier); else one thread a column */
  constexpr int SPLIT = NTH >= 2 * KP ? 2 : 1;
  const int part = SPLIT == 2 ? tid / KP : 0;
  for (int c = SPLIT == 2 ? tid % KP : tid; c < KP && part < SPLIT; c += SPLIT == 2 ? KP : NTH) {
    float s = 0.0f;
    /* 32 loads in flight before the first store: gam's stores could alias g
    ** for the compiler, which would otherwise wait out each load in turn */
#pragma unroll
    for (int r0 = part * (CK_BT / SPLIT); r0 < (part + 1) * (CK_BT / SPLIT); r0 += 32) {
      float gv[32];
#pragma unroll
      for (int i = 0; i < 32; i++)
        gv[i] = (r0 + i < nrows && c < ncols) ? ck_bf2f(gsrc[(r0 + i) * ld + c]) : 0.0f;
#pragma unroll
      for (int i = 0; i < 32; i++) {
        s += gv[i] * CK_LOG2E;
        gam[(r0 + i) * LDG + c] = s;
#if FLA_KEY_FROM_DECAY
        Ks[(r0 + i) * LDQ + c] = (unsigned short)(ck_pack(-expm1f(gv[i]), 0.0f) & 0xffffu);
#endif
      }
    }
  }
  if (SPLIT == 2) {
    __syncthreads();
    if (part == 1) {
      const int c = tid % KP;
      const float carry = gam[(CK_BT / 2 - 1) * LDG + c];
#pragma unroll 8
      for (int r = CK_BT / 2; r < CK_BT; r++) gam[r * LDG + c] += carry;
    }
  }
}

/* S = diag(2^gL) S + Kd^T V over one chunk (Kd = K .* 2^(gL - gam): rows past
** the end are 0; gL [KP] f32 in smem, 0 past K). Kd^T is the A operand (m =
** key, k = token) read transposed from Kd[token][key]; V the B operand read
** transposed from Vs[token][val]. */
template <int KW, int MT, int NT, int LDQ, int LDV>
__device__ __forceinline__ void ck_state_update(float (&S)[MT][NT][4], const unsigned short *Kd,
                                                const unsigned short *Vs, const float *gL, int w,
                                                int lane) {
  const int g = lane >> 2;
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    const int kA = KW * w + 16 * mt + g;
    const float eA = ck_ex2(gL[kA]), eB = ck_ex2(gL[kA + 8]);
#pragma unroll
    for (int j = 0; j < NT; j++) {
      S[mt][j][0] *= eA, S[mt][j][1] *= eA;
      S[mt][j][2] *= eB, S[mt][j][3] *= eB;
    }
  }
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    unsigned ka[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      int row = 16 * kk + (lane >> 4) * 8 + (lane & 7);
      int col = KW * w + 16 * mt + ((lane >> 3) & 1) * 8;
      ck_ldm4t(ka[mt], ck_smem(Kd + row * LDQ + col));
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


/* S = 2^D[key] S + P[key][v0 + val] (fragment layout of ck_state_load; P one
** head's K x V f32 block state, D its log2 decay per key). */
template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_state_fold(float (&S)[MT][NT][4], const float *P, const float *D,
                                              int v0, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    const int kA = KW * w + 16 * mt + g, kB = kA + 8;
    const float eA = kA < FLA_K ? ck_ex2(D[kA]) : 0.0f, eB = kB < FLA_K ? ck_ex2(D[kB]) : 0.0f;
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = e < 2 ? kA : kB, col = v0 + 8 * j + 2 * q + (e & 1);
        const float pv = (key < FLA_K && col < FLA_V) ? P[(long long)key * FLA_V + col] : 0.0f;
        S[mt][j][e] = (e < 2 ? eA : eB) * S[mt][j][e] + pv;
      }
  }
}

/* S rounded to bf16 into dst (one head's K x V matrix, columns v0 + val). */
template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_state_store_bf16(const float (&S)[MT][NT][4], unsigned short *dst,
                                                    int v0, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int kA = KW * w + 16 * mt + g, kB = kA + 8, col = v0 + 8 * j + 2 * q;
#if FLA_V % 2 == 0
      if (col < FLA_V) {
        if (kA < FLA_K) *(unsigned *)(dst + kA * FLA_V + col) = ck_pack(S[mt][j][0], S[mt][j][1]);
        if (kB < FLA_K) *(unsigned *)(dst + kB * FLA_V + col) = ck_pack(S[mt][j][2], S[mt][j][3]);
      }
#else
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = e < 2 ? kA : kB, cl = col + (e & 1);
        if (key < FLA_K && cl < FLA_V)
          dst[key * FLA_V + cl] = (unsigned short)(ck_pack(S[mt][j][e], 0.0f) & 0xffffu);
      }
#endif
    }
}

/* ------------------------------------------------ kernel 1: per chunk */

/* acc = rows I = 16w .. 16w+15 of A (unmasked above the diagonal block;
** lane (g, q) holds rows rA = 16w + g and rB = rA + 8, columns 8j + 2q +
** {0, 1} of acc[j]):
**   A_IJ, J < I: (Q_I .* 2^(gq_I - r)) (K_J .* 2^(r - gam_J))^T, r = gq row 16w;
**   A_II rows 8..15 x columns 0..7: the same with r = gq row 16w+8;
**   A_II's two 8 x 8 triangles: fp32 loops over the keys (and the bonus).
** gq = gam (read after) or gx = gam one row up (read before): in every
** product the reference row lies between the row and the column, so both
** exponents are <= 0. The A-operand registers of Q (ldmatrix of Q_I, keys c
** = 16 kk + 2q): [0] rA, c, c+1 [1] rB, c, c+1 [2] rA, c+8, c+9 [3] rB, c+8,
** c+9; of K_J (B operand, tokens 16J + g): [0] tok g keys c, c+1; [1] tok g
** keys c+8, c+9; [2] tok g+8 keys c, c+1; [3] tok g+8 keys c+8, c+9. */
__device__ __forceinline__ void ck_a_rows(float (&acc)[CK_BT / 8][4], const unsigned short *Qb,
                                          const unsigned short *Kb, const float *gam, int w,
                                          int kh, int lane, const unsigned short *bon) {
  const int g = lane >> 2, q = lane & 3;
  /* this warp's half of the keys: k-steps kk0..kk1-1, keys d0..d1-1 */
  const int kk0 = kh * (CK_KP / 32), kk1 = kk0 + CK_KP / 32;
  const int d0 = kh * (CK_KP / 2), dend = d0 + CK_KP / 2 < ((FLA_K + 1) & ~1) ? d0 + CK_KP / 2 : ((FLA_K + 1) & ~1);
  const int r0 = 16 * w;
  const int rA = r0 + g, rB = r0 + g + 8;
  const float *gamQ = gam - FLA_READ_BEFORE * CK_LDG;
  const float *gamA = gamQ + rA * CK_LDG, *gamB = gamQ + rB * CK_LDG;
  const float *gamR = gamQ + r0 * CK_LDG, *gamM = gamQ + (r0 + 8) * CK_LDG;
#if !FLA_HAS_BONUS
  (void)bon;
#endif
#pragma unroll
  for (int j = 0; j < CK_BT / 8; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
  float quad[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 2
  for (int kk = kk0; kk < kk1; kk++) {
    const int c = 16 * kk + 2 * q;
    unsigned qa[4];
    ck_ldm4(qa, ck_smem(Qb + (r0 + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
    const float B0 = gamB[c], B1 = gamB[c + 1], B8 = gamB[c + 8], B9 = gamB[c + 9];
    if (w > 0) {
      const float R0 = gamR[c], R1 = gamR[c + 1], R8 = gamR[c + 8], R9 = gamR[c + 9];
      unsigned qr[4];
      qr[0] = ck_scale2(qa[0], ck_ex2(gamA[c] - R0), ck_ex2(gamA[c + 1] - R1));
      qr[1] = ck_scale2(qa[1], ck_ex2(B0 - R0), ck_ex2(B1 - R1));
      qr[2] = ck_scale2(qa[2], ck_ex2(gamA[c + 8] - R8), ck_ex2(gamA[c + 9] - R9));
      qr[3] = ck_scale2(qa[3], ck_ex2(B8 - R8), ck_ex2(B9 - R9));
#pragma unroll
      for (int np = 0; np < CK_BT / 16; np++) {
        if (np < w) {
          unsigned kb[4];
          ck_ldm4(kb, ck_smem(Kb + (16 * np + (lane >> 4) * 8 + (lane & 7)) * CK_LDQ + kk * 16 +
                              ((lane >> 3) & 1) * 8));
          const float *gt = gam + (16 * np + g) * CK_LDG, *gu = gt + 8 * CK_LDG;
          kb[0] = ck_scale2(kb[0], ck_ex2(R0 - gt[c]), ck_ex2(R1 - gt[c + 1]));
          kb[1] = ck_scale2(kb[1], ck_ex2(R8 - gt[c + 8]), ck_ex2(R9 - gt[c + 9]));
          kb[2] = ck_scale2(kb[2], ck_ex2(R0 - gu[c]), ck_ex2(R1 - gu[c + 1]));
          kb[3] = ck_scale2(kb[3], ck_ex2(R8 - gu[c + 8]), ck_ex2(R9 - gu[c + 9]));
          ck_mma(acc[2 * np], qr, kb[0], kb[1]);
          ck_mma(acc[2 * np + 1], qr, kb[2], kb[3]);
        }
      }
    }
    /* the diagonal block's lower-left quadrant: rows rB (rows rA zeroed) x tokens r0 + g */
    {
      const float M0 = gamM[c], M1 = gamM[c + 1], M8 = gamM[c + 8], M9 = gamM[c + 9];
      unsigned qm[4];
      qm[0] = 0u, qm[2] = 0u;
      qm[1] = ck_scale2(qa[1], ck_ex2(B0 - M0), ck_ex2(B1 - M1));
      qm[3] = ck_scale2(qa[3], ck_ex2(B8 - M8), ck_ex2(B9 - M9));
      unsigned kb[2];
      const unsigned short *kr = Kb + (r0 + g) * CK_LDQ + c;
      const float *gt = gam + (r0 + g) * CK_LDG;
      kb[0] = ck_scale2(*(const unsigned *)kr, ck_ex2(M0 - gt[c]), ck_ex2(M1 - gt[c + 1]));
      kb[1] = ck_scale2(*(const unsigned *)(kr + 8), ck_ex2(M8 - gt[c + 8]), ck_ex2(M9 - gt[c + 9]));
      ck_mma(quad, qm, kb[0], kb[1]);
    }
  }
  /* the two 8 x 8 triangles in fp32: (rA, c0 | c1) and (rB, c8 | c9) */
  const int c0 = r0 + 2 * q, c1 = c0 + 1, c8 = c0 + 8, c9 = c0 + 9;
  const unsigned short *qA = Qb + rA * CK_LDQ, *qB = Qb + rB * CK_LDQ;
  const unsigned short *k0 = Kb + c0 * CK_LDQ, *k1 = Kb + c1 * CK_LDQ;
  const unsigned short *k8 = Kb + c8 * CK_LDQ, *k9 = Kb + c9 * CK_LDQ;
  const float *h0 = gam + c0 * CK_LDG, *h1 = gam + c1 * CK_LDG;
  const float *h8 = gam + c8 * CK_LDG, *h9 = gam + c9 * CK_LDG;
  /* mask j <= i (j < i read before; the bonus term is the diagonal) */
#if FLA_READ_BEFORE
  const bool m0 = c0 < rA, m1 = c1 < rA, m8 = c8 < rB, m9 = c9 < rB;
#else
  const bool m0 = c0 <= rA, m1 = c1 <= rA, m8 = c8 <= rB, m9 = c9 <= rB;
#endif
  float s0 = 0.0f, s1 = 0.0f, s8 = 0.0f, s9 = 0.0f;
#if FLA_HAS_BONUS
  float u0 = 0.0f, u1 = 0.0f, u8 = 0.0f, u9 = 0.0f; /* the bonus term (diagonal entries only) */
#endif
  /* two keys a step: columns past K are 0 in Q and K (and gam there is 0) */
#pragma unroll 4
  for (int d = d0; d < dend; d += 2) {
    float xa[2], xb[2], y0[2], y1[2], y8[2], y9[2];
    ck_unpack(*(const unsigned *)(qA + d), xa), ck_unpack(*(const unsigned *)(qB + d), xb);
    ck_unpack(*(const unsigned *)(k0 + d), y0), ck_unpack(*(const unsigned *)(k1 + d), y1);
    ck_unpack(*(const unsigned *)(k8 + d), y8), ck_unpack(*(const unsigned *)(k9 + d), y9);
    const float2 ga = *(const float2 *)(gamA + d), gb = *(const float2 *)(gamB + d);
    const float2 e0 = *(const float2 *)(h0 + d), e1 = *(const float2 *)(h1 + d);
    const float2 e8 = *(const float2 *)(h8 + d), e9 = *(const float2 *)(h9 + d);
    /* masked entries would take 2^(positive): clamp the exponent, the product is dropped */
    s0 += xa[0] * y0[0] * ck_ex2(fminf(ga.x - e0.x, 0.0f)) + xa[1] * y0[1] * ck_ex2(fminf(ga.y - e0.y, 0.0f));
    s1 += xa[0] * y1[0] * ck_ex2(fminf(ga.x - e1.x, 0.0f)) + xa[1] * y1[1] * ck_ex2(fminf(ga.y - e1.y, 0.0f));
    s8 += xb[0] * y8[0] * ck_ex2(fminf(gb.x - e8.x, 0.0f)) + xb[1] * y8[1] * ck_ex2(fminf(gb.y - e8.y, 0.0f));
    s9 += xb[0] * y9[0] * ck_ex2(fminf(gb.x - e9.x, 0.0f)) + xb[1] * y9[1] * ck_ex2(fminf(gb.y - e9.y, 0.0f));
#if FLA_HAS_BONUS
    /* scalar loads: bonus + h*K is 4-byte aligned only for even K */
    const float u[2] = {ck_bf2f(bon[d]), d + 1 < FLA_K ? ck_bf2f(bon[d + 1]) : 0.0f};
    u0 += xa[0] * y0[0] * u[0] + xa[1] * y0[1] * u[1];
    u1 += xa[0] * y1[0] * u[0] + xa[1] * y1[1] * u[1];
    u8 += xb[0] * y8[0] * u[0] + xb[1] * y8[1] * u[1];
    u9 += xb[0] * y9[0] * u[0] + xb[1] * y9[1] * u[1];
#endif
  }
  float t0 = m0 ? s0 : 0.0f, t1 = m1 ? s1 : 0.0f, t8 = m8 ? s8 : 0.0f, t9 = m9 ? s9 : 0.0f;
#if FLA_HAS_BONUS
  t0 += c0 == rA ? u0 : 0.0f, t1 += c1 == rA ? u1 : 0.0f;
  t8 += c8 == rB ? u8 : 0.0f, t9 += c9 == rB ? u9 : 0.0f;
#endif
#pragma unroll
  for (int np = 0; np < CK_BT / 16; np++)
    if (np == w) {
      acc[2 * np][0] = t0;
      acc[2 * np][1] = t1;
      acc[2 * np][2] = quad[2];
      acc[2 * np][3] = quad[3];
      acc[2 * np + 1][0] = 0.0f;
      acc[2 * np + 1][1] = 0.0f;
      acc[2 * np + 1][2] = t8;
      acc[2 * np + 1][3] = t9;
    }
}

/* Shared memory: Qs, Ks [64][LDQ] bf16, gam[1 + 64][LDG] f32 (row -1 zero). */
extern "C" __global__ void __launch_bounds__(CK_A_NTH, CK_A_MINB) fla_chunk_gk_fwd_a(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Ks = Qs + CK_BT * CK_LDQ;
  float *gam = (float *)(Ks + CK_BT * CK_LDQ) + CK_LDG; /* row -1: zeros */
  const int tid = threadIdx.x, wid = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int w = wid & 3, kh = wid >> 2; /* row block, key half */
  const long long c = blockIdx.x;
  const int h = blockIdx.y;
  if (c >= a.num_chunks) return;
  for (int i = tid; i < CK_LDG; i += CK_A_NTH) gam[i - CK_LDG] = 0.0f;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const long long H = a.H, ro = x.t0 * H + h, ch = c * H + h;
  const unsigned short *qp = (const unsigned short *)a.q;
  const unsigned short *kp = (const unsigned short *)a.k;
  const unsigned short *gp = (const unsigned short *)a.g;
  const int vecq = (FLA_K % 8 == 0) && (((a.q | a.k) & 15) == 0);
  const unsigned short *bon =
      FLA_HAS_BONUS ? (const unsigned short *)a.bonus + (long long)h * FLA_K : (const unsigned short *)0;
  (void)kp;
  ck_load_tile<CK_KP, CK_LDQ, CK_A_NTH>(Qs, qp + ro * FLA_K, H * FLA_K, x.rows, FLA_K, vecq, tid);
  if (!FLA_KEY_FROM_DECAY)
    ck_load_tile<CK_KP, CK_LDQ, CK_A_NTH>(Ks, kp + ro * FLA_K, H * FLA_K, x.rows, FLA_K, vecq, tid);
  ck_commit();
  ck_cumsum_global<CK_A_NTH, CK_KP, CK_LDQ, CK_LDG>(gam, gp + ro * FLA_K, H * FLA_K, x.rows, Ks, tid);
  ck_wait_all();
  __syncthreads();

  /* QG = Q .* 2^gq, KD = K .* 2^(gam_L - gam) (gam_L = gam row 63: rows past
  ** the end add 0), GL = gam_L: what the state and output kernels need */
  {
    unsigned short *qg = ck_ws_qg(a) + ch * CK_BT * FLA_K, *kd = ck_ws_kd(a) + ch * CK_BT * FLA_K;
    const float *gL = gam + (CK_BT - 1) * CK_LDG;
#if FLA_K % 2 == 0
    for (int e = tid; e < CK_BT * FLA_K / 2; e += CK_A_NTH) {
      const int r = e / (FLA_K / 2), d = 2 * (e % (FLA_K / 2));
      const float *gr = gam + r * CK_LDG + d, *gqr = gr - FLA_READ_BEFORE * CK_LDG;
      const unsigned qv = *(const unsigned *)(Qs + r * CK_LDQ + d);
      const unsigned kv = *(const unsigned *)(Ks + r * CK_LDQ + d);
      *(unsigned *)(qg + r * FLA_K + d) = ck_scale2(qv, ck_ex2(gqr[0]), ck_ex2(gqr[1]));
      *(unsigned *)(kd + r * FLA_K + d) = ck_scale2(kv, ck_ex2(gL[d] - gr[0]), ck_ex2(gL[d + 1] - gr[1]));
    }
#else
    for (int e = tid; e < CK_BT * FLA_K; e += CK_A_NTH) {
      const int r = e / FLA_K, d = e % FLA_K;
      const float gr = gam[r * CK_LDG + d], gqr = gam[(r - FLA_READ_BEFORE) * CK_LDG + d];
      qg[r * FLA_K + d] = (unsigned short)(ck_pack(ck_bf2f(Qs[r * CK_LDQ + d]) * ck_ex2(gqr), 0.0f) & 0xffffu);
      kd[r * FLA_K + d] = (unsigned short)(ck_pack(ck_bf2f(Ks[r * CK_LDQ + d]) * ck_ex2(gL[d] - gr), 0.0f) & 0xffffu);
    }
#endif
    for (int d = tid; d < FLA_K; d += CK_A_NTH) ck_ws_gl(a)[ch * FLA_K + d] = gL[d];
  }

  float acc[CK_BT / 8][4];
  ck_a_rows(acc, Qs, Ks, gam, w, kh, lane, bon);
  /* the second key half's sums through shared memory (gam's space: done with it) */
  __syncthreads();
  float4 *red = (float4 *)(gam - CK_LDG) + (w * 32 + lane) * (CK_BT / 8);
  if (kh == 1) {
#pragma unroll
    for (int j = 0; j < CK_BT / 8; j++) red[j] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
  }
  __syncthreads();
  if (kh == 1) return;
#pragma unroll
  for (int j = 0; j < CK_BT / 8; j++) {
    const float4 o = red[j];
    acc[j][0] += o.x, acc[j][1] += o.y, acc[j][2] += o.z, acc[j][3] += o.w;
  }
  /* mask (j <= i; j < i read before without a bonus; rows past the end: 0), store */
  unsigned short *dst = ck_ws_aw(a) + ch * CK_BT * CK_BT;
  const int rA = 16 * w + g, rB = rA + 8;
#pragma unroll
  for (int j = 0; j < CK_BT / 8; j++) {
    const int col = 8 * j + 2 * q;
    float v[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
      v[e] = (cl + (FLA_READ_BEFORE && !FLA_HAS_BONUS) <= r && r < x.rows) ? acc[j][e] : 0.0f;
    }
    *(unsigned *)(dst + rA * CK_BT + col) = ck_pack(v[0], v[1]);
    *(unsigned *)(dst + rB * CK_BT + col) = ck_pack(v[2], v[3]);
  }
}

/* ------------------------------------- kernels 2 and 3: the state passes */

/* The state passes' shared memory: a ring of CK1_NS chunks (KD tile, V
** slice, GL row), so that NS - 1 chunks are in flight while one is used. */
struct ck_state_smem {
  unsigned short *Kd, *Vs;
  float *gl;
};

__device__ __forceinline__ ck_state_smem ck_state_smem_at(unsigned char *sm) {
  ck_state_smem s;
  s.Kd = (unsigned short *)sm;
  s.Vs = s.Kd + CK1_NS * CK_BT * CK1_LDQ;
  s.gl = (float *)(s.Vs + CK1_NS * CK_BT * CK1_LDV);
  return s;
}

/* Chunk c's KD tile, V slice and GL row into ring slot b (one commit). */
__device__ __forceinline__ void ck_state_load_chunk(const fla_kernel_args &a, const ck_state_smem &s,
                                                    int b, long long c, const ck_chunk &x,
                                                    const ck_prog &p, int tid) {
  const long long H = a.H, ch = c * H + p.h;
  const int veck = (FLA_K % 8 == 0) && ((a.ws1 & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  ck_load_tile<CK1_KP, CK1_LDQ, CK1_NTH>(s.Kd + b * CK_BT * CK1_LDQ, ck_ws_kd(a) + ch * CK_BT * FLA_K,
                                         FLA_K, CK_BT, FLA_K, veck, tid);
  ck_load_tile<CK1_BV, CK1_LDV, CK1_NTH>(s.Vs + b * CK_BT * CK1_LDV,
                                         (const unsigned short *)a.v + (x.t0 * H + p.h) * FLA_V + p.v0,
                                         H * FLA_V, x.rows, p.vcols, vecv, tid);
  ck_load_row_f32<CK1_KP, CK1_NTH>(s.gl + b * CK1_KP, ck_ws_gl(a) + ch * FLA_K, FLA_K, tid);
  ck_commit();
}

template <int N>
__device__ __forceinline__ void ck_wait_n() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* The chunk ring of the state passes: chunk ld (described by xl) into its
** slot, then advance; past c1 an empty group, so that ck_wait_n<NS - 1>
** always leaves the oldest chunk complete. */
__device__ __forceinline__ void ck_state_prefetch(const fla_kernel_args &a, const ck_state_smem &s,
                                                  long long start, long long c1, long long &ld,
                                                  ck_chunk &xl, const ck_prog &p, int tid) {
  if (ld < c1) {
    ck_state_load_chunk(a, s, (int)((ld - start) % CK1_NS), ld, xl, p, tid);
    if (ld + 1 < c1) ck_chunk_next(a, ld, xl);
    ld++;
  } else {
    ck_commit();
  }
}

/* Shared memory: Kd[NS][64][LDQ1], Vs[NS][64][LDV1] bf16, gl[NS][KP1] f32. */
extern "C" __global__ void __launch_bounds__(CK1_NTH, CK1_MINB) fla_chunk_gk_fwd_h(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  const ck_state_smem sm = ck_state_smem_at(ck_sm);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const ck_prog p = ck_prog_at<CK1_NV, CK1_BV>(a);
  if (p.b + 1 >= p.NB) return;
  const int *cs = (const int *)a.chunk_seq;
  const long long *cf = (const long long *)a.chunk_first;
  const int nl = cs[p.c1 - 1];
  if (cs[p.c1] != nl) return; /* the next block starts a sequence */
  long long start = cf[nl] > p.c0 ? cf[nl] : p.c0;
  const long long H = a.H;

  float S[CK1_MT][CK1_NT][4];
  ck_state_zero(S);
  float dsum = 0.0f; /* thread tid < K: the block's log2 decay of key tid */
  ck_chunk xl;
  ck_chunk_at(a, start, xl);
  long long ld = start;
  for (int st = 0; st < CK1_NS - 1; st++) ck_state_prefetch(a, sm, start, p.c1, ld, xl, p, tid);
  for (long long c = start; c < p.c1; c++) {
    const int buf = (int)((c - start) % CK1_NS);
    ck_state_prefetch(a, sm, start, p.c1, ld, xl, p, tid);
    ck_wait_n<CK1_NS - 1>();
    __syncthreads();
    const float *gl = sm.gl + buf * CK1_KP;
    if (tid < FLA_K) dsum += gl[tid];
    ck_state_update<CK1_KW, CK1_MT, CK1_NT, CK1_LDQ, CK1_LDV>(S, sm.Kd + buf * CK_BT * CK1_LDQ,
                                                              sm.Vs + buf * CK_BT * CK1_LDV, gl, w, lane);
    __syncthreads();
  }
  const long long KV = (long long)FLA_K * FLA_V;
  float *P = (float *)a.ws0 + (p.b * H + p.h) * KV;
  ck_state_store<CK1_KW>(S, P, p.v0, w, lane);
  if (p.vt == 0 && tid < FLA_K) ck_ws_d(a)[(p.b * H + p.h) * FLA_K + tid] = dsum;
}

/* Shared memory as fla_chunk_gk_fwd_h. */
extern "C" __global__ void __launch_bounds__(CK1_NTH, CK1_MINB) fla_chunk_gk_fwd_hs(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  const ck_state_smem sm = ck_state_smem_at(ck_sm);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const ck_prog p = ck_prog_at<CK1_NV, CK1_BV>(a);
  const long long *cf = (const long long *)a.chunk_first;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;
#if FLA_STORE_HT
  if (p.b == 0) /* sequences with no chunk: ht = h0 (or 0) */
    for (int n = 0; n < a.N; n++) {
      if (cf[n] != cf[n + 1]) continue;
      float *dst = (float *)a.ht + ((long long)n * H + p.h) * KV;
      const float *src = h0 ? h0 + ((long long)n * H + p.h) * KV : h0;
      for (int e = tid; e < FLA_K * p.vcols; e += CK1_NTH) {
        const long long i = (long long)(e / p.vcols) * FLA_V + p.v0 + e % p.vcols;
        dst[i] = src ? src[i] : 0.0f;
      }
    }
#endif
  if (p.c0 >= a.num_chunks) return;
  unsigned short *hs = ck_ws_hs(a);

  ck_chunk x;
  ck_chunk_at(a, p.c0, x);
  float S[CK1_MT][CK1_NT][4];
  ck_state_load<CK1_KW>(S, h0 ? h0 + ((long long)x.n * H + p.h) * KV : h0, p.v0, w, lane);
  if (!x.first) { /* the sequence began in an earlier block: fold the blocks since */
    const float *P = (const float *)a.ws0, *D = ck_ws_d(a);
    for (long long bb = cf[x.n] / p.M; bb < p.b; bb++)
      ck_state_fold<CK1_KW>(S, P + (bb * H + p.h) * KV, D + (bb * H + p.h) * FLA_K, p.v0, w, lane);
  }
  ck_chunk xl = x;
  long long ld = p.c0;
  for (int st = 0; st < CK1_NS - 1; st++) ck_state_prefetch(a, sm, p.c0, p.c1, ld, xl, p, tid);
  for (long long c = p.c0; c < p.c1; c++) {
    const int buf = (int)((c - p.c0) % CK1_NS);
    if (x.first && c > p.c0) /* a sequence starting inside the block */
      ck_state_load<CK1_KW>(S, h0 ? h0 + ((long long)x.n * H + p.h) * KV : h0, p.v0, w, lane);
    ck_state_store_bf16<CK1_KW>(S, hs + (c * H + p.h) * KV, p.v0, w, lane);
    ck_state_prefetch(a, sm, p.c0, p.c1, ld, xl, p, tid);
    ck_wait_n<CK1_NS - 1>();
    __syncthreads();
    ck_state_update<CK1_KW, CK1_MT, CK1_NT, CK1_LDQ, CK1_LDV>(S, sm.Kd + buf * CK_BT * CK1_LDQ,
                                                              sm.Vs + buf * CK_BT * CK1_LDV,
                                                              sm.gl + buf * CK1_KP, w, lane);
#if FLA_STORE_HT
    if (x.last)
      ck_state_store<CK1_KW>(S, (float *)a.ht + ((long long)x.n * H + p.h) * KV, p.v0, w, lane);
#endif
    __syncthreads();
    if (c + 1 < p.c1) ck_chunk_next(a, c, x);
  }
}

/* ------------------------------------------------- kernel 4: the output */

/* O = scale [QG S0 + A V] for chunk c, value tile vt (warp w: rows 16w ..
** 16w+15). Shared memory: Qs [64][LDQ] (QG), Hs [KP][LDV] (S0 from HS), Vs
** [64][LDV], As [64][LDA] bf16. */
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_chunk_gk_fwd_o(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Hs = Qs + CK_BT * CK_LDQ;
  unsigned short *Vs = Hs + CK_KP * CK_LDV;
  unsigned short *As = Vs + CK_BT * CK_LDV;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long c = blockIdx.x / CK_NV;
  const int vt = (int)(blockIdx.x % CK_NV), h = blockIdx.y;
  if (c >= a.num_chunks) return;
  const int v0 = vt * CK_BV, vcols = FLA_V - v0 < CK_BV ? FLA_V - v0 : CK_BV;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const long long H = a.H, ro = x.t0 * H + h, ch = c * H + h;
  const long long KV = (long long)FLA_K * FLA_V;
  const int wsv = (a.ws1 & 15) == 0;
  const int vecq = (FLA_K % 8 == 0) && wsv;
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  const int vech = (FLA_V % 8 == 0) && wsv;
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Qs, ck_ws_qg(a) + ch * CK_BT * FLA_K, FLA_K, CK_BT, FLA_K, vecq, tid);
  ck_load_tile<CK_BV, CK_LDV, CK_NTH, CK_KP>(Hs, ck_ws_hs(a) + ch * KV + v0, FLA_V, FLA_K, vcols, vech,
                                             tid);
  ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Vs, (const unsigned short *)a.v + ro * FLA_V + v0, H * FLA_V,
                                      x.rows, vcols, vecv, tid);
  ck_load_tile<CK_BT, CK_LDA, CK_NTH>(As, ck_ws_aw(a) + ch * CK_BT * CK_BT, CK_BT, CK_BT, CK_BT, wsv, tid);
  ck_commit();
  ck_wait_all();
  __syncthreads();

  const int r0 = 16 * w, rA = r0 + g, rB = rA + 8;
  float oacc[CK_NT][4];
#pragma unroll
  for (int j = 0; j < CK_NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) oacc[j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < CK_KP / 16; kk++) {
    unsigned qa[4];
    ck_ldm4(qa, ck_smem(Qs + (r0 + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int np = 0; np < CK_NT / 2; np++) {
      unsigned sb[4];
      ck_ldm4t(sb, ck_smem(Hs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV + 16 * np +
                           (lane >> 4) * 8));
      ck_mma(oacc[2 * np], qa, sb[0], sb[1]);
      ck_mma(oacc[2 * np + 1], qa, sb[2], sb[3]);
    }
  }
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    if (kk <= w) {
      unsigned af[4];
      ck_ldm4(af, ck_smem(As + (r0 + (lane & 15)) * CK_LDA + kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < CK_NT / 2; np++) {
        unsigned vb[4];
        ck_ldm4t(vb, ck_smem(Vs + (16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                             16 * np + (lane >> 4) * 8));
        ck_mma(oacc[2 * np], af, vb[0], vb[1]);
        ck_mma(oacc[2 * np + 1], af, vb[2], vb[3]);
      }
    }
  }

  /* store O */
  const int rows = x.rows;
  const float scale = a.scale;
  unsigned short *orow = (unsigned short *)a.o + ro * FLA_V + v0;
  const long long ld = H * FLA_V;
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
}
