/*
** fuzz_safetensors.c -- a libFuzzer target for the safetensors reader.
**
** Not part of the CMake build (it needs clang and its own main). Build and
** run from the source root with:
**
**   clang -std=c11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
**     -Iinclude -Iruntime runtime/core.c runtime/tensor.c \
**     runtime/safetensors.c tests/fuzz_safetensors.c \
**     /usr/lib/x86_64-linux-gnu/libjansson.a -lm -o /tmp/fuzz_safetensors
**   mkdir -p /tmp/st_corpus   # add a seed: any safetensors file under max_len
**   /tmp/fuzz_safetensors /tmp/st_corpus -max_len=4096 -max_total_time=300
**
** A seed of a few hundred bytes (a handful of small tensors, as written by
** fla_safetensors_save) gets the fuzzer past the framing quickly; it also
** finds its way from an empty corpus. The target asserts what the reader
** promises: a buffer opens as FLA_OK or FLA_FORMAT, and every tensor of a
** file that opens loads as FLA_OK or FLA_UNSUPPORTED. Anything else, a crash,
** or a sanitizer report is a bug.
*/
#include <stdint.h>
#include <stdlib.h>

#include "fla.h"

static void load_all(fla_ctx *ctx, const fla_safetensors *st) {
  for (int i = 0; i < fla_safetensors_count(st); i++) {
    const char *name = fla_safetensors_name(st, i);
    for (int k = 0; k < 2; k++) {
      fla_tensor *t = NULL;
      fla_status s = fla_safetensors_load(ctx, st, name, k == 0 ? -1 : FLA_F32, &t);
      if (s != FLA_OK && s != FLA_UNSUPPORTED) abort();
      fla_tensor_free(t);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fla_ctx *ctx = NULL;
  if (fla_ctx_create(FLA_BACKEND_CPU, &ctx) != FLA_OK) abort();
  fla_safetensors *st = NULL;
  fla_status s = fla_safetensors_open_buffer(ctx, data, size, &st);
  if (s == FLA_OK)
    load_all(ctx, st);
  else if (s != FLA_FORMAT)
    abort();
  fla_safetensors_free(st);
  fla_ctx_free(ctx);
  return 0;
}
