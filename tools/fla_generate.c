/*
** fla-generate -- text generation with an fla checkpoint, on the CPU or a GPU.
**
**   fla-generate --model DIR (--prompt TEXT | --prompt-ids 5,17,...) [options]
**   fla-generate --random-weights --config FILE --prompt-ids ... [options]
**
** Streams the generated text (or ids) to stdout as tokens come, then prints the
** prefill and decode speed to stderr. Options:
**   --max-new-tokens N   tokens to generate (default 64)
**   --greedy             always the most likely token (default: sampling)
**   --temperature X      (default 1.0)   --top-k N (default 0: off)
**   --top-p X            (default 1.0: off)   --seed N (default 0)
**   --stop ID[,ID...]    stop tokens (default: the config's eos_token_id;
**                        --stop none for none)
**   --tokenizer PATH     a tokenizer.json (default DIR/tokenizer.json, else
**                        bytes when the vocabulary has 256 entries)
**   --print-ids          print the generated ids on one line, comma-separated,
**                        instead of text (for scripts)
**   --threads N          CPU threads of the token mixers (default: all)
**   --device cpu|cuda    where the model runs (default cpu)
**   --dtype f32|bf16     the GPU's precision (default: the checkpoint's)
**   --random-weights     no checkpoint: the architecture of --config FILE (a
**   --config FILE        config.json) with weights drawn from --seed
** Exit status: 0 on success, 1 when generation failed, 2 for bad arguments.
*/
#include "fla.h"
#include "../models/tokenizer.h" /* internal to the library: tools see runtime/ and gen/ only */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage_(void) {
  fprintf(stderr,
          "usage: fla-generate --model DIR (--prompt TEXT | --prompt-ids 5,17,...)\n"
          "                    [--max-new-tokens N] [--greedy] [--temperature X] [--top-k N]\n"
          "                    [--top-p X] [--seed N] [--stop ID,...|none] [--tokenizer PATH]\n"
          "                    [--print-ids] [--threads N] [--device cpu|cuda] [--dtype f32|bf16]\n"
          "       fla-generate --random-weights --config FILE --prompt-ids ... [options]\n");
}

/* "5,17,3" -> ids (malloc'd); -1 on a malformed list. */
static int64_t parse_ids_(const char *s, int32_t **out) {
  int64_t n = 0, cap = 16;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
  while (ids && *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
      free(ids);
      return -1;
    }
    if (n == cap) {
      int32_t *grown = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
      if (!grown) {
        free(ids);
        return -1;
      }
      ids = grown;
    }
    ids[n++] = (int32_t)v;
    s = *end ? end + 1 : end;
  }
  *out = ids;
  return ids ? n : -1;
}

typedef struct {
  fla_ctx *ctx;
  fla_tokenizer *tok;
  int print_ids, count;
} stream_state;

/* Writes each token as it comes: its bytes (a character split over tokens
** comes out whole once both are written), or its id. */
static int on_token_(void *user, int seq, int32_t token) {
  stream_state *st = user;
  (void)seq;
  if (st->print_ids) {
    printf("%s%d", st->count ? "," : "", token);
  } else if (st->tok) {
    char *bytes;
    size_t len;
    if (fla_tokenizer_decode_bytes(st->ctx, st->tok, &token, 1, &bytes, &len) == FLA_OK) {
      fwrite(bytes, 1, len, stdout);
      free(bytes);
    }
  }
  st->count++;
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  const char *model_dir = NULL, *prompt = NULL, *prompt_ids = NULL, *tok_path = NULL, *stop = NULL;
  const char *device = "cpu", *dtype = NULL, *config = NULL;
  int max_new = 64, print_ids = 0, threads = 0, random_weights = 0;
  fla_sampling samp = {0};
  samp.temperature = 1.0f;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--greedy")) samp.greedy = 1;
    else if (!strcmp(a, "--print-ids")) print_ids = 1;
    else if (!strcmp(a, "--random-weights")) random_weights = 1;
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage_();
      return 0;
    } else if (!v) {
      fprintf(stderr, "fla-generate: %s needs a value\n", a);
      usage_();
      return 2;
    } else {
      i++;
      if (!strcmp(a, "--model")) model_dir = v;
      else if (!strcmp(a, "--prompt")) prompt = v;
      else if (!strcmp(a, "--prompt-ids")) prompt_ids = v;
      else if (!strcmp(a, "--tokenizer")) tok_path = v;
      else if (!strcmp(a, "--stop")) stop = v;
      else if (!strcmp(a, "--max-new-tokens")) max_new = atoi(v);
      else if (!strcmp(a, "--temperature")) samp.temperature = (float)atof(v);
      else if (!strcmp(a, "--top-k")) samp.top_k = atoi(v);
      else if (!strcmp(a, "--top-p")) samp.top_p = (float)atof(v);
      else if (!strcmp(a, "--seed")) samp.seed = strtoull(v, NULL, 10);
      else if (!strcmp(a, "--threads")) threads = atoi(v);
      else if (!strcmp(a, "--device")) device = v;
      else if (!strcmp(a, "--dtype")) dtype = v;
      else if (!strcmp(a, "--config")) config = v;
      else {
        fprintf(stderr, "fla-generate: unknown option %s\n", a);
        usage_();
        return 2;
      }
    }
  }
  int cuda = !strcmp(device, "cuda");
  int dt = !dtype ? -1 : !strcmp(dtype, "bf16") ? FLA_BF16 : !strcmp(dtype, "f32") ? FLA_F32 : -2;
  if ((random_weights ? !config || model_dir : !model_dir) || (!prompt == !prompt_ids) || max_new < 1 ||
      (!cuda && strcmp(device, "cpu")) || dt == -2) {
    fprintf(stderr, "fla-generate: give --model (or --random-weights --config FILE) and exactly one of --prompt, "
                    "--prompt-ids; --max-new-tokens >= 1; --device cpu or cuda; --dtype f32 or bf16\n");
    usage_();
    return 2;
  }
  if (random_weights) model_dir = "."; /* only for the tokenizer guess */
  fla_ctx *ctx;
  char why[1024] = "";
  if (fla_ctx_create_ex(cuda ? FLA_BACKEND_CUDA : FLA_BACKEND_CPU, &ctx, why, sizeof why) != FLA_OK) {
    fprintf(stderr, "fla-generate: cannot create a %s context: %s\n", device, why);
    return 1;
  }
  if (threads > 0) fla_ctx_set_threads(ctx, threads);
  int rc = 1;
  fla_model *m = NULL;
  fla_tokenizer *tok = NULL;
  int32_t *ids = NULL, *out = NULL, *stops = NULL;
  int64_t n = 0, nstop = 0;
  fla_status s = random_weights ? fla_model_load_random(ctx, config, samp.seed, dt, &m)
                                : fla_model_load_ex(ctx, model_dir, dt, &m);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-generate: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    goto done;
  }
  /* the tokenizer: --tokenizer, DIR/tokenizer.json, or bytes for a 256-entry vocabulary */
  char guess[4096];
  snprintf(guess, sizeof guess, "%s/tokenizer.json", model_dir);
  struct stat sb;
  if (!tok_path && stat(guess, &sb) == 0) tok_path = guess;
  if (tok_path) s = fla_tokenizer_load(ctx, tok_path, &tok);
  else if (fla_model_vocab_size(m) == 256) s = fla_tokenizer_bytes(ctx, &tok);
  else if (prompt) {
    fprintf(stderr, "fla-generate: no tokenizer.json in %s: give --tokenizer or --prompt-ids\n", model_dir);
    goto done;
  }
  if (s != FLA_OK) {
    fprintf(stderr, "fla-generate: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    goto done;
  }
  if (prompt) {
    size_t nn;
    if ((s = fla_tokenizer_encode(ctx, tok, prompt, strlen(prompt), &ids, &nn)) != FLA_OK) {
      fprintf(stderr, "fla-generate: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
      goto done;
    }
    n = (int64_t)nn;
  } else if ((n = parse_ids_(prompt_ids, &ids)) < 0) {
    fprintf(stderr, "fla-generate: --prompt-ids: not a comma-separated list of ids: %s\n", prompt_ids);
    rc = 2;
    goto done;
  }
  if (n < 1) {
    fprintf(stderr, "fla-generate: the prompt has no tokens\n");
    rc = 2;
    goto done;
  }
  if (stop && strcmp(stop, "none")) {
    if ((nstop = parse_ids_(stop, &stops)) < 0) {
      fprintf(stderr, "fla-generate: --stop: not a comma-separated list of ids: %s\n", stop);
      rc = 2;
      goto done;
    }
  } else if (!stop && fla_model_eos_token(m) >= 0) {
    stops = malloc(sizeof(int32_t));
    if (stops) {
      stops[0] = fla_model_eos_token(m);
      nstop = 1;
    }
  }
  out = malloc(sizeof(int32_t) * (size_t)max_new);
  if (!out) goto done;
  stream_state st = {ctx, tok, print_ids, 0};
  fla_generate_options opt = {0};
  opt.max_new_tokens = max_new;
  opt.sampling = samp;
  opt.stop_ids = stops;
  opt.num_stop_ids = (int)nstop;
  opt.on_token = on_token_;
  opt.user = &st;
  fla_generate_stats stats;
  int64_t out_len = 0;
  const int32_t *prompts[1] = {ids};
  int32_t *outs[1] = {out};
  s = fla_model_generate(m, 1, prompts, &n, &opt, outs, &out_len, &stats);
  printf("\n");
  fflush(stdout);
  if (s != FLA_OK) {
    fprintf(stderr, "fla-generate: %s: %s\n", fla_errstr(s), fla_errmsg(ctx));
    goto done;
  }
  fprintf(stderr, "fla-generate: %s, prefill %lld tokens in %.3f s (%.1f tokens/s), decode %lld tokens in %.3f s (%.1f tokens/s)\n",
          fla_model_type(m), (long long)stats.prefill_tokens, stats.prefill_s,
          stats.prefill_s > 0 ? stats.prefill_tokens / stats.prefill_s : 0.0, (long long)stats.decode_tokens,
          stats.decode_s, stats.decode_s > 0 ? stats.decode_tokens / stats.decode_s : 0.0);
  rc = 0;
done:
  free(ids);
  free(out);
  free(stops);
  fla_tokenizer_free(tok);
  fla_model_free(m);
  fla_ctx_free(ctx);
  return rc;
}
