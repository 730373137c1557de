// The CUDA backend's sampler (sample_rows, src/tensor/cuda/cuda_backend.cu,
// section "sampling") run on the host through the plugin's
// alphaspin_cuda_train_host table (its blocks' phases looped thread by
// thread, cuda_host_check.h), against generate/sampler.c's sampler_sample,
// row by row: the same token and the same RNG state after it, over random
// rows of logits (uniform, heavy ties, signed zeros, huge and tiny values,
// NaN and -inf), vocabularies around the block size and up to 49152, a row
// stride wider than the vocabulary, and random params (greedy, temperature
// alone, top_k 1 / 40 / vocab - 1 / > vocab, top_p 0.5 / 0.95 / 1, min_p 0 /
// 0.05 / 0.5, repetition penalties over windows of 0, 16, 64 and all of a
// history with out-of-vocabulary ids) and seeds, on every CPU ISA here (the
// sampler's e^x is the CPU backend's).  What only a GPU can check: the
// launch, the barriers, shared memory and the copies: with
// ALPHASPIN_SAMPLE_DEVICE=1 (ctest's test_cuda_sample, label gpu, which
// scripts/device_check.sh runs) the same checks call the CUDA backend's own
// sample_rows on the device instead.  Skips (77) when the plugin was not
// built, or in that mode when there is no CUDA device.
#include "test_common.h"

#include "cuda_plugin.h"
#include <math.h>

#include "generate/sampler.h"
#include "tensor/backend.h"
#include "tensor/cuda/cuda_host_check.h"
#include "tensor/kernels_impl.h"
#include "util/common.h"
#include "util/rng.h"

static const as_cuda_train_host *HT;
static void (*sample_rows)(int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, as_sample_row *rows);
static void (*logprob_rows)(float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, const int32_t *tok);
static as_rng g_rng;

static double unif(void) { return as_rng_uniform(&g_rng); }
static int64_t below(int64_t n) { return (int64_t)as_rng_below(&g_rng, (uint64_t)n); }

// A row of V logits in one of several styles.
static void fill_row(float *z, int32_t V, int style) {
    for (int32_t i = 0; i < V; i++) {
        float x = (float)(-15.0 + 30.0 * unif());
        switch (style) {
        case 1: x = (float)(below(7) - 3); break;                        // heavy ties
        case 2: x = below(3) == 0 ? (below(2) ? 0.0f : -0.0f) : x * 1e-3f; break; // signed zeros, small values
        case 3: x = (float)((unif() - 0.5) * 6e38); break;                // huge (|x| up to 3e38: temperature may overflow)
        case 4: x = below(2) ? x * 1e-30f : x * 1e20f; break;             // tiny next to large
        case 5: x = below(10) == 0 ? NAN : below(10) == 0 ? -INFINITY : x; break;
        default: break;
        }
        z[i] = x;
    }
    if (style == 1 && V > 3) z[V - 1] = z[0] = 3.0f; // ties at the top, at both ends
}

static sampler_params random_params(int32_t V) {
    static const float temps[] = {0.0f, 0.7f, 1.0f, 1.5f, 0.25f};
    static const float tps[] = {0.5f, 0.95f, 1.0f, 0.999f};
    static const float mps[] = {0.0f, 0.05f, 0.5f};
    static const float pens[] = {1.0f, 1.3f, 0.8f};
    static const int32_t lasts[] = {-1, 0, 16, 64};
    sampler_params p = sampler_params_default();
    p.temperature = temps[below(AS_ARRAY_LEN(temps))];
    const int64_t kk = below(6);
    p.top_k = kk == 0 ? 0 : kk == 1 ? 1 : kk == 2 ? 40 : kk == 3 ? V + 5 : kk == 4 ? AS_MAX(V - 1, 0) : (int32_t)(1 + below(V));
    p.top_p = tps[below(AS_ARRAY_LEN(tps))];
    p.min_p = mps[below(AS_ARRAY_LEN(mps))];
    p.repeat_penalty = pens[below(AS_ARRAY_LEN(pens))];
    p.repeat_last_n = lasts[below(AS_ARRAY_LEN(lasts))];
    p.seed = as_rng_u64(&g_rng);
    return p;
}

typedef struct { int64_t rows, greedy, top_k, top_k_par, unsorted, draws; } counts;

// One call of sample_rows over n rows (stride ld) against sampler_sample on each.
static void check_batch(int32_t V, int64_t n, int64_t ld, const char *isa, counts *cnt) {
    float *z = as_malloc(sizeof(float) * (size_t)(n * ld));
    int32_t *hist = as_malloc(sizeof(int32_t) * (size_t)(n * 200)), *tok = as_malloc(sizeof(int32_t) * (size_t)n);
    as_sample_row *rows = as_calloc((size_t)n, sizeof *rows);
    sampler_params *par = as_malloc(sizeof *par * (size_t)n);
    const int style = (int)below(6);
    for (int64_t r = 0; r < n; r++) {
        fill_row(z + r * ld, V, style);
        for (int64_t i = V; i < ld; i++) z[r * ld + i] = 1e30f; // padding the stride skips
        par[r] = random_params(V);
        const int64_t nh = below(200);
        for (int64_t i = 0; i < nh; i++) {
            const int64_t u = below(20);
            hist[r * 200 + i] = u == 0 ? -1 : u == 1 ? V + 3 : (int32_t)below(V); // out-of-vocabulary ids are ignored
        }
        const sampler_params *p = &par[r];
        rows[r] = (as_sample_row){.temperature = p->temperature, .top_p = p->top_p, .min_p = p->min_p, .repeat_penalty = p->repeat_penalty,
                                  .top_k = p->top_k, .repeat_last_n = p->repeat_last_n, .history = hist + r * 200, .n_history = nh};
        as_rng_seed(&rows[r].rng, p->seed);
        for (int64_t s = below(3); s > 0; s--) as_rng_u64(&rows[r].rng); // a state mid-stream
    }
    as_sample_row *want = as_malloc(sizeof *want * (size_t)n);
    memcpy(want, rows, sizeof *want * (size_t)n);
    sample_rows(tok, z, ld, n, V, rows);
    // logprob_rows at the sampled tokens: the CPU's logprob up to the order of
    // its double sum, so equal once rounded to float but for a last bit.
    float *lp = as_malloc(sizeof *lp * (size_t)n);
    logprob_rows(lp, z, ld, n, V, tok);
    for (int64_t r = 0; r < n; r++) {
        const float want_lp = (float)as_backend_cpu.logprob(z + r * ld, V, tok[r]);
        if (!(isnan(want_lp) && isnan(lp[r])) && !(fabsf(lp[r] - want_lp) <= 2e-7f * fmaxf(1.0f, fabsf(want_lp))))
            fail_msg("cpu %s, V %d, style %d, row %lld: logprob_rows %.9g, the CPU's logprob %.9g", isa, V, style, (long long)r, lp[r], want_lp);
    }
    free(lp);
    for (int64_t r = 0; r < n; r++) {
        const sampler_params *p = &par[r];
        sampler s;
        assert_int_equal(sampler_init(&s, p, V), 0);
        s.rng = want[r].rng;
        const int32_t ref = sampler_sample(&s, z + r * ld, want[r].history, want[r].n_history);
        if (tok[r] != ref || memcmp(&s.rng, &rows[r].rng, sizeof s.rng))
            fail_msg("cpu %s, V %d, style %d, row %lld of %lld: T %g top_k %d top_p %g min_p %g penalty %g last_n %d (history %lld): "
                     "cuda token %d, cpu %d; rng %s",
                     isa, V, style, (long long)r, (long long)n, p->temperature, p->top_k, p->top_p, p->min_p, p->repeat_penalty,
                     p->repeat_last_n, (long long)want[r].n_history, tok[r], ref, memcmp(&s.rng, &rows[r].rng, sizeof s.rng) ? "differs" : "same");
        cnt->rows++;
        if (p->temperature <= 0.0f) cnt->greedy++;
        else {
            cnt->draws++;
            if (p->top_k > 0 && p->top_k < V) cnt->top_k++, cnt->top_k_par += p->top_k <= 1024 && 2 * p->top_k <= V; // the plugin's radix select
            else if (p->top_p < 1.0f) cnt->unsorted++;
        }
        sampler_free(&s);
    }
    free(z), free(hist), free(tok), free(rows), free(par), free(want);
}

static void c_sample(const char *isa) {
    static const int32_t vocab[] = {1, 2, 3, 7, 40, 41, 255, 256, 257, 1000, 4097};
    counts cnt = {0};
    for (int it = 0; it < 300; it++) {
        const int32_t V = vocab[below(AS_ARRAY_LEN(vocab))];
        check_batch(V, 1 + below(5), V + below(3), isa, &cnt);
    }
    for (int it = 0; it < 6; it++) check_batch(49152, 2, 49152, isa, &cnt); // SmolLM2's vocabulary
    // Every path of the chain was taken.
    assert_true(cnt.greedy > 0 && cnt.top_k_par > 0 && cnt.top_k > cnt.top_k_par && cnt.unsorted > 0 && cnt.draws > 0);
    printf("cpu %s: %lld rows (%lld greedy, %lld draws: %lld after top_k (%lld selected in parallel), %lld top_p's quickselect)\n", isa,
           (long long)cnt.rows, (long long)cnt.greedy, (long long)cnt.draws, (long long)cnt.top_k, (long long)cnt.top_k_par, (long long)cnt.unsorted);
}

static void test_sample(void **st) {
    (void)st;
    int ran = 0;
    for (int i = KERNEL_ISA_SCALAR; i < KERNEL_ISA_COUNT; i++) {
        if (!kernel_isa_available((kernel_isa)i) || kernel_force_isa((kernel_isa)i) != AS_OK) continue;
        c_sample(kernel_isa_name((kernel_isa)i));
        ran++;
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    assert_true(ran > 0);
}

// The contract's edges: a row whose every logit is NaN or -inf (the CPU: token
// 0 or its draw over zero weights), one token, the default params.
static void test_edges(void **st) {
    (void)st;
    const int32_t V = 300;
    float z[600];
    for (int i = 0; i < 600; i++) z[i] = i % 2 ? NAN : -INFINITY;
    sampler_params ps[3] = {sampler_params_default(), sampler_params_greedy(), sampler_params_default()};
    ps[2].top_k = 0, ps[2].top_p = 0.9f;
    for (int k = 0; k < 3; k++) {
        as_sample_row rows[2];
        for (int r = 0; r < 2; r++) {
            rows[r] = (as_sample_row){.temperature = ps[k].temperature, .top_p = ps[k].top_p, .min_p = ps[k].min_p,
                                      .repeat_penalty = ps[k].repeat_penalty, .top_k = ps[k].top_k, .repeat_last_n = ps[k].repeat_last_n};
            as_rng_seed(&rows[r].rng, ps[k].seed + (uint64_t)r);
        }
        as_sample_row want[2];
        memcpy(want, rows, sizeof want);
        int32_t tok[2];
        sample_rows(tok, z, V, 2, V, rows);
        for (int r = 0; r < 2; r++) {
            sampler s;
            assert_int_equal(sampler_init(&s, &ps[k], V), 0);
            s.rng = want[r].rng;
            assert_int_equal(tok[r], sampler_sample(&s, z + r * V, NULL, 0));
            assert_memory_equal(&s.rng, &rows[r].rng, sizeof s.rng);
            sampler_free(&s);
        }
    }
}

int main(void) {
    const as_cuda_train_host *(*entry)(void) = (const as_cuda_train_host *(*)(void))(uintptr_t)cuda_plugin_entry("alphaspin_cuda_train_host");
    HT = entry();
    if (!HT || HT->version != AS_CUDA_TRAIN_HOST_VERSION || !HT->ops.sample_rows) {
        fprintf(stderr, "alphaspin_cuda_train_host: version %d, expected %d, with sample_rows\n", HT ? HT->version : -1, AS_CUDA_TRAIN_HOST_VERSION);
        return 1;
    }
    sample_rows = HT->ops.sample_rows, logprob_rows = HT->ops.logprob_rows;
    if (!logprob_rows) {
        fprintf(stderr, "alphaspin_cuda_train_host: no logprob_rows\n");
        return 1;
    }
    if (getenv("ALPHASPIN_SAMPLE_DEVICE")) {
        const as_backend *be = as_backend_open("cuda");
        if (!be) {
            printf("SKIP: no CUDA device (%s)\n", as_last_error());
            return AS_TEST_SKIP;
        }
        if (!be->sample_rows || !be->logprob_rows) {
            fprintf(stderr, "the cuda backend has no sample_rows or logprob_rows\n");
            return 1;
        }
        sample_rows = be->sample_rows, logprob_rows = be->logprob_rows;
        printf("the CUDA backend's sample_rows on %s\n", be->variant_name(0));
    }
    as_rng_seed(&g_rng, 2222);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sample), cmocka_unit_test(test_edges)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
