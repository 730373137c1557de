// The engine on the default model (skipped when it is absent): the greedy 32
// tokens of a ChatML prompt are the same alone (batch 1) and in a batch of 5
// different prompts, in both kernel precisions (bit-identical log-probabilities
// in Q8, whose kernels treat each token row on its own).
#include "test_common.h"

#include <math.h>

#include "generate/generate.h"
#include "util/common.h"

#define N_PROMPTS 5
#define N_NEW 32

static const char *const k_questions[N_PROMPTS] = {
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three prime numbers greater than 10.",
    "Translate 'good morning' into Spanish.",
};

static model *g_model;
static tokenizer *g_tok;
static int32_t *g_ids[N_PROMPTS];
static size_t g_n[N_PROMPTS];

static int setup(void **st) {
    (void)st;
    if (model_load(&g_model, as_test_default_model()) || tokenizer_load(&g_tok, g_model->file)) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    for (int i = 0; i < N_PROMPTS; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                 "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", k_questions[i]);
        if (tokenizer_encode(g_tok, text, strlen(text), false, true, &g_ids[i], &g_n[i])) return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    for (int i = 0; i < N_PROMPTS; i++) free(g_ids[i]);
    tokenizer_free(g_tok);
    model_free(g_model);
    return 0;
}

static void run(kernel_precision p, const generate_request *r, int n, int batch, generate_result *out) {
    generate_options o = generate_options_default();
    o.precision = p;
    o.batch_size = batch;
    double t0 = as_time();
    if (generate_run(g_model, g_tok, r, n, &o, out)) fail_msg("%s", as_last_error());
    int64_t toks = 0;
    for (int i = 0; i < n; i++) toks += out[i].n_ids;
    fprintf(stderr, "  %s batch %d: %d requests, %lld tokens in %.2f s\n",
            p == KERNEL_PRECISION_Q8 ? "Q8 " : "F32", batch, n, (long long)toks, as_time() - t0);
}

static void check_precision(kernel_precision p) {
    generate_request r[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++)
        r[i] = (generate_request){.prompt = g_ids[i], .n_prompt = (int64_t)g_n[i], .sampling = sampler_params_greedy(),
                                  .max_new_tokens = N_NEW};
    generate_result alone[1], all[N_PROMPTS];
    run(p, r, 1, 1, alone);
    run(p, r, N_PROMPTS, N_PROMPTS, all);
    assert_int_equal(alone[0].n_ids, all[0].n_ids);
    assert_memory_equal(alone[0].ids, all[0].ids, alone[0].n_ids * sizeof(int32_t));
    assert_string_equal(alone[0].text, all[0].text);
    for (int64_t k = 0; k < alone[0].n_ids; k++) {
        if (p == KERNEL_PRECISION_Q8) assert_true(alone[0].logprobs[k] == all[0].logprobs[k]);
        else assert_true(fabsf(alone[0].logprobs[k] - all[0].logprobs[k]) < 1e-4f);
    }
    fprintf(stderr, "  answer: %s\n", alone[0].text);
    // The model knows this one; a wrong forward pass would not say it.  (The
    // Q8 path's accuracy is measured against the fp32 reference in
    // test_default_model_ref.)
    if (p == KERNEL_PRECISION_F32) assert_non_null(strstr(alone[0].text, "Paris"));
    for (int i = 0; i < N_PROMPTS; i++) {
        assert_true(all[i].n_ids >= 1 && all[i].n_ids <= N_NEW);
        assert_true(all[i].logprob_sum <= 0.0);
        generate_result_free(&all[i]);
    }
    generate_result_free(&alone[0]);
}

static void test_batch_matches_alone_f32(void **st) {
    (void)st;
    check_precision(KERNEL_PRECISION_F32);
}

static void test_batch_matches_alone_q8(void **st) {
    (void)st;
    check_precision(KERNEL_PRECISION_Q8);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_matches_alone_f32),
        cmocka_unit_test(test_batch_matches_alone_q8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
