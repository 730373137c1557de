// Private to src/tokenizer: the tokenizer's tables, shared by tokenizer.c
// (loading, special-token partition, decoding), bpe.c (byte-level BPE with
// regex pre-tokenizers) and spm.c (SentencePiece-style BPE).
#ifndef AS_TOKENIZER_IMPL_H
#define AS_TOKENIZER_IMPL_H

#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
};

typedef enum tokenizer_kind { TOKENIZER_KIND_BPE, TOKENIZER_KIND_SPM } tokenizer_kind;

// Open-addressing hash set of strings stored elsewhere: entry i is the byte
// range buf[off[i] .. off[i+1]).  Maps a string to the smallest index holding it.
typedef struct strmap {
    uint64_t *slots; // (high 32 bits of the hash) << 32 | (entry index + 1); 0 = empty; power-of-two count
    size_t mask;
    const char *buf;
    const uint64_t *off;
} strmap;

void strmap_init(strmap *m, const char *buf, const uint64_t *off, size_t n_entries);
void strmap_free(strmap *m);
// Inserts entry i; returns -1 if new, else the index already holding the same string.
int32_t strmap_put(strmap *m, int32_t i);
int32_t strmap_get(const strmap *m, const char *s, size_t len);

// Growable token-id output.
typedef struct tok_vec {
    int32_t *ids;
    size_t n, cap;
} tok_vec;
void tok_vec_push(tok_vec *v, int32_t id);

#define TOKENIZER_MAX_REGEX 4

struct tokenizer {
    tokenizer_kind kind;
    int32_t n_vocab;
    // Token texts, one contiguous buffer: token i is text[text_off[i] .. text_off[i+1]).
    char *text;
    uint64_t *text_off;
    float *score;   // (n_vocab) SPM merge priority; 0 when the file has none
    uint8_t *type;  // (n_vocab) TOKEN_TYPE_*
    bool *is_end;   // (n_vocab) ends generation
    strmap token_map;

    int32_t bos, eos, eot, eom, unk; // -1 when absent
    bool add_bos, add_eos, add_space_prefix;

    // Control, user-defined and unknown tokens, longest text first: the order in
    // which llama.cpp's tokenizer_st_partition splits them out of the text.
    int32_t *special;
    int32_t n_special;

    // Byte-level BPE.
    char *merge_text; // merges as stored ("left right"), contiguous
    uint64_t *merge_off;
    int32_t n_merges;
    strmap merge_map;
    char *pre_name;
    pcre2_code *regex[TOKENIZER_MAX_REGEX];
    int n_regex;
    bool ignore_merges;          // a pre-token that is itself a token skips merging (llama3)
    char byte_char[256][3];      // GPT-2 byte -> printable code point, UTF-8 ...
    uint8_t byte_char_len[256];  // ... and its length (1 or 2)
    int16_t char_byte[324];      // inverse: code point (< 324) -> byte, -1 if none

    // SPM: token for each raw byte (<0xXX>, else the one-byte token, else unk, else -1).
    int32_t byte_token[256];
};

// Byte-level BPE: splits one raw-text fragment with the pre-tokenizer regexes
// and appends the merged tokens.  -1 + as_error on a regex failure.
int bpe_encode_fragment(const tokenizer *t, const char *text, size_t len, tok_vec *out);
// Compiles the pre-tokenizer named by tokenizer.ggml.pre (NULL: llama.cpp's default).
int bpe_init_pre(tokenizer *t, const char *pre, const char *path);
void bpe_free(tokenizer *t);
// SPM: `text` already carries the space prefix; spaces become U+2581 inside.
void spm_encode_fragment(const tokenizer *t, const char *text, size_t len, tok_vec *out);

static inline const char *tok_text(const tokenizer *t, int32_t id, size_t *len) {
    *len = (size_t)(t->text_off[id + 1] - t->text_off[id]);
    return t->text + t->text_off[id];
}

#endif
