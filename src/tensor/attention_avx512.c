// The AVX-512 code of kernel_attention_rows (attention.h), for head sizes that
// are multiples of 16 up to ATTN_D_MAX.
//
// Keys are stored in tiles of 16 positions, transposed: dimension e of the 16
// keys of a tile is one run of 16 floats (KERNEL_KV_TILE), so the scores of
// one query against 16 keys are 16 lanes of one register, built by d fused
// multiply-adds of broadcast query elements -- no horizontal sums.  Values stay
// one row per position; a row of output is the sum over keys of p_j V_j, again
// 16 lanes at a time.  Heads of one group share every loaded K/V vector
// (grouped-query attention: 3 heads per KV head in the default model), and
// so do up to 4 rows of a call (a prefill's block of positions): 12 query
// vectors per fp16 -> fp32 conversion.  q8 prefill 512 on a 2-core AVX-512
// VM without AMX (BENCHMARKS.md): attention ~22% -> ~17% of the samples.
// The order of every sum is attention.h's (attention.c's C code spells it out).
#include <math.h>

#include "tensor/attention_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/transpose_x86.h"
#include "tensor/vexp.h"
#include "util/common.h"

#if defined(__x86_64__)
// Register blocks.  A block of query vectors (rows x heads of one call, up to
// GMAX: 4 rows of a 3-head group) shares every loaded key and value vector:
// with one row per block (3 heads) each key vector converted from fp16 fed 3
// multiply-adds, with 4 rows 12.
#define GMAX KERNEL_ATTN_SCORE_ROWS // query vectors per block (12)
#define SACC 24                    // scores accumulators: vectors x key tiles
#define VG 6                       // vectors per values register block
#define DMAX 4                     // 16-float output vectors per values register block

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
        for (int t = 0; t < TC; t++) k[t] = attn_kv_load(kt, t * tile_stride + e * KERNEL_KV_TILE, F16);
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
        for (int t = 0; t < TC; t++) _mm512_storeu_ps(s + g * s_stride + t * KERNEL_KV_TILE, _mm512_mul_ps(acc[g][t], vs));
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
        for (int c = 0; c < DC; c++) x[c] = attn_kv_load(v, (int64_t)j * v_stride + 16 * c, F16);
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
            for (int c = 0; c < DC; c++) acc[g][c] = _mm512_fmadd_ps(pj, attn_kv_load(v, (int64_t)j * v_stride + 16 * c, F16), acc[g][c]);
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
                scores_block(qT, d, (const uint8_t *)kt + t_ * tile_stride * (F ? 2 : 4), tile_stride, scale, s + t_ * KERNEL_KV_TILE, s_stride, \
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

// s[0..n) <- e^(s - max); returns 1 / sum (attn_sum16's order: p_j in lane j % 16).
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
    return 1.0f / attn_sum16_512(vsum);
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

ATTN_TARGET void kernel_attention_rows_avx512(const kernel_attn_args *a) {
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
            const int32_t n_tiles = (n_max + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE;
            for (int32_t t = 0; t < n_tiles; t += TC) {
                int n_pf = 0;
                if (h0 == 0 && r0 == 0)
                    for (int32_t j = t * KERNEL_KV_TILE; j < AS_MIN(n_max, (t + TC) * KERNEL_KV_TILE); j++)
                        pf_lines(pf, &n_pf, (const char *)a->v + j * a->v_stride * eb, d * eb);
                for (int32_t u = t + TC; u < AS_MIN(n_tiles, t + 2 * TC); u++)
                    pf_lines(pf, &n_pf, (const char *)a->k + u * a->k_tile_stride * eb, (int64_t)d * KERNEL_KV_TILE * eb);
                scores_dispatch(qT, d, (const uint8_t *)a->k + (int64_t)t * a->k_tile_stride * eb, a->k_tile_stride, a->scale,
                                a->scores + (int64_t)t * KERNEL_KV_TILE, ss, G, AS_MIN(TC, n_tiles - t), a->f16, pf, n_pf);
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
#endif
