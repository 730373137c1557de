// The LoRA rank-r products (train/lora_gemm.h) against a double-precision
// reference on random data, over ragged shapes (rows, columns and ranks
// that are no multiple of the kernels' 8 / 4 / 16 blocking, rank above 16),
// alpha != 1, beta 0 (the output is not read: it starts as NaN) and 1, and
// the transposed output of lora_gemm_reduce, with and without the dropout
// applied on the fly (then also bitwise the same as a separate
// train_dropout_row_mask pass); the same bits with 1 and 2 threads (each
// element's sum order is fixed by its position); the narrow product with its
// rows made on demand, bitwise the one on the rows.
#include "test_common.h"

#include <math.h>

#include "train/fastmath.h"
#include "train/lora_gemm.h"
#include "util/common.h"
#include "util/rng.h"

static float *rnd(as_rng *g, int64_t n) {
    float *p = as_malloc(sizeof(float) * (size_t)AS_MAX(n, 1));
    for (int64_t i = 0; i < n; i++) p[i] = (float)(2.0 * as_rng_uniform(g) - 1.0);
    return p;
}

// |got - ref| <= 1e-5 * (sum of |terms|) + 1e-30 for each element.
static void expect_close(const float *got, const double *ref, const double *mag, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs((double)got[i] - ref[i]) <= 1e-5 * mag[i] + 1e-30)) {
            fprintf(stderr, "element %lld: got %.9g, expected %.9g (scale %.3g)\n", (long long)i, got[i], ref[i], mag[i]);
            fail();
        }
    }
}

// A random dropout of an N x D operand (keep probability ~0.7, scale 1/0.7),
// and the 0/scale factor of element (i, d).
static lora_drop rnd_drop(as_rng *g, int64_t N, int64_t D) {
    const int64_t w = (D + 15) / 16;
    uint16_t *k = as_malloc(sizeof(uint16_t) * (size_t)(N * w));
    for (int64_t i = 0; i < N * w; i++) {
        k[i] = 0;
        for (int b = 0; b < 16; b++) k[i] |= (uint16_t)((as_rng_uniform(g) < 0.7) << b);
    }
    return (lora_drop){k, 1.0f / 0.7f};
}

static double drop_factor(const lora_drop *dr, int64_t D, int64_t i, int64_t d) {
    if (!dr) return 1.0;
    return (dr->keep[i * ((D + 15) / 16) + d / 16] >> (d % 16) & 1) ? (double)dr->scale : 0.0;
}

static const int64_t Ns[] = {1, 5, 8, 13, 37};
static const int64_t Ds[] = {1, 16, 17, 33, 70};
static const int64_t Rs[] = {1, 3, 7, 8, 16, 19, 33};

// lora_gemm_rows_narrow_fill's rows: those of a matrix, times 2 (exact).
typedef struct { const float *x; int64_t K; int calls; } fill_ctx;
static void fill_twice(void *p, int64_t i0, int64_t n, float *dst) {
    fill_ctx *c = p;
    assert_true(n >= 1 && n <= 64);
#pragma omp atomic
    c->calls++;
    for (int64_t i = 0; i < n * c->K; i++) dst[i] = 2.0f * c->x[i0 * c->K + i];
}

static void test_rows_narrow(void **state) {
    (void)state;
    as_rng g;
    as_rng_seed(&g, 11);
    for (size_t a = 0; a < AS_ARRAY_LEN(Ns); a++)
        for (size_t b = 0; b < AS_ARRAY_LEN(Ds); b++)
            for (size_t c = 0; c < AS_ARRAY_LEN(Rs); c++)
                for (int beta = 0; beta <= 1; beta++) {
                    const int64_t N = Ns[a], K = Ds[b], r = Rs[c];
                    const float alpha = 0.75f;
                    float *x = rnd(&g, N * K), *W = rnd(&g, K * r), *o0 = rnd(&g, N * r);
                    float *o1 = as_malloc(sizeof(float) * (size_t)(N * r)), *o2 = as_malloc(sizeof(float) * (size_t)(N * r));
                    double *ref = as_malloc(sizeof(double) * (size_t)(N * r)), *mag = as_malloc(sizeof(double) * (size_t)(N * r));
                    for (int64_t i = 0; i < N; i++)
                        for (int64_t j = 0; j < r; j++) {
                            double s = 0, m = 0;
                            for (int64_t k = 0; k < K; k++) s += (double)x[i * K + k] * W[k * r + j], m += fabs((double)x[i * K + k] * W[k * r + j]);
                            ref[i * r + j] = alpha * s + (beta ? o0[i * r + j] : 0.0);
                            mag[i * r + j] = m + (beta ? fabs(o0[i * r + j]) : 0.0);
                        }
                    for (int64_t i = 0; i < N * r; i++) o1[i] = o2[i] = beta ? o0[i] : NAN;
                    lora_gemm_rows_narrow(N, K, r, alpha, x, W, (float)beta, o1, 1);
                    lora_gemm_rows_narrow(N, K, r, alpha, x, W, (float)beta, o2, 2);
                    expect_close(o1, ref, mag, N * r);
                    assert_memory_equal(o1, o2, sizeof(float) * (size_t)(N * r));
                    // Rows made on demand (2 x): the bits of the product on 2 x, alpha / 2.
                    fill_ctx fc = {x, K, 0};
                    for (int th = 1; th <= 2; th++) {
                        for (int64_t i = 0; i < N * r; i++) o2[i] = beta ? o0[i] : NAN;
                        lora_gemm_rows_narrow_fill(N, K, r, alpha / 2, fill_twice, &fc, W, (float)beta, o2, th);
                        assert_memory_equal(o1, o2, sizeof(float) * (size_t)(N * r));
                    }
                    assert_true(fc.calls >= 2);
                    free(x), free(W), free(o0), free(o1), free(o2), free(ref), free(mag);
                }
}

static void test_rows_wide(void **state) {
    (void)state;
    as_rng g;
    as_rng_seed(&g, 12);
    for (size_t a = 0; a < AS_ARRAY_LEN(Ns); a++)
        for (size_t b = 0; b < AS_ARRAY_LEN(Ds); b++)
            for (size_t c = 0; c < AS_ARRAY_LEN(Rs); c++)
                for (int beta = 0; beta <= 1; beta++)
                for (int dropped = 0; dropped <= 1; dropped++) {
                    const int64_t N = Ns[a], D = Ds[b] + 60 * (int64_t)(c % 2), r = Rs[c]; // D up to 130: several 64-column blocks
                    const float alpha = -1.25f;
                    const lora_drop drv = rnd_drop(&g, N, D), *dr = dropped ? &drv : NULL;
                    float *u = rnd(&g, N * r), *M = rnd(&g, r * D), *y0 = rnd(&g, N * D);
                    float *y1 = as_malloc(sizeof(float) * (size_t)(N * D)), *y2 = as_malloc(sizeof(float) * (size_t)(N * D));
                    double *ref = as_malloc(sizeof(double) * (size_t)(N * D)), *mag = as_malloc(sizeof(double) * (size_t)(N * D));
                    for (int64_t i = 0; i < N; i++)
                        for (int64_t d = 0; d < D; d++) {
                            double s = 0, m = 0;
                            for (int64_t j = 0; j < r; j++) s += (double)u[i * r + j] * M[j * D + d], m += fabs((double)u[i * r + j] * M[j * D + d]);
                            const double f = drop_factor(dr, D, i, d);
                            ref[i * D + d] = alpha * s * f + (beta ? y0[i * D + d] : 0.0);
                            mag[i * D + d] = fabs(alpha) * m * f + (beta ? fabs(y0[i * D + d]) : 0.0);
                        }
                    for (int64_t i = 0; i < N * D; i++) y1[i] = y2[i] = beta ? y0[i] : NAN;
                    lora_gemm_rows_wide(N, r, D, alpha, u, M, dr, (float)beta, y1, 1);
                    lora_gemm_rows_wide(N, r, D, alpha, u, M, dr, (float)beta, y2, 2);
                    expect_close(y1, ref, mag, N * D);
                    assert_memory_equal(y1, y2, sizeof(float) * (size_t)(N * D));
                    if (dr) { // the same bits as the product, then a separate dropout pass
                        float *t = as_malloc(sizeof(float) * (size_t)(N * D));
                        lora_gemm_rows_wide(N, r, D, alpha, u, M, NULL, 0.0f, t, 1);
                        for (int64_t i = 0; i < N * D; i++) y2[i] = beta ? y0[i] : NAN;
                        for (int64_t i = 0; i < N; i++) train_dropout_row_mask(y2 + i * D, t + i * D, D, dr->keep + i * ((D + 15) / 16), dr->scale, beta);
                        assert_memory_equal(y1, y2, sizeof(float) * (size_t)(N * D));
                        free(t);
                    }
                    free(u), free(M), free(y0), free(y1), free(y2), free(ref), free(mag), free((void *)drv.keep);
                }
}

static void test_reduce(void **state) {
    (void)state;
    as_rng g;
    as_rng_seed(&g, 13);
    for (size_t a = 0; a < AS_ARRAY_LEN(Ns); a++)
        for (size_t b = 0; b < AS_ARRAY_LEN(Ds); b++)
            for (size_t c = 0; c < AS_ARRAY_LEN(Rs); c++)
                for (int trans = 0; trans <= 1; trans++)
                for (int dropped = 0; dropped <= 1; dropped++) {
                    const int64_t N = Ns[a] * 7, D = Ds[b], r = Rs[c];
                    const float alpha = 0.5f;
                    const lora_drop drv = rnd_drop(&g, N, D), *dr = dropped ? &drv : NULL;
                    float *v = rnd(&g, N * r), *x = rnd(&g, N * D), *G0 = rnd(&g, r * D);
                    float *G1 = as_malloc(sizeof(float) * (size_t)(r * D)), *G2 = as_malloc(sizeof(float) * (size_t)(r * D));
                    double *ref = as_malloc(sizeof(double) * (size_t)(r * D)), *mag = as_malloc(sizeof(double) * (size_t)(r * D));
                    for (int64_t j = 0; j < r; j++)
                        for (int64_t d = 0; d < D; d++) {
                            const int64_t at = trans ? d * r + j : j * D + d;
                            double s = 0, m = 0;
                            for (int64_t i = 0; i < N; i++) {
                                const double xd = x[i * D + d] * drop_factor(dr, D, i, d);
                                s += (double)v[i * r + j] * xd, m += fabs((double)v[i * r + j] * xd);
                            }
                            ref[at] = alpha * s + G0[at];
                            mag[at] = alpha * m + fabs(G0[at]);
                        }
                    memcpy(G1, G0, sizeof(float) * (size_t)(r * D));
                    memcpy(G2, G0, sizeof(float) * (size_t)(r * D));
                    lora_gemm_reduce(N, r, D, alpha, v, x, dr, trans, G1, 1);
                    lora_gemm_reduce(N, r, D, alpha, v, x, dr, trans, G2, 2);
                    expect_close(G1, ref, mag, r * D);
                    assert_memory_equal(G1, G2, sizeof(float) * (size_t)(r * D));
                    if (dr) { // the same bits as a separate dropout pass, then the product
                        float *t = as_malloc(sizeof(float) * (size_t)(N * D));
                        for (int64_t i = 0; i < N; i++) train_dropout_row_mask(t + i * D, x + i * D, D, dr->keep + i * ((D + 15) / 16), dr->scale, 0);
                        memcpy(G2, G0, sizeof(float) * (size_t)(r * D));
                        lora_gemm_reduce(N, r, D, alpha, v, t, NULL, trans, G2, 1);
                        assert_memory_equal(G1, G2, sizeof(float) * (size_t)(r * D));
                        free(t);
                    }
                    free(v), free(x), free(G0), free(G1), free(G2), free(ref), free(mag), free((void *)drv.keep);
                }
}

static void test_transposed(void **state) {
    (void)state;
    float a[3 * 5];
    for (int i = 0; i < 15; i++) a[i] = (float)i;
    const float *t = lora_gemm_transposed(a, 3, 5);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) assert_true(t[j * 3 + i] == a[i * 5 + j]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_narrow),
        cmocka_unit_test(test_rows_wide),
        cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_transposed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
