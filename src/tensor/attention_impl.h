// Private to src/tensor (and its tests): the codes behind attention.h and
// what they share.  attention.c holds the generic C code and the dispatch,
// attention_avx512.c, attention_avx2.c and attention_amx.c the others.
#ifndef AS_TENSOR_ATTENTION_IMPL_H
#define AS_TENSOR_ATTENTION_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/attention.h"
#include "tensor/quant.h"

#define ATTN_D_MAX 256 // largest head size of the AVX-512 and AVX2 codes

void kernel_attention_rows_c(const kernel_attn_args *a);
void kernel_attention_rows_avx512(const kernel_attn_args *a);
void kernel_attention_rows_avx2(const kernel_attn_args *a);
void kernel_attention_rows_amx(const kernel_attn_args *a);
// Which code kernel_attention_rows runs for head size d (not bf16): the
// AVX-512 one where kernel_avx512_active, else the AVX2 one where the ISA is
// at least avx2, else the C one; the AMX-BF16 one only for bf16.
bool kernel_attention_avx512_usable(int d);
bool kernel_attention_avx2_usable(int d);
bool kernel_attention_amx_usable(int d);

// ---- one summation order on every ISA (README: bitwise reproducible) ----
//
// The softmax's sum runs as 16 interleaved partial sums: term j goes to lane
// j % 16, each lane adds its terms in increasing j from +0, and a lane past
// the end of the data simply receives nothing (as a masked lane of the
// vectors).  The 16 lanes are then added by one fixed tree:
//   s8[i] = l[i] + l[i + 8],  s4[i] = s8[i] + s8[i + 4],  s2[i] = s4[i] + s4[i + 2],  sum = s2[0] + s2[1]
// The AVX-512 code holds the 16 lanes in one register, the AVX2 code lanes
// 0-7 and 8-15 in two, the generic C code in an array: the same bits on
// every path.  (A partial sum that starts at +0 never becomes -0, so the
// zero terms of masked tails change nothing.)
static inline float attn_sum16(const float l[16]) {
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

#if defined(__x86_64__)
#include <immintrin.h>
// attn_sum16 of lanes 0-7 (lo) and 8-15 (hi).
__attribute__((target("avx2"))) static inline float attn_sum16_256(__m256 lo, __m256 hi) {
    const __m256 s8 = _mm256_add_ps(lo, hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
// attn_sum16 of the 16 lanes of v.
__attribute__((target("avx2,avx512f"))) static inline float attn_sum16_512(__m512 v) {
    return attn_sum16_256(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

#define ATTN_TARGET __attribute__((target("avx2,fma,f16c,avx512f")))
// 16 keys' or values' elements as fp32 (F16: stored as fp16).
ATTN_TARGET static inline __attribute__((always_inline)) __m512 attn_kv_load(const void *p, int64_t i, bool F16) {
    return F16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const as_fp16 *)p + i))) : _mm512_loadu_ps((const float *)p + i);
}
#endif

#endif
