/*
** chunk_wy_bwd.cuh -- the chunkwise-parallel backward of the delta-rule (WY)
** family on tensor cores (stage FLA_STAGE_CHUNK_WY_BWD,
** gen/stage_chunk_wy_bwd.c), fla's chunk_gated_delta_rule_bwd
** (fla/ops/gated_delta_rule/chunk.py, common/chunk_delta_h.py,
** gated_delta_rule/wy_fast.py, common/chunk_o.py).
**
** Keys handled: FLA_DELTA 1, FLA_DECAY 0 (none), 1 (const gamma[h], no
** gradient), 2 (scalar g [tok,H]: dg), FLA_HAS_PROBE 0/1 (Comba: p replaces k
** in L and W), FLA_READ_BEFORE 0, no bonus, no derived key, FLA_IN_BF16 1;
** K, V <= 128. Tiles: chunks of 64 tokens, 4 warps; the two state walks hold
** a K x BVW slice of the state (or of its gradient) in fp32 registers, BVW =
** FLA_BV or min(FLA_BV, 32) by the program count (fla_wyb_walk below).
**
** The forward (chunk_wy_fwd.cuh; log gates in base 2, gam = chunk-local
** inclusive cumsum of g log2 e, gL its last row, G_ij = 2^(gam_i - gam_j),
** P = p or k, S0 = h the state entering the chunk):
**   L   = diag(beta) ((P K^T) .* G), strictly lower;   T = (I + L)^-1
**   W   = T diag(beta 2^gam) P,   U = T diag(beta) V,   Vn = U - W S0
**   O   = scale 2^gam .* (Q S0) + A Vn,   A = scale (Q K^T) .* G .* [j <= i]
**   S_L = 2^gL S0 + K^T (2^(gL - gam) .* Vn)
** Its backward, with dh = dS_L the gradient of the state leaving the chunk:
**   dVn = A^T dO + 2^(gL - gam) .* (K dh)                      (fla's dv2)
**   dS0 = 2^gL dh + (scale 2^gam .* Q)^T dO - W^T dVn          (the chunk before)
**   ds  = scale (dO Vn^T) .* G .* [j <= i]
**   dQ  = scale 2^gam .* (dO S0^T) + ds K
**   dK  = 2^(gL - gam) .* (Vn dh^T) + ds^T Q            (+ dK_L below; + dP if P = K)
**   dW  = -dVn S0^T,   dU = dVn
**   XW  = T^T dW,  XU = T^T dU
**   dT  = dW (diag(beta 2^gam) P)^T + dU (diag(beta) V)^T, strictly lower
**   dL  = -(T^T dT T^T) strictly lower,   dLt = diag(beta) (dL .* G)
**   dV  = beta .* XU
**   dP  = beta 2^gam .* XW + dLt K,   dK_L = dLt^T P
**   dbeta_i = XU_i . v_i + 2^gam_i XW_i . p_i + sum_j dL_ij G_ij (p_i . k_j)
**   dgam_i  = q_i.dq_i - k_i.(dK - dK_L... all k terms but dP) + p_i.dP_i
**             (written out: q.dQ - k.(dK_A+state) + p.dP - k.dK_L)
**             + [i = last] (2^gL <S0, dh> + sum_j k_j.(2^(gL-gam_j) Vn dh^T)_j)
**   dg_i    = sum_{i' >= i in the chunk} dgam_i'  (natural-log units: the base
**             cancels, d 2^(x log2 e) / dx = 2^(x log2 e))
** Products are mma.sync m16n8k16 bf16 -> fp32; states, gate sums and the
** gradient partial sums are fp32; T, Vn, dVn, dW and the per-chunk states
** h, dh are rounded to bf16 where they are stored or used as mma operands
** (as fla stores them). The walks' Vn = U - W S and dVn take S (dS), W and
** U as hi/lo bf16 pairs (fla rounds them): Vn is a small difference of large
** terms, and without a decay the rounding errors of long sequences reached
** dk at 5e-3 relative RMS.
**
** Four kernels:
**   fla_wyb_prep (NC, H): per chunk, fully parallel: gam; L and T = (I+L)^-1
**       (fp32, blocked 16 x 16 as chunk_wy_fwd's prep); W, U (hi/lo bf16 pairs); T
**       (bf16 [tok,H,64]); dVl = A^T dO (bf16, fla's dv_local).
**   fla_wyb_walk (N*NVW, H, 2): per sequence and value slice; z = 0: the
**       states, first chunk to last: h[c] = bf16(S) -> ws, Vn = U - W S
**       (bf16, over U), S = 2^gL S + K^T (2^(gL-gam) .* Vn); z = 1: their
**       gradients, last chunk to first: dh[c] = bf16(dS) -> ws,
**       dVn = dVl + 2^(gL-gam) .* (K dS) (bf16, over dVl),
**       dS = 2^gL dS + (scale 2^gam .* Q)^T dO - W^T dVn; dh0 = dS. The two
**       walks are independent and share the launch.
**   fla_wyb_dqk (NC, H): per chunk: dq (final, bf16), dK_A+state (f32 -> ws),
**       dW = -dVn h^T (bf16, over W), the dgam partial sums (f32 -> ws).
**   fla_wyb_wy (NC, H): per chunk: the WY part: dk (bf16), dp (probe), dv,
**       dbeta, dg (bf16; dg by a reverse cumsum within the chunk).
** Workspaces (each region 16-byte aligned; tok = total tokens):
**   ws0: W, then dW bf16 [tok,H,K] | h bf16 [NC,H,K,V] | dh bf16 [NC,H,K,V]
**        | dK partial f32 [tok,H,K] | W lo bf16 [tok,H,K] (W - bf16(W))
**   ws1: U, then Vn bf16 [tok,H,V] | dVl, then dVn bf16 [tok,H,V]
**        | T bf16 [tok,H,64] | dgam partial f32 [tok,H] | U lo bf16 [tok,H,V]
** Helpers from chunk_common.cuh, chunk_tiles.cuh and chunk_bwd_mm.cuh are
** included read-only; the rest is this file's own.
*/

#if FLA_BT != 64 || FLA_WARPS != 4
#error "chunk_wy_bwd: FLA_BT 64 and FLA_WARPS 4 only"
#endif
#if !FLA_DELTA || FLA_READ_BEFORE || FLA_DECAY > 2 || !FLA_IN_BF16 || FLA_HAS_BONUS || FLA_KEY_FROM_DECAY
#error "chunk_wy_bwd: delta rule with decay none, const or scalar, bf16 inputs only"
#endif
#if FLA_BV % 16 || FLA_K > 128 || FLA_V > 128
#error "chunk_wy_bwd: FLA_BV a multiple of 16; K, V <= 128"
#endif

#define CK_BT 64
#define CK_NW 4
#define CK_NTH (32 * CK_NW)
#define CK_LOG2E 1.4426950408889634f
/* state walks: warp w owns keys KW w .. KW w + KW - 1 of a K x BV slice */
#define CK_KW ((FLA_K + 16 * CK_NW - 1) / (16 * CK_NW) * 16)
#define CK_KP (CK_KW * CK_NW)
#define CK_MT (CK_KW / 16)
#define CK_LDQ (CK_KP + 8) /* smem row strides (elements): +16 bytes, no bank conflicts */
/* the walks' value slice BVW (a template parameter: FLA_BV or min(FLA_BV, 32)) */
#define WB_NTW (BVW / 8)
#define WB_NVW ((FLA_V + BVW - 1) / BVW)
#define WB_LDW (BVW + 8)
#define WB_NST 2 /* cp.async stages of the walks */
/* per-chunk kernels: whole K and V, padded to 16 */
#define C3_KP ((FLA_K + 15) / 16 * 16)
#define C3_VP ((FLA_V + 15) / 16 * 16)
#define C3_LDK (C3_KP + 8)
#define C3_LDV (C3_VP + 8)
#define C3_LDA (CK_BT + 8)
#define WB_LDF 68 /* fp32 L and T rows: 16-byte aligned for float4 */
/* The K- and V-wide products of the per-chunk kernels run in column windows
** of at most 64 (32 accumulators a thread: no register spills): the first
** WB_KA (WB_VA) columns, then the other WB_KB (WB_VB). */
#define WB_KA (C3_KP < 64 ? C3_KP : 64)
#define WB_KB (C3_KP - WB_KA)
#define WB_VA (C3_VP < 64 ? C3_VP : 64)
#define WB_VB (C3_VP - WB_VA)

//@include "chunk_common.cuh"
//@include "chunk_tiles.cuh"
//@include "chunk_bwd_mm.cuh"

__device__ __forceinline__ float wyb_gamma_h(const fla_kernel_args &a, int h) {
#if FLA_DECAY == 1
  return ((const float *)a.gamma)[h] * CK_LOG2E;
#else
  (void)a, (void)h;
  return 0.0f;
#endif
}

__device__ __forceinline__ float wyb_exp2(float x) {
#if FLA_DECAY
  return exp2f(x);
#else
  (void)x;
  return 1.0f;
#endif
}

/* ----------------------------------------------------------- workspaces */

__device__ __forceinline__ unsigned long long wyb_al(unsigned long long b) { return (b + 15) / 16 * 16; }

struct wyb_ws {
  unsigned short *W, *h, *dh, *U, *dV, *T, *Wl, *Ul;
  float *dkp, *dgp;
};

/* The regions of ws0 and ws1 (gen/stage_chunk_wy_bwd.c's workspace_ in step). */
__device__ __forceinline__ wyb_ws wyb_ws_of(const fla_kernel_args &a) {
  wyb_ws s;
  const unsigned long long rows = (unsigned long long)a.total * a.H;
  const unsigned long long st = (unsigned long long)a.num_chunks * a.H * FLA_K * FLA_V * 2;
  unsigned long long o = a.ws0;
  s.W = (unsigned short *)o, o += wyb_al(rows * FLA_K * 2);
  s.h = (unsigned short *)o, o += wyb_al(st);
  s.dh = (unsigned short *)o, o += wyb_al(st);
  s.dkp = (float *)o, o += wyb_al(rows * FLA_K * 4);
  s.Wl = (unsigned short *)o;
  o = a.ws1;
  s.U = (unsigned short *)o, o += wyb_al(rows * FLA_V * 2);
  s.dV = (unsigned short *)o, o += wyb_al(rows * FLA_V * 2);
  s.T = (unsigned short *)o, o += wyb_al(rows * CK_BT * 2);
  s.dgp = (float *)o, o += wyb_al(rows * 4);
  s.Ul = (unsigned short *)o;
  return s;
}

/* ------------------------------------------------------ warp products */

/* acc += X^T_rows Y: X [k][m] (row stride LDX) read transposed as the A
** operand (m = the warp's rows r0 .. r0+15), Y [k][n] (row stride LDY), KD
** reduction rows. */
template <int NT, int KD, int LDX, int LDY>
__device__ __forceinline__ void wyb_mm_tn(float (&acc)[NT][4], const unsigned short *Xs,
                                          const unsigned short *Ys, int r0, int lane) {
#pragma unroll
  for (int kk = 0; kk < KD / 16; kk++) {
    unsigned xa[4];
    ck_ldm4t(xa, ck_smem(Xs + (16 * kk + (lane >> 4) * 8 + (lane & 7)) * LDX + r0 +
                         ((lane >> 3) & 1) * 8));
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      unsigned yb[4];
      ck_ldm4t(yb, ck_smem(Ys + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDY + 16 * np +
                           (lane >> 4) * 8));
      ck_mma(acc[2 * np], xa, yb[0], yb[1]);
      ck_mma(acc[2 * np + 1], xa, yb[2], yb[3]);
    }
  }
}

/* acc rows (rA = r0 + g, rB = rA + 8) -> bf16 rows of smem (row stride LD). */
template <int NT, int LD>
__device__ __forceinline__ void wyb_to_smem(const float (&acc)[NT][4], unsigned short *Ds, int rA,
                                            int q) {
#pragma unroll
  for (int j = 0; j < NT; j++) {
    const int col = 8 * j + 2 * q;
    *(unsigned *)(Ds + rA * LD + col) = ck_pack(acc[j][0], acc[j][1]);
    *(unsigned *)(Ds + (rA + 8) * LD + col) = ck_pack(acc[j][2], acc[j][3]);
  }
}

template <int NT>
__device__ __forceinline__ void wyb_scale_rows(float (&acc)[NT][4], float fA, float fB) {
#pragma unroll
  for (int j = 0; j < NT; j++) {
    acc[j][0] *= fA, acc[j][1] *= fA;
    acc[j][2] *= fB, acc[j][3] *= fB;
  }
}

/* acc -= float(bf16(acc)): what the bf16 rounding of acc left out (the low
** half of a hi/lo pair). */
template <int NT>
__device__ __forceinline__ void wyb_residual(float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      float f[2];
      ck_unpack(ck_pack(acc[j][2 * hf], acc[j][2 * hf + 1]), f);
      acc[j][2 * hf] -= f[0], acc[j][2 * hf + 1] -= f[1];
    }
}

/* Row sums of the quad (every lane of the quad gets them). */
__device__ __forceinline__ float wyb_quad_sum(float s) {
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 2);
  return s;
}

/* The chunk's gate sums into gam[64] (warp 0; nothing without a decay). */
__device__ __forceinline__ void wyb_gates(const fla_kernel_args &a, const ck_chunk &x, int h,
                                          float *gam, int w, int lane) {
#if FLA_DECAY
  if (w == 0) {
    float g0 = 0.0f, g1 = 0.0f;
    ck_load_g(a, x, h, lane, g0, g1);
    ck_scan_g(gam, g0, g1, wyb_gamma_h(a, h), x.rows, lane);
  }
#else
  if (w == 0) gam[2 * lane] = gam[2 * lane + 1] = 0.0f;
  (void)a, (void)x, (void)h;
#endif
}

/* ------------------------------------------------ kernel 1: the prep */

/*
** Per chunk c (blockIdx.x) of head h (blockIdx.y): from P (, K), Q, V, dO,
** beta, g:
**   L = diag(beta) ((P K^T) .* G) strictly lower -> T = (I + L)^-1 in fp32:
**       the 16 x 16 diagonal blocks by forward substitution, the others
**       level by level, A_ij = -A_ii sum_{j<=m<i} L_im A_mj (fla's solve_tril);
**   T -> bf16 (ws T), W = T (beta 2^gam .* P), U = T (beta .* V) (bf16, ws),
**   A = scale (Q K^T) .* G .* [j <= i],  dVl = A^T dO (bf16, ws dV).
** Shared memory: Ps, Ks (probe), Qs [64][C3_LDK], Vs, Os [64][C3_LDV], As, Tb
** [64][C3_LDA] bf16; Lf, Tf [64][WB_LDF], gam, bet, fsc [64] f32.
*/
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_wyb_prep(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Ps = (unsigned short *)ck_sm;
#if FLA_HAS_PROBE
  unsigned short *Ks = Ps + CK_BT * C3_LDK;
  unsigned short *Qs = Ks + CK_BT * C3_LDK;
#else
  unsigned short *Ks = Ps;
  unsigned short *Qs = Ps + CK_BT * C3_LDK;
#endif
  unsigned short *Vs = Qs + CK_BT * C3_LDK;
  unsigned short *Os = Vs + CK_BT * C3_LDV;
  unsigned short *As = Os + CK_BT * C3_LDV;
  unsigned short *Tb = As + CK_BT * C3_LDA;
  float *Lf = (float *)(Tb + CK_BT * C3_LDA);
  float *Tf = Lf + CK_BT * WB_LDF;
  float *gam = Tf + CK_BT * WB_LDF;
  float *bet = gam + CK_BT;
  float *fsc = bet + CK_BT;
  const long long c = blockIdx.x;
  if (c >= a.num_chunks) return;
  const int h = blockIdx.y;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long H = a.H;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V;
  const wyb_ws ws = wyb_ws_of(a);

#if FLA_HAS_PROBE
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Ps, (const unsigned short *)a.p + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.p, 0, FLA_K), tid);
#endif
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Ks, (const unsigned short *)a.k + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.k, 0, FLA_K), tid);
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Qs, (const unsigned short *)a.q + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.q, 0, FLA_K), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Vs, (const unsigned short *)a.v + rv, H * FLA_V, rows,
                                         FLA_V, ckb_vec(a.v, 0, FLA_V), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Os, (const unsigned short *)a.d_o + rv, H * FLA_V, rows,
                                         FLA_V, ckb_vec(a.d_o, 0, FLA_V), tid);
  ck_commit();
  wyb_gates(a, x, h, gam, w, lane);
  if (tid < CK_BT) bet[tid] = tid < rows ? ck_ldgf(a.beta, (x.t0 + tid) * H + h) : 0.0f;
  ck_wait_all();
  __syncthreads();

  const int r0 = 16 * w, rA = r0 + g, rB = rA + 8;
  const float scale = a.scale;
  /* L (fp32) and A (bf16) for the warp's rows */
  {
    float acc[8][4];
    ckb_zero(acc);
    ckb_mm_nt<8, C3_KP, C3_LDK, C3_LDK>(acc, Ps, Ks, r0, lane);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 8 * j + 2 * q + (e & 1);
        Lf[r * WB_LDF + col] =
            (col < r && r < rows) ? bet[r] * acc[j][e] * wyb_exp2(gam[r] - gam[col]) : 0.0f;
      }
    ckb_zero(acc);
    ckb_mm_nt<8, C3_KP, C3_LDK, C3_LDK>(acc, Qs, Ks, r0, lane);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 8 * j + 2 * q + (e & 1);
        acc[j][e] = (col <= r && r < rows) ? scale * acc[j][e] * wyb_exp2(gam[r] - gam[col]) : 0.0f;
      }
    wyb_to_smem<8, C3_LDA>(acc, As, rA, q);
  }
  if (tid < CK_BT) fsc[tid] = bet[tid] * wyb_exp2(gam[tid]);
  __syncthreads();

  /* T: the diagonal blocks (one thread a column) while the other threads
  ** scale the operands Ps <- beta 2^gam .* P, Vs <- beta .* V */
  if (tid < CK_BT) {
    const int o = tid & ~15, jj = tid & 15;
    float xs[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
      float s = i == jj ? 1.0f : 0.0f;
      const float *Li = Lf + (o + i) * WB_LDF + o;
#pragma unroll
      for (int m = 0; m < i; m++) s -= Li[m] * xs[m];
      xs[i] = s;
    }
#pragma unroll
    for (int i = 0; i < 16; i++) Tf[(o + i) * WB_LDF + o + jj] = xs[i];
  } else {
    const int t = tid - CK_BT;
    for (int e = t; e < CK_BT * (C3_KP / 2); e += CK_NTH - CK_BT) {
      const int r = e / (C3_KP / 2), cc = 2 * (e % (C3_KP / 2));
      unsigned *pv = (unsigned *)(Ps + r * C3_LDK + cc);
      *pv = ck_scale2(*pv, fsc[r], fsc[r]);
    }
    for (int e = t; e < CK_BT * (C3_VP / 2); e += CK_NTH - CK_BT) {
      const int r = e / (C3_VP / 2), cc = 2 * (e % (C3_VP / 2));
      unsigned *pv = (unsigned *)(Vs + r * C3_LDV + cc);
      *pv = ck_scale2(*pv, bet[r], bet[r]);
    }
  }
  __syncthreads();
#pragma unroll
  for (int d = 1; d < 4; d++) {
    /* P_b = sum_{j<=m<i} L_im A_mj for the blocks (i, j) = (d + b, b), kept in
    ** T's unused upper block (b, 3) */
    for (int e = tid; e < (4 - d) * 64; e += CK_NTH) {
      const int b = e >> 6, r = (e >> 2) & 15, cl = 4 * (e & 3), i = d + b;
      const float *Lr = Lf + (16 * i + r) * WB_LDF;
      const float *Ac = Tf + 16 * b + cl;
      float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int m = 16 * b; m < 16 * b + 16 * d; m++) {
        const float l = Lr[m];
        const float4 v = *(const float4 *)(Ac + m * WB_LDF);
        s.x += l * v.x, s.y += l * v.y, s.z += l * v.z, s.w += l * v.w;
      }
      *(float4 *)(Tf + (16 * b + r) * WB_LDF + 48 + cl) = s;
    }
    __syncthreads();
    /* A_ij = -A_ii P_b (A_ii's upper triangle holds zeros) */
    for (int e = tid; e < (4 - d) * 64; e += CK_NTH) {
      const int b = e >> 6, r = (e >> 2) & 15, cl = 4 * (e & 3), i = d + b;
      const float *Ar = Tf + (16 * i + r) * WB_LDF + 16 * i;
      const float *Pc = Tf + 16 * b * WB_LDF + 48 + cl;
      float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int t = 0; t < 16; t++) {
        const float l = Ar[t];
        const float4 v = *(const float4 *)(Pc + t * WB_LDF);
        s.x -= l * v.x, s.y -= l * v.y, s.z -= l * v.z, s.w -= l * v.w;
      }
      *(float4 *)(Tf + (16 * i + r) * WB_LDF + 16 * b + cl) = s;
    }
    __syncthreads();
  }
  /* Tb = bf16(T), the upper triangle zero (the blocks above it hold scratch) */
  for (int e = tid; e < CK_BT * CK_BT / 2; e += CK_NTH) {
    const int r = e / (CK_BT / 2), cc = 2 * (e % (CK_BT / 2));
    const float t0 = cc <= r ? Tf[r * WB_LDF + cc] : 0.0f;
    const float t1 = cc + 1 <= r ? Tf[r * WB_LDF + cc + 1] : 0.0f;
    const unsigned u = ck_pack(t0, t1);
    *(unsigned *)(Tb + r * C3_LDA + cc) = u;
    if (r < rows) *(unsigned *)(ws.T + (x.t0 * H + h) * CK_BT + r * H * CK_BT + cc) = u;
  }
  __syncthreads();

  /* W, U, dVl for the warp's rows */
  {
    float acc[C3_KP / 8][4];
    ckb_zero(acc);
    ckb_mm_nn<C3_KP / 8, CK_BT, C3_LDA, C3_LDK>(acc, Tb, Ps, r0, lane);
    ckb_store_rows(acc, ws.W + rk, H * FLA_K, rA, rows, FLA_K, q);
    wyb_residual(acc);
    ckb_store_rows(acc, ws.Wl + rk, H * FLA_K, rA, rows, FLA_K, q);
  }
  {
    float acc[C3_VP / 8][4];
    ckb_zero(acc);
    ckb_mm_nn<C3_VP / 8, CK_BT, C3_LDA, C3_LDV>(acc, Tb, Vs, r0, lane);
    ckb_store_rows(acc, ws.U + rv, H * FLA_V, rA, rows, FLA_V, q);
    wyb_residual(acc);
    ckb_store_rows(acc, ws.Ul + rv, H * FLA_V, rA, rows, FLA_V, q);
    ckb_zero(acc);
    wyb_mm_tn<C3_VP / 8, CK_BT, C3_LDA, C3_LDV>(acc, As, Os, r0, lane);
    ckb_store_rows(acc, ws.dV + rv, H * FLA_V, rA, rows, FLA_V, q);
  }
}

/* ------------------------------------------------- kernel 2: the walks */

/* S = decay S + (X .* f)^T Y over a chunk: X [64][LDX] keys, Y [64][LDY]
** values (rows past the chunk are zero). MODE 0: decay 2^gL, f_t =
** 2^(gL - gam_t) (the state); MODE 1: decay 2^gL, f_t = scale 2^gam_t (its
** gradient, the output term); MODE 2: no decay, f_t = -1 (its gradient, the
** W^T dVn term). */
template <int BVW, int MODE, int LDX, int LDY>
__device__ __forceinline__ void wyb_update(float (&S)[CK_MT][WB_NTW][4], const unsigned short *Xs,
                                           const unsigned short *Ys, const float *gam, int rows,
                                           float scale, int w, int lane) {
  const int q = lane & 3;
  const float gL = gam[rows - 1];
#if FLA_DECAY
  if (MODE < 2) {
    const float eL = exp2f(gL);
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
      for (int j = 0; j < WB_NTW; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) S[mt][j][e] *= eL;
  }
#endif
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    unsigned xa[CK_MT][4];
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++) {
      int row = 16 * kk + (lane >> 4) * 8 + (lane & 7);
      int col = CK_KW * w + 16 * mt + ((lane >> 3) & 1) * 8;
      ck_ldm4t(xa[mt], ck_smem(Xs + row * LDX + col));
    }
    if (FLA_DECAY || MODE) {
      const int t = 16 * kk + 2 * q;
      float f[4];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int tt = t + (u & 1) + (u >> 1) * 8;
        f[u] = MODE == 0 ? wyb_exp2(gL - gam[tt]) : MODE == 1 ? scale * wyb_exp2(gam[tt]) : -1.0f;
      }
#pragma unroll
      for (int mt = 0; mt < CK_MT; mt++) {
        xa[mt][0] = ck_scale2(xa[mt][0], f[0], f[1]);
        xa[mt][1] = ck_scale2(xa[mt][1], f[0], f[1]);
        xa[mt][2] = ck_scale2(xa[mt][2], f[2], f[3]);
        xa[mt][3] = ck_scale2(xa[mt][3], f[2], f[3]);
      }
    }
#pragma unroll
    for (int np = 0; np < WB_NTW / 2; np++) {
      unsigned yb[4];
      int row = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
      int col = 16 * np + (lane >> 4) * 8;
      ck_ldm4t(yb, ck_smem(Ys + row * LDY + col));
#pragma unroll
      for (int mt = 0; mt < CK_MT; mt++) {
        ck_mma(S[mt][2 * np], xa[mt], yb[0], yb[1]);
        ck_mma(S[mt][2 * np + 1], xa[mt], yb[2], yb[3]);
      }
    }
  }
  (void)scale, (void)gL;
}

/* bf16(S) of the thread's elements -> dst[key * V + v0 + val] (one head's
** K x V, global) and Ss[key][val] (smem, row stride WB_LDW); the rounding's
** residual bf16(S - bf16(S)) -> Sl[key][val] (S = Ss + Sl to about 16 bits). */
template <int BVW>
__device__ __forceinline__ void wyb_state_out(const float (&S)[CK_MT][WB_NTW][4],
                                              unsigned short *dst, unsigned short *Ss,
                                              unsigned short *Sl, int v0, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
    for (int j = 0; j < WB_NTW; j++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int key = CK_KW * w + 16 * mt + g + 8 * hf;
        const int cl = 8 * j + 2 * q, col = v0 + cl;
        const float x0 = S[mt][j][2 * hf], x1 = S[mt][j][2 * hf + 1];
        unsigned u = ck_pack(x0, x1);
        float f[2];
        ck_unpack(u, f);
        *(unsigned *)(Ss + key * WB_LDW + cl) = u;
        *(unsigned *)(Sl + key * WB_LDW + cl) = ck_pack(x0 - f[0], x1 - f[1]);
        if (key >= FLA_K) continue;
        if (FLA_V % 2 == 0 && col + 1 < FLA_V) {
          *(unsigned *)(dst + (long long)key * FLA_V + col) = u;
        } else {
          if (col < FLA_V) dst[(long long)key * FLA_V + col] = (unsigned short)(u & 0xffffu);
          if (col + 1 < FLA_V) dst[(long long)key * FLA_V + col + 1] = (unsigned short)(u >> 16);
        }
      }
}

/* One stage of walk tiles: four [64][CK_LDQ] key tiles Xa..Xd and two
** [64][WB_LDW] value tiles Ya, Yb:
**   Z 0: Xa = K, Xb = W, Xd = W lo, Ya = U, Yb = U lo (Xc unused);
**   Z 1: Xa = K, Xb = W, Xc = Q, Xd = W lo, Ya = dO, Yb = dVl. */
#define WB_STAGE (4 * CK_BT * CK_LDQ + 2 * CK_BT * WB_LDW)

template <int BVW, int Z>
__device__ __forceinline__ void wyb_walk_load(const fla_kernel_args &a, const wyb_ws &ws,
                                              const ck_chunk &x, int h, int v0, int vcols,
                                              unsigned short *st, int tid) {
  const long long H = a.H;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V + v0;
  unsigned short *Xa = st, *Xb = Xa + CK_BT * CK_LDQ, *Xc = Xb + CK_BT * CK_LDQ;
  unsigned short *Xd = Xc + CK_BT * CK_LDQ;
  unsigned short *Ya = Xd + CK_BT * CK_LDQ, *Yb = Ya + CK_BT * WB_LDW;
  const int veck = FLA_K % 8 == 0, vecv = FLA_V % 8 == 0 && v0 % 8 == 0;
  ckb_load<CK_BT, CK_KP, CK_LDQ, CK_NTH>(Xa, (const unsigned short *)a.k + rk, H * FLA_K, x.rows,
                                         FLA_K, veck && ckb_vec(a.k, 0, FLA_K), tid);
  ckb_load<CK_BT, CK_KP, CK_LDQ, CK_NTH>(Xb, ws.W + rk, H * FLA_K, x.rows, FLA_K, veck, tid);
  ckb_load<CK_BT, CK_KP, CK_LDQ, CK_NTH>(Xd, ws.Wl + rk, H * FLA_K, x.rows, FLA_K, veck, tid);
  if (Z == 0) {
    ckb_load<CK_BT, BVW, WB_LDW, CK_NTH>(Ya, ws.U + rv, H * FLA_V, x.rows, vcols, vecv, tid);
    ckb_load<CK_BT, BVW, WB_LDW, CK_NTH>(Yb, ws.Ul + rv, H * FLA_V, x.rows, vcols, vecv, tid);
  } else {
    ckb_load<CK_BT, CK_KP, CK_LDQ, CK_NTH>(Xc, (const unsigned short *)a.q + rk, H * FLA_K,
                                           x.rows, FLA_K, veck && ckb_vec(a.q, 0, FLA_K), tid);
    ckb_load<CK_BT, BVW, WB_LDW, CK_NTH>(Ya, (const unsigned short *)a.d_o + rv, H * FLA_V,
                                           x.rows, vcols, vecv && ckb_vec(a.d_o, 0, FLA_V), tid);
    ckb_load<CK_BT, BVW, WB_LDW, CK_NTH>(Yb, ws.dV + rv, H * FLA_V, x.rows, vcols, vecv, tid);
  }
}

/*
** Kernel 2, blockIdx.z = 0 (the states): per sequence n (blockIdx.x / NVW),
** value slice, head h (blockIdx.y): S = h0[n] (or 0); for each chunk c of n
** in order:  h[c] = bf16(S);  Vn = U - W S (bf16, over U);
**            S = 2^gL S + K^T (2^(gL - gam) .* Vn).
** blockIdx.z = 1 (their gradients): dS = dht[n] (or 0); for each chunk c of
** n, last to first:  dh[c] = bf16(dS);  dVn = dVl + 2^(gL-gam) .* (K dS)
** (bf16, over dVl);  dS = 2^gL dS + (scale 2^gam .* Q)^T dO - W^T dVn;
** then dh0[n] = dS (f32; also for a sequence without tokens).
** Vn = U - W S is a difference of nearly equal terms (the delta rule writes
** what the state does not yet predict), so its operands are carried as
** hi/lo bf16 pairs (S, W, U; and dS, W in the gradient walk): each product
** is two or three mma, and the rounding of the state does not reach Vn.
** Tiles come through WB_NST cp.async stages. Shared memory: WB_NST stages
** (WB_STAGE bf16), Ss, Sl [CK_KP][WB_LDW], Ys [64][WB_LDW] bf16, gam [64] f32.
*/
template <int BVW>
__device__ __forceinline__ void wyb_walk_body(const fla_kernel_args &a, unsigned char *ck_sm) {
  unsigned short *stg = (unsigned short *)ck_sm;
  unsigned short *Ss = stg + WB_NST * WB_STAGE;
  unsigned short *Sl = Ss + CK_KP * WB_LDW;
  unsigned short *Ys = Sl + CK_KP * WB_LDW;
  float *gam = (float *)(Ys + CK_BT * WB_LDW);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int vt = blockIdx.x % WB_NVW, n = blockIdx.x / WB_NVW, h = blockIdx.y;
  const int z = blockIdx.z;
  const int v0 = vt * BVW, vcols = FLA_V - v0 < BVW ? FLA_V - v0 : BVW;
  const long long *cf = (const long long *)a.chunk_first;
  const long long *cu = (const long long *)a.cu;
  const long long c0 = cf[n], c1 = cf[n + 1], nc = c1 - c0;
  const long long t0n = cu[n], te = cu[n + 1];
  const long long H = a.H, KV = (long long)FLA_K * FLA_V;
  const long long so = ((long long)n * H + h) * KV;
  const wyb_ws ws = wyb_ws_of(a);
  const int r0 = 16 * w, rA = r0 + g, rB = rA + 8;
  float S[CK_MT][WB_NTW][4];
  if (z == 0) {
    if (nc <= 0) return;
    const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;
    ck_state_load<CK_KW>(S, h0 ? h0 + so : h0, v0, w, lane);
  } else {
    const float *dht = (const float *)a.dht;
    ck_state_load<CK_KW>(S, dht ? dht + so : dht, v0, w, lane);
  }
  /* step i: chunk c0 + i (z 0) or c1 - 1 - i (z 1) */
#pragma unroll
  for (int i = 0; i < WB_NST - 1; i++) {
    if (i < nc) {
      ck_chunk xi;
      ck_chunk_of(z ? c1 - 1 - i : c0 + i, c0, c1, n, t0n, te, xi);
      if (z) wyb_walk_load<BVW, 1>(a, ws, xi, h, v0, vcols, stg + i * WB_STAGE, tid);
      else wyb_walk_load<BVW, 0>(a, ws, xi, h, v0, vcols, stg + i * WB_STAGE, tid);
    }
    ck_commit();
  }
  for (long long i = 0; i < nc; i++) {
    const long long c = z ? c1 - 1 - i : c0 + i;
    if (i + WB_NST - 1 < nc) {
      const long long ip = i + WB_NST - 1;
      ck_chunk xi;
      ck_chunk_of(z ? c1 - 1 - ip : c0 + ip, c0, c1, n, t0n, te, xi);
      unsigned short *st = stg + (int)(ip % WB_NST) * WB_STAGE;
      if (z) wyb_walk_load<BVW, 1>(a, ws, xi, h, v0, vcols, st, tid);
      else wyb_walk_load<BVW, 0>(a, ws, xi, h, v0, vcols, st, tid);
    }
    ck_commit();
    ck_chunk x;
    ck_chunk_of(c, c0, c1, n, t0n, te, x);
    const int rows = x.rows;
    const unsigned short *st = stg + (int)(i % WB_NST) * WB_STAGE;
    const unsigned short *Xa = st, *Xb = Xa + CK_BT * CK_LDQ, *Xc = Xb + CK_BT * CK_LDQ;
    const unsigned short *Xd = Xc + CK_BT * CK_LDQ;
    const unsigned short *Ya = Xd + CK_BT * CK_LDQ, *Yb = Ya + CK_BT * WB_LDW;
    wyb_state_out<BVW>(S, (z ? ws.dh : ws.h) + (c * H + h) * KV, Ss, Sl, v0, w, lane);
    wyb_gates(a, x, h, gam, w, lane);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(WB_NST - 1));
    __syncthreads();
    const long long rv = (x.t0 * H + h) * FLA_V + v0;
    float acc[WB_NTW][4];
    ckb_zero(acc);
    /* z 0: Vn = U - W S;  z 1: dVn = dVl + 2^(gL - gam) .* (K dS) */
    const unsigned short *Xm = z ? Xa : Xb;
    ckb_mm_nn<WB_NTW, CK_KP, CK_LDQ, WB_LDW>(acc, Xm, Sl, r0, lane);
    if (z == 0) ckb_mm_nn<WB_NTW, CK_KP, CK_LDQ, WB_LDW>(acc, Xd, Ss, r0, lane);
    ckb_mm_nn<WB_NTW, CK_KP, CK_LDQ, WB_LDW>(acc, Xm, Ss, r0, lane);
    {
      const float gL = gam[rows - 1];
      const float fA = z ? wyb_exp2(gL - gam[rA]) : -1.0f, fB = z ? wyb_exp2(gL - gam[rB]) : -1.0f;
#pragma unroll
      for (int j = 0; j < WB_NTW; j++) {
        const int cl = 8 * j + 2 * q;
        float ya[2], yb[2];
        ck_unpack(*(const unsigned *)(Yb + rA * WB_LDW + cl), ya);
        ck_unpack(*(const unsigned *)(Yb + rB * WB_LDW + cl), yb);
        if (z == 0) { /* U = Ya + Yb */
          float ua[2], ub[2];
          ck_unpack(*(const unsigned *)(Ya + rA * WB_LDW + cl), ua);
          ck_unpack(*(const unsigned *)(Ya + rB * WB_LDW + cl), ub);
          ya[0] += ua[0], ya[1] += ua[1], yb[0] += ub[0], yb[1] += ub[1];
        }
        acc[j][0] = rA < rows ? fA * acc[j][0] + ya[0] : 0.0f;
        acc[j][1] = rA < rows ? fA * acc[j][1] + ya[1] : 0.0f;
        acc[j][2] = rB < rows ? fB * acc[j][2] + yb[0] : 0.0f;
        acc[j][3] = rB < rows ? fB * acc[j][3] + yb[1] : 0.0f;
      }
    }
    wyb_to_smem<WB_NTW, WB_LDW>(acc, Ys, rA, q);
    ckb_store_rows(acc, (z ? ws.dV : ws.U) + rv, H * FLA_V, rA, rows, vcols, q);
    __syncthreads();
    if (z == 0) {
      wyb_update<BVW, 0, CK_LDQ, WB_LDW>(S, Xa, Ys, gam, rows, 1.0f, w, lane);
    } else {
      wyb_update<BVW, 1, CK_LDQ, WB_LDW>(S, Xc, Ya, gam, rows, a.scale, w, lane);
      wyb_update<BVW, 2, CK_LDQ, WB_LDW>(S, Xd, Ys, gam, rows, 1.0f, w, lane);
      wyb_update<BVW, 2, CK_LDQ, WB_LDW>(S, Xb, Ys, gam, rows, 1.0f, w, lane);
    }
    __syncthreads();
  }
  ck_wait_all();
  if (z == 1 && a.dh0) ck_state_store<CK_KW>(S, (float *)a.dh0 + so, v0, w, lane);
}

/* The walks take narrow value slices BVW = min(FLA_BV, 32) (more programs:
** long sequences, few heads) or wide ones BVW = FLA_BV (K, Q and W read once
** for twice the columns: many heads). The launcher picks one by the program
** count (gen/stage_chunk_wy_bwd.c: wide_) and sizes the grid and the shared
** memory for it; the grid says which: N * ceil(V / FLA_BV) programs a head
** for the wide one (also when both counts are equal). */
#define WB_BVN (FLA_BV < 32 ? FLA_BV : 32)
extern "C" __global__ void __launch_bounds__(CK_NTH, 1) fla_wyb_walk(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  if (gridDim.x == (unsigned)a.N * ((FLA_V + FLA_BV - 1) / FLA_BV)) wyb_walk_body<FLA_BV>(a, ck_sm);
  else wyb_walk_body<WB_BVN>(a, ck_sm);
}

/* ---------------------------------------- kernel 3: dq, dk partial, dW */

/* Columns c0 .. c0 + 8 NT of dQ = fA/fB .* (dO h^T) + ds K (-> dq, bf16; q.dq
** added to qdq) and of dW = -dVn h^T (-> dW, bf16) for the warp's rows. */
template <int NT>
__device__ __forceinline__ void wyb_dq_cols(int c0, const unsigned short *Os,
                                            const unsigned short *Hs, const unsigned short *Ds,
                                            const unsigned short *Ks, const unsigned short *Qs,
                                            const unsigned short *dVs, unsigned short *dq,
                                            unsigned short *dW, long long ld, int r0, int rows,
                                            int lane, float fA, float fB, float &qdqA,
                                            float &qdqB) {
  const int q = lane & 3, rA = r0 + (lane >> 2);
  float acc[NT][4];
  ckb_zero(acc);
  ckb_mm_nt<NT, C3_VP, C3_LDV, C3_LDV>(acc, Os, Hs + c0 * C3_LDV, r0, lane);
  wyb_scale_rows(acc, fA, fB);
  ckb_mm_nn<NT, CK_BT, C3_LDA, C3_LDK>(acc, Ds, Ks + c0, r0, lane);
  ckb_store_rows(acc, dq + c0, ld, rA, rows, FLA_K - c0, q);
#if FLA_DECAY == 2
  float sA, sB;
  ckb_row_dot<NT, C3_LDK>(acc, Qs + c0, rA, q, sA, sB);
  qdqA += sA, qdqB += sB;
#else
  (void)Qs, (void)qdqA, (void)qdqB;
#endif
  ckb_zero(acc);
  ckb_mm_nt<NT, C3_VP, C3_LDV, C3_LDV>(acc, dVs, Hs + c0 * C3_LDV, r0, lane);
  wyb_scale_rows(acc, -1.0f, -1.0f);
  ckb_store_rows(acc, dW + c0, ld, rA, rows, FLA_K - c0, q);
}

/* Columns c0 .. c0 + 8 NT of dKp = fA/fB .* (Vn dh^T) + ds^T Q (-> dkp, f32)
** for the warp's rows; k.(the first term) added to kdi, k.dKp to kdk. */
template <int NT>
__device__ __forceinline__ void wyb_dkp_cols(int c0, const unsigned short *Ns,
                                             const unsigned short *dHs, const unsigned short *Ds,
                                             const unsigned short *Qs, const unsigned short *Ks,
                                             float *dkp, long long ld, int r0, int rows, int lane,
                                             float fA, float fB, float &kdiA, float &kdiB,
                                             float &kdkA, float &kdkB) {
  const int q = lane & 3, rA = r0 + (lane >> 2), rB = rA + 8;
  float acc[NT][4];
  ckb_zero(acc);
  ckb_mm_nt<NT, C3_VP, C3_LDV, C3_LDV>(acc, Ns, dHs + c0 * C3_LDV, r0, lane);
  wyb_scale_rows(acc, fA, fB);
#if FLA_DECAY == 2
  float sA, sB;
  ckb_row_dot<NT, C3_LDK>(acc, Ks + c0, rA, q, sA, sB);
  kdiA += sA, kdiB += sB;
#endif
  wyb_mm_tn<NT, CK_BT, C3_LDA, C3_LDK>(acc, Ds, Qs + c0, r0, lane);
#if FLA_DECAY == 2
  ckb_row_dot<NT, C3_LDK>(acc, Ks + c0, rA, q, sA, sB);
  kdkA += sA, kdkB += sB;
#else
  (void)Ks, (void)kdiA, (void)kdiB, (void)kdkA, (void)kdkB;
#endif
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int r = (e < 2) ? rA : rB, col = c0 + 8 * j + 2 * q + (e & 1);
      if (r < rows && col < FLA_K) dkp[r * ld + col] = acc[j][e];
    }
}

/*
** Per chunk c (blockIdx.x) of head h (blockIdx.y); warp w owns rows 16w ..:
**   ds = scale (dO Vn^T) .* G .* [j <= i]                     -> Ds (bf16)
**   dQ = scale 2^gam .* (dO h^T) + ds K                       -> dq (bf16)
**   dW = -dVn h^T                                             -> ws W (bf16)
**   dKp = 2^(gL - gam) .* (Vn dh^T) + ds^T Q                  -> ws dkp (f32)
**   dgp_i = q_i.dQ_i - k_i.dKp_i
**           + [i = last] (2^gL <h, dh> + sum_j k_j.(2^(gL-gam_j) Vn dh^T)_j)
** Shared memory: Qs, Ks [64][C3_LDK], Ns (Vn), Os (dO), dVs [64][C3_LDV],
** Hs, dHs [C3_KP][C3_LDV], Ds [64][C3_LDA] bf16; gam, dgs, kdi [64], red[8] f32.
*/
extern "C" __global__ void __launch_bounds__(CK_NTH, 1) fla_wyb_dqk(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Ks = Qs + CK_BT * C3_LDK;
  unsigned short *Ns = Ks + CK_BT * C3_LDK;
  unsigned short *Os = Ns + CK_BT * C3_LDV;
  unsigned short *dVs = Os + CK_BT * C3_LDV;
  unsigned short *Hs = dVs + CK_BT * C3_LDV;
  unsigned short *dHs = Hs + C3_KP * C3_LDV;
  unsigned short *Ds = dHs + C3_KP * C3_LDV;
  float *gam = (float *)(Ds + CK_BT * C3_LDA);
  float *dgs = gam + CK_BT;
  float *kdi = dgs + CK_BT;
  float *red = kdi + CK_BT;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long c = blockIdx.x;
  const int h = blockIdx.y;
  if (c >= a.num_chunks) return;
  const long long H = a.H, KV = (long long)FLA_K * FLA_V;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V;
  const long long sh = (c * H + h) * KV;
  const wyb_ws ws = wyb_ws_of(a);
  const int veck = FLA_K % 8 == 0, vecv = FLA_V % 8 == 0;

  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Qs, (const unsigned short *)a.q + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.q, 0, FLA_K), tid);
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Ks, (const unsigned short *)a.k + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.k, 0, FLA_K), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Ns, ws.U + rv, H * FLA_V, rows, FLA_V, vecv, tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Os, (const unsigned short *)a.d_o + rv, H * FLA_V, rows,
                                         FLA_V, ckb_vec(a.d_o, 0, FLA_V), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(dVs, ws.dV + rv, H * FLA_V, rows, FLA_V, vecv, tid);
  ck_commit();
  ckb_load<C3_KP, C3_VP, C3_LDV, CK_NTH>(Hs, ws.h + sh, FLA_V, FLA_K, FLA_V, vecv, tid);
  ck_commit();
  ckb_load<C3_KP, C3_VP, C3_LDV, CK_NTH>(dHs, ws.dh + sh, FLA_V, FLA_K, FLA_V, vecv, tid);
  ck_commit();
  wyb_gates(a, x, h, gam, w, lane);
  asm volatile("cp.async.wait_group 2;\n" ::);
  __syncthreads();
  (void)veck;

  const int r0 = 16 * w, rA = r0 + g, rB = rA + 8;
  const float scale = a.scale;
  const float gA = gam[rA], gB = gam[rB], gL = gam[rows - 1];

  /* ds for the warp's rows -> Ds */
  {
    float acc[8][4];
    ckb_zero(acc);
    ckb_mm_nt<8, C3_VP, C3_LDV, C3_LDV>(acc, Os, Ns, r0, lane);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 8 * j + 2 * q + (e & 1);
        acc[j][e] = (col <= r && r < rows)
                        ? scale * acc[j][e] * wyb_exp2(((e < 2) ? gA : gB) - gam[col])
                        : 0.0f;
      }
    wyb_to_smem<8, C3_LDA>(acc, Ds, rA, q);
  }
  asm volatile("cp.async.wait_group 1;\n" ::);
  __syncthreads();

  /* dQ, dW */
  float qdqA = 0.0f, qdqB = 0.0f;
  {
    const float fA = scale * wyb_exp2(gA), fB = scale * wyb_exp2(gB);
    unsigned short *dq = (unsigned short *)a.dq + rk, *dW = ws.W + rk;
    wyb_dq_cols<WB_KA / 8>(0, Os, Hs, Ds, Ks, Qs, dVs, dq, dW, H * FLA_K, r0, rows, lane, fA, fB,
                           qdqA, qdqB);
#if WB_KB
    wyb_dq_cols<WB_KB / 8>(64, Os, Hs, Ds, Ks, Qs, dVs, dq, dW, H * FLA_K, r0, rows, lane, fA, fB,
                           qdqA, qdqB);
#endif
  }
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();

  /* dKp */
  float kdkA = 0.0f, kdkB = 0.0f, kdiA = 0.0f, kdiB = 0.0f;
  {
    const float fA = wyb_exp2(gL - gA), fB = wyb_exp2(gL - gB);
    wyb_dkp_cols<WB_KA / 8>(0, Ns, dHs, Ds, Qs, Ks, ws.dkp + rk, H * FLA_K, r0, rows, lane, fA, fB,
                            kdiA, kdiB, kdkA, kdkB);
#if WB_KB
    wyb_dkp_cols<WB_KB / 8>(64, Ns, dHs, Ds, Qs, Ks, ws.dkp + rk, H * FLA_K, r0, rows, lane, fA,
                            fB, kdiA, kdiB, kdkA, kdkB);
#endif
  }

#if FLA_DECAY == 2
  /* the dgam partial sums (the reverse cumsum is the last kernel's) */
  if (q == 0) {
    dgs[rA] = rA < rows ? qdqA - kdkA : 0.0f;
    dgs[rB] = rB < rows ? qdqB - kdkB : 0.0f;
    kdi[rA] = kdiA, kdi[rB] = kdiB; /* rows past the chunk have k = 0 */
  }
  float hdh = 0.0f;
  for (int p = tid; p < FLA_K * (C3_VP / 2); p += CK_NTH) {
    const int kr = p / (C3_VP / 2), vc = 2 * (p % (C3_VP / 2));
    float hv[2], dv[2];
    ck_unpack(*(const unsigned *)(Hs + kr * C3_LDV + vc), hv);
    ck_unpack(*(const unsigned *)(dHs + kr * C3_LDV + vc), dv);
    hdh += hv[0] * dv[0] + hv[1] * dv[1];
  }
  hdh = fla_warp_sum(hdh);
  if (lane == 0) red[w] = hdh;
  __syncthreads();
  if (w == 0) {
    const float last = exp2f(gL) * (red[0] + red[1] + red[2] + red[3]) +
                       fla_warp_sum(kdi[2 * lane] + kdi[2 * lane + 1]);
    float d0 = dgs[2 * lane], d1 = dgs[2 * lane + 1];
    if (2 * lane == rows - 1) d0 += last;
    if (2 * lane + 1 == rows - 1) d1 += last;
    float *dgp = ws.dgp + x.t0 * H + h;
    if (2 * lane < rows) dgp[2 * lane * H] = d0;
    if (2 * lane + 1 < rows) dgp[(2 * lane + 1) * H] = d1;
  }
#else
  (void)dgs, (void)kdi, (void)red, (void)qdqA, (void)qdqB, (void)kdkA, (void)kdkB, (void)kdiA,
      (void)kdiB;
#endif
}

/* ------------------------------------------------ kernel 4: the WY part */

/* Columns c0 .. c0 + 8 NT of dP = beta 2^gam .* (T^T dW) + dLt K (-> dp with a
** probe) and dK = dKp + dLt^T P (+ dP without one) (-> dk) for the warp's
** rows; adds 2^gam (T^T dW).p to db, p.dP to pdp, k.(dLt^T P) to kdl. */
template <int NT>
__device__ __forceinline__ void wyb_dpdk_cols(int c0, const unsigned short *Tb,
                                              const unsigned short *dWs, const unsigned short *Ps,
                                              const unsigned short *Ks, const unsigned short *Ms,
                                              const float *dkp, unsigned short *dp,
                                              unsigned short *dk, long long ld, int r0, int rows,
                                              int lane, float eA, float eB, float bA, float bB,
                                              float &dbA, float &dbB, float &pdpA, float &pdpB,
                                              float &kdlA, float &kdlB) {
  const int q = lane & 3, rA = r0 + (lane >> 2), rB = rA + 8;
  float acc[NT][4], sA, sB;
  ckb_zero(acc);
  wyb_mm_tn<NT, CK_BT, C3_LDA, C3_LDK>(acc, Tb, dWs + c0, r0, lane);
  ckb_row_dot<NT, C3_LDK>(acc, Ps + c0, rA, q, sA, sB);
  dbA += eA * sA, dbB += eB * sB;
  wyb_scale_rows(acc, bA * eA, bB * eB);
  ckb_mm_nn<NT, CK_BT, C3_LDA, C3_LDK>(acc, Ms, Ks + c0, r0, lane);
  ckb_row_dot<NT, C3_LDK>(acc, Ps + c0, rA, q, sA, sB);
  pdpA += sA, pdpB += sB;
#if FLA_HAS_PROBE
  ckb_store_rows(acc, dp + c0, ld, rA, rows, FLA_K - c0, q);
  ckb_zero(acc);
#else
  (void)dp;
  const float pA = sA, pB = sB;
#endif
  wyb_mm_tn<NT, CK_BT, C3_LDA, C3_LDK>(acc, Ms, Ps + c0, r0, lane);
  ckb_row_dot<NT, C3_LDK>(acc, Ks + c0, rA, q, sA, sB);
#if FLA_HAS_PROBE
  kdlA += sA, kdlB += sB;
#else
  kdlA += sA - pA, kdlB += sB - pB; /* acc holds dP + dK_L, and P = K */
#endif
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int r = (e < 2) ? rA : rB, col = c0 + 8 * j + 2 * q + (e & 1);
      if (r < rows && col < FLA_K) acc[j][e] += dkp[r * ld + col];
    }
  ckb_store_rows(acc, dk + c0, ld, rA, rows, FLA_K - c0, q);
}

/* Columns c0 .. c0 + 8 NT of dV = beta .* (T^T dVn) (-> dv) for the warp's
** rows; adds (T^T dVn).v to db. */
template <int NT>
__device__ __forceinline__ void wyb_dv_cols(int c0, const unsigned short *Tb,
                                            const unsigned short *dVs, const unsigned short *Vs,
                                            unsigned short *dv, long long ld, int r0, int rows,
                                            int lane, float bA, float bB, float &dbA, float &dbB) {
  const int q = lane & 3, rA = r0 + (lane >> 2);
  float acc[NT][4], sA, sB;
  ckb_zero(acc);
  wyb_mm_tn<NT, CK_BT, C3_LDA, C3_LDV>(acc, Tb, dVs + c0, r0, lane);
  ckb_row_dot<NT, C3_LDV>(acc, Vs + c0, rA, q, sA, sB);
  dbA += sA, dbB += sB;
  wyb_scale_rows(acc, bA, bB);
  ckb_store_rows(acc, dv + c0, ld, rA, rows, FLA_V - c0, q);
}


/*
** Per chunk c (blockIdx.x) of head h (blockIdx.y); warp w owns rows 16w ..:
**   dT  = (dW P^T) .* beta_j 2^gam_j + (dVn V^T) .* beta_j, i > j   -> Ms
**   M1  = dT T^T                                                    -> Ls
**   dL  = -(T^T M1), i > j;  dLt = beta_i dL .* G                   -> Ms
**   dbL_i = sum_j dL_ij G_ij (P K^T)_ij
**   dP  = beta 2^gam .* (T^T dW) + dLt K       (dbW_i = 2^gam_i (T^T dW)_i . p_i)
**   dK  = dKp + dLt^T P  (+ dP without a probe)
**   dV  = beta .* (T^T dVn)                    (dbU_i = (T^T dVn)_i . v_i)
**   dbeta = dbU + dbW + dbL;  dgam = dgp + p.dP - k.dLt^T P;
**   dg = reverse cumsum of dgam within the chunk.
** Shared memory: Ks, Ps (probe), dWs [64][C3_LDK], Vs, dVs [64][C3_LDV],
** Tb, Ms, Ls [64][C3_LDA] bf16; gam, bet, dgs [64], PKf [64][WB_LDF] f32.
*/
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_wyb_wy(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Ks = (unsigned short *)ck_sm;
#if FLA_HAS_PROBE
  unsigned short *Ps = Ks + CK_BT * C3_LDK;
  unsigned short *dWs = Ps + CK_BT * C3_LDK;
#else
  unsigned short *Ps = Ks;
  unsigned short *dWs = Ks + CK_BT * C3_LDK;
#endif
  unsigned short *Vs = dWs + CK_BT * C3_LDK;
  unsigned short *dVs = Vs + CK_BT * C3_LDV;
  unsigned short *Tb = dVs + CK_BT * C3_LDV;
  unsigned short *Ms = Tb + CK_BT * C3_LDA;
  unsigned short *Ls = Ms + CK_BT * C3_LDA;
  float *gam = (float *)(Ls + CK_BT * C3_LDA);
  float *bet = gam + CK_BT;
  float *dgs = bet + CK_BT;
  float *PKf = dgs + CK_BT;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long c = blockIdx.x;
  const int h = blockIdx.y;
  if (c >= a.num_chunks) return;
  const long long H = a.H;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V;
  const wyb_ws ws = wyb_ws_of(a);
  const int veck = FLA_K % 8 == 0, vecv = FLA_V % 8 == 0;

  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Ks, (const unsigned short *)a.k + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.k, 0, FLA_K), tid);
#if FLA_HAS_PROBE
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Ps, (const unsigned short *)a.p + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.p, 0, FLA_K), tid);
#endif
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(dWs, ws.W + rk, H * FLA_K, rows, FLA_K, veck, tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Vs, (const unsigned short *)a.v + rv, H * FLA_V, rows,
                                         FLA_V, ckb_vec(a.v, 0, FLA_V), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(dVs, ws.dV + rv, H * FLA_V, rows, FLA_V, vecv, tid);
  ckb_load<CK_BT, CK_BT, C3_LDA, CK_NTH>(Tb, ws.T + (x.t0 * H + h) * CK_BT, H * CK_BT, rows, CK_BT,
                                         1, tid);
  ck_commit();
  wyb_gates(a, x, h, gam, w, lane);
  if (tid < CK_BT) bet[tid] = tid < rows ? ck_ldgf(a.beta, (x.t0 + tid) * H + h) : 0.0f;
  ck_wait_all();
  __syncthreads();

  const int r0 = 16 * w, rA = r0 + g, rB = rA + 8;
  const float gA = gam[rA], gB = gam[rB];
  /* dT -> Ms: the dW P^T columns scaled by 2^gam_j before dVn V^T is added */
  {
    float acc[8][4];
    ckb_zero(acc);
    ckb_mm_nt<8, C3_KP, C3_LDK, C3_LDK>(acc, dWs, Ps, r0, lane);
#if FLA_DECAY
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] *= exp2f(gam[8 * j + 2 * q + (e & 1)]);
#endif
    ckb_mm_nt<8, C3_VP, C3_LDV, C3_LDV>(acc, dVs, Vs, r0, lane);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 8 * j + 2 * q + (e & 1);
        acc[j][e] = (col < r && r < rows) ? bet[col] * acc[j][e] : 0.0f;
      }
    wyb_to_smem<8, C3_LDA>(acc, Ms, rA, q);
  }
  /* P K^T -> PKf (f32; each thread reads back only its own elements) */
  {
    float acc[8][4];
    ckb_zero(acc);
    ckb_mm_nt<8, C3_KP, C3_LDK, C3_LDK>(acc, Ps, Ks, r0, lane);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++)
        PKf[((e < 2) ? rA : rB) * WB_LDF + 8 * j + 2 * q + (e & 1)] = acc[j][e];
  }
  __syncwarp();
  /* M1 = dT T^T -> Ls (the warp's rows of dT only) */
  {
    float acc[8][4];
    ckb_zero(acc);
    ckb_mm_nt<8, CK_BT, C3_LDA, C3_LDA>(acc, Ms, Tb, r0, lane);
    wyb_to_smem<8, C3_LDA>(acc, Ls, rA, q);
  }
  __syncthreads();
  /* dL = -(T^T M1), dLt -> Ms, dbL */
  float dbA = 0.0f, dbB = 0.0f;
  {
    float acc[8][4];
    ckb_zero(acc);
    wyb_mm_tn<8, CK_BT, C3_LDA, C3_LDA>(acc, Tb, Ls, r0, lane);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 8 * j + 2 * q + (e & 1);
        const bool in = col < r && r < rows;
        const float G = wyb_exp2(((e < 2) ? gA : gB) - gam[col]);
        const float dl = in ? -acc[j][e] * G : 0.0f;
        const float pk = PKf[r * WB_LDF + col];
        if (e < 2) dbA += dl * pk;
        else dbB += dl * pk;
        acc[j][e] = dl * bet[r];
      }
    dbA = wyb_quad_sum(dbA), dbB = wyb_quad_sum(dbB);
    __syncwarp();
    wyb_to_smem<8, C3_LDA>(acc, Ms, rA, q); /* the warp's own rows: read by it only so far */
  }
  __syncthreads();

  /* dP, dK */
  float pdpA = 0.0f, pdpB = 0.0f, kdlA = 0.0f, kdlB = 0.0f;
  {
    const float eA = wyb_exp2(gA), eB = wyb_exp2(gB);
    unsigned short *dp = (unsigned short *)a.dp + rk, *dk = (unsigned short *)a.dk + rk;
    wyb_dpdk_cols<WB_KA / 8>(0, Tb, dWs, Ps, Ks, Ms, ws.dkp + rk, dp, dk, H * FLA_K, r0, rows,
                             lane, eA, eB, bet[rA], bet[rB], dbA, dbB, pdpA, pdpB, kdlA, kdlB);
#if WB_KB
    wyb_dpdk_cols<WB_KB / 8>(64, Tb, dWs, Ps, Ks, Ms, ws.dkp + rk, dp, dk, H * FLA_K, r0, rows,
                             lane, eA, eB, bet[rA], bet[rB], dbA, dbB, pdpA, pdpB, kdlA, kdlB);
#endif
  }
  /* dV */
  {
    unsigned short *dv = (unsigned short *)a.dv + rv;
    wyb_dv_cols<WB_VA / 8>(0, Tb, dVs, Vs, dv, H * FLA_V, r0, rows, lane, bet[rA], bet[rB], dbA,
                           dbB);
#if WB_VB
    wyb_dv_cols<WB_VB / 8>(64, Tb, dVs, Vs, dv, H * FLA_V, r0, rows, lane, bet[rA], bet[rB], dbA,
                           dbB);
#endif
  }
  if (a.dbeta && q == 0) {
    unsigned short *db = (unsigned short *)a.dbeta;
    if (rA < rows) db[(x.t0 + rA) * H + h] = fla_f32_to_bf16_bits(dbA);
    if (rB < rows) db[(x.t0 + rB) * H + h] = fla_f32_to_bf16_bits(dbB);
  }
#if FLA_DECAY == 2
  if (q == 0) {
    const float *dgp = ws.dgp + x.t0 * H + h;
    dgs[rA] = rA < rows ? dgp[rA * H] + pdpA - kdlA : 0.0f;
    dgs[rB] = rB < rows ? dgp[rB * H] + pdpB - kdlB : 0.0f;
  }
  __syncthreads();
  if (w == 0 && a.dg) {
    const float d0 = dgs[2 * lane], d1 = dgs[2 * lane + 1];
    /* suffix sums: sfx = the sum of d over rows >= 2 lane */
    float sfx = d0 + d1;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      float y = __shfl_down_sync(0xffffffffu, sfx, off);
      if (lane + off < 32) sfx += y;
    }
    unsigned short *dg = (unsigned short *)a.dg;
    const int ra = 2 * lane, rb = 2 * lane + 1;
    if (ra < rows) dg[(x.t0 + ra) * H + h] = fla_f32_to_bf16_bits(sfx);
    if (rb < rows) dg[(x.t0 + rb) * H + h] = fla_f32_to_bf16_bits(sfx - d0);
  }
#else
  (void)dgs, (void)pdpA, (void)pdpB, (void)kdlA, (void)kdlB;
#endif
}
