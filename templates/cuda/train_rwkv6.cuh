/*
** templates/cuda/train_rwkv6.cuh -- the layer glue of RWKV-6 for training on
** the GPU: token shift, the lerps (per channel or per row), tanh, the decay
** w = -exp(wl), LayerNorm / per-head GroupNorm with weight and bias (and the
** time mix's silu gate), the channel mix's relu^2 and sigmoid gate, forward
** and backward (models/train_gpu_rwkv6.c launches them; the CPU's are
** models/grad_mixer_rwkv6.c and grad_math_impl.h's groupnorm).
**
** Compiled once per context with NVRTC after train_common.cuh (its helpers:
** gpu_train_source), no generator. Buffers named *_bf are the compute dtype
** (bf16 when the flag is set, else float32); the rest are float32. Rows are tokens of B sequences of
** T, sequence-major ([B, T, D]); the shift never reaches across sequences.
*/

/* ------------------------------------------------------------ token shift */

/* d_t = x_{t-1} - x_t (x_{-1} = 0 at each sequence's start); x, d [rows, D] */
extern "C" __global__ void rw_shift(const float *x, float *d, i64 T, int D, i64 n) {
  GRID_LOOP(i, n) {
    i64 t = (i / D) % T;
    d[i] = (t ? x[i - D] : 0.f) - x[i];
  }
}

/* The shift's backward: dx_t += -dd_t + dd_{t+1} (the next token of the same sequence) */
extern "C" __global__ void rw_shift_bwd(const float *dd, float *dx, i64 T, int D, i64 n) {
  GRID_LOOP(i, n) {
    i64 t = (i / D) % T;
    dx[i] += (t + 1 < T ? dd[i + D] : 0.f) - dd[i];
  }
}

/* ------------------------------------------------------------ lerps */

/* y = x + d m, m = mu[c] (per channel, mu_rows 0) or mu[i] + bias[c] (per row:
** the time mix's m_n = W2_n th_n + x_bias_n); y in the compute dtype */
__device__ __forceinline__ float lerp_mu(const float *mu, int mu_rows, const float *bias, i64 i, int c) {
  return mu_rows ? mu[i] + bias[c] : mu[c];
}
extern "C" __global__ void rw_lerp(const float *x, const float *d, const float *mu, int mu_rows, const float *bias,
                                   void *y, int y_bf, int D, i64 n) {
  GRID_LOOP(i, n) {
    int c = (int)(i % D);
    stc(y, i, x[i] + d[i] * lerp_mu(mu, mu_rows, bias, i, c), y_bf);
  }
}

/* The lerp's backward from dxn: dx += dxn, dd += dxn m (both written instead
** when first), dm = dxn d (float32; summed over rows afterwards for a
** per-channel mu or a bias) and, when dmc, again in the compute dtype. */
extern "C" __global__ void rw_lerp_bwd(const float *d, const float *mu, int mu_rows, const float *bias,
                                       const float *dxn, float *dx, float *dd, int first, float *dm, void *dmc,
                                       int dmc_bf, int D, i64 n) {
  GRID_LOOP(i, n) {
    int c = (int)(i % D);
    float g = dxn[i], m = lerp_mu(mu, mu_rows, bias, i, c);
    dx[i] = first ? g : dx[i] + g;
    dd[i] = first ? g * m : dd[i] + g * m;
    float v = g * d[i];
    dm[i] = v;
    if (dmc) stc(dmc, i, v, dmc_bf);
  }
}

/* ------------------------------------------------------------ tanh, decay, gates */

/* z := tanh(z) (float32, kept for the backward) and yc = tanh(z) in the compute dtype */
extern "C" __global__ void rw_tanh(float *z, void *yc, int y_bf, i64 n) {
  GRID_LOOP(i, n) {
    float v = tanhf(z[i]);
    z[i] = v;
    stc(yc, i, v, y_bf);
  }
}

/* dzc = d (1 - th^2), th = tanh(z) kept; d float32 [rows, cols], the result
** in the compute dtype (the next product's input) */
extern "C" __global__ void rw_tanh_bwd(const float *th, const float *d, void *dzc, int dz_bf, i64 n) {
  GRID_LOOP(i, n) stc(dzc, i, d[i] * (1.f - th[i] * th[i]), dz_bf);
}

/* wl := wl + b[c] (float32, kept) and w = -exp(wl) (compute: the recipe's decay), cols C */
extern "C" __global__ void rw_decay(float *wl, const float *b, void *w, int w_bf, int C, i64 n) {
  GRID_LOOP(i, n) {
    float v = wl[i] + b[(int)(i % C)];
    wl[i] = v;
    stc(w, i, -expf(v), w_bf);
  }
}

/* w = -exp(wl): dwl = dw w, into dwl (float32, for the bias's column sums) and dwlc (compute) */
extern "C" __global__ void rw_decay_bwd(const float *wl, const void *dw, int bf, float *dwl, void *dwlc, i64 n) {
  GRID_LOOP(i, n) {
    float v = ldc(dw, i, bf) * -expf(wl[i]);
    dwl[i] = v;
    stc(dwlc, i, v, bf);
  }
}

/* grad += d (d compute, e.g. the recipe's du) */
extern "C" __global__ void rw_acc(const void *d, int bf, float *grad, i64 n) {
  GRID_LOOP(i, n) grad[i] += ldc(d, i, bf);
}

/* ------------------------------------------------------------ LayerNorm / GroupNorm */

/* The mean and 1 / sqrt(var + eps) of x[o .. o + dim) (one warp, every lane
** gets both): rw_ln_fwd's and rw_ln_bwd's statistics. */
__device__ __forceinline__ void rw_ln_stats(const void *x, int x_bf, i64 o, int dim, float eps, int lane,
                                            float &mean, float &rstd) {
  float s = 0.f;
  for (int i = lane; i < dim; i += 32) s += ldc(x, o + i, x_bf);
  mean = warp_sum(s) / dim;
  float q = 0.f;
  for (int i = lane; i < dim; i += 32) {
    float v = ldc(x, o + i, x_bf) - mean;
    q += v * v;
  }
  rstd = 1.f / sqrtf(warp_sum(q) / dim + eps);
}

/* A warp per group of dim elements (groups: rows x nh, the group's head
** h = group % nh; weight and bias index h dim + i):
**   xh = (x - mean) rstd, rstd = 1 / sqrt(var + eps) (biased variance)
**   y = (xh w + b) (* silu(g) when g: the time mix's gated output norm)
** x float32 or compute (x_bf); y float32 or compute (y_bf). Blocks of 256. */
extern "C" __global__ void rw_ln_fwd(const void *x, int x_bf, const void *g, int g_bf, const float *w,
                                     const float *b, void *y, int y_bf, i64 groups, int nh, int dim, float eps) {
  int lane = threadIdx.x & 31;
  i64 gi = blockIdx.x * (i64)8 + (threadIdx.x >> 5);
  if (gi >= groups) return; /* a whole warp */
  i64 o = gi * dim;
  int wo = (int)(gi % nh) * dim;
  float mean, rstd;
  rw_ln_stats(x, x_bf, o, dim, eps, lane, mean, rstd);
  for (int i = lane; i < dim; i += 32) {
    float v = (ldc(x, o + i, x_bf) - mean) * rstd * w[wo + i] + (b ? b[wo + i] : 0.f);
    if (g) {
      float gv = ldc(g, o + i, g_bf);
      v *= gv * sigm(gv);
    }
    stc(y, o + i, v, y_bf);
  }
}

/* Its backward from dy (float32 or compute, dy_bf). With the gate g:
**   n = xh w + b, dn = dy silu(g), dg = dy n silu'(g) (compute),
**   silu'(g) = sig(g) (1 + g (1 - sig(g)));  without: dn = dy.
**   dxh = dn w;  dx = rstd (dxh - mean(dxh) - xh mean(dxh xh))
**   (added to dx when dx_add (float32), else written in dx_bf);
**   the weight and bias gradients' terms per element: pw = dn xh, pb = dn
**   ([rows, nh dim] float32; the host sums their columns). b and pb may be
**   NULL (no bias). */
extern "C" __global__ void rw_ln_bwd(const void *x, int x_bf, const void *g, int g_bf, const float *w,
                                     const float *b, const void *dy, int dy_bf, void *dx, int dx_bf, int dx_add,
                                     void *dg, float *pw, float *pb, i64 groups, int nh, int dim, float eps) {
  int lane = threadIdx.x & 31;
  i64 gi = blockIdx.x * (i64)8 + (threadIdx.x >> 5);
  if (gi >= groups) return;
  i64 o = gi * dim;
  int wo = (int)(gi % nh) * dim;
  float mean, rstd;
  rw_ln_stats(x, x_bf, o, dim, eps, lane, mean, rstd);
  float m1 = 0.f, m2 = 0.f;
  for (int i = lane; i < dim; i += 32) {
    float xh = (ldc(x, o + i, x_bf) - mean) * rstd, dn = ldc(dy, o + i, dy_bf);
    if (g) {
      float gv = ldc(g, o + i, g_bf), sg = sigm(gv);
      float nv = xh * w[wo + i] + (b ? b[wo + i] : 0.f);
      stc(dg, o + i, dn * nv * sg * (1.f + gv * (1.f - sg)), g_bf);
      dn *= gv * sg;
    }
    float dxh = dn * w[wo + i];
    m1 += dxh;
    m2 += dxh * xh;
    pw[o + i] = dn * xh;
    if (pb) pb[o + i] = dn;
  }
  m1 = warp_sum(m1) / dim;
  m2 = warp_sum(m2) / dim;
  for (int i = lane; i < dim; i += 32) {
    float xh = (ldc(x, o + i, x_bf) - mean) * rstd, dn = ldc(dy, o + i, dy_bf);
    if (g) {
      float gv = ldc(g, o + i, g_bf);
      dn *= gv * sigm(gv);
    }
    float v = rstd * (dn * w[wo + i] - m1 - xh * m2);
    if (dx_add) ((float *)dx)[o + i] += v;
    else stc(dx, o + i, v, dx_bf);
  }
}

/* ------------------------------------------------------------ channel mix */

/* kk = relu(kr)^2 (kr float32, kk compute) */
extern "C" __global__ void rw_sqrelu(const float *kr, void *kk, int bf, i64 n) {
  GRID_LOOP(i, n) {
    float v = kr[i] > 0.f ? kr[i] : 0.f;
    stc(kk, i, v * v, bf);
  }
}
/* dkr = dkk 2 relu(kr) (dkk float32, dkr compute) */
extern "C" __global__ void rw_sqrelu_bwd(const float *kr, const float *dkk, void *dkr, int bf, i64 n) {
  GRID_LOOP(i, n) stc(dkr, i, kr[i] > 0.f ? dkk[i] * 2.f * kr[i] : 0.f, bf);
}
/* y = xm + vv sigmoid(rr) (all float32): the block's output */
extern "C" __global__ void rw_sigmul(const float *xm, const float *vv, const float *rr, float *y, i64 n) {
  GRID_LOOP(i, n) y[i] = xm[i] + vv[i] * sigm(rr[i]);
}
/* out = vv sigmoid(rr): dvv = dout sig, drr = dout vv sig (1 - sig) (compute) */
extern "C" __global__ void rw_sigmul_bwd(const float *vv, const float *rr, const float *dout, void *dvv, void *drr,
                                         int bf, i64 n) {
  GRID_LOOP(i, n) {
    float sg = sigm(rr[i]);
    stc(dvv, i, dout[i] * sg, bf);
    stc(drr, i, dout[i] * vv[i] * sg * (1.f - sg), bf);
  }
}
