/*
** templates/cuda/recurrent_bwd.cuh -- the token-by-token backward of
** runtime/cpu/recurrent.c (the float64 oracle) with the state on chip: the
** reverse-mode pass of L = sum(o * d_o) + sum(ht * dht) through
**
**   S~ = decay_t S_prev;  S = S~ + k w^T  (w = v, or u = beta (v - S~^T p))
**   o = scale S^T q  (read after)  |  scale S_prev^T q + scale (q.(b*k)) v
**
** Two kernels:
**
** fla_recurrent_bwd, grid (N*H, NV = ceil(V / BV)), FLA_WARPS warps. Block
** (nh, vb) owns the K x BV slice of pair nh's state, laid out as in
** recurrent_fwd: lane l of warp w serves column j = l % BV and row group
** grp = w * (32 / BV) + l / BV, rows i0 = grp * RB_KPT ... (RB_KPT rows).
**   1. forward sweep over the sequence (decay + write only), saving the
**      state before every FLA_BT-th token (a segment start) to ws0;
**   2. segments last to first: reload the checkpoint, replay the segment
**      saving the state before each token (ws0's per-block segment buffer),
**      then undo its tokens last to first with dS = dL/dS_t in registers:
**
**      read after:  dq_i = scale sum_j S_t,ij dO_j;  dS += scale q dO^T
**      delta:       r = S~^T p;  du = dS^T k;  u = beta (v - r)
**                   dk_i = sum_j dS_ij u_j;  dv = beta du;
**                   dbeta = du . (v - r);  dr = -beta du;
**                   dp_i = sum_j S~_ij dr_j;  dS~ = dS + p dr^T
**      plain:       dk_i = sum_j dS_ij v_j;  dv = dS^T k;  dS~ = dS
**      decay:       scalar dg = sum(S~ o dS~) = sum(S~ o dS) + dr . r;
**                   per-key dg_i = sum_j S~_ij dS~_ij;  dS_prev = decay dS~
**      read before: dq_i = scale sum_j S_prev,ij dO_j;  dS_prev += scale q dO^T;
**                   bonus: c = q.(b*k), a_j = scale dO_j v_j:  dv += scale c dO,
**                   dq += (sum_j a_j) b*k, dk += (sum_j a_j) b*q,
**                   dbonus += (sum_j a_j) q*k
**      (no probe: p is k, so dk += dp.)
**   Sums over rows (r, du/dv, sum(S~ o dS), c) go over the row groups
**   (shuffles, then shared memory across warps); sums over the block's
**   columns (dq, dk, dp, dg rows; dbeta, scalar dg) over the BV lanes of a
**   row group (butterfly). A block's column sums are partial: they go to
**   per-block slices of ws1, summed by the second kernel. dv and dh0 belong
**   to one block each and are written directly.
**
** fla_recurrent_bwd_reduce, a grid-stride loop: sums the NV partial slices
** in a fixed order (deterministic, no atomics) and writes dq, dk, dp as f32
** [tok,H,K] core gradients (the op's prep_bwd maps them onto the inputs),
** dg (HGRN2: dg - exp(g) dk, as k = 1 - exp(g)), dbeta and dbonus (summed
** over sequences too) in the input dtype.
**
** Key fields: FLA_HAS_H0 reads h0; FLA_STORE_HT means a dht is given.
** Workspaces (f32), with R = total*H, SL = RB_KPT * RB_THREADS floats a block:
**   ws0: checkpoints [floor(total/BT) + N + 1][H][NV][SL] (segment c of
**        sequence n goes to slot floor(bos/BT) + n + c: unique, see
**        gen/stage_recurrent_bwd.c), then segment buffers [N*H][NV][BT][SL].
**   ws1: partials dq, dk [NV][R][K]; dp [NV][R][K] (probe); dg [NV][R][K]
**        (per-key) or [NV][R] (scalar); dbeta [NV][R] (delta);
**        dbonus [N][NV][H][K] (bonus).
*/

#define RB_THREADS (FLA_WARPS * 32)
#define RB_GPW (32 / FLA_BV)
#define RB_GROUPS (FLA_WARPS * RB_GPW)
#define RB_KPT FLA_CEIL_DIV(FLA_K, RB_GROUPS)
#define RB_NV FLA_CEIL_DIV(FLA_V, FLA_BV)
#define RB_SL (RB_KPT * RB_THREADS)

static_assert(FLA_BV >= 1 && FLA_BV <= 32 && (32 % FLA_BV) == 0, "BV must divide 32");
static_assert(RB_KPT >= 1 && RB_KPT <= 64, "recurrent_bwd: too many state rows per thread");
static_assert(FLA_BT >= 1 && FLA_BT <= 1024, "recurrent_bwd: BT is the checkpoint interval");

/* Offsets into ws1 (floats), from the runtime sizes. */
struct rb_parts {
  fla_i64 q, k, p, g, beta, bonus;
};

FLA_DEVICE rb_parts rb_layout(fla_i64 R, int N, int H) {
  rb_parts o;
  const fla_i64 PK = (fla_i64)RB_NV * R * FLA_K;
  fla_i64 at = 0;
  o.q = at, at += PK;
  o.k = at, at += PK;
  o.p = at;
  if (FLA_DELTA && FLA_HAS_PROBE) at += PK;
  o.g = at;
  if (FLA_DECAY == 3) at += PK;
  else if (FLA_DECAY == 2) at += (fla_i64)RB_NV * R;
  o.beta = at;
  if (FLA_DELTA) at += (fla_i64)RB_NV * R;
  o.bonus = at;
  (void)N, (void)H;
  return o;
}

/* Sum over the BV lanes of a row group (contiguous lanes): every lane of
** the group gets the same bits. */
FLA_DEVICE float rb_group_sum(float x) {
#pragma unroll
  for (int off = 1; off < FLA_BV; off <<= 1) x += fla_lane_xor(x, off);
  return x;
}

/* x[m] = row[i0 + m] for rows below K, else 0. */
FLA_DEVICE void rb_rows(const in_t *row, int i0, float *x) {
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) x[m] = i0 + m < FLA_K ? fla_ld(row, i0 + m) : 0.f;
}

/* Column sums over the row groups of NQ values: shuffles within the warp,
** then shared memory across warps (buffer par, flipped by the caller so
** that one barrier a call suffices). */
template <int NQ>
FLA_DEVICE void rb_col_sum(float *x, float (*red)[4][FLA_WARPS][FLA_BV], int &par, int warp,
                           int lane, int j) {
#pragma unroll
  for (int q = 0; q < NQ; q++) x[q] = fla_warp_sum_strided(x[q], FLA_BV);
#if FLA_WARPS > 1
  if (lane < FLA_BV) {
#pragma unroll
    for (int q = 0; q < NQ; q++) red[par][q][warp][j] = x[q];
  }
  __syncthreads();
#pragma unroll
  for (int q = 0; q < NQ; q++) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < FLA_WARPS; w++) s += red[par][q][w][j];
    x[q] = s;
  }
  par ^= 1;
#else
  (void)red, (void)par, (void)warp, (void)lane, (void)j;
#endif
}

/* A row quantity x[m] (this lane's column) summed over the block's columns
** and stored to dst[i0 + m]: lane j of the group stores rows m = j mod BV,
** so the group's stores are contiguous. */
FLA_DEVICE void rb_store_rows(float *x, float *dst, int i0, int j) {
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) {
    const float s = rb_group_sum(x[m]);
    if (m % FLA_BV == j && i0 + m < FLA_K) dst[i0 + m] = s;
  }
}

/* One token's inputs for this lane's rows and column: fetched raw, then
** finished (gates exponentiated, HGRN2's key derived). (Fetching the next
** token ahead, in registers, measured slower on an H100: 983 vs 739 ms for
** GDN fwd+bwd at B=1, T=262144, H=8, K=V=128.) */
struct rb_tok {
  float q[RB_KPT], k[RB_KPT];
#if FLA_DELTA && FLA_HAS_PROBE
  float p[RB_KPT];
#endif
#if FLA_DECAY == 3
  float eg[RB_KPT]; /* raw g until finished */
#endif
  float v, beta, eg1; /* eg1: exp(g) of a scalar or constant decay (raw g until finished) */
};

FLA_DEVICE void rb_fetch(const fla_kernel_args &a, fla_i64 t, int h, int i0, int col, bool colok,
                         bool need_q, rb_tok &x) {
  const int H = a.H;
  const fla_i64 rk = fla_off_thd(t, h, H, FLA_K);
  if (need_q) rb_rows((const in_t *)a.q + rk, i0, x.q);
#if FLA_DECAY == 3
  rb_rows((const in_t *)a.g + rk, i0, x.eg);
#endif
#if !FLA_KEY_FROM_DECAY
  rb_rows((const in_t *)a.k + rk, i0, x.k);
#endif
#if FLA_DELTA && FLA_HAS_PROBE
  rb_rows((const in_t *)a.p + rk, i0, x.p);
#endif
  x.v = colok ? fla_ld((const in_t *)a.v, fla_off_thd(t, h, H, FLA_V) + col) : 0.f;
#if FLA_DELTA
  x.beta = fla_ld((const in_t *)a.beta, fla_off_th(t, h, H));
#else
  x.beta = 0.f;
#endif
#if FLA_DECAY == 2
  x.eg1 = fla_ld((const in_t *)a.g, fla_off_th(t, h, H));
#endif
}

FLA_DEVICE void rb_finish(rb_tok &x, int i0, float eg_const) {
#if FLA_KEY_FROM_DECAY
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) x.k[m] = i0 + m < FLA_K ? -expm1f(x.eg[m]) : 0.f;
#endif
#if FLA_DECAY == 3
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) x.eg[m] = expf(x.eg[m]);
#endif
#if FLA_DECAY == 2
  x.eg1 = expf(x.eg1);
  (void)eg_const;
#else
  x.eg1 = eg_const;
#endif
  (void)i0;
}

/* S~ = decay S, in place. */
FLA_DEVICE void rb_decay(float *S, const rb_tok &x) {
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) {
#if FLA_DECAY == 3
    S[m] *= x.eg[m];
#elif FLA_DECAY != 0
    S[m] *= x.eg1;
#endif
  }
}

/* One forward step (decay and write) of the state slice S. */
FLA_DEVICE void rb_step(float *S, const rb_tok &x, float (*red)[4][FLA_WARPS][FLA_BV], int &par,
                        int warp, int lane, int j) {
  rb_decay(S, x);
#if FLA_DELTA
  float r[1] = {0.f};
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) {
#if FLA_HAS_PROBE
    r[0] += S[m] * x.p[m];
#else
    r[0] += S[m] * x.k[m];
#endif
  }
  rb_col_sum<1>(r, red, par, warp, lane, j);
  const float w = x.beta * (x.v - r[0]);
#else
  const float w = x.v;
  (void)red, (void)par, (void)warp, (void)lane, (void)j;
#endif
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) S[m] += x.k[m] * w;
}

extern "C" __global__ void __launch_bounds__(RB_THREADS, 1)
fla_recurrent_bwd(const fla_kernel_args a) {
  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int j = lane % FLA_BV;
  const int grp = warp * RB_GPW + lane / FLA_BV;
  const int i0 = grp * RB_KPT;
  const int vb = blockIdx.y;
  const int col = vb * FLA_BV + j;
  const bool colok = col < FLA_V;
  const fla_i64 *__restrict__ cu = (const fla_i64 *)a.cu;
  const fla_i64 bos = cu[n], eos = cu[n + 1];
  const fla_i64 st0 = fla_off_state(n, h, H, FLA_K, FLA_V);
  const fla_i64 R = a.total * H;
  const fla_i64 nseg = (eos - bos + FLA_BT - 1) / FLA_BT;
  const fla_i64 nslots = a.total / FLA_BT + a.N + 1;
  const fla_i64 slot0 = bos / FLA_BT + n;
  float *ckpt = (float *)a.ws0 + ((slot0 * H + h) * RB_NV + vb) * (fla_i64)RB_SL + tid;
  float *segb = (float *)a.ws0 + nslots * H * RB_NV * (fla_i64)RB_SL +
                ((fla_i64)nh * RB_NV + vb) * FLA_BT * (fla_i64)RB_SL + tid;
  const fla_i64 ckpt_stride = (fla_i64)H * RB_NV * RB_SL; /* next slot, same (h, vb) */
  const rb_parts P = rb_layout(R, a.N, H);
  float *ws1 = (float *)a.ws1;

  __shared__ float red[2][4][FLA_WARPS][FLA_BV];
  int par = 0;

#if FLA_DECAY == 1
  const float eg_const = expf(((const float *)a.gamma)[h]);
#else
  const float eg_const = 1.f;
#endif
#if FLA_HAS_BONUS
  float bon[RB_KPT], dbon[RB_KPT];
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) {
    bon[m] = i0 + m < FLA_K ? fla_ld((const in_t *)a.bonus + (fla_i64)h * FLA_K, i0 + m) : 0.f;
    dbon[m] = 0.f;
  }
#endif

  /* 1. Forward sweep: checkpoints at segment starts. */
  float S[RB_KPT];
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) {
    S[m] = 0.f;
#if FLA_HAS_H0
    if (colok && i0 + m < FLA_K) S[m] = ((const float *)a.h0)[st0 + (fla_i64)(i0 + m) * FLA_V + col];
#endif
  }
  /* Tokens before the last segment's start: the last end state is not needed. */
  const fla_i64 tend = nseg > 0 ? bos + (nseg - 1) * FLA_BT : bos;
  {
#pragma unroll 1
    for (fla_i64 t = bos; t < tend; t++) {
      if ((t - bos) % FLA_BT == 0) {
        float *ck = ckpt + ((t - bos) / FLA_BT) * ckpt_stride;
#pragma unroll
        for (int m = 0; m < RB_KPT; m++) ck[m * RB_THREADS] = S[m];
      }
      rb_tok x;
      rb_fetch(a, t, h, i0, col, colok, false, x);
      rb_finish(x, i0, eg_const);
      rb_step(S, x, red, par, warp, lane, j);
    }
    if (nseg > 0) {
      float *ck = ckpt + (nseg - 1) * ckpt_stride;
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) ck[m * RB_THREADS] = S[m];
    }
  }

  /* dS = dht. */
  float dS[RB_KPT];
#pragma unroll
  for (int m = 0; m < RB_KPT; m++) {
    dS[m] = 0.f;
#if FLA_STORE_HT
    if (colok && i0 + m < FLA_K) dS[m] = ((const float *)a.dht)[st0 + (fla_i64)(i0 + m) * FLA_V + col];
#endif
  }

  /* 2. Segments last to first. */
#pragma unroll 1
  for (fla_i64 c = nseg - 1; c >= 0; c--) {
    const fla_i64 ts = bos + c * FLA_BT;
    const int len = (int)(eos - ts < FLA_BT ? eos - ts : FLA_BT);
    const float *ck = ckpt + c * ckpt_stride;
#pragma unroll
    for (int m = 0; m < RB_KPT; m++) S[m] = ck[m * RB_THREADS];
#pragma unroll 1
    for (int tt = 0; tt < len; tt++) {
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) segb[((fla_i64)tt * RB_KPT + m) * RB_THREADS] = S[m];
      rb_tok x;
      rb_fetch(a, ts + tt, h, i0, col, colok, false, x);
      rb_finish(x, i0, eg_const);
      rb_step(S, x, red, par, warp, lane, j);
    }
    /* S is now the state after the segment's last token. */

#pragma unroll 1
    for (int tt = len - 1; tt >= 0; tt--) {
      const fla_i64 t = ts + tt;
      const fla_i64 th = fla_off_th(t, h, H);
      rb_tok x;
      rb_fetch(a, t, h, i0, col, colok, true, x);
      const float dO = colok ? fla_ld((const in_t *)a.d_o, th * FLA_V + col) : 0.f;
      rb_finish(x, i0, eg_const);
      float Sp[RB_KPT], g[RB_KPT];
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) Sp[m] = segb[((fla_i64)tt * RB_KPT + m) * RB_THREADS];
      const fla_i64 rowK = th * FLA_K;

#if !FLA_READ_BEFORE
      /* read after: dq = scale S_t dO (S_t: the next token's S_prev, or S). */
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) {
        const float st = tt + 1 < len ? segb[((fla_i64)(tt + 1) * RB_KPT + m) * RB_THREADS] : S[m];
        g[m] = a.scale * st * dO;
        dS[m] += a.scale * x.q[m] * dO;
      }
      rb_store_rows(g, ws1 + P.q + (vb * R) * FLA_K + rowK, i0, j);
#endif

      /* S~ from S_prev; one column reduction: (r, dS^T k, sum(S~ o dS), c). */
      float Stil[RB_KPT];
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) Stil[m] = Sp[m];
      rb_decay(Stil, x);
      float cs[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) {
#if FLA_DELTA && FLA_HAS_PROBE
        cs[0] += Stil[m] * x.p[m];
#elif FLA_DELTA
        cs[0] += Stil[m] * x.k[m];
#endif
        cs[1] += dS[m] * x.k[m];
        cs[2] += Stil[m] * dS[m];
#if FLA_HAS_BONUS
        cs[3] += x.q[m] * bon[m] * x.k[m];
#endif
      }
      rb_col_sum<4>(cs, red, par, warp, lane, j);

      float dv, dgs;
#if FLA_DELTA
      const float r = cs[0], du = cs[1];
      const float u = x.beta * (x.v - r);
      const float dr = -x.beta * du;
      dv = x.beta * du;
      const float dbeta = du * (x.v - r);
      dgs = cs[2] + dr * r;
      float gk[RB_KPT];
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) {
        gk[m] = dS[m] * u;
        g[m] = Stil[m] * dr; /* dp */
#if FLA_HAS_PROBE
        dS[m] += x.p[m] * dr;
#else
        dS[m] += x.k[m] * dr;
        gk[m] += g[m]; /* p is k */
#endif
      }
#if FLA_HAS_PROBE
      rb_store_rows(g, ws1 + P.p + (vb * R) * FLA_K + rowK, i0, j);
#endif
#else
      dv = cs[1];
      dgs = cs[2];
      float gk[RB_KPT];
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) gk[m] = dS[m] * x.v;
#endif

      /* decay: dg, then dS_prev = decay dS~. */
#if FLA_DECAY == 3
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) {
        g[m] = Stil[m] * dS[m];
        dS[m] *= x.eg[m];
      }
      rb_store_rows(g, ws1 + P.g + (vb * R) * FLA_K + rowK, i0, j);
#elif FLA_DECAY != 0
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) dS[m] *= x.eg1;
#endif

#if FLA_READ_BEFORE
      /* read before: dq = scale S_prev dO; dS_prev += scale q dO^T; bonus. */
#if FLA_HAS_BONUS
      dv += a.scale * cs[3] * dO;
      const float aj = a.scale * dO * x.v;
#endif
#pragma unroll
      for (int m = 0; m < RB_KPT; m++) {
        g[m] = a.scale * Sp[m] * dO;
        dS[m] += a.scale * x.q[m] * dO;
#if FLA_HAS_BONUS
        g[m] += aj * bon[m] * x.k[m];
        gk[m] += aj * bon[m] * x.q[m];
        dbon[m] += aj * x.q[m] * x.k[m];
#endif
      }
      rb_store_rows(g, ws1 + P.q + (vb * R) * FLA_K + rowK, i0, j);
#endif
      rb_store_rows(gk, ws1 + P.k + (vb * R) * FLA_K + rowK, i0, j);

      if (a.dv && grp == 0 && colok) fla_st((in_t *)a.dv, th * FLA_V + col, dv);
      /* Per-token sums over the block's columns. */
#if FLA_DECAY == 2
      {
        const float s = rb_group_sum(colok ? dgs : 0.f);
        if (tid == 0) ws1[P.g + vb * R + th] = s;
      }
#else
      (void)dgs;
#endif
#if FLA_DELTA
      {
        const float s = rb_group_sum(colok ? dbeta : 0.f);
        if (tid == 0) ws1[P.beta + vb * R + th] = s;
      }
#endif
    }
  }

  if (a.dh0 && colok) { /* dL/dh0, also when h0 is zero (not given) */
#pragma unroll
    for (int m = 0; m < RB_KPT; m++)
      if (i0 + m < FLA_K) ((float *)a.dh0)[st0 + (fla_i64)(i0 + m) * FLA_V + col] = dS[m];
  }
#if FLA_HAS_BONUS
  rb_store_rows(dbon, ws1 + P.bonus + (((fla_i64)n * RB_NV + vb) * H + h) * FLA_K, i0, j);
#endif
}

/* Sums of the partial slices (fixed order), written as the stage's outputs. */
extern "C" __global__ void __launch_bounds__(256) fla_recurrent_bwd_reduce(const fla_kernel_args a) {
  const fla_i64 R = a.total * a.H;
  const rb_parts P = rb_layout(R, a.N, a.H);
  const float *ws1 = (const float *)a.ws1;
  const fla_i64 stride = (fla_i64)gridDim.x * blockDim.x;
  const fla_i64 e0 = (fla_i64)blockIdx.x * blockDim.x + threadIdx.x;
  const fla_i64 RK = R * FLA_K;
  for (fla_i64 e = e0; e < RK; e += stride) {
    float q = 0.f, k = 0.f;
    for (int vb = 0; vb < RB_NV; vb++) {
      q += ws1[P.q + vb * RK + e];
      k += ws1[P.k + vb * RK + e];
    }
    if (a.dq) ((float *)a.dq)[e] = q;
#if !FLA_KEY_FROM_DECAY
    if (a.dk) ((float *)a.dk)[e] = k;
#endif
#if FLA_DELTA && FLA_HAS_PROBE
    if (a.dp) {
      float p = 0.f;
      for (int vb = 0; vb < RB_NV; vb++) p += ws1[P.p + vb * RK + e];
      ((float *)a.dp)[e] = p;
    }
#endif
#if FLA_DECAY == 3
    if (a.dg) {
      float g = 0.f;
      for (int vb = 0; vb < RB_NV; vb++) g += ws1[P.g + vb * RK + e];
#if FLA_KEY_FROM_DECAY
      g -= expf(fla_ld((const in_t *)a.g, e)) * k; /* k = 1 - exp(g) */
#endif
      fla_st((in_t *)a.dg, e, g);
    }
#endif
  }
  (void)RK;
#if FLA_DECAY == 2 || FLA_DELTA
  for (fla_i64 e = e0; e < R; e += stride) {
#if FLA_DECAY == 2
    if (a.dg) {
      float g = 0.f;
      for (int vb = 0; vb < RB_NV; vb++) g += ws1[P.g + vb * R + e];
      fla_st((in_t *)a.dg, e, g);
    }
#endif
#if FLA_DELTA
    if (a.dbeta) {
      float b = 0.f;
      for (int vb = 0; vb < RB_NV; vb++) b += ws1[P.beta + vb * R + e];
      fla_st((in_t *)a.dbeta, e, b);
    }
#endif
  }
#endif
#if FLA_HAS_BONUS
  const fla_i64 HK = (fla_i64)a.H * FLA_K;
  for (fla_i64 e = e0; e < HK && a.dbonus; e += stride) {
    float b = 0.f;
    for (int n = 0; n < a.N; n++)
      for (int vb = 0; vb < RB_NV; vb++) b += ws1[P.bonus + ((fla_i64)n * RB_NV + vb) * HK + e];
    fla_st((in_t *)a.dbonus, e, b);
  }
#endif
}
