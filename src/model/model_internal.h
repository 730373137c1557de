// Private to src/model: what model.c, forward.c and attention.c share.
#ifndef AS_MODEL_INTERNAL_H
#define AS_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

struct model_scratch;
void model_scratch_free(struct model_scratch *s);

#include "tensor/vexp.h"

// ---- one summation order on every ISA (README: bitwise reproducible) ----
//
// A sum of many terms in the model's own loops (softmax denominators, RMSNorm's
// sum of squares) runs as 16 interleaved partial sums: term j goes to lane
// j % 16, each lane adds its terms in increasing j from +0, and a lane past
// the end of the data simply receives nothing (as a masked lane of the
// vectors).  The 16 lanes are then added by one fixed tree:
//   s8[i] = l[i] + l[i + 8],  s4[i] = s8[i] + s8[i + 4],  s2[i] = s4[i] + s4[i + 2],  sum = s2[0] + s2[1]
// The AVX-512 code holds the 16 lanes in one register, the AVX2 code lanes
// 0-7 and 8-15 in two, the generic C code in an array: the same bits on
// every path.  (A partial sum that starts at +0 never becomes -0, so the
// zero terms of masked tails change nothing.)
static inline float model_sum16(const float l[16]) {
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// model_sum16 of lanes 0-7 (lo) and 8-15 (hi).
__attribute__((target("avx2"))) static inline float model_sum16_256(__m256 lo, __m256 hi) {
    const __m256 s8 = _mm256_add_ps(lo, hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
// model_sum16 of the 16 lanes of v.
__attribute__((target("avx2,avx512f"))) static inline float model_sum16_512(__m512 v) {
    return model_sum16_256(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
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
bool model_attention_avx2_usable(int d);   // ... the AVX2 code (used where the AVX-512 code is not; ISA avx2 or above)
bool model_attention_amx_usable(int d);    // ... and the AMX-BF16 code


// The element-wise layers of the forward pass (forward.c) on the code the
// current kernel ISA allows (kernel_force_isa, ALPHASPIN_KERNEL_ISA): the same
// bits from every code.
//   model_rmsnorm: out = x / sqrt(mean(x^2) + eps) * w (the mean in double,
//     model_sum16's order over 16 double lanes; Gemma's 1 + w is in w already)
//   model_glu: out = act(g) * u, act = SiLU or tanh-GELU, both as
//     x / (1 + e^t) (t = -x, or -2 sqrt(2/pi) (x + 0.044715 x^3)), e^t = as_expf's
void model_rmsnorm(float *out, const float *x, const float *w, int64_t C, float eps);
void model_glu(float *out, const float *g, const float *u, int64_t n, bool gelu);

#endif
