// vexp.h: the scalar, 8-lane and 16-lane exp give the same bits (every path's
// softmax, SiLU, GELU and training ops rely on it), and stay within 2 ulp of
// exp() in double inside the clamp.  Inputs: every float whose bit pattern is
// a multiple of 61 (70 million, all exponents, both signs), the clamp bounds
// and their neighbours, zeros, infinities and NaN.
#include "test_common.h"

#include <math.h>

#include "tensor/kernels.h"
#include "tensor/vexp.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void store8(float *o, const float *a) { _mm256_storeu_ps(o, as_exp8(_mm256_loadu_ps(a))); }
__attribute__((target("avx512f"))) static void store16(float *o, const float *a) { _mm512_storeu_ps(o, as_exp16(_mm512_loadu_ps(a))); }
#endif

static void check_block(const float *x, int n, int64_t *worst_ulp) {
    float s[16], v8[16], v16[16];
    for (int i = 0; i < n; i++) s[i] = as_expf(x[i]);
#if defined(__x86_64__)
    const cpu_features *f = cpu_get_features();
    if (f->avx2 && f->fma) {
        for (int i = 0; i < n; i += 8) {
            float in[8] = {0};
            memcpy(in, x + i, sizeof(float) * (size_t)(n - i < 8 ? n - i : 8));
            store8(v8 + i, in);
        }
        for (int i = 0; i < n; i++)
            if (memcmp(&s[i], &v8[i], 4)) fail_msg("exp(%a): scalar %a, 8 lanes %a", (double)x[i], (double)s[i], (double)v8[i]);
    }
    if (f->avx512f) {
        float in[16] = {0};
        memcpy(in, x, sizeof(float) * (size_t)n);
        store16(v16, in);
        for (int i = 0; i < n; i++)
            if (memcmp(&s[i], &v16[i], 4)) fail_msg("exp(%a): scalar %a, 16 lanes %a", (double)x[i], (double)s[i], (double)v16[i]);
    }
#endif
    for (int i = 0; i < n; i++) {
        if (!(x[i] >= AS_EXP_LO && x[i] <= AS_EXP_HI)) continue;
        const float want = (float)exp((double)x[i]);
        int32_t a, b;
        memcpy(&a, &s[i], 4), memcpy(&b, &want, 4);
        const int64_t d = llabs((int64_t)a - (int64_t)b);
        if (d > *worst_ulp) *worst_ulp = d;
    }
}

static void test_widths_agree(void **state) {
    (void)state;
    int64_t worst = 0;
    float x[16];
    int n = 0;
    for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += 61) {
        x[n++] = from_bits((uint32_t)u);
        if (n == 16) check_block(x, n, &worst), n = 0;
    }
    const float special[] = {AS_EXP_LO, AS_EXP_HI, nextafterf(AS_EXP_LO, 0), nextafterf(AS_EXP_LO, -200), nextafterf(AS_EXP_HI, 0),
                             nextafterf(AS_EXP_HI, 200), 0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f, -1.0f, 0.5f, -0.34657359f, 0.34657359f};
    check_block(special, 16, &worst);
    if (n) check_block(x, n, &worst);
    printf("worst error inside the clamp: %lld ulp\n", (long long)worst);
    assert_true(worst <= 2);
    // exp(-inf) (masked scores) and the clamp: e^lo, a tiny normal float, not 0.
    assert_true(as_expf(-INFINITY) == as_expf(AS_EXP_LO));
    assert_true(as_expf(AS_EXP_LO) > 0.0f && as_expf(AS_EXP_LO) < 1e-37f);
}

int main(void) {
    kernel_init();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_widths_agree)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
