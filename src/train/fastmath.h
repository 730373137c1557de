// Vectorised exponentials for the training softmaxes (attention and the
// vocabulary log-softmax): AVX-512 when the CPU has it (Cephes' expf
// polynomial, within 2 ulp of expf over the range used), plain expf
// otherwise.  Every sum is accumulated in a fixed lane order, so results do
// not depend on threads or scheduling.
#ifndef AS_TRAIN_FASTMATH_H
#define AS_TRAIN_FASTMATH_H

#include <stdint.h>

// x[i] = exp(x[i] - shift) for i < n; returns the sum of the new x (in double).
double train_exp_shift_sum(float *x, int64_t n, float shift);
// Returns sum_i exp(x[i] - shift) (double), x unchanged.
double train_exp_sum(const float *x, int64_t n, float shift);
// Max of x[0..n-1] (n >= 1).
float train_max(const float *x, int64_t n);
// dz[i] = -(g * exp(z[i] - l)) (written; 0 - g e rounded once, +0 for a zero product).
void train_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l);
// SwiGLU: h[i] = silu(g[i]) u[i], silu(x) = x / (1 + exp(-x)).
void train_silu_glu_forward(float *h, const float *g, const float *u, int64_t n);
// dg[i] = dh u s (1 + g (1 - s)),  du[i] = dh silu(g),  s = sigmoid(g) (written, not accumulated).
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
// Scalar exp with the vector path's rounding (for tails and tests).
float train_expf(float x);

#endif
