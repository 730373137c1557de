// safetensors reader and writer (format: see safetensors.h).
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "tensor/quant.h"
#include "util/common.h"
#include "util/json.h"

// A header larger than this is a corrupt file, not a checkpoint (the
// reference implementation's limit is 100 MB).
#define ST_MAX_HEADER (100u << 20)

static const char *const DTYPE_NAME[] = {"F32", "F16", "BF16", "F64", "I32", "I64"};
static const size_t DTYPE_SIZE[] = {4, 2, 2, 8, 4, 8};

size_t st_dtype_size(st_dtype t) { return DTYPE_SIZE[t]; }

static int dtype_parse(const char *s, st_dtype *out) {
    for (size_t i = 0; i < AS_ARRAY_LEN(DTYPE_NAME); i++)
        if (!strcmp(s, DTYPE_NAME[i])) {
            *out = (st_dtype)i;
            return AS_OK;
        }
    return AS_FAIL;
}

void st_close(st_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
    free(f->meta_keys), free(f->meta_values);
    free(f->tensors);
    free(f->buf);
    free(f->path);
    free(f);
}

static int cmp_begin(const void *a, const void *b) {
    const uint64_t x = ((const uint64_t *)a)[0], y = ((const uint64_t *)b)[0];
    return x < y ? -1 : x > y;
}

int st_open(st_file **out, const char *path) {
    *out = NULL;
    st_file *f = as_calloc(1, sizeof *f);
    f->path = as_strdup(path);
    char *text = NULL;
    cJSON *doc = NULL;
    uint64_t *spans = NULL;
    if (as_read_file(path, &text, &f->size)) goto fail;
    f->buf = (uint8_t *)text;
    if (f->size < 8) {
        as_error("%s: %zu bytes: too short for a safetensors header", path, f->size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->buf[i];
    if (hlen > f->size - 8 || hlen > ST_MAX_HEADER || hlen < 2) {
        as_error("%s: header length %llu does not fit the file of %zu bytes", path, (unsigned long long)hlen, f->size);
        goto fail;
    }
    doc = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hlen);
    if (!doc || !cJSON_IsObject(doc)) {
        as_error("%s: header is not a JSON object", path);
        goto fail;
    }
    const uint8_t *data = f->buf + 8 + hlen;
    const uint64_t data_size = f->size - 8 - hlen;
    f->data = data, f->data_size = (size_t)data_size;
    const int n = cJSON_GetArraySize(doc);
    f->tensors = as_calloc((size_t)AS_MAX(n, 1), sizeof *f->tensors);
    spans = as_calloc((size_t)AS_MAX(n, 1) * 2, sizeof *spans);
    const cJSON *e;
    cJSON_ArrayForEach(e, doc) {
        if (!strcmp(e->string, "__metadata__")) {
            if (f->meta_keys) {
                as_error("%s: __metadata__ appears twice", path);
                goto fail;
            }
            const int nm = cJSON_GetArraySize(e);
            f->meta_keys = as_calloc((size_t)AS_MAX(nm, 1), sizeof(char *));
            f->meta_values = as_calloc((size_t)AS_MAX(nm, 1), sizeof(char *));
            const cJSON *kv;
            cJSON_ArrayForEach(kv, e) {
                if (!cJSON_IsString(kv)) {
                    as_error("%s: __metadata__ value of %s is not a string", path, kv->string);
                    goto fail;
                }
                f->meta_keys[f->n_meta] = as_strdup(kv->string);
                f->meta_values[f->n_meta++] = as_strdup(kv->valuestring);
            }
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        const cJSON *dt = cJSON_GetObjectItem(e, "dtype"), *sh = cJSON_GetObjectItem(e, "shape"), *off = cJSON_GetObjectItem(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) {
            as_error("%s: tensor %s: expected dtype, shape and data_offsets [begin, end]", path, e->string);
            goto fail;
        }
        if (dtype_parse(dt->valuestring, &t->dtype)) {
            as_error("%s: tensor %s: dtype %s is not supported (F32, F16, BF16, F64, I32, I64)", path, e->string, dt->valuestring);
            goto fail;
        }
        t->n_dims = cJSON_GetArraySize(sh);
        if (t->n_dims > ST_MAX_DIMS) {
            as_error("%s: tensor %s: %d dimensions (at most %d)", path, e->string, t->n_dims, ST_MAX_DIMS);
            goto fail;
        }
        uint64_t numel = 1;
        for (int d = 0; d < t->n_dims; d++) {
            const cJSON *v = cJSON_GetArrayItem(sh, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e15 || v->valuedouble != (double)(int64_t)v->valuedouble) {
                as_error("%s: tensor %s: dimension %d is not a non-negative integer", path, e->string, d);
                goto fail;
            }
            t->shape[d] = (int64_t)v->valuedouble;
            if (__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
                as_error("%s: tensor %s: shape overflows", path, e->string);
                goto fail;
            }
        }
        const cJSON *b0 = cJSON_GetArrayItem(off, 0), *b1 = cJSON_GetArrayItem(off, 1);
        if (!cJSON_IsNumber(b0) || !cJSON_IsNumber(b1) || b0->valuedouble < 0 || b1->valuedouble < b0->valuedouble ||
            b1->valuedouble > (double)data_size) {
            as_error("%s: tensor %s: data_offsets outside the %llu data bytes", path, e->string, (unsigned long long)data_size);
            goto fail;
        }
        const uint64_t begin = (uint64_t)b0->valuedouble, end = (uint64_t)b1->valuedouble;
        if (numel > UINT64_MAX / 8 || end - begin != numel * st_dtype_size(t->dtype)) {
            as_error("%s: tensor %s: %llu bytes for %llu elements of %s", path, e->string, (unsigned long long)(end - begin),
                     (unsigned long long)numel, dt->valuestring);
            goto fail;
        }
        if (st_find(f, e->string)) {
            as_error("%s: tensor %s appears twice", path, e->string);
            goto fail;
        }
        t->name = as_strdup(e->string);
        t->n_elems = (int64_t)numel;
        t->data = data + begin;
        spans[2 * f->n_tensors] = begin, spans[2 * f->n_tensors + 1] = end;
        f->n_tensors++;
    }
    qsort(spans, (size_t)f->n_tensors, 2 * sizeof *spans, cmp_begin);
    for (int64_t i = 1; i < f->n_tensors; i++)
        if (spans[2 * i] < spans[2 * i - 1]) {
            as_error("%s: tensor data ranges overlap at byte %llu", path, (unsigned long long)spans[2 * i]);
            goto fail;
        }
    free(spans);
    cJSON_Delete(doc);
    *out = f;
    return AS_OK;
fail:
    free(spans);
    cJSON_Delete(doc);
    st_close(f);
    return AS_FAIL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && !strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

float st_get(const st_tensor *t, int64_t i) {
    const uint8_t *p = (const uint8_t *)t->data + (size_t)i * st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_F32: { float v; memcpy(&v, p, 4); return v; }
    case ST_F64: { double v; memcpy(&v, p, 8); return (float)v; }
    case ST_I32: { int32_t v; memcpy(&v, p, 4); return (float)v; }
    case ST_I64: { int64_t v; memcpy(&v, p, 8); return (float)v; }
    default: break;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    return t->dtype == ST_F16 ? as_fp16_to_f32(h) : as_bf16_to_f32(h);
}

// ---- writer ----

typedef struct st_entry {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_entry;

struct st_writer {
    st_entry *e;
    int n, cap;
    cJSON *metadata;
};

st_writer *st_writer_init(void) {
    st_writer *w = as_calloc(1, sizeof *w);
    w->metadata = cJSON_CreateObject();
    return w;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    cJSON_Delete(w->metadata);
    free(w);
}

void st_writer_add_f32(st_writer *w, const char *name, int n_dims, const int64_t *shape, const float *data) {
    st_writer_add(w, name, ST_F32, n_dims, shape, data);
}

void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int n_dims, const int64_t *shape, const void *data) {
    if (n_dims < 0 || n_dims > ST_MAX_DIMS) as_die("st_writer_add: %d dimensions", n_dims);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->e = as_realloc(w->e, sizeof *w->e * (size_t)w->cap);
    }
    st_entry *e = &w->e[w->n++];
    e->name = as_strdup(name);
    e->dtype = dtype;
    e->n_dims = n_dims;
    memcpy(e->shape, shape, sizeof(int64_t) * (size_t)n_dims);
    e->data = data;
}

void st_writer_set_metadata(st_writer *w, const char *key, const char *value) {
    cJSON_DeleteItemFromObject(w->metadata, key);
    cJSON_AddStringToObject(w->metadata, key, value);
}

static int64_t entry_elems(const st_entry *e) {
    int64_t n = 1;
    for (int d = 0; d < e->n_dims; d++) n *= e->shape[d];
    return n;
}

void st_writer_data(const st_writer *w, void (*fn)(void *user, const void *data, size_t bytes), void *user) {
    for (int i = 0; i < w->n; i++) fn(user, w->e[i].data, (size_t)entry_elems(&w->e[i]) * st_dtype_size(w->e[i].dtype));
}

int st_writer_save(st_writer *w, const char *path) {
    cJSON *h = cJSON_CreateObject();
    if (cJSON_GetArraySize(w->metadata) > 0) cJSON_AddItemToObject(h, "__metadata__", cJSON_Duplicate(w->metadata, 1));
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->e[i];
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "dtype", DTYPE_NAME[e->dtype]);
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e->n_dims; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        const uint64_t bytes = (uint64_t)entry_elems(e) * st_dtype_size(e->dtype);
        cJSON *of = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + bytes)));
        cJSON_AddItemToObject(h, e->name, t);
        off += bytes;
    }
    char *json = as_json_print(h, false);
    cJSON_Delete(h);
    // Header padded with spaces to a multiple of 8 so the data is aligned.
    const size_t jl = strlen(json), hl = (jl + 7) & ~(size_t)7;
    as_atomic_file af;
    if (as_atomic_open(&af, path)) {
        free(json);
        return AS_FAIL;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    bool ok = fwrite(len8, 1, 8, af.fp) == 8 && fwrite(json, 1, jl, af.fp) == jl;
    for (size_t i = jl; i < hl && ok; i++) ok = fputc(' ', af.fp) != EOF;
    free(json);
    for (int i = 0; i < w->n && ok; i++) {
        const size_t n = (size_t)entry_elems(&w->e[i]) * st_dtype_size(w->e[i].dtype);
        ok = n == 0 || fwrite(w->e[i].data, 1, n, af.fp) == n; // little-endian hosts only (x86-64, aarch64)
    }
    if (!ok) {
        as_atomic_abort(&af);
        return as_error("%s: write failed", path);
    }
    return as_atomic_commit(&af);
}
