// The byte-level BPE tokenizer of the default model against llama.cpp:
// tests/vectors/tok_smollm.jsonl holds llama.cpp's token ids for >1000 strings
// (tools/tok_vectors.py); every one must match exactly, and decoding must give
// the text back byte for byte.  tok_smollm_gpt-2.jsonl and tok_smollm_llama-bpe.jsonl
// do the same for the other pre-tokenizers, on the model's vocabulary and merges
// copied into a GGUF whose tokenizer.ggml.pre names them.
#include "test_common.h"
#include "tokenizer/tokenizer.h"
#include "util/common.h"

#include <cjson/cJSON.h>

static gguf_file *g_file;
static tokenizer *g_tok;

static int setup(void **state) {
    (void)state;
    if (gguf_open(&g_file, as_test_default_model()) != 0) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    if (tokenizer_load(&g_tok, g_file) != 0) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tokenizer_free(g_tok);
    gguf_close(g_file);
    return 0;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

// Compares every vector in `path` with our encoding; returns the number of strings.
static int check_vectors(const tokenizer *tok, const char *path, int *n_special_out) {
    char *buf;
    size_t len;
    assert_int_equal(as_read_file(path, &buf, &len), AS_OK);
    int n_cases = 0, n_bad = 0, n_roundtrip = 0, n_special = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *rec = cJSON_Parse(line);
        assert_non_null(rec);
        const cJSON *text = cJSON_GetObjectItem(rec, "text"), *ids = cJSON_GetObjectItem(rec, "ids");
        const cJSON *hex = cJSON_GetObjectItem(rec, "hex"); // bytes that are not valid UTF-8
        if (!cJSON_IsString(text) && !cJSON_IsString(hex)) { // metadata line
            cJSON_Delete(rec);
            continue;
        }
        bool special = cJSON_IsTrue(cJSON_GetObjectItem(rec, "special"));
        char bytes[256];
        const char *s = text ? text->valuestring : bytes;
        size_t slen = text ? strlen(s) : strlen(hex->valuestring) / 2;
        if (!text) {
            assert_true(slen < sizeof bytes);
            for (size_t i = 0; i < slen; i++) {
                unsigned v;
                assert_int_equal(sscanf(hex->valuestring + 2 * i, "%2x", &v), 1);
                bytes[i] = (char)v;
            }
            bytes[slen] = 0;
        }
        int32_t *got;
        size_t n_got;
        assert_int_equal(tokenizer_encode(tok, s, slen, false, special, &got, &n_got), AS_OK);
        int n_want = cJSON_GetArraySize(ids);
        bool same = (int)n_got == n_want;
        for (int i = 0; same && i < n_want; i++) same = got[i] == cJSON_GetArrayItem(ids, i)->valueint;
        if (!same) {
            if (n_bad < 10) {
                fprintf(stderr, "mismatch for \"%s\" (special=%d)\n", s, special);
                print_ids("got ", got, n_got);
                int32_t want[4096];
                for (int i = 0; i < n_want && i < 4096; i++) want[i] = cJSON_GetArrayItem(ids, i)->valueint;
                print_ids("want", want, (size_t)AS_MIN(n_want, 4096));
            }
            n_bad++;
        }
        if (cJSON_IsTrue(cJSON_GetObjectItem(rec, "roundtrip"))) {
            char *back = tokenizer_decode(tok, got, n_got, special);
            if (strcmp(back, s) != 0) {
                fprintf(stderr, "decode(encode(\"%s\")) = \"%s\"\n", s, back);
                n_bad++;
            }
            n_roundtrip++;
            free(back);
        }
        n_special += special;
        n_cases++;
        free(got);
        cJSON_Delete(rec);
    }
    free(buf);
    fprintf(stderr, "%s: %d strings (%d with special tokens parsed), %d round trips checked\n", path, n_cases, n_special, n_roundtrip);
    assert_int_equal(n_bad, 0);
    assert_true(n_roundtrip >= n_cases * 9 / 10);
    if (n_special_out) *n_special_out = n_special;
    return n_cases;
}

static void test_matches_llama_cpp(void **state) {
    (void)state;
    int n_special;
    assert_true(check_vectors(g_tok, AS_TEST_VECTORS "/tok_smollm.jsonl", &n_special) >= 1000);
    assert_true(n_special >= 5);
}

// The model's vocabulary and merges in a new GGUF whose pre-tokenizer is `pre`.
static gguf_file *vocab_with_pre(const char *pre, uint8_t **buf) {
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_write_str(w, "tokenizer.ggml.pre", pre);
    static const char *const str_keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"};
    for (int k = 0; k < 2; k++) {
        gguf_type at;
        uint64_t n;
        int64_t kv;
        assert_int_equal(gguf_get_arr(g_file, str_keys[k], &at, &n, &kv), AS_OK);
        char **s = as_malloc(n * sizeof(char *));
        for (uint64_t i = 0; i < n; i++) s[i] = gguf_str_dup(gguf_arr_str(g_file, kv, i));
        gguf_write_arr_str(w, str_keys[k], (const char *const *)s, n);
        for (uint64_t i = 0; i < n; i++) free(s[i]);
        free(s);
    }
    gguf_type at;
    uint64_t n;
    int64_t kv;
    assert_int_equal(gguf_get_arr(g_file, "tokenizer.ggml.token_type", &at, &n, &kv), AS_OK);
    int32_t *types = as_malloc(n * sizeof(int32_t));
    for (uint64_t i = 0; i < n; i++) types[i] = (int32_t)gguf_arr_num(g_file, kv, i);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, n);
    free(types);
    gguf_write_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_write_bool(w, "tokenizer.ggml.add_bos_token", false);
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, buf, &len), AS_OK);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, *buf, len, pre), AS_OK);
    return f;
}

static void check_pre(const char *pre, const char *vectors) {
    uint8_t *buf;
    gguf_file *f = vocab_with_pre(pre, &buf);
    tokenizer *t;
    assert_int_equal(tokenizer_load(&t, f), AS_OK);
    assert_true(check_vectors(t, vectors, NULL) >= 500);
    tokenizer_free(t);
    gguf_close(f);
    free(buf);
}

static void test_gpt2_pre_tokenizer(void **state) {
    (void)state;
    check_pre("gpt-2", AS_TEST_VECTORS "/tok_smollm_gpt-2.jsonl");
}

static void test_llama3_pre_tokenizer(void **state) {
    (void)state;
    check_pre("llama-bpe", AS_TEST_VECTORS "/tok_smollm_llama-bpe.jsonl");
}

static void test_vocabulary_and_special_ids(void **state) {
    (void)state;
    assert_int_equal(tokenizer_n_vocab(g_tok), 49152);
    assert_int_equal(tokenizer_bos(g_tok), 1);
    assert_int_equal(tokenizer_eos(g_tok), 2);
    assert_int_equal(tokenizer_find(g_tok, "<|im_start|>"), 1);
    assert_int_equal(tokenizer_find(g_tok, "<|im_end|>"), 2);
    assert_int_equal(tokenizer_find(g_tok, "no such token"), -1);
    // <|im_end|> and <|endoftext|> end a turn; <|im_start|> and text tokens do not.
    assert_true(tokenizer_is_end(g_tok, 2));
    assert_true(tokenizer_is_end(g_tok, 0));
    assert_false(tokenizer_is_end(g_tok, 1));
    assert_false(tokenizer_is_end(g_tok, tokenizer_find(g_tok, "Hello")));
    assert_false(tokenizer_is_end(g_tok, -1));
    assert_false(tokenizer_is_end(g_tok, 49152));
}

static void test_add_special_follows_the_file(void **state) {
    (void)state;
    // SmolLM2 sets add_bos_token = false: add_special adds nothing.
    int32_t *a, *b;
    size_t na, nb;
    assert_int_equal(tokenizer_encode(g_tok, "Hello world", 11, true, false, &a, &na), AS_OK);
    assert_int_equal(tokenizer_encode(g_tok, "Hello world", 11, false, false, &b, &nb), AS_OK);
    assert_int_equal(na, 2);
    assert_int_equal(nb, 2);
    assert_memory_equal(a, b, 2 * sizeof(int32_t));
    free(a);
    free(b);
    // Empty text gives no tokens and a freeable array.
    assert_int_equal(tokenizer_encode(g_tok, "", 0, true, true, &a, &na), AS_OK);
    assert_int_equal(na, 0);
    free(a);
}

static void test_special_tokens_render_only_when_asked(void **state) {
    (void)state;
    char buf[64];
    assert_int_equal(tokenizer_token_to_piece(g_tok, 2, false, buf, sizeof buf), 0);
    assert_int_equal(tokenizer_token_to_piece(g_tok, 2, true, buf, sizeof buf), 10);
    assert_memory_equal(buf, "<|im_end|>", 10);
    // Too small a buffer: the size needed comes back and nothing is written past cap.
    memset(buf, 'x', sizeof buf);
    assert_int_equal(tokenizer_token_to_piece(g_tok, 2, true, buf, 4), 10);
    assert_int_equal(buf[0], 'x');
    // Byte-level pieces: "Ġworld" is " world".
    int32_t id = tokenizer_find(g_tok, "\xc4\xa0world");
    assert_true(id >= 0);
    assert_int_equal(tokenizer_token_to_piece(g_tok, id, false, buf, sizeof buf), 6);
    assert_memory_equal(buf, " world", 6);
    assert_int_equal(tokenizer_token_to_piece(g_tok, -5, true, buf, sizeof buf), 0);

    int32_t ids[] = {1, tokenizer_find(g_tok, "user"), 198, 2};
    char *plain = tokenizer_decode(g_tok, ids, 4, false);
    char *shown = tokenizer_decode(g_tok, ids, 4, true);
    assert_string_equal(plain, "user\n");
    assert_string_equal(shown, "<|im_start|>user\n<|im_end|>");
    free(plain);
    free(shown);
}

static void test_invalid_utf8_does_not_crash(void **state) {
    (void)state;
    // llama.cpp reads each invalid byte as U+FFFD; so do we (and never crash).
    const char bad[] = "ab\xff\xfe c\xe2\x82 d\xc3";
    int32_t *ids, *ref;
    size_t n, nref;
    assert_int_equal(tokenizer_encode(g_tok, bad, sizeof bad - 1, false, false, &ids, &n), AS_OK);
    const char fixed[] = "ab\xef\xbf\xbd\xef\xbf\xbd c\xef\xbf\xbd\xef\xbf\xbd d\xef\xbf\xbd";
    assert_int_equal(tokenizer_encode(g_tok, fixed, sizeof fixed - 1, false, false, &ref, &nref), AS_OK);
    assert_int_equal(n, nref);
    assert_memory_equal(ids, ref, n * sizeof(int32_t));
    free(ids);
    free(ref);
}

// 200k spaces, then a newline or a word: deep regex backtracking must neither
// fail nor crawl, for the smollm and the llama3 regexes.
static void check_long_run(const tokenizer *t, const char *tail) {
    size_t n = 200000, k = strlen(tail);
    char *s = as_malloc(n + k + 1);
    memset(s, ' ', n);
    memcpy(s + n, tail, k + 1);
    int32_t *ids;
    size_t n_ids;
    double t0 = as_time();
    assert_int_equal(tokenizer_encode(t, s, n + k, false, false, &ids, &n_ids), AS_OK);
    assert_true(as_time() - t0 < 20.0);
    char *back = tokenizer_decode(t, ids, n_ids, false);
    assert_string_equal(back, s);
    free(back);
    free(ids);
    free(s);
}

static void test_long_whitespace_run(void **state) {
    (void)state;
    check_long_run(g_tok, "a");
    check_long_run(g_tok, "\n");
    uint8_t *buf;
    gguf_file *f = vocab_with_pre("llama-bpe", &buf);
    tokenizer *t;
    assert_int_equal(tokenizer_load(&t, f), AS_OK);
    check_long_run(t, "a");
    check_long_run(t, "\n\t b");
    tokenizer_free(t);
    gguf_close(f);
    free(buf);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_llama_cpp),
        cmocka_unit_test(test_gpt2_pre_tokenizer),
        cmocka_unit_test(test_llama3_pre_tokenizer),
        cmocka_unit_test(test_vocabulary_and_special_ids),
        cmocka_unit_test(test_add_special_follows_the_file),
        cmocka_unit_test(test_special_tokens_render_only_when_asked),
        cmocka_unit_test(test_invalid_utf8_does_not_crash),
        cmocka_unit_test(test_long_whitespace_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
