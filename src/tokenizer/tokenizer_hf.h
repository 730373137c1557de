// Hugging Face tokenizer files <-> the GGUF tokenizer metadata that
// tokenizer_load and chat_template_init read.
//
// Reading (tokenizer.json of HF `tokenizers`, tokenizer_config.json,
// chat_template.jinja): the model must be BPE.  Byte-level BPE maps onto
// tokenizer.ggml.model "gpt2" with the pre-tokenizer recognised from its
// exact definition (smollm: Digits(individual) + ByteLevel; gpt2: ByteLevel;
// llama-bpe: the Llama-3 Split regex + ByteLevel without regex); anything
// else is an error that names the pre-tokenizer.  SentencePiece-style BPE
// (byte_fallback, "▁" for spaces: Llama 2, Gemma) maps onto "llama", with
// token scores derived from the merge ranks (the merge that builds a token
// earlier gives it a higher score), which reproduces the merge order.
// Added tokens become control tokens (special) or user-defined ones; ids
// missing from the vocabulary are padded as "[PAD<i>]" (unused), as llama.cpp's
// converter does.  BOS/EOS/UNK/PAD come from tokenizer_config.json, add_bos /
// add_eos from it or from the post-processor, the chat template from
// chat_template.jinja or tokenizer_config.json.
//
// Writing: the inverse, for train_export_hf, so that transformers'
// AutoTokenizer on the folder gives the same ids (tools/check_hf_export.py).
#ifndef AS_TOKENIZER_HF_H
#define AS_TOKENIZER_HF_H

#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

// Writes the tokenizer.* keys parsed from the texts of tokenizer.json (required),
// tokenizer_config.json and chat_template.jinja (either may be NULL) into w.
// The vocabulary is padded to at least n_vocab tokens (0: no padding).  `name`
// (the folder) prefixes the errors: -1 + as_error naming the file and field.
int tokenizer_hf_parse(gguf_writer *w, const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len, const char *jinja,
                       int32_t n_vocab, const char *name);
// The same from the files of folder dir.
int tokenizer_hf_read(gguf_writer *w, const char *dir, int32_t n_vocab);
// A tokenizer straight from a Hugging Face folder.
int tokenizer_load_hf(tokenizer **out, const char *dir);

// Writes dir/tokenizer.json and dir/tokenizer_config.json (atomically) from
// the tokenizer metadata of f.  -1 + as_error when f's tokenizer has no
// Hugging Face equivalent here (another pre-tokenizer or tokenizer model).
int tokenizer_hf_write(const gguf_file *f, const char *dir);

#endif
