// SentencePiece-style BPE against llama.cpp, and the loader's errors.
//
// tests/vectors/tok_spm.jsonl (tools/make_spm_vocab.py) holds a synthetic
// vocabulary (byte fallback, control and user-defined tokens, scores with ties)
// and llama.cpp's tokenization of ~400 strings with it.  This test writes the
// vocabulary into a GGUF with our own writer, loads it and compares exactly.
#include "test_common.h"
#include "tokenizer/tokenizer.h"
#include "util/common.h"

#include <cjson/cJSON.h>

typedef struct spm_vocab {
    cJSON *json;
    int n;
    const char **tokens;
    float *scores;
    int32_t *types;
} spm_vocab;

static spm_vocab g_vocab;
static char *g_vectors;

static int setup(void **state) {
    (void)state;
    size_t len;
    if (as_read_file(AS_TEST_VECTORS "/tok_spm.jsonl", &g_vectors, &len) != 0) return -1;
    char *nl = strchr(g_vectors, '\n');
    *nl = 0;
    g_vocab.json = cJSON_Parse(g_vectors);
    *nl = '\n';
    const cJSON *tokens = cJSON_GetObjectItem(g_vocab.json, "tokens");
    const cJSON *scores = cJSON_GetObjectItem(g_vocab.json, "scores");
    const cJSON *types = cJSON_GetObjectItem(g_vocab.json, "types");
    g_vocab.n = cJSON_GetArraySize(tokens);
    g_vocab.tokens = as_malloc((size_t)g_vocab.n * sizeof(char *));
    g_vocab.scores = as_malloc((size_t)g_vocab.n * sizeof(float));
    g_vocab.types = as_malloc((size_t)g_vocab.n * sizeof(int32_t));
    for (int i = 0; i < g_vocab.n; i++) {
        g_vocab.tokens[i] = cJSON_GetArrayItem(tokens, i)->valuestring;
        g_vocab.scores[i] = (float)cJSON_GetArrayItem(scores, i)->valuedouble;
        g_vocab.types[i] = cJSON_GetArrayItem(types, i)->valueint;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(g_vocab.tokens);
    free(g_vocab.scores);
    free(g_vocab.types);
    cJSON_Delete(g_vocab.json);
    free(g_vectors);
    return 0;
}

// What a GGUF writer for a llama/SPM vocabulary puts in the file; `tweak` lets
// the error tests break one thing at a time.
typedef enum tweak { TWEAK_NONE, TWEAK_NO_SPACE_PREFIX, TWEAK_BAD_MODEL, TWEAK_DUP_TOKEN, TWEAK_BOS_RANGE, TWEAK_SHORT_SCORES } tweak;

static gguf_file *build_vocab(tweak tw, uint8_t **buf) {
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "general.architecture", "llama");
    gguf_write_str(w, "tokenizer.ggml.model", tw == TWEAK_BAD_MODEL ? "unigram-xyz" : "llama");
    const char **tokens = as_malloc((size_t)g_vocab.n * sizeof(char *));
    memcpy(tokens, g_vocab.tokens, (size_t)g_vocab.n * sizeof(char *));
    if (tw == TWEAK_DUP_TOKEN) tokens[300] = tokens[299];
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)g_vocab.n);
    gguf_write_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, g_vocab.scores, (uint64_t)(tw == TWEAK_SHORT_SCORES ? 10 : g_vocab.n));
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, g_vocab.types, (uint64_t)g_vocab.n);
    gguf_write_u32(w, "tokenizer.ggml.bos_token_id", tw == TWEAK_BOS_RANGE ? 100000 : 1);
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_write_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_write_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_write_bool(w, "tokenizer.ggml.add_space_prefix", tw != TWEAK_NO_SPACE_PREFIX);
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, buf, &len), AS_OK);
    gguf_writer_free(w);
    free(tokens);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, *buf, len, "spm.gguf"), AS_OK);
    return f;
}

static void test_matches_llama_cpp(void **state) {
    (void)state;
    tokenizer *tok[2];
    gguf_file *f[2];
    uint8_t *buf[2];
    for (int p = 0; p < 2; p++) {
        f[p] = build_vocab(p ? TWEAK_NONE : TWEAK_NO_SPACE_PREFIX, &buf[p]);
        assert_int_equal(tokenizer_load(&tok[p], f[p]), AS_OK);
        assert_int_equal(tokenizer_n_vocab(tok[p]), g_vocab.n);
    }
    int n_cases = 0, n_bad = 0, n_roundtrip = 0, n_prefix[2] = {0, 0};
    char *copy = as_strdup(strchr(g_vectors, '\n') + 1);
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *rec = cJSON_Parse(line);
        assert_non_null(rec);
        const cJSON *text = cJSON_GetObjectItem(rec, "text"), *hex = cJSON_GetObjectItem(rec, "hex");
        char bytes[256];
        const char *s = text ? text->valuestring : bytes;
        size_t slen = text ? strlen(s) : strlen(hex->valuestring) / 2;
        if (!text) { // bytes that are not valid UTF-8
            assert_true(slen < sizeof bytes);
            for (size_t i = 0; i < slen; i++) {
                unsigned v;
                assert_int_equal(sscanf(hex->valuestring + 2 * i, "%2x", &v), 1);
                bytes[i] = (char)v;
            }
            bytes[slen] = 0;
        }
        const cJSON *ids = cJSON_GetObjectItem(rec, "ids");
        int prefix = cJSON_IsTrue(cJSON_GetObjectItem(rec, "add_space_prefix"));
        bool add_bos = cJSON_IsTrue(cJSON_GetObjectItem(rec, "add_bos"));
        bool special = cJSON_IsTrue(cJSON_GetObjectItem(rec, "special"));
        int32_t *got;
        size_t n_got;
        assert_int_equal(tokenizer_encode(tok[prefix], s, slen, add_bos, special, &got, &n_got), AS_OK);
        int n_want = cJSON_GetArraySize(ids);
        bool same = (int)n_got == n_want;
        for (int i = 0; same && i < n_want; i++) same = got[i] == cJSON_GetArrayItem(ids, i)->valueint;
        if (!same) {
            if (n_bad < 10) {
                fprintf(stderr, "mismatch for \"%s\" (space prefix %d, bos %d, special %d)\n  got :", s, prefix, add_bos, special);
                for (size_t i = 0; i < n_got; i++) fprintf(stderr, " %d", got[i]);
                fprintf(stderr, "\n  want:");
                for (int i = 0; i < n_want; i++) fprintf(stderr, " %d", cJSON_GetArrayItem(ids, i)->valueint);
                fprintf(stderr, "\n");
            }
            n_bad++;
        }
        if (cJSON_IsTrue(cJSON_GetObjectItem(rec, "roundtrip")) && !add_bos) {
            char *back = tokenizer_decode(tok[prefix], got, n_got, special);
            if (strcmp(back, s) != 0) {
                fprintf(stderr, "decode(encode(\"%s\")) = \"%s\" (space prefix %d)\n", s, back, prefix);
                n_bad++;
            }
            free(back);
            n_roundtrip++;
        }
        n_prefix[prefix]++;
        n_cases++;
        free(got);
        cJSON_Delete(rec);
    }
    free(copy);
    fprintf(stderr, "%d strings, %d round trips checked\n", n_cases, n_roundtrip);
    assert_true(n_prefix[0] >= 100 && n_prefix[1] >= 100);
    assert_true(n_roundtrip >= 150);
    assert_int_equal(n_bad, 0);
    for (int p = 0; p < 2; p++) {
        tokenizer_free(tok[p]);
        gguf_close(f[p]);
        free(buf[p]);
    }
}

static void test_pieces_and_decode(void **state) {
    (void)state;
    uint8_t *buf;
    gguf_file *f = build_vocab(TWEAK_NONE, &buf);
    tokenizer *t;
    assert_int_equal(tokenizer_load(&t, f), AS_OK);
    char piece[16];
    // Byte tokens are their byte; control tokens are empty unless rendered.
    assert_int_equal(tokenizer_token_to_piece(t, tokenizer_find(t, "<0x41>"), false, piece, sizeof piece), 1);
    assert_int_equal(piece[0], 'A');
    assert_int_equal(tokenizer_token_to_piece(t, tokenizer_find(t, "<end_of_turn>"), false, piece, sizeof piece), 0);
    assert_int_equal(tokenizer_token_to_piece(t, tokenizer_find(t, "<end_of_turn>"), true, piece, sizeof piece), 13);
    // User-defined tokens always show their text.
    assert_int_equal(tokenizer_token_to_piece(t, tokenizer_find(t, "<mask>"), false, piece, sizeof piece), 6);
    // "▁" is a space.
    int32_t sp = tokenizer_find(t, "\xe2\x96\x81");
    assert_true(sp >= 0);
    assert_int_equal(tokenizer_token_to_piece(t, sp, false, piece, sizeof piece), 1);
    assert_int_equal(piece[0], ' ');
    // <end_of_turn> ends generation, <start_of_turn> does not; eos does.
    assert_true(tokenizer_is_end(t, tokenizer_find(t, "<end_of_turn>")));
    assert_false(tokenizer_is_end(t, tokenizer_find(t, "<start_of_turn>")));
    assert_true(tokenizer_is_end(t, 2));
    // With BOS: add_special adds it, decode drops it and the prefix space.
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(t, "Hello world", 11, true, false, &ids, &n), AS_OK);
    assert_int_equal(ids[0], 1);
    char *back = tokenizer_decode(t, ids, n, false);
    assert_string_equal(back, "Hello world");
    free(back);
    free(ids);
    tokenizer_free(t);
    gguf_close(f);
    free(buf);
}

static void expect_load_error(tweak tw, const char *needle) {
    uint8_t *buf;
    gguf_file *f = build_vocab(tw, &buf);
    tokenizer *t = (tokenizer *)1;
    as_clear_error();
    assert_int_equal(tokenizer_load(&t, f), AS_FAIL);
    assert_null(t);
    const char *msg = as_last_error();
    if (!strstr(msg, needle) || !strstr(msg, "spm.gguf")) fprintf(stderr, "unexpected error: %s\n", msg);
    assert_non_null(strstr(msg, needle));
    assert_non_null(strstr(msg, "spm.gguf"));
    gguf_close(f);
    free(buf);
}

static void test_bad_vocabularies_are_named_errors(void **state) {
    (void)state;
    expect_load_error(TWEAK_BAD_MODEL, "unigram-xyz");
    expect_load_error(TWEAK_DUP_TOKEN, "duplicate token");
    expect_load_error(TWEAK_BOS_RANGE, "tokenizer.ggml.bos_token_id");
    expect_load_error(TWEAK_SHORT_SCORES, "tokenizer.ggml.scores");
}

// A minimal byte-level BPE vocabulary (the 256 byte characters) with the given pre-tokenizer.
static gguf_file *build_bpe(const char *pre, bool with_merges, uint8_t **buf) {
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "gpt2");
    // No BOS token; llama3 pre-tokenizers would add one by default.
    if (strcmp(pre, "llama3-default-bos") == 0) pre = "llama3";
    else gguf_write_bool(w, "tokenizer.ggml.add_bos_token", false);
    if (strcmp(pre, "default") != 0) gguf_write_str(w, "tokenizer.ggml.pre", pre); // none: llama.cpp's default
    char text[256][3];
    const char *tokens[258];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        if (!printable) continue;
        if (b < 0x80) text[n][0] = (char)b, text[n][1] = 0;
        else text[n][0] = (char)(0xc0 | (b >> 6)), text[n][1] = (char)(0x80 | (b & 0x3f)), text[n][2] = 0;
        tokens[n] = text[n];
        n++;
    }
    tokens[n++] = "ab";
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    const char *merges[] = {"a b"};
    if (with_merges) gguf_write_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, buf, &len), AS_OK);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, *buf, len, "bpe.gguf"), AS_OK);
    return f;
}

static void test_bpe_pre_tokenizer_names(void **state) {
    (void)state;
    const char *ok[] = {"smollm", "gpt2", "gpt-2", "llama-bpe", "llama3", "default"};
    for (int i = 0; i < 6; i++) {
        uint8_t *buf;
        gguf_file *f = build_bpe(ok[i], true, &buf);
        tokenizer *t;
        assert_int_equal(tokenizer_load(&t, f), AS_OK);
        int32_t *ids;
        size_t n;
        assert_int_equal(tokenizer_encode(t, "xab", 3, false, false, &ids, &n), AS_OK);
        assert_int_equal(n, 2); // "x" "ab": the merge applies inside the word
        assert_int_equal(ids[1], tokenizer_find(t, "ab"));
        free(ids);
        tokenizer_free(t);
        gguf_close(f);
        free(buf);
    }
    uint8_t *buf;
    gguf_file *f = build_bpe("qwen-unknown", true, &buf);
    tokenizer *t;
    assert_int_equal(tokenizer_load(&t, f), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "qwen-unknown"));
    assert_non_null(strstr(as_last_error(), "bpe.gguf"));
    gguf_close(f);
    free(buf);
    f = build_bpe("gpt2", false, &buf);
    assert_int_equal(tokenizer_load(&t, f), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "tokenizer.ggml.merges"));
    gguf_close(f);
    free(buf);
    // llama3 adds BOS unless the file says otherwise; without a BOS token that is an error.
    f = build_bpe("llama3-default-bos", true, &buf);
    assert_int_equal(tokenizer_load(&t, f), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "add_bos_token"));
    gguf_close(f);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_llama_cpp),
        cmocka_unit_test(test_pieces_and_decode),
        cmocka_unit_test(test_bad_vocabularies_are_named_errors),
        cmocka_unit_test(test_bpe_pre_tokenizer_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
