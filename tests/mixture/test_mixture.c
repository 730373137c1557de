// Exactness of the geometric-mixture samplers (src/mixture/mixture.h) on a
// tiny model whose answers are enumerated (tiny_mix.h): the exact target
// p ~ pi_t^(1-alpha) pi_0^alpha, the exact token-level distribution q and the
// empirical distributions of the samplers, compared in total variation.
#include "tiny_mix.h"

#include "mixture/mixture.h"

typedef struct fixture {
    char dir[256], path[300];
    model *m;
    train_lora *lt;
    model_lora view_t;
    int32_t prompt[3];
    double logp_t[MIX_LEAVES], logp_0[MIX_LEAVES];
} fixture;

static void fixture_init(fixture *f, double out_scale, double b_scale) {
    snprintf(f->dir, sizeof f->dir, "%s", as_test_tmpdir());
    snprintf(f->path, sizeof f->path, "%s/mix.gguf", f->dir);
    mix_write_model(f->path, 7, out_scale);
    if (model_load(&f->m, f->path)) fail_msg("%s", as_last_error());
    f->lt = mix_random_lora(&f->m->cfg, 2, b_scale, 11);
    train_lora_view(f->lt, &f->view_t);
    f->prompt[0] = 0, f->prompt[1] = 2, f->prompt[2] = 1;
    assert_int_equal(model_set_lora(f->m, &f->view_t), AS_OK);
    mix_leaf_logps(f->m, f->prompt, 3, f->logp_t);
    assert_int_equal(model_set_lora(f->m, NULL), AS_OK);
    mix_leaf_logps(f->m, f->prompt, 3, f->logp_0);
}

static void fixture_free(fixture *f) {
    train_lora_free(f->lt);
    model_free(f->m);
    unlink(f->path), rmdir(f->dir);
}

// p(leaf) ~ exp((1-alpha) log pi_t + alpha log pi_0).
static void exact_target(const fixture *f, double alpha, double *p) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < MIX_LEAVES; i++) p[i] = (1 - alpha) * f->logp_t[i] + alpha * f->logp_0[i], mx = fmax(mx, p[i]);
    for (int i = 0; i < MIX_LEAVES; i++) p[i] = exp(p[i] - mx), s += p[i];
    for (int i = 0; i < MIX_LEAVES; i++) p[i] /= s;
}

// Exact token-level mixture q(leaf) = prod_i q(y_i | s_i), and log prod_i Z_{s_i}.
static void exact_token(fixture *f, double alpha, double *q, double *log_w) {
    for (int leaf = 0; leaf < MIX_LEAVES; leaf++) {
        int32_t ids[MIX_N + 1];
        bool ended;
        const int n = mix_leaf_tokens(leaf, ids, &ended);
        double lt[MIX_N + 2][MIX_V], l0[MIX_N + 2][MIX_V];
        model_set_lora(f->m, &f->view_t);
        mix_logsoftmax_rows(f->m, f->prompt, 3, ids, n, lt);
        model_set_lora(f->m, NULL);
        mix_logsoftmax_rows(f->m, f->prompt, 3, ids, n, l0);
        double lq = 0, lw = 0;
        for (int i = 0; i < n; i++) {
            double a[MIX_V], mx = -INFINITY, s = 0;
            for (int v = 0; v < MIX_V; v++) a[v] = (1 - alpha) * lt[i][v] + alpha * l0[i][v], mx = fmax(mx, a[v]);
            for (int v = 0; v < MIX_V; v++) s += exp(a[v] - mx);
            const double lz = mx + log(s);
            lq += a[ids[i]] - lz, lw += lz;
        }
        q[leaf] = exp(lq);
        if (log_w) log_w[leaf] = lw;
    }
}

static void histogram(const mixture_sample *s, int64_t n, double *h) {
    memset(h, 0, sizeof(double) * MIX_LEAVES);
    for (int64_t i = 0; i < n; i++) h[mix_leaf_index(s[i].ids, s[i].n_ids, s[i].ended)] += 1.0 / (double)n;
}

// TV of n exact draws from p: the sampling-noise floor of an empirical TV.
static double noise_floor(const double *p, int64_t n, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    double h[MIX_LEAVES] = {0};
    for (int64_t i = 0; i < n; i++) {
        double u = as_rng_uniform(&r), acc = 0;
        int k = MIX_LEAVES - 1;
        for (int j = 0; j < MIX_LEAVES; j++)
            if ((acc += p[j]) > u) {
                k = j;
                break;
            }
        h[k] += 1.0 / (double)n;
    }
    return mix_tv(h, p, MIX_LEAVES);
}

static const int32_t END_IDS[1] = {MIX_END};

// The enumeration is complete (pi sums to 1 over the leaves) and the
// token-level sampler draws exactly q, with log_w / logp_t / logp_0 per answer
// equal to the enumerated values.
static void test_token_sampler_is_q(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f, 6.0, 0.8);
    double st = 0, s0 = 0;
    for (int i = 0; i < MIX_LEAVES; i++) st += exp(f.logp_t[i]), s0 += exp(f.logp_0[i]);
    assert_true(fabs(st - 1) < 1e-5 && fabs(s0 - 1) < 1e-5);
    const double alpha = 0.5;
    double q[MIX_LEAVES], lw[MIX_LEAVES], h[MIX_LEAVES];
    exact_token(&f, alpha, q, lw);
    const int64_t n = 20000;
    const int32_t **pr = as_malloc(sizeof(int32_t *) * n);
    int64_t *np = as_malloc(sizeof(int64_t) * n);
    for (int64_t i = 0; i < n; i++) pr[i] = f.prompt, np[i] = 3;
    mixture_config c = {.alpha = (float)alpha, .max_new_tokens = MIX_N, .end_ids = END_IDS, .n_end_ids = 1, .batch_size = 256, .seed = 5};
    mixture_sample *s = as_calloc(n, sizeof *s);
    assert_int_equal(mixture_sample_token(f.m, &f.view_t, NULL, &c, pr, np, n, s), AS_OK);
    histogram(s, n, h);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const int leaf = mix_leaf_index(s[i].ids, s[i].n_ids, s[i].ended);
        worst = fmax(worst, fabs(s[i].log_w - lw[leaf]));
        worst = fmax(worst, fabs(s[i].logq - log(q[leaf])));
        worst = fmax(worst, fabs(s[i].logp_t - f.logp_t[leaf]));
        worst = fmax(worst, fabs(s[i].logp_0 - f.logp_0[leaf]));
    }
    const double tv = mix_tv(h, q, MIX_LEAVES), floor_ = noise_floor(q, n, 9);
    printf("  token sampler vs exact q: TV %.4f (exact draws: %.4f); per-answer log values within %.1e\n", tv, floor_, worst);
    assert_true(worst < 1e-4);
    assert_true(tv < 0.03);
    // Same answers whatever the batch size (each answer has its own stream).
    c.batch_size = 7;
    mixture_sample *s2 = as_calloc(64, sizeof *s2);
    assert_int_equal(mixture_sample_token(f.m, &f.view_t, NULL, &c, pr, np, 64, s2), AS_OK);
    for (int64_t i = 0; i < 64; i++) {
        assert_int_equal(s2[i].n_ids, s[i].n_ids);
        assert_memory_equal(s2[i].ids, s[i].ids, sizeof(int32_t) * (size_t)s[i].n_ids);
        mixture_sample_free(&s2[i]);
    }
    for (int64_t i = 0; i < n; i++) mixture_sample_free(&s[i]);
    free(s), free(s2), free(pr), free(np);
    assert_int_equal(f.m->lora.rank, 0); // adapters restored
    fixture_free(&f);
}

// SIR with K = 16 is within 0.05 of the exact mixture; the token-level
// mixture is clearly biased on the same case.
static void test_sir_vs_token_bias(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f, 6.0, 1.2); // adapters strong enough for a visible token-level bias
    const double alpha = 0.5;
    double p[MIX_LEAVES], q[MIX_LEAVES], h_tok[MIX_LEAVES], h_sir[MIX_LEAVES];
    exact_target(&f, alpha, p);
    exact_token(&f, alpha, q, NULL);
    const int64_t n = 20000;
    const int32_t K = 16;
    const int32_t **pr = as_malloc(sizeof(int32_t *) * n);
    int64_t *np = as_malloc(sizeof(int64_t) * n);
    for (int64_t i = 0; i < n; i++) pr[i] = f.prompt, np[i] = 3;
    mixture_config c = {.alpha = (float)alpha, .max_new_tokens = MIX_N, .end_ids = END_IDS, .n_end_ids = 1, .batch_size = 512, .seed = 17};
    mixture_sample *s = as_calloc(n, sizeof *s);
    assert_int_equal(mixture_sample_token(f.m, &f.view_t, NULL, &c, pr, np, n, s), AS_OK);
    histogram(s, n, h_tok);
    for (int64_t i = 0; i < n; i++) mixture_sample_free(&s[i]);
    double *ess = as_malloc(sizeof(double) * n);
    c.seed = 23;
    assert_int_equal(mixture_sample_sir(f.m, &f.view_t, NULL, &c, K, pr, np, n, s, ess), AS_OK);
    histogram(s, n, h_sir);
    double mean_ess = 0;
    for (int64_t i = 0; i < n; i++) mixture_sample_free(&s[i]), mean_ess += ess[i] / (double)n, assert_true(ess[i] >= 1 - 1e-9 && ess[i] <= K + 1e-9);
    const double tv_q = mix_tv(q, p, MIX_LEAVES), tv_tok = mix_tv(h_tok, p, MIX_LEAVES), tv_sir = mix_tv(h_sir, p, MIX_LEAVES);
    const double floor_ = noise_floor(p, n, 3);
    printf("  alpha %.2f, %d leaves, %lld samples each (exact draws from p: TV %.4f)\n", alpha, MIX_LEAVES, (long long)n, floor_);
    printf("  token-level mixture: TV to p %.4f empirical, %.4f exact (its bias)\n", tv_tok, tv_q);
    printf("  SIR K=%d: TV to p %.4f (mean ESS %.2f of %d)\n", K, tv_sir, mean_ess, K);
    assert_true(tv_sir < 0.05);
    assert_true(tv_q > 0.1);              // the token-level mixture is biased on this case ...
    assert_true(tv_tok > 3.0 * tv_sir);   // ... clearly more than SIR
    // K = 1 is the token-level mixture itself.
    c.seed = 29;
    assert_int_equal(mixture_sample_sir(f.m, &f.view_t, NULL, &c, 1, pr, np, 2000, s, ess), AS_OK);
    for (int64_t i = 0; i < 2000; i++) assert_true(fabs(ess[i] - 1) < 1e-12), mixture_sample_free(&s[i]);
    free(s), free(ess), free(pr), free(np);
    fixture_free(&f);
}

// Policy sampling at temperature 1 draws the model's own distribution.
static void test_policy_sampler(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f, 6.0, 0.8);
    double pt[MIX_LEAVES], h[MIX_LEAVES];
    for (int i = 0; i < MIX_LEAVES; i++) pt[i] = exp(f.logp_t[i]);
    const int64_t n = 20000;
    const int32_t **pr = as_malloc(sizeof(int32_t *) * n);
    int64_t *np = as_malloc(sizeof(int64_t) * n);
    for (int64_t i = 0; i < n; i++) pr[i] = f.prompt, np[i] = 3;
    mixture_config c = {.alpha = 0, .max_new_tokens = MIX_N, .end_ids = END_IDS, .n_end_ids = 1, .batch_size = 128, .seed = 31};
    mixture_sample *s = as_calloc(n, sizeof *s);
    assert_int_equal(mixture_sample_policy(f.m, &f.view_t, 1.0f, &c, pr, np, n, s), AS_OK);
    histogram(s, n, h);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(s[i].logq - f.logp_t[mix_leaf_index(s[i].ids, s[i].n_ids, s[i].ended)]));
        mixture_sample_free(&s[i]);
    }
    const double tv = mix_tv(h, pt, MIX_LEAVES);
    printf("  policy sampler vs pi_t: TV %.4f, log q within %.1e\n", tv, worst);
    assert_true(tv < 0.03 && worst < 1e-4);
    // Bad configurations are refused with an error.
    c.max_new_tokens = 0;
    assert_int_equal(mixture_sample_policy(f.m, NULL, 1.0f, &c, pr, np, 1, s), AS_FAIL);
    c.max_new_tokens = MIX_N;
    assert_int_equal(mixture_sample_policy(f.m, NULL, 0.0f, &c, pr, np, 1, s), AS_FAIL);
    c.alpha = 1.5f;
    assert_int_equal(mixture_sample_token(f.m, NULL, NULL, &c, pr, np, 1, s), AS_FAIL);
    c.alpha = 0.5f;
    assert_int_equal(mixture_sample_sir(f.m, NULL, NULL, &c, 0, pr, np, 1, s, NULL), AS_FAIL);
    const int32_t bad[1] = {MIX_V};
    const int32_t *bp[1] = {bad};
    assert_int_equal(mixture_sample_token(f.m, NULL, NULL, &c, bp, np, 1, s), AS_FAIL);
    free(s), free(pr), free(np);
    fixture_free(&f);
}

// A job split into shares (first_index: the offset of each share's first
// answer, as src/spin/losers_geometric.c splits one over processes) draws the
// whole job's answers, for each sampler.  The shares start at multiples of the
// batch size, so every forward call has the rows it has in the whole job.
static void test_split_job(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f, 6.0, 0.8);
    enum { N = 40, B = 5, K = 4 };
    const int64_t cut[] = {0, 10, 25, N};
    const int32_t *pr[N];
    int64_t np[N];
    for (int i = 0; i < N; i++) pr[i] = f.prompt, np[i] = 3;
    for (int kind = 0; kind < 3; kind++) { // token, sir, policy
        mixture_config c = {.alpha = 0.5f, .max_new_tokens = MIX_N, .end_ids = END_IDS, .n_end_ids = 1, .batch_size = B, .seed = 41};
        mixture_sample whole[N], part[N];
        double ess_w[N], ess_p[N];
#define DRAW(out, ess, first, n)                                                                                                   \
    (kind == 0   ? mixture_sample_token(f.m, &f.view_t, NULL, &c, pr + (first), np + (first), (n), (out) + (first))                 \
     : kind == 1 ? mixture_sample_sir(f.m, &f.view_t, NULL, &c, K, pr + (first), np + (first), (n), (out) + (first), (ess) + (first)) \
                 : mixture_sample_policy(f.m, &f.view_t, 1.0f, &c, pr + (first), np + (first), (n), (out) + (first)))
        assert_int_equal(DRAW(whole, ess_w, 0, N), AS_OK);
        for (int p = 0; p < 3; p++) {
            c.first_index = cut[p];
            assert_int_equal(DRAW(part, ess_p, cut[p], cut[p + 1] - cut[p]), AS_OK);
        }
#undef DRAW
        int differ = 0; // answers unlike the one before them: the streams are not all one
        for (int i = 0; i < N; i++) {
            assert_int_equal(part[i].n_ids, whole[i].n_ids);
            assert_memory_equal(part[i].ids, whole[i].ids, sizeof(int32_t) * (size_t)whole[i].n_ids);
            assert_true(part[i].ended == whole[i].ended && part[i].log_w == whole[i].log_w && part[i].logq == whole[i].logq);
            if (kind == 1) assert_true(ess_p[i] == ess_w[i]);
            differ += i > 0 && (whole[i].n_ids != whole[i - 1].n_ids ||
                                memcmp(whole[i].ids, whole[i - 1].ids, sizeof(int32_t) * (size_t)whole[i].n_ids) != 0);
        }
        printf("  kind %d: %d of %d answers unlike the one before\n", kind, differ, N - 1);
        assert_true(differ > N / 4);
        for (int i = 0; i < N; i++) mixture_sample_free(&whole[i]), mixture_sample_free(&part[i]);
    }
    mixture_config c = {.alpha = 0.5f, .max_new_tokens = MIX_N, .end_ids = END_IDS, .n_end_ids = 1, .batch_size = B, .first_index = -1};
    mixture_sample s;
    assert_int_equal(mixture_sample_token(f.m, NULL, NULL, &c, pr, np, 1, &s), AS_FAIL); // a negative offset is refused
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_token_sampler_is_q), cmocka_unit_test(test_sir_vs_token_bias),
                                       cmocka_unit_test(test_policy_sampler), cmocka_unit_test(test_split_job)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
