/*
** templates/cuda/train_attn.cuh -- causal softmax attention for training on
** the GPU: a forward that keeps the log-sum-exp of every row, and its backward
** (models/train_gpu_attn.c launches them; models/grad_math_impl.h's
** gm_attention / gm_attention_bwd are the CPU's). Compiled after
** train_common.cuh, whose helpers (bf2f, ldc, stc, warp_sum) it uses.
**
** Layout: q, o, dO, dq [B*T, Hq*d]; k, v, dk, dv [B*T, Hkv*d] (compute dtype:
** bf16 when bf, else float32); lse, Dr [B*T, Hq] float32. Sequences start at
** position 0; query t of head h (KV head kh = h / (Hq/Hkv)) sees keys
** j in [lo(t), t], lo(t) = max(0, t - window + 1) (window 0: all).
**
**   s_tj = scale q_t . k_j            scale = 1/sqrt(d)
**   lse_t = log sum_j e^(s_tj)        p_tj = e^(s_tj - lse_t)
**   o_t = sum_j p_tj v_j
** Backward (dO given):
**   D_t = dO_t . o_t                  dp_tj = dO_t . v_j
**   ds_tj = p_tj (dp_tj - D_t)
**   dq_t = scale sum_j ds_tj k_j      (tr_attn_dq: a warp per query row)
**   dk_j = scale sum_t ds_tj q_t      dv_j = sum_t p_tj dO_t
**                                     (tr_attn_dkv: a warp per key row and
**                                      KV head, over the heads of its group)
** One warp walks its rows in order, lanes over d (d <= 256, 8 elements a lane),
** scalar float32 FMA: correct first; the cost is O(T^2 d) per head.
*/

#define ATT_PER 8 /* d / 32 rounded up, d <= 256 */

__device__ __forceinline__ float att_dot(const float *a, const void *p, i64 base, int d, int bf) {
  float s = 0.f;
  int lane = threadIdx.x & 31;
#pragma unroll
  for (int e = 0; e < ATT_PER; e++) {
    int c = lane + 32 * e;
    if (c < d) s += a[e] * ldc(p, base + c, bf);
  }
  return warp_sum(s);
}

__device__ __forceinline__ void att_load(float *r, const void *p, i64 base, int d, int bf) {
  int lane = threadIdx.x & 31;
#pragma unroll
  for (int e = 0; e < ATT_PER; e++) {
    int c = lane + 32 * e;
    r[e] = c < d ? ldc(p, base + c, bf) : 0.f;
  }
}

__device__ __forceinline__ void att_store(void *p, i64 base, const float *r, float f, int d, int bf) {
  int lane = threadIdx.x & 31;
#pragma unroll
  for (int e = 0; e < ATT_PER; e++) {
    int c = lane + 32 * e;
    if (c < d) stc(p, base + c, r[e] * f, bf);
  }
}

__device__ __forceinline__ i64 att_first_key(i64 t, i64 window) {
  return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

/* o and lse: one warp per (row b*T + t, query head h), online softmax. */
extern "C" __global__ void tr_attn_fwd(const void *q, const void *k, const void *v, int bf, i64 B, i64 T, int Hq,
                                       int Hkv, int d, i64 window, void *o, float *lse) {
  i64 wid = blockIdx.x * (i64)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (wid >= B * T * Hq) return;
  i64 row = wid / Hq, t = row % T, r0 = row - t;
  int h = (int)(wid % Hq), kh = h / (Hq / Hkv);
  float scale = rsqrtf((float)d), qr[ATT_PER], acc[ATT_PER];
  att_load(qr, q, (row * Hq + h) * d, d, bf);
#pragma unroll
  for (int e = 0; e < ATT_PER; e++) qr[e] *= scale, acc[e] = 0.f;
  float m = -__int_as_float(0x7f800000), l = 0.f;
  for (i64 j = att_first_key(t, window); j <= t; j++) {
    i64 kb = ((r0 + j) * Hkv + kh) * d;
    float s = att_dot(qr, k, kb, d, bf);
    float mn = fmaxf(m, s), corr = __expf(m - mn), pj = __expf(s - mn);
    l = l * corr + pj;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int e = 0; e < ATT_PER; e++) {
      int c = lane + 32 * e;
      acc[e] = acc[e] * corr + (c < d ? pj * ldc(v, kb + c, bf) : 0.f);
    }
    m = mn;
  }
  att_store(o, (row * Hq + h) * d, acc, 1.f / l, d, bf);
  if ((threadIdx.x & 31) == 0) lse[row * Hq + h] = m + logf(l);
}

/* dq and D: one warp per (row, query head). */
extern "C" __global__ void tr_attn_dq(const void *q, const void *k, const void *v, const void *o, const void *dO,
                                      const float *lse, int bf, i64 B, i64 T, int Hq, int Hkv, int d, i64 window,
                                      void *dq, float *Dr) {
  i64 wid = blockIdx.x * (i64)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (wid >= B * T * Hq) return;
  i64 row = wid / Hq, t = row % T, r0 = row - t;
  int h = (int)(wid % Hq), kh = h / (Hq / Hkv);
  float scale = rsqrtf((float)d), qr[ATT_PER], dor[ATT_PER], acc[ATT_PER];
  i64 qb = (row * Hq + h) * d;
  att_load(qr, q, qb, d, bf);
  att_load(dor, dO, qb, d, bf);
#pragma unroll
  for (int e = 0; e < ATT_PER; e++) qr[e] *= scale, acc[e] = 0.f;
  float Dt = att_dot(dor, o, qb, d, bf), L = lse[row * Hq + h];
  for (i64 j = att_first_key(t, window); j <= t; j++) {
    i64 kb = ((r0 + j) * Hkv + kh) * d;
    float p = __expf(att_dot(qr, k, kb, d, bf) - L);
    float ds = p * (att_dot(dor, v, kb, d, bf) - Dt);
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int e = 0; e < ATT_PER; e++) {
      int c = lane + 32 * e;
      if (c < d) acc[e] += ds * ldc(k, kb + c, bf);
    }
  }
  att_store(dq, qb, acc, scale, d, bf);
  if ((threadIdx.x & 31) == 0) Dr[row * Hq + h] = Dt;
}

/* dk and dv: one warp per (row b*T + j, KV head kh), over the query heads
** of its group and the queries t in [j, j + window - 1] (window 0: to T-1). */
extern "C" __global__ void tr_attn_dkv(const void *q, const void *k, const void *v, const void *dO,
                                       const float *lse, const float *Dr, int bf, i64 B, i64 T, int Hq, int Hkv,
                                       int d, i64 window, void *dk, void *dv) {
  i64 wid = blockIdx.x * (i64)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (wid >= B * T * Hkv) return;
  i64 row = wid / Hkv, j = row % T, r0 = row - j;
  int kh = (int)(wid % Hkv), group = Hq / Hkv;
  float scale = rsqrtf((float)d), kr[ATT_PER], vr[ATT_PER], dka[ATT_PER], dva[ATT_PER];
  i64 kb = (row * Hkv + kh) * d;
  att_load(kr, k, kb, d, bf);
  att_load(vr, v, kb, d, bf);
#pragma unroll
  for (int e = 0; e < ATT_PER; e++) kr[e] *= scale, dka[e] = dva[e] = 0.f;
  i64 last = window > 0 && j + window - 1 < T - 1 ? j + window - 1 : T - 1;
  int lane = threadIdx.x & 31;
  for (int h = kh * group; h < (kh + 1) * group; h++)
    for (i64 t = j; t <= last; t++) {
      i64 qr = (r0 + t) * Hq + h, qb = qr * d;
      float p = __expf(att_dot(kr, q, qb, d, bf) - lse[qr]);
      float ds = p * (att_dot(vr, dO, qb, d, bf) - Dr[qr]);
#pragma unroll
      for (int e = 0; e < ATT_PER; e++) {
        int c = lane + 32 * e;
        if (c < d) {
          dva[e] += p * ldc(dO, qb + c, bf);
          dka[e] += ds * ldc(q, qb + c, bf);
        }
      }
    }
  att_store(dk, kb, dka, scale, d, bf);
  att_store(dv, kb, dva, 1.f, d, bf);
}
