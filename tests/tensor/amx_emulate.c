// The AMX tile unit in C (amx_emulate.h describes what and from where).
// Plain C, no target attributes: runs on any x86-64.
#define _GNU_SOURCE
#include "amx_emulate.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#define EMU_TILES 8
#define EMU_ROWS 16
#define EMU_COLSB 64

typedef struct emu_state {
    bool configured;
    uint8_t start_row;
    uint16_t colsb[EMU_TILES];
    uint8_t rows[EMU_TILES];
    _Alignas(64) uint8_t t[EMU_TILES][EMU_ROWS][EMU_COLSB];
} emu_state;

static _Thread_local emu_state st;
static uint64_t n_loadconfig, n_dpbsud, n_dpbf16ps; // __atomic
static int fault;                                   // __atomic

static void emu_fault(const char *insn, const char *why, int tile) {
    fprintf(stderr, "amx_emulate: %s (tile %d): %s -- the instruction would fault\n", insn, tile, why);
    abort();
}

static void check_tile(const char *insn, int t) {
    if (!st.configured) emu_fault(insn, "tiles not configured (no LDTILECFG, or after TILERELEASE)", t);
    if (t < 0 || t >= EMU_TILES) emu_fault(insn, "no such tile", t);
    if (st.rows[t] == 0) emu_fault(insn, "tile not configured (rows 0)", t);
}

void amx_emu_loadconfig(const void *cfg) {
    uint8_t b[64];
    memcpy(b, cfg, sizeof b);
    __atomic_fetch_add(&n_loadconfig, 1, __ATOMIC_RELAXED);
    if (b[0] == 0) { // palette 0: the init state
        memset(&st, 0, sizeof st);
        return;
    }
    if (b[0] != 1) emu_fault("LDTILECFG", "palette_id not 0 or 1", -1);
    for (int i = 2; i < 16; i++)
        if (b[i]) emu_fault("LDTILECFG", "reserved byte 2..15 set", -1);
    for (int i = 16 + 2 * EMU_TILES; i < 48; i++)
        if (b[i]) emu_fault("LDTILECFG", "colsb of tile 8..15 set", -1);
    for (int i = 48 + EMU_TILES; i < 64; i++)
        if (b[i]) emu_fault("LDTILECFG", "rows of tile 8..15 set", -1);
    emu_state s;
    memset(&s, 0, sizeof s);
    s.configured = true;
    s.start_row = b[1];
    for (int t = 0; t < EMU_TILES; t++) {
        s.colsb[t] = (uint16_t)(b[16 + 2 * t] | b[17 + 2 * t] << 8);
        s.rows[t] = b[48 + t];
        if (s.colsb[t] > EMU_COLSB || s.rows[t] > EMU_ROWS) emu_fault("LDTILECFG", "colsb > 64 or rows > 16", t);
        if ((s.colsb[t] == 0) != (s.rows[t] == 0)) emu_fault("LDTILECFG", "one of colsb, rows is 0 and the other not", t);
    }
    st = s;
}

void amx_emu_release(void) { memset(&st, 0, sizeof st); }

void amx_emu_zero(int t) {
    check_tile("TILEZERO", t);
    memset(st.t[t], 0, sizeof st.t[t]);
}

void amx_emu_loadd(int t, const void *base, int64_t stride) {
    check_tile("TILELOADD", t);
    if (st.colsb[t] % 4) emu_fault("TILELOADD", "colsb not a multiple of 4", t);
    if (st.start_row >= st.rows[t]) emu_fault("TILELOADD", "start_row >= rows", t);
    for (int r = 0; r < EMU_ROWS; r++) {
        if (r < st.start_row) continue; // a restarted load keeps the rows done (not used here: start_row is 0)
        memset(st.t[t][r], 0, EMU_COLSB);
        if (r < st.rows[t]) memcpy(st.t[t][r], (const uint8_t *)base + (int64_t)r * stride, st.colsb[t]);
    }
    st.start_row = 0;
}

void amx_emu_stored(int t, void *base, int64_t stride) {
    check_tile("TILESTORED", t);
    if (st.colsb[t] % 4) emu_fault("TILESTORED", "colsb not a multiple of 4", t);
    if (st.start_row >= st.rows[t]) emu_fault("TILESTORED", "start_row >= rows", t);
    for (int r = st.start_row; r < st.rows[t]; r++) memcpy((uint8_t *)base + (int64_t)r * stride, st.t[t][r], st.colsb[t]);
    st.start_row = 0;
}

// The shape checks of the tile products (#UD), and M, N (dwords), K (dwords of A's rows).
static void check_product(const char *insn, int c, int a, int b, int *M, int *N, int *K) {
    check_tile(insn, c), check_tile(insn, a), check_tile(insn, b);
    if (c == a || c == b || a == b) emu_fault(insn, "tiles not distinct", c);
    if (st.colsb[c] % 4 || st.colsb[a] % 4 || st.colsb[b] % 4) emu_fault(insn, "colsb not a multiple of 4", c);
    *M = st.rows[c], *N = st.colsb[c] / 4, *K = st.colsb[a] / 4;
    if (st.rows[a] != *M) emu_fault(insn, "rows of A != rows of C", a);
    if (st.rows[b] != *K) emu_fault(insn, "rows of B != colsb of A / 4", b);
    if (st.colsb[b] != st.colsb[c]) emu_fault(insn, "colsb of B != colsb of C", b);
    if (*N > 16 || *K > 16) emu_fault(insn, "N or K > 16", c);
}

// The rest of row m past N dwords, and the rows past M, become 0 (write_row_and_zero, zero_upper_rows).
static void zero_outside(int c, int M, int N) {
    for (int m = 0; m < EMU_ROWS; m++) memset(st.t[c][m] + (m < M ? 4 * N : 0), 0, (size_t)(m < M ? EMU_COLSB - 4 * N : EMU_COLSB));
}

void amx_emu_dpbsud(int c, int a, int b) {
    int M, N, K;
    check_product("TDPBSUD", c, a, b, &M, &N, &K);
    __atomic_fetch_add(&n_dpbsud, 1, __ATOMIC_RELAXED);
    const int f = __atomic_load_n(&fault, __ATOMIC_RELAXED);
    for (int m = 0; m < M; m++) {
        uint32_t tmp[16];
        memcpy(tmp, st.t[c][m], sizeof tmp);
        for (int k = 0; k < K; k++) {
            const uint8_t *x = &st.t[a][m][4 * k], *y = st.t[b][k];
            int32_t xs[4]; // A's bytes signed (TDPBSUD), or unsigned for the planted fault
            for (int j = 0; j < 4; j++) xs[j] = f == AMX_EMU_FAULT_DPBSUD_UNSIGNED ? (int32_t)x[j] : (int32_t)(int8_t)x[j];
            for (int n = 0; n < N; n++) {
                // |4 products| <= 4 * 128 * 255: exact in int32; the accumulation wraps.
                const int32_t p = xs[0] * y[4 * n] + xs[1] * y[4 * n + 1] + xs[2] * y[4 * n + 2] + xs[3] * y[4 * n + 3];
                tmp[n] += (uint32_t)p;
            }
        }
        if (f == AMX_EMU_FAULT_DPBSUD_PLUS1 && m == 5 && N > 7) tmp[7] += 1;
        memcpy(st.t[c][m], tmp, sizeof tmp);
    }
    zero_outside(c, M, N);
}

// bf16 as fp32, a denormal read as zero (of its sign).
static float bf16_daz(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// A denormal result flushed to zero (of its sign).
static float ftz(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

void amx_emu_dpbf16ps(int c, int a, int b) {
    int M, N, K;
    check_product("TDPBF16PS", c, a, b, &M, &N, &K);
    __atomic_fetch_add(&n_dpbf16ps, 1, __ATOMIC_RELAXED);
    const int f = __atomic_load_n(&fault, __ATOMIC_RELAXED);
    for (int m = 0; m < M; m++) {
        float tmp[32] = {0};
        for (int k = 0; k < K; k++)
            for (int n = 0; n < N; n++)
                for (int e = 0; e < 2; e++) {
                    uint16_t x, y;
                    memcpy(&x, &st.t[a][m][4 * k + 2 * e], 2);
                    memcpy(&y, &st.t[b][k][4 * n + 2 * (f == AMX_EMU_FAULT_DPBF16PS_SWAP ? 1 - e : e)], 2);
                    tmp[2 * n + e] = ftz(fmaf(bf16_daz(x), bf16_daz(y), tmp[2 * n + e]));
                }
        for (int n = 0; n < N; n++) {
            float acc;
            memcpy(&acc, &st.t[c][m][4 * n], 4);
            // The accumulator read with DAZ too (SDM: input denormals are treated as zero).
            if (fabsf(acc) < FLT_MIN) acc = copysignf(0.0f, acc);
            acc = ftz(acc + ftz(tmp[2 * n] + tmp[2 * n + 1]));
            memcpy(&st.t[c][m][4 * n], &acc, 4);
        }
    }
    zero_outside(c, M, N);
}

const cpu_features *amx_emu_cpu_features(void) {
    static cpu_features f;
    static bool done;
    if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) { // the same values from every thread
        cpu_features g = *cpu_get_features();
        g.amx_int8 = g.amx_bf16 = true;
        f = g;
        __atomic_store_n(&done, true, __ATOMIC_RELEASE);
    }
    return &f;
}

// Linux's arch_prctl(ARCH_REQ_XCOMP_PERM / ARCH_GET_XCOMP_PERM) as it answers
// on an AMX machine: the tile data state (XFEATURE 18) granted.
long amx_emu_syscall(long nr, ...) {
    va_list ap;
    va_start(ap, nr);
    long ret = -1;
    errno = ENOSYS;
#if defined(SYS_arch_prctl)
    if (nr == SYS_arch_prctl) {
        const long op = va_arg(ap, long);
        if (op == 0x1023) { // ARCH_REQ_XCOMP_PERM
            ret = va_arg(ap, long) == 18 ? 0 : (errno = EINVAL, -1);
        } else if (op == 0x1022) { // ARCH_GET_XCOMP_PERM
            unsigned long *granted = va_arg(ap, unsigned long *);
            *granted = 0x3u | 1ul << 17 | 1ul << 18; // x87, SSE, XTILECFG, XTILEDATA
            ret = 0;
        } else {
            errno = EINVAL;
        }
    }
#endif
    va_end(ap);
    return ret;
}

amx_emu_counts amx_emu_get_counts(void) {
    return (amx_emu_counts){__atomic_load_n(&n_loadconfig, __ATOMIC_RELAXED), __atomic_load_n(&n_dpbsud, __ATOMIC_RELAXED),
                            __atomic_load_n(&n_dpbf16ps, __ATOMIC_RELAXED)};
}

void amx_emu_set_fault(amx_emu_fault f) { __atomic_store_n(&fault, (int)f, __ATOMIC_RELAXED); }
