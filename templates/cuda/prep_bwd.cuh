/*
** templates/cuda/prep_bwd.cuh -- the backward of the feature map of
** prep_fwd.cuh (runtime/feature.c's fla_feature_backward) row by row:
** dx[r] = phi'(x[r])^T dy[r] for r < a.rows, x in_t [rows, D], dy f32
** [rows, DOUT] (the core's gradient, kept in f32), dx in_t [rows, D].
**
**   identity:      dx = dy                      (a cast into the input dtype)
**   elu1/relu/silu: dx_i = f'(x_i) dy_i
**   l2norm:        y = x r, r = 1 / sqrt(|x|^2 + eps);  dx = r (dy - y (y . dy))
**   taylor2:       dx_i = c1 dy_{1+i} + c2 sum_j (dy2_ij + dy2_ji) x_j
**                  (dy2 = dy[1 + D ...] as a D x D matrix)
**
** One warp per row, FLA_WARPS rows a block, a grid-stride loop over rows.
** l2norm takes two warp butterflies (every lane the same bits); taylor2
** stages the row of x in shared memory (warp-private).
*/

#define PB_D FLA_FEATURE_IN_DIM
#define PB_DOUT FLA_FEATURE_OUT(FLA_FEATURE, PB_D)

static_assert(PB_D >= 1, "prep_bwd: FLA_FEATURE_IN_DIM must be positive");

/* f'(x) of the element-wise maps (runtime/feature.c). */
FLA_DEVICE float pb_elem_deriv(int f, float x) {
  switch (f) {
  case FLA_FEAT_ELU1: return x > 0.f ? 1.f : expf(x);
  case FLA_FEAT_RELU: return x > 0.f ? 1.f : 0.f;
  case FLA_FEAT_SILU: {
    const float s = 1.f / (1.f + expf(-x));
    return s * (1.f + x * (1.f - s));
  }
  default: return 1.f;
  }
}

extern "C" __global__ void __launch_bounds__(FLA_WARPS * 32) fla_prep_bwd(const fla_kernel_args a) {
  const in_t *__restrict__ x = (const in_t *)a.x;
  const float *__restrict__ dy = (const float *)a.dy;
  in_t *__restrict__ dx = (in_t *)a.dx;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#if FLA_FEATURE == FLA_FEAT_TAYLOR2
  __shared__ float xs[FLA_WARPS][PB_D];
  const float c1 = fla_taylor2_c1(PB_D), c2 = fla_taylor2_c2(PB_D);
#endif
  for (fla_i64 r = (fla_i64)blockIdx.x * FLA_WARPS + warp; r < a.rows;
       r += (fla_i64)gridDim.x * FLA_WARPS) {
    const in_t *xr = x + r * PB_D;
    const float *dyr = dy + r * (fla_i64)PB_DOUT;
    in_t *dxr = dx + r * PB_D;
#if FLA_FEATURE == FLA_FEAT_L2NORM
    float ss = 0.f, xdy = 0.f;
    for (int i = lane; i < PB_D; i += 32) {
      const float e = fla_ld(xr, i);
      ss += e * e;
      xdy += e * dyr[i];
    }
    ss = fla_warp_sum(ss);
    xdy = fla_warp_sum(xdy);
    const float inv = 1.f / sqrtf(ss + FLA_L2NORM_EPS);
    const float ydy = xdy * inv;
    for (int i = lane; i < PB_D; i += 32)
      fla_st(dxr, i, inv * (dyr[i] - fla_ld(xr, i) * inv * ydy));
#elif FLA_FEATURE == FLA_FEAT_TAYLOR2
    for (int i = lane; i < PB_D; i += 32) xs[warp][i] = fla_ld(xr, i);
    __syncwarp();
    const float *dy2 = dyr + 1 + PB_D;
    for (int i = lane; i < PB_D; i += 32) {
      float acc = 0.f;
      for (int jj = 0; jj < PB_D; jj++)
        acc += (dy2[(fla_i64)i * PB_D + jj] + dy2[(fla_i64)jj * PB_D + i]) * xs[warp][jj];
      fla_st(dxr, i, c1 * dyr[1 + i] + c2 * acc);
    }
    __syncwarp(); /* the row is read in full before the next one lands */
#else
    for (int i = lane; i < PB_D; i += 32)
      fla_st(dxr, i, pb_elem_deriv(FLA_FEATURE, fla_ld(xr, i)) * dyr[i]);
#endif
  }
}
