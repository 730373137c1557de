// The model scorer against an independent reference: every choice run alone
// from position 0 in a fresh KV cache, its continuation's log-probabilities
// summed from a double-precision log-softmax.  The scorer shares each item's
// context (run once, KV copied per choice) and batches items; the sums must
// agree whatever the batching (KV budget) and for per-choice contexts.
#include "tiny_scorer.h"

// lm-eval's request encoding, written out again: all trailing whitespace of the
// context (context.rstrip(): here " ", "\n", "\t", "\r" and U+00A0) goes to the
// continuation; continuation tokens = encode(ctx + cont)[len(encode(ctx)):].
static size_t rstrip_len(const char *ctx) {
    size_t nc = strlen(ctx);
    for (;;) {
        if (nc && strchr(" \n\t\r", ctx[nc - 1])) nc--;
        else if (nc >= 2 && !memcmp(ctx + nc - 2, "\xC2\xA0", 2)) nc -= 2;
        else return nc;
    }
}

static double reference_loglik(const char *ctx, const char *cont) {
    size_t nc = rstrip_len(ctx);
    char whole[1024];
    snprintf(whole, sizeof whole, "%s%s", ctx, cont);
    int32_t *c = NULL, *w = NULL;
    size_t n_c = 0, n_w = 0;
    assert_int_equal(tokenizer_encode(g_tok, ctx, nc, false, false, &c, &n_c), 0);
    assert_int_equal(tokenizer_encode(g_tok, whole, strlen(whole), false, false, &w, &n_w), 0);
    assert_true(n_c >= 1 && n_w > n_c);
    int32_t toks[512];
    size_t n = 0;
    assert_true(n_w <= 512);
    for (size_t i = 0; i < n_c; i++) toks[n++] = c[i];
    for (size_t i = n_c; i < n_w; i++) toks[n++] = w[i];
    const double ll = loglik_alone(toks, n, n_c);
    free(c), free(w);
    return ll;
}

#define N_ITEMS 9
typedef struct spec { const char *ctx[4]; const char *cont[4]; int n; } spec;
static const spec k_items[N_ITEMS] = {
    // Shared context, choices of different lengths (one of one token).
    {{"Question: the cat\nAnswer:", NULL}, {" Hello", " the and", " ing ing ing", " x"}, 4},
    // Trailing space in the context moves to the continuation.
    {{"Q: and the ", NULL}, {"Hello", "thing"}, 2},
    // Per-choice contexts (partial scoring), sharing a prefix.
    {{"Ann beat Bo so Ann", "Ann beat Bo so Bo", NULL}, {" won.", " won."}, 2},
    // Contexts with no common first token.
    {{"abc", "xyz", "Hello", NULL}, {" and", " and", " and"}, 3},
    // Choices that share their first tokens.
    {{"Pick:", NULL}, {" the and the", " the and Hello", " the"}, 3},
    // Contexts ending in other whitespace (lm-eval's context.rstrip()): "\n"
    // (PIQA's "Answer:\n"-style prompts), "\n " before a digit, "\t", U+00A0.
    {{"Question: the cat\nAnswer:\n", NULL}, {"Hello", "the and"}, 2},
    {{"Count:\n ", NULL}, {"7", "42"}, 2},
    {{"Q: and\t", NULL}, {"the", "ing"}, 2},
    {{"Q: and\xC2\xA0", NULL}, {"the", "ing"}, 2},
};

static void run_scorer(size_t budget, int32_t max_tokens, double out[N_ITEMS][4]) {
    eval_mc_item items[N_ITEMS];
    char *ctx[N_ITEMS][4], *cont[N_ITEMS][4];
    for (int i = 0; i < N_ITEMS; i++) {
        for (int c = 0; c < k_items[i].n; c++) {
            ctx[i][c] = (char *)(k_items[i].ctx[1] ? k_items[i].ctx[c] : k_items[i].ctx[0]);
            cont[i][c] = (char *)k_items[i].cont[c];
        }
        items[i] = (eval_mc_item){.n_choices = k_items[i].n, .ctx = ctx[i], .cont = cont[i], .ll = out[i]};
        for (int c = 0; c < 4; c++) out[i][c] = 12345; // must be overwritten
    }
    eval_model_scorer s = {.m = g_model, .tok = g_tok, .kv_budget_bytes = budget, .max_batch_tokens = max_tokens};
    if (eval_model_loglik(&s, items, N_ITEMS)) fail_msg("%s", as_last_error());
    // The shared context ran once: fewer tokens than all choices run alone.
    int64_t alone = 0;
    for (int i = 0; i < N_ITEMS; i++)
        for (int c = 0; c < k_items[i].n; c++) {
            int32_t *w = NULL;
            size_t nw = 0;
            char whole[512];
            snprintf(whole, sizeof whole, "%s%s", ctx[i][c], cont[i][c]);
            tokenizer_encode(g_tok, whole, strlen(whole), false, false, &w, &nw);
            alone += (int64_t)nw - 1;
            free(w);
        }
    assert_true(s.n_tokens_run < alone);
}

static void test_matches_choices_run_alone(void **st) {
    (void)st;
    double ref[N_ITEMS][4];
    for (int i = 0; i < N_ITEMS; i++)
        for (int c = 0; c < k_items[i].n; c++)
            ref[i][c] = reference_loglik(k_items[i].ctx[1] ? k_items[i].ctx[c] : k_items[i].ctx[0], k_items[i].cont[c]);
    // One item per KV group and tiny forward calls; everything in one group; defaults.
    const size_t budgets[3] = {1, (size_t)1 << 30, 0};
    const int32_t chunks[3] = {3, 512, 0};
    for (int k = 0; k < 3; k++) {
        double got[N_ITEMS][4];
        run_scorer(budgets[k], chunks[k], got);
        for (int i = 0; i < N_ITEMS; i++)
            for (int c = 0; c < k_items[i].n; c++) {
                assert_true(got[i][c] < 0);
                if (fabs(got[i][c] - ref[i][c]) > 1e-4 * (1 + fabs(ref[i][c])))
                    fail_msg("budget %zu item %d choice %d: %.9g vs reference %.9g", budgets[k], i, c, got[i][c], ref[i][c]);
            }
    }
}

// Python's str.rstrip()/lstrip() whitespace, by code point, on UTF-8.
static void test_python_whitespace(void **st) {
    (void)st;
    struct { const char *s; size_t keep; } r[] = {
        {"a \n\t\r\v\f", 1}, {"a\xC2\xA0", 1}, {"a\xE3\x80\x80", 1}, {"a\xE2\x80\xA8 ", 1},
        {"\xC3\xA9", 2}, {"a\xC2", 2}, {"  ", 0}, {"", 0}, {"a\x1f", 1}, {"a\xE2\x80\x8B", 4} /* U+200B: not a space */,
    };
    for (size_t i = 0; i < sizeof r / sizeof *r; i++)
        if (eval_py_rstrip_len(r[i].s, strlen(r[i].s)) != r[i].keep) fail_msg("rstrip case %zu", i);
    assert_int_equal(eval_py_lstrip_len("\n\xC2\xA0 x ", 5), 4);
    assert_int_equal(eval_py_lstrip_len("x", 1), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_whitespace),
        cmocka_unit_test(test_matches_choices_run_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
