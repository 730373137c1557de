#!/usr/bin/env bash
# Several processes give one process's bytes (issue 23, README "Several processes
# and machines"): every command that splits its work under mpirun runs on a tiny
# random llama (tests/cli/write_tiny_model) once as one process with 2 threads
# and once as `mpirun -np 2` with 1 thread per rank, and every output file is
# compared byte for byte:
#   generate  sampled (temperature 1, seeds), 7 prompts: q8 at batch 5, f32 at
#             batch 1 (at f32 only one sequence per call keeps a share's calls one
#             process's; src/dist/dist_generate.h)
#   eval      a multiple-choice task (1 shot, f32, --log-samples), a loglikelihood,
#             a loglikelihood_rolling and a generate_until task (q8)
#   sft       LoRA with dropout, 4 micro-batches per optimizer step (2 per rank):
#             adapter, optimizer state, log.jsonl
#   run       2 iterations of 2 epochs, 2 micro-batches per step, an evaluation
#             task: the whole run folder (config.yaml's threads: line aside)
#   samplers  the losers of the geometric mixture split by prompt (sampler: sir
#             with K = 3, and gflownet): 2-iteration runs, the whole folders;
#             the gflownet run's rank 1 killed after the sampler's training state
#             of iteration 2's step 2, and rerun: the same folder
#   gfn-train 4 steps of 6 trajectories, sampled and scored by share, 3
#             micro-batches per step: sampler, training state, log.jsonl; under
#             mpirun also killed (every rank, as kill -9) after step 3 and rerun:
#             the same folder
#   resume    rank 1 of the run killed (as kill -9) after iteration 1's
#             references and again in iteration 2's training (mpirun then ends
#             rank 0), each time rerun under mpirun: the same folder as the
#             uninterrupted run (temporary files of interrupted writes aside)
# Timing fields are removed from the JSON first, as test_isa_repro.sh does.
# Usage: test_mpi.sh BUILD_DIR HAVE_MPI   (MPI_TEST_KEEP=DIR keeps the outputs)
set -u
build="$1"
have_mpi="${2:-OFF}"
. "$(dirname "$0")/mpi_common.sh"
command -v python3 >/dev/null || { echo "SKIP: python3 absent (it removes the timing fields before comparing)"; exit 77; }
[ -x "$bin" ] && [ -x "$mk" ] || { echo "FAIL: $bin or $mk not built"; exit 1; }
if [ -n "${MPI_TEST_KEEP:-}" ]; then
  tmp="$MPI_TEST_KEEP"; rm -rf "$tmp"; mkdir -p "$tmp"
else
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fi
export OMP_WAIT_POLICY=PASSIVE
mpi_local

in="$tmp/in"
mkdir -p "$in"
# Q4_1 weights, as the default model's: float weights take the f32 path at every precision.
"$mk" "$in/m.gguf" --wtype q4_1 --ctx 256 --seed 7 --embd 128 --ff 256 --heads 4 --kv-heads 2 --layers 2 || { echo "FAIL: write_tiny_model"; exit 1; }
for i in 1 2 3 4 5 6 7; do printf '{"prompt": "Q%d: the king and" }\n' "$i"; done > "$in/prompts.jsonl"
{
  for i in 1 2 3 4 5 6 7 8 9 10 11; do
    printf '{"messages": [{"role": "user", "content": "What is %d+%d?"}, {"role": "assistant", "content": "It is %d, the sum."}]}\n' "$i" "$i" $((2 * i))
  done
  printf '%s\n' '{"messages": [{"role": "user", "content": "Say é"}, {"role": "assistant", "content": "é é é"}]}'
} > "$in/conv.jsonl"
printf '{"q": "é or e", "ch": ["é", "e"], "g": 0}\n{"q": "the", "ch": ["the king", "and"], "g": 1}\n{"q": "Hello", "ch": ["é", "ing"], "g": 0}\n{"q": "sing", "ch": ["ring", "king", "the"], "g": 2}\n{"q": "and", "ch": ["the", "é"], "g": 1}\n' > "$in/mc.jsonl"
printf 'task: mc\ndata: mc.jsonl\ndoc_to_text: "Q: {{q}}\\nA:"\nchoices: ["{{ch}}"]\ngold: "{{g}}"\nmetrics: [acc, acc_norm]\n' > "$in/mc.yaml"
for i in 1 2 3 4 5 6; do printf '{"context": "the king %d and the", "continuation": " queen"}\n' "$i"; done > "$in/ll.jsonl"
printf 'task: ll\ntype: loglikelihood\ndata: ll.jsonl\ndoc_to_text: "{{context}}"\ndoc_to_target: "{{continuation}}"\n' > "$in/ll.yaml"
for i in 1 2 3 4 5; do printf '{"page": "Hello the king %d, sing and ring; é is é. the end"}\n' "$i"; done > "$in/roll.jsonl"
printf 'task: roll\ntype: loglikelihood_rolling\ndata: roll.jsonl\ndoc_to_target: "{{page}}"\n' > "$in/roll.yaml"
for i in 1 2 3 4 5 6; do printf '{"question": "What is %d+1?", "answer": "It is. #### %d"}\n' "$i" $((i + 1)); done > "$in/gen.jsonl"
printf 'task: gen\ntype: generate_until\ndata: gen.jsonl\ndoc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: "{{answer}}"\ngold: "{{answer}}"\nuntil: ["\\n\\n"]\nmax_gen_toks: 12\nmetrics: [exact_match]\n' > "$in/gen.yaml"
run_yaml() { # OUT: a 2-iteration run, 2 micro-batches per optimizer step
  cat > "$1" <<YAML
model: {path: "$in/m.gguf", chat_template: chatml}
data: {train: "$in/conv.jsonl"}
iterations: 2
prompts: 5
alpha: 0.1
tau: 2
seed: 5
lora: {rank: 2, dropout: 0.1}
optimizer: {lr: 0.01}
train: {epochs: 2, batch_size: 1, grad_accum: 2, max_answer_len: 12}
generation: {max_new_tokens: 12, batch: 3}
eval: {heldout: 3, tasks: ["$in/mc.yaml"], shots: 1}
YAML
}
run_yaml "$in/run.yaml"
geo_yaml() { # OUT SAMPLER: losers from the geometric mixture
  cat > "$1" <<YAML
model: {path: "$in/m.gguf", chat_template: chatml}
data: {train: "$in/conv.jsonl"}
iterations: 2
prompts: 7
alpha: 0.3
seed: 9
sampler: $2
sir: {k: 3}
gflownet: {steps: 3, samples_per_prompt: 2, rank: 2, save_every: 1}
lora: {rank: 2}
optimizer: {lr: 0.01}
train: {epochs: 1, batch_size: 1, grad_accum: 2, max_answer_len: 12}
generation: {max_new_tokens: 10, batch: 3}
eval: {heldout: 2}
YAML
}
geo_yaml "$in/sir.yaml" sir
geo_yaml "$in/gfn.yaml" gflownet

failures=0
err() { echo "FAIL: $*"; failures=$((failures + 1)); }
# all MODE OUT: MODE "one" = one process, 2 threads; "mpi" = mpirun -np 2, 1 thread each.
all() {
  local mode=$1 o=$2 pre T
  mkdir -p "$o"
  if [ "$mode" = one ]; then pre=(); T=2; else pre=("${MPI[@]}"); T=1; fi
  "${pre[@]}" "$bin" generate --model "$in/m.gguf" --prompts "$in/prompts.jsonl" --out "$o/gen_q8.jsonl" --precision q8 --batch-size 5 \
    --temperature 1 --seed 11 --max-new-tokens 20 --threads $T 2>"$o/err" || err "$mode: generate q8: $(tail -c 400 "$o/err")"
  "${pre[@]}" "$bin" generate --model "$in/m.gguf" --prompts "$in/prompts.jsonl" --out "$o/gen_f32.jsonl" --precision f32 --batch-size 1 \
    --temperature 1 --seed 11 --max-new-tokens 20 --threads $T 2>"$o/err" || err "$mode: generate f32: $(tail -c 400 "$o/err")"
  "${pre[@]}" "$bin" eval --model "$in/m.gguf" --tasks "$in/mc.yaml,$in/ll.yaml,$in/roll.yaml" --shots 1 --out "$o/eval.json" \
    --log-samples "$o/samples.jsonl" --threads $T --quiet > "$o/eval.md" 2>"$o/err" || err "$mode: eval: $(tail -c 400 "$o/err")"
  "${pre[@]}" "$bin" eval --model "$in/m.gguf" --tasks "$in/gen.yaml" --shots 1 --precision q8 --out "$o/eval_gen.json" \
    --log-samples "$o/samples_gen.jsonl" --threads $T --quiet > "$o/eval_gen.md" 2>"$o/err" || err "$mode: eval gen: $(tail -c 400 "$o/err")"
  "${pre[@]}" "$bin" sft --model "$in/m.gguf" --data "$in/conv.jsonl" --out "$o/sft" --chat-template chatml --max-steps 3 --batch-size 4 \
    --micro-batch 1 --max-len 64 --lora-rank 4 --lora-dropout 0.1 --lr 0.01 --eval-fraction 0.2 --seed 5 --threads $T >/dev/null 2>"$o/err" \
    || err "$mode: sft: $(tr '\r' '\n' < "$o/err" | tail -2)"
  "${pre[@]}" "$bin" run --config "$in/run.yaml" --set threads=$T --out "$o/run/r" --quiet >/dev/null 2>"$o/err" || err "$mode: run: $(tail -c 400 "$o/err")"
  local gfn=("$bin" gfn-train --model "$in/m.gguf" --data "$in/conv.jsonl" --chat-template chatml --steps 4 --prompts-per-step 2
    --samples-per-prompt 3 --micro-batch 2 --sample-batch 2 --max-new-tokens 8 --lora-rank 2 --lr 0.01 --save-every 2 --seed 3 --threads $T --quiet)
  "${pre[@]}" "${gfn[@]}" --out "$o/gfn_train" 2>"$o/err" || err "$mode: gfn-train: $(tail -c 400 "$o/err")"
  if [ "$mode" = mpi ]; then
    ALPHASPIN_TEST_GFN_KILL_AFTER=3 "${pre[@]}" "${gfn[@]}" --out "$o/gfn_resume" >/dev/null 2>&1 && err "$mode: gfn-train did not stop when killed after step 3"
    grep -q '"step": 3' "$o/gfn_resume/log.jsonl" 2>/dev/null || err "$mode: the killed gfn-train did not reach step 3"
    "${pre[@]}" "${gfn[@]}" --out "$o/gfn_resume" 2>"$o/err" || err "$mode: resumed gfn-train: $(tail -c 400 "$o/err")"
  fi
  local g
  for g in sir gfn; do
    "${pre[@]}" "$bin" run --config "$in/$g.yaml" --set threads=$T --out "$o/$g/r" --quiet >/dev/null 2>"$o/err" || err "$mode: run $g: $(tail -c 400 "$o/err")"
  done
  if [ "$mode" = mpi ]; then
    ALPHASPIN_TEST_ABORT_AFTER=2:gfn2 ALPHASPIN_TEST_ABORT_RANK=1 "${pre[@]}" "$bin" run --config "$in/gfn.yaml" --set threads=$T \
      --out "$o/gfn_run_resume/r" --quiet >/dev/null 2>"$o/err" && err "$mode: the gflownet run did not stop when rank 1 was killed"
    [ -e "$o/gfn_run_resume/r/iter_2/gfn_state.safetensors" ] || err "$mode: the killed gflownet run left no sampler training state"
    "${pre[@]}" "$bin" run --config "$in/gfn.yaml" --set threads=$T --out "$o/gfn_run_resume/r" --quiet >/dev/null 2>"$o/err" \
      || err "$mode: resumed gflownet run: $(tail -c 400 "$o/err")"
    find "$o/gfn_run_resume" -name '*.tmp.*' -delete
  fi
  if [ "$mode" = mpi ]; then # rank 1 killed (as kill -9) twice, rerun each time: the same folder
    local p
    for p in 1:references 2:epoch1; do
      ALPHASPIN_TEST_ABORT_AFTER=$p ALPHASPIN_TEST_ABORT_RANK=1 "${pre[@]}" "$bin" run --config "$in/run.yaml" --set threads=$T \
        --out "$o/resume/r" --quiet >/dev/null 2>"$o/err" && err "$mode: the run did not stop when rank 1 was killed after $p"
      grep -q . "$o/err" || err "$mode: a run whose rank 1 was killed said nothing"
      [ -e "$o/resume/r/iter_2/summary.json" ] && err "$mode: the run whose rank 1 was killed after $p finished"
    done
    "${pre[@]}" "$bin" run --config "$in/run.yaml" --set threads=$T --out "$o/resume/r" --quiet >/dev/null 2>"$o/err" \
      || err "$mode: resumed run: $(tail -c 400 "$o/err")"
    # Rank 0 stopped by the launcher in the middle of an atomic write leaves its temporary file.
    find "$o/resume" -name '*.tmp.*' -delete
  fi
  rm -f "$o/err"
  python3 "$(dirname "$0")/../strip_timing.py" "$o" --drop-threads
}

t0=$(date +%s); all one "$tmp/one"; t1=$(date +%s); all mpi "$tmp/mpi"; t2=$(date +%s)
echo "one process: $((t1 - t0))s; mpirun -np 2 (with the resume runs): $((t2 - t1))s"
# The killed and resumed run is compared with the uninterrupted one.
[ -d "$tmp/mpi/resume/r" ] && mkdir -p "$tmp/one/resume" && cp -r "$tmp/one/run/r" "$tmp/one/resume/r"
[ -d "$tmp/mpi/gfn_resume" ] && cp -r "$tmp/one/gfn_train" "$tmp/one/gfn_resume"
[ -d "$tmp/mpi/gfn_run_resume" ] && cp -r "$tmp/one/gfn" "$tmp/one/gfn_run_resume"

mismatches=0
(cd "$tmp/one" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files"
(cd "$tmp/mpi" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files_mpi"
[ "$(grep -c . "$tmp/files")" -ge 30 ] || err "one process wrote only $(grep -c . "$tmp/files") files"
extra=$(comm -13 "$tmp/files" "$tmp/files_mpi")
[ -z "$extra" ] || { echo "MISMATCH mpirun wrote files one process did not: $extra"; mismatches=$((mismatches + 1)); }
while read -r f; do
  a="$tmp/one/$f" b="$tmp/mpi/$f"
  if [ ! -e "$b" ]; then echo "MISMATCH $f: missing under mpirun"; mismatches=$((mismatches + 1)); continue; fi
  cmp -s "$a" "$b" && continue
  mismatches=$((mismatches + 1))
  case "$f" in
  *.safetensors | *.gguf) echo "MISMATCH $f ($(cmp "$a" "$b" 2>&1 | head -1 | sed 's|.*differ: ||'))" ;;
  *)
    line=$(cmp "$a" "$b" 2>&1 | head -1 | sed -n 's|.*line \([0-9]*\).*|\1|p')
    echo "MISMATCH $f at line ${line:-?}"
    echo "    one: $(sed -n "${line:-1}p" "$a" | head -c 240)"
    echo "    mpi: $(sed -n "${line:-1}p" "$b" | head -c 240)"
    ;;
  esac
done < "$tmp/files"
echo "$(grep -c . "$tmp/files") files compared, one process vs mpirun -np 2; $mismatches mismatches; $failures command failures"
[ "$mismatches" = 0 ] && [ "$failures" = 0 ]
