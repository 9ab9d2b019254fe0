/*
** chunk_bwd.cuh -- the chunkwise-parallel backward of the decay family on
** tensor cores (stage FLA_STAGE_CHUNK_BWD, gen/stage_chunk_bwd.c), fla's
** chunk algorithm (fla/ops/common/chunk_h.py, chunk_o.py, simple_gla/chunk.py).
** Warp-level tile loads and 16-row products: chunk_bwd_mm.cuh.
**
** Keys handled: FLA_DELTA 0, FLA_READ_BEFORE 0, no bonus, FLA_DECAY 0 (none),
** 1 (const gamma[h], no gradient: it is not an input), 2 (scalar g [tok,H]:
** dg); FLA_IN_BF16 1; K, V <= 128. Tiles: chunks of 64 tokens, 4 warps; the
** two state walks hold a K x FLA_BV slice of the state in registers.
**
** The math (fla-notes.md §2.2; base-2 log gates, gam = chunk-local inclusive
** cumsum of g log2 e, gL its last row; h = the state entering the chunk, dh =
** the gradient of the state leaving it; D_ij = [j <= i] 2^(gam_i - gam_j)):
**   forward   O   = scale (2^gam .* Q h) + A V,   A = scale (Q K^T) .* D
**             S_L = 2^gL h + (K .* 2^(gL - gam))^T V
**   backward  ds  = scale (dO V^T) .* D
**             dQ  = scale 2^gam .* (dO h^T) + ds K
**             dK  = 2^(gL - gam) .* (V dh^T) + ds^T Q
**             dV  = 2^(gL - gam) .* (K dh) + A^T dO
**             dh_prev = 2^gL dh + (scale 2^gam .* Q)^T dO    (the chunk before)
**             dgam_i = q_i.dq_i - k_i.dk_i
**                      + [i = last] (2^gL <h, dh> + sum_j k_j.(2^(gL-gam_j) V dh^T)_j)
**             dg_i = sum_{i' >= i in the chunk} dgam_i'   (natural-log units: the
**                    base cancels, d 2^(x log2 e) / dx = 2^(x log2 e))
** Products are mma.sync m16n8k16 bf16 -> fp32; states are carried in fp32 and
** stored per chunk as bf16 (as fla stores h and dh); A and ds are rounded to
** bf16 as operands.
**
** Two kernels:
**   fla_chunk_bwd_walk (N*NVW, H, 2): per sequence, z = 0: the states entering
**       each of its chunks, from h0 (or 0): ws0[c,h] = h_c (bf16 [NC,H,K,V]);
**       z = 1: last chunk to first, from dht (or 0): ws1[c,h] = dh_c (bf16
**       [NC,H,K,V]) and dh0[n] (f32) at the end. The two are independent.
**   fla_chunk_bwd_dqkv (NC, H): per chunk, from q, k, v, dO, g, h_c, dh_c:
**       dq, dk, dv (bf16), dg (bf16, scalar gates; skipped when a.dg is 0).
*/

#if FLA_BT != 64 || FLA_WARPS != 4
#error "chunk_bwd: FLA_BT 64 and FLA_WARPS 4 only"
#endif
#if FLA_DELTA || FLA_READ_BEFORE || FLA_HAS_BONUS || FLA_DECAY > 2 || !FLA_IN_BF16
#error "chunk_bwd: decay family (none, const, scalar), plain write, bf16 inputs only"
#endif
#if FLA_BV % 16 || FLA_K > 128 || FLA_V > 128
#error "chunk_bwd: FLA_BV a multiple of 16; K, V <= 128"
#endif

#define CK_BT 64
#define CK_NW 4
#define CK_NTH (32 * CK_NW)
#define CK_LOG2E 1.4426950408889634f
/* state walks: warp w owns keys KW w .. KW w + KW - 1 of a K x BV slice */
#define CK_KW ((FLA_K + 16 * CK_NW - 1) / (16 * CK_NW) * 16)
#define CK_KP (CK_KW * CK_NW)
#define CK_MT (CK_KW / 16)
#define CK_BV FLA_BV
#define CK_NT (CK_BV / 8)
#define CK_NVW ((FLA_V + CK_BV - 1) / CK_BV)
#define CK_LDQ (CK_KP + 8) /* smem row strides (elements): +16 bytes, no bank conflicts */
#define CK_LDV (CK_BV + 8)
/* per-chunk kernel: whole K and V, padded to 16 */
#define C3_KP ((FLA_K + 15) / 16 * 16)
#define C3_VP ((FLA_V + 15) / 16 * 16)
#define C3_LDK (C3_KP + 8)
#define C3_LDV (C3_VP + 8)
#define C3_LDA (CK_BT + 8)

//@include "chunk_common.cuh"
//@include "chunk_tiles.cuh"
//@include "chunk_bwd_mm.cuh"

__device__ __forceinline__ float ckb_gamma_h(const fla_kernel_args &a, int h) {
#if FLA_DECAY == 1
  return ((const float *)a.gamma)[h] * CK_LOG2E;
#else
  (void)a, (void)h;
  return 0.0f;
#endif
}

/* ------------------------------------------------------- state walks */

/* S = 2^gL S + (X .* f)^T Y over a chunk: X [64][LDX] keys, Y [64][LDY] values
** (rows past the chunk are zero). MODE 0: f_t = 2^(gL - gam_t) (the state);
** MODE 1: f_t = scale 2^gam_t (its gradient). */
template <int MODE, int LDX, int LDY>
__device__ __forceinline__ void ckb_update(float (&S)[CK_MT][CK_NT][4], const unsigned short *Xs,
                                           const unsigned short *Ys, const float *gam, int rows,
                                           float scale, int w, int lane) {
  const int q = lane & 3;
#if FLA_DECAY
  const float gL = gam[rows - 1];
  const float eL = exp2f(gL);
#pragma unroll
  for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
    for (int j = 0; j < CK_NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) S[mt][j][e] *= eL;
#else
  (void)gam, (void)rows;
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
    if (FLA_DECAY || MODE == 1) {
      const int t = 16 * kk + 2 * q;
      float f[4];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int tt = t + (u & 1) + (u >> 1) * 8;
#if FLA_DECAY
        f[u] = MODE == 0 ? exp2f(gL - gam[tt]) : scale * exp2f(gam[tt]);
#else
        (void)tt;
        f[u] = scale;
#endif
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
    for (int np = 0; np < CK_NT / 2; np++) {
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
  (void)scale;
}

/* dst[key * V + v0 + val] = bf16(S) for the thread's elements (one head's K x V). */
__device__ __forceinline__ void ckb_state_store_bf16(const float (&S)[CK_MT][CK_NT][4],
                                                     unsigned short *dst, int v0, int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < CK_MT; mt++)
#pragma unroll
    for (int j = 0; j < CK_NT; j++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int key = CK_KW * w + 16 * mt + g + 8 * hf;
        const int col = v0 + 8 * j + 2 * q;
        if (key >= FLA_K) continue;
        unsigned u = ck_pack(S[mt][j][2 * hf], S[mt][j][2 * hf + 1]);
        if (FLA_V % 2 == 0 && col + 1 < FLA_V) {
          *(unsigned *)(dst + (long long)key * FLA_V + col) = u;
        } else {
          if (col < FLA_V) dst[(long long)key * FLA_V + col] = (unsigned short)(u & 0xffffu);
          if (col + 1 < FLA_V) dst[(long long)key * FLA_V + col + 1] = (unsigned short)(u >> 16);
        }
      }
}

/* The walks of kernels 1 and 2: step i handles chunk c0 + i (MODE 0, the state:
** X = k, Y = v, stored to ws0) or c1 - 1 - i (MODE 1, its gradient: X = q,
** Y = dO, stored to ws1). Per step: store bf16(S) for the chunk, then
** S = 2^gL S + (X .* f)^T Y (ckb_update). Tiles come through a ring of CK_NST
** cp.async stages (a step is short: one chunk ahead does not hide the load
** latency); the gates one step ahead in registers.
** Shared memory: Xs[NST][64][LDQ], Ys[NST][64][LDV] bf16, gam[64] f32. */
#define CK_NST 4

template <int MODE>
__device__ __forceinline__ void ckb_walk_load(const fla_kernel_args &a, long long i, long long c0,
                                              long long c1, int n, long long t0n, long long te,
                                              int h, int v0, int vcols, unsigned short *Xs,
                                              unsigned short *Ys, int vecx, int vecy, int tid) {
  const long long H = a.H;
  ck_chunk x;
  ck_chunk_of(MODE ? c1 - 1 - i : c0 + i, c0, c1, n, t0n, te, x);
  const int slot = (int)(i % CK_NST);
  const unsigned short *xp = (const unsigned short *)(MODE ? a.q : a.k);
  const unsigned short *yp = (const unsigned short *)(MODE ? a.d_o : a.v);
  ck_load_tile<CK_KP, CK_LDQ, CK_NTH>(Xs + slot * CK_BT * CK_LDQ, xp + (x.t0 * H + h) * FLA_K,
                                      H * FLA_K, x.rows, FLA_K, vecx, tid);
  ck_load_tile<CK_BV, CK_LDV, CK_NTH>(Ys + slot * CK_BT * CK_LDV,
                                      yp + (x.t0 * H + h) * FLA_V + v0, H * FLA_V, x.rows, vcols,
                                      vecy, tid);
}

template <int MODE>
__device__ __forceinline__ void ckb_walk(const fla_kernel_args &a, float (&S)[CK_MT][CK_NT][4],
                                         int n, int h, int v0, int vcols, long long c0,
                                         long long c1, unsigned char *sm) {
  unsigned short *Xs = (unsigned short *)sm;
  unsigned short *Ys = Xs + CK_NST * CK_BT * CK_LDQ;
  float *gam = (float *)(Ys + CK_NST * CK_BT * CK_LDV);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const long long *cu = (const long long *)a.cu;
  const long long t0n = cu[n], te = cu[n + 1], nc = c1 - c0;
  const long long H = a.H, KV = (long long)FLA_K * FLA_V;
  const int vecx = ckb_vec(MODE ? a.q : a.k, 0, FLA_K);
  const int vecy = ckb_vec(MODE ? a.d_o : a.v, v0, FLA_V);
  unsigned short *store = (unsigned short *)(MODE ? a.ws1 : a.ws0);
  const float gc = ckb_gamma_h(a, h);
  const float scale = MODE ? a.scale : 1.0f;

#pragma unroll
  for (int i = 0; i < CK_NST - 1; i++) {
    if (i < nc) ckb_walk_load<MODE>(a, i, c0, c1, n, t0n, te, h, v0, vcols, Xs, Ys, vecx, vecy, tid);
    ck_commit(); /* always: one group a step keeps the wait count fixed */
  }
  ck_chunk x;
  ck_chunk_of(MODE ? c1 - 1 : c0, c0, c1, n, t0n, te, x);
  float g0 = 0.0f, g1 = 0.0f;
  if (w == 0) ck_load_g(a, x, h, lane, g0, g1);

  for (long long i = 0; i < nc; i++) {
    const long long c = MODE ? c1 - 1 - i : c0 + i;
    const int slot = (int)(i % CK_NST);
    if (i + CK_NST - 1 < nc)
      ckb_walk_load<MODE>(a, i + CK_NST - 1, c0, c1, n, t0n, te, h, v0, vcols, Xs, Ys, vecx, vecy,
                          tid);
    ck_commit();
    const int rows = x.rows;
    ck_chunk xn = x;
    float gn0 = 0.0f, gn1 = 0.0f;
    if (i + 1 < nc) {
      ck_chunk_of(MODE ? c - 1 : c + 1, c0, c1, n, t0n, te, xn);
      if (w == 0) ck_load_g(a, xn, h, lane, gn0, gn1);
    }
    ckb_state_store_bf16(S, store + (c * H + h) * KV, v0, w, lane);
    if (w == 0) ck_scan_g(gam, g0, g1, gc, rows, lane);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(CK_NST - 1));
    __syncthreads();
    ckb_update<MODE, CK_LDQ, CK_LDV>(S, Xs + slot * CK_BT * CK_LDQ, Ys + slot * CK_BT * CK_LDV,
                                     gam, rows, scale, w, lane);
    __syncthreads();
    x = xn;
    g0 = gn0, g1 = gn1;
  }
  ck_wait_all();
}

/* Kernel 1, blockIdx.z = 0 (the states): for each sequence n (blockIdx.x / NVW),
** value slice vt, head h (blockIdx.y):
**   S = h0[n] (or 0); for each chunk c of n in order:
**     ws0[c,h][:, slice] = bf16(S);   S = 2^gL S + (K .* 2^(gL - gam))^T V.
** blockIdx.z = 1 (their gradients), independent of the first, so both walks
** share one launch and run side by side:
**   dS = dht[n] (or 0); for each chunk c of n, last to first:
**     ws1[c,h][:, slice] = bf16(dS);   dS = 2^gL dS + (scale 2^gam .* Q)^T dO;
**   then dh0[n] = dS (f32; also for a sequence without tokens). */
extern "C" __global__ void __launch_bounds__(CK_NTH, 2) fla_chunk_bwd_walk(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const int vt = blockIdx.x % CK_NVW, n = blockIdx.x / CK_NVW, h = blockIdx.y;
  const int v0 = vt * CK_BV, vcols = FLA_V - v0 < CK_BV ? FLA_V - v0 : CK_BV;
  const long long *cf = (const long long *)a.chunk_first;
  const long long c0 = cf[n], c1 = cf[n + 1];
  const long long KV = (long long)FLA_K * FLA_V;
  const long long so = ((long long)n * a.H + h) * KV;
  float S[CK_MT][CK_NT][4];
  if (blockIdx.z == 0) {
    if (c0 >= c1) return;
    const float *h0 = FLA_HAS_H0 ? (const float *)a.h0 : (const float *)0;
    ck_state_load<CK_KW>(S, h0 ? h0 + so : h0, v0, w, lane);
    ckb_walk<0>(a, S, n, h, v0, vcols, c0, c1, ck_sm);
  } else {
    const float *dht = (const float *)a.dht;
    ck_state_load<CK_KW>(S, dht ? dht + so : dht, v0, w, lane);
    if (c1 > c0) ckb_walk<1>(a, S, n, h, v0, vcols, c0, c1, ck_sm);
    if (a.dh0) ck_state_store<CK_KW>(S, (float *)a.dh0 + so, v0, w, lane);
  }
}

/* ---------------------------------------------------- per-chunk grads */

/* Kernel 2: one chunk c (blockIdx.x) of head h (blockIdx.y); warp w owns rows
** 16w .. 16w+15 of every output. Phases (math at the top of the file):
**   1. A = scale (Q K^T) .* D, ds = scale (dO V^T) .* D for the warp's rows
**      -> As, Ds (bf16, smem); ds also kept as A fragments.
**   2. dQ = scale 2^gam .* (dO h^T) + ds K;  q.dq per row.
**   3. dK = 2^(gL-gam) .* (V dh^T) + ds^T Q; k.dk per row (and of the first term).
**   4. dV = 2^(gL-gam) .* (K dh) + A^T dO.
**   5. dg: dgam per row, the last row's extra terms, reverse cumsum in the chunk.
** Shared memory: Qs, Ks [64][C3_LDK], Vs, Os [64][C3_LDV], Hs, dHs [KP][C3_LDV],
** As, Ds [64][C3_LDA] bf16; gam[64], dgs[64], kdi[64], red[8] f32. Loads are
** three cp.async groups (Q K V dO, h, dh) so phase 1 starts before h arrives. */
extern "C" __global__ void __launch_bounds__(CK_NTH, 1) fla_chunk_bwd_dqkv(fla_kernel_args a) {
  extern __shared__ __align__(16) unsigned char ck_sm[];
  unsigned short *Qs = (unsigned short *)ck_sm;
  unsigned short *Ks = Qs + CK_BT * C3_LDK;
  unsigned short *Vs = Ks + CK_BT * C3_LDK;
  unsigned short *Os = Vs + CK_BT * C3_LDV;
  unsigned short *Hs = Os + CK_BT * C3_LDV;
  unsigned short *dHs = Hs + C3_KP * C3_LDV;
  unsigned short *As = dHs + C3_KP * C3_LDV;
  unsigned short *Ds = As + CK_BT * C3_LDA;
  float *gam = (float *)(Ds + CK_BT * C3_LDA);
  float *dgs = gam + CK_BT;
  float *kdi = dgs + CK_BT;
  float *red = kdi + CK_BT;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const long long c = blockIdx.x;
  const int h = blockIdx.y;
  if (c >= a.num_chunks) return; /* the grid is at least 1 block */
  const long long H = a.H, KV = (long long)FLA_K * FLA_V;
  ck_chunk x;
  ck_chunk_at(a, c, x);
  const int rows = x.rows;
  const long long rk = (x.t0 * H + h) * FLA_K, rv = (x.t0 * H + h) * FLA_V;
  const long long sh = (c * H + h) * KV;

  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Qs, (const unsigned short *)a.q + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.q, 0, FLA_K), tid);
  ckb_load<CK_BT, C3_KP, C3_LDK, CK_NTH>(Ks, (const unsigned short *)a.k + rk, H * FLA_K, rows,
                                         FLA_K, ckb_vec(a.k, 0, FLA_K), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Vs, (const unsigned short *)a.v + rv, H * FLA_V, rows,
                                         FLA_V, ckb_vec(a.v, 0, FLA_V), tid);
  ckb_load<CK_BT, C3_VP, C3_LDV, CK_NTH>(Os, (const unsigned short *)a.d_o + rv, H * FLA_V, rows,
                                         FLA_V, ckb_vec(a.d_o, 0, FLA_V), tid);
  ck_commit();
  ckb_load<C3_KP, C3_VP, C3_LDV, CK_NTH>(Hs, (const unsigned short *)a.ws0 + sh, FLA_V, FLA_K,
                                         FLA_V, ckb_vec(a.ws0, sh, FLA_V), tid);
  ck_commit();
  ckb_load<C3_KP, C3_VP, C3_LDV, CK_NTH>(dHs, (const unsigned short *)a.ws1 + sh, FLA_V, FLA_K,
                                         FLA_V, ckb_vec(a.ws1, sh, FLA_V), tid);
  ck_commit();
  if (w == 0) {
    float g0 = 0.0f, g1 = 0.0f;
    ck_load_g(a, x, h, lane, g0, g1);
    ck_scan_g(gam, g0, g1, ckb_gamma_h(a, h), rows, lane);
  }
  asm volatile("cp.async.wait_group 2;\n" ::);
  __syncthreads();

  const int r0 = 16 * w, rA = r0 + g, rB = rA + 8;
  const float scale = a.scale;
#if FLA_DECAY
  const float gA = gam[rA], gB = gam[rB], gL = gam[rows - 1];
#endif

  /* phase 1: A and ds for the warp's rows, columns up to its last row (one
  ** after the other: 32 accumulators live at a time) */
  unsigned dsf[CK_BT / 16][4];
#pragma unroll
  for (int which = 0; which < 2; which++) {
    /* which 0: A = scale (Q K^T) .* D -> As;  1: ds = scale (dO V^T) .* D -> Ds, dsf */
    const unsigned short *Xs = which ? Os : Qs, *Ys = which ? Vs : Ks;
    const int ld = which ? C3_LDV : C3_LDK, kd = which ? C3_VP : C3_KP;
    unsigned short *Ps = which ? Ds : As;
    float acc[CK_BT / 8][4];
    ckb_zero(acc);
#pragma unroll
    for (int kk = 0; kk < (C3_KP > C3_VP ? C3_KP : C3_VP) / 16; kk++) {
      if (16 * kk >= kd) continue;
      unsigned xa[4];
      ck_ldm4(xa, ck_smem(Xs + (r0 + (lane & 15)) * ld + kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < CK_BT / 16; np++) {
        if (np > w) continue;
        unsigned yb[4];
        ck_ldm4(yb, ck_smem(Ys + (16 * np + (lane >> 4) * 8 + (lane & 7)) * ld + kk * 16 +
                            ((lane >> 3) & 1) * 8));
        ck_mma(acc[2 * np], xa, yb[0], yb[1]);
        ck_mma(acc[2 * np + 1], xa, yb[2], yb[3]);
      }
    }
    /* mask and gate; the blocks right of the diagonal are never read */
#pragma unroll
    for (int j = 0; j < CK_BT / 8; j++) {
      const int cc = 8 * j + 2 * q;
      float va[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, col = cc + (e & 1);
        const bool in = col <= r && r < rows;
#if FLA_DECAY
        const float d = in ? scale * exp2f(((e < 2) ? gA : gB) - gam[col]) : 0.0f;
#else
        const float d = in ? scale : 0.0f;
#endif
        va[e] = acc[j][e] * d;
      }
      const unsigned p01 = ck_pack(va[0], va[1]), p23 = ck_pack(va[2], va[3]);
      if (j / 2 <= w) {
        *(unsigned *)(Ps + rA * C3_LDA + cc) = p01;
        *(unsigned *)(Ps + rB * C3_LDA + cc) = p23;
      }
      if (which) {
        /* A fragment of k-step j/2: {rows g cols lo, rows g+8 cols lo, g hi, g+8 hi} */
        dsf[j / 2][2 * (j & 1)] = p01;
        dsf[j / 2][2 * (j & 1) + 1] = p23;
      }
    }
  }
  asm volatile("cp.async.wait_group 1;\n" ::);
  __syncthreads();

  /* phase 2: dQ */
  float qdqA = 0.0f, qdqB = 0.0f;
  {
    float acc[C3_KP / 8][4];
    ckb_zero(acc);
    ckb_mm_nt<C3_KP / 8, C3_VP, C3_LDV, C3_LDV>(acc, Os, Hs, r0, lane);
#if FLA_DECAY
    const float fA = scale * exp2f(gA), fB = scale * exp2f(gB);
#else
    const float fA = scale, fB = scale;
#endif
#pragma unroll
    for (int j = 0; j < C3_KP / 8; j++) {
      acc[j][0] *= fA, acc[j][1] *= fA;
      acc[j][2] *= fB, acc[j][3] *= fB;
    }
#pragma unroll
    for (int kk = 0; kk < CK_BT / 16; kk++) {
      if (kk > w) continue;
#pragma unroll
      for (int np = 0; np < C3_KP / 16; np++) {
        unsigned yb[4];
        ck_ldm4t(yb, ck_smem(Ks + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * C3_LDK +
                             16 * np + (lane >> 4) * 8));
        ck_mma(acc[2 * np], dsf[kk], yb[0], yb[1]);
        ck_mma(acc[2 * np + 1], dsf[kk], yb[2], yb[3]);
      }
    }
    ckb_store_rows(acc, (unsigned short *)a.dq + rk, H * FLA_K, rA, rows, FLA_K, q);
#if FLA_DECAY == 2
    ckb_row_dot<C3_KP / 8, C3_LDK>(acc, Qs, rA, q, qdqA, qdqB);
#endif
  }
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();

  /* phase 3: dK */
  float kdkA = 0.0f, kdkB = 0.0f, kdiA = 0.0f, kdiB = 0.0f;
  {
    float acc[C3_KP / 8][4];
    ckb_zero(acc);
    ckb_mm_nt<C3_KP / 8, C3_VP, C3_LDV, C3_LDV>(acc, Vs, dHs, r0, lane);
#if FLA_DECAY
    const float fA = exp2f(gL - gA), fB = exp2f(gL - gB);
#pragma unroll
    for (int j = 0; j < C3_KP / 8; j++) {
      acc[j][0] *= fA, acc[j][1] *= fA;
      acc[j][2] *= fB, acc[j][3] *= fB;
    }
#endif
#if FLA_DECAY == 2
    ckb_row_dot<C3_KP / 8, C3_LDK>(acc, Ks, rA, q, kdiA, kdiB);
#endif
    ckb_mm_tn_causal<C3_KP / 8, C3_LDK>(acc, Ds, Qs, w, lane);
    ckb_store_rows(acc, (unsigned short *)a.dk + rk, H * FLA_K, rA, rows, FLA_K, q);
#if FLA_DECAY == 2
    ckb_row_dot<C3_KP / 8, C3_LDK>(acc, Ks, rA, q, kdkA, kdkB);
#endif
  }

  /* phase 4: dV */
  {
    float acc[C3_VP / 8][4];
    ckb_zero(acc);
    ckb_mm_nn<C3_VP / 8, C3_KP, C3_LDK, C3_LDV>(acc, Ks, dHs, r0, lane);
#if FLA_DECAY
    const float fA = exp2f(gL - gA), fB = exp2f(gL - gB);
#pragma unroll
    for (int j = 0; j < C3_VP / 8; j++) {
      acc[j][0] *= fA, acc[j][1] *= fA;
      acc[j][2] *= fB, acc[j][3] *= fB;
    }
#endif
    ckb_mm_tn_causal<C3_VP / 8, C3_LDV>(acc, As, Os, w, lane);
    ckb_store_rows(acc, (unsigned short *)a.dv + rv, H * FLA_V, rA, rows, FLA_V, q);
  }

#if FLA_DECAY == 2
  /* phase 5: dg */
  {
    if (q == 0) {
      dgs[rA] = rA < rows ? qdqA - kdkA : 0.0f;
      dgs[rB] = rB < rows ? qdqB - kdkB : 0.0f;
      kdi[rA] = kdiA, kdi[rB] = kdiB; /* rows past the chunk have k = 0 */
    }
    /* <h, dh> over bf16 pairs (the padding columns are 0) */
    float hdh = 0.0f;
#pragma unroll 4
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
      /* suffix sums: sfx = the sum of d over rows >= 2 lane */
      float sfx = d0 + d1;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        float y = __shfl_down_sync(0xffffffffu, sfx, off);
        if (lane + off < 32) sfx += y;
      }
      unsigned short *dg = (unsigned short *)a.dg;
      const int ra = 2 * lane, rb = 2 * lane + 1;
      if (!dg) return; /* dg not wanted */
      if (ra < rows) dg[(x.t0 + ra) * H + h] = fla_f32_to_bf16_bits(sfx);
      if (rb < rows) dg[(x.t0 + rb) * H + h] = fla_f32_to_bf16_bits(sfx - d0);
    }
  }
#else
  (void)dgs, (void)kdi, (void)red, (void)qdqA, (void)qdqB, (void)kdkA, (void)kdkB, (void)kdiA,
      (void)kdiB;
#endif
}
