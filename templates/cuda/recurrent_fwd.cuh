/*
** templates/cuda/recurrent_fwd.cuh -- the token-by-token forward recurrence
** of runtime/cpu/cpu.h with the state on chip (fla's fused_recurrent).
**
** Grid (N*H, ceil(V / BV)), FLA_WARPS warps a block. Block (nh, vb) owns the
** K x BV slice of the state of pair nh = n*H + h with columns vb*BV ...:
** lane l of warp w serves column j = l % BV and row group
** grp = w * (32 / BV) + l / BV, which holds RT_KPT consecutive rows
** i0 = grp * RT_KPT ... of that column in registers (f32). Per token:
**
**   read before:  a0 = sum_i q_i S_ij,  a2 = sum_i q_i bonus_i k_i   (S_prev)
**   decay:        S *= exp(g) | exp(gamma_h) | exp(gk_i) row by row
**   delta:        a1 = sum_i S~_ij p_i                      (p = k without probe)
**   read after:   a0 = sum_i S~_ij q_i,  a2 = sum_i k_i q_i
**   one reduction of (a0, a1, a2) over the row groups: shuffles inside the
**   warp, then shared memory across warps (one barrier a token)
**   write:        w_j = v_j (plain) | beta (v_j - a1) (delta);  S_ij += k_i w_j
**   output:       o_j = scale (a0 + a2 w_j)   (w_j = v_j when reading before)
**
** Reading after, o = S^T q = S~^T q + (k . q) w, so the output needs no
** second reduction once the state is written. Rows past K and columns past V
** hold zeros and write nothing. Sums are taken in a fixed order: the result
** does not depend on timing.
**
** Tokens go through shared memory FLA_BT at a time, in two buffers: while
** chunk c runs, the q/k/p/gk rows of chunk c + 1 arrive by cp.async (16-byte
** vectors when K is a multiple of 16 bytes and the bases are aligned; 4-byte
** copies for other f32 rows; plain loads for other bf16 rows), and its v
** columns, beta and exp(g) wait in registers until chunk c is done.
*/

#define RT_THREADS (FLA_WARPS * 32)
#define RT_GPW (32 / FLA_BV)                     /* row groups per warp */
#define RT_GROUPS (FLA_WARPS * RT_GPW)
#define RT_VECTOR ((FLA_K % FLA_IN_VEC) == 0)    /* rows move as 16-byte vectors */
#define RT_KPT0 FLA_CEIL_DIV(FLA_K, RT_GROUPS)
#define RT_KPT (RT_VECTOR ? FLA_CEIL_DIV(RT_KPT0, FLA_IN_VEC) * FLA_IN_VEC : RT_KPT0)

/* The [K] rows staged per token, in this order: q, k (unless derived from
** the decay), p (probe), gk (per-key decay). */
#define RT_RQ 0
#define RT_RK 1
#define RT_RP (RT_RK + !FLA_KEY_FROM_DECAY)
#define RT_RG (RT_RP + (FLA_DELTA && FLA_HAS_PROBE))
#define RT_NROW (RT_RG + (FLA_DECAY == 3))
/* Per-token values a thread carries from global to shared memory. */
#define RT_VPT FLA_CEIL_DIV(FLA_BT * FLA_BV, RT_THREADS) /* v columns of the block */
#define RT_SPT FLA_CEIL_DIV(FLA_BT, RT_THREADS)          /* beta, exp(g) */

static_assert(FLA_BV >= 1 && FLA_BV <= 32 && (32 % FLA_BV) == 0, "BV must divide 32");
static_assert(RT_KPT >= 1 && RT_KPT <= 128, "too many state rows per thread");
static_assert(FLA_BT >= 1 && FLA_BT <= 64, "recurrent_fwd: BT tokens staged, 1 to 64");
static_assert(FLA_BK == FLA_K, "recurrent_fwd: BK = K");

/* ------------------------------------------------ asynchronous copies */

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RT_CP_ASYNC 1
#else
#define RT_CP_ASYNC 0
#endif

FLA_DEVICE void rt_cp16(void *dst, const void *src) {
#if RT_CP_ASYNC
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                   (unsigned)__cvta_generic_to_shared(dst)),
               "l"(src)
               : "memory");
#else
  *(uint4 *)dst = *(const uint4 *)src;
#endif
}

FLA_DEVICE void rt_cp4(void *dst, const void *src) {
#if RT_CP_ASYNC
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(
                   (unsigned)__cvta_generic_to_shared(dst)),
               "l"(src)
               : "memory");
#else
  *(float *)dst = *(const float *)src;
#endif
}

FLA_DEVICE void rt_cp_commit() {
#if RT_CP_ASYNC
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/* Waits until at most n groups this thread committed are in flight. */
template <int n> FLA_DEVICE void rt_cp_wait() {
#if RT_CP_ASYNC
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
#endif
}

/* dst [nt][K] (shared) <- the rows of nt tokens at src, ts elements apart.
** vec: src 16-byte aligned (then whole vectors, asynchronously); f32 rows
** go 4 bytes at a time asynchronously; bf16 rows of odd length synchronously. */
FLA_DEVICE void rt_stage_rows(in_t *dst, const in_t *src, int nt, fla_i64 ts, bool vec) {
#if RT_VECTOR
  if (vec) {
    const int nv = FLA_K / FLA_IN_VEC;
    for (int e = threadIdx.x; e < nt * nv; e += RT_THREADS) {
      const int tt = e / nv, c = (e - tt * nv) * FLA_IN_VEC;
      rt_cp16(dst + tt * FLA_K + c, src + tt * ts + c);
    }
    return;
  }
#endif
#pragma unroll 4
  for (int e = threadIdx.x; e < nt * FLA_K; e += RT_THREADS) {
    const int tt = e / FLA_K, i = e - tt * FLA_K;
#if FLA_IN_BF16
    dst[tt * FLA_K + i] = src[tt * ts + i];
#else
    rt_cp4(dst + tt * FLA_K + i, src + tt * ts + i);
#endif
  }
}

/* x[m] = row[i0 + m] (a staged row in shared memory) for rows below K, else 0. */
FLA_DEVICE void rt_rows(const in_t *row, int i0, float *x) {
#if RT_VECTOR
#pragma unroll
  for (int m = 0; m < RT_KPT; m += FLA_IN_VEC) {
    if (i0 + m < FLA_K) {
      fla_ld_vec(row + i0 + m, x + m);
    } else {
#pragma unroll
      for (int e = 0; e < FLA_IN_VEC; e++) x[m + e] = 0.f;
    }
  }
#else
#pragma unroll
  for (int m = 0; m < RT_KPT; m++) x[m] = i0 + m < FLA_K ? fla_ld(row, i0 + m) : 0.f;
#endif
}

/* The 1: without it ptxas (under NVRTC) may cap registers at 128 and spill. */
extern "C" __global__ void __launch_bounds__(RT_THREADS, 1)
fla_recurrent_fwd(const fla_kernel_args a) {
  const int H = a.H;
  const int nh = blockIdx.x;
  if (nh >= a.N * H) return; /* uniform over the block */
  const int n = nh / H, h = nh % H;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int j = lane % FLA_BV;
  const int grp = warp * RT_GPW + lane / FLA_BV;
  const int i0 = grp * RT_KPT;
  const int vb = blockIdx.y;
  const int col = vb * FLA_BV + j;
  const bool colok = col < FLA_V;

  const in_t *__restrict__ v = (const in_t *)a.v;
  in_t *__restrict__ o = (in_t *)a.o;
  const fla_i64 *__restrict__ cu = (const fla_i64 *)a.cu;
  const fla_i64 bos = cu[n], eos = cu[n + 1];
  const fla_i64 st0 = fla_off_state(n, h, H, FLA_K, FLA_V);
  const fla_i64 ts = (fla_i64)H * FLA_K; /* token stride of the rows */

  /* Where each staged row kind starts for token 0, head h. */
  const in_t *src_q = (const in_t *)a.q + (fla_i64)h * FLA_K;
  fla_u64 bases = a.q;
#if !FLA_KEY_FROM_DECAY
  const in_t *src_k = (const in_t *)a.k + (fla_i64)h * FLA_K;
  bases |= a.k;
#define RT_STAGE_K(b_, t_, nt_) rt_stage_rows(s_row[b_][RT_RK], src_k + (t_) * ts, nt_, ts, vec)
#else
#define RT_STAGE_K(b_, t_, nt_) (void)0
#endif
#if FLA_DELTA && FLA_HAS_PROBE
  const in_t *src_p = (const in_t *)a.p + (fla_i64)h * FLA_K;
  bases |= a.p;
#define RT_STAGE_P(b_, t_, nt_) rt_stage_rows(s_row[b_][RT_RP], src_p + (t_) * ts, nt_, ts, vec)
#else
#define RT_STAGE_P(b_, t_, nt_) (void)0
#endif
#if FLA_DECAY == 3
  const in_t *src_g = (const in_t *)a.g + (fla_i64)h * FLA_K;
  bases |= a.g;
#define RT_STAGE_G(b_, t_, nt_) rt_stage_rows(s_row[b_][RT_RG], src_g + (t_) * ts, nt_, ts, vec)
#else
#define RT_STAGE_G(b_, t_, nt_) (void)0
#endif
  /* Rows of tokens t_ .. t_ + nt_ - 1 into buffer b_. */
#define RT_STAGE(b_, t_, nt_)                                                          \
  do {                                                                                \
    rt_stage_rows(s_row[b_][RT_RQ], src_q + (t_) * ts, nt_, ts, vec);                 \
    RT_STAGE_K(b_, t_, nt_);                                                          \
    RT_STAGE_P(b_, t_, nt_);                                                          \
    RT_STAGE_G(b_, t_, nt_);                                                          \
    rt_cp_commit();                                                                   \
  } while (0)
  const bool vec = (bases & 15u) == 0;

  /* Two buffers of BT tokens: chunk c + 1 loads while chunk c runs. */
  __shared__ __align__(16) in_t s_row[2][RT_NROW][FLA_BT * FLA_K];
  __shared__ float s_v[2][FLA_BT][FLA_BV];
#if FLA_DELTA
  __shared__ float s_beta[2][FLA_BT];
#endif
#if FLA_DECAY == 2
  __shared__ float s_eg[2][FLA_BT];
#endif
#if FLA_WARPS > 1
  __shared__ float red[2][2 + FLA_DELTA][FLA_WARPS][FLA_BV];
  int par = 0;
#endif

  float S[RT_KPT];
#pragma unroll
  for (int m = 0; m < RT_KPT; m++) {
    S[m] = 0.f;
#if FLA_HAS_H0
    if (colok && i0 + m < FLA_K) S[m] = ((const float *)a.h0)[st0 + (fla_i64)(i0 + m) * FLA_V + col];
#endif
  }
#if FLA_DECAY == 1
  const float eg_const = expf(((const float *)a.gamma)[h]);
#endif
#if FLA_HAS_BONUS
  float bon[RT_KPT];
#pragma unroll
  for (int m = 0; m < RT_KPT; m++)
    bon[m] = i0 + m < FLA_K ? fla_ld((const in_t *)a.bonus + (fla_i64)h * FLA_K, i0 + m) : 0.f;
#endif

  /* The small per-token values of a chunk go through registers, so that
  ** the loads of chunk c + 1 do not hold up chunk c. */
  float rv[RT_VPT];
#if FLA_DELTA
  float rb[RT_SPT];
#endif
#if FLA_DECAY == 2
  float rg[RT_SPT];
#endif
#define RT_FETCH(t0_, nt_)                                                                  \
  do {                                                                                      \
    _Pragma("unroll") for (int s_ = 0; s_ < RT_VPT; s_++) {                                 \
      const int e_ = tid + s_ * RT_THREADS, tt_ = e_ / FLA_BV, c_ = vb * FLA_BV + e_ % FLA_BV; \
      rv[s_] = e_ < (nt_) * FLA_BV && c_ < FLA_V                                            \
                   ? fla_ld(v, fla_off_thd((t0_) + tt_, h, H, FLA_V) + c_) : 0.f;           \
    }                                                                                       \
    _Pragma("unroll") for (int s_ = 0; s_ < RT_SPT; s_++) {                                 \
      const int e_ = tid + s_ * RT_THREADS;                                                 \
      RT_FETCH_BETA(s_, e_, t0_, nt_);                                                      \
      RT_FETCH_G(s_, e_, t0_, nt_);                                                         \
    }                                                                                       \
  } while (0)
#if FLA_DELTA
#define RT_FETCH_BETA(s_, e_, t0_, nt_) \
  rb[s_] = e_ < (nt_) ? fla_ld((const in_t *)a.beta, fla_off_th((t0_) + e_, h, H)) : 0.f
#else
#define RT_FETCH_BETA(s_, e_, t0_, nt_) (void)0
#endif
#if FLA_DECAY == 2
#define RT_FETCH_G(s_, e_, t0_, nt_) \
  rg[s_] = e_ < (nt_) ? expf(fla_ld((const in_t *)a.g, fla_off_th((t0_) + e_, h, H))) : 1.f
#else
#define RT_FETCH_G(s_, e_, t0_, nt_) (void)0
#endif
#define RT_PUT(b_)                                                                 \
  do {                                                                             \
    _Pragma("unroll") for (int s_ = 0; s_ < RT_VPT; s_++) {                        \
      const int e_ = tid + s_ * RT_THREADS;                                        \
      if (e_ < FLA_BT * FLA_BV) s_v[b_][e_ / FLA_BV][e_ % FLA_BV] = rv[s_];        \
    }                                                                              \
    _Pragma("unroll") for (int s_ = 0; s_ < RT_SPT; s_++) {                        \
      const int e_ = tid + s_ * RT_THREADS;                                        \
      if (e_ < FLA_BT) {                                                           \
        RT_PUT_BETA(b_, s_, e_);                                                   \
        RT_PUT_G(b_, s_, e_);                                                      \
      }                                                                            \
    }                                                                              \
  } while (0)
#if FLA_DELTA
#define RT_PUT_BETA(b_, s_, e_) s_beta[b_][e_] = rb[s_]
#else
#define RT_PUT_BETA(b_, s_, e_) (void)0
#endif
#if FLA_DECAY == 2
#define RT_PUT_G(b_, s_, e_) s_eg[b_][e_] = rg[s_]
#else
#define RT_PUT_G(b_, s_, e_) (void)0
#endif

  const fla_i64 nchunks = (eos - bos + FLA_BT - 1) / FLA_BT;
  if (nchunks > 0) {
    const int nt0 = (int)(eos - bos < FLA_BT ? eos - bos : FLA_BT);
    RT_STAGE(0, bos, nt0);
    RT_FETCH(bos, nt0);
    RT_PUT(0);
  }

  int b = 0;
#pragma unroll 1
  for (fla_i64 c = 0; c < nchunks; c++) {
    const fla_i64 t0 = bos + c * FLA_BT;
    const int nt = (int)(eos - t0 < FLA_BT ? eos - t0 : FLA_BT);
    const bool more = c + 1 < nchunks;
    if (more) {
      const fla_i64 t1 = t0 + FLA_BT;
      const int nt1 = (int)(eos - t1 < FLA_BT ? eos - t1 : FLA_BT);
      RT_STAGE(b ^ 1, t1, nt1);
      RT_FETCH(t1, nt1);
      rt_cp_wait<1>();
    } else {
      rt_cp_wait<0>();
    }
    __syncthreads(); /* chunk c is in shared memory */

#pragma unroll 1
    for (int tt = 0; tt < nt; tt++) {
      const fla_i64 th = fla_off_th(t0 + tt, h, H);
      float qr[RT_KPT], kr[RT_KPT];
      rt_rows(s_row[b][RT_RQ] + tt * FLA_K, i0, qr);
#if FLA_DECAY == 3
      float gr[RT_KPT];
      rt_rows(s_row[b][RT_RG] + tt * FLA_K, i0, gr);
#endif
#if FLA_KEY_FROM_DECAY
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) kr[m] = -expm1f(gr[m]);
#else
      rt_rows(s_row[b][RT_RK] + tt * FLA_K, i0, kr);
#endif
#if FLA_DELTA && FLA_HAS_PROBE
      float pr[RT_KPT];
      rt_rows(s_row[b][RT_RP] + tt * FLA_K, i0, pr);
#elif FLA_DELTA
      float *pr = kr;
#endif
      const float vj = s_v[b][tt][j];
#if FLA_DELTA
      const float bt = s_beta[b][tt];
#endif

      float a0 = 0.f, a2 = 0.f;
#if FLA_DELTA
      float a1 = 0.f;
#endif
#if FLA_READ_BEFORE
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) a0 += qr[m] * S[m];
#if FLA_HAS_BONUS
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) a2 += qr[m] * bon[m] * kr[m];
#endif
#endif

#if FLA_DECAY == 1
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) S[m] *= eg_const;
#elif FLA_DECAY == 2
      const float eg = s_eg[b][tt];
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) S[m] *= eg;
#elif FLA_DECAY == 3
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) S[m] *= expf(gr[m]);
#endif

#if FLA_DELTA
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) a1 += S[m] * pr[m];
#endif
#if !FLA_READ_BEFORE
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) {
        a0 += S[m] * qr[m];
        a2 += kr[m] * qr[m];
      }
#endif
#if !FLA_DELTA
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) S[m] += kr[m] * vj;
#endif

      /* (a0, a1, a2) summed over the row groups of column j. */
      a0 = fla_warp_sum_strided(a0, FLA_BV);
      a2 = fla_warp_sum_strided(a2, FLA_BV);
#if FLA_DELTA
      a1 = fla_warp_sum_strided(a1, FLA_BV);
#endif
#if FLA_WARPS > 1
      if (lane < FLA_BV) {
        red[par][0][warp][j] = a0;
        red[par][1][warp][j] = a2;
#if FLA_DELTA
        red[par][2][warp][j] = a1;
#endif
      }
      __syncthreads();
      a0 = a2 = 0.f;
#if FLA_DELTA
      a1 = 0.f;
#endif
#pragma unroll
      for (int w = 0; w < FLA_WARPS; w++) {
        a0 += red[par][0][w][j];
        a2 += red[par][1][w][j];
#if FLA_DELTA
        a1 += red[par][2][w][j];
#endif
      }
      par ^= 1; /* the other buffer next token: no second barrier */
#endif

#if FLA_DELTA
      const float u = bt * (vj - a1);
#pragma unroll
      for (int m = 0; m < RT_KPT; m++) S[m] += kr[m] * u;
#endif
#if FLA_READ_BEFORE || !FLA_DELTA
      const float wj = vj;
#else
      const float wj = u;
#endif
      if (grp == 0 && colok) fla_st(o, th * FLA_V + col, a.scale * (a0 + a2 * wj));
    }

    if (more) RT_PUT(b ^ 1);
    __syncthreads(); /* buffer b is free for chunk c + 2 */
    b ^= 1;
  }

#if FLA_STORE_HT
  if (colok) {
#pragma unroll
    for (int m = 0; m < RT_KPT; m++)
      if (i0 + m < FLA_K) ((float *)a.ht)[st0 + (fla_i64)(i0 + m) * FLA_V + col] = S[m];
  }
#endif
}
