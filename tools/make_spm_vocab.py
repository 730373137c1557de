#!/usr/bin/env python3
"""Reference tokenizations of a small synthetic SentencePiece-style vocabulary.

Builds a vocabulary of ~560 tokens the way a SentencePiece BPE model looks in
GGUF (tokenizer.ggml.model = "llama"): <unk> <s> </s>, the 256 byte-fallback
tokens <0x00>..<0xFF>, control tokens (<start_of_turn>, <end_of_turn>),
user-defined tokens (<mask>, <br>), every character of a small corpus, and
pieces learned by 220 greedy BPE merges on that corpus (score = -merge index;
a few pieces share a score, to exercise tie-breaking).  It writes the
vocabulary into a GGUF with gguf-py (architecture llama, metadata only),
loads it with llama.cpp (llama-cpp-python, vocab_only=True) and records
llama.cpp's tokenization of ~130 strings, with add_space_prefix on and off.

Output tests/vectors/tok_spm.jsonl: line 1 is the vocabulary
  {"tokens": [...], "scores": [...], "types": [...], "bos": 1, "eos": 2, "unk": 0}
then one line per string:
  {"text", "ids", "add_space_prefix", "add_bos", "special", "roundtrip"}
where roundtrip says whether llama.cpp's pieces of ids (BOS dropped, the
prefix space removed) spell the text again.
(the C test rebuilds the GGUF from line 1 with its own writer, so no binary
file is committed).

usage: ~/.cache/alphaspin/venv/bin/python tools/make_spm_vocab.py
"""
import argparse
import collections
import json
import os
import random
import sys
import tempfile

SEED = 7
SPACE = "\u2581"


def corpus(data):
    texts = []
    with open(os.path.join(data, "gsm8k/test.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 300:
                break
            texts.append(json.loads(line)["question"])
    texts += ["café naïve résumé", "Ünïcödé façade", "über straße", "日本語", "東京"]
    return texts


def learn_vocab(texts, n_merges):
    words = collections.Counter()
    for t in texts:
        for w in t.split(" "):
            if w:
                words[SPACE + w] += 1
    seqs = {w: list(w) for w in words}
    chars = sorted({c for w in words for c in w})
    pieces = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, cnt in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += cnt
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        new = a + b
        pieces.append(new)
        for w in seqs:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return chars, pieces


def build(data):
    texts = corpus(data)
    chars, pieces = learn_vocab(texts, 220)
    tokens, scores, types = [], [], []

    def add(tok, score, typ):
        if tok not in tokens:
            tokens.append(tok)
            scores.append(float(score))
            types.append(typ)

    add("<unk>", 0, 2)
    add("<s>", 0, 3)
    add("</s>", 0, 3)
    for b in range(256):
        add("<0x%02X>" % b, 0, 6)
    add("<start_of_turn>", 0, 3)
    add("<end_of_turn>", 0, 3)
    add("<mask>", 0, 4)
    add("<br>", 0, 4)
    for i, c in enumerate(chars):
        add(c, -1000.0 - i, 1)
    for i, p in enumerate(pieces):
        # every 10th piece shares the score of the one before: ties go to the leftmost pair
        add(p, -float(i - (i % 10 == 9)), 1)
    return tokens, scores, types


def write_gguf(path, tokens, scores, types, add_space_prefix):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


STRINGS = [
    "", " ", "  ", "a", "Hello world", " leading space", "trailing space ", "two  spaces", "many     spaces",
    "How many apples does Janet have?", "She sells 16 eggs per day for $2 each.", "The total is 1,234.56 dollars.",
    "newline\nand\ttab", "\n\n", "café naïve résumé", "Ünïcödé façade über straße", "日本語 東京", "emoji 😀 and 🇫🇷",
    "unknown chars: Ω ж ♥ ✓", "zzzz qqqq xxxx", "<start_of_turn>user\nHi<end_of_turn>\n", "text<mask>text", "a<br>b<br>",
    "<s>bos in text</s>", "▁already escaped▁", "ALL CAPS TEXT", "MiXeD", "punctuation!?.,;:", "'quotes' \"double\"",
]


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--data", default=os.path.join(root, "../shared/data"))
    ap.add_argument("--out", default=os.path.join(root, "tests/vectors/tok_spm.jsonl"))
    args = ap.parse_args()
    import llama_cpp

    tokens, scores, types = build(args.data)
    rng = random.Random(SEED)
    texts = corpus(args.data)
    strings = list(STRINGS)
    for t in rng.sample(texts, 60):
        start = rng.randrange(0, max(1, len(t) - 60))
        strings.append(t[start:start + rng.choice([10, 30, 60, 120])])
    alphabet = list("abcdefghij eiou ETA 0123 .,!?\n\t") + ["é", "ß", "日", "😀", "<mask>", "<br>", "<end_of_turn>"]
    for _ in range(40):
        strings.append("".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 7, 15]))))

    vocab = {"tokens": tokens, "scores": scores, "types": types, "bos": 1, "eos": 2, "unk": 0}
    lines = [json.dumps(vocab, ensure_ascii=False)]
    with tempfile.TemporaryDirectory() as tmp:
        for space_prefix in (True, False):
            path = os.path.join(tmp, "spm_%d.gguf" % space_prefix)
            write_gguf(path, tokens, scores, types, space_prefix)
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            for s in strings:
                for special, add_bos in ((False, False), (True, False), (False, True)):
                    if (special or add_bos) and rng.random() < 0.7:
                        continue  # fewer of these variants keep the file small
                    ids = llm.tokenize(s.encode("utf-8"), add_bos=add_bos, special=special)
                    # llama.cpp's pieces, less the space the encoder put in front
                    back = llm.detokenize([i for i in ids if i != 1], special=special)
                    if space_prefix and back.startswith(b" "):
                        back = back[1:]
                    rec = {"text": s, "ids": ids, "add_space_prefix": space_prefix, "add_bos": add_bos, "special": special,
                           "roundtrip": back == s.encode("utf-8")}
                    lines.append(json.dumps(rec, ensure_ascii=False))
            # Invalid UTF-8, written as "hex": llama.cpp groups bytes by their lead byte
            # and spells what is not a token with byte tokens.
            for b in (b"ab\xff\xfe c", b"\xe2\x82 x", b"end\xc3", b"\x80\x80", b"\xf0\x9f\x98 no", b"\xed\xa0\x80 s", b"caf\xc3"):
                ids = llm.tokenize(b, add_bos=False, special=False)
                lines.append(json.dumps({"hex": b.hex(), "ids": ids, "add_space_prefix": space_prefix, "add_bos": False,
                                         "special": False, "roundtrip": False}))
            del llm
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d strings, %d tokens to %s (%d bytes)" % (len(lines) - 1, len(tokens), args.out, os.path.getsize(args.out)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
