// Task files (YAML) and the documents they describe.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "eval/csv.h"
#include "eval/eval_internal.h"
#include "eval/yaml_json.h"
#include "util/common.h"
#include "util/jsonl.h"

// ---- task files ----

static int opt_str(const cJSON *root, const char *name, const char *key, const char *def, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) { *out = def; return AS_OK; }
    if (!cJSON_IsString(v)) return as_error("%s: %s: expected a string", name, key);
    *out = v->valuestring;
    return AS_OK;
}

static int opt_int(const cJSON *root, const char *name, const char *key, long def, long min, long max, int32_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) { *out = (int32_t)def; return AS_OK; }
    char *end;
    errno = 0;
    long x = cJSON_IsString(v) ? strtol(v->valuestring, &end, 10) : 0;
    if (!cJSON_IsString(v) || end == v->valuestring || *end || errno || x < min || x > max)
        return as_error("%s: %s: expected an integer in [%ld, %ld]", name, key, min, max);
    *out = (int32_t)x;
    return AS_OK;
}

static int opt_str_array(const cJSON *root, const char *name, const char *key, const cJSON **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v) return AS_OK;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) return as_error("%s: %s: expected a non-empty list", name, key);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) if (!cJSON_IsString(e)) return as_error("%s: %s: expected a list of strings", name, key);
    *out = v;
    return AS_OK;
}

static bool in_list(const char *const *l, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(l[i], s)) return true;
    return false;
}

static const char *const KNOWN_KEYS[] = {
    "task", "type", "data", "fewshot_data", "format", "split_lists", "num_fewshot", "fewshot_sampler", "description",
    "doc_to_text", "doc_to_target", "gold", "target_delimiter", "fewshot_delimiter", "choices", "true_choices",
    "false_choices", "contexts", "continuation", "metrics", "primary_metric", "until", "max_gen_toks", "temperatures",
    "reference", "judge_prompts", "notes", "match", "filter_list", "metric_list", "output_type"};

const char *eval_task_kind_name(eval_task_kind k) {
    switch (k) {
    case EVAL_TASK_MULTIPLE_CHOICE: return "multiple_choice";
    case EVAL_TASK_GENERATE_UNTIL: return "generate_until";
    case EVAL_TASK_MT_BENCH: return "mt_bench";
    case EVAL_TASK_LOGLIKELIHOOD: return "loglikelihood";
    case EVAL_TASK_LOGLIKELIHOOD_ROLLING: return "loglikelihood_rolling";
    }
    return "?";
}

// Metric names, their bits and the aggregation lm-eval gives them.
static const struct { const char *name; unsigned bit; const char *aggregation; } METRICS[] = {
    {"acc", EVAL_METRIC_ACC, "mean"},
    {"acc_norm", EVAL_METRIC_ACC_NORM, "mean"},
    {"mc2", EVAL_METRIC_MC2, "mean"},
    {"exact_match", EVAL_METRIC_EXACT_MATCH, "mean"},
    {"perplexity", EVAL_METRIC_PERPLEXITY, "perplexity"},
    {"word_perplexity", EVAL_METRIC_WORD_PERPLEXITY, "weighted_perplexity"},
    {"byte_perplexity", EVAL_METRIC_BYTE_PERPLEXITY, "weighted_perplexity"},
    {"bits_per_byte", EVAL_METRIC_BITS_PER_BYTE, "bits_per_byte"},
};

static int metric_bit(const char *name, const char *s, unsigned *bit) {
    for (size_t i = 0; i < AS_ARRAY_LEN(METRICS); i++)
        if (!strcmp(s, METRICS[i].name)) { *bit = METRICS[i].bit; return AS_OK; }
    return as_error("%s: metrics: unknown metric '%s' (acc, acc_norm, mc2, exact_match, perplexity, word_perplexity, "
                    "byte_perplexity, bits_per_byte)", name, s);
}

// lm-eval's metric_list: [{metric, aggregation, higher_is_better, <options>}].
static int parse_metric_list(eval_task *t, const cJSON *list, const char *name) {
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) return as_error("%s: metric_list: expected a non-empty list", name);
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "metric");
        if (!cJSON_IsObject(e) || !cJSON_IsString(m)) return as_error("%s: metric_list: each entry needs 'metric: <name>'", name);
        unsigned bit = 0;
        if (metric_bit(name, m->valuestring, &bit) != AS_OK) return AS_FAIL;
        t->metrics |= bit;
        const cJSON *agg = cJSON_GetObjectItemCaseSensitive(e, "aggregation");
        for (size_t i = 0; i < AS_ARRAY_LEN(METRICS); i++)
            if (METRICS[i].bit == bit && agg && (!cJSON_IsString(agg) || strcmp(agg->valuestring, METRICS[i].aggregation)))
                return as_error("%s: metric_list: %s: aggregation '%s' is not supported (this metric aggregates by %s)", name,
                                m->valuestring, cJSON_IsString(agg) ? agg->valuestring : "?", METRICS[i].aggregation);
        if (bit == EVAL_METRIC_EXACT_MATCH) {
            if (eval_exact_match_parse(e, name, &t->em) != AS_OK) return AS_FAIL;
        } else {
            const cJSON *k;
            cJSON_ArrayForEach(k, e) if (strcmp(k->string, "metric") && strcmp(k->string, "aggregation") &&
                                         strcmp(k->string, "higher_is_better"))
                return as_error("%s: metric_list: %s: unknown option '%s'", name, m->valuestring, k->string);
        }
    }
    return AS_OK;
}

static void task_release(eval_task *t) {
    eval_filters_free(t->filters, t->n_filters);
    eval_exact_match_free(&t->em);
    jinja_free(t->lm_text.tpl), jinja_free(t->lm_target.tpl), jinja_free(t->lm_choice.tpl);
    cJSON_Delete(t->own);
    cJSON_Delete(t->root);
}

// lm-eval's own task keys: a file holding any of them is read as lm-eval reads it.
static const char *const LM_EVAL_KEYS[] = {
    "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split",
    "fewshot_split", "doc_to_choice", "tag", "task_alias", "group", "should_decontaminate",
    "doc_to_decontamination_query", "generation_kwargs", "repeats", "fewshot_config", "metadata", "process_docs",
    "process_results", "use_prompt", "doc_to_image", "gen_prefix", "unsafe_code"};

// The first `!function` value under v (depth first), with its key path.
static const cJSON *find_function(const cJSON *v, char *path, size_t cap) {
    if (yaml_function(v)) return v;
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return NULL;
    const size_t len = strlen(path);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (cJSON_IsObject(v)) snprintf(path + len, cap - len, "%s%s", len ? "." : "", e->string);
        else snprintf(path + len, cap - len, "[%d]", i);
        const cJSON *f = find_function(e, path, cap);
        if (f) return f;
        path[len] = 0;
        i++;
    }
    return NULL;
}

// One line for a `!function` that cannot run: its file, line, key and function.
static int function_error(const cJSON *fn, const char *key, const char *why) {
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(fn, "!file"), *line = cJSON_GetObjectItemCaseSensitive(fn, "!line");
    return as_error("%s:%d: %s: !function %s: a Python function cannot run in C (%s)", file ? file->valuestring : "?",
                    line ? (int)line->valuedouble : 0, key, yaml_function(fn), why);
}

static int check_task_name(const char *name, const char *task);
static const char *default_primary(const eval_task *t);

static int parse_native(eval_task *t, const char *name) {
    const cJSON *r = t->root;
    int rc = AS_FAIL;
    {
        char path[256] = "";
        const cJSON *fn = find_function(r, path, sizeof path);
        if (fn) return function_error(fn, path, "write the field as a template");
    }
    const cJSON *k;
    cJSON_ArrayForEach(k, r) {
        bool known = false;
        for (size_t i = 0; i < AS_ARRAY_LEN(KNOWN_KEYS); i++) known |= !strcmp(k->string, KNOWN_KEYS[i]);
        if (!known) { as_error("%s: %s: unknown field", name, k->string); goto fail; }
    }
    const char *type = NULL, *sampler = NULL, *match = NULL, *output_type = NULL;
    if (opt_str(r, name, "output_type", NULL, &output_type)) goto fail;
    if (opt_str(r, name, "task", NULL, &t->name) || opt_str(r, name, "type", "multiple_choice", &type) ||
        opt_str(r, name, "fewshot_data", NULL, &t->fewshot_data) ||
        opt_str(r, name, "format", "jsonl", &t->format) || opt_str(r, name, "fewshot_sampler", "random", &sampler) ||
        opt_str(r, name, "description", "", &t->description) || opt_str(r, name, "doc_to_text", NULL, &t->doc_to_text) ||
        opt_str(r, name, "doc_to_target", NULL, &t->doc_to_target) || opt_str(r, name, "gold", NULL, &t->gold) ||
        opt_str(r, name, "target_delimiter", " ", &t->target_delimiter) ||
        opt_str(r, name, "fewshot_delimiter", "\n\n", &t->fewshot_delimiter) ||
        opt_str(r, name, "contexts", NULL, &t->contexts) || opt_str(r, name, "continuation", NULL, &t->continuation) ||
        opt_str(r, name, "primary_metric", NULL, &t->primary_metric) || opt_str(r, name, "match", NULL, &match) ||
        opt_str(r, name, "reference", NULL, &t->reference) || opt_str(r, name, "judge_prompts", NULL, &t->judge_prompts) ||
        opt_int(r, name, "num_fewshot", 0, 0, 1000, &t->num_fewshot) ||
        opt_int(r, name, "max_gen_toks", 256, 1, 1 << 20, &t->max_gen_toks) ||
        opt_str_array(r, name, "choices", &t->choices) || opt_str_array(r, name, "true_choices", &t->true_choices) ||
        opt_str_array(r, name, "false_choices", &t->false_choices) || opt_str_array(r, name, "until", &t->until))
        goto fail;
    {
        const cJSON *dv = cJSON_GetObjectItemCaseSensitive(r, "data");
        if (cJSON_IsArray(dv)) {
            if (opt_str_array(r, name, "data", &t->data_alts)) goto fail;
            t->data = cJSON_GetArrayItem(t->data_alts, 0)->valuestring;
        } else if (opt_str(r, name, "data", NULL, &t->data)) goto fail;
    }
    if (output_type) {
        // lm-eval's name for `type`.
        if (cJSON_GetObjectItemCaseSensitive(r, "type") && strcmp(type, output_type)) {
            as_error("%s: output_type: '%s' disagrees with type '%s'", name, output_type, type);
            goto fail;
        }
        type = output_type;
    }
    if (check_task_name(name, t->name)) goto fail;
    if (!t->data) { as_error("%s: data: missing (the data file)", name); goto fail; }
    if (!strcmp(type, "multiple_choice")) t->kind = EVAL_TASK_MULTIPLE_CHOICE;
    else if (!strcmp(type, "generate_until")) t->kind = EVAL_TASK_GENERATE_UNTIL;
    else if (!strcmp(type, "mt_bench")) t->kind = EVAL_TASK_MT_BENCH;
    else if (!strcmp(type, "loglikelihood")) t->kind = EVAL_TASK_LOGLIKELIHOOD;
    else if (!strcmp(type, "loglikelihood_rolling")) t->kind = EVAL_TASK_LOGLIKELIHOOD_ROLLING;
    else {
        as_error("%s: type: expected multiple_choice, generate_until, loglikelihood, loglikelihood_rolling or mt_bench, "
                 "got '%s'", name, type);
        goto fail;
    }
    if (strcmp(t->format, "jsonl") && strcmp(t->format, "csv") && strcmp(t->format, "hellaswag") && strcmp(t->format, "truthfulqa")) {
        as_error("%s: format: expected jsonl, csv, hellaswag or truthfulqa, got '%s'", name, t->format);
        goto fail;
    }
    if (!strcmp(sampler, "first_n")) t->fewshot_first_n = true;
    else if (strcmp(sampler, "random")) { as_error("%s: fewshot_sampler: expected random or first_n", name); goto fail; }
    t->split_lists = cJSON_GetObjectItemCaseSensitive(r, "split_lists");
    if (t->split_lists) {
        if (!cJSON_IsObject(t->split_lists)) { as_error("%s: split_lists: expected a mapping column: separator", name); goto fail; }
        const cJSON *e;
        cJSON_ArrayForEach(e, t->split_lists) if (!cJSON_IsString(e) || !*e->valuestring) {
            as_error("%s: split_lists: %s: expected a non-empty separator", name, e->string);
            goto fail;
        }
    }
    const cJSON *metrics, *metric_list = cJSON_GetObjectItemCaseSensitive(r, "metric_list");
    if (opt_str_array(r, name, "metrics", &metrics)) goto fail;
    if (metrics && metric_list) { as_error("%s: metric_list: give metrics or metric_list, not both", name); goto fail; }
    if (metrics) {
        const cJSON *e;
        cJSON_ArrayForEach(e, metrics) {
            unsigned bit = 0;
            if (metric_bit(name, e->valuestring, &bit) != AS_OK) goto fail;
            t->metrics |= bit;
        }
    }
    if (metric_list && parse_metric_list(t, metric_list, name) != AS_OK) goto fail;
    const cJSON *filter_list = cJSON_GetObjectItemCaseSensitive(r, "filter_list");
    if (filter_list && t->kind != EVAL_TASK_GENERATE_UNTIL) { as_error("%s: filter_list: only generate_until tasks take filters", name); goto fail; }
    if (match && t->kind != EVAL_TASK_GENERATE_UNTIL) { as_error("%s: match: only generate_until tasks take it", name); goto fail; }
    const unsigned LL_METRICS = EVAL_METRIC_PERPLEXITY | EVAL_METRIC_ACC,
                   ROLLING_METRICS = EVAL_METRIC_WORD_PERPLEXITY | EVAL_METRIC_BYTE_PERPLEXITY | EVAL_METRIC_BITS_PER_BYTE;
    if (t->kind == EVAL_TASK_MULTIPLE_CHOICE) {
        if (!t->metrics) t->metrics = EVAL_METRIC_ACC;
        if (t->metrics & ~(unsigned)(EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM | EVAL_METRIC_MC2)) {
            as_error("%s: metrics: multiple_choice tasks have acc, acc_norm and mc2", name);
            goto fail;
        }
        const int n_forms = !!t->choices + !!(t->true_choices || t->false_choices) + !!t->contexts;
        if (n_forms != 1) {
            as_error("%s: choices: give exactly one of choices (+ gold), true_choices + false_choices, or contexts + "
                     "continuation (+ gold)", name);
            goto fail;
        }
        if ((t->true_choices != NULL) != (t->false_choices != NULL)) {
            as_error("%s: true_choices: true_choices and false_choices go together", name);
            goto fail;
        }
        if ((t->choices || t->contexts) && !t->gold) { as_error("%s: gold: missing (the index of the right choice)", name); goto fail; }
        if (t->contexts && !t->continuation) { as_error("%s: continuation: missing (partial scoring needs it)", name); goto fail; }
        if (!t->contexts && !t->doc_to_text) { as_error("%s: doc_to_text: missing", name); goto fail; }
        if ((t->metrics & EVAL_METRIC_MC2) && !t->true_choices) { as_error("%s: metrics: mc2 needs true_choices/false_choices", name); goto fail; }
    } else if (t->kind == EVAL_TASK_GENERATE_UNTIL) {
        if (!t->metrics) t->metrics = EVAL_METRIC_EXACT_MATCH;
        if (t->metrics != EVAL_METRIC_EXACT_MATCH) { as_error("%s: metrics: generate_until tasks have exact_match only", name); goto fail; }
        if (!t->doc_to_text || !t->gold) { as_error("%s: doc_to_text and gold are required for generate_until", name); goto fail; }
        if (!t->doc_to_target) t->doc_to_target = t->gold;
        if (match && strcmp(match, "number") && strcmp(match, "string")) { as_error("%s: match: expected number or string, got '%s'", name, match); goto fail; }
        t->match_string = (match && !strcmp(match, "string")) || filter_list || metric_list;
        if (match && !strcmp(match, "number") && t->match_string) {
            as_error("%s: match: number takes no filter_list or metric_list (they are for string matches)", name);
            goto fail;
        }
        if (filter_list && eval_filters_parse(filter_list, name, &t->filters, &t->n_filters) != AS_OK) goto fail;
    } else if (t->kind == EVAL_TASK_LOGLIKELIHOOD) {
        if (!t->metrics) t->metrics = LL_METRICS;
        if (t->metrics & ~LL_METRICS) { as_error("%s: metrics: loglikelihood tasks have perplexity and acc", name); goto fail; }
        if (!t->doc_to_text || !t->doc_to_target) { as_error("%s: doc_to_text and doc_to_target are required for loglikelihood", name); goto fail; }
    } else if (t->kind == EVAL_TASK_LOGLIKELIHOOD_ROLLING) {
        if (!t->metrics) t->metrics = ROLLING_METRICS;
        if (t->metrics & ~ROLLING_METRICS) {
            as_error("%s: metrics: loglikelihood_rolling tasks have word_perplexity, byte_perplexity and bits_per_byte", name);
            goto fail;
        }
        if (!t->doc_to_target) { as_error("%s: doc_to_target: missing (the document scored)", name); goto fail; }
    } else {
        t->temperatures = cJSON_GetObjectItemCaseSensitive(r, "temperatures");
        if (t->temperatures && !cJSON_IsObject(t->temperatures)) { as_error("%s: temperatures: expected a mapping", name); goto fail; }
    }
    if (!t->primary_metric) t->primary_metric = default_primary(t);
    return AS_OK;
fail:
    return rc;
}

// ---- lm-evaluation-harness task files ----

// lm-eval's include: the included file's keys under the including file's own
// (a list: the first listed wins), the path relative to the including file.
static int resolve_includes(cJSON *root, const char *path, int depth) {
    cJSON *inc = cJSON_DetachItemFromObjectCaseSensitive(root, "include");
    if (!inc) return AS_OK;
    int rc = AS_OK;
    if (depth >= 16) rc = as_error("%s: include: nested more than 16 deep (do the files include each other?)", path);
    else if (!cJSON_IsString(inc) && !cJSON_IsArray(inc)) rc = as_error("%s: include: expected a file name or a list of them", path);
    cJSON *list = inc;
    if (rc == AS_OK && cJSON_IsString(inc)) {
        list = cJSON_CreateArray();
        cJSON_AddItemToArray(list, cJSON_Duplicate(inc, 1));
    }
    const cJSON *e;
    if (rc == AS_OK)
        cJSON_ArrayForEach(e, list) {
            if (!cJSON_IsString(e)) { rc = as_error("%s: include: expected file names", path); break; }
            const char *slash = strrchr(path, '/');
            char *p;
            if (e->valuestring[0] == '/' || !slash) p = as_strdup(e->valuestring);
            else {
                p = as_malloc(strlen(path) + strlen(e->valuestring) + 2);
                sprintf(p, "%.*s/%s", (int)(slash - path), path, e->valuestring);
            }
            char *text;
            size_t len;
            cJSON *sub = NULL;
            if (as_read_file(p, &text, &len) != AS_OK) rc = as_error("%s: include: cannot read %s", path, p);
            else {
                rc = yaml_to_json(text, len, p, &sub);
                free(text);
                if (rc == AS_OK && !cJSON_IsObject(sub)) rc = as_error("%s: expected a mapping of task fields", p);
                if (rc == AS_OK) rc = resolve_includes(sub, p, depth + 1);
                while (rc == AS_OK && sub->child) {
                    cJSON *k = cJSON_DetachItemViaPointer(sub, sub->child);
                    if (cJSON_GetObjectItemCaseSensitive(root, k->string)) cJSON_Delete(k);
                    else cJSON_AddItemToArray(root, k); // keeps k->string
                }
                cJSON_Delete(sub);
            }
            free(p);
            if (rc != AS_OK) break;
        }
    if (list != inc) cJSON_Delete(list);
    cJSON_Delete(inc);
    return rc;
}

// YAML's null (the YAML reader keeps scalars as text).
static bool yaml_null(const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsString(v)) return false;
    const char *s = v->valuestring;
    return !*s || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL") || !strcmp(s, "~");
}

// An optional string that may be null.
static int lm_str(const cJSON *r, const char *name, const char *key, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, key);
    *out = NULL;
    if (yaml_null(v)) return AS_OK;
    if (!cJSON_IsString(v)) return as_error("%s: %s: expected a string", name, key);
    *out = v->valuestring;
    return AS_OK;
}

static bool ascii_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

static bool yaml_bool(const cJSON *v, bool *out) {
    if (!cJSON_IsString(v)) return false;
    const char *s = v->valuestring;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) { *out = true; return true; }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) { *out = false; return true; }
    return false;
}

// lm-eval's Python functions alphaspin has in C, by their exact names.
static const struct { const char *key, *fn; eval_lm_fn id; } LM_BUILTINS[] = {
    {"doc_to_text", "preprocess_winogrande.doc_to_text", EVAL_LM_FN_WINOGRANDE_TEXT},
    {"doc_to_target", "preprocess_winogrande.doc_to_target", EVAL_LM_FN_WINOGRANDE_TARGET},
    {"doc_to_choice", "preprocess_winogrande.doc_to_choice", EVAL_LM_FN_WINOGRANDE_CHOICE},
};

static int lm_field(eval_task *t, eval_lm_field *f, const char *key, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t->root, key);
    memset(f, 0, sizeof *f);
    if (yaml_null(v)) return AS_OK;
    f->v = v;
    const char *fn = yaml_function(v);
    if (fn) {
        for (size_t i = 0; i < AS_ARRAY_LEN(LM_BUILTINS); i++)
            if (!strcmp(key, LM_BUILTINS[i].key) && !strcmp(fn, LM_BUILTINS[i].fn)) {
                f->fn = LM_BUILTINS[i].id;
                return AS_OK;
            }
        return function_error(v, key, "alphaspin runs Jinja templates, and preprocess_winogrande's doc_to_text, "
                                      "doc_to_target and doc_to_choice as built-in equivalents");
    }
    if (cJSON_IsString(v)) {
        char what[600];
        snprintf(what, sizeof what, "%s: %s", name, key);
        return jinja_compile(v->valuestring, what, &f->tpl);
    }
    if (cJSON_IsArray(v) && strcmp(key, "doc_to_text")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) if (!cJSON_IsString(e)) return as_error("%s: %s: expected a list of strings", name, key);
        return AS_OK;
    }
    if (cJSON_IsObject(v) && !strcmp(key, "doc_to_choice")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) if (!cJSON_IsString(e)) return as_error("%s: %s: expected a mapping of strings", name, key);
        return AS_OK;
    }
    return as_error("%s: %s: expected a template, a document key%s", name, key,
                    !strcmp(key, "doc_to_choice") ? ", a list or a mapping" : !strcmp(key, "doc_to_target") ? " or a list" : "");
}

// The files that may hold a split: dataset_kwargs.data_files' entry for it
// (a file or a list: HF's "train" split), else <dataset_path>[/<data_dir>]
// [/<dataset_name>]/<split>.{jsonl,json,csv}.
static int split_files(eval_task *t, const char *name, const char *split, cJSON **out) {
    const cJSON *r = t->root, *kw = cJSON_GetObjectItemCaseSensitive(r, "dataset_kwargs");
    const cJSON *df = cJSON_IsObject(kw) ? cJSON_GetObjectItemCaseSensitive(kw, "data_files") : NULL;
    cJSON *arr = cJSON_CreateArray();
    *out = arr;
    if (df) {
        const cJSON *v = cJSON_IsObject(df) ? cJSON_GetObjectItemCaseSensitive(df, split) : !strcmp(split, "train") ? df : NULL;
        if (cJSON_IsArray(v)) {
            if (cJSON_GetArraySize(v) != 1)
                return as_error("%s: dataset_kwargs.data_files: %s: one file per split is supported (got %d)", name, split,
                                cJSON_GetArraySize(v));
            v = cJSON_GetArrayItem(v, 0);
        }
        if (v && !cJSON_IsString(v)) return as_error("%s: dataset_kwargs.data_files: %s: expected a file name", name, split);
        if (v) cJSON_AddItemToArray(arr, cJSON_CreateString(v->valuestring));
        return AS_OK;
    }
    const char *path, *dname, *ddir = NULL;
    if (lm_str(r, name, "dataset_path", &path) || lm_str(r, name, "dataset_name", &dname)) return AS_FAIL;
    const cJSON *dd = cJSON_IsObject(kw) ? cJSON_GetObjectItemCaseSensitive(kw, "data_dir") : NULL;
    if (dd && !cJSON_IsString(dd)) return as_error("%s: dataset_kwargs.data_dir: expected a folder name", name);
    if (dd) ddir = dd->valuestring;
    static const char *const EXT[] = {"jsonl", "json", "csv"};
    for (int with_name = dname ? 1 : 0; with_name >= 0; with_name--)
        for (size_t e = 0; e < AS_ARRAY_LEN(EXT); e++) {
            char p[2048];
            snprintf(p, sizeof p, "%s%s%s%s%s/%s.%s", path, ddir ? "/" : "", ddir ? ddir : "", with_name ? "/" : "",
                     with_name ? dname : "", split, EXT[e]);
            cJSON_AddItemToArray(arr, cJSON_CreateString(p));
        }
    return AS_OK;
}

static int check_task_name(const char *name, const char *task) {
    if (!task || !*task) return as_error("%s: task: missing (the task's name)", name);
    for (const char *p = task; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
            return as_error("%s: task: '%s' may hold only letters, digits, '_', '-', '.'", name, task);
    return AS_OK;
}

static const char *default_primary(const eval_task *t) {
    return t->kind == EVAL_TASK_MT_BENCH ? "score"
           : (t->metrics & EVAL_METRIC_EXACT_MATCH) ? "exact_match"
           : (t->metrics & EVAL_METRIC_ACC_NORM) ? "acc_norm"
           : (t->metrics & EVAL_METRIC_ACC) ? "acc"
           : (t->metrics & EVAL_METRIC_MC2) ? "acc"
           : (t->metrics & EVAL_METRIC_PERPLEXITY) ? "perplexity"
           : (t->metrics & EVAL_METRIC_WORD_PERPLEXITY) ? "word_perplexity"
           : (t->metrics & EVAL_METRIC_BYTE_PERPLEXITY) ? "byte_perplexity" : "bits_per_byte";
}

// An lm-evaluation-harness task file, read as lm-eval 0.4's ConfigurableTask
// reads it.  What cannot run in C (Python functions, prompt sources, images)
// is refused with one line naming the key.
static int parse_lm_eval(eval_task *t, const char *name) {
    cJSON *r = t->root;
    t->lm_eval = true;
    t->own = cJSON_CreateObject();
    static const char *const READ[] = {
        "task", "output_type", "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split",
        "test_split", "fewshot_split", "doc_to_text", "doc_to_target", "doc_to_choice", "description", "target_delimiter",
        "fewshot_delimiter", "num_fewshot", "fewshot_config", "metric_list", "filter_list", "generation_kwargs", "repeats",
        "primary_metric"};
    // Keys that change nothing lm-eval scores (decontamination, grouping, metadata).
    static const char *const IGNORED[] = {"tag", "task_alias", "group", "should_decontaminate", "doc_to_decontamination_query",
                                          "metadata", "unsafe_code"};
    static const struct { const char *key, *why; } REFUSED[] = {
        {"process_docs", "Python that rewrites the documents; preprocess the data file instead"},
        {"process_results", "Python that scores the outputs"},
        {"use_prompt", "promptsource prompts"},
        {"doc_to_image", "images"},
        {"gen_prefix", "an answer prefix"},
    };
    const cJSON *k;
    cJSON_ArrayForEach(k, r) {
        const bool doc_key = !strcmp(k->string, "doc_to_text") || !strcmp(k->string, "doc_to_target") || !strcmp(k->string, "doc_to_choice");
        for (size_t i = 0; i < AS_ARRAY_LEN(REFUSED); i++)
            if (!strcmp(k->string, REFUSED[i].key)) {
                if (yaml_function(k)) return function_error(k, k->string, REFUSED[i].why);
                return as_error("%s: %s: not supported (%s)", name, k->string, REFUSED[i].why);
            }
        char path[256];
        snprintf(path, sizeof path, "%s", k->string);
        const cJSON *fn = doc_key && yaml_function(k) ? NULL : find_function(k, path, sizeof path);
        if (fn) return function_error(fn, path, "alphaspin runs Jinja templates");
        if (in_list(READ, AS_ARRAY_LEN(READ), k->string) || in_list(IGNORED, AS_ARRAY_LEN(IGNORED), k->string)) continue;
        if (in_list(KNOWN_KEYS, AS_ARRAY_LEN(KNOWN_KEYS), k->string))
            return as_error("%s: %s: alphaspin's field, not lm-evaluation-harness's (this file is read as an lm-eval task "
                            "file: it has lm-eval's keys, e.g. dataset_path or doc_to_choice; tasks/README.md)", name, k->string);
        return as_error("%s: %s: unknown field", name, k->string);
    }
    const char *output_type = NULL, *path = NULL, *sampler = "default";
    if (opt_str(r, name, "task", NULL, &t->name) || opt_str(r, name, "output_type", "generate_until", &output_type) ||
        lm_str(r, name, "dataset_path", &path) || opt_str(r, name, "description", "", &t->description) ||
        opt_str(r, name, "target_delimiter", " ", &t->target_delimiter) ||
        opt_str(r, name, "fewshot_delimiter", "\n\n", &t->fewshot_delimiter) ||
        opt_str(r, name, "primary_metric", NULL, &t->primary_metric))
        return AS_FAIL;
    if (check_task_name(name, t->name)) return AS_FAIL;
    if (!path) return as_error("%s: dataset_path: missing (the data set: a folder of <split>.jsonl/.json/.csv files, or json/csv with dataset_kwargs.data_files)", name);
    const cJSON *nf = cJSON_GetObjectItemCaseSensitive(r, "num_fewshot");
    if (yaml_null(nf)) t->num_fewshot = 0;
    else if (opt_int(r, name, "num_fewshot", 0, 0, 1000, &t->num_fewshot)) return AS_FAIL;
    if (!strcmp(output_type, "multiple_choice")) t->kind = EVAL_TASK_MULTIPLE_CHOICE;
    else if (!strcmp(output_type, "generate_until")) t->kind = EVAL_TASK_GENERATE_UNTIL;
    else if (!strcmp(output_type, "loglikelihood")) t->kind = EVAL_TASK_LOGLIKELIHOOD;
    else if (!strcmp(output_type, "loglikelihood_rolling")) t->kind = EVAL_TASK_LOGLIKELIHOOD_ROLLING;
    else return as_error("%s: output_type: expected multiple_choice, generate_until, loglikelihood or loglikelihood_rolling, got '%s'", name, output_type);
    if (lm_field(t, &t->lm_text, "doc_to_text", name) || lm_field(t, &t->lm_target, "doc_to_target", name) ||
        lm_field(t, &t->lm_choice, "doc_to_choice", name))
        return AS_FAIL;
    if (cJSON_IsString(t->lm_text.v)) t->doc_to_text = t->lm_text.v->valuestring;
    if (cJSON_IsString(t->lm_target.v)) t->doc_to_target = t->lm_target.v->valuestring;
    if (!t->lm_target.v) return as_error("%s: doc_to_target: missing", name);
    if (t->kind != EVAL_TASK_LOGLIKELIHOOD_ROLLING && !t->lm_text.v) return as_error("%s: doc_to_text: missing", name);
    if (t->kind == EVAL_TASK_MULTIPLE_CHOICE && !t->lm_choice.v)
        return as_error("%s: doc_to_choice: missing (multiple_choice scores each choice)", name);
    // fewshot_config: the sampler only.
    const cJSON *fc = cJSON_GetObjectItemCaseSensitive(r, "fewshot_config");
    if (fc && !yaml_null(fc)) {
        if (!cJSON_IsObject(fc)) return as_error("%s: fewshot_config: expected a mapping", name);
        cJSON_ArrayForEach(k, fc) {
            if (strcmp(k->string, "sampler")) return as_error("%s: fewshot_config.%s: not supported (sampler only)", name, k->string);
            if (!cJSON_IsString(k)) return as_error("%s: fewshot_config.sampler: expected default or first_n", name);
            sampler = k->valuestring;
        }
    }
    if (!strcmp(sampler, "first_n")) t->fewshot_first_n = true;
    else if (strcmp(sampler, "default")) return as_error("%s: fewshot_config.sampler: expected default or first_n, got '%s'", name, sampler);
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(r, "repeats");
    if (rep && !yaml_null(rep) && !(cJSON_IsString(rep) && !strcmp(rep->valuestring, "1")))
        return as_error("%s: repeats: only 1 is supported", name);
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(r, "dataset_kwargs");
    if (kw && !yaml_null(kw)) {
        if (!cJSON_IsObject(kw)) return as_error("%s: dataset_kwargs: expected a mapping", name);
        cJSON_ArrayForEach(k, kw) if (strcmp(k->string, "data_files") && strcmp(k->string, "data_dir") && strcmp(k->string, "trust_remote_code"))
            return as_error("%s: dataset_kwargs.%s: not supported (data_files, data_dir)", name, k->string);
    }
    // Metrics: metric_list, else lm-eval's defaults for the type.
    const cJSON *metric_list = cJSON_GetObjectItemCaseSensitive(r, "metric_list");
    if (metric_list && parse_metric_list(t, metric_list, name) != AS_OK) return AS_FAIL;
    if (!metric_list)
        t->metrics = t->kind == EVAL_TASK_MULTIPLE_CHOICE ? EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM
                     : t->kind == EVAL_TASK_GENERATE_UNTIL ? EVAL_METRIC_EXACT_MATCH
                     : t->kind == EVAL_TASK_LOGLIKELIHOOD ? EVAL_METRIC_PERPLEXITY | EVAL_METRIC_ACC
                     : EVAL_METRIC_WORD_PERPLEXITY | EVAL_METRIC_BYTE_PERPLEXITY | EVAL_METRIC_BITS_PER_BYTE;
    const unsigned ALLOWED = t->kind == EVAL_TASK_MULTIPLE_CHOICE ? EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM
                             : t->kind == EVAL_TASK_GENERATE_UNTIL ? EVAL_METRIC_EXACT_MATCH
                             : t->kind == EVAL_TASK_LOGLIKELIHOOD ? EVAL_METRIC_PERPLEXITY | EVAL_METRIC_ACC
                             : EVAL_METRIC_WORD_PERPLEXITY | EVAL_METRIC_BYTE_PERPLEXITY | EVAL_METRIC_BITS_PER_BYTE;
    if (t->metrics & ~ALLOWED) return as_error("%s: metric_list: a metric %s tasks do not have", name, output_type);
    const cJSON *filter_list = cJSON_GetObjectItemCaseSensitive(r, "filter_list"), *gk = cJSON_GetObjectItemCaseSensitive(r, "generation_kwargs");
    if (filter_list && t->kind != EVAL_TASK_GENERATE_UNTIL) return as_error("%s: filter_list: only generate_until tasks take filters", name);
    if (gk && !yaml_null(gk) && t->kind != EVAL_TASK_GENERATE_UNTIL) return as_error("%s: generation_kwargs: only generate_until tasks generate", name);
    if (t->kind == EVAL_TASK_GENERATE_UNTIL) {
        t->match_string = true;
        if (filter_list && eval_filters_parse(filter_list, name, &t->filters, &t->n_filters) != AS_OK) return AS_FAIL;
        // lm-eval's default: until the few-shot delimiter, greedy.
        cJSON *until = cJSON_AddArrayToObject(t->own, "until");
        t->max_gen_toks = 256;
        bool until_given = false;
        if (gk && !yaml_null(gk)) {
            if (!cJSON_IsObject(gk)) return as_error("%s: generation_kwargs: expected a mapping", name);
            cJSON_ArrayForEach(k, gk) {
                bool b;
                if (!strcmp(k->string, "until")) {
                    until_given = true;
                    if (cJSON_IsString(k)) cJSON_AddItemToArray(until, cJSON_CreateString(k->valuestring));
                    else if (cJSON_IsArray(k)) {
                        const cJSON *e;
                        cJSON_ArrayForEach(e, k) {
                            if (!cJSON_IsString(e)) return as_error("%s: generation_kwargs.until: expected strings", name);
                            cJSON_AddItemToArray(until, cJSON_CreateString(e->valuestring));
                        }
                    } else return as_error("%s: generation_kwargs.until: expected a string or a list", name);
                } else if (!strcmp(k->string, "max_gen_toks")) {
                    if (opt_int(gk, name, "max_gen_toks", 256, 1, 1 << 20, &t->max_gen_toks)) return AS_FAIL;
                } else if (!strcmp(k->string, "do_sample")) {
                    if (!yaml_bool(k, &b) || b) return as_error("%s: generation_kwargs.do_sample: only false (greedy) is supported", name);
                } else if (!strcmp(k->string, "temperature")) {
                    if (!cJSON_IsString(k) || strtod(k->valuestring, NULL) != 0)
                        return as_error("%s: generation_kwargs.temperature: only 0 (greedy) is supported", name);
                } else {
                    return as_error("%s: generation_kwargs.%s: not supported (until, max_gen_toks, do_sample: false, temperature: 0)", name, k->string);
                }
            }
        }
        if (!until_given) cJSON_AddItemToArray(until, cJSON_CreateString(t->fewshot_delimiter));
        t->until = cJSON_GetArraySize(until) ? until : NULL;
    }
    // Splits: the evaluated one (test, else validation) and the few-shot one
    // (fewshot_split, else training, validation, test: lm-eval's order).
    const char *train, *val, *test, *few;
    if (lm_str(r, name, "training_split", &train) || lm_str(r, name, "validation_split", &val) ||
        lm_str(r, name, "test_split", &test) || lm_str(r, name, "fewshot_split", &few))
        return AS_FAIL;
    t->eval_split = test ? test : val;
    if (!t->eval_split) return as_error("%s: test_split: neither test_split nor validation_split is given", name);
    t->fewshot_split = few ? few : train ? train : val ? val : test;
    cJSON *files;
    if (split_files(t, name, t->eval_split, &files) != AS_OK) { cJSON_Delete(files); return AS_FAIL; }
    cJSON_AddItemToObject(t->own, "data", files);
    if (cJSON_GetArraySize(files) == 0)
        return as_error("%s: dataset_kwargs.data_files: no file for the evaluated split '%s'", name, t->eval_split);
    t->data_alts = files;
    t->data = cJSON_GetArrayItem(files, 0)->valuestring;
    if (strcmp(t->fewshot_split, t->eval_split)) {
        if (split_files(t, name, t->fewshot_split, &files) != AS_OK) { cJSON_Delete(files); return AS_FAIL; }
        cJSON_AddItemToObject(t->own, "fewshot", files);
        t->fewshot_alts = files;
        if (cJSON_GetArraySize(files)) t->fewshot_data = cJSON_GetArrayItem(files, 0)->valuestring;
    }
    t->format = "auto";
    if (!t->primary_metric) t->primary_metric = default_primary(t);
    return AS_OK;
}

int eval_task_parse(const char *yaml, size_t len, const char *name, eval_task *t) {
    memset(t, 0, sizeof *t);
    if (yaml_to_json(yaml, len, name, &t->root) != AS_OK) return AS_FAIL;
    int rc = AS_FAIL;
    if (!cJSON_IsObject(t->root)) as_error("%s: expected a mapping of task fields", name);
    else if (resolve_includes(t->root, name, 0) == AS_OK) {
        bool lm = false;
        for (size_t i = 0; i < AS_ARRAY_LEN(LM_EVAL_KEYS); i++) lm |= cJSON_GetObjectItemCaseSensitive(t->root, LM_EVAL_KEYS[i]) != NULL;
        rc = lm ? parse_lm_eval(t, name) : parse_native(t, name);
    }
    if (rc != AS_OK) {
        task_release(t);
        memset(t, 0, sizeof *t);
    }
    return rc;
}

int eval_task_load(const char *name_or_path, const char *tasks_dir, eval_task *t) {
    size_t n = strlen(name_or_path);
    char *path;
    if (n > 5 && !strcmp(name_or_path + n - 5, ".yaml")) path = as_strdup(name_or_path);
    else {
        for (const char *p = name_or_path; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
                return as_error("--tasks: '%s' is neither a built-in task name nor a .yaml file", name_or_path);
        path = as_malloc(strlen(tasks_dir) + n + 8);
        sprintf(path, "%s/%s.yaml", tasks_dir, name_or_path);
        if (access(path, R_OK) != 0) {
            as_error("--tasks: no built-in task '%s' (%s not found)", name_or_path, path);
            free(path);
            return AS_FAIL;
        }
    }
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len) != AS_OK) { free(path); return AS_FAIL; }
    int rc = eval_task_parse(text, len, path, t);
    free(text);
    if (rc != AS_OK) { free(path); return AS_FAIL; }
    t->path = path;
    const char *slash = strrchr(path, '/');
    t->dir = slash ? as_strndup(path, (size_t)(slash - path)) : as_strdup(".");
    return AS_OK;
}

void eval_task_free(eval_task *t) {
    task_release(t);
    free(t->path);
    free(t->dir);
    memset(t, 0, sizeof *t);
}

// ---- templates ----

typedef struct sbuf { char *p; size_t n, cap; } sbuf;
static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = AS_MAX(b->cap * 2, b->n + n + 64);
        b->p = as_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_adds(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void trim_span(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

// Compiled templates, reused: a task renders the same few templates over every
// document.  (Evaluation renders on one thread.)
#define TPL_CACHE 32
static struct { char *src; jinja_tpl *tpl; } g_tpl_cache[TPL_CACHE];
static int g_tpl_next;

static const jinja_tpl *cached_compile(const char *src, const char *what) {
    for (int i = 0; i < TPL_CACHE; i++)
        if (g_tpl_cache[i].src && !strcmp(g_tpl_cache[i].src, src)) return g_tpl_cache[i].tpl;
    jinja_tpl *t;
    if (jinja_compile(src, what, &t) != AS_OK) return NULL;
    const int i = g_tpl_next;
    g_tpl_next = (g_tpl_next + 1) % TPL_CACHE;
    free(g_tpl_cache[i].src);
    jinja_free(g_tpl_cache[i].tpl);
    g_tpl_cache[i].src = as_strdup(src), g_tpl_cache[i].tpl = t;
    return t;
}

// alphaspin's templates may name a key that is no Jinja name ({{Best Answer}},
// a CSV column): such a tag's name becomes __col<k>, a variable beside the
// document's keys in *vars (references; the caller deletes *vars when it is
// not doc).  Heap string: the template to compile.
static char *rewrite_columns(const char *tpl, const cJSON *doc, cJSON **vars) {
    *vars = (cJSON *)doc;
    sbuf b = {0};
    sb_add(&b, "", 0);
    int k = 0;
    const char *p = tpl;
    for (;;) {
        const char *open = strstr(p, "{{"), *close = open ? strstr(open + 2, "}}") : NULL;
        if (!close) { sb_adds(&b, p); break; }
        const char *in = open + 2, *bar = memchr(in, '|', (size_t)(close - in));
        const char *head = in;
        size_t hn = (size_t)((bar ? bar : close) - in);
        trim_span(&head, &hn);
        bool plain = hn > 0;
        for (size_t i = 0; i < hn; i++) plain &= isalnum((unsigned char)head[i]) || head[i] == '_';
        char *key = as_strndup(head, hn);
        const cJSON *v = !plain && hn && cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, key) : NULL;
        if (v) {
            if (*vars == doc) {
                *vars = cJSON_CreateObject();
                const cJSON *e;
                cJSON_ArrayForEach(e, doc) cJSON_AddItemReferenceToObject(*vars, e->string, (cJSON *)e);
            }
            char name[32];
            snprintf(name, sizeof name, "__col%d", k++);
            cJSON_AddItemReferenceToObject(*vars, name, (cJSON *)v);
            sb_add(&b, p, (size_t)(head - p));
            sb_adds(&b, name);
            p = head + hn;
        } else {
            sb_add(&b, p, (size_t)(close + 2 - p));
            p = close + 2;
        }
        free(key);
    }
    return b.p;
}

// alphaspin's wording for a document field a template names but the document
// lacks: "<file>: item N: field 'x' missing (<key>, position P)" for Jinja's
// "<file>: item N: <key>: position P: 'x' is undefined".
static void field_missing_error(const char *what) {
    const char *e = as_last_error();
    const size_t wn = strlen(what);
    int pos, off = 0;
    if (strncmp(e, what, wn) || sscanf(e + wn, ": position %d: '%n", &pos, &off) != 1 || !off) return;
    const char *name = e + wn + off, *q = strchr(name, '\'');
    if (!q || strcmp(q, "' is undefined")) return;
    char *n = as_strndup(name, (size_t)(q - name));
    const char *sep = NULL;
    for (const char *p = strstr(what, ": "); p; p = strstr(p + 2, ": ")) sep = p;
    if (sep) as_error("%.*s: field '%s' missing (%s, position %d)", (int)(sep - what), what, n, sep + 2, pos);
    else as_error("%s: field '%s' missing (position %d)", what, n, pos);
    free(n);
}

char *eval_render(const char *tpl, const cJSON *doc, const char *what) {
    cJSON *vars;
    char *src = rewrite_columns(tpl, doc, &vars);
    const jinja_tpl *t = cached_compile(src, what);
    char *s = t ? jinja_render(t, vars, what) : NULL;
    if (t && !s) field_missing_error(what);
    if (vars != doc) cJSON_Delete(vars);
    free(src);
    return s;
}

static void push_str(char ***out, int32_t *n, char *s) {
    *out = as_realloc(*out, (size_t)(*n + 1) * sizeof **out);
    (*out)[(*n)++] = s;
}

// A list entry: a template that is one {{ expression }} giving a list
// expands to its items (each as Python's str()); else the rendered text.
static int render_list(const cJSON *tpls, const cJSON *doc, const char *what, char ***out, int32_t *n) {
    const cJSON *e;
    cJSON_ArrayForEach(e, tpls) {
        cJSON *vars;
        char *src = rewrite_columns(e->valuestring, doc, &vars);
        const jinja_tpl *t = cached_compile(src, what);
        int rc = t ? AS_OK : AS_FAIL;
        if (t && jinja_is_single_expr(t)) {
            cJSON *v;
            rc = jinja_eval_json(t, vars, what, &v);
            if (rc == AS_OK && cJSON_IsArray(v)) {
                const cJSON *x;
                cJSON_ArrayForEach(x, v) push_str(out, n, jinja_json_str(x));
            } else if (rc == AS_OK) {
                push_str(out, n, jinja_json_str(v));
            }
            cJSON_Delete(v);
        } else if (t) {
            char *s = jinja_render(t, vars, what);
            if (s) push_str(out, n, s);
            else rc = AS_FAIL;
        }
        if (vars != doc) cJSON_Delete(vars);
        free(src);
        if (rc != AS_OK) return AS_FAIL;
    }
    return AS_OK;
}

// ---- lm-eval's doc_to_text / doc_to_target / doc_to_choice ----

// preprocess_winogrande.py's functions, as lm-eval 0.4 has them.
static int winogrande_fn(eval_lm_fn fn, const cJSON *doc, const char *what, cJSON **out) {
    *out = NULL;
    if (fn == EVAL_LM_FN_WINOGRANDE_TEXT) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(doc, "answer");
        if (!cJSON_IsString(a) || (strcmp(a->valuestring, "1") && strcmp(a->valuestring, "2")))
            return as_error("%s: preprocess_winogrande.doc_to_text: answer: expected \"1\" or \"2\"", what);
        *out = cJSON_CreateNumber(a->valuestring[0] == '1' ? 0 : 1);
        return AS_OK;
    }
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(doc, "sentence");
    const char *blank = cJSON_IsString(s) ? strchr(s->valuestring, '_') : NULL;
    if (!cJSON_IsString(s)) return as_error("%s: preprocess_winogrande: sentence: missing or not a string", what);
    if (!blank) return as_error("%s: preprocess_winogrande: sentence: no '_' (the blank)", what);
    if (fn == EVAL_LM_FN_WINOGRANDE_TARGET) {
        // sentence[idx + 1:].strip()
        const char *rest = blank + 1;
        size_t n = strlen(rest), a = eval_py_lstrip_len(rest, n);
        n = a + eval_py_rstrip_len(rest + a, n - a);
        char *t = as_strndup(rest + a, n - a);
        *out = cJSON_CreateString(t);
        free(t);
        return AS_OK;
    }
    cJSON *arr = cJSON_CreateArray();
    for (int i = 1; i <= 2; i++) {
        char key[16];
        snprintf(key, sizeof key, "option%d", i);
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(doc, key);
        if (!cJSON_IsString(o)) {
            cJSON_Delete(arr);
            return as_error("%s: preprocess_winogrande.doc_to_choice: %s: missing or not a string", what, key);
        }
        const size_t pre = (size_t)(blank - s->valuestring);
        char *c = as_malloc(pre + strlen(o->valuestring) + 1);
        sprintf(c, "%.*s%s", (int)pre, s->valuestring, o->valuestring);
        cJSON_AddItemToArray(arr, cJSON_CreateString(c));
        free(c);
    }
    *out = arr;
    return AS_OK;
}

typedef enum lm_kind { LM_TEXT, LM_TARGET, LM_CHOICE } lm_kind;

// What lm-eval's ConfigurableTask.doc_to_text / doc_to_target / doc_to_choice
// returns for a document (*out: the caller deletes it): a document key gives
// the field; a template its text, read back by ast.literal_eval where lm-eval
// does (doc_to_choice always; text of digits when doc_to_choice is set; a
// target "[...]", falling back to the text); a YAML integer (a value of
// digits) the number; a list itself; a mapping its values.
static int lm_apply(const eval_task *t, const eval_lm_field *f, lm_kind k, const cJSON *doc, const char *what, cJSON **out) {
    *out = NULL;
    const cJSON *v = f->v;
    if (f->fn) return winogrande_fn(f->fn, doc, what, out);
    if (cJSON_IsArray(v)) {
        *out = cJSON_Duplicate(v, 1);
        return AS_OK;
    }
    if (cJSON_IsObject(v)) {
        *out = cJSON_CreateArray();
        const cJSON *e;
        cJSON_ArrayForEach(e, v) cJSON_AddItemToArray(*out, cJSON_Duplicate(e, 1));
        return AS_OK;
    }
    if (ascii_digits(v->valuestring)) {
        *out = cJSON_CreateNumber(strtod(v->valuestring, NULL));
        return AS_OK;
    }
    const cJSON *field = cJSON_GetObjectItemCaseSensitive(doc, v->valuestring);
    if (field) {
        *out = cJSON_Duplicate(field, 1);
        return AS_OK;
    }
    char *s = jinja_render(f->tpl, doc, what);
    if (!s) return AS_FAIL;
    const size_t n = strlen(s);
    const bool has_choice = t->lm_choice.v != NULL, bracketed = n >= 2 && s[0] == '[' && s[n - 1] == ']';
    if (k == LM_CHOICE || (k != LM_CHOICE && has_choice && ascii_digits(s)) || (k == LM_TARGET && bracketed)) {
        cJSON *lit;
        if (jinja_literal_eval(s, what, &lit) == AS_OK) {
            free(s);
            *out = lit;
            return AS_OK;
        }
        if (k != LM_TARGET || !bracketed) {
            free(s);
            return AS_FAIL;
        }
        as_clear_error();
    }
    *out = cJSON_CreateString(s);
    free(s);
    return AS_OK;
}

// A value as an index (an integral number >= 0).
static int lm_index(const cJSON *v, const char *what, const char *key, int32_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > INT32_MAX)
        return as_error("%s: %s: expected an index, got %s", what, key, cJSON_IsNumber(v) ? "a non-integral number" : "a non-number");
    *out = (int32_t)v->valuedouble;
    return AS_OK;
}

static int lm_doc_render(const eval_task *t, const cJSON *doc, int64_t index, eval_doc *d) {
    char base[512], w_text[600], w_target[600], w_choice[600];
    snprintf(base, sizeof base, "%s: item %lld", t->path ? t->path : t->name, (long long)index);
    snprintf(w_text, sizeof w_text, "%s: doc_to_text", base);
    snprintf(w_target, sizeof w_target, "%s: doc_to_target", base);
    snprintf(w_choice, sizeof w_choice, "%s: doc_to_choice", base);
    cJSON *text = NULL, *target = NULL, *choice = NULL;
    int rc = AS_FAIL;
    if (t->lm_choice.v) {
        if (lm_apply(t, &t->lm_choice, LM_CHOICE, doc, w_choice, &choice)) goto done;
        if (!cJSON_IsArray(choice)) { as_error("%s: expected a list", w_choice); goto done; }
    }
    if (t->lm_text.v && lm_apply(t, &t->lm_text, LM_TEXT, doc, w_text, &text)) goto done;
    if (lm_apply(t, &t->lm_target, LM_TARGET, doc, w_target, &target)) goto done;
    if (cJSON_IsArray(target)) {
        as_error("%s: a list of gold answers (lm-eval's multiple targets) is not supported", w_target);
        goto done;
    }
    if (t->kind == EVAL_TASK_MULTIPLE_CHOICE) {
        const cJSON *e;
        cJSON_ArrayForEach(e, choice) push_str(&d->choices, &d->n_choices, jinja_json_str(e));
        if (cJSON_IsNumber(text)) {
            // lm-eval's multiple inputs (Winogrande): the choices are the
            // contexts, the target the shared continuation, the text the gold.
            if (lm_index(text, w_text, "the gold choice", &d->gold)) goto done;
            d->contexts = d->choices;
            d->continuation = jinja_json_str(target);
        } else if (cJSON_IsString(text)) {
            d->text = as_strdup(text->valuestring);
            if (cJSON_IsString(target)) {
                d->gold = -1;
                for (int32_t c = 0; c < d->n_choices && d->gold < 0; c++)
                    if (!strcmp(d->choices[c], target->valuestring)) d->gold = c;
                if (d->gold < 0) { as_error("%s: '%.80s' is not one of the choices", w_target, target->valuestring); goto done; }
            } else if (lm_index(target, w_target, "the gold choice", &d->gold)) goto done;
        } else {
            as_error("%s: expected a text or the index of the gold context", w_text);
            goto done;
        }
        if (d->n_choices < 2) { as_error("%s: needs at least two choices, has %d", w_choice, d->n_choices); goto done; }
        if (d->gold >= d->n_choices) { as_error("%s: gold %d out of range (%d choices)", base, d->gold, d->n_choices); goto done; }
        rc = AS_OK;
        goto done;
    }
    // An index into doc_to_choice where lm-eval takes one; else the text.
    for (int i = 0; i < 2; i++) {
        const cJSON *v = i ? target : text;
        char **dst = i ? &d->target : &d->text;
        if (!v) continue;
        if (cJSON_IsNumber(v) && choice) {
            int32_t c;
            if (lm_index(v, i ? w_target : w_text, "an index into doc_to_choice", &c)) goto done;
            if (c >= cJSON_GetArraySize(choice)) { as_error("%s: index %d out of range of doc_to_choice", i ? w_target : w_text, c); goto done; }
            *dst = jinja_json_str(cJSON_GetArrayItem(choice, c));
        } else if (cJSON_IsArray(v)) {
            as_error("%s: expected a text, got a list", i ? w_target : w_text);
            goto done;
        } else {
            *dst = jinja_json_str(v);
        }
    }
    rc = AS_OK;
done:
    cJSON_Delete(text), cJSON_Delete(target), cJSON_Delete(choice);
    return rc;
}

static int render_int(const char *tpl, const cJSON *doc, const char *what, int32_t *out) {
    char *s = eval_render(tpl, doc, what);
    if (!s) return AS_FAIL;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    int rc = (end == s || *end || errno || x < 0 || x > INT32_MAX) ? as_error("%s: '%s' is not an index", what, s) : AS_OK;
    free(s);
    *out = (int32_t)x;
    return rc;
}

void eval_doc_free(eval_doc *d) {
    for (int32_t c = 0; c < d->n_choices; c++) free(d->choices[c]);
    free(d->choices);
    free(d->text);
    free(d->continuation);
    free(d->target);
    memset(d, 0, sizeof *d);
}

int eval_doc_render(const eval_task *t, const cJSON *doc, int64_t index, eval_doc *d) {
    memset(d, 0, sizeof *d);
    if (t->lm_eval) {
        if (lm_doc_render(t, doc, index, d) == AS_OK) return AS_OK;
        eval_doc_free(d);
        return AS_FAIL;
    }
    char what[512], w[600];
    snprintf(what, sizeof what, "%s: item %lld", t->path ? t->path : t->name, (long long)index);
#define KEY(k) (snprintf(w, sizeof w, "%s: %s", what, k), w)
    if (t->doc_to_text && !(d->text = eval_render(t->doc_to_text, doc, KEY("doc_to_text")))) goto fail;
    if (t->kind == EVAL_TASK_GENERATE_UNTIL || t->kind == EVAL_TASK_LOGLIKELIHOOD || t->kind == EVAL_TASK_LOGLIKELIHOOD_ROLLING) {
        if (!(d->target = eval_render(t->doc_to_target, doc, KEY(t->doc_to_target == t->gold ? "gold" : "doc_to_target")))) goto fail;
        return AS_OK;
    }
    if (t->choices) {
        if (render_list(t->choices, doc, KEY("choices"), &d->choices, &d->n_choices) ||
            render_int(t->gold, doc, KEY("gold"), &d->gold))
            goto fail;
    } else if (t->true_choices) {
        if (render_list(t->true_choices, doc, KEY("true_choices"), &d->choices, &d->n_choices)) goto fail;
        d->n_true = d->n_choices;
        if (render_list(t->false_choices, doc, KEY("false_choices"), &d->choices, &d->n_choices)) goto fail;
        if (d->n_true == 0 || d->n_true == d->n_choices) {
            as_error("%s: needs at least one true and one false choice", what);
            goto fail;
        }
        d->gold = 0;
    } else {
        const cJSON *tpl = cJSON_CreateStringReference(t->contexts);
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, (cJSON *)tpl);
        int rc = render_list(arr, doc, KEY("contexts"), &d->choices, &d->n_choices);
        cJSON_Delete(arr);
        if (rc || render_int(t->gold, doc, KEY("gold"), &d->gold)) goto fail;
        d->contexts = d->choices;
        if (!(d->continuation = eval_render(t->continuation, doc, KEY("continuation")))) goto fail;
    }
#undef KEY
    if (d->n_choices < 2) { as_error("%s: needs at least two choices, has %d", what, d->n_choices); goto fail; }
    if (d->gold >= d->n_choices) { as_error("%s: gold %d out of range (%d choices)", what, d->gold, d->n_choices); goto fail; }
    return AS_OK;
fail:
    eval_doc_free(d);
    return AS_FAIL;
}

char *eval_doc_example(const eval_task *t, const eval_doc *d) {
    sbuf b = {0};
    sb_add(&b, "", 0);
    if (t->kind == EVAL_TASK_GENERATE_UNTIL || t->kind == EVAL_TASK_LOGLIKELIHOOD) {
        sb_adds(&b, d->text), sb_adds(&b, t->target_delimiter), sb_adds(&b, d->target);
    } else if (d->contexts) {
        sb_adds(&b, d->contexts[d->gold]), sb_adds(&b, t->target_delimiter), sb_adds(&b, d->continuation);
    } else {
        sb_adds(&b, d->text), sb_adds(&b, t->target_delimiter), sb_adds(&b, d->choices[d->gold]);
    }
    return b.p;
}

int32_t eval_fewshot_pick(as_rng *rng, int64_t n_pool, int32_t k, bool first_n, int64_t exclude, int64_t *out) {
    int32_t n = 0;
    if (k <= 0 || n_pool <= 0) return 0;
    if (first_n) {
        for (int64_t i = 0; i < n_pool && n < k; i++)
            if (i != exclude) out[n++] = i;
        return n;
    }
    // Draw k (+1 when the item is in the pool) distinct indices, then drop the
    // item itself and keep the first k: lm-eval's sample(n + 1) rule.
    int64_t want = AS_MIN((int64_t)k + (exclude >= 0), n_pool);
    int64_t drawn[want > 0 ? want : 1];
    int64_t nd = 0;
    while (nd < want) {
        int64_t x = (int64_t)as_rng_below(rng, (uint64_t)n_pool);
        bool dup = false;
        for (int64_t j = 0; j < nd; j++) dup |= drawn[j] == x;
        if (!dup) drawn[nd++] = x;
    }
    for (int64_t j = 0; j < nd && n < k; j++)
        if (drawn[j] != exclude) out[n++] = drawn[j];
    return n;
}

// ---- data ----

char *eval_task_path(const eval_task *t, const char *data_dir, const char *rel) {
    char *p;
    if (rel[0] == '/') return as_strdup(rel);
    if (t->dir) {
        p = as_malloc(strlen(t->dir) + strlen(rel) + 2);
        sprintf(p, "%s/%s", t->dir, rel);
        // A {subject} pattern: its folder must exist.
        char *probe = as_strdup(p), *slash = strstr(probe, "{subject}") ? strrchr(probe, '/') : NULL;
        if (slash) *slash = 0;
        bool found = access(probe, R_OK) == 0;
        free(probe);
        if (found) return p;
        free(p);
    }
    p = as_malloc(strlen(data_dir) + strlen(rel) + 2);
    sprintf(p, "%s/%s", data_dir, rel);
    return p;
}

// The first of `alts` that exists, resolved; else the first resolved.
static char *first_existing(const eval_task *t, const char *data_dir, const cJSON *alts) {
    const cJSON *e;
    cJSON_ArrayForEach(e, alts) {
        char *p = eval_task_path(t, data_dir, e->valuestring);
        if (access(p, R_OK) == 0) return p;
        free(p);
    }
    return NULL;
}

char *eval_task_data_path(const eval_task *t, const char *data_dir) {
    char *p = t->data_alts ? first_existing(t, data_dir, t->data_alts) : NULL;
    return p ? p : eval_task_path(t, data_dir, t->data);
}

char *eval_task_fewshot_path(const eval_task *t, const char *data_dir) {
    if (!t->fewshot_data) return NULL;
    char *p = t->fewshot_alts ? first_existing(t, data_dir, t->fewshot_alts) : NULL;
    return p ? p : eval_task_path(t, data_dir, t->fewshot_data);
}

// "a, b or c" of a list of file names.
static char *list_files(const cJSON *alts) {
    sbuf b = {0};
    sb_add(&b, "", 0);
    const int n = cJSON_GetArraySize(alts);
    for (int i = 0; i < n; i++) {
        if (i) sb_adds(&b, i == n - 1 ? " or " : ", ");
        sb_adds(&b, cJSON_GetArrayItem(alts, i)->valuestring);
    }
    return b.p;
}

int eval_task_check_data(const eval_task *t, const char *data_dir, int32_t shots) {
    const bool with_shots = shots > 0 && t->kind != EVAL_TASK_MT_BENCH && t->kind != EVAL_TASK_LOGLIKELIHOOD_ROLLING;
    if (t->lm_eval) {
        // A split lm-eval would download is looked for as local files.
        for (int i = 0; i < 2; i++) {
            const cJSON *alts = i ? t->fewshot_alts : t->data_alts;
            if (i && (!with_shots || !strcmp(t->fewshot_split, t->eval_split))) break;
            char *p = alts ? first_existing(t, data_dir, alts) : NULL;
            if (p) { free(p); continue; }
            const char *split = i ? t->fewshot_split : t->eval_split;
            if (!alts || !cJSON_GetArraySize(alts))
                return as_error("%s: dataset_kwargs.data_files: no file for the %s split '%s'%s", t->path, i ? "few-shot" : "evaluated",
                                split, i ? " (give it, or run with --shots 0)" : "");
            char *files = list_files(alts);
            as_error("%s: %s split '%s': no local file (looked for %s, beside the task file in %s and under the data folder %s)%s",
                     t->path, i ? "few-shot" : "evaluated", split, files, t->dir ? t->dir : ".", data_dir,
                     i ? "; give the split, or run with --shots 0" : "");
            free(files);
            return AS_FAIL;
        }
        return AS_OK;
    }
    for (int i = 0; i < 2; i++) {
        if (i && (!with_shots || !t->fewshot_data)) break;
        char *p = i ? eval_task_fewshot_path(t, data_dir) : eval_task_data_path(t, data_dir);
        char *slash = strstr(p, "{subject}") ? strrchr(p, '/') : NULL;
        if (slash) *slash = 0;
        int rc = access(p, R_OK) == 0 ? AS_OK : as_error("%s: %s: %s not found", t->path, i ? "fewshot_data" : "data", p);
        free(p);
        if (rc != AS_OK) return rc;
    }
    return AS_OK;
}

cJSON *eval_truthfulqa_split(const char *cell) {
    cJSON *arr = cJSON_CreateArray();
    for (const char *s = cell;;) {
        const char *semi = strchr(s, ';'), *e = semi ? semi : s + strlen(s);
        size_t n = (size_t)(e - s);
        const char *q = s;
        trim_span(&q, &n);
        if (n) {
            char *a = as_malloc(n + 2);
            memcpy(a, q, n);
            a[n] = 0;
            if (a[n - 1] != '.') a[n] = '.', a[n + 1] = 0;
            cJSON_AddItemToArray(arr, cJSON_CreateString(a));
            free(a);
        }
        if (!semi) break;
        s = semi + 1;
    }
    return arr;
}

// JSON Lines (util/jsonl.h): every line's object appended to docs.
static int read_jsonl(const char *path, cJSON *docs) {
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    const int rc = as_jsonl_read_all(&r, docs);
    as_jsonl_close(&r);
    return rc;
}

// A file that is one JSON array rather than JSON Lines: its first character
// that is not white space is '['.
static bool is_json_array(const as_jsonl *r) {
    const char *p = r->text;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return *p == '[';
}

static int read_csv(const eval_task *t, const char *path, cJSON *docs) {
    csv_table tab;
    if (csv_read_file(path, &tab) != AS_OK) return AS_FAIL;
    if (t->split_lists) {
        const cJSON *e;
        cJSON_ArrayForEach(e, t->split_lists) if (csv_column(&tab, e->string) < 0) {
            as_error("%s: split_lists: column '%s' is not in the header", path, e->string);
            csv_free(&tab);
            return AS_FAIL;
        }
    }
    for (int64_t r = 0; r < tab.n_rows; r++) {
        cJSON *o = cJSON_CreateObject();
        for (int32_t c = 0; c < tab.n_cols; c++) {
            const char *cell = csv_cell(&tab, r, c);
            const cJSON *sep = t->split_lists ? cJSON_GetObjectItemCaseSensitive(t->split_lists, tab.header[c]) : NULL;
            if (sep) {
                // "a; b; c" -> ["a", "b", "c"], items trimmed, empty ones dropped.
                cJSON *arr = cJSON_CreateArray();
                const char *s = cell, *sp = sep->valuestring;
                size_t sl = strlen(sp);
                for (;;) {
                    const char *nx = strstr(s, sp);
                    const char *ee = nx ? nx : s + strlen(s);
                    size_t n = (size_t)(ee - s);
                    const char *q = s;
                    trim_span(&q, &n);
                    if (n) {
                        char *item = as_strndup(q, n);
                        cJSON_AddItemToArray(arr, cJSON_CreateString(item));
                        free(item);
                    }
                    if (!nx) break;
                    s = nx + sl;
                }
                cJSON_AddItemToObject(o, tab.header[c], arr);
            } else {
                cJSON_AddItemToObject(o, tab.header[c], cJSON_CreateString(cell));
            }
        }
        cJSON_AddItemToArray(docs, o);
    }
    csv_free(&tab);
    return AS_OK;
}

// lm-eval's hellaswag preprocess(): strip, " [title]" -> ". ", drop [...] tags, "  " -> " ".
static char *hellaswag_preprocess(const char *s) {
    sbuf b = {0};
    sb_add(&b, "", 0);
    size_t n = strlen(s);
    trim_span(&s, &n);
    for (size_t i = 0; i < n;) {
        if (n - i >= 8 && !memcmp(s + i, " [title]", 8)) { sb_adds(&b, ". "); i += 8; continue; }
        if (s[i] == '[') {
            const char *close = memchr(s + i, ']', n - i);
            if (close) { i = (size_t)(close - s) + 1; continue; }
        }
        sb_add(&b, s + i, 1);
        i++;
    }
    // replace("  ", " ") replaces non-overlapping pairs once, left to right.
    sbuf c = {0};
    sb_add(&c, "", 0);
    for (size_t i = 0; i < b.n;) {
        if (i + 1 < b.n && b.p[i] == ' ' && b.p[i + 1] == ' ') { sb_add(&c, " ", 1); i += 2; }
        else { sb_add(&c, b.p + i, 1); i++; }
    }
    free(b.p);
    return c.p;
}

// The text layout: "activity_label: context", the gold index, four endings.
static int read_hellaswag(const char *path, cJSON *docs) {
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len) != AS_OK) return AS_FAIL;
    char *lines[6];
    int nl = 0;
    int64_t line = 0, item_line = 1;
    int rc = AS_OK;
    char *p = text, *end = text + len;
    while (p < end) {
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        *e = 0;
        if (e > p && e[-1] == '\r') e[-1] = 0;
        line++;
        if (nl == 0) item_line = line;
        lines[nl++] = p;
        p = e + 1;
        if (nl == 6) {
            nl = 0;
            char *endp;
            long gold = strtol(lines[1], &endp, 10);
            if (endp == lines[1] || *endp || gold < 0 || gold > 3) {
                rc = as_error("%s:%lld: expected the gold index 0-3, got '%s'", path, (long long)item_line + 1, lines[1]);
                break;
            }
            if (!strchr(lines[0], ':')) {
                rc = as_error("%s:%lld: expected 'activity_label: context'", path, (long long)item_line);
                break;
            }
            cJSON *o = cJSON_CreateObject();
            char *q = hellaswag_preprocess(lines[0]);
            // lm-eval writes ctx_a + " " + ctx_b.capitalize(); this layout keeps
            // ctx_b lower-case at the end of the context, after the last sentence
            // of ctx_a: capitalise the first letter of that last fragment.
            char *colon = strchr(q, ':'), *frag = colon ? colon + 1 : q;
            for (char *p2 = strstr(frag, ". "); p2; p2 = strstr(p2 + 1, ". ")) frag = p2 + 2;
            while (*frag == ' ') frag++;
            if (*frag >= 'a' && *frag <= 'z') *frag = (char)(*frag - 'a' + 'A');
            cJSON_AddStringToObject(o, "query", q);
            free(q);
            cJSON *ch = cJSON_AddArrayToObject(o, "choices");
            for (int k = 2; k < 6; k++) {
                char *c = hellaswag_preprocess(lines[k]);
                cJSON_AddItemToArray(ch, cJSON_CreateString(c));
                free(c);
            }
            cJSON_AddNumberToObject(o, "gold", (double)gold);
            cJSON_AddItemToArray(docs, o);
        }
    }
    if (rc == AS_OK && nl != 0 && !(nl == 1 && !*lines[0]))
        rc = as_error("%s:%lld: incomplete item (an item is 6 lines)", path, (long long)item_line);
    free(text);
    return rc;
}

// TruthfulQA in either layout, as {question, mc1_true, mc1_false, mc2_true,
// mc2_false}: the multiple-choice JSON (JSONL, or one JSON array) lm-eval's
// data set holds, {question, mc1_targets: {choices, labels}, mc2_targets:
// {choices, labels}} (label 1 true, 0 false); or the original TruthfulQA.csv,
// its answer cells split as TruthfulQA's own code splits them (mc1: the best
// answer against the incorrect ones; mc2: the correct against the incorrect).
static int split_targets(const cJSON *tg, const char *path, int64_t item, const char *key, cJSON *o, const char *pre) {
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(tg, "choices"), *lb = cJSON_GetObjectItemCaseSensitive(tg, "labels");
    if (cJSON_IsObject(tg) && !ch && !lb) {
        // The TruthfulQA repository's mc_task.json: {answer: label, ...}.
        char k[32];
        snprintf(k, sizeof k, "%s_true", pre);
        cJSON *tr = cJSON_AddArrayToObject(o, k);
        snprintf(k, sizeof k, "%s_false", pre);
        cJSON *fa = cJSON_AddArrayToObject(o, k);
        const cJSON *e;
        cJSON_ArrayForEach(e, tg) {
            if (!cJSON_IsNumber(e) || (e->valuedouble != 0 && e->valuedouble != 1))
                return as_error("%s: item %lld: %s: '%s': expected label 0 or 1", path, (long long)item, key, e->string);
            cJSON_AddItemToArray(e->valuedouble == 1 ? tr : fa, cJSON_CreateString(e->string));
        }
        return AS_OK;
    }
    if (!cJSON_IsArray(ch) || !cJSON_IsArray(lb) || cJSON_GetArraySize(ch) != cJSON_GetArraySize(lb))
        return as_error("%s: item %lld: %s: expected {choices: [...], labels: [...]} of one length", path, (long long)item, key);
    char k[32];
    snprintf(k, sizeof k, "%s_true", pre);
    cJSON *tr = cJSON_AddArrayToObject(o, k);
    snprintf(k, sizeof k, "%s_false", pre);
    cJSON *fa = cJSON_AddArrayToObject(o, k);
    for (int i = 0; i < cJSON_GetArraySize(ch); i++) {
        const cJSON *c = cJSON_GetArrayItem(ch, i), *l = cJSON_GetArrayItem(lb, i);
        if (!cJSON_IsString(c) || !cJSON_IsNumber(l) || (l->valuedouble != 0 && l->valuedouble != 1))
            return as_error("%s: item %lld: %s: choice %d: expected a string with label 0 or 1", path, (long long)item, key, i);
        cJSON_AddItemToArray(l->valuedouble == 1 ? tr : fa, cJSON_CreateString(c->valuestring));
    }
    return AS_OK;
}

static int read_truthfulqa(const char *path, cJSON *docs) {
    const size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".csv")) {
        csv_table tab;
        if (csv_read_file(path, &tab) != AS_OK) return AS_FAIL;
        const int32_t cq = csv_column(&tab, "Question"), cb = csv_column(&tab, "Best Answer"),
                      cc = csv_column(&tab, "Correct Answers"), ci = csv_column(&tab, "Incorrect Answers");
        if (cq < 0 || cb < 0 || cc < 0 || ci < 0) {
            csv_free(&tab);
            return as_error("%s: expected TruthfulQA.csv's columns Question, Best Answer, Correct Answers, Incorrect Answers", path);
        }
        for (int64_t r = 0; r < tab.n_rows; r++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "question", csv_cell(&tab, r, cq));
            cJSON *best = eval_truthfulqa_split(csv_cell(&tab, r, cb)); // one answer, closed with "."
            cJSON_AddItemToObject(o, "mc1_true", best);
            cJSON_AddItemToObject(o, "mc1_false", eval_truthfulqa_split(csv_cell(&tab, r, ci)));
            cJSON_AddItemToObject(o, "mc2_true", eval_truthfulqa_split(csv_cell(&tab, r, cc)));
            cJSON_AddItemToObject(o, "mc2_false", eval_truthfulqa_split(csv_cell(&tab, r, ci)));
            cJSON_AddItemToArray(docs, o);
        }
        csv_free(&tab);
        return AS_OK;
    }
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    cJSON *raw = is_json_array(&r) ? cJSON_ParseWithLength(r.text, r.size) : NULL;
    int rc = AS_OK;
    if (!raw) raw = cJSON_CreateArray(), rc = as_jsonl_read_all(&r, raw);
    as_jsonl_close(&r);
    int64_t i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, raw) {
        if (rc != AS_OK) break;
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(d, "question");
        if (!cJSON_IsString(q)) { rc = as_error("%s: item %lld: question: missing or not a string", path, (long long)i); break; }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "question", q->valuestring);
        rc = split_targets(cJSON_GetObjectItemCaseSensitive(d, "mc1_targets"), path, i, "mc1_targets", o, "mc1");
        if (rc == AS_OK) rc = split_targets(cJSON_GetObjectItemCaseSensitive(d, "mc2_targets"), path, i, "mc2_targets", o, "mc2");
        cJSON_AddItemToArray(docs, o);
        i++;
    }
    cJSON_Delete(raw);
    return rc;
}

// A CSV cell's type as pandas infers a column's (what Hugging Face's csv
// loader does): 0 int, 1 float, 2 bool, 3 text.  Empty cells are None.
static int csv_cell_kind(const char *s) {
    if (!strcmp(s, "True") || !strcmp(s, "true") || !strcmp(s, "TRUE") || !strcmp(s, "False") || !strcmp(s, "false") ||
        !strcmp(s, "FALSE"))
        return 2;
    char *end;
    errno = 0;
    (void)strtoll(s, &end, 10);
    if (end != s && !*end && !errno && !isspace((unsigned char)*s)) return 0;
    if (strpbrk(s, "xXpP")) return 3;
    (void)strtod(s, &end);
    if (end != s && !*end && !isspace((unsigned char)*s)) return 1;
    return 3;
}

static int read_csv_typed(const char *path, cJSON *docs) {
    csv_table tab;
    if (csv_read_file(path, &tab) != AS_OK) return AS_FAIL;
    int *kind = as_calloc((size_t)AS_MAX(tab.n_cols, 1), sizeof *kind);
    for (int32_t c = 0; c < tab.n_cols; c++) {
        int k = -1;
        for (int64_t r = 0; r < tab.n_rows; r++) {
            const char *cell = csv_cell(&tab, r, c);
            if (!*cell) continue;
            const int x = csv_cell_kind(cell);
            k = k < 0 ? x : (k == x ? k : (k <= 1 && x <= 1) ? 1 : 3);
        }
        kind[c] = k < 0 ? 3 : k;
    }
    for (int64_t r = 0; r < tab.n_rows; r++) {
        cJSON *o = cJSON_CreateObject();
        for (int32_t c = 0; c < tab.n_cols; c++) {
            const char *cell = csv_cell(&tab, r, c);
            cJSON *v = !*cell ? cJSON_CreateNull()
                       : kind[c] <= 1 ? cJSON_CreateNumber(strtod(cell, NULL))
                       : kind[c] == 2 ? cJSON_CreateBool(cell[0] == 'T' || cell[0] == 't')
                                      : cJSON_CreateString(cell);
            cJSON_AddItemToObject(o, tab.header[c], v);
        }
        cJSON_AddItemToArray(docs, o);
    }
    free(kind);
    csv_free(&tab);
    return AS_OK;
}

// lm-eval's local data as Hugging Face's loaders read it: .csv (typed as
// pandas types it), else JSON: an array of objects or JSON Lines.
static int read_auto(const char *path, cJSON *docs) {
    const size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".csv")) return read_csv_typed(path, docs);
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    if (!is_json_array(&r)) {
        const int rc = as_jsonl_read_all(&r, docs);
        as_jsonl_close(&r);
        return rc;
    }
    cJSON *arr = cJSON_ParseWithLength(r.text, r.size);
    as_jsonl_close(&r);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return as_error("%s: not a JSON array of objects (nor JSON Lines)", path);
    }
    int i = 0;
    while (arr->child) {
        cJSON *o = cJSON_DetachItemViaPointer(arr, arr->child);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o), cJSON_Delete(arr);
            return as_error("%s: item %d: not a JSON object", path, i);
        }
        cJSON_AddItemToArray(docs, o);
        i++;
    }
    cJSON_Delete(arr);
    return AS_OK;
}

static int read_docs(const eval_task *t, const char *path, cJSON **out) {
    cJSON *docs = cJSON_CreateArray();
    int rc = !strcmp(t->format, "auto") ? read_auto(path, docs)
             : !strcmp(t->format, "truthfulqa") ? read_truthfulqa(path, docs)
             : !strcmp(t->format, "csv") ? read_csv(t, path, docs)
             : !strcmp(t->format, "hellaswag") ? read_hellaswag(path, docs)
                                                : read_jsonl(path, docs);
    if (rc == AS_OK && cJSON_GetArraySize(docs) == 0) rc = as_error("%s: no items", path);
    if (rc != AS_OK) { cJSON_Delete(docs); return AS_FAIL; }
    *out = docs;
    return AS_OK;
}

static char *subst_subject(const char *pat, const char *subject) {
    const char *at = strstr(pat, "{subject}");
    if (!at) return as_strdup(pat);
    char *s = as_malloc(strlen(pat) + strlen(subject) + 1);
    sprintf(s, "%.*s%s%s", (int)(at - pat), pat, subject, at + 9);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Subjects: the names that match the data pattern's file part "<prefix>{subject}<suffix>".
static int list_subjects(const char *pattern_path, char ***out, int32_t *n) {
    *out = NULL, *n = 0;
    const char *slash = strrchr(pattern_path, '/');
    char *dir = slash ? as_strndup(pattern_path, (size_t)(slash - pattern_path)) : as_strdup(".");
    const char *file = slash ? slash + 1 : pattern_path;
    const char *at = strstr(file, "{subject}");
    if (!at) { free(dir); return as_error("%s: {subject} must be in the file name", pattern_path); }
    size_t pre = (size_t)(at - file);
    const char *suf = at + 9;
    size_t sl = strlen(suf);
    DIR *d = opendir(dir);
    if (!d) { as_error("%s: cannot list the folder: %s", dir, strerror(errno)); free(dir); return AS_FAIL; }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t L = strlen(e->d_name);
        if (L > pre + sl && !strncmp(e->d_name, file, pre) && !strcmp(e->d_name + L - sl, suf)) {
            *out = as_realloc(*out, (size_t)(*n + 1) * sizeof **out);
            (*out)[(*n)++] = as_strndup(e->d_name + pre, L - pre - sl);
        }
    }
    closedir(d);
    if (*n == 0) { as_error("%s: no file matches %s", dir, file); free(dir); return AS_FAIL; }
    free(dir);
    qsort(*out, (size_t)*n, sizeof **out, cmp_str);
    return AS_OK;
}

static void add_subject_field(cJSON *docs, const char *subject) {
    char *s = as_strdup(subject);
    for (char *p = s; *p; p++) if (*p == '_') *p = ' ';
    cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON_DeleteItemFromObjectCaseSensitive(d, "subject");
        cJSON_AddStringToObject(d, "subject", s);
    }
    free(s);
}

void eval_subsets_free(eval_subset *s, int32_t n) {
    for (int32_t i = 0; s && i < n; i++) {
        free(s[i].name);
        cJSON_Delete(s[i].docs);
        cJSON_Delete(s[i].fewshot);
    }
    free(s);
}

int eval_task_read_data(const eval_task *t, const char *data_dir, eval_subset **subsets, int32_t *n) {
    *subsets = NULL, *n = 0;
    char *data = eval_task_data_path(t, data_dir);
    char *few = eval_task_fewshot_path(t, data_dir);
    char **subjects = NULL;
    int32_t ns = 0;
    int rc = AS_OK;
    bool per_subject = strstr(data, "{subject}") != NULL;
    if (per_subject) rc = list_subjects(data, &subjects, &ns);
    else subjects = as_malloc(sizeof *subjects), subjects[0] = as_strdup(t->name), ns = 1;
    eval_subset *s = as_calloc((size_t)AS_MAX(ns, 1), sizeof *s);
    for (int32_t i = 0; rc == AS_OK && i < ns; i++) {
        s[i].name = as_strdup(subjects[i]);
        char *p = per_subject ? subst_subject(data, subjects[i]) : as_strdup(data);
        rc = read_docs(t, p, &s[i].docs);
        free(p);
        if (rc == AS_OK && few) {
            p = per_subject ? subst_subject(few, subjects[i]) : as_strdup(few);
            rc = read_docs(t, p, &s[i].fewshot);
            free(p);
        }
        if (rc == AS_OK && per_subject) {
            add_subject_field(s[i].docs, subjects[i]);
            if (s[i].fewshot) add_subject_field(s[i].fewshot, subjects[i]);
        }
    }
    for (int32_t i = 0; i < ns; i++) free(subjects[i]);
    free(subjects);
    free(data);
    free(few);
    if (rc != AS_OK) { eval_subsets_free(s, ns); return AS_FAIL; }
    *subsets = s, *n = ns;
    return AS_OK;
}
