#!/usr/bin/env python3
"""The one Markdown table of bench/run_gpu.sh, from the JSON, status and config
files its steps left in --out.  Standard library only.

Model FLOPs of the DPO LoRA step (the base frozen, so no weight gradients for it):
  forward   2 x tokens x (linear weights of the layers) + 2 x scored rows x vocab x hidden
            + attention 2 x 2 x heads x head_dim x T^2 / 2 per layer and sequence (causal)
  backward  the same linear products once more (the input gradients) + twice the attention's
  LoRA      6 x tokens x rank x (in + out) per adapted projection
No recomputation (activation checkpointing) is counted: model FLOPs, not hardware FLOPs.
The fraction of peak is model FLOPs / step time / the GPU's dense bf16 peak."""
import argparse, json, os

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--shapes", required=True)
ap.add_argument("--b1-shape", default="")
ap.add_argument("--device", default="cuda")
ap.add_argument("--gpu", default="")
ap.add_argument("--seconds", type=int, default=0)
ap.add_argument("--budget", type=int, default=0)
ap.add_argument("--pairs", type=int, default=4)
ap.add_argument("--len", type=int, default=512)
ap.add_argument("--prompt", type=int, default=64)
ap.add_argument("--rank", type=int, default=16)
ap.add_argument("--gen", default="")
ap.add_argument("--peak-tflops", type=float, default=0.0)
ap.add_argument("--spin", default="", help="what the alpha-SPIN iteration ran (its row label); empty: not run")
a = ap.parse_args()

PEAKS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0)]
peak = a.peak_tflops
if not peak and a.device != "cpu":
    peak = next((p for k, p in PEAKS if k.lower() in a.gpu.lower()), 0.0)


def load(name):
    """(json or None, status): status is 'ok', 'failed (exit N)', 'timeout', 'not run'."""
    st = os.path.join(a.out, name + ".status")
    if not os.path.exists(st):
        return None, "not run", 0.0
    rc, mem, _ = (open(st).read().split() + ["0", "0", "0"])[:3]
    j = None
    try:
        line = open(os.path.join(a.out, name + ".json")).read().strip()
        j = json.loads(line) if line else None
    except (OSError, ValueError):
        pass
    if rc == "skipped":
        return None, "not run (budget)", 0.0
    if rc == "124":
        return None, "timeout", float(mem)
    if rc != "0" or j is None:
        return None, f"failed (exit {rc})", float(mem)
    return j, "ok", float(mem)


def mem_str(j, smi_mib):
    if a.device == "cpu":
        return f"{j['peak_rss_mb']:.0f} MiB RSS" if j and "peak_rss_mb" in j else ""
    s = f"{smi_mib / 1024:.1f} GiB" if smi_mib else "?"
    if j and "max_memory_allocated_mib" in j:
        s += f" (torch {j['max_memory_allocated_mib'] / 1024:.1f})"
    return s


def model_flops(cfg):
    C, L, F, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or C // H
    qd, kvd = H * hd, KV * hd
    nseq, T = 2 * a.pairs, a.len
    tokens, scored = nseq * T, nseq * (T - a.prompt)
    lin = C * qd + 2 * C * kvd + qd * C + 3 * C * F
    attn = L * nseq * 2 * H * hd * T * T  # QK^T and PV, causal half
    fwd = 2 * tokens * L * lin + 2 * scored * V * C + attn
    bwd = 2 * tokens * L * lin + 2 * scored * V * C + 2 * attn
    lora = 6 * tokens * a.rank * L * ((C + qd) + 2 * (C + kvd) + (qd + C) + 3 * (C + F))
    return fwd + bwd + lora


rows = []
bw, st, _ = load("copy_bw")
copy_gbs = bw["copy_gb_s"] if bw else None
rows.append(("copy bandwidth, device to device (GB/s, read + written)", "", f"{copy_gbs:.0f}" if bw else st, "", ""))
for shape in a.shapes.split():
    cfgp = os.path.join(a.out, f"config_{shape}.json")
    cfg = json.load(open(cfgp)) if os.path.exists(cfgp) else None
    _, mst, _ = load(f"model_{shape}")
    if mst != "ok":
        rows.append((f"{shape}: writing the model", mst, "", "", ""))
        continue
    # DPO LoRA step
    o, ost, omem = load(f"train_alphaspin_{shape}")
    p, pst, pmem = load(f"train_peer_{shape}")
    cell = lambda j, s: f"{j['tokens_per_s']:.0f} tok/s ({j['step_s_median'] * 1e3:.0f} ms)" if j else s
    ratio = f"{o['tokens_per_s'] / p['tokens_per_s']:.2f}x" if o and p else ""
    rows.append((f"{shape}: DPO LoRA step, {a.pairs} pairs x {a.len} tokens, rank {a.rank}, bf16", cell(o, ost), cell(p, pst), ratio,
                 f"{mem_str(o, omem)} / {mem_str(p, pmem)}"))
    if cfg and peak:
        fl = model_flops(cfg)
        frac = lambda j, s: f"{fl / j['step_s_median'] / (peak * 1e12) * 100:.1f}%" if j else s
        rows.append((f"{shape}: same step, model FLOPs / bf16 peak ({fl / 1e12:.3g} TFLOP per step, peak {peak:g} TFLOP/s)",
                     frac(o, ost), frac(p, pst), "", ""))
    # generation
    o, ost, omem = load(f"gen_alphaspin_{shape}")
    p, pst, pmem = load(f"gen_peer_{shape}")
    oc = f"{o['gen_tok_s']:.0f} tok/s (batch {o['batch']})" if o else ost
    pc = f"{p['gen_tok_s']:.0f} tok/s (best batch {p['best_batch']})" if p and p.get("gen_tok_s") else pst
    ratio = f"{o['gen_tok_s'] / p['gen_tok_s']:.2f}x" if o and p and p.get("gen_tok_s") else ""
    rows.append((f"{shape}: generation {a.gen}, temperature 1, aggregate", oc, pc, ratio, f"{mem_str(o, omem)} / {mem_str(p, pmem)}"))
    # batch-1 decoding
    if shape == a.b1_shape:
        o, ost, omem = load(f"b1_alphaspin_{shape}")
        ob1 = o["decode_b1_tok_s"] if o else None
        pb1 = p.get("b1_tok_s") if p else None
        rows.append((f"{shape}: batch-1 decoding (peer: generate at batch 1)", f"{ob1:.1f} tok/s" if o else ost,
                     f"{pb1:.1f} tok/s" if pb1 else pst, f"{ob1 / pb1:.2f}x" if ob1 and pb1 else "", f"{mem_str(o, omem)} / (above)"))
        wb_path = os.path.join(a.out, f"weight_bytes_{shape}")
        wb = int(open(wb_path).read().strip() or 0) if os.path.exists(wb_path) else 0
        if wb and copy_gbs:
            bound = copy_gbs * 1e9 / wb
            size = f"{wb / 1e9:.2f} GB" if wb >= 1e8 else f"{wb / 1e6:.2f} MB"
            rows.append((f"{shape}: batch-1 decoding vs the bandwidth bound (copy bandwidth / {size} of weights)",
                         f"{ob1:.1f} tok/s" if o else ost, f"bound {bound:.1f} tok/s", f"{ob1 / bound * 100:.0f}% of bound" if o else "", ""))

# One alpha-SPIN iteration (alphaspin run, iteration 1): its phases' seconds (summary.json's timing_s).
if a.spin:
    _, sst, smem = load("spin")  # (prints no JSON: its timing is spin_timing.json)
    t = None
    try:
        t = json.load(open(os.path.join(a.out, "spin_timing.json")))
    except (OSError, ValueError):
        pass
    if t and sst in ("ok", "failed (exit 0)"):
        phases = ", ".join(f"{k} {t[k]:.1f}" for k in ("generate", "references", "train", "evaluate", "checkpoint", "other") if k in t)
        rows.append((f"alpha-SPIN iteration, {a.spin}: seconds per phase ({phases})", f"{t['total']:.1f} s", "", "",
                     mem_str(None, smem) if a.device != "cpu" else ""))
    else:
        rows.append((f"alpha-SPIN iteration, {a.spin}", "no timing" if sst == "failed (exit 0)" else sst, "", "", ""))

print(f"GPU benchmarks (bench/run_gpu.sh), device {a.device}: {a.gpu or 'cpu'}; {a.seconds} s of a {a.budget} s budget."
      + ("" if peak or a.device == "cpu" else " Unknown bf16 peak: give PEAK_TFLOPS for the fractions of peak."))
print()
print("| measure | alphaspin | peer | ratio | peak memory (alphaspin / peer) |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(x.replace("|", "/") for x in r) + " |")
print()
print("Peers: PyTorch eager + PEFT (bf16, SDPA) for the step; transformers' generate (bf16, SDPA) for generation."
      + (" Memory: the rise of nvidia-smi's memory.used during the step (torch.cuda.max_memory_allocated in brackets)."
         if a.device != "cpu" else " Memory: peak RSS (a CPU dry run: the numbers say nothing about a GPU)."))
