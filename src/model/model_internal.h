// Private to src/model: what model.c, forward.c and attention.c share.
#ifndef AS_MODEL_INTERNAL_H
#define AS_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

struct model_scratch;
void model_scratch_free(struct model_scratch *s);

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// e^x, 16 lanes: 2^n e^r with n = round(x / ln 2), r = x - n ln 2 (ln 2 split
// in two for exactness) in [-ln2/2, ln2/2], e^r from Cephes' degree-6 expf
// polynomial (~1 ulp); x clamped to [-87, 88] so 2^n stays a normal float: in
// softmax (x <= 0 after the max is subtracted) e^-87 ~ 1e-38 is nothing next
// to the maximum's e^0 = 1; in SiLU/GELU the clamp only touches terms that are
// already 0 or 1 to float precision.
// model_exp256 is the same on 8 lanes (2^n built from the exponent bits
// instead of scalef), so the same bits.
__attribute__((target("avx2,fma"))) static inline __m256 model_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f)); // 1 + r + r^2 P(r)
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
__attribute__((target("avx2,fma,avx512f"))) static inline __m512 model_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f)); // 1 + r + r^2 P(r)
    return _mm512_scalef_ps(p, n);
}
#endif

// Causal attention of n_rows query rows of one sequence, each with n_heads
// heads (of one KV group: they share K and V), against that sequence's cache
// of one layer and KV head (attention.c).
//   q[r * q_stride + h * d + e]                 query of row r, head h
//   k[(j / KV_TILE) * k_tile_stride + e * KV_TILE + j % KV_TILE]   key j (tile layout, model.h)
//   v[j * v_stride + e]                         value j
// (k and v elements fp32, or fp16 when f16; strides in elements), or, when
// tiled (the BF16 cache on AMX, model.h), k and v point at the KV head's bf16
// tiles in the cache and v_panel is the distance between its V panels (in
// pairs of bf16).
//   out[r * out_stride + h * d + e] = sum_j softmax_j(scale q.k_j) v_j[e], j < n_keys[r]
// scores: scratch of MODEL_ATTN_SCORE_ROWS rows of scores_stride floats, scores_stride >= n_keys
// rounded up to a whole tile.  Each output depends only on its own row's
// query, keys and values, in a fixed order (bitwise the same whatever rows or
// heads share a call).  simd = false: the generic C code.
typedef struct model_attn_args {
    const float *q;
    int64_t q_stride;
    int n_heads, d, n_rows;
    const int32_t *n_keys;
    const void *k;
    int64_t k_tile_stride;
    const void *v;
    int64_t v_stride;
    bool f16;
    bool bf16; // KERNEL_PRECISION_BF16 on AMX-BF16 tiles: set only where model_attention_amx_usable(d)
    bool tiled; // k, v: the cache's bf16 tiles (requires bf16 and the AMX code)
    int64_t v_panel;
    float scale;
    float *out;
    int64_t out_stride;
    float *scores;
    int64_t scores_stride;
} model_attn_args;
#define MODEL_ATTN_SCORE_ROWS 12
void model_attention_rows(const model_attn_args *a, bool simd);
bool model_attention_avx512_usable(int d); // this CPU and head size can take the AVX-512 code (kernel_avx512_active)
bool model_attention_avx2_usable(int d);   // ... the AVX2 code (used where the AVX-512 code is not)
bool model_attention_amx_usable(int d);    // ... and the AMX-BF16 code

#endif
