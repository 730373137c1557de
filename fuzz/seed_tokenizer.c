// Seed corpus for fuzz_tokenizer: texts for each tokenizer mode (first byte
// 0-2, see fuzz_tokenizer.c) and, for mode 3, small tokenizer GGUFs (BPE with
// merges and a ChatML template, SPM with scores and byte tokens) to mutate.
// Usage: seed_tokenizer OUTDIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "util/common.h"

static int save(const char *dir, const char *name, uint8_t mode, const void *data, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *buf = as_malloc(len + 1);
    buf[0] = mode;
    memcpy(buf + 1, data, len);
    int rc = as_write_file_atomic(path, buf, len + 1);
    free(buf);
    if (rc) fprintf(stderr, "seed_tokenizer: %s\n", as_last_error());
    return rc;
}

static int save_gguf(const char *dir, const char *name, gguf_writer *w) {
    uint8_t *buf;
    size_t len;
    int rc = gguf_writer_to_buffer(w, &buf, &len);
    gguf_writer_free(w);
    if (rc) {
        fprintf(stderr, "seed_tokenizer: %s\n", as_last_error());
        return rc;
    }
    rc = save(dir, name, 3, buf, len);
    free(buf);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    if (as_mkdir_p(dir)) {
        fprintf(stderr, "seed_tokenizer: %s\n", as_last_error());
        return 1;
    }
    static const char *const texts[] = {
        "Hello world, the weather's fine.\n\n  Indented\tline 12345",
        "<|im_start|>user\nhi<|im_end|>\n<u>x",
        "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xe2\x96\x81 ab ba aab",
        "bad \xff\xc0\x80 \xed\xa0\x80 bytes",
    };
    int rc = 0;
    char name[64];
    for (int mode = 0; mode < 3; mode++)
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            snprintf(name, sizeof name, "text_%d_%zu", mode, i);
            rc |= save(dir, name, (uint8_t)(mode | (i % 4) << 2), texts[i], strlen(texts[i]));
        }

    const char *bpe_tokens[] = {"a", "b", "ab", "\xc4\xa0", ("\xc4\xa0" "ab"), "<|im_start|>", "<|im_end|>"};
    int32_t bpe_types[] = {1, 1, 1, 1, 1, 3, 3};
    const char *merges[] = {"a b", "\xc4\xa0 ab"};
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_write_str(w, "tokenizer.ggml.pre", "smollm");
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", bpe_tokens, 7);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, bpe_types, 7);
    gguf_write_arr_str(w, "tokenizer.ggml.merges", merges, 2);
    gguf_write_u32(w, "tokenizer.ggml.bos_token_id", 5);
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", 6);
    gguf_write_str(w, "tokenizer.chat_template",
                   "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}{% endfor %}");
    rc |= save_gguf(dir, "vocab_bpe", w);

    const char *spm_tokens[] = {"<unk>", "<s>", "</s>", "<0x41>", "\xe2\x96\x81", "a", ("\xe2\x96\x81" "a"), "<start_of_turn>"};
    float scores[] = {0, 0, 0, 0, -1, -2, -0.5f, 0};
    int32_t spm_types[] = {2, 3, 3, 6, 1, 1, 1, 3};
    w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "llama");
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", spm_tokens, 8);
    gguf_write_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 8);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, spm_types, 8);
    gguf_write_str(w, "tokenizer.chat_template", "{{ bos_token }}<start_of_turn>user\n");
    rc |= save_gguf(dir, "vocab_spm", w);
    return rc ? 1 : 0;
}
