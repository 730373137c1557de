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
// by block).  These entries are the host runs, in an as_backend table, so a test compares the CUDA
// backend's arithmetic, index arithmetic, operand layout and composition with
// the CPU backend (bit for bit: they are the same operations in the same
// order; attention within a tolerance, its tiles summing in another order).
// What only a GPU can check: kernel launches, barriers and shared memory, the
// copies, cuBLAS (linear, bf16 products, which have no host run here), and
// the device's libm (tanhf of GELU, log of a log-sum-exp).
//
// The plugin exports alphaspin_cuda_train_host(), returning this table.
#ifndef AS_TENSOR_CUDA_HOST_CHECK_H
#define AS_TENSOR_CUDA_HOST_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/backend.h"

#define AS_CUDA_TRAIN_HOST_VERSION 4

typedef struct as_cuda_train_host {
    int version; // AS_CUDA_TRAIN_HOST_VERSION
    // vexp.h's as_expf; train_exp_sum and train_max (16 lanes); train_neg_scaled_exp.
    float (*expf_)(float x);
    double (*exp_sum)(const float *x, int64_t n, float shift);
    float (*max)(const float *x, int64_t n);
    void (*neg_scaled_exp)(float *dz, const float *z, int64_t n, float g, float l);
    // as_backend's training-graph entries (backend.h, train_graph.h) run on
    // the host, in a table of as_backend's own type: embedding_forward ..
    // sgd_update but linear_* and the bf16 products (cuBLAS: no host run),
    // and sample_rows (the sampler's blocks, section "sampling"); every other
    // entry NULL.  nth is ignored.
    as_backend ops;
} as_cuda_train_host;

#endif
