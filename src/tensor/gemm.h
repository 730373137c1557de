// Dense fp32 matrix products (training, and the BF16 precision of
// kernel_matmul), row-major:
//   C (M x N, row stride ldc) = alpha op(A) op(B) + beta C, op = transpose
//   when ta / tb.
//
// kernel_sgemm: fp32, the project's own kernels (sgemm.c).  Each element is
// one fused multiply-add chain over k = 0 .. K-1 from 0, then alpha * sum
// (skipped when alpha is 1), then + beta C as one more fused multiply-add when
// beta != 0.  The same bits on every ISA (scalar, AVX2, AVX-512), for every
// thread count and shape: a row of C does not depend on the other rows of A.
// nth threads (OpenMP); safe to call from inside a parallel region with nth 1.
//
// kernel_gemm_bf16*: the operands are rounded to bf16 (round to nearest
// even), the products accumulate in fp32, on one of three paths:
//   - AMX-BF16 tiles (TDPBF16PS), where the CPU has them and the OS grants them;
//   - else AVX-512 BF16's VDPBF16PS (ISA avx512 or above, and not
//     ALPHASPIN_BF16_NO_DPBF=1): the same packed operands, each element one
//     chain over the K pairs in order, acc += a[2j+1] b[2j+1] then
//     acc += a[2j] b[2j], denormal inputs read as 0 and denormal sums
//     flushed to 0 (the instruction's own arithmetic);
//   - else a fused multiply-add chain per element in K order (AVX-512,
//     AVX2 or C: the same bits), no flushing.
// The products are the same (exact in fp32), summed in different orders, so
// the three paths differ in the last bits; each is reproducible on its own
// kind of CPU.  Every output element is computed by one thread in a fixed
// order: results do not depend on the thread count, and on every path a row
// of C does not depend on the other rows of A (the bf16 precision's batch
// invariance).
#ifndef AS_TENSOR_GEMM_H
#define AS_TENSOR_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void kernel_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc, int nth);

// True when the AMX path runs (CPU has AMX-BF16 and Linux granted the tiles).
bool kernel_gemm_bf16_amx(void);
// True when the VDPBF16PS path runs: not AMX; AVX-512 BF16 at ISA avx512 or
// above; by default on AMD CPUs only (Zen 4: one VDPBF16PS, 32 products, per
// cycle, 2-3x the FMA fallback; the Intel Xeon of BENCHMARKS.md took 2.1
// cycles for one, half the FMAs' rate, "Inference speed"); ALPHASPIN_BF16_DPBF=1
// turns it on wherever the CPU has the instruction, ALPHASPIN_BF16_NO_DPBF=1 off.
bool kernel_gemm_bf16_dpbf(void);
// For other AMX-BF16 code (the BF16 attention): configure this thread's eight
// tiles as 16 rows x 64 bytes / release them.  Only where kernel_gemm_bf16_amx().
void kernel_amx_bf16_begin(void);
void kernel_amx_bf16_end(void);

void kernel_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float beta, float *C, int64_t ldc, int nth);

// op(B) packed once for several products with the same right operand (the
// vocabulary matrix against chunks of rows).
typedef struct kernel_bf16_packed {
    uint16_t *data;    // AMX or VDPBF16PS: 16-column panels of op(B), K pairs interleaved (Np/16, Kp/2, 16, 2)
    float *rounded;    // the fma fallback: op(B) rounded to bf16, as fp32, in panels of 32 columns (gemm.c: fb_at)
    int64_t K, N, Kp, Np;
} kernel_bf16_packed;

void kernel_bf16_pack_b(kernel_bf16_packed *p, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth);
// The same for op(B) = W^T, W (N x K, row stride ldw) given by chunks of
// rows (a matrix dequantised piece by piece): init allocates, pack_rows packs
// rows n0 .. n0+nn-1 (n0 and, but for the last chunk, nn multiples of 16).
void kernel_bf16_pack_init(kernel_bf16_packed *p, int64_t K, int64_t N);
void kernel_bf16_pack_rows(kernel_bf16_packed *p, int64_t n0, int64_t nn, const float *W, int64_t ldw, int nth);
void kernel_bf16_packed_free(kernel_bf16_packed *p);
// C = alpha op(A) P + beta C with P from kernel_bf16_pack_b (K, N taken from it).
void kernel_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const kernel_bf16_packed *P, float beta,
                            float *C, int64_t ldc, int nth);

#endif
