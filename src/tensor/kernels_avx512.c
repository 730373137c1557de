// AVX-512 (F, BW, VL) + VNNI kernel primitives (see kernels_impl.h).
//
// The 32-value block formats (Q4_0, Q4_1, Q8_0: the default model's) take four
// blocks per step: vpdpbusd (u8 x s8 -> int32, 4 products per lane) replaces
// AVX2's maddubs + madd pair, the fp16 block scales convert four at a time,
// and the activations come pre-arranged (act_group) so no shuffles are needed
// to pair them with the unpacked weights.  Up to 8 tokens share each unpacked
// step.  Measured on one core (576x576): Q4_1 44 GFLOP/s for one token, 80-84
// for 4 or more; Q8_0 39 and 71-78 (AVX2 path: 25-33 and 42-46).  Dequantisation and
// the K formats reuse the AVX2 code (bandwidth-bound, or rarely used).
#if !defined(__clang__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#endif
#include <immintrin.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/transpose_x86.h"
#include "util/common.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#endif

static inline __m512i join_256(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

// Activations for Q4_0/Q4_1/Q8_0 weights, in groups of 4 blocks laid out so
// that one 512-bit load meets the weights as they unpack: the weight code
// puts elements 0-15 of 4 blocks in one register (the low nibbles, for Q4)
// and elements 16-31 in another, one block per 128-bit lane, so the
// activations are stored as the 4 first halves, then the 4 second halves.
// Scales are stored as vectors.  A last partial group is padded with zero
// blocks (d = s = 0, q = 0), which contribute exactly 0;
// kernel_act_row_size() reserves whole groups.
typedef struct { int8_t lo[4][16]; int8_t hi[4][16]; float d[4]; float s[4]; } act_group;
_Static_assert(sizeof(act_group) == 4 * sizeof(block_q8_1_f32), "act_group size");

// v rounded to the nearest integer, halves away from zero (roundf), exactly:
// with t = trunc(v), f = v - t is exact (t = 0, or t and v within a factor
// of 2), and trunc(2 f) is sign(v) when |f| >= 0.5, else 0.  Five
// operations with the conversion where a compare-and-add took seven.
static inline __m512i round_half_away_epi32(__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(v, t);
    return _mm512_cvtps_epi32(_mm512_add_ps(t, _mm512_roundscale_ps(_mm512_add_ps(f, f), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)));
}

// A block's 32 codes from its values v0, v1 and 1 / d, stored at q; returns
// their sums in pairs (16 lanes), from which the caller makes s.
static inline __m512i q8_1_codes(const __m512 v0, const __m512 v1, float id, int8_t *q) {
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i q0 = round_half_away_epi32(_mm512_mul_ps(v0, vid));
    const __m512i q1 = round_half_away_epi32(_mm512_mul_ps(v1, vid));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(q1));
    return _mm512_add_epi32(q0, q1);
}

// Block i's codes, sum and scales from its 32 values and 1 / d.
static inline void q8_1_block(const __m512 v0, const __m512 v1, float d, float id, block_q8_1_f32 *y) {
    y->d = d;
    y->s = d * (float)_mm512_reduce_add_epi32(q8_1_codes(v0, v1, id, y->qs));
}

// The codes of kernel_quantize_q8_1_scalar (and of the AVX2 version), four
// blocks at a time: their scales d = max|x| / 127 and 1 / d as the lanes of
// one division each (IEEE divisions, so the scalar's values).
void kernel_quantize_q8_1_avx512(const float *x, block_q8_1_f32 *y, int64_t n) {
    const int64_t nb = n / 32;
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m512 v[8];
        _Alignas(16) float d[4], id[4];
        float amax[4];
#pragma GCC unroll 4
        for (int b = 0; b < 4; b++) {
            v[2 * b] = _mm512_loadu_ps(x + 32 * (i + b)), v[2 * b + 1] = _mm512_loadu_ps(x + 32 * (i + b) + 16);
            amax[b] = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[2 * b]), _mm512_abs_ps(v[2 * b + 1])));
        }
        // Built in registers: four scalar stores read back as one vector
        // missed store forwarding (a quarter of this function's time).
        const __m128 vd = _mm_div_ps(_mm_setr_ps(amax[0], amax[1], amax[2], amax[3]), _mm_set1_ps(127.0f));
        _mm_store_ps(d, vd);
        _mm_store_ps(id, _mm_and_ps(_mm_div_ps(_mm_set1_ps(1.0f), vd), _mm_cmpneq_ps(vd, _mm_setzero_ps())));
        for (int b = 0; b < 4; b++) q8_1_block(v[2 * b], v[2 * b + 1], d[b], id[b], y + i + b);
    }
    for (; i < nb; i++) {
        const __m512 v0 = _mm512_loadu_ps(x + 32 * i), v1 = _mm512_loadu_ps(x + 32 * i + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        q8_1_block(v0, v1, d, d ? 1.0f / d : 0.0f, y + i);
    }
}

void kernel_quantize_q8_1_avx512_tile(const float *x, int64_t ldx, int nt, int64_t n, int8_t *q, float *d, float *s, size_t step) {
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t k = 0; k < n / 32; k++) {
        const float *xk = x + 32 * k;
        int8_t *qk = q + k * step;
        // max|x| of each token's block -> lane t, through one transpose.
        __m512i r[16];
        for (int t = 0; t < 16; t++) {
            if (t >= nt) { // (rows past nt are not there to read)
                r[t] = zero;
                continue;
            }
            const __m512 m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xk + t * ldx)), _mm512_abs_ps(_mm512_loadu_ps(xk + t * ldx + 16)));
            r[t] = _mm512_castps_si512(m);
        }
        as_transpose16_epi32(r);
        __m512 amax = _mm512_castsi512_ps(r[0]);
        for (int c = 1; c < 16; c++) amax = _mm512_max_ps(amax, _mm512_castsi512_ps(r[c]));
        // d = max / 127 and 1 / d (0 where d = 0), IEEE divisions as the per-token code's.
        const __m512 vd = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
        _Alignas(64) float id[16];
        _mm512_store_ps(id, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(vd, _mm512_setzero_ps(), _CMP_NEQ_UQ), _mm512_set1_ps(1.0f), vd));
        for (int t = 0; t < 16; t++) {
            if (t >= nt) {
                _mm256_storeu_si256((__m256i *)(qk + 32 * t), _mm256_setzero_si256());
                r[t] = zero;
                continue;
            }
            r[t] = q8_1_codes(_mm512_loadu_ps(xk + t * ldx), _mm512_loadu_ps(xk + t * ldx + 16), id[t], qk + 32 * t);
        }
        // The code sums -> lane t the same way; s = d * sum.
        as_transpose16_epi32(r);
        __m512i sum = r[0];
        for (int c = 1; c < 16; c++) sum = _mm512_add_epi32(sum, r[c]);
        _mm512_storeu_ps((float *)((uint8_t *)d + k * step), vd);
        _mm512_storeu_ps((float *)((uint8_t *)s + k * step), _mm512_mul_ps(vd, _mm512_cvtepi32_ps(sum)));
    }
}

static void quantize_act_avx512(ggml_type wtype, const float *x, void *dst, int64_t n) {
    if (wtype != GGML_TYPE_Q4_0 && wtype != GGML_TYPE_Q4_1 && wtype != GGML_TYPE_Q8_0) {
        kernel_quantize_act_avx2(wtype, x, dst, n);
        return;
    }
    const int64_t nb = n / 32;
    for (int64_t k = 0; 4 * k < nb; k++) {
        const int nv = (int)AS_MIN(4, nb - 4 * k); // valid blocks in this group
        block_q8_1_f32 b[4];
        memset(b, 0, sizeof b);
        kernel_quantize_q8_1_avx512(x + 128 * k, b, 32 * nv);
        act_group *g = (act_group *)dst + k;
        for (int j = 0; j < 4; j++) {
            memcpy(g->lo[j], b[j].qs, 16);
            memcpy(g->hi[j], b[j].qs + 16, 16);
            g->d[j] = b[j].d;
            g->s[j] = b[j].s;
        }
    }
}

// Weights stream from memory once per token in decode; asking for the lines
// ahead (the next rows, as rows are contiguous) beats the hardware
// prefetcher alone.  1 KB ahead measured ~10% more bandwidth than none (41
// MB of Q4_1, one core); on the 2-vCPU VM of BENCHMARKS.md, whose memory
// latency is long, 8 KB ahead made batch-1 q8 decoding of the default model
// ~25% faster than 1 KB (medians of 6 alternating runs: 98 -> 126 tok/s;
// 2 KB 116, 4 KB 121, 16 KB 122, 32-64 KB no better).  Prefetches past the
// end of the matrix are harmless (they never fault) and mostly land in the
// next matrix, which the GGUF stores after it.
#define KERNEL_PREFETCH_BYTES 8192

static inline float hsum_f32x4(__m128 r) {
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline uint32_t load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

// Q4_1 . Q8_1, 4 blocks per step: sum_i d_w d_a sum_j q_j a_j + m_w s_a.
// Q4_0 is the same with m_w = -8 d_w (its values are q - 8), which keeps the
// weights unsigned for vpdpbusd.  The 4 (d, m) fp16 pairs convert in one
// vcvtph2ps; each 128-bit lane of the int32 sums belongs to one block, so the
// 4 scales are spread lane-wise with one permute.  The last step of a row
// whose block count is no multiple of 4 reads only the nv valid blocks (the
// rest of the registers stay zero, meeting the zero padding of the
// activations).
//
// Float order (kernels_amx.c repeats it exactly, so that both give the same
// bits): for block i at position b = i % 4 of its group, with its exact
// integer sum P_i, acc_b = fma(float(P_i), d_w * d_a, acc_b) and
// accm_b = fma(m_w, s_a, accm_b); the result is
// ((acc_0 + acc_2) + (acc_1 + acc_3)) + ((accm_0 + accm_2) + (accm_1 + accm_3)).
//
// NT activation rows (tokens) share each unpacked weight step
// (vec_dot_q_avx512).  Every token goes through the same operations in the
// same order whatever NT is, so a token's result does not depend on how many
// tokens were batched with it.
static inline __attribute__((always_inline)) void q4_step(const uint8_t *w, size_t stride, int qoff, int nv, __m512i *lo, __m512i *hi,
                                                           __m128 *dw, __m128 *mw, bool affine) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m256i deinterleave = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m512i z = _mm512_zextsi128_si512(_mm_loadu_si128((const __m128i *)(w + qoff)));
    uint32_t h1 = 0, h2 = 0, h3 = 0;
    if (nv > 1) {
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(w + stride + qoff)), 1);
        h1 = load_u32(w + stride);
    }
    if (nv > 2) {
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(w + 2 * stride + qoff)), 2);
        h2 = load_u32(w + 2 * stride);
    }
    if (nv > 3) {
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(w + 3 * stride + qoff)), 3);
        h3 = load_u32(w + 3 * stride);
    }
    *lo = _mm512_and_si512(z, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
    // (d, m) of the blocks (for Q4_0 the "m" halves are quant bytes, unused).
    const __m128i h = _mm_setr_epi32((int)load_u32(w), (int)h1, (int)h2, (int)h3);
    const __m256 dm = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(h), deinterleave);
    *dw = _mm256_castps256_ps128(dm);
    *mw = affine ? _mm256_extractf128_ps(dm, 1) : _mm_mul_ps(*dw, _mm_set1_ps(-8.0f));
}

// Q8_0 . Q8_1, 4 blocks per step.  Signed weights become unsigned by flipping
// the top bit (w + 128); the excess 128 * sum(a) per block is removed with
// the activation sums: d_w (d_a sum((w+128) a) - 128 s_a).  Two 256-bit
// loads give [b0 | b1] and [b2 | b3]; one 64-bit-lane permute each regroups
// them as [b0 b1 b2 b3 first halves] and [... second halves], the Q4 layout,
// so one int32 vector with one block per 128-bit lane serves all 4 blocks.
// Partial last step as above (a missing block reads as 0x80 after the flip,
// but meets zero activations and a zero scale).
static inline __attribute__((always_inline)) void q8_step(const uint8_t *w, int nv, __m512i *lo, __m512i *hi, __m128 *dw) {
    const size_t stride = sizeof(block_q8_0);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i pick_lo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i pick_hi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    const __m256i z = _mm256_setzero_si256();
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)(w + 2));
    const __m256i b1 = nv > 1 ? _mm256_loadu_si256((const __m256i *)(w + stride + 2)) : z;
    const __m256i b2 = nv > 2 ? _mm256_loadu_si256((const __m256i *)(w + 2 * stride + 2)) : z;
    const __m256i b3 = nv > 3 ? _mm256_loadu_si256((const __m256i *)(w + 3 * stride + 2)) : z;
    const __m512i t01 = join_256(b0, b1), t23 = join_256(b2, b3);
    *lo = _mm512_xor_si512(flip, _mm512_permutex2var_epi64(t01, pick_lo, t23));
    *hi = _mm512_xor_si512(flip, _mm512_permutex2var_epi64(t01, pick_hi, t23));
    const __m128i h = _mm_setr_epi16((short)load_u16(w), nv > 1 ? (short)load_u16(w + stride) : 0, nv > 2 ? (short)load_u16(w + 2 * stride) : 0,
                                     nv > 3 ? (short)load_u16(w + 3 * stride) : 0, 0, 0, 0, 0);
    *dw = _mm_cvtph_ps(h);
}

// All three 32-block formats, NT tokens per weight step (see above).
static inline __attribute__((always_inline)) void vec_dot_q_avx512(ggml_type t, const uint8_t *w, const uint8_t *act, size_t act_stride,
                                                                    const int NT, int64_t n, float *out) {
    const bool q8 = t == GGML_TYPE_Q8_0, affine = t == GGML_TYPE_Q4_1;
    const size_t stride = q8 ? sizeof(block_q8_0) : affine ? sizeof(block_q4_1) : sizeof(block_q4_0);
    const int64_t nb = n / 32, ng = (nb + 3) / 4;
    const __m512i lane_of = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc[KERNEL_DOT_MAX_ACT];
    __m128 acc_m[KERNEL_DOT_MAX_ACT];
    for (int j = 0; j < NT; j++) {
        acc[j] = _mm512_setzero_ps();
        acc_m[j] = _mm_setzero_ps();
    }
    for (int64_t k = 0; k < ng; k++, w += 4 * stride) {
        __m512i lo, hi;
        __m128 dw, mw;
        _mm_prefetch((const char *)w + KERNEL_PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)w + KERNEL_PREFETCH_BYTES + 64, _MM_HINT_T0);
        if (q8) {
            _mm_prefetch((const char *)w + KERNEL_PREFETCH_BYTES + 128, _MM_HINT_T0);
            if (4 * k + 4 <= nb) q8_step(w, 4, &lo, &hi, &dw);
            else q8_step(w, (int)(nb - 4 * k), &lo, &hi, &dw);
            mw = _mm_mul_ps(dw, _mm_set1_ps(-128.0f));
        } else {
            if (4 * k + 4 <= nb) q4_step(w, stride, affine ? 4 : 2, 4, &lo, &hi, &dw, &mw, affine);
            else q4_step(w, stride, affine ? 4 : 2, (int)(nb - 4 * k), &lo, &hi, &dw, &mw, affine);
        }
        for (int j = 0; j < NT; j++) {
            const act_group *g = (const act_group *)(act + (size_t)j * act_stride) + k;
            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(g->lo));
            p = _mm512_dpbusd_epi32(p, hi, _mm512_loadu_si512(g->hi));
            // Whole-block integer sums (exact) in all 4 lanes of the block's
            // 128-bit lane, so that the fp32 steps below see one value per
            // block, as the AMX kernel's per-block tiles give it.
            p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_CDAB));
            p = _mm512_add_epi32(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
            acc_m[j] = _mm_fmadd_ps(mw, _mm_loadu_ps(g->s), acc_m[j]);
            const __m128 sc = _mm_mul_ps(dw, _mm_loadu_ps(g->d));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(lane_of, _mm512_castps128_ps512(sc)), acc[j]);
        }
    }
    // Lanes 0, 4, 8, 12 hold the 4 block positions' sums (the other lanes
    // are copies).
    const __m512i first_lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12);
    for (int j = 0; j < NT; j++)
        out[j] = hsum_f32x4(_mm512_castps512_ps128(_mm512_permutexvar_ps(first_lanes, acc[j]))) + hsum_f32x4(acc_m[j]);
}

// One specialisation per token count, so the per-token loops unroll and the
// accumulators stay in registers.
#define DISPATCH_NT(call_with_nt)   \
    switch (n_act) {                \
    case 1: call_with_nt(1); break; \
    case 2: call_with_nt(2); break; \
    case 3: call_with_nt(3); break; \
    case 4: call_with_nt(4); break; \
    case 5: call_with_nt(5); break; \
    case 6: call_with_nt(6); break; \
    case 7: call_with_nt(7); break; \
    default: call_with_nt(8); break; \
    }

static void vec_dot_n_avx512(ggml_type wtype, const void *w, const void *act, size_t act_stride, int n_act, int64_t n, float *out) {
    switch (wtype) {
    case GGML_TYPE_Q4_0:
#define Q4_0_NT(NT) vec_dot_q_avx512(GGML_TYPE_Q4_0, w, act, act_stride, NT, n, out)
        DISPATCH_NT(Q4_0_NT)
        return;
    case GGML_TYPE_Q4_1:
#define Q4_1_NT(NT) vec_dot_q_avx512(GGML_TYPE_Q4_1, w, act, act_stride, NT, n, out)
        DISPATCH_NT(Q4_1_NT)
        return;
    case GGML_TYPE_Q8_0:
#define Q8_0_NT(NT) vec_dot_q_avx512(GGML_TYPE_Q8_0, w, act, act_stride, NT, n, out)
        DISPATCH_NT(Q8_0_NT)
        return;
    default:
        for (int j = 0; j < n_act; j++) out[j] = kernel_vec_dot_avx2(wtype, w, (const uint8_t *)act + (size_t)j * act_stride, n);
    }
}

static float vec_dot_avx512(ggml_type wtype, const void *w, const void *act, int64_t n) {
    float out;
    vec_dot_n_avx512(wtype, w, act, 0, 1, n, &out);
    return out;
}

// ---- F32 path, decode: dequantise-and-dot in registers ----
//
// Each weight block is expanded to fp32 exactly as quant_dequantize_row
// does (same products and sums, no FMA), then FMA'd into per-token
// accumulators; the block never goes through memory.  Two accumulators per
// token (first and second 16 values of a block) halve the FMA latency chain.
// They are the definition of the F32 dot product's order on every ISA
// (kernels_scalar.c dot_f32): product c in lane c % 32 (acc0: lanes 0-15,
// acc1: 16-31, a float row's tail masked into the register its positions
// belong to), then acc0 + acc1 and sum16's tree.

// Lanes l and l + 8, then l and l + 4, l and l + 2, then lanes 0 and 1 (the
// fixed tree that _mm512_reduce_add_ps leaves to the compiler).
static inline float sum16(__m512 v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
static inline __attribute__((always_inline)) void fused_dot_avx512(ggml_type t, const uint8_t *w, const float *x, size_t xs, const int NT,
                                                                    int64_t n, float *out) {
    __m512 acc0[KERNEL_DOT_MAX_ACT], acc1[KERNEL_DOT_MAX_ACT];
    for (int j = 0; j < NT; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const int64_t nb = n / 32;
    const size_t bs = t == GGML_TYPE_Q4_0 ? sizeof(block_q4_0) : t == GGML_TYPE_Q4_1 ? sizeof(block_q4_1) : t == GGML_TYPE_Q8_0 ? sizeof(block_q8_0)
                    : t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 ? 64 : 128; // bytes per 32 weights
    for (int64_t i = 0; i < nb; i++) {
        __m512 v0, v1;
        const char *pf = (const char *)w + (size_t)i * bs + KERNEL_PREFETCH_BYTES; // as in vec_dot_q_avx512
        _mm_prefetch(pf, _MM_HINT_T0);
        if (bs > 64) _mm_prefetch(pf + 64, _MM_HINT_T0);
        switch (t) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: {
            const bool affine = t == GGML_TYPE_Q4_1;
            const uint8_t *b = w + (size_t)i * (affine ? sizeof(block_q4_1) : sizeof(block_q4_0));
            const __m128i q = _mm_loadu_si128((const __m128i *)(b + (affine ? 4 : 2)));
            __m512i lo = _mm512_cvtepu8_epi32(_mm_and_si128(q, m4));
            __m512i hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4));
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(b)));
            if (affine) {
                const __m512 m = _mm512_set1_ps(_cvtsh_ss(load_u16(b + 2)));
                v0 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(lo), d), m);
                v1 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(hi), d), m);
            } else {
                lo = _mm512_sub_epi32(lo, _mm512_set1_epi32(8));
                hi = _mm512_sub_epi32(hi, _mm512_set1_epi32(8));
                v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d);
                v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d);
            }
            break;
        }
        case GGML_TYPE_Q8_0: {
            const uint8_t *b = w + (size_t)i * sizeof(block_q8_0);
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(b)));
            v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)))), d);
            v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18)))), d);
            break;
        }
        case GGML_TYPE_F16: {
            const uint8_t *b = w + (size_t)i * 64;
            v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
            v1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 32)));
            break;
        }
        case GGML_TYPE_BF16: {
            const uint8_t *b = w + (size_t)i * 64;
            v0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)b)), 16));
            v1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(b + 32))), 16));
            break;
        }
        default: { // F32
            const float *f = (const float *)w + i * 32;
            v0 = _mm512_loadu_ps(f);
            v1 = _mm512_loadu_ps(f + 16);
        }
        }
        for (int j = 0; j < NT; j++) {
            acc0[j] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(x + j * xs + 32 * i), acc0[j]);
            acc1[j] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(x + j * xs + 32 * i + 16), acc1[j]);
        }
    }
    // Float rows need not be a multiple of 32: masked tail, positions 0-15 of
    // the last 32 into acc0, 16-31 into acc1.
    for (int64_t c = 32 * nb; c < n; c += 16) {
        const __mmask16 mk = as_lanes16(n - c);
        __m512 v;
        if (t == GGML_TYPE_F16) v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, w + 2 * c));
        else if (t == GGML_TYPE_BF16) v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, w + 2 * c)), 16));
        else v = _mm512_maskz_loadu_ps(mk, (const float *)w + c);
        const bool second = c > 32 * nb;
        for (int j = 0; j < NT; j++) {
            __m512 *a = second ? &acc1[j] : &acc0[j];
            *a = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(mk, x + j * xs + c), *a);
        }
    }
    for (int j = 0; j < NT; j++) out[j] = sum16(_mm512_add_ps(acc0[j], acc1[j]));
}

static bool fused_dot_n_avx512(ggml_type t, const void *w, const float *x, size_t x_stride, int n_act, int64_t n, float *out) {
    if (t != GGML_TYPE_Q4_0 && t != GGML_TYPE_Q4_1 && t != GGML_TYPE_Q8_0 && t != GGML_TYPE_F16 && t != GGML_TYPE_BF16 && t != GGML_TYPE_F32)
        return false;
#define FUSED_NT(NT) fused_dot_avx512(t, w, x, x_stride, NT, n, out)
    DISPATCH_NT(FUSED_NT)
    return true;
}

// The same order (fused_dot_avx512's accumulators) for rows already in fp32
// (the dequantised rows of the types fused_dot_n leaves out).
static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    if (i < n) { // masked tail: no scalar loop
        const __mmask16 m0 = as_lanes16(n - i), m1 = as_lanes16(n - i - 16);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16), _mm512_maskz_loadu_ps(m1, b + i + 16), s1);
    }
    return sum16(_mm512_add_ps(s0, s1));
}

const kernel_ops kernel_ops_avx512 = {
    .name = "avx512",
    .dequant_row = kernel_dequant_row_avx2,
    .dot_f32 = dot_f32_avx512,
    .quantize_act = quantize_act_avx512,
    .vec_dot = vec_dot_avx512,
    .vec_dot_n = vec_dot_n_avx512,
    .fused_dot_n = fused_dot_n_avx512,
    .matmul_q8 = kernel_matmul_q8_vnni,
};

// AVX-512 everywhere, plus AMX tiles for the Q8 matmul of many tokens.
const kernel_ops kernel_ops_amx = {
    .name = "amx",
    .dequant_row = kernel_dequant_row_avx2,
    .dot_f32 = dot_f32_avx512,
    .quantize_act = quantize_act_avx512,
    .vec_dot = vec_dot_avx512,
    .vec_dot_n = vec_dot_n_avx512,
    .fused_dot_n = fused_dot_n_avx512,
    .matmul_q8 = kernel_matmul_q8_tiles,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif
