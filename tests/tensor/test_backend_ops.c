// Op-level conformance of every backend (tensor/backend.h), in the manner of
// ggml's test-backend-ops: each op of the interface, forward and backward,
// for every backend compiled in and every variant it has on this machine (the
// CPU: each ISA), against a double-precision reference written here, with a
// tolerance per op and precision.  Shapes include the default model's
// (SmolLM2-135M: width 576, 9 heads of 64 over 3 KV heads, FFN 1536),
// Gemma-2B's (width 2048, head size 256, one KV head for 8 heads, GeGLU, FFN
// 16384) and ragged edges (1 token, odd counts, tails of every vector width).
// A backend added to the registry is tested here with no new code; the CUDA
// backend (a plugin, loaded when there is a device) too.
//
// Errors: matrix products norm-wise, ||y - ref|| / ||ref||; element-wise ops
// max |y - ref| / max(1, |ref|); argmax, max and get_row exactly.  The
// training graph's ops (forward/backward pairs, LoRA, dropout, optimizer)
// are tested in test_backend_ops_train.c; the helpers are backend_ops_common.c's.
#include "backend_ops_common.h"

#include <math.h>

#include "tensor/backend.h"
#include "tensor/kernels_impl.h"
#include "gguf/gguf.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

// ---- matrix products: every weight type and precision ----

typedef struct { int64_t rows, cols; const char *name; } mshape;

static void t_matmul(const as_backend *b, int v) {
    static const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    static const mshape shapes[] = {{576, 576, "default model q/o"}, {192, 576, "default model k/v"}, {256, 2048, "Gemma-2B k/v"},
                                    {37, 96, "ragged"}, {19, 512, "ragged, K-quant width"}};
    static const int ntoks[] = {1, 3, 5, 17, 64};
    static const kernel_precision precs[] = {KERNEL_PRECISION_F32, KERNEL_PRECISION_Q8, KERNEL_PRECISION_BF16};
    // Tolerances (norm-wise): fp32 sums; 8-bit activations (llama.cpp's Q8_1/Q8_K); bf16-rounded operands.
    static const double tol[] = {1e-5, 2e-2, 1e-2};
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++)
        for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++) {
            const ggml_type t = types[ti];
            const mshape *s = &shapes[si];
            const bool kq = t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q6_K;
            if (kq ? s->cols % 256 : s->cols % 32) continue;
            const size_t rb = quant_row_size(t, s->cols);
            uint8_t *wq = as_malloc(rb * (size_t)s->rows);
            float *wf = as_malloc(sizeof(float) * (size_t)s->cols), *row = as_malloc(sizeof(float) * (size_t)s->cols);
            double *wd = as_malloc(sizeof(double) * (size_t)(s->rows * s->cols));
            for (int64_t r = 0; r < s->rows; r++) {
                fill(wf, s->cols, -0.5, 0.5);
                quant_quantize_row(t, wf, wq + rb * (size_t)r, s->cols);
                quant_dequantize_row(t, wq + rb * (size_t)r, row, s->cols);
                for (int64_t c = 0; c < s->cols; c++) wd[r * s->cols + c] = row[c];
            }
            as_matrix w = {.data = wq, .type = t, .rows = s->rows, .cols = s->cols, .row_bytes = rb};
            // get_rows: the exact dequantisation, rows in any order.
            {
                int32_t ids[64];
                int64_t n_ids = 0;
                for (int64_t r = s->rows - 1; r >= 0 && n_ids < 64; r -= 7) ids[n_ids++] = (int32_t)r;
                float *rows = as_malloc(sizeof(float) * (size_t)(n_ids * s->cols));
                b->get_rows(&w, ids, n_ids, rows);
                for (int64_t i = 0; i < n_ids; i++)
                    for (int64_t c = 0; c < s->cols; c++)
                        if (rows[i * s->cols + c] != (float)wd[ids[i] * s->cols + c])
                            fail_msg("%s/%s get_rows %s %s row %d col %lld", b->name, b->variant_name(v), ggml_type_name(t), s->name, ids[i],
                                     (long long)c);
                g_checks++;
                free(rows);
            }
            for (size_t ni = 0; ni < AS_ARRAY_LEN(ntoks); ni++) {
                const int64_t n = ntoks[ni];
                float *x = as_malloc(sizeof(float) * (size_t)(n * s->cols)), *y = as_malloc(sizeof(float) * (size_t)(n * (s->rows + 3)));
                double *ref = as_malloc(sizeof(double) * (size_t)(n * s->rows));
                fill(x, n * s->cols, -1, 1);
                for (int64_t tk = 0; tk < n; tk++)
                    for (int64_t r = 0; r < s->rows; r++) {
                        double a = 0;
                        for (int64_t c = 0; c < s->cols; c++) a += wd[r * s->cols + c] * x[tk * s->cols + c];
                        ref[tk * s->rows + r] = a;
                    }
                for (size_t pi = 0; pi < AS_ARRAY_LEN(precs); pi++) {
                    const int64_t ldo = s->rows + 3; // an output stride wider than the rows
                    b->matmul(y, ldo, x, n, &w, precs[pi]);
                    float *yc = as_malloc(sizeof(float) * (size_t)(n * s->rows));
                    for (int64_t tk = 0; tk < n; tk++) memcpy(yc + tk * s->rows, y + tk * ldo, sizeof(float) * (size_t)s->rows);
                    char what[128];
                    snprintf(what, sizeof what, "%s, %s %lldx%lld, %lld tokens, %s", ggml_type_name(t), s->name, (long long)s->rows,
                             (long long)s->cols, (long long)n, kernel_precision_name(precs[pi]));
                    expect(norm_err(yc, ref, n * s->rows), tol[pi], b, v, "matmul", what);
                    free(yc);
                }
                free(x), free(y), free(ref);
            }
            free(wq), free(wf), free(row), free(wd);
        }
}

static void test_matmul(void **st) { (void)st, for_each_in(AS_BACKEND_INFERENCE, t_matmul); }

// ---- weight groups (weights.h): Q|K|V, gate|up, one matrix, stacked by rows ----

static void t_weights(const as_backend *b, int v) {
    typedef struct { ggml_type type; int n; int64_t rows[3], cols; const char *name; } gshape;
    static const gshape groups[] = {
        {GGML_TYPE_Q4_1, 3, {576, 192, 192}, 576, "default model q|k|v"},
        {GGML_TYPE_Q8_0, 1, {1000, 0, 0}, 576, "default model's output head (part)"},
        {GGML_TYPE_Q4_K, 2, {64, 64, 0}, 2048, "Gemma-2B gate|up (rows cut)"},
        {GGML_TYPE_Q4_0, 3, {40, 17, 23}, 96, "ragged q|k|v"},
        {GGML_TYPE_F32, 2, {33, 31, 0}, 64, "fp32 weights, ragged"},
    };
    static const int ntoks[] = {1, 3, 17};
    static const kernel_precision precs[] = {KERNEL_PRECISION_F32, KERNEL_PRECISION_Q8, KERNEL_PRECISION_BF16};
    static const double tol[] = {1e-5, 2e-2, 1e-2};
    for (size_t gi = 0; gi < AS_ARRAY_LEN(groups); gi++) {
        const gshape *g = &groups[gi];
        const size_t rb = quant_row_size(g->type, g->cols);
        as_matrix parts[3];
        const as_matrix *pp[3];
        int64_t rows = 0;
        double *wd[3];
        for (int i = 0; i < g->n; i++) {
            uint8_t *wq = as_malloc(rb * (size_t)g->rows[i]);
            float *row = as_malloc(sizeof(float) * (size_t)g->cols);
            wd[i] = as_malloc(sizeof(double) * (size_t)(g->rows[i] * g->cols));
            for (int64_t r = 0; r < g->rows[i]; r++) {
                fill(row, g->cols, -0.5, 0.5);
                quant_quantize_row(g->type, row, wq + rb * (size_t)r, g->cols);
                quant_dequantize_row(g->type, wq + rb * (size_t)r, row, g->cols);
                for (int64_t c = 0; c < g->cols; c++) wd[i][r * g->cols + c] = row[c];
            }
            free(row);
            parts[i] = (as_matrix){.data = wq, .type = g->type, .rows = g->rows[i], .cols = g->cols, .row_bytes = rb};
            pp[i] = &parts[i];
            rows += g->rows[i];
        }
        as_weights *w = b->weights_new(pp, g->n);
        assert_non_null(w);
        for (size_t pi = 0; pi < AS_ARRAY_LEN(precs); pi++)
            for (size_t ni = 0; ni < AS_ARRAY_LEN(ntoks); ni++) {
                const int64_t n = ntoks[ni], ldo = rows + 5;
                float *x = as_malloc(sizeof(float) * (size_t)(n * g->cols)), *y = as_malloc(sizeof(float) * (size_t)(n * ldo));
                float *yc = as_malloc(sizeof(float) * (size_t)(n * rows)), *yp = as_malloc(sizeof(float) * (size_t)(n * rows));
                double *ref = as_malloc(sizeof(double) * (size_t)(n * rows));
                fill(x, n * g->cols, -1, 1);
                for (int64_t t = 0; t < n; t++) {
                    int64_t r0 = 0;
                    for (int i = 0; i < g->n; i++) {
                        for (int64_t r = 0; r < g->rows[i]; r++) {
                            double a = 0;
                            for (int64_t c = 0; c < g->cols; c++) a += wd[i][r * g->cols + c] * x[t * g->cols + c];
                            ref[t * rows + r0 + r] = a;
                        }
                        r0 += g->rows[i];
                    }
                }
                // Twice: the first product at a precision makes its layouts, the second reads them.
                for (int rep = 0; rep < 2; rep++) {
                    b->weights_matmul(w, y, ldo, x, n, precs[pi]);
                    for (int64_t t = 0; t < n; t++) memcpy(yc + t * rows, y + t * ldo, sizeof(float) * (size_t)rows);
                    char what[160];
                    snprintf(what, sizeof what, "%s %s, %lld tokens, call %d, %s", ggml_type_name(g->type), g->name, (long long)n, rep + 1,
                             kernel_precision_name(precs[pi]));
                    expect(norm_err(yc, ref, n * rows), tol[pi], b, v, "weights_matmul", what);
                    // The CPU's layouts never change a bit: the group gives what each part's own product gives.
                    if (!strcmp(b->name, "cpu")) {
                        int64_t r0 = 0;
                        for (int i = 0; i < g->n; i++) {
                            b->matmul(yp + r0, rows, x, n, &parts[i], precs[pi]);
                            r0 += g->rows[i];
                        }
                        expect(memcmp(yp, yc, sizeof(float) * (size_t)(n * rows)) ? 1 : 0, 0, b, v, "weights_matmul (= parts, bitwise)", what);
                    }
                }
                free(x), free(y), free(yc), free(yp), free(ref);
            }
        b->weights_free(w);
        for (int i = 0; i < g->n; i++) free((void *)parts[i].data), free(wd[i]);
    }
}

static void test_weights(void **st) { (void)st, for_each_in(AS_BACKEND_INFERENCE, t_weights); }

// ---- fp32 GEMM (training's products, forward and backward) ----

static void t_sgemm(const as_backend *b, int v) {
    static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 300}, {64, 96, 576}, {2, 256, 2048}, {33, 5, 1536}};
    for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++)
        for (int tr = 0; tr < 4; tr++) {
            const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            const bool ta = tr & 1, tb = tr & 2;
            const int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
            float *A = as_malloc(sizeof(float) * (size_t)((ta ? K : M) * lda)), *B = as_malloc(sizeof(float) * (size_t)((tb ? N : K) * ldb));
            float *C = as_malloc(sizeof(float) * (size_t)(M * ldc)), *Cv = as_malloc(sizeof(float) * (size_t)(M * N));
            double *ref = as_malloc(sizeof(double) * (size_t)(M * N));
            fill(A, (ta ? K : M) * lda, -1, 1), fill(B, (tb ? N : K) * ldb, -1, 1), fill(C, M * ldc, -1, 1);
            const float alpha = 0.75f, beta = tr == 3 ? 0.0f : 0.5f;
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double a = 0;
                    for (int64_t k = 0; k < K; k++) a += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    ref[i * N + j] = alpha * a + (beta != 0 ? beta * (double)C[i * ldc + j] : 0);
                }
            b->sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 2);
            for (int64_t i = 0; i < M; i++) memcpy(Cv + i * N, C + i * ldc, sizeof(float) * (size_t)N);
            char what[96];
            snprintf(what, sizeof what, "%lldx%lldx%lld ta=%d tb=%d beta=%g", (long long)M, (long long)N, (long long)K, ta, tb, beta);
            expect(norm_err(Cv, ref, M * N), 1e-5, b, v, "sgemm", what);
            free(A), free(B), free(C), free(Cv), free(ref);
        }
}

static void test_sgemm(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_sgemm); }

// ---- row ops: RMSNorm, GLU, RoPE, exp, argmax ----

static const int64_t row_sizes[] = {1, 7, 16, 33, 576, 1536, 2048, 16384};

// The batched ops take R rows with strides wider than a row (glu) and a
// row list (rmsnorm): short rows come in batches long enough for the
// backends' threaded paths.
static void t_rows(const as_backend *b, int v) {
    for (size_t si = 0; si < AS_ARRAY_LEN(row_sizes); si++) {
        const int64_t n = row_sizes[si], R = n <= 64 ? 70 : 3, ld = n + 5;
        float *x = as_malloc(sizeof(float) * (size_t)(R * ld)), *w = as_malloc(sizeof(float) * (size_t)(R * ld)),
              *y = as_malloc(sizeof(float) * (size_t)(R * ld));
        double *ref = as_malloc(sizeof(double) * (size_t)(R * n));
        int32_t *pick = as_malloc(sizeof(int32_t) * (size_t)R);
        char what[64];
        snprintf(what, sizeof what, "n=%lld, %lld rows", (long long)n, (long long)R);
        // RMSNorm (Llama's w; Gemma's 1 + w is the same op on w + 1) of rows x[pick[o]], contiguous.
        fill(x, R * n, -3, 3), fill(w, n, 0.5, 1.5);
        for (int64_t o = 0; o < R; o++) pick[o] = (int32_t)((o * 7 + 3) % R);
        for (int64_t o = 0; o < R; o++) {
            const float *xr = x + pick[o] * n;
            double ss = 0;
            for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
            const double inv = 1.0 / sqrt(ss / (double)n + 1e-6);
            for (int64_t i = 0; i < n; i++) ref[o * n + i] = xr[i] * inv * w[i];
        }
        b->rmsnorm(y, x, w, R, n, 1e-6f, pick);
        expect(elem_err(y, ref, R * n), 2e-6, b, v, "rmsnorm (row list)", what);
        b->rmsnorm(y, x, w, 1, n, 1e-6f, NULL); // without a list: row o is x's row o
        for (int64_t o = 0; o < R; o++)
            if (pick[o] == 0) expect(elem_err(y, ref + o * n, n), 2e-6, b, v, "rmsnorm (no row list)", what);
        // SwiGLU and GeGLU (tanh form): g and u rows ld apart, out rows n + 1 apart.
        for (int gelu = 0; gelu < 2; gelu++) {
            fill(x, R * ld, -8, 8), fill(w, R * ld, -2, 2);
            for (int64_t r = 0; r < R; r++)
                for (int64_t i = 0; i < n; i++) {
                    const double g = x[r * ld + i];
                    ref[r * n + i] = (gelu ? 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) : g / (1 + exp(-g))) * w[r * ld + i];
                }
            b->glu(y, n + 1, x, w, ld, R, n, gelu);
            double e = 0;
            for (int64_t r = 0; r < R; r++) e = fmax(e, elem_err(y + r * (n + 1), ref + r * n, n));
            expect(e, 2e-6, b, v, gelu ? "glu (GeGLU)" : "glu (SwiGLU)", what);
        }
        // exp over [-80, 80] (relative error).
        fill(x, n, -80, 80);
        for (int64_t i = 0; i < n; i++) ref[i] = exp((double)x[i]);
        memcpy(y, x, sizeof(float) * (size_t)n);
        b->exp(y, n);
        double e = 0;
        for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(y[i] - ref[i]) / ref[i]);
        expect(e, 4e-7, b, v, "exp", what);
        // argmax with ties (the first of equal maxima).
        for (int64_t i = 0; i < n; i++) x[i] = (float)(int)(8 * as_rng_uniform(&g_rng));
        int32_t best = 0;
        for (int64_t i = 1; i < n; i++)
            if (x[i] > x[best]) best = (int32_t)i;
        expect(b->argmax(x, (int32_t)n) == best ? 0 : 1, 0, b, v, "argmax", what);
        // ... and NaNs past the first element are never the maximum (the scan's rule).
        for (int64_t i = 1; i < n; i += 3) x[i] = NAN;
        best = 0;
        for (int64_t i = 1; i < n; i++)
            if (x[i] > x[best]) best = (int32_t)i;
        expect(b->argmax(x, (int32_t)n) == best ? 0 : 1, 0, b, v, "argmax with NaNs", what);
        // A token's log-probability (in double) against long double.
        fill(x, n, -20, 20);
        long double lm = x[0], ls = 0;
        for (int64_t i = 1; i < n; i++) lm = x[i] > lm ? x[i] : lm;
        for (int64_t i = 0; i < n; i++) ls += expl((long double)x[i] - lm);
        const int32_t tk = (int32_t)(n / 3);
        const double lp = b->logprob(x, (int32_t)n, tk), lref = (double)((long double)x[tk] - lm - logl(ls));
        expect(fabs(lp - lref) / fmax(1.0, fabs(lref)), 1e-13, b, v, "logprob", what);
        // log sum e^(s z) (the mixture samplers' normaliser; s z rounded to fp32, ops.h) against long double.
        const float sc = 0.7f;
        long double sm = (long double)(x[0] * sc), ss2 = 0;
        for (int64_t i = 1; i < n; i++) sm = fmaxl(sm, (long double)(x[i] * sc));
        for (int64_t i = 0; i < n; i++) ss2 += expl((long double)(x[i] * sc) - sm);
        const double lse = b->logsumexp(x, n, sc), lseref = (double)(sm + logl(ss2));
        expect(fabs(lse - lseref) / fmax(1.0, fabs(lseref)), 1e-6, b, v, "logsumexp", what); // the differences s z - m are fp32
        // The residual add (over all R rows) and the embedding scale: one rounding per element, exact.
        fill(x, R * n, -3, 3), fill(w, R * n, -3, 3);
        memcpy(y, w, sizeof(float) * (size_t)(R * n));
        b->add(y, x, R * n);
        int bad = 0;
        for (int64_t i = 0; i < R * n; i++) bad += y[i] != w[i] + x[i];
        expect(bad, 0, b, v, "add", what);
        memcpy(y, x, sizeof(float) * (size_t)n);
        b->scale(y, n, 45.254833f);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += y[i] != x[i] * 45.254833f;
        expect(bad, 0, b, v, "scale", what);
        free(x), free(w), free(y), free(ref), free(pick);
    }
}

static void test_rows(void **st) { (void)st, for_each_in(AS_BACKEND_INFERENCE, t_rows); }

// 66 rows (past the CPU's threaded threshold), ld wider than a row, each row its own angles.
static void t_rope(const as_backend *b, int v) {
    static const int cfg[][3] = {{9, 64, 64}, {3, 64, 64}, {8, 256, 256}, {1, 256, 256}, {2, 80, 32}}; // heads, d, n_rot
    const int64_t R = 66;
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cfg); ci++)
        for (int neox = 0; neox < 2; neox++)
            for (int back = 0; back < 2; back++) {
                const int H = cfg[ci][0], d = cfg[ci][1], nr = cfg[ci][2], half = nr / 2;
                const int64_t ld = (int64_t)H * d + 3;
                const float sign = back ? -1.0f : 1.0f;
                float *x = as_malloc(sizeof(float) * (size_t)(R * ld)), *cs = as_malloc(sizeof(float) * (size_t)(R * half)),
                      *sn = as_malloc(sizeof(float) * (size_t)(R * half));
                double *ref = as_malloc(sizeof(double) * (size_t)(R * ld));
                fill(x, R * ld, -2, 2);
                for (int64_t r = 0; r < R; r++)
                    for (int i = 0; i < half; i++) {
                        const double a = (double)(37 + 5 * r) * pow(10000.0, -2.0 * i / nr);
                        cs[r * half + i] = (float)cos(a), sn[r * half + i] = (float)sin(a);
                    }
                for (int64_t k = 0; k < R * ld; k++) ref[k] = x[k]; // the 3 floats between rows stay
                for (int64_t r = 0; r < R; r++)
                    for (int h = 0; h < H; h++) {
                        const float *xv = x + r * ld + h * d;
                        double *o = ref + r * ld + h * d;
                        for (int i = 0; i < half; i++) {
                            const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
                            const double c = cs[r * half + i], s = (double)sign * sn[r * half + i];
                            o[i0] = xv[i0] * c - xv[i1] * s, o[i1] = xv[i0] * s + xv[i1] * c;
                        }
                    }
                b->rope(x, ld, R, H, d, nr, neox, cs, sn, sign);
                char what[96];
                snprintf(what, sizeof what, "%d heads of %d, n_rot %d, %s, %s", H, d, nr, neox ? "neox" : "gguf pairs", back ? "backward" : "forward");
                expect(elem_err(x, ref, R * ld), 1e-6, b, v, "rope", what);
                free(x), free(cs), free(sn), free(ref);
            }
}

static void test_rope(void **st) { (void)st, for_each_in(AS_BACKEND_INFERENCE, t_rope); }

// ---- attention over the KV cache's layout (attention.h), fp32 and fp16 caches ----

static void t_attention(const as_backend *b, int v) {
    static const int cfg[][2] = {{64, 3}, {256, 8}, {16, 1}, {80, 2}}; // head size, query heads per KV head
    static const int rows[] = {1, 5}, keys[] = {1, 17, 100};
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cfg); ci++)
        for (int f16 = 0; f16 < 2; f16++)
            for (size_t ri = 0; ri < AS_ARRAY_LEN(rows); ri++)
                for (size_t ki = 0; ki < AS_ARRAY_LEN(keys); ki++) {
                    const int d = cfg[ci][0], G = cfg[ci][1], R = rows[ri], NK = keys[ki] + R - 1;
                    const int64_t tiles = (NK + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE, ts = (int64_t)KERNEL_KV_TILE * d, cap = tiles * KERNEL_KV_TILE;
                    const int64_t qs = (int64_t)G * d;
                    const size_t eb = f16 ? 2 : 4;
                    float *q = as_malloc(sizeof(float) * (size_t)(R * qs)), *out = as_malloc(sizeof(float) * (size_t)(R * qs));
                    float *scores = as_aligned_alloc(sizeof(float) * (size_t)(KERNEL_ATTN_SCORE_ROWS * cap));
                    uint8_t *k = as_calloc((size_t)(tiles * ts), eb), *vv = as_calloc((size_t)(NK * d), eb);
                    double *kd = as_malloc(sizeof(double) * (size_t)(NK * d)), *vd = as_malloc(sizeof(double) * (size_t)(NK * d));
                    double *ref = as_malloc(sizeof(double) * (size_t)(R * qs)), *s = as_malloc(sizeof(double) * (size_t)NK);
                    int32_t *nk = as_malloc(sizeof(int32_t) * (size_t)R);
                    fill(q, R * qs, -1, 1);
                    for (int j = 0; j < NK; j++)
                        for (int e = 0; e < d; e++) {
                            float kk = (float)(2 * as_rng_uniform(&g_rng) - 1), vx = (float)(2 * as_rng_uniform(&g_rng) - 1);
                            const int64_t kidx = (j / KERNEL_KV_TILE) * ts + (int64_t)e * KERNEL_KV_TILE + j % KERNEL_KV_TILE, vidx = (int64_t)j * d + e;
                            if (f16) {
                                ((as_fp16 *)k)[kidx] = as_f32_to_fp16(kk), ((as_fp16 *)vv)[vidx] = as_f32_to_fp16(vx);
                                kk = as_fp16_to_f32(as_f32_to_fp16(kk)), vx = as_fp16_to_f32(as_f32_to_fp16(vx));
                            } else ((float *)k)[kidx] = kk, ((float *)vv)[vidx] = vx;
                            kd[vidx] = kk, vd[vidx] = vx;
                        }
                    for (int r = 0; r < R; r++) nk[r] = NK - (R - 1 - r); // causal: a block of consecutive positions
                    for (int r = 0; r < R; r++)
                        for (int h = 0; h < G; h++) {
                            double mx = -INFINITY, sum = 0;
                            for (int j = 0; j < nk[r]; j++) {
                                double a = 0;
                                for (int e = 0; e < d; e++) a += (double)q[r * qs + h * d + e] * kd[(int64_t)j * d + e];
                                s[j] = a / sqrt((double)d), mx = fmax(mx, s[j]);
                            }
                            for (int j = 0; j < nk[r]; j++) sum += s[j] = exp(s[j] - mx);
                            for (int e = 0; e < d; e++) {
                                double o = 0;
                                for (int j = 0; j < nk[r]; j++) o += s[j] / sum * vd[(int64_t)j * d + e];
                                ref[r * qs + h * d + e] = o;
                            }
                        }
                    const kernel_attn_args a = {.q = q, .q_stride = qs, .n_heads = G, .d = d, .n_rows = R, .n_keys = nk, .k = k,
                                                .k_tile_stride = ts, .v = vv, .v_stride = d, .f16 = f16, .scale = 1.0f / sqrtf((float)d),
                                                .out = out, .out_stride = qs, .scores = scores, .scores_stride = cap};
                    b->attention_rows(&a);
                    char what[128];
                    snprintf(what, sizeof what, "head size %d, %d heads per KV head, %d rows, %d keys, %s cache", d, G, R, NK, f16 ? "fp16" : "fp32");
                    expect(elem_err(out, ref, R * qs), 2e-6, b, v, "attention", what);
                    free(q), free(out), free(scores), free(k), free(vv), free(kd), free(vd), free(ref), free(s), free(nk);
                }
}

static void test_attention(void **st) { (void)st, for_each_in(AS_BACKEND_INFERENCE, t_attention); }

// ---- the KV cache the backend owns: layout per precision, stores, attention, prefix copies ----

static void t_kv(const as_backend *b, int v) {
    static const int cfg[][3] = {{64, 3, 3}, {256, 1, 8}, {80, 2, 1}, {32, 1, 2}}; // head size, KV heads, query heads per KV head
    static const kernel_precision precs[] = {KERNEL_PRECISION_F32, KERNEL_PRECISION_Q8, KERNEL_PRECISION_BF16};
    const int32_t L = 2, S = 2, NCTX = 45, NP = 37; // positions filled: two tiles, a part of the third, past one chunk
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cfg); ci++)
        for (size_t pi = 0; pi < AS_ARRAY_LEN(precs); pi++) {
            const int d = cfg[ci][0], Hkv = cfg[ci][1], G = cfg[ci][2], kvd = d * Hkv, qs = G * d * Hkv;
            kernel_kv kv;
            assert_int_equal(b->kv_init(&kv, L, S, NCTX, Hkv, d), AS_OK);
            kernel_kv_pass pass;
            assert_int_equal(b->kv_begin(&kv, precs[pi], &pass), AS_OK);
            assert_true(pass.block_rows >= 1);
            // Keys and values of every (layer, sequence, position), as the cache's elements round them.
            const int64_t nkv = (int64_t)L * S * NP * kvd;
            float *K = as_malloc(sizeof(float) * (size_t)nkv), *V = as_malloc(sizeof(float) * (size_t)nkv);
            fill(K, nkv, -1, 1), fill(V, nkv, -1, 1);
            // One batch per layer: every sequence's positions, in order (seq, pos as K's rows).
            int32_t seq[2 * 37], pos[2 * 37];
            for (int32_t i = 0; i < S * NP; i++) seq[i] = i / NP, pos[i] = i % NP;
            for (int32_t l = 0; l < L; l++) b->kv_store(&kv, l, S * NP, seq, pos, K + (int64_t)l * S * NP * kvd, V + (int64_t)l * S * NP * kvd, kvd);
            const bool f16 = kv.elem_bytes == 2 && !kv.bf16_tiles;
            if (f16)
                for (int64_t i = 0; i < nkv; i++) K[i] = as_fp16_to_f32(as_f32_to_fp16(K[i])), V[i] = as_fp16_to_f32(as_f32_to_fp16(V[i]));
            const int R = 4; // the last R positions of layer 1, sequence 1 attend (causally) to the cache
            float *q = as_malloc(sizeof(float) * (size_t)(R * qs)), *out = as_malloc(sizeof(float) * (size_t)(R * qs)),
                  *out2 = as_malloc(sizeof(float) * (size_t)(R * qs));
            double *ref = as_malloc(sizeof(double) * (size_t)(R * qs)), *sc = as_malloc(sizeof(double) * NP);
            int32_t nk[4];
            for (int r = 0; r < R; r++) nk[r] = NP - R + 1 + r;
            fill(q, R * qs, -1, 1);
            const float *Ks = K + ((int64_t)1 * S + 1) * NP * kvd, *Vs = V + ((int64_t)1 * S + 1) * NP * kvd;
            for (int g = 0; g < Hkv; g++)
                for (int r = 0; r < R; r++)
                    for (int h = 0; h < G; h++) {
                        const float *qv = q + r * qs + (g * G + h) * d;
                        double mx = -INFINITY, sum = 0;
                        for (int j = 0; j < nk[r]; j++) {
                            double a = 0;
                            for (int e = 0; e < d; e++) a += (double)qv[e] * Ks[(int64_t)j * kvd + g * d + e];
                            sc[j] = a / sqrt((double)d), mx = fmax(mx, sc[j]);
                        }
                        for (int j = 0; j < nk[r]; j++) sum += sc[j] = exp(sc[j] - mx);
                        for (int e = 0; e < d; e++) {
                            double o = 0;
                            for (int j = 0; j < nk[r]; j++) o += sc[j] / sum * Vs[(int64_t)j * kvd + g * d + e];
                            ref[r * qs + (g * G + h) * d + e] = o;
                        }
                    }
            int32_t bseq[8], bpos[8];
            for (int r = 0; r < R; r++) bseq[r] = 1, bpos[r] = nk[r] - 1;
            const float scale = 1.0f / sqrtf((float)d);
            b->kv_attention(&(kernel_kv_rows){.kv = &kv, .pass = &pass, .layer = 1, .n_rows = R, .seq = bseq, .pos = bpos, .q = q, .q_stride = qs,
                                              .n_head = G * Hkv, .scale = scale, .out = out, .out_stride = qs});
            char what[128];
            snprintf(what, sizeof what, "head size %d, %d KV heads x %d, %s cache%s, %s", d, Hkv, G, kv.bf16_tiles ? "bf16-tile" : f16 ? "fp16" : "fp32",
                     pass.bf16 ? " (bf16 attention)" : "", kernel_precision_name(precs[pi]));
            expect(elem_err(out, ref, R * qs), pass.bf16 ? 1e-2 : 2e-6, b, v, "kv_store + kv_attention", what);
            // Sequence 0 of layer 1 takes sequence 1's first NP - 3 positions, then attends as sequence 1 did.
            b->kv_copy_prefix(&kv, 0, 1, NP - 3);
            for (int r = 0; r < R; r++) nk[r] = NP - 3 - R + 1 + r;
            // One batch: sequence 1's rows, then sequence 0's (one row per block boundary apart).
            for (int r = 0; r < 2 * R; r++) bseq[r] = r < R, bpos[r] = nk[r % R] - 1;
            float *q2 = as_malloc(sizeof(float) * (size_t)(2 * R * qs)), *out12 = as_malloc(sizeof(float) * (size_t)(2 * R * qs));
            memcpy(q2, q, sizeof(float) * (size_t)(R * qs)), memcpy(q2 + R * qs, q, sizeof(float) * (size_t)(R * qs));
            b->kv_attention(&(kernel_kv_rows){.kv = &kv, .pass = &pass, .layer = 1, .n_rows = 2 * R, .seq = bseq, .pos = bpos, .q = q2,
                                              .q_stride = qs, .n_head = G * Hkv, .scale = scale, .out = out12, .out_stride = qs});
            memcpy(out, out12, sizeof(float) * (size_t)(R * qs)), memcpy(out2, out12 + R * qs, sizeof(float) * (size_t)(R * qs));
            free(q2), free(out12);
            expect(memcmp(out, out2, sizeof(float) * (size_t)(R * qs)) ? 1 : 0, 0, b, v, "kv_copy_prefix (bitwise)", what);
            b->kv_release(&kv);
            free(K), free(V), free(q), free(out), free(out2), free(ref), free(sc);
        }
}

static void test_kv(void **st) { (void)st, for_each_in(AS_BACKEND_INFERENCE, t_kv); }

// zero and gather_rows (the training model's clearing and gathering): exact,
// on host memory and on the backend's own buffers, rows in any order.
static void t_zero_gather(const as_backend *b, int v) {
    const int64_t R = 37, C = 67, n = 20;
    for (int own = 0; own < 2; own++) {
        float *src = own ? b->buf_alloc(sizeof(float) * R * C) : as_malloc(sizeof(float) * R * C);
        float *dst = own ? b->buf_alloc(sizeof(float) * R * C) : as_malloc(sizeof(float) * R * C);
        fill(src, R * C, -1, 1), fill(dst, R * C, -1, 1);
        int32_t rows[20];
        for (int64_t i = 0; i < n; i++) rows[i] = (int32_t)((i * 11 + 5) % R);
        b->gather_rows(dst, src, rows, n, C);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += memcmp(dst + i * C, src + rows[i] * C, sizeof(float) * C) != 0;
        b->gather_rows(dst, src, NULL, 3, C); // consecutive rows: one copy
        bad += memcmp(dst, src, sizeof(float) * 3 * C) != 0;
        b->zero(dst + 5, 100);
        for (int64_t i = 0; i < R * C; i++) bad += (i >= 5 && i < 105) ? dst[i] != 0.0f : 0;
        bad += dst[4] == 0.0f || dst[105] == 0.0f; // (fill gives no exact zeros there)
        // scale_rows: dst row rows[i] = scale[i] src row i (distinct rows), the other rows untouched.
        float scale[20], *keep = as_malloc(sizeof(float) * R * C);
        for (int64_t i = 0; i < n; i++) rows[i] = (int32_t)((i * 13 + 3) % R), scale[i] = 0.25f * (float)(i - 7);
        memcpy(keep, dst, sizeof(float) * R * C);
        b->scale_rows(dst, src, rows, scale, n, C);
        for (int64_t r = 0; r < R; r++) {
            int64_t i = 0;
            while (i < n && rows[i] != r) i++;
            for (int64_t j = 0; j < C; j++) bad += dst[r * C + j] != (i < n ? scale[i] * src[i * C + j] : keep[r * C + j]);
        }
        free(keep);
        expect(bad, 0, b, v, own ? "zero, gather, scale_rows (buf_alloc)" : "zero, gather, scale_rows (host)", "37 x 67");
        if (own) b->buf_free(src), b->buf_free(dst);
        else free(src), free(dst);
    }
}

static void test_zero_gather(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_zero_gather); }

// The CPU's cache takes its memory on the first pass, at the pass's element
// size; a cache larger than memory is an error there (one line), not an abort.
// (AddressSanitizer aborts on such a request instead of returning NULL.)
static void test_kv_too_big(void **st) {
    (void)st;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#else
    kernel_kv kv;
    assert_int_equal(as_backend_cpu.kv_init(&kv, 64, 1 << 20, 1 << 20, 8, 128), AS_OK); // 2^57 bytes: sized, not allocated
    assert_null(kv.k);
    kernel_kv_pass pass;
    assert_int_equal(as_backend_cpu.kv_begin(&kv, KERNEL_PRECISION_Q8, &pass), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "out of memory"));
    assert_null(kv.k);
    as_backend_cpu.kv_release(&kv);
#endif
}

// ---- training's softmax and SwiGLU pieces, forward and backward ----

static void t_train(const as_backend *b, int v) {
    for (size_t si = 0; si < AS_ARRAY_LEN(row_sizes); si++) {
        const int64_t n = row_sizes[si];
        float *z = as_malloc(sizeof(float) * (size_t)n), *g = as_malloc(sizeof(float) * (size_t)n), *u = as_malloc(sizeof(float) * (size_t)n);
        float *y = as_malloc(sizeof(float) * (size_t)n), *y2 = as_malloc(sizeof(float) * (size_t)n), *dh = as_malloc(sizeof(float) * (size_t)n);
        double *ref = as_malloc(sizeof(double) * (size_t)n), *ref2 = as_malloc(sizeof(double) * (size_t)n);
        char what[64];
        snprintf(what, sizeof what, "n=%lld", (long long)n);
        // max, and the log-softmax's sum of e^(z - max).
        fill(z, n, -30, 30);
        float mx = z[0];
        for (int64_t i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
        expect(b->max(z, n) == mx ? 0 : 1, 0, b, v, "max", what);
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += ref[i] = exp((double)z[i] - mx);
        memcpy(y, z, sizeof(float) * (size_t)n);
        const double got = b->exp_shift_sum(y, n, mx);
        expect(fabs(got - sum) / sum, 1e-6, b, v, "exp_shift_sum (sum)", what);
        expect(elem_err(y, ref, n), 4e-7, b, v, "exp_shift_sum (values)", what);
        // The log-softmax backward's -g e^(z - l).
        const float gg = 0.37f, l = (float)(mx + log(sum));
        for (int64_t i = 0; i < n; i++) ref[i] = -gg * exp((double)z[i] - l);
        b->neg_scaled_exp(y, z, n, gg, l);
        expect(elem_err(y, ref, n), 4e-7, b, v, "neg_scaled_exp", what);
        // SwiGLU forward, and its backward against the analytic derivative.
        fill(g, n, -8, 8), fill(u, n, -2, 2), fill(dh, n, -1, 1);
        for (int64_t i = 0; i < n; i++) {
            const double s = 1 / (1 + exp(-(double)g[i]));
            ref[i] = g[i] * s * u[i];
        }
        b->silu_glu_forward(y, g, u, n);
        expect(elem_err(y, ref, n), 2e-6, b, v, "silu_glu_forward", what);
        for (int64_t i = 0; i < n; i++) {
            const double s = 1 / (1 + exp(-(double)g[i]));
            ref[i] = dh[i] * u[i] * s * (1 + g[i] * (1 - s)), ref2[i] = dh[i] * g[i] * s;
        }
        b->silu_glu_backward(y, y2, dh, g, u, n);
        expect(elem_err(y, ref, n), 2e-6, b, v, "silu_glu_backward (dg)", what);
        expect(elem_err(y2, ref2, n), 2e-6, b, v, "silu_glu_backward (du)", what);
        free(z), free(g), free(u), free(y), free(y2), free(dh), free(ref), free(ref2);
    }
}

static void test_train_ops(void **st) { (void)st, for_each_in(AS_BACKEND_TRAINING, t_train); }

static void test_registry(void **st) {
    (void)st;
    assert_true(as_backend_count() >= 1);
    assert_ptr_equal(as_backend_find("cpu"), &as_backend_cpu);
    assert_null(as_backend_find("no-such-backend"));
    as_backend partial = as_backend_cpu; // a backend still being written is named by its first missing op
    const unsigned all = AS_BACKEND_INFERENCE | AS_BACKEND_TRAINING;
    assert_null(as_backend_missing(&partial, all));
    partial.kv_store = NULL;
    assert_string_equal(as_backend_missing(&partial, all), "kv_store");
    assert_null(as_backend_missing(&partial, AS_BACKEND_TRAINING));
    partial.kv_store = as_backend_cpu.kv_store, partial.adamw_update = NULL;
    assert_string_equal(as_backend_missing(&partial, AS_BACKEND_TRAINING), "adamw_update");
    assert_null(as_backend_missing(&partial, AS_BACKEND_INFERENCE));
    for (int i = 0; i < as_backend_count(); i++) {
        const as_backend *b = as_backend_at(i);
        // Every op is provided: a backend without one would not be tested (and would crash its caller).
        const char *missing = as_backend_missing(b, AS_BACKEND_INFERENCE | AS_BACKEND_TRAINING);
        if (missing) fail_msg("backend %s: op %s missing", b->name, missing);
        int avail = 0;
        for (int v = 0; v < b->n_variants(); v++) {
            const int ok = b->use_variant(v) == AS_OK;
            avail += ok;
            fprintf(stderr, "backend %s variant %s: %s\n", b->name, b->variant_name(v), ok ? "tested" : "not on this machine");
        }
        b->use_variant(-1);
        assert_true(avail > 0);
    }
}

int main(void) {
    g_only = getenv("ALPHASPIN_BACKEND_ONLY");
    if (g_only && !*g_only) g_only = NULL;
    if (g_only && !as_backend_find(g_only)) {
        const char *why = !strcmp(g_only, "cuda") ? as_backend_cuda_status() : "not a backend of this build";
        if (!strcmp(g_only, "cuda")) printf("SKIP: no CUDA device (%s)\n", why ? why : "?");
        else printf("SKIP: backend %s not available (%s)\n", g_only, why);
        return AS_TEST_SKIP;
    }
    for (int i = 0; i < as_backend_count(); i++)
        fprintf(stderr, "backend %s%s\n", as_backend_at(i)->name, g_only && strcmp(as_backend_at(i)->name, g_only) ? " (not tested: ALPHASPIN_BACKEND_ONLY)" : "");
    if (as_backend_cuda_status()) fprintf(stderr, "backend cuda: not available (%s)\n", as_backend_cuda_status());
    as_rng_seed(&g_rng, 2026);
    kernel_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry), cmocka_unit_test(test_matmul),    cmocka_unit_test(test_sgemm), cmocka_unit_test(test_rows),
        cmocka_unit_test(test_rope),     cmocka_unit_test(test_attention), cmocka_unit_test(test_train_ops), cmocka_unit_test(test_weights),
        cmocka_unit_test(test_kv),       cmocka_unit_test(test_kv_too_big), cmocka_unit_test(test_zero_gather), TRAIN_GRAPH_TESTS, // test_backend_ops_train.c
    };
    return cmocka_run_group_tests(tests, NULL, report);
}
