// The narrow seam behind which all the speed lives (see STYLE.md, BLIS): model
// code calls only these and the other public headers of src/tensor (gemm.h,
// quant.h, rope.h, ops.h, attention.h, train_ops.h, lora_gemm.h); a faster
// backend replaces their bodies.  Every ISA-specific line lives in src/tensor,
// which picks its code at run time (.ci/check_seam.sh keeps it so).
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
    const void *packed; // NULL, or the same weights laid out for this CPU's Q8 path of many tokens (kernel_pack)
    const struct kernel_bf16_packed *bf16; // NULL, or the weights rounded to bf16 for the BF16 path (kernel_bf16_pack_matrix)
} as_matrix;

// How activations meet quantised weights.
//  F32: weights dequantised exactly (bit-identical to quant_dequantize_row),
//    products summed in fp32: ||out - exact|| / ||exact|| < 1e-5 (tested; ~1e-7
//    to 4e-6 observed).  n_tokens <= 4 dots each row in registers (32 lanes,
//    one fixed tree); more tokens use the project's GEMM on dequantised tiles
//    (one chain per output: sgemm.c), so results for a token may differ in the
//    last bits between the two regimes.  Both regimes give the same bits on
//    every ISA and thread count.
//  Q8: like llama.cpp, each token's activations are quantised to 8 bits per
//    block of 32 (Q8_K per 256 for Q4_K/Q6_K) and dotted in integers.  Error vs
//    the exact result: ~0.5-1.2% of the output scale ||x|| ||w|| / sqrt(cols)
//    on random data (tested < 2e-2).  A token's outputs are bitwise the same
//    whatever else is in the batch.  Fastest choice for decode (~2x F32 on
//    the default model; bench/bench_matmul), and with AMX-INT8 (Sapphire
//    Rapids and later) for many tokens too: Q4_0/Q4_1/Q8_0 weights with >= 6
//    tokens run on AMX tiles at 3-5x the AVX-512 speed, bitwise identical.
//    Float weight types (F32/F16/BF16) always take the F32 path.
//  BF16: the exactly dequantised weights and the activations are rounded to
//    bf16 (nearest even), the products summed in fp32: kernel_gemm_bf16
//    (gemm.h), on AMX-BF16 tiles where the CPU has them.  Error vs the exact
//    result: ~0.3% of the output scale (two bf16 roundings per product,
//    tested).  A token's outputs are bitwise the same whatever else is in the
//    batch; AMX tiles, VDPBF16PS (AVX-512 BF16 without AMX) and the fused
//    multiply-add fallback sum in different orders (bf16 results differ
//    between them, gemm.h).  The fastest choice for
//    many tokens on AMX CPUs (prefill, scoring: ~2x Q8's many-token AMX-INT8
//    kernel, whose per-32-block scales cost a tile store per block product),
//    and the slowest for decoding one token (2 bytes per weight streamed).
//    Wants the weights packed once (kernel_bf16_pack_matrix, 2 bytes per
//    weight); without that each call packs them.
typedef enum kernel_precision {
    KERNEL_PRECISION_F32 = 0, // fp32 activations x dequantised weights: matches an fp32 reference
    KERNEL_PRECISION_Q8 = 1,  // activations quantised to 8 bits like llama.cpp (faster; error documented)
    KERNEL_PRECISION_BF16 = 2, // bf16 operands, fp32 sums (AMX-BF16: fastest for many tokens)
} kernel_precision;

// "f32", "q8", "bf16" (command-line and config spelling).  parse: 0, or -1
// for any other string.
const char *kernel_precision_name(kernel_precision p);
int kernel_precision_parse(const char *s, kernel_precision *p);

// CPU features, detected once at run time.
// Each flag is set only when the CPU has the instructions AND the OS saves the
// register state they need (XCR0), so a true flag is safe to use.
typedef struct cpu_features {
    bool avx2, fma, f16c, avx512f, avx512bw, avx512vnni, avx_vnni, avx512bf16, amx_bf16, amx_int8, avx512vl;
    bool amd; // vendor AuthenticAMD (which bf16 path is faster: gemm.h)
} cpu_features;
const cpu_features *cpu_get_features(void);
const char *cpu_describe(void); // "avx2 fma avx512f ..." for logs/benchmarks
// One-time setup, idempotent and also run by every kernel_* call: picks the
// SIMD code for this CPU (ALPHASPIN_KERNEL_ISA=scalar|avx2|avx512|amx caps it).
void kernel_init(void);
// Threads used by kernels (OpenMP); default: omp_get_max_threads().
void kernel_set_threads(int n);
// The threads a kernel called now from this thread uses: kernel_set_threads's
// number (or OpenMP's), at most the calling thread's cap.
int kernel_get_threads(void);
// Caps the kernels called from this thread at n threads (0: no cap); returns
// the previous cap.  Every kernel gives the same bits at any thread count
// (tests/model/test_isa_conformance.c), so a cap changes speed, not results;
// the thread tuner (tensor/tuner.h) sets it around decoding steps.
int kernel_cap_threads(int n);

// out[t, r] = sum_c x[t, c] * W[r, c]   for t < n_tokens, r < W.rows.
// x is [n_tokens, W.cols] contiguous; out has row stride ldo (>= W.rows) and
// the columns past W.rows are not touched.  Threaded inside (rows split over
// kernel_get_threads() threads); safe to call from several threads at once.
// A bad matrix (unsupported type, cols not whole blocks, ldo < rows) is a
// programmer error and dies with a message: the GGUF loader validates types.
void kernel_matmul(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, kernel_precision p);
// A copy of W's weights in the layout the Q8 path's many-token kernel reads
// (AMX: 16-row tiles in VNNI order with fp32 scales; Q4_0/Q4_1 codes as
// nibbles, 0.75 bytes per weight; Q8_0 as bytes, 1.25), which saves the
// GGUF blocks' gather-and-transpose unpacking on every call (about a third of
// a 32-token matmul).  kernel_pack_size: the bytes it needs,
// 0 when this ISA or W's type has no such layout (then W stays as it is).
// kernel_pack fills dst (64-byte aligned, kernel_pack_size bytes; threaded)
// and points w->packed at it; dst must outlive every use of w, and W's data
// must not change after.  Results are bitwise the same with or without it.
// It pays off for callers that make calls of >= KERNEL_PACK_MIN_TOKENS tokens.
#define KERNEL_PACK_MIN_TOKENS 3
size_t kernel_pack_size(const as_matrix *w);
void kernel_pack(as_matrix *w, void *dst);
// The BF16 path's copy of W (gemm.h: W^T rounded and laid out for the
// products; 2 bytes per weight on AMX or AVX-512 BF16, 4 without), made from W's exactly
// dequantised rows by chunks; owned by the caller (kernel_bf16_packed_free).
// Point w->bf16 at it to use it.
struct kernel_bf16_packed;
void kernel_bf16_pack_matrix(struct kernel_bf16_packed *dst, const as_matrix *w);
// The same for n matrices stacked by rows (one product for Q|K|V): same
// cols, the rows of all but the last a multiple of 16.
void kernel_bf16_pack_matrices(struct kernel_bf16_packed *dst, const as_matrix *const *w, int n);
// Row r of W as fp32 (embedding lookup).
void kernel_get_row(const as_matrix *w, int64_t r, float *out);

#endif
