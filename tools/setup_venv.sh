#!/usr/bin/env bash
# Builds the Python environment of the reference tools (tools/) and the peer
# benchmarks (bench/): numpy, gguf-py, llama-cpp-python, torch, transformers.
# Never needed by the test suite.  Default location ~/.cache/alphaspin/venv.
#
# llama-cpp-python is compiled from source.  With GGML_NATIVE the build uses
# AMX tile instructions on CPUs that advertise them, and on machines whose
# kernel does not grant AMX state to the process (as on our 2-core VMs) it dies
# with SIGILL in ggml_backend_amx_mul_mat; so AMX is turned off and the
# AVX-512/VNNI kernels (llama.cpp's best working configuration here) are on.
set -euo pipefail
venv=${1:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/venv}
python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy gguf torch transformers accelerate safetensors sentencepiece jinja2
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
 -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
 -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
  "$venv/bin/pip" install -q --no-cache-dir llama-cpp-python==0.3.36
echo "$venv"
