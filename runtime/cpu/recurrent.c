/*
** recurrent.c -- the token-by-token recurrence in float64: the oracle every
** other implementation is tested against. Clarity first; the only concession
** to speed is checkpointing in the backward, so that long sequences fit in
** memory, and running the (sequence, head) pairs on several threads.
**
** The recurrence (cpu.h has the full contract). Per sequence n, head h, with
** S (K x V, row-major: S[i*V + j], i a key index, j a value index) starting
** at h0 (or 0), for each token t:
**
**   S_prev = S
**   decay:  S~ = exp(g_t) S_prev  |  diag(exp(gk_t)) S_prev  |  S_prev
**   write:  plain  S = S~ + k v^T
**           delta  r = S~^T p,  u = beta (v - r),  S = S~ + k u^T   (p = k
**                  when no probe is given)
**   read:   after  o = scale S^T q
**           before o = scale S_prev^T q + scale (sum_d q_d bonus_d k_d) v
**
** ht is S after the sequence's last token.
*/
#include "internal.h"
#include "cpu/cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tokens between two saved states in the backward. Memory per pair is about
** (T / CKPT + CKPT) K V doubles instead of T K V. */
#define RECURRENT_CKPT 64

/* One token's inputs for one head: pointers into the token-major tensors. */
typedef struct {
  const double *q, *k, *v, *p; /* p == k when no probe is given */
  const double *d_o;           /* NULL when there is no output gradient */
  double eg;                   /* exp(g_t), scalar decay */
  const double *gk;            /* log gates [K], per-key decay */
  double beta;
} token_in;

/* Scratch of one (n, h) pair; one allocation, carved into pieces. */
typedef struct {
  double *S;      /* K*V: the running state */
  double *Stil;   /* K*V: the decayed state S~ of the token being undone */
  double *dS;     /* K*V: gradient flowing into the current state */
  double *ckpt;   /* nseg*K*V: the state before each segment's first token */
  double *seg;    /* (CKPT+1)*K*V: states before/after each token of a segment */
  double *egk;    /* K: exp(gk_t) */
  double *r, *u;  /* V: S~^T p and the delta-rule write value */
  double *gq, *gk, *gp, *gg; /* K: per-token gradients being assembled */
  double *gv, *du;           /* V */
  double *mem;
} pair_ws;

static void ws_free_(pair_ws *w) { free(w->mem); }

/* with_backward: also the backward's buffers, for a sequence of L tokens. */
static int ws_alloc_(pair_ws *w, int64_t K, int64_t V, int64_t L, int with_backward) {
  int64_t KV = K * V;
  int64_t nseg = (L + RECURRENT_CKPT - 1) / RECURRENT_CKPT;
  int64_t n = KV + K + 2 * V;
  if (with_backward) n += 2 * KV + nseg * KV + (RECURRENT_CKPT + 1) * KV + 4 * K + 2 * V;
  memset(w, 0, sizeof *w);
  w->mem = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  if (!w->mem) return -1;
  double *m = w->mem;
  w->S = m;    m += KV;
  w->egk = m;  m += K;
  w->r = m;    m += V;
  w->u = m;    m += V;
  if (with_backward) {
    w->Stil = m; m += KV;
    w->dS = m;   m += KV;
    w->ckpt = m; m += nseg * KV;
    w->seg = m;  m += (RECURRENT_CKPT + 1) * KV;
    w->gq = m;   m += K;
    w->gk = m;   m += K;
    w->gp = m;   m += K;
    w->gg = m;   m += K;
    w->gv = m;   m += V;
    w->du = m;
  }
  return 0;
}

/* Points x at token t, head h. */
static void token_load_(const fla_core_spec *s, const fla_core_f64 *io, int64_t t,
                        int64_t h, token_in *x) {
  int64_t th = t * s->H + h;
  x->q = io->q + th * s->K;
  x->k = io->k + th * s->K;
  x->v = io->v + th * s->V;
  x->p = io->p ? io->p + th * s->K : x->k;
  x->d_o = io->d_o ? io->d_o + th * s->V : NULL;
  x->eg = s->decay == FLA_CORE_DECAY_SCALAR ? exp(io->g[th]) : 1.0;
  x->gk = s->decay == FLA_CORE_DECAY_KEY ? io->g + th * s->K : NULL;
  x->beta = s->delta ? io->beta[th] : 0.0;
}

/* ------------------------------------------------------------- forward */

/* S <- exp(g) S  or  S_i <- exp(gk_i) S_i (row i), in place; egk gets exp(gk). */
static void decay_(const fla_core_spec *s, const token_in *x, double *S, double *egk) {
  int64_t K = s->K, V = s->V;
  if (s->decay == FLA_CORE_DECAY_SCALAR) {
    for (int64_t e = 0; e < K * V; e++) S[e] *= x->eg;
  } else if (s->decay == FLA_CORE_DECAY_KEY) {
    for (int64_t i = 0; i < K; i++) {
      egk[i] = exp(x->gk[i]);
      for (int64_t j = 0; j < V; j++) S[i * V + j] *= egk[i];
    }
  }
}

/* plain: S += k v^T.
** delta: r = S~^T p; u = beta (v - r); S += k u^T (S holds S~ on entry).
** r and u are left for the caller. */
static void write_(const fla_core_spec *s, const token_in *x, double *S, double *r,
                   double *u) {
  int64_t K = s->K, V = s->V;
  const double *w = x->v;
  if (s->delta) {
    for (int64_t j = 0; j < V; j++) r[j] = 0;
    for (int64_t i = 0; i < K; i++)
      for (int64_t j = 0; j < V; j++) r[j] += S[i * V + j] * x->p[i];
    for (int64_t j = 0; j < V; j++) u[j] = x->beta * (x->v[j] - r[j]);
    w = u;
  }
  for (int64_t i = 0; i < K; i++)
    for (int64_t j = 0; j < V; j++) S[i * V + j] += x->k[i] * w[j];
}

/* o = scale S^T q, plus, when bonus is given (read before),
** scale (sum_d q_d bonus_d k_d) v. */
static void read_(const fla_core_spec *s, const token_in *x, const double *S,
                  const double *bonus, double *o) {
  int64_t K = s->K, V = s->V;
  for (int64_t j = 0; j < V; j++) o[j] = 0;
  for (int64_t i = 0; i < K; i++)
    for (int64_t j = 0; j < V; j++) o[j] += x->q[i] * S[i * V + j];
  double c = 0;
  if (bonus)
    for (int64_t d = 0; d < K; d++) c += x->q[d] * bonus[d] * x->k[d];
  for (int64_t j = 0; j < V; j++) o[j] = s->scale * (o[j] + c * x->v[j]);
}

/* S <- h0 of pair (n, h), or zeros. */
static void state_init_(const fla_core_spec *s, const double *h0, int64_t n, int64_t h,
                        double *S) {
  int64_t KV = s->K * s->V;
  if (h0)
    memcpy(S, h0 + (n * s->H + h) * KV, sizeof(double) * (size_t)KV);
  else
    memset(S, 0, sizeof(double) * (size_t)KV);
}

typedef struct {
  const fla_core_spec *s;
  fla_core_f64 *io;
  double *dbonus_part; /* [N*H*K]: each pair's share of dbonus */
} recurrent_job;

static int forward_pair_(void *arg, int64_t idx) {
  const recurrent_job *job = arg;
  const fla_core_spec *s = job->s;
  fla_core_f64 *io = job->io;
  int64_t n = idx / s->H, h = idx % s->H;
  int64_t t0 = s->cu[n], t1 = s->cu[n + 1];
  const double *bonus = s->read_before && io->bonus ? io->bonus + h * s->K : NULL;
  pair_ws w;
  if (ws_alloc_(&w, s->K, s->V, t1 - t0, 0) != 0) return -1;
  state_init_(s, io->h0, n, h, w.S);
  for (int64_t t = t0; t < t1; t++) {
    token_in x;
    token_load_(s, io, t, h, &x);
    double *o = io->o ? io->o + (t * s->H + h) * s->V : NULL;
    if (s->read_before && o) read_(s, &x, w.S, bonus, o); /* S is S_prev here */
    decay_(s, &x, w.S, w.egk);
    write_(s, &x, w.S, w.r, w.u);
    if (!s->read_before && o) read_(s, &x, w.S, NULL, o);
  }
  if (io->ht)
    memcpy(io->ht + (n * s->H + h) * s->K * s->V, w.S, sizeof(double) * (size_t)(s->K * s->V));
  ws_free_(&w);
  return 0;
}

int fla_cpu_recurrent_forward(const fla_core_spec *s, fla_core_f64 *io) {
  if (!s || !io) return -1;
  recurrent_job job = {.s = s, .io = io, .dbonus_part = NULL};
  return fla_parallel_for(s->nthreads, s->N * s->H, forward_pair_, &job) != 0 ? -1 : 0;
}

/* ------------------------------------------------------------ backward */

/*
** Reverse mode through one token, given S_prev (the state before it), S_t
** (after it) and dS = dL/dS_t (from later tokens and dht). On return dS holds
** dL/dS_prev and w->gq, gk, gp, gg, gv, du, and *gbeta hold the token's
** gradients (gp only meaningful with a delta write; the caller merges it into
** gk when p is k); dbonus (NULL: not wanted) is accumulated into. In the
** order the forward ran, undone last to first (b = bonus):
**
**   read after:  dS += scale q dO^T;  dq = scale S_t dO
**   write plain: dk = dS v;  dv = dS^T k;  dS~ = dS
**   write delta: du = dS^T k;  dk = dS u;  dv = beta du;
**                dbeta = du . (v - r);  dr = -beta du;  dp = S~ dr;
**                dS~ = dS + p dr^T
**   decay:       scalar: dg = sum(S~ .* dS~);  dS_prev = exp(g) dS~
**                per-key: dgk_i = sum_j S~_ij dS~_ij;  dS_prev_i = exp(gk_i) dS~_i
**   read before: dq = scale S_prev dO;  dS_prev += scale q dO^T;  with the
**                bonus c = sum_d q_d b_d k_d and a = scale (dO . v):
**                dv += scale c dO;  dq_d += a b_d k_d;  dk_d += a b_d q_d;
**                db_d += a q_d k_d
*/
static void backward_token_(const fla_core_spec *s, const token_in *x, const double *bonus,
                            const double *Sprev, const double *St, pair_ws *w,
                            double *gbeta, double *dbonus) {
  int64_t K = s->K, V = s->V, KV = K * V;
  double sc = s->scale;
  double *dS = w->dS, *gq = w->gq, *gk = w->gk, *gp = w->gp, *gg = w->gg;
  double *gv = w->gv, *du = w->du, *r = w->r, *u = w->u;

  for (int64_t i = 0; i < K; i++) gq[i] = gk[i] = gp[i] = gg[i] = 0;
  for (int64_t j = 0; j < V; j++) gv[j] = du[j] = 0;
  *gbeta = 0;

  /* S~ again, recomputed from S_prev: cheaper than storing it. */
  const double *Stil = Sprev;
  if (s->decay != FLA_CORE_DECAY_NONE) {
    memcpy(w->Stil, Sprev, sizeof(double) * (size_t)KV);
    decay_(s, x, w->Stil, w->egk);
    Stil = w->Stil;
  }

  if (!s->read_before && x->d_o) {
    for (int64_t i = 0; i < K; i++) {
      double acc = 0;
      for (int64_t j = 0; j < V; j++) {
        acc += St[i * V + j] * x->d_o[j];
        dS[i * V + j] += sc * x->q[i] * x->d_o[j];
      }
      gq[i] = sc * acc;
    }
  }

  if (s->delta) {
    /* r and u as the forward computed them. */
    for (int64_t j = 0; j < V; j++) r[j] = 0;
    for (int64_t i = 0; i < K; i++)
      for (int64_t j = 0; j < V; j++) r[j] += Stil[i * V + j] * x->p[i];
    for (int64_t j = 0; j < V; j++) u[j] = x->beta * (x->v[j] - r[j]);
    for (int64_t i = 0; i < K; i++) {
      double acc = 0;
      for (int64_t j = 0; j < V; j++) {
        du[j] += dS[i * V + j] * x->k[i];
        acc += dS[i * V + j] * u[j];
      }
      gk[i] = acc;
    }
    double *dr = r; /* r is no longer needed once dbeta has it */
    for (int64_t j = 0; j < V; j++) {
      gv[j] = x->beta * du[j];
      *gbeta += du[j] * (x->v[j] - r[j]);
      dr[j] = -x->beta * du[j];
    }
    for (int64_t i = 0; i < K; i++) {
      double acc = 0;
      for (int64_t j = 0; j < V; j++) {
        acc += Stil[i * V + j] * dr[j];
        dS[i * V + j] += x->p[i] * dr[j];
      }
      gp[i] = acc;
    }
  } else {
    for (int64_t i = 0; i < K; i++) {
      double acc = 0;
      for (int64_t j = 0; j < V; j++) {
        acc += dS[i * V + j] * x->v[j];
        gv[j] += dS[i * V + j] * x->k[i];
      }
      gk[i] = acc;
    }
  }

  /* dS is now dL/dS~. */
  if (s->decay == FLA_CORE_DECAY_SCALAR) {
    double acc = 0;
    for (int64_t e = 0; e < KV; e++) {
      acc += Stil[e] * dS[e];
      dS[e] *= x->eg;
    }
    gg[0] = acc;
  } else if (s->decay == FLA_CORE_DECAY_KEY) {
    for (int64_t i = 0; i < K; i++) {
      double acc = 0;
      for (int64_t j = 0; j < V; j++) {
        acc += Stil[i * V + j] * dS[i * V + j];
        dS[i * V + j] *= w->egk[i];
      }
      gg[i] = acc;
    }
  }

  /* dS is now dL/dS_prev, less the read-before term added here. */
  if (s->read_before && x->d_o) {
    for (int64_t i = 0; i < K; i++) {
      double acc = 0;
      for (int64_t j = 0; j < V; j++) {
        acc += Sprev[i * V + j] * x->d_o[j];
        dS[i * V + j] += sc * x->q[i] * x->d_o[j];
      }
      gq[i] = sc * acc;
    }
    if (bonus) {
      double c = 0, a = 0;
      for (int64_t d = 0; d < K; d++) c += x->q[d] * bonus[d] * x->k[d];
      for (int64_t j = 0; j < V; j++) a += x->d_o[j] * x->v[j];
      a *= sc;
      for (int64_t j = 0; j < V; j++) gv[j] += sc * c * x->d_o[j];
      for (int64_t d = 0; d < K; d++) {
        gq[d] += a * bonus[d] * x->k[d];
        gk[d] += a * bonus[d] * x->q[d];
        if (dbonus) dbonus[d] += a * x->q[d] * x->k[d];
      }
    }
  }
}

/* Copies n doubles to dst + off when dst is given. */
static void store_(double *dst, int64_t off, const double *src, int64_t n) {
  if (dst) memcpy(dst + off, src, sizeof(double) * (size_t)n);
}

/*
** One pair: a forward sweep saves the state before every RECURRENT_CKPT-th
** token; then segments are undone last to first, each first replayed from its
** checkpoint into w.seg (seg[i] = state before the segment's i-th token,
** seg[i+1] = after it) and then walked backwards token by token.
*/
static int backward_pair_(void *arg, int64_t idx) {
  const recurrent_job *job = arg;
  const fla_core_spec *s = job->s;
  fla_core_f64 *io = job->io;
  int64_t H = s->H, K = s->K, V = s->V, KV = K * V;
  int64_t n = idx / H, h = idx % H;
  int64_t t0 = s->cu[n], t1 = s->cu[n + 1];
  int64_t nseg = (t1 - t0 + RECURRENT_CKPT - 1) / RECURRENT_CKPT;
  const double *bonus = s->read_before && io->bonus ? io->bonus + h * K : NULL;
  double *dbonus = job->dbonus_part ? job->dbonus_part + idx * K : NULL;
  size_t kvbytes = sizeof(double) * (size_t)KV;
  pair_ws w;
  if (ws_alloc_(&w, K, V, t1 - t0, 1) != 0) return -1;

  state_init_(s, io->h0, n, h, w.S);
  for (int64_t c = 0; c < nseg; c++) {
    memcpy(w.ckpt + c * KV, w.S, kvbytes);
    int64_t te = t0 + (c + 1) * RECURRENT_CKPT < t1 ? t0 + (c + 1) * RECURRENT_CKPT : t1;
    for (int64_t t = t0 + c * RECURRENT_CKPT; t < te; t++) {
      token_in x;
      token_load_(s, io, t, h, &x);
      decay_(s, &x, w.S, w.egk);
      write_(s, &x, w.S, w.r, w.u);
    }
  }

  if (io->dht)
    memcpy(w.dS, io->dht + (n * H + h) * KV, kvbytes);
  else
    memset(w.dS, 0, kvbytes);

  for (int64_t c = nseg - 1; c >= 0; c--) {
    int64_t ts = t0 + c * RECURRENT_CKPT;
    int64_t len = t1 - ts < RECURRENT_CKPT ? t1 - ts : RECURRENT_CKPT;
    memcpy(w.seg, w.ckpt + c * KV, kvbytes);
    for (int64_t i = 0; i < len; i++) {
      token_in x;
      token_load_(s, io, ts + i, h, &x);
      memcpy(w.seg + (i + 1) * KV, w.seg + i * KV, kvbytes);
      decay_(s, &x, w.seg + (i + 1) * KV, w.egk);
      write_(s, &x, w.seg + (i + 1) * KV, w.r, w.u);
    }
    for (int64_t i = len - 1; i >= 0; i--) {
      int64_t t = ts + i, th = t * H + h;
      token_in x;
      double gbeta;
      token_load_(s, io, t, h, &x);
      backward_token_(s, &x, bonus, w.seg + i * KV, w.seg + (i + 1) * KV, &w, &gbeta,
                      dbonus);
      if (s->delta && !io->p)
        for (int64_t d = 0; d < K; d++) w.gk[d] += w.gp[d]; /* p is k: both uses */
      store_(io->dq, th * K, w.gq, K);
      store_(io->dk, th * K, w.gk, K);
      store_(io->dv, th * V, w.gv, V);
      if (s->delta && io->p) store_(io->dp, th * K, w.gp, K);
      if (s->decay == FLA_CORE_DECAY_SCALAR && io->dg) io->dg[th] = w.gg[0];
      if (s->decay == FLA_CORE_DECAY_KEY) store_(io->dg, th * K, w.gg, K);
      if (s->delta && io->dbeta) io->dbeta[th] = gbeta;
    }
  }

  store_(io->dh0, (n * H + h) * KV, w.dS, KV);
  ws_free_(&w);
  return 0;
}

int fla_cpu_recurrent_backward(const fla_core_spec *s, fla_core_f64 *io) {
  if (!s || !io) return -1;
  int64_t N = s->N, H = s->H, K = s->K;
  int use_bonus = s->read_before && io->bonus;

  FLA_CORE_ZERO_GRADS(s, io, double);

  /* Each pair gets its own dbonus slot; summed by head afterwards in a fixed
  ** order, so the result does not depend on the thread count. */
  recurrent_job job = {.s = s, .io = io, .dbonus_part = NULL};
  if (use_bonus && io->dbonus) {
    job.dbonus_part = calloc((size_t)(N * H * K > 0 ? N * H * K : 1), sizeof(double));
    if (!job.dbonus_part) return -1;
  }
  int rc = fla_parallel_for(s->nthreads, N * H, backward_pair_, &job);
  if (rc == 0 && job.dbonus_part)
    for (int64_t n = 0; n < N; n++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t d = 0; d < K; d++)
          io->dbonus[h * K + d] += job.dbonus_part[(n * H + h) * K + d];
  free(job.dbonus_part);
  return rc != 0 ? -1 : 0;
}
