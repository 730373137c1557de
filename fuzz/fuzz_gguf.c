// libFuzzer target for the GGUF reader (and, on inputs it accepts, the writer).
//
// Properties checked on every input:
//  - gguf_open_buffer never crashes, leaks or reads outside the buffer (ASan);
//    on failure it sets a one-line error that starts with the name;
//  - on success every key, value, array element and tensor byte is readable,
//    every tensor lies inside the buffer and is found by name;
//  - writer round trip: re-writing an accepted file's metadata and tensors
//    with gguf_writer and reading that back gives the same values.
// fuzz-libs: as_gguf as_util
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "gguf/gguf_walk.h"
#include "util/common.h"

#define NAME "fuzz.gguf"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_gguf: property violated: %s\n", what);
        abort();
    }
}

static volatile uint64_t g_sink; // keeps the reads from being optimised away

static void touch_all(const gguf_file *f) {
    uint64_t h = gguf_walk_values(f);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        // Key lookup finds the first entry with that name (keys are unique, so this one).
        if (!memchr(kv->key.ptr, 0, (size_t)kv->key.len)) {
            char *k = gguf_str_dup(kv->key);
            check(gguf_find_key(f, k) == (int64_t)i, "gguf_find_key finds every key");
            uint32_t u;
            int64_t v;
            float x;
            bool b;
            gguf_str s;
            h += (uint64_t)gguf_get_u32(f, k, &u) + (uint64_t)gguf_get_i64(f, k, &v) + (uint64_t)gguf_get_f32(f, k, &x) +
                 (uint64_t)gguf_get_bool(f, k, &b) + (uint64_t)gguf_get_str(f, k, &s);
            free(k);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const uint8_t *d = t->data;
        check(d >= f->base && t->nbytes <= f->size && d - f->base <= (ptrdiff_t)(f->size - t->nbytes),
              "tensor data inside the buffer");
        check(ggml_type_supported(t->type) && t->n_dims <= GGUF_MAX_DIMS, "tensor type and rank valid");
        for (size_t j = 0; j < t->nbytes; j++) h += d[j];
        check(gguf_find_tensor(f, t->cname) == t, "gguf_find_tensor finds every tensor");
    }
    g_sink += h;
}

// Re-writes what was read.  Skips files the C-string writer API cannot express
// (NUL inside a key or string, rank-0 tensors).
static void round_trip(const gguf_file *f) {
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (memchr(kv->key.ptr, 0, (size_t)kv->key.len)) return;
        if (kv->type == GGUF_TYPE_STRING && memchr(kv->str.ptr, 0, (size_t)kv->str.len)) return;
        if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING)
            for (uint64_t j = 0; j < kv->n; j++) {
                gguf_str s = gguf_arr_str(f, (int64_t)i, j);
                if (memchr(s.ptr, 0, (size_t)s.len)) return;
            }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].n_dims == 0) return;

    gguf_writer *w = gguf_writer_init();
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        char *key = gguf_str_dup(kv->key);
        if (strcmp(key, "general.alignment") == 0) {
            gguf_writer_set_alignment(w, (uint32_t)f->alignment);
        } else if (kv->type == GGUF_TYPE_STRING) {
            char *v = gguf_str_dup(kv->str);
            gguf_write_str(w, key, v);
            free(v);
        } else if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING) {
            char **v = as_malloc((size_t)kv->n * sizeof *v + 1);
            for (uint64_t j = 0; j < kv->n; j++) v[j] = gguf_str_dup(gguf_arr_str(f, (int64_t)i, j));
            gguf_write_arr_str(w, key, (const char *const *)v, kv->n);
            for (uint64_t j = 0; j < kv->n; j++) free(v[j]);
            free(v);
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            gguf_write_arr(w, key, kv->arr_type, kv->data, kv->n);
        } else {
            gguf_write_val(w, key, kv->type, kv->data);
        }
        free(key);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        gguf_write_tensor(w, t->cname, t->type, t->n_dims, t->ne, t->data, t->nbytes);
    }
    uint8_t *buf;
    size_t n;
    check(gguf_writer_to_buffer(w, &buf, &n) == 0, "writer serialises");
    gguf_writer_free(w);
    gguf_file *g;
    if (gguf_open_buffer(&g, buf, n, "rewritten.gguf") != 0) {
        fprintf(stderr, "fuzz_gguf: re-written file rejected: %s\n", as_last_error());
        abort();
    }
    check(g->n_kv == f->n_kv && g->n_tensors == f->n_tensors && g->alignment == f->alignment, "round trip counts");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *a = &f->kv[i], *b = &g->kv[i];
        check(a->key.len == b->key.len && memcmp(a->key.ptr, b->key.ptr, (size_t)a->key.len) == 0, "round trip key");
        check(a->type == b->type && a->n == b->n, "round trip value type");
        if (a->type == GGUF_TYPE_STRING)
            check(a->str.len == b->str.len && memcmp(a->str.ptr, b->str.ptr, (size_t)a->str.len) == 0, "round trip string");
        else if (a->type != GGUF_TYPE_ARRAY)
            check(memcmp(a->data, b->data, gguf_type_size(a->type)) == 0, "round trip scalar");
        else {
            check(a->arr_type == b->arr_type, "round trip array type");
            for (uint64_t j = 0; j < a->n; j++) {
                if (a->arr_type == GGUF_TYPE_STRING) {
                    gguf_str x = gguf_arr_str(f, (int64_t)i, j), y = gguf_arr_str(g, (int64_t)i, j);
                    check(x.len == y.len && memcmp(x.ptr, y.ptr, (size_t)x.len) == 0, "round trip string element");
                } else {
                    double x = gguf_arr_num(f, (int64_t)i, j), y = gguf_arr_num(g, (int64_t)i, j);
                    check(x == y || (x != x && y != y), "round trip array element");
                }
            }
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *a = &f->tensors[i], *b = &g->tensors[i];
        check(strcmp(a->cname, b->cname) == 0 && a->type == b->type && a->n_dims == b->n_dims &&
                  memcmp(a->ne, b->ne, sizeof a->ne) == 0 && a->nbytes == b->nbytes &&
                  memcmp(a->data, b->data, a->nbytes) == 0,
              "round trip tensor");
    }
    gguf_close(g);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f = NULL;
    as_clear_error();
    if (gguf_open_buffer(&f, data, size, NAME) != 0) {
        const char *e = as_last_error();
        check(f == NULL, "no file on failure");
        check(strncmp(e, NAME ": ", strlen(NAME) + 2) == 0, "error starts with the name");
        check(strchr(e, '\n') == NULL, "error is one line");
        return 0;
    }
    touch_all(f);
    round_trip(f);
    gguf_close(f);
    return 0;
}
