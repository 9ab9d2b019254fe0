#!/usr/bin/env bash
# bench/tune_run.sh -- issue 4 on the device machine: the tuner end to end,
# cold and warm start, the full default sweep that becomes the shipped
# database, and fla-bench with the tuned configurations.
#
#   here:   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2
#   there:  bash bench/tune_run.sh [STEP ...]     (run tool: carry ["build", ".device"])
#
# Steps, in this order when none is named. All of them together may pass the
# 10-minute limit of one device command: run them in three calls,
#   bash bench/tune_run.sh test small;  bash bench/tune_run.sh sweep;  bash bench/tune_run.sh ttff bench
# (the work folder build-tunework/, ignored and not carried, keeps the module
# caches and a copy of the swept database between calls of one warm machine):
#   test    build/test_tune_gpu (a small sweep twice, dispatch of the winner)
#   small   fla-tune on 3 recipes x 1 shape into a fresh database, then the
#           same command again: it must compile and time nothing
#   sweep   the full default sweep (every recipe, the ANCHORS.md shapes) into
#           tunedb/h100.sqlite, timed; copied to $OUT/h100.sqlite (commit it)
#   ttff    time from process start to the first forward result, per recipe:
#           cold (fresh module cache, no database) and warm (the sweep's
#           module cache and database; needs `sweep` first)
#   bench   fla-bench --device cuda with the tuned database, and without
# Logs and tables go to $OUT (or .device/out); the summary comes last.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-.device/out}
mkdir -p "$OUT"
BUILD=${BUILD:-build}
WORK=${WORK:-$PWD/build-tunework}     # ignored, not carried: kept between calls
mkdir -p "$WORK"
SHIPPED=tunedb/h100.sqlite
export FLA_RECIPE_PATH=$PWD/recipes   # the tree may not be where it was built
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-900}
STEPS=${*:-test small sweep ttff bench}
SUMMARY="$OUT/tune_summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
rc_all=0

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true; } > "$OUT/device.txt"
say "device: $(head -n1 "$OUT/device.txt")"

# A later call may not see the tree's copy of the swept database: use the work folder's.
[ -f "$SHIPPED" ] || { [ -f "$WORK/h100.sqlite" ] && cp "$WORK/h100.sqlite" "$SHIPPED"; }

for step in $STEPS; do
  case $step in
  test)
    FLA_CACHE_DIR=$WORK/mc_test FLA_TUNEDB=none "$BUILD/test_tune_gpu" > "$OUT/test_tune_gpu.log" 2>&1
    rc=$?; [ $rc -ne 0 ] && rc_all=1
    say "test_tune_gpu: rc=$rc ($(grep -E '^[0-9]+%: Checks' "$OUT/test_tune_gpu.log" | tail -n1))"
    grep -E '^(sweep 1|dispatch):' "$OUT/test_tune_gpu.log" | tee -a "$SUMMARY"
    ;;
  small)
    rm -rf "$WORK/mc_small" "$WORK/small.sqlite"*
    args="--recipe simple_gla --recipe gla --recipe gated_delta_rule --shape 2,4096,8,128,128 --db $WORK/small.sqlite"
    for pass in 1 2; do
      t0=$(now)
      FLA_CACHE_DIR=$WORK/mc_small "$BUILD/fla-tune" $args > "$OUT/small$pass.txt" 2> "$OUT/small$pass.err"
      rc=$?; t=$(since "$t0")
      [ $rc -ne 0 ] && rc_all=1
      say "small sweep pass $pass: rc=$rc, $t s; $(grep '^totals' "$OUT/small$pass.txt")"
    done
    if grep -q '^totals: 0 modules compiled, 0 candidates timed' "$OUT/small2.txt"; then
      say "small sweep pass 2: nothing compiled or timed again: ok"
    else
      say "small sweep pass 2: FAIL: it compiled or timed again"; rc_all=1
    fi
    cat "$OUT/small1.txt" >> "$SUMMARY"
    ;;
  sweep)
    t0=$(now)
    FLA_CACHE_DIR=$WORK/mc_full "$BUILD/fla-tune" --db "$SHIPPED" > "$OUT/sweep.txt" 2> "$OUT/sweep.err"
    rc=$?; t=$(since "$t0")
    [ $rc -ne 0 ] && rc_all=1
    cp "$SHIPPED" "$OUT/h100.sqlite"
    cp "$SHIPPED" "$WORK/h100.sqlite"   # for ttff and bench in a later call
    "$BUILD/fla-tune" --show --db "$SHIPPED" > "$OUT/show.txt" 2>&1
    say "full default sweep: rc=$rc in $t s (goal < 600 s); $(grep '^totals' "$OUT/sweep.txt")"
    grep -E '^fla-tune: .*(modules compiled|skipped)' "$OUT/sweep.err" | tee -a "$SUMMARY"
    cat "$OUT/sweep.txt" >> "$SUMMARY"
    ;;
  ttff)
    say "time to first forward (ms; B,T,H,K,V = 1,4096,16,128,128; goals: cold < 5000, warm < 100)"
    say "  warm: module cache and database warm; warm1: the same with CUDA_DEVICE_MAX_CONNECTIONS=1"
    say "  (the driver alone: bench/ctx_probe, cuInit + primary context, printed below)"
    for r in simple_gla retention gla gated_delta_rule delta_rule linear_attn; do
      rm -rf "$WORK/mc_cold_$r" "$WORK/mc_warm_$r"
      cold=$(FLA_CACHE_DIR=$WORK/mc_cold_$r FLA_TUNEDB=none "$BUILD/fla-ttff" --recipe $r --t0 "$(date +%s%N)" 2>&1)
      echo "$cold" >> "$OUT/ttff.log"
      # warm: fill a module cache with the database's choice, run once more to
      # load the page cache, then time
      for i in 1 2; do
        FLA_CACHE_DIR=$WORK/mc_warm_$r FLA_TUNEDB=$SHIPPED "$BUILD/fla-ttff" --recipe $r > /dev/null 2>&1
      done
      warm=$(FLA_CACHE_DIR=$WORK/mc_warm_$r FLA_TUNEDB=$SHIPPED "$BUILD/fla-ttff" --recipe $r --t0 "$(date +%s%N)" 2>&1)
      echo "$warm" >> "$OUT/ttff.log"
      warm1=$(CUDA_DEVICE_MAX_CONNECTIONS=1 FLA_CACHE_DIR=$WORK/mc_warm_$r FLA_TUNEDB=$SHIPPED "$BUILD/fla-ttff" --recipe $r --t0 "$(date +%s%N)" 2>&1)
      echo "(CUDA_DEVICE_MAX_CONNECTIONS=1) $warm1" >> "$OUT/ttff.log"
      c=$(echo "$cold" | sed -n 's/.*first forward result after \([0-9.]*\) ms.*/\1/p')
      w=$(echo "$warm" | sed -n 's/.*first forward result after \([0-9.]*\) ms.*/\1/p')
      w1=$(echo "$warm1" | sed -n 's/.*first forward result after \([0-9.]*\) ms.*/\1/p')
      say "  $(printf '%-18s cold %8s   warm %8s   warm1 %8s' "$r" "${c:-error}" "${w:-error}" "${w1:-error}")"
      say "    warm: $(echo "$warm" | sed -n 's/^  process start/process start/p')"
      [ -z "$c" ] || [ -z "$w" ] && rc_all=1
    done
    if [ -x "$BUILD/ctx_probe" ]; then
      for i in 1 2 3; do "$BUILD/ctx_probe" > "$OUT/ctx_probe_$i.txt" 2>&1; done
      say "  the driver alone (bench/ctx_probe, 3rd run): $(tr '\n' ';' < "$OUT/ctx_probe_3.txt")"
      CUDA_DEVICE_MAX_CONNECTIONS=1 "$BUILD/ctx_probe" > "$OUT/ctx_probe_c1.txt" 2>&1
      say "  with CUDA_DEVICE_MAX_CONNECTIONS=1: $(tr '\n' ';' < "$OUT/ctx_probe_c1.txt")"
    fi
    ;;
  bench)
    FLA_CACHE_DIR=$WORK/mc_full FLA_TUNEDB=$SHIPPED "$BUILD/fla-bench" --device cuda > "$OUT/bench_tuned.txt" 2>&1
    rc1=$?
    FLA_CACHE_DIR=$WORK/mc_full FLA_TUNEDB=none "$BUILD/fla-bench" --device cuda > "$OUT/bench_default.txt" 2>&1
    rc2=$?
    [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ] && rc_all=1
    say "fla-bench --device cuda with the tuned database (rc=$rc1):"
    grep '^|' "$OUT/bench_tuned.txt" >> "$SUMMARY"
    say "fla-bench --device cuda with default configurations (rc=$rc2):"
    grep '^|' "$OUT/bench_default.txt" >> "$SUMMARY"
    ;;
  *)
    say "unknown step '$step' (test small sweep ttff bench)"; rc_all=2
    ;;
  esac
done
echo
cat "$SUMMARY"
exit $rc_all
