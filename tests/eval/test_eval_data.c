// The built-in tasks read ../shared/data as it is: item counts of every
// layout (JSONL, MMLU's CSVs with quoted newlines, the HellaSwag text) and the
// first prompt of each task exactly as lm-evaluation-harness writes it.
#include "test_common.h"

#include "eval/eval_internal.h"
#include "util/common.h"

static void check_task(const char *name, int32_t want_subsets, int64_t want_items, const char *want_text0) {
    eval_task t;
    if (eval_task_load(name, AS_TASKS_DIR, &t)) fail_msg("%s", as_last_error());
    eval_subset *s;
    int32_t ns;
    if (eval_task_read_data(&t, AS_SHARED_DATA, &s, &ns)) fail_msg("%s", as_last_error());
    assert_int_equal(ns, want_subsets);
    int64_t n = 0;
    for (int32_t i = 0; i < ns; i++) {
        n += cJSON_GetArraySize(s[i].docs);
        // Every document renders (fields present, gold in range).
        for (int j = 0; j < cJSON_GetArraySize(s[i].docs); j++) {
            eval_doc d;
            if (eval_doc_render(&t, cJSON_GetArrayItem(s[i].docs, j), j, &d)) fail_msg("%s", as_last_error());
            eval_doc_free(&d);
        }
    }
    assert_int_equal(n, want_items);
    if (want_text0) {
        eval_doc d;
        assert_int_equal(eval_doc_render(&t, cJSON_GetArrayItem(s[0].docs, 0), 0, &d), 0);
        const char *text = d.text ? d.text : d.contexts[0];
        if (strncmp(text, want_text0, strlen(want_text0))) fail_msg("%s: first prompt '%s'", name, text);
        eval_doc_free(&d);
    }
    eval_subsets_free(s, ns);
    eval_task_free(&t);
}

static void test_arc(void **st) {
    (void)st;
    check_task("arc_challenge", 1, 1172, "Question: An astronomer observes that a planet rotates faster");
    check_task("arc_easy", 1, 2376, "Question: ");
}
static void test_hellaswag(void **st) { (void)st; check_task("hellaswag", 1, 10042, "Roof shingle removal: A man is sitting on a roof. He"); }
static void test_winogrande(void **st) { (void)st; check_task("winogrande", 1, 1267, "Sarah was a much better surgeon than Maria so Sarah"); }
static void test_mmlu(void **st) { (void)st; check_task("mmlu", 57, 14042, NULL); }
static void test_gsm8k(void **st) { (void)st; check_task("gsm8k", 1, 1319, "Question: Janet"); }

int main(void) {
    AS_REQUIRE_SHARED_DATA();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arc), cmocka_unit_test(test_hellaswag), cmocka_unit_test(test_winogrande),
        cmocka_unit_test(test_mmlu), cmocka_unit_test(test_gsm8k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
