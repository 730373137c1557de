// The element-wise and reduction kernels of training's softmaxes, SwiGLU and
// adapter dropout (train/ops.c and train.c call them), on AVX-512, AVX2 and
// plain C paths that give the same bits (train_ops.c; the path follows the
// kernels' ISA, which ALPHASPIN_KERNEL_ISA caps).  e^x is tensor/vexp.h's
// as_expf / as_exp8 / as_exp16 (the same operations at every width).  A sum
// or max over n elements keeps 16 lanes (element i in lane i % 16, each lane
// in increasing i, the lanes past n untouched) folded at the end in lane
// order 0 .. 15 (sums into a double): the AVX-512 loop's order, reproduced by
// the two 8-lane registers of AVX2 and the float[16] of C.  Results depend
// neither on the CPU nor on threads.
#ifndef AS_TENSOR_TRAIN_OPS_H
#define AS_TENSOR_TRAIN_OPS_H

#include <stdint.h>

// x[i] = e^(x[i] - shift) for i < n; returns the sum of the new x (16 float
// lanes folded into a double, as above).
double train_exp_shift_sum(float *x, int64_t n, float shift);
// Returns the same sum of e^(x[i] - shift), x unchanged.
double train_exp_sum(const float *x, int64_t n, float shift);
// Max of x[0..n-1] (n >= 1): 16 lanes from x[0], lane = lane > x ? lane : x,
// folded the same way.
float train_max(const float *x, int64_t n);
// dz[i] = fmaf(-g, e^(z[i] - l), 0) (written; +0 for a zero product).
void train_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l);
// SwiGLU: h[i] = (g s) u, s = 1 / (1 + e^(0 - g)), each operation rounded.
void train_silu_glu_forward(float *h, const float *g, const float *u, int64_t n);
// dg[i] = (dh u) (s (1 + g (1 - s))),  du[i] = dh (g s) (written, not accumulated).
void train_silu_glu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);
// Inverted dropout of one row: d[j] (+)= x[j] * (h(k0 + j) < thresh ? 0 : keep_scale),
// h = lowbias32 of the 64-bit counter folded to 32 bits (lo ^ hi).  The mask
// is a pure function of the counter, so the backward regenerates it.
// `add` accumulates into d, as one fused multiply-add (fmaf(x, factor, d)).
// _ref is the scalar definition (tests).
void train_dropout_row(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add);
void train_dropout_row_ref(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add);
// The same, also storing the keep mask (bit j % 16 of keep[j / 16], ceil(n / 16) words) ...
void train_dropout_row_keep(float *d, const float *x, int64_t n, uint64_t k0, uint32_t thresh, float keep_scale, int add, uint16_t *keep);
// ... which this applies again without hashing: the same numbers.
void train_dropout_row_mask(float *d, const float *x, int64_t n, const uint16_t *keep, float keep_scale, int add);

#endif
