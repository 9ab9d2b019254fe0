/*
** templates/common/chunk_bwd_portable.h -- the chunkwise backward of the
** decay family with scalar FMA tiles: no matrix instructions, no warp
** intrinsics, only __syncthreads and shared memory, so the same text
** compiles for CUDA and HIP (stage FLA_STAGE_CHUNK_BWD_PORTABLE,
** gen/stage_chunk_bwd_portable.c). The tensor-core stage is
** templates/cuda/chunk_bwd.cuh; this one has its math and its contract (dq,
** dk, dv, dg in the input dtype, dh0 f32) in f32 throughout.
**
** Keys: FLA_DELTA 0, FLA_READ_BEFORE 0, no bonus, probe or derived key;
** FLA_DECAY 0 (none), 1 (const gamma[h]: no gradient), 2 (scalar g [tok,H]:
** dg); bf16 or f32 inputs.
**
** The math (chunk_bwd.cuh; gam = chunk-local inclusive cumsum of g log2 e,
** gL its last row; h = the state entering the chunk, dh = the gradient of the
** state leaving it; D_ij = [j <= i] 2^(gam_i - gam_j)):
**   A   = scale (Q K^T) .* D           ds = scale (dO V^T) .* D
**   dQ  = scale 2^gam .* (dO h^T) + ds K
**   dK  = 2^(gL - gam) .* (V dh^T) + ds^T Q
**   dV  = 2^(gL - gam) .* (K dh) + A^T dO
**   dh_prev = 2^gL dh + (scale 2^gam .* Q)^T dO
**   dgam_i = q_i.dq_i - k_i.dk_i + [i = C-1] <S_L, dh>,  S_L = 2^gL h + (K .* 2^(gL - gam))^T V
**   dg_i = sum_{i <= i' < C} dgam_i'
** (S_L is the state leaving the chunk: <S_L, dh> is chunk_bwd.cuh's
** 2^gL <h, dh> + sum_j k_j.(2^(gL - gam_j) V dh^T)_j.) Every exponent is <= 0.
**
** Two kernels, chunks of FLA_BT tokens (the chunk tables a.chunk_first,
** a.chunk_seq, a.num_chunks are for that size):
**   fla_chunk_bwd_portable_walk (N*H, ceil(V/BV), 2): z = 0 walks sequence n
**       forward from h0 (or 0), storing the state entering each chunk, h_c,
**       to ws0 [NC,H,K,V] f32; z = 1 walks it backward from dht (or 0),
**       storing dh_c to ws1 (same layout) and dh0 at the end. A program holds
**       a K x BV slice of the state in shared memory.
**   fla_chunk_bwd_portable_dqkv (NC, H): chunk c's dq, dk, dv, dg from q, k,
**       v, dO, g and h_c, dh_c (read from global memory). Sums run in a
**       fixed order (block sums through shared memory): results do not depend
**       on timing.
*/

#if FLA_DELTA || FLA_READ_BEFORE || FLA_HAS_BONUS || FLA_HAS_PROBE || FLA_KEY_FROM_DECAY || FLA_DECAY > 2
#error "chunk_bwd_portable: the decay family (none, const, scalar), plain write, read after"
#endif

#define BP_BT FLA_BT
#define BP_BV FLA_BV
#define BP_NTH (32 * FLA_WARPS)
#define BP_LOG2E 1.4426950408889634f

static_assert(BP_BT >= 1 && BP_BT <= 64, "chunk_bwd_portable: BT in 1..64");
static_assert(BP_BV >= 1 && BP_BV <= 64, "chunk_bwd_portable: BV in 1..64");

/* gam (base 2) of rows t0 .. t0 + C - 1 (rows past C repeat the last), 2^gam,
** 2^(gL - gam); one thread, in order. */
FLA_DEVICE void bp_gates(const fla_kernel_args &a, fla_i64 t0, int C, int h, float *gam, float *eg,
                         float *wl) {
  float acc = 0.f;
#if FLA_DECAY == 1
  const float gc = ((const float *)a.gamma)[h] * BP_LOG2E;
#endif
  for (int r = 0; r < BP_BT; r++) {
#if FLA_DECAY == 2
    if (r < C) acc += fla_ld((const in_t *)a.g, fla_off_th(t0 + r, h, a.H)) * BP_LOG2E;
#elif FLA_DECAY == 1
    if (r < C) acc += gc;
#endif
    gam[r] = acc;
  }
  for (int r = 0; r < BP_BT; r++) {
    eg[r] = exp2f(gam[r]);
    wl[r] = exp2f(gam[C - 1] - gam[r]);
  }
  (void)a, (void)t0, (void)h;
}

extern "C" __global__ void __launch_bounds__(BP_NTH)
fla_chunk_bwd_portable_walk(const fla_kernel_args a) {
  __shared__ float Xs[BP_BT][FLA_K + 1]; /* k (z = 0) or q (z = 1)   */
  __shared__ float Ys[BP_BT][BP_BV];     /* v (z = 0) or dO (z = 1)  */
  __shared__ float Ss[FLA_K][BP_BV];     /* the state or its gradient */
  __shared__ float gam[BP_BT], eg[BP_BT], wl[BP_BT];

  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * BP_BV;
  const int vcols = FLA_V - v0 < BP_BV ? FLA_V - v0 : BP_BV;
  const bool back = blockIdx.z == 1;
  const int tid = threadIdx.x;
  const fla_i64 *cu = (const fla_i64 *)a.cu;
  const fla_i64 bos = cu[n], eos = cu[n + 1];
  const fla_i64 c0 = ((const fla_i64 *)a.chunk_first)[n];
  const int nc = (int)((eos - bos + BP_BT - 1) / BP_BT);
  const fla_i64 st0 = fla_off_state(n, h, H, FLA_K, FLA_V);
  const float *init = (const float *)(back ? a.dht : a.h0);
  float *ws = (float *)(back ? a.ws1 : a.ws0);

  for (int e = tid; e < FLA_K * BP_BV; e += BP_NTH) {
    const int i = e / BP_BV, c = e % BP_BV;
    Ss[i][c] = init && c < vcols ? init[st0 + (fla_i64)i * FLA_V + v0 + c] : 0.f;
  }
  __syncthreads();

  for (int s = 0; s < nc; s++) {
    const int lc = back ? nc - 1 - s : s; /* the chunk, in walk order */
    const fla_i64 t0 = bos + (fla_i64)lc * BP_BT;
    const int C = (int)(eos - t0 < BP_BT ? eos - t0 : BP_BT);
    /* store: h_c (entering) or dh_c (leaving) */
    float *dst = ws + ((c0 + lc) * H + h) * (fla_i64)FLA_K * FLA_V;
    for (int e = tid; e < FLA_K * BP_BV; e += BP_NTH) {
      const int i = e / BP_BV, c = e % BP_BV;
      if (c < vcols) dst[(fla_i64)i * FLA_V + v0 + c] = Ss[i][c];
    }
    const in_t *xs = (const in_t *)(back ? a.q : a.k);
    const in_t *ys = (const in_t *)(back ? a.d_o : a.v);
    for (int e = tid; e < BP_BT * FLA_K; e += BP_NTH) {
      const int r = e / FLA_K, i = e % FLA_K;
      Xs[r][i] = r < C ? fla_ld(xs, fla_off_thd(t0 + r, h, H, FLA_K) + i) : 0.f;
    }
    for (int e = tid; e < BP_BT * BP_BV; e += BP_NTH) {
      const int r = e / BP_BV, c = e % BP_BV;
      Ys[r][c] = r < C && c < vcols ? fla_ld(ys, fla_off_thd(t0 + r, h, H, FLA_V) + v0 + c) : 0.f;
    }
    if (tid == 0) bp_gates(a, t0, C, h, gam, eg, wl);
    __syncthreads();
    /* forward:  S  = 2^gL S  + (K .* 2^(gL - gam))^T V
    ** backward: dh = 2^gL dh + (scale 2^gam .* Q)^T dO */
    for (int e = tid; e < FLA_K * BP_BV; e += BP_NTH) {
      const int i = e / BP_BV, c = e % BP_BV;
      float s = 0.f;
      for (int j = 0; j < C; j++) s += Xs[j][i] * (back ? a.scale * eg[j] : wl[j]) * Ys[j][c];
      Ss[i][c] = eg[C - 1] * Ss[i][c] + s;
    }
    __syncthreads();
  }
  if (back && a.dh0) {
    for (int e = tid; e < FLA_K * BP_BV; e += BP_NTH) {
      const int i = e / BP_BV, c = e % BP_BV;
      if (c < vcols) ((float *)a.dh0)[st0 + (fla_i64)i * FLA_V + v0 + c] = Ss[i][c];
    }
  }
}

extern "C" __global__ void __launch_bounds__(BP_NTH)
fla_chunk_bwd_portable_dqkv(const fla_kernel_args a) {
  __shared__ float Qs[BP_BT][FLA_K + 1];
  __shared__ float Ks[BP_BT][FLA_K + 1];
  __shared__ float Ds[BP_BT][FLA_K + 1]; /* dq, then dk (f32, for dg)   */
  __shared__ float Vs[BP_BT][FLA_V + 1];
  __shared__ float Os[BP_BT][FLA_V + 1]; /* dO                          */
  __shared__ float As[BP_BT][BP_BT + 1];
  __shared__ float Ps[BP_BT][BP_BT + 1]; /* ds                          */
  __shared__ float gam[BP_BT], eg[BP_BT], wl[BP_BT], dgam[BP_BT];
  __shared__ float red[BP_NTH];

  const int H = a.H;
  const int ch = blockIdx.x, h = blockIdx.y;
  if (ch >= a.num_chunks) return; /* uniform over the block */
  const int tid = threadIdx.x;
  const int n = ((const fla_i32 *)a.chunk_seq)[ch];
  const fla_i64 *cu = (const fla_i64 *)a.cu;
  const fla_i64 t0 = cu[n] + (ch - ((const fla_i64 *)a.chunk_first)[n]) * (fla_i64)BP_BT;
  const fla_i64 eos = cu[n + 1];
  const int C = (int)(eos - t0 < BP_BT ? eos - t0 : BP_BT);
  const fla_i64 sc = ((fla_i64)ch * H + h) * (fla_i64)FLA_K * FLA_V;
  const float *hc = (const float *)a.ws0 + sc;  /* h, K x V   */
  const float *dhc = (const float *)a.ws1 + sc; /* dh, K x V  */

  for (int e = tid; e < BP_BT * FLA_K; e += BP_NTH) {
    const int r = e / FLA_K, i = e % FLA_K;
    const bool in = r < C;
    const fla_i64 at = fla_off_thd(t0 + r, h, H, FLA_K) + i;
    Qs[r][i] = in ? fla_ld((const in_t *)a.q, at) : 0.f;
    Ks[r][i] = in ? fla_ld((const in_t *)a.k, at) : 0.f;
  }
  for (int e = tid; e < BP_BT * FLA_V; e += BP_NTH) {
    const int r = e / FLA_V, c = e % FLA_V;
    const bool in = r < C;
    const fla_i64 at = fla_off_thd(t0 + r, h, H, FLA_V) + c;
    Vs[r][c] = in ? fla_ld((const in_t *)a.v, at) : 0.f;
    Os[r][c] = in ? fla_ld((const in_t *)a.d_o, at) : 0.f;
  }
  if (tid == 0) bp_gates(a, t0, C, h, gam, eg, wl);
  __syncthreads();

  /* A = scale (Q K^T) .* D,  ds = scale (dO V^T) .* D */
  for (int e = tid; e < BP_BT * BP_BT; e += BP_NTH) {
    const int i = e / BP_BT, j = e % BP_BT;
    float s = 0.f, p = 0.f;
    if (j <= i && i < C) {
#pragma unroll 4
      for (int m = 0; m < FLA_K; m++) s += Qs[i][m] * Ks[j][m];
#pragma unroll 4
      for (int m = 0; m < FLA_V; m++) p += Os[i][m] * Vs[j][m];
      const float d = a.scale * exp2f(gam[i] - gam[j]);
      s *= d, p *= d;
    }
    As[i][j] = s;
    Ps[i][j] = p;
  }
  __syncthreads();

  /* dq = scale 2^gam .* (dO h^T) + ds K */
  for (int e = tid; e < BP_BT * FLA_K; e += BP_NTH) {
    const int i = e / FLA_K, d = e % FLA_K;
    float x = 0.f, y = 0.f;
    if (i < C) {
#pragma unroll 4
      for (int c = 0; c < FLA_V; c++) x += Os[i][c] * hc[(fla_i64)d * FLA_V + c];
      for (int j = 0; j <= i; j++) y += Ps[i][j] * Ks[j][d];
      x = a.scale * eg[i] * x + y;
      if (a.dq) fla_st((in_t *)a.dq, fla_off_thd(t0 + i, h, H, FLA_K) + d, x);
    }
    Ds[i][d] = x;
  }
  __syncthreads();
  for (int i = tid; i < C; i += BP_NTH) { /* dgam_i = q_i.dq_i - ... */
    float s = 0.f;
#pragma unroll 4
    for (int d = 0; d < FLA_K; d++) s += Qs[i][d] * Ds[i][d];
    dgam[i] = s;
  }
  __syncthreads();

  /* dk = 2^(gL - gam) .* (V dh^T) + ds^T Q */
  for (int e = tid; e < BP_BT * FLA_K; e += BP_NTH) {
    const int j = e / FLA_K, d = e % FLA_K;
    float x = 0.f, y = 0.f;
    if (j < C) {
#pragma unroll 4
      for (int c = 0; c < FLA_V; c++) x += Vs[j][c] * dhc[(fla_i64)d * FLA_V + c];
      for (int i = j; i < C; i++) y += Ps[i][j] * Qs[i][d];
      x = wl[j] * x + y;
      if (a.dk) fla_st((in_t *)a.dk, fla_off_thd(t0 + j, h, H, FLA_K) + d, x);
    }
    Ds[j][d] = x;
  }
  __syncthreads();
  for (int i = tid; i < C; i += BP_NTH) { /* ... - k_i.dk_i */
    float s = 0.f;
#pragma unroll 4
    for (int d = 0; d < FLA_K; d++) s += Ks[i][d] * Ds[i][d];
    dgam[i] -= s;
  }

  /* dv = 2^(gL - gam) .* (K dh) + A^T dO */
  for (int e = tid; e < BP_BT * FLA_V; e += BP_NTH) {
    const int j = e / FLA_V, c = e % FLA_V;
    if (j >= C || !a.dv) continue;
    float x = 0.f, y = 0.f;
#pragma unroll 4
    for (int d = 0; d < FLA_K; d++) x += Ks[j][d] * dhc[(fla_i64)d * FLA_V + c];
    for (int i = j; i < C; i++) y += As[i][j] * Os[i][c];
    fla_st((in_t *)a.dv, fla_off_thd(t0 + j, h, H, FLA_V) + c, wl[j] * x + y);
  }

#if FLA_DECAY == 2
  if (!a.dg) return; /* uniform over the block */
  /* <S_L, dh>, S_L = 2^gL h + (K .* 2^(gL - gam))^T V: per-thread partial
  ** sums, then one thread adds them in order */
  float part = 0.f;
  for (int e = tid; e < FLA_K * FLA_V; e += BP_NTH) {
    const int d = e / FLA_V, c = e % FLA_V;
    float s = 0.f;
    for (int j = 0; j < C; j++) s += Ks[j][d] * wl[j] * Vs[j][c];
    part += (eg[C - 1] * hc[e] + s) * dhc[e];
  }
  red[tid] = part;
  __syncthreads();
  if (tid == 0) {
    float tot = 0.f;
    for (int t = 0; t < BP_NTH; t++) tot += red[t];
    dgam[C - 1] += tot;
    float acc = 0.f; /* dg_i: the suffix sums of dgam */
    for (int i = C - 1; i >= 0; i--) {
      acc += dgam[i];
      fla_st((in_t *)a.dg, fla_off_th(t0 + i, h, H), acc);
    }
  }
#else
  (void)red;
#endif
}
