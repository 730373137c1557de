#!/usr/bin/env bash
# The same 200-step SFT run (LoRA, default model, ../shared/data/dolly_hhrlhf)
# with fp32 and with bf16 products (sft --precision bf16), then the
# two loss curves compared step by step (bench/sft_compare.py).
# Both runs go at once (THREADS each, default 1: the comparison needs the same
# thread count in both, not speed).
#   STEPS=200 BATCH=2 MAXLEN=128 OUT=/tmp/sft_precision bash bench/sft_precision.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
STEPS=${STEPS:-200} BATCH=${BATCH:-2} MAXLEN=${MAXLEN:-128} OUT=${OUT:-/tmp/sft_precision} THREADS=${THREADS:-1}
data=../shared/data/dolly_hhrlhf/$(ls ../shared/data/dolly_hhrlhf | grep -m1 jsonl)
ninja -C "$build" alphaspin >/dev/null
rm -rf "$OUT" && mkdir -p "$OUT"
for p in f32 bf16; do
  /usr/bin/time -v env OMP_WAIT_POLICY=PASSIVE "$build/alphaspin" sft --precision $p --data "$data" --out "$OUT/$p" \
    --max-steps "$STEPS" --batch-size "$BATCH" --micro-batch "$BATCH" --max-len "$MAXLEN" --threads "$THREADS" --seed 7 \
    2> "$OUT/$p.stderr" &
done
wait
for p in f32 bf16; do
  echo "== $p: $(grep -a '^sft: [0-9]* steps' "$OUT/$p.stderr")" >&2
  grep -E "Elapsed|Maximum resident|Exit status" "$OUT/$p.stderr" >&2
done
python3 bench/sft_compare.py "$OUT/f32/log.jsonl" "$OUT/bf16/log.jsonl"
