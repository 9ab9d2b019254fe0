/*
** chunk_common.cuh -- what the chunked stages share (chunk_fwd, chunk_gk_fwd,
** chunk_wy_fwd): bf16 packing, cp.async, ldmatrix and mma.sync m16n8k16
** wrappers, and the walk over the chunks of all sequences (a.chunk_seq,
** a.chunk_first, a.cu). A template splices it in with the line
** //@include "chunk_common.cuh" after it has defined CK_BT (rows of a chunk).
*/
/* ------------------------------------------------------------ primitives */

__device__ __forceinline__ float ck_bf2f(unsigned short x) {
  return __uint_as_float(((unsigned)x) << 16);
}
/* Two floats to bf16x2 (round to nearest even); lo in the low half. */
__device__ __forceinline__ unsigned ck_pack(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ unsigned ck_scale2(unsigned x, float flo, float fhi) {
  return ck_pack(__uint_as_float(x << 16) * flo, __uint_as_float(x & 0xffff0000u) * fhi);
}
/* bf16x2 (lo in the low half) to two floats. */
__device__ __forceinline__ void ck_unpack(unsigned x, float (&f)[2]) {
  f[0] = __uint_as_float(x << 16);
  f[1] = __uint_as_float(x & 0xffff0000u);
}
__device__ __forceinline__ unsigned ck_smem(const void *p) {
  return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void ck_cp16(unsigned dst, const void *src, int valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void ck_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void ck_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
__device__ __forceinline__ void ck_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::); }

__device__ __forceinline__ void ck_ldm4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ck_ldm4t(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
/* d += a b: m16n8k16, a row-major (4 regs), b column-major (2 regs), fp32 d. */
__device__ __forceinline__ void ck_mma(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                       unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float ck_ldgf(unsigned long long base, long long i) {
  return ck_bf2f(((const unsigned short *)base)[i]); /* FLA_IN_BF16 */
}

/* ----------------------------------------------------------- chunk walk */

/* Where chunk c lies: sequence n, its token range [t0, t0 + rows), whether it
** is the first / last chunk of n. Advancing to c+1 inside the same sequence
** needs no memory access. */
struct ck_chunk {
  long long t0, te, cfn1; /* te = cu[n+1], cfn1 = chunk_first[n+1] */
  int n, rows, first, last;
};

__device__ __forceinline__ void ck_chunk_at(const fla_kernel_args &a, long long c, ck_chunk &x) {
  const int *cs = (const int *)a.chunk_seq;
  const long long *cf = (const long long *)a.chunk_first;
  const long long *cu = (const long long *)a.cu;
  x.n = cs[c];
  long long f = cf[x.n];
  x.cfn1 = cf[x.n + 1];
  x.te = cu[x.n + 1];
  x.t0 = cu[x.n] + (c - f) * CK_BT;
  long long r = x.te - x.t0;
  x.rows = r < CK_BT ? (int)r : CK_BT;
  x.first = c == f;
  x.last = c + 1 == x.cfn1;
}

/* The chunk c of sequence n (its chunks c0 .. c1-1, tokens t0n .. te) without
** the chunk tables: the walks over one sequence of the backward stages. */
__device__ __forceinline__ void ck_chunk_of(long long c, long long c0, long long c1, int n, long long t0n,
                                            long long te, ck_chunk &x) {
  x.n = n;
  x.t0 = t0n + (c - c0) * CK_BT;
  x.te = te;
  x.cfn1 = c1;
  long long r = te - x.t0;
  x.rows = r < CK_BT ? (int)r : CK_BT;
  x.first = c == c0;
  x.last = c + 1 == c1;
}

__device__ __forceinline__ void ck_chunk_next(const fla_kernel_args &a, long long c, ck_chunk &x) {
  /* x describes chunk c; make it describe c + 1 */
  if (!x.last) {
    x.t0 += CK_BT;
    long long r = x.te - x.t0;
    x.rows = r < CK_BT ? (int)r : CK_BT;
    x.first = 0;
    x.last = c + 2 == x.cfn1;
  } else {
    ck_chunk_at(a, c + 1, x);
  }
}

