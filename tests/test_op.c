/*
** test_op.c -- the op API: binding, argument checks and their messages, and
** the chunked algorithm against the recurrent oracle for every shipped recipe
** on random data of awkward shapes (T = 1, 63, 64, 65, 500; K, V not powers
** of two; with and without an initial state; variable-length batches with a
** length-1 sequence).
*/
#include "harness.h"
#include "testdata.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static fla_ctx *ctx;
static const char *recipes[64];
static int nrecipes;

static void setup(void) {
  ck_assert_int_eq(fla_ctx_create(FLA_BACKEND_CPU, &ctx), FLA_OK);
  nrecipes = fla_recipe_list_builtin(recipes, 64);
  ck_assert_int_ge(nrecipes, 13);
}

static void teardown(void) { fla_ctx_free(ctx); }

/* ----------------------------------------------- chunked vs recurrent */

typedef struct {
  fla_tensor *o, *ht;
  int ng;
  fla_arg grads[12];
  char names[12][80];
} outputs;

static void outputs_new(const fla_testdata *td, outputs *out) {
  memset(out, 0, sizeof *out);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->d_o), &out->o), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->dht), &out->ht), FLA_OK);
  fla_tensor_fill(ctx, out->o, NAN);  /* poisoned: every element must be written */
  fla_tensor_fill(ctx, out->ht, NAN);
  for (int i = 0; i < td->n; i++) {
    if (!strcmp(td->args[i].name, "cu_seqlens")) continue;
    snprintf(out->names[out->ng], sizeof out->names[0], "d%s", td->args[i].name);
    out->grads[out->ng].name = out->names[out->ng];
    fla_tensor *g;
    ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, fla_tensor_ndim(td->args[i].tensor),
                                    fla_tensor_shape(td->args[i].tensor), &g), FLA_OK);
    fla_tensor_fill(ctx, g, NAN);
    out->grads[out->ng++].tensor = g;
  }
  /* dh0 even without h0: the gradient with respect to a zero initial state */
  if (out->ng < 12 && strcmp(out->names[out->ng - 1], "dh0") != 0) {
    snprintf(out->names[out->ng], sizeof out->names[0], "dh0");
    out->grads[out->ng].name = out->names[out->ng];
    ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(td->dht), &out->grads[out->ng].tensor), FLA_OK);
    fla_tensor_fill(ctx, out->grads[out->ng].tensor, NAN);
    out->ng++;
  }
}

static void outputs_free(outputs *out) {
  fla_tensor_free(out->o);
  fla_tensor_free(out->ht);
  for (int i = 0; i < out->ng; i++) fla_tensor_free(out->grads[i].tensor);
}

static void run_algo(const fla_recipe *r, fla_op_config cfg, fla_algo algo, const fla_testdata *td,
                     outputs *out) {
  fla_op *op;
  cfg.algo = algo;
  ck_assert_msg(fla_op_bind(ctx, r, &cfg, &op) == FLA_OK, "%s", fla_errmsg(ctx));
  outputs_new(td, out);
  ck_assert_msg(fla_op_forward(op, td->args, td->n, out->o, out->ht) == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert_msg(fla_op_backward(op, td->args, td->n, td->d_o, td->dht, out->grads, out->ng) == FLA_OK,
                "%s", fla_errmsg(ctx));
  fla_op_free(op);
}

/* Relative RMS error; where the reference is exactly zero (dg of a decay that
** only ever multiplies a zero state, T = 1 without h0) the absolute RMS, since
** the chunked form cancels such terms only up to rounding. Inputs are O(1). */
static double err_(fla_tensor *a, fla_tensor *b) {
  int64_t n = fla_tensor_numel(a);
  const float *x = fla_tensor_data(a), *y = fla_tensor_data(b);
  ck_assert_msg(!th_any_nan_f32(x, n), "NaN left in an output");
  double ref = 0;
  for (int64_t i = 0; i < n; i++) ref += (double)y[i] * y[i];
  if (ref > 0) return th_rel_rms_f32(x, y, n);
  double abs2 = 0;
  for (int64_t i = 0; i < n; i++) abs2 += (double)x[i] * x[i];
  return n > 0 ? sqrt(abs2 / (double)n) : 0;
}

static void compare_recipe(const char *name, fla_op_config cfg, int with_h0, uint64_t seed) {
  fla_recipe *r;
  ck_assert_msg(fla_recipe_find(ctx, name, &r) == FLA_OK, "%s", fla_errmsg(ctx));
  fla_testdata td;
  ck_assert_msg(fla_testdata_make(ctx, r, &cfg, with_h0, FLA_F32, seed, &td) == FLA_OK, "%s",
                fla_errmsg(ctx));
  outputs c, rec;
  run_algo(r, cfg, FLA_ALGO_CHUNK, &td, &c);
  run_algo(r, cfg, FLA_ALGO_RECURRENT, &td, &rec);
  const char *where = "B,T,H,K,V";
  char label[160];
  snprintf(label, sizeof label, "%s %s=%lld,%lld,%lld,%lld,%lld N=%lld h0=%d", name, where,
           (long long)cfg.B, (long long)cfg.T, (long long)cfg.H, (long long)cfg.K, (long long)cfg.V,
           (long long)cfg.num_seqs, with_h0);
  double e = err_(c.o, rec.o);
  ck_assert_msg(e < 1e-4, "%s: o rel_rms %.3e", label, e);
  e = err_(c.ht, rec.ht);
  ck_assert_msg(e < 1e-4, "%s: ht rel_rms %.3e", label, e);
  for (int i = 0; i < c.ng; i++) {
    e = err_(c.grads[i].tensor, rec.grads[i].tensor);
    ck_assert_msg(e < 1e-4, "%s: %s rel_rms %.3e", label, c.names[i], e);
  }
  outputs_free(&c);
  outputs_free(&rec);
  fla_testdata_free(&td);
  fla_recipe_free(r);
}

static int64_t key_dim_(const char *name, int64_t K) {
  return strcmp(name, "based") == 0 ? 6 : K;  /* taylor2: the state is 1+K+K^2 wide */
}

START_TEST(test_chunk_vs_recurrent_dense) {
  static const int64_t Ts[] = {1, 63, 64, 65, 500};
  static const int64_t KV[][2] = {{48, 100}, {100, 48}};
  int quick = th_quick();
  for (int t = 0; t < 5; t++) {
    if (quick && (Ts[t] == 63 || Ts[t] == 500)) continue;
    for (int kv = 0; kv < 2; kv++) {
      if (quick && kv == 1) continue;
      for (int h0 = 0; h0 < 2; h0++) {
        const char *name = recipes[_i];
        fla_op_config cfg = {.B = 2, .T = Ts[t], .H = 2, .K = key_dim_(name, KV[kv][0]), .V = KV[kv][1]};
        compare_recipe(name, cfg, h0, (uint64_t)(100 * t + 10 * kv + h0));
      }
    }
  }
}
END_TEST

START_TEST(test_chunk_vs_recurrent_varlen) {
  const char *name = recipes[_i];
  fla_op_config cfg = {.B = 1, .T = th_quick() ? 150 : 400, .H = 2, .K = key_dim_(name, 48), .V = 100,
                       .num_seqs = 4};
  compare_recipe(name, cfg, 1, 7);
  cfg.chunk_size = 16;
  compare_recipe(name, cfg, 0, 8);
}
END_TEST

/* --------------------------------------------------------- API errors */

typedef struct {
  fla_recipe *r;
  fla_op *op;
  fla_testdata td;
  fla_tensor *o;
} gla_fixture;

static void gla_open(gla_fixture *f, int64_t num_seqs) {
  ck_assert_int_eq(fla_recipe_find(ctx, "gla", &f->r), FLA_OK);
  fla_op_config cfg = {.B = num_seqs ? 1 : 2, .T = 10, .H = 2, .K = 4, .V = 3, .num_seqs = num_seqs};
  ck_assert_int_eq(fla_op_bind(ctx, f->r, &cfg, &f->op), FLA_OK);
  ck_assert_int_eq(fla_testdata_make(ctx, f->r, &cfg, 0, FLA_F32, 1, &f->td), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(f->td.d_o), &f->o), FLA_OK);
  fla_tensor_fill(ctx, f->o, 7.0);
}

static void gla_close(gla_fixture *f) {
  /* nothing is written on error */
  const float *o = fla_tensor_data(f->o);
  for (int64_t i = 0; i < fla_tensor_numel(f->o); i++) ck_assert(o[i] == 7.0f);
  fla_tensor_free(f->o);
  fla_testdata_free(&f->td);
  fla_op_free(f->op);
  fla_recipe_free(f->r);
}

static void expect_(fla_status got, fla_status want, const char *substr) {
  ck_assert_msg(got == want, "status %s, expected %s (%s)", fla_errstr(got), fla_errstr(want), fla_errmsg(ctx));
  ck_assert_msg(strstr(fla_errmsg(ctx), substr), "message '%s' lacks '%s'", fla_errmsg(ctx), substr);
}

START_TEST(test_bind_errors) {
  fla_recipe *r;
  fla_op *op;
  ck_assert_int_eq(fla_recipe_find(ctx, "lightning_attn", &r), FLA_OK);
  fla_op_config cfg = {.B = 0, .T = 4, .H = 2, .K = 4, .V = 4};
  expect_(fla_op_bind(ctx, r, &cfg, &op), FLA_SHAPE, "B = 0");
  ck_assert_ptr_null(op);
  cfg.B = 2, cfg.num_seqs = 3;
  expect_(fla_op_bind(ctx, r, &cfg, &op), FLA_SHAPE, "needs B = 1");
  cfg.num_seqs = 0, cfg.chunk_size = 48;
  expect_(fla_op_bind(ctx, r, &cfg, &op), FLA_INVALID, "chunk_size 48");
  cfg.chunk_size = 0, cfg.num_params = 1, cfg.param_names[0] = "layer_index", cfg.param_values[0] = 1;
  expect_(fla_op_bind(ctx, r, &cfg, &op), FLA_INVALID, "no parameter 'layer_index'");
  cfg.param_names[0] = "layer_idx";
  ck_assert_int_eq(fla_op_bind(ctx, r, &cfg, &op), FLA_OK);
  fla_op_free(op);
  fla_recipe_free(r);
}
END_TEST

START_TEST(test_forward_errors) {
  gla_fixture f;
  gla_open(&f, 0);
  fla_arg args[8];
  memcpy(args, f.td.args, sizeof(fla_arg) * (size_t)f.td.n);
  int n = f.td.n;
  expect_(fla_op_forward(f.op, args, n - 1, f.o, NULL), FLA_INVALID, "is missing");
  args[n] = (fla_arg){"q2", args[0].tensor};
  expect_(fla_op_forward(f.op, args, n + 1, f.o, NULL), FLA_INVALID, "unknown input 'q2'");
  args[n] = args[0];
  expect_(fla_op_forward(f.op, args, n + 1, f.o, NULL), FLA_INVALID, "given twice");
  /* v in the place of q: [2, 10, 2, 3] where [2, 10, 2, 4] is expected */
  fla_tensor *q = args[0].tensor;
  for (int i = 0; i < n; i++)
    if (!strcmp(args[i].name, "v")) args[0].tensor = args[i].tensor;
  args[0].name = "q";
  expect_(fla_op_forward(f.op, args, n, f.o, NULL), FLA_SHAPE, "has shape [2, 10, 2, 3], expected [2, 10, 2, 4]");
  args[0].tensor = q;
  fla_tensor *ht;
  int64_t bad[4] = {2, 2, 4, 4};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, bad, &ht), FLA_OK);
  expect_(fla_op_forward(f.op, args, n, f.o, ht), FLA_SHAPE, "output 'ht'");
  fla_tensor_free(ht);
  fla_tensor *qi;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_I32, 4, fla_tensor_shape(q), &qi), FLA_OK);
  args[0].tensor = qi;
  expect_(fla_op_forward(f.op, args, n, f.o, NULL), FLA_INVALID, "dtype i32");
  fla_tensor_free(qi);
  gla_close(&f);
}
END_TEST

START_TEST(test_varlen_errors) {
  gla_fixture f;
  gla_open(&f, 3);
  int64_t *cu = NULL;
  for (int i = 0; i < f.td.n; i++)
    if (!strcmp(f.td.args[i].name, "cu_seqlens")) cu = fla_tensor_data(f.td.args[i].tensor);
  ck_assert_ptr_nonnull(cu);
  int64_t saved[4];
  memcpy(saved, cu, sizeof saved);
  cu[3] = 9;
  expect_(fla_op_forward(f.op, f.td.args, f.td.n, f.o, NULL), FLA_INVALID, "must end at T = 10");
  memcpy(cu, saved, sizeof saved);
  cu[2] = 0;
  expect_(fla_op_forward(f.op, f.td.args, f.td.n, f.o, NULL), FLA_INVALID, "decreases at index 2");
  memcpy(cu, saved, sizeof saved);
  expect_(fla_op_forward(f.op, f.td.args, f.td.n - 1, f.o, NULL), FLA_INVALID, "'cu_seqlens' is missing");
  gla_close(&f);
}
END_TEST

START_TEST(test_backward_errors) {
  gla_fixture f;
  gla_open(&f, 0);
  fla_tensor *dq;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(f.td.d_o), &dq), FLA_OK);
  fla_arg grads[1] = {{"dq", dq}};
  expect_(fla_op_backward(f.op, f.td.args, f.td.n, f.td.d_o, NULL, grads, 1), FLA_SHAPE, "gradient 'dq'");
  grads[0].name = "dz";
  expect_(fla_op_backward(f.op, f.td.args, f.td.n, f.td.d_o, NULL, grads, 1), FLA_INVALID,
          "unknown gradient 'dz'");
  fla_tensor_free(dq);
  gla_close(&f);
}
END_TEST

/* bf16 inputs are rounded once, then computed exactly like f32 copies of the
** rounded values. */
START_TEST(test_bf16_inputs) {
  fla_recipe *r;
  ck_assert_int_eq(fla_recipe_find(ctx, "gated_delta_rule", &r), FLA_OK);
  fla_op_config cfg = {.B = 1, .T = 70, .H = 2, .K = 16, .V = 8};
  fla_op *op;
  ck_assert_int_eq(fla_op_bind(ctx, r, &cfg, &op), FLA_OK);
  fla_testdata tb, tf;
  ck_assert_int_eq(fla_testdata_make(ctx, r, &cfg, 1, FLA_BF16, 3, &tb), FLA_OK);
  ck_assert_int_eq(fla_testdata_make(ctx, r, &cfg, 1, FLA_F32, 3, &tf), FLA_OK);
  for (int i = 0; i < tb.n; i++) {  /* f32 copies of the bf16 values */
    int64_t n = fla_tensor_numel(tb.args[i].tensor);
    float *tmp = malloc(sizeof(float) * (size_t)n);
    ck_assert_int_eq(fla_tensor_copy_to(ctx, tb.args[i].tensor, tmp, FLA_F32, n), FLA_OK);
    ck_assert_int_eq(fla_tensor_copy_from(ctx, tf.args[i].tensor, tmp, FLA_F32, n), FLA_OK);
    free(tmp);
  }
  fla_tensor *ob, *of;
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(tb.d_o), &ob), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 4, fla_tensor_shape(tb.d_o), &of), FLA_OK);
  ck_assert_int_eq(fla_op_forward(op, tb.args, tb.n, ob, NULL), FLA_OK);
  ck_assert_int_eq(fla_op_forward(op, tf.args, tf.n, of, NULL), FLA_OK);
  ck_assert(memcmp(fla_tensor_data(ob), fla_tensor_data(of), sizeof(float) * (size_t)fla_tensor_numel(of)) == 0);
  fla_tensor_free(ob), fla_tensor_free(of);
  fla_testdata_free(&tb), fla_testdata_free(&tf);
  fla_op_free(op);
  fla_recipe_free(r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("op");
  TCase *api = tcase_create("api");
  tcase_add_checked_fixture(api, setup, teardown);
  tcase_add_test(api, test_bind_errors);
  tcase_add_test(api, test_forward_errors);
  tcase_add_test(api, test_varlen_errors);
  tcase_add_test(api, test_backward_errors);
  tcase_add_test(api, test_bf16_inputs);
  suite_add_tcase(s, api);
  TCase *cmp = tcase_create("chunk_vs_recurrent");
  tcase_add_checked_fixture(cmp, setup, teardown);
  tcase_set_timeout(cmp, 1200);
  /* one loop iteration per shipped recipe (13 at the time of writing) */
  const char *names[64];
  int n = fla_recipe_list_builtin(names, 64);
  tcase_add_loop_test(cmp, test_chunk_vs_recurrent_dense, 0, n);
  tcase_add_loop_test(cmp, test_chunk_vs_recurrent_varlen, 0, n);
  suite_add_tcase(s, cmp);
  return th_run_suite(s);
}
