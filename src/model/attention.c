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
// (grouped-query attention: 3 heads per KV head in the default model), and
// so do up to 4 rows of a call (a prefill's block of positions): 12 query
// vectors per fp16 -> fp32 conversion.  q8 prefill 512 on a 2-core AVX-512
// VM without AMX (BENCHMARKS.md): attention ~22% -> ~17% of the samples.
//
// Every number is computed in an order fixed by its own row and key only:
// score (row, j) = fused multiply-add chain over dimensions 0..d-1 from 0,
// times the scale; softmax over the row's own n keys: m = max, p_j =
// as_exp(s_j - m), sum = the p_j in model_sum16's order (16 interleaved
// partial sums, one fixed tree); output element = fused multiply-add chain
// p_j V_j over keys 0..n-1 from 0, times 1 / sum.  How rows and heads are
// grouped into calls or registers never changes a bit, so a token's attention
// is the same in any batch, in prefill or in decode (the Q8 path's batch
// invariance rests on it), and the generic C, AVX2 and AVX-512 codes give the
// same bits (fmaf where the vectors fuse; vexp.h's one exp).  K and V are fp32
// or fp16 (converted exactly as they load).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_internal.h"
#include "tensor/bf16_x86.h"
#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/transpose_x86.h"
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
                for (int e = 0; e < d; e++) acc = fmaf(q[e], kv_at(a->k, kt + e * KV_TILE, a->f16), acc);
                s[j] = acc * a->scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            float part[16] = {0};
            for (int32_t j = 0; j < n; j++) part[j % 16] += s[j] = as_expf(s[j] - mx);
            const float inv = 1.0f / model_sum16(part);
            for (int e = 0; e < d; e++) {
                float acc = 0.0f;
                for (int32_t j = 0; j < n; j++) acc = fmaf(s[j], kv_at(a->v, (int64_t)j * a->v_stride + e, a->f16), acc);
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

// Register blocks.  A block of query vectors (rows x heads of one call, up to
// GMAX: 4 rows of a 3-head group) shares every loaded key and value vector:
// with one row per block (3 heads) each key vector converted from fp16 fed 3
// multiply-adds, with 4 rows 12.
#define GMAX MODEL_ATTN_SCORE_ROWS // query vectors per block (12)
#define SACC 24                    // scores accumulators: vectors x key tiles
#define VG 6                       // vectors per values register block
#define DMAX 4                     // 16-float output vectors per values register block
#define ATTN_D_MAX 256             // largest head size of the AVX-512 code

// Key tiles per scores register block of G vectors.
#define SCORES_TILES(G) ((G) <= SACC / 4 ? 4 : SACC / GMAX)

// Scores of G query vectors against TC key tiles starting at kt: vector g's
// element e is qT[e * 16 + g] (the block's queries transposed, so that one
// pointer walks them), its scores go to s + g * s_stride.  Meanwhile the
// n_pf cache lines at pf[] are prefetched, a few per dimension.
ATTN_TARGET static inline __attribute__((always_inline)) void scores_block(const float *qT, int d, const void *kt, int64_t tile_stride,
                                                                           float scale, float *s, int64_t s_stride, int G, int TC, bool F16,
                                                                           const char *const *pf, int n_pf) {
    const int pf_per_e = (n_pf + d - 1) / d;
    __m512 acc[GMAX][4];
    #pragma GCC unroll 12
    for (int g = 0; g < G; g++)
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) acc[g][t] = _mm512_setzero_ps();
    for (int e = 0; e < d; e++) {
        for (int i = e * pf_per_e; i < AS_MIN(n_pf, (e + 1) * pf_per_e); i++) _mm_prefetch(pf[i], _MM_HINT_T0);
        __m512 k[4];
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) k[t] = kv_load(kt, t * tile_stride + e * KV_TILE, F16);
        #pragma GCC unroll 12
        for (int g = 0; g < G; g++) {
            const __m512 qe = _mm512_set1_ps(qT[e * 16 + g]);
            #pragma GCC unroll 4
            for (int t = 0; t < TC; t++) acc[g][t] = _mm512_fmadd_ps(qe, k[t], acc[g][t]);
        }
    }
    const __m512 vs = _mm512_set1_ps(scale);
    #pragma GCC unroll 12
    for (int g = 0; g < G; g++)
        #pragma GCC unroll 4
        for (int t = 0; t < TC; t++) _mm512_storeu_ps(s + g * s_stride + t * KV_TILE, _mm512_mul_ps(acc[g][t], vs));
}

// out[g][0 .. 16 DC) = inv[g] sum_{j < n[g]} p[g][j] V[j][0 .. 16 DC) for GC
// vectors (p[g] at p + g * p_stride): the keys all of them have together,
// then each vector's own further keys, continuing its sums in key order.
ATTN_TARGET static inline __attribute__((always_inline)) void values_block(const float *p, int64_t p_stride, const void *v, int64_t v_stride,
                                                                           const int32_t *n, float *const *out, const float *inv, int GC,
                                                                           int DC, bool F16) {
    __m512 acc[VG][DMAX];
    int32_t n_min = n[0];
    #pragma GCC unroll 6
    for (int g = 0; g < GC; g++) {
        n_min = AS_MIN(n_min, n[g]);
        #pragma GCC unroll 4
        for (int c = 0; c < DC; c++) acc[g][c] = _mm512_setzero_ps();
    }
    for (int32_t j = 0; j < n_min; j++) {
        __m512 x[DMAX];
        #pragma GCC unroll 4
        for (int c = 0; c < DC; c++) x[c] = kv_load(v, (int64_t)j * v_stride + 16 * c, F16);
        #pragma GCC unroll 6
        for (int g = 0; g < GC; g++) {
            const __m512 pj = _mm512_set1_ps(p[g * p_stride + j]);
            #pragma GCC unroll 4
            for (int c = 0; c < DC; c++) acc[g][c] = _mm512_fmadd_ps(pj, x[c], acc[g][c]);
        }
    }
    #pragma GCC unroll 6
    for (int g = 0; g < GC; g++) {
        for (int32_t j = n_min; j < n[g]; j++) {
            const __m512 pj = _mm512_set1_ps(p[g * p_stride + j]);
            #pragma GCC unroll 4
            for (int c = 0; c < DC; c++) acc[g][c] = _mm512_fmadd_ps(pj, kv_load(v, (int64_t)j * v_stride + 16 * c, F16), acc[g][c]);
        }
        #pragma GCC unroll 4
        for (int c = 0; c < DC; c++) _mm512_storeu_ps(out[g] + 16 * c, _mm512_mul_ps(acc[g][c], _mm512_set1_ps(inv[g])));
    }
}

// Constant block shapes, so that the accumulators live in registers: TC the
// full SCORES_TILES(G) or 1 (the last tiles), DC 4 or 1 (head sizes that are
// not multiples of 64).
#define SCORES_CASE(G, F)                                                                                                                   \
    case (F) * 32 + (G):                                                                                                                    \
        if (tc == SCORES_TILES(G))                                                                                                          \
            scores_block(qT, d, kt, tile_stride, scale, s, s_stride, G, SCORES_TILES(G), F, pf, n_pf);                                     \
        else                                                                                                                                \
            for (int t_ = 0; t_ < tc; t_++)                                                                                                 \
                scores_block(qT, d, (const uint8_t *)kt + t_ * tile_stride * (F ? 2 : 4), tile_stride, scale, s + t_ * KV_TILE, s_stride, \
                             G, 1, F, pf, t_ ? 0 : n_pf);                                                                                   \
        break;
#define SCORES_CASES(F)                                                                                                                     \
    SCORES_CASE(1, F) SCORES_CASE(2, F) SCORES_CASE(3, F) SCORES_CASE(4, F) SCORES_CASE(5, F) SCORES_CASE(6, F)                             \
    SCORES_CASE(7, F) SCORES_CASE(8, F) SCORES_CASE(9, F) SCORES_CASE(10, F) SCORES_CASE(11, F) SCORES_CASE(12, F)
ATTN_TARGET static void scores_dispatch(const float *qT, int d, const void *kt, int64_t tile_stride, float scale, float *s, int64_t s_stride,
                                        int G, int tc, bool f16, const char *const *pf, int n_pf) {
    switch ((int)f16 * 32 + G) {
        SCORES_CASES(0)
        SCORES_CASES(1)
    default: break;
    }
}
#define VALUES_CASE(G, F)                                                                                                                   \
    case (F) * 32 + (G):                                                                                                                    \
        if (dc == DMAX)                                                                                                                     \
            values_block(p, p_stride, v, v_stride, n, out, inv, G, DMAX, F);                                                               \
        else                                                                                                                                \
            for (int c_ = 0; c_ < dc; c_++) {                                                                                               \
                float *o_[VG];                                                                                                              \
                for (int g_ = 0; g_ < G; g_++) o_[g_] = out[g_] + 16 * c_;                                                                  \
                values_block(p, p_stride, (const uint8_t *)v + 16 * c_ * (F ? 2 : 4), v_stride, n, o_, inv, G, 1, F);                      \
            }                                                                                                                               \
        break;
ATTN_TARGET static void values_dispatch(const float *p, int64_t p_stride, const void *v, int64_t v_stride, const int32_t *n,
                                        float *const *out, const float *inv, int G, int dc, bool f16) {
    switch ((int)f16 * 32 + G) {
        VALUES_CASE(1, 0) VALUES_CASE(2, 0) VALUES_CASE(3, 0) VALUES_CASE(4, 0) VALUES_CASE(5, 0) VALUES_CASE(6, 0)
        VALUES_CASE(1, 1) VALUES_CASE(2, 1) VALUES_CASE(3, 1) VALUES_CASE(4, 1) VALUES_CASE(5, 1) VALUES_CASE(6, 1)
    default: break;
    }
}

// s[0..n) <- e^(s - max); returns 1 / sum (model_sum16's order: p_j in lane j % 16).
ATTN_TARGET static float softmax_exp512(float *s, int32_t n) {
    __m512 vmx = _mm512_set1_ps(-INFINITY);
    int32_t j = 0;
    for (; j + 16 <= n; j += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(s + j));
    const __mmask16 tail = as_lanes16(n - j);
    if (tail) vmx = _mm512_mask_max_ps(vmx, tail, vmx, _mm512_maskz_loadu_ps(tail, s + j));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmx));
    __m512 vsum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 e = as_exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), mx));
        _mm512_storeu_ps(s + j, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (tail) {
        const __m512 e = as_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + j), mx));
        _mm512_mask_storeu_ps(s + j, tail, e);
        vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
    }
    return 1.0f / model_sum16_512(vsum);
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
        const __m512 e = as_exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(s + j), vs), mx));
        _mm256_storeu_si256((__m256i *)(p + j), as_bf16x16(e));
        vsum = _mm512_add_ps(vsum, e);
    }
    if (tail) {
        const __m512 e = as_exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + j), vs), mx));
        _mm256_storeu_si256((__m256i *)(p + j), as_bf16x16(_mm512_maskz_mov_ps(tail, e)));
        vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
        j += 16;
    }
    for (; j < n32; j += 16) _mm256_storeu_si256((__m256i *)(p + j), _mm256_setzero_si256());
    return n ? 1.0f / model_sum16_512(vsum) : 0.0f;
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
    const int d = a->d, H = a->n_heads, hb = AS_MIN(H, GMAX), rb = GMAX / hb;
    const int64_t ss = a->scores_stride, eb = a->f16 ? 2 : 4;
    const char *pf[ATTN_PF_MAX];
    _Alignas(64) float qT[16 * ATTN_D_MAX];
    for (int r0 = 0; r0 < a->n_rows; r0 += rb) {
        const int rc = AS_MIN(rb, a->n_rows - r0);
        for (int h0 = 0; h0 < H; h0 += hb) {
            // The block: vector g = row r0 + g / hc, head h0 + g % hc.
            const int hc = AS_MIN(hb, H - h0), G = rc * hc, TC = SCORES_TILES(G);
            int32_t n[GMAX], n_max = 0;
            float *out[GMAX], inv[GMAX];
            for (int g = 0; g < G; g++) {
                const int r = r0 + g / hc, h = h0 + g % hc;
                n[g] = a->n_keys[r];
                n_max = AS_MAX(n_max, n[g]);
                out[g] = a->out + (int64_t)r * a->out_stride + (int64_t)h * d;
            }
            // qT: the block's vectors transposed, 16 dimensions at a time (lanes past G unused).
            for (int e0 = 0; e0 < d; e0 += 16) {
                __m512i z[16];
                for (int g = 0; g < 16; g++) {
                    const int gg = AS_MIN(g, G - 1), r = r0 + gg / hc, h = h0 + gg % hc;
                    z[g] = _mm512_castps_si512(_mm512_loadu_ps(a->q + (int64_t)r * a->q_stride + (int64_t)h * d + e0));
                }
                as_transpose16_epi32(z);
                for (int i = 0; i < 16; i++) _mm512_store_si512(qT + (e0 + i) * 16, z[i]);
            }
            const int32_t n_tiles = (n_max + KV_TILE - 1) / KV_TILE;
            for (int32_t t = 0; t < n_tiles; t += TC) {
                int n_pf = 0;
                if (h0 == 0 && r0 == 0)
                    for (int32_t j = t * KV_TILE; j < AS_MIN(n_max, (t + TC) * KV_TILE); j++)
                        pf_lines(pf, &n_pf, (const char *)a->v + j * a->v_stride * eb, d * eb);
                for (int32_t u = t + TC; u < AS_MIN(n_tiles, t + 2 * TC); u++)
                    pf_lines(pf, &n_pf, (const char *)a->k + u * a->k_tile_stride * eb, (int64_t)d * KV_TILE * eb);
                scores_dispatch(qT, d, (const uint8_t *)a->k + (int64_t)t * a->k_tile_stride * eb, a->k_tile_stride, a->scale,
                                a->scores + (int64_t)t * KV_TILE, ss, G, AS_MIN(TC, n_tiles - t), a->f16, pf, n_pf);
            }
            for (int g = 0; g < G; g++) inv[g] = softmax_exp512(a->scores + g * ss, n[g]);
            for (int g0 = 0; g0 < G; g0 += VG)
                for (int c = 0; c < d; c += 16 * DMAX) {
                    float *o[VG];
                    for (int g = g0; g < AS_MIN(G, g0 + VG); g++) o[g - g0] = out[g] + c;
                    values_dispatch(a->scores + g0 * ss, ss, (const uint8_t *)a->v + c * eb, a->v_stride, n + g0, o, inv + g0,
                                    AS_MIN(VG, G - g0), AS_MIN(DMAX, (d - c) / 16), a->f16);
                }
        }
    }
}

// ---- AVX2 (CPUs without AVX-512) ----
//
// The AVX-512 code's scheme on 8-lane vectors: a key tile's 16 scores are two
// registers, blocks of up to G2MAX query vectors share every loaded key, and
// the values go 16 dimensions at a time for up to VG2 vectors.  Every number
// in the same order as above (scores: multiply-add chain over dimensions from
// 0, times the scale; the softmax's sum in 16 lanes, two registers; outputs:
// chain over keys from 0, times 1 / sum), so the same bits as the AVX-512
// code.  Without it an AVX2 CPU ran the generic C loops: q8
// prefill of 512 tokens at 73 tok/s instead of ~1000 (dev VM, capped to AVX2).
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
        const __m256 k0 = kv_load8(kt, (int64_t)e * KV_TILE, F16), k1 = kv_load8(kt, (int64_t)e * KV_TILE + 8, F16);
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
            scores2_tile(qT, d, (const uint8_t *)k + t * tile_bytes, scale, s + t * KV_TILE, ss, G, F16); \
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
    return 1.0f / model_sum16_256(lo, hi);
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

ATTN2_TARGET static void attention_rows_avx2(const model_attn_args *a) {
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
            scores2(qT, d, a->k, a->k_tile_stride * eb, (n_max + KV_TILE - 1) / KV_TILE, a->scale, a->scores, ss, G, a->f16);
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
    return d % 16 == 0 && d <= ATTN_D_MAX && kernel_avx512_active();
#else
    (void)d;
    return false;
#endif
}

bool model_attention_avx2_usable(int d) {
#ifdef ATTN_X86
    return d % 16 == 0 && d <= ATTN_D_MAX && kernel_current_isa() >= KERNEL_ISA_AVX2; // (the ISA implies AVX2, FMA, F16C)
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
    if (simd && model_attention_avx2_usable(a->d)) {
        attention_rows_avx2(a);
        return;
    }
#endif
    (void)simd;
    attention_rows_c(a);
}
