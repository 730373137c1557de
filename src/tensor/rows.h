// The CPU backend's batched inference ops (rows.c): backend.h's get_rows,
// rmsnorm, glu, rope and add, on kernel_get_threads() threads, each row the
// row kernel's bits; and its activation buffers (aligned host memory).
#ifndef AS_TENSOR_ROWS_H
#define AS_TENSOR_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/kernels.h"

void kernel_get_rows(const as_matrix *w, const int32_t *ids, int64_t n, float *out);
void kernel_rmsnorm_rows(float *out, const float *x, const float *w, int64_t n, int64_t C, float eps, const int32_t *rows);
void kernel_glu_rows(float *out, int64_t ldo, const float *g, const float *u, int64_t ldg, int64_t n, int64_t F, bool gelu);
void kernel_rope_rows(float *v, int64_t ld, int64_t n, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign);
void kernel_add_rows(float *y, const float *x, int64_t n);
void *kernel_buf_alloc(size_t bytes);
void kernel_buf_free(void *p);
void kernel_sync(void);

#endif
