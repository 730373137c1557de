#!/usr/bin/env python3
"""Device-to-device copy bandwidth (issue 22, item 5: the bound of batch-1
decoding is weight bytes / this).  Copies a --mib MiB buffer into another
--reps times (after 3 untimed copies); bandwidth = 2 x bytes (read + written)
/ time, CUDA events, the best of 3 rounds.  On the CPU (--device cpu) the same
with perf_counter: a host memcpy bandwidth, for dry runs.
Prints one JSON line: {"copy_gb_s": ...}.
  copy_bandwidth.py [--device cuda] [--mib 1024] [--reps 20] [--tiny]"""
import argparse, json, sys, time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--device", default="cuda")
ap.add_argument("--mib", type=int, default=1024)
ap.add_argument("--reps", type=int, default=20)
ap.add_argument("--tiny", action="store_true", help="16 MiB, 5 reps")
args = ap.parse_args()
if args.tiny:
    args.mib, args.reps = 16, 5

import torch

dev = torch.device(args.device)
cuda = dev.type == "cuda"
if cuda and not torch.cuda.is_available():
    sys.exit("copy_bandwidth: --device cuda: torch sees no CUDA device")
n = args.mib << 20
src = torch.empty(n, dtype=torch.uint8, device=dev).fill_(1)
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
best = 0.0
for _ in range(3):
    if cuda:
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(args.reps):
            dst.copy_(src)
        e1.record()
        torch.cuda.synchronize()
        dt = e0.elapsed_time(e1) / 1e3
    else:
        t0 = time.perf_counter()
        for _ in range(args.reps):
            dst.copy_(src)
        dt = time.perf_counter() - t0
    best = max(best, 2 * n * args.reps / dt / 1e9)
out = {"device": str(dev), "mib": args.mib, "reps": args.reps, "copy_gb_s": round(best, 1)}
if cuda:
    out["gpu"] = torch.cuda.get_device_name()
print(json.dumps(out))
