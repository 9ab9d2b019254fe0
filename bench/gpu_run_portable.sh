#!/usr/bin/env bash
# bench/gpu_run_portable.sh -- the GPU check of every portable stage (HIP's
# shared source built for CUDA) against the CPU, then the CUDA op suite; run as
# .dev-hip/run.sh for bench/results/2026-11-23-h100-portable.md, with stripped
# test_gpu_portable and test_gpu_ops in .dev-hip/bin (the recipes and the
# shipped tuning database are embedded in them). Logs go to $OUT.
set -u
cd "$(dirname "$0")/.."
B=.dev-hip/bin
OUT=${OUT:-.dev-hip/out}; mkdir -p "$OUT"
export FLA_CACHE_DIR=/tmp/fla_mc_hip CK_DEFAULT_TIMEOUT=900
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
ls recipes | head -3 > "$OUT/recipes.txt"
t0=$(date +%s)
timeout 330 $B/test_gpu_portable > "$OUT/test_gpu_portable.log" 2>&1; rc1=$?
t1=$(date +%s)
timeout 200 $B/test_gpu_ops > "$OUT/test_gpu_ops.log" 2>&1; rc2=$?
t2=$(date +%s)
cat "$OUT/device.txt"
echo "test_gpu_portable rc=$rc1 $((t1-t0)) s"; grep -E "FAIL|^test_gpu_portable|Checks|:[0-9]+:[EF]:" "$OUT/test_gpu_portable.log" | head -60
echo "test_gpu_ops rc=$rc2 $((t2-t1)) s"; grep -E "Checks|:[0-9]+:[EF]:|FAIL" "$OUT/test_gpu_ops.log" | head -20
