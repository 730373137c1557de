// Causal attention of a few query rows against one KV group of one sequence's
// cache (model_internal.h: model_attention_rows), generic C and AVX-512, and
// AMX-BF16 for KERNEL_PRECISION_BF16 (below).
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
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_internal.h"
#include "tensor/bf16_x86.h"
#include "tensor/gemm.h"
#include "tensor/lanes_x86.h"
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

// Scores of HC heads (q rows d apart) against TC key tiles starting at kt;
// meanwhile the n_pf cache lines at pf[] are prefetched, a few per dimension.
ATTN_TARGET static inline __attribute__((always_inline)) void scores_block(const float *q, int d, const void *kt, int64_t tile_stride,
                                                                           float scale, float *s, int64_t s_stride, int HC, int TC, bool F16,
                                                                           const char *const *pf, int n_pf) {
    const int pf_per_e = (n_pf + d - 1) / d;
    __m512 acc[HMAX][TMAX];
    #pragma GCC unroll 4
    for (int h = 0; h < HC; h++)
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) acc[h][t] = _mm512_setzero_ps();
    for (int e = 0; e < d; e++) {
        for (int i = e * pf_per_e; i < AS_MIN(n_pf, (e + 1) * pf_per_e); i++) _mm_prefetch(pf[i], _MM_HINT_T0);
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
    case (F) * 64 + (H) * 8 + (T): scores_block(q, d, kt, tile_stride, scale, s, s_stride, H, T, F, pf, n_pf); break;
ATTN_TARGET static void scores_dispatch(const float *q, int d, const void *kt, int64_t tile_stride, float scale, float *s, int64_t s_stride,
                                        int hc, int tc, bool f16, const char *const *pf, int n_pf) {
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
    const __mmask16 tail = as_lanes16(n - j);
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

// The softmax of softmax_exp512 over the scores s[0..n) times scale, in one
// pass for the maximum and one for the exponentials: p[0..n32) <- their bf16
// values, zeros past n; returns 1 / sum (n >= 1; n = 0 writes zeros only).
// The operations and their order are the scaling pass, softmax_exp512 and the
// rounding to bf16 done one after another, so the same bits, with s left as it
// was instead of written three times.
ATTN_TARGET static float softmax_bf16(const float *s, int32_t n, float scale, uint16_t *p, int32_t n32) {
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vmx = _mm512_set1_ps(-INFINITY);
    int32_t j = 0;
    for (; j + 16 <= n; j += 16) vmx = _mm512_max_ps(vmx, _mm512_mul_ps(_mm512_loadu_ps(s + j), vs));
    const __mmask16 tail = as_lanes16(n - j);
    if (tail) vmx = _mm512_mask_max_ps(vmx, tail, vmx, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + j), vs));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmx));
    __m512 vsum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 e = model_exp512(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(s + j), vs), mx));
        _mm256_storeu_si256((__m256i *)(p + j), as_bf16x16(e));
        vsum = _mm512_add_ps(vsum, e);
    }
    if (tail) {
        const __m512 e = model_exp512(_mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + j), vs), mx));
        _mm256_storeu_si256((__m256i *)(p + j), as_bf16x16(_mm512_maskz_mov_ps(tail, e)));
        vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
        j += 16;
    }
    for (; j < n32; j += 16) _mm256_storeu_si256((__m256i *)(p + j), _mm256_setzero_si256());
    return n ? 1.0f / _mm512_reduce_add_ps(vsum) : 0.0f;
}

// Lines prefetched while one block of scores is computed: the values of its
// keys (read after the softmax) and the next block's keys.  In batched
// decoding the cache streams from memory (each step reads every sequence's
// whole context) and the values loop waited on it: prefetching took it from
// 9% to 2% of a batch-32 q8 step, the prefetches costing ~1%.
#define ATTN_PF_MAX 512

// The cache lines [p, p + bytes) into pf[*n] onwards, up to ATTN_PF_MAX.
static inline void pf_lines(const char **pf, int *n, const char *p, int64_t bytes) {
    for (int64_t o = 0; o < bytes && *n < ATTN_PF_MAX; o += 64) pf[(*n)++] = p + o;
}

ATTN_TARGET static void attention_rows_avx512(const model_attn_args *a) {
    const int d = a->d;
    const int64_t ss = a->scores_stride, eb = a->f16 ? 2 : 4;
    const char *pf[ATTN_PF_MAX];
    for (int r = 0; r < a->n_rows; r++) {
        const int32_t n = a->n_keys[r], n_tiles = (n + KV_TILE - 1) / KV_TILE;
        for (int h0 = 0; h0 < a->n_heads; h0 += HMAX) {
            const int hc = AS_MIN(HMAX, a->n_heads - h0);
            const float *q = a->q + (int64_t)r * a->q_stride + (int64_t)h0 * d;
            for (int32_t t = 0; t < n_tiles; t += TMAX) {
                int n_pf = 0;
                if (h0 == 0 && r == 0)
                    for (int32_t j = t * KV_TILE; j < AS_MIN(n, (t + TMAX) * KV_TILE); j++)
                        pf_lines(pf, &n_pf, (const char *)a->v + j * a->v_stride * eb, d * eb);
                for (int32_t u = t + TMAX; u < AS_MIN(n_tiles, t + 2 * TMAX); u++)
                    pf_lines(pf, &n_pf, (const char *)a->k + u * a->k_tile_stride * eb, (int64_t)d * KV_TILE * eb);
                scores_dispatch(q, d, (const uint8_t *)a->k + (int64_t)t * a->k_tile_stride * eb, a->k_tile_stride, a->scale,
                                a->scores + (int64_t)t * KV_TILE, ss, hc, AS_MIN(TMAX, n_tiles - t), a->f16, pf, n_pf);
            }
            float inv[HMAX];
            for (int h = 0; h < hc; h++) inv[h] = softmax_exp512(a->scores + h * ss, n);
            float *out = a->out + (int64_t)r * a->out_stride + (int64_t)h0 * d;
            for (int c = 0; c < d; c += 16 * DMAX)
                values_dispatch(a->scores, ss, (const uint8_t *)a->v + c * eb, a->v_stride, n, out + c, d, inv, hc, AS_MIN(DMAX, (d - c) / 16), a->f16);
        }
    }
}

// ---- AMX-BF16 (KERNEL_PRECISION_BF16) ----
//
// The rows x heads query vectors (vector i = row * n_heads + head), rounded
// to bf16, against the keys 0 .. n_max-1 (n_max: the largest n_keys), on
// AMX tiles: scores = Q K^T summed in fp32 over d in one fixed order per
// (vector, key); the softmax in fp32 over the row's own keys (as above);
// the probabilities rounded to bf16 (zero past the row's own keys) times V,
// summed over chunks of 32 keys from key 0, times 1 / sum.  A vector's
// numbers do not depend on the other vectors in its tiles: the chunks past
// its own keys add exact zeros (V is packed with zeros past n_max), so a
// token's attention is bitwise the same in any batch, prefill or decode.
#define AMX_ATT_TARGET __attribute__((target("amx-tile,amx-bf16,avx2,fma,f16c,avx512f,avx512bw")))

typedef struct { void *p; size_t n; } att_buf;
static _Thread_local att_buf ws_q, ws_k, ws_v, ws_p, ws_s, ws_inv;

static void *att_grow(att_buf *b, size_t bytes) {
    if (bytes > b->n) {
        free(b->p);
        b->n = bytes + bytes / 4;
        b->p = as_aligned_alloc(b->n);
    }
    return b->p;
}

// Keys of the 16-vector tile at vector i0: the most any of its vectors has (>= 1).
static inline int32_t tile_keys(const model_attn_args *a, int i0, int R) {
    int32_t n = 1;
    for (int i = i0; i < AS_MIN(i0 + 16, R); i++) n = AS_MAX(n, a->n_keys[i / a->n_heads]);
    return n;
}


AMX_ATT_TARGET static void attention_rows_amx(const model_attn_args *a) {
    const int d = a->d, H = a->n_heads, R = a->n_rows * H, Rp = (R + 15) / 16 * 16, dp2 = d / 2;
    int32_t n_max = 1;
    for (int r = 0; r < a->n_rows; r++) n_max = AS_MAX(n_max, a->n_keys[r]);
    const int32_t n16 = (n_max + 15) / 16 * 16, n32 = (n_max + 31) / 32 * 32;
    uint16_t *Q = att_grow(&ws_q, sizeof(uint16_t) * (size_t)Rp * d);
    // Keys [key tile][d/2][16 keys] pairs of dims, values [dim panel][keys/2][16 dims] pairs of keys:
    // the cache's own tiles, or converted here from its fp32 / fp16 layout.
    const uint32_t *K = a->tiled ? a->k : att_grow(&ws_k, sizeof(uint32_t) * (size_t)n16 * dp2);
    const uint32_t *V = a->tiled ? a->v : att_grow(&ws_v, sizeof(uint32_t) * (size_t)(n32 / 2) * d);
    const int64_t vp = a->tiled ? a->v_panel : (int64_t)(n32 / 2) * 16; // one dimension panel of V
    uint16_t *P = att_grow(&ws_p, sizeof(uint16_t) * (size_t)Rp * n32);                  // probabilities (Rp, n32)
    float *S = att_grow(&ws_s, sizeof(float) * (size_t)Rp * n16);                        // scores (Rp, n16)
    const bool F16 = a->f16;
    const int64_t eb = F16 ? 2 : 4;
    for (int i = 0; i < Rp; i++)
        for (int e = 0; e < d; e += 16)
            _mm256_storeu_si256((__m256i *)(Q + (int64_t)i * d + e),
                                i < R ? as_bf16x16(_mm512_loadu_ps(a->q + (int64_t)(i / H) * a->q_stride + (int64_t)(i % H) * d + e))
                                      : _mm256_setzero_si256());
    // Keys: a tile of 16 positions holds dimension e as 16 consecutive
    // elements, so dimensions e and e+1 interleave into one tile row.
    for (int32_t t = 0; !a->tiled && t < n16 / 16; t++) {
        const uint8_t *kt = (const uint8_t *)a->k + (int64_t)t * a->k_tile_stride * eb;
        for (int e = 0; e < d; e += 2)
            _mm512_storeu_si512((uint32_t *)K + ((int64_t)t * dp2 + e / 2) * 16,
                                as_bf16x16_pairs(as_bf16x16(kv_load(kt, (int64_t)e * KV_TILE, F16)), as_bf16x16(kv_load(kt, (int64_t)(e + 1) * KV_TILE, F16))));
    }
    // Values: rows j and j+1 interleave, zeros past n_max.
    for (int32_t j = 0; !a->tiled && j < n32; j += 2)
        for (int c = 0; c < d; c += 16) {
            const __m256i lo = j < n_max ? as_bf16x16(kv_load(a->v, (int64_t)j * a->v_stride + c, F16)) : _mm256_setzero_si256();
            const __m256i hi = j + 1 < n_max ? as_bf16x16(kv_load(a->v, (int64_t)(j + 1) * a->v_stride + c, F16)) : _mm256_setzero_si256();
            _mm512_storeu_si512((uint32_t *)V + (int64_t)(c / 16) * vp + (int64_t)(j / 2) * 16, as_bf16x16_pairs(lo, hi));
        }
    kernel_amx_bf16_begin();
    // Scores, 16 vectors x 16 keys per tile, keys up to the tile's own last.
    // Head size 64 (SmolLM2, Llama): the two Q tiles stay loaded and key
    // tiles go in pairs; the same products in the same order as the loop below.
    // Prefetching the next pair of key tiles (and below the next chunk of
    // values) into L1: batched bf16 decode, which reads each sequence's cache
    // once per step, +3-7% (alternating runs).
    for (int i0 = 0; i0 < Rp && d == 64; i0 += 16) {
        const int32_t nt = (tile_keys(a, i0, R) + 15) / 16;
        _tile_loadd(4, Q + (int64_t)i0 * d, d * 2);
        _tile_loadd(5, Q + (int64_t)i0 * d + 32, d * 2);
        int32_t t = 0;
        for (; t + 1 < nt; t += 2) {
            const uint32_t *k0 = K + (int64_t)t * dp2 * 16, *k1 = k0 + dp2 * 16;
            for (int l = 0; l < 64; l++) _mm_prefetch((const char *)(k1 + dp2 * 16) + 64 * l, _MM_HINT_T0); // the next pair (4 KB)
            _tile_zero(0);
            _tile_zero(3);
            _tile_loadd(1, k0, 64);
            _tile_loadd(2, k1, 64);
            _tile_dpbf16ps(0, 4, 1);
            _tile_dpbf16ps(3, 4, 2);
            _tile_loadd(6, k0 + 16 * 16, 64);
            _tile_loadd(7, k1 + 16 * 16, 64);
            _tile_dpbf16ps(0, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
            _tile_stored(0, S + (int64_t)i0 * n16 + t * 16, n16 * 4);
            _tile_stored(3, S + (int64_t)i0 * n16 + (t + 1) * 16, n16 * 4);
        }
        if (t < nt) {
            const uint32_t *k0 = K + (int64_t)t * dp2 * 16;
            _tile_zero(0);
            _tile_loadd(1, k0, 64);
            _tile_dpbf16ps(0, 4, 1);
            _tile_loadd(2, k0 + 16 * 16, 64);
            _tile_dpbf16ps(0, 5, 2);
            _tile_stored(0, S + (int64_t)i0 * n16 + t * 16, n16 * 4);
        }
    }
    for (int i0 = 0; i0 < Rp && d != 64; i0 += 16) {
        const int32_t ni = tile_keys(a, i0, R);
        for (int32_t t = 0; t < (ni + 15) / 16; t++) {
            _tile_zero(0);
            for (int e = 0; e < d; e += 32) {
                _tile_loadd(1, Q + (int64_t)i0 * d + e, d * 2);
                _tile_loadd(2, K + ((int64_t)t * dp2 + e / 2) * 16, 64);
                _tile_dpbf16ps(0, 1, 2);
            }
            _tile_stored(0, S + (int64_t)i0 * n16 + t * 16, n16 * 4);
        }
    }
    // Softmax per vector over its own keys; probabilities to bf16.
    float *inv = att_grow(&ws_inv, sizeof(float) * (size_t)Rp);
    for (int i = 0; i < Rp; i++) {
        const int32_t n = i < R ? a->n_keys[i / H] : 0;
        inv[i] = softmax_bf16(S + (int64_t)i * n16, n, a->scale, P + (int64_t)i * n32, n32);
    }
    // Output, 16 vectors x 16 dimensions per tile, chunks of 32 keys.  Head
    // size 64: the four dimension tiles at once, each P tile loaded once.
    float o[4][16 * 16] __attribute__((aligned(64)));
    for (int i0 = 0; i0 < Rp && d == 64; i0 += 16) {
        const int32_t ni = tile_keys(a, i0, R);
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int32_t j = 0; j < ni; j += 32) {
            const uint32_t *vj = V + (int64_t)(j / 2) * 16;
            for (int c = 0; c < 4; c++) // the next chunk of each panel
                for (int l = 0; l < 16; l++) _mm_prefetch((const char *)(vj + 256 + c * vp) + 64 * l, _MM_HINT_T0);
            _tile_loadd(4, P + (int64_t)i0 * n32 + j, n32 * 2);
            _tile_loadd(5, vj, 64);
            _tile_loadd(6, vj + vp, 64);
            _tile_dpbf16ps(0, 4, 5);
            _tile_loadd(7, vj + 2 * vp, 64);
            _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(5, vj + 3 * vp, 64);
            _tile_dpbf16ps(2, 4, 7);
            _tile_dpbf16ps(3, 4, 5);
        }
        _tile_stored(0, o[0], 64);
        _tile_stored(1, o[1], 64);
        _tile_stored(2, o[2], 64);
        _tile_stored(3, o[3], 64);
        for (int i = i0; i < AS_MIN(i0 + 16, R); i++) {
            const __m512 sc = _mm512_set1_ps(inv[i]);
            float *out = a->out + (int64_t)(i / H) * a->out_stride + (int64_t)(i % H) * d;
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(_mm512_load_ps(o[c] + (i - i0) * 16), sc));
        }
    }
    for (int i0 = 0; i0 < Rp && d != 64; i0 += 16) {
        const int32_t ni = tile_keys(a, i0, R);
        for (int c = 0; c < d; c += 16) {
            _tile_zero(0);
            for (int32_t j = 0; j < ni; j += 32) {
                _tile_loadd(1, P + (int64_t)i0 * n32 + j, n32 * 2);
                _tile_loadd(2, V + (int64_t)(c / 16) * vp + (int64_t)(j / 2) * 16, 64);
                _tile_dpbf16ps(0, 1, 2);
            }
            _tile_stored(0, o[0], 64);
            for (int i = i0; i < AS_MIN(i0 + 16, R); i++)
                _mm512_storeu_ps(a->out + (int64_t)(i / H) * a->out_stride + (int64_t)(i % H) * d + c,
                                 _mm512_mul_ps(_mm512_load_ps(o[0] + (i - i0) * 16), _mm512_set1_ps(inv[i])));
        }
    }
    kernel_amx_bf16_end();
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

bool model_attention_amx_usable(int d) {
#ifdef ATTN_X86
    return d % 32 == 0 && kernel_gemm_bf16_amx();
#else
    (void)d;
    return false;
#endif
}

void model_attention_rows(const model_attn_args *a, bool simd) {
#ifdef ATTN_X86
    if (a->bf16) { // the caller checked model_attention_amx_usable, once per pass (it reads the environment)
        attention_rows_amx(a);
        return;
    }
    if (simd && model_attention_avx512_usable(a->d)) {
        attention_rows_avx512(a);
        return;
    }
#endif
    (void)simd;
    attention_rows_c(a);
}
