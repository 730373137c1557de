// Op-level conformance of the backends' training graph (the block of
// as_backend after "training graph": forward/backward pairs, LoRA, dropout,
// bf16 products, optimizer), part of test_backend_ops: every op, forward AND
// backward, for every backend and variant (for_each), against a double-
// precision reference written here with a tolerance per op and precision.
//
// Backward references are the analytic gradients in double; for attention
// and the log-softmax a central finite difference of the double forward
// checks a few of them too (and so the analytic formulas).  The optimizer is
// compared with torch.optim's rules in double over several steps; dropout
// exactly (the mask is the counter hash of its seed: the same bits on every
// backend).  Shapes: the default model's (width 576, 9 heads of 64 over 3 KV
// heads, FFN 1536, vocabulary 49152), Gemma-2B's (width 2048, 8 heads of 256
// over 1 KV head, GeGLU, FFN 16384, vocabulary 256000; a few rows of the big
// ones) and ragged ones (1 row, odd sizes, a 64-row block boundary).
#include "backend_ops_common.h"

#include <math.h>

#include "tensor/quant.h"
#include "util/common.h"

#define NTH 2

static float *fmem(int64_t n) { return as_malloc(sizeof(float) * (size_t)AS_MAX(n, (int64_t)1)); }
static double *dmem(int64_t n) { return as_malloc(sizeof(double) * (size_t)AS_MAX(n, (int64_t)1)); }
static void set(float *x, int64_t n, float c) {
    for (int64_t i = 0; i < n; i++) x[i] = c;
}

// Streaming norm-wise error, for references too large to store.
typedef struct { double e, r; } nerr;
static inline void nerr_add(nerr *a, double y, double ref) { a->e += (y - ref) * (y - ref), a->r += ref * ref; }
static inline double nerr_get(const nerr *a) { return sqrt(a->e) / fmax(sqrt(a->r), 1e-30); }

void test_train_graph_registry(void **st) {
    (void)st;
    for (int i = 0; i < as_backend_count(); i++) {
        const as_backend *b = as_backend_at(i);
        const void *ops[] = {b->embedding_forward, b->embedding_backward, b->linear_forward,   b->linear_backward,     b->rmsnorm_forward,
                             b->rmsnorm_backward,  b->rope_forward,       b->rope_backward,    b->attention_forward,   b->attention_backward,
                             b->glu_forward,       b->glu_backward,       b->logsoftmax_forward, b->logsoftmax_backward, b->residual_forward,
                             b->dropout_forward,   b->dropout_backward,   b->lora_forward,     b->lora_backward,       b->gemm_bf16,
                             b->bf16_pack_b,       b->bf16_packed_free,   b->gemm_bf16_packed, b->sum_squares,         b->grad_scale,
                             b->adamw_update,      b->rmsprop_update,     b->sgd_update};
        for (size_t k = 0; k < AS_ARRAY_LEN(ops); k++)
            if (!ops[k]) fail_msg("backend %s: training op %zu missing", b->name, k);
    }
}

// ---- embedding ----

// Ids span the vocabulary (its last row too) and repeat (the backward adds
// repeated rows).  Gemma's 256000 x 2048 table (2 GB) is cut to 1000 rows:
// the vocabulary only bounds the ids.
static void t_embedding(const as_backend *b, int v) {
    static const struct { int64_t N, C, V; float scale; const char *name; } cs[] = {
        {6, 576, 49152, 1.0f, "default model"}, {4, 2048, 1000, 45.254834f, "Gemma-2B width"}, {1, 1, 1, 1.0f, "1 x 1"}, {7, 33, 5, 0.5f, "ragged"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t N = cs[ci].N, C = cs[ci].C, V = cs[ci].V;
        const float scale = cs[ci].scale;
        int32_t *tok = as_malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t t = 0; t < N; t++) tok[t] = t == 0 ? (int32_t)(V - 1) : t == N - 1 ? tok[0] : (int32_t)as_rng_below(&g_rng, (uint64_t)V);
        float *E = as_calloc((size_t)(V * C), sizeof(float)), *dE = as_calloc((size_t)(V * C), sizeof(float));
        float *out = fmem(N * C), *dout = fmem(N * C);
        double *ref = dmem(N * C);
        for (int64_t t = 0; t < N; t++) fill(E + (int64_t)tok[t] * C, C, -1, 1), set(dE + (int64_t)tok[t] * C, C, 0.25f);
        fill(dout, N * C, -1, 1);
        for (int64_t t = 0; t < N; t++)
            for (int64_t j = 0; j < C; j++) ref[t * C + j] = (double)scale * E[(int64_t)tok[t] * C + j];
        b->embedding_forward(out, tok, E, N, C, scale);
        expect(elem_err(out, ref, N * C), 1e-7, b, v, "embedding_forward", cs[ci].name);
        b->embedding_backward(dE, dout, tok, N, C, scale);
        // The rows of the ids: 0.25 + scale * the sum of their rows of dout (relative
        // to the sum of the terms' magnitudes: repeated ids add in float); the others stay 0.
        double worst = 0;
        for (int64_t t = 0; t < N; t++)
            for (int64_t j = 0; j < C; j++) {
                double r = 0.25, mag = 0.25;
                for (int64_t s = 0; s < N; s++)
                    if (tok[s] == tok[t]) r += (double)scale * dout[s * C + j], mag += fabs((double)scale * dout[s * C + j]);
                worst = fmax(worst, fabs(dE[(int64_t)tok[t] * C + j] - r) / fmax(1.0, mag));
            }
        for (int64_t r = 0; r < V; r += 97) {
            bool used = false;
            for (int64_t t = 0; t < N; t++) used |= tok[t] == r;
            for (int64_t j = 0; !used && j < C; j++) worst = fmax(worst, fabs(dE[r * C + j]));
        }
        expect(worst, 1e-6, b, v, "embedding_backward", cs[ci].name);
        free(tok), free(E), free(dE), free(out), free(dout), free(ref);
    }
}

void test_train_graph_embedding(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_embedding); }

// ---- linear (fp32) ----

typedef struct { int64_t N, in, out; const char *name; } lshape;
static const lshape linear_shapes[] = {{5, 576, 576, "default q/o"},     {3, 576, 1536, "default gate/up"}, {2, 1536, 576, "default down"},
                                       {2, 2048, 256, "Gemma-2B k/v"},   {1, 2048, 16384, "Gemma-2B gate"}, {1, 1, 1, "1 x 1 x 1"},
                                       {7, 33, 5, "ragged"}};

static void t_linear(const as_backend *b, int v) {
    for (size_t si = 0; si < AS_ARRAY_LEN(linear_shapes); si++) {
        const lshape *s = &linear_shapes[si];
        const int64_t N = s->N, in = s->in, out = s->out;
        float *x = fmem(N * in), *W = fmem(out * in), *y = fmem(N * out), *dy = fmem(N * out), *dx = fmem(N * in), *dW = fmem(out * in);
        double *ref = dmem(N * out), *rdx = dmem(N * in);
        fill(x, N * in, -1, 1), fill(W, out * in, -0.5, 0.5), fill(dy, N * out, -1, 1);
        for (int64_t t = 0; t < N; t++)
            for (int64_t o = 0; o < out; o++) {
                double a = 0;
                for (int64_t i = 0; i < in; i++) a += (double)x[t * in + i] * W[o * in + i];
                ref[t * out + o] = a;
            }
        b->linear_forward(y, x, W, N, in, out, NTH);
        expect(norm_err(y, ref, N * out), 1e-5, b, v, "linear_forward", s->name);
        // dx += dy W;  dW += dy^T x (both from 0.25).
        set(dx, N * in, 0.25f), set(dW, out * in, 0.25f);
        b->linear_backward(dx, dW, dy, x, W, N, in, out, NTH);
        for (int64_t t = 0; t < N; t++)
            for (int64_t i = 0; i < in; i++) {
                double a = 0.25;
                for (int64_t o = 0; o < out; o++) a += (double)dy[t * out + o] * W[o * in + i];
                rdx[t * in + i] = a;
            }
        nerr e = {0, 0};
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double a = 0.25;
                for (int64_t t = 0; t < N; t++) a += (double)dy[t * out + o] * x[t * in + i];
                nerr_add(&e, dW[o * in + i], a);
            }
        expect(norm_err(dx, rdx, N * in), 1e-5, b, v, "linear_backward (dx)", s->name);
        expect(nerr_get(&e), 1e-5, b, v, "linear_backward (dW)", s->name);
        // NULL gradients: not wanted, not touched.
        set(dx, N * in, 0.25f);
        b->linear_backward(dx, NULL, dy, x, W, N, in, out, NTH);
        expect(norm_err(dx, rdx, N * in), 1e-5, b, v, "linear_backward (dx)", s->name);
        b->linear_backward(NULL, NULL, dy, x, W, N, in, out, NTH);
        free(x), free(W), free(y), free(dy), free(dx), free(dW), free(ref), free(rdx);
    }
}

void test_train_graph_linear(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_linear); }

// ---- bf16 products: general, and with the right operand packed ----

static double bf(float x) { return as_bf16_to_f32(as_f32_to_bf16(x)); }

// C = alpha op(A) op(B) + beta C0 with the operands rounded to bf16 (rnd) or not.
static void gemm_ref(double *ref, bool rnd, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, const float *C0, int64_t ldc) {
    double *a = dmem(M * K), *bt = dmem(N * K); // op(A) and op(B)^T, row-major
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++) {
            const float x = ta ? A[k * lda + i] : A[i * lda + k];
            a[i * K + k] = rnd ? bf(x) : x;
        }
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < K; k++) {
            const float x = tb ? B[j * ldb + k] : B[k * ldb + j];
            bt[j * K + k] = rnd ? bf(x) : x;
        }
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += a[i * K + k] * bt[j * K + k];
            ref[i * N + j] = alpha * acc + (beta != 0 ? beta * (double)C0[i * ldc + j] : 0);
        }
    free(a), free(bt);
}

static void t_gemm_bf16(const as_backend *b, int v) {
    // Tolerances (norm-wise): fp32 sums of the bf16-rounded operands; and
    // against the unrounded operands, relative to the terms' scale (below).
    const double tol_rounded = 1e-5, tol_exact = 1e-2;
    static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 300}, {64, 96, 576}, {2, 256, 2048}, {33, 5, 1536}};
    for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++)
        for (int tr = 0; tr < 4; tr++) {
            const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            const bool ta = tr & 1, tb = tr & 2;
            const int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
            float *A = fmem((ta ? K : M) * lda), *B = fmem((tb ? N : K) * ldb), *C = fmem(M * ldc), *C0 = fmem(M * ldc), *Cv = fmem(M * N);
            double *ref = dmem(M * N), *ref2 = dmem(M * N);
            fill(A, (ta ? K : M) * lda, -1, 1), fill(B, (tb ? N : K) * ldb, -1, 1), fill(C0, M * ldc, -1, 1);
            memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
            const float alpha = 0.75f, beta = tr == 3 ? 0.0f : 1.0f;
            gemm_ref(ref, true, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
            gemm_ref(ref2, false, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
            b->gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NTH);
            for (int64_t i = 0; i < M; i++) memcpy(Cv + i * N, C + i * ldc, sizeof(float) * (size_t)N);
            // Against the fp32 operands the error is bf16's rounding of each
            // product, so it is measured against the scale of the sum's terms,
            // |alpha| |op(A)| |op(B)| + |beta| |C0| (a 1 x 1 x 1 product whose
            // two terms cancel has a tiny result but the same rounding).
            float *Aa = fmem((ta ? K : M) * lda), *Ba = fmem((tb ? N : K) * ldb), *Ca = fmem(M * ldc);
            for (int64_t i = 0; i < (ta ? K : M) * lda; i++) Aa[i] = fabsf(A[i]);
            for (int64_t i = 0; i < (tb ? N : K) * ldb; i++) Ba[i] = fabsf(B[i]);
            for (int64_t i = 0; i < M * ldc; i++) Ca[i] = fabsf(C0[i]);
            double *scale = dmem(M * N), e2 = 0, s2 = 0;
            gemm_ref(scale, false, ta, tb, M, N, K, alpha, Aa, lda, Ba, ldb, beta, Ca, ldc);
            for (int64_t i = 0; i < M * N; i++) e2 += (Cv[i] - ref2[i]) * (Cv[i] - ref2[i]), s2 += scale[i] * scale[i];
            char what[96];
            snprintf(what, sizeof what, "%lldx%lldx%lld ta=%d tb=%d beta=%g", (long long)M, (long long)N, (long long)K, ta, tb, beta);
            expect(norm_err(Cv, ref, M * N), tol_rounded, b, v, "gemm_bf16 (bf16 operands)", what);
            expect(sqrt(e2 / s2), tol_exact, b, v, "gemm_bf16 (fp32 operands)", what);
            free(A), free(B), free(C), free(C0), free(Cv), free(ref), free(ref2), free(Aa), free(Ba), free(Ca), free(scale);
        }
    // Packed: the vocabulary projection's logits x W^T (P = W^T, tb) and its
    // backward's dlogits W (P = W), as train.c runs them (ta false); ta and
    // beta 1 on the small shapes.
    static const struct { int64_t M, V, C; const char *name; } ps[] = {
        {2, 49152, 576, "default vocabulary"}, {2, 2000, 2048, "Gemma-2B width, 2000 of the vocabulary"}, {1, 1, 1, "1 x 1"}, {5, 37, 19, "ragged"}};
    for (size_t pi = 0; pi < AS_ARRAY_LEN(ps); pi++) {
        const int64_t M = ps[pi].M, V = ps[pi].V, Cw = ps[pi].C, big = V * Cw > 1000000;
        float *W = fmem(V * Cw), *Wr = fmem(V * Cw); // W and W rounded to bf16
        fill(W, V * Cw, -0.5, 0.5);
        for (int64_t i = 0; i < V * Cw; i++) Wr[i] = (float)bf(W[i]);
        for (int tr = 0; tr < (big ? 2 : 4); tr++) {
            const bool back = tr & 1, ta = tr & 2; // back: P = W (K = V, N = C); else P = W^T (K = C, N = V)
            const int64_t K = back ? V : Cw, N = back ? Cw : V, lda = ta ? M : K;
            float *A = fmem(M * K), *C = fmem(M * N), *C0 = fmem(M * N);
            double *ref = dmem(M * N), *arow = dmem(K);
            fill(A, M * K, -1, 1), fill(C0, M * N, -1, 1);
            memcpy(C, C0, sizeof(float) * (size_t)(M * N));
            const float beta = ta ? 1.0f : 0.0f;
            for (int64_t i = 0; i < M; i++) {
                for (int64_t k = 0; k < K; k++) arow[k] = bf(ta ? A[k * lda + i] : A[i * lda + k]);
                double *r = ref + i * N;
                for (int64_t j = 0; j < N; j++) r[j] = beta != 0 ? (double)C0[i * N + j] : 0.0;
                if (back) // r[c] += sum_v a[v] W[v][c]
                    for (int64_t k = 0; k < K; k++)
                        for (int64_t j = 0; j < N; j++) r[j] += arow[k] * Wr[k * Cw + j];
                else // r[v] += a . W[v]
                    for (int64_t j = 0; j < N; j++) {
                        double acc = 0;
                        for (int64_t k = 0; k < K; k++) acc += arow[k] * Wr[j * Cw + k];
                        r[j] += acc;
                    }
            }
            as_bf16_packed *P = b->bf16_pack_b(!back, K, N, W, Cw, NTH);
            b->gemm_bf16_packed(ta, M, 1.0f, A, lda, P, beta, C, N, NTH);
            b->bf16_packed_free(P);
            char what[128];
            snprintf(what, sizeof what, "%s, %lld rows, %s, ta=%d beta=%g", ps[pi].name, (long long)M, back ? "dlogits W" : "x W^T", ta, beta);
            expect(norm_err(C, ref, M * N), tol_rounded, b, v, "gemm_bf16_packed", what);
            free(A), free(C), free(C0), free(ref), free(arow);
        }
        free(W), free(Wr);
    }
    b->bf16_packed_free(NULL);
}

void test_train_graph_gemm_bf16(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_gemm_bf16); }

// ---- RMSNorm ----

static void t_rmsnorm(const as_backend *b, int v) {
    static const struct { int64_t N, C; float eps; const char *name; } cs[] = {
        {3, 576, 1e-5f, "default model"}, {2, 2048, 1e-6f, "Gemma-2B"}, {1, 1, 1e-5f, "1 x 1"}, {5, 33, 1e-5f, "ragged"}, {70, 17, 1e-6f, "70 rows"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t N = cs[ci].N, C = cs[ci].C;
        float *x = fmem(N * C), *w = fmem(C), *y = fmem(N * C), *rstd = fmem(N), *dy = fmem(N * C), *dx = fmem(N * C), *dw = fmem(C);
        double *ref = dmem(N * C), *rr = dmem(N), *rdx = dmem(N * C), *rdw = dmem(C);
        fill(x, N * C, -3, 3), fill(w, C, 0.5, 1.5), fill(dy, N * C, -1, 1);
        for (int64_t t = 0; t < N; t++) {
            double ss = 0;
            for (int64_t j = 0; j < C; j++) ss += (double)x[t * C + j] * x[t * C + j];
            rr[t] = 1.0 / sqrt(ss / (double)C + cs[ci].eps);
            for (int64_t j = 0; j < C; j++) ref[t * C + j] = x[t * C + j] * rr[t] * w[j];
        }
        b->rmsnorm_forward(y, rstd, x, w, N, C, cs[ci].eps, NTH);
        expect(elem_err(y, ref, N * C), 2e-6, b, v, "rmsnorm_forward", cs[ci].name);
        double e = 0;
        for (int64_t t = 0; t < N; t++) e = fmax(e, fabs(rstd[t] - rr[t]) / rr[t]);
        expect(e, 1e-6, b, v, "rmsnorm_forward (rstd)", cs[ci].name);
        // dx_j += r dy_j w_j - r^3 x_j / C sum_k dy_k w_k x_k;  dw_j += sum_t dy_j x_j r.
        for (int64_t j = 0; j < C; j++) rdw[j] = 0.25;
        for (int64_t t = 0; t < N; t++) {
            double dot = 0;
            const double r = rr[t];
            for (int64_t j = 0; j < C; j++) dot += (double)dy[t * C + j] * w[j] * x[t * C + j];
            for (int64_t j = 0; j < C; j++) {
                rdx[t * C + j] = 0.25 + r * dy[t * C + j] * w[j] - r * r * r * x[t * C + j] / (double)C * dot;
                rdw[j] += (double)dy[t * C + j] * x[t * C + j] * r;
            }
        }
        set(dx, N * C, 0.25f), set(dw, C, 0.25f);
        b->rmsnorm_backward(dx, dw, dy, x, w, rstd, N, C, NTH);
        expect(elem_err(dx, rdx, N * C), 1e-5, b, v, "rmsnorm_backward (dx)", cs[ci].name);
        expect(elem_err(dw, rdw, C), 1e-5, b, v, "rmsnorm_backward (dw)", cs[ci].name);
        free(x), free(w), free(y), free(rstd), free(dy), free(dx), free(dw), free(ref), free(rr), free(rdx), free(rdw);
    }
}

void test_train_graph_rmsnorm(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_rmsnorm); }

// ---- RoPE over packed rows ----

static void t_rope(const as_backend *b, int v) {
    static const struct { int64_t N; int H, d, nr; bool neox; const char *name; } cs[] = {
        {3, 9, 64, 64, false, "default q"}, {3, 3, 64, 64, false, "default k"}, {2, 8, 256, 256, true, "Gemma-2B q"},
        {2, 1, 256, 256, true, "Gemma-2B k"}, {1, 2, 80, 32, false, "partial, 1 row"}, {5, 3, 80, 32, true, "partial, neox"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++)
        for (int back = 0; back < 2; back++) {
            const int64_t N = cs[ci].N;
            const int H = cs[ci].H, d = cs[ci].d, nr = cs[ci].nr, half = nr / 2;
            float *x = fmem(N * H * d), *cs_ = fmem(N * half), *sn = fmem(N * half);
            double *ref = dmem(N * H * d);
            fill(x, N * H * d, -2, 2);
            for (int64_t t = 0; t < N; t++)
                for (int i = 0; i < half; i++) {
                    const double a = (double)(t + 5) * pow(10000.0, -2.0 * i / nr);
                    cs_[t * half + i] = (float)cos(a), sn[t * half + i] = (float)sin(a);
                }
            const double sign = back ? -1.0 : 1.0; // the backward rotates by -angle: R^T dy
            for (int64_t t = 0; t < N; t++)
                for (int h = 0; h < H; h++) {
                    const float *xv = x + (t * H + h) * d;
                    double *r = ref + (t * H + h) * d;
                    for (int e = 0; e < d; e++) r[e] = xv[e];
                    for (int i = 0; i < half; i++) {
                        const int i0 = cs[ci].neox ? i : 2 * i, i1 = cs[ci].neox ? i + half : 2 * i + 1;
                        const double c = cs_[t * half + i], s = sign * sn[t * half + i];
                        r[i0] = xv[i0] * c - xv[i1] * s, r[i1] = xv[i0] * s + xv[i1] * c;
                    }
                }
            if (back) b->rope_backward(x, N, H, d, nr, cs[ci].neox, cs_, sn, NTH);
            else b->rope_forward(x, N, H, d, nr, cs[ci].neox, cs_, sn, NTH);
            expect(elem_err(x, ref, N * H * d), 1e-6, b, v, back ? "rope_backward" : "rope_forward", cs[ci].name);
            free(x), free(cs_), free(sn), free(ref);
        }
}

void test_train_graph_rope(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_rope); }

// ---- causal attention over packed sequences ----

typedef struct {
    int H, Hkv, d, n_seq;
    int32_t len[4];
    const char *name;
} acase;

// The forward in double: out (N, H*d), lse (N, H).
static void att_ref(double *out, double *lse, const double *q, const double *k, const double *v, const acase *c, const int32_t *off) {
    const int H = c->H, Hkv = c->Hkv, d = c->d, group = H / Hkv;
    const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d;
    const double scale = 1.0 / sqrt((double)d);
    double *s = dmem(256);
    for (int b = 0; b < c->n_seq; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < c->len[b]; i++) {
                const int64_t ti = off[b] + i;
                const int g = h / group;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double a = 0;
                    for (int e = 0; e < d; e++) a += q[ti * qd + h * d + e] * k[(off[b] + j) * kvd + g * d + e];
                    s[j] = a * scale, mx = fmax(mx, s[j]);
                }
                for (int j = 0; j <= i; j++) sum += exp(s[j] - mx);
                lse[ti * H + h] = mx + log(sum);
                for (int e = 0; e < d; e++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += exp(s[j] - lse[ti * H + h]) * v[(off[b] + j) * kvd + g * d + e];
                    out[ti * qd + h * d + e] = o;
                }
            }
    free(s);
}

// L = sum dout . out, in double.
static double att_loss(const double *q, const double *k, const double *v, const double *dout, const acase *c, const int32_t *off, int64_t N) {
    const int64_t qd = (int64_t)c->H * c->d;
    double *out = dmem(N * qd), *lse = dmem(N * c->H), L = 0;
    att_ref(out, lse, q, k, v, c, off);
    for (int64_t i = 0; i < N * qd; i++) L += dout[i] * out[i];
    free(out), free(lse);
    return L;
}

static void t_attention(const as_backend *b, int v) {
    static const acase cs[] = {{9, 3, 64, 3, {5, 1, 70}, "default model (70 rows: two blocks of 64)"},
                               {8, 1, 256, 2, {3, 17}, "Gemma-2B"},
                               {3, 1, 5, 2, {1, 2}, "ragged, head size 5"},
                               {2, 2, 16, 1, {1}, "1 row"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const acase *c = &cs[ci];
        const int H = c->H, Hkv = c->Hkv, d = c->d, group = H / Hkv;
        int32_t off[4], mx = 0;
        int64_t N = 0;
        for (int s = 0; s < c->n_seq; s++) off[s] = (int32_t)N, N += c->len[s], mx = AS_MAX(mx, c->len[s]);
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d;
        float *q = fmem(N * qd), *k = fmem(N * kvd), *vv = fmem(N * kvd), *out = fmem(N * qd), *lse = fmem(N * H), *dout = fmem(N * qd);
        float *dq = fmem(N * qd), *dk = fmem(N * kvd), *dv = fmem(N * kvd);
        double *Q = dmem(N * qd), *K = dmem(N * kvd), *V = dmem(N * kvd), *dO = dmem(N * qd), *ro = dmem(N * qd), *rl = dmem(N * H);
        double *rdq = dmem(N * qd), *rdk = dmem(N * kvd), *rdv = dmem(N * kvd), *P = dmem(256), *dP = dmem(256);
        fill(q, N * qd, -1, 1), fill(k, N * kvd, -1, 1), fill(vv, N * kvd, -1, 1), fill(dout, N * qd, -1, 1);
        for (int64_t i = 0; i < N * qd; i++) Q[i] = q[i], dO[i] = dout[i];
        for (int64_t i = 0; i < N * kvd; i++) K[i] = k[i], V[i] = vv[i];
        att_ref(ro, rl, Q, K, V, c, off);
        b->attention_forward(out, lse, q, k, vv, off, c->len, c->n_seq, H, Hkv, d, NULL, mx, NTH);
        expect(elem_err(out, ro, N * qd), 4e-6, b, v, "attention_forward", c->name);
        expect(elem_err(lse, rl, N * H), 2e-6, b, v, "attention_forward (lse)", c->name);
        // The analytic backward in double (p from the double forward):
        //   dv_j += sum_i p_ij do_i;  dp_ij = do_i.v_j;  ds_ij = p_ij (dp_ij - sum_j' p_ij' dp_ij')
        //   dq_i += scale sum_j ds_ij k_j;  dk_j += scale sum_i ds_ij q_i
        const double scale = 1.0 / sqrt((double)d);
        for (int64_t i = 0; i < N * qd; i++) rdq[i] = 0.25;
        for (int64_t i = 0; i < N * kvd; i++) rdk[i] = rdv[i] = 0.25;
        for (int s = 0; s < c->n_seq; s++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < c->len[s]; i++) {
                    const int64_t ti = off[s] + i;
                    const int g = h / group;
                    double D = 0;
                    for (int j = 0; j <= i; j++) {
                        const int64_t tj = off[s] + j;
                        double a = 0, dp = 0;
                        for (int e = 0; e < d; e++) a += Q[ti * qd + h * d + e] * K[tj * kvd + g * d + e], dp += dO[ti * qd + h * d + e] * V[tj * kvd + g * d + e];
                        P[j] = exp(a * scale - rl[ti * H + h]), dP[j] = dp, D += P[j] * dp;
                    }
                    for (int j = 0; j <= i; j++) {
                        const int64_t tj = off[s] + j;
                        const double ds = P[j] * (dP[j] - D) * scale;
                        for (int e = 0; e < d; e++) {
                            rdv[tj * kvd + g * d + e] += P[j] * dO[ti * qd + h * d + e];
                            rdq[ti * qd + h * d + e] += ds * K[tj * kvd + g * d + e];
                            rdk[tj * kvd + g * d + e] += ds * Q[ti * qd + h * d + e];
                        }
                    }
                }
        set(dq, N * qd, 0.25f), set(dk, N * kvd, 0.25f), set(dv, N * kvd, 0.25f);
        b->attention_backward(dq, dk, dv, dout, out, lse, q, k, vv, off, c->len, c->n_seq, H, Hkv, d, NTH);
        expect(norm_err(dq, rdq, N * qd), 1e-5, b, v, "attention_backward (dq)", c->name);
        expect(norm_err(dk, rdk, N * kvd), 1e-5, b, v, "attention_backward (dk)", c->name);
        expect(norm_err(dv, rdv, N * kvd), 1e-5, b, v, "attention_backward (dv)", c->name);
        {   // Run to run, the same bits: fixed summation orders, no atomics.
            float *o2 = fmem(N * qd), *l2 = fmem(N * H), *dq2 = fmem(N * qd), *dk2 = fmem(N * kvd), *dv2 = fmem(N * kvd);
            b->attention_forward(o2, l2, q, k, vv, off, c->len, c->n_seq, H, Hkv, d, NULL, mx, NTH);
            set(dq2, N * qd, 0.25f), set(dk2, N * kvd, 0.25f), set(dv2, N * kvd, 0.25f);
            b->attention_backward(dq2, dk2, dv2, dout, out, lse, q, k, vv, off, c->len, c->n_seq, H, Hkv, d, NTH);
            const bool same = !memcmp(o2, out, sizeof(float) * (size_t)(N * qd)) && !memcmp(l2, lse, sizeof(float) * (size_t)(N * H)) &&
                              !memcmp(dq2, dq, sizeof(float) * (size_t)(N * qd)) && !memcmp(dk2, dk, sizeof(float) * (size_t)(N * kvd)) &&
                              !memcmp(dv2, dv, sizeof(float) * (size_t)(N * kvd));
            expect(same ? 0 : 1, 0, b, v, "attention (twice: same bits)", c->name);
            free(o2), free(l2), free(dq2), free(dk2), free(dv2);
        }
        // Finite differences of L = sum dout . out in double at a few elements of q, k, v.
        double fd_ref = 0, fd_be = 0;
        for (int spot = 0; spot < 4; spot++)
            for (int which = 0; which < 3; which++) {
                double *X = which == 0 ? Q : which == 1 ? K : V;
                const int64_t n = which == 0 ? N * qd : N * kvd, i = (int64_t)as_rng_below(&g_rng, (uint64_t)n);
                const double h = 1e-5, x0 = X[i];
                X[i] = x0 + h;
                const double lp = att_loss(Q, K, V, dO, c, off, N);
                X[i] = x0 - h;
                const double lm = att_loss(Q, K, V, dO, c, off, N);
                X[i] = x0;
                const double fd = (lp - lm) / (2 * h);
                const double an = (which == 0 ? rdq : which == 1 ? rdk : rdv)[i] - 0.25;
                const double got = (double)(which == 0 ? dq : which == 1 ? dk : dv)[i] - 0.25;
                fd_ref = fmax(fd_ref, fabs(an - fd) / fmax(1.0, fabs(fd)));
                fd_be = fmax(fd_be, fabs(got - fd) / fmax(1.0, fabs(fd)));
            }
        expect(fd_ref, 1e-7, b, v, "attention (double analytic vs finite difference)", c->name);
        expect(fd_be, 2e-5, b, v, "attention_backward vs finite difference", c->name);
        free(q), free(k), free(vv), free(out), free(lse), free(dout), free(dq), free(dk), free(dv);
        free(Q), free(K), free(V), free(dO), free(ro), free(rl), free(rdq), free(rdk), free(rdv), free(P), free(dP);
    }
}

void test_train_graph_attention(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_attention); }

// ---- gated linear unit ----

static void t_glu(const as_backend *b, int v) {
    static const int64_t sizes[] = {1, 7, 33, 4097, 3 * 1536, 2 * 16384};
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++)
        for (int gelu = 0; gelu < 2; gelu++) {
            const int64_t n = sizes[si];
            float *g = fmem(n), *u = fmem(n), *h = fmem(n), *dh = fmem(n), *dg = fmem(n), *du = fmem(n);
            double *ref = dmem(n), *rdg = dmem(n), *rdu = dmem(n);
            fill(g, n, -8, 8), fill(u, n, -2, 2), fill(dh, n, -1, 1);
            const double K = sqrt(2 / M_PI);
            for (int64_t i = 0; i < n; i++) {
                const double x = g[i];
                double a, da;
                if (gelu) {
                    const double t = tanh(K * (x + 0.044715 * x * x * x));
                    a = 0.5 * x * (1 + t), da = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x);
                } else {
                    const double s = 1 / (1 + exp(-x));
                    a = x * s, da = s * (1 + x * (1 - s));
                }
                ref[i] = a * u[i], rdg[i] = dh[i] * u[i] * da, rdu[i] = dh[i] * a;
            }
            char what[64];
            snprintf(what, sizeof what, "%s, n=%lld", gelu ? "GeGLU" : "SwiGLU", (long long)n);
            b->glu_forward(h, g, u, n, gelu, NTH);
            expect(elem_err(h, ref, n), 4e-6, b, v, "glu_forward", what);
            set(dg, n, 7.0f), set(du, n, 7.0f); // written, not accumulated
            b->glu_backward(dg, du, dh, g, u, n, gelu, NTH);
            expect(elem_err(dg, rdg, n), 1e-5, b, v, "glu_backward (dg)", what);
            expect(elem_err(du, rdu, n), 4e-6, b, v, "glu_backward (du)", what);
            free(g), free(u), free(h), free(dh), free(dg), free(du), free(ref), free(rdg), free(rdu);
        }
}

void test_train_graph_glu(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_glu); }

// ---- log-softmax of the target ----

static double logp_of(const double *z, int64_t V, int32_t t) {
    double mx = -INFINITY, s = 0;
    for (int64_t j = 0; j < V; j++) mx = fmax(mx, z[j]);
    for (int64_t j = 0; j < V; j++) s += exp(z[j] - mx);
    return z[t] - (mx + log(s));
}

static void t_logsoftmax(const as_backend *b, int v) {
    static const struct { int64_t rows, V; const char *name; } cs[] = {
        {3, 49152, "default vocabulary"}, {2, 256000, "Gemma-2B vocabulary"}, {1, 1, "1 x 1"}, {4, 33, "ragged"}, {1, 17, "1 row"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t R = cs[ci].rows, V = cs[ci].V;
        float *z = fmem(R * V), *logp = fmem(R), *lse = fmem(R), *dlogp = fmem(R), *dz = fmem(R * V);
        double *rl = dmem(R), *rp = dmem(R), *rdz = dmem(R * V), *zd = dmem(V);
        int32_t *tgt = as_malloc(sizeof(int32_t) * (size_t)R);
        fill(z, R * V, -15, 15), fill(dlogp, R, -2, 2);
        for (int64_t r = 0; r < R; r++) {
            tgt[r] = (int32_t)as_rng_below(&g_rng, (uint64_t)V);
            double mx = -INFINITY, s = 0;
            for (int64_t j = 0; j < V; j++) mx = fmax(mx, z[r * V + j]);
            for (int64_t j = 0; j < V; j++) s += exp(z[r * V + j] - mx);
            rl[r] = mx + log(s), rp[r] = z[r * V + tgt[r]] - rl[r];
            for (int64_t j = 0; j < V; j++) rdz[r * V + j] = dlogp[r] * ((j == tgt[r]) - exp(z[r * V + j] - rl[r]));
        }
        b->logsoftmax_forward(logp, lse, z, tgt, R, V, NTH);
        expect(elem_err(logp, rp, R), 1e-6, b, v, "logsoftmax_forward", cs[ci].name);
        expect(elem_err(lse, rl, R), 1e-6, b, v, "logsoftmax_forward (lse)", cs[ci].name);
        set(dz, R * V, 7.0f); // written, not accumulated
        b->logsoftmax_backward(dz, dlogp, z, lse, tgt, R, V, NTH);
        expect(elem_err(dz, rdz, R * V), 1e-6, b, v, "logsoftmax_backward", cs[ci].name);
        // Finite differences of dlogp logp(z) in double: the target and three other logits of each row.
        double fd_ref = 0, fd_be = 0;
        for (int64_t r = 0; r < R; r++) {
            for (int64_t j = 0; j < V; j++) zd[j] = z[r * V + j];
            for (int spot = 0; spot < 4; spot++) {
                const int64_t j = spot == 0 ? tgt[r] : (int64_t)as_rng_below(&g_rng, (uint64_t)V);
                const double h = 1e-5, z0 = zd[j];
                zd[j] = z0 + h;
                const double lp = logp_of(zd, V, tgt[r]);
                zd[j] = z0 - h;
                const double lm = logp_of(zd, V, tgt[r]);
                zd[j] = z0;
                const double fd = dlogp[r] * (lp - lm) / (2 * h);
                fd_ref = fmax(fd_ref, fabs(rdz[r * V + j] - fd) / fmax(1.0, fabs(fd)));
                fd_be = fmax(fd_be, fabs(dz[r * V + j] - fd) / fmax(1.0, fabs(fd)));
            }
        }
        expect(fd_ref, 1e-7, b, v, "logsoftmax (double analytic vs finite difference)", cs[ci].name);
        expect(fd_be, 2e-6, b, v, "logsoftmax_backward vs finite difference", cs[ci].name);
        free(z), free(logp), free(lse), free(dlogp), free(dz), free(rl), free(rp), free(rdz), free(zd), free(tgt);
    }
}

void test_train_graph_logsoftmax(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_logsoftmax); }

// ---- residual ----

// a + b rounded once: exactly the double sum rounded to float.
static void t_residual(const as_backend *b, int v) {
    static const int64_t sizes[] = {1, 33, 3 * 576, 2 * 2048, 70001}; // 70001: the threads take part
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++) {
        const int64_t n = sizes[si];
        float *x = fmem(n), *y = fmem(n), *out = fmem(n);
        fill(x, n, -3, 3), fill(y, n, -3, 3);
        b->residual_forward(out, x, y, n, NTH);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) bad += out[i] != (float)((double)x[i] + (double)y[i]);
        char what[32];
        snprintf(what, sizeof what, "n=%lld", (long long)n);
        expect((double)bad, 0, b, v, "residual_forward (exact)", what);
        free(x), free(y), free(out);
    }
}

void test_train_graph_residual(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_residual); }

// ---- dropout ----

// The mask's definition (tensor/train_ops.h): element (i, j) is kept when
// lowbias32 of the counter base + i * cols + j, folded to 32 bits (lo ^ hi),
// is >= p * 2^32.
static bool kept(uint64_t k, float p) {
    uint32_t h = (uint32_t)k ^ (uint32_t)(k >> 32);
    h ^= h >> 16, h *= 0x7feb352dU, h ^= h >> 15, h *= 0x846ca68bU, h ^= h >> 16;
    return h >= (uint32_t)((double)p * 4294967296.0);
}

static void t_dropout(const as_backend *b, int v) {
    static const struct { int64_t rows, cols; float p; const char *name; } cs[] = {
        {3, 576, 0.05f, "default width"},   {2, 1536, 0.05f, "default FFN"}, {1, 2048, 0.5f, "Gemma-2B width"},
        {2, 16384, 0.05f, "Gemma-2B FFN"}, {1, 1, 0.5f, "1 x 1"},          {3, 33, 0.3f, "ragged"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t R = cs[ci].rows, C = cs[ci].cols, w = (C + 15) / 16;
        const float p = cs[ci].p, sc = 1.0f / (1.0f - p);
        float *x = fmem(R * C), *out = fmem(R * C), *out2 = fmem(R * C), *dout = fmem(R * C), *dx = fmem(R * C);
        uint16_t *keep = as_calloc((size_t)(R * w), sizeof(uint16_t));
        fill(x, R * C, -2, 2), fill(dout, R * C, -1, 1);
        as_dropout d = {p, 0x9e3779b97f4a7c15ull + ((uint64_t)(3 * 7 + 2) << 42), keep, false};
        b->dropout_forward(out, x, R, C, &d, NTH);
        int64_t bad = 0, n_kept = 0;
        double dev = 0;
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++) {
                const bool k = kept(d.base + (uint64_t)(i * C + j), p);
                const float o = out[i * C + j], xv = x[i * C + j];
                n_kept += k;
                bad += k != ((keep[i * w + j / 16] >> (j % 16)) & 1);          // the stored bit
                bad += k ? o != xv * sc : o != 0.0f;                             // x * (1 / (1 - p)) or 0
                if (k) dev = fmax(dev, fabs(o - xv / (1.0 - p)) / fabs(xv / (1.0 - p))); // ... which is x / (1 - p) to a rounding
            }
        char what[96];
        snprintf(what, sizeof what, "%s %lldx%lld, p=%g", cs[ci].name, (long long)R, (long long)C, (double)p);
        expect((double)bad, 0, b, v, "dropout_forward (exact mask and values)", what);
        expect(dev, 1.2e-7, b, v, "dropout_forward (x / (1 - p))", what);
        // The keep fraction: 1 - p within 5 standard deviations.
        const double n = (double)(R * C), frac = (double)n_kept / n;
        expect(fabs(frac - (1 - p)) / (5 * sqrt(p * (1 - p) / n) + 1 / n), 1, b, v, "dropout_forward (keep fraction)", what);
        // Replaying the stored bits gives the same numbers.
        d.replay = true;
        b->dropout_forward(out2, x, R, C, &d, NTH);
        expect(memcmp(out, out2, sizeof(float) * (size_t)(R * C)) ? 1 : 0, 0, b, v, "dropout_forward (replay)", what);
        // dx += drop'(dout): fmaf(dout, keep ? 1 / (1 - p) : 0, dx).
        set(dx, R * C, 0.25f);
        b->dropout_backward(dx, dout, R, C, &d, NTH);
        bad = 0;
        for (int64_t i = 0; i < R * C; i++) bad += dx[i] != fmaf(dout[i], kept(d.base + (uint64_t)i, p) ? sc : 0.0f, 0.25f);
        expect((double)bad, 0, b, v, "dropout_backward (exact)", what);
        free(x), free(out), free(out2), free(dout), free(dx), free(keep);
    }
}

void test_train_graph_dropout(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_dropout); }

// ---- LoRA ----

static void t_lora(const as_backend *b, int v) {
    static const struct { int64_t N, in, out, r; const char *name; } cs[] = {
        {5, 576, 576, 16, "default q/o"},        {5, 576, 192, 16, "default k/v"}, {3, 1536, 576, 8, "default down"},
        {2, 2048, 16384, 16, "Gemma-2B gate/up"}, {2, 16384, 2048, 4, "Gemma-2B down"}, {1, 7, 3, 1, "ragged, 1 row"},
        {70, 33, 5, 3, "ragged, 70 rows"}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++)
        for (int dropped = 0; dropped < 2; dropped++) {
            const int64_t N = cs[ci].N, in = cs[ci].in, out = cs[ci].out, r = cs[ci].r, w = (in + 15) / 16;
            const float s = 2.0f, p = 0.05f, sc = 1.0f / (1.0f - p);
            float *x = fmem(N * in), *A = fmem(r * in), *B = fmem(out * r), *y = fmem(N * out), *u = fmem(N * r), *u2 = fmem(N * r);
            float *dy = fmem(N * out), *dx = fmem(N * in), *dA = fmem(r * in), *dB = fmem(out * r), *du = fmem(N * r);
            double *z = dmem(N * in), *ru = dmem(N * r), *ry = dmem(N * out), *rdu = dmem(N * r), *rdx = dmem(N * in), *rdA = dmem(r * in);
            double *rdB = dmem(out * r);
            uint16_t *keep = as_calloc((size_t)(N * w), sizeof(uint16_t));
            fill(x, N * in, -1, 1), fill(A, r * in, -0.1, 0.1), fill(B, out * r, -0.1, 0.1), fill(dy, N * out, -1, 1);
            as_dropout d = {p, 12345ull << 20, keep, false};
            const as_dropout *drop = dropped ? &d : NULL;
            for (int64_t i = 0; i < N * in; i++) z[i] = !dropped ? x[i] : kept(d.base + (uint64_t)i, p) ? (double)(x[i] * sc) : 0.0;
            // u = z A^T;  y = 0.25 + s u B^T.
            for (int64_t t = 0; t < N; t++)
                for (int64_t k = 0; k < r; k++) {
                    double a = 0;
                    for (int64_t i = 0; i < in; i++) a += z[t * in + i] * A[k * in + i];
                    ru[t * r + k] = a;
                }
            for (int64_t t = 0; t < N; t++)
                for (int64_t o = 0; o < out; o++) {
                    double a = 0;
                    for (int64_t k = 0; k < r; k++) a += ru[t * r + k] * B[o * r + k];
                    ry[t * out + o] = 0.25 + s * a;
                }
            set(y, N * out, 0.25f);
            b->lora_forward(y, u, x, A, B, N, in, r, out, s, drop, NTH);
            char what[96];
            snprintf(what, sizeof what, "%s, N=%lld r=%lld, %s", cs[ci].name, (long long)N, (long long)r, dropped ? "dropout 0.05" : "no dropout");
            expect(norm_err(u, ru, N * r), 1e-5, b, v, "lora_forward (u)", what);
            expect(norm_err(y, ry, N * out), 1e-5, b, v, "lora_forward (y)", what);
            // The recomputed forward: only u, the stored masks replayed, the same bits.
            d.replay = true;
            b->lora_forward(NULL, u2, x, A, B, N, in, r, out, s, drop, NTH);
            expect(memcmp(u, u2, sizeof(float) * (size_t)(N * r)) ? 1 : 0, 0, b, v, "lora_forward (replay, u only)", what);
            // dB += s dy^T u;  du = s dy B;  dA += du^T z;  dx += drop'(du A)   (from 0.25).
            for (int64_t o = 0; o < out; o++)
                for (int64_t k = 0; k < r; k++) {
                    double a = 0;
                    for (int64_t t = 0; t < N; t++) a += (double)dy[t * out + o] * ru[t * r + k];
                    rdB[o * r + k] = 0.25 + s * a;
                }
            for (int64_t t = 0; t < N; t++)
                for (int64_t k = 0; k < r; k++) {
                    double a = 0;
                    for (int64_t o = 0; o < out; o++) a += (double)dy[t * out + o] * B[o * r + k];
                    rdu[t * r + k] = s * a;
                }
            for (int64_t k = 0; k < r; k++)
                for (int64_t i = 0; i < in; i++) {
                    double a = 0;
                    for (int64_t t = 0; t < N; t++) a += rdu[t * r + k] * z[t * in + i];
                    rdA[k * in + i] = 0.25 + a;
                }
            for (int64_t t = 0; t < N; t++)
                for (int64_t i = 0; i < in; i++) {
                    double a = 0;
                    for (int64_t k = 0; k < r; k++) a += rdu[t * r + k] * A[k * in + i];
                    const double m = !dropped ? 1.0 : kept(d.base + (uint64_t)(t * in + i), p) ? (double)sc : 0.0;
                    rdx[t * in + i] = 0.25 + m * a;
                }
            set(dx, N * in, 0.25f), set(dA, r * in, 0.25f), set(dB, out * r, 0.25f);
            b->lora_backward(dx, dA, dB, dy, x, u, A, B, N, in, r, out, s, drop, du, NTH);
            expect(norm_err(dB, rdB, out * r), 1e-5, b, v, "lora_backward (dB)", what);
            expect(norm_err(dA, rdA, r * in), 1e-5, b, v, "lora_backward (dA)", what);
            expect(norm_err(dx, rdx, N * in), 1e-5, b, v, "lora_backward (dx)", what);
            // Gradients not wanted (NULL) are skipped; the others come out the same.
            set(dx, N * in, 0.25f), set(dA, r * in, 0.25f);
            b->lora_backward(dx, dA, NULL, dy, x, u, A, B, N, in, r, out, s, drop, du, NTH);
            expect(norm_err(dA, rdA, r * in), 1e-5, b, v, "lora_backward without dB (dA)", what);
            expect(norm_err(dx, rdx, N * in), 1e-5, b, v, "lora_backward without dB (dx)", what);
            set(dB, out * r, 0.25f);
            b->lora_backward(NULL, NULL, dB, dy, x, u, A, B, N, in, r, out, s, drop, du, NTH);
            expect(norm_err(dB, rdB, out * r), 1e-5, b, v, "lora_backward, dB only", what);
            free(x), free(A), free(B), free(y), free(u), free(u2), free(dy), free(dx), free(dA), free(dB), free(du);
            free(z), free(ru), free(ry), free(rdu), free(rdx), free(rdA), free(rdB), free(keep);
        }
}

void test_train_graph_lora(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_lora); }

// ---- optimizer ----

// Five steps of each update against torch.optim's rules in double.
static void t_optimizer(const as_backend *b, int v) {
    static const size_t sizes[] = {1, 33, 70001}; // 70001: past the blocks of 65536 and the threads' threshold
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++) {
        const size_t n = sizes[si];
        float *p = fmem((int64_t)n), *g = fmem((int64_t)n), *m = fmem((int64_t)n), *vv = fmem((int64_t)n);
        double *P = dmem((int64_t)n), *M = dmem((int64_t)n), *VV = dmem((int64_t)n);
        char what[32];
        snprintf(what, sizeof what, "n=%zu", n);
        for (int kind = 0; kind < 4; kind++) { // AdamW, RMSprop, SGD with momentum, SGD without
            static const char *const names[] = {"adamw_update", "rmsprop_update", "sgd_update (momentum)", "sgd_update"};
            fill(p, (int64_t)n, -1, 1);
            for (size_t i = 0; i < n; i++) P[i] = p[i], M[i] = VV[i] = 0, m[i] = vv[i] = 0;
            double worst = 0;
            for (int64_t t = 1; t <= 5; t++) {
                fill(g, (int64_t)n, -1, 1);
                const float lr = kind == 1 ? 1e-2f : 1e-3f, wd = 0.01f;
                if (kind == 0) {
                    const double b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, bc1 = 1 - pow(b1, (double)t), bc2 = 1 - pow(b2, (double)t);
                    b->adamw_update(p, g, m, vv, n, lr, 0.9f, 0.999f, 1e-8f, wd, t, NTH);
                    for (size_t i = 0; i < n; i++) {
                        P[i] *= 1 - (double)lr * wd;
                        M[i] = b1 * M[i] + (1 - b1) * g[i], VV[i] = b2 * VV[i] + (1 - b2) * (double)g[i] * g[i];
                        P[i] -= lr / bc1 * M[i] / (sqrt(VV[i]) / sqrt(bc2) + eps);
                    }
                } else if (kind == 1) {
                    const double a = 0.99f, eps = 1e-8f;
                    b->rmsprop_update(p, g, vv, n, lr, 0.99f, 1e-8f, wd, NTH);
                    for (size_t i = 0; i < n; i++) {
                        const double gi = g[i] + (double)wd * P[i];
                        VV[i] = a * VV[i] + (1 - a) * gi * gi;
                        P[i] -= lr * gi / (sqrt(VV[i]) + eps);
                    }
                } else {
                    const double mu = 0.9f;
                    b->sgd_update(p, g, kind == 2 ? m : NULL, n, lr, 0.9f, wd, t, NTH);
                    for (size_t i = 0; i < n; i++) {
                        double gi = g[i] + (double)wd * P[i];
                        if (kind == 2) M[i] = t == 1 ? gi : mu * M[i] + gi, gi = M[i];
                        P[i] -= lr * gi;
                    }
                }
                worst = fmax(worst, elem_err(p, P, (int64_t)n));
                if (kind == 0 || kind == 2) worst = fmax(worst, elem_err(m, M, (int64_t)n));
                if (kind <= 1) worst = fmax(worst, elem_err(vv, VV, (int64_t)n));
            }
            expect(worst, 1e-6, b, v, names[kind], what);
        }
        // The gradient norm's sum of squares (any thread count, the same bits) and the clipping's scaling (exact).
        fill(g, (int64_t)n, -1, 1);
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
        const double s1 = b->sum_squares(g, n, 1), s2 = b->sum_squares(g, n, NTH);
        expect(fabs(s2 - ss) / ss, 1e-12, b, v, "sum_squares", what);
        expect(s1 == s2 ? 0 : 1, 0, b, v, "sum_squares (1 and 2 threads)", what);
        memcpy(p, g, sizeof(float) * n);
        b->grad_scale(p, n, 0.3f, NTH);
        int64_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += p[i] != g[i] * 0.3f;
        expect((double)bad, 0, b, v, "scale (exact)", what);
        free(p), free(g), free(m), free(vv), free(P), free(M), free(VV);
    }
}

void test_train_graph_optimizer(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_optimizer); }
