/*
** chunk_wy_fwd.cuh -- the chunkwise-parallel forward of the delta-rule (WY)
** family on tensor cores (stage FLA_STAGE_CHUNK_WY_FWD, gen/stage_chunk_wy.c).
**
** Keys handled: FLA_DELTA 1, FLA_DECAY 0 (none), 1 (const gamma[h]), 2
** (scalar g [tok,H]), FLA_HAS_PROBE 0/1 (p replaces k in L and W: Comba),
** FLA_READ_BEFORE 0, no bonus, no derived key, FLA_IN_BF16 1 (q, k, v, p, g,
** beta, o bf16; h0, ht, gamma f32). FLA_BT 64, FLA_WARPS 4 (the narrow state
** kernel takes 8 of its own), FLA_BV value
** columns a program of the output kernel (multiple of 16; the state kernels
** take min(BV, 32) or min(BV, 64)); K is never tiled.
**
** The math (runtime/cpu/chunk.c, fla-notes.md §2.4). Per chunk of C <= 64
** rows with S0 the state entering it, log gates in base 2 (g * log2 e),
** P = p (probe) or k:
**   gam_i = sum_{r <= i} g_r   (const decay: gam_i = gamma_h (i+1); none: 0)
**   L     = diag(beta) ((P K^T) .* 2^(gam_i - gam_j)), strictly lower (j < i)
**   T     = (I + L)^-1          (unit lower triangular)
**   W     = T diag(beta) (P .* 2^gam),   U = T diag(beta) V
**   Vn    = U - W S0
**   O     = scale [ diag(2^gam) Q S0 + ((Q K^T) .* M .* 2^(gam_i - gam_j)) Vn ]
**   S_L   = 2^gam_L S0 + K^T (Vn .* 2^(gam_L - gam))
** (with P = K in L for the plain delta rule: L uses P K^T = P P^T only when
** there is no probe; with a probe, L_ij = beta_i (p_i . k_j) 2^(gam_i - gam_j).)
**
** Five kernels, three or four launched (per-kernel timings and what limits
** each: bench/results/2026-11-23-chunk-wy-fwd-2.md and -4.md; the prep
** kernel: 2026-11-23-chunk-wy-prep.md):
**   fla_wy_prep  (NC, H), 128 threads: one chunk of one head, fully parallel.
**       gam by a warp scan -> ws1 after U ([NC,H,64] f32, for the others);
**       L by mma (fp32 accumulate) into fp32 smem; T = (I + L)^-1 in fp32
**       in place of L, blocked in 16 x 16 (fla's solve_tril): each warp
**       inverts its own diagonal block by forward substitution, then takes
**       columns of the off-diagonal blocks through all their levels (T's
**       columns do not mix: no block barrier); W = (T diag(beta 2^gam)) P
**       and U = (T diag(beta)) V by mma, the row scales applied to T's
**       fragments as they are rounded to bf16 (as fla's solve_tril output),
**       P and V raw bf16 (V <= 128: V's tile waits in registers and lands
**       over P's once W is done); stored in 16-byte rows -> ws0 = W bf16
**       [tok,H,K], ws1 = U bf16 [tok,H,V]. 39 KiB, 96 registers, 5 blocks
**       a SM for K = V = 128 (bench/results/2026-11-23-chunk-wy-prep.md).
**   fla_wy_fwd_h / fla_wy_fwd_h64 (NVH*N, H), 256 / 128 threads: one
**       (value tile of BVH = min(BV, 32) / min(BV, 64) columns, sequence,
**       head), the launcher runs one of the two by the program count;
**       sequential over the sequence's chunks with the K x BVH state slice
**       in fp32 registers (chunk_fwd's layout; with 8 warps each warp holds
**       its keys of one column half: "The state kernels' warps" below); per
**       chunk h[c] = bf16(S0) -> ws0 after W ([NC,H,K,V]), Vn = U - W h[c]
**       by mma, rounded to bf16 (fla's v_new) -> ws1 over U, then
**       S = 2^gam_L S0 + K^T (Vn .* 2^(gam_L - gam)). K, W, U, gam tiles in
**       2..4 cp.async stages, two barriers a chunk (three with Vd over Ss).
**   fla_wy_fwd_seg, with few programs over long sequences (see "segments"
**       below): the segment pass in front of fla_wy_fwd_h, which then runs
**       every segment of a sequence from its chained entering state.
**   fla_wy_fwd_o (NC*NV, H), 128 threads: fully parallel, chunk_fwd's output
**       of one chunk from Q, K, Vn, h[c] and gam (ck_o_chunk without the
**       update). Launched early (programmatic dependent launch on sm_90):
**       it runs beside the state kernel on the SMs that kernel leaves, its
**       blocks in chunk order, each waiting for its chunk's flag, which
**       the state programs count up as h[c] and Vn land (cw_flags);
**       bench/results/2026-11-23-chunk-wy-overlap.md.
** The output of a chunk and the state update are chunk_out.cuh's (shared
** with chunk_fwd.cuh).
*/

#if FLA_BT != 64 || FLA_WARPS != 4
#error "chunk_wy_fwd: FLA_BT 64 and FLA_WARPS 4 only"
#endif
#if !FLA_DELTA || FLA_READ_BEFORE || FLA_DECAY > 2 || !FLA_IN_BF16 || FLA_HAS_BONUS || FLA_KEY_FROM_DECAY
#error "chunk_wy_fwd: delta rule with decay none, const or scalar, bf16 inputs only"
#endif
#if FLA_BV % 16
#error "chunk_wy_fwd: FLA_BV must be a multiple of 16"
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
#define CK_LOG2E 1.4426950408889634f

//@include "chunk_common.cuh"
//@include "chunk_tiles.cuh"


//@include "chunk_out.cuh"

/* ------------------------------------------------ kernel 1: W and U */

/* fla_wy_prep's geometry: P padded to CK_KP keys, V padded to 64 columns. */
#define CW_VP ((FLA_V + 63) / 64 * 64)
#define CW_LDP CK_LDQ
#define CW_LDV1 (CW_VP + 8)
#define CW_LDL 68 /* fp32 L and T rows: 16-byte aligned for float4 */

#if FLA_HAS_PROBE
#define CW_NBUF_P 2 /* Ps (p) and Ks (k) */
#else
#define CW_NBUF_P 1
#endif

#ifndef CW_ST16 /* a harness knob: 1 stores W and U in 16-byte rows (quad transposes) */
#define CW_ST16 1
#endif
/* Lane q of a quad holds v = (M[q][0..3]) of the quad's 4 x 4 matrix M; after,
** v = (M[0..3][q]): two exchange stages (lanes q ^ 2, then q ^ 1). */
__device__ __forceinline__ void cw_quad_transpose(uint4 &v, int q) {
  {
    const int hi = q & 2;
    unsigned x0 = hi ? v.x : v.z, x1 = hi ? v.y : v.w;
    x0 = __shfl_xor_sync(0xffffffffu, x0, 2), x1 = __shfl_xor_sync(0xffffffffu, x1, 2);
    if (hi) v.x = x0, v.y = x1;
    else v.z = x0, v.w = x1;
  }
  {
    const int lo = q & 1;
    unsigned x0 = lo ? v.x : v.y, x1 = lo ? v.z : v.w;
    x0 = __shfl_xor_sync(0xffffffffu, x0, 1), x1 = __shfl_xor_sync(0xffffffffu, x1, 1);
    if (lo) v.x = x0, v.z = x1;
    else v.y = x0, v.w = x1;
  }
}

/* D[16w.., 0..NCOL) = T[16w.., 0..64) diag(csc) B[0..64, n0..n0+NG) for each
** NG-column group of B (bf16 [64][LDB] in smem), rows < rows and columns <
** ncols stored as bf16 to dst (row stride ld). T (fp32, fla_wy_prep's
** in-place layout: block (i, j) at rows 16 j.., columns 16 i.., cw_tblk) is
** scaled by csc and rounded to bf16 as its fragments are loaded (fla's
** solve_tril output is bf16); it is lower triangular: k-steps kk <= w only. */
template <int NCOL, int LDB, int NG = 64>
__device__ __forceinline__ void cw_tmul_store(const float *Tf, const unsigned short *Bs,
                                              unsigned short *dst, long long ld, int ncols,
                                              int rows, int w, int lane, const float *csc) {
  const int g = lane >> 2, q = lane & 3;
  const int rA = 16 * w + g, rB = rA + 8;
#pragma unroll
  for (int n0 = 0; n0 < NCOL; n0 += NG) {
    float acc[NG / 8][4];
#pragma unroll
    for (int j = 0; j < NG / 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      if (kk <= w) {
        unsigned ta[4];
        /* T's block (w, kk) at rows 16 kk.., columns 16 w.. (cw_tblk) */
        const float *tA = Tf + (16 * kk + g) * CW_LDL + 16 * w + 2 * q;
        const float *tB = tA + 8 * CW_LDL;
        float2 a0 = *(const float2 *)tA, a1 = *(const float2 *)tB;
        float2 a2 = *(const float2 *)(tA + 8), a3 = *(const float2 *)(tB + 8);
        { /* T diag(csc): the operand's row scale moved onto T's columns */
          const float2 s0 = *(const float2 *)(csc + 16 * kk + 2 * q);
          const float2 s8 = *(const float2 *)(csc + 16 * kk + 2 * q + 8);
          a0.x *= s0.x, a0.y *= s0.y, a1.x *= s0.x, a1.y *= s0.y;
          a2.x *= s8.x, a2.y *= s8.y, a3.x *= s8.x, a3.y *= s8.y;
        }
        ta[0] = ck_pack(a0.x, a0.y);
        ta[1] = ck_pack(a1.x, a1.y);
        ta[2] = ck_pack(a2.x, a2.y);
        ta[3] = ck_pack(a3.x, a3.y);
#pragma unroll
        for (int np = 0; np < NG / 16; np++) {
          unsigned vb[4];
          ck_ldm4t(vb, ck_smem(Bs + (16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDB + n0 +
                               16 * np + (lane >> 4) * 8));
          ck_mma(acc[2 * np], ta, vb[0], vb[1]);
          ck_mma(acc[2 * np + 1], ta, vb[2], vb[3]);
        }
      }
    }
#if CW_ST16
    /* 16-byte rows: the quad's 4 x 4 bf16 pairs transposed by shuffles, lane
    ** q then holds columns 8q..8q+7 of 32 (full 32-byte sectors a store) */
    if (NG % 32 == 0 && ncols % 8 == 0 && (ld & 7) == 0 && ((unsigned long long)dst & 15) == 0) {
#pragma unroll
      for (int jg = 0; jg < NG / 32; jg++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
          uint4 v = make_uint4(ck_pack(acc[4 * jg][2 * hh], acc[4 * jg][2 * hh + 1]),
                               ck_pack(acc[4 * jg + 1][2 * hh], acc[4 * jg + 1][2 * hh + 1]),
                               ck_pack(acc[4 * jg + 2][2 * hh], acc[4 * jg + 2][2 * hh + 1]),
                               ck_pack(acc[4 * jg + 3][2 * hh], acc[4 * jg + 3][2 * hh + 1]));
          cw_quad_transpose(v, q);
          const int col = n0 + 32 * jg + 8 * q, r = hh ? rB : rA;
          if (col < ncols && r < rows) *(uint4 *)(dst + r * ld + col) = v;
        }
      continue;
    }
#endif
#pragma unroll
    for (int j = 0; j < NG / 8; j++) {
      const int col = n0 + 8 * j + 2 * q;
      if (ncols % 2 == 0 && (ld & 1) == 0 && ((unsigned long long)dst & 3) == 0) { /* pairs */
        if (col < ncols) {
          if (rA < rows) *(unsigned *)(dst + rA * ld + col) = ck_pack(acc[j][0], acc[j][1]);
          if (rB < rows) *(unsigned *)(dst + rB * ld + col) = ck_pack(acc[j][2], acc[j][3]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
          if (r < rows && cl < ncols) {
            unsigned u = ck_pack(acc[j][e], 0.0f);
            dst[r * ld + cl] = (unsigned short)(u & 0xffffu);
          }
        }
      }
    }
  }
}

/* Where the chunks' gate sums gam start in ws1 (after U, 16-byte aligned):
** f32 [NC, H, 64], written by fla_wy_prep, read by the two other kernels. */
__device__ __forceinline__ float *cw_gws(const fla_kernel_args &a) {
  const unsigned long long ubytes = ((unsigned long long)a.total * a.H * FLA_V * 2 + 15) / 16 * 16;
  return (float *)(a.ws1 + ubytes);
}

/* The output kernel's flags, u32 [NC, H] after gam in ws1 (padded to 16
** bytes): how many value columns of h[c] and Vn the state programs have
** written for chunk c and head h. fla_wy_prep zeroes them; a state program
** adds its columns once the chunk's stores are visible GPU-wide; the output
** kernel waits for all V of them. So the output kernel can run beside the
** state kernel (launched early: gen/stage_chunk_wy.c) and is as right
** launched after it. */
__device__ __forceinline__ unsigned *cw_flags(const fla_kernel_args &a) {
  return (unsigned *)(cw_gws(a) + (long long)a.num_chunks * a.H * CK_BT);
}
/* Flags of chunks c0..c1 - 1 (f: head h's, stride H) up by cols: one thread,
** after a block barrier that follows every thread's stores. */
__device__ __forceinline__ void cw_flags_add(unsigned *f, long long c0, long long c1, long long H,
                                             unsigned cols) {
  __threadfence();
  for (long long c = c0; c < c1; c++) atomicAdd(f + c * H, cols);
}
/* One thread, then a block barrier before the reads it guards. */
__device__ __forceinline__ void cw_flag_wait(const unsigned *f, unsigned cols) {
  for (;;) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(f) : "memory");
    if (v >= cols) return;
    __nanosleep(64);
  }
}
/* Lets the kernel launched early after this one start (sm_90 on; else the
** launch waits for this kernel to end). */
__device__ __forceinline__ void cw_let_next_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
}

/* V's tile in registers (CW_VREG, V <= 128): loaded into registers at the
** start, its latency under L and the inverse, and stored (scaled by beta) over
** Lf once T is done, L being dead then: 17 KiB less shared memory, 4 blocks
** a SM instead of 3 (3 instead of 2 with a probe). CW_VPT: 16-byte pieces a
** thread. Keep smem_prep_() in gen/stage_chunk_wy.c in step. */
#ifndef CW_VREG /* a harness knob: 0 keeps V's tile in shared memory */
#define CW_VREG (CW_VP <= 128)
#endif
#define CW_VPT (CK_BT * CW_VP / 8 / CK_NTH)

#ifndef CW_ABL_INV /* a harness knob (timing only, wrong results): 1 skips the inverse, 2 L too */
#define CW_ABL_INV 0
#endif

/* fla_wy_prep: T = (I + L)^-1 is computed in
** place of L, so that the block keeps one 64 x 68 fp32 array instead of two
** (39 KiB of shared memory for K = V = 128 instead of 52):
**   - L's diagonal block (i, i) becomes T's (i, i) in place (a column of it
**     a lane, held in registers until the warp has read the block);
**   - T's off-diagonal block (i, j), i > j, goes to L's unused upper block
**     (j, i) (cw_tblk): rows 16 j.., columns 16 i..; L's lower blocks, read
**     by the later levels, are never overwritten;
**   - the row scales of the W and U operands (beta 2^gam for P, beta for V)
**     move onto T's columns as T's fragments are loaded (T diag(s) B =
**     T (diag(s) B)): no scaling pass over P and V;
**   - warp w owns L's rows 16w..: it inverts its own diagonal block right
**     after computing them, with no block barrier in between; then each
**     warp takes 8 columns of the off-diagonal blocks through all their
**     levels (cw_inv_cols: T's columns do not mix), no block barrier either;
**   - W and U leave in 16-byte rows (CW_ST16: quad transposes by shuffles);
**   - V's tile (V <= 128, CW_VREG) waits in registers and lands over P's
**     once W is done.
** Shared memory: Ps[64][LDP] (and Ks with a probe; with CW_VREG at least
** 64 x LDV1 for V's tile), Vs[64][LDV1] (not with CW_VREG), Lf[64][68] f32
** (L, then T), Sc[16][68] f32 (the levels' partial products), gam, bet, fsc
** [64] f32. Keep smem_prep_() in gen/stage_chunk_wy.c in step. */
#define CW_PREG0 (CW_NBUF_P * CK_BT * CW_LDP)
#define CW_PREG (CW_VREG && CK_BT * CW_LDV1 > CW_PREG0 ? CK_BT * CW_LDV1 : CW_PREG0)
#ifndef CW_INV_UNR /* the inverse's inner loops unrolled this far: what ptxas fits in 96
                      ** registers without spills (found by trial, K = V = 128) */
#define CW_INV_UNR (FLA_DECAY ? 8 : 2)
#endif
#ifndef CW_WNG /* W's columns a pass (V's tile is held in registers meanwhile) */
#define CW_WNG 32
#endif
#ifndef CW_PREP_MINB /* 96 registers: 5 blocks a SM (K = V = 128: 39 KiB of shared memory);
                        ** other shapes spill at 96 (ptxas) or are limited by shared memory */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900 /* sm_80's ptxas spills at 96 (delta_rule) */
#define CW_PREP_MINB 1
#else
#define CW_PREP_MINB (CK_KP == 128 && CW_VP == 128 && FLA_K % 8 == 0 && FLA_V % 8 == 0 && !FLA_HAS_PROBE ? 5 : 1)
#endif
#endif
/* T's block (i, j), i >= j, in Lf: row 0 of it (row stride CW_LDL) */
#define cw_tblk(Lf, i, j) ((Lf) + 16 * (j) * CW_LDL + 16 * (i))
/* T's blocks (i, cb), i > cb, for the 4 columns col0.. of column block cb,
** a lane row r (fla_wy_prep): level by level,
**   A_i,cb = -A_ii sum_{cb<=m<i} L_im A_m,cb,
** the partial product through the warp's own columns of Sc. */
__device__ __forceinline__ void cw_inv_cols(float *Lf, float *Sc, int cb, int col0, int r) {
  enum { NF = 1 }; /* float4s a lane */
  float *Pw = Sc + 16 * cb + col0;
  for (int i = cb + 1; i < 4; i++) {
    float4 s[NF];
#pragma unroll
    for (int f = 0; f < NF; f++) s[f] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float *Lr = Lf + (16 * i + r) * CW_LDL;
    for (int mb = cb; mb < i; mb++) {
      const float *Ac = cw_tblk(Lf, mb, cb) + col0;
#pragma unroll CW_INV_UNR
      for (int t = 0; t < 16; t++) {
        const float l = Lr[16 * mb + t];
#pragma unroll
        for (int f = 0; f < NF; f++) {
          const float4 v = *(const float4 *)(Ac + t * CW_LDL + 4 * f);
          s[f].x += l * v.x, s[f].y += l * v.y, s[f].z += l * v.z, s[f].w += l * v.w;
        }
      }
    }
#pragma unroll
    for (int f = 0; f < NF; f++) *(float4 *)(Pw + r * CW_LDL + 4 * f) = s[f];
    __syncwarp();
    const float *Ar = cw_tblk(Lf, i, i) + r * CW_LDL; /* A_ii, upper triangle 0 */
#pragma unroll
    for (int f = 0; f < NF; f++) s[f] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll CW_INV_UNR
    for (int t = 0; t < 16; t++) {
      const float l = Ar[t];
#pragma unroll
      for (int f = 0; f < NF; f++) {
        const float4 v = *(const float4 *)(Pw + t * CW_LDL + 4 * f);
        s[f].x -= l * v.x, s[f].y -= l * v.y, s[f].z -= l * v.z, s[f].w -= l * v.w;
      }
    }
#pragma unroll
    for (int f = 0; f < NF; f++) *(float4 *)(cw_tblk(Lf, i, cb) + r * CW_LDL + col0 + 4 * f) = s[f];
    __syncwarp();
  }
}

extern "C" __global__ void __launch_bounds__(CK_NTH, CW_PREP_MINB) fla_wy_prep(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Ps = (unsigned short *)ck_sm;
#if CW_VREG
  unsigned short *Vs = Ps; /* once W is done */
  float *Lf = (float *)(Ps + CW_PREG);
#else
  unsigned short *Vs = Ps + CW_PREG0;
  float *Lf = (float *)(Vs + CK_BT * CW_LDV1);
#endif
  float *Sc = Lf + CK_BT * CW_LDL;
  float *gam = Sc + 16 * CW_LDL;
  float *bet = gam + CK_BT;
  float *fsc = bet + CK_BT;
  const long long c = blockIdx.x;
  if (c >= a.num_chunks) return;
  const int h = blockIdx.y;
  /* no columns of chunk c written yet (first thing: later, at 96 registers, it spills) */
  if (threadIdx.x == 0) cw_flags(a)[c * a.H + h] = 0u;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long H = a.H;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V;
#if FLA_HAS_PROBE
  unsigned short *Ks = Ps + CK_BT * CW_LDP;
  const unsigned short *pp = (const unsigned short *)a.p;
  const int vecp = (FLA_K % 8 == 0) && (((a.p | a.k) & 15) == 0);
  ck_load_tile<CK_KP, CW_LDP, CK_NTH>(Ks, (const unsigned short *)a.k + rk, H * FLA_K, rows, FLA_K,
                                      vecp, tid);
#else
  const unsigned short *pp = (const unsigned short *)a.k;
  const int vecp = (FLA_K % 8 == 0) && ((a.k & 15) == 0);
  const unsigned short *Ks = Ps;
#endif
  const int vecv = (FLA_V % 8 == 0) && ((a.v & 15) == 0);
  ck_load_tile<CK_KP, CW_LDP, CK_NTH>(Ps, pp + rk, H * FLA_K, rows, FLA_K, vecp, tid);
#if CW_VREG
  /* piece i of this thread: row (tid + i NTH) / (VP / 8), 8 columns */
  uint4 vr[CW_VPT];
  {
    const unsigned short *vg = (const unsigned short *)a.v + rv;
#pragma unroll
    for (int i = 0; i < CW_VPT; i++) {
      const int pc = tid + i * CK_NTH, r = pc / (CW_VP / 8), cc = (pc % (CW_VP / 8)) * 8;
      const unsigned short *src = vg + r * H * FLA_V + cc;
      vr[i] = make_uint4(0u, 0u, 0u, 0u);
      if (r < rows && cc < FLA_V) {
        if (vecv) {
          vr[i] = *(const uint4 *)src;
        } else {
          unsigned e[8];
#pragma unroll
          for (int j = 0; j < 8; j++) e[j] = cc + j < FLA_V ? src[j] : 0u;
          vr[i] = make_uint4(e[0] | e[1] << 16, e[2] | e[3] << 16, e[4] | e[5] << 16, e[6] | e[7] << 16);
        }
      }
    }
  }
#else
  ck_load_tile<CW_VP, CW_LDV1, CK_NTH>(Vs, (const unsigned short *)a.v + rv, H * FLA_V, rows, FLA_V,
                                       vecv, tid);
#endif
  ck_commit();
  if (w == 0) {
    float g0, g1;
    ck_load_g(a, x, h, lane, g0, g1);
    ck_scan_g(gam, g0, g1, ck_gamma_h(a, h), rows, lane);
  }
  if (tid < CK_BT)
    bet[tid] = tid < rows ? ck_ldgf(a.beta, (x.t0 + tid) * H + h) : 0.0f;
  ck_wait_all();
  __syncthreads();
#if FLA_DECAY
  if (tid < CK_BT) cw_gws(a)[(c * H + h) * CK_BT + tid] = gam[tid];
#endif

  /* L = diag(beta) (P K^T .* 2^(gam_i - gam_j)), j < i: warp w rows 16w..
  ** (all 64 columns: the upper blocks' zeros are overwritten by T's), in two
  ** halves of 32 columns (16 accumulators: V's tile is held meanwhile) */
#if CW_ABL_INV < 2
#pragma unroll
  for (int nh = 0; nh < 2; nh++) {
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
    if (2 * nh <= w) {
#pragma unroll
      for (int kk = 0; kk < CK_KP / 16; kk++) {
        unsigned pa[4];
        ck_ldm4(pa, ck_smem(Ps + (16 * w + (lane & 15)) * CW_LDP + kk * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int np = 0; np < 2; np++) {
          if (2 * nh + np <= w) {
            unsigned kb[4];
            ck_ldm4(kb, ck_smem(Ks + (32 * nh + 16 * np + (lane >> 4) * 8 + (lane & 7)) * CW_LDP +
                                kk * 16 + ((lane >> 3) & 1) * 8));
            ck_mma(acc[2 * np], pa, kb[0], kb[1]);
            ck_mma(acc[2 * np + 1], pa, kb[2], kb[3]);
          }
        }
      }
    }
    const int rA = 16 * w + g, rB = rA + 8;
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = 32 * nh + 8 * j + 2 * q + (e & 1);
        float v = 0.0f;
        if (col < r && r < rows) {
#if FLA_DECAY
          v = bet[r] * acc[j][e] * exp2f(gam[r] - gam[col]);
#else
          v = bet[r] * acc[j][e];
#endif
        }
        Lf[r * CW_LDL + col] = v;
      }
  }
#endif
  __syncwarp();
#if !CW_ABL_INV
  /* A_ww = B_ww^-1 (B = I + L) by forward substitution, lane jj < 16 column
  ** jj, in place: all of L_ww read before any lane writes */
  if (lane < 16) {
    const int o = 16 * w;
    float xs[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
      float s = i == lane ? 1.0f : 0.0f;
      const float *Li = Lf + (o + i) * CW_LDL + o;
#pragma unroll
      for (int m = 0; m < i; m++) s -= Li[m] * xs[m];
      xs[i] = s;
    }
    __syncwarp(0xffffu);
#pragma unroll
    for (int i = 0; i < 16; i++) Lf[(o + i) * CW_LDL + o + lane] = xs[i];
  }
#endif
  if (tid < CK_BT) {
#if FLA_DECAY
    fsc[tid] = bet[tid] * exp2f(gam[tid]);
#else
    fsc[tid] = bet[tid];
#endif
  }
  __syncthreads();

#if !CW_ABL_INV
  /* T's off-diagonal blocks (fla's solve_tril, level by level in i - j):
  **   A_ij = -A_ii sum_{j<=m<i} L_im A_mj.
  ** T's columns do not mix: column block j's blocks need only A_mj of the
  ** same columns, the diagonal A_ii and L. So each warp takes columns and
  ** all their levels, with no block barrier: 8 columns of column block 0
  ** (3 blocks: 144 row-steps) for warps 0 and 1, 8 columns of blocks 1 and
  ** 2 (2 + 1 blocks: 112) for warps 2 and 3; a lane a row and 4 columns.
  ** P_b goes through the warp's own columns of Sc. */
  if (w < 2) {
    cw_inv_cols(Lf, Sc, 0, 8 * w + 4 * (lane >> 4), lane & 15);
  } else {
    cw_inv_cols(Lf, Sc, 1, 8 * (w - 2) + 4 * (lane >> 4), lane & 15);
    cw_inv_cols(Lf, Sc, 2, 8 * (w - 2) + 4 * (lane >> 4), lane & 15);
  }
#endif
  __syncthreads();

  /* W = T diag(beta 2^gam) P -> ws0 */
  cw_tmul_store<CK_KP, CW_LDP, CW_WNG>(Lf, Ps, (unsigned short *)a.ws0 + rk, H * FLA_K, FLA_K, rows, w,
                                  lane, fsc);
#if CW_VREG
  __syncthreads(); /* P read: V's tile over it */
#pragma unroll
  for (int i = 0; i < CW_VPT; i++) {
    const int pc = tid + i * CK_NTH, r = pc / (CW_VP / 8), cc = (pc % (CW_VP / 8)) * 8;
    *(uint4 *)(Vs + r * CW_LDV1 + cc) = vr[i];
  }
  __syncthreads();
#endif
  /* U = T diag(beta) V -> ws1 */
  cw_tmul_store<CW_VP, CW_LDV1>(Lf, Vs, (unsigned short *)a.ws1 + rv, H * FLA_V, FLA_V, rows, w,
                                   lane, bet);
}

/* ----------------------------------------- kernel 2: the chunk states */

/* The state kernel's value tile BVH is a template parameter: fla_wy_fwd_h
** takes min(BV, 32) columns (more programs, a short chain a chunk: long
** sequences, few heads), fla_wy_fwd_h64 min(BV, 64) (half the programs,
** each loading K and W once for twice the columns: many heads). The
** launcher runs one of them by the program count (gen/stage_chunk_wy.c).
** These macros read the BVH in scope. */
#ifndef CW_NARROW /* a harness knob: the narrow tile's cap (16: twice the programs; needs CW_SEG_PROGS=0) */
#define CW_NARROW 32
#endif
#define CW_BVH32 (FLA_BV < CW_NARROW ? FLA_BV : CW_NARROW)
#define CW_BVH64 (FLA_BV < 64 ? FLA_BV : 64)
#define CW_NTH (BVH / 8)
#define CW_NVH ((FLA_V + BVH - 1) / BVH)
#define CW_LDVH (BVH + 8)

/* The state kernels' warps NW: 4, or 8 (256 threads) with the value tile
** split in two column halves: warp w owns keys CK_KW (w % 4).. (as with 4)
** of columns (w / 4) BVH / 2.., so each warp's mma chains are half as long
** (W S0: 16 mma a warp in two chains of 4 k-steps instead of 32 in chains
** of 8; the update 16 instead of 32) and two warps share each scheduler.
** Measured on the H100 (bench/results/2026-11-23-chunk-wy-fwd-5.md) it
** does not pay where it was meant to (one block a SM, 2,16384,16: 0.60 ms
** against 0.54 with 4 warps; W and K fragments loaded twice) and gains 2%
** at two blocks a SM, so every kernel ships with 4; 8 stays a knob. 8 needs
** BVH >= 32 (a warp's half must fill one ldmatrix.x4: 16 columns).
** CW_H_WARPS: fla_wy_fwd_h, CW_SEG_WARPS: fla_wy_fwd_seg, CW_H64_WARPS:
** fla_wy_fwd_h64 (harness knobs; the defaults are WY_*_WARPS in
** gen/stage_chunk_wy.c: keep in step). */
#ifndef CW_H_WARPS
#define CW_H_WARPS 4
#endif
#ifndef CW_SEG_WARPS
#define CW_SEG_WARPS 4
#endif
#ifndef CW_H64_WARPS
#define CW_H64_WARPS 4
#endif
#define CW_HW(knob, bvh) ((knob) == 8 && (bvh) >= 32 ? 8 : 4)

/* CW_LATE 1..3: the next stage's loads are issued after the chunk's first
** barrier (into the stage the previous chunk used, which every warp is then
** done with), so the barrier at the end of a chunk goes (two a chunk instead
** of three; the same loads in flight): 1 right after that barrier, 2 after
** W S0's mma (their issue under the mma latency), 3 after the update's. 0:
** issued first thing in the chunk, three barriers. Not with Vd over Ss
** (BVH > 32): there the next chunk's S0 would overwrite Vd under the
** update. A harness knob; measured (2026-11-23-chunk-wy-fwd-5.md, with
** CW_FAST_LOAD) 1 is best at one block a SM (2,16384,16: 0.466 ms, 2: 0.493,
** 3: 0.473, 0: 0.57 without CW_FAST_LOAD) and within 2% of the others at two.
** CW_WARP_OUT 1: h[c] and Vn leave shared memory for global (16-byte
** pieces) by the warp that wrote them, right after it wrote them (a
** __syncwarp, no barrier), instead of by all threads between barriers.
** A harness knob, off: it measured 0-12% slower. */
#ifndef CW_LATE
#define CW_LATE 1
#endif
#ifndef CW_WARP_OUT
#define CW_WARP_OUT 0
#endif
#ifndef CW_FLAG_EVERY /* a harness knob: the output kernel's flags set every this many chunks */
#define CW_FLAG_EVERY 16
#endif

/* Where the chunk states start in ws0 (after W, 16-byte aligned). */
__device__ __forceinline__ unsigned short *cw_hws(const fla_kernel_args &a) {
  const unsigned long long wbytes = ((unsigned long long)a.total * a.H * FLA_K * 2 + 15) / 16 * 16;
  return (unsigned short *)(a.ws0 + wbytes);
}

/* The state kernel's pipeline depth: with few programs (long sequences,
** few heads: one block a SM on at most half the SMs) the loads of CW_NS_FEW
** chunks are in flight to hide the memory latency on the sequential path;
** with more, 2 stages, and room on the SM for a second state block or an
** output block. Keep in step with stages_h_() in gen/stage_chunk_wy.c. */
#ifndef CW_FEW /* a harness knob: 0 keeps 2 stages always */
#define CW_FEW 64
#endif
#define CW_NS_FEW (CK_KP <= 128 ? 4 : 2)
__device__ __forceinline__ int cw_stages(const fla_kernel_args &a, int tiles) {
  return (long long)tiles * a.N * a.H <= CW_FEW ? CW_NS_FEW : 2; /* tiles a sequence */
}

/* ------------------------------------ segments of long sequences */

/* With few programs (long sequences, few heads: 1 x 262144 x 8 heads runs 32
** programs on 132 SMs) the state kernel's serial chain is the forward's
** time. The recurrence is affine in the state: per chunk
**   S' = 2^gL S + Kd^T (U - W S) = A_c S + Kd^T U,   A_c = 2^gL I - Kd^T W
** (Kd = K .* 2^(gL - gam)), so a run of chunks (a segment s) maps its
** entering state S_s to S_{s+1} = M_s S_s + B_s, with B_s the state it
** leaves from S_s = 0 and M_s = prod A_c the one it leaves from S_s = I with
** U = 0. Each sequence is cut into P segments of whole chunks:
**   fla_wy_fwd_seg  every segment from 0 (value tiles: B_s) and from I
**                   with U = 0 (key tiles: M_s), tiles of the wide width
**                   (min(BV, 64)) -> ws1 after gam,
**                   f32 [N*P, H, K, V + K] (B_s | M_s);
**   fla_wy_fwd_h    every segment again, its entering state first chained
**                   in fp32 from h0 (S_0 = h0, S_{j+1} = M_j S_j + B_j, for
**                   its value slice), then the usual chunk loop writing
**                   h[c] and Vn for the output kernel.
** About 3x the state work (K + V columns, then V) on P times the programs.
** P (1: no segments) is computed alike here and in segments_() of
** gen/stage_chunk_wy.c from the narrow kernel's program count: only when
** it is at most CW_SEG_PROGS (more, and the output kernel beside the
** unsegmented state kernel pays more), about CW_SEG_TARGET programs of the last pass
** (two blocks a SM on the H100's 132), segments of CW_SEG_MIN chunks or
** more. Keep the two in step. */
#ifndef CW_SEG_PROGS /* a harness knob: 0 turns segments off */
#define CW_SEG_PROGS 32
#endif
#define CW_SEG_TARGET 256
#define CW_SEG_MIN 16
#define CW_NVH32 ((FLA_V + CW_BVH32 - 1) / CW_BVH32)
#define CW_VK (FLA_V + FLA_K) /* columns of a segment's B_s | M_s */

__device__ __forceinline__ int cw_segments(const fla_kernel_args &a) {
  const long long programs = (long long)CW_NVH32 * a.N * a.H;
  if (a.N < 1 || programs < 1 || programs > CW_SEG_PROGS) return 1;
  long long p = CW_SEG_TARGET / programs;
  const long long pmax = (long long)a.num_chunks / a.N / CW_SEG_MIN;
  if (p > pmax) p = pmax;
  return p < 2 ? 1 : (int)p;
}

/* Chunks [c0, c1) of segment p of sequence n (P segments a sequence). */
__device__ __forceinline__ void cw_seg_range(const fla_kernel_args &a, int n, int p, int P,
                                             long long &c0, long long &c1) {
  const long long *cf = (const long long *)a.chunk_first;
  const long long f = cf[n], len = cf[n + 1] - f;
  if (P == 1) {
    c0 = f, c1 = f + len;
  } else {
    c0 = f + len * p / P;
    c1 = f + len * (p + 1) / P;
  }
}

/* Where the segments' B_s | M_s start in ws1 (after U, gam and the flags). */
__device__ __forceinline__ float *cw_segws(const fla_kernel_args &a) {
  return (float *)(cw_flags(a) + ((long long)a.num_chunks * a.H + 3) / 4 * 4);
}

/* cp.async.wait_group ns - 1: the oldest of ns groups in flight has landed
** (ns 1..4). */
__device__ __forceinline__ void cw_wait_oldest(int ns) {
  if (ns >= 4)
    asm volatile("cp.async.wait_group 3;\n" ::);
  else if (ns == 3)
    asm volatile("cp.async.wait_group 2;\n" ::);
  else if (ns == 2)
    asm volatile("cp.async.wait_group 1;\n" ::);
  else
    asm volatile("cp.async.wait_group 0;\n" ::);
}

/* S = 2^gam_L S + K^T Vd, Vd = Vn .* 2^(gam_L - gam) rounded to bf16 (as
** fla's chunk_delta_h scales v_new, not k): ck_state_update without the
** gate work on the K fragments. */
template <int BVH, int NTW>
__device__ __forceinline__ void cw_state_update(float (&S)[CK_MT][NTW][4],
                                                const unsigned short *Ks, const unsigned short *Vs,
                                                const float *gam, int rows, int w, int cb, int lane) {
#if FLA_DECAY
  const float eL = exp2f(gam[rows - 1]);
#pragma unroll
  for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
    for (int j = 0; j < NTW; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) S[mt][j][e] *= eL;
#else
  (void)gam, (void)rows;
#endif
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    unsigned ka[CK_MT][4];
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++) {
      int row = 16 * kk + (lane >> 4) * 8 + (lane & 7);
      int col = CK_KW * w + 16 * mt + ((lane >> 3) & 1) * 8;
      ck_ldm4t(ka[mt], ck_smem(Ks + row * CK_LDQ + col));
    }
#pragma unroll
    for (int np = 0; np < NTW / 2; np++) {
      unsigned vb[4];
      int row = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
      int col = cb + 16 * np + (lane >> 4) * 8;
      ck_ldm4t(vb, ck_smem(Vs + row * CW_LDVH + col));
#pragma unroll
      for (int mt = 0; mt < CK_MT; mt++) {
        ck_mma(S[mt][2 * np], ka[mt], vb[0], vb[1]);
        ck_mma(S[mt][2 * np + 1], ka[mt], vb[2], vb[3]);
      }
    }
  }
}

/* dst[r * ld + c] = src[r * CW_LDVH + c] for r < nrows, c < ncols (a
** multiple of 8), in 16-byte pieces: the state kernel's h[c] and Vn leave
** from shared memory whole rows at a time (FLA_V % 8 == 0: dst aligned). */
template <int BVH, int NTH>
__device__ __forceinline__ void cw_rows_out(unsigned short *dst, long long ld,
                                            const unsigned short *src, int nrows, int ncols,
                                            int tid) {
  for (int p = tid; p < nrows * (BVH / 8); p += NTH) {
    const int r = p / (BVH / 8), c = (p % (BVH / 8)) * 8;
    if (c < ncols) *(uint4 *)(dst + r * ld + c) = *(const uint4 *)(src + r * CW_LDVH + c);
  }
}


/* dst[r * ld + c] = src[r * CW_LDVH + c] for the warp's rows r0..r0+NR
** (r < nrows) and columns c0..c0+NC (c < ncols, a multiple of 8), in
** 16-byte pieces (FLA_V % 8 == 0: dst aligned): h[c] and Vn leave by the
** warp that wrote them to shared memory (CW_WARP_OUT). */
template <int BVH, int NR, int NC>
__device__ __forceinline__ void cw_warp_rows_out(unsigned short *dst, long long ld,
                                                 const unsigned short *src, int r0, int c0,
                                                 int nrows, int ncols, int lane) {
#pragma unroll
  for (int p = lane; p < NR * (NC / 8); p += 32) {
    const int r = r0 + p / (NC / 8), c = c0 + (p % (NC / 8)) * 8;
    if (r < nrows && c < ncols) *(uint4 *)(dst + r * ld + c) = *(const uint4 *)(src + r * CW_LDVH + c);
  }
}

/* ck_load_tile for the state kernel's loop: a whole tile (nrows = 64, ncols
** = COLS, 16-byte aligned) takes a fixed row and column a thread and fully
** unrolled pieces, one address add each (the masked loop's divisions,
** compares and 64-bit products were a large part of the instructions a
** chunk: the kernel issues ~1 instruction in 3 cycles from one warp a
** scheduler); anything else takes ck_load_tile, and so does the wide state
** kernel (FAST 0: at 255 registers it spilled with it and ran 2% slower;
** the segment pass, also wide, writes nothing a chunk and has the room).
** CW_FAST_LOAD: a harness knob. */
#ifndef CW_FAST_LOAD
#define CW_FAST_LOAD 1
#endif
template <int COLS, int LDS, int NTH, bool FAST>
__device__ __forceinline__ void cw_load_tile(unsigned short *s, const unsigned short *g, long long ld,
                                             int nrows, int ncols, int vec, int tid) {
  constexpr int P = COLS / 8, RS = NTH / P, N = CK_BT * P / NTH;
  if (FAST && CW_FAST_LOAD && NTH % P == 0 && (CK_BT * P) % NTH == 0 && vec && nrows == CK_BT &&
      ncols == COLS) {
    const int r0 = tid / P, c = (tid % P) * 8;
    const unsigned short *gp = g + r0 * ld + c;
    const unsigned sp = ck_smem(s + r0 * LDS + c);
    const long long step = RS * ld;
#pragma unroll
    for (int i = 0; i < N; i++) ck_cp16(sp + i * RS * LDS * 2, gp + i * step, 1);
  } else {
    ck_load_tile<COLS, LDS, NTH>(s, g, ld, nrows, ncols, vec, tid);
  }
}

/* Starts the loads of chunk c (at x) for value columns v0.. into one stage
** (one cp.async group, committed by the caller); uload 0 leaves U out (the
** segment pass's key tiles, whose U is 0). */
template <int BVH, int NTH, bool FAST>
__device__ __forceinline__ void cw_h_fetch(const fla_kernel_args &a, const ck_chunk &x, long long c,
                                           int h, int v0, int vcols, int veck, int vecv, int uload,
                                           unsigned short *Kd, unsigned short *Wd,
                                           unsigned short *Ud, float *gd, int tid) {
  const long long H = a.H, ro = x.t0 * H + h;
  cw_load_tile<CK_KP, CK_LDQ, NTH, FAST>(Kd, (const unsigned short *)a.k + ro * FLA_K, H * FLA_K,
                                   x.rows, FLA_K, veck, tid);
  cw_load_tile<CK_KP, CK_LDQ, NTH, FAST>(Wd, (const unsigned short *)a.ws0 + ro * FLA_K, H * FLA_K,
                                   x.rows, FLA_K, veck, tid);
  if (uload)
    cw_load_tile<BVH, CW_LDVH, NTH, FAST>(Ud, (const unsigned short *)a.ws1 + ro * FLA_V + v0,
                                       H * FLA_V, x.rows, vcols, vecv, tid);
#if FLA_DECAY
  if (tid < CK_BT / 4) ck_cp16(ck_smem(gd + 4 * tid), cw_gws(a) + (c * H + h) * CK_BT + 4 * tid, 1);
#else
  (void)c, (void)gd;
#endif
}

/* The loads of chunk cfe (at xf) into stage fbuf as one cp.async group
** (empty past c1, so that wait_group counts the same throughout), then xf
** and cfe on to the next chunk. */
template <int BVH, int NTH, bool FAST>
__device__ __forceinline__ void cw_h_fetch_next(const fla_kernel_args &a, ck_chunk &xf, long long &cfe,
                                                long long c1, int h, int v0, int vcols, int veck,
                                                int vecv, int uload, unsigned short *Ks,
                                                unsigned short *Ws, unsigned short *Us, float *gs,
                                                int fbuf, int tid) {
  if (cfe < c1) {
    cw_h_fetch<BVH, NTH, FAST>(a, xf, cfe, h, v0, vcols, veck, vecv, uload, Ks + fbuf * CK_BT * CK_LDQ,
                               Ws + fbuf * CK_BT * CK_LDQ, Us + fbuf * CK_BT * CW_LDVH,
                               gs + fbuf * CK_BT, tid);
    if (cfe + 1 < c1) ck_chunk_next(a, cfe, xf);
    cfe++;
  }
  ck_commit();
}

/* dst[key * ld + col] = S[key][col] for key < K, col < ncols (the warp's
** part of the slice: dst and ncols relative to its first column). */
template <int NT>
__device__ __forceinline__ void cw_state_store_ld(const float (&S)[CK_MT][NT][4], float *dst,
                                                  long long ld, int ncols, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = CK_KW * w + 16 * mt + g + (e >> 1) * 8, col = 8 * j + 2 * q + (e & 1);
        if (key < FLA_K && col < ncols) dst[key * ld + col] = S[mt][j][e];
      }
}

/* The state entering segment p of sequence n, value columns v0.. (vcols):
**   S_0 = h0 (or 0),   S_{j+1} = M_j S_j + B_j   (j < p, fp32)
** from the segment pass's B_j | M_j (cw_segws), into S. Work space: 2 KP x
** BVH f32 over the stage buffers (before the first load is issued). A
** thread a key row: M_j's row from global (L2), S_j's rows from shared
** memory (every thread reads the same row: a broadcast). */
template <int BVH, int NTW, int NTH>
__device__ __forceinline__ void cw_seg_enter(const fla_kernel_args &a, float (&S)[CK_MT][NTW][4],
                                             const float *h0n, int n, int p, int P, int h, int v0,
                                             int vcols, float *wsp, int tid, int w, int cb,
                                             int lane) {
  float *Sa = wsp, *Sb = wsp + CK_KP * BVH;
  for (int i = tid; i < CK_KP * BVH; i += NTH) {
    const int r = i / BVH, cc = i % BVH;
    Sa[i] = (h0n && r < FLA_K && cc < vcols) ? h0n[(long long)r * FLA_V + v0 + cc] : 0.0f;
    Sb[i] = 0.0f;
  }
  __syncthreads();
  const long long H = a.H;
  for (int j = 0; j < p; j++) {
    const float *BM = cw_segws(a) + (((long long)n * P + j) * H + h) * FLA_K * CW_VK;
    for (int r = tid; r < FLA_K; r += NTH) {
      float acc[BVH];
#pragma unroll
      for (int cc = 0; cc < BVH; cc++) acc[cc] = 0.0f;
      const float *Mr = BM + (long long)r * CW_VK + FLA_V;
#pragma unroll 2
      for (int m = 0; m < FLA_K; m++) {
        const float mv = Mr[m];
        const float4 *Sm = (const float4 *)(Sa + m * BVH);
#pragma unroll
        for (int c4 = 0; c4 < BVH / 4; c4++) {
          const float4 s4 = Sm[c4];
          acc[4 * c4] += mv * s4.x, acc[4 * c4 + 1] += mv * s4.y;
          acc[4 * c4 + 2] += mv * s4.z, acc[4 * c4 + 3] += mv * s4.w;
        }
      }
      const float *Br = BM + (long long)r * CW_VK + v0;
#pragma unroll
      for (int cc = 0; cc < BVH; cc++) Sb[r * BVH + cc] = cc < vcols ? acc[cc] + Br[cc] : 0.0f;
    }
    __syncthreads();
    float *t = Sa;
    Sa = Sb, Sb = t;
  }
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
    for (int jn = 0; jn < NTW; jn++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = CK_KW * w + 16 * mt + g + (e >> 1) * 8, col = cb + 8 * jn + 2 * q + (e & 1);
        S[mt][jn][e] = Sa[key * BVH + col];
      }
  __syncthreads(); /* the stage buffers are free for the loads */
}

/* Program (value tile vt, segment p of sequence n, head h), the segment's
** chunks in order (the whole sequence when P = 1), the K x BVH state slice
** S in fp32 registers (NW = 8: each warp its keys of one column half).
** Per chunk, S0 = S:
**   h[c]  = bf16(S0)                     -> ws0 after W ([NC,H,K,V] bf16)
**   Vn    = U - W h[c]                   -> ws1 over U (bf16), and smem
**   S     = 2^gam_L S0 + (K .* 2^(gam_L - gam))^T Vn
** gam comes from fla_wy_prep (cw_gws). The loads of the next ns - 1 chunks
** are in flight while one is computed (ns = cw_stages()). Barriers a
** chunk: S0 and the stage in smem | W S0, Vn and Vd, h[c] out | the update,
** Vn out | (Ss and the stage free again; not with CW_LATE, whose loads
** wait for the next chunk's first barrier); the wide kernel puts Vd over Ss
** (smem for two blocks a SM) and so needs one more, after W S0.
** SEG 1 (fla_wy_fwd_seg): the segment pass. Tiles vt < NVH are value tiles
** from S = 0 (B_s), the next ceil(K / BVH) key tiles from S = I with U = 0
** (M_s); nothing but the final S is written (-> cw_segws). SEG 0 with
** P > 1 starts from cw_seg_enter's chained state.
** Shared memory: Ks, Ws [ns][64][LDQ], Us [ns][64][LDVH], Ss [KP][LDVH],
** Vd [64][LDVH] (over Ss's first rows when BVH > 32) bf16, gs [ns][64] f32. */
template <int BVH, int SEG, int NW, int LOOPFLAGS>
__device__ __forceinline__ void cw_fwd_h(const fla_kernel_args &a, unsigned char *ck_sm) {
  constexpr int NTH = 32 * NW;
  constexpr int BVW = BVH * 4 / NW; /* columns a warp */
  constexpr int NTW = BVW / 8;      /* its n-tiles */
  constexpr int NA = NW / 4;        /* W S0's k-steps in NA interleaved chains */
  static_assert(NW == 4 || (NW == 8 && BVH >= 32), "8 warps need BVH >= 32");
  /* (the wide state kernel never has segments: its registers are at the limit) */
  const int P = (SEG || BVH <= 32) ? cw_segments(a) : 1;
  constexpr int NVT = CW_NVH + (SEG ? (FLA_K + BVH - 1) / BVH : 0); /* tiles a segment */
  const int ns = cw_stages(a, NVT * P);
  unsigned short *Ks = (unsigned short *)ck_sm;
  unsigned short *Ws = Ks + ns * CK_BT * CK_LDQ;
  unsigned short *Us = Ws + ns * CK_BT * CK_LDQ;
  unsigned short *Ss = Us + ns * CK_BT * CW_LDVH;
  /* Vd = Vn .* 2^(gam_L - gam), the update's operand: over Ss in the wide
  ** kernel (two blocks a SM; one more barrier a chunk), else its own */
  constexpr bool alias = BVH > 32;
  constexpr int late = alias ? 0 : CW_LATE; /* where the next stage's loads go */
  constexpr bool wout = CW_WARP_OUT && FLA_V % 8 == 0 && !SEG;
  constexpr bool fast = !alias || SEG; /* cw_load_tile's whole tiles: not in the wide kernel */
  unsigned short *Vd = alias ? Ss : Ss + CK_KP * CW_LDVH;
  float *gs = (float *)(Ss + (alias ? CK_KP : CK_KP + CK_BT) * CW_LDVH);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  /* the warp's keys CK_KW wk.., columns cb.. (4 warps: w, 0) */
  const int wk = NW == 8 ? (w & 3) : w, cb = NW == 8 ? (w >> 2) * BVW : 0;
  if (!SEG) cw_let_next_start(); /* the output kernel: it waits on cw_flags */
  const int vt = blockIdx.x % NVT;
  const int seg = blockIdx.x / NVT;
  const int n = seg / P, p = seg % P;
  const int h = blockIdx.y;
  if (n >= a.N) return;
  const bool ktile = SEG && vt >= CW_NVH; /* a key tile of the segment pass: M_s */
  const int v0 = (ktile ? vt - CW_NVH : vt) * BVH;
  const int width = ktile ? FLA_K : FLA_V;
  const int vcols = width - v0 < BVH ? width - v0 : BVH;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  long long c0, c1;
  cw_seg_range(a, n, p, P, c0, c1);
  const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;
  const float *h0n = h0 ? h0 + ((long long)n * H + h) * KV : h0;
  float *segout = SEG ? cw_segws(a) + ((long long)seg * H + h) * FLA_K * CW_VK + (ktile ? FLA_V : 0) + v0
                      : (float *)0;

  float S[CK_MT][NTW][4];
  if (SEG) {
    ck_state_zero(S);
    if (ktile) /* S = I on the tile's keys v0.. */
#pragma unroll
      for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
        for (int j = 0; j < NTW; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int key = CK_KW * wk + 16 * mt + g + (e >> 1) * 8;
            const int col = cb + 8 * j + 2 * q + (e & 1);
            if (col < vcols && key == v0 + col) S[mt][j][e] = 1.0f;
          }
  } else if (P > 1 && p > 0) {
    cw_seg_enter<BVH, NTW, NTH>(a, S, h0n, n, p, P, h, v0, vcols, (float *)ck_sm, tid, wk, cb, lane);
  } else {
    ck_state_load<CK_KW>(S, h0n, v0 + cb, wk, lane);
  }
  if (c0 >= c1) {
    if (SEG) {
      cw_state_store_ld(S, segout + cb, CW_VK, vcols - cb, wk, lane);
    } else {
#if FLA_STORE_HT
      if (p == P - 1) /* the sequence is empty: every segment is */
        ck_state_store<CK_KW>(S, (float *)a.ht + ((long long)n * H + h) * KV, v0 + cb, wk, lane);
#endif
    }
    return;
  }
  unsigned short *up = (unsigned short *)a.ws1;
  unsigned short *hws = cw_hws(a);
  const int veck = (FLA_K % 8 == 0) && (((a.k | a.ws0) & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && ((a.ws1 & 15) == 0);
  const int uload = !ktile;

  /* the first ns - 1 stages; a group is committed for every stage, empty
  ** past the last chunk, so that wait_group counts the same throughout */
  ck_chunk xf; /* the next chunk to fetch, cfe */
  ck_chunk_at(a, c0, xf);
  long long cfe = c0;
  for (int st = 0; st < ns - 1; st++)
    cw_h_fetch_next<BVH, NTH, fast>(a, xf, cfe, c1, h, v0, vcols, veck, vecv, uload, Ks, Ws, Us, gs,
                                      st, tid);
  ck_chunk x;
  ck_chunk_at(a, c0, x);

  int buf = 0, fbuf = ns - 1; /* the stages of chunk c and of chunk cfe */
  for (long long c = c0; c < c1; c++) {
    const int rows = x.rows;
    if (late == 0) /* the next stage's loads (fbuf), first thing */
      cw_h_fetch_next<BVH, NTH, fast>(a, xf, cfe, c1, h, v0, vcols, veck, vecv, uload, Ks, Ws, Us, gs, fbuf, tid);
    /* S0 as bf16: the B operand of W S0, and h[c] for the output kernel */
    unsigned short *hc = hws + (c * H + h) * KV + v0;
#pragma unroll
    for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
      for (int j = 0; j < NTW; j++) {
        const int key = CK_KW * wk + 16 * mt + g, col = cb + 8 * j + 2 * q;
        const unsigned lo = ck_pack(S[mt][j][0], S[mt][j][1]);
        const unsigned hi = ck_pack(S[mt][j][2], S[mt][j][3]);
        *(unsigned *)(Ss + key * CW_LDVH + col) = lo;
        *(unsigned *)(Ss + (key + 8) * CW_LDVH + col) = hi;
        if (SEG) continue; /* the segment pass writes no h[c] */
#if FLA_V % 8 == 0
        /* h[c] leaves from Ss in 16-byte rows (cw_rows_out below) */
#elif FLA_V % 2 == 0
        if (col < vcols) {
          if (key < FLA_K) *(unsigned *)(hc + (long long)key * FLA_V + col) = lo;
          if (key + 8 < FLA_K) *(unsigned *)(hc + (long long)(key + 8) * FLA_V + col) = hi;
        }
#else
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int kk = key + (e >> 1) * 8, cl = col + (e & 1);
          const unsigned u = (e >> 1) ? hi : lo;
          if (kk < FLA_K && cl < vcols)
            hc[(long long)kk * FLA_V + cl] = (unsigned short)((e & 1) ? (u >> 16) : (u & 0xffffu));
        }
#endif
      }
#if FLA_V % 8 == 0
    if (wout) { /* h[c]: the warp's keys and columns, which it just wrote */
      __syncwarp();
      cw_warp_rows_out<BVH, CK_KW, BVW>(hc, FLA_V, Ss, CK_KW * wk, cb, FLA_K, vcols, lane);
    }
#endif
    if (late) /* chunk c's group: ns - 2 younger ones in flight */
      cw_wait_oldest(ns - 1);
    else
      cw_wait_oldest(ns);
    __syncthreads();
    /* the flags of chunks c - CW_FLAG_EVERY..c - 1 every CW_FLAG_EVERY
    ** chunks: every thread's stores of their h[c] and Vn are behind the
    ** barrier. One fence for them all (a fence a chunk costs the kernel 8%,
    ** one in 4 chunks 2%) */
    if (LOOPFLAGS && tid == 0 && c > c0 && (c - c0) % CW_FLAG_EVERY == 0)
      cw_flags_add(cw_flags(a) + h, c - CW_FLAG_EVERY, c, H, vcols);
    if (late == 1) /* into the stage chunk c - 1 used: every warp is past it */
      cw_h_fetch_next<BVH, NTH, fast>(a, xf, cfe, c1, h, v0, vcols, veck, vecv, uload, Ks, Ws, Us, gs, fbuf, tid);

    const unsigned short *Kb = Ks + buf * CK_BT * CK_LDQ;
    const unsigned short *Wb = Ws + buf * CK_BT * CK_LDQ;
    unsigned short *Ub = Us + buf * CK_BT * CW_LDVH;
    const float *gam = gs + buf * CK_BT;
#if FLA_V % 8 == 0
    if (!SEG && !wout && alias) cw_rows_out<BVH, NTH>(hc, FLA_V, Ss, FLA_K, vcols, tid); /* h[c], while Ss holds it */
#endif

    /* Vn = U - W S0 for the warp's rows 16 wk.., columns cb.., over U in
    ** smem and in ws1 */
    {
      float acc[NA][NTW][4];
#pragma unroll
      for (int i = 0; i < NA; i++)
#pragma unroll
        for (int j = 0; j < NTW; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < CK_KP / 16; kk++) {
        unsigned wa[4];

        ck_ldm4(wa, ck_smem(Wb + (16 * wk + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int np = 0; np < NTW / 2; np++) {
          unsigned sb[4];
          ck_ldm4t(sb, ck_smem(Ss + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * CW_LDVH +
                               cb + 16 * np + (lane >> 4) * 8));
          ck_mma(acc[kk % NA][2 * np], wa, sb[0], sb[1]);
          ck_mma(acc[kk % NA][2 * np + 1], wa, sb[2], sb[3]);
        }
      }
      if (late == 2) /* issued while the mma finish */
        cw_h_fetch_next<BVH, NTH, fast>(a, xf, cfe, c1, h, v0, vcols, veck, vecv, uload, Ks, Ws, Us, gs, fbuf, tid);
#pragma unroll
      for (int i = 1; i < NA; i++)
#pragma unroll
        for (int j = 0; j < NTW; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) acc[0][j][e] += acc[i][j][e];
      if (alias) __syncthreads(); /* every warp is done with Ss: Vd takes its place */
      const int rA = 16 * wk + g, rB = rA + 8;
#if FLA_DECAY
      const float gL = gam[rows - 1];
      const float fA = exp2f(gL - gam[rA]), fB = exp2f(gL - gam[rB]);
#else
      const float fA = 1.0f, fB = 1.0f;
#endif
#if FLA_V % 8 != 0
      unsigned short *urow = up + (x.t0 * H + h) * FLA_V + v0;
#endif
#pragma unroll
      for (int j = 0; j < NTW; j++) {
        const int col = cb + 8 * j + 2 * q;
        unsigned *pa = (unsigned *)(Ub + rA * CW_LDVH + col);
        unsigned *pb = (unsigned *)(Ub + rB * CW_LDVH + col);
        const unsigned ua = uload ? *pa : 0u, ub = uload ? *pb : 0u;
        const float va0 = __uint_as_float(ua << 16) - acc[0][j][0];
        const float va1 = __uint_as_float(ua & 0xffff0000u) - acc[0][j][1];
        const float vb0 = __uint_as_float(ub << 16) - acc[0][j][2];
        const float vb1 = __uint_as_float(ub & 0xffff0000u) - acc[0][j][3];
        const unsigned na = ck_pack(va0, va1), nb = ck_pack(vb0, vb1);
        if (!SEG) *pa = na, *pb = nb;
        *(unsigned *)(Vd + rA * CW_LDVH + col) = ck_pack(fA * va0, fA * va1);
        *(unsigned *)(Vd + rB * CW_LDVH + col) = ck_pack(fB * vb0, fB * vb1);
        if (SEG) continue;
#if FLA_V % 8 == 0
        /* Vn leaves from Ub in 16-byte rows (cw_warp_rows_out / cw_rows_out below) */
#elif FLA_V % 2 == 0
        if (col < vcols) {
          if (rA < rows) *(unsigned *)(urow + rA * H * FLA_V + col) = na;
          if (rB < rows) *(unsigned *)(urow + rB * H * FLA_V + col) = nb;
        }
#else
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
          const unsigned u = (e < 2) ? na : nb;
          if (r < rows && cl < vcols)
            urow[r * H * FLA_V + cl] = (unsigned short)((e & 1) ? (u >> 16) : (u & 0xffffu));
        }
#endif
      }
#if FLA_V % 8 == 0
      if (wout) { /* Vn: the warp's rows and columns, which it just wrote */
        __syncwarp();
        cw_warp_rows_out<BVH, 16, BVW>(up + (x.t0 * H + h) * FLA_V + v0, H * FLA_V, Ub, 16 * wk,
                                       cb, rows, vcols, lane);
      }
#endif
    }
#if FLA_V % 8 == 0
    if (!SEG && !wout && !alias) cw_rows_out<BVH, NTH>(hc, FLA_V, Ss, FLA_K, vcols, tid); /* h[c] */
#endif
    __syncthreads();

    cw_state_update<BVH, NTW>(S, Kb, Vd, gam, rows, wk, cb, lane);
    if (late == 3)
      cw_h_fetch_next<BVH, NTH, fast>(a, xf, cfe, c1, h, v0, vcols, veck, vecv, uload, Ks, Ws, Us, gs, fbuf, tid);
#if FLA_V % 8 == 0
    if (!SEG && !wout) cw_rows_out<BVH, NTH>(up + (x.t0 * H + h) * FLA_V + v0, H * FLA_V, Ub, rows, vcols, tid);
#endif
#if FLA_STORE_HT
    if (!SEG && x.last)
      ck_state_store<CK_KW>(S, (float *)a.ht + ((long long)n * H + h) * KV, v0 + cb, wk, lane);
#endif
    if (late == 0) __syncthreads();
    if (c + 1 < c1) ck_chunk_next(a, c, x);
    buf = buf + 1 == ns ? 0 : buf + 1;
    fbuf = fbuf + 1 == ns ? 0 : fbuf + 1;
  }
  if (SEG) {
    cw_state_store_ld(S, segout + cb, CW_VK, vcols - cb, wk, lane);
  } else if (LOOPFLAGS) { /* the last chunks' flags */
    __syncthreads();
    if (tid == 0) cw_flags_add(cw_flags(a) + h, c0 + (c1 - c0 - 1) / CW_FLAG_EVERY * CW_FLAG_EVERY, c1, H, vcols);
  }
}

/* The wide state kernel's flags (cw_flags), all at the end of its program
** (LOOPFLAGS 0): its registers are full in the chunk loop, where flags spill
** (delta_rule: 44 bytes). Every thread fences its own stores, a barrier, then
** the flags of the program's chunks; the program's place is recomputed from
** a, so nothing more stays live through the loop. The output blocks of a
** chunk start once its programs are done, beside their tails. */
template <int BVH>
__device__ __forceinline__ void cw_flags_program(const fla_kernel_args &a) {
  const int P = BVH <= 32 ? cw_segments(a) : 1; /* as cw_fwd_h */
  const int seg = blockIdx.x / CW_NVH, n = seg / P;
  if (n >= a.N) return;
  long long c0, c1;
  cw_seg_range(a, n, seg % P, P, c0, c1);
  const int v0 = (int)(blockIdx.x % CW_NVH) * BVH;
  const unsigned cols = (unsigned)(FLA_V - v0 < BVH ? FLA_V - v0 : BVH);
  __threadfence();
  __syncthreads();
  for (long long c = c0 + threadIdx.x; c < c1; c += blockDim.x)
    atomicAdd(cw_flags(a) + c * a.H + blockIdx.y, cols);
}

/* The segment pass takes the wide tile: K and W are loaded once for 64
** columns, and it writes nothing a chunk (no h[c], no Vn), so it has the
** registers for it. CW_SEG_NARROW (a harness knob) takes the narrow one. */
#ifdef CW_SEG_NARROW
#define CW_SEG_BVH CW_BVH32
#else
#define CW_SEG_BVH CW_BVH64
#endif
#define CW_NW_SEG CW_HW(CW_SEG_WARPS, CW_SEG_BVH)
#define CW_NW_H CW_HW(CW_H_WARPS, CW_BVH32)
#define CW_NW_H64 CW_HW(CW_H64_WARPS, CW_BVH64)
/* 8 warps on narrow tiles with K <= 128: two blocks a SM when the launch
** takes 2 stages (segments), so at most 128 registers (no spills there);
** wider tiles or keys spill under that cap and fit one block a SM anyway */
#define CW_MINB(nw, bvh) ((nw) == 8 && (bvh) <= 32 && CK_KP <= 128 ? 2 : 1)
extern "C" __global__ void __launch_bounds__(32 * CW_NW_SEG, CW_MINB(CW_NW_SEG, CW_SEG_BVH)) fla_wy_fwd_seg(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  cw_fwd_h<CW_SEG_BVH, 1, CW_NW_SEG, 0>(a, ck_sm);
}
extern "C" __global__ void __launch_bounds__(32 * CW_NW_H, CW_MINB(CW_NW_H, CW_BVH32)) fla_wy_fwd_h(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  cw_fwd_h<CW_BVH32, 0, CW_NW_H, 1>(a, ck_sm);
}
extern "C" __global__ void __launch_bounds__(32 * CW_NW_H64, 1) fla_wy_fwd_h64(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  cw_fwd_h<CW_BVH64, 0, CW_NW_H64, 0>(a, ck_sm);
  cw_flags_program<CW_BVH64>(a); /* its flags: all at the end */
}

/* ------------------------------------------------ kernel 3: the output */

/* Program (chunk c, value tile vt, head h), fully parallel:
**   O = scale [ 2^gam .* (Q h[c]) + ((Q K^T) .* M .* 2^(gam_i - gam_j)) Vn ]
** (chunk_fwd's ck_o_chunk without the state update). Shared memory: Qs, Ks
** [64][LDQ], Vs [64][LDV], Ss [KP][LDV] bf16, gam[64] f32. */
extern "C" __global__ void __launch_bounds__(CK_NTH) fla_wy_fwd_o(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Ks = Qs + CK_BT * CK_LDQ;
  unsigned short *Vs = Ks + CK_BT * CK_LDQ;
  unsigned short *Ss = Vs + CK_BT * CK_LDV;
  float *gam = (float *)(Ss + CK_KP * CK_LDV);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  /* blocks in the order the state kernel finishes chunks (which it does for
  ** every head at once): chunk slowest, then head, then value tile, so
  ** that the first blocks the GPU places are the first to have their
  ** inputs when this kernel runs beside the state kernel */
  const long long id = blockIdx.x + (long long)gridDim.x * blockIdx.y;
  const int vt = (int)(id % CK_NV);
  const int h = (int)(id / CK_NV % a.H);
  const long long c = id / CK_NV / a.H;
  if (c >= a.num_chunks) return;
  const int v0 = vt * CK_BV;
  const int vcols = FLA_V - v0 < CK_BV ? FLA_V - v0 : CK_BV;
  const long long H = a.H;
  const long long KV = (long long)FLA_K * FLA_V;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const long long ro = x.t0 * H + h;
  const int vecq = (FLA_K % 8 == 0) && (((a.q | a.k) & 15) == 0);
  const int vecv = (FLA_V % 8 == 0) && (((a.ws0 | a.ws1) & 15) == 0);
  const unsigned short *hc = cw_hws(a) + (c * H + h) * KV + v0;
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Qs, (const unsigned short *)a.q + ro * FLA_K, H * FLA_K, x.rows,
                                      FLA_K, vecq, tid);
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Ks, (const unsigned short *)a.k + ro * FLA_K, H * FLA_K, x.rows,
                                      FLA_K, vecq, tid);
#if FLA_DECAY
  if (tid < CK_BT / 4) ck_cp16(ck_smem(gam + 4 * tid), cw_gws(a) + (c * H + h) * CK_BT + 4 * tid, 1);
#endif
  ck_commit();
  /* Vn and h[c]: once the state programs have written all V columns */
  if (tid == 0) cw_flag_wait(cw_flags(a) + c * H + h, FLA_V);
  __syncthreads();
  ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Vs, (const unsigned short *)a.ws1 + ro * FLA_V + v0, H * FLA_V,
                                      x.rows, vcols, vecv, tid);
#pragma unroll
  for (int r0 = 0; r0 < CK_KP; r0 += CK_BT)
    ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Ss + r0 * CK_LDV, hc + (long long)r0 * FLA_V, FLA_V,
                                        FLA_K - r0, vcols, vecv, tid);
  ck_commit();
  ck_wait_all();
  __syncthreads();
  float Sd[CK_MT][CK_NT][4]; /* unused: no state update here */
  ck_state_zero(Sd);
  ck_o_chunk<0>(Sd, Qs, Ks, Vs, Ss, gam, x.rows, w, lane,
                (unsigned short *)a.o + ro * FLA_V + v0, H * FLA_V, vcols, a.scale);
}
