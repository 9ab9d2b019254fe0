/*
** threads.c -- a small parallel-for over an index range with POSIX threads.
** Work is handed out one index at a time from a shared counter, so uneven
** items (sequences of different lengths) balance themselves.
*/
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
  int (*fn)(void *arg, int64_t i);
  void *arg;
  int64_t count;
  atomic_llong next;
  atomic_int result;
} parallel_job;

static void *parallel_worker_(void *p) {
  parallel_job *job = p;
  for (;;) {
    int64_t i = atomic_fetch_add(&job->next, 1);
    if (i >= job->count || atomic_load(&job->result) != 0) break;
    int rc = job->fn(job->arg, i);
    if (rc != 0) {
      int expected = 0;
      atomic_compare_exchange_strong(&job->result, &expected, rc);
    }
  }
  return NULL;
}

int fla_ctx_threads(const fla_ctx *ctx) {
  if (ctx && ctx->nthreads > 0) return ctx->nthreads;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int fla_parallel_for(int nthreads, int64_t count, int (*fn)(void *, int64_t), void *arg) {
  parallel_job job = {.fn = fn, .arg = arg, .count = count};
  atomic_init(&job.next, 0);
  atomic_init(&job.result, 0);
  if (nthreads > count) nthreads = (int)count;
  if (nthreads < 1) nthreads = 1;
  pthread_t *tids = NULL;
  int started = 0;
  if (nthreads > 1) {
    tids = malloc(sizeof *tids * (size_t)(nthreads - 1));
    if (tids)
      for (; started < nthreads - 1; started++)
        if (pthread_create(&tids[started], NULL, parallel_worker_, &job) != 0) break;
  }
  parallel_worker_(&job);
  for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
  free(tids);
  return atomic_load(&job.result);
}
