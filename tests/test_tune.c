/*
** test_tune.c -- the tuner's CPU side and the databases a context reads:
** the recipes' search spaces, candidate enumeration and pruning, the keys
** dispatch and the tuner share, fla_ctx_set_tunedb's resolution (path,
** FLA_TUNEDB, none), exact / nearest / default through a context across
** close and reopen, and the files a context must survive without touching
** them: corrupt, not SQLite, locked by another writer, in a read-only place.
*/
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cuda/tune.h"
#include "cuda/tune_pick.h"
#include "harness.h"
#include "internal.h"
#include "recipe.h"
#include "tune_ctx.h"
#include "tunedb.h"

static const char *tmp_dir(void) {
  static char dir[64];
  strcpy(dir, "/tmp/fla_tune_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  return dir;
}

static void rm_tree(const char *dir) {
  chmod(dir, 0700);
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static fla_recipe *recipe_(fla_ctx *ctx, const char *name) {
  fla_recipe *r = NULL;
  ck_assert_msg(fla_recipe_find(ctx, name, &r) == FLA_OK, "%s", fla_errmsg(ctx));
  return r;
}

static fla_tune_ident h100_(void) {
  fla_tune_ident id;
  memset(&id, 0, sizeof id);
  snprintf(id.gpu_name, sizeof id.gpu_name, "NVIDIA H100 80GB HBM3");
  id.cc_major = 9, id.cc_minor = 0, id.driver_version = 13000;
  snprintf(id.nvrtc_version, sizeof id.nvrtc_version, "13.0");
  return id;
}

/* The generator key of recipe r at K = V = D, bf16, ht stored. */
static fla_gen_key gkey_(fla_recipe *r, int D) {
  fla_gen_key k;
  fla_gen_key_from_ir(fla_recipe_ir(r), D, D, 1, 0, 1, &k);
  return k;
}

static int same_cfg_(fla_tile_config a, fla_tile_config b) {
  return a.BT == b.BT && a.BK == b.BK && a.BV == b.BV && a.warps == b.warps;
}

/* A database at path holding winner w for (r, stage, H, D) on the H100. */
static void put_row_(fla_ctx *ctx, const char *path, fla_recipe *r, fla_stage st, int H, int D,
                     fla_tile_config w, double ms) {
  fla_tune_ident id = h100_();
  fla_tune_key k;
  fla_gen_key gk = gkey_(r, D);
  ck_assert_int_eq(fla_tune_key_make(ctx, &id, r, st, &gk, H, &k), FLA_OK);
  fla_tunedb *db = NULL;
  ck_assert_msg(fla_tunedb_open(ctx, path, FLA_TUNEDB_CREATE, &db) == FLA_OK, "%s", fla_errmsg(ctx));
  fla_tunedb_candidate c = {w, ms, FLA_TUNEDB_CAND_OK, NULL};
  ck_assert_int_eq(fla_tunedb_insert(db, &k.key, &w, ms, &c, 1), FLA_OK);
  ck_assert_int_eq(fla_tunedb_checkpoint(db), FLA_OK);
  fla_tunedb_close(db);
}

/* What a context's databases give for (r, stage, H, D) on the H100. */
static fla_tunedb_how look_(fla_ctx *ctx, fla_recipe *r, fla_stage st, int H, int D,
                            fla_tile_config *got) {
  fla_tune_ident id = h100_();
  fla_tune_key k;
  fla_gen_key gk = gkey_(r, D);
  ck_assert_int_eq(fla_tune_key_make(ctx, &id, r, st, &gk, H, &k), FLA_OK);
  fla_tile_config d;
  fla_stage_default_config(st, &gk, &d);
  fla_tunedb_how how;
  double ms;
  fla_ctx_tune_lookup(ctx, &k.key, &d, got, &how, &ms);
  if (how == FLA_TUNEDB_DEFAULT) ck_assert(same_cfg_(*got, d) && ms == -1);
  return how;
}

/* -------------------------------------------------------------- tests */

START_TEST(test_recipe_tiles) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = recipe_(ctx, "gla");
  const fla_ir *ir = fla_recipe_ir(r);
  ck_assert_int_eq(ir->tiles_n[FLA_TILE_BK], 2);
  ck_assert_int_eq(ir->tiles[FLA_TILE_BK][1], 64);
  ck_assert_int_eq(ir->tiles_n[FLA_TILE_WARPS], 3);
  ck_assert_int_eq(ir->tiles_n[FLA_TILE_BT], 0);
  fla_recipe_free(r);
  /* duplicates are dropped, other names ignored */
  const char *src =
      "return recipe 'x' { inputs = { q = 'BTHK', k = 'BTHK', v = 'BTHV' },"
      " write = { key = 'k', value = 'v' }, read = { query = 'q' },"
      " chunk = { tiles = { BV = { 32, 32, 16 }, other = { 1 } } } }";
  ck_assert_msg(fla_recipe_load_string(ctx, "x.lua", src, &r) == FLA_OK, "%s", fla_errmsg(ctx));
  ir = fla_recipe_ir(r);
  ck_assert_int_eq(ir->tiles_n[FLA_TILE_BV], 2);
  ck_assert_int_eq(ir->tiles[FLA_TILE_BV][1], 16);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_plan_prunes) {
  fla_ctx *ctx = th_cpu_ctx();
  static const char *names[] = {"gla", "simple_gla", "gated_delta_rule", "retention"};
  for (int n = 0; n < 4; n++) {
    fla_recipe *r = recipe_(ctx, names[n]);
    static fla_tune_job job;
    fla_tune_shape sh = {2, 300, 16, 128, 128};
    ck_assert_msg(fla_tune_plan(ctx, r, &sh, &job) == FLA_OK, "%s", fla_errmsg(ctx));
    ck_assert_msg(job.chunk_stage >= 0, "%s has a chunked stage", names[n]);
    ck_assert_int_gt(job.npruned, 0);  /* BK 32/64 against K = 128: refused before compiling */
    ck_assert_int_le(job.ncand, 8);
    /* the chunked default first, the recurrent default among them, no duplicates,
    ** every candidate accepted by its stage */
    ck_assert_int_eq(job.cand[0].stage, job.chunk_stage);
    ck_assert(job.cand[0].is_default);
    int rec_default = 0;
    for (int i = 0; i < job.ncand; i++) {
      fla_tune_cand *c = &job.cand[i];
      rec_default += c->stage == FLA_STAGE_RECURRENT_FWD && c->is_default;
      char *src = NULL, kn[FLA_STAGE_MAX_KERNELS][64];
      int nk = 0;
      ck_assert_msg(fla_generate(ctx, c->stage, &job.key, &c->cfg, &src, kn, &nk) == FLA_OK, "%s",
                    fla_errmsg(ctx));
      free(src);
      ck_assert_int_eq(c->cfg.BK, c->stage == FLA_STAGE_RECURRENT_FWD ? 128 : 128);
      for (int j = 0; j < i; j++)
        ck_assert(!(job.cand[j].stage == c->stage && same_cfg_(job.cand[j].cfg, c->cfg)));
      ck_assert(!c->known && !c->done);
    }
    ck_assert_int_eq(rec_default, 1);
    fla_recipe_free(r);
  }
  /* T = 1: the recurrent stage only */
  fla_recipe *r = recipe_(ctx, "gla");
  static fla_tune_job job;
  fla_tune_shape one = {4, 1, 4, 64, 64};
  ck_assert_int_eq(fla_tune_plan(ctx, r, &one, &job), FLA_OK);
  ck_assert_int_eq(job.chunk_stage, -1);
  for (int i = 0; i < job.ncand; i++) ck_assert_int_eq(job.cand[i].stage, FLA_STAGE_RECURRENT_FWD);
  /* a key no stage takes is an error, not an empty plan */
  fla_recipe *b = recipe_(ctx, "based");
  fla_tune_shape huge = {1, 64, 2, 128, 128};  /* taylor2: 1 + 128 + 128^2 state keys */
  ck_assert_int_eq(fla_tune_plan(ctx, b, &huge, &job), FLA_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "based"));
  fla_recipe_free(b);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_keys) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *a = recipe_(ctx, "gla"), *b = recipe_(ctx, "simple_gla");
  fla_tune_ident id = h100_();
  fla_tune_key k1, k2;
  fla_gen_key ga = gkey_(a, 128), gb = gkey_(b, 128);
  ck_assert_int_eq(fla_tune_key_make(ctx, &id, a, FLA_STAGE_CHUNK_GK_FWD, &ga, 16, &k1), FLA_OK);
  ck_assert_str_eq(k1.key.bucket, "N=any,H=16,K=128,V=128");
  ck_assert_str_eq(k1.key.dtype, "bf16");
  char want[40];
  snprintf(want, sizeof want, "chunk_gk_fwd@%08x",
           (unsigned)(fla_stage_source_hash(FLA_STAGE_CHUNK_GK_FWD) & 0xffffffffu));
  ck_assert_str_eq(k1.key.stage, want);  /* a changed template makes another key */
  ck_assert(fla_stage_source_hash(FLA_STAGE_CHUNK_GK_FWD) != fla_stage_source_hash(FLA_STAGE_CHUNK_FWD));
  ck_assert(fla_stage_source_hash(FLA_STAGE_CHUNK_GK_FWD) == fla_stage_source_hash(FLA_STAGE_CHUNK_GK_FWD));
  ck_assert_str_eq(k1.key.gpu_name, "NVIDIA H100 80GB HBM3");
  ck_assert_int_eq(strlen(k1.key.recipe_hash), 16);
  ck_assert_int_eq(fla_tune_key_make(ctx, &id, b, FLA_STAGE_CHUNK_FWD, &gb, 16, &k2), FLA_OK);
  ck_assert_str_ne(k1.recipe_hash, k2.recipe_hash);
  char h[17];
  fla_tune_recipe_hash(a, h);
  ck_assert_str_eq(h, k1.recipe_hash);  /* stable */
  ck_assert_int_eq(fla_tune_key_make(ctx, &id, a, FLA_STAGE_CHUNK_GK_FWD, &ga, 0, &k1), FLA_INVALID);
  fla_recipe_free(a), fla_recipe_free(b);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_ctx_round_trip) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/t.sqlite", dir);
  fla_recipe *r = recipe_(ctx, "simple_gla"), *other = recipe_(ctx, "retention");
  fla_tile_config w = {64, 128, 32, 4}, got;
  put_row_(ctx, path, r, FLA_STAGE_CHUNK_FWD, 16, 128, w, 0.5);

  for (int pass = 0; pass < 2; pass++) {  /* a new context each time: across close and reopen */
    fla_ctx *c = th_cpu_ctx();
    ck_assert_msg(fla_ctx_set_tunedb(c, path) == FLA_OK, "%s", fla_errmsg(c));
    ck_assert_str_eq(fla_ctx_tunedb(c), path);
    ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_EXACT);
    ck_assert(same_cfg_(got, w));
    ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 64, 128, &got), FLA_TUNEDB_NEAREST);  /* H */
    ck_assert(same_cfg_(got, w));
    ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 64, &got), FLA_TUNEDB_DEFAULT);  /* K, V */
    ck_assert_int_eq(look_(c, other, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_DEFAULT);
    ck_assert_int_eq(look_(c, r, FLA_STAGE_RECURRENT_FWD, 16, 128, &got), FLA_TUNEDB_DEFAULT);
    /* "": none */
    ck_assert_int_eq(fla_ctx_set_tunedb(c, ""), FLA_OK);
    ck_assert_str_eq(fla_ctx_tunedb(c), "");
    ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_DEFAULT);
    fla_ctx_free(c);
  }
  fla_recipe_free(r), fla_recipe_free(other);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_ctx_env) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/env.sqlite", dir);
  fla_recipe *r = recipe_(ctx, "gla");
  fla_tile_config w = {64, 128, 32, 4}, got;
  put_row_(ctx, path, r, FLA_STAGE_CHUNK_GK_FWD, 8, 128, w, 1.0);

  setenv("FLA_TUNEDB", path, 1);
  fla_ctx *c = th_cpu_ctx();  /* lazily, at the first lookup */
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_GK_FWD, 8, 128, &got), FLA_TUNEDB_EXACT);
  ck_assert_str_eq(fla_ctx_tunedb(c), path);
  ck_assert_int_eq(fla_ctx_set_tunedb(c, NULL), FLA_OK);  /* explicitly */
  ck_assert_str_eq(fla_ctx_tunedb(c), path);
  fla_ctx_free(c);

  setenv("FLA_TUNEDB", "none", 1);
  c = th_cpu_ctx();
  ck_assert_int_eq(fla_ctx_set_tunedb(c, NULL), FLA_OK);
  ck_assert_str_eq(fla_ctx_tunedb(c), "");
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_GK_FWD, 8, 128, &got), FLA_TUNEDB_DEFAULT);
  fla_ctx_free(c);

  /* A missing file named by FLA_TUNEDB: a clear error, defaults, nothing created. */
  char missing[300];
  snprintf(missing, sizeof missing, "%s/missing.sqlite", dir);
  setenv("FLA_TUNEDB", missing, 1);
  c = th_cpu_ctx();
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_GK_FWD, 8, 128, &got), FLA_TUNEDB_DEFAULT);
  ck_assert_int_eq(fla_ctx_set_tunedb(c, NULL), FLA_IO);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(c), "missing.sqlite"));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(c), "default configurations"));
  ck_assert_int_eq(access(missing, F_OK), -1);
  fla_ctx_free(c);
  unsetenv("FLA_TUNEDB");

  /* The user cache (XDG_CACHE_HOME) when FLA_TUNEDB is not set. */
  char cache[300], file[400];
  snprintf(cache, sizeof cache, "%s/cache", dir);
  snprintf(file, sizeof file, "%s/fla/tunedb.sqlite", cache);
  put_row_(ctx, file, r, FLA_STAGE_CHUNK_GK_FWD, 8, 128, w, 1.0);
  setenv("XDG_CACHE_HOME", cache, 1);
  c = th_cpu_ctx();
  ck_assert_int_eq(fla_ctx_set_tunedb(c, NULL), FLA_OK);
  ck_assert_int_eq(strncmp(fla_ctx_tunedb(c), file, strlen(file)), 0);
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_GK_FWD, 8, 128, &got), FLA_TUNEDB_EXACT);
  fla_ctx_free(c);
  unsetenv("XDG_CACHE_HOME");
  unlink(file);
  snprintf(file, sizeof file, "%s/fla", cache);
  rmdir(file);
  rmdir(cache);
  fla_recipe_free(r);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* A file at the path that is not a tuning database: an error naming it,
** the defaults, and the file byte for byte as it was. */
/* The shipped database is the copy embedded in the library: it opens from
** memory, holds the swept winners of this source tree's tunedb/h100.sqlite
** byte for byte, and is what the default resolution reads when neither
** FLA_TUNEDB nor a user cache is there (so a binary moved away from its
** source tree keeps its winners). A bad image is FLA_FORMAT. */
static int count_row_(void *user, const fla_tunedb_row *row) {
  (void)row;
  ++*(int *)user;
  return 0;
}

START_TEST(test_shipped_embedded) {
  fla_ctx *ctx = th_cpu_ctx();
  size_t len = 0;
  const unsigned char *image = fla_builtin_tunedb(&len);
  ck_assert_ptr_nonnull(image);
  /* the same bytes as the source tree's file */
  FILE *f = fopen(FLA_SOURCE_DIR "/tunedb/h100.sqlite", "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  ck_assert_int_eq((long)len, ftell(f));
  fseek(f, 0, SEEK_SET);
  unsigned char *file = malloc(len);
  ck_assert_int_eq(fread(file, 1, len, f), len);
  fclose(f);
  ck_assert_int_eq(memcmp(file, image, len), 0);
  free(file);

  fla_tunedb *db = NULL;
  ck_assert_msg(fla_tunedb_open_image(ctx, "shipped", image, len, &db) == FLA_OK, "%s",
                fla_errmsg(ctx));
  int rows = 0;
  ck_assert_int_eq(fla_tunedb_foreach(db, count_row_, &rows), FLA_OK);
  ck_assert_int_gt(rows, 10);
  ck_assert_int_eq(fla_tunedb_schema_version(db), FLA_TUNEDB_SCHEMA_VERSION);
  fla_tunedb_close(db);

  /* not a database: FLA_FORMAT naming it, nothing opened */
  static const char junk[200] = "this is not SQLite";
  ck_assert_int_eq(fla_tunedb_open_image(ctx, "junk-image", junk, sizeof junk, &db), FLA_FORMAT);
  ck_assert_ptr_null(db);
  ck_assert_ptr_nonnull(strstr(fla_errmsg(ctx), "junk-image"));
  ck_assert_int_eq(fla_tunedb_open_image(ctx, "x", NULL, 0, &db), FLA_INVALID);

  /* the default resolution without FLA_TUNEDB or a user cache */
  const char *dir = tmp_dir();
  unsetenv("FLA_TUNEDB");
  setenv("XDG_CACHE_HOME", dir, 1);
  fla_ctx *c = th_cpu_ctx();
  ck_assert_msg(fla_ctx_set_tunedb(c, NULL) == FLA_OK, "%s", fla_errmsg(c));
  ck_assert_str_eq(fla_ctx_tunedb(c), FLA_TUNEDB_SHIPPED_NAME);
  fla_ctx_free(c);
  unsetenv("XDG_CACHE_HOME");
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_ctx_corrupt) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256], good[256];
  snprintf(path, sizeof path, "%s/bad.sqlite", dir);
  snprintf(good, sizeof good, "%s/good.sqlite", dir);
  fla_recipe *r = recipe_(ctx, "simple_gla");
  fla_tile_config w = {64, 128, 32, 4}, got;
  put_row_(ctx, good, r, FLA_STAGE_CHUNK_FWD, 16, 128, w, 0.5);
  size_t gn = 0;
  unsigned char *gbytes = th_read_bytes(good, &gn);
  ck_assert_uint_gt(gn, 4096);

  for (int kind = 0; kind < 3; kind++) {
    size_t n = 0;
    unsigned char junk[5000];
    const unsigned char *bytes = junk;
    if (kind == 0) {  /* not SQLite */
      memset(junk, 'x', sizeof junk);
      n = sizeof junk;
    } else if (kind == 1) {  /* an SQLite header, then garbage pages */
      memcpy(junk, gbytes, 100);
      memset(junk + 100, 0xa5, sizeof junk - 100);
      n = sizeof junk;
    } else {  /* truncated in the middle of a page */
      bytes = gbytes;
      n = gn / 2 + 7;
    }
    th_write_bytes(path, bytes, n);
    fla_ctx *c = th_cpu_ctx();
    fla_status s = fla_ctx_set_tunedb(c, path);
    ck_assert_msg(s == FLA_FORMAT, "kind %d: %s: %s", kind, fla_errstr(s), fla_errmsg(c));
    ck_assert_ptr_nonnull(strstr(fla_errmsg(c), path));
    ck_assert_str_eq(fla_ctx_tunedb(c), "");
    ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_DEFAULT);
    fla_ctx_free(c);
    /* lazily through FLA_TUNEDB: silent, defaults */
    setenv("FLA_TUNEDB", path, 1);
    c = th_cpu_ctx();
    ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_DEFAULT);
    ck_assert_str_eq(fla_errmsg(c), "");
    fla_ctx_free(c);
    unsetenv("FLA_TUNEDB");
    size_t m = 0;
    unsigned char *after = th_read_bytes(path, &m);
    ck_assert_uint_eq(m, n);
    ck_assert_int_eq(memcmp(after, bytes, n), 0);
    free(after);
  }
  free(gbytes);
  fla_recipe_free(r);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

START_TEST(test_ctx_locked) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/t.sqlite", dir);
  fla_recipe *r = recipe_(ctx, "simple_gla");
  fla_tile_config w = {64, 128, 32, 4}, got;
  put_row_(ctx, path, r, FLA_STAGE_CHUNK_FWD, 16, 128, w, 0.5);

  /* Another writer inside a write transaction (WAL): readers go on. */
  fla_tunedb *wdb = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &wdb), FLA_OK);
  fla_tunedb_close(wdb);
  sqlite3 *other = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &other, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE; UPDATE tuned SET time_ms = 9", NULL, NULL, NULL),
                   SQLITE_OK);
  fla_ctx *c = th_cpu_ctx();
  ck_assert_msg(fla_ctx_set_tunedb(c, path) == FLA_OK, "%s", fla_errmsg(c));
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_EXACT);
  ck_assert(same_cfg_(got, w));
  fla_ctx_free(c);
  ck_assert_int_eq(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);

  /* A writer holding the file exclusively: FLA_IO "locked", the defaults. */
  ck_assert_int_eq(sqlite3_exec(other, "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;"
                                       " UPDATE tuned SET time_ms = 9", NULL, NULL, NULL), SQLITE_OK);
  c = th_cpu_ctx();
  fla_status s = fla_ctx_set_tunedb(c, path);
  ck_assert_msg(s == FLA_IO, "%s: %s", fla_errstr(s), fla_errmsg(c));
  ck_assert_ptr_nonnull(strstr(fla_errmsg(c), "locked"));
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_DEFAULT);
  ck_assert_int_eq(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  /* Released: the next context reads the row; nothing was lost. */
  fla_ctx_free(c);
  c = th_cpu_ctx();
  ck_assert_msg(fla_ctx_set_tunedb(c, path) == FLA_OK, "%s", fla_errmsg(c));
  double ms = 0;
  fla_tune_ident id = h100_();
  fla_tune_key k;
  fla_gen_key gk = gkey_(r, 128);
  ck_assert_int_eq(fla_tune_key_make(c, &id, r, FLA_STAGE_CHUNK_FWD, &gk, 16, &k), FLA_OK);
  fla_tunedb_how how;
  fla_ctx_tune_lookup(c, &k.key, &w, &got, &how, &ms);
  ck_assert_int_eq(how, FLA_TUNEDB_EXACT);
  ck_assert(ms == 0.5);
  fla_ctx_free(c);
  fla_recipe_free(r);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* A shipped database in a place the reader cannot write: read without
** creating anything beside it (the tuner leaves it in rollback mode). */
START_TEST(test_ctx_readonly_location) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char ro[256], path[320];
  snprintf(ro, sizeof ro, "%s/ro", dir);
  ck_assert_int_eq(mkdir(ro, 0700), 0);
  snprintf(path, sizeof path, "%s/h100.sqlite", ro);
  fla_recipe *r = recipe_(ctx, "simple_gla");
  fla_tile_config w = {64, 128, 32, 4}, got;
  put_row_(ctx, path, r, FLA_STAGE_CHUNK_FWD, 16, 128, w, 0.5);
  ck_assert_int_eq(th_count_entries(ro), 1);  /* no -wal / -shm left */
  ck_assert_int_eq(chmod(path, 0444), 0);
  ck_assert_int_eq(chmod(ro, 0555), 0);
  fla_ctx *c = th_cpu_ctx();
  ck_assert_msg(fla_ctx_set_tunedb(c, path) == FLA_OK, "%s", fla_errmsg(c));
  ck_assert_int_eq(look_(c, r, FLA_STAGE_CHUNK_FWD, 16, 128, &got), FLA_TUNEDB_EXACT);
  fla_ctx_free(c);
  ck_assert_int_eq(th_count_entries(ro), 1);
  /* the tuner cannot write there: a clear error when permissions hold */
  if (access(ro, W_OK) != 0) {
    fla_tunedb *db = NULL;
    ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_IO);
  }
  chmod(ro, 0700);
  chmod(path, 0644);
  fla_recipe_free(r);
  rm_tree(ro);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

static int count_rows_(void *user, const fla_tunedb_row *r) {
  int *n = user;
  if (r->has_winner) ck_assert(r->time_ms > 0 && r->winner.BT > 0);
  else ck_assert(r->time_ms == -1);
  n[0]++;
  n[1] += r->n_ok, n[2] += r->n_failed;
  return 0;
}

/* What fla-tune --show walks: every row, sweeps under way included. */
START_TEST(test_foreach) {
  fla_ctx *ctx = th_cpu_ctx();
  const char *dir = tmp_dir();
  char path[256];
  snprintf(path, sizeof path, "%s/t.sqlite", dir);
  fla_recipe *r = recipe_(ctx, "simple_gla");
  fla_tile_config w = {64, 128, 32, 4};
  put_row_(ctx, path, r, FLA_STAGE_CHUNK_FWD, 16, 128, w, 0.5);
  put_row_(ctx, path, r, FLA_STAGE_CHUNK_FWD, 32, 128, w, 0.7);
  fla_tunedb *db = NULL;
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READWRITE, &db), FLA_OK);
  fla_tune_ident id = h100_();
  fla_tune_key k;
  fla_gen_key gk = gkey_(r, 64);
  ck_assert_int_eq(fla_tune_key_make(ctx, &id, r, FLA_STAGE_CHUNK_FWD, &gk, 16, &k), FLA_OK);
  fla_tunedb_candidate c = {w, -1, FLA_TUNEDB_CAND_FAILED, "compile: x"};
  ck_assert_int_eq(fla_tunedb_record_candidate(db, &k.key, &c), FLA_OK);  /* no winner yet */
  int n[3] = {0, 0, 0};
  ck_assert_int_eq(fla_tunedb_foreach(db, count_rows_, n), FLA_OK);
  ck_assert_int_eq(n[0], 3);
  ck_assert_int_eq(n[1], 2);
  ck_assert_int_eq(n[2], 1);
  ck_assert_int_eq(fla_tunedb_checkpoint(db), FLA_OK);
  fla_tunedb_close(db);
  ck_assert_int_eq(th_count_entries(dir), 1);  /* the file alone holds it all */
  ck_assert_int_eq(fla_tunedb_open(ctx, path, FLA_TUNEDB_READONLY, &db), FLA_OK);
  ck_assert_int_eq(fla_tunedb_checkpoint(db), FLA_INVALID);  /* a reader does not write */
  fla_tunedb_close(db);
  fla_recipe_free(r);
  rm_tree(dir);
  fla_ctx_free(ctx);
}
END_TEST

/* Dispatch on a context without a GPU: the tuner's forced configuration for
** its stage only, else the default (no device to key on). */
START_TEST(test_pick_forced) {
  fla_ctx *ctx = th_cpu_ctx();
  fla_recipe *r = recipe_(ctx, "simple_gla");
  fla_op_config oc = {.B = 1, .T = 300, .H = 4, .K = 128, .V = 128};
  fla_op *op = NULL;
  ck_assert_int_eq(fla_op_bind(ctx, r, &oc, &op), FLA_OK);
  fla_gen_key gk = gkey_(r, 128);
  fla_tile_config d, got, f = {64, 128, 32, 4};
  fla_stage_default_config(FLA_STAGE_CHUNK_FWD, &gk, &d);
  fla_cuda_pick_config(op, ctx, FLA_STAGE_CHUNK_FWD, &gk, &got);
  ck_assert(same_cfg_(got, d));
  ck_assert_int_eq(fla_ctx_tune_force(ctx, FLA_STAGE_CHUNK_FWD, &f), FLA_OK);
  fla_cuda_pick_config(op, ctx, FLA_STAGE_CHUNK_FWD, &gk, &got);
  ck_assert(same_cfg_(got, f));
  fla_cuda_pick_config(op, ctx, FLA_STAGE_RECURRENT_FWD, &gk, &got);
  fla_stage_default_config(FLA_STAGE_RECURRENT_FWD, &gk, &d);
  ck_assert(same_cfg_(got, d));
  ck_assert_int_eq(fla_cuda_pick_recurrent(op, ctx, FLA_STAGE_CHUNK_FWD, &gk), 0);
  ck_assert_int_eq(fla_ctx_tune_force(ctx, -1, NULL), FLA_OK);
  ck_assert_int_eq(fla_ctx_tune_forced(ctx, FLA_STAGE_CHUNK_FWD, &got), 0);
  fla_op_free(op);
  fla_recipe_free(r);
  fla_ctx_free(ctx);
}
END_TEST

static Suite *tune_suite(void) {
  Suite *s = suite_create("tune");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_recipe_tiles);
  tcase_add_test(tc, test_plan_prunes);
  tcase_add_test(tc, test_keys);
  tcase_add_test(tc, test_ctx_round_trip);
  tcase_add_test(tc, test_ctx_env);
  tcase_add_test(tc, test_shipped_embedded);
  tcase_add_test(tc, test_ctx_corrupt);
  tcase_add_test(tc, test_ctx_locked);
  tcase_add_test(tc, test_ctx_readonly_location);
  tcase_add_test(tc, test_foreach);
  tcase_add_test(tc, test_pick_forced);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* the shipped database and the user's must not leak into these tests */
  setenv("XDG_CACHE_HOME", "/nonexistent-fla-test", 1);
  return th_run_suite(tune_suite());
}
