#!/usr/bin/env python3
"""transformers' `generate` as the peer of bench_inference --generate (issue 22,
item 5): N random prompts of --prompt-len ids, each continued by exactly
--new-tokens tokens sampled at --temperature (top-k, top-p off; min_new_tokens
= max_new_tokens, so no end token stops one early), bf16 weights, SDPA.

For each batch size of --batches (those above N dropped) it times one batch of
prompts (all prompts have one length and produce the same number of tokens, so
one batch's rate is the rate of all N at that batch size; --all times all N
prompts, in N/batch calls) after an untimed warm-up call, and reports the best
rate.  With --b1-tokens K it also times batch-1 generation of K tokens (the
prompt's prefill included: one call of --prompt-len tokens among K steps).
Timing: wall clock around each call after torch.cuda.synchronize().  Prints
one JSON line: per-batch tok/s, best batch and tok/s, batch-1 tok/s, peak memory.
  peer_generate.py --model DIR [--device cuda] [--prompts 256] [--new-tokens 256]
                   [--prompt-len 32] [--batches 32,64,128,256] [--b1-tokens 0] [--tiny]"""
import argparse, json, resource, sys, time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--model", required=True)
ap.add_argument("--device", default="cuda")
ap.add_argument("--prompts", type=int, default=256)
ap.add_argument("--new-tokens", type=int, default=256)
ap.add_argument("--prompt-len", type=int, default=32)
ap.add_argument("--temperature", type=float, default=1.0)
ap.add_argument("--batches", default="32,64,128,256")
ap.add_argument("--b1-tokens", type=int, default=0)
ap.add_argument("--all", action="store_true", help="time all prompts at every batch size, not one batch")
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--tiny", action="store_true", help="8 prompts x 8 tokens, batches 2,8, prompt 8")
args = ap.parse_args()
if args.tiny:
    args.prompts, args.new_tokens, args.prompt_len, args.batches = 8, 8, 8, "2,8"
    args.b1_tokens = min(args.b1_tokens, 8)

import torch
import transformers
from hf_peer import load

model, dev, cuda = load("peer_generate", args.model, args.device, args.threads)
model.eval()
V = model.config.vocab_size
g = torch.Generator().manual_seed(1234)
prompts = torch.randint(100, V - 100, (args.prompts, args.prompt_len), generator=g).to(dev)


def sync():
    if cuda:
        torch.cuda.synchronize()


def gen(ids, n_new):
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=args.temperature,
                         top_k=0, top_p=1.0, max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + n_new, out.shape
    return out


rates = {}
with torch.no_grad():
    for b in sorted({int(x) for x in args.batches.split(",") if x.strip()}):
        if b > args.prompts:
            continue
        gen(prompts[:b], 4)  # warm-up: kernels, allocator, caches for this shape
        sync()
        chunks = [prompts[i : i + b] for i in range(0, args.prompts, b)] if args.all else [prompts[:b]]
        t0 = time.perf_counter()
        n = 0
        for c in chunks:
            gen(c, args.new_tokens)
            n += c.shape[0] * args.new_tokens
        sync()
        rates[b] = n / (time.perf_counter() - t0)
        print(f"  transformers generate batch {b}: {rates[b]:.1f} tok/s", file=sys.stderr, flush=True)
    b1 = None
    if args.b1_tokens > 0:
        gen(prompts[:1], 4)
        sync()
        t0 = time.perf_counter()
        gen(prompts[:1], args.b1_tokens)
        sync()
        b1 = args.b1_tokens / (time.perf_counter() - t0)
        print(f"  transformers generate batch 1: {b1:.1f} tok/s", file=sys.stderr, flush=True)
best = max(rates, key=rates.get) if rates else None
out = {"engine": f"transformers {transformers.__version__} generate (torch {torch.__version__}), bf16, sdpa", "device": str(dev),
       "prompts": args.prompts, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "temperature": args.temperature,
       "tok_s_by_batch": {str(k): round(v, 2) for k, v in rates.items()}, "best_batch": best,
       "gen_tok_s": rates.get(best), "b1_tok_s": b1, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if cuda:
    out["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["max_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    out["gpu"] = torch.cuda.get_device_name()
print(json.dumps(out))
