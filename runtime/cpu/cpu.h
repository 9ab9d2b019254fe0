/*
** cpu.h -- the two CPU algorithms of the token-mixing recurrence.
**
** Both run the "core" recurrence: inputs after feature maps, derived keys and
** constant decays have been applied by the op layer (runtime/op.c). Per
** sequence n and head h, with S (K x V) starting at h0 (or 0):
**
**   decay:        S~ = exp(g_t) S          (FLA_CORE_DECAY_SCALAR, g [tok,H])
**                 S~ = diag(exp(gk_t)) S   (FLA_CORE_DECAY_KEY, g [tok,H,K])
**                 S~ = S                   (FLA_CORE_DECAY_NONE)
**   plain write:  S  = S~ + k_t v_t^T
**   delta write:  u  = beta_t (v_t - S~^T p_t);  S = S~ + k_t u^T   (p = k if
**                 no probe is given)
**   read after:   o_t = scale S^T q_t
**   read before:  o_t = scale S_prev^T q_t + scale (q_t . (bonus_h * k_t)) v_t
**                 (S_prev: the state before token t, undecayed)
**
** Token-major layouts: q,k,p [tok,H,K], v,o [tok,H,V], g [tok,H] or
** [tok,H,K], beta [tok,H], bonus [H,K], h0/ht [N,H,K,V]; sequence n covers
** tokens cu[n] .. cu[n+1]-1.
**
** Backward is of L = sum(o * d_o) + sum(ht * dht). Every gradient pointer
** that is not NULL is overwritten in full (dbonus summed over all tokens).
*/
#ifndef FLA_CPU_H
#define FLA_CPU_H

#include <stddef.h>
#include <stdint.h>

enum { FLA_CORE_DECAY_NONE = 0, FLA_CORE_DECAY_SCALAR, FLA_CORE_DECAY_KEY };

typedef struct fla_core_spec {
  int decay;          /* FLA_CORE_DECAY_* */
  int delta;          /* 1: delta write (beta required) */
  int read_before;    /* 1: read the state before the token (RWKV-6) */
  int64_t N, H, K, V; /* sequences, heads, state key dim, value dim */
  int64_t total;      /* tokens over all sequences = cu[N] */
  const int64_t *cu;  /* N+1 token offsets */
  double scale;
  int chunk;          /* chunk size for the chunked algorithm (power of 2) */
  int nthreads;       /* worker threads over (n, h) pairs, >= 1 */
} fla_core_spec;

/* Forward and backward tensors of one call; NULL where absent. */
#define FLA_CORE_IO(REAL)                                                    \
  struct {                                                                   \
    const REAL *q, *k, *v, *p, *g, *beta, *bonus, *h0;                       \
    REAL *o, *ht;                                                            \
    const REAL *d_o, *dht;                                                   \
    REAL *dq, *dk, *dv, *dp, *dg, *dbeta, *dbonus, *dh0;                     \
  }

typedef FLA_CORE_IO(double) fla_core_f64;
typedef FLA_CORE_IO(float) fla_core_f32;

/* Zeroes every non-NULL gradient of io (REAL of esz bytes) in full, so the
** tokens outside every sequence and the gradients a family does not produce
** (dp without a probe, dbeta without delta) read 0. Both backwards start here. */
void fla_core_zero_grads(const fla_core_spec *s, size_t esz, void *dq, void *dk, void *dv,
                         void *dp, void *dbeta, void *dg, void *dbonus);
#define FLA_CORE_ZERO_GRADS(s, io, REAL)                                          \
  fla_core_zero_grads(s, sizeof(REAL), (io)->dq, (io)->dk, (io)->dv, (io)->dp, \
                      (io)->dbeta, (io)->dg, (io)->dbonus)

/* Token-by-token recurrence in float64: the oracle. Return 0, or -1 when
** memory runs out. */
int fla_cpu_recurrent_forward(const fla_core_spec *s, fla_core_f64 *io);
int fla_cpu_recurrent_backward(const fla_core_spec *s, fla_core_f64 *io);

/* Chunkwise-parallel algorithm in float32 with BLAS chunk products: the decay
** family (plain write) and the WY family (delta write). Same contract. */
int fla_cpu_chunk_forward(const fla_core_spec *s, fla_core_f32 *io);
int fla_cpu_chunk_backward(const fla_core_spec *s, fla_core_f32 *io);

#endif
