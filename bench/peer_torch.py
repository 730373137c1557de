#!/usr/bin/env python3
"""PyTorch (transformers' Llama on the GGUF's weights, dequantised to fp32 by
transformers' GGUF loader) on the same cores: the peer for bench/run_inference.sh
and bench/run_prefill.sh, which choose its OpenMP wait policy (on the 2-vCPU VM of
BENCHMARKS.md it ran fastest with the policy unset).  Prints one JSON line: decode
tok/s at batch 1 and B (greedy, KV cache), prefill tok/s, peak RSS."""
import statistics
import argparse, json, os, resource, time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--prompt-tokens", type=int, default=32)
ap.add_argument("--new-tokens", type=int, default=128)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--prefill", type=int, default=512)
ap.add_argument("--prefill-reps", type=int, default=5, help="prefill passes; the median is reported")
ap.add_argument("--only", choices=["all", "prefill"], default="all", help="prefill: skip the decoding runs (they print 0)")
ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                help="weights and arithmetic: fp32, or bf16 (oneDNN's AMX-BF16 kernels where the CPU has them)")
args = ap.parse_args()
torch.set_num_threads(args.threads)

d, f = os.path.split(os.path.abspath(args.model))
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
if args.dtype == "bf16":
    model = model.to(torch.bfloat16)
model.eval()
V = model.config.vocab_size
g = torch.Generator().manual_seed(1234)


@torch.inference_mode()
def decode_run(B):
    ids = torch.randint(100, V - 100, (B, args.prompt_tokens), generator=g)
    out = model(ids, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(args.new_tokens):
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return B * args.new_tokens / (time.perf_counter() - t0)


@torch.inference_mode()
def prefill_run():
    ids = torch.randint(100, V - 100, (1, args.prefill), generator=g)
    t0 = time.perf_counter()
    model(ids, use_cache=True, logits_to_keep=1)
    return args.prefill / (time.perf_counter() - t0)


prefill_run()  # warm-up
res = {
    "peer": f"pytorch {torch.__version__} (transformers, {args.dtype})",
    "decode_b1_tok_s": decode_run(1) if args.only == "all" else 0.0,
    f"decode_b{args.batch}_tok_s": decode_run(args.batch) if args.only == "all" else 0.0,
    f"prefill_{args.prefill}_tok_s": statistics.median(prefill_run() for _ in range(args.prefill_reps)),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
print(json.dumps(res))
