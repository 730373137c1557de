// Rotary position embedding (rope.h): a scalar loop and AVX-512 lanes with
// the same operations.
#include "tensor/rope.h"

#include "tensor/kernels_impl.h"
#include "util/common.h"

static void rope_c(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign, int from) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (int64_t)h * d;
        for (int i = from; i < half; i++) {
            const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            const float x0 = x[i0], x1 = x[i1], c = cs[i], s = sign * sn[i];
            // Products rounded before the sum (no contraction), as in the lanes below.
            const float a = x0 * c, b = x1 * s, e = x0 * s, f = x1 * c;
            x[i0] = a - b;
            x[i1] = e + f;
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

// 16 pairs (or 8 interleaved pairs) per step; returns the first pair index left to rope_c.
AVX512 static int rope_avx512(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    const int half = n_rot / 2;
    const __m512 vsign = _mm512_set1_ps(sign);
    if (neox) {
        const int n16 = half / 16 * 16;
        for (int h = 0; h < n_heads; h++) {
            float *x = v + (int64_t)h * d;
            for (int i = 0; i < n16; i += 16) {
                const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + half);
                const __m512 c = _mm512_loadu_ps(cs + i), s = _mm512_mul_ps(vsign, _mm512_loadu_ps(sn + i));
                _mm512_storeu_ps(x + i, _mm512_sub_ps(_mm512_mul_ps(x0, c), _mm512_mul_ps(x1, s)));
                _mm512_storeu_ps(x + i + half, _mm512_add_ps(_mm512_mul_ps(x0, s), _mm512_mul_ps(x1, c)));
            }
        }
        return n16;
    }
    // Interleaved: lanes (2j, 2j+1) hold pair j; c and s duplicated into both lanes,
    // the pair swapped for the cross terms, the even lanes subtract, the odd ones add.
    const int n8 = half / 8 * 8;
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (int i = 0; i < n8; i += 8) {
        const __m512 c = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(cs + i)));
        const __m512 s = _mm512_mul_ps(vsign, _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(sn + i))));
        for (int h = 0; h < n_heads; h++) {
            float *x = v + (int64_t)h * d + 2 * i;
            const __m512 xv = _mm512_loadu_ps(x), xs = _mm512_permute_ps(xv, 0xB1); // (x1, x0) in each pair
            const __m512 own = _mm512_mul_ps(xv, c), cross = _mm512_mul_ps(xs, s);
            // even lane: x0 c - x1 s; odd lane: x0 s + x1 c = cross + own
            const __m512 sub = _mm512_sub_ps(own, cross), add = _mm512_add_ps(cross, own);
            _mm512_storeu_ps(x, _mm512_mask_blend_ps((__mmask16)0xAAAA, sub, add));
        }
    }
    return n8;
}
#endif

void kernel_rope(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    int from = 0;
#if defined(__x86_64__)
    if (kernel_current_isa() >= KERNEL_ISA_AVX512) from = rope_avx512(v, n_heads, d, n_rot, neox, cs, sn, sign);
#endif
    rope_c(v, n_heads, d, n_rot, neox, cs, sn, sign, from);
}
