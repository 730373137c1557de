// libFuzzer target for the Hugging Face folder parsers (model/model_hf.h,
// tokenizer/tokenizer_hf.h).  data[0] picks the mode, the rest is the input:
//  0  config.json: model_hf_parse_config succeeds with sizes in range or fails
//     with a message, never crashes;
//  1  tokenizer.json, optionally followed by a NUL byte and tokenizer_config.json:
//     tokenizer_hf_parse either fails with a message or writes keys that
//     tokenizer_load accepts (then a short text encodes to ids inside the
//     vocabulary), or refuses with a message.
// fuzz-libs: as_model as_tokenizer as_tensor as_gguf as_util
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_hf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_hf.h"
#include "util/common.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_hf: property violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    if (data[0] % 2 == 0) {
        model_config c;
        if (model_hf_parse_config(&c, text, len, "config.json") == AS_OK) {
            check(c.n_vocab >= 1 && c.n_embd >= 1 && c.n_layer >= 1 && c.n_head >= 1 && c.n_head_kv >= 1, "sizes >= 1");
            check(c.n_head % c.n_head_kv == 0 && c.head_dim % 2 == 0 && c.n_rot == c.head_dim, "head layout");
            check(c.rms_eps > 0 && c.rms_eps < 1 && c.rope_theta > 1, "eps and theta in range");
        } else {
            check(*as_last_error() != 0, "an error message");
        }
        return 0;
    }
    const char *nul = memchr(text, 0, len);
    const size_t tok_len = nul ? (size_t)(nul - text) : len;
    const char *cfg = nul ? nul + 1 : NULL;
    const size_t cfg_len = nul ? len - tok_len - 1 : 0;
    gguf_writer *w = gguf_writer_init();
    if (tokenizer_hf_parse(w, text, tok_len, cfg, cfg_len, NULL, 0, "fuzz") != AS_OK) {
        check(*as_last_error() != 0, "an error message");
        gguf_writer_free(w);
        return 0;
    }
    uint8_t *buf;
    size_t n;
    check(gguf_writer_to_buffer(w, &buf, &n) == AS_OK, "serialise");
    gguf_writer_free(w);
    gguf_file *f;
    check(gguf_open_buffer(&f, buf, n, "fuzz.gguf") == AS_OK, "the written keys form a valid GGUF");
    tokenizer *t;
    if (tokenizer_load(&t, f) == AS_OK) {
        int32_t *ids;
        size_t k;
        static const char s[] = "Hello, world! 123 <|endoftext|> \xe2\x96\x81x";
        if (tokenizer_encode(t, s, sizeof s - 1, true, true, &ids, &k) == AS_OK) {
            for (size_t i = 0; i < k; i++) check(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t), "ids inside the vocabulary");
            free(ids);
        }
        tokenizer_free(t);
    }
    gguf_close(f);
    free(buf);
    return 0;
}
