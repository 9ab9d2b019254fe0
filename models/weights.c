/*
** weights.c -- the tensors of a checkpoint: model.safetensors, or the shards that
** model.safetensors.index.json lists, memory-mapped. float32 tensors at aligned
** offsets are used in place; bf16/f16 (or unaligned) ones are converted to float32
** once. Every tensor handed out is marked, so tensors nobody asked for are found.
*/
#include "internal.h"
#include "model_internal.h"
#include "st_view.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
  char *path;
  fla_safetensors *st;
  unsigned char *used; /* per tensor of st */
} shard;

struct weight_store {
  fla_ctx *ctx;
  char label[4096]; /* model.safetensors or the index: names the checkpoint in messages */
  shard *shards;
  int nshards;
  float **owned; /* converted copies */
  int nowned, capowned;
  int any_half;  /* some tensor handed out was bf16 or f16 */
  int random;    /* weights_open_random: no files, every weight drawn from rng */
  uint64_t rng;
};

void weights_free(weight_store *ws) {
  if (!ws) return;
  for (int i = 0; i < ws->nshards; i++) {
    fla_safetensors_free(ws->shards[i].st);
    free(ws->shards[i].path);
    free(ws->shards[i].used);
  }
  for (int i = 0; i < ws->nowned; i++) free(ws->owned[i]);
  free(ws->owned);
  free(ws->shards);
  free(ws);
}

static fla_status add_shard_(weight_store *ws, const char *path) {
  shard *grown = realloc(ws->shards, sizeof(shard) * (size_t)(ws->nshards + 1));
  if (!grown) return fla_set_error(ws->ctx, FLA_NOMEM, "out of memory");
  ws->shards = grown;
  shard *sh = &ws->shards[ws->nshards];
  memset(sh, 0, sizeof *sh);
  fla_status s = fla_safetensors_open_mmap(ws->ctx, path, &sh->st);
  if (s != FLA_OK) return s;
  ws->nshards++;
  sh->path = strdup(path);
  sh->used = calloc((size_t)fla_safetensors_count(sh->st) + 1, 1);
  if (!sh->path || !sh->used) return fla_set_error(ws->ctx, FLA_NOMEM, "out of memory");
  return FLA_OK;
}

static int file_exists_(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* The shards of an index: {"weight_map": {"tensor": "file", ...}}, each file
** opened once; every tensor the map names must be in its file. */
static fla_status open_index_(weight_store *ws, const char *dir, const char *index) {
  json_error_t err;
  json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &err);
  if (!root)
    return fla_set_error(ws->ctx, FLA_FORMAT, "%s: not valid JSON: %s (line %d)", index, err.text, err.line);
  fla_status s = FLA_OK;
  json_t *map = json_object_get(root, "weight_map");
  if (!json_is_object(map)) {
    s = fla_set_error(ws->ctx, FLA_FORMAT, "%s: no \"weight_map\" object", index);
    goto done;
  }
  const char *name;
  json_t *file;
  json_object_foreach(map, name, file) {
    if (!json_is_string(file) || strchr(json_string_value(file), '/')) {
      s = fla_set_error(ws->ctx, FLA_FORMAT, "%s: weight_map['%s'] is not a file name", index, name);
      goto done;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, json_string_value(file));
    int k = 0;
    while (k < ws->nshards && strcmp(ws->shards[k].path, path)) k++;
    if (k == ws->nshards) {
      if (!file_exists_(path)) {
        s = fla_set_error(ws->ctx, FLA_IO, "%s: shard '%s' (of tensor '%s') cannot be opened: %s",
                          index, path, name, strerror(errno));
        goto done;
      }
      if ((s = add_shard_(ws, path))) goto done;
    }
    if (fla_safetensors_find(ws->shards[k].st, name) < 0) {
      s = fla_set_error(ws->ctx, FLA_FORMAT, "%s: tensor '%s' is not in its shard %s", index, name, path);
      goto done;
    }
  }
  if (ws->nshards == 0) s = fla_set_error(ws->ctx, FLA_FORMAT, "%s: the weight_map is empty", index);
done:
  json_decref(root);
  return s;
}

fla_status weights_open(fla_ctx *ctx, const char *dir, weight_store **out) {
  *out = NULL;
  weight_store *ws = calloc(1, sizeof *ws);
  if (!ws) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  ws->ctx = ctx;
  char single[4096], index[4096];
  snprintf(single, sizeof single, "%s/model.safetensors", dir);
  snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
  fla_status s;
  snprintf(ws->label, sizeof ws->label, "%s", file_exists_(single) ? single : index);
  if (file_exists_(single)) s = add_shard_(ws, single);
  else if (file_exists_(index)) s = open_index_(ws, dir, index);
  else
    s = fla_set_error(ctx, FLA_IO, "%s: neither model.safetensors nor model.safetensors.index.json is there", dir);
  if (s != FLA_OK) {
    weights_free(ws);
    return s;
  }
  *out = ws;
  return FLA_OK;
}

static int find_(const weight_store *ws, const char *name, int *shard_index) {
  for (int k = 0; k < ws->nshards; k++) {
    int i = fla_safetensors_find(ws->shards[k].st, name);
    if (i >= 0) {
      *shard_index = k;
      return i;
    }
  }
  return -1;
}

int weights_has(const weight_store *ws, const char *name) {
  int k;
  if (ws->random) return 0;
  return find_(ws, name, &k) >= 0;
}

static fla_status keep_(weight_store *ws, float *f, const char *name) {
  if (ws->nowned == ws->capowned) {
    int cap = ws->capowned ? 2 * ws->capowned : 64;
    float **grown = realloc(ws->owned, sizeof(float *) * (size_t)cap);
    if (grown) {
      ws->owned = grown;
      ws->capowned = cap;
    }
  }
  if (!f || ws->nowned == ws->capowned) {
    free(f);
    return fla_set_error(ws->ctx, FLA_NOMEM, "tensor '%s': out of memory", name);
  }
  ws->owned[ws->nowned++] = f;
  return FLA_OK;
}

/* A random weight: norm weights 1, everything else uniform in [-0.03, 0.03]
** (about fla's normal(0, 0.02)); xorshift64*, so a seed gives the same model. */
static fla_status random_get_(weight_store *ws, const char *name, int ndim, const int64_t *shape,
                              const float **out) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
  fla_status s = keep_(ws, f, name);
  if (s != FLA_OK) return s;
  size_t len = strlen(name);
  int ones = len >= 11 && strcmp(name + len - 11, "norm.weight") == 0;
  for (int64_t i = 0; i < n; i++) {
    if (ones) {
      f[i] = 1.0f;
      continue;
    }
    ws->rng ^= ws->rng >> 12, ws->rng ^= ws->rng << 25, ws->rng ^= ws->rng >> 27;
    f[i] = (float)(int32_t)((ws->rng * 2685821657736338717ull) >> 32) * (0.03f / 2147483648.0f);
  }
  *out = f;
  return FLA_OK;
}

fla_status weights_open_random(fla_ctx *ctx, uint64_t seed, weight_store **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return fla_set_error(ctx, FLA_NOMEM, "out of memory");
  (*out)->ctx = ctx;
  (*out)->random = 1;
  (*out)->rng = seed * 0x9E3779B97F4A7C15ull + 1;
  snprintf((*out)->label, sizeof (*out)->label, "random weights (seed %llu)", (unsigned long long)seed);
  return FLA_OK;
}

int weights_half(const weight_store *ws) { return ws->any_half; }

fla_status weights_get(weight_store *ws, const char *name, int ndim, const int64_t *shape,
                       const float **out) {
  char want[128], got[128];
  if (ws->random) return random_get_(ws, name, ndim, shape, out);
  int k, i = find_(ws, name, &k);
  if (i < 0) {
    return fla_set_error(ws->ctx, FLA_FORMAT, "%s: missing tensor '%s' %s", ws->label, name,
                         fla_shape_str(want, sizeof want, ndim, shape));
  }
  shard *sh = &ws->shards[k];
  int dtype, nd;
  const int64_t *sshape;
  const void *data;
  size_t nbytes;
  fla_safetensors_view(sh->st, i, &dtype, &nd, &sshape, &data, &nbytes);
  int same = nd == ndim;
  for (int d = 0; same && d < nd; d++) same = sshape[d] == shape[d];
  if (!same)
    return fla_set_error(ws->ctx, FLA_FORMAT, "%s: tensor '%s' has shape %s, the config needs %s",
                         sh->path, name, fla_shape_str(got, sizeof got, nd, sshape),
                         fla_shape_str(want, sizeof want, ndim, shape));
  if (dtype != FLA_F32 && dtype != FLA_BF16 && dtype != FLA_F16)
    return fla_set_error(ws->ctx, FLA_UNSUPPORTED, "%s: tensor '%s': dtype %s (F32, BF16 and F16 are supported)",
                         sh->path, name, dtype >= 0 ? fla_dtype_name((fla_dtype)dtype) : "other");
  sh->used[i] = 1;
  if (dtype != FLA_F32) ws->any_half = 1;
  if (dtype == FLA_F32 && (uintptr_t)data % sizeof(float) == 0) {
    *out = data;
    return FLA_OK;
  }
  int64_t n = (int64_t)(nbytes / fla_dtype_size((fla_dtype)dtype));
  float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
  void *aligned = malloc(nbytes ? nbytes : 1);
  if (ws->nowned == ws->capowned) {
    int cap = ws->capowned ? 2 * ws->capowned : 64;
    float **grown = realloc(ws->owned, sizeof(float *) * (size_t)cap);
    if (grown) {
      ws->owned = grown;
      ws->capowned = cap;
    }
  }
  if (!f || !aligned || ws->nowned == ws->capowned) {
    free(f);
    free(aligned);
    return fla_set_error(ws->ctx, FLA_NOMEM, "%s: tensor '%s': out of memory", sh->path, name);
  }
  memcpy(aligned, data, nbytes); /* the file's offset need not suit the element size */
  fla_convert(f, FLA_F32, aligned, (fla_dtype)dtype, n);
  free(aligned);
  ws->owned[ws->nowned++] = f;
  *out = f;
  return FLA_OK;
}

fla_status weights_check_all_used(weight_store *ws) {
  for (int k = 0; k < ws->nshards; k++) {
    shard *sh = &ws->shards[k];
    for (int i = 0; i < fla_safetensors_count(sh->st); i++)
      if (!sh->used[i])
        return fla_set_error(ws->ctx, FLA_FORMAT, "%s: unexpected tensor '%s' (the config does not use it)",
                             sh->path, fla_safetensors_name(sh->st, i));
  }
  return FLA_OK;
}
