#!/usr/bin/env python3
"""Writes a random-weight Hugging Face model folder (config.json + bf16
model.safetensors, sharded as transformers shards it) of a given shape, for the
GPU benchmarks (bench/run_gpu.sh): both engines load the same folder, alphaspin
through src/model/model_hf.c, the peers through transformers.  No tokenizer:
the benchmarks feed token ids.

Shapes:
  smollm2-135m  SmolLM2-135M's (the default model's): llama, 30 layers,
                hidden 576, MLP 1536, 9 heads, 3 KV heads, vocab 49152, tied
  gemma-2b      Gemma-2B's (issue 22): gemma, 18 layers, hidden 2048, MLP
                16384, 8 heads, 1 KV head, head_dim 256, vocab 256000, tied
  tiny-llama, tiny-gemma   the same architectures at toy sizes (CPU dry runs)

The weights are made where --device says (a GPU makes Gemma-2B's 2.5 B in well
under a second; it is the write to disk that takes time), N(0, 0.02) as
transformers' init, in bf16.
  make_hf_model.py --shape gemma-2b --out DIR [--device cuda] [--seed 0]"""
import argparse, json, os, sys, time

SHAPES = {
    "smollm2-135m": dict(model_type="llama", num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=True),
    "gemma-2b": dict(model_type="gemma", num_hidden_layers=18, hidden_size=2048, intermediate_size=16384,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000,
                     rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=8192, tie_word_embeddings=True,
                     hidden_activation="gelu_pytorch_tanh"),
    "tiny-llama": dict(model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=512,
                       rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=1024, tie_word_embeddings=True),
    "tiny-gemma": dict(model_type="gemma", num_hidden_layers=2, hidden_size=64, intermediate_size=256,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=32, vocab_size=512,
                       rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=1024, tie_word_embeddings=True,
                       hidden_activation="gelu_pytorch_tanh"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    # transformers >= 4.56 names it dtype; older ones torch_dtype.
    dtype_kw = "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"

    t0 = time.time()
    shape = dict(SHAPES[args.shape])
    mt = shape.pop("model_type")
    cfg = AutoConfig.for_model(mt, **shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(cfg, **{dtype_kw: torch.bfloat16}, attn_implementation="sdpa")
    # transformers initialises norms to 1 (llama) or 0 (gemma, whose norm is 1 + w): keep them.
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out, safe_serialization=True)
    # Read back what the folder says so that a mismatch with the shape above fails here.
    got = json.load(open(os.path.join(args.out, "config.json")))
    for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        if got.get(k) != shape[k]:
            sys.exit(f"make_hf_model: {args.out}/config.json: {k} is {got.get(k)}, expected {shape[k]}")
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(json.dumps({"shape": args.shape, "model_type": mt, "params": n, "bytes": size, "out": args.out,
                      "seconds": round(time.time() - t0, 2)}))


if __name__ == "__main__":
    main()
