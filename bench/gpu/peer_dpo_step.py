#!/usr/bin/env python3
"""PyTorch peer of bench/bench_train.c on a GPU (issue 22, item 5): the same
DPO-shaped LoRA step on the same Hugging Face folder, in PyTorch eager +
PEFT, bf16 weights, SDPA attention.

P pairs (chosen, rejected) of T tokens share a prompt of --prompt tokens (random
ids, drawn as bench_train draws them: not the same ids, the same shapes); the
step is the policy's forward over the 2P sequences, the DPO sigmoid loss
-mean log sigmoid(beta ((c - c_ref) - (r - r_ref))) on the per-sequence
answer log-prob sums, and its backward.  The reference log-probs are computed
once before (adapters off, no grad), outside the step, as bench_train does.
LoRA: rank r, alpha 2r, dropout 0.05 on q/k/v/o/gate/up/down (bench_train's
seven targets), the base frozen.  The vocabulary projection runs on the
scored (answer) rows only, as alphaspin does.  AdamW steps between the timed
steps, untimed (its state counts in the memory).

Timing: CUDA events around each step (wall clock on the CPU); step 0 warms up;
the median of the rest.  Prints one JSON line: step_s_median, tokens_per_s,
peak memory (torch.cuda.max_memory_allocated / _reserved, MiB; peak RSS on the CPU).
  peer_dpo_step.py --model DIR [--device cuda] [--pairs 4] [--len 512] [--prompt 64]
                   [--rank 16] [--steps 5] [--tiny]   (--tiny: 2 pairs x 32 tokens, prompt 8, 2 steps)"""
import argparse, json, resource, statistics, sys, time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--model", required=True)
ap.add_argument("--device", default="cuda")
ap.add_argument("--pairs", type=int, default=4)
ap.add_argument("--len", type=int, default=512)
ap.add_argument("--prompt", type=int, default=64)
ap.add_argument("--rank", type=int, default=16)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
ap.add_argument("--tiny", action="store_true")
args = ap.parse_args()
if args.tiny:
    args.pairs, args.len, args.prompt, args.steps = 2, 32, 8, 2

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from hf_peer import load

torch.manual_seed(0)
base, dev, cuda = load("peer_dpo_step", args.model, args.device, args.threads)
lc = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, bias="none",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(base, lc)
model.train()
inner = model.base_model.model  # the *ForCausalLM with LoRA layers in place

V = inner.config.vocab_size
nseq, T, P = 2 * args.pairs, args.len, args.prompt
g = torch.Generator().manual_seed(1234)
ids = torch.randint(100, V - 100, (nseq, T), generator=g)
ids[1::2, :P] = ids[0::2, :P]  # pairs share the prompt
ids = ids.to(dev)
targets = ids[:, P:]


def seq_logps():
    h = inner.model(input_ids=ids).last_hidden_state  # (B, T, C)
    logits = inner.lm_head(h[:, P - 1 : T - 1])  # scored rows only
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1)


with torch.no_grad(), model.disable_adapter():
    ref = seq_logps().float().detach()

opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
if cuda:
    torch.cuda.synchronize()
beta, times, loss = 0.1, [], None
for it in range(args.steps + 1):  # step 0 warms up
    model.zero_grad(set_to_none=True)
    if cuda:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
    else:
        t0 = time.perf_counter()
    lp = seq_logps()
    z = beta * ((lp[0::2] - ref[0::2]) - (lp[1::2] - ref[1::2]))
    loss = -F.logsigmoid(z.float()).mean()
    loss.backward()
    if cuda:
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3)
    else:
        times.append(time.perf_counter() - t0)
    print(f"  torch step {it}: {times[-1]:.4f} s", file=sys.stderr, flush=True)
    opt.step()
med = statistics.median(times[1:])
out = {"engine": f"pytorch {torch.__version__} eager + peft, bf16, sdpa", "device": str(dev), "pairs": args.pairs, "len": T,
       "prompt": P, "rank": args.rank, "tokens": nseq * T, "step_s_median": med, "tokens_per_s": nseq * T / med,
       "loss": loss.item(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if cuda:
    out["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["max_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    out["gpu"] = torch.cuda.get_device_name()
print(json.dumps(out))
