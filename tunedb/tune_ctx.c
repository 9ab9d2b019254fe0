/*
** tune_ctx.c -- the tuning databases of a context (fla_ctx_set_tunedb), the
** keys dispatch and the tuner share, and the tuner's forced configuration
** (tune_ctx.h).
*/
#include "tune_ctx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define MAX_DBS 2
#define PATHS_MAX (MAX_DBS * 4096 + MAX_DBS)

struct fla_ctx_tune {
  int resolved;               /* databases resolved (and opened) */
  fla_ctx *msg;               /* a private context for the databases' messages,
                                 so a lookup never overwrites the caller's */
  fla_tunedb *db[MAX_DBS];
  int ndb;
  char paths[PATHS_MAX];      /* fla_ctx_tunedb */
  int force_stage;            /* -1: nothing forced */
  fla_tile_config force;
};

/* ------------------------------------------------------------------ keys */

void fla_tune_recipe_hash(const fla_recipe *r, char out[17]) {
  size_t n = 0;
  const char *s = fla_recipe_text(r, &n);
  uint64_t h = 1469598103934665603ull;  /* FNV-1a 64 */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  snprintf(out, 17, "%016llx", (unsigned long long)h);
}

fla_status fla_tune_key_make(fla_ctx *ctx, const fla_tune_ident *id, const fla_recipe *r,
                             fla_stage stage, const fla_gen_key *gk, int64_t H, fla_tune_key *out) {
  if (!id || !r || !gk || !out) return fla_set_error(ctx, FLA_INVALID, "fla_tune_key_make: NULL argument");
  memset(out, 0, sizeof *out);
  out->id = *id;
  fla_tune_recipe_hash(r, out->recipe_hash);
  /* the stage's name and its source's hash: a rewritten kernel starts untuned */
  snprintf(out->stage, sizeof out->stage, "%s@%08x", fla_stage_name(stage),
           (unsigned)(fla_stage_source_hash(stage) & 0xffffffffu));
  snprintf(out->dtype, sizeof out->dtype, "%s", gk->in_bf16 ? "bf16" : "f32");
  if (H < 1 || H > (1 << 30))
    return fla_set_error(ctx, FLA_INVALID, "fla_tune_key_make: H = %lld", (long long)H);
  /* N is not tuned on (docs/tunedb.md, Buckets) */
  fla_status s = fla_tunedb_bucket(ctx, 0, (int)H, gk->K, gk->V, out->bucket, sizeof out->bucket);
  if (s != FLA_OK) return s;
  fla_tunedb_key *k = &out->key;
  k->recipe_hash = out->recipe_hash;
  k->stage = out->stage;
  k->gpu_name = out->id.gpu_name;
  k->cc_major = id->cc_major;
  k->cc_minor = id->cc_minor;
  k->driver_version = id->driver_version;
  k->nvrtc_version = out->id.nvrtc_version;
  k->dtype = out->dtype;
  k->bucket = out->bucket;
  return FLA_OK;
}

/* ------------------------------------------------------------- databases */

static struct fla_ctx_tune *state_(fla_ctx *ctx) {
  if (!ctx) return NULL;
  if (!ctx->tune) {
    struct fla_ctx_tune *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (fla_ctx_create(FLA_BACKEND_CPU, &t->msg) != FLA_OK) {
      free(t);
      return NULL;
    }
    t->force_stage = -1;
    ctx->tune = t;
  }
  return ctx->tune;
}

static void close_all_(struct fla_ctx_tune *t) {
  for (int i = 0; i < t->ndb; i++) fla_tunedb_close(t->db[i]);
  t->ndb = 0;
  t->paths[0] = '\0';
}

void fla_ctx_tune_free(fla_ctx *ctx) {
  if (!ctx || !ctx->tune) return;
  close_all_(ctx->tune);
  fla_ctx_free(ctx->tune->msg);
  free(ctx->tune);
  ctx->tune = NULL;
}

/* Opens path read-only as the next database (the embedded shipped one when
** path is FLA_TUNEDB_SHIPPED_NAME). On failure the message is in t->msg and
** the status returned. */
static fla_status open_one_(struct fla_ctx_tune *t, const char *path) {
  fla_tunedb *db = NULL;
  fla_status s;
  if (strcmp(path, FLA_TUNEDB_SHIPPED_NAME) == 0) {
    size_t len = 0;
    const void *image = fla_builtin_tunedb(&len);
    s = fla_tunedb_open_image(t->msg, path, image, len, &db);
  } else {
    s = fla_tunedb_open(t->msg, path, FLA_TUNEDB_READONLY, &db);
  }
  if (s != FLA_OK) return s;
  fla_tunedb_set_busy_timeout(db, FLA_TUNE_READ_BUSY_MS);
  t->db[t->ndb++] = db;
  size_t used = strlen(t->paths);
  snprintf(t->paths + used, sizeof t->paths - used, "%s%s", used ? ":" : "", path);
  return FLA_OK;
}

static int exists_(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* The default resolution (fla.h, fla_ctx_set_tunedb). Returns the first
** error of a database that exists but did not open (FLA_OK when none). */
static fla_status resolve_default_(struct fla_ctx_tune *t) {
  const char *env = getenv("FLA_TUNEDB");
  if (env && *env) {
    if (!strcmp(env, "none")) return FLA_OK;
    return open_one_(t, env);
  }
  fla_status first = FLA_OK;
  char user[4096] = "";
  if (fla_tunedb_default_path(NULL, user, sizeof user) == FLA_OK && exists_(user))
    first = open_one_(t, user);
  {
    char keep[FLA_ERRMSG_MAX];
    snprintf(keep, sizeof keep, "%s", fla_errmsg(t->msg));
    fla_status s = open_one_(t, FLA_TUNEDB_SHIPPED_NAME);
    if (first != FLA_OK) snprintf(t->msg->errmsg, sizeof t->msg->errmsg, "%s", keep);
    else first = s;
  }
  return first;
}

fla_status fla_ctx_set_tunedb(fla_ctx *ctx, const char *path) {
  if (!ctx) return FLA_INVALID;
  struct fla_ctx_tune *t = state_(ctx);
  if (!t) return fla_set_error(ctx, FLA_NOMEM, "out of memory (tuning database)");
  close_all_(t);
  t->resolved = 1;
  fla_clear_error(t->msg);
  fla_status s = FLA_OK;
  if (!path) s = resolve_default_(t);
  else if (*path) s = open_one_(t, path);
  if (s != FLA_OK)
    return fla_set_error(ctx, s, "%s (the context uses %s)", fla_errmsg(t->msg),
                         t->ndb ? t->paths : "the default configurations");
  return FLA_OK;
}

const char *fla_ctx_tunedb(const fla_ctx *ctx) { return ctx && ctx->tune ? ctx->tune->paths : ""; }

void fla_ctx_tune_lookup(fla_ctx *ctx, const fla_tunedb_key *key, const fla_tile_config *dflt,
                         fla_tile_config *cfg, fla_tunedb_how *how, double *time_ms) {
  *cfg = *dflt;
  *how = FLA_TUNEDB_DEFAULT;
  if (time_ms) *time_ms = -1;
  struct fla_ctx_tune *t = state_(ctx);
  if (!t) return;
  if (!t->resolved) {
    t->resolved = 1;
    resolve_default_(t);  /* silent: fla_ctx_set_tunedb(ctx, NULL) says why */
  }
  for (int i = 0; i < t->ndb; i++) {
    fla_tile_config c;
    fla_tunedb_how h;
    double ms = -1;
    if (fla_tunedb_lookup(t->db[i], key, dflt, &c, &h, &ms) != FLA_OK || h == FLA_TUNEDB_DEFAULT)
      continue;
    *cfg = c;
    *how = h;
    if (time_ms) *time_ms = ms;
    return;
  }
}

/* ------------------------------------------------------------ the tuner */

fla_status fla_ctx_tune_force(fla_ctx *ctx, int stage, const fla_tile_config *cfg) {
  struct fla_ctx_tune *t = state_(ctx);
  if (!t) return fla_set_error(ctx, FLA_NOMEM, "out of memory (tuning state)");
  t->force_stage = stage >= 0 && cfg ? stage : -1;
  if (cfg) t->force = *cfg;
  return FLA_OK;
}

int fla_ctx_tune_forced(const fla_ctx *ctx, int stage, fla_tile_config *cfg) {
  if (!ctx || !ctx->tune || ctx->tune->force_stage < 0 || ctx->tune->force_stage != stage) return 0;
  if (cfg) *cfg = ctx->tune->force;
  return 1;
}
