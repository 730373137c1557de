// Chat templates against jinja2: tests/vectors/chat_templates.json holds what
// the real templates (SmolLM2's ChatML, Gemma 3, Llama 3) render for a set of
// conversations (tools/chat_vectors.py).  Each template is put into a GGUF as
// tokenizer.chat_template, recognised, and chat_render must match byte for byte.
#include "test_common.h"
#include "tokenizer/chat.h"
#include "util/common.h"

#include <cjson/cJSON.h>

static cJSON *g_vec;

static int setup(void **state) {
    (void)state;
    char *buf;
    size_t len;
    if (as_read_file(AS_TEST_VECTORS "/chat_templates.json", &buf, &len) != 0) return -1;
    g_vec = cJSON_Parse(buf);
    free(buf);
    return g_vec ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    cJSON_Delete(g_vec);
    return 0;
}

// A GGUF with just a chat template (may be NULL) and a two-token vocabulary whose BOS is `bos`.
static gguf_file *file_with_template(const char *tmpl, const char *bos, uint8_t **buf) {
    gguf_writer *w = gguf_writer_init();
    if (tmpl) gguf_write_str(w, "tokenizer.chat_template", tmpl);
    const char *tokens[] = {"<pad>", bos ? bos : "<s>"};
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tokens, 2);
    if (bos) gguf_write_u32(w, "tokenizer.ggml.bos_token_id", 1);
    size_t len;
    assert_int_equal(gguf_writer_to_buffer(w, buf, &len), AS_OK);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, *buf, len, "chat.gguf"), AS_OK);
    return f;
}

static void test_render_matches_jinja(void **state) {
    (void)state;
    const cJSON *templates = cJSON_GetObjectItem(g_vec, "templates"), *bos = cJSON_GetObjectItem(g_vec, "bos");
    const cJSON *fam;
    int n_cases = 0, n_errors = 0, n_bad = 0;
    cJSON_ArrayForEach(fam, templates) {
        uint8_t *buf;
        gguf_file *f = file_with_template(fam->valuestring, cJSON_GetObjectItem(bos, fam->string)->valuestring, &buf);
        chat_template ct;
        assert_int_equal(chat_template_init(&ct, f, NULL), AS_OK);
        assert_string_equal(chat_family_name(ct.family), fam->string);
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_vec, "cases")) {
            if (strcmp(cJSON_GetObjectItem(c, "family")->valuestring, fam->string) != 0) continue;
            const cJSON *msgs = cJSON_GetObjectItem(c, "messages");
            size_t n = (size_t)cJSON_GetArraySize(msgs);
            chat_message m[16];
            assert_true(n <= 16);
            for (size_t i = 0; i < n; i++) {
                const cJSON *mi = cJSON_GetArrayItem(msgs, (int)i);
                m[i].role = cJSON_GetObjectItem(mi, "role")->valuestring;
                m[i].content = cJSON_GetObjectItem(mi, "content")->valuestring;
            }
            bool gen = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
            char *got = chat_render(&ct, m, n, gen);
            const cJSON *want = cJSON_GetObjectItem(c, "rendered");
            if (want) {
                if (!got || strcmp(got, want->valuestring) != 0) {
                    fprintf(stderr, "%s, %zu messages, gen %d:\n  got  \"%s\"\n  want \"%s\"\n", fam->string, n, gen, got ? got : "(null)",
                            want->valuestring);
                    n_bad++;
                }
            } else {
                // The template raises; so must we, with a message.
                if (got) fprintf(stderr, "%s: expected an error (%s), rendered \"%s\"\n", fam->string, cJSON_GetObjectItem(c, "error")->valuestring, got);
                n_bad += got != NULL || !*as_last_error();
                n_errors++;
            }
            free(got);
            n_cases++;
        }
        chat_template_free(&ct);
        gguf_close(f);
        free(buf);
    }
    assert_true(n_cases >= 90);
    assert_true(n_errors >= 4);
    assert_int_equal(n_bad, 0);
}

static void test_default_model_template(void **state) {
    (void)state;
    const char *path = as_test_default_model();
    if (!path) {
        fprintf(stderr, "default model not fetched: checking the vector's copy of its template only\n");
        return;
    }
    gguf_file *f;
    assert_int_equal(gguf_open(&f, path), AS_OK);
    chat_template ct;
    assert_int_equal(chat_template_init(&ct, f, NULL), AS_OK);
    assert_int_equal(ct.family, CHAT_FAMILY_CHATML);
    assert_string_equal(ct.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    assert_string_equal(chat_turn_end(&ct), "<|im_end|>\n");
    chat_message m = {"user", "Hi"};
    char *s = chat_render(&ct, &m, 1, true);
    assert_string_equal(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    chat_template_free(&ct);
    gguf_close(f);
}

static void test_selection_and_errors(void **state) {
    (void)state;
    uint8_t *buf;
    chat_template ct;
    // A template of no known family: the error names the file and the option.
    gguf_file *f = file_with_template("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}", "<s>", &buf);
    assert_int_equal(chat_template_init(&ct, f, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "chat.gguf"));
    assert_non_null(strstr(as_last_error(), "unrecognised chat template"));
    assert_non_null(strstr(as_last_error(), "--chat-template chatml|gemma|llama3"));
    // ... which --chat-template overrides; an unknown name is an error too.
    assert_int_equal(chat_template_init(&ct, f, "llama3"), AS_OK);
    assert_int_equal(ct.family, CHAT_FAMILY_LLAMA3);
    assert_string_equal(chat_turn_end(&ct), "<|eot_id|>");
    assert_null(ct.default_system);
    chat_template_free(&ct);
    assert_int_equal(chat_template_init(&ct, f, "vicuna"), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "vicuna"));
    assert_non_null(strstr(as_last_error(), "--chat-template"));
    gguf_close(f);
    free(buf);
    // No template at all.
    f = file_with_template(NULL, NULL, &buf);
    assert_int_equal(chat_template_init(&ct, f, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "--chat-template"));
    assert_int_equal(chat_template_init(&ct, f, "gemma"), AS_OK);
    assert_string_equal(ct.bos_text, "");
    assert_string_equal(chat_turn_end(&ct), "<end_of_turn>\n");
    chat_message m[2] = {{"system", "S"}, {"user", " u "}};
    char *s = chat_render(&ct, m, 2, true);
    assert_string_equal(s, "<start_of_turn>user\nS\n\nu<end_of_turn>\n<start_of_turn>model\n");
    free(s);
    chat_template_free(&ct);
    gguf_close(f);
    free(buf);
    // A plain ChatML template has no default system prompt.
    f = file_with_template("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}",
                           "<s>", &buf);
    assert_int_equal(chat_template_init(&ct, f, NULL), AS_OK);
    assert_int_equal(ct.family, CHAT_FAMILY_CHATML);
    assert_null(ct.default_system);
    chat_template_free(&ct);
    gguf_close(f);
    free(buf);
    assert_int_equal(chat_family_from_name("chatml"), CHAT_FAMILY_CHATML);
    assert_int_equal(chat_family_from_name("nope"), CHAT_FAMILY_NONE);
    assert_int_equal(chat_family_from_name(NULL), CHAT_FAMILY_NONE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_matches_jinja),
        cmocka_unit_test(test_default_model_template),
        cmocka_unit_test(test_selection_and_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
