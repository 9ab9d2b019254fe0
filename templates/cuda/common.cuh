/*
** templates/cuda/common.cuh -- what is CUDA-specific among the parts every
** CUDA stage template shares: warp reductions with __shfl_xor_sync (the HIP
** counterpart is templates/hip/common.hip.h).
**
** gen/generate.c inlines, in this order: the #define block of gen/generate.h,
** templates/common/math.h, templates/common/index.h,
** templates/common/kernel_args.h (the argument struct, in_t), this file, then
** the stage's template. Nothing is included: NVRTC needs no include path.
** Fast math stays off.
*/

/* ------------------------------------------------------------ reductions */

#define FLA_FULL_MASK 0xffffffffu

/* Sum over the lanes that share lane % width (width a power of two <= 32):
** every lane gets the same bits (a butterfly, commutative at each step). */
FLA_DEVICE float fla_warp_sum_strided(float x, int width) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1)
    if (off >= width) x += __shfl_xor_sync(FLA_FULL_MASK, x, off);
  return x;
}

FLA_DEVICE float fla_warp_sum(float x) { return fla_warp_sum_strided(x, 1); }

/* x of the lane lane ^ off within the logical warp of 32 (off < 32): the
** vendor-neutral butterfly step (HIP: templates/hip/common.hip.h). */
FLA_DEVICE float fla_lane_xor(float x, int off) { return __shfl_xor_sync(FLA_FULL_MASK, x, off); }
