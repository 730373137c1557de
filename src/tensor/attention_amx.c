// The AMX-BF16 code of kernel_attention_rows (attention.h: precision bf16,
// head sizes that are multiples of 32, CPUs with AMX-BF16), and the bf16 tiles
// of the cache it reads (kernel_attention_store_bf16_tiles).
//
// The rows x heads query vectors (vector i = row * n_heads + head), rounded
// to bf16, against the keys 0 .. n_max-1 (n_max: the largest n_keys), on
// AMX tiles: scores = Q K^T summed in fp32 over d in one fixed order per
// (vector, key); the softmax in fp32 over the row's own keys (as the other codes);
// the probabilities rounded to bf16 (zero past the row's own keys) times V,
// summed over chunks of 32 keys from key 0, times 1 / sum.  A vector's
// numbers do not depend on the other vectors in its tiles: the chunks past
// its own keys add exact zeros (V is packed with zeros past n_max), so a
// token's attention is bitwise the same in any batch, prefill or decode.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/attention_impl.h"
#include "tensor/bf16_x86.h"
#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/vexp.h"
#include "util/common.h"

#if defined(KERNEL_AMX_EMULATE) // test builds only: the tile instructions in C (tests/tensor/amx_emulate.h)
#include "amx_emulate.h"
#endif

// ---- the cache's bf16 tiles ----

// Zeroes what position p starts: a key tile (p % 16 == 0) and a chunk of
// values (p % KERNEL_KV_CHUNK == 0), per KV head.
static void tiles_clear(as_bf16 *K, as_bf16 *V, size_t ctx_pad, size_t n_head_kv, size_t p, size_t d) {
    const size_t head = ctx_pad * d;
    for (size_t g = 0; g < n_head_kv; g++) {
        if (p % 16 == 0) memset(K + g * head + p / 16 * d * 16, 0, sizeof(as_bf16) * 16 * d);
        if (p % KERNEL_KV_CHUNK == 0)
            for (size_t c = 0; c < d / 16; c++) memset(V + g * head + (c * (ctx_pad / 2) + p / 2) * 32, 0, sizeof(as_bf16) * KERNEL_KV_CHUNK * 16);
    }
}

#if defined(__x86_64__)
// Per 16 dimensions, the key's 8 dimension pairs are scattered one 32-bit
// unit per tile row, the value's 16 go into the even or odd halves of one
// 64-byte row of its panel.  The tiles exist only with AMX (hence AVX-512).
__attribute__((target("avx2,fma,avx512f,avx512vl"))) static void tiles_write(as_bf16 *K, as_bf16 *V, size_t ctx_pad, size_t n_head_kv,
                                                                            size_t p, const float *ki, const float *vi, size_t d) {
    const size_t head = ctx_pad * d, half_ctx = ctx_pad / 2;
    const __m256i rows = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112); // unit rows 16 units apart
    const __m512i keep = _mm512_set1_epi32(p % 2 ? 0x0000ffff : (int)0xffff0000);
    for (size_t g = 0; g < n_head_kv; g++) {
        uint32_t *kh = (uint32_t *)(K + g * head) + p / 16 * (d / 2) * 16 + p % 16;
        as_bf16 *vh = V + g * head;
        for (size_t e = 0; e < d; e += 16) {
            _mm256_i32scatter_epi32(kh + e / 2 * 16, rows, as_bf16x16(_mm512_loadu_ps(ki + g * d + e)), 4);
            __m512i *row = (__m512i *)(vh + (e / 16 * half_ctx + p / 2) * 32);
            const __m512i w = _mm512_cvtepu16_epi32(as_bf16x16(_mm512_loadu_ps(vi + g * d + e)));
            _mm512_store_si512(row, _mm512_or_si512(_mm512_and_si512(_mm512_load_si512(row), keep), p % 2 ? _mm512_slli_epi32(w, 16) : w));
        }
    }
}
#endif

void kernel_attention_store_bf16_tiles(void *k, void *v, int64_t ctx_pad, int n_head_kv, int d, int64_t p, const float *ki,
                                       const float *vi) {
    tiles_clear(k, v, (size_t)ctx_pad, (size_t)n_head_kv, (size_t)p, (size_t)d);
#if defined(__x86_64__)
    tiles_write(k, v, (size_t)ctx_pad, (size_t)n_head_kv, (size_t)p, ki, vi, (size_t)d);
#else
    (void)ki, (void)vi; // no AMX, no tiles
#endif
}

// ---- the attention ----

#if defined(__x86_64__)
#define AMX_ATT_TARGET __attribute__((target("amx-tile,amx-bf16,avx2,fma,f16c,avx512f,avx512bw")))

// The softmax of softmax_exp512 (attention_avx512.c) over the scores s[0..n) times scale, in one
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
    return n ? 1.0f / attn_sum16_512(vsum) : 0.0f;
}

// The calling thread's buffers (kernel_scratch: kept, freed when the thread exits).
static void *att_grow(int slot, size_t bytes) { return kernel_scratch(slot, bytes > 0 ? bytes : 1); }

// Keys of the 16-vector tile at vector i0: the most any of its vectors has (>= 1).
static inline int32_t tile_keys(const kernel_attn_args *a, int i0, int R) {
    int32_t n = 1;
    for (int i = i0; i < AS_MIN(i0 + 16, R); i++) n = AS_MAX(n, a->n_keys[i / a->n_heads]);
    return n;
}

AMX_ATT_TARGET void kernel_attention_rows_amx(const kernel_attn_args *a) {
    const int d = a->d, H = a->n_heads, R = a->n_rows * H, Rp = (R + 15) / 16 * 16, dp2 = d / 2;
    int32_t n_max = 1;
    for (int r = 0; r < a->n_rows; r++) n_max = AS_MAX(n_max, a->n_keys[r]);
    const int32_t n16 = (n_max + 15) / 16 * 16, n32 = (n_max + 31) / 32 * 32;
    uint16_t *Q = att_grow(SCRATCH_ATT_Q, sizeof(uint16_t) * (size_t)Rp * d);
    // Keys [key tile][d/2][16 keys] pairs of dims, values [dim panel][keys/2][16 dims] pairs of keys:
    // the cache's own tiles, or converted here from its fp32 / fp16 layout.
    const uint32_t *K = a->tiled ? a->k : att_grow(SCRATCH_ATT_K, sizeof(uint32_t) * (size_t)n16 * dp2);
    const uint32_t *V = a->tiled ? a->v : att_grow(SCRATCH_ATT_V, sizeof(uint32_t) * (size_t)(n32 / 2) * d);
    const int64_t vp = a->tiled ? a->v_panel : (int64_t)(n32 / 2) * 16; // one dimension panel of V
    uint16_t *P = att_grow(SCRATCH_ATT_P, sizeof(uint16_t) * (size_t)Rp * n32);                  // probabilities (Rp, n32)
    float *S = att_grow(SCRATCH_ATT_S, sizeof(float) * (size_t)Rp * n16);                        // scores (Rp, n16)
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
                                as_bf16x16_pairs(as_bf16x16(attn_kv_load(kt, (int64_t)e * KERNEL_KV_TILE, F16)), as_bf16x16(attn_kv_load(kt, (int64_t)(e + 1) * KERNEL_KV_TILE, F16))));
    }
    // Values: rows j and j+1 interleave, zeros past n_max.
    for (int32_t j = 0; !a->tiled && j < n32; j += 2)
        for (int c = 0; c < d; c += 16) {
            const __m256i lo = j < n_max ? as_bf16x16(attn_kv_load(a->v, (int64_t)j * a->v_stride + c, F16)) : _mm256_setzero_si256();
            const __m256i hi = j + 1 < n_max ? as_bf16x16(attn_kv_load(a->v, (int64_t)(j + 1) * a->v_stride + c, F16)) : _mm256_setzero_si256();
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
    float *inv = att_grow(SCRATCH_ATT_INV, sizeof(float) * (size_t)Rp);
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
