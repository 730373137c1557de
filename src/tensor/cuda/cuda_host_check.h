// The CUDA plugin's training arithmetic compiled for the host, for tests on
// machines without a GPU (tests/tensor/test_cuda_train_host.c).
//
// The element arithmetic of the plugin's training kernels that is not a
// single rounding (the dropout mask's hash, the e^x of the SwiGLU and the
// softmaxes, the 16-lane sums and maxima of train_ops.h, GELU and SiLU and
// their derivatives, the RoPE rotation, the optimizers' element updates, the
// sum of squares' blocks) is written once in cuda_backend.cu as
// __host__ __device__ functions.  The device kernels call them per element;
// these entries call the very same functions over whole rows on the host, so
// a test compares them with the CPU backend's results (bit for bit where the
// operations are the same).  What differs on a GPU is only the device's libm
// (tanhf of GELU, log of the log-sum-exp; e^x is the project's own, vexp.h's,
// on both), which this cannot check.
//
// The plugin exports alphaspin_cuda_train_host(), returning this table.
#ifndef AS_TENSOR_CUDA_HOST_CHECK_H
#define AS_TENSOR_CUDA_HOST_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/train_graph.h"

#define AS_CUDA_TRAIN_HOST_VERSION 1

typedef struct as_cuda_train_host {
    int version; // AS_CUDA_TRAIN_HOST_VERSION
    // vexp.h's as_expf.
    float (*expf_)(float x);
    // train_exp_sum / train_max (16 lanes, folded in lane order).
    double (*exp_sum)(const float *x, int64_t n, float shift);
    float (*max)(const float *x, int64_t n);
    // train_neg_scaled_exp.
    void (*neg_scaled_exp)(float *dz, const float *z, int64_t n, float g, float l);
    // train_glu_forward / train_glu_backward (SiLU or GELU).
    void (*glu_forward)(float *h, const float *g, const float *u, int64_t n, bool gelu);
    void (*glu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu);
    // train_rope_forward (sign 1) / train_rope_backward (sign -1).
    void (*rope)(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign);
    // train_dropout_forward (hashing or replaying) and train_dropout_backward.
    void (*dropout_forward)(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop);
    void (*dropout_backward)(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop);
    // train_sum_squares and the optimizers' updates (train_graph.h).
    double (*sum_squares)(const float *x, size_t n);
    void (*adamw_update)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                         int64_t t);
    void (*rmsprop_update)(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd);
    void (*sgd_update)(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t);
} as_cuda_train_host;

#endif
