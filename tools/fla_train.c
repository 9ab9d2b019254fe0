/*
** fla-train -- trains a model from a JSON config on the CPU (docs/training.md).
**
**   fla-train --config FILE [--resume] [--init-from DIR] [--steps N]
**             [--checkpoint-dir DIR] [--log FILE] [--threads N] [--stop-after N]
**
** Prints a progress line (step, loss, learning rate, tokens/s, ETA) every
** log_every steps, appends the same per step to the log (JSONL, or CSV when the
** name ends in .csv), saves a checkpoint every checkpoint.every steps, at the
** end, and at the next step boundary after SIGINT/SIGTERM (a second one stops at
** once, without saving). --resume continues
** from the newest complete checkpoint of the checkpoint directory (from scratch
** when there is none); --init-from starts from the weights of an fla / Hugging
** Face checkpoint directory. Command-line values override the config's (--steps
** sets the run's length and the schedule's); --stop-after N ends this invocation
** after N steps, saving, as a signal would (a run split over several calls).
** Exit status: 0 done, 1 failed, 2 bad arguments or config, 130 stopped by a
** signal (after saving).
*/
#include "fla.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested_ = 0;
static void on_signal_(int sig) { stop_requested_ = sig; }

typedef struct {
  char *model_config;        /* a config.json path (a temporary file for an inline one) */
  int model_config_tmp;      /* 1: remove model_config at exit */
  const char *init_from;
  const char **data;
  int ndata;
  int64_t seq_len;
  fla_train_options opt;
  const char *ckpt_dir;
  int64_t ckpt_every, shard_bytes;
  int keep;
  const char *log_path;
  int64_t log_every;
  int threads;
  const char *device;         /* "cpu" (default) or "cuda" */
  const char *dtype;          /* on cuda: "bf16" (default) or "f32" compute */
} run_config;

static double now_s_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads an optional number field; -1 with a message when it has the wrong type. */
static int get_num_(json_t *obj, const char *key, double *out, const char *where) {
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v) return 0;
  if (!json_is_number(v)) {
    fprintf(stderr, "fla-train: config: %s%s must be a number\n", where, key);
    return -1;
  }
  *out = json_number_value(v);
  return 0;
}

static const char *get_str_(json_t *obj, const char *key) {
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The config file's fields into rc (docs/training.md lists them). 0 or -1. */
static int parse_config_(json_t *root, run_config *rc) {
  static const char *known[] = {"model_config", "init_from", "data", "seq_len", "batch_size", "micro_batches",
                                "steps", "optimizer", "schedule", "checkpoint", "log", "log_every", "seed",
                                "device", "dtype", "threads", "documents", NULL};
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    int ok = 0;
    for (int i = 0; known[i]; i++) ok |= !strcmp(key, known[i]);
    if (!ok) return fprintf(stderr, "fla-train: config: unknown field '%s'\n", key), -1;
  }
  json_t *mc = json_object_get(root, "model_config");
  if (json_is_string(mc)) {
    rc->model_config = strdup(json_string_value(mc));
  } else if (json_is_object(mc)) {
    char tmpl[] = "/tmp/fla-train-config-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0 || json_dumpfd(mc, fd, JSON_INDENT(2)) != 0) return perror("fla-train: temporary config"), -1;
    close(fd);
    rc->model_config = strdup(tmpl);
    rc->model_config_tmp = 1;
  } else if (mc) {
    return fprintf(stderr, "fla-train: config: model_config must be a path or an object\n"), -1;
  }
  if (!rc->init_from) rc->init_from = get_str_(root, "init_from");
  json_t *data = json_object_get(root, "data");
  if (rc->ndata == 0 && data) {
    if (json_is_string(data)) data = json_pack("[O]", data);
    else json_incref(data);
    if (!json_is_array(data) || json_array_size(data) == 0) {
      json_decref(data);
      return fprintf(stderr, "fla-train: config: data must be a token file or a list of them\n"), -1;
    }
    rc->ndata = (int)json_array_size(data);
    rc->data = calloc((size_t)rc->ndata, sizeof(char *));
    for (int i = 0; i < rc->ndata; i++) {
      const char *p = json_string_value(json_array_get(data, (size_t)i));
      if (!p) return fprintf(stderr, "fla-train: config: data[%d] is not a string\n", i), json_decref(data), -1;
      rc->data[i] = strdup(p);
    }
    json_decref(data);
  }
  double seq = (double)rc->seq_len, batch = 8, micro = 1, steps = (double)rc->opt.steps, seed = 0, every = 0, keep = 2,
         shard = 0, log_every = 10, threads = rc->threads;
  if (get_num_(root, "seq_len", &seq, "") || get_num_(root, "batch_size", &batch, "") ||
      get_num_(root, "micro_batches", &micro, "") || get_num_(root, "steps", &steps, "") ||
      get_num_(root, "seed", &seed, "") || get_num_(root, "log_every", &log_every, "") ||
      get_num_(root, "threads", &threads, ""))
    return -1;
  json_t *opt = json_object_get(root, "optimizer"), *sch = json_object_get(root, "schedule"),
         *ck = json_object_get(root, "checkpoint");
  double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, clip = 1.0, warmup = 0, min_lr = 0;
  json_t *betas = opt ? json_object_get(opt, "betas") : NULL;
  if (betas) {
    if (!json_is_array(betas) || json_array_size(betas) != 2)
      return fprintf(stderr, "fla-train: config: optimizer.betas must be [beta1, beta2]\n"), -1;
    b1 = json_number_value(json_array_get(betas, 0));
    b2 = json_number_value(json_array_get(betas, 1));
  }
  if (get_num_(opt, "lr", &lr, "optimizer.") || get_num_(opt, "eps", &eps, "optimizer.") ||
      get_num_(opt, "weight_decay", &wd, "optimizer.") || get_num_(opt, "clip_norm", &clip, "optimizer.") ||
      get_num_(sch, "warmup_steps", &warmup, "schedule.") || get_num_(sch, "min_lr", &min_lr, "schedule.") ||
      get_num_(ck, "every", &every, "checkpoint.") || get_num_(ck, "keep", &keep, "checkpoint.") ||
      get_num_(ck, "shard_bytes", &shard, "checkpoint."))
    return -1;
  const char *docs = get_str_(root, "documents");
  if (json_object_get(root, "documents") && (!docs || (strcmp(docs, "packed") && strcmp(docs, "separate"))))
    return fprintf(stderr, "fla-train: config: documents must be \"packed\" or \"separate\"\n"), -1;
  rc->opt.separate_documents = docs && !strcmp(docs, "separate");
  const char *kind = get_str_(sch, "kind");
  if (kind && strcmp(kind, "cosine") && strcmp(kind, "constant"))
    return fprintf(stderr, "fla-train: config: schedule.kind '%s' (cosine or constant)\n", kind), -1;
  if (!rc->ckpt_dir) rc->ckpt_dir = get_str_(ck, "dir");
  if (!rc->log_path) rc->log_path = get_str_(root, "log");
  if (!rc->device) rc->device = get_str_(root, "device");
  rc->dtype = get_str_(root, "dtype");
  rc->seq_len = (int64_t)seq;
  rc->opt.batch_size = (int64_t)batch;
  rc->opt.micro_batches = (int)micro;
  rc->opt.steps = (int64_t)steps;
  rc->opt.seed = (uint64_t)seed;
  rc->opt.adamw = (fla_adamw_options){(float)b1, (float)b2, (float)eps, (float)wd};
  rc->opt.clip_norm = clip;
  rc->opt.schedule = (fla_lr_schedule){kind && !strcmp(kind, "constant") ? FLA_LR_CONSTANT : FLA_LR_COSINE, lr,
                                       min_lr, (int64_t)warmup, (int64_t)steps};
  rc->ckpt_every = (int64_t)every;
  rc->keep = (int)keep;
  rc->shard_bytes = (int64_t)shard;
  rc->log_every = log_every < 1 ? 1 : (int64_t)log_every;
  rc->threads = (int)threads;
  if (!rc->model_config && !rc->init_from)
    return fprintf(stderr, "fla-train: config: give model_config (a path or an object) or init_from\n"), -1;
  if (rc->ndata == 0) return fprintf(stderr, "fla-train: config: no data (token files from fla-tokenize)\n"), -1;
  if (rc->seq_len < 1 || rc->opt.steps < 1)
    return fprintf(stderr, "fla-train: config: seq_len and steps must be >= 1\n"), -1;
  return 0;
}

/* Frees what parse_config_ allocated and removes an inline config's temporary file. */
static void free_config_(run_config *rc) {
  if (rc->model_config_tmp) unlink(rc->model_config);
  free(rc->model_config);
  for (int i = 0; i < rc->ndata; i++) free((void *)rc->data[i]);
  free(rc->data);
}

static void format_duration_(double s, char *buf, size_t n) {
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

static fla_status save_(fla_ctx *ctx, fla_trainer *tr, const run_config *rc) {
  char dir[4096];
  fla_status s = fla_trainer_save(tr, rc->ckpt_dir, rc->shard_bytes, dir, sizeof dir);
  if (s == FLA_OK && rc->keep > 0) s = fla_checkpoint_prune(ctx, rc->ckpt_dir, rc->keep);
  if (s == FLA_OK) fprintf(stderr, "fla-train: saved %s\n", dir);
  return s;
}

static void usage_(void) {
  fprintf(stderr, "usage: fla-train --config FILE [--resume] [--init-from DIR] [--steps N]\n"
                  "                 [--checkpoint-dir DIR] [--log FILE] [--threads N] [--stop-after N]\n");
}

int main(int argc, char **argv) {
  run_config rc = {0};
  const char *config_path = NULL;
  int resume = 0;
  int64_t steps_override = 0, stop_after = 0;
  int threads_override = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--config") && has) config_path = argv[++i];
    else if (!strcmp(a, "--resume")) resume = 1;
    else if (!strcmp(a, "--init-from") && has) rc.init_from = argv[++i];
    else if (!strcmp(a, "--steps") && has) steps_override = strtoll(argv[++i], NULL, 10);
    else if (!strcmp(a, "--checkpoint-dir") && has) rc.ckpt_dir = argv[++i];
    else if (!strcmp(a, "--log") && has) rc.log_path = argv[++i];
    else if (!strcmp(a, "--threads") && has) threads_override = atoi(argv[++i]);
    else if (!strcmp(a, "--stop-after") && has) stop_after = strtoll(argv[++i], NULL, 10);
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage_(), 0;
    else return usage_(), fprintf(stderr, "fla-train: unknown argument '%s'\n", a), 2;
  }
  if (!config_path) return usage_(), 2;
  json_error_t jerr;
  json_t *root = json_load_file(config_path, 0, &jerr);
  if (!root || !json_is_object(root)) {
    fprintf(stderr, "fla-train: %s: %s (line %d)\n", config_path, root ? "not a JSON object" : jerr.text, jerr.line);
    json_decref(root);
    return 2;
  }
  int bad = parse_config_(root, &rc);
  if (!bad && steps_override > 0) rc.opt.steps = rc.opt.schedule.total_steps = steps_override;
  if (threads_override >= 0) rc.threads = threads_override;
  int on_gpu = rc.device && !strcmp(rc.device, "cuda");
  if (!bad && rc.device && strcmp(rc.device, "cpu") != 0 && !on_gpu) {
    fprintf(stderr, "fla-train: device '%s' is not supported: \"cpu\" or \"cuda\"\n", rc.device);
    bad = 1;
  }
  if (!bad && rc.dtype && strcmp(rc.dtype, "bf16") && strcmp(rc.dtype, "f32")) {
    fprintf(stderr, "fla-train: dtype '%s': \"bf16\" or \"f32\" (the GPU's compute dtype)\n", rc.dtype);
    bad = 1;
  }
  if (!bad && resume && !rc.ckpt_dir) fprintf(stderr, "fla-train: --resume needs checkpoint.dir\n"), bad = 1;
  if (bad) {
    free_config_(&rc);
    json_decref(root);
    return 2;
  }

  fla_ctx *ctx = NULL;
  fla_model *model = NULL;
  fla_loader *ld = NULL;
  fla_trainer *tr = NULL;
  FILE *log = NULL;
  int exit_code = 1;
  char from[4096] = "";
  int64_t from_step = -1;
  fla_ctx *mctx = NULL; /* the model's: ctx (CPU: data, checkpoints) or a CUDA context */
  int dtype = rc.dtype && !strcmp(rc.dtype, "f32") ? FLA_F32 : FLA_BF16;
  fla_status s = fla_ctx_create(FLA_BACKEND_CPU, &ctx);
  if (s == FLA_OK && rc.threads > 0) s = fla_ctx_set_threads(ctx, rc.threads);
  if (s == FLA_OK && on_gpu) {
    char why[1024];
    if (fla_ctx_create_ex(FLA_BACKEND_CUDA, &mctx, why, sizeof why) != FLA_OK) {
      fprintf(stderr, "fla-train: device cuda: %s\n", why);
      goto done;
    }
  } else {
    mctx = ctx;
  }
  if (s == FLA_OK) s = fla_loader_open(ctx, rc.ndata, rc.data, rc.seq_len, rc.opt.seed, &ld);
  if (s == FLA_OK && resume) {
    if (fla_checkpoint_latest(ctx, rc.ckpt_dir, from, sizeof from, &from_step) != FLA_OK) {
      fprintf(stderr, "fla-train: no checkpoint in %s: starting from scratch\n", rc.ckpt_dir);
      from[0] = 0;
    }
  }
  const char *load_dir = from[0] ? from : rc.init_from;
  if (s == FLA_OK && load_dir) {
    s = fla_model_load_ex(mctx, load_dir, on_gpu ? dtype : -1, &model);
    if (s == FLA_OK) s = fla_model_enable_grad(model);
  } else if (s == FLA_OK) {
    s = fla_model_create_ex(mctx, rc.model_config, rc.opt.seed, dtype, &model);
  }
  if (s != FLA_OK && mctx != ctx) {
    fprintf(stderr, "fla-train: %s: %s\n", fla_errstr(s), fla_errmsg(mctx));
    goto done;
  }
  if (s == FLA_OK) s = fla_trainer_new(ctx, model, ld, &rc.opt, &tr);
  if (s == FLA_OK && from[0]) s = fla_trainer_restore(tr, from);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-train: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    if (mctx != ctx && fla_errmsg(mctx)[0]) fprintf(stderr, "fla-train: on the device: %s\n", fla_errmsg(mctx));
    goto done;
  }
  int64_t nparams_total = 0;
  for (int i = 0; i < fla_model_num_params(model); i++) {
    fla_param p;
    if (fla_model_param(model, i, &p) == FLA_OK) nparams_total += p.numel;
  }
  fprintf(stderr,
          "fla-train: %s model on the %s, %.2fM parameters, %s; data: %lld windows of %lld tokens; %lld steps of %lld x %d x "
          "%lld tokens\n",
          fla_model_type(model), on_gpu ? (dtype == FLA_BF16 ? "GPU (bf16)" : "GPU (f32)") : "CPU",
          (double)nparams_total / 1e6,
          from[0] ? "resumed" : rc.init_from ? "initialised from a checkpoint" : "fresh",
          (long long)fla_loader_num_windows(ld), (long long)rc.seq_len, (long long)rc.opt.steps,
          (long long)rc.opt.batch_size, rc.opt.micro_batches, (long long)rc.seq_len);
  if (from[0]) fprintf(stderr, "fla-train: resumed from %s (step %lld)\n", from, (long long)from_step);
  if (rc.log_path) {
    int csv = strlen(rc.log_path) > 4 && !strcmp(rc.log_path + strlen(rc.log_path) - 4, ".csv");
    int fresh = access(rc.log_path, F_OK) != 0 || !from[0];
    log = fopen(rc.log_path, fresh ? "w" : "a");
    if (!log) {
      perror(rc.log_path);
      goto done;
    }
    if (csv && fresh) fprintf(log, "step,loss,lr,grad_norm,tokens,tokens_per_s,elapsed_s,eta_s\n");
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal_;
  sa.sa_flags = SA_RESETHAND;  /* a second signal ends the process at once */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  int csv = log && strlen(rc.log_path) > 4 && !strcmp(rc.log_path + strlen(rc.log_path) - 4, ".csv");
  const int64_t start_step = fla_trainer_step_count(tr);
  const double t0 = now_s_();
  int64_t tokens_run = 0, last_saved = from[0] ? start_step : -1;
  exit_code = 0;
  while (fla_trainer_step_count(tr) < rc.opt.steps && !stop_requested_ &&
         (stop_after <= 0 || fla_trainer_step_count(tr) < start_step + stop_after)) {
    fla_step_stats st;
    s = fla_trainer_step(tr, &st);
    if (s != FLA_OK) {
      fprintf(stderr, "\nfla-train: step %lld: %s: %s\n", (long long)fla_trainer_step_count(tr) + 1, fla_errstr(s),
              fla_errmsg(ctx));
      exit_code = 1;
      break;
    }
    tokens_run += st.tokens;
    double elapsed = now_s_() - t0, per_step = elapsed / (double)(st.step - start_step);
    double tps = (double)tokens_run / elapsed, eta = per_step * (double)(rc.opt.steps - st.step);
    if (log) {
      if (csv)
        fprintf(log, "%lld,%.6f,%.6g,%.6g,%lld,%.1f,%.2f,%.1f\n", (long long)st.step, st.loss, st.lr, st.grad_norm,
                (long long)st.tokens, tps, elapsed, eta);
      else
        fprintf(log,
                "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens\": %lld, "
                "\"tokens_per_s\": %.1f, \"elapsed_s\": %.2f, \"eta_s\": %.1f}\n",
                (long long)st.step, st.loss, st.lr, st.grad_norm, (long long)st.tokens, tps, elapsed, eta);
      fflush(log);
    }
    if (st.step % rc.log_every == 0 || st.step == rc.opt.steps || st.step == start_step + 1) {
      char eta_s[32];
      format_duration_(eta, eta_s, sizeof eta_s);
      fprintf(stderr, "step %6lld/%lld | loss %.4f | lr %.2e | %7.0f tok/s | ETA %s\n", (long long)st.step,
              (long long)rc.opt.steps, st.loss, st.lr, tps, eta_s);
    }
    if (rc.ckpt_dir && rc.ckpt_every > 0 && st.step % rc.ckpt_every == 0 && !stop_requested_) {
      if ((s = save_(ctx, tr, &rc)) != FLA_OK) break;
      last_saved = st.step;
    }
  }
  if (s == FLA_OK && rc.ckpt_dir && last_saved != fla_trainer_step_count(tr) && fla_trainer_step_count(tr) > 0)
    s = save_(ctx, tr, &rc);
  if (s != FLA_OK && exit_code == 0) {
    fprintf(stderr, "fla-train: saving: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    exit_code = 1;
  }
  if (stop_requested_ && exit_code == 0) {
    fprintf(stderr, "fla-train: stopped by signal %d at step %lld\n", (int)stop_requested_,
            (long long)fla_trainer_step_count(tr));
    exit_code = 130;
  }
done:
  if (log) fclose(log);
  fla_trainer_free(tr);
  fla_model_free(model);
  fla_loader_free(ld);
  if (mctx != ctx) fla_ctx_free(mctx);
  fla_ctx_free(ctx);
  free_config_(&rc);
  json_decref(root);
  return exit_code;
}
