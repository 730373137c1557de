// Sampler tests by exact enumeration: for each parameter setting the test
// computes, independently and in double precision, the distribution the chain
// implies (llama.cpp semantics, written out the obvious way: full sort, masks),
// then checks (1) the sampler's final candidate distribution against it and
// (2) 200k actual draws against it by total variation and chi-square.  Negative
// controls show that an off-by-one in top_k / top_p / min_p would fail the same
// bounds.
#include "test_common.h"

#include <math.h>

#include "generate/sampler.h"
#include "tensor/kernels_impl.h"
#include "tensor/vexp.h"
#include "util/common.h"

// ---- independent reference ----

typedef struct ref_params {
    double temperature, top_p, min_p, penalty;
    int top_k, last_n;
    int top_k_bias, top_p_bias; // negative controls: keep this many more (or fewer) tokens
} ref_params;

static ref_params ref_from(const sampler_params *p) {
    return (ref_params){.temperature = p->temperature, .top_p = p->top_p, .min_p = p->min_p,
                        .penalty = p->repeat_penalty, .top_k = p->top_k, .last_n = p->repeat_last_n};
}

static const double *g_sort_l;
static int ref_order_cmp(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (g_sort_l[i] != g_sort_l[j]) return g_sort_l[i] > g_sort_l[j] ? -1 : 1;
    return i - j;
}

// out[V]: the probability of each token.
static void ref_distribution(const float *logits, int V, const int32_t *hist, int nh, const ref_params *p, double *out) {
    double *l = malloc(V * sizeof *l);
    int *order = malloc(V * sizeof *order);
    char *alive = malloc(V);
    for (int i = 0; i < V; i++) l[i] = logits[i];
    // repetition penalty: distinct tokens of the window, once each
    if (p->penalty != 1.0 && p->last_n != 0) {
        int start = p->last_n < 0 ? 0 : (nh > p->last_n ? nh - p->last_n : 0);
        for (int i = 0; i < V; i++) {
            int present = 0;
            for (int j = start; j < nh; j++) present |= hist[j] == i;
            if (present) l[i] = l[i] <= 0 ? l[i] * p->penalty : l[i] / p->penalty;
        }
    }
    for (int i = 0; i < V; i++) out[i] = 0.0;
    if (p->temperature == 0.0) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[best]) best = i;
        out[best] = 1.0;
        goto done;
    }
    for (int i = 0; i < V; i++) order[i] = i, alive[i] = 1;
    g_sort_l = l;
    qsort(order, V, sizeof *order, ref_order_cmp);
    if (p->top_k > 0) {
        int k = p->top_k + p->top_k_bias;
        for (int r = k; r < V; r++) alive[order[r]] = 0;
    }
    if (p->top_p < 1.0) {
        double mx = -INFINITY, z = 0.0;
        for (int i = 0; i < V; i++) if (alive[i] && l[i] > mx) mx = l[i];
        for (int i = 0; i < V; i++) if (alive[i]) z += exp(l[i] - mx);
        double cum = 0.0;
        int r = 0, cut = V;
        for (; r < V; r++) {
            if (!alive[order[r]]) continue;
            cum += exp(l[order[r]] - mx) / z;
            if (cum >= p->top_p) { cut = r + 1; break; }
        }
        cut += p->top_p_bias;
        for (int q = cut; q < V; q++) alive[order[q]] = 0;
    }
    if (p->min_p > 0.0) {
        double mx = -INFINITY;
        for (int i = 0; i < V; i++) if (alive[i] && l[i] > mx) mx = l[i];
        // p_i / p_max = exp(l_i - l_max) whatever the normaliser
        for (int i = 0; i < V; i++) if (alive[i] && exp(l[i] - mx) < p->min_p) alive[i] = 0;
    }
    {
        double mx = -INFINITY, z = 0.0;
        for (int i = 0; i < V; i++) if (alive[i] && l[i] / p->temperature > mx) mx = l[i] / p->temperature;
        for (int i = 0; i < V; i++) if (alive[i]) z += (out[i] = exp(l[i] / p->temperature - mx));
        for (int i = 0; i < V; i++) out[i] /= z;
    }
done:
    free(l);
    free(order);
    free(alive);
}

static double tv_distance(const double *a, const double *b, int V) {
    double s = 0.0;
    for (int i = 0; i < V; i++) s += fabs(a[i] - b[i]);
    return 0.5 * s;
}

// Standard normal draws by Box-Muller on our own RNG (test data only).
static void fill_normal(float *x, int n, double scale, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        double u1 = as_rng_uniform(&r), u2 = as_rng_uniform(&r);
        x[i] = (float)(scale * sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2));
    }
}

// ---- (1) exact final distribution ----

static void check_distribution(const float *logits, int V, const int32_t *hist, int nh, const sampler_params *sp) {
    sampler s;
    assert_int_equal(sampler_init(&s, sp, V), 0);
    double *ref = malloc(V * sizeof *ref), *got = calloc(V, sizeof *got);
    ref_params rp = ref_from(sp);
    ref_distribution(logits, V, hist, nh, &rp, ref);
    int64_t n = sampler_distribution(&s, logits, hist, nh);
    assert_true(n >= 1 && n <= V);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        assert_true(s.cand[i].id >= 0 && s.cand[i].id < V);
        assert_true(got[s.cand[i].id] == 0.0); // no duplicates
        got[s.cand[i].id] = s.cand[i].p;
        sum += s.cand[i].p;
    }
    assert_true(fabs(sum - 1.0) < 1e-5);
    int support_ref = 0;
    for (int i = 0; i < V; i++) {
        support_ref += ref[i] > 0.0;
        if ((ref[i] > 0.0) != (got[i] > 0.0) || fabs(ref[i] - got[i]) > 2e-6) {
            fail_msg("V=%d T=%g k=%d p=%g min_p=%g pen=%g: token %d: ref %.9f got %.9f", V, sp->temperature,
                     sp->top_k, sp->top_p, sp->min_p, sp->repeat_penalty, i, ref[i], got[i]);
        }
    }
    assert_int_equal(support_ref, n);
    free(ref);
    free(got);
    sampler_free(&s);
}

static const sampler_params g_settings[] = {
    // T, top_k, top_p, min_p, penalty, last_n, seed
    {1.0f, 0, 1.0f, 0.0f, 1.0f, 64, 1},     // plain softmax
    {0.7f, 0, 1.0f, 0.0f, 1.0f, 64, 2},     // temperature only
    {1.0f, 5, 1.0f, 0.0f, 1.0f, 64, 3},     // top_k
    {1.0f, 0, 0.8f, 0.0f, 1.0f, 64, 4},     // top_p
    {1.0f, 0, 1.0f, 0.1f, 1.0f, 64, 5},     // min_p
    {1.3f, 0, 1.0f, 0.0f, 1.3f, 4, 6},      // repeat penalty with a window
    {0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 7},  // llama.cpp defaults
    {0.6f, 8, 0.7f, 0.02f, 1.2f, 16, 8},    // everything at once
    {1.0f, 3, 0.5f, 0.0f, 1.0f, 64, 9},     // top_p inside top_k
    {2.0f, 0, 0.9f, 0.2f, 1.0f, 64, 10},    // min_p after top_p, hot
    {0.0f, 0, 1.0f, 0.0f, 1.5f, 8, 11},     // greedy with penalty
};

static void test_distribution_small(void **st) {
    (void)st;
    const int sizes[] = {2, 7, 16, 64};
    int32_t hist[40];
    for (int h = 0; h < 40; h++) hist[h] = (h * 7 + 3) % 16;
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++) {
        int V = sizes[si];
        float *logits = malloc(V * sizeof *logits);
        for (size_t k = 0; k < AS_ARRAY_LEN(g_settings); k++) {
            fill_normal(logits, V, 2.0, 100 + k * 17 + si);
            for (int h = 0; h < 40; h++) hist[h] %= V;
            check_distribution(logits, V, hist, 40, &g_settings[k]);
        }
        free(logits);
    }
}

// The real vocabulary size, and a flat distribution where top_p needs far more
// than the 256 candidates the fast path sorts first.
static void test_distribution_large(void **st) {
    (void)st;
    const int V = 49152;
    float *logits = malloc(V * sizeof *logits);
    int32_t hist[100];
    for (int h = 0; h < 100; h++) hist[h] = (h * 977) % V;
    for (size_t k = 0; k < AS_ARRAY_LEN(g_settings); k++) {
        fill_normal(logits, V, 3.0, 500 + k);
        check_distribution(logits, V, hist, 100, &g_settings[k]);
    }
    fill_normal(logits, V, 0.05, 999); // nearly flat: top_p 0.5 keeps ~24k tokens
    sampler_params p = {1.0f, 0, 0.5f, 0.0f, 1.0f, 64, 1};
    check_distribution(logits, V, hist, 100, &p);
    p.top_p = 0.99f, p.min_p = 0.9f; // then min_p trims the flat set
    check_distribution(logits, V, hist, 100, &p);
    free(logits);
}

// ---- (2) draws ----

#define N_DRAWS 200000

static void draw_histogram(const float *logits, int V, const int32_t *hist, int nh, const sampler_params *sp, double *freq) {
    sampler s;
    assert_int_equal(sampler_init(&s, sp, V), 0);
    for (int i = 0; i < V; i++) freq[i] = 0.0;
    for (int d = 0; d < N_DRAWS; d++) {
        int32_t t = sampler_sample(&s, logits, hist, nh);
        assert_true(t >= 0 && t < V);
        freq[t] += 1.0;
    }
    for (int i = 0; i < V; i++) freq[i] /= N_DRAWS;
    sampler_free(&s);
}

// Pearson chi-square against `ref`; a draw outside the support is an instant failure.
static double chi_square(const double *freq, const double *ref, int V, int *df) {
    double x = 0.0;
    *df = -1;
    for (int i = 0; i < V; i++) {
        if (ref[i] == 0.0) {
            if (freq[i] > 0.0) return INFINITY;
            continue;
        }
        double e = ref[i] * N_DRAWS, o = freq[i] * N_DRAWS;
        x += (o - e) * (o - e) / e;
        (*df)++;
    }
    return x;
}

// Accepts when TV < 0.01 and chi-square below df + 6 sqrt(2 df) + 10 (far in
// the tail: a correct sampler fails with probability < 1e-6).
static bool draws_match(const double *freq, const double *ref, int V) {
    int df;
    double x = chi_square(freq, ref, V, &df);
    if (df <= 0) return tv_distance(freq, ref, V) == 0.0;
    return tv_distance(freq, ref, V) < 0.01 && x < df + 6.0 * sqrt(2.0 * df) + 10.0;
}

static void test_draws_match_enumeration(void **st) {
    (void)st;
    const int V = 12;
    float logits[12];
    int32_t hist[6] = {0, 3, 3, 7, 11, 2};
    double ref[12], freq[12];
    for (size_t k = 0; k < AS_ARRAY_LEN(g_settings); k++) {
        fill_normal(logits, V, 1.5, 42 + k);
        ref_params rp = ref_from(&g_settings[k]);
        ref_distribution(logits, V, hist, 6, &rp, ref);
        draw_histogram(logits, V, hist, 6, &g_settings[k], freq);
        int df;
        double x = chi_square(freq, ref, V, &df);
        if (!draws_match(freq, ref, V))
            fail_msg("setting %zu: TV %.4f chi2 %.1f (df %d)", k, tv_distance(freq, ref, V), x, df);
    }
}

// Negative controls: the same bounds reject a sampler whose top_k, top_p or
// min_p were off by one token.  Logits are fixed so that the boundary token
// carries real mass.
static void test_negative_controls(void **st) {
    (void)st;
    // probabilities at T=1 ~ .30 .22 .16 .12 .09 .06 .05 remaining small
    const float logits[10] = {1.0f, 0.7f, 0.38f, 0.1f, -0.2f, -0.6f, -0.8f, -1.6f, -2.0f, -2.5f};
    double ref[10], wrong[10], freq[10];
    struct { sampler_params p; int k_bias, p_bias; double min_p_wrong; } cases[] = {
        {{1.0f, 4, 1.0f, 0.0f, 1.0f, 64, 1}, +1, 0, -1},  // top_k keeps k+1
        {{1.0f, 4, 1.0f, 0.0f, 1.0f, 64, 2}, -1, 0, -1},  // top_k keeps k-1
        {{1.0f, 0, 0.75f, 0.0f, 1.0f, 64, 3}, 0, +1, -1}, // top_p keeps one past the mass
        {{1.0f, 0, 0.75f, 0.0f, 1.0f, 64, 4}, 0, -1, -1}, // top_p stops one short (cum > p before adding)
        {{1.0f, 0, 1.0f, 0.35f, 1.0f, 64, 5}, 0, 0, 0.25}, // min_p relative to a wrong reference
    };
    for (size_t c = 0; c < AS_ARRAY_LEN(cases); c++) {
        ref_params rp = ref_from(&cases[c].p);
        ref_distribution(logits, 10, NULL, 0, &rp, ref);
        rp.top_k_bias = cases[c].k_bias;
        rp.top_p_bias = cases[c].p_bias;
        if (cases[c].min_p_wrong >= 0) rp.min_p = cases[c].min_p_wrong;
        ref_distribution(logits, 10, NULL, 0, &rp, wrong);
        assert_true(tv_distance(ref, wrong, 10) > 0.03); // the bug is visible in distribution
        draw_histogram(logits, 10, NULL, 0, &cases[c].p, freq);
        assert_true(draws_match(freq, ref, 10));   // our sampler passes
        assert_false(draws_match(freq, wrong, 10)); // the buggy distribution would not
    }
}

// ---- greedy, seeds, argument checks ----

static void test_greedy(void **st) {
    (void)st;
    sampler_params g = sampler_params_greedy();
    sampler s;
    assert_int_equal(sampler_init(&s, &g, 6), 0);
    const float tie[6] = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f, 1.0f};
    assert_int_equal(sampler_sample(&s, tie, NULL, 0), 1); // ties to the lowest id
    assert_int_equal(sampler_argmax(tie, 6), 1);
    // penalty on 1 makes it 2/1.5; the tie 3 vs 4 again goes to the lower id
    g.repeat_penalty = 1.5f;
    assert_int_equal(sampler_reset(&s, &g), 0);
    int32_t h1[] = {1};
    assert_int_equal(sampler_sample(&s, tie, h1, 1), 3);
    // negative logits are multiplied: -1 becomes -1.5, below token 1's -1.2
    const float neg[6] = {-1.0f, -1.2f, -3.0f, -5.0f, -5.0f, -5.0f};
    int32_t h0[] = {0, 0, 0};
    assert_int_equal(sampler_sample(&s, neg, h0, 3), 1);
    // outside the window the penalty does not apply
    g.repeat_last_n = 1;
    assert_int_equal(sampler_reset(&s, &g), 0);
    int32_t h2[] = {0, 2};
    assert_int_equal(sampler_sample(&s, neg, h2, 2), 0);
    sampler_free(&s);
    // greedy argmax over a real-size vocabulary equals a plain scan
    float *big = malloc(49152 * sizeof *big);
    fill_normal(big, 49152, 3.0, 7);
    big[40000] = big[12345] = 100.0f;
    assert_int_equal(sampler_init(&s, &g, 49152), 0);
    assert_int_equal(sampler_sample(&s, big, NULL, 0), 12345);
    sampler_free(&s);
    // sampler_argmax (16 vector lanes) against the plain first-maximum scan,
    // with ties across and within lanes, tails, -0 vs +0, NaNs and infinities.
    for (int trial = 0; trial < 400; trial++) {
        const int32_t n = 1 + trial * 131 % 200 + (trial % 7 == 0 ? 48900 : 0);
        fill_normal(big, n, 1.0, 100 + trial);
        for (int32_t i = 0; i < n; i++) big[i] = (float)(int)(big[i] * 2.0f) * 0.5f; // few distinct values: many ties
        if (trial % 5 == 1) big[trial % n] = NAN;
        if (trial % 5 == 2) big[0] = NAN;
        if (trial % 5 == 3) big[(trial * 7) % n] = INFINITY, big[(trial * 3) % n] = INFINITY;
        if (trial % 11 == 4) for (int32_t i = 0; i < n; i++) big[i] = (i % 3) ? -0.0f : 0.0f;
        int32_t want = 0;
        for (int32_t i = 1; i < n; i++)
            if (big[i] > big[want]) want = i;
        if (sampler_argmax(big, n) != want) fail_msg("argmax trial %d (n %d): %d, plain scan %d", trial, n, sampler_argmax(big, n), want);
    }
    free(big);
}

// Ties at the top_k boundary go to the lower ids (a deterministic rule; llama.cpp's
// partial sort leaves it unspecified).
static void test_top_k_ties(void **st) {
    (void)st;
    const float l[8] = {0.0f, 2.0f, 1.0f, 2.0f, 1.0f, 1.0f, -1.0f, 1.0f};
    sampler_params p = {1.0f, 3, 1.0f, 0.0f, 1.0f, 64, 1};
    sampler s;
    assert_int_equal(sampler_init(&s, &p, 8), 0);
    assert_int_equal(sampler_distribution(&s, l, NULL, 0), 3);
    int32_t ids[3] = {s.cand[0].id, s.cand[1].id, s.cand[2].id};
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 2);
    sampler_free(&s);
}

static void test_seed_reproducible(void **st) {
    (void)st;
    float logits[50];
    fill_normal(logits, 50, 1.0, 3);
    sampler_params p = sampler_params_default();
    sampler a, b;
    p.seed = 1234;
    assert_int_equal(sampler_init(&a, &p, 50), 0);
    assert_int_equal(sampler_init(&b, &p, 50), 0);
    int32_t seq_a[500], seq_b[500];
    for (int i = 0; i < 500; i++) {
        seq_a[i] = sampler_sample(&a, logits, seq_a, i);
        seq_b[i] = sampler_sample(&b, logits, seq_b, i);
    }
    assert_memory_equal(seq_a, seq_b, sizeof seq_a);
    // a reset restarts the stream; another seed gives another stream
    assert_int_equal(sampler_reset(&a, &p), 0);
    for (int i = 0; i < 500; i++) assert_int_equal(sampler_sample(&a, logits, seq_a, i), seq_a[i]);
    p.seed = 1235;
    assert_int_equal(sampler_reset(&b, &p), 0);
    int differ = 0;
    for (int i = 0; i < 500; i++) differ += sampler_sample(&b, logits, seq_a, i) != seq_a[i];
    assert_true(differ > 50);
    sampler_free(&a);
    sampler_free(&b);
}

static void test_params_check(void **st) {
    (void)st;
    sampler_params ok = sampler_params_default();
    assert_int_equal(sampler_params_check(&ok), 0);
    struct { sampler_params p; const char *field; } bad[] = {
        {{-0.1f, 0, 1.0f, 0.0f, 1.0f, 64, 0}, "temperature"},
        {{NAN, 0, 1.0f, 0.0f, 1.0f, 64, 0}, "temperature"},
        {{1.0f, -1, 1.0f, 0.0f, 1.0f, 64, 0}, "top_k"},
        {{1.0f, 0, 0.0f, 0.0f, 1.0f, 64, 0}, "top_p"},
        {{1.0f, 0, 1.5f, 0.0f, 1.0f, 64, 0}, "top_p"},
        {{1.0f, 0, 1.0f, -0.1f, 1.0f, 64, 0}, "min_p"},
        {{1.0f, 0, 1.0f, 0.0f, 0.0f, 64, 0}, "repeat_penalty"},
        {{1.0f, 0, 1.0f, 0.0f, 1.0f, -2, 0}, "repeat_last_n"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        as_clear_error();
        assert_int_equal(sampler_params_check(&bad[i].p), -1);
        assert_non_null(strstr(as_last_error(), bad[i].field));
        sampler s;
        assert_int_equal(sampler_init(&s, &bad[i].p, 10), -1);
    }
    sampler s;
    assert_int_equal(sampler_init(&s, &ok, 0), -1);
}

// The same candidates, probabilities and draws under every ISA this CPU has
// (kernel_force_isa; README: bitwise reproducible across CPUs): the chain is
// plain scalar code in a fixed order, and its exp is vexp.h's as_expf (not
// libm's expf, which may differ between CPUs and builds): the probabilities
// are checked against it bit for bit.
static void test_isa_invariant(void **st) {
    (void)st;
    enum { V = 49152, DRAWS = 100 };
    float *logits = malloc(V * sizeof *logits);
    fill_normal(logits, V, 2.5, 41);
    for (int i = 0; i < V; i += 1000) logits[i] = logits[7]; // ties
    const sampler_params ps[] = {
        {0.7f, 0, 0.9f, 0.02f, 1.3f, 64, 5},   // no top_k: top_p by quickselect over the whole vocabulary
        {1.0f, 40, 0.95f, 0.05f, 1.0f, 64, 6}, // the defaults' chain
        {1.3f, 0, 1.0f, 0.0f, 1.1f, -1, 7},    // plain softmax, penalty over the whole history
    };
    int32_t ref_ids[3][DRAWS], ids[DRAWS];
    float *ref_p[3] = {0};
    int64_t ref_n[3] = {0};
    int n_isa = 0;
    for (int isa = KERNEL_ISA_SCALAR; isa < KERNEL_ISA_COUNT; isa++) {
        if (kernel_force_isa((kernel_isa)isa) != AS_OK) {
            fprintf(stderr, "  ISA %s: not on this CPU, skipped\n", kernel_isa_name((kernel_isa)isa));
            continue;
        }
        for (size_t k = 0; k < AS_ARRAY_LEN(ps); k++) {
            sampler s;
            assert_int_equal(sampler_init(&s, &ps[k], V), 0);
            int32_t hist[8] = {3, 1000, 2000, 5, 3, 40000, 7, 9};
            const int64_t n = sampler_distribution(&s, logits, hist, 8);
            float *p = malloc(sizeof(float) * 2 * (size_t)n);
            for (int64_t i = 0; i < n; i++) p[2 * i] = (float)s.cand[i].id, p[2 * i + 1] = s.cand[i].p;
            if (n_isa == 0) {
                // The probabilities are as_expf's: p_i = (float)(e_i / sum e), e_i = as_expf(l_i - max).
                float mx = -INFINITY;
                for (int64_t i = 0; i < n; i++) mx = fmaxf(mx, s.cand[i].logit);
                double sum = 0;
                for (int64_t i = 0; i < n; i++) sum += as_expf(s.cand[i].logit - mx);
                for (int64_t i = 0; i < n; i++) {
                    const float want = (float)(as_expf(s.cand[i].logit - mx) / sum);
                    if (memcmp(&want, &s.cand[i].p, sizeof want)) fail_msg("params %zu: candidate %lld's p %.9g, as_expf gives %.9g", k, (long long)i, s.cand[i].p, want);
                }
                ref_p[k] = p, ref_n[k] = n;
            } else {
                assert_int_equal(n, ref_n[k]);
                if (memcmp(p, ref_p[k], sizeof(float) * 2 * (size_t)n)) fail_msg("params %zu: ISA %s's candidates differ", k, kernel_isa_name((kernel_isa)isa));
                free(p);
            }
            assert_int_equal(sampler_reset(&s, &ps[k]), 0);
            for (int i = 0; i < DRAWS; i++) ids[i] = sampler_sample(&s, logits, ids, i);
            if (n_isa == 0) memcpy(ref_ids[k], ids, sizeof ids);
            else if (memcmp(ref_ids[k], ids, sizeof ids)) fail_msg("params %zu: ISA %s draws other tokens", k, kernel_isa_name((kernel_isa)isa));
            sampler_free(&s);
        }
        // argmax: ties to the lowest index on every ISA's code.
        float *t = malloc(V * sizeof *t);
        for (int i = 0; i < V; i++) t[i] = (float)(i % 97) * 0.25f;
        t[12345] = t[33333] = t[49151] = 1000.0f;
        assert_int_equal(sampler_argmax(t, V), 12345);
        assert_int_equal(sampler_argmax(t, 33334 - 16 + 3), 12345);
        free(t);
        n_isa++;
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    for (size_t k = 0; k < AS_ARRAY_LEN(ps); k++) free(ref_p[k]);
    free(logits);
}

static void test_logprob(void **st) {
    (void)st;
    const float l[4] = {1.0f, 2.0f, -3.0f, 0.5f};
    double z = exp(1.0) + exp(2.0) + exp(-3.0) + exp(0.5);
    for (int i = 0; i < 4; i++) assert_true(fabs(sampler_logprob(l, 4, i) - log(exp(l[i]) / z)) < 1e-12);
    // stable for large logits
    const float big[2] = {1000.0f, 999.0f};
    assert_true(fabs(sampler_logprob(big, 2, 1) - (-1.0 - log1p(exp(-1.0)))) < 1e-9);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distribution_small),
        cmocka_unit_test(test_distribution_large),
        cmocka_unit_test(test_draws_match_enumeration),
        cmocka_unit_test(test_negative_controls),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k_ties),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_params_check),
        cmocka_unit_test(test_logprob),
        cmocka_unit_test(test_isa_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
