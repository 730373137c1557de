#!/usr/bin/env bash
# Configures and builds alphaspin into build/ (or $1), warnings on.
# Extra arguments go to cmake (e.g. -DALPHASPIN_SANITIZE=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}; shift || true
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$dir/CMakeCache.txt" ]; then cmake -S . -B "$dir" "${gen[@]}" "$@" >/dev/null; fi
cmake --build "$dir" -j "$(nproc)"
