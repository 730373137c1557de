#!/usr/bin/env bash
# scripts/device_check.sh [BUILD_DIR]: the GPU checks of issue 22 in one command,
# for a machine with an NVIDIA GPU and its driver (an H100 or H200; x86-64).
#
# It does NOT build anything (unless DEVICE_CHECK_BUILD=1, which needs the project's
# Debian build dependencies there, which a GPU image usually lacks): it runs the build made
# on a development machine and carried here as BUILD_DIR (default build/), whose
# libalphaspin_cuda.so links cudart statically and finds cuBLAS / cuBLASLt
# (libcublas.so.13, libcublasLt.so.13) and NCCL (libnccl.so.2, when the build
# found it) through, in order: the toolkit here (/usr/local/cuda), the NVIDIA
# pip wheels of the python3 here (PyTorch's), or LD_LIBRARY_PATH as given.
#
# Steps, each under a time limit (at most 8 minutes in all):
#   1. the GPU (nvidia-smi: name, driver, memory);
#   2. the plugin: size, libraries it resolves, whether alphaspin sees a device;
#   3. ctest -L gpu (test_cuda_backend: tests/tensor/test_backend_ops.c on the
#      cuda backend alone, every op against double-precision references;
#      test_cuda_nccl (issue 23): a one-rank NCCL communicator on this GPU and
#      src/dist's gathers of every size through it, one process; test_cuda_sample:
#      the backend's sampler against sampler_sample, token and RNG state), plus
#      test_backend_open, test_cuda_dequant, test_cuda_train_host and
#      test_cuda_sample_host;
#      and, where the whole build/ was carried, test_cuda_e2e (tests/cli: the
#      command line on the GPU against the CPU: log-probs, greedy batch 1 vs 64,
#      a 50-step SFT);
#   4. where the carry holds build/bench_train and build/bench_inference, the GPU
#      benchmarks of issue 22, item 5 (bench/run_gpu.sh: a DPO LoRA step and
#      generation on the SmolLM2-135M and Gemma-2B shapes against PyTorch + PEFT
#      and transformers' generate, batch-1 decoding against the bandwidth bound,
#      and, where build/alphaspin and build/tests/cli/write_tiny_model are carried
#      too, one alpha-SPIN iteration of 1024 prompts on a random SmolLM2-shaped model),
#      in what is left of the 8 minutes (at most BENCH_BUDGET_S, default 240 s;
#      BENCH=0 skips them), and their one table, also written to $OUT/gpu_bench.md
#      when OUT names a folder (the device tool's).  They need the python3 here to
#      have torch, transformers, peft and safetensors (a PyTorch image has them);
#   5. one summary table (each test, and the worst error per op with its
#      tolerance), then the benchmarks' table.
# What to carry from the development machine (the working tree travels with it;
# at most 64 MiB in all):
#   tests only:           build/CMakeCache.txt, build/libalphaspin_cuda.so and
#                         build/tests/tensor/ (about 5 MB);
#   tests + benchmarks:   the same and build/bench_train, build/bench_inference,
#                         build/alphaspin, build/tests/cli/write_tiny_model
#                         (under 3 MB more); the benchmarks' models are written
#                         on the device (the default GGUF model, 98 MB, is not carried);
#   everything:           the whole build/ (about 50 MB; adds test_cuda_e2e).
# Exit status: 0 when every check passed on a GPU; 1 otherwise (a `gpu` test that
# skips on a machine with a GPU counts as a failure: it means the plugin did not load).
#
# A carried build remembers the absolute paths it was configured at (ctest files,
# test data): when those do not exist here, the script links them to this checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
build=${1:-build}
start=$(date +%s)
log=$(mktemp -d)/device_check
mkdir -p "$(dirname "$log")"
fail=0
note() { printf '%s\n' "$*"; }

if [ "${DEVICE_CHECK_BUILD:-0}" = 1 ]; then
    note "== building in $build (DEVICE_CHECK_BUILD=1)"
    timeout 300 bash scripts/build.sh "$build" || { note "FAIL: build"; exit 1; }
fi
[ -f "$build/CMakeCache.txt" ] || { note "FAIL: no build in $build (carry the development machine's build/, or DEVICE_CHECK_BUILD=1)"; exit 1; }
build=$(cd "$build" && pwd -P)

# 1. The GPU.
note "== GPU"
gpu="none seen"
if command -v nvidia-smi >/dev/null; then
    gpu=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
else
    note "nvidia-smi: not found"
fi
note "GPU: $gpu"

# The configure-time paths of a carried build.
orig_src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
orig_build=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$build/CMakeCache.txt")
for pair in "$orig_src:$root" "$orig_build:$build"; do
    from=${pair%%:*} to=${pair#*:}
    if [ -n "$from" ] && [ "$from" != "$to" ] && [ ! -e "$from" ]; then
        mkdir -p "$(dirname "$from")" && ln -s "$to" "$from" && note "linked $from -> $to (the build was configured there)"
    fi
done
run_dir=$build
[ -n "$orig_build" ] && [ -d "$orig_build/" ] && run_dir=$orig_build
# The tests live in tests/tensor (its own CTestTestfile.cmake), so a carry of
# CMakeCache.txt, libalphaspin_cuda.so and tests/tensor/ alone is enough.
run_dir=$run_dir/tests/tensor

# 2. The plugin and its libraries.
note "== plugin"
plugin=$build/libalphaspin_cuda.so
if [ ! -f "$plugin" ]; then
    note "FAIL: $plugin missing (the build was configured without nvcc or with ALPHASPIN_CUDA=OFF)"
    exit 1
fi
export ALPHASPIN_CUDA_PLUGIN=$plugin
missing() { ldd "$plugin" 2>/dev/null | grep -q 'not found'; }
if missing; then
    dirs=()
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
        { ls "$d"/libcublasLt.so.* || ls "$d"/libnccl.so.*; } >/dev/null 2>&1 && dirs+=("$d")
    done
    if command -v python3 >/dev/null; then
        while IFS= read -r d; do dirs+=("$d"); done < <(timeout 60 python3 - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    for base in list(nvidia.__path__):
        for lib in sorted(glob.glob(os.path.join(base, "*", "lib"))):
            if any(glob.glob(os.path.join(lib, p)) for p in ("libcublas*.so*", "libcudart.so*", "libnccl.so*")):
                print(lib)
except Exception:
    pass
EOF
)
    fi
    for d in "${dirs[@]}"; do
        export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        missing || break
    done
    note "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
fi
note "plugin: $(du -h "$plugin" | cut -f1) $plugin"
ldd "$plugin" | grep -E 'cublas|cudart|nccl|not found' | sed 's/^/  /'
missing && { note "FAIL: the plugin's libraries are not all found (above)"; fail=1; }

# 3. The tests.
note "== tests"
# Test programs need libcmocka and libgomp: the build's copies where this machine has none.
if ldd "$run_dir/test_backend_ops" 2>/dev/null | grep -q 'not found' && [ -d "$run_dir/devlibs" ]; then
    export LD_LIBRARY_PATH=$run_dir/devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    note "using the build's copies of: $(ls "$run_dir/devlibs" | tr '\n' ' ')"
fi
ldd "$run_dir/test_backend_ops" 2>/dev/null | grep 'not found' | sed 's/^/  missing: /'
elapsed() { echo $(( $(date +%s) - start )); }
left=$(( 450 - $(elapsed) ))
[ "$left" -lt 60 ] && left=60
(cd "$run_dir" && timeout "$left" ctest -L gpu -V --timeout "$left" >"$log.gpu" 2>&1)
gpu_rc=$?
# The command line end to end on the GPU (tests/cli/test_cuda_e2e.sh: log-probs,
# greedy batch 1 vs 64, a 50-step SFT, each against the CPU), where the carry
# holds alphaspin and tests/cli (the whole build/).
cli_dir=$(dirname "$(dirname "$run_dir")")
if [ -x "$cli_dir/alphaspin" ] && [ -f "$cli_dir/tests/cli/CTestTestfile.cmake" ]; then
    left=$(( 460 - $(elapsed) ))
    [ "$left" -lt 60 ] && left=60
    (cd "$cli_dir/tests/cli" && timeout "$left" ctest -R '^test_cuda_e2e$' -V --timeout "$left" >>"$log.gpu" 2>&1) || gpu_rc=1
else
    note "tests/cli or alphaspin not carried: the end-to-end test (test_cuda_e2e) does not run"
fi
left=$(( 470 - $(elapsed) ))
[ "$left" -lt 30 ] && left=30
(cd "$run_dir" && timeout "$left" ctest -R '^(test_backend_open|test_cuda_dequant|test_cuda_train_host|test_cuda_sample_host|test_cuda_nccl_load)$' --output-on-failure --timeout "$left" >"$log.cpu" 2>&1)
cpu_rc=$?
grep -hE '^([0-9]+: )?(SKIP|backend |cuda backend|(PASS|FAIL): [0-9]+ gathers|FAIL: cuda device open|(ok|FAIL|PASS): |device: )' "$log.gpu" "$log.cpu" | sed -E "s/^([0-9]+: )?/  /" | sort -u
[ "$gpu_rc" = 0 ] && [ "$cpu_rc" = 0 ] || fail=1
if grep -q 'Skipped\|Not Run' "$log.gpu"; then
    note "FAIL: a gpu test was skipped on this machine (the reason is its SKIP line above)"
    fail=1
fi
grep -q 'No tests were found' "$log.gpu" && { note "FAIL: ctest found no gpu tests in $run_dir"; fail=1; }

# 4. The benchmarks (issue 22, item 5), where the carry holds them; their table follows the summary.
bench_rc=0 bench_table=""
if [ "${BENCH:-1}" != 0 ] && [ -x "$build/bench_train" ] && [ -x "$build/bench_inference" ]; then
    left=$(( 470 - $(elapsed) ))
    budget=${BENCH_BUDGET_S:-240}
    [ "$left" -lt "$budget" ] && budget=$left
    if [ "$budget" -lt 60 ]; then
        note "benchmarks: not run (${budget} s left of the 8 minutes)"
    else
        note "== benchmarks (bench/run_gpu.sh, ${budget} s)"
        bench_table=${OUT:+$OUT/gpu_bench.md}
        bench_table=${bench_table:-$(dirname "$log")/gpu_bench.md}
        BUILD=$build BUDGET_S=$budget BENCH_OUT=$(dirname "$log")/bench TABLE=$bench_table PY=${PY:-python3} \
            bash bench/run_gpu.sh >/dev/null 2>"$log.bench"
        bench_rc=$?
        grep '^run_gpu: ' "$log.bench" | sed 's/^/  /'
        [ "$bench_rc" = 0 ] || { note "FAIL: bench/run_gpu.sh (exit $bench_rc)"; fail=1; }
    fi
else
    note "bench_train / bench_inference not carried (or BENCH=0): the benchmarks do not run"
fi

# 5. The summary.
note ""
note "== summary ($(elapsed) s)"
note "| check | result |"
note "|---|---|"
note "| GPU | $gpu |"
note "| plugin | $(du -h "$plugin" | cut -f1), $(missing && echo 'libraries missing' || echo 'libraries found') |"
grep -hE 'Test +#[0-9]+: ' "$log.gpu" "$log.cpu" | sed -E 's/.*Test +#[0-9]+: ([^ ]+) \.*\** *([A-Za-z ]+[A-Za-z]) +([0-9.]+ sec).*/| \1 | \2 (\3) |/'
if grep -q 'worst error per op' "$log.gpu"; then
    note ""
    note "| op (cuda) | worst error | tolerance |"
    note "|---|---|---|"
    sed -n '/worst error per op/,/test(s) run/p' "$log.gpu" | grep -E '^[0-9]+: +[a-z]' |
        sed -E 's/^[0-9]+: +(.*[^ ]) +([0-9.e+-]+) \(([0-9.e+-]+)\)$/| \1 | \2 | \3 |/'
fi
if [ -n "$bench_table" ] && [ -s "$bench_table" ]; then
    note ""
    cat "$bench_table"
fi
if [ "$fail" != 0 ]; then
    note ""
    note "FAILED; the gpu tests' output:"
    tail -n 60 "$log.gpu"
    tail -n 30 "$log.cpu"
    note "device_check: FAIL"
    exit 1
fi
note "device_check: PASS"
