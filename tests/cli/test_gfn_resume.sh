#!/usr/bin/env bash
# gfn-train resumes (src/cli/cmd_gfn_train.c, mixture/gfn.h's gfn_checkpoint), on
# the tiny random model the test writes itself: a run killed (SIGKILL, by the
# ALPHASPIN_TEST_GFN_KILL_AFTER hook) before or after a checkpoint, and the same
# command run again, ends with the bytes of the run that was not interrupted
# (sampler, its config, training state; log.jsonl without its clocks); a state
# of other options, model, adapters or data, and a damaged or cut state, are
# refused with one line naming the file, and leave the folder as it was.
# Usage: test_gfn_resume.sh BUILD_DIR
set -u
bin="$1/alphaspin"
mk="$1/tests/cli/write_tiny_model"
strip="$(dirname "$0")/../strip_timing.py"
. "$(dirname "$0")/cli_harness.sh"

# same A B: the outputs of two runs are the same bytes (log.jsonl without elapsed_s).
files=(adapter_model.safetensors adapter_config.json train_state.safetensors)
same() {
  for f in "${files[@]}"; do cmp -s "$1/$f" "$2/$f" || { bad "$2/$f differs from the uninterrupted run's"; return; }; done
  python3 "$strip" "$1" && python3 "$strip" "$2" && cmp -s "$1/log.jsonl" "$2/log.jsonl" \
    && ok || bad "$2/log.jsonl differs from the uninterrupted run's: $(diff "$1/log.jsonl" "$2/log.jsonl" | head -5)"
}
lines() { grep -c . "$1/log.jsonl"; }
# The step of a state file (its safetensors metadata).
state_step() { python3 -c 'import json,struct,sys; f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]; print(json.loads(f.read(n))["__metadata__"]["step"])' "$1/train_state.safetensors"; }

if ! command -v python3 >/dev/null; then echo "SKIP: python3 absent"; exit 77; fi
"$mk" "$tmp/tiny.gguf" --ctx 512 && "$mk" "$tmp/tiny2.gguf" --ctx 512 --seed 9 || { echo "FAIL: write_tiny_model"; exit 1; }
printf '%s\n' '{"question": "What is é?", "answer": "é is é."}' '{"prompt": "Say the", "response": "the"}' \
  '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}' \
  '{"question": "1+1?", "answer": "It is 2."}' '{"question": "2+2?", "answer": "It is 4."}' '{"question": "3+4?", "answer": "It is 7. #### 7"}' > "$tmp/d.jsonl"
# pi_t: a quick SFT adapter, so that the reward's two models differ.
"$bin" sft --model "$tmp/tiny.gguf" --data "$tmp/d.jsonl" --chat-template chatml --max-steps 2 --batch-size 2 --micro-batch 2 --max-len 48 \
  --lora-rank 2 --lr 0.05 --threads 2 --out "$tmp/pit" >/dev/null 2>&1 || { echo "FAIL: sft for pi_t"; exit 1; }
# Eight steps, a checkpoint every three (steps 3, 6 and 8); a small buffer replayed half of the time,
# so that the buffers, the prompt order and the stream all carry over a resume.
opts=(--model "$tmp/tiny.gguf" --data "$tmp/d.jsonl" --adapter "$tmp/pit" --chat-template chatml --steps 8 --save-every 3 --prompts-per-step 2
      --samples-per-prompt 2 --max-new-tokens 8 --micro-batch 2 --lora-rank 2 --buffer-size 3 --replay-prob 0.5 --lr 0.01 --threads 2 --quiet)
gfn() { "$bin" gfn-train "${opts[@]}" "$@"; }

expect 0 "" -- "$bin" gfn-train --help
grep -qE -- "--save-every N +write the sampler and training state every N steps" "$tmp/out" && grep -q "(default 10; 0: after the last only)" "$tmp/out" \
  && ok || bad "gfn-train --help does not document --save-every"
expect 2 "--save-every expects an integer" -- "$bin" gfn-train --data x --out o --save-every -1

# The uninterrupted run.
if ! gfn --out "$tmp/A" >/dev/null 2>"$tmp/err"; then echo "FAIL: gfn-train: $(cat "$tmp/err")"; exit 1; fi
[ "$(lines "$tmp/A")" = 8 ] && [ "$(state_step "$tmp/A")" = 8 ] && ok || bad "uninterrupted run: $(lines "$tmp/A") log lines, state at step $(state_step "$tmp/A")"
grep -q '"replayed": [1-9]' "$tmp/A/log.jsonl" && ok || bad "no step replayed an answer (choose other options for this test)"
cp -r "$tmp/A" "$tmp/A0"

# Killed after step 4's log line (state at step 3: the log is cut back to it), resumed and killed
# again right after step 6's checkpoint, resumed to the end.
(ALPHASPIN_TEST_GFN_KILL_AFTER=4 gfn --out "$tmp/K" >/dev/null 2>&1; echo $? > "$tmp/rc") 2>/dev/null
[ "$(cat "$tmp/rc")" = 137 ] && [ "$(lines "$tmp/K")" = 4 ] && [ "$(state_step "$tmp/K")" = 3 ] \
  && ok || bad "kill after step 4: exit $(cat "$tmp/rc"), $(lines "$tmp/K") log lines, state at $(state_step "$tmp/K")"
(ALPHASPIN_TEST_GFN_KILL_AFTER=6:saved gfn --out "$tmp/K" >/dev/null 2>"$tmp/err"; echo $? > "$tmp/rc") 2>/dev/null
[ "$(cat "$tmp/rc")" = 137 ] && [ "$(lines "$tmp/K")" = 6 ] && [ "$(state_step "$tmp/K")" = 6 ] \
  && ok || bad "kill after step 6's checkpoint: exit $(cat "$tmp/rc"), $(lines "$tmp/K") log lines, state at $(state_step "$tmp/K")"
grep -qx "gfn-train: resuming $tmp/K/train_state.safetensors at step 3/8" "$tmp/err" && ok || bad "no resume line: $(cat "$tmp/err")"
expect 0 "" -- gfn --out "$tmp/K"
[ "$(head -1 "$tmp/err")" = "gfn-train: resuming $tmp/K/train_state.safetensors at step 6/8" ] && ok || bad "resume line: $(cat "$tmp/err")"
same "$tmp/A" "$tmp/K"

# Killed in the first interval (no checkpoint yet): the rerun starts over.
(ALPHASPIN_TEST_GFN_KILL_AFTER=2 gfn --out "$tmp/F" >/dev/null 2>&1) 2>/dev/null
[ ! -e "$tmp/F/train_state.safetensors" ] && [ "$(lines "$tmp/F")" = 2 ] && ok || bad "kill after step 2 left a state or $(lines "$tmp/F") log lines"
gfn --out "$tmp/F" >/dev/null 2>"$tmp/err" && ! grep -q resuming "$tmp/err" && ok || bad "rerun after an early kill: $(cat "$tmp/err")"
same "$tmp/A" "$tmp/F"

# A finished run, run again: nothing to do, the same bytes.
expect 0 "" -- gfn --out "$tmp/A"
grep -q "resuming .* at step 8/8" "$tmp/err" && ok || bad "rerun of a finished run: $(cat "$tmp/err")"
same "$tmp/A0" "$tmp/A"

# Other options, model, adapters or data: one line naming the file and the first difference.
cp -r "$tmp/A0" "$tmp/R"
st="R/train_state.safetensors: saved by a run with"
expect 1 "$st steps=8, this one has steps=9 \(rerun with the same options, or remove the file to start over\)" -- gfn --out "$tmp/R" --steps 9
expect 1 "$st lr=0.00999999978, this one has lr=0.0199999996" -- gfn --out "$tmp/R" --lr 0.02
expect 1 "$st model=.*/tiny.gguf \([0-9]+ bytes; .*\), this one has model=.*/tiny2.gguf" -- gfn --out "$tmp/R" --model "$tmp/tiny2.gguf"
expect 1 "$st prompts=6 sha256:[0-9a-f]+, this one has prompts=5 " -- gfn --out "$tmp/R" --max-prompts 5
expect 1 "$st adapter=r=2 .*, this one has adapter=none" -- "$bin" gfn-train "${opts[@]/--adapter/--base-adapter}" --out "$tmp/R"
expect 1 "$st base-adapter=none, this one has base-adapter=r=2 " -- gfn --out "$tmp/R" --base-adapter "$tmp/pit"
expect 1 "$st sampler-init=r=2 .*, this one has sampler-init=r=4 " -- gfn --out "$tmp/R" --lora-rank 4
expect 1 "$st train-precision=f32, this one has train-precision=bf16" -- env ALPHASPIN_TRAIN_PRECISION=bf16 "$bin" gfn-train "${opts[@]}" --out "$tmp/R"
for f in "${files[@]}" log.jsonl; do cmp -s "$tmp/A0/$f" "$tmp/R/$f" || bad "a refused resume changed R/$f"; done; ok

# A damaged, cut or empty state: one line naming it, exit 1, nothing written.
f="$tmp/R/train_state.safetensors"; sz=$(stat -c %s "$f")
printf '\x01' | dd of="$f" bs=1 seek=$((sz - 3)) conv=notrunc status=none
expect 1 "R/train_state.safetensors: checksum mismatch" -- gfn --out "$tmp/R"
for cut in $((sz - 8)) 1000 5 0; do
  head -c "$cut" "$tmp/A0/train_state.safetensors" > "$f"
  expect 1 "R/train_state.safetensors: " -- gfn --out "$tmp/R"
done
for f in adapter_model.safetensors adapter_config.json log.jsonl; do cmp -s "$tmp/A0/$f" "$tmp/R/$f" || bad "a refused state changed R/$f"; done; ok

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
