/*
** conformance.c -- a recipe against a conformance case: forward, backward, and the
** relative RMS error of every tensor the case holds a reference for.
*/
#include "conformance.h"
#include "internal.h"
#include "recipe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tensors of one run, all loaded as float32 and owned here. */
typedef struct {
  fla_tensor *in[FLA_IR_MAX_INPUTS];
  fla_tensor *h0, *d_o, *dht;
  fla_tensor *ref_o, *ref_ht, *ref_g;  /* ref_g: in.g of a constant-decay case */
  char file_name[FLA_IR_MAX_INPUTS][64];  /* the case's name for each input */
} case_tensors;

static void case_free_(case_tensors *c) {
  for (int i = 0; i < FLA_IR_MAX_INPUTS; i++) fla_tensor_free(c->in[i]);
  fla_tensor_free(c->h0), fla_tensor_free(c->d_o), fla_tensor_free(c->dht);
  fla_tensor_free(c->ref_o), fla_tensor_free(c->ref_ht), fla_tensor_free(c->ref_g);
}

static int has_(const fla_safetensors *st, const char *cs, const char *kind, const char *x) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s.%s", cs, kind, x);
  return fla_safetensors_find(st, key) >= 0;
}

static fla_status load_(fla_ctx *ctx, const fla_safetensors *st, const char *cs, const char *kind,
                        const char *x, fla_tensor **out) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s.%s", cs, kind, x);
  return fla_safetensors_load(ctx, st, key, FLA_F32, out);
}

static int expected_rank_(fla_ir_layout l) {
  return l == FLA_LAYOUT_BTH ? 3 : l == FLA_LAYOUT_HK ? 2 : 4;
}

/* Finds the case's tensor for recipe input i: in.<name>, or for a decay
** input whichever of in.g / in.gk has the right rank. */
static fla_status find_input_(fla_ctx *ctx, const fla_safetensors *st, const char *cs,
                              const fla_ir *ir, int i, case_tensors *c) {
  const fla_ir_input *in = &ir->inputs[i];
  const char *cands[3] = {in->name, NULL, NULL};
  if (in->role == FLA_ROLE_DECAY) cands[1] = "g", cands[2] = "gk";
  for (int j = 0; j < 3 && cands[j]; j++) {
    if (!has_(st, cs, "in", cands[j])) continue;
    fla_tensor *t;
    fla_status s = load_(ctx, st, cs, "in", cands[j], &t);
    if (s != FLA_OK) return s;
    if (fla_tensor_ndim(t) == expected_rank_(in->layout)) {
      c->in[i] = t;
      snprintf(c->file_name[i], sizeof c->file_name[i], "%s", cands[j]);
      return FLA_OK;
    }
    fla_tensor_free(t);
  }
  return fla_set_error(ctx, FLA_INVALID, "case '%s' has no tensor '%s.in.%s' for input '%s' of recipe '%s'",
                       cs, cs, in->name, in->name, ir->name);
}

/* Every in.* tensor of the case must mean something to the recipe. */
static fla_status check_extra_inputs_(fla_ctx *ctx, const fla_safetensors *st, const char *cs,
                                      const fla_ir *ir, case_tensors *c) {
  char prefix[128];
  int plen = snprintf(prefix, sizeof prefix, "%s.in.", cs);
  for (int t = 0; t < fla_safetensors_count(st); t++) {
    const char *full = fla_safetensors_name(st, t);
    if (strncmp(full, prefix, (size_t)plen) != 0) continue;
    const char *x = full + plen;
    int known = !strcmp(x, "h0") || !strcmp(x, "do") || !strcmp(x, "dht");
    for (int i = 0; !known && i < ir->num_inputs; i++) known = !strcmp(c->file_name[i], x);
    if (!known && ir->decay == FLA_DECAY_CONST && !strcmp(x, "g")) {
      fla_status s = load_(ctx, st, cs, "in", "g", &c->ref_g);
      if (s != FLA_OK) return s;
      known = 1;
    }
    if (!known)
      return fla_set_error(ctx, FLA_INVALID, "case '%s' has input '%s' that recipe '%s' does not take",
                           cs, full, ir->name);
  }
  return FLA_OK;
}

static fla_status load_case_(fla_ctx *ctx, const fla_safetensors *st, const char *cs,
                             const fla_ir *ir, case_tensors *c) {
  fla_status s = FLA_OK;
  for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) s = find_input_(ctx, st, cs, ir, i, c);
  if (s == FLA_OK) s = check_extra_inputs_(ctx, st, cs, ir, c);
  if (s == FLA_OK && !has_(st, cs, "out", "o"))
    s = fla_set_error(ctx, FLA_INVALID, "case '%s' has no tensor '%s.out.o'", cs, cs);
  if (s == FLA_OK) s = load_(ctx, st, cs, "out", "o", &c->ref_o);
  if (s == FLA_OK && has_(st, cs, "out", "ht")) s = load_(ctx, st, cs, "out", "ht", &c->ref_ht);
  if (s == FLA_OK && has_(st, cs, "in", "h0")) s = load_(ctx, st, cs, "in", "h0", &c->h0);
  if (s == FLA_OK && has_(st, cs, "in", "do")) s = load_(ctx, st, cs, "in", "do", &c->d_o);
  if (s == FLA_OK && has_(st, cs, "in", "dht")) s = load_(ctx, st, cs, "in", "dht", &c->dht);
  return s;
}

static double rel_rms_(const fla_tensor *a, const fla_tensor *b) {
  const float *x = fla_tensor_data((fla_tensor *)a), *y = fla_tensor_data((fla_tensor *)b);
  double num = 0, den = 0;
  for (int64_t i = 0; i < fla_tensor_numel(a); i++) {
    double d = (double)x[i] - y[i];
    num += d * d;
    den += (double)y[i] * y[i];
  }
  if (isnan(num)) return NAN;
  return den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0);
}

static void add_row_(fla_check_row *rows, int *n, const char *name, double err, double tol) {
  if (*n >= FLA_CHECK_MAX_ROWS) return;
  size_t len = strnlen(name, sizeof rows[*n].tensor - 1);
  memcpy(rows[*n].tensor, name, len);
  rows[*n].tensor[len] = '\0';
  rows[*n].rel_rms = err;
  rows[*n].tol = tol;
  (*n)++;
}

/* Shape of the binding, read off the query and value tensors. */
static void config_from_case_(const fla_ir *ir, const case_tensors *c, fla_op_config *cfg) {
  const int64_t *qs = fla_tensor_shape(c->in[ir->query]);
  const int64_t *vs = fla_tensor_shape(c->in[ir->value]);
  memset(cfg, 0, sizeof *cfg);
  cfg->B = qs[0], cfg->T = qs[1], cfg->H = qs[2], cfg->K = qs[3], cfg->V = vs[3];
}

/* The recipe's constant decay against the case's in.g (retention). */
static fla_status compare_const_decay_(fla_ctx *ctx, const fla_recipe *r, const fla_op_config *cfg,
                                       const case_tensors *c, double tol, fla_check_row *rows, int *n) {
  double *gamma = malloc(sizeof(double) * (size_t)cfg->H);
  if (!gamma) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  const fla_ir *ir = fla_recipe_ir(r);
  double params[FLA_MAX_PARAMS];
  for (int i = 0; i < ir->num_params; i++) params[i] = ir->params[i].value;
  fla_status s = fla_recipe_const_decay(ctx, r, (int)cfg->H, params, gamma);
  if (s == FLA_OK) {
    const float *g = fla_tensor_data(c->ref_g);
    double num = 0, den = 0;
    for (int64_t t = 0; t < cfg->B * cfg->T; t++)
      for (int64_t h = 0; h < cfg->H; h++) {
        double d = gamma[h] - g[t * cfg->H + h];
        num += d * d, den += (double)g[t * cfg->H + h] * g[t * cfg->H + h];
      }
    add_row_(rows, n, "g (const decay)", den > 0 ? sqrt(num / den) : sqrt(num), tol);
  }
  free(gamma);
  return s;
}

/* A host f32 copy of t (which may be a device tensor of another dtype). */
static fla_status to_host_f32_(fla_ctx *hc, fla_ctx *ctx, const fla_tensor *t, fla_tensor **out) {
  fla_status s = fla_tensor_new(hc, FLA_F32, fla_tensor_ndim(t), fla_tensor_shape(t), out);
  if (s == FLA_OK) s = fla_tensor_copy_to(ctx, t, fla_tensor_data(*out), FLA_F32, fla_tensor_numel(t));
  return s;
}

/* o in the inputs' dtype on the GPU (the kernels write that), f32 on the CPU;
** ht f32. Both poisoned with NaN, read back to host f32 for the comparison. */
static fla_status run_forward_(fla_ctx *ctx, fla_ctx *hc, fla_op *op, case_tensors *c,
                               fla_arg *args, int nargs, fla_dtype dtype, double tol,
                               fla_check_row *rows, int *n) {
  fla_tensor *o = NULL, *ht = NULL, *ho = NULL, *hht = NULL;
  int gpu = fla_ctx_on_gpu(ctx);
  const int64_t *os = fla_tensor_shape(c->ref_o);
  fla_status s = fla_tensor_new(ctx, gpu ? dtype : FLA_F32, 4, os, &o);
  if (s == FLA_OK && c->ref_ht) s = fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(c->ref_ht), &ht);
  if (s == FLA_OK) s = fla_tensor_fill(ctx, o, NAN);
  if (s == FLA_OK && ht) s = fla_tensor_fill(ctx, ht, NAN);
  if (s == FLA_OK) s = fla_op_forward(op, args, nargs, o, ht);
  if (s == FLA_OK) s = to_host_f32_(hc, ctx, o, &ho);
  if (s == FLA_OK && ht) s = to_host_f32_(hc, ctx, ht, &hht);
  if (s == FLA_OK) {
    add_row_(rows, n, "o", rel_rms_(ho, c->ref_o), tol);
    if (ht) add_row_(rows, n, "ht", rel_rms_(hht, c->ref_ht), tol);
  }
  fla_tensor_free(o), fla_tensor_free(ht), fla_tensor_free(ho), fla_tensor_free(hht);
  return s;
}

/* The tensor the op runs on for a host f32 case tensor: itself on the CPU in
** f32, else a new tensor of ctx in dtype (uploaded on a GPU context). */
static fla_status run_input_(fla_ctx *ctx, fla_tensor *host, fla_dtype dtype, fla_tensor **out) {
  if (!fla_ctx_on_gpu(ctx) && dtype == FLA_F32) {
    *out = host;
    return FLA_OK;
  }
  fla_status s = fla_tensor_new(ctx, dtype, fla_tensor_ndim(host), fla_tensor_shape(host), out);
  if (s == FLA_OK)
    s = fla_tensor_copy_from(ctx, *out, fla_tensor_data(host), FLA_F32, fla_tensor_numel(host));
  return s;
}

/* Every gradient the case holds. On the GPU, d_o is uploaded in dtype and
** dht in f32, input gradients are device tensors of dtype (dh0 f32), read
** back to host f32 for the comparison. bf16 runs compare gates and rates
** against max(tol, 2e-2) (fla's thresholds for dg, dgk, dbeta). */
static fla_status run_backward_(fla_ctx *ctx, fla_ctx *hc, const fla_safetensors *st, const char *cs,
                                fla_op *op, const fla_ir *ir, case_tensors *c, fla_arg *args,
                                int nargs, fla_dtype dtype, double tol, fla_check_row *rows, int *n) {
  int gpu = fla_ctx_on_gpu(ctx);
  fla_arg grads[FLA_IR_MAX_INPUTS + 1];
  fla_tensor *refs[FLA_IR_MAX_INPUTS + 1] = {0};
  double tols[FLA_IR_MAX_INPUTS + 1];
  char gname[FLA_IR_MAX_INPUTS + 1][80], fname[80];
  int ng = 0;
  fla_status s = FLA_OK;
  fla_tensor *d_o = c->d_o, *dht = c->dht;
  if (gpu) {
    d_o = dht = NULL;
    s = run_input_(ctx, c->d_o, dtype, &d_o);
    if (s == FLA_OK && c->dht) s = run_input_(ctx, c->dht, FLA_F32, &dht);
  }
  for (int i = 0; s == FLA_OK && i <= ir->num_inputs; i++) {
    const char *x = i < ir->num_inputs ? c->file_name[i] : "h0";
    snprintf(fname, sizeof fname, "d%s", x);
    if (!has_(st, cs, "grad", fname)) continue;
    s = load_(hc, st, cs, "grad", fname, &refs[ng]);
    if (s != FLA_OK) break;
    snprintf(gname[ng], sizeof gname[ng], "d%s", i < ir->num_inputs ? ir->inputs[i].name : "h0");
    grads[ng].name = gname[ng];
    int gate = i < ir->num_inputs && (i == ir->decay_input || i == ir->rate);
    tols[ng] = dtype == FLA_BF16 && gate && tol < 2e-2 ? 2e-2 : tol;
    fla_dtype gd = gpu && i < ir->num_inputs ? dtype : FLA_F32;
    s = fla_tensor_new(ctx, gd, fla_tensor_ndim(refs[ng]), fla_tensor_shape(refs[ng]),
                       &grads[ng].tensor);
    if (s == FLA_OK) fla_tensor_fill(ctx, grads[ng].tensor, NAN);
    ng++;
    if (s != FLA_OK) grads[ng - 1].tensor = NULL;
  }
  if (s == FLA_OK) s = fla_op_backward(op, args, nargs, d_o, dht, grads, ng);
  for (int j = 0; j < ng; j++) {
    fla_tensor *host = NULL;
    if (s == FLA_OK) s = to_host_f32_(hc, ctx, grads[j].tensor, &host);
    if (s == FLA_OK) add_row_(rows, n, grads[j].name, rel_rms_(host, refs[j]), tols[j]);
    fla_tensor_free(host);
    fla_tensor_free(grads[j].tensor);
    fla_tensor_free(refs[j]);
  }
  if (gpu) fla_tensor_free(d_o), fla_tensor_free(dht);
  return s;
}

fla_status fla_check_case(fla_ctx *ctx, const fla_recipe *r, const fla_safetensors *st,
                          const char *name, fla_algo algo, double tol, fla_check_row *rows,
                          int *nrows) {
  return fla_check_case_ex(ctx, r, st, name, algo, FLA_F32, tol, rows, nrows, NULL);
}

fla_status fla_check_case_ex(fla_ctx *ctx, const fla_recipe *r, const fla_safetensors *st,
                             const char *name, fla_algo algo, fla_dtype dtype, double tol,
                             fla_check_row *rows, int *nrows, int *backward_skipped) {
  if (backward_skipped) *backward_skipped = 0;
  if (!ctx || !r || !st || !name || !rows || !nrows)
    return fla_set_error(ctx, FLA_INVALID, "fla_check_case: NULL argument");
  if (dtype != FLA_F32 && dtype != FLA_BF16)
    return fla_set_error(ctx, FLA_INVALID, "fla_check_case: dtype %s (f32 or bf16)", fla_dtype_name(dtype));
  *nrows = 0;
  int gpu = fla_ctx_on_gpu(ctx);
  /* The case is read and compared on the host: a CPU context of our own on a GPU. */
  fla_ctx *hc = ctx;
  if (gpu && fla_ctx_create(FLA_BACKEND_CPU, &hc) != FLA_OK)
    return fla_set_error(ctx, FLA_NOMEM, "fla_check_case: cannot create a host context");
  const fla_ir *ir = fla_recipe_ir(r);
  case_tensors c;
  memset(&c, 0, sizeof c);
  fla_tensor *run_in[FLA_IR_MAX_INPUTS] = {0}, *run_h0 = NULL;
  fla_status s = load_case_(hc, st, name, ir, &c);
  if (s != FLA_OK && hc != ctx) fla_set_error(ctx, s, "%s", fla_errmsg(hc));
  fla_op *op = NULL;
  fla_op_config cfg;
  if (s == FLA_OK) {
    config_from_case_(ir, &c, &cfg);
    cfg.algo = algo;
    s = fla_op_bind(ctx, r, &cfg, &op);
  }
  if (s == FLA_OK && c.ref_g) s = compare_const_decay_(ctx, r, &cfg, &c, tol, rows, nrows);
  fla_arg args[FLA_IR_MAX_INPUTS + 1];
  int nargs = 0;
  for (int i = 0; s == FLA_OK && i < ir->num_inputs; i++) {
    s = run_input_(ctx, c.in[i], dtype, &run_in[i]);
    args[nargs++] = (fla_arg){ir->inputs[i].name, run_in[i]};
  }
  if (s == FLA_OK && c.h0) { /* states stay f32 */
    s = run_input_(ctx, c.h0, FLA_F32, &run_h0);
    args[nargs++] = (fla_arg){"h0", run_h0};
  }
  if (s == FLA_OK) s = run_forward_(ctx, hc, op, &c, args, nargs, dtype, tol, rows, nrows);
  if (s == FLA_OK && c.d_o)
    s = run_backward_(ctx, hc, st, name, op, ir, &c, args, nargs, dtype, tol, rows, nrows);
  for (int i = 0; i < FLA_IR_MAX_INPUTS; i++)
    if (run_in[i] != c.in[i]) fla_tensor_free(run_in[i]);
  if (run_h0 != c.h0) fla_tensor_free(run_h0);
  fla_op_free(op);
  case_free_(&c);
  if (hc != ctx) fla_ctx_free(hc);
  return s;
}

int fla_check_list_cases(const fla_safetensors *st, char (*names)[64], int cap) {
  int n = 0;
  for (int t = 0; t < fla_safetensors_count(st); t++) {
    const char *full = fla_safetensors_name(st, t);
    size_t len = strlen(full);
    if (len <= 6 || strcmp(full + len - 6, ".out.o") != 0 || len - 6 >= 64) continue;
    if (n < cap) {
      memcpy(names[n], full, len - 6);
      names[n][len - 6] = '\0';
    }
    n++;
  }
  return n;
}
