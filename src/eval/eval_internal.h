// Inside the eval module: task files, documents, prompts, scoring.  Tests use
// these directly (a fake scorer, synthetic tasks); other modules use eval.h.
#ifndef AS_EVAL_INTERNAL_H
#define AS_EVAL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "eval/eval.h"
#include "eval/jinja.h"
#include "util/rng.h"

typedef enum eval_task_kind {
    EVAL_TASK_MULTIPLE_CHOICE = 0,
    EVAL_TASK_GENERATE_UNTIL,   // exact match of a number (GSM8K's "#### n") or of filtered strings
    EVAL_TASK_MT_BENCH,
    EVAL_TASK_LOGLIKELIHOOD,         // one continuation: acc = greedy, perplexity
    EVAL_TASK_LOGLIKELIHOOD_ROLLING, // whole documents: word/byte perplexity, bits per byte
} eval_task_kind;

enum {
    EVAL_METRIC_ACC = 1, EVAL_METRIC_ACC_NORM = 2, EVAL_METRIC_MC2 = 4, EVAL_METRIC_EXACT_MATCH = 8,
    EVAL_METRIC_PERPLEXITY = 16, EVAL_METRIC_WORD_PERPLEXITY = 32, EVAL_METRIC_BYTE_PERPLEXITY = 64,
    EVAL_METRIC_BITS_PER_BYTE = 128,
};
// The task type's name as lm-eval's output_type ("multiple_choice", ...).
const char *eval_task_kind_name(eval_task_kind k);

// ---- filters and exact match (filter.c): lm-eval's, for generate_until ----

// A compiled Python-syntax regular expression (PCRE2 with UTF and Unicode properties).
typedef struct eval_regex eval_regex;
// -1 + as_error "<what>: bad regular expression ..." on a bad pattern.
int eval_regex_compile(const char *pattern, const char *what, eval_regex **out);
void eval_regex_free(eval_regex *re);
// re.findall(pattern, s)[group_select] as lm-eval's regex filter takes it
// (negative group_select: from the end; with groups, the first non-empty
// group of the match).  Heap string, or NULL when there is no such match.
char *eval_regex_findall_pick(const eval_regex *re, const char *s, int32_t group_select);
// re.sub(pattern, "", s).  Heap string.
char *eval_regex_remove(const eval_regex *re, const char *s);
// re.sub(pattern, repl, s, count) with Python's replacement template (count
// <= 0: every match).  Heap string, or NULL + as_error "<what>: ..." on a bad
// template.
char *eval_regex_sub(const eval_regex *re, const char *s, const char *repl, int64_t count, const char *what);

typedef struct eval_filter_step eval_filter_step;
// One of lm-eval's filter_list entries: a name ("strict-match") and its steps
// (regex, take_first, remove_whitespace, lowercase, uppercase, map; and
// alphaspin's strip, both ends).
typedef struct eval_filter {
    const char *name;
    int32_t n_steps;
    eval_filter_step *steps;
} eval_filter;
// Parses a filter_list (strings point into `list`).  -1 + as_error naming what.
int eval_filters_parse(const cJSON *list, const char *what, eval_filter **out, int32_t *n);
void eval_filters_free(eval_filter *fs, int32_t n);
// The filtered answer of one model output.  Heap string.
char *eval_filter_apply(const eval_filter *f, const char *output);

// HF evaluate's exact_match options as lm-eval passes them from metric_list.
typedef struct eval_exact_match {
    bool ignore_case, ignore_punctuation, ignore_numbers; // case: ASCII letters only
    int32_t n_ignore;
    eval_regex **ignore;          // regexes_to_ignore, removed from both strings in order
} eval_exact_match;
int eval_exact_match_parse(const cJSON *metric, const char *what, eval_exact_match *em);
void eval_exact_match_free(eval_exact_match *em);
// The string exact_match compares (heap), and the comparison itself.
char *eval_exact_match_normalise(const eval_exact_match *em, const char *s);
bool eval_exact_match_equal(const eval_exact_match *em, const char *pred, const char *gold);

// lm-evaluation-harness's doc_to_text / doc_to_target / doc_to_choice: a
// Jinja2 template or a document key (a string), a number, a list, a mapping
// (doc_to_choice: its values), or a built-in equivalent of one of lm-eval's
// Python functions (`!function preprocess_winogrande.doc_to_text`, ...).
typedef enum eval_lm_fn {
    EVAL_LM_FN_NONE = 0,
    EVAL_LM_FN_WINOGRANDE_TEXT,   // {"1": 0, "2": 1}[answer]
    EVAL_LM_FN_WINOGRANDE_TARGET, // sentence after "_", stripped
    EVAL_LM_FN_WINOGRANDE_CHOICE, // [sentence up to "_" + option1, ... + option2]
} eval_lm_fn;
typedef struct eval_lm_field {
    const cJSON *v;     // the value in the task file (NULL: not given)
    jinja_tpl *tpl;     // v is a string: compiled
    eval_lm_fn fn;
} eval_lm_field;

// A task file, checked.  Strings point into `root` (the YAML as cJSON).
typedef struct eval_task {
    cJSON *root;
    char *path;                 // the task file ("<built-in>" names resolve to tasks_dir/<name>.yaml)
    char *dir;                  // its folder (relative data paths are tried there first)
    const char *name;
    eval_task_kind kind;
    const char *data, *fewshot_data;   // may contain {subject}
    const cJSON *data_alts;            // data: [a, b, ...]: the first that exists is read (data = a)
    const char *format;                // jsonl | csv | hellaswag
    const cJSON *split_lists;          // {"column": "separator"} (csv)
    int32_t num_fewshot;
    bool fewshot_first_n;              // sampler first_n (else random)
    const char *description, *doc_to_text, *doc_to_target, *gold;
    const char *target_delimiter, *fewshot_delimiter;
    const cJSON *choices, *true_choices, *false_choices; // arrays of templates
    const char *contexts, *continuation;                 // partial scoring (winogrande)
    unsigned metrics;
    const char *primary_metric;
    const cJSON *until;                 // stop strings (generate_until)
    int32_t max_gen_toks;
    // generate_until: exact match of strings (the model's output through each
    // filter, the gold as doc_to_target/gold renders it) instead of numbers.
    bool match_string;
    eval_filter *filters;               // (n_filters) lm-eval's filter_list; default one "none" = take_first
    int32_t n_filters;
    eval_exact_match em;                // exact_match's options from metric_list
    const cJSON *temperatures;          // mt_bench: {category: T}
    const char *reference, *judge_prompts; // mt_bench
    // lm-evaluation-harness's own task files (dataset_path, doc_to_choice, ...):
    // data_alts / fewshot_alts list the files that may hold the evaluated and
    // the few-shot split (the first that exists is read; format "auto": by
    // extension), the doc_to_* fields follow lm-eval's ConfigurableTask.
    bool lm_eval;
    const char *eval_split, *fewshot_split;
    const cJSON *fewshot_alts;
    eval_lm_field lm_text, lm_target, lm_choice;
    cJSON *own;                         // values the loader made (lists of files, stop strings)
} eval_task;

// Parses a task file's text (`include:` paths relative to name's folder).
// -1 + as_error "<name>: <field>: ..." .
int eval_task_parse(const char *yaml, size_t len, const char *name, eval_task *t);
// A built-in name (tasks_dir/<name>.yaml) or a path to a .yaml file.
int eval_task_load(const char *name_or_path, const char *tasks_dir, eval_task *t);
void eval_task_free(eval_task *t);

// Renders a Jinja2 template (jinja.h) over a document: {{field}},
// {{field[i]}}, {{field|trim}}, any expression; a tag that is exactly a key
// of the document holding spaces or other non-name characters ({{Best
// Answer}}, a CSV column) names that key.  Heap string, or NULL + as_error
// "<what>: position N: ..." (an undefined field, a syntax error).
char *eval_render(const char *tpl, const cJSON *doc, const char *what);

// One subset of a task's documents (mmlu: a subject; else the whole task).
typedef struct eval_subset {
    char *name;         // subject, or the task's name
    cJSON *docs;        // array of objects
    cJSON *fewshot;     // array, or NULL: the few-shot examples come from docs, the item excluded
} eval_subset;

// Reads the task's data (data_dir for relative paths not found beside the
// task file); *subsets is an array of n.
int eval_task_read_data(const eval_task *t, const char *data_dir, eval_subset **subsets, int32_t *n);
void eval_subsets_free(eval_subset *s, int32_t n);
// A data path of the task: absolute as is, else beside the task file when it
// exists there, else under data_dir.  Heap string.
char *eval_task_path(const eval_task *t, const char *data_dir, const char *rel);
// The evaluated data file: the first of the task's data alternatives that
// exists (else the first), resolved as eval_task_path.  Heap string.
char *eval_task_data_path(const eval_task *t, const char *data_dir);
// The few-shot file (fewshot_data, or the first of lm-eval's few-shot split
// files that exists), resolved as eval_task_path; NULL when the shots come
// from the evaluated split.  Heap string.
char *eval_task_fewshot_path(const eval_task *t, const char *data_dir);
// Before a run: the data the task needs with `shots` shots is there (no
// few-shot file is needed without shots).  -1 + as_error naming the file.
int eval_task_check_data(const eval_task *t, const char *data_dir, int32_t shots);
// TruthfulQA's split_multi_answer (truthfulqa/utilities.py): a cell split on
// ";", each answer stripped, empty ones dropped, a "." added where it does not
// end in one.  A JSON array of strings.
cJSON *eval_truthfulqa_split(const char *cell);
// MT-Bench (mtbench.c): answers, optional local judging, results.
int eval_run_mt_bench(model *m, const tokenizer *tok, const eval_task *t, const eval_options *o, const char *data_dir,
                      cJSON *results, cJSON *nshot, cJSON *nsamples);
// FastChat's rating parse: [[x]], else [x]; -1 when there is none.
double eval_parse_rating(const char *judgment);

// A document rendered for scoring.
typedef struct eval_doc {
    char *text;         // doc_to_text (NULL for partial scoring)
    int32_t n_choices;
    char **choices;     // choice texts (lm-eval's doc_to_choice)
    char **contexts;    // partial scoring: per-choice contexts (== choices), else NULL
    char *continuation; // partial scoring: the shared continuation
    int32_t gold;
    int32_t n_true;     // true_choices/false_choices: the first n_true choices are true
    char *target;       // generate_until: the few-shot target; gold answer text
} eval_doc;
int eval_doc_render(const eval_task *t, const cJSON *doc, int64_t index, eval_doc *d);
void eval_doc_free(eval_doc *d);
// The text of a document as a few-shot example (text + delimiter + answer).
char *eval_doc_example(const eval_task *t, const eval_doc *d);

// Few-shot indices for item `item` of a pool of n_pool documents: `k` of them,
// first_n, or drawn without replacement with *rng (as lm-eval: k + 1 drawn when
// the pool is the evaluated split, the item itself dropped).  Returns how many.
int32_t eval_fewshot_pick(as_rng *rng, int64_t n_pool, int32_t k, bool first_n, int64_t exclude, int64_t *out);

// Multiple-choice scoring requests of one item: for choice c, the
// log-likelihood of cont[c] after ctx[c].
typedef struct eval_mc_item {
    int32_t n_choices;
    char **ctx;
    char **cont;
    double *ll;          // (n_choices) output
    // Optional outputs: lm-eval's is_greedy (every continuation token is the
    // argmax of its logits, the first of equal maxima), and the token ids
    // scored (heap arrays the caller frees: tokens[c][0..n_tokens[c]), the
    // first n_ctx_tokens[c] of them the context).
    bool *greedy;
    int32_t **tokens, *n_tokens, *n_ctx_tokens;
    // Token-level requests (rolling windows): when tok_full is set, choice c is
    // tok_full[c][0..tok_n_full[c]) with its first tok_n_ctx[c] tokens as the
    // context, run as is (ctx/cont are not encoded, no BOS is added).
    int32_t **tok_full, *tok_n_full, *tok_n_ctx;
} eval_mc_item;
typedef int (*eval_loglik_fn)(void *user, eval_mc_item *items, int64_t n);

typedef struct eval_model_scorer {
    model *m;
    kernel_precision precision; // of the KV caches the items run in
    const tokenizer *tok;
    size_t kv_budget_bytes;
    int32_t max_batch_tokens;  // tokens per model_forward call
    // Items of a KV group whose shared tokens start with >= this many tokens of an
    // earlier item's copy those KV positions instead of running them (0: 16; < 0:
    // never; the environment's ALPHASPIN_EVAL_PREFIX_SHARE=0 also turns it off).
    int32_t prefix_share_min;
    int64_t n_forward_calls;   // statistics
    int64_t n_tokens_run;
    int64_t n_tokens_reused;   // KV positions copied from another item instead of run
} eval_model_scorer;
// lm-eval's prefix_token_id: what an empty context (and the first rolling
// window) conditions on: the BOS token when the tokenizer has one, else EOS.
int32_t eval_prefix_token(const tokenizer *tok);
// lm-eval's get_rolling_token_windows(tokens, prefix, max_len, context_len 1)
// made disjoint (make_disjoint_window): the windows that score every token of
// a document once, each at most max_len input tokens.  *full[w] (heap, the
// caller frees each and the arrays) holds window w's tokens, the first
// (*n_ctx)[w] of them its context; returns the number of windows.
int32_t eval_rolling_windows(const int32_t *tokens, int32_t n, int32_t prefix, int32_t max_len, int32_t ***full,
                             int32_t **n_full, int32_t **n_ctx);
// eval_loglik_fn on a model: contexts shared by the choices of an item run once
// (its KV cache copied to each choice), a prefix shared with an earlier item of
// the KV group (few-shot examples) run once too, items batched under the KV budget.
int eval_model_loglik(void *scorer, eval_mc_item *items, int64_t n);

// Length of s[0..n) without its trailing whitespace as Python's str.rstrip()
// sees it (str.isspace: ASCII \t \n \v \f \r space, \x1c-\x1f, U+0085,
// U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
size_t eval_py_rstrip_len(const char *s, size_t n);
// The same at the start: how many bytes str.lstrip() removes.
size_t eval_py_lstrip_len(const char *s, size_t n);

// lm-eval's count_words: len(re.split(r"\s+", s)).
int64_t eval_count_words(const char *s);
// lm-eval's stderr of perplexity (exp(-mean ll)): the standard deviation of
// `iters` bootstrap resamples (lm-eval: 100000), NaN when n < 2.
double eval_perplexity_bootstrap_stderr(const double *ll, int64_t n, int32_t iters);

// Python's text forms in lm-eval's sample logs (pyfmt.c): str(x) of a float,
// json.dumps(v, indent=2, ensure_ascii=False) (heap), sha256 hex digest.
void eval_py_float(double x, char out[32]);
char *eval_py_json_dumps(const cJSON *v);
void eval_sha256_hex(const char *s, char out[65]);

// Per-item metric values of a scored item.
void eval_mc_metrics(const eval_doc *d, const double *ll, double *acc, double *acc_norm, double *mc2);
// Mean and lm-eval's standard error of the mean (sample std / sqrt(n)).
void eval_mean_stderr(const double *x, int64_t n, double *mean, double *se);
// GSM8K's answer extraction: the number after "#### ", or else the last number;
// commas removed, a trailing '.' dropped.  NULL if there is no number.
char *eval_extract_answer(const char *text, bool strict);

// Runs one multiple-choice task with a given scorer: fills `res` (lm-eval
// shaped task entries are added to results/configs objects).
typedef struct eval_task_result {
    int64_t n_items;
    double acc, acc_se, acc_norm, acc_norm_se, mc2, mc2_se;
} eval_task_result;
// `samples`: per-item JSONL records (NULL: none).
int eval_run_mc(const eval_task *t, const eval_subset *subsets, int32_t n_subsets, const eval_options *o,
                eval_loglik_fn fn, void *user, cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples);

// Runs a loglikelihood task (one continuation per item: acc = it is the greedy
// one, perplexity = exp(-mean ll)) and a loglikelihood_rolling task (whole
// documents in windows of max_len tokens: word_perplexity, byte_perplexity,
// bits_per_byte), as eval_run_mc; `samples` gets lm-eval's sample lines.
int eval_run_loglik(const eval_task *t, const eval_subset *sub, const eval_options *o, eval_loglik_fn fn, void *user,
                    cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples);
int eval_run_rolling(const eval_task *t, const eval_subset *sub, const eval_options *o, const tokenizer *tok,
                     int32_t max_len, eval_loglik_fn fn, void *user, cJSON *results, cJSON *nshot, cJSON *nsamples,
                     FILE *samples);

// ---- over the processes of a job (score_dist.c; eval.c runs a task twice) ----

typedef struct eval_dist_scorer {
    eval_model_scorer *inner;  // scores this rank's calls
    bool replay;               // false: the first run, recording; true: the second, answering
    int64_t n_calls, cap, next;
    char **req;                // per call: its requests as bytes (req_len), and its items
    size_t *req_len;
    int64_t *n_items;
    char **out, *all;          // per call: its outputs (out_len bytes) inside `all`, the gathered bytes
    size_t *out_len;
} eval_dist_scorer;
// eval_loglik_fn: records the call (first run; scores are 0) or answers it
// from the gathered outputs (second run; -1 + as_error if it is not the
// recorded call).
int eval_dist_loglik(void *user, eval_mc_item *items, int64_t n);
// Between the runs, on every rank: call c scored on rank c mod N by
// eval_model_loglik(d->inner), the outputs gathered to every rank.
int eval_dist_score(eval_dist_scorer *d, const char *task, bool progress);
void eval_dist_free(eval_dist_scorer *d);

#endif
