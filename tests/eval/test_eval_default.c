// eval_run end to end on the default model and ../shared/data, a few items per
// task: the lm-eval shaped results, GSM8K's generation path, MT-Bench answers
// in FastChat's JSONL and the local judge's parse (the model judging itself).
#include "test_common.h"

#include <math.h>

#include "eval/eval.h"
#include "util/common.h"

static model *g_m;
static tokenizer *g_tok;

static const cJSON *get(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);
    if (!x) fail_msg("results lack %s / %s", a, b);
    return x;
}

static void test_multiple_choice_results(void **st) {
    (void)st;
    eval_options o = eval_options_default();
    o.tasks = "arc_easy,winogrande";
    o.limit = 6;
    o.shots = 1;
    o.data_dir = AS_SHARED_DATA;
    o.tasks_dir = AS_TASKS_DIR;
    cJSON *r;
    if (eval_run(g_m, g_tok, &o, &r)) fail_msg("%s", as_last_error());
    const cJSON *res = cJSON_GetObjectItem(r, "results");
    double acc = get(res, "arc_easy", "acc,none")->valuedouble, norm = get(res, "arc_easy", "acc_norm,none")->valuedouble;
    assert_true(acc >= 0 && acc <= 1 && norm >= 0 && norm <= 1);
    // Six 0/1 values: the mean is a multiple of 1/6.
    assert_true(fabs(acc * 6 - (double)(int)(acc * 6 + 0.5)) < 1e-9);
    assert_true(cJSON_IsNumber(get(res, "arc_easy", "acc_stderr,none")));
    assert_true(cJSON_IsNumber(get(res, "winogrande", "acc,none")));
    assert_int_equal(get(r, "n-shot", "arc_easy")->valueint, 1);
    assert_int_equal(get(cJSON_GetObjectItem(r, "n-samples"), "arc_easy", "effective")->valueint, 6);
    assert_int_equal(get(cJSON_GetObjectItem(r, "n-samples"), "arc_easy", "original")->valueint, 2376);
    assert_string_equal(get(cJSON_GetObjectItem(r, "configs"), "arc_easy", "prompt_format_version")->valuestring,
                        EVAL_PROMPT_FORMAT_VERSION);
    char *md = eval_results_markdown(r);
    assert_non_null(strstr(md, "| arc_easy | acc_norm,none | "));
    free(md);
    cJSON_Delete(r);
    // A task that does not exist: one error line naming it.
    o.tasks = "arc_easy,nope";
    assert_int_equal(eval_run(g_m, g_tok, &o, &r), -1);
    assert_null(r);
    assert_non_null(strstr(as_last_error(), "no built-in task 'nope'"));
}

static void test_gsm8k_and_mt_bench(void **st) {
    (void)st;
    char *dir = as_test_tmpdir();
    char answers[512], judgments[512];
    snprintf(answers, sizeof answers, "%s/answers.jsonl", dir);
    snprintf(judgments, sizeof judgments, "%s/judgments.jsonl", dir);
    eval_options o = eval_options_default();
    o.tasks = "gsm8k,mt_bench";
    o.limit = 2;
    o.shots = 1;
    o.max_new_tokens = 24;
    o.data_dir = AS_SHARED_DATA;
    o.tasks_dir = AS_TASKS_DIR;
    o.mt_bench_answers = answers;
    o.mt_bench_judgments = judgments;
    o.model_id = "smol-test";
    o.judge = g_m, o.judge_tok = g_tok;
    cJSON *r;
    if (eval_run(g_m, g_tok, &o, &r)) fail_msg("%s", as_last_error());
    const cJSON *res = cJSON_GetObjectItem(r, "results");
    assert_true(cJSON_IsNumber(get(res, "gsm8k", "exact_match,strict-match")));
    assert_true(cJSON_IsNumber(get(res, "gsm8k", "exact_match,flexible-extract")));
    assert_int_equal(get(res, "mt_bench", "n_questions")->valueint, 2);
    assert_true(cJSON_IsNumber(get(res, "mt_bench", "score,none")));
    char *text;
    size_t len;
    assert_int_equal(as_read_file(answers, &text, &len), 0);
    int lines = 0;
    for (char *p = text, *nl; (nl = strchr(p, '\n')); p = nl + 1, lines++) {
        cJSON *a = cJSON_ParseWithLength(p, (size_t)(nl - p));
        assert_non_null(a);
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(a, "question_id")));
        assert_string_equal(cJSON_GetObjectItem(a, "model_id")->valuestring, "smol-test");
        assert_int_equal(strlen(cJSON_GetObjectItem(a, "answer_id")->valuestring), 22);
        const cJSON *turns = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(a, "choices"), 0), "turns");
        assert_int_equal(cJSON_GetArraySize(turns), 2);
        cJSON_Delete(a);
    }
    assert_int_equal(lines, 2);
    free(text);
    assert_int_equal(as_read_file(judgments, &text, &len), 0);
    assert_non_null(strstr(text, "\"judge\":"));
    assert_non_null(strstr(text, "single-v1-multi-turn"));
    free(text);
    cJSON_Delete(r);
    unlink(answers), unlink(judgments), rmdir(dir);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    AS_REQUIRE_SHARED_DATA();
    if (model_load(&g_m, as_test_default_model()) || tokenizer_load(&g_tok, g_m->file)) {
        fprintf(stderr, "%s\n", as_last_error());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multiple_choice_results),
        cmocka_unit_test(test_gsm8k_and_mt_bench),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tokenizer_free(g_tok);
    model_free(g_m);
    return rc;
}
