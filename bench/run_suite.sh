#!/usr/bin/env bash
# The full Open LLM Leaderboard suite on the default model, task by task, with
# the wall-clock and CPU time of each: the "time of the full suite" of issue 5.
#   bash bench/run_suite.sh [BUILD_DIR] [OUT_DIR]
# Defaults: build, ${ALPHASPIN_HOME:-~/.cache/alphaspin}/suite-<precision>.
# PRECISION=q8|f32 (default q8), THREADS (default: all cores), TASKS (default:
# the six leaderboard tasks, shortest first).
#
# Resumable: a task whose OUT_DIR/<task>.json exists is not run again, so the
# suite can be measured over several sittings (the whole takes hours on 2
# cores).  Each finished task appends one line to OUT_DIR/timing.jsonl (task,
# items, wall s, user + sys CPU s, items/s, load average at the start, commit);
# the script ends by printing the table and the totals from that file.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PRECISION=${PRECISION:-q8}
OUT=${2:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/suite-$PRECISION}
THREADS=${THREADS:-$(nproc)}
TASKS=${TASKS:-"truthfulqa_mc2 winogrande arc_challenge gsm8k mmlu hellaswag"}
BIN=$BUILD/alphaspin
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

for task in $TASKS; do
  if [ -s "$OUT/$task.json" ]; then echo "$task: done before ($OUT/$task.json)"; continue; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date -u +%FT%TZ)
  echo "$task: started $start (load average $load)"
  if ! /usr/bin/time -f "%e %U %S" -o "$OUT/$task.time" "$BIN" eval --tasks "$task" --precision "$PRECISION" --threads "$THREADS" \
      --out "$OUT/$task.json.part" --markdown "$OUT/$task.md" --log-samples "$OUT/$task.samples.jsonl" >"$OUT/$task.log" 2>&1; then
    echo "$task: FAILED, not timed: $(grep -v '^ *Command exited' "$OUT/$task.log" | tail -n 1)"  # e.g. its data is absent
    continue
  fi
  mv "$OUT/$task.json.part" "$OUT/$task.json"
  python3 - "$OUT" "$task" "$load" "$commit" "$start" "$PRECISION" "$THREADS" <<'PY'
import json, sys
out, task, load, commit, start, prec, th = sys.argv[1:8]
wall, user, sys_ = map(float, open(f"{out}/{task}.time").read().split())
r = json.load(open(f"{out}/{task}.json"))
items = r["n-samples"][task]["effective"]  # mmlu: the aggregate over its 57 subjects
line = {"task": task, "items": items, "wall_s": wall, "cpu_s": user + sys_, "items_per_s": items / wall, "load_at_start": float(load),
        "commit": commit, "start": start, "precision": prec, "threads": int(th)}
open(f"{out}/timing.jsonl", "a").write(json.dumps(line) + "\n")
print(json.dumps(line))
PY
done

python3 - "$OUT" <<'PY'
import json, sys, os
f = os.path.join(sys.argv[1], "timing.jsonl")
rows = [json.loads(l) for l in open(f)] if os.path.exists(f) else []
print("| task | items | wall | items/s | CPU s | load at start | precision, threads | commit |")
print("|---|---:|---:|---:|---:|---:|---|---|")
for r in rows:
    print(f"| {r['task']} | {r['items']} | {r['wall_s'] / 60:.1f} min | {r['items_per_s']:.2f} | {r['cpu_s']:.0f} | {r['load_at_start']:.1f} |"
          f" {r['precision']}, {r['threads']} | {r['commit']} |")
w = sum(r["wall_s"] for r in rows)
print(f"\n{len(rows)} tasks: {w / 3600:.2f} h wall, {sum(r['cpu_s'] for r in rows) / 3600:.2f} CPU-hours")
PY
