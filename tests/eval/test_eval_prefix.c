// Sharing a prefix across items (eval_model_loglik): items whose contexts start
// with the same few-shot examples run those tokens once per KV group and copy
// their KV positions.  Against two references: the scorer with sharing off
// (prefix_share_min < 0, and ALPHASPIN_EVAL_PREFIX_SHARE=0), and every choice
// run alone from position 0 in a fresh cache.  Log-likelihoods must agree within
// 1e-4, and the tokens run must drop by exactly the positions the rule
// (a follower of the latest leader when >= 16 tokens agree, keeping its last
// shared token) allows, which this test works out from the tokenizer itself,
// also under a KV budget that holds all items only when a choice scored from
// the shared row (a one-token continuation) takes no KV sequence of its own.
#include "tiny_scorer.h"

// Few-shot examples in the tiny vocabulary (one token a character).
#define SHOTS "Question: the cat and the dog?\nAnswer: Hello\n\nQuestion: sing and ring?\nAnswer: the thing\n\n"
#define SHOTS2 "Question: a bee?\nAnswer: and\n\n"

#define N_ITEMS 7
typedef struct spec { const char *ctx[4]; const char *cont[4]; int n; } spec;
static const spec k_items[N_ITEMS] = {
    {{SHOTS "Question: the sky?\nAnswer:", NULL}, {" Hello", " the and", " ing ing", " x"}, 4},  // leader
    {{SHOTS "Question: a cow and the ink?\nAnswer:", NULL}, {" Hello", " thing"}, 2},          // follower
    // The leader's context again, one-token choices (the tiny vocabulary has no
    // merges: one character a token), which take no KV sequence of their own.
    {{SHOTS "Question: the sky?\nAnswer:", NULL}, {"A", "B", "C", "D"}, 4},
    // Per-choice contexts (partial scoring) after the same examples.
    {{SHOTS "Ann beat Bo so Ann", SHOTS "Ann beat Bo so Bo", NULL}, {" won.", " won."}, 2},
    // Other examples: a new leader, then its follower.
    {{SHOTS2 "Question: the sky?\nAnswer:", NULL}, {" Hello", " and"}, 2},
    {{SHOTS2 "Question: red?\nAnswer:", NULL}, {" the", " Hello the"}, 2},
    // Too short to share anything.
    {{"Q: x?\nA:", NULL}, {" the", " and"}, 2},
};

static const char *ctx_of(int i, int c) { return k_items[i].ctx[1] ? k_items[i].ctx[c] : k_items[i].ctx[0]; }

static int32_t *enc(const char *s, size_t *n) {
    int32_t *ids = NULL;
    assert_int_equal(tokenizer_encode(g_tok, s, strlen(s), true, false, &ids, n), 0);
    return ids;
}

static int32_t lcp(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return (int32_t)k;
}

// The positions the rule lets followers copy, all items in one KV group.  An
// item's shared tokens: the longest common prefix of its choices' contexts
// (each choice has a non-empty continuation here).  *budget: the KV bytes that
// just hold all items when a choice whose continuation is one token (scored
// from the shared row) takes no sequence of its own.
static int64_t expected_reused(size_t *budget) {
    int32_t *ctx0[N_ITEMS];
    size_t n0[N_ITEMS];
    int32_t shared[N_ITEMS];
    for (int i = 0; i < N_ITEMS; i++) {
        ctx0[i] = enc(ctx_of(i, 0), &n0[i]);
        shared[i] = (int32_t)n0[i];
        for (int c = 1; c < k_items[i].n; c++) {
            size_t nc;
            int32_t *t = enc(ctx_of(i, c), &nc);
            shared[i] = AS_MIN(shared[i], lcp(ctx0[i], n0[i], t, nc));
            free(t);
        }
    }
    int32_t n_seq = 0, n_ctx = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        int32_t own = 0;
        for (int c = 0; c < k_items[i].n; c++) {
            char whole[1024];
            snprintf(whole, sizeof whole, "%s%s", ctx_of(i, c), k_items[i].cont[c]);
            size_t nw;
            free(enc(whole, &nw));
            own += (int32_t)nw - 1 > shared[i];
            n_ctx = AS_MAX(n_ctx, (int32_t)nw - 1);
        }
        n_seq += AS_MAX(own, 1);
    }
    // 18 with one per choice, which would split the items into two groups before
    // item 5 and leave it no leader to copy from.
    assert_int_equal(n_seq, 15);
    const model_config *cfg = &g_model->cfg;
    *budget = (size_t)n_seq * (size_t)n_ctx * 2 * (size_t)cfg->n_layer * (size_t)cfg->n_head_kv * (size_t)cfg->head_dim * sizeof(float);
    int64_t reused = 0;
    int lead = 0, n_followers = 0;
    for (int i = 1; i < N_ITEMS; i++) {
        int32_t k = AS_MIN(lcp(ctx0[lead], n0[lead], ctx0[i], n0[i]), AS_MIN(shared[lead], shared[i] - 1));
        if (k >= 16) reused += k, n_followers++;
        else lead = i;
    }
    assert_int_equal(n_followers, 4); // as the items were written: items 1, 2, 3 and 5
    for (int i = 0; i < N_ITEMS; i++) free(ctx0[i]);
    return reused;
}

// Each choice alone from position 0: lm-eval's encoding written out again.
static double reference_loglik(const char *ctx, const char *cont) {
    char whole[1024];
    snprintf(whole, sizeof whole, "%s%s", ctx, cont);
    size_t n_c, n_w;
    int32_t *c = enc(ctx, &n_c), *w = enc(whole, &n_w);
    assert_true(n_c >= 1 && n_w > n_c && n_w <= 512);
    for (size_t i = 0; i < n_c; i++) assert_int_equal(w[i], c[i]); // no merge across the boundary here
    const double ll = loglik_alone(w, n_w, n_c);
    free(c), free(w);
    return ll;
}

static eval_model_scorer run_scorer(size_t budget, int32_t max_tokens, int32_t share_min, double out[N_ITEMS][4]) {
    eval_mc_item items[N_ITEMS];
    char *ctx[N_ITEMS][4], *cont[N_ITEMS][4];
    for (int i = 0; i < N_ITEMS; i++) {
        for (int c = 0; c < k_items[i].n; c++) ctx[i][c] = (char *)ctx_of(i, c), cont[i][c] = (char *)k_items[i].cont[c];
        items[i] = (eval_mc_item){.n_choices = k_items[i].n, .ctx = ctx[i], .cont = cont[i], .ll = out[i]};
        for (int c = 0; c < 4; c++) out[i][c] = 12345; // must be overwritten
    }
    eval_model_scorer s = {.m = g_model, .precision = g_prec, .tok = g_tok, .kv_budget_bytes = budget, .max_batch_tokens = max_tokens,
                           .prefix_share_min = share_min};
    if (eval_model_loglik(&s, items, N_ITEMS)) fail_msg("%s", as_last_error());
    return s;
}

static void expect_close(double got[N_ITEMS][4], double want[N_ITEMS][4], const char *what) {
    for (int i = 0; i < N_ITEMS; i++)
        for (int c = 0; c < k_items[i].n; c++) {
            assert_true(got[i][c] < 0);
            if (!(fabs(got[i][c] - want[i][c]) <= 1e-4 * (1 + fabs(want[i][c]))))
                fail_msg("%s: item %d choice %d: %.9g vs %.9g", what, i, c, got[i][c], want[i][c]);
        }
}

static void check_precision(kernel_precision prec) {
    g_prec = prec;
    double ref[N_ITEMS][4];
    for (int i = 0; i < N_ITEMS; i++)
        for (int c = 0; c < k_items[i].n; c++) ref[i][c] = reference_loglik(ctx_of(i, c), k_items[i].cont[c]);
    size_t tight;
    const int64_t reused = expected_reused(&tight);
    assert_true(reused >= 4 * 60); // the examples are long
    // All items in one KV group: forward calls of 512 tokens, of 7 (the shared
    // tokens of one item split over several calls), and a budget that holds
    // them exactly.
    const int32_t chunks[3] = {512, 7, 512};
    const size_t budgets[3] = {(size_t)1 << 30, (size_t)1 << 30, tight};
    for (int k = 0; k < 3; k++) {
        double on[N_ITEMS][4], off[N_ITEMS][4];
        eval_model_scorer s_off = run_scorer(budgets[k], chunks[k], -1, off);
        eval_model_scorer s_on = run_scorer(budgets[k], chunks[k], 0, on);
        expect_close(on, off, "shared vs not shared");
        expect_close(off, ref, "not shared vs choices alone");
        expect_close(on, ref, "shared vs choices alone");
        assert_int_equal(s_off.n_tokens_reused, 0);
        assert_int_equal(s_on.n_tokens_reused, reused);
        assert_int_equal(s_off.n_tokens_run - s_on.n_tokens_run, reused);
        // The environment's switch turns it off too.
        setenv("ALPHASPIN_EVAL_PREFIX_SHARE", "0", 1);
        eval_model_scorer s_env = run_scorer(budgets[k], chunks[k], 0, on);
        unsetenv("ALPHASPIN_EVAL_PREFIX_SHARE");
        assert_int_equal(s_env.n_tokens_reused, 0);
        assert_int_equal(s_env.n_tokens_run, s_off.n_tokens_run);
        expect_close(on, off, "ALPHASPIN_EVAL_PREFIX_SHARE=0 vs not shared");
    }
    // One item per KV group: nothing to share with.
    double one[N_ITEMS][4];
    eval_model_scorer s1 = run_scorer(1, 0, 0, one);
    assert_int_equal(s1.n_tokens_reused, 0);
    expect_close(one, ref, "one item per group vs choices alone");
    g_prec = KERNEL_PRECISION_F32;
}

static void test_prefix_shared_f32(void **st) {
    (void)st;
    check_precision(KERNEL_PRECISION_F32);
}

// q8 activations and an fp16 KV cache: the copied positions are fp16 too.
static void test_prefix_shared_q8(void **st) {
    (void)st;
    check_precision(KERNEL_PRECISION_Q8);
}

// bf16 operands (AMX tiles where the CPU has them), fp32 KV cache.
static void test_prefix_shared_bf16(void **st) {
    (void)st;
    check_precision(KERNEL_PRECISION_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_shared_f32),
        cmocka_unit_test(test_prefix_shared_bf16),
        cmocka_unit_test(test_prefix_shared_q8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
