// Training's element-wise and reduction ops give the same bits on every code
// path: each op runs with the kernels' ISA forced to scalar (the C paths),
// avx2 and avx512 (those this CPU has) and with 1, 2 and 3 threads, and every
// output must be memcmp-equal to the scalar path's with 1 thread.  Sizes are
// awkward (1 .. 40, around multiples of 8, 16 and 64, past the GLU's 4096
// chunks), inputs include +-0, values beyond exp's clamp and ties.
//   train_ops.h: train_exp_shift_sum / train_exp_sum (the values and the
//     returned double), train_max, train_neg_scaled_exp, the SwiGLU pair,
//     the dropout rows (hashing, storing and replaying masks, add or not);
//     the sums and the max also against a plain C reference of the order
//     train_ops.h defines (16 lanes, folded in lane order);
//   train/ops.h: log-softmax forward/backward, GLU forward/backward (SiLU and
//     GELU), RMSNorm forward/backward, RoPE forward/backward (interleaved and
//     NeoX, partial rotation), causal attention forward/backward over packed
//     sequences longer than one block (with kernel_sgemm inside).
#include "train_test_util.h"

#include <math.h>

#include "tensor/kernels_impl.h"
#include "tensor/train_ops.h"
#include "tensor/vexp.h"
#include "train/ops.h"
#include "util/common.h"

static kernel_isa isas[KERNEL_ISA_COUNT];
static int n_isas;

static const int64_t sizes[] = {1, 2, 3, 5, 7, 8, 9, 13, 15, 16, 17, 23, 24, 31, 32, 33, 40, 47, 63, 64, 65, 100, 255, 257, 1000, 4097, 8200};

// Random values sd * N(0, 1), every 11th replaced by a special one.
static float *inputs(int64_t n, float sd, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    float *x = as_malloc(sizeof(float) * (size_t)AS_MAX(n, 1));
    fill_normal(x, n, sd, &r);
    static const float special[] = {0.0f, -0.0f, -200.0f, 95.0f, -87.5f, 88.5f, 1e-30f, -1e-30f};
    for (int64_t i = 3; i < n; i += 11) x[i] = special[(i / 11) % 8];
    return x;
}

// An op's outputs for one configuration: run(ctx, nth) writes them into bufs
// (nb buffers of len[b] bytes), from inputs it must not change.
typedef void (*run_fn)(void *ctx, int nth);
typedef struct outputs {
    int nb;
    void *buf[6];
    size_t len[6];
} outputs;

// Runs `run` on the scalar path with one thread (the reference), then on every
// ISA with 1, 2 and 3 threads (threads only when `threaded`), each output
// compared bytewise with the reference.
static void check_paths(const char *what, int64_t size, run_fn run, void *ctx, const outputs *o, bool threaded) {
    void *ref[6];
    assert_int_equal(kernel_force_isa(KERNEL_ISA_SCALAR), AS_OK);
    run(ctx, 1);
    for (int b = 0; b < o->nb; b++) ref[b] = as_malloc(AS_MAX(o->len[b], (size_t)1)), memcpy(ref[b], o->buf[b], o->len[b]);
    for (int i = 0; i < n_isas; i++)
        for (int nth = 1; nth <= (threaded ? 3 : 1); nth++) {
            assert_int_equal(kernel_force_isa(isas[i]), AS_OK);
            for (int b = 0; b < o->nb; b++) memset(o->buf[b], 0x5a, o->len[b]);
            run(ctx, nth);
            for (int b = 0; b < o->nb; b++)
                if (memcmp(ref[b], o->buf[b], o->len[b])) {
                    size_t at = 0;
                    while (((const unsigned char *)ref[b])[at] == ((const unsigned char *)o->buf[b])[at]) at++;
                    fail_msg("%s (size %lld): output %d differs between scalar/1 thread and %s/%d threads at byte %zu", what, (long long)size, b,
                             kernel_isa_name(isas[i]), nth, at);
                }
        }
    for (int b = 0; b < o->nb; b++) free(ref[b]);
    kernel_force_isa(KERNEL_ISA_AUTO);
}

// ---- train_ops.h ----

typedef struct {
    const float *x, *u, *dh;
    int64_t n;
    float shift, g;
    float *y, *y2, *y3;
    double sum, sum2;
    float max;
} fm_ctx;

static void run_exp(void *p, int nth) {
    (void)nth;
    fm_ctx *c = p;
    memcpy(c->y, c->x, sizeof(float) * (size_t)c->n);
    c->sum = train_exp_shift_sum(c->y, c->n, c->shift);
    c->sum2 = train_exp_sum(c->x, c->n, c->shift);
    c->max = train_max(c->x, c->n);
    train_neg_scaled_exp(c->y2, c->x, c->n, c->g, c->shift);
}

static void run_silu(void *p, int nth) {
    (void)nth;
    fm_ctx *c = p;
    train_silu_glu_forward(c->y, c->x, c->u, c->n);
    train_silu_glu_backward(c->y2, c->y3, c->dh, c->x, c->u, c->n);
}

// train_ops.h's order written out: 16 float lanes (element i in lane i % 16),
// folded in lane order into a double; the max with max_ps's rule.
static double ref_exp_sum(const float *x, int64_t n, float shift) {
    float lane[16] = {0};
    for (int64_t i = 0; i < n; i++) lane[i % 16] += as_expf(x[i] - shift);
    double s = 0.0;
    for (int l = 0; l < 16; l++) s += (double)lane[l];
    return s;
}

static float ref_max(const float *x, int64_t n) {
    float lane[16];
    for (int l = 0; l < 16; l++) lane[l] = x[0];
    for (int64_t i = 0; i < n; i++) lane[i % 16] = lane[i % 16] > x[i] ? lane[i % 16] : x[i];
    float m = lane[0];
    for (int l = 1; l < 16; l++) m = m > lane[l] ? m : lane[l];
    return m;
}

static void test_exp_ops(void **state) {
    (void)state;
    for (size_t s = 0; s < AS_ARRAY_LEN(sizes); s++)
        for (int variant = 0; variant < 3; variant++) {
            const int64_t n = sizes[s];
            float *x = inputs(n, 4.0f, 100 + s);
            if (variant == 2) // ties at the maximum with both signs of zero
                for (int64_t i = 0; i < n; i++) x[i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : -fabsf(x[i]);
            fm_ctx c = {.x = x, .n = n, .shift = variant == 1 ? 30.0f : 2.5f, .g = -0.7f};
            c.y = as_malloc(sizeof(float) * (size_t)n), c.y2 = as_malloc(sizeof(float) * (size_t)n);
            const size_t b = sizeof(float) * (size_t)n;
            outputs o = {5, {c.y, c.y2, &c.sum, &c.sum2, &c.max}, {b, b, sizeof c.sum, sizeof c.sum2, sizeof c.max}};
            check_paths("exp sums, max, neg_scaled_exp", n, run_exp, &c, &o, false);
            // What every path gave (the last one's outputs) is the order train_ops.h defines.
            const double want = ref_exp_sum(x, n, c.shift);
            const float mx = ref_max(x, n);
            assert_memory_equal(&c.sum, &want, sizeof want);
            assert_memory_equal(&c.sum2, &want, sizeof want);
            assert_memory_equal(&c.max, &mx, sizeof mx);
            for (int64_t i = 0; i < n; i++) {
                const float e = as_expf(x[i] - c.shift), d = fmaf(0.7f, e, 0.0f);
                assert_memory_equal(&c.y[i], &e, sizeof e);
                assert_memory_equal(&c.y2[i], &d, sizeof d);
            }
            free(x), free(c.y), free(c.y2);
        }
}

static void test_silu(void **state) {
    (void)state;
    for (size_t s = 0; s < AS_ARRAY_LEN(sizes); s++) {
        const int64_t n = sizes[s];
        float *g = inputs(n, 5.0f, 200 + s), *u = inputs(n, 1.0f, 300 + s), *dh = inputs(n, 1.0f, 400 + s);
        fm_ctx c = {.x = g, .u = u, .dh = dh, .n = n};
        c.y = as_malloc(sizeof(float) * (size_t)n), c.y2 = as_malloc(sizeof(float) * (size_t)n), c.y3 = as_malloc(sizeof(float) * (size_t)n);
        const size_t b = sizeof(float) * (size_t)n;
        outputs o = {3, {c.y, c.y2, c.y3}, {b, b, b}};
        check_paths("train_silu_glu_forward/backward", n, run_silu, &c, &o, false);
        free(g), free(u), free(dh), free(c.y), free(c.y2), free(c.y3);
    }
}

typedef struct {
    const float *x;
    const float *d0;
    int64_t n;
    uint64_t k0;
    uint32_t thresh;
    int add;
    float *d1, *d2, *d3, *d4;
    uint16_t *keep;
} drop_ctx;

static void run_dropout(void *p, int nth) {
    (void)nth;
    drop_ctx *c = p;
    const size_t b = sizeof(float) * (size_t)c->n;
    memcpy(c->d1, c->d0, b), memcpy(c->d2, c->d0, b), memcpy(c->d3, c->d0, b), memcpy(c->d4, c->d0, b);
    train_dropout_row(c->d1, c->x, c->n, c->k0, c->thresh, 1.25f, c->add);
    train_dropout_row_keep(c->d2, c->x, c->n, c->k0, c->thresh, 1.25f, c->add, c->keep);
    train_dropout_row_mask(c->d3, c->x, c->n, c->keep, 1.25f, c->add);
    train_dropout_row_ref(c->d4, c->x, c->n, c->k0, c->thresh, 1.25f, c->add);
}

static void test_dropout(void **state) {
    (void)state;
    const uint64_t k0s[] = {0, 12345, 0xFFFFFFFFull - 100, (7ull << 42) + 0xFFFFFFF0ull, 0xFFFFFFFFFFFFFF00ull};
    const uint32_t ths[] = {0, (uint32_t)(0.05 * 4294967296.0), (uint32_t)(0.5 * 4294967296.0), 0xFFFFFFFFu};
    for (size_t s = 0; s < AS_ARRAY_LEN(sizes); s++)
        for (size_t a = 0; a < AS_ARRAY_LEN(k0s); a++)
            for (size_t t = 0; t < AS_ARRAY_LEN(ths); t++)
                for (int add = 0; add <= 1; add++) {
                    const int64_t n = sizes[s];
                    if (n > 1000 && (a || t != 2)) continue;
                    float *x = inputs(n, 1.0f, 500 + s), *d0 = inputs(n, 1.0f, 600 + s);
                    const size_t b = sizeof(float) * (size_t)n, kb = sizeof(uint16_t) * (size_t)((n + 15) / 16);
                    drop_ctx c = {x, d0, n, k0s[a], ths[t], add, as_malloc(b), as_malloc(b), as_malloc(b), as_malloc(b), as_malloc(kb)};
                    outputs o = {5, {c.d1, c.d2, c.d3, c.d4, c.keep}, {b, b, b, b, kb}};
                    check_paths("dropout rows", n, run_dropout, &c, &o, false);
                    assert_memory_equal(c.d1, c.d4, b); // each path is the scalar definition
                    assert_memory_equal(c.d2, c.d4, b);
                    assert_memory_equal(c.d3, c.d4, b);
                    free(x), free(d0), free(c.d1), free(c.d2), free(c.d3), free(c.d4), free(c.keep);
                }
}

// ---- ops.h ----

typedef struct {
    const float *a, *b, *c;
    const int32_t *tgt;
    int64_t rows, V;
    float *o1, *o2, *o3, *o4;
    bool gelu;
} op_ctx;

static void run_logsoftmax(void *p, int nth) {
    op_ctx *c = p;
    train_logsoftmax_forward(c->o1, c->o2, c->a, c->tgt, c->rows, c->V, nth);
    train_logsoftmax_backward(c->o3, c->b, c->a, c->o2, c->tgt, c->rows, c->V, nth);
}

static void test_logsoftmax(void **state) {
    (void)state;
    const int64_t Vs[] = {1, 2, 17, 33, 100, 1003, 4111};
    for (size_t s = 0; s < AS_ARRAY_LEN(Vs); s++) {
        const int64_t rows = 5, V = Vs[s];
        float *z = inputs(rows * V, 3.0f, 700 + s), *dl = inputs(rows, 1.0f, 800 + s);
        int32_t tgt[5];
        for (int i = 0; i < 5; i++) tgt[i] = (int32_t)((i * 7919) % V);
        op_ctx c = {z, dl, NULL, tgt, rows, V, as_malloc(sizeof(float) * rows), as_malloc(sizeof(float) * rows),
                    as_malloc(sizeof(float) * (size_t)(rows * V)), NULL, false};
        outputs o = {3, {c.o1, c.o2, c.o3}, {sizeof(float) * rows, sizeof(float) * rows, sizeof(float) * (size_t)(rows * V)}};
        check_paths("train_logsoftmax_forward/backward", V, run_logsoftmax, &c, &o, true);
        free(z), free(dl), free(c.o1), free(c.o2), free(c.o3);
    }
}

static void run_glu(void *p, int nth) {
    op_ctx *c = p;
    train_glu_forward(c->o1, c->a, c->b, c->V, c->gelu, nth);
    train_glu_backward(c->o2, c->o3, c->c, c->a, c->b, c->V, c->gelu, nth);
}

static void test_glu(void **state) {
    (void)state;
    for (size_t s = 0; s < AS_ARRAY_LEN(sizes); s++)
        for (int gelu = 0; gelu <= 1; gelu++) {
            const int64_t n = sizes[s];
            float *g = inputs(n, 3.0f, 900 + s), *u = inputs(n, 1.0f, 1000 + s), *dh = inputs(n, 1.0f, 1100 + s);
            const size_t b = sizeof(float) * (size_t)n;
            op_ctx c = {g, u, dh, NULL, 0, n, as_malloc(b), as_malloc(b), as_malloc(b), NULL, gelu};
            outputs o = {3, {c.o1, c.o2, c.o3}, {b, b, b}};
            check_paths(gelu ? "train_glu (GELU)" : "train_glu (SiLU)", n, run_glu, &c, &o, true);
            free(g), free(u), free(dh), free(c.o1), free(c.o2), free(c.o3);
        }
}

static void run_rmsnorm(void *p, int nth) {
    op_ctx *c = p;
    const int64_t N = c->rows, C = c->V;
    train_rmsnorm_forward(c->o1, c->o2, c->a, c->b, N, C, 1e-5f, nth);
    memset(c->o3, 0, sizeof(float) * (size_t)(N * C)), memset(c->o4, 0, sizeof(float) * (size_t)C);
    train_rmsnorm_backward(c->o3, c->o4, c->c, c->a, c->b, c->o2, N, C, nth);
}

static void test_rmsnorm(void **state) {
    (void)state;
    const int64_t Cs[] = {1, 17, 64, 70, 130, 576};
    for (size_t s = 0; s < AS_ARRAY_LEN(Cs); s++) {
        const int64_t N = 7, C = Cs[s];
        float *x = inputs(N * C, 2.0f, 1200 + s), *w = inputs(C, 1.0f, 1300 + s), *dy = inputs(N * C, 1.0f, 1400 + s);
        const size_t b = sizeof(float) * (size_t)(N * C);
        op_ctx c = {x, w, dy, NULL, N, C, as_malloc(b), as_malloc(sizeof(float) * N), as_malloc(b), as_malloc(sizeof(float) * (size_t)C), false};
        outputs o = {4, {c.o1, c.o2, c.o3, c.o4}, {b, sizeof(float) * N, b, sizeof(float) * (size_t)C}};
        check_paths("train_rmsnorm_forward/backward", C, run_rmsnorm, &c, &o, true);
        free(x), free(w), free(dy), free(c.o1), free(c.o2), free(c.o3), free(c.o4);
    }
}

typedef struct {
    const float *x, *cs, *sn;
    int64_t N;
    int H, d, n_rot;
    bool neox;
    float *y, *dy;
} rope_ctx;

static void run_rope(void *p, int nth) {
    rope_ctx *c = p;
    const size_t b = sizeof(float) * (size_t)(c->N * c->H * c->d);
    memcpy(c->y, c->x, b), memcpy(c->dy, c->x, b);
    train_rope_forward(c->y, c->N, c->H, c->d, c->n_rot, c->neox, c->cs, c->sn, nth);
    train_rope_backward(c->dy, c->N, c->H, c->d, c->n_rot, c->neox, c->cs, c->sn, nth);
}

static void test_rope(void **state) {
    (void)state;
    const int rots[][2] = {{64, 64}, {64, 40}, {48, 48}, {20, 20}};
    for (size_t s = 0; s < AS_ARRAY_LEN(rots); s++)
        for (int neox = 0; neox <= 1; neox++) {
            const int64_t N = 9;
            const int H = 3, d = rots[s][0], n_rot = rots[s][1];
            float *x = inputs(N * H * d, 1.0f, 1500 + s), *cs = inputs(N * n_rot / 2, 1.0f, 1600 + s), *sn = inputs(N * n_rot / 2, 1.0f, 1700 + s);
            const size_t b = sizeof(float) * (size_t)(N * H * d);
            rope_ctx c = {x, cs, sn, N, H, d, n_rot, neox, as_malloc(b), as_malloc(b)};
            outputs o = {2, {c.y, c.dy}, {b, b}};
            check_paths("train_rope_forward/backward", d, run_rope, &c, &o, true);
            free(x), free(cs), free(sn), free(c.y), free(c.dy);
        }
}

typedef struct {
    const float *q, *k, *v, *dout;
    const int32_t *off, *len;
    int32_t n_seq;
    int H, Hkv, d;
    int64_t N, max_len;
    float *out, *lse, *dq, *dk, *dv;
} att_ctx;

static void run_attention(void *p, int nth) {
    att_ctx *c = p;
    train_attention_forward(c->out, c->lse, c->q, c->k, c->v, c->off, c->len, c->n_seq, c->H, c->Hkv, c->d, NULL, c->max_len, nth);
    memset(c->dq, 0, sizeof(float) * (size_t)(c->N * c->H * c->d));
    memset(c->dk, 0, sizeof(float) * (size_t)(c->N * c->Hkv * c->d));
    memset(c->dv, 0, sizeof(float) * (size_t)(c->N * c->Hkv * c->d));
    train_attention_backward(c->dq, c->dk, c->dv, c->dout, c->out, c->lse, c->q, c->k, c->v, c->off, c->len, c->n_seq, c->H, c->Hkv, c->d, nth);
}

static void test_attention(void **state) {
    (void)state;
    const int32_t len[] = {1, 70, 131, 5};
    int32_t off[4];
    int64_t N = 0;
    for (int i = 0; i < 4; i++) off[i] = (int32_t)N, N += len[i];
    const int dims[] = {16, 24};
    for (size_t s = 0; s < AS_ARRAY_LEN(dims); s++) {
        const int H = 4, Hkv = 2, d = dims[s];
        float *q = inputs(N * H * d, 1.0f, 1800 + s), *k = inputs(N * Hkv * d, 1.0f, 1900 + s), *v = inputs(N * Hkv * d, 1.0f, 2000 + s);
        float *dout = inputs(N * H * d, 1.0f, 2100 + s);
        const size_t bq = sizeof(float) * (size_t)(N * H * d), bk = sizeof(float) * (size_t)(N * Hkv * d);
        att_ctx c = {q, k, v, dout, off, len, 4, H, Hkv, d, N, 131, as_malloc(bq), as_malloc(sizeof(float) * (size_t)(N * H)), as_malloc(bq),
                     as_malloc(bk), as_malloc(bk)};
        outputs o = {5, {c.out, c.lse, c.dq, c.dk, c.dv}, {bq, sizeof(float) * (size_t)(N * H), bq, bk, bk}};
        check_paths("train_attention_forward/backward", d, run_attention, &c, &o, true);
        free(q), free(k), free(v), free(dout), free(c.out), free(c.lse), free(c.dq), free(c.dk), free(c.dv);
    }
}

int main(void) {
    for (int i = KERNEL_ISA_SCALAR; i <= KERNEL_ISA_AVX512; i++)
        if (kernel_isa_available((kernel_isa)i)) isas[n_isas++] = (kernel_isa)i;
    printf("paths compared:");
    for (int i = 0; i < n_isas; i++) printf(" %s", kernel_isa_name(isas[i]));
    printf("\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_ops), cmocka_unit_test(test_silu), cmocka_unit_test(test_dropout), cmocka_unit_test(test_logsoftmax),
        cmocka_unit_test(test_glu),     cmocka_unit_test(test_rmsnorm), cmocka_unit_test(test_rope), cmocka_unit_test(test_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
