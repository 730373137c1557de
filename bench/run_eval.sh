#!/usr/bin/env bash
# Speed of `alphaspin eval` per task on the default model, with the same code
# path as a full run (--limit takes the first items), and the PyTorch peer
# (lm-eval's loglikelihood procedure re-implemented) on ARC-Easy 0-shot in the
# same run: items/s of both, their ratio, and the agreement of the log-likelihoods.
#   bash bench/run_eval.sh [BUILD_DIR] [LIMIT]     (defaults: build, 20)
# PRECISION=f32|q8|bf16 (default f32) selects the scoring arithmetic.
# Prints one line per task: task, shots, items, wall seconds, items/s, CPU
# seconds per item, and the time of the full task estimated from the CPU
# seconds on idle cores (and at the measured wall rate).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
LIMIT=${2:-20}
PRECISION=${PRECISION:-f32}
BIN=$BUILD/alphaspin
DATA=${ALPHASPIN_DATA:-../shared/data}
MODEL=${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf
VENV=${ALPHASPIN_VENV:-$HOME/.cache/alphaspin/venv}
export OMP_WAIT_POLICY=PASSIVE
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# task shots items-in-the-full-task (the leaderboard's shot counts; mmlu: limit per subject)
run() {
  local task=$1 shots=$2 full=$3 limit=$4
  /usr/bin/time -f "%U %S" -o "$tmp/$task.time" "$BIN" eval --tasks "$task" --shots "$shots" --limit "$limit" --precision "$PRECISION" --quiet \
      --out "$tmp/$task.json" --log-samples "$tmp/$task.samples.jsonl" >/dev/null
  python3 - "$tmp/$task.json" "$task" "$shots" "$full" "$tmp/$task.time" "$(nproc)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); task, shots, full = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cpu = sum(map(float, open(sys.argv[5]).read().split())); ncpu = int(sys.argv[6])
n = r["n-samples"][task]["effective"]; s = r["config"]["total_evaluation_time_seconds"]
# Wall-clock items/s depend on what else runs; CPU seconds per item do not (much):
# the idle-machine estimate is cpu / item / cores.
print(f"{task:14s} shots {shots:2d} items {n:4d}  {s:7.1f} s wall  {n / s:6.3f} items/s  {cpu / n:6.2f} cpu-s/item"
      f"  full task ({full} items): {full * cpu / n / ncpu / 3600:5.2f} h idle-estimate, {full / (n / s) / 3600:5.2f} h at this load")
PY
}

echo "== alphaspin eval ($BIN, $PRECISION scoring, $(nproc) cores); first $LIMIT items (mmlu: $((LIMIT / 20 > 0 ? LIMIT / 20 : 1)) per subject, gsm8k: $((LIMIT / 4 > 0 ? LIMIT / 4 : 1)))"
run arc_easy 0 2376 "$LIMIT"
run arc_challenge 25 1172 "$LIMIT"
run hellaswag 10 10042 "$LIMIT"
run winogrande 5 1267 "$LIMIT"
run mmlu 5 14042 "$((LIMIT / 20 > 0 ? LIMIT / 20 : 1))"
run gsm8k 5 1319 "$((LIMIT / 4 > 0 ? LIMIT / 4 : 1))"

echo "== peer: PyTorch, lm-eval's procedure, ARC-Easy 0-shot, same $LIMIT items"
if [ -x "$VENV/bin/python" ]; then
  t0=$(date +%s.%N)
  "$BIN" eval --tasks arc_easy --shots 0 --limit "$LIMIT" --quiet --out "$tmp/a.json" --log-samples "$tmp/a.jsonl" >/dev/null
  t1=$(date +%s.%N)
  peer=$("$VENV/bin/python" bench/peer_torch_eval.py --model "$MODEL" --data "$DATA/arc/arc_easy_test.jsonl" \
         --limit "$LIMIT" --samples "$tmp/a.jsonl" 2>/dev/null)
  echo "$peer"
  python3 - "$tmp/a.json" "$peer" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p = json.loads(sys.argv[2])
n = r["n-samples"]["arc_easy"]["effective"]; ours = n / r["config"]["total_evaluation_time_seconds"]
res = r["results"]["arc_easy"]
print(f"alphaspin {ours:.2f} items/s vs PyTorch {p['items_per_s']:.2f} items/s: ratio {ours / p['items_per_s']:.2f}x; "
      f"acc {res['acc,none']:.4f} vs {p['acc']:.4f}, acc_norm {res['acc_norm,none']:.4f} vs {p['acc_norm']:.4f}; "
      f"max |ll diff| {p['max_abs_ll_diff']:.2e}, items with another choice {p['items_with_other_argmax']}")
PY
else
  echo "(no venv at $VENV: peer skipped)"
fi
