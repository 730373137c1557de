#!/usr/bin/env bash
# Cross-ISA bitwise reproducibility, end to end through the command line: the same
# seed and thread count give the same bytes whichever SIMD code runs.  Every
# ALPHASPIN_KERNEL_ISA this CPU has (scalar, avx2, avx512, amx; the ones it lacks
# are skipped, saying so) runs, with --threads 2, on a tiny random llama
# (tests/cli/write_tiny_model) with F32 weights and again with Q4_1 weights:
#   (a) logprobs of a ~200-token text, --precision f32 and q8;
#   (b) sampled generate (temperature 1, a seed) of 6 prompts at --batch-size 5
#       (continuous batching: the 6th joins when one ends), q8 and f32;
#   (c) a 3-step LoRA sft (grad accumulation over two micro-batches, dropout): the
#       adapter, the optimizer state (train_state.safetensors), adapter_config.json,
#       log.jsonl;
#   (d) a 2-iteration alpha-SPIN run with an evaluation task: every file of the run
#       folder (config.yaml, summaries, eval.json, adapters, pairs/losers, metrics).
# Every file is compared byte for byte with the first ISA's; a mismatch names the
# file, the ISA and the first differing line.  Not compared, as they legitimately
# differ from run to run: wall-clock fields, removed from the JSON before comparing
# (summary.json "timing_s", eval.json "total_evaluation_time_seconds", sft
# log.jsonl "tokens_per_s" and "elapsed_s", sampler.json "seconds" and
# "gfn_train_seconds").  Paths are the same for every ISA (one model file, one data
# file, run folders with the same basename), so files that hold them (config.yaml,
# adapter_config.json, eval.json) are compared whole.
# Usage: test_isa_repro.sh BUILD_DIR   (ALPHASPIN_ISAS="scalar avx512" picks ISAs;
#        ISA_REPRO_KEEP=DIR keeps the outputs in DIR)
set -u
build="$1"
bin="$build/alphaspin"
mk="$build/tests/cli/write_tiny_model"
command -v python3 >/dev/null || { echo "SKIP: python3 absent (it removes the timing fields before comparing)"; exit 77; }
[ -x "$bin" ] && [ -x "$mk" ] || { echo "FAIL: $bin or $mk not built"; exit 1; }
if [ -n "${ISA_REPRO_KEEP:-}" ]; then
  tmp="$ISA_REPRO_KEEP"; rm -rf "$tmp"; mkdir -p "$tmp"
else
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fi
export OMP_WAIT_POLICY=PASSIVE
T=2 # --threads: results are promised bitwise for a seed and a thread count

# The ISAs as kernel_isa_available (src/tensor/kernels.c) defines them; the binary
# would silently cap an unavailable one to the best it has, which would compare a
# path with itself.
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { local f; for f; do [[ "$flags" == *" $f "* ]] || return 1; done; }
if [ -n "${ALPHASPIN_ISAS:-}" ]; then
  read -ra isas <<< "$ALPHASPIN_ISAS"
else
  isas=(scalar)
  if has avx2 fma f16c; then isas+=(avx2); else echo "SKIP ISA avx2: this CPU lacks avx2/fma/f16c"; fi
  if has avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni; then isas+=(avx512); else echo "SKIP ISA avx512: this CPU lacks avx512f/bw/vl/vnni"; fi
  if has avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni amx_tile amx_int8 amx_bf16; then isas+=(amx); else echo "SKIP ISA amx: this CPU lacks amx_tile/amx_int8/amx_bf16"; fi
fi
echo "ISAs compared: ${isas[*]}"
[ "${#isas[@]}" -ge 2 ] || { echo "SKIP: fewer than two ISAs on this CPU"; exit 77; }

# ---- inputs, the same for every ISA ----
in="$tmp/in"
mkdir -p "$in"
# 256 wide, 4 heads of 64, FFN 512: rows of 8 quantisation blocks and 2 of the GEMM's
# K blocks, enough for the kernels' split sums (chains by block position, K blocks,
# 16-lane partial sums) to take different orders if an ISA sums differently.
shape=(--ctx 512 --seed 7 --embd 256 --ff 512 --heads 4 --kv-heads 2 --layers 2)
"$mk" "$in/f32.gguf" "${shape[@]}" && "$mk" "$in/q4_1.gguf" --wtype q4_1 "${shape[@]}" || { echo "FAIL: write_tiny_model"; exit 1; }
# ~200 tokens: the vocabulary is single characters plus " the", "ing", " and", " Hello", "é" in two byte tokens.
for i in 1 2 3 4 5; do printf 'Hello the king and the queen, %d sing, ring; é is é. ' "$i"; done > "$in/text.txt"
for i in 1 2 3 4 5 6; do printf '{"prompt": "Q%d: the king and" }\n' "$i"; done > "$in/prompts.jsonl"
{
  for i in 1 2 3 4 5 6 7 8 9; do
    printf '{"messages": [{"role": "user", "content": "What is %d+%d?"}, {"role": "assistant", "content": "It is %d, the sum."}]}\n' "$i" "$i" $((2 * i))
  done
  printf '%s\n' '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "And?"}, {"role": "assistant", "content": "and the end"}]}'
  printf '%s\n' '{"messages": [{"role": "user", "content": "Say é"}, {"role": "assistant", "content": "é é é"}]}'
  printf '%s\n' '{"prompt": "Sing", "response": "ing ing ing"}' '{"question": "Who?", "answer": "The king. #### 1"}'
} > "$in/conv.jsonl"
printf '{"q": "é or e", "ch": ["é", "e"], "g": 0}\n{"q": "the", "ch": ["the king", "and"], "g": 1}\n{"q": "Hello", "ch": ["é", "ing"], "g": 0}\n' > "$in/task.jsonl"
printf 'task: tiny\ndata: task.jsonl\ndoc_to_text: "Q: {{q}}\\nA:"\nchoices: ["{{ch}}"]\ngold: "{{g}}"\nmetrics: [acc, acc_norm]\n' > "$in/task.yaml"
for w in f32 q4_1; do
  cat > "$in/run_$w.yaml" <<EOF
model: {path: "$in/$w.gguf", chat_template: chatml}
data: {train: "$in/conv.jsonl"}
iterations: 2
prompts: 4
alpha: 0.1
tau: 2
seed: 5
lora: {rank: 2, dropout: 0.1}
optimizer: {lr: 0.01}
train: {epochs: 1, batch_size: 2, grad_accum: 1, max_answer_len: 12}
generation: {max_new_tokens: 12, batch: 3}
eval: {heldout: 2, tasks: ["$in/task.yaml"], shots: 1}
threads: $T
EOF
done

# ---- the runs ----
failures=0
err() { echo "FAIL: $*"; failures=$((failures + 1)); }
run_all() { # ISA OUTDIR
  local isa=$1 o=$2 w p
  mkdir -p "$o"
  export ALPHASPIN_KERNEL_ISA=$isa
  for w in f32 q4_1; do
    for p in f32 q8; do
      "$bin" logprobs --model "$in/$w.gguf" --text "$(cat "$in/text.txt")" --precision $p --threads $T > "$o/logprobs_${w}_$p.jsonl" 2>"$o/err" \
        || err "$isa: logprobs $w $p: $(tail -c 300 "$o/err")"
      "$bin" generate --model "$in/$w.gguf" --prompts "$in/prompts.jsonl" --out "$o/generate_${w}_$p.jsonl" --precision $p --batch-size 5 \
        --temperature 1 --seed 11 --max-new-tokens 24 --threads $T 2>"$o/err" || err "$isa: generate $w $p: $(tail -c 300 "$o/err")"
    done
    "$bin" sft --model "$in/$w.gguf" --data "$in/conv.jsonl" --out "$o/sft_$w" --chat-template chatml --max-steps 3 --batch-size 2 --micro-batch 1 \
      --max-len 64 --lora-rank 4 --lora-dropout 0.1 --lr 0.01 --eval-fraction 0.2 --seed 5 --threads $T >/dev/null 2>"$o/err" \
      || err "$isa: sft $w: $(tr '\r' '\n' < "$o/err" | tail -2)"
    "$bin" run --config "$in/run_$w.yaml" --out "$o/run_$w" --quiet >/dev/null 2>"$o/err" || err "$isa: run $w: $(tail -c 300 "$o/err")"
  done
  rm -f "$o/err"
  unset ALPHASPIN_KERNEL_ISA
  # Wall-clock fields out (see the header); everything else stays as written.
  python3 "$(dirname "$0")/../strip_timing.py" "$o"
}

declare -A secs
for isa in "${isas[@]}"; do
  t0=$(date +%s)
  run_all "$isa" "$tmp/out/$isa"
  secs[$isa]=$(( $(date +%s) - t0 ))
  echo "ran $isa in ${secs[$isa]}s"
done

# ---- the comparison ----
ref=${isas[0]}
(cd "$tmp/out/$ref" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files"
[ "$(grep -c . "$tmp/files")" -ge 30 ] || err "$ref wrote only $(grep -c . "$tmp/files") files: $(tr '\n' ' ' < "$tmp/files")"
declare -A bad_parts
mismatches=0
for isa in "${isas[@]:1}"; do
  (cd "$tmp/out/$isa" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files_$isa"
  extra=$(comm -13 "$tmp/files" "$tmp/files_$isa")
  [ -z "$extra" ] || { echo "MISMATCH $isa wrote files $ref did not: $extra"; mismatches=$((mismatches + 1)); }
  while read -r f; do
    a="$tmp/out/$ref/$f" b="$tmp/out/$isa/$f"
    if [ ! -e "$b" ]; then
      echo "MISMATCH $f: missing under $isa"; mismatches=$((mismatches + 1)); continue
    fi
    cmp -s "$a" "$b" && continue
    mismatches=$((mismatches + 1))
    k=${f%%/*}
    [[ " ${bad_parts[$k]:-} " == *" $isa "* ]] || bad_parts[$k]+=" $isa"
    case "$f" in
    *.safetensors | *.gguf) echo "MISMATCH $f: $isa differs from $ref ($(cmp "$a" "$b" 2>&1 | head -1 | sed 's|.*differ: ||'))" ;;
    *)
      line=$(cmp "$a" "$b" 2>&1 | head -1 | sed -n 's|.*line \([0-9]*\).*|\1|p')
      echo "MISMATCH $f: $isa differs from $ref at line ${line:-?}"
      echo "    $ref: $(sed -n "${line:-1}p" "$a" | head -c 240)"
      echo "    $isa: $(sed -n "${line:-1}p" "$b" | head -c 240)"
      ;;
    esac
  done < "$tmp/files"
done

echo "---- summary (files or folders that differ from $ref, and under which ISAs) ----"
for k in $(printf '%s\n' "${!bad_parts[@]}" | sort); do echo "  $k:${bad_parts[$k]}"; done
echo "$(grep -c . "$tmp/files") files compared across ${isas[*]}; $mismatches mismatches; $failures command failures"
[ "$mismatches" = 0 ] && [ "$failures" = 0 ]
