// A tiny random llama model (F32 weights, grouped-query attention) with a tiny
// byte-level BPE vocabulary, written with gguf_writer, for the generation
// tests.  The vocabulary decodes to printable ASCII, a space token, two
// halves of a UTF-8 character ("é" = C3 A9, as separate byte tokens) and the
// ChatML control tokens, so that texts are NUL-free and streaming has to hold
// back incomplete UTF-8.
#ifndef AS_TEST_TINY_LLAMA_H
#define AS_TEST_TINY_LLAMA_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tensor/quant.h"
#include "util/rng.h"

typedef struct tiny_llama_cfg {
    int n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    ggml_type wtype; // matrices: F32 or a quantised type (rows are multiples of its block)
    uint64_t seed;
    int n_vocab; // 0: the vocabulary below; more: padded with unused control tokens (a real model's vocabulary size)
} tiny_llama_cfg;

static inline tiny_llama_cfg tiny_llama_default(void) {
    return (tiny_llama_cfg){.n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .n_ff = 96, .n_ctx = 256,
                            .wtype = GGML_TYPE_F32, .seed = 1};
}

#define TINY_MAX_TOKENS 128
// Token texts in GPT-2's byte-to-unicode alphabet: printable ASCII maps to itself,
// the space byte to U+0120 'Ġ', bytes 0xC3 / 0xA9 to U+00C3 'Ã' / U+00A9 '©'.
static inline int tiny_llama_vocab(const char **tok, int32_t *type) {
    static char ascii[95][2];
    int n = 0;
    for (int c = 33; c <= 126; c++) {
        ascii[c - 33][0] = (char)c, ascii[c - 33][1] = 0;
        type[n] = 1, tok[n++] = ascii[c - 33];
    }
    static const char *const words[] = {"\xC4\xA0", "\xC4\xA0the", "ing", "\xC4\xA0" "and", "\xC4\xA0Hello",
                                        "\xC3\x83", "\xC2\xA9", "\xC4\x8A" /* newline */};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) type[n] = 1, tok[n++] = words[i];
    type[n] = 3, tok[n++] = "<|im_start|>";
    type[n] = 3, tok[n++] = "<|im_end|>";
    return n;
}
#define TINY_IM_END_TEXT "<|im_end|>"

static inline void tiny_fill(float *x, size_t n, double scale, double offset, as_rng *r) {
    for (size_t i = 0; i < n; i++) {
        double u1 = as_rng_uniform(r), u2 = as_rng_uniform(r);
        x[i] = (float)(offset + scale * sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
    }
}

// rows == 0: a vector (norm weights, always F32).
static inline void tiny_tensor(gguf_writer *w, as_rng *r, const char *name, ggml_type type, int64_t cols, int64_t rows,
                               double scale, double offset) {
    size_t nr = (size_t)(rows > 0 ? rows : 1), n = (size_t)cols * nr;
    float *x = malloc(n * sizeof *x);
    tiny_fill(x, n, scale, offset, r);
    int64_t ne[2] = {cols, rows};
    if (rows == 0 || type == GGML_TYPE_F32) {
        gguf_write_tensor(w, name, GGML_TYPE_F32, rows > 0 ? 2 : 1, ne, x, n * sizeof *x);
    } else {
        size_t rb = quant_row_size(type, cols);
        uint8_t *q = malloc(rb * nr);
        for (size_t i = 0; i < nr; i++) quant_quantize_row(type, x + i * cols, q + i * rb, cols);
        gguf_write_tensor(w, name, type, 2, ne, q, rb * nr);
        free(q);
    }
    free(x);
}

// Writes the model to `path`; returns 0 or -1 (as_error set by the writer).
static inline int tiny_llama_write(const char *path, const tiny_llama_cfg *c, int *n_vocab_out) {
    const size_t cap = (size_t)(c->n_vocab > TINY_MAX_TOKENS ? c->n_vocab : TINY_MAX_TOKENS);
    const char **tok = malloc(sizeof *tok * cap);
    int32_t *type = malloc(sizeof *type * cap);
    char *unused = malloc(cap * 20);
    const int V0 = tiny_llama_vocab(tok, type); // bos, eos: its last two
    int V = V0;
    for (; V < c->n_vocab; V++) {
        char *u = unused + (size_t)(V - V0) * 20;
        snprintf(u, 20, "<unused_%d>", V - V0);
        type[V] = 3, tok[V] = u;
    }
    if (n_vocab_out) *n_vocab_out = V;
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "general.architecture", "llama");
    gguf_write_str(w, "general.name", "tiny-test");
    gguf_write_u32(w, "llama.context_length", (uint32_t)c->n_ctx);
    gguf_write_u32(w, "llama.embedding_length", (uint32_t)c->n_embd);
    gguf_write_u32(w, "llama.block_count", (uint32_t)c->n_layer);
    gguf_write_u32(w, "llama.feed_forward_length", (uint32_t)c->n_ff);
    gguf_write_u32(w, "llama.attention.head_count", (uint32_t)c->n_head);
    gguf_write_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_head_kv);
    gguf_write_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_write_f32(w, "llama.rope.freq_base", 10000.0f);
    gguf_write_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_write_str(w, "tokenizer.ggml.pre", "gpt2");
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tok, (uint64_t)V);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, (uint64_t)V);
    gguf_write_arr_str(w, "tokenizer.ggml.merges", NULL, 0);
    gguf_write_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(V0 - 2));
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(V0 - 1));

    as_rng r;
    as_rng_seed(&r, c->seed);
    const int64_t C = c->n_embd, hd = C / c->n_head, kv = (int64_t)c->n_head_kv * hd;
    const double s = 1.0 / sqrt((double)C);
    tiny_tensor(w, &r, "token_embd.weight", c->wtype, C, V, 1.0, 0.0);
    tiny_tensor(w, &r, "output_norm.weight", c->wtype, C, 0, 0.1, 1.0);
    tiny_tensor(w, &r, "output.weight", c->wtype, C, V, 2.0 * s, 0.0);
    for (int l = 0; l < c->n_layer; l++) {
        char name[64];
#define TINY_T(suffix, cols, rows, scale, off) \
    (snprintf(name, sizeof name, "blk.%d." suffix ".weight", l), tiny_tensor(w, &r, name, c->wtype, cols, rows, scale, off))
        TINY_T("attn_norm", C, 0, 0.1, 1.0);
        TINY_T("attn_q", C, C, 2.0 * s, 0.0);
        TINY_T("attn_k", C, kv, 2.0 * s, 0.0);
        TINY_T("attn_v", C, kv, s, 0.0);
        TINY_T("attn_output", C, C, s, 0.0);
        TINY_T("ffn_norm", C, 0, 0.1, 1.0);
        TINY_T("ffn_gate", C, c->n_ff, s, 0.0);
        TINY_T("ffn_up", C, c->n_ff, s, 0.0);
        TINY_T("ffn_down", c->n_ff, C, 1.0 / sqrt((double)c->n_ff), 0.0);
#undef TINY_T
    }
    int rc = gguf_writer_save(w, path);
    gguf_writer_free(w);
    free(tok), free(type), free(unused);
    return rc;
}

#endif
