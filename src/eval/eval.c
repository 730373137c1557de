// eval_run: tasks -> documents -> prompts -> scores -> lm-eval shaped results.
#include "eval/eval.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dist/dist_generate.h"
#include "eval/eval_internal.h"
#include "eval/yaml_json.h"
#include "generate/generate.h"
#include "util/common.h"
#include "util/json.h"

#ifndef AS_EVAL_SOURCE_TASKS
#define AS_EVAL_SOURCE_TASKS "tasks"
#endif
#ifndef AS_EVAL_SOURCE_DATA
#define AS_EVAL_SOURCE_DATA "../shared/data"
#endif


eval_options eval_options_default(void) {
    return (eval_options){.tasks = "leaderboard", .shots = -1, .seed = 1234, .precision = KERNEL_PRECISION_F32,
                          .progress = false};
}

const char *eval_tasks_dir(void) {
    static char buf[PATH_MAX];
    const char *env = getenv("ALPHASPIN_TASKS");
    if (env && *env) return env;
    char exe[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            static const char *const rel[] = {"/../share/alphaspin/tasks", "/tasks"};
            for (size_t i = 0; i < AS_ARRAY_LEN(rel); i++) {
                char probe[PATH_MAX];
                if (snprintf(probe, sizeof probe, "%s%s/arc_easy.yaml", exe, rel[i]) < (int)sizeof probe &&
                    access(probe, R_OK) == 0) {
                    snprintf(buf, sizeof buf, "%s%s", exe, rel[i]);
                    return buf;
                }
            }
        }
    }
    return AS_EVAL_SOURCE_TASKS;
}

static const char *data_dir_of(const eval_options *o) {
    if (o->data_dir) return o->data_dir;
    const char *env = getenv("ALPHASPIN_DATA");
    return env && *env ? env : AS_EVAL_SOURCE_DATA;
}

// ---- progress ----

typedef struct progress {
    const char *task;
    double t0;
    int64_t total;
    bool on;
} progress;

static void progress_show(const progress *p, int64_t done, bool final) {
    if (!p->on) return;
    double el = as_time() - p->t0, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "\r%s: %lld/%lld items, %.2f items/s, elapsed %.0fs, ETA %.0fs   %s", p->task, (long long)done,
            (long long)p->total, rate, el, eta, final ? "\n" : "");
    fflush(stderr);
}

// ---- results ----

static void put_metric(cJSON *entry, const char *metric, const char *filter, double v, double se) {
    char key[96];
    snprintf(key, sizeof key, "%s,%s", metric, filter);
    cJSON_AddNumberToObject(entry, key, isfinite(v) ? v : 0);
    snprintf(key, sizeof key, "%s_stderr,%s", metric, filter);
    if (isfinite(se)) cJSON_AddNumberToObject(entry, key, se);
    else cJSON_AddStringToObject(entry, key, "N/A");
}

// How many shots the items of the task running now were actually given (a
// pool smaller than num_fewshot + 1 gives fewer): fewshot_prefix records,
// run_task resets and reports.  One task runs at a time.
static struct { int32_t min, max; int64_t items; } g_drawn;

static void add_config(cJSON *configs, const eval_task *t, const eval_options *o, int32_t shots, const char *data_dir) {
    cJSON *c = cJSON_AddObjectToObject(configs, t->name);
    cJSON_AddStringToObject(c, "task", t->name);
    cJSON_AddStringToObject(c, "task_file", t->path ? t->path : "");
    cJSON_AddStringToObject(c, "output_type", eval_task_kind_name(t->kind));
    // What ran: the data file as resolved (absolute as written, beside the
    // task file, or under the data folder), and the few-shot set-up only when
    // there were shots.
    char *data = eval_task_data_path(t, data_dir);
    cJSON_AddStringToObject(c, "data", data);
    free(data);
    cJSON_AddNumberToObject(c, "num_fewshot", shots);
    if (shots > 0 && t->kind != EVAL_TASK_MT_BENCH && t->kind != EVAL_TASK_LOGLIKELIHOOD_ROLLING) {
        char *few = eval_task_fewshot_path(t, data_dir);
        cJSON_AddStringToObject(c, "fewshot_split", few ? few : "the evaluated split, the item itself excluded");
        free(few);
        cJSON_AddStringToObject(c, "fewshot_sampler", t->fewshot_first_n ? "first_n" : "random");
        if (!t->fewshot_first_n) cJSON_AddNumberToObject(c, "fewshot_seed", (double)o->seed);
        if (g_drawn.items > 0 && g_drawn.min == g_drawn.max) cJSON_AddNumberToObject(c, "fewshot_drawn", g_drawn.min);
        else if (g_drawn.items > 0) {
            cJSON *d = cJSON_AddObjectToObject(c, "fewshot_drawn");
            cJSON_AddNumberToObject(d, "min", g_drawn.min);
            cJSON_AddNumberToObject(d, "max", g_drawn.max);
        }
        cJSON_AddStringToObject(c, "fewshot_delimiter", t->fewshot_delimiter);
    }
    if (t->description && *t->description) cJSON_AddStringToObject(c, "description", t->description);
    if (t->lm_eval) {
        // lm-eval's fields as the file gives them; a built-in function by its name.
        const struct { const char *key; const eval_lm_field *f; } F[] = {
            {"doc_to_text", &t->lm_text}, {"doc_to_target", &t->lm_target}, {"doc_to_choice", &t->lm_choice}};
        for (size_t i = 0; i < AS_ARRAY_LEN(F); i++) {
            if (!F[i].f->v) continue;
            const char *fn = yaml_function(F[i].f->v);
            if (fn) {
                char s[256];
                snprintf(s, sizeof s, "!function %s (alphaspin's built-in equivalent)", fn);
                cJSON_AddStringToObject(c, F[i].key, s);
            } else {
                cJSON_AddItemToObject(c, F[i].key, cJSON_Duplicate(F[i].f->v, true));
            }
        }
    } else {
        if (t->doc_to_text) cJSON_AddStringToObject(c, "doc_to_text", t->doc_to_text);
        if (t->doc_to_target) cJSON_AddStringToObject(c, "doc_to_target", t->doc_to_target);
    }
    if (t->kind == EVAL_TASK_MULTIPLE_CHOICE || t->kind == EVAL_TASK_GENERATE_UNTIL || (t->kind == EVAL_TASK_LOGLIKELIHOOD && shots > 0))
        cJSON_AddStringToObject(c, "target_delimiter", t->target_delimiter);
    cJSON *ml = cJSON_AddArrayToObject(c, "metric_list");
    static const struct { unsigned bit; const char *name; } names[] = {
        {EVAL_METRIC_ACC, "acc"}, {EVAL_METRIC_ACC_NORM, "acc_norm"}, {EVAL_METRIC_MC2, "acc (mc2)"},
        {EVAL_METRIC_EXACT_MATCH, "exact_match"}, {EVAL_METRIC_PERPLEXITY, "perplexity"},
        {EVAL_METRIC_WORD_PERPLEXITY, "word_perplexity"}, {EVAL_METRIC_BYTE_PERPLEXITY, "byte_perplexity"},
        {EVAL_METRIC_BITS_PER_BYTE, "bits_per_byte"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(names); i++)
        if (t->metrics & names[i].bit) cJSON_AddItemToArray(ml, cJSON_CreateString(names[i].name));
    cJSON_AddStringToObject(c, "primary_metric", t->primary_metric);
    cJSON_AddStringToObject(c, "precision", kernel_precision_name(o->precision));
    cJSON_AddNumberToObject(c, "limit", (double)o->limit);
    cJSON_AddNumberToObject(c, "offset", (double)o->offset);
    cJSON_AddStringToObject(c, "prompt_format_version", EVAL_PROMPT_FORMAT_VERSION);
}

// Few-shot prefix of one item: description + examples, each followed by the delimiter.
static char *fewshot_prefix(const eval_task *t, const cJSON *doc, char **examples, int64_t n_pool, int32_t shots, as_rng *rng,
                            int64_t exclude, const char *what) {
    char w[600];
    snprintf(w, sizeof w, "%s: description", what);
    char *desc = eval_render(t->description, doc, w);
    if (!desc) return NULL;
    size_t cap = strlen(desc) + 1;
    int64_t idx[shots > 0 ? shots : 1];
    int32_t k = eval_fewshot_pick(rng, n_pool, shots, t->fewshot_first_n, exclude, idx);
    g_drawn.min = g_drawn.items ? AS_MIN(g_drawn.min, k) : k;
    g_drawn.max = g_drawn.items ? AS_MAX(g_drawn.max, k) : k;
    g_drawn.items++;
    for (int32_t j = 0; j < k; j++) cap += strlen(examples[idx[j]]) + strlen(t->fewshot_delimiter);
    char *s = as_malloc(cap);
    char *p = s;
    p += sprintf(p, "%s", desc);
    for (int32_t j = 0; j < k; j++) p += sprintf(p, "%s%s", examples[idx[j]], t->fewshot_delimiter);
    free(desc);
    return s;
}

static int render_examples(const eval_task *t, const cJSON *pool, char ***out) {
    int64_t n = cJSON_GetArraySize(pool);
    char **ex = as_calloc((size_t)AS_MAX(n, 1), sizeof *ex);
    for (int64_t i = 0; i < n; i++) {
        eval_doc d;
        if (eval_doc_render(t, cJSON_GetArrayItem(pool, (int)i), i, &d) != AS_OK) {
            for (int64_t j = 0; j < i; j++) free(ex[j]);
            free(ex);
            return AS_FAIL;
        }
        ex[i] = eval_doc_example(t, &d);
        eval_doc_free(&d);
    }
    *out = ex;
    return AS_OK;
}

static void free_strs(char **s, int64_t n) {
    for (int64_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

// Items evaluated of a subset: [offset, offset + n).
static int64_t n_eval_items(const eval_subset *s, const eval_options *o) {
    const int64_t n = AS_MAX((int64_t)0, cJSON_GetArraySize(s->docs) - o->offset);
    return o->limit > 0 ? AS_MIN(n, o->limit) : n;
}

// The few-shot draws of the items before the offset, made and dropped, so the
// rng stands where a full run's stands at item `offset`.
static void skip_fewshot_draws(const eval_task *t, const eval_subset *sub, int64_t n_pool, int32_t shots, as_rng *rng, const eval_options *o) {
    const int64_t skip = AS_MIN(o->offset, (int64_t)cJSON_GetArraySize(sub->docs));
    int64_t idx[shots > 0 ? shots : 1];
    for (int64_t i = 0; i < skip && shots > 0; i++) eval_fewshot_pick(rng, n_pool, shots, t->fewshot_first_n, sub->fewshot ? -1 : i, idx);
}

// ---- lm-eval's sample log ----

// One line of lm-eval's samples_<task>.jsonl (EvaluationTracker's layout:
// arguments as {"gen_args_i": {"arg_j": ..}}, responses as Python's str() of
// each value, the hashes lm-eval writes), with "task" and the token ids
// ("tokens": per request {"context": [..], "continuation": [..]}) added.
typedef struct sample_line {
    const char *task;
    int64_t doc_id;
    const cJSON *doc;
    const char *target;  // str(target)
    cJSON *arguments;    // consumed
    const char *prompt;  // arguments' first string (prompt_hash)
    cJSON *resps, *filtered_resps; // consumed
    const char *filter;
    cJSON *metrics;      // {name: value}, consumed
    cJSON *tokens;       // consumed, may be NULL
    cJSON *ll;           // consumed, may be NULL: the log-likelihoods as numbers (multiple choice)
} sample_line;

static void sample_write(FILE *f, sample_line *l) {
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddNumberToObject(rec, "doc_id", (double)l->doc_id);
    cJSON_AddItemToObject(rec, "doc", cJSON_Duplicate(l->doc, true));
    cJSON_AddStringToObject(rec, "target", l->target);
    cJSON_AddItemToObject(rec, "arguments", l->arguments);
    cJSON_AddItemToObject(rec, "resps", l->resps);
    cJSON_AddItemToObject(rec, "filtered_resps", l->filtered_resps);
    cJSON_AddStringToObject(rec, "filter", l->filter);
    cJSON *names = cJSON_AddArrayToObject(rec, "metrics");
    const cJSON *m;
    cJSON_ArrayForEach(m, l->metrics) cJSON_AddItemToArray(names, cJSON_CreateString(m->string));
    char h[65];
    char *dumped = eval_py_json_dumps(l->doc);
    eval_sha256_hex(dumped, h);
    free(dumped);
    cJSON_AddStringToObject(rec, "doc_hash", h);
    eval_sha256_hex(l->prompt, h);
    cJSON_AddStringToObject(rec, "prompt_hash", h);
    eval_sha256_hex(l->target, h);
    cJSON_AddStringToObject(rec, "target_hash", h);
    while (l->metrics->child) {
        cJSON *v = cJSON_DetachItemViaPointer(l->metrics, l->metrics->child);
        char *k = as_strdup(v->string);
        cJSON_AddItemToObject(rec, k, v);
        free(k);
    }
    cJSON_Delete(l->metrics);
    cJSON_AddStringToObject(rec, "task", l->task);
    if (l->ll) cJSON_AddItemToObject(rec, "ll", l->ll);
    if (l->tokens) cJSON_AddItemToObject(rec, "tokens", l->tokens);
    char *line = as_json_print(rec, false);
    fprintf(f, "%s\n", line);
    free(line);
    cJSON_Delete(rec);
}

// {"gen_args_i": {"arg_0": ctx, "arg_1": cont}} of n string pairs (cont NULL: one argument).
static cJSON *sample_arguments(char *const *ctx, char *const *cont, int32_t n) {
    cJSON *a = cJSON_CreateObject();
    for (int32_t i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "gen_args_%d", i);
        cJSON *g = cJSON_AddObjectToObject(a, k);
        cJSON_AddStringToObject(g, "arg_0", ctx[i]);
        if (cont) cJSON_AddStringToObject(g, "arg_1", cont[i]);
    }
    return a;
}

static cJSON *py_float_json(double x) {
    char f[32];
    eval_py_float(x, f);
    return cJSON_CreateString(f);
}

// [str(ll), str(is_greedy)]: a loglikelihood response as lm-eval logs it.
static cJSON *ll_resp(double ll, bool greedy) {
    cJSON *r = cJSON_CreateArray();
    cJSON_AddItemToArray(r, py_float_json(ll));
    cJSON_AddItemToArray(r, cJSON_CreateString(greedy ? "True" : "False"));
    return r;
}

static cJSON *token_pair(const int32_t *toks, int32_t n, int32_t n_ctx) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "context", cJSON_CreateIntArray(toks, n_ctx));
    cJSON_AddItemToObject(o, "continuation", cJSON_CreateIntArray(toks + n_ctx, n - n_ctx));
    return o;
}

#define MC_CHUNK 16

int eval_run_mc(const eval_task *t, const eval_subset *subsets, int32_t n_subsets, const eval_options *o, eval_loglik_fn fn,
                void *user, cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples) {
    const int32_t shots = o->shots >= 0 ? o->shots : t->num_fewshot;
    progress pr = {.task = t->name, .t0 = as_time(), .on = o->progress};
    int32_t k_used = 0; // subsets with items (an offset can pass the end of short ones)
    for (int32_t s = 0; s < n_subsets; s++) {
        const int64_t n = n_eval_items(&subsets[s], o);
        pr.total += n, k_used += n > 0;
    }
    if (k_used == 0) return as_error("%s: --offset %lld is past the last item", t->name, (long long)o->offset);
    int64_t done = 0;
    double sum_acc = 0, sum_norm = 0, sum_mc2 = 0, se2_acc = 0, se2_norm = 0, se2_mc2 = 0;
    int64_t total_items = 0, total_orig = 0;
    int rc = AS_OK;
    for (int32_t s = 0; s < n_subsets && rc == AS_OK; s++) {
        const eval_subset *sub = &subsets[s];
        const cJSON *pool = sub->fewshot ? sub->fewshot : sub->docs;
        const int64_t n_pool = cJSON_GetArraySize(pool), n = n_eval_items(sub, o), off = o->offset;
        char **examples = NULL;
        if (shots > 0 && render_examples(t, pool, &examples) != AS_OK) return AS_FAIL;
        as_rng rng;
        as_rng_seed(&rng, o->seed);
        skip_fewshot_draws(t, sub, n_pool, shots, &rng, o);
        double *acc = as_malloc((size_t)AS_MAX(n, 1) * sizeof *acc), *norm = as_malloc((size_t)AS_MAX(n, 1) * sizeof *norm),
               *mc2 = as_malloc((size_t)AS_MAX(n, 1) * sizeof *mc2);
        for (int64_t i0 = 0; i0 < n && rc == AS_OK; i0 += MC_CHUNK) {
            const int64_t i1 = AS_MIN(n, i0 + MC_CHUNK), nb = i1 - i0;
            eval_doc docs[MC_CHUNK];
            eval_mc_item items[MC_CHUNK];
            char *prefix[MC_CHUNK];
            memset(docs, 0, sizeof docs), memset(items, 0, sizeof items), memset(prefix, 0, sizeof prefix);
            for (int64_t i = i0; i < i1 && rc == AS_OK; i++) {
                const cJSON *doc = cJSON_GetArrayItem(sub->docs, (int)(off + i));
                eval_doc *d = &docs[i - i0];
                if ((rc = eval_doc_render(t, doc, off + i, d)) != AS_OK) break;
                prefix[i - i0] = fewshot_prefix(t, doc, examples, n_pool, shots, &rng, sub->fewshot ? -1 : off + i, t->path ? t->path : t->name);
                if (!prefix[i - i0]) { rc = AS_FAIL; break; }
                eval_mc_item *it = &items[i - i0];
                it->n_choices = d->n_choices;
                it->ctx = as_calloc((size_t)d->n_choices, sizeof *it->ctx);
                it->cont = as_calloc((size_t)d->n_choices, sizeof *it->cont);
                it->ll = as_calloc((size_t)d->n_choices, sizeof *it->ll);
                if (samples) {
                    it->greedy = as_calloc((size_t)d->n_choices, sizeof *it->greedy);
                    it->tokens = as_calloc((size_t)d->n_choices, sizeof *it->tokens);
                    it->n_tokens = as_calloc((size_t)d->n_choices, sizeof *it->n_tokens);
                    it->n_ctx_tokens = as_calloc((size_t)d->n_choices, sizeof *it->n_ctx_tokens);
                }
                const char *pf = prefix[i - i0], *dl = t->target_delimiter;
                char *shared = NULL;
                for (int32_t c = 0; c < d->n_choices; c++) {
                    const char *body = d->contexts ? d->contexts[c] : d->text;
                    const char *cont = d->contexts ? d->continuation : d->choices[c];
                    if (d->contexts || !shared) {
                        char *x = as_malloc(strlen(pf) + strlen(body) + 1);
                        sprintf(x, "%s%s", pf, body);
                        if (!d->contexts) shared = x;
                        it->ctx[c] = x;
                    } else {
                        it->ctx[c] = as_strdup(shared);
                    }
                    it->cont[c] = as_malloc(strlen(dl) + strlen(cont) + 1);
                    sprintf(it->cont[c], "%s%s", dl, cont);
                }
            }
            if (rc == AS_OK) rc = fn(user, items, nb);
            for (int64_t j = 0; j < nb; j++) {
                if (rc == AS_OK) eval_mc_metrics(&docs[j], items[j].ll, &acc[i0 + j], &norm[i0 + j], &mc2[i0 + j]);
                if (rc == AS_OK && samples) {
                    const eval_mc_item *it = &items[j];
                    cJSON *resps = cJSON_CreateArray(), *filtered = cJSON_CreateArray(), *tk = cJSON_CreateArray();
                    for (int32_t c = 0; c < it->n_choices; c++) {
                        cJSON *one = cJSON_CreateArray();
                        cJSON_AddItemToArray(one, ll_resp(it->ll[c], it->greedy[c]));
                        cJSON_AddItemToArray(resps, one);
                        cJSON_AddItemToArray(filtered, ll_resp(it->ll[c], it->greedy[c]));
                        if (it->tokens[c]) cJSON_AddItemToArray(tk, token_pair(it->tokens[c], it->n_tokens[c], it->n_ctx_tokens[c]));
                    }
                    cJSON *metrics = cJSON_CreateObject();
                    if (t->metrics & EVAL_METRIC_ACC) cJSON_AddNumberToObject(metrics, "acc", acc[i0 + j]);
                    if (t->metrics & EVAL_METRIC_ACC_NORM) cJSON_AddNumberToObject(metrics, "acc_norm", norm[i0 + j]);
                    if (t->metrics & EVAL_METRIC_MC2) // lm-eval names mc2 "acc"
                        cJSON_AddNumberToObject(metrics, t->metrics & EVAL_METRIC_ACC ? "mc2" : "acc", mc2[i0 + j]);
                    char target[32];
                    snprintf(target, sizeof target, "%d", docs[j].gold);
                    char name[512];
                    snprintf(name, sizeof name, "%s_%s", t->name, sub->name);
                    sample_line l = {.task = n_subsets > 1 ? name : t->name, .doc_id = off + i0 + j,
                                     .doc = cJSON_GetArrayItem(sub->docs, (int)(off + i0 + j)), .target = target,
                                     .arguments = sample_arguments(it->ctx, it->cont, it->n_choices), .prompt = it->ctx[0],
                                     .resps = resps, .filtered_resps = filtered, .filter = "none", .metrics = metrics, .tokens = tk,
                                     .ll = cJSON_CreateDoubleArray(it->ll, it->n_choices)};
                    sample_write(samples, &l);
                }
                if (items[j].tokens)
                    for (int32_t c = 0; c < items[j].n_choices; c++) free(items[j].tokens[c]);
                free(items[j].greedy), free(items[j].tokens), free(items[j].n_tokens), free(items[j].n_ctx_tokens);
                free_strs(items[j].ctx, items[j].n_choices);
                free_strs(items[j].cont, items[j].n_choices);
                free(items[j].ll);
                free(prefix[j]);
                eval_doc_free(&docs[j]);
            }
            done += nb;
            progress_show(&pr, done, false);
        }
        free_strs(examples, shots > 0 ? n_pool : 0);
        if (rc == AS_OK && n > 0) {
            double m_acc, s_acc, m_norm, s_norm, m_mc2, s_mc2;
            eval_mean_stderr(acc, n, &m_acc, &s_acc);
            eval_mean_stderr(norm, n, &m_norm, &s_norm);
            eval_mean_stderr(mc2, n, &m_mc2, &s_mc2);
            sum_acc += m_acc, sum_norm += m_norm, sum_mc2 += m_mc2;
            se2_acc += s_acc * s_acc, se2_norm += s_norm * s_norm, se2_mc2 += s_mc2 * s_mc2;
            total_items += n;
            total_orig += cJSON_GetArraySize(sub->docs);
            if (n_subsets > 1) {
                char name[512];
                snprintf(name, sizeof name, "%s_%s", t->name, sub->name);
                cJSON *e = cJSON_AddObjectToObject(results, name);
                cJSON_AddStringToObject(e, "alias", name);
                if (t->metrics & EVAL_METRIC_ACC) put_metric(e, "acc", "none", m_acc, s_acc);
                if (t->metrics & EVAL_METRIC_ACC_NORM) put_metric(e, "acc_norm", "none", m_norm, s_norm);
                if (t->metrics & EVAL_METRIC_MC2) put_metric(e, "acc", "none", m_mc2, s_mc2);
                cJSON_AddNumberToObject(nshot, name, shots);
                cJSON *ns = cJSON_AddObjectToObject(nsamples, name);
                cJSON_AddNumberToObject(ns, "original", cJSON_GetArraySize(sub->docs));
                cJSON_AddNumberToObject(ns, "effective", (double)n);
            }
        }
        free(acc), free(norm), free(mc2);
    }
    progress_show(&pr, done, true);
    if (rc != AS_OK) return AS_FAIL;
    // The task: the subset itself, or the unweighted mean of its subsets (the
    // leaderboard's MMLU average), whose standard error is sqrt(sum se_i^2) / k.
    const double k = k_used;
    cJSON *e = cJSON_AddObjectToObject(results, t->name);
    cJSON_AddStringToObject(e, "alias", t->name);
    if (t->metrics & EVAL_METRIC_ACC) put_metric(e, "acc", "none", sum_acc / k, sqrt(se2_acc) / k);
    if (t->metrics & EVAL_METRIC_ACC_NORM) put_metric(e, "acc_norm", "none", sum_norm / k, sqrt(se2_norm) / k);
    if (t->metrics & EVAL_METRIC_MC2) put_metric(e, "acc", "none", sum_mc2 / k, sqrt(se2_mc2) / k);
    if (n_subsets > 1) cJSON_AddNumberToObject(e, "n_subsets", k_used);
    cJSON_AddNumberToObject(nshot, t->name, shots);
    cJSON *ns = cJSON_AddObjectToObject(nsamples, t->name);
    cJSON_AddNumberToObject(ns, "original", (double)total_orig);
    cJSON_AddNumberToObject(ns, "effective", (double)total_items);
    return AS_OK;
}

// ---- loglikelihood: one continuation (LAMBADA) ----

int eval_run_loglik(const eval_task *t, const eval_subset *sub, const eval_options *o, eval_loglik_fn fn, void *user,
                    cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples) {
    const int32_t shots = o->shots >= 0 ? o->shots : t->num_fewshot;
    const cJSON *pool = sub->fewshot ? sub->fewshot : sub->docs;
    const int64_t n_pool = cJSON_GetArraySize(pool), n = n_eval_items(sub, o), off = o->offset;
    if (n == 0) return as_error("%s: --offset %lld is past the last item", t->name, (long long)off);
    char **examples = NULL;
    if (shots > 0 && render_examples(t, pool, &examples) != AS_OK) return AS_FAIL;
    as_rng rng;
    as_rng_seed(&rng, o->seed);
    skip_fewshot_draws(t, sub, n_pool, shots, &rng, o);
    double *ll = as_calloc((size_t)n, sizeof *ll), *acc = as_calloc((size_t)n, sizeof *acc);
    progress pr = {.task = t->name, .t0 = as_time(), .total = n, .on = o->progress};
    int rc = AS_OK;
    for (int64_t i0 = 0; i0 < n && rc == AS_OK; i0 += MC_CHUNK) {
        const int64_t nb = AS_MIN(n, i0 + MC_CHUNK) - i0;
        eval_doc docs[MC_CHUNK];
        eval_mc_item items[MC_CHUNK];
        char *ctx[MC_CHUNK], *cont[MC_CHUNK];
        double ll1[MC_CHUNK];
        bool greedy[MC_CHUNK];
        int32_t *toks[MC_CHUNK], n_toks[MC_CHUNK], n_ctx_toks[MC_CHUNK];
        memset(docs, 0, sizeof docs), memset(ctx, 0, sizeof ctx), memset(cont, 0, sizeof cont), memset(toks, 0, sizeof toks);
        int64_t j = 0;
        for (; j < nb; j++) {
            const cJSON *doc = cJSON_GetArrayItem(sub->docs, (int)(off + i0 + j));
            if ((rc = eval_doc_render(t, doc, off + i0 + j, &docs[j])) != AS_OK) break;
            char *pf = fewshot_prefix(t, doc, examples, n_pool, shots, &rng, sub->fewshot ? -1 : off + i0 + j, t->path ? t->path : t->name);
            if (!pf) { rc = AS_FAIL; break; }
            ctx[j] = as_malloc(strlen(pf) + strlen(docs[j].text) + 1);
            sprintf(ctx[j], "%s%s", pf, docs[j].text);
            free(pf);
            // lm-eval's loglikelihood request: (context, doc_to_target), no delimiter.
            cont[j] = as_strdup(docs[j].target);
            items[j] = (eval_mc_item){.n_choices = 1, .ctx = &ctx[j], .cont = &cont[j], .ll = &ll1[j], .greedy = &greedy[j]};
            if (samples) items[j].tokens = &toks[j], items[j].n_tokens = &n_toks[j], items[j].n_ctx_tokens = &n_ctx_toks[j];
        }
        if (rc == AS_OK) rc = fn(user, items, nb);
        for (int64_t k = 0; k < j; k++) {
            if (rc == AS_OK) {
                ll[i0 + k] = ll1[k], acc[i0 + k] = greedy[k];
                if (samples) {
                    cJSON *resps = cJSON_CreateArray(), *one = cJSON_CreateArray(), *filtered = cJSON_CreateArray();
                    cJSON_AddItemToArray(one, ll_resp(ll1[k], greedy[k]));
                    cJSON_AddItemToArray(resps, one);
                    cJSON_AddItemToArray(filtered, ll_resp(ll1[k], greedy[k]));
                    cJSON *metrics = cJSON_CreateObject();
                    if (t->metrics & EVAL_METRIC_PERPLEXITY) cJSON_AddNumberToObject(metrics, "perplexity", ll1[k]);
                    if (t->metrics & EVAL_METRIC_ACC) cJSON_AddNumberToObject(metrics, "acc", greedy[k]);
                    cJSON *tk = cJSON_CreateArray();
                    cJSON_AddItemToArray(tk, token_pair(toks[k], n_toks[k], n_ctx_toks[k]));
                    sample_line l = {.task = t->name, .doc_id = off + i0 + k, .doc = cJSON_GetArrayItem(sub->docs, (int)(off + i0 + k)),
                                     .target = docs[k].target, .arguments = sample_arguments(&ctx[k], &cont[k], 1),
                                     .prompt = ctx[k], .resps = resps, .filtered_resps = filtered, .filter = "none",
                                     .metrics = metrics, .tokens = tk};
                    sample_write(samples, &l);
                }
            }
            if (samples && rc == AS_OK) free(toks[k]);
            free(ctx[k]), free(cont[k]);
            eval_doc_free(&docs[k]);
        }
        progress_show(&pr, i0 + nb, false);
    }
    progress_show(&pr, rc == AS_OK ? n : 0, true);
    free_strs(examples, shots > 0 ? n_pool : 0);
    if (rc == AS_OK) {
        cJSON *e = cJSON_AddObjectToObject(results, t->name);
        cJSON_AddStringToObject(e, "alias", t->name);
        double m_, s_;
        if (t->metrics & EVAL_METRIC_PERPLEXITY) {
            // lm-eval's perplexity aggregation: exp(-mean ll), stderr by bootstrap.
            eval_mean_stderr(ll, n, &m_, &s_);
            put_metric(e, "perplexity", "none", exp(-m_), eval_perplexity_bootstrap_stderr(ll, n, 100000));
        }
        if (t->metrics & EVAL_METRIC_ACC) {
            eval_mean_stderr(acc, n, &m_, &s_);
            put_metric(e, "acc", "none", m_, s_);
        }
        cJSON_AddNumberToObject(nshot, t->name, shots);
        cJSON *ns = cJSON_AddObjectToObject(nsamples, t->name);
        cJSON_AddNumberToObject(ns, "original", cJSON_GetArraySize(sub->docs));
        cJSON_AddNumberToObject(ns, "effective", (double)n);
    }
    free(ll), free(acc);
    return rc;
}

// ---- loglikelihood_rolling: whole documents (perplexity) ----

int eval_run_rolling(const eval_task *t, const eval_subset *sub, const eval_options *o, const tokenizer *tok,
                     int32_t max_len, eval_loglik_fn fn, void *user, cJSON *results, cJSON *nshot, cJSON *nsamples,
                     FILE *samples) {
    const int64_t n = n_eval_items(sub, o), off = o->offset;
    if (n == 0) return as_error("%s: --offset %lld is past the last item", t->name, (long long)off);
    double sum_ll = 0, sum_words = 0, sum_bytes = 0;
    progress pr = {.task = t->name, .t0 = as_time(), .total = n, .on = o->progress};
    const int32_t prefix = eval_prefix_token(tok);
    int rc = AS_OK;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const cJSON *doc = cJSON_GetArrayItem(sub->docs, (int)(off + i));
        eval_doc d;
        if ((rc = eval_doc_render(t, doc, off + i, &d)) != AS_OK) break;
        int32_t *ids = NULL;
        size_t nid = 0;
        // lm-eval's tok_encode(string): no special tokens (the prefix token
        // conditions the first window).
        rc = tokenizer_encode(tok, d.target, strlen(d.target), false, false, &ids, &nid);
        int32_t **full = NULL, *n_full = NULL, *n_ctx = NULL;
        const int32_t nw = rc == AS_OK ? eval_rolling_windows(ids, (int32_t)nid, prefix, max_len, &full, &n_full, &n_ctx) : 0;
        double doc_ll = 0;
        for (int32_t w0 = 0; w0 < nw && rc == AS_OK; w0 += MC_CHUNK) {
            const int32_t nb = AS_MIN(nw, w0 + MC_CHUNK) - w0;
            eval_mc_item items[MC_CHUNK];
            double wll[MC_CHUNK];
            for (int32_t k = 0; k < nb; k++)
                items[k] = (eval_mc_item){.n_choices = 1, .ll = &wll[k], .tok_full = &full[w0 + k], .tok_n_full = &n_full[w0 + k],
                                          .tok_n_ctx = &n_ctx[w0 + k]};
            rc = fn(user, items, nb);
            for (int32_t k = 0; k < nb && rc == AS_OK; k++) doc_ll += wll[k];
        }
        const double words = (double)eval_count_words(d.target), bytes = (double)strlen(d.target);
        if (rc == AS_OK) {
            sum_ll += doc_ll, sum_words += words, sum_bytes += bytes;
            if (samples) {
                cJSON *resps = cJSON_CreateArray(), *one = cJSON_CreateArray(), *filtered = cJSON_CreateArray();
                cJSON_AddItemToArray(one, py_float_json(doc_ll));
                cJSON_AddItemToArray(resps, one);
                cJSON_AddItemToArray(filtered, py_float_json(doc_ll));
                cJSON *metrics = cJSON_CreateObject();
                const double pair_w[2] = {doc_ll, words}, pair_b[2] = {doc_ll, bytes};
                if (t->metrics & EVAL_METRIC_WORD_PERPLEXITY) cJSON_AddItemToObject(metrics, "word_perplexity", cJSON_CreateDoubleArray(pair_w, 2));
                if (t->metrics & EVAL_METRIC_BYTE_PERPLEXITY) cJSON_AddItemToObject(metrics, "byte_perplexity", cJSON_CreateDoubleArray(pair_b, 2));
                if (t->metrics & EVAL_METRIC_BITS_PER_BYTE) cJSON_AddItemToObject(metrics, "bits_per_byte", cJSON_CreateDoubleArray(pair_b, 2));
                cJSON *tk = cJSON_CreateArray();
                for (int32_t w = 0; w < nw; w++) cJSON_AddItemToArray(tk, token_pair(full[w], n_full[w], n_ctx[w]));
                sample_line l = {.task = t->name, .doc_id = off + i, .doc = doc, .target = d.target,
                                 .arguments = sample_arguments(&d.target, NULL, 1), .prompt = d.target, .resps = resps,
                                 .filtered_resps = filtered, .filter = "none", .metrics = metrics, .tokens = tk};
                sample_write(samples, &l);
            }
        }
        for (int32_t w = 0; w < nw; w++) free(full[w]);
        free(full), free(n_full), free(n_ctx), free(ids);
        eval_doc_free(&d);
        progress_show(&pr, i + 1, false);
    }
    progress_show(&pr, rc == AS_OK ? n : 0, true);
    if (rc != AS_OK) return AS_FAIL;
    // lm-eval's weighted_perplexity = exp(-sum ll / sum weights) and
    // bits_per_byte = -sum ll / (sum bytes * ln 2); it gives them no stderr.
    cJSON *e = cJSON_AddObjectToObject(results, t->name);
    cJSON_AddStringToObject(e, "alias", t->name);
    if (t->metrics & EVAL_METRIC_WORD_PERPLEXITY) put_metric(e, "word_perplexity", "none", exp(-sum_ll / sum_words), NAN);
    if (t->metrics & EVAL_METRIC_BYTE_PERPLEXITY) put_metric(e, "byte_perplexity", "none", exp(-sum_ll / sum_bytes), NAN);
    if (t->metrics & EVAL_METRIC_BITS_PER_BYTE) put_metric(e, "bits_per_byte", "none", -sum_ll / (sum_bytes * log(2.0)), NAN);
    cJSON_AddNumberToObject(nshot, t->name, 0);
    cJSON *ns = cJSON_AddObjectToObject(nsamples, t->name);
    cJSON_AddNumberToObject(ns, "original", cJSON_GetArraySize(sub->docs));
    cJSON_AddNumberToObject(ns, "effective", (double)n);
    return AS_OK;
}

// ---- generative exact match ----

typedef struct gen_progress_ctx { progress *p; } gen_progress_ctx;
static void on_gen_progress(void *user, const generate_progress *gp) {
    gen_progress_ctx *g = user;
    progress_show(g->p, gp->done, false);
}

static int run_gen(model *m, const tokenizer *tok, const eval_task *t, const eval_subset *sub, const eval_options *o,
                   cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples) {
    const int32_t shots = o->shots >= 0 ? o->shots : t->num_fewshot;
    const cJSON *pool = sub->fewshot ? sub->fewshot : sub->docs;
    const int64_t n_pool = cJSON_GetArraySize(pool), n = n_eval_items(sub, o), off = o->offset;
    if (n == 0) return as_error("%s: --offset %lld is past the last item", t->name, (long long)off);
    char **examples = NULL;
    if (shots > 0 && render_examples(t, pool, &examples) != AS_OK) return AS_FAIL;
    as_rng rng;
    as_rng_seed(&rng, o->seed);
    skip_fewshot_draws(t, sub, n_pool, shots, &rng, o);
    generate_request *req = as_calloc((size_t)AS_MAX(n, 1), sizeof *req);
    char **gold = as_calloc((size_t)AS_MAX(n, 1), sizeof *gold);
    char **gold_text = as_calloc((size_t)AS_MAX(n, 1), sizeof *gold_text), **prompts = as_calloc((size_t)AS_MAX(n, 1), sizeof *prompts);
    int64_t *n_prompt = as_calloc((size_t)AS_MAX(n, 1), sizeof *n_prompt);
    int32_t **ids = as_calloc((size_t)AS_MAX(n, 1), sizeof *ids);
    int32_t n_stop = t->until ? cJSON_GetArraySize(t->until) : 0;
    const char **stop = as_calloc((size_t)AS_MAX(n_stop, 1), sizeof *stop);
    for (int32_t i = 0; i < n_stop; i++) stop[i] = cJSON_GetArrayItem(t->until, i)->valuestring;
    const int32_t max_new = o->max_new_tokens > 0 ? o->max_new_tokens : t->max_gen_toks;
    int rc = AS_OK;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const cJSON *doc = cJSON_GetArrayItem(sub->docs, (int)(off + i));
        eval_doc d;
        if ((rc = eval_doc_render(t, doc, off + i, &d)) != AS_OK) break;
        char *pf = fewshot_prefix(t, doc, examples, n_pool, shots, &rng, sub->fewshot ? -1 : off + i, t->path ? t->path : t->name);
        char what[512];
        snprintf(what, sizeof what, "%s: item %lld: gold", t->path ? t->path : t->name, (long long)(off + i));
        char *g = !pf ? NULL : t->lm_eval ? as_strdup(d.target) : eval_render(t->gold, doc, what);
        if (!g) { free(pf); eval_doc_free(&d); rc = AS_FAIL; break; }
        gold_text[i] = as_strdup(g);
        if (t->match_string) gold[i] = g;
        else {
            // A gold answer the extraction cannot read would score 0 whatever
            // the model says: an error, never a silent 0.
            gold[i] = eval_extract_answer(g, false);
            if (!gold[i]) {
                as_error("%s: '%.80s' holds no number (match: number reads \"#### n\" or the last number; "
                         "match: string compares text)", what, g);
                free(g), free(pf);
                eval_doc_free(&d);
                rc = AS_FAIL;
                break;
            }
            free(g);
        }
        char *prompt = as_malloc(strlen(pf) + strlen(d.text) + 1);
        sprintf(prompt, "%s%s", pf, d.text);
        size_t np = 0;
        rc = tokenizer_encode(tok, prompt, strlen(prompt), true, false, &ids[i], &np);
        // Leave room for the answer: keep the prompt's last tokens.
        const int64_t room = (int64_t)m->cfg.n_ctx_train - max_new;
        if (rc == AS_OK && room > 0 && (int64_t)np > room) {
            memmove(ids[i], ids[i] + (np - (size_t)room), (size_t)room * sizeof *ids[i]);
            np = (size_t)room;
        }
        req[i] = (generate_request){.prompt = ids[i], .n_prompt = (int64_t)np, .sampling = sampler_params_greedy(),
                                    .max_new_tokens = max_new, .stop = stop, .n_stop = n_stop};
        prompts[i] = prompt, n_prompt[i] = (int64_t)np;
        free(pf);
        eval_doc_free(&d);
    }
    generate_result *out = as_calloc((size_t)AS_MAX(n, 1), sizeof *out);
    progress pr = {.task = t->name, .t0 = as_time(), .total = n, .on = o->progress};
    gen_progress_ctx gp = {&pr};
    if (rc == AS_OK) {
        generate_options go = generate_options_default();
        go.precision = o->precision;
        go.batch_size = 16;
        go.on_progress = on_gen_progress;
        go.user = &gp;
        rc = dist_generate_run(m, tok, req, n, &go, out); // under mpirun: a share per rank
    }
    progress_show(&pr, rc == AS_OK ? n : 0, true);
    // One score per filter: GSM8K's strict-match and flexible-extract for
    // numbers, the task's filter_list (default "none": the output as it is) for strings.
    static const eval_filter NONE_FILTER = {.name = "none"};
    const int32_t n_f = t->match_string ? AS_MAX(t->n_filters, 1) : 2;
    double *score = as_calloc((size_t)n_f * (size_t)AS_MAX(n, 1), sizeof *score);
    for (int64_t i = 0; rc == AS_OK && i < n; i++) {
        const char *text = out[i].text ? out[i].text : "";
        char *ans[8] = {0}, **answers = n_f <= 8 ? ans : as_calloc((size_t)n_f, sizeof *answers);
        for (int32_t f = 0; f < n_f; f++) {
            if (t->match_string) {
                answers[f] = eval_filter_apply(t->n_filters ? &t->filters[f] : &NONE_FILTER, text);
                score[f * n + i] = eval_exact_match_equal(&t->em, answers[f], gold[i]);
            } else {
                answers[f] = eval_extract_answer(text, f == 0);
                score[f * n + i] = answers[f] && !strcmp(answers[f], gold[i]);
            }
        }
        // lm-eval's log: one line per filter, arguments (prompt, generation_kwargs).
        for (int32_t f = 0; samples && f < n_f; f++) {
            cJSON *args = cJSON_CreateObject(), *g0 = cJSON_AddObjectToObject(args, "gen_args_0");
            cJSON_AddStringToObject(g0, "arg_0", prompts[i]);
            cJSON *kw = cJSON_AddObjectToObject(g0, "arg_1");
            cJSON *until = cJSON_AddArrayToObject(kw, "until");
            for (int32_t k = 0; k < n_stop; k++) cJSON_AddItemToArray(until, cJSON_CreateString(stop[k]));
            cJSON_AddBoolToObject(kw, "do_sample", false);
            cJSON_AddNumberToObject(kw, "max_gen_toks", max_new);
            cJSON *resps = cJSON_CreateArray(), *one = cJSON_CreateArray(), *filtered = cJSON_CreateArray();
            cJSON_AddItemToArray(one, cJSON_CreateString(text));
            cJSON_AddItemToArray(resps, one);
            cJSON_AddItemToArray(filtered, answers[f] ? cJSON_CreateString(answers[f]) : cJSON_CreateNull());
            cJSON *metrics = cJSON_CreateObject();
            cJSON_AddNumberToObject(metrics, "exact_match", score[f * n + i]);
            cJSON *tk = cJSON_CreateArray(), *pair = cJSON_CreateObject();
            cJSON_AddItemToObject(pair, "context", cJSON_CreateIntArray(ids[i], (int)n_prompt[i]));
            cJSON_AddItemToObject(pair, "continuation", cJSON_CreateIntArray(out[i].ids ? out[i].ids : ids[i], out[i].ids ? (int)out[i].n_ids : 0));
            cJSON_AddItemToArray(tk, pair);
            const char *fname = t->match_string ? (t->n_filters ? t->filters[f].name : "none") : f == 0 ? "strict-match" : "flexible-extract";
            sample_line l = {.task = t->name, .doc_id = off + i, .doc = cJSON_GetArrayItem(sub->docs, (int)(off + i)),
                             .target = gold_text[i], .arguments = args, .prompt = prompts[i], .resps = resps,
                             .filtered_resps = filtered, .filter = fname, .metrics = metrics, .tokens = tk};
            sample_write(samples, &l);
        }
        for (int32_t f = 0; f < n_f; f++) free(answers[f]);
        if (answers != ans) free(answers);
    }
    if (rc == AS_OK) {
        cJSON *e = cJSON_AddObjectToObject(results, t->name);
        cJSON_AddStringToObject(e, "alias", t->name);
        for (int32_t f = 0; f < n_f; f++) {
            double m_, s_;
            eval_mean_stderr(score + (size_t)f * (size_t)n, n, &m_, &s_);
            put_metric(e, "exact_match",
                       t->match_string ? (t->n_filters ? t->filters[f].name : "none") : f == 0 ? "strict-match" : "flexible-extract",
                       m_, s_);
        }
        cJSON_AddNumberToObject(nshot, t->name, shots);
        cJSON *ns = cJSON_AddObjectToObject(nsamples, t->name);
        cJSON_AddNumberToObject(ns, "original", cJSON_GetArraySize(sub->docs));
        cJSON_AddNumberToObject(ns, "effective", (double)n);
    }
    for (int64_t i = 0; i < n; i++) {
        free(ids[i]), free(gold[i]), free(gold_text[i]), free(prompts[i]);
        generate_result_free(&out[i]);
    }
    free(ids), free(gold), free(gold_text), free(prompts), free(n_prompt), free(out), free(req), free(stop), free(score);
    free_strs(examples, shots > 0 ? n_pool : 0);
    return rc;
}

// ---- the run ----

static const char *const LEADERBOARD[] = {"arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "winogrande", "gsm8k"};

// Before any scoring: every task file parses and its data is there (a long run
// must not fail hours in for a missing file).
static int check_task(const char *name, const eval_options *o) {
    eval_task t;
    if (eval_task_load(name, o->tasks_dir ? o->tasks_dir : eval_tasks_dir(), &t) != AS_OK) return AS_FAIL;
    int rc = eval_task_check_data(&t, data_dir_of(o), o->shots >= 0 ? o->shots : t.num_fewshot);
    eval_task_free(&t);
    return rc;
}

// The log-likelihood kinds of task with scorer fn.
static int score_kind(model *m, const tokenizer *tok, const eval_task *t, const eval_subset *subs, int32_t ns, const eval_options *o,
                      eval_loglik_fn fn, void *user, cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples) {
    if (t->kind == EVAL_TASK_MULTIPLE_CHOICE) return eval_run_mc(t, subs, ns, o, fn, user, results, nshot, nsamples, samples);
    if (t->kind == EVAL_TASK_LOGLIKELIHOOD) return eval_run_loglik(t, &subs[0], o, fn, user, results, nshot, nsamples, samples);
    const int32_t max_len = m->cfg.n_ctx_train > 0 ? m->cfg.n_ctx_train : 2048;
    return eval_run_rolling(t, &subs[0], o, tok, max_len, fn, user, results, nshot, nsamples, samples);
}

// Under mpirun (dist/dist.h): the task runs twice, recording the scorer's
// calls and then replaying what the ranks scored of them (score_dist.c); the
// first run's results, samples and few-shot counts are thrown away.
static int score_on_ranks(model *m, const tokenizer *tok, const eval_task *t, const eval_subset *subs, int32_t ns, const eval_options *o,
                          eval_model_scorer *sc, cJSON *results, cJSON *nshot, cJSON *nsamples, FILE *samples) {
    eval_dist_scorer d = {.inner = sc};
    eval_options quiet = *o;
    quiet.progress = false;
    cJSON *scratch = cJSON_CreateObject();
    cJSON *r1 = cJSON_AddObjectToObject(scratch, "results"), *n1 = cJSON_AddObjectToObject(scratch, "n-shot"),
          *s1 = cJSON_AddObjectToObject(scratch, "n-samples");
    FILE *nowhere = samples ? fopen("/dev/null", "w") : NULL;
    const __typeof__(g_drawn) drawn = g_drawn;
    int rc = samples && !nowhere ? as_error("eval: cannot open /dev/null") : AS_OK;
    if (rc == AS_OK) rc = score_kind(m, tok, t, subs, ns, &quiet, eval_dist_loglik, &d, r1, n1, s1, nowhere);
    if (nowhere) fclose(nowhere);
    cJSON_Delete(scratch);
    g_drawn = drawn;
    if (rc == AS_OK) rc = eval_dist_score(&d, t->name, o->progress);
    if (rc == AS_OK) rc = score_kind(m, tok, t, subs, ns, o, eval_dist_loglik, &d, results, nshot, nsamples, samples);
    eval_dist_free(&d);
    return rc;
}

static int run_task(model *m, const tokenizer *tok, const char *name, const eval_options *o, cJSON *root, FILE *samples) {
    const char *tdir = o->tasks_dir ? o->tasks_dir : eval_tasks_dir();
    const char *ddir = data_dir_of(o);
    eval_task t;
    if (eval_task_load(name, tdir, &t) != AS_OK) return AS_FAIL;
    cJSON *results = cJSON_GetObjectItem(root, "results"), *nshot = cJSON_GetObjectItem(root, "n-shot"),
          *nsamples = cJSON_GetObjectItem(root, "n-samples"), *configs = cJSON_GetObjectItem(root, "configs");
    if (cJSON_GetObjectItemCaseSensitive(results, t.name)) {
        eval_task_free(&t);
        return AS_OK; // listed twice
    }
    int rc;
    g_drawn.items = 0;
    // Without shots no few-shot file is read (nor needed).
    if ((o->shots >= 0 ? o->shots : t.num_fewshot) == 0) t.fewshot_data = NULL, t.fewshot_alts = NULL;
    if (t.kind == EVAL_TASK_MT_BENCH) {
        rc = eval_run_mt_bench(m, tok, &t, o, ddir, results, nshot, nsamples);
    } else {
        eval_subset *subs;
        int32_t ns;
        rc = eval_task_read_data(&t, ddir, &subs, &ns);
        if (rc == AS_OK) {
            eval_model_scorer sc = {.m = m, .precision = o->precision, .tok = tok, .kv_budget_bytes = o->kv_budget_bytes};
            if (dist_size() > 1 && t.kind != EVAL_TASK_GENERATE_UNTIL && (t.kind == EVAL_TASK_MULTIPLE_CHOICE || ns == 1)) {
                rc = score_on_ranks(m, tok, &t, subs, ns, o, &sc, results, nshot, nsamples, samples);
            } else if (t.kind == EVAL_TASK_MULTIPLE_CHOICE) {
                rc = eval_run_mc(&t, subs, ns, o, eval_model_loglik, &sc, results, nshot, nsamples, samples);
            } else if (ns != 1) {
                rc = as_error("%s: data: %s tasks take one data file", t.path, eval_task_kind_name(t.kind));
            } else if (t.kind == EVAL_TASK_LOGLIKELIHOOD) {
                rc = eval_run_loglik(&t, &subs[0], o, eval_model_loglik, &sc, results, nshot, nsamples, samples);
            } else if (t.kind == EVAL_TASK_LOGLIKELIHOOD_ROLLING) {
                const int32_t max_len = m->cfg.n_ctx_train > 0 ? m->cfg.n_ctx_train : 2048;
                rc = eval_run_rolling(&t, &subs[0], o, tok, max_len, eval_model_loglik, &sc, results, nshot, nsamples, samples);
            } else {
                if (ns != 1) rc = as_error("%s: data: generate_until tasks take one data file", t.path);
                else rc = run_gen(m, tok, &t, &subs[0], o, results, nshot, nsamples, samples);
            }
            eval_subsets_free(subs, ns);
        }
    }
    if (rc == AS_OK) add_config(configs, &t, o, o->shots >= 0 ? o->shots : t.num_fewshot, ddir);
    eval_task_free(&t);
    return rc;
}

int eval_run(model *m, const tokenizer *tok, const eval_options *o, cJSON **out) {
    *out = NULL;
    eval_options quiet; // under mpirun rank 0 alone shows progress
    if (dist_rank() != 0) quiet = *o, quiet.progress = false, o = &quiet;
    if (!o->tasks || !*o->tasks) return as_error("--tasks: empty task list");
    cJSON *root = cJSON_CreateObject();
    cJSON_AddObjectToObject(root, "results");
    cJSON_AddObjectToObject(root, "n-shot");
    cJSON_AddObjectToObject(root, "n-samples");
    cJSON_AddObjectToObject(root, "configs");
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON_AddStringToObject(cfg, "model", o->model_id ? o->model_id : m->cfg.arch_name);
    cJSON_AddStringToObject(cfg, "precision", kernel_precision_name(o->precision));
    cJSON_AddBoolToObject(cfg, "lora", m->lora.rank > 0);
    cJSON_AddNumberToObject(cfg, "limit", (double)o->limit);
    cJSON_AddNumberToObject(cfg, "offset", (double)o->offset);
    cJSON_AddNumberToObject(cfg, "fewshot_seed", (double)o->seed);
    cJSON_AddStringToObject(cfg, "prompt_format_version", EVAL_PROMPT_FORMAT_VERSION);
    const double t0 = as_time();
    char *list = as_strdup(o->tasks);
    int rc = AS_OK;
    {
        char *copy = as_strdup(o->tasks);
        for (char *save = NULL, *name = strtok_r(copy, ",", &save); name && rc == AS_OK; name = strtok_r(NULL, ",", &save)) {
            while (*name == ' ') name++;
            if (!*name) continue;
            if (!strcmp(name, "leaderboard"))
                for (size_t i = 0; i < AS_ARRAY_LEN(LEADERBOARD) && rc == AS_OK; i++) rc = check_task(LEADERBOARD[i], o);
            else rc = check_task(name, o);
        }
        free(copy);
    }
    as_atomic_file af = {0};
    if (rc == AS_OK && o->log_samples) rc = as_atomic_open(&af, o->log_samples);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name && rc == AS_OK; name = strtok_r(NULL, ",", &save)) {
        while (*name == ' ') name++;
        if (!*name) continue;
        if (!strcmp(name, "leaderboard")) {
            for (size_t i = 0; i < AS_ARRAY_LEN(LEADERBOARD) && rc == AS_OK; i++) rc = run_task(m, tok, LEADERBOARD[i], o, root, af.fp);
        } else {
            rc = run_task(m, tok, name, o, root, af.fp);
        }
    }
    free(list);
    if (af.fp) {
        if (rc == AS_OK) rc = as_atomic_commit(&af);
        else as_atomic_abort(&af);
    }
    cJSON_AddNumberToObject(cfg, "total_evaluation_time_seconds", as_time() - t0);
    if (rc != AS_OK) {
        cJSON_Delete(root);
        return AS_FAIL;
    }
    *out = root;
    return AS_OK;
}

char *eval_results_markdown(const cJSON *root) {
    const cJSON *results = cJSON_GetObjectItem(root, "results"), *nshot = cJSON_GetObjectItem(root, "n-shot");
    size_t cap = 4096, n = 0;
    char *s = as_malloc(cap);
    n += (size_t)snprintf(s, cap, "| Task | Metric | Value | | Stderr | n-shot |\n|---|---|---:|---|---:|---:|\n");
    const cJSON *task;
    cJSON_ArrayForEach(task, results) {
        const cJSON *shots = cJSON_GetObjectItemCaseSensitive(nshot, task->string);
        const cJSON *kv;
        cJSON_ArrayForEach(kv, task) {
            if (!cJSON_IsNumber(kv) || strstr(kv->string, "_stderr,") || !strchr(kv->string, ',')) continue;
            char metric[128], key[160];
            const char *comma = strchr(kv->string, ',');
            snprintf(metric, sizeof metric, "%.*s", (int)(comma - kv->string), kv->string);
            snprintf(key, sizeof key, "%s_stderr%s", metric, comma);
            const cJSON *se = cJSON_GetObjectItemCaseSensitive(task, key);
            char ses[32] = "N/A";
            if (cJSON_IsNumber(se)) snprintf(ses, sizeof ses, "%.4f", se->valuedouble);
            char line[1024];
            char shot[16] = "";
            if (cJSON_IsNumber(shots)) snprintf(shot, sizeof shot, "%d", shots->valueint);
            int ln = snprintf(line, sizeof line, "| %s | %s | %.4f | ± | %s | %s |\n", task->string, kv->string,
                              kv->valuedouble, ses, shot);
            if (n + (size_t)ln + 1 > cap) cap = 2 * (n + (size_t)ln + 1), s = as_realloc(s, cap);
            memcpy(s + n, line, (size_t)ln + 1);
            n += (size_t)ln;
        }
    }
    return s;
}
