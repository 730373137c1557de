// The row operations of ops.h on three codes, generic C, AVX2 (+ FMA) and
// AVX-512, chosen by kernel_vec_level (the kernels' ISA: kernel_force_isa,
// ALPHASPIN_KERNEL_ISA) at every call.  Each does the same operations on each
// element in the same order (fmaf in the C code exactly where the vectors
// fuse; vexp.h's one exp), and sums in one fixed order, so the three give the
// same bits (README: bitwise reproducible across CPUs).
#include "tensor/ops.h"

#include <math.h>

#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/vexp.h"

// ---- the gated linear units ----

// out <- act(g) * u with act(x) = x / (1 + e^t): SiLU, t = -x; tanh-GELU
// x/2 (1 + tanh y), y = sqrt(2/pi) (x + 0.044715 x^3), written with
// t = -2y since (1 + tanh y) / 2 = 1 / (1 + e^-2y): t = k2 fma(c x, x x, x),
// k2 = -2 sqrt(2/pi).  out may be g.
#define GLU_K2 (-2.0f * 0.7978845608028654f)
#define GLU_C 0.044715f
static void glu_c(float *out, const float *g, const float *u, int64_t n, bool gelu) {
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        const float t = gelu ? GLU_K2 * fmaf(GLU_C * x, x * x, x) : 0.0f - x;
        out[i] = x / (1.0f + as_expf(t)) * u[i];
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void glu_avx2(float *out, const float *g, const float *u, int64_t n, bool gelu) {
    const __m256 one = _mm256_set1_ps(1.0f), k2 = _mm256_set1_ps(GLU_K2), c = _mm256_set1_ps(GLU_C);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        __m256 t;
        if (gelu) t = _mm256_mul_ps(k2, _mm256_fmadd_ps(_mm256_mul_ps(c, x), _mm256_mul_ps(x, x), x));
        else t = _mm256_sub_ps(_mm256_setzero_ps(), x);
        const __m256 act = _mm256_div_ps(x, _mm256_add_ps(one, as_exp8(t)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(act, _mm256_loadu_ps(u + i)));
    }
    glu_c(out + i, g + i, u + i, n - i, gelu);
}

// glu_avx2 16 lanes wide.
__attribute__((target("avx2,fma,avx512f"))) static void glu_avx512(float *out, const float *g, const float *u, int64_t n, bool gelu) {
    const __m512 one = _mm512_set1_ps(1.0f), k2 = _mm512_set1_ps(GLU_K2), c = _mm512_set1_ps(GLU_C);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        __m512 t;
        if (gelu) t = _mm512_mul_ps(k2, _mm512_fmadd_ps(_mm512_mul_ps(c, x), _mm512_mul_ps(x, x), x));
        else t = _mm512_sub_ps(_mm512_setzero_ps(), x);
        const __m512 act = _mm512_div_ps(x, _mm512_add_ps(one, as_exp16(t)));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(act, _mm512_loadu_ps(u + i)));
    }
    glu_avx2(out + i, g + i, u + i, n - i, gelu);
}
#endif

// ---- RMSNorm ----

// out = x / sqrt(mean(x^2) + eps) * w.  The sum of squares in double (C can
// be thousands; the products x^2 are exact in double, so fused or not they
// add the same), over 16 lanes folded by one fixed tree:
//   s8[i] = l[i] + l[i + 8],  s4[i] = s8[i] + s8[i + 4],  s2[i] = s4[i] + s4[i + 2],  sum = s2[0] + s2[1]
// (a lane past the end of the row receives nothing, as a masked vector lane).
static inline double rms_sum16_c(const double l[16]) {
    double s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

static inline float rms_scale(double ss, int64_t C, float eps) { return (float)(1.0 / sqrt(ss / (double)C + (double)eps)); }

static void rmsnorm_c(float *out, const float *x, const float *w, int64_t C, float eps) {
    double l[16] = {0};
    for (int64_t i = 0; i < C; i++) l[i % 16] += (double)x[i] * (double)x[i];
    const float r = rms_scale(rms_sum16_c(l), C, eps);
    for (int64_t i = 0; i < C; i++) out[i] = x[i] * r * w[i];
}

#if defined(__x86_64__)
// Lanes 0-3, 4-7, 8-11, 12-15 in a[0..4).
__attribute__((target("avx2,fma"))) static void rmsnorm_avx2(float *out, const float *x, const float *w, int64_t C, float eps) {
    __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    int64_t i = 0;
    for (; i + 16 <= C; i += 16)
        for (int k = 0; k < 4; k++) {
            const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k));
            a[k] = _mm256_fmadd_pd(v, v, a[k]);
        }
    for (int k = 0; i < C; k++, i += 4) { // the tail, 4 lanes at a time (masked)
        const __m128i lanes = _mm_cmpgt_epi32(_mm_set1_epi32((int)(C - i)), _mm_setr_epi32(0, 1, 2, 3));
        const __m256d v = _mm256_cvtps_pd(_mm_maskload_ps(x + i, lanes));
        a[k] = _mm256_fmadd_pd(v, v, a[k]);
    }
    const __m256d s8lo = _mm256_add_pd(a[0], a[2]), s8hi = _mm256_add_pd(a[1], a[3]); // s8[0..4), s8[4..8)
    const __m256d s4 = _mm256_add_pd(s8lo, s8hi);
    const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    const float r = rms_scale(_mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2))), C, eps);
    const __m256 vr = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= C; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vr), _mm256_loadu_ps(w + i)));
    for (; i < C; i++) out[i] = x[i] * r * w[i];
}

// Lanes 0-7 in a0, 8-15 in a1.
__attribute__((target("avx2,fma,avx512f"))) static void rmsnorm_avx512(float *out, const float *x, const float *w, int64_t C, float eps) {
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= C; i += 16) {
        const __m512d lo = _mm512_cvtps_pd(_mm256_loadu_ps(x + i)), hi = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
    }
    if (i < C) { // masked tail
        const __m512 v = _mm512_maskz_loadu_ps(as_lanes16(C - i), x + i);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
    }
    const __m512d s8 = _mm512_add_pd(a0, a1);
    const __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(s8), _mm512_extractf64x4_pd(s8, 1));
    const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    const float r = rms_scale(_mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2))), C, eps);
    const __m512 vr = _mm512_set1_ps(r);
    for (i = 0; i + 16 <= C; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vr), _mm512_loadu_ps(w + i)));
    if (i < C) {
        const __mmask16 m = as_lanes16(C - i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vr), _mm512_maskz_loadu_ps(m, w + i)));
    }
}
#endif

// ---- e^x over a row ----

static void exp_c(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = as_expf(x[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,avx512f"))) static void exp_avx512(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, as_exp16(_mm512_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = as_expf(x[i]);
}
__attribute__((target("avx2,fma"))) static void exp_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, as_exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = as_expf(x[i]);
}
#endif

// ---- argmax ----

// With AVX-512: 16 lanes, each with its running maximum and the first index
// where it was reached, merged at the end (greedy decoding of 32 sequences
// spent 6% of a step in the plain scan over 49152 logits).  The same index as
// the scan.
#if defined(__x86_64__)
// The lanes' maxima mv and first indices av merged (the lowest index among
// equal maxima), then the scan over the tail l[i..n).
static int32_t argmax_merge(const float *mv, const int32_t *av, int lanes, const float *l, int32_t i, int32_t n) {
    float best = mv[0];
    int32_t best_at = av[0];
    for (int j = 1; j < lanes; j++)
        if (mv[j] > best || (mv[j] == best && av[j] < best_at)) best = mv[j], best_at = av[j];
    for (; i < n; i++)
        if (l[i] > best) best = l[i], best_at = i;
    return best_at;
}

__attribute__((target("avx512f"))) static int32_t argmax_avx512(const float *l, int32_t n) {
    __m512 m = _mm512_set1_ps(l[0]);
    __m512i at = _mm512_setzero_si512(), idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    int32_t i = 0;
    for (; i + 16 <= n; i += 16, idx = _mm512_add_epi32(idx, step)) {
        const __m512 x = _mm512_loadu_ps(l + i);
        const __mmask16 gt = _mm512_cmp_ps_mask(x, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, gt, x);
        at = _mm512_mask_mov_epi32(at, gt, idx);
    }
    float mv[16];
    int32_t av[16];
    _mm512_storeu_ps(mv, m);
    _mm512_storeu_si512(av, at);
    return argmax_merge(mv, av, 16, l, i, n);
}

// The same with 8 lanes (AVX2 CPUs: 5% of a batch-32 greedy step in the scan).
__attribute__((target("avx2"))) static int32_t argmax_avx2(const float *l, int32_t n) {
    __m256 m = _mm256_set1_ps(l[0]);
    __m256i at = _mm256_setzero_si256(), idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step = _mm256_set1_epi32(8);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8, idx = _mm256_add_epi32(idx, step)) {
        const __m256 x = _mm256_loadu_ps(l + i);
        const __m256 gt = _mm256_cmp_ps(x, m, _CMP_GT_OQ);
        m = _mm256_blendv_ps(m, x, gt);
        at = _mm256_blendv_epi8(at, idx, _mm256_castps_si256(gt));
    }
    float mv[8];
    int32_t av[8];
    _mm256_storeu_ps(mv, m);
    _mm256_storeu_si256((__m256i *)av, at);
    return argmax_merge(mv, av, 8, l, i, n);
}
#endif

// ---- entry points ----

void kernel_rmsnorm(float *out, const float *x, const float *w, int64_t C, float eps) {
#if defined(__x86_64__)
    switch (kernel_vec_level()) {
    case KERNEL_VEC_AVX512: rmsnorm_avx512(out, x, w, C, eps); return;
    case KERNEL_VEC_AVX2: rmsnorm_avx2(out, x, w, C, eps); return;
    default: break;
    }
#endif
    rmsnorm_c(out, x, w, C, eps);
}

void kernel_glu(float *out, const float *g, const float *u, int64_t n, bool gelu) {
#if defined(__x86_64__)
    switch (kernel_vec_level()) {
    case KERNEL_VEC_AVX512: glu_avx512(out, g, u, n, gelu); return;
    case KERNEL_VEC_AVX2: glu_avx2(out, g, u, n, gelu); return;
    default: break;
    }
#endif
    glu_c(out, g, u, n, gelu);
}

void kernel_exp(float *x, int64_t n) {
#if defined(__x86_64__)
    switch (kernel_vec_level()) {
    case KERNEL_VEC_AVX512: exp_avx512(x, n); return;
    case KERNEL_VEC_AVX2: exp_avx2(x, n); return;
    default: break;
    }
#endif
    exp_c(x, n);
}

int32_t kernel_argmax(const float *x, int32_t n) {
    if (n <= 1 || x[0] != x[0]) return 0;
#if defined(__x86_64__)
    switch (kernel_vec_level()) {
    case KERNEL_VEC_AVX512: return argmax_avx512(x, n);
    case KERNEL_VEC_AVX2: return argmax_avx2(x, n);
    default: break;
    }
#endif
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// ---- residual adds and scaling: one rounding per element ----

void kernel_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void kernel_scale(float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

// ---- a token's log-probability over host logits ----

double kernel_logprob(const float *z, int32_t n, int32_t t) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)z[i] - mx);
    return (double)z[t] - mx - log(sum);
}

double kernel_logsumexp(const float *z, int64_t n, float s) {
    float mx = z[0] * s;
    for (int64_t j = 1; j < n; j++) mx = fmaxf(mx, z[j] * s);
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) sum += exp((double)(z[j] * s - mx));
    return mx + log(sum);
}
