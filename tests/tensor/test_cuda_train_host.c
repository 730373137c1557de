// The CUDA backend's training arithmetic (src/tensor/cuda/cuda_backend.cu,
// the __host__ __device__ element functions its training kernels call) run
// on the host through the plugin's alphaspin_cuda_train_host table
// (tensor/cuda/cuda_host_check.h), against the CPU backend, bit for bit:
// vexp.h's e^x, the 16-lane sums and maxima of the softmaxes, the log-
// softmax backward's element, SwiGLU and GeGLU with their backwards, RoPE
// both ways (interleaved and neox, partial rotation), the dropout's hashed
// keep bits, its replay and its backward, the gradient norm's sum of squares
// and five steps of AdamW, RMSprop and SGD (with and without momentum).
// Every CPU ISA this machine has is compared (the CPU's paths give the same
// bits).  This checks the code and its index arithmetic on machines without a
// GPU; what it cannot check is the device's own libm (tanhf of GELU, log) and
// the kernels' launch and reduction code, which test_cuda_backend checks on a
// GPU.  Skips (77) when the plugin was not built.
#include "test_common.h"

#include <dlfcn.h>
#include <math.h>

#include "tensor/cuda/cuda_host_check.h"
#include "tensor/kernels_impl.h"
#include "tensor/train_graph.h"
#include "tensor/train_ops.h"
#include "tensor/vexp.h"
#include "util/common.h"
#include "util/rng.h"

static const as_cuda_train_host *H;
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
    for (int i = 0; i < n; i++) got[i] = H->expf_(x[i]), ref[i] = as_expf(x[i]);
    same(got, ref, n, "e^x (as_expf)", isa);
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++) {
        const int64_t m = sizes[si];
        float *z = fmem(m), *a = fmem(m), *b = fmem(m);
        fill(z, m, -15, 15);
        const float shift = 3.25f;
        same_d(H->exp_sum(z, m, shift), train_exp_sum(z, m, shift), "exp_sum (16 lanes)", isa);
        const float mg = H->max(z, m), mr = train_max(z, m);
        same(&mg, &mr, 1, "max (16 lanes)", isa);
        H->neg_scaled_exp(a, z, m, -1.75f, 2.5f), train_neg_scaled_exp(b, z, m, -1.75f, 2.5f);
        same(a, b, m, "neg_scaled_exp", isa);
        free(z), free(a), free(b);
    }
}

static void c_glu(const char *isa) {
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++)
        for (int gelu = 0; gelu < 2; gelu++) {
            const int64_t n = sizes[si];
            float *g = fmem(n), *u = fmem(n), *dh = fmem(n), *h1 = fmem(n), *h2 = fmem(n), *dg1 = fmem(n), *dg2 = fmem(n), *du1 = fmem(n),
                  *du2 = fmem(n);
            fill(g, n, -12, 12), fill(u, n, -2, 2), fill(dh, n, -1, 1);
            if (n > 4) g[0] = 0.0f, g[1] = -90.0f, g[2] = 90.0f; // zero and the exp's clamps
            H->glu_forward(h1, g, u, n, gelu), train_glu_forward(h2, g, u, n, gelu, 1);
            same(h1, h2, n, gelu ? "GeGLU forward" : "SwiGLU forward", isa);
            H->glu_backward(dg1, du1, dh, g, u, n, gelu), train_glu_backward(dg2, du2, dh, g, u, n, gelu, 1);
            same(dg1, dg2, n, gelu ? "GeGLU backward (dg)" : "SwiGLU backward (dg)", isa);
            same(du1, du2, n, gelu ? "GeGLU backward (du)" : "SwiGLU backward (du)", isa);
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
            H->rope(x1, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, back ? -1.0f : 1.0f);
            if (back) train_rope_backward(x2, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, 1);
            else train_rope_forward(x2, N, cs[ci].H, cs[ci].d, cs[ci].nr, cs[ci].neox, c, s, 1);
            same(x1, x2, n, back ? "rope backward" : "rope forward", isa);
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
        H->dropout_forward(o1, x, R, C, &a), train_dropout_forward(o2, x, R, C, &b, 1);
        same(o1, o2, n, "dropout forward (hashed)", isa);
        if (memcmp(k1, k2, sizeof(uint16_t) * (size_t)(R * w))) fail_msg("dropout forward (cpu %s): keep bits differ, case %zu", isa, ci);
        // Replaying the CPU's bits gives the same numbers.
        a.replay = b.replay = true, a.keep = k2;
        H->dropout_forward(o1, x, R, C, &a);
        same(o1, o2, n, "dropout forward (replayed)", isa);
        fill(d1, n, -1, 1), memcpy(d2, d1, sizeof(float) * (size_t)n);
        H->dropout_backward(d1, dout, R, C, &a), train_dropout_backward(d2, dout, R, C, &b, 1);
        same(d1, d2, n, "dropout backward", isa);
        free(x), free(o1), free(o2), free(dout), free(d1), free(d2), free(k1), free(k2);
    }
}

static void c_optim(const char *isa) {
    static const size_t ns[] = {1, 33, 70001, 200000};
    for (size_t si = 0; si < AS_ARRAY_LEN(ns); si++) {
        const size_t n = ns[si];
        float *g = fmem((int64_t)n);
        fill(g, (int64_t)n, -1, 1);
        same_d(H->sum_squares(g, n), train_sum_squares(g, n, 2), "sum_squares", isa);
        for (int kind = 0; kind < 4; kind++) {
            static const char *const names[] = {"adamw_update", "rmsprop_update", "sgd_update (momentum)", "sgd_update"};
            float *p1 = fmem((int64_t)n), *p2 = fmem((int64_t)n), *m1 = as_calloc(n, sizeof(float)), *m2 = as_calloc(n, sizeof(float));
            float *v1 = as_calloc(n, sizeof(float)), *v2 = as_calloc(n, sizeof(float));
            fill(p1, (int64_t)n, -1, 1), memcpy(p2, p1, sizeof(float) * n);
            for (int64_t t = 1; t <= 5; t++) {
                fill(g, (int64_t)n, -1, 1);
                if (kind == 0) {
                    H->adamw_update(p1, g, m1, v1, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
                    train_adamw_update(p2, g, m2, v2, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t, 2);
                } else if (kind == 1) {
                    H->rmsprop_update(p1, g, v1, n, 1e-2f, 0.99f, 1e-8f, 0.01f);
                    train_rmsprop_update(p2, g, v2, n, 1e-2f, 0.99f, 1e-8f, 0.01f, 2);
                } else {
                    H->sgd_update(p1, g, kind == 2 ? m1 : NULL, n, 1e-3f, 0.9f, 0.01f, t);
                    train_sgd_update(p2, g, kind == 2 ? m2 : NULL, n, 1e-3f, 0.9f, 0.01f, t, 2);
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

static void test_exp(void **st) { (void)st, for_each_isa(c_exp); }
static void test_glu(void **st) { (void)st, for_each_isa(c_glu); }
static void test_rope(void **st) { (void)st, for_each_isa(c_rope); }
static void test_dropout(void **st) { (void)st, for_each_isa(c_dropout); }
static void test_optim(void **st) { (void)st, for_each_isa(c_optim); }

int main(void) {
    const char *env = getenv("ALPHASPIN_CUDA_PLUGIN");
    const char *path = env && *env ? env : AS_BINARY_DIR "/libalphaspin_cuda.so";
    if (access(path, R_OK)) {
        printf("SKIP: CUDA plugin not built (%s)\n", path);
        return AS_TEST_SKIP;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        // The plugin exists but its libraries (cuBLAS) are not found here: nothing to test.
        printf("SKIP: CUDA plugin does not load here (%s)\n", dlerror());
        return AS_TEST_SKIP;
    }
    const as_cuda_train_host *(*entry)(void) = (const as_cuda_train_host *(*)(void))(uintptr_t)dlsym(h, "alphaspin_cuda_train_host");
    if (!entry) {
        fprintf(stderr, "%s: no alphaspin_cuda_train_host\n", path);
        return 1;
    }
    H = entry();
    if (!H || H->version != AS_CUDA_TRAIN_HOST_VERSION) {
        fprintf(stderr, "%s: alphaspin_cuda_train_host version %d, expected %d\n", path, H ? H->version : -1, AS_CUDA_TRAIN_HOST_VERSION);
        return 1;
    }
    as_rng_seed(&g_rng, 22);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exp), cmocka_unit_test(test_glu), cmocka_unit_test(test_rope),
                                       cmocka_unit_test(test_dropout), cmocka_unit_test(test_optim)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
