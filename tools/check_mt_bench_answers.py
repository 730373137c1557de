#!/usr/bin/env python3
"""Check an `alphaspin eval --tasks mt_bench --mt-bench-answers FILE` output with FastChat's own code.

Loads the answers with fastchat.llm_judge's loaders, runs its check_data (every question answered,
reference answers present for math/reasoning/coding) and builds the single-answer grading matches
that gen_judgment.py would send to the judge (160 for the 80 questions: two turns each).

    pip install --no-deps fschat          # FastChat 0.2.36; the API clients it imports are stubbed
    python3 tools/check_mt_bench_answers.py ANSWERS.jsonl [DATA_DIR]   # DATA_DIR default ../shared/data
"""
import os
import shutil
import sys
import tempfile
import types

for mod in ["openai", "anthropic"]:  # imported at module level by fastchat.llm_judge.common, not used here
    try:
        __import__(mod)
    except ImportError:
        sys.modules[mod] = types.ModuleType(mod)

from fastchat.llm_judge.common import NEED_REF_CATS, check_data, load_judge_prompts, load_model_answers, load_questions
import fastchat.llm_judge.gen_judgment as gj


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    answers = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    mt = os.path.join(data, "mt_bench")
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "answers")), os.makedirs(os.path.join(d, "ref"))
        model = "model"
        shutil.copy(answers, os.path.join(d, "answers", model + ".jsonl"))
        shutil.copy(os.path.join(mt, "reference_answer_gpt-4.jsonl"), os.path.join(d, "ref", "gpt-4.jsonl"))
        qs = load_questions(os.path.join(mt, "question.jsonl"), None, None)
        ans = load_model_answers(os.path.join(d, "answers"))
        ref = load_model_answers(os.path.join(d, "ref"))
        judges = gj.make_judge_single("gpt-4", load_judge_prompts(os.path.join(mt, "judge_prompts.jsonl")))
        check_data(qs, ans, ref, [model], judges)  # asserts on any missing answer
        q_def = [q for q in qs if q["category"] not in NEED_REF_CATS]
        q_ref = [q for q in qs if q["category"] in NEED_REF_CATS]
        matches = (gj.make_match_single(q_def, [model], ans, judges["default"])
                   + gj.make_match_single(q_ref, [model], ans, judges["math"], ref)
                   + gj.make_match_single(q_def, [model], ans, judges["default-mt"], multi_turn=True)
                   + gj.make_match_single(q_ref, [model], ans, judges["math-mt"], ref, multi_turn=True))
        turns = sorted({len(a["choices"][0]["turns"]) for a in ans[model].values()})
        print(f"{answers}: {len(ans[model])} of {len(qs)} questions answered, turns per answer {turns}; "
              f"FastChat check_data passed; {len(matches)} single-answer grading matches")
        return 0 if len(ans[model]) == len(qs) and turns == [2] and len(matches) == 2 * len(qs) else 1


if __name__ == "__main__":
    sys.exit(main())
