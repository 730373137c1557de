#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, install what the
# project needs, build build/alphaspin, fetch the default model and run a short
# generation with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build
model=$(build/alphaspin fetch-model)
echo "setup: default model at $model" >&2
build/alphaspin generate --chat --prompt "What is 12 + 30? Answer briefly." --max-new-tokens 48
