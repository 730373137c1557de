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
    return 0;
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
