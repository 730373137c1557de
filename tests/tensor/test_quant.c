// Tensor formats against independent implementations: gguf-py's NumPy
// (de)quantisers and ggml's C reference quantisers, through the vectors that
// tools/quant_vectors.py wrote to tests/vectors/quant_vectors.bin.
#include "test_common.h"

#include <math.h>

#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

typedef struct qv_record {
    uint32_t type, n, flags, nbytes;
    const float *input;   // [n]
    const uint8_t *quant; // [nbytes]
    const float *dequant; // [n]
} qv_record;

enum { QV_REF_QUANT = 1, QV_GGML = 2 };

// Standard normal by Box-Muller (util/rng.h has only uniforms).
static double rng_normal(as_rng *r) {
    double u1 = as_rng_uniform(r), u2 = as_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

static char *qv_buf;
static qv_record *qv;
static uint32_t qv_count;

static int load_vectors(void **state) {
    (void)state;
    size_t len;
    if (as_read_file(AS_TEST_VECTORS "/quant_vectors.bin", &qv_buf, &len) != AS_OK) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    if (len < 12 || memcmp(qv_buf, "ASQV", 4) != 0) return -1;
    uint32_t version;
    memcpy(&version, qv_buf + 4, 4);
    memcpy(&qv_count, qv_buf + 8, 4);
    if (version != 1) return -1;
    qv = calloc(qv_count, sizeof *qv);
    size_t off = 12;
    for (uint32_t i = 0; i < qv_count; i++) {
        if (off + 16 > len) return -1;
        memcpy(&qv[i], qv_buf + off, 16);
        off += 16;
        size_t need = (size_t)qv[i].n * 8 + qv[i].nbytes;
        if (off + need > len) return -1;
        qv[i].input = (const float *)(qv_buf + off);
        qv[i].quant = (const uint8_t *)(qv_buf + off + (size_t)qv[i].n * 4);
        qv[i].dequant = (const float *)(qv_buf + off + (size_t)qv[i].n * 4 + qv[i].nbytes);
        off += need;
    }
    return off == len ? 0 : -1;
}

static int free_vectors(void **state) {
    (void)state;
    free(qv);
    free(qv_buf);
    return 0;
}

// Our dequantisation of the reference bytes equals gguf-py's bit for bit
// (every type, including Q4_K/Q6_K from random bytes and from ggml).
static void test_dequantize_matches_gguf_py(void **state) {
    (void)state;
    int seen[GGML_TYPE_COUNT] = {0};
    for (uint32_t i = 0; i < qv_count; i++) {
        const qv_record *r = &qv[i];
        assert_int_equal(quant_row_size((ggml_type)r->type, r->n), r->nbytes);
        float *out = malloc((size_t)r->n * sizeof(float));
        // Unaligned source: weights in a GGUF mapping are only 32-byte aligned
        // per tensor, rows inside may be at any byte offset.
        quant_dequantize_row((ggml_type)r->type, r->quant, out, r->n);
        for (uint32_t j = 0; j < r->n; j++) {
            uint32_t a, b;
            memcpy(&a, &out[j], 4);
            memcpy(&b, &r->dequant[j], 4);
            if (a != b) fail_msg("record %u type %u elem %u: ours %.9g (0x%08x), gguf-py %.9g (0x%08x)", i, r->type, j, out[j], a, r->dequant[j], b);
        }
        free(out);
        seen[r->type]++;
    }
    const ggml_type all[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    for (size_t k = 0; k < AS_ARRAY_LEN(all); k++) assert_true(seen[all[k]] >= 3);
}

// Our quantisers reproduce the reference bytes exactly: gguf-py's for the float
// types and Q8_0/Q4_0/Q4_1, ggml's quantize_row_*_ref for Q4_K/Q6_K.
static void test_quantize_matches_reference(void **state) {
    (void)state;
    int n_ggml = 0, n_checked = 0;
    for (uint32_t i = 0; i < qv_count; i++) {
        const qv_record *r = &qv[i];
        if (!(r->flags & QV_REF_QUANT)) continue;
        uint8_t *q = malloc(r->nbytes);
        quant_quantize_row((ggml_type)r->type, r->input, q, r->n);
        for (uint32_t j = 0; j < r->nbytes; j++)
            if (q[j] != r->quant[j]) fail_msg("record %u type %u byte %u: ours 0x%02x, reference 0x%02x", i, r->type, j, q[j], r->quant[j]);
        free(q);
        n_checked++;
        n_ggml += (r->flags & QV_GGML) != 0;
    }
    assert_true(n_checked >= 6 * 7);
    if (n_ggml == 0) fprintf(stderr, "note: vectors hold no ggml K-quant references (llama_cpp was absent)\n");
}

// The row conversion (F16C where present) gives as_f32_to_fp16's bits for
// every non-NaN float it meets: a sweep over 2^22 patterns spread over all
// exponents (ties, subnormals, overflow, +-0, +-inf), contiguous and strided,
// with tails of 1..7 values.
static void test_fp16_row_matches_scalar(void **state) {
    (void)state;
    enum { N = 4096 };
    float x[N];
    as_fp16 y[3 * N];
    int64_t checked = 0;
    for (uint32_t base = 0; base < 1024; base++) {
        for (int i = 0; i < N; i++) {
            union { uint32_t u; float f; } v = {(base << 22) ^ ((uint32_t)i * 2654435761u >> 10) ^ (uint32_t)i};
            x[i] = isnan(v.f) ? 1.5f : v.f;
        }
        const int n = N - (int)(base % 8), stride = base % 2 ? 3 : 1;
        as_f32_to_fp16_n(y, stride, x, n);
        for (int i = 0; i < n; i++)
            if (y[i * stride] != as_f32_to_fp16(x[i])) fail_msg("as_f32_to_fp16_n(%a) = 0x%04x, scalar 0x%04x", (double)x[i], y[i * stride], as_f32_to_fp16(x[i]));
        checked += n;
    }
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, 65520.0f, 65519.0f, 1.0f + 0x1p-11f, 0x1p-25f, 0x1.8p-25f, 0x1p-14f, -0x1p-24f, 1e-30f};
    as_f32_to_fp16_n(y, 1, special, 12);
    for (int i = 0; i < 12; i++) assert_int_equal(y[i], as_f32_to_fp16(special[i]));
    assert_true(checked > 4000000);
}

// fp16 and bf16: every one of the 65536 patterns survives a round trip
// (NaNs stay NaNs), and ordering is monotone over the positive finite halves.
static void test_half_round_trip_exhaustive(void **state) {
    (void)state;
    float prev = -1.0f;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = as_fp16_to_f32((as_fp16)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true(isnan(as_fp16_to_f32(as_f32_to_fp16(f))));
        } else {
            assert_int_equal(as_f32_to_fp16(f), h);
        }
        if (h <= 0x7c00) {
            assert_true(f > prev);
            prev = f;
        }
        float g = as_bf16_to_f32((as_bf16)h);
        if (isnan(g)) assert_true(isnan(as_bf16_to_f32(as_f32_to_bf16(g))));
        else assert_int_equal(as_f32_to_bf16(g), h);
    }
    assert_true(as_fp16_to_f32(0x3c00) == 1.0f);
    assert_true(as_fp16_to_f32(0x0001) == 0x1p-24f); // smallest subnormal
    assert_int_equal(as_f32_to_fp16(65520.0f), 0x7c00); // rounds up to Inf
    assert_int_equal(as_f32_to_fp16(1.0f + 0x1p-11f), 0x3c00); // tie to even (down)
    assert_int_equal(as_f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02); // tie to even (up)
}

// Round trip through every format stays within the format's resolution, measured
// as RMS error relative to the row RMS.  Bounds: fp16 2^-11 relative per value;
// bf16 2^-8; 8-bit blocks ~ 1/127 of the block max; 4-bit blocks ~ 1/15 of the
// range; the K formats add 6/8-bit quantised scales.  (Observed values are
// printed; the bounds leave ~1.5x margin.)
static void test_round_trip_error_bounds(void **state) {
    (void)state;
    const struct { ggml_type t; double bound; } cases[] = {
        {GGML_TYPE_F32, 0.0},     {GGML_TYPE_F16, 3e-4},   {GGML_TYPE_BF16, 2.5e-3}, {GGML_TYPE_Q8_0, 8e-3},
        {GGML_TYPE_Q4_0, 1.3e-1}, {GGML_TYPE_Q4_1, 1.2e-1}, {GGML_TYPE_Q4_K, 1.1e-1}, {GGML_TYPE_Q6_K, 2.7e-2},
    };
    const int64_t n = 4096;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    void *q = malloc(n * 4);
    as_rng rng;
    as_rng_seed(&rng, 7);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&rng) * 0.02);
    for (size_t c = 0; c < AS_ARRAY_LEN(cases); c++) {
        quant_quantize_row(cases[c].t, x, q, n);
        quant_dequantize_row(cases[c].t, q, y, n);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < n; i++) {
            se += (double)(x[i] - y[i]) * (x[i] - y[i]);
            sx += (double)x[i] * x[i];
        }
        double rel = sqrt(se / sx);
        fprintf(stderr, "round trip %-5s relative rms error %.3g (bound %.3g)\n", ggml_type_name(cases[c].t), rel, cases[c].bound);
        assert_true(rel <= cases[c].bound);
    }
    free(x);
    free(y);
    free(q);
}

static void test_row_size(void **state) {
    (void)state;
    assert_int_equal(quant_row_size(GGML_TYPE_Q4_1, 576), 18 * 20);
    assert_int_equal(quant_row_size(GGML_TYPE_Q8_0, 576), 18 * 34);
    assert_int_equal(quant_row_size(GGML_TYPE_Q4_K, 512), 2 * 144);
    assert_int_equal(quant_row_size(GGML_TYPE_Q6_K, 256), 210);
    assert_int_equal(quant_row_size(GGML_TYPE_F16, 3), 6);
    assert_int_equal(quant_row_size(GGML_TYPE_Q4_K, 576), 0);  // not a multiple of 256
    assert_int_equal(quant_row_size(GGML_TYPE_Q4_0, 33), 0);
    assert_int_equal(quant_row_size(GGML_TYPE_Q5_0, 64), 0);   // unsupported
    assert_int_equal(quant_row_size(GGML_TYPE_F32, INT64_MAX), 0); // overflow
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequantize_matches_gguf_py),
        cmocka_unit_test(test_quantize_matches_reference),
        cmocka_unit_test(test_half_round_trip_exhaustive),
        cmocka_unit_test(test_fp16_row_matches_scalar),
        cmocka_unit_test(test_round_trip_error_bounds),
        cmocka_unit_test(test_row_size),
    };
    return cmocka_run_group_tests(tests, load_vectors, free_vectors);
}
