/*
** fla-tune -- sweeps recipes over shapes on the present GPU and stores the
** best tile configuration of each forward stage in the tuning database.
**
**   fla-tune [--recipe R ...] [--shape B,T,H,K,V ...] [--db PATH] [--dry-run]
**            [--runs N] [--threads N]
**   fla-tune --show [--db PATH]
**
** Defaults: every shipped recipe, the shapes of shared/ANCHORS.md (K = 16
** for based, whose feature map squares K), --db $FLA_TUNEDB else the user
** cache (docs/tunedb.md). A progress line (done/total, the candidate, ETA)
** goes to stderr; a summary table (best configuration, its time, speed-up
** over the default) to stdout at the end. Every outcome is committed as it
** is measured: after Ctrl-C or a crash the same command resumes where it
** stopped, and a finished sweep run again compiles and times nothing.
** --dry-run lists the candidates (after pruning) without a GPU.
*/
#include "common.h"
#include "cuda/op_cuda.h"
#include "cuda/tune.h"
#include "internal.h"
#include "tune_ctx.h"

#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 32
#define MAX_JOBS 512

static volatile sig_atomic_t stop_ = 0;
static void on_sigint_(int sig) {
  (void)sig;
  stop_ = 1;
}

static double now_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The forward shapes of shared/ANCHORS.md (B, T, H, D). */
static const fla_tune_shape anchors_[] = {
  {1, 8192, 96, 128, 128}, {2, 16384, 16, 128, 128}, {4, 2048, 16, 128, 128},
  {4, 4096, 64, 128, 128}, {1, 65536, 16, 128, 128}, {1, 262144, 8, 128, 128},
};
#define NANCHORS ((int)(sizeof anchors_ / sizeof anchors_[0]))

static int parse_shape_(const char *s, fla_tune_shape *sh) {
  long long v[5];
  char tail;
  if (sscanf(s, "%lld,%lld,%lld,%lld,%lld%c", &v[0], &v[1], &v[2], &v[3], &v[4], &tail) != 5) return -1;
  for (int i = 0; i < 5; i++)
    if (v[i] < 1) return -1;
  *sh = (fla_tune_shape){v[0], v[1], v[2], v[3], v[4]};
  return 0;
}

static const char *shape_str_(const fla_tune_shape *s, char *buf, size_t len) {
  snprintf(buf, len, "%lld,%lld,%lld,%lld,%lld", (long long)s->B, (long long)s->T, (long long)s->H,
           (long long)s->K, (long long)s->V);
  return buf;
}

/* ------------------------------------------------------------ progress */

typedef struct {
  int total, done;
  double t0;
  int tty;
} progress_;

static void on_progress_(void *user, const fla_tune_event *ev) {
  progress_ *p = user;
  p->done++;
  const fla_tune_cand *c = &ev->job->cand[ev->index];
  double el = now_() - p->t0, eta = p->done > 0 ? el / p->done * (p->total - p->done) : 0;
  char cfg[64], sh[64], t[32] = "";
  fla_tune_cfg_str(&c->cfg, cfg, sizeof cfg);
  if (c->outcome == FLA_TUNEDB_CAND_OK && c->time_ms >= 0) snprintf(t, sizeof t, " %.3f ms", c->time_ms);
  fprintf(stderr, "%s[%d/%d] %s %s %s %s: %s%s  (%.0f s, ETA %.0f s)%s", p->tty ? "\r\033[K" : "",
          p->done, p->total, ev->job->name, shape_str_(&ev->job->shape, sh, sizeof sh),
          fla_stage_name(c->stage), cfg, ev->what, t, el, eta, p->tty ? "" : "\n");
  if (c->outcome != FLA_TUNEDB_CAND_OK && !c->known && !p->tty) fprintf(stderr, "    %s\n", c->reason);
  fflush(stderr);
}

/* --------------------------------------------------------------- --show */

typedef struct {
  char names[64][64], hashes[64][17];
  int n, rows;
} show_state_;

static int show_row_(void *user, const fla_tunedb_row *r) {
  show_state_ *s = user;
  const char *name = "?";
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->hashes[i], r->recipe_hash)) name = s->names[i];
  char cfg[64] = "(sweep under way)", t[32] = "-";
  if (r->has_winner) fla_tune_cfg_str(&r->winner, cfg, sizeof cfg), snprintf(t, sizeof t, "%.3f", r->time_ms);
  printf("| %-24s | %d.%d | %6d | %-5s | %-16s %s | %-13s | %-4s | %-26s | %-28s | %8s | %2d ok %2d failed %2d wrong |\n",
         r->gpu_name, r->cc_major, r->cc_minor, r->driver_version, r->nvrtc_version, name,
         r->recipe_hash, r->stage, r->dtype, r->bucket, cfg, t, r->n_ok, r->n_failed, r->n_wrong);
  s->rows++;
  return 0;
}

static int show_(fla_ctx *ctx, const char *path) {
  fla_tunedb *db = NULL;
  fla_status s = fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-tune: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    return 1;
  }
  show_state_ sh;
  memset(&sh, 0, sizeof sh);
  const char *names[64];
  int n = fla_recipe_list_builtin(names, 64);
  for (int i = 0; i < n && i < 64; i++) {
    fla_recipe *r = NULL;
    if (fla_recipe_find(ctx, names[i], &r) != FLA_OK) continue;
    snprintf(sh.names[sh.n], sizeof sh.names[0], "%s", names[i]);
    fla_tune_recipe_hash(r, sh.hashes[sh.n++]);
    fla_recipe_free(r);
  }
  printf("tuning database %s (schema %d)\n\n", path, fla_tunedb_schema_version(db));
  printf("| %-24s | cc  | driver | nvrtc | %-33s | %-13s | dtype | %-26s | %-28s | %8s | candidates |\n",
         "gpu", "recipe (hash)", "stage", "bucket", "winner", "ms");
  s = fla_tunedb_foreach(db, show_row_, &sh);
  if (s != FLA_OK) fprintf(stderr, "fla-tune: %s\n", fla_errmsg(ctx));
  printf("\n%d rows\n", sh.rows);
  fla_tunedb_close(db);
  return s != FLA_OK;
}

/* ---------------------------------------------------------------- sweep */

static void usage_(void) {
  fprintf(stderr,
          "usage: fla-tune [--recipe R ...] [--shape B,T,H,K,V ...] [--db PATH] [--dry-run]\n"
          "                [--runs N] [--threads N]\n"
          "       fla-tune --show [--db PATH]\n");
}

static void summary_(fla_tune_job *jobs, fla_tune_result *res, int *ok, int nj, double secs) {
  printf("\nfla-tune summary: %d jobs in %.1f s; ms = median forward time (bf16, with ht), "
         "speed-up = default / best\n\n", nj, secs);
  printf("| %-16s | %-20s | %-13s | %-28s | %9s | %10s | %8s | %10s | %-13s | %s |\n", "recipe",
         "B,T,H,K,V", "stage", "best config", "best ms", "default ms", "speed-up", "recur. ms",
         "faster algo", "compiled/timed/known/failed");
  int compiled = 0, timed = 0, known = 0, failed = 0;
  for (int j = 0; j < nj; j++) {
    fla_tune_job *job = &jobs[j];
    fla_tune_result *r = &res[j];
    char sh[64], cfg[64] = "-", best[16] = "-", dflt[16] = "-", up[16] = "-", rec[16] = "-";
    shape_str_(&job->shape, sh, sizeof sh);
    if (ok[j] != 1) {
      printf("| %-16s | %-20s | %-13s | %-28s | %9s | %10s | %8s | %10s | %-13s | %s |\n", job->name, sh,
             "-", ok[j] ? "(failed: see above)" : "(not run)", "-", "-", "-", "-", "-", "-");
      continue;
    }
    fla_tune_stage_result *c = r->st[0].stage >= 0 && r->st[0].best >= 0 ? &r->st[0] : &r->st[1];
    if (c->best >= 0) {
      fla_tune_cfg_str(&job->cand[c->best].cfg, cfg, sizeof cfg);
      snprintf(best, sizeof best, "%.3f", c->best_ms);
    }
    if (c->default_ms > 0) snprintf(dflt, sizeof dflt, "%.3f", c->default_ms);
    if (c->default_ms > 0 && c->best_ms > 0) snprintf(up, sizeof up, "%.2fx", c->default_ms / c->best_ms);
    if (r->st[1].best >= 0) snprintf(rec, sizeof rec, "%.3f", r->st[1].best_ms);
    printf("| %-16s | %-20s | %-13s | %-28s | %9s | %10s | %8s | %10s | %-13s | %d/%d/%d/%d |\n", job->name,
           sh, c->stage >= 0 ? fla_stage_name((fla_stage)c->stage) : "-", cfg, best, dflt, up, rec,
           r->winner_stage >= 0 ? fla_stage_name((fla_stage)r->winner_stage) : "-", r->compiled,
           r->timed, r->known, r->failed);
    compiled += r->compiled, timed += r->timed, known += r->known, failed += r->failed;
  }
  printf("\ntotals: %d modules compiled, %d candidates timed, %d found in the database, %d failed or wrong\n",
         compiled, timed, known, failed);
}

int main(int argc, char **argv) {
  const char *recipes[MAX_ITEMS];
  fla_tune_shape shapes[MAX_ITEMS];
  int nr = 0, ns = 0, dry = 0, show = 0, runs = 0, threads = 0;
  const char *db_path = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (!strcmp(a, "--recipe") && more && nr < MAX_ITEMS) recipes[nr++] = argv[++i];
    else if (!strcmp(a, "--shape") && more && ns < MAX_ITEMS) {
      if (parse_shape_(argv[++i], &shapes[ns++])) {
        fprintf(stderr, "fla-tune: --shape '%s' is not B,T,H,K,V of positive integers\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(a, "--db") && more) db_path = argv[++i];
    else if (!strcmp(a, "--dry-run")) dry = 1;
    else if (!strcmp(a, "--show")) show = 1;
    else if (!strcmp(a, "--runs") && more) {
      runs = atoi(argv[++i]);
      if (runs < 1 || runs > 64) {
        fprintf(stderr, "fla-tune: --runs must be 1..64\n");
        return 2;
      }
    } else if (!strcmp(a, "--threads") && more) threads = atoi(argv[++i]);
    else {
      usage_();
      return 2;
    }
  }
  fla_ctx *cpu = NULL;
  if (fla_ctx_create(FLA_BACKEND_CPU, &cpu) != FLA_OK) return 2;
  char defpath[4096];
  if (!db_path) {
    if (fla_tunedb_default_path(cpu, defpath, sizeof defpath) != FLA_OK) {
      fprintf(stderr, "fla-tune: %s; give --db PATH\n", fla_errmsg(cpu));
      fla_ctx_free(cpu);
      return 2;
    }
    db_path = defpath;
  }
  if (show) {
    int rc = show_(cpu, db_path);
    fla_ctx_free(cpu);
    return rc;
  }

  /* The jobs: every (recipe, shape), candidates enumerated and pruned. */
  static fla_tune_job jobs[MAX_JOBS];
  static fla_tune_result res[MAX_JOBS];
  static int ok[MAX_JOBS];
  static fla_recipe *loaded[MAX_ITEMS];
  if (nr == 0) nr = fla_recipe_list_builtin(recipes, MAX_ITEMS);
  if (nr > MAX_ITEMS) nr = MAX_ITEMS;
  int nj = 0, total = 0, rc = 0;
  for (int i = 0; i < nr; i++) {
    if (!(loaded[i] = tool_load_recipe(cpu, "fla-tune", recipes[i]))) {
      rc = 1;
      continue;
    }
    int based = !strcmp(fla_recipe_name(loaded[i]), "based");
    int n = ns ? ns : NANCHORS;
    for (int j = 0; j < n && nj < MAX_JOBS; j++) {
      fla_tune_shape sh = ns ? shapes[j] : anchors_[j];
      if (!ns && based) sh.K = 16;
      char shs[64];
      fla_status s = fla_tune_plan(cpu, loaded[i], &sh, &jobs[nj]);
      if (s != FLA_OK) {
        fprintf(stderr, "fla-tune: %s at %s: skipped: %s\n", recipes[i], shape_str_(&sh, shs, sizeof shs),
                fla_errmsg(cpu));
        continue;
      }
      total += jobs[nj].ncand;
      nj++;
    }
  }
  if (dry) {
    printf("fla-tune --dry-run: %d jobs, %d candidates after pruning\n\n", nj, total);
    for (int j = 0; j < nj; j++) {
      char sh[64], cfg[64];
      printf("%s %s: %d candidates (%d pruned)\n", jobs[j].name, shape_str_(&jobs[j].shape, sh, sizeof sh),
             jobs[j].ncand, jobs[j].npruned);
      for (int c = 0; c < jobs[j].ncand; c++)
        printf("  %-13s %s%s\n", fla_stage_name(jobs[j].cand[c].stage),
               fla_tune_cfg_str(&jobs[j].cand[c].cfg, cfg, sizeof cfg),
               jobs[j].cand[c].is_default ? "  (default)" : "");
    }
    for (int i = 0; i < nr; i++) fla_recipe_free(loaded[i]);
    fla_ctx_free(cpu);
    return rc;
  }

  fla_ctx *g = NULL;
  char why[512] = "";
  fla_status s = fla_ctx_create_ex(FLA_BACKEND_CUDA, &g, why, sizeof why);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-tune: no GPU to tune on: %s: %s\n", fla_errstr(s), why);
    for (int i = 0; i < nr; i++) fla_recipe_free(loaded[i]);
    fla_ctx_free(cpu);
    return 2;
  }
  fla_ctx_set_tunedb(g, "");  /* the tuner forces every configuration it times */
  fla_tunedb *db = NULL;
  s = fla_tunedb_open(g, db_path, FLA_TUNEDB_CREATE, &db);  /* its messages go to g */
  if (s != FLA_OK) {
    fprintf(stderr, "fla-tune: %s: %s\n", fla_errstr(s), fla_errmsg(g));
    fla_ctx_free(g);
    for (int i = 0; i < nr; i++) fla_recipe_free(loaded[i]);
    fla_ctx_free(cpu);
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint_;
  sa.sa_flags = SA_RESETHAND;  /* a second Ctrl-C ends the process at once */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  fprintf(stderr, "fla-tune on %s: %d jobs, %d candidates, database %s\n", fla_ctx_device_name(g), nj,
          total, db_path);
  double t0 = now_();
  int pre = 0;
  s = fla_tune_precompile(g, db, jobs, nj, threads, &pre);
  if (s != FLA_OK) fprintf(stderr, "fla-tune: precompiling: %s (the jobs compile their own)\n", fla_errmsg(g));
  fprintf(stderr, "fla-tune: %d modules compiled in %.1f s (the rest were in the module cache or the "
                  "database)\n", pre, now_() - t0);
  progress_ p = {total, 0, t0, isatty(2)};
  fla_tune_opts opts = {runs, threads, &stop_, on_progress_, &p};
  for (int j = 0; j < nj && !stop_; j++) {
    s = fla_tune_run(g, db, &jobs[j], &opts, &res[j]);
    ok[j] = s == FLA_OK ? 1 : -1;
    if (s != FLA_OK) {
      char sh[64];
      fprintf(stderr, "%sfla-tune: %s at %s: %s: %s\n", p.tty ? "\n" : "", jobs[j].name,
              shape_str_(&jobs[j].shape, sh, sizeof sh), fla_errstr(s), fla_errmsg(g));
      rc = 1;
      /* a broken CUDA context takes every later job with it */
      if (fla_cuda_sync(g, "after a failed job") != FLA_OK) break;
    }
  }
  if (p.tty) fprintf(stderr, "\n");
  fla_tunedb_checkpoint(db);
  if (stop_) {
    fprintf(stderr, "fla-tune: interrupted; every outcome so far is in %s: run the same command "
                    "again to resume\n", db_path);
    rc = 130;
  }
  summary_(jobs, res, ok, nj, now_() - p.t0);
  fla_tunedb_close(db);
  fla_ctx_free(g);
  for (int i = 0; i < nr; i++) fla_recipe_free(loaded[i]);
  fla_ctx_free(cpu);
  return rc;
}
