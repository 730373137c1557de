// bf16 products on AMX tiles (see gemm_bf16.h).
//
// op(A) is packed to bf16 rows (Mp x Kp, K padded to 32 with zeros), op(B) to
// 16-column panels with pairs of K interleaved (the layout TDPBF16PS reads:
// tile row kk holds (B[2kk][n], B[2kk+1][n]) for 16 columns n).  A block of
// 32 x 32 outputs is four accumulator tiles (tmm0-3) fed by two A tiles
// (tmm4-5, 16 rows x 32 K) and two B tiles (tmm6-7) per step of 32 K; the
// sums stay in the tiles over all of K, then alpha/beta are applied on the way
// out.  Threads own contiguous ranges of blocks along the larger output
// dimension, so each element is summed by one thread in K order.
#define _GNU_SOURCE
#include "train/gemm_bf16.h"

#include <omp.h>
#include <string.h>

#include "tensor/kernels.h"
#include "tensor/kernels_impl.h"
#include "train/ops.h"
#include "util/common.h"

#define BLK 32

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

bool train_gemm_bf16_amx(void) {
    const char *env = getenv("ALPHASPIN_TRAIN_NO_AMX"); // testing the fallback on an AMX machine
    if (env && *env && strcmp(env, "0")) return false;
    return cpu_get_features()->amx_bf16 && kernel_amx_permitted();
}

// ---- packing ----

// op(A) (M x K) -> Ap (Mp x Kp) bf16, zero padded.
static void pack_a(uint16_t *Ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t Mp, int64_t Kp, int nth) {
    const int64_t nb = Mp / 16;
#pragma omp parallel for schedule(static) num_threads(nth) if (nb > 1)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * 16;
        uint16_t *dst = Ap + i0 * Kp;
        memset(dst, 0, sizeof(uint16_t) * (size_t)(16 * Kp));
        const int64_t ni = AS_MIN((int64_t)16, M - i0);
        if (ni <= 0) continue;
        if (!ta)
            for (int64_t i = 0; i < ni; i++) {
                const float *src = A + (i0 + i) * lda;
                uint16_t *d = dst + i * Kp;
                for (int64_t k = 0; k < K; k++) d[k] = train_f32_to_bf16(src[k]);
            }
        else
            for (int64_t k = 0; k < K; k++) {
                const float *src = A + k * lda + i0;
                for (int64_t i = 0; i < ni; i++) dst[i * Kp + k] = train_f32_to_bf16(src[i]);
            }
    }
}

// op(B) (K x N) -> panels (Np/16) x (Kp/2) x 16 x 2, zero padded.
static void pack_b(uint16_t *Bp, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int64_t Kp, int64_t Np, int nth) {
    const int64_t np = Np / 16;
#pragma omp parallel for schedule(static) num_threads(nth) if (np > 1)
    for (int64_t p = 0; p < np; p++) {
        const int64_t n0 = p * 16;
        uint16_t *dst = Bp + p * Kp * 16;
        memset(dst, 0, sizeof(uint16_t) * (size_t)(16 * Kp));
        const int64_t nn = AS_MIN((int64_t)16, N - n0);
        if (nn <= 0) continue;
        if (tb)
            for (int64_t n = 0; n < nn; n++) {
                const float *src = B + (n0 + n) * ldb;
                for (int64_t k = 0; k < K; k++) dst[((k >> 1) * 16 + n) * 2 + (k & 1)] = train_f32_to_bf16(src[k]);
            }
        else
            for (int64_t k = 0; k < K; k++) {
                const float *src = B + k * ldb + n0;
                uint16_t *d = dst + (k >> 1) * 32 + (k & 1);
                for (int64_t n = 0; n < nn; n++) d[2 * n] = train_f32_to_bf16(src[n]);
            }
    }
}

// ---- AMX ----

#if defined(__x86_64__)
#include <immintrin.h>
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

// out (32 x 32 fp32) = A rows (32 x Kp) . B panels p, p+1.
AMX_TARGET static void block32(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out) {
    const uint16_t *b1 = b0 + Kp * 16;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const int64_t sa = Kp * 2;
    for (int64_t k = 0; k < Kp; k += 32) {
        _tile_loadd(4, a + k, sa);
        _tile_loadd(6, b0 + k * 16, 64);
        _tile_loadd(5, a + 16 * Kp + k, sa);
        _tile_loadd(7, b1 + k * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 128);
    _tile_stored(1, out + 16, 128);
    _tile_stored(2, out + 16 * 32, 128);
    _tile_stored(3, out + 16 * 32 + 16, 128);
}

AMX_TARGET static void amx_release(void) { _tile_release(); }
#else
static void amx_config(void) {}
static void block32(const uint16_t *a, const uint16_t *b0, int64_t Kp, float *out) { (void)a, (void)b0, (void)Kp, (void)out; }
static void amx_release(void) {}
#endif

// Blocks of 32 rows kept hot while the B panels pass (A chunk ~ L2).
#define MCHUNK 8

static void amx_compute(const uint16_t *Ap, const uint16_t *Bp, int64_t M, int64_t N, int64_t Kp, float alpha, float beta, float *C,
                        int64_t ldc, int nth) {
    const int64_t nbm = round_up(M, BLK) / BLK, nbn = round_up(N, BLK) / BLK;
    const bool split_n = nbn >= nbm;
    const int64_t dim = split_n ? nbn : nbm;
    const int nt = (int)AS_MIN((int64_t)nth, dim);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = nt > 1 ? omp_get_thread_num() : 0;
        const int64_t lo = dim * t / nt, hi = dim * (t + 1) / nt;
        const int64_t m_lo = split_n ? 0 : lo, m_hi = split_n ? nbm : hi, n_lo = split_n ? lo : 0, n_hi = split_n ? hi : nbn;
        float out[BLK * BLK] __attribute__((aligned(64)));
        amx_config();
        for (int64_t mc = m_lo; mc < m_hi; mc += MCHUNK)
            for (int64_t nb = n_lo; nb < n_hi; nb++)
                for (int64_t mb = mc; mb < AS_MIN(mc + MCHUNK, m_hi); mb++) {
                    block32(Ap + mb * BLK * Kp, Bp + nb * 2 * Kp * 16, Kp, out);
                    const int64_t i0 = mb * BLK, j0 = nb * BLK, ni = AS_MIN((int64_t)BLK, M - i0), nj = AS_MIN((int64_t)BLK, N - j0);
                    for (int64_t i = 0; i < ni; i++) {
                        float *c = C + (i0 + i) * ldc + j0;
                        const float *o = out + i * BLK;
                        if (beta == 0.0f)
                            for (int64_t j = 0; j < nj; j++) c[j] = alpha * o[j];
                        else
                            for (int64_t j = 0; j < nj; j++) c[j] = alpha * o[j] + beta * c[j];
                    }
                }
        amx_release();
    }
}

// ---- fallback: bf16-rounded operands through fp32 sgemm ----

static float *rounded_copy(bool trans, int64_t rows, int64_t cols, const float *X, int64_t ld, int nth) {
    // op(X) (rows x cols) rounded, row-major, contiguous.
    float *r = as_aligned_alloc(sizeof(float) * (size_t)AS_MAX(rows * cols, (int64_t)1));
#pragma omp parallel for schedule(static) num_threads(nth) if (rows > 1)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) r[i * cols + j] = train_bf16_to_f32(train_f32_to_bf16(trans ? X[j * ld + i] : X[i * ld + j]));
    return r;
}

// ---- entry points ----

void train_bf16_pack_b(train_bf16_packed *p, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth) {
    memset(p, 0, sizeof *p);
    p->K = K, p->N = N, p->Kp = round_up(AS_MAX(K, (int64_t)1), 32), p->Np = round_up(AS_MAX(N, (int64_t)1), BLK);
    if (train_gemm_bf16_amx()) {
        p->data = as_aligned_alloc(sizeof(uint16_t) * (size_t)(p->Kp * p->Np));
        pack_b(p->data, tb, K, N, B, ldb, p->Kp, p->Np, nth);
    }
    else p->rounded = rounded_copy(tb, K, N, B, ldb, nth);
}

void train_bf16_packed_free(train_bf16_packed *p) {
    free(p->data), free(p->rounded);
    memset(p, 0, sizeof *p);
}

void train_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const train_bf16_packed *P, float beta,
                            float *C, int64_t ldc, int nth) {
    const int64_t K = P->K, N = P->N;
    if (M == 0 || N == 0) return;
    if (P->rounded) {
        float *ar = rounded_copy(ta, M, K, A, lda, nth);
        train_gemm(false, false, M, N, K, alpha, ar, K, P->rounded, N, beta, C, ldc, nth);
        free(ar);
        return;
    }
    const int64_t Mp = round_up(M, BLK);
    uint16_t *Ap = as_aligned_alloc(sizeof(uint16_t) * (size_t)(Mp * P->Kp));
    pack_a(Ap, ta, M, K, A, lda, Mp, P->Kp, nth);
    amx_compute(Ap, P->data, M, N, P->Kp, alpha, beta, C, ldc, nth);
    free(Ap);
}

void train_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float beta, float *C, int64_t ldc, int nth) {
    if (M == 0 || N == 0) return;
    train_bf16_packed P;
    train_bf16_pack_b(&P, tb, K, N, B, ldb, nth);
    train_gemm_bf16_packed(ta, M, alpha, A, lda, &P, beta, C, ldc, nth);
    train_bf16_packed_free(&P);
}
