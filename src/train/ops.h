// The layers of the training forward pass, each a forward/backward pair with
// the same argument order (llm.c style).  Activations are row-major fp32 over
// N packed token rows.  Every backward ACCUMULATES (+=) into the gradient
// buffers it is given, so zeroing is one memset; a NULL gradient pointer means
// "not wanted" (a frozen weight) and that product is skipped.
//
// `nth` is the OpenMP thread count; every op partitions its work so that each
// output element is written by exactly one thread in a fixed order, so the
// result does not depend on scheduling (bitwise determinism).
#ifndef AS_TRAIN_OPS_H
#define AS_TRAIN_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/gemm.h" // kernel_sgemm, the one matrix-product seam of training

// out[t] = scale * E[tok[t]]                            out (N, C), E (V, C)
void train_embedding_forward(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale);
void train_embedding_backward(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale);

// out = x W^T      x (N, in), W (out_dim, in), out (N, out_dim).
void train_linear_forward(float *out, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim, int nth);
// dx += dout W;  dW += dout^T x.
void train_linear_backward(float *dx, float *dW, const float *dout, const float *x, const float *W, int64_t N, int64_t in,
                           int64_t out_dim, int nth);

// out = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps)   x, out (N, C), w (C), rstd (N)
void train_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth);
void train_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N,
                            int64_t C, int nth);

// In place: rotates the first n_rot dims of each of n_heads heads of every row
// by the row's angles (cos, sin: (N, n_rot/2)).  Pairs (x[2i], x[2i+1]) for
// GGUF llama, (x[i], x[i + n_rot/2]) when neox (Gemma).  x (N, n_heads*d).
void train_rope_forward(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth);
// In place on the gradient: the transpose of a rotation is the rotation by -angle.
void train_rope_backward(float *dx, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth);

// Causal multi-head attention over packed sequences: rows seq_off[b] ..
// seq_off[b] + seq_len[b] - 1 form sequence b and attend only to themselves.
// Head h reads K/V head h / (H / Hkv) (grouped- or multi-query).
//   q, out (N, H*d); k, v (N, Hkv*d); lse (N, H) the log-sum-exp of each
//   score row, kept so the backward recomputes the probabilities instead of
//   storing (T x T) per head.  scratch is unused (kept for callers; blocks of
//   scores are allocated inside).  max_len >= every seq_len.
void train_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off,
                             const int32_t *seq_len, int32_t n_seq, int H, int Hkv, int d, float *scratch, int64_t max_len, int nth);
void train_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
                              const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int H,
                              int Hkv, int d, int nth);

// h = act(g) * u,  act = SiLU (llama) or tanh-approximated GELU (gemma).   (n)
void train_glu_forward(float *h, const float *g, const float *u, int64_t n, bool gelu, int nth);
// Its backward writes dg and du (the only paths from g and u).
void train_glu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu, int nth);

// Per row: lse = log sum_j exp(logits_j); logp = logits[target] - lse.   logits (rows, V)
void train_logsoftmax_forward(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth);
// dlogits = dlogp * (onehot(target) - softmax(logits)) (written, not accumulated).
void train_logsoftmax_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target,
                               int64_t rows, int64_t V, int nth);

#endif
