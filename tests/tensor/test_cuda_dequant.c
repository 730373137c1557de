// The CUDA backend's dequantiser (src/tensor/cuda/cuda_backend.cu,
// dequant_elem, compiled for the device and the host alike) against quant.c,
// bit for bit, for every weight type: run here on the host through the
// plugin's alphaspin_cuda_dequant_host, so its block layouts and index
// arithmetic are checked on machines without a GPU (the device build of the
// same code is checked by test_cuda_backend's get_row, on a GPU).  Skips
// (77) when the plugin was not built.
#include "test_common.h"

#include "cuda_plugin.h"

#include "gguf/gguf.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

typedef int (*dequant_fn)(int t, const void *row, int64_t cols, float *out);
static dequant_fn g_dequant;

static void test_types(void **st) {
    (void)st;
    static const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                                      GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    as_rng rng;
    as_rng_seed(&rng, 22);
    const int64_t n = 4096;
    float *x = as_malloc(sizeof(float) * n), *ref = as_malloc(sizeof(float) * n), *got = as_malloc(sizeof(float) * n);
    uint8_t *q = as_malloc(quant_row_size(GGML_TYPE_F32, n));
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++)
        for (int rep = 0; rep < 8; rep++) {
            // Scales from tiny (subnormal fp16 block scales) to large.
            const double scale = rep == 0 ? 1e-6 : rep == 1 ? 1e-3 : rep == 7 ? 1e3 : 1.0;
            for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * (2 * as_rng_uniform(&rng) - 1));
            if (rep == 6) x[5] = 0, x[100] = -0.0f; // zeros of both signs
            quant_quantize_row(types[ti], x, q, n);
            quant_dequantize_row(types[ti], q, ref, n);
            assert_int_equal(g_dequant((int)types[ti], q, n, got), 0);
            for (int64_t i = 0; i < n; i++)
                if (memcmp(&got[i], &ref[i], 4))
                    fail_msg("%s rep %d element %lld: cuda dequantiser %.9g, quant.c %.9g", ggml_type_name(types[ti]), rep, (long long)i, got[i], ref[i]);
        }
    // Every 16-bit pattern of F16 and BF16 (NaNs included: bit for bit).
    uint16_t *all = as_malloc(sizeof(uint16_t) * 65536);
    float *r2 = as_malloc(sizeof(float) * 65536), *g2 = as_malloc(sizeof(float) * 65536);
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    for (int bf = 0; bf < 2; bf++) {
        const ggml_type t = bf ? GGML_TYPE_BF16 : GGML_TYPE_F16;
        quant_dequantize_row(t, all, r2, 65536);
        assert_int_equal(g_dequant((int)t, all, 65536, g2), 0);
        for (int i = 0; i < 65536; i++)
            if (memcmp(&g2[i], &r2[i], 4)) fail_msg("%s 0x%04x: cuda dequantiser %a, quant.c %a", ggml_type_name(t), i, g2[i], r2[i]);
    }
    assert_int_equal(g_dequant((int)GGML_TYPE_Q4_K, q, 100, got), -1); // not whole blocks
    assert_int_equal(g_dequant((int)GGML_TYPE_Q5_0, q, 256, got), -1); // not supported
    free(x), free(ref), free(got), free(q), free(all), free(r2), free(g2);
}

int main(void) {
    g_dequant = (dequant_fn)(uintptr_t)cuda_plugin_entry("alphaspin_cuda_dequant_host");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_types)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
