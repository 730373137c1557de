// SFT data (src/train/sft.h): the three layouts of ../shared/data/README.md,
// errors with file:line, and the answer-only loss mask through the default
// model's tokenizer and ChatML template (skipped when it is not fetched).
#include "test_common.h"

#include "model/model.h"
#include "train/checkpoint.h"
#include "train/sft.h"

#include <math.h>
#include "util/common.h"

static char dir[256], path[512];

static void write_text(const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_layouts(void **state) {
    (void)state;
    write_text("{\"prompt\": \"ignored\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"},"
               " {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n"
               "\n"
               "{\"prompt\": \"What is 1+1?\", \"response\": \"2\"}\r\n"
               "{\"question\": \"Capital of France?\", \"answer\": \"Paris\"}");
    sft_data *d;
    if (sft_data_load(&d, path)) fail_msg("%s", as_last_error());
    assert_int_equal(d->n, 3);
    assert_int_equal(d->ex[0].n_msgs, 5);
    assert_string_equal(d->ex[0].msgs[0].role, "system");
    assert_string_equal(d->ex[0].msgs[4].content, "4");
    assert_int_equal(d->ex[1].n_msgs, 2);
    assert_string_equal(d->ex[1].msgs[0].role, "user");
    assert_string_equal(d->ex[1].msgs[1].content, "2");
    assert_string_equal(d->ex[2].msgs[0].content, "Capital of France?");
    assert_string_equal(d->ex[2].msgs[1].role, "assistant");
    sft_data_free(d);
    struct { const char *text, *needle; } bad[] = {
        {"{\"prompt\": \"a\", \"response\": \"b\"}\n\n{\"prompt\": \"a\"", ":3: cut off: the last line has no newline"},
        {"{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\"\n", ":2: not valid JSON (column 14)"},
        {"[{\"prompt\": \"a\", \"response\": \"b\"}]\n", ":1: not a JSON object (an array)"},
        {"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", ":1: messages[0]: role 'robot'"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "no assistant turn"},
        {"{\"text\": \"x\"}", "expected {messages}"},
        {"{\"prompt\": 3, \"response\": \"b\"}", "string values"},
        {"\n\n", "no examples"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        write_text(bad[i].text);
        assert_int_equal(sft_data_load(&d, path), AS_FAIL);
        assert_null(d);
        const char *msg = as_last_error();
        if (!strstr(msg, path) || !strstr(msg, bad[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, msg, bad[i].needle);
        assert_null(strchr(msg, '\n'));
    }
    unlink(path);
}

// The shared data sets in the {prompt, response} and {question, answer} layouts.
static void test_shared_data(void **state) {
    (void)state;
    char p[1024];
    snprintf(p, sizeof p, "%s/dolly_hhrlhf", AS_SHARED_DATA);
    if (access(p, R_OK)) {
        printf("  skipped: %s absent\n", p);
        return;
    }
    const struct { const char *file; int64_t n; } sets[] = {{"dolly_hhrlhf/dolly_hhrlhf_train_small.jsonl", 1000}, {"gsm8k/train.jsonl", 7473}};
    for (size_t i = 0; i < AS_ARRAY_LEN(sets); i++) {
        snprintf(p, sizeof p, "%s/%s", AS_SHARED_DATA, sets[i].file);
        if (access(p, R_OK)) fail_msg("%s is missing from the shared data", p);
        sft_data *d;
        if (sft_data_load(&d, p)) fail_msg("%s", as_last_error());
        assert_int_equal(d->n, sets[i].n);
        assert_int_equal(d->ex[0].n_msgs, 2);
        printf("  %s: %lld examples\n", sets[i].file, (long long)d->n);
        sft_data_free(d);
    }
}

static void test_encode_default(void **state) {
    (void)state;
    const char *mp = as_test_default_model();
    if (!mp) {
        printf("  skipped: default model not fetched\n");
        return;
    }
    gguf_file *f;
    assert_int_equal(gguf_open(&f, mp), AS_OK);
    tokenizer *tok;
    chat_template tpl;
    if (tokenizer_load(&tok, f) || chat_template_init(&tpl, f, NULL)) fail_msg("%s", as_last_error());
    chat_message msgs[] = {{"system", "Be brief."}, {"user", "Hi there"}, {"assistant", "Hello! How can I help?"}, {"user", "2+2?"}, {"assistant", "4"}};
    sft_example ex = {msgs, AS_ARRAY_LEN(msgs)};
    int32_t *ids, len;
    uint8_t *mask;
    if (sft_encode(tok, &tpl, &ex, 0, &ids, &mask, &len)) fail_msg("%s", as_last_error());
    // The scored tokens decode to exactly the two answers, each closed by its end-of-turn token.
    int32_t scored[256], other[256];
    int ns = 0, no = 0;
    for (int i = 0; i < len; i++) {
        if (mask[i]) scored[ns++] = ids[i];
        else other[no++] = ids[i];
    }
    char *s = tokenizer_decode(tok, scored, (size_t)ns, true), *o = tokenizer_decode(tok, other, (size_t)no, true);
    assert_string_equal(s, "Hello! How can I help?<|im_end|>4<|im_end|>");
    assert_non_null(strstr(o, "Hi there"));
    assert_non_null(strstr(o, "Be brief."));
    assert_null(strstr(o, "How can I help"));
    assert_true(mask[0] == 0);
    printf("  %d tokens, %d scored: '%s'\n", len, ns, s);
    free(s), free(o);
    // Cut to a length: the mask follows.
    int32_t *ids2, len2;
    uint8_t *mask2;
    assert_int_equal(sft_encode(tok, &tpl, &ex, 10, &ids2, &mask2, &len2), AS_OK);
    assert_int_equal(len2, 10);
    assert_memory_equal(ids2, ids, sizeof(int32_t) * 10);
    assert_memory_equal(mask2, mask, 10);
    free(ids), free(mask), free(ids2), free(mask2);
    chat_template_free(&tpl);
    tokenizer_free(tok);
    gguf_close(f);
}

// A short LoRA run on the default model: the loss falls on data it sees
// repeatedly, the log has one line per step, and the outputs load back.
static void test_sft_train_default(void **state) {
    (void)state;
    const char *mp = as_test_default_model();
    if (!mp) {
        printf("  skipped: default model not fetched\n");
        return;
    }
    FILE *f = fopen(path, "wb");
    const char *qa[][2] = {{"What color is the sky?", "Blue."}, {"Name a fruit.", "Apple."}, {"2+3?", "5"}, {"Opposite of hot?", "Cold."},
                           {"Capital of Italy?", "Rome."}, {"Largest planet?", "Jupiter."}, {"H2O is?", "Water."}, {"First letter?", "A"},
                           {"Sound of a cat?", "Meow."}, {"Freezing point of water in C?", "0"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(qa); i++) fprintf(f, "{\"question\": \"%s\", \"answer\": \"%s\"}\n", qa[i][0], qa[i][1]);
    fclose(f);
    char out[600];
    snprintf(out, sizeof out, "%s/run", dir);
    sft_config c;
    sft_config_default(&c);
    c.model_path = mp, c.data_path = path, c.out_dir = out;
    c.lora_cfg.rank = 4, c.lora_cfg.alpha = 8.0f;
    c.optim.lr = 3e-3f;
    c.batch_size = 4, c.micro_batch = 2, c.epochs = 3, c.max_len = 96, c.eval_fraction = 0.2, c.eval_every = 2, c.seed = 1, c.quiet = true;
    sft_result r;
    const double t0 = as_time();
    if (sft_train(&c, &r)) fail_msg("%s", as_last_error());
    printf("  %lld steps in %.1f s: loss %.3f -> %.3f, eval loss %.3f (%lld train / %lld eval examples)\n", (long long)r.steps,
           as_time() - t0, r.first_loss, r.last_loss, r.eval_loss, (long long)r.train_examples, (long long)r.eval_examples);
    assert_int_equal(r.train_examples, 8);
    assert_int_equal(r.eval_examples, 2);
    assert_int_equal(r.steps, 6);
    assert_true(r.last_loss < r.first_loss);
    assert_true(isfinite(r.eval_loss));
    char p[700], *text;
    snprintf(p, sizeof p, "%s/log.jsonl", out);
    assert_int_equal(as_read_file(p, &text, NULL), AS_OK);
    int lines = 0, evals = 0;
    for (char *q = text; (q = strchr(q, '\n')); q++) lines++;
    for (char *q = text; (q = strstr(q, "eval_loss")); q++) evals++;
    assert_int_equal(lines, 6);
    assert_int_equal(evals, 3);
    free(text);
    // The adapters load back onto the base.
    train_model *m;
    assert_int_equal(train_model_load(&m, mp), AS_OK);
    if (train_lora_load_peft(m, out)) fail_msg("%s", as_last_error());
    assert_int_equal(m->lora->cfg.rank, 4);
    train_model_free(m);
    const char *files[] = {"log.jsonl", "adapter_model.safetensors", "adapter_config.json", "train_state.safetensors"};
    for (size_t i = 0; i < AS_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof p, "%s/%s", out, files[i]);
        assert_int_equal(unlink(p), 0);
    }
    rmdir(out);
    unlink(path);
}

int main(void) {
    char *d = as_test_tmpdir();
    if (!d) return 1;
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(path, sizeof path, "%s/sft.jsonl", dir);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_layouts), cmocka_unit_test(test_shared_data), cmocka_unit_test(test_encode_default),
                                       cmocka_unit_test(test_sft_train_default)};
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(dir);
    return rc;
}
