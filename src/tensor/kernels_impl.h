// Private to src/tensor (and its tests/benchmark): the per-instruction-set
// implementations behind kernels.h, and a way to force one of them.
//
// Each ISA supplies the same five primitives; kernels.c builds both matmul
// precisions from them and owns threading and scratch memory:
//   dequant_row  weights -> fp32 (bit-identical to quant_dequantize_row)
//   dot_f32      fp32 dot product
//   quantize_act fp32 activations -> the 8-bit format the weight type pairs with
//   vec_dot      one quantised weight row . one quantised activation row
//                (vec_dot_n: the same for up to 8 activation rows at once)
#ifndef AS_KERNELS_IMPL_H
#define AS_KERNELS_IMPL_H

#include "tensor/kernels.h"
#include "tensor/quant.h"

typedef enum kernel_isa {
    KERNEL_ISA_AUTO = -1,
    KERNEL_ISA_SCALAR = 0,
    KERNEL_ISA_AVX2 = 1,   // AVX2 + FMA + F16C (maddubs integer dots)
    KERNEL_ISA_AVX512 = 2, // AVX-512 F/BW/VL + VNNI (vpdpbusd integer dots), else AVX2
    KERNEL_ISA_AMX = 3,    // AVX-512 + AMX-INT8 tiles for the Q8 path of many tokens (kernels_amx.c)
    KERNEL_ISA_COUNT = 4,
} kernel_isa;

typedef struct kernel_ops {
    const char *name;
    void (*dequant_row)(ggml_type t, const void *src, float *dst, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*quantize_act)(ggml_type wtype, const float *x, void *dst, int64_t n);
    float (*vec_dot)(ggml_type wtype, const void *w, const void *act, int64_t n);
    // Optional: one weight row against n_act <= KERNEL_DOT_MAX_ACT activation
    // rows act_stride bytes apart (out[j]), sharing the weight unpacking.  Must
    // give exactly vec_dot's result for each row.  NULL: vec_dot per row.
    void (*vec_dot_n)(ggml_type wtype, const void *w, const void *act, size_t act_stride, int n_act, int64_t n, float *out);
    // Optional, F32 path: one weight row (any layout the ISA supports; returns
    // false otherwise) dotted with n_x <= KERNEL_DOT_MAX_ACT fp32 rows
    // x_stride floats apart, dequantising in registers.
    bool (*fused_dot_n)(ggml_type wtype, const void *w, const float *x, size_t x_stride, int n_x, int64_t n, float *out);
    // Optional, Q8 path: the whole matmul (threads nth) for weight types and
    // token counts where the ISA has a faster blocked kernel; returns false
    // (having done nothing) otherwise.  Must give exactly the results of
    // vec_dot_n for every token (batch invariance across the two paths).
    bool (*matmul_q8)(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
} kernel_ops;

#define KERNEL_DOT_MAX_ACT 8

extern const kernel_ops kernel_ops_scalar, kernel_ops_avx2, kernel_ops_avx512, kernel_ops_amx;

// True when this CPU can run `isa`.
bool kernel_isa_available(kernel_isa isa);
// Use `isa` for all later calls (KERNEL_ISA_AUTO: the best available, capped
// by ALPHASPIN_KERNEL_ISA as at start-up).  Returns
// -1 if the CPU lacks it.  Not thread-safe against concurrent kernel calls.
int kernel_force_isa(kernel_isa isa);
kernel_isa kernel_current_isa(void);
const char *kernel_isa_name(kernel_isa isa);
// Whether code with AVX-512 F and generic paths should take the AVX-512 one:
// the CPU has it and ALPHASPIN_KERNEL_ISA does not cap the kernels below it.
bool kernel_avx512_active(void);
// The vector code of the element-wise ops, attention, training ops and LoRA
// products (ops.c, attention*.c, train_ops.c, lora_gemm.c): AVX-512 where
// kernel_avx512_active, else AVX2 (+ FMA, F16C) where the kernels' ISA is at
// least avx2, else C.  Follows kernel_force_isa and ALPHASPIN_KERNEL_ISA;
// cached, so cheap enough to ask per row.  Every such op gives the same bits
// on the three.
typedef enum kernel_vec { KERNEL_VEC_C = 0, KERNEL_VEC_AVX2 = 1, KERNEL_VEC_AVX512 = 2 } kernel_vec;
kernel_vec kernel_vec_level(void);

// Largest n_tokens for which the F32 path dequantises one weight row at a time
// and dots it with each token; above it, tiles of W go through BLAS sgemm.
#define KERNEL_F32_FUSED_MAX_TOKENS 4
// Most rows of W dequantised per sgemm call in the F32 path (512 tokens, one
// core: 128 rows gave 59/84/127 GFLOP/s on 576x1536, 1536x576, 576x576;
// 256 rows 92/90/138; 512 rows 82/56/127).
#define KERNEL_F32_TILE_ROWS 256

// The activation format paired with a weight type in the Q8 path, and its
// size for n values: Q4_0/Q4_1/Q8_0 weights meet block_q8_1_f32 (32 values,
// fp32 scale d and s = d*sum(q); the AVX-512 code rearranges groups of 4 and
// pads the last, so the size is rounded up to 4 blocks); Q4_K/Q6_K meet
// block_q8_K (256 values).
size_t kernel_act_row_size(ggml_type wtype, int64_t n);

// AMX (kernels_amx.c).  kernel_amx_permitted: the CPU has AMX-TILE and
// AMX-INT8, the OS enables the tile state (XCR0), and Linux granted this
// process the tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM), asked once,
// thread-safely, on the first call); false elsewhere, never faults.
bool kernel_amx_permitted(void);
// Q8 matmul of Q4_0/Q4_1/Q8_0 weights with AMX tiles for n_tokens >=
// KERNEL_AMX_MIN_TOKENS (kernel_ops.matmul_q8 of the "amx" ISA).
bool kernel_matmul_q8_amx(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
#define KERNEL_AMX_MIN_TOKENS 9
// The same kernel with its float part on AVX-512 VNNI instead of tiles (the
// "avx512" ISA's kernel_ops.matmul_q8; same bits as both other kernels), for
// n_tokens >= KERNEL_VNNI_TILE_MIN_TOKENS.  Only where the CPU has AVX-512
// VNNI (kernel_isa_available(KERNEL_ISA_AVX512)).
bool kernel_matmul_q8_vnni(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
#define KERNEL_VNNI_TILE_MIN_TOKENS KERNEL_PACK_MIN_TOKENS // 3
// The "amx" ISA's matmul_q8: the AMX kernel from KERNEL_AMX_MIN_TOKENS tokens,
// the VNNI one from KERNEL_VNNI_TILE_MIN_TOKENS.
bool kernel_matmul_q8_tiles(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
// The "avx2" ISA's matmul_q8 (kernels_avx2.c): Q4_0 / Q4_1 / Q8_0 weights in
// tiles of 16 rows for n_tokens >= KERNEL_AVX2_TILE_MIN_TOKENS; same bits as
// its row kernel.
bool kernel_matmul_q8_avx2_tiles(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
#define KERNEL_AVX2_TILE_MIN_TOKENS 4
// The row kernel of the current ISA (kernels.c matmul_q8): what
// kernel_matmul runs for Q8 where matmul_q8 declines (tests compare to it).
void kernel_matmul_q8_rows(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
// The packed layout of kernel_pack for the tile kernels (0: w's type has none;
// only AVX-512 code reads or writes it).
size_t kernel_amx_pack_size(const as_matrix *w);
void kernel_amx_pack(const as_matrix *w, void *dst, int nth);

// Per-thread scratch (kernels.c): 64-byte aligned, grown on demand (contents
// not kept when it grows), kept for the thread's lifetime and freed when the
// thread exits (a pthread key), so OpenMP teams that shrink leak nothing.
// One slot per user, since a kernel may call another while holding its own:
// SCRATCH_ACT holds the calling thread's quantised activations while
// SCRATCH_WORK serves it (and every worker) in the loop.
enum {
    SCRATCH_WORK, SCRATCH_ACT,                         // kernels.c, kernels_avx2.c, kernels_amx.c
    SCRATCH_SGEMM_T, SCRATCH_SGEMM_RUN,                // sgemm.c: a transposed operand, running sums
    SCRATCH_LORA_T, SCRATCH_LORA_COPY, SCRATCH_LORA_ROWS, // lora_gemm.c
    SCRATCH_GEMM_A, SCRATCH_GEMM_B,                    // gemm.c: packed bf16 operands
    SCRATCH_ATT_Q, SCRATCH_ATT_K, SCRATCH_ATT_V, SCRATCH_ATT_P, SCRATCH_ATT_S, SCRATCH_ATT_INV, // attention_amx.c
    SCRATCH_N
};
void *kernel_scratch(int slot, size_t bytes);

// Shared scalar helpers (kernels_scalar.c) that the SIMD files fall back to.
void kernel_quantize_q8_1_scalar(const float *x, block_q8_1_f32 *y, int64_t n);
void kernel_quantize_q8_K_scalar(const float *x, block_q8_K *y, int64_t n);
float kernel_vec_dot_q4_K_scalar(const block_q4_K *x, const block_q8_K *y, int64_t n);
float kernel_vec_dot_q6_K_scalar(const block_q6_K *x, const block_q8_K *y, int64_t n);
// AVX2 pieces the AVX-512 table reuses (256-bit code runs unchanged there).
void kernel_dequant_row_avx2(ggml_type t, const void *src, float *dst, int64_t n);
void kernel_quantize_act_avx2(ggml_type wtype, const float *x, void *dst, int64_t n);
// The same Q8_1 codes as kernel_quantize_q8_1_scalar, AVX-512 (AVX-512F/BW/VL CPUs only).
void kernel_quantize_q8_1_avx512(const float *x, block_q8_1_f32 *y, int64_t n);
// The same codes and scales for a tile of 16 tokens (the Q8 tile kernels'
// layout): token t < nt is x + t ldx (n values); block k's codes of token t
// at q + k step + 32 t, its 16 tokens' d and s at (bytes) d + k step and s +
// k step; tokens nt..15 get zero codes and scales.
void kernel_quantize_q8_1_avx512_tile(const float *x, int64_t ldx, int nt, int64_t n, int8_t *q, float *d, float *s, size_t step);
float kernel_vec_dot_avx2(ggml_type wtype, const void *w, const void *act, int64_t n);

#endif
