#!/usr/bin/env bash
# llama.cpp's own benchmark binaries, built from source, as the peer of
# bench/run_peer_llama.sh and bench/run_load.sh (issue 20, item 6).
#
# The source is the llama-cpp-python sdist from PyPI (the only registry with
# llama.cpp's tree that this project's machines reach): it carries llama.cpp's
# whole tree under vendor/llama.cpp.  Two targets only, llama-bench and
# llama-batched-bench, Release, static (the binaries need no libllama.so),
# OpenMP and llamafile's sgemm as llama.cpp's defaults, no network features
# (no CURL/OpenSSL, no server, no web UI), into
#   $ALPHASPIN_HOME/llama.cpp/<version>-native/bin   GGML_NATIVE=ON (-march=native)
#   $ALPHASPIN_HOME/llama.cpp/<version>-avx2/bin     GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C/BMI2
#                                                   on, every AVX-512/AVX-VNNI/AMX flag off:
#                                                   the peer of ALPHASPIN_KERNEL_ISA=avx2
#   bash bench/build_llama_cpp.sh [native|avx2|all]   (default all)
# Idempotent: a flavour whose two binaries exist is skipped.  JOBS (default
# nproc) parallel compile jobs; on 2 cores a flavour takes ~10-20 minutes.
# Prints the bin folders it produced, one a line, last.
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36} # pinned: llama.cpp commit 0c1e570 (2026-10-01)
ROOT=${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/llama.cpp
JOBS=${JOBS:-$(nproc)}
PY=${PYTHON3:-python3}
which=${1:-all}
case "$which" in native | avx2 | all) ;; *) echo "usage: $0 [native|avx2|all]" >&2; exit 2 ;; esac

src=$ROOT/src/llama_cpp_python-$VERSION/vendor/llama.cpp
fetch() {
  [ -f "$src/CMakeLists.txt" ] && return
  mkdir -p "$ROOT/src"
  local tgz=$ROOT/src/llama_cpp_python-$VERSION.tar.gz
  if [ ! -f "$tgz" ]; then
    "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$ROOT/src" >&2
  fi
  tar -xzf "$tgz" -C "$ROOT/src"
  [ -f "$src/CMakeLists.txt" ] || { echo "build_llama_cpp: no vendor/llama.cpp in $tgz" >&2; exit 1; }
}

build() { # flavour, cmake flags...
  local flavour=$1; shift
  local out=$ROOT/$VERSION-$flavour
  if [ -x "$out/bin/llama-bench" ] && [ -x "$out/bin/llama-batched-bench" ]; then
    echo "build_llama_cpp: $flavour already built in $out" >&2
    echo "$out/bin"
    return
  fi
  fetch
  command -v cmake >/dev/null || { echo "build_llama_cpp: needs cmake (apt-get install cmake)" >&2; exit 1; }
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  echo "build_llama_cpp: building $flavour into $out ($JOBS jobs)" >&2
  cmake -S "$src" -B "$out/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF \
    "$@" >"$out.cmake.log" 2>&1 || { tail -30 "$out.cmake.log" >&2; exit 1; }
  cmake --build "$out/build" --target llama-bench llama-batched-bench -j "$JOBS" >"$out.build.log" 2>&1 ||
    { tail -30 "$out.build.log" >&2; exit 1; }
  mkdir -p "$out/bin"
  cp "$out/build/bin/llama-bench" "$out/build/bin/llama-batched-bench" "$out/bin/"
  grep -E "GGML_(NATIVE|AVX|AVX2|AVX512|FMA|F16C|BMI2|AMX_[A-Z0-9]+|OPENMP|LLAMAFILE)[A-Z0-9_]*:" "$out/build/CMakeCache.txt" \
    >"$out/flags.txt" || true
  echo "$flavour llama-cpp-python $VERSION" >"$out/VERSION"
  echo "build_llama_cpp: $flavour done" >&2
  echo "$out/bin"
}

if [ "$which" = native ] || [ "$which" = all ]; then
  build native -DGGML_NATIVE=ON
fi
if [ "$which" = avx2 ] || [ "$which" = all ]; then
  build avx2 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
fi
