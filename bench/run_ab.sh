#!/usr/bin/env bash
# Paired A/B of two alphaspin builds on the same cores: what a change costs or
# gains (issue 20 item 2's "speed cost, per path", issue 21 item 5's "no speed
# lost").  Each pair runs build A then build B, or B then A (alternating), on
# the same workloads; medians over the pairs and the median of the per-pair
# ratios B/A are printed as Markdown.
#   bash bench/run_ab.sh BUILD_A BUILD_B [MODEL.gguf]
# Workloads (WORKLOADS, default "q8 f32 lora"):
#   q8, f32   bench_inference MODEL PRECISION THREADS 32 512: batch-1 decode,
#             batch-32 aggregate decode (tokens/s, 32-token prompts then 128
#             greedy tokens) and prefill of 512 tokens (median of 5 passes)
#   lora      bench_train --mode lora (fp32, rank 16, 4 pairs of 256 tokens,
#             prompt 64; tokens/s of the median of 5 steps)
# PAIRS (default 5), THREADS (2), ISA (native, or avx2: ALPHASPIN_KERNEL_ISA=avx2
# in both builds' environment; a build without the cap variable runs native).
# Both builds run with OMP_WAIT_POLICY and GOMP_SPINCOUNT unset unless the
# caller sets them (the bench binaries do not re-execute as `alphaspin` does).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: run_ab.sh BUILD_A BUILD_B [MODEL]}; B=${2:?usage: run_ab.sh BUILD_A BUILD_B [MODEL]}
model=${3:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PAIRS=${PAIRS:-5}; THREADS=${THREADS:-2}; ISA=${ISA:-native}; WORKLOADS=${WORKLOADS:-"q8 f32 lora"}
case "$ISA" in native) env_isa=() ;; avx2) env_isa=(ALPHASPIN_KERNEL_ISA=avx2) ;; *) echo "run_ab: ISA must be native or avx2" >&2; exit 2 ;; esac
[ -r "$model" ] || { echo "run_ab: $model: not readable (build/alphaspin fetch-model)" >&2; exit 1; }
for b in "$A" "$B"; do
  for w in $WORKLOADS; do
    case "$w" in
      q8 | f32) [ -x "$b/bench_inference" ] || { echo "run_ab: $b/bench_inference: not built" >&2; exit 1; } ;;
      lora) [ -x "$b/bench_train" ] || { echo "run_ab: $b/bench_train: not built" >&2; exit 1; } ;;
      *) echo "run_ab: unknown workload $w (q8, f32, lora)" >&2; exit 2 ;;
    esac
  done
done
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
one() { # build, workload -> one JSON line {metric: value}
  local b=$1 w=$2
  case "$w" in
    q8 | f32)
      env "${env_isa[@]}" "$b/bench_inference" "$model" "$w" "$THREADS" 32 512 2>/dev/null | tail -1 |
        python3 -c 'import json,sys; d=json.load(sys.stdin); w=sys.argv[1]; print(json.dumps({w+" b=1 tok/s": d["decode_b1_tok_s"], w+" b=32 tok/s": d["decode_b32_tok_s"], w+" prefill 512 tok/s": d["prefill_512_tok_s"]}))' "$w" ;;
    lora)
      env "${env_isa[@]}" "$b/bench_train" --model "$model" --mode lora --threads "$THREADS" --pairs 4 --len 256 --prompt 64 --steps 5 2>/dev/null | tail -1 |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"LoRA step tok/s": d["tokens_per_s"]}))' ;;
  esac
}
echo "CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cpus, $(grep -o -w -E 'avx2|avx512f|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "A: $A; B: $B; ISA: $ISA; threads: $THREADS; pairs: $PAIRS; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in $(seq "$PAIRS"); do
  for w in $WORKLOADS; do
    if [ $((p % 2)) = 1 ]; then a=$(one "$A" "$w"); b=$(one "$B" "$w"); else b=$(one "$B" "$w"); a=$(one "$A" "$w"); fi
    echo "$a|$b" >>"$out/pairs"
  done
  echo "run_ab: pair $p of $PAIRS done, load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out/pairs" <<'PY'
import json, statistics, sys
vals = {}
for line in open(sys.argv[1]):
    a, b = (json.loads(x) for x in line.strip().split("|"))
    for k in a:
        vals.setdefault(k, []).append((a[k], b[k]))
print()
print("| measure | A (median) | B (median) | B/A (median of pairs) | per-pair B/A |")
print("|---|---:|---:|---:|---|")
for k, ps in vals.items():
    r = [b / a for a, b in ps]
    print(f"| {k} | {statistics.median(a for a, _ in ps):.1f} | {statistics.median(b for _, b in ps):.1f} | "
          f"**{statistics.median(r):.2f}** | {', '.join(f'{x:.2f}' for x in r)} |")
PY
