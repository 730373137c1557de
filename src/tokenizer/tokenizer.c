// Tokenizer loading from GGUF metadata, the special-token partition, and
// decoding.  The encoders themselves live in bpe.c and spm.c.
//
// Behaviour follows llama.cpp's llama-vocab.cpp, since the reference token ids
// come from it (tools/tok_vectors.py, tools/make_spm_vocab.py):
//  - control, user-defined and unknown tokens are cut out of the text first,
//    longest token text first (tokenizer_st_partition); user-defined tokens are
//    cut even when parse_special is false, as Hugging Face tokenizers do;
//  - the remaining fragments are encoded independently;
//  - BOS/EOS are added only with add_special, following tokenizer.ggml.add_bos_token
//    (default: true for SPM and the llama3 pre-tokenizer, false for other BPE).
#define _GNU_SOURCE // memmem, qsort_r
#include "tokenizer/tokenizer_impl.h"

#include "util/common.h"

#include <string.h>

// ---------------------------------------------------------------------------
// String hash map

static uint64_t str_hash(const char *s, size_t len) {
    // FNV-1a, 64-bit
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

void strmap_init(strmap *m, const char *buf, const uint64_t *off, size_t n_entries) {
    size_t cap = 16;
    while (cap < 2 * n_entries) cap *= 2; // load factor <= 0.5 keeps probe chains short
    m->slots = as_calloc(cap, sizeof(uint64_t));
    m->mask = cap - 1;
    m->buf = buf;
    m->off = off;
}

void strmap_free(strmap *m) {
    free(m->slots);
    m->slots = NULL;
}

// Slots keep the hash's high half, so a probe compares bytes only on a likely hit.
static int32_t strmap_find(const strmap *m, const char *s, size_t len, uint64_t h, size_t *slot) {
    uint64_t tag = h & 0xffffffff00000000ull;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t e = m->slots[i];
        if (e == 0) {
            *slot = i;
            return -1;
        }
        if ((e & 0xffffffff00000000ull) != tag) continue;
        int32_t idx = (int32_t)(uint32_t)e - 1;
        size_t n = (size_t)(m->off[idx + 1] - m->off[idx]);
        if (n == len && memcmp(m->buf + m->off[idx], s, len) == 0) return idx;
    }
}

int32_t strmap_put(strmap *m, int32_t i) {
    const char *s = m->buf + m->off[i];
    size_t len = (size_t)(m->off[i + 1] - m->off[i]), slot;
    uint64_t h = str_hash(s, len);
    int32_t e = strmap_find(m, s, len, h, &slot);
    if (e >= 0) return e;
    m->slots[slot] = (h & 0xffffffff00000000ull) | (uint32_t)(i + 1);
    return -1;
}

int32_t strmap_get(const strmap *m, const char *s, size_t len) {
    size_t slot;
    return strmap_find(m, s, len, str_hash(s, len), &slot);
}

void tok_vec_push(tok_vec *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->ids = as_realloc(v->ids, v->cap * sizeof(int32_t));
    }
    v->ids[v->n++] = id;
}

// ---------------------------------------------------------------------------
// Loading

// Copies a GGUF string array into one contiguous buffer with offsets.
// Empty strings are renamed "[EMPTY_i]" as llama.cpp does, so every token has text.
static void copy_str_array(const gguf_file *f, int64_t kv, uint64_t n, bool rename_empty, char **buf_out, uint64_t **off_out) {
    uint64_t *off = as_malloc((n + 1) * sizeof(uint64_t));
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(f, kv, i);
        total += s.len ? s.len : 32;
    }
    char *buf = as_malloc(total + 1);
    size_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        off[i] = pos;
        gguf_str s = gguf_arr_str(f, kv, i);
        if (s.len == 0 && rename_empty) {
            pos += (size_t)snprintf(buf + pos, 32, "[EMPTY_%llu]", (unsigned long long)i);
        } else {
            memcpy(buf + pos, s.ptr, s.len);
            pos += s.len;
        }
    }
    off[n] = pos;
    *buf_out = buf;
    *off_out = off;
}

// Optional numeric array `key` of at least n elements, of one of the allowed types.
static int get_num_array(const gguf_file *f, const char *key, uint64_t n, gguf_type t1, gguf_type t2, int64_t *kv_out) {
    *kv_out = -1;
    if (gguf_find_key(f, key) < 0) return AS_OK;
    gguf_type at;
    uint64_t m;
    if (gguf_get_arr(f, key, &at, &m, kv_out) != 0) return AS_FAIL;
    if (at != t1 && at != t2)
        return as_error("%s: key %s: expected an array of %s, found %s", f->path, key, gguf_type_name(t1), gguf_type_name(at));
    if (m < n) return as_error("%s: key %s: %llu elements for %llu tokens", f->path, key, (unsigned long long)m, (unsigned long long)n);
    return AS_OK;
}

static int get_token_id(const tokenizer *t, const gguf_file *f, const char *key, int32_t *id) {
    uint32_t v = *id < 0 ? UINT32_MAX : (uint32_t)*id;
    bool present = gguf_find_key(f, key) >= 0;
    if (gguf_opt_u32(f, key, &v) != 0) return AS_FAIL;
    if (!present) {
        // llama.cpp's defaults may not fit a small vocabulary; then there is no such token.
        if (*id >= t->n_vocab) *id = -1;
        return AS_OK;
    }
    if (v >= (uint32_t)t->n_vocab) return as_error("%s: key %s: token id %u outside the vocabulary of %d", f->path, key, v, t->n_vocab);
    *id = (int32_t)v;
    return AS_OK;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint64_t lx = t->text_off[x + 1] - t->text_off[x], ly = t->text_off[y + 1] - t->text_off[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

// Token texts that end a turn or the text (llama.cpp's end-of-generation list, the
// part that applies to the model families alphaspin reads).
static const char *const k_end_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<|end_of_text|>", "<EOT>",
};

int tokenizer_load(tokenizer **out, const gguf_file *f) {
    *out = NULL;
    const char *path = f->path ? f->path : "(gguf)";
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) != 0) return AS_FAIL;
    tokenizer_kind kind;
    if (gguf_str_eq(model, "gpt2")) kind = TOKENIZER_KIND_BPE;
    else if (gguf_str_eq(model, "llama")) kind = TOKENIZER_KIND_SPM;
    else {
        char *m = gguf_str_dup(model);
        as_error("%s: tokenizer.ggml.model '%s' is not supported (expected 'gpt2' or 'llama')", path, m);
        free(m);
        return AS_FAIL;
    }

    gguf_type at;
    uint64_t n;
    int64_t kv_tokens;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &at, &n, &kv_tokens) != 0) return AS_FAIL;
    if (at != GGUF_TYPE_STRING) return as_error("%s: key tokenizer.ggml.tokens: expected an array of string, found %s", path, gguf_type_name(at));
    if (n == 0 || n > INT32_MAX) return as_error("%s: key tokenizer.ggml.tokens: %llu tokens", path, (unsigned long long)n);

    tokenizer *t = as_calloc(1, sizeof *t);
    t->kind = kind;
    t->n_vocab = (int32_t)n;
    copy_str_array(f, kv_tokens, n, true, &t->text, &t->text_off);
    t->score = as_calloc(n, sizeof(float));
    t->type = as_malloc(n);
    t->is_end = as_calloc(n, sizeof(bool));
    memset(t->type, TOKEN_TYPE_NORMAL, n);

    int64_t kv;
    if (get_num_array(f, "tokenizer.ggml.scores", n, GGUF_TYPE_FLOAT32, GGUF_TYPE_INT32, &kv) != 0) goto fail;
    if (kv >= 0)
        for (uint64_t i = 0; i < n; i++) t->score[i] = (float)gguf_arr_num(f, kv, i);
    if (get_num_array(f, "tokenizer.ggml.token_type", n, GGUF_TYPE_INT32, GGUF_TYPE_INT32, &kv) != 0) goto fail;
    if (kv >= 0)
        for (uint64_t i = 0; i < n; i++) {
            double v = gguf_arr_num(f, kv, i);
            // Unknown values count as undefined (never rendered), as in llama.cpp.
            t->type[i] = (v >= TOKEN_TYPE_NORMAL && v <= TOKEN_TYPE_BYTE) ? (uint8_t)v : TOKEN_TYPE_UNDEFINED;
        }

    strmap_init(&t->token_map, t->text, t->text_off, n);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int32_t prev = strmap_put(&t->token_map, i);
        if (prev >= 0) {
            size_t len;
            const char *s = tok_text(t, i, &len);
            as_error("%s: duplicate token in vocabulary: '%.*s' has ids %d and %d", path, (int)AS_MIN(len, 64), s, prev, i);
            goto fail;
        }
    }

    // Special ids and flags: llama.cpp's defaults per tokenizer model, then the file's
    // keys.  (For BPE llama.cpp defaults BOS and EOS to id 11, a GPT-2 leftover; a
    // file without those keys has none here.)
    if (kind == TOKENIZER_KIND_SPM) {
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_bos = true, t->add_space_prefix = true;
    } else {
        t->bos = -1, t->eos = -1, t->unk = -1;
        t->add_bos = false, t->add_space_prefix = false;
    }
    t->eot = -1, t->eom = -1, t->add_eos = false;

    if (kind == TOKENIZER_KIND_BPE) {
        int64_t kv_merges;
        if (gguf_get_arr(f, "tokenizer.ggml.merges", &at, &n, &kv_merges) != 0) goto fail;
        if (at != GGUF_TYPE_STRING) {
            as_error("%s: key tokenizer.ggml.merges: expected an array of string, found %s", path, gguf_type_name(at));
            goto fail;
        }
        if (n > INT32_MAX) {
            as_error("%s: key tokenizer.ggml.merges: %llu merges", path, (unsigned long long)n);
            goto fail;
        }
        t->n_merges = (int32_t)n;
        copy_str_array(f, kv_merges, n, false, &t->merge_text, &t->merge_off);
        // rank = index; a repeated merge keeps its first (best) rank.
        strmap_init(&t->merge_map, t->merge_text, t->merge_off, n);
        for (int32_t i = 0; i < t->n_merges; i++) strmap_put(&t->merge_map, i);

        char *pre = NULL;
        if (gguf_find_key(f, "tokenizer.ggml.pre") >= 0) {
            gguf_str s;
            if (gguf_get_str(f, "tokenizer.ggml.pre", &s) != 0) goto fail;
            pre = gguf_str_dup(s);
        }
        int rc = bpe_init_pre(t, pre, path);
        free(pre);
        if (rc != 0) goto fail;
    }

    if (get_token_id(t, f, "tokenizer.ggml.bos_token_id", &t->bos) != 0) goto fail;
    if (get_token_id(t, f, "tokenizer.ggml.eos_token_id", &t->eos) != 0) goto fail;
    if (get_token_id(t, f, "tokenizer.ggml.eot_token_id", &t->eot) != 0) goto fail;
    if (get_token_id(t, f, "tokenizer.ggml.eom_token_id", &t->eom) != 0) goto fail;
    if (get_token_id(t, f, "tokenizer.ggml.unknown_token_id", &t->unk) != 0) goto fail;
    if (gguf_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos) != 0) goto fail;
    if (gguf_opt_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos) != 0) goto fail;
    if (gguf_opt_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix) != 0) goto fail;
    if (t->add_bos && t->bos < 0) {
        as_error("%s: tokenizer.ggml.add_bos_token is true but there is no BOS token", path);
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        as_error("%s: tokenizer.ggml.add_eos_token is true but there is no EOS token", path);
        goto fail;
    }

    // End of generation: eos, eot, eom and the turn-closing texts.  Such tokens are
    // control tokens even when the file forgot to say so (llama.cpp does the same).
    for (size_t k = 0; k < AS_ARRAY_LEN(k_end_texts); k++) {
        int32_t id = strmap_get(&t->token_map, k_end_texts[k], strlen(k_end_texts[k]));
        if (id < 0) continue;
        t->is_end[id] = true;
        if (t->type[id] != TOKEN_TYPE_CONTROL && t->type[id] != TOKEN_TYPE_USER_DEFINED) t->type[id] = TOKEN_TYPE_CONTROL;
    }
    if (t->eos >= 0) t->is_end[t->eos] = true;
    if (t->eot >= 0) t->is_end[t->eot] = true;
    if (t->eom >= 0) t->is_end[t->eom] = true;

    t->special = as_malloc((size_t)t->n_vocab * sizeof(int32_t));
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->type[i];
        if (ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED || ty == TOKEN_TYPE_UNKNOWN) t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof(int32_t), cmp_special, t);

    if (kind == TOKENIZER_KIND_SPM) {
        for (int b = 0; b < 256; b++) {
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            int32_t id = strmap_get(&t->token_map, hex, 6);
            if (id < 0) {
                char c = (char)b;
                id = strmap_get(&t->token_map, &c, 1);
            }
            t->byte_token[b] = id >= 0 ? id : t->unk;
        }
    }
    *out = t;
    return AS_OK;
fail:
    tokenizer_free(t);
    return AS_FAIL;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    bpe_free(t);
    strmap_free(&t->token_map);
    strmap_free(&t->merge_map);
    free(t->text);
    free(t->text_off);
    free(t->score);
    free(t->type);
    free(t->is_end);
    free(t->special);
    free(t->merge_text);
    free(t->merge_off);
    free(t);
}

// ---------------------------------------------------------------------------
// Encoding

typedef struct fragment {
    int32_t token; // -1: raw text text[off .. off+len)
    size_t off, len;
} fragment;

typedef struct frag_vec {
    fragment *v;
    size_t n, cap;
} frag_vec;

static void frag_push(frag_vec *fv, int32_t token, size_t off, size_t len) {
    if (fv->n == fv->cap) {
        fv->cap = fv->cap ? 2 * fv->cap : 16;
        fv->v = as_realloc(fv->v, fv->cap * sizeof(fragment));
    }
    fv->v[fv->n++] = (fragment){token, off, len};
}

// Splits raw fragments on every occurrence of each special token, longest
// token first, leftmost occurrence first (llama.cpp's tokenizer_st_partition).
static void partition_special(const tokenizer *t, const char *text, size_t len, bool parse_special, frag_vec *fv) {
    frag_vec next = {0};
    frag_push(fv, -1, 0, len);
    for (int32_t s = 0; s < t->n_special; s++) {
        int32_t id = t->special[s];
        if (!parse_special && t->type[id] != TOKEN_TYPE_USER_DEFINED) continue;
        size_t tl;
        const char *tt = tok_text(t, id, &tl);
        if (tl > len) continue;
        bool any = false;
        next.n = 0;
        for (size_t i = 0; i < fv->n; i++) {
            fragment fr = fv->v[i];
            if (fr.token >= 0 || fr.len < tl) {
                frag_push(&next, fr.token, fr.off, fr.len);
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *m = memmem(text + pos, end - pos, tt, tl);
                if (!m) break;
                size_t at = (size_t)(m - text);
                if (at > pos) frag_push(&next, -1, pos, at - pos);
                frag_push(&next, id, 0, 0);
                pos = at + tl;
                any = true;
            }
            if (pos < end) frag_push(&next, -1, pos, end - pos);
        }
        if (any) {
            frag_vec tmp = *fv;
            *fv = next;
            next = tmp;
        }
    }
    free(next.v);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special, int32_t **ids,
                     size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    tok_vec out = {0};
    frag_vec fv = {0};
    if (len > 0) partition_special(t, text, len, parse_special, &fv);
    if (add_special && t->add_bos) tok_vec_push(&out, t->bos);

    char *buf = NULL;
    size_t buf_cap = 0;
    bool prev_special = true; // SPM: the first fragment and those after a special token get the space prefix
    for (size_t i = 0; i < fv.n; i++) {
        fragment fr = fv.v[i];
        if (fr.token >= 0) {
            tok_vec_push(&out, fr.token);
            prev_special = true;
            continue;
        }
        if (t->kind == TOKENIZER_KIND_BPE) {
            if (bpe_encode_fragment(t, text + fr.off, fr.len, &out) != 0) {
                free(out.ids);
                free(fv.v);
                return AS_FAIL;
            }
        } else {
            size_t need = fr.len + 1;
            if (need > buf_cap) {
                buf_cap = need;
                buf = as_realloc(buf, buf_cap);
            }
            size_t n = 0;
            if (t->add_space_prefix && prev_special) buf[n++] = ' ';
            memcpy(buf + n, text + fr.off, fr.len);
            spm_encode_fragment(t, buf, n + fr.len, &out);
        }
        prev_special = false;
    }
    if (add_special && t->add_eos) tok_vec_push(&out, t->eos);
    free(buf);
    free(fv.v);
    *ids = out.ids ? out.ids : as_malloc(sizeof(int32_t));
    *n_ids = out.n;
    return AS_OK;
}

// ---------------------------------------------------------------------------
// Decoding

// Decodes one UTF-8 code point (assumes well-formed input from the vocabulary,
// but never reads past `end`).  Returns its length.
static size_t utf8_next(const char *s, const char *end, uint32_t *cp) {
    const uint8_t *p = (const uint8_t *)s;
    size_t avail = (size_t)(end - s);
    if (p[0] < 0x80 || avail < 2) return *cp = p[0], 1;
    if ((p[0] & 0xe0) == 0xc0) return *cp = ((uint32_t)(p[0] & 0x1f) << 6) | (p[1] & 0x3f), 2;
    if ((p[0] & 0xf0) == 0xe0 && avail >= 3) return *cp = ((uint32_t)(p[0] & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f), 3;
    if ((p[0] & 0xf8) == 0xf0 && avail >= 4)
        return *cp = ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) | ((uint32_t)(p[2] & 0x3f) << 6) | (p[3] & 0x3f), 4;
    return *cp = p[0], 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// The piece of token `id` into dst, which holds at least max(text length, 1) bytes.
static size_t token_piece(const tokenizer *t, int32_t id, bool render_special, char *dst) {
    size_t len;
    const char *s = tok_text(t, id, &len);
    switch (t->type[id]) {
    case TOKEN_TYPE_CONTROL:
    case TOKEN_TYPE_UNKNOWN:
        if (!render_special) return 0;
        /* fall through */
    case TOKEN_TYPE_USER_DEFINED:
        memcpy(dst, s, len);
        return len;
    case TOKEN_TYPE_BYTE: {
        int hi = len == 6 ? hex_digit(s[3]) : -1, lo = len == 6 ? hex_digit(s[4]) : -1;
        if (hi < 0 || lo < 0) return 0;
        dst[0] = (char)(hi * 16 + lo);
        return 1;
    }
    case TOKEN_TYPE_NORMAL:
        break;
    default:
        return 0; // unused / undefined tokens have no text
    }
    size_t n = 0;
    if (t->kind == TOKENIZER_KIND_SPM) {
        // U+2581 (E2 96 81) stands for a space.
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && (uint8_t)s[i] == 0xe2 && (uint8_t)s[i + 1] == 0x96 && (uint8_t)s[i + 2] == 0x81) {
                dst[n++] = ' ';
                i += 3;
            } else {
                dst[n++] = s[i++];
            }
        }
        return n;
    }
    // Byte-level BPE: every code point of the token text stands for one byte.
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_next(s + i, s + len, &cp);
        if (cp < AS_ARRAY_LEN(t->char_byte) && t->char_byte[cp] >= 0) {
            dst[n++] = (char)t->char_byte[cp];
        } else {
            memcpy(dst + n, s + i, k); // not a byte character: keep the text as is
            n += k;
        }
        i += k;
    }
    return n;
}

size_t tokenizer_token_to_piece(const tokenizer *t, int32_t id, bool render_special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    size_t len = (size_t)(t->text_off[id + 1] - t->text_off[id]);
    char small[256];
    char *tmp = len + 1 <= sizeof small ? small : as_malloc(len + 1);
    size_t n = token_piece(t, id, render_special, tmp);
    if (n <= cap) memcpy(buf, tmp, n);
    if (tmp != small) free(tmp);
    return n;
}

char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool render_special) {
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_vocab) total += (size_t)(t->text_off[ids[i] + 1] - t->text_off[ids[i]]) + 1;
    char *out = as_malloc(total);
    size_t pos = 0;
    // SPM with add_space_prefix: the encoder put a space before the text, so the
    // first text token after an optional BOS loses its leading space.
    bool strip_space = t->kind == TOKENIZER_KIND_SPM && t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) continue;
        size_t k = token_piece(t, id, render_special, out + pos);
        if (strip_space && id == t->bos && i == 0) {
            pos += k;
            continue;
        }
        if (strip_space && k > 0 && out[pos] == ' ') {
            memmove(out + pos, out + pos + 1, k - 1);
            k--;
        }
        strip_space = false;
        pos += k;
    }
    out[pos] = 0;
    return out;
}

int32_t tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
bool tokenizer_is_end(const tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->is_end[id]; }
int32_t tokenizer_find(const tokenizer *t, const char *text) { return strmap_get(&t->token_map, text, strlen(text)); }
