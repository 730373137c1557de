// Causal attention of a few query rows against one KV group of one sequence's
// cache (model_internal.h: model_attention_rows), generic C and AVX-512.
//
// Keys are stored in tiles of 16 positions, transposed: dimension e of the 16
// keys of a tile is one run of 16 floats (KV_TILE, model.h), so the scores of
// one query against 16 keys are 16 lanes of one register, built by d fused
// multiply-adds of broadcast query elements -- no horizontal sums.  Values stay
// one row per position; a row of output is the sum over keys of p_j V_j, again
// 16 lanes at a time.  Heads of one group share every loaded K/V vector
// (grouped-query attention: 3 heads per KV head in the default model).
//
// Every number is computed in an order fixed by its own row and key only:
// score (row, j) = multiply-add chain over dimensions 0..d-1 from 0, times the
// scale; softmax over the row's own n keys; output element = multiply-add
// chain over keys 0..n-1 from 0, times 1 / sum.  How rows and heads are grouped into calls or
// registers never changes a bit, so a token's attention is the same in any
// batch, in prefill or in decode (the Q8 path's batch invariance rests on it).
// The C and AVX-512 versions differ only in the softmax's summation order and
// exp (both ~1 ulp).  K and V are fp32 or fp16 (converted as they load).
#include <math.h>
#include <string.h>

#include "model/model.h"
#include "model/model_internal.h"
#include "tensor/quant.h"
#include "util/common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTN_X86 1
#endif

// ---- generic C ----

static inline float kv_at(const void *p, int64_t i, bool f16) {
    return f16 ? as_fp16_to_f32(((const as_fp16 *)p)[i]) : ((const float *)p)[i];
}

static void attention_rows_c(const model_attn_args *a) {
    const int d = a->d;
    for (int r = 0; r < a->n_rows; r++) {
        const int32_t n = a->n_keys[r];
        for (int h = 0; h < a->n_heads; h++) {
            const float *q = a->q + (int64_t)r * a->q_stride + (int64_t)h * d;
            float *s = a->scores, *out = a->out + (int64_t)r * a->out_stride + (int64_t)h * d;
            float mx = -INFINITY;
            for (int32_t j = 0; j < n; j++) {
                const int64_t kt = (int64_t)(j / KV_TILE) * a->k_tile_stride + j % KV_TILE;
                float acc = 0.0f;
                for (int e = 0; e < d; e++) acc += q[e] * kv_at(a->k, kt + e * KV_TILE, a->f16);
                s[j] = acc * a->scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.0f;
            for (int32_t j = 0; j < n; j++) sum += s[j] = expf(s[j] - mx);
            const float inv = 1.0f / sum;
            for (int e = 0; e < d; e++) {
                float acc = 0.0f;
                for (int32_t j = 0; j < n; j++) acc += s[j] * kv_at(a->v, (int64_t)j * a->v_stride + e, a->f16);
                out[e] = acc * inv;
            }
        }
    }
}

// ---- AVX-512 ----

#ifdef ATTN_X86
#define ATTN_TARGET __attribute__((target("avx2,fma,f16c,avx512f")))

// 16 keys' or values' elements as fp32 (F16: stored as fp16).
ATTN_TARGET static inline __attribute__((always_inline)) __m512 kv_load(const void *p, int64_t i, bool F16) {
    return F16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const as_fp16 *)p + i))) : _mm512_loadu_ps((const float *)p + i);
}

#define HMAX 3 // heads per register block
#define TMAX 4 // key tiles per register block
#define DMAX 4 // 16-float output vectors per register block

// Scores of HC heads (q rows d apart) against TC key tiles starting at kt.
ATTN_TARGET static inline __attribute__((always_inline)) void scores_block(const float *q, int d, const void *kt, int64_t tile_stride,
                                                                           float scale, float *s, int64_t s_stride, int HC, int TC, bool F16) {
    __m512 acc[HMAX][TMAX];
    #pragma GCC unroll 4
    for (int h = 0; h < HC; h++)
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) acc[h][t] = _mm512_setzero_ps();
    for (int e = 0; e < d; e++) {
        __m512 k[TMAX];
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) k[t] = kv_load(kt, t * tile_stride + e * KV_TILE, F16);
        #pragma GCC unroll 4
        for (int h = 0; h < HC; h++) {
            const __m512 qe = _mm512_set1_ps(q[h * d + e]);
            #pragma GCC unroll 4
            for (int t = 0; t < TC; t++) acc[h][t] = _mm512_fmadd_ps(qe, k[t], acc[h][t]);
        }
    }
    const __m512 vs = _mm512_set1_ps(scale);
    #pragma GCC unroll 4
    for (int h = 0; h < HC; h++)
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) _mm512_storeu_ps(s + h * s_stride + t * KV_TILE, _mm512_mul_ps(acc[h][t], vs));
}

// out[h][0 .. 16 DC) = sum_{j < n} p[h][j] V[j][0 .. 16 DC), for HC heads.
ATTN_TARGET static inline __attribute__((always_inline)) void values_block(const float *p, int64_t p_stride, const void *v, int64_t v_stride,
                                                                           int32_t n, float *out, int d, const float *inv, int HC, int DC, bool F16) {
    __m512 acc[HMAX][DMAX];
    #pragma GCC unroll 4
    for (int h = 0; h < HC; h++)
        #pragma GCC unroll 4
        for (int c = 0; c < DC; c++) acc[h][c] = _mm512_setzero_ps();
    for (int32_t j = 0; j < n; j++) {
        __m512 x[DMAX];
        #pragma GCC unroll 4
        for (int c = 0; c < DC; c++) x[c] = kv_load(v, (int64_t)j * v_stride + 16 * c, F16);
        #pragma GCC unroll 4
        for (int h = 0; h < HC; h++) {
            const __m512 pj = _mm512_set1_ps(p[h * p_stride + j]);
            #pragma GCC unroll 4
            for (int c = 0; c < DC; c++) acc[h][c] = _mm512_fmadd_ps(pj, x[c], acc[h][c]);
        }
    }
    #pragma GCC unroll 4
    for (int h = 0; h < HC; h++)
        #pragma GCC unroll 4
        for (int c = 0; c < DC; c++) _mm512_storeu_ps(out + h * d + 16 * c, _mm512_mul_ps(acc[h][c], _mm512_set1_ps(inv[h])));
}

// Constant block shapes, so that the accumulators live in registers.
#define SCORES_CASE(H, T, F)                                                                                                                \
    case (F) * 64 + (H) * 8 + (T): scores_block(q, d, kt, tile_stride, scale, s, s_stride, H, T, F); break;
ATTN_TARGET static void scores_dispatch(const float *q, int d, const void *kt, int64_t tile_stride, float scale, float *s, int64_t s_stride,
                                        int hc, int tc, bool f16) {
    switch ((int)f16 * 64 + hc * 8 + tc) {
        SCORES_CASE(1, 1, 0) SCORES_CASE(1, 2, 0) SCORES_CASE(1, 3, 0) SCORES_CASE(1, 4, 0)
        SCORES_CASE(2, 1, 0) SCORES_CASE(2, 2, 0) SCORES_CASE(2, 3, 0) SCORES_CASE(2, 4, 0)
        SCORES_CASE(3, 1, 0) SCORES_CASE(3, 2, 0) SCORES_CASE(3, 3, 0) SCORES_CASE(3, 4, 0)
        SCORES_CASE(1, 1, 1) SCORES_CASE(1, 2, 1) SCORES_CASE(1, 3, 1) SCORES_CASE(1, 4, 1)
        SCORES_CASE(2, 1, 1) SCORES_CASE(2, 2, 1) SCORES_CASE(2, 3, 1) SCORES_CASE(2, 4, 1)
        SCORES_CASE(3, 1, 1) SCORES_CASE(3, 2, 1) SCORES_CASE(3, 3, 1) SCORES_CASE(3, 4, 1)
    default: break;
    }
}
#define VALUES_CASE(H, D, F)                                                                                                                \
    case (F) * 64 + (H) * 8 + (D): values_block(p, p_stride, v, v_stride, n, out, d, inv, H, D, F); break;
ATTN_TARGET static void values_dispatch(const float *p, int64_t p_stride, const void *v, int64_t v_stride, int32_t n, float *out, int d,
                                        const float *inv, int hc, int dc, bool f16) {
    switch ((int)f16 * 64 + hc * 8 + dc) {
        VALUES_CASE(1, 1, 0) VALUES_CASE(1, 2, 0) VALUES_CASE(1, 3, 0) VALUES_CASE(1, 4, 0)
        VALUES_CASE(2, 1, 0) VALUES_CASE(2, 2, 0) VALUES_CASE(2, 3, 0) VALUES_CASE(2, 4, 0)
        VALUES_CASE(3, 1, 0) VALUES_CASE(3, 2, 0) VALUES_CASE(3, 3, 0) VALUES_CASE(3, 4, 0)
        VALUES_CASE(1, 1, 1) VALUES_CASE(1, 2, 1) VALUES_CASE(1, 3, 1) VALUES_CASE(1, 4, 1)
        VALUES_CASE(2, 1, 1) VALUES_CASE(2, 2, 1) VALUES_CASE(2, 3, 1) VALUES_CASE(2, 4, 1)
        VALUES_CASE(3, 1, 1) VALUES_CASE(3, 2, 1) VALUES_CASE(3, 3, 1) VALUES_CASE(3, 4, 1)
    default: break;
    }
}

// s[0..n) <- e^(s - max); returns 1 / sum.  Lane-wise sums in a fixed order for a given n.
ATTN_TARGET static float softmax_exp512(float *s, int32_t n) {
    __m512 vmx = _mm512_set1_ps(-INFINITY);
    int32_t j = 0;
    for (; j + 16 <= n; j += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(s + j));
    const __mmask16 tail = (__mmask16)((1u << (n - j)) - 1);
    if (tail) vmx = _mm512_mask_max_ps(vmx, tail, vmx, _mm512_maskz_loadu_ps(tail, s + j));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmx));
    __m512 vsum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 e = model_exp512(_mm512_sub_ps(_mm512_loadu_ps(s + j), mx));
        _mm512_storeu_ps(s + j, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (tail) {
        const __m512 e = model_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + j), mx));
        _mm512_mask_storeu_ps(s + j, tail, e);
        vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
    }
    return 1.0f / _mm512_reduce_add_ps(vsum);
}

ATTN_TARGET static void attention_rows_avx512(const model_attn_args *a) {
    const int d = a->d;
    const int64_t ss = a->scores_stride, eb = a->f16 ? 2 : 4;
    for (int r = 0; r < a->n_rows; r++) {
        const int32_t n = a->n_keys[r], n_tiles = (n + KV_TILE - 1) / KV_TILE;
        for (int h0 = 0; h0 < a->n_heads; h0 += HMAX) {
            const int hc = AS_MIN(HMAX, a->n_heads - h0);
            const float *q = a->q + (int64_t)r * a->q_stride + (int64_t)h0 * d;
            for (int32_t t = 0; t < n_tiles; t += TMAX)
                scores_dispatch(q, d, (const uint8_t *)a->k + (int64_t)t * a->k_tile_stride * eb, a->k_tile_stride, a->scale,
                                a->scores + (int64_t)t * KV_TILE, ss, hc, AS_MIN(TMAX, n_tiles - t), a->f16);
            float inv[HMAX];
            for (int h = 0; h < hc; h++) inv[h] = softmax_exp512(a->scores + h * ss, n);
            float *out = a->out + (int64_t)r * a->out_stride + (int64_t)h0 * d;
            for (int c = 0; c < d; c += 16 * DMAX)
                values_dispatch(a->scores, ss, (const uint8_t *)a->v + c * eb, a->v_stride, n, out + c, d, inv, hc, AS_MIN(DMAX, (d - c) / 16), a->f16);
        }
    }
}
#endif

bool model_attention_avx512_usable(int d) {
#ifdef ATTN_X86
    return d % 16 == 0 && cpu_get_features()->avx512f;
#else
    (void)d;
    return false;
#endif
}

void model_attention_rows(const model_attn_args *a, bool simd) {
#ifdef ATTN_X86
    if (simd && model_attention_avx512_usable(a->d)) {
        attention_rows_avx512(a);
        return;
    }
#endif
    (void)simd;
    attention_rows_c(a);
}
