// The attention kernel (kernel_attention_rows, tensor/attention.h; the AVX-512
// and the generic C code, and the AVX2 code when run with
// ALPHASPIN_KERNEL_ISA=avx2 as ctest's test_attention_avx2 does) against a
// plain double-precision softmax(q K^T / sqrt(d)) V on random data, keys
// stored in the cache's tile layout (attention.h, model.h)
// as fp32 or fp16 (the reference then uses the rounded values),
// for head sizes 8..256, 1..8 heads per KV group, key counts around the tile
// size and long rows.  Bound: max |out - ref| < 1e-5 (values are O(1); fp32
// sums over <= 300 keys give ~1e-7).  Plus the property the Q8 path's batch
// invariance rests on: a row's output is bitwise the same whether it is
// computed alone or with other rows in one call.
//
// The AMX-BF16 code (KERNEL_PRECISION_BF16; head sizes that are multiples of
// 32, CPUs with AMX) against the same reference on the bf16-rounded q, K and
// V: it also rounds the probabilities to bf16 (relative error <= 2^-8), so
// max |out - ref| <= 2^-8 max |v| + fp32 noise (observed: <= 6.2e-4 on
// these data); bound 2e-3.  And it too is
// bitwise row-independent.
#include "test_common.h"

#include <math.h>

#include "tensor/attention_impl.h"
#include "tensor/gemm.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

typedef struct case_data {
    int d, G, n_rows, n_max;
    bool f16;
    int64_t kvd, q_stride, tile_stride, cap;
    float *q, *out, *scores;
    void *k, *v;
    double *ks, *vs; // the same keys and values, row-major (ref)
    int32_t *n_keys;
} case_data;

static void case_init(case_data *c, int d, int G, int n_rows, int n_last, bool f16, as_rng *r) {
    memset(c, 0, sizeof *c);
    c->d = d, c->G = G, c->n_rows = n_rows, c->n_max = n_last, c->f16 = f16;
    // One KV head of 2 in the cache (offset g = 1), so strides are those of a real layer.
    c->kvd = 2 * (int64_t)d;
    c->q_stride = (int64_t)G * d + 5;
    const int64_t n_tiles = (n_last + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE;
    c->tile_stride = KERNEL_KV_TILE * c->kvd;
    c->cap = n_tiles * KERNEL_KV_TILE;
    c->q = as_malloc(sizeof(float) * (size_t)(n_rows * c->q_stride));
    c->k = as_calloc((size_t)(n_tiles * c->tile_stride), sizeof(float));
    c->v = as_calloc((size_t)(n_last * c->kvd), sizeof(float));
    c->out = as_malloc(sizeof(float) * (size_t)(n_rows * c->q_stride));
    c->scores = as_aligned_alloc(sizeof(float) * (size_t)(KERNEL_ATTN_SCORE_ROWS * c->cap));
    c->ks = as_malloc(sizeof(double) * (size_t)(n_last * d));
    c->vs = as_malloc(sizeof(double) * (size_t)(n_last * d));
    c->n_keys = as_malloc(sizeof(int32_t) * (size_t)n_rows);
    for (int64_t i = 0; i < n_rows * c->q_stride; i++) c->q[i] = (float)(2.0 * as_rng_uniform(r) - 1.0);
    for (int j = 0; j < n_last; j++)
        for (int e = 0; e < d; e++) {
            float kk = (float)(2.0 * as_rng_uniform(r) - 1.0), vv = (float)(2.0 * as_rng_uniform(r) - 1.0);
            const int64_t ki = (j / KERNEL_KV_TILE) * c->tile_stride + (d + e) * KERNEL_KV_TILE + j % KERNEL_KV_TILE, vi = (int64_t)j * c->kvd + d + e; // KV head 1
            if (f16) {
                ((as_fp16 *)c->k)[ki] = as_f32_to_fp16(kk), ((as_fp16 *)c->v)[vi] = as_f32_to_fp16(vv);
                kk = as_fp16_to_f32(as_f32_to_fp16(kk)), vv = as_fp16_to_f32(as_f32_to_fp16(vv)); // the reference sees the stored values
            } else {
                ((float *)c->k)[ki] = kk, ((float *)c->v)[vi] = vv;
            }
            c->ks[(int64_t)j * d + e] = kk, c->vs[(int64_t)j * d + e] = vv;
        }
    // Consecutive positions ending at n_last keys, as a block of a prefill.
    for (int i = 0; i < n_rows; i++) c->n_keys[i] = n_last - (n_rows - 1 - i);
}

static void case_free(case_data *c) {
    free(c->q), free(c->k), free(c->v), free(c->out), free(c->scores), free(c->ks), free(c->vs), free(c->n_keys);
}

static kernel_attn_args case_args(const case_data *c, int row0, int n_rows) {
    return (kernel_attn_args){.q = c->q + row0 * c->q_stride, .q_stride = c->q_stride, .n_heads = c->G, .d = c->d, .n_rows = n_rows,
                             .n_keys = c->n_keys + row0, .k = (const uint8_t *)c->k + (int64_t)c->d * KERNEL_KV_TILE * (c->f16 ? 2 : 4),
                             .k_tile_stride = c->tile_stride, .v = (const uint8_t *)c->v + c->d * (c->f16 ? 2 : 4), .v_stride = c->kvd,
                             .f16 = c->f16, .scale = 1.0f / sqrtf((float)c->d),
                             .out = c->out + row0 * c->q_stride, .out_stride = c->q_stride, .scores = c->scores, .scores_stride = c->cap};
}

// The code kernel_attention_rows picks (simd, and always for bf16), or the generic C code.
static void attention_run(const kernel_attn_args *a, bool simd) {
    if (simd || a->bf16) kernel_attention_rows(a);
    else kernel_attention_rows_c(a);
}

static double rnd_bf16(double x, bool bf16) { return bf16 ? as_bf16_to_f32(as_f32_to_bf16((float)x)) : x; }

static double check_against_ref(const case_data *c, bool bf16) {
    double worst = 0, *s = as_malloc(sizeof(double) * (size_t)c->n_max);
    for (int r = 0; r < c->n_rows; r++)
        for (int h = 0; h < c->G; h++) {
            const float *q = c->q + r * c->q_stride + h * c->d;
            const int n = c->n_keys[r];
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                double a = 0;
                for (int e = 0; e < c->d; e++) a += rnd_bf16(q[e], bf16) * rnd_bf16(c->ks[(int64_t)j * c->d + e], bf16);
                s[j] = a / sqrt((double)c->d);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n; j++) sum += s[j] = exp(s[j] - mx);
            for (int e = 0; e < c->d; e++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += s[j] / sum * rnd_bf16(c->vs[(int64_t)j * c->d + e], bf16);
                worst = fmax(worst, fabs(o - c->out[r * c->q_stride + h * c->d + e]));
            }
        }
    free(s);
    return worst;
}

static void test_against_reference(void **state) {
    (void)state;
    static const int ds[] = {8, 16, 64, 80, 256}, Gs[] = {1, 3, 4, 8}, ns[] = {1, 2, 15, 16, 17, 33, 64, 100, 300};
    as_rng r;
    as_rng_seed(&r, 7);
    int n_cases = 0, n_simd = 0, n_avx2 = 0, n_amx = 0;
    for (size_t di = 0; di < AS_ARRAY_LEN(ds); di++)
        for (size_t gi = 0; gi < AS_ARRAY_LEN(Gs); gi++)
            for (size_t ni = 0; ni < AS_ARRAY_LEN(ns); ni++)
                for (int simd = 0; simd < 8; simd++) { // bit 0: SIMD, bit 1: fp16 K/V, bit 2: BF16 (AMX)
                    const bool amx = (simd & 4) && kernel_attention_amx_usable(ds[di]);
                    if ((simd & 4) && !amx) continue;
                    const int rows = AS_MIN(ns[ni], 5);
                    case_data c;
                    case_init(&c, ds[di], Gs[gi], rows, ns[ni], simd & 2, &r);
                    kernel_attn_args a = case_args(&c, 0, rows);
                    a.bf16 = amx;
                    attention_run(&a, simd & 1);
                    const double e = check_against_ref(&c, amx), tol = amx ? 2e-3 : 1e-5;
                    if (e >= tol) printf("d %d, G %d, n %d, simd %d, f16 %d, bf16 %d: max error %.2e\n", ds[di], Gs[gi], ns[ni], simd & 1, (simd >> 1) & 1, amx, e);
                    assert_true(e < tol);
                    n_cases++;
                    n_simd += (simd & 1) && kernel_attention_avx512_usable(ds[di]);
                    n_avx2 += (simd & 1) && !kernel_attention_avx512_usable(ds[di]) && kernel_attention_avx2_usable(ds[di]);
                    n_amx += amx;
                    case_free(&c);
                }
    printf("  %d cases, %d on the AVX-512 code, %d on the AVX2 code, %d on the AMX-BF16 code (0: this CPU lacks it)\n", n_cases, n_simd, n_avx2, n_amx);
}

// Rows computed alone vs all together: identical bits (both codes).
static void test_rows_independent(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 11);
    // Shapes (head size, heads per KV group, rows): the AVX-512 code takes
    // blocks of up to 12 query vectors (rows x heads), so these split a
    // call's rows and heads in different ways, with partial last blocks.
    static const int shapes[][3] = {{64, 3, 16}, {64, 1, 14}, {80, 4, 7}, {256, 8, 5}, {16, 13, 3}};
    for (int si = 0; si < (int)AS_ARRAY_LEN(shapes); si++)
    for (int simd = 0; simd < 8; simd++) { // bits as above
        const int d = shapes[si][0], G = shapes[si][1];
        const bool amx = (simd & 4) && kernel_attention_amx_usable(d);
        if ((simd & 4) && !amx) continue;
        case_data c;
        case_init(&c, d, G, shapes[si][2], 150, simd & 2, &r);
        const int64_t n_out = c.n_rows * c.q_stride;
        kernel_attn_args a = case_args(&c, 0, c.n_rows);
        a.bf16 = amx;
        attention_run(&a, simd & 1);
        float *all = as_malloc(sizeof(float) * (size_t)n_out);
        memcpy(all, c.out, sizeof(float) * (size_t)n_out);
        memset(c.out, 0, sizeof(float) * (size_t)n_out);
        for (int i = 0; i < c.n_rows; i++) {
            a = case_args(&c, i, 1);
            a.bf16 = amx;
            attention_run(&a, simd & 1);
        }
        for (int i = 0; i < c.n_rows; i++) assert_memory_equal(all + i * c.q_stride, c.out + i * c.q_stride, sizeof(float) * G * d);
        free(all);
        case_free(&c);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_rows_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
