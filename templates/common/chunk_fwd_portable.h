/*
** templates/common/chunk_fwd_portable.h -- the chunkwise forward of the
** decay family with scalar FMA tiles: no matrix instructions, no warp
** intrinsics, only __syncthreads and shared memory, so the same text
** compiles for CUDA and HIP (stage FLA_STAGE_CHUNK_FWD_PORTABLE,
** gen/stage_chunk_portable.c). The tensor-core stage is
** templates/cuda/chunk_fwd.cuh; this one has the same math in f32 throughout
** (nothing rounded to bf16 but the output) and a simpler decomposition.
**
** Keys: FLA_DELTA 0, FLA_READ_BEFORE 0, FLA_DECAY 0 (none), 1 (const
** gamma[h]), 2 (scalar g [tok,H]); bf16 or f32 inputs. Tiles: FLA_BT tokens a
** chunk, FLA_BV value columns a program, 32 * FLA_WARPS threads.
**
** Grid (N*H, ceil(V / BV)): program (nh, vt) walks the tokens of sequence n
** (a.cu) chunk by chunk with the K x BV slice of the state in shared memory.
** Per chunk of C <= BT rows, log gates in base 2 (runtime/cpu/chunk.c, the
** math of chunk_fwd.cuh):
**   gam_i = sum_{r <= i} g_r  (const decay: gamma_h (i+1); none: 0)
**   A_ij  = (q_i . k_j) 2^(gam_i - gam_j)                  j <= i < C
**   o_i   = scale [ 2^gam_i (q_i S0) + sum_{j <= i} A_ij v_j ]
**   S     = 2^gam_L S0 + sum_j 2^(gam_L - gam_j) k_j v_j^T   gam_L = gam_{C-1}
** Every exponent is <= 0. Sums run in a fixed order: results do not depend on
** timing. Not here: the block-parallel split of long sequences (chunk_fwd's
** block states and scan), so parallelism is N * H * ceil(V / BV) programs.
*/

#if FLA_DELTA || FLA_READ_BEFORE || FLA_DECAY > 2 || FLA_HAS_BONUS || FLA_KEY_FROM_DECAY
#error "chunk_fwd_portable: the decay family (none, const, scalar), read after the token"
#endif

#define CP_BT FLA_BT
#define CP_BV FLA_BV
#define CP_NTH (32 * FLA_WARPS)
#define CP_LOG2E 1.4426950408889634f

static_assert(CP_BT >= 1 && CP_BT <= 64, "chunk_fwd_portable: BT in 1..64");
static_assert(CP_BV >= 1 && CP_BV <= 64, "chunk_fwd_portable: BV in 1..64");

extern "C" __global__ void __launch_bounds__(CP_NTH) fla_chunk_fwd_portable(const fla_kernel_args a) {
  /* +1: row strides that do not all fall on one shared-memory bank */
  __shared__ float Qs[CP_BT][FLA_K + 1];
  __shared__ float Ks[CP_BT][FLA_K + 1];
  __shared__ float Vs[CP_BT][CP_BV];
  __shared__ float Ss[FLA_K][CP_BV];
  __shared__ float As[CP_BT][CP_BT + 1];
  __shared__ float gam[CP_BT];
  __shared__ float eg[CP_BT]; /* 2^gam_i                                     */
  __shared__ float wl[CP_BT]; /* 2^(gam_L - gam_j): the state update's gates */

  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * CP_BV;
  const int vcols = FLA_V - v0 < CP_BV ? FLA_V - v0 : CP_BV;
  const int tid = threadIdx.x;
  const fla_i64 *cu = (const fla_i64 *)a.cu;
  const fla_i64 bos = cu[n], eos = cu[n + 1];
  const fla_i64 st0 = fla_off_state(n, h, H, FLA_K, FLA_V);
  (void)st0;
  const in_t *q = (const in_t *)a.q;
  const in_t *k = (const in_t *)a.k;
  const in_t *v = (const in_t *)a.v;
  in_t *o = (in_t *)a.o;
#if FLA_DECAY == 1
  const float gc = ((const float *)a.gamma)[h] * CP_LOG2E;
#endif

  for (int e = tid; e < FLA_K * CP_BV; e += CP_NTH) {
    const int i = e / CP_BV, c = e % CP_BV;
    float s = 0.f;
#if FLA_HAS_H0
    if (c < vcols) s = ((const float *)a.h0)[st0 + (fla_i64)i * FLA_V + v0 + c];
#endif
    Ss[i][c] = s;
  }

  for (fla_i64 t0 = bos; t0 < eos; t0 += CP_BT) {
    const int C = (int)(eos - t0 < CP_BT ? eos - t0 : CP_BT);
    /* the chunk's rows (zeros past C and past V) */
    for (int e = tid; e < CP_BT * FLA_K; e += CP_NTH) {
      const int r = e / FLA_K, i = e % FLA_K;
      const bool in = r < C;
      Qs[r][i] = in ? fla_ld(q, fla_off_thd(t0 + r, h, H, FLA_K) + i) : 0.f;
      Ks[r][i] = in ? fla_ld(k, fla_off_thd(t0 + r, h, H, FLA_K) + i) : 0.f;
    }
    for (int e = tid; e < CP_BT * CP_BV; e += CP_NTH) {
      const int r = e / CP_BV, c = e % CP_BV;
      Vs[r][c] = r < C && c < vcols ? fla_ld(v, fla_off_thd(t0 + r, h, H, FLA_V) + v0 + c) : 0.f;
    }
    if (tid == 0) { /* the gate cumsum: at most BT additions, in order */
      float acc = 0.f;
      for (int r = 0; r < CP_BT; r++) {
#if FLA_DECAY == 2
        if (r < C) acc += fla_ld((const in_t *)a.g, fla_off_th(t0 + r, h, H)) * CP_LOG2E;
#elif FLA_DECAY == 1
        if (r < C) acc += gc;
#endif
        gam[r] = acc;
      }
      for (int r = 0; r < CP_BT; r++) {
        eg[r] = exp2f(gam[r]);
        wl[r] = exp2f(gam[C - 1] - gam[r]);
      }
    }
    __syncthreads();

    /* A = (Q K^T) .* 2^(gam_i - gam_j), causal */
    for (int e = tid; e < CP_BT * CP_BT; e += CP_NTH) {
      const int i = e / CP_BT, j = e % CP_BT;
      float s = 0.f;
      if (j <= i && i < C) {
        for (int m = 0; m < FLA_K; m++) s += Qs[i][m] * Ks[j][m];
#if FLA_DECAY
        s *= exp2f(gam[i] - gam[j]);
#endif
      }
      As[i][j] = s;
    }
    __syncthreads();

    /* o = scale (2^gam_i Q S0 + A V) */
    for (int e = tid; e < CP_BT * CP_BV; e += CP_NTH) {
      const int i = e / CP_BV, c = e % CP_BV;
      if (i >= C || c >= vcols) continue;
      float qs = 0.f, av = 0.f;
      for (int m = 0; m < FLA_K; m++) qs += Qs[i][m] * Ss[m][c];
      for (int j = 0; j <= i; j++) av += As[i][j] * Vs[j][c];
#if FLA_DECAY
      qs *= eg[i];
#endif
      fla_st(o, fla_off_thd(t0 + i, h, H, FLA_V) + v0 + c, a.scale * (qs + av));
    }
    __syncthreads(); /* S0 is read above and replaced below */

    /* S = 2^gam_L S0 + (K .* 2^(gam_L - gam))^T V */
    for (int e = tid; e < FLA_K * CP_BV; e += CP_NTH) {
      const int m = e / CP_BV, c = e % CP_BV;
      float s = 0.f;
      for (int j = 0; j < C; j++) {
#if FLA_DECAY
        s += Ks[j][m] * wl[j] * Vs[j][c];
#else
        s += Ks[j][m] * Vs[j][c];
#endif
      }
#if FLA_DECAY
      Ss[m][c] = eg[C - 1] * Ss[m][c] + s;
#else
      Ss[m][c] += s;
#endif
    }
    __syncthreads(); /* the next chunk's loads overwrite Q, K, V, gam */
  }

#if FLA_STORE_HT
  for (int e = tid; e < FLA_K * CP_BV; e += CP_NTH) {
    const int i = e / CP_BV, c = e % CP_BV;
    if (c < vcols) ((float *)a.ht)[st0 + (fla_i64)i * FLA_V + v0 + c] = Ss[i][c];
  }
#endif
}
