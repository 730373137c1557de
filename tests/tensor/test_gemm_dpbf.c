// The bf16 products on AVX-512 BF16's VDPBF16PS (gemm.c, the path of CPUs
// with AVX-512 BF16 but no AMX; on an AMX CPU the test turns AMX off with
// ALPHASPIN_BF16_NO_AMX=1), for every transpose combination, shapes with
// edges (M, N, K not multiples of 16 / 32, K odd), alpha 1 and 0.75, beta 0
// and 0.5, and the three entry points (kernel_gemm_bf16; kernel_bf16_pack_b
// and kernel_gemm_bf16_packed; kernel_bf16_pack_init / pack_rows by chunks):
//   test_dpbf_vs_sgemm       within a rounding bound of kernel_sgemm on the
//                            bf16-rounded operands (the same exact products
//                            summed in another order);
//   test_dpbf_emulation      bit for bit against a C emulation of the
//                            instruction (Intel SDM, "VDPBF16PS"), tiny
//                            operands (flushed sums) included;
//   test_dpbf_threads        1, 2 and 3 threads: the same bits;
//   test_dpbf_batch_invariance  each row of an M = 37 product equals the
//                            same row computed alone (M = 1), bit for bit.
// Skips (77) where the CPU has no AVX-512 BF16 or the ISA is capped below
// avx512 (ALPHASPIN_KERNEL_ISA=avx2): the path is off there.
#include "test_common.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/gemm.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

static float rnd_bf16(float x) { return as_bf16_to_f32(as_f32_to_bf16(x)); }

static float *randv(int64_t n, uint64_t seed, float scale) {
    as_rng r;
    as_rng_seed(&r, seed);
    float *x = as_malloc(sizeof(float) * (size_t)AS_MAX(n, (int64_t)1));
    for (int64_t i = 0; i < n; i++) x[i] = scale * (float)(2.0 * as_rng_uniform(&r) - 1.0);
    return x;
}

// op(X)[i][j]
static float at(const float *X, bool t, int64_t ld, int64_t i, int64_t j) { return t ? X[j * ld + i] : X[i * ld + j]; }

typedef enum { ENTRY_GEMM, ENTRY_PACK_B, ENTRY_PACK_ROWS, ENTRY_COUNT } entry;
static const char *const ENTRY_NAMES[ENTRY_COUNT] = {"kernel_gemm_bf16", "pack_b + packed", "pack_init/pack_rows + packed"};

// C = alpha op(A) op(B) + beta C through one entry point (ENTRY_PACK_ROWS
// only for tb: op(B) = W^T, W = B as N x K, packed by chunks of 32 rows).
static void product(entry e, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float beta, float *C, int64_t ldc, int nth) {
    kernel_bf16_packed P;
    switch (e) {
    case ENTRY_GEMM: kernel_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nth); return;
    case ENTRY_PACK_B: kernel_bf16_pack_b(&P, tb, K, N, B, ldb, nth); break;
    default:
        assert_true(tb);
        kernel_bf16_pack_init(&P, K, N);
        for (int64_t n0 = 0; n0 < N; n0 += 32) kernel_bf16_pack_rows(&P, n0, AS_MIN((int64_t)32, N - n0), B + n0 * ldb, ldb, nth);
        break;
    }
    assert_non_null(P.data); // the packed bf16 layout, not the fallback's rounded copy
    assert_null(P.rounded);
    kernel_gemm_bf16_packed(ta, M, alpha, A, lda, &P, beta, C, ldc, nth);
    kernel_bf16_packed_free(&P);
}

// ---- the instruction in C ----

// VDPBF16PS reads denormal inputs as 0 and flushes denormal results to 0
// (sign kept), rounding to nearest even, MXCSR ignored.
static float daz(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

// One output lane: acc += a[2j+1] b[2j+1], then acc += a[2j] b[2j], each an
// fp32 fused multiply-add (the SDM's pseudo-code: "FP32 FMA with daz in, ftz
// out and RNE rounding", odd element first).  On the AMD EPYC (Zen 4) of
// BENCHMARKS.md the instruction gave these bits for 3.2 million random lanes
// (accumulators and products around FLT_MIN included, so the flushing is the
// one modelled here: after rounding, sign kept); a single rounding of
// acc + p0 + p1 or acc + fl(p0 + p1) matched only ~90% of them.  (The bf16
// products are exact in fp32, so the fma and a multiply-then-add agree.)
static bool emulate_flush = true; // false: the same chain without flushing (to count what the flushing changes)

static float dpbf_lane(float acc, float a0, float a1, float b0, float b1) {
    if (!emulate_flush) return fmaf(a0, b0, fmaf(a1, b1, acc));
    acc = daz(fmaf(daz(a1), daz(b1), daz(acc)));
    return daz(fmaf(daz(a0), daz(b0), acc));
}

// The kernel's contract for element (i, j): one lane over the K pairs of the
// operand padded with zeros to Kp (a multiple of 32), then alpha * sum, then
// fmaf(beta, C, .) when beta != 0 (gemm.c's epilogue; where alpha is 1 and
// beta 0 a whole block is stored directly, the same bits).
static float emulate(bool ta, bool tb, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float c0, int64_t i, int64_t j) {
    const int64_t Kp = (AS_MAX(K, (int64_t)1) + 31) / 32 * 32;
    float acc = 0.0f;
    for (int64_t k = 0; k < Kp; k += 2) {
        const float a0 = k < K ? rnd_bf16(at(A, ta, lda, i, k)) : 0.0f, a1 = k + 1 < K ? rnd_bf16(at(A, ta, lda, i, k + 1)) : 0.0f;
        const float b0 = k < K ? rnd_bf16(at(B, tb, ldb, k, j)) : 0.0f, b1 = k + 1 < K ? rnd_bf16(at(B, tb, ldb, k + 1, j)) : 0.0f;
        acc = dpbf_lane(acc, a0, a1, b0, b1);
    }
    const float t = alpha * acc;
    return beta != 0.0f ? fmaf(beta, c0, t) : t;
}

// ---- cases ----

typedef struct gemm_case {
    bool ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta, scale;
    float *A, *B, *C0;
} gemm_case;

static const int64_t SHAPES[][3] = {{1, 1, 1}, {5, 3, 7}, {32, 32, 32}, {37, 45, 70}, {64, 96, 33}, {33, 130, 64}, {100, 17, 200}, {70, 64, 95}};

// Calls f on every case: shape x ta/tb x (alpha, beta) in {(1, 0), (0.75, 0),
// (0.75, 0.5)} x entry point, plus tiny operands (|a|, |b| < 2^-62, so that
// partial sums cross FLT_MIN = 2^-126 and some are flushed) on two shapes.
static void for_cases(void (*f)(const gemm_case *c, entry e)) {
    const float ab[3][2] = {{1.0f, 0.0f}, {0.75f, 0.0f}, {0.75f, 0.5f}};
    for (size_t s = 0; s < AS_ARRAY_LEN(SHAPES) + 2; s++)
        for (int t = 0; t < 4; t++) {
            gemm_case c = {.ta = t & 1, .tb = t & 2, .scale = 1.0f};
            if (s < AS_ARRAY_LEN(SHAPES)) c.M = SHAPES[s][0], c.N = SHAPES[s][1], c.K = SHAPES[s][2];
            else c.M = 33, c.N = 40, c.K = s % 2 ? 45 : 64, c.scale = 0x1p-62f;
            c.lda = (c.ta ? c.M : c.K) + 3, c.ldb = (c.tb ? c.K : c.N) + 1, c.ldc = c.N + 2; // strides wider than the rows
            c.A = randv((c.ta ? c.K : c.M) * c.lda, 10 + s, c.scale), c.B = randv((c.tb ? c.N : c.K) * c.ldb, 20 + s, c.scale);
            c.C0 = randv(c.M * c.ldc, 30 + s, 1.0f);
            for (int v = 0; v < 3; v++)
                for (int e = 0; e < ENTRY_COUNT; e++) {
                    if (e == ENTRY_PACK_ROWS && !c.tb) continue;
                    c.alpha = ab[v][0], c.beta = ab[v][1];
                    f(&c, (entry)e);
                }
            free(c.A), free(c.B), free(c.C0);
        }
}

// The case's product with nth threads into a fresh C (NaN where beta is 0: it must not be read).
static float *run_case(const gemm_case *c, entry e, int nth) {
    float *C = as_malloc(sizeof(float) * (size_t)(c->M * c->ldc));
    for (int64_t i = 0; i < c->M * c->ldc; i++) C[i] = c->beta == 0.0f ? NAN : c->C0[i];
    product(e, c->ta, c->tb, c->M, c->N, c->K, c->alpha, c->A, c->lda, c->B, c->ldb, c->beta, C, c->ldc, nth);
    return C;
}

#define CASE_FMT "%s ta=%d tb=%d %lldx%lldx%lld alpha %g beta %g scale %g"
#define CASE_ARGS(c, e)                                                                                                                        \
    ENTRY_NAMES[e], (c)->ta, (c)->tb, (long long)(c)->M, (long long)(c)->N, (long long)(c)->K, (double)(c)->alpha, (double)(c)->beta,   \
        (double)(c)->scale

// ---- (1) against sgemm on the rounded operands ----

static double worst_vs_sgemm;

// Both sums add the same exact fp32 products (bf16 x bf16 has 16
// significant bits) over k from 0, each with K - 1 roundings at most (the
// zero padding adds exactly), so each is within gamma(K-1) ~ (K-1) u of the
// exact sum S = sum |a b| (u = 2^-24), and the two within 2 (K-1) u S; alpha
// and the beta fma add a rounding each side: |C - C_sgemm| <= (2K + 4) u
// (|alpha| S + |beta c0|) (K = 200: 2.4e-5 of S).  A product missing, doubled
// or paired with the wrong column errs by O(1/K) of S: far above it.  (The
// flushing of denormal sums is not covered by this bound: the tiny cases
// skip it and are checked by the emulation.)
static void check_vs_sgemm(const gemm_case *c, entry e) {
    if (c->scale != 1.0f) return;
    float *C = run_case(c, e, 2);
    float *Ar = as_malloc(sizeof(float) * (size_t)AS_MAX((c->ta ? c->K : c->M) * c->lda, (int64_t)1));
    float *Br = as_malloc(sizeof(float) * (size_t)AS_MAX((c->tb ? c->N : c->K) * c->ldb, (int64_t)1));
    for (int64_t i = 0; i < (c->ta ? c->K : c->M) * c->lda; i++) Ar[i] = rnd_bf16(c->A[i]);
    for (int64_t i = 0; i < (c->tb ? c->N : c->K) * c->ldb; i++) Br[i] = rnd_bf16(c->B[i]);
    float *R = as_malloc(sizeof(float) * (size_t)(c->M * c->ldc));
    memcpy(R, c->C0, sizeof(float) * (size_t)(c->M * c->ldc));
    kernel_sgemm(c->ta, c->tb, c->M, c->N, c->K, c->alpha, Ar, c->lda, Br, c->ldb, c->beta, R, c->ldc, 2);
    const double u = 0x1p-24, tol = (2.0 * (double)c->K + 4.0) * u;
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = 0; j < c->N; j++) {
            double S = 0.0;
            for (int64_t k = 0; k < c->K; k++) S += fabs((double)at(Ar, c->ta, c->lda, i, k) * at(Br, c->tb, c->ldb, k, j));
            const double scale = fabs(c->alpha) * S + (c->beta != 0.0f ? fabs(c->beta * c->C0[i * c->ldc + j]) : 0.0);
            const double err = fabs((double)C[i * c->ldc + j] - R[i * c->ldc + j]);
            if (!(err <= tol * scale)) // (also fails on NaN: beta 0 read C)
                fail_msg(CASE_FMT ": C[%lld][%lld] = %.9g, sgemm %.9g (bound %.3g)", CASE_ARGS(c, e), (long long)i, (long long)j,
                         (double)C[i * c->ldc + j], (double)R[i * c->ldc + j], tol * scale);
            if (scale > 0) worst_vs_sgemm = fmax(worst_vs_sgemm, err / scale);
        }
    free(C), free(Ar), free(Br), free(R);
}

static void test_dpbf_vs_sgemm(void **state) {
    (void)state;
    worst_vs_sgemm = 0;
    for_cases(check_vs_sgemm);
    printf("  VDPBF16PS vs sgemm on the rounded operands: worst |difference| / sum |products| = %.2e\n", worst_vs_sgemm);
}

// ---- (4) against the emulated instruction ----

static int64_t flushed_elems;

static void check_emulation(const gemm_case *c, entry e) {
    float *C = run_case(c, e, 2);
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = 0; j < c->N; j++) {
            const float want = emulate(c->ta, c->tb, c->K, c->alpha, c->A, c->lda, c->B, c->ldb, c->beta, c->C0[i * c->ldc + j], i, j);
            const float got = C[i * c->ldc + j];
            if (memcmp(&got, &want, sizeof got))
                fail_msg(CASE_FMT ": C[%lld][%lld] = %a, the emulated VDPBF16PS chain %a", CASE_ARGS(c, e), (long long)i, (long long)j,
                         (double)got, (double)want);
            if (c->scale != 1.0f) { // does the flushing matter here?
                emulate_flush = false;
                const float plain = emulate(c->ta, c->tb, c->K, c->alpha, c->A, c->lda, c->B, c->ldb, c->beta, c->C0[i * c->ldc + j], i, j);
                emulate_flush = true;
                flushed_elems += memcmp(&plain, &want, sizeof plain) != 0;
            }
        }
    free(C);
}

static void test_dpbf_emulation(void **state) {
    (void)state;
    flushed_elems = 0;
    for_cases(check_emulation);
    // The tiny cases do reach the flushing: there the plain fma chain (the
    // fallback's arithmetic) gives other bits.
    printf("  tiny operands: %lld outputs where the flushing changes the bits\n", (long long)flushed_elems);
    assert_true(flushed_elems > 0);
}

// ---- (2) thread counts ----

static void check_threads(const gemm_case *c, entry e) {
    float *C1 = run_case(c, e, 1), *C2 = run_case(c, e, 2), *C3 = run_case(c, e, 3);
    for (int64_t i = 0; i < c->M; i++)
        if (memcmp(C1 + i * c->ldc, C2 + i * c->ldc, sizeof(float) * (size_t)c->N) ||
            memcmp(C1 + i * c->ldc, C3 + i * c->ldc, sizeof(float) * (size_t)c->N))
            fail_msg(CASE_FMT ": row %lld differs between 1, 2 and 3 threads", CASE_ARGS(c, e), (long long)i);
    free(C1), free(C2), free(C3);
}

static void test_dpbf_threads(void **state) {
    (void)state;
    for_cases(check_threads);
}

// ---- (3) batch invariance ----

static void test_dpbf_batch_invariance(void **state) {
    (void)state;
    const int64_t M = 37, N = 75, K = 99;
    for (int t = 0; t < 4; t++)
        for (int e = 0; e < ENTRY_COUNT; e++) {
            const bool ta = t & 1, tb = t & 2;
            if (e == ENTRY_PACK_ROWS && !tb) continue;
            const int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 3, ldc = N + 1;
            float *A = randv((ta ? K : M) * lda, 41, 1.0f), *B = randv((tb ? N : K) * ldb, 42, 1.0f), *C0 = randv(M * ldc, 43, 1.0f);
            for (int v = 0; v < 2; v++) {
                const float alpha = v ? 0.75f : 1.0f, beta = v ? 0.5f : 0.0f;
                float *C = as_malloc(sizeof(float) * (size_t)(M * ldc)), *row = as_malloc(sizeof(float) * (size_t)ldc);
                memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
                product((entry)e, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 2);
                for (int64_t i = 0; i < M; i++) {
                    memcpy(row, C0 + i * ldc, sizeof(float) * (size_t)ldc);
                    // Row i of op(A) alone: A's row i, or (ta) its column i.
                    product((entry)e, ta, tb, 1, N, K, alpha, ta ? A + i : A + i * lda, lda, B, ldb, beta, row, ldc, 2);
                    if (memcmp(row, C + i * ldc, sizeof(float) * (size_t)N))
                        fail_msg("%s ta=%d tb=%d alpha %g beta %g: row %lld of the M=%lld product differs from the row alone", ENTRY_NAMES[e],
                                 ta, tb, (double)alpha, (double)beta, (long long)i, (long long)M);
                }
                free(C), free(row);
            }
            free(A), free(B), free(C0);
        }
}

int main(void) {
    kernel_init();
    if (cpu_get_features()->amx_bf16) setenv("ALPHASPIN_BF16_NO_AMX", "1", 1); // the path of CPUs without AMX
    setenv("ALPHASPIN_BF16_DPBF", "1", 1); // the path wherever the CPU has the instruction (by default AMD only)
    if (!kernel_gemm_bf16_dpbf()) {
        fprintf(stderr, "SKIP: the VDPBF16PS path is off (no AVX-512 BF16 on this CPU, ISA capped below avx512, or ALPHASPIN_BF16_NO_DPBF)\n");
        return AS_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dpbf_vs_sgemm), cmocka_unit_test(test_dpbf_emulation),
                                       cmocka_unit_test(test_dpbf_threads), cmocka_unit_test(test_dpbf_batch_invariance)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
