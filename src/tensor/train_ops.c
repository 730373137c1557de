// The element-wise and reduction kernels of training (see train_ops.h) on
// three paths that give the same bits: AVX-512 (16 lanes), AVX2 (two 8-lane
// registers standing for the 16 lanes) and C (a float[16] of lanes).
//
// e^x is vexp.h's (as_exp16 / as_exp8 / as_expf: the same operations at every
// width).  A reduction keeps 16 partial results, element i in lane i % 16,
// each lane updated in increasing i; a tail is masked lanes (those past n are
// left alone); at the end the 16 lanes are folded in lane order 0 .. 15.
// That is the AVX-512 loop's natural order; the AVX2 and C loops reproduce
// it, so the vector width changes only which elements are computed together.
#include "tensor/train_ops.h"

#include <math.h>

#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/vexp.h"
#include "util/common.h"

enum { LANES = 16 };

// The 16 lanes of a sum folded into double in lane order.
static double fold_sum(const float lanes[LANES]) {
    double s = 0.0;
    for (int l = 0; l < LANES; l++) s += (double)lanes[l];
    return s;
}

// The 16 lanes of a max folded in lane order with the vector max's rule
// (max_ps(a, b) = a > b ? a : b).
static float fold_max(const float lanes[LANES]) {
    float m = lanes[0];
    for (int l = 1; l < LANES; l++) m = m > lanes[l] ? m : lanes[l];
    return m;
}

// ---- C: the definitions, lane by lane ----

static inline float silu_sigmoid(float x) { return 1.0f / (1.0f + as_expf(0.0f - x)); }

static double exp_sum_c(float *dst, const float *x, int64_t n, float shift) {
    float acc[LANES] = {0};
    for (int64_t i = 0; i < n; i += LANES) {
        const int m = (int)AS_MIN((int64_t)LANES, n - i);
        for (int l = 0; l < m; l++) {
            const float e = as_expf(x[i + l] - shift);
            if (dst) dst[i + l] = e;
            acc[l] = acc[l] + e;
        }
    }
    return fold_sum(acc);
}

static float max_c(const float *x, int64_t n) {
    float acc[LANES];
    for (int l = 0; l < LANES; l++) acc[l] = x[0];
    for (int64_t i = 0; i < n; i += LANES) {
        const int m = (int)AS_MIN((int64_t)LANES, n - i);
        for (int l = 0; l < m; l++) acc[l] = acc[l] > x[i + l] ? acc[l] : x[i + l];
    }
    return fold_max(acc);
}

static void neg_scaled_exp_c(float *dz, const float *z, int64_t n, float g, float l) {
    for (int64_t i = 0; i < n; i++) dz[i] = fmaf(-g, as_expf(z[i] - l), 0.0f);
}

static void silu_fwd_c(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], s = silu_sigmoid(x);
        h[i] = (x * s) * u[i];
    }
}

static void silu_bwd_c(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], d = dh[i], s = silu_sigmoid(x);
        const float da = s * (1.0f + x * (1.0f - s));
        dg[i] = (d * u[i]) * da;
        du[i] = d * (x * s);
    }
}

static inline uint32_t drop_hash(uint64_t k) {
    uint32_t h = (uint32_t)k ^ (uint32_t)(k >> 32);
    h ^= h >> 16, h *= 0x7feb352dU, h ^= h >> 15, h *= 0x846ca68bU, h ^= h >> 16;
    return h;
}

static void dropout_c(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep_out) {
    for (int64_t j = 0; j < n; j++) {
        const uint32_t h = drop_hash(k0 + (uint64_t)j);
        if (keep_out) {
            if (j % 16 == 0) keep_out[j / 16] = 0;
            keep_out[j / 16] |= (uint16_t)((h >= thresh) << (j % 16));
        }
        const float f = h < thresh ? 0.0f : keep_scale;
        d[j] = add ? fmaf(x[j], f, d[j]) : x[j] * f;
    }
}

static void dropout_mask_c(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    for (int64_t j = 0; j < n; j++) {
        const float f = (keep[j / 16] >> (j % 16)) & 1 ? keep_scale : 0.0f;
        d[j] = add ? fmaf(x[j], f, d[j]) : x[j] * f;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx2,fma,avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))

// ---- AVX-512: one register of 16 lanes, the tail masked ----

AVX512 static double exp_sum_512(float *dst, const float *x, int64_t n, float shift) {
    __m512 acc = _mm512_setzero_ps();
    const __m512 s = _mm512_set1_ps(shift);
    for (int64_t i = 0; i < n; i += LANES) {
        const __mmask16 m = as_lanes16(n - i);
        const __m512 e = as_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
        if (dst) _mm512_mask_storeu_ps(dst + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    float lanes[LANES];
    _mm512_storeu_ps(lanes, acc);
    return fold_sum(lanes);
}

AVX512 static float max_512(const float *x, int64_t n) {
    __m512 acc = _mm512_set1_ps(x[0]);
    for (int64_t i = 0; i < n; i += LANES) {
        const __mmask16 m = as_lanes16(n - i);
        acc = _mm512_mask_max_ps(acc, m, acc, _mm512_maskz_loadu_ps(m, x + i));
    }
    float lanes[LANES];
    _mm512_storeu_ps(lanes, acc);
    return fold_max(lanes);
}

AVX512 static void neg_scaled_exp_512(float *dz, const float *z, int64_t n, float g, float l) {
    const __m512 vl = _mm512_set1_ps(l), vg = _mm512_set1_ps(g);
    for (int64_t i = 0; i < n; i += LANES) {
        const __mmask16 m = as_lanes16(n - i);
        const __m512 e = as_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, z + i), vl));
        _mm512_mask_storeu_ps(dz + i, m, _mm512_fnmadd_ps(vg, e, _mm512_setzero_ps()));
    }
}

AVX512 static inline __m512 sigmoid16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, as_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

AVX512 static void silu_fwd_512(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += LANES) {
        const __mmask16 m = as_lanes16(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i), s = sigmoid16(x);
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_mul_ps(x, s), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

AVX512 static void silu_bwd_512(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += LANES) {
        const __mmask16 m = as_lanes16(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i), d = _mm512_maskz_loadu_ps(m, dh + i), s = sigmoid16(x);
        const __m512 da = _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(x, _mm512_sub_ps(one, s))));
        _mm512_mask_storeu_ps(dg + i, m, _mm512_mul_ps(_mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, u + i)), da));
        _mm512_mask_storeu_ps(du + i, m, _mm512_mul_ps(d, _mm512_mul_ps(x, s)));
    }
}

// 16 counters k0 + j .. k0 + j + 15 hashed at once: the low words add j with
// a carry into the high word where they wrap, as the 64-bit sum would.
// keep_out (when not NULL): the keep mask, bit j % 16 of word j / 16.
AVX512 static void dropout_512(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep_out) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i m1 = _mm512_set1_epi32(0x7feb352d), m2 = _mm512_set1_epi32((int)0x846ca68bU), th = _mm512_set1_epi32((int)thresh);
    const __m512 ks = _mm512_set1_ps(keep_scale);
    for (int64_t j = 0; j < n; j += LANES) {
        const __mmask16 m = as_lanes16(n - j);
        const uint64_t k = k0 + (uint64_t)j;
        const __m512i lo0 = _mm512_set1_epi32((int)(uint32_t)k), lo = _mm512_add_epi32(lo0, lane);
        const __mmask16 carry = _mm512_cmplt_epu32_mask(lo, lo0);
        const __m512i hi0 = _mm512_set1_epi32((int)(uint32_t)(k >> 32));
        const __m512i hi = _mm512_mask_add_epi32(hi0, carry, hi0, _mm512_set1_epi32(1));
        __m512i h = _mm512_xor_si512(lo, hi);
        h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_srli_epi32(h, 16)), m1);
        h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_srli_epi32(h, 15)), m2);
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
        const __mmask16 keep = _mm512_cmpge_epu32_mask(h, th);
        if (keep_out) keep_out[j / 16] = (uint16_t)(keep & m);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j), f = _mm512_maskz_mov_ps(keep, ks); // x * 0 as the C: -0, NaN
        _mm512_mask_storeu_ps(d + j, m, add ? _mm512_fmadd_ps(xv, f, _mm512_maskz_loadu_ps(m, d + j)) : _mm512_mul_ps(xv, f));
    }
}

AVX512 static void dropout_mask_512(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    const __m512 ks = _mm512_set1_ps(keep_scale);
    for (int64_t j = 0; j < n; j += LANES) {
        const __mmask16 m = as_lanes16(n - j);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j), f = _mm512_maskz_mov_ps((__mmask16)keep[j / 16], ks);
        _mm512_mask_storeu_ps(d + j, m, add ? _mm512_fmadd_ps(xv, f, _mm512_maskz_loadu_ps(m, d + j)) : _mm512_mul_ps(xv, f));
    }
}

// ---- AVX2: lanes 0-7 and 8-15 of the 16 in two registers ----

// All-ones in the first `left` of 8 lanes (none when left <= 0).
AVX2 static inline __m256i lanes8(int64_t left) {
    const int l = (int)AS_MAX((int64_t)0, AS_MIN((int64_t)8, left));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(l), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AVX2 static inline __m256 load8(const float *p, __m256i m, bool full) { return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m); }
AVX2 static inline void store8(float *p, __m256i m, bool full, __m256 v) {
    if (full) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, m, v);
}

AVX2 static double exp_sum_avx2(float *dst, const float *x, int64_t n, float shift) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const __m256 s = _mm256_set1_ps(shift);
    for (int64_t i = 0; i < n; i += LANES) {
        const bool full = n - i >= LANES;
        const __m256i m0 = lanes8(n - i), m1 = lanes8(n - i - 8);
        const __m256 e0 = as_exp8(_mm256_sub_ps(load8(x + i, m0, full), s));
        const __m256 e1 = as_exp8(_mm256_sub_ps(load8(x + i + 8, m1, full), s));
        if (dst) store8(dst + i, m0, full, e0), store8(dst + i + 8, m1, full, e1);
        // Lanes past n keep their sums (as the AVX-512 masked add).
        acc0 = _mm256_blendv_ps(acc0, _mm256_add_ps(acc0, e0), _mm256_castsi256_ps(m0));
        acc1 = _mm256_blendv_ps(acc1, _mm256_add_ps(acc1, e1), _mm256_castsi256_ps(m1));
    }
    float lanes[LANES];
    _mm256_storeu_ps(lanes, acc0);
    _mm256_storeu_ps(lanes + 8, acc1);
    return fold_sum(lanes);
}

AVX2 static float max_avx2(const float *x, int64_t n) {
    __m256 acc0 = _mm256_set1_ps(x[0]), acc1 = acc0;
    for (int64_t i = 0; i < n; i += LANES) {
        const bool full = n - i >= LANES;
        const __m256i m0 = lanes8(n - i), m1 = lanes8(n - i - 8);
        acc0 = _mm256_blendv_ps(acc0, _mm256_max_ps(acc0, load8(x + i, m0, full)), _mm256_castsi256_ps(m0));
        acc1 = _mm256_blendv_ps(acc1, _mm256_max_ps(acc1, load8(x + i + 8, m1, full)), _mm256_castsi256_ps(m1));
    }
    float lanes[LANES];
    _mm256_storeu_ps(lanes, acc0);
    _mm256_storeu_ps(lanes + 8, acc1);
    return fold_max(lanes);
}

AVX2 static void neg_scaled_exp_avx2(float *dz, const float *z, int64_t n, float g, float l) {
    const __m256 vl = _mm256_set1_ps(l), vg = _mm256_set1_ps(g);
    for (int64_t i = 0; i < n; i += 8) {
        const bool full = n - i >= 8;
        const __m256i m = lanes8(n - i);
        const __m256 e = as_exp8(_mm256_sub_ps(load8(z + i, m, full), vl));
        store8(dz + i, m, full, _mm256_fnmadd_ps(vg, e, _mm256_setzero_ps()));
    }
}

AVX2 static inline __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, as_exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

AVX2 static void silu_fwd_avx2(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        const bool full = n - i >= 8;
        const __m256i m = lanes8(n - i);
        const __m256 x = load8(g + i, m, full), s = sigmoid8(x);
        store8(h + i, m, full, _mm256_mul_ps(_mm256_mul_ps(x, s), load8(u + i, m, full)));
    }
}

AVX2 static void silu_bwd_avx2(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 8) {
        const bool full = n - i >= 8;
        const __m256i m = lanes8(n - i);
        const __m256 x = load8(g + i, m, full), d = load8(dh + i, m, full), s = sigmoid8(x);
        const __m256 da = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(x, _mm256_sub_ps(one, s))));
        store8(dg + i, m, full, _mm256_mul_ps(_mm256_mul_ps(d, load8(u + i, m, full)), da));
        store8(du + i, m, full, _mm256_mul_ps(d, _mm256_mul_ps(x, s)));
    }
}

// x * (keep ? scale : 0) [fused + d] on 8 lanes.
AVX2 static inline void drop8(float *d, const float *x, __m256i m, bool full, __m256i keep, __m256 ks, int add) {
    const __m256 xv = load8(x, m, full), f = _mm256_and_ps(_mm256_castsi256_ps(keep), ks);
    store8(d, m, full, add ? _mm256_fmadd_ps(xv, f, load8(d, m, full)) : _mm256_mul_ps(xv, f));
}

// lowbias32 of counters k + base .. k + base + 7 (see dropout_512); the
// unsigned compares as signed ones on values with the top bit flipped.
AVX2 static inline __m256i hash8(uint64_t k, __m256i lane) {
    const __m256i top = _mm256_set1_epi32((int)0x80000000U);
    const __m256i lo0 = _mm256_set1_epi32((int)(uint32_t)k), lo = _mm256_add_epi32(lo0, lane);
    const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(lo0, top), _mm256_xor_si256(lo, top)); // lo < lo0: -1
    const __m256i hi = _mm256_sub_epi32(_mm256_set1_epi32((int)(uint32_t)(k >> 32)), carry);
    __m256i h = _mm256_xor_si256(lo, hi);
    h = _mm256_mullo_epi32(_mm256_xor_si256(h, _mm256_srli_epi32(h, 16)), _mm256_set1_epi32(0x7feb352d));
    h = _mm256_mullo_epi32(_mm256_xor_si256(h, _mm256_srli_epi32(h, 15)), _mm256_set1_epi32((int)0x846ca68bU));
    return _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
}

AVX2 static void dropout_avx2(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep_out) {
    const __m256i top = _mm256_set1_epi32((int)0x80000000U), th = _mm256_set1_epi32((int)(thresh ^ 0x80000000U));
    const __m256i lane0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), lane1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    const __m256 ks = _mm256_set1_ps(keep_scale);
    for (int64_t j = 0; j < n; j += LANES) {
        const bool full = n - j >= LANES;
        const __m256i m0 = lanes8(n - j), m1 = lanes8(n - j - 8);
        const uint64_t k = k0 + (uint64_t)j;
        // keep: h >= thresh, i.e. not thresh > h
        const __m256i ones = _mm256_set1_epi32(-1);
        const __m256i keep0 = _mm256_xor_si256(_mm256_cmpgt_epi32(th, _mm256_xor_si256(hash8(k, lane0), top)), ones);
        const __m256i keep1 = _mm256_xor_si256(_mm256_cmpgt_epi32(th, _mm256_xor_si256(hash8(k, lane1), top)), ones);
        if (keep_out) {
            const int b0 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_and_si256(keep0, m0)));
            const int b1 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_and_si256(keep1, m1)));
            keep_out[j / 16] = (uint16_t)(b0 | b1 << 8);
        }
        drop8(d + j, x + j, m0, full, keep0, ks, add);
        if (n - j > 8) drop8(d + j + 8, x + j + 8, m1, full, keep1, ks, add);
    }
}

// The lanes whose bit is set in w (bits 0-7: lanes of the first register,
// or 8-15 of the second with bits = 256 .. 32768).
AVX2 static inline __m256i bits8(uint32_t w, __m256i bits) {
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)w), bits), bits);
}

AVX2 static void dropout_mask_avx2(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    const __m256i bits0 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i bits1 = _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    const __m256 ks = _mm256_set1_ps(keep_scale);
    for (int64_t j = 0; j < n; j += LANES) {
        const bool full = n - j >= LANES;
        const uint32_t w = keep[j / 16];
        drop8(d + j, x + j, lanes8(n - j), full, bits8(w, bits0), ks, add);
        if (n - j > 8) drop8(d + j + 8, x + j + 8, lanes8(n - j - 8), full, bits8(w, bits1), ks, add);
    }
}

// The path: kernel_vec_level (AVX-512 where kernel_avx512_active; AVX2 where
// the kernels' ISA is AVX2 or above: ALPHASPIN_KERNEL_ISA=avx2 caps an
// AVX-512 CPU to it; else C).
#define DISPATCH(c512, c2, cc) \
    do { \
        switch (kernel_vec_level()) { \
        case KERNEL_VEC_AVX512: c512; break; \
        case KERNEL_VEC_AVX2: c2; break; \
        default: cc; \
        } \
    } while (0)
#else
#define DISPATCH(c512, c2, cc) \
    do { \
        cc; \
    } while (0)
#endif

// ---- entry points ----

double train_exp_shift_sum(float *x, int64_t n, float shift) {
    double s = 0.0;
    DISPATCH(s = exp_sum_512(x, x, n, shift), s = exp_sum_avx2(x, x, n, shift), s = exp_sum_c(x, x, n, shift));
    return s;
}

double train_exp_sum(const float *x, int64_t n, float shift) {
    double s = 0.0;
    DISPATCH(s = exp_sum_512(NULL, x, n, shift), s = exp_sum_avx2(NULL, x, n, shift), s = exp_sum_c(NULL, x, n, shift));
    return s;
}

float train_max(const float *x, int64_t n) {
    float m = 0.0f;
    DISPATCH(m = max_512(x, n), m = max_avx2(x, n), m = max_c(x, n));
    return m;
}

void train_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l) {
    DISPATCH(neg_scaled_exp_512(dz, z, n, g, l), neg_scaled_exp_avx2(dz, z, n, g, l), neg_scaled_exp_c(dz, z, n, g, l));
}

void train_silu_glu_forward(float *h, const float *g, const float *u, int64_t n) {
    DISPATCH(silu_fwd_512(h, g, u, n), silu_fwd_avx2(h, g, u, n), silu_fwd_c(h, g, u, n));
}

void train_silu_glu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    DISPATCH(silu_bwd_512(dg, du, dh, g, u, n), silu_bwd_avx2(dg, du, dh, g, u, n), silu_bwd_c(dg, du, dh, g, u, n));
}

void train_dropout_row_ref(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add) {
    dropout_c(d, x, n, k0, thresh, keep_scale, add, NULL);
}

void train_dropout_row(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add) {
    DISPATCH(dropout_512(d, x, n, k0, thresh, keep_scale, add, NULL), dropout_avx2(d, x, n, k0, thresh, keep_scale, add, NULL),
             dropout_c(d, x, n, k0, thresh, keep_scale, add, NULL));
}

void train_dropout_row_keep(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep) {
    DISPATCH(dropout_512(d, x, n, k0, thresh, keep_scale, add, keep), dropout_avx2(d, x, n, k0, thresh, keep_scale, add, keep),
             dropout_c(d, x, n, k0, thresh, keep_scale, add, keep));
}

void train_dropout_row_mask(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    DISPATCH(dropout_mask_512(d, x, n, keep, keep_scale, add), dropout_mask_avx2(d, x, n, keep, keep_scale, add),
             dropout_mask_c(d, x, n, keep, keep_scale, add));
}
