#!/usr/bin/env bash
# The README's promise that the default experiment gives the same report on
# every CPU: run `alphaspin run --config configs/default.yaml` on the real
# default model and compare its report table, digit for digit, with the table
# between the README's `default-report` markers.  Same seed, 2 threads, every
# code path summing in one order (README, "Reproducibility"), so an AMD EPYC
# with AVX2, an Intel Xeon with AVX-512 (with or without AMX) and the
# ALPHASPIN_KERNEL_ISA caps all print this table.  Minutes long (label slow).
# Usage: test_default_report.sh BUILD_DIR SOURCE_DIR
set -u
bin="$1/alphaspin"; src="$2"
model="${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -r "$model" ]; then echo "SKIP: default model not fetched; run \`build/alphaspin fetch-model\`"; exit 77; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sed -n '/<!-- default-report -->/,/<!-- \/default-report -->/p' "$src/README.md" | grep '^|' > "$tmp/want"
if [ ! -s "$tmp/want" ]; then echo "FAIL: README.md has no table between <!-- default-report --> markers"; exit 1; fi
start=$(date +%s)
if ! (cd "$src" && "$bin" run --config configs/default.yaml --set threads=2 --out "$tmp/run" > "$tmp/stdout" 2> "$tmp/stderr"); then
  echo "FAIL: the default experiment exited non-zero:"; tail -5 "$tmp/stderr"; exit 1
fi
grep '^|' "$tmp/stdout" > "$tmp/got"
echo "default experiment: $(( $(date +%s) - start )) s, CPU: $(grep -o -w -E 'avx2|avx512f|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')ISA cap: ${ALPHASPIN_KERNEL_ISA:-none}"
if diff "$tmp/want" "$tmp/got" > "$tmp/diff"; then
  echo "1 passed, 0 failed: the report table equals README.md's"; exit 0
fi
echo "FAIL: the report table differs from README.md's (< README, > this run):"; cat "$tmp/diff"
echo "0 passed, 1 failed"; exit 1
