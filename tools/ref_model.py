#!/usr/bin/env python3
"""Independent reference for src/model: tiny random Llama and Gemma models.

Written from the published math of the two architectures (Hugging Face
conventions), NOT from the C code:

  llama:  h = embed[tok]
          per layer:  a = RMSNorm(h) * w_attn
                      q, k, v = a Wq^T, a Wk^T, a Wv^T        (grouped-query)
                      q, k  <- RoPE, rotate_half convention (halves)
                      h += softmax(q k^T / sqrt(d) + causal) v  Wo^T
                      f = RMSNorm(h) * w_ffn
                      h += (silu(f Wg^T) * (f Wu^T)) Wd^T
          logits = (RMSNorm(h) * w_out) Wout^T   (Wout = embed when tied)
  gemma:  as llama, except h = embed[tok] * sqrt(C); RMSNorm multiplies by
          (1 + w); GeGLU with tanh-approximated GELU; multi-query attention;
          head_dim independent of C / n_head; output tied to the embedding.

The model file the C test builds follows llama.cpp's convert_hf_to_gguf.py,
which is what makes the comparison meaningful:
  * llama: Wq and Wk rows are permuted per head so that the rotary pairs
    become adjacent (x[2i], x[2i+1]) -- llama.cpp's LLAMA_ROPE_TYPE_NORM.  The
    reference keeps the HF (halves) math on the unpermuted weights.
  * gemma: norm weights are stored as (1 + w) (GemmaModel adds 1 at
    conversion), rope stays in halves (LLAMA_ROPE_TYPE_NEOX), no permutation.

Each variant is written to tests/vectors/model_<variant>.json with the GGUF
metadata, every tensor (float32, base64, GGUF layout: ne[0] = row length),
token sequences and expected logits (float32, base64) for
  logits:      the F32 file;
  logits_lowp: the same file with 2-D tensors stored as F16 and norm vectors
               as BF16 (the reference rounds them identically, then computes
               in float64).
Usage: tools/ref_model.py [outdir]   (default tests/vectors)
       tools/ref_model.py --check-transformers   (forward() vs transformers' Llama/Gemma)
"""
import base64
import json
import math
import os
import sys

import numpy as np


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode()


def round_f16(a):
    return a.astype(np.float16).astype(np.float64)


def round_bf16(a):
    # round-to-nearest-even on the upper 16 bits of the float32 pattern
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


# ---- the math (HF conventions, float64) ----

def rms_norm(x, w, eps, add_one):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if add_one else w)


def rope_halves(x, pos, theta, factors=None):
    # x: (T, H, d).  HF rotate_half: pairs (x[i], x[i + d/2]) share frequency
    # theta^(-2i/d), divided by factors[i] when the model has per-frequency
    # factors (Llama-3 style scaling, stored by llama.cpp as rope_freqs.weight).
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # (d/2)
    if factors is not None:
        inv = inv / factors
    ang = pos[:, None].astype(np.float64) * inv[None, :]        # (T, d/2)
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * cos + rot * sin


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(cfg, P, tokens):
    """Logits (T, vocab) of one sequence; P holds HF-convention float64 weights."""
    gemma = cfg["arch"] == "gemma"
    T = len(tokens)
    C, H, Hkv, d = cfg["n_embd"], cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"]
    pos = np.arange(T)
    h = P["embed"][np.array(tokens)]
    if gemma:
        h = h * math.sqrt(C)
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for L in P["layers"]:
        a = rms_norm(h, L["attn_norm"], cfg["eps"], gemma)
        q = (a @ L["wq"].T).reshape(T, H, d)
        k = (a @ L["wk"].T).reshape(T, Hkv, d)
        v = (a @ L["wv"].T).reshape(T, Hkv, d)
        q = rope_halves(q, pos, cfg["theta"], P.get("rope_factors"))
        k = rope_halves(k, pos, cfg["theta"], P.get("rope_factors"))
        out = np.zeros((T, H, d))
        for hh in range(H):
            g = hh // (H // Hkv)
            s = q[:, hh, :] @ k[:, g, :].T / math.sqrt(d) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, hh, :] = s @ v[:, g, :]
        h = h + out.reshape(T, H * d) @ L["wo"].T
        f = rms_norm(h, L["ffn_norm"], cfg["eps"], gemma)
        act = gelu_tanh(f @ L["w_gate"].T) if gemma else silu(f @ L["w_gate"].T)
        h = h + (act * (f @ L["w_up"].T)) @ L["w_down"].T
    h = rms_norm(h, P["out_norm"], cfg["eps"], gemma)
    return h @ P["output"].T


# ---- HF <-> GGUF layout (convert_hf_to_gguf.py's LlamaModel.permute) ----

def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf(cfg, P):
    """GGUF tensors (name -> 2-D/1-D float64 array in HF row-major [out, in])."""
    gemma = cfg["arch"] == "gemma"
    T = {"token_embd.weight": P["embed"]}
    norm = (lambda w: w + 1.0) if gemma else (lambda w: w)
    for i, L in enumerate(P["layers"]):
        wq, wk = L["wq"], L["wk"]
        if not gemma:
            wq, wk = permute(wq, cfg["n_head"]), permute(wk, cfg["n_head_kv"])
        T[f"blk.{i}.attn_norm.weight"] = norm(L["attn_norm"])
        T[f"blk.{i}.attn_q.weight"] = wq
        T[f"blk.{i}.attn_k.weight"] = wk
        T[f"blk.{i}.attn_v.weight"] = L["wv"]
        T[f"blk.{i}.attn_output.weight"] = L["wo"]
        T[f"blk.{i}.ffn_norm.weight"] = norm(L["ffn_norm"])
        T[f"blk.{i}.ffn_gate.weight"] = L["w_gate"]
        T[f"blk.{i}.ffn_up.weight"] = L["w_up"]
        T[f"blk.{i}.ffn_down.weight"] = L["w_down"]
    T["output_norm.weight"] = norm(P["out_norm"])
    if not cfg["tied"]:
        T["output.weight"] = P["output"]
    if "rope_factors" in P:
        T["rope_freqs.weight"] = P["rope_factors"]
    return T


def from_gguf(cfg, T):
    gemma = cfg["arch"] == "gemma"
    norm = (lambda w: w - 1.0) if gemma else (lambda w: w)
    P = {"embed": T["token_embd.weight"], "out_norm": norm(T["output_norm.weight"]), "layers": []}
    P["output"] = P["embed"] if cfg["tied"] else T["output.weight"]
    if "rope_freqs.weight" in T:
        P["rope_factors"] = T["rope_freqs.weight"]
    for i in range(cfg["n_layer"]):
        wq, wk = T[f"blk.{i}.attn_q.weight"], T[f"blk.{i}.attn_k.weight"]
        if not gemma:
            wq, wk = unpermute(wq, cfg["n_head"]), unpermute(wk, cfg["n_head_kv"])
        P["layers"].append({
            "attn_norm": norm(T[f"blk.{i}.attn_norm.weight"]), "wq": wq, "wk": wk,
            "wv": T[f"blk.{i}.attn_v.weight"], "wo": T[f"blk.{i}.attn_output.weight"],
            "ffn_norm": norm(T[f"blk.{i}.ffn_norm.weight"]),
            "w_gate": T[f"blk.{i}.ffn_gate.weight"], "w_up": T[f"blk.{i}.ffn_up.weight"],
            "w_down": T[f"blk.{i}.ffn_down.weight"]})
    return P


def make_params(cfg, rng):
    C, H, Hkv, d, F, V = (cfg[k] for k in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab"))
    gemma = cfg["arch"] == "gemma"

    def mat(rows, cols):
        return rng.standard_normal((rows, cols)) / math.sqrt(cols)

    def normw():  # HF convention: llama multiplies by w, gemma by (1 + w)
        return (0.0 if gemma else 1.0) + 0.2 * rng.standard_normal(C)

    P = {"embed": rng.standard_normal((V, C)), "layers": []}
    for _ in range(cfg["n_layer"]):
        P["layers"].append({
            "attn_norm": normw(), "wq": mat(H * d, C), "wk": mat(Hkv * d, C), "wv": mat(Hkv * d, C),
            "wo": mat(C, H * d), "ffn_norm": normw(),
            "w_gate": mat(F, C), "w_up": mat(F, C), "w_down": mat(C, F)})
    P["out_norm"] = normw()
    P["output"] = P["embed"] if cfg["tied"] else mat(V, C)
    if cfg.get("rope_factors"):
        P["rope_factors"] = rng.uniform(1.0, 4.0, d // 2)
    return P


def metadata(cfg):
    """GGUF key/values as the converters write them (some optional keys left out on purpose)."""
    a = cfg["arch"]
    md = [("general.architecture", "str", a),
          (f"{a}.context_length", "u32", cfg["n_ctx_train"]),
          (f"{a}.embedding_length", "u32", cfg["n_embd"]),
          (f"{a}.block_count", "u32", cfg["n_layer"]),
          (f"{a}.feed_forward_length", "u32", cfg["n_ff"]),
          (f"{a}.attention.head_count", "u32", cfg["n_head"]),
          (f"{a}.attention.head_count_kv", "u32", cfg["n_head_kv"]),
          (f"{a}.attention.layer_norm_rms_epsilon", "f32", cfg["eps"])]
    if cfg["write_theta"]:
        md.append((f"{a}.rope.freq_base", "f32", cfg["theta"]))
    if cfg["write_head_dim"]:
        md.append((f"{a}.attention.key_length", "u32", cfg["head_dim"]))
        md.append((f"{a}.attention.value_length", "u32", cfg["head_dim"]))
    if cfg["write_n_rot"]:
        md.append((f"{a}.rope.dimension_count", "u32", cfg["head_dim"]))
    return [{"key": k, "type": t, "value": v} for k, t, v in md]


VARIANTS = {
    # theta written (non-default), head_dim implied by C / n_head, no output.weight
    "llama_tied": dict(arch="llama", n_vocab=96, n_embd=32, n_layer=2, n_head=4, n_head_kv=2, head_dim=8,
                       n_ff=96, n_ctx_train=64, eps=1e-5, theta=50000.0, tied=True,
                       write_theta=True, write_head_dim=False, write_n_rot=True, seed=1),
    # theta absent (default 10000), explicit key_length, separate output.weight,
    # per-frequency RoPE factors (rope_freqs.weight)
    "llama_untied": dict(arch="llama", n_vocab=96, n_embd=32, n_layer=2, n_head=4, n_head_kv=2, head_dim=8,
                         n_ff=96, n_ctx_train=64, eps=1e-5, theta=10000.0, tied=False, rope_factors=True,
                         write_theta=False, write_head_dim=True, write_n_rot=False, seed=2),
    # multi-query, head_dim 32 != C / n_head = 16, GeGLU, (1 + w) norms, sqrt(C) embedding scale
    "gemma": dict(arch="gemma", n_vocab=96, n_embd=32, n_layer=2, n_head=2, n_head_kv=1, head_dim=32,
                  n_ff=96, n_ctx_train=64, eps=1e-6, theta=10000.0, tied=True,
                  write_theta=False, write_head_dim=True, write_n_rot=False, seed=3),
}

SEQ_LENS = [19, 6, 1, 12]  # one sequence longer than the C code's 16-query attention block


def check_transformers():
    """Cross-check of forward() above against transformers' own Llama and Gemma
    (float64), so that a misreading of the HF math here cannot hide behind a C
    implementation that shares it.  Needs torch + transformers; not run by default."""
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM
    for name, cfg in VARIANTS.items():
        rng = np.random.default_rng(cfg["seed"])
        P = make_params(cfg, rng)
        common = dict(vocab_size=cfg["n_vocab"], hidden_size=cfg["n_embd"], intermediate_size=cfg["n_ff"],
                      num_hidden_layers=cfg["n_layer"], num_attention_heads=cfg["n_head"],
                      num_key_value_heads=cfg["n_head_kv"], head_dim=cfg["head_dim"], rms_norm_eps=cfg["eps"],
                      rope_theta=cfg["theta"], max_position_embeddings=cfg["n_ctx_train"],
                      tie_word_embeddings=cfg["tied"], attention_bias=False)
        if cfg["arch"] == "gemma":
            hf = GemmaForCausalLM(GemmaConfig(hidden_activation="gelu_pytorch_tanh", **common))
        else:
            hf = LlamaForCausalLM(LlamaConfig(hidden_act="silu", mlp_bias=False, **common))
        hf = hf.double().eval()
        sd = {"model.embed_tokens.weight": P["embed"], "model.norm.weight": P["out_norm"]}
        if not cfg["tied"]:
            sd["lm_head.weight"] = P["output"]
        for i, L in enumerate(P["layers"]):
            b = f"model.layers.{i}."
            sd.update({b + "input_layernorm.weight": L["attn_norm"], b + "post_attention_layernorm.weight": L["ffn_norm"],
                       b + "self_attn.q_proj.weight": L["wq"], b + "self_attn.k_proj.weight": L["wk"],
                       b + "self_attn.v_proj.weight": L["wv"], b + "self_attn.o_proj.weight": L["wo"],
                       b + "mlp.gate_proj.weight": L["w_gate"], b + "mlp.up_proj.weight": L["w_up"],
                       b + "mlp.down_proj.weight": L["w_down"]})
        missing, unexpected = hf.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
        assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
        if "rope_factors" in P:  # per-frequency divisors, as llama.cpp applies rope_freqs
            re = hf.model.rotary_emb
            re.inv_freq = re.inv_freq / torch.tensor(P["rope_factors"], dtype=re.inv_freq.dtype)
        toks = [int(t) for t in rng.integers(0, cfg["n_vocab"], 13)]
        with torch.no_grad():
            want = hf(torch.tensor([toks])).logits[0].numpy()
        got = forward(cfg, P, toks)
        err = np.abs(got - want).max() / np.abs(want).max()
        print(f"{name}: ref_model.forward vs transformers {type(hf).__name__}: relative error {err:.2e}")
        # transformers keeps inv_freq (hence cos/sin) in float32 even in a float64
        # model: ~1e-7.  A wrong convention (pairing, 1 + w, GELU form, scale) is >= 1e-3.
        assert err < 1e-6, name


def main():
    if "--check-transformers" in sys.argv:
        check_transformers()
        return
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "vectors")
    for name, cfg in VARIANTS.items():
        rng = np.random.default_rng(cfg["seed"])
        P = make_params(cfg, rng)
        T = to_gguf(cfg, P)
        # The reference sees exactly the float32 values the file holds.
        T32 = {k: v.astype(np.float32).astype(np.float64) for k, v in T.items()}
        Tlow = {k: (round_f16(v) if v.ndim == 2 else round_bf16(v)) for k, v in T32.items()}
        seqs = [[int(t) for t in rng.integers(0, cfg["n_vocab"], n)] for n in SEQ_LENS]
        logits = np.concatenate([forward(cfg, from_gguf(cfg, T32), s) for s in seqs])
        logits_lowp = np.concatenate([forward(cfg, from_gguf(cfg, Tlow), s) for s in seqs])
        tensors = [{"name": k, "ne": list(reversed(v.shape)), "data": b64(v)} for k, v in T32.items()]
        doc = {"variant": name, "note": "generated by tools/ref_model.py; tensors float32 little-endian base64, ne[0] = row length",
               "config": {k: cfg[k] for k in ("arch", "n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim",
                                              "n_ff", "n_ctx_train", "eps", "theta", "tied")},
               "metadata": metadata(cfg), "tensors": tensors, "sequences": seqs,
               "logits": b64(logits), "logits_lowp": b64(logits_lowp)}
        path = os.path.join(outdir, f"model_{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"{path}: {os.path.getsize(path)} bytes, logits |max| {np.abs(logits).max():.3f}, "
              f"lowp-vs-f32 max diff {np.abs(logits - logits_lowp).max():.2e}")


if __name__ == "__main__":
    main()
