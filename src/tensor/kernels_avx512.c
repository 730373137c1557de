// AVX-512 (F, BW, VL) + VNNI kernel primitives (see kernels_impl.h).
//
// The 32-value block formats (Q4_0, Q4_1, Q8_0: the default model's) take two
// blocks per 512-bit register and one vpdpbusd (u8 x s8 -> int32, 4 products
// per lane) instead of AVX2's maddubs + madd pair.  Lanes 0-7 hold block i,
// lanes 8-15 block i+1, so one per-lane scale vector finishes both.  Dequant,
// activation quantisation and the K formats reuse the AVX2 code, which is
// bandwidth-bound or rarely used.
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#include <immintrin.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "util/common.h"

static inline float fp16_to_f32(as_fp16 h) { return _cvtsh_ss(h); }

static inline __m256i nibbles_to_bytes(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

static inline __m512i join_256(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

static inline __m512 scales_2(float s0, float s1) {
    return _mm512_mask_mov_ps(_mm512_set1_ps(s0), 0xFF00, _mm512_set1_ps(s1));
}

// Signed x signed: |x| times y with x's sign (negate y where x < 0).
static inline __m512i dot_s8s8_vnni(__m512i x, __m512i y) {
    const __mmask64 neg = _mm512_movepi8_mask(x);
    const __m512i sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(x), sy);
}

// Q4_1 . Q8_1: sum_i d_w d_a sum_j q_j a_j + m_w s_a.  Q4_0 is the same with
// m_w = -8 d_w (its values are q - 8), which keeps the weights unsigned for
// vpdpbusd.
static inline float vec_dot_q4_avx512(const void *w, size_t stride, const block_q8_1_f32 *y, int64_t n, bool affine) {
    const int64_t nb = n / 32;
    __m512 acc = _mm512_setzero_ps();
    float summs = 0;
    int64_t i = 0;
    const uint8_t *base = w;
    for (; i + 2 <= nb; i += 2) {
        const uint8_t *b0 = base + (size_t)i * stride, *b1 = b0 + stride;
        const uint8_t *q0 = b0 + (affine ? 4 : 2), *q1 = b1 + (affine ? 4 : 2);
        const __m512i qx = join_256(nibbles_to_bytes(q0), nibbles_to_bytes(q1));
        const __m512i qy = join_256(_mm256_loadu_si256((const __m256i *)y[i].qs), _mm256_loadu_si256((const __m256i *)y[i + 1].qs));
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qx, qy);
        as_fp16 h[4];
        memcpy(h, b0, 4);
        const float d0 = fp16_to_f32(h[0]), m0 = affine ? fp16_to_f32(h[1]) : -8.0f * d0;
        memcpy(h + 2, b1, 4);
        const float d1 = fp16_to_f32(h[2]), m1 = affine ? fp16_to_f32(h[3]) : -8.0f * d1;
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scales_2(d0 * y[i].d, d1 * y[i + 1].d), acc);
        summs += m0 * y[i].s + m1 * y[i + 1].s;
    }
    float s = _mm512_reduce_add_ps(acc) + summs;
    if (i < nb) { // odd block count: last block with the AVX2 kernel
        const uint8_t *b = base + (size_t)i * stride;
        s += kernel_vec_dot_avx2(affine ? GGML_TYPE_Q4_1 : GGML_TYPE_Q4_0, b, y + i, 32);
    }
    return s;
}

static float vec_dot_q8_0_avx512(const block_q8_0 *x, const block_q8_1_f32 *y, int64_t n) {
    const int64_t nb = n / QK8_0;
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m512i qx = join_256(_mm256_loadu_si256((const __m256i *)x[i].qs), _mm256_loadu_si256((const __m256i *)x[i + 1].qs));
        const __m512i qy = join_256(_mm256_loadu_si256((const __m256i *)y[i].qs), _mm256_loadu_si256((const __m256i *)y[i + 1].qs));
        const __m512i p = dot_s8s8_vnni(qx, qy);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scales_2(fp16_to_f32(x[i].d) * y[i].d, fp16_to_f32(x[i + 1].d) * y[i + 1].d), acc);
    }
    float s = _mm512_reduce_add_ps(acc);
    if (i < nb) s += kernel_vec_dot_avx2(GGML_TYPE_Q8_0, x + i, y + i, QK8_0);
    return s;
}

static float vec_dot_avx512(ggml_type wtype, const void *w, const void *act, int64_t n) {
    switch (wtype) {
    case GGML_TYPE_Q4_0: return vec_dot_q4_avx512(w, sizeof(block_q4_0), act, n, false);
    case GGML_TYPE_Q4_1: return vec_dot_q4_avx512(w, sizeof(block_q4_1), act, n, true);
    case GGML_TYPE_Q8_0: return vec_dot_q8_0_avx512(w, act, n);
    default: return kernel_vec_dot_avx2(wtype, w, act, n);
    }
}

static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) { // masked tail: no scalar loop
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

const kernel_ops kernel_ops_avx512 = {
    .name = "avx512",
    .dequant_row = kernel_dequant_row_avx2,
    .dot_f32 = dot_f32_avx512,
    .quantize_act = kernel_quantize_act_avx2,
    .vec_dot = vec_dot_avx512,
};
