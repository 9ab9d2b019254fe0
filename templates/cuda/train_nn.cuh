/*
** templates/cuda/train_nn.cuh -- the element-wise and reduction kernels of
** training on the GPU (models/train_gpu.c launches them; the CPU versions are
** models/grad_math.c and train/optim.c). Products go through cuBLAS.
**
** Compiled once per context with NVRTC after train_common.cuh (its helpers:
** gpu_train_source), no generator.
** Residual streams and gradients of parameters are float32. A buffer that feeds
** a product ("compute" buffers) is bf16 or float32: an int flag `*_bf` next to
** the pointer says which (bf16 = the bits of a __nv_bfloat16 in an unsigned short).
** Sums accumulate in float32 (float64 for the gradient norm).
*/

/* Elements i .. i + 7 of a compute buffer in one or two 16-byte accesses
** (i a multiple of 8, the buffer 16-byte aligned: the arena's are). */
__device__ __forceinline__ void ld8(const void *p, i64 i, int bf, float *v) {
  if (bf) {
    uint4 u = *(const uint4 *)((const bf16 *)p + i);
    unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) v[2 * k] = __uint_as_float(w[k] << 16), v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
  } else {
    float4 a = *(const float4 *)((const float *)p + i), b = *(const float4 *)((const float *)p + i + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  }
}
__device__ __forceinline__ void st8(void *p, i64 i, int bf, const float *v) {
  if (bf) {
    uint4 u;
    u.x = f2bf(v[0]) | ((unsigned)f2bf(v[1]) << 16), u.y = f2bf(v[2]) | ((unsigned)f2bf(v[3]) << 16);
    u.z = f2bf(v[4]) | ((unsigned)f2bf(v[5]) << 16), u.w = f2bf(v[6]) | ((unsigned)f2bf(v[7]) << 16);
    *(uint4 *)((bf16 *)p + i) = u;
  } else {
    *(float4 *)((float *)p + i) = make_float4(v[0], v[1], v[2], v[3]);
    *(float4 *)((float *)p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
  }
}

/* Sum (or max) over a block of blockDim.x threads (a multiple of 32, <= 1024). */
__device__ float block_reduce(float x, int is_max) {
  __shared__ float part[32];
  __shared__ float total;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  x = is_max ? warp_max(x) : warp_sum(x);
  __syncthreads();
  if (lane == 0) part[w] = x;
  __syncthreads();
  if (w == 0) {
    float y = lane < (int)(blockDim.x >> 5) ? part[lane] : (is_max ? -__int_as_float(0x7f800000) : 0.f);
    y = is_max ? warp_max(y) : warp_sum(y);
    if (lane == 0) total = y;
  }
  __syncthreads();
  return total;
}


/* ------------------------------------------------------------ copies */

/* y = x converted (float32 -> compute dtype) */
extern "C" __global__ void tr_cast(const float *x, void *y, int y_bf, i64 n) {
  GRID_LOOP(i, n) stc(y, i, x[i], y_bf);
}
/* y = x (float32); y += x when add; 16 bytes at a time when both are aligned */
extern "C" __global__ void tr_copy(const float *x, float *y, i64 n, int add) {
  if ((n & 3) == 0 && (((i64)x | (i64)y) & 15) == 0) {
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    GRID_LOOP(i, n / 4) {
      float4 a = x4[i];
      if (add) {
        float4 b = y4[i];
        a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
      }
      y4[i] = a;
    }
    return;
  }
  GRID_LOOP(i, n) y[i] = add ? y[i] + x[i] : x[i];
}
/* x *= s */
extern "C" __global__ void tr_scale(float *x, i64 n, float s) {
  GRID_LOOP(i, n) x[i] *= s;
}

/* ------------------------------------------------------------ embeddings */

/* x[r] = E[ids[r]] (float32 master rows); blocks stride over rows */
extern "C" __global__ void tr_embed(const int *ids, const float *E, float *x, i64 rows, int D) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *e = E + (i64)ids[r] * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) x[r * D + j] = e[j];
  }
}
/* dE[ids[r]] += dx[r] */
extern "C" __global__ void tr_embed_bwd(const int *ids, const float *dx, float *dE, i64 rows, int D) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    float *e = dE + (i64)ids[r] * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) atomicAdd(&e[j], dx[r * D + j]);
  }
}

/* ------------------------------------------------------------ RMSNorm */

/* One block per row of dim (x float32 or compute):
**   r = rsqrt(mean(x^2) + eps),  y = x r w  (* silu(g) when g: fla's FusedRMSNormGated)
** y in the compute dtype (y_bf) or float32. */
extern "C" __global__ void tr_rms_fwd(const void *x, int x_bf, const void *g, int g_bf, const float *w,
                                      void *y, int y_bf, int dim, float eps) {
  i64 r = blockIdx.x, o = r * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = ldc(x, o + i, x_bf);
    ss += v * v;
  }
  float rstd = rsqrtf(block_reduce(ss, 0) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = ldc(x, o + i, x_bf) * rstd * w[i];
    if (g) {
      float gv = ldc(g, o + i, g_bf);
      v *= gv * sigm(gv);
    }
    stc(y, o + i, v, y_bf);
  }
}

/* The backward of tr_rms_fwd over RB rows per block (blockDim 256, dim <= 16 * 256):
**   xh = x r, s = silu(g) (1 without g), e = dy w s,
**   dx = r (e - xh mean(e xh))          (added to dx when dx_add, else written;
**                                        float32, or the compute dtype when dx_bf)
**   dg = dy xh w silu'(g),  silu'(g) = sig(g) (1 + g (1 - sig(g)))
**   dw += sum over rows of dy xh s      (per-thread column sums, one atomic per block)
** dy is float32, or the compute dtype when dy_bf. dxc, when given: the final
** dx again in the compute dtype (dxc_bf), the next product's input. */
#define RMS_BWD_RB 8
extern "C" __global__ void tr_rms_bwd(const void *x, int x_bf, const void *g, int g_bf, const float *w,
                                      const void *dy, int dy_bf, void *dx, int dx_bf, int dx_add, void *dg,
                                      int dg_bf, float *dw, i64 rows, int dim, float eps, void *dxc, int dxc_bf) {
  float acc[16];
#pragma unroll
  for (int k = 0; k < 16; k++) acc[k] = 0.f;
  i64 r0 = blockIdx.x * (i64)RMS_BWD_RB;
  for (i64 r = r0; r < r0 + RMS_BWD_RB && r < rows; r++) {
    i64 o = r * dim;
    float ss = 0.f, dot = 0.f;
#pragma unroll
    for (int k = 0; k < 16; k++) {
      int i = threadIdx.x + k * 256;
      if (i < dim) {
        float xv = ldc(x, o + i, x_bf), s = 1.f;
        if (g) {
          float gv = ldc(g, o + i, g_bf);
          s = gv * sigm(gv);
        }
        ss += xv * xv;
        dot += ldc(dy, o + i, dy_bf) * w[i] * s * xv;
      }
    }
    ss = block_reduce(ss, 0);
    dot = block_reduce(dot, 0);
    float rstd = rsqrtf(ss / dim + eps);
    float mean = dot * rstd / dim; /* mean(e xh) */
#pragma unroll
    for (int k = 0; k < 16; k++) {
      int i = threadIdx.x + k * 256;
      if (i < dim) {
        float xh = ldc(x, o + i, x_bf) * rstd, d = ldc(dy, o + i, dy_bf), s = 1.f;
        if (g) {
          float gv = ldc(g, o + i, g_bf), sg = sigm(gv);
          s = gv * sg;
          stc(dg, o + i, d * xh * w[i] * sg * (1.f + gv * (1.f - sg)), dg_bf);
        }
        float v = rstd * (d * w[i] * s - xh * mean);
        if (dx_add) v += ((float *)dx)[o + i], ((float *)dx)[o + i] = v;
        else stc(dx, o + i, v, dx_bf);
        if (dxc) stc(dxc, o + i, v, dxc_bf);
        acc[k] += d * xh * s;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < 16; k++) {
    int i = threadIdx.x + k * 256;
    if (i < dim) atomicAdd(&dw[i], acc[k]);
  }
}

/* The same two kernels with a warp per row (no block barriers: the norms of
** training are latency-bound with a block per row). Blocks of 256 threads.
** When dim % 8 == 0 a lane moves 8 consecutive elements per 16-byte access
** (x, g, y, dy, dx rows start 16-byte aligned then); else one at a time.
** tr_rms_fwd_w: any dim; row = blockIdx.x * 8 + warp. With res (x float32):
** the residual add first, x += res written back, then the norm of the sum. */
extern "C" __global__ void tr_rms_fwd_w(void *x, int x_bf, const void *g, int g_bf, const float *w, void *y,
                                        int y_bf, i64 rows, int dim, float eps, const float *res) {
  int lane = threadIdx.x & 31;
  i64 r = blockIdx.x * (i64)8 + (threadIdx.x >> 5);
  if (r >= rows) return; /* a whole warp */
  i64 o = r * dim;
  float ss = 0.f;
  if ((dim & 7) == 0) {
    for (int i = 8 * lane; i < dim; i += 256) {
      float v[8];
      ld8(x, o + i, x_bf, v);
      if (res) {
        float a[8];
        ld8(res, o + i, 0, a);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] += a[k];
        st8(x, o + i, 0, v);
      }
#pragma unroll
      for (int k = 0; k < 8; k++) ss += v[k] * v[k];
    }
    float rstd = rsqrtf(warp_sum(ss) / dim + eps);
    for (int i = 8 * lane; i < dim; i += 256) {
      float v[8], gv[8];
      ld8(x, o + i, x_bf, v);
      if (g) ld8(g, o + i, g_bf, gv);
#pragma unroll
      for (int k = 0; k < 8; k++) {
        v[k] *= rstd * w[i + k];
        if (g) v[k] *= gv[k] * sigm(gv[k]);
      }
      st8(y, o + i, y_bf, v);
    }
    return;
  }
  for (int i = lane; i < dim; i += 32) {
    float v = ldc(x, o + i, x_bf);
    if (res) v += res[o + i], ((float *)x)[o + i] = v;
    ss += v * v;
  }
  float rstd = rsqrtf(warp_sum(ss) / dim + eps);
  for (int i = lane; i < dim; i += 32) {
    float v = ldc(x, o + i, x_bf) * rstd * w[i];
    if (g) {
      float gv = ldc(g, o + i, g_bf);
      v *= gv * sigm(gv);
    }
    stc(y, o + i, v, y_bf);
  }
}

/* tr_rms_bwd_w: dim <= 1024, dim % 8 == 0; each warp takes RMS_W_ROWS
** consecutive rows (block: 8 warps), lane l owns the 8-column groups
** 8 (l + 32 j), j < 4, for dw, whose per-warp sums meet in shared memory
** before one atomic per column per block. tr_rms_bwd's math, and when dxc is
** given the final dx also in the compute dtype (the next product's input). */
#define RMS_W_ROWS 4
extern "C" __global__ void tr_rms_bwd_w(const void *x, int x_bf, const void *g, int g_bf, const float *w,
                                        const void *dy, int dy_bf, void *dx, int dx_bf, int dx_add, void *dg,
                                        int dg_bf, float *dw, i64 rows, int dim, float eps, void *dxc, int dxc_bf) {
  __shared__ float part[8][1024];
  int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  float acc[4][8];
#pragma unroll
  for (int j = 0; j < 4; j++)
#pragma unroll
    for (int k = 0; k < 8; k++) acc[j][k] = 0.f;
  i64 r0 = (blockIdx.x * (i64)8 + wp) * RMS_W_ROWS;
  for (i64 r = r0; r < r0 + RMS_W_ROWS && r < rows; r++) {
    i64 o = r * dim;
    float ss = 0.f, dot = 0.f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int i = 8 * (lane + 32 * j);
      if (i < dim) {
        float xv[8], d[8], gv[8];
        ld8(x, o + i, x_bf, xv);
        ld8(dy, o + i, dy_bf, d);
        if (g) ld8(g, o + i, g_bf, gv);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          float s = g ? gv[k] * sigm(gv[k]) : 1.f;
          ss += xv[k] * xv[k];
          dot += d[k] * w[i + k] * s * xv[k];
        }
      }
    }
    ss = warp_sum(ss);
    dot = warp_sum(dot);
    float rstd = rsqrtf(ss / dim + eps);
    float mean = dot * rstd / dim;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int i = 8 * (lane + 32 * j);
      if (i < dim) {
        float xv[8], d[8], gv[8], out[8], dgv[8];
        ld8(x, o + i, x_bf, xv);
        ld8(dy, o + i, dy_bf, d);
        if (g) ld8(g, o + i, g_bf, gv);
        if (dx_add) ld8(dx, o + i, 0, out);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          float xh = xv[k] * rstd, s = 1.f;
          if (g) {
            float sg = sigm(gv[k]);
            s = gv[k] * sg;
            dgv[k] = d[k] * xh * w[i + k] * sg * (1.f + gv[k] * (1.f - sg));
          }
          float v = rstd * (d[k] * w[i + k] * s - xh * mean);
          out[k] = dx_add ? out[k] + v : v;
          acc[j][k] += d[k] * xh * s;
        }
        if (g) st8(dg, o + i, dg_bf, dgv);
        st8(dx, o + i, dx_add ? 0 : dx_bf, out);
        if (dxc) st8(dxc, o + i, dxc_bf, out);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 4; j++) {
    int i = 8 * (lane + 32 * j);
    if (i < dim)
#pragma unroll
      for (int k = 0; k < 8; k++) part[wp][i + k] = acc[j][k];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float t = 0.f;
    for (int k = 0; k < 8; k++) t += part[k][i];
    atomicAdd(&dw[i], t);
  }
}

/* ------------------------------------------------------------ SwiGLU */

/* gate and up: rows of I values, row r at gate + r ld and up + r ld (GLA:
** one product's output gu [rows, 2 I], up = gu + I, ld = 2 I; separate
** buffers: ld = I); a and da [rows, I]. p walks the rows x I outputs, 8 at a
** time when I and ld are multiples of 8: row p / I, column p % I (32-bit:
** gpu_train_swiglu keeps rows x I under 2^31). */
#define SWIGLU_LOOP(p, n, step)                                                                              \
  for (unsigned p = (blockIdx.x * blockDim.x + threadIdx.x) * (step); p < (unsigned)(n); p += gridDim.x * blockDim.x * (step))

/* a = silu(gate) up */
extern "C" __global__ void tr_swiglu(const void *gate, const void *up, int ld, void *a, int bf, i64 rows, int I) {
  i64 n = rows * I;
  if ((I & 7) == 0 && (ld & 7) == 0) {
    SWIGLU_LOOP(p, n, 8) {
      unsigned r = p / I, j = p - r * I;
      i64 o = (i64)r * ld + j;
      float gv[8], u[8];
      ld8(gate, o, bf, gv);
      ld8(up, o, bf, u);
#pragma unroll
      for (int k = 0; k < 8; k++) gv[k] = gv[k] * sigm(gv[k]) * u[k];
      st8(a, p, bf, gv);
    }
    return;
  }
  SWIGLU_LOOP(p, n, 1) {
    unsigned r = p / I, j = p - r * I;
    i64 o = (i64)r * ld + j;
    float gv = ldc(gate, o, bf);
    stc(a, p, gv * sigm(gv) * ldc(up, o, bf), bf);
  }
}
/* dgate = da up silu'(gate), dup = da silu(gate), silu'(x) = sig(x) (1 + x (1 - sig(x))),
** written over gate and up (the forward's values are no longer needed). */
__device__ __forceinline__ void swiglu_grad(float gv, float u, float d, float *dgate, float *dup) {
  float sg = sigm(gv);
  *dgate = d * u * sg * (1.f + gv * (1.f - sg));
  *dup = d * gv * sg;
}
extern "C" __global__ void tr_swiglu_bwd(void *gate, void *up, int ld, const void *da, int bf, i64 rows, int I) {
  i64 n = rows * I;
  if ((I & 7) == 0 && (ld & 7) == 0) {
    SWIGLU_LOOP(p, n, 8) {
      unsigned r = p / I, j = p - r * I;
      i64 o = (i64)r * ld + j;
      float gv[8], u[8], d[8];
      ld8(gate, o, bf, gv);
      ld8(up, o, bf, u);
      ld8(da, p, bf, d);
#pragma unroll
      for (int k = 0; k < 8; k++) swiglu_grad(gv[k], u[k], d[k], &gv[k], &u[k]);
      st8(gate, o, bf, gv);
      st8(up, o, bf, u);
    }
    return;
  }
  SWIGLU_LOOP(p, n, 1) {
    unsigned r = p / I, j = p - r * I;
    i64 o = (i64)r * ld + j;
    float dg, du;
    swiglu_grad(ldc(gate, o, bf), ldc(up, o, bf), ldc(da, p, bf), &dg, &du);
    stc(gate, o, dg, bf);
    stc(up, o, du, bf);
  }
}

/* ------------------------------------------------------------ GLA's gate */

/* The gate's second projection (16 inputs) done here, not by a product:
**   z1 = z0 W1^T + b  (z0 float32 [rows, 16], W1 float32 [cols, 16], b [cols])
** Thread: one column c (W1's row in registers), GATE_ROWS rows of the block;
** the z0 row is the same address for the whole warp (a broadcast). */
#define GATE_ROWS 8
__device__ __forceinline__ float gate_z1(const float *z0, i64 r, const float *wr, float bc) {
  const float4 *zr = (const float4 *)(z0 + r * 16);
  float z = bc;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    float4 v = zr[q];
    z += v.x * wr[4 * q] + v.y * wr[4 * q + 1] + v.z * wr[4 * q + 2] + v.w * wr[4 * q + 3];
  }
  return z;
}
/* gk = max(logsigmoid(z1) / 16, lo) (gk compute dtype [rows, cols]); grid
** (cols / 128, up to rows / GATE_ROWS), blocks of 128 */
extern "C" __global__ void tr_gla_gate(const float *z0, const float *W1, const float *b, int cols, void *gk, int bf,
                                       i64 rows, float lo) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float wr[16];
#pragma unroll
  for (int k = 0; k < 16; k++) wr[k] = W1[c * 16 + k];
  float bc = b[c];
  for (i64 r0 = blockIdx.y * (i64)GATE_ROWS; r0 < rows; r0 += gridDim.y * (i64)GATE_ROWS)
    for (i64 r = r0; r < r0 + GATE_ROWS && r < rows; r++)
      stc(gk, r * cols + c, fmaxf(logsigm(gate_z1(z0, r, wr, bc)) / 16.f, lo), bf);
}
/* dz1 = dgk / 16 sigmoid(-z1), 0 where the floor held (float32 [rows, cols]) */
extern "C" __global__ void tr_gla_gate_bwd(const float *z0, const float *W1, const float *b, int cols,
                                           const void *dgk, int bf, float *dz1, i64 rows, float lo) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float wr[16];
#pragma unroll
  for (int k = 0; k < 16; k++) wr[k] = W1[c * 16 + k];
  float bc = b[c];
  for (i64 r0 = blockIdx.y * (i64)GATE_ROWS; r0 < rows; r0 += gridDim.y * (i64)GATE_ROWS)
    for (i64 r = r0; r < r0 + GATE_ROWS && r < rows; r++) {
      float zv = gate_z1(z0, r, wr, bc);
      i64 i = r * cols + c;
      dz1[i] = logsigm(zv) / 16.f < lo ? 0.f : ldc(dgk, i, bf) / 16.f * sigm(-zv);
    }
}

/* ------------------------------------------------------------ RetNet's rotary */

/* Rotary embedding, NeoX half split, in place on x [B, T, H, D] (compute), token t
** of each sequence at position t: (u, v) -> (u c - v s, v c + u s), angle t theta^(-2i/D);
** sign -1 rotates back (the backward: the transpose of a rotation). */
extern "C" __global__ void tr_rotary(void *x, int bf, i64 B, i64 T, int H, int D, float theta, float sign) {
  int half = D / 2;
  GRID_LOOP(id, B * T * H * half) {
    int i = (int)(id % half);
    i64 bth = id / half, t = (bth / H) % T;
    float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / D));
    float ang = (float)t * inv_freq, c = cosf(ang), s = sign * sinf(ang);
    i64 o = bth * D;
    float u = ldc(x, o + i, bf), v = ldc(x, o + i + half, bf);
    stc(x, o + i, u * c - v * s, bf);
    stc(x, o + i + half, v * c + u * s, bf);
  }
}

/* out[c] += sum over rows of x[r, c]: blocks of 32 columns x 8 row lanes,
** grid (cols / 32, rows / 256), one atomic per column per block. */
extern "C" __global__ void tr_colsum(const float *x, i64 rows, int cols, float *out) {
  __shared__ float part[8][33];
  int c = blockIdx.x * 32 + (threadIdx.x & 31), lane = threadIdx.x >> 5;
  float s = 0.f;
  i64 r0 = blockIdx.y * (i64)256;
  if (c < cols)
    for (i64 r = r0 + lane; r < r0 + 256 && r < rows; r += 8) s += x[r * cols + c];
  part[lane][threadIdx.x & 31] = s;
  __syncthreads();
  if (lane == 0 && c < cols) {
    float t = 0.f;
    for (int k = 0; k < 8; k++) t += part[k][threadIdx.x & 31];
    atomicAdd(&out[c], t);
  }
}

/* ------------------------------------------------------------ LM head + cross-entropy */

/* One block per row of logits [rows, V] (float32):
**   loss[r] = logsumexp(l) - l[t]           (0, and d = 0, when t < 0)
**   d[r, j] = scale (softmax(l)_j - [j == t]) in the compute dtype */
extern "C" __global__ void tr_ce(const float *logits, const int *targets, i64 V, float scale, void *d, int d_bf,
                                 float *loss) {
  i64 r = blockIdx.x;
  const float *l = logits + r * V;
  int t = targets[r];
  if (t < 0) {
    for (i64 j = threadIdx.x; j < V; j += blockDim.x) stc(d, r * V + j, 0.f, d_bf);
    if (threadIdx.x == 0) loss[r] = 0.f;
    return;
  }
  /* one pass for the max and the sum of exponentials (the running sum
  ** rescaled when the running max grows), then the block's */
  const float ninf = -__int_as_float(0x7f800000);
  float mt = ninf, st = 0.f;
  for (i64 j = threadIdx.x; j < V; j += blockDim.x) {
    float v = l[j];
    if (v > mt) st = st * expf(mt - v) + 1.f, mt = v;
    else st += expf(v - mt);
  }
  float mx = block_reduce(mt, 1);
  float se = block_reduce(mt == ninf ? 0.f : st * expf(mt - mx), 0);
  float inv = 1.f / se;
  for (i64 j = threadIdx.x; j < V; j += blockDim.x)
    stc(d, r * V + j, scale * (expf(l[j] - mx) * inv - (j == t ? 1.f : 0.f)), d_bf);
  if (threadIdx.x == 0) loss[r] = logf(se) + mx - l[t];
}

/* ------------------------------------------------------------ optimizer */

/* AdamW over n elements (train/optim.c's formula, float32 state):
**   p *= shrink;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
**   p -= step_size m / (sqrt(v) / bc2_sqrt + eps);  wc = p (compute copy, when given) */
extern "C" __global__ void tr_adamw(float *p, const float *g, float *m, float *v, void *wc, int wc_bf, i64 n,
                                    float b1, float b2, float eps, float shrink, float step_size, float bc2_sqrt) {
  GRID_LOOP(i, n) {
    float gi = g[i], pi = p[i] * shrink;
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    pi -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    m[i] = mi, v[i] = vi, p[i] = pi;
    if (wc) stc(wc, i, pi, wc_bf);
  }
}

/* *out += sum of x^2 (float64) */
extern "C" __global__ void tr_sumsq(const float *x, i64 n, double *out) {
  double s = 0.0;
  GRID_LOOP(i, n) s += (double)x[i] * x[i];
  for (int o = 16; o >= 1; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(out, s);
}
