#!/usr/bin/env bash
# The backend seam (issue 21, STYLE.md "one backend seam"): every ISA-,
# layout- and precision-specific line of the library lives in src/tensor/, the
# CPU backend.  This fails (exit 1, one file:line per violation) when code
# elsewhere in src/ uses x86 intrinsics or their headers, AMX tile calls, a
# BLAS, an #if on __AVX*, a target attribute, or includes one of src/tensor's
# private headers.  Tests, benchmarks and tools may do so (they test and time
# the ISAs one by one); only src/ is checked.
set -euo pipefail
cd "$(dirname "$0")/.."

patterns=(
    -e 'immintrin\.h'
    -e 'x86intrin\.h'
    -e '\b_mm[0-9]*_'
    -e '\b__m(128|256|512)'
    -e '\b_tile_[a-z0-9]+[[:space:]]*\('
    -e 'cblas_'
    -e 'openblas_'
    -e '#[[:space:]]*(if|elif).*__AVX'
    -e '__attribute__[[:space:]]*\(\([[:space:]]*target[[:space:]]*\('
    -e '#[[:space:]]*include[[:space:]]*"tensor/(kernels_impl|lanes_x86|transpose_x86|bf16_x86|vexp|attention_impl)\.h"'
)

hits=$(grep -rnE "${patterns[@]}" src --include='*.c' --include='*.h' | grep -v '^src/tensor/' || true)
if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    echo "seam: $(printf '%s\n' "$hits" | wc -l) violations: ISA-specific code belongs in src/tensor/ behind its public headers" >&2
    exit 1
fi
# Above the seam, arithmetic goes through the backend table (as_backend):
# no direct call of the CPU backend's kernels, LoRA products or training-op
# pieces.  Allowed: thread and precision plumbing, CPU feature names.
calls=$(grep -rnoE '\b(kernel_[a-z0-9_]+|lora_gemm_[a-z0-9_]+|train_(exp_shift_sum|exp_sum|max|neg_scaled_exp|silu_glu_[a-z]+|dropout_[a-z_]+))[[:space:]]*\(' \
    src --include='*.c' --include='*.h' | grep -v '^src/tensor/' |
    grep -vE ':(kernel_(get_threads|set_threads|cap_threads|precision_name|precision_parse|init))[[:space:]]*\($' || true)
if [ -n "$calls" ]; then
    printf '%s\n' "$calls"
    echo "seam: $(printf '%s\n' "$calls" | wc -l) direct calls of the CPU backend above it: call through as_backend (src/tensor/backend.h)" >&2
    exit 1
fi
echo "seam: 0 violations"
