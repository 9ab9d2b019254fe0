/*
** templates/hip/chunk_fwd_mfma.h -- chunk_fwd_portable's math (the chunked
** forward of the decay family) with its four tile products on CDNA's matrix
** cores: v_mfma_f32_16x16x16bf16_1k (gfx90a, gfx94x), bf16 operands, f32
** sums (stage FLA_STAGE_CHUNK_FWD_MFMA, gen/stage_chunk_mfma.c). HIP only,
** CDNA only: wavefronts of 64 lanes. Compiled, never run: no AMD GPU was
** available (docs/hip.md); the op layer does not pick it.
**
** Keys: those of chunk_fwd_portable (decay none / const / scalar, plain
** write, read after); bf16 or f32 inputs (rounded to bf16 as operands, as
** the NVIDIA tensor-core stage does). Tiles: FLA_BT and FLA_BV multiples of
** 16, 32 * FLA_WARPS threads with FLA_WARPS even (whole wavefronts).
**
** Per chunk of C <= BT rows (chunk_fwd_portable.h), gam the base-2 gate
** cumsum, eg = 2^gam, wl = 2^(gam_L - gam):
**   A = (Q K^T) .* [j <= i] 2^(gam_i - gam_j)         (BT x BT, over K)
**   O = scale (diag(eg) Q S + A V)                    (BT x BV, over K and BT)
**   S = eg_L S + (diag(wl) K)^T V                     (K x BV, over BT)
** Each product is cut into 16 x 16 output tiles, dealt round-robin to the
** wavefronts; a tile sums 16-deep MFMA steps. The operand layout of the
** 16x16x16 instruction (lane l, l16 = l % 16, lq = l / 16):
**   a (4 bf16): A[l16][k0 + 4 lq + 0..3]     b (4 bf16): B[k0 + 4 lq + 0..3][l16]
**   d (4 f32):  D[4 lq + 0..3][l16]
** Q, K, V, the state and A live in shared memory in f32 (the state stays
** f32 between chunks; it is rounded only as an operand).
*/

#if defined(__HIP_DEVICE_COMPILE__) && !(defined(__gfx90a__) || defined(__gfx940__) || \
                                         defined(__gfx941__) || defined(__gfx942__))
#error "chunk_fwd_mfma: CDNA2/3 (gfx90a, gfx94x) only: v_mfma_f32_16x16x16bf16_1k"
#endif
#if FLA_DELTA || FLA_READ_BEFORE || FLA_DECAY > 2 || FLA_HAS_BONUS || FLA_KEY_FROM_DECAY
#error "chunk_fwd_mfma: the decay family (none, const, scalar), read after the token"
#endif

#define MF_BT FLA_BT
#define MF_BV FLA_BV
#define MF_KP ((FLA_K + 15) / 16 * 16) /* K padded to the MFMA depth */
#define MF_NTH (32 * FLA_WARPS)
#define MF_WAVES (MF_NTH / 64)
#define MF_LOG2E 1.4426950408889634f

static_assert(MF_BT % 16 == 0 && MF_BT >= 16 && MF_BT <= 64, "chunk_fwd_mfma: BT in {16,32,48,64}");
static_assert(MF_BV % 16 == 0 && MF_BV >= 16 && MF_BV <= 64, "chunk_fwd_mfma: BV in {16,32,48,64}");
static_assert(FLA_WARPS % 2 == 0, "chunk_fwd_mfma: whole wavefronts of 64 lanes");

typedef short fla_bf16x4 __attribute__((ext_vector_type(4)));
typedef float fla_f32x4 __attribute__((ext_vector_type(4)));
#ifndef FLA_MFMA_16X16X16_BF16 /* a CPU emulation may stand in for it */
#define FLA_MFMA_16X16X16_BF16(a, b, c) __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(a, b, c, 0, 0, 0)
#endif

FLA_DEVICE short mf_bf(float x) { return (short)fla_f32_to_bf16_bits(x); }

extern "C" __global__ void __launch_bounds__(MF_NTH) fla_chunk_fwd_mfma(const fla_kernel_args a) {
  __shared__ float Qs[MF_BT][MF_KP + 1];
  __shared__ float Ks[MF_BT][MF_KP + 1];
  __shared__ float Vs[MF_BT][MF_BV];
  __shared__ float Ss[MF_KP][MF_BV];
  __shared__ float As[MF_BT][MF_BT + 1];
  __shared__ float gam[MF_BT], eg[MF_BT], wl[MF_BT];

  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * MF_BV;
  const int vcols = FLA_V - v0 < MF_BV ? FLA_V - v0 : MF_BV;
  const int tid = threadIdx.x, wave = tid / 64, lane = tid % 64;
  const int l16 = lane % 16, lq = lane / 16;
  const fla_i64 *cu = (const fla_i64 *)a.cu;
  const fla_i64 bos = cu[n], eos = cu[n + 1];
  const fla_i64 st0 = fla_off_state(n, h, H, FLA_K, FLA_V);
  (void)st0;
  const in_t *q = (const in_t *)a.q;
  const in_t *k = (const in_t *)a.k;
  const in_t *v = (const in_t *)a.v;
  in_t *o = (in_t *)a.o;
#if FLA_DECAY == 1
  const float gc = ((const float *)a.gamma)[h] * MF_LOG2E;
#endif

  for (int e = tid; e < MF_KP * MF_BV; e += MF_NTH) {
    const int i = e / MF_BV, c = e % MF_BV;
    float s = 0.f;
#if FLA_HAS_H0
    if (i < FLA_K && c < vcols) s = ((const float *)a.h0)[st0 + (fla_i64)i * FLA_V + v0 + c];
#endif
    Ss[i][c] = s;
  }

  for (fla_i64 t0 = bos; t0 < eos; t0 += MF_BT) {
    const int C = (int)(eos - t0 < MF_BT ? eos - t0 : MF_BT);
    for (int e = tid; e < MF_BT * MF_KP; e += MF_NTH) {
      const int r = e / MF_KP, i = e % MF_KP;
      const bool in = r < C && i < FLA_K;
      Qs[r][i] = in ? fla_ld(q, fla_off_thd(t0 + r, h, H, FLA_K) + i) : 0.f;
      Ks[r][i] = in ? fla_ld(k, fla_off_thd(t0 + r, h, H, FLA_K) + i) : 0.f;
    }
    for (int e = tid; e < MF_BT * MF_BV; e += MF_NTH) {
      const int r = e / MF_BV, c = e % MF_BV;
      Vs[r][c] = r < C && c < vcols ? fla_ld(v, fla_off_thd(t0 + r, h, H, FLA_V) + v0 + c) : 0.f;
    }
    if (tid == 0) {
      float acc = 0.f;
      for (int r = 0; r < MF_BT; r++) {
#if FLA_DECAY == 2
        if (r < C) acc += fla_ld((const in_t *)a.g, fla_off_th(t0 + r, h, H)) * MF_LOG2E;
#elif FLA_DECAY == 1
        if (r < C) acc += gc;
#endif
        gam[r] = acc;
      }
      for (int r = 0; r < MF_BT; r++) {
        eg[r] = exp2f(gam[r]);
        wl[r] = exp2f(gam[C - 1] - gam[r]);
      }
    }
    __syncthreads();

    /* A = (Q K^T) .* D: tile (I, J), B[k][j] = K[j][k]; tiles above the
    ** diagonal are zero. */
    for (int t = wave; t < (MF_BT / 16) * (MF_BT / 16); t += MF_WAVES) {
      const int I = t / (MF_BT / 16), J = t % (MF_BT / 16);
      fla_f32x4 acc = {0.f, 0.f, 0.f, 0.f};
      if (J <= I) {
        for (int k0 = 0; k0 < MF_KP; k0 += 16) {
          fla_bf16x4 fa, fb;
          for (int j = 0; j < 4; j++) {
            fa[j] = mf_bf(Qs[16 * I + l16][k0 + 4 * lq + j]);
            fb[j] = mf_bf(Ks[16 * J + l16][k0 + 4 * lq + j]);
          }
          acc = FLA_MFMA_16X16X16_BF16(fa, fb, acc);
        }
      }
      for (int r = 0; r < 4; r++) {
        const int i = 16 * I + 4 * lq + r, j = 16 * J + l16;
        float s = 0.f;
        if (j <= i && i < C) s = acc[r] * exp2f(gam[i] - gam[j]);
        As[i][j] = s;
      }
    }
    __syncthreads();

    /* O = scale (diag(eg) Q S + A V): tile (I, Cc) */
    for (int t = wave; t < (MF_BT / 16) * (MF_BV / 16); t += MF_WAVES) {
      const int I = t / (MF_BV / 16), Cc = t % (MF_BV / 16);
      fla_f32x4 qs = {0.f, 0.f, 0.f, 0.f}, av = {0.f, 0.f, 0.f, 0.f};
      for (int k0 = 0; k0 < MF_KP; k0 += 16) {
        fla_bf16x4 fa, fb;
        for (int j = 0; j < 4; j++) {
          fa[j] = mf_bf(Qs[16 * I + l16][k0 + 4 * lq + j]);
          fb[j] = mf_bf(Ss[k0 + 4 * lq + j][16 * Cc + l16]);
        }
        qs = FLA_MFMA_16X16X16_BF16(fa, fb, qs);
      }
      for (int j0 = 0; j0 <= 16 * I; j0 += 16) { /* A is zero right of the diagonal tile */
        fla_bf16x4 fa, fb;
        for (int j = 0; j < 4; j++) {
          fa[j] = mf_bf(As[16 * I + l16][j0 + 4 * lq + j]);
          fb[j] = mf_bf(Vs[j0 + 4 * lq + j][16 * Cc + l16]);
        }
        av = FLA_MFMA_16X16X16_BF16(fa, fb, av);
      }
      for (int r = 0; r < 4; r++) {
        const int i = 16 * I + 4 * lq + r, c = 16 * Cc + l16;
        if (i < C && c < vcols)
          fla_st(o, fla_off_thd(t0 + i, h, H, FLA_V) + v0 + c, a.scale * (eg[i] * qs[r] + av[r]));
      }
    }
    __syncthreads(); /* S is read above and replaced below */

    /* S = eg_L S + (diag(wl) K)^T V: tile (M, Cc), A[m][j] = wl_j K[j][m] */
    for (int t = wave; t < (MF_KP / 16) * (MF_BV / 16); t += MF_WAVES) {
      const int M = t / (MF_BV / 16), Cc = t % (MF_BV / 16);
      fla_f32x4 acc = {0.f, 0.f, 0.f, 0.f};
      for (int j0 = 0; j0 < MF_BT; j0 += 16) {
        fla_bf16x4 fa, fb;
        for (int j = 0; j < 4; j++) {
          const int jj = j0 + 4 * lq + j;
          fa[j] = mf_bf(wl[jj] * Ks[jj][16 * M + l16]);
          fb[j] = mf_bf(Vs[jj][16 * Cc + l16]);
        }
        acc = FLA_MFMA_16X16X16_BF16(fa, fb, acc);
      }
      for (int r = 0; r < 4; r++) {
        const int m = 16 * M + 4 * lq + r, c = 16 * Cc + l16;
        Ss[m][c] = eg[C - 1] * Ss[m][c] + acc[r];
      }
    }
    __syncthreads(); /* the next chunk's loads overwrite Q, K, V, gam */
  }

#if FLA_STORE_HT
  for (int e = tid; e < FLA_K * MF_BV; e += MF_NTH) {
    const int i = e / MF_BV, c = e % MF_BV;
    if (c < vcols) ((float *)a.ht)[st0 + (fla_i64)i * FLA_V + v0 + c] = Ss[i][c];
  }
#endif
}
