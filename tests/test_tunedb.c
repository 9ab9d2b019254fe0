/*
** test_tunedb.c -- the tuning database (tunedb/tunedb.h): schema and
** migrations, round trips across reopening, exact / nearest / default
** fall-backs, candidate records, and the files it must refuse without
** touching them: corrupt, foreign, newer, locked, in a read-only place.
*/
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"
#include "internal.h"
#include "tunedb.h"

/* A fresh directory under /tmp; each Check test runs in its own process. */
static const char *tmp_dir(void) {
  static char dir[64];
  strcpy(dir, "/tmp/fla_tdb_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  return dir;
}

/* Removes dir and everything under it (plain files and folders). */
static void rm_tree(const char *dir) {
  chmod(dir, 0700);
  DIR *d = opendir(dir);
  if (!d) {
    unlink(dir);
    return;
  }
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

static void join(char *buf, size_t len, const char *dir, const char *name) {
  int n = snprintf(buf, len, "%s/%s", dir, name);
  ck_assert(n > 0 && (size_t)n < len);
}

static fla_tile_config cfg_of(int bt, int bk, int bv, int warps) {
  fla_tile_config c = {bt, bk, bv, warps};
  return c;
}

static int cfg_eq(fla_tile_config a, fla_tile_config b) {
  return a.BT == b.BT && a.BK == b.BK && a.BV == b.BV && a.warps == b.warps;
}

/* A key for the H100 with bucket storage supplied by the caller. */
static fla_tunedb_key make_key(char *bucket, size_t blen, int H, int K, int V) {
  ck_assert_int_eq(fla_tunedb_bucket(NULL, 0, H, K, V, bucket, blen), FLA_OK);
  fla_tunedb_key k = {
      .recipe_hash = "c0ffee00", .stage = "chunk_fwd", .gpu_name = "NVIDIA H100 80GB HBM3",
      .cc_major = 9, .cc_minor = 0, .driver_version = 12040, .nvrtc_version = "12.4",
      .dtype = "bf16", .bucket = bucket};
  return k;
}

/* One integer from SQL run on a plain SQLite connection to path. */
static long long raw_int(const char *path, const char *sql) {
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

static void raw_exec(const char *path, const char *sql) {
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);
}

/* A database at path with `rows` tuned rows (H = 1, 2, 4, ...). */
static void make_db(fla_ctx *ctx, const char *path, int rows) {
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_OK);
  for (int i = 0; i < rows; i++) {
    char b[64];
    fla_tunedb_key k = make_key(b, sizeof b, 1 << (i % 12), 64 + 64 * (i / 12), 128);
    fla_tunedb_candidate c[2] = {
        {cfg_of(64, 64, 64, 4), 1.5, FLA_TUNEDB_CAND_OK, NULL},
        {cfg_of(128, 64, 64, 8), -1, FLA_TUNEDB_CAND_FAILED,
         "too many resources requested for launch: a long reason to fill pages"}};
    fla_tile_config w = cfg_of(64, 64, 64, 4);
    ck_assert_int_eq(fla_tunedb_insert(db, &k, &w, 1.5, c, 2), FLA_OK);
  }
  fla_tunedb_close(db);
}

/* -------------------------------------------------------------- tests */

START_TEST(test_schema_created) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "a/b/tunedb.sqlite");  /* parents are created */
  fla_tunedb *db = NULL;
  /* Without CREATE a missing file is FLA_IO and nothing appears. */
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_IO);
  ck_assert_ptr_null(db);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "no such file"));
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db), FLA_IO);
  ck_assert_int_eq(th_count_entries(dir), 0);

  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_OK);
  ck_assert_ptr_nonnull(db);
  ck_assert_int_eq(fla_tunedb_schema_version(db), FLA_TUNEDB_SCHEMA_VERSION);
  fla_tunedb_close(db);

  ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), FLA_TUNEDB_SCHEMA_VERSION);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                 "name IN ('tuned', 'candidate')"), 2);
  /* WAL is persistent in the file: a plain connection sees it. */
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  sqlite3_close(h);

  /* Reopening migrates nothing; READONLY works on a current schema. */
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_OK);
  fla_tunedb_close(db);
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db), FLA_OK);
  ck_assert_int_eq(fla_tunedb_schema_version(db), 1);
  fla_tunedb_close(db);

  /* An empty file is a new database for a writer, no database for a reader. */
  char empty[256];
  join(empty, sizeof empty, dir, "empty.sqlite");
  th_write_bytes(empty, "", 0);
  ck_assert_int_eq(fla_tunedb_open(ctx, empty, FLA_TUNEDB_READONLY, &db), FLA_FORMAT);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "empty"));
  ck_assert_int_eq(fla_tunedb_open(ctx, empty, FLA_TUNEDB_READWRITE, &db), FLA_OK);
  ck_assert_int_eq(fla_tunedb_schema_version(db), 1);
  fla_tunedb_close(db);

  fla_tunedb_close(NULL);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* A v0 -> v1 migration from a database that a reader cannot migrate. */
START_TEST(test_migration_readonly_refuses) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");
  make_db(ctx, path, 1);
  /* Pretend an older version: a reader must refuse, leaving it alone. */
  raw_exec(path, "PRAGMA user_version = 0; DROP TABLE candidate; DROP TABLE tuned;");
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db), FLA_FORMAT);
  ck_assert_ptr_null(db);
  ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), 0);
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_OK);
  ck_assert_int_eq(fla_tunedb_schema_version(db), 1);
  fla_tunedb_close(db);
  ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), 1);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_bad_args) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_tunedb *db = (fla_tunedb *)ctx;
  ck_assert_int_eq(fla_tunedb_open(ctx, NULL, FLA_TUNEDB_CREATE, &db), FLA_INVALID);
  ck_assert_ptr_null(db);
  ck_assert_int_eq(fla_tunedb_open(ctx, "", FLA_TUNEDB_CREATE, &db), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_open(ctx, "/tmp/x", 0, &db), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_open(ctx, "/tmp/x", FLA_TUNEDB_READONLY | FLA_TUNEDB_CREATE, &db),
                   FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_open(ctx, "/tmp/x", 64, &db), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_open(ctx, "/tmp/x", FLA_TUNEDB_READONLY, NULL), FLA_INVALID);

  char b[8];
  ck_assert_int_eq(fla_tunedb_bucket(ctx, 0, 16, 128, 128, b, sizeof b), FLA_INVALID);
  ck_assert_str_eq(b, "");
  ck_assert_int_eq(fla_tunedb_bucket(ctx, 0, 0, 128, 128, b, sizeof b), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_bucket(NULL, 0, 16, -1, 128, b, sizeof b), FLA_INVALID);

  /* Lookup with no database: the default, no error. */
  fla_tile_config d = cfg_of(64, 32, 32, 4), got;
  fla_tunedb_how how = FLA_TUNEDB_EXACT;
  double t = 0;
  char bk[64];
  fla_tunedb_key k = make_key(bk, sizeof bk, 16, 128, 128);
  ck_assert_int_eq(fla_tunedb_lookup(NULL, &k, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
  ck_assert(cfg_eq(got, d));
  ck_assert(t < 0);
  ck_assert_int_eq(fla_tunedb_lookup(NULL, &k, NULL, &got, &how, &t), FLA_INVALID);
  ck_assert_str_eq(fla_tunedb_how_name(FLA_TUNEDB_NEAREST), "nearest");
  ck_assert_str_eq(fla_tunedb_outcome_name(FLA_TUNEDB_CAND_WRONG), "wrong");
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_default_path) {
  char buf[512];
  setenv("FLA_TUNEDB", "/x/y.sqlite", 1);
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  setenv("HOME", "/home/u", 1);
  ck_assert_int_eq(fla_tunedb_default_path(NULL, buf, sizeof buf), FLA_OK);
  ck_assert_str_eq(buf, "/x/y.sqlite");
  setenv("FLA_TUNEDB", "", 1);
  ck_assert_int_eq(fla_tunedb_default_path(NULL, buf, sizeof buf), FLA_OK);
  ck_assert_str_eq(buf, "/xdg/fla/tunedb.sqlite");
  unsetenv("FLA_TUNEDB");
  setenv("XDG_CACHE_HOME", "relative", 1);  /* XDG: a relative path is ignored */
  ck_assert_int_eq(fla_tunedb_default_path(NULL, buf, sizeof buf), FLA_OK);
  ck_assert_str_eq(buf, "/home/u/.cache/fla/tunedb.sqlite");
  unsetenv("XDG_CACHE_HOME");
  ck_assert_int_eq(fla_tunedb_default_path(NULL, buf, sizeof buf), FLA_OK);
  ck_assert_str_eq(buf, "/home/u/.cache/fla/tunedb.sqlite");
  ck_assert_int_eq(fla_tunedb_default_path(NULL, buf, 8), FLA_INVALID);
  ck_assert_str_eq(buf, "");
  unsetenv("HOME");
  fla_ctx *ctx = th_cpu_ctx();
  ck_assert_int_eq(fla_tunedb_default_path(ctx, buf, sizeof buf), FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "HOME"));
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_bucket_and_distance) {
  char b[64];
  ck_assert_int_eq(fla_tunedb_bucket(NULL, 0, 16, 128, 128, b, sizeof b), FLA_OK);
  ck_assert_str_eq(b, "N=any,H=16,K=128,V=128");
  ck_assert_int_eq(fla_tunedb_bucket(NULL, 4, 2, 64, 32, b, sizeof b), FLA_OK);
  ck_assert_str_eq(b, "N=4,H=2,K=64,V=32");

  const char *a = "N=any,H=16,K=128,V=128";
  ck_assert(fla_tunedb_bucket_distance(a, a) == 0.0);
  ck_assert(fabs(fla_tunedb_bucket_distance(a, "N=any,H=32,K=128,V=128") - 1.0) < 1e-12);
  ck_assert(fabs(fla_tunedb_bucket_distance(a, "N=any,H=4,K=128,V=128") - 2.0) < 1e-12);
  ck_assert(fabs(fla_tunedb_bucket_distance(a, "N=any,H=12,K=128,V=128") - log2(16.0 / 12.0)) < 1e-12);
  /* K, V and N must match exactly. */
  ck_assert(fla_tunedb_bucket_distance(a, "N=any,H=16,K=64,V=128") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, "N=any,H=16,K=128,V=256") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, "N=2,H=16,K=128,V=128") < 0);
  /* Malformed or differently shaped buckets never match. */
  ck_assert(fla_tunedb_bucket_distance(a, "N=any,H=16,K=128") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, "N=any,H=x,K=128,V=128") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, "N=any,H=0,K=128,V=128") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, "N=any,H=16,K=128,V=128,") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, "") < 0);
  ck_assert(fla_tunedb_bucket_distance(a, NULL) < 0);
  ck_assert(fla_tunedb_bucket_distance("garbage", "garbage") < 0);
  ck_assert(fla_tunedb_bucket_distance("D=3", "D=3") == 0.0);  /* other dims: exact */
}
END_TEST

START_TEST(test_round_trip) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_OK);
  char b[64];
  fla_tunedb_key k = make_key(b, sizeof b, 16, 128, 128);
  fla_tile_config w = cfg_of(64, 64, 128, 8), d = cfg_of(32, 32, 32, 4), got;
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w, 0.25, NULL, 0), FLA_OK);
  fla_tunedb_close(db);

  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db), FLA_OK);
  fla_tunedb_how how;
  double t;
  ck_assert_int_eq(fla_tunedb_lookup(db, &k, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_EXACT);
  ck_assert(cfg_eq(got, w));
  ck_assert(t == 0.25);
  /* A reader may not write. */
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w, 0.5, NULL, 0), FLA_INVALID);
  fla_tunedb_close(db);

  /* Replace: the same key again holds one row with the new winner. */
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_OK);
  fla_tile_config w2 = cfg_of(128, 64, 64, 4);
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w2, 0.2, NULL, 0), FLA_OK);
  ck_assert_int_eq(fla_tunedb_lookup(db, &k, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_EXACT);
  ck_assert(cfg_eq(got, w2));
  /* Bad inputs. */
  ck_assert_int_eq(fla_tunedb_insert(db, &k, NULL, 0.2, NULL, 0), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w2, NAN, NULL, 0), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w2, 0.2, NULL, 1), FLA_INVALID);
  fla_tunedb_key bad = k;
  bad.dtype = "";
  ck_assert_int_eq(fla_tunedb_insert(db, &bad, &w2, 0.2, NULL, 0), FLA_INVALID);
  ck_assert_int_eq(fla_tunedb_lookup(db, &bad, &d, &got, &how, NULL), FLA_INVALID);
  ck_assert(cfg_eq(got, d));
  ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
  fla_tunedb_close(db);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM tuned"), 1);
  ck_assert_int_eq(raw_int(path, "SELECT bt FROM tuned"), 128);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_fallbacks) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_OK);
  char b16[64], b4[64];
  fla_tunedb_key k16 = make_key(b16, sizeof b16, 16, 128, 128);
  fla_tunedb_key k4 = make_key(b4, sizeof b4, 4, 128, 128);
  fla_tile_config w16 = cfg_of(64, 64, 64, 4), w4 = cfg_of(64, 128, 32, 8);
  fla_tile_config d = cfg_of(32, 32, 32, 4), got;
  ck_assert_int_eq(fla_tunedb_insert(db, &k16, &w16, 1.0, NULL, 0), FLA_OK);
  ck_assert_int_eq(fla_tunedb_insert(db, &k4, &w4, 2.0, NULL, 0), FLA_OK);
  fla_tunedb_how how;
  double t;

  char b[64];
  /* H=32: 1 from H=16, 3 from H=4. */
  fla_tunedb_key q = make_key(b, sizeof b, 32, 128, 128);
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_NEAREST);
  ck_assert(cfg_eq(got, w16));
  ck_assert(t == 1.0);
  /* H=2: nearest is H=4. */
  q = make_key(b, sizeof b, 2, 128, 128);
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_NEAREST);
  ck_assert(cfg_eq(got, w4));
  /* H=8: a tie (1 from both); the larger H wins. */
  q = make_key(b, sizeof b, 8, 128, 128);
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_NEAREST);
  ck_assert(cfg_eq(got, w16));
  /* Another K or V: no neighbour, the default. */
  q = make_key(b, sizeof b, 16, 64, 128);
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
  ck_assert(cfg_eq(got, d));
  ck_assert(t < 0);
  q = make_key(b, sizeof b, 16, 128, 64);
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
  /* Another dtype, stage, recipe, GPU or compute capability: the default. */
  const char **fields[4] = {&q.dtype, &q.stage, &q.recipe_hash, &q.gpu_name};
  for (int i = 0; i < 4; i++) {
    q = k16;
    *fields[i] = "other";
    ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, NULL), FLA_OK);
    ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
    ck_assert(cfg_eq(got, d));
  }
  q = k16;
  q.cc_minor = 9;
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
  /* A new driver or NVRTC: the same bucket stands in (distance 0). */
  q = k16;
  q.driver_version = 12080;
  q.nvrtc_version = "12.8";
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_NEAREST);
  ck_assert(cfg_eq(got, w16));
  /* ... and a row of that driver, equally near, is preferred. */
  fla_tunedb_key k16b = k16;
  k16b.driver_version = 12080;
  k16b.nvrtc_version = "12.8";
  k16b.bucket = b4;  /* H=4 under the new driver */
  ck_assert_int_eq(fla_tunedb_insert(db, &k16b, &w16, 3.0, NULL, 0), FLA_OK);
  q = k16;
  q.driver_version = 12080;
  q.nvrtc_version = "12.8";
  q.bucket = b;
  ck_assert_int_eq(fla_tunedb_bucket(NULL, 0, 8, 128, 128, b, sizeof b), FLA_OK);
  ck_assert_int_eq(fla_tunedb_lookup(db, &q, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_NEAREST);
  ck_assert(t == 3.0);
  /* Exact beats everything. */
  ck_assert_int_eq(fla_tunedb_lookup(db, &k4, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_EXACT);
  ck_assert(cfg_eq(got, w4));
  ck_assert(t == 2.0);
  /* A key with candidates but no winner yet is not a tuned row. */
  char b64[64];
  fla_tunedb_key kc = make_key(b64, sizeof b64, 16, 256, 256);
  fla_tunedb_candidate c = {cfg_of(64, 64, 64, 4), 1.0, FLA_TUNEDB_CAND_OK, NULL};
  ck_assert_int_eq(fla_tunedb_record_candidate(db, &kc, &c), FLA_OK);
  ck_assert_int_eq(fla_tunedb_lookup(db, &kc, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_DEFAULT);
  ck_assert(cfg_eq(got, d));
  fla_tunedb_close(db);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_candidates) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_OK);
  char b[64];
  fla_tunedb_key k = make_key(b, sizeof b, 16, 128, 128);
  fla_tunedb_candidate fail = {cfg_of(256, 128, 128, 8), 5.0, FLA_TUNEDB_CAND_FAILED,
                               "CUDA_ERROR_OUT_OF_RESOURCES"};
  ck_assert_int_eq(fla_tunedb_record_candidate(db, &k, &fail), FLA_OK);
  int known = -1;
  fla_tunedb_outcome o = FLA_TUNEDB_CAND_OK;
  double t = 0;
  ck_assert_int_eq(fla_tunedb_candidate_known(db, &k, &fail.cfg, &known, &o, &t), FLA_OK);
  ck_assert_int_eq(known, 1);
  ck_assert_int_eq(o, FLA_TUNEDB_CAND_FAILED);
  ck_assert(t < 0);  /* a failed candidate has no time */
  fla_tile_config other = cfg_of(64, 64, 64, 4);
  ck_assert_int_eq(fla_tunedb_candidate_known(db, &k, &other, &known, &o, &t), FLA_OK);
  ck_assert_int_eq(known, 0);
  ck_assert_int_eq(fla_tunedb_candidate_known(db, &k, &other, NULL, NULL, NULL), FLA_INVALID);

  /* The result with its candidates; the earlier failed one is kept. */
  fla_tunedb_candidate cs[3] = {
      {cfg_of(64, 64, 64, 4), 0.5, FLA_TUNEDB_CAND_OK, NULL},
      {cfg_of(128, 64, 64, 4), 0.7, FLA_TUNEDB_CAND_OK, NULL},
      {cfg_of(64, 32, 32, 2), 0.4, FLA_TUNEDB_CAND_WRONG, "max rel err 3.1e-01"}};
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &cs[0].cfg, 0.5, cs, 3), FLA_OK);
  /* A bad outcome aborts the whole result (nothing of it written). */
  char b2[64];
  fla_tunedb_key k2 = make_key(b2, sizeof b2, 2, 128, 128);
  fla_tunedb_candidate badc[2] = {cs[0], cs[1]};
  badc[1].outcome = (fla_tunedb_outcome)7;
  ck_assert_int_eq(fla_tunedb_insert(db, &k2, &cs[0].cfg, 0.5, badc, 2), FLA_INVALID);
  fla_tunedb_close(db);

  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM candidate"), 4);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM tuned"), 1);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM candidate WHERE status = 'failed' AND "
                                 "time_ms IS NULL AND reason = 'CUDA_ERROR_OUT_OF_RESOURCES'"), 1);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM candidate WHERE status = 'wrong' AND "
                                 "time_ms IS NULL"), 1);

  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db), FLA_OK);
  ck_assert_int_eq(fla_tunedb_candidate_known(db, &k, &fail.cfg, &known, &o, NULL), FLA_OK);
  ck_assert_int_eq(known, 1);
  ck_assert_int_eq(o, FLA_TUNEDB_CAND_FAILED);
  ck_assert_int_eq(fla_tunedb_candidate_known(db, &k, &cs[1].cfg, &known, &o, &t), FLA_OK);
  ck_assert_int_eq(known, 1);
  ck_assert_int_eq(o, FLA_TUNEDB_CAND_OK);
  ck_assert(t == 0.7);
  ck_assert_int_eq(fla_tunedb_candidate_known(db, &k, &cs[2].cfg, &known, &o, NULL), FLA_OK);
  ck_assert_int_eq(o, FLA_TUNEDB_CAND_WRONG);
  ck_assert_int_eq(fla_tunedb_record_candidate(db, &k, &fail), FLA_INVALID);  /* read-only */
  fla_tunedb_close(db);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* Files in dir other than SQLite's own sidecars (-wal, -shm: a reader of a
** WAL database makes them, empty, and they are SQLite's to remove). */
static int count_non_sidecar(const char *dir) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (l > 4 && (!strcmp(e->d_name + l - 4, "-wal") || !strcmp(e->d_name + l - 4, "-shm"))) continue;
    n++;
  }
  closedir(d);
  return n;
}

/* Opens path every way; each must be `want` and leave the bytes as they
** were, and create no other file. */
static void expect_refused(fla_ctx *ctx, const char *dir, const char *path, fla_status want,
                           const char *msg_part) {
  size_t n0;
  unsigned char *before = th_read_bytes(path, &n0);
  int entries = count_non_sidecar(dir);
  const int flags[3] = {FLA_TUNEDB_READONLY, FLA_TUNEDB_READWRITE, FLA_TUNEDB_CREATE};
  for (int i = 0; i < 3; i++) {
    fla_tunedb *db = (fla_tunedb *)ctx;
    ck_assert_int_eq(fla_tunedb_open(ctx, path, flags[i], &db), want);
    ck_assert_ptr_null(db);
    if (msg_part && !strstr(fla_errmsg(ctx), msg_part))
      ck_abort_msg("message '%s' lacks '%s'", fla_errmsg(ctx), msg_part);
    size_t n1;
    unsigned char *after = th_read_bytes(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    free(after);
    ck_assert_int_eq(count_non_sidecar(dir), entries);
  }
  free(before);
}

START_TEST(test_corrupt_files) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");

  /* Random bytes. */
  th_rng r;
  th_seed(&r, 4);
  unsigned char junk[8192];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(th_uniform(&r) * 256);
  th_write_bytes(path, junk, sizeof junk);
  expect_refused(ctx, dir, path, FLA_FORMAT, "not an SQLite database");

  /* A text file. */
  const char *text = "recipe,stage,bt\ngla,chunk_fwd,64\n";
  th_write_bytes(path, text, strlen(text));
  expect_refused(ctx, dir, path, FLA_FORMAT, "not an SQLite database");

  /* A real database, truncated: to half, and to just past the magic. */
  unlink(path);
  make_db(ctx, path, 200);
  size_t n;
  unsigned char *img = th_read_bytes(path, &n);
  ck_assert(n >= 4 * 4096);
  th_write_bytes(path, img, n / 2);
  expect_refused(ctx, dir, path, FLA_FORMAT, "corrupt");
  th_write_bytes(path, img, 50);
  expect_refused(ctx, dir, path, FLA_FORMAT, NULL);
  /* Damaged in the middle (a page of zeros). */
  memset(img + 2 * 4096, 0, 4096);
  th_write_bytes(path, img, n);
  expect_refused(ctx, dir, path, FLA_FORMAT, "corrupt");
  free(img);

  /* Some other program's SQLite database. */
  unlink(path);
  raw_exec(path, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
                 "INSERT INTO notes (body) VALUES ('keep me');");
  expect_refused(ctx, dir, path, FLA_FORMAT, "not a tuning database");
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM notes"), 1);

  /* A directory at the path. */
  unlink(path);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_IO);
  rmdir(path);

  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_future_version) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");
  make_db(ctx, path, 3);
  raw_exec(path, "PRAGMA user_version = 99");
  expect_refused(ctx, dir, path, FLA_FORMAT, "newer");
  ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), 99);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM tuned"), 3);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_locked) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  join(path, sizeof path, dir, "t.sqlite");
  make_db(ctx, path, 5);

  /* Another writer holds the database. */
  sqlite3 *other = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &other, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(other, "UPDATE tuned SET time_ms = 9 WHERE id = 1", NULL, NULL, NULL),
                   SQLITE_OK);

  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_OK);  /* WAL: reads go on */
  ck_assert_int_eq(fla_tunedb_set_busy_timeout(db, 200), FLA_OK);
  ck_assert_int_eq(fla_tunedb_set_busy_timeout(db, -1), FLA_INVALID);
  char b[64];
  fla_tunedb_key k = make_key(b, sizeof b, 16, 512, 512);
  fla_tile_config w = cfg_of(64, 64, 64, 4), d = cfg_of(32, 32, 32, 4), got;
  double t0 = th_now_s();
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w, 1.0, NULL, 0), FLA_IO);
  double waited = th_now_s() - t0;
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "database is locked"));
  ck_assert_msg(waited >= 0.15 && waited < 1.9, "waited %.3f s for a 200 ms timeout", waited);
  fla_tunedb_candidate c = {cfg_of(64, 64, 64, 4), -1, FLA_TUNEDB_CAND_FAILED, "x"};
  ck_assert_int_eq(fla_tunedb_record_candidate(db, &k, &c), FLA_IO);
  /* Reads still work and see the committed rows. */
  char b1[64];
  fla_tunedb_key k1 = make_key(b1, sizeof b1, 1, 64, 128);
  fla_tunedb_how how;
  double t;
  ck_assert_int_eq(fla_tunedb_lookup(db, &k1, &d, &got, &how, &t), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_EXACT);
  ck_assert(t == 1.5);

  /* Released: the write goes through and nothing was lost. */
  ck_assert_int_eq(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  ck_assert_int_eq(fla_tunedb_insert(db, &k, &w, 1.0, NULL, 0), FLA_OK);
  ck_assert_int_eq(fla_tunedb_lookup(db, &k, &d, &got, &how, NULL), FLA_OK);
  ck_assert_int_eq(how, FLA_TUNEDB_EXACT);
  fla_tunedb_close(db);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM tuned WHERE bt IS NOT NULL"), 6);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM tuned WHERE time_ms = 9"), 1);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM candidate"), 10);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_readonly_location) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char ro[256], path[512];
  join(ro, sizeof ro, dir, "ro");
  ck_assert_int_eq(mkdir(ro, 0700), 0);
  ck_assert_int_eq(chmod(ro, 0500), 0);
  fla_tunedb *db = NULL;
  if (access(ro, W_OK) != 0) {
    /* Permissions are enforced (not root): the read-only directory itself. */
    join(path, sizeof path, ro, "tunedb.sqlite");
    ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_IO);
    ck_assert_ptr_null(db);
    join(path, sizeof path, ro, "sub/tunedb.sqlite");
    ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_IO);
    ck_assert_int_eq(th_count_entries(ro), 0);
  }
  /* Whoever runs it: a "directory" that is a regular file (ENOTDIR). */
  char file[256];
  join(file, sizeof file, dir, "plain");
  th_write_bytes(file, "x", 1);
  join(path, sizeof path, file, "tunedb.sqlite");
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_IO);
  ck_assert_ptr_null(db);
  join(path, sizeof path, file, "sub/tunedb.sqlite");
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db), FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "directory"));
  size_t n;
  unsigned char *p = th_read_bytes(file, &n);
  ck_assert_uint_eq(n, 1);
  free(p);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *tunedb_suite(void) {
  Suite *s = suite_create("tunedb");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_schema_created);
  tcase_add_test(tc, test_migration_readonly_refuses);
  tcase_add_test(tc, test_bad_args);
  tcase_add_test(tc, test_default_path);
  tcase_add_test(tc, test_bucket_and_distance);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_fallbacks);
  tcase_add_test(tc, test_candidates);
  tcase_add_test(tc, test_corrupt_files);
  tcase_add_test(tc, test_future_version);
  tcase_add_test(tc, test_locked);
  tcase_add_test(tc, test_readonly_location);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_run_suite(tunedb_suite()); }
