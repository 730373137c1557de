#!/usr/bin/env bash
# bench/run_gpu.sh: the GPU benchmarks of issue 22, item 5, in one time budget,
# peers in the same run on the same GPU.  Prints ONE Markdown table (measure,
# alphaspin, peer, ratio, peak memory) and writes it to $TABLE.
#
#   copy bandwidth        bench/gpu/copy_bandwidth.py: device-to-device copy, (read + written) bytes / s
#   DPO LoRA step         bench_train --device D (HF folder, --precision bf16, rank 16, PAIRS x LEN tokens,
#                         prompt PROMPT, references precomputed) against bench/gpu/peer_dpo_step.py
#                         (PyTorch eager + PEFT, bf16, SDPA); tokens/s and model FLOPs / (step time x bf16 peak)
#   generation            bench_inference --generate GEN_PROMPTS --new-tokens GEN_NEW --batch GEN_BATCH
#                         --temperature 1 against bench/gpu/peer_generate.py (transformers' generate, the
#                         best of PEER_BATCHES); aggregate tokens/s
#   batch-1 decoding      bench_inference BENCH_ONLY=b1 (Gemma-2B shape): tokens/s against the bound
#                         copy bandwidth / weight bytes, and transformers' batch-1 generate
#   alpha-SPIN iteration  `alphaspin run --device D` for one iteration of SPIN_PROMPTS prompts (the project's
#                         arithmetic data, answers up to SPIN_TOKENS tokens, LoRA rank 16, no benchmark
#                         tasks) on a random SmolLM2-135M-shaped GGUF with its vocabulary size
#                         (tests/cli/write_tiny_model: a byte-level tokenizer padded with unused tokens;
#                         the default model is not on the device): seconds per phase, from
#                         iter_1/summary.json.  No peer.  Needs alphaspin and write_tiny_model in BUILD;
#                         SPIN_S of the budget is kept for it (0: not run).
# on each shape of SHAPES (bench/gpu/make_hf_model.py writes each as a random bf16 Hugging Face
# folder under MODEL_DIR first; both engines load that folder).
#
# Peak memory: on a GPU, the most nvidia-smi's memory.used rose above its value before the step
# (polled every 100 ms: the process's whole footprint, CUDA context included, the same way for
# both engines; the peers also report torch.cuda.max_memory_allocated in their JSON); on the
# CPU, the process's peak RSS.
#
# Each step runs under `timeout`, its limit the smaller of its own cap and what is left of
# its shape's share of BUDGET_S (shape k of n ends at k/n of it); a step with under 15 s left, or whose engine failed, shows as "not run" / "failed"
# / "timeout" in the table (the run goes on).  Exit status 0 unless the setup failed.
#
# Parameters (environment):
#   DEVICE=cuda            cpu for a dry run (no GPU); TINY=1: tiny-llama and tiny-gemma shapes, a few tokens
#   BUILD=build            where bench_train, bench_inference (and libalphaspin_cuda.so) are
#   PY=python3             a python with torch, transformers, peft, safetensors
#   BUDGET_S=240           the whole run's budget, seconds
#   SHAPES="smollm2-135m gemma-2b"   B1_SHAPE=gemma-2b (the batch-1 decode's shape)
#   PAIRS=4 LEN=512 PROMPT=64 RANK=16 STEPS=3 PEER_STEPS=5 CKPT=0 (bench_train's --checkpointing)
#   GEN_PROMPTS=256 GEN_NEW=256 GEN_BATCH=256 PROMPT_LEN=32 PEER_BATCHES=32,128,256 B1_TOKENS=64
#   PREC=bf16              bench_inference's precision
#   SPIN_S=90 SPIN_PROMPTS=1024 SPIN_TOKENS=128   the alpha-SPIN iteration's share of the budget and size
#   PEAK_TFLOPS            the GPU's dense bf16 peak (default from its name: H100 SXM / H200 989.4,
#                          H100 PCIe 756, H100 NVL 835)
#   BENCH_OUT=(mktemp -d)  the steps' JSON and logs; TABLE=$BENCH_OUT/gpu_bench.md; MODEL_DIR=(mktemp -d)
#   KEEP_MODELS=0          1 keeps the written model folders
set -uo pipefail
# Paths given in the environment are the caller's (relative to where it runs); the defaults the repository's.
caller=$(pwd -P)
abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$caller" "$1" ;; esac; }
for v in BUILD BENCH_OUT TABLE MODEL_DIR; do [ -n "${!v:-}" ] && printf -v "$v" '%s' "$(abs "${!v}")"; done
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}; TINY=${TINY:-0}; BUILD=${BUILD:-build}; PY=${PY:-python3}; BUDGET_S=${BUDGET_S:-240}
if [ "$TINY" = 1 ]; then
  SHAPES=${SHAPES:-"tiny-llama tiny-gemma"}; B1_SHAPE=${B1_SHAPE:-tiny-gemma}
  PAIRS=${PAIRS:-2}; LEN=${LEN:-32}; PROMPT=${PROMPT:-8}; STEPS=${STEPS:-2}; PEER_STEPS=${PEER_STEPS:-2}
  GEN_PROMPTS=${GEN_PROMPTS:-8}; GEN_NEW=${GEN_NEW:-8}; GEN_BATCH=${GEN_BATCH:-8}; PROMPT_LEN=${PROMPT_LEN:-8}
  PEER_BATCHES=${PEER_BATCHES:-2,8}; B1_TOKENS=${B1_TOKENS:-8}; PREC=${PREC:-bf16}; COPY_ARGS="--tiny"
  SPIN_S=${SPIN_S:-40}; SPIN_PROMPTS=${SPIN_PROMPTS:-4}; SPIN_TOKENS=${SPIN_TOKENS:-8}
  SPIN_MODEL=(--embd 64 --ff 96 --heads 4 --kv-heads 2 --layers 2 --vocab 512)
else
  SHAPES=${SHAPES:-"smollm2-135m gemma-2b"}; B1_SHAPE=${B1_SHAPE:-gemma-2b}
  PAIRS=${PAIRS:-4}; LEN=${LEN:-512}; PROMPT=${PROMPT:-64}; STEPS=${STEPS:-3}; PEER_STEPS=${PEER_STEPS:-5}
  GEN_PROMPTS=${GEN_PROMPTS:-256}; GEN_NEW=${GEN_NEW:-256}; GEN_BATCH=${GEN_BATCH:-256}; PROMPT_LEN=${PROMPT_LEN:-32}
  PEER_BATCHES=${PEER_BATCHES:-32,128,256}; B1_TOKENS=${B1_TOKENS:-64}; PREC=${PREC:-bf16}; COPY_ARGS=""
  SPIN_S=${SPIN_S:-90}; SPIN_PROMPTS=${SPIN_PROMPTS:-1024}; SPIN_TOKENS=${SPIN_TOKENS:-128}
  SPIN_MODEL=(--embd 576 --ff 1536 --heads 9 --kv-heads 3 --layers 30 --vocab 49152)
fi
RANK=${RANK:-16}; CKPT=${CKPT:-0}; THREADS=${THREADS:-$(nproc)}
BENCH_OUT=${BENCH_OUT:-$(mktemp -d)}; mkdir -p "$BENCH_OUT"; BENCH_OUT=$(cd "$BENCH_OUT" && pwd -P)
TABLE=${TABLE:-$BENCH_OUT/gpu_bench.md}
MODEL_DIR=${MODEL_DIR:-$(mktemp -d)}; mkdir -p "$MODEL_DIR"
[ "${KEEP_MODELS:-0}" = 1 ] || trap 'rm -rf "$MODEL_DIR"' EXIT
start=$(date +%s)
say() { printf 'run_gpu: %s\n' "$*" >&2; }

# Setup: binaries, their libraries, the python.
for b in bench_train bench_inference; do
  [ -x "$BUILD/$b" ] || { say "FAIL: $BUILD/$b not built (ninja -C $BUILD $b)"; exit 1; }
done
if ldd "$BUILD/bench_train" 2>/dev/null | grep -q 'not found' && [ -d "$BUILD/tests/tensor/devlibs" ]; then
  export LD_LIBRARY_PATH=$(cd "$BUILD/tests/tensor/devlibs" && pwd -P)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if ldd "$BUILD/bench_train" 2>/dev/null | grep -q 'not found'; then
  say "FAIL: $BUILD/bench_train: $(ldd "$BUILD/bench_train" | grep 'not found' | tr -s ' \t\n' ' ')"; exit 1
fi
[ -f "$BUILD/libalphaspin_cuda.so" ] && [ -z "${ALPHASPIN_CUDA_PLUGIN:-}" ] && export ALPHASPIN_CUDA_PLUGIN=$(cd "$BUILD" && pwd -P)/libalphaspin_cuda.so
if ! "$PY" -c 'import torch, transformers, peft, safetensors' 2>/dev/null; then
  say "FAIL: $PY lacks torch, transformers, peft or safetensors (PY=... names another python)"; exit 1
fi
gpu=cpu
if [ "$DEVICE" != cpu ]; then
  gpu=$("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>/dev/null)
  [ -n "$gpu" ] || { say "FAIL: DEVICE=$DEVICE but torch sees no CUDA device"; exit 1; }
fi
export OMP_WAIT_POLICY=PASSIVE
gpu_index=0; [[ "$DEVICE" == cuda:* ]] && gpu_index=${DEVICE#cuda:}

# step NAME CAP CMD...: CMD under timeout min(CAP, what is left of the budget); its stdout's last
# line into $BENCH_OUT/NAME.json, stderr into $BENCH_OUT/NAME.log, "rc peak_mib seconds" into $BENCH_OUT/NAME.status.
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  [ "$cap" -lt "$left" ] && left=$cap
  if [ "$left" -lt 15 ]; then echo "skipped 0 0" > "$BENCH_OUT/$name.status"; say "$name: not run (budget)"; return 1; fi
  local poll="" base=0 t0
  if [ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null; then
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$gpu_index" 2>/dev/null | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$gpu_index" -lms 100 > "$BENCH_OUT/$name.smi" 2>/dev/null &
    poll=$!
  fi
  say "$name (limit ${left} s): $*"
  t0=$(date +%s)
  timeout "$left" "$@" > "$BENCH_OUT/$name.out" 2> "$BENCH_OUT/$name.log"
  local rc=$? peak=0
  [ -n "$poll" ] && { kill "$poll" 2>/dev/null; wait "$poll" 2>/dev/null; }
  [ -f "$BENCH_OUT/$name.smi" ] && peak=$(awk -v b="${base:-0}" 'NF && $1+0 > m {m = $1+0} END {print (m > b ? m - b : 0)}' "$BENCH_OUT/$name.smi")
  grep '^{' "$BENCH_OUT/$name.out" | tail -1 > "$BENCH_OUT/$name.json"
  echo "$rc $peak $(( $(date +%s) - t0 ))" > "$BENCH_OUT/$name.status"
  [ "$rc" = 0 ] || say "$name: exit $rc ($( [ "$rc" = 124 ] && echo timeout || tail -1 "$BENCH_OUT/$name.log"))"
  return "$rc"
}

# Shape k of n may run until start + k/n of the budget (what one leaves, the next gets), so
# that a slow first shape does not starve the last; the copy bandwidth counts in the first.
spin_ok=0
[ "$SPIN_S" -gt 0 ] && [ -x "$BUILD/alphaspin" ] && [ -x "$BUILD/tests/cli/write_tiny_model" ] && spin_ok=1
[ "$spin_ok" = 1 ] || SPIN_S=0
shapes_s=$(( BUDGET_S - SPIN_S ))
n_shapes=$(echo $SHAPES | wc -w); k=1
deadline=$(( start + shapes_s / n_shapes ))
step copy_bw 60 "$PY" bench/gpu/copy_bandwidth.py --device "$DEVICE" $COPY_ARGS
for shape in $SHAPES; do
  deadline=$(( start + shapes_s * k / n_shapes )); k=$((k + 1))
  dir=$MODEL_DIR/$shape
  step "model_$shape" 120 "$PY" bench/gpu/make_hf_model.py --shape "$shape" --out "$dir" --device "$DEVICE" || continue
  # Big shapes get the larger caps; the order is the order of importance.
  step "train_alphaspin_$shape" 120 "$BUILD"/bench_train --model "$dir" --device "$DEVICE" --mode lora --precision bf16 \
    --pairs "$PAIRS" --len "$LEN" --prompt "$PROMPT" --rank "$RANK" --steps "$STEPS" --checkpointing "$CKPT" --threads "$THREADS"
  step "train_peer_$shape" 90 "$PY" bench/gpu/peer_dpo_step.py --model "$dir" --device "$DEVICE" --pairs "$PAIRS" --len "$LEN" \
    --prompt "$PROMPT" --rank "$RANK" --steps "$PEER_STEPS"
  step "gen_alphaspin_$shape" 90 "$BUILD"/bench_inference "$dir" "$PREC" "$THREADS" --device "$DEVICE" --generate "$GEN_PROMPTS" \
    --new-tokens "$GEN_NEW" --batch "$GEN_BATCH" --prompt-len "$PROMPT_LEN" --temperature 1
  b1=0; [ "$shape" = "$B1_SHAPE" ] && b1=$B1_TOKENS
  step "gen_peer_$shape" 90 "$PY" bench/gpu/peer_generate.py --model "$dir" --device "$DEVICE" --prompts "$GEN_PROMPTS" \
    --new-tokens "$GEN_NEW" --prompt-len "$PROMPT_LEN" --batches "$PEER_BATCHES" --b1-tokens "$b1"
  if [ "$shape" = "$B1_SHAPE" ]; then
    step "b1_alphaspin_$shape" 60 env BENCH_ONLY=b1 "$BUILD"/bench_inference "$dir" "$PREC" "$THREADS" --device "$DEVICE" \
      --b1-tokens "$B1_TOKENS"
  fi
  cp "$dir/config.json" "$BENCH_OUT/config_$shape.json" 2>/dev/null
  du -cb "$dir"/*.safetensors 2>/dev/null | tail -1 | cut -f1 > "$BENCH_OUT/weight_bytes_$shape"
  [ "${KEEP_MODELS:-0}" = 1 ] || rm -rf "$dir"  # Gemma-2B is 5 GB: one folder on disk at a time
done

# One alpha-SPIN iteration, in what is left of the budget.
spin_label=""
if [ "$spin_ok" = 1 ]; then
  deadline=$(( start + BUDGET_S ))
  spin_label="$SPIN_PROMPTS prompts x up to $SPIN_TOKENS tokens, arith data, a random model (write_tiny_model ${SPIN_MODEL[*]})"
  if "$BUILD/tests/cli/write_tiny_model" "$MODEL_DIR/spin.gguf" --wtype f32 --ctx 512 "${SPIN_MODEL[@]}" > "$BENCH_OUT/spin_model.log" 2>&1; then
    step spin "$SPIN_S" "$BUILD/alphaspin" run --config configs/alphaspin.yaml --set model.path="$MODEL_DIR/spin.gguf" \
      --set model.chat_template=chatml --set device="$DEVICE" --set data.generator=arith --set data.generator_items="$SPIN_PROMPTS" \
      --set prompts="$SPIN_PROMPTS" --set iterations=1 --set train.epochs=1 --set train.max_answer_len="$SPIN_TOKENS" \
      --set generation.max_new_tokens="$SPIN_TOKENS" --set lora.enabled=true --set lora.rank=16 --set eval.tasks= --quiet \
      --out "$BENCH_OUT/spin_run" &&
      "$PY" -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["timing_s"], open(sys.argv[2], "w"))' \
        "$BENCH_OUT/spin_run/iter_1/summary.json" "$BENCH_OUT/spin_timing.json"
  else
    echo "1 0 0" > "$BENCH_OUT/spin.status"; say "spin: write_tiny_model failed: $(tail -1 "$BENCH_OUT/spin_model.log")"
  fi
fi

"$PY" bench/gpu/summarize.py --spin "$spin_label" --out "$BENCH_OUT" --shapes "$SHAPES" --b1-shape "$B1_SHAPE" --device "$DEVICE" --gpu "$gpu" \
  --seconds $(( $(date +%s) - start )) --budget "$BUDGET_S" --pairs "$PAIRS" --len "$LEN" --prompt "$PROMPT" --rank "$RANK" \
  --gen "$GEN_PROMPTS x $GEN_NEW (prompt $PROMPT_LEN, batch $GEN_BATCH; peer batches $PEER_BATCHES)" ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"} \
  > "$TABLE"
rc=$?
cat "$TABLE"
say "table: $TABLE; steps' JSON and logs: $BENCH_OUT"
exit $rc
