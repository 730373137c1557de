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
#include <omp.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "tensor/steal.h"
#include "util/common.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

static inline float fp16_to_f32(as_fp16 h) { return _cvtsh_ss(h); }

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

// The F32 path's dot product in the order of every ISA (kernels_scalar.c
// dot_f32: product c in lane c % 32, lanes l and l + 16 added, then a fixed
// tree): the 32 lanes as four 8-lane accumulators, a row's tail masked into
// the accumulators its positions belong to.
static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) s[k] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * k), _mm256_loadu_ps(b + i + 8 * k), s[k]);
    for (int k = 0; i < n; k++, i += 8) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)AS_MIN(n - i, (int64_t)8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        s[k] = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s[k]);
    }
    // Lanes 0-15 = s0 + s2 | s1 + s3, then the tree.
    const __m256 s8 = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
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

// What the AVX2 layout keeps after an activation row's blocks (n values,
// quantize_q8_1_avx2; kernel_act_row_size reserves it): 128 times the blocks'
// code sums, their d and their s, each an array padded to groups of 4 with
// zeros, so that the row kernel loads 4 blocks' values as one vector (no
// gathering shuffles).
typedef struct { int32_t *sum; float *d, *s; } act_extra;
static inline act_extra act_extra_of(const void *y, int64_t n) {
    const int64_t np = (n / QK8_1 + 3) / 4 * 4;
    int32_t *e = (int32_t *)((block_q8_1_f32 *)y + np);
    return (act_extra){e, (float *)(e + np), (float *)(e + 2 * np)};
}

// Same codes as kernel_quantize_q8_1_scalar, and act_extra_of's arrays.
static void quantize_q8_1_avx2(const float *x, block_q8_1_f32 *y, int64_t n) {
    const act_extra ex = act_extra_of(y, n);
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t i = n / QK8_1; i < (n / QK8_1 + 3) / 4 * 4; i++) ex.d[i] = ex.s[i] = 0.0f, ex.sum[i] = 0; // the last group's padding
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
        y[i].d = ex.d[i] = d;
        y[i].s = ex.s[i] = d * (float)sum;
        ex.sum[i] = 128 * sum;
    }
}

void kernel_quantize_act_avx2(ggml_type wtype, const float *x, void *dst, int64_t n) {
    if (wtype == GGML_TYPE_Q4_K || wtype == GGML_TYPE_Q6_K) kernel_quantize_q8_K_scalar(x, dst, n);
    else quantize_q8_1_avx2(x, dst, n);
}

// ---- integer dot products ----

// Q4_0 / Q4_1 / Q8_0 . Q8_1 in the float order of the AVX-512 kernels
// (kernels_avx512.c, kernels_amx.c; kernels_scalar.c states it in C), which
// the row kernel below and the Q4 tile kernel further down keep: block i's
// exact integer sum P_i of unsigned weight codes u times the activation codes
// a (u = q, 0..15, for Q4; u = q + 128 for Q8_0); for b = i % 4,
// acc_b = fma(float(P_i), d_w * d_a, acc_b) and accm_b = fma(m_w, s_a, accm_b),
// with m_w = Q4_1's m, -8 d_w for Q4_0 (its values are q - 8), -128 d_w for
// Q8_0; the result is
// ((acc_0 + acc_2) + (acc_1 + acc_3)) + ((accm_0 + accm_2) + (accm_1 + accm_3)).
// So a token's outputs are the same bits from either kernel, in any batch,
// and the same as the AVX-512 and scalar ISAs' (tested).  NT activation rows
// (tokens) share each loaded weight block; every token goes through the same
// operations in the same order whatever NT is (vec_dot is the NT = 1 case).

// A block's codes (Q4: unsigned nibbles in element order; Q8_0: the signed
// bytes) and its d_w, m_w.
static inline __attribute__((always_inline)) __m256i q32_block(ggml_type t, const uint8_t *b, float *dw, float *mw) {
    as_fp16 h[2];
    memcpy(h, b, sizeof h);
    *dw = fp16_to_f32(h[0]);
    if (t == GGML_TYPE_Q8_0) {
        *mw = *dw * -128.0f;
        return _mm256_loadu_si256((const __m256i *)(b + 2));
    }
    *mw = t == GGML_TYPE_Q4_1 ? fp16_to_f32(h[1]) : *dw * -8.0f;
    return nibbles_to_bytes(b + (t == GGML_TYPE_Q4_1 ? 4 : 2));
}

// The codes' part of P as 8 int32 lanes: Q4, the unsigned codes x times the
// activation codes a; Q8_0, sum(q a) by the sign trick (|q| = ux times a with
// q's sign): maddubs needs an unsigned operand, and u = q + 128 times a would
// overflow its int16 pairs.  The Q8_0 kernel adds 128 sum(a) from the
// activation row's act_extra.
static inline __attribute__((always_inline)) __m256i q32_dot(ggml_type t, __m256i x, __m256i ux, __m256i a) {
    return t == GGML_TYPE_Q8_0 ? dot_u8s8(ux, _mm256_sign_epi8(a, x)) : dot_u8s8(x, a);
}

// ((v_0 + v_2) + (v_1 + v_3)).
static inline float sum4_f32(__m128 v) {
    const __m128 t = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// The int32 sums of four 8-lane vectors, as lanes 0..3.  First the pairs of
// neighbouring lanes by 64-bit shifts and a blend (p0's in the even lanes,
// p1's in the odd ones) instead of hadd's shuffles: in the row kernel the
// shuffle port was the bottleneck.
static inline __m256i pairs2_epi32(__m256i a, __m256i b) {
    return _mm256_blend_epi32(_mm256_add_epi32(a, _mm256_srli_epi64(a, 32)), _mm256_add_epi32(b, _mm256_slli_epi64(b, 32)), 0xAA);
}
static inline __m128i hsum4_epi32(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
    const __m256i q01 = pairs2_epi32(p0, p1), q23 = pairs2_epi32(p2, p3); // [p0 p1 p0 p1 | p0 p1 p0 p1], pair sums
    const __m256i r = _mm256_add_epi32(_mm256_unpacklo_epi64(q01, q23), _mm256_unpackhi_epi64(q01, q23)); // [p0 p1 p2 p3 | p0 p1 p2 p3]
    return _mm_add_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// The (d_w, m_w) of 4 blocks as two 4-lane vectors: their first 4 bytes
// (Q4_1: fp16 d, m; Q4_0 and Q8_0: fp16 d, 2 code bytes) gathered and
// converted at once; blocks nv..3 (past a row's end) as zeros.
static inline __attribute__((always_inline)) void q32_scales4(ggml_type t, const uint8_t *w, size_t stride, int nv, __m128 *dw, __m128 *mw) {
    __m128i x = _mm_cvtsi32_si128(load_i32(w));
    if (nv > 1) x = _mm_insert_epi32(x, load_i32(w + stride), 1);
    if (nv > 2) x = _mm_insert_epi32(x, load_i32(w + 2 * stride), 2);
    if (nv > 3) x = _mm_insert_epi32(x, load_i32(w + 3 * stride), 3);
    const __m128i dm = _mm_shuffle_epi8(x, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)); // d0..d3 | m0..m3
    const __m256 f = _mm256_cvtph_ps(dm);
    *dw = _mm256_castps256_ps128(f);
    *mw = t == GGML_TYPE_Q4_1 ? _mm256_extractf128_ps(f, 1) : _mm_mul_ps(*dw, _mm_set1_ps(t == GGML_TYPE_Q8_0 ? -128.0f : -8.0f));
}

// Four blocks per step, one per lane of acc and accm.  The last step of a row
// of nv < 4 blocks reads only those: the other lanes' codes, weight scales
// and (act_extra's zero padding) activation scales are zeros, so their terms
// are +0 (or -0 for m_w = -0 times s_a = 0), which change no sum.  Weight
// scales go lane-wise into registers (no scalar stores reloaded as a vector:
// store forwarding fails there, and that version decoded at half the speed);
// the activations' come as vectors from act_extra.
static inline __attribute__((always_inline)) void q32_step(ggml_type t, const uint8_t *b, size_t stride, int nv, const uint8_t *act,
                                                            size_t act_stride, const int NT, int64_t n, int64_t i, __m128 *acc, __m128 *accm) {
    const bool q8 = t == GGML_TYPE_Q8_0;
    __m256i x[4], ux[4];
    float unused_d, unused_m;
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        x[v] = v < nv ? q32_block(t, b + (size_t)v * stride, &unused_d, &unused_m) : _mm256_setzero_si256();
        ux[v] = q8 ? _mm256_sign_epi8(x[v], x[v]) : x[v];
    }
    __m128 vdw, vmw;
    q32_scales4(t, b, stride, nv, &vdw, &vmw);
#pragma GCC unroll 8
    for (int j = 0; j < NT; j++) {
        const uint8_t *aj = act + (size_t)j * act_stride;
        const block_q8_1_f32 *y = (const block_q8_1_f32 *)aj + i;
        const act_extra ex = act_extra_of(aj, n);
        __m256i p[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) p[v] = v < nv ? q32_dot(t, x[v], ux[v], _mm256_loadu_si256((const __m256i *)y[v].qs)) : _mm256_setzero_si256();
        __m128i Pi = hsum4_epi32(p[0], p[1], p[2], p[3]);
        if (q8) Pi = _mm_add_epi32(Pi, _mm_loadu_si128((const __m128i *)(ex.sum + i)));
        acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(Pi), _mm_mul_ps(vdw, _mm_loadu_ps(ex.d + i)), acc[j]);
        accm[j] = _mm_fmadd_ps(vmw, _mm_loadu_ps(ex.s + i), accm[j]);
    }
}

static inline __attribute__((always_inline)) void vec_dot_q32_avx2(ggml_type t, const uint8_t *w, const uint8_t *act, size_t act_stride,
                                                                    const int NT, int64_t n, float *out) {
    const size_t stride = t == GGML_TYPE_Q8_0 ? sizeof(block_q8_0) : t == GGML_TYPE_Q4_1 ? sizeof(block_q4_1) : sizeof(block_q4_0);
    const int64_t nb = n / 32;
    __m128 acc[KERNEL_DOT_MAX_ACT], accm[KERNEL_DOT_MAX_ACT];
#pragma GCC unroll 8
    for (int j = 0; j < NT; j++) acc[j] = accm[j] = _mm_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) q32_step(t, w + (size_t)i * stride, stride, 4, act, act_stride, NT, n, i, acc, accm);
    switch (nb - i) { // the last nv < 4 blocks (a constant nv per call, so the step unrolls)
    case 1: q32_step(t, w + (size_t)i * stride, stride, 1, act, act_stride, NT, n, i, acc, accm); break;
    case 2: q32_step(t, w + (size_t)i * stride, stride, 2, act, act_stride, NT, n, i, acc, accm); break;
    case 3: q32_step(t, w + (size_t)i * stride, stride, 3, act, act_stride, NT, n, i, acc, accm); break;
    default: break;
    }
#pragma GCC unroll 8
    for (int j = 0; j < NT; j++) out[j] = sum4_f32(acc[j]) + sum4_f32(accm[j]);
}

static inline __attribute__((always_inline)) void vec_dot_q_avx2(ggml_type t, const uint8_t *w, const uint8_t *act, size_t act_stride,
                                                                  const int NT, int64_t n, float *out) {
    if (t == GGML_TYPE_Q8_0) vec_dot_q32_avx2(GGML_TYPE_Q8_0, w, act, act_stride, NT, n, out);
    else if (t == GGML_TYPE_Q4_1) vec_dot_q32_avx2(GGML_TYPE_Q4_1, w, act, act_stride, NT, n, out);
    else vec_dot_q32_avx2(GGML_TYPE_Q4_0, w, act, act_stride, NT, n, out);
}

// The K formats' float steps are kernels_scalar.c's (the definition for every
// ISA; the AVX-512 table runs these two): per super-block the exact integer
// sums, reduced across lanes, then one fused multiply-add each into running
// sums (Q4_K: acc - accm at the end).
static inline float fma_ss(float a, float b, float c) { return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))); }

// Q4_K (after ggml's AVX2 kernel): the 12 scale bytes are rearranged so the 8
// scales and the 8 mins are each 8 consecutive bytes; the mins meet the
// activation sums (bsums, pairwise added to 32-value sums) in one madd, the
// scales multiply the int16 pair sums of each 32-value sub-block.
static float vec_dot_q4_K_avx2(const block_q4_K *x, const block_q8_K *y, int64_t n) {
    const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    float acc = 0.0f, accm = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        const float dmin = y[i].d * fp16_to_f32(x[i].dmin);
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
        __m128i m = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
        m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 1));
        accm = fma_ss((float)_mm_cvtsi128_si32(m), dmin, accm);
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
        acc = fma_ss((float)hsum_i32x8(sumi), d, acc);
    }
    return acc - accm;
}

// Q6_K (after ggml's AVX2 kernel): values are assembled unsigned (0..63), the
// -32 offset is removed at the end as 32 * sum(scale * bsum).
static float vec_dot_q6_K_avx2(const block_q6_K *x, const block_q8_K *y, int64_t n) {
    const __m256i m3 = _mm256_set1_epi8(3), m15 = _mm256_set1_epi8(15);
    float acc = 0.0f;
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
        acc = fma_ss((float)hsum_i32x8(sumi), d, acc);
    }
    return acc;
}

// ---- Q4_0 / Q4_1 / Q8_0 tiles: 16 weight rows x many tokens ----
//
// Prefill and batched decoding: a work item is a tile of 16 weight rows and
// up to A2_TOKEN_CHUNK tokens.  The tile's codes are unpacked once per
// item into L1 in the AVX-512 tile kernels' layout (kernels_amx.c: code 4i +
// j of row r at q[i][4r + j]), so 8 vectors hold a block's 32 codes of 8 rows
// and a token's 4-byte activation groups meet them as broadcasts: 8 maddubs
// give 8 rows' block sums for one token, where the row kernel spends about as
// many operations on one row.  Q4: maddubs pairs are at most 2 * 15 * 128 in
// magnitude and 8 of them add up to less than 2^15, so the int16 sums are
// exact; one madd makes them int32 (Q8_0: a2_tile_t).  The float steps, and
// so the bits, are vec_dot_q32_avx2's, with acc_b and accm_b per (token, row)
// in L1.  One core, 32 tokens, cache-hot (`bench_matmul --isa avx2 --threads
// 1 --tokens 32 --q8-only`, AMD EPYC Zen 4 class): the 49152 x 576 Q8_0
// output 58.5 GFLOP/s on the row kernel, 97.4 on tiles; with two threads the
// 1536 x 576 Q4_1 went 185 -> 300 GFLOP/s when transpose8_epi32 stopped
// going through the stack.
#define A2_ROWS 16
#define A2_TOKEN_CHUNK 64

typedef struct {
    uint8_t q[8][64];
    float d[A2_ROWS], m[A2_ROWS];
} a2_weight_block;

// Dword i of the 8 vectors r[0..8) -> vector i (an 8 x 8 transpose of int32).
// Written out (no loops over arrays indexed by a table), so that it stays in
// registers: the loop version went through the stack and its stores stalled
// (perf: a2_unpack, 21% of batch-32 decoding, most of it there).
static inline __attribute__((always_inline)) void transpose8_epi32(__m256i *r) {
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // u_c: rows 0..3 (u0..u3) or 4..7 (u4..u7); per 128-bit lane, dword c of
    // each row for c = 0, 1 (from t0/t4), 2, 3 (from t1/t5) of that lane.
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// Rows r0 .. r0+nr-1 of w (nr <= 16) as a2_weight_blocks; rows past nr
// repeat the last one (their outputs are not stored).  Per block and 8 rows:
// 8 nibble unpackings (Q8_0: loads of the signed codes), one 8 x 8
// transpose, the 8 (d, m) fp16 pairs converted at once.
static void a2_unpack(const as_matrix *w, int64_t r0, int nr, a2_weight_block *o) {
    const bool affine = w->type == GGML_TYPE_Q4_1, q8 = w->type == GGML_TYPE_Q8_0;
    const size_t stride = q8 ? sizeof(block_q8_0) : affine ? sizeof(block_q4_1) : sizeof(block_q4_0);
    const int qoff = affine ? 4 : 2;
    const float m_per_d = q8 ? -128.0f : -8.0f; // m_w of Q4_0 and Q8_0 (vec_dot_q32_avx2)
    const uint8_t *rows[A2_ROWS];
    for (int r = 0; r < A2_ROWS; r++) rows[r] = (const uint8_t *)w->data + (size_t)(r0 + AS_MIN(r, nr - 1)) * w->row_bytes;
    for (int64_t k = 0; k < w->cols / 32; k++)
        for (int h = 0; h < 2; h++) {
            __m256i r[8];
            int32_t dm[8]; // (d, m) of Q4_1, (d, first codes) of Q4_0: d in the low half
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                const uint8_t *b = rows[8 * h + i] + (size_t)k * stride;
                r[i] = q8 ? _mm256_loadu_si256((const __m256i *)(b + qoff)) : nibbles_to_bytes(b + qoff);
                dm[i] = load_i32(b);
            }
            transpose8_epi32(r);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(o[k].q[i] + 32 * h), r[i]);
            // Built in registers: eight scalar stores reloaded as one vector
            // would miss store forwarding.
            const __m256i v = _mm256_setr_epi32(dm[0], dm[1], dm[2], dm[3], dm[4], dm[5], dm[6], dm[7]);
            // The low and high fp16 of each pair, packed into 8 x 16 bits.
            const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
            const __m256i x = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pick), 0xD8); // d0..d7 | m0..m7
            const __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(x));
            _mm256_store_ps(o[k].d + 8 * h, d);
            _mm256_store_ps(o[k].m + 8 * h, affine ? _mm256_cvtph_ps(_mm256_extracti128_si256(x, 1)) : _mm256_mul_ps(d, _mm256_set1_ps(m_per_d)));
        }
}

static inline __m256i bcast_u32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// One item: row tile wq (nb blocks) x tokens [t0, t1) of act.  pf_bytes
// bytes from pf (the GGUF rows of the thread's next row tile, or none) are
// prefetched into L2 a share per block, so that the next a2_unpack finds
// them in cache (AVX2 batch-32 q8 decoding: +13%, median of 4 alternating
// pairs with and without, 0.99-1.16).
//
// Q8_0 (q8): the codes are signed and up to 128 in magnitude, so a maddubs
// pair reaches 2 * 128 * 127 and two of them would overflow int16: the sign
// trick of the row kernel (|w| in registers, the broadcast activations with
// w's sign), each pair sum widened by a madd, then 128 sum(a) from act_extra
// added: the same exact P_i as the row kernel's.
static inline __attribute__((always_inline)) void a2_tile_t(const bool q8, const a2_weight_block *wq, int64_t nb, const uint8_t *act,
                                                             size_t act_bytes, int64_t t0, int64_t t1, float *out, int64_t ldo, int nr,
                                                             const uint8_t *pf, size_t pf_bytes, int64_t n) {
    _Alignas(32) float acc[4][A2_TOKEN_CHUNK][A2_ROWS], accm[4][A2_TOKEN_CHUNK][A2_ROWS];
    const int nt = (int)(t1 - t0);
    for (int b = 0; b < 4; b++) memset(acc[b], 0, sizeof acc[b][0] * (size_t)nt), memset(accm[b], 0, sizeof accm[b][0] * (size_t)nt);
    const __m256i ones = _mm256_set1_epi16(1);
    const size_t pf_lines = (pf_bytes + 63) / 64;
    for (int64_t k = 0; k < nb; k++) {
        const int b = (int)(k & 3);
        for (size_t l = pf_lines * (size_t)k / (size_t)nb; l < pf_lines * (size_t)(k + 1) / (size_t)nb; l++)
            _mm_prefetch((const char *)pf + 64 * l, _MM_HINT_T1);
        for (int h = 0; h < 2; h++) {
            __m256i wv[8];
            const __m256i *ws = (const __m256i *)wq[k].q; // Q8_0: the signed codes, vector i at ws[2 i + h]
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                wv[i] = _mm256_load_si256((const __m256i *)(wq[k].q[i] + 32 * h));
                if (q8) wv[i] = _mm256_sign_epi8(wv[i], wv[i]);
            }
            const __m256 dw = _mm256_load_ps(wq[k].d + 8 * h), mw = _mm256_load_ps(wq[k].m + 8 * h);
            for (int j = 0; j < nt; j++) {
                const uint8_t *aj = act + (size_t)(t0 + j) * act_bytes;
                const block_q8_1_f32 *y = (const block_q8_1_f32 *)aj + k;
                __m256i P32;
                if (q8) {
                    __m256i p[8];
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++)
                        p[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[i], _mm256_sign_epi8(bcast_u32(y->qs + 4 * i), _mm256_load_si256(ws + 2 * i + h))), ones);
                    P32 = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3])),
                                           _mm256_add_epi32(_mm256_add_epi32(p[4], p[5]), _mm256_add_epi32(p[6], p[7])));
                    P32 = _mm256_add_epi32(P32, _mm256_set1_epi32(act_extra_of(aj, n).sum[k]));
                }
                else {
                    __m256i p[8];
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++) p[i] = _mm256_maddubs_epi16(wv[i], bcast_u32(y->qs + 4 * i));
                    const __m256i s = _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3])),
                                                       _mm256_add_epi16(_mm256_add_epi16(p[4], p[5]), _mm256_add_epi16(p[6], p[7])));
                    P32 = _mm256_madd_epi16(s, ones);
                }
                const __m256 P = _mm256_cvtepi32_ps(P32);
                float *a = acc[b][j] + 8 * h, *am = accm[b][j] + 8 * h;
                _mm256_store_ps(a, _mm256_fmadd_ps(P, _mm256_mul_ps(dw, _mm256_set1_ps(y->d)), _mm256_load_ps(a)));
                _mm256_store_ps(am, _mm256_fmadd_ps(mw, _mm256_set1_ps(y->s), _mm256_load_ps(am)));
            }
        }
    }
    for (int j = 0; j < nt; j++) {
        _Alignas(32) float o[A2_ROWS];
        float *dst = out + (t0 + j) * ldo;
        for (int h = 0; h < 2; h++) {
            const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_load_ps(acc[0][j] + 8 * h), _mm256_load_ps(acc[2][j] + 8 * h)),
                                           _mm256_add_ps(_mm256_load_ps(acc[1][j] + 8 * h), _mm256_load_ps(acc[3][j] + 8 * h)));
            const __m256 m = _mm256_add_ps(_mm256_add_ps(_mm256_load_ps(accm[0][j] + 8 * h), _mm256_load_ps(accm[2][j] + 8 * h)),
                                           _mm256_add_ps(_mm256_load_ps(accm[1][j] + 8 * h), _mm256_load_ps(accm[3][j] + 8 * h)));
            if (nr == A2_ROWS) _mm256_storeu_ps(dst + 8 * h, _mm256_add_ps(s, m));
            else _mm256_store_ps(o + 8 * h, _mm256_add_ps(s, m));
        }
        if (nr < A2_ROWS) memcpy(dst, o, sizeof(float) * (size_t)nr);
    }
}

static void a2_tile(bool q8, const a2_weight_block *wq, int64_t nb, const uint8_t *act, size_t act_bytes, int64_t t0, int64_t t1, float *out,
                    int64_t ldo, int nr, const uint8_t *pf, size_t pf_bytes, int64_t n) {
    if (q8) a2_tile_t(true, wq, nb, act, act_bytes, t0, t1, out, ldo, nr, pf, pf_bytes, n);
    else a2_tile_t(false, wq, nb, act, act_bytes, t0, t1, out, ldo, nr, pf, pf_bytes, n);
}

typedef struct {
    float *out;
    int64_t ldo;
    const float *x;
    int64_t n_tokens;
    const as_matrix *w;
    uint8_t *act;
    size_t act_bytes;
    steal_ranges ranges;
} a2_job;

// One OpenMP thread's share: the items (row tile major, so a thread's
// consecutive items mostly reuse its unpacked tile) of its own range, then
// the others' last ones (steal.h).
static void a2_thread(a2_job *j) {
    const as_matrix *w = j->w;
    const int64_t nb = w->cols / 32, n_rt = (w->rows + A2_ROWS - 1) / A2_ROWS;
    const int64_t n_chunks = (j->n_tokens + A2_TOKEN_CHUNK - 1) / A2_TOKEN_CHUNK;
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    steal_init(&j->ranges, tid, nt, n_rt * n_chunks);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < j->n_tokens; t++) quantize_q8_1_avx2(j->x + t * w->cols, (block_q8_1_f32 *)(j->act + (size_t)t * j->act_bytes), w->cols);
    a2_weight_block *wq = kernel_scratch(SCRATCH_WORK, sizeof(a2_weight_block) * (size_t)nb);
    int64_t have = -1, item;
    int victim = tid;
    while (steal_next(&j->ranges, tid, nt, &victim, &item)) {
        const int64_t rt = item / n_chunks, c = item % n_chunks, r0 = rt * A2_ROWS;
        const int nr = (int)AS_MIN((int64_t)A2_ROWS, w->rows - r0);
        if (rt != have) a2_unpack(w, r0, nr, wq), have = rt;
        // The last chunk of a row tile prefetches the next one's rows.
        const int64_t r_next = r0 + A2_ROWS, nr_next = AS_MIN((int64_t)A2_ROWS, w->rows - r_next);
        const bool pf = c == n_chunks - 1 && nr_next > 0;
        a2_tile(w->type == GGML_TYPE_Q8_0, wq, nb, j->act, j->act_bytes, c * A2_TOKEN_CHUNK, AS_MIN((c + 1) * A2_TOKEN_CHUNK, j->n_tokens), j->out + r0, j->ldo, nr,
                pf ? (const uint8_t *)w->data + (size_t)r_next * w->row_bytes : NULL, pf ? (size_t)nr_next * w->row_bytes : 0, w->cols);
    }
}

bool kernel_matmul_q8_avx2_tiles(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    if (n_tokens < KERNEL_AVX2_TILE_MIN_TOKENS || (w->type != GGML_TYPE_Q4_0 && w->type != GGML_TYPE_Q4_1 && w->type != GGML_TYPE_Q8_0) ||
        w->cols % 32)
        return false;
    a2_job j = {.out = out, .ldo = ldo, .x = x, .n_tokens = n_tokens, .w = w, .act_bytes = kernel_act_row_size(w->type, w->cols)};
    j.act = kernel_scratch(SCRATCH_ACT, j.act_bytes * (size_t)n_tokens);
#pragma omp parallel num_threads(AS_MIN(nth, STEAL_MAX_THREADS))
    a2_thread(&j);
    return true;
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
    .matmul_q8 = kernel_matmul_q8_avx2_tiles,
    // No fused_dot_n: an in-register AVX2 version measured 20% slower than
    // dequantising the row into L1 and running dot_f32 (8-wide conversions
    // cost more than the store and reload).
};

#if defined(__clang__)
#pragma clang attribute pop
#endif
