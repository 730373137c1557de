#!/usr/bin/env bash
# The README's second command: the whole test suite.
#   1. release build (-Wall -Wextra) and ctest
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build and ctest (without the
#      minutes-long tests on the real model, label `slow`, which step 1 ran)
#   3. every fuzz target for a bounded time (FUZZ_SECONDS, default 60)
# Tests that need the default model fetch it first (and skip, saying so, if it
# cannot be fetched); tests that need ../shared/data skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build
build/alphaspin fetch-model >/dev/null || echo "test: could not fetch the default model; tests that need it will be skipped" >&2
(cd build && ctest --output-on-failure -j 2)
if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DALPHASPIN_SANITIZE=ON
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j 2 -LE slow)
fi
if [ "${SKIP_FUZZ:-0}" != 1 ] && [ -f scripts/run_fuzz.sh ]; then
  bash scripts/run_fuzz.sh "${FUZZ_SECONDS:-60}"
fi
