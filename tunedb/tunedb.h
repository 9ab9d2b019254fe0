/*
** tunedb.h -- the tuning database: the best tile configuration of every kernel
** stage per (recipe, stage, GPU, driver/NVRTC version, dtype, shape bucket),
** kept in SQLite, with the timing and outcome of every candidate tried.
**
** Internal to the library (fla.h exposes nothing of it yet); docs/tunedb.md
** describes the schema, the keys, the buckets, the fall-backs and the
** migrations. Conventions of fla.h hold: every call that can fail returns an
** fla_status and leaves its message in the context given to
** fla_tunedb_open (read with fla_errmsg); nothing prints.
**
** A database is not thread-safe: one fla_tunedb per thread (several
** connections, in one process or many, to one file are fine: WAL mode and a
** busy timeout arbitrate; a writer that waits past the timeout gets FLA_IO
** "database is locked" and nothing is written).
*/
#ifndef FLA_TUNEDB_H
#define FLA_TUNEDB_H

#include <stddef.h>

#include "fla.h"
#include "generate.h"   /* fla_tile_config */

typedef struct fla_tunedb fla_tunedb;

/* The schema version this build writes and reads (PRAGMA user_version). */
#define FLA_TUNEDB_SCHEMA_VERSION 1
/* The busy timeout a new connection gets, in milliseconds. */
#define FLA_TUNEDB_BUSY_TIMEOUT_MS 2000

/* Open flags. READONLY alone, or READWRITE, optionally | CREATE. */
enum {
  FLA_TUNEDB_READONLY = 1,
  FLA_TUNEDB_READWRITE = 2,
  FLA_TUNEDB_CREATE = 4    /* create the file (and its missing parent
                              directories) when absent; implies READWRITE */
};

/* Opens the tuning database at path. ctx (borrowed, must outlive the
** database) receives the messages of this and every later call on *out.
**   - READWRITE/CREATE: the connection runs in WAL mode; an older schema is
**     migrated to FLA_TUNEDB_SCHEMA_VERSION in one transaction.
**   - FLA_FORMAT: the file is not an SQLite database, is corrupt (fails
**     PRAGMA quick_check), is an SQLite database of something else, has a
**     newer schema than this build knows, or (READONLY) has no schema or an
**     older one. The file is never modified, truncated or recreated then.
**   - FLA_IO: the file or its directory cannot be opened or created (missing
**     without CREATE, a read-only location, a parent that is not a
**     directory), or another connection holds the database locked past the
**     busy timeout.
**   - FLA_INVALID: NULL arguments or bad flags.
** On failure *out is NULL. */
fla_status fla_tunedb_open(fla_ctx *ctx, const char *path, int flags, fla_tunedb **out);

/* Opens a read-only database from an image of its file in memory (bytes,
** len: an SQLite database file's bytes, borrowed: they must outlive the
** database and are never written). name stands for the path in messages and
** in fla_ctx_tunedb. The checks of a READONLY fla_tunedb_open apply
** (FLA_FORMAT for an image that is not a current tuning database);
** FLA_INVALID for NULL or empty arguments. The shipped database is opened
** this way from the copy embedded in the library (fla_builtin_tunedb). */
fla_status fla_tunedb_open_image(fla_ctx *ctx, const char *name, const void *bytes, size_t len,
                                 fla_tunedb **out);

/* The shipped database (tunedb/h100.sqlite at build time) embedded in the
** library: its bytes, length in *len. Defined in the build's generated
** fla_tunedb_image.c (cmake/embed_tunedb.cmake). */
const void *fla_builtin_tunedb(size_t *len);

/* Closes the database. NULL is allowed. */
void fla_tunedb_close(fla_tunedb *db);

/* Sets the busy timeout (ms, >= 0) of this connection: how long a call
** waits for another connection's lock before FLA_IO "database is locked". */
fla_status fla_tunedb_set_busy_timeout(fla_tunedb *db, int ms);

/* The schema version of the open database (FLA_TUNEDB_SCHEMA_VERSION after a
** successful open). */
int fla_tunedb_schema_version(const fla_tunedb *db);

/* Where the database lives by default: $FLA_TUNEDB when set and not empty,
** else $XDG_CACHE_HOME/fla/tunedb.sqlite when XDG_CACHE_HOME is an absolute
** path, else $HOME/.cache/fla/tunedb.sqlite. FLA_INVALID when buf (len
** bytes) is too small or NULL, FLA_IO when none of the three is set. ctx may
** be NULL (no message then). */
fla_status fla_tunedb_default_path(fla_ctx *ctx, char *buf, size_t len);

/* ------------------------------------------------------------------ keys */

/* What a tuned row is keyed by. Every string is borrowed and must be
** non-empty. */
typedef struct fla_tunedb_key {
  const char *recipe_hash;    /* hash of the recipe's text                   */
  const char *stage;          /* fla_stage_name(): "chunk_fwd", ...          */
  const char *gpu_name;       /* the driver's device name                    */
  int cc_major, cc_minor;     /* compute capability                          */
  int driver_version;         /* cuDriverGetVersion: 12040                    */
  const char *nvrtc_version;  /* "12.4"                                      */
  const char *dtype;          /* fla_dtype_name(): "bf16", "f32"             */
  const char *bucket;         /* fla_tunedb_bucket()                         */
} fla_tunedb_key;

/* The bucket of a shape: every dim but T, canonical, "N=any,H=16,K=128,V=128".
** N <= 0 writes "N=any" (the number of sequences is not tuned on); H, K, V
** must be > 0. FLA_INVALID for bad dims or a buf (len bytes) too small. ctx
** may be NULL. */
fla_status fla_tunedb_bucket(fla_ctx *ctx, int N, int H, int K, int V, char *buf, size_t len);

/* How far bucket b is from bucket a for the nearest-bucket fall-back: both
** must name the same dims in the same order and agree on every dim but H
** (N, K and V exactly); the distance is then |log2(H_a) - log2(H_b)| (0 for
** equal buckets). A negative value when b cannot stand in for a (another
** dim differs, a malformed bucket). */
double fla_tunedb_bucket_distance(const char *a, const char *b);

/* ------------------------------------------------------------ candidates */

typedef enum fla_tunedb_outcome {
  FLA_TUNEDB_CAND_OK = 0,   /* compiled, matched the reference, timed       */
  FLA_TUNEDB_CAND_FAILED,   /* did not compile, launch or fit               */
  FLA_TUNEDB_CAND_WRONG     /* ran but disagreed with the reference         */
} fla_tunedb_outcome;

/* "ok", "failed", "wrong" ("?" for an invalid value). */
const char *fla_tunedb_outcome_name(fla_tunedb_outcome o);

typedef struct fla_tunedb_candidate {
  fla_tile_config cfg;
  double time_ms;             /* kept for OK candidates (NULL in the table
                                 otherwise, or when negative)                */
  fla_tunedb_outcome outcome;
  const char *reason;         /* borrowed; NULL allowed                      */
} fla_tunedb_candidate;

/* Records one candidate of key (a sweep records each as it finishes, so a
** resumed sweep skips it): one transaction, which also creates key's row
** (without a winner, so lookups do not see it yet) when missing. A
** candidate recorded again replaces the earlier record. */
fla_status fla_tunedb_record_candidate(fla_tunedb *db, const fla_tunedb_key *key,
                                       const fla_tunedb_candidate *cand);

/* Whether cfg was already tried for key: *known 1 and its outcome (and time,
** -1 when none) when so, else *known 0. outcome and time_ms may be NULL. */
fla_status fla_tunedb_candidate_known(fla_tunedb *db, const fla_tunedb_key *key,
                                      const fla_tile_config *cfg, int *known,
                                      fla_tunedb_outcome *outcome, double *time_ms);

/* ---------------------------------------------------------------- results */

/* Inserts or replaces the result for key: the winner, its time and the
** candidates (ncand of them, cands may be NULL when 0; they are recorded as
** fla_tunedb_record_candidate does, earlier candidates of key are kept) in
** ONE transaction: after a crash the database holds all of it or none. */
fla_status fla_tunedb_insert(fla_tunedb *db, const fla_tunedb_key *key,
                             const fla_tile_config *winner, double time_ms,
                             const fla_tunedb_candidate *cands, int ncand);

typedef enum fla_tunedb_how {
  FLA_TUNEDB_EXACT = 0,   /* the row of exactly key                          */
  FLA_TUNEDB_NEAREST,     /* the nearest bucket of the same recipe, stage,
                             GPU name and compute capability, and dtype (any
                             driver/NVRTC version; see docs/tunedb.md)       */
  FLA_TUNEDB_DEFAULT      /* nothing matched: *cfg is the default passed in  */
} fla_tunedb_how;

/* "exact", "nearest", "default". */
const char *fla_tunedb_how_name(fla_tunedb_how how);

/* The tuned configuration for key: exact, else nearest bucket, else dflt.
** A missing row is not an error (DEFAULT). db may be NULL (no database:
** DEFAULT). On an error (a locked or broken database) *cfg is still dflt
** and *how DEFAULT, so a caller may ignore the status. time_ms may be NULL;
** it receives the winner's time, -1 for DEFAULT. */
fla_status fla_tunedb_lookup(fla_tunedb *db, const fla_tunedb_key *key,
                             const fla_tile_config *dflt, fla_tile_config *cfg,
                             fla_tunedb_how *how, double *time_ms);

/* ---------------------------------------------------------------- listing */

/* One row of the table as fla_tunedb_foreach gives it (strings valid during
** the callback only). */
typedef struct fla_tunedb_row {
  const char *recipe_hash, *stage, *gpu_name, *nvrtc_version, *dtype, *bucket;
  int cc_major, cc_minor, driver_version;
  int has_winner;             /* 0 while its sweep is under way              */
  fla_tile_config winner;
  double time_ms;             /* the winner's; -1 without one                */
  int n_ok, n_failed, n_wrong;  /* its candidates by outcome                 */
} fla_tunedb_row;

/* Calls fn for every row, ordered by GPU, recipe hash, stage, dtype and
** bucket; a non-zero return stops the walk (FLA_OK still). */
fla_status fla_tunedb_foreach(fla_tunedb *db, int (*fn)(void *user, const fla_tunedb_row *row),
                              void *user);

/* Moves the write-ahead log into the database file (a checkpoint) and,
** when no other connection is open, leaves the file in rollback-journal
** mode, so the file alone holds everything and readers in a read-only
** place need no -wal/-shm beside it (before shipping or committing it; the
** next writer's open switches back to WAL). */
fla_status fla_tunedb_checkpoint(fla_tunedb *db);

#endif
