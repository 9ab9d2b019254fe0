#!/usr/bin/env bash
# make demo: trains a small byte-level GLA on the fortune cookie files (Debian's
# "fortunes" package) on the CPU for a few minutes, then generates text from it.
#   scripts/demo-train.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$(cd "${1:-build}" && pwd)"
FORTUNES=/usr/share/games/fortunes
WORK="$BUILD/demo"
mkdir -p "$WORK"
cd "$WORK"
# English prose only: no ASCII art, no translations, no program listings.
FILES="fortunes wisdom humorists literature people platitudes science work love pets food education
       computers cookie kids law medicine men-women miscellaneous politics riddles sports songs-poems
       magic drugs goedel"
( cd "$FORTUNES" && "$BUILD/fla-tokenize" -o "$WORK/fortunes.tok" --doc-separator % $FILES )
rm -rf checkpoints train-log.csv   # a fresh run each time (fla-train --resume would continue one)
start=$(date +%s)
"$BUILD/fla-train" --config "$ROOT/scripts/demo/train.json"
echo "fla-train: $(( $(date +%s) - start )) s on $(nproc) core(s)"
CKPT="$(ls -d checkpoints/step-* | sort | tail -1)"
echo
echo "== loss curve (every 40 steps; the whole log is $WORK/train-log.csv)"
awk -F, 'NR > 1 && ($1 % 40 == 0 || $1 == 1) { printf "  step %4d  loss %.3f\n", $1, $2 }' train-log.csv
echo
echo "== text from $CKPT (temperature 0.8, top-k 40)"
for prompt in "The " "A man " "Q: Why "; do
  printf -- '--- %s' "$prompt"
  "$BUILD/fla-generate" --model "$CKPT" --prompt "$prompt" --max-new-tokens 160 --temperature 0.8 --top-k 40 \
    --seed 7 2>/dev/null | tr -d '\000'   # the NUL boundary token ends a fortune
  echo
done
