// Supervised fine-tuning data: the SFT layouts of ../shared/data/README.md
// read into conversations, and conversations turned into token sequences with
// a loss mask through the model's chat template.
//
// Layouts (JSONL, one example per line; blank lines skipped):
//   {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}   (UltraChat 200k;
//        an extra "prompt" field is ignored)
//   {"prompt": str, "response": str}
//   {"question": str, "answer": str}
// The last two become one user turn and one assistant turn.
#ifndef AS_TRAIN_SFT_H
#define AS_TRAIN_SFT_H

#include <stdint.h>

#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

typedef struct sft_example {
    chat_message *msgs;   // roles and contents (owned)
    size_t n_msgs;
} sft_example;

typedef struct sft_data {
    sft_example *ex;
    int64_t n;
} sft_data;

// -1 + as_error "<path>:<line>: ..." for a line that is not one of the
// layouts (bad JSON, missing field, unknown role, no assistant turn).
int sft_data_load(sft_data **out, const char *path);
void sft_data_free(sft_data *d);

// Tokens of the rendered conversation and the loss mask: 1 on every
// assistant turn's tokens and the end-of-turn token that closes it (what the
// model generates), 0 on everything else (system, user, template text).
// Sequences longer than max_len (> 0) are cut to max_len.  *tokens and *mask
// are heap arrays of *len entries.  -1 + as_error when the template cannot
// render the conversation or the answer does not end in an end-of-turn token.
int sft_encode(const tokenizer *tok, const chat_template *tpl, const sft_example *ex, int32_t max_len, int32_t **tokens,
               uint8_t **mask, int32_t *len);

#endif
