// The CUDA backend's training ops (src/tensor/cuda/cuda_backend.cu) run on
// the host through the plugin's alphaspin_cuda_train_host table
// (tensor/cuda/cuda_host_check.h: each op's own code with its kernels'
// bodies, the functors, looped thread by thread and block by block instead of
// launched), against the CPU backend, bit for bit: vexp.h's e^x and the 16-lane
// sums and maxima, embedding, RMSNorm, RoPE, SwiGLU / GeGLU, log-softmax, residual,
// dropout (hashed keep bits, replay, backward), LoRA with and without dropout
// (forward, replay, backward), the sum of squares, the gradient scale and five
// steps of AdamW, RMSprop and SGD; and attention (the tiled kernels: packed
// sequences with gaps, MHA, GQA, MQA, head_dim up to 256) within a tolerance
// (c_attention says why).  Every CPU ISA this machine has is
// compared (the CPU's paths give the same bits).  This checks the arithmetic,
// index arithmetic, operand layouts and the ops' composition on machines
// without a GPU; what it cannot check: kernel launches and barriers, the
// copies, cuBLAS (linear_*, gemm_bf16*, which have no host run), and the
// device's libm (GELU's tanhf, log), which test_cuda_backend checks on a GPU.
// Skips (77) when the plugin was not built.
#include "test_common.h"

#include "cuda_plugin.h"
#include <math.h>

#include "tensor/backend.h"
#include "tensor/cuda/cuda_host_check.h"
#include "tensor/kernels_impl.h"
#include "tensor/train_graph.h"
#include "tensor/train_ops.h"
#include "tensor/vexp.h"
#include "util/common.h"
#include "util/rng.h"

static const as_cuda_train_host *HT;
static as_rng g_rng;

static float *fmem(int64_t n) { return as_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1)); }
static void fill(float *x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * as_rng_uniform(&g_rng));
}

// Bitwise equality of n floats; fails naming the first difference.
static void same(const float *got, const float *ref, int64_t n, const char *what, const char *isa) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)))
            fail_msg("%s (cpu %s) element %lld: cuda host code %a (%.9g), cpu %a (%.9g)", what, isa, (long long)i, got[i], got[i], ref[i], ref[i]);
}

static void same_d(double got, double ref, const char *what, const char *isa) {
    if (memcmp(&got, &ref, sizeof got)) fail_msg("%s (cpu %s): cuda host code %a, cpu %a", what, isa, got, ref);
}

// Runs fn once per CPU ISA available here, the CPU backend's kernels forced to it.
static void for_each_isa(void (*fn)(const char *isa)) {
    int ran = 0;
    for (int i = KERNEL_ISA_SCALAR; i < KERNEL_ISA_COUNT; i++) {
        if (!kernel_isa_available((kernel_isa)i) || kernel_force_isa((kernel_isa)i) != AS_OK) continue;
        fn(kernel_isa_name((kernel_isa)i));
        ran++;
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    assert_true(ran > 0);
}

static const int64_t sizes[] = {1, 5, 16, 17, 33, 100, 4097};

static void c_exp(const char *isa) {
    // as_expf over a grid through its clamps, special values, and the softmax pieces.
    float x[2000], got[2000], ref[2000];
    int n = 0;
    for (int i = 0; i < 1800; i++) x[n++] = -100.0f + 200.0f * (float)i / 1800.0f;
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 88.0f, -87.0f, 88.5f, -87.5f, 1e-30f, -1e-30f, INFINITY, -INFINITY, NAN, 0.5f, 0.6931472f};
    for (size_t i = 0; i < AS_ARRAY_LEN(special); i++) x[n++] = special[i];
    for (int i = 0; i < n; i++) got[i] = HT->expf_(x[i]), ref[i] = as_expf(x[i]);
    same(got, ref, n, "e^x (as_expf)", isa);
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++) {
        const int64_t m = sizes[si];
        float *z = fmem(m), *a = fmem(m), *b = fmem(m);
        fill(z, m, -15, 15);
        const float shift = 3.25f;
        same_d(HT->exp_sum(z, m, shift), train_exp_sum(z, m, shift), "exp_sum (16 lanes)", isa);
        const float mg = HT->max(z, m), mr = train_max(z, m);
        same(&mg, &mr, 1, "max (16 lanes)", isa);
        HT->neg_scaled_exp(a, z, m, -1.75f, 2.5f), train_neg_scaled_exp(b, z, m, -1.75f, 2.5f);
        same(a, b, m, "neg_scaled_exp", isa);
        free(z), free(a), free(b);
    }
}

#define CPU as_backend_cpu

static void c_glu(const char *isa) {
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++)
        for (int gelu = 0; gelu < 2; gelu++) {
            const int64_t n = sizes[si];
            float *g = fmem(n), *u = fmem(n), *dh = fmem(n), *h1 = fmem(n), *h2 = fmem(n), *dg1 = fmem(n), *dg2 = fmem(n), *du1 = fmem(n),
                  *du2 = fmem(n);
            fill(g, n, -12, 12), fill(u, n, -2, 2), fill(dh, n, -1, 1);
            if (n > 4) g[0] = 0.0f, g[1] = -90.0f, g[2] = 90.0f; // zero and the exp's clamps
            HT->ops.glu_forward(h1, g, u, n, gelu, 1), CPU.glu_forward(h2, g, u, n, gelu, 2);
            same(h1, h2, n, gelu ? "GeGLU forward" : "SwiGLU forward", isa);
            fill(dg1, n, -1, 1), fill(du1, n, -1, 1); // written, not accumulated
            HT->ops.glu_backward(dg1, du1, dh, g, u, n, gelu, 1), CPU.glu_backward(dg2, du2, dh, g, u, n, gelu, 2);
            same(dg1, dg2, n, gelu ? "GeGLU backward (dg)" : "SwiGLU backward (dg)", isa);
            same(du1, du2, n, gelu ? "GeGLU backward (du)" : "SwiGLU backward (du)", isa);
            HT->ops.residual_forward(h1, g, u, n, 1), CPU.residual_forward(h2, g, u, n, 2);
            same(h1, h2, n, "residual_forward", isa);
            memcpy(h1, g, sizeof(float) * (size_t)n), memcpy(h2, g, sizeof(float) * (size_t)n);
            HT->ops.grad_scale(h1, (size_t)n, 0.37f, 1), CPU.grad_scale(h2, (size_t)n, 0.37f, 2);
            same(h1, h2, n, "grad_scale", isa);
            free(g), free(u), free(dh), free(h1), free(h2), free(dg1), free(dg2), free(du1), free(du2);
        }
}

static void c_rope(const char *isa) {
    static const struct { int64_t N; int H, d, nr; bool neox; } cs[] = {
        {3, 9, 64, 64, false}, {2, 8, 256, 256, true}, {1, 2, 80, 32, false}, {5, 3, 80, 32, true}, {2, 1, 6, 2, false}, {2, 2, 34, 34, true}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++)
        for (int back = 0; back < 2; back++) {
            const int64_t N = cs[ci].N, n = N * cs[ci].H * cs[ci].d, half = cs[ci].nr / 2;
            float *x1 = fmem(n), *x2 = fmem(n), *c = fmem(N * half), *s = fmem(N * half);
            fill(x1, n, -2, 2), memcpy(x2, x1, sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < N * half; i++) {
                const double a = (double)(i / half + 3) * pow(10000.0, -2.0 * (double)(i % half) / cs[ci].nr);
                c[i] = (float)cos(a), s[i] = (float)sin(a);
            }
            if (back) {
                HT->ops.rope_backward(x1, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, 1);
                CPU.rope_backward(x2, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, 2);
            } else {
                HT->ops.rope_forward(x1, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, 1);
                CPU.rope_forward(x2, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, 2);
            }
            same(x1, x2, n, back ? "rope_backward" : "rope_forward", isa);
            free(x1), free(x2), free(c), free(s);
        }
}

static void c_dropout(const char *isa) {
    static const struct { int64_t rows, cols; float p; uint64_t base; } cs[] = {
        {3, 576, 0.05f, 0x9e3779b97f4a7c15ull}, {2, 16384, 0.05f, 12345ull << 20}, {1, 1, 0.5f, 7}, {3, 33, 0.3f, 0xffffffffull - 40},
        {4, 17, 0.9f, (1ull << 32) - 3}}; // counters crossing 2^32 (the hash folds hi into lo)
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t R = cs[ci].rows, C = cs[ci].cols, w = (C + 15) / 16, n = R * C;
        float *x = fmem(n), *o1 = fmem(n), *o2 = fmem(n), *dout = fmem(n), *d1 = fmem(n), *d2 = fmem(n);
        uint16_t *k1 = as_calloc((size_t)(R * w), sizeof(uint16_t)), *k2 = as_calloc((size_t)(R * w), sizeof(uint16_t));
        fill(x, n, -2, 2), fill(dout, n, -1, 1);
        memset(k1, 0xA5, sizeof(uint16_t) * (size_t)(R * w)), memset(k2, 0x5A, sizeof(uint16_t) * (size_t)(R * w)); // every word written
        as_dropout a = {cs[ci].p, cs[ci].base, k1, false}, b = {cs[ci].p, cs[ci].base, k2, false};
        HT->ops.dropout_forward(o1, x, R, C, &a, 1), CPU.dropout_forward(o2, x, R, C, &b, 2);
        same(o1, o2, n, "dropout_forward (hashed)", isa);
        if (memcmp(k1, k2, sizeof(uint16_t) * (size_t)(R * w))) fail_msg("dropout_forward (cpu %s): keep bits differ, case %zu", isa, ci);
        // Replaying the CPU's bits gives the same numbers.
        a.replay = b.replay = true, a.keep = k2;
        HT->ops.dropout_forward(o1, x, R, C, &a, 1);
        same(o1, o2, n, "dropout_forward (replayed)", isa);
        fill(d1, n, -1, 1), memcpy(d2, d1, sizeof(float) * (size_t)n);
        HT->ops.dropout_backward(d1, dout, R, C, &a, 1), CPU.dropout_backward(d2, dout, R, C, &b, 2);
        same(d1, d2, n, "dropout_backward", isa);
        free(x), free(o1), free(o2), free(dout), free(d1), free(d2), free(k1), free(k2);
    }
}

static void c_optim(const char *isa) {
    static const size_t ns[] = {1, 33, 70001, 200000};
    for (size_t si = 0; si < AS_ARRAY_LEN(ns); si++) {
        const size_t n = ns[si];
        float *g = fmem((int64_t)n);
        fill(g, (int64_t)n, -1, 1);
        same_d(HT->ops.sum_squares(g, n, 1), CPU.sum_squares(g, n, 2), "sum_squares", isa);
        for (int kind = 0; kind < 4; kind++) {
            static const char *const names[] = {"adamw_update", "rmsprop_update", "sgd_update (momentum)", "sgd_update"};
            float *p1 = fmem((int64_t)n), *p2 = fmem((int64_t)n), *m1 = as_calloc(n, sizeof(float)), *m2 = as_calloc(n, sizeof(float));
            float *v1 = as_calloc(n, sizeof(float)), *v2 = as_calloc(n, sizeof(float));
            fill(p1, (int64_t)n, -1, 1), memcpy(p2, p1, sizeof(float) * n);
            for (int64_t t = 1; t <= 5; t++) {
                fill(g, (int64_t)n, -1, 1);
                if (kind == 0) {
                    HT->ops.adamw_update(p1, g, m1, v1, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t, 1);
                    CPU.adamw_update(p2, g, m2, v2, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t, 2);
                } else if (kind == 1) {
                    HT->ops.rmsprop_update(p1, g, v1, n, 1e-2f, 0.99f, 1e-8f, 0.01f, 1);
                    CPU.rmsprop_update(p2, g, v2, n, 1e-2f, 0.99f, 1e-8f, 0.01f, 2);
                } else {
                    HT->ops.sgd_update(p1, g, kind == 2 ? m1 : NULL, n, 1e-3f, 0.9f, 0.01f, t, 1);
                    CPU.sgd_update(p2, g, kind == 2 ? m2 : NULL, n, 1e-3f, 0.9f, 0.01f, t, 2);
                }
                same(p1, p2, (int64_t)n, names[kind], isa);
                same(m1, m2, (int64_t)n, names[kind], isa);
                same(v1, v2, (int64_t)n, names[kind], isa);
            }
            free(p1), free(p2), free(m1), free(m2), free(v1), free(v2);
        }
        free(g);
    }
}

// Ids repeat (the backward adds rows in token order) and span the table.
static void c_embedding(const char *isa) {
    static const struct { int64_t N, C, V; float scale; } cs[] = {{6, 576, 300, 1.0f}, {9, 33, 4, 45.254834f}, {1, 1, 1, 1.0f}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t N = cs[ci].N, C = cs[ci].C, V = cs[ci].V;
        int32_t *tok = as_malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t t = 0; t < N; t++) tok[t] = t == 0 ? (int32_t)(V - 1) : (int32_t)as_rng_below(&g_rng, (uint64_t)V);
        float *E = fmem(V * C), *o1 = fmem(N * C), *o2 = fmem(N * C), *dout = fmem(N * C), *dE1 = fmem(V * C), *dE2 = fmem(V * C);
        fill(E, V * C, -1, 1), fill(dout, N * C, -1, 1), fill(dE1, V * C, -1, 1), memcpy(dE2, dE1, sizeof(float) * (size_t)(V * C));
        HT->ops.embedding_forward(o1, tok, E, N, C, cs[ci].scale), CPU.embedding_forward(o2, tok, E, N, C, cs[ci].scale);
        same(o1, o2, N * C, "embedding_forward", isa);
        HT->ops.embedding_backward(dE1, dout, tok, N, C, cs[ci].scale), CPU.embedding_backward(dE2, dout, tok, N, C, cs[ci].scale);
        same(dE1, dE2, V * C, "embedding_backward", isa);
        free(tok), free(E), free(o1), free(o2), free(dout), free(dE1), free(dE2);
    }
}

static void c_rmsnorm(const char *isa) {
    static const struct { int64_t N, C; float eps; } cs[] = {{3, 576, 1e-5f}, {2, 2048, 1e-6f}, {1, 1, 1e-5f}, {70, 17, 1e-6f}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t N = cs[ci].N, C = cs[ci].C;
        float *x = fmem(N * C), *w = fmem(C), *y1 = fmem(N * C), *y2 = fmem(N * C), *r1 = fmem(N), *r2 = fmem(N), *dy = fmem(N * C);
        float *dx1 = fmem(N * C), *dx2 = fmem(N * C), *dw1 = fmem(C), *dw2 = fmem(C);
        fill(x, N * C, -3, 3), fill(w, C, 0.5, 1.5), fill(dy, N * C, -1, 1);
        HT->ops.rmsnorm_forward(y1, r1, x, w, N, C, cs[ci].eps, 1), CPU.rmsnorm_forward(y2, r2, x, w, N, C, cs[ci].eps, 2);
        same(y1, y2, N * C, "rmsnorm_forward", isa);
        same(r1, r2, N, "rmsnorm_forward (rstd)", isa);
        for (int which = 0; which < 3; which++) { // both, dx only, dw only
            fill(dx1, N * C, -1, 1), memcpy(dx2, dx1, sizeof(float) * (size_t)(N * C));
            fill(dw1, C, -1, 1), memcpy(dw2, dw1, sizeof(float) * (size_t)C);
            HT->ops.rmsnorm_backward(which == 2 ? NULL : dx1, which == 1 ? NULL : dw1, dy, x, w, r2, N, C, 1);
            CPU.rmsnorm_backward(which == 2 ? NULL : dx2, which == 1 ? NULL : dw2, dy, x, w, r2, N, C, 2);
            same(dx1, dx2, N * C, "rmsnorm_backward (dx)", isa);
            same(dw1, dw2, C, "rmsnorm_backward (dw)", isa);
        }
        free(x), free(w), free(y1), free(y2), free(r1), free(r2), free(dy), free(dx1), free(dx2), free(dw1), free(dw2);
    }
}

// The tiled attention sums in another order than the CPU (online softmax:
// P V unnormalised, then divided by the sum; e^x summed in float; the CPU
// normalises p first and sums e^x in double), so the two agree to fp32
// rounding, not bitwise.  Each compared element is a sum of at most T + d
// (< 330 here) rounded products of terms bounded by about 1 (|v|, |dO| <= 1,
// p <= 1; |q|, |k| <= 1, or 4 in a case of peaked softmaxes whose running
// maxima move often), each side rounding at every step (u = 2^-24): errors of
// order sqrt(n) u ~ 1e-6 of the terms' size (n u = 2e-5 the worst case);
// measured here, at most 8e-7 of the tensor's largest element.  So each
// element may differ by ATT_RTOL of its tensor's largest magnitude (not of
// itself: an element that cancels to near zero keeps its terms' absolute
// error), over the rows of the sequences; rows outside them must stay
// bitwise untouched.  A planted wrong mask, tile bound, K/V head, scale or
// rescale is off by 1e-3 and more.
#define ATT_RTOL 1e-5

static void close_rows(const float *got, const float *ref, const bool *in_seq, int64_t rows, int64_t w, const char *what, const char *isa) {
    double m = 0.0;
    for (int64_t i = 0; i < rows * w; i++)
        if (in_seq[i / w]) m = fmax(m, fabs(ref[i]));
    for (int64_t i = 0; i < rows * w; i++) {
        if (!in_seq[i / w]) {
            if (memcmp(&got[i], &ref[i], sizeof(float)))
                fail_msg("%s (cpu %s) element %lld, outside the sequences: cuda host code %a, cpu %a", what, isa, (long long)i, got[i], ref[i]);
            continue;
        }
        const double e = fabs((double)got[i] - ref[i]);
        if (!(e <= ATT_RTOL * m))
            fail_msg("%s (cpu %s) element %lld: cuda host code %.9g, cpu %.9g: difference %.3g > %g x max %.6g", what, isa, (long long)i, got[i],
                     ref[i], e, ATT_RTOL, m);
    }
}

// Packed sequences of several lengths (1 among them), with gaps (rows
// outside every sequence stay untouched), H = Hkv, GQA (9/3, 6/2), MQA (8/1,
// 4/1), head_dim 64, 96, 256 and odd ones, lengths that are not multiples of
// the tiles (32 rows up to head_dim 128, 16 beyond), several tiles per
// sequence, and large scores (amp: q and k in [-amp, amp]).
static void c_attention(const char *isa) {
    static const struct { int H, Hkv, d, n_seq; int32_t off[4], len[4]; float amp; } cs[] = {
        {9, 3, 64, 3, {0, 5, 6}, {5, 1, 70}, 1},        {8, 1, 256, 3, {0, 4, 21}, {3, 17, 40}, 1}, {4, 4, 96, 3, {0, 33, 34}, {33, 1, 65}, 1},
        {6, 2, 96, 4, {2, 3, 50, 90}, {1, 45, 31, 32}, 1}, {3, 1, 5, 2, {0, 2}, {1, 2}, 1},            {2, 2, 16, 1, {0}, {1}, 1},
        {4, 2, 8, 2, {1, 135}, {130, 3}, 1},             {4, 1, 64, 2, {0, 50}, {50, 70}, 4}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int H = cs[ci].H, Hkv = cs[ci].Hkv, d = cs[ci].d;
        int64_t N = 0, mx = 0;
        for (int s = 0; s < cs[ci].n_seq; s++) N = AS_MAX(N, (int64_t)cs[ci].off[s] + cs[ci].len[s]), mx = AS_MAX(mx, (int64_t)cs[ci].len[s]);
        bool *in_seq = as_malloc((size_t)N);
        memset(in_seq, 0, (size_t)N);
        for (int s = 0; s < cs[ci].n_seq; s++) memset(in_seq + cs[ci].off[s], 1, (size_t)cs[ci].len[s]);
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d;
        float *q = fmem(N * qd), *k = fmem(N * kvd), *v = fmem(N * kvd), *o1 = fmem(N * qd), *o2 = fmem(N * qd), *l1 = fmem(N * H), *l2 = fmem(N * H);
        float *dout = fmem(N * qd), *dq1 = fmem(N * qd), *dq2 = fmem(N * qd), *dk1 = fmem(N * kvd), *dk2 = fmem(N * kvd), *dv1 = fmem(N * kvd),
              *dv2 = fmem(N * kvd);
        fill(q, N * qd, -cs[ci].amp, cs[ci].amp), fill(k, N * kvd, -cs[ci].amp, cs[ci].amp), fill(v, N * kvd, -1, 1), fill(dout, N * qd, -1, 1);
        fill(o1, N * qd, -9, 9), memcpy(o2, o1, sizeof(float) * (size_t)(N * qd)), fill(l1, N * H, -9, 9), memcpy(l2, l1, sizeof(float) * (size_t)(N * H));
        HT->ops.attention_forward(o1, l1, q, k, v, cs[ci].off, cs[ci].len, cs[ci].n_seq, H, Hkv, d, NULL, mx, 1);
        CPU.attention_forward(o2, l2, q, k, v, cs[ci].off, cs[ci].len, cs[ci].n_seq, H, Hkv, d, NULL, mx, 2);
        close_rows(o1, o2, in_seq, N, qd, "attention_forward", isa);
        close_rows(l1, l2, in_seq, N, H, "attention_forward (lse)", isa);
        fill(dq1, N * qd, -1, 1), memcpy(dq2, dq1, sizeof(float) * (size_t)(N * qd));
        fill(dk1, N * kvd, -1, 1), memcpy(dk2, dk1, sizeof(float) * (size_t)(N * kvd));
        fill(dv1, N * kvd, -1, 1), memcpy(dv2, dv1, sizeof(float) * (size_t)(N * kvd));
        HT->ops.attention_backward(dq1, dk1, dv1, dout, o2, l2, q, k, v, cs[ci].off, cs[ci].len, cs[ci].n_seq, H, Hkv, d, 1);
        CPU.attention_backward(dq2, dk2, dv2, dout, o2, l2, q, k, v, cs[ci].off, cs[ci].len, cs[ci].n_seq, H, Hkv, d, 2);
        close_rows(dq1, dq2, in_seq, N, qd, "attention_backward (dq)", isa);
        close_rows(dk1, dk2, in_seq, N, kvd, "attention_backward (dk)", isa);
        close_rows(dv1, dv2, in_seq, N, kvd, "attention_backward (dv)", isa);
        free(q), free(k), free(v), free(o1), free(o2), free(l1), free(l2), free(dout), free(dq1), free(dq2), free(dk1), free(dk2), free(dv1), free(dv2);
        free(in_seq);
    }
}

static void c_logsoftmax(const char *isa) {
    static const struct { int64_t rows, V; } cs[] = {{3, 49152}, {1, 1}, {4, 33}, {1, 17}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++) {
        const int64_t R = cs[ci].rows, V = cs[ci].V;
        float *z = fmem(R * V), *p1 = fmem(R), *p2 = fmem(R), *l1 = fmem(R), *l2 = fmem(R), *dlogp = fmem(R), *dz1 = fmem(R * V), *dz2 = fmem(R * V);
        int32_t *tgt = as_malloc(sizeof(int32_t) * (size_t)R);
        fill(z, R * V, -15, 15), fill(dlogp, R, -2, 2);
        for (int64_t r = 0; r < R; r++) tgt[r] = (int32_t)as_rng_below(&g_rng, (uint64_t)V);
        HT->ops.logsoftmax_forward(p1, l1, z, tgt, R, V, 1), CPU.logsoftmax_forward(p2, l2, z, tgt, R, V, 2);
        same(p1, p2, R, "logsoftmax_forward", isa);
        same(l1, l2, R, "logsoftmax_forward (lse)", isa);
        fill(dz1, R * V, -1, 1); // written, not accumulated
        HT->ops.logsoftmax_backward(dz1, dlogp, z, l2, tgt, R, V, 1), CPU.logsoftmax_backward(dz2, dlogp, z, l2, tgt, R, V, 2);
        same(dz1, dz2, R * V, "logsoftmax_backward", isa);
        free(z), free(p1), free(p2), free(l1), free(l2), free(dlogp), free(dz1), free(dz2), free(tgt);
    }
}

static void c_lora(const char *isa) {
    static const struct { int64_t N, in, out, r; } cs[] = {{5, 576, 192, 16}, {3, 1536, 576, 8}, {1, 7, 3, 1}, {70, 33, 5, 3}, {2, 40, 1, 4}};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cs); ci++)
        for (int dropped = 0; dropped < 2; dropped++) {
            const int64_t N = cs[ci].N, in = cs[ci].in, out = cs[ci].out, r = cs[ci].r, w = (in + 15) / 16;
            float *x = fmem(N * in), *A = fmem(r * in), *B = fmem(out * r), *y1 = fmem(N * out), *y2 = fmem(N * out), *u1 = fmem(N * r), *u2 = fmem(N * r);
            float *dy = fmem(N * out), *dx1 = fmem(N * in), *dx2 = fmem(N * in), *dA1 = fmem(r * in), *dA2 = fmem(r * in), *dB1 = fmem(out * r),
                  *dB2 = fmem(out * r), *du1 = fmem(N * r), *du2 = fmem(N * r);
            uint16_t *k1 = as_calloc((size_t)(N * w), sizeof(uint16_t)), *k2 = as_calloc((size_t)(N * w), sizeof(uint16_t));
            fill(x, N * in, -1, 1), fill(A, r * in, -0.1, 0.1), fill(B, out * r, -0.1, 0.1), fill(dy, N * out, -1, 1);
            fill(y1, N * out, -1, 1), memcpy(y2, y1, sizeof(float) * (size_t)(N * out));
            as_dropout a = {0.05f, 12345ull << 20, k1, false}, b = {0.05f, 12345ull << 20, k2, false};
            HT->ops.lora_forward(y1, u1, x, A, B, N, in, r, out, 2.0f, dropped ? &a : NULL, 1);
            CPU.lora_forward(y2, u2, x, A, B, N, in, r, out, 2.0f, dropped ? &b : NULL, 2);
            same(u1, u2, N * r, dropped ? "lora_forward (u, dropout)" : "lora_forward (u)", isa);
            same(y1, y2, N * out, dropped ? "lora_forward (y, dropout)" : "lora_forward (y)", isa);
            if (dropped && memcmp(k1, k2, sizeof(uint16_t) * (size_t)(N * w))) fail_msg("lora_forward (cpu %s): keep bits differ, case %zu", isa, ci);
            a.replay = b.replay = true;
            HT->ops.lora_forward(NULL, u1, x, A, B, N, in, r, out, 2.0f, dropped ? &a : NULL, 1);
            same(u1, u2, N * r, "lora_forward (replayed, u only)", isa);
            fill(dx1, N * in, -1, 1), memcpy(dx2, dx1, sizeof(float) * (size_t)(N * in));
            fill(dA1, r * in, -1, 1), memcpy(dA2, dA1, sizeof(float) * (size_t)(r * in));
            fill(dB1, out * r, -1, 1), memcpy(dB2, dB1, sizeof(float) * (size_t)(out * r));
            HT->ops.lora_backward(dx1, dA1, dB1, dy, x, u2, A, B, N, in, r, out, 2.0f, dropped ? &a : NULL, du1, 1);
            CPU.lora_backward(dx2, dA2, dB2, dy, x, u2, A, B, N, in, r, out, 2.0f, dropped ? &b : NULL, du2, 2);
            same(dB1, dB2, out * r, "lora_backward (dB)", isa);
            same(du1, du2, N * r, "lora_backward (du)", isa);
            same(dA1, dA2, r * in, "lora_backward (dA)", isa);
            same(dx1, dx2, N * in, "lora_backward (dx)", isa);
            free(x), free(A), free(B), free(y1), free(y2), free(u1), free(u2), free(dy), free(dx1), free(dx2), free(dA1), free(dA2), free(dB1), free(dB2);
            free(du1), free(du2), free(k1), free(k2);
        }
}

static void test_exp(void **st) { (void)st, for_each_isa(c_exp); }
static void test_glu(void **st) { (void)st, for_each_isa(c_glu); }
static void test_rope(void **st) { (void)st, for_each_isa(c_rope); }
static void test_dropout(void **st) { (void)st, for_each_isa(c_dropout); }
static void test_optim(void **st) { (void)st, for_each_isa(c_optim); }
static void test_embedding(void **st) { (void)st, for_each_isa(c_embedding); }
static void test_rmsnorm(void **st) { (void)st, for_each_isa(c_rmsnorm); }
static void test_attention(void **st) { (void)st, for_each_isa(c_attention); }
static void test_logsoftmax(void **st) { (void)st, for_each_isa(c_logsoftmax); }
static void test_lora(void **st) { (void)st, for_each_isa(c_lora); }

int main(void) {
    const as_cuda_train_host *(*entry)(void) = (const as_cuda_train_host *(*)(void))(uintptr_t)cuda_plugin_entry("alphaspin_cuda_train_host");
    HT = entry();
    if (!HT || HT->version != AS_CUDA_TRAIN_HOST_VERSION) {
        fprintf(stderr, "alphaspin_cuda_train_host: version %d, expected %d\n", HT ? HT->version : -1, AS_CUDA_TRAIN_HOST_VERSION);
        return 1;
    }
    as_rng_seed(&g_rng, 22);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exp), cmocka_unit_test(test_glu), cmocka_unit_test(test_rope),
                                       cmocka_unit_test(test_dropout), cmocka_unit_test(test_optim), cmocka_unit_test(test_embedding),
                                       cmocka_unit_test(test_rmsnorm), cmocka_unit_test(test_attention), cmocka_unit_test(test_logsoftmax),
                                       cmocka_unit_test(test_lora)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
