#!/usr/bin/env bash
# alphaspin against llama.cpp's own benchmark binaries (issue 20, item 6), in
# alternating pairs on the same cores, same GGUF, same thread count.
#   bash bench/run_peer_llama.sh [MODEL.gguf]
# PAIRS (default 5), THREADS (2), BUILD (alphaspin's build directory, build/),
# ISA=native|avx2 (default native: alphaspin picks its kernels at run time and
# llama.cpp is built with GGML_NATIVE=ON; avx2: alphaspin runs with
# ALPHASPIN_KERNEL_ISA=avx2 against llama.cpp built for AVX2/FMA/F16C without
# AVX-512, the comparison an AVX2-only CPU would see), SPIN (GOMP_SPINCOUNT for
# alphaspin, default 10000: what the `alphaspin` command sets for itself,
# src/cli/main.c; "libgomp" leaves it unset; ignored when OMP_WAIT_POLICY or
# GOMP_SPINCOUNT is already set).  llama.cpp is built by
# bench/build_llama_cpp.sh (called here; it skips what is built) and runs with
# its defaults (OpenMP, flash attention "auto", its own thread pool settings).
#
# How the measurements correspond (one pair = one run of each engine):
#   batch-1 decode   alphaspin: bench_inference's decode_b1_tok_s: one random
#                    32-token prompt prefilled and 16 decoding steps (untimed,
#                    the warm-up, as llama-bench's), then 128 greedy
#                    tokens one at a time, tokens/s over those 128 steps.
#                    llama.cpp: `llama-bench -p 0 -n 128 -d 32 -r 1`: the
#                    tg128 test at depth 32 (32 random tokens prefilled,
#                    untimed), 128 single-token decodes, one timed repetition
#                    after llama-bench's warm-up.
#   batch-32         alphaspin: decode_b32_tok_s: 32 sequences with their own
#   aggregate        random 32-token prompts (prefilled together, untimed),
#                    then 128 steps each decoding one token for every sequence
#                    (a 32-token batch, logits for all 32), 32*128/time.
#                    llama.cpp: `llama-batched-bench -npp 32 -ntg 128 -npl 32
#                    -c 5120 -no-kvu` (prompts not shared, a KV stream per
#                    sequence, llama.cpp's default and 3x faster here than
#                    -kvu; 32*(32+128) cells):
#                    S_TG, the same 128 steps of 32 tokens with all logits,
#                    32*128/T_TG.  (Its tokens are random, not argmax: it does
#                    not pay the 32 argmaxes over the vocabulary per step that
#                    alphaspin's figure includes.)
#   prefill 512      alphaspin: prefill_512_tok_s: one forward over 512 random
#                    tokens from an empty cache, median of 5 passes.
#                    llama.cpp: `llama-bench -p 512 -n 0 -r 5`: pp512 from an
#                    empty cache, median of its 5 samples (samples_ts).
# Prints the CPU, the load average before and after, each pair's figures and
# ratios, and the median of the ratios, as Markdown.
# On a shared host: before each pair the script waits (up to QUIET_WAIT
# seconds, default 90) for the machine to be idle (other work under QUIET_MAX,
# default 0.10 of all CPUs, over 1 s), and it records the share of the CPUs
# that other processes took while each engine ran (bench/contention.py; 0.5 =
# one of 2 cores).  The medians are given over all pairs and over the pairs
# where neither engine saw more than QUIET_MAX of other work.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
QUIET_MAX=${QUIET_MAX:-0.10}; QUIET_WAIT=${QUIET_WAIT:-90}
PAIRS=${PAIRS:-5}; THREADS=${THREADS:-2}; BUILD=${BUILD:-build}; ISA=${ISA:-native}; SPIN=${SPIN:-10000}
B=32; T=512; P=32; N=128
case "$ISA" in native) aenv=() ;; avx2) aenv=(ALPHASPIN_KERNEL_ISA=avx2) ;; *) echo "ISA must be native or avx2" >&2; exit 2 ;; esac
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] && [ "$SPIN" != libgomp ]; then aenv+=(GOMP_SPINCOUNT="$SPIN"); fi
bash scripts/build.sh "$BUILD" >/dev/null
bin=$(bash bench/build_llama_cpp.sh "$ISA" | tail -1)

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo)
have=""; for f in avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8; do
  if [[ " ${flags#*:} " == *" $f "* ]]; then have+="$f "; else have+="(no $f) "; fi
done
echo "CPU: $cpu, $(nproc) cpus; flags: $have"
echo "alphaspin: $BUILD at $(git rev-parse --short HEAD)$(git diff --quiet -- src 2>/dev/null || echo ' + uncommitted src changes'), env: ${aenv[*]:-none}"
echo "llama.cpp: $(cat "$bin/../VERSION" 2>/dev/null) ($bin)"
echo "model: $model; threads: $THREADS; load before: $(uptime | sed 's/.*load average: //')"

out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
cont=(python3 bench/contention.py run)
ours() { "${cont[@]}" "$out/c_a" -- env "${aenv[@]}" "$BUILD"/bench_inference "$model" q8 "$THREADS" "$B" "$T" 2>/dev/null | tail -1; }
peer() {
  "${cont[@]}" "$out/c_b" -- "$bin/llama-bench" -m "$model" -t "$THREADS" -p 0 -n "$N" -d "$P" -r 1 -o json 2>/dev/null >"$out/tg.json"
  "${cont[@]}" "$out/c_b" -- "$bin/llama-batched-bench" -m "$model" -t "$THREADS" -c $((B * (P + N))) -b 2048 -ub 512 \
    -npp "$P" -ntg "$N" -npl "$B" -no-kvu --output-format jsonl 2>/dev/null | grep '^{' >"$out/bb.jsonl"
  "${cont[@]}" "$out/c_b" -- "$bin/llama-bench" -m "$model" -t "$THREADS" -p "$T" -n 0 -r 5 -o json 2>/dev/null >"$out/pp.json"
  python3 - "$out" <<'PY'
import json, statistics, sys, os
d = sys.argv[1]
tg = json.load(open(os.path.join(d, "tg.json")))[0]
pp = json.load(open(os.path.join(d, "pp.json")))[0]
bb = json.loads(open(os.path.join(d, "bb.jsonl")).read().splitlines()[-1])
print(json.dumps({"b1": statistics.median(tg["samples_ts"]), "bB": bb["speed_tg"], "pf": statistics.median(pp["samples_ts"])}))
PY
}
for p in $(seq "$PAIRS"); do
  idle=$(python3 bench/contention.py wait "$QUIET_MAX" "$QUIET_WAIT")
  rm -f "$out/c_a" "$out/c_b"
  if [ $((p % 2)) = 1 ]; then a=$(ours); b=$(peer); order=ab; else b=$(peer); a=$(ours); order=ba; fi
  ca=$(sort -g "$out/c_a" | tail -1); cb=$(sort -g "$out/c_b" | tail -1) # the most any of an engine's runs saw
  echo "$order|$a|$b|$(cut -d' ' -f1 /proc/loadavg) $idle $ca $cb" >>"$out/pairs"
  echo "pair $p: $order, others before $idle, during $ca / $cb" >&2
done
echo "load after: $(uptime | sed 's/.*load average: //')"
python3 - "$out/pairs" "$B" "$T" "$QUIET_MAX" <<'PY'
import json, statistics, sys
path, B, T, qmax = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = []
for line in open(path):
    order, a, b, load = line.strip().split("|")
    a, b = json.loads(a), json.loads(b)
    rows.append((order, (a["decode_b1_tok_s"], b["b1"]), (a[f"decode_b{B}_tok_s"], b["bB"]), (a[f"prefill_{T}_tok_s"], b["pf"]), load))
print()
print(f"| pair (first) | load avg, others' CPU before / during alphaspin / during llama.cpp | b=1 alphaspin | b=1 llama.cpp | ratio | b={B} alphaspin | b={B} llama.cpp | ratio | prefill {T} alphaspin | prefill {T} llama.cpp | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for i, (order, *ms, load) in enumerate(rows, 1):
    cells = " | ".join(f"{x:.1f} | {y:.1f} | {x / y:.2f}x" for x, y in ms)
    la, before, ca, cb = load.split()
    print(f"| {i} ({'alphaspin' if order == 'ab' else 'llama.cpp'}) | {la}, {float(before):.2f} / {float(ca):.2f} / {float(cb):.2f} | {cells} |")
med = lambda k, j: statistics.median(r[k][j] for r in rows)
ratios = [[r[k][0] / r[k][1] for r in rows] for k in (1, 2, 3)]
cells = " | ".join(f"{med(k, 0):.1f} | {med(k, 1):.1f} | **{statistics.median(ratios[k - 1]):.2f}x**" for k in (1, 2, 3))
print(f"| median | | {cells} |")
quiet = [i for i, r in enumerate(rows) if max(map(float, r[4].split()[2:])) <= qmax]
if quiet:
    qr = [[ratios[k][i] for i in quiet] for k in range(3)]
    cells = " | ".join(f"{statistics.median(rows[i][k][0] for i in quiet):.1f} | {statistics.median(rows[i][k][1] for i in quiet):.1f} | "
                       f"**{statistics.median(qr[k - 1]):.2f}x**" for k in (1, 2, 3))
    print(f"| median of the {len(quiet)} quiet pairs (others <= {qmax:.2f} during both) | | {cells} |")
print()
for name, k, target in zip(("batch-1 decode", f"batch-{B} aggregate", f"prefill {T}"), range(3), (1.3, 2.0, 2.0)):
    rs = ratios[k]
    m = statistics.median(rs)
    q = f"; quiet pairs {statistics.median(ratios[k][i] for i in quiet):.2f}x" if quiet else "; no quiet pair"
    print(f"- {name}: median ratio {m:.2f}x (range {min(rs):.2f}-{max(rs):.2f}){q}; target >= {target}x: "
          f"{'met' if m >= target else 'not met'} ({sum(x >= target for x in rs)} of {len(rs)} pairs reach it)")
PY
