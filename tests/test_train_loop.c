/*
** test_train_loop.c -- the training loop around the gradients (train/): AdamW
** against a hand-computed reference, schedules, clipping, token files, the loader
** (windows, shuffle determinism, resume position), checkpoints (round trip,
** fla_model_load reading them, a crash half-way), and training that resumes bit
** for bit, lowers the loss and runs documents separately.
*/
#define _XOPEN_SOURCE 700
#include "harness.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

static int remove_entry_(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}
static void remove_tree_(const char *dir) { nftw(dir, remove_entry_, 16, FTW_DEPTH | FTW_PHYS); }

static char *temp_dir_(void) {
  static char dir[64];
  snprintf(dir, sizeof dir, "/tmp/fla-train-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  return dir;
}

/* A parameter with its own memory. */
typedef struct {
  fla_param p;
  float *data, *grad;
} own_param;

static void make_param_(own_param *o, const char *name, int ndim, const int64_t *shape) {
  memset(o, 0, sizeof *o);
  o->p.name = name;
  o->p.ndim = ndim;
  o->p.numel = 1;
  for (int d = 0; d < ndim; d++) o->p.shape[d] = shape[d], o->p.numel *= shape[d];
  o->data = o->p.data = calloc((size_t)o->p.numel, sizeof(float));
  o->grad = o->p.grad = calloc((size_t)o->p.numel, sizeof(float));
  ck_assert(o->data && o->grad);
}

/* ------------------------------------------------------------- AdamW */

/* AdamW by hand in double: the reference the float32 optimizer must match. */
START_TEST(test_adamw_matches_hand_computation) {
  fla_ctx *ctx = th_cpu_ctx();
  int64_t s_w[2] = {2, 3}, s_n[1] = {3}, s_e[2] = {4, 2};
  own_param ps[3];
  make_param_(&ps[0], "model.layers.0.attn.q_proj.weight", 2, s_w);
  make_param_(&ps[1], "model.layers.0.attn_norm.weight", 1, s_n);
  make_param_(&ps[2], "model.embeddings.weight", 2, s_e);
  fla_param arr[3] = {ps[0].p, ps[1].p, ps[2].p};
  th_rng r;
  th_seed(&r, 7);
  double ref_p[3][8], ref_m[3][8] = {{0}}, ref_v[3][8] = {{0}};
  for (int i = 0; i < 3; i++)
    for (int64_t j = 0; j < arr[i].numel; j++) ref_p[i][j] = arr[i].data[j] = (float)th_normal(&r);
  fla_adamw_options o = {0.9f, 0.95f, 1e-8f, 0.1f};
  fla_adamw *a = NULL;
  ck_assert_int_eq(fla_adamw_new(ctx, 3, arr, &o, &a), FLA_OK);
  ck_assert_int_eq(fla_adamw_decays(a, 0), 1);  /* a projection */
  ck_assert_int_eq(fla_adamw_decays(a, 1), 0);  /* a norm */
  ck_assert_int_eq(fla_adamw_decays(a, 2), 0);  /* an embedding */
  const double lrs[4] = {1e-2, 3e-2, 2e-2, 5e-3};
  for (int t = 1; t <= 4; t++) {
    for (int i = 0; i < 3; i++)
      for (int64_t j = 0; j < arr[i].numel; j++) arr[i].grad[j] = (float)(th_normal(&r) * (t == 3 ? 1e-4 : 1.0));
    for (int i = 0; i < 3; i++) {
      int decay = i == 0;
      for (int64_t j = 0; j < arr[i].numel; j++) {
        double g = arr[i].grad[j];
        ref_m[i][j] = 0.9 * ref_m[i][j] + 0.1 * g;
        ref_v[i][j] = 0.95 * ref_v[i][j] + 0.05 * g * g;
        double mhat = ref_m[i][j] / (1 - pow(0.9, t)), vhat = ref_v[i][j] / (1 - pow(0.95, t));
        if (decay) ref_p[i][j] *= 1 - lrs[t - 1] * 0.1;
        ref_p[i][j] -= lrs[t - 1] * mhat / (sqrt(vhat) + 1e-8);
      }
    }
    ck_assert_int_eq(fla_adamw_step(a, (float)lrs[t - 1]), FLA_OK);
    ck_assert_int_eq(fla_adamw_step_count(a), t);
    for (int i = 0; i < 3; i++)
      for (int64_t j = 0; j < arr[i].numel; j++)
        ck_assert_msg(fabs(arr[i].data[j] - ref_p[i][j]) < 2e-6 * (1 + fabs(ref_p[i][j])),
                      "step %d param %d[%lld]: %.9g, reference %.9g", t, i, (long long)j, arr[i].data[j], ref_p[i][j]);
  }
  /* The first step moves every element by about lr (the update is m/sqrt(v) = sign g). */
  fla_adamw_free(a);
  for (int i = 0; i < 3; i++) free(ps[i].data), free(ps[i].grad);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_adamw_rejects_bad_input) {
  fla_ctx *ctx = th_cpu_ctx();
  int64_t shape[1] = {4};
  own_param a, b;
  make_param_(&a, "w", 1, shape);
  make_param_(&b, "w", 1, shape);
  fla_param two[2] = {a.p, b.p};
  fla_adamw_options o = {0.9f, 0.95f, 1e-8f, 0.1f};
  fla_adamw *opt = NULL;
  ck_assert_int_eq(fla_adamw_new(ctx, 2, two, &o, &opt), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "'w' appears twice"));
  fla_adamw_options bad = {1.0f, 0.95f, 1e-8f, 0.1f};
  ck_assert_int_eq(fla_adamw_new(ctx, 1, two, &bad, &opt), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "betas"));
  ck_assert_int_eq(fla_adamw_new(ctx, 0, two, &o, &opt), FLA_INVALID);
  ck_assert_ptr_null(opt);
  free(a.data), free(a.grad), free(b.data), free(b.grad);
  fla_ctx_free(ctx);
}
END_TEST

/* Saving and loading the state, then stepping both copies: identical bits. */
START_TEST(test_adamw_state_round_trip) {
  fla_ctx *ctx = th_cpu_ctx();
  char *dir = temp_dir_();
  int64_t shape[2] = {3, 5};
  own_param x, y;
  make_param_(&x, "model.layers.0.mlp.up_proj.weight", 2, shape);
  make_param_(&y, "model.layers.0.mlp.up_proj.weight", 2, shape);
  th_rng r;
  th_seed(&r, 3);
  for (int i = 0; i < 15; i++) x.data[i] = y.data[i] = (float)th_normal(&r), x.grad[i] = (float)th_normal(&r);
  fla_adamw_options o = {0.9f, 0.99f, 1e-8f, 0.01f};
  fla_adamw *a = NULL, *b = NULL;
  ck_assert_int_eq(fla_adamw_new(ctx, 1, &x.p, &o, &a), FLA_OK);
  ck_assert_int_eq(fla_adamw_new(ctx, 1, &y.p, &o, &b), FLA_OK);
  for (int t = 0; t < 3; t++) ck_assert_int_eq(fla_adamw_step(a, 0.01f), FLA_OK);
  memcpy(y.data, x.data, sizeof(float) * 15);
  char path[128];
  snprintf(path, sizeof path, "%s/opt.safetensors", dir);
  ck_assert_int_eq(fla_adamw_save(a, path), FLA_OK);
  ck_assert_int_eq(fla_adamw_load(b, path), FLA_OK);
  ck_assert_int_eq(fla_adamw_step_count(b), 3);
  memcpy(y.grad, x.grad, sizeof(float) * 15);
  ck_assert_int_eq(fla_adamw_step(a, 0.02f), FLA_OK);
  ck_assert_int_eq(fla_adamw_step(b, 0.02f), FLA_OK);
  ck_assert_int_eq(memcmp(x.data, y.data, sizeof(float) * 15), 0);
  /* A state of other shapes is refused, naming the tensor. */
  int64_t other[2] = {5, 3};
  own_param z;
  make_param_(&z, "model.layers.0.mlp.up_proj.weight", 2, other);
  fla_adamw *c = NULL;
  ck_assert_int_eq(fla_adamw_new(ctx, 1, &z.p, &o, &c), FLA_OK);
  ck_assert_int_eq(fla_adamw_load(c, path), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "exp_avg.model.layers.0.mlp.up_proj.weight"));
  fla_adamw_free(a), fla_adamw_free(b), fla_adamw_free(c);
  free(x.data), free(x.grad), free(y.data), free(y.grad), free(z.data), free(z.grad);
  remove_tree_(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_schedules) {
  fla_lr_schedule cosine = {FLA_LR_COSINE, 1e-3, 1e-4, 10, 110};
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 0), 1e-4, 1e-15);     /* (0 + 1) / 10 of the peak */
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 4), 5e-4, 1e-15);
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 9), 1e-3, 1e-15);
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 10), 1e-3, 1e-15);    /* the cosine starts at the peak */
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 60), 5.5e-4, 1e-12);  /* halfway: the mean of peak and floor */
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 35), 1e-4 + 9e-4 * (1 + cos(M_PI / 4)) / 2, 1e-12);
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 110), 1e-4, 1e-15);
  ck_assert_double_eq_tol(fla_lr_at(&cosine, 500), 1e-4, 1e-15);
  for (int s = 11; s < 110; s++) ck_assert(fla_lr_at(&cosine, s) < fla_lr_at(&cosine, s - 1));
  fla_lr_schedule cst = {FLA_LR_CONSTANT, 2e-3, 0, 4, 100};
  ck_assert_double_eq_tol(fla_lr_at(&cst, 1), 1e-3, 1e-15);
  ck_assert_double_eq_tol(fla_lr_at(&cst, 3), 2e-3, 1e-15);
  ck_assert_double_eq_tol(fla_lr_at(&cst, 99), 2e-3, 1e-15);
  fla_lr_schedule nowarm = {FLA_LR_COSINE, 1.0, 0.0, 0, 4};
  ck_assert_double_eq_tol(fla_lr_at(&nowarm, 0), 1.0, 1e-15);
  ck_assert_double_eq_tol(fla_lr_at(&nowarm, 2), 0.5, 1e-12);
}
END_TEST

START_TEST(test_clip_grad_norm) {
  int64_t s2[1] = {2}, s1[1] = {1};
  own_param a, b;
  make_param_(&a, "a", 1, s2);
  make_param_(&b, "b", 1, s1);
  a.grad[0] = 3, a.grad[1] = 0, b.grad[0] = 4;  /* global norm 5 over both */
  fla_param ps[2] = {a.p, b.p};
  ck_assert_double_eq_tol(fla_clip_grad_norm(2, ps, 10.0), 5.0, 1e-12);
  ck_assert_float_eq(a.grad[0], 3.0f);  /* under the limit: untouched */
  ck_assert_double_eq_tol(fla_clip_grad_norm(2, ps, 0.0), 5.0, 1e-12);
  ck_assert_float_eq(b.grad[0], 4.0f);  /* 0: measure only */
  ck_assert_double_eq_tol(fla_clip_grad_norm(2, ps, 1.0), 5.0, 1e-12);
  ck_assert_float_eq_tol(a.grad[0], 0.6f, 1e-6f);
  ck_assert_float_eq_tol(b.grad[0], 0.8f, 1e-6f);
  ck_assert_double_eq_tol(fla_clip_grad_norm(2, ps, 0.0), 1.0, 1e-6);
  free(a.data), free(a.grad), free(b.data), free(b.grad);
}
END_TEST

/* ------------------------------------------------------------- token files */

static void write_tokens_(fla_ctx *ctx, const char *path, int64_t vocab, int32_t boundary, const int32_t *ids,
                          int64_t n) {
  fla_token_writer *w = NULL;
  ck_assert_int_eq(fla_token_writer_open(ctx, path, vocab, boundary, &w), FLA_OK);
  ck_assert_int_eq(fla_token_writer_add(w, ids, n), FLA_OK);
  ck_assert_int_eq(fla_token_writer_close(w), FLA_OK);
}

START_TEST(test_token_file_round_trip) {
  fla_ctx *ctx = th_cpu_ctx();
  char *dir = temp_dir_();
  char path[128];
  snprintf(path, sizeof path, "%s/t.tok", dir);
  const int64_t vocabs[3] = {256, 50000, 100000};
  const int widths[3] = {1, 2, 4};
  for (int k = 0; k < 3; k++) {
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = (int32_t)((i * 7919LL) % vocabs[k]);
    fla_token_writer *w = NULL;
    ck_assert_int_eq(fla_token_writer_open(ctx, path, vocabs[k], 3, &w), FLA_OK);
    ck_assert_int_eq(fla_token_writer_add(w, ids, 600), FLA_OK);
    ck_assert_int_eq(fla_token_writer_end_document(w), FLA_OK);
    ck_assert_int_eq(fla_token_writer_add(w, ids + 600, 400), FLA_OK);
    int32_t bad = (int32_t)vocabs[k];
    ck_assert_int_eq(fla_token_writer_add(w, &bad, 1), FLA_INVALID);
    ck_assert_int_eq(fla_token_writer_close(w), FLA_OK);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 32 + 1001 * widths[k]);
    fla_token_file *f = NULL;
    ck_assert_int_eq(fla_token_file_open(ctx, path, &f), FLA_OK);
    ck_assert_int_eq(fla_token_file_count(f), 1001);
    ck_assert_int_eq(fla_token_file_vocab_size(f), vocabs[k]);
    ck_assert_int_eq(fla_token_file_boundary(f), 3);
    int32_t back[1001];
    ck_assert_int_eq(fla_token_file_read(f, 0, 1001, back), FLA_OK);
    ck_assert_int_eq(memcmp(back, ids, 600 * sizeof(int32_t)), 0);
    ck_assert_int_eq(back[600], 3);
    ck_assert_int_eq(memcmp(back + 601, ids + 600, 400 * sizeof(int32_t)), 0);
    ck_assert_int_eq(fla_token_file_read(f, 1000, 2, back), FLA_INVALID);
    fla_token_file_close(f);
  }
  /* Damaged files are refused, naming what is wrong. */
  size_t n;
  unsigned char *bytes = th_read_bytes(path, &n);
  th_write_bytes(path, bytes, n - 1);
  fla_token_file *f = NULL;
  ck_assert_int_eq(fla_token_file_open(ctx, path, &f), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "the header counts 1001 tokens"));
  bytes[0] = 'X';
  th_write_bytes(path, bytes, n);
  ck_assert_int_eq(fla_token_file_open(ctx, path, &f), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "magic"));
  th_write_bytes(path, bytes, 10);
  ck_assert_int_eq(fla_token_file_open(ctx, path, &f), FLA_FORMAT);
  ck_assert_ptr_null(f);
  free(bytes);
  ck_assert_int_eq(th_count_entries(dir), 1);  /* no temporary file left behind */
  remove_tree_(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------- loader */

/* Two files whose token at position i is base + i: a window shows where it came from. */
static fla_loader *counting_loader_(fla_ctx *ctx, const char *dir, int64_t T, uint64_t seed, int64_t *n1,
                                    int64_t *n2) {
  static char p1[128], p2[128];
  snprintf(p1, sizeof p1, "%s/a.tok", dir);
  snprintf(p2, sizeof p2, "%s/b.tok", dir);
  *n1 = 8 * T + 3, *n2 = 5 * T + 1;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n1 + *n2));
  for (int64_t i = 0; i < *n1 + *n2; i++) ids[i] = (int32_t)(i < *n1 ? i : 30000 + (i - *n1));
  write_tokens_(ctx, p1, 65536, -1, ids, *n1);
  write_tokens_(ctx, p2, 65536, -1, ids + *n1, *n2);
  free(ids);
  const char *paths[2] = {p1, p2};
  fla_loader *ld = NULL;
  ck_assert_int_eq(fla_loader_open(ctx, 2, paths, T, seed, &ld), FLA_OK);
  return ld;
}

START_TEST(test_loader_windows_cover_an_epoch) {
  fla_ctx *ctx = th_cpu_ctx();
  char *dir = temp_dir_();
  const int64_t T = 16;
  int64_t n1, n2;
  fla_loader *ld = counting_loader_(ctx, dir, T, 42, &n1, &n2);
  const int64_t W = fla_loader_num_windows(ld);
  ck_assert_int_eq(W, (n1 - 1) / T + (n2 - 1) / T);  /* 8 + 5 */
  ck_assert_int_eq(fla_loader_seq_len(ld), T);
  int seen[13] = {0};
  int32_t ids[16], tg[16];
  int in_order = 1;
  for (int64_t w = 0; w < W; w++) {
    ck_assert_int_eq(fla_loader_next(ld, 1, ids, tg), FLA_OK);
    int64_t start = ids[0] >= 30000 ? ids[0] - 30000 : ids[0];
    int file = ids[0] >= 30000;
    ck_assert_int_eq(start % T, 0);
    int k = (int)(file ? 8 + start / T : start / T);
    seen[k]++;
    in_order &= k == w;
    for (int i = 0; i < T; i++) {
      ck_assert_int_eq(ids[i], ids[0] + i);  /* consecutive tokens of one file */
      ck_assert_int_eq(tg[i], ids[i] + 1);   /* targets shifted by one */
    }
  }
  for (int k = 0; k < 13; k++) ck_assert_int_eq(seen[k], 1);
  ck_assert_msg(!in_order, "the windows came in file order: not shuffled");
  fla_loader_pos p = fla_loader_tell(ld);
  ck_assert_int_eq(p.epoch, 0);
  ck_assert_int_eq(p.index, (uint64_t)W);
  /* The next epoch has another order. */
  int32_t first[13], second[13];
  fla_loader_pos start0 = {0, 0};
  ck_assert_int_eq(fla_loader_seek(ld, start0), FLA_OK);
  for (int w = 0; w < 13; w++) fla_loader_next(ld, 1, ids, tg), first[w] = ids[0];
  for (int w = 0; w < 13; w++) fla_loader_next(ld, 1, ids, tg), second[w] = ids[0];
  ck_assert_int_eq(fla_loader_tell(ld).epoch, 1);
  ck_assert_int_ne(memcmp(first, second, sizeof first), 0);
  fla_loader_free(ld);
  remove_tree_(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_loader_seed_and_resume) {
  fla_ctx *ctx = th_cpu_ctx();
  char *dir = temp_dir_();
  const int64_t T = 8, B = 3;
  int64_t n1, n2;
  fla_loader *a = counting_loader_(ctx, dir, T, 1, &n1, &n2);
  fla_loader *b = counting_loader_(ctx, dir, T, 1, &n1, &n2);
  fla_loader *c = counting_loader_(ctx, dir, T, 2, &n1, &n2);
  int32_t ia[24], ta[24], ib[24], tb[24], ic[24], tc[24];
  int differs = 0;
  fla_loader_pos saved = {0, 0};
  int32_t after_saved[5][24];
  for (int step = 0; step < 12; step++) {  /* 36 windows: several epochs of 13 */
    if (step == 7) saved = fla_loader_tell(a);
    ck_assert_int_eq(fla_loader_next(a, B, ia, ta), FLA_OK);
    ck_assert_int_eq(fla_loader_next(b, B, ib, tb), FLA_OK);
    ck_assert_int_eq(fla_loader_next(c, B, ic, tc), FLA_OK);
    ck_assert_int_eq(memcmp(ia, ib, sizeof ia), 0);  /* same seed: same stream */
    ck_assert_int_eq(memcmp(ta, tb, sizeof ta), 0);
    differs |= memcmp(ia, ic, sizeof ia) != 0;
    if (step >= 7) memcpy(after_saved[step - 7], ia, sizeof ia);
  }
  ck_assert_msg(differs, "seeds 1 and 2 gave the same order");
  ck_assert_int_eq(saved.epoch, 1);  /* 21 windows given: epoch 1, index 8 */
  ck_assert_int_eq(saved.index, 8);
  /* A fresh loader sought to the saved position continues identically. */
  fla_loader *d = counting_loader_(ctx, dir, T, 1, &n1, &n2);
  ck_assert_int_eq(fla_loader_seek(d, saved), FLA_OK);
  for (int step = 0; step < 5; step++) {
    ck_assert_int_eq(fla_loader_next(d, B, ia, ta), FLA_OK);
    ck_assert_int_eq(memcmp(ia, after_saved[step], sizeof ia), 0);
  }
  fla_loader_pos past = {0, 14};
  ck_assert_int_eq(fla_loader_seek(d, past), FLA_INVALID);
  fla_loader_free(a), fla_loader_free(b), fla_loader_free(c), fla_loader_free(d);
  /* Files too short for a window, and files that disagree, are refused. */
  char p[128], q[128];
  snprintf(p, sizeof p, "%s/short.tok", dir);
  snprintf(q, sizeof q, "%s/other.tok", dir);
  int32_t few[4] = {1, 2, 3, 4};
  write_tokens_(ctx, p, 256, 0, few, 4);
  write_tokens_(ctx, q, 300, 0, few, 4);
  const char *one[1] = {p}, *two[2] = {p, q};
  fla_loader *e = NULL;
  ck_assert_int_eq(fla_loader_open(ctx, 1, one, 4, 0, &e), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "one window"));
  ck_assert_int_eq(fla_loader_open(ctx, 1, one, 3, 0, &e), FLA_OK);
  ck_assert_int_eq(fla_loader_num_windows(e), 1);
  fla_loader_free(e);
  ck_assert_int_eq(fla_loader_open(ctx, 2, two, 3, 0, &e), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "vocab_size"));
  remove_tree_(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_split_documents) {
  const int32_t ids[8] = {5, 6, 0, 7, 0, 0, 8, 9};
  int64_t cu[9];
  ck_assert_int_eq(fla_split_documents(ids, 8, 0, cu), 4);
  const int64_t want[5] = {0, 3, 5, 6, 8};
  for (int i = 0; i < 5; i++) ck_assert_int_eq(cu[i], want[i]);
  const int32_t ends[3] = {1, 2, 0};
  ck_assert_int_eq(fla_split_documents(ends, 3, 0, cu), 1);  /* a trailing boundary ends the last */
  ck_assert_int_eq(cu[1], 3);
  ck_assert_int_eq(fla_split_documents(ids, 8, -1, cu), 1);  /* no boundary: one sequence */
}
END_TEST

/* ------------------------------------------------------------- checkpoints */

/* The tiny fla GLA's weights as caller-owned parameters (gradients unused). */
typedef struct {
  int n;
  fla_param *params;
  fla_tensor **tensors;
  char *config;
} weight_set;

static void load_weight_set_(fla_ctx *ctx, weight_set *ws) {
  fla_safetensors *st = NULL;
  ck_assert_int_eq(fla_safetensors_open(ctx, th_shared_path("conformance/tiny_models/gla/model.safetensors"), &st),
                   FLA_OK);
  ws->n = fla_safetensors_count(st);
  ws->params = calloc((size_t)ws->n, sizeof(fla_param));
  ws->tensors = calloc((size_t)ws->n, sizeof(fla_tensor *));
  for (int i = 0; i < ws->n; i++) {
    ck_assert_int_eq(fla_safetensors_load(ctx, st, fla_safetensors_name(st, i), FLA_F32, &ws->tensors[i]), FLA_OK);
    fla_param *p = &ws->params[i];
    p->name = strdup(fla_safetensors_name(st, i));
    p->ndim = fla_tensor_ndim(ws->tensors[i]);
    for (int d = 0; d < p->ndim; d++) p->shape[d] = fla_tensor_shape(ws->tensors[i])[d];
    p->numel = fla_tensor_numel(ws->tensors[i]);
    p->data = fla_tensor_data(ws->tensors[i]);
    p->grad = calloc((size_t)p->numel, sizeof(float));
  }
  fla_safetensors_free(st);
  size_t n;
  ws->config = (char *)th_read_bytes(th_shared_path("conformance/tiny_models/gla/config.json"), &n);
  ws->config = realloc(ws->config, n + 1);
  ws->config[n] = 0;
}

static void free_weight_set_(weight_set *ws) {
  for (int i = 0; i < ws->n; i++) {
    free((void *)ws->params[i].name);
    free(ws->params[i].grad);
    fla_tensor_free(ws->tensors[i]);
  }
  free(ws->params);
  free(ws->tensors);
  free(ws->config);
}

/* Logits of a few tokens ("Hello!") from the model in dir. */
static const int32_t probe_ids_[6] = {72, 101, 108, 108, 111, 33};
static float *logits_of_(fla_ctx *ctx, const char *dir) {
  fla_model *m = NULL;
  ck_assert_msg(fla_model_load(ctx, dir, &m) == FLA_OK, "fla_model_load(%s): %s", dir, fla_errmsg(ctx));
  const int32_t *ids = probe_ids_;
  float *logits = malloc(sizeof(float) * 6 * 256);
  ck_assert_int_eq(fla_model_forward(m, ids, 1, 6, logits), FLA_OK);
  fla_model_free(m);
  return logits;
}

START_TEST(test_checkpoint_round_trip_loads_as_a_model) {
  fla_ctx *ctx = th_cpu_ctx();
  char *tmp = temp_dir_();
  char root[128], dir[4096];
  snprintf(root, sizeof root, "%s/ckpts", tmp);
  weight_set ws;
  load_weight_set_(ctx, &ws);
  fla_adamw_options o = {0.9f, 0.95f, 1e-8f, 0.1f};
  fla_adamw *opt = NULL;
  ck_assert_int_eq(fla_adamw_new(ctx, ws.n, ws.params, &o, &opt), FLA_OK);
  fla_checkpoint_contents c = {ws.config, ws.n, ws.params, opt, "{\"step\": 7}"};
  /* 100 kB shards: the 0.6 MB of weights spread over several files. */
  ck_assert_int_eq(fla_checkpoint_save(ctx, root, 7, &c, 100000, dir, sizeof dir), FLA_OK);
  ck_assert_ptr_nonnull(strstr(dir, "step-00000007"));
  char path[4200];
  snprintf(path, sizeof path, "%s/model-00001-of-00001.safetensors", dir);
  ck_assert_int_ne(access(path, F_OK), 0);
  int entries = th_count_entries(dir);
  ck_assert_msg(entries >= 7, "%d files: expected config, index, optimizer, state and >= 3 shards", entries);
  snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
  ck_assert_int_eq(access(path, F_OK), 0);
  float *want = logits_of_(ctx, th_shared_path("conformance/tiny_models/gla"));
  float *got = logits_of_(ctx, dir);
  ck_assert_int_eq(memcmp(want, got, sizeof(float) * 6 * 256), 0);
  free(got);
  /* One shard when unlimited; still read through the index. */
  ck_assert_int_eq(fla_checkpoint_save(ctx, root, 9, &c, 0, dir, sizeof dir), FLA_OK);
  snprintf(path, sizeof path, "%s/model-00001-of-00001.safetensors", dir);
  ck_assert_int_eq(access(path, F_OK), 0);
  got = logits_of_(ctx, dir);
  ck_assert_int_eq(memcmp(want, got, sizeof(float) * 6 * 256), 0);
  free(got);
  int64_t step = -1;
  ck_assert_int_eq(fla_checkpoint_latest(ctx, root, dir, sizeof dir, &step), FLA_OK);
  ck_assert_int_eq(step, 9);
  /* Saving the same step again replaces it. */
  ck_assert_int_eq(fla_checkpoint_save(ctx, root, 9, &c, 0, NULL, 0), FLA_OK);
  ck_assert_int_eq(fla_checkpoint_prune(ctx, root, 1), FLA_OK);
  ck_assert_int_eq(th_count_entries(root), 1);
  ck_assert_int_eq(fla_checkpoint_latest(ctx, tmp, dir, sizeof dir, &step), FLA_IO);
  free(want);
  fla_adamw_free(opt);
  free_weight_set_(&ws);
  remove_tree_(tmp);
  fla_ctx_free(ctx);
}
END_TEST

/* A save that dies after its k-th file (the FLA_CHECKPOINT_CRASH_AFTER hook, in
** a child process) for every k: the previous checkpoint stays the newest and
** loads, and the debris is pruned. */
START_TEST(test_checkpoint_crash_leaves_previous) {
  fla_ctx *ctx = th_cpu_ctx();
  char *tmp = temp_dir_();
  char root[128], dir[4096];
  snprintf(root, sizeof root, "%s/ckpts", tmp);
  weight_set ws;
  load_weight_set_(ctx, &ws);
  fla_adamw_options o = {0.9f, 0.95f, 1e-8f, 0.1f};
  fla_adamw *opt = NULL;
  ck_assert_int_eq(fla_adamw_new(ctx, ws.n, ws.params, &o, &opt), FLA_OK);
  fla_checkpoint_contents c = {ws.config, ws.n, ws.params, opt, "{}"};
  ck_assert_int_eq(fla_checkpoint_save(ctx, root, 1, &c, 200000, dir, sizeof dir), FLA_OK);
  const int files = th_count_entries(dir);
  float *want = logits_of_(ctx, dir);
  /* Change the weights the later save would write. */
  for (int i = 0; i < ws.n; i++)
    for (int64_t j = 0; j < ws.params[i].numel; j++) ws.params[i].data[j] *= 0.5f;
  for (int k = 1; k <= files; k++) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      char k_text[16];
      snprintf(k_text, sizeof k_text, "%d", k);
      setenv("FLA_CHECKPOINT_CRASH_AFTER", k_text, 1);
      fla_checkpoint_save(ctx, root, 2, &c, 200000, NULL, 0);
      _exit(0);  /* not reached when the hook fires */
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 86, "crash point %d did not fire", k);
    int64_t step = -1;
    ck_assert_int_eq(fla_checkpoint_latest(ctx, root, dir, sizeof dir, &step), FLA_OK);
    ck_assert_int_eq(step, 1);
    float *got = logits_of_(ctx, dir);
    ck_assert_int_eq(memcmp(want, got, sizeof(float) * 6 * 256), 0);
    free(got);
  }
  ck_assert_int_gt(th_count_entries(root), 1);  /* the crashed saves' temporary directories */
  ck_assert_int_eq(fla_checkpoint_prune(ctx, root, 3), FLA_OK);
  ck_assert_int_eq(th_count_entries(root), 1);
  ck_assert_int_eq(fla_checkpoint_save(ctx, root, 2, &c, 200000, dir, sizeof dir), FLA_OK);
  float *got = logits_of_(ctx, dir);
  ck_assert_int_ne(memcmp(want, got, sizeof(float) * 6 * 256), 0);  /* the new weights */
  free(got);
  free(want);
  fla_adamw_free(opt);
  free_weight_set_(&ws);
  remove_tree_(tmp);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------- training */

/* A bytes token file of the project's own English prose (README and docs). */
static void english_tokens_(fla_ctx *ctx, const char *path) {
  fla_token_writer *w = NULL;
  ck_assert_int_eq(fla_token_writer_open(ctx, path, 256, 0, &w), FLA_OK);
  const char *docs[] = {"README.md", "docs/models.md", "docs/recipes.md", "docs/tokenizer.md"};
  for (int d = 0; d < 4; d++) {
    size_t n;
    unsigned char *text = th_read_bytes(th_source_path(docs[d]), &n);
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) ids[i] = text[i];
    ck_assert_int_eq(fla_token_writer_add(w, ids, (int64_t)n), FLA_OK);
    ck_assert_int_eq(fla_token_writer_end_document(w), FLA_OK);
    free(ids);
    free(text);
  }
  ck_assert_int_eq(fla_token_writer_close(w), FLA_OK);
}

static fla_train_options small_options_(int64_t steps) {
  fla_train_options o;
  memset(&o, 0, sizeof o);
  o.batch_size = 2;
  o.micro_batches = 2;
  o.steps = steps;
  o.adamw = (fla_adamw_options){0.9f, 0.95f, 1e-8f, 0.1f};
  o.schedule = (fla_lr_schedule){FLA_LR_COSINE, 3e-3, 3e-4, 2, steps};
  o.clip_norm = 1.0;
  o.seed = 11;
  return o;
}

typedef struct {
  fla_model *model;
  fla_loader *loader;
  fla_trainer *trainer;
} run;

/* A run on the token file: a fresh tiny GLA (seed 5), or the model of checkpoint dir. */
static void start_run_(fla_ctx *ctx, run *r, const char *tokens, const char *from, const fla_train_options *o) {
  const char *paths[1] = {tokens};
  ck_assert_int_eq(fla_loader_open(ctx, 1, paths, 32, o->seed, &r->loader), FLA_OK);
  if (from) {
    ck_assert_int_eq(fla_model_load(ctx, from, &r->model), FLA_OK);
    ck_assert_int_eq(fla_model_enable_grad(r->model), FLA_OK);
  } else {
    ck_assert_msg(fla_model_create(ctx, th_shared_path("conformance/tiny_models/gla/config.json"), 5, &r->model) ==
                      FLA_OK, "fla_model_create: %s", fla_errmsg(ctx));
  }
  ck_assert_msg(fla_trainer_new(ctx, r->model, r->loader, o, &r->trainer) == FLA_OK, "%s", fla_errmsg(ctx));
  if (from) ck_assert_msg(fla_trainer_restore(r->trainer, from) == FLA_OK, "restore: %s", fla_errmsg(ctx));
}

static void end_run_(run *r) {
  fla_trainer_free(r->trainer);
  fla_model_free(r->model);
  fla_loader_free(r->loader);
}

static void run_steps_(fla_ctx *ctx, run *r, int n, double *losses) {
  for (int i = 0; i < n; i++) {
    fla_step_stats st;
    ck_assert_msg(fla_trainer_step(r->trainer, &st) == FLA_OK, "step: %s", fla_errmsg(ctx));
    losses[i] = st.loss;
    ck_assert(isfinite(st.loss));
  }
}

/* N steps, a checkpoint, N more steps from it in a new model == 2N steps in one go:
** the same losses and the same final weights, bit for bit. */
START_TEST(test_resume_is_bit_exact) {
  fla_ctx *ctx = th_cpu_ctx();
  char *tmp = temp_dir_();
  char tokens[128], root[128], dir[4096];
  snprintf(tokens, sizeof tokens, "%s/en.tok", tmp);
  snprintf(root, sizeof root, "%s/ckpts", tmp);
  english_tokens_(ctx, tokens);
  const int N = 3;
  fla_train_options o = small_options_(2 * N);
  double whole[6], first[3], second[3];
  run a = {0}, b = {0}, c = {0};
  start_run_(ctx, &a, tokens, NULL, &o);
  run_steps_(ctx, &a, 2 * N, whole);
  start_run_(ctx, &b, tokens, NULL, &o);
  run_steps_(ctx, &b, N, first);
  ck_assert_int_eq(fla_trainer_save(b.trainer, root, 50000, dir, sizeof dir), FLA_OK);
  end_run_(&b);
  start_run_(ctx, &c, tokens, dir, &o);
  ck_assert_int_eq(fla_trainer_step_count(c.trainer), N);
  run_steps_(ctx, &c, N, second);
  for (int i = 0; i < N; i++) {
    ck_assert_msg(whole[i] == first[i], "step %d: loss %.17g vs %.17g", i + 1, whole[i], first[i]);
    ck_assert_msg(whole[N + i] == second[i], "step %d after resume: loss %.17g vs %.17g", N + i + 1, whole[N + i],
                  second[i]);
  }
  int np = fla_model_num_params(a.model);
  ck_assert_int_eq(np, fla_model_num_params(c.model));
  for (int i = 0; i < np; i++) {
    fla_param pa, pc;
    ck_assert_int_eq(fla_model_param(a.model, i, &pa), FLA_OK);
    ck_assert_int_eq(fla_model_param(c.model, i, &pc), FLA_OK);
    ck_assert_str_eq(pa.name, pc.name);
    ck_assert_msg(memcmp(pa.data, pc.data, sizeof(float) * (size_t)pa.numel) == 0, "%s differs", pa.name);
  }
  /* A checkpoint of the finished run loads as a model and gives its logits. */
  ck_assert_int_eq(fla_trainer_save(a.trainer, root, 0, dir, sizeof dir), FLA_OK);
  float *want = malloc(sizeof(float) * 6 * 256);
  ck_assert_int_eq(fla_model_forward(a.model, probe_ids_, 1, 6, want), FLA_OK);
  float *got = logits_of_(ctx, dir);
  double maxd = 0;
  for (int i = 0; i < 6 * 256; i++) maxd = fmax(maxd, fabs(want[i] - got[i]));
  ck_assert_msg(memcmp(want, got, sizeof(float) * 6 * 256) == 0, "logits differ by up to %g", maxd);
  free(want);
  free(got);
  end_run_(&a);
  end_run_(&c);
  remove_tree_(tmp);
  fla_ctx_free(ctx);
}
END_TEST

/* Loss goes down on English text: the mean of the last 5 of 40 steps is well
** under the first step's (about ln 256 = 5.5 nats for a fresh byte model). */
START_TEST(test_loss_goes_down_on_text) {
  fla_ctx *ctx = th_cpu_ctx();
  char *tmp = temp_dir_();
  char tokens[128];
  snprintf(tokens, sizeof tokens, "%s/en.tok", tmp);
  english_tokens_(ctx, tokens);
  const int steps = 40;
  fla_train_options o = small_options_(steps);
  o.schedule.lr = 1e-2;
  o.schedule.warmup_steps = 4;
  run r = {0};
  start_run_(ctx, &r, tokens, NULL, &o);
  double losses[40];
  run_steps_(ctx, &r, steps, losses);
  double tail = 0;
  for (int i = steps - 5; i < steps; i++) tail += losses[i] / 5;
  ck_assert_msg(losses[0] > 5.0 && tail < losses[0] - 1.5, "first loss %.3f, last five %.3f", losses[0], tail);
  end_run_(&r);
  remove_tree_(tmp);
  fla_ctx_free(ctx);
}
END_TEST

/* "documents": "separate": the first step's loss is the mean, over every
** document piece of the step's windows run alone, of the cross-entropy; and on a
** file without boundaries it is exactly the packed step. */
START_TEST(test_separate_documents) {
  fla_ctx *ctx = th_cpu_ctx();
  char *tmp = temp_dir_();
  char tokens[128], plain[128];
  snprintf(tokens, sizeof tokens, "%s/docs.tok", tmp);
  snprintf(plain, sizeof plain, "%s/plain.tok", tmp);
  th_rng r;
  th_seed(&r, 5);
  fla_token_writer *w = NULL, *w2 = NULL;
  ck_assert_int_eq(fla_token_writer_open(ctx, tokens, 256, 0, &w), FLA_OK);
  ck_assert_int_eq(fla_token_writer_open(ctx, plain, 256, -1, &w2), FLA_OK);
  for (int d = 0; d < 200; d++) {  /* documents of 3 to 22 tokens: several per window */
    int32_t doc[22];
    int len = 3 + (int)(th_uniform(&r) * 20);
    for (int i = 0; i < len; i++) doc[i] = 1 + (int32_t)(th_uniform(&r) * 255);
    ck_assert_int_eq(fla_token_writer_add(w, doc, len), FLA_OK);
    ck_assert_int_eq(fla_token_writer_end_document(w), FLA_OK);
    ck_assert_int_eq(fla_token_writer_add(w2, doc, len), FLA_OK);
  }
  ck_assert_int_eq(fla_token_writer_close(w), FLA_OK);
  ck_assert_int_eq(fla_token_writer_close(w2), FLA_OK);
  fla_train_options o = small_options_(4);
  o.separate_documents = 1;
  run a = {0};
  start_run_(ctx, &a, tokens, NULL, &o);
  double loss;
  run_steps_(ctx, &a, 1, &loss);
  /* The same windows, each document piece through its own call on a fresh model. */
  const char *paths[1] = {tokens};
  fla_loader *ld = NULL;
  ck_assert_int_eq(fla_loader_open(ctx, 1, paths, 32, o.seed, &ld), FLA_OK);
  fla_model *m = NULL;
  ck_assert_int_eq(fla_model_create(ctx, th_shared_path("conformance/tiny_models/gla/config.json"), 5, &m), FLA_OK);
  double sum = 0;
  int64_t count = 0, pieces = 0;
  int32_t ids[32], tg[32];
  int64_t cu[33];
  for (int win = 0; win < 4; win++) {
    ck_assert_int_eq(fla_loader_next(ld, 1, ids, tg), FLA_OK);
    int64_t n = fla_split_documents(ids, 32, 0, cu);
    for (int64_t i = 0; i < n; i++) {
      double part;
      int64_t c;
      ck_assert_int_eq(fla_model_loss_backward(m, ids + cu[i], tg + cu[i], 1, cu[i + 1] - cu[i], 1.0f, &part, &c),
                       FLA_OK);
      sum += part, count += c, pieces++;
    }
  }
  ck_assert_int_gt(pieces, 8);
  ck_assert_int_eq(count, 4 * 32);
  ck_assert_msg(fabs(loss - sum / count) < 1e-6 * loss, "separate %.9g, piece by piece %.9g", loss, sum / count);
  fla_model_free(m);
  fla_loader_free(ld);
  end_run_(&a);
  /* No boundaries: one document a window, the packed step bit for bit. */
  run b = {0}, c = {0};
  double lb[2], lc[2];
  start_run_(ctx, &b, plain, NULL, &o);
  run_steps_(ctx, &b, 2, lb);
  o.separate_documents = 0;
  start_run_(ctx, &c, plain, NULL, &o);
  run_steps_(ctx, &c, 2, lc);
  ck_assert_msg(lb[0] == lc[0] && lb[1] == lc[1], "separate %.17g %.17g, packed %.17g %.17g", lb[0], lb[1], lc[0],
                lc[1]);
  end_run_(&b);
  end_run_(&c);
  remove_tree_(tmp);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *train_loop_suite(void) {
  Suite *s = suite_create("train_loop");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_adamw_matches_hand_computation);
  tcase_add_test(tc, test_adamw_rejects_bad_input);
  tcase_add_test(tc, test_adamw_state_round_trip);
  tcase_add_test(tc, test_schedules);
  tcase_add_test(tc, test_clip_grad_norm);
  tcase_add_test(tc, test_token_file_round_trip);
  tcase_add_test(tc, test_loader_windows_cover_an_epoch);
  tcase_add_test(tc, test_loader_seed_and_resume);
  tcase_add_test(tc, test_split_documents);
  tcase_add_test(tc, test_checkpoint_round_trip_loads_as_a_model);
  tcase_add_test(tc, test_checkpoint_crash_leaves_previous);
  suite_add_tcase(s, tc);
  TCase *tr = tcase_create("training");
  tcase_set_timeout(tr, 300);
  tcase_add_test(tr, test_resume_is_bit_exact);
  tcase_add_test(tr, test_loss_goes_down_on_text);
  tcase_add_test(tr, test_separate_documents);
  suite_add_tcase(s, tr);
  return s;
}

int main(void) { return th_run_suite(train_loop_suite()); }
