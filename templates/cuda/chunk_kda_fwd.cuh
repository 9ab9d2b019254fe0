/*
** chunk_kda_fwd.cuh -- the chunkwise-parallel forward of the delta rule with
** a per-key decay (KDA, fla's chunk_kda) on tensor cores (stage
** FLA_STAGE_CHUNK_KDA_FWD, gen/stage_chunk_kda.c).
**
** Keys handled: FLA_DELTA 1, FLA_DECAY 3 (g [tok,H,K], natural-log decays),
** no probe, FLA_READ_BEFORE 0, no bonus, no derived key, FLA_IN_BF16 1 (q,
** k, v, g, beta, o bf16; h0, ht f32), K and V up to 128. FLA_BT 64, FLA_WARPS
** 4, FLA_BV value columns a program of the output kernel (a multiple of 16;
** the state kernel takes min(BV, 32)); K is never tiled.
**
** The math (fla-notes.md §2.4 with a per-key gate; runtime/cpu/chunk.c). Per
** chunk of C <= 64 rows with S0 the state entering it, G the chunk-local
** inclusive cumsum of the log2 gates, per key (G_ik = sum_{r<=i} g_rk log2 e):
**   L     = diag(beta) ((K .* 2^G)(K .* 2^-G)^T), strictly lower
**           i.e. L_ij = beta_i sum_k k_ik k_jk 2^(G_ik - G_jk), j < i
**   T     = (I + L)^-1                 (unit lower triangular)
**   W     = T (diag(beta) K .* 2^G),   U = T diag(beta) V
**   Vn    = U - W S0
**   A     = Q_ij-products: A_ij = sum_k q_ik k_jk 2^(G_ik - G_jk), j <= i
**   O     = scale [ (Q .* 2^G) S0 + A Vn ]
**   S_L   = diag(2^G_L) S0 + (K .* 2^(G_L - G))^T Vn
** No exp2 of a positive number is taken: gates are <= 0, so G falls along
** the chunk and every exponent above is a later G minus an earlier one. The
** 16 x 16 blocks of L and A below the diagonal (sub-chunks bi > bj) are
** products of two factors that each stay <= 0 by referencing the first row
** n = 16 bi of the row's sub-chunk (fla's chunk_kda / chunk_gla intra):
**   L_ij = beta_i sum_k [k_ik 2^(G_ik - G_nk)] [k_jk 2^(G_nk - G_jk)]
** (bf16 operands, tensor-core mma, fp32 accumulate); the four diagonal
** blocks take 2^(G_ik - G_jk) element by element in fp32.
**
** Three kernels:
**   fla_kda_prep  (NC, H), 256 threads: one chunk of one head, fully
**       parallel. G per key (fp32, a thread a key); L and A as above; A
**       -> ws1 (bf16 [NC,H,64,64], zeros above the diagonal); T in fp32
**       blocked in 16 x 16 (as chunk_wy_fwd's fla_wy_prep, fla's
**       solve_tril); W, U by mma with T rounded to bf16 -> ws0, ws1;
**       Kd = K .* 2^(G_L - G) and Qg = Q .* 2^G (bf16) -> ws0; G_L (f32
**       [NC,H,KP]) -> ws1.
**   fla_kda_fwd_h (NVH*N, H), 128 threads: one (value tile of BVH =
**       min(BV, 32) columns, sequence, head), sequential over the chunks, the
**       K x BVH state slice in fp32 registers: h[c] = bf16(S0) -> ws0, Vn =
**       U - W h[c] by mma (bf16, over U in ws1), S = 2^G_L .* S0 + Kd^T Vn.
**       Kd, W, U, G_L of the next chunk in flight (cp.async, 2 stages).
**   fla_kda_fwd_o (NC*NV, H), 128 threads: fully parallel, O = scale (Qg
**       h[c] + A Vn) by mma.
** Workspaces: ws0 = W | Kd | Qg (bf16 [tok,H,K] each, 16-byte aligned) |
** h (bf16 [NC,H,K,V]); ws1 = U then Vn (bf16 [tok,H,V]) | A (bf16
** [NC,H,64,64]) | G_L (f32 [NC,H,KP]). Keep in step with workspace_() in
** gen/stage_chunk_kda.c.
*/

#if FLA_BT != 64 || FLA_WARPS != 4
#error "chunk_kda_fwd: FLA_BT 64 and FLA_WARPS 4 only"
#endif
#if !FLA_DELTA || FLA_DECAY != 3 || FLA_READ_BEFORE || !FLA_IN_BF16 || FLA_HAS_BONUS || \
    FLA_KEY_FROM_DECAY || FLA_HAS_PROBE
#error "chunk_kda_fwd: delta rule with a per-key decay, bf16 inputs only"
#endif
#if FLA_BV % 16 || FLA_K > 128 || FLA_V > 128
#error "chunk_kda_fwd: FLA_BV a multiple of 16, K and V up to 128"
#endif

#define CK_BT 64
#define CK_NW 4
#define CK_NTH (32 * CK_NW)
#define CK_KW ((FLA_K + 16 * CK_NW - 1) / (16 * CK_NW) * 16) /* state keys a warp owns */
#define CK_KP (CK_KW * CK_NW)                                /* K padded (64 or 128)  */
#define CK_MT (CK_KW / 16)
#define CK_BV FLA_BV
#define CK_NT (CK_BV / 8)
#define CK_NV ((FLA_V + CK_BV - 1) / CK_BV)
#define CK_LDQ (CK_KP + 8) /* smem row strides (elements): +16 bytes, no bank conflicts */
#define CK_LDV (CK_BV + 8)
#define CK_LOG2E 1.4426950408889634f

//@include "chunk_common.cuh"
//@include "chunk_tiles.cuh"

#define KD_PNW 8 /* fla_kda_prep's warps: 4 for the mma parts, all 8 for the scalar ones */
#define KD_PNTH (32 * KD_PNW)
#define KD_VP ((FLA_V + 63) / 64 * 64)
#define KD_LDV1 (KD_VP + 8)
#define KD_LDL 68           /* fp32 L and T rows */
#define KD_LDG (CK_KP + 1)  /* fp32 G rows: lanes on different rows, other banks */
#define KD_LDA 72           /* bf16 A rows */
#define KD_BVH (FLA_BV < 32 ? FLA_BV : 32)
#define KD_NTH (KD_BVH / 8)
#define KD_NVH ((FLA_V + KD_BVH - 1) / KD_BVH)
#define KD_LDVH (KD_BVH + 8)

/* ------------------------------------------------------------ workspaces */

__device__ __forceinline__ unsigned long long kd_al16(unsigned long long b) { return (b + 15) / 16 * 16; }
__device__ __forceinline__ unsigned long long kd_kbytes(const fla_kernel_args &a) {
  return kd_al16((unsigned long long)a.total * a.H * FLA_K * 2);
}
__device__ __forceinline__ unsigned short *kd_w(const fla_kernel_args &a) { return (unsigned short *)a.ws0; }
__device__ __forceinline__ unsigned short *kd_kd(const fla_kernel_args &a) {
  return (unsigned short *)(a.ws0 + kd_kbytes(a));
}
__device__ __forceinline__ unsigned short *kd_qg(const fla_kernel_args &a) {
  return (unsigned short *)(a.ws0 + 2 * kd_kbytes(a));
}
__device__ __forceinline__ unsigned short *kd_h(const fla_kernel_args &a) {
  return (unsigned short *)(a.ws0 + 3 * kd_kbytes(a));
}
__device__ __forceinline__ unsigned short *kd_u(const fla_kernel_args &a) { return (unsigned short *)a.ws1; }
__device__ __forceinline__ unsigned short *kd_a(const fla_kernel_args &a) {
  return (unsigned short *)(a.ws1 + kd_al16((unsigned long long)a.total * a.H * FLA_V * 2));
}
__device__ __forceinline__ float *kd_gl(const fla_kernel_args &a) {
  return (float *)(a.ws1 + kd_al16((unsigned long long)a.total * a.H * FLA_V * 2) +
                   (unsigned long long)a.num_chunks * a.H * CK_BT * CK_BT * 2);
}

/* One bf16 value into dst[i] (odd widths: no pairs). */
__device__ __forceinline__ void kd_st1(unsigned short *dst, long long i, float v) {
  dst[i] = (unsigned short)(ck_pack(v, 0.0f) & 0xffffu);
}

/* ------------------------------------------------ kernel 1: L, A, W, U */

/* D[16w.., 0..NCOL) = T[16w.., 0..64) B[0..64, n0..) (chunk_wy_fwd's
** cw_tmul_store): T fp32 in smem rounded to bf16 as loaded, lower
** triangular (k-steps kk <= w); rows < rows, columns < ncols stored bf16. */
template <int NCOL, int LDB>
__device__ __forceinline__ void kd_tmul_store(const float *Tf, const unsigned short *Bs,
                                              unsigned short *dst, long long ld, int ncols,
                                              int rows, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
  const int rA = 16 * w + g, rB = rA + 8;
#pragma unroll
  for (int n0 = 0; n0 < NCOL; n0 += 64) {
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      if (kk <= w) {
        unsigned ta[4];
        const float *tA = Tf + rA * KD_LDL + 16 * kk + 2 * q, *tB = tA + 8 * KD_LDL;
        const float2 a0 = *(const float2 *)tA, a1 = *(const float2 *)tB;
        const float2 a2 = *(const float2 *)(tA + 8), a3 = *(const float2 *)(tB + 8);
        ta[0] = ck_pack(a0.x, a0.y);
        ta[1] = ck_pack(a1.x, a1.y);
        ta[2] = ck_pack(a2.x, a2.y);
        ta[3] = ck_pack(a3.x, a3.y);
#pragma unroll
        for (int np = 0; np < 4; np++) {
          unsigned vb[4];
          ck_ldm4t(vb, ck_smem(Bs + (16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDB + n0 +
                               16 * np + (lane >> 4) * 8));
          ck_mma(acc[2 * np], ta, vb[0], vb[1]);
          ck_mma(acc[2 * np + 1], ta, vb[2], vb[3]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int col = n0 + 8 * j + 2 * q;
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
        if (r < rows && cl < ncols) kd_st1(dst, r * ld + cl, acc[j][e]);
      }
    }
  }
}

/* Shared memory (bf16 tiles [64][LDQ] unless said): Kr (k), Qr (q), KL
** (k_i 2^(G_i - G_n(i)), later beta 2^G .* k), QL (q_i 2^(G_i - G_n(i))),
** KR [3][48][LDQ] (warp w's k_j 2^(G_16w - G_j), j < 16w), Vs [64][LDV1];
** f32: Gf [64][LDG], Lf, Tf [64][LDL], bet [64]. */
extern "C" __global__ void __launch_bounds__(KD_PNTH) fla_kda_prep(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Kr = (unsigned short *)ck_sm;
  unsigned short *Qr = Kr + CK_BT * CK_LDQ;
  unsigned short *KL = Qr + CK_BT * CK_LDQ;
  unsigned short *QL = KL + CK_BT * CK_LDQ;
  unsigned short *KR = QL + CK_BT * CK_LDQ;
  unsigned short *Vs = KR + 3 * 48 * CK_LDQ;
  float *Gf = (float *)(Vs + CK_BT * KD_LDV1);
  float *Lf = Gf + CK_BT * KD_LDG;
  float *Tf = Lf + CK_BT * KD_LDL;
  float *bet = Tf + CK_BT * KD_LDL;
  const long long c = blockIdx.x;
  if (c >= a.num_chunks) return;
  const int h = blockIdx.y;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long H = a.H;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V;
  const int veck = (FLA_K % 8 == 0) && (((a.k | a.q) & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  ck_load_tile<CK_KP, CK_LDQ, KD_PNTH>(Kr, (const unsigned short *)a.k + rk, H * FLA_K, rows, FLA_K,
                                      veck, tid);
  ck_load_tile<CK_KP, CK_LDQ, KD_PNTH>(Qr, (const unsigned short *)a.q + rk, H * FLA_K, rows, FLA_K,
                                      veck, tid);
  ck_load_tile<KD_VP, KD_LDV1, KD_PNTH>(Vs, (const unsigned short *)a.v + rv, H * FLA_V, rows, FLA_V,
                                       vecv, tid);
  /* the raw gates in KL for now (KL is formed after G) */
  ck_load_tile<CK_KP, CK_LDQ, KD_PNTH>(KL, (const unsigned short *)a.g + rk, H * FLA_K, rows, FLA_K,
                                      veck && (a.g & 15) == 0, tid);
  ck_commit();
  if (tid < CK_BT) bet[tid] = tid < rows ? ck_ldgf(a.beta, (x.t0 + tid) * H + h) : 0.0f;
  ck_wait_all();
  __syncthreads();
  /* G: a thread a key, the running sum over the chunk's rows; rows past
  ** the end keep the last value (their g, k and q read 0), keys past K are 0 */
  if (tid < CK_KP) {
    float s = 0.0f;
#pragma unroll 8
    for (int r = 0; r < CK_BT; r++) {
      s += ck_bf2f(KL[r * CK_LDQ + tid]) * CK_LOG2E;
      Gf[r * KD_LDG + tid] = s;
    }
    kd_gl(a)[(c * H + h) * CK_KP + tid] = s;
  }
  __syncthreads();

  /* the factors of the off-diagonal blocks, and Kd, Qg out */
  for (int e = tid; e < CK_BT * CK_KP; e += KD_PNTH) {
    const int r = e / CK_KP, k = e % CK_KP, n = r & ~15;
    const float gr = Gf[r * KD_LDG + k];
    const float kv = ck_bf2f(Kr[r * CK_LDQ + k]), qv = ck_bf2f(Qr[r * CK_LDQ + k]);
    const float fn = exp2f(gr - Gf[n * KD_LDG + k]);
    KL[r * CK_LDQ + k] = (unsigned short)(ck_pack(kv * fn, 0.0f) & 0xffffu);
    QL[r * CK_LDQ + k] = (unsigned short)(ck_pack(qv * fn, 0.0f) & 0xffffu);
    if (r < rows && k < FLA_K) {
      const float gl = Gf[(CK_BT - 1) * KD_LDG + k];
      kd_st1(kd_kd(a), rk + (long long)r * H * FLA_K + k, kv * exp2f(gl - gr));
      kd_st1(kd_qg(a), rk + (long long)r * H * FLA_K + k, qv * exp2f(gr));
    }
  }
  for (int e = tid; e < 3 * 48 * CK_KP; e += KD_PNTH) {
    const int b = e / (48 * CK_KP), j = (e / CK_KP) % 48, k = e % CK_KP, n = 16 * (b + 1);
    float v = 0.0f;
    if (j < n) v = ck_bf2f(Kr[j * CK_LDQ + k]) * exp2f(Gf[n * KD_LDG + k] - Gf[j * KD_LDG + k]);
    KR[(b * 48 + j) * CK_LDQ + k] = (unsigned short)(ck_pack(v, 0.0f) & 0xffffu);
  }
  __syncthreads();

  /* below-diagonal blocks by mma: warp w < 4 rows 16w.., columns j < 16w;
  ** L -> Lf (times beta), A -> Tf (fp32, until A leaves) */
  if (w < CK_NW) {
    float acck[8][4], accq[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acck[j][e] = accq[j][e] = 0.0f;
    const unsigned short *KRw = KR + (w > 0 ? (w - 1) * 48 : 0) * CK_LDQ;
#pragma unroll
    for (int kk = 0; kk < CK_KP / 16; kk++) {
      unsigned ka[4], qa[4];
      ck_ldm4(ka, ck_smem(KL + (16 * w + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
      ck_ldm4(qa, ck_smem(QL + (16 * w + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < 3; np++) {
        if (np < w) {
          unsigned kb[4];
          ck_ldm4(kb, ck_smem(KRw + (16 * np + (lane >> 4) * 8 + (lane & 7)) * CK_LDQ + kk * 16 +
                              ((lane >> 3) & 1) * 8));
          ck_mma(acck[2 * np], ka, kb[0], kb[1]);
          ck_mma(acck[2 * np + 1], ka, kb[2], kb[3]);
          ck_mma(accq[2 * np], qa, kb[0], kb[1]);
          ck_mma(accq[2 * np + 1], qa, kb[2], kb[3]);
        }
      }
    }
    const int rA = 16 * w + g, rB = rA + 8;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 8 * j + 2 * q + (e & 1);
        const bool below = col < 16 * w; /* the diagonal block comes next */
        Lf[r * KD_LDL + col] = below ? bet[r] * acck[j][e] : 0.0f;
        Tf[r * KD_LDL + col] = below ? accq[j][e] : 0.0f;
      }
  }
  __syncthreads();
  /* diagonal block b = w mod 4 (warps b and b + 4), element by element:
  ** 136 (i, j), j <= i */
  for (int e = lane + 32 * (w >> 2); e < 136; e += 64) {
    int ii = 0, jj = e;
    while (jj > ii) jj -= ++ii;
    const int i = 16 * (w & 3) + ii, j = 16 * (w & 3) + jj;
    const unsigned short *ki = Kr + i * CK_LDQ, *kj = Kr + j * CK_LDQ, *qi = Qr + i * CK_LDQ;
    const float *gi = Gf + i * KD_LDG, *gj = Gf + j * KD_LDG;
    float sl = 0.0f, sq = 0.0f;
#pragma unroll 4
    for (int k = 0; k < FLA_K; k++) {
      const float f = exp2f(gi[k] - gj[k]) * ck_bf2f(kj[k]);
      sl += ck_bf2f(ki[k]) * f;
      sq += ck_bf2f(qi[k]) * f;
    }
    Lf[i * KD_LDL + j] = j < i ? bet[i] * sl : 0.0f;
    Tf[i * KD_LDL + j] = sq;
  }
  __syncthreads();
  /* A -> ws1 (bf16, a row of 64 a 8-thread group); beta 2^G .* k -> KL,
  ** beta .* v -> Vs (the W and U operands) */
  {
    unsigned short *Ag = kd_a(a) + (c * H + h) * CK_BT * CK_BT;
    for (int e = tid; e < CK_BT * CK_BT / 2; e += KD_PNTH) {
      const int r = e / (CK_BT / 2), cc = 2 * (e % (CK_BT / 2));
      *(unsigned *)(Ag + r * CK_BT + cc) = ck_pack(Tf[r * KD_LDL + cc], Tf[r * KD_LDL + cc + 1]);
    }
    for (int e = tid; e < CK_BT * CK_KP; e += KD_PNTH) {
      const int r = e / CK_KP, k = e % CK_KP;
      const float v = bet[r] * exp2f(Gf[r * KD_LDG + k]) * ck_bf2f(Kr[r * CK_LDQ + k]);
      KL[r * CK_LDQ + k] = (unsigned short)(ck_pack(v, 0.0f) & 0xffffu);
    }
    for (int e = tid; e < CK_BT * (KD_VP / 2); e += KD_PNTH) {
      const int r = e / (KD_VP / 2), cc = 2 * (e % (KD_VP / 2));
      unsigned *pv = (unsigned *)(Vs + r * KD_LDV1 + cc);
      *pv = ck_scale2(*pv, bet[r], bet[r]);
    }
  }
  __syncthreads();

  /* T = (I + L)^-1 in fp32, blocked in 16 x 16 (chunk_wy_fwd's fla_wy_prep):
  **   A_ii = B_ii^-1 by forward substitution (one thread a column);
  **   A_ij = -A_ii sum_{j<=m<i} L_im A_mj, level by level in i - j. */
  if (tid < CK_BT) {
    const int o = tid & ~15, jj = tid & 15;
    float xs[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
      float s = i == jj ? 1.0f : 0.0f;
      const float *Li = Lf + (o + i) * KD_LDL + o;
#pragma unroll
      for (int m = 0; m < i; m++) s -= Li[m] * xs[m];
      xs[i] = s;
    }
#pragma unroll
    for (int i = 0; i < 16; i++) Tf[(o + i) * KD_LDL + o + jj] = xs[i];
  }
  __syncthreads();
#pragma unroll
  for (int d = 1; d < 4; d++) {
    /* P_b = sum_{j<=m<i} L_im A_mj for (i, j) = (d + b, b), in T's unused
    ** upper block (b, 3) */
    for (int e = tid; e < (4 - d) * 64; e += KD_PNTH) {
      const int b = e >> 6, r = (e >> 2) & 15, cl = 4 * (e & 3), i = d + b;
      const float *Lr = Lf + (16 * i + r) * KD_LDL;
      const float *Ac = Tf + 16 * b + cl;
      float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int m = 16 * b; m < 16 * b + 16 * d; m++) {
        const float l = Lr[m];
        const float4 xv = *(const float4 *)(Ac + m * KD_LDL);
        s.x += l * xv.x, s.y += l * xv.y, s.z += l * xv.z, s.w += l * xv.w;
      }
      *(float4 *)(Tf + (16 * b + r) * KD_LDL + 48 + cl) = s;
    }
    __syncthreads();
    for (int e = tid; e < (4 - d) * 64; e += KD_PNTH) {
      const int b = e >> 6, r = (e >> 2) & 15, cl = 4 * (e & 3), i = d + b;
      const float *Ar = Tf + (16 * i + r) * KD_LDL + 16 * i;
      const float *Pc = Tf + 16 * b * KD_LDL + 48 + cl;
      float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int t = 0; t < 16; t++) {
        const float l = Ar[t];
        const float4 xv = *(const float4 *)(Pc + t * KD_LDL);
        s.x -= l * xv.x, s.y -= l * xv.y, s.z -= l * xv.z, s.w -= l * xv.w;
      }
      *(float4 *)(Tf + (16 * i + r) * KD_LDL + 16 * b + cl) = s;
    }
    __syncthreads();
  }
  /* the upper blocks (b, 3) held P: T's k-steps stop at kk <= w, so they
  ** are never read as T */

  /* W = T (beta 2^G .* K) -> ws0, U = T (beta .* V) -> ws1 */
  if (w < CK_NW) {
    kd_tmul_store<CK_KP, CK_LDQ>(Tf, KL, kd_w(a) + rk, H * FLA_K, FLA_K, rows, w, lane);
    kd_tmul_store<KD_VP, KD_LDV1>(Tf, Vs, kd_u(a) + rv, H * FLA_V, FLA_V, rows, w, lane);
  }
}

/* ----------------------------------------- kernel 2: the chunk states */

/* dst[r * ld + c] = src[r * LDVH + c] for r < nrows, c < ncols (a multiple
** of 8), in 16-byte pieces: h[c] and Vn leave from shared memory whole rows
** at a time (V % 8 == 0 and 16-byte aligned workspaces). */
__device__ __forceinline__ void kd_rows_out(unsigned short *dst, long long ld,
                                            const unsigned short *src, int nrows, int ncols,
                                            int tid) {
  for (int p = tid; p < nrows * (KD_BVH / 8); p += CK_NTH) {
    const int r = p / (KD_BVH / 8), c = (p % (KD_BVH / 8)) * 8;
    if (c < ncols) *(uint4 *)(dst + r * ld + c) = *(const uint4 *)(src + r * KD_LDVH + c);
  }
}

/* Starts the loads of chunk c (at x), value columns v0.., into one stage. */
__device__ __forceinline__ void kd_h_fetch(const fla_kernel_args &a, const ck_chunk &x, long long c,
                                           int h, int v0, int vcols, int veck, int vecv,
                                           unsigned short *Kd, unsigned short *Wd,
                                           unsigned short *Ud, float *gd, int tid) {
  const long long H = a.H, ro = x.t0 * H + h;
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Kd, kd_kd(a) + ro * FLA_K, H * FLA_K, x.rows, FLA_K, veck, tid);
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Wd, kd_w(a) + ro * FLA_K, H * FLA_K, x.rows, FLA_K, veck, tid);
  ck_load_tile<KD_BVH, KD_LDVH, CK_NTH>(Ud, kd_u(a) + ro * FLA_V + v0, H * FLA_V, x.rows, vcols,
                                        vecv, tid);
  if (tid < CK_KP / 4) ck_cp16(ck_smem(gd + 4 * tid), kd_gl(a) + (c * H + h) * CK_KP + 4 * tid, 1);
}

/* Program (value tile vt, sequence n, head h), its chunks in order, the
** K x BVH state slice S in fp32 registers (thread: keys KW w + 16 mt + g
** (+8), columns 8 j + 2 q (+1)). Per chunk, S0 = S:
**   h[c] = bf16(S0)                       -> ws0 ([NC,H,K,V])
**   Vn   = U - W h[c]                     -> ws1 over U (bf16), and smem
**   S    = diag(2^G_L) S0 + Kd^T Vn       (Kd = K .* 2^(G_L - G), bf16)
** Two stages: the next chunk's Kd, W, U, G_L load while one is computed.
** Shared memory: Ks, Ws [2][64][LDQ], Us [2][64][LDVH], Ss [KP][LDVH] bf16,
** gs [2][KP] f32. */
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_kda_fwd_h(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Ks = (unsigned short *)ck_sm;
  unsigned short *Ws = Ks + 2 * CK_BT * CK_LDQ;
  unsigned short *Us = Ws + 2 * CK_BT * CK_LDQ;
  unsigned short *Ss = Us + 2 * CK_BT * KD_LDVH;
  float *gs = (float *)(Ss + CK_KP * KD_LDVH);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int vt = blockIdx.x % KD_NVH;
  const int n = blockIdx.x / KD_NVH;
  const int h = blockIdx.y;
  if (n >= a.N) return;
  const int v0 = vt * KD_BVH;
  const int vcols = FLA_V - v0 < KD_BVH ? FLA_V - v0 : KD_BVH;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  const long long *cf = (const long long *)a.chunk_first;
  const long long c0 = cf[n], c1 = cf[n + 1];
  const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;
  const float *h0n = h0 ? h0 + ((long long)n * H + h) * KV : h0;

  float S[CK_MT][KD_NTH][4];
  ck_state_load<CK_KW>(S, h0n, v0, w, lane);
  if (c0 >= c1) {
#if FLA_STORE_HT
    ck_state_store<CK_KW>(S, (float *)a.ht + ((long long)n * H + h) * KV, v0, w, lane);
#endif
    return;
  }
  unsigned short *up = kd_u(a);
  unsigned short *hws = kd_h(a);
  const int veck = (FLA_K % 8 == 0) && ((a.ws0 & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.ws1 & 15) == 0);
  const int rowsout = vecv && (a.ws0 & 15) == 0; /* h[c], Vn out by kd_rows_out */

  ck_chunk xf, x;
  ck_chunk_at(a, c0, xf);
  ck_chunk_at(a, c0, x);
  kd_h_fetch(a, xf, c0, h, v0, vcols, veck, vecv, Ks, Ws, Us, gs, tid);
  ck_commit();
  if (c0 + 1 < c1) ck_chunk_next(a, c0, xf);
  int buf = 0;
  for (long long c = c0; c < c1; c++) {
    const int rows = x.rows;
    if (c + 1 < c1) { /* xf describes c + 1 */
      kd_h_fetch(a, xf, c + 1, h, v0, vcols, veck, vecv, Ks + (buf ^ 1) * CK_BT * CK_LDQ,
                 Ws + (buf ^ 1) * CK_BT * CK_LDQ, Us + (buf ^ 1) * CK_BT * KD_LDVH,
                 gs + (buf ^ 1) * CK_KP, tid);
      if (c + 2 < c1) ck_chunk_next(a, c + 1, xf);
    }
    ck_commit();
    /* S0 as bf16: the B operand of W S0, and h[c] */
    unsigned short *hc = hws + (c * H + h) * KV + v0;
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
      for (int j = 0; j < KD_NTH; j++) {
        const int key = CK_KW * w + 16 * mt + g, col = 8 * j + 2 * q;
        const unsigned lo = ck_pack(S[mt][j][0], S[mt][j][1]);
        const unsigned hi = ck_pack(S[mt][j][2], S[mt][j][3]);
        *(unsigned *)(Ss + key * KD_LDVH + col) = lo;
        *(unsigned *)(Ss + (key + 8) * KD_LDVH + col) = hi;
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int kk = key + (e >> 1) * 8, cl = col + (e & 1);
          const unsigned u = (e >> 1) ? hi : lo;
          if (!rowsout && kk < FLA_K && cl < vcols)
            hc[(long long)kk * FLA_V + cl] = (unsigned short)((e & 1) ? (u >> 16) : (u & 0xffffu));
        }
      }
    ck_wait_one();
    __syncthreads();

    const unsigned short *Kb = Ks + buf * CK_BT * CK_LDQ;
    const unsigned short *Wb = Ws + buf * CK_BT * CK_LDQ;
    unsigned short *Ub = Us + buf * CK_BT * KD_LDVH;
    const float *gl = gs + buf * CK_KP;

    /* Vn = U - W S0 for the warp's rows 16w.. (into Ub and ws1) */
    {
      float acc[KD_NTH][4];
#pragma unroll
      for (int j = 0; j < KD_NTH; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < CK_KP / 16; kk++) {
        unsigned wa[4];
        ck_ldm4(wa, ck_smem(Wb + (16 * w + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int np = 0; np < KD_NTH / 2; np++) {
          unsigned sb[4];
          ck_ldm4t(sb, ck_smem(Ss + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * KD_LDVH +
                               16 * np + (lane >> 4) * 8));
          ck_mma(acc[2 * np], wa, sb[0], sb[1]);
          ck_mma(acc[2 * np + 1], wa, sb[2], sb[3]);
        }
      }
      const int rA = 16 * w + g, rB = rA + 8;
      unsigned short *urow = up + (x.t0 * H + h) * FLA_V + v0;
#pragma unroll
      for (int j = 0; j < KD_NTH; j++) {
        const int col = 8 * j + 2 * q;
        unsigned *pa = (unsigned *)(Ub + rA * KD_LDVH + col);
        unsigned *pb = (unsigned *)(Ub + rB * KD_LDVH + col);
        const unsigned ua = *pa, ub = *pb;
        const unsigned na = ck_pack(__uint_as_float(ua << 16) - acc[j][0],
                                    __uint_as_float(ua & 0xffff0000u) - acc[j][1]);
        const unsigned nb = ck_pack(__uint_as_float(ub << 16) - acc[j][2],
                                    __uint_as_float(ub & 0xffff0000u) - acc[j][3]);
        *pa = na, *pb = nb;
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
          const unsigned u = (e < 2) ? na : nb;
          if (!rowsout && r < rows && cl < vcols)
            urow[r * H * FLA_V + cl] = (unsigned short)((e & 1) ? (u >> 16) : (u & 0xffffu));
        }
      }
    }
    __syncthreads();
    if (rowsout) { /* Ss and Ub stay as they are until the chunk's last barrier */
      kd_rows_out(hc, FLA_V, Ss, FLA_K, vcols, tid);
      kd_rows_out(up + (x.t0 * H + h) * FLA_V + v0, H * FLA_V, Ub, rows, vcols, tid);
    }

    /* S = diag(2^G_L) S + Kd^T Vn: Kd^T the A operand (m = key, k = token)
    ** read transposed from Kb[token][key], Vn the B operand from Ub */
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++) {
      const int key = CK_KW * w + 16 * mt + g;
      const float e0 = exp2f(gl[key]), e8 = exp2f(gl[key + 8]);
#pragma unroll
      for (int j = 0; j < KD_NTH; j++) {
        S[mt][j][0] *= e0, S[mt][j][1] *= e0;
        S[mt][j][2] *= e8, S[mt][j][3] *= e8;
      }
    }
#pragma unroll
    for (int kk = 0; kk < CK_BT / 16; kk++) {
      unsigned ka[CK_MT][4];
#pragma unroll
      for (int mt = 0; mt < CK_MT; mt++) {
        const int row = 16 * kk + (lane >> 4) * 8 + (lane & 7);
        const int col = CK_KW * w + 16 * mt + ((lane >> 3) & 1) * 8;
        ck_ldm4t(ka[mt], ck_smem(Kb + row * CK_LDQ + col));
      }
#pragma unroll
      for (int np = 0; np < KD_NTH / 2; np++) {
        unsigned vb[4];
        const int row = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
        const int col = 16 * np + (lane >> 4) * 8;
        ck_ldm4t(vb, ck_smem(Ub + row * KD_LDVH + col));
#pragma unroll
        for (int mt = 0; mt < CK_MT; mt++) {
          ck_mma(S[mt][2 * np], ka[mt], vb[0], vb[1]);
          ck_mma(S[mt][2 * np + 1], ka[mt], vb[2], vb[3]);
        }
      }
    }
#if FLA_STORE_HT
    if (x.last) ck_state_store<CK_KW>(S, (float *)a.ht + ((long long)n * H + h) * KV, v0, w, lane);
#endif
    __syncthreads();
    if (c + 1 < c1) ck_chunk_next(a, c, x);
    buf ^= 1;
  }
}

/* ------------------------------------------------ kernel 3: the output */

/* Program (chunk c, value tile vt, head h), fully parallel:
**   O = scale [ Qg h[c] + A Vn ]      (A lower-inclusive, from fla_kda_prep)
** Shared memory: Qs [64][LDQ], Vs [64][LDV], Ss [KP][LDV], As [64][LDA] bf16. */
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_kda_fwd_o(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Vs = Qs + CK_BT * CK_LDQ;
  unsigned short *Ss = Vs + CK_BT * CK_LDV;
  unsigned short *As = Ss + CK_KP * CK_LDV;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int vt = blockIdx.x % CK_NV;
  const long long c = blockIdx.x / CK_NV;
  const int h = blockIdx.y;
  if (c >= a.num_chunks) return;
  const int v0 = vt * CK_BV;
  const int vcols = FLA_V - v0 < CK_BV ? FLA_V - v0 : CK_BV;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long ro = x.t0 * H + h;
  const int veck = (FLA_K % 8 == 0) && ((a.ws0 & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && (((a.ws0 | a.ws1) & 15) == 0);
  const unsigned short *hc = kd_h(a) + (c * H + h) * KV + v0;
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Qs, kd_qg(a) + ro * FLA_K, H * FLA_K, rows, FLA_K, veck, tid);
  ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Vs, kd_u(a) + ro * FLA_V + v0, H * FLA_V, rows, vcols, vecv, tid);
#pragma unroll
  for (int r0 = 0; r0 < CK_KP; r0 += CK_BT)
    ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Ss + r0 * CK_LDV, hc + (long long)r0 * FLA_V, FLA_V,
                                        FLA_K - r0, vcols, vecv, tid);
  ck_load_tile<CK_BT, KD_LDA, CK_NTH>(As, kd_a(a) + (c * H + h) * CK_BT * CK_BT, CK_BT, CK_BT,
                                      CK_BT, (a.ws1 & 15) == 0, tid);
  ck_commit();
  ck_wait_all();
  __syncthreads();

  float oacc[CK_NT][4];
#pragma unroll
  for (int j = 0; j < CK_NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) oacc[j][e] = 0.0f;
  /* Qg S0 */
#pragma unroll
  for (int kk = 0; kk < CK_KP / 16; kk++) {
    unsigned qa[4];
    ck_ldm4(qa, ck_smem(Qs + (16 * w + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int np = 0; np < CK_NT / 2; np++) {
      unsigned sb[4];
      ck_ldm4t(sb, ck_smem(Ss + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                           16 * np + (lane >> 4) * 8));
      ck_mma(oacc[2 * np], qa, sb[0], sb[1]);
      ck_mma(oacc[2 * np + 1], qa, sb[2], sb[3]);
    }
  }
  /* + A Vn over the warp's causal k-steps */
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    if (kk <= w) {
      unsigned af[4];
      ck_ldm4(af, ck_smem(As + (16 * w + (lane & 15)) * KD_LDA + kk * 16 + (lane >> 4) * 8));
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
  unsigned short *orow = (unsigned short *)a.o + ro * FLA_V + v0;
  const long long ld = H * FLA_V;
  const int rA = 16 * w + g, rB = rA + 8;
  const float scale = a.scale;
#pragma unroll
  for (int j = 0; j < CK_NT; j++) {
    const int col = 8 * j + 2 * q;
#if FLA_V % 2 == 0
    if (col < vcols) {
      if (rA < rows) *(unsigned *)(orow + rA * ld + col) = ck_pack(scale * oacc[j][0], scale * oacc[j][1]);
      if (rB < rows) *(unsigned *)(orow + rB * ld + col) = ck_pack(scale * oacc[j][2], scale * oacc[j][3]);
    }
#else
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
      if (r < rows && cl < vcols) kd_st1(orow, r * ld + cl, scale * oacc[j][e]);
    }
#endif
  }
}
