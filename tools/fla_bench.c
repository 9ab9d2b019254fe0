/*
** fla-bench -- times recipes forward and forward+backward and checks the
** chunked algorithm against the recurrent oracle.
**
**   fla-bench --demo                      every shipped recipe on the CPU at
**                                         B=1 T=4096 H=4 K=V=128 (based: K=16)
**   fla-bench [--recipe R ...] [--shape B,T,H,K,V ...] [--device cpu]
**             [--runs N] [--no-recurrent] [--threads N]
**
** Prints one row per (recipe, shape): chunked forward and forward+backward
** times (median of --runs), the recurrent oracle's forward+backward time,
** the speed-up, and the largest relative RMS error of o, ht and every
** gradient of the chunked form against the recurrent one.
*/
#include "common.h"
#include "recipe.h"
#include "testdata.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 32

typedef struct {
  int64_t B, T, H, K, V;
} shape_;

static double now_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double_(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Outputs of one algorithm: o, ht and one gradient per input (+ dh0). */
typedef struct {
  fla_tensor *o, *ht;
  int ng;
  fla_arg grads[12];
  char names[12][80];
} results_;

static void results_free_(results_ *res) {
  fla_tensor_free(res->o);
  fla_tensor_free(res->ht);
  for (int i = 0; i < res->ng; i++) fla_tensor_free(res->grads[i].tensor);
  memset(res, 0, sizeof *res);
}

static fla_status results_new_(fla_ctx *ctx, const fla_op *op, const fla_testdata *td,
                               results_ *res) {
  memset(res, 0, sizeof *res);
  fla_status s = fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->d_o), &res->o);
  if (s == FLA_OK) s = fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->dht), &res->ht);
  for (int i = 0; s == FLA_OK && i < td->n; i++) {
    if (!strcmp(td->args[i].name, "cu_seqlens")) continue;
    snprintf(res->names[res->ng], sizeof res->names[0], "d%s", td->args[i].name);
    res->grads[res->ng].name = res->names[res->ng];
    s = fla_tensor_new(ctx, FLA_F32, fla_tensor_ndim(td->args[i].tensor),
                       fla_tensor_shape(td->args[i].tensor), &res->grads[res->ng].tensor);
    res->ng++;
  }
  (void)op;
  return s;
}

/* Median seconds of `runs` forward (backward = 0) or forward+backward calls. */
static fla_status time_op_(fla_op *op, const fla_testdata *td, results_ *res, int backward, int runs,
                           double *median) {
  double t[64];
  if (runs > 64) runs = 64;
  for (int i = 0; i < runs; i++) {
    double t0 = now_();
    fla_status s = fla_op_forward(op, td->args, td->n, res->o, res->ht);
    if (s == FLA_OK && backward)
      s = fla_op_backward(op, td->args, td->n, td->d_o, td->dht, res->grads, res->ng);
    if (s != FLA_OK) return s;
    t[i] = now_() - t0;
  }
  qsort(t, (size_t)runs, sizeof t[0], cmp_double_);
  *median = t[runs / 2];
  return FLA_OK;
}

static double rel_rms_(fla_tensor *a, fla_tensor *b) {
  const float *x = fla_tensor_data(a), *y = fla_tensor_data(b);
  double num = 0, den = 0;
  for (int64_t i = 0; i < fla_tensor_numel(a); i++) {
    double d = (double)x[i] - y[i];
    num += d * d, den += (double)y[i] * y[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The largest error of the chunked results against the recurrent ones. */
static double max_err_(results_ *c, results_ *r, char *worst, size_t len) {
  double e = rel_rms_(c->o, r->o), x;
  snprintf(worst, len, "o");
  if ((x = rel_rms_(c->ht, r->ht)) > e || isnan(x)) e = x, snprintf(worst, len, "ht");
  for (int i = 0; i < c->ng; i++)
    if ((x = rel_rms_(c->grads[i].tensor, r->grads[i].tensor)) > e || isnan(x))
      e = x, snprintf(worst, len, "%s", c->grads[i].name);
  return e;
}

typedef struct {
  int runs, recurrent;
} options_;

static int bench_one_(fla_ctx *ctx, const char *name, shape_ sh, const options_ *opt) {
  fla_recipe *r = tool_load_recipe(ctx, "fla-bench", name);
  if (!r) return 1;
  const fla_ir *ir = fla_recipe_ir(r);
  if (ir->feature_k == FLA_FEATURE_TAYLOR2 && sh.K > 16) sh.K = 16; /* state is 1+K+K^2 wide */
  fla_op_config cfg = {.B = sh.B, .T = sh.T, .H = sh.H, .K = sh.K, .V = sh.V, .algo = FLA_ALGO_CHUNK};
  fla_op *chunk = NULL, *rec = NULL;
  fla_testdata td;
  memset(&td, 0, sizeof td);
  results_ rc = {0}, rr = {0};
  double t_fwd = 0, t_fb = 0, t_rec = NAN, err = NAN;
  char worst[80] = "-";
  fla_status s = fla_op_bind(ctx, r, &cfg, &chunk);
  if (s == FLA_OK) s = fla_testdata_make(ctx, r, &cfg, 1, FLA_F32, 1, &td);
  if (s == FLA_OK) s = results_new_(ctx, chunk, &td, &rc);
  if (s == FLA_OK) s = time_op_(chunk, &td, &rc, 0, opt->runs, &t_fwd);
  if (s == FLA_OK) s = time_op_(chunk, &td, &rc, 1, opt->runs, &t_fb);
  if (s == FLA_OK && opt->recurrent) {
    cfg.algo = FLA_ALGO_RECURRENT;
    s = fla_op_bind(ctx, r, &cfg, &rec);
    if (s == FLA_OK) s = results_new_(ctx, rec, &td, &rr);
    if (s == FLA_OK) s = time_op_(rec, &td, &rr, 1, 1, &t_rec);
    if (s == FLA_OK) err = max_err_(&rc, &rr, worst, sizeof worst);
  }
  if (s != FLA_OK) {
    fprintf(stderr, "fla-bench: %s: %s: %s\n", name, fla_errstr(s), fla_errmsg(ctx));
  } else {
    char shape[96];
    snprintf(shape, sizeof shape, "%lld,%lld,%lld,%lld,%lld", (long long)sh.B, (long long)sh.T,
             (long long)sh.H, (long long)sh.K, (long long)sh.V);
    printf("| %-16s | %-18s | %9.1f | %9.1f | %10.1f | %6.1fx | %.1e (%s) |\n", name, shape,
           1e3 * t_fwd, 1e3 * t_fb, 1e3 * t_rec, t_rec / t_fb, err, worst);
    fflush(stdout);
  }
  results_free_(&rc);
  results_free_(&rr);
  fla_testdata_free(&td);
  fla_op_free(chunk);
  fla_op_free(rec);
  fla_recipe_free(r);
  return s != FLA_OK;
}

static int parse_shape_(const char *s, shape_ *sh) {
  long long v[5];
  char tail;
  if (sscanf(s, "%lld,%lld,%lld,%lld,%lld%c", &v[0], &v[1], &v[2], &v[3], &v[4], &tail) != 5) return -1;
  for (int i = 0; i < 5; i++)
    if (v[i] < 1) return -1;
  *sh = (shape_){v[0], v[1], v[2], v[3], v[4]};
  return 0;
}

static void usage_(void) {
  fprintf(stderr, "usage: fla-bench --demo\n"
                  "       fla-bench [--recipe R ...] [--shape B,T,H,K,V ...] [--device cpu] [--runs N]\n"
                  "                 [--no-recurrent] [--threads N]\n");
}

int main(int argc, char **argv) {
  const char *recipes[MAX_ITEMS];
  shape_ shapes[MAX_ITEMS];
  int nr = 0, ns = 0, device = FLA_BACKEND_CPU, threads = 0;
  options_ opt = {.runs = 3, .recurrent = 1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (!strcmp(a, "--demo")) {
      continue; /* the defaults below are the demo */
    } else if (!strcmp(a, "--recipe") && more && nr < MAX_ITEMS) {
      recipes[nr++] = argv[++i];
    } else if (!strcmp(a, "--shape") && more && ns < MAX_ITEMS) {
      if (parse_shape_(argv[++i], &shapes[ns++])) {
        fprintf(stderr, "fla-bench: --shape '%s' is not B,T,H,K,V of positive integers\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(a, "--device") && more) {
      if ((device = tool_parse_device(argv[++i])) < 0) {
        fprintf(stderr, "fla-bench: unknown device '%s' (cpu, cuda, hip, auto)\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(a, "--runs") && more) {
      opt.runs = atoi(argv[++i]);
      if (opt.runs < 1 || opt.runs > 64) {
        fprintf(stderr, "fla-bench: --runs must be 1..64\n");
        return 2;
      }
    } else if (!strcmp(a, "--threads") && more) {
      threads = atoi(argv[++i]);
    } else if (!strcmp(a, "--no-recurrent")) {
      opt.recurrent = 0;
    } else {
      usage_();
      return 2;
    }
  }
  fla_ctx *ctx;
  fla_status s = fla_ctx_create((fla_backend)device, &ctx);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-bench: cannot use that device: %s\n", fla_errstr(s));
    return 2;
  }
  if (threads > 0 && fla_ctx_set_threads(ctx, threads) != FLA_OK) {
    fprintf(stderr, "fla-bench: %s\n", fla_errmsg(ctx));
    return 2;
  }
  if (nr == 0) nr = fla_recipe_list_builtin(recipes, MAX_ITEMS);
  if (nr > MAX_ITEMS) nr = MAX_ITEMS;
  if (ns == 0) shapes[ns++] = (shape_){1, 4096, 4, 128, 128};
  printf("fla-bench on the CPU (%d threads), float32 chunked vs float64 recurrent; times in ms\n\n",
         threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
  printf("| %-16s | %-18s | %9s | %9s | %10s | %7s | %s |\n", "recipe", "B,T,H,K,V", "chunk fwd",
         "chunk f+b", "recur. f+b", "speedup", "max rel err vs recurrent");
  printf("|------------------|--------------------|-----------|-----------|------------|---------|---------------------------|\n");
  int failed = 0;
  for (int i = 0; i < nr; i++)
    for (int j = 0; j < ns; j++) failed |= bench_one_(ctx, recipes[i], shapes[j], &opt);
  fla_ctx_free(ctx);
  return failed ? 1 : 0;
}
