#!/usr/bin/env bash
# dist_allgather's payload over a transport (issue 23, dist/dist.h
# dist_use_transport): the path NCCL takes with device cuda, checked here
# without a GPU through the loopback transport (ALPHASPIN_DIST_TRANSPORT=loopback:
# the same bootstrap over MPI, rank 0's id broadcast and every rank joining, and
# the same equal padded blocks, whose all-gather is MPI_Allgather instead of
# ncclAllGather).
#   1. test_dist_transport loopback under mpirun -np 2 and as one process:
#      sizes that differ by rank, a rank with none, 65 MiB, a failed share;
#   2. sft (LoRA with dropout, 4 micro-batches per step, 2 per rank) and run
#      (1 iteration, 2 micro-batches per step) under mpirun -np 2 with the
#      loopback transport give one process's bytes (as tests/dist/test_mpi.sh
#      does over MPI), and the per-step exchange says it went over loopback.
# Usage: test_mpi_transport.sh BUILD_DIR HAVE_MPI
set -u
build="$1"
have_mpi="${2:-OFF}"
. "$(dirname "$0")/mpi_common.sh"
gather="$build/tests/dist/test_dist_transport"
command -v python3 >/dev/null || { echo "SKIP: python3 absent (it removes the timing fields before comparing)"; exit 77; }
[ -x "$bin" ] && [ -x "$mk" ] && [ -x "$gather" ] || { echo "FAIL: $bin, $mk or $gather not built"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE
mpi_local
failures=0
err() { echo "FAIL: $*"; failures=$((failures + 1)); }

# 1. The gathers.
out=$("${MPI[@]}" "$gather" loopback 2>&1) || err "mpirun -np 2 test_dist_transport loopback: $out"
echo "$out" | grep '^PASS' || err "mpirun -np 2 test_dist_transport loopback said: $out"
out=$("$gather" loopback 2>&1) || err "test_dist_transport loopback (one process): $out"
echo "$out" | grep '^PASS' || err "test_dist_transport loopback (one process) said: $out"

# 2. sft and run: one process over no transport, two over loopback.
in="$tmp/in"
mkdir -p "$in"
"$mk" "$in/m.gguf" --wtype q4_1 --ctx 256 --seed 7 --embd 128 --ff 256 --heads 4 --kv-heads 2 --layers 2 || { echo "FAIL: write_tiny_model"; exit 1; }
for i in 1 2 3 4 5 6 7 8 9 10 11; do
  printf '{"messages": [{"role": "user", "content": "What is %d+%d?"}, {"role": "assistant", "content": "It is %d, the sum."}]}\n' "$i" "$i" $((2 * i))
done > "$in/conv.jsonl"
cat > "$in/run.yaml" <<YAML
model: {path: "$in/m.gguf", chat_template: chatml}
data: {train: "$in/conv.jsonl"}
iterations: 1
prompts: 5
alpha: 0.1
tau: 2
seed: 5
lora: {rank: 2, dropout: 0.1}
optimizer: {lr: 0.01}
train: {epochs: 2, batch_size: 1, grad_accum: 2, max_answer_len: 12}
generation: {max_new_tokens: 12, batch: 3}
eval: {heldout: 3}
YAML
both() { # MODE OUT
  local mode=$1 o=$2 pre T
  mkdir -p "$o"
  if [ "$mode" = one ]; then pre=(); T=2; else pre=(env ALPHASPIN_DIST_TRANSPORT=loopback ALPHASPIN_DIST_STATS=1 "${MPI[@]}"); T=1; fi
  "${pre[@]}" "$bin" sft --model "$in/m.gguf" --data "$in/conv.jsonl" --out "$o/sft" --chat-template chatml --max-steps 3 --batch-size 4 \
    --micro-batch 1 --max-len 64 --lora-rank 4 --lora-dropout 0.1 --lr 0.01 --eval-fraction 0.2 --seed 5 --threads $T >/dev/null 2>"$tmp/err.$mode.sft" \
    || err "$mode: sft: $(tr '\r' '\n' < "$tmp/err.$mode.sft" | tail -2)"
  "${pre[@]}" "$bin" run --config "$in/run.yaml" --set threads=$T --out "$o/run/r" --quiet >/dev/null 2>"$tmp/err.$mode.run" \
    || err "$mode: run: $(tail -c 400 "$tmp/err.$mode.run")"
  python3 "$(dirname "$0")/../strip_timing.py" "$o" --drop-threads
}
both one "$tmp/one"
both loop "$tmp/loop"
for c in sft run; do
  n=$(grep -c 'exchange .* over loopback' "$tmp/err.loop.$c")
  [ "$n" -ge 1 ] || err "$c under mpirun: no exchange over loopback in its stderr: $(grep 'dist:' "$tmp/err.loop.$c" | head -2)"
  grep 'dist: ' "$tmp/err.loop.$c" | grep -v 'over loopback' | head -1 | grep -q . && err "$c under mpirun: an exchange not over loopback"
  echo "$c: $n gradient exchanges over loopback"
done
mismatches=0
(cd "$tmp/one" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files"
(cd "$tmp/loop" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files_loop"
[ "$(grep -c . "$tmp/files")" -ge 10 ] || err "one process wrote only $(grep -c . "$tmp/files") files"
cmp -s "$tmp/files" "$tmp/files_loop" || { echo "MISMATCH: the file lists differ: $(diff "$tmp/files" "$tmp/files_loop" | head -5)"; mismatches=$((mismatches + 1)); }
while read -r f; do
  [ -e "$tmp/loop/$f" ] || continue
  cmp -s "$tmp/one/$f" "$tmp/loop/$f" || { echo "MISMATCH $f: $(cmp "$tmp/one/$f" "$tmp/loop/$f" 2>&1 | head -1)"; mismatches=$((mismatches + 1)); }
done < "$tmp/files"
echo "$(grep -c . "$tmp/files") files compared, one process vs mpirun -np 2 over the loopback transport; $mismatches mismatches; $failures failures"
[ "$mismatches" = 0 ] && [ "$failures" = 0 ]
