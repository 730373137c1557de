// Tokenizers read from GGUF metadata:
//  - byte-level BPE (tokenizer.ggml.model = "gpt2") with the pre-tokenizer
//    named by tokenizer.ggml.pre (smollm, gpt2, llama-bpe, ...), using PCRE2
//    for the Unicode regular expressions;
//  - SentencePiece-style BPE (tokenizer.ggml.model = "llama"), as Gemma uses.
// Control tokens are matched in the text when parse_special is set; user-defined
// tokens always are (as llama.cpp and Hugging Face do).  Token ids equal
// llama.cpp's (tests/vectors/tok_*.jsonl, from tools/tok_vectors.py and
// tools/make_spm_vocab.py).  Invalid UTF-8 is read as llama.cpp reads it (each
// bad byte is U+FFFD); it is never an error.
#ifndef AS_TOKENIZER_H
#define AS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

typedef struct tokenizer tokenizer;

int tokenizer_load(tokenizer **out, const gguf_file *f);
void tokenizer_free(tokenizer *t);

// Encodes text (UTF-8, len bytes).  add_bos follows tokenizer.ggml.add_bos_token
// when add_special is true.  *ids is heap-allocated (free()).
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t **ids, size_t *n_ids);
// The bytes a token stands for (byte-level decode; SPM "▁" is a space, <0xXX> its
// byte; control/unknown tokens give their text only if render_special, user-defined
// tokens always).  Returns bytes written, or the size needed if > cap (then
// nothing is written).  0 for ids outside the vocabulary.
size_t tokenizer_token_to_piece(const tokenizer *t, int32_t id, bool render_special, char *buf, size_t cap);
// Decodes a whole sequence into a heap string (NUL-terminated): the pieces
// concatenated, so decode(encode(s)) == s.  For SPM with add_space_prefix the
// space the encoder put in front (first text token, after an optional BOS) is
// removed.  Unlike llama.cpp's detokenize, no clean-up of spaces is applied.
char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool render_special);

int32_t tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t); // -1 if none
int32_t tokenizer_eos(const tokenizer *t);
// True for tokens that end generation (eos, eot, <|im_end|>, <end_of_turn>, ...).
bool tokenizer_is_end(const tokenizer *t, int32_t id);
int32_t tokenizer_find(const tokenizer *t, const char *text); // exact token text -> id, or -1

#endif
