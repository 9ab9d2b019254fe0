/*
** templates/cuda/train_common.cuh -- what the training modules share
** (train_nn.cuh, train_delta.cuh, train_rwkv6.cuh, train_attn.cuh): bf16
** conversion, loads and stores of "compute" buffers (bf16 when the flag is
** set, else float32), warp reductions, sigmoids and the grid-stride loop.
** Not compiled alone: gpu_train_source (models/train_gpu_step.c) puts it in
** front of each module's own file.
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
/* element i of a compute buffer (bf16 when bf, else float32) */
__device__ __forceinline__ float ldc(const void *p, i64 i, int bf) {
  return bf ? bf2f(((const bf16 *)p)[i]) : ((const float *)p)[i];
}
__device__ __forceinline__ void stc(void *p, i64 i, float v, int bf) {
  if (bf) ((bf16 *)p)[i] = f2bf(v);
  else ((float *)p)[i] = v;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o >= 1; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o >= 1; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float logsigm(float x) { return fminf(x, 0.f) - log1pf(expf(-fabsf(x))); }

#define GRID_LOOP(i, n) for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
