/*
** templates/common/index.h -- vendor-neutral indexing into the token-major
** layouts of runtime/cpu/cpu.h, in 64-bit arithmetic:
**
**   q, k, p, per-key g   [tok, H, K]      v, o   [tok, H, V]
**   scalar g, beta       [tok, H]         bonus  [H, K]      gamma [H]
**   h0, ht               [N, H, K, V]     cu     [N + 1] int64 token offsets
**
** Inlined by gen/generate.c after templates/common/math.h; includes nothing.
*/
typedef long long fla_i64;
typedef unsigned long long fla_u64;

/* Start of token t, head h in a [tok, H, D] tensor. */
FLA_DEVICE fla_i64 fla_off_thd(fla_i64 t, int h, int H, int D) {
  return (t * (fla_i64)H + h) * (fla_i64)D;
}

/* Token t, head h in a [tok, H] tensor. */
FLA_DEVICE fla_i64 fla_off_th(fla_i64 t, int h, int H) { return t * (fla_i64)H + h; }

/* Start of the state of sequence n, head h in an [N, H, K, V] tensor. */
FLA_DEVICE fla_i64 fla_off_state(int n, int h, int H, int K, int V) {
  return ((fla_i64)n * H + h) * (fla_i64)K * (fla_i64)V;
}
