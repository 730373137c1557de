// eval_run end to end on the tiny llama with task files and data the test
// writes: generate_until with string targets and lm-eval's filters, the error
// on a gold answer the extraction cannot read.
#include "tiny_scorer.h"

#include "eval/eval.h"

static void write_text(const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *path_of(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

static const cJSON *get(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);
    if (!x) fail_msg("results lack %s / %s", a, b);
    return x;
}

// Runs one task file; *samples (when not NULL) gets the --log-samples lines.
static cJSON *run(const char *task_file, cJSON **samples) {
    eval_options o = eval_options_default();
    o.tasks = path_of(task_file);
    o.data_dir = g_dir;
    o.tasks_dir = g_dir;
    o.log_samples = samples ? path_of("samples.jsonl") : NULL;
    cJSON *r = NULL;
    if (eval_run(g_model, g_tok, &o, &r)) fail_msg("%s", as_last_error());
    if (samples) {
        char *text;
        size_t len;
        assert_int_equal(as_read_file(o.log_samples, &text, &len), 0);
        *samples = cJSON_CreateArray();
        for (char *p = text, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
            cJSON *line = cJSON_ParseWithLength(p, (size_t)(nl - p));
            assert_non_null(line);
            cJSON_AddItemToArray(*samples, line);
        }
        free(text);
    }
    return r;
}

static int run_fails(const char *task_file, const char *needle) {
    eval_options o = eval_options_default();
    o.tasks = path_of(task_file);
    o.data_dir = g_dir;
    o.tasks_dir = g_dir;
    cJSON *r = NULL;
    if (eval_run(g_model, g_tok, &o, &r) == 0) fail_msg("%s ran; expected an error with '%s'", task_file, needle);
    assert_null(r);
    if (!strstr(as_last_error(), needle)) fail_msg("error '%s' lacks '%s'", as_last_error(), needle);
    return 0;
}

// String targets: the first run learns what the (deterministic, greedy) tiny
// model answers; the second gives items 0 and 2 those answers as gold (the
// others another text) and must score exactly them, under the default filter
// ("none": the output as it is) and under a regex filter taking the first
// non-space character.
static void test_generate_until_strings(void **st) {
    (void)st;
    write_text("gen.jsonl", "{\"q\": \"the cat\", \"a\": \"?\"}\n{\"q\": \"and the\", \"a\": \"?\"}\n"
                            "{\"q\": \"Hello\", \"a\": \"?\"}\n{\"q\": \"ing\", \"a\": \"?\"}\n");
    const char *yaml = "task: gen\ntype: generate_until\ndata: gen.jsonl\nmatch: string\ndoc_to_text: \"Q: {{q}}\\nA:\"\n"
                       "gold: \"{{a}}\"\nuntil: [\"\\n\"]\nmax_gen_toks: 6\n"
                       "filter_list:\n  - name: none\n    filter:\n      - function: take_first\n"
                       "  - name: first-char\n    filter:\n      - function: regex\n        regex_pattern: \"(\\\\S)\"\n"
                       "      - function: take_first\n";
    write_text("gen.yaml", yaml);
    cJSON *samples;
    cJSON *r = run("gen.yaml", &samples);
    assert_int_equal(cJSON_GetArraySize(samples), 4);
    char out[4][64];
    for (int i = 0; i < 4; i++) {
        const cJSON *s = cJSON_GetArrayItem(samples, i);
        const cJSON *resp = cJSON_GetObjectItem(s, "output");
        if (!resp) resp = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "resps"), 0), 0);
        assert_true(cJSON_IsString(resp));
        snprintf(out[i], sizeof out[i], "%s", resp->valuestring);
        assert_true(strlen(out[i]) < 60);
        if (getenv("AS_TEST_VERBOSE")) fprintf(stderr, "output %d: [%s]\n", i, out[i]);
    }
    assert_true(get(cJSON_GetObjectItem(r, "results"), "gen", "exact_match,none")->valuedouble == 0);
    cJSON_Delete(samples), cJSON_Delete(r);
    // Items 0 and 2 answered exactly; item 1's gold is its first character
    // only (first-char matches when the output has one); item 3 never.
    char first1[8] = "";
    for (const char *p = out[1]; *p; p++)
        if (*p != ' ' && *p != '\n' && *p != '\t') { first1[0] = *p, first1[1] = 0; break; }
    const char *qs[4] = {"the cat", "and the", "Hello", "ing"}, *golds[4] = {out[0], first1, out[2], "never said"};
    as_sbuf data = {0};
    for (int i = 0; i < 4; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "q", qs[i]);
        cJSON_AddStringToObject(o, "a", golds[i]);
        char *line = cJSON_PrintUnformatted(o);
        as_sb_printf(&data, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    write_text("gen.jsonl", data.s);
    free(data.s);
    r = run("gen.yaml", NULL);
    const cJSON *res = cJSON_GetObjectItem(r, "results");
    const double want_none = (strcmp(out[1], first1) == 0) ? 0.75 : 0.5;
    assert_true(fabs(get(res, "gen", "exact_match,none")->valuedouble - want_none) < 1e-12);
    // first-char: gold "x..." vs the output's first non-space character.
    int n_first = 0;
    for (int i = 0; i < 4; i++) {
        char f[16] = "[invalid]";
        for (const char *p = out[i]; *p; p++)
            if (*p != ' ' && *p != '\n' && *p != '\t') { f[0] = *p, f[1] = 0; break; }
        n_first += !strcmp(f, golds[i]);
    }
    assert_true(fabs(get(res, "gen", "exact_match,first-char")->valuedouble - n_first / 4.0) < 1e-12);
    assert_true(cJSON_IsNumber(get(res, "gen", "exact_match_stderr,none")));
    cJSON_Delete(r);
}

// A gold the task's extraction cannot read is an error naming the item, not a 0.
static void test_unreadable_gold(void **st) {
    (void)st;
    write_text("num.jsonl", "{\"q\": \"one\", \"a\": \"#### 1\"}\n{\"q\": \"two\", \"a\": \"forty-two\"}\n");
    write_text("num.yaml", "task: num\ntype: generate_until\ndata: num.jsonl\ndoc_to_text: \"Q: {{q}}\\nA:\"\n"
                           "gold: \"{{a}}\"\nuntil: [\"\\n\"]\nmax_gen_toks: 4\n");
    run_fails("num.yaml", "num.yaml: item 1: gold: 'forty-two' holds no number");
    write_text("num2.yaml", "task: num2\ntype: generate_until\ndata: num.jsonl\ndoc_to_text: \"Q: {{q}}\\nA:\"\n"
                            "gold: \"{{answer}}\"\nuntil: [\"\\n\"]\nmax_gen_toks: 4\n");
    run_fails("num2.yaml", "num2.yaml: item 0: field 'answer' missing");
}

// The tiny model's teardown, then the files the tests wrote.
static int teardown_all(void **st) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    int rc = teardown(st);
    return system(cmd) == 0 ? rc : -1;
}

int main(void) {
    (void)loglik_alone;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_until_strings),
        cmocka_unit_test(test_unreadable_gold),
    };
    return cmocka_run_group_tests(tests, setup, teardown_all);
}
