/*
** test_safetensors.c -- reading the real conformance file, save/load round
** trips, atomic saves, one test per kind of malformed file, and a mutation
** fuzz loop that must never crash (run under ASan/UBSan in CI).
*/
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

/* A fresh directory under /tmp; each Check test runs in its own process. */
static const char *tmp_dir(void) {
  static char dir[64];
  strcpy(dir, "/tmp/fla_st_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  return dir;
}

/* Removes dir and the plain files in it. */
static void rm_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

/* Builds a file image: length prefix, header text, then `data_len` bytes of data. */
static unsigned char *make_image(const char *header, size_t data_len, size_t *n) {
  size_t h = strlen(header);
  *n = 8 + h + data_len;
  unsigned char *p = calloc(1, *n);
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(p + 8, header, h);
  for (size_t i = 0; i < data_len; i++) p[8 + h + i] = (unsigned char)i;
  return p;
}

/* Opens the image and asserts the status and that the message contains `part`. */
static void expect_image(const unsigned char *img, size_t n, fla_status want, const char *part) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_safetensors *st = (fla_safetensors *)&st;
  fla_status got = fla_safetensors_open_buffer(ctx, img, n, &st);
  ck_assert_msg(got == want, "status %s, wanted %s (%s)", fla_errstr(got), fla_errstr(want),
                fla_errmsg(ctx));
  if (want != FLA_OK) {
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(fla_errmsg(ctx), part) != NULL, "message '%s' lacks '%s'",
                  fla_errmsg(ctx), part);
  }
  fla_safetensors_free(st);
  fla_ctx_free(ctx);
}

static void expect_header(const char *header, size_t data_len, fla_status want, const char *part) {
  size_t n;
  unsigned char *img = make_image(header, data_len, &n);
  expect_image(img, n, want, part);
  free(img);
}

/* ------------------------------------------------------- the real file */

START_TEST(test_conformance_file) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_safetensors *st = NULL;
  const char *path = th_shared_path("conformance/ops.safetensors");
  ck_assert_msg(fla_safetensors_open(ctx, path, &st) == FLA_OK, "%s", fla_errmsg(ctx));
  int n = fla_safetensors_count(st);
  ck_assert_int_gt(n, 0);
  for (int i = 1; i < n; i++) /* names are listed sorted */
    ck_assert_int_lt(strcmp(fla_safetensors_name(st, i - 1), fla_safetensors_name(st, i)), 0);
  ck_assert_ptr_null(fla_safetensors_name(st, n));
  int i = fla_safetensors_find(st, "gla.in.q");
  ck_assert_int_ge(i, 0);
  ck_assert_str_eq(fla_safetensors_name(st, i), "gla.in.q");
  ck_assert_int_eq(fla_safetensors_find(st, "__metadata__"), -1);

  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "gla.in.q", -1, &t), FLA_OK);
  ck_assert_int_eq(fla_tensor_dtype(t), FLA_F32);
  ck_assert_int_eq(fla_tensor_ndim(t), 4);
  const int64_t want[4] = {2, 77, 2, 32};
  for (int d = 0; d < 4; d++) ck_assert_int_eq(fla_tensor_shape(t)[d], want[d]);
  const float *q = fla_tensor_data(t);
  ck_assert(isfinite(q[0]) && isfinite(q[2 * 77 * 2 * 32 - 1]));
  double sum = 0;
  for (int64_t k = 0; k < fla_tensor_numel(t); k++) sum += fabs(q[k]);
  ck_assert(sum > 0);

  /* The same tensor as f64 and bf16: converted values. */
  fla_tensor *t64 = NULL, *tb = NULL;
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "gla.in.q", FLA_F64, &t64), FLA_OK);
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "gla.in.q", FLA_BF16, &tb), FLA_OK);
  ck_assert(((double *)fla_tensor_data(t64))[5] == (double)q[5]);
  ck_assert(((uint16_t *)fla_tensor_data(tb))[5] == fla_f32_to_bf16(q[5]));
  fla_tensor_free(t64);
  fla_tensor_free(tb);
  fla_tensor_free(t);

  t = (fla_tensor *)&t;
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "no.such.tensor", -1, &t), FLA_INVALID);
  ck_assert_ptr_null(t);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "no.such.tensor"));
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "gla.in.q", FLA_I32, &t), FLA_UNSUPPORTED);
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "gla.in.q", 99, &t), FLA_INVALID);
  fla_safetensors_free(st);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_open_errors) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_safetensors *st = (fla_safetensors *)&st;
  ck_assert_int_eq(fla_safetensors_open(ctx, "/nonexistent/x.safetensors", &st), FLA_IO);
  ck_assert_ptr_null(st);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "/nonexistent/x.safetensors"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), strerror(ENOENT)));
  ck_assert_int_eq(fla_safetensors_open(ctx, "/tmp", &st), FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "not a regular file"));
  ck_assert_int_eq(fla_safetensors_open(ctx, NULL, &st), FLA_INVALID);
  ck_assert_int_eq(fla_safetensors_open(ctx, "/tmp", NULL), FLA_INVALID);
  ck_assert_int_eq(fla_safetensors_open_buffer(ctx, NULL, 5, &st), FLA_INVALID);
  ck_assert_int_eq(fla_safetensors_count(NULL), 0);
  ck_assert_int_eq(fla_safetensors_find(NULL, "x"), -1);
  fla_safetensors_free(NULL);
  fla_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ round trip */

typedef struct {
  fla_tensor *t[5];
  const char *names[5];
} sample;

/* f32 [3, 5] random, bf16 [4] with edge values, i64 [2, 2], f64 scalar, empty f16 [0, 3]. */
static void make_sample(fla_ctx *ctx, sample *s) {
  static const char *names[5] = {"layer.0.w", "b16", "ids", "scalar", "empty"};
  int64_t s0[2] = {3, 5}, s1[1] = {4}, s2[2] = {2, 2}, s4[2] = {0, 3};
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F32, 2, s0, &s->t[0]), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_BF16, 1, s1, &s->t[1]), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_I64, 2, s2, &s->t[2]), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F64, 0, NULL, &s->t[3]), FLA_OK);
  ck_assert_int_eq(fla_tensor_new(ctx, FLA_F16, 2, s4, &s->t[4]), FLA_OK);
  th_rng r;
  th_seed(&r, 11);
  float *w = fla_tensor_data(s->t[0]);
  for (int i = 0; i < 15; i++) w[i] = (float)th_normal(&r);
  uint16_t *b = fla_tensor_data(s->t[1]);
  b[0] = 0x3f80; b[1] = 0x7f80; b[2] = 0x8001; b[3] = 0x7fc0;
  int64_t *ids = fla_tensor_data(s->t[2]);
  ids[0] = INT64_MAX; ids[1] = INT64_MIN; ids[2] = -1; ids[3] = 42;
  *(double *)fla_tensor_data(s->t[3]) = 3.141592653589793;
  for (int i = 0; i < 5; i++) s->names[i] = names[i];
}

static void free_sample(sample *s) {
  for (int i = 0; i < 5; i++) fla_tensor_free(s->t[i]);
}

static void assert_same(fla_tensor *a, fla_tensor *b) {
  ck_assert_int_eq(fla_tensor_dtype(a), fla_tensor_dtype(b));
  ck_assert_int_eq(fla_tensor_ndim(a), fla_tensor_ndim(b));
  for (int d = 0; d < fla_tensor_ndim(a); d++)
    ck_assert_int_eq(fla_tensor_shape(a)[d], fla_tensor_shape(b)[d]);
  size_t bytes = (size_t)fla_tensor_numel(a) * fla_dtype_size(fla_tensor_dtype(a));
  ck_assert(memcmp(fla_tensor_data(a), fla_tensor_data(b), bytes) == 0);
}

START_TEST(test_round_trip) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/out.safetensors", dir);
  sample s;
  make_sample(ctx, &s);
  ck_assert_msg(fla_safetensors_save(ctx, path, 5, s.names, (const fla_tensor *const *)s.t) == FLA_OK,
                "%s", fla_errmsg(ctx));
  ck_assert_int_eq(th_count_entries(dir), 1); /* no temporary file left behind */

  fla_safetensors *st = NULL;
  ck_assert_msg(fla_safetensors_open(ctx, path, &st) == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert_int_eq(fla_safetensors_count(st), 5);
  for (int i = 0; i < 5; i++) {
    fla_tensor *t = NULL;
    ck_assert_int_eq(fla_safetensors_load(ctx, st, s.names[i], -1, &t), FLA_OK);
    assert_same(t, s.t[i]);
    fla_tensor_free(t);
  }
  fla_safetensors_free(st);

  /* The layout the reference implementation demands: header a multiple of 8,
  ** data contiguous up to the end of the file, each tensor aligned to its size. */
  size_t n;
  unsigned char *img = th_read_bytes(path, &n);
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | img[i];
  ck_assert_uint_eq(h % 8, 0);
  ck_assert_uint_eq(n, 8 + h + 15 * 4 + 4 * 2 + 4 * 8 + 8);
  ck_assert(img[8] == '{' && (img[8 + h - 1] == ' ' || img[8 + h - 1] == '}'));
  ck_assert_ptr_nonnull(strstr((char *)img + 8, "\"__metadata__\":{\"format\":\"pt\"}"));
  ck_assert_ptr_nonnull(strstr((char *)img + 8, "\"dtype\":\"BF16\""));
  free(img);
  free_sample(&s);
  rm_dir(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_save_bad_args) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/x.safetensors", dir);
  sample s;
  make_sample(ctx, &s);
  const fla_tensor *const *ts = (const fla_tensor *const *)s.t;
  const char *dup[2] = {"a", "a"};
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 2, dup, ts), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "'a'"));
  const char *meta[1] = {"__metadata__"};
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 1, meta, ts), FLA_INVALID);
  const char *bad_utf8[1] = {"\xff\xfe"};
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 1, bad_utf8, ts), FLA_INVALID);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "UTF-8"));
  const char *null_name[1] = {NULL};
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 1, null_name, ts), FLA_INVALID);
  ck_assert_int_eq(fla_safetensors_save(ctx, path, -1, s.names, ts), FLA_INVALID);
  ck_assert_int_eq(fla_safetensors_save(ctx, NULL, 1, s.names, ts), FLA_INVALID);
  ck_assert_int_eq(th_count_entries(dir), 0);
  /* Zero tensors is a valid (empty) file. */
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 0, NULL, NULL), FLA_OK);
  fla_safetensors *st = NULL;
  ck_assert_int_eq(fla_safetensors_open(ctx, path, &st), FLA_OK);
  ck_assert_int_eq(fla_safetensors_count(st), 0);
  fla_safetensors_free(st);
  free_sample(&s);
  rm_dir(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- atomic */

START_TEST(test_save_missing_dir) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[512], sub[256];
  snprintf(sub, sizeof sub, "%s/no/such", dir);
  snprintf(path, sizeof path, "%s/x.safetensors", sub);
  sample s;
  make_sample(ctx, &s);
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 5, s.names, (const fla_tensor *const *)s.t),
                   FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), path));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), strerror(ENOENT)));
  struct stat sb;
  ck_assert_int_ne(stat(sub, &sb), 0);
  ck_assert_int_eq(th_count_entries(dir), 0);
  free_sample(&s);
  rm_dir(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_save_replaces_only_on_success) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  sample s;
  make_sample(ctx, &s);
  const fla_tensor *const *ts = (const fla_tensor *const *)s.t;
  /* A name of 250 characters: the file can exist, but "<name>.tmp.<pid>"
  ** is longer than NAME_MAX, so the save fails creating its temporary file
  ** (a way to make a write fail even when running as root). */
  char name[251], path[512];
  memset(name, 'n', 250);
  name[250] = '\0';
  snprintf(path, sizeof path, "%s/%s", dir, name);
  th_write_bytes(path, "old contents", 12);
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 5, s.names, ts), FLA_IO);
  size_t n;
  unsigned char *img = th_read_bytes(path, &n);
  ck_assert(n == 12 && memcmp(img, "old contents", 12) == 0);
  free(img);
  ck_assert_int_eq(th_count_entries(dir), 1);

  /* A failure at the rename step (the target is a non-empty directory)
  ** removes the temporary file. */
  char target[256], inner[300];
  snprintf(target, sizeof target, "%s/d", dir);
  ck_assert_int_eq(mkdir(target, 0777), 0);
  snprintf(inner, sizeof inner, "%s/keep", target);
  th_write_bytes(inner, "k", 1);
  ck_assert_int_eq(fla_safetensors_save(ctx, target, 5, s.names, ts), FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "rename"));
  ck_assert_int_eq(th_count_entries(dir), 2);
  unlink(inner);
  rmdir(target);

  /* Success replaces an existing file. */
  char ok[256];
  snprintf(ok, sizeof ok, "%s/model.safetensors", dir);
  th_write_bytes(ok, "old contents", 12);
  ck_assert_int_eq(fla_safetensors_save(ctx, ok, 5, s.names, ts), FLA_OK);
  fla_safetensors *st = NULL;
  ck_assert_int_eq(fla_safetensors_open(ctx, ok, &st), FLA_OK);
  ck_assert_int_eq(fla_safetensors_count(st), 5);
  fla_safetensors_free(st);
  ck_assert_int_eq(th_count_entries(dir), 2);
  free_sample(&s);
  rm_dir(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* -------------------------------------------------------------- malformed */

START_TEST(test_empty_and_short_files) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/empty.safetensors", dir);
  th_write_bytes(path, "", 0);
  fla_safetensors *st = NULL;
  ck_assert_int_eq(fla_safetensors_open(ctx, path, &st), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), path));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "0 bytes"));
  th_write_bytes(path, "\x02\0\0\0\0\0\0", 7);
  ck_assert_int_eq(fla_safetensors_open(ctx, path, &st), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "7 bytes"));
  rm_dir(dir);
  fla_ctx_free(ctx);
  expect_image((const unsigned char *)"", 0, FLA_FORMAT, "fewer than the 8");
}
END_TEST

START_TEST(test_header_length) {
  unsigned char img[18] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
  expect_image(img, sizeof img, FLA_FORMAT, "header length 100 is larger than the 10 bytes");
  unsigned char huge[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
  expect_image(huge, sizeof huge, FLA_FORMAT, "limit");
  unsigned char all[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  expect_image(all, sizeof all, FLA_FORMAT, "limit");
}
END_TEST

START_TEST(test_header_not_json) {
  expect_header("{\"a\": ", 0, FLA_FORMAT, "not valid JSON");
  expect_header("hello", 0, FLA_FORMAT, "not valid JSON");
  expect_header("", 0, FLA_FORMAT, "not valid JSON");
  expect_header("{} x", 0, FLA_FORMAT, "not valid JSON");
  expect_header("{\"\xff\": 1}", 0, FLA_FORMAT, "not valid JSON"); /* not UTF-8 */
  expect_header("[1, 2]", 0, FLA_FORMAT, "JSON array, not an object");
  expect_header("{}        ", 0, FLA_OK, "");
}
END_TEST

START_TEST(test_bad_entries) {
  expect_header("{\"a\": 3}", 0, FLA_FORMAT, "tensor 'a': entry is a JSON integer, not an object");
  expect_header("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, FLA_FORMAT,
                "tensor 'a': missing key 'dtype'");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, FLA_FORMAT,
                "missing key 'shape'");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, FLA_FORMAT,
                "missing key 'data_offsets'");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"x\": 1}}",
                4, FLA_FORMAT, "unknown key 'x'");
  expect_header("{\"a\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                FLA_FORMAT, "tensor 'a': unknown dtype 'F33'");
  expect_header("{\"a\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, FLA_FORMAT,
                "not a string");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1, -2], \"data_offsets\": [0, 4]}}", 4,
                FLA_FORMAT, "tensor 'a': shape entry 1 is negative");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
                FLA_FORMAT, "shape entry 0 is real number");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 4]}}", 4,
                FLA_FORMAT, "not an array");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
                FLA_FORMAT, "[begin, end]");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4,
                FLA_FORMAT, "end before");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
                FLA_FORMAT, "not a non-negative integer");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], "
                "\"data_offsets\": [0, 4]}}", 4, FLA_FORMAT, "too many elements");
  expect_header("{\"a\": {\"dtype\": \"F64\", \"shape\": [4611686018427387904], "
                "\"data_offsets\": [0, 4]}}", 4, FLA_FORMAT, "too large");
  expect_header("{\"a\": {\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [0, 1]}}", 4,
                FLA_FORMAT, "whole number of bytes");
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
                "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
                FLA_FORMAT, "duplicate");
  expect_header("{\"__metadata__\": {\"k\": 1}}", 0, FLA_FORMAT, "'k' is a JSON integer");
  expect_header("{\"__metadata__\": []}", 0, FLA_FORMAT, "\"__metadata__\" is a JSON array");
  expect_header("{\"__metadata__\": {\"k\": \"v\"}}", 0, FLA_OK, "");
}
END_TEST

START_TEST(test_offsets_out_of_range) {
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 8,
                FLA_FORMAT, "tensor 'a': data_offsets [4, 12] end past the 8-byte data section");
  expect_header("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], "
                "\"data_offsets\": [9223372036854775806, 9223372036854775807]}}", 8, FLA_FORMAT,
                "end past");
}
END_TEST

START_TEST(test_size_mismatch) {
  expect_header("{\"gla.in.q\": {\"dtype\": \"F32\", \"shape\": [2, 77, 2, 32], "
                "\"data_offsets\": [0, 100]}}", 100, FLA_FORMAT,
                "<buffer>: tensor 'gla.in.q': data_offsets [0, 100] hold 100 bytes but shape "
                "[2, 77, 2, 32] of F32 needs 39424");
}
END_TEST

START_TEST(test_overlap) {
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12,
                FLA_FORMAT, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  /* One tensor inside a longer one, listed in the other order. */
  expect_header("{\"in\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [4, 6]}, "
                "\"c\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [8, 10]}, "
                "\"out\": {\"dtype\": \"U8\", \"shape\": [10], \"data_offsets\": [0, 10]}}", 12,
                FLA_FORMAT, "overlap");
  /* Empty tensors own no bytes; gaps are accepted. */
  expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                "\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]}, "
                "\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 16]}}", 16,
                FLA_OK, "");
}
END_TEST

START_TEST(test_truncated_data) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/t.safetensors", dir);
  sample s;
  make_sample(ctx, &s);
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 5, s.names, (const fla_tensor *const *)s.t),
                   FLA_OK);
  size_t n;
  unsigned char *img = th_read_bytes(path, &n);
  expect_image(img, n, FLA_OK, "");
  expect_image(img, n - 3, FLA_FORMAT, "truncated");
  th_write_bytes(path, img, n - 1);
  fla_safetensors *st = NULL;
  ck_assert_int_eq(fla_safetensors_open(ctx, path, &st), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), path));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "end past"));
  free(img);
  free_sample(&s);
  rm_dir(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_unsupported_dtypes) {
  const char *header =
      "{\"bytes\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [0, 3]}, "
      "\"mask\": {\"dtype\": \"BOOL\", \"shape\": [1], \"data_offsets\": [3, 4]}, "
      "\"f8\": {\"dtype\": \"F8_E4M3\", \"shape\": [4], \"data_offsets\": [4, 8]}, "
      "\"h\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [9, 13]}, "
      "\"big\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [13, 17]}}";
  size_t n;
  unsigned char *img = make_image(header, 17, &n);
  fla_ctx *ctx = th_cpu_ctx();
  fla_safetensors *st = NULL;
  ck_assert_msg(fla_safetensors_open_buffer(ctx, img, n, &st) == FLA_OK, "%s", fla_errmsg(ctx));
  ck_assert_int_eq(fla_safetensors_count(st), 5);
  fla_tensor *t = NULL;
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "bytes", -1, &t), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "'bytes'"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "U8"));
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "mask", FLA_F32, &t), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "BOOL"));
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "f8", FLA_F32, &t), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "F8_E4M3"));
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "big", -1, &t), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "dimensions"));
  /* An F16 tensor at an odd offset converts correctly (copied aligned first). */
  ck_assert_int_eq(fla_safetensors_load(ctx, st, "h", FLA_F32, &t), FLA_OK);
  uint16_t raw[2];
  memcpy(raw, img + n - 17 + 9, 4);
  ck_assert(((float *)fla_tensor_data(t))[1] == fla_f16_to_f32(raw[1]));
  fla_tensor_free(t);
  fla_safetensors_free(st);
  fla_ctx_free(ctx);
  free(img);
}
END_TEST

/* ------------------------------------------------------------------ fuzz */

static uint64_t rnd(th_rng *r, uint64_t n) { return (uint64_t)(th_uniform(r) * (double)n); }

/* Sets the little-endian length prefix. */
static void set_len(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* One random edit. Most land in the header (*hdr_end is its end, kept up to
** date), where the parser has the most to get wrong; several keep the length
** prefix consistent so that the JSON, not the framing, is what breaks; digit
** edits keep the JSON valid and break shapes and offsets instead. `p` has
** room for one more byte than *n. */
static void mutate(th_rng *r, unsigned char *p, size_t *n, size_t *hdr_end) {
  static const char special[] = "{}[]\":,-0123456789eE. \\u\xff\x80";
  size_t len = *n, h = *hdr_end < len ? *hdr_end : len;
  if (len <= 8 || h <= 8) {
    if (len > 0) p[rnd(r, len)] ^= 1;
    return;
  }
  size_t pos = 8 + rnd(r, h - 8);
  switch (rnd(r, 10)) {
  case 0: p[rnd(r, len)] = (unsigned char)rnd(r, 256); break;
  case 1: p[pos] = (unsigned char)special[rnd(r, sizeof special - 1)]; break;
  case 2: p[pos] ^= (unsigned char)(1u << rnd(r, 8)); break;
  case 3:
  case 4: /* the next digit after pos becomes another digit */
    while (pos < h && (p[pos] < '0' || p[pos] > '9')) pos++;
    if (pos < h) p[pos] = (unsigned char)('0' + rnd(r, 10));
    break;
  case 5: p[rnd(r, 8)] = (unsigned char)rnd(r, 256); break;
  case 6: *n = rnd(r, len + 1); break;
  case 7: /* delete a header byte, and shrink the length to match */
    memmove(p + pos, p + pos + 1, len - pos - 1);
    *n = len - 1;
    set_len(p, --*hdr_end - 8);
    break;
  case 8: /* duplicate a header byte, and grow the length to match */
    memmove(p + pos + 1, p + pos, len - pos);
    *n = len + 1;
    set_len(p, ++*hdr_end - 8);
    break;
  default: /* delete a byte anywhere, leaving the length as it was */
    pos = rnd(r, len);
    memmove(p + pos, p + pos + 1, len - pos - 1);
    *n = len - 1;
    break;
  }
}

/* Loads every tensor as stored and as f32: OK or UNSUPPORTED, never a crash. */
static void load_all(fla_ctx *ctx, fla_safetensors *st) {
  for (int i = 0; i < fla_safetensors_count(st); i++) {
    const char *name = fla_safetensors_name(st, i);
    for (int k = 0; k < 2; k++) {
      fla_tensor *t = NULL;
      fla_status s = fla_safetensors_load(ctx, st, name, k == 0 ? -1 : FLA_F32, &t);
      ck_assert_msg(s == FLA_OK || s == FLA_UNSUPPORTED, "load '%s': %s", name, fla_errmsg(ctx));
      fla_tensor_free(t);
    }
  }
}

START_TEST(test_fuzz_mutations) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/f.safetensors", dir);
  sample s;
  make_sample(ctx, &s);
  ck_assert_int_eq(fla_safetensors_save(ctx, path, 5, s.names, (const fla_tensor *const *)s.t),
                   FLA_OK);
  free_sample(&s);
  size_t n0;
  unsigned char *orig = th_read_bytes(path, &n0);
  rm_dir(dir);
  enum { MAX_EDITS = 4 };
  const size_t hdr0 = 8 + (size_t)orig[0] + ((size_t)orig[1] << 8);
  unsigned char *buf = malloc(n0 + MAX_EDITS);
  th_rng r;
  th_seed(&r, 20240601);
  int iters = th_quick() ? 5000 : 100000, ok = 0;
  for (int it = 0; it < iters; it++) {
    size_t n = n0, hdr_end = hdr0;
    memcpy(buf, orig, n0);
    int edits = 1 + (int)rnd(&r, MAX_EDITS);
    for (int e = 0; e < edits; e++) mutate(&r, buf, &n, &hdr_end);
    fla_safetensors *st = NULL;
    fla_status got = fla_safetensors_open_buffer(ctx, buf, n, &st);
    if (got != FLA_OK && got != FLA_FORMAT)
      ck_abort_msg("iteration %d: %s: %s", it, fla_errstr(got), fla_errmsg(ctx));
    if (got == FLA_OK) {
      ok++;
      load_all(ctx, st);
    }
    fla_safetensors_free(st);
  }
  ck_assert_int_gt(ok, 0); /* some mutations (in the data, say) stay valid */
  free(buf);
  free(orig);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *safetensors_suite(void) {
  Suite *s = suite_create("safetensors");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_conformance_file);
  tcase_add_test(tc, test_open_errors);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_save_bad_args);
  tcase_add_test(tc, test_save_missing_dir);
  tcase_add_test(tc, test_save_replaces_only_on_success);
  tcase_add_test(tc, test_empty_and_short_files);
  tcase_add_test(tc, test_header_length);
  tcase_add_test(tc, test_header_not_json);
  tcase_add_test(tc, test_bad_entries);
  tcase_add_test(tc, test_offsets_out_of_range);
  tcase_add_test(tc, test_size_mismatch);
  tcase_add_test(tc, test_overlap);
  tcase_add_test(tc, test_truncated_data);
  tcase_add_test(tc, test_unsupported_dtypes);
  suite_add_tcase(s, tc);
  TCase *fz = tcase_create("fuzz");
  tcase_set_timeout(fz, 600);
  tcase_add_test(fz, test_fuzz_mutations);
  suite_add_tcase(s, fz);
  return s;
}

int main(void) { return th_run_suite(safetensors_suite()); }
