// Task files (YAML) and the documents they describe.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "eval/csv.h"
#include "eval/eval_internal.h"
#include "eval/yaml_json.h"
#include "util/common.h"

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
    cJSON_Delete(t->root);
}

int eval_task_parse(const char *yaml, size_t len, const char *name, eval_task *t) {
    memset(t, 0, sizeof *t);
    if (yaml_to_json(yaml, len, name, &t->root) != AS_OK) return AS_FAIL;
    const cJSON *r = t->root;
    int rc = AS_FAIL;
    if (!cJSON_IsObject(r)) { as_error("%s: expected a mapping of task fields", name); goto fail; }
    // lm-eval's own task keys: one line saying what this version runs instead.
    static const char *const LM_EVAL_KEYS[] = {
        "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split",
        "fewshot_split", "doc_to_choice", "include", "tag", "task_alias", "group", "should_decontaminate",
        "doc_to_decontamination_query", "generation_kwargs", "repeats", "fewshot_config", "metadata", "process_docs",
        "process_results", "use_prompt", "doc_to_image", "gen_prefix", "unsafe_code"};
    const cJSON *k;
    cJSON_ArrayForEach(k, r) {
        bool known = false, lm_eval = false;
        for (size_t i = 0; i < AS_ARRAY_LEN(KNOWN_KEYS); i++) known |= !strcmp(k->string, KNOWN_KEYS[i]);
        for (size_t i = 0; i < AS_ARRAY_LEN(LM_EVAL_KEYS); i++) lm_eval |= !strcmp(k->string, LM_EVAL_KEYS[i]);
        if (lm_eval) {
            as_error("%s: %s: an lm-evaluation-harness key this version does not read; write the task in alphaspin's "
                     "fields (data:, choices:, gold:; tasks/README.md)", name, k->string);
            goto fail;
        }
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
    if (!t->name || !*t->name) { as_error("%s: task: missing (the task's name)", name); goto fail; }
    for (const char *p = t->name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
            as_error("%s: task: '%s' may hold only letters, digits, '_', '-', '.'", name, t->name);
            goto fail;
        }
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
    if (!t->primary_metric)
        t->primary_metric = t->kind == EVAL_TASK_MT_BENCH ? "score"
                            : (t->metrics & EVAL_METRIC_EXACT_MATCH) ? "exact_match"
                            : (t->metrics & EVAL_METRIC_ACC_NORM) ? "acc_norm"
                            : (t->metrics & EVAL_METRIC_ACC) ? "acc"
                            : (t->metrics & EVAL_METRIC_MC2) ? "acc"
                            : (t->metrics & EVAL_METRIC_PERPLEXITY) ? "perplexity"
                            : (t->metrics & EVAL_METRIC_WORD_PERPLEXITY) ? "word_perplexity"
                            : (t->metrics & EVAL_METRIC_BYTE_PERPLEXITY) ? "byte_perplexity" : "bits_per_byte";
    return AS_OK;
fail:
    task_release(t);
    memset(t, 0, sizeof *t);
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

// Scalar value as text: strings as they are, integral numbers without a fraction.
static char *value_text(const cJSON *v) {
    if (cJSON_IsString(v)) return as_strdup(v->valuestring);
    if (cJSON_IsNumber(v)) {
        char buf[64];
        double x = v->valuedouble;
        if (x == (double)(int64_t)x && x > -1e15 && x < 1e15) snprintf(buf, sizeof buf, "%lld", (long long)(int64_t)x);
        else snprintf(buf, sizeof buf, "%.17g", x);
        return as_strdup(buf);
    }
    if (cJSON_IsBool(v)) return as_strdup(cJSON_IsTrue(v) ? "True" : "False");
    return NULL;
}

// Resolves "name", "name[i]"; returns the JSON value or NULL.
static const cJSON *lookup(const cJSON *doc, const char *expr, size_t n) {
    const char *br = memchr(expr, '[', n);
    char *key = as_strndup(expr, br ? (size_t)(br - expr) : n);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);
    free(key);
    if (!v || !br) return v;
    char *end;
    long i = strtol(br + 1, &end, 10);
    if (end == br + 1 || *end != ']' || (size_t)(end - expr) != n - 1 || !cJSON_IsArray(v) || i < 0 ||
        i >= cJSON_GetArraySize(v))
        return NULL;
    return cJSON_GetArrayItem(v, (int)i);
}

static void trim_span(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

// Parses the inside of {{ }}: expression and filter.
static int parse_tag(const char *in, size_t n, const char **expr, size_t *en, bool *trim) {
    trim_span(&in, &n);
    const char *bar = memchr(in, '|', n);
    *trim = false;
    *expr = in;
    *en = bar ? (size_t)(bar - in) : n;
    trim_span(expr, en);
    if (bar) {
        const char *f = bar + 1;
        size_t fn = n - (size_t)(f - in);
        trim_span(&f, &fn);
        if (fn == 4 && !memcmp(f, "trim", 4)) *trim = true;
        else return AS_FAIL;
    }
    return *en ? AS_OK : AS_FAIL;
}

char *eval_render(const char *tpl, const cJSON *doc, const char *what) {
    sbuf b = {0};
    sb_add(&b, "", 0);
    const char *p = tpl;
    for (;;) {
        const char *open = strstr(p, "{{");
        if (!open) { sb_adds(&b, p); break; }
        sb_add(&b, p, (size_t)(open - p));
        const char *close = strstr(open + 2, "}}");
        if (!close) { free(b.p); as_error("%s: '{{' without '}}' in template", what); return NULL; }
        const char *expr;
        size_t en;
        bool trim;
        if (parse_tag(open + 2, (size_t)(close - open - 2), &expr, &en, &trim) != AS_OK) {
            free(b.p);
            as_error("%s: bad template tag '%.*s' (use {{field}}, {{field[i]}} or {{field|trim}})", what,
                     (int)(close - open - 2), open + 2);
            return NULL;
        }
        const cJSON *v = lookup(doc, expr, en);
        char *s = v ? value_text(v) : NULL;
        if (!s) {
            free(b.p);
            as_error("%s: field '%.*s' missing or not a scalar", what, (int)en, expr);
            return NULL;
        }
        const char *q = s;
        size_t qn = strlen(s);
        if (trim) trim_span(&q, &qn);
        sb_add(&b, q, qn);
        free(s);
        p = close + 2;
    }
    return b.p;
}

// A list entry: "{{field}}" naming an array expands to its elements.
static int render_list(const cJSON *tpls, const cJSON *doc, const char *what, char ***out, int32_t *n) {
    const cJSON *e;
    cJSON_ArrayForEach(e, tpls) {
        const char *s = e->valuestring;
        size_t len = strlen(s);
        const char *expr;
        size_t en;
        bool trim;
        const cJSON *arr = NULL;
        if (len >= 4 && !strncmp(s, "{{", 2) && !strcmp(s + len - 2, "}}") && !strstr(s + 2, "{{") &&
            parse_tag(s + 2, len - 4, &expr, &en, &trim) == AS_OK) {
            const cJSON *v = lookup(doc, expr, en);
            if (cJSON_IsArray(v)) arr = v;
        }
        if (arr) {
            const cJSON *x;
            cJSON_ArrayForEach(x, arr) {
                char *t = value_text(x);
                if (!t) return as_error("%s: list '%s' holds a non-scalar", what, s);
                *out = as_realloc(*out, (size_t)(*n + 1) * sizeof **out);
                (*out)[(*n)++] = t;
            }
        } else {
            char *t = eval_render(s, doc, what);
            if (!t) return AS_FAIL;
            *out = as_realloc(*out, (size_t)(*n + 1) * sizeof **out);
            (*out)[(*n)++] = t;
        }
    }
    return AS_OK;
}

static int render_int(const char *tpl, const cJSON *doc, const char *what, int32_t *out) {
    char *s = eval_render(tpl, doc, what);
    if (!s) return AS_FAIL;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    int rc = (end == s || *end || errno || x < 0 || x > INT32_MAX) ? as_error("%s: gold: '%s' is not an index", what, s) : AS_OK;
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
    char what[512];
    snprintf(what, sizeof what, "%s: item %lld", t->path ? t->path : t->name, (long long)index);
    if (t->doc_to_text && !(d->text = eval_render(t->doc_to_text, doc, what))) goto fail;
    if (t->kind == EVAL_TASK_GENERATE_UNTIL || t->kind == EVAL_TASK_LOGLIKELIHOOD || t->kind == EVAL_TASK_LOGLIKELIHOOD_ROLLING) {
        if (!(d->target = eval_render(t->doc_to_target, doc, what))) goto fail;
        return AS_OK;
    }
    if (t->choices) {
        if (render_list(t->choices, doc, what, &d->choices, &d->n_choices) || render_int(t->gold, doc, what, &d->gold)) goto fail;
    } else if (t->true_choices) {
        if (render_list(t->true_choices, doc, what, &d->choices, &d->n_choices)) goto fail;
        d->n_true = d->n_choices;
        if (render_list(t->false_choices, doc, what, &d->choices, &d->n_choices)) goto fail;
        if (d->n_true == 0 || d->n_true == d->n_choices) {
            as_error("%s: needs at least one true and one false choice", what);
            goto fail;
        }
        d->gold = 0;
    } else {
        const cJSON *tpl = cJSON_CreateStringReference(t->contexts);
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, (cJSON *)tpl);
        int rc = render_list(arr, doc, what, &d->choices, &d->n_choices);
        cJSON_Delete(arr);
        if (rc || render_int(t->gold, doc, what, &d->gold)) goto fail;
        d->contexts = d->choices;
        if (!(d->continuation = eval_render(t->continuation, doc, what))) goto fail;
    }
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

char *eval_task_data_path(const eval_task *t, const char *data_dir) {
    const cJSON *e;
    if (t->data_alts)
        cJSON_ArrayForEach(e, t->data_alts) {
            char *p = eval_task_path(t, data_dir, e->valuestring);
            if (access(p, R_OK) == 0) return p;
            free(p);
        }
    return eval_task_path(t, data_dir, t->data);
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

static int read_jsonl(const char *path, cJSON *docs) {
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len) != AS_OK) return AS_FAIL;
    int64_t line = 0;
    char *p = text, *end = text + len;
    int rc = AS_OK;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        line++;
        char *q = p;
        while (q < e && isspace((unsigned char)*q)) q++;
        if (q < e) {
            cJSON *o = cJSON_ParseWithLength(p, (size_t)(e - p));
            if (!cJSON_IsObject(o)) {
                cJSON_Delete(o);
                rc = as_error("%s:%lld: not a JSON object", path, (long long)line);
                break;
            }
            cJSON_AddItemToArray(docs, o);
        }
        p = e + 1;
    }
    free(text);
    return rc;
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
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len) != AS_OK) return AS_FAIL;
    cJSON *raw = cJSON_CreateArray();
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    cJSON *whole = *p == '[' ? cJSON_ParseWithLength(text, len) : NULL;
    int rc = AS_OK;
    if (whole) cJSON_Delete(raw), raw = whole;
    else {
        free(text);
        rc = read_jsonl(path, raw);
        text = NULL;
    }
    free(text);
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

static int read_docs(const eval_task *t, const char *path, cJSON **out) {
    cJSON *docs = cJSON_CreateArray();
    int rc = !strcmp(t->format, "truthfulqa") ? read_truthfulqa(path, docs)
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
    char *few = t->fewshot_data ? eval_task_path(t, data_dir, t->fewshot_data) : NULL;
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
