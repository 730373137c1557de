// The backend interface: the operations a compute backend provides, as one
// table of function pointers, and the registry of the backends compiled in.
//
// The CPU backend (backend.c: the kernels of src/tensor, every ISA path
// behind kernel_force_isa) is the first entry.  A new backend (CUDA, filed as
// issue 22) fills an as_backend with its own functions and adds it to
// backends[] in backend.c; tests/tensor/test_backend_ops.c then runs every op
// of it, each variant (for the CPU: each ISA the machine has) against a
// double-precision reference with a tolerance per op and precision, with no
// new test code (the manner of ggml's test-backend-ops).
//
// Conventions: row-major fp32 arrays with explicit strides where the op has
// them; a backend's functions take host pointers (a device backend copies, or
// is handed buffers it allocated; weight buffers are as_matrix's); each op is
// documented where the CPU backend declares it (kernels.h, ops.h, rope.h,
// attention.h, gemm.h, train_ops.h, train_graph.h), which is the contract
// every backend meets.
//
// Training runs through this table: train/ calls only the entries of the
// training-graph block (the model's `be`, default the CPU).
// Not yet behind this table (docs/ARCHITECTURE.md): the model calls the CPU
// backend's functions directly, and it still owns the packed / fused / bf16
// weight copies it builds with kernel_pack and kernel_bf16_pack_matrix.
#ifndef AS_TENSOR_BACKEND_H
#define AS_TENSOR_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/attention.h"
#include "tensor/kernels.h"
#include "tensor/train_graph.h"

typedef struct as_backend {
    const char *name;
    // Code paths of this backend on this machine (the CPU: its ISAs, best
    // last), selected one at a time for tests; use_variant(-1): the default.
    int (*n_variants)(void);
    const char *(*variant_name)(int i);
    int (*use_variant)(int i); // AS_OK, or AS_FAIL when not available here

    // ---- inference ----
    // out[t * ldo + r] = sum_c w[r][c] x[t * cols + c] at precision p (kernels.h).
    void (*matmul)(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, kernel_precision p);
    // Row r of w, dequantised exactly.
    void (*get_row)(const as_matrix *w, int64_t r, float *out);
    // x / sqrt(mean(x^2) + eps) * w (ops.h).
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t C, float eps);
    // SiLU(g) * u, or tanh-GELU(g) * u (ops.h).
    void (*glu)(float *out, const float *g, const float *u, int64_t n, bool gelu);
    // Rotary embedding of n_heads vectors of d in place (rope.h).
    void (*rope)(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign);
    // Causal attention of query rows against one KV head's cache (attention.h).
    void (*attention_rows)(const kernel_attn_args *a);
    // e^x in place; first index of the maximum (ops.h).
    void (*exp)(float *x, int64_t n);
    int32_t (*argmax)(const float *x, int32_t n);

    // ---- training ----
    // C = alpha op(A) op(B) + beta C, fp32 (gemm.h), nth threads.
    void (*sgemm)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc, int nth);
    // Softmax pieces (train_ops.h): x <- e^(x - shift), returns the sum; max.
    double (*exp_shift_sum)(float *x, int64_t n, float shift);
    float (*max)(const float *x, int64_t n);
    // The log-softmax backward's dz = -g e^(z - l) (train_ops.h).
    void (*neg_scaled_exp)(float *dz, const float *z, int64_t n, float g, float l);
    // SwiGLU forward and backward (train_ops.h).
    void (*silu_glu_forward)(float *h, const float *g, const float *u, int64_t n);
    void (*silu_glu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);

    // ---- training graph (forward/backward pairs, LoRA, dropout, optimizer) ----
    // What the training model (train/train.c, optim.c) runs, each entry as
    // train_graph.h declares its CPU function: llm.c's forward/backward pairs
    // with the same argument order, every backward accumulating (+=) into its
    // gradients (NULL: not wanted) unless documented otherwise; nth threads.
    void (*embedding_forward)(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale);
    void (*embedding_backward)(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale);
    void (*linear_forward)(float *out, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim, int nth);
    void (*linear_backward)(float *dx, float *dW, const float *dout, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim,
                            int nth);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth);
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N, int64_t C,
                             int nth);
    void (*rope_forward)(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth);
    void (*rope_backward)(float *dx, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth);
    void (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off,
                              const int32_t *seq_len, int32_t n_seq, int H, int Hkv, int d, float *scratch, int64_t max_len, int nth);
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int H, int Hkv,
                               int d, int nth);
    void (*glu_forward)(float *h, const float *g, const float *u, int64_t n, bool gelu, int nth);
    void (*glu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu, int nth); // writes
    void (*logsoftmax_forward)(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth);
    void (*logsoftmax_backward)(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target, int64_t rows,
                                int64_t V, int nth); // writes
    void (*residual_forward)(float *out, const float *a, const float *b, int64_t n, int nth);
    // Adapter dropout (as_dropout: the probability, hash counter, keep bits).
    void (*dropout_forward)(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
    void (*dropout_backward)(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
    // The LoRA products of one adapter, fp32, dropout inside (drop NULL: none).
    void (*lora_forward)(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r, int64_t out,
                         float scale, const as_dropout *drop, int nth);
    void (*lora_backward)(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A, const float *B,
                          int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du, int nth);
    // Training's bf16 products (gemm.h's kernel_gemm_bf16): sgemm's contract
    // with bf16-rounded operands; op(B) packed once into a buffer the backend owns.
    void (*gemm_bf16)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                      int64_t ldb, float beta, float *C, int64_t ldc, int nth);
    as_bf16_packed *(*bf16_pack_b)(bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth);
    void (*bf16_packed_free)(as_bf16_packed *p);
    void (*gemm_bf16_packed)(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const as_bf16_packed *P, float beta, float *C,
                             int64_t ldc, int nth);
    // Optimizer arithmetic: the gradient norm's sum of squares (double, fixed
    // blocks), scaling, and torch.optim's AdamW / RMSprop / SGD element updates.
    double (*sum_squares)(const float *x, size_t n, int nth);
    void (*scale)(float *x, size_t n, float c, int nth);
    void (*adamw_update)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                         int64_t t, int nth);
    void (*rmsprop_update)(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth);
    void (*sgd_update)(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth);
} as_backend;

// The backends compiled in (the CPU first).
int as_backend_count(void);
const as_backend *as_backend_at(int i);
// By name ("cpu"); NULL if not compiled in.
const as_backend *as_backend_find(const char *name);

extern const as_backend as_backend_cpu;

#endif
