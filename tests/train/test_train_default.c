// The training engine on the default model (SmolLM2-135M-Instruct, Q4_1 with
// Q8_0 tied embeddings; skipped when it has not been fetched):
//  * the fp32 master copy (every stored type dequantised) gives the inference
//    engine's log-probabilities (model_forward at KERNEL_PRECISION_F32);
//  * a LoRA gradient at full scale (GQA 9/3 heads, head_dim 64, 30 layers)
//    agrees with a finite-difference directional derivative;
//  * adapters off reproduce the base exactly.
// Prints the time of one forward + backward for orientation (not a benchmark).
#include "train_test_util.h"

#include "model/model.h"
#include "train/train.h"
#include "util/common.h"

#define NSEQ 2
#define NTOK 48

static int32_t tokens[NSEQ * NTOK];
static const int32_t lens[NSEQ] = {NTOK, 31};
static const int32_t prompts[NSEQ] = {20, 9};

static void make_tokens(int32_t n_vocab) {
    as_rng r;
    as_rng_seed(&r, 2024);
    // Common ids (the first few thousand are frequent BPE merges) to keep the text plausible-ish.
    for (int i = 0; i < NSEQ * NTOK; i++) tokens[i] = (int32_t)as_rng_below(&r, (uint64_t)AS_MIN(n_vocab, 8000));
}

static double logp_of(const float *z, int64_t V, int32_t tok) {
    double mx = z[0];
    for (int64_t j = 1; j < V; j++) mx = fmax(mx, z[j]);
    double s = 0;
    for (int64_t j = 0; j < V; j++) s += exp(z[j] - mx);
    return z[tok] - mx - log(s);
}

static void test_default_model(void **state) {
    (void)state;
    model *inf;
    if (model_load(&inf, as_test_default_model())) fail_msg("%s", as_last_error());
    const int64_t V = inf->cfg.n_vocab;
    make_tokens(inf->cfg.n_vocab);
    double t0 = as_time();
    train_model *m;
    if (train_model_from_model(&m, inf)) fail_msg("%s", as_last_error());
    printf("  dequantised %zu parameters to fp32 in %.2f s\n", m->n_params, as_time() - t0);
    train_set_threads(m, AS_MAX(kernel_get_threads(), 1));

    train_batch b = {.n_seq = NSEQ, .n_ctx = NTOK, .tokens = tokens, .len = lens, .prompt_len = prompts};
    float lp[NSEQ], tok_lp[2 * NTOK];
    int32_t cnt[NSEQ];
    t0 = as_time();
    assert_int_equal(train_forward(m, &b, lp, cnt), AS_OK);
    printf("  forward of %d tokens: %.2f s\n", lens[0] + lens[1], as_time() - t0);
    assert_int_equal(train_token_logprobs(m, tok_lp), (int64_t)(cnt[0] + cnt[1]));
    const float base[NSEQ] = {lp[0], lp[1]};

    // The inference engine, one sequence at a time.
    float *logits = as_malloc(sizeof(float) * (size_t)(NTOK * V));
    double worst = 0;
    int64_t r = 0;
    for (int s = 0; s < NSEQ; s++) {
        kv_cache *kv = kv_cache_init(&inf->cfg, 1, NTOK, KERNEL_PRECISION_F32);
        int32_t sq[NTOK], pos[NTOK];
        for (int i = 0; i < lens[s]; i++) sq[i] = 0, pos[i] = i;
        model_batch mb = {.n_tokens = lens[s], .token = tokens + s * NTOK, .seq = sq, .pos = pos};
        assert_int_equal(model_forward(inf, kv, &mb, logits), AS_OK);
        for (int i = prompts[s]; i < lens[s]; i++, r++) {
            const double e = logp_of(logits + (int64_t)(i - 1) * V, V, tokens[s * NTOK + i]);
            worst = fmax(worst, fabs(e - tok_lp[r]) / (1.0 + fabs(e)));
        }
        kv_cache_free(kv);
    }
    printf("  %lld answer log-probs: max |train - engine| / (1 + |logp|) = %.2e\n", (long long)r, worst);
    if (!(worst <= 1e-5)) fail_msg("train vs inference log-probs differ by %.3g > 1e-5", worst);
    free(logits);
    model_free(inf);

    // LoRA (rank 8, all targets) with random B: directional derivative check on B of the down projection.
    train_lora_config lc = {.rank = 8, .alpha = 16.0f, .dropout = 0.0f, .seed = 3};
    assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    as_rng rng;
    as_rng_seed(&rng, 8);
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) fill_normal(m->lora->b[t], m->cfg.n_layer * m->lora->out[t] * lc.rank, 0.01f, &rng);
    const float up[NSEQ] = {1.0f / (float)cnt[0], -0.5f / (float)cnt[1]};
    train_zero_grad(m);
    t0 = as_time();
    assert_int_equal(train_forward(m, &b, lp, cnt), AS_OK);
    assert_int_equal(train_backward(m, up), AS_OK);
    printf("  LoRA forward + backward: %.2f s\n", as_time() - t0);
    // Checkpointing: the same gradient bits with a fraction of the activation memory.
    const size_t full_bytes = train_activation_bytes(m);
    float *g_keep = as_malloc(sizeof(float) * m->lora->n);
    memcpy(g_keep, m->lora->grad_memory, sizeof(float) * m->lora->n);
    train_set_checkpointing(m, true);
    train_zero_grad(m);
    t0 = as_time();
    assert_int_equal(train_forward(m, &b, lp, cnt), AS_OK);
    assert_int_equal(train_backward(m, up), AS_OK);
    printf("  with checkpointing: %.2f s, activations %.1f MB -> %.1f MB (%d tokens)\n", as_time() - t0, full_bytes / 1e6,
           train_activation_bytes(m) / 1e6, lens[0] + lens[1]);
    assert_memory_equal(g_keep, m->lora->grad_memory, sizeof(float) * m->lora->n);
    assert_true(train_activation_bytes(m) < full_bytes / 2);
    free(g_keep);
    train_set_checkpointing(m, false);
    const int T = TRAIN_LORA_DOWN;
    const int64_t nB = m->cfg.n_layer * m->lora->out[T] * lc.rank;
    float *B = m->lora->b[T], *gB = m->lora->gb[T];
    float *u = as_malloc(sizeof(float) * (size_t)nB), *B0 = as_malloc(sizeof(float) * (size_t)nB);
    // Direction: half the analytic gradient's direction, half random.  A random
    // direction alone sees only |g| / sqrt(n) of the gradient, below the float
    // noise of the log-probabilities; the check stays valid because the finite
    // difference measures the TRUE derivative along whatever u is.
    fill_normal(u, nB, 1.0f, &rng);
    double un = 0, gn = 0, gu = 0;
    for (int64_t i = 0; i < nB; i++) un += (double)u[i] * u[i], gn += (double)gB[i] * gB[i];
    for (int64_t i = 0; i < nB; i++) u[i] = (float)(u[i] / sqrt(un) + gB[i] / sqrt(gn));
    un = 0;
    for (int64_t i = 0; i < nB; i++) un += (double)u[i] * u[i];
    for (int64_t i = 0; i < nB; i++) u[i] = (float)(u[i] / sqrt(un)), gu += (double)gB[i] * u[i];
    memcpy(B0, B, sizeof(float) * (size_t)nB);
    const double e = 2e-2, st[4] = {-2, -1, 1, 2};
    double f[4];
    for (int k = 0; k < 4; k++) {
        for (int64_t i = 0; i < nB; i++) B[i] = B0[i] + (float)(st[k] * e) * u[i];
        float l2[NSEQ];
        assert_int_equal(train_forward(m, &b, l2, NULL), AS_OK);
        f[k] = (double)up[0] * l2[0] + (double)up[1] * l2[1];
    }
    memcpy(B, B0, sizeof(float) * (size_t)nB);
    const double fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * e);
    printf("  LoRA down-projection B: directional derivative %.6g, analytic %.6g\n", fd, gu);
    if (!(fabs(fd - gu) <= 1e-2 * fabs(gu) && fabs(gu) > 1e-4)) fail_msg("directional derivative %.8g vs analytic %.8g", fd, gu);
    assert_null(m->grads_memory);

    // Adapters on change the log-probabilities; off, they are the base's bit for bit.
    float off[NSEQ];
    assert_true(lp[0] != base[0]);
    train_set_adapters(m, false);
    assert_int_equal(train_forward(m, &b, off, NULL), AS_OK);
    assert_true(off[0] == base[0] && off[1] == base[1]);
    free(u), free(B0);
    train_model_free(m);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_default_model)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
