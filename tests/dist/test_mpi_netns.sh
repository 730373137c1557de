#!/usr/bin/env bash
# Two machines, as far as MPI can tell (issue 23 item 5): two network namespaces
# joined by a veth pair (10.231.0.1 and 10.231.0.2), one rank in each, so what
# crosses between the ranks is Open MPI's TCP transport between two hosts.
# mpirun runs in the first namespace and reaches the second through
# plm_rsh_agent, a script that does `ip netns exec` where ssh would log in.
# generate (q8, sampled), eval (multiple choice, --log-samples) and a
# 1-iteration run across the two "hosts" write one process's bytes.
# Needs root (namespaces, veth): skipped, saying so, without the rights.
# Usage: test_mpi_netns.sh BUILD_DIR HAVE_MPI
set -u
build="$1"
have_mpi="${2:-OFF}"
. "$(dirname "$0")/mpi_common.sh"
command -v ip >/dev/null || { echo "SKIP: ip (iproute2) absent"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "SKIP: network namespaces need root"; exit 77; }
[ -x "$bin" ] && [ -x "$mk" ] || { echo "FAIL: $bin or $mk not built"; exit 1; }
a=as_mpi_a$$ b=as_mpi_b$$
tmp=$(mktemp -d)
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
if ! ip netns add "$a" 2>"$tmp/err" || ! ip netns add "$b" 2>>"$tmp/err" ||
   ! ip link add "v$$a" type veth peer name "v$$b" 2>>"$tmp/err"; then
  echo "SKIP: cannot make network namespaces and a veth pair here: $(head -1 "$tmp/err")"; exit 77
fi
ip link set "v$$a" netns "$a" && ip link set "v$$b" netns "$b" &&
  ip -n "$a" addr add 10.231.0.1/24 dev "v$$a" && ip -n "$b" addr add 10.231.0.2/24 dev "v$$b" &&
  ip -n "$a" link set "v$$a" up && ip -n "$b" link set "v$$b" up && ip -n "$a" link set lo up && ip -n "$b" link set lo up ||
  { echo "FAIL: setting up the veth pair"; exit 1; }

# ssh's place: `agent [options] HOST COMMAND...` runs COMMAND in HOST's namespace.
cat > "$tmp/agent" <<AGENT
#!/usr/bin/env bash
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
echo "\$host" >> "$tmp/agent.log"
case "\$host" in 10.231.0.1) ns=$a ;; 10.231.0.2) ns=$b ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$tmp/agent"
printf '10.231.0.1 slots=1\n10.231.0.2 slots=1\n' > "$tmp/hosts"
export OMP_WAIT_POLICY=PASSIVE OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The sanitizer build (scripts/test.sh): Open MPI's own allocations would read as leaks;
# -x below hands the setting to the ranks the agent starts in the other namespace.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export OMPI_MCA_plm_rsh_agent="$tmp/agent" OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=10.231.0.0/24 \
  OMPI_MCA_oob_tcp_if_include=10.231.0.0/24 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI=(ip netns exec "$a" "$mpirun" -np 2 --hostfile "$tmp/hosts" --map-by node --bind-to none --allow-run-as-root -x ASAN_OPTIONS -x OMP_WAIT_POLICY)

in="$tmp/in"
mkdir -p "$in"
"$mk" "$in/m.gguf" --wtype q4_1 --ctx 256 --seed 7 --embd 128 --ff 256 --heads 4 --kv-heads 2 --layers 2 || { echo "FAIL: write_tiny_model"; exit 1; }
for i in 1 2 3 4 5; do printf '{"prompt": "Q%d: the king and" }\n' "$i"; done > "$in/prompts.jsonl"
for i in 1 2 3 4 5 6 7; do
  printf '{"messages": [{"role": "user", "content": "What is %d+%d?"}, {"role": "assistant", "content": "It is %d, the sum."}]}\n' "$i" "$i" $((2 * i))
done > "$in/conv.jsonl"
printf '{"q": "é or e", "ch": ["é", "e"], "g": 0}\n{"q": "the", "ch": ["the king", "and"], "g": 1}\n{"q": "Hello", "ch": ["é", "ing"], "g": 0}\n' > "$in/mc.jsonl"
printf 'task: mc\ndata: mc.jsonl\ndoc_to_text: "Q: {{q}}\\nA:"\nchoices: ["{{ch}}"]\ngold: "{{g}}"\nmetrics: [acc, acc_norm]\n' > "$in/mc.yaml"
cat > "$in/run.yaml" <<YAML
model: {path: "$in/m.gguf", chat_template: chatml}
data: {train: "$in/conv.jsonl"}
iterations: 1
prompts: 4
seed: 5
lora: {rank: 2, dropout: 0.1}
train: {epochs: 1, batch_size: 1, grad_accum: 2, max_answer_len: 12}
generation: {max_new_tokens: 12, batch: 3}
eval: {heldout: 2, tasks: ["$in/mc.yaml"], shots: 1}
threads: 1
YAML
failures=0
err() { echo "FAIL: $*"; failures=$((failures + 1)); }
both() { # MODE OUT
  local o=$2 pre=()
  [ "$1" = mpi ] && pre=("${MPI[@]}")
  mkdir -p "$o"
  "${pre[@]}" "$bin" generate --model "$in/m.gguf" --prompts "$in/prompts.jsonl" --out "$o/gen.jsonl" --temperature 1 --seed 3 \
    --max-new-tokens 16 --threads 1 2>"$tmp/err" || err "$1: generate: $(tail -c 600 "$tmp/err")"
  "${pre[@]}" "$bin" eval --model "$in/m.gguf" --tasks "$in/mc.yaml" --shots 1 --out "$o/eval.json" --log-samples "$o/samples.jsonl" \
    --threads 1 --quiet >/dev/null 2>"$tmp/err" || err "$1: eval: $(tail -c 600 "$tmp/err")"
  "${pre[@]}" "$bin" run --config "$in/run.yaml" --out "$o/run/r" --quiet >/dev/null 2>"$tmp/err" || err "$1: run: $(tail -c 600 "$tmp/err")"
  python3 - "$o" <<'PY'
import json, os, sys
T = {"timing_s", "total_evaluation_time_seconds"}
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f in ("summary.json", "eval.json"):
            p = os.path.join(root, f)
            v = json.load(open(p, encoding="utf-8"))
            v = {k: ({j: y for j, y in x.items() if j not in T} if isinstance(x, dict) else x) for k, x in v.items() if k not in T}
            open(p, "w", encoding="utf-8").write(json.dumps(v, indent=1, ensure_ascii=False) + "\n")
PY
}
both one "$tmp/one"
both mpi "$tmp/mpi"
# Every mpirun reached the second "host" through the agent, in the other namespace.
[ "$(grep -c '^10.231.0.2$' "$tmp/agent.log" 2>/dev/null)" = 3 ] || err "mpirun did not start a rank on 10.231.0.2 three times (agent log: $(tr '\n' ' ' < "$tmp/agent.log" 2>/dev/null))"
if [ "$failures" = 0 ]; then
  diff -r "$tmp/one" "$tmp/mpi" >/dev/null || { diff -rq "$tmp/one" "$tmp/mpi"; err "one process and two 'hosts' wrote different bytes"; }
  echo "$(find "$tmp/one" -type f | wc -l) files compared: one process vs one rank in each of two network namespaces (MPI over TCP)"
fi
[ "$failures" = 0 ]
