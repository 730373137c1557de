#!/usr/bin/env bash
# bench/run_gpu.sh (issue 22, item 5's GPU benchmarks) as a dry run on the CPU
# with tiny shapes (DEVICE=cpu TINY=1): every step (the model folders written
# with torch, bench_train and bench_inference --device cpu on them, the
# PyTorch + PEFT and transformers peers, the copy bandwidth) must succeed and
# the table must hold every row; and --device cuda on a machine without a GPU
# must fail in one line.  Needs a python with torch, transformers, peft and
# safetensors ($PYTHON, else ~/.cache/alphaspin/venv, else /tmp/venv-bench,
# else python3): skipped (77) without one.  About a minute on 2 cores.
# Usage: test_run_gpu_dry.sh BUILD_DIR
set -u
build=$1
src=$(cd "$(dirname "$0")/../.." && pwd -P)
for b in bench_train bench_inference; do
  [ -x "$build/$b" ] || { echo "FAIL: $build/$b not built"; exit 1; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# --device cuda where there is no GPU: exit 1 and one line naming the device.
for b in bench_train bench_inference; do
  if [ "$b" = bench_train ]; then args=(--model /nonexistent --device cuda); else args=(/nonexistent f32 --device cuda); fi
  "$build/$b" "${args[@]}" >/dev/null 2>"$tmp/err"
  rc=$?
  if grep -q 'no CUDA device\|plugin' "$tmp/err"; then
    [ "$rc" = 1 ] && [ "$(wc -l < "$tmp/err")" = 1 ] && grep -q -- '--device cuda' "$tmp/err" && echo "ok: $b --device cuda: $(cat "$tmp/err")" ||
      fail "$b --device cuda: exit $rc, expected 1 and one line: $(cat "$tmp/err")"
  else
    echo "note: $b --device cuda opened a device here (a GPU machine): the one-line error is not checked"
  fi
done
"$build/bench_train" --model /nonexistent --device cpux >/dev/null 2>"$tmp/err" && fail "bench_train --device cpux: accepted"

py=""
for c in "${PYTHON:-}" "$HOME/.cache/alphaspin/venv/bin/python" /tmp/venv-bench/bin/python python3; do
  [ -n "$c" ] && command -v "$c" >/dev/null && "$c" -c 'import torch, transformers, peft, safetensors' 2>/dev/null && { py=$c; break; }
done
if [ -z "$py" ]; then
  [ "$failures" = 0 ] || exit 1
  echo "SKIP: no python with torch, transformers, peft and safetensors (set PYTHON): the dry run of run_gpu.sh did not run"; exit 77
fi

DEVICE=cpu TINY=1 BUILD=$build PY=$py BENCH_OUT=$tmp/out BUDGET_S=240 bash "$src/bench/run_gpu.sh" >"$tmp/table" 2>"$tmp/log" ||
  fail "run_gpu.sh: exit $? ($(tail -1 "$tmp/log"))"
cat "$tmp/table"
for row in "copy bandwidth" "tiny-llama: DPO LoRA step" "tiny-llama: generation" "tiny-gemma: DPO LoRA step" "tiny-gemma: generation" \
           "tiny-gemma: batch-1 decoding \\(peer" "tiny-gemma: batch-1 decoding vs the bandwidth bound" \
           "alpha-SPIN iteration, 4 prompts .* seconds per phase \(generate [0-9.]+, references"; do
  grep -qE "^\| $row" "$tmp/table" || fail "the table has no row '$row'"
done
if grep -E 'failed|timeout|not run' "$tmp/table"; then
  fail "a step did not run (above); its log:"
  for f in "$tmp"/out/*.status; do
    read -r rc _ < "$f"; [ "$rc" = 0 ] || { echo "== $(basename "$f" .status) (rc $rc)"; tail -5 "${f%.status}.log"; }
  done
fi
# Every comparison row has its ratio: alphaspin and the peer both ran and both were parsed.
[ "$(grep -cE '^\| tiny-[a-z]+: (DPO|generation|batch-1 decoding \(peer).* \| [0-9.]+x \|' "$tmp/table")" = 5 ] || fail "a comparison row lacks its ratio"
[ -s "$tmp/out/gpu_bench.md" ] || fail "run_gpu.sh wrote no table file"
[ "$failures" = 0 ] && echo "PASS: run_gpu.sh dry run" || { echo "$failures failure(s)"; exit 1; }
