// Hugging Face tokenizer files (src/tokenizer/tokenizer_hf.h):
//  * the default model's GGUF tokenizer written as tokenizer.json +
//    tokenizer_config.json and read back gives llama.cpp's ids on every
//    string of tests/vectors/tok_smollm*.jsonl (the three byte-level
//    pre-tokenizers), the same special tokens and chat template (skipped
//    without the default model; tools/check_hf_export.py shows that
//    transformers' AutoTokenizer gives these ids on the exported files too);
//  * the synthetic SentencePiece vocabulary of tok_spm.jsonl goes through
//    tokenizer.json (merges derived from the scores) and back with llama.cpp's ids;
//  * hand-written tokenizer.json files: what is read, and one error line
//    naming the file and field for what is not supported.
#include "test_common.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_hf.h"
#include "util/common.h"

#include <cjson/cJSON.h>

static char g_dir[300];

static void write_text(const char *name, const char *text) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    assert_int_equal(as_write_file_atomic(p, text, strlen(text)), AS_OK);
}

static void remove_files(void) {
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"};
    char p[400];
    for (size_t i = 0; i < AS_ARRAY_LEN(files); i++) snprintf(p, sizeof p, "%s/%s", g_dir, files[i]), unlink(p);
}

// Every string of a vector file: `a` and `b` give the same ids, and those are
// the file's (llama.cpp's).  Returns the number of strings.
static int compare_on_vectors(const tokenizer *a, const tokenizer *b, const char *path, bool spm) {
    char *text;
    assert_int_equal(as_read_file(path, &text, NULL), AS_OK);
    int n = 0, bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(strchr(text, '\n') + 1, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        assert_non_null(rec);
        const cJSON *t = cJSON_GetObjectItem(rec, "text"), *hex = cJSON_GetObjectItem(rec, "hex"), *ids = cJSON_GetObjectItem(rec, "ids");
        // SPM vectors come for two add_space_prefix settings; the files here have it on.
        if (spm && !cJSON_IsTrue(cJSON_GetObjectItem(rec, "add_space_prefix"))) {
            cJSON_Delete(rec);
            continue;
        }
        char bytes[512];
        const char *s = t ? t->valuestring : bytes;
        size_t len = t ? strlen(s) : strlen(hex->valuestring) / 2;
        if (!t) {
            assert_true(len < sizeof bytes);
            for (size_t i = 0; i < len; i++) {
                unsigned v;
                assert_int_equal(sscanf(hex->valuestring + 2 * i, "%2x", &v), 1);
                bytes[i] = (char)v;
            }
        }
        const bool special = cJSON_IsTrue(cJSON_GetObjectItem(rec, "special")), add = cJSON_IsTrue(cJSON_GetObjectItem(rec, "add_bos"));
        int32_t *x, *y;
        size_t nx, ny;
        assert_int_equal(tokenizer_encode(a, s, len, add, special, &x, &nx), AS_OK);
        assert_int_equal(tokenizer_encode(b, s, len, add, special, &y, &ny), AS_OK);
        bool same = nx == ny && (int)nx == cJSON_GetArraySize(ids);
        for (size_t i = 0; same && i < nx; i++) same = x[i] == y[i] && y[i] == cJSON_GetArrayItem(ids, (int)i)->valueint;
        if (!same && bad++ < 5) {
            fprintf(stderr, "mismatch on \"%.80s\":", s);
            for (size_t i = 0; i < ny; i++) fprintf(stderr, " %d", y[i]);
            fprintf(stderr, "\n");
        }
        free(x), free(y);
        cJSON_Delete(rec);
        n++;
    }
    free(text);
    assert_int_equal(bad, 0);
    return n;
}

// The default model's tokenizer through the Hugging Face files, with each of
// the three byte-level pre-tokenizers.
static void test_default_model_roundtrip(void **state) {
    (void)state;
    const char *mp = as_test_default_model();
    if (!mp) {
        printf("  skipped: default model not fetched\n");
        return;
    }
    gguf_file *f;
    assert_int_equal(gguf_open(&f, mp), AS_OK);
    tokenizer *ref, *hf;
    assert_int_equal(tokenizer_load(&ref, f), AS_OK);
    if (tokenizer_hf_write(f, g_dir)) fail_msg("%s", as_last_error());
    if (tokenizer_load_hf(&hf, g_dir)) fail_msg("%s", as_last_error());
    assert_int_equal(tokenizer_n_vocab(hf), tokenizer_n_vocab(ref));
    assert_int_equal(tokenizer_bos(hf), tokenizer_bos(ref));
    assert_int_equal(tokenizer_eos(hf), tokenizer_eos(ref));
    for (int32_t id = 0; id < tokenizer_n_vocab(ref); id++) assert_int_equal(tokenizer_is_end(hf, id), tokenizer_is_end(ref, id));
    const int n = compare_on_vectors(ref, hf, AS_TEST_VECTORS "/tok_smollm.jsonl", false);
    printf("  smollm: %d strings, ids equal llama.cpp's through tokenizer.json\n", n);
    // The chat template survives (tokenizer_config.json) and renders the same.
    gguf_writer *w = gguf_writer_init();
    assert_int_equal(tokenizer_hf_read(w, g_dir, 0), AS_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &len), AS_OK);
    gguf_writer_free(w);
    gguf_file *g;
    assert_int_equal(gguf_open_buffer(&g, buf, len, "meta"), AS_OK);
    chat_template t1, t2;
    assert_int_equal(chat_template_init(&t1, f, NULL), AS_OK);
    assert_int_equal(chat_template_init(&t2, g, NULL), AS_OK);
    const chat_message msgs[] = {{"user", "Hi there"}, {"assistant", "Hello!"}};
    char *r1 = chat_render(&t1, msgs, 2, true), *r2 = chat_render(&t2, msgs, 2, true);
    assert_string_equal(r1, r2);
    free(r1), free(r2);
    chat_template_free(&t1), chat_template_free(&t2);
    gguf_close(g);
    free(buf);
    tokenizer_free(hf);
    // The other two byte-level pre-tokenizers.
    const char *pres[][2] = {{"gpt2", AS_TEST_VECTORS "/tok_smollm_gpt-2.jsonl"}, {"llama-bpe", AS_TEST_VECTORS "/tok_smollm_llama-bpe.jsonl"}};
    for (size_t p = 0; p < AS_ARRAY_LEN(pres); p++) {
        // The default model's vocabulary under another pre-tokenizer name.
        gguf_writer *w2 = gguf_writer_init();
        for (uint64_t i = 0; i < f->n_kv; i++) {
            char *key = gguf_str_dup(f->kv[i].key);
            if (!strncmp(key, "tokenizer.ggml.", 15) && strcmp(key, "tokenizer.ggml.pre")) {
                const gguf_kv *kv = &f->kv[i];
                if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING) {
                    char **s = as_malloc(sizeof(char *) * kv->n);
                    for (uint64_t j = 0; j < kv->n; j++) s[j] = gguf_str_dup(gguf_arr_str(f, (int64_t)i, j));
                    gguf_write_arr_str(w2, key, (const char *const *)s, kv->n);
                    for (uint64_t j = 0; j < kv->n; j++) free(s[j]);
                    free(s);
                } else if (kv->type == GGUF_TYPE_ARRAY) {
                    gguf_write_arr(w2, key, kv->arr_type, kv->data, kv->n);
                } else if (kv->type == GGUF_TYPE_STRING) {
                    char *s = gguf_str_dup(kv->str);
                    gguf_write_str(w2, key, s);
                    free(s);
                } else {
                    gguf_write_val(w2, key, kv->type, kv->data);
                }
            }
            free(key);
        }
        gguf_write_str(w2, "tokenizer.ggml.pre", pres[p][0]);
        assert_int_equal(gguf_writer_to_buffer(w2, &buf, &len), AS_OK);
        gguf_writer_free(w2);
        gguf_file *fp;
        assert_int_equal(gguf_open_buffer(&fp, buf, len, pres[p][0]), AS_OK);
        tokenizer *tp, *hp;
        assert_int_equal(tokenizer_load(&tp, fp), AS_OK);
        if (tokenizer_hf_write(fp, g_dir)) fail_msg("%s", as_last_error());
        if (tokenizer_load_hf(&hp, g_dir)) fail_msg("%s", as_last_error());
        printf("  %s: %d strings equal\n", pres[p][0], compare_on_vectors(tp, hp, pres[p][1], false));
        tokenizer_free(tp), tokenizer_free(hp);
        gguf_close(fp);
        free(buf);
    }
    tokenizer_free(ref);
    gguf_close(f);
    remove_files();
}

// tok_spm.jsonl's SentencePiece vocabulary: GGUF -> tokenizer.json -> GGUF.
static void test_spm_roundtrip(void **state) {
    (void)state;
    char *text;
    assert_int_equal(as_read_file(AS_TEST_VECTORS "/tok_spm.jsonl", &text, NULL), AS_OK);
    *strchr(text, '\n') = 0;
    cJSON *v = cJSON_Parse(text);
    free(text);
    const cJSON *tokens = cJSON_GetObjectItem(v, "tokens"), *scores = cJSON_GetObjectItem(v, "scores"), *types = cJSON_GetObjectItem(v, "types");
    const int n = cJSON_GetArraySize(tokens);
    const char **tk = as_malloc(sizeof(char *) * (size_t)n);
    float *sc = as_malloc(sizeof(float) * (size_t)n);
    int32_t *ty = as_malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        tk[i] = cJSON_GetArrayItem(tokens, i)->valuestring;
        sc[i] = (float)cJSON_GetArrayItem(scores, i)->valuedouble;
        ty[i] = cJSON_GetArrayItem(types, i)->valueint;
    }
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "llama");
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tk, (uint64_t)n);
    gguf_write_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, sc, (uint64_t)n);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ty, (uint64_t)n);
    gguf_write_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_write_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_write_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_write_bool(w, "tokenizer.ggml.add_space_prefix", true);
    uint8_t *buf;
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &len), AS_OK);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, buf, len, "spm.gguf"), AS_OK);
    tokenizer *ref, *hf;
    assert_int_equal(tokenizer_load(&ref, f), AS_OK);
    if (tokenizer_hf_write(f, g_dir)) fail_msg("%s", as_last_error());
    if (tokenizer_load_hf(&hf, g_dir)) fail_msg("%s", as_last_error());
    assert_int_equal(tokenizer_n_vocab(hf), n);
    assert_int_equal(tokenizer_bos(hf), 1);
    printf("  spm: %d strings equal llama.cpp's through tokenizer.json\n", compare_on_vectors(ref, hf, AS_TEST_VECTORS "/tok_spm.jsonl", true));
    tokenizer_free(ref), tokenizer_free(hf);
    gguf_close(f);
    free(buf), free(tk), free(sc), free(ty);
    cJSON_Delete(v);
    remove_files();
}

// A small hand-written byte-level tokenizer.json ("Ġ" is the space byte).
#define VOCAB "{\"<|endoftext|>\": 0, \"a\": 1, \"b\": 2, \"\\u0120\": 3, \"ab\": 4, \"\\u0120ab\": 5, \"1\": 6, \"2\": 7}"
#define SMOL_PRE                                                                                                                           \
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, {\"type\": \"ByteLevel\", "       \
    "\"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}]}"
static void write_tokenizer(const char *pre, const char *model_type, const char *extra_added) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 0, \"content\": \"<|endoftext|>\", \"special\": true}%s], \"normalizer\": null,"
             " \"pre_tokenizer\": %s, \"post_processor\": null, \"decoder\": null, \"model\": {\"type\": \"%s\", \"vocab\": " VOCAB
             ", \"merges\": [\"a b\", [\"\\u0120\", \"ab\"]]}}",
             extra_added, pre, model_type);
    write_text("tokenizer.json", json);
}

static void expect_error(const char *needle) {
    tokenizer *t = (tokenizer *)1;
    assert_int_equal(tokenizer_load_hf(&t, g_dir), AS_FAIL);
    assert_null(t);
    const char *msg = as_last_error();
    if (!strstr(msg, needle) || !strstr(msg, g_dir) || strchr(msg, '\n')) fail_msg("'%s' lacks '%s' or the folder", msg, needle);
}

static void test_handwritten(void **state) {
    (void)state;
    write_tokenizer(SMOL_PRE, "BPE", ", {\"id\": 9, \"content\": \"<tool>\", \"special\": false}");
    write_text("tokenizer_config.json", "{\"eos_token\": {\"content\": \"<|endoftext|>\"}, \"chat_template\": \"{{ x }}\"}");
    write_text("chat_template.jinja", "{% for m in messages %}<|im_start|>{% endfor %}");
    tokenizer *t;
    if (tokenizer_load_hf(&t, g_dir)) fail_msg("%s", as_last_error());
    assert_int_equal(tokenizer_n_vocab(t), 10); // id 8 is a hole, padded
    assert_int_equal(tokenizer_eos(t), 0);
    assert_int_equal(tokenizer_bos(t), -1);
    assert_int_equal(tokenizer_find(t, "[PAD8]"), 8);
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(t, "ab ab12<tool><|endoftext|>", 26, true, true, &ids, &n), AS_OK);
    const int32_t want[] = {4, 5, 6, 7, 9, 0}; // digits split one by one; user-defined and control tokens cut out
    assert_int_equal(n, AS_ARRAY_LEN(want));
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    tokenizer_free(t);
    // chat_template.jinja wins over tokenizer_config.json's.
    gguf_writer *w = gguf_writer_init();
    assert_int_equal(tokenizer_hf_read(w, g_dir, 12), AS_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &len), AS_OK);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, buf, len, "meta"), AS_OK);
    gguf_str s;
    assert_int_equal(gguf_get_str(f, "tokenizer.chat_template", &s), AS_OK);
    assert_true(gguf_str_eq(s, "{% for m in messages %}<|im_start|>{% endfor %}"));
    uint64_t nt;
    gguf_type at;
    int64_t kv;
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", &at, &nt, &kv), AS_OK);
    assert_int_equal(nt, 12); // padded to the model's vocabulary
    gguf_close(f);
    free(buf);
    remove_files();

    // Refusals, one line each, naming the file.
    write_tokenizer("{\"type\": \"Whitespace\"}", "BPE", "");
    expect_error("pre_tokenizer {\"type\":\"Whitespace\"} is not supported");
    write_tokenizer(SMOL_PRE, "WordPiece", "");
    expect_error("model.type 'WordPiece' is not supported");
    write_tokenizer(SMOL_PRE, "BPE", ", {\"id\": -3, \"content\": \"x\"}");
    expect_error("added_tokens[1]");
    write_tokenizer(SMOL_PRE, "BPE", ", {\"id\": 1, \"content\": \"zz\"}");
    expect_error("differs from the vocabulary");
    write_tokenizer(SMOL_PRE, "BPE", "");
    write_text("tokenizer_config.json", "{\"bos_token\": \"<s>\"}");
    expect_error("tokenizer_config.json: bos_token '<s>' is not a token");
    write_text("tokenizer_config.json", "{\"add_bos_token\": true}");
    expect_error("add_bos_token is set but there is no bos_token");
    write_text("tokenizer_config.json", "[1, 2");
    expect_error("tokenizer_config.json: not a JSON object");
    remove_files();
    write_text("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}, \"pre_tokenizer\": " SMOL_PRE "}");
    expect_error("model.merges[0]");
    write_text("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}, \"pre_tokenizer\": " SMOL_PRE "}");
    expect_error("id 0 is given to");
    write_text("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": " SMOL_PRE "}");
    expect_error("normalizer 'NFKC'");
    write_text("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"continuing_subword_prefix\": \"##\"}, \"pre_tokenizer\": " SMOL_PRE "}");
    expect_error("model.continuing_subword_prefix '##'");
    write_text("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"dropout\": 0.1}, \"pre_tokenizer\": " SMOL_PRE "}");
    expect_error("model.dropout");
    remove_files();
    expect_error("tokenizer.json");
    // A GGUF tokenizer without a Hugging Face equivalent is not exported.
    gguf_writer *wg = gguf_writer_init();
    gguf_write_str(wg, "tokenizer.ggml.model", "gpt2");
    gguf_write_str(wg, "tokenizer.ggml.pre", "qwen2");
    assert_int_equal(gguf_writer_to_buffer(wg, &buf, &len), AS_OK);
    gguf_writer_free(wg);
    assert_int_equal(gguf_open_buffer(&f, buf, len, "q.gguf"), AS_OK);
    assert_int_equal(tokenizer_hf_write(f, g_dir), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "tokenizer.ggml.pre 'qwen2'"));
    gguf_close(f);
    free(buf);
}

int main(void) {
    char *d = as_test_tmpdir();
    if (!d) return 1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_handwritten), cmocka_unit_test(test_spm_roundtrip),
                                       cmocka_unit_test(test_default_model_roundtrip)};
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    remove_files();
    rmdir(g_dir);
    return rc;
}
