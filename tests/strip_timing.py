"""Removes the wall-clock fields from the JSON files a command writes, so that
two runs' folders can be compared byte for byte (tests/cli/test_isa_repro.sh,
tests/dist/test_mpi.sh).  Every other byte stays as written.

    python3 tests/strip_timing.py DIR [--drop-threads]

summary.json, eval.json, eval_gen.json, sampler.json: rewritten without the
TIMING keys (at any depth); log.jsonl: each line likewise; with
--drop-threads, config.yaml's `threads:` line too (a run's thread count is
part of its configuration).
"""
import json
import os
import sys

TIMING = {"timing_s", "total_evaluation_time_seconds", "tokens_per_s", "elapsed_s", "seconds", "gfn_train_seconds"}


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in TIMING}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def main():
    top, drop_threads = sys.argv[1], "--drop-threads" in sys.argv[2:]
    for root, _, files in os.walk(top):
        for f in files:
            p = os.path.join(root, f)
            if f in ("summary.json", "eval.json", "eval_gen.json", "sampler.json"):
                v = strip(json.load(open(p, encoding="utf-8")))
                open(p, "w", encoding="utf-8").write(json.dumps(v, indent=1, ensure_ascii=False) + "\n")
            elif f == "log.jsonl":
                lines = [json.dumps(strip(json.loads(l)), ensure_ascii=False) for l in open(p, encoding="utf-8")]
                open(p, "w", encoding="utf-8").write("".join(l + "\n" for l in lines))
            elif f == "config.yaml" and drop_threads:
                lines = [l for l in open(p, encoding="utf-8") if not l.startswith("threads:")]
                open(p, "w", encoding="utf-8").write("".join(lines))


main()
