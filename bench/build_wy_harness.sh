#!/bin/sh
# Builds bench/wy_harness (the chunk_wy_fwd stage's standalone GPU harness) with
# gcc, outside the CMake build: the harness, the stage, and the runtime pieces it
# needs (contexts, threads, the float64 recurrence, NVRTC and driver loaders).
# Output: build-chunk/wy_harness. Run it from the repository root.
set -e
cd "$(dirname "$0")/.."
mkdir -p build-chunk
${CC:-gcc} -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -Iinclude -Iruntime -Igen -Ibench \
  bench/wy_harness.c bench/harness_common.c gen/generate.c gen/stage_*.c runtime/feature.c \
  runtime/threads.c runtime/rtc_log.c \
  runtime/cpu/recurrent.c runtime/cpu/core_common.c runtime/cuda/nvrtc.c runtime/cuda/cuda_api.c \
  -ldl -lpthread -lm -o build-chunk/wy_harness
echo built build-chunk/wy_harness
