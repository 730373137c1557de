#!/usr/bin/env python3
"""Test vectors for src/tensor/quant.c, from independent implementations.

For each supported tensor type, fixed random rows are quantised and the bytes
dequantised by gguf-py (gguf.quants, a NumPy re-implementation of ggml's
formats).  Where gguf-py has no quantiser (Q4_K, Q6_K) the bytes come from
ggml itself (quantize_row_*_ref through ggml_quantize_chunk in llama.cpp's
libggml-base, found in the llama_cpp Python package or via $GGML_BASE_LIB), and
additionally from random bytes with sane scales, so the dequantiser is checked
on every bit pattern class.

Output: tests/vectors/quant_vectors.bin, little-endian:
  "ASQV" u32 version=1 u32 n_records
  per record: u32 ggml_type, u32 n (elements), u32 flags, u32 nbytes,
              f32 input[n], u8 quant[nbytes], f32 dequant[n]
  flags: 1 = quant is a reference quantiser's output for input (compare
         bit-exact with ours), 2 = that quantiser is ggml's C code (else
         gguf-py's), 0 = random bytes (input unused, zeros).

Usage: ~/.cache/alphaspin/venv/bin/python tools/quant_vectors.py [out]
"""
import ctypes
import glob
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 512  # elements per row: a multiple of 256 (K types) and of 32
FLAG_REF_QUANT, FLAG_GGML = 1, 2
TYPE_SIZE = {T.F32: 4, T.F16: 2, T.BF16: 2, T.Q4_0: 18, T.Q4_1: 20, T.Q8_0: 34, T.Q4_K: 144, T.Q6_K: 210}
BLOCK = {T.F32: 1, T.F16: 1, T.BF16: 1, T.Q4_0: 32, T.Q4_1: 32, T.Q8_0: 32, T.Q4_K: 256, T.Q6_K: 256}


def test_rows(rng):
    """Rows that exercise scale choice: plain normals at several magnitudes,
    heavy tails, all-positive (Q4_1/Q4_K min clamps at 0), all-zero, constant."""
    rows = [
        rng.standard_normal(N).astype(np.float32),
        (rng.standard_normal(N) * 1e-3).astype(np.float32),
        (rng.standard_normal(N) * 37.5).astype(np.float32),
        (rng.standard_t(2, N)).astype(np.float32),
        (rng.random(N) * 3 + 0.5).astype(np.float32),
        np.zeros(N, np.float32),
        np.full(N, -0.75, np.float32),
    ]
    return rows


def float_rows(rng):
    """Extra rows for the float conversions: RNE ties, subnormals, overflow."""
    ties = []
    for _ in range(N // 2):
        h = rng.integers(0x0400, 0x7bff)  # normal half
        a = np.array([h], np.uint16).view(np.float16).astype(np.float32)[0]
        b = np.array([h + 1], np.uint16).view(np.float16).astype(np.float32)[0]
        ties.append((a + b) / 2)  # exactly halfway in fp32
        ties.append(-((a + b) / 2))
    sub = (rng.standard_normal(N) * 1e-6).astype(np.float32)  # half subnormals
    big = (rng.standard_normal(N) * 7e4).astype(np.float32)   # overflow to inf
    big[:8] = [np.inf, -np.inf, 65504, 65520, -65519.99, 0.0, -0.0, 6e-8]
    return [np.array(ties, np.float32), sub, big]


def random_k_bytes(rng, qtype, nblocks):
    raw = rng.integers(0, 256, size=(nblocks, TYPE_SIZE[qtype]), dtype=np.uint8)
    def half(lo, hi):
        return (rng.random(nblocks) * (hi - lo) + lo).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    if qtype == T.Q4_K:  # d, dmin first
        raw[:, 0:2] = half(1e-3, 0.05)
        raw[:, 2:4] = half(1e-3, 0.05)
    else:  # Q6_K: d last
        raw[:, 208:210] = half(1e-4, 0.01)
    return raw.reshape(-1)


def find_ggml():
    cands = [os.environ.get("GGML_BASE_LIB", "")]
    try:
        import llama_cpp  # noqa: F401
        d = os.path.dirname(llama_cpp.__file__)
        cands += glob.glob(os.path.join(d, "**", "libggml-base.so*"), recursive=True)
    except Exception:
        pass
    for c in cands:
        if c and os.path.exists(c):
            lib = ctypes.CDLL(c)
            f = lib.ggml_quantize_chunk
            f.restype = ctypes.c_size_t
            f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                          ctypes.c_int64, ctypes.c_void_p]
            return c, f
    return None, None


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "vectors", "quant_vectors.bin")
    rng = np.random.default_rng(20261126)
    ggml_path, ggml_quantize = find_ggml()
    print("ggml:", ggml_path or "not found (K-type quantiser vectors omitted)")
    records = []

    def add(qtype, x, q, flags):
        q = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
        deq = quants.dequantize(q, qtype).astype(np.float32).reshape(-1)
        n = deq.size
        assert q.size == n // BLOCK[qtype] * TYPE_SIZE[qtype]
        if x is None:
            x = np.zeros(n, np.float32)
        records.append(struct.pack("<IIII", int(qtype), n, flags, q.size) + x.tobytes() + q.tobytes() + deq.tobytes())

    rows = test_rows(rng)
    for qtype in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1):
        for x in rows + (float_rows(rng) if qtype in (T.F16, T.BF16) else []):
            add(qtype, x, quants.quantize(x, qtype), FLAG_REF_QUANT)
    for qtype in (T.Q4_K, T.Q6_K):
        for _ in range(3):
            add(qtype, None, random_k_bytes(rng, qtype, N // 256), 0)
        if ggml_quantize:
            for x in rows:
                q = np.zeros(N // 256 * TYPE_SIZE[qtype], np.uint8)
                nb = ggml_quantize(int(qtype), x.ctypes.data, q.ctypes.data, 0, 1, N, None)
                assert nb == q.size
                add(qtype, x, q, FLAG_REF_QUANT | FLAG_GGML)
    with open(out, "wb") as f:
        f.write(b"ASQV" + struct.pack("<II", 1, len(records)))
        for r in records:
            f.write(r)
    print(f"wrote {out}: {len(records)} records, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
