// The 16 x 16 transpose of 32-bit elements in AVX-512 registers (packing of
// the bf16 products, gemm.c; the query blocks of the attention, attention_avx512.c).
// x86-64 only.
#ifndef AS_TENSOR_TRANSPOSE_X86_H
#define AS_TENSOR_TRANSPOSE_X86_H

#if defined(__x86_64__)
#include <immintrin.h>

// r[j] (16 dwords each) <- the transpose: r[c][j] = old r[j][c].  32-bit
// unpacks give 4 x 4 blocks within each 128-bit lane, 64-bit unpacks finish
// them, two rounds of lane shuffles put the blocks in place.
__attribute__((target("avx512f"))) static inline void as_transpose16_epi32(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { // u[4g + m], lane L = rows 4g..4g+3 of column 4L + m
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i x0 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44), x1 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xEE);
        const __m512i y0 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44), y1 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xEE);
        r[m] = _mm512_shuffle_i32x4(x0, y0, 0x88);
        r[4 + m] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
        r[8 + m] = _mm512_shuffle_i32x4(x1, y1, 0x88);
        r[12 + m] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
    }
}
#endif

#endif
