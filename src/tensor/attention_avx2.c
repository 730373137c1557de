// The AVX2 code of kernel_attention_rows (attention.h), what CPUs without
// AVX-512 run, for head sizes that are multiples of 16 up to ATTN_D_MAX.
//
// The AVX-512 code's scheme (attention_avx512.c) on 8-lane vectors: a key
// tile's 16 scores are two registers, blocks of up to G2MAX query vectors
// share every loaded key, and the values go 16 dimensions at a time for up to
// VG2 vectors.  Every number in the same order as there (scores: multiply-add
// chain over dimensions from 0, times the scale; the softmax's sum in 16
// lanes, two registers; outputs: chain over keys from 0, times 1 / sum), so
// the same bits as the AVX-512 code.  Without it an AVX2 CPU ran the generic
// C loops: q8 prefill of 512 tokens at 73 tok/s instead of ~1000 (dev VM,
// capped to AVX2).
#include <math.h>

#include "tensor/attention_impl.h"
#include "tensor/vexp.h"
#include "util/common.h"

#if defined(__x86_64__)
#define ATTN2_TARGET __attribute__((target("avx2,fma,f16c")))
#define G2MAX 6 // query vectors per scores block: 12 accumulators
#define VG2 4   // vectors per values block: 4 x 2 accumulators

ATTN2_TARGET static inline __attribute__((always_inline)) __m256 kv_load8(const void *p, int64_t i, bool F16) {
    return F16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const as_fp16 *)p + i))) : _mm256_loadu_ps((const float *)p + i);
}

// Scores of G query vectors (element e of vector g at qT[e * G2MAX + g])
// against the 16 keys of the tile at kt, to s + g * s_stride.
ATTN2_TARGET static inline __attribute__((always_inline)) void scores2_tile(const float *qT, int d, const void *kt, float scale, float *s,
                                                                            int64_t s_stride, const int G, bool F16) {
    __m256 acc[G2MAX][2];
    for (int g = 0; g < G; g++) acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    for (int e = 0; e < d; e++) {
        const __m256 k0 = kv_load8(kt, (int64_t)e * KERNEL_KV_TILE, F16), k1 = kv_load8(kt, (int64_t)e * KERNEL_KV_TILE + 8, F16);
        for (int g = 0; g < G; g++) {
            const __m256 q = _mm256_broadcast_ss(qT + e * G2MAX + g);
            acc[g][0] = _mm256_fmadd_ps(q, k0, acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(q, k1, acc[g][1]);
        }
    }
    const __m256 vs = _mm256_set1_ps(scale);
    for (int g = 0; g < G; g++) {
        _mm256_storeu_ps(s + g * s_stride, _mm256_mul_ps(acc[g][0], vs));
        _mm256_storeu_ps(s + g * s_stride + 8, _mm256_mul_ps(acc[g][1], vs));
    }
}

#define SCORES2_CASE(G)                                                                                 \
    case G:                                                                                             \
        for (int32_t t = 0; t < n_tiles; t++)                                                           \
            scores2_tile(qT, d, (const uint8_t *)k + t * tile_bytes, scale, s + t * KERNEL_KV_TILE, ss, G, F16); \
        break;
ATTN2_TARGET static void scores2(const float *qT, int d, const void *k, int64_t tile_bytes, int32_t n_tiles, float scale, float *s, int64_t ss,
                                 int G, bool F16) {
    switch (G) { SCORES2_CASE(1) SCORES2_CASE(2) SCORES2_CASE(3) SCORES2_CASE(4) SCORES2_CASE(5) SCORES2_CASE(6) default: break; }
}

// s[0..n) <- e^(s - max); returns 1 / sum (n >= 1): softmax_exp512's
// operations, its 16 lanes as lanes 0-7 and 8-15 of two registers.
ATTN2_TARGET static float softmax_exp256(float *s, int32_t n) {
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(s + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmx), _mm256_extractf128_ps(vmx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float mx = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (int32_t i = j; i < n; i++) mx = s[i] > mx ? s[i] : mx;
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        const __m256 e0 = as_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm)), e1 = as_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), vm));
        _mm256_storeu_ps(s + j, e0);
        _mm256_storeu_ps(s + j + 8, e1);
        lo = _mm256_add_ps(lo, e0);
        hi = _mm256_add_ps(hi, e1);
    }
    for (int h = 0; j < n; j += 8, h++) { // the tail: up to two masked halves
        const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 e = _mm256_and_ps(as_exp8(_mm256_sub_ps(_mm256_maskload_ps(s + j, lanes), vm)), _mm256_castsi256_ps(lanes));
        _mm256_maskstore_ps(s + j, lanes, e);
        if (h == 0) lo = _mm256_add_ps(lo, e);
        else hi = _mm256_add_ps(hi, e);
    }
    return 1.0f / attn_sum16_256(lo, hi);
}

// out[g][0..16) = inv[g] sum_{j < n[g]} p[g][j] V[j][0..16) for GC vectors
// (p[g] at p + g * p_stride; V at v, rows v_stride elements apart): the keys
// all of them have together, then each vector's own further keys.
ATTN2_TARGET static inline __attribute__((always_inline)) void values2(const float *p, int64_t p_stride, const void *v, int64_t v_stride,
                                                                       const int32_t *n, float *const *out, const float *inv, const int GC,
                                                                       bool F16) {
    __m256 acc[VG2][2];
    int32_t n_min = n[0];
    for (int g = 0; g < GC; g++) {
        n_min = AS_MIN(n_min, n[g]);
        acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    }
    for (int32_t j = 0; j < n_min; j++) {
        const __m256 x0 = kv_load8(v, (int64_t)j * v_stride, F16), x1 = kv_load8(v, (int64_t)j * v_stride + 8, F16);
        for (int g = 0; g < GC; g++) {
            const __m256 pj = _mm256_broadcast_ss(p + g * p_stride + j);
            acc[g][0] = _mm256_fmadd_ps(pj, x0, acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(pj, x1, acc[g][1]);
        }
    }
    for (int g = 0; g < GC; g++) {
        for (int32_t j = n_min; j < n[g]; j++) {
            const __m256 pj = _mm256_broadcast_ss(p + g * p_stride + j);
            acc[g][0] = _mm256_fmadd_ps(pj, kv_load8(v, (int64_t)j * v_stride, F16), acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(pj, kv_load8(v, (int64_t)j * v_stride + 8, F16), acc[g][1]);
        }
        const __m256 vi = _mm256_set1_ps(inv[g]);
        _mm256_storeu_ps(out[g], _mm256_mul_ps(acc[g][0], vi));
        _mm256_storeu_ps(out[g] + 8, _mm256_mul_ps(acc[g][1], vi));
    }
}

#define VALUES2_CASE(G) \
    case G: values2(p, p_stride, v, v_stride, n, out, inv, G, F16); break;
ATTN2_TARGET static void values2_dispatch(const float *p, int64_t p_stride, const void *v, int64_t v_stride, const int32_t *n, float *const *out,
                                          const float *inv, int GC, bool F16) {
    switch (GC) { VALUES2_CASE(1) VALUES2_CASE(2) VALUES2_CASE(3) VALUES2_CASE(4) default: break; }
}

ATTN2_TARGET void kernel_attention_rows_avx2(const kernel_attn_args *a) {
    const int d = a->d, H = a->n_heads, hb = AS_MIN(H, G2MAX), rb = G2MAX / hb;
    const int64_t ss = a->scores_stride, eb = a->f16 ? 2 : 4;
    _Alignas(32) float qT[G2MAX * ATTN_D_MAX];
    for (int r0 = 0; r0 < a->n_rows; r0 += rb) {
        const int rc = AS_MIN(rb, a->n_rows - r0);
        for (int h0 = 0; h0 < H; h0 += hb) {
            // The block: vector g = row r0 + g / hc, head h0 + g % hc.
            const int hc = AS_MIN(hb, H - h0), G = rc * hc;
            int32_t n[G2MAX], n_max = 0;
            float *out[G2MAX], inv[G2MAX];
            for (int g = 0; g < G; g++) {
                const int r = r0 + g / hc, h = h0 + g % hc;
                n[g] = a->n_keys[r];
                n_max = AS_MAX(n_max, n[g]);
                out[g] = a->out + (int64_t)r * a->out_stride + (int64_t)h * d;
                const float *q = a->q + (int64_t)r * a->q_stride + (int64_t)h * d;
                for (int e = 0; e < d; e++) qT[e * G2MAX + g] = q[e];
            }
            scores2(qT, d, a->k, a->k_tile_stride * eb, (n_max + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE, a->scale, a->scores, ss, G, a->f16);
            for (int g = 0; g < G; g++) inv[g] = softmax_exp256(a->scores + g * ss, n[g]);
            for (int g0 = 0; g0 < G; g0 += VG2)
                for (int c = 0; c < d; c += 16) {
                    float *o[VG2];
                    for (int g = g0; g < AS_MIN(G, g0 + VG2); g++) o[g - g0] = out[g] + c;
                    values2_dispatch(a->scores + g0 * ss, ss, (const uint8_t *)a->v + c * eb, a->v_stride, n + g0, o, inv + g0,
                                     AS_MIN(VG2, G - g0), a->f16);
                }
        }
    }
}
#endif
