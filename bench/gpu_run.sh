#!/usr/bin/env bash
# bench/gpu_run.sh -- every GPU check and benchmark in one call, for the device
# machine. Run from the repository root with the build folder carried, and the
# conformance file copied into an ignored folder first (../shared does not
# travel to the device machine):
#
#   here:   cmake -S . -B build && cmake --build build -j2
#           mkdir -p .device/conformance && cp ../shared/conformance/ops.safetensors .device/conformance/
#   there:  bash bench/gpu_run.sh        (run tool: carry ["build", ".device"])
#
# Runs build/test_gpu_ops (every recipe's GPU forward and backward against the
# CPU), build/fla-check --device cuda on every conformance case (f32 and bf16,
# both algorithms; outputs and every gradient), and build/fla-bench --device
# cuda (forward, and forward+backward for T > 1) when it runs there. Full logs
# go to $OUT (or .device/out/ when OUT is unset); a short table comes last.
# Exit status: 0 when every part passed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-.device/out}
mkdir -p "$OUT"
BUILD=${BUILD:-build}
OPS=${OPS:-.device/conformance/ops.safetensors}
export FLA_CACHE_DIR=${FLA_CACHE_DIR:-/tmp/fla_modcache}
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-900}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true; } > "$OUT/device.txt"
DEVICE=$(head -n1 "$OUT/device.txt")

# 1. The GPU test suite.
t0=$(date +%s)
"$BUILD/test_gpu_ops" > "$OUT/test_gpu_ops.log" 2>&1
rc_ops=$?
t_ops=$(( $(date +%s) - t0 ))
# The portable stages (HIP's shared source, built for CUDA) against the CPU.
"$BUILD/test_gpu_portable" > "$OUT/test_gpu_portable.log" 2>&1
rc_port=$?

# 2. fla-check on every conformance case (case:recipe as in tests/test_conformance.c).
CASES="linear_attn:linear_attn retention:retention simple_gla:simple_gla gla:gla gla_long:gla
delta:delta_rule gdn:gated_delta_rule gdn_long:gated_delta_rule kda:kda"
rc_check=0
: > "$OUT/fla_check.log"
: > "$OUT/fla_check.rows"
if [ -f "$OPS" ]; then
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

# 3. fla-bench on the GPU: the shapes of shared/ANCHORS.md (forward and fwd+bwd, bf16).
timeout ${BENCH_TIMEOUT:-300} "$BUILD/fla-bench" --device cuda > "$OUT/fla_bench.log" 2>&1
rc_bench=$?

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
  echo
  echo "fla-check --device cuda (rc $rc_check): relative RMS vs the float64 references (grad: the worst gradient)"
  echo "| case        | recipe           | dt   | algo      | o         | ht        | grad              | result |"
  echo "|-------------|------------------|------|-----------|-----------|-----------|-------------------|--------|"
  cat "$OUT/fla_check.rows"
  echo
  echo "fla-bench --device cuda: rc $rc_bench (log: fla_bench.log)"
  cat "$OUT/fla_bench.log"
} | tee "$OUT/summary.txt"

[ $rc_ops -eq 0 ] && [ $rc_port -eq 0 ] && [ $rc_check -eq 0 ]
