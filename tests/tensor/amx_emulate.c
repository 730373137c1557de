// The AMX tile unit in C (amx_emulate.h describes what and from where).
// Plain C (the two products with AVX2 / FMA enabled: only AVX-512 code calls them).
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

// (AVX2 for speed: the loops vectorised; integer sums modulo 2^32 in any
// order are the same.  Only AMX-INT8 code calls it, which needs AVX-512.)
__attribute__((target("avx2"))) void amx_emu_dpbsud(int c, int a, int b) {
    int M, N, K;
    check_product("TDPBSUD", c, a, b, &M, &N, &K);
    __atomic_fetch_add(&n_dpbsud, 1, __ATOMIC_RELAXED);
    const int f = __atomic_load_n(&fault, __ATOMIC_RELAXED);
    // B as a (4K x 16) matrix of its unsigned bytes: bw[4k + j][n] = B[k].byte[4n + j]
    // (all 16 columns: bytes past B's colsb are 0 in the register).
    int32_t bw[64][16];
    for (int i = 0; i < 4 * K; i++)
        for (int n = 0; n < 16; n++) bw[i][n] = st.t[b][i >> 2][4 * n + (i & 3)];
    for (int m = 0; m < M; m++) {
        // C[m].dword[n] + sum over k, j of A[m].byte[4k + j] (signed; unsigned for the
        // planted fault) * B[k].byte[4n + j]; |product| <= 128 * 255, the sums wrap (uint32).
        uint32_t acc[16];
        memcpy(acc, st.t[c][m], sizeof acc);
        for (int i = 0; i < 4 * K; i++) {
            const int32_t x = f == AMX_EMU_FAULT_DPBSUD_UNSIGNED ? (int32_t)st.t[a][m][i] : (int32_t)(int8_t)st.t[a][m][i];
            for (int n = 0; n < 16; n++) acc[n] += (uint32_t)(x * bw[i][n]);
        }
        if (f == AMX_EMU_FAULT_DPBSUD_PLUS1 && m == 5 && N > 7) acc[7] += 1;
        memcpy(st.t[c][m], acc, sizeof acc);
    }
    zero_outside(c, M, N);
}

// bf16 as fp32, a denormal read as zero (of its sign).
static inline float bf16_daz(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// A denormal result flushed to zero (of its sign).
static inline float ftz(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

// (FMA and AVX2 for speed: fmaf inline and the loops vectorised, the same
// results; only AMX-BF16 code calls it, which needs AVX-512 anyway.)
__attribute__((target("avx2,fma"))) void amx_emu_dpbf16ps(int c, int a, int b) {
    int M, N, K;
    check_product("TDPBF16PS", c, a, b, &M, &N, &K);
    __atomic_fetch_add(&n_dpbf16ps, 1, __ATOMIC_RELAXED);
    const int f = __atomic_load_n(&fault, __ATOMIC_RELAXED);
    // B's rows as fp32 (DAZ), element e of row k at bk[k][e]: dword n holds elements 2n (even) and 2n + 1 (odd).
    float bk[16][32];
    for (int k = 0; k < K; k++)
        for (int e = 0; e < 2 * N; e++) {
            uint16_t y;
            memcpy(&y, &st.t[b][k][2 * (f == AMX_EMU_FAULT_DPBF16PS_SWAP ? e ^ 1 : e)], 2);
            bk[k][e] = bf16_daz(y);
        }
    for (int m = 0; m < M; m++) {
        float tmp[32] = {0}; // tmp[2n + p]: the chain of output n's products of parity p
        for (int k = 0; k < K; k++) {
            uint16_t x[2];
            memcpy(x, &st.t[a][m][4 * k], 4);
            const float xa[2] = {bf16_daz(x[0]), bf16_daz(x[1])};
            for (int e = 0; e < 2 * N; e++) tmp[e] = ftz(fmaf(xa[e & 1], bk[k][e], tmp[e]));
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

kernel_isa amx_emu_current_isa(void) { return KERNEL_ISA_AMX; }

amx_emu_counts amx_emu_get_counts(void) {
    return (amx_emu_counts){__atomic_load_n(&n_loadconfig, __ATOMIC_RELAXED), __atomic_load_n(&n_dpbsud, __ATOMIC_RELAXED),
                            __atomic_load_n(&n_dpbf16ps, __ATOMIC_RELAXED)};
}

void amx_emu_set_fault(amx_emu_fault f) { __atomic_store_n(&fault, (int)f, __ATOMIC_RELAXED); }

// ALPHASPIN_AMX_EMU_FAULT=n plants fault n from the start (checking by hand
// that a test using the emulator fails, e.g. test_attention_amx_emu).
__attribute__((constructor)) static void fault_from_env(void) {
    const char *e = getenv("ALPHASPIN_AMX_EMU_FAULT");
    if (e && *e) amx_emu_set_fault((amx_emu_fault)atoi(e));
}
