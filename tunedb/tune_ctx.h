/*
** tune_ctx.h -- what dispatch and the tuner share about the tuning database:
** the key of a (recipe, stage, device, dtype, shape) built one way for both,
** the databases a context reads (fla_ctx_set_tunedb), and the configuration
** the tuner forces while it times a candidate.
**
** Internal to the library; docs/tunedb.md describes the resolution order.
*/
#ifndef FLA_TUNE_CTX_H
#define FLA_TUNE_CTX_H

#include "generate.h"
#include "recipe.h"
#include "tunedb.h"

/* The name fla_ctx_tunedb gives the database shipped with the library (the
** copy of tunedb/h100.sqlite embedded at build time, fla_builtin_tunedb). */
#define FLA_TUNEDB_SHIPPED_NAME "(built in) tunedb/h100.sqlite"

/* How long a context's read-only handle waits for a lock: a forward must
** not stall on another program's write. */
#define FLA_TUNE_READ_BUSY_MS 200

/* The device part of a key. */
typedef struct fla_tune_ident {
  char gpu_name[256];
  int cc_major, cc_minor;
  int driver_version;         /* 13000 for 13.0 */
  char nvrtc_version[16];     /* "13.0" */
} fla_tune_ident;

/* One key and the strings it points at. `key` points into this struct: do
** not copy it (make another with fla_tune_key_make). */
typedef struct fla_tune_key {
  fla_tune_ident id;
  char recipe_hash[17];       /* FNV-1a 64 of the recipe's text, hex */
  char stage[40];             /* "chunk_fwd@1a2b3c4d": name @ source hash */
  char dtype[8];
  char bucket[96];
  fla_tunedb_key key;
} fla_tune_key;

/* The hex hash of a recipe's text (16 digits and a NUL). */
void fla_tune_recipe_hash(const fla_recipe *r, char out[17]);

/* The key of stage for recipe r on device id with the generator key gk (its
** K, V and dtype) and H heads. FLA_INVALID with a message in ctx (may be
** NULL) for bad dims. */
fla_status fla_tune_key_make(fla_ctx *ctx, const fla_tune_ident *id, const fla_recipe *r,
                             fla_stage stage, const fla_gen_key *gk, int64_t H, fla_tune_key *out);

/* Exact, else nearest bucket, else *dflt, through the context's databases
** in order (the first that has a row for key wins). Never fails: a database
** that cannot be opened or read counts as empty (fla_ctx_set_tunedb(ctx,
** NULL) reports why). The databases are resolved on first use. time_ms may
** be NULL. */
void fla_ctx_tune_lookup(fla_ctx *ctx, const fla_tunedb_key *key, const fla_tile_config *dflt,
                         fla_tile_config *cfg, fla_tunedb_how *how, double *time_ms);

/* The tuner's override: while set, dispatch gives cfg to `stage` (and only
** to it) without asking any database. stage < 0 clears it. FLA_NOMEM only. */
fla_status fla_ctx_tune_force(fla_ctx *ctx, int stage, const fla_tile_config *cfg);

/* 1 and *cfg when a configuration is forced for stage, else 0. */
int fla_ctx_tune_forced(const fla_ctx *ctx, int stage, fla_tile_config *cfg);

#endif
