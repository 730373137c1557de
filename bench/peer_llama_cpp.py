#!/usr/bin/env python3
"""llama.cpp (via llama-cpp-python) on the same GGUF and the same cores: the peer
for bench/run_inference.sh.  Prints one JSON line with decode tok/s at batch 1,
aggregate decode tok/s at batch B, prefill tok/s, and peak RSS.

Build llama-cpp-python without AMX if the kernel refuses AMX tiles here (see
BENCHMARKS.md for the exact CMAKE_ARGS)."""
import statistics
import argparse, ctypes, json, resource, time

import numpy as np
import llama_cpp as L

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--prompt-tokens", type=int, default=32)
ap.add_argument("--new-tokens", type=int, default=128)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--prefill", type=int, default=512)
ap.add_argument("--prefill-reps", type=int, default=5, help="prefill passes; the median is reported")
args = ap.parse_args()

L.llama_backend_init()
mp = L.llama_model_default_params()
model = L.llama_model_load_from_file(args.model.encode(), mp)
vocab = L.llama_model_get_vocab(model)
n_vocab = L.llama_vocab_n_tokens(vocab)


def make_ctx(n_ctx, n_batch, n_seq):
    cp = L.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_seq_max = n_seq
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    return L.llama_init_from_model(model, cp)


def fill(batch, toks, seqs, poss, logits):
    batch.n_tokens = len(toks)
    for i, (t, s, p, lg) in enumerate(zip(toks, seqs, poss, logits)):
        batch.token[i] = t
        batch.pos[i] = p
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = s
        batch.logits[i] = lg


def prompt_ids(n, salt=0):
    rng = np.random.default_rng(1234 + salt)
    return [int(x) for x in rng.integers(100, n_vocab - 100, size=n)]


def decode_run(B):
    """Prefill B prompts, then B*new greedy tokens; returns aggregate decode tok/s."""
    P, N = args.prompt_tokens, args.new_tokens
    ctx = make_ctx(B * (P + N) + 16, max(512, B * P), B)
    batch = L.llama_batch_init(max(512, B * P), 0, B)
    toks, seqs, poss, lg = [], [], [], []
    for s in range(B):
        ids = prompt_ids(P, s)
        toks += ids; seqs += [s] * P; poss += list(range(P)); lg += [0] * (P - 1) + [1]
    fill(batch, toks, seqs, poss, lg)
    assert L.llama_decode(ctx, batch) == 0
    last = [None] * B
    # logits rows are in batch order for tokens with logits=1
    t0 = time.perf_counter()
    for step in range(N):
        for s in range(B):
            row = L.llama_get_logits_ith(ctx, (s + 1) * P - 1 if step == 0 else s)
            arr = np.ctypeslib.as_array(row, shape=(n_vocab,))
            last[s] = int(arr.argmax())
        fill(batch, last, list(range(B)), [P + step] * B, [1] * B)
        assert L.llama_decode(ctx, batch) == 0
    dt = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return B * N / dt


def prefill_run():
    T = args.prefill
    ctx = make_ctx(T + 16, T, 1)
    batch = L.llama_batch_init(T, 0, 1)
    fill(batch, prompt_ids(T), [0] * T, list(range(T)), [0] * (T - 1) + [1])
    t0 = time.perf_counter()
    assert L.llama_decode(ctx, batch) == 0
    dt = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return T / dt


prefill_run()  # warm-up: page the weights in
res = {
    "peer": "llama.cpp " + L.__version__,
    "decode_b1_tok_s": decode_run(1),
    f"decode_b{args.batch}_tok_s": decode_run(args.batch),
    f"prefill_{args.prefill}_tok_s": statistics.median(prefill_run() for _ in range(args.prefill_reps)),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
print(json.dumps(res))
