/*
** tunedb.c -- the tuning database over SQLite (tunedb.h, docs/tunedb.md).
*/
#include "tunedb.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "internal.h"

struct fla_tunedb {
  sqlite3 *h;
  fla_ctx *ctx;
  int readonly;
  int version;
  char *path;
};

/* ------------------------------------------------------------ migrations */

/* MIGRATIONS[i] takes a database from user_version i to i + 1. A new schema
** version is one more entry here (and FLA_TUNEDB_SCHEMA_VERSION + 1). */
static const char *const MIGRATIONS[] = {
  /* 0 -> 1 */
  "CREATE TABLE tuned ("
  "  id INTEGER PRIMARY KEY,"
  "  recipe_hash TEXT NOT NULL, stage TEXT NOT NULL, gpu_name TEXT NOT NULL,"
  "  cc_major INTEGER NOT NULL, cc_minor INTEGER NOT NULL,"
  "  driver_version INTEGER NOT NULL, nvrtc_version TEXT NOT NULL,"
  "  dtype TEXT NOT NULL, bucket TEXT NOT NULL,"
  "  bt INTEGER, bk INTEGER, bv INTEGER, warps INTEGER," /* the winner; NULL until known */
  "  time_ms REAL,"
  "  created_at INTEGER NOT NULL,"
  "  UNIQUE (recipe_hash, stage, gpu_name, cc_major, cc_minor, driver_version,"
  "          nvrtc_version, dtype, bucket));"
  "CREATE INDEX tuned_family ON tuned (recipe_hash, stage, gpu_name, cc_major, cc_minor, dtype);"
  "CREATE TABLE candidate ("
  "  tuned_id INTEGER NOT NULL REFERENCES tuned (id) ON DELETE CASCADE,"
  "  bt INTEGER NOT NULL, bk INTEGER NOT NULL, bv INTEGER NOT NULL, warps INTEGER NOT NULL,"
  "  time_ms REAL,"
  "  status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'wrong')),"
  "  reason TEXT,"
  "  created_at INTEGER NOT NULL,"
  "  PRIMARY KEY (tuned_id, bt, bk, bv, warps));",
};

_Static_assert(sizeof MIGRATIONS / sizeof MIGRATIONS[0] == FLA_TUNEDB_SCHEMA_VERSION,
               "one migration per schema version");

/* --------------------------------------------------------------- helpers */

static fla_status sql_error_(fla_tunedb *db, int rc, const char *what) {
  const char *msg = db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);
  int prim = rc & 0xff;
  if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
    return fla_set_error(db->ctx, FLA_IO,
                         "tuning database %s: %s: database is locked (another connection "
                         "held it past the busy timeout)", db->path, what);
  if (prim == SQLITE_NOTADB || prim == SQLITE_CORRUPT)
    return fla_set_error(db->ctx, FLA_FORMAT, "tuning database %s: %s: corrupt or not a database (%s); "
                         "file left as it is", db->path, what, msg);
  if (prim == SQLITE_NOMEM)
    return fla_set_error(db->ctx, FLA_NOMEM, "tuning database %s: %s: out of memory", db->path, what);
  if (prim == SQLITE_READONLY)
    return fla_set_error(db->ctx, FLA_IO, "tuning database %s: %s: %s", db->path, what, msg);
  if (prim == SQLITE_CONSTRAINT || prim == SQLITE_MISUSE || prim == SQLITE_ERROR)
    return fla_set_error(db->ctx, FLA_ERROR, "tuning database %s: %s: %s", db->path, what, msg);
  return fla_set_error(db->ctx, FLA_IO, "tuning database %s: %s: %s", db->path, what, msg);
}

static int exec_(fla_tunedb *db, const char *sql) { return sqlite3_exec(db->h, sql, NULL, NULL, NULL); }

/* One integer from a single-row statement; rc of SQLite. */
static int query_int_(fla_tunedb *db, const char *sql, int *out) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int(st, 0);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      *out = 0;
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

/* mkdir -p of path's parent directory. 0, or -1 with errno. */
static int make_parent_dirs_(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(buf, path, n + 1);
  char *slash = strrchr(buf, '/');
  if (!slash || slash == buf) return 0;
  *slash = '\0';
  for (char *p = buf + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      struct stat sb;
      if (stat(buf, &sb) != 0) {
        if (errno != ENOENT || (mkdir(buf, 0755) != 0 && errno != EEXIST)) return -1;
      } else if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
      }
      *p = c;
      if (c == '\0') break;
    }
  }
  return 0;
}

/* The first 16 bytes of every SQLite database file (the string and its NUL). */
static const char SQLITE_MAGIC[16] = "SQLite format 3";

/* Looks at the file before SQLite does: FLA_OK when it is absent, empty or
** starts with the SQLite magic; FLA_FORMAT otherwise (nothing is written). */
static fla_status check_magic_(fla_tunedb *db, int *exists) {
  struct stat sb;
  *exists = 0;
  if (stat(db->path, &sb) != 0) {
    if (errno == ENOENT) return FLA_OK;
    return fla_set_error(db->ctx, FLA_IO, "tuning database %s: cannot open: %s", db->path,
                         strerror(errno));
  }
  *exists = 1;
  if (S_ISDIR(sb.st_mode))
    return fla_set_error(db->ctx, FLA_IO, "tuning database %s: is a directory", db->path);
  if (sb.st_size == 0) return FLA_OK;
  char head[16] = {0};
  FILE *f = fopen(db->path, "rb");
  if (!f) return fla_set_error(db->ctx, FLA_IO, "tuning database %s: %s", db->path, strerror(errno));
  size_t got = fread(head, 1, sizeof head, f);
  fclose(f);
  if (got < sizeof head || memcmp(head, SQLITE_MAGIC, sizeof SQLITE_MAGIC) != 0)
    return fla_set_error(db->ctx, FLA_FORMAT,
                         "tuning database %s: not an SQLite database (file left as it is; "
                         "move it away to start a new one)", db->path);
  return FLA_OK;
}

/* Reads the whole file once: a corrupt database fails here, before anything
** is written. */
static fla_status integrity_(fla_tunedb *db) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h, "PRAGMA quick_check(1)", -1, &st, NULL);
  if (rc != SQLITE_OK) return sql_error_(db, rc, "reading the database");
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *r = (const char *)sqlite3_column_text(st, 0);
    if (!r || strcmp(r, "ok") != 0) {
      fla_status s = fla_set_error(db->ctx, FLA_FORMAT,
                                   "tuning database %s: corrupt (%s); file left as it is",
                                   db->path, r ? r : "no result");
      sqlite3_finalize(st);
      return s;
    }
    sqlite3_finalize(st);
    return FLA_OK;
  }
  fla_status s = sql_error_(db, rc, "checking the database");
  sqlite3_finalize(st);
  return s;
}

static fla_status migrate_(fla_tunedb *db) {
  int rc = exec_(db, "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) return sql_error_(db, rc, "starting the migration");
  int v = 0;
  rc = query_int_(db, "PRAGMA user_version", &v);  /* again, under the write lock */
  for (; rc == SQLITE_OK && v < FLA_TUNEDB_SCHEMA_VERSION; v++) {
    rc = exec_(db, MIGRATIONS[v]);
    if (rc == SQLITE_OK) {
      char sql[64];
      snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
      rc = exec_(db, sql);
    }
  }
  if (rc == SQLITE_OK) rc = exec_(db, "COMMIT");
  if (rc != SQLITE_OK) {
    fla_status s = sql_error_(db, rc, "migrating the schema");
    exec_(db, "ROLLBACK");
    return s;
  }
  db->version = v;
  return FLA_OK;
}

/* ------------------------------------------------------------------ open */

/* What every open checks once the handle is open: the whole database reads,
** its schema version is one this build knows, and (read-only) it needs no
** migration. *v receives the version. */
static fla_status check_schema_(fla_tunedb *db, int ro, int *v_out) {
  const char *path = db->path;
  fla_ctx *ctx = db->ctx;
  fla_status s = integrity_(db);
  int v = 0, objects = 0;
  if (s == FLA_OK) {
    int rc = query_int_(db, "PRAGMA user_version", &v);
    if (rc == SQLITE_OK) rc = query_int_(db, "SELECT count(*) FROM sqlite_master", &objects);
    if (rc != SQLITE_OK) s = sql_error_(db, rc, "reading the schema version");
  }
  if (s == FLA_OK && v > FLA_TUNEDB_SCHEMA_VERSION)
    s = fla_set_error(ctx, FLA_FORMAT,
                      "tuning database %s: schema version %d is newer than this build's %d "
                      "(file left as it is; use a newer fla or another path)",
                      path, v, FLA_TUNEDB_SCHEMA_VERSION);
  if (s == FLA_OK && v == 0 && objects > 0)
    s = fla_set_error(ctx, FLA_FORMAT,
                      "tuning database %s: an SQLite database but not a tuning database "
                      "(user_version 0 and %d schema objects; file left as it is)", path, objects);
  if (s == FLA_OK && v < 0)
    s = fla_set_error(ctx, FLA_FORMAT, "tuning database %s: bad schema version %d", path, v);
  if (s == FLA_OK && ro && v < FLA_TUNEDB_SCHEMA_VERSION)
    s = fla_set_error(ctx, FLA_FORMAT,
                      v == 0 ? "tuning database %s: empty (schema version %d); open it read-write "
                               "to create the schema"
                             : "tuning database %s: schema version %d needs a migration; open it "
                               "read-write once", path, v);
  if (s == FLA_OK && !ro) {
    int rc = exec_(db, "PRAGMA journal_mode = WAL");
    if (rc != SQLITE_OK) s = sql_error_(db, rc, "switching to WAL");
  }
  if (s == FLA_OK) {
    int rc = exec_(db, "PRAGMA foreign_keys = ON");
    if (rc != SQLITE_OK) s = sql_error_(db, rc, "enabling foreign keys");
  }
  *v_out = v;
  return s;
}


/* A closed database named path (NULL when out of memory). */
static fla_tunedb *new_db_(fla_ctx *ctx, const char *path, int ro) {
  fla_tunedb *db = calloc(1, sizeof *db);
  if (db) db->path = strdup(path);
  if (!db || !db->path) {
    free(db);
    return NULL;
  }
  db->ctx = ctx;
  db->readonly = ro;
  return db;
}

fla_status fla_tunedb_open(fla_ctx *ctx, const char *path, int flags, fla_tunedb **out) {
  if (out) *out = NULL;
  if (!out || !path || !*path)
    return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_open: NULL or empty argument");
  if (flags & FLA_TUNEDB_CREATE) flags |= FLA_TUNEDB_READWRITE;
  int ro = (flags & FLA_TUNEDB_READONLY) != 0;
  if (ro == ((flags & FLA_TUNEDB_READWRITE) != 0) ||
      (flags & ~(FLA_TUNEDB_READONLY | FLA_TUNEDB_READWRITE | FLA_TUNEDB_CREATE)))
    return fla_set_error(ctx, FLA_INVALID,
                         "fla_tunedb_open: flags must be READONLY, or READWRITE optionally | CREATE");

  fla_tunedb *db = new_db_(ctx, path, ro);
  if (!db) return fla_set_error(ctx, FLA_NOMEM, "fla_tunedb_open: out of memory");

  int exists = 0;
  fla_status s = check_magic_(db, &exists);
  if (s == FLA_OK && !exists && !(flags & FLA_TUNEDB_CREATE))
    s = fla_set_error(ctx, FLA_IO, "tuning database %s: no such file", path);
  if (s == FLA_OK && !exists && make_parent_dirs_(path) != 0)
    s = fla_set_error(ctx, FLA_IO, "tuning database %s: cannot create its directory: %s", path,
                      strerror(errno));
  if (s == FLA_OK) {
    int oflags = ro ? SQLITE_OPEN_READONLY
                    : SQLITE_OPEN_READWRITE | ((flags & FLA_TUNEDB_CREATE) ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &db->h, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) s = sql_error_(db, rc, "opening");
  }
  if (s == FLA_OK) {
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, FLA_TUNEDB_BUSY_TIMEOUT_MS);
    /* SQLite opens read-only when it may not write: say so now rather than
    ** on the first insert. */
    if (!ro && sqlite3_db_readonly(db->h, "main") == 1)
      s = fla_set_error(ctx, FLA_IO, "tuning database %s: opened for writing but the file or "
                        "its directory is read-only", path);
  }
  int v = 0;
  if (s == FLA_OK) s = check_schema_(db, ro, &v);
  db->version = v;
  if (s == FLA_OK && v < FLA_TUNEDB_SCHEMA_VERSION) s = migrate_(db);
  if (s != FLA_OK) {
    fla_tunedb_close(db);
    return s;
  }
  *out = db;
  return FLA_OK;
}

fla_status fla_tunedb_open_image(fla_ctx *ctx, const char *name, const void *bytes, size_t len,
                                 fla_tunedb **out) {
  if (out) *out = NULL;
  if (!out || !name || !*name || !bytes || len == 0)
    return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_open_image: NULL or empty argument");
  fla_tunedb *db = new_db_(ctx, name, 1);
  if (!db) return fla_set_error(ctx, FLA_NOMEM, "fla_tunedb_open_image: out of memory");
  fla_status s = FLA_OK;
  if (len < 100 || memcmp(bytes, SQLITE_MAGIC, sizeof SQLITE_MAGIC) != 0)
    s = fla_set_error(ctx, FLA_FORMAT, "tuning database %s: not an SQLite database image", name);
  if (s == FLA_OK) {
    int rc = sqlite3_open_v2(":memory:", &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    /* READONLY: SQLite reads the caller's bytes in place and never writes them */
    if (rc == SQLITE_OK)
      rc = sqlite3_deserialize(db->h, "main", (unsigned char *)(uintptr_t)bytes, (sqlite3_int64)len,
                               (sqlite3_int64)len, SQLITE_DESERIALIZE_READONLY);
    if (rc != SQLITE_OK) s = sql_error_(db, rc, "opening the image");
  }
  if (s == FLA_OK) sqlite3_extended_result_codes(db->h, 1);
  int v = 0;
  if (s == FLA_OK) s = check_schema_(db, 1, &v);
  db->version = v;
  if (s != FLA_OK) {
    fla_tunedb_close(db);
    return s;
  }
  *out = db;
  return FLA_OK;
}

void fla_tunedb_close(fla_tunedb *db) {
  if (!db) return;
  sqlite3_close_v2(db->h);
  free(db->path);
  free(db);
}

fla_status fla_tunedb_set_busy_timeout(fla_tunedb *db, int ms) {
  if (!db || ms < 0) return fla_set_error(db ? db->ctx : NULL, FLA_INVALID, "fla_tunedb_set_busy_timeout: bad argument");
  int rc = sqlite3_busy_timeout(db->h, ms);
  return rc == SQLITE_OK ? FLA_OK : sql_error_(db, rc, "setting the busy timeout");
}

int fla_tunedb_schema_version(const fla_tunedb *db) { return db ? db->version : 0; }

fla_status fla_tunedb_default_path(fla_ctx *ctx, char *buf, size_t len) {
  if (!buf || len == 0) return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_default_path: no buffer");
  buf[0] = '\0';
  const char *e = getenv("FLA_TUNEDB"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
  int n;
  if (e && *e) n = snprintf(buf, len, "%s", e);
  else if (x && x[0] == '/') n = snprintf(buf, len, "%s/fla/tunedb.sqlite", x);
  else if (h && *h) n = snprintf(buf, len, "%s/.cache/fla/tunedb.sqlite", h);
  else
    return fla_set_error(ctx, FLA_IO, "no tuning database path: none of FLA_TUNEDB, XDG_CACHE_HOME "
                         "and HOME is set");
  if (n < 0 || (size_t)n >= len) {
    buf[0] = '\0';
    return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_default_path: buffer of %zu bytes too small",
                         len);
  }
  return FLA_OK;
}

/* --------------------------------------------------------------- buckets */

fla_status fla_tunedb_bucket(fla_ctx *ctx, int N, int H, int K, int V, char *buf, size_t len) {
  if (!buf || len == 0) return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_bucket: no buffer");
  buf[0] = '\0';
  if (H <= 0 || K <= 0 || V <= 0)
    return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_bucket: H=%d K=%d V=%d must be > 0", H, K, V);
  char n[16];
  if (N <= 0) snprintf(n, sizeof n, "any");
  else snprintf(n, sizeof n, "%d", N);
  int w = snprintf(buf, len, "N=%s,H=%d,K=%d,V=%d", n, H, K, V);
  if (w < 0 || (size_t)w >= len) {
    buf[0] = '\0';
    return fla_set_error(ctx, FLA_INVALID, "fla_tunedb_bucket: buffer of %zu bytes too small", len);
  }
  return FLA_OK;
}

#define MAX_DIMS 16

typedef struct {
  int n;
  const char *name[MAX_DIMS], *val[MAX_DIMS];
  size_t name_len[MAX_DIMS], val_len[MAX_DIMS];
} bucket_parts;

/* Splits "A=1,B=x" in place-free fashion. 0, or -1 when malformed. */
static int parse_bucket_(const char *s, bucket_parts *p) {
  p->n = 0;
  if (!s || !*s) return -1;
  while (*s) {
    if (p->n == MAX_DIMS) return -1;
    const char *eq = strchr(s, '=');
    const char *end = strchr(s, ',');
    if (!end) end = s + strlen(s);
    if (!eq || eq > end || eq == s || eq + 1 == end) return -1;
    p->name[p->n] = s;
    p->name_len[p->n] = (size_t)(eq - s);
    p->val[p->n] = eq + 1;
    p->val_len[p->n] = (size_t)(end - eq - 1);
    p->n++;
    s = *end ? end + 1 : end;
    if (*end && !*s) return -1;  /* a trailing comma */
  }
  return 0;
}

static int positive_int_(const char *s, size_t n, long *out) {
  if (n == 0 || n > 9) return -1;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v <= 0) return -1;
  *out = v;
  return 0;
}

double fla_tunedb_bucket_distance(const char *a, const char *b) {
  bucket_parts pa, pb;
  if (parse_bucket_(a, &pa) != 0 || parse_bucket_(b, &pb) != 0 || pa.n != pb.n) return -1.0;
  double d = 0.0;
  for (int i = 0; i < pa.n; i++) {
    if (pa.name_len[i] != pb.name_len[i] || memcmp(pa.name[i], pb.name[i], pa.name_len[i]) != 0)
      return -1.0;
    if (pa.name_len[i] == 1 && pa.name[i][0] == 'H') {
      long ha, hb;
      if (positive_int_(pa.val[i], pa.val_len[i], &ha) != 0 ||
          positive_int_(pb.val[i], pb.val_len[i], &hb) != 0)
        return -1.0;
      d = fabs(log2((double)ha) - log2((double)hb));
    } else if (pa.val_len[i] != pb.val_len[i] ||
               memcmp(pa.val[i], pb.val[i], pa.val_len[i]) != 0) {
      return -1.0;
    }
  }
  return d;
}

/* H of a bucket, 0 when it has none. */
static long bucket_h_(const char *s) {
  bucket_parts p;
  long h = 0;
  if (parse_bucket_(s, &p) != 0) return 0;
  for (int i = 0; i < p.n; i++)
    if (p.name_len[i] == 1 && p.name[i][0] == 'H' && positive_int_(p.val[i], p.val_len[i], &h) == 0)
      return h;
  return 0;
}

/* ------------------------------------------------------------ candidates */

const char *fla_tunedb_outcome_name(fla_tunedb_outcome o) {
  switch (o) {
    case FLA_TUNEDB_CAND_OK: return "ok";
    case FLA_TUNEDB_CAND_FAILED: return "failed";
    case FLA_TUNEDB_CAND_WRONG: return "wrong";
  }
  return "?";
}

const char *fla_tunedb_how_name(fla_tunedb_how how) {
  switch (how) {
    case FLA_TUNEDB_EXACT: return "exact";
    case FLA_TUNEDB_NEAREST: return "nearest";
    case FLA_TUNEDB_DEFAULT: return "default";
  }
  return "?";
}

static fla_status check_key_(fla_tunedb *db, const fla_tunedb_key *k, const char *fn) {
  if (!db) return FLA_INVALID;
  if (!k || !k->recipe_hash || !*k->recipe_hash || !k->stage || !*k->stage || !k->gpu_name ||
      !*k->gpu_name || !k->nvrtc_version || !*k->nvrtc_version || !k->dtype || !*k->dtype ||
      !k->bucket || !*k->bucket)
    return fla_set_error(db->ctx, FLA_INVALID, "%s: a key with a NULL or empty field", fn);
  return FLA_OK;
}

static void bind_key_(sqlite3_stmt *st, const fla_tunedb_key *k) {
  sqlite3_bind_text(st, 1, k->recipe_hash, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, k->stage, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, k->gpu_name, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, k->cc_major);
  sqlite3_bind_int(st, 5, k->cc_minor);
  sqlite3_bind_int(st, 6, k->driver_version);
  sqlite3_bind_text(st, 7, k->nvrtc_version, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 8, k->dtype, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 9, k->bucket, -1, SQLITE_STATIC);
}

#define KEY_WHERE                                                                     \
  "recipe_hash = ?1 AND stage = ?2 AND gpu_name = ?3 AND cc_major = ?4 AND cc_minor = ?5" \
  " AND driver_version = ?6 AND nvrtc_version = ?7 AND dtype = ?8 AND bucket = ?9"

/* The id of key's row, created without a winner when missing (inside the
** caller's transaction). rc of SQLite. */
static int key_row_(fla_tunedb *db, const fla_tunedb_key *k, sqlite3_int64 *id) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h,
      "INSERT INTO tuned (recipe_hash, stage, gpu_name, cc_major, cc_minor, driver_version,"
      " nvrtc_version, dtype, bucket, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
      " ON CONFLICT DO NOTHING", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    bind_key_(st, k);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)time(NULL));
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db->h, "SELECT id FROM tuned WHERE " KEY_WHERE, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    bind_key_(st, k);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *id = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_INTERNAL;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

static int put_candidate_(fla_tunedb *db, sqlite3_int64 id, const fla_tunedb_candidate *c) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h,
      "INSERT OR REPLACE INTO candidate (tuned_id, bt, bk, bv, warps, time_ms, status, reason,"
      " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, c->cfg.BT);
    sqlite3_bind_int(st, 3, c->cfg.BK);
    sqlite3_bind_int(st, 4, c->cfg.BV);
    sqlite3_bind_int(st, 5, c->cfg.warps);
    if (c->outcome == FLA_TUNEDB_CAND_OK && c->time_ms >= 0 && isfinite(c->time_ms))
      sqlite3_bind_double(st, 6, c->time_ms);
    else
      sqlite3_bind_null(st, 6);
    sqlite3_bind_text(st, 7, fla_tunedb_outcome_name(c->outcome), -1, SQLITE_STATIC);
    if (c->reason) sqlite3_bind_text(st, 8, c->reason, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 8);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)time(NULL));
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

static fla_status check_writable_(fla_tunedb *db, const char *fn) {
  if (db->readonly)
    return fla_set_error(db->ctx, FLA_INVALID, "%s: tuning database %s is open read-only", fn, db->path);
  return FLA_OK;
}

static fla_status check_candidate_(fla_tunedb *db, const fla_tunedb_candidate *c, const char *fn) {
  if (!c || (c->outcome != FLA_TUNEDB_CAND_OK && c->outcome != FLA_TUNEDB_CAND_FAILED &&
             c->outcome != FLA_TUNEDB_CAND_WRONG))
    return fla_set_error(db->ctx, FLA_INVALID, "%s: NULL candidate or bad outcome", fn);
  return FLA_OK;
}

/* Runs body in one write transaction; on failure rolls back. */
static fla_status commit_or_rollback_(fla_tunedb *db, int rc, const char *what) {
  if (rc == SQLITE_OK) rc = exec_(db, "COMMIT");
  if (rc == SQLITE_OK) return FLA_OK;
  fla_status s = sql_error_(db, rc, what);
  if (!sqlite3_get_autocommit(db->h)) exec_(db, "ROLLBACK");
  return s;
}

fla_status fla_tunedb_record_candidate(fla_tunedb *db, const fla_tunedb_key *key,
                                       const fla_tunedb_candidate *cand) {
  static const char fn[] = "fla_tunedb_record_candidate";
  fla_status s = check_key_(db, key, fn);
  if (s == FLA_OK) s = check_writable_(db, fn);
  if (s == FLA_OK) s = check_candidate_(db, cand, fn);
  if (s != FLA_OK) return s;
  int rc = exec_(db, "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) return sql_error_(db, rc, "recording a candidate");
  sqlite3_int64 id = 0;
  rc = key_row_(db, key, &id);
  if (rc == SQLITE_OK) rc = put_candidate_(db, id, cand);
  return commit_or_rollback_(db, rc, "recording a candidate");
}

fla_status fla_tunedb_candidate_known(fla_tunedb *db, const fla_tunedb_key *key,
                                      const fla_tile_config *cfg, int *known,
                                      fla_tunedb_outcome *outcome, double *time_ms) {
  if (known) *known = 0;
  if (time_ms) *time_ms = -1;
  fla_status s = check_key_(db, key, "fla_tunedb_candidate_known");
  if (s != FLA_OK) return s;
  if (!cfg || !known)
    return fla_set_error(db->ctx, FLA_INVALID, "fla_tunedb_candidate_known: NULL argument");
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h,
      "SELECT c.status, c.time_ms FROM candidate c JOIN tuned t ON c.tuned_id = t.id WHERE "
      "t.recipe_hash = ?1 AND t.stage = ?2 AND t.gpu_name = ?3 AND t.cc_major = ?4 AND "
      "t.cc_minor = ?5 AND t.driver_version = ?6 AND t.nvrtc_version = ?7 AND t.dtype = ?8 AND "
      "t.bucket = ?9 AND c.bt = ?10 AND c.bk = ?11 AND c.bv = ?12 AND c.warps = ?13", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    bind_key_(st, key);
    sqlite3_bind_int(st, 10, cfg->BT);
    sqlite3_bind_int(st, 11, cfg->BK);
    sqlite3_bind_int(st, 12, cfg->BV);
    sqlite3_bind_int(st, 13, cfg->warps);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const char *t = (const char *)sqlite3_column_text(st, 0);
      *known = 1;
      if (outcome)
        *outcome = t && !strcmp(t, "ok") ? FLA_TUNEDB_CAND_OK
                 : t && !strcmp(t, "wrong") ? FLA_TUNEDB_CAND_WRONG : FLA_TUNEDB_CAND_FAILED;
      if (time_ms && sqlite3_column_type(st, 1) != SQLITE_NULL) *time_ms = sqlite3_column_double(st, 1);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? FLA_OK : sql_error_(db, rc, "looking up a candidate");
}

/* ---------------------------------------------------------------- results */

fla_status fla_tunedb_insert(fla_tunedb *db, const fla_tunedb_key *key,
                             const fla_tile_config *winner, double time_ms,
                             const fla_tunedb_candidate *cands, int ncand) {
  static const char fn[] = "fla_tunedb_insert";
  fla_status s = check_key_(db, key, fn);
  if (s == FLA_OK) s = check_writable_(db, fn);
  if (s != FLA_OK) return s;
  if (!winner || ncand < 0 || (ncand > 0 && !cands) || !(time_ms >= 0) || !isfinite(time_ms))
    return fla_set_error(db->ctx, FLA_INVALID, "%s: NULL winner, bad candidates or time %g", fn, time_ms);
  for (int i = 0; i < ncand; i++) {
    s = check_candidate_(db, &cands[i], fn);
    if (s != FLA_OK) return s;
  }
  int rc = exec_(db, "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) return sql_error_(db, rc, "inserting a result");
  sqlite3_int64 id = 0;
  rc = key_row_(db, key, &id);
  if (rc == SQLITE_OK) {
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db->h,
        "UPDATE tuned SET bt = ?2, bk = ?3, bv = ?4, warps = ?5, time_ms = ?6, created_at = ?7"
        " WHERE id = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, id);
      sqlite3_bind_int(st, 2, winner->BT);
      sqlite3_bind_int(st, 3, winner->BK);
      sqlite3_bind_int(st, 4, winner->BV);
      sqlite3_bind_int(st, 5, winner->warps);
      sqlite3_bind_double(st, 6, time_ms);
      sqlite3_bind_int64(st, 7, (sqlite3_int64)time(NULL));
      rc = sqlite3_step(st);
      if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
  }
  for (int i = 0; rc == SQLITE_OK && i < ncand; i++) rc = put_candidate_(db, id, &cands[i]);
  return commit_or_rollback_(db, rc, "inserting a result");
}

static void read_cfg_(sqlite3_stmt *st, int col, fla_tile_config *cfg, double *time_ms) {
  cfg->BT = sqlite3_column_int(st, col);
  cfg->BK = sqlite3_column_int(st, col + 1);
  cfg->BV = sqlite3_column_int(st, col + 2);
  cfg->warps = sqlite3_column_int(st, col + 3);
  *time_ms = sqlite3_column_double(st, col + 4);
}

fla_status fla_tunedb_lookup(fla_tunedb *db, const fla_tunedb_key *key,
                             const fla_tile_config *dflt, fla_tile_config *cfg,
                             fla_tunedb_how *how, double *time_ms) {
  if (!dflt || !cfg || !how)
    return fla_set_error(db ? db->ctx : NULL, FLA_INVALID, "fla_tunedb_lookup: NULL argument");
  *cfg = *dflt;
  *how = FLA_TUNEDB_DEFAULT;
  if (time_ms) *time_ms = -1;
  if (!db) return FLA_OK;
  fla_status s = check_key_(db, key, "fla_tunedb_lookup");
  if (s != FLA_OK) return s;

  fla_tile_config got;
  double t = -1;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h,
      "SELECT bt, bk, bv, warps, time_ms FROM tuned WHERE " KEY_WHERE " AND bt IS NOT NULL",
      -1, &st, NULL);
  if (rc == SQLITE_OK) {
    bind_key_(st, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      read_cfg_(st, 0, &got, &t);
      sqlite3_finalize(st);
      *cfg = got;
      *how = FLA_TUNEDB_EXACT;
      if (time_ms) *time_ms = t;
      return FLA_OK;
    }
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc != SQLITE_OK) return sql_error_(db, rc, "looking up a result");

  /* The nearest bucket of the family: smallest distance, then the same
  ** driver and NVRTC, then the larger H, then the newest row. */
  rc = sqlite3_prepare_v2(db->h,
      "SELECT bt, bk, bv, warps, time_ms, bucket, driver_version = ?6 AND nvrtc_version = ?7,"
      " created_at FROM tuned WHERE recipe_hash = ?1 AND stage = ?2 AND gpu_name = ?3 AND"
      " cc_major = ?4 AND cc_minor = ?5 AND dtype = ?8 AND bt IS NOT NULL AND ?9 IS NOT NULL"
      " ORDER BY id", -1, &st, NULL);
  int found = 0, best_same = 0;
  long best_h = 0;
  double best_d = 0;
  sqlite3_int64 best_at = 0;
  if (rc == SQLITE_OK) bind_key_(st, key);
  while (rc == SQLITE_OK) {
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) break;
    if (step != SQLITE_ROW) {
      rc = step;
      break;
    }
    const char *b = (const char *)sqlite3_column_text(st, 5);
    double d = fla_tunedb_bucket_distance(key->bucket, b);
    if (d < 0) continue;
    int same = sqlite3_column_int(st, 6);
    long h = bucket_h_(b);
    sqlite3_int64 at = sqlite3_column_int64(st, 7);
    int better;
    if (!found || d < best_d - 1e-9) better = 1;
    else if (d > best_d + 1e-9) better = 0;
    else if (same != best_same) better = same > best_same;
    else if (h != best_h) better = h > best_h;
    else better = at >= best_at;  /* ties: the newest (then the latest written) */
    if (better) {
      read_cfg_(st, 0, &got, &t);
      best_d = d;
      best_same = same;
      best_h = h;
      best_at = at;
      found = 1;
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) return sql_error_(db, rc, "looking up the nearest bucket");
  if (found) {
    *cfg = got;
    *how = FLA_TUNEDB_NEAREST;
    if (time_ms) *time_ms = t;
  }
  return FLA_OK;
}

/* ---------------------------------------------------------------- listing */

fla_status fla_tunedb_foreach(fla_tunedb *db, int (*fn)(void *user, const fla_tunedb_row *row),
                              void *user) {
  if (!db || !fn) return fla_set_error(db ? db->ctx : NULL, FLA_INVALID, "fla_tunedb_foreach: NULL argument");
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db->h,
      "SELECT t.recipe_hash, t.stage, t.gpu_name, t.nvrtc_version, t.dtype, t.bucket, t.cc_major,"
      " t.cc_minor, t.driver_version, t.bt, t.bk, t.bv, t.warps, t.time_ms,"
      " (SELECT count(*) FROM candidate c WHERE c.tuned_id = t.id AND c.status = 'ok'),"
      " (SELECT count(*) FROM candidate c WHERE c.tuned_id = t.id AND c.status = 'failed'),"
      " (SELECT count(*) FROM candidate c WHERE c.tuned_id = t.id AND c.status = 'wrong')"
      " FROM tuned t ORDER BY t.gpu_name, t.recipe_hash, t.stage, t.dtype, t.bucket, t.id",
      -1, &st, NULL);
  while (rc == SQLITE_OK) {
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) break;
    if (step != SQLITE_ROW) {
      rc = step;
      break;
    }
    fla_tunedb_row r;
    memset(&r, 0, sizeof r);
    const char **str[6] = {&r.recipe_hash, &r.stage, &r.gpu_name, &r.nvrtc_version, &r.dtype, &r.bucket};
    for (int i = 0; i < 6; i++) {
      const char *t = (const char *)sqlite3_column_text(st, i);
      *str[i] = t ? t : "";
    }
    r.cc_major = sqlite3_column_int(st, 6);
    r.cc_minor = sqlite3_column_int(st, 7);
    r.driver_version = sqlite3_column_int(st, 8);
    r.has_winner = sqlite3_column_type(st, 9) != SQLITE_NULL;
    r.time_ms = -1;
    if (r.has_winner) read_cfg_(st, 9, &r.winner, &r.time_ms);
    r.n_ok = sqlite3_column_int(st, 14);
    r.n_failed = sqlite3_column_int(st, 15);
    r.n_wrong = sqlite3_column_int(st, 16);
    if (fn(user, &r)) break;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? FLA_OK : sql_error_(db, rc, "listing the rows");
}

fla_status fla_tunedb_checkpoint(fla_tunedb *db) {
  if (!db) return FLA_INVALID;
  if (db->readonly) return check_writable_(db, "fla_tunedb_checkpoint");
  int rc = sqlite3_wal_checkpoint_v2(db->h, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
  if (rc != SQLITE_OK) return sql_error_(db, rc, "checkpointing");
  /* Rollback-journal mode: readers then need no -wal/-shm files beside it
  ** (a database shipped in a read-only place). Best effort: another open
  ** connection keeps WAL, which is as correct. The next writer's open
  ** switches back to WAL. */
  exec_(db, "PRAGMA journal_mode = DELETE");
  return FLA_OK;
}
