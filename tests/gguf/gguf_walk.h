// Reads every key and every metadata value of an opened GGUF file (strings,
// string arrays element by element, numeric arrays through gguf_arr_num), so
// that ASan sees each read; returns a hash of what it read.  Shared by the
// reader's tests and its fuzz target.
#ifndef AS_TEST_GGUF_WALK_H
#define AS_TEST_GGUF_WALK_H

#include <stdint.h>

#include "gguf/gguf.h"

static inline uint64_t gguf_walk_values(const gguf_file *f) {
    uint64_t h = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        for (uint64_t j = 0; j < kv->key.len; j++) h += (uint8_t)kv->key.ptr[j];
        if (kv->type == GGUF_TYPE_STRING) {
            for (uint64_t j = 0; j < kv->str.len; j++) h += (uint8_t)kv->str.ptr[j];
        } else if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING) {
            for (uint64_t j = 0; j < kv->n; j++) {
                gguf_str s = gguf_arr_str(f, (int64_t)i, j);
                for (uint64_t c = 0; c < s.len; c++) h += (uint8_t)s.ptr[c];
            }
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            for (uint64_t j = 0; j < kv->n; j++) h += (uint64_t)(gguf_arr_num(f, (int64_t)i, j) != 0);
        }
    }
    return h;
}

#endif
