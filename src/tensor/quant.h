// Tensor element formats (ggml's block layouts, bit-exact) and row
// (de)quantisation.  Supported tensor types: F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q4_K, Q6_K.  Internally the Q8_0/Q8_1/Q8_K activation formats are
// used by the fast matmul path.
#ifndef AS_QUANT_H
#define AS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256

typedef uint16_t as_fp16; // IEEE half, bit pattern
typedef uint16_t as_bf16;

typedef struct { as_fp16 d; uint8_t qs[QK4_0 / 2]; } block_q4_0;              // 18 bytes
typedef struct { as_fp16 d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;           // 20 bytes
typedef struct { as_fp16 d; int8_t qs[QK8_0]; } block_q8_0;                   // 34 bytes
typedef struct { float d, s; int8_t qs[QK8_1]; } block_q8_1_f32;            // activation helper (not a file format)
typedef struct { as_fp16 d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; } block_q4_K; // 144 bytes
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; as_fp16 d; } block_q6_K; // 210 bytes
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K; // activation format

// Block traits (elements and bytes per block, supported set) live with the file
// format in gguf/gguf.h: ggml_type_supported, ggml_type_block_elems, ggml_type_block_bytes.
// Bytes of a row of n elements (n must be a multiple of the block size; returns 0 otherwise).
size_t quant_row_size(ggml_type t, int64_t n);

float as_fp16_to_f32(as_fp16 h);
as_fp16 as_f32_to_fp16(float f); // round to nearest even
// y[i * stride] = as_f32_to_fp16(x[i]) for i < n, with F16C where the CPU has
// it (the same bits for every value but NaN, whose payload may differ).
void as_f32_to_fp16_n(as_fp16 *y, int64_t stride, const float *x, int64_t n);
float as_bf16_to_f32(as_bf16 h);
as_bf16 as_f32_to_bf16(float f); // round to nearest even

// Row conversion.  n is a multiple of the block size.
void quant_dequantize_row(ggml_type t, const void *src, float *dst, int64_t n);
// Reference quantisers (ggml's *_ref algorithms), for writing test models and exports.
void quant_quantize_row(ggml_type t, const float *src, void *dst, int64_t n);

#endif
