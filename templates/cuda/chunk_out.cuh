/*
** chunk_out.cuh -- what chunk_fwd.cuh and chunk_wy_fwd.cuh share: one chunk's
** output on tensor cores (ck_o_chunk, 4 warps), the state update it ends with
** (ck_state_update) and the constant decay's log2 gate (ck_gamma_h). Spliced
** in with //@include "chunk_out.cuh" after chunk_tiles.cuh and the CK_* tile
** macros (CK_BT, CK_KW, CK_MT, CK_NT, CK_LDQ, CK_LDV, CK_LOG2E).
*/

/* S = 2^gL S + (K .* 2^(gL - gam))^T V over the chunk's 64 tokens.
** Kd^T is the A operand (m = key, k = token) read transposed from Ks[token][key];
** V the B operand (k = token, n = val) read transposed from Vs[token][val]. */
template <int KW, int MT, int NT, int LDQ, int LDV>
__device__ __forceinline__ void ck_state_update(float (&S)[MT][NT][4], const unsigned short *Ks,
                                                const unsigned short *Vs, const float *gam,
                                                int rows, int w, int lane) {
  const int q = lane & 3;
#if FLA_DECAY
  const float gL = gam[rows - 1];
  const float eL = exp2f(gL);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) S[mt][j][e] *= eL;
#else
  (void)gam, (void)rows, (void)q;
#endif
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    unsigned ka[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      int row = 16 * kk + (lane >> 4) * 8 + (lane & 7);
      int col = KW * w + 16 * mt + ((lane >> 3) & 1) * 8;
      ck_ldm4t(ka[mt], ck_smem(Ks + row * LDQ + col));
    }
#if FLA_DECAY
    {
      int t = 16 * kk + 2 * q;
      float f0 = exp2f(gL - gam[t]), f1 = exp2f(gL - gam[t + 1]);
      float f8 = exp2f(gL - gam[t + 8]), f9 = exp2f(gL - gam[t + 9]);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        ka[mt][0] = ck_scale2(ka[mt][0], f0, f1);
        ka[mt][1] = ck_scale2(ka[mt][1], f0, f1);
        ka[mt][2] = ck_scale2(ka[mt][2], f8, f9);
        ka[mt][3] = ck_scale2(ka[mt][3], f8, f9);
      }
    }
#endif
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
      unsigned vb[4];
      int row = 16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7);
      int col = 16 * np + (lane >> 4) * 8;
      ck_ldm4t(vb, ck_smem(Vs + row * LDV + col));
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        ck_mma(S[mt][2 * np], ka[mt], vb[0], vb[1]);
        ck_mma(S[mt][2 * np + 1], ka[mt], vb[2], vb[3]);
      }
    }
  }
}

__device__ __forceinline__ float ck_gamma_h(const fla_kernel_args &a, int h) {
#if FLA_DECAY == 1
  return ((const float *)a.gamma)[h] * CK_LOG2E;
#else
  (void)a, (void)h;
  return 0.0f;
#endif
}

/* One chunk of fla_chunk_fwd_o for warp w (rows 16w .. 16w+15):
**   A = Q K^T (columns up to the warp's last row), O = 2^gam .* (Q S0) + A V,
**   store scale O, then (UPD 1) S = 2^gL S + (K .* 2^(gL - gam))^T V; UPD 0
**   for a caller with no state to carry (chunk_wy_fwd's output kernel).
** Measured and dropped (bench/results/2026-11-22-chunk-fwd.md): a copy of
** this body per warp index, making the causal skips compile-time (255
** registers, spills: 5-30% slower), and O staged through the warp's own Q rows
** for 16-byte stores (1-3% slower than these 4-byte stores). */
template <int UPD>
__device__ __forceinline__ void ck_o_chunk(float (&S)[CK_MT][CK_NT][4], const unsigned short *Qb,
                                           const unsigned short *Kb, const unsigned short *Vb,
                                           const unsigned short *Ss, const float *gam, int rows,
                                           int w, int lane, unsigned short *orow, long long ld,
                                           int vcols, float scale) {
  const int g = lane >> 2, q = lane & 3;
  const int r0 = 16 * w;

  /* A = Q K^T (columns up to the warp's last row), Oacc = Q S0 */
  float acc[CK_BT / 8][4], oacc[CK_NT][4];
#pragma unroll
  for (int j = 0; j < CK_BT / 8; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
#pragma unroll
  for (int j = 0; j < CK_NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) oacc[j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < CK_KP / 16; kk++) {
    unsigned qa[4];
    ck_ldm4(qa, ck_smem(Qb + (r0 + (lane & 15)) * CK_LDQ + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int np = 0; np < CK_BT / 16; np++) {
      if (np <= w) {
        unsigned kb[4];
        ck_ldm4(kb, ck_smem(Kb + (16 * np + (lane >> 4) * 8 + (lane & 7)) * CK_LDQ + kk * 16 +
                            ((lane >> 3) & 1) * 8));
        ck_mma(acc[2 * np], qa, kb[0], kb[1]);
        ck_mma(acc[2 * np + 1], qa, kb[2], kb[3]);
      }
    }
#pragma unroll
    for (int np = 0; np < CK_NT / 2; np++) {
      unsigned sb[4];
      ck_ldm4t(sb, ck_smem(Ss + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                           16 * np + (lane >> 4) * 8));
      ck_mma(oacc[2 * np], qa, sb[0], sb[1]);
      ck_mma(oacc[2 * np + 1], qa, sb[2], sb[3]);
    }
  }

  const int rA = r0 + g, rB = r0 + g + 8;
#if FLA_DECAY
  const float gA = gam[rA], gB = gam[rB];
  {
    const float eA = exp2f(gA), eB = exp2f(gB);
#pragma unroll
    for (int j = 0; j < CK_NT; j++) {
      oacc[j][0] *= eA, oacc[j][1] *= eA;
      oacc[j][2] *= eB, oacc[j][3] *= eB;
    }
  }
#endif
  /* mask and gate A, then O += A V over the warp's causal k-steps */
#pragma unroll
  for (int kk = 0; kk < CK_BT / 16; kk++) {
    if (kk <= w) {
      unsigned af[4];
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        const int j = 2 * kk + hf;
        const int cc = 8 * j + 2 * q;
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = (e < 2) ? rA : rB, col = cc + (e & 1);
          const bool in = col <= r && r < rows;
#if FLA_DECAY
          const float gr = (e < 2) ? gA : gB;
          v[e] = in ? acc[j][e] * exp2f(gr - gam[col]) : 0.0f;
#else
          v[e] = in ? acc[j][e] : 0.0f;
#endif
        }
        af[2 * hf] = ck_pack(v[0], v[1]);
        af[2 * hf + 1] = ck_pack(v[2], v[3]);
      }
      /* af = {a0a1, a2a3, a4a5, a6a7}: n-tile 2kk (rows g, g+8), then 2kk+1 */
      unsigned afr[4] = {af[0], af[1], af[2], af[3]};
#pragma unroll
      for (int np = 0; np < CK_NT / 2; np++) {
        unsigned vb[4];
        ck_ldm4t(vb, ck_smem(Vb + (16 * kk + ((lane >> 3) & 1) * 8 + (lane & 7)) * CK_LDV +
                             16 * np + (lane >> 4) * 8));
        ck_mma(oacc[2 * np], afr, vb[0], vb[1]);
        ck_mma(oacc[2 * np + 1], afr, vb[2], vb[3]);
      }
    }
  }

  /* store O */
  /* store O */
  {
#pragma unroll
    for (int j = 0; j < CK_NT; j++) {
      const int col = 8 * j + 2 * q;
#if FLA_V % 2 == 0
      if (col < vcols) {
        if (rA < rows)
          *(unsigned *)(orow + rA * ld + col) = ck_pack(scale * oacc[j][0], scale * oacc[j][1]);
        if (rB < rows)
          *(unsigned *)(orow + rB * ld + col) = ck_pack(scale * oacc[j][2], scale * oacc[j][3]);
      }
#else
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int r = (e < 2) ? rA : rB, cl = col + (e & 1);
        if (r < rows && cl < vcols) {
          unsigned u = ck_pack(scale * oacc[j][e], 0.0f);
          orow[r * ld + cl] = (unsigned short)(u & 0xffffu);
        }
      }
#endif
    }
  }

  /* the state leaving the chunk (UPD 0: the caller has no state) */
  if (UPD) ck_state_update<CK_KW, CK_MT, CK_NT, CK_LDQ, CK_LDV>(S, Kb, Vb, gam, rows, w, lane);
}
