/*
** templates/common/chunk_wy_fwd_portable.h -- the chunkwise forward of the
** delta rule with scalar FMA tiles: no matrix instructions, no warp
** intrinsics, only __syncthreads and shared memory, so the same text
** compiles for CUDA and HIP (stage FLA_STAGE_CHUNK_WY_FWD_PORTABLE,
** gen/stage_chunk_wy_portable.c). The tensor-core stage is
** templates/cuda/chunk_wy_fwd.cuh; this one has the same math in f32
** throughout and the decomposition of chunk_fwd_portable.h.
**
** Keys: FLA_DELTA 1, read after the token, FLA_DECAY 0 (none), 1 (const
** gamma[h]), 2 (scalar g [tok,H]); a separate probe p (FLA_HAS_PROBE, Comba)
** or p = k; beta [tok,H]; bf16 or f32 inputs.
**
** The recurrence (runtime/cpu/cpu.h): S~ = 2^g S,  u_t = beta_t (v_t - S~^T p_t),
** S = S~ + k_t u_t^T, o_t = scale S^T q_t. Grid (N*H, ceil(V / BV)):
** program (nh, vt) walks sequence n chunk by chunk with the K x BV slice of
** the state in shared memory. Per chunk of C <= BT rows with S0 entering it,
** log gates in base 2 (gam_i = sum_{r <= i} g_r log2 e):
**   M_tj = 2^(gam_t - gam_j) (p_t . k_j)                           j < t
**   (I + diag(beta) M) U = diag(beta) (V - diag(2^gam) P S0)        the UT system
**   A_ij = 2^(gam_i - gam_j) (q_i . k_j)                           j <= i
**   o_i  = scale [ 2^gam_i (q_i S0) + sum_{j <= i} A_ij u_j ]
**   S    = 2^gam_L S0 + (K .* 2^(gam_L - gam))^T U                  gam_L = gam_{C-1}
** chunk_wy_fwd.cuh forms T = (I + diag(beta) M)^-1 and the WY factors
** W = T diag(beta 2^gam) P, U' = T diag(beta) V (then U = U' - W S0); here
** the program knows S0, so it solves the same unit lower-triangular system
** for its BV columns of U directly, by forward substitution (one thread a
** column, rows in order). Every exponent is <= 0. Sums run in a fixed
** order: results do not depend on timing.
*/

#if !FLA_DELTA || FLA_READ_BEFORE || FLA_DECAY > 2 || FLA_HAS_BONUS || FLA_KEY_FROM_DECAY
#error "chunk_wy_fwd_portable: the delta rule, decay none/const/scalar, read after the token"
#endif

#define WP_BT FLA_BT
#define WP_BV FLA_BV
#define WP_NTH (32 * FLA_WARPS)
#define WP_LOG2E 1.4426950408889634f

static_assert(WP_BT >= 1 && WP_BT <= 64, "chunk_wy_fwd_portable: BT in 1..64");
static_assert(WP_BV >= 1 && WP_BV <= 64, "chunk_wy_fwd_portable: BV in 1..64");

extern "C" __global__ void __launch_bounds__(WP_NTH) fla_chunk_wy_fwd_portable(const fla_kernel_args a) {
  /* +1: row strides that do not all fall on one shared-memory bank */
  __shared__ float Qs[WP_BT][FLA_K + 1];
  __shared__ float Ks[WP_BT][FLA_K + 1];
#if FLA_HAS_PROBE
  __shared__ float Ps[WP_BT][FLA_K + 1];
#define WP_P Ps
#else
#define WP_P Ks
#endif
  __shared__ float Us[WP_BT][WP_BV]; /* v, then the right side, then u */
  __shared__ float Ss[FLA_K][WP_BV];
  __shared__ float As[WP_BT][WP_BT + 1]; /* M, then A */
  __shared__ float gam[WP_BT];
  __shared__ float eg[WP_BT]; /* 2^gam_i                                     */
  __shared__ float wl[WP_BT]; /* 2^(gam_L - gam_j): the state update's gates */
  __shared__ float bt[WP_BT]; /* beta                                        */

  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * WP_BV;
  const int vcols = FLA_V - v0 < WP_BV ? FLA_V - v0 : WP_BV;
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
  const float gc = ((const float *)a.gamma)[h] * WP_LOG2E;
#endif

  for (int e = tid; e < FLA_K * WP_BV; e += WP_NTH) {
    const int i = e / WP_BV, c = e % WP_BV;
    float s = 0.f;
#if FLA_HAS_H0
    if (c < vcols) s = ((const float *)a.h0)[st0 + (fla_i64)i * FLA_V + v0 + c];
#endif
    Ss[i][c] = s;
  }

  for (fla_i64 t0 = bos; t0 < eos; t0 += WP_BT) {
    const int C = (int)(eos - t0 < WP_BT ? eos - t0 : WP_BT);
    /* the chunk's rows (zeros past C and past V) */
    for (int e = tid; e < WP_BT * FLA_K; e += WP_NTH) {
      const int r = e / FLA_K, i = e % FLA_K;
      const bool in = r < C;
      const fla_i64 at = fla_off_thd(t0 + r, h, H, FLA_K) + i;
      Qs[r][i] = in ? fla_ld(q, at) : 0.f;
      Ks[r][i] = in ? fla_ld(k, at) : 0.f;
#if FLA_HAS_PROBE
      Ps[r][i] = in ? fla_ld((const in_t *)a.p, at) : 0.f;
#endif
    }
    for (int e = tid; e < WP_BT * WP_BV; e += WP_NTH) {
      const int r = e / WP_BV, c = e % WP_BV;
      Us[r][c] = r < C && c < vcols ? fla_ld(v, fla_off_thd(t0 + r, h, H, FLA_V) + v0 + c) : 0.f;
    }
    if (tid == 0) { /* the gate cumsum: at most BT additions, in order */
      float acc = 0.f;
      for (int r = 0; r < WP_BT; r++) {
#if FLA_DECAY == 2
        if (r < C) acc += fla_ld((const in_t *)a.g, fla_off_th(t0 + r, h, H)) * WP_LOG2E;
#elif FLA_DECAY == 1
        if (r < C) acc += gc;
#endif
        gam[r] = acc;
        bt[r] = r < C ? fla_ld((const in_t *)a.beta, fla_off_th(t0 + r, h, H)) : 0.f;
      }
      for (int r = 0; r < WP_BT; r++) {
        eg[r] = exp2f(gam[r]);
        wl[r] = exp2f(gam[C - 1] - gam[r]);
      }
    }
    __syncthreads();

    /* M (strictly causal) and the right side V - diag(2^gam) P S0 */
    for (int e = tid; e < WP_BT * WP_BT; e += WP_NTH) {
      const int t = e / WP_BT, j = e % WP_BT;
      float s = 0.f;
      if (j < t && t < C) {
        for (int m = 0; m < FLA_K; m++) s += WP_P[t][m] * Ks[j][m];
#if FLA_DECAY
        s *= exp2f(gam[t] - gam[j]);
#endif
      }
      As[t][j] = s;
    }
    for (int e = tid; e < WP_BT * WP_BV; e += WP_NTH) {
      const int t = e / WP_BV, c = e % WP_BV;
      if (t >= C || c >= vcols) continue;
      float ps = 0.f;
      for (int m = 0; m < FLA_K; m++) ps += WP_P[t][m] * Ss[m][c];
      Us[t][c] -= eg[t] * ps;
    }
    __syncthreads();

    /* U by forward substitution: u_t = beta_t (r_t - sum_{j < t} M_tj u_j) */
    for (int c = tid; c < vcols; c += WP_NTH) {
      for (int t = 0; t < C; t++) {
        float s = Us[t][c];
        for (int j = 0; j < t; j++) s -= As[t][j] * Us[j][c];
        Us[t][c] = bt[t] * s;
      }
    }
    __syncthreads(); /* M is read above and replaced below */

    /* A = (Q K^T) .* 2^(gam_i - gam_j), causal */
    for (int e = tid; e < WP_BT * WP_BT; e += WP_NTH) {
      const int i = e / WP_BT, j = e % WP_BT;
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

    /* o = scale (2^gam_i Q S0 + A U) */
    for (int e = tid; e < WP_BT * WP_BV; e += WP_NTH) {
      const int i = e / WP_BV, c = e % WP_BV;
      if (i >= C || c >= vcols) continue;
      float qs = 0.f, au = 0.f;
      for (int m = 0; m < FLA_K; m++) qs += Qs[i][m] * Ss[m][c];
      for (int j = 0; j <= i; j++) au += As[i][j] * Us[j][c];
#if FLA_DECAY
      qs *= eg[i];
#endif
      fla_st(o, fla_off_thd(t0 + i, h, H, FLA_V) + v0 + c, a.scale * (qs + au));
    }
    __syncthreads(); /* S0 is read above and replaced below */

    /* S = 2^gam_L S0 + (K .* 2^(gam_L - gam))^T U */
    for (int e = tid; e < FLA_K * WP_BV; e += WP_NTH) {
      const int m = e / WP_BV, c = e % WP_BV;
      float s = 0.f;
      for (int j = 0; j < C; j++) {
#if FLA_DECAY
        s += Ks[j][m] * wl[j] * Us[j][c];
#else
        s += Ks[j][m] * Us[j][c];
#endif
      }
#if FLA_DECAY
      Ss[m][c] = eg[C - 1] * Ss[m][c] + s;
#else
      Ss[m][c] += s;
#endif
    }
    __syncthreads(); /* the next chunk's loads overwrite Q, K, P, U, gam */
  }

#if FLA_STORE_HT
  for (int e = tid; e < FLA_K * WP_BV; e += WP_NTH) {
    const int i = e / WP_BV, c = e % WP_BV;
    if (c < vcols) ((float *)a.ht)[st0 + (fla_i64)i * FLA_V + v0 + c] = Ss[i][c];
  }
#endif
}
#undef WP_P
