/*
** train_step.c -- seconds and tokens/s of fla_model_loss_backward on the CPU
** for a model created from a config.json (random ids and targets).
**
**   cc -O2 -Iinclude bench/train_step.c build/libfla.a \
**      /usr/lib/x86_64-linux-gnu/libluajit-5.1.a /usr/lib/x86_64-linux-gnu/libjansson.a \
**      /usr/lib/x86_64-linux-gnu/libsqlite3.a -lopenblas -lm -ldl -lpthread -o build/train-step
**   build/train-step CONFIG B T [threads] [steps] [recompute]
*/
#include "fla.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s CONFIG B T [threads] [steps] [recompute]\n", argv[0]);
    return 2;
  }
  int B = atoi(argv[2]), T = atoi(argv[3]), threads = argc > 4 ? atoi(argv[4]) : 0;
  int steps = argc > 5 ? atoi(argv[5]) : 6, recompute = argc > 6 ? atoi(argv[6]) : 0;
  fla_ctx *ctx;
  fla_model *m;
  if (fla_ctx_create(FLA_BACKEND_CPU, &ctx) || fla_ctx_set_threads(ctx, threads) ||
      fla_model_create(ctx, argv[1], 1, &m) || fla_model_set_recompute(m, recompute)) {
    fprintf(stderr, "%s\n", fla_errmsg(ctx));
    return 1;
  }
  int V = fla_model_vocab_size(m);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *tg = malloc(sizeof(int32_t) * (size_t)B * T);
  srand(1);
  for (int i = 0; i < B * T; i++) {
    ids[i] = rand() % V;
    tg[i] = rand() % V;
  }
  for (int i = 0; i < steps; i++) {
    double loss, t0 = now_();
    int64_t n;
    if (fla_model_loss_backward(m, ids, tg, B, T, 1.0f / (float)(B * T), &loss, &n)) {
      fprintf(stderr, "%s\n", fla_errmsg(ctx));
      return 1;
    }
    double dt = now_() - t0;
    printf("step %d: %.3f s, %.0f tokens/s, loss %.4f\n", i, dt, B * T / dt, loss / (double)n);
  }
  free(ids);
  free(tg);
  fla_model_free(m);
  fla_ctx_free(ctx);
  return 0;
}
