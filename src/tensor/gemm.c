// Dense bf16 products (see gemm.h; fp32 is sgemm.c): on AMX tiles; without
// AMX on AVX-512 BF16's VDPBF16PS (the "VDPBF16PS" section below: the same
// packed operands and blocks); without either on fused multiply-adds of the
// bf16-rounded operands (the "fallback" section below).
//
// op(A) is packed to bf16 (Mp x Kp, K padded to 32 with zeros) as tiles: each
// 16-row block holds its Kp/32 tiles of 16 rows x 32 K one after another, 1 KB
// each, so a tile load reads 16 consecutive cache lines (rows of Kp apart ran
// ~10-25% slower); op(B) to 16-column panels with pairs of K interleaved (the
// layout TDPBF16PS reads: tile row kk holds (B[2kk][n], B[2kk+1][n]) for 16
// columns n).  A block of
// 32 x 32 outputs is four accumulator tiles (tmm0-3) fed by two A tiles
// (tmm4-5, 16 rows x 32 K) and two B tiles (tmm6-7) per step of 32 K; the
// sums stay in the tiles over all of K, then alpha/beta are applied on the way
// out.  The blocks along the larger output dimension go to the threads as
// GEMM_PARTS_PER_THREAD contiguous ranges each, handed out dynamically; each
// element is summed by one block call in K order, whichever thread runs it.
#define _GNU_SOURCE
#include "tensor/gemm.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "tensor/bf16_x86.h"
#include "tensor/lanes_x86.h"
#include "tensor/kernels.h"
#include "tensor/kernels_impl.h"
#include "tensor/quant.h"
#include "util/common.h"

#if defined(KERNEL_AMX_EMULATE) // test builds only: the tile instructions in C (tests/tensor/amx_emulate.h)
#include "amx_emulate.h"
#endif

// Below this many multiply-adds per call a split costs more than it saves.
#define GEMM_MIN_TILE_WORK (1 << 16)

// ---- bf16 ----

#define BLK 32

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A packed operand's shape (K padded to 32, N to whole 32-column blocks), nothing allocated.
static void packed_shape(kernel_bf16_packed *p, int64_t K, int64_t N) {
    memset(p, 0, sizeof *p);
    p->K = K, p->N = N, p->Kp = round_up(AS_MAX(K, (int64_t)1), 32), p->Np = round_up(AS_MAX(N, (int64_t)1), BLK);
}

// Packed operands of the calling thread, kept between calls (fresh pages
// every call cost more page faults than the packing itself).
// (kernel_scratch: freed when the thread exits).
static uint16_t *ws_get(int slot, size_t n) { return kernel_scratch(slot, sizeof(uint16_t) * (n > 0 ? n : 1)); }

bool kernel_gemm_bf16_amx(void) {
    const char *env = getenv("ALPHASPIN_BF16_NO_AMX"); // testing the fallback on an AMX machine
    if (env && *env && strcmp(env, "0")) return false;
    // ALPHASPIN_KERNEL_ISA below amx (kernel_init) turns it off too.
    return cpu_get_features()->amx_bf16 && kernel_current_isa() == KERNEL_ISA_AMX;
}

bool kernel_gemm_bf16_dpbf(void) {
    if (kernel_gemm_bf16_amx()) return false;
    const char *env = getenv("ALPHASPIN_BF16_NO_DPBF"); // testing the fma fallback on an AVX-512 BF16 machine
    if (env && *env && strcmp(env, "0")) return false;
    // ALPHASPIN_KERNEL_ISA=avx2 or scalar turns it off too.
    const cpu_features *f = cpu_get_features();
    if (!(f->avx512bf16 && f->avx512bw && f->avx512vl && kernel_current_isa() >= KERNEL_ISA_AVX512)) return false;
    const char *on = getenv("ALPHASPIN_BF16_DPBF"); // the path on any CPU with the instruction (its tests)
    return f->amd || (on && *on && strcmp(on, "0"));
}

// Whether the products run on the packed bf16 operands (AMX or VDPBF16PS),
// else on the fallback's rounded fp32 copies.
static bool bf16_packed_path(void) { return kernel_gemm_bf16_amx() || kernel_gemm_bf16_dpbf(); }

// ---- packing (AVX-512: only the AMX and VDPBF16PS paths pack, and both imply it) ----

#if defined(__x86_64__)
#include <immintrin.h>

#include "tensor/transpose_x86.h"
#define AVX512 __attribute__((target("avx512f")))

// n floats -> bf16 (n <= 16 via a masked load).
AVX512 static inline __m256i cvt_n(const float *src, int64_t n) {
    const __mmask16 m = as_lanes16(n);
    return as_bf16x16(_mm512_maskz_loadu_ps(m, src));
}

// Units of two bf16 (K pairs) from two rows of 16: lo from a, hi from b.
AVX512 static inline __m512i pair_units(const float *a, const float *b, int64_t n) {
    return as_bf16x16_pairs(cvt_n(a, n), b ? cvt_n(b, n) : _mm256_setzero_si256());
}

// Block b (rows 16b .. 16b+15) of pack_a, every element written (padding
// zeros included).  (The OpenMP loops live in functions without target
// attributes: clang outlines a parallel region into a function of its own,
// which would not inherit them.)
AVX512 static void pack_a_block(uint16_t *Ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t Kp, int64_t b) {
    const int64_t i0 = b * 16, ni = AS_MAX((int64_t)0, AS_MIN((int64_t)16, M - i0));
    uint16_t *dst = Ap + i0 * Kp; // tile t of the block at dst + 512 t, row i of it at + 32 i
    if (!ta) {
        for (int64_t i = 0; i < 16; i++) {
            const float *src = A + (i0 + i) * lda;
            for (int64_t k = 0; k < Kp; k += 16) {
                const int64_t nk = i < ni ? AS_MAX((int64_t)0, AS_MIN((int64_t)16, K - k)) : 0;
                _mm256_store_si256((__m256i *)(dst + k / 32 * 512 + i * 32 + k % 32), nk ? cvt_n(src + k, nk) : _mm256_setzero_si256());
            }
        }
        return;
    }
    // op(A) row i is A's column i0 + i: 16 K pairs of the 16 columns as a
    // 16 x 16 matrix of units (pair p, column i), transposed into 16 rows.
    for (int64_t k0 = 0; k0 < Kp; k0 += 32) {
        __m512i r[16];
        for (int p = 0; p < 16; p++) {
            const int64_t k = k0 + 2 * p;
            r[p] = k >= K || ni == 0 ? _mm512_setzero_si512() : pair_units(A + k * lda + i0, k + 1 < K ? A + (k + 1) * lda + i0 : NULL, ni);
        }
        as_transpose16_epi32(r);
        for (int i = 0; i < 16; i++) _mm512_store_si512(dst + k0 * 16 + i * 32, r[i]);
    }
}

// op(A) (M x K) -> Ap (Mp x Kp) bf16, zero padded.
static void pack_a(uint16_t *Ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t Mp, int64_t Kp, int nth) {
    const int64_t nb = Mp / 16;
#pragma omp parallel for schedule(static) num_threads(nth) if (nb > 1)
    for (int64_t b = 0; b < nb; b++) pack_a_block(Ap, ta, M, K, A, lda, Kp, b);
}

// Panel p (columns 16p .. 16p+15) of pack_b, every element written.
AVX512 static void pack_b_panel(uint16_t *Bp, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int64_t Kp, int64_t p) {
    const int64_t n0 = p * 16, nn = AS_MAX((int64_t)0, AS_MIN((int64_t)16, N - n0));
    uint32_t *d32 = (uint32_t *)(Bp + p * Kp * 16);
    if (tb) {
        // Row n of B holds op(B)'s column n: 16 units (32 K) of each of the 16
        // rows as a 16 x 16 matrix (row n, unit u), transposed: unit row u.
        for (int64_t k0 = 0; k0 < Kp; k0 += 32) {
            __m512i r[16];
            const int64_t nk = AS_MAX((int64_t)0, AS_MIN((int64_t)32, K - k0));
            for (int64_t n = 0; n < 16; n++) {
                if (n >= nn || nk == 0) {
                    r[n] = _mm512_setzero_si512();
                    continue;
                }
                const float *src = B + (n0 + n) * ldb + k0;
                const __m256i lo = cvt_n(src, AS_MIN((int64_t)16, nk)), hi = nk > 16 ? cvt_n(src + 16, nk - 16) : _mm256_setzero_si256();
                r[n] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            }
            as_transpose16_epi32(r);
            for (int u = 0; u < 16; u++) _mm512_storeu_si512(d32 + (k0 / 2 + u) * 16, r[u]);
        }
        return;
    }
    for (int64_t k = 0; k < Kp; k += 2)
        _mm512_storeu_si512(d32 + (k / 2) * 16, k >= K || nn == 0 ? _mm512_setzero_si512()
                                                                  : pair_units(B + k * ldb + n0, k + 1 < K ? B + (k + 1) * ldb + n0 : NULL, nn));
}

// op(B) (K x N) -> panels (Np/16) x (Kp/2) x 16 x 2, zero padded.
static void pack_b(uint16_t *Bp, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int64_t Kp, int64_t Np, int nth) {
    const int64_t np = Np / 16;
#pragma omp parallel for schedule(static) num_threads(nth) if (np > 1)
    for (int64_t p = 0; p < np; p++) pack_b_panel(Bp, tb, K, N, B, ldb, Kp, p);
}
#else
static void pack_a(uint16_t *Ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t Mp, int64_t Kp, int nth) {
    (void)Ap, (void)ta, (void)M, (void)K, (void)A, (void)lda, (void)Mp, (void)Kp, (void)nth;
}
static void pack_b(uint16_t *Bp, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int64_t Kp, int64_t Np, int nth) {
    (void)Bp, (void)tb, (void)K, (void)N, (void)B, (void)ldb, (void)Kp, (void)Np, (void)nth;
}
#endif

// ---- AMX ----

#if defined(__x86_64__)
#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f")))

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tilecfg;

// Eight tiles of 16 rows x 64 bytes.  A static table: GCC does not treat
// LDTILECFG as reading its operand, so stores to a local one are dropped.
static const tilecfg amx_cfg = {.palette_id = 1,
                                .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
                                .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

AMX_TARGET static void amx_config(void) { _tile_loadconfig(&amx_cfg); }
void kernel_amx_bf16_begin(void) { amx_config(); }

// B lines fetched into L1 one step of K ahead (1 KB per panel) when each B
// panel meets only one A block (M <= 32: batched decoding), where B streams
// from memory with too little reuse to hide it: bf16 batch-32 decode 615-700
// -> 830-870 tok/s (alternating runs; 2, 4, 8, 16 steps ahead measured
// equal or slower).
#define B_PREFETCH (32 * 16)

// out (32 x 32 fp32, row stride ldo) = A rows (32 x Kp, two blocks of tiles) . B panels p, p+1.
AMX_TARGET static inline __attribute__((always_inline)) void block32_impl(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out,
                                                                          int64_t ldo, bool prefetch) {
    const uint16_t *a1 = a + 16 * Kp, *b1 = b0 + Kp * 16;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t k = 0; k < Kp; k += 32) {
        if (prefetch)
            for (int l = 0; l < 16; l++) {
                _mm_prefetch((const char *)(b0 + k * 16 + B_PREFETCH) + 64 * l, _MM_HINT_T0);
                _mm_prefetch((const char *)(b1 + k * 16 + B_PREFETCH) + 64 * l, _MM_HINT_T0);
            }
        _tile_loadd(4, a + k * 16, 64);
        _tile_loadd(6, b0 + k * 16, 64);
        _tile_loadd(5, a1 + k * 16, 64);
        _tile_loadd(7, b1 + k * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, ldo * 4);
    _tile_stored(1, out + 16, ldo * 4);
    _tile_stored(2, out + 16 * ldo, ldo * 4);
    _tile_stored(3, out + 16 * ldo + 16, ldo * 4);
}
// (rows: the block's rows in use; the tiles compute all 32 anyway.)
AMX_TARGET static void block32(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out, int64_t ldo, int64_t rows) {
    (void)rows;
    block32_impl(a, b0, Kp, out, ldo, false);
}
AMX_TARGET static void block32_pf(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out, int64_t ldo, int64_t rows) {
    (void)rows;
    block32_impl(a, b0, Kp, out, ldo, true);
}

AMX_TARGET static void amx_release(void) { _tile_release(); }
void kernel_amx_bf16_end(void) { amx_release(); }

// C block (ni x nj) = alpha out + beta C (C not read when beta is 0).
AVX512 static void epilogue(float *C, int64_t ldc, const float *out, int64_t ni, int64_t nj, float alpha, float beta) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t i = 0; i < ni; i++)
        for (int64_t j = 0; j < nj; j += 16) {
            const __mmask16 m = as_lanes16(nj - j);
            float *c = C + i * ldc + j;
            __m512 v = _mm512_mul_ps(va, _mm512_load_ps(out + i * BLK + j));
            if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), v);
            _mm512_mask_storeu_ps(c, m, v);
        }
}

// ---- VDPBF16PS (AVX-512 BF16 without AMX) ----
//
// The same packed operands and 32 x 32 blocks as the tiles: a block is four
// groups of 8 rows x 2 panels, 16 zmm accumulators; per K pair the two
// panels' units (16 columns x (B[2kk][n], B[2kk+1][n])) are loaded once and
// each row's unit (A[i][2kk], A[i][2kk+1]) broadcast, one VDPBF16PS per row
// and panel.  Each output is one chain over the pairs kk = 0 .. Kp/2-1 from
// 0: acc += A[2kk+1] B[2kk+1], then acc += A[2kk] B[2kk], each rounded to
// nearest even, denormal inputs read as 0 and denormal results flushed to 0
// (the SDM's pseudo-code; test_gemm_dpbf checks this CPU's instruction
// against it bit for bit).  The bf16 products are exact in fp32, so this
// differs from the fallback's chain (k in order, no flushing) only by the
// order within a pair and by the flushing.
#define DPBF_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

// Only the groups holding the first `rows` rows (a decoding step's 1-4 rows:
// one group, not four; the rows past them are A's zero padding, not read).
DPBF_TARGET static void dpbf_block32(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out, int64_t ldo, int64_t rows) {
    const uint32_t *pb0 = (const uint32_t *)b0, *pb1 = (const uint32_t *)(b0 + Kp * 16);
    for (int g = 0; g < 4 && 8 * g < rows; g++) {
        // Rows 8g .. 8g+7: rows 8 (g % 2) .. of the 16-row block g / 2, row i of
        // its tile t (16 units) at + 256 t + 16 i units.
        const uint32_t *pa = (const uint32_t *)(a + (g >> 1) * 16 * Kp) + (g & 1) * 8 * 16;
        __m512 acc[8][2];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int64_t t = 0; t < Kp / 32; t++) {
            const uint32_t *at = pa + t * 256, *bt0 = pb0 + t * 256, *bt1 = pb1 + t * 256;
#pragma GCC unroll 2
            for (int u = 0; u < 16; u++) {
                const __m512bh vb0 = (__m512bh)_mm512_loadu_si512(bt0 + u * 16), vb1 = (__m512bh)_mm512_loadu_si512(bt1 + u * 16);
#pragma GCC unroll 8
                for (int r = 0; r < 8; r++) {
                    const __m512bh va = (__m512bh)_mm512_set1_epi32((int)at[r * 16 + u]);
                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], va, vb0);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], va, vb1);
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            _mm512_storeu_ps(out + (8 * g + r) * ldo, acc[r][0]);
            _mm512_storeu_ps(out + (8 * g + r) * ldo + 16, acc[r][1]);
        }
    }
}
#else
static void dpbf_block32(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out, int64_t ldo, int64_t rows) {
    (void)a, (void)b0, (void)Kp, (void)out, (void)ldo, (void)rows;
}
static void amx_config(void) {}
void kernel_amx_bf16_begin(void) {}
static void block32(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out, int64_t ldo, int64_t rows) {
    (void)a, (void)b0, (void)Kp, (void)out, (void)ldo, (void)rows;
}
static void block32_pf(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out, int64_t ldo, int64_t rows) { block32(a, b0, Kp, out, ldo, rows); }
static void amx_release(void) {}
void kernel_amx_bf16_end(void) {}
static void epilogue(float *C, int64_t ldc, const float *out, int64_t ni, int64_t nj, float alpha, float beta) {
    (void)C, (void)ldc, (void)out, (void)ni, (void)nj, (void)alpha, (void)beta;
}
#endif

// Loop order: chunks of B panel pairs (up to 1 MB, kept in L2: every CPU with
// AMX has 2 MB) outermost; for each 32-row A block (in L1 while it meets the
// chunk's panels) every pair of the chunk.  Against the previous order (A
// chunks of 8 blocks in L2, each B pair meeting them in turn) the products
// ran ~10% faster alone (one core, 512 x 3072 x 576, weights streamed from
// memory), bf16 prefill 512 ~7% (alternating runs), and training's shapes
// (bench_train_gemm) alike or faster.
#define BCHUNK_BYTES (1024 * 1024)
// Contiguous ranges of blocks per thread, handed out dynamically: one range
// per thread (static) left the faster thread waiting whenever the two cores'
// tile units ran at different speeds, which on the shared host of
// BENCHMARKS.md is common (a bare tile product measured 12 TSC cycles on one
// vCPU and 28 on the other in the same second).  bf16 prefill 512, two
// threads, 10 alternating runs: median 2338 -> 2719 tok/s (1985-3826 ->
// 2082-3679); batch-32 bf16 decoding and a bf16 LoRA training step within
// the noise (1236 -> 1264 tok/s, 392 -> 418).
#define GEMM_PARTS_PER_THREAD 4

// C = alpha A B + beta C from the packed operands, each 32 x 32 block by
// block32 on AMX tiles (amx) or by dpbf_block32 on VDPBF16PS.
static void amx_compute(const uint16_t *Ap, const uint16_t *Bp, int64_t M, int64_t N, int64_t Kp, float alpha, float beta, float *C,
                        int64_t ldc, int nth, bool amx) {
    const int64_t nbm = round_up(M, BLK) / BLK, nbn = round_up(N, BLK) / BLK;
    const bool split_n = nbn >= nbm;
    const int64_t dim = split_n ? nbn : nbm;
    const int nt = (int)AS_MIN((int64_t)nth, dim);
    const bool direct = alpha == 1.0f && beta == 0.0f;
    const int64_t nchunk = AS_MAX((int64_t)1, BCHUNK_BYTES / (BLK * Kp * 2));
    void (*const blk)(const uint16_t *, const uint16_t *, int64_t, float *, int64_t, int64_t) = !amx ? dpbf_block32 : nbm == 1 ? block32_pf : block32;
    const int64_t n_parts = nt > 1 ? AS_MIN(dim, (int64_t)GEMM_PARTS_PER_THREAD * nt) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float out[BLK * BLK] __attribute__((aligned(64)));
        if (amx) amx_config();
#pragma omp for schedule(dynamic, 1)
        for (int64_t part = 0; part < n_parts; part++) {
            const int64_t lo = dim * part / n_parts, hi = dim * (part + 1) / n_parts;
            const int64_t m_lo = split_n ? 0 : lo, m_hi = split_n ? nbm : hi, n_lo = split_n ? lo : 0, n_hi = split_n ? hi : nbn;
            for (int64_t nc = n_lo; nc < n_hi; nc += nchunk)
                for (int64_t mb = m_lo; mb < m_hi; mb++)
                    for (int64_t nb = nc; nb < AS_MIN(nc + nchunk, n_hi); nb++) {
                        const int64_t i0 = mb * BLK, j0 = nb * BLK, ni = AS_MIN((int64_t)BLK, M - i0), nj = AS_MIN((int64_t)BLK, N - j0);
                        if (direct && ni == BLK && nj == BLK) { // C = the sums: tiles straight to C
                            blk(Ap + mb * BLK * Kp, Bp + nb * 2 * Kp * 16, Kp, C + i0 * ldc + j0, ldc, BLK);
                            continue;
                        }
                        blk(Ap + mb * BLK * Kp, Bp + nb * 2 * Kp * 16, Kp, out, BLK, ni);
                        epilogue(C + i0 * ldc + j0, ldc, out, ni, nj, alpha, beta);
                    }
        }
        if (amx) amx_release();
    }
}

// ---- fallback without AMX: bf16-rounded operands, fp32 sums ----

static float *rounded_copy(bool trans, int64_t rows, int64_t cols, const float *X, int64_t ld, int nth) {
    // op(X) (rows x cols) rounded, row-major, contiguous.
    float *r = as_aligned_alloc(sizeof(float) * (size_t)AS_MAX(rows * cols, (int64_t)1));
#pragma omp parallel for schedule(static) num_threads(nth) if (rows > 1)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) r[i * cols + j] = as_bf16_to_f32(as_f32_to_bf16(trans ? X[j * ld + i] : X[i * ld + j]));
    return r;
}

// C = alpha op(A) B + beta C on the rounded operands (ar: M x K contiguous;
// br: B in panels of FB_COLS columns, fb_at), each element as one fused
// multiply-add chain over k = 0 .. K-1 from zero, then alpha * sum (+ beta C
// as one more fused multiply-add when beta != 0).  One order per element
// whatever M, the blocking, the threads or the ISA (AVX-512, AVX2 or C: the
// same bits), so a row of C does not depend on the other rows of A: the bf16
// precision's batch invariance holds without AMX too (with OpenBLAS's sgemm,
// whose summation depends on the shape, generated text changed with the
// batch size).  Blocks of up to FB_ROWS rows x FB_COLS columns; threads take
// whole column blocks.  On the 2-core AVX-512 VM without AMX of BENCHMARKS.md
// (bf16 precision, bench_inference, 2 alternating pairs) this also ran faster
// than the sgemm it replaced: prefill 512 610-658 -> 906-948 tok/s, batch-32
// decoding 286-322 -> 360-419 (a first version that read B row-major, not
// in panels, was slower than sgemm: 464 and 195).
#define FB_ROWS 8
#define FB_COLS 32

// Element (k, n) of B in the fallback's layout: panels of FB_COLS columns, each
// K rows of FB_COLS floats (zeros past N), so a block streams its panel.
static inline int64_t fb_at(int64_t K, int64_t k, int64_t n) { return (n / FB_COLS * K + k) * FB_COLS + n % FB_COLS; }

// op(B) (K x nn; op = transpose when tb) rounded to bf16 into columns n0 ..
// n0+nn-1 of the panels at dst (K rows each).
static void fb_pack(float *dst, bool tb, int64_t K, int64_t n0, int64_t nn, const float *B, int64_t ldb, int nth) {
#pragma omp parallel for schedule(static) num_threads(nth) if (K > 1)
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < nn; j++) dst[fb_at(K, k, n0 + j)] = as_bf16_to_f32(as_f32_to_bf16(tb ? B[j * ldb + k] : B[k * ldb + j]));
}

static float *rounded_panels_alloc(int64_t K, int64_t N) {
    const size_t n = sizeof(float) * (size_t)AS_MAX((N + FB_COLS - 1) / FB_COLS * FB_COLS * K, (int64_t)1);
    float *p = as_aligned_alloc(n);
    memset(p, 0, n);
    return p;
}

// One block: rows x cols (<= FB_COLS) outputs from the panel bp of columns n0 ...
static void fb_block_c(const float *ar, const float *bp, int64_t K, int rows, int64_t n0, int cols, float alpha, float beta, float *C,
                       int64_t ldc) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(ar[r * K + k], bp[k * FB_COLS + c], acc);
            float *o = C + r * ldc + n0 + c;
            *o = beta != 0.0f ? fmaf(beta, *o, alpha * acc) : alpha * acc;
        }
}

#if defined(__x86_64__)
AVX512 static inline __attribute__((always_inline)) void fb_block_avx512(const float *ar, const float *bp, int64_t K, const int RB, int64_t n0,
                                                                         int cols, float alpha, float beta, float *C, int64_t ldc) {
    const __mmask16 m0 = as_lanes16(AS_MIN(cols, 16)), m1 = as_lanes16(AS_MAX(cols - 16, 0));
    __m512 acc[FB_ROWS][2];
#pragma GCC unroll 8
    for (int r = 0; r < RB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        const __m512 b0 = _mm512_load_ps(bp + k * FB_COLS), b1 = _mm512_load_ps(bp + k * FB_COLS + 16);
#pragma GCC unroll 8
        for (int r = 0; r < RB; r++) {
            const __m512 a = _mm512_set1_ps(ar[r * K + k]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < RB; r++)
        for (int h = 0; h < 2; h++) {
            const __mmask16 m = h ? m1 : m0;
            float *o = C + r * ldc + n0 + 16 * h;
            __m512 v = _mm512_mul_ps(va, acc[r][h]);
            if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, o), v);
            _mm512_mask_storeu_ps(o, m, v);
        }
}

// AVX2: the panel as two halves of 16 columns, 4 rows at a time (8 of the 16
// ymm registers accumulate); each lane's chain is the same as above.
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void fb_rows_avx2(const float *ar, const float *bp, int64_t K,
                                                                                                  const int RB, int64_t n0, int cols, float alpha,
                                                                                                  float beta, float *C, int64_t ldc) {
    for (int h = 0; h < 2 && 16 * h < cols; h++) {
        __m256 acc[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k++) {
            const __m256 b0 = _mm256_load_ps(bp + k * FB_COLS + 16 * h), b1 = _mm256_load_ps(bp + k * FB_COLS + 16 * h + 8);
#pragma GCC unroll 4
            for (int r = 0; r < RB; r++) {
                const __m256 a = _mm256_broadcast_ss(ar + r * K + k);
                acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
            }
        }
        _Alignas(32) float v[16];
        for (int r = 0; r < RB; r++) {
            _mm256_store_ps(v, _mm256_mul_ps(_mm256_set1_ps(alpha), acc[r][0]));
            _mm256_store_ps(v + 8, _mm256_mul_ps(_mm256_set1_ps(alpha), acc[r][1]));
            float *o = C + r * ldc + n0 + 16 * h;
            for (int c = 0; c < AS_MIN(16, cols - 16 * h); c++) o[c] = beta != 0.0f ? fmaf(beta, o[c], v[c]) : v[c];
        }
    }
}

__attribute__((target("avx2,fma"))) static void fb_block_avx2(const float *ar, const float *bp, int64_t K, int rows, int64_t n0, int cols,
                                                               float alpha, float beta, float *C, int64_t ldc) {
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const float *a = ar + r0 * K;
        float *c = C + r0 * ldc;
        switch (AS_MIN(4, rows - r0)) {
        case 1: fb_rows_avx2(a, bp, K, 1, n0, cols, alpha, beta, c, ldc); break;
        case 2: fb_rows_avx2(a, bp, K, 2, n0, cols, alpha, beta, c, ldc); break;
        case 3: fb_rows_avx2(a, bp, K, 3, n0, cols, alpha, beta, c, ldc); break;
        default: fb_rows_avx2(a, bp, K, 4, n0, cols, alpha, beta, c, ldc); break;
        }
    }
}

AVX512 static void fb_block_x86(const float *ar, const float *bp, int64_t K, int rows, int64_t n0, int cols, float alpha, float beta,
                                float *C, int64_t ldc) {
    switch (rows) {
    case 1: fb_block_avx512(ar, bp, K, 1, n0, cols, alpha, beta, C, ldc); break;
    case 2: fb_block_avx512(ar, bp, K, 2, n0, cols, alpha, beta, C, ldc); break;
    case 3: fb_block_avx512(ar, bp, K, 3, n0, cols, alpha, beta, C, ldc); break;
    case 4: fb_block_avx512(ar, bp, K, 4, n0, cols, alpha, beta, C, ldc); break;
    case 5: fb_block_avx512(ar, bp, K, 5, n0, cols, alpha, beta, C, ldc); break;
    case 6: fb_block_avx512(ar, bp, K, 6, n0, cols, alpha, beta, C, ldc); break;
    case 7: fb_block_avx512(ar, bp, K, 7, n0, cols, alpha, beta, C, ldc); break;
    default: fb_block_avx512(ar, bp, K, 8, n0, cols, alpha, beta, C, ldc); break;
    }
}
#endif

static void fb_gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *ar, const float *br, float beta, float *C, int64_t ldc,
                    int nth) {
    // The block kernel of the active ISA (kernels.h: ALPHASPIN_KERNEL_ISA caps
    // it; the tests run each).
    void (*block)(const float *, const float *, int64_t, int, int64_t, int, float, float, float *, int64_t) = fb_block_c;
#if defined(__x86_64__)
    const kernel_isa isa = kernel_current_isa();
    if (isa >= KERNEL_ISA_AVX512) block = fb_block_x86;
    else if (isa == KERNEL_ISA_AVX2) block = fb_block_avx2;
#endif
    const int64_t n_cb = (N + FB_COLS - 1) / FB_COLS;
#pragma omp parallel for schedule(static) num_threads(nth) if (n_cb > 1 && M * N * K >= GEMM_MIN_TILE_WORK)
    for (int64_t cb = 0; cb < n_cb; cb++) {
        const int64_t n0 = cb * FB_COLS;
        const int cols = (int)AS_MIN((int64_t)FB_COLS, N - n0);
        const float *bp = br + cb * K * FB_COLS;
        for (int64_t m0 = 0; m0 < M; m0 += FB_ROWS)
            block(ar + m0 * K, bp, K, (int)AS_MIN((int64_t)FB_ROWS, M - m0), n0, cols, alpha, beta, C + m0 * ldc, ldc);
    }
}

// ---- entry points ----

void kernel_bf16_pack_b(kernel_bf16_packed *p, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth) {
    packed_shape(p, K, N);
    if (bf16_packed_path()) {
        p->data = as_aligned_alloc(sizeof(uint16_t) * (size_t)(p->Kp * p->Np));
        pack_b(p->data, tb, K, N, B, ldb, p->Kp, p->Np, nth);
    }
    else {
        p->rounded = rounded_panels_alloc(K, N);
        fb_pack(p->rounded, tb, K, 0, N, B, ldb, nth);
    }
}

void kernel_bf16_pack_init(kernel_bf16_packed *p, int64_t K, int64_t N) {
    packed_shape(p, K, N);
    if (bf16_packed_path()) p->data = as_aligned_alloc(sizeof(uint16_t) * (size_t)(p->Kp * p->Np));
    else p->rounded = rounded_panels_alloc(K, N);
}

void kernel_bf16_pack_rows(kernel_bf16_packed *p, int64_t n0, int64_t nn, const float *W, int64_t ldw, int nth) {
    if (n0 % 16 || n0 < 0 || nn < 0 || n0 + nn > p->N || ((n0 + nn) % 16 && n0 + nn != p->N))
        as_die("kernel_bf16_pack_rows: rows %lld + %lld of %lld are not whole panels", (long long)n0, (long long)nn, (long long)p->N);
    if (p->rounded) {
        fb_pack(p->rounded, true, p->K, n0, nn, W, ldw, nth);
        return;
    }
    // Panels of these rows; the last chunk also writes the zero panels up to Np.
    const int64_t p0 = n0 / 16, p1 = n0 + nn == p->N ? p->Np / 16 : (n0 + nn) / 16;
    uint16_t *base = p->data + p0 * p->Kp * 16;
    pack_b(base, true, p->K, nn, W, ldw, p->Kp, (p1 - p0) * 16, nth);
}

void kernel_bf16_packed_free(kernel_bf16_packed *p) {
    free(p->data), free(p->rounded);
    memset(p, 0, sizeof *p);
}

void kernel_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const kernel_bf16_packed *P, float beta,
                            float *C, int64_t ldc, int nth) {
    const int64_t K = P->K, N = P->N;
    if (M == 0 || N == 0) return;
    if (P->rounded) {
        float *ar = rounded_copy(ta, M, K, A, lda, nth);
        fb_gemm(M, N, K, alpha, ar, P->rounded, beta, C, ldc, nth);
        free(ar);
        return;
    }
    const int64_t Mp = round_up(M, BLK);
    uint16_t *Ap = ws_get(SCRATCH_GEMM_A, (size_t)(Mp * P->Kp));
    pack_a(Ap, ta, M, K, A, lda, Mp, P->Kp, nth);
    // data: packed where AMX or VDPBF16PS ran (and every AMX CPU has AVX-512 BF16).
    amx_compute(Ap, P->data, M, N, P->Kp, alpha, beta, C, ldc, nth, kernel_gemm_bf16_amx());
}

void kernel_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float beta, float *C, int64_t ldc, int nth) {
    if (M == 0 || N == 0) return;
    kernel_bf16_packed P;
    if (!bf16_packed_path()) {
        kernel_bf16_pack_b(&P, tb, K, N, B, ldb, nth);
        kernel_gemm_bf16_packed(ta, M, alpha, A, lda, &P, beta, C, ldc, nth);
        kernel_bf16_packed_free(&P);
        return;
    }
    packed_shape(&P, K, N);
    P.data = ws_get(SCRATCH_GEMM_B, (size_t)(P.Kp * P.Np));
    pack_b(P.data, tb, K, N, B, ldb, P.Kp, P.Np, nth);
    kernel_gemm_bf16_packed(ta, M, alpha, A, lda, &P, beta, C, ldc, nth);
}
