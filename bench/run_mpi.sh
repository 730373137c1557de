#!/usr/bin/env bash
# Several processes on this machine (BENCHMARKS.md, "Several processes"; issue 23
# item 6): one process with 2 threads against `mpirun -np 2` with 1 thread each,
# on the default model: batched generation (32 arithmetic prompts, chat, q8,
# batch 16, 64 new tokens) and LoRA / full SFT steps (8 sequences per step in 4
# micro-batches of 2), with the bytes and the time of each step's gradient
# exchange (ALPHASPIN_DIST_STATS=1), and GFlowNet training (gfn-train: 2 prompts
# x 4 answers of up to 48 tokens per step, sampled and scored by share, 4
# micro-batches of 2).  The outputs of both are compared too.
# Usage: bench/run_mpi.sh [BUILD_DIR]   (REPEAT=N runs each N times, alternating;
#        SFT_ONLY=1: the sft steps alone; GFN_ONLY=1: gfn-train alone)
set -eu
build=${1:-build}
bin=$build/alphaspin
model=${MODEL:-${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
repeat=${REPEAT:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl='^openib' OMP_WAIT_POLICY=PASSIVE
MPI=(mpirun -np 2 --allow-run-as-root --bind-to core)
"$bin" make-data arith --n 64 --seed 3 --out "$tmp/arith.jsonl" 2>/dev/null
python3 - "$tmp" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/arith.jsonl")]
with open(sys.argv[1] + "/prompts.jsonl", "w") as f:
    for r in rows[:32]:
        f.write(json.dumps({"prompt": r["question"]}) + "\n")
PY
now() { date +%s.%N; }
gen() { # MODE OUT
  local pre=() T=2
  [ "$1" = mpi ] && pre=("${MPI[@]}") && T=1
  local t0; t0=$(now)
  "${pre[@]}" "$bin" generate --model "$model" --prompts "$tmp/prompts.jsonl" --out "$2" --chat --precision q8 --batch-size 16 \
    --max-new-tokens 64 --seed 1 --threads $T 2>/dev/null
  local t1; t1=$(now)
  python3 -c "import json,sys; n=sum(json.loads(l)['n_tokens'] for l in open('$2')); print(f'generate $1: {n} tokens in {$t1-$t0:.2f}s wall, {n/($t1-$t0):.1f} tok/s')"
}
sft() { # MODE OUT FLAGS...
  local mode=$1 out=$2 pre=() T=2
  shift 2
  [ "$mode" = mpi ] && pre=("${MPI[@]}") && T=1
  rm -rf "$out"
  ALPHASPIN_DIST_STATS=1 "${pre[@]}" "$bin" sft --model "$model" --data "$tmp/arith.jsonl" --out "$out" --batch-size 8 --micro-batch 2 \
    --max-steps 4 --max-len 160 --eval-fraction 0 --seed 1 --threads $T "$@" 2>"$out.err" >/dev/null
  python3 - "$out/log.jsonl" "$out.err" "$mode" "$*" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# steps 2..4: the first step includes warm-up
per = (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / (len(rows) - 1)
st = re.findall(r"dist: step \d+: \d+ micro-batches, (\d+) bytes sent by rank 0, \d+ gathered, waited ([0-9.]+) ms, exchange ([0-9.]+) ms", open(sys.argv[2]).read())
mean = lambda v: sum(v) / max(len(v), 1)
extra = (f", waiting for the other rank {mean([float(x[1]) for x in st[1:]]):.0f} ms/step, exchange {mean([float(x[2]) for x in st[1:]]):.0f} ms/step,"
         f" rank 0 sends {int(st[-1][0]) / 1e6:.1f} MB/step") if st else ""
print(f"sft {sys.argv[4] or 'lora'} {sys.argv[3]}: {per:.2f} s/step (steps 2-{len(rows)}){extra}")
PY
}
gfn() { # MODE OUT
  local mode=$1 out=$2 pre=() T=2
  [ "$mode" = mpi ] && pre=("${MPI[@]}") && T=1
  rm -rf "$out"
  ALPHASPIN_DIST_STATS=1 "${pre[@]}" "$bin" gfn-train --model "$model" --data "$tmp/arith.jsonl" --out "$out" --steps 4 --prompts-per-step 2 \
    --samples-per-prompt 4 --micro-batch 2 --sample-batch 8 --max-new-tokens 48 --lora-rank 8 --seed 1 --threads $T --quiet 2>"$out.err" >/dev/null
  python3 - "$out/log.jsonl" "$out.err" "$mode" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
per = (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / (len(rows) - 1)
st = re.findall(r"dist: step \d+: \d+ micro-batches, (\d+) bytes sent by rank 0, \d+ gathered, waited ([0-9.]+) ms, exchange ([0-9.]+) ms", open(sys.argv[2]).read())
mean = lambda v: sum(v) / max(len(v), 1)
extra = f", gradient exchange {mean([float(x[2]) for x in st[1:]]):.0f} ms/step" if st else ""
print(f"gfn-train {sys.argv[3]}: {per:.2f} s/step (steps 2-{len(rows)}), mean answer {mean([r['mean_len'] for r in rows]):.1f} tokens{extra}")
PY
}
if [ "${GFN_ONLY:-0}" = 1 ]; then
  for r in $(seq "$repeat"); do
    gfn one "$tmp/n1"; gfn mpi "$tmp/n2"
    cmp -s "$tmp/n1/adapter_model.safetensors" "$tmp/n2/adapter_model.safetensors" && echo "gfn-train: the same sampler" || echo "gfn-train: SAMPLERS DIFFER"
  done
  exit 0
fi
[ "${SFT_ONLY:-0}" = 1 ] && repeat=0
for r in $(seq "$repeat"); do
  gen one "$tmp/g1.jsonl"; gen mpi "$tmp/g2.jsonl"
  cmp -s "$tmp/g1.jsonl" "$tmp/g2.jsonl" && echo "generate: the same bytes" || echo "generate: OUTPUTS DIFFER"
  sft one "$tmp/s1"; sft mpi "$tmp/s2"
  cmp -s "$tmp/s1/adapter_model.safetensors" "$tmp/s2/adapter_model.safetensors" && echo "sft lora: the same adapter" || echo "sft lora: ADAPTERS DIFFER"
done
[ "${SFT_ONLY:-0}" = 1 ] && { sft one "$tmp/s1"; sft mpi "$tmp/s2"; }
sft one "$tmp/f1" --full --lr 1e-5; sft mpi "$tmp/f2" --full --lr 1e-5
cmp -s "$tmp/f1/model.gguf" "$tmp/f2/model.gguf" && echo "sft full: the same model" || echo "sft full: MODELS DIFFER"
gfn one "$tmp/n1"; gfn mpi "$tmp/n2"
cmp -s "$tmp/n1/adapter_model.safetensors" "$tmp/n2/adapter_model.safetensors" && echo "gfn-train: the same sampler" || echo "gfn-train: SAMPLERS DIFFER"
