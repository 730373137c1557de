// AMX (Advanced Matrix Extensions) Q8 matmul for Q4_0 / Q4_1 / Q8_0 weights
// and many tokens (prefill, batched decode): kernel_ops_amx.matmul_q8; and
// the same kernel with its float part on AVX-512 VNNI (below).
//
// Integer part: one TDPBSUD per 32-value block multiplies 16 tokens' signed
// 8-bit activations (A: 16 rows x 32 bytes) by a tile of 16 weight rows'
// unsigned codes (B: 8 rows x 64 bytes, VNNI layout: 4 consecutive codes of
// a row per 32-bit element) into a 16 x 16 int32 tile C of exact block sums
// P[token][row].  K = 32 per instruction (one block) keeps every block's sum
// separate, so the per-block fp32 scales apply exactly as in the AVX-512
// VNNI kernel.  Weights are the same unsigned codes that kernel uses: Q4
// nibbles 0..15 (Q4_0's -8 and Q4_1's minimum go to the m_w term) and Q8_0
// codes + 128 (removed by m_w = -128 d_w).
//
// Float part: exactly the VNNI kernel's operations in its order (see
// kernels_avx512.c), vectorised over 16 weight rows: for block i at position
// b = i % 4, acc_b = fma(float(P_i), d_w * d_a, acc_b), accm_b = fma(m_w,
// s_a, accm_b), out = ((acc_0 + acc_2) + (acc_1 + acc_3)) + ((accm_0 +
// accm_2) + (accm_1 + accm_3)).  Integer sums are exact in both kernels, so
// every output is bitwise the VNNI kernel's: a token's result does not
// depend on the batch size or on which kernel ran (tested).  A C row is one
// token's 16 outputs, stored as one 64-byte vector.
//
// Weights are unpacked on the fly, once per 16-row tile and chunk of up to
// 128 tokens, into a per-thread scratch (16 rows x 32 bytes per block plus
// fp32 scales, <= 30 KB for 1536 columns) that stays in L1/L2 while the
// chunk's token tiles pass -- unless the caller made a packed copy of the
// matrix once (kernel_pack; the model does so on its first Q8 pass of many
// tokens): Q8_0 tiles as bytes that the tiles load directly (1.25 bytes per
// weight), Q4 tiles as nibbles with fp16 scales (0.625 bytes per weight, half
// of a byte copy) that a few vector operations per block expand into L1.  At 32
// tokens the GGUF unpacking is about a third of the time (best of 200 calls,
// one core, cache-hot, 1536x576: 284 -> 408 GFLOP/s with a byte copy;
// 576x1536 271 -> 371; the 49152x576 Q8_0 output 195 -> 244; at 512 tokens
// 279 -> 292).  On weights streamed from memory, as in decoding (100 copies
// of 1536x576, 32 tokens; range of the best of 5-6 runs on a busy machine):
// byte copy 146-221, byte copy with prefetching 181-304, nibbles 306-335.  Measured with
// perf at 32 tokens (two token tiles per unpack): unpacking took 29% of the
// time when done row by row through a staging buffer, and the vectorised
// version below made the kernel 1.2x faster; at 128 tokens it is amortised
// over 8 token tiles.  One core, ffn_gate shape (1536 x 576 Q4_1): 220
// GFLOP/s at 16 tokens, 300 at 32, 400 at 128 (AVX-512 VNNI: ~70-85).
//
// The same work items also run without tiles, for the "avx512" ISA
// (kernel_matmul_q8_vnni: CPUs with AVX-512 VNNI but no AMX): the B-tile
// layout is VNNI's row-interleaved one (lane r of tile row i holds codes
// 4i..4i+3 of weight row r), so per block 8 VPDPBUSD with broadcast 4-byte
// activation groups give one token's 16 exact block sums -- a C row -- and
// the float steps are amx_scale_block's (vnni_tile_dot): the same bits
// again.  On the Emerald Rapids VM of BENCHMARKS.md, capped to that ISA
// (ALPHASPIN_KERNEL_ISA=avx512), it made batch-32 q8 decoding 330-370 ->
// 760-810 tok/s and q8 prefill 512 290-360 -> 790-1080 against the row
// kernel; with AMX the tiles stay faster (one core, 32 tokens: 205-263
// GFLOP/s on VNNI against 228-288 on tiles).
//
// Linux hands a process the 8 KB tile register state only after it asks
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); without that, tile
// instructions raise SIGILL.  kernel_amx_permitted asks once; the ISA is
// offered only if the request succeeded.  Each OpenMP thread loads its own
// tile configuration (LDTILECFG) and releases the tiles (TILERELEASE) when
// its share is done.
#define _GNU_SOURCE // syscall()
#if !defined(__clang__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")
#endif
#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/steal.h"
#include "util/common.h"

#if defined(KERNEL_AMX_EMULATE) // test builds only: the tile instructions in C (tests/tensor/amx_emulate.h)
#include "amx_emulate.h"
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8"))), apply_to = function)
#endif

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static bool amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_request(void) {
    // cpu_features.amx_int8 already requires AMX-TILE and XCR0 bits 17-18.
    if (!cpu_get_features()->amx_int8) return;
#if defined(__linux__) && defined(SYS_arch_prctl)
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    unsigned long granted = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &granted) != 0) return;
    amx_ok = (granted >> XFEATURE_XTILEDATA) & 1;
#endif
}

bool kernel_amx_permitted(void) {
    pthread_once(&amx_once, amx_request);
    return amx_ok;
}

// Palette 1 tile configuration (the 64-byte LDTILECFG operand).
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) amx_tilecfg;

// Tiles 0 and 3: C (16 tokens x 16 int32); 1 and 4: A (16 tokens x 32
// bytes); 2 and 5: B (8 rows x 64 bytes = 32 codes x 16 weight rows).  Two
// sets, so that two blocks' products are in flight while the previous ones'
// sums are scaled.  A static table, as gemm.c's: GCC's LDTILECFG builtin
// says it reads only 8 bytes of its operand, so stores to a local one could
// be dropped as dead (GCC 12 -O2 happened to keep them).
static const amx_tilecfg amx_cfg = {.palette_id = 1,
                                    .colsb = {64, 32, 64, 64, 32, 64},
                                    .rows = {16, 16, 8, 16, 16, 8}};

static void amx_config(void) { _tile_loadconfig(&amx_cfg); }

#define AMX_ROWS 16
#define AMX_TOKENS 16
#define AMX_TOKEN_CHUNK 128 // tokens per work item (8 token tiles)
// The VNNI path's: a row tile is unpacked into L1 once per item, so up to 512
// tokens share one unpacking (each thread then streams only its own row
// tiles, once per prefill of 512; a chunk's activations, <= 1 MB at 1536
// columns, stay in L2).  q8 prefill 512 on the AVX-512 VM
// without AMX (BENCHMARKS.md), 8 alternating pairs each: 128 -> 256 tokens
// median 1411 -> 1466 tok/s (6 faster), 256 -> 512 1361 -> 1434 (6 faster).
#define VNNI_TOKEN_CHUNK 512
#define AMX_PF_TILES 8       // packed row tiles prefetched ahead

// One block of 16 tokens' activations: A tile (token n's 32 codes in row n)
// and the tokens' scales d_a and s_a = d_a sum(q).
typedef struct {
    int8_t q[AMX_TOKENS][32];
    float d[AMX_TOKENS], s[AMX_TOKENS];
} amx_act_block;

// One block of 16 weight rows: B tile (code 4i + j of row r at q[i][4r + j])
// and the rows' scales.
typedef struct {
    uint8_t q[8][64];
    float d[AMX_ROWS], m[AMX_ROWS];
} amx_weight_block;

// Packed form of a Q4_0 / Q4_1 block of 16 rows (kernel_pack): the B tile's
// 512 codes (0..15) as nibbles -- byte i holds tile byte i (low) and i + 256
// (high) -- and the rows' fp16 scales as the GGUF has them (Q4_0: m unused,
// m_w = -8 d_w): 320 bytes, 0.625 per weight, the GGUF's own size.  With
// fp32 scales (384 bytes) batch-32 decoding streamed 13 MB more per step.
typedef struct {
    uint8_t q[256];
    uint16_t d[AMX_ROWS], m[AMX_ROWS];
} amx_weight_block4;

// Where a row tile's m_w come from (amx_finish): fp32 (amx_weight_block),
// fp16 (amx_weight_block4 of Q4_1), or -8 times the fp16 d_w (of Q4_0).
enum { AMX_M_F32, AMX_M_F16, AMX_M_Q4_0 };

// The 16 m_w at p of kind mk: exactly the fp32 values amx_unpack_weights makes.
static inline __attribute__((always_inline)) __m512 amx_load_m(const uint8_t *p, int mk) {
    if (mk == AMX_M_F32) return _mm512_loadu_ps((const float *)p);
    const __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return mk == AMX_M_F16 ? x : _mm512_mul_ps(x, _mm512_set1_ps(-8.0f));
}

// One nibble-packed block -> amx_weight_block (4 loads, 4 masks, 4 shifts).
static inline __attribute__((always_inline)) void amx_unpack_block4(const amx_weight_block4 *p, bool q4_0, amx_weight_block *o) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        const __m512i z = _mm512_load_si512(p->q + 64 * c);
        _mm512_store_si512(o->q[c], _mm512_and_si512(z, m4));
        _mm512_store_si512(o->q[c + 4], _mm512_and_si512(_mm512_srli_epi16(z, 4), m4));
    }
    _mm512_store_ps(o->d, _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)p->d)));
    _mm512_store_ps(o->m, amx_load_m(q4_0 ? (const uint8_t *)p->d : (const uint8_t *)p->m, q4_0 ? AMX_M_Q4_0 : AMX_M_F16));
}

// One row tile's nb nibble-packed blocks -> amx_weight_block.
static void amx_unpack_packed4(const amx_weight_block4 *p, int64_t nb, bool q4_0, amx_weight_block *o) {
    for (int64_t k = 0; k < nb; k++) amx_unpack_block4(&p[k], q4_0, &o[k]);
}

// z[p] holds rows 2p, 2p+1 of a 16 x 8 matrix of 32-bit elements (row r,
// element i at lane (r % 2) * 8 + i); o[i] = column i (row r at lane r).
// Three rounds of two-source permutes, 8 each: rows 4q..4q+3 split by
// element half, then rows 8p..8p+7 by element pair, then all 16 rows.
// Permute indices (lane values 16..31 pick from the second source): round
// 1, element half h: lane i*4 + rr <- row 4q + rr, element 4h + i; round 2,
// pair g: lane i*8 + rr <- row 8p + rr, element 4h + 2g + i; round 3:
// lane r <- row r, element 4h + 2g + i.
static const int32_t transpose_i1[2][16] __attribute__((aligned(64))) = {{0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27}, {4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31}};
static const int32_t transpose_i2[2][16] __attribute__((aligned(64))) = {{0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23}, {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31}};
static const int32_t transpose_i3[2][16] __attribute__((aligned(64))) = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};
static inline void transpose_16x8_epi32(const __m512i *z, __m512i *o) {
    __m512i t[4], u[2][2];
    for (int h = 0; h < 2; h++) {
        const __m512i x1 = _mm512_load_si512(transpose_i1[h]);
        for (int q = 0; q < 4; q++) t[q] = _mm512_permutex2var_epi32(z[2 * q], x1, z[2 * q + 1]);
        for (int g = 0; g < 2; g++) {
            const __m512i x2 = _mm512_load_si512(transpose_i2[g]);
            for (int p = 0; p < 2; p++) u[p][g] = _mm512_permutex2var_epi32(t[2 * p], x2, t[2 * p + 1]);
            for (int i = 0; i < 2; i++) o[4 * h + 2 * g + i] = _mm512_permutex2var_epi32(u[0][g], _mm512_load_si512(transpose_i3[i]), u[1][g]);
        }
    }
}

// Rows r0 .. r0+nr-1 of w (nr <= 16) as B tiles and fp32 scales.  Rows
// past nr repeat the last valid row (their outputs are never stored).  Two
// rows' codes fill one 512-bit register (Q4: each 16-byte quant array
// broadcast to two lanes, shifted by 0 and 4 bits, masked to nibbles), then
// are transposed in 4-byte units into the VNNI layout; the 16 rows' fp16
// (d, m) pairs are gathered and converted at once.
static void amx_unpack_weights(const as_matrix *w, int64_t r0, int nr, amx_weight_block *wq) {
    const int64_t nb = w->cols / 32;
    const ggml_type t = w->type;
    const bool q8 = t == GGML_TYPE_Q8_0, affine = t == GGML_TYPE_Q4_1;
    const size_t stride = q8 ? sizeof(block_q8_0) : affine ? sizeof(block_q4_1) : sizeof(block_q4_0);
    const int qoff = affine ? 4 : 2;
    const uint8_t *base = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    size_t off[AMX_ROWS];
    _Alignas(64) int32_t goff[AMX_ROWS];
    for (int r = 0; r < AMX_ROWS; r++) {
        off[r] = (size_t)AS_MIN(r, nr - 1) * w->row_bytes;
        goff[r] = (int32_t)off[r]; // 16 rows of < 1 MB each
    }
    const __m512i vgoff = _mm512_load_si512(goff);
    const __m512i m4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80);
    const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004, 0, 0, 0x0004000400040004, 0x0004000400040004);
    for (int64_t k = 0; k < nb; k++) {
        const uint8_t *b = base + (size_t)k * stride;
        __m512i z[8], col[8];
        for (int p = 0; p < 8; p++) {
            const uint8_t *b0 = b + off[2 * p], *b1 = b + off[2 * p + 1];
            if (q8) {
                const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                                                     _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
                z[p] = _mm512_xor_si512(x, flip);
            } else {
                __m512i x = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(b0 + qoff)));
                x = _mm512_mask_broadcast_i32x4(x, 0xFF00, _mm_loadu_si128((const __m128i *)(b1 + qoff)));
                z[p] = _mm512_and_si512(_mm512_srlv_epi16(x, nibble_shift), m4);
            }
        }
        transpose_16x8_epi32(z, col);
        amx_weight_block *o = &wq[k];
        for (int i = 0; i < 8; i++) _mm512_store_si512(o->q[i], col[i]);
        // (d, m) or (d, first codes) of the 16 rows; the fp16 d in the low half.
        const __m512i dm = _mm512_i32gather_epi32(vgoff, b, 1);
        const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
        const __m512 m = affine ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)))
                                : _mm512_mul_ps(d, _mm512_set1_ps(q8 ? -128.0f : -8.0f));
        _mm512_store_ps(o->d, d);
        _mm512_store_ps(o->m, m);
    }
}

// acc[n] += float(C[n]) * (d_w * d_a[n]) for the 16 tokens of one block.
static inline __attribute__((always_inline)) void amx_scale_block(__m512 *acc, const int32_t *c, const amx_weight_block *w, const float *da) {
    const __m512 d_w = _mm512_loadu_ps(w->d);
#pragma GCC unroll 16
    for (int n = 0; n < AMX_TOKENS; n++)
        acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + AMX_ROWS * n)), _mm512_mul_ps(d_w, _mm512_set1_ps(da[n])), acc[n]);
}

// The m_w s_a terms of one token tile (the same chains by block position b =
// k % 4), then out = ((sum_0 + sum_2) + (sum_1 + sum_3)) + ((m_0 + m_2) + (m_1 + m_3))
// for its nt valid tokens and nr valid rows.  Block k's 16 m_w are at
// mb + k * ms (bytes), of kind mk (amx_load_m).
static inline __attribute__((always_inline)) void amx_finish(const uint8_t *mb, size_t ms, int mk, const amx_act_block *a, int64_t nb,
                                                             float (*sum)[AMX_TOKENS][AMX_ROWS], float *out, int64_t ldo, int nr, int nt) {
    _Alignas(64) float sum_m[4][AMX_TOKENS][AMX_ROWS];
    for (int b = 0; b < 4; b++) {
        __m512 acc[AMX_TOKENS];
#pragma GCC unroll 16
        for (int n = 0; n < AMX_TOKENS; n++) acc[n] = _mm512_setzero_ps();
        for (int64_t k = b; k < nb; k += 4) {
            const __m512 m_w = amx_load_m(mb + (size_t)k * ms, mk);
#pragma GCC unroll 16
            for (int n = 0; n < AMX_TOKENS; n++) acc[n] = _mm512_fmadd_ps(m_w, _mm512_set1_ps(a[k].s[n]), acc[n]);
        }
#pragma GCC unroll 16
        for (int n = 0; n < AMX_TOKENS; n++) _mm512_store_ps(sum_m[b][n], acc[n]);
    }
    const __mmask16 rows = as_lanes16(nr);
    for (int n = 0; n < nt; n++) {
        const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_load_ps(sum[0][n]), _mm512_load_ps(sum[2][n])),
                                       _mm512_add_ps(_mm512_load_ps(sum[1][n]), _mm512_load_ps(sum[3][n])));
        const __m512 m = _mm512_add_ps(_mm512_add_ps(_mm512_load_ps(sum_m[0][n]), _mm512_load_ps(sum_m[2][n])),
                                       _mm512_add_ps(_mm512_load_ps(sum_m[1][n]), _mm512_load_ps(sum_m[3][n])));
        _mm512_mask_storeu_ps(out + n * ldo, rows, _mm512_add_ps(s, m));
    }
}

// Outputs of 16 weight rows (nr valid) for 16 tokens (nt valid) into
// out[n * ldo + r].
//
// pf / pf_lines: cache lines to prefetch into L2 meanwhile (the next row
// tiles of a packed matrix), spread over the blocks.
static void amx_tile_dot(const amx_weight_block *wq, const amx_act_block *a, int64_t nb, float *out, int64_t ldo, int nr, int nt,
                         const uint8_t *pf, int64_t pf_lines) {
    const int64_t pf_per_block = (pf_lines + nb - 1) / nb;
    int64_t pf_next = 0;
#define AMX_PREFETCH()                                                                                                                      \
    for (int64_t p_ = 0; p_ < pf_per_block && pf_next < pf_lines; p_++, pf_next++) _mm_prefetch((const char *)pf + 64 * pf_next, _MM_HINT_T1)
    _Alignas(64) int32_t c[2][AMX_ROWS * AMX_TOKENS];
    _Alignas(64) float sum[4][AMX_TOKENS][AMX_ROWS];
    for (int b = 0; b < 4; b++) {
        __m512 acc[AMX_TOKENS];
#pragma GCC unroll 16
        for (int n = 0; n < AMX_TOKENS; n++) acc[n] = _mm512_setzero_ps();
        int64_t k = b;
        for (; k + 4 < nb; k += 8) { // blocks k and k + 4, in this order
            _tile_zero(0);
            _tile_zero(3);
            _tile_loadd(1, a[k].q, 32);
            _tile_loadd(2, wq[k].q, 64);
            _tile_loadd(4, a[k + 4].q, 32);
            _tile_loadd(5, wq[k + 4].q, 64);
            _tile_dpbsud(0, 1, 2);
            _tile_dpbsud(3, 4, 5);
            _tile_stored(0, c[0], 64);
            _tile_stored(3, c[1], 64);
            AMX_PREFETCH();
            AMX_PREFETCH();
            amx_scale_block(acc, c[0], &wq[k], a[k].d);
            amx_scale_block(acc, c[1], &wq[k + 4], a[k + 4].d);
        }
        if (k < nb) {
            _tile_zero(0);
            _tile_loadd(1, a[k].q, 32);
            _tile_loadd(2, wq[k].q, 64);
            _tile_dpbsud(0, 1, 2);
            _tile_stored(0, c[0], 64);
            AMX_PREFETCH();
            amx_scale_block(acc, c[0], &wq[k], a[k].d);
        }
#pragma GCC unroll 16
        for (int n = 0; n < AMX_TOKENS; n++) _mm512_store_ps(sum[b][n], acc[n]);
    }
    amx_finish((const uint8_t *)wq[0].m, sizeof *wq, AMX_M_F32, a, nb, sum, out, ldo, nr, nt);
#undef AMX_PREFETCH
}

// amx_scale_block with the 16 accumulators in memory (the second token tile
// of amx_tile_dot2: 32 accumulators do not fit the registers).  The same
// operations, so the same bits.
static inline __attribute__((always_inline)) void amx_scale_block_mem(float (*acc)[AMX_ROWS], const int32_t *c, const amx_weight_block *w,
                                                                     const float *da) {
    const __m512 d_w = _mm512_loadu_ps(w->d);
#pragma GCC unroll 16
    for (int n = 0; n < AMX_TOKENS; n++)
        _mm512_store_ps(acc[n], _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + AMX_ROWS * n)), _mm512_mul_ps(d_w, _mm512_set1_ps(da[n])),
                                                _mm512_load_ps(acc[n])));
}

// Two token tiles (a0: 16 tokens, a1: nt1 valid) against one row tile: each
// block's B tile is loaded once for both products (a tile load costs about
// two thirds of a product on the machines measured, bench_amx_ops).  Every
// output gets amx_tile_dot's operations in its order: the same bits.
//
// p4 (else NULL): the row tile's nibble-packed blocks, unpacked here
// AMX_UNPACK_AHEAD blocks ahead of their use into a ring of AMX_UNPACK_RING
// blocks.  A tile load of bytes that vector stores wrote just before waits
// for them (~35 cycles, /tmp microbenchmark on the Emerald Rapids VM; none
// at 4 blocks' distance): unpacking the whole row tile first left the first
// loads waiting and cost ~15% of this function (1536 x 576 Q4_1, 32 tokens,
// one core: 104 -> 87 ns per 16 rows x 32 columns x 32 tokens cache-hot,
// 116 -> 100 streamed from memory; best of 5 alternating runs).
//
// Tried and slower here: scaling block k's stored sums after issuing block
// k + 1's products into a second buffer (90 vs 82 ns, though faster in a
// bare micro-benchmark), and storing all blocks' sums first and scaling
// them in a second pass (125 ns).  The products, the tile stores and the
// rescaling run nearly one after another; see BENCHMARKS.md.
#define AMX_UNPACK_AHEAD 4
#define AMX_UNPACK_RING 8
static void amx_tile_dot2(const amx_weight_block *wq, const amx_act_block *a0, const amx_act_block *a1, int64_t nb, float *out0, float *out1,
                          int64_t ldo, int nr, int nt1, const uint8_t *pf, int64_t pf_lines, const amx_weight_block4 *p4, bool q4_0,
                          amx_weight_block *ring) {
    const int64_t pf_per_block = (pf_lines + nb - 1) / nb;
    int64_t pf_next = 0;
    _Alignas(64) int32_t c[2][AMX_ROWS * AMX_TOKENS];
    _Alignas(64) float sum0[4][AMX_TOKENS][AMX_ROWS], sum1[4][AMX_TOKENS][AMX_ROWS];
    // Blocks run in the order b = 0..3, k = b, b + 4, ...; (ub, uk) is the
    // next one to unpack, u its place in that order.
    int ub = 0;
    int64_t uk = 0, u = 0, i = 0;
#define AMX_UNPACK_NEXT()                                                                                                                   \
    do {                                                                                                                                    \
        amx_unpack_block4(&p4[uk], q4_0, &ring[u++ % AMX_UNPACK_RING]);                                                                     \
        if ((uk += 4) >= nb) uk = ++ub;                                                                                                     \
    } while (0)
    if (p4)
        while (u < AS_MIN((int64_t)AMX_UNPACK_AHEAD, nb)) AMX_UNPACK_NEXT();
    for (int b = 0; b < 4; b++) {
        __m512 acc[AMX_TOKENS];
#pragma GCC unroll 16
        for (int n = 0; n < AMX_TOKENS; n++) acc[n] = _mm512_setzero_ps(), _mm512_store_ps(sum1[b][n], _mm512_setzero_ps());
        for (int64_t k = b; k < nb; k += 4, i++) {
            const amx_weight_block *w = p4 ? &ring[i % AMX_UNPACK_RING] : &wq[k];
            _tile_zero(0);
            _tile_zero(3);
            _tile_loadd(2, w->q, 64);
            _tile_loadd(1, a0[k].q, 32);
            _tile_loadd(4, a1[k].q, 32);
            _tile_dpbsud(0, 1, 2);
            _tile_dpbsud(3, 4, 2);
            _tile_stored(0, c[0], 64);
            _tile_stored(3, c[1], 64);
            if (p4 && u < nb) AMX_UNPACK_NEXT();
            for (int64_t p_ = 0; p_ < 2 * pf_per_block && pf_next < pf_lines; p_++, pf_next++) _mm_prefetch((const char *)pf + 64 * pf_next, _MM_HINT_T1);
            amx_scale_block(acc, c[0], w, a0[k].d);
            amx_scale_block_mem(sum1[b], c[1], w, a1[k].d);
        }
#pragma GCC unroll 16
        for (int n = 0; n < AMX_TOKENS; n++) _mm512_store_ps(sum0[b][n], acc[n]);
    }
#undef AMX_UNPACK_NEXT
    const uint8_t *mb = !p4 ? (const uint8_t *)wq[0].m : q4_0 ? (const uint8_t *)p4[0].d : (const uint8_t *)p4[0].m;
    const size_t ms = p4 ? sizeof *p4 : sizeof *wq;
    const int mk = !p4 ? AMX_M_F32 : q4_0 ? AMX_M_Q4_0 : AMX_M_F16;
    amx_finish(mb, ms, mk, a0, nb, sum0, out0, ldo, nr, AMX_TOKENS);
    amx_finish(mb, ms, mk, a1, nb, sum1, out1, ldo, nr, nt1);
}

// The same products on AVX-512 VNNI instead of tiles: a row tile's block
// (8 rows of 64 bytes in the B-tile layout: lane r of row i holds codes
// 4i .. 4i+3 of weight row r) is 8 vectors, and token n's 32 codes meet them
// as 8 broadcast 4-byte groups, so 8 VPDPBUSD give the 16 rows' exact block
// sums P[n][r] -- amx_tile_dot's C row n -- and the float steps are
// amx_scale_block's: the same bits.  NT tokens (<= 8) share each block's 8
// weight vectors.

// acc + VPDPBUSD(w, codes 4i..4i+3 of q in all lanes), the codes as the
// instruction's embedded broadcast operand ({1to16}): one fused load-and-
// multiply instead of a VPBROADCASTD and a VPDPBUSD (compilers do not fold
// _mm512_set1_epi32 into it).  Cache-hot row tile of 16 rows x 16 tokens,
// one core: 1690 -> 1514 TSC cycles at 576 columns, 4494 -> 3916 at 1536
// (alternating runs; +8-15% in each pair).
static inline __attribute__((always_inline)) __m512i dpbusd_bcst(__m512i acc, __m512i w, const int8_t *q, int i) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t (*)[1])(q + 4 * i)));
    return acc;
}

// pf / pf_lines as amx_tile_dot's, spread over the first group's blocks.
static inline __attribute__((always_inline)) void vnni_tokens(const amx_weight_block *wq, const amx_act_block *a, int64_t nb, int n0,
                                                             const int NT, float (*sum)[AMX_TOKENS][AMX_ROWS], const uint8_t *pf,
                                                             int64_t pf_lines) {
    const int64_t pf_per_block = (pf_lines + nb - 1) / nb;
    int64_t pf_next = 0;
    for (int b = 0; b < 4; b++) {
        __m512 acc[8];
#pragma GCC unroll 8
        for (int n = 0; n < NT; n++) acc[n] = _mm512_setzero_ps();
        for (int64_t k = b; k < nb; k += 4) {
            const amx_weight_block *w = &wq[k];
            for (int64_t p_ = 0; p_ < pf_per_block && pf_next < pf_lines; p_++, pf_next++) _mm_prefetch((const char *)pf + 64 * pf_next, _MM_HINT_T1);
            __m512i wv[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) wv[i] = _mm512_load_si512(w->q[i]);
            const __m512 d_w = _mm512_load_ps(w->d);
            __m512i p[8];
#pragma GCC unroll 8
            for (int n = 0; n < NT; n++) p[n] = dpbusd_bcst(_mm512_setzero_si512(), wv[0], a[k].q[n0 + n], 0);
#pragma GCC unroll 8
            for (int i = 1; i < 8; i++)
#pragma GCC unroll 8
                for (int n = 0; n < NT; n++) p[n] = dpbusd_bcst(p[n], wv[i], a[k].q[n0 + n], i);
#pragma GCC unroll 8
            for (int n = 0; n < NT; n++)
                acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[n]), _mm512_mul_ps(d_w, _mm512_set1_ps(a[k].d[n0 + n])), acc[n]);
        }
#pragma GCC unroll 8
        for (int n = 0; n < NT; n++) _mm512_store_ps(sum[b][n0 + n], acc[n]);
    }
}

static void vnni_tile_dot(const amx_weight_block *wq, const amx_act_block *a, int64_t nb, float *out, int64_t ldo, int nr, int nt,
                          const uint8_t *pf, int64_t pf_lines) {
    _Alignas(64) float sum[4][AMX_TOKENS][AMX_ROWS];
    for (int n0 = 0; n0 < nt; n0 += 8, pf_lines = 0) {
        switch (AS_MIN(8, nt - n0)) {
        case 1: vnni_tokens(wq, a, nb, n0, 1, sum, pf, pf_lines); break;
        case 2: vnni_tokens(wq, a, nb, n0, 2, sum, pf, pf_lines); break;
        case 3: vnni_tokens(wq, a, nb, n0, 3, sum, pf, pf_lines); break;
        case 4: vnni_tokens(wq, a, nb, n0, 4, sum, pf, pf_lines); break;
        case 5: vnni_tokens(wq, a, nb, n0, 5, sum, pf, pf_lines); break;
        case 6: vnni_tokens(wq, a, nb, n0, 6, sum, pf, pf_lines); break;
        case 7: vnni_tokens(wq, a, nb, n0, 7, sum, pf, pf_lines); break;
        default: vnni_tokens(wq, a, nb, n0, 8, sum, pf, pf_lines); break;
        }
    }
    amx_finish((const uint8_t *)wq[0].m, sizeof *wq, AMX_M_F32, a, nb, sum, out, ldo, nr, nt);
}

// Token tile tt's activations, quantised as the VNNI kernel's (block_q8_1_f32
// per 32 values) straight into the tile; rows past the last token zero.
static void amx_quantize_tile(const float *x, int64_t cols, int64_t n_tokens, int64_t tt, amx_act_block *act) {
    amx_act_block *a = act + tt * (cols / 32);
    const int nt = (int)AS_MIN((int64_t)AMX_TOKENS, n_tokens - tt * AMX_TOKENS);
    kernel_quantize_q8_1_avx512_tile(x + tt * AMX_TOKENS * cols, cols, nt, cols, a->q[0], a->d, a->s, sizeof *a);
}

// Work items of one call: contiguous ranges with stealing (steal.h).
// Batch-32 q8 decoding on the VM of BENCHMARKS.md: median 1137 -> 1270 tok/s
// against the static ranges alone (8 alternating pairs, 7 faster).
typedef struct {
    float *out;
    int64_t ldo;
    const float *x;
    int64_t n_tokens;
    const as_matrix *w;
    amx_act_block *act;
    size_t work_bytes;
    bool vnni; // the float part on VNNI (vnni_tile_dot), no tiles
    steal_ranges ranges;
} amx_job;

// Token tiles in pairs sharing the B tiles (amx_tile_dot2): batch-32 decode
// 646 -> 728 tok/s (medians of 3 alternating runs, quiet machine).
// ALPHASPIN_AMX_PAIRS=0 runs one token tile per call (A/B comparisons).
static bool amx_pairs = true;
static pthread_once_t pairs_once = PTHREAD_ONCE_INIT;
static void pairs_read(void) {
    const char *e = getenv("ALPHASPIN_AMX_PAIRS");
    amx_pairs = !e || strcmp(e, "0");
}

// One OpenMP thread's share (called inside the parallel region: clang does
// not give the region's outlined body this file's target attributes).
static void amx_thread(amx_job *j) {
    pthread_once(&pairs_once, pairs_read);
    const as_matrix *w = j->w;
    const int64_t cols = w->cols, nb = cols / 32, n_tokens = j->n_tokens;
    const int64_t n_tt = (n_tokens + AMX_TOKENS - 1) / AMX_TOKENS, n_rt = (w->rows + AMX_ROWS - 1) / AMX_ROWS;
    const int64_t tt_per_chunk = (j->vnni ? VNNI_TOKEN_CHUNK : AMX_TOKEN_CHUNK) / AMX_TOKENS, n_chunks = (n_tt + tt_per_chunk - 1) / tt_per_chunk;
    uint8_t *work = kernel_scratch(SCRATCH_WORK, j->work_bytes);
    // This thread's range of items (tile_matmul caps the threads at
    // STEAL_MAX_THREADS), published before the barrier that ends the next loop.
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    steal_init(&j->ranges, tid, nt, n_chunks * n_rt);
#pragma omp for schedule(static)
    for (int64_t tt = 0; tt < n_tt; tt++) amx_quantize_tile(j->x, cols, n_tokens, tt, j->act);
    amx_weight_block *unpacked = (amx_weight_block *)work;
    const bool nibbles = w->type != GGML_TYPE_Q8_0, q4_0 = w->type == GGML_TYPE_Q4_0;
    const uint8_t *packed = w->packed;
    const size_t tile_bytes = (size_t)nb * (nibbles ? sizeof(amx_weight_block4) : sizeof(amx_weight_block));
    if (!j->vnni) amx_config();
    // Each thread takes its own contiguous range of items first, so the row
    // tiles it prefetches into its core's L2 are the ones it will use: with
    // items handed out one by one (dynamic) about half of the prefetched
    // tiles were next used by the other core.  Batch-32 q8 decoding, two
    // threads: medians 885 -> 1062 tok/s (4 alternating runs), 870 -> 900
    // (6 more, 5 of the 6 pairs faster); q8 prefill 512 unchanged.  Four
    // contiguous ranges per thread handed out dynamically (what the bf16
    // products do, gemm.c) measured ~4% slower here: 1182 -> 1138 (6 runs).
    // Then it takes the other ranges' last items (steal.h), without
    // prefetching: the owner prefetches ahead of its own front.
    bool first_item = true;
    int victim = tid;
    int64_t item;
    while (steal_next(&j->ranges, tid, nt, &victim, &item)) {
        const bool stolen = victim != tid;
        const int64_t ch = item / n_rt, r0 = item % n_rt * AMX_ROWS;
        const int nr = (int)AS_MIN((int64_t)AMX_ROWS, w->rows - r0);
        const uint8_t *tile = packed ? packed + (size_t)(r0 / AMX_ROWS) * tile_bytes : NULL;
        const amx_weight_block *wq = tile && !nibbles ? (const amx_weight_block *)tile : unpacked;
        if (!packed) amx_unpack_weights(w, r0, nr, unpacked);
        const int64_t tt_end = AS_MIN((ch + 1) * tt_per_chunk, n_tt);
        // Packed weights stream from memory once per call: while the first
        // token tile runs, the row tile AMX_PF_TILES ahead (the thread's
        // first item: all up to there) is fetched into L2, so each tile is
        // asked for once (without it, 32 tokens on weights not in cache ran
        // at ~40% of the cache-hot speed; asking for the next 2 tiles from
        // every item, each tile twice, measured ~3% slower at batch 32).
        const int64_t rt = r0 / AMX_ROWS, pf_first = first_item || rt == 0 ? rt + 1 : rt + AMX_PF_TILES;
        first_item = false;
        const int64_t pf_tiles = packed && !stolen ? AS_MAX((int64_t)0, AS_MIN(rt + AMX_PF_TILES, n_rt - 1) - pf_first + 1) : 0;
        const uint8_t *pf = pf_tiles > 0 ? packed + (size_t)pf_first * tile_bytes : NULL;
        const int64_t pf_lines = pf_tiles * (int64_t)tile_bytes / 64;
        // An item of exactly one token-tile pair (batched decoding) unpacks
        // a nibble-packed row tile as it goes (amx_tile_dot2); more pairs share one unpacking.
        const bool pairs = amx_pairs && !j->vnni, one_pair = pairs && tt_end - ch * tt_per_chunk == 2;
        const amx_weight_block4 *p4 = packed && nibbles && one_pair ? (const amx_weight_block4 *)tile : NULL;
        if (packed && nibbles && !p4) amx_unpack_packed4((const amx_weight_block4 *)tile, nb, q4_0, unpacked);
        void (*const tile_dot)(const amx_weight_block *, const amx_act_block *, int64_t, float *, int64_t, int, int, const uint8_t *, int64_t) =
            j->vnni ? vnni_tile_dot : amx_tile_dot;
        for (int64_t tt = ch * tt_per_chunk; tt < tt_end; tt += 2) {
            const bool first = tt == ch * tt_per_chunk;
            if (tt + 1 < tt_end && pairs) { // two token tiles share the B tiles
                const int nt1 = (int)AS_MIN((int64_t)AMX_TOKENS, n_tokens - (tt + 1) * AMX_TOKENS);
                amx_tile_dot2(wq, j->act + tt * nb, j->act + (tt + 1) * nb, nb, j->out + tt * AMX_TOKENS * j->ldo + r0,
                              j->out + (tt + 1) * AMX_TOKENS * j->ldo + r0, j->ldo, nr, nt1, first ? pf : NULL, first ? pf_lines : 0, p4, q4_0, unpacked);
                continue;
            }
            for (int64_t u = tt; u < AS_MIN(tt + 2, tt_end); u++) {
                const int nt = (int)AS_MIN((int64_t)AMX_TOKENS, n_tokens - u * AMX_TOKENS);
                tile_dot(wq, j->act + u * nb, nb, j->out + u * AMX_TOKENS * j->ldo + r0, j->ldo, nr, nt, u == tt && first ? pf : NULL,
                         u == tt && first ? pf_lines : 0);
            }
        }
    }
    if (!j->vnni) _tile_release();
}

static void tile_matmul(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth, bool vnni) {
    const int64_t nb = w->cols / 32, n_tt = (n_tokens + AMX_TOKENS - 1) / AMX_TOKENS;
    amx_job j = {.out = out, .ldo = ldo, .x = x, .n_tokens = n_tokens, .w = w, .vnni = vnni};
    j.act = kernel_scratch(SCRATCH_ACT, sizeof(amx_act_block) * (size_t)(n_tt * nb));
    const size_t w_bytes = sizeof(amx_weight_block) * (size_t)nb;
    j.work_bytes = AS_MAX(w_bytes, sizeof(amx_weight_block) * AMX_UNPACK_RING);
#pragma omp parallel num_threads(AS_MIN(nth, STEAL_MAX_THREADS))
    amx_thread(&j);
}

static bool tile_type(ggml_type t) { return t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_1 || t == GGML_TYPE_Q8_0; }

bool kernel_matmul_q8_amx(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    if (n_tokens < KERNEL_AMX_MIN_TOKENS || !tile_type(w->type) || !kernel_amx_permitted()) return false;
    tile_matmul(out, ldo, x, n_tokens, w, nth, false);
    return true;
}

bool kernel_matmul_q8_vnni(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    if (n_tokens < KERNEL_VNNI_TILE_MIN_TOKENS || !tile_type(w->type)) return false;
    tile_matmul(out, ldo, x, n_tokens, w, nth, true);
    return true;
}

// The "amx" ISA's matmul_q8: tiles from KERNEL_AMX_MIN_TOKENS tokens, below
// that the VNNI float part, which does not pay for a whole 16-token tile.
// Batch-B q8 decoding on this VM (two threads, two alternating runs each):
// VNNI tiles over AMX tiles +28% at 6 tokens and +14-18% at 8, AMX ahead from
// 10 (10: 654 / 527 vs 532 / 437 tok/s, 12 and 14 likewise); VNNI tiles over
// the row kernel +12% at 3 tokens, +17% at 4, -4..-14% at 2.
bool kernel_matmul_q8_tiles(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    return kernel_matmul_q8_amx(out, ldo, x, n_tokens, w, nth) || kernel_matmul_q8_vnni(out, ldo, x, n_tokens, w, nth);
}

// kernel_pack's layout: the row tiles' blocks one after another (tile rt,
// block k at rt * nb + k): for Q8_0 exactly what amx_unpack_weights makes
// per call without it (tiles load straight from it), for Q4_0 / Q4_1 the
// same codes as nibbles (amx_weight_block4; 40% fewer bytes to stream than
// bytes, unpacked per work item into L1 with a few vector operations).
size_t kernel_amx_pack_size(const as_matrix *w) {
    const ggml_type t = w->type;
    if (!tile_type(t) || w->cols % 32 || w->rows < 1) return 0;
    const size_t blk = t == GGML_TYPE_Q8_0 ? sizeof(amx_weight_block) : sizeof(amx_weight_block4);
    return blk * (size_t)((w->rows + AMX_ROWS - 1) / AMX_ROWS) * (size_t)(w->cols / 32);
}

static void amx_pack_thread(const as_matrix *w, uint8_t *dst) { // inside the region, as amx_thread
    const int64_t nb = w->cols / 32, n_rt = (w->rows + AMX_ROWS - 1) / AMX_ROWS;
    amx_weight_block *tmp = kernel_scratch(SCRATCH_WORK, sizeof(amx_weight_block) * (size_t)nb);
#pragma omp for schedule(static)
    for (int64_t rt = 0; rt < n_rt; rt++) {
        const int nr = (int)AS_MIN((int64_t)AMX_ROWS, w->rows - rt * AMX_ROWS);
        if (w->type == GGML_TYPE_Q8_0) {
            amx_unpack_weights(w, rt * AMX_ROWS, nr, (amx_weight_block *)dst + rt * nb);
            continue;
        }
        amx_unpack_weights(w, rt * AMX_ROWS, nr, tmp);
        amx_weight_block4 *o = (amx_weight_block4 *)dst + rt * nb;
        for (int64_t k = 0; k < nb; k++) {
            const uint8_t *q = &tmp[k].q[0][0];
            for (int i = 0; i < 256; i++) o[k].q[i] = (uint8_t)(q[i] | q[i + 256] << 4);
            // fp16 values as read from the GGUF: exact both ways.
            _mm256_store_si256((__m256i *)o[k].d, _mm512_cvtps_ph(_mm512_load_ps(tmp[k].d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            _mm256_store_si256((__m256i *)o[k].m, w->type == GGML_TYPE_Q4_0 ? _mm256_setzero_si256()
                                                 : _mm512_cvtps_ph(_mm512_load_ps(tmp[k].m), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
    }
}

void kernel_amx_pack(const as_matrix *w, void *dst, int nth) {
#pragma omp parallel num_threads(nth)
    amx_pack_thread(w, dst);
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
