// Vectorised exp for the training softmaxes (see fastmath.h).
//
// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two
// parts), exp(r) = 1 + r + r^2 P(r) with Cephes' degree-5 P on |r| <= ln2/2.
// The scalar version does the same operations with fmaf, so a vector lane and
// the scalar version round identically (the vector code's tails are masked
// lanes).
#include "train/fastmath.h"

#include <math.h>

#include "tensor/kernels.h"
#include "tensor/lanes_x86.h"

#define EXP_HI 88.7228391f
#define EXP_LO -103.9720840f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define P0 1.9875691500e-4f
#define P1 1.3981999507e-3f
#define P2 8.3334519073e-3f
#define P3 4.1665795894e-2f
#define P4 1.6666665459e-1f
#define P5 5.0000001201e-1f

float train_expf(float x) {
    x = fminf(fmaxf(x, EXP_LO), EXP_HI);
    const float n = nearbyintf(x * LOG2E);
    float r = fmaf(-n, LN2_HI, x);
    r = fmaf(-n, LN2_LO, r);
    float p = P0;
    p = fmaf(p, r, P1), p = fmaf(p, r, P2), p = fmaf(p, r, P3), p = fmaf(p, r, P4), p = fmaf(p, r, P5);
    const float r2 = r * r;
    p = fmaf(p, r2, r) + 1.0f;
    return ldexpf(p, (int)n);
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P5));
    const __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// The tails of the functions below run as masked vectors (as_lanes16; the
// same operations as the scalar train_expf, lane by lane).

// Lane sums folded to double in lane order.
AVX512 static double exp_shift_sum_512(float *x, const float *src, int64_t n, float shift, int store) {
    __m512 acc = _mm512_setzero_ps();
    const __m512 s = _mm512_set1_ps(shift);
    int64_t i = 0;
    for (; i < n; i += 16) { // the tail as masked lanes (scalar expf calls were ~4% of a training step)
        const __mmask16 m = as_lanes16(n - i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, src + i), s));
        if (store) _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, acc);
    double sum = 0.0;
    for (int l = 0; l < 16; l++) sum += lanes[l];
    return sum;
}

AVX512 static float max_512(const float *x, int64_t n) {
    __m512 acc = _mm512_set1_ps(x[0]);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = as_lanes16(n - i);
        acc = _mm512_mask_max_ps(acc, m, acc, _mm512_maskz_loadu_ps(m, x + i));
    }
    return _mm512_reduce_max_ps(acc);
}

AVX512 static void neg_scaled_exp_512(float *dz, const float *z, int64_t n, float g, float l) {
    const __m512 vl = _mm512_set1_ps(l), vg = _mm512_set1_ps(g);
    int64_t i = 0;
    for (; i < n; i += 16) {
        const __mmask16 m = as_lanes16(n - i);
        _mm512_mask_storeu_ps(dz + i, m, _mm512_fnmadd_ps(vg, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, z + i), vl)), _mm512_setzero_ps()));
    }
}

AVX512 static void silu_fwd_512(float *h, const float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i < n; i += 16) {
        const __mmask16 m = as_lanes16(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_mul_ps(x, s), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

AVX512 static void silu_bwd_512(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i < n; i += 16) {
        const __mmask16 m = as_lanes16(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i), d = _mm512_maskz_loadu_ps(m, dh + i);
        const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
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
    int64_t j = 0;
    for (; j < n; j += 16) {
        const __mmask16 m = as_lanes16(n - j);
        const uint64_t k = k0 + (uint64_t)j;
        const __m512i lo0 = _mm512_set1_epi32((int)(uint32_t)k), lo = _mm512_add_epi32(lo0, lane);
        const __mmask16 carry = _mm512_cmplt_epu32_mask(lo, lo0);
        const __m512i hi = _mm512_mask_add_epi32(_mm512_set1_epi32((int)(uint32_t)(k >> 32)), carry, _mm512_set1_epi32((int)(uint32_t)(k >> 32)),
                                                 _mm512_set1_epi32(1));
        __m512i h = _mm512_xor_si512(lo, hi);
        h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_srli_epi32(h, 16)), m1);
        h = _mm512_mullo_epi32(_mm512_xor_si512(h, _mm512_srli_epi32(h, 15)), m2);
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
        const __mmask16 keep = _mm512_cmpge_epu32_mask(h, th);
        if (keep_out) keep_out[j / 16] = (uint16_t)(keep & m);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j), f = _mm512_maskz_mov_ps(keep, ks); // x * 0 as the scalar: -0, NaN
        _mm512_mask_storeu_ps(d + j, m, add ? _mm512_fmadd_ps(xv, f, _mm512_maskz_loadu_ps(m, d + j)) : _mm512_mul_ps(xv, f));
    }
}

AVX512 static void dropout_mask_512(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    const __m512 ks = _mm512_set1_ps(keep_scale);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = as_lanes16(n - j);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j), f = _mm512_maskz_mov_ps((__mmask16)keep[j / 16], ks);
        _mm512_mask_storeu_ps(d + j, m, add ? _mm512_fmadd_ps(xv, f, _mm512_maskz_loadu_ps(m, d + j)) : _mm512_mul_ps(xv, f));
    }
}

static int has_avx512(void) { return cpu_get_features()->avx512f; }
#else
static void dropout_512(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep_out) {
    (void)d, (void)x, (void)n, (void)k0, (void)thresh, (void)keep_scale, (void)add, (void)keep_out;
}
static void dropout_mask_512(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    (void)d, (void)x, (void)n, (void)keep, (void)keep_scale, (void)add;
}
static void silu_fwd_512(float *h, const float *g, const float *u, int64_t n) { (void)h, (void)g, (void)u, (void)n; }
static void silu_bwd_512(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    (void)dg, (void)du, (void)dh, (void)g, (void)u, (void)n;
}
static int has_avx512(void) { return 0; }
static double exp_shift_sum_512(float *x, const float *src, int64_t n, float shift, int store) { (void)x, (void)src, (void)n, (void)shift, (void)store; return 0; }
static float max_512(const float *x, int64_t n) { (void)x, (void)n; return 0; }
static void neg_scaled_exp_512(float *dz, const float *z, int64_t n, float g, float l) { (void)dz, (void)z, (void)n, (void)g, (void)l; }
#endif

// Without AVX-512 the same polynomial runs one element at a time; the sums
// then differ from the vector path's lane order (a different CPU may round
// differently, the same CPU always the same way).
double train_exp_shift_sum(float *x, int64_t n, float shift) {
    if (has_avx512()) return exp_shift_sum_512(x, x, n, shift, 1);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (x[i] = train_expf(x[i] - shift));
    return sum;
}

double train_exp_sum(const float *x, int64_t n, float shift) {
    if (has_avx512()) return exp_shift_sum_512(NULL, x, n, shift, 0);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += train_expf(x[i] - shift);
    return sum;
}

float train_max(const float *x, int64_t n) {
    if (has_avx512()) return max_512(x, n);
    float m = x[0];
    for (int64_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

void train_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l) {
    if (has_avx512()) {
        neg_scaled_exp_512(dz, z, n, g, l);
        return;
    }
    for (int64_t i = 0; i < n; i++) dz[i] = fmaf(-g, train_expf(z[i] - l), 0.0f);
}

void train_silu_glu_forward(float *h, const float *g, const float *u, int64_t n) {
    if (has_avx512()) {
        silu_fwd_512(h, g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + train_expf(-g[i]));
        h[i] = g[i] * s * u[i];
    }
}

void train_silu_glu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    if (has_avx512()) {
        silu_bwd_512(dg, du, dh, g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], s = 1.0f / (1.0f + train_expf(-x));
        dg[i] = dh[i] * u[i] * (s * (1.0f + x * (1.0f - s)));
        du[i] = dh[i] * (x * s);
    }
}

static void dropout_ref(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep_out) {
    for (int64_t j = 0; j < n; j++) {
        const uint64_t k = k0 + (uint64_t)j;
        uint32_t h = (uint32_t)k ^ (uint32_t)(k >> 32);
        h ^= h >> 16, h *= 0x7feb352dU, h ^= h >> 15, h *= 0x846ca68bU, h ^= h >> 16;
        if (keep_out) {
            if (j % 16 == 0) keep_out[j / 16] = 0;
            keep_out[j / 16] |= (uint16_t)((h >= thresh) << (j % 16));
        }
        const float f = h < thresh ? 0.0f : keep_scale;
        d[j] = add ? fmaf(x[j], f, d[j]) : x[j] * f;
    }
}

void train_dropout_row_ref(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add) {
    dropout_ref(d, x, n, k0, thresh, keep_scale, add, NULL);
}

void train_dropout_row(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add) {
    if (has_avx512()) dropout_512(d, x, n, k0, thresh, keep_scale, add, NULL);
    else dropout_ref(d, x, n, k0, thresh, keep_scale, add, NULL);
}

void train_dropout_row_keep(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep) {
    if (has_avx512()) dropout_512(d, x, n, k0, thresh, keep_scale, add, keep);
    else dropout_ref(d, x, n, k0, thresh, keep_scale, add, keep);
}

void train_dropout_row_mask(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add) {
    if (has_avx512()) {
        dropout_mask_512(d, x, n, keep, keep_scale, add);
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        const float f = (keep[j / 16] >> (j % 16)) & 1 ? keep_scale : 0.0f;
        d[j] = add ? fmaf(x[j], f, d[j]) : x[j] * f;
    }
}
