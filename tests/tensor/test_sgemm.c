// kernel_sgemm's contract (gemm.h), checked bit for bit against a plain loop
// that spells it out: each element one fmaf chain over k in order from 0,
// then alpha * sum (unless alpha is 1), then fmaf(beta, C, .) when beta != 0.
// For every ISA this CPU has (scalar, avx2, avx512, amx), every transpose
// combination, shapes with tails around the blocking (12 x 32 AVX-512 blocks,
// 6 x 16 AVX2 blocks, K blocks of 256, work items of 96 rows), alpha/beta
// variants and 1, 2 and 3 threads.  A kernel that summed in another order
// (e.g. two interleaved partial sums, or a K block added as a separate sum)
// fails here: the last bits differ on random data.
#include "test_common.h"

#include <math.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "util/rng.h"

static void fill(float *x, int64_t n, as_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(2.0 * as_rng_uniform(r) - 1.0);
}

static void reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                      int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(ta ? A[k * lda + m] : A[m * lda + k], tb ? B[n * ldb + k] : B[k * ldb + n], acc);
            const float t = alpha == 1.0f ? acc : alpha * acc;
            C[m * ldc + n] = beta != 0.0f ? fmaf(beta, C[m * ldc + n], t) : t;
        }
}

typedef struct shape { int64_t M, N, K; } shape;

static void check_shape(shape s, bool ta, bool tb, float alpha, float beta, int nth, as_rng *r) {
    const int64_t M = s.M, N = s.N, K = s.K;
    // Leading dimensions with padding, so strides are exercised.
    const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    const int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
    float *A = malloc(sizeof(float) * (size_t)(na + 1)), *B = malloc(sizeof(float) * (size_t)(nb + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(nc + 1)), *C1 = malloc(sizeof(float) * (size_t)(nc + 1)), *ref = malloc(sizeof(float) * (size_t)(nc + 1));
    fill(A, na, r), fill(B, nb, r), fill(C0, nc, r);
    memcpy(ref, C0, sizeof(float) * (size_t)nc);
    reference(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
    for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
        if (kernel_force_isa((kernel_isa)isa) != 0) continue;
        memcpy(C1, C0, sizeof(float) * (size_t)nc);
        kernel_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc, nth);
        for (int64_t i = 0; i < nc; i++) {
            const bool in_c = i % ldc < N;
            const float want = in_c ? ref[i] : C0[i]; // padding columns untouched
            if (memcmp(&C1[i], &want, sizeof want)) {
                fail_msg("isa %s, %s%s M %lld N %lld K %lld alpha %g beta %g threads %d: C[%lld][%lld] = %.9g, want %.9g",
                         kernel_isa_name((kernel_isa)isa), ta ? "T" : "N", tb ? "T" : "N", (long long)M, (long long)N, (long long)K,
                         (double)alpha, (double)beta, nth, (long long)(i / ldc), (long long)(i % ldc), (double)C1[i], (double)want);
            }
        }
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    free(A), free(B), free(C0), free(C1), free(ref);
}

static void test_contract(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 7);
    const shape shapes[] = {{1, 1, 1},    {1, 33, 17},  {13, 1, 5},    {12, 32, 256}, {13, 33, 257}, {7, 50, 0},
                            {25, 70, 300}, {97, 45, 513}, {200, 17, 64}, {64, 130, 40}, {5, 300, 600}, {193, 97, 31}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.37f, 0.0f}, {1.0f, 1.0f}, {-1.5f, 0.5f}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int t = 0; t < 4; t++)
            for (size_t a = 0; a < sizeof ab / sizeof ab[0]; a++)
                for (int nth = 1; nth <= 3; nth++) check_shape(shapes[i], t & 1, t & 2, ab[a][0], ab[a][1], nth, &r);
}

// A row of C does not depend on the other rows of A (batch invariance): row
// 3 of a 40-row product equals the product of that row alone, on every ISA.
static void test_row_invariance(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 11);
    const int64_t M = 40, N = 300, K = 700;
    for (int tb = 0; tb < 2; tb++) {
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K), *C = malloc(sizeof(float) * M * N), *c1 = malloc(sizeof(float) * N);
        fill(A, M * K, &r), fill(B, N * K, &r);
        for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
            if (kernel_force_isa((kernel_isa)isa) != 0) continue;
            kernel_sgemm(false, tb, M, N, K, 1.0f, A, K, B, tb ? K : N, 0.0f, C, N, 2);
            kernel_sgemm(false, tb, 1, N, K, 1.0f, A + 3 * K, K, B, tb ? K : N, 0.0f, c1, N, 1);
            assert_memory_equal(c1, C + 3 * N, sizeof(float) * N);
        }
        kernel_force_isa(KERNEL_ISA_AUTO);
        free(A), free(B), free(C), free(c1);
    }
}

int main(void) {
    kernel_init();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_contract), cmocka_unit_test(test_row_invariance)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
