#!/usr/bin/env python3
"""Reference for the PEFT adapter checkpoints of src/train (checkpoint.h).

Builds tiny random Hugging Face models (LlamaForCausalLM: GQA, untied;
GemmaForCausalLM: MQA, tied, head_dim != hidden/heads), wraps them with PEFT
LoRA (r 2, alpha 4, dropout 0.05, all seven projections), gives the factors
random values (B != 0), and lets PEFT itself write the adapter folder:

  tests/vectors/peft_<arch>/adapter_model.safetensors, adapter_config.json

plus tests/vectors/peft_<arch>.json: the base model in GGUF layout (as
convert_hf_to_gguf.py writes it: llama q/k rows permuted, Gemma norms + 1),
token sequences, the per-token log-probabilities (float64) of the PEFT
model with the adapters on and off, and what transformers' save_pretrained
writes for the base (model.safetensors tensors, config.json) for the
Hugging Face export.  The C test loads PEFT's folder into the
GGUF model and must reproduce them; it also saves the adapters and compares
its files with PEFT's tensor by tensor.

With --check DIR ARCH it instead loads an adapter folder written by alphaspin
with PEFT on top of the same base and prints the log-probabilities (a manual
end-to-end check of the writer).

Usage: PYTHONPATH=<peft install> ~/.cache/alphaspin/venv/bin/python tools/ref_peft.py [outdir]
"""
import base64
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
import peft

SEQS = [[3, 17, 5, 9, 22, 31, 4, 2], [8, 1, 30, 30, 12], [11, 2, 39, 6, 25, 33, 7]]


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a.detach().numpy(), dtype="<f4").tobytes()).decode()


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_model(arch, seed):
    torch.manual_seed(seed)
    if arch == "llama":
        cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=4,
                                       max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                                       tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GemmaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, head_dim=12,
                                       max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
                                       hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)
        model = transformers.GemmaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # HF convention: llama multiplies by w, gemma by (1 + w)
                p.copy_((0.0 if arch == "gemma" else 1.0) + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if arch == "gemma" else 1.0))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    return model.eval()


def gguf(model, arch):
    c = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    norm = (lambda w: w + 1.0) if arch == "gemma" else (lambda w: w)
    T = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": norm(sd["model.norm.weight"])}
    if not c.tie_word_embeddings:
        T["output.weight"] = sd["lm_head.weight"]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        wq, wk = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            wq, wk = permute(wq, c.num_attention_heads), permute(wk, c.num_key_value_heads)
        T[f"blk.{i}.attn_norm.weight"] = norm(sd[p + "input_layernorm.weight"])
        T[f"blk.{i}.attn_q.weight"] = wq
        T[f"blk.{i}.attn_k.weight"] = wk
        T[f"blk.{i}.attn_v.weight"] = sd[p + "self_attn.v_proj.weight"]
        T[f"blk.{i}.attn_output.weight"] = sd[p + "self_attn.o_proj.weight"]
        T[f"blk.{i}.ffn_norm.weight"] = norm(sd[p + "post_attention_layernorm.weight"])
        T[f"blk.{i}.ffn_gate.weight"] = sd[p + "mlp.gate_proj.weight"]
        T[f"blk.{i}.ffn_up.weight"] = sd[p + "mlp.up_proj.weight"]
        T[f"blk.{i}.ffn_down.weight"] = sd[p + "mlp.down_proj.weight"]
    md = [("general.architecture", "str", arch), (f"{arch}.context_length", "u32", 64),
          (f"{arch}.embedding_length", "u32", c.hidden_size), (f"{arch}.block_count", "u32", c.num_hidden_layers),
          (f"{arch}.feed_forward_length", "u32", c.intermediate_size),
          (f"{arch}.attention.head_count", "u32", c.num_attention_heads),
          (f"{arch}.attention.head_count_kv", "u32", c.num_key_value_heads),
          (f"{arch}.attention.key_length", "u32", c.head_dim), (f"{arch}.attention.value_length", "u32", c.head_dim),
          (f"{arch}.attention.layer_norm_rms_epsilon", "f32", c.rms_norm_eps),
          (f"{arch}.rope.freq_base", "f32", 10000.0), (f"{arch}.rope.dimension_count", "u32", c.head_dim)]
    return ([{"key": k, "type": t, "value": v} for k, t, v in md],
            [{"name": k, "ne": list(reversed(v.shape)), "data": b64(v)} for k, v in T.items()])


def token_logps(model):
    out = []
    with torch.no_grad():
        for s in SEQS:
            lp = torch.log_softmax(model(torch.tensor([s])).logits[0].double(), -1)
            out.append([lp[t - 1, s[t]].item() for t in range(1, len(s))])
    return out


def hf_reference(model):
    """What save_pretrained writes for the base: tensor names/values and config.json."""
    import tempfile
    from safetensors.torch import load_file
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        sd = load_file(os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
    return [{"name": k, "shape": list(v.shape), "data": b64(v.float())} for k, v in sorted(sd.items())], cfg


def lora_model(arch, seed):
    model = make_model(arch, seed)
    md, tensors = gguf(model, arch)
    hf_tensors, hf_config = hf_reference(model)
    lc = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.05, task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    pm = peft.get_peft_model(model, lc)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return pm.eval(), md, tensors, hf_tensors, hf_config


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        folder, arch = sys.argv[2], sys.argv[3]
        base = make_model(arch, 1 if arch == "llama" else 2).double()
        pm = peft.PeftModel.from_pretrained(base, folder).eval()
        print(json.dumps(token_logps(pm)))
        return
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "vectors")
    for arch, seed in (("llama", 1), ("gemma", 2)):
        pm, md, tensors, hf_tensors, hf_config = lora_model(arch, seed)
        folder = os.path.join(outdir, f"peft_{arch}")
        pm.save_pretrained(folder)
        for extra in os.listdir(folder):  # PEFT also writes a README model card
            if extra not in ("adapter_model.safetensors", "adapter_config.json"):
                os.remove(os.path.join(folder, extra))
        pm = pm.double()
        on = token_logps(pm)
        with pm.disable_adapter():
            off = token_logps(pm)
        doc = {"note": f"generated by tools/ref_peft.py (transformers {transformers.__version__}, peft {peft.__version__}, "
                       f"torch {torch.__version__}); log-probs in float64; tensors float32 base64, GGUF layout",
               "arch": arch, "metadata": md, "tensors": tensors, "sequences": SEQS,
               "logps_adapters_on": on, "logps_adapters_off": off,
               "hf_tensors": hf_tensors, "hf_config": hf_config}
        path = os.path.join(outdir, f"peft_{arch}.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=0)
        print(path, os.path.getsize(path), "bytes;", folder, sorted(os.listdir(folder)))


if __name__ == "__main__":
    main()
