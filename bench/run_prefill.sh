#!/usr/bin/env bash
# Prefill alone, alphaspin against PyTorch, in closely alternating pairs: on a
# shared host whose speed changes by a third within minutes, run_inference.sh's
# prefill ratio (each engine's median, measured minutes apart) moved between
# 2.2x and 3.1x from one run to the next.  Here each pair is alphaspin's
# prefill (median of PREFILL_REPS passes) right after or before PyTorch's
# (the order alternates), and the ratio is the median of the pairs' ratios.
#   bash bench/run_prefill.sh [MODEL.gguf]
# PAIRS (default 8), PREFILL (512), THREADS (2), PREC (alphaspin precision,
# q8), DTYPE (PyTorch's, fp32), TORCH_WAIT (PyTorch's OpenMP wait policy:
# "default" leaves it unset, its fastest prefill on the 2-vCPU VM of
# BENCHMARKS.md; or PASSIVE), BUILD (build directory).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PY=${PYTHON:-$HOME/.cache/alphaspin/venv/bin/python}
PAIRS=${PAIRS:-8}; T=${PREFILL:-512}; THREADS=${THREADS:-2}; PREC=${PREC:-q8}; DTYPE=${DTYPE:-fp32}
TORCH_WAIT=${TORCH_WAIT:-default}; BUILD=${BUILD:-build}
bash scripts/build.sh "$BUILD" >/dev/null
if [ "$TORCH_WAIT" = default ]; then policy=(env -u OMP_WAIT_POLICY); else policy=(env OMP_WAIT_POLICY="$TORCH_WAIT"); fi
ours() { BENCH_ONLY=prefill "$BUILD"/bench_inference "$model" "$PREC" "$THREADS" 32 "$T" | tail -1; }
peer() { "${policy[@]}" "$PY" bench/peer_torch.py --model "$model" --dtype "$DTYPE" --threads "$THREADS" --prefill "$T" --only prefill 2>/dev/null | tail -1; }
out=$(mktemp)
for p in $(seq "$PAIRS"); do
  if [ $((p % 2)) = 1 ]; then a=$(ours); b=$(peer); else b=$(peer); a=$(ours); fi
  echo "$a|$b" >> "$out"
done
"$PY" - "$out" "$T" "$PREC" "$DTYPE" "$TORCH_WAIT" <<'PY'
import json, statistics, sys
path, T, prec, dtype, wait = sys.argv[1:]
key = f"prefill_{T}_tok_s"
pairs = [tuple(json.loads(x)[key] for x in line.strip().split("|")) for line in open(path)]
r = [a / b for a, b in pairs]
print(f"| pair | alphaspin ({prec}) prefill {T} tok/s | PyTorch ({dtype}, policy {wait}) tok/s | ratio |")
print("|---|---|---|---|")
for i, ((a, b), x) in enumerate(zip(pairs, r), 1):
    print(f"| {i} | {a:.1f} | {b:.1f} | {x:.2f}x |")
print(f"| median | {statistics.median(a for a, _ in pairs):.1f} | {statistics.median(b for _, b in pairs):.1f} | **{statistics.median(r):.2f}x** |")
print(f"\npairs with ratio >= 3: {sum(x >= 3 for x in r)} of {len(r)}")
PY
rm -f "$out"
