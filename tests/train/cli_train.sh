#!/usr/bin/env bash
# fla-tokenize, fla-train and fla-generate end to end (ctest cli_fla_train):
#   cli_train.sh BUILD_DIR SOURCE_DIR TINY_GLA_CONFIG
# 4 of 6 steps (--stop-after), --resume to 6 (equal to 6 in one go) (the log continues), a SIGTERM'd run that saves and
# resumes, the checkpoint generating text, and bad configs refused with exit 2.
set -euo pipefail
BUILD=$1 SRC=$2 MODEL=$3
WORK=$(mktemp -d /tmp/fla-cli-train-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
fail() { echo "FAIL: $*"; exit 1; }

"$BUILD/fla-tokenize" -o docs.tok "$SRC/README.md" "$SRC/docs/models.md" "$SRC/docs/recipes.md" | tee tok.out
grep -q "3 documents" tok.out || fail "fla-tokenize did not count 3 documents"

python_free_config() {  # $1 steps, $2 checkpoint every
  cat <<JSON
{ "model_config": $(cat "$MODEL"),
  "data": ["docs.tok"], "seq_len": 32, "batch_size": 2, "micro_batches": 2, "steps": $1,
  "optimizer": {"lr": 3e-3, "weight_decay": 0.1, "clip_norm": 1.0},
  "schedule": {"kind": "cosine", "warmup_steps": 2, "min_lr": 3e-4},
  "checkpoint": {"dir": "ck", "every": $2, "keep": 3, "shard_bytes": 100000},
  "log": "log.csv", "log_every": 1, "seed": 3, "threads": 1 }
JSON
}
python_free_config 6 2 > train.json

"$BUILD/fla-train" --config train.json --stop-after 4 2> run1.err || { cat run1.err; fail "first run"; }
grep -q "saved ck/step-00000004" run1.err || fail "no checkpoint at step 4"
[ -f ck/step-00000004/model.safetensors.index.json ] || fail "no index"
[ "$(ls ck/step-00000004/model-0000*-of-*.safetensors | wc -l)" -gt 1 ] || fail "not sharded at 100 kB"
[ "$(wc -l < log.csv)" -eq 5 ] || fail "log.csv should hold a header and 4 steps"

"$BUILD/fla-train" --config train.json --resume 2> run2.err || { cat run2.err; fail "resume"; }
grep -q "resumed from ck/step-00000004 (step 4)" run2.err || fail "did not resume from step 4"
grep -q "^step      5/6" run2.err || fail "the resumed run did not start at step 5"
[ "$(wc -l < log.csv)" -eq 7 ] || fail "log.csv should have grown to 6 steps"

# A fresh 6-step run gives the same losses as 4 + 2 (bit for bit: the printed digits).
mkdir fresh && cd fresh
ln -s ../docs.tok docs.tok
"$BUILD/fla-train" --config ../train.json 2> /dev/null
cd ..
diff <(cut -d, -f1,2 log.csv) <(cut -d, -f1,2 fresh/log.csv) || fail "resumed losses differ from a straight run"

"$BUILD/fla-generate" --model ck/step-00000006 --prompt "The " --max-new-tokens 8 --greedy --stop none > gen.out \
  2> /dev/null || fail "fla-generate cannot use the checkpoint"

# SIGTERM: the run saves at the next step boundary and exits 130; --resume continues.
python_free_config 100000 0 > long.json
"$BUILD/fla-train" --config long.json --checkpoint-dir ck2 2> run3.err &
pid=$!
for _ in $(seq 100); do grep -q "^step" run3.err 2>/dev/null && break; sleep 0.1; done
kill -TERM $pid
set +e; wait $pid; rc=$?; set -e
[ $rc -eq 130 ] || { cat run3.err; fail "exit status $rc after SIGTERM (130 expected)"; }
grep -q "stopped by signal 15" run3.err || fail "no stop message"
ls -d ck2/step-* > /dev/null || fail "no checkpoint after SIGTERM"
"$BUILD/fla-train" --config long.json --checkpoint-dir ck2 --resume --steps 1 2> run4.err || true
grep -q "resumed from ck2/step-" run4.err || fail "no resume after SIGTERM"

# --init-from: continued pretraining from an fla checkpoint directory.
"$BUILD/fla-train" --config train.json --init-from "$(dirname "$MODEL")" --steps 1 --checkpoint-dir ck3 \
  2> run5.err || { cat run5.err; fail "--init-from"; }
grep -q "initialised from a checkpoint" run5.err && [ -d ck3/step-00000001 ] || fail "--init-from did not train"

# A tokenizer.json: 2-byte tokens, its </s> or <|endoftext|> as the boundary.
TOK="$(dirname "$MODEL")/../../tokenizer/tokenizer.json"
if [ -f "$TOK" ]; then
  "$BUILD/fla-tokenize" -o bpe.tok --tokenizer "$TOK" "$SRC/README.md" > bpe.out || fail "fla-tokenize --tokenizer"
  grep -q "1 documents" bpe.out || fail "tokenizer.json: no document"
  [ "$(od -A n -t u4 -j 12 -N 4 bpe.tok | tr -d ' ')" -ge 2 ] || fail "tokenizer.json ids should take 2 or 4 bytes"
fi

# "documents": "separate": every document of a window from an empty state.
sed 's/"seed": 3,/"seed": 3, "documents": "separate",/' train.json > separate.json
"$BUILD/fla-train" --config separate.json --steps 2 --checkpoint-dir ck4 --log sep.csv 2> run6.err \
  || { cat run6.err; fail "documents separate"; }
[ "$(wc -l < sep.csv)" -eq 3 ] || fail "documents separate: 2 steps expected in sep.csv"

# Bad configs: exit 2, saying what is wrong.
echo '{"model_config": {}, "data": "docs.tok", "seq_len": 8, "steps": 1, "colour": 1}' > bad.json
set +e
"$BUILD/fla-train" --config bad.json 2> bad.err; rc=$?
[ $rc -eq 2 ] && grep -q "unknown field 'colour'" bad.err || fail "unknown field: rc $rc"
echo '{"model_config": {}, "data": "docs.tok", "seq_len": 8, "steps": 1, "device": "cuda"}' > cuda.json
"$BUILD/fla-train" --config cuda.json 2> cuda.err; rc=$?
# accepted (not a config error): without a GPU it fails saying why the device did not open
[ $rc -ne 2 ] && ! grep -q "not supported" cuda.err || fail "device cuda: rc $rc"
[ $rc -ne 1 ] || grep -q "device cuda: \|fla-train: " cuda.err || fail "device cuda: no reason given"
echo '{"model_config": {}, "data": "docs.tok", "seq_len": 8, "steps": 1, "device": "tpu"}' > tpu.json
"$BUILD/fla-train" --config tpu.json 2> tpu.err; rc=$?
[ $rc -eq 2 ] && grep -q "device 'tpu' is not supported" tpu.err || fail "device tpu: rc $rc"
echo '{"model_config": {}, "data": "docs.tok", "seq_len": 8, "steps": 1, "device": "cuda", "dtype": "fp8"}' > fp8.json
"$BUILD/fla-train" --config fp8.json 2> fp8.err; rc=$?
[ $rc -eq 2 ] && grep -q "dtype 'fp8'" fp8.err || fail "dtype fp8: rc $rc"
echo '{"model_config": {}, "data": "docs.tok", "seq_len": 8, "steps": 1, "documents": "mixed"}' > docs.json
"$BUILD/fla-train" --config docs.json 2> docs.err; rc=$?
[ $rc -eq 2 ] && grep -q "documents must be" docs.err || fail "documents mixed: rc $rc"
echo '{"model_config": {}, "data": "docs.tok"' > trunc.json
"$BUILD/fla-train" --config trunc.json 2> trunc.err; rc=$?
[ $rc -eq 2 ] || fail "truncated JSON: rc $rc"
set -e
echo "cli_fla_train: all checks passed"
