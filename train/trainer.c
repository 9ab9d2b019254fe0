/*
** trainer.c -- the optimizer step (micro-batches, clipping, AdamW at the
** schedule's rate) and the trainer's checkpoint state (include/fla.h, "The
** trainer"; docs/training.md).
*/
#include "fla.h"
#include "internal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fla_trainer {
  fla_ctx *ctx;
  fla_model *model;
  fla_loader *data;
  fla_train_options opt;
  int nparams;
  fla_param *params;
  fla_adamw *adamw;
  int64_t step, tokens_seen;
  uint64_t rng;             /* splitmix64 state, advanced once per step */
  double last_loss;
  int32_t *ids, *targets;   /* one micro-batch [batch, seq_len] */
  int64_t *cu_seqlens;      /* its documents when they run separately */
};

void fla_trainer_free(fla_trainer *t) {
  if (!t) return;
  fla_adamw_free(t->adamw);
  free(t->params);
  free(t->ids);
  free(t->targets);
  free(t->cu_seqlens);
  free(t);
}

static uint64_t splitmix64_(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int64_t loader_seq_len_(fla_trainer *t);

fla_status fla_trainer_new(fla_ctx *ctx, fla_model *m, fla_loader *ld, const fla_train_options *o,
                           fla_trainer **out) {
  if (!out) return fla_set_error(ctx, FLA_INVALID, "fla_trainer_new: out is NULL");
  *out = NULL;
  if (!m || !ld || !o) return fla_set_error(ctx, FLA_INVALID, "fla_trainer_new: NULL model, loader or options");
  int n = fla_model_num_params(m);
  if (n < 1) return fla_set_error(ctx, FLA_INVALID, "fla_trainer_new: the model is not trainable (fla_model_enable_grad)");
  if (fla_loader_vocab_size(ld) > fla_model_vocab_size(m))
    return fla_set_error(ctx, FLA_INVALID, "fla_trainer_new: the data's vocabulary (%lld) is larger than the model's (%d)",
                         (long long)fla_loader_vocab_size(ld), fla_model_vocab_size(m));
  if (o->batch_size < 1 || o->micro_batches < 1 || o->steps < 1)
    return fla_set_error(ctx, FLA_INVALID, "fla_trainer_new: batch_size (%lld), micro_batches (%d) and steps (%lld) must be >= 1",
                         (long long)o->batch_size, o->micro_batches, (long long)o->steps);
  if (!(o->schedule.lr > 0) || o->schedule.warmup_steps < 0 || !(o->schedule.min_lr >= 0))
    return fla_set_error(ctx, FLA_INVALID, "fla_trainer_new: schedule lr %g must be > 0, min_lr %g >= 0, warmup %lld >= 0",
                         o->schedule.lr, o->schedule.min_lr, (long long)o->schedule.warmup_steps);
  fla_trainer *t = calloc(1, sizeof *t);
  if (!t) return fla_set_error(ctx, FLA_NOMEM, "fla_trainer_new: out of memory");
  t->ctx = ctx;
  t->model = m;
  t->data = ld;
  t->opt = *o;
  t->nparams = n;
  t->rng = o->seed;
  t->params = calloc((size_t)n, sizeof(fla_param));
  fla_status s = t->params ? FLA_OK : fla_set_error(ctx, FLA_NOMEM, "fla_trainer_new: out of memory");
  for (int i = 0; s == FLA_OK && i < n; i++) s = fla_model_param(m, i, &t->params[i]);
  if (s == FLA_OK) s = fla_adamw_new_model(m, &o->adamw, &t->adamw); /* on the model's device */
  if (s == FLA_OK) {
    size_t count = (size_t)(o->batch_size * loader_seq_len_(t));
    t->ids = malloc(sizeof(int32_t) * count);
    t->targets = malloc(sizeof(int32_t) * count);
    t->cu_seqlens = malloc(sizeof(int64_t) * (count + 1));
    if (!t->ids || !t->targets || !t->cu_seqlens)
      s = fla_set_error(ctx, FLA_NOMEM, "fla_trainer_new: out of memory for a micro-batch");
  }
  if (s != FLA_OK) {
    fla_trainer_free(t);
    return s;
  }
  *out = t;
  return FLA_OK;
}

/* cu_seqlens of the micro-batch's documents: each window cut after its boundary
** tokens (windows are never joined). Returns the number of documents. */
static int64_t split_batch_(fla_trainer *t, int64_t B, int64_t T) {
  const int32_t boundary = fla_loader_boundary(t->data);
  int64_t docs = 0;
  t->cu_seqlens[0] = 0;
  for (int64_t b = 0; b < B; b++) {
    /* Writes 0, ends...; entry 0 overwrites the previous window's end, b T, with 0. */
    int64_t n = fla_split_documents(t->ids + b * T, T, boundary, t->cu_seqlens + docs);
    for (int64_t i = 0; i <= n; i++) t->cu_seqlens[docs + i] += b * T;
    docs += n;
  }
  return docs;
}

fla_status fla_trainer_step(fla_trainer *t, fla_step_stats *stats) {
  if (!t) return fla_set_error(NULL, FLA_INVALID, "fla_trainer_step: NULL trainer");
  const int64_t B = t->opt.batch_size, T = loader_seq_len_(t);
  const double lr = fla_lr_at(&t->opt.schedule, t->step);
  /* Every target counts (the loader gives no ignored ones): the mean over the step. */
  const float scale = (float)(1.0 / ((double)t->opt.micro_batches * (double)B * (double)T));
  fla_model_zero_grad(t->model);
  double loss_sum = 0;
  int64_t count = 0;
  for (int mb = 0; mb < t->opt.micro_batches; mb++) {
    fla_status s = fla_loader_next(t->data, B, t->ids, t->targets);
    double part = 0;
    int64_t n = 0;
    if (s == FLA_OK && t->opt.separate_documents) {
      int64_t docs = split_batch_(t, B, T);
      s = fla_model_loss_backward_varlen(t->model, t->ids, t->targets, t->cu_seqlens, docs, scale, &part, &n);
    } else if (s == FLA_OK) {
      s = fla_model_loss_backward(t->model, t->ids, t->targets, B, T, scale, &part, &n);
    }
    if (s != FLA_OK) return s;
    loss_sum += part;
    count += n;
  }
  double norm = fla_model_clip_grad_norm(t->model, t->opt.clip_norm);
  fla_status s = fla_adamw_step(t->adamw, (float)lr);
  if (s != FLA_OK) return s;
  splitmix64_(&t->rng);
  t->step++;
  t->tokens_seen += count;
  t->last_loss = count ? loss_sum / (double)count : 0;
  if (stats) {
    stats->step = t->step;
    stats->loss = t->last_loss;
    stats->lr = lr;
    stats->grad_norm = norm;
    stats->tokens = count;
  }
  return FLA_OK;
}

int64_t fla_trainer_step_count(const fla_trainer *t) { return t ? t->step : 0; }

/* ---------------------------------------------------------- checkpoint state */

static int64_t loader_seq_len_(fla_trainer *t) { return fla_loader_seq_len(t->data); }

static char *state_json_(fla_trainer *t) {
  char seed[24], rng[24];
  snprintf(seed, sizeof seed, "%016" PRIx64, t->opt.seed);
  snprintf(rng, sizeof rng, "%016" PRIx64, t->rng);
  fla_loader_pos pos = fla_loader_tell(t->data);
  json_t *root = json_pack("{s:s, s:i, s:I, s:s, s:s, s:I, s:f, s:I, s:i, s:{s:I, s:I, s:I, s:I}}",
                           "format", "fla-train-state", "version", 1, "step", (json_int_t)t->step,
                           "seed", seed, "rng", rng, "tokens_seen", (json_int_t)t->tokens_seen,
                           "last_loss", t->last_loss, "batch_size", (json_int_t)t->opt.batch_size,
                           "micro_batches", t->opt.micro_batches, "data", "epoch", (json_int_t)pos.epoch,
                           "index", (json_int_t)pos.index, "seq_len", (json_int_t)loader_seq_len_(t),
                           "windows", (json_int_t)fla_loader_num_windows(t->data));
  char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
  json_decref(root);
  return text;
}

fla_status fla_trainer_save(fla_trainer *t, const char *root, int64_t shard_bytes, char *dir_out,
                            size_t dir_out_len) {
  if (!t || !root) return fla_set_error(t ? t->ctx : NULL, FLA_INVALID, "fla_trainer_save: NULL argument");
  char *state = state_json_(t);
  if (!state) return fla_set_error(t->ctx, FLA_NOMEM, "fla_trainer_save: out of memory");
  fla_checkpoint_contents c = {fla_model_config_json(t->model), t->nparams, t->params, t->adamw, state};
  fla_status s = fla_model_sync_host(t->model); /* the device's weights into t->params */
  if (s == FLA_OK) s = fla_checkpoint_save(t->ctx, root, t->step, &c, shard_bytes, dir_out, dir_out_len);
  free(state);
  return s;
}

static int parse_hex64_(const char *s, uint64_t *out) {
  if (!s || !*s) return 0;
  char *end;
  *out = strtoull(s, &end, 16);
  return *end == 0;
}

fla_status fla_trainer_restore(fla_trainer *t, const char *dir) {
  if (!t || !dir) return fla_set_error(t ? t->ctx : NULL, FLA_INVALID, "fla_trainer_restore: NULL argument");
  char path[4400];
  if (strlen(dir) > 4000) return fla_set_error(t->ctx, FLA_INVALID, "fla_trainer_restore: path too long");
  snprintf(path, sizeof path, "%s/trainer_state.json", dir);
  json_error_t err;
  json_t *root = json_load_file(path, 0, &err);
  if (!root) return fla_set_error(t->ctx, FLA_FORMAT, "%s: %s (line %d)", path, err.text, err.line);
  json_int_t step = -1, tokens = 0, epoch = -1, index = -1, seq_len = -1, windows = -1;
  const char *seed_s = NULL, *rng_s = NULL, *format = NULL;
  double last_loss = 0;
  fla_status s = FLA_OK;
  if (json_unpack_ex(root, &err, 0, "{s:s, s:I, s:s, s:s, s:I, s:F, s:{s:I, s:I, s:I, s:I}}", "format", &format,
                     "step", &step, "seed", &seed_s, "rng", &rng_s, "tokens_seen", &tokens, "last_loss", &last_loss,
                     "data", "epoch", &epoch, "index", &index, "seq_len", &seq_len, "windows", &windows) != 0)
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: %s", path, err.text);
  uint64_t seed = 0, rng = 0;
  if (s == FLA_OK && strcmp(format, "fla-train-state") != 0)
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: format '%s', expected 'fla-train-state'", path, format);
  if (s == FLA_OK && (!parse_hex64_(seed_s, &seed) || !parse_hex64_(rng_s, &rng) || step < 0 || epoch < 0 || index < 0))
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: malformed seed, rng, step or data position", path);
  if (s == FLA_OK && seq_len != loader_seq_len_(t))
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: written with seq_len %lld, this run has %lld", path, (long long)seq_len,
                      (long long)loader_seq_len_(t));
  if (s == FLA_OK && windows != fla_loader_num_windows(t->data))
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: written over data of %lld windows, this run's has %lld", path,
                      (long long)windows, (long long)fla_loader_num_windows(t->data));
  if (s == FLA_OK && seed != t->opt.seed)
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: written with seed %llu, this run has %llu", path,
                      (unsigned long long)seed, (unsigned long long)t->opt.seed);
  json_decref(root);
  if (s != FLA_OK) return s;
  snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
  s = fla_adamw_load(t->adamw, path);
  if (s == FLA_OK && fla_adamw_step_count(t->adamw) != step)
    s = fla_set_error(t->ctx, FLA_FORMAT, "%s: optimizer step %lld, trainer_state.json says %lld", path,
                      (long long)fla_adamw_step_count(t->adamw), (long long)step);
  fla_loader_pos pos = {(uint64_t)epoch, (uint64_t)index};
  if (s == FLA_OK) s = fla_loader_seek(t->data, pos);
  if (s != FLA_OK) return s;
  t->step = step;
  t->tokens_seen = tokens;
  t->last_loss = last_loss;
  t->rng = rng;
  return FLA_OK;
}
