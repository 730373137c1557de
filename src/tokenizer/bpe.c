// Byte-level BPE (GPT-2 style, tokenizer.ggml.model = "gpt2").
//
// Encoding one fragment of raw text:
//  1. invalid UTF-8 becomes U+FFFD, as llama.cpp's unicode_cpts_from_utf8 does;
//  2. pre-tokenization: each regex of the pre-tokenizer splits every piece into
//     its matches and the gaps between them (llama.cpp's unicode_regex_split),
//     so later regexes never join text across an earlier split;
//  3. each piece ("word") is mapped byte by byte to printable code points (the
//     GPT-2 byte<->unicode table) and merged: repeatedly the adjacent pair with
//     the lowest merge rank is joined, ties going to the leftmost pair;
//  4. each final symbol is looked up in the vocabulary.
#include "tokenizer/tokenizer_impl.h"

#include "util/common.h"

#include <string.h>

// The regexes, verbatim from llama.cpp (src/llama-vocab.cpp, llm_tokenizer_bpe).
static const char k_re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
static const char k_re_llama3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char k_re_digit[] = "\\p{N}";

typedef struct pre_tokenizer {
    const char *names; // '|'-separated tokenizer.ggml.pre values
    const char *regex[TOKENIZER_MAX_REGEX];
    bool llama3; // ignore_merges and BOS by default, as llama.cpp sets for these
} pre_tokenizer;

static const pre_tokenizer k_pre[] = {
    {"smollm|starcoder|refact|command-r|codeshell|exaone|minerva-7b", {k_re_digit, k_re_gpt2}, false},
    {"gpt2|gpt-2|phi-2|mpt|olmo|jais", {k_re_gpt2}, false},
    {"llama-bpe|llama3|llama-v3|falcon3", {k_re_llama3}, true},
    {"dbrx|smaug-bpe", {k_re_llama3}, false},
    // llama.cpp's fallback when the file names no pre-tokenizer.
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", k_re_gpt2, "\\p{N}+", "[0-9][0-9][0-9]"}, false},
};

static bool name_in_list(const char *name, const char *list) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t)(bar - p) : strlen(p);
        if (k == n && memcmp(p, name, n) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

// llama.cpp classifies characters by its own table (unicode-data.cpp, Unicode
// 15.1, whitespace from Python's `regex` \s, i.e. the White_Space property).
// PCRE2 10.42 (Debian 12) has Unicode 14 tables, and its \s still counts U+180E
// MONGOLIAN VOWEL SEPARATOR as a space.  So the regexes are kept as llama.cpp
// writes them and, when compiled, \s/\S become the explicit White_Space set and
// \p{L}/\p{N} gain the letters and numbers Unicode 15.0/15.1 assigned (Kawi, Nag
// Mundari, Kaktovik numerals, CJK extensions H and I, ...; the full difference
// between PCRE2's tables and Unicode 15.1, printed by tools/unicode_classes.py).
#define WHITE_SPACE "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define LETTERS_15                                                                                                              \
    "\\p{L}\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{1B132}"  \
    "\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define NUMBERS_15 "\\p{N}\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"

static char *translate_classes(const char *re) {
    size_t n = strlen(re);
    char *out = as_malloc(n * (sizeof LETTERS_15 + 3) + 1);
    size_t o = 0;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < n) {
            char d = re[i + 1];
            const char *set = NULL;
            size_t skip = 1;
            if (d == 's') set = WHITE_SPACE;
            else if (d == 'p' && strncmp(re + i, "\\p{L}", 5) == 0) set = LETTERS_15, skip = 4;
            else if (d == 'p' && strncmp(re + i, "\\p{N}", 5) == 0) set = NUMBERS_15, skip = 4;
            if (set || (d == 'S' && !in_class)) {
                // Inside a class the set's items join it; outside they form one.
                if (d == 'S') o += (size_t)sprintf(out + o, "[^%s]", WHITE_SPACE);
                else o += (size_t)sprintf(out + o, in_class ? "%s" : "[%s]", set);
            } else {
                out[o++] = c;
                out[o++] = d;
            }
            i += skip;
            continue;
        }
        if (c == '[') in_class = true;
        else if (c == ']') in_class = false;
        out[o++] = c;
    }
    out[o] = 0;
    return out;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
// other 68 bytes for code points 256, 257, ... in byte order.
static void init_byte_tables(tokenizer *t) {
    for (size_t i = 0; i < AS_ARRAY_LEN(t->char_byte); i++) t->char_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)extra++;
        t->char_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->byte_char[b][0] = (char)cp;
            t->byte_char_len[b] = 1;
        } else {
            t->byte_char[b][0] = (char)(0xc0 | (cp >> 6));
            t->byte_char[b][1] = (char)(0x80 | (cp & 0x3f));
            t->byte_char_len[b] = 2;
        }
    }
}

int bpe_init_pre(tokenizer *t, const char *pre, const char *path) {
    init_byte_tables(t);
    const char *name = pre ? pre : "default";
    const pre_tokenizer *p = NULL;
    for (size_t i = 0; i < AS_ARRAY_LEN(k_pre); i++)
        if (name_in_list(name, k_pre[i].names)) p = &k_pre[i];
    if (!p)
        return as_error("%s: tokenizer.ggml.pre '%s' is not a supported pre-tokenizer (supported: smollm, gpt2, llama-bpe and their aliases)",
                        path, name);
    t->pre_name = as_strdup(name);
    t->ignore_merges = p->llama3;
    if (p->llama3) t->add_bos = true;
    for (int i = 0; i < TOKENIZER_MAX_REGEX && p->regex[i]; i++) {
        char *re = translate_classes(p->regex[i]);
        int err;
        PCRE2_SIZE erroff;
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff, NULL);
        free(re);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            return as_error("%s: pre-tokenizer '%s': regex %d does not compile at offset %zu: %s", path, name, i, (size_t)erroff, msg);
        }
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); // optional: the interpreter is the fallback
        t->regex[t->n_regex++] = code;
    }
    return AS_OK;
}

void bpe_free(tokenizer *t) {
    for (int i = 0; i < t->n_regex; i++) pcre2_code_free(t->regex[i]);
    t->n_regex = 0;
    free(t->pre_name);
    t->pre_name = NULL;
}

// ---------------------------------------------------------------------------

// Rewrites text the way llama.cpp's decoder reads it: a byte that does not
// start a complete sequence becomes U+FFFD; overlong forms are re-encoded
// canonically; code points above U+10FFFF (which llama.cpp cannot re-encode)
// become U+FFFD.  Surrogates (ED A0..BF xx) stay as llama.cpp keeps them, but
// PCRE2 rejects them, so *n_surrogates counts them for the caller to mask.
// Output is at most 3x the input.
static size_t utf8_sanitize(const char *in, size_t len, char *out, size_t *n_surrogates) {
    const uint8_t *s = (const uint8_t *)in;
    size_t i = 0, o = 0;
    *n_surrogates = 0;
    while (i < len) {
        uint32_t cp;
        size_t k;
        uint8_t b = s[i];
        if (b < 0x80) cp = b, k = 1;
        else if (!(b & 0x40)) cp = 0xfffd, k = 1;
        else if (!(b & 0x20)) {
            if (i + 1 < len && (s[i + 1] & 0xc0) == 0x80) cp = ((uint32_t)(b & 0x1f) << 6) | (s[i + 1] & 0x3f), k = 2;
            else cp = 0xfffd, k = 1;
        } else if (!(b & 0x10)) {
            if (i + 2 < len && (s[i + 1] & 0xc0) == 0x80 && (s[i + 2] & 0xc0) == 0x80)
                cp = ((uint32_t)(b & 0x0f) << 12) | ((uint32_t)(s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f), k = 3;
            else cp = 0xfffd, k = 1;
        } else if (!(b & 0x08)) {
            if (i + 3 < len && (s[i + 1] & 0xc0) == 0x80 && (s[i + 2] & 0xc0) == 0x80 && (s[i + 3] & 0xc0) == 0x80)
                cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3f) << 12) | ((uint32_t)(s[i + 2] & 0x3f) << 6) | (s[i + 3] & 0x3f), k = 4;
            else cp = 0xfffd, k = 1;
        } else cp = 0xfffd, k = 1;
        i += k;
        if (cp > 0x10ffff) cp = 0xfffd;
        *n_surrogates += cp >= 0xd800 && cp <= 0xdfff;
        if (cp < 0x80) out[o++] = (char)cp;
        else if (cp < 0x800) {
            out[o++] = (char)(0xc0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xe0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (cp >> 18));
            out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return o;
}

static size_t utf8_len(uint8_t b) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[b >> 4];
}

typedef struct span {
    size_t off, len;
} span;

typedef struct span_vec {
    span *v;
    size_t n, cap;
} span_vec;

static void span_push(span_vec *sv, size_t off, size_t len) {
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? 2 * sv->cap : 64;
        sv->v = as_realloc(sv->v, sv->cap * sizeof(span));
    }
    sv->v[sv->n++] = (span){off, len};
}

// Splits every piece of `in` into regex matches and the gaps between them.
static int regex_split(const tokenizer *t, const pcre2_code *re, const char *text, const span_vec *in, span_vec *out,
                       pcre2_match_data *md, pcre2_match_context *mc) {
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *subject = text + in->v[i].off;
        size_t len = in->v[i].len, pos = 0;
        while (pos < len) {
            int rc = pcre2_match(re, (PCRE2_SPTR)subject, len, pos, PCRE2_NO_UTF_CHECK, md, mc);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return as_error("tokenizer: pre-tokenizer '%s': regex match failed: %s", t->pre_name, msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) me = ms + AS_MIN(utf8_len((uint8_t)subject[ms]), len - ms); // no regex here matches empty; never loop
            if (ms > pos) span_push(out, in->v[i].off + pos, ms - pos);
            span_push(out, in->v[i].off + ms, me - ms);
            pos = me;
        }
        if (pos < len) span_push(out, in->v[i].off + pos, len - pos);
    }
    return AS_OK;
}

// Work space for merging one word, reused across words.
typedef struct bpe_work {
    char *word; // byte-encoded word
    size_t word_cap;
    char *key; // "left right" merge lookup key
    int32_t *sym_off, *sym_n, *prev, *next;
    size_t sym_cap;
    struct bigram *heap;
    size_t heap_n, heap_cap;
} bpe_work;

typedef struct bigram {
    int32_t rank, left, right;
    uint32_t size;
} bigram;

static bool bigram_before(const bigram *a, const bigram *b) { return a->rank < b->rank || (a->rank == b->rank && a->left < b->left); }

static void heap_push(bpe_work *w, bigram b) {
    if (w->heap_n == w->heap_cap) {
        w->heap_cap = w->heap_cap ? 2 * w->heap_cap : 64;
        w->heap = as_realloc(w->heap, w->heap_cap * sizeof(bigram));
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
}

static bigram heap_pop(bpe_work *w) {
    bigram top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bigram_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static void try_add_bigram(const tokenizer *t, bpe_work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    size_t ln = (size_t)w->sym_n[left], rn = (size_t)w->sym_n[right];
    memcpy(w->key, w->word + w->sym_off[left], ln);
    w->key[ln] = ' ';
    memcpy(w->key + ln + 1, w->word + w->sym_off[right], rn);
    int32_t rank = strmap_get(&t->merge_map, w->key, ln + rn + 1);
    if (rank < 0) return;
    heap_push(w, (bigram){rank, left, right, (uint32_t)(ln + rn)});
}

static void merge_word(const tokenizer *t, bpe_work *w, size_t wlen, tok_vec *out) {
    if (t->ignore_merges) {
        int32_t id = strmap_get(&t->token_map, w->word, wlen);
        if (id >= 0) {
            tok_vec_push(out, id);
            return;
        }
    }
    if (wlen > w->sym_cap) {
        w->sym_cap = wlen;
        w->sym_off = as_realloc(w->sym_off, wlen * sizeof(int32_t));
        w->sym_n = as_realloc(w->sym_n, wlen * sizeof(int32_t));
        w->prev = as_realloc(w->prev, wlen * sizeof(int32_t));
        w->next = as_realloc(w->next, wlen * sizeof(int32_t));
    }
    int32_t n_sym = 0;
    for (size_t off = 0; off < wlen;) {
        size_t k = AS_MIN(utf8_len((uint8_t)w->word[off]), wlen - off);
        w->sym_off[n_sym] = (int32_t)off;
        w->sym_n[n_sym] = (int32_t)k;
        w->prev[n_sym] = n_sym - 1;
        off += k;
        w->next[n_sym] = off == wlen ? -1 : n_sym + 1;
        n_sym++;
    }
    w->heap_n = 0;
    for (int32_t i = 1; i < n_sym; i++) try_add_bigram(t, w, i - 1, i);
    while (w->heap_n > 0) {
        bigram b = heap_pop(w);
        // Stale entry: a side was merged away, or grew (symbols only grow by
        // absorbing their right neighbour, so an unchanged total size means unchanged).
        if (w->sym_n[b.left] == 0 || w->sym_n[b.right] == 0 || (uint32_t)(w->sym_n[b.left] + w->sym_n[b.right]) != b.size) continue;
        w->sym_n[b.left] += w->sym_n[b.right];
        w->sym_n[b.right] = 0;
        w->next[b.left] = w->next[b.right];
        if (w->next[b.right] >= 0) w->prev[w->next[b.right]] = b.left;
        try_add_bigram(t, w, w->prev[b.left], b.left);
        try_add_bigram(t, w, b.left, w->next[b.left]);
    }
    for (int32_t i = 0; i >= 0 && n_sym > 0; i = w->next[i]) {
        const char *s = w->word + w->sym_off[i];
        size_t n = (size_t)w->sym_n[i];
        int32_t id = strmap_get(&t->token_map, s, n);
        if (id >= 0) {
            tok_vec_push(out, id);
            continue;
        }
        // Not in the vocabulary: llama.cpp looks each byte of the symbol up on its own
        // and drops bytes that are not tokens either.
        for (size_t j = 0; j < n; j++) {
            int32_t b = strmap_get(&t->token_map, s + j, 1);
            if (b >= 0) tok_vec_push(out, b);
        }
    }
}

int bpe_encode_fragment(const tokenizer *t, const char *text, size_t len, tok_vec *out) {
    if (len == 0) return AS_OK;
    if (len > SIZE_MAX / 3 - 1) return as_error("tokenizer: text of %zu bytes is too long", len);
    char *clean = as_malloc(3 * len + 1);
    size_t n_surrogates;
    size_t clen = utf8_sanitize(text, len, clean, &n_surrogates);
    // The regexes see each surrogate as U+FFFD: also three bytes, and also of no
    // letter/number/space class (llama.cpp's table: Cs is "other"), so the
    // splits are the same; the words keep llama.cpp's bytes.
    char *rx = clean;
    if (n_surrogates) {
        rx = as_malloc(clen + 1);
        memcpy(rx, clean, clen);
        for (size_t i = 0; i + 2 < clen; i++)
            if ((uint8_t)rx[i] == 0xed && (uint8_t)rx[i + 1] >= 0xa0) memcpy(rx + i, "\xef\xbf\xbd", 3), i += 2;
    }

    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    // Long whitespace runs make `\s+(?!\S)` backtrack deeply; give JIT room.
    pcre2_jit_stack *js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!md || !mc || !js) as_die("out of memory creating PCRE2 match data");
    pcre2_jit_stack_assign(mc, NULL, js);

    span_vec a = {0}, b = {0};
    span_push(&a, 0, clen);
    int rc = AS_OK;
    for (int r = 0; r < t->n_regex && rc == AS_OK; r++) {
        rc = regex_split(t, t->regex[r], rx, &a, &b, md, mc);
        span_vec tmp = a;
        a = b;
        b = tmp;
    }

    bpe_work w = {0};
    for (size_t i = 0; rc == AS_OK && i < a.n; i++) {
        const uint8_t *p = (const uint8_t *)clean + a.v[i].off;
        size_t n = a.v[i].len, wlen = 0;
        if (2 * n + 1 > w.word_cap) {
            w.word_cap = 2 * n + 1;
            w.word = as_realloc(w.word, w.word_cap);
            w.key = as_realloc(w.key, w.word_cap + 1);
        }
        for (size_t j = 0; j < n; j++) {
            memcpy(w.word + wlen, t->byte_char[p[j]], t->byte_char_len[p[j]]);
            wlen += t->byte_char_len[p[j]];
        }
        merge_word(t, &w, wlen, out);
    }

    free(w.word);
    free(w.key);
    free(w.sym_off);
    free(w.sym_n);
    free(w.prev);
    free(w.next);
    free(w.heap);
    free(a.v);
    free(b.v);
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    if (rx != clean) free(rx);
    free(clean);
    return rc;
}
