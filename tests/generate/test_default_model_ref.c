// The default model against independent references (tests/vectors/
// default_model_ref.json, written by tools/ref_default_model.py): the fp32
// forward of Hugging Face transformers on the same dequantised weights, and
// llama.cpp (llama-cpp-python).  Skipped when the model is absent.
//
//  - KERNEL_PRECISION_F32: per-token log-probabilities of 6 real texts of 64
//    tokens within 1e-3 of the fp32 reference; the greedy continuations of 5
//    ChatML prompts identical to the reference's (up to a step where the
//    reference's two best logits are within NEAR_TIE of each other, where a
//    different but equally valid summation order may pick the other one).
//  - KERNEL_PRECISION_Q8 (activations quantised to 8 bits, as llama.cpp's CPU
//    matmuls do): the deviation from the fp32 reference is printed next to
//    llama.cpp's own (measured on the same tokens, stored in the vector) and
//    may be at most Q8_VS_LLAMACPP times llama.cpp's, in max and in mean.
//    Greedy decoding legitimately drifts under 8-bit activations (llama.cpp's
//    greedy path leaves the fp32 one within 0-26 tokens on these prompts), so
//    it is checked teacher-forced: along the fp32 greedy path, Q8 must pick the
//    same token wherever fp32 leads by more than Q8_DECISIVE logits.
//  - KERNEL_PRECISION_BF16 (bf16 operands, fp32 sums): its log-probabilities
//    may deviate from the fp32 reference at most BF16_VS_LLAMACPP times as
//    much as llama.cpp's do, in max and in mean (measured: 0.110 and 0.0144
//    nats, a seventh and a fifth of llama.cpp's).
#include "test_common.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "generate/generate.h"
#include "util/common.h"

#define F32_TOL 1e-3
#define NEAR_TIE 1e-3
// Measured when the vector was written: llama.cpp vs fp32 max 0.76, mean
// 0.072 nats; ours (Q8) max 1.00, mean 0.084.  Our 8-bit path differs from
// llama.cpp's in details (llama.cpp keeps the KV cache in fp16, for one), so a
// factor 2 is allowed; a broken quantised kernel is off by whole nats.
#define Q8_VS_LLAMACPP 2.0
#define Q8_DECISIVE 1.0
#define BF16_VS_LLAMACPP 0.5

static model *g_model;
static kernel_precision g_prec = KERNEL_PRECISION_F32; // of the KV caches the checks below run in
static tokenizer *g_tok;
static cJSON *g_ref;

static int32_t *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n ? *n : 1) * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return ids;
}

static double json_num(const cJSON *arr, int i) { return cJSON_GetArrayItem(arr, i)->valuedouble; }

static int setup(void **st) {
    (void)st;
    char *text;
    size_t len;
    if (as_read_file(AS_TEST_VECTORS "/default_model_ref.json", &text, &len)) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    g_ref = cJSON_Parse(text);
    free(text);
    if (!g_ref) return -1;
    if (model_load(&g_model, as_test_default_model()) || tokenizer_load(&g_tok, g_model->file)) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    cJSON_Delete(g_ref);
    tokenizer_free(g_tok);
    model_free(g_model);
    return 0;
}

// lp[t-1] = log p(ids[t] | ids[<t]), t = 1..n-1, in one prefill call.
static void text_logprobs(const int32_t *ids, int n, double *lp) {
    const int V = g_model->cfg.n_vocab;
    kv_cache *kv = kv_cache_init(&g_model->cfg, 1, n, g_prec);
    int32_t *seq = calloc(n, sizeof *seq), *pos = malloc(n * sizeof *pos);
    for (int i = 0; i < n; i++) pos[i] = i;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    model_batch b = {.n_tokens = n, .token = ids, .seq = seq, .pos = pos, .want_logits = NULL};
    assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
    for (int t = 1; t < n; t++) lp[t - 1] = sampler_logprob(logits + (size_t)(t - 1) * V, V, ids[t]);
    free(logits);
    free(seq);
    free(pos);
    kv_cache_free(kv);
}

typedef struct dev_stats { double max_abs, sum_abs; int n; } dev_stats;

static void dev_add(dev_stats *d, double a, double b) {
    double e = fabs(a - b);
    d->max_abs = fmax(d->max_abs, e);
    d->sum_abs += e;
    d->n++;
}

// Deviations of our log-probabilities (at precision g_prec) from
// the fp32 reference and from llama.cpp; also llama.cpp's from the reference.
static void measure(dev_stats *vs_ref, dev_stats *vs_lcp, dev_stats *lcp_vs_ref) {
    const cJSON *texts = cJSON_GetObjectItem(g_ref, "texts");
    assert_true(cJSON_GetArraySize(texts) >= 5);
    for (int k = 0; k < cJSON_GetArraySize(texts); k++) {
        const cJSON *t = cJSON_GetArrayItem(texts, k);
        int n;
        int32_t *ids = json_ids(cJSON_GetObjectItem(t, "ids"), &n);
        const cJSON *ref = cJSON_GetObjectItem(t, "ref_logprobs"), *lcp = cJSON_GetObjectItem(t, "llamacpp_logprobs");
        assert_int_equal(n, 64);
        assert_int_equal(cJSON_GetArraySize(ref), n - 1);
        assert_int_equal(cJSON_GetArraySize(lcp), n - 1);
        double *lp = malloc((n - 1) * sizeof *lp);
        text_logprobs(ids, n, lp);
        dev_stats one = {0};
        for (int i = 0; i < n - 1; i++) {
            dev_add(vs_ref, lp[i], json_num(ref, i));
            dev_add(&one, lp[i], json_num(ref, i));
            dev_add(vs_lcp, lp[i], json_num(lcp, i));
            dev_add(lcp_vs_ref, json_num(lcp, i), json_num(ref, i));
        }
        fprintf(stderr, "    %-40s max |ours - fp32 ref| %.2e\n", cJSON_GetObjectItem(t, "source")->valuestring, one.max_abs);
        free(lp);
        free(ids);
    }
}

static void test_logprobs_f32(void **st) {
    (void)st;
    g_prec = KERNEL_PRECISION_F32;
    dev_stats ref = {0}, lcp = {0}, lcp_ref = {0};
    measure(&ref, &lcp, &lcp_ref);
    fprintf(stderr, "  F32: max |ours - fp32 ref| %.2e (mean %.2e); max |ours - llama.cpp| %.3f (mean %.4f)\n", ref.max_abs,
            ref.sum_abs / ref.n, lcp.max_abs, lcp.sum_abs / lcp.n);
    assert_true(ref.max_abs < F32_TOL);
}

// Precision p against the fp32 reference, bounded by `factor` times llama.cpp's
// own deviation from it, in max and in mean.
static void check_vs_llamacpp(kernel_precision p, double factor) {
    g_prec = p;
    dev_stats ref = {0}, lcp = {0}, lcp_ref = {0};
    measure(&ref, &lcp, &lcp_ref);
    g_prec = KERNEL_PRECISION_F32;
    fprintf(stderr, "  %s: max |ours - fp32 ref| %.3f (mean %.4f); max |ours - llama.cpp| %.3f (mean %.4f)\n", kernel_precision_name(p),
            ref.max_abs, ref.sum_abs / ref.n, lcp.max_abs, lcp.sum_abs / lcp.n);
    fprintf(stderr, "  llama.cpp: max |llama.cpp - fp32 ref| %.3f (mean %.4f)\n", lcp_ref.max_abs, lcp_ref.sum_abs / lcp_ref.n);
    assert_true(ref.max_abs <= factor * lcp_ref.max_abs);
    assert_true(ref.sum_abs / ref.n <= factor * lcp_ref.sum_abs / lcp_ref.n);
}

static void test_logprobs_q8(void **st) {
    (void)st;
    check_vs_llamacpp(KERNEL_PRECISION_Q8, Q8_VS_LLAMACPP);
}

static void test_logprobs_bf16(void **st) {
    (void)st;
    check_vs_llamacpp(KERNEL_PRECISION_BF16, BF16_VS_LLAMACPP);
}

// Tokens identical to the reference up to (not including) its first near-tie
// step; returns that comparable length.
static int64_t compare_greedy(const generate_result *r, const cJSON *ref_ids, const cJSON *margins, const char *what, bool require) {
    int n;
    int32_t *ref = json_ids(ref_ids, &n);
    int64_t upto = n;
    for (int i = 0; i < n; i++)
        if (json_num(margins, i) < NEAR_TIE) {
            upto = i;
            break;
        }
    int64_t same = 0;
    while (same < r->n_ids && same < n && r->ids[same] == ref[same]) same++;
    fprintf(stderr, "    %s: %lld of %d reference tokens identical (comparable: %lld)\n", what, (long long)same, n, (long long)upto);
    if (require) {
        if (same < upto) fail_msg("%s: greedy token %lld is %d, the fp32 reference has %d", what, (long long)same,
                                  same < r->n_ids ? r->ids[same] : -1, ref[same]);
        if (upto == n) assert_int_equal(r->n_ids, n); // ends at the same end token or length
    }
    free(ref);
    return upto;
}

static void run_greedy(kernel_precision p, bool require) {
    g_prec = p;
    const cJSON *prompts = cJSON_GetObjectItem(g_ref, "prompts");
    int n = cJSON_GetArraySize(prompts);
    assert_true(n >= 5);
    generate_request *r = calloc(n, sizeof *r);
    generate_result *out = calloc(n, sizeof *out);
    int32_t **ids = calloc(n, sizeof *ids);
    for (int i = 0; i < n; i++) {
        const cJSON *pr = cJSON_GetArrayItem(prompts, i);
        int np;
        ids[i] = json_ids(cJSON_GetObjectItem(pr, "ids"), &np);
        r[i] = (generate_request){.prompt = ids[i], .n_prompt = np, .sampling = sampler_params_greedy(),
                                  .max_new_tokens = cJSON_GetObjectItem(g_ref, "n_gen")->valueint};
    }
    generate_options o = generate_options_default();
    o.precision = g_prec;
    o.batch_size = n;
    if (generate_run(g_model, g_tok, r, n, &o, out)) fail_msg("%s", as_last_error());
    for (int i = 0; i < n; i++) {
        const cJSON *pr = cJSON_GetArrayItem(prompts, i);
        char what[128];
        snprintf(what, sizeof what, "%s %s", p == KERNEL_PRECISION_Q8 ? "Q8 " : "F32", cJSON_GetObjectItem(pr, "source")->valuestring);
        compare_greedy(&out[i], cJSON_GetObjectItem(pr, "ref_greedy"), cJSON_GetObjectItem(pr, "ref_margins"), what, require);
        generate_result_free(&out[i]);
        free(ids[i]);
    }
    free(r);
    free(out);
    free(ids);
    g_prec = KERNEL_PRECISION_F32;
}

static void test_greedy_f32(void **st) {
    (void)st;
    run_greedy(KERNEL_PRECISION_F32, true);
}

// Teacher-forced along the fp32 greedy path (prompt + reference tokens in one
// prefill): Q8's argmax must match wherever the reference's margin exceeds
// Q8_DECISIVE.  The free-running greedy agreement of Q8 and of llama.cpp with
// the reference is printed for information.
static void test_greedy_q8(void **st) {
    (void)st;
    const int V = g_model->cfg.n_vocab;
    const cJSON *prompts = cJSON_GetObjectItem(g_ref, "prompts");
    int n_checked = 0, n_same = 0, n_steps = 0;
    g_prec = KERNEL_PRECISION_Q8;
    for (int i = 0; i < cJSON_GetArraySize(prompts); i++) {
        const cJSON *pr = cJSON_GetArrayItem(prompts, i), *margins = cJSON_GetObjectItem(pr, "ref_margins");
        int np, ng, nl;
        int32_t *prompt = json_ids(cJSON_GetObjectItem(pr, "ids"), &np);
        int32_t *gen = json_ids(cJSON_GetObjectItem(pr, "ref_greedy"), &ng);
        int32_t *lcp = json_ids(cJSON_GetObjectItem(pr, "llamacpp_greedy"), &nl);
        int n = np + ng - 1;
        int32_t *ids = malloc(n * sizeof *ids), *seq = calloc(n, sizeof *seq), *pos = malloc(n * sizeof *pos);
        bool *want = calloc(n, sizeof *want);
        memcpy(ids, prompt, np * sizeof *ids);
        memcpy(ids + np, gen, (ng - 1) * sizeof *ids);
        for (int t = 0; t < n; t++) pos[t] = t, want[t] = t >= np - 1;
        float *logits = malloc((size_t)ng * V * sizeof *logits);
        kv_cache *kv = kv_cache_init(&g_model->cfg, 1, n, g_prec);
        model_batch b = {.n_tokens = n, .token = ids, .seq = seq, .pos = pos, .want_logits = want};
        assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
        for (int j = 0; j < ng; j++) {
            int32_t a = sampler_argmax(logits + (size_t)j * V, V);
            n_steps++;
            n_same += a == gen[j];
            if (json_num(margins, j) > Q8_DECISIVE) {
                n_checked++;
                if (a != gen[j])
                    fail_msg("%s step %d: Q8 picks %d, fp32 picks %d by a margin of %.3f",
                             cJSON_GetObjectItem(pr, "source")->valuestring, j, a, gen[j], json_num(margins, j));
            }
        }
        int same = 0;
        while (same < ng && same < nl && gen[same] == lcp[same]) same++;
        fprintf(stderr, "    llama.cpp free-running %s: %d of %d reference tokens identical\n",
                cJSON_GetObjectItem(pr, "source")->valuestring, same, ng);
        kv_cache_free(kv);
        free(logits);
        free(ids);
        free(seq);
        free(pos);
        free(want);
        free(prompt);
        free(gen);
        free(lcp);
    }
    fprintf(stderr, "  Q8 teacher-forced: %d of %d steps pick the fp32 token; all %d with margin > %.1f do\n", n_same,
            n_steps, n_checked, Q8_DECISIVE);
    assert_true(n_checked > n_steps / 2); // the check covers most steps
    run_greedy(KERNEL_PRECISION_Q8, false);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logprobs_f32),
        cmocka_unit_test(test_logprobs_q8),
        cmocka_unit_test(test_logprobs_bf16),
        cmocka_unit_test(test_greedy_f32),
        cmocka_unit_test(test_greedy_q8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
