// bf16 matrix products for training (TRAIN_PRECISION_BF16): the operands are
// rounded to bf16 (round to nearest even), the products accumulate in fp32 on
// AMX-BF16 tiles (TDPBF16PS).  Without AMX (or without the OS permission) the
// same bf16-rounded operands go through fp32 sgemm: the same products, summed
// in another order.  Every output element is computed by one thread in a
// fixed order: results depend only on the thread count.
//
// Shapes and conventions are train_gemm's (ops.h):
//   C (M x N, row stride ldc) = alpha op(A) op(B) + beta C, row-major.
#ifndef AS_TRAIN_GEMM_BF16_H
#define AS_TRAIN_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// True when the AMX path runs (CPU has AMX-BF16 and Linux granted the tiles).
bool train_gemm_bf16_amx(void);

void train_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float beta, float *C, int64_t ldc, int nth);

// op(B) packed once for several products with the same right operand (the
// vocabulary matrix against chunks of rows).
typedef struct train_bf16_packed {
    uint16_t *data;    // AMX: 16-column panels of op(B), K pairs interleaved (Np/16, Kp/2, 16, 2)
    float *rounded;    // without AMX: op(B) rounded to bf16, as fp32 (K x N)
    int64_t K, N, Kp, Np;
} train_bf16_packed;

void train_bf16_pack_b(train_bf16_packed *p, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth);
void train_bf16_packed_free(train_bf16_packed *p);
// C = alpha op(A) P + beta C with P from train_bf16_pack_b (K, N taken from it).
void train_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const train_bf16_packed *P, float beta,
                            float *C, int64_t ldc, int nth);

// bf16 bits of x, rounded to nearest even (NaN stays NaN).
static inline uint16_t train_f32_to_bf16(float x) {
    union { float f; uint32_t u; } v = {x};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}
static inline float train_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

#endif
