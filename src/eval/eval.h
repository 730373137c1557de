// Evaluation of a model on benchmark tasks, following the conventions users
// compare against:
//  - multiple-choice tasks scored by log-likelihood as lm-evaluation-harness
//    (v0.4) does: acc = argmax of the summed log-probability of each choice's
//    continuation tokens, acc_norm = argmax of that sum divided by the choice's
//    length in characters (Unicode code points, Python's len() of the choice
//    text), the context of an item run once and its KV cache copied to every
//    choice; standard errors are the sample standard error of
//    the mean, sqrt(sum (x - mean)^2 / (n - 1) / n), as lm-eval's mean_stderr;
//  - generative exact-match tasks (GSM8K): greedy generation, the answer from
//    "#### n" or else the last number, compared without commas (a gold answer
//    without a number is an error); or text answers through lm-eval's filters
//    (regex, take_first, ...) and exact_match options;
//  - MT-Bench as FastChat: per-category temperatures, answers in its
//    model_answer JSONL, optional local judging with its single-answer prompts.
// Tasks are YAML files (tasks/*.yaml, see tasks/README.md): a new
// multiple-choice or exact-match task needs no C.
#ifndef AS_EVAL_H
#define AS_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

// Version of the prompt formats and scoring rules, written into every result's
// "configs" (bump it when a template or a rule changes).
#define EVAL_PROMPT_FORMAT_VERSION "alphaspin-eval-1 (lm-evaluation-harness v0.4 templates)"

typedef struct eval_options {
    // Comma-separated task names or task files: built-in names (arc_easy,
    // arc_challenge, hellaswag, winogrande, mmlu, truthfulqa_mc1,
    // truthfulqa_mc2, gsm8k, mt_bench), "leaderboard" (the six Open LLM
    // Leaderboard tasks), or paths ending in .yaml.
    const char *tasks;
    int32_t shots;              // -1: each task's default (the leaderboard's)
    int64_t limit;              // 0: every item; N: the first N items of each task (mmlu: of each subject)
    // Items skipped before `limit` counts (mmlu: of each subject).  The skipped
    // items' few-shot draws are still made, so items [S, S + N) get the very
    // prompts a full run gives them: runs with offsets 0, N, 2N, ... and limit
    // N score the whole task in shards.
    int64_t offset;
    uint64_t seed;              // few-shot sampling seed (default 1234, as lm-eval)
    kernel_precision precision; // of the inference contexts scoring and generating (default F32); the model is not changed
    int32_t max_new_tokens;     // generative tasks: 0 = the task's own (gsm8k 256, mt_bench 1024, its judge 2048)
    const char *data_dir;       // relative data paths of tasks; NULL: $ALPHASPIN_DATA, else ../shared/data
    const char *tasks_dir;      // built-in task files; NULL: see eval_tasks_dir()
    size_t kv_budget_bytes;     // KV-cache memory for batching items (0: 1 GiB)
    bool progress;              // progress line (items/s, ETA) on stderr
    // Per-item records as JSONL (NULL: none) in lm-eval's samples_<task>.jsonl
    // layout: {"doc_id", "doc", "target", "arguments": {"gen_args_i": {"arg_0":
    // context, "arg_1": continuation or generation kwargs}}, "resps",
    // "filtered_resps" (Python's str() of each value: [ll, is_greedy] for
    // log-likelihoods), "filter", "metrics", "doc_hash", "prompt_hash",
    // "target_hash", <metric>: value, ...} plus "task", "ll" (multiple choice:
    // the log-likelihoods as numbers) and "tokens" (per request
    // {"context": [ids], "continuation": [ids]}); generate_until: one line per filter.
    const char *log_samples;
    // MT-Bench only: where to write the answers (FastChat model_answer JSONL;
    // NULL: not written), the model_id written in them, and an optional local
    // judge (NULL: answers only, no scores; it generates in f32).  The judge's
    // judgments go to mt_bench_judgments (FastChat model_judgment JSONL) when not NULL.
    const char *mt_bench_answers;
    const char *mt_bench_judgments;
    const char *model_id;
    model *judge;
    const tokenizer *judge_tok;
} eval_options;

eval_options eval_options_default(void);

// Runs every task of o->tasks on m (whatever adapters m has set) and returns,
// in *results, a new cJSON object shaped like lm-evaluation-harness's output:
//   {"results": {"<task>": {"alias": "<task>", "acc,none": .., "acc_stderr,none": ..,
//                          "acc_norm,none": .., "acc_norm_stderr,none": ..}, ...},
//    "groups": {"mmlu": {...}}, "n-shot": {"<task>": n}, "n-samples": {"<task>":
//    {"original": N, "effective": n}}, "configs": {"<task>": {"task", "num_fewshot",
//    "metric", "prompt_format_version", ...}}, "config": {...}}
// (mmlu: "mmlu" holds the mean of its subjects, "mmlu_<subject>" each subject;
// gsm8k: "exact_match,strict-match" and "exact_match,flexible-extract";
// mt_bench: "score,none" overall and "score_<category>,none").  The caller
// frees it with cJSON_Delete.  -1 + as_error naming the task file and field,
// or the data file and line, on failure (*results is then NULL); every task
// file and data file is checked before any scoring starts.
int eval_run(model *m, const tokenizer *tok, const eval_options *o, cJSON **results);

// A Markdown table of results (task | metric | value | stderr | shots), heap string.
char *eval_results_markdown(const cJSON *results);

// Folder of the built-in task files: $ALPHASPIN_TASKS, else
// <executable's folder>/../share/alphaspin/tasks or <executable's folder>/tasks
// when present, else the source tree's tasks/ (compiled in).
const char *eval_tasks_dir(void);

#endif
