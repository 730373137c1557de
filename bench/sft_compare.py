#!/usr/bin/env python3
"""Compares two alphaspin SFT logs (log.jsonl, one JSON line per step with
"step" and "loss"): the per-step relative difference of the bf16 run's loss
from the fp32 run's, and of their 10-step moving averages.  Exit status 1 when
the moving averages differ by more than 1% anywhere."""
import json, sys


def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if "loss" in r and "step" in r and r.get("split", "train") == "train":
            out[int(r["step"])] = float(r["loss"])
    return out


a, b = losses(sys.argv[1]), losses(sys.argv[2])
steps = sorted(set(a) & set(b))
if not steps:
    sys.exit("sft_compare: no common steps")
rel = [abs(b[s] - a[s]) / abs(a[s]) for s in steps]
w = 10
ma = lambda d: [sum(d[s] for s in steps[i - w + 1 : i + 1]) / w for i in range(w - 1, len(steps))]
ma_a, ma_b = ma(a), ma(b)
rel_ma = [abs(y - x) / abs(x) for x, y in zip(ma_a, ma_b)]
res = {
    "steps": len(steps),
    "f32_first_last": [a[steps[0]], a[steps[-1]]],
    "bf16_first_last": [b[steps[0]], b[steps[-1]]],
    "f32_mean_loss": sum(a[s] for s in steps) / len(steps),
    "bf16_mean_loss": sum(b[s] for s in steps) / len(steps),
    "max_rel_diff_per_step": max(rel),
    "mean_rel_diff_per_step": sum(rel) / len(rel),
    "max_rel_diff_10step_mean": max(rel_ma) if rel_ma else None,
}
print(json.dumps(res))
sys.exit(0 if rel_ma and max(rel_ma) <= 0.01 else 1)
