// The real default model (SmolLM2-135M-Instruct Q4_1) opens and reads as
// gguf-py reads it.  Expected values (counts, shapes, absolute data offsets and
// CRC-32 of tensor bytes) were printed by gguf-py's GGUFReader.
#include "test_common.h"

#include "gguf/gguf.h"
#include "util/common.h"

// CRC-32 (IEEE, reflected 0xEDB88320), the checksum zlib.crc32 computes.
static uint32_t crc32_ieee(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void test_default_model(void **state) {
    (void)state;
    gguf_file *f = NULL;
    int rc = gguf_open(&f, as_test_default_model());
    if (rc) fprintf(stderr, "%s\n", as_last_error());
    assert_int_equal(rc, 0);
    assert_true(f->mapped);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->n_tensors, 272);
    assert_int_equal(f->n_kv, 33);
    assert_int_equal(f->alignment, 32);

    uint32_t u;
    assert_int_equal(gguf_get_u32(f, "llama.block_count", &u), 0);
    assert_int_equal(u, 30);
    assert_int_equal(gguf_get_u32(f, "llama.embedding_length", &u), 0);
    assert_int_equal(u, 576);
    assert_int_equal(gguf_get_u32(f, "llama.attention.head_count_kv", &u), 0);
    assert_int_equal(u, 3);
    float x;
    assert_int_equal(gguf_get_f32(f, "llama.rope.freq_base", &x), 0);
    assert_true(x == 100000.0f);
    assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &x), 0);
    assert_true(x == 1e-5f);
    bool b = true;
    assert_int_equal(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_false(b);
    gguf_str s;
    assert_int_equal(gguf_get_str(f, "general.architecture", &s), 0);
    assert_true(gguf_str_eq(s, "llama"));
    assert_int_equal(gguf_get_str(f, "tokenizer.ggml.model", &s), 0);
    assert_true(gguf_str_eq(s, "gpt2"));

    gguf_type at;
    uint64_t n;
    int64_t ki;
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", &at, &n, &ki), 0);
    assert_int_equal(at, GGUF_TYPE_STRING);
    assert_int_equal(n, 49152);
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 0), "<|endoftext|>"));
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 1), "<|im_start|>"));
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 2), "<|im_end|>"));
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 100), "t"));
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 49151), "ectable"));
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.merges", &at, &n, &ki), 0);
    assert_int_equal(n, 48900);
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 0), "\xc4\xa0 t")); // "Ġ t"
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.token_type", &at, &n, &ki), 0);
    assert_int_equal(at, GGUF_TYPE_INT32);
    assert_true(gguf_arr_num(f, ki, 0) == 3 && gguf_arr_num(f, ki, 1) == 3 && gguf_arr_num(f, ki, 100) == 1);

    static const struct {
        const char *name;
        ggml_type type;
        int64_t ne0, ne1;
        size_t abs_offset, nbytes;
        uint32_t crc;
    } want[] = {
        {"token_embd.weight", GGML_TYPE_Q8_0, 576, 49152, 1785664, 30081024, 0x73c4477eu},
        {"blk.0.attn_q.weight", GGML_TYPE_Q4_1, 576, 576, 33806656, 207360, 0x63519a85u},
        {"blk.29.ffn_down.weight", GGML_TYPE_Q4_1, 1536, 576, 80630848, 552960, 0xaf426365u},
        {"output_norm.weight", GGML_TYPE_F32, 576, 1, 98360128, 2304, 0xc6811e6cu},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(want); i++) {
        const gguf_tensor *t = gguf_find_tensor(f, want[i].name);
        assert_non_null(t);
        assert_string_equal(t->cname, want[i].name);
        assert_int_equal(t->type, want[i].type);
        assert_int_equal(t->ne[0], want[i].ne0);
        assert_int_equal(t->ne[1], want[i].ne1);
        assert_int_equal(t->ne[2], 1);
        assert_int_equal(t->nbytes, want[i].nbytes);
        assert_ptr_equal(t->data, f->base + want[i].abs_offset);
        assert_int_equal(crc32_ieee(t->data, t->nbytes), want[i].crc);
    }
    assert_null(gguf_find_tensor(f, "blk.30.attn_q.weight"));
    // Every tensor is findable by its own name (binary search over all 272).
    for (uint64_t i = 0; i < f->n_tensors; i++) assert_ptr_equal(gguf_find_tensor(f, f->tensors[i].cname), &f->tensors[i]);
    gguf_close(f);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_default_model)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
