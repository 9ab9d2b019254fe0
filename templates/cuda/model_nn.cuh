/*
** templates/cuda/model_nn.cuh -- the dense math of the model layer on the GPU
** (models/nn_gpu.c launches these; the CPU versions are models/nn_cpu.c).
**
** Compiled once per context with NVRTC as it stands (no generator, no include).
** Activations are float32, row-major, a row per token. Weights are float32 or
** bf16 (the bits of a __nv_bfloat16, stored as unsigned short); every kernel
** that reads a weight matrix comes in both flavours, suffix _f32 / _bf16.
** Sums of squares and dot products accumulate in float32.
*/

typedef long long i64;
typedef unsigned short bf16;

__device__ __forceinline__ float bf2f(bf16 b) { return __uint_as_float(((unsigned)b) << 16); }
/* round to nearest even, NaN kept quiet */
__device__ __forceinline__ bf16 f2bf(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16)(u >> 16);
}
__device__ __forceinline__ float ldval(const float *p, i64 i) { return p[i]; }
__device__ __forceinline__ float ldval(const bf16 *p, i64 i) { return bf2f(p[i]); }

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o >= 1; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o >= 1; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
/* Sum over a block of blockDim.x threads (a multiple of 32, <= 1024). */
__device__ float block_sum(float x) {
  __shared__ float part[32];
  __shared__ float total;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  x = warp_sum(x);
  __syncthreads();
  if (lane == 0) part[w] = x;
  __syncthreads();
  if (w == 0) {
    float y = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.f;
    y = warp_sum(y);
    if (lane == 0) total = y;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float logsigm(float x) { return fminf(x, 0.f) - log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float softplus_(float x) { return x > 20.f ? x : log1pf(expf(x)); }
/* act: 0 none, 1 silu, 2 sigmoid */
__device__ __forceinline__ float act_(float x, int act) {
  return act == 1 ? x * sigm(x) : act == 2 ? sigm(x) : x;
}

/* Programmatic dependent launch (sm_90 on; nn_gpu.c launches the products and
** rmsnorm with it, kernels that call pdl_wait_ before reading anything an
** earlier kernel writes): the next kernel's blocks may start while this one
** runs, issue their weight loads, and wait in pdl_wait_ until the previous
** kernel has finished and its writes are visible. pdl_next_ allows the next
** kernel to start. Both are no-ops before sm_90 or without the launch attribute. */
__device__ __forceinline__ void pdl_wait_() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_next_() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* ------------------------------------------------------------ products */

/* y[m, o] (+)= sum_i x[m, i] W[o, i] (+ bias[o]), for m < M <= 8: one warp per
** output row o at a time (the grid strides over the rows, so the warps stay
** busy to the end), each lane a strided slice of i (8 bf16 or 4 f32 weights per
** 16-byte load, four loads in flight, when in, ldw are multiples of 8 and W, x
** are 16-byte aligned). Decode's products: bandwidth-bound on W. Fused around it:
**   xmode 1: x = rmsnorm(x) * nw  (rstd = rsqrt(mean(x^2) + eps) per row, from the
**            same loads, applied to the sum; every warp reads all of x anyway)
**   epi 1:   y = max(logsigmoid(s) / 16, epa)  (GLA's gate), before accumulate
**   DUAL:    rows o and o + up_off together, y[o] = silu(s_o) * s_{o+up_off}
**            (SwiGLU of a [gate; up] weight; out = the gate rows)
**   yb:      also a bf16 copy of y (a token mixer's inputs)
** accumulate: y += instead of y =. */
struct gemv_opts {
  const float *nw;
  float eps;
  int xmode, up_off, epi;
  float epa;
  bf16 *yb;
};

__device__ __forceinline__ float silu_(float v) { return v / (1.f + expf(-v)); }

__device__ __forceinline__ void unpack_(const uint4 &raw, float *wf, const bf16 *) {
  const unsigned *r = (const unsigned *)&raw;
#pragma unroll
  for (int j = 0; j < 4; j++) {
    wf[2 * j] = __uint_as_float(r[j] << 16);
    wf[2 * j + 1] = __uint_as_float(r[j] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack_(const uint4 &raw, float *wf, const float *) {
  const float *r = (const float *)&raw;
#pragma unroll
  for (int j = 0; j < 4; j++) wf[j] = r[j];
}

template <typename W_t, int MM, bool DUAL>
__device__ void gemv_(const float *x, int ldx, int M, int in, const W_t *W, int ldw, int out,
                      const float *bias, float *y, int ldy, int accumulate, const gemv_opts &op) {
  const int wpb = blockDim.x >> 5, lane = threadIdx.x & 31, V = 16 / sizeof(W_t);
  pdl_next_();
  pdl_wait_();
  const bool vec = (in % V) == 0 && (ldw % V) == 0 && (((unsigned long long)W) & 15) == 0 && (ldx % 4) == 0 &&
                   (((unsigned long long)x) & 15) == 0 && (op.xmode != 1 || (((unsigned long long)op.nw) & 15) == 0);
  for (int o = blockIdx.x * wpb + (threadIdx.x >> 5); o < out; o += gridDim.x * wpb) {
    float acc[MM], acc2[MM], ss[MM]; /* ss: sum of x^2 of each row (xmode 1) */
#pragma unroll
    for (int m = 0; m < MM; m++) acc[m] = 0.f, acc2[m] = 0.f, ss[m] = 0.f;
    const W_t *w = W + (i64)o * ldw, *w2 = W + (i64)(o + (DUAL ? op.up_off : 0)) * ldw;
    if (vec) {
      for (int i0 = lane * V; i0 < in; i0 += 4 * 32 * V) {
        uint4 raw[4], raw2[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
          int i = i0 + u * 32 * V;
          raw[u] = i < in ? *(const uint4 *)(w + i) : make_uint4(0, 0, 0, 0);
          if (DUAL) raw2[u] = i < in ? *(const uint4 *)(w2 + i) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
          int i = i0 + u * 32 * V;
          if (i >= in) break;
          float wf[16 / sizeof(W_t)], wf2[16 / sizeof(W_t)];
          unpack_(raw[u], wf, W);
          if (DUAL) unpack_(raw2[u], wf2, W);
#pragma unroll
          for (int m = 0; m < MM; m++) {
            if (m < M) {
#pragma unroll
              for (int j = 0; j < V / 4; j++) {
                float4 xv = *(const float4 *)(x + (i64)m * ldx + i + 4 * j);
                if (op.xmode == 1) {
                  float4 nv = *(const float4 *)(op.nw + i + 4 * j);
                  ss[m] += xv.x * xv.x + xv.y * xv.y + xv.z * xv.z + xv.w * xv.w;
                  xv.x *= nv.x, xv.y *= nv.y, xv.z *= nv.z, xv.w *= nv.w;
                }
                acc[m] += wf[4 * j] * xv.x + wf[4 * j + 1] * xv.y + wf[4 * j + 2] * xv.z + wf[4 * j + 3] * xv.w;
                if (DUAL)
                  acc2[m] += wf2[4 * j] * xv.x + wf2[4 * j + 1] * xv.y + wf2[4 * j + 2] * xv.z + wf2[4 * j + 3] * xv.w;
              }
            }
          }
        }
      }
    } else {
      for (int i = lane; i < in; i += 32) {
        float wi = ldval(w, i), wi2 = DUAL ? ldval(w2, i) : 0.f;
#pragma unroll
        for (int m = 0; m < MM; m++)
          if (m < M) {
            float xv = x[(i64)m * ldx + i];
            if (op.xmode == 1) ss[m] += xv * xv, xv *= op.nw[i];
            acc[m] += wi * xv;
            if (DUAL) acc2[m] += wi2 * xv;
          }
      }
    }
#pragma unroll
    for (int m = 0; m < MM; m++) {
      if (m < M) {
        float s = warp_sum(acc[m]), s2 = DUAL ? warp_sum(acc2[m]) : 0.f;
        if (op.xmode == 1) {
          float r = rsqrtf(warp_sum(ss[m]) / in + op.eps);
          s *= r, s2 *= r;
        }
        if (lane == 0) {
          if (bias) s += bias[o];
          if (DUAL) s = silu_(s) * s2;
          if (op.epi == 1) s = fmaxf(logsigm(s) / 16.f, op.epa);
          float *yp = y + (i64)m * ldy + o;
          if (accumulate) s += *yp;
          *yp = s;
          if (op.yb) op.yb[(i64)m * ldy + o] = f2bf(s);
        }
      }
    }
  }
}
/* MM: the most rows the instance handles; M == 1 (batch-1 decode) gets its own
** instances, whose registers leave room for more warps. */
#define GEMV_KERNEL(name, W_t, MM, DUAL)                                                              \
  extern "C" __global__ void name(const float *x, int ldx, int M, int in, const W_t *W, int ldw, int out, \
                                  const float *bias, float *y, int ldy, int acc, gemv_opts op) {      \
    gemv_<W_t, MM, DUAL>(x, ldx, M, in, W, ldw, out, bias, y, ldy, acc, op);                          \
  }
GEMV_KERNEL(gemv_f32, float, 8, false)
GEMV_KERNEL(gemv_bf16, bf16, 8, false)
GEMV_KERNEL(gemv1_f32, float, 1, false)
GEMV_KERNEL(gemv1_bf16, bf16, 1, false)
GEMV_KERNEL(gemv_swiglu_f32, float, 8, true)
GEMV_KERNEL(gemv_swiglu_bf16, bf16, 8, true)
GEMV_KERNEL(gemv1_swiglu_f32, float, 1, true)
GEMV_KERNEL(gemv1_swiglu_bf16, bf16, 1, true)

/* One row of x (M = 1) against a wide W, the decode products of batch 1:
**   y[o] (+)= sum_i x[i] W[o, i]  (+ bias, epi, DUAL and yb as gemv_ above)
** Block b owns the rows [out b / G, out (b + 1) / G) of a grid of G (one wave of
** resident blocks, so the rows split evenly instead of in grid-stride rounds).
** x lives in shared memory (dynamic, in floats), normalised once there for
** xmode 1 (x rsqrt(mean(x^2) + eps) nw). The block walks items (a group of
** GK_RB rows: 4, or 2 in the SwiGLU instances, which then need fewer
** registers; a chunk of 256 V columns): thread t loads V = 16 / sizeof(W_t)
** weights of each row at column chunk * 256 V + t V (one 16-byte load per row), the
** next item's loads issued before this item's arithmetic; after a group's last
** chunk the 256 partial sums of each row are reduced (shuffles, then shared
** memory across the 8 warps) and thread r < GK_RB writes row r. The first
** item's weights are requested before x is staged (and before pdl_wait_, so
** they overlap the previous kernel's end), hiding that prologue.
** Needs in % V == 0, ldw % V == 0, W and x 16-byte aligned, 256 threads. */
template <typename W_t, bool DUAL, int GK_RB>
__device__ __forceinline__ void gemvk_load_(const W_t *W, int ldw, int in, int up_off, int r, int r1, int i,
                                            uint4 *raw, uint4 *raw2) {
#pragma unroll
  for (int j = 0; j < GK_RB; j++) {
    bool ok = r + j < r1 && i < in;
    raw[j] = ok ? __ldg((const uint4 *)(W + (i64)(r + j) * ldw + i)) : make_uint4(0, 0, 0, 0);
    if (DUAL) raw2[j] = ok ? __ldg((const uint4 *)(W + (i64)(r + j + up_off) * ldw + i)) : make_uint4(0, 0, 0, 0);
  }
}

template <typename W_t, bool DUAL, int GK_RB>
__device__ void gemvk_(const float *x, int in, const W_t *W, int ldw, int out, const float *bias, float *y,
                       int accumulate, const gemv_opts &op) {
  extern __shared__ float xs[];
  __shared__ float red[2][8][2 * GK_RB];
  const int V = 16 / sizeof(W_t), CH = 256 * V, t = threadIdx.x, lane = t & 31, wid = t >> 5;
  const int nch = (in + CH - 1) / CH;
  const int r0 = (int)((i64)out * blockIdx.x / gridDim.x), r1 = (int)((i64)out * (blockIdx.x + 1) / gridDim.x);
  const int items = (r1 - r0 + GK_RB - 1) / GK_RB * nch;
  uint4 raw[GK_RB], raw2[GK_RB];
  if (items > 0) gemvk_load_<W_t, DUAL, GK_RB>(W, ldw, in, op.up_off, r0, r1, t * V, raw, raw2);
  pdl_next_();
  pdl_wait_(); /* x, y and the rest come from earlier kernels */
  float ss = 0.f;
  for (int i = 4 * t; i < in; i += 4 * 256) {
    float4 v = *(const float4 *)(x + i);
    *(float4 *)(xs + i) = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  if (op.xmode == 1) {
    float r = rsqrtf(block_sum(ss) / in + op.eps);
    for (int i = t; i < in; i += 256) xs[i] *= r * op.nw[i];
  }
  __syncthreads();
  float acc[GK_RB], acc2[GK_RB];
#pragma unroll
  for (int j = 0; j < GK_RB; j++) acc[j] = 0.f, acc2[j] = 0.f;
  int buf = 0;
  for (int it = 0; it < items; it++) {
    const int grp = it / nch, c = it - grp * nch, r = r0 + grp * GK_RB, i = c * CH + t * V;
    uint4 cur[GK_RB], cur2[GK_RB];
#pragma unroll
    for (int j = 0; j < GK_RB; j++) cur[j] = raw[j], cur2[j] = DUAL ? raw2[j] : raw[j];
    if (it + 1 < items) {
      const int g2 = (it + 1) / nch, c2 = it + 1 - g2 * nch;
      gemvk_load_<W_t, DUAL, GK_RB>(W, ldw, in, op.up_off, r0 + g2 * GK_RB, r1, c2 * CH + t * V, raw, raw2);
    }
    if (i < in) {
      float xv[16 / sizeof(W_t)];
#pragma unroll
      for (int q = 0; q < V / 4; q++) *(float4 *)(xv + 4 * q) = *(const float4 *)(xs + i + 4 * q);
#pragma unroll
      for (int j = 0; j < GK_RB; j++) {
        float wf[16 / sizeof(W_t)], wf2[16 / sizeof(W_t)];
        unpack_(cur[j], wf, W);
        if (DUAL) unpack_(cur2[j], wf2, W);
#pragma unroll
        for (int e = 0; e < V; e++) {
          acc[j] += wf[e] * xv[e];
          if (DUAL) acc2[j] += wf2[e] * xv[e];
        }
      }
    }
    if (c == nch - 1) {
#pragma unroll
      for (int j = 0; j < GK_RB; j++) {
        float s = warp_sum(acc[j]), s2 = DUAL ? warp_sum(acc2[j]) : 0.f;
        if (lane == 0) red[buf][wid][j] = s, red[buf][wid][GK_RB + j] = s2;
        acc[j] = 0.f, acc2[j] = 0.f;
      }
      __syncthreads();
      if (t < GK_RB && r + t < r1) {
        float s = 0.f, s2 = 0.f;
#pragma unroll
        for (int w = 0; w < 8; w++) s += red[buf][w][t], s2 += red[buf][w][GK_RB + t];
        const int o = r + t;
        if (bias) s += bias[o];
        if (DUAL) s = silu_(s) * s2;
        if (op.epi == 1) s = fmaxf(logsigm(s) / 16.f, op.epa);
        if (accumulate) s += y[o];
        y[o] = s;
        if (op.yb) op.yb[o] = f2bf(s);
      }
      buf ^= 1;
    }
  }
}
#define GEMVK_KERNEL(name, W_t, DUAL, RB)                                                                 \
  extern "C" __global__ void __launch_bounds__(256) name(const float *x, int ldx, int M, int in, const W_t *W, \
                                                         int ldw, int out, const float *bias, float *y, int ldy, \
                                                         int acc, gemv_opts op) {                     \
    gemvk_<W_t, DUAL, RB>(x, in, W, ldw, out, bias, y, acc, op);                                          \
  }
GEMVK_KERNEL(gemvk_f32, float, false, 4)
GEMVK_KERNEL(gemvk_bf16, bf16, false, 4)
/* two rows a step: 64 registers, four blocks a multiprocessor (four rows: 100
** registers, two blocks, 1.376 against 1.369 ms a GLA-1.3B step) */
GEMVK_KERNEL(gemvk_swiglu_f32, float, true, 2)
GEMVK_KERNEL(gemvk_swiglu_bf16, bf16, true, 2)

/* Up to six float32 -> bf16 casts in one launch (a token mixer's inputs). */
struct cast_list {
  const float *src[6];
  bf16 *dst[6];
  i64 n[6];
  int count;
};
extern "C" __global__ void cast_multi(cast_list L) {
  i64 total = 0;
  for (int k = 0; k < L.count; k++) total += L.n[k];
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
    i64 j = i;
    int k = 0;
    while (j >= L.n[k]) j -= L.n[k], k++;
    L.dst[k][j] = f2bf(L.src[k][j]);
  }
}

/* y[r, o] += bias[o] over rows x out (after a cuBLAS product). */
extern "C" __global__ void add_bias(float *y, const float *bias, i64 rows, int out) {
  i64 n = rows * out;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    y[i] += bias[i % out];
}

/* ------------------------------------------------------------ element-wise */

/* dst (bf16) = src (f32), n elements; and back. Strided copies of columns:
** y[r, :w] = x[r * ldx + :w]. */
extern "C" __global__ void cast_to_bf16(const float *x, bf16 *y, i64 n) {
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    y[i] = f2bf(x[i]);
}
extern "C" __global__ void cast_to_f32(const bf16 *x, float *y, i64 n) {
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    y[i] = bf2f(x[i]);
}
/* x = hi + lo to about 16 bits: hi = bf16(x), lo = bf16(x - hi), for a bf16
** product of x as two, W x = W hi + W lo. x is [M, in] with rows ldx apart;
** hi and lo are [M, in] packed, lo right after hi (one [2M, in] matrix). */
extern "C" __global__ void split_bf16(const float *x, int ldx, i64 M, int in, bf16 *hi) {
  i64 n = M * in;
  bf16 *lo = hi + n;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    float v = x[(i / in) * ldx + i % in];
    bf16 h = f2bf(v);
    hi[i] = h;
    lo[i] = f2bf(v - bf2f(h));
  }
}

/* y[m, o] (+)= t[m, o] + t[M + m, o] (+ bias[o]): the two halves of a stacked
** hi/lo product summed; y rows ldy apart, t [2M, out] packed. */
extern "C" __global__ void add_halves(const float *t, i64 M, int out, const float *bias, float *y, int ldy,
                                      int accumulate) {
  i64 n = M * out;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    i64 m = i / out;
    int o = (int)(i % out);
    float v = t[i] + t[n + i] + (bias ? bias[o] : 0.f);
    float *yp = y + m * ldy + o;
    *yp = accumulate ? *yp + v : v;
  }
}
extern "C" __global__ void copy_f32(const float *x, float *y, i64 n) {
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    y[i] = x[i];
}

/* The element-wise maps the mixers need, y[i] = f(x[i], ...) with p a per-
** column parameter (column c = i % width):
**  0 add        y += x
**  1 act        y = act(x) (a = act code)
**  2 gla_gate   y = max(logsigmoid(x) / 16, a) (a = -inf: no floor)
**  3 hgrn2_gate y = logsigmoid(x), floored by lb = p[c] (p NULL: none):
**               log(lb + (1 - lb) e^y) as logaddexp(log lb, log1p(-lb) + y)
**  4 dt_gate    y = -exp(p2[c / K]) softplus(x + p[c])  (K = (int)a)
**  5 beta       y = sigmoid(x) * a
**  6 neg_exp    y = -exp(x)
**  7 tanh       y = tanh(x)
**  8 sqrelu     y = max(x, 0)^2
**  9 mul        y *= x
** 10 sigm_mul   y *= sigmoid(x)
** 11 lerp       y = x + d * mu: p = d [n], p2 = mu ([width] when a == 0, [n] else)
** 12 fill       y = a
** 13 add_col    y += p[c]
*/
extern "C" __global__ void ew(int op, float *y, const float *x, const float *p, const float *p2,
                              i64 n, int width, float a) {
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    int c = (int)(i % width);
    float v = x ? x[i] : 0.f, r;
    switch (op) {
    case 0: r = y[i] + v; break;
    case 1: r = act_(v, (int)a); break;
    case 2: r = fmaxf(logsigm(v) / 16.f, a); break;
    case 3: {
      r = logsigm(v);
      if (p) {
        float lb = p[c], u = logf(lb), w = log1pf(-lb) + r, mx = fmaxf(u, w);
        r = mx + logf(expf(u - mx) + expf(w - mx));
      }
      break;
    }
    case 4: r = -expf(p2[c / (int)a]) * softplus_(v + p[c]); break;
    case 5: r = sigm(v) * a; break;
    case 6: r = -expf(v); break;
    case 7: r = tanhf(v); break;
    case 8: r = v > 0.f ? v * v : 0.f; break;
    case 9: r = y[i] * v; break;
    case 10: r = y[i] * sigm(v); break;
    case 11: r = v + p[i] * (a != 0.f ? p2[i] : p2[c]); break;
    case 12: r = a; break;
    default: r = y[i] + p[c]; break;
    }
    y[i] = r;
  }
}

/* out[r, j] = silu(gate[r * ld + j]) * up[r * ld + j], j < I. */
extern "C" __global__ void swiglu(const float *gate, const float *up, int ld, float *out, i64 rows, int I) {
  i64 n = rows * I;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    i64 r = i / I;
    int j = (int)(i % I);
    float g = gate[r * ld + j];
    out[i] = g * sigm(g) * up[r * ld + j];
  }
}

/* y[r, h, :] = x[r, h / (H / Hkv), :], d wide. */
extern "C" __global__ void repeat_heads(const float *x, i64 rows, int Hkv, int H, int d, float *y) {
  i64 n = rows * H * d;
  int g = H / Hkv;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    int j = (int)(i % d);
    i64 rh = i / d;
    int h = (int)(rh % H);
    i64 r = rh / H;
    y[i] = x[(r * Hkv + h / g) * d + j];
  }
}

/* ------------------------------------------------------------ norms */

/* One block per row of dim:
**   rmsnorm:  y = x rsqrt(mean(x^2) + eps) * w                 (w NULL: 1)
**   gated:    y = rmsnorm(x) * w * act(g)                      (fla's FusedRMSNormGated)
**   groupnorm: y = (x - mean) rsqrt(var + eps) * w + b per group of dim (grid y = group)
** x is float32, or bf16 when x_bf16 (a token mixer's bf16 output); y may alias x. */
extern "C" __global__ void rmsnorm(const void *xv, int x_bf16, const float *g, int act, const float *w,
                                   float *y, int dim, float eps) {
  pdl_next_();
  pdl_wait_();
  i64 r = blockIdx.x;
  const float *xf = (const float *)xv + r * dim;
  const bf16 *xb = (const bf16 *)xv + r * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = x_bf16 ? bf2f(xb[i]) : xf[i];
    ss += v * v;
  }
  float rstd = rsqrtf(block_sum(ss) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = (x_bf16 ? bf2f(xb[i]) : xf[i]) * rstd * (w ? w[i] : 1.f);
    if (g) v *= act_(g[r * dim + i], act);
    y[r * dim + i] = v;
  }
}

extern "C" __global__ void groupnorm(const void *xv, int x_bf16, const float *w, const float *b,
                                     float *y, int dim, int groups, float eps) {
  i64 r = blockIdx.x;
  int gd = dim / groups, c0 = blockIdx.y * gd;
  const float *xf = (const float *)xv + r * dim + c0;
  const bf16 *xb = (const bf16 *)xv + r * dim + c0;
  float s = 0.f;
  for (int i = threadIdx.x; i < gd; i += blockDim.x) s += x_bf16 ? bf2f(xb[i]) : xf[i];
  float mean = block_sum(s) / gd, q = 0.f;
  for (int i = threadIdx.x; i < gd; i += blockDim.x) {
    float d = (x_bf16 ? bf2f(xb[i]) : xf[i]) - mean;
    q += d * d;
  }
  float rstd = rsqrtf(block_sum(q) / gd + eps);
  for (int i = threadIdx.x; i < gd; i += blockDim.x) {
    float v = ((x_bf16 ? bf2f(xb[i]) : xf[i]) - mean) * rstd;
    y[r * dim + c0 + i] = v * (w ? w[c0 + i] : 1.f) + (b ? b[c0 + i] : 0.f);
  }
}

/* x / sqrt(sum(x^2) + 1e-6) per row of dim, in place; one warp per row. */
extern "C" __global__ void l2norm(float *x, i64 rows, int dim) {
  i64 r = blockIdx.x * (i64)(blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  float *xr = x + r * dim, ss = 0.f;
  for (int i = lane; i < dim; i += 32) ss += xr[i] * xr[i];
  float inv = rsqrtf(warp_sum(ss) + 1e-6f);
  for (int i = lane; i < dim; i += 32) xr[i] *= inv;
}

/* ------------------------------------------------------------ embeddings */

/* x[r, :] = E[ids[r], :] (the embeddings stay float32 on the device) */
extern "C" __global__ void embed_f32(const int *ids, const float *E, float *x, i64 rows, int D) {
  i64 n = rows * D;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    x[i] = E[(i64)ids[i / D] * D + i % D];
}

/* ------------------------------------------------------------ sequences */

/* Depthwise causal convolution of width W (models/nn.h, nn_short_conv), one
** thread per (b, c): y[b,t,c] = act(sum_j w[c,j] x[b,t-(W-1)+j,c] + bias[c]),
** past inputs from cache[b, c, 0..W-2], which then holds the last W-1. */
extern "C" __global__ void short_conv(const float *x, i64 B, i64 T, int C, int W, const float *w,
                                      const float *bias, float *cache, int act, float *y) {
  i64 id = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if (id >= B * C) return;
  i64 b = id / C;
  int c = (int)(id % C), P = W - 1;
  float win[8]; /* the last P inputs, oldest first (W <= 9) */
  float *cc = cache + id * P;
  for (int j = 0; j < P; j++) win[j] = cc[j];
  for (i64 t = 0; t < T; t++) {
    float xt = x[(b * T + t) * C + c];
    float s = bias ? bias[c] : 0.f;
    for (int j = 0; j < P; j++) s += w[c * W + j] * win[j];
    s += w[c * W + P] * xt;
    y[(b * T + t) * C + c] = act_(s, act);
    for (int j = 0; j + 1 < P; j++) win[j] = win[j + 1];
    if (P > 0) win[P - 1] = xt;
  }
  for (int j = 0; j < P; j++) cc[j] = win[j];
}

/* Rotary embedding, NeoX half split (models/nn.h, nn_rotary), in place on
** x [B, T, H, D]; sequence b's first token is at pos[b]. One thread per
** (b, t, h, i < D/2). inv_freq and angles in float32, as fla. */
extern "C" __global__ void rotary(float *x, i64 B, i64 T, int H, int D, const long long *pos, float theta) {
  int half = D / 2;
  i64 n = B * T * H * half;
  for (i64 id = blockIdx.x * (i64)blockDim.x + threadIdx.x; id < n; id += (i64)gridDim.x * blockDim.x) {
    int i = (int)(id % half);
    i64 bth = id / half, bt = bth / H, b = bt / T, t = bt % T;
    float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / D));
    float ang = (float)(pos[b] + t) * inv_freq, c = cosf(ang), s = sinf(ang);
    float *xh = x + bth * D;
    float u = xh[i], v = xh[i + half];
    xh[i] = u * c - v * s;
    xh[i + half] = v * c + u * s;
  }
}

/* RWKV-6 token shift: d[b,t,:] = x[b,t-1,:] - x[b,t,:], x[b,-1] = last[b];
** last[b] becomes x[b,T-1]. One thread per (b, i). */
extern "C" __global__ void token_shift(const float *x, float *last, float *d, i64 B, i64 T, int D) {
  i64 id = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if (id >= B * D) return;
  i64 b = id / D;
  int i = (int)(id % D);
  float prev = last[id];
  for (i64 t = 0; t < T; t++) {
    float xt = x[(b * T + t) * D + i];
    d[(b * T + t) * D + i] = prev - xt;
    prev = xt;
  }
  last[id] = prev;
}

/* Appends T rows of width w of one sequence to its key/value cache, a ring of
** cap rows (key row j, the token at position j, lives in slot j % cap):
** kc[(len + t) % cap] = k[t], vc[...] = v[t]. */
extern "C" __global__ void kv_append(const float *k, const float *v, float *kc, float *vc, i64 len,
                                     i64 T, int w, i64 cap) {
  i64 n = T * w;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    i64 slot = (len + i / w) % cap;
    kc[slot * w + i % w] = k[i];
    vc[slot * w + i % w] = v[i];
  }
}

/* Rows j0 .. j0 + n - 1 of a ring of ocap rows into a ring of ncap rows (a
** cache that grows): dst[j % ncap] = src[j % ocap], for keys and values. */
extern "C" __global__ void kv_regrow(const float *ks, const float *vs, i64 ocap, float *kd, float *vd, i64 ncap,
                                     i64 j0, i64 n, int w) {
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n * w; i += (i64)gridDim.x * blockDim.x) {
    i64 j = j0 + i / w;
    int c = (int)(i % w);
    kd[(j % ncap) * w + c] = ks[(j % ocap) * w + c];
    vd[(j % ncap) * w + c] = vs[(j % ocap) * w + c];
  }
}

/* Causal softmax attention of one sequence (models/nn.h, nn_attention): one
** warp per (query t, head h), lanes over the head dim d (d <= 256), keys in
** order with an online softmax: m = running max, l = running sum,
** acc = sum_j e^(s_j - m) v_j. Query t at position qpos0 + t sees key rows
** j in [max(0, p - window + 1), p] (keys at positions 0.., window 0: all),
** row j in slot j % cap of the ring k, v (kv_append). */
extern "C" __global__ void attention(const float *q, i64 T, int Hq, int d, i64 qpos0, const float *k,
                                     const float *v, i64 L, int Hkv, i64 window, i64 cap, float *o) {
  i64 wid = blockIdx.x * (i64)(blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (wid >= T * Hq) return;
  i64 t = wid / Hq;
  int h = (int)(wid % Hq), kh = h / (Hq / Hkv);
  const int PER = 8; /* d / 32 rounded up, d <= 256 */
  float qr[PER], acc[PER];
  const float *qh = q + (t * Hq + h) * d;
  float scale = rsqrtf((float)d);
  for (int j = 0; j < PER; j++) {
    int c = lane + 32 * j;
    qr[j] = c < d ? qh[c] * scale : 0.f;
    acc[j] = 0.f;
  }
  i64 p = qpos0 + t, lo = window > 0 ? p - window + 1 : 0, hi = p;
  if (lo < 0) lo = 0;
  if (hi >= L) hi = L - 1;
  float m = __int_as_float(0xff800000), l = 0.f;
  for (i64 j = lo; j <= hi; j++) {
    i64 slot = j % cap;
    const float *kj = k + (slot * Hkv + kh) * d, *vj = v + (slot * Hkv + kh) * d;
    float s = 0.f;
    for (int e = 0; e < PER; e++) {
      int c = lane + 32 * e;
      if (c < d) s += qr[e] * kj[c];
    }
    s = warp_sum(s);
    float mn = fmaxf(m, s), corr = expf(m - mn), pj = expf(s - mn);
    l = l * corr + pj;
    for (int e = 0; e < PER; e++) {
      int c = lane + 32 * e;
      acc[e] = acc[e] * corr + (c < d ? pj * vj[c] : 0.f);
    }
    m = mn;
  }
  float *oh = o + (t * Hq + h) * d;
  for (int e = 0; e < PER; e++) {
    int c = lane + 32 * e;
    if (c < d) oh[c] = l > 0.f ? acc[e] / l : 0.f;
  }
}

/* ids[b] = arg max of logits[b, :V] (lowest id on ties): one block per row. */
extern "C" __global__ void argmax_rows(const float *logits, int V, int *ids) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const float *x = logits + (i64)blockIdx.x * V;
  float best = __int_as_float(0xff800000);
  int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    if (x[i] > best || (x[i] == best && i < bi)) best = x[i], bi = i;
  for (int o = 16; o >= 1; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
  }
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) sv[w] = best, si[w] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int j = 1; j < (int)(blockDim.x >> 5); j++)
      if (sv[j] > best || (sv[j] == best && si[j] < bi)) best = sv[j], bi = si[j];
    ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
}
