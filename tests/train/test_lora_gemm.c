// The LoRA rank-r products (tensor/lora_gemm.h) on every code path this CPU
// has (the kernels' ISA forced to scalar, avx2 and avx512 in turn: the
// generic path through kernel_sgemm and separate dropout passes, or the
// AVX-512 kernels), each bit for bit against a plain C reference of the
// contract (kernel_sgemm's, gemm.h: acc = fmaf(a_k, b_k, acc) over k from 0,
// t = alpha acc, out = fmaf(beta, out, t) or t; the dropout as lora_gemm.h
// says), with 1, 2 and 3 threads.  Shapes are ragged (rows, columns and
// ranks that are no multiple of the kernels' 8 / 4 / 16 blocking, rank above
// 16), alpha 1 and not, beta 0 (the output starts as NaN: not read) and 1,
// the transposed output of lora_gemm_reduce, with and without the dropout.
// The reference itself is checked against double-precision sums, and the
// narrow product with its rows made on demand against the one on the rows.
#include "test_common.h"

#include <math.h>

#include "tensor/kernels_impl.h"
#include "tensor/lora_gemm.h"
#include "tensor/train_ops.h"
#include "util/common.h"
#include "util/rng.h"

static float *rnd(as_rng *g, int64_t n) {
    float *p = as_malloc(sizeof(float) * (size_t)AS_MAX(n, 1));
    for (int64_t i = 0; i < n; i++) p[i] = (float)(2.0 * as_rng_uniform(g) - 1.0);
    return p;
}

// A random dropout of an N x D operand (keep probability ~0.7, scale 1/0.7).
static lora_drop rnd_drop(as_rng *g, int64_t N, int64_t D) {
    const int64_t w = (D + 15) / 16;
    uint16_t *k = as_malloc(sizeof(uint16_t) * (size_t)(N * w));
    for (int64_t i = 0; i < N * w; i++) {
        k[i] = 0;
        for (int b = 0; b < 16; b++) k[i] |= (uint16_t)((as_rng_uniform(g) < 0.7) << b);
    }
    return (lora_drop){k, 1.0f / 0.7f};
}

// Element (i, d)'s dropout factor: scale or 0.
static float drop_f(const lora_drop *dr, int64_t D, int64_t i, int64_t d) {
    return (dr->keep[i * ((D + 15) / 16) + d / 16] >> (d % 16) & 1) ? dr->scale : 0.0f;
}

// ---- the contract in plain C ----

static float epi(float acc, float alpha, float beta, float old) {
    const float t = alpha == 1.0f ? acc : alpha * acc;
    return beta != 0.0f ? fmaf(beta, old, t) : t;
}

static void ref_narrow(int64_t N, int64_t K, int64_t r, float alpha, const float *x, const float *W, float beta, float *out) {
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < r; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(x[i * K + k], W[k * r + j], acc);
            out[i * r + j] = epi(acc, alpha, beta, out[i * r + j]);
        }
}

static void ref_wide(int64_t N, int64_t r, int64_t D, float alpha, const float *u, const float *M, const lora_drop *dr, float beta, float *y) {
    for (int64_t i = 0; i < N; i++)
        for (int64_t d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < r; j++) acc = fmaf(u[i * r + j], M[j * D + d], acc);
            float *o = y + i * D + d;
            if (!dr) *o = epi(acc, alpha, beta, *o);
            else { // train_dropout_row_mask on t
                const float t = epi(acc, alpha, 0.0f, 0.0f), f = drop_f(dr, D, i, d);
                *o = beta != 0.0f ? fmaf(t, f, *o) : t * f;
            }
        }
}

static void ref_reduce(int64_t N, int64_t r, int64_t D, float alpha, const float *v, const float *x, const lora_drop *dr, bool trans, float *G) {
    for (int64_t j = 0; j < r; j++)
        for (int64_t d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < N; i++) acc = fmaf(v[i * r + j], dr ? x[i * D + d] * drop_f(dr, D, i, d) : x[i * D + d], acc);
            float *g = G + (trans ? d * r + j : j * D + d);
            *g = epi(acc, alpha, 1.0f, *g);
        }
}

// |got - want| <= 1e-5 of the sum of |terms| (the reference against exact sums).
static void expect_near(const char *what, float got, double want, double mag) {
    if (!(fabs((double)got - want) <= 1e-5 * mag + 1e-30)) fail_msg("%s: reference %.9g, exact %.9g (scale %.3g)", what, got, want, mag);
}

// Bitwise equality, reporting the first differing element.
static void expect_bits(const char *what, kernel_isa isa, int nth, const float *got, const float *want, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(got + i, want + i, sizeof(float)))
            fail_msg("%s on %s, %d threads: element %lld is %a, the contract gives %a", what, kernel_isa_name(isa), nth, (long long)i,
                     (double)got[i], (double)want[i]);
}

static const int64_t Ns[] = {1, 5, 8, 13, 37};
static const int64_t Ds[] = {1, 16, 17, 33, 70};
static const int64_t Rs[] = {1, 3, 7, 8, 16, 19, 33};
static const int threads[] = {1, 2, 3};

// lora_gemm_rows_narrow_fill's rows: those of a matrix, times 2 (exact).
typedef struct { const float *x; int64_t K; int calls; } fill_ctx;
static void fill_twice(void *p, int64_t i0, int64_t n, float *dst) {
    fill_ctx *c = p;
    assert_true(n >= 1 && n <= 64);
#pragma omp atomic
    c->calls++;
    for (int64_t i = 0; i < n * c->K; i++) dst[i] = 2.0f * c->x[i0 * c->K + i];
}

// Forces the ISA of the test's state; false (the test then passes, having
// said so) when this CPU lacks it.
static bool use_isa(void **state) {
    const kernel_isa isa = *(const kernel_isa *)*state;
    if (kernel_force_isa(isa)) {
        printf("  skipped: this CPU has no %s\n", kernel_isa_name(isa));
        return false;
    }
    return true;
}

static void test_rows_narrow(void **state) {
    if (!use_isa(state)) return;
    const kernel_isa isa = kernel_current_isa();
    as_rng g;
    as_rng_seed(&g, 11);
    for (size_t a = 0; a < AS_ARRAY_LEN(Ns); a++)
        for (size_t b = 0; b < AS_ARRAY_LEN(Ds); b++)
            for (size_t c = 0; c < AS_ARRAY_LEN(Rs); c++)
                for (int beta = 0; beta <= 1; beta++) {
                    const int64_t N = Ns[a], K = Ds[b], r = Rs[c];
                    const float alpha = c % 2 ? 0.75f : 1.0f;
                    float *x = rnd(&g, N * K), *W = rnd(&g, K * r), *o0 = rnd(&g, N * r), *x2 = as_malloc(sizeof(float) * (size_t)(N * K));
                    float *want = as_malloc(sizeof(float) * (size_t)(N * r)), *got = as_malloc(sizeof(float) * (size_t)(N * r));
                    for (int64_t i = 0; i < N * r; i++) want[i] = beta ? o0[i] : NAN;
                    ref_narrow(N, K, r, alpha, x, W, (float)beta, want);
                    for (int64_t i = 0; i < N; i++)
                        for (int64_t j = 0; j < r; j++) {
                            double s = 0, m = 0;
                            for (int64_t k = 0; k < K; k++) s += (double)x[i * K + k] * W[k * r + j], m += fabs((double)x[i * K + k] * W[k * r + j]);
                            expect_near("narrow", want[i * r + j], alpha * s + (beta ? o0[i * r + j] : 0.0), m + (beta ? fabs(o0[i * r + j]) : 0.0));
                        }
                    for (size_t t = 0; t < AS_ARRAY_LEN(threads); t++) {
                        for (int64_t i = 0; i < N * r; i++) got[i] = beta ? o0[i] : NAN;
                        lora_gemm_rows_narrow(N, K, r, alpha, x, W, (float)beta, got, threads[t]);
                        expect_bits("lora_gemm_rows_narrow", isa, threads[t], got, want, N * r);
                    }
                    // Rows made on demand (2 x) with alpha / 2: the contract on 2 x (the same bits, doubling being exact).
                    for (int64_t i = 0; i < N * K; i++) x2[i] = 2.0f * x[i];
                    for (int64_t i = 0; i < N * r; i++) want[i] = beta ? o0[i] : NAN;
                    ref_narrow(N, K, r, alpha / 2, x2, W, (float)beta, want);
                    fill_ctx fc = {x, K, 0};
                    for (size_t t = 0; t < AS_ARRAY_LEN(threads); t++) {
                        for (int64_t i = 0; i < N * r; i++) got[i] = beta ? o0[i] : NAN;
                        lora_gemm_rows_narrow_fill(N, K, r, alpha / 2, fill_twice, &fc, W, (float)beta, got, threads[t]);
                        expect_bits("lora_gemm_rows_narrow_fill", isa, threads[t], got, want, N * r);
                    }
                    assert_true(fc.calls >= 3);
                    free(x), free(x2), free(W), free(o0), free(want), free(got);
                }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

static void test_rows_wide(void **state) {
    if (!use_isa(state)) return;
    const kernel_isa isa = kernel_current_isa();
    as_rng g;
    as_rng_seed(&g, 12);
    for (size_t a = 0; a < AS_ARRAY_LEN(Ns); a++)
        for (size_t b = 0; b < AS_ARRAY_LEN(Ds); b++)
            for (size_t c = 0; c < AS_ARRAY_LEN(Rs); c++)
                for (int beta = 0; beta <= 1; beta++)
                    for (int dropped = 0; dropped <= 1; dropped++) {
                        const int64_t N = Ns[a], D = Ds[b] + 60 * (int64_t)(c % 2), r = Rs[c]; // D up to 130: several 64-column blocks
                        const float alpha = b % 2 ? -1.25f : 1.0f;
                        const lora_drop drv = rnd_drop(&g, N, D), *dr = dropped ? &drv : NULL;
                        float *u = rnd(&g, N * r), *M = rnd(&g, r * D), *y0 = rnd(&g, N * D);
                        float *want = as_malloc(sizeof(float) * (size_t)(N * D)), *got = as_malloc(sizeof(float) * (size_t)(N * D));
                        for (int64_t i = 0; i < N * D; i++) want[i] = beta ? y0[i] : NAN;
                        ref_wide(N, r, D, alpha, u, M, dr, (float)beta, want);
                        for (int64_t i = 0; i < N; i++)
                            for (int64_t d = 0; d < D; d++) {
                                double s = 0, m = 0;
                                for (int64_t j = 0; j < r; j++) s += (double)u[i * r + j] * M[j * D + d], m += fabs((double)u[i * r + j] * M[j * D + d]);
                                const double f = dr ? drop_f(dr, D, i, d) : 1.0;
                                expect_near("wide", want[i * D + d], alpha * s * f + (beta ? y0[i * D + d] : 0.0),
                                            fabs(alpha) * m * f + (beta ? fabs(y0[i * D + d]) : 0.0));
                            }
                        for (size_t t = 0; t < AS_ARRAY_LEN(threads); t++) {
                            for (int64_t i = 0; i < N * D; i++) got[i] = beta ? y0[i] : NAN;
                            lora_gemm_rows_wide(N, r, D, alpha, u, M, dr, (float)beta, got, threads[t]);
                            expect_bits(dr ? "lora_gemm_rows_wide (dropout)" : "lora_gemm_rows_wide", isa, threads[t], got, want, N * D);
                        }
                        free(u), free(M), free(y0), free(want), free(got), free((void *)drv.keep);
                    }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

static void test_reduce(void **state) {
    if (!use_isa(state)) return;
    const kernel_isa isa = kernel_current_isa();
    as_rng g;
    as_rng_seed(&g, 13);
    for (size_t a = 0; a < AS_ARRAY_LEN(Ns); a++)
        for (size_t b = 0; b < AS_ARRAY_LEN(Ds); b++)
            for (size_t c = 0; c < AS_ARRAY_LEN(Rs); c++)
                for (int trans = 0; trans <= 1; trans++)
                    for (int dropped = 0; dropped <= 1; dropped++) {
                        const int64_t N = Ns[a] * 7, D = Ds[b], r = Rs[c];
                        const float alpha = c % 2 ? 0.5f : 1.0f;
                        const lora_drop drv = rnd_drop(&g, N, D), *dr = dropped ? &drv : NULL;
                        float *v = rnd(&g, N * r), *x = rnd(&g, N * D), *G0 = rnd(&g, r * D);
                        float *want = as_malloc(sizeof(float) * (size_t)(r * D)), *got = as_malloc(sizeof(float) * (size_t)(r * D));
                        memcpy(want, G0, sizeof(float) * (size_t)(r * D));
                        ref_reduce(N, r, D, alpha, v, x, dr, trans, want);
                        for (int64_t j = 0; j < r; j++)
                            for (int64_t d = 0; d < D; d++) {
                                const int64_t at = trans ? d * r + j : j * D + d;
                                double s = 0, m = 0;
                                for (int64_t i = 0; i < N; i++) {
                                    const double xd = x[i * D + d] * (dr ? (double)drop_f(dr, D, i, d) : 1.0);
                                    s += (double)v[i * r + j] * xd, m += fabs((double)v[i * r + j] * xd);
                                }
                                expect_near("reduce", want[at], alpha * s + G0[at], alpha * m + fabs(G0[at]));
                            }
                        for (size_t t = 0; t < AS_ARRAY_LEN(threads); t++) {
                            memcpy(got, G0, sizeof(float) * (size_t)(r * D));
                            lora_gemm_reduce(N, r, D, alpha, v, x, dr, trans, got, threads[t]);
                            expect_bits(dr ? "lora_gemm_reduce (dropout)" : "lora_gemm_reduce", isa, threads[t], got, want, r * D);
                        }
                        free(v), free(x), free(G0), free(want), free(got), free((void *)drv.keep);
                    }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

static void test_transposed(void **state) {
    (void)state;
    float a[3 * 5];
    for (int i = 0; i < 15; i++) a[i] = (float)i;
    const float *t = lora_gemm_transposed(a, 3, 5);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) assert_true(t[j * 3 + i] == a[i * 5 + j]);
}

static kernel_isa isa_scalar = KERNEL_ISA_SCALAR, isa_avx2 = KERNEL_ISA_AVX2, isa_avx512 = KERNEL_ISA_AVX512;

// One case per function and ISA, named so ("reduce avx2").
#define ISA_CASE(f, isa) {#f " " #isa, f, NULL, NULL, &isa_##isa}

int main(void) {
    const struct CMUnitTest tests[] = {
        ISA_CASE(test_rows_narrow, avx512), ISA_CASE(test_rows_wide, avx512), ISA_CASE(test_reduce, avx512),
        ISA_CASE(test_rows_narrow, avx2),   ISA_CASE(test_rows_wide, avx2),   ISA_CASE(test_reduce, avx2),
        ISA_CASE(test_rows_narrow, scalar), ISA_CASE(test_rows_wide, scalar), ISA_CASE(test_reduce, scalar),
        cmocka_unit_test(test_transposed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
