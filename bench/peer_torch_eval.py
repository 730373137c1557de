#!/usr/bin/env python3
"""Peer for bench/run_eval.sh: lm-evaluation-harness's loglikelihood procedure
written again in PyTorch (transformers' Llama on the GGUF's weights, dequantised
to fp32; the Hugging Face tokenizer from the same GGUF), on the first N items of
an ARC JSONL file, 0-shot ("<query>\\nAnswer:" + " <choice>").  Each choice is a
separate forward pass over context + continuation, as lm-eval runs it (no KV
sharing).  Prints one JSON line: acc, acc_norm, items/s, and, given
alphaspin's --log-samples file of the same items, the largest difference of a
choice's log-likelihood and how many items pick a different choice.
Run with OMP_WAIT_POLICY=PASSIVE."""
import argparse, json, os, time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--limit", type=int, default=50)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--samples", help="alphaspin eval --log-samples output for the same items")
args = ap.parse_args()
torch.set_num_threads(args.threads)

d, f = os.path.split(os.path.abspath(args.model))
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
model.eval()

docs = [json.loads(l) for l in open(args.data) if l.strip()][: args.limit]


def encode(s):
    return tok(s, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def loglik(ctx, cont):
    # lm-eval's _encode_pair: trailing spaces move to the continuation.
    n = len(ctx) - len(ctx.rstrip(" "))
    if n:
        cont, ctx = ctx[-n:] + cont, ctx[:-n]
    c, w = encode(ctx), encode(ctx + cont)
    full = c + w[len(c):]
    logits = model(torch.tensor([full[:-1]])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    return sum(lp[j - 1, full[j]].item() for j in range(len(c), len(full)))


t0 = time.perf_counter()
lls, acc, norm = [], 0, 0
for doc in docs:
    ctx = doc["query"] + "\nAnswer:"
    ll = [loglik(ctx, " " + ch) for ch in doc["choices"]]
    lls.append(ll)
    acc += max(range(len(ll)), key=lambda i: (ll[i], -i)) == doc["gold"]
    nl = [x / len(ch) for x, ch in zip(ll, doc["choices"])]
    norm += max(range(len(nl)), key=lambda i: (nl[i], -i)) == doc["gold"]
el = time.perf_counter() - t0
res = {"peer": f"pytorch {torch.__version__} (transformers, fp32), lm-eval loglikelihood re-implemented",
       "items": len(docs), "acc": acc / len(docs), "acc_norm": norm / len(docs), "items_per_s": len(docs) / el}
if args.samples:
    ours = [json.loads(l) for l in open(args.samples) if l.strip()][: len(docs)]
    diff = max(abs(a - b) for o, p in zip(ours, lls) for a, b in zip(o["ll"], p))
    pick = lambda v: max(range(len(v)), key=lambda i: (v[i], -i))
    res["max_abs_ll_diff"] = diff
    res["items_with_other_argmax"] = sum(pick(o["ll"]) != pick(p) for o, p in zip(ours, lls))
print(json.dumps(res))
