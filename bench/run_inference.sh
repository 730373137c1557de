#!/usr/bin/env bash
# Inference speed: alphaspin vs llama.cpp (llama-cpp-python) vs PyTorch, same
# GGUF, same cores, same run.  alphaspin at its three precisions (q8, f32,
# bf16), PyTorch in fp32 and in bf16 (oneDNN's AMX kernels where the CPU has
# them: its fastest prefill).  Each engine runs REPEATS times (default 3); the
# medians and the ratios are printed as a Markdown table for BENCHMARKS.md.
# PyTorch runs under each OpenMP wait policy of TORCH_WAITS (default "PASSIVE
# default": on 2 vCPUs PyPI's torch 2.15 decodes ~2x faster with libgomp's
# default spinning, and prefills ~10% faster, in BENCHMARKS.md's runs); the
# ratios take its best per measure.
#   bash bench/run_inference.sh [MODEL.gguf]
# BUILD=DIR uses another build directory than build/.
# Needs a Python with llama_cpp, torch, transformers, accelerate: $PYTHON
# (default ~/.cache/alphaspin/venv/bin/python; tools/setup_venv.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PY=${PYTHON:-$HOME/.cache/alphaspin/venv/bin/python}
REPEATS=${REPEATS:-3}; THREADS=${THREADS:-2}; B=${BATCH:-32}; T=${PREFILL:-512}
TORCH_WAITS=${TORCH_WAITS:-"PASSIVE default"}
BUILD=${BUILD:-build} # build directory (scripts/build.sh)
bash scripts/build.sh "$BUILD" >/dev/null
out=$(mktemp -d)
for r in $(seq "$REPEATS"); do
  for prec in q8 f32 bf16; do "$BUILD"/bench_inference "$model" "$prec" "$THREADS" "$B" "$T" >> "$out/alphaspin_$prec.jsonl"; done
  "$PY" bench/peer_llama_cpp.py --model "$model" --threads "$THREADS" --batch "$B" --prefill "$T" >> "$out/llama_cpp.jsonl" 2>/dev/null
  for dt in fp32 bf16; do
    for w in $TORCH_WAITS; do
      if [ "$w" = default ]; then policy=(env -u OMP_WAIT_POLICY); else policy=(env OMP_WAIT_POLICY="$w"); fi
      "${policy[@]}" "$PY" bench/peer_torch.py --model "$model" --dtype $dt --threads "$THREADS" --batch "$B" --prefill "$T" \
        2>/dev/null | sed "s/\"peer\": \"\([^\"]*\)\"/\"peer\": \"\1 [$w]\"/" >> "$out/torch_${dt}_$w.jsonl"
    done
  done
done
"$PY" - "$out" "$B" "$T" <<'PY'
import json, statistics, sys, glob, os
d, B, T = sys.argv[1], sys.argv[2], sys.argv[3]
keys = ["decode_b1_tok_s", f"decode_b{B}_tok_s", f"prefill_{T}_tok_s", "peak_rss_mb"]
rows, runs_of = {}, {}
for f in sorted(glob.glob(os.path.join(d, "*.jsonl"))):
    runs = [json.loads(l) for l in open(f)]
    runs_of[os.path.basename(f)[:-6]] = runs
    rows[os.path.basename(f)[:-6]] = (runs[0]["peer"], {k: statistics.median(r[k] for r in runs) for k in keys}, len(runs))
print(f"| engine | decode b=1 tok/s | decode b={B} tok/s (aggregate) | prefill {T} tok/s | peak RSS MB | runs |")
print("|---|---|---|---|---|---|")
for name, (peer, m, n) in rows.items():
    print(f"| {peer} | {m[keys[0]]:.1f} | {m[keys[1]]:.1f} | {m[keys[2]]:.1f} | {m[keys[3]]:.0f} | {n} |")
a = rows["alphaspin_q8"][1]; af = rows["alphaspin_f32"][1]; ab = rows["alphaspin_bf16"][1]; l = rows["llama_cpp"][1]
# PyTorch: its best over the wait policies, per measure.
best = lambda dt: {k: max(m[k] for n, (_, m, _) in rows.items() if n.startswith(f"torch_{dt}_")) for k in keys[:3]}
t = best("fp32"); tb = best("bf16")
print()
print(f"- batch-1 decode, alphaspin q8 / llama.cpp: {a[keys[0]] / l[keys[0]]:.2f}x (target >= 1); f32 / llama.cpp: {af[keys[0]] / l[keys[0]]:.2f}x")
print(f"- batch-{B} aggregate / batch-1, alphaspin q8: {a[keys[1]] / a[keys[0]]:.1f}x (target >= 10); f32: {af[keys[1]] / af[keys[0]]:.1f}x; "
      f"bf16 batch-{B} / q8 batch-1 (each precision where it is fastest): {ab[keys[1]] / a[keys[0]]:.1f}x")
print(f"- per repeat (same process pairs): q8 b{B}/b1 " + ", ".join(f"{u[keys[1]] / u[keys[0]]:.1f}" for u in runs_of["alphaspin_q8"])
      + f"; bf16 b{B} / q8 b1 " + ", ".join(f"{u[keys[1]] / v[keys[0]]:.1f}" for u, v in zip(runs_of["alphaspin_bf16"], runs_of["alphaspin_q8"])))
p = keys[2]
print(f"- prefill {T}, alphaspin bf16 / PyTorch fp32: {ab[p] / t[p]:.2f}x (target >= 3); bf16 / PyTorch bf16: {ab[p] / tb[p]:.2f}x; "
      f"q8 / PyTorch fp32: {a[p] / t[p]:.2f}x; f32 / PyTorch fp32: {af[p] / t[p]:.2f}x; bf16 / llama.cpp: {ab[p] / l[p]:.2f}x")
print(f"  (each engine's prefill measured minutes apart, PyTorch's after its decoding runs: bench/run_prefill.sh pairs them closely)")
PY
