#!/usr/bin/env bash
# Command-line behaviour through the public interface: --help everywhere, one
# clear error line and a non-zero exit for bad input, outputs never corrupted.
# Usage: test_cli.sh BUILD_DIR
set -u
bin="$1/alphaspin"
. "$(dirname "$0")/cli_harness.sh"
skipped=0

expect 0 "" -- "$bin" --help
grep -q "usage: alphaspin" "$tmp/out" || bad "--help prints no usage"
for c in fetch-model tokenize logprobs generate chat sft merge; do
  expect 0 "" -- "$bin" "$c" --help
  grep -q "usage: alphaspin $c" "$tmp/out" && ok || bad "$c --help prints no usage"
done
expect 2 "unknown command 'nope'" -- "$bin" nope
expect 2 "" -- "$bin"
expect 2 "generate: give exactly one of --prompt and --prompts" -- "$bin" generate
expect 2 "--top-p expects a number" -- "$bin" generate --prompt hi --top-p 7
expect 2 "--threads expects an integer" -- "$bin" logprobs --text hi --threads abc
expect 2 "--precision must be f32, q8 or bf16" -- "$bin" logprobs --text hi --precision f64
# --device: a malformed spec, and CUDA where this machine has no usable GPU, fail with one line
# before the model is read (a model path that does not exist shows it is not read).
for c in logprobs generate eval chat; do
  args=(--text hi); [ $c = generate ] && args=(--prompt hi); [ $c = eval ] && args=(--tasks arc_easy); [ $c = chat ] && args=()
  expect 1 "$c: device tpu: unknown \(expected cpu, cuda or cuda:N\)" -- "$bin" $c "${args[@]}" --model "$tmp/none.gguf" --device tpu
  expect 1 "$c: device cuda:x: " -- "$bin" $c "${args[@]}" --model "$tmp/none.gguf" --device cuda:x
done
# Training commands: the same one line, and `run` leaves no run folder behind.
expect 1 "sft: device tpu: unknown" -- "$bin" sft --data "$tmp/none.jsonl" --out "$tmp/sft_dev" --device tpu
expect 1 "gfn-train: device tpu: unknown" -- "$bin" gfn-train --model "$tmp/none.gguf" --data "$tmp/none.jsonl" --out "$tmp/gfn_dev" --device tpu
expect 1 "run: device tpu: unknown" -- "$bin" run --config "$(dirname "$0")/../../configs/default.yaml" --out "$tmp/run_dev" --device tpu
[ -e "$tmp/run_dev" ] && bad "run --device tpu left a run folder" || ok
expect 1 "run: device cuda:x: " -- "$bin" run --config "$(dirname "$0")/../../configs/default.yaml" --out "$tmp/run_dev" --set device=cuda:x
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "skip: --device cuda without a GPU (this machine has one)"; skipped=$((skipped + 1))
else
  expect 1 "generate: device cuda: (no CUDA device|plugin not built|libcudart not found|cuBLAS not found)" -- "$bin" generate --prompt hi --model "$tmp/none.gguf" --device cuda
fi
expect 2 "--data and --out are required" -- "$bin" sft --data x.jsonl
expect 2 "unknown matrix 'qq'" -- "$bin" sft --data x.jsonl --out o --lora-targets q,qq
expect 2 "sft: --precision must be f32 or bf16, got 'q8'" -- "$bin" sft --data x.jsonl --out o --precision q8
expect 1 "sft: ALPHASPIN_TRAIN_PRECISION: 'fp16' \(expected f32 or bf16\)" -- env ALPHASPIN_TRAIN_PRECISION=fp16 "$bin" sft --data x.jsonl --out o
expect 2 "run: --train-precision must be f32 or bf16, got 'q8'" -- "$bin" run --config x.yaml --train-precision q8
printf 'iterations: 1\n' > "$tmp/prec.yaml"
expect 1 "run: ALPHASPIN_TRAIN_PRECISION: 'fp16' \(expected f32 or bf16\)" -- env ALPHASPIN_TRAIN_PRECISION=fp16 "$bin" run --config "$tmp/prec.yaml"
expect 1 "train.precision: 'q8' \(expected f32 or bf16\)" -- "$bin" run --config "$tmp/prec.yaml" --set train.precision=q8
expect 2 "merge: --out is required" -- "$bin" merge --adapter a
expect 2 "--type must be f32, f16 or q8_0" -- "$bin" merge --out m.gguf --type q4_k
expect 2 "--type applies to a .gguf output" -- "$bin" merge --out folder --type f16
expect 0 "" -- "$bin" gfn-train --help
grep -q "usage: alphaspin gfn-train" "$tmp/out" && ok || bad "gfn-train --help prints no usage"
expect 2 "gfn-train: --data and --out are required" -- "$bin" gfn-train --data x.jsonl
expect 2 "--reward-temp expects START:END:STEPS" -- "$bin" gfn-train --data x --out o --reward-temp 1:0
expect 2 "--explore expects PROB:LOW:HIGH" -- "$bin" gfn-train --data x --out o --explore 2:1:1
expect 2 "--alpha expects a number" -- "$bin" gfn-train --data x --out o --alpha 1.5
# A folder that is not a Hugging Face model: one line naming the missing file.
mkdir -p "$tmp/nohf"
expect 1 "nohf/config.json" -- "$bin" tokenize --model "$tmp/nohf" hi
echo '{"model_type": "mistral"}' > "$tmp/nohf/config.json"
expect 1 "model_type 'mistral' is not supported" -- "$bin" logprobs --model "$tmp/nohf" --text hi

# report: help, bad input (one line naming the file), a run with an incomplete iteration.
expect 0 "" -- "$bin" report --help
grep -q "usage: alphaspin report" "$tmp/out" && ok || bad "report --help prints no usage"
expect 2 "name at least one run folder" -- "$bin" report
expect 1 "nope: cannot open run folder" -- "$bin" report "$tmp/nope"
mkdir -p "$tmp/run/iter_0" "$tmp/run/iter_1" "$tmp/run/iter_2"
echo '{"iteration": 0, "heldout": {"nll_per_token": 1.5}, "eval": {"gsm8k": {"exact_match,strict-match": 0.1}}}' > "$tmp/run/iter_0/summary.json"
echo '{"iteration": 1, "heldout": {"nll_per_token": 1.25}, "eval": {"gsm8k": {"exact_match,strict-match": 0.2}}}' > "$tmp/run/iter_1/summary.json"
"$bin" report "$tmp/run" >"$tmp/out" 2>"$tmp/err" && grep -q "^| run | 1 | 0.2000 | 1.250 |$" "$tmp/out" && grep -q "iter_2: no summary.json" "$tmp/err" \
  && [ -s "$tmp/run/report.md" ] && [ -s "$tmp/run/charts/line_heldout_nll_per_token.svg" ] && ok || bad "report on a run: $(cat "$tmp/out" "$tmp/err")"
echo '{"iteration": 2, "eval": {"gsm8k": 0.3}}' > "$tmp/run/iter_2/summary.json"
expect 1 'iter_2/summary.json: "eval"."gsm8k" must be an object' -- "$bin" report "$tmp/run" --out "$tmp/rep"
echo '{"iteration": 2,' > "$tmp/run/iter_2/summary.json"
expect 1 "iter_2/summary.json: not valid JSON" -- "$bin" report "$tmp/run"

# make-data: help, bad input, and the same file for the same seed.
expect 0 "" -- "$bin" make-data --help
grep -q "usage: alphaspin make-data" "$tmp/out" && ok || bad "make-data --help prints no usage"
expect 2 "unknown generator 'nope'" -- "$bin" make-data nope --out "$tmp/x.jsonl"
expect 2 "--level expects an integer in \[1, 3\]" -- "$bin" make-data arith --level 4 --out "$tmp/x.jsonl"
expect 2 "--style must be word, plain or mixed" -- "$bin" make-data arith --style prose --out "$tmp/x.jsonl"
expect 2 "--out is required" -- "$bin" make-data arith --n 3
expect 1 "no/such/dir/x.jsonl" -- "$bin" make-data arith --n 3 --out "$tmp/no/such/dir/x.jsonl"
"$bin" make-data arith --n 20 --seed 5 --out "$tmp/a1.jsonl" 2>/dev/null && "$bin" make-data arith --n 20 --seed 5 --out "$tmp/a2.jsonl" 2>/dev/null \
  && cmp -s "$tmp/a1.jsonl" "$tmp/a2.jsonl" && [ "$(grep -c '#### ' "$tmp/a1.jsonl")" = 20 ] && ok || bad "make-data arith not reproducible or malformed"

# run: help, bad configurations (one line naming the file, the line and the key), --set errors.
expect 0 "" -- "$bin" run --help
grep -q "usage: alphaspin run" "$tmp/out" && ok || bad "run --help prints no usage"
expect 2 "--config is required" -- "$bin" run
expect 1 "nope.yaml" -- "$bin" run --config "$tmp/nope.yaml"
printf 'iterations: 2\nloss:\n  betta: 0.1\n' > "$tmp/bad.yaml"
expect 1 "bad.yaml:3: loss.betta: not a configuration key" -- "$bin" run --config "$tmp/bad.yaml"
printf 'alpha: 2\n' > "$tmp/bad.yaml"
expect 1 "bad.yaml:1: alpha: 2 is out of range" -- "$bin" run --config "$tmp/bad.yaml"
printf 'tau: [1, 2]\n' > "$tmp/bad.yaml"
expect 1 "bad.yaml:1: tau: expected a single value" -- "$bin" run --config "$tmp/bad.yaml"
printf 'tau: 3\nmodel: {path: /nonexistent/m.gguf}\n' > "$tmp/ok.yaml"
expect 1 "--set loss.bta: not a configuration key" -- "$bin" run --config "$tmp/ok.yaml" --set loss.bta=1
expect 1 "--set mixing: 'both' \(expected sample or concat\)" -- "$bin" run --config "$tmp/ok.yaml" --set mixing=both
expect 1 "data.train: required" -- "$bin" run --config "$tmp/ok.yaml" --out "$tmp/r"
printf '{"question": "1+1?", "answer": "2"}\n' > "$tmp/d.jsonl"
expect 1 "/nonexistent/m.gguf" -- "$bin" run --config "$tmp/ok.yaml" --set data.train="$tmp/d.jsonl" --out "$tmp/r"
root=$(cd "$(dirname "$0")/../.." && pwd)
for f in "$root"/configs/alphaspin.yaml "$root"/configs/default.yaml "$root"/configs/paper/*.yaml; do
  [ -f "$f" ] || continue
  expect 1 "--set iterations: 0 is out of range" -- "$bin" run --config "$f" --set iterations=0
done

# Missing, empty, truncated and garbage model files: one line naming the file.
expect 1 "/nonexistent/m.gguf" -- "$bin" tokenize --model /nonexistent/m.gguf hi
: > "$tmp/empty.gguf"
expect 1 "empty.gguf" -- "$bin" tokenize --model "$tmp/empty.gguf" hi
printf 'GGUF\x03\x00\x00\x00garbage' > "$tmp/trunc.gguf"
expect 1 "trunc.gguf" -- "$bin" logprobs --model "$tmp/trunc.gguf" --text hi
head -c 4096 /dev/urandom > "$tmp/noise.gguf"
expect 1 "noise.gguf" -- "$bin" generate --model "$tmp/noise.gguf" --prompt hi

model="${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -r "$model" ]; then
  head -c 3000000 "$model" > "$tmp/cut.gguf"
  expect 1 "cut.gguf" -- "$bin" generate --model "$tmp/cut.gguf" --prompt hi
  # ids from llama.cpp (llama-cpp-python 0.3.36, vocab_only) for the same text
  out=$("$bin" tokenize "Hello, world! 12345") && [ "$out" = "19556 28 905 17 216 33 34 35 36 37" ] && ok || bad "tokenize gave '$out'"
  n=$("$bin" logprobs --text "The capital of France is Paris." | grep -c '"logprob"') && [ "$n" = 7 ] && ok || bad "logprobs printed $n lines"
  # --precision bf16: the same tokens; the last log-prob within bf16's error of f32's (<= 0.12 nats on the reference texts)
  f=$("$bin" logprobs --text "The capital of France is Paris." | tail -1 | grep -oE '"logprob":-?[0-9.e-]+' | cut -d: -f2)
  g=$("$bin" logprobs --precision bf16 --text "The capital of France is Paris." | tail -1 | grep -oE '"logprob":-?[0-9.e-]+' | cut -d: -f2)
  awk -v a="$f" -v b="$g" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d < 0.3) }' && ok || bad "bf16 log-prob '$g' vs f32 '$f'"
  a=$("$bin" generate --greedy --max-new-tokens 12 --prompt "The capital of France is")
  b=$("$bin" generate --greedy --max-new-tokens 12 --prompt "The capital of France is")
  [ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "greedy generation not reproducible: '$a' vs '$b'"
  # A malformed prompts file: one line naming file:line; an existing --out is left untouched.
  printf '{"question": "1+1?", "answer": "2"}\n{"question": 3}\n' > "$tmp/sft.jsonl"
  expect 1 "sft.jsonl:2" -- "$bin" sft --data "$tmp/sft.jsonl" --out "$tmp/sft_out"
  printf '{"prompt": "hi"}\n{"prompt": \n' > "$tmp/p.jsonl"
  echo keep > "$tmp/out.jsonl"
  expect 1 "p.jsonl:2: not valid JSON \(column 11\)" -- "$bin" generate --prompts "$tmp/p.jsonl" --out "$tmp/out.jsonl"
  [ "$(cat "$tmp/out.jsonl")" = keep ] && ok || bad "--out was modified by a failed run"
  printf '{"prompt": "Say hi."}\n{"messages": [{"role": "user", "content": "Count to three."}]}\n{"prompt": "2+2="}\n' > "$tmp/p.jsonl"
  if "$bin" generate --chat --greedy --max-new-tokens 8 --batch-size 2 --prompts "$tmp/p.jsonl" --out "$tmp/out.jsonl" 2>/dev/null; then
    [ "$(grep -c '"output"' "$tmp/out.jsonl")" = 3 ] && ok || bad "generate --prompts wrote $(wc -l < "$tmp/out.jsonl") lines"
  else bad "generate --prompts failed"; fi
  # Sampled generation of a file is the same whatever the batch size (q8; bf16, whose KV cache
  # on AMX holds bf16 tiles that prefix copies and continuous batching move around).
  for prec in q8 bf16; do
    for bs in 1 3; do
      "$bin" generate --chat --max-new-tokens 12 --precision $prec --batch-size $bs --prompts "$tmp/p.jsonl" --out "$tmp/out_$bs.jsonl" 2>/dev/null
    done
    [ -s "$tmp/out_1.jsonl" ] && cmp -s "$tmp/out_1.jsonl" "$tmp/out_3.jsonl" && ok || bad "generate --precision $prec: batch sizes 1 and 3 differ"
  done
  # sft: a few LoRA steps over the three SFT layouts, with the progress line, the
  # metrics log, the held-out loss and the adapter; then merge it into GGUF and
  # Hugging Face outputs that the other commands load.
  printf '%s\n' '{"question": "What is 2+2?", "answer": "4"}' '{"prompt": "Name a color.", "response": "Blue."}' \
    '{"prompt": "ignored", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}' \
    '{"question": "Capital of France?", "answer": "Paris."}' '{"prompt": "Opposite of cold?", "response": "Hot."}' \
    '{"messages": [{"role": "user", "content": "Count to two."}, {"role": "assistant", "content": "1, 2."}]}' > "$tmp/sft_ok.jsonl"
  sft_opts=(--data "$tmp/sft_ok.jsonl" --epochs 2 --max-steps 3 --batch-size 2 --micro-batch 2 --max-len 64 --lora-rank 2 --lr 0.01
            --eval-fraction 0.34 --threads 2 --save-every 1)
  if "$bin" sft "${sft_opts[@]}" --out "$tmp/run" >"$tmp/sft.out" 2>"$tmp/sft.err"; then
    tr '\r' '\n' < "$tmp/sft.err" | grep -qE 'step 3/3 +loss [0-9.]+ .* [0-9]+ tok/s +ETA [0-9]+s' && ok || bad "sft progress line: $(tr '\r' '\n' < "$tmp/sft.err" | head -3)"
    grep -qE 'held-out loss [0-9.]+' "$tmp/sft.err" && ok || bad "sft printed no held-out loss: $(cat "$tmp/sft.err")"
    [ "$(grep -c '"loss"' "$tmp/run/log.jsonl")" = 3 ] && tail -1 "$tmp/run/log.jsonl" | grep -q '"eval_loss"' && ok || bad "sft log.jsonl: $(cat "$tmp/run/log.jsonl")"
    # Killed after step 1 (mid-epoch; 2 steps per epoch), then resumed: bitwise the uninterrupted run's adapter and state.
    (ALPHASPIN_TEST_SFT_KILL_AFTER=1 "$bin" sft "${sft_opts[@]}" --out "$tmp/run2" >/dev/null 2>&1; true) 2>/dev/null
    [ "$(grep -c . "$tmp/run2/log.jsonl")" = 1 ] && ok || bad "the killed sft run logged $(grep -c . "$tmp/run2/log.jsonl") steps"
    expect 0 "" -- "$bin" sft "${sft_opts[@]}" --out "$tmp/run2" --resume
    cmp -s "$tmp/run/adapter_model.safetensors" "$tmp/run2/adapter_model.safetensors" && cmp -s "$tmp/run/train_state.safetensors" "$tmp/run2/train_state.safetensors" \
      && ok || bad "sft --resume did not reproduce the uninterrupted run"
    [ "$(grep -c '"loss"' "$tmp/run2/log.jsonl")" = 3 ] && ok || bad "resumed log.jsonl: $(cat "$tmp/run2/log.jsonl")"
    f="$tmp/run2/train_state.safetensors"; sz=$(stat -c %s "$f")
    printf '\x01' | dd of="$f" bs=1 seek=$((sz - 3)) conv=notrunc status=none
    expect 1 "train_state.safetensors: checksum mismatch" -- "$bin" sft "${sft_opts[@]}" --out "$tmp/run2" --resume
    expect 1 "nostate/train_state.safetensors: no training state to resume from" -- "$bin" sft "${sft_opts[@]}" --out "$tmp/nostate" --resume
    [ -s "$tmp/run/adapter_model.safetensors" ] && [ -s "$tmp/run/adapter_config.json" ] && [ -s "$tmp/run/train_state.safetensors" ] && ok || bad "sft outputs missing: $(ls "$tmp/run")"
    expect 0 "" -- "$bin" merge --adapter "$tmp/run" --out "$tmp/merged.gguf" --type q8_0
    n=$("$bin" logprobs --model "$tmp/merged.gguf" --text "The capital of France is Paris." | grep -c '"logprob"') && [ "$n" = 7 ] && ok || bad "logprobs on the merged GGUF printed $n lines"
    expect 0 "" -- "$bin" merge --adapter "$tmp/run" --out "$tmp/merged_hf"
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json; do
      [ -s "$tmp/merged_hf/$f" ] && ok || bad "merge wrote no $f"
    done
    out=$("$bin" tokenize --model "$tmp/merged_hf" "Hello, world! 12345") && [ "$out" = "19556 28 905 17 216 33 34 35 36 37" ] && ok || bad "tokenize on the HF folder gave '$out'"
    a=$("$bin" logprobs --model "$tmp/merged_hf" --text "The sky is blue." | tail -1 | grep -oE '"logprob":-?[0-9.e-]+' | cut -d: -f2)
    b=$("$bin" logprobs --model "$tmp/merged.gguf" --text "The sky is blue." | tail -1 | grep -oE '"logprob":-?[0-9.e-]+' | cut -d: -f2)
    awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d < 0.05) }' && ok || bad "merged HF folder vs merged Q8_0 GGUF log-prob: '$a' vs '$b'"
    # Damaged checkpoints: one line naming the file, nothing written.
    cp -r "$tmp/run" "$tmp/bad_run"
    f="$tmp/bad_run/adapter_model.safetensors"; sz=$(stat -c %s "$f")
    printf '\x01' | dd of="$f" bs=1 seek=$((sz - 3)) conv=notrunc status=none
    expect 1 "adapter_model.safetensors: checksum mismatch" -- "$bin" merge --adapter "$tmp/bad_run" --out "$tmp/never.gguf"
    head -c $((sz - 100)) "$tmp/run/adapter_model.safetensors" > "$f"
    expect 1 "bad_run/adapter_model.safetensors: " -- "$bin" merge --adapter "$tmp/bad_run" --out "$tmp/never.gguf"
    [ ! -e "$tmp/never.gguf" ] && ok || bad "a failed merge left $tmp/never.gguf"
    expect 1 "nope/adapter_config.json" -- "$bin" merge --adapter "$tmp/nope" --out "$tmp/never.gguf"
  else bad "sft run failed: $(tr '\r' '\n' < "$tmp/sft.err" | tail -3)"; fi
  # gfn-train: two steps of a GFlowNet sampler of the mixture of the SFT adapter (pi_t) and the base.
  if [ -s "$tmp/run/adapter_config.json" ] && "$bin" gfn-train --data "$tmp/sft_ok.jsonl" --adapter "$tmp/run" --out "$tmp/gfn" --steps 2 \
       --prompts-per-step 1 --samples-per-prompt 2 --max-new-tokens 8 --micro-batch 2 --lora-rank 2 --threads 2 >"$tmp/gfn.out" 2>"$tmp/gfn.err"; then
    [ "$(grep -c '"loss"' "$tmp/gfn/log.jsonl")" = 2 ] && [ -s "$tmp/gfn/adapter_model.safetensors" ] && ok || bad "gfn-train outputs: $(ls "$tmp/gfn")"
    tr '\r' '\n' < "$tmp/gfn.err" | grep -qE 'step 2/2 loss [0-9.e+-]+ log R' && ok || bad "gfn-train progress line: $(tr '\r' '\n' < "$tmp/gfn.err" | head -3)"
  else bad "gfn-train run failed: $(tr '\r' '\n' < "$tmp/gfn.err" | tail -3)"; fi
  expect 1 "sft.jsonl:2" -- "$bin" gfn-train --data "$tmp/sft.jsonl" --out "$tmp/gfn_bad"
else
  echo "SKIP (partly): default model not fetched; run alphaspin fetch-model"; skipped=1
fi

# eval: help, bad options, bad task files, and a synthetic task end to end.
expect 0 "" -- "$bin" eval --help
grep -q "usage: alphaspin eval" "$tmp/out" && ok || bad "eval --help prints no usage"
expect 2 "eval: --tasks is required" -- "$bin" eval
expect 2 "--precision must be f32, q8 or bf16" -- "$bin" eval --tasks arc_easy --precision f64
expect 2 "--limit expects an integer" -- "$bin" eval --tasks arc_easy --limit x
if [ -r "$model" ]; then
  expect 1 "no built-in task 'nope'" -- "$bin" eval --tasks nope --quiet
  printf 'task: t\ndata: t.jsonl\nbogus: 1\n' > "$tmp/bad.yaml"
  expect 1 "bad.yaml: bogus: unknown field" -- "$bin" eval --tasks "$tmp/bad.yaml" --quiet
  expect 1 "arc_easy.yaml: data: /nonexistent/arc/arc_easy_test.jsonl not found" -- "$bin" eval --tasks arc_easy --data-dir /nonexistent --quiet
  printf '{"q": "2+2", "ch": ["4", "5"], "g": 0}\n{"q": "3+3", "ch": ["7", "6"]}\n' > "$tmp/t.jsonl"
  printf 'task: t\ndata: t.jsonl\ndoc_to_text: "Question: {{q}}\\nAnswer:"\nchoices: ["{{ch}}"]\ngold: "{{g}}"\nmetrics: [acc, acc_norm]\n' > "$tmp/t.yaml"
  echo keep > "$tmp/r.json"
  expect 1 "t.yaml: item 1: field 'g' missing" -- "$bin" eval --tasks "$tmp/t.yaml" --out "$tmp/r.json" --quiet
  [ "$(cat "$tmp/r.json")" = keep ] && ok || bad "eval --out was modified by a failed run"
  printf '{"q": "2+2", "ch": ["4", "5"], "g": 0}\n{"q": "3+3", "ch": ["7", "6"], "g": 1}\n{"q": "1+1", "ch": ["2", "3"], "g": 0}\n' > "$tmp/t.jsonl"
  if "$bin" eval --tasks "$tmp/t.yaml" --shots 1 --out "$tmp/r.json" --log-samples "$tmp/s.jsonl" >"$tmp/eval.out" 2>"$tmp/eval.err"; then
    grep -qE '^\| t \| acc,none \| [01]\.[0-9]{4} ' "$tmp/eval.out" && ok || bad "eval table: $(cat "$tmp/eval.out")"
    grep -q '"acc_norm_stderr,none"' "$tmp/r.json" && grep -q '"prompt_format_version"' "$tmp/r.json" && ok || bad "eval JSON: $(head -c 400 "$tmp/r.json")"
    [ "$(grep -c '"ll"' "$tmp/s.jsonl")" = 3 ] && ok || bad "eval --log-samples: $(cat "$tmp/s.jsonl")"
    tr '\r' '\n' < "$tmp/eval.err" | grep -qE 't: 3/3 items, [0-9.]+ items/s, elapsed [0-9]+s, ETA [0-9]+s' && ok || bad "eval progress line: $(head -c 300 "$tmp/eval.err")"
  else bad "eval of a synthetic task failed: $(tail -c 300 "$tmp/eval.err")"; fi
fi

# tokenize: any text (issue 20 item 5): --text, --file (- : stdin) and `--` for a text
# that begins with '-'; help; one-line errors.
expect 0 "" -- "$bin" tokenize --help
grep -q -- "--file FILE" "$tmp/out" && grep -q -- "--text TEXT" "$tmp/out" && ok || bad "tokenize --help does not show --text and --file"
expect 2 "unknown option '-4' \(a TEXT that begins with '-' needs --text TEXT or \`--\` before it\)" -- "$bin" tokenize -42
expect 2 "give exactly one of TEXT, --text and --file" -- "$bin" tokenize --text a b
expect 2 "give exactly one of TEXT, --text and --file" -- "$bin" tokenize
expect 2 "expects one TEXT argument, got 2" -- "$bin" tokenize a b
expect 2 "--text needs a value" -- "$bin" tokenize --text
expect 2 "give one of --text and --file" -- "$bin" logprobs --text a --file b

# Valid JSON in UTF-8 whatever the bytes (issue 20 item 4), on the tiny random model
# (tests/cli/write_tiny_model): its vocabulary has the two halves of "é" as separate
# byte tokens, so a text with "é" has pieces that end inside the character, and
# sampled text can stop there.  strict_json.py decodes UTF-8 strictly and parses
# every line (python3's json), refusing NaN and lone surrogates.
mk="$1/tests/cli/write_tiny_model"
strict() { python3 "$(dirname "$0")/strict_json.py" "$@"; }
if ! command -v python3 >/dev/null; then
  echo "SKIP (partly): python3 absent, the strict JSON checks need it"; skipped=1
elif ! { [ -x "$mk" ] && "$mk" "$tmp/tiny.gguf" --ctx 512; }; then
  bad "write_tiny_model could not write the tiny model"
else
  tiny=(--model "$tmp/tiny.gguf")
  txt='Hé the é, -ing and é.'
  "$bin" tokenize "${tiny[@]}" --pieces "$txt" > "$tmp/pieces.jsonl" && strict --pieces "$txt" "$tmp/pieces.jsonl" >"$tmp/err" 2>&1 \
    && grep -q '"bytes":\[195\]' "$tmp/pieces.jsonl" && ok || bad "tokenize --pieces: $(cat "$tmp/err") $(head -c 300 "$tmp/pieces.jsonl")"
  "$bin" logprobs "${tiny[@]}" --text "$txt" > "$tmp/lp.jsonl" && strict --pieces "$txt" "$tmp/lp.jsonl" >"$tmp/err" 2>&1 \
    && [ "$(grep -c '"logprob"' "$tmp/lp.jsonl")" = "$(grep -c . "$tmp/pieces.jsonl")" ] && ok || bad "logprobs JSON: $(cat "$tmp/err") $(head -c 300 "$tmp/lp.jsonl")"
  # The same text from --text, --file and standard input; a text that begins with '-'.
  printf '%s' "$txt" > "$tmp/txt"
  a=$("$bin" tokenize "${tiny[@]}" "$txt") && b=$("$bin" tokenize "${tiny[@]}" --text "$txt") && c=$("$bin" tokenize "${tiny[@]}" --file "$tmp/txt") \
    && d=$("$bin" tokenize "${tiny[@]}" --file - < "$tmp/txt") && [ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ] && [ "$a" = "$d" ] \
    && ok || bad "tokenize TEXT/--text/--file/stdin differ: '$a' '$b' '$c' '$d'"
  for t in -42 "- item" "--" "-"; do
    a=$("$bin" tokenize "${tiny[@]}" -- "$t") && b=$("$bin" tokenize "${tiny[@]}" --text "$t") && c=$(printf '%s' "$t" | "$bin" tokenize "${tiny[@]}" --file -) \
      && [ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ] && ok || bad "tokenize of '$t': '$a' '$b' '$c'"
  done
  [ "$("$bin" tokenize "${tiny[@]}" -- -42)" = "12 19 17" ] && ok || bad "tokenize -- -42 gave '$("$bin" tokenize "${tiny[@]}" -- -42)'"
  expect 1 "nope.txt" -- "$bin" tokenize "${tiny[@]}" --file "$tmp/nope.txt"
  a=$("$bin" logprobs "${tiny[@]}" --text "$txt") && b=$("$bin" logprobs "${tiny[@]}" --file - < "$tmp/txt") && [ -n "$a" ] && [ "$a" = "$b" ] \
    && ok || bad "logprobs --file - differs from --text"
  # Sampled text at a high temperature: answers that stop inside "é" or hold a lone half.
  for i in 1 2 3 4 5 6 7 8; do printf '{"prompt": "Hé %d the"}\n' "$i"; done > "$tmp/tp.jsonl"
  if "$bin" generate "${tiny[@]}" --prompts "$tmp/tp.jsonl" --out "$tmp/tout.jsonl" --temperature 2 --top-k 0 --top-p 1 --min-p 0 \
       --max-new-tokens 48 --seed 3 2>/dev/null; then
    strict "$tmp/tout.jsonl" >"$tmp/err" 2>&1 && [ "$(grep -c '"output"' "$tmp/tout.jsonl")" = 8 ] && ok || bad "generate --out: $(cat "$tmp/err")"
    # Coverage, not correctness: the seed is one whose answers do hold a replaced byte.
    grep -q $'\xEF\xBF\xBD' "$tmp/tout.jsonl" && ok || bad "generate --out: no answer held an incomplete character (pick another --seed for this check)"
  else bad "generate --prompts on the tiny model failed"; fi
  # sft (log.jsonl, adapter_config.json), gfn-train (log.jsonl), eval (results, --log-samples),
  # run (every JSON file of the run folder), make-data.
  printf '%s\n' '{"question": "What is é?", "answer": "é is é."}' '{"prompt": "Say the", "response": "the"}' \
    '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}' \
    '{"question": "1+1?", "answer": "It is 2."}' '{"question": "2+2?", "answer": "It is 4."}' '{"question": "3+4?", "answer": "It is 7. #### 7"}' > "$tmp/tsft.jsonl"
  tsft=("${tiny[@]}" --data "$tmp/tsft.jsonl" --chat-template chatml --max-steps 2 --batch-size 2 --micro-batch 2 --max-len 48 --lora-rank 2
        --eval-fraction 0.34 --threads 2)
  if "$bin" sft "${tsft[@]}" --out "$tmp/tsft" >/dev/null 2>"$tmp/err"; then
    strict "$tmp/tsft/log.jsonl" "$tmp/tsft/adapter_config.json" >"$tmp/err" 2>&1 && ok || bad "sft JSON: $(cat "$tmp/err")"
    # The training precision: --precision bf16 trains other weights; ALPHASPIN_TRAIN_PRECISION=bf16
    # does what the flag does, and an explicit --precision wins over it.
    a=adapter_model.safetensors
    "$bin" sft "${tsft[@]}" --out "$tmp/tsft_bf16" --precision bf16 >/dev/null 2>&1 \
      && ALPHASPIN_TRAIN_PRECISION=bf16 "$bin" sft "${tsft[@]}" --out "$tmp/tsft_env" >/dev/null 2>&1 \
      && ALPHASPIN_TRAIN_PRECISION=bf16 "$bin" sft "${tsft[@]}" --out "$tmp/tsft_flag" --precision f32 >/dev/null 2>&1 \
      && ! cmp -s "$tmp/tsft/$a" "$tmp/tsft_bf16/$a" && cmp -s "$tmp/tsft_bf16/$a" "$tmp/tsft_env/$a" && cmp -s "$tmp/tsft/$a" "$tmp/tsft_flag/$a" \
      && ok || bad "sft --precision bf16 / ALPHASPIN_TRAIN_PRECISION: the adapters are not as expected"
    if "$bin" gfn-train "${tiny[@]}" --data "$tmp/tsft.jsonl" --adapter "$tmp/tsft" --out "$tmp/tgfn" --chat-template chatml --steps 2 --prompts-per-step 1 \
         --samples-per-prompt 2 --max-new-tokens 8 --micro-batch 2 --lora-rank 2 --threads 2 >/dev/null 2>"$tmp/err"; then
      strict "$tmp/tgfn/log.jsonl" "$tmp/tgfn/adapter_config.json" >"$tmp/err" 2>&1 && ok || bad "gfn-train JSON: $(cat "$tmp/err")"
    else bad "gfn-train on the tiny model failed: $(tail -c 300 "$tmp/err")"; fi
  else bad "sft on the tiny model failed: $(tail -c 300 "$tmp/err")"; fi
  printf '{"q": "é or e", "ch": ["é", "e"], "g": 0}\n{"q": "the", "ch": ["the", "and"], "g": 1}\n{"q": "H", "ch": ["é", "ing"], "g": 0}\n' > "$tmp/tt.jsonl"
  printf 'task: tt\ndata: tt.jsonl\ndoc_to_text: "Q: {{q}}\\nA:"\nchoices: ["{{ch}}"]\ngold: "{{g}}"\nmetrics: [acc, acc_norm]\n' > "$tmp/tt.yaml"
  if "$bin" eval "${tiny[@]}" --tasks "$tmp/tt.yaml" --shots 1 --out "$tmp/tr.json" --log-samples "$tmp/ts.jsonl" --quiet >/dev/null 2>"$tmp/err"; then
    strict "$tmp/tr.json" "$tmp/ts.jsonl" >"$tmp/err" 2>&1 && ok || bad "eval JSON: $(cat "$tmp/err")"
  else bad "eval on the tiny model failed: $(tail -c 300 "$tmp/err")"; fi
  printf 'model: {path: "%s", chat_template: chatml}\ndata: {train: "%s"}\niterations: 1\nprompts: 3\ntau: 1\nlora: {rank: 2}\n' "$tmp/tiny.gguf" "$tmp/tsft.jsonl" > "$tmp/trun.yaml"
  printf 'train: {epochs: 1, batch_size: 2, max_answer_len: 16}\ngeneration: {max_new_tokens: 16, batch: 3, temperature: 2}\neval: {heldout: 2, tasks: ["%s"]}\nthreads: 2\n' "$tmp/tt.yaml" >> "$tmp/trun.yaml"
  if "$bin" run --config "$tmp/trun.yaml" --out "$tmp/trun" >/dev/null 2>"$tmp/err"; then
    files=$(find "$tmp/trun" -name '*.json' -o -name '*.jsonl' | sort)
    [ "$(echo "$files" | grep -c .)" -ge 8 ] && strict $files >"$tmp/err" 2>&1 && ok || bad "run folder JSON: $(cat "$tmp/err") ($(echo $files))"
    grep -A1 '^  checkpointing:' "$tmp/trun/config.yaml" | grep -qx '  precision: f32' && ok || bad "run: config.yaml has no train.precision: f32"
  else bad "run on the tiny model failed: $(tail -c 300 "$tmp/err")"; fi
  # run --train-precision (the command line wins over ALPHASPIN_TRAIN_PRECISION), recorded in config.yaml.
  if ALPHASPIN_TRAIN_PRECISION=f32 "$bin" run --config "$tmp/trun.yaml" --train-precision bf16 --set eval.tasks= --out "$tmp/trun_bf16" \
       --quiet >/dev/null 2>"$tmp/err"; then
    grep -A1 '^  checkpointing:' "$tmp/trun_bf16/config.yaml" | grep -qx '  precision: bf16' && ok || bad "run --train-precision bf16: not in config.yaml"
    a=iter_1/adapter/adapter_model.safetensors # the same losers, trained in bf16: other weights
    [ -s "$tmp/trun_bf16/$a" ] && ! cmp -s "$tmp/trun/$a" "$tmp/trun_bf16/$a" && ok || bad "run --train-precision bf16 trained the f32 adapter"
  else bad "run --train-precision bf16 on the tiny model failed: $(tail -c 300 "$tmp/err")"; fi
  "$bin" make-data arith --n 5 --seed 2 --out "$tmp/ar.jsonl" 2>/dev/null && strict "$tmp/ar.jsonl" >"$tmp/err" 2>&1 && ok || bad "make-data JSON: $(cat "$tmp/err")"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
