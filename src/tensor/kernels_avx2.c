// AVX2 + FMA + F16C kernel primitives (see kernels_impl.h).  The whole file is
// compiled for that target; kernels.c calls it only when cpu_get_features()
// reports all three.
//
// 8-bit dots use the maddubs idiom: _mm256_maddubs_epi16(u8, s8) multiplies
// unsigned by signed bytes and adds adjacent pairs to int16, then
// _mm256_madd_epi16(.., 1) widens pairs to int32.  Signed x signed becomes
// |w| x (a with w's sign), since the sign moves freely between factors
// (_mm256_sign_epi8).
#if !defined(__clang__)
#pragma GCC target("avx2,fma,f16c")
#endif
#include <immintrin.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "util/common.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

static inline float fp16_to_f32(as_fp16 h) { return _cvtsh_ss(h); }

static inline float hsum_f32x8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline int hsum_i32x8(__m256i x) {
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 1));
    return _mm_cvtsi128_si32(r);
}

// 16 bytes of 4-bit pairs -> 32 bytes in element order: byte j holds element j
// (low nibble) and element j+16 (high nibble).
static inline __m256i nibbles_to_bytes(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

// sum of u8 x s8 over 32 bytes, as 8 int32 lanes.
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// ---- dequantisation (same operations as quant.c, 8 lanes at a time) ----

static inline void store_q4(float *y, __m256i q, __m256 d, __m256 m, bool affine, bool center) {
    // q: 32 bytes in element order; 4 groups of 8 -> int32 -> float.
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_cvtepu8_epi32(parts[k]);
        if (center) v = _mm256_sub_epi32(v, _mm256_set1_epi32(8));
        __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), d);
        if (affine) f = _mm256_add_ps(f, m); // q*d + m: two roundings, as ggml
        _mm256_storeu_ps(y + 8 * k, f);
    }
}

void kernel_dequant_row_avx2(ggml_type t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case GGML_TYPE_F16: {
        const as_fp16 *s = src;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        for (; i < n; i++) dst[i] = fp16_to_f32(s[i]);
        return;
    }
    case GGML_TYPE_BF16: {
        const as_bf16 *s = src;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(v, 16));
        }
        for (; i < n; i++) dst[i] = as_bf16_to_f32(s[i]);
        return;
    }
    case GGML_TYPE_Q8_0: {
        const block_q8_0 *x = src;
        for (int64_t i = 0; i < n / QK8_0; i++) {
            const __m256 d = _mm256_set1_ps(fp16_to_f32(x[i].d));
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x[i].qs + 8 * k)));
                _mm256_storeu_ps(dst + i * QK8_0 + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(v), d));
            }
        }
        return;
    }
    case GGML_TYPE_Q4_0: {
        const block_q4_0 *x = src;
        for (int64_t i = 0; i < n / QK4_0; i++)
            store_q4(dst + i * QK4_0, nibbles_to_bytes(x[i].qs), _mm256_set1_ps(fp16_to_f32(x[i].d)), _mm256_setzero_ps(), false, true);
        return;
    }
    case GGML_TYPE_Q4_1: {
        const block_q4_1 *x = src;
        for (int64_t i = 0; i < n / QK4_1; i++)
            store_q4(dst + i * QK4_1, nibbles_to_bytes(x[i].qs), _mm256_set1_ps(fp16_to_f32(x[i].d)), _mm256_set1_ps(fp16_to_f32(x[i].m)), true, false);
        return;
    }
    default: quant_dequantize_row(t, src, dst, n); return; // F32 copy, K types
    }
}

static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// ---- activation quantisation ----

// roundf() semantics (ties away from zero), so that the SIMD and scalar
// quantisers give identical codes: trunc(v) plus sign(v) when the discarded
// fraction v - trunc(v) (exact in fp32) is at least one half.
static inline __m256 round_half_away(__m256 v) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(v, t));
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign_bit));
    return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
}

// Same codes as kernel_quantize_q8_1_scalar.
static void quantize_q8_1_avx2(const float *x, block_q8_1_f32 *y, int64_t n) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float d = _mm_cvtss_f32(m4) / 127.0f;
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], id)));
        const int sum = hsum_i32x8(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        // int32 -> int8: the packs interleave 128-bit lanes; the permute restores order.
        __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
        __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, p);
        y[i].d = d;
        y[i].s = d * (float)sum;
    }
}

void kernel_quantize_act_avx2(ggml_type wtype, const float *x, void *dst, int64_t n) {
    if (wtype == GGML_TYPE_Q4_K || wtype == GGML_TYPE_Q6_K) kernel_quantize_q8_K_scalar(x, dst, n);
    else quantize_q8_1_avx2(x, dst, n);
}

// ---- integer dot products ----

// Q4_0 / Q4_1 / Q8_0 . Q8_1: per block d_w d_a sum_j q_j a_j (+ m_w s_a for
// Q4_1).  NT activation rows (tokens) share each unpacked weight block; every
// token goes through the same operations in the same order whatever NT is,
// so its result does not depend on the batch (vec_dot is the NT = 1 case).
static inline __attribute__((always_inline)) void vec_dot_q_avx2(ggml_type t, const uint8_t *w, const uint8_t *act, size_t act_stride,
                                                                  const int NT, int64_t n, float *out) {
    const bool affine = t == GGML_TYPE_Q4_1, is_signed = t != GGML_TYPE_Q4_1;
    const size_t stride = t == GGML_TYPE_Q8_0 ? sizeof(block_q8_0) : affine ? sizeof(block_q4_1) : sizeof(block_q4_0);
    __m256 acc[KERNEL_DOT_MAX_ACT];
    float summs[KERNEL_DOT_MAX_ACT];
    for (int j = 0; j < NT; j++) {
        acc[j] = _mm256_setzero_ps();
        summs[j] = 0;
    }
    for (int64_t i = 0; i < n / 32; i++, w += stride) {
        as_fp16 h[2];
        memcpy(h, w, sizeof h);
        const float dw = fp16_to_f32(h[0]), mw = affine ? fp16_to_f32(h[1]) : 0.0f;
        __m256i x; // Q4_0: q - 8, Q8_0: q (signed); Q4_1: q (unsigned)
        if (t == GGML_TYPE_Q8_0) x = _mm256_loadu_si256((const __m256i *)(w + 2));
        else if (affine) x = nibbles_to_bytes(w + 4);
        else x = _mm256_sub_epi8(nibbles_to_bytes(w + 2), _mm256_set1_epi8(8));
        const __m256i ux = is_signed ? _mm256_sign_epi8(x, x) : x;
        for (int j = 0; j < NT; j++) {
            const block_q8_1_f32 *y = (const block_q8_1_f32 *)(act + (size_t)j * act_stride) + i;
            __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
            if (is_signed) qy = _mm256_sign_epi8(qy, x);
            const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(ux, qy));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y->d), p, acc[j]);
            if (affine) summs[j] += mw * y->s;
        }
    }
    for (int j = 0; j < NT; j++) out[j] = hsum_f32x8(acc[j]) + summs[j];
}

// Q4_K (after ggml's AVX2 kernel): the 12 scale bytes are rearranged so the 8
// scales and the 8 mins are each 8 consecutive bytes; the mins meet the
// activation sums (bsums, pairwise added to 32-value sums) in one madd, the
// scales multiply the int16 pair sums of each 32-value sub-block.
static float vec_dot_q4_K_avx2(const block_q4_K *x, const block_q8_K *y, int64_t n) {
    const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        const float dmin = -y[i].d * fp16_to_f32(x[i].dmin);
        uint32_t utmp[4];
        memcpy(utmp, x[i].scales, 12);
        utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
        const uint32_t uaux = utmp[1] & kmask1;
        utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
        utmp[2] = uaux;
        utmp[0] &= kmask1;
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        const __m256i mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2], (int)utmp[1], (int)utmp[0]));
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)y[i].bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
        const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        const __m256i scales = _mm256_set_m128i(sc128, sc128);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j) {
            // int16 scale pair (2j, 2j+1) broadcast: bytes {4j, 4j+1} and {4j+2, 4j+3}.
            const __m256i scale_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)((4 * j + 1) << 8 | (4 * j))));
            const __m256i scale_h = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)((4 * j + 3) << 8 | (4 * j + 2))));
            const __m256i q4bits = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4l = _mm256_and_si256(q4bits, m4);
            const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            const __m256i q8l = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            const __m256i q8h = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    return hsum_f32x8(acc) + _mm_cvtss_f32(acc_m);
}

// Q6_K (after ggml's AVX2 kernel): values are assembled unsigned (0..63), the
// -32 offset is removed at the end as 32 * sum(scale * bsum).
static float vec_dot_q6_K_avx2(const block_q6_K *x, const block_q8_K *y, int64_t n) {
    const __m256i m3 = _mm256_set1_epi8(3), m15 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        const uint8_t *q4 = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)y[i].bsums);
        const __m128i scales = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i scales_16 = _mm256_cvtepi8_epi16(scales);
        const __m256i q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
        __m256i sumi = _mm256_setzero_si256();
        int is = 0;
        for (int j = 0; j < QK_K / 128; ++j) {
            const __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4bitsH = _mm256_loadu_si256((const __m256i *)qh);
            qh += 32;
            const __m256i q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bitsH, m3), 4);
            const __m256i q4h_1 = _mm256_slli_epi16(_mm256_and_si256(q4bitsH, _mm256_set1_epi8(12)), 2);
            const __m256i q4h_2 = _mm256_and_si256(q4bitsH, _mm256_set1_epi8(48));
            const __m256i q4h_3 = _mm256_srli_epi16(_mm256_and_si256(q4bitsH, _mm256_set1_epi8(-64)), 2);
            const __m256i q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m15), q4h_0);
            const __m256i q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m15), q4h_1);
            const __m256i q4_2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m15), q4h_2);
            const __m256i q4_3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m15), q4h_3);
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            const __m256i q8_2 = _mm256_loadu_si256((const __m256i *)(q8 + 64));
            const __m256i q8_3 = _mm256_loadu_si256((const __m256i *)(q8 + 96));
            q8 += 128;
            // Scales of sub-blocks is..is+7: each 32-value chunk spans two
            // 16-value sub-blocks, so each 128-bit half takes one scale.
            const __m256i s0 = _mm256_setr_m128i(_mm_set1_epi16(x[i].scales[is + 0]), _mm_set1_epi16(x[i].scales[is + 1]));
            const __m256i s1 = _mm256_setr_m128i(_mm_set1_epi16(x[i].scales[is + 2]), _mm_set1_epi16(x[i].scales[is + 3]));
            const __m256i s2 = _mm256_setr_m128i(_mm_set1_epi16(x[i].scales[is + 4]), _mm_set1_epi16(x[i].scales[is + 5]));
            const __m256i s3 = _mm256_setr_m128i(_mm_set1_epi16(x[i].scales[is + 6]), _mm_set1_epi16(x[i].scales[is + 7]));
            is += 8;
            const __m256i p0 = _mm256_madd_epi16(s0, _mm256_maddubs_epi16(q4_0, q8_0));
            const __m256i p1 = _mm256_madd_epi16(s1, _mm256_maddubs_epi16(q4_1, q8_1));
            const __m256i p2 = _mm256_madd_epi16(s2, _mm256_maddubs_epi16(q4_2, q8_2));
            const __m256i p3 = _mm256_madd_epi16(s3, _mm256_maddubs_epi16(q4_3, q8_3));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_f32x8(acc);
}

static void vec_dot_n_avx2(ggml_type wtype, const void *w, const void *act, size_t act_stride, int n_act, int64_t n, float *out) {
    if (wtype == GGML_TYPE_Q4_K || wtype == GGML_TYPE_Q6_K) {
        for (int j = 0; j < n_act; j++) out[j] = kernel_vec_dot_avx2(wtype, w, (const uint8_t *)act + (size_t)j * act_stride, n);
        return;
    }
    switch (n_act) { // one specialisation per token count: accumulators stay in registers
    case 1: vec_dot_q_avx2(wtype, w, act, act_stride, 1, n, out); break;
    case 2: vec_dot_q_avx2(wtype, w, act, act_stride, 2, n, out); break;
    case 3: vec_dot_q_avx2(wtype, w, act, act_stride, 3, n, out); break;
    case 4: vec_dot_q_avx2(wtype, w, act, act_stride, 4, n, out); break;
    case 5: vec_dot_q_avx2(wtype, w, act, act_stride, 5, n, out); break;
    case 6: vec_dot_q_avx2(wtype, w, act, act_stride, 6, n, out); break;
    case 7: vec_dot_q_avx2(wtype, w, act, act_stride, 7, n, out); break;
    default: vec_dot_q_avx2(wtype, w, act, act_stride, 8, n, out); break;
    }
}

float kernel_vec_dot_avx2(ggml_type wtype, const void *w, const void *act, int64_t n) {
    float out;
    switch (wtype) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q8_0: vec_dot_q_avx2(wtype, w, act, 0, 1, n, &out); return out;
    case GGML_TYPE_Q4_K: return vec_dot_q4_K_avx2(w, act, n);
    case GGML_TYPE_Q6_K: return vec_dot_q6_K_avx2(w, act, n);
    default: as_die("vec_dot: no 8-bit path for type %d", (int)wtype);
    }
}

const kernel_ops kernel_ops_avx2 = {
    .name = "avx2",
    .dequant_row = kernel_dequant_row_avx2,
    .dot_f32 = dot_f32_avx2,
    .quantize_act = kernel_quantize_act_avx2,
    .vec_dot = kernel_vec_dot_avx2,
    .vec_dot_n = vec_dot_n_avx2,
    // No fused_dot_n: an in-register AVX2 version measured 20% slower than
    // dequantising the row into L1 and running dot_f32 (8-wide conversions
    // cost more than the store and reload).
};

#if defined(__clang__)
#pragma clang attribute pop
#endif
