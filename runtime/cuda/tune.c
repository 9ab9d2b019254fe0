/*
** tune.c -- the tuner's run (fla_tune_run in tune.h): skip what the
** database knows, compile the rest in threads, check each against the CPU
** reference, time it, and commit every outcome as it comes.
*/
#include "cuda/tune.h"
#include "cuda/cuda_api.h"
#include "cuda/modcache.h"
#include "cuda/op_cuda.h"
#include "cuda/tune_pick.h"
#include "internal.h"
#include "testdata.h"
#include "tune_ctx.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK_TOL 5e-3         /* bf16 against the f64 recurrence, as tests/test_gpu_ops.c */
#define MAX_SETS 8             /* input copies that together exceed the L2 */
#define SLOW_FACTOR 1.5        /* after 3 runs this much slower than the best: stop */
#define FAR_FACTOR 3.0         /* one run this much slower than the best: stop */
#define CAND_BUDGET_MS 2000.0  /* timed milliseconds a candidate at most */
#define PRUNE_FACTOR 4.0       /* the recurrent default this much slower than the
                                  chunked best: its variants are not timed */

/* --------------------------------------------------------------- compile */

typedef struct {
  fla_tune_job *job;  /* the job of every item, or NULL: jobs[item / FLA_TUNE_MAX_CANDS] */
  fla_tune_job *jobs;
  const char *arch;
  const int *todo;
  int ntodo, next;
  int compiled;
  pthread_mutex_t mu;
} compile_work;

static void fail_(fla_tune_cand *c, fla_tunedb_outcome o, const char *what, const char *msg) {
  c->done = 1;
  c->outcome = o;
  c->time_ms = -1;
  snprintf(c->reason, sizeof c->reason, "%.40s: %.150s", what, msg);
  for (char *p = c->reason; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
}

static void *compile_thread_(void *arg) {
  compile_work *w = arg;
  fla_ctx *c = NULL;
  if (fla_ctx_create(FLA_BACKEND_CPU, &c) != FLA_OK) return NULL;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    int i = w->next < w->ntodo ? w->todo[w->next++] : -1;
    pthread_mutex_unlock(&w->mu);
    if (i < 0) break;
    fla_tune_job *job = w->job ? w->job : &w->jobs[i / FLA_TUNE_MAX_CANDS];
    fla_tune_cand *cd = &job->cand[w->job ? i : i % FLA_TUNE_MAX_CANDS];
    char *src = NULL;
    char names[FLA_STAGE_MAX_KERNELS][64];
    int nk = 0, cached = 0;
    void *cubin = NULL;
    size_t size = 0;
    fla_status st = fla_generate(c, cd->stage, &job->key, &cd->cfg, &src, names, &nk);
    if (st == FLA_OK)
      st = fla_modcache_get_or_compile(c, fla_stage_name(cd->stage), src, w->arch, NULL, 0, &cubin,
                                       &size, &cached);
    free(cubin);
    free(src);
    if (st == FLA_OK) {
      cd->compiled |= !cached;
      pthread_mutex_lock(&w->mu);
      w->compiled += !cached;
      pthread_mutex_unlock(&w->mu);
    } else {
      fail_(cd, FLA_TUNEDB_CAND_FAILED, "compile", fla_errmsg(c));
    }
  }
  fla_ctx_free(c);
  return NULL;
}

/* Compiles (or finds in the module cache) every candidate listed in todo
** (indices into job->cand, or with job NULL job * FLA_TUNE_MAX_CANDS +
** index into jobs). Returns how many were compiled now. */
static int compile_all_(fla_tune_job *job, fla_tune_job *jobs, const char *arch, const int *todo,
                        int ntodo, int threads) {
  compile_work w = {job, jobs, arch, todo, ntodo, 0, 0, PTHREAD_MUTEX_INITIALIZER};
  if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (threads > ntodo) threads = ntodo;
  if (threads < 1) threads = 1;
  pthread_t tid[64];
  int started = 0;
  for (int i = 1; i < threads && i < 64; i++)
    if (pthread_create(&tid[started], NULL, compile_thread_, &w) == 0) started++;
  compile_thread_(&w);  /* this thread too */
  for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
  pthread_mutex_destroy(&w.mu);
  return w.compiled;
}

/* ------------------------------------------------------------ the inputs */

/* The small check problem: inputs on both sides, the CPU reference. */
typedef struct {
  fla_op_config cfg;
  fla_testdata td;
  int have_td;
  fla_tensor *o_ref, *ht_ref;
  fla_arg dargs[12];
  int n;
} checker;

static void checker_free_(checker *ck) {
  for (int i = 0; i < ck->n; i++) fla_tensor_free(ck->dargs[i].tensor);
  fla_tensor_free(ck->o_ref), fla_tensor_free(ck->ht_ref);
  if (ck->have_td) fla_testdata_free(&ck->td);
  memset(ck, 0, sizeof *ck);
}

/* A device copy of host tensor t (same dtype and shape). */
static fla_status upload_(fla_ctx *g, fla_tensor *t, fla_tensor **out) {
  fla_status s = fla_tensor_new(g, fla_tensor_dtype(t), fla_tensor_ndim(t), fla_tensor_shape(t), out);
  if (s == FLA_OK)
    s = fla_tensor_copy_from(g, *out, fla_tensor_data(t), fla_tensor_dtype(t), fla_tensor_numel(t));
  return s;
}

/* Two sequences of 100 tokens (not a multiple of a chunk), two heads, the
** job's K and V; the reference is the CPU's float64 recurrence. */
static fla_status checker_make_(fla_ctx *g, fla_ctx *cpu, const fla_tune_job *job, checker *ck) {
  memset(ck, 0, sizeof *ck);
  ck->cfg = (fla_op_config){.B = 2, .T = 100, .H = 2, .K = job->shape.K, .V = job->shape.V};
  fla_status s = fla_testdata_make(cpu, job->r, &ck->cfg, 0, FLA_BF16, 0x7475u, &ck->td);
  if (s != FLA_OK) return fla_set_error(g, s, "tuner: check inputs: %s", fla_errmsg(cpu));
  ck->have_td = 1;
  fla_op_config rc = ck->cfg;
  rc.algo = FLA_ALGO_RECURRENT;
  fla_op *op = NULL;
  s = fla_op_bind(cpu, job->r, &rc, &op);
  if (s == FLA_OK) s = fla_tensor_new(cpu, FLA_F32, 4, fla_tensor_shape(ck->td.d_o), &ck->o_ref);
  if (s == FLA_OK) s = fla_tensor_new(cpu, FLA_F32, 4, fla_tensor_shape(ck->td.dht), &ck->ht_ref);
  if (s == FLA_OK) s = fla_op_forward(op, ck->td.args, ck->td.n, ck->o_ref, ck->ht_ref);
  fla_op_free(op);
  if (s != FLA_OK) return fla_set_error(g, s, "tuner: the CPU reference: %s", fla_errmsg(cpu));
  for (int i = 0; s == FLA_OK && i < ck->td.n; i++) {
    ck->dargs[i].name = ck->td.args[i].name;
    s = upload_(g, ck->td.args[i].tensor, &ck->dargs[i].tensor);
    ck->n = i + 1;
  }
  return s;
}

/* The timing problem: the job's shape, inputs in nsets copies. */
typedef struct {
  int nin, nsets;
  fla_arg sets[MAX_SETS][FLA_IR_MAX_INPUTS];
  fla_tensor *o, *ht;
  size_t o_bytes, ht_bytes;
} bench_in;

static void bench_free_(bench_in *b) {
  for (int s = 0; s < b->nsets; s++)
    for (int i = 0; i < b->nin; i++) fla_tensor_free(b->sets[s][i].tensor);
  fla_tensor_free(b->o), fla_tensor_free(b->ht);
  memset(b, 0, sizeof *b);
}

/* Values in each role's range (timing does not depend on them much). */
static float value_(uint64_t *seed, fla_ir_role role) {
  *seed ^= *seed << 13, *seed ^= *seed >> 7, *seed ^= *seed << 17;
  float u = (float)(*seed >> 40) * (1.0f / 16777216.0f);
  return role == FLA_ROLE_DECAY ? -0.01f - 0.05f * u
         : role == FLA_ROLE_RATE ? 0.2f + 0.6f * u
         : role == FLA_ROLE_BONUS ? 0.1f * u : 2.0f * u - 1.0f;
}

static fla_status bench_set_(fla_ctx *g, const fla_tune_job *job, uint64_t seed, fla_arg *args,
                             int64_t *bytes) {
  const fla_ir *ir = fla_recipe_ir(job->r);
  const fla_tune_shape *sh = &job->shape;
  fla_status s = FLA_OK;
  enum { BLOCK = 1 << 20 };
  uint16_t *blk = malloc(sizeof(uint16_t) * BLOCK);
  if (!blk) return fla_set_error(g, FLA_NOMEM, "tuner: out of memory");
  for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) {
    const fla_ir_input *in = &ir->inputs[i];
    int64_t shape[4] = {sh->B, sh->T, sh->H, in->layout == FLA_LAYOUT_BTHV ? sh->V : sh->K};
    int nd = in->layout == FLA_LAYOUT_BTH ? 3 : 4;
    if (in->layout == FLA_LAYOUT_HK) nd = 2, shape[0] = sh->H, shape[1] = sh->K;
    args[i].name = in->name;
    s = fla_tensor_new(g, FLA_BF16, nd, shape, &args[i].tensor);
    if (s != FLA_OK) break;
    int64_t n = fla_tensor_numel(args[i].tensor);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    if (!h) {
      s = fla_set_error(g, FLA_NOMEM, "tuner: out of memory for %lld inputs", (long long)n);
      break;
    }
    for (int64_t j = 0; j < BLOCK; j++) blk[j] = fla_f32_to_bf16(value_(&seed, in->role));
    for (int64_t j = 0; j < n; j += BLOCK)  /* one random block, repeated */
      memcpy(h + j, blk, sizeof(uint16_t) * (size_t)(n - j < BLOCK ? n - j : BLOCK));
    s = fla_tensor_copy_from(g, args[i].tensor, h, FLA_BF16, n);
    free(h);
    *bytes += 2 * n;
  }
  free(blk);
  return s;
}

static fla_status bench_make_(fla_ctx *g, const fla_tune_job *job, int64_t Ks, bench_in *b) {
  memset(b, 0, sizeof *b);
  const fla_ir *ir = fla_recipe_ir(job->r);
  const fla_tune_shape *sh = &job->shape;
  const fla_cuda_device_info *info = fla_cuda_ctx_info(g);
  b->nin = ir->num_inputs;
  int64_t bytes = 0, l2 = info && info->l2_bytes > 0 ? info->l2_bytes : 64 << 20;
  fla_status s = bench_set_(g, job, 88172645463325252ull, b->sets[0], &bytes);
  b->nsets = 1;
  /* copies until a run's inputs exceed twice the L2: each run reads cold data */
  while (s == FLA_OK && b->nsets < MAX_SETS && bytes * b->nsets < 2 * l2) {
    int64_t more = 0;
    s = bench_set_(g, job, 0x9e3779b97f4a7c15ull * (uint64_t)(b->nsets + 1), b->sets[b->nsets], &more);
    b->nsets++;
  }
  int64_t os[4] = {sh->B, sh->T, sh->H, sh->V}, hs[4] = {sh->B, sh->H, Ks, sh->V};
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_BF16, 4, os, &b->o);
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_F32, 4, hs, &b->ht);
  if (s == FLA_OK) {
    b->o_bytes = (size_t)fla_tensor_numel(b->o) * 2;
    b->ht_bytes = (size_t)fla_tensor_numel(b->ht) * 4;
  }
  return s;
}

/* ------------------------------------------------------------ candidates */

static fla_algo algo_of_(const fla_tune_cand *c) {
  return c->stage == FLA_STAGE_RECURRENT_FWD ? FLA_ALGO_RECURRENT : FLA_ALGO_CHUNK;
}

/* A forward of candidate c failed with status f: c fails with the message.
** FLA_OK when the context still works; when the failure broke it (an
** illegal address is sticky), FLA_ERROR: c is still recorded as failed, so
** that the resumed sweep, in a new process, does not run it again, and the
** sweep stops. */
static fla_status launch_failed_(fla_ctx *g, fla_tune_cand *c, fla_status f) {
  char keep[FLA_ERRMSG_MAX];
  snprintf(keep, sizeof keep, "%s", fla_errmsg(g));
  int alive = fla_cuda_sync(g, "tuner: after a failed candidate") == FLA_OK;
  fail_(c, FLA_TUNEDB_CAND_FAILED, alive ? "launch" : "launch (broke the CUDA context)", keep);
  if (alive) return FLA_OK;
  return fla_set_error(g, FLA_ERROR, "%s: %s (status %d); the CUDA context is unusable: run the "
                       "sweep again, it resumes after this candidate", fla_tune_cfg_str(&c->cfg,
                       (char[64]){0}, 64), keep, (int)f);
}

/* Runs candidate c at the check shape. FLA_OK with c->done set when it
** failed or was wrong; an error when the context broke. */
static fla_status check_cand_(fla_ctx *g, const fla_tune_job *job, checker *ck, fla_tune_cand *c) {
  fla_op_config oc = ck->cfg;
  oc.algo = algo_of_(c);
  fla_op *op = NULL;
  fla_tensor *o = NULL, *ht = NULL;
  float *go = NULL, *gh = NULL;
  fla_status s = fla_op_bind(g, job->r, &oc, &op);
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_BF16, 4, fla_tensor_shape(ck->td.d_o), &o);
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_F32, 4, fla_tensor_shape(ck->td.dht), &ht);
  if (s == FLA_OK) s = fla_tensor_fill(g, o, NAN);
  if (s == FLA_OK) s = fla_tensor_fill(g, ht, NAN);
  if (s != FLA_OK) goto done;  /* setup: not the candidate's fault */
  fla_status f = fla_op_forward(op, ck->dargs, ck->n, o, ht);
  if (f != FLA_OK) {
    s = launch_failed_(g, c, f);
    goto done;
  }
  int ran = fla_cuda_op_core_stage(op, FLA_BF16, 0, 1);
  if (ran != (int)c->stage) {
    fail_(c, FLA_TUNEDB_CAND_FAILED, "dispatch", ran >= 0 ? fla_stage_name((fla_stage)ran) : "?");
    goto done;
  }
  int64_t no = fla_tensor_numel(o), nh = fla_tensor_numel(ht);
  go = malloc(sizeof(float) * (size_t)no), gh = malloc(sizeof(float) * (size_t)nh);
  if (!go || !gh) {
    s = fla_set_error(g, FLA_NOMEM, "tuner: out of memory");
    goto done;
  }
  if ((s = fla_tensor_copy_to(g, o, go, FLA_F32, no)) != FLA_OK) goto done;
  if ((s = fla_tensor_copy_to(g, ht, gh, FLA_F32, nh)) != FLA_OK) goto done;
  const float *ro = fla_tensor_data(ck->o_ref), *rh = fla_tensor_data(ck->ht_ref);
  double no2 = 0, eo = 0, nh2 = 0, eh = 0;
  for (int64_t i = 0; i < no; i++) eo += ((double)go[i] - ro[i]) * (go[i] - ro[i]), no2 += (double)ro[i] * ro[i];
  for (int64_t i = 0; i < nh; i++) eh += ((double)gh[i] - rh[i]) * (gh[i] - rh[i]), nh2 += (double)rh[i] * rh[i];
  eo = no2 > 0 ? sqrt(eo / no2) : sqrt(eo);
  eh = nh2 > 0 ? sqrt(eh / nh2) : sqrt(eh);
  if (!(eo < CHECK_TOL) || !(eh < CHECK_TOL)) {  /* NaN fails too */
    char msg[96];
    snprintf(msg, sizeof msg, "o rel RMS %.2e, ht %.2e (tolerance %.0e)", eo, eh, CHECK_TOL);
    fail_(c, FLA_TUNEDB_CAND_WRONG, "check", msg);
  }
done:
  free(go), free(gh);
  fla_tensor_free(o), fla_tensor_free(ht);
  fla_op_free(op);
  return s;
}

static int cmp_float_(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static double median_(const float *t, int n) {
  float s[64];
  memcpy(s, t, sizeof(float) * (size_t)n);
  qsort(s, (size_t)n, sizeof s[0], cmp_float_);
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* Times candidate c at the job's shape (best_ms: the best of its stage so
** far, best_any: of either stage; -1 when none). Sets c->time_ms, or fails
** it. An error when the context broke. */
static fla_status time_cand_(fla_ctx *g, const fla_tune_job *job, bench_in *b, int runs,
                             double best_ms, double best_any, fla_tune_cand *c) {
  const fla_cuda_driver *d = fla_cuda_driver_api();
  fla_op_config oc = {.B = job->shape.B, .T = job->shape.T, .H = job->shape.H, .K = job->shape.K,
                      .V = job->shape.V, .algo = algo_of_(c)};
  fla_op *op = NULL;
  CUevent e0 = NULL, e1 = NULL;
  fla_status s = fla_op_bind(g, job->r, &oc, &op);
  if (s != FLA_OK) return s;
  /* the first call loads the module (and compiles the prep stages once) */
  fla_status f = fla_op_forward(op, b->sets[0], b->nin, b->o, b->ht);
  if (f != FLA_OK) {
    s = launch_failed_(g, c, f);
    fla_op_free(op);
    return s;
  }
  if (d->cuEventCreate(&e0, CU_EVENT_DEFAULT) != CUDA_SUCCESS ||
      d->cuEventCreate(&e1, CU_EVENT_DEFAULT) != CUDA_SUCCESS) {
    s = fla_set_error(g, FLA_ERROR, "tuner: cuEventCreate failed");
    goto done;
  }
  float t[64];
  double total = 0;
  int n = 0;
  if (runs > 64) runs = 64;
  for (int i = 0; i < runs; i++) {
    /* outputs reset outside the timing (synchronous memsets) */
    if ((s = fla_cuda_memset_d8(g, b->o->dptr, 0xff, b->o_bytes)) != FLA_OK) goto done;
    if ((s = fla_cuda_memset_d8(g, b->ht->dptr, 0xff, b->ht_bytes)) != FLA_OK) goto done;
    /* legacy-stream events: the context's blocking stream is ordered with them */
    d->cuEventRecord(e0, NULL);
    f = fla_op_forward(op, b->sets[i % b->nsets], b->nin, b->o, b->ht);
    d->cuEventRecord(e1, NULL);
    if (f != FLA_OK) {
      s = launch_failed_(g, c, f);
      goto done;
    }
    float ms = 0;
    if (d->cuEventSynchronize(e1) != CUDA_SUCCESS || d->cuEventElapsedTime(&ms, e0, e1) != CUDA_SUCCESS) {
      s = fla_set_error(g, FLA_ERROR, "tuner: timing events failed");
      goto done;
    }
    t[n++] = ms;
    total += ms;
    /* far slower than the best of either algorithm: one run tells; clearly
    ** slower than its stage's best, or long enough: three */
    if (best_any > 0 && ms > FAR_FACTOR * best_any) break;
    if (n >= 3 && ((best_ms > 0 && median_(t, n) > SLOW_FACTOR * best_ms) || total > CAND_BUDGET_MS)) break;
  }
  c->done = 1;
  c->outcome = FLA_TUNEDB_CAND_OK;
  c->time_ms = median_(t, n);
done:
  if (e0) d->cuEventDestroy(e0);
  if (e1) d->cuEventDestroy(e1);
  fla_op_free(op);
  return s;
}

/* -------------------------------------------------------------- the run */

static int slot_(const fla_tune_cand *c) { return c->stage == FLA_STAGE_RECURRENT_FWD; }

static void report_(const fla_tune_opts *o, const fla_tune_job *job, int i, const char *what) {
  if (o && o->progress) {
    fla_tune_event ev = {job, i, what};
    o->progress(o->user, &ev);
  }
}

static fla_status record_(fla_tunedb *db, const fla_tune_key *k, const fla_tune_cand *c) {
  fla_tunedb_candidate rc = {c->cfg, c->time_ms, c->outcome, c->reason[0] ? c->reason : NULL};
  return fla_tunedb_record_candidate(db, &k->key, &rc);
}

/* Winners and defaults of each stage from the outcomes. */
static void summarize_(fla_tune_job *job, fla_tune_result *res) {
  for (int s = 0; s < 2; s++) {
    res->st[s].best = res->st[s].dflt = -1;
    res->st[s].best_ms = res->st[s].default_ms = -1;
  }
  res->st[0].stage = job->chunk_stage;
  res->st[1].stage = FLA_STAGE_RECURRENT_FWD;
  for (int i = 0; i < job->ncand; i++) {
    fla_tune_cand *c = &job->cand[i];
    fla_tune_stage_result *r = &res->st[slot_(c)];
    if (!c->done || c->outcome != FLA_TUNEDB_CAND_OK || c->time_ms < 0) continue;
    if (c->is_default) r->dflt = i, r->default_ms = c->time_ms;
    if (r->best < 0 || c->time_ms < r->best_ms) r->best = i, r->best_ms = c->time_ms;
  }
  res->winner_stage = -1;
  double w = -1;
  for (int s = 0; s < 2; s++)
    if (res->st[s].best >= 0 && (w < 0 || res->st[s].best_ms < w))
      w = res->st[s].best_ms, res->winner_stage = res->st[s].stage;
}

/* The database keys of job's two stages on g's device. */
static fla_status keys_(fla_ctx *g, const fla_tune_job *job, fla_tune_key k[2]) {
  fla_tune_ident id;
  fla_status s = fla_cuda_tune_ident(g, &id);
  memset(k, 0, 2 * sizeof *k);
  for (int sl = 0; s == FLA_OK && sl < 2; sl++) {
    int st = sl ? FLA_STAGE_RECURRENT_FWD : job->chunk_stage;
    if (st >= 0) s = fla_tune_key_make(g, &id, job->r, (fla_stage)st, &job->key, job->shape.H, &k[sl]);
  }
  return s;
}

static int same_cand_(const fla_tune_job *a, const fla_tune_cand *ca, const fla_tune_job *b,
                      const fla_tune_cand *cb) {
  return ca->stage == cb->stage && !memcmp(&ca->cfg, &cb->cfg, sizeof ca->cfg) &&
         !memcmp(&a->key, &b->key, sizeof a->key);
}

fla_status fla_tune_precompile(fla_ctx *g, fla_tunedb *db, fla_tune_job *jobs, int nj, int threads,
                               int *compiled) {
  if (compiled) *compiled = 0;
  const fla_cuda_device_info *info = fla_cuda_ctx_info(g);
  if (!info || !db || (!jobs && nj > 0))
    return fla_set_error(g, FLA_INVALID, "fla_tune_precompile: needs a CUDA context and a database");
  int *todo = malloc(sizeof(int) * (size_t)(nj * FLA_TUNE_MAX_CANDS + 1));
  if (!todo) return fla_set_error(g, FLA_NOMEM, "fla_tune_precompile: out of memory");
  int ntodo = 0;
  fla_status s = FLA_OK;
  for (int j = 0; s == FLA_OK && j < nj; j++) {
    fla_tune_key k[2];
    if ((s = keys_(g, &jobs[j], k)) != FLA_OK) break;
    for (int i = 0; s == FLA_OK && i < jobs[j].ncand; i++) {
      fla_tune_cand *c = &jobs[j].cand[i];
      int known = 0, dup = 0;
      s = fla_tunedb_candidate_known(db, &k[slot_(c)].key, &c->cfg, &known, NULL, NULL);
      for (int t = 0; !known && !dup && t < ntodo; t++) {
        int tj = todo[t] / FLA_TUNE_MAX_CANDS;
        dup = same_cand_(&jobs[tj], &jobs[tj].cand[todo[t] % FLA_TUNE_MAX_CANDS], &jobs[j], c);
      }
      if (s == FLA_OK && !known && !dup) todo[ntodo++] = j * FLA_TUNE_MAX_CANDS + i;
    }
  }
  if (s == FLA_OK && ntodo > 0) {
    int n = compile_all_(NULL, jobs, info->arch, todo, ntodo, threads);
    if (compiled) *compiled = n;
  }
  free(todo);
  return s;
}

fla_status fla_tune_run(fla_ctx *g, fla_tunedb *db, fla_tune_job *job, const fla_tune_opts *opts,
                        fla_tune_result *res) {
  if (!g || !db || !job || !res) return fla_set_error(g, FLA_INVALID, "fla_tune_run: NULL argument");
  memset(res, 0, sizeof *res);
  const fla_cuda_device_info *info = fla_cuda_ctx_info(g);
  if (!info) return fla_set_error(g, FLA_INVALID, "fla_tune_run: not a CUDA context");
  int runs = opts && opts->runs > 0 ? opts->runs : 10;
  fla_tune_key k[2];  /* [0] the chunked stage's key, [1] the recurrent one's */
  fla_status s = keys_(g, job, k);
  if (s != FLA_OK) return s;

  /* 1. What the database knows is not run again (failures included). */
  int todo[FLA_TUNE_MAX_CANDS], ntodo = 0;
  for (int i = 0; i < job->ncand; i++) {
    fla_tune_cand *c = &job->cand[i];
    int known = 0;
    fla_tunedb_outcome out = FLA_TUNEDB_CAND_FAILED;
    double ms = -1;
    if ((s = fla_tunedb_candidate_known(db, &k[slot_(c)].key, &c->cfg, &known, &out, &ms)) != FLA_OK) return s;
    if (known) {
      c->known = c->done = 1;
      c->outcome = out;
      c->time_ms = out == FLA_TUNEDB_CAND_OK ? ms : -1;
      snprintf(c->reason, sizeof c->reason, "%s", out == FLA_TUNEDB_CAND_OK ? "" : "recorded earlier");
      res->known++;
      report_(opts, job, i, "known");
    } else {
      todo[ntodo++] = i;
    }
  }

  /* 2. Compile the rest in parallel threads (the module cache keeps them). */
  fla_ctx *cpu = NULL;
  checker ck;
  bench_in b;
  memset(&ck, 0, sizeof ck);
  memset(&b, 0, sizeof b);
  if (ntodo > 0) {
    int ncomp = 0, tocompile[FLA_TUNE_MAX_CANDS];
    for (int j = 0; j < ntodo; j++)
      if (!job->cand[todo[j]].done) tocompile[ncomp++] = todo[j];
    compile_all_(job, NULL, info->arch, tocompile, ncomp, opts ? opts->threads : 0);
    if ((s = fla_ctx_create(FLA_BACKEND_CPU, &cpu)) != FLA_OK) return s;
    s = checker_make_(g, cpu, job, &ck);
    if (s == FLA_OK) s = bench_make_(g, job, job->Ks, &b);
  }

  /* 3. Check, time and record each, the defaults first (they are listed
  ** first): the best so far lets clearly slower candidates stop early. */
  double best[2] = {-1, -1};
  for (int i = 0; i < job->ncand; i++)
    if (job->cand[i].known && job->cand[i].outcome == FLA_TUNEDB_CAND_OK) {
      double *bs = &best[slot_(&job->cand[i])];
      if (*bs < 0 || job->cand[i].time_ms < *bs) *bs = job->cand[i].time_ms;
    }
  for (int j = 0; s == FLA_OK && j < ntodo; j++) {
    if (opts && opts->stop && *opts->stop) {
      s = fla_set_error(g, FLA_ERROR, "interrupted (every outcome so far is in the database)");
      break;
    }
    fla_tune_cand *c = &job->cand[todo[j]];
    res->compiled += c->compiled;
    double any = best[0] > 0 && (best[1] < 0 || best[0] < best[1]) ? best[0] : best[1];
    if (!c->done && slot_(c) == 1 && !c->is_default && best[0] > 0 && best[1] > PRUNE_FACTOR * best[0]) {
      char msg[128];
      snprintf(msg, sizeof msg, "the recurrent default took %.3f ms, %.1fx the chunked best; its "
               "variants are not timed", best[1], best[1] / best[0]);
      fail_(c, FLA_TUNEDB_CAND_FAILED, "pruned", msg);
    }
    if (!c->done) {
      fla_ctx_tune_force(g, (int)c->stage, &c->cfg);
      s = check_cand_(g, job, &ck, c);
      if (s == FLA_OK && !c->done) s = time_cand_(g, job, &b, runs, best[slot_(c)], any, c);
      fla_ctx_tune_force(g, -1, NULL);
      if (s != FLA_OK && !c->done) break;  /* not the candidate's doing: record nothing */
    }
    if (c->outcome == FLA_TUNEDB_CAND_OK) {
      res->timed++;
      double *bs = &best[slot_(c)];
      if (*bs < 0 || c->time_ms < *bs) *bs = c->time_ms;
    } else {
      res->failed++;
    }
    fla_status rs = record_(db, &k[slot_(c)], c);
    if (s == FLA_OK) s = rs;
    if (s != FLA_OK) break;  /* the context broke (c recorded), or the database failed */
    report_(opts, job, todo[j], c->outcome == FLA_TUNEDB_CAND_OK ? "timed"
                                : c->outcome == FLA_TUNEDB_CAND_WRONG ? "wrong" : "failed");
  }
  checker_free_(&ck);
  bench_free_(&b);
  fla_ctx_free(cpu);
  if (s != FLA_OK) return s;

  /* 4. The winners (a row that already holds this winner is left alone, so
  ** a run that found everything known writes nothing). */
  summarize_(job, res);
  res->skipped = ntodo == 0;
  for (int sl = 0; sl < 2; sl++) {
    fla_tune_stage_result *r = &res->st[sl];
    if (r->stage < 0 || r->best < 0) continue;
    fla_tile_config have, dflt = job->cand[r->best].cfg;
    fla_tunedb_how how;
    double ms = -1;
    s = fla_tunedb_lookup(db, &k[sl].key, &dflt, &have, &how, &ms);
    if (s == FLA_OK && how == FLA_TUNEDB_EXACT && ms == r->best_ms &&
        !memcmp(&have, &job->cand[r->best].cfg, sizeof have))
      continue;
    if (s == FLA_OK) s = fla_tunedb_insert(db, &k[sl].key, &job->cand[r->best].cfg, r->best_ms, NULL, 0);
    if (s != FLA_OK) return s;
  }
  return FLA_OK;
}
