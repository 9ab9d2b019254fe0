/*
** tune.h -- the autotuner behind fla-tune: for one recipe at one shape, the
** candidate tile configurations of its core forward stages (the chunked
** stage that handles the recipe, and the token-by-token stage as the other
** algorithm variant), pruned before anything compiles, compiled in parallel
** threads, checked against the CPU reference, timed with CUDA events, and
** recorded in the tuning database one candidate at a time (so an
** interrupted sweep resumes where it was). docs/tunedb.md, "The tuner".
*/
#ifndef FLA_CUDA_TUNE_H
#define FLA_CUDA_TUNE_H

#include <signal.h>

#include "generate.h"
#include "recipe.h"
#include "tunedb.h"

typedef struct fla_tune_shape {
  int64_t B, T, H, K, V;
} fla_tune_shape;

#define FLA_TUNE_MAX_CANDS 48
#define FLA_TUNE_REASON_MAX 200

typedef struct fla_tune_cand {
  fla_stage stage;
  fla_tile_config cfg;          /* every field filled in */
  int is_default;               /* the stage's default configuration */
  /* Filled by fla_tune_run: */
  int known;                    /* found in the database: not run again */
  int compiled;                 /* compiled now (not from the module cache) */
  int done;                     /* has an outcome */
  fla_tunedb_outcome outcome;
  double time_ms;               /* OK: median; else -1 */
  char reason[FLA_TUNE_REASON_MAX];
} fla_tune_cand;

/* One recipe at one shape (bf16 inputs, a final state stored, no h0: the
** forward that training and prefill run). */
typedef struct fla_tune_job {
  const fla_recipe *r;
  char name[64];                /* the recipe's name */
  fla_tune_shape shape;
  int64_t Ks;                   /* the state's key dim (after the feature map) */
  fla_gen_key key;              /* the core stages' generator key */
  int chunk_stage;              /* the chunked stage for key; -1 when none */
  int ncand;
  fla_tune_cand cand[FLA_TUNE_MAX_CANDS];
  int npruned;                  /* configurations the stages' checks refused */
} fla_tune_job;

/* Enumerates job's candidates without a device: for the chunked stage (when
** one handles the recipe) the product of the recipe's chunk.tiles lists
** (BT also from chunk.size) with the stage's default added to each list;
** for the recurrent stage its default and BV halved and doubled. Each is
** given to the stage's check (shared memory, registers, divisibility: the
** limits of gen/stage_*.c) and dropped when refused, before any compile.
** The default configuration of each stage comes first. ctx receives
** messages (a CPU context is enough). */
fla_status fla_tune_plan(fla_ctx *ctx, const fla_recipe *r, const fla_tune_shape *sh,
                         fla_tune_job *job);

/* Reported after each candidate gets an outcome (or is found known). */
typedef struct fla_tune_event {
  const fla_tune_job *job;
  int index;                    /* into job->cand */
  const char *what;             /* "known", "failed", "wrong", "timed" */
} fla_tune_event;

typedef struct fla_tune_opts {
  int runs;                     /* timed runs a candidate at most; 0: 10 */
  int threads;                  /* compile threads; 0: the online CPUs */
  volatile sig_atomic_t *stop;  /* set (e.g. by SIGINT): stop after the
                                   current candidate; may be NULL */
  void (*progress)(void *user, const fla_tune_event *ev);
  void *user;
} fla_tune_opts;

/* What a run found for one stage. */
typedef struct fla_tune_stage_result {
  int stage;                    /* -1: unused slot */
  int best;                     /* index into job->cand; -1 when none ran */
  int dflt;                     /* index of the default; -1 when not OK */
  double best_ms, default_ms;   /* -1 when unknown */
} fla_tune_stage_result;

typedef struct fla_tune_result {
  fla_tune_stage_result st[2];  /* [0] the chunked stage, [1] recurrent */
  int compiled, timed, known, failed;
  int skipped;                  /* the whole job was in the database */
  int winner_stage;             /* the faster algorithm; -1 when none */
} fla_tune_result;

/* Runs job on CUDA context g, recording in db (open read-write): every
** candidate the database already holds for the job's key is skipped (its
** outcome and time are read back), the others are compiled (threads), run
** at a small shape against the CPU recurrence (rel RMS < 5e-3, no NaN:
** else WRONG), then timed at the job's shape (inputs repeated in
** several copies so that a run reads more than twice the L2 cache; outputs
** reset to NaN before every run, outside the timing; CUDA events around
** each synchronous forward; median of up to opts->runs, fewer when the
** first three are clearly slower than the best so far). Each outcome is
** committed as it comes; the winners of each stage are then inserted. On
** FLA_OK res is filled; a stop request gives FLA_ERROR "interrupted" with
** everything measured so far committed. */
fla_status fla_tune_run(fla_ctx *g, fla_tunedb *db, fla_tune_job *job, const fla_tune_opts *opts,
                        fla_tune_result *res);

/* Compiles, in `threads` threads (0: the online CPUs), every candidate of
** jobs[0..nj) that db does not know yet for g's device, each distinct
** module once, into the module cache (a sweep's compiles then overlap
** across jobs; fla_tune_run finds them cached). *compiled (may be NULL):
** how many were compiled now. A candidate that does not compile is marked
** failed in its job (fla_tune_run records it). */
fla_status fla_tune_precompile(fla_ctx *g, fla_tunedb *db, fla_tune_job *jobs, int nj, int threads,
                               int *compiled);

/* "BT=64 BK=128 BV=64 warps=4" into buf. */
const char *fla_tune_cfg_str(const fla_tile_config *c, char *buf, size_t len);

#endif
