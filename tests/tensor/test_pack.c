// kernel_pack (the tile kernels reading pre-packed weights: AMX, and the
// VNNI float part of the "avx512" ISA) on random Q4_0 / Q4_1 / Q8_0 matrices
// with odd shapes: the Q8 matmul with the packed copy must give exactly the
// bits it gives without it (which test_kernels checks against a double
// reference and the row kernel), and must itself be within the Q8 path's
// documented accuracy of a plain double product of the dequantised weights
// (relative 2e-2 of ||out||).  Runs on each of the two ISAs the CPU has;
// skipped (exit 77) on a CPU without AVX-512 VNNI, where kernel_pack_size is
// 0 (also checked).
#include "test_common.h"

#include <math.h>

#include "tensor/kernels_impl.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

static void check_one(ggml_type t, int64_t rows, int64_t cols, int64_t n_tok, as_rng *r) {
    const size_t rb = quant_row_size(t, cols);
    uint8_t *data = as_malloc(rb * (size_t)rows);
    float *row = as_malloc(sizeof(float) * (size_t)cols), *wf = as_malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t c = 0; c < cols; c++) row[c] = (float)(2.0 * as_rng_uniform(r) - 1.0);
        quant_quantize_row(t, row, data + (size_t)i * rb, cols);
        quant_dequantize_row(t, data + (size_t)i * rb, wf + i * cols, cols);
    }
    float *x = as_malloc(sizeof(float) * (size_t)(n_tok * cols));
    for (int64_t i = 0; i < n_tok * cols; i++) x[i] = (float)(2.0 * as_rng_uniform(r) - 1.0);
    const int64_t ldo = rows + 3;
    float *plain = as_calloc((size_t)(n_tok * ldo), sizeof(float)), *packed = as_calloc((size_t)(n_tok * ldo), sizeof(float));
    as_matrix w = {.data = data, .type = t, .rows = rows, .cols = cols, .row_bytes = rb};
    kernel_matmul(plain, ldo, x, n_tok, &w, KERNEL_PRECISION_Q8);
    const size_t sz = kernel_pack_size(&w);
    assert_true(sz > 0);
    void *store = as_aligned_alloc(sz);
    kernel_pack(&w, store);
    assert_ptr_equal(w.packed, store);
    kernel_matmul(packed, ldo, x, n_tok, &w, KERNEL_PRECISION_Q8);
    for (int64_t i = 0; i < n_tok; i++) assert_memory_equal(plain + i * ldo, packed + i * ldo, sizeof(float) * (size_t)rows);
    double num = 0, den = 0;
    for (int64_t i = 0; i < n_tok; i++)
        for (int64_t o = 0; o < rows; o++) {
            double ref = 0;
            for (int64_t c = 0; c < cols; c++) ref += (double)x[i * cols + c] * wf[o * cols + c];
            num += (packed[i * ldo + o] - ref) * (packed[i * ldo + o] - ref);
            den += ref * ref;
        }
    assert_true(sqrt(num / den) < 2e-2);
    free(store), free(data), free(row), free(wf), free(x), free(plain), free(packed);
}

static void packed_equals_unpacked(void) {
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0};
    static const int64_t shapes[][2] = {{16, 32}, {37, 96}, {192, 576}, {50, 1536}};
    // 20 and 32: one pair of token tiles per item (batched decoding: the
    // nibbles are unpacked as the products go, amx_tile_dot2).
    static const int64_t toks[] = {KERNEL_PACK_MIN_TOKENS, 16, 20, 32, 33, 130};
    as_rng r;
    as_rng_seed(&r, 5);
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++)
        for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++)
            for (size_t ki = 0; ki < AS_ARRAY_LEN(toks); ki++) check_one(types[ti], shapes[si][0], shapes[si][1], toks[ki], &r);
}

static void test_packed_equals_unpacked(void **state) {
    (void)state;
    int ran = 0;
    for (int isa = KERNEL_ISA_AVX512; isa <= KERNEL_ISA_AMX; isa++) {
        if (!kernel_isa_available((kernel_isa)isa)) continue;
        assert_int_equal(kernel_force_isa((kernel_isa)isa), AS_OK);
        packed_equals_unpacked();
        ran++;
    }
    kernel_force_isa(KERNEL_ISA_AUTO);
    assert_true(ran >= 1);
}

// Types without a packed layout report 0.
static void test_no_layout(void **state) {
    (void)state;
    float f[32] = {0};
    as_matrix w = {.data = f, .type = GGML_TYPE_F32, .rows = 1, .cols = 32, .row_bytes = sizeof f};
    assert_int_equal(kernel_pack_size(&w), 0);
}

int main(void) {
    if (kernel_current_isa() < KERNEL_ISA_AVX512) {
        as_matrix w = {.data = NULL, .type = GGML_TYPE_Q4_1, .rows = 16, .cols = 32, .row_bytes = 20};
        if (kernel_pack_size(&w) != 0) return 1;
        fprintf(stderr, "SKIP: no AVX-512 VNNI on this CPU (kernel_pack has no layout here)\n");
        return AS_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_equals_unpacked),
        cmocka_unit_test(test_no_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
