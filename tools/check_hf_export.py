#!/usr/bin/env python3
"""The ecosystem loads what alphaspin writes (issue 3, items 7 and 8).

On the default model (SmolLM2-135M-Instruct Q4_1) it runs the alphaspin binary:

  1. `alphaspin sft` for a few LoRA steps -> a PEFT adapter folder (B != 0);
  2. `alphaspin merge` -> the base as a Hugging Face folder and as F32/F16/Q8_0
     GGUF files; the base + adapter merged, as a folder and as the three GGUFs;

and checks with the reference implementations:

  * transformers' AutoTokenizer on the exported folder gives llama.cpp's ids
    (tests/vectors/tok_smollm.jsonl, which alphaspin's tokenizer matches) and
    applies the exported chat template as the original one;
  * transformers' AutoModelForCausalLM on the exported folder gives the
    log-probabilities alphaspin computes on the folder and on the GGUF;
  * PEFT loads alphaspin's adapter on top of the exported base and gives the
    log-probabilities of transformers on the merged folder and of alphaspin on it;
  * llama-cpp-python loads the F32, F16 and Q8_0 exports and its log-probs
    match alphaspin's on the same files.

It prints the largest differences and writes tests/vectors/hf_export_default.json
(HF's ids for the strings, transformers' log-probs on the exported base folder,
llama.cpp's on the three base exports) for tests/train/test_hf_default.c.

Usage: PYTHONPATH=/tmp/peftlib ~/.cache/alphaspin/venv/bin/python tools/check_hf_export.py [--bin build/alphaspin]
(PEFT: `pip install --target /tmp/peftlib peft`; without it the PEFT check is skipped.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEXTS = [
    ("The capital of France is Paris, and the capital of Italy is Rome.", False),
    ("def add(a, b):\n    return a + b  # 12345 digits one by one", False),
    ("<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n<|im_start|>assistant\n7 * 8 = 56.<|im_end|>\n", True),
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.", False),
]
TYPES = ["f32", "f16", "q8_0"]


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {r.stderr}")
    return r.stdout


def ours(binary, model, text, special):
    args = [binary, "logprobs", "--model", model, "--text", text, "--threads", "2"] + (["--special"] if special else [])
    rows = [json.loads(line) for line in run(*args).splitlines()]
    return [r["id"] for r in rows], np.array([r["logprob"] for r in rows[1:]], dtype=np.float64)


def torch_logprobs(model, ids):
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return np.array([lp[t - 1, ids[t]].item() for t in range(1, len(ids))])


def llama_cpp_logprobs(path, texts_ids):
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    out = []
    for ids in texts_ids:
        llm.reset()
        llm.eval(ids)
        s = np.array(llm.scores[: len(ids)], dtype=np.float64)
        s = s - s.max(-1, keepdims=True)
        lp = s - np.log(np.exp(s).sum(-1, keepdims=True))
        out.append(np.array([lp[t - 1, ids[t]] for t in range(1, len(ids))]))
    del llm
    return out


def ggufpy_writer(path, v):
    """A GGUF holding tok_spm.jsonl's vocabulary (and a dummy embedding), for transformers' converter."""
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1), w.add_context_length(64), w.add_embedding_length(8), w.add_feed_forward_length(8), w.add_head_count(2)
    w.add_tokenizer_model("llama")
    w.add_token_list(v["tokens"]), w.add_token_scores(v["scores"]), w.add_token_types(v["types"])
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_unk_token_id(0), w.add_add_bos_token(True), w.add_add_space_prefix(True)
    w.add_tensor("token_embd.weight", np.zeros((len(v["tokens"]), 8), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()


def worst(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "alphaspin"))
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/alphaspin/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "vectors", "hf_export_default.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    import transformers
    work = tempfile.mkdtemp(prefix="as_hfcheck_")
    data = os.path.join(work, "sft.jsonl")
    with open(data, "w") as f:
        for q, r in [("What is 2+2?", "4"), ("Name a color.", "Blue."), ("Capital of France?", "Paris."), ("Say hi.", "Hi!")]:
            f.write(json.dumps({"prompt": q, "response": r}) + "\n")
    adapter = os.path.join(work, "adapter")
    run(a.bin, "sft", "--model", a.model, "--data", data, "--out", adapter, "--max-steps", "3", "--batch-size", "2", "--micro-batch", "2",
        "--max-len", "64", "--lora-rank", "4", "--lr", "0.02", "--eval-fraction", "0", "--threads", "2")
    base_hf, merged_hf = os.path.join(work, "base_hf"), os.path.join(work, "merged_hf")
    run(a.bin, "merge", "--model", a.model, "--out", base_hf)
    run(a.bin, "merge", "--model", a.model, "--adapter", adapter, "--out", merged_hf)
    for t in TYPES:
        run(a.bin, "merge", "--model", a.model, "--out", os.path.join(work, f"base_{t}.gguf"), "--type", t)
        run(a.bin, "merge", "--model", a.model, "--adapter", adapter, "--out", os.path.join(work, f"merged_{t}.gguf"), "--type", t)
    report = {}

    # Tokenizer: AutoTokenizer on the exported files against llama.cpp's ids.
    tok = transformers.AutoTokenizer.from_pretrained(base_hf)
    recs = [json.loads(l) for l in open(os.path.join(ROOT, "tests", "vectors", "tok_smollm.jsonl"))][1:]
    # HF always cuts added tokens out of the text: compare where llama.cpp did too
    # (special=true) or where the text holds no special token.
    recs = [r for r in recs if "text" in r and (r["special"] or "<|" not in r["text"])]
    tok_cases, bad = [], 0
    for r in recs:
        hf_ids = tok(r["text"], add_special_tokens=False)["input_ids"]
        bad += hf_ids != r["ids"]
        tok_cases.append({"text": r["text"], "special": r["special"], "ids": hf_ids})
    report["tokenizer strings"] = len(recs)
    report["tokenizer mismatches"] = bad
    msgs = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    import gguf as ggufpy
    src_tmpl = ggufpy.GGUFReader(a.model).fields["tokenizer.chat_template"].contents()
    import jinja2
    ref = jinja2.Environment().from_string(src_tmpl).render(messages=msgs, add_generation_prompt=True)
    report["chat template renders as the original"] = rendered == ref

    # The other direction: tokenizer files written by transformers itself (its
    # GGUF converter, from the default model and from tok_spm.jsonl's
    # SentencePiece vocabulary) read by alphaspin.
    import shutil
    tf_bpe = os.path.join(work, "tf_bpe")
    d, f = os.path.split(a.model)
    tf_tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    tf_tok.save_pretrained(tf_bpe)
    shutil.copy(os.path.join(base_hf, "config.json"), tf_bpe)
    bad = 0
    for r in recs[:300]:
        mine = [int(x) for x in run(a.bin, "tokenize", "--model", tf_bpe, "--special", "--", r["text"]).split()]
        bad += mine != tf_tok(r["text"], add_special_tokens=False)["input_ids"]
    report["transformers-written tokenizer.json (GGUF converter, ByteLevel) read by alphaspin: mismatches vs AutoTokenizer, of 300"] = bad
    spm_gguf, tf_spm = os.path.join(work, "spm.gguf"), os.path.join(work, "tf_spm")
    v = json.loads(open(os.path.join(ROOT, "tests", "vectors", "tok_spm.jsonl")).readline())
    ggufpy_writer(spm_gguf, v)
    spm_tok = transformers.AutoTokenizer.from_pretrained(work, gguf_file="spm.gguf")
    spm_tok.save_pretrained(tf_spm)
    shutil.copy(os.path.join(base_hf, "config.json"), tf_spm)
    spm_recs = [json.loads(l) for l in open(os.path.join(ROOT, "tests", "vectors", "tok_spm.jsonl"))][1:]
    spm_recs = [r for r in spm_recs if "text" in r and r.get("add_space_prefix")]
    bad = bad_hf = 0
    for r in spm_recs:
        args = ["--special"] if r.get("special") else []
        args += ["--add-special"] if r.get("add_bos") else []
        mine = [int(x) for x in run(a.bin, "tokenize", "--model", tf_spm, *args, "--", r["text"]).split()]
        bad += mine != r["ids"]
        bad_hf += spm_tok(r["text"], add_special_tokens=bool(r.get("add_bos")))["input_ids"] != r["ids"]
    report[f"transformers-written SentencePiece tokenizer.json read by alphaspin: mismatches vs llama.cpp, of {len(spm_recs)}"] = bad
    report[f"  (transformers itself on that file vs llama.cpp: mismatches, of {len(spm_recs)})"] = bad_hf

    # transformers on the exported base vs alphaspin on the folder and on the GGUF.
    texts_ids, ours_folder, ours_gguf = [], [], []
    for text, special in TEXTS:
        ids, lp = ours(a.bin, base_hf, text, special)
        ids2, lp2 = ours(a.bin, a.model, text, special)
        assert ids == ids2
        hf_ids = tok(text, add_special_tokens=False)["input_ids"]
        assert hf_ids == ids, (hf_ids, ids)
        texts_ids.append(ids), ours_folder.append(lp), ours_gguf.append(lp2)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_hf, dtype=torch.float32).eval()
    tf_base = [torch_logprobs(base, ids) for ids in texts_ids]
    report["transformers(base folder) vs alphaspin(base folder)"] = worst(tf_base, ours_folder)
    report["transformers(base folder) vs alphaspin(Q4_1 GGUF)"] = worst(tf_base, ours_gguf)

    # PEFT on our adapter vs transformers on the merged folder vs alphaspin on it.
    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_hf, dtype=torch.float32).eval()
    tf_merged = [torch_logprobs(merged, ids) for ids in texts_ids]
    ours_merged = [ours(a.bin, merged_hf, t, s)[1] for t, s in TEXTS]
    report["transformers(merged folder) vs alphaspin(merged folder)"] = worst(tf_merged, ours_merged)
    report["adapter effect (base vs merged, max |dlogp|)"] = worst(tf_base, tf_merged)
    try:
        import peft
        pm = peft.PeftModel.from_pretrained(base, adapter).eval()
        tf_peft = [torch_logprobs(pm, ids) for ids in texts_ids]
        report["PEFT(base folder + alphaspin adapter) vs transformers(merged folder)"] = worst(tf_peft, tf_merged)
        report["PEFT(base folder + alphaspin adapter) vs alphaspin(merged folder)"] = worst(tf_peft, ours_merged)
    except ImportError:
        report["PEFT"] = "not installed (PYTHONPATH=/tmp/peftlib)"

    # llama.cpp on the GGUF exports vs alphaspin on the same files.
    lcpp_base = {}
    for t in TYPES:
        for kind in ("base", "merged"):
            path = os.path.join(work, f"{kind}_{t}.gguf")
            lc = llama_cpp_logprobs(path, texts_ids)
            mine = [ours(a.bin, path, text, s)[1] for text, s in TEXTS]
            report[f"llama.cpp vs alphaspin, {kind} {t.upper()} GGUF"] = worst(lc, mine)
            if kind == "base":
                lcpp_base[t] = lc
        report[f"llama.cpp(merged {t.upper()}) vs transformers(merged folder)"] = worst(
            llama_cpp_logprobs(os.path.join(work, f"merged_{t}.gguf"), texts_ids), tf_merged)

    for k, v in report.items():
        print(f"{k:75s} {v:.3g}" if isinstance(v, float) else f"{k:75s} {v}")
    import llama_cpp
    doc = {
        "note": f"generated by tools/check_hf_export.py (transformers {transformers.__version__}, torch {torch.__version__}, "
                f"llama-cpp-python {llama_cpp.__version__}) from `alphaspin merge` exports of {os.path.basename(a.model)}",
        "tokenizer": tok_cases,
        "texts": [{"text": t, "special": s, "ids": ids, "transformers_base_folder": tb.tolist(),
                   "llama_cpp": {t2.upper(): lcpp_base[t2][i].tolist() for t2 in TYPES}}
                  for i, ((t, s), ids, tb) in enumerate(zip(TEXTS, texts_ids, tf_base))],
        "report": {k: v for k, v in report.items()},
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=0)
    print("wrote", a.out, os.path.getsize(a.out), "bytes; work files in", work)


if __name__ == "__main__":
    main()
