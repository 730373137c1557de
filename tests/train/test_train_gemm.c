// Training products and kernels against naive references:
//  * kernel_gemm_bf16 (AMX tiles, and the fallback forced by
//    ALPHASPIN_BF16_NO_AMX=1; VDPBF16PS, and the fallback forced by
//    ALPHASPIN_BF16_NO_DPBF=1; test_gemm_dpbf has more) against a double-precision product of the
//    bf16-rounded operands, for every transpose combination, odd shapes,
//    alpha/beta; the pre-packed entry point gives the same bits; on AMX,
//    thread counts 1 and 2 give the same bits;
//  * kernel_sgemm (fp32) against a double-precision product;
//  * the blocked attention (ops.c) against a direct double-precision
//    softmax(q k^T) v over sequences longer than one block;
//  * the vectorised exp (vexp.h) against exp();
//  * a whole model (fp32 vs bf16 products): log-probabilities and gradients
//    within measured tolerances, and bf16 reproducible bitwise.
#include "train_test_util.h"

#include <stdlib.h>
#include <string.h>

#include "train/fastmath.h"
#include "tensor/vexp.h"
#include "tensor/gemm.h"
#include "tensor/quant.h"
#include "train/ops.h"
#include "train/train.h"
#include "util/common.h"

static float *randv(int64_t n, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    float *x = as_malloc(sizeof(float) * (size_t)AS_MAX(n, (int64_t)1));
    fill_normal(x, n, 1.0f, &r);
    return x;
}

static float rnd_bf16(float x) { return as_bf16_to_f32(as_f32_to_bf16(x)); }

// op(X)[i][j]
static float at(const float *X, bool t, int64_t ld, int64_t i, int64_t j) { return t ? X[j * ld + i] : X[i * ld + j]; }

// Checks C against alpha op(A) op(B) + beta C0 in double (operands rounded to
// bf16 first when bf16): error <= tol * (sum_k |a||b| + |beta c0|).
static void check_product(const char *what, bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *B, int64_t ldb, float beta, const float *C0, const float *C, int64_t ldc, double tol) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0, mag = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double a = at(A, ta, lda, i, k), b = at(B, tb, ldb, k, j);
                if (bf16) a = rnd_bf16((float)a), b = rnd_bf16((float)b);
                s += a * b, mag += fabs(a * b);
            }
            const double c0 = beta == 0.0f ? 0.0 : (double)C0[i * ldc + j];
            const double want = alpha * s + beta * c0, e = fabs(C[i * ldc + j] - want);
            if (!(e <= tol * (fabs(alpha) * mag + fabs(beta * c0)) + 1e-30))
                fail_msg("%s: %s ta=%d tb=%d %lldx%lldx%lld: C[%lld][%lld] = %.9g, expected %.9g", what, bf16 ? "bf16" : "f32", ta, tb,
                         (long long)M, (long long)N, (long long)K, (long long)i, (long long)j, (double)C[i * ldc + j], want);
        }
}

static void gemm_cases(bool bf16) {
    const int64_t shapes[][3] = {{1, 1, 1}, {5, 3, 7}, {37, 45, 70}, {64, 96, 33}, {33, 130, 64}, {100, 17, 200}};
    for (size_t s = 0; s < AS_ARRAY_LEN(shapes); s++)
        for (int t = 0; t < 4; t++) {
            const bool ta = t & 1, tb = t & 2;
            const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2; // strides wider than the rows
            float *A = randv((ta ? K : M) * lda, 10 + s), *B = randv((tb ? N : K) * ldb, 20 + s), *C0 = randv(M * ldc, 30 + s);
            float *C = as_malloc(sizeof(float) * (size_t)(M * ldc)), *C2 = as_malloc(sizeof(float) * (size_t)(M * ldc));
            const float alpha = 0.75f, betas[2] = {0.0f, 0.5f};
            for (int bi = 0; bi < 2; bi++) {
                const float beta = betas[bi];
                memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
                if (beta == 0.0f)
                    for (int64_t i = 0; i < M * ldc; i++) C[i] = NAN; // beta 0 must not read C
                if (bf16) kernel_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 2);
                else kernel_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 2);
                check_product("gemm", bf16, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, C, ldc, 1e-5);
                if (!bf16) continue;
                // Again (on AMX with one thread: each element is one tile
                // sum in K order either way): the same bits.  Pre-packed B:
                // the same bits.
                memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
                kernel_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc, kernel_gemm_bf16_amx() ? 1 : 2);
                for (int64_t i = 0; i < M; i++) assert_memory_equal(C + i * ldc, C2 + i * ldc, sizeof(float) * (size_t)N);
                memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
                kernel_bf16_packed P;
                kernel_bf16_pack_b(&P, tb, K, N, B, ldb, 2);
                kernel_gemm_bf16_packed(ta, M, alpha, A, lda, &P, beta, C2, ldc, 2);
                kernel_bf16_packed_free(&P);
                for (int64_t i = 0; i < M; i++) assert_memory_equal(C + i * ldc, C2 + i * ldc, sizeof(float) * (size_t)N);
            }
            free(A), free(B), free(C0), free(C), free(C2);
        }
}

static void test_gemm_f32(void **state) {
    (void)state;
    gemm_cases(false);
}

static void test_gemm_bf16(void **state) {
    (void)state;
    printf("  bf16 products on %s\n", kernel_gemm_bf16_amx()    ? "AMX tiles"
                                       : kernel_gemm_bf16_dpbf() ? "VDPBF16PS"
                                                                 : "the fallback (bf16-rounded operands, fp32 fma chains)");
    gemm_cases(true);
    if (kernel_gemm_bf16_dpbf()) { // and the fma fallback on this machine too
        setenv("ALPHASPIN_BF16_NO_DPBF", "1", 1);
        assert_false(kernel_gemm_bf16_dpbf());
        gemm_cases(true);
        unsetenv("ALPHASPIN_BF16_NO_DPBF");
    }
    if (kernel_gemm_bf16_amx()) { // and the fallback on this machine too
        setenv("ALPHASPIN_BF16_NO_AMX", "1", 1);
        assert_false(kernel_gemm_bf16_amx());
        gemm_cases(true);
        unsetenv("ALPHASPIN_BF16_NO_AMX");
    }
    // Rounding: to nearest, ties to even.
    assert_true(as_f32_to_bf16(1.0f) == 0x3f80);
    assert_true(as_f32_to_bf16(1.00390625f) == 0x3f80); // 1 + 2^-8: tie -> even (down)
    assert_true(as_f32_to_bf16(1.01171875f) == 0x3f82); // 1 + 3 * 2^-8: tie -> even (up)
    assert_true(as_f32_to_bf16(1.0f + 0x1.8p-8f) == 0x3f81);
    assert_true(isnan(as_bf16_to_f32(as_f32_to_bf16(NAN))));
}

// ---- exp ----

static void test_exp(void **state) {
    (void)state;
    // Over vexp.h's clamp [-87, 88]: within 3e-7 of exp() (as_expf's Cephes
    // polynomial), and the vector paths give as_expf's bits (test_fastmath_isa
    // compares every path).
    float x[1000], y[1000];
    for (int i = 0; i < 1000; i++) x[i] = AS_EXP_LO + (AS_EXP_HI - AS_EXP_LO) * (float)i / 999.0f;
    memcpy(y, x, sizeof x);
    double s = train_exp_shift_sum(y, 1000, 0.0f), want = 0.0;
    for (int i = 0; i < 1000; i++) {
        const double e = exp((double)x[i]);
        want += e;
        if (!(fabs(y[i] - e) <= 3e-7 * e + 1e-44)) fail_msg("exp(%g) = %.9g, expected %.9g", (double)x[i], (double)y[i], e);
        assert_true(y[i] == as_expf(x[i]));
    }
    assert_true(fabs(s - want) <= 1e-6 * want);
    assert_true(fabs(train_exp_sum(x, 1000, 5.0f) - want * exp(-5.0)) <= 1e-6 * want * exp(-5.0));
    assert_true(train_max(x, 1000) == x[999] && train_max(x, 7) == x[6]);
    // Below the clamp: e^-87 (a softmax term next to e^0 either way).
    assert_true(as_expf(-100.0f) == as_expf(AS_EXP_LO) && as_expf(AS_EXP_LO) > 0.0f);
    float dz[37];
    for (int i = 0; i < 37; i++) dz[i] = NAN; // written, not accumulated
    train_neg_scaled_exp(dz, x + 500, 37, 0.5f, 10.0f);
    for (int i = 0; i < 37; i++) assert_true(fabs(dz[i] + 0.5 * exp((double)x[500 + i] - 10.0)) <= 1e-6 * 0.5 * exp((double)x[500 + i] - 10.0));
}

// ---- dropout: the vector mask is the scalar definition's, bit for bit ----

static void test_dropout(void **state) {
    (void)state;
    enum { N = 301 };
    float x[N], d[N], r[N];
    for (int i = 0; i < N; i++) x[i] = (i % 3 ? 1.0f : -1.0f) * (0.25f + (float)i / 7.0f);
    x[5] = INFINITY, x[6] = -0.0f;
    // Counters whose low word wraps inside the row (carry into the high word),
    // a layer/target base as dropout_apply makes, and small ones.
    const uint64_t k0s[] = {0, 12345, 0xFFFFFFFFull - 100, (7ull << 42) + 0xFFFFFFF0ull, 0xFFFFFFFFFFFFFF00ull};
    const uint32_t ths[] = {0, (uint32_t)(0.05 * 4294967296.0), (uint32_t)(0.5 * 4294967296.0), 0xFFFFFFFFu};
    int dropped = 0, kept = 0;
    for (size_t a = 0; a < sizeof k0s / sizeof *k0s; a++)
        for (size_t b = 0; b < sizeof ths / sizeof *ths; b++)
            for (int add = 0; add < 2; add++)
                for (int n = 1; n <= N; n += n < 40 ? 1 : 37) {
                    for (int i = 0; i < N; i++) d[i] = r[i] = (float)i * 0.5f;
                    train_dropout_row(d, x, n, k0s[a], ths[b], 1.25f, add);
                    train_dropout_row_ref(r, x, n, k0s[a], ths[b], 1.25f, add);
                    if (memcmp(d, r, sizeof d)) fail_msg("dropout k0 %llx thresh %u n %d add %d: rows differ", (unsigned long long)k0s[a], ths[b], n, add);
                    for (int i = 0; i < n && !add && b == 2; i++) r[i] == 0.0f ? dropped++ : kept++;
                    // Storing the keep mask, then applying it again: the same rows; no bit past n.
                    uint16_t keep[(N + 15) / 16 + 1];
                    float e[N];
                    for (int i = 0; i < N; i++) d[i] = e[i] = (float)i * 0.5f;
                    keep[(n + 15) / 16] = 0x5a5a;
                    train_dropout_row_keep(d, x, n, k0s[a], ths[b], 1.25f, add, keep);
                    train_dropout_row_mask(e, x, n, keep, 1.25f, add);
                    if (memcmp(d, r, sizeof d) || memcmp(e, r, sizeof e))
                        fail_msg("dropout with a stored mask, k0 %llx thresh %u n %d add %d: rows differ", (unsigned long long)k0s[a], ths[b], n, add);
                    if (n % 16) assert_int_equal(keep[n / 16] >> (n % 16), 0);
                    assert_int_equal(keep[(n + 15) / 16], 0x5a5a);
                }
    // p = 0.5: about half dropped (the hash is not degenerate).
    assert_true(dropped > 0.4 * (dropped + kept) && dropped < 0.6 * (dropped + kept));
}

// ---- attention over more than one block of rows ----

static void test_attention_blocks(void **state) {
    (void)state;
    const int H = 3, Hkv = 1, d = 8;
    const int32_t n_seq = 2, len[2] = {150, 70}, off[2] = {0, 150};
    const int64_t N = 220, qd = H * d, kvd = Hkv * d;
    float *q = randv(N * qd, 1), *k = randv(N * kvd, 2), *v = randv(N * kvd, 3), *out = as_malloc(sizeof(float) * (size_t)(N * qd));
    float *lse = as_malloc(sizeof(float) * (size_t)(N * H));
    train_attention_forward(out, lse, q, k, v, off, len, n_seq, H, Hkv, d, NULL, 150, 2);
    double worst = 0;
    for (int s = 0; s < n_seq; s++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < len[s]; i++) {
                const int64_t ti = off[s] + i;
                double mx = -INFINITY, sc[150];
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int c = 0; c < d; c++) dot += (double)q[ti * qd + h * d + c] * k[(off[s] + j) * kvd + c];
                    sc[j] = dot / sqrt((double)d), mx = fmax(mx, sc[j]);
                }
                double sum = 0;
                for (int j = 0; j <= i; j++) sum += exp(sc[j] - mx);
                worst = fmax(worst, fabs(lse[ti * H + h] - (mx + log(sum))));
                for (int c = 0; c < d; c++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += exp(sc[j] - mx) / sum * v[(off[s] + j) * kvd + c];
                    worst = fmax(worst, fabs(out[ti * qd + h * d + c] - o));
                }
            }
    printf("  blocked attention vs double reference: max error %.2e\n", worst);
    assert_true(worst < 1e-5);
    free(q), free(k), free(v), free(out), free(lse);
}

// ---- the model at bf16 against fp32 ----

static train_model *small_model(uint64_t seed) {
    model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    snprintf(c.arch_name, sizeof c.arch_name, "llama");
    c.n_vocab = 300, c.n_embd = 64, c.n_layer = 2, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 16, c.n_ff = 96, c.n_ctx_train = 128;
    c.n_rot = 16, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f, c.emb_scale = 1.0f, c.tied_output = true;
    train_model *m;
    assert_int_equal(train_model_init(&m, &c), AS_OK);
    as_rng r;
    as_rng_seed(&r, seed);
    float **slots = (float **)&m->params;
    for (int i = 0; i < TRAIN_N_PARAMS; i++) {
        if (!slots[i]) continue;
        const int64_t n = (int64_t)m->param_sizes[i];
        if (strstr(TRAIN_PARAM_NAMES[i], "norm")) {
            fill_normal(slots[i], n, 0.1f, &r);
            for (int64_t j = 0; j < n; j++) slots[i][j] += 1.0f;
        } else fill_normal(slots[i], n, !strcmp(TRAIN_PARAM_NAMES[i], "tok_embd") ? 1.0f : 0.125f, &r);
    }
    train_set_threads(m, 2);
    return m;
}

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return sqrt(num / fmax(den, 1e-300));
}

static void run_step(train_model *m, const train_batch *b, float *lp, float **grads, size_t *n) {
    const float dl[4] = {1.0f, -1.0f, 0.5f, -0.5f};
    float *params;
    const optim_segment *segs;
    int n_segs;
    train_zero_grad(m);
    assert_int_equal(train_forward(m, b, lp, NULL), AS_OK);
    assert_int_equal(train_backward(m, dl), AS_OK);
    *n = train_trainable(m, &params, grads, &segs, &n_segs);
}

static void bf16_vs_f32(bool lora) {
    train_model *m = small_model(3);
    if (lora) {
        train_lora_config lc = {.rank = 4, .alpha = 8.0f, .dropout = 0.0f, .seed = 2};
        assert_int_equal(train_lora_attach(m, &lc), AS_OK);
        as_rng r;
        as_rng_seed(&r, 9);
        fill_normal(m->lora->memory, (int64_t)m->lora->n, 0.05f, &r); // nonzero B too
    }
    int32_t tokens[4 * 100], len[4] = {100, 77, 100, 40}, plen[4] = {10, 30, 50, 5};
    as_rng r;
    as_rng_seed(&r, 4);
    for (int i = 0; i < 400; i++) tokens[i] = (int32_t)as_rng_below(&r, 300);
    train_batch b = {.n_seq = 4, .n_ctx = 100, .tokens = tokens, .len = len, .prompt_len = plen};
    float lp32[4], lp16[4], lp16b[4], *g;
    size_t n;
    run_step(m, &b, lp32, &g, &n);
    float *g32 = as_malloc(sizeof(float) * n);
    memcpy(g32, g, sizeof(float) * n);
    train_set_precision(m, TRAIN_PRECISION_BF16);
    run_step(m, &b, lp16, &g, &n);
    float *g16 = as_malloc(sizeof(float) * n);
    memcpy(g16, g, sizeof(float) * n);
    double worst_lp = 0;
    for (int s = 0; s < 4; s++) worst_lp = fmax(worst_lp, fabs(lp16[s] - lp32[s]) / fabs(lp32[s]));
    const double ge = rel_l2(g16, g32, n);
    printf("  %s: bf16 vs fp32: log-prob sums within %.2e (relative), gradient relative L2 error %.2e\n", lora ? "LoRA" : "full", worst_lp, ge);
    // Measured on the AMX path and the fallback: ~1e-3 and ~1e-2; bounds
    // with headroom, far below what a wrong product gives (O(1)).
    assert_true(worst_lp < 1e-2);
    assert_true(ge < 5e-2);
    // bf16 is reproducible: the same step again gives the same bits.
    run_step(m, &b, lp16b, &g, &n);
    assert_memory_equal(lp16, lp16b, sizeof lp16);
    assert_memory_equal(g16, g, sizeof(float) * n);
    free(g32), free(g16);
    train_model_free(m);
}

static void test_model_bf16(void **state) {
    (void)state;
    bf16_vs_f32(false);
    bf16_vs_f32(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gemm_f32), cmocka_unit_test(test_gemm_bf16), cmocka_unit_test(test_exp), cmocka_unit_test(test_dropout),
                                       cmocka_unit_test(test_attention_blocks), cmocka_unit_test(test_model_bf16)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
