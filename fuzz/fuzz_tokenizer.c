// libFuzzer target for the tokenizers and the chat-template loader.
//
// data[0] picks the mode, the rest is the input:
//  0, 1  encode with a synthetic byte-level BPE vocabulary (pre-tokenizer smollm
//        or llama-bpe), 2: with a synthetic SentencePiece vocabulary;
//  3     the input is a GGUF file: tokenizer_load and chat_template_init must
//        either succeed or fail with a message, never crash.
// Properties checked on every text input:
//  - tokenizer_encode succeeds and every id is inside the vocabulary;
//  - both vocabularies can spell every byte, so for well-formed UTF-8 (without
//    U+2581, which SPM decodes as a space) decode(encode(s)) == s, rendering
//    the special tokens exactly when they were parsed;
//  - token_to_piece agrees with decode token by token.
// fuzz-libs: as_tokenizer as_gguf as_util
#define _GNU_SOURCE // memmem
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "util/common.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_tokenizer: property violated: %s\n", what);
        abort();
    }
}

// Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t k = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
        if (!k || i + k > n) return 0;
        uint32_t cp = k == 1 ? b : k == 2 ? (b & 0x1fu) : k == 3 ? (b & 0x0fu) : (b & 0x07u);
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += k;
    }
    return 1;
}

typedef struct vocab {
    uint8_t *buf;
    gguf_file *file;
    tokenizer *tok;
} vocab;

static void vocab_open(vocab *v, gguf_writer *w) {
    size_t len;
    check(gguf_writer_to_buffer(w, &v->buf, &len) == 0, "writing the synthetic vocabulary");
    gguf_writer_free(w);
    check(gguf_open_buffer(&v->file, v->buf, len, "vocab.gguf") == 0, "reading the synthetic vocabulary");
    if (tokenizer_load(&v->tok, v->file) != 0) {
        fprintf(stderr, "%s\n", as_last_error());
        abort();
    }
}

// The 256 GPT-2 byte characters, a few merges, two control and one user-defined token.
static void make_bpe(vocab *v, const char *pre) {
    static char text[256][3];
    const char *tokens[266];
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)extra++;
        if (cp < 0x80) text[n][0] = (char)cp, text[n][1] = 0;
        else text[n][0] = (char)(0xc0 | (cp >> 6)), text[n][1] = (char)(0x80 | (cp & 0x3f)), text[n][2] = 0;
        tokens[n] = text[n];
        n++;
    }
    const char *more[] = {"\xc4\xa0t", "th", "the", "\xc4\xa0the", "in", "er", "<|im_start|>", "<|im_end|>", "<u>"};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) tokens[n++] = more[i];
    int32_t types[266];
    for (int i = 0; i < n; i++) types[i] = i >= n - 3 ? (i == n - 1 ? 4 : 3) : 1;
    const char *merges[] = {"\xc4\xa0 t", "t h", "th e", "\xc4\xa0t he", "i n", "e r", "h e"};
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_write_str(w, "tokenizer.ggml.pre", pre);
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    gguf_write_arr_str(w, "tokenizer.ggml.merges", merges, sizeof merges / sizeof merges[0]);
    gguf_write_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)n - 3);
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)n - 2);
    gguf_write_bool(w, "tokenizer.ggml.add_bos_token", 1);
    vocab_open(v, w);
}

// <unk> <s> </s>, the byte tokens, "▁", a few pieces with scores, a user-defined token.
static void make_spm(vocab *v) {
    static char bytes[256][8];
    const char *tokens[280];
    float scores[280];
    int32_t types[280];
    int n = 0;
    const char *head[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) tokens[n] = head[i], scores[n] = 0, types[n] = i ? 3 : 2, n++;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[n] = bytes[b], scores[n] = 0, types[n] = 6, n++;
    }
    const char *pieces[] = {"\xe2\x96\x81", "a", "b", "ab", ("\xe2\x96\x81" "a"), ("\xe2\x96\x81" "ab"), "ba", "aa", "<m>"};
    for (int i = 0; i < 9; i++) tokens[n] = pieces[i], scores[n] = (float)-(i % 4), types[n] = i == 8 ? 4 : 1, n++;
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "llama");
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    gguf_write_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)n);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    gguf_write_bool(w, "tokenizer.ggml.add_space_prefix", 0);
    vocab_open(v, w);
}

static void fuzz_text(const tokenizer *t, const uint8_t *s, size_t n, int flags, int spm) {
    int parse_special = flags & 1, add_special = (flags >> 1) & 1;
    int32_t *ids;
    size_t n_ids;
    check(tokenizer_encode(t, (const char *)s, n, add_special, parse_special, &ids, &n_ids) == 0, "encode succeeds");
    int32_t nv = tokenizer_n_vocab(t);
    for (size_t i = 0; i < n_ids; i++) check(ids[i] >= 0 && ids[i] < nv, "ids inside the vocabulary");
    char *back = tokenizer_decode(t, ids, n_ids, parse_special);
    if (memchr(s, 0, n)) { // decode gives a C string: text with NUL bytes cannot be compared
        free(back);
        free(ids);
        return;
    }
    size_t back_len = strlen(back);
    if (!add_special && valid_utf8(s, n) && !(spm && memmem(s, n, "\xe2\x96\x81", 3)))
        check(back_len == n && memcmp(back, s, n) == 0, "decode(encode(s)) == s");
    // Piece by piece gives the same bytes as decode (no SPM prefix to strip here);
    // decode's C string ends early where a piece holds a NUL (an overlong C0 80 in
    // the input is read as U+0000, as llama.cpp reads it).
    char *cat = malloc(back_len + 64 * n_ids + 1);
    size_t pos = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t k = tokenizer_token_to_piece(t, ids[i], parse_special, cat + pos, 64);
        check(k <= 64, "pieces are short");
        pos += k;
    }
    check(pos >= back_len && memcmp(cat, back, back_len) == 0 && (pos == back_len || cat[back_len] == 0),
          "pieces spell the decoded text");
    free(cat);
    free(back);
    free(ids);
}

static void fuzz_gguf(const uint8_t *data, size_t size) {
    gguf_file *f;
    if (gguf_open_buffer(&f, data, size, "fuzz.gguf") != 0) return;
    tokenizer *t;
    as_clear_error();
    if (tokenizer_load(&t, f) == 0) {
        int32_t *ids;
        size_t n;
        static const char probe[] = "Hello <|im_start|> world 123\n\xc3\xa9";
        check(tokenizer_encode(t, probe, sizeof probe - 1, 1, 1, &ids, &n) == 0, "encode with a fuzzed vocabulary");
        for (size_t i = 0; i < n; i++) check(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t), "ids inside a fuzzed vocabulary");
        free(tokenizer_decode(t, ids, n, 1));
        free(ids);
        tokenizer_free(t);
    } else {
        check(strncmp(as_last_error(), "fuzz.gguf", 9) == 0, "load errors name the file");
    }
    chat_template ct;
    if (chat_template_init(&ct, f, NULL) == 0) {
        chat_message m[2] = {{"system", "s"}, {"user", " hi "}};
        free(chat_render(&ct, m, 2, 1));
        chat_template_free(&ct);
    }
    gguf_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static vocab bpe[2], spm;
    static int ready;
    if (!ready) {
        make_bpe(&bpe[0], "smollm");
        make_bpe(&bpe[1], "llama-bpe");
        make_spm(&spm);
        ready = 1;
    }
    if (size == 0) return 0;
    int mode = data[0] & 3, flags = data[0] >> 2;
    data++, size--;
    if (mode < 2) fuzz_text(bpe[mode].tok, data, size, flags, 0);
    else if (mode == 2) fuzz_text(spm.tok, data, size, flags, 1);
    else fuzz_gguf(data, size);
    return 0;
}
