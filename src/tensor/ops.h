// The row operations of the forward pass and of sampling: RMSNorm, the gated
// linear units, e^x over a row, argmax.  Each gives the same bits on every
// ISA (ops.c: generic C, AVX2 and AVX-512 do the same operations in the same
// order), so a model's logits and a sampler's draws are the same on every
// x86-64 CPU (README, "Reproducibility").
#ifndef AS_TENSOR_OPS_H
#define AS_TENSOR_OPS_H

#include <stdbool.h>
#include <stdint.h>

// out = x / sqrt(mean(x^2) + eps) * w over C elements, the mean in double
// (16 lanes, element i in lane i % 16, folded by one fixed tree).  Llama's
// and Gemma's norm alike: Gemma's 1 + w is in w already (GGUF stores it so;
// model.h: norm_add_one).  out may be x.
void kernel_rmsnorm(float *out, const float *x, const float *w, int64_t C, float eps);
// out = act(g) * u over n elements, act = SiLU (SwiGLU) or, with gelu,
// tanh-GELU (GeGLU), both as x / (1 + e^t): t = -x, or t = -2 sqrt(2/pi) (x +
// 0.044715 x^3), e^t = vexp.h's.  out may be g.
void kernel_glu(float *out, const float *g, const float *u, int64_t n, bool gelu);
// x[i] = e^x[i] for i < n with vexp.h's exp (as_expf's bits on every ISA;
// clamped, so e^-inf is ~1e-38, not 0: callers that need exact zeros set them).
void kernel_exp(float *x, int64_t n);
// The first index of the largest of x[0..n) (NaNs never win; n <= 1 or a NaN
// at 0 gives 0, as the plain scan `if (x[i] > x[best]) best = i`).
int32_t kernel_argmax(const float *x, int32_t n);
// log softmax(z)[t] over n logits, in double: m = the largest z (NaNs
// skipped), log p = (z[t] - m) - log(sum_i e^(z[i] - m)), each term in double
// with libm's exp, summed in index order (the same bits on every ISA).
double kernel_logprob(const float *z, int32_t n, int32_t t);
// log sum_i e^(s z[i]) over n logits scaled by s, in double: m = the largest
// s z[i] in fp32 (fmaxf, from z[0]), then m + log(sum_i e^(double)(s z[i] - m)),
// the differences in fp32, summed in index order (the mixture samplers').
double kernel_logsumexp(const float *z, int64_t n, float s);
// y[i] += x[i]; x[i] *= s (one rounding each: the same bits everywhere).
void kernel_add(float *y, const float *x, int64_t n);
void kernel_scale(float *x, int64_t n, float s);

#endif
