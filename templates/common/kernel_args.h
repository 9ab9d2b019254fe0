/*
** templates/common/kernel_args.h -- vendor-neutral: the kernel argument
** struct (the ABI every kernel shares with gen/generate.h's fla_kernel_args)
** and the input element type in_t with its loads and stores.
**
** Inlined by gen/generate.c after templates/common/index.h, before the
** backend's file (templates/cuda/common.cuh or templates/hip/common.hip.h).
** Nothing is included: NVRTC and hipRTC need no include path, and bf16 is
** handled by bit manipulation (templates/common/math.h), since NVRTC's
** builtin headers lack cuda_bf16.h. uint4 and float4 exist on both vendors.
*/

typedef int fla_i32;

/* Same layout as gen/generate.h's fla_kernel_args (passed by value). */
struct fla_kernel_args {
  fla_u64 q, k, v, p, g, beta, bonus;  /* effective inputs                    */
  fla_u64 gamma;                       /* [H] f32 constant log decay         */
  fla_u64 h0, ht;                      /* [N,H,K,V] f32                      */
  fla_u64 o;                           /* [tok,H,V]                          */
  fla_u64 cu;                          /* [N+1] int64 token offsets          */
  fla_u64 chunk_seq;                   /* [NC] int32: sequence of chunk c    */
  fla_u64 chunk_first;                 /* [N+1] int64: first chunk of seq n  */
  fla_u64 ws0, ws1;                    /* stage workspaces                   */
  fla_u64 x, y;                        /* prep: input and output rows        */
  fla_u64 d_o, dht;                    /* backward: output gradients         */
  fla_u64 dq, dk, dv, dp, dg, dbeta, dbonus, dh0; /* input gradients      */
  fla_u64 dx, dy;                      /* prep backward                      */
  fla_u64 ws2, ws3;                    /* more stage workspace               */
  fla_i64 total;                       /* tokens over all sequences          */
  fla_i64 rows;                        /* prep: number of rows               */
  fla_i32 N, H;
  fla_i32 num_chunks;                  /* NC: chunks over all sequences      */
  float scale;
};
/* 32 pointers, 2 int64, 3 int32 and a float: no padding anywhere. */
static_assert(sizeof(fla_kernel_args) == 288, "fla_kernel_args differs from generate.h");

/* ------------------------------------------------------------ input type */

#if FLA_IN_BF16
/* bf16 storage: the bits of a __nv_bfloat16. */
struct __align__(2) fla_bf16 {
  unsigned short bits;
};
typedef fla_bf16 in_t;
#define FLA_IN_VEC 8 /* elements in 16 bytes */
FLA_DEVICE float fla_ld(const in_t *p, fla_i64 i) { return fla_bf16_bits_to_f32(p[i].bits); }
FLA_DEVICE void fla_st(in_t *p, fla_i64 i, float x) { p[i].bits = fla_f32_to_bf16_bits(x); }
/* out[0..7] = p[0..7]; p 16-byte aligned. */
FLA_DEVICE void fla_ld_vec(const in_t *p, float *out) {
  uint4 w = *reinterpret_cast<const uint4 *>(p);
  unsigned int u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int e = 0; e < 4; e++) {
    out[2 * e] = __uint_as_float(u[e] << 16);
    out[2 * e + 1] = __uint_as_float(u[e] & 0xffff0000u);
  }
}
#else
typedef float in_t;
#define FLA_IN_VEC 4
FLA_DEVICE float fla_ld(const in_t *p, fla_i64 i) { return p[i]; }
FLA_DEVICE void fla_st(in_t *p, fla_i64 i, float x) { p[i] = x; }
FLA_DEVICE void fla_ld_vec(const in_t *p, float *out) {
  float4 w = *reinterpret_cast<const float4 *>(p);
  out[0] = w.x;
  out[1] = w.y;
  out[2] = w.z;
  out[3] = w.w;
}
#endif
