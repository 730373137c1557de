// The six products of a LoRA adapter of rank r (train/train.c: lora_forward
// and lora_backward), in fp32.  Each has one operand of N rows (N: the batch's
// tokens, ~2048) against a rank-r operand that fits in L1/L2, and only 2 r
// multiply-adds per element of the big operand: general sgemm spends as much
// on packing the big operand as on the product (OpenBLAS took ~20-25% of a
// bf16 LoRA step).  These read it once, in place, with the rank-r side in
// registers.  All row-major with contiguous rows; r >= 1, any size.
//
//   lora_gemm_rows_narrow: out (N x r) = alpha x (N x K) W (K x r) + beta out
//   lora_gemm_rows_wide:   y (N x D)   = drop(alpha u (N x r) M (r x D)) + beta y
//   lora_gemm_reduce:      G (r x D)  += alpha v^T (r x N) drop(x (N x D))  (trans: G is D x r)
//
// beta is 0 (out is not read) or 1.  drop (NULL: none) is the adapter
// dropout of an N x D operand applied on the fly, as train_dropout_row_mask
// would (the same bits as a separate pass).  AVX-512 where the CPU has it
// (and ALPHASPIN_KERNEL_ISA does not cap it), else kernel_sgemm; both give
// the same bits, each element being kernel_sgemm's (tensor/gemm.h):
//   acc = fmaf(a_k, b_k, acc) over k = 0 .. K-1 from 0;  t = alpha acc;
//   out = fmaf(beta, out, t) (beta != 0) or t
// with the dropout as these operations:
//   rows_narrow_fill: the rows fill made (x times keep ? scale : 0) are a_k;
//   rows_wide:   t (keep ? scale : 0), or fmaf(t, keep ? scale : 0, y) when beta is 1;
//   reduce:      b_k = x (keep ? scale : 0) (rounded), beta 1.
// Every output element is summed by one thread, the thread split deciding
// only where: the same bits for any thread count and any CPU.
#ifndef AS_TENSOR_LORA_GEMM_H
#define AS_TENSOR_LORA_GEMM_H

#include <stdbool.h>
#include <stdint.h>

// Element (i, j) is kept, times scale, when bit j % 16 of keep[i * ceil(D / 16) + j / 16] is set, else 0.
typedef struct lora_drop {
    const uint16_t *keep;
    float scale;
} lora_drop;

void lora_gemm_rows_narrow(int64_t N, int64_t K, int64_t r, float alpha, const float *x, const float *W, float beta, float *out, int nth);
// The same product with x's rows made on demand: fill(ctx, i0, n, dst) writes
// rows i0 .. i0 + n - 1 (n <= 64) to dst (n x K, contiguous), from any thread.
// A dropout this way stays in a block buffer in L1 instead of an N x K copy.
typedef void (*lora_rows_fn)(void *ctx, int64_t i0, int64_t n, float *dst);
void lora_gemm_rows_narrow_fill(int64_t N, int64_t K, int64_t r, float alpha, lora_rows_fn fill, void *ctx, const float *W, float beta,
                                float *out, int nth);
void lora_gemm_rows_wide(int64_t N, int64_t r, int64_t D, float alpha, const float *u, const float *M, const lora_drop *drop, float beta,
                         float *y, int nth);
void lora_gemm_reduce(int64_t N, int64_t r, int64_t D, float alpha, const float *v, const float *x, const lora_drop *drop, bool trans,
                      float *G, int nth);
// a (rows x cols) transposed, in a buffer of the calling thread that the
// next call overwrites (W = A^T, M = B^T for the products above).
const float *lora_gemm_transposed(const float *a, int64_t rows, int64_t cols);

#endif
