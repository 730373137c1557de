#!/usr/bin/env bash
# Times one alpha-SPIN iteration on the default model (issue 4, item 10):
# 64 prompts, answers up to 128 tokens, LoRA rank 16, one epoch, the
# project's arithmetic data (data.generator: arith), held-out measurements as
# evaluation.  Prints the breakdown of RUN/iter_1/summary.json's timing_s
# (generate / references / train / evaluate / checkpoint / other) and checks
# that everything outside the four compute phases (checkpoint + other) is
# under 5% of the iteration's wall time; also the whole process's wall time
# against the iterations' totals (start-up: model load, data generation).
#
#   bash bench/run_spin_iteration.sh [BUILD_DIR] [REPEATS]     (default: build, 1)
#
# With REPEATS > 1 every number is the median over the repeats (the machine
# is shared and noisy).  Extra `alphaspin run` overrides: SPIN_BENCH_SET="k=v k=v".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
REPEATS="${2:-1}"
bin="$BUILD/alphaspin"
[[ -x "$bin" ]] || { echo "run_spin_iteration.sh: $bin not found (build first)" >&2; exit 2; }
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

sets=(--set data.generator=arith --set data.generator_items=64 --set prompts=64 --set iterations=1
      --set train.epochs=1 --set train.max_answer_len=128 --set generation.max_new_tokens=128
      --set lora.enabled=true --set lora.rank=16 --set eval.tasks=)
for kv in ${SPIN_BENCH_SET:-}; do sets+=(--set "$kv"); done
echo "alphaspin run --config configs/alphaspin.yaml ${sets[*]} --quiet --out RUN   (x$REPEATS)"
for r in $(seq 1 "$REPEATS"); do
  run="$tmp/run$r"
  load0=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time "$bin" run --config "$ROOT/configs/alphaspin.yaml" "${sets[@]}" --quiet --out "$run" 2> "$tmp/err$r"; } 2> "$tmp/cpu$r" \
    || { echo "run_spin_iteration.sh: alphaspin run failed:" >&2; tail -5 "$tmp/err$r" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t0 $t1 $(cat "$tmp/cpu$r") $load0 $(cut -d' ' -f1 /proc/loadavg)" > "$run/wall"
done

python3 - "$tmp" "$REPEATS" <<'PY'
import json, os, statistics, sys
tmp, n = sys.argv[1], int(sys.argv[2])
phases = ["generate", "references", "train", "evaluate", "checkpoint", "other"]
rows = []
for r in range(1, n + 1):
    run = f"{tmp}/run{r}"
    t = json.load(open(f"{run}/iter_1/summary.json"))["timing_s"]
    t0 = json.load(open(f"{run}/iter_0/summary.json"))["timing_s"]
    a, b, u, sy, l0, l1 = map(float, open(f"{run}/wall").read().split())
    rows.append({**{p: t.get(p, 0.0) for p in phases}, "total": t["total"], "iter0": t0["total"], "wall": b - a,
                 "cpu": u + sy, "load": (l0 + l1) / 2})
med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
tot = med["total"]
print(f"\none iteration (RUN/iter_1/summary.json timing_s), median of {n}:")
print(f"{'phase':<12} {'seconds':>9} {'share':>7}")
for p in phases:
    print(f"{p:<12} {med[p]:9.2f} {100 * med[p] / tot:6.1f}%")
print(f"{'total':<12} {tot:9.2f} {100.0:6.1f}%")
outside = med["checkpoint"] + med["other"]
print(f"\noutside the four compute phases (checkpoint + other): {outside:.2f} s = {100 * outside / tot:.2f}% of the iteration"
      f" -> {'OK (< 5%)' if outside < 0.05 * tot else 'NOT MET (>= 5%)'}")
startup = med["wall"] - med["total"] - med["iter0"]
print(f"process wall {med['wall']:.2f} s = iteration 0 (base model's held-out measurements) {med['iter0']:.2f} s"
      f" + iteration 1 {tot:.2f} s + start-up and the rest {startup:.2f} s ({100 * startup / med['wall']:.2f}%)")
print(f"process CPU time {med['cpu']:.1f} s (user + sys) over {med['wall']:.1f} s wall on {os.cpu_count()} cores;"
      f" machine load average about {med['load']:.1f} during the run (other work shares the cores)")
sys.exit(0 if outside < 0.05 * tot else 1)
PY
