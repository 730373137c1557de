// Rank-r LoRA products (lora_gemm.h).  The rank-r operand stays in
// registers (or L1) while the big operand streams once from where it lies:
//   rows_narrow: 8 rows of x at a time, a 16-wide slice of W's row k per
//     step, the 8 x 16 outputs in 8 registers (broadcast x[i][k] times W[k]);
//   rows_wide: 4 rows x 64 columns of y in 16 registers, over the r terms;
//   reduce: a 16-column slice of x down all N rows, times up to 16 v[i][j]
//     broadcast, the 16 x 16 sums in 16 registers.
// Every output element is kernel_sgemm's (gemm.h): one fused multiply-add
// chain over its sum index in increasing order from 0, t = alpha acc (one
// rounded multiply), then fmaf(beta, old, t) when beta != 0, else t; a
// dropout as lora_gemm.h says.  The blocking and the thread split decide only
// which element is computed where, so these give the generic path's bits.
#include "tensor/lora_gemm.h"

#include <math.h>
#include <stdlib.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "tensor/train_ops.h"
#include "util/common.h"

// Buffers of the calling thread, kept between calls: the transposed rank-r
// operand (returned to the caller), the generic path's scratch copy of the
// big operand, and the AVX-512 narrow product's block of rows made by a fill.
// (kernel_scratch: freed when the thread exits).
enum { BUF_TRANSPOSED = SCRATCH_LORA_T, BUF_SCRATCH = SCRATCH_LORA_COPY, BUF_ROWS = SCRATCH_LORA_ROWS };

static float *thread_buffer(int which, size_t n) { return kernel_scratch(which, sizeof(float) * (n > 0 ? n : 1)); }

const float *lora_gemm_transposed(const float *a, int64_t rows, int64_t cols) {
    float *buf = thread_buffer(BUF_TRANSPOSED, (size_t)(rows * cols));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) buf[j * rows + i] = a[i * cols + j];
    return buf;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

// kernel_sgemm's epilogue on 16 elements: t = alpha acc (alpha 1: acc, the
// same bits), then fmaf(beta, old, t), or t when beta is 0 (old not read).
AVX512 static inline __attribute__((always_inline)) __m512 epilogue(__m512 acc, float alpha, float beta, __mmask16 m, const float *old) {
    const __m512 t = alpha == 1.0f ? acc : _mm512_mul_ps(_mm512_set1_ps(alpha), acc);
    return beta != 0.0f ? _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, old), t) : t;
}

// R rows of out (16 columns from j0, mask m) from the R rows of x at xb;
// pf: the next block's rows to prefetch (n_pf of them), or NULL.
#define NARROW_R 8
AVX512 static inline __attribute__((always_inline)) void narrow_block(int R, int64_t K, int64_t r, int64_t j0, __mmask16 m, float alpha,
                                                                     const float *xb, const float *pf, int64_t n_pf, const float *W,
                                                                     float beta, float *ob) {
    __m512 acc[NARROW_R];
#pragma GCC unroll 8
    for (int q = 0; q < R; q++) acc[q] = _mm512_setzero_ps();
    // The next block's rows of x, one line every other k (R rows x K / 16
    // lines in K / 2 steps): R interleaved row streams defeat the hardware prefetcher.
    int64_t pf_off = 0;
    const int64_t pf_end = pf ? n_pf * K : 0;
    for (int64_t k = 0; k < K; k++) {
        if (!(k & 1) && pf_off < pf_end) _mm_prefetch((const char *)(pf + pf_off), _MM_HINT_T0), pf_off += 16;
        const __m512 w = _mm512_maskz_loadu_ps(m, W + k * r + j0);
#pragma GCC unroll 8
        for (int q = 0; q < R; q++) acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(xb[q * K + k]), w, acc[q]);
    }
#pragma GCC unroll 8
    for (int q = 0; q < R; q++) {
        float *o = ob + q * r + j0;
        _mm512_mask_storeu_ps(o, m, epilogue(acc[q], alpha, beta, m, o));
    }
}

// x in place, or (fill) each block's rows made into a buffer of the thread.
AVX512 static void rows_narrow_avx512(int64_t N, int64_t K, int64_t r, float alpha, const float *x, lora_rows_fn fill, void *ctx,
                                      const float *W, float beta, float *out, int nth) {
    const int64_t nblk = (N + NARROW_R - 1) / NARROW_R;
#pragma omp parallel num_threads(nth) if (nblk > 1)
    {
        float *buf = fill ? thread_buffer(BUF_ROWS, (size_t)(NARROW_R * K)) : NULL;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            const int64_t i = b * NARROW_R, n = AS_MIN((int64_t)NARROW_R, N - i);
            const int64_t n_pf = AS_MAX((int64_t)0, AS_MIN((int64_t)NARROW_R, N - (i + n)));
            const float *xb = buf, *pf = NULL;
            if (fill) fill(ctx, i, n, buf);
            else xb = x + i * K, pf = n_pf ? x + (i + n) * K : NULL;
            for (int64_t j0 = 0; j0 < r; j0 += 16) {
                const __mmask16 m = as_lanes16(r - j0);
                if (n == NARROW_R) narrow_block(NARROW_R, K, r, j0, m, alpha, xb, pf, n_pf, W, beta, out + i * r);
                else
                    for (int64_t q = 0; q < n; q++) narrow_block(1, K, r, j0, m, alpha, xb + q * K, NULL, 0, W, beta, out + (i + q) * r);
            }
        }
    }
}

// R rows x C 16-column vectors of y from column c0 (mask m on the last vector).
#define WIDE_R 4
#define WIDE_C 4
AVX512 static inline __attribute__((always_inline)) void wide_block(int R, int C, int64_t i, int64_t c0, __mmask16 m, int64_t r, int64_t D,
                                                                   float alpha, const float *u, const float *M, const lora_drop *drop,
                                                                   float beta, float *y) {
    __m512 acc[WIDE_R][WIDE_C];
#pragma GCC unroll 4
    for (int q = 0; q < R; q++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[q][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < r; j++) {
        __m512 mv[WIDE_C];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) mv[c] = _mm512_maskz_loadu_ps(c == C - 1 ? m : (__mmask16)0xffff, M + j * D + c0 + 16 * c);
#pragma GCC unroll 4
        for (int q = 0; q < R; q++) {
            const __m512 b = _mm512_set1_ps(u[(i + q) * r + j]);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[q][c] = _mm512_fmadd_ps(b, mv[c], acc[q][c]);
        }
    }
    const __m512 ks = _mm512_set1_ps(drop ? drop->scale : 0.0f);
    const int64_t w = (D + 15) / 16;
#pragma GCC unroll 4
    for (int q = 0; q < R; q++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const __mmask16 mc = c == C - 1 ? m : (__mmask16)0xffff;
            float *o = y + (i + q) * D + c0 + 16 * c;
            __m512 v;
            if (drop) { // train_dropout_row_mask on t = alpha acc: t (keep ? scale : 0), or fmaf(t, that, y) when beta is 1
                const __m512 sel = _mm512_maskz_mov_ps((__mmask16)drop->keep[(i + q) * w + (c0 / 16 + c)], ks);
                const __m512 t = epilogue(acc[q][c], alpha, 0.0f, mc, o);
                v = beta != 0.0f ? _mm512_fmadd_ps(t, sel, _mm512_maskz_loadu_ps(mc, o)) : _mm512_mul_ps(t, sel);
            }
            else v = epilogue(acc[q][c], alpha, beta, mc, o);
            _mm512_mask_storeu_ps(o, mc, v);
        }
}

AVX512 static void rows_wide_avx512(int64_t N, int64_t r, int64_t D, float alpha, const float *u, const float *M, const lora_drop *drop,
                                    float beta, float *y, int nth) {
    const int64_t nblk = (N + WIDE_R - 1) / WIDE_R, nvec = (D + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(nth) if (nblk > 1)
    for (int64_t b = 0; b < nblk; b++) {
        const int64_t i = b * WIDE_R;
        for (int64_t v0 = 0; v0 < nvec; v0 += WIDE_C) {
            const int C = (int)AS_MIN((int64_t)WIDE_C, nvec - v0);
            const int64_t c0 = 16 * v0;
            const __mmask16 m = as_lanes16(D - (c0 + 16 * (C - 1)));
            if (i + WIDE_R <= N && C == WIDE_C) wide_block(WIDE_R, WIDE_C, i, c0, m, r, D, alpha, u, M, drop, beta, y);
            else
                for (int64_t i1 = i; i1 < AS_MIN(i + WIDE_R, N); i1++)
                    for (int c = 0; c < C; c++) {
                        const int64_t cc = c0 + 16 * c;
                        wide_block(1, 1, i1, cc, as_lanes16(D - cc), r, D, alpha, u, M, drop, beta, y);
                    }
        }
    }
}

#define REDUCE_PF 16 // rows ahead

// G rows j0 .. j0+NJ-1 (columns c0 .. c0+15, mask m) += alpha sum_i v[i][j] drop(x)[i][c].
AVX512 static inline __attribute__((always_inline)) void reduce_block(int NJ, int64_t N, int64_t r, int64_t D, int64_t j0, int64_t c0, __mmask16 m,
                                                                     float alpha, const float *v, const float *x, const lora_drop *drop,
                                                                     bool trans, float *G) {
    const int64_t w = (D + 15) / 16;
    const __m512 ks = _mm512_set1_ps(drop ? drop->scale : 1.0f);
    __m512 acc[16];
#pragma GCC unroll 16
    for (int j = 0; j < NJ; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < N; i++) {
        // x's rows are D floats apart: too far for the hardware prefetcher.
        if (i + REDUCE_PF < N) _mm_prefetch((const char *)(x + (i + REDUCE_PF) * D + c0), _MM_HINT_T0);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i * D + c0);
        if (drop) xv = _mm512_mul_ps(xv, _mm512_maskz_mov_ps((__mmask16)drop->keep[i * w + c0 / 16], ks)); // as dropout_mask_512
#pragma GCC unroll 16
        for (int j = 0; j < NJ; j++) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(v[i * r + j0 + j]), xv, acc[j]);
    }
    if (!trans) { // G = fmaf(1, G, alpha acc): beta 1
#pragma GCC unroll 16
        for (int j = 0; j < NJ; j++) {
            float *g = G + (j0 + j) * D + c0;
            _mm512_mask_storeu_ps(g, m, epilogue(acc[j], alpha, 1.0f, m, g));
        }
        return;
    }
    _Alignas(64) float t[16][16];
#pragma GCC unroll 16
    for (int j = 0; j < NJ; j++) _mm512_store_ps(t[j], epilogue(acc[j], alpha, 0.0f, m, NULL));
    const int nc = (int)AS_MIN((int64_t)16, D - c0);
    for (int c = 0; c < nc; c++)
        for (int j = 0; j < NJ; j++) G[(c0 + c) * r + j0 + j] = fmaf(1.0f, G[(c0 + c) * r + j0 + j], t[j][c]);
}

AVX512 static void reduce_avx512(int64_t N, int64_t r, int64_t D, float alpha, const float *v, const float *x, const lora_drop *drop, bool trans,
                                 float *G, int nth) {
    const int64_t nvec = (D + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(nth) if (nvec > 1)
    for (int64_t cv = 0; cv < nvec; cv++) {
        const int64_t c0 = 16 * cv;
        const __mmask16 m = as_lanes16(D - c0);
        int64_t j0 = 0;
        for (; j0 + 16 <= r; j0 += 16) reduce_block(16, N, r, D, j0, c0, m, alpha, v, x, drop, trans, G);
        if (r - j0 >= 8) reduce_block(8, N, r, D, j0, c0, m, alpha, v, x, drop, trans, G), j0 += 8;
        if (r - j0 >= 4) reduce_block(4, N, r, D, j0, c0, m, alpha, v, x, drop, trans, G), j0 += 4;
        if (r - j0 >= 2) reduce_block(2, N, r, D, j0, c0, m, alpha, v, x, drop, trans, G), j0 += 2;
        if (r - j0 >= 1) reduce_block(1, N, r, D, j0, c0, m, alpha, v, x, drop, trans, G);
    }
}

// The AVX-512 kernels unless ALPHASPIN_KERNEL_ISA caps the ISA below it (the
// tests run the generic path that way too).
static bool use_avx512(void) { return kernel_vec_level() == KERNEL_VEC_AVX512; }
#else
static bool use_avx512(void) { return false; }
#endif

// Without AVX-512 a dropout (or a fill) is a separate pass through the
// calling thread's scratch buffer (train_dropout_row_mask's arithmetic).
static float *scratch(size_t n) { return thread_buffer(BUF_SCRATCH, n); }

// x's rows in place, or made by fill.
static void narrow(int64_t N, int64_t K, int64_t r, float alpha, const float *x, lora_rows_fn fill, void *ctx, const float *W, float beta,
                   float *out, int nth) {
    if (N < 1 || r < 1) return;
#if defined(__x86_64__)
    if (use_avx512()) {
        rows_narrow_avx512(N, K, r, alpha, x, fill, ctx, W, beta, out, nth);
        return;
    }
#endif
    if (fill) {
        float *t = scratch((size_t)(N * K));
        const int64_t step = 64;
#pragma omp parallel for schedule(static) num_threads(nth) if (N > step)
        for (int64_t i = 0; i < N; i += step) fill(ctx, i, AS_MIN(step, N - i), t + i * K);
        x = t;
    }
    kernel_sgemm(false, false, N, r, K, alpha, x, K, W, r, beta, out, r, nth);
}

void lora_gemm_rows_narrow(int64_t N, int64_t K, int64_t r, float alpha, const float *x, const float *W, float beta, float *out, int nth) {
    narrow(N, K, r, alpha, x, NULL, NULL, W, beta, out, nth);
}

void lora_gemm_rows_narrow_fill(int64_t N, int64_t K, int64_t r, float alpha, lora_rows_fn fill, void *ctx, const float *W, float beta,
                                float *out, int nth) {
    narrow(N, K, r, alpha, NULL, fill, ctx, W, beta, out, nth);
}

void lora_gemm_rows_wide(int64_t N, int64_t r, int64_t D, float alpha, const float *u, const float *M, const lora_drop *drop, float beta,
                         float *y, int nth) {
    if (N < 1 || D < 1) return;
#if defined(__x86_64__)
    if (use_avx512()) {
        rows_wide_avx512(N, r, D, alpha, u, M, drop, beta, y, nth);
        return;
    }
#endif
    if (!drop) {
        kernel_sgemm(false, false, N, D, r, alpha, u, r, M, D, beta, y, D, nth);
        return;
    }
    float *t = scratch((size_t)(N * D));
    kernel_sgemm(false, false, N, D, r, alpha, u, r, M, D, 0.0f, t, D, nth);
    const int64_t w = (D + 15) / 16;
    for (int64_t i = 0; i < N; i++) train_dropout_row_mask(y + i * D, t + i * D, D, drop->keep + i * w, drop->scale, beta != 0.0f);
}

void lora_gemm_reduce(int64_t N, int64_t r, int64_t D, float alpha, const float *v, const float *x, const lora_drop *drop, bool trans,
                      float *G, int nth) {
    if (N < 1 || r < 1 || D < 1) return;
#if defined(__x86_64__)
    if (use_avx512()) {
        reduce_avx512(N, r, D, alpha, v, x, drop, trans, G, nth);
        return;
    }
#endif
    if (drop) {
        float *t = scratch((size_t)(N * D));
        const int64_t w = (D + 15) / 16;
        for (int64_t i = 0; i < N; i++) train_dropout_row_mask(t + i * D, x + i * D, D, drop->keep + i * w, drop->scale, 0);
        x = t;
    }
    if (trans) kernel_sgemm(true, false, D, r, N, alpha, x, D, v, r, 1.0f, G, r, nth);
    else kernel_sgemm(true, false, r, D, N, alpha, v, r, x, D, 1.0f, G, D, nth);
}
