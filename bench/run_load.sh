#!/usr/bin/env bash
# Batch-1 q8 decoding quiet and under load (issue 20, item 6): how OpenMP's
# wait policy trades an idle machine's speed against a busy one's.
#   bash bench/run_load.sh [MODEL.gguf]
# For each configuration, tokens/s of bench_inference's batch-1 decode (one
# random 32-token prompt, 16 untimed steps, then 128 greedy tokens, BENCH_ONLY=b1) on a quiet
# machine and with one other busy process (`yes > /dev/null`, started before
# and killed after each loaded measurement).  Configurations (CONFIGS):
#   spin:N    GOMP_SPINCOUNT=N (libgomp spins about N iterations, then sleeps);
#             spin:10000 is what the `alphaspin` command now sets for itself
#             (src/cli/main.c re-executes itself with it unless OMP_WAIT_POLICY
#             or GOMP_SPINCOUNT is set; bench_inference does not, so it is set
#             here; the script also checks what the command really runs with)
#   libgomp   neither variable set: libgomp's own default, a spin count of
#             300000 (the old default of the command)
#   passive   OMP_WAIT_POLICY=PASSIVE (sleep at once)
#   llama     llama.cpp's `llama-bench -p 0 -n 128 -d 32 -r 1` (the same
#             workload, bench/run_peer_llama.sh), its defaults (LLAMA=0 skips;
#             bench/build_llama_cpp.sh native builds it)
# REPEATS (default 3) rounds; each round runs every configuration, in an order
# rotated by one each round, quiet and loaded back to back (which goes first
# alternates).  Medians over the rounds.  THREADS (2), BUILD (build/),
# ISA (native, or avx2: ALPHASPIN_KERNEL_ISA=avx2 and the avx2 llama.cpp).
# On a shared host: before each quiet/loaded pair the script waits (up to
# QUIET_WAIT seconds, default 30) for other work to fall under QUIET_MAX
# (default 0.10) of the CPUs, and records the share of the CPUs that other
# processes took during each measurement (bench/contention.py: the busy loop
# alone reads ~0.50 on 2 CPUs; more than that is someone else's work).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
REPEATS=${REPEATS:-3}; THREADS=${THREADS:-2}; BUILD=${BUILD:-build}; ISA=${ISA:-native}
CONFIGS=${CONFIGS:-"spin:10000 libgomp passive spin:1000 spin:3000 spin:30000 spin:100000 llama"}
LLAMA=${LLAMA:-1}; QUIET_MAX=${QUIET_MAX:-0.10}; QUIET_WAIT=${QUIET_WAIT:-30}
case "$ISA" in native) isaenv=() ;; avx2) isaenv=(ALPHASPIN_KERNEL_ISA=avx2) ;; *) echo "ISA must be native or avx2" >&2; exit 2 ;; esac
bash scripts/build.sh "$BUILD" >/dev/null
if [ "$LLAMA" = 1 ] && [[ " $CONFIGS " == *" llama "* ]]; then
  bin=$(bash bench/build_llama_cpp.sh "$ISA" | tail -1)
else
  CONFIGS=$(echo " $CONFIGS " | sed 's/ llama / /'); bin=
fi

echo "CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cpus; alphaspin $BUILD at $(git rev-parse --short HEAD); ${isaenv[*]:-}"
echo "load before: $(uptime | sed 's/.*load average: //')"
# What the command itself runs with (its re-executed image's environment).
env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u ALPHASPIN_SPINCOUNT -u ALPHASPIN_WAIT_SET \
  "$BUILD"/alphaspin generate --model "$model" --prompt "Count to a hundred:" --greedy --max-new-tokens 400 >/dev/null 2>&1 &
pid=$!; seen=
for _ in $(seq 60); do
  seen=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep '^GOMP_SPINCOUNT=' || true)
  [ -n "$seen" ] && break; sleep 0.05
done
kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
echo "the alphaspin command runs with: ${seen:-no GOMP_SPINCOUNT seen}"

out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
cont=(python3 bench/contention.py run "$out/c" --)
measure() { # config -> tok/s; the others' share goes to $out/c
  case "$1" in
    llama)
      "${cont[@]}" "$bin/llama-bench" -m "$model" -t "$THREADS" -p 0 -n 128 -d 32 -r 1 -o json 2>/dev/null |
        python3 -c 'import json,sys,statistics; print(statistics.median(json.load(sys.stdin)[0]["samples_ts"]))' ;;
    *)
      local e=("${isaenv[@]}")
      case "$1" in
        spin:*) e+=(GOMP_SPINCOUNT="${1#spin:}") ;;
        passive) e+=(OMP_WAIT_POLICY=PASSIVE) ;;
        libgomp) ;;
        *) echo "unknown configuration $1" >&2; exit 2 ;;
      esac
      "${cont[@]}" env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "${e[@]}" BENCH_ONLY=b1 "$BUILD"/bench_inference "$model" q8 "$THREADS" 2>/dev/null |
        tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["decode_b1_tok_s"])' ;;
  esac
}
loaded() {
  yes >/dev/null & local hog=$!
  sleep 0.3
  measure "$1" || true
  kill "$hog"; wait "$hog" 2>/dev/null || true
}
read -r -a cfgs <<<"$CONFIGS"
n=${#cfgs[@]}
for r in $(seq "$REPEATS"); do
  for i in $(seq 0 $((n - 1))); do
    c=${cfgs[$(((i + r - 1) % n))]}
    python3 bench/contention.py wait "$QUIET_MAX" "$QUIET_WAIT" >/dev/null
    if [ $(((i + r) % 2)) = 0 ]; then
      q=$(measure "$c"); cq=$(tail -1 "$out/c"); l=$(loaded "$c"); cl=$(tail -1 "$out/c")
    else
      l=$(loaded "$c"); cl=$(tail -1 "$out/c"); q=$(measure "$c"); cq=$(tail -1 "$out/c")
    fi
    echo "$c $q $l $(cut -d' ' -f1 /proc/loadavg) $cq $cl" >>"$out/runs"
  done
  echo "round $r done, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo "load after: $(uptime | sed 's/.*load average: //')"
python3 - "$out/runs" "$CONFIGS" <<'PY'
import statistics, sys
path, configs = sys.argv[1], sys.argv[2].split()
runs = {}
for line in open(path):
    c, q, l, load, cq, cl = line.split()
    runs.setdefault(c, []).append((float(q), float(l), float(load), float(cq), float(cl)))
label = {"libgomp": "old default (libgomp's, spin count 300000)", "passive": "OMP_WAIT_POLICY=PASSIVE",
         "spin:10000": "new default, GOMP_SPINCOUNT=10000", "llama": "llama.cpp llama-bench (its defaults)"}
med = {c: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for c, rs in runs.items()}
base = med.get("libgomp", (None,))[0]
print()
print("| configuration | quiet tok/s | loaded tok/s | loaded / quiet | quiet vs old default | rounds: quiet/loaded tok/s (others' CPU share quiet/loaded) |")
print("|---|---|---|---|---|---|")
for c in configs:
    if c not in med: continue
    q, l = med[c]
    vs = f"{q / base:.2f}" if base and c != "llama" else ""
    per = ", ".join(f"{a:.0f}/{b:.0f} ({x:.2f}/{y:.2f})" for a, b, _, x, y in runs[c])
    print(f"| {label.get(c, 'GOMP_SPINCOUNT=' + c[5:] if c.startswith('spin:') else c)} | {q:.1f} | {l:.1f} | {l / q:.0%} | {vs} | {per} |")
loads = [r[2] for rs in runs.values() for r in rs]
print(f"\nload average (1 min) during the rounds: {min(loads):.1f}-{max(loads):.1f}")
if base:
    ok = [c for c in med if c.startswith("spin:") and med[c][0] >= 0.95 * base]
    if ok:
        best = max(ok, key=lambda c: med[c][1] / med[c][0])
        print(f"best spin count within 5% of the old default's quiet speed: {best[5:]} "
              f"(quiet {med[best][0]:.1f} = {med[best][0] / base:.0%} of {base:.1f}, loaded {med[best][1]:.1f} = {med[best][1] / med[best][0]:.0%} of quiet)")
    else:
        print("no spin count kept the quiet speed within 5% of the old default's")
PY
