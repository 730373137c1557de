// fp32 -> bf16 on AVX-512 registers, shared by the bf16 products (gemm.c) and
// the AMX attention of the BF16 precision (attention_amx.c).  x86-64 only;
// callers compile these into functions with target("avx512f") or wider.
#ifndef AS_TENSOR_BF16_X86_H
#define AS_TENSOR_BF16_X86_H

#if defined(__x86_64__)
#include <immintrin.h>

// 16 floats -> 16 bf16, rounded to nearest even (as_f32_to_bf16 for finite
// values; software rounding, so denormals are kept, unlike VCVTNEPS2BF16).
__attribute__((target("avx512f"), always_inline)) static inline __m256i as_bf16x16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    return _mm512_cvtepi32_epi16(r);
}

// 16 units of two bf16 (the pair layout TDPBF16PS reads): unit i = (lo[i], hi[i]).
__attribute__((target("avx512f"), always_inline)) static inline __m512i as_bf16x16_pairs(__m256i lo, __m256i hi) {
    return _mm512_or_si512(_mm512_cvtepu16_epi32(lo), _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
}
#endif

#endif
