/*
** chunk.c -- the chunkwise-parallel algorithm in float32 (fla's "chunk" mode,
** fla-notes.md sections 2.1-2.5) for the core recurrence of cpu.h.
**
** Each (sequence, head) pair walks its chunks of C = s->chunk tokens (the last
** one of a sequence may be partial) carrying the K x V state S0 that enters
** the chunk. Per chunk, rows i = 0..c-1:
**
**   gamma = chunk-local inclusive cumsum of the log gates (c x K per key, one
**           per row for a scalar gate, 0 without decay), gamma_L its last row;
**   gx    = gamma (read after) or gamma - g (read before: gx_i = gamma_{i-1});
**   G(X, gx, Y, gy) = the gated pair product of gated_product.h.
**
** Decay family (plain write, values Vc = V):
**   A   = G(Q, gx, K, gamma; j <= i, or j < i when reading before)
**   O   = scale (Qg S0 + A Vc)        Qg = Q .* exp(gx)
**         [read before: O_i += scale (sum_d q_id bonus_d k_id) v_i]
**   S_L = exp(gamma_L) .* S0 + Kd^T Vc    Kd = K .* exp(gamma_L - gamma)
**
** WY family (delta write, probe P = p or k):
**   Lg  = G(P, gamma, K, gamma; j < i),  Lb = diag(beta) Lg
**   W   = (I + Lb)^-1 diag(beta) Pg       Pg = P .* exp(gamma)
**   U   = (I + Lb)^-1 diag(beta) V
**   Vc  = Vn = U - W S0   (the values the delta rule writes), then O and S_L
**         as above.
**
** The backward first sweeps forward storing every chunk's entering state, then
** runs chunks last to first with dS = the gradient of the state leaving the
** chunk, recomputing the chunk's forward quantities from its S0. Products are
** cblas_sgemm / cblas_strsm on chunk tiles; BLAS itself runs on one thread
** and the pairs run in parallel (fla_parallel_for). Gates are cumulated in
** double; the gate factors of the G products are prepared once per chunk and
** shared by A and the WY matrix (gated_product.h); elementwise passes use the
** vector kernels of gated_product.c.
*/
#include "internal.h"
#include "cpu/cpu.h"
#include "cpu/gated_product.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void openblas_set_num_threads(int);

/* BLAS runs single-threaded: the parallelism is over (sequence, head) pairs,
** and a threaded sgemm on 64-row tiles inside each would oversubscribe. */
static pthread_once_t blas_once_ = PTHREAD_ONCE_INIT;
static void blas_single_thread_(void) { openblas_set_num_threads(1); }

typedef struct {
  const fla_core_spec *s;
  fla_core_f32 *io;
  double *dbonus_part; /* [N*H, K]: one slot per pair, summed by head afterwards */
} chunk_job;

/* One chunk of one pair: pointers to its row 0 and the row strides. */
typedef struct {
  int64_t c;                  /* rows */
  const float *q, *k, *v, *p; /* q, k, p: stride ldk; v: stride ldv (p == k without probe) */
  const float *g;             /* stride ldg; NULL without decay */
  const float *beta;          /* stride H */
  const float *d_o;           /* stride lddo (a zero tile when there is no d_o) */
  int64_t ldk, ldv, ldg, ldb, lddo;
} chunk_in;

/* Scratch of one pair: one float and one double allocation, carved up. */
typedef struct {
  int64_t C, K, V, kg; /* kg: gate columns, K per key, else 1 */
  int decay, delta, rb;
  float scale;
  const float *bonus;  /* K or NULL */
  /* forward quantities of the current chunk */
  double *gam, *gx;    /* C x kg; gx == gam when reading after */
  float *egx, *ekd, *egam; /* C x kg: exp(gx), exp(gamma_L - gamma), exp(gamma) */
  float *eL;           /* kg: exp(gamma_L) */
  float *Qg, *Kd, *Pg, *W; /* C x K */
  float *U, *Vn;       /* C x V */
  float *A, *Lg, *Lb;  /* C x C */
  float *bon;          /* C: sum_d q_id bonus_d k_id */
  float *S;            /* K x V, or NT x K x V: the states entering each chunk */
  fla_gp_gates gA, gL; /* gate factors of G(., gx, K, gamma) and G(., gamma, K, gamma) */
  const fla_gp_gates *pL; /* &gA when reading after (same gates), else &gL */
  float *gmA, *gmL;    /* their memory */
  float *gpw;          /* gated-product scratch */
  /* backward */
  float *dS, *dS0;     /* K x V */
  float *dVc, *Dv, *dV, *zero; /* C x V */
  float *dA, *dL;      /* C x C */
  float *dQg, *dKd, *Dw, *dXg, *dYg, *dQ, *dK, *dP; /* C x K */
  double *dgam, *dgx;  /* C x kg */
  double *dgL;         /* kg */
  double *dbeta;       /* C */
  float *fmem;
  double *dmem;
} pair_ws;

static void ws_free_(pair_ws *w) {
  free(w->fmem);
  free(w->dmem);
}

/* nstates: how many K x V states to keep (1 forward, NT backward). */
static int ws_alloc_(pair_ws *w, const fla_core_spec *s, const float *bonus, int64_t nstates,
                     int with_backward) {
  int64_t C = s->chunk, K = s->K, V = s->V, KV = K * V;
  int64_t kg = s->decay == FLA_CORE_DECAY_KEY ? K : 1;
  memset(w, 0, sizeof *w);
  w->C = C, w->K = K, w->V = V, w->kg = kg;
  w->decay = s->decay, w->delta = s->delta, w->rb = s->read_before;
  w->scale = (float)s->scale;
  w->bonus = bonus;
  int64_t gpn = fla_gp_work_floats(C, K), gmn = fla_gp_gates_floats(C, K);
  int64_t nf = 3 * C * kg + kg + 4 * C * K + 2 * C * V + 3 * C * C + C + nstates * KV + gpn +
               2 * gmn;
  int64_t nd = 2 * C * kg;
  if (with_backward) {
    nf += 2 * KV + 4 * C * V + 2 * C * C + 8 * C * K;
    nd += 2 * C * kg + kg + C;
  }
  w->fmem = malloc(sizeof(float) * (size_t)nf);
  w->dmem = malloc(sizeof(double) * (size_t)nd);
  if (!w->fmem || !w->dmem) {
    ws_free_(w);
    return -1;
  }
  float *f = w->fmem;
  double *d = w->dmem;
  w->gam = d;   d += C * kg;
  w->gx = w->rb ? d : w->gam;
  d += C * kg;
  w->egx = f;   f += C * kg;
  w->ekd = f;   f += C * kg;
  w->egam = f;  f += C * kg;
  w->eL = f;    f += kg;
  w->Qg = f;    f += C * K;
  w->Kd = f;    f += C * K;
  w->Pg = f;    f += C * K;
  w->W = f;     f += C * K;
  w->U = f;     f += C * V;
  w->Vn = f;    f += C * V;
  w->A = f;     f += C * C;
  w->Lg = f;    f += C * C;
  w->Lb = f;    f += C * C;
  w->bon = f;   f += C;
  w->S = f;     f += nstates * KV;
  w->gpw = f;   f += gpn;
  w->gmA = f;   f += gmn;
  w->gmL = f;   f += gmn;
  w->pL = w->rb ? &w->gL : &w->gA;
  memset(w->Lb, 0, sizeof(float) * (size_t)(C * C)); /* only its strictly lower part is written */
  if (!w->rb) w->egx = w->egam; /* gx == gamma */
  if (with_backward) {
    w->dS = f;   f += KV;
    w->dS0 = f;  f += KV;
    w->dVc = f;  f += C * V;
    w->Dv = f;   f += C * V;
    w->dV = f;   f += C * V;
    w->zero = f; f += C * V;
    w->dA = f;   f += C * C;
    w->dL = f;   f += C * C;
    w->dQg = f;  f += C * K;
    w->dKd = f;  f += C * K;
    w->Dw = f;   f += C * K;
    w->dXg = f;  f += C * K;
    w->dYg = f;  f += C * K;
    w->dQ = f;   f += C * K;
    w->dK = f;   f += C * K;
    w->dP = f;   f += C * K;
    w->dgam = d; d += C * kg;
    w->dgx = w->rb ? d : w->dgam;
    d += C * kg;
    w->dgL = d;  d += kg;
    w->dbeta = d;
    memset(w->zero, 0, sizeof(float) * (size_t)(C * V));
  }
  return 0;
}

/* The tensors of chunk rows t .. t+c-1 (global token indices) of head h. */
static chunk_in chunk_in_(const fla_core_spec *s, const fla_core_f32 *io, const pair_ws *w,
                          int64_t h, int64_t t, int64_t c) {
  int64_t H = s->H, K = s->K, V = s->V;
  chunk_in x;
  x.c = c;
  x.ldk = H * K, x.ldv = H * V, x.ldb = H;
  x.q = io->q + t * H * K + h * K;
  x.k = io->k + t * H * K + h * K;
  x.p = io->p ? io->p + t * H * K + h * K : x.k;
  x.v = io->v + t * H * V + h * V;
  x.beta = io->beta ? io->beta + t * H + h : NULL;
  x.g = NULL, x.ldg = 0;
  if (s->decay == FLA_CORE_DECAY_SCALAR) x.g = io->g + t * H + h, x.ldg = H;
  if (s->decay == FLA_CORE_DECAY_KEY) x.g = io->g + t * H * K + h * K, x.ldg = H * K;
  if (io->d_o)
    x.d_o = io->d_o + t * H * V + h * V, x.lddo = H * V;
  else
    x.d_o = w->zero, x.lddo = V;
  return x;
}

/* ------------------------------------------------------------------------ */
/* Chunk forward pieces                                                      */

/* gamma_i = sum_{r <= i} g_r (double);  gx_i = gamma_{i-1} (gx_0 = 0) when
** reading before;  the exp factors exp(gx), exp(gamma_L - gamma), exp(gamma),
** exp(gamma_L). Without decay gamma = 0. */
static void chunk_gates_(pair_ws *w, const chunk_in *x) {
  int64_t c = x->c, kg = w->kg;
  for (int64_t i = 0; i < c; i++) {
    double *gi = w->gam + i * kg;
    const double *prev = i > 0 ? gi - kg : NULL;
    if (w->rb) {
      if (prev)
        memcpy(w->gx + i * kg, prev, sizeof(double) * (size_t)kg);
      else
        memset(w->gx, 0, sizeof(double) * (size_t)kg);
    }
    if (x->g)
      fla_vaddf(gi, prev, x->g + i * x->ldg, kg);
    else
      memset(gi, 0, sizeof(double) * (size_t)kg);
  }
  const double *gL = w->gam + (c - 1) * kg;
  if (kg == 1) {
    for (int64_t i = 0; i < c; i++) w->ekd[i] = expf((float)(gL[0] - w->gam[i]));
  } else {
    for (int64_t i = 0; i < c; i++) fla_vexp_diff(w->ekd + i * kg, gL, w->gam + i * kg, kg);
  }
  fla_vexp_diff(w->egam, w->gam, NULL, c * kg);
  if (w->rb) fla_vexp_diff(w->egx, w->gx, NULL, c * kg);
  fla_vexp_diff(w->eL, gL, NULL, kg);
}

/* Y = X .* e (e: c x kg, one factor per row when kg == 1). */
static void gate_rows_(float *Y, const float *X, int64_t ldx, const float *e, int64_t c,
                       int64_t K, int64_t kg) {
  for (int64_t i = 0; i < c; i++) {
    if (kg == 1)
      fla_vscale(Y + i * K, X + i * ldx, e[i], K);
    else
      fla_vmul(Y + i * K, X + i * ldx, e + i * K, K);
  }
}

/* Y += X .* e (e as in gate_rows_; Y and X have row stride K). */
static void gate_rows_add_(float *Y, const float *X, const float *e, int64_t c, int64_t K,
                           int64_t kg) {
  for (int64_t i = 0; i < c; i++) {
    if (kg == 1)
      fla_vaxpy(Y + i * K, e[i], X + i * K, K);
    else
      fla_vmuladd(Y + i * K, X + i * K, e + i * K, K);
  }
}

/* acc += sign * X .* Y per gate column: (i, d) when kg == K, row sums when kg == 1. */
static void rowdot_acc_(double *acc, int64_t kg, int64_t c, int64_t K, const float *X,
                        int64_t ldx, const float *Y, int64_t ldy, double sign) {
  for (int64_t i = 0; i < c; i++) {
    if (kg == 1)
      acc[i] += sign * fla_vdot(X + i * ldx, Y + i * ldy, K);
    else
      fla_vprodacc(acc + i * K, sign, X + i * ldx, Y + i * ldy, K);
  }
}

/* WY factors (delta write):
**   Lg = G(P, gamma, K, gamma; j < i),  Lb = diag(beta) Lg
**   W  = (I + Lb)^-1 diag(beta) Pg,  U = (I + Lb)^-1 diag(beta) V
** (I + Lb) is unit lower triangular: strsm with a unit diagonal reads only the
** strictly lower part of Lb. */
static void chunk_wy_(pair_ws *w, const chunk_in *x) {
  int64_t c = x->c, C = w->C, K = w->K, V = w->V;
  fla_gp_forward(w->pL, 1, x->p, x->ldk, w->Lg, C, w->gpw);
  for (int64_t i = 0; i < c; i++) {
    float b = x->beta[i * x->ldb];
    fla_vscale(w->Lb + i * C, w->Lg + i * C, b, i);
    fla_vscale(w->W + i * K, w->Pg + i * K, b, K);
    fla_vscale(w->U + i * V, x->v + i * x->ldv, b, V);
  }
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, (int)c, (int)K, 1.0f,
              w->Lb, (int)C, w->W, (int)K);
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, (int)c, (int)V, 1.0f,
              w->Lb, (int)C, w->U, (int)V);
}

/* Vn = U - W S0. */
static void chunk_vnew_(pair_ws *w, int64_t c, const float *S0) {
  memcpy(w->Vn, w->U, sizeof(float) * (size_t)(c * w->V));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c, (int)w->V, (int)w->K, -1.0f,
              w->W, (int)w->K, S0, (int)w->V, 1.0f, w->Vn, (int)w->V);
}

/* Everything a chunk needs before its output and state: gates, gated inputs,
** (with_A) the intra-chunk scores A and Qg, (delta) the WY factors and Vn.
** Returns Vc and its row stride in *Vc, *ldvc. */
static void chunk_prepare_(pair_ws *w, const chunk_in *x, const float *S0, int with_A,
                           const float **Vc, int64_t *ldvc) {
  int64_t c = x->c, K = w->K;
  chunk_gates_(w, x);
  gate_rows_(w->Kd, x->k, x->ldk, w->ekd, c, K, w->kg);
  /* gx_i == gamma_{i-rb} exactly, and dgx joins dgamma in bwd_gates_ */
  if (with_A || (w->delta && !w->rb))
    fla_gp_prepare(&w->gA, w->decay, c, K, w->gx, w->gam, w->rb, x->k, x->ldk, w->gmA);
  if (w->delta && w->rb)
    fla_gp_prepare(&w->gL, w->decay, c, K, w->gam, w->gam, 0, x->k, x->ldk, w->gmL);
  if (with_A) {
    gate_rows_(w->Qg, x->q, x->ldk, w->egx, c, K, w->kg);
    fla_gp_forward(&w->gA, w->rb, x->q, x->ldk, w->A, w->C, w->gpw);
    if (w->rb && w->bonus)
      for (int64_t i = 0; i < c; i++) {
        double t = 0;
        for (int64_t d = 0; d < K; d++)
          t += (double)x->q[i * x->ldk + d] * w->bonus[d] * x->k[i * x->ldk + d];
        w->bon[i] = (float)t;
      }
  }
  if (w->delta) {
    gate_rows_(w->Pg, x->p, x->ldk, w->egam, c, K, w->kg);
    chunk_wy_(w, x);
    chunk_vnew_(w, c, S0);
    *Vc = w->Vn, *ldvc = w->V;
  } else {
    *Vc = x->v, *ldvc = x->ldv;
  }
}

/* O = scale (Qg S0 + A Vc);  read before: O_i += scale bon_i v_i. */
static void chunk_output_(pair_ws *w, const chunk_in *x, const float *S0, const float *Vc,
                          int64_t ldvc, float *o, int64_t ldo) {
  int64_t c = x->c, K = w->K, V = w->V;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c, (int)V, (int)K, w->scale, w->Qg,
              (int)K, S0, (int)V, 0.0f, o, (int)ldo);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c, (int)V, (int)c, w->scale, w->A,
              (int)w->C, Vc, (int)ldvc, 1.0f, o, (int)ldo);
  if (w->rb && w->bonus)
    for (int64_t i = 0; i < c; i++)
      fla_vaxpy(o + i * ldo, w->scale * w->bon[i], x->v + i * x->ldv, V);
}

/* S = exp(gamma_L) .* S (row-wise per key) + Kd^T Vc, in place. */
static void chunk_state_(pair_ws *w, int64_t c, const float *Vc, int64_t ldvc, float *S) {
  int64_t K = w->K, V = w->V;
  for (int64_t d = 0; d < K; d++) fla_vscale(S + d * V, S + d * V, w->eL[w->kg == 1 ? 0 : d], V);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)V, (int)c, 1.0f, w->Kd,
              (int)K, Vc, (int)ldvc, 1.0f, S, (int)V);
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */

static void state_load_(const float *src, float *S, int64_t KV) {
  if (src)
    memcpy(S, src, sizeof(float) * (size_t)KV);
  else
    memset(S, 0, sizeof(float) * (size_t)KV);
}

static int forward_pair_(void *arg, int64_t idx) {
  const chunk_job *job = arg;
  const fla_core_spec *s = job->s;
  fla_core_f32 *io = job->io;
  int64_t H = s->H, V = s->V, KV = s->K * s->V, C = s->chunk;
  int64_t n = idx / H, h = idx % H;
  int64_t t0 = s->cu[n], t1 = s->cu[n + 1];
  pair_ws w;
  if (ws_alloc_(&w, s, io->bonus ? io->bonus + h * s->K : NULL, 1, 0) != 0) return -1;
  state_load_(io->h0 ? io->h0 + idx * KV : NULL, w.S, KV);
  for (int64_t t = t0; t < t1; t += C) {
    chunk_in x = chunk_in_(s, io, &w, h, t, t1 - t < C ? t1 - t : C);
    const float *Vc;
    int64_t ldvc;
    chunk_prepare_(&w, &x, w.S, io->o != NULL, &Vc, &ldvc);
    if (io->o) chunk_output_(&w, &x, w.S, Vc, ldvc, io->o + t * H * V + h * V, H * V);
    chunk_state_(&w, x.c, Vc, ldvc, w.S);
  }
  if (io->ht) memcpy(io->ht + idx * KV, w.S, sizeof(float) * (size_t)KV);
  ws_free_(&w);
  return 0;
}

static int spec_ok_(const fla_core_spec *s, const fla_core_f32 *io) {
  if (!s || !io || !io->q || !io->k || !io->v || !s->cu) return 0;
  if (s->chunk > FLA_GP_BC * FLA_GP_MAXB) return 0;
  if (s->chunk < 1 || s->K < 1 || s->V < 1 || s->N < 0 || s->H < 1) return 0;
  if (s->decay != FLA_CORE_DECAY_NONE && !io->g) return 0;
  if (s->delta && !io->beta) return 0;
  return 1;
}

int fla_cpu_chunk_forward(const fla_core_spec *s, fla_core_f32 *io) {
  if (!spec_ok_(s, io)) return -1;
  pthread_once(&blas_once_, blas_single_thread_);
  chunk_job job = {.s = s, .io = io, .dbonus_part = NULL};
  return fla_parallel_for(s->nthreads, s->N * s->H, forward_pair_, &job) != 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Backward pieces (per chunk, dS = gradient of the state leaving it)         */

/* dVc = scale A^T dO + Kd dS   (gradient of the values the chunk writes). */
static void bwd_values_(pair_ws *w, const chunk_in *x) {
  int64_t c = x->c, K = w->K, V = w->V;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, (int)V, (int)c, w->scale, w->A,
              (int)w->C, x->d_o, (int)x->lddo, 0.0f, w->dVc, (int)V);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c, (int)V, (int)K, 1.0f, w->Kd,
              (int)K, w->dS, (int)V, 1.0f, w->dVc, (int)V);
}

/* Through the output O = scale (Qg S0 + A Vc):
**   dA  = scale dO Vc^T (masked)  -> dQ = dX, dK = dY, dgx, dgamma from G
**   dQg = scale dO S0^T           -> dQ += dQg .* exp(gx),  dgx += dQg .* Qg */
static void bwd_output_(pair_ws *w, const chunk_in *x, const float *S0, const float *Vc,
                        int64_t ldvc) {
  int64_t c = x->c, C = w->C, K = w->K, V = w->V;
  int gated = w->decay != FLA_CORE_DECAY_NONE;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)c, (int)V, w->scale, x->d_o,
              (int)x->lddo, Vc, (int)ldvc, 0.0f, w->dA, (int)C);
  fla_gp_backward(&w->gA, w->rb, x->q, x->ldk, w->A, C, w->dA, C, w->dQ, w->dK, w->dgx, w->dgam,
                  w->gpw);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)K, (int)V, w->scale, x->d_o,
              (int)x->lddo, S0, (int)V, 0.0f, w->dQg, (int)K);
  gate_rows_add_(w->dQ, w->dQg, w->egx, c, K, w->kg);
  if (gated) rowdot_acc_(w->dgx, w->kg, c, K, w->dQg, K, w->Qg, K, 1.0);
}

/* Through the state S_L = exp(gamma_L) .* S0 + Kd^T Vc:
**   dKd = Vc dS^T -> dK += dKd .* exp(gamma_L - gamma),
**                    dgamma_i -= dKd_i .* Kd_i,  dgamma_L += sum_i dKd_i .* Kd_i
**   dgamma_L += exp(gamma_L) .* rowsum(S0 .* dS)
**   dS0 = scale Qg^T dO + exp(gamma_L) .* dS   [delta: - W^T dVc]  */
static void bwd_state_(pair_ws *w, const chunk_in *x, const float *S0, const float *Vc,
                       int64_t ldvc) {
  int64_t c = x->c, K = w->K, V = w->V, kg = w->kg;
  int gated = w->decay != FLA_CORE_DECAY_NONE;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)K, (int)V, 1.0f, Vc,
              (int)ldvc, w->dS, (int)V, 0.0f, w->dKd, (int)K);
  gate_rows_add_(w->dK, w->dKd, w->ekd, c, K, kg);
  if (gated) {
    /* t = dKd .* Kd: dgamma_i -= t_i, dgamma_L += sum_i t_i */
    for (int64_t d = 0; d < kg; d++) w->dgL[d] = 0;
    rowdot_acc_(w->dgam, kg, c, K, w->dKd, K, w->Kd, K, -1.0);
    for (int64_t i = 0; i < c; i++) {
      if (kg == 1)
        w->dgL[0] += fla_vdot(w->dKd + i * K, w->Kd + i * K, K);
      else
        fla_vprodacc(w->dgL, 1.0, w->dKd + i * K, w->Kd + i * K, K);
    }
    for (int64_t d = 0; d < K; d++) {
      int64_t e = kg == 1 ? 0 : d;
      w->dgL[e] += (double)w->eL[e] * fla_vdot(S0 + d * V, w->dS + d * V, V);
    }
  }
  for (int64_t d = 0; d < K; d++)
    fla_vscale(w->dS0 + d * V, w->dS + d * V, w->eL[kg == 1 ? 0 : d], V);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)V, (int)c, w->scale, w->Qg,
              (int)K, x->d_o, (int)x->lddo, 1.0f, w->dS0, (int)V);
  if (w->delta)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)V, (int)c, -1.0f, w->W,
                (int)K, w->dVc, (int)V, 1.0f, w->dS0, (int)V);
}

/* Read-before bonus O_i += scale (sum_d q_id u_d k_id) v_i, with
** ds_i = scale dO_i . v_i:
**   dq_id += ds_i u_d k_id,  dk_id += ds_i u_d q_id,  du_d += sum_i ds_i q_id k_id,
**   dv_i += scale bon_i dO_i  (into dV, the raw-v gradient). */
static void bwd_bonus_(pair_ws *w, const chunk_in *x, double *dbonus) {
  int64_t c = x->c, K = w->K, V = w->V;
  const float *u = w->bonus;
  for (int64_t i = 0; i < c; i++) {
    const float *dO = x->d_o + i * x->lddo, *v = x->v + i * x->ldv;
    const float *q = x->q + i * x->ldk, *k = x->k + i * x->ldk;
    float ds = (float)(w->scale * fla_vdot(dO, v, V));
    for (int64_t d = 0; d < K; d++) {
      float uk = u[d] * k[d], uq = u[d] * q[d];
      w->dQ[i * K + d] += ds * uk;
      w->dK[i * K + d] += ds * uq;
      if (dbonus) dbonus[d] += (double)ds * q[d] * k[d];
    }
    fla_vaxpy(w->dV + i * V, w->scale * w->bon[i], dO, V);
  }
}

/* Through the WY factors, given dU = dVc (Vn = U - W S0):
**   dW = -dVc S0^T;  Dv = T^T dU, Dw = T^T dW  (T = (I + Lb)^-1, strsm)
**   dv += beta .* Dv;  dPg = beta .* Dw -> dP += dPg .* exp(gamma), dgamma += dPg .* Pg
**   dbeta_i = Dv_i . V_i + Dw_i . Pg_i
**   dLb = -(T^T dT T^T) = -(Dv U^T + Dw W^T), strictly lower
**   dbeta_i += sum_j dLb_ij Lg_ij;  dLg = diag(beta) dLb -> backward of G(P, K). */
static void bwd_wy_(pair_ws *w, const chunk_in *x, const float *S0) {
  int64_t c = x->c, C = w->C, K = w->K, V = w->V;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)K, (int)V, -1.0f, w->dVc,
              (int)V, S0, (int)V, 0.0f, w->Dw, (int)K);
  memcpy(w->Dv, w->dVc, sizeof(float) * (size_t)(c * V));
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasUnit, (int)c, (int)K, 1.0f,
              w->Lb, (int)C, w->Dw, (int)K);
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasUnit, (int)c, (int)V, 1.0f,
              w->Lb, (int)C, w->Dv, (int)V);
  for (int64_t i = 0; i < c; i++) {
    float b = x->beta[i * x->ldb];
    w->dbeta[i] = fla_vdot(w->Dv + i * V, x->v + i * x->ldv, V) +
                  fla_vdot(w->Dw + i * K, w->Pg + i * K, K);
    fla_vaxpy(w->dV + i * V, b, w->Dv + i * V, V);
    fla_vscale(w->dXg + i * K, w->Dw + i * K, b, K); /* dPg */
  }
  gate_rows_add_(w->dP, w->dXg, w->egam, c, K, w->kg);
  if (w->decay != FLA_CORE_DECAY_NONE) rowdot_acc_(w->dgam, w->kg, c, K, w->dXg, K, w->Pg, K, 1.0);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)c, (int)V, -1.0f, w->Dv,
              (int)V, w->U, (int)V, 0.0f, w->dL, (int)C);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)c, (int)K, -1.0f, w->Dw,
              (int)K, w->W, (int)K, 1.0f, w->dL, (int)C);
  for (int64_t i = 0; i < c; i++) {
    w->dbeta[i] += fla_vdot(w->dL + i * C, w->Lg + i * C, i);
    fla_vscale(w->dL + i * C, w->dL + i * C, x->beta[i * x->ldb], i);
  }
  fla_gp_backward(w->pL, 1, x->p, x->ldk, w->Lg, C, w->dL, C, w->dXg, w->dYg, w->dgam, w->dgam,
                  w->gpw);
  fla_vaxpy(w->dP, 1.0f, w->dXg, c * K);
  fla_vaxpy(w->dK, 1.0f, w->dYg, c * K);
}

/* The gate gradient of the chunk's tokens. With gx_i = gamma_{i-1} when
** reading before, dgamma_{i-1} += dgx_i first; then dgamma_L += dgL and
**   dg_t = sum_{i >= t in the chunk} dgamma_i  (in place, into dgam). */
static void bwd_gates_(pair_ws *w, int64_t c) {
  int64_t kg = w->kg;
  if (w->rb)
    for (int64_t i = 1; i < c; i++)
      for (int64_t d = 0; d < kg; d++) w->dgam[(i - 1) * kg + d] += w->dgx[i * kg + d];
  for (int64_t d = 0; d < kg; d++) w->dgam[(c - 1) * kg + d] += w->dgL[d];
  for (int64_t i = c - 2; i >= 0; i--)
    for (int64_t d = 0; d < kg; d++) w->dgam[i * kg + d] += w->dgam[(i + 1) * kg + d];
}

/* Writes the chunk's token gradients (rows t .. t+c-1 of head h). */
static void bwd_store_(const fla_core_spec *s, fla_core_f32 *io, pair_ws *w, int64_t h,
                       int64_t t, int64_t c) {
  int64_t H = s->H, K = w->K, V = w->V;
  int p_is_k = s->delta && !io->p;
  for (int64_t i = 0; i < c; i++) {
    int64_t th = (t + i) * H + h;
    for (int64_t d = 0; d < K; d++) {
      if (io->dq) io->dq[th * K + d] = w->dQ[i * K + d];
      if (io->dk) io->dk[th * K + d] = w->dK[i * K + d] + (p_is_k ? w->dP[i * K + d] : 0.0f);
      if (io->dp && s->delta && io->p) io->dp[th * K + d] = w->dP[i * K + d];
    }
    if (io->dv) memcpy(io->dv + th * V, w->dV + i * V, sizeof(float) * (size_t)V);
    if (io->dg && s->decay == FLA_CORE_DECAY_SCALAR) io->dg[th] = (float)w->dgam[i];
    if (io->dg && s->decay == FLA_CORE_DECAY_KEY)
      for (int64_t d = 0; d < K; d++) io->dg[th * K + d] = (float)w->dgam[i * K + d];
    if (io->dbeta && s->delta) io->dbeta[th] = (float)w->dbeta[i];
  }
}

/*
** One pair: a forward sweep stores the state entering every chunk (w.S holds
** NT states), then chunks run last to first, each recomputing its forward
** quantities from its S0 and turning dS (state leaving) into dS0 (entering).
*/
static int backward_pair_(void *arg, int64_t idx) {
  const chunk_job *job = arg;
  const fla_core_spec *s = job->s;
  fla_core_f32 *io = job->io;
  int64_t H = s->H, K = s->K, V = s->V, KV = K * V, C = s->chunk;
  int64_t n = idx / H, h = idx % H;
  int64_t t0 = s->cu[n], t1 = s->cu[n + 1];
  int64_t nt = (t1 - t0 + C - 1) / C;
  int gated = s->decay != FLA_CORE_DECAY_NONE;
  const float *bonus = s->read_before && io->bonus ? io->bonus + h * K : NULL;
  double *dbonus = job->dbonus_part ? job->dbonus_part + idx * K : NULL;
  size_t kvbytes = sizeof(float) * (size_t)KV;
  pair_ws w;
  if (ws_alloc_(&w, s, bonus, nt > 0 ? nt : 1, 1) != 0) return -1;

  state_load_(io->h0 ? io->h0 + idx * KV : NULL, w.S, KV);
  for (int64_t ci = 0; ci + 1 < nt; ci++) {
    int64_t t = t0 + ci * C;
    chunk_in x = chunk_in_(s, io, &w, h, t, t1 - t < C ? t1 - t : C);
    const float *Vc;
    int64_t ldvc;
    chunk_prepare_(&w, &x, w.S + ci * KV, 0, &Vc, &ldvc);
    memcpy(w.S + (ci + 1) * KV, w.S + ci * KV, kvbytes);
    chunk_state_(&w, x.c, Vc, ldvc, w.S + (ci + 1) * KV);
  }

  state_load_(io->dht ? io->dht + idx * KV : NULL, w.dS, KV);
  for (int64_t ci = nt - 1; ci >= 0; ci--) {
    int64_t t = t0 + ci * C, c = t1 - t < C ? t1 - t : C;
    const float *S0 = w.S + ci * KV;
    chunk_in x = chunk_in_(s, io, &w, h, t, c);
    const float *Vc;
    int64_t ldvc;
    chunk_prepare_(&w, &x, S0, 1, &Vc, &ldvc);
    memset(w.dV, 0, sizeof(float) * (size_t)(c * V));
    memset(w.dP, 0, sizeof(float) * (size_t)(c * K));
    if (gated) {
      memset(w.dgam, 0, sizeof(double) * (size_t)(c * w.kg));
      memset(w.dgx, 0, sizeof(double) * (size_t)(c * w.kg));
    }
    bwd_values_(&w, &x);
    bwd_output_(&w, &x, S0, Vc, ldvc);
    bwd_state_(&w, &x, S0, Vc, ldvc);
    if (bonus) bwd_bonus_(&w, &x, dbonus);
    if (s->delta) {
      bwd_wy_(&w, &x, S0);
    } else {
      fla_vaxpy(w.dV, 1.0f, w.dVc, c * V);
    }
    if (gated) bwd_gates_(&w, c);
    bwd_store_(s, io, &w, h, t, c);
    float *tmp = w.dS;
    w.dS = w.dS0, w.dS0 = tmp;
  }

  if (io->dh0) memcpy(io->dh0 + idx * KV, w.dS, kvbytes);
  ws_free_(&w);
  return 0;
}

int fla_cpu_chunk_backward(const fla_core_spec *s, fla_core_f32 *io) {
  if (!spec_ok_(s, io)) return -1;
  int64_t N = s->N, H = s->H, K = s->K;
  pthread_once(&blas_once_, blas_single_thread_);

  FLA_CORE_ZERO_GRADS(s, io, float);

  /* One dbonus slot per pair, summed by head afterwards in a fixed order, so
  ** the result does not depend on the thread count. */
  chunk_job job = {.s = s, .io = io, .dbonus_part = NULL};
  if (s->read_before && io->bonus && io->dbonus) {
    job.dbonus_part = calloc((size_t)(N * H * K > 0 ? N * H * K : 1), sizeof(double));
    if (!job.dbonus_part) return -1;
  }
  int rc = fla_parallel_for(s->nthreads, N * H, backward_pair_, &job);
  if (rc == 0 && job.dbonus_part)
    for (int64_t h = 0; h < H; h++)
      for (int64_t d = 0; d < K; d++) {
        double acc = 0;
        for (int64_t n = 0; n < N; n++) acc += job.dbonus_part[(n * H + h) * K + d];
        io->dbonus[h * K + d] = (float)acc;
      }
  free(job.dbonus_part);
  return rc != 0 ? -1 : 0;
}
