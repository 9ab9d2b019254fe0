/*
** fla-ttff -- time to first forward: from the start of this process to the
** first result of one GPU forward in host memory, with the steps on the
** way (context, recipe, bind, inputs, forward). What a cold start costs
** with an empty module cache and no tuning database, and a warm one with
** both (bench/tune_run.sh runs it both ways).
**
**   fla-ttff [--recipe R] [--shape B,T,H,K,V] [--t0 NS]
**
** --t0: the launching shell's `date +%s%N` just before the command, so the
** time includes loading the program; without it, the kernel's start time of
** this process (/proc/self/stat, 10 ms steps). The tuning database is the
** library's usual one (FLA_TUNEDB, the user cache, the shipped one).
*/
#include "common.h"
#include "cuda/op_cuda.h"
#include "internal.h"
#include "recipe.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double wall_ms_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* This process's start on CLOCK_REALTIME in ms (from /proc), or -1. */
static double proc_start_ms_(void) {
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return -1;
  char buf[2048];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');  /* the name may hold spaces */
  if (!p) return -1;
  unsigned long long start = 0;
  int field = 2;
  for (char *t = strtok(p + 1, " "); t; t = strtok(NULL, " "))
    if (++field == 22) {
      start = strtoull(t, NULL, 10);
      break;
    }
  struct timespec bt, rt;
  clock_gettime(CLOCK_BOOTTIME, &bt);
  clock_gettime(CLOCK_REALTIME, &rt);
  double since_boot_ms = 1e3 * (double)bt.tv_sec + 1e-6 * (double)bt.tv_nsec;
  double now_ms = 1e3 * (double)rt.tv_sec + 1e-6 * (double)rt.tv_nsec;
  return now_ms - since_boot_ms + 1e3 * (double)start / (double)sysconf(_SC_CLK_TCK);
}

/* Each input in its role's range (a constant: timing only). */
static double fill_of_(fla_ir_role role) {
  return role == FLA_ROLE_DECAY ? -0.05 : role == FLA_ROLE_RATE ? 0.5 : role == FLA_ROLE_BONUS ? 0.05 : 0.1;
}

int main(int argc, char **argv) {
  double t_main = wall_ms_();
  const char *name = "simple_gla";
  long long B = 1, T = 4096, H = 16, K = 128, V = 128;
  double t0 = -1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--recipe") && i + 1 < argc) name = argv[++i];
    else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
      if (sscanf(argv[++i], "%lld,%lld,%lld,%lld,%lld", &B, &T, &H, &K, &V) != 5) {
        fprintf(stderr, "fla-ttff: --shape B,T,H,K,V\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--t0") && i + 1 < argc) {
      t0 = strtod(argv[++i], NULL) / 1e6;  /* ns -> ms */
    } else {
      fprintf(stderr, "usage: fla-ttff [--recipe R] [--shape B,T,H,K,V] [--t0 NS]\n");
      return 2;
    }
  }
  if (t0 < 0) t0 = proc_start_ms_();
  if (t0 < 0) t0 = t_main;

  fla_ctx *g = NULL;
  char why[512] = "";
  fla_status s = fla_ctx_create_ex(FLA_BACKEND_CUDA, &g, why, sizeof why);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-ttff: no GPU: %s\n", why);
    return 2;
  }
  double t_ctx = wall_ms_();
  fla_recipe *r = tool_load_recipe(g, "fla-ttff", name);
  if (!r) return 1;
  double t_recipe = wall_ms_();
  const fla_ir *ir = fla_recipe_ir(r);
  fla_op_config cfg = {.B = B, .T = T, .H = H, .K = K, .V = V};
  fla_op *op = NULL;
  fla_arg args[FLA_IR_MAX_INPUTS];
  memset(args, 0, sizeof args);
  fla_tensor *o = NULL, *ht = NULL;
  float *host = NULL;
  s = fla_op_bind(g, r, &cfg, &op);
  double t_bind = wall_ms_();
  for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) {
    const fla_ir_input *in = &ir->inputs[i];
    int64_t shape[4] = {B, T, H, in->layout == FLA_LAYOUT_BTHV ? V : K};
    int nd = in->layout == FLA_LAYOUT_BTH ? 3 : 4;
    if (in->layout == FLA_LAYOUT_HK) nd = 2, shape[0] = H, shape[1] = K;
    args[i].name = in->name;
    s = fla_tensor_new(g, FLA_BF16, nd, shape, &args[i].tensor);
    if (s == FLA_OK) s = fla_tensor_fill(g, args[i].tensor, fill_of_(in->role));
  }
  int64_t os[4] = {B, T, H, V}, hs[4] = {B, H, op ? fla_op_state_k(op) : 1, V};
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_BF16, 4, os, &o);
  if (s == FLA_OK) s = fla_tensor_new(g, FLA_F32, 4, hs, &ht);
  double t_inputs = wall_ms_();
  if (s == FLA_OK) s = fla_op_forward(op, args, ir->num_inputs, o, ht);
  double t_fwd = wall_ms_();
  if (s == FLA_OK && !(host = malloc(sizeof(float) * (size_t)fla_tensor_numel(o)))) s = FLA_NOMEM;
  if (s == FLA_OK) s = fla_tensor_copy_to(g, o, host, FLA_F32, fla_tensor_numel(o));
  double t_done = wall_ms_();
  if (s != FLA_OK) {
    fprintf(stderr, "fla-ttff: %s: %s\n", fla_errstr(s), fla_errmsg(g));
  } else {
    int stage = fla_cuda_op_core_stage(op, FLA_BF16, 0, 1);
    printf("fla-ttff %s %lld,%lld,%lld,%lld,%lld on %s: first forward result after %.1f ms "
           "(o[0] = %g)\n", name, B, T, H, K, V, fla_ctx_device_name(g), t_done - t0, host[0]);
    printf("  process start to main %.1f, context %.1f, recipe %.1f, bind %.1f, inputs %.1f, "
           "forward %.1f (stage %s), copy back %.1f ms\n", t_main - t0, t_ctx - t_main,
           t_recipe - t_ctx, t_bind - t_recipe, t_inputs - t_bind, t_fwd - t_inputs,
           stage >= 0 ? fla_stage_name((fla_stage)stage) : "?", t_done - t_fwd);
    const char *db = fla_ctx_tunedb(g);
    printf("  tuning database: %s; module cache: %s\n", db[0] ? db : "none",
           getenv("FLA_CACHE_DIR") ? getenv("FLA_CACHE_DIR") : "(default)");
  }
  free(host);
  for (int i = 0; i < ir->num_inputs; i++) fla_tensor_free(args[i].tensor);
  fla_tensor_free(o), fla_tensor_free(ht);
  fla_op_free(op);
  fla_recipe_free(r);
  fla_ctx_free(g);
  return s != FLA_OK;
}
