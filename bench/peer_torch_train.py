#!/usr/bin/env python3
"""PyTorch peer of bench/bench_train.c: the same DPO-shaped step on the same model
(transformers' Llama on the GGUF's weights dequantised to fp32), same shapes and
thread count.  bench/run_train.sh runs it with OMP_WAIT_POLICY unset and =PASSIVE
and takes the faster (on 2 cores neither wins every time).  --precision bf16 runs the
forward under torch.autocast("cpu", bfloat16) (oneDNN, AMX where present), with
fp32 master weights.  LoRA: every q/k/v/o/gate/up/down projection gets
y = W x + (alpha/r) B A drop(x) (PEFT's math; PEFT itself is not needed), the
base frozen.  The vocabulary projection runs only on the scored (answer) rows,
as alphaspin does.  Prints one JSON line: median step time, tokens/s, peak RSS."""
import argparse, contextlib, json, math, os, resource, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--mode", choices=["lora", "full"], default="lora")
ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--pairs", type=int, default=4)
ap.add_argument("--len", type=int, default=256)
ap.add_argument("--prompt", type=int, default=64)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--rank", type=int, default=16)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

d, f = os.path.split(os.path.abspath(args.model))
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32, attn_implementation="sdpa")
model.train()


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.empty(r, base.in_features))
        self.b = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = alpha / r
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(self.drop(x), self.a), self.b)


if args.mode == "lora":
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        for mod, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")), (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for n in names:
                setattr(mod, n, LoRALinear(getattr(mod, n), args.rank, 2.0 * args.rank, 0.05))

V = model.config.vocab_size
g = torch.Generator().manual_seed(1234)
nseq, T, P = 2 * args.pairs, args.len, args.prompt
ids = torch.randint(100, V - 100, (nseq, T), generator=g)
ids[1::2, :P] = ids[0::2, :P]  # pairs share the prompt
targets = ids[:, P:]


def seq_logps():
    h = model.model(input_ids=ids).last_hidden_state  # (B, T, C)
    logits = model.lm_head(h[:, P - 1 : T - 1])  # scored rows only
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1)


ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
with ctx(), torch.no_grad():
    ref = seq_logps().float().detach()

opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)  # state counted in the RSS; untimed
beta, times, cpus = 0.1, [], []
for it in range(args.steps + 1):  # step 0 warms up
    model.zero_grad(set_to_none=True)
    t0, c0 = time.perf_counter(), time.process_time()
    with ctx():
        lp = seq_logps()
    z = beta * ((lp[0::2] - ref[0::2]) - (lp[1::2] - ref[1::2]))
    loss = -F.logsigmoid(z.float()).mean()
    loss.backward()
    times.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
    print(f"  torch step {it}: {times[-1]:.3f} s (cpu {cpus[-1]:.3f} s)", file=os.sys.stderr, flush=True)
    opt.step()
med = statistics.median(times[1:])
print(json.dumps({
    "engine": f"pytorch {torch.__version__}", "mode": args.mode, "precision": args.precision, "threads": args.threads,
    "tokens": nseq * T, "step_s_median": med, "tokens_per_s": nseq * T / med, "cpu_s_median": statistics.median(cpus[1:]),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loss": loss.item(),
}))
