#!/usr/bin/env bash
# Outputs unchanged by a refactor (issue 21 item 5): runs the same commands
# with two builds of alphaspin and compares the bytes.
#   bash bench/seam_identity.sh BUILD_A BUILD_B     (folders holding alphaspin)
# Commands (default model, 2 threads): per-token log-probs of ~1000 tokens of
# ../shared/docs/ALPHA_SPIN.md at q8 and f32 (and bf16, reported but not
# required: bf16 is reproducible only per CPU kind); sampled `generate
# --prompts` of 32 UltraChat prompts at batch 5 and 32 (q8); a 3-step LoRA SFT
# on GSM8K (adapter, optimizer state, log without timings) at f32 and bf16.
# Exit 1 when a required output differs.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")/alphaspin B=$(realpath "$2")/alphaspin
shared=$(realpath ../shared)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=2
head -c 4200 "$shared/docs/ALPHA_SPIN.md" >"$work/text.txt"
python3 - "$shared/data/ultrachat/ultra_eval.json" "$work/prompts.jsonl" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))[:32]
with open(sys.argv[2], "w") as f:
    for it in items: f.write(json.dumps({"prompt": it["data"].strip()}) + "\n")
PY
head -n 48 "$shared/data/gsm8k/train.jsonl" >"$work/sft.jsonl"
fail=0
same() { # label required fileA fileB
    if cmp -s "$3" "$4"; then echo "same      $1"; else echo "DIFFERENT $1"; [ "$2" = req ] && fail=1; fi; return 0
}
for side in A B; do
    bin=${!side}; o="$work/$side"; mkdir -p "$o"
    for p in q8 f32 bf16; do "$bin" logprobs --file "$work/text.txt" --precision $p --threads 2 >"$o/lp_$p.jsonl"; done
    for bs in 5 32; do
        "$bin" generate --prompts "$work/prompts.jsonl" --out "$o/gen_$bs.jsonl" --chat --max-new-tokens 48 --batch-size $bs --threads 2 2>/dev/null
    done
    for p in f32 bf16; do
        "$bin" sft --data "$work/sft.jsonl" --out "$o/sft_$p" --max-steps 3 --batch-size 4 --micro-batch 2 --max-len 256 --precision $p \
            --threads 2 >/dev/null 2>&1
        # log.jsonl without its timing fields
        sed -E 's/"(elapsed_s|tokens_per_s|step_s|time_s)":[^,}]*,?//g' "$o/sft_$p/log.jsonl" >"$o/sft_$p/log.notime"
    done
done
echo "tokens scored: $(wc -l <"$work/A/lp_q8.jsonl")"
same "logprobs q8" req "$work/A/lp_q8.jsonl" "$work/B/lp_q8.jsonl"
same "logprobs f32" req "$work/A/lp_f32.jsonl" "$work/B/lp_f32.jsonl"
same "logprobs bf16" opt "$work/A/lp_bf16.jsonl" "$work/B/lp_bf16.jsonl"
same "generate batch 5" req "$work/A/gen_5.jsonl" "$work/B/gen_5.jsonl"
same "generate batch 32" req "$work/A/gen_32.jsonl" "$work/B/gen_32.jsonl"
for p in f32 bf16; do
    for f in adapter_model.safetensors adapter_config.json log.notime; do
        same "sft $p $f" req "$work/A/sft_$p/$f" "$work/B/sft_$p/$f"
    done
    st=$(cd "$work/A/sft_$p" && ls | grep -E 'state|optim' | head -1 || true)
    [ -n "$st" ] && same "sft $p $st" req "$work/A/sft_$p/$st" "$work/B/sft_$p/$st"
done
exit $fail
