/*
** templates/hip/common.hip.h -- what is HIP-specific among the parts every
** stage template shares; the CUDA counterpart is templates/cuda/common.cuh.
** Everything else (math, indexing, the argument struct, in_t) comes from
** templates/common/, inlined before this file by gen/generate.c.
**
** Warps: the templates think in logical warps of 32 lanes (threadIdx.x >> 5,
** blocks of 32 * FLA_WARPS threads, the same launch geometry on both
** vendors). On RDNA (wave32) a logical warp is a wavefront; on CDNA (wave64)
** two logical warps share one, so every shuffle passes width 32 and stays
** inside its half.
**
** Absent on AMD and replaced here: __shfl_xor_sync (ROCm 5.2 has only
** __shfl_xor), __syncwarp (lanes of a wavefront run in lockstep: a
** wavefront-scoped fence orders their shared-memory traffic), cp.async
** (templates guard it with __CUDA_ARCH__ >= 800, which HIP never defines,
** and fall back to plain copies). Matrix instructions (MFMA, WMMA) are not
** used yet: only the portable stages are generated for HIP.
*/

#define FLA_TARGET_HIP 1
#define FLA_LOGICAL_WARP 32

/* ------------------------------------------------------------ reductions */

/* Sum over the lanes of the logical warp that share lane % width (width a
** power of two <= 32): every lane gets the same bits, as on CUDA. */
FLA_DEVICE float fla_warp_sum_strided(float x, int width) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1)
    if (off >= width) x += __shfl_xor(x, off, FLA_LOGICAL_WARP);
  return x;
}

FLA_DEVICE float fla_warp_sum(float x) { return fla_warp_sum_strided(x, 1); }

/* x of the lane lane ^ off within the logical warp of 32 (off < 32; width
** 32 keeps a wave64 lane inside its half, as on CUDA). */
FLA_DEVICE float fla_lane_xor(float x, int off) { return __shfl_xor(x, off, FLA_LOGICAL_WARP); }

/* ------------------------------------------------------- warp barrier */

FLA_DEVICE void fla_wave_sync() {
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
  __builtin_amdgcn_wave_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
}
/* Only our templates see this macro: it comes after ROCm's own headers. */
#define __syncwarp() fla_wave_sync()
