#!/usr/bin/env python3
"""Reference vectors for the default model (SmolLM2-135M-Instruct, Q4_1 GGUF).

Writes tests/vectors/default_model_ref.json, read by
tests/generate/test_default_model_ref.c:

  texts[]:   64 token ids of real texts from ../shared/data (tokenized by
             llama.cpp's tokenizer, no BOS, as the model's add_bos_token=false),
             with per-token log-probabilities log p(ids[t] | ids[<t]), t >= 1:
               ref_logprobs      fp32 forward of Hugging Face transformers on the
                                 same weights (transformers dequantizes the GGUF
                                 with gguf-py and un-permutes Q/K);
               llamacpp_logprobs llama.cpp (llama-cpp-python, logits_all), whose
                                 CPU matmuls quantize activations to 8 bits.
  prompts[]: ChatML prompts (SmolLM2's template with its default system prompt,
             special tokens parsed) with the fp32 greedy continuation of up to
             64 tokens (stopping after an end token), the margin between the
             two best logits at each step (a step with a tiny margin may
             legitimately flip under a different summation order), and
             llama.cpp's greedy continuation for information.

Usage: ~/.cache/alphaspin/venv/bin/python tools/ref_default_model.py [--model PATH] [--data DIR]
Needs numpy, llama-cpp-python, torch, transformers, gguf (the project venv).
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_TEXT = 64
N_GEN = 64
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def read_jsonl(path, n):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) >= n:
                break
    return out


def pick_texts(data):
    """Six texts of different kinds (math, instructions, chat, science, prose)."""
    gsm = read_jsonl(os.path.join(data, "gsm8k/test.jsonl"), 2)
    dolly = read_jsonl(os.path.join(data, "dolly_hhrlhf/dolly_hhrlhf_train_small.jsonl"), 3)
    arc = read_jsonl(os.path.join(data, "arc/arc_challenge_test.jsonl"), 2)
    mt = read_jsonl(os.path.join(data, "mt_bench/question.jsonl"), 3)
    oasst = read_jsonl(os.path.join(data, "oasst/en_100_tree.jsonl"), 1)
    texts = [
        ("gsm8k/test.jsonl#0 question+answer", gsm[0]["question"] + "\n" + gsm[0]["answer"]),
        ("dolly_hhrlhf#0 prompt+response", dolly[0]["prompt"] + "\n" + dolly[0]["response"]),
        ("dolly_hhrlhf#2 response", dolly[2]["response"]),
        ("arc_challenge_test#0,1 query+choices", "\n".join(a["query"] + "\n" + "\n".join(a["choices"]) for a in arc)),
        ("mt_bench#1,2 turns", "\n".join(mt[1]["turns"] + mt[2]["turns"])),
        ("oasst#0 prompt+reply", oasst[0]["prompt"]["text"] + "\n" + oasst[0]["prompt"]["replies"][0]["text"]),
    ]
    prompts = [
        ("gsm8k/test.jsonl#1 question", gsm[1]["question"]),
        ("mt_bench#0 turn 0", mt[0]["turns"][0]),
        ("dolly_hhrlhf#1 prompt", dolly[1]["prompt"]),
        ("arc_challenge_test#0 query", arc[0]["query"]),
        ("fixed", "What is the capital of France? Answer in one sentence."),
    ]
    return texts, prompts


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def token_logprobs(logits, ids):
    """lp[t-1] = log p(ids[t] | ids[<t]) from logits[t-1], t = 1..n-1."""
    ls = log_softmax(logits)
    return [float(ls[t - 1, ids[t]]) for t in range(1, len(ids))]


# ---- llama.cpp ----

def llamacpp_open(path):
    import llama_cpp
    return llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=512, n_threads=2, verbose=False)


def llamacpp_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def llamacpp_greedy(llm, ids, n, end_ids):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        t = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1])))
        out.append(t)
        if t in end_ids:
            break
        llm.eval([t])
    return out


# ---- fp32 transformers ----

def hf_open(path):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             dtype=torch.float32)
    m.eval()
    return m


def hf_logits(m, ids):
    import torch
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].double().numpy()


def hf_greedy(m, ids, n, end_ids):
    """Argmax (lowest id on ties, like np.argmax) with the model's KV cache;
    also the margin between the two best logits at each step."""
    import torch
    out, gaps = [], []
    with torch.no_grad():
        r = m(torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            last = r.logits[0, -1].double().numpy()
            t = int(np.argmax(last))
            top2 = np.sort(last)[-2:]
            out.append(t)
            gaps.append(float(top2[1] - top2[0]))
            if t in end_ids:
                break
            r = m(torch.tensor([[t]]), past_key_values=r.past_key_values, use_cache=True)
    return out, gaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/alphaspin/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "vectors", "default_model_ref.json"))
    a = ap.parse_args()

    llm = llamacpp_open(a.model)
    end_ids = {llm.token_eos()}
    for s in ("<|im_end|>", "<|endoftext|>"):
        t = llm.tokenize(s.encode(), add_bos=False, special=True)
        if len(t) == 1:
            end_ids.add(t[0])
    texts, prompts = pick_texts(a.data)
    text_ids = []
    for src, text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(ids) < N_TEXT:
            sys.exit(f"{src}: only {len(ids)} tokens")
        text_ids.append(ids[:N_TEXT])
    hf = hf_open(a.model)

    out = {"model": os.path.basename(a.model), "n_text_tokens": N_TEXT, "n_gen": N_GEN,
           "end_ids": sorted(end_ids), "texts": [], "prompts": []}
    for (src, _), ids in zip(texts, text_ids):
        ref = token_logprobs(hf_logits(hf, ids), ids)
        lcp = token_logprobs(llamacpp_logits(llm, ids), ids)
        dev = max(abs(x - y) for x, y in zip(ref, lcp))
        print(f"text {src}: max |fp32 - llama.cpp| = {dev:.4f}", file=sys.stderr)
        out["texts"].append({"source": src, "ids": ids, "ref_logprobs": [round(x, 7) for x in ref],
                             "llamacpp_logprobs": [round(x, 7) for x in lcp]})
    for src, user in prompts:
        ids = llm.tokenize(chatml(user).encode("utf-8"), add_bos=False, special=True)
        gen, gaps = hf_greedy(hf, ids, N_GEN, end_ids)
        lgen = llamacpp_greedy(llm, ids, N_GEN, end_ids)
        same = next((i for i, (x, y) in enumerate(zip(gen, lgen)) if x != y), min(len(gen), len(lgen)))
        print(f"prompt {src}: {len(ids)} tokens, fp32 greedy {len(gen)} tokens, min margin {min(gaps):.4f}, "
              f"llama.cpp agrees on the first {same}", file=sys.stderr)
        out["prompts"].append({"source": src, "ids": ids, "ref_greedy": gen, "ref_margins": [round(g, 5) for g in gaps],
                               "llamacpp_greedy": lgen})
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
