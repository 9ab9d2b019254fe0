/*
** generate.c -- choosing tokens from logits, and the generation loop: prefill
** each prompt into its own cache slot (chunked kernels), then decode all
** running sequences together one token per step (the recurrent step).
*/
#include "internal.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* splitmix64: a full-period stream from any seed, cheap and good enough here. */
static uint64_t next_u64_(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double uniform_(uint64_t *s) { return (double)(next_u64_(s) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t fla_sampling_stream(uint64_t seed, int i) {
  uint64_t s = seed ^ (0x632be59bd9b4e019ull * (uint64_t)(i + 1));
  return next_u64_(&s);
}

static int32_t argmax_(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

typedef struct { float p; int32_t id; } cand;

static int by_prob_desc_(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->p != y->p) return x->p < y->p ? 1 : -1;
  return x->id - y->id;
}

/* Softmax of logits / temperature, cut to the top_k most likely, then to the
** smallest prefix whose mass reaches top_p, renormalised; one draw from it. */
int32_t fla_sample(const float *logits, int vocab, const fla_sampling *s, uint64_t *rng) {
  if (!s || s->greedy || s->temperature <= 0 || vocab <= 1) return argmax_(logits, vocab);
  cand *c = malloc(sizeof(cand) * (size_t)vocab);
  if (!c) return argmax_(logits, vocab);
  float mx = logits[argmax_(logits, vocab)];
  for (int i = 0; i < vocab; i++) {
    c[i].id = i;
    c[i].p = (float)exp((logits[i] - mx) / s->temperature);
  }
  qsort(c, (size_t)vocab, sizeof(cand), by_prob_desc_);
  int n = vocab;
  if (s->top_k > 0 && s->top_k < n) n = s->top_k;
  if (s->top_p > 0 && s->top_p < 1) { /* of the distribution left after top-k, as HF */
    double kept = 0, acc = 0;
    for (int i = 0; i < n; i++) kept += c[i].p;
    int keep = 0;
    while (keep < n && acc < s->top_p * kept) acc += c[keep++].p;
    n = keep > 0 ? keep : 1;
  }
  double mass = 0;
  for (int i = 0; i < n; i++) mass += c[i].p;
  double u = uniform_(rng) * mass, acc = 0;
  int32_t id = c[n - 1].id;
  for (int i = 0; i < n; i++) {
    acc += c[i].p;
    if (u < acc) {
      id = c[i].id;
      break;
    }
  }
  free(c);
  return id;
}

static double now_s_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_stop_(const fla_generate_options *o, int32_t id) {
  for (int i = 0; i < o->num_stop_ids; i++)
    if (o->stop_ids[i] == id) return 1;
  return 0;
}

fla_status fla_model_generate(fla_model *m, int num_prompts, const int32_t *const *prompts,
                              const int64_t *prompt_lens, const fla_generate_options *opt,
                              int32_t *const *out_ids, int64_t *out_lens,
                              fla_generate_stats *stats) {
  if (!m || !prompts || !prompt_lens || !opt || !out_ids || !out_lens || num_prompts < 1)
    return fla_set_error(m ? m->ctx : NULL, FLA_INVALID, "fla_model_generate: NULL argument or no prompt");
  if (opt->max_new_tokens < 1)
    return fla_set_error(m->ctx, FLA_INVALID, "fla_model_generate: max_new_tokens %d < 1", opt->max_new_tokens);
  for (int i = 0; i < num_prompts; i++)
    if (!prompts[i] || prompt_lens[i] < 1)
      return fla_set_error(m->ctx, FLA_INVALID, "fla_model_generate: prompt %d is empty", i);
  int N = num_prompts, Vb = m->cfg.vocab_size;
  fla_generate_stats st = {0};
  fla_cache *c;
  fla_status s = fla_cache_new(m, N, &c);
  if (s != FLA_OK) return s;
  float *logits = model_alloc(m->ctx, (int64_t)N * Vb);
  int32_t *next = malloc(sizeof(int32_t) * (size_t)N);
  uint64_t *rng = malloc(sizeof(uint64_t) * (size_t)N);
  unsigned char *done = calloc((size_t)N, 1);
  if (!logits || !next || !rng || !done) {
    s = fla_set_error(m->ctx, FLA_NOMEM, "out of memory");
    goto out;
  }
  int running = N, stop_all = 0;
  double t0 = now_s_();
  for (int i = 0; i < N; i++) {
    out_lens[i] = 0;
    rng[i] = fla_sampling_stream(opt->sampling.seed, i);
    if ((s = fla_model_prefill(m, c, i, prompts[i], prompt_lens[i], NULL, logits + (int64_t)i * Vb))) goto out;
    st.prefill_tokens += prompt_lens[i];
  }
  st.prefill_s = now_s_() - t0;
  t0 = now_s_();
  for (int step = 0; running > 0 && !stop_all; step++) {
    for (int i = 0; i < N; i++) {
      if (done[i]) {
        next[i] = 0; /* the slot still steps with the others; its output is ignored */
        continue;
      }
      next[i] = fla_sample(logits + (int64_t)i * Vb, Vb, &opt->sampling, &rng[i]);
      out_ids[i][out_lens[i]++] = next[i];
      if (opt->on_token && opt->on_token(opt->user, i, next[i])) stop_all = 1;
      if (is_stop_(opt, next[i]) || out_lens[i] >= opt->max_new_tokens) {
        done[i] = 1;
        running--;
      }
    }
    if (running == 0 || stop_all) break;
    if ((s = fla_model_decode(m, c, next, logits))) goto out;
    st.decode_tokens += running;
  }
  st.decode_s = now_s_() - t0;
out:
  if (stats) *stats = st;
  free(logits);
  free(next);
  free(rng);
  free(done);
  fla_cache_free(c);
  return s;
}
