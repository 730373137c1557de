// The CPU backend's training graph: the layers of the training forward pass,
// each a forward/backward pair with the same argument order (llm.c style), the
// LoRA products with their dropout, the bf16 products of training with their
// packed right operand, and the optimizers' element-wise updates.  The
// training model (train/train.c) reaches them through as_backend
// (tensor/backend.h); these declarations are the contract of those entries.
//
// Activations are row-major fp32 over N packed token rows.  Every backward
// ACCUMULATES (+=) into the gradient buffers it is given, so zeroing is one
// memset; a NULL gradient pointer means "not wanted" (a frozen weight) and
// that product is skipped.
//
// `nth` is the OpenMP thread count; every op partitions its work so that each
// output element is written by exactly one thread in a fixed order, so the
// result does not depend on scheduling (bitwise determinism).
#ifndef AS_TENSOR_TRAIN_GRAPH_H
#define AS_TENSOR_TRAIN_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
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

// out = a + b (n; out may be a): the residual connections (their backward is
// the identity), and the sum of micro-batches' gradients.
void train_residual_forward(float *out, const float *a, const float *b, int64_t n, int nth);
// x[0..n) = 0; dst row i (C floats) = src row rows[i], i < n (rows NULL: row i;
// exact copies).
void train_zero(float *x, size_t n);
void train_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n, int64_t C);
// dst row rows[i] = scale[i] * src row i, i < n.
void train_scale_rows(float *dst, const float *src, const int32_t *rows, const float *scale, int64_t n, int64_t C);

// ---- adapter dropout ----

// Inverted dropout of a (rows x cols) operand: element (i, j) is dropped when
// the hash of the counter base + i * cols + j falls below p * 2^32
// (train_ops.h: train_dropout_row), else multiplied by 1 / (1 - p).  The keep
// bits are stored in keep (rows of ceil(cols / 16) words, bit j % 16 of word
// j / 16) so that a later pass applies them without hashing.
typedef struct as_dropout {
    float p;         // drop probability, in (0, 1)
    uint64_t base;   // hash counter of element (0, 0)
    uint16_t *keep;  // the keep bits: written by a hashing pass, read by a replaying one
    bool replay;     // keep holds the masks already: apply them (the same numbers, ~3x cheaper)
} as_dropout;

// out = drop(x): hashes (drop->replay false: stores drop->keep) or replays.
void train_dropout_forward(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
// dx += drop'(dout), from the stored keep bits.
void train_dropout_backward(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth);

// ---- LoRA (in fp32 at every precision: tensor/lora_gemm.h) ----

// u = drop(x) A^T (N, r), kept for the backward;  y += scale u B^T (N, out).
// x (N, in), A (r, in), B (out, r); drop NULL: none (else its rows are made
// block by block inside the product, hashing or replaying as train_dropout_forward).
// y NULL: only u (a recomputed forward whose output the backward does not need).
void train_lora_forward(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r,
                        int64_t out, float scale, const as_dropout *drop, int nth);
// With y += s u B^T, u = z A^T, z = drop(x):
//   dB += s dy^T u;  du = s dy B;  dA += du^T z;  dx += drop'(du A)
// (the stored keep bits of drop applied on the fly).  du: scratch (N, r),
// always given; dx, dA, dB NULL: not wanted.
void train_lora_backward(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A,
                         const float *B, int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du,
                         int nth);

// ---- the bf16 products of training (tensor/gemm.h's kernel_gemm_bf16*) ----

// op(B) rounded to bf16 and packed once for several products (the vocabulary
// matrix against chunks of rows); opaque, owned by the backend that made it.
typedef struct as_bf16_packed as_bf16_packed;
as_bf16_packed *train_bf16_pack_b(bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth);
void train_bf16_packed_free(as_bf16_packed *p); // NULL: nothing
// C = alpha op(A) P + beta C, P (K x N) from train_bf16_pack_b.
void train_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const as_bf16_packed *P, float beta, float *C,
                            int64_t ldc, int nth);

// ---- optimizers (train/optim.h keeps the schedules, clipping and state) ----

// sum x[i]^2 in double, over fixed blocks of 65536 each summed in order, the
// block sums then in order: the same bits for any thread count.
double train_sum_squares(const float *x, size_t n, int nth);
// x[i] *= c.
void train_scale(float *x, size_t n, float c, int nth);
// torch.optim.AdamW (amsgrad off), step t >= 1 (this update's):
//   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void train_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                        int64_t t, int nth);
// torch.optim.RMSprop (centered off, momentum 0):
//   g <- g + wd p;  v <- alpha v + (1 - alpha) g^2;  p <- p - lr g / (sqrt(v) + eps)
void train_rmsprop_update(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth);
// torch.optim.SGD (dampening 0, not Nesterov; m NULL: no momentum):
//   g <- g + wd p;  m <- g at t = 1, else mu m + g;  p <- p - lr m
void train_sgd_update(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth);

#endif
