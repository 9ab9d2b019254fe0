/*
** templates/cuda/train_delta.cuh -- the layer glue of DeltaNet, Gated
** DeltaNet, KDA and HGRN2 for training on the GPU: short causal convolutions, the
** per-head L2 norm of q and k, beta, the decay gates of Gated DeltaNet (per
** head) and KDA (per key), KDA's sigmoid output gate, HGRN2's floored
** forget gate and its per-layer lower bounds, forward and backward
** (models/train_gpu_delta.c and train_gpu_hgrn2.c launch them; the CPU's are
** models/grad_math_impl.h, grad_mixer_delta.c and grad_mixer_linear.c).
**
** Compiled once per context with NVRTC after train_common.cuh (its helpers:
** gpu_train_source), no generator. Buffers named *_bf are the compute dtype
** (bf16 when the flag is set, else float32); the rest are float32. Rows are tokens of B sequences of
** T, sequence-major ([B, T, C]); a convolution never reaches across sequences.
*/

/* as nn_softplus: the identity above 20 */
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }

#define CONV_MAX_W 8

/* The pre-activation of the causal depthwise convolution at element i of
** a [rows, C] (W taps, w [C, W], bias [C] or NULL, zero before each
** sequence's start); W == 0: no convolution, pre = a. */
__device__ __forceinline__ float conv_pre(const float *a, i64 i, i64 T, int C, int W, const float *w,
                                          const float *bias) {
  if (W == 0) return a[i];
  int c = (int)(i % C);
  i64 t = (i / C) % T;
  float s = bias ? bias[c] : 0.f;
  for (int j = 0; j < W; j++) {
    i64 back = W - 1 - j; /* tap j reads token t - back */
    if (t >= back) s += w[c * W + j] * a[i - back * C];
  }
  return s;
}

/* ------------------------------------------------------------ short convolution */

/* y = silu(pre) (pre itself unless silu), pre = bias_c + sum_j w[c, j] a[t - (W-1) + j, c]
** (y float32 or compute) */
extern "C" __global__ void td_conv_fwd(const float *a, i64 T, int C, int W, const float *w, const float *bias,
                                       int silu, void *y, int y_bf, i64 n) {
  GRID_LOOP(i, n) {
    float p = conv_pre(a, i, T, C, W, w, bias);
    stc(y, i, silu ? p * sigm(p) : p, y_bf);
  }
}

/* ds = dy silu'(pre), silu'(p) = sig(p) (1 + p (1 - sig(p))); ds = dy unless silu
** (dy float32 or compute; ds float32) */
extern "C" __global__ void td_conv_bwd_ds(const float *a, i64 T, int C, int W, const float *w, const float *bias,
                                          int silu, const void *dy, int dy_bf, float *ds, i64 n) {
  GRID_LOOP(i, n) {
    float d = ldc(dy, i, dy_bf);
    if (silu) {
      float p = conv_pre(a, i, T, C, W, w, bias), sg = sigm(p);
      d *= sg * (1.f + p * (1.f - sg));
    }
    ds[i] = d;
  }
}

/* da[t, c] = sum_j w[c, j] ds[t + (W-1) - j, c] over the taps that stay in the
** sequence (W == 0: da = ds); da in the compute dtype (it feeds a product) */
extern "C" __global__ void td_conv_bwd_da(const float *ds, i64 T, int C, int W, const float *w, void *da, int da_bf,
                                          i64 n) {
  GRID_LOOP(i, n) {
    if (W == 0) {
      stc(da, i, ds[i], da_bf);
      continue;
    }
    int c = (int)(i % C);
    i64 t = (i / C) % T;
    float s = 0.f;
    for (int j = 0; j < W; j++) {
      i64 ahead = W - 1 - j; /* token t feeds tap j of token t + ahead */
      if (t + ahead < T) s += w[c * W + j] * ds[i + ahead * C];
    }
    stc(da, i, s, da_bf);
  }
}

/* dw[c, j] += sum_t ds[t, c] a[t - (W-1) + j, c];  dbias[c] += sum_t ds[t, c] (when dbias).
** Blocks of 32 columns x 8 row lanes over 256 rows, grid (C / 32, rows / 256),
** one atomic per tap per column per block. */
extern "C" __global__ void td_conv_bwd_w(const float *a, const float *ds, i64 rows, i64 T, int C, int W, float *dw,
                                         float *dbias) {
  __shared__ float part[8][CONV_MAX_W + 1][33];
  int col = threadIdx.x & 31, lane = threadIdx.x >> 5, c = blockIdx.x * 32 + col;
  float acc[CONV_MAX_W + 1];
#pragma unroll
  for (int j = 0; j <= CONV_MAX_W; j++) acc[j] = 0.f;
  i64 r0 = blockIdx.y * (i64)256;
  if (c < C)
    for (i64 r = r0 + lane; r < r0 + 256 && r < rows; r += 8) {
      i64 t = r % T;
      float d = ds[r * C + c];
      acc[CONV_MAX_W] += d;
#pragma unroll
      for (int j = 0; j < CONV_MAX_W; j++) {
        i64 back = W - 1 - j;
        if (j < W && t >= back) acc[j] += d * a[(r - back) * C + c];
      }
    }
#pragma unroll
  for (int j = 0; j <= CONV_MAX_W; j++) part[lane][j][col] = acc[j];
  __syncthreads();
  if (lane == 0 && c < C) {
    for (int j = 0; j < W; j++) {
      float s = 0.f;
      for (int k = 0; k < 8; k++) s += part[k][j][col];
      atomicAdd(&dw[c * W + j], s);
    }
    if (dbias) {
      float s = 0.f;
      for (int k = 0; k < 8; k++) s += part[k][CONV_MAX_W][col];
      atomicAdd(&dbias[c], s);
    }
  }
}

/* ------------------------------------------------------------ L2 norm per head */

/* y = x / n, n = sqrt(sum x^2 + 1e-6), rows of dim (x float32, y compute);
** a warp per row, 8 rows per block of 256 */
extern "C" __global__ void td_l2norm_fwd(const float *x, void *y, int y_bf, i64 rows, int dim) {
  int lane = threadIdx.x & 31;
  i64 r = blockIdx.x * (i64)8 + (threadIdx.x >> 5);
  if (r >= rows) return;
  i64 o = r * dim;
  float ss = 0.f;
  for (int i = lane; i < dim; i += 32) ss += x[o + i] * x[o + i];
  float inv = rsqrtf(warp_sum(ss) + 1e-6f);
  for (int i = lane; i < dim; i += 32) stc(y, o + i, x[o + i] * inv, y_bf);
}

/* dx = (dy - y (y . dy)) / n with y = x / n  (dy compute, dx float32) */
extern "C" __global__ void td_l2norm_bwd(const float *x, const void *dy, int dy_bf, float *dx, i64 rows, int dim) {
  int lane = threadIdx.x & 31;
  i64 r = blockIdx.x * (i64)8 + (threadIdx.x >> 5);
  if (r >= rows) return;
  i64 o = r * dim;
  float ss = 0.f, dot = 0.f;
  for (int i = lane; i < dim; i += 32) {
    float xv = x[o + i];
    ss += xv * xv;
    dot += xv * ldc(dy, o + i, dy_bf);
  }
  float inv = rsqrtf(warp_sum(ss) + 1e-6f);
  dot = warp_sum(dot) * inv; /* y . dy */
  for (int i = lane; i < dim; i += 32) dx[o + i] = (ldc(dy, o + i, dy_bf) - x[o + i] * inv * dot) * inv;
}

/* ------------------------------------------------------------ beta */

/* beta = s sigmoid(braw), or s everywhere without braw (compute) */
extern "C" __global__ void td_beta_fwd(const float *braw, void *beta, int bf, float s, i64 n) {
  GRID_LOOP(i, n) stc(beta, i, braw ? s * sigm(braw[i]) : s, bf);
}
/* dbraw = dbeta s sig (1 - sig), sig = sigmoid(braw)  (dbeta, dbraw compute) */
extern "C" __global__ void td_beta_bwd(const float *braw, const void *dbeta, int bf, float s, void *dbraw, i64 n) {
  GRID_LOOP(i, n) {
    float sg = sigm(braw[i]);
    stc(dbraw, i, ldc(dbeta, i, bf) * s * sg * (1.f - sg), bf);
  }
}

/* ------------------------------------------------------------ the decay gates of Gated DeltaNet and KDA */

/* g = -exp(A_log[c / Kg]) softplus(za + dt_bias[c]) over [rows, H Kg], column c
** (za float32, g compute): Gated DeltaNet per head (Kg = 1), KDA per key (Kg = K). */
extern "C" __global__ void td_gdn_gate_fwd(const float *za, const float *dt_bias, const float *A_log, int H, int Kg,
                                           void *g, int bf, i64 n) {
  GRID_LOOP(i, n) {
    int c = (int)(i % ((i64)H * Kg));
    stc(g, i, -expf(A_log[c / Kg]) * softplus(za[i] + dt_bias[c]), bf);
  }
}
/* z = za + dt_bias[c]: dz = dg (-exp(A_log)) softplus'(z) (sigmoid(z); 1 above 20),
** written float32 (dz, for dt_bias's column sum) and compute (dzc, for the
** product); dAg[row, h] = sum over the head's Kg columns of dg g (for A_log's
** column sum), g recomputed in float32. One thread per (row, head): n = rows H. */
extern "C" __global__ void td_gdn_gate_bwd(const float *za, const float *dt_bias, const float *A_log, int H, int Kg,
                                           const void *dg, int bf, float *dz, void *dzc, float *dAg, i64 n) {
  GRID_LOOP(i, n) {
    int h = (int)(i % H);
    float e = expf(A_log[h]), acc = 0.f;
    for (int k = 0; k < Kg; k++) {
      i64 j = i * Kg + k;
      float z = za[j] + dt_bias[h * Kg + k], d = ldc(dg, j, bf);
      float v = d * -e * (z > 20.f ? 1.f : sigm(z));
      dz[j] = v;
      stc(dzc, j, v, bf);
      acc += d * -e * softplus(z);
    }
    dAg[i] = acc;
  }
}

/* ------------------------------------------------------------ KDA's output gate */

/* y = nrm sigmoid(gg) (nrm = rmsnorm(o) w, gg = the low-rank gate with its
** bias; both float32, y compute) */
extern "C" __global__ void td_sig_gate_fwd(const float *nrm, const float *gg, void *y, int bf, i64 n) {
  GRID_LOOP(i, n) stc(y, i, nrm[i] * sigm(gg[i]), bf);
}
/* Its backward: dgg = dy nrm s (1 - s), dnrm = dy s with s = sigmoid(gg),
** dnrm over dy (all float32) */
extern "C" __global__ void td_sig_gate_bwd(const float *nrm, const float *gg, float *dy, float *dgg, i64 n) {
  GRID_LOOP(i, n) {
    float s = sigm(gg[i]), d = dy[i];
    dgg[i] = d * nrm[i] * s * (1.f - s);
    dy[i] = d * s;
  }
}
/* y[i] += b[i % C] (float32 rows of C) */
extern "C" __global__ void td_bias_add(float *y, const float *b, int C, i64 n) {
  GRID_LOOP(i, n) y[i] += b[i % C];
}

/* ------------------------------------------------------------ HGRN2 */


/* The per-layer lower bounds from the raw parameter [L, D] (model_hgrn2_lower_bounds):
** p = softmax over layers per column, lb[l] = sum_{j<=l} p_j - p_0; dlb := 0.
** One thread per column. */
extern "C" __global__ void td_hgrn2_lb(const float *raw, int L, int D, float *lb, float *dlb) {
  GRID_LOOP(d, D) {
    float mx = -__int_as_float(0x7f800000), sum = 0.f, acc = 0.f, first = 0.f;
    for (int l = 0; l < L; l++) mx = fmaxf(mx, raw[l * D + d]);
    for (int l = 0; l < L; l++) sum += expf(raw[l * D + d] - mx);
    for (int l = 0; l < L; l++) {
      float p = expf(raw[l * D + d] - mx) / sum;
      if (l == 0) first = p;
      acc += p;
      lb[l * D + d] = acc - first;
      dlb[l * D + d] = 0.f;
    }
  }
}

/* Its backward: dp_j = sum_{l>=max(j,1)} dlb_l (dp_0 = 0), draw_j += p_j (dp_j - sum_i p_i dp_i). */
extern "C" __global__ void td_hgrn2_lb_bwd(const float *raw, const float *dlb, int L, int D, float *draw) {
  GRID_LOOP(d, D) {
    float mx = -__int_as_float(0x7f800000), sum = 0.f, acc = 0.f, dot = 0.f;
    for (int l = 0; l < L; l++) mx = fmaxf(mx, raw[l * D + d]);
    for (int l = 0; l < L; l++) sum += expf(raw[l * D + d] - mx);
    for (int l = L - 1; l >= 1; l--) { /* l = 0: dp_0 = 0 adds nothing */
      acc += dlb[l * D + d];
      dot += expf(raw[l * D + d] - mx) / sum * acc;
    }
    acc = 0.f;
    for (int l = L - 1; l >= 0; l--) {
      if (l >= 1) acc += dlb[l * D + d];
      float p = expf(raw[l * D + d] - mx) / sum;
      draw[l * D + d] += p * ((l >= 1 ? acc : 0.f) - dot);
    }
  }
}

/* q = silu(cq) (compute); gk = logsigmoid(f), or with a floor lb[c] (lb != NULL):
** gk = log(lb + (1 - lb) sigmoid(f)); cq, f float32 [n / F, F] */
extern "C" __global__ void td_hgrn2_fwd(const float *cq, const float *f, const float *lb, int F, void *q, void *gk,
                                        int bf, i64 n) {
  GRID_LOOP(i, n) {
    float x = cq[i], fv = f[i];
    stc(q, i, x * sigm(x), bf);
    float g;
    if (lb) {
      float b = lb[i % F];
      g = logf(b + (1.f - b) * sigm(fv));
    } else {
      g = logsigm(fv);
    }
    stc(gk, i, g, bf);
  }
}

/* dcq = dq silu'(cq) (float32);
** df = dgk (1 - lb) s (1 - s) / (lb + (1 - lb) s), s = sigmoid(f) (df = dgk (1 - s) without lb);
** dlbe = dgk (1 - s) / (lb + (1 - lb) s) per element (for the column sum into dlb) */
extern "C" __global__ void td_hgrn2_bwd(const float *cq, const float *f, const float *lb, int F, const void *dq,
                                        const void *dgk, int bf, float *dcq, float *df, float *dlbe, i64 n) {
  GRID_LOOP(i, n) {
    float x = cq[i], sx = sigm(x);
    dcq[i] = ldc(dq, i, bf) * sx * (1.f + x * (1.f - sx));
    float s = sigm(f[i]), d = ldc(dgk, i, bf);
    if (lb) {
      float b = lb[i % F], den = b + (1.f - b) * s;
      df[i] = d * (1.f - b) * s * (1.f - s) / den;
      dlbe[i] = d * (1.f - s) / den;
    } else {
      df[i] = d * (1.f - s);
    }
  }
}
