// kernel_sgemm (gemm.h): the project's own fp32 product, one summation order
// per output element on every ISA, thread count and shape:
//
//   acc = 0;  for k = 0 .. K-1:  acc = fma(op(A)[m][k], op(B)[k][n], acc)
//   t = alpha * acc          (skipped when alpha == 1: the same bits)
//   C[m][n] = beta != 0 ? fma(beta, C[m][n], t) : t
//
// The vector width decides only how many elements are computed side by side
// (AVX-512: 12 x 32 per block, AVX2: 6 x 16, C: one at a time with fmaf), the
// threads only which elements each computes.  K is cut into blocks of SG_KC
// for the caches; an element's running sum is stored between blocks and
// reloaded, which continues the same chain.  So the results are bitwise the
// same on every CPU and for every thread count, and a row of C does not
// depend on the other rows of A (batch invariance).  OpenBLAS's sgemm, which
// this replaced, sums in an order that depends on the shape, the thread count
// and the CPU model.
//
// Orientation.  The blocks compute T[i][j] = sum_k S(i,k) V(k,j), where V is
// read as vectors along j (it must be contiguous in j) and S is broadcast:
//   op(B) not transposed: V = B, S = op(A), T = C;
//   op(B) transposed: it is contiguous along k only, so the smaller of op(A)
//     and op(B) is copied transposed first (K-major): V = that copy, and when
//     it is op(A) the roles swap: S = op(B)^T rows, T = C^T (written to C
//     element by element through the block's epilogue).
#define _GNU_SOURCE
#include "tensor/gemm.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "tensor/lanes_x86.h"
#include "util/common.h"

#define SG_KC 256   // K per block: a 256 x 32 panel of V is 32 KB (L1)
#define SG_IB 96    // rows of T per work item (8 AVX-512 blocks, 16 AVX2 blocks)
#define SG_JB 1024  // most columns of T per work item (bounds the running sums: 96 x 1024 floats)
#define SG_MIN_WORK (1 << 16) // multiply-adds below which one thread does it all

typedef struct sg_problem {
    const float *s;    // S(i, k) = s[i * s_i + k * s_k]
    int64_t s_i, s_k;
    const float *v;    // V(k, j) = v[k * v_k + j]
    int64_t v_k;
    float *c;          // T[i][j] = c[i * c_i + j * c_j]
    int64_t c_i, c_j;
    int64_t I, J, K;
    float alpha, beta;
} sg_problem;

// One block of rows x cols elements of T at (i0, j0), over k0 .. k0+kn-1.
// first: the sums start at 0, else at run[r * ld_run + c]; last: the
// epilogue writes T, else the sums go back to run.
typedef void (*sg_block_fn)(const sg_problem *P, int rows, int64_t i0, int cols, int64_t j0, int64_t k0, int64_t kn, bool first,
                            bool last, float *run, int64_t ld_run);

// The epilogue of one element (the vector versions do the same per lane).
static inline float sg_out(float acc, float alpha, float beta, const float *c) {
    const float t = alpha == 1.0f ? acc : alpha * acc;
    return beta != 0.0f ? fmaf(beta, *c, t) : t;
}

static void block_c(const sg_problem *P, int rows, int64_t i0, int cols, int64_t j0, int64_t k0, int64_t kn, bool first, bool last,
                    float *run, int64_t ld_run) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float acc = first ? 0.0f : run[r * ld_run + c];
            const float *s = P->s + (i0 + r) * P->s_i + k0 * P->s_k, *v = P->v + k0 * P->v_k + j0 + c;
            for (int64_t k = 0; k < kn; k++) acc = fmaf(s[k * P->s_k], v[k * P->v_k], acc);
            if (last) {
                float *o = P->c + (i0 + r) * P->c_i + (j0 + c) * P->c_j;
                *o = sg_out(acc, P->alpha, P->beta, o);
            }
            else run[r * ld_run + c] = acc;
        }
}

#if defined(__x86_64__)
#include <immintrin.h>

// A block's results (rows x cols, row stride ld) through the epilogue into T
// where T's columns are not contiguous (c_j != 1): element by element.
static void store_scattered(const sg_problem *P, const float *t, int64_t ld, int rows, int64_t i0, int cols, int64_t j0) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float *o = P->c + (i0 + r) * P->c_i + (j0 + c) * P->c_j;
            *o = P->beta != 0.0f ? fmaf(P->beta, *o, t[r * ld + c]) : t[r * ld + c];
        }
}

// ---- AVX-512: up to 12 rows x 32 columns, 24 accumulators ----
#define MR512 12
#define AVX512 __attribute__((target("avx512f,fma")))

// S's rows: with s_k == 1 each row is a stream along k; four base pointers
// (rows 0, 3, 6, 9) plus s_i and 2 s_i reach all 12 without spilling.
AVX512 static inline __attribute__((always_inline)) void block512(const sg_problem *P, const int RB, const int NV, int64_t i0, int cols,
                                                                   int64_t j0, int64_t k0, int64_t kn, bool first, bool last, float *run,
                                                                   int64_t ld_run) {
    const __mmask16 m0 = as_lanes16(cols), m1 = as_lanes16(cols - 16);
    __m512 acc[MR512][2];
#pragma GCC unroll 12
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
        for (int h = 0; h < NV; h++)
            acc[r][h] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(h ? m1 : m0, run + r * ld_run + 16 * h);
    const int64_t si = P->s_i, sk = P->s_k, vk = P->v_k;
    const float *s = P->s + i0 * si + k0 * sk, *v = P->v + k0 * vk + j0;
    if (sk == 1) {
        const float *p0 = s, *p3 = s + 3 * si, *p6 = s + 6 * si, *p9 = s + 9 * si;
        for (int64_t k = 0; k < kn; k++) {
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, v), b1 = NV > 1 ? _mm512_maskz_loadu_ps(m1, v + 16) : b0;
#pragma GCC unroll 12
            for (int r = 0; r < RB; r++) {
                const float *p = r < 3 ? p0 : r < 6 ? p3 : r < 9 ? p6 : p9;
                const __m512 a = _mm512_set1_ps(p[(r % 3) * si + k]);
                acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
                if (NV > 1) acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
            }
            v += vk;
        }
    }
    else {
        for (int64_t k = 0; k < kn; k++) {
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, v), b1 = NV > 1 ? _mm512_maskz_loadu_ps(m1, v + 16) : b0;
#pragma GCC unroll 12
            for (int r = 0; r < RB; r++) {
                const __m512 a = _mm512_set1_ps(s[r * si]);
                acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
                if (NV > 1) acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
            }
            s += sk, v += vk;
        }
    }
    if (!last) {
#pragma GCC unroll 12
        for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
            for (int h = 0; h < NV; h++) _mm512_mask_storeu_ps(run + r * ld_run + 16 * h, h ? m1 : m0, acc[r][h]);
        return;
    }
    const __m512 va = _mm512_set1_ps(P->alpha), vb = _mm512_set1_ps(P->beta);
    const bool scale = P->alpha != 1.0f, accumulate = P->beta != 0.0f, direct = P->c_j == 1;
    _Alignas(64) float t[MR512 * 32];
#pragma GCC unroll 12
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
        for (int h = 0; h < NV; h++) {
            const __mmask16 m = h ? m1 : m0;
            __m512 x = scale ? _mm512_mul_ps(va, acc[r][h]) : acc[r][h];
            if (direct) {
                float *o = P->c + (i0 + r) * P->c_i + j0 + 16 * h;
                if (accumulate) x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, o), x);
                _mm512_mask_storeu_ps(o, m, x);
            }
            else _mm512_store_ps(t + r * 32 + 16 * h, x);
        }
    if (!direct) store_scattered(P, t, 32, RB, i0, cols, j0);
}

AVX512 static void block_avx512(const sg_problem *P, int rows, int64_t i0, int cols, int64_t j0, int64_t k0, int64_t kn, bool first,
                                bool last, float *run, int64_t ld_run) {
    for (int c0 = 0; c0 < cols; c0 += 32) {
        const int nc = cols - c0 < 32 ? cols - c0 : 32;
        for (int r0 = 0; r0 < rows; r0 += MR512) {
            const int rb = rows - r0 < MR512 ? rows - r0 : MR512;
            const int64_t ir = i0 + r0;
            float *rr = run ? run + r0 * ld_run + c0 : NULL;
            switch (rb) {
#define B512(RB)                                                                                                                   \
    case RB:                                                                                                                       \
        if (nc > 16) block512(P, RB, 2, ir, nc, j0 + c0, k0, kn, first, last, rr, ld_run);                                         \
        else block512(P, RB, 1, ir, nc, j0 + c0, k0, kn, first, last, rr, ld_run);                                                 \
        break;
                B512(1) B512(2) B512(3) B512(4) B512(5) B512(6) B512(7) B512(8) B512(9) B512(10) B512(11) default: B512(12)
#undef B512
            }
        }
    }
}

// ---- AVX2: up to 6 rows x 16 columns, 12 accumulators ----
#define MR256 6
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256i lanes8(int left) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
}

AVX2 static inline __attribute__((always_inline)) void block256(const sg_problem *P, const int RB, const int NV, int64_t i0, int cols,
                                                                 int64_t j0, int64_t k0, int64_t kn, bool first, bool last, float *run,
                                                                 int64_t ld_run) {
    const __m256i m0 = lanes8(cols), m1 = lanes8(cols - 8);
    __m256 acc[MR256][2];
#pragma GCC unroll 6
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
        for (int h = 0; h < NV; h++)
            acc[r][h] = first ? _mm256_setzero_ps() : _mm256_maskload_ps(run + r * ld_run + 8 * h, h ? m1 : m0);
    const int64_t si = P->s_i, sk = P->s_k, vk = P->v_k;
    const float *s = P->s + i0 * si + k0 * sk, *v = P->v + k0 * vk + j0;
    if (sk == 1) {
        const float *p0 = s, *p3 = s + 3 * si;
        for (int64_t k = 0; k < kn; k++) {
            const __m256 b0 = _mm256_maskload_ps(v, m0), b1 = NV > 1 ? _mm256_maskload_ps(v + 8, m1) : b0;
#pragma GCC unroll 6
            for (int r = 0; r < RB; r++) {
                const float *p = r < 3 ? p0 : p3;
                const __m256 a = _mm256_broadcast_ss(p + (r % 3) * si + k);
                acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                if (NV > 1) acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
            }
            v += vk;
        }
    }
    else {
        for (int64_t k = 0; k < kn; k++) {
            const __m256 b0 = _mm256_maskload_ps(v, m0), b1 = NV > 1 ? _mm256_maskload_ps(v + 8, m1) : b0;
#pragma GCC unroll 6
            for (int r = 0; r < RB; r++) {
                const __m256 a = _mm256_broadcast_ss(s + r * si);
                acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                if (NV > 1) acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
            }
            s += sk, v += vk;
        }
    }
    if (!last) {
#pragma GCC unroll 6
        for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
            for (int h = 0; h < NV; h++) _mm256_maskstore_ps(run + r * ld_run + 8 * h, h ? m1 : m0, acc[r][h]);
        return;
    }
    const __m256 va = _mm256_set1_ps(P->alpha), vb = _mm256_set1_ps(P->beta);
    const bool scale = P->alpha != 1.0f, accumulate = P->beta != 0.0f, direct = P->c_j == 1;
    _Alignas(32) float t[MR256 * 16];
#pragma GCC unroll 6
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
        for (int h = 0; h < NV; h++) {
            const __m256i m = h ? m1 : m0;
            __m256 x = scale ? _mm256_mul_ps(va, acc[r][h]) : acc[r][h];
            if (direct) {
                float *o = P->c + (i0 + r) * P->c_i + j0 + 8 * h;
                if (accumulate) x = _mm256_fmadd_ps(vb, _mm256_maskload_ps(o, m), x);
                _mm256_maskstore_ps(o, m, x);
            }
            else _mm256_store_ps(t + r * 16 + 8 * h, x);
        }
    if (!direct) store_scattered(P, t, 16, RB, i0, cols, j0);
}

AVX2 static void block_avx2(const sg_problem *P, int rows, int64_t i0, int cols, int64_t j0, int64_t k0, int64_t kn, bool first,
                            bool last, float *run, int64_t ld_run) {
    for (int c0 = 0; c0 < cols; c0 += 16) {
        const int nc = cols - c0 < 16 ? cols - c0 : 16;
        for (int r0 = 0; r0 < rows; r0 += MR256) {
            const int rb = rows - r0 < MR256 ? rows - r0 : MR256;
            const int64_t ir = i0 + r0;
            float *rr = run ? run + r0 * ld_run + c0 : NULL;
            switch (rb) {
#define B256(RB)                                                                                                                   \
    case RB:                                                                                                                       \
        if (nc > 8) block256(P, RB, 2, ir, nc, j0 + c0, k0, kn, first, last, rr, ld_run);                                          \
        else block256(P, RB, 1, ir, nc, j0 + c0, k0, kn, first, last, rr, ld_run);                                                 \
        break;
                B256(1) B256(2) B256(3) B256(4) B256(5) default: B256(6)
#undef B256
            }
        }
    }
}
#endif

// ---- the driver ----

// The calling thread's buffers, kept between calls: the transposed operand
// and the running sums of a work item.
static float *thread_buffer(int which, size_t n) { return kernel_scratch(which ? SCRATCH_SGEMM_RUN : SCRATCH_SGEMM_T, sizeof(float) * n); }

// dst (cols x rows, row stride rows) = the transpose of X (rows x cols, row stride ld).
static void transpose_into(float *dst, const float *X, int64_t rows, int64_t cols, int64_t ld, int nth) {
    const int64_t B = 32, nb = (rows + B - 1) / B;
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1 && rows * cols >= SG_MIN_WORK)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t r0 = b * B, r1 = AS_MIN(r0 + B, rows);
        for (int64_t c0 = 0; c0 < cols; c0 += B)
            for (int64_t c = c0; c < AS_MIN(c0 + B, cols); c++)
                for (int64_t r = r0; r < r1; r++) dst[c * rows + r] = X[r * ld + c];
    }
}

static sg_block_fn block_for_isa(void) {
#if defined(__x86_64__)
    const kernel_isa isa = kernel_current_isa();
    if (isa >= KERNEL_ISA_AVX512) return block_avx512;
    if (isa == KERNEL_ISA_AVX2) return block_avx2;
#endif
    return block_c;
}

// Rows i0 .. i0+ni-1 and columns j0 .. j0+nj-1 of T, all of K.
static void run_item(const sg_problem *P, sg_block_fn block, int64_t i0, int64_t ni, int64_t j0, int64_t nj) {
    const int64_t nkb = P->K <= SG_KC ? 1 : (P->K + SG_KC - 1) / SG_KC;
    float *run = nkb > 1 ? thread_buffer(1, (size_t)(ni * nj)) : NULL;
    for (int64_t kb = 0; kb < nkb; kb++) {
        const int64_t k0 = kb * SG_KC, kn = nkb == 1 ? P->K : AS_MIN((int64_t)SG_KC, P->K - k0);
        for (int64_t jj = 0; jj < nj; jj += 32) {
            const int cols = (int)AS_MIN((int64_t)32, nj - jj);
            block(P, (int)ni, i0, cols, j0 + jj, k0, kn, kb == 0, kb == nkb - 1, run ? run + jj : NULL, nj);
        }
    }
}

static void sg_run(const sg_problem *P, int nth) {
    const sg_block_fn block = block_for_isa();
    const int64_t n_ib = (P->I + SG_IB - 1) / SG_IB;
    // Column ranges: enough items for the threads when there are few row
    // blocks, and at most SG_JB columns each (the running sums' size).
    int64_t n_jb = (P->J + SG_JB - 1) / SG_JB;
    const bool parallel = nth > 1 && P->I * P->J * P->K >= SG_MIN_WORK;
    if (parallel)
        while (n_ib * n_jb < 4 * (int64_t)nth && (P->J + n_jb - 1) / n_jb > 32) n_jb++;
    int64_t jb = (P->J + n_jb - 1) / n_jb;
    jb = (jb + 31) / 32 * 32;
    n_jb = (P->J + jb - 1) / jb;
    const int64_t n_items = n_ib * n_jb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (parallel && n_items > 1)
    for (int64_t it = 0; it < n_items; it++) {
        const int64_t ib = it / n_jb, j = it % n_jb;
        const int64_t i0 = ib * SG_IB, j0 = j * jb;
        run_item(P, block, i0, AS_MIN((int64_t)SG_IB, P->I - i0), j0, AS_MIN(jb, P->J - j0));
    }
}

void kernel_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float beta, float *C, int64_t ldc, int nth) {
    if (M <= 0 || N <= 0) return;
    if (nth < 1) nth = 1;
    // op(A)[m][k] = A[m * lda + k], or A[k * lda + m] when ta.
    const int64_t a_m = ta ? 1 : lda, a_k = ta ? lda : 1;
    sg_problem P = {.K = K, .alpha = alpha, .beta = beta};
    if (!tb) { // V = B as it is (op(B)[k][n] = B[k * ldb + n])
        P.s = A, P.s_i = a_m, P.s_k = a_k;
        P.v = B, P.v_k = ldb;
        P.c = C, P.c_i = ldc, P.c_j = 1;
        P.I = M, P.J = N;
    }
    else if (N <= M || ta) { // V = op(B) copied K-major (op(B)[k][n] = B[n * ldb + k])
        float *bt = thread_buffer(0, (size_t)AS_MAX(N * K, (int64_t)1));
        transpose_into(bt, B, N, K, ldb, nth);
        P.s = A, P.s_i = a_m, P.s_k = a_k;
        P.v = bt, P.v_k = N;
        P.c = C, P.c_i = ldc, P.c_j = 1;
        P.I = M, P.J = N;
    }
    else { // C^T = op(B)^T op(A)^T: V = op(A)^T copied K-major (M < N), S = B's rows
        float *at = thread_buffer(0, (size_t)AS_MAX(M * K, (int64_t)1));
        transpose_into(at, A, M, K, lda, nth);
        P.s = B, P.s_i = ldb, P.s_k = 1;
        P.v = at, P.v_k = M;
        P.c = C, P.c_i = 1, P.c_j = ldc;
        P.I = N, P.J = M;
    }
    sg_run(&P, nth);
}
