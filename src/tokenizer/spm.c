// SentencePiece-style BPE (tokenizer.ggml.model = "llama"), as llama.cpp's
// llm_tokenizer_spm does it: spaces become U+2581 "▁"; the text starts as one
// symbol per UTF-8 character; repeatedly the adjacent pair whose concatenation
// is the vocabulary token with the highest score is merged (ties: leftmost);
// symbols that are not tokens at the end fall back to byte tokens <0xXX>.
#include "tokenizer/tokenizer_impl.h"

#include "util/common.h"

#include <string.h>

typedef struct spm_bigram {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_bigram;

typedef struct spm_work {
    const char *text;
    int32_t *sym_off, *sym_n, *prev, *next;
    spm_bigram *heap;
    size_t heap_n, heap_cap;
} spm_work;

static bool spm_before(const spm_bigram *a, const spm_bigram *b) { return a->score > b->score || (a->score == b->score && a->left < b->left); }

static void spm_push(spm_work *w, spm_bigram b) {
    if (w->heap_n == w->heap_cap) {
        w->heap_cap = w->heap_cap ? 2 * w->heap_cap : 64;
        w->heap = as_realloc(w->heap, w->heap_cap * sizeof(spm_bigram));
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!spm_before(&b, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
}

static spm_bigram spm_pop(spm_work *w) {
    spm_bigram top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && spm_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!spm_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static void spm_try_add(const tokenizer *t, spm_work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    // Symbols are adjacent in the text, so their concatenation is a contiguous span.
    size_t n = (size_t)(w->sym_n[left] + w->sym_n[right]);
    int32_t id = strmap_get(&t->token_map, w->text + w->sym_off[left], n);
    if (id < 0) return;
    spm_push(w, (spm_bigram){t->score[id], left, right, (uint32_t)n});
}

void spm_encode_fragment(const tokenizer *t, const char *raw, size_t len, tok_vec *out) {
    // Escape spaces: ' ' -> U+2581 (3 bytes).
    size_t n_space = 0;
    for (size_t i = 0; i < len; i++) n_space += raw[i] == ' ';
    size_t tlen = len + 2 * n_space;
    if (tlen == 0) return;
    char *text = as_malloc(tlen);
    for (size_t i = 0, o = 0; i < len; i++) {
        if (raw[i] == ' ') {
            memcpy(text + o, "\xe2\x96\x81", 3);
            o += 3;
        } else {
            text[o++] = raw[i];
        }
    }

    spm_work w = {.text = text};
    w.sym_off = as_malloc(tlen * sizeof(int32_t));
    w.sym_n = as_malloc(tlen * sizeof(int32_t));
    w.prev = as_malloc(tlen * sizeof(int32_t));
    w.next = as_malloc(tlen * sizeof(int32_t));
    static const uint8_t utf8_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    int32_t n_sym = 0;
    for (size_t off = 0; off < tlen;) {
        size_t k = AS_MIN((size_t)utf8_len[(uint8_t)text[off] >> 4], tlen - off);
        w.sym_off[n_sym] = (int32_t)off;
        w.sym_n[n_sym] = (int32_t)k;
        w.prev[n_sym] = n_sym - 1;
        off += k;
        w.next[n_sym] = off == tlen ? -1 : n_sym + 1;
        n_sym++;
    }
    for (int32_t i = 1; i < n_sym; i++) spm_try_add(t, &w, i - 1, i);
    while (w.heap_n > 0) {
        spm_bigram b = spm_pop(&w);
        if (w.sym_n[b.left] == 0 || w.sym_n[b.right] == 0 || (uint32_t)(w.sym_n[b.left] + w.sym_n[b.right]) != b.size) continue;
        w.sym_n[b.left] += w.sym_n[b.right];
        w.sym_n[b.right] = 0;
        w.next[b.left] = w.next[b.right];
        if (w.next[b.right] >= 0) w.prev[w.next[b.right]] = b.left;
        spm_try_add(t, &w, w.prev[b.left], b.left);
        spm_try_add(t, &w, b.left, w.next[b.left]);
    }
    for (int32_t i = 0; i >= 0; i = w.next[i]) {
        const char *s = text + w.sym_off[i];
        size_t n = (size_t)w.sym_n[i];
        int32_t id = strmap_get(&t->token_map, s, n);
        if (id >= 0) {
            tok_vec_push(out, id);
            continue;
        }
        // Only unmerged single characters get here (every merge yields a token):
        // spell them as byte tokens.
        for (size_t j = 0; j < n; j++) {
            int32_t b = t->byte_token[(uint8_t)s[j]];
            if (b >= 0) tok_vec_push(out, b);
        }
    }
    free(w.sym_off);
    free(w.sym_n);
    free(w.prev);
    free(w.next);
    free(w.heap);
    free(text);
}
