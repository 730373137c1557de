// lm-evaluation-harness's own task files (tests/eval/fixtures/lm_eval, copied
// unchanged from lm-eval 0.4.8) read as lm-eval reads them: their keys, the
// local files of their splits, doc_to_text / doc_to_target / doc_to_choice as
// Jinja2 templates, document keys, lists and Winogrande's built-in functions;
// and the one-line refusals of what cannot run in C.
#include "test_common.h"

#include <sys/stat.h>

#include "eval/eval_internal.h"
#include "util/common.h"

static char g_dir[256];

static char *fixture(const char *file) {
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", AS_LM_EVAL_FIXTURES, file);
    return p[k];
}

// Writes g_dir/<rel>, making its folders.
static void write_file(const char *rel, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", g_dir, rel);
    char *slash = strrchr(p, '/');
    *slash = 0;
    assert_int_equal(as_mkdir_p(p), 0);
    *slash = '/';
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void load(const char *path, eval_task *t) {
    if (eval_task_load(path, "/nonexistent", t)) fail_msg("%s", as_last_error());
}

static void test_fixtures_parse(void **st) {
    (void)st;
    static const struct {
        const char *file, *name, *eval_split, *fewshot_split, *data;
        eval_task_kind kind;
        unsigned metrics;
    } F[] = {
        {"arc_easy.yaml", "arc_easy", "test", "train", "allenai/ai2_arc/ARC-Easy/test.jsonl", EVAL_TASK_MULTIPLE_CHOICE,
         EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM},
        {"arc_challenge.yaml", "arc_challenge", "test", "train", "allenai/ai2_arc/ARC-Challenge/test.jsonl",
         EVAL_TASK_MULTIPLE_CHOICE, EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM},
        {"piqa.yaml", "piqa", "validation", "train", "piqa/validation.jsonl", EVAL_TASK_MULTIPLE_CHOICE,
         EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM},
        {"openbookqa.yaml", "openbookqa", "test", "train", "openbookqa/main/test.jsonl", EVAL_TASK_MULTIPLE_CHOICE,
         EVAL_METRIC_ACC | EVAL_METRIC_ACC_NORM},
        {"boolq.yaml", "boolq", "validation", "train", "super_glue/boolq/validation.jsonl", EVAL_TASK_MULTIPLE_CHOICE, EVAL_METRIC_ACC},
        {"winogrande.yaml", "winogrande", "validation", "train", "winogrande/winogrande_xl/validation.jsonl",
         EVAL_TASK_MULTIPLE_CHOICE, EVAL_METRIC_ACC},
        {"lambada_openai.yaml", "lambada_openai", "test", "test", "EleutherAI/lambada_openai/default/test.jsonl",
         EVAL_TASK_LOGLIKELIHOOD, EVAL_METRIC_PERPLEXITY | EVAL_METRIC_ACC},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(F); i++) {
        eval_task t;
        load(fixture(F[i].file), &t);
        assert_true(t.lm_eval);
        assert_string_equal(t.name, F[i].name);
        assert_int_equal(t.kind, F[i].kind);
        assert_int_equal(t.metrics, F[i].metrics);
        assert_string_equal(t.eval_split, F[i].eval_split);
        assert_string_equal(t.fewshot_split, F[i].fewshot_split);
        assert_string_equal(t.data, F[i].data);
        assert_int_equal(t.num_fewshot, 0);
        assert_string_equal(t.target_delimiter, " ");
        assert_string_equal(t.fewshot_delimiter, "\n\n");
        eval_task_free(&t);
    }
    eval_task t;
    load(fixture("winogrande.yaml"), &t);
    assert_int_equal(t.lm_text.fn, EVAL_LM_FN_WINOGRANDE_TEXT);
    assert_int_equal(t.lm_target.fn, EVAL_LM_FN_WINOGRANDE_TARGET);
    assert_int_equal(t.lm_choice.fn, EVAL_LM_FN_WINOGRANDE_CHOICE);
    eval_task_free(&t);
}

// The Hugging Face layouts of the five data sets, two items each.
static const char ARC[] =
    "{\"id\": \"Mercury_7179953\", \"question\": \"Which is a renewable resource?\", \"choices\": {\"text\": [\"coal\", \"wind\", "
    "\"oil\", \"natural gas\"], \"label\": [\"A\", \"B\", \"C\", \"D\"]}, \"answerKey\": \"B\"}\n"
    "{\"id\": \"NYSEDREGENTS_2015_4_8\", \"question\": \"What do plants need?\", \"choices\": {\"text\": [\"sunlight\", \"sand\", "
    "\"salt\"], \"label\": [\"1\", \"2\", \"3\"]}, \"answerKey\": \"1\"}\n";
static const char PIQA[] = "{\"goal\": \"To open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"paint the lid\", \"label\": 0}\n"
                           "{\"goal\": \"Dry wet shoes\", \"sol1\": \"put them in the freezer\", \"sol2\": \"stuff them with newspaper\", \"label\": 1}\n";
static const char OBQA[] =
    "{\"id\": \"7-980\", \"question_stem\": \"The sun is responsible for\", \"choices\": {\"text\": [\"puppies learning new tricks\", "
    "\"plants sprouting, blooming and wilting\"], \"label\": [\"A\", \"B\"]}, \"answerKey\": \"B\"}\n"
    "{\"id\": \"7-584\", \"question_stem\": \"When standing miles away from Mount Rushmore\", \"choices\": {\"text\": [\"the mountains "
    "seem very close\", \"the mountains seem smaller than in photographs\"], \"label\": [\"A\", \"B\"]}, \"answerKey\": \" B\"}\n";
static const char BOOLQ[] = "{\"question\": \"is the sky blue\", \"passage\": \"The sky looks blue by day.\", \"idx\": 0, \"label\": 1}\n"
                            "{\"question\": \"do fish fly\", \"passage\": \"Fish swim in water.\", \"idx\": 1, \"label\": 0}\n";
static const char WINO[] = "{\"sentence\": \"Sarah was a better surgeon than Maria so _ got the harder cases.\", \"option1\": \"Sarah\", "
                           "\"option2\": \"Maria\", \"answer\": \"1\"}\n"
                           "{\"sentence\": \"The trophy didn't fit in the case because _ was too big.  \", \"option1\": \"the trophy\", "
                           "\"option2\": \"the case\", \"answer\": \"1\"}\n";

// The evaluated split's documents, as a 0-shot run reads them (no few-shot file).
static cJSON *read_docs_of(eval_task *t) {
    eval_subset *s;
    int32_t ns;
    t->fewshot_data = NULL, t->fewshot_alts = NULL;
    if (eval_task_check_data(t, g_dir, 0)) fail_msg("%s", as_last_error());
    if (eval_task_read_data(t, g_dir, &s, &ns)) fail_msg("%s", as_last_error());
    assert_int_equal(ns, 1);
    cJSON *docs = s[0].docs;
    s[0].docs = NULL;
    eval_subsets_free(s, ns);
    return docs;
}

static void render(const eval_task *t, const cJSON *doc, eval_doc *d) {
    if (eval_doc_render(t, doc, 0, d)) fail_msg("%s", as_last_error());
}

// Each fixture over its split under the data folder: the prompt, choices and
// gold lm-eval builds from the document.
static void test_fixtures_render(void **st) {
    (void)st;
    write_file("allenai/ai2_arc/ARC-Easy/test.jsonl", ARC);
    write_file("piqa/validation.jsonl", PIQA);
    write_file("openbookqa/main/test.jsonl", OBQA);
    write_file("super_glue/boolq/validation.jsonl", BOOLQ);
    write_file("winogrande/winogrande_xl/validation.jsonl", WINO);
    eval_task t;
    eval_doc d;
    load(fixture("arc_easy.yaml"), &t);
    cJSON *docs = read_docs_of(&t);
    render(&t, cJSON_GetArrayItem(docs, 0), &d);
    assert_string_equal(d.text, "Question: Which is a renewable resource?\nAnswer:");
    assert_int_equal(d.n_choices, 4);
    assert_string_equal(d.choices[3], "natural gas");
    assert_int_equal(d.gold, 1);
    assert_null(d.contexts);
    eval_doc_free(&d);
    render(&t, cJSON_GetArrayItem(docs, 1), &d);
    assert_int_equal(d.n_choices, 3);
    assert_int_equal(d.gold, 0);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);

    load(fixture("piqa.yaml"), &t);
    docs = read_docs_of(&t);
    render(&t, cJSON_GetArrayItem(docs, 1), &d);
    assert_string_equal(d.text, "Question: Dry wet shoes\nAnswer:");
    assert_int_equal(d.n_choices, 2);
    assert_string_equal(d.choices[0], "put them in the freezer");
    assert_string_equal(d.choices[1], "stuff them with newspaper");
    assert_int_equal(d.gold, 1);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);

    load(fixture("openbookqa.yaml"), &t);
    docs = read_docs_of(&t);
    render(&t, cJSON_GetArrayItem(docs, 1), &d); // answerKey " B": lstrip()
    assert_string_equal(d.text, "When standing miles away from Mount Rushmore");
    assert_string_equal(d.choices[1], "the mountains seem smaller than in photographs");
    assert_int_equal(d.gold, 1);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);

    load(fixture("boolq.yaml"), &t);
    docs = read_docs_of(&t);
    render(&t, cJSON_GetArrayItem(docs, 0), &d);
    assert_string_equal(d.text, "The sky looks blue by day.\nQuestion: is the sky blue?\nAnswer:");
    assert_string_equal(d.choices[0], "no");
    assert_string_equal(d.choices[1], "yes");
    assert_int_equal(d.gold, 1);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);

    load(fixture("winogrande.yaml"), &t);
    docs = read_docs_of(&t);
    render(&t, cJSON_GetArrayItem(docs, 1), &d);
    assert_null(d.text);
    assert_non_null(d.contexts);
    assert_string_equal(d.contexts[0], "The trophy didn't fit in the case because the trophy");
    assert_string_equal(d.contexts[1], "The trophy didn't fit in the case because the case");
    assert_string_equal(d.continuation, "was too big.");
    assert_int_equal(d.gold, 0);
    char *ex = eval_doc_example(&t, &d);
    assert_string_equal(ex, "The trophy didn't fit in the case because the trophy was too big.");
    free(ex);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);
}

static void expect_error(const char *file, const char *yaml, const char *needle) {
    write_file(file, yaml);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", g_dir, file);
    eval_task t;
    int rc = eval_task_load(p, "/nonexistent", &t);
    if (rc == 0) {
        rc = eval_task_check_data(&t, g_dir, 0);
        t.fewshot_data = NULL, t.fewshot_alts = NULL;
        if (rc == 0) {
            eval_subset *s;
            int32_t ns;
            rc = eval_task_read_data(&t, g_dir, &s, &ns);
            if (rc == 0) {
                for (int64_t i = 0; rc == 0 && i < cJSON_GetArraySize(s[0].docs); i++) {
                    eval_doc d;
                    rc = eval_doc_render(&t, cJSON_GetArrayItem(s[0].docs, (int)i), i, &d);
                    if (rc == 0) eval_doc_free(&d);
                }
                eval_subsets_free(s, ns);
            }
        }
        eval_task_free(&t);
    }
    if (rc == 0) fail_msg("%s: no error; expected '%s'", file, needle);
    const char *e = as_last_error();
    if (!strstr(e, needle)) fail_msg("%s: error '%s' lacks '%s'", file, e, needle);
    assert_null(strchr(e, '\n'));
}

// What cannot run in C, and bad files: one line naming the file and the key.
static void test_refusals(void **st) {
    (void)st;
    const char *head = "task: t\ndataset_path: d\noutput_type: multiple_choice\ntest_split: test\n";
    char y[2048];
    write_file("d/test.jsonl", "{\"q\": \"a?\", \"c\": [\"x\", \"y\"], \"g\": 1}\n");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\nprocess_docs: !function utils.process_docs\n", head);
    expect_error("r1.yaml", y, "r1.yaml:8: process_docs: !function utils.process_docs: a Python function cannot run in C "
                               "(Python that rewrites the documents; preprocess the data file instead)");
    snprintf(y, sizeof y, "%sdoc_to_text: !function utils.doc_to_text\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\n", head);
    expect_error("r2.yaml", y, "r2.yaml:5: doc_to_text: !function utils.doc_to_text: a Python function cannot run in C");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\nmetric_list:\n  - metric: !function m.f\n", head);
    expect_error("r3.yaml", y, "r3.yaml:9: metric_list[0].metric: !function m.f: a Python function cannot run in C");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\nuse_prompt: \"promptsource:x\"\n", head);
    expect_error("r4.yaml", y, "r4.yaml: use_prompt: not supported (promptsource prompts)");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\ndata: x.jsonl\n", head);
    expect_error("r5.yaml", y, "r5.yaml: data: alphaspin's field, not lm-evaluation-harness's");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q|nofilter}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\n", head);
    expect_error("r6.yaml", y, "r6.yaml: doc_to_text: position 5: no filter named 'nofilter'");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: g\n", head);
    expect_error("r7.yaml", y, "r7.yaml: item 0: doc_to_text: position 3: 'question' is undefined");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{q}}\"\ndoc_to_target: g\n", head);
    expect_error("r8.yaml", y, "r8.yaml: item 0: doc_to_choice: position 2: unexpected character '?' (ast.literal_eval of 'a?')");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: \"{{g + 5}}\"\n", head);
    expect_error("r9.yaml", y, "r9.yaml: item 0: gold 6 out of range (2 choices)");
    snprintf(y, sizeof y, "%sdoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ndoc_to_target: \"z\"\n", head);
    expect_error("r10.yaml", y, "r10.yaml: item 0: doc_to_target: 'z' is not one of the choices");
    expect_error("r11.yaml", "task: t\ndataset_path: nowhere\noutput_type: multiple_choice\ntest_split: test\ndoc_to_text: q\n"
                             "doc_to_choice: c\ndoc_to_target: g\n",
                 "r11.yaml: evaluated split 'test': no local file (looked for nowhere/test.jsonl, nowhere/test.json or nowhere/test.csv");
    expect_error("r12.yaml", "include: missing.yaml\n", "r12.yaml: include: cannot read");
    snprintf(y, sizeof y, "%sdoc_to_text: q\ndoc_to_choice: c\ndoc_to_target: g\ngeneration_kwargs:\n  do_sample: true\n", head);
    expect_error("r13.yaml", y, "r13.yaml: generation_kwargs: only generate_until tasks generate");
    expect_error("r14.yaml", "task: t\ndataset_path: d\ndoc_to_text: q\ndoc_to_target: g\ngeneration_kwargs:\n  do_sample: true\n",
                 "r14.yaml: generation_kwargs.do_sample: only false (greedy) is supported");
    expect_error("r15.yaml", "task: t\ndataset_path: d\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: g\n",
                 "r15.yaml: doc_to_choice: missing");
}

// Local data named by dataset_kwargs.data_files (relative to the task file):
// JSON arrays and CSV typed as pandas types it; include: merges the included
// file's keys under the including file's.
static void test_data_files_and_include(void **st) {
    (void)st;
    write_file("local/base.yaml", "task: base\ndataset_path: json\noutput_type: multiple_choice\ntest_split: test\n"
                                  "doc_to_text: \"Q: {{ question|trim|replace('  ', ' ') }}\\nA:\"\n"
                                  "doc_to_choice: \"{{ [a, b] }}\"\ndoc_to_target: \"{{ label }}\"\ntarget_delimiter: \"\\t\"\n");
    write_file("local/quiz.yaml", "include: base.yaml\ntask: quiz\ndataset_kwargs:\n  data_files:\n    test: data/quiz.csv\n");
    write_file("local/quiz2.yaml", "include: [quiz.yaml, base.yaml]\ntask: quiz2\ndataset_path: csv\n"
                                   "doc_to_target: \"{{ 'yes' if label else 'no' }}\"\ndoc_to_choice: [\"no\", \"yes\"]\n");
    write_file("local/data/quiz.csv", "question,a,b,label\n\"  Is  it,  ok? \",no,yes,1\nWhy?,x,y,0\n");
    char p[1024];
    snprintf(p, sizeof p, "%s/local/quiz.yaml", g_dir);
    eval_task t;
    load(p, &t);
    assert_string_equal(t.name, "quiz");
    assert_string_equal(t.target_delimiter, "\t");
    cJSON *docs = read_docs_of(&t);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetArrayItem(docs, 0), "label")));
    eval_doc d;
    render(&t, cJSON_GetArrayItem(docs, 0), &d);
    assert_string_equal(d.text, "Q: Is it, ok?\nA:");
    assert_int_equal(d.gold, 1);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);
    // quiz2 includes quiz (which includes base) and base; its own keys win,
    // then quiz's.
    snprintf(p, sizeof p, "%s/local/quiz2.yaml", g_dir);
    load(p, &t);
    assert_string_equal(t.name, "quiz2");
    docs = read_docs_of(&t);
    render(&t, cJSON_GetArrayItem(docs, 1), &d);
    assert_string_equal(d.text, "Q: Why?\nA:");
    assert_string_equal(d.choices[0], "no");
    assert_int_equal(d.gold, 0);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);
    // A JSON array file.
    write_file("local/arr.yaml", "task: arr\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: arr.json\n"
                                 "output_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_choice: c\ndoc_to_target: g\n");
    write_file("local/arr.json", "[{\"q\": \"first\", \"c\": [\"a\", \"b\"], \"g\": 0}, {\"q\": \"second\", \"c\": [\"a\", \"b\"], \"g\": 1}]");
    snprintf(p, sizeof p, "%s/local/arr.yaml", g_dir);
    load(p, &t);
    docs = read_docs_of(&t);
    assert_int_equal(cJSON_GetArraySize(docs), 2);
    render(&t, cJSON_GetArrayItem(docs, 1), &d);
    assert_string_equal(d.text, "second");
    assert_int_equal(d.gold, 1);
    eval_doc_free(&d);
    cJSON_Delete(docs), eval_task_free(&t);
}

// output_type is lm-eval's name for type; metric_list its metric form (also
// in alphaspin's own task files).
static void test_output_type_and_metric_list(void **st) {
    (void)st;
    const char *y = "task: t\noutput_type: loglikelihood\ndata: d.jsonl\ndoc_to_text: \"{{c}}\"\ndoc_to_target: \" {{w}}\"\n"
                    "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
                    "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n";
    eval_task t;
    if (eval_task_parse(y, strlen(y), "t.yaml", &t)) fail_msg("%s", as_last_error());
    assert_int_equal(t.kind, EVAL_TASK_LOGLIKELIHOOD);
    assert_int_equal(t.metrics, EVAL_METRIC_PERPLEXITY | EVAL_METRIC_ACC);
    assert_false(t.lm_eval);
    eval_task_free(&t);
    const char *bad = "task: t\noutput_type: loglikelihood\ntype: multiple_choice\ndata: d\n";
    assert_int_equal(eval_task_parse(bad, strlen(bad), "t.yaml", &t), -1);
    assert_non_null(strstr(as_last_error(), "t.yaml: output_type: 'loglikelihood' disagrees with type 'multiple_choice'"));
    const char *agg = "task: t\noutput_type: loglikelihood\ndata: d\ndoc_to_text: x\ndoc_to_target: y\n"
                      "metric_list:\n  - metric: perplexity\n    aggregation: mean\n";
    assert_int_equal(eval_task_parse(agg, strlen(agg), "t.yaml", &t), -1);
    assert_non_null(strstr(as_last_error(), "t.yaml: metric_list: perplexity: aggregation 'mean' is not supported"));
    const char *fn = "task: t\ndata: d\ndoc_to_text: !function u.f\n";
    assert_int_equal(eval_task_parse(fn, strlen(fn), "t.yaml", &t), -1);
    assert_non_null(strstr(as_last_error(), "t.yaml:3: doc_to_text: !function u.f: a Python function cannot run in C"));
}

static int setup(void **st) {
    (void)st;
    char *d = as_test_tmpdir();
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_parse),
        cmocka_unit_test(test_fixtures_render),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_data_files_and_include),
        cmocka_unit_test(test_output_type_and_metric_list),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
