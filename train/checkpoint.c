/*
** checkpoint.c -- atomic training checkpoints (include/fla.h, "Checkpoints";
** docs/training.md).
**
** A checkpoint is built in root/.tmp-step-N.<pid>: config.json, the weight shards,
** model.safetensors.index.json, optimizer.safetensors, trainer_state.json, each
** fsynced; the directory is fsynced and renamed to root/step-N, then root is
** fsynced. Only a finished checkpoint ever carries a step-N name, so a crash at
** any point leaves the previous ones as they were.
**
** Test hook: FLA_CHECKPOINT_CRASH_AFTER=k in the environment makes the process
** _exit(86) after the k-th file of a checkpoint is written (a crash mid-save).
*/
#include "fla.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  fla_ctx *ctx;
  const char *dir;
  int files_written;
} ckpt_writer;

/* The fault-injection hook of the header comment. */
static void maybe_crash_(ckpt_writer *w) {
  w->files_written++;
  const char *env = getenv("FLA_CHECKPOINT_CRASH_AFTER");
  if (env && *env && atoi(env) == w->files_written) _exit(86);
}

static void fsync_path_(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);  /* best effort on directories: some file systems refuse it */
    close(fd);
  }
}

/* Writes text to dir/name and fsyncs it. */
static fla_status write_text_(ckpt_writer *w, const char *name, const char *text) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", w->dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fla_set_error(w->ctx, FLA_IO, "%s: cannot create: %s", path, strerror(errno));
  size_t len = strlen(text), done = 0;
  while (done < len) {
    ssize_t k = write(fd, text + done, len - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int err = errno;
      close(fd);
      return fla_set_error(w->ctx, FLA_IO, "%s: write failed: %s", path, strerror(err));
    }
    done += (size_t)k;
  }
  if (fsync(fd) != 0 || close(fd) != 0)
    return fla_set_error(w->ctx, FLA_IO, "%s: fsync/close failed: %s", path, strerror(errno));
  maybe_crash_(w);
  return FLA_OK;
}

/* Removes a directory and the files directly in it (checkpoints are flat). */
static void remove_dir_(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[4400];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

static fla_status mkdir_p_(fla_ctx *ctx, const char *dir) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return fla_set_error(ctx, FLA_IO, "%s: cannot create: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST)
    return fla_set_error(ctx, FLA_IO, "%s: cannot create: %s", buf, strerror(errno));
  return FLA_OK;
}

/* The weights: parameters in order, a new shard whenever the next one would
** take the current shard past shard_bytes. */
static fla_status write_shards_(ckpt_writer *w, const fla_checkpoint_contents *c, int64_t shard_bytes) {
  int n = c->nparams;
  int *shard_of = calloc((size_t)n, sizeof(int));
  const char **names = calloc((size_t)n, sizeof(char *));
  fla_tensor **ts = calloc((size_t)n, sizeof(fla_tensor *));
  json_t *map = json_object(), *root = json_object(), *meta = json_object();
  fla_status s = shard_of && names && ts && map && root && meta
                     ? FLA_OK
                     : fla_set_error(w->ctx, FLA_NOMEM, "fla_checkpoint_save: out of memory");
  int nshards = 0;
  int64_t in_shard = 0, total = 0;
  for (int i = 0; s == FLA_OK && i < n; i++) {
    int64_t bytes = c->params[i].numel * 4;
    if (i == 0 || (shard_bytes > 0 && in_shard > 0 && in_shard + bytes > shard_bytes)) nshards++, in_shard = 0;
    shard_of[i] = nshards - 1;
    in_shard += bytes;
    total += bytes;
    names[i] = c->params[i].name;
    s = fla_tensor_wrap(w->ctx, FLA_F32, c->params[i].ndim, c->params[i].shape, c->params[i].data, &ts[i]);
  }
  char file[64], path[4200];
  for (int k = 0; s == FLA_OK && k < nshards; k++) {
    int first = 0, count = 0;
    while (shard_of[first] != k) first++;
    while (first + count < n && shard_of[first + count] == k) count++;
    snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, nshards);
    snprintf(path, sizeof path, "%s/%s", w->dir, file);
    s = fla_safetensors_save(w->ctx, path, count, names + first, (const fla_tensor *const *)(ts + first));
    for (int i = first; s == FLA_OK && i < first + count; i++)
      if (json_object_set_new(map, names[i], json_string(file)) != 0)
        s = fla_set_error(w->ctx, FLA_NOMEM, "fla_checkpoint_save: out of memory");
    if (s == FLA_OK) maybe_crash_(w);
  }
  char *text = NULL;
  if (s == FLA_OK) {
    json_object_set_new(meta, "total_size", json_integer(total));
    json_object_set(root, "metadata", meta);
    json_object_set(root, "weight_map", map);
    text = json_dumps(root, JSON_INDENT(2));
    s = text ? write_text_(w, "model.safetensors.index.json", text)
             : fla_set_error(w->ctx, FLA_NOMEM, "fla_checkpoint_save: out of memory");
  }
  free(text);
  json_decref(map);
  json_decref(meta);
  json_decref(root);
  for (int i = 0; ts && i < n; i++) fla_tensor_free(ts[i]);
  free(ts);
  free(names);
  free(shard_of);
  return s;
}

fla_status fla_checkpoint_save(fla_ctx *ctx, const char *root, int64_t step,
                               const fla_checkpoint_contents *c, int64_t shard_bytes,
                               char *dir_out, size_t dir_out_len) {
  if (!root || !c || !c->config_json || c->nparams < 1 || !c->params || step < 0)
    return fla_set_error(ctx, FLA_INVALID, "fla_checkpoint_save: need a root, config_json, parameters and step >= 0");
  if (strlen(root) > 3900) return fla_set_error(ctx, FLA_INVALID, "fla_checkpoint_save: root path too long");
  fla_status s = mkdir_p_(ctx, root);
  if (s != FLA_OK) return s;
  char tmp[4096], final[4096], old[4096];
  snprintf(tmp, sizeof tmp, "%s/.tmp-step-%08lld.%ld", root, (long long)step, (long)getpid());
  snprintf(final, sizeof final, "%s/step-%08lld", root, (long long)step);
  snprintf(old, sizeof old, "%s/.old-step-%08lld.%ld", root, (long long)step, (long)getpid());
  remove_dir_(tmp);
  if (mkdir(tmp, 0755) != 0) return fla_set_error(ctx, FLA_IO, "%s: cannot create: %s", tmp, strerror(errno));
  ckpt_writer w = {ctx, tmp, 0};
  s = write_text_(&w, "config.json", c->config_json);
  if (s == FLA_OK) s = write_shards_(&w, c, shard_bytes);
  if (s == FLA_OK && c->optimizer) {
    char path[4200];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    s = fla_adamw_save(c->optimizer, path);
    if (s == FLA_OK) maybe_crash_(&w);
  }
  if (s == FLA_OK && c->state_json) s = write_text_(&w, "trainer_state.json", c->state_json);
  if (s != FLA_OK) {
    remove_dir_(tmp);
    return s;
  }
  fsync_path_(tmp);
  struct stat st;
  int replacing = stat(final, &st) == 0;
  if (replacing && rename(final, old) != 0) {
    s = fla_set_error(ctx, FLA_IO, "%s: cannot move aside: %s", final, strerror(errno));
  } else if (rename(tmp, final) != 0) {
    s = fla_set_error(ctx, FLA_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    if (replacing) rename(old, final);
  }
  if (s != FLA_OK) {
    remove_dir_(tmp);
    return s;
  }
  fsync_path_(root);
  if (replacing) remove_dir_(old);
  if (dir_out && dir_out_len) snprintf(dir_out, dir_out_len, "%s", final);
  return FLA_OK;
}

/* The step of a name "step-<digits>", or -1. */
static int64_t step_of_name_(const char *name) {
  if (strncmp(name, "step-", 5) != 0 || !name[5]) return -1;
  int64_t v = 0;
  for (const char *p = name + 5; *p; p++) {
    if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (*p - '0');
  }
  return v;
}

fla_status fla_checkpoint_latest(fla_ctx *ctx, const char *root, char *dir_out, size_t dir_out_len,
                                 int64_t *step) {
  if (!root) return fla_set_error(ctx, FLA_INVALID, "fla_checkpoint_latest: root is NULL");
  DIR *d = opendir(root);
  if (!d) return fla_set_error(ctx, FLA_IO, "%s: no checkpoint (cannot open: %s)", root, strerror(errno));
  int64_t best = -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int64_t k = step_of_name_(e->d_name);
    if (k > best) best = k;
  }
  closedir(d);
  if (best < 0) return fla_set_error(ctx, FLA_IO, "%s: no complete checkpoint (no step-N directory)", root);
  if (dir_out && dir_out_len) snprintf(dir_out, dir_out_len, "%s/step-%08lld", root, (long long)best);
  if (step) *step = best;
  return FLA_OK;
}

static int cmp_desc_(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

fla_status fla_checkpoint_prune(fla_ctx *ctx, const char *root, int keep) {
  if (!root || keep < 1) return fla_set_error(ctx, FLA_INVALID, "fla_checkpoint_prune: need a root and keep >= 1");
  DIR *d = opendir(root);
  if (!d) return fla_set_error(ctx, FLA_IO, "%s: cannot open: %s", root, strerror(errno));
  int64_t *steps = NULL;
  size_t n = 0, cap = 0;
  char path[4400];
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int64_t k = step_of_name_(e->d_name);
    if (k >= 0) {
      if (n == cap) {
        int64_t *grown = realloc(steps, sizeof(int64_t) * (cap = cap ? 2 * cap : 16));
        if (!grown) {
          free(steps);
          closedir(d);
          return fla_set_error(ctx, FLA_NOMEM, "fla_checkpoint_prune: out of memory");
        }
        steps = grown;
      }
      steps[n++] = k;
    } else if (!strncmp(e->d_name, ".tmp-step-", 10) || !strncmp(e->d_name, ".old-step-", 10)) {
      /* Left by a save that crashed (ours or an earlier process's). */
      int pid_here = 0;
      const char *dot = strrchr(e->d_name, '.');
      if (dot && atol(dot + 1) == (long)getpid()) pid_here = 1;
      if (!pid_here) {
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        remove_dir_(path);
      }
    }
  }
  closedir(d);
  if (n) qsort(steps, n, sizeof(int64_t), cmp_desc_);
  for (size_t i = (size_t)keep; i < n; i++) {
    snprintf(path, sizeof path, "%s/step-%08lld", root, (long long)steps[i]);
    remove_dir_(path);
  }
  free(steps);
  return FLA_OK;
}
