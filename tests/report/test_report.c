// alphaspin report on synthetic run folders: the table's columns and values
// (the average computed by hand), skipped incomplete iterations, category
// sets (MT-Bench's flat and nested layouts, MMLU subjects grouped), and SVG
// charts checked to be well-formed XML with the expected series, by a small
// XML parser written here.  Malformed inputs give one error naming the file.
#include "test_common.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "report/report.h"
#include "util/common.h"

// ---- a minimal well-formedness checker for the SVG we write ----

typedef struct xml_stats {
    int elements;
    int series;             // elements with class="series"
    int points;             // class="point"
    int axis_labels;        // class="axis"
    char names[32][128];    // data-name of the series, in order
    char root[32];
} xml_stats;

static bool xml_name(const char **p, char *out, size_t cap) {
    size_t n = 0;
    if (!isalpha((unsigned char)**p) && **p != '_') return false;
    while (isalnum((unsigned char)**p) || strchr("_-:.", **p)) {
        if (n + 1 < cap) out[n++] = **p;
        (*p)++;
    }
    out[n] = 0;
    return true;
}

// Character data up to `stop` (or NUL): '<' never, '&' only as an entity.
static bool xml_chars(const char **p, char stop, char *out, size_t cap) {
    size_t n = 0;
    for (; **p && **p != stop; (*p)++) {
        if (**p == '<') return false;
        if (**p == '&') {
            static const char *const ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            bool ok = false;
            for (size_t i = 0; i < 5 && !ok; i++)
                if (!strncmp(*p, ents[i], strlen(ents[i]))) {
                    if (n + 1 < cap) out[n++] = i == 0 ? '&' : i == 1 ? '<' : i == 2 ? '>' : i == 3 ? '"' : '\'';
                    *p += strlen(ents[i]) - 1, ok = true;
                }
            if (!ok) return false;
            continue;
        }
        if ((unsigned char)**p < 0x20 && !strchr("\t\n\r", **p)) return false;
        if (n + 1 < cap) out[n++] = **p;
    }
    if (out) out[n] = 0;
    return true;
}

static bool xml_check(const char *doc, xml_stats *st) {
    memset(st, 0, sizeof *st);
    const char *p = doc;
    if (!strncmp(p, "<?xml", 5)) {
        p = strstr(p, "?>");
        if (!p) return false;
        p += 2;
    }
    char stack[64][32];
    int depth = 0;
    bool root_done = false;
    char text[4096];
    while (*p) {
        if (*p != '<') {
            if (!xml_chars(&p, '<', text, sizeof text)) return false;
            if (depth == 0)
                for (const char *c = text; *c; c++)
                    if (!isspace((unsigned char)*c)) return false; // text outside the root
            continue;
        }
        p++;
        if (*p == '/') { // end tag
            p++;
            char name[32];
            if (!xml_name(&p, name, sizeof name) || *p != '>' || depth == 0 || strcmp(stack[depth - 1], name)) return false;
            p++;
            if (--depth == 0) root_done = true;
            continue;
        }
        if (root_done) return false; // a second root
        char name[32];
        if (!xml_name(&p, name, sizeof name)) return false;
        if (depth == 0) snprintf(st->root, sizeof st->root, "%s", name);
        st->elements++;
        char attrs[16][32];
        int n_attr = 0;
        bool is_series = false;
        char dname[128] = "";
        for (;;) {
            const bool ws = isspace((unsigned char)*p);
            while (isspace((unsigned char)*p)) p++;
            if (*p == '/' || *p == '>') break;
            if (!ws) return false;
            char an[32];
            if (!xml_name(&p, an, sizeof an) || *p != '=' || p[1] != '"') return false;
            for (int i = 0; i < n_attr; i++)
                if (!strcmp(attrs[i], an)) return false; // duplicate attribute
            if (n_attr < 16) snprintf(attrs[n_attr++], 32, "%s", an);
            p += 2;
            if (!xml_chars(&p, '"', text, sizeof text) || *p != '"') return false;
            p++;
            if (!strcmp(an, "class")) {
                if (!strcmp(text, "series")) is_series = true;
                if (!strcmp(text, "point")) st->points++;
                if (!strcmp(text, "axis")) st->axis_labels++;
            }
            if (!strcmp(an, "data-name")) snprintf(dname, sizeof dname, "%.127s", text);
        }
        if (is_series) {
            if (st->series < 32) snprintf(st->names[st->series], sizeof st->names[0], "%s", dname);
            st->series++;
        }
        if (*p == '/') {
            if (p[1] != '>') return false;
            p += 2;
            if (depth == 0) root_done = true;
            continue;
        }
        p++;
        if (depth == 64) return false;
        snprintf(stack[depth++], 32, "%s", name);
    }
    return depth == 0 && root_done;
}

static void test_xml_checker_rejects_bad_documents(void **state) {
    (void)state;
    xml_stats st;
    assert_true(xml_check("<?xml version=\"1.0\"?>\n<svg a=\"1\"><g class=\"series\"/>x &amp; y</svg>\n", &st));
    assert_int_equal(st.series, 1);
    assert_false(xml_check("<svg><g></svg>", &st));           // unclosed
    assert_false(xml_check("<svg>a & b</svg>", &st));         // raw &
    assert_false(xml_check("<svg a=\"<\"></svg>", &st));      // raw < in an attribute
    assert_false(xml_check("<svg a=\"1\" a=\"2\"></svg>", &st));
    assert_false(xml_check("<svg></svg><svg></svg>", &st));   // two roots
    assert_false(xml_check("<svg a=1></svg>", &st));          // unquoted
}

// ---- synthetic run folders ----

static char *tmp;

static void write_file(const char *rel, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    assert_int_equal(as_mkdir_p(dir), AS_OK);
    assert_int_equal(as_write_file_atomic(path, text, strlen(text)), AS_OK);
}

static char *read_rel(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len) != AS_OK) fail_msg("cannot read %s: %s", path, as_last_error());
    return text;
}

static const char *const MT_CATS[8] = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"};

// Run "runA": variant "SPIN", lm-eval's flat layout ("acc,none", MT-Bench's
// "score_<category>,none", mmlu subjects as tasks), iterations 0..3 complete,
// iter_4 without summary.json.
static double arc_norm(int k) { return 0.40 + 0.01 * k; }
static double gsm_strict(int k) { return 0.10 + 0.02 * k; }
static double mmlu_acc(int k) { return 0.30 + 0.005 * k; }

static void write_run_a(void) {
    for (int k = 0; k <= 3; k++) {
        char buf[8192], mt[2048] = "";
        size_t n = 0;
        for (int c = 0; c < 8; c++)
            n += (size_t)snprintf(mt + n, sizeof mt - n, ", \"score_%s,none\": %.2f, \"score_%s_stderr,none\": 0.3", MT_CATS[c], 5.0 + c * 0.5 + k * 0.1, MT_CATS[c]);
        snprintf(buf, sizeof buf,
                 "{\"variant\": \"SPIN\", \"iteration\": %d,\n"
                 " \"train\": %s,\n"
                 " \"heldout\": {\"nll_per_token\": %.3f, \"kl_to_base\": %.3f, \"answer_len_mean\": 40.5, \"answer_len_std\": 3.25, \"task_accuracy\": null},\n"
                 " \"eval\": {\"arc_challenge\": {\"alias\": \"arc_challenge\", \"acc,none\": %.4f, \"acc_stderr,none\": 0.01, \"acc_norm,none\": %.4f, \"acc_norm_stderr,none\": 0.01},\n"
                 "          \"gsm8k\": {\"exact_match,strict-match\": %.4f, \"exact_match_stderr,strict-match\": 0.01, \"exact_match,flexible-extract\": 0.2},\n"
                 "          \"mmlu\": {\"acc,none\": %.4f, \"acc_stderr,none\": \"N/A\", \"n_subsets\": 5},\n"
                 "          \"mmlu_anatomy\": {\"acc,none\": 0.%d1}, \"mmlu_virology\": {\"acc,none\": 0.5}, \"mmlu_philosophy\": {\"acc,none\": 0.6},\n"
                 "          \"mmlu_econometrics\": {\"acc,none\": 0.2}, \"mmlu_abstract_algebra\": {\"acc,none\": 0.%d5},\n"
                 "          \"mt_bench\": {\"score,none\": %.2f%s}},\n"
                 " \"timing_s\": {\"generate\": 1, \"total\": 2}}\n",
                 k, k ? "{\"loss\": 0.5, \"rewards/margins\": 1.5}" : "{}", 1.5 - 0.1 * k, 0.01 * k, arc_norm(k) - 0.05, arc_norm(k),
                 gsm_strict(k), mmlu_acc(k), k + 1, k + 1, 6.0 + 0.1 * k, mt);
        char rel[64];
        snprintf(rel, sizeof rel, "runA/iter_%d/summary.json", k);
        write_file(rel, buf);
    }
    write_file("runA/iter_4/pairs.jsonl", "{}\n"); // in progress: no summary.json
    write_file("runA/config.yaml", "name: SPIN\n");
    write_file("runA/iter_x/summary.json", "garbage"); // not an iteration folder: ignored
}

// Run "runB": no variant (the folder's name), MT-Bench's nested layout, no
// mmlu subjects, iterations 0..2, a variant name needing escapes.
static void write_run_b(const char *variant) {
    for (int k = 0; k <= 2; k++) {
        char buf[4096], var[256] = "";
        if (variant) snprintf(var, sizeof var, "\"variant\": \"%s\", ", variant);
        snprintf(buf, sizeof buf,
                 "{%s\"iteration\": %d, \"heldout\": {\"nll_per_token\": %.3f, \"task_accuracy\": %.3f, \"n\": 32},\n"
                 " \"eval\": {\"results\": {\"arc_challenge\": {\"acc_norm\": %.4f}, \"gsm8k\": {\"exact_match,strict-match\": %.4f},\n"
                 "   \"mmlu\": {\"acc\": %.4f},\n"
                 "   \"mt_bench\": {\"score\": %.2f, \"categories\": {\"writing\": 7, \"roleplay\": 6, \"reasoning\": 4, \"math\": 3,\n"
                 "                  \"coding\": 3.5, \"extraction\": 5, \"stem\": 6.5, \"humanities\": %.1f}}}}}\n",
                 var, k, 1.4 - 0.05 * k, 0.2 + 0.1 * k, arc_norm(k) + 0.02, gsm_strict(k) + 0.03, mmlu_acc(k), 6.5, 8.0 + 0.2 * k);
        char rel[64];
        snprintf(rel, sizeof rel, "alpha-spin/iter_%d/summary.json", k);
        write_file(rel, buf);
    }
}

static int metric_index(const report *r, report_metric_kind kind, const char *name) {
    for (int i = 0; i < r->n_metrics; i++)
        if (r->metrics[i].kind == kind && !strcmp(r->metrics[i].name, name)) return i;
    return -1;
}

static const report_catset *catset(const report *r, const char *name) {
    for (int i = 0; i < r->n_catsets; i++)
        if (!strcmp(r->catsets[i].name, name)) return &r->catsets[i];
    return NULL;
}

static int setup(void **state) {
    (void)state;
    tmp = as_test_tmpdir();
    return tmp ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_two_runs_table_and_charts(void **state) {
    (void)state;
    write_run_a();
    write_run_b(NULL);
    char ra[600], rb[600], out[600];
    snprintf(ra, sizeof ra, "%s/runA", tmp);
    snprintf(rb, sizeof rb, "%s/alpha-spin/", tmp); // trailing slash: basename still "alpha-spin"
    snprintf(out, sizeof out, "%s/out", tmp);
    const char *runs[2] = {ra, rb};
    report *r;
    if (report_load(&r, runs, 2) != AS_OK) fail_msg("%s", as_last_error());

    // Rows: runA 0..3, alpha-spin 0..2; iter_4 skipped with a note.
    assert_int_equal(r->n_rows, 7);
    assert_string_equal(r->variants[0], "SPIN");
    assert_string_equal(r->variants[1], "alpha-spin");
    assert_int_equal(r->rows[3].iteration, 3);
    assert_int_equal(r->rows[4].run, 1);
    assert_int_equal(r->n_notes, 1);
    assert_non_null(strstr(r->notes[0], "runA/iter_4: no summary.json"));

    // Columns: eval metrics in order, stderr/alias gone, then average, then held-out, then train.
    static const char *const want_eval[] = {"arc_challenge/acc", "arc_challenge/acc_norm", "gsm8k/exact_match,strict-match",
                                            "gsm8k/exact_match,flexible-extract", "mmlu/acc", "mt_bench/score"};
    for (size_t i = 0; i < AS_ARRAY_LEN(want_eval); i++) {
        assert_int_equal(r->metrics[i].kind, REPORT_EVAL);
        assert_string_equal(r->metrics[i].name, want_eval[i]);
    }
    const int avg = metric_index(r, REPORT_AVERAGE, "average");
    assert_int_equal(avg, (int)AS_ARRAY_LEN(want_eval));
    assert_int_equal(r->n_avg_tasks, 3); // arc, gsm8k, mmlu; MT-Bench apart
    assert_true(r->metrics[1].primary && r->metrics[2].primary && r->metrics[4].primary && !r->metrics[0].primary);
    assert_int_equal(r->metrics[avg + 1].kind, REPORT_HELDOUT);
    assert_string_equal(r->metrics[avg + 1].name, "nll_per_token");
    const int ta = metric_index(r, REPORT_HELDOUT, "task_accuracy");
    assert_true(ta > avg);
    assert_true(metric_index(r, REPORT_TRAIN, "rewards/margins") > ta);
    for (int i = 0; i < r->n_metrics; i++) assert_null(strstr(r->metrics[i].name, "stderr"));

    // Values, with the average by hand.
    for (int k = 0; k <= 3; k++) {
        const double *v = &r->values[(size_t)k * r->n_metrics];
        assert_float_equal(v[1], arc_norm(k), 1e-9);
        assert_float_equal(v[avg], (arc_norm(k) + gsm_strict(k) + mmlu_acc(k)) / 3.0, 1e-9);
        assert_true(isnan(v[ta]));                                  // null in runA
        const int loss = metric_index(r, REPORT_TRAIN, "loss");
        assert_true(k == 0 ? isnan(v[loss]) : v[loss] == 0.5);     // no training at iteration 0
    }
    const double *v5 = &r->values[(size_t)5 * r->n_metrics];       // alpha-spin, iteration 1
    assert_float_equal(v5[avg], (arc_norm(1) + 0.02 + gsm_strict(1) + 0.03 + mmlu_acc(1)) / 3.0, 1e-9);
    assert_true(isnan(v5[0]));                                      // no arc acc in runB
    assert_float_equal(v5[ta], 0.3, 1e-12);

    // Category sets: MT-Bench (8, both layouts), MMLU grouped into lm-eval's four.
    const report_catset *mt = catset(r, "mt_bench"), *mm = catset(r, "mmlu");
    assert_non_null(mt), assert_non_null(mm);
    assert_int_equal(mt->n_cat, 8);
    for (int c = 0; c < 8; c++) assert_string_equal(mt->cats[c], MT_CATS[c]);
    assert_float_equal(mt->values[2 * 8 + 3], 5.0 + 3 * 0.5 + 2 * 0.1, 1e-9); // runA iter 2, math
    assert_float_equal(mt->values[6 * 8 + 7], 8.4, 1e-9);                    // runB iter 2, humanities
    assert_int_equal(mm->n_cat, 4);
    assert_string_equal(mm->cats[0], "stem");
    assert_string_equal(mm->cats[1], "humanities");
    assert_string_equal(mm->cats[2], "social_sciences");
    assert_string_equal(mm->cats[3], "other");
    assert_float_equal(mm->values[1 * 4 + 0], (0.21 + 0.25) / 2, 1e-9); // iter 1 stem: anatomy, abstract_algebra
    assert_float_equal(mm->values[1 * 4 + 3], 0.5, 1e-9);                // other: virology
    assert_true(isnan(mm->values[5 * 4 + 0]));                           // runB has no subjects

    // The table.
    char *table = report_table_markdown(r);
    if (getenv("REPORT_TEST_PRINT")) printf("%s", table);
    static const char header[] = "| variant | iteration | arc_challenge/acc | arc_challenge/acc_norm | gsm8k/exact_match,strict-match | "
                                 "gsm8k/exact_match,flexible-extract | mmlu/acc | mt_bench/score | average | heldout/nll_per_token | "
                                 "heldout/kl_to_base | heldout/answer_len_mean | heldout/answer_len_std | heldout/task_accuracy | heldout/n |\n";
    if (strncmp(table, header, strlen(header))) fail_msg("table header:\n%s", table);
    assert_non_null(strstr(table, "| SPIN | 2 | 0.3700 | 0.4200 | 0.1400 | 0.2000 | 0.3100 | 6.200 | 0.2900 | 1.300 | 0.0200 | 40.50 | 3.250 | – | – |\n"));
    assert_non_null(strstr(table, "| alpha-spin | 0 | – | 0.4200 | 0.1300 | – | 0.3000 | 6.500 | 0.2833 | 1.400 | – | – | – | 0.2000 | 32 |\n"));
    assert_null(strstr(table, "train/"));
    assert_non_null(strstr(table, "average: mean of arc_challenge/acc_norm, gsm8k/exact_match,strict-match, mmlu/acc"));
    int lines = 0;
    for (const char *c = table; (c = strchr(c, '\n')); c++) lines++;
    assert_int_equal(lines, 2 + 7 + 2);
    free(table);

    // Files: report.md, a line chart per metric, radar charts.
    if (report_write(r, out) != AS_OK) fail_msg("%s", as_last_error());
    char *md = read_rel("out/report.md");
    assert_non_null(strstr(md, "| SPIN | 2 |"));
    assert_non_null(strstr(md, "runA/iter\\_4: no summary.json"));
    assert_non_null(strstr(md, "](charts/line_average.svg)"));
    assert_non_null(strstr(md, "](charts/radar_mt_bench__SPIN.svg)"));
    free(md);
    xml_stats st;
    char *svg = read_rel("out/charts/line_arc_challenge_acc_norm.svg");
    if (!xml_check(svg, &st)) fail_msg("line chart is not well-formed XML:\n%s", svg);
    assert_string_equal(st.root, "svg");
    assert_int_equal(st.series, 2); // one line per run
    assert_string_equal(st.names[0], "SPIN");
    assert_string_equal(st.names[1], "alpha-spin");
    assert_int_equal(st.points, 4 + 3);
    free(svg);
    svg = read_rel("out/charts/line_arc_challenge_acc.svg"); // runA only has data
    assert_true(xml_check(svg, &st));
    assert_int_equal(st.series, 2);
    assert_int_equal(st.points, 4);
    free(svg);
    svg = read_rel("out/charts/line_train_rewards_margins.svg");
    assert_true(xml_check(svg, &st));
    assert_int_equal(st.points, 3); // iterations 1..3 of runA
    free(svg);
    svg = read_rel("out/charts/radar_mt_bench__SPIN.svg");
    if (!xml_check(svg, &st)) fail_msg("radar chart is not well-formed XML:\n%s", svg);
    assert_int_equal(st.series, 4); // iterations 0..3
    assert_string_equal(st.names[3], "iteration 3");
    assert_int_equal(st.axis_labels, 8);
    assert_int_equal(st.points, 4 * 8);
    free(svg);
    svg = read_rel("out/charts/radar_mmlu__SPIN.svg");
    assert_true(xml_check(svg, &st));
    assert_int_equal(st.axis_labels, 4);
    free(svg);
    svg = read_rel("out/charts/radar_mt_bench__last_iterates.svg");
    assert_true(xml_check(svg, &st));
    assert_int_equal(st.series, 2);
    assert_string_equal(st.names[0], "SPIN, iteration 3");
    assert_string_equal(st.names[1], "alpha-spin, iteration 2");
    free(svg);
    report_free(r);
}

static void test_escaping_and_duplicate_names(void **state) {
    (void)state;
    write_run_b("a<b>&\\\"c|d");
    char rb[600], out[600];
    snprintf(rb, sizeof rb, "%s/alpha-spin", tmp);
    snprintf(out, sizeof out, "%s/out2", tmp);
    const char *runs[2] = {rb, rb};
    report *r;
    if (report_load(&r, runs, 2) != AS_OK) fail_msg("%s", as_last_error());
    assert_string_equal(r->variants[0], "a<b>&\"c|d");
    assert_string_equal(r->variants[1], "a<b>&\"c|d (alpha-spin)"); // distinct in legends
    char *table = report_table_markdown(r);
    assert_non_null(strstr(table, "| a<b>&\"c\\|d | 0 |"));
    free(table);
    assert_int_equal(report_write(r, out), AS_OK);
    xml_stats st;
    char *svg = read_rel("out2/charts/line_heldout_task_accuracy.svg");
    if (!xml_check(svg, &st)) fail_msg("not well-formed:\n%s", svg);
    assert_string_equal(st.names[0], "a<b>&\"c|d");
    free(svg);
    report_free(r);
}

// Writes `text` as runX/iter_0/summary.json and expects report_load to fail
// with an error containing the file's path and `what`.
static void expect_bad(const char *text, const char *what) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/runX'", tmp);
    assert_int_equal(system(cmd), 0);
    write_file("runX/iter_0/summary.json", text);
    char run[600];
    snprintf(run, sizeof run, "%s/runX", tmp);
    const char *runs[1] = {run};
    report *r = (report *)1;
    assert_int_equal(report_load(&r, runs, 1), AS_FAIL);
    assert_null(r);
    const char *e = as_last_error();
    if (!strstr(e, "runX/iter_0/summary.json") || !strstr(e, what)) fail_msg("error '%s' lacks the file or '%s'", e, what);
    assert_null(strchr(e, '\n'));
}

static void test_malformed_inputs(void **state) {
    (void)state;
    expect_bad("{\"iteration\": 0, \"eval\": {\"arc\": {\"acc\": 0.5}", "not valid JSON");
    expect_bad("", "not valid JSON");
    expect_bad("[1, 2]", "must be a JSON object");
    expect_bad("{\"iteration\": 1}", "\"iteration\" is 1 but the folder is iter_0");
    expect_bad("{\"iteration\": -1}", "\"iteration\" must be an integer");
    expect_bad("{\"iteration\": 0.5}", "\"iteration\" must be an integer");
    expect_bad("{\"variant\": 3}", "\"variant\" must be a non-empty string");
    expect_bad("{\"eval\": [1]}", "\"eval\" must be an object");
    expect_bad("{\"eval\": {\"arc\": 0.5}}", "\"eval\".\"arc\" must be an object");
    expect_bad("{\"eval\": {\"mt_bench\": {\"categories\": {\"writing\": \"high\"}}}}", "\"eval\".\"mt_bench\".\"categories\".\"writing\" must be a number");
    expect_bad("{\"heldout\": {\"nll_per_token\": \"1.2\"}}", "\"heldout\".\"nll_per_token\" must be a number");
    expect_bad("{\"train\": 5}", "\"train\" must be an object");
    expect_bad("{\"timing_s\": 5}", "\"timing_s\" must be an object");

    // A missing run folder, and a run with no complete iteration.
    char run[600];
    snprintf(run, sizeof run, "%s/nope", tmp);
    const char *runs[1] = {run};
    report *r;
    assert_int_equal(report_load(&r, runs, 1), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "nope: cannot open run folder"));
    write_file("runY/iter_0/pairs.jsonl", "{}\n");
    snprintf(run, sizeof run, "%s/runY", tmp);
    assert_int_equal(report_load(&r, runs, 1), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "runY: no complete iteration"));

    // The exposed parser agrees.
    int it;
    char *variant;
    const char *ok = "{\"variant\": \"v\", \"iteration\": 2, \"eval\": {}}";
    assert_int_equal(report_parse_summary(ok, strlen(ok), "s.json", &it, &variant), AS_OK);
    assert_int_equal(it, 2);
    assert_string_equal(variant, "v");
    free(variant);
    assert_int_equal(report_parse_summary("{", 1, "s.json", &it, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "s.json"));
}

static void test_svg_edge_cases(void **state) {
    (void)state;
    // One point, a constant series, a NAN and an empty series: still well-formed.
    const double x0[1] = {0}, y0[1] = {0.5}, x1[3] = {0, 1, 2}, y1[3] = {2, 2, NAN};
    const double *xs[3] = {x0, x1, x1}, *ys[3] = {y0, y1, y1};
    const int n[3] = {1, 3, 0};
    const char *names[3] = {"one", "flat", "empty"};
    xml_stats st;
    char *svg = report_svg_line("t & <t>", "iteration", "y", 3, names, n, xs, ys);
    if (!xml_check(svg, &st)) fail_msg("not well-formed:\n%s", svg);
    assert_int_equal(st.series, 3);
    assert_int_equal(st.points, 1 + 2);
    free(svg);
    const double vals[6] = {1, 2, NAN, 3, 4, 5};
    const char *axes[3] = {"a", "b", "c"};
    svg = report_svg_radar("r", 3, axes, 2, names, vals, 10);
    assert_true(xml_check(svg, &st));
    assert_int_equal(st.series, 2);
    assert_int_equal(st.axis_labels, 3);
    assert_non_null(strstr(svg, "missing"));
    free(svg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xml_checker_rejects_bad_documents),
        cmocka_unit_test_setup_teardown(test_two_runs_table_and_charts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping_and_duplicate_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_inputs, setup, teardown),
        cmocka_unit_test(test_svg_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
