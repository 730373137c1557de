// The one exp approximation of alphaspin, at every width: scalar (fmaf),
// 8 lanes (AVX2 + FMA) and 16 lanes (AVX-512 F).  Every softmax, SiLU, GELU,
// sampler and training op computes e^x with these, and the three do the same
// operations in the same order, so a lane of any width and the scalar
// function give the same bits (tests/tensor/test_vexp.c checks them against
// each other and against exp() in double).
//
//   x clamped to [AS_EXP_LO, AS_EXP_HI];  n = round_to_nearest_even(x log2 e)
//   r = x - n ln2_hi - n ln2_lo               (two fused multiply-adds)
//   p = P0;  p = p r + P1 .. P5               (fused multiply-adds)
//   p = (p r^2 + r) + 1                       (one fma, then one add)
//   e^x = p * 2^n                             (2^n as a normal float: n >= -126)
//
// Cephes' expf polynomial: ~1-2 ulp for x in the clamp.  The clamp keeps 2^n
// normal (n in [-126, 127]); below AS_EXP_LO the result is ~1e-38, nothing
// next to a softmax's maximum term e^0, and SiLU/GELU only clamp terms that are
// already 0 or 1 to float precision.  p * 2^n is one rounded multiplication
// (its result may be subnormal near the low end: still one correct rounding,
// the same at every width).
//
// Build requirements: FMA (fmaf) in the scalar code is a libm call on a plain
// x86-64 target; as_expf is for tails and the generic C paths.  The whole
// project builds with -ffp-contract=off so no compiler turns a*b+c into a
// fused operation behind our back on one path and not on another.
#ifndef AS_TENSOR_VEXP_H
#define AS_TENSOR_VEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define AS_EXP_HI 88.0f
#define AS_EXP_LO -87.0f
#define AS_EXP_LOG2E 1.44269504088896341f
#define AS_EXP_LN2_HI 0.693359375f
#define AS_EXP_LN2_LO -2.12194440e-4f
#define AS_EXP_P0 1.9875691500e-4f
#define AS_EXP_P1 1.3981999507e-3f
#define AS_EXP_P2 8.3334519073e-3f
#define AS_EXP_P3 4.1665795894e-2f
#define AS_EXP_P4 1.6666665459e-1f
#define AS_EXP_P5 5.0000001201e-1f

static inline float as_expf(float x) {
    x = x > AS_EXP_LO ? x : AS_EXP_LO; // as fmaxf then fminf (NaN -> AS_EXP_LO), without their libm calls
    x = x < AS_EXP_HI ? x : AS_EXP_HI;
    const float n = nearbyintf(x * AS_EXP_LOG2E);
    float r = fmaf(-n, AS_EXP_LN2_HI, x);
    r = fmaf(-n, AS_EXP_LN2_LO, r);
    float p = AS_EXP_P0;
    p = fmaf(p, r, AS_EXP_P1);
    p = fmaf(p, r, AS_EXP_P2);
    p = fmaf(p, r, AS_EXP_P3);
    p = fmaf(p, r, AS_EXP_P4);
    p = fmaf(p, r, AS_EXP_P5);
    p = fmaf(p, r * r, r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

#if defined(__x86_64__)
#include <immintrin.h>

// NaN: the clamp above turns it into lo, and max_ps(x, lo) below returns its
// second operand when either is NaN, so a NaN input comes out as e^lo on every
// path alike (NaN inputs are a bug upstream either way).
__attribute__((target("avx2,fma"))) static inline __m256 as_exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(AS_EXP_LO)), _mm256_set1_ps(AS_EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(AS_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AS_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AS_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(AS_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AS_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AS_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AS_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AS_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AS_EXP_P5));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma,avx512f"))) static inline __m512 as_exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(AS_EXP_LO)), _mm512_set1_ps(AS_EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(AS_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AS_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AS_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(AS_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AS_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AS_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AS_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AS_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AS_EXP_P5));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    // p * 2^n in one instruction: the same single rounding as the multiply by
    // the normal float 2^n (checked equal on all 2^32 non-NaN inputs), ~10% faster.
    return _mm512_scalef_ps(p, n);
}
#endif

#endif
