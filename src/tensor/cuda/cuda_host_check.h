// The CUDA plugin's training ops run on the host, for tests on machines
// without a GPU (tests/tensor/test_cuda_train_host.c).
//
// The plugin's training kernels are functors (cuda_backend.cu, "training
// kernels"): an element body f(i), or a block body of phases separated by
// barriers, over __host__ __device__ element functions (the dropout hash,
// vexp.h's e^x, train_ops.h's 16-lane sums and maxima, SiLU / GELU and their
// derivatives, the RoPE rotation, the optimizers' updates, the sum of
// squares' blocks, kernel_sgemm's fused multiply-add chains).  Each op's code
// runs on the device (operands copied, kernels launched) or on the host (the
// caller's arrays in place, the same functors looped thread by thread, block
// by block).  These entries are the host runs, with the signatures of
// as_backend's entries of the same names, so a test compares the CUDA
// backend's arithmetic, index arithmetic, operand layout and composition with
// the CPU backend (bit for bit: they are the same operations in the same
// order).  What only a GPU can check: kernel launches and barriers, the
// copies, cuBLAS (linear, bf16 products, which have no host run here), and
// the device's libm (tanhf of GELU, log of a log-sum-exp).
//
// The plugin exports alphaspin_cuda_train_host(), returning this table.
#ifndef AS_TENSOR_CUDA_HOST_CHECK_H
#define AS_TENSOR_CUDA_HOST_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/train_graph.h"

#define AS_CUDA_TRAIN_HOST_VERSION 2

typedef struct as_cuda_train_host {
    int version; // AS_CUDA_TRAIN_HOST_VERSION
    // vexp.h's as_expf; train_exp_sum and train_max (16 lanes); train_neg_scaled_exp.
    float (*expf_)(float x);
    double (*exp_sum)(const float *x, int64_t n, float shift);
    float (*max)(const float *x, int64_t n);
    void (*neg_scaled_exp)(float *dz, const float *z, int64_t n, float g, float l);
    // as_backend's training-graph entries (backend.h, train_graph.h), on the host; nth is ignored.
    void (*embedding_forward)(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale);
    void (*embedding_backward)(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale);
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
    void (*glu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu, int nth);
    void (*logsoftmax_forward)(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth);
    void (*logsoftmax_backward)(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target, int64_t rows,
                                int64_t V, int nth);
    void (*residual_forward)(float *out, const float *a, const float *b, int64_t n, int nth);
    void (*dropout_forward)(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
    void (*dropout_backward)(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
    void (*lora_forward)(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r, int64_t out,
                         float scale, const as_dropout *drop, int nth);
    void (*lora_backward)(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A, const float *B,
                          int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du, int nth);
    double (*sum_squares)(const float *x, size_t n, int nth);
    void (*grad_scale)(float *x, size_t n, float c, int nth);
    void (*adamw_update)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                         int64_t t, int nth);
    void (*rmsprop_update)(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth);
    void (*sgd_update)(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth);
} as_cuda_train_host;

#endif
