// Chat templates.  The family of the GGUF's tokenizer.chat_template is
// recognised (ChatML as SmolLM2 uses, including its default system prompt;
// Gemma's turn format; Llama 3's headers); an unknown template is an error that
// names the --chat-template option that selects one by hand.  chat_render gives
// byte for byte what the model's Jinja template renders (tests/vectors/
// chat_templates.json, from tools/chat_vectors.py with jinja2), including the
// BOS text where the template writes {{ bos_token }} (Gemma, Llama 3): encode a
// rendered prompt with add_special = false and parse_special = true.
#ifndef AS_CHAT_H
#define AS_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "gguf/gguf.h"

typedef enum chat_family { CHAT_FAMILY_NONE = 0, CHAT_FAMILY_CHATML, CHAT_FAMILY_GEMMA, CHAT_FAMILY_LLAMA3 } chat_family;

typedef struct chat_template {
    chat_family family;
    char *default_system; // ChatML with a built-in system prompt (SmolLM2), else NULL
    char *bos_text;       // text of the BOS token, written where the template writes bos_token ("" if none)
    char *system_sep;     // Gemma: what joins the system text to the first user turn ("\n\n")
} chat_template;

typedef struct chat_message {
    const char *role;    // "system", "user", "assistant"
    const char *content;
} chat_message;

// From the file's tokenizer.chat_template, or by name when `override` is not
// NULL ("chatml", "gemma", "llama3").  -1 + as_error naming --chat-template otherwise.
int chat_template_init(chat_template *t, const gguf_file *f, const char *override);
void chat_template_free(chat_template *t);
chat_family chat_family_from_name(const char *name);
const char *chat_family_name(chat_family f);
// Renders messages into a heap string; add_generation_prompt appends the opening of
// the assistant turn.  Special tokens appear as text (encode with parse_special).
// NULL + as_error where the template itself raises (Gemma: roles that do not
// alternate user/assistant).
char *chat_render(const chat_template *t, const chat_message *msgs, size_t n, bool add_generation_prompt);
// The text that closes an assistant turn ("<|im_end|>\n", "<end_of_turn>\n", "<|eot_id|>").
const char *chat_turn_end(const chat_template *t);

#endif
