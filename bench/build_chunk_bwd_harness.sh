#!/bin/sh
# Builds build/chunk_bwd_harness (the chunk_bwd stage's standalone GPU harness)
# with gcc, outside the CMake build: the harness, the generator and its stages
# (templates are read from templates/ at run time), and the runtime pieces it
# needs (threads, the float64 recurrence, NVRTC and driver loaders). Needs no
# library dependency but libdl/libpthread/libm. Run the binary from the
# repository root: build/chunk_bwd_harness --check | --bench | --compile-only
set -e
cd "$(dirname "$0")/.."
mkdir -p build
${CC:-gcc} -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -Iinclude -Iruntime -Igen -Ibench \
  bench/chunk_bwd_harness.c bench/harness_common.c runtime/rtc_log.c gen/generate.c gen/stage_*.c runtime/feature.c runtime/threads.c \
  runtime/cpu/recurrent.c runtime/cpu/core_common.c runtime/cuda/nvrtc.c runtime/cuda/cuda_api.c \
  -ldl -lpthread -lm -o build/chunk_bwd_harness
echo built build/chunk_bwd_harness
