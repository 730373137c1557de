#!/usr/bin/env bash
# The full Open LLM Leaderboard suite on the default model, task by task, with
# the wall-clock and CPU time of each: the "time of the full suite" of issue 5.
#   bash bench/run_suite.sh [BUILD_DIR] [OUT_DIR]
# Defaults: build, ${ALPHASPIN_HOME:-~/.cache/alphaspin}/suite-<precision>.
# PRECISION=q8|f32 (default q8), THREADS (default: all cores), TASKS (default:
# the six leaderboard tasks, shortest first), SHARDS="task=N ..." (default
# hellaswag=1000): run that task as shards of N items (`eval --offset
# --limit`, which gives every item the prompt of a full run), each resumable
# and timed on its own; the table adds the shards up.
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
SHARDS=${SHARDS-"hellaswag=1000"}
BIN=$BUILD/alphaspin
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

# run_unit TASK NAME [--offset O --limit N]: one timed eval (skipped when
# OUT/NAME.json exists).  Returns 3 when the offset is past the last item.
run_unit() {
  local task=$1 name=$2; shift 2
  if [ -s "$OUT/$name.json" ]; then echo "$name: done before ($OUT/$name.json)"; return 0; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date -u +%FT%TZ)
  echo "$name: started $start (load average $load)"
  if ! /usr/bin/time -f "%e %U %S" -o "$OUT/$name.time" "$BIN" eval --tasks "$task" "$@" --precision "$PRECISION" --threads "$THREADS" \
      --out "$OUT/$name.json.part" --markdown "$OUT/$name.md" --log-samples "$OUT/$name.samples.jsonl" >"$OUT/$name.log" 2>&1; then
    if grep -q "is past the last item" "$OUT/$name.log"; then rm -f "$OUT/$name".*; return 3; fi
    echo "$name: FAILED, not timed: $(grep -v '^ *Command exited' "$OUT/$name.log" | tail -n 1)"  # e.g. its data is absent
    return 0
  fi
  mv "$OUT/$name.json.part" "$OUT/$name.json"
  python3 - "$OUT" "$task" "$load" "$commit" "$start" "$PRECISION" "$THREADS" "$name" <<'PY'
import json, sys
out, task, load, commit, start, prec, th, name = sys.argv[1:9]
wall, user, sys_ = map(float, open(f"{out}/{name}.time").read().split())
r = json.load(open(f"{out}/{name}.json"))
items = r["n-samples"][task]["effective"]  # mmlu: the aggregate over its 57 subjects
line = {"task": task, "unit": name, "items": items, "wall_s": wall, "cpu_s": user + sys_, "items_per_s": items / max(wall, 0.01), "load_at_start": float(load),
        "commit": commit, "start": start, "precision": prec, "threads": int(th)}
open(f"{out}/timing.jsonl", "a").write(json.dumps(line) + "\n")
print(json.dumps(line))
PY
}

for task in $TASKS; do
  per=""
  for sh in $SHARDS; do [ "${sh%%=*}" = "$task" ] && per=${sh#*=}; done
  if [ -z "$per" ]; then run_unit "$task" "$task"; continue; fi
  for ((o = 0; ; o += per)); do run_unit "$task" "$task.shard$o" --offset "$o" --limit "$per" || break; done
done

python3 - "$OUT" <<'PY'
import json, sys, os
f = os.path.join(sys.argv[1], "timing.jsonl")
rows = [json.loads(l) for l in open(f)] if os.path.exists(f) else []
tasks = {}  # shards of a task added up
for r in rows:
    t = tasks.setdefault(r["task"], {"items": 0, "wall_s": 0.0, "cpu_s": 0.0, "units": 0, "loads": [], "commits": set(), "prec": set()})
    for k in ("items", "wall_s", "cpu_s"):
        t[k] += r[k]
    t["units"] += 1
    t["loads"].append(r["load_at_start"])
    t["commits"].add(r["commit"])
    t["prec"].add(f"{r['precision']}, {r['threads']}")
print("| task | items | runs | wall | items/s | CPU s | load at start | precision, threads | commit |")
print("|---|---:|---:|---:|---:|---:|---|---|---|")
for name, t in tasks.items():
    print(f"| {name} | {t['items']} | {t['units']} | {t['wall_s'] / 60:.1f} min | {t['items'] / max(t['wall_s'], 0.01):.2f} | {t['cpu_s']:.0f} |"
          f" {'/'.join(f'{x:.1f}' for x in t['loads'])} | {'; '.join(sorted(t['prec']))} | {' '.join(sorted(t['commits']))} |")
w = sum(t["wall_s"] for t in tasks.values())
print(f"\n{len(tasks)} tasks: {w / 3600:.2f} h wall, {sum(t['cpu_s'] for t in tasks.values()) / 3600:.2f} CPU-hours "
      "(a sharded task counts once its last shard is in; see timing.jsonl)")
PY
