#!/usr/bin/env bash
# Builds every libFuzzer target in fuzz/ and runs each for SECONDS.
#   bash scripts/run_fuzz.sh [SECONDS]     (default 60; CI runs 60)
# Works from a clean clone: configures its own build folder (build-fuzz, or
# $FUZZ_BUILD_DIR) with clang, ASan+UBSan and -DALPHASPIN_FUZZ=ON, builds the
# targets and their seed generators, builds a seed corpus per target, fuzzes.
# Exits non-zero if any target finds a crash, leak, UB or timeout; the
# reproducer is left in <build>/artifacts/<target>/.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
JOBS="${FUZZ_JOBS:-$(nproc)}"

command -v clang >/dev/null || { echo "run_fuzz.sh: clang not found (libFuzzer needs clang)" >&2; exit 2; }
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

# Reuse the folder only if it was configured by this script (same generator, clang).
if [[ -f "$BUILD/CMakeCache.txt" ]] && ! grep -q '^ALPHASPIN_FUZZ:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  echo "run_fuzz.sh: $BUILD exists but is not a fuzz build; set FUZZ_BUILD_DIR" >&2
  exit 2
fi
CC=clang cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DALPHASPIN_FUZZ=ON -DALPHASPIN_SANITIZE=ON >/dev/null
cmake --build "$BUILD" --target fuzz_all -j "$JOBS"

targets=()
for src in "$ROOT"/fuzz/fuzz_*.c; do
  [[ -e "$src" ]] || continue
  name="$(basename "$src" .c)"
  targets+=("${name#fuzz_}")
done
[[ ${#targets[@]} -gt 0 ]] || { echo "run_fuzz.sh: no fuzz/fuzz_*.c targets" >&2; exit 2; }

# One finding (not the tool's own failure) is enough to fail, but every target runs.
status=0
for name in "${targets[@]}"; do
  exe="$BUILD/fuzz/fuzz_$name"
  corpus="$BUILD/corpus/$name"        # grows across runs (libFuzzer adds new inputs)
  artifacts="$BUILD/artifacts/fuzz_$name"
  mkdir -p "$corpus" "$artifacts"
  if [[ -x "$BUILD/fuzz/seed_$name" ]]; then
    "$BUILD/fuzz/seed_$name" "$corpus"
  fi
  if [[ -d "$ROOT/fuzz/corpus/$name" ]]; then
    cp -n "$ROOT/fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null || true
  fi
  dict=()
  [[ -f "$ROOT/fuzz/$name.dict" ]] && dict=(-dict="$ROOT/fuzz/$name.dict")
  echo "== fuzz_$name: ${SECONDS_PER_TARGET}s, corpus $(ls "$corpus" | wc -l) files"
  log="$BUILD/fuzz_$name.log"
  set +e
  # -timeout: one input taking > 10 s is a hang; -rss_limit_mb bounds memory use;
  # ASAN detect_leaks is on by default, so leaks fail the run too.
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$exe" "$corpus" "${dict[@]}" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" || true
  if [[ $rc -ne 0 ]]; then
    echo "run_fuzz.sh: fuzz_$name FAILED (exit $rc); log: $log; reproducer in $artifacts/" >&2
    tail -n 40 "$log" >&2
    status=1
  else
    echo "fuzz_$name: no crash"
  fi
done
exit $status
