// The CPU backend's inference ops over a batch of rows (backend.h): each row
// one call of the row kernel (ops.c, rope.c, kernels.c), so a row's bits do
// not depend on the batch; rows over kernel_get_threads() threads once the
// batch is long enough for a fork to pay (in decoding, a few rows, a fork
// costs more than the work, and far more when the cores are busy).
#include <omp.h>

#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/rope.h"
#include "tensor/rows.h"
#include "util/common.h"

// Fewest rows for which the norms, rotations and adds are split over threads;
// the GLU (n_ff wide, with an e^x per element) pays sooner.
#define PAR_ROWS 64
#define GLU_PAR_ROWS 16

static int threads(void) { return AS_MAX(kernel_get_threads(), 1); }

void kernel_get_rows(const as_matrix *w, const int32_t *ids, int64_t n, float *out) {
#pragma omp parallel for num_threads(threads()) if (n > 1)
    for (int64_t i = 0; i < n; i++) kernel_get_row(w, ids[i], out + i * w->cols);
}

void kernel_rmsnorm_rows(float *out, const float *x, const float *w, int64_t n, int64_t C, float eps, const int32_t *rows) {
#pragma omp parallel for num_threads(threads()) if (n >= PAR_ROWS)
    for (int64_t o = 0; o < n; o++) kernel_rmsnorm(out + o * C, x + (rows ? rows[o] : o) * C, w, C, eps);
}

void kernel_glu_rows(float *out, int64_t ldo, const float *g, const float *u, int64_t ldg, int64_t n, int64_t F, bool gelu) {
#pragma omp parallel for num_threads(threads()) if (n >= GLU_PAR_ROWS)
    for (int64_t i = 0; i < n; i++) kernel_glu(out + i * ldo, g + i * ldg, u + i * ldg, F, gelu);
}

void kernel_rope_rows(float *v, int64_t ld, int64_t n, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    const int64_t half = n_rot / 2;
#pragma omp parallel for num_threads(threads()) if (n >= PAR_ROWS)
    for (int64_t i = 0; i < n; i++) kernel_rope(v + i * ld, n_heads, d, n_rot, neox, cs + i * half, sn + i * half, sign);
}

// Element-wise, so any split gives the same bits: chunks of 4096 elements.
#define ADD_CHUNK 4096
void kernel_add_rows(float *y, const float *x, int64_t n) {
    const int64_t nc = (n + ADD_CHUNK - 1) / ADD_CHUNK;
#pragma omp parallel for num_threads(threads()) if (nc >= 8)
    for (int64_t c = 0; c < nc; c++) kernel_add(y + c * ADD_CHUNK, x + c * ADD_CHUNK, AS_MIN((int64_t)ADD_CHUNK, n - c * ADD_CHUNK));
}

void *kernel_buf_alloc(size_t bytes) { return as_aligned_alloc(AS_MAX(bytes, (size_t)64)); }
void kernel_buf_free(void *p) { free(p); }
void kernel_sync(void) {}
