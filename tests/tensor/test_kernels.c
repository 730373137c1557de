// Every ISA variant of every kernel against a plain double-precision reference
// on random data with odd shapes.
//
// Reference for the F32 path: out[t,r] = sum_c x[t,c] * W[r,c] in double, with
// W dequantised by quant_dequantize_row (itself checked bit-exact against
// gguf-py in test_quant).  Bound: ||out - ref|| / ||ref|| < 1e-5 (fp32
// accumulation over <= 768 terms gives ~1e-7..1e-6).
//
// The Q8 path is checked twice:
//  - exactly what it computes: the same double sum with the activations
//    replaced by their 8-bit codes (d*q, scalar quantiser), bound 1e-5; this
//    catches any slip in the integer kernels, which a loose bound would hide.
//  - its documented accuracy against the fp32 result: 8-bit activations add
//    a relative error of about 1/(127*sqrt(3)) per value, ~0.5% of the output
//    scale ||x|| ||w|| / sqrt(cols) on these random data; bound 2e-2.
// and a token's Q8 outputs must not depend on the other tokens in the call.
//
// The BF16 path likewise: exactly (the double sum of the bf16-rounded
// operands, bound 1e-5: only the fp32 accumulation differs), its accuracy
// against fp32 (two roundings of 2^-9 per product: ~0.3% of the output
// scale, bound 1e-2), with and without a packed copy, and on AMX a token's
// outputs bitwise the same alone as in any batch.
#include "test_common.h"

#include <math.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/quant.h"
#include "tensor/rope.h"
#include "util/common.h"
#include "util/rng.h"

static double rng_normal(as_rng *r) {
    double u1 = as_rng_uniform(r), u2 = as_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

static const ggml_type all_types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                                      GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
static const int64_t token_counts[] = {1, 2, 3, 7, 33, 100};

static bool is_k(ggml_type t) { return t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q6_K; }
static bool is_float(ggml_type t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

typedef struct test_matrix {
    as_matrix m;
    void *data;
    float *deq; // [rows, cols] reference dequantisation
} test_matrix;

static void make_matrix(test_matrix *tm, ggml_type type, int64_t rows, int64_t cols, as_rng *rng) {
    memset(&tm->m, 0, sizeof tm->m); // no packed copy (kernel_pack)
    tm->m.type = type;
    tm->m.rows = rows;
    tm->m.cols = cols;
    tm->m.row_bytes = quant_row_size(type, cols);
    assert_true(tm->m.row_bytes > 0);
    tm->data = malloc(tm->m.row_bytes * rows);
    tm->deq = malloc(sizeof(float) * rows * cols);
    float *row = malloc(sizeof(float) * cols);
    for (int64_t r = 0; r < rows; r++) {
        const double scale = 0.05 * (1 + (r % 7)); // rows of different magnitude
        for (int64_t c = 0; c < cols; c++) row[c] = (float)(rng_normal(rng) * scale);
        quant_quantize_row(type, row, (uint8_t *)tm->data + r * tm->m.row_bytes, cols);
        // Q8_0 codes reach -128 in files from other quantisers (ggml's give
        // -127..127): the one code whose magnitude fills a whole byte, where
        // the kernels' sign trick (|w| unsigned, a with w's sign) must hold.
        if (type == GGML_TYPE_Q8_0 && r % 3 == 0) {
            block_q8_0 *b = (block_q8_0 *)((uint8_t *)tm->data + r * tm->m.row_bytes);
            for (int64_t c = r % 5; c < cols; c += 5) b[c / 32].qs[c % 32] = -128;
        }
        quant_dequantize_row(type, (uint8_t *)tm->data + r * tm->m.row_bytes, tm->deq + r * cols, cols);
    }
    tm->m.data = tm->data;
    free(row);
}

static void free_matrix(test_matrix *tm) {
    free(tm->data);
    free(tm->deq);
}

static void reference(double *ref, const float *x, int64_t n_tokens, const test_matrix *tm) {
    const int64_t rows = tm->m.rows, cols = tm->m.cols;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t c = 0; c < cols; c++) s += (double)x[t * cols + c] * tm->deq[r * cols + c];
            ref[t * rows + r] = s;
        }
}

// out[t,r] = sum_c bf16(x[t,c]) bf16(W[r,c]) in double: what the BF16 path computes.
static void reference_bf16(double *ref, const float *x, int64_t n_tokens, const test_matrix *tm) {
    const int64_t rows = tm->m.rows, cols = tm->m.cols;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t c = 0; c < cols; c++)
                s += (double)as_bf16_to_f32(as_f32_to_bf16(x[t * cols + c])) * as_bf16_to_f32(as_f32_to_bf16(tm->deq[r * cols + c]));
            ref[t * rows + r] = s;
        }
}

// Activations as the Q8 path sees them: each token's row through the scalar
// 8-bit quantiser, decoded back to d*q.
static void q8_activations(float *xq, const float *x, int64_t n_tokens, int64_t cols, ggml_type wtype) {
    void *buf = malloc(kernel_act_row_size(wtype, cols));
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *src = x + t * cols;
        float *dst = xq + t * cols;
        if (is_k(wtype)) {
            kernel_quantize_q8_K_scalar(src, buf, cols);
            const block_q8_K *b = buf;
            for (int64_t c = 0; c < cols; c++) dst[c] = b[c / QK_K].d * b[c / QK_K].qs[c % QK_K];
        } else {
            kernel_quantize_q8_1_scalar(src, buf, cols);
            const block_q8_1_f32 *b = buf;
            for (int64_t c = 0; c < cols; c++) dst[c] = b[c / 32].d * b[c / 32].qs[c % 32];
        }
    }
    free(buf);
}

// ||out - ref|| / ||ref|| over the [n_tokens, rows] block of out (row stride ldo).
static double rel_error(const float *out, int64_t ldo, const double *ref, int64_t n_tokens, int64_t rows) {
    double se = 0, sr = 0;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t r = 0; r < rows; r++) {
            double e = out[t * ldo + r] - ref[t * rows + r];
            se += e * e;
            sr += ref[t * rows + r] * ref[t * rows + r];
        }
    return sqrt(se / (sr > 0 ? sr : 1));
}

// The same error measured against the size outputs have before cancellation:
// for independent x and w, E[out^2] = ||x||^2 ||w||^2 / cols.  A single
// output that happens to sum to nearly zero does not inflate this measure.
static double scaled_error(const float *out, int64_t ldo, const double *ref, int64_t n_tokens, const float *x, const test_matrix *tm) {
    const int64_t rows = tm->m.rows, cols = tm->m.cols;
    double se = 0, scale = 0;
    for (int64_t t = 0; t < n_tokens; t++) {
        double xx = 0;
        for (int64_t c = 0; c < cols; c++) xx += (double)x[t * cols + c] * x[t * cols + c];
        for (int64_t r = 0; r < rows; r++) {
            double ww = 0;
            for (int64_t c = 0; c < cols; c++) ww += (double)tm->deq[r * cols + c] * tm->deq[r * cols + c];
            const double e = out[t * ldo + r] - ref[t * rows + r];
            se += e * e;
            scale += xx * ww / (double)cols;
        }
    }
    return sqrt(se / (scale > 0 ? scale : 1));
}

// The BF16 path on one ISA: exact and accurate (see the top), packed or not,
// and batch invariant (on AMX and without it).
static void check_bf16(const float *x, int64_t nt, test_matrix *tm, const double *ref, const double *ref_b, float *out, int64_t ldo,
                       float *single, int isa, double *worst_bx, double *worst_b) {
    const int64_t rows = tm->m.rows;
    kernel_bf16_packed P;
    kernel_bf16_pack_matrix(&P, &tm->m);
    for (int packed = 0; packed < 2; packed++) {
        tm->m.bf16 = packed ? &P : NULL;
        for (int64_t i = 0; i < nt * ldo; i++) out[i] = NAN;
        kernel_matmul(out, ldo, x, nt, &tm->m, KERNEL_PRECISION_BF16);
        for (int64_t t = 0; t < nt; t++)
            for (int64_t r = rows; r < ldo; r++) assert_true(isnan(out[t * ldo + r]));
        const double ex = rel_error(out, ldo, ref_b, nt, rows), e = scaled_error(out, ldo, ref, nt, x, tm);
        if (!(ex < 1e-5)) fail_msg("%s BF16 %s %lldx%lld tokens %lld: error vs bf16 operands %.3g", kernel_isa_name(isa), ggml_type_name(tm->m.type), (long long)rows, (long long)tm->m.cols, (long long)nt, ex);
        if (!(e < 1e-2)) fail_msg("%s BF16 %s %lldx%lld tokens %lld: error vs fp32 %.3g", kernel_isa_name(isa), ggml_type_name(tm->m.type), (long long)rows, (long long)tm->m.cols, (long long)nt, e);
        *worst_bx = AS_MAX(*worst_bx, ex), *worst_b = AS_MAX(*worst_b, e);
        for (int64_t t = 0; t < nt; t += AS_MAX(1, nt - 1)) {
            kernel_matmul(single, rows, x + t * tm->m.cols, 1, &tm->m, KERNEL_PRECISION_BF16);
            if (memcmp(single, out + t * ldo, sizeof(float) * rows) != 0)
                fail_msg("%s BF16 %s: token %lld of %lld differs from the same token alone", kernel_isa_name(isa), ggml_type_name(tm->m.type), (long long)t, (long long)nt);
        }
    }
    tm->m.bf16 = NULL;
    kernel_bf16_packed_free(&P);
}

static void check_shape(ggml_type type, int64_t rows, int64_t cols, as_rng *rng, double *worst_f32, double *worst_q8x, double *worst_q8,
                        double *worst_bx, double *worst_b) {
    test_matrix tm;
    make_matrix(&tm, type, rows, cols, rng);
    const int64_t max_tok = token_counts[AS_ARRAY_LEN(token_counts) - 1];
    float *x = malloc(sizeof(float) * max_tok * cols);
    float *xq = malloc(sizeof(float) * max_tok * cols);
    for (int64_t i = 0; i < max_tok * cols; i++) x[i] = (float)rng_normal(rng);
    const int64_t ldo = rows + 3; // a stride wider than the matrix: the gap must stay untouched
    float *out = malloc(sizeof(float) * max_tok * ldo);
    float *single = malloc(sizeof(float) * rows);
    double *ref = malloc(sizeof(double) * max_tok * rows), *ref_q = malloc(sizeof(double) * max_tok * rows);
    double *ref_b = malloc(sizeof(double) * max_tok * rows);
    for (size_t k = 0; k < AS_ARRAY_LEN(token_counts); k++) {
        const int64_t nt = token_counts[k];
        reference(ref, x, nt, &tm);
        reference_bf16(ref_b, x, nt, &tm);
        if (!is_float(type)) {
            q8_activations(xq, x, nt, cols, type);
            reference(ref_q, xq, nt, &tm);
        }
        for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
            if (kernel_force_isa((kernel_isa)isa) != AS_OK) continue;
            check_bf16(x, nt, &tm, ref, ref_b, out, ldo, single, isa, worst_bx, worst_b);
            for (int p = 0; p < 2; p++) {
                for (int64_t i = 0; i < nt * ldo; i++) out[i] = NAN;
                kernel_matmul(out, ldo, x, nt, &tm.m, (kernel_precision)p);
                for (int64_t t = 0; t < nt; t++)
                    for (int64_t r = rows; r < ldo; r++) assert_true(isnan(out[t * ldo + r]));
                const double e = rel_error(out, ldo, ref, nt, rows);
                if (p == KERNEL_PRECISION_F32 || is_float(type)) {
                    if (!(e < 1e-5)) fail_msg("%s F32 %s %lldx%lld tokens %lld: relative error %.3g", kernel_isa_name(isa), ggml_type_name(type), (long long)rows, (long long)cols, (long long)nt, e);
                    *worst_f32 = AS_MAX(*worst_f32, e);
                } else {
                    const double eq = rel_error(out, ldo, ref_q, nt, rows);
                    const double e = scaled_error(out, ldo, ref, nt, x, &tm);
                    if (!(eq < 1e-5)) fail_msg("%s Q8 %s %lldx%lld tokens %lld: error vs 8-bit activations %.3g", kernel_isa_name(isa), ggml_type_name(type), (long long)rows, (long long)cols, (long long)nt, eq);
                    if (!(e < 2e-2)) fail_msg("%s Q8 %s %lldx%lld tokens %lld: error vs fp32 %.3g", kernel_isa_name(isa), ggml_type_name(type), (long long)rows, (long long)cols, (long long)nt, e);
                    // Batch invariance: a token's outputs equal those computed
                    // for it alone, bit for bit (first and last token).
                    for (int64_t t = 0; t < nt; t += AS_MAX(1, nt - 1)) {
                        kernel_matmul(single, rows, x + t * cols, 1, &tm.m, KERNEL_PRECISION_Q8);
                        if (memcmp(single, out + t * ldo, sizeof(float) * rows) != 0)
                            fail_msg("%s Q8 %s: token %lld of %lld differs from the same token alone", kernel_isa_name(isa), ggml_type_name(type), (long long)t, (long long)nt);
                    }
                    *worst_q8x = AS_MAX(*worst_q8x, eq);
                    *worst_q8 = AS_MAX(*worst_q8, e);
                }
            }
        }
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    free(out);
    free(single);
    free(ref);
    free(ref_q);
    free(ref_b);
    free(x);
    free(xq);
    free_matrix(&tm);
}

static void test_matmul_all_isas_all_types(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 1234);
    int n_isa = 0;
    for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) n_isa += kernel_isa_available((kernel_isa)isa);
    fprintf(stderr, "cpu: %s; testing %d ISA variant(s)\n", cpu_describe(), n_isa);
    for (size_t i = 0; i < AS_ARRAY_LEN(all_types); i++) {
        const ggml_type t = all_types[i];
        double wf = 0, wqx = 0, wq = 0, wbx = 0, wb = 0;
        // Odd shapes: a single row; rows that are no multiple of the tile or the
        // row group; an odd number of 32-blocks per row (the AVX-512 pair tail).
        const int64_t small_cols = is_k(t) ? 256 : (is_float(t) ? 37 : 160);
        const int64_t big_cols = is_k(t) ? 768 : (is_float(t) ? 579 : 576);
        // 32-block rows of 5, 7 and 18 blocks: the AVX-512 code's last group of
        // 4 holds 1, 3 and 2 blocks.
        const int64_t mid_cols = is_k(t) ? 512 : (is_float(t) ? 101 : 224);
        check_shape(t, 3, is_k(t) ? 256 : (is_float(t) ? 5 : 32), &rng, &wf, &wqx, &wq, &wbx, &wb); // one block
        check_shape(t, 1, small_cols, &rng, &wf, &wqx, &wq, &wbx, &wb);
        check_shape(t, 37, mid_cols, &rng, &wf, &wqx, &wq, &wbx, &wb);
        check_shape(t, 301, big_cols, &rng, &wf, &wqx, &wq, &wbx, &wb);
        fprintf(stderr, "%-5s worst relative error: F32 %.2g, BF16 vs bf16 operands %.2g, BF16 vs fp32 %.2g", ggml_type_name(t), wf, wbx, wb);
        if (!is_float(t)) fprintf(stderr, ", Q8 vs 8-bit activations %.2g, Q8 vs fp32 %.2g", wqx, wq);
        fprintf(stderr, "\n");
    }
}

// kernel_get_row (each ISA's dequantiser) equals quant_dequantize_row bit for bit.
static void test_get_row_bit_exact(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 99);
    for (size_t i = 0; i < AS_ARRAY_LEN(all_types); i++) {
        test_matrix tm;
        const int64_t cols = is_k(all_types[i]) ? 512 : 96;
        make_matrix(&tm, all_types[i], 5, cols, &rng);
        float *row = malloc(sizeof(float) * cols);
        for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
            if (kernel_force_isa((kernel_isa)isa) != AS_OK) continue;
            for (int64_t r = 0; r < 5; r++) {
                kernel_get_row(&tm.m, r, row);
                assert_memory_equal(row, tm.deq + r * cols, sizeof(float) * cols);
            }
        }
        kernel_force_isa(KERNEL_ISA_AUTO);
        free(row);
        free_matrix(&tm);
    }
}

// Outputs do not depend on the thread count (each output is computed by one
// thread, in a fixed order), for the fused F32 and the Q8 paths.
static void test_thread_count_invariant(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 5);
    test_matrix tm;
    make_matrix(&tm, GGML_TYPE_Q4_1, 203, 576, &rng);
    float x[3 * 576];
    for (int i = 0; i < 3 * 576; i++) x[i] = (float)rng_normal(&rng);
    float a[3 * 203], b[3 * 203];
    for (int p = 0; p < 2; p++) {
        kernel_set_threads(1);
        assert_int_equal(kernel_get_threads(), 1);
        kernel_matmul(a, 203, x, 3, &tm.m, (kernel_precision)p);
        kernel_set_threads(3);
        kernel_matmul(b, 203, x, 3, &tm.m, (kernel_precision)p);
        assert_memory_equal(a, b, sizeof a);
    }
    kernel_set_threads(0);
    free_matrix(&tm);
}

// The AVX-512 Q8_1 quantiser gives the scalar definition's codes and scales,
// bit for bit: ties at .5 (away from zero), an all-zero block, saturation-free
// extremes, tails of 1-3 blocks after the groups of 4.
static void test_quantize_q8_1_avx512(void **state) {
    (void)state;
    if (!kernel_isa_available(KERNEL_ISA_AVX512)) {
        fprintf(stderr, "no AVX-512: skipped\n");
        skip();
    }
    as_rng rng;
    as_rng_seed(&rng, 5);
    enum { NB = 11 };
    float x[NB * 32];
    for (int i = 0; i < NB * 32; i++) x[i] = (float)(rng_normal(&rng) * (i < 64 ? 1e-3 : i < 128 ? 1.0 : 300.0));
    for (int i = 32; i < 64; i++) x[i] = 0.0f;                          // d = 0
    x[128] = 127.0f; // d = 1, 1 / d = 1: the codes of the others are exact halves
    for (int i = 129; i < 160; i++) x[i] = (float)(i - 144) + 0.5f;
    x[200] = -3.0e30f, x[201] = 1.0e-30f;
    // Block 8: d = 1 again, the neighbours of halves (one ulp either side), both signs.
    x[256] = 127.0f;
    for (int i = 257; i < 288; i++) {
        const float h = (float)((i - 257) % 8) + 0.5f, v = nextafterf(h, (i - 257) % 16 < 8 ? 0.0f : 100.0f);
        x[i] = (i - 257) >= 16 ? -v : v;
    }
    for (int nb = 1; nb <= NB; nb++) {
        block_q8_1_f32 a[NB], b[NB];
        memset(a, 0, sizeof a), memset(b, 0, sizeof b);
        kernel_quantize_q8_1_avx512(x, a, 32 * nb);
        kernel_quantize_q8_1_scalar(x, b, 32 * nb);
        assert_memory_equal(a, b, sizeof a);
    }
    int ties = 0;
    block_q8_1_f32 c[NB];
    kernel_quantize_q8_1_scalar(x, c, 32 * NB);
    for (int j = 1; j < 32; j++) ties += c[4].qs[j] == (int8_t)roundf(x[128 + j]) && x[128 + j] - truncf(x[128 + j]) != 0.0f;
    assert_true(c[1].d == 0.0f && c[1].s == 0.0f);
    assert_true(c[4].d == 1.0f && ties == 31); // the halves really are there, rounded away from zero
    assert_true(c[8].d == 1.0f && c[8].qs[1] == 0 && c[8].qs[9] == 1 && c[8].qs[17] == 0 && c[8].qs[25] == -1);
    // The tile variant (16 tokens a block, the tile kernels' layout): each
    // token's codes and scales as above; rows past nt zero.  Token t is the
    // data rotated by t blocks (so tokens differ, the ties included).
    enum { T = 16 };
    struct { int8_t q[T][32]; float d[T], s[T]; } tile[NB];
    static float xt[T][NB * 32];
    for (int t = 0; t < T; t++)
        for (int i = 0; i < NB * 32; i++) xt[t][i] = x[(i + 32 * t) % (NB * 32)];
    for (int nt = 1; nt <= T; nt++) {
        memset(tile, 0x55, sizeof tile);
        kernel_quantize_q8_1_avx512_tile(xt[0], NB * 32, nt, NB * 32, tile[0].q[0], tile[0].d, tile[0].s, sizeof tile[0]);
        for (int t = 0; t < T; t++) {
            block_q8_1_f32 r[NB];
            if (t < nt) kernel_quantize_q8_1_scalar(xt[t], r, 32 * NB);
            else memset(r, 0, sizeof r);
            for (int k = 0; k < NB; k++) {
                assert_memory_equal(tile[k].q[t], r[k].qs, 32);
                assert_true(memcmp(&tile[k].d[t], &r[k].d, sizeof(float)) == 0 && memcmp(&tile[k].s[t], &r[k].s, sizeof(float)) == 0);
            }
        }
    }
}

// The tile kernels (kernels_amx.c: on AMX tiles, and with the float part on
// AVX-512 VNNI) against the AVX-512 row kernel, bit for bit, and that against
// the 8-bit-activation double reference: Q4_0/Q4_1/Q8_0, rows no multiple of
// the 16-row tile, rows of 1, 3, 7 and 18 blocks (last group of 4 holding 1,
// 3, 3 and 2), token counts around the tile size, the VNNI kernel's groups of
// 8 and the thresholds, 1 and 2 threads, called directly and through
// kernel_matmul.  Skipped without AVX-512 VNNI; the AMX part where the CPU or
// the OS does not offer AMX.
static void check_same(const float *a, const float *v, int64_t ldo, int64_t nt, int64_t rows, const char *what, ggml_type t, int64_t cols,
                       int nth) {
    for (int64_t i = 0; i < nt; i++) {
        if (memcmp(a + i * ldo, v + i * ldo, sizeof(float) * rows) != 0)
            fail_msg("%s %s %lldx%lld, %lld tokens, %d threads: token %lld differs from the row kernel", what, ggml_type_name(t), (long long)rows,
                     (long long)cols, (long long)nt, nth, (long long)i);
        for (int64_t r = rows; r < ldo; r++) assert_true(isnan(a[i * ldo + r]));
    }
}

static void test_tile_kernels_match_rows(void **state) {
    (void)state;
    if (!kernel_isa_available(KERNEL_ISA_AVX2)) {
        fprintf(stderr, "no AVX2: skipped\n");
        skip();
    }
    const bool avx512 = kernel_isa_available(KERNEL_ISA_AVX512), amx = kernel_isa_available(KERNEL_ISA_AMX);
    if (!avx512) fprintf(stderr, "no AVX-512 VNNI: only the AVX2 kernels are checked\n");
    else if (!amx) fprintf(stderr, "no AMX-INT8 (or the OS refused the tile state): the AMX kernel is not checked\n");
    float *v2 = malloc(sizeof(float) * 100 * 135);
    as_rng rng;
    as_rng_seed(&rng, 77);
    const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0};
    const int64_t shapes[][2] = {{17, 32}, {45, 96}, {37, 224}, {130, 576}};
    const int64_t counts[] = {2, 3, 5, 6, 8, 9, 10, 15, 16, 17, 33, 100};
    const int64_t max_tok = 100, max_cols = 576, max_rows = 130, ldo = max_rows + 5;
    float *x = malloc(sizeof(float) * max_tok * max_cols), *xq = malloc(sizeof(float) * max_tok * max_cols);
    float *a = malloc(sizeof(float) * max_tok * ldo), *v = malloc(sizeof(float) * max_tok * ldo);
    double *ref = malloc(sizeof(double) * max_tok * max_rows);
    for (int64_t i = 0; i < max_tok * max_cols; i++) x[i] = (float)rng_normal(&rng);
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++)
        for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++) {
            test_matrix tm;
            const int64_t rows = shapes[si][0], cols = shapes[si][1];
            const ggml_type t = types[ti];
            make_matrix(&tm, t, rows, cols, &rng);
            for (size_t ci = 0; ci < AS_ARRAY_LEN(counts); ci++) {
                const int64_t nt = counts[ci];
                q8_activations(xq, x, nt, cols, t);
                reference(ref, xq, nt, &tm);
                for (int nth = 1; nth <= 2; nth++) {
                    kernel_set_threads(nth);
                    // The "avx2" ISA: its tile kernel against its row kernel, and
                    // both against the AVX-512 ones (the same float steps).
                    assert_int_equal(kernel_force_isa(KERNEL_ISA_AVX2), AS_OK);
                    for (int64_t i = 0; i < nt * ldo; i++) v2[i] = NAN;
                    kernel_matmul_q8_rows(v2, ldo, x, nt, &tm.m, nth);
                    const double e2 = rel_error(v2, ldo, ref, nt, rows);
                    if (!(e2 < 1e-5)) fail_msg("avx2 row kernel %s %lldx%lld, %lld tokens: error vs 8-bit activations %.3g", ggml_type_name(t), (long long)rows, (long long)cols, (long long)nt, e2);
                    for (int64_t i = 0; i < nt * ldo; i++) a[i] = NAN;
                    const bool ran2 = kernel_matmul_q8_avx2_tiles(a, ldo, x, nt, &tm.m, nth);
                    assert_int_equal(ran2, nt >= KERNEL_AVX2_TILE_MIN_TOKENS);
                    if (ran2) check_same(a, v2, ldo, nt, rows, "AVX2 tiles", t, cols, nth);
                    for (int64_t i = 0; i < nt * ldo; i++) a[i] = NAN;
                    kernel_matmul(a, ldo, x, nt, &tm.m, KERNEL_PRECISION_Q8);
                    check_same(a, v2, ldo, nt, rows, "avx2 ISA", t, cols, nth);
                    if (!avx512) continue;
                    assert_int_equal(kernel_force_isa(KERNEL_ISA_AVX512), AS_OK);
                    for (int64_t i = 0; i < nt * ldo; i++) v[i] = NAN;
                    kernel_matmul_q8_rows(v, ldo, x, nt, &tm.m, nth);
                    const double e = rel_error(v, ldo, ref, nt, rows);
                    if (!(e < 1e-5)) fail_msg("row kernel %s %lldx%lld, %lld tokens: error vs 8-bit activations %.3g", ggml_type_name(t), (long long)rows, (long long)cols, (long long)nt, e);
                    check_same(v2, v, ldo, nt, rows, "avx2 rows vs avx512 rows", t, cols, nth);
                    // The VNNI tile kernel itself (it declines below its threshold) ...
                    for (int64_t i = 0; i < nt * ldo; i++) a[i] = NAN;
                    const bool ran = kernel_matmul_q8_vnni(a, ldo, x, nt, &tm.m, nth);
                    assert_int_equal(ran, nt >= KERNEL_VNNI_TILE_MIN_TOKENS);
                    if (ran) check_same(a, v, ldo, nt, rows, "VNNI tiles", t, cols, nth);
                    // ... and kernel_matmul with the "avx512" ISA.
                    for (int64_t i = 0; i < nt * ldo; i++) a[i] = NAN;
                    kernel_matmul(a, ldo, x, nt, &tm.m, KERNEL_PRECISION_Q8);
                    check_same(a, v, ldo, nt, rows, "avx512 ISA", t, cols, nth);
                    if (!amx) continue;
                    // The AMX kernel itself, and kernel_matmul with the "amx" ISA.
                    for (int64_t i = 0; i < nt * ldo; i++) a[i] = NAN;
                    const bool ran_amx = kernel_matmul_q8_amx(a, ldo, x, nt, &tm.m, nth);
                    assert_int_equal(ran_amx, nt >= KERNEL_AMX_MIN_TOKENS);
                    if (ran_amx) check_same(a, v, ldo, nt, rows, "AMX", t, cols, nth);
                    assert_int_equal(kernel_force_isa(KERNEL_ISA_AMX), AS_OK);
                    for (int64_t i = 0; i < nt * ldo; i++) a[i] = NAN;
                    kernel_matmul(a, ldo, x, nt, &tm.m, KERNEL_PRECISION_Q8);
                    check_same(a, v, ldo, nt, rows, "amx ISA", t, cols, nth);
                }
            }
            free_matrix(&tm);
        }
    kernel_set_threads(0);
    kernel_force_isa(KERNEL_ISA_AUTO);
    free(x), free(xq), free(a), free(v), free(v2), free(ref);
}

static void test_isa_selection(void **state) {
    (void)state;
    assert_true(kernel_isa_available(KERNEL_ISA_SCALAR));
    assert_int_equal(kernel_force_isa(KERNEL_ISA_SCALAR), AS_OK);
    assert_int_equal(kernel_current_isa(), KERNEL_ISA_SCALAR);
    assert_int_equal(kernel_force_isa(KERNEL_ISA_AUTO), AS_OK);
    const cpu_features *f = cpu_get_features();
    // The best available ISA is chosen, and only what the CPU reports.
    // (ALPHASPIN_KERNEL_ISA in the caller's environment may cap it below `top`.)
    kernel_isa best = kernel_current_isa();
    int top = KERNEL_ISA_SCALAR; // the best the CPU offers
    for (int i = 0; i < KERNEL_ISA_COUNT; i++)
        if (kernel_isa_available((kernel_isa)i)) top = i;
    assert_true((int)best <= top);
    if (!getenv("ALPHASPIN_KERNEL_ISA")) assert_int_equal(best, top);
    best = (kernel_isa)top;
    if (best == KERNEL_ISA_AMX) assert_true(f->amx_int8 && kernel_isa_available(KERNEL_ISA_AVX512));
    if (best == KERNEL_ISA_AVX512) assert_true(f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni && f->avx2);
    if (best == KERNEL_ISA_AVX2) assert_true(f->avx2 && f->fma && f->f16c && !kernel_isa_available(KERNEL_ISA_AVX512));
    if (best == KERNEL_ISA_SCALAR) assert_false(kernel_isa_available(KERNEL_ISA_AVX2));
    if (!f->avx2) assert_int_equal(kernel_force_isa(KERNEL_ISA_AVX2), AS_FAIL);
    // ALPHASPIN_KERNEL_ISA caps the automatic choice: avx512 turns AMX off,
    // and "amx" is accepted.
    const char *saved = getenv("ALPHASPIN_KERNEL_ISA");
    char *saved_copy = saved ? strdup(saved) : NULL;
    setenv("ALPHASPIN_KERNEL_ISA", "avx512", 1);
    assert_int_equal(kernel_force_isa(KERNEL_ISA_AUTO), AS_OK);
    assert_int_equal(kernel_current_isa(), AS_MIN(top, (int)KERNEL_ISA_AVX512));
    setenv("ALPHASPIN_KERNEL_ISA", "amx", 1);
    assert_int_equal(kernel_force_isa(KERNEL_ISA_AUTO), AS_OK);
    assert_int_equal(kernel_current_isa(), top);
    if (saved_copy) setenv("ALPHASPIN_KERNEL_ISA", saved_copy, 1);
    else unsetenv("ALPHASPIN_KERNEL_ISA");
    free(saved_copy);
    assert_int_equal(kernel_force_isa(KERNEL_ISA_AUTO), AS_OK);
    kernel_init();
    assert_non_null(cpu_describe());
    assert_true(strlen(cpu_describe()) > 0);
}

// RoPE: every ISA against the rotation in double (within 2 fp32 ulps of the
// scale), bitwise the same on every ISA (the lanes do the scalar loop's
// operations), and sign -1 undoing sign +1 to rounding; both pairings, head
// dims with and without a vector tail, n_rot below d.
static void test_rope(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 11);
    const int shapes[][3] = {{64, 64, 3}, {256, 256, 1}, {24, 16, 2}, {80, 48, 4}, {8, 8, 2}}; // d, n_rot, heads
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int d = shapes[sh][0], n_rot = shapes[sh][1], H = shapes[sh][2], half = n_rot / 2;
        float *x = malloc(sizeof(float) * (size_t)(d * H)), *y = malloc(sizeof(float) * (size_t)(d * H)),
              *ref_bits = malloc(sizeof(float) * (size_t)(d * H));
        float *cs = malloc(sizeof(float) * (size_t)half), *sn = malloc(sizeof(float) * (size_t)half);
        for (int i = 0; i < d * H; i++) x[i] = (float)(2 * as_rng_uniform(&rng) - 1);
        for (int i = 0; i < half; i++) {
            const double a = 37.0 * pow(10000.0, -2.0 * i / n_rot);
            cs[i] = (float)cos(a), sn[i] = (float)sin(a);
        }
        for (int neox = 0; neox < 2; neox++) {
            bool first = true;
            for (int isa = KERNEL_ISA_SCALAR; isa < KERNEL_ISA_COUNT; isa++) {
                if (kernel_force_isa((kernel_isa)isa) != AS_OK) continue;
                memcpy(y, x, sizeof(float) * (size_t)(d * H));
                kernel_rope(y, H, d, n_rot, neox, cs, sn, 1.0f);
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < d; i++) {
                        const float *xh = x + h * d;
                        double want = xh[i];
                        if (i < n_rot) {
                            const int p = neox ? i % half : i / 2;
                            const bool second = neox ? i >= half : i % 2;
                            const int i0 = neox ? p : 2 * p, i1 = neox ? p + half : 2 * p + 1;
                            want = second ? (double)xh[i0] * sn[p] + (double)xh[i1] * cs[p] : (double)xh[i0] * cs[p] - (double)xh[i1] * sn[p];
                        }
                        assert_true(fabs(y[h * d + i] - want) <= 2.5e-7);
                    }
                if (first) memcpy(ref_bits, y, sizeof(float) * (size_t)(d * H)), first = false;
                else assert_memory_equal(ref_bits, y, sizeof(float) * (size_t)(d * H));
                kernel_rope(y, H, d, n_rot, neox, cs, sn, -1.0f);
                for (int i = 0; i < d * H; i++) assert_true(fabsf(y[i] - x[i]) <= 5e-7f);
            }
        }
        free(x), free(y), free(ref_bits), free(cs), free(sn);
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_get_row_bit_exact),
        cmocka_unit_test(test_thread_count_invariant),
        cmocka_unit_test(test_matmul_all_isas_all_types),
        cmocka_unit_test(test_tile_kernels_match_rows),
        cmocka_unit_test(test_quantize_q8_1_avx512),
        cmocka_unit_test(test_rope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
