#!/usr/bin/env python3
"""Reference tokenizations of the default model by llama.cpp (llama-cpp-python).

Writes tests/vectors/tok_smollm.jsonl: one JSON object per line,
  {"text": str, "ids": [int], "special": bool, "roundtrip": bool}
where ids = llama.cpp's tokenize(text, add_bos=False, special=special) and
roundtrip says whether llama.cpp's own detokenize(ids) gives back the text (it
does not when a byte has no token, e.g. U+001D in SmolLM2's vocabulary).
The first line is metadata ({"model": ..., "llama_cpp": version, "seed": ...}).

Strings are drawn reproducibly (fixed seed) from ../shared/data (GSM8K, MMLU,
ARC, HellaSwag, OASST, Dolly, UltraChat, MT-Bench), windows cut at random
offsets, plus synthetic edge cases: whitespace runs (spaces, tabs, newlines,
CR, U+00A0, U+0085, U+2028, U+3000), digit runs, code, contractions, accents,
combining marks, CJK, Hangul, Arabic, Devanagari, emoji with modifiers and ZWJ,
and random mixtures of all of these.  Every string is valid UTF-8 and at most
MAX_CHARS code points.

With --pre NAME (gpt-2, llama-bpe) the model's vocabulary and merges are copied
into a metadata-only GGUF whose tokenizer.ggml.pre is NAME, so the other
pre-tokenizers are checked against llama.cpp on a real 49152-token vocabulary;
the output is then tests/vectors/tok_smollm_<NAME>.jsonl, and the C test builds
the same GGUF from the model with its own writer.

usage: tools/tok_vectors.py [--model PATH] [--data DIR] [--out FILE] [--pre NAME]
(run with ~/.cache/alphaspin/venv/bin/python, which has llama_cpp)
"""
import argparse
import csv
import glob
import json
import os
import random
import sys

SEED = 20261126
MAX_CHARS = 240


def load_texts(data):
    """(source, text) pairs from the shared data sets."""
    out = []

    def jsonl(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield json.loads(line)

    for r in jsonl(os.path.join(data, "gsm8k/test.jsonl")):
        out.append(("gsm8k", r["question"]))
        out.append(("gsm8k", r["answer"]))
    for path in sorted(glob.glob(os.path.join(data, "mmlu/dev/*.csv"))):
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                out.append(("mmlu", row["question"] + "\n" + "\n".join(row["choice%d" % i] for i in range(4))))
    for path in sorted(glob.glob(os.path.join(data, "arc/*.jsonl"))):
        for r in jsonl(path):
            out.append(("arc", r["query"] + " " + " ".join(r["choices"])))
    with open(os.path.join(data, "hellaswag/hellaswag_val_full.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i in range(0, len(lines) - 5, 6):  # context, gold index, four endings
        out.append(("hellaswag", lines[i] + " " + lines[i + 2 + int(lines[i + 1])]))

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                yield node["text"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    for r in jsonl(os.path.join(data, "oasst/en_100_tree.jsonl")):
        for t in walk(r.get("prompt", {})):
            out.append(("oasst", t))
    for r in jsonl(os.path.join(data, "dolly_hhrlhf/dolly_hhrlhf_train_small.jsonl")):
        out.append(("dolly", r["prompt"]))
        out.append(("dolly", r["response"]))
    with open(os.path.join(data, "ultrachat/ultra_eval.json"), encoding="utf-8") as f:
        for r in json.load(f):
            for p in r["data"]:
                out.append(("ultrachat", p))
    for r in jsonl(os.path.join(data, "mt_bench/question.jsonl")):
        for t in r["turns"]:
            out.append(("mt_bench", t))
    return [(s, t) for s, t in out if t]


def clip(rng, text):
    """A window of at most MAX_CHARS code points, sometimes from a random offset."""
    if len(text) <= MAX_CHARS and rng.random() < 0.7:
        return text
    n = rng.choice([8, 20, 40, 80, 160, MAX_CHARS])
    start = rng.randrange(0, max(1, len(text) - n)) if rng.random() < 0.5 else 0
    return text[start:start + n]


EDGE_CASES = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n\n", "\r\n", " \n ", "\t\t  \t", "a  b", "a   b\n\n  c", "x \n\ny",
    "Hello world", " Hello", "Hello ", "hello   ", "  leading and trailing  ",
    "don't won't I'm you're we've they'll she'd", "DON'T I'M YOU'RE", "'s 't 're 've 'm 'll 'd", "rock 'n' roll", "''quoted''",
    "1", "12", "123", "1234567890", "3.14159", "1,000,000", "x2 + y2 = z2", "2024-11-26T17:47:57Z", "0x1F600", "v1.2.3",
    "٣٤٥ ١٢", "Ⅻ ⅻ ½ ¾ ²³",
    "def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "if x == 1:\n\tpass\n\n\n", "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }", "SELECT * FROM t WHERE id='7';",
    "<html><body class=\"x\">&amp;</body></html>", "{\"key\": [1, 2, {\"a\": null}]}", "https://example.com/a?b=c&d=e#f",
    "café naïve résumé coöperate façade", "Ça va? Über straße Ærø", "e\u0301 n\u0303 a\u030a", "ﬁ ﬂ ﬀ",
    "日本語のテキスト", "中文测试，标点。", "한국어 텍스트", "Русский текст", "Ελληνικά", "עברית", "العربية", "हिन्दी", "ไทย",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️", "🙂🙂🙂", "★☆♠♣♥♦", "→ ⇒ ∀x∃y ∑ ∫ ≤ ≥ ≠",
    "a\u00a0b", "a\u0085b", "a  \u0085", "a \u0085b", "\u0085 x", "end \u0085", "x\u0085\u0085y", "p \u00a0q", "a\u001cb  \u001d", "a  \u180e", "a \u180eb", "\u180e\u180e x", "a  \u200b", "b \ufeffc", "a\u2028b", "a\u3000b", "tab\tsep\tvalues", "mixed\r\nline\rends\n",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>",
    "!!!", "...", "?!", "---", "___", "***bold***", "~~~", "@user #tag $5 %p ^c &a *b", "(a)[b]{c}<d>",
    "MiXeD CaSe WoRdS", "ALLCAPS", "snake_case_name camelCaseName PascalCase kebab-case",
]

# Pieces for random mixtures: each is a short string from one character class.
ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3 + list("0123456789") * 2 +
    [" ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000"] +
    list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") +
    ["'s", "'t", "'re", "'ll", "'d", "'ve", "'m"] +
    list("éèêëàâäôöûüçñßøåæœ") + list("αβγδЖжЯя") + list("中文字日本語한국어") + ["😀", "👍🏽", "🎉", "❤️"] +
    ["\u0301", "\u0308", "१२३", "٣", "½"]
)


def synthetic(rng, n):
    out = []
    for _ in range(n):
        k = rng.choice([1, 2, 3, 5, 8, 13, 21, 34])
        s = "".join(rng.choice(ALPHABET) for _ in range(k))
        out.append(s[:MAX_CHARS])
    return out


def write_vocab_with_pre(model, pre, path):
    """The model's tokenizer metadata in a metadata-only GGUF, with tokenizer.ggml.pre = pre."""
    import gguf
    r = gguf.GGUFReader(model)
    f = lambda k: r.fields[k].contents()
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(f("tokenizer.ggml.tokens"))
    w.add_token_types(f("tokenizer.ggml.token_type"))
    w.add_token_merges(f("tokenizer.ggml.merges"))
    w.add_bos_token_id(f("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(f("tokenizer.ggml.eos_token_id"))
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    home = os.environ.get("ALPHASPIN_HOME", os.path.expanduser("~/.cache/alphaspin"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--model", default=os.path.join(home, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", default=os.path.join(root, "../shared/data"))
    ap.add_argument("--out", default=os.path.join(root, "tests/vectors/tok_smollm.jsonl"))
    ap.add_argument("--per-source", type=int, default=100)
    ap.add_argument("--synthetic", type=int, default=300)
    ap.add_argument("--pre", default=None)
    args = ap.parse_args()

    import llama_cpp
    model = args.model
    if args.pre:
        import tempfile
        tmp = tempfile.mkdtemp()
        model = os.path.join(tmp, "vocab_%s.gguf" % args.pre)
        write_vocab_with_pre(args.model, args.pre, model)
        if args.out.endswith("tok_smollm.jsonl"):
            args.out = args.out.replace("tok_smollm.jsonl", "tok_smollm_%s.jsonl" % args.pre)
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    rng = random.Random(SEED)

    by_source = {}
    for src, text in load_texts(args.data):
        by_source.setdefault(src, []).append(text)
    strings = list(EDGE_CASES)
    for src in sorted(by_source):
        texts = by_source[src]
        for t in rng.sample(texts, min(args.per_source, len(texts))):
            strings.append(clip(rng, t))
    strings += synthetic(rng, args.synthetic)
    strings = [s.replace("\x00", "") for s in strings]

    special_cases = [
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello!<|im_end|>\n<|endoftext|>",
        "text before<|im_end|>text after",
        "<|im_start|><|im_start|>  <|im_end|>",
        "<|im_start|user|> broken <|im_end",
        "a<repo_name>b<reponame>c<file_sep><filename><gh_stars>10<issue_start>",
        "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
        "",
    ]

    # Invalid UTF-8 (bytes, written as "hex"): llama.cpp reads each bad byte as U+FFFD.
    invalid = [b"ab\xff\xfe c", b"\xe2\x82 x", b"end\xc3", b"\x80\x80\x80", b"ok \xf0\x9f\x98 no", b"\xed\xa0\x80 surrogate",
               b"\xc0\x80 overlong", b"\xf8\x88\x80\x80\x80 five", b"mixed \xe6\x97\xa5\xe6\x9c word\xff's"]

    n = 0
    with open(args.out, "w", encoding="utf-8") as f:
        meta = {"model": os.path.basename(args.model), "pre": args.pre or "smollm", "llama_cpp": llama_cpp.__version__, "seed": SEED,
                "note": "ids = llama.cpp tokenize(text, add_bos=False, special=special)"}
        f.write(json.dumps(meta, ensure_ascii=False) + "\n")
        for special, group in ((False, strings), (True, special_cases)):
            for s in group:
                ids = llm.tokenize(s.encode("utf-8"), add_bos=False, special=special)
                back = llm.detokenize(ids, special=special)
                rec = {"text": s, "ids": ids, "special": special, "roundtrip": back == s.encode("utf-8")}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        for b in invalid:
            ids = llm.tokenize(b, add_bos=False, special=False)
            f.write(json.dumps({"hex": b.hex(), "ids": ids, "special": False, "roundtrip": False}) + "\n")
            n += 1
    print("wrote %d strings to %s (%d bytes)" % (n, args.out, os.path.getsize(args.out)), file=sys.stderr)


if __name__ == "__main__":
    main()
