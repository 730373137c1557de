// Reading run folders into a table of metrics per iteration, and writing
// report.md with its charts (see report.h for the rules).
#define _GNU_SOURCE
#include "report/report.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/common.h"

// ---- small helpers ----

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) as_die("vasprintf: out of memory");
    va_end(ap);
    return s;
}

static bool starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

// ---- one summary.json: a flat list of metrics and category values ----

typedef struct entry {
    report_metric_kind kind;
    char *task;     // eval only
    char *name;     // column name ("arc_challenge/acc_norm", "nll_per_token")
    double v;
} entry;

typedef struct cat_entry {
    char *set, *cat;
    double v;
} cat_entry;

typedef struct parsed {
    int iteration;  // -1: absent
    char *variant;  // NULL: absent
    entry *e;
    int n_e, cap_e;
    cat_entry *c;
    int n_c, cap_c;
} parsed;

static void add_entry(parsed *p, report_metric_kind kind, const char *task, char *name, double v) {
    if (p->n_e == p->cap_e) p->cap_e = p->cap_e ? 2 * p->cap_e : 16, p->e = as_realloc(p->e, (size_t)p->cap_e * sizeof *p->e);
    p->e[p->n_e++] = (entry){kind, task ? as_strdup(task) : NULL, name, v};
}

static void add_cat(parsed *p, char *set, const char *cat, double v) {
    if (p->n_c == p->cap_c) p->cap_c = p->cap_c ? 2 * p->cap_c : 16, p->c = as_realloc(p->c, (size_t)p->cap_c * sizeof *p->c);
    p->c[p->n_c++] = (cat_entry){set, as_strdup(cat), v};
}

static void parsed_free(parsed *p) {
    for (int i = 0; i < p->n_e; i++) free(p->e[i].task), free(p->e[i].name);
    for (int i = 0; i < p->n_c; i++) free(p->c[i].set), free(p->c[i].cat);
    free(p->e), free(p->c), free(p->variant);
    memset(p, 0, sizeof *p);
}

// "acc,none" -> "acc" (lm-evaluation-harness's default filter); other names as they are.
static char *metric_name(const char *key) {
    const size_t n = strlen(key);
    if (n > 5 && !strcmp(key + n - 5, ",none")) return as_strndup(key, n - 5);
    return as_strdup(key);
}

// Not scores: the alias, standard errors, and counts lm-evaluation-harness
// (and the eval module) put beside them.
static bool skipped_metric(const char *key) {
    return !strcmp(key, "alias") || strstr(key, "_stderr") != NULL || !strncmp(key, "n_subsets", 9) || !strncmp(key, "n_samples", 9) ||
           !strncmp(key, "num_fewshot", 11) || !strncmp(key, "sample_len", 10);
}

static const char *const PRIMARY_ORDER[] = {"acc_norm", "mc2", "exact_match,strict-match", "exact_match", "acc", "mc1", "score"};

static const char *const MT_BENCH_CATEGORIES[] = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"};

static bool is_mt_bench_category(const char *s) {
    for (size_t i = 0; i < AS_ARRAY_LEN(MT_BENCH_CATEGORIES); i++)
        if (!strcmp(s, MT_BENCH_CATEGORIES[i])) return true;
    return false;
}

// The primary score of a task object (for a subtask that becomes a category).
static bool task_primary_value(const cJSON *task, double *v) {
    for (size_t k = 0; k < AS_ARRAY_LEN(PRIMARY_ORDER); k++) {
        for (const cJSON *m = task->child; m; m = m->next) {
            if (!cJSON_IsNumber(m) || skipped_metric(m->string)) continue;
            char *name = metric_name(m->string);
            const bool hit = !strcmp(name, PRIMARY_ORDER[k]);
            free(name);
            if (hit) return *v = m->valuedouble, true;
        }
    }
    for (const cJSON *m = task->child; m; m = m->next)
        if (cJSON_IsNumber(m) && !skipped_metric(m->string)) return *v = m->valuedouble, true;
    return false;
}

// The longest proper prefix of `task`, cut before a '_' or '/', naming another
// task object of ev (lm-eval's "mmlu_anatomy" beside "mmlu"); NULL if none.
static const char *parent_task(const cJSON *ev, const char *task) {
    static char buf[512];
    const size_t n = strlen(task);
    if (n >= sizeof buf) return NULL;
    for (size_t cut = n; cut-- > 1;) {
        if (task[cut] != '_' && task[cut] != '/') continue;
        memcpy(buf, task, cut);
        buf[cut] = 0;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(ev, buf);
        if (cJSON_IsObject(p)) return buf;
    }
    return NULL;
}

static int extract_eval(const cJSON *ev, const char *path, parsed *p) {
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(ev, "results");
    if (cJSON_IsObject(res)) ev = res; // a whole lm-evaluation-harness output
    for (const cJSON *t = ev->child; t; t = t->next) {
        const char *task = t->string;
        if (!cJSON_IsObject(t)) return as_error("%s: \"eval\".\"%s\" must be an object of metrics", path, task);
        const char *parent = parent_task(ev, task);
        if (parent) {
            double v;
            if (task_primary_value(t, &v)) add_cat(p, as_strdup(parent), task + strlen(parent) + 1, v);
            continue;
        }
        const bool mt_bench = starts_with(task, "mt_bench");
        for (const cJSON *m = t->child; m; m = m->next) {
            if (skipped_metric(m->string)) continue;
            if (cJSON_IsObject(m)) { // a nested set of category scores
                const bool plain = !strcmp(m->string, "categories") || !strcmp(m->string, "per_category");
                for (const cJSON *c = m->child; c; c = c->next) {
                    if (cJSON_IsNull(c)) continue;
                    if (!cJSON_IsNumber(c))
                        return as_error("%s: \"eval\".\"%s\".\"%s\".\"%s\" must be a number", path, task, m->string, c->string);
                    add_cat(p, plain ? as_strdup(task) : xasprintf("%s/%s", task, m->string), c->string, c->valuedouble);
                }
                continue;
            }
            if (!cJSON_IsNumber(m)) continue; // alias, "N/A" stderr, null
            char *name = metric_name(m->string);
            if (mt_bench && is_mt_bench_category(name)) {
                add_cat(p, as_strdup(task), name, m->valuedouble);
                free(name);
                continue;
            }
            // "<m>_<cat>" beside a metric "<m>" with at least three such siblings.
            bool is_cat = false;
            for (const char *u = strchr(name, '_'); u && !is_cat; u = strchr(u + 1, '_')) {
                const size_t plen = (size_t)(u - name);
                int siblings = 0;
                bool base = false;
                for (const cJSON *o = t->child; o; o = o->next) {
                    if (!cJSON_IsNumber(o) || skipped_metric(o->string)) continue;
                    char *on = metric_name(o->string);
                    if (strlen(on) == plen && !strncmp(on, name, plen)) base = true;
                    else if (strlen(on) > plen + 1 && !strncmp(on, name, plen) && on[plen] == '_') siblings++;
                    free(on);
                }
                if (base && siblings >= 3) {
                    char *m0 = as_strndup(name, plen);
                    add_cat(p, !strcmp(m0, "score") ? as_strdup(task) : xasprintf("%s/%s", task, m0), u + 1, m->valuedouble);
                    free(m0);
                    is_cat = true;
                }
            }
            if (is_cat) {
                free(name);
                continue;
            }
            add_entry(p, REPORT_EVAL, task, xasprintf("%s/%s", task, name), m->valuedouble);
            free(name);
        }
    }
    return AS_OK;
}

static int extract_flat(const cJSON *o, const char *field, report_metric_kind kind, const char *path, parsed *p) {
    if (!o) return AS_OK;
    if (!cJSON_IsObject(o)) return as_error("%s: \"%s\" must be an object", path, field);
    for (const cJSON *m = o->child; m; m = m->next) {
        if (cJSON_IsNull(m)) continue;
        if (!cJSON_IsNumber(m)) return as_error("%s: \"%s\".\"%s\" must be a number", path, field, m->string);
        add_entry(p, kind, NULL, as_strdup(m->string), m->valuedouble);
    }
    return AS_OK;
}

// Control characters in keys and strings become spaces, so that names reach
// error lines, table cells and SVG text as one line.
static void scrub(cJSON *n) {
    for (; n; n = n->next) {
        if (n->string)
            for (char *c = n->string; *c; c++)
                if ((unsigned char)*c < 0x20) *c = ' ';
        if (cJSON_IsString(n) && n->valuestring)
            for (char *c = n->valuestring; *c; c++)
                if ((unsigned char)*c < 0x20) *c = ' ';
        scrub(n->child);
    }
}

static int parse_summary(const char *text, size_t len, const char *path, parsed *p) {
    memset(p, 0, sizeof *p);
    p->iteration = -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        const size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return as_error("%s: not valid JSON (at byte %zu)", path, at);
    }
    scrub(root);
    int rc = AS_FAIL;
    if (!cJSON_IsObject(root)) {
        as_error("%s: must be a JSON object", path);
        goto done;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "variant");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) || !*v->valuestring) {
            as_error("%s: \"variant\" must be a non-empty string", path);
            goto done;
        }
        p->variant = as_strdup(v->valuestring);
    }
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "iteration");
    if (it) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e6 || it->valuedouble != floor(it->valuedouble)) {
            as_error("%s: \"iteration\" must be an integer >= 0", path);
            goto done;
        }
        p->iteration = (int)it->valuedouble;
    }
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "eval");
    if (ev && !cJSON_IsNull(ev)) {
        if (!cJSON_IsObject(ev)) {
            as_error("%s: \"eval\" must be an object", path);
            goto done;
        }
        if (extract_eval(ev, path, p) != AS_OK) goto done;
    }
    if (extract_flat(cJSON_GetObjectItemCaseSensitive(root, "heldout"), "heldout", REPORT_HELDOUT, path, p) != AS_OK) goto done;
    if (extract_flat(cJSON_GetObjectItemCaseSensitive(root, "train"), "train", REPORT_TRAIN, path, p) != AS_OK) goto done;
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "timing_s");
    if (ts && !cJSON_IsObject(ts)) {
        as_error("%s: \"timing_s\" must be an object", path);
        goto done;
    }
    rc = AS_OK;
done:
    cJSON_Delete(root);
    if (rc != AS_OK) parsed_free(p);
    return rc;
}

int report_parse_summary(const char *text, size_t len, const char *path, int *iteration, char **variant) {
    parsed p;
    if (parse_summary(text, len, path, &p) != AS_OK) return AS_FAIL;
    *iteration = p.iteration;
    if (variant) *variant = p.variant, p.variant = NULL;
    parsed_free(&p);
    return AS_OK;
}

// ---- MMLU's subjects and lm-evaluation-harness's four categories ----

static const char *const MMLU_STEM[] = {
    "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering",
    "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning"};
static const char *const MMLU_HUMANITIES[] = {
    "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history", "international_law",
    "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
    "world_religions"};
static const char *const MMLU_SOCIAL[] = {
    "econometrics", "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_microeconomics", "high_school_psychology", "human_sexuality", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy"};
static const char *const MMLU_OTHER[] = {
    "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging", "management", "marketing",
    "medical_genetics", "miscellaneous", "nutrition", "professional_accounting", "professional_medicine", "virology"};

static const struct {
    const char *name;
    const char *const *subjects;
    size_t n;
} MMLU_GROUPS[4] = {
    {"stem", MMLU_STEM, AS_ARRAY_LEN(MMLU_STEM)},
    {"humanities", MMLU_HUMANITIES, AS_ARRAY_LEN(MMLU_HUMANITIES)},
    {"social_sciences", MMLU_SOCIAL, AS_ARRAY_LEN(MMLU_SOCIAL)},
    {"other", MMLU_OTHER, AS_ARRAY_LEN(MMLU_OTHER)},
};

static int mmlu_group(const char *subject) {
    for (int g = 0; g < 4; g++)
        for (size_t i = 0; i < MMLU_GROUPS[g].n; i++)
            if (!strcmp(subject, MMLU_GROUPS[g].subjects[i])) return g;
    return -1;
}

// ---- building the report ----

static int find_metric(const report *r, report_metric_kind kind, const char *name) {
    for (int i = 0; i < r->n_metrics; i++)
        if (r->metrics[i].kind == kind && !strcmp(r->metrics[i].name, name)) return i;
    return -1;
}

static int find_catset(const report *r, const char *name) {
    for (int i = 0; i < r->n_catsets; i++)
        if (!strcmp(r->catsets[i].name, name)) return i;
    return -1;
}

static int find_cat(const report_catset *c, const char *name) {
    for (int i = 0; i < c->n_cat; i++)
        if (!strcmp(c->cats[i], name)) return i;
    return -1;
}

static void add_note(report *r, char *note) {
    r->notes = as_realloc(r->notes, (size_t)(r->n_notes + 1) * sizeof *r->notes);
    r->notes[r->n_notes++] = note;
}

void report_free(report *r) {
    if (!r) return;
    for (int i = 0; i < r->n_runs; i++) free(r->run_paths[i]), free(r->variants[i]);
    free(r->run_paths), free(r->variants), free(r->rows), free(r->values);
    for (int i = 0; i < r->n_metrics; i++) free(r->metrics[i].name), free(r->metrics[i].task);
    free(r->metrics);
    for (int i = 0; i < r->n_catsets; i++) {
        for (int j = 0; j < r->catsets[i].n_cat; j++) free(r->catsets[i].cats[j]);
        free(r->catsets[i].cats), free(r->catsets[i].values), free(r->catsets[i].name);
    }
    free(r->catsets);
    for (int i = 0; i < r->n_notes; i++) free(r->notes[i]);
    free(r->notes);
    free(r);
}

static int cmp_int(const void *a, const void *b) {
    const int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

// The iteration numbers k of the folders RUN/iter_<k>, ascending.
static int list_iterations(const char *run, int **out, int *n) {
    *out = NULL, *n = 0;
    DIR *d = opendir(run);
    if (!d) return as_error("%s: cannot open run folder: %s", run, strerror(errno));
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "iter_", 5)) continue;
        const char *s = e->d_name + 5;
        if (!*s || strlen(s) > 6 || strspn(s, "0123456789") != strlen(s)) continue;
        if (*n == cap) cap = cap ? 2 * cap : 8, *out = as_realloc(*out, (size_t)cap * sizeof **out);
        (*out)[(*n)++] = atoi(s);
    }
    closedir(d);
    if (*n) qsort(*out, (size_t)*n, sizeof **out, cmp_int);
    return AS_OK;
}

static char *run_basename(const char *run) {
    size_t n = strlen(run);
    while (n > 1 && run[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && run[b - 1] != '/') b--;
    return n > b ? as_strndup(run + b, n - b) : as_strdup(run);
}

// Folds rows' metrics and categories into r (columns in order of first appearance).
static void add_row(report *r, int run, const parsed *p) {
    r->rows = as_realloc(r->rows, (size_t)(r->n_rows + 1) * sizeof *r->rows);
    r->rows[r->n_rows++] = (report_row){run, p->iteration};
    for (int i = 0; i < p->n_e; i++) {
        if (find_metric(r, p->e[i].kind, p->e[i].name) >= 0) continue;
        r->metrics = as_realloc(r->metrics, (size_t)(r->n_metrics + 1) * sizeof *r->metrics);
        r->metrics[r->n_metrics++] = (report_metric){p->e[i].kind, as_strdup(p->e[i].name), p->e[i].task ? as_strdup(p->e[i].task) : NULL, 0};
    }
    for (int i = 0; i < p->n_c; i++) {
        int s = find_catset(r, p->c[i].set);
        if (s < 0) {
            r->catsets = as_realloc(r->catsets, (size_t)(r->n_catsets + 1) * sizeof *r->catsets);
            r->catsets[r->n_catsets] = (report_catset){as_strdup(p->c[i].set), 0, NULL, NULL};
            s = r->n_catsets++;
        }
        report_catset *c = &r->catsets[s];
        if (find_cat(c, p->c[i].cat) < 0) {
            c->cats = as_realloc(c->cats, (size_t)(c->n_cat + 1) * sizeof *c->cats);
            c->cats[c->n_cat++] = as_strdup(p->c[i].cat);
        }
    }
}

static int cmp_metric_kind(const report_metric *x, const report_metric *y) { return (int)x->kind - (int)y->kind; }

// Replaces MMLU subjects by lm-eval's four categories (mean of the subjects present).
static void group_mmlu(report *r, report_catset *c) {
    int known = 0;
    for (int i = 0; i < c->n_cat; i++) known += mmlu_group(c->cats[i]) >= 0;
    if (c->n_cat < 4 || 2 * known < c->n_cat) return;
    double *vals = as_malloc((size_t)r->n_rows * 4 * sizeof *vals);
    bool present[4] = {false};
    for (int row = 0; row < r->n_rows; row++) {
        for (int g = 0; g < 4; g++) {
            double sum = 0.0;
            int n = 0;
            for (int i = 0; i < c->n_cat; i++) {
                const double v = c->values[(size_t)row * c->n_cat + i];
                if (mmlu_group(c->cats[i]) == g && !isnan(v)) sum += v, n++;
            }
            vals[(size_t)row * 4 + g] = n ? sum / n : NAN;
            if (n) present[g] = true;
        }
    }
    for (int i = 0; i < c->n_cat; i++) free(c->cats[i]);
    free(c->cats), free(c->values);
    int ng = 0;
    for (int g = 0; g < 4; g++) ng += present[g];
    c->cats = as_malloc((size_t)AS_MAX(ng, 1) * sizeof *c->cats);
    c->values = as_malloc((size_t)r->n_rows * (size_t)AS_MAX(ng, 1) * sizeof *c->values);
    int k = 0;
    for (int g = 0; g < 4; g++) {
        if (!present[g]) continue;
        c->cats[k] = as_strdup(MMLU_GROUPS[g].name);
        for (int row = 0; row < r->n_rows; row++) c->values[(size_t)row * ng + k] = vals[(size_t)row * 4 + g];
        k++;
    }
    c->n_cat = ng;
    free(vals);
}

int report_load(report **out, const char *const *runs, int n_runs) {
    *out = NULL;
    if (n_runs < 1) return as_error("report: no run folder given");
    report *r = as_calloc(1, sizeof *r);
    r->n_runs = n_runs;
    r->run_paths = as_calloc((size_t)n_runs, sizeof *r->run_paths);
    r->variants = as_calloc((size_t)n_runs, sizeof *r->variants);
    parsed *ps = NULL; // one per row
    int n_ps = 0;
    int rc = AS_FAIL;
    for (int ri = 0; ri < n_runs; ri++) {
        r->run_paths[ri] = as_strdup(runs[ri]);
        int *iters, n_it;
        if (list_iterations(runs[ri], &iters, &n_it) != AS_OK) goto done;
        int complete = 0;
        for (int k = 0; k < n_it; k++) {
            char *path = xasprintf("%s/iter_%d/summary.json", runs[ri], iters[k]);
            char *text = NULL;
            size_t len = 0;
            if (access(path, F_OK) != 0) {
                add_note(r, xasprintf("%s/iter_%d: no summary.json (iteration incomplete), skipped", runs[ri], iters[k]));
                free(path);
                continue;
            }
            parsed p;
            if (as_read_file(path, &text, &len) != AS_OK || parse_summary(text, len, path, &p) != AS_OK) {
                free(text), free(path), free(iters);
                goto done;
            }
            free(text);
            if (p.iteration >= 0 && p.iteration != iters[k]) {
                as_error("%s: \"iteration\" is %d but the folder is iter_%d", path, p.iteration, iters[k]);
                parsed_free(&p);
                free(path), free(iters);
                goto done;
            }
            free(path);
            p.iteration = iters[k];
            if (!r->variants[ri] && p.variant) r->variants[ri] = as_strdup(p.variant);
            add_row(r, ri, &p);
            ps = as_realloc(ps, (size_t)(n_ps + 1) * sizeof *ps);
            ps[n_ps++] = p;
            complete++;
        }
        free(iters);
        if (!complete) {
            as_error("%s: no complete iteration (no iter_<k>/summary.json)", runs[ri]);
            goto done;
        }
        if (!r->variants[ri]) r->variants[ri] = run_basename(runs[ri]);
        // Distinct names for the legend and the table.
        for (int k = 2;; k++) {
            bool clash = false;
            for (int j = 0; j < ri; j++) clash |= !strcmp(r->variants[j], r->variants[ri]);
            if (!clash) break;
            char *base = run_basename(runs[ri]);
            char *alt = k == 2 && strcmp(base, r->variants[ri]) ? xasprintf("%s (%s)", r->variants[ri], base)
                                                                 : xasprintf("%s (%d)", r->variants[ri], k);
            free(base);
            free(r->variants[ri]);
            r->variants[ri] = alt;
        }
    }
    // Column order: eval, (average), held-out, train; stable within a kind
    // (insertion sort: qsort is not stable).
    for (int i = 1; i < r->n_metrics; i++) {
        report_metric m = r->metrics[i];
        int j = i;
        while (j > 0 && cmp_metric_kind(&r->metrics[j - 1], &m) > 0) r->metrics[j] = r->metrics[j - 1], j--;
        r->metrics[j] = m;
    }
    // Primary metric of each task and the average column.
    int n_eval = 0;
    while (n_eval < r->n_metrics && r->metrics[n_eval].kind == REPORT_EVAL) n_eval++;
    for (int i = 0; i < n_eval; i++) {
        const char *task = r->metrics[i].task;
        bool seen = false;
        for (int j = 0; j < i; j++) seen |= !strcmp(r->metrics[j].task, task);
        if (seen) continue;
        int best = -1, best_rank = (int)AS_ARRAY_LEN(PRIMARY_ORDER);
        for (int j = i; j < n_eval; j++) {
            if (strcmp(r->metrics[j].task, task)) continue;
            if (best < 0) best = j;
            const char *metric = r->metrics[j].name + strlen(task) + 1;
            for (int k = 0; k < best_rank; k++)
                if (!strcmp(metric, PRIMARY_ORDER[k])) best = j, best_rank = k;
        }
        r->metrics[best].primary = 1;
        if (!starts_with(task, "mt_bench")) r->n_avg_tasks++;
    }
    if (r->n_avg_tasks < 2) r->n_avg_tasks = 0;
    if (r->n_avg_tasks) {
        r->metrics = as_realloc(r->metrics, (size_t)(r->n_metrics + 1) * sizeof *r->metrics);
        memmove(&r->metrics[n_eval + 1], &r->metrics[n_eval], (size_t)(r->n_metrics - n_eval) * sizeof *r->metrics);
        r->metrics[n_eval] = (report_metric){REPORT_AVERAGE, as_strdup("average"), NULL, 0};
        r->n_metrics++;
    }
    // Values.
    r->values = as_malloc((size_t)r->n_rows * (size_t)AS_MAX(r->n_metrics, 1) * sizeof *r->values);
    for (size_t i = 0; i < (size_t)r->n_rows * (size_t)r->n_metrics; i++) r->values[i] = NAN;
    for (int s = 0; s < r->n_catsets; s++) {
        report_catset *c = &r->catsets[s];
        c->values = as_malloc((size_t)r->n_rows * (size_t)c->n_cat * sizeof *c->values);
        for (size_t i = 0; i < (size_t)r->n_rows * (size_t)c->n_cat; i++) c->values[i] = NAN;
    }
    for (int row = 0; row < r->n_rows; row++) {
        const parsed *p = &ps[row];
        double *v = &r->values[(size_t)row * r->n_metrics];
        for (int i = 0; i < p->n_e; i++) v[find_metric(r, p->e[i].kind, p->e[i].name)] = p->e[i].v;
        for (int i = 0; i < p->n_c; i++) {
            report_catset *c = &r->catsets[find_catset(r, p->c[i].set)];
            c->values[(size_t)row * c->n_cat + find_cat(c, p->c[i].cat)] = p->c[i].v;
        }
        if (r->n_avg_tasks) {
            double sum = 0.0;
            int n = 0;
            bool all = true;
            for (int i = 0; i < r->n_metrics; i++) {
                if (r->metrics[i].kind != REPORT_EVAL || !r->metrics[i].primary || starts_with(r->metrics[i].task, "mt_bench")) continue;
                if (isnan(v[i])) all = false;
                else sum += v[i], n++;
            }
            v[find_metric(r, REPORT_AVERAGE, "average")] = all && n ? sum / n : NAN;
        }
    }
    for (int s = 0; s < r->n_catsets; s++) group_mmlu(r, &r->catsets[s]);
    rc = AS_OK;
done:
    for (int i = 0; i < n_ps; i++) parsed_free(&ps[i]);
    free(ps);
    if (rc != AS_OK) {
        report_free(r);
        return AS_FAIL;
    }
    *out = r;
    return AS_OK;
}

// ---- the Markdown table ----

// Decimals of a column: 4 for scores in [0, 1]; none for counts (every
// value an integer above 1); else about four significant digits of the
// column's largest magnitude (at most 4 decimals).
static int column_decimals(const report *r, int m) {
    bool unit = true, counts = true;
    double mx = 0.0;
    for (int row = 0; row < r->n_rows; row++) {
        const double v = r->values[(size_t)row * r->n_metrics + m];
        if (isnan(v)) continue;
        if (v < 0.0 || v > 1.0) unit = false;
        if (v != floor(v) || fabs(v) > 1e15) counts = false;
        mx = fmax(mx, fabs(v));
    }
    if (unit && r->metrics[m].kind != REPORT_HELDOUT) return 4;
    if (counts && mx > 1.0) return 0;
    if (!(mx > 0.0) || isinf(mx)) return 4;
    const int d = 3 - (int)floor(log10(mx));
    return d < 0 ? 0 : d > 4 ? 4 : d;
}

static void sb_cell_text(as_sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '|') as_sb_printf(b, "\\|");
        else if (*s == '\n' || *s == '\r') as_sb_printf(b, " ");
        else as_sb_printf(b, "%c", *s);
    }
}

static const char *metric_label(const report_metric *m, char *buf, size_t cap) {
    switch (m->kind) {
    case REPORT_EVAL: snprintf(buf, cap, "%s", m->name); break;
    case REPORT_AVERAGE: snprintf(buf, cap, "average"); break;
    case REPORT_HELDOUT: snprintf(buf, cap, "heldout/%s", m->name); break;
    case REPORT_TRAIN: snprintf(buf, cap, "train/%s", m->name); break;
    }
    return buf;
}

char *report_table_markdown(const report *r) {
    as_sbuf b = {0};
    char label[512];
    as_sb_printf(&b, "| variant | iteration |");
    for (int m = 0; m < r->n_metrics; m++) {
        if (r->metrics[m].kind == REPORT_TRAIN) continue;
        as_sb_printf(&b, " ");
        sb_cell_text(&b, metric_label(&r->metrics[m], label, sizeof label));
        as_sb_printf(&b, " |");
    }
    as_sb_printf(&b, "\n|---|---:|");
    for (int m = 0; m < r->n_metrics; m++)
        if (r->metrics[m].kind != REPORT_TRAIN) as_sb_printf(&b, "---:|");
    as_sb_printf(&b, "\n");
    for (int row = 0; row < r->n_rows; row++) {
        as_sb_printf(&b, "| ");
        sb_cell_text(&b, r->variants[r->rows[row].run]);
        as_sb_printf(&b, " | %d |", r->rows[row].iteration);
        for (int m = 0; m < r->n_metrics; m++) {
            if (r->metrics[m].kind == REPORT_TRAIN) continue;
            const double v = r->values[(size_t)row * r->n_metrics + m];
            if (isnan(v)) as_sb_printf(&b, " – |");
            else as_sb_printf(&b, " %.*f |", column_decimals(r, m), v);
        }
        as_sb_printf(&b, "\n");
    }
    if (r->n_avg_tasks) {
        as_sb_printf(&b, "\naverage: mean of");
        bool first = true;
        for (int m = 0; m < r->n_metrics; m++) {
            const report_metric *x = &r->metrics[m];
            if (x->kind != REPORT_EVAL || !x->primary || starts_with(x->task, "mt_bench")) continue;
            as_sb_printf(&b, "%s %s", first ? "" : ",", x->name);
            first = false;
        }
        as_sb_printf(&b, " (each task's primary metric; MT-Bench apart), for rows that have them all.\n");
    }
    if (!b.s) as_sb_printf(&b, "%s", "");
    return b.s;
}

// ---- report.md and the charts ----

// File name of a chart: [A-Za-z0-9_-] kept, everything else '_'.
static char *chart_file(const char *prefix, const char *name) {
    char *s = xasprintf("%s_%s.svg", prefix, name);
    for (char *c = s; *c && strcmp(c, ".svg"); c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_')) *c = '_';
    return s;
}

static int write_text(const char *dir, const char *name, const char *text) {
    char *path = xasprintf("%s/%s", dir, name);
    const int rc = as_write_file_atomic(path, text, strlen(text));
    free(path);
    return rc;
}

static void md_text(as_sbuf *b, const char *s) {
    for (; *s; s++) {
        if (strchr("\\`*_[]<>|#", *s)) as_sb_printf(b, "\\%c", *s);
        else as_sb_printf(b, "%c", *s);
    }
}

static double radar_max(const report_catset *c, int n_rows) {
    double mx = 0.0;
    for (size_t i = 0; i < (size_t)n_rows * c->n_cat; i++)
        if (!isnan(c->values[i])) mx = fmax(mx, c->values[i]);
    if (mx <= 1.0) return 1.0;
    if (mx <= 10.0) return 10.0;
    if (mx <= 100.0) return 100.0;
    return mx;
}

int report_write(const report *r, const char *out_dir) {
    char *charts = xasprintf("%s/charts", out_dir);
    if (as_mkdir_p(charts) != AS_OK) {
        free(charts);
        return AS_FAIL;
    }
    int rc = AS_FAIL;
    as_sbuf md = {0};
    as_sb_printf(&md, "# alphaspin report\n\nRuns:\n\n");
    for (int ri = 0; ri < r->n_runs; ri++) {
        int n = 0, lo = -1, hi = -1;
        for (int row = 0; row < r->n_rows; row++)
            if (r->rows[row].run == ri) {
                if (lo < 0) lo = r->rows[row].iteration;
                hi = r->rows[row].iteration, n++;
            }
        as_sb_printf(&md, "- `%s`: variant **", r->run_paths[ri]);
        md_text(&md, r->variants[ri]);
        as_sb_printf(&md, "**, %d complete iteration%s (%d..%d)\n", n, n == 1 ? "" : "s", lo, hi);
    }
    for (int i = 0; i < r->n_notes; i++) {
        as_sb_printf(&md, "%s", i == 0 ? "\nSkipped:\n\n" : "");
        as_sb_printf(&md, "- ");
        md_text(&md, r->notes[i]);
        as_sb_printf(&md, "\n");
    }
    char *table = report_table_markdown(r);
    as_sb_printf(&md, "\n## Scores per iteration\n\n%s", table);
    free(table);

    // One line chart per metric: x = iteration, one line per run.
    const int n_runs = r->n_runs;
    const char **names = as_malloc((size_t)n_runs * sizeof *names);
    int *npts = as_malloc((size_t)n_runs * sizeof *npts);
    double **xs = as_malloc((size_t)n_runs * sizeof *xs), **ys = as_malloc((size_t)n_runs * sizeof *ys);
    for (int ri = 0; ri < n_runs; ri++) {
        names[ri] = r->variants[ri];
        xs[ri] = as_malloc((size_t)r->n_rows * sizeof **xs);
        ys[ri] = as_malloc((size_t)r->n_rows * sizeof **ys);
    }
    as_sb_printf(&md, "\n## Metrics per iteration\n\n");
    char label[512];
    for (int m = 0; m < r->n_metrics; m++) {
        bool any = false;
        for (int ri = 0; ri < n_runs; ri++) npts[ri] = 0;
        for (int row = 0; row < r->n_rows; row++) {
            const int ri = r->rows[row].run;
            const double v = r->values[(size_t)row * r->n_metrics + m];
            xs[ri][npts[ri]] = r->rows[row].iteration;
            ys[ri][npts[ri]++] = v;
            any |= !isnan(v);
        }
        if (!any) continue;
        metric_label(&r->metrics[m], label, sizeof label);
        char *svg = report_svg_line(label, "iteration", label, n_runs, names, npts, (const double *const *)xs, (const double *const *)ys);
        char *file = chart_file("line", label);
        char *rel = xasprintf("charts/%s", file);
        const int w = write_text(out_dir, rel, svg);
        free(svg);
        if (w == AS_OK) {
            as_sb_printf(&md, "![");
            md_text(&md, label);
            as_sb_printf(&md, "](%s)\n", rel);
        }
        free(file), free(rel);
        if (w != AS_OK) goto charts_done;
    }

    // Radar charts: per category set, one per run (a polygon per
    // iteration), and the last iterate of every run together.
    if (r->n_catsets) as_sb_printf(&md, "\n## Categories\n\n");
    for (int s = 0; s < r->n_catsets; s++) {
        const report_catset *c = &r->catsets[s];
        if (c->n_cat < 3) {
            char *note = xasprintf("%s: %d categories, too few for a radar chart", c->name, c->n_cat);
            as_sb_printf(&md, "- ");
            md_text(&md, note);
            as_sb_printf(&md, "\n");
            free(note);
            continue;
        }
        const double mx = radar_max(c, r->n_rows);
        char **series = as_malloc((size_t)(r->n_rows + n_runs) * sizeof *series);
        double *vals = as_malloc((size_t)(r->n_rows + n_runs) * (size_t)c->n_cat * sizeof *vals);
        for (int pass = 0; pass <= n_runs; pass++) {
            // pass < n_runs: run `pass`, every iteration; pass == n_runs: last iterate of each run.
            if (pass == n_runs && n_runs < 2) break;
            int ns = 0;
            for (int row = 0; row < r->n_rows; row++) {
                const int ri = r->rows[row].run;
                if (pass < n_runs && ri != pass) continue;
                if (pass == n_runs && row + 1 < r->n_rows && r->rows[row + 1].run == ri) continue; // not the run's last row
                bool any = false;
                for (int a = 0; a < c->n_cat; a++) any |= !isnan(c->values[(size_t)row * c->n_cat + a]);
                if (!any) continue;
                series[ns] = pass < n_runs ? xasprintf("iteration %d", r->rows[row].iteration)
                                           : xasprintf("%s, iteration %d", r->variants[ri], r->rows[row].iteration);
                memcpy(&vals[(size_t)ns * c->n_cat], &c->values[(size_t)row * c->n_cat], (size_t)c->n_cat * sizeof *vals);
                ns++;
            }
            if (ns) {
                char *title = pass < n_runs ? xasprintf("%s: %s", c->name, r->variants[pass]) : xasprintf("%s: last iterates", c->name);
                char *svg = report_svg_radar(title, c->n_cat, (const char *const *)c->cats, ns, (const char *const *)series, vals, mx);
                char *file = chart_file("radar", title);
                char *rel = xasprintf("charts/%s", file);
                const int w = write_text(out_dir, rel, svg);
                if (w == AS_OK) {
                    as_sb_printf(&md, "![");
                    md_text(&md, title);
                    as_sb_printf(&md, "](%s)\n", rel);
                }
                free(svg), free(file), free(rel), free(title);
                if (w != AS_OK) {
                    for (int i = 0; i < ns; i++) free(series[i]);
                    free(series), free(vals);
                    goto charts_done;
                }
            }
            for (int i = 0; i < ns; i++) free(series[i]);
        }
        free(series), free(vals);
    }
    if (write_text(out_dir, "report.md", md.s) != AS_OK) goto charts_done;
    rc = AS_OK;
charts_done:
    for (int ri = 0; ri < n_runs; ri++) free(xs[ri]), free(ys[ri]);
    free(xs), free(ys), free(names), free(npts), free(md.s), free(charts);
    return rc;
}
