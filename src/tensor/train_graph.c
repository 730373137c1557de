// The CPU backend's training graph (train_graph.h): forward/backward pairs
// of the transformer layers, adapter dropout, the LoRA products, and the bf16
// products with their packed operand.  The math of each backward is written
// above it.  The optimizers' updates are in train_optim.c.
#include "tensor/train_graph.h"

#include "tensor/lora_gemm.h"
#include "tensor/rope.h"
#include "tensor/train_ops.h"
#include "util/common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

// ---- embedding ----

void train_embedding_forward(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale) {
    for (int64_t t = 0; t < N; t++) {
        const float *e = E + (int64_t)tok[t] * C;
        float *o = out + t * C;
        for (int64_t j = 0; j < C; j++) o[j] = scale * e[j];
    }
}

// Rows of repeated tokens add up in token order (serial: deterministic, and
// N x C is negligible beside the matrix products).
void train_embedding_backward(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale) {
    for (int64_t t = 0; t < N; t++) {
        float *de = dE + (int64_t)tok[t] * C;
        const float *d = dout + t * C;
        for (int64_t j = 0; j < C; j++) de[j] += scale * d[j];
    }
}

// ---- linear ----

void train_linear_forward(float *out, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim, int nth) {
    kernel_sgemm(false, true, N, out_dim, in, 1.0f, x, in, W, in, 0.0f, out, out_dim, nth);
}

// y = x W^T  =>  dx = dy W (N x in),  dW = dy^T x (out x in).
void train_linear_backward(float *dx, float *dW, const float *dout, const float *x, const float *W, int64_t N, int64_t in,
                           int64_t out_dim, int nth) {
    if (N == 0) return;
    if (dx) kernel_sgemm(false, false, N, in, out_dim, 1.0f, dout, out_dim, W, in, 1.0f, dx, in, nth);
    if (dW) kernel_sgemm(true, false, out_dim, in, N, 1.0f, dout, out_dim, x, in, 1.0f, dW, in, nth);
}

// ---- RMSNorm ----

// Sum of squares in double, as the inference engine (src/model/forward.c) does,
// so that both give the same normalised rows.
void train_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth) {
#pragma omp parallel for num_threads(nth) if (N > 1)
    for (int64_t t = 0; t < N; t++) {
        const float *xt = x + t * C;
        double ss = 0.0;
        for (int64_t j = 0; j < C; j++) ss += (double)xt[j] * xt[j];
        const float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        rstd[t] = r;
        float *o = out + t * C;
        for (int64_t j = 0; j < C; j++) o[j] = xt[j] * r * w[j];
    }
}

// y_j = x_j r w_j, r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C:
//   dw_j += sum_t dy_j x_j r
//   dx_j += r (dy_j w_j) - r^3 x_j / C * sum_k dy_k w_k x_k
// dw is reduced over rows by column blocks, each summed in row order.
void train_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N,
                            int64_t C, int nth) {
    if (dx) {
#pragma omp parallel for num_threads(nth) if (N > 1)
        for (int64_t t = 0; t < N; t++) {
            const float *xt = x + t * C, *dy = dout + t * C;
            const float r = rstd[t];
            double dot = 0.0;
            for (int64_t j = 0; j < C; j++) dot += (double)dy[j] * w[j] * xt[j];
            const float c = (float)(dot * (double)r * r * r / (double)C);
            float *d = dx + t * C;
            for (int64_t j = 0; j < C; j++) d[j] += r * dy[j] * w[j] - c * xt[j];
        }
    }
    if (dw) {
        const int64_t blk = 64, nb = (C + blk - 1) / blk;
#pragma omp parallel for num_threads(nth) if (nb > 1)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t j0 = b * blk, j1 = j0 + blk < C ? j0 + blk : C;
            float acc[64] = {0};
            for (int64_t t = 0; t < N; t++) {
                const float *xt = x + t * C, *dy = dout + t * C;
                const float r = rstd[t];
                for (int64_t j = j0; j < j1; j++) acc[j - j0] += dy[j] * xt[j] * r;
            }
            for (int64_t j = j0; j < j1; j++) dw[j] += acc[j - j0];
        }
    }
}

// ---- rotary embedding ----

static void rope_rows(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign,
                      int nth) {
    const int half = n_rot / 2;
#pragma omp parallel for num_threads(nth) if (N > 1)
    for (int64_t t = 0; t < N; t++) kernel_rope(x + t * n_heads * d, n_heads, d, n_rot, neox, cs + t * half, sn + t * half, sign);
}

void train_rope_forward(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth) {
    rope_rows(x, N, n_heads, d, n_rot, neox, cs, sn, 1.0f, nth);
}

// y = R(a) x with R orthogonal  =>  dx = R(a)^T dy = R(-a) dy.
void train_rope_backward(float *dx, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth) {
    rope_rows(dx, N, n_heads, d, n_rot, neox, cs, sn, -1.0f, nth);
}

// ---- causal attention ----

static float dot_f(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// Query rows per block: the scores of a block (ATT_BLOCK x its causal width)
// are one matrix product, softmaxed in place, then one product with V.
#define ATT_BLOCK 64

// One thread's product inside the attention's parallel loop.
static void sgemm1(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                   int64_t ldb, float beta, float *C, int64_t ldc) {
    kernel_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1);
}

// Work items are (sequence, head); each writes only its own rows' head slice,
// with single-threaded products in a fixed order (bitwise determinism).
// Per block of query rows i0 .. i0+bi-1 (keys 0 .. i0+bi-1 are visible):
//   S = scale Q K^T;  P = softmax over j <= i (0 beyond);  O = P V.
void train_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off,
                             const int32_t *seq_len, int32_t n_seq, int H, int Hkv, int d, float *scratch, int64_t max_len, int nth) {
    (void)scratch;
    const int group = H / Hkv;
    const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d, n_items = (int64_t)n_seq * H;
    const float scale = 1.0f / sqrtf((float)d);
    const int64_t ld = AS_MAX(max_len, 1);
    float *buf = as_aligned_alloc(sizeof(float) * (size_t)(nth * ATT_BLOCK * ld));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (int64_t it = 0; it < n_items; it++) {
        const int32_t b = (int32_t)(it / H);
        const int h = (int)(it % H), g = h / group;
        const int64_t t0 = seq_off[b], T = seq_len[b];
        float *S = buf + (int64_t)omp_get_thread_num() * ATT_BLOCK * ld;
        const float *Q = q + t0 * qd + (int64_t)h * d, *K = k + t0 * kvd + (int64_t)g * d, *Vv = v + t0 * kvd + (int64_t)g * d;
        for (int64_t i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            const int64_t bi = AS_MIN((int64_t)ATT_BLOCK, T - i0), nc = i0 + bi;
            sgemm1(false, true, bi, nc, d, scale, Q + i0 * qd, qd, K, kvd, 0.0f, S, ld);
            for (int64_t r = 0; r < bi; r++) {
                float *s = S + r * ld;
                const int64_t w = i0 + r + 1; // visible keys
                const float mx = train_max(s, w);
                const double sum = train_exp_shift_sum(s, w, mx);
                const float inv = (float)(1.0 / sum);
                for (int64_t j = 0; j < w; j++) s[j] *= inv;
                for (int64_t j = w; j < nc; j++) s[j] = 0.0f;
                lse[(t0 + i0 + r) * H + h] = mx + (float)log(sum);
            }
            sgemm1(false, false, bi, d, nc, 1.0f, S, ld, Vv, kvd, 0.0f, out + (t0 + i0) * qd + (int64_t)h * d, qd);
        }
    }
    free(buf);
}

// With s_ij = scale q_i.k_j, p_ij = exp(s_ij - lse_i), o_i = sum_j p_ij v_j:
//   dv_j += sum_i p_ij do_i
//   dp_ij = do_i.v_j,  D_i = do_i.o_i = sum_j p_ij dp_ij
//   ds_ij = p_ij (dp_ij - D_i)                       (softmax backward)
//   dq_i += scale sum_j ds_ij k_j,  dk_j += scale sum_i ds_ij q_i
// Work items are (sequence, K/V head): the heads sharing a K/V head write its
// dk/dv rows, so they run in one item, in head order, block by block of query
// rows, each step a single-threaded product.
void train_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
                              const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int H,
                              int Hkv, int d, int nth) {
    const int group = H / Hkv;
    const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d, n_items = (int64_t)n_seq * Hkv;
    const float scale = 1.0f / sqrtf((float)d);
    int64_t ld = 1;
    for (int32_t b = 0; b < n_seq; b++) ld = AS_MAX(ld, (int64_t)seq_len[b]);
    float *buf = as_aligned_alloc(sizeof(float) * (size_t)(nth * 2 * ATT_BLOCK * ld));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (int64_t it = 0; it < n_items; it++) {
        const int32_t b = (int32_t)(it / Hkv);
        const int g = (int)(it % Hkv);
        const int64_t t0 = seq_off[b], T = seq_len[b];
        float *P = buf + (int64_t)omp_get_thread_num() * 2 * ATT_BLOCK * ld, *dP = P + ATT_BLOCK * ld;
        const float *K = k + t0 * kvd + (int64_t)g * d, *Vv = v + t0 * kvd + (int64_t)g * d;
        float *dK = dk + t0 * kvd + (int64_t)g * d, *dV = dv + t0 * kvd + (int64_t)g * d;
        for (int h = g * group; h < (g + 1) * group; h++) {
            const float *Q = q + t0 * qd + (int64_t)h * d, *dO = dout + t0 * qd + (int64_t)h * d, *O = out + t0 * qd + (int64_t)h * d;
            float *dQ = dq + t0 * qd + (int64_t)h * d;
            for (int64_t i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                const int64_t bi = AS_MIN((int64_t)ATT_BLOCK, T - i0), nc = i0 + bi;
                sgemm1(false, true, bi, nc, d, scale, Q + i0 * qd, qd, K, kvd, 0.0f, P, ld);
                sgemm1(false, true, bi, nc, d, 1.0f, dO + i0 * qd, qd, Vv, kvd, 0.0f, dP, ld);
                for (int64_t r = 0; r < bi; r++) {
                    float *p = P + r * ld, *dp = dP + r * ld;
                    const int64_t i = i0 + r, w = i + 1;
                    const float D = dot_f(dO + i * qd, O + i * qd, d);
                    train_exp_shift_sum(p, w, lse[(t0 + i) * H + h]);
                    for (int64_t j = 0; j < w; j++) dp[j] = p[j] * (dp[j] - D) * scale;
                    for (int64_t j = w; j < nc; j++) p[j] = dp[j] = 0.0f;
                }
                sgemm1(false, false, bi, d, nc, 1.0f, dP, ld, K, kvd, 1.0f, dQ + i0 * qd, qd);
                sgemm1(true, false, nc, d, bi, 1.0f, dP, ld, Q + i0 * qd, qd, 1.0f, dK, kvd);
                sgemm1(true, false, nc, d, bi, 1.0f, P, ld, dO + i0 * qd, qd, 1.0f, dV, kvd);
            }
        }
    }
    free(buf);
}

// ---- gated linear unit ----

#define GELU_K 0.7978845608028654f // sqrt(2 / pi)

// SiLU runs in chunks of 4096 through the vectorised exp (tensor/train_ops.h).
void train_glu_forward(float *h, const float *g, const float *u, int64_t n, bool gelu, int nth) {
    if (!gelu) {
        const int64_t nb = (n + 4095) / 4096;
#pragma omp parallel for num_threads(nth) if (nb > 1)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t o = b * 4096;
            train_silu_glu_forward(h + o, g + o, u + o, AS_MIN((int64_t)4096, n - o));
        }
        return;
    }
#pragma omp parallel for num_threads(nth) if (n > 4096)
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        h[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x))) * u[i];
    }
}

// h = act(g) u:  dg = dh u act'(g),  du = dh act(g) (written, not accumulated), with
//   SiLU:  act = g s, s = sigmoid(g);  act' = s (1 + g (1 - s))
//   GELU:  act = g/2 (1 + t), t = tanh(k (g + 0.044715 g^3));
//          act' = (1 + t)/2 + g/2 (1 - t^2) k (1 + 3 * 0.044715 g^2)
void train_glu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu, int nth) {
    if (!gelu) {
        const int64_t nb = (n + 4095) / 4096;
#pragma omp parallel for num_threads(nth) if (nb > 1)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t o = b * 4096;
            train_silu_glu_backward(dg + o, du + o, dh + o, g + o, u + o, AS_MIN((int64_t)4096, n - o));
        }
        return;
    }
#pragma omp parallel for num_threads(nth) if (n > 4096)
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        const float t = tanhf(GELU_K * (x + 0.044715f * x * x * x));
        const float a = 0.5f * x * (1.0f + t);
        const float da = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dg[i] = dh[i] * u[i] * da;
        du[i] = dh[i] * a;
    }
}

// ---- log-softmax of the target token ----

void train_logsoftmax_forward(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth) {
#pragma omp parallel for num_threads(nth) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *z = logits + r * V;
        const float mx = train_max(z, V);
        const double sum = train_exp_sum(z, V, mx);
        lse[r] = mx + (float)log(sum);
        logp[r] = z[target[r]] - lse[r];
    }
}

// d logp / d z_j = [j == target] - softmax(z)_j.
void train_logsoftmax_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target,
                               int64_t rows, int64_t V, int nth) {
#pragma omp parallel for num_threads(nth) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *z = logits + r * V;
        float *dz = dlogits + r * V;
        train_neg_scaled_exp(dz, z, V, dlogp[r], lse[r]);
        dz[target[r]] += dlogp[r];
    }
}

// ---- residual ----

void train_zero(float *x, size_t n) { memset(x, 0, sizeof(float) * n); }

void train_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n, int64_t C) {
    if (!rows) {
        memcpy(dst, src, sizeof(float) * (size_t)(n * C));
        return;
    }
    for (int64_t i = 0; i < n; i++) memcpy(dst + i * C, src + (int64_t)rows[i] * C, sizeof(float) * (size_t)C);
}

void train_scale_rows(float *dst, const float *src, const int32_t *rows, const float *scale, int64_t n, int64_t C) {
    for (int64_t i = 0; i < n; i++) {
        const float g = scale[i], *s = src + i * C;
        float *d = dst + (int64_t)rows[i] * C;
        for (int64_t j = 0; j < C; j++) d[j] = g * s[j];
    }
}

void train_residual_forward(float *out, const float *a, const float *b, int64_t n, int nth) {
#pragma omp parallel for schedule(static) num_threads(nth) if (n > 65536)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// ---- adapter dropout ----

// Drop probability p as a 32-bit threshold (p < 1).
static inline uint32_t dropout_thresh(float p) { return (uint32_t)((double)p * 4294967296.0); }

// Rows i0 .. i0+n-1 of drop(x) into dst (n x cols): row i hashes the counter
// base + i * cols (train_dropout_row) and stores its keep bits, or replays them.
static void dropout_rows(float *dst, const float *x, int64_t i0, int64_t n, int64_t cols, const as_dropout *drop) {
    const int64_t w = (cols + 15) / 16;
    const float scale = 1.0f / (1.0f - drop->p);
    for (int64_t i = i0; i < i0 + n; i++) {
        float *o = dst + (i - i0) * cols;
        if (drop->replay) train_dropout_row_mask(o, x + i * cols, cols, drop->keep + i * w, scale, 0);
        else train_dropout_row_keep(o, x + i * cols, cols, drop->base + (uint64_t)(i * cols), dropout_thresh(drop->p), scale, 0, drop->keep + i * w);
    }
}

void train_dropout_forward(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth) {
#pragma omp parallel for num_threads(nth) if (rows > 1)
    for (int64_t i = 0; i < rows; i++) dropout_rows(out + i * cols, x, i, 1, cols, drop);
}

void train_dropout_backward(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth) {
    const int64_t w = (cols + 15) / 16;
    const float scale = 1.0f / (1.0f - drop->p);
#pragma omp parallel for num_threads(nth) if (rows > 1)
    for (int64_t i = 0; i < rows; i++) train_dropout_row_mask(dx + i * cols, dout + i * cols, cols, drop->keep + i * w, scale, 1);
}

// ---- LoRA ----

// The adapters' products are in fp32 at every precision (lora_gemm.h): with
// rank r each has only 2 r multiply-adds per element of its large operand,
// so bf16's packing of that operand would cost as much as the product (it
// was ~10% of a bf16 LoRA step), and so did general sgemm's (OpenBLAS's
// packing copies); fp32 is also the more exact.

typedef struct dropped_rows {
    const float *x;
    int64_t in;
    const as_dropout *drop;
} dropped_rows;

// Rows of drop(x) for lora_gemm_rows_narrow_fill: made block by block inside
// the product (in L1) instead of an N x in copy.
static void dropped_rows_fill(void *ctx, int64_t i0, int64_t n, float *dst) {
    const dropped_rows *d = ctx;
    dropout_rows(dst, d->x, i0, n, d->in, d->drop);
}

void train_lora_forward(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r,
                        int64_t out, float scale, const as_dropout *drop, int nth) {
    const float *At = lora_gemm_transposed(A, r, in);
    if (!drop) lora_gemm_rows_narrow(N, in, r, 1.0f, x, At, 0.0f, u, nth);
    else {
        dropped_rows d = {x, in, drop};
        lora_gemm_rows_narrow_fill(N, in, r, 1.0f, dropped_rows_fill, &d, At, 0.0f, u, nth);
    }
    if (!y) return;
    lora_gemm_rows_wide(N, r, out, scale, u, lora_gemm_transposed(B, out, r), NULL, 1.0f, y, nth); // y += s u B^T
}

// dB += s dy^T u;  du = s dy B;  dA += du^T drop(x);  dx += drop'(du A)
// (the products apply the forward's stored keep bits on the fly).
void train_lora_backward(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A,
                         const float *B, int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du,
                         int nth) {
    if (dB) lora_gemm_reduce(N, r, out, scale, u, dy, NULL, true, dB, nth); // dB += s dy^T u
    if (!dA && !dx) return;
    lora_gemm_rows_narrow(N, out, r, scale, dy, B, 0.0f, du, nth); // du = s dy B
    const lora_drop keep = {drop ? drop->keep : NULL, drop ? 1.0f / (1.0f - drop->p) : 1.0f};
    const lora_drop *dk = drop ? &keep : NULL;
    if (dA) lora_gemm_reduce(N, r, in, 1.0f, du, x, dk, false, dA, nth);    // dA += du^T drop(x)
    if (dx) lora_gemm_rows_wide(N, r, in, 1.0f, du, A, dk, 1.0f, dx, nth); // dx += drop'(du A)
}

// ---- the bf16 products ----

struct as_bf16_packed {
    kernel_bf16_packed p;
};

as_bf16_packed *train_bf16_pack_b(bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth) {
    as_bf16_packed *p = as_calloc(1, sizeof *p);
    kernel_bf16_pack_b(&p->p, tb, K, N, B, ldb, nth);
    return p;
}

void train_bf16_packed_free(as_bf16_packed *p) {
    if (!p) return;
    kernel_bf16_packed_free(&p->p);
    free(p);
}

void train_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const as_bf16_packed *P, float beta, float *C,
                            int64_t ldc, int nth) {
    kernel_gemm_bf16_packed(ta, M, alpha, A, lda, &P->p, beta, C, ldc, nth);
}
