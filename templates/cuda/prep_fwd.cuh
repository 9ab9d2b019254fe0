/*
** templates/cuda/prep_fwd.cuh -- the feature map of runtime/feature.c row by
** row: y[r] = phi(x[r]) for r < a.rows, x in_t [rows, D], y in_t [rows, DOUT]
** (D = FLA_FEATURE_IN_DIM, DOUT = 1 + D + D^2 for taylor2, else D), in f32.
**
** One warp per row, FLA_WARPS rows a block, a grid-stride loop over rows;
** lanes stride over the row, so loads and stores are coalesced. l2norm sums
** squares with a warp butterfly (every lane the same bits) and rereads x;
** taylor2 stages the row in shared memory (warp-private) and writes the
** 1 + D + D^2 outputs lane-strided.
*/

#define PR_D FLA_FEATURE_IN_DIM
#define PR_DOUT FLA_FEATURE_OUT(FLA_FEATURE, PR_D)

static_assert(PR_D >= 1, "prep_fwd: FLA_FEATURE_IN_DIM must be positive");

extern "C" __global__ void __launch_bounds__(FLA_WARPS * 32) fla_prep_fwd(const fla_kernel_args a) {
  const in_t *__restrict__ x = (const in_t *)a.x;
  in_t *__restrict__ y = (in_t *)a.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#if FLA_FEATURE == FLA_FEAT_TAYLOR2
  __shared__ float xs[FLA_WARPS][PR_D];
  const float c1 = fla_taylor2_c1(PR_D), c2 = fla_taylor2_c2(PR_D);
#endif
  for (fla_i64 r = (fla_i64)blockIdx.x * FLA_WARPS + warp; r < a.rows;
       r += (fla_i64)gridDim.x * FLA_WARPS) {
    const in_t *xr = x + r * PR_D;
    in_t *yr = y + r * (fla_i64)PR_DOUT;
#if FLA_FEATURE == FLA_FEAT_L2NORM
    float ss = 0.f;
    for (int i = lane; i < PR_D; i += 32) {
      const float e = fla_ld(xr, i);
      ss += e * e;
    }
    ss = fla_warp_sum(ss);
    const float inv = 1.f / sqrtf(ss + FLA_L2NORM_EPS);
    for (int i = lane; i < PR_D; i += 32) fla_st(yr, i, fla_ld(xr, i) * inv);
#elif FLA_FEATURE == FLA_FEAT_TAYLOR2
    for (int i = lane; i < PR_D; i += 32) xs[warp][i] = fla_ld(xr, i);
    __syncwarp();
    for (int idx = lane; idx < PR_DOUT; idx += 32)
      fla_st(yr, idx, fla_taylor2_elem(xs[warp], PR_D, idx, c1, c2));
    __syncwarp(); /* the row is read in full before the next one lands */
#else
    for (int i = lane; i < PR_D; i += 32) fla_st(yr, i, fla_feature_elem(FLA_FEATURE, fla_ld(xr, i)));
#endif
  }
}
