// The model scorer against an independent reference: every choice run alone
// from position 0 in a fresh KV cache, its continuation's log-probabilities
// summed from a double-precision log-softmax.  The scorer shares each item's
// context (run once, KV copied per choice) and batches items; the sums must
// agree whatever the batching (KV budget) and for per-choice contexts.
#include "test_common.h"

#include <math.h>

#include "../generate/tiny_llama.h"
#include "eval/eval_internal.h"
#include "util/common.h"

static char g_dir[256], g_path[300];
static model *g_model;
static tokenizer *g_tok;

// lm-eval's request encoding, written out again: trailing spaces of the context
// go to the continuation; continuation tokens = encode(ctx + cont)[len(encode(ctx)):].
static double reference_loglik(const char *ctx, const char *cont) {
    size_t nc = strlen(ctx);
    while (nc && ctx[nc - 1] == ' ') nc--;
    char whole[1024];
    snprintf(whole, sizeof whole, "%s%s", ctx, cont);
    int32_t *c = NULL, *w = NULL;
    size_t n_c = 0, n_w = 0;
    assert_int_equal(tokenizer_encode(g_tok, ctx, nc, false, false, &c, &n_c), 0);
    assert_int_equal(tokenizer_encode(g_tok, whole, strlen(whole), false, false, &w, &n_w), 0);
    assert_true(n_c >= 1 && n_w > n_c);
    int32_t toks[512];
    size_t n = 0;
    for (size_t i = 0; i < n_c; i++) toks[n++] = c[i];
    for (size_t i = n_c; i < n_w; i++) toks[n++] = w[i];
    kv_cache *kv = kv_cache_init(&g_model->cfg, 1, (int32_t)n);
    int32_t seq[512] = {0}, pos[512];
    for (size_t i = 0; i < n; i++) pos[i] = (int32_t)i;
    const int32_t nv = g_model->cfg.n_vocab;
    float *logits = malloc(n * (size_t)nv * sizeof *logits);
    model_batch b = {.n_tokens = (int32_t)(n - 1), .token = toks, .seq = seq, .pos = pos, .want_logits = NULL};
    assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
    double ll = 0;
    for (size_t j = n_c; j < n; j++) {
        const float *l = logits + (j - 1) * (size_t)nv;
        double mx = l[0], z = 0;
        for (int32_t v = 1; v < nv; v++) mx = l[v] > mx ? l[v] : mx;
        for (int32_t v = 0; v < nv; v++) z += exp(l[v] - mx);
        ll += l[toks[j]] - mx - log(z);
    }
    free(logits), free(c), free(w);
    kv_cache_free(kv);
    return ll;
}

#define N_ITEMS 5
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

static int setup(void **st) {
    (void)st;
    char *d = as_test_tmpdir();
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    snprintf(g_path, sizeof g_path, "%s/tiny.gguf", g_dir);
    tiny_llama_cfg c = tiny_llama_default();
    if (tiny_llama_write(g_path, &c, NULL)) return -1;
    if (model_load(&g_model, g_path) || tokenizer_load(&g_tok, g_model->file)) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tokenizer_free(g_tok);
    model_free(g_model);
    unlink(g_path);
    rmdir(g_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_choices_run_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
