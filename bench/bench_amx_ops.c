// What the AMX unit of this machine does per instruction, in TSC cycles: the
// numbers that bound every tile kernel here (kernels_amx.c, gemm_bf16.c).
//   bench_amx_ops [iterations]
// Prints, best of 5 rounds, the cycles per
//   TDPBF16PS / TDPBSSD back to back (4 accumulators, no loads): the unit's throughput
//   TDPBF16PS with one TILELOADD per product (2 x 2 blocking from L1)
//   TDPBF16PS with two TILELOADDs per product (no reuse)
//   TILESTORED of a 16 x 64-byte tile to L1
// On the 2-vCPU Emerald Rapids VM of BENCHMARKS.md a product took ~29 cycles
// (Intel's figure for the instruction: 16) and a tile load ~20, so on this
// machine the loads, not the products, set the speed of a kernel that does not
// reuse its tiles.
//
// Then, per 32-value block of the batched Q8 kernel (kernels_amx.c,
// amx_tile_dot2: 16 weight rows x 2 token tiles), in TSC cycles per block:
//   its tile part: 2 TILEZERO, 3 TILELOADD, 2 TDPBSUD (K = 32), 2 TILESTORED
//   its float part: 32 tokens x (convert, scale, multiply-add), half of the
//     accumulators in memory
//   both in one loop, the float part on other data than the tiles write (no
//     dependency): when this is the sum of the two, the core does not run
//     vector work while its tile unit works (on the VM above: 50 + 50 -> 92-127).
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"
#include "tensor/kernels_impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <x86intrin.h>

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tilecfg;
static const tilecfg cfg = {.palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};
static uint8_t buf[8][1024] __attribute__((aligned(64)));

#define AMX __attribute__((target("amx-tile,amx-bf16,amx-int8")))

AMX static double run(int kind, long n) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, buf[0], 64); _tile_loadd(5, buf[1], 64); _tile_loadd(6, buf[2], 64); _tile_loadd(7, buf[3], 64);
    const uint64_t t0 = __rdtsc();
    for (long i = 0; i < n; i++) {
        const int j = (int)(i & 3);
        switch (kind) {
        case 0: _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7); break;
        case 1: _tile_dpbssd(0, 4, 6); _tile_dpbssd(1, 4, 7); _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7); break;
        case 2:
            _tile_loadd(4, buf[j], 64); _tile_loadd(6, buf[4 + j], 64); _tile_loadd(5, buf[(j + 1) & 3], 64); _tile_loadd(7, buf[4 + ((j + 1) & 3)], 64);
            _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
            break;
        case 3:
            _tile_loadd(4, buf[j], 64); _tile_loadd(6, buf[4 + j], 64); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(5, buf[(j + 1) & 3], 64); _tile_loadd(7, buf[4 + ((j + 1) & 3)], 64); _tile_dpbf16ps(1, 5, 7);
            _tile_loadd(4, buf[(j + 2) & 3], 64); _tile_loadd(6, buf[4 + ((j + 2) & 3)], 64); _tile_dpbf16ps(2, 4, 6);
            _tile_loadd(5, buf[(j + 3) & 3], 64); _tile_loadd(7, buf[4 + ((j + 3) & 3)], 64); _tile_dpbf16ps(3, 5, 7);
            break;
        default: _tile_stored(0, buf[j], 64); _tile_stored(1, buf[4 + j], 64); _tile_stored(2, buf[(j + 2) & 3], 64); _tile_stored(3, buf[4 + ((j + 2) & 3)], 64);
        }
    }
    return (double)(__rdtsc() - t0) / (4.0 * (double)n);
}

// ---- the batched Q8 kernel's block ----

#define Q8_BLOCKS 18 // one 576-column row tile

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tilecfg_q8;
// As kernels_amx.c: C 0, 3 (16 x 16 int32), A 1, 4 (16 tokens x 32 bytes), B 2 (8 x 64 bytes).
static const tilecfg_q8 cfg_q8 = {.palette = 1, .colsb = {64, 32, 64, 64, 32}, .rows = {16, 16, 8, 16, 16}};
static uint8_t q8_a[2][Q8_BLOCKS][512] __attribute__((aligned(64))), q8_b[Q8_BLOCKS][512] __attribute__((aligned(64)));
static float q8_d[Q8_BLOCKS][16] __attribute__((aligned(64)));
static int32_t q8_c[2][256] __attribute__((aligned(64))), q8_c_old[2][256] __attribute__((aligned(64)));

#define Q8_TARGET __attribute__((target("amx-tile,amx-int8,avx512f")))

Q8_TARGET static inline __attribute__((always_inline)) void q8_tiles(int k) {
    _tile_zero(0);
    _tile_zero(3);
    _tile_loadd(2, q8_b[k], 64);
    _tile_loadd(1, q8_a[0][k], 32);
    _tile_loadd(4, q8_a[1][k], 32);
    _tile_dpbsud(0, 1, 2);
    _tile_dpbsud(3, 4, 2);
    _tile_stored(0, q8_c[0], 64);
    _tile_stored(3, q8_c[1], 64);
}

// acc (registers) and mem (memory) += float(C) * (d_w * d_a) for 16 tokens each.
Q8_TARGET static inline __attribute__((always_inline)) void q8_floats(const int32_t (*c)[256], int k, __m512 *acc, float (*mem)[16]) {
    const __m512 dw = _mm512_load_ps(q8_d[k]);
    for (int n = 0; n < 16; n++) {
        acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[0] + 16 * n)), _mm512_mul_ps(dw, _mm512_set1_ps(q8_d[k][n])), acc[n]);
        _mm512_store_ps(mem[n], _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[1] + 16 * n)),
                                                _mm512_mul_ps(dw, _mm512_set1_ps(q8_d[k][n])), _mm512_load_ps(mem[n])));
    }
}

// kind 0: tiles, 1: floats, 2: both (floats on q8_c_old); TSC cycles per block.
Q8_TARGET static double run_q8(int kind, long n) {
    __m512 acc[16];
    float mem[16][16] __attribute__((aligned(64)));
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps(), _mm512_store_ps(mem[i], acc[i]);
    const long rounds = (n + Q8_BLOCKS - 1) / Q8_BLOCKS;
    const uint64_t t0 = __rdtsc();
    for (long r = 0; r < rounds; r++)
        for (int k = 0; k < Q8_BLOCKS; k++) {
            if (kind != 1) q8_tiles(k);
            __asm__ volatile("" ::: "memory");
            if (kind != 0) q8_floats((const int32_t(*)[256])q8_c_old, k, acc, mem);
        }
    const double c = (double)(__rdtsc() - t0) / (double)(rounds * Q8_BLOCKS);
    float sink = 0;
    for (int i = 0; i < 16; i++) sink += _mm512_reduce_add_ps(acc[i]) + mem[i][0];
    if (sink == 12345.0f) printf(" "); // keep the float part
    return c;
}

Q8_TARGET static int bench_q8(long n) {
    for (int k = 0; k < Q8_BLOCKS; k++)
        for (int i = 0; i < 16; i++) q8_d[k][i] = 0.01f;
    _tile_loadconfig(&cfg_q8);
    static const char *const names[] = {"Q8 block: tile part", "Q8 block: float part", "Q8 block: both, independent data"};
    double best[3] = {1e30, 1e30, 1e30};
    for (int r = 0; r < 5; r++) // the three kinds interleaved, so that they see the same host
        for (int k = 0; k < 3; k++) {
            const double c = run_q8(k, n / 4);
            best[k] = c < best[k] ? c : best[k];
        }
    for (int k = 0; k < 3; k++) printf("%-40s %6.1f TSC cycles per block (16 rows x 32 tokens)\n", names[k], best[k]);
    printf("%-40s %6.2f (1: no overlap of tile and vector work; 0.5: full overlap)\n", "both / (tile + float)", best[2] / (best[0] + best[1]));
    _tile_release();
    return 0;
}

AMX static int bench(long n) {
    _tile_loadconfig(&cfg);
    static const char *const names[] = {"TDPBF16PS, no loads", "TDPBSSD, no loads", "TDPBF16PS + 1 TILELOADD (2x2 blocking)",
                                        "TDPBF16PS + 2 TILELOADD (no reuse)", "TILESTORED"};
    for (int k = 0; k < 5; k++) {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            const double c = run(k, n);
            best = c < best ? c : best;
        }
        printf("%-40s %6.1f TSC cycles per instruction (per product for the mixes)\n", names[k], best);
    }
    _tile_release();
    return bench_q8(n);
}
#endif

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--help")) {
        printf("usage: bench_amx_ops [iterations]  (default 200000; TSC cycles per AMX instruction)\n");
        return 0;
    }
    const long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n < 1) {
        fprintf(stderr, "bench_amx_ops: iterations: expected a positive number, found '%s'\n", argv[1]);
        return 2;
    }
#if defined(__x86_64__)
    if (!cpu_get_features()->amx_bf16 || !kernel_amx_permitted()) {
        printf("no AMX-BF16/INT8 here (or the OS refused the tile state): nothing to measure\n");
        return 0;
    }
    memset(buf, 0, sizeof buf);
    return bench(n);
#else
    printf("not an x86-64 machine: nothing to measure\n");
    return 0;
#endif
}
