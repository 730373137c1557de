// GGUF v3 writer: collects KVs and tensors in memory, then serialises
//   header | KVs | tensor infos | pad | data0 pad | data1 pad | ...
// with every tensor's offset (relative to the data section) a multiple of the
// alignment, as ggml's gguf_write and gguf-py's GGUFWriter lay files out.
// Misuse (unsupported tensor type, wrong byte count, duplicate tensor) is a
// programmer error and dies; writing a key twice replaces its value in place,
// like ggml's gguf_set_*.
#include <string.h>

#include "gguf/gguf.h"
#include "util/common.h"

typedef struct gguf_buf {
    uint8_t *p;
    size_t len, cap;
} gguf_buf;

static void buf_put(gguf_buf *b, const void *data, size_t n) {
    if (b->cap - b->len < n) {
        size_t need;
        if (as_add_overflow(b->len, n, &need)) as_die("GGUF writer buffer size overflows");
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        b->p = as_realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_u32(gguf_buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(gguf_buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(gguf_buf *b, const char *s) {
    size_t n = strlen(s);
    buf_u64(b, n);
    buf_put(b, s, n);
}
static void buf_zeros(gguf_buf *b, size_t n) {
    static const uint8_t zeros[64];
    while (n) {
        size_t k = AS_MIN(n, sizeof zeros);
        buf_put(b, zeros, k);
        n -= k;
    }
}

typedef struct gguf_wkv {
    char *key;
    gguf_buf val; // u32 type followed by the encoded value
} gguf_wkv;

typedef struct gguf_wtensor {
    char *name;
    ggml_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint8_t *data;
    size_t nbytes;
} gguf_wtensor;

struct gguf_writer {
    uint32_t alignment;
    gguf_wkv *kv;
    size_t n_kv, cap_kv;
    gguf_wtensor *t;
    size_t n_t, cap_t;
};

gguf_writer *gguf_writer_init(void) {
    gguf_writer *w = as_calloc(1, sizeof *w);
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

// The value buffer of `key`, emptied: a new entry, or the existing one (replaced in place).
static gguf_buf *kv_slot(gguf_writer *w, const char *key, gguf_type type) {
    gguf_wkv *e = NULL;
    for (size_t i = 0; i < w->n_kv && !e; i++)
        if (strcmp(w->kv[i].key, key) == 0) e = &w->kv[i];
    if (!e) {
        if (w->n_kv == w->cap_kv) {
            w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 16;
            w->kv = as_realloc(w->kv, w->cap_kv * sizeof *w->kv);
        }
        e = &w->kv[w->n_kv++];
        memset(e, 0, sizeof *e);
        e->key = as_strdup(key);
    }
    e->val.len = 0;
    buf_u32(&e->val, (uint32_t)type);
    return &e->val;
}

void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        as_die("gguf_writer_set_alignment: %u is not a power of two", alignment);
    w->alignment = alignment;
    gguf_write_u32(w, "general.alignment", alignment);
}

void gguf_write_val(gguf_writer *w, const char *key, gguf_type type, const void *data) {
    if (type == GGUF_TYPE_STRING) {
        gguf_write_str(w, key, (const char *)data);
        return;
    }
    size_t n = gguf_type_size(type);
    if (n == 0) as_die("gguf_write_val: key %s: %s is not a scalar type", key, gguf_type_name(type));
    buf_put(kv_slot(w, key, type), data, n);
}

void gguf_write_u32(gguf_writer *w, const char *key, uint32_t v) { gguf_write_val(w, key, GGUF_TYPE_UINT32, &v); }
void gguf_write_i32(gguf_writer *w, const char *key, int32_t v) { gguf_write_val(w, key, GGUF_TYPE_INT32, &v); }
void gguf_write_u64(gguf_writer *w, const char *key, uint64_t v) { gguf_write_val(w, key, GGUF_TYPE_UINT64, &v); }
void gguf_write_f32(gguf_writer *w, const char *key, float v) { gguf_write_val(w, key, GGUF_TYPE_FLOAT32, &v); }

void gguf_write_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    gguf_write_val(w, key, GGUF_TYPE_BOOL, &b);
}

void gguf_write_str(gguf_writer *w, const char *key, const char *v) { buf_str(kv_slot(w, key, GGUF_TYPE_STRING), v); }

void gguf_write_arr(gguf_writer *w, const char *key, gguf_type arr_type, const void *data, uint64_t n) {
    if (arr_type == GGUF_TYPE_STRING) {
        gguf_write_arr_str(w, key, (const char *const *)data, n);
        return;
    }
    size_t es = gguf_type_size(arr_type), bytes;
    if (es == 0) as_die("gguf_write_arr: key %s: arrays of %s are not supported", key, gguf_type_name(arr_type));
    if (as_mul_overflow((size_t)n, es, &bytes)) as_die("gguf_write_arr: key %s: %llu elements overflow", key, (unsigned long long)n);
    gguf_buf *b = kv_slot(w, key, GGUF_TYPE_ARRAY);
    buf_u32(b, (uint32_t)arr_type);
    buf_u64(b, n);
    buf_put(b, data, bytes);
}

void gguf_write_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    gguf_buf *b = kv_slot(w, key, GGUF_TYPE_ARRAY);
    buf_u32(b, GGUF_TYPE_STRING);
    buf_u64(b, n);
    for (uint64_t i = 0; i < n; i++) buf_str(b, strs[i]);
}

void gguf_write_tensor(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                       const void *data, size_t nbytes) {
    if (!ggml_type_supported(type)) as_die("gguf_write_tensor %s: type %s is not supported", name, ggml_type_name(type));
    if (strlen(name) >= 64) as_die("gguf_write_tensor: name %s is longer than 63 bytes", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) as_die("gguf_write_tensor %s: n_dims %u not in 1..4", name, n_dims);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) as_die("gguf_write_tensor: duplicate tensor %s", name);
    int64_t blk = ggml_type_block_elems(type);
    size_t expect = ggml_type_block_bytes(type);
    gguf_wtensor t = {.name = NULL, .type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1) as_die("gguf_write_tensor %s: ne[%u] = %lld < 1", name, d, (long long)ne[d]);
        t.ne[d] = ne[d];
        size_t f = (size_t)(d == 0 ? ne[0] / blk : ne[d]);
        if (as_mul_overflow(expect, f, &expect)) as_die("gguf_write_tensor %s: size overflows", name);
    }
    if (ne[0] % blk != 0) as_die("gguf_write_tensor %s: ne[0] = %lld is not a multiple of %lld", name, (long long)ne[0], (long long)blk);
    if (nbytes != expect) as_die("gguf_write_tensor %s: %zu bytes given, %s shape needs %zu", name, nbytes, ggml_type_name(type), expect);
    t.name = as_strdup(name);
    t.data = as_malloc(nbytes);
    memcpy(t.data, data, nbytes);
    t.nbytes = nbytes;
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 16;
        w->t = as_realloc(w->t, w->cap_t * sizeof *w->t);
    }
    w->t[w->n_t++] = t;
}

static size_t pad_to(size_t n, size_t a) { return (a - n % a) % a; }

// Everything up to the data section (padded), i.e. the bytes before tensor 0's data.
static void build_header(const gguf_writer *w, gguf_buf *b) {
    buf_put(b, GGUF_MAGIC, 4);
    buf_u32(b, 3);
    buf_u64(b, w->n_t);
    buf_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(b, w->kv[i].key);
        buf_put(b, w->kv[i].val.p, w->kv[i].val.len);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const gguf_wtensor *t = &w->t[i];
        buf_str(b, t->name);
        buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) buf_u64(b, (uint64_t)t->ne[d]);
        buf_u32(b, (uint32_t)t->type);
        buf_u64(b, offset);
        offset += t->nbytes + pad_to(t->nbytes, w->alignment);
    }
    buf_zeros(b, pad_to(b->len, w->alignment));
}

int gguf_writer_to_buffer(gguf_writer *w, uint8_t **out, size_t *out_len) {
    gguf_buf b = {0};
    build_header(w, &b);
    for (size_t i = 0; i < w->n_t; i++) {
        buf_put(&b, w->t[i].data, w->t[i].nbytes);
        buf_zeros(&b, pad_to(w->t[i].nbytes, w->alignment));
    }
    *out = b.p;
    *out_len = b.len;
    return AS_OK;
}

// Streams tensor data straight to the file, so saving a model does not need
// a second in-memory copy of it.
int gguf_writer_save(gguf_writer *w, const char *path) {
    static const uint8_t zeros[64];
    gguf_buf b = {0};
    build_header(w, &b);
    as_atomic_file af;
    if (as_atomic_open(&af, path)) {
        free(b.p);
        return AS_FAIL;
    }
    bool ok = fwrite(b.p, 1, b.len, af.fp) == b.len;
    free(b.p);
    for (size_t i = 0; i < w->n_t && ok; i++) {
        ok = fwrite(w->t[i].data, 1, w->t[i].nbytes, af.fp) == w->t[i].nbytes;
        size_t pad = pad_to(w->t[i].nbytes, w->alignment);
        while (ok && pad) {
            size_t k = AS_MIN(pad, sizeof zeros);
            ok = fwrite(zeros, 1, k, af.fp) == k;
            pad -= k;
        }
    }
    if (!ok) {
        as_atomic_abort(&af);
        return as_error("%s: write failed", path);
    }
    return as_atomic_commit(&af);
}
