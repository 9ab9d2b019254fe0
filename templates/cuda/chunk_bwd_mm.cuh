/*
** chunk_bwd_mm.cuh -- the warp-level pieces of chunk_bwd.cuh (spliced in with
** //@include after its CK_* and C3_* macros): tile loads of any row count,
** the 16-byte load test, and the 16-row products and row epilogues of the
** per-chunk kernel, all on mma.sync m16n8k16 (chunk_common.cuh). A warp owns
** rows r0 .. r0+15 of an output; accumulators are NT n-tiles of 8 columns,
** thread (lane = 4g + q) holding rows r0+g, r0+g+8, columns 8j + 2q, +1.
*/

/* ROWS x COLS bf16 tile from global (row stride ld) into smem (row stride LDS);
** rows >= nrows, cols >= ncols read 0; vec: 16-byte cp.async (see ck_load_tile). */
template <int ROWS, int COLS, int LDS, int NTH>
__device__ __forceinline__ void ckb_load(unsigned short *s, const unsigned short *g, long long ld,
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

/* 16-byte loads need 8-element rows and a 16-byte aligned base. */
__device__ __forceinline__ int ckb_vec(fla_u64 p, long long off, int cols) {
  return cols % 8 == 0 && ((p + 2 * (fla_u64)off) & 15) == 0;
}

/* acc (rows rA = r0 + g, rB = rA + 8; NT n-tiles of 8 columns) -> bf16 rows of
** dst (row stride ld), columns < cols, rows < rows. */
template <int NT>
__device__ __forceinline__ void ckb_store_rows(const float (&acc)[NT][4], unsigned short *dst,
                                               long long ld, int rA, int rows, int cols, int q) {
  const int rB = rA + 8;
#pragma unroll
  for (int j = 0; j < NT; j++) {
    const int col = 8 * j + 2 * q;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      const int r = hf ? rB : rA;
      if (r >= rows || col >= cols) continue;
      unsigned u = ck_pack(acc[j][2 * hf], acc[j][2 * hf + 1]);
      if (cols % 2 == 0) {
        *(unsigned *)(dst + r * ld + col) = u;
      } else {
        dst[r * ld + col] = (unsigned short)(u & 0xffffu);
        if (col + 1 < cols) dst[r * ld + col + 1] = (unsigned short)(u >> 16);
      }
    }
  }
}

/* Row dots x_r . acc_r for rows rA, rB, x from smem (row stride LDX); every
** lane of the quad gets the sums. */
template <int NT, int LDX>
__device__ __forceinline__ void ckb_row_dot(const float (&acc)[NT][4], const unsigned short *Xs,
                                            int rA, int q, float &dA, float &dB) {
  float sA = 0.0f, sB = 0.0f;
#pragma unroll
  for (int j = 0; j < NT; j++) {
    const int col = 8 * j + 2 * q;
    float xa[2], xb[2];
    ck_unpack(*(const unsigned *)(Xs + rA * LDX + col), xa);
    ck_unpack(*(const unsigned *)(Xs + (rA + 8) * LDX + col), xb);
    sA += acc[j][0] * xa[0] + acc[j][1] * xa[1];
    sB += acc[j][2] * xb[0] + acc[j][3] * xb[1];
  }
  sA += __shfl_xor_sync(0xffffffffu, sA, 1);
  sA += __shfl_xor_sync(0xffffffffu, sA, 2);
  sB += __shfl_xor_sync(0xffffffffu, sB, 1);
  sB += __shfl_xor_sync(0xffffffffu, sB, 2);
  dA = sA, dB = sB;
}

template <int NT>
__device__ __forceinline__ void ckb_zero(float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
}

/* acc += X_rows Y^T: X [.][LDX] rows r0.., Y [n][LDY] rows = output columns
** (B read untransposed), KD reduction columns. */
template <int NT, int KD, int LDX, int LDY>
__device__ __forceinline__ void ckb_mm_nt(float (&acc)[NT][4], const unsigned short *Xs,
                                          const unsigned short *Ys, int r0, int lane) {
#pragma unroll
  for (int kk = 0; kk < KD / 16; kk++) {
    unsigned xa[4];
    ck_ldm4(xa, ck_smem(Xs + (r0 + (lane & 15)) * LDX + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      unsigned yb[4];
      ck_ldm4(yb, ck_smem(Ys + (16 * np + (lane >> 4) * 8 + (lane & 7)) * LDY + kk * 16 +
                          ((lane >> 3) & 1) * 8));
      ck_mma(acc[2 * np], xa, yb[0], yb[1]);
      ck_mma(acc[2 * np + 1], xa, yb[2], yb[3]);
    }
  }
}

/* acc += X_rows Y: X [.][LDX] rows r0.., Y [k][LDY] (B read transposed). */
template <int NT, int KD, int LDX, int LDY>
__device__ __forceinline__ void ckb_mm_nn(float (&acc)[NT][4], const unsigned short *Xs,
                                          const unsigned short *Ys, int r0, int lane) {
#pragma unroll
  for (int kk = 0; kk < KD / 16; kk++) {
    unsigned xa[4];
    ck_ldm4(xa, ck_smem(Xs + (r0 + (lane & 15)) * LDX + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      unsigned yb[4];
      ck_ldm4t(yb, ck_smem(Ys + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDY + 16 * np +
                           (lane >> 4) * 8));
      ck_mma(acc[2 * np], xa, yb[0], yb[1]);
      ck_mma(acc[2 * np + 1], xa, yb[2], yb[3]);
    }
  }
}

/* acc += P^T_rows Y for the causal k-steps kk >= w: P [i][j] (64 x 64, row
** stride C3_LDA) read transposed as the A operand (m = j in the warp's rows). */
template <int NT, int LDY>
__device__ __forceinline__ void ckb_mm_tn_causal(float (&acc)[NT][4], const unsigned short *Ps,
                                                 const unsigned short *Ys, int w, int lane) {
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    if (kk < w) continue;
    unsigned pa[4];
    ck_ldm4t(pa, ck_smem(Ps + (16 * kk + (lane >> 4) * 8 + (lane & 7)) * C3_LDA + 16 * w +
                         ((lane >> 3) & 1) * 8));
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      unsigned yb[4];
      ck_ldm4t(yb, ck_smem(Ys + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDY + 16 * np +
                           (lane >> 4) * 8));
      ck_mma(acc[2 * np], pa, yb[0], yb[1]);
      ck_mma(acc[2 * np + 1], pa, yb[2], yb[3]);
    }
  }
}

