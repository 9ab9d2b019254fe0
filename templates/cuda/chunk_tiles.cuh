/*
** chunk_tiles.cuh -- what the chunked stages (chunk_fwd, chunk_gk_fwd, chunk_wy_fwd,
** chunk_kda_fwd and the backwards) share after
** chunk_common.cuh: bf16 tile loads into shared memory (cp.async when
** aligned), the gate loads and their chunk-local cumsum, and the fp32 state
** tiles in registers (zero, load, store). Spliced in with
** //@include "chunk_tiles.cuh" after the CK_* tile macros are defined.
*/
/* ---------------------------------------------------------- tile loads */

/* ROWS x COLS bf16 from global (row stride ld elements) into smem (row stride
** LDS); rows >= nrows and columns >= ncols read 0. vec: 16-byte cp.async
** (ncols, ld and the base a multiple of 8 elements / 16 bytes), else plain. */
template <int COLS, int LDS, int NTH, int ROWS = CK_BT>
__device__ __forceinline__ void ck_load_tile(unsigned short *s, const unsigned short *g, long long ld,
                                             int nrows, int ncols, int vec, int tid) {
  if (vec) {
    const int P = COLS / 8;
#pragma unroll 4
    for (int p = tid; p < ROWS * P; p += NTH) {
      int r = p / P, c = (p % P) * 8;
      int ok = r < nrows && c < ncols;
      ck_cp16(ck_smem(s + r * LDS + c), ok ? (const void *)(g + r * ld + c) : (const void *)g, ok);
    }
  } else {
    for (int p = tid; p < ROWS * COLS; p += NTH) {
      int r = p / COLS, c = p % COLS;
      s[r * LDS + c] = (r < nrows && c < ncols) ? g[r * ld + c] : (unsigned short)0;
    }
  }
}

/* The chunk's log2 gates, per lane rows 2l and 2l+1 (warp 0): raw values. */
__device__ __forceinline__ void ck_load_g(const fla_kernel_args &a, const ck_chunk &x, int h,
                                          int lane, float &g0, float &g1) {
#if FLA_DECAY == 2
  int r0 = 2 * lane, r1 = 2 * lane + 1;
  long long H = a.H;
  g0 = r0 < x.rows ? ck_ldgf(a.g, (x.t0 + r0) * H + h) * CK_LOG2E : 0.0f;
  g1 = r1 < x.rows ? ck_ldgf(a.g, (x.t0 + r1) * H + h) * CK_LOG2E : 0.0f;
#else
  (void)a, (void)x, (void)h, (void)lane;
  g0 = g1 = 0.0f;
#endif
}

/* gam[0..63] = chunk-local inclusive cumsum of the log2 gates (warp 0). */
__device__ __forceinline__ void ck_scan_g(float *gam, float g0, float g1, float gc, int rows,
                                          int lane) {
#if FLA_DECAY == 2
  (void)gc, (void)rows;
  float s1 = g0 + g1, x = s1;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    float y = __shfl_up_sync(0xffffffffu, x, off);
    if (lane >= off) x += y;
  }
  gam[2 * lane] = x - s1 + g0;
  gam[2 * lane + 1] = x;
#elif FLA_DECAY == 1
  (void)g0, (void)g1;
  int r0 = 2 * lane + 1, r1 = 2 * lane + 2;
  gam[2 * lane] = gc * (float)(r0 < rows ? r0 : rows);
  gam[2 * lane + 1] = gc * (float)(r1 < rows ? r1 : rows);
#else
  (void)gam, (void)g0, (void)g1, (void)gc, (void)rows, (void)lane;
#endif
}

/* ---------------------------------------------------- state in registers */

/* Thread (warp w, lane l = 4g + q) holds S[key][val] for
**   key = KW w + 16 mt + g (+8 for elements 2, 3),
**   val = 8 j + 2 q (+1 for elements 1, 3)      (val relative to the slice). */

template <int MT, int NT>
__device__ __forceinline__ void ck_state_zero(float (&S)[MT][NT][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) S[mt][j][e] = 0.0f;
}

/* S = src[key * FLA_V + v0 + val] (src: one head's K x V f32 matrix; NULL: 0). */
template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_state_load(float (&S)[MT][NT][4], const float *src, int v0,
                                              int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = KW * w + 16 * mt + g + (e >> 1) * 8;
        int col = v0 + 8 * j + 2 * q + (e & 1);
        S[mt][j][e] = (src && key < FLA_K && col < FLA_V) ? src[(long long)key * FLA_V + col] : 0.0f;
      }
}

template <int KW, int MT, int NT>
__device__ __forceinline__ void ck_state_store(const float (&S)[MT][NT][4], float *dst, int v0,
                                               int w, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int key = KW * w + 16 * mt + g + (e >> 1) * 8;
        int col = v0 + 8 * j + 2 * q + (e & 1);
        if (key < FLA_K && col < FLA_V) dst[(long long)key * FLA_V + col] = S[mt][j][e];
      }
}
