// lm-evaluation-harness's own task files (tests/eval/fixtures/lm_eval, copied
// unchanged from lm-eval 0.4.8): what this version answers.  It does not yet
// read lm-eval's dataset keys (issue 24 item 4, partial): every file is refused
// with one line naming the file and the first such key, and `!function` with a
// line naming the key and the Python function; `output_type` and `metric_list`
// are read.
#include "test_common.h"

#include "eval/eval_internal.h"
#include "util/common.h"

static void expect(const char *file, const char *needle) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", AS_LM_EVAL_FIXTURES, file);
    eval_task t;
    assert_int_equal(eval_task_load(p, "/nonexistent", &t), -1);
    const char *e = as_last_error();
    if (!strstr(e, needle)) fail_msg("%s: error '%s' lacks '%s'", file, e, needle);
    assert_null(strchr(e, '\n'));
    assert_non_null(strstr(e, file));
}

static void test_real_task_files(void **st) {
    (void)st;
    expect("arc_easy.yaml", "arc_easy.yaml: tag: an lm-evaluation-harness key this version does not read");
    expect("arc_challenge.yaml", "arc_challenge.yaml: include: an lm-evaluation-harness key");
    expect("piqa.yaml", "piqa.yaml: dataset_path: an lm-evaluation-harness key");
    expect("openbookqa.yaml", "openbookqa.yaml: dataset_path: an lm-evaluation-harness key");
    expect("boolq.yaml", "boolq.yaml: tag: an lm-evaluation-harness key");
    expect("lambada_openai.yaml", "lambada_openai.yaml: tag: an lm-evaluation-harness key");
    expect("winogrande.yaml", "winogrande.yaml:7: doc_to_text: !function preprocess_winogrande.doc_to_text: a Python "
                              "function cannot run in C");
}

// output_type is lm-eval's name for type; metric_list its metric form.
static void test_output_type_and_metric_list(void **st) {
    (void)st;
    const char *y = "task: t\noutput_type: loglikelihood\ndata: d.jsonl\ndoc_to_text: \"{{c}}\"\ndoc_to_target: \" {{w}}\"\n"
                    "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
                    "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n";
    eval_task t;
    if (eval_task_parse(y, strlen(y), "t.yaml", &t)) fail_msg("%s", as_last_error());
    assert_int_equal(t.kind, EVAL_TASK_LOGLIKELIHOOD);
    assert_int_equal(t.metrics, EVAL_METRIC_PERPLEXITY | EVAL_METRIC_ACC);
    eval_task_free(&t);
    const char *bad = "task: t\noutput_type: loglikelihood\ntype: multiple_choice\ndata: d\n";
    assert_int_equal(eval_task_parse(bad, strlen(bad), "t.yaml", &t), -1);
    assert_non_null(strstr(as_last_error(), "t.yaml: output_type: 'loglikelihood' disagrees with type 'multiple_choice'"));
    const char *agg = "task: t\noutput_type: loglikelihood\ndata: d\ndoc_to_text: x\ndoc_to_target: y\n"
                      "metric_list:\n  - metric: perplexity\n    aggregation: mean\n";
    assert_int_equal(eval_task_parse(agg, strlen(agg), "t.yaml", &t), -1);
    assert_non_null(strstr(as_last_error(), "t.yaml: metric_list: perplexity: aggregation 'mean' is not supported"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_task_files),
        cmocka_unit_test(test_output_type_and_metric_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
