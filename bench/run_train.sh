#!/usr/bin/env bash
# Training speed and memory (issue 3, item 9): the DPO-shaped step (4 pairs x
# 256 tokens, prompt 64, upstream gradient of the DPO sigmoid loss) on the
# default model, alphaspin (bench_train) against PyTorch (peer_torch_train.py:
# transformers' Llama on the same weights), LoRA rank 16 (all 7 targets) and
# full fine-tuning, fp32 and bf16, 2 threads each, OMP_WAIT_POLICY=PASSIVE for
# both, the engines interleaved config by config so that load drift hits both.
# Prints the JSON lines, then a Markdown table with the ratios.
#   STEPS=3 PEER_STEPS=2 BUILD=build bash bench/run_train.sh [MODEL.gguf]
# ENGINES="alphaspin torch" (default) picks the engines; with OUT=DIR two
# invocations (one per engine) can fill the same folder, and ENGINES= (empty)
# only prints the table of what DIR holds.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PY=${PYTHON:-$HOME/.cache/alphaspin/venv/bin/python}
THREADS=${THREADS:-2}; STEPS=${STEPS:-3}; PEER_STEPS=${PEER_STEPS:-2}; BUILD=${BUILD:-build}
CONFIGS=${CONFIGS:-"lora:f32 lora:bf16 full:f32 full:bf16"}
ENGINES=${ENGINES-"alphaspin torch"}
[ -n "${SKIP_BUILD:-}" ] || ninja -C "$BUILD" bench_train >/dev/null
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
for cfg in $( [ -n "$ENGINES" ] && echo $CONFIGS ); do
  mode=${cfg%%:*} prec=${cfg##*:}
  if [[ " $ENGINES " == *" alphaspin "* ]]; then
    "$BUILD"/bench_train --model "$model" --mode "$mode" --precision "$prec" --threads "$THREADS" --steps "$STEPS" \
      2>> "$out/log.alphaspin.txt" | tee -a "$out/alphaspin.jsonl"
  fi
  if [[ " $ENGINES " == *" torch "* ]]; then
    "$PY" bench/peer_torch_train.py --model "$model" --mode "$mode" --precision "$prec" --threads "$THREADS" --steps "$PEER_STEPS" \
      2>> "$out/log.torch.txt" | tee -a "$out/torch.jsonl"
  fi
done
[ -f "$out/alphaspin.jsonl" ] || exit 0
"$PY" - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
ours = [json.loads(l) for l in open(os.path.join(d, "alphaspin.jsonl"))]
tp = os.path.join(d, "torch.jsonl")
peer = [json.loads(l) for l in open(tp)] if os.path.exists(tp) else []
key = lambda r: (r["mode"], r["precision"])
P = {key(r): r for r in peer}
print("| mode | precision | alphaspin tok/s | PyTorch tok/s | ratio (wall) | ratio to PyTorch fp32 (wall) | alphaspin CPU s/step | PyTorch CPU s/step | ratio (CPU) | ratio to PyTorch fp32 (CPU) | alphaspin peak RSS MB | PyTorch peak RSS MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    p, p32 = P.get(key(r)), P.get((r["mode"], "f32"))
    if not p or not p32:
        print(f"| {r['mode']} | {r['precision']} | {r['tokens_per_s']:.1f} | (not run) | | | {r['cpu_s_median']:.1f} | | | | {r['peak_rss_mb']:.0f} | |")
        continue
    print(f"| {r['mode']} | {r['precision']} | {r['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} | {r['tokens_per_s'] / p['tokens_per_s']:.2f}x | "
          f"{r['tokens_per_s'] / p32['tokens_per_s']:.2f}x | {r['cpu_s_median']:.1f} | {p['cpu_s_median']:.1f} | "
          f"{p['cpu_s_median'] / r['cpu_s_median']:.2f}x | {p32['cpu_s_median'] / r['cpu_s_median']:.2f}x | "
          f"{r['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} |")
print(f"CPU features: {ours[0]['cpu']}")
PY
