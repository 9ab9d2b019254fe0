#!/usr/bin/env bash
# bench/gpu_run.sh -- every GPU check and benchmark in one call, for the device
# machine. Run from the repository root with the build folder carried, and the
# conformance file copied into an ignored folder first (../shared does not
# travel to the device machine):
#
#   here:   cmake -S . -B build && cmake --build build -j2
#           mkdir -p .device/shared && cp -r ../shared/conformance .device/shared/
#           (build/ is over the 64 MiB a call carries: strip the binaries below
#           into .device/bin and run with BUILD=.device/bin)
#   there:  bash bench/gpu_run.sh [checks] [bench]   (run tool: carry [".device"];
#           both parts when none is named: checks = the tests and fla-check,
#           bench = fla-bench and fla-model-bench)
#
# Runs test_gpu_ops (every recipe's GPU forward and backward against the CPU),
# test_gpu_portable (the HIP stages' shared source built for CUDA),
# test_gpu_models (every tiny fla checkpoint on the GPU, f32 and bf16),
# test_gpu_train (GPU gradients and AdamW steps against the CPU),
# test_gpu_attn (training's softmax attention against the CPU),
# test_gpu_gemv (decode's matrix-vector kernels against float64),
# fla-check --device cuda on every conformance case (f32 and bf16, both
# algorithms; outputs and every gradient), fla-bench --device cuda (every
# recipe's forward at the ANCHORS.md shapes, then forward+backward of
# retention, simple_gla, gla and gated_delta_rule) and fla-model-bench (GLA
# 1.3B decode and prefill) and train_gpu (GLA 340M training throughput,
# seq 2048). Full logs go to $OUT (or .device/out/ when OUT is
# unset); a short table comes last. Exit status: 0 when every check passed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-.device/out}
mkdir -p "$OUT"
BUILD=${BUILD:-build}
export FLA_SHARED_DIR=${FLA_SHARED_DIR:-$PWD/.device/shared}
OPS=${OPS:-$FLA_SHARED_DIR/conformance/ops.safetensors}
export FLA_RECIPE_PATH=$PWD/recipes   # the tree may not be where it was built
export FLA_CACHE_DIR=${FLA_CACHE_DIR:-/tmp/fla_modcache}
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-900}

STEPS=" ${*:-checks bench} "
want() { case "$STEPS" in *" $1 "*) return 0 ;; esac; return 1; }
# SKIP="portable check ..." leaves out parts of checks (ops portable models train
# attn gemv check) when the device time is short; what was left out is said at the end.
skip() { case " ${SKIP:-} " in *" $1 "*) echo "$1" >> "$OUT/skipped.txt"; return 0 ;; esac; return 1; }
: > "$OUT/skipped.txt"
rc_ops=0 rc_port=0 rc_models=0 rc_train=0 rc_attn=0 rc_gemv=0 rc_check=0 rc_bench=- rc_bench_bwd=- rc_mbench=- rc_tbench=-
t_ops=0 t_models=0 t_train=0
: > "$OUT/fla_check.rows"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true; } > "$OUT/device.txt"
DEVICE=$(head -n1 "$OUT/device.txt")

# cuBLAS (the models' products) is loaded with dlopen: point at it when ldconfig does not know it.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so'; then
  lib=$(ls /usr/local/cuda/lib64/libcublas.so.1[0-9]* 2>/dev/null | head -n1)
  [ -n "$lib" ] && export FLA_CUBLAS_LIBRARY=$lib
fi

if want checks; then
# 1. The GPU test suite.
t0=$(date +%s)
skip ops || "$BUILD/test_gpu_ops" > "$OUT/test_gpu_ops.log" 2>&1
rc_ops=$?
t_ops=$(( $(date +%s) - t0 ))
# The portable stages (HIP's shared source, built for CUDA) against the CPU.
skip portable || "$BUILD/test_gpu_portable" > "$OUT/test_gpu_portable.log" 2>&1
rc_port=$?
# The model layer on the GPU: every tiny checkpoint (needs $FLA_SHARED_DIR).
t0=$(date +%s)
skip models || "$BUILD/test_gpu_models" > "$OUT/test_gpu_models.log" 2>&1
rc_models=$?
t_models=$(( $(date +%s) - t0 ))
# Training on the GPU: gradients, micro-batches, AdamW against the CPU.
t0=$(date +%s)
skip train || "$BUILD/test_gpu_train" > "$OUT/test_gpu_train.log" 2>&1
rc_train=$?
t_train=$(( $(date +%s) - t0 ))
# Softmax attention for training (Transformer, hybrids) against the CPU.
skip attn || "$BUILD/test_gpu_attn" > "$OUT/test_gpu_attn.log" 2>&1
rc_attn=$?
# The decode matrix-vector kernels against a float64 product.
skip gemv || "$BUILD/test_gpu_gemv" > "$OUT/test_gpu_gemv.log" 2>&1
rc_gemv=$?

# 2. fla-check on every conformance case (case:recipe as in tests/test_conformance.c).
CASES="linear_attn:linear_attn retention:retention simple_gla:simple_gla gla:gla gla_long:gla
delta:delta_rule gdn:gated_delta_rule gdn_long:gated_delta_rule kda:kda"
rc_check=0
: > "$OUT/fla_check.log"
if skip check; then :; elif [ -f "$OPS" ]; then
  for pair in $CASES; do
    cs=${pair%%:*}; recipe=${pair##*:}
    for dt in f32 bf16; do
      echo "== fla-check $recipe $cs --device cuda --dtype $dt" >> "$OUT/fla_check.log"
      out=$("$BUILD/fla-check" "$recipe" "$OPS" "$cs" --device cuda --dtype "$dt" 2>&1)
      rc=$?
      echo "$out" >> "$OUT/fla_check.log"
      echo "rc=$rc" >> "$OUT/fla_check.log"
      [ $rc -ne 0 ] && rc_check=1
      # one row per (case, dtype, algo): o and ht errors, the worst gradient
      for algo in chunk recurrent; do
        o=$(echo "$out" | awk -v a=$algo '$1==a && $2=="o" {print $4}')
        h=$(echo "$out" | awk -v a=$algo '$1==a && $2=="ht" {print $4}')
        gw=$(echo "$out" | awk -v a=$algo '$1==a && $2 ~ /^d/ {if ($4+0 >= m+0) {m=$4; n=$2}} END {if (n) print m " (" n ")"}')
        bad=$(echo "$out" | awk -v a=$algo '$1==a && /FAIL/' | wc -l)
        res=ok; [ "$bad" -gt 0 ] && res=FAIL; [ -z "$o" ] && res="error (rc $rc)"
        printf '| %-11s | %-16s | %-4s | %-9s | %-9s | %-9s | %-17s | %s |\n' "$cs" "$recipe" "$dt" "$algo" \
          "${o:--}" "${h:--}" "${gw:--}" "$res" >> "$OUT/fla_check.rows"
      done
    done
  done
else
  echo "no conformance file at $OPS (copy ../shared/conformance/ops.safetensors there and carry it)" \
    | tee "$OUT/fla_check.log"
  rc_check=2
fi

fi

if want bench; then
# 3. fla-bench on the GPU: the shapes of shared/ANCHORS.md, bf16: every recipe's
# forward, then forward+backward of the recipes ANCHORS.md times (the gated ones'
# backward is the recurrent stage's, slow: measured, not compared).
FLA_BENCH_NO_BWD=1 timeout ${BENCH_TIMEOUT:-300} "$BUILD/fla-bench" --device cuda > "$OUT/fla_bench.log" 2>&1
rc_bench=$?
timeout ${BENCH_TIMEOUT:-300} "$BUILD/fla-bench" --device cuda --recipe retention --recipe simple_gla \
  --recipe gla --recipe gated_delta_rule > "$OUT/fla_bench_bwd.log" 2>&1
rc_bench_bwd=$?
# 4. A GLA with fla's 1.3B configuration (random bf16 weights): decode and prefill.
timeout ${MODEL_BENCH_TIMEOUT:-200} "$BUILD/fla-model-bench" --config bench/configs/gla-1.3b.json \
  --dtype bf16 --prompt-len 4096 --runs 3 --batch 1,8,64 --decode-steps 128 > "$OUT/model_bench.log" 2>&1
rc_mbench=$?
# 5. Training throughput: GLA with fla's 340M configuration, seq 2048, bf16.
: > "$OUT/train_bench.log"
rc_tbench=0
for b in 8 16; do
  echo "== train_gpu --batch $b" >> "$OUT/train_bench.log"
  timeout ${TRAIN_BENCH_TIMEOUT:-120} "$BUILD/train_gpu" --config bench/configs/gla-340m.json --batch $b \
    --seq 2048 --steps 4 >> "$OUT/train_bench.log" 2>&1 || rc_tbench=$?
done
echo "== train_gpu --batch 8 --profile" >> "$OUT/train_bench.log"
timeout ${TRAIN_BENCH_TIMEOUT:-120} "$BUILD/train_gpu" --config bench/configs/gla-340m.json --batch 8 \
  --seq 2048 --steps 2 --profile >> "$OUT/train_bench.log" 2>&1 || rc_tbench=$?

fi

# The table.
{
  echo
  echo "=================== GPU run: ${DEVICE:-unknown device} ==================="
  echo "test_gpu_ops (rc $rc_ops, ${t_ops} s): $(grep -E '^[0-9]+%: Checks' "$OUT/test_gpu_ops.log" | tail -n1)"
  grep -E '^(test_gpu_ops: |warm-up: )' "$OUT/test_gpu_ops.log" | head -n 3
  grep -E '^gpu_ops: ' "$OUT/test_gpu_ops.log"
  grep -E '^gpu_ops_bwd: ' "$OUT/test_gpu_ops.log"
  grep -E ':[A-Z]:|FAIL' "$OUT/test_gpu_ops.log" | grep -v '^  ' | head -n 20
  echo "test_gpu_portable (rc $rc_port): $(grep -E '^[0-9]+%: Checks' "$OUT/test_gpu_portable.log" | tail -n1)"
  grep -E ':[A-Z]:|FAIL' "$OUT/test_gpu_portable.log" | head -n 10
  echo "test_gpu_models (rc $rc_models, ${t_models} s): $(grep -E '^[0-9]+%: Checks' "$OUT/test_gpu_models.log" | tail -n1)"
  grep -E ':[A-Z]:|FAIL' "$OUT/test_gpu_models.log" | head -n 10
  echo "test_gpu_train (rc $rc_train, ${t_train} s): $(grep -E '^[0-9]+%: Checks' "$OUT/test_gpu_train.log" | tail -n1)"
  grep -E '^test_gpu_train: ' "$OUT/test_gpu_train.log" | head -n 20
  grep -E ':[A-Z]:|FAIL' "$OUT/test_gpu_train.log" | head -n 10
  echo "test_gpu_attn (rc $rc_attn): $(grep -E '^[0-9]+%: Checks' "$OUT/test_gpu_attn.log" 2>/dev/null | tail -n1)"
  grep -E ':[A-Z]:|FAIL' "$OUT/test_gpu_attn.log" 2>/dev/null | head -n 10
  echo "test_gpu_gemv (rc $rc_gemv): $(grep -E '^[0-9]+%: Checks' "$OUT/test_gpu_gemv.log" 2>/dev/null | tail -n1)"
  grep -E ':[A-Z]:|FAIL' "$OUT/test_gpu_gemv.log" 2>/dev/null | head -n 10
  [ -s "$OUT/skipped.txt" ] && echo "left out (SKIP): $(tr '\n' ' ' < "$OUT/skipped.txt")"
  echo
  echo "fla-check --device cuda (rc $rc_check): relative RMS vs the float64 references (grad: the worst gradient)"
  echo "| case        | recipe           | dt   | algo      | o         | ht        | grad              | result |"
  echo "|-------------|------------------|------|-----------|-----------|-----------|-------------------|--------|"
  cat "$OUT/fla_check.rows"
  echo
  echo "fla-bench --device cuda, forward: rc $rc_bench (log: fla_bench.log)"
  grep '^|' "$OUT/fla_bench.log"
  echo "fla-bench --device cuda, forward+backward: rc $rc_bench_bwd (log: fla_bench_bwd.log)"
  grep '^|' "$OUT/fla_bench_bwd.log"
  echo "fla-model-bench, GLA 1.3B bf16: rc $rc_mbench (log: model_bench.log)"
  tail -n 25 "$OUT/model_bench.log"
  echo "train_gpu, GLA 340M bf16 seq 2048: rc $rc_tbench (log: train_bench.log)"
  grep -E '^==|median step|memory:|^train_gpu:   [a-z]' "$OUT/train_bench.log" | head -n 30
} 2>/dev/null | tee "$OUT/summary.txt"   # logs of parts not run are simply absent

[ $rc_ops -eq 0 ] && [ $rc_port -eq 0 ] && [ $rc_models -eq 0 ] && [ $rc_train -eq 0 ] && [ $rc_attn -eq 0 ] && [ $rc_gemv -eq 0 ] &&
  [ $rc_check -eq 0 ]
