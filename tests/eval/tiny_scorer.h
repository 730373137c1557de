// Shared by the scorer tests (test_eval_score.c, test_eval_prefix.c): the tiny
// llama they load (cmocka group setup/teardown) and the independent reference
// they compare eval_model_loglik with -- a token sequence run alone from
// position 0 in a fresh KV cache, the log-probabilities of its tokens from
// n_ctx on summed from a double-precision log-softmax.  Each test builds the
// token sequence with its own written-out copy of lm-eval's encoding.
#ifndef AS_TEST_TINY_SCORER_H
#define AS_TEST_TINY_SCORER_H

#include "test_common.h"

#include <math.h>

#include "../generate/tiny_llama.h"
#include "eval/eval_internal.h"
#include "util/common.h"

static char g_dir[256], g_path[300];
static model *g_model;
static tokenizer *g_tok;
static kernel_precision g_prec = KERNEL_PRECISION_F32; // of the reference's KV cache (and the scorer's)

static double loglik_alone(const int32_t *toks, size_t n, size_t n_ctx) {
    assert_true(n_ctx >= 1 && n > n_ctx && n <= 512);
    kv_cache *kv = kv_cache_init(&g_model->cfg, 1, (int32_t)n, g_prec);
    int32_t seq[512] = {0}, pos[512];
    for (size_t i = 0; i < n; i++) pos[i] = (int32_t)i;
    const int32_t nv = g_model->cfg.n_vocab;
    float *logits = malloc(n * (size_t)nv * sizeof *logits);
    model_batch b = {.n_tokens = (int32_t)(n - 1), .token = toks, .seq = seq, .pos = pos, .want_logits = NULL};
    assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
    double ll = 0;
    for (size_t j = n_ctx; j < n; j++) {
        const float *l = logits + (j - 1) * (size_t)nv;
        double mx = l[0], z = 0;
        for (int32_t v = 1; v < nv; v++) mx = l[v] > mx ? l[v] : mx;
        for (int32_t v = 0; v < nv; v++) z += exp(l[v] - mx);
        ll += l[toks[j]] - mx - log(z);
    }
    free(logits);
    kv_cache_free(kv);
    return ll;
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

#endif
