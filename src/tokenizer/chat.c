// Chat templates: the three turn formats alphaspin's models use, written out
// in C rather than interpreting Jinja.  Each renderer reproduces one reference
// template exactly (tools/chat_vectors.py renders them with jinja2):
//  - ChatML, SmolLM2-Instruct's template: a default system turn (whose text is
//    read from the template) when the first message is not a system message;
//  - Gemma 3: {{ bos_token }}, no system role (the system text plus a separator
//    is prepended to the first turn), "assistant" is called "model", content is
//    trimmed, roles must alternate user/assistant;
//  - Llama 3 (Meta-Llama-3-Instruct): {{ bos_token }} before the first header,
//    content trimmed, every turn closed by <|eot_id|>.
#include "tokenizer/chat.h"

#include "util/common.h"

#include <string.h>

static const char k_hint[] = "select one with --chat-template chatml|gemma|llama3";

chat_family chat_family_from_name(const char *name) {
    if (!name) return CHAT_FAMILY_NONE;
    if (strcmp(name, "chatml") == 0) return CHAT_FAMILY_CHATML;
    if (strcmp(name, "gemma") == 0) return CHAT_FAMILY_GEMMA;
    if (strcmp(name, "llama3") == 0) return CHAT_FAMILY_LLAMA3;
    return CHAT_FAMILY_NONE;
}

const char *chat_family_name(chat_family f) {
    switch (f) {
    case CHAT_FAMILY_CHATML: return "chatml";
    case CHAT_FAMILY_GEMMA: return "gemma";
    case CHAT_FAMILY_LLAMA3: return "llama3";
    default: return "none";
    }
}

static chat_family family_from_template(const char *tmpl) {
    if (strstr(tmpl, "<|im_start|>")) return CHAT_FAMILY_CHATML;
    if (strstr(tmpl, "<start_of_turn>")) return CHAT_FAMILY_GEMMA;
    if (strstr(tmpl, "<|start_header_id|>")) return CHAT_FAMILY_LLAMA3;
    return CHAT_FAMILY_NONE;
}

// The contents of the Jinja string literal that starts right after the opening
// quote at `p` (quote char q), with escapes resolved; NULL if unterminated.
// *end is set past the closing quote.
static char *jinja_literal(const char *p, char q, const char **end) {
    size_t cap = strlen(p) + 1, n = 0;
    char *out = as_malloc(cap);
    for (; *p && *p != q; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            switch (*p) {
            case 'n': out[n++] = '\n'; break;
            case 't': out[n++] = '\t'; break;
            case 'r': out[n++] = '\r'; break;
            default: out[n++] = *p; break; // \' \" \\ and anything else: the character itself
            }
        } else {
            out[n++] = *p;
        }
    }
    if (*p != q) {
        free(out);
        return NULL;
    }
    out[n] = 0;
    *end = p + 1;
    return out;
}

// SmolLM2's template writes its default system turn as one constant:
//   '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n'
// Find a string literal that starts with "<|im_start|>system\n" and contains
// <|im_end|>; the text between is the default system prompt.  Templates that
// build the system turn from messages[0] have no such constant literal.
static char *find_default_system(const char *tmpl) {
    static const char head[] = "<|im_start|>system\n", tail[] = "<|im_end|>";
    for (const char *p = tmpl; (p = strpbrk(p, "'\"")) != NULL;) {
        const char *end;
        char *lit = jinja_literal(p + 1, *p, &end);
        if (!lit) return NULL;
        char *close;
        if (strncmp(lit, head, sizeof head - 1) == 0 && (close = strstr(lit, tail)) != NULL) {
            *close = 0;
            char *sys = as_strdup(lit + sizeof head - 1);
            free(lit);
            return sys;
        }
        free(lit);
        p = end;
    }
    return NULL;
}

// Gemma 3: `set first_user_prefix = messages[0]['content'] + '\n\n'`.
static char *find_gemma_separator(const char *tmpl) {
    static const char key[] = "first_user_prefix = messages[0]['content'] + ";
    const char *p = strstr(tmpl, key);
    if (!p) return as_strdup("\n\n");
    p += sizeof key - 1;
    const char *end;
    char *lit = (*p == '\'' || *p == '"') ? jinja_literal(p + 1, *p, &end) : NULL;
    return lit ? lit : as_strdup("\n\n");
}

static char *bos_text(const gguf_file *f) {
    uint32_t bos;
    gguf_type at;
    uint64_t n;
    int64_t kv;
    if (gguf_find_key(f, "tokenizer.ggml.bos_token_id") < 0 || gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos) != 0 ||
        gguf_find_key(f, "tokenizer.ggml.tokens") < 0 || gguf_get_arr(f, "tokenizer.ggml.tokens", &at, &n, &kv) != 0 ||
        at != GGUF_TYPE_STRING || bos >= n) {
        as_clear_error();
        return as_strdup("");
    }
    return gguf_str_dup(gguf_arr_str(f, kv, bos));
}

int chat_template_init(chat_template *t, const gguf_file *f, const char *override) {
    memset(t, 0, sizeof *t);
    const char *path = f && f->path ? f->path : "(gguf)";
    char *tmpl = NULL;
    if (f && gguf_find_key(f, "tokenizer.chat_template") >= 0) {
        gguf_str s;
        if (gguf_get_str(f, "tokenizer.chat_template", &s) != 0) return AS_FAIL;
        tmpl = gguf_str_dup(s);
    }
    if (override) {
        t->family = chat_family_from_name(override);
        if (t->family == CHAT_FAMILY_NONE) {
            free(tmpl);
            return as_error("--chat-template: unknown template '%s' (expected chatml, gemma or llama3)", override);
        }
    } else if (!tmpl) {
        return as_error("%s: no tokenizer.chat_template in the file; %s", path, k_hint);
    } else {
        t->family = family_from_template(tmpl);
        if (t->family == CHAT_FAMILY_NONE) {
            free(tmpl);
            return as_error("%s: unrecognised chat template; %s", path, k_hint);
        }
    }
    // Details come from the file's template only when it is of the chosen family.
    bool same = tmpl && family_from_template(tmpl) == t->family;
    if (t->family == CHAT_FAMILY_CHATML && same) t->default_system = find_default_system(tmpl);
    t->system_sep = (same && t->family == CHAT_FAMILY_GEMMA) ? find_gemma_separator(tmpl) : as_strdup("\n\n");
    t->bos_text = f ? bos_text(f) : as_strdup("");
    free(tmpl);
    return AS_OK;
}

void chat_template_free(chat_template *t) {
    free(t->default_system);
    free(t->bos_text);
    free(t->system_sep);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------

// Python's str.isspace (what Jinja's `trim` strips) for one UTF-8 code point at
// s (len bytes available); returns its length, or 0 if it is not whitespace.
static size_t space_len(const unsigned char *s, size_t len) {
    if (s[0] < 0x80) return ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20)) ? 1 : 0;
    uint32_t cp = 0;
    size_t k = 0;
    if ((s[0] & 0xe0) == 0xc0 && len >= 2) cp = ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f), k = 2;
    else if ((s[0] & 0xf0) == 0xe0 && len >= 3) cp = ((uint32_t)(s[0] & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f), k = 3;
    else return 0;
    bool ws = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
              cp == 0x202f || cp == 0x205f || cp == 0x3000;
    return ws ? k : 0;
}

// Jinja `| trim`: content without leading and trailing whitespace.
static void sb_add_trimmed(as_sbuf *b, const char *content) {
    const unsigned char *s = (const unsigned char *)content;
    size_t len = strlen(content), start = 0, end = len;
    for (size_t k; start < len && (k = space_len(s + start, len - start)) > 0;) start += k;
    // From the right: find the last code point that is not whitespace.
    size_t last_end = start;
    for (size_t i = start; i < len;) {
        size_t k = space_len(s + i, len - i);
        if (k) {
            i += k;
            continue;
        }
        size_t cl = 1;
        while (i + cl < len && (s[i + cl] & 0xc0) == 0x80) cl++;
        i += cl;
        last_end = i;
    }
    end = last_end;
    as_sb_add(b, content + start, end - start);
}

static char *render_chatml(const chat_template *t, const chat_message *m, size_t n, bool gen) {
    as_sbuf b = {0};
    as_sb_puts(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && t->default_system && strcmp(m[0].role, "system") != 0) {
            as_sb_puts(&b, "<|im_start|>system\n");
            as_sb_puts(&b, t->default_system);
            as_sb_puts(&b, "<|im_end|>\n");
        }
        as_sb_puts(&b, "<|im_start|>");
        as_sb_puts(&b, m[i].role);
        as_sb_puts(&b, "\n");
        as_sb_puts(&b, m[i].content);
        as_sb_puts(&b, "<|im_end|>\n");
    }
    if (gen) as_sb_puts(&b, "<|im_start|>assistant\n");
    return b.s;
}

static char *render_gemma(const chat_template *t, const chat_message *m, size_t n, bool gen) {
    if (n == 0) { // the template reads messages[0]['role'] and fails on an empty list
        as_error("chat template gemma: no messages to render");
        return NULL;
    }
    as_sbuf b = {0};
    as_sb_puts(&b, t->bos_text);
    const char *system = NULL;
    if (n > 0 && strcmp(m[0].role, "system") == 0) {
        system = m[0].content;
        m++, n--;
    }
    for (size_t i = 0; i < n; i++) {
        bool is_user = strcmp(m[i].role, "user") == 0;
        if (is_user != (i % 2 == 0)) {
            free(b.s);
            as_error("chat template gemma: conversation roles must alternate user/assistant/user/assistant/... (message %zu is '%s')",
                     i + (system != NULL), m[i].role);
            return NULL;
        }
        as_sb_puts(&b, "<start_of_turn>");
        as_sb_puts(&b, strcmp(m[i].role, "assistant") == 0 ? "model" : m[i].role);
        as_sb_puts(&b, "\n");
        if (i == 0 && system) {
            as_sb_puts(&b, system);
            as_sb_puts(&b, t->system_sep);
        }
        sb_add_trimmed(&b, m[i].content);
        as_sb_puts(&b, "<end_of_turn>\n");
    }
    if (gen) as_sb_puts(&b, "<start_of_turn>model\n");
    return b.s;
}

static char *render_llama3(const chat_template *t, const chat_message *m, size_t n, bool gen) {
    as_sbuf b = {0};
    as_sb_puts(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (i == 0) as_sb_puts(&b, t->bos_text);
        as_sb_puts(&b, "<|start_header_id|>");
        as_sb_puts(&b, m[i].role);
        as_sb_puts(&b, "<|end_header_id|>\n\n");
        sb_add_trimmed(&b, m[i].content);
        as_sb_puts(&b, "<|eot_id|>");
    }
    if (gen) as_sb_puts(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return b.s;
}

char *chat_render(const chat_template *t, const chat_message *msgs, size_t n, bool add_generation_prompt) {
    switch (t->family) {
    case CHAT_FAMILY_CHATML: return render_chatml(t, msgs, n, add_generation_prompt);
    case CHAT_FAMILY_GEMMA: return render_gemma(t, msgs, n, add_generation_prompt);
    case CHAT_FAMILY_LLAMA3: return render_llama3(t, msgs, n, add_generation_prompt);
    default: as_error("chat template: none selected; %s", k_hint); return NULL;
    }
}

const char *chat_turn_end(const chat_template *t) {
    switch (t->family) {
    case CHAT_FAMILY_CHATML: return "<|im_end|>\n";
    case CHAT_FAMILY_GEMMA: return "<end_of_turn>\n";
    case CHAT_FAMILY_LLAMA3: return "<|eot_id|>";
    default: return "";
    }
}
