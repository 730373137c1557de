// Bitwise reproducibility across instruction sets (README; issue 20 item 2),
// in the spirit of ggml's test-backend-ops: every op of the q8 forward pass
// run under each ISA this CPU has (kernel_force_isa: scalar, avx2, avx512, and
// amx where the CPU and OS offer it; the others are skipped with a message)
// on random inputs of awkward sizes, and its output compared with memcmp to
// the scalar ISA's.  Tolerances have no place here: the same bits or a
// failure.  Then whole models: the logits of tiny llama models
// (../generate/tiny_llama.h) with Q4_0, Q4_1, Q8_0, Q4_K and Q6_K weights at
// precision q8, over a prefill of two sequences and a few batched decoding
// steps, must be byte-identical under every ISA.
//
// Ops: activation quantisation (Q8_1 blocks and the AVX-512 group layout,
// Q8_K); the Q8 matmul of each weight type through kernel_matmul (row and
// tile kernels, 1 and 2 threads, token counts around every kernel's
// thresholds), and the F32 one of every type (float rows of any length);
// weight rows (kernel_get_row); RoPE; RMSNorm; SiLU/GELU GLU; attention
// (head sizes 8..256, fp32 and fp16 caches, several query rows and key
// counts around the tile size, whole softmax included).  The sampler's
// check is test_sampler's test_isa_invariant.
//
// Models with F32 weights take the F32 matmul even at q8 (kernels.h), and
// precision f32 takes it for every weight type: a Q4_1 and an F32 model are
// also run at f32 (the F32 path's kernel_sgemm, sgemm.c, has one summation
// order per element on every ISA; the fp32 KV cache instead of fp16).
#include "test_common.h"

#include <math.h>

#include "../generate/tiny_llama.h"
#include "model/model.h"
#include "tensor/attention.h"
#include "tensor/kernels_impl.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/rope.h"
#include "tensor/tuner.h"
#include "util/common.h"
#include "util/rng.h"

// ---- the ISAs to compare ----

static int g_isas[KERNEL_ISA_COUNT], g_n_isas;

static void isas_init(void) {
    static bool done;
    if (done) return;
    done = true;
    for (int i = KERNEL_ISA_SCALAR; i < KERNEL_ISA_COUNT; i++) {
        if (kernel_isa_available((kernel_isa)i)) g_isas[g_n_isas++] = i;
        else fprintf(stderr, "  ISA %s: not on this CPU (or not granted by the OS), skipped\n", kernel_isa_name((kernel_isa)i));
    }
}

static double rng_normal(as_rng *r) {
    const double u1 = as_rng_uniform(r), u2 = as_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

static void fill_normal(float *x, int64_t n, double scale, as_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(rng_normal(r) * scale);
}

// out (bytes) of ISA isa must equal ref (the first ISA's); what says where.
static void expect_same(const void *ref, const void *out, size_t bytes, int isa, const char *what) {
    if (memcmp(ref, out, bytes) == 0) return;
    const float *a = ref, *b = out;
    size_t i = 0;
    while (i + 1 < bytes / sizeof(float) && memcmp(a + i, b + i, sizeof(float)) == 0) i++;
    fail_msg("%s: ISA %s differs from ISA %s (first at float %zu: %.9g vs %.9g)", what, kernel_isa_name((kernel_isa)isa),
             kernel_isa_name((kernel_isa)g_isas[0]), i, (double)a[i], (double)b[i]);
}

// ---- activation quantisation ----

static void test_quantize(void **state) {
    (void)state;
    isas_init();
    as_rng r;
    as_rng_seed(&r, 3);
    static const int64_t blocks[] = {1, 2, 3, 4, 5, 7, 17, 18};
    enum { MAXB = 18 };
    static float x[MAXB * 32];
    for (size_t bi = 0; bi < AS_ARRAY_LEN(blocks); bi++)
        for (int scale = 0; scale < 3; scale++) {
            const int64_t nb = blocks[bi], n = 32 * nb;
            fill_normal(x, n, scale == 0 ? 1e-3 : scale == 1 ? 1.0 : 300.0, &r);
            if (nb > 2) memset(x + 32, 0, 32 * sizeof(float)); // a block with d = 0
            block_q8_1_f32 ref[MAXB], b[MAXB];
            kernel_quantize_q8_1_scalar(x, ref, n);
            if (kernel_isa_available(KERNEL_ISA_AVX2)) { // the avx2 ISA's quantiser (blocks, then their code sums)
                block_q8_1_f32 *row = calloc(1, kernel_act_row_size(GGML_TYPE_Q4_1, n));
                kernel_quantize_act_avx2(GGML_TYPE_Q4_1, x, row, n);
                expect_same(ref, row, sizeof(block_q8_1_f32) * (size_t)nb, KERNEL_ISA_AVX2, "Q8_1 quantisation");
                free(row);
            }
            if (kernel_isa_available(KERNEL_ISA_AVX512)) {
                memset(b, 0, sizeof b);
                kernel_quantize_q8_1_avx512(x, b, n);
                expect_same(ref, b, sizeof(block_q8_1_f32) * (size_t)nb, KERNEL_ISA_AVX512, "Q8_1 quantisation");
                // The avx512 ISA's layout: groups of 4 blocks, halves and scales apart.
                struct { int8_t lo[4][16], hi[4][16]; float d[4], s[4]; } g[(MAXB + 3) / 4 * 2]; // (room for kernel_act_row_size)
                assert_true(sizeof g >= kernel_act_row_size(GGML_TYPE_Q4_1, n));
                kernel_ops_avx512.quantize_act(GGML_TYPE_Q4_1, x, g, n);
                for (int64_t k = 0; k < nb; k++) {
                    block_q8_1_f32 o = {.d = g[k / 4].d[k % 4], .s = g[k / 4].s[k % 4]};
                    memcpy(o.qs, g[k / 4].lo[k % 4], 16);
                    memcpy(o.qs + 16, g[k / 4].hi[k % 4], 16);
                    expect_same(&ref[k], &o, sizeof o, KERNEL_ISA_AVX512, "Q8_1 quantisation (group layout)");
                }
            }
        }
    // Q8_K (Q4_K / Q6_K activations): each ISA's quantize_act.
    static float xk[3 * 256];
    for (int scale = 0; scale < 3; scale++) {
        fill_normal(xk, 3 * 256, scale == 0 ? 1e-3 : scale == 1 ? 1.0 : 300.0, &r);
        block_q8_K ref[3], b[3];
        for (int i = 0; i < g_n_isas; i++) {
            const kernel_ops *ops = g_isas[i] == KERNEL_ISA_SCALAR ? &kernel_ops_scalar
                                  : g_isas[i] == KERNEL_ISA_AVX2   ? &kernel_ops_avx2
                                  : g_isas[i] == KERNEL_ISA_AVX512 ? &kernel_ops_avx512
                                                                   : &kernel_ops_amx;
            memset(b, 0, sizeof b);
            ops->quantize_act(GGML_TYPE_Q4_K, xk, b, 3 * 256);
            if (i == 0) memcpy(ref, b, sizeof b);
            else expect_same(ref, b, sizeof b, g_isas[i], "Q8_K quantisation");
        }
    }
}

// ---- Q8 matmul of every weight type ----

static void make_weights(as_matrix *m, void **data, ggml_type t, int64_t rows, int64_t cols, as_rng *r) {
    memset(m, 0, sizeof *m);
    m->type = t, m->rows = rows, m->cols = cols, m->row_bytes = quant_row_size(t, cols);
    *data = malloc(m->row_bytes * (size_t)rows);
    float *row = malloc(sizeof(float) * (size_t)cols);
    for (int64_t i = 0; i < rows; i++) {
        fill_normal(row, cols, 0.05 * (1 + i % 5), r);
        quant_quantize_row(t, row, (uint8_t *)*data + (size_t)i * m->row_bytes, cols);
    }
    m->data = *data;
    free(row);
}

// Both precisions: q8 for the types with an 8-bit path, f32 for all (the
// F32 path's dot products of 1-4 tokens, kernel_sgemm tiles above).
static void matmul_all_isas(kernel_precision prec, const ggml_type *types, size_t n_types, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    static const int64_t rows_list[] = {1, 15, 17, 33};
    static const int64_t cols32[] = {32, 96, 160, 224, 576}, colsK[] = {256, 768}, colsF[] = {1, 15, 17, 33, 48, 100, 576};
    static const int64_t tokens[] = {1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 100};
    const int64_t max_t = 100, max_c = 768, ldo = 40;
    float *x = malloc(sizeof(float) * (size_t)(max_t * max_c));
    float *ref = malloc(sizeof(float) * (size_t)(max_t * ldo)), *out = malloc(sizeof(float) * (size_t)(max_t * ldo));
    fill_normal(x, max_t * max_c, 1.0, &r);
    for (int64_t i = 0; i < max_t * max_c; i += 97) x[i] *= 40.0f; // outliers: blocks of very different scales
    int n_cases = 0;
    for (size_t ti = 0; ti < n_types; ti++) {
        const bool k = types[ti] == GGML_TYPE_Q4_K || types[ti] == GGML_TYPE_Q6_K;
        const bool f = types[ti] == GGML_TYPE_F32 || types[ti] == GGML_TYPE_F16 || types[ti] == GGML_TYPE_BF16;
        const int64_t *cl = k ? colsK : f ? colsF : cols32;
        const size_t ncl = k ? AS_ARRAY_LEN(colsK) : f ? AS_ARRAY_LEN(colsF) : AS_ARRAY_LEN(cols32);
        for (size_t ci = 0; ci < ncl; ci++)
            for (size_t ri = 0; ri < AS_ARRAY_LEN(rows_list); ri++) {
                as_matrix m;
                void *data;
                make_weights(&m, &data, types[ti], rows_list[ri], cl[ci], &r);
                for (size_t ni = 0; ni < AS_ARRAY_LEN(tokens); ni++)
                    for (int nth = 1; nth <= 2; nth++) {
                        const int64_t nt = tokens[ni];
                        kernel_set_threads(nth);
                        for (int i = 0; i < g_n_isas; i++) {
                            assert_int_equal(kernel_force_isa((kernel_isa)g_isas[i]), AS_OK);
                            float *o = i == 0 ? ref : out;
                            for (int64_t j = 0; j < nt * ldo; j++) o[j] = NAN;
                            kernel_matmul(o, ldo, x, nt, &m, prec);
                            if (i == 0) continue;
                            for (int64_t t = 0; t < nt; t++) {
                                char what[160];
                                snprintf(what, sizeof what, "%s matmul %s %lldx%lld, %lld tokens, %d threads, token %lld", kernel_precision_name(prec), ggml_type_name(types[ti]),
                                         (long long)m.rows, (long long)m.cols, (long long)nt, nth, (long long)t);
                                expect_same(ref + t * ldo, out + t * ldo, sizeof(float) * (size_t)m.rows, g_isas[i], what);
                            }
                        }
                        n_cases++;
                    }
                free(data);
            }
    }
    kernel_set_threads(0);
    kernel_force_isa(KERNEL_ISA_AUTO);
    fprintf(stderr, "  %d %s matmul cases on %d ISAs\n", n_cases, kernel_precision_name(prec), g_n_isas);
    free(x), free(ref), free(out);
}

static void test_matmul_q8(void **state) {
    (void)state;
    isas_init();
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    matmul_all_isas(KERNEL_PRECISION_Q8, types, AS_ARRAY_LEN(types), 5);
}

static void test_matmul_f32(void **state) {
    (void)state;
    isas_init();
    static const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    matmul_all_isas(KERNEL_PRECISION_F32, types, AS_ARRAY_LEN(types), 6);
}

// ---- weight rows (embedding lookup: dequantisation) ----

static void test_get_row(void **state) {
    (void)state;
    isas_init();
    as_rng r;
    as_rng_seed(&r, 9);
    static const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                                      GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++) {
        const bool k = types[ti] == GGML_TYPE_Q4_K || types[ti] == GGML_TYPE_Q6_K;
        const int64_t cols = k ? 512 : 160;
        as_matrix m;
        void *data;
        make_weights(&m, &data, types[ti], 5, cols, &r);
        float ref[512], out[512];
        for (int64_t row = 0; row < m.rows; row++)
            for (int i = 0; i < g_n_isas; i++) {
                assert_int_equal(kernel_force_isa((kernel_isa)g_isas[i]), AS_OK);
                kernel_get_row(&m, row, i == 0 ? ref : out);
                if (i) expect_same(ref, out, sizeof(float) * (size_t)cols, g_isas[i], ggml_type_name(types[ti]));
            }
        free(data);
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

// ---- RoPE ----

static void test_rope(void **state) {
    (void)state;
    isas_init();
    as_rng r;
    as_rng_seed(&r, 13);
    static const int shapes[][3] = {{64, 64, 3}, {128, 128, 2}, {80, 80, 5}, {80, 32, 2}, {24, 16, 3}, {256, 256, 1}}; // d, n_rot, heads
    for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++) {
        const int d = shapes[si][0], n_rot = shapes[si][1], H = shapes[si][2], half = n_rot / 2;
        float x[256 * 5], ref[256 * 5], out[256 * 5], cs[128], sn[128];
        fill_normal(x, (int64_t)d * H, 1.0, &r);
        for (int i = 0; i < half; i++) {
            const double a = 1234.0 * pow(10000.0, -2.0 * i / n_rot);
            cs[i] = (float)cos(a), sn[i] = (float)sin(a);
        }
        for (int neox = 0; neox < 2; neox++)
            for (int i = 0; i < g_n_isas; i++) {
                assert_int_equal(kernel_force_isa((kernel_isa)g_isas[i]), AS_OK);
                float *o = i == 0 ? ref : out;
                memcpy(o, x, sizeof(float) * (size_t)(d * H));
                kernel_rope(o, H, d, n_rot, neox, cs, sn, 1.0f);
                if (i) expect_same(ref, out, sizeof(float) * (size_t)(d * H), g_isas[i], neox ? "RoPE (neox)" : "RoPE");
            }
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

// ---- RMSNorm and the GLU ----

static void test_rmsnorm_glu(void **state) {
    (void)state;
    isas_init();
    as_rng r;
    as_rng_seed(&r, 17);
    static const int64_t sizes[] = {1, 2, 7, 8, 15, 16, 17, 31, 33, 64, 100, 576, 1000, 1537};
    enum { MAXN = 1537 };
    static float x[MAXN], w[MAXN], u[MAXN], ref[3][MAXN], out[MAXN];
    for (size_t si = 0; si < AS_ARRAY_LEN(sizes); si++) {
        const int64_t n = sizes[si];
        fill_normal(x, n, 3.0, &r);
        fill_normal(w, n, 0.1, &r);
        fill_normal(u, n, 1.0, &r);
        for (int64_t i = 0; i < n; i++) w[i] += 1.0f; // Gemma's 1 + w, or Llama's norm weights
        if (n > 20) x[3] = 95.0f, x[5] = -95.0f, x[7] = 0.0f, x[9] = -0.0f, x[11] = 1e-20f; // exp's clamps, zeros
        for (int i = 0; i < g_n_isas; i++) {
            assert_int_equal(kernel_force_isa((kernel_isa)g_isas[i]), AS_OK);
            for (int op = 0; op < 3; op++) { // RMSNorm, SiLU GLU, GELU GLU
                float *o = i == 0 ? ref[op] : out;
                if (op == 0) kernel_rmsnorm(o, x, w, n, 1e-6f);
                else kernel_glu(o, x, u, n, op == 2);
                char what[64];
                snprintf(what, sizeof what, "%s of %lld", op == 0 ? "RMSNorm" : op == 1 ? "SiLU GLU" : "GELU GLU", (long long)n);
                if (i) expect_same(ref[op], out, sizeof(float) * (size_t)n, g_isas[i], what);
            }
        }
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

// ---- attention ----

typedef struct attn_case {
    int d, G, n_rows;
    bool f16;
    int64_t kvd, q_stride, tile_stride, cap;
    float *q, *scores;
    void *k, *v;
    int32_t *n_keys;
} attn_case;

// Keys and values of KV head 1 of 2 (real strides), rows at consecutive positions ending at n_last keys.
static void attn_init(attn_case *c, int d, int G, int n_rows, int n_last, bool f16, as_rng *r) {
    memset(c, 0, sizeof *c);
    c->d = d, c->G = G, c->n_rows = n_rows, c->f16 = f16;
    c->kvd = 2 * (int64_t)d, c->q_stride = (int64_t)G * d + 3, c->tile_stride = KV_TILE * c->kvd;
    const int64_t n_tiles = (n_last + KV_TILE - 1) / KV_TILE, eb = f16 ? 2 : 4;
    c->cap = n_tiles * KV_TILE;
    c->q = malloc(sizeof(float) * (size_t)(n_rows * c->q_stride));
    c->k = calloc((size_t)(n_tiles * c->tile_stride), (size_t)eb);
    c->v = calloc((size_t)(n_last * c->kvd), (size_t)eb);
    c->scores = as_aligned_alloc(sizeof(float) * (size_t)(KERNEL_ATTN_SCORE_ROWS * c->cap));
    c->n_keys = malloc(sizeof(int32_t) * (size_t)n_rows);
    fill_normal(c->q, n_rows * c->q_stride, 1.5, r);
    for (int j = 0; j < n_last; j++)
        for (int e = 0; e < d; e++) {
            const float kk = (float)(1.5 * rng_normal(r)), vv = (float)rng_normal(r);
            const int64_t ki = (j / KV_TILE) * c->tile_stride + (d + e) * KV_TILE + j % KV_TILE, vi = (int64_t)j * c->kvd + d + e;
            if (f16) ((as_fp16 *)c->k)[ki] = as_f32_to_fp16(kk), ((as_fp16 *)c->v)[vi] = as_f32_to_fp16(vv);
            else ((float *)c->k)[ki] = kk, ((float *)c->v)[vi] = vv;
        }
    for (int i = 0; i < n_rows; i++) c->n_keys[i] = n_last - (n_rows - 1 - i);
}

static void attn_free(attn_case *c) { free(c->q), free(c->k), free(c->v), free(c->scores), free(c->n_keys); }

static void attn_run(const attn_case *c, float *out) {
    const int64_t eb = c->f16 ? 2 : 4;
    const kernel_attn_args a = {.q = c->q, .q_stride = c->q_stride, .n_heads = c->G, .d = c->d, .n_rows = c->n_rows, .n_keys = c->n_keys,
                               .k = (const uint8_t *)c->k + (int64_t)c->d * KV_TILE * eb, .k_tile_stride = c->tile_stride,
                               .v = (const uint8_t *)c->v + c->d * eb, .v_stride = c->kvd, .f16 = c->f16, .scale = 1.0f / sqrtf((float)c->d),
                               .out = out, .out_stride = c->q_stride, .scores = c->scores, .scores_stride = c->cap};
    kernel_attention_rows(&a);
}

static void test_attention(void **state) {
    (void)state;
    isas_init();
    as_rng r;
    as_rng_seed(&r, 23);
    static const int ds[] = {8, 16, 64, 80, 128, 256}, Gs[] = {1, 3, 4}, rows[] = {1, 5, 16};
    static const int ns[] = {1, 2, 15, 16, 17, 33, 100, 300};
    int n_cases = 0;
    for (size_t di = 0; di < AS_ARRAY_LEN(ds); di++)
        for (size_t gi = 0; gi < AS_ARRAY_LEN(Gs); gi++)
            for (size_t ri = 0; ri < AS_ARRAY_LEN(rows); ri++)
                for (size_t ni = 0; ni < AS_ARRAY_LEN(ns); ni++)
                    for (int f16 = 0; f16 < 2; f16++) {
                        const int nr = AS_MIN(rows[ri], ns[ni]);
                        attn_case c;
                        attn_init(&c, ds[di], Gs[gi], nr, ns[ni], f16, &r);
                        const size_t bytes = sizeof(float) * (size_t)(nr * c.q_stride);
                        float *ref = calloc(1, bytes), *out = calloc(1, bytes);
                        for (int i = 0; i < g_n_isas; i++) {
                            assert_int_equal(kernel_force_isa((kernel_isa)g_isas[i]), AS_OK);
                            attn_run(&c, i == 0 ? ref : out);
                            char what[128];
                            snprintf(what, sizeof what, "attention d %d, %d heads, %d rows, %d keys, %s", ds[di], Gs[gi], nr, ns[ni], f16 ? "fp16" : "fp32");
                            if (i) expect_same(ref, out, bytes, g_isas[i], what);
                        }
                        n_cases++;
                        free(ref), free(out);
                        attn_free(&c);
                    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    fprintf(stderr, "  %d attention cases on %d ISAs\n", n_cases, g_n_isas);
}

// ---- whole models ----

static int32_t argmax(const float *l, int n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

// Logits of a prefill of two sequences (19 and 23 tokens in one batch) and
// 6 decoding steps of both, all rows, under the current ISA and precision
// prec, into logits (n_out x V floats; returns n_out).
static int64_t model_run(const char *path, kernel_precision prec, float *logits, int *V) {
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    *V = m->cfg.n_vocab;
    kv_cache *kv = kv_cache_init(&m->cfg, 2, 64, prec);
    enum { P0 = 19, P1 = 23, STEPS = 6 };
    int32_t tok[P0 + P1], seq[P0 + P1], pos[P0 + P1];
    as_rng r;
    as_rng_seed(&r, 31);
    for (int i = 0; i < P0 + P1; i++) {
        tok[i] = (int32_t)as_rng_below(&r, (uint64_t)*V);
        seq[i] = i < P0 ? 0 : 1, pos[i] = i < P0 ? i : i - P0;
    }
    model_batch b = {P0 + P1, tok, seq, pos, NULL};
    if (model_forward(m, kv, &b, logits)) fail_msg("%s", as_last_error());
    int64_t n_out = P0 + P1;
    for (int s = 0; s < STEPS; s++) {
        const float *last0 = logits + (n_out - (s == 0 ? P1 + 1 : 2)) * *V, *last1 = logits + (n_out - 1) * *V;
        int32_t t2[2] = {argmax(last0, *V), argmax(last1, *V)}, q2[2] = {0, 1}, p2[2] = {P0 + s, P1 + s};
        model_batch d = {2, t2, q2, p2, NULL};
        if (model_forward(m, kv, &d, logits + n_out * *V)) fail_msg("%s", as_last_error());
        n_out += 2;
    }
    kv_cache_free(kv);
    model_free(m);
    return n_out;
}

typedef struct model_case {
    const char *name;
    ggml_type wtype;
    int n_embd, n_head, n_head_kv, n_ff;
    kernel_precision prec;
} model_case;

// Writes the tiny llama of case mc to dir/tiny_<tag>.gguf (path, n bytes) and
// returns room for model_run's logits; *n_floats is its size.
static float *case_model(const model_case *mc, const char *dir, const char *tag, char *path, size_t n, size_t *n_floats) {
    snprintf(path, n, "%s/tiny_%s.gguf", dir, tag);
    tiny_llama_cfg cfg = tiny_llama_default();
    cfg.wtype = mc->wtype, cfg.n_embd = mc->n_embd, cfg.n_head = mc->n_head, cfg.n_head_kv = mc->n_head_kv, cfg.n_ff = mc->n_ff;
    int V;
    if (tiny_llama_write(path, &cfg, &V)) fail_msg("%s", as_last_error());
    *n_floats = (size_t)(19 + 23 + 12) * (size_t)V;
    return malloc(sizeof(float) * *n_floats);
}

static void test_model_logits(void **state) {
    (void)state;
    isas_init();
    static const model_case cases[] = {
        {"Q4_1, head size 16, q8", GGML_TYPE_Q4_1, 64, 4, 2, 96, KERNEL_PRECISION_Q8},
        {"Q4_1, head size 80, 5-block rows, q8", GGML_TYPE_Q4_1, 160, 2, 1, 224, KERNEL_PRECISION_Q8},
        {"Q4_0, head size 32, q8", GGML_TYPE_Q4_0, 96, 3, 1, 160, KERNEL_PRECISION_Q8},
        {"Q8_0, head size 16, q8", GGML_TYPE_Q8_0, 64, 4, 2, 96, KERNEL_PRECISION_Q8},
        {"Q4_K, head size 64, q8", GGML_TYPE_Q4_K, 256, 4, 2, 512, KERNEL_PRECISION_Q8},
        {"Q6_K, head size 128, q8", GGML_TYPE_Q6_K, 256, 2, 1, 256, KERNEL_PRECISION_Q8},
        {"F32, head size 16, q8 (the F32 matmul)", GGML_TYPE_F32, 64, 4, 2, 96, KERNEL_PRECISION_Q8},
        {"F32, head size 80, f32", GGML_TYPE_F32, 160, 2, 1, 224, KERNEL_PRECISION_F32},
        {"Q4_1, head size 16, f32", GGML_TYPE_Q4_1, 64, 4, 2, 96, KERNEL_PRECISION_F32},
    };
    char *dir = as_test_tmpdir();
    assert_non_null(dir);
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cases); ci++) {
        const model_case *mc = &cases[ci];
        char path[512], tag[32];
        snprintf(tag, sizeof tag, "%zu", ci);
        size_t n_floats;
        float *ref = case_model(mc, dir, tag, path, sizeof path, &n_floats), *out = malloc(sizeof(float) * n_floats);
        int64_t n_ref = 0;
        for (int i = 0; i < g_n_isas; i++) {
            assert_int_equal(kernel_force_isa((kernel_isa)g_isas[i]), AS_OK);
            int Vr;
            const int64_t n = model_run(path, mc->prec, i == 0 ? ref : out, &Vr);
            if (i == 0) {
                n_ref = n;
                continue;
            }
            assert_int_equal(n, n_ref);
            char what[128];
            snprintf(what, sizeof what, "logits of the tiny model (%s)", mc->name);
            expect_same(ref, out, sizeof(float) * (size_t)(n * Vr), g_isas[i], what);
        }
        fprintf(stderr, "  %s: %lld rows of logits byte-identical on %d ISAs\n", mc->name, (long long)n_ref, g_n_isas);
        free(ref), free(out);
        unlink(path);
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    rmdir(dir);
}

// The same logits at any thread count, and with the thread tuner switching
// between all and half of the threads on every step (tensor/tuner.h relies on
// this): 1, 2, 3 threads and the tuner's alternate mode against 2 threads.
static void test_model_threads(void **state) {
    (void)state;
    static const model_case cases[] = {
        {"Q4_1, head size 16, q8", GGML_TYPE_Q4_1, 64, 4, 2, 96, KERNEL_PRECISION_Q8},
        {"Q4_K, head size 64, q8", GGML_TYPE_Q4_K, 256, 4, 2, 512, KERNEL_PRECISION_Q8},
        {"F32, head size 80, f32", GGML_TYPE_F32, 160, 2, 1, 224, KERNEL_PRECISION_F32},
        {"Q4_1, head size 16, f32", GGML_TYPE_Q4_1, 64, 4, 2, 96, KERNEL_PRECISION_F32},
        {"Q4_1, head size 64, bf16", GGML_TYPE_Q4_1, 256, 4, 1, 256, KERNEL_PRECISION_BF16},
    };
    char *dir = as_test_tmpdir();
    assert_non_null(dir);
    kernel_force_isa(KERNEL_ISA_AUTO);
    for (size_t ci = 0; ci < AS_ARRAY_LEN(cases); ci++) {
        const model_case *mc = &cases[ci];
        char path[512], tag[32];
        snprintf(tag, sizeof tag, "t%zu", ci);
        size_t n_floats;
        float *ref = case_model(mc, dir, tag, path, sizeof path, &n_floats), *out = malloc(sizeof(float) * n_floats);
        tuner_reset("0");
        kernel_set_threads(2);
        int Vr;
        const int64_t n_ref = model_run(path, mc->prec, ref, &Vr);
        static const struct { int threads; const char *tuner; } runs[] = {{1, "0"}, {3, "0"}, {2, "alternate"}};
        for (size_t k = 0; k < AS_ARRAY_LEN(runs); k++) {
            tuner_reset(runs[k].tuner);
            kernel_set_threads(runs[k].threads);
            assert_int_equal(model_run(path, mc->prec, out, &Vr), n_ref);
            if (memcmp(ref, out, sizeof(float) * (size_t)(n_ref * Vr)))
                fail_msg("%s: logits with %d threads (tuner %s) differ from 2 threads'", mc->name, runs[k].threads, runs[k].tuner);
        }
        fprintf(stderr, "  %s: logits byte-identical at 1, 2, 3 threads and with the tuner alternating\n", mc->name);
        free(ref), free(out);
        unlink(path);
    }
    tuner_reset(NULL);
    kernel_set_threads(0);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_matmul_q8),
        cmocka_unit_test(test_matmul_f32),
        cmocka_unit_test(test_get_row),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_rmsnorm_glu),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_model_logits),
        cmocka_unit_test(test_model_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
