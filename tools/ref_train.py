#!/usr/bin/env python3
"""PyTorch autograd reference for src/train (the llm.c test_gpt2.c pattern).

A tiny random model written from the Hugging Face math (float64, rotate_half
RoPE on the unpermuted weights, Gemma's (1 + w) norms, sqrt(C) embedding
scale, GeGLU) -- independent of the C code -- and a DPO loss over two
(chosen, rejected) pairs that share prompts:

  logp_b  = sum of log p(token) over the answer tokens of sequence b
            (positions prompt_len .. len-1; prompt and padding masked out)
  h_i     = (logp_c - ref_c) - (logp_r - ref_r)          pair i
  loss    = mean_i -log sigmoid(beta * h_i)

Written to tests/vectors/train_ref_<arch>.json (everything in GGUF layout, as
the C side sees it: llama Wq/Wk rows permuted as convert_hf_to_gguf.py does,
Gemma norms stored as 1 + w; gradients permuted the same way, so they are the
gradients with respect to the GGUF tensors):
  * the model (GGUF metadata + tensors), the batch, beta and the reference log-probs;
  * logp per sequence, the loss, and the gradient of every parameter;
  * the weights after 3 AdamW steps (torch.optim.AdamW, weight decay on the
    matrices only, clip_grad_norm_) and the loss before each step;
  * the same for LoRA (rank 2, alpha 4, all seven targets, dropout 0, random
    A and B, base frozen): adapters, their gradients and the adapters after 3
    AdamW steps;
  * optimizer-only cases on a flat vector: AdamW, RMSprop (PyTorch defaults)
    and SGD with momentum and weight decay, 3 steps with given gradients.

Usage: ~/.cache/alphaspin/venv/bin/python tools/ref_train.py [outdir]
"""
import base64
import json
import math
import os
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]


def b64(a):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode()


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: rotary pairs become adjacent rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- the model (HF conventions) ----

def rms_norm(x, w, eps, gemma):
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * ((1.0 + w) if gemma else w)


def rope(x, theta):
    """x (T, H, d); HF rotate_half: pairs (i, i + d/2) share frequency theta^(-2i/d)."""
    T, _, d = x.shape
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :]
    rot = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def linear(x, w, lora, name):
    y = x @ w.T
    if lora is not None and name in lora["A"]:
        y = y + lora["scale"] * (x @ lora["A"][name].T) @ lora["B"][name].T
    return y


def seq_logits(cfg, P, tokens, lora=None):
    gemma = cfg["arch"] == "gemma"
    T = len(tokens)
    C, H, Hkv, d = cfg["n_embd"], cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"]
    h = P["embed"][torch.tensor(tokens)]
    if gemma:
        h = h * math.sqrt(C)
    mask = torch.triu(torch.full((T, T), -math.inf), diagonal=1)
    for l in range(cfg["n_layer"]):
        L = P["layers"][l]
        lo = None if lora is None else {"scale": lora["scale"], "A": lora["A"][l], "B": lora["B"][l]}
        a = rms_norm(h, L["attn_norm"], cfg["eps"], gemma)
        q = rope(linear(a, L["wq"], lo, "q").reshape(T, H, d), cfg["theta"])
        k = rope(linear(a, L["wk"], lo, "k").reshape(T, Hkv, d), cfg["theta"])
        v = linear(a, L["wv"], lo, "v").reshape(T, Hkv, d)
        heads = []
        for hh in range(H):
            g = hh // (H // Hkv)
            s = q[:, hh, :] @ k[:, g, :].T / math.sqrt(d) + mask
            heads.append(torch.softmax(s, -1) @ v[:, g, :])
        h = h + linear(torch.cat(heads, -1), L["wo"], lo, "o")
        f = rms_norm(h, L["ffn_norm"], cfg["eps"], gemma)
        gate = linear(f, L["w_gate"], lo, "gate")
        act = torch.nn.functional.gelu(gate, approximate="tanh") if gemma else torch.nn.functional.silu(gate)
        h = h + linear(act * linear(f, L["w_up"], lo, "up"), L["w_down"], lo, "down")
    h = rms_norm(h, P["out_norm"], cfg["eps"], gemma)
    return h @ (P["embed"] if cfg["tied"] else P["output"]).T


def answer_logps(cfg, P, batch, lora=None):
    out = []
    for toks, n, pl in zip(batch["tokens"], batch["len"], batch["prompt_len"]):
        toks = toks[:n]
        lp = torch.log_softmax(seq_logits(cfg, P, toks, lora), -1)
        out.append(sum(lp[t - 1, toks[t]] for t in range(pl, n)))
    return torch.stack(out)


def dpo_loss(logps, ref, beta):
    h = (logps[0::2] - ref[0::2]) - (logps[1::2] - ref[1::2])
    return (-torch.nn.functional.logsigmoid(beta * h)).mean()


# ---- GGUF layout ----

def gguf_tensors(cfg, P, grad=False):
    """name -> tensor in GGUF layout (values, or .grad when grad)."""
    gemma = cfg["arch"] == "gemma"
    val = (lambda t: t.grad) if grad else (lambda t: t.detach())
    norm = (lambda t: val(t)) if (grad or not gemma) else (lambda t: val(t) + 1.0)
    T = {"token_embd.weight": val(P["embed"])}
    if not cfg["tied"]:
        T["output.weight"] = val(P["output"])
    T["output_norm.weight"] = norm(P["out_norm"])
    for i, L in enumerate(P["layers"]):
        wq, wk = val(L["wq"]), val(L["wk"])
        if not gemma:
            wq, wk = permute(wq, cfg["n_head"]), permute(wk, cfg["n_head_kv"])
        T[f"blk.{i}.attn_norm.weight"] = norm(L["attn_norm"])
        T[f"blk.{i}.attn_q.weight"] = wq
        T[f"blk.{i}.attn_k.weight"] = wk
        T[f"blk.{i}.attn_v.weight"] = val(L["wv"])
        T[f"blk.{i}.attn_output.weight"] = val(L["wo"])
        T[f"blk.{i}.ffn_norm.weight"] = norm(L["ffn_norm"])
        T[f"blk.{i}.ffn_gate.weight"] = val(L["w_gate"])
        T[f"blk.{i}.ffn_up.weight"] = val(L["w_up"])
        T[f"blk.{i}.ffn_down.weight"] = val(L["w_down"])
    return T


def gguf_lora(cfg, lora, grad=False):
    """LoRA factors in GGUF layout: B of q/k gets the same row permutation as Wq/Wk."""
    val = (lambda t: t.grad) if grad else (lambda t: t.detach())
    out = {}
    for l in range(cfg["n_layer"]):
        for t in TARGETS:
            a, b = val(lora["A"][l][t]), val(lora["B"][l][t])
            if cfg["arch"] == "llama" and t in ("q", "k"):
                b = permute(b, cfg["n_head"] if t == "q" else cfg["n_head_kv"])
            out[f"blk.{l}.lora_a.{t}"] = a
            out[f"blk.{l}.lora_b.{t}"] = b
    return out


def tensor_list(T):
    return [{"name": k, "ne": list(reversed(v.shape)), "data": b64(v)} for k, v in T.items()]


def metadata(cfg):
    a = cfg["arch"]
    return [{"key": k, "type": t, "value": v} for k, t, v in [
        ("general.architecture", "str", a),
        (f"{a}.context_length", "u32", 64),
        (f"{a}.embedding_length", "u32", cfg["n_embd"]),
        (f"{a}.block_count", "u32", cfg["n_layer"]),
        (f"{a}.feed_forward_length", "u32", cfg["n_ff"]),
        (f"{a}.attention.head_count", "u32", cfg["n_head"]),
        (f"{a}.attention.head_count_kv", "u32", cfg["n_head_kv"]),
        (f"{a}.attention.key_length", "u32", cfg["head_dim"]),
        (f"{a}.attention.value_length", "u32", cfg["head_dim"]),
        (f"{a}.attention.layer_norm_rms_epsilon", "f32", cfg["eps"]),
        (f"{a}.rope.freq_base", "f32", cfg["theta"]),
        (f"{a}.rope.dimension_count", "u32", cfg["head_dim"])]]


# ---- building the vectors ----

def make_params(cfg, g):
    C, H, Hkv, d, F, V = (cfg[k] for k in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab"))
    gemma = cfg["arch"] == "gemma"

    def mat(r, c):
        return (torch.randn(r, c, generator=g) / math.sqrt(c)).requires_grad_()

    def normw():
        return ((0.0 if gemma else 1.0) + 0.2 * torch.randn(C, generator=g)).requires_grad_()

    P = {"embed": (torch.randn(V, C, generator=g) * (0.5 if gemma else 1.0)).requires_grad_(), "layers": []}
    for _ in range(cfg["n_layer"]):
        P["layers"].append({"attn_norm": normw(), "wq": mat(H * d, C), "wk": mat(Hkv * d, C), "wv": mat(Hkv * d, C),
                            "wo": mat(C, H * d), "ffn_norm": normw(), "w_gate": mat(F, C), "w_up": mat(F, C),
                            "w_down": mat(C, F)})
    P["out_norm"] = normw()
    if not cfg["tied"]:
        P["output"] = mat(V, C)
    return P


def param_groups(P):
    """transformers' Trainer: weight decay on matrices, none on norm weights."""
    decay, no_decay = [P["embed"]], [P["out_norm"]]
    if "output" in P:
        decay.append(P["output"])
    for L in P["layers"]:
        for k, v in L.items():
            (no_decay if "norm" in k else decay).append(v)
    return decay, no_decay


def train_steps(params_decay, params_no_decay, loss_fn, opt_cfg, steps=3):
    opt = torch.optim.AdamW([{"params": params_decay, "weight_decay": opt_cfg["weight_decay"]},
                             {"params": params_no_decay, "weight_decay": 0.0}],
                            lr=opt_cfg["lr"], betas=tuple(opt_cfg["betas"]), eps=opt_cfg["eps"])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params_decay + params_no_decay, opt_cfg["max_grad_norm"])
        opt.step()
    return losses


def build(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    P = make_params(cfg, g)
    V = cfg["n_vocab"]
    # Two pairs sharing a prompt each (chosen, rejected), right-padded to 9.
    seqs = [([3, 17, 5], [9, 22, 31, 4, 2]), ([3, 17, 5], [11, 2]),
            ([8, 1], [30, 30, 12, 7, 39, 5, 1]), ([8, 1], [6, 25, 33])]
    T = max(len(p) + len(a) for p, a in seqs)
    batch = {"tokens": [(p + a + [0] * T)[:T] for p, a in seqs], "len": [len(p) + len(a) for p, a in seqs],
             "prompt_len": [len(p) for p, a in seqs], "n_ctx": T}
    assert all(t < V for s in batch["tokens"] for t in s)
    beta = 0.5
    with torch.no_grad():
        lp0 = answer_logps(cfg, P, batch)
    ref = (lp0 + torch.tensor([0.8, -0.4, -1.1, 0.3])).detach()  # reference model's log-probs: the base, shifted
    opt_cfg = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "max_grad_norm": 1.0}

    out = {"variant": cfg["arch"], "note": "generated by tools/ref_train.py (PyTorch %s, float64); tensors float32 "
           "little-endian base64, GGUF layout (ne[0] = row length)" % torch.__version__,
           "config": cfg, "metadata": metadata(cfg), "tensors": tensor_list(gguf_tensors(cfg, P)),
           "batch": batch, "beta": beta, "ref_logps": ref.tolist(), "optimizer": opt_cfg}

    # Full fine-tuning: gradients at the initial weights, then 3 AdamW steps.
    logps = answer_logps(cfg, P, batch)
    loss = dpo_loss(logps, ref, beta)
    loss.backward()
    out["logps"] = logps.tolist()
    out["loss"] = loss.item()
    out["grads"] = tensor_list(gguf_tensors(cfg, P, grad=True))
    dec, nodec = param_groups(P)
    out["losses"] = train_steps(dec, nodec, lambda: dpo_loss(answer_logps(cfg, P, batch), ref, beta), opt_cfg)
    out["weights_after"] = tensor_list(gguf_tensors(cfg, P))

    # LoRA on the initial weights (a fresh copy), base frozen.
    g = torch.Generator().manual_seed(seed)
    P = make_params(cfg, g)
    for t in [P["embed"], P["out_norm"]] + ([P["output"]] if "output" in P else []) + [v for L in P["layers"] for v in L.values()]:
        t.requires_grad_(False)
    r, alpha = 2, 4.0
    C, H, Hkv, d, F = (cfg[k] for k in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff"))
    dims = {"q": (C, H * d), "k": (C, Hkv * d), "v": (C, Hkv * d), "o": (H * d, C), "gate": (C, F), "up": (C, F),
            "down": (F, C)}
    lora = {"scale": alpha / r, "A": [], "B": []}
    for _ in range(cfg["n_layer"]):
        lora["A"].append({t: (torch.randn(r, dims[t][0], generator=g) / math.sqrt(dims[t][0])).requires_grad_() for t in TARGETS})
        lora["B"].append({t: (0.3 * torch.randn(dims[t][1], r, generator=g)).requires_grad_() for t in TARGETS})
    lo = {"rank": r, "alpha": alpha, "tensors": tensor_list(gguf_lora(cfg, lora))}
    logps = answer_logps(cfg, P, batch, lora)
    loss = dpo_loss(logps, ref, beta)
    loss.backward()
    lo["logps"], lo["loss"] = logps.tolist(), loss.item()
    lo["grads"] = tensor_list(gguf_lora(cfg, lora, grad=True))
    factors = [lora[k][l][t] for l in range(cfg["n_layer"]) for k in ("A", "B") for t in TARGETS]
    lo["losses"] = train_steps(factors, [], lambda: dpo_loss(answer_logps(cfg, P, batch, lora), ref, beta), opt_cfg)
    lo["weights_after"] = tensor_list(gguf_lora(cfg, lora))
    out["lora"] = lo
    return out


def optim_cases():
    """torch.optim on a flat vector: 3 steps with given gradients."""
    g = torch.Generator().manual_seed(7)
    n = 48
    p0 = torch.randn(n, generator=g)
    grads = [torch.randn(n, generator=g) * s for s in (1.0, 0.5, 2.0)]
    cases = []
    for name, make, cfg in [
        ("adamw", lambda p: torch.optim.AdamW([p], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
         {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}),
        ("rmsprop", lambda p: torch.optim.RMSprop([p], lr=0.01),
         {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0}),
        ("sgd", lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01),
         {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})]:
        p = p0.clone().float().requires_grad_()  # float32, as the C optimizer
        opt = make(p)
        after = []
        for gr in grads:
            p.grad = gr.float().clone()
            opt.step()
            after.append(b64(p.detach().double()))
        cases.append({"name": name, "config": cfg, "after": after})
    return {"n": n, "params": b64(p0), "grads": [b64(x) for x in grads], "cases": cases, "schedules": schedules()}


def schedules():
    """Learning-rate multipliers of transformers' schedulers for each optimizer step
    (warm-up steps = ceil(ratio * total), as TrainingArguments.get_warmup_steps)."""
    from transformers import get_scheduler
    out = []
    for name, ratio, total in [("constant", 0.0, 7), ("constant_with_warmup", 0.25, 10), ("linear", 0.1, 15),
                               ("linear", 0.0, 6), ("cosine", 0.1, 20), ("cosine", 0.5, 9)]:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = get_scheduler(name, opt, num_warmup_steps=math.ceil(total * ratio), num_training_steps=total)
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out.append({"name": name, "warmup_ratio": ratio, "total_steps": total, "factors": lrs})
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "vectors")
    llama = {"arch": "llama", "n_vocab": 40, "n_embd": 16, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "head_dim": 4,
             "n_ff": 24, "eps": 1e-5, "theta": 10000.0, "tied": False}
    gemma = {"arch": "gemma", "n_vocab": 40, "n_embd": 16, "n_layer": 2, "n_head": 2, "n_head_kv": 1, "head_dim": 12,
             "n_ff": 24, "eps": 1e-6, "theta": 10000.0, "tied": True}
    for cfg, seed in ((llama, 1), (gemma, 2)):
        doc = build(cfg, seed)
        path = os.path.join(outdir, f"train_ref_{cfg['arch']}.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=0)
        print(f"{path}: loss {doc['loss']:.6f}, LoRA loss {doc['lora']['loss']:.6f}, {os.path.getsize(path)} bytes")
    path = os.path.join(outdir, "train_ref_optim.json")
    with open(path, "w") as f:
        json.dump(optim_cases(), f, indent=0)
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
