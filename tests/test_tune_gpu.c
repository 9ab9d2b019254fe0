/*
** test_tune_gpu.c -- the tuner end to end on a GPU: a small sweep fills a
** fresh database; the same sweep again finds everything there and compiles
** and times nothing; dispatch then gives the forward the tuned
** configuration, whose modules the cache already holds.
**
** Without a GPU the suite passes with one test that says why it skipped.
** The GPU is probed in a child process (CUDA does not survive fork(), and
** Check forks for every test).
*/
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda/op_cuda.h"
#include "cuda/tune.h"
#include "cuda/tune_pick.h"
#include "harness.h"
#include "internal.h"
#include "tune_ctx.h"

static char gpu_why[1024];

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat sb;
    if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rm_tree(p);
    else unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

START_TEST(test_skip_no_gpu) {
  printf("test_tune_gpu: skipped: no GPU (%s)\n", gpu_why);
}
END_TEST

static void sweep_(fla_ctx *g, fla_tunedb *db, fla_recipe *r, const fla_tune_shape *sh,
                   fla_tune_job *job, fla_tune_result *res, int *precompiled) {
  fla_ctx *cpu = th_cpu_ctx();
  ck_assert_msg(fla_tune_plan(cpu, r, sh, job) == FLA_OK, "%s", fla_errmsg(cpu));
  fla_ctx_free(cpu);
  ck_assert_msg(fla_tune_precompile(g, db, job, 1, 0, precompiled) == FLA_OK, "%s", fla_errmsg(g));
  fla_tune_opts opts = {.runs = 5};
  ck_assert_msg(fla_tune_run(g, db, job, &opts, res) == FLA_OK, "%s", fla_errmsg(g));
}

START_TEST(test_sweep_twice) {
  char dir[64] = "/tmp/fla_tgpu_XXXXXX", cache[128], path[128];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(cache, sizeof cache, "%s/modules", dir);
  snprintf(path, sizeof path, "%s/tune.sqlite", dir);
  setenv("FLA_CACHE_DIR", cache, 1);  /* a fresh module cache */
  fla_ctx *g = NULL;
  char why[512];
  ck_assert_msg(fla_ctx_create_ex(FLA_BACKEND_CUDA, &g, why, sizeof why) == FLA_OK, "%s", why);
  fla_ctx *cpu = th_cpu_ctx();
  fla_recipe *r = NULL;
  ck_assert_int_eq(fla_recipe_find(cpu, "simple_gla", &r), FLA_OK);
  fla_tunedb *db = NULL;
  ck_assert_msg(fla_tunedb_open(g, path, FLA_TUNEDB_CREATE, &db) == FLA_OK, "%s", fla_errmsg(g));
  fla_tune_shape sh = {2, 1000, 4, 64, 64};
  static fla_tune_job job;
  fla_tune_result res;
  int pre = -1;

  /* 1. A fresh sweep: everything compiled, checked and timed. */
  double t0 = th_now_s();
  sweep_(g, db, r, &sh, &job, &res, &pre);
  printf("sweep 1: %d candidates, %d precompiled, %d timed, %d failed, %.1f s\n", job.ncand, pre,
         res.timed, res.failed, th_now_s() - t0);
  ck_assert_int_gt(pre, 0);
  ck_assert_int_eq(res.known, 0);
  ck_assert_int_eq(res.timed + res.failed, job.ncand);
  ck_assert_int_ge(job.chunk_stage, 0);
  ck_assert_int_ge(res.st[0].best, 0);
  ck_assert_int_ge(res.st[0].dflt, 0);  /* the default ran: the speed-up is known */
  for (int i = 0; i < job.ncand; i++) {
    char c[64];
    printf("  %-13s %-28s %-6s %8.4f ms %s\n", fla_stage_name(job.cand[i].stage),
           fla_tune_cfg_str(&job.cand[i].cfg, c, sizeof c), fla_tunedb_outcome_name(job.cand[i].outcome),
           job.cand[i].time_ms, job.cand[i].reason);
    ck_assert(job.cand[i].done);
  }
  fla_tile_config win = job.cand[res.st[0].best].cfg;

  /* 2. Again: all in the database, nothing compiled or timed. */
  static fla_tune_job job2;
  fla_tune_result res2;
  sweep_(g, db, r, &sh, &job2, &res2, &pre);
  ck_assert_int_eq(pre, 0);
  ck_assert_int_eq(res2.compiled, 0);
  ck_assert_int_eq(res2.timed, 0);
  ck_assert_int_eq(res2.known, job2.ncand);
  ck_assert(res2.skipped);
  ck_assert_int_eq(res2.st[0].best, res.st[0].best);
  fla_tunedb_close(db);

  /* 3. Dispatch reads it: the winner, and its modules are all cached. */
  fla_ctx *g2 = NULL;
  ck_assert_int_eq(fla_ctx_create_ex(FLA_BACKEND_CUDA, &g2, why, sizeof why), FLA_OK);
  ck_assert_msg(fla_ctx_set_tunedb(g2, path) == FLA_OK, "%s", fla_errmsg(g2));
  fla_op_config oc = {.B = 1, .T = 4096, .H = 8, .K = 64, .V = 64};  /* H 8: the nearest bucket */
  fla_op *op = NULL;
  ck_assert_int_eq(fla_op_bind(g2, r, &oc, &op), FLA_OK);
  fla_tile_config got;
  fla_cuda_pick_config(op, g2, (fla_stage)job.chunk_stage, &job.key, &got);
  ck_assert_msg(!memcmp(&got, &win, sizeof got), "dispatch got BV %d, the winner is BV %d", got.BV, win.BV);
  int compiled = -1;
  ck_assert_int_eq(fla_cuda_op_precompile(op, FLA_BF16, 0, 1, fla_cuda_ctx_info(g2)->arch, &compiled), FLA_OK);
  ck_assert_int_eq(compiled, 0);
  int stage = fla_cuda_op_core_stage(op, FLA_BF16, 0, 1);
  printf("dispatch: %s with BV %d (%s faster)\n", fla_stage_name((fla_stage)stage), got.BV,
         res.winner_stage >= 0 ? fla_stage_name((fla_stage)res.winner_stage) : "?");
  ck_assert_int_eq(stage, res.winner_stage);
  fla_op_free(op);
  fla_ctx_free(g2);

  fla_recipe_free(r);
  fla_ctx_free(cpu);
  fla_ctx_free(g);
  rm_tree(dir);
}
END_TEST

/* Creates a CUDA context in a child process: 1 when it works. */
static int probe_gpu(void) {
  int fds[2];
  if (pipe(fds) != 0) return snprintf(gpu_why, sizeof gpu_why, "pipe failed"), 0;
  pid_t pid = fork();
  if (pid == 0) {
    char msg[1024] = {0};
    fla_ctx *ctx = NULL;
    int ok = fla_ctx_create_ex(FLA_BACKEND_CUDA, &ctx, msg, sizeof msg) == FLA_OK;
    fla_ctx_free(ctx);
    ssize_t w = write(fds[1], &ok, sizeof ok);
    w += write(fds[1], msg, sizeof msg);
    _exit(w > 0 ? 0 : 1);
  }
  close(fds[1]);
  int ok = 0;
  char msg[1024] = {0};
  if (pid < 0 || read(fds[0], &ok, sizeof ok) != (ssize_t)sizeof ok ||
      read(fds[0], msg, sizeof msg) != (ssize_t)sizeof msg) {
    ok = 0;
    snprintf(msg, sizeof msg, "the probe process failed");
  }
  close(fds[0]);
  if (pid > 0) waitpid(pid, NULL, 0);
  msg[sizeof msg - 1] = '\0';
  memcpy(gpu_why, msg, sizeof msg);
  return ok;
}

static Suite *suite_(void) {
  Suite *s = suite_create("tune_gpu");
  TCase *tc = tcase_create("sweep");
  tcase_set_timeout(tc, 900);
  if (!probe_gpu()) {
    printf("test_tune_gpu: skipped: %s\n", gpu_why);
    tcase_add_test(tc, test_skip_no_gpu);
  } else {
    tcase_add_test(tc, test_sweep_twice);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(suite_()); }
