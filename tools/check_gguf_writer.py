#!/usr/bin/env python3
"""Checks alphaspin's GGUF writer against an independent reader (gguf-py).

Runs the seed generator (built with the tests: <build>/tests/gguf/gguf_seed),
which writes sample files through gguf_writer_save, then reads every file with
gguf.GGUFReader and compares each metadata value and tensor (shape, type,
offset alignment, bytes) with what tests/gguf/gguf_sample.h asked the writer
to write.  Not needed by the test suite.

Usage: ~/.cache/alphaspin/venv/bin/python tools/check_gguf_writer.py [BUILD_DIR]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType as V

U64 = (1 << 40) | 7
I64 = -(1 << 40) - 7

SCALARS = {
    "general.architecture": (V.STRING, "llama"),
    "test.u8": (V.UINT8, 200), "test.i8": (V.INT8, -100),
    "test.u16": (V.UINT16, 60000), "test.i16": (V.INT16, -30000),
    "test.u32": (V.UINT32, 4000000000), "test.i32": (V.INT32, -2000000000),
    "test.f32": (V.FLOAT32, 1.5), "test.bool": (V.BOOL, True),
    "test.str": (V.STRING, "h\u00e9llo"), "test.u64": (V.UINT64, U64),
    "test.i64": (V.INT64, I64), "test.f64": (V.FLOAT64, 3.25),
    "test.empty_str": (V.STRING, ""),
}
ARRAYS = {
    "test.arr.u8": (V.UINT8, [1, 2, 255]), "test.arr.i8": (V.INT8, [-1, 0, 127]),
    "test.arr.u16": (V.UINT16, [0, 65535]), "test.arr.i16": (V.INT16, [-32768, 32767]),
    "test.arr.u32": (V.UINT32, [0, 4294967295, 7]), "test.arr.i32": (V.INT32, [-2147483648, 2147483647]),
    "test.arr.f32": (V.FLOAT32, [0.5, -2.0, float(np.float32(1e30))]),
    "test.arr.bool": (V.BOOL, [True, False, True]),
    "test.arr.u64": (V.UINT64, [U64, 0]), "test.arr.i64": (V.INT64, [I64, 1]),
    "test.arr.f64": (V.FLOAT64, [-0.125, 1e300]),
    "test.arr.str": (V.STRING, ["a", "", "ccc"]),
    "test.arr.empty": (V.INT32, []),
}
# name, type, shape (ne order), bytes
TENSORS = [
    ("t.f32", Q.F32, [4, 3], 48), ("t.f16", Q.F16, [8, 2], 32), ("t.bf16", Q.BF16, [5], 10),
    ("t.q8_0", Q.Q8_0, [64, 2], 136), ("t.q4_0", Q.Q4_0, [32, 3], 54), ("t.q4_1", Q.Q4_1, [32, 1, 2], 40),
    ("t.q4_k", Q.Q4_K, [256, 1], 144), ("t.q6_k", Q.Q6_K, [256, 2, 1, 1], 420),
]


def value(field, i):
    part = field.parts[field.data[i]]
    if field.types[-1] == V.STRING:
        return bytes(part).decode("utf-8")
    v = part[0].item()
    return bool(v) if field.types[-1] == V.BOOL else v


def check(path, kv_extra, alignment, with_tensors):
    r = GGUFReader(path)
    errors = []
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    want_keys = set(SCALARS) | set(ARRAYS) | set(kv_extra)
    if set(fields) != want_keys:
        errors.append(f"keys differ: extra {set(fields) - want_keys}, missing {want_keys - set(fields)}")
    for k, (t, v) in {**SCALARS, **kv_extra}.items():
        f = fields.get(k)
        if f is None:
            continue
        if f.types != [t] or value(f, 0) != v:
            errors.append(f"{k}: got {f.types} {value(f, 0)!r}, want {t} {v!r}")
    for k, (t, v) in ARRAYS.items():
        f = fields.get(k)
        if f is None:
            continue
        got = [value(f, i) for i in range(len(f.data))]
        # gguf-py lists the element type only for non-empty arrays; parts[3] is the raw element type.
        types = f.types if f.data else [V.ARRAY, V(int(f.parts[3][0]))]
        if types != [V.ARRAY, t] or got != v:
            errors.append(f"{k}: got {f.types} {got!r}, want array of {t} {v!r}")
    if r.alignment != alignment:
        errors.append(f"alignment {r.alignment}, want {alignment}")
    raw = np.fromfile(path, dtype=np.uint8)
    want_t = TENSORS if with_tensors else []
    if [t.name for t in r.tensors] != [t[0] for t in want_t]:
        errors.append(f"tensor names {[t.name for t in r.tensors]}")
    for i, (t, (name, typ, shape, nbytes)) in enumerate(zip(r.tensors, want_t)):
        expect = ((31 * i + 7 * np.arange(nbytes)) % 256).astype(np.uint8)
        got = raw[t.data_offset:t.data_offset + t.n_bytes]
        if t.tensor_type != typ or [int(x) for x in t.shape] != shape or t.n_bytes != nbytes:
            errors.append(f"{name}: {t.tensor_type.name} {list(t.shape)} {t.n_bytes} bytes")
        if t.data_offset % alignment:
            errors.append(f"{name}: data at {t.data_offset}, not aligned to {alignment}")
        if not np.array_equal(got, expect) or np.asarray(t.data).tobytes() != expect.tobytes():
            errors.append(f"{name}: data bytes differ")
    return r, errors


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    seed = os.path.join(build, "tests", "gguf", "gguf_seed")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([seed, d], check=True)
        cases = [
            ("all_types.gguf", {}, 32, True),
            ("all_types_align64.gguf", {"general.alignment": (V.UINT32, 64)}, 64, True),
            ("kv_only.gguf", {}, 32, False),
        ]
        bad = 0
        for name, extra, align, tens in cases:
            r, errors = check(os.path.join(d, name), extra, align, tens)
            print(f"{name}: {len(r.fields) - 3} keys, {len(r.tensors)} tensors: {'OK' if not errors else 'FAIL'}")
            for e in errors:
                print("  " + e)
            bad += bool(errors)
        for name in ("empty.gguf", "one_tensor.gguf"):
            r = GGUFReader(os.path.join(d, name))
            print(f"{name}: {len(r.fields) - 3} keys, {len(r.tensors)} tensors: read OK")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
