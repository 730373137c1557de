// The narrow seam behind which all the speed lives (see STYLE.md, BLIS): model
// code calls only these; a faster backend replaces their bodies.
//
// Weights are stored as in GGUF: a matrix W of `rows` output features, each a
// row of `cols` input features in type `type`.  Activations are fp32,
// row-major [n_tokens, cols].
#ifndef AS_KERNELS_H
#define AS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

typedef struct as_matrix {
    const void *data;
    ggml_type type;
    int64_t rows, cols; // out features, in features
    size_t row_bytes;
} as_matrix;

// How activations meet quantised weights.
typedef enum kernel_precision {
    KERNEL_PRECISION_F32 = 0, // fp32 activations x dequantised weights: matches an fp32 reference
    KERNEL_PRECISION_Q8 = 1,  // activations quantised to 8 bits like llama.cpp (faster; error documented)
} kernel_precision;

// CPU features, detected once at run time.
// Each flag is set only when the CPU has the instructions AND the OS saves the
// register state they need (XCR0), so a true flag is safe to use.
typedef struct cpu_features { bool avx2, fma, f16c, avx512f, avx512bw, avx512vnni, avx_vnni, avx512bf16, amx_bf16, amx_int8, avx512vl; } cpu_features;
const cpu_features *cpu_get_features(void);
const char *cpu_describe(void); // "avx2 fma avx512f ..." for logs/benchmarks
// Threads used by kernels (OpenMP); default: omp_get_max_threads().
void kernel_set_threads(int n);
int kernel_get_threads(void);

// out[t, r] = sum_c x[t, c] * W[r, c]   for t < n_tokens, r < W.rows.
// out has row stride ldo (>= W.rows).  Threaded inside.
void kernel_matmul(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, kernel_precision p);
// Row r of W as fp32 (embedding lookup).
void kernel_get_row(const as_matrix *w, int64_t r, float *out);

#endif
