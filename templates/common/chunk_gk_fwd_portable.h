/*
** templates/common/chunk_gk_fwd_portable.h -- the chunkwise forward of
** per-key gates (GLA, HGRN2, RWKV-6) with scalar FMA tiles: no matrix
** instructions, no warp intrinsics, only __syncthreads and shared memory, so
** the same text compiles for CUDA and HIP (stage
** FLA_STAGE_CHUNK_GK_FWD_PORTABLE, gen/stage_chunk_gk_portable.c). The
** tensor-core stage is templates/cuda/chunk_gk_fwd.cuh; this one has the
** same math in f32 throughout and the decomposition of
** chunk_fwd_portable.h.
**
** Keys: FLA_DECAY 3 (g [tok,H,K], natural log), FLA_DELTA 0; read after
** the token (GLA, HGRN2) or before it (RWKV-6, FLA_READ_BEFORE) with or
** without the bonus u [H,K]; keys given or derived from the decay
** (FLA_KEY_FROM_DECAY: k = 1 - e^g, HGRN2); bf16 or f32 inputs.
**
** Grid (N*H, ceil(V / BV)): program (nh, vt) walks the tokens of sequence n
** chunk by chunk with the K x BV slice of the state in shared memory. Per
** chunk of C <= BT rows with S0 the state entering it, log gates in base 2
** per key d:
**   gam_id = sum_{r <= i} g_rd log2 e       (rows past C add 0)
**   gx_i   = gam_i (read after) | gam_{i-1}, gx_0 = 0 (read before)
**   A_ij   = sum_d q_id k_jd 2^(gx_id - gam_jd)     j <= i (after) | j < i
**   A_ii   = sum_d q_id u_d k_id                    (read before, bonus)
**   o_i    = scale [ (q_i .* 2^gx_i) S0 + sum_j A_ij v_j ]
**   S      = diag(2^gam_L) S0 + (K .* 2^(gam_L - gam))^T V    gam_L = gam_{C-1}
** The gates decrease down the chunk (g <= 0), so every exponent above is
** <= 0: A's factor is formed per element (sub-chunks of one row, the limit
** of chunk_gk_fwd.cuh's 16-row sub-chunks), never as a product of
** 2^gam_i and 2^-gam_j, and no exponential of a positive number is taken.
** Sums run in a fixed order: results do not depend on timing.
*/

#if FLA_DELTA || FLA_HAS_PROBE || FLA_DECAY != 3 || (FLA_HAS_BONUS && !FLA_READ_BEFORE)
#error "chunk_gk_fwd_portable: per-key decay, plain write (bonus only when reading before)"
#endif

#define GP_BT FLA_BT
#define GP_BV FLA_BV
#define GP_NTH (32 * FLA_WARPS)
#define GP_LOG2E 1.4426950408889634f

static_assert(GP_BT >= 1 && GP_BT <= 64, "chunk_gk_fwd_portable: BT in 1..64");
static_assert(GP_BV >= 1 && GP_BV <= 64, "chunk_gk_fwd_portable: BV in 1..64");

extern "C" __global__ void __launch_bounds__(GP_NTH) fla_chunk_gk_fwd_portable(const fla_kernel_args a) {
  /* +1: row strides that do not all fall on one shared-memory bank */
  __shared__ float Qs[GP_BT][FLA_K + 1];  /* q, then q .* 2^gx          */
  __shared__ float Ks[GP_BT][FLA_K + 1];  /* k, then k .* 2^(gam_L - gam) */
  __shared__ float Gs[GP_BT][FLA_K + 1];  /* g log2 e, then gam         */
  __shared__ float Vs[GP_BT][GP_BV];
  __shared__ float Ss[FLA_K][GP_BV];
  __shared__ float As[GP_BT][GP_BT + 1];
#if FLA_HAS_BONUS
  __shared__ float Us[FLA_K];
#endif

  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * GP_BV;
  const int vcols = FLA_V - v0 < GP_BV ? FLA_V - v0 : GP_BV;
  const int tid = threadIdx.x;
  const fla_i64 *cu = (const fla_i64 *)a.cu;
  const fla_i64 bos = cu[n], eos = cu[n + 1];
  const fla_i64 st0 = fla_off_state(n, h, H, FLA_K, FLA_V);
  (void)st0;
  const in_t *q = (const in_t *)a.q;
  const in_t *g = (const in_t *)a.g;
  const in_t *v = (const in_t *)a.v;
  in_t *o = (in_t *)a.o;
#if !FLA_KEY_FROM_DECAY
  const in_t *k = (const in_t *)a.k;
#endif

#if FLA_HAS_BONUS
  for (int d = tid; d < FLA_K; d += GP_NTH) Us[d] = fla_ld((const in_t *)a.bonus, (fla_i64)h * FLA_K + d);
#endif
  for (int e = tid; e < FLA_K * GP_BV; e += GP_NTH) {
    const int i = e / GP_BV, c = e % GP_BV;
    float s = 0.f;
#if FLA_HAS_H0
    if (c < vcols) s = ((const float *)a.h0)[st0 + (fla_i64)i * FLA_V + v0 + c];
#endif
    Ss[i][c] = s;
  }

  for (fla_i64 t0 = bos; t0 < eos; t0 += GP_BT) {
    const int C = (int)(eos - t0 < GP_BT ? eos - t0 : GP_BT);
    /* the chunk's rows (zeros past C and past V) */
    for (int e = tid; e < GP_BT * FLA_K; e += GP_NTH) {
      const int r = e / FLA_K, d = e % FLA_K;
      const bool in = r < C;
      const fla_i64 at = fla_off_thd(t0 + r, h, H, FLA_K) + d;
      const float gr = in ? fla_ld(g, at) : 0.f;
      Qs[r][d] = in ? fla_ld(q, at) : 0.f;
#if FLA_KEY_FROM_DECAY
      Ks[r][d] = in ? -expm1f(gr) : 0.f;
#else
      Ks[r][d] = in ? fla_ld(k, at) : 0.f;
#endif
      Gs[r][d] = gr * GP_LOG2E;
    }
    for (int e = tid; e < GP_BT * GP_BV; e += GP_NTH) {
      const int r = e / GP_BV, c = e % GP_BV;
      Vs[r][c] = r < C && c < vcols ? fla_ld(v, fla_off_thd(t0 + r, h, H, FLA_V) + v0 + c) : 0.f;
    }
    __syncthreads();

    /* gam: the cumsum down each key's column, in order */
    for (int d = tid; d < FLA_K; d += GP_NTH) {
      float acc = 0.f;
      for (int r = 0; r < GP_BT; r++) {
        acc += Gs[r][d];
        Gs[r][d] = acc;
      }
    }
    __syncthreads();

    /* A, causal: every exponent gx_id - gam_jd <= 0 */
    for (int e = tid; e < GP_BT * GP_BT; e += GP_NTH) {
      const int i = e / GP_BT, j = e % GP_BT;
      float s = 0.f;
#if FLA_READ_BEFORE
      if (j < i && i < C) {
        for (int d = 0; d < FLA_K; d++) s += Qs[i][d] * Ks[j][d] * exp2f(Gs[i - 1][d] - Gs[j][d]);
      }
#if FLA_HAS_BONUS
      if (j == i && i < C) {
        for (int d = 0; d < FLA_K; d++) s += Qs[i][d] * Us[d] * Ks[i][d];
      }
#endif
#else
      if (j <= i && i < C) {
        for (int d = 0; d < FLA_K; d++) s += Qs[i][d] * Ks[j][d] * exp2f(Gs[i][d] - Gs[j][d]);
      }
#endif
      As[i][j] = s;
    }
    __syncthreads();

    /* q .* 2^gx and k .* 2^(gam_L - gam) in place (rows past C stay 0) */
    for (int e = tid; e < GP_BT * FLA_K; e += GP_NTH) {
      const int r = e / FLA_K, d = e % FLA_K;
#if FLA_READ_BEFORE
      const float gx = r > 0 ? Gs[r - 1][d] : 0.f;
#else
      const float gx = Gs[r][d];
#endif
      Qs[r][d] *= exp2f(gx);
      Ks[r][d] *= exp2f(Gs[C - 1][d] - Gs[r][d]);
    }
    __syncthreads();

    /* o = scale ((Q .* 2^gx) S0 + A V) */
    for (int e = tid; e < GP_BT * GP_BV; e += GP_NTH) {
      const int i = e / GP_BV, c = e % GP_BV;
      if (i >= C || c >= vcols) continue;
      float qs = 0.f, av = 0.f;
      for (int d = 0; d < FLA_K; d++) qs += Qs[i][d] * Ss[d][c];
      for (int j = 0; j <= i; j++) av += As[i][j] * Vs[j][c];
      fla_st(o, fla_off_thd(t0 + i, h, H, FLA_V) + v0 + c, a.scale * (qs + av));
    }
    __syncthreads(); /* S0 is read above and replaced below */

    /* S = diag(2^gam_L) S0 + (K .* 2^(gam_L - gam))^T V */
    for (int e = tid; e < FLA_K * GP_BV; e += GP_NTH) {
      const int d = e / GP_BV, c = e % GP_BV;
      float s = 0.f;
      for (int j = 0; j < C; j++) s += Ks[j][d] * Vs[j][c];
      Ss[d][c] = exp2f(Gs[C - 1][d]) * Ss[d][c] + s;
    }
    __syncthreads(); /* the next chunk's loads overwrite Q, K, G, V */
  }

#if FLA_STORE_HT
  for (int e = tid; e < FLA_K * GP_BV; e += GP_NTH) {
    const int i = e / GP_BV, c = e % GP_BV;
    if (c < vcols) ((float *)a.ht)[st0 + (fla_i64)i * FLA_V + v0 + c] = Ss[i][c];
  }
#endif
}
