// GGUF reader: maps the file and validates every length, count and offset
// before anything points into it.
//
// Layout (little-endian, v2/v3):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x   { string key | u32 type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
//   padding to `alignment` | tensor data (offsets relative to this point)
// A string is { u64 len | len bytes }; an array value is { u32 elem_type | u64 n | n values }.
//
// The checklist follows ggml's gguf.cpp: reads never pass the end of the
// buffer, sizes are computed with overflow checks, counts are bounded by what
// the remaining bytes could hold (so a corrupt count cannot ask for terabytes),
// keys and tensor names are unique, general.alignment is a u32 power of two,
// tensor shapes are sane, and tensor data lies inside the file without overlap.
// Arrays of arrays are rejected (ggml rejects them too; nothing uses them).
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/common.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader reads little-endian values in place; port it before using a big-endian host"
#endif

// ggml's GGML_MAX_NAME: llama.cpp cannot load a tensor whose name does not fit.
#define GGUF_MAX_NAME 64

// Smallest encodings, used to bound counts by the bytes that remain:
// a KV is at least key length (8) + type (4) + a 1-byte value; a tensor info
// at least name length (8) + n_dims (4) + type (4) + offset (8).
#define GGUF_MIN_KV_BYTES 13
#define GGUF_MIN_TENSOR_INFO_BYTES 24

// ---- type tables ----

static const char *const GGUF_TYPE_NAMES[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = "uint8",     [GGUF_TYPE_INT8] = "int8",       [GGUF_TYPE_UINT16] = "uint16",
    [GGUF_TYPE_INT16] = "int16",     [GGUF_TYPE_UINT32] = "uint32",   [GGUF_TYPE_INT32] = "int32",
    [GGUF_TYPE_FLOAT32] = "float32", [GGUF_TYPE_BOOL] = "bool",       [GGUF_TYPE_STRING] = "string",
    [GGUF_TYPE_ARRAY] = "array",     [GGUF_TYPE_UINT64] = "uint64",   [GGUF_TYPE_INT64] = "int64",
    [GGUF_TYPE_FLOAT64] = "float64",
};

// Bytes of one value of a fixed-size type (0 for string/array).
static const size_t GGUF_TYPE_SIZE[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,   [GGUF_TYPE_UINT16] = 2,  [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,  [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_STRING] = 0,  [GGUF_TYPE_ARRAY] = 0,  [GGUF_TYPE_UINT64] = 8,  [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

size_t gguf_type_size(gguf_type t) { return (unsigned)t < GGUF_TYPE_COUNT ? GGUF_TYPE_SIZE[t] : 0; }

const char *gguf_type_name(gguf_type t) {
    if ((unsigned)t < GGUF_TYPE_COUNT) return GGUF_TYPE_NAMES[t];
    return "invalid";
}

// All ggml types by number, with ggml's names (upper case, as gguf-py prints
// them).  Gaps are types ggml has removed; they read as "type N".
static const char *const GGML_TYPE_NAMES[GGML_TYPE_COUNT] = {
    [0] = "F32",      [1] = "F16",     [2] = "Q4_0",    [3] = "Q4_1",    [6] = "Q5_0",    [7] = "Q5_1",
    [8] = "Q8_0",     [9] = "Q8_1",    [10] = "Q2_K",   [11] = "Q3_K",   [12] = "Q4_K",   [13] = "Q5_K",
    [14] = "Q6_K",    [15] = "Q8_K",   [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S",
    [20] = "IQ4_NL",  [21] = "IQ3_S",  [22] = "IQ2_S",  [23] = "IQ4_XS", [24] = "I8",     [25] = "I16",
    [26] = "I32",     [27] = "I64",    [28] = "F64",    [29] = "IQ1_M",  [30] = "BF16",   [34] = "TQ1_0",
    [35] = "TQ2_0",   [39] = "MXFP4",
};

const char *ggml_type_name(ggml_type t) {
    static _Thread_local char buf[32];
    if ((unsigned)t < GGML_TYPE_COUNT && GGML_TYPE_NAMES[t]) return GGML_TYPE_NAMES[t];
    snprintf(buf, sizeof buf, "type %u", (unsigned)t);
    return buf;
}

// Block traits of the formats alphaspin reads: a block of `elems` values takes `bytes` bytes.
//   Q4_0: f16 scale + 32 x 4-bit              = 18
//   Q4_1: f16 scale + f16 min + 32 x 4-bit    = 20
//   Q8_0: f16 scale + 32 x int8               = 34
//   Q4_K: f16 d, dmin + 12 B 6-bit scales + 256 x 4-bit = 144
//   Q6_K: 256 x (4+2)-bit + 16 x int8 scales + f16 d    = 210
static bool type_traits(ggml_type t, int64_t *elems, size_t *bytes) {
    switch (t) {
    case GGML_TYPE_F32: *elems = 1; *bytes = 4; return true;
    case GGML_TYPE_F16: *elems = 1; *bytes = 2; return true;
    case GGML_TYPE_BF16: *elems = 1; *bytes = 2; return true;
    case GGML_TYPE_Q4_0: *elems = 32; *bytes = 18; return true;
    case GGML_TYPE_Q4_1: *elems = 32; *bytes = 20; return true;
    case GGML_TYPE_Q8_0: *elems = 32; *bytes = 34; return true;
    case GGML_TYPE_Q4_K: *elems = 256; *bytes = 144; return true;
    case GGML_TYPE_Q6_K: *elems = 256; *bytes = 210; return true;
    default: *elems = 1; *bytes = 0; return false;
    }
}

bool ggml_type_supported(ggml_type t) {
    int64_t e;
    size_t b;
    return type_traits(t, &e, &b);
}

int64_t ggml_type_block_elems(ggml_type t) {
    int64_t e;
    size_t b;
    type_traits(t, &e, &b);
    return e;
}

size_t ggml_type_block_bytes(ggml_type t) {
    int64_t e;
    size_t b;
    type_traits(t, &e, &b);
    return b;
}

#define GGML_SUPPORTED_LIST "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K"

// ---- strings ----

char *gguf_str_dup(gguf_str s) { return as_strndup(s.ptr, (size_t)s.len); }

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

static int gguf_str_cmp(gguf_str a, gguf_str b) {
    size_t n = (size_t)AS_MIN(a.len, b.len);
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c) return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

// A key or tensor name for an error line: at most 64 bytes, non-printable
// bytes as \xNN, so a corrupt name cannot break the one-line message.
typedef struct { char s[4 * 64 + 8]; } gguf_printable;

static gguf_printable printable(gguf_str s) {
    gguf_printable p;
    size_t o = 0, n = (size_t)AS_MIN(s.len, 64);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') p.s[o++] = (char)c;
        else o += (size_t)snprintf(p.s + o, 5, "\\x%02x", c);
    }
    if (s.len > n) { memcpy(p.s + o, "...", 3); o += 3; }
    p.s[o] = 0;
    return p;
}
#define PR(str) (printable(str).s)

// ---- bounded reader ----

typedef struct gguf_reader {
    const uint8_t *base;
    size_t size, pos;
    const char *name; // for errors
} gguf_reader;

static size_t rd_left(const gguf_reader *r) { return r->size - r->pos; }

static int rd_need(gguf_reader *r, size_t n, const char *what) {
    if (n > rd_left(r))
        return as_error("%s: file truncated: %s needs %zu bytes at offset %zu, but the file ends at %zu", r->name,
                        what, n, r->pos, r->size);
    return AS_OK;
}

static int rd_u32(gguf_reader *r, uint32_t *v, const char *what) {
    if (rd_need(r, 4, what)) return AS_FAIL;
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return AS_OK;
}

static int rd_u64(gguf_reader *r, uint64_t *v, const char *what) {
    if (rd_need(r, 8, what)) return AS_FAIL;
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return AS_OK;
}

static int rd_str(gguf_reader *r, gguf_str *s, const char *what) {
    uint64_t len;
    if (rd_u64(r, &len, what)) return AS_FAIL;
    // Compare before adding: a length near 2^64 must not wrap the position.
    if (len > rd_left(r))
        return as_error("%s: %s: string length %" PRIu64 " at offset %zu exceeds the %zu bytes left in the file",
                        r->name, what, len, r->pos - 8, rd_left(r));
    s->ptr = (const char *)r->base + r->pos;
    s->len = len;
    r->pos += (size_t)len;
    return AS_OK;
}

// ---- KV section ----

// Reads one value of `type` (not an array) into kv fields; `what` names it for errors.
static int read_array(gguf_reader *r, gguf_kv *kv, const char *what) {
    uint32_t at;
    uint64_t n;
    if (rd_u32(r, &at, what) || rd_u64(r, &n, what)) return AS_FAIL;
    if (at >= GGUF_TYPE_COUNT)
        return as_error("%s: %s: array element type %u is not a GGUF value type", r->name, what, at);
    if (at == GGUF_TYPE_ARRAY)
        return as_error("%s: %s: arrays of arrays are not supported (ggml rejects them too)", r->name, what);
    kv->arr_type = (gguf_type)at;
    kv->n = n;
    if (at == GGUF_TYPE_STRING) {
        // Each element has at least its 8-byte length: bound n before allocating n offsets.
        if (n > rd_left(r) / 8)
            return as_error("%s: %s: array of %" PRIu64 " strings cannot fit in the %zu bytes left in the file",
                            r->name, what, n, rd_left(r));
        kv->str_offs = as_malloc((size_t)n * sizeof(uint64_t));
        kv->data = r->base + r->pos;
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            kv->str_offs[i] = r->pos;
            if (rd_str(r, &s, what)) return AS_FAIL;
        }
        return AS_OK;
    }
    size_t bytes;
    if (__builtin_mul_overflow((size_t)n, GGUF_TYPE_SIZE[at], &bytes) || n > SIZE_MAX || bytes > rd_left(r))
        return as_error("%s: %s: array of %" PRIu64 " %s values cannot fit in the %zu bytes left in the file", r->name,
                        what, n, GGUF_TYPE_NAMES[at], rd_left(r));
    kv->data = r->base + r->pos;
    r->pos += bytes;
    return AS_OK;
}

static int read_kv(gguf_reader *r, gguf_kv *kv, uint64_t i) {
    char what[320];
    snprintf(what, sizeof what, "key #%" PRIu64, i);
    uint32_t type;
    if (rd_str(r, &kv->key, what)) return AS_FAIL;
    snprintf(what, sizeof what, "key '%s'", PR(kv->key));
    if (rd_u32(r, &type, what)) return AS_FAIL;
    if (type >= GGUF_TYPE_COUNT)
        return as_error("%s: %s has value type %u, which is not a GGUF value type", r->name, what, type);
    kv->type = (gguf_type)type;
    kv->n = 1;
    if (type == GGUF_TYPE_ARRAY) return read_array(r, kv, what);
    if (type == GGUF_TYPE_STRING) {
        if (rd_str(r, &kv->str, what)) return AS_FAIL;
        kv->data = kv->str.ptr;
        return AS_OK;
    }
    if (rd_need(r, GGUF_TYPE_SIZE[type], what)) return AS_FAIL;
    kv->data = r->base + r->pos;
    r->pos += GGUF_TYPE_SIZE[type];
    return AS_OK;
}

static int cmp_kv_key(const void *a, const void *b) {
    return gguf_str_cmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return gguf_str_cmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const gguf_tensor *ta = *(const gguf_tensor *const *)a, *tb = *(const gguf_tensor *const *)b;
    if (ta->offset != tb->offset) return ta->offset < tb->offset ? -1 : 1;
    return ta < tb ? -1 : ta > tb; // file order on ties, so the message is deterministic
}

// Sorting makes duplicate detection O(n log n): a corrupt file with millions
// of tiny keys must not turn into an O(n^2) hang.
static int check_unique_keys(const gguf_file *f) {
    if (f->n_kv < 2) return AS_OK;
    const gguf_kv **v = as_malloc((size_t)f->n_kv * sizeof *v);
    for (uint64_t i = 0; i < f->n_kv; i++) v[i] = &f->kv[i];
    qsort(v, (size_t)f->n_kv, sizeof *v, cmp_kv_key);
    int rc = AS_OK;
    for (uint64_t i = 1; i < f->n_kv && rc == AS_OK; i++)
        if (gguf_str_cmp(v[i - 1]->key, v[i]->key) == 0) rc = as_error("%s: duplicate key '%s'", f->path, PR(v[i]->key));
    free(v);
    return rc;
}

static int read_alignment(gguf_file *f) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(f, "general.alignment");
    if (i < 0) return AS_OK;
    const gguf_kv *kv = &f->kv[i];
    if (kv->type != GGUF_TYPE_UINT32)
        return as_error("%s: general.alignment must be of type uint32, found %s", f->path, gguf_type_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->data, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return as_error("%s: general.alignment must be a power of two, found %u", f->path, a);
    f->alignment = a;
    return AS_OK;
}

// ---- tensor infos ----

static int read_tensor_info(gguf_reader *r, gguf_tensor *t, uint64_t i) {
    char what[320];
    snprintf(what, sizeof what, "tensor #%" PRIu64, i);
    if (rd_str(r, &t->name, what)) return AS_FAIL;
    snprintf(what, sizeof what, "tensor '%s'", PR(t->name));
    if (t->name.len >= GGUF_MAX_NAME)
        return as_error("%s: %s: name is %" PRIu64 " bytes long (at most %d)", r->name, what, t->name.len,
                        GGUF_MAX_NAME - 1);
    if (memchr(t->name.ptr, 0, (size_t)t->name.len))
        return as_error("%s: %s: name contains a NUL byte", r->name, what);
    t->cname = gguf_str_dup(t->name);

    if (rd_u32(r, &t->n_dims, what)) return AS_FAIL;
    if (t->n_dims > GGUF_MAX_DIMS)
        return as_error("%s: %s has %u dimensions (at most %d)", r->name, what, t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if (rd_u64(r, &ne, what)) return AS_FAIL;
        if (ne == 0 || ne > INT64_MAX)
            return as_error("%s: %s: dimension %u is %" PRId64 " (each must be >= 1)", r->name, what, d, (int64_t)ne);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    if (rd_u32(r, &type, what) || rd_u64(r, &t->offset, what)) return AS_FAIL;
    t->type = (ggml_type)type;
    if (!ggml_type_supported(t->type)) {
        if (type < GGML_TYPE_COUNT && GGML_TYPE_NAMES[type])
            return as_error("%s: %s has type %s, which alphaspin does not read (supported: " GGML_SUPPORTED_LIST ")",
                            r->name, what, GGML_TYPE_NAMES[type]);
        return as_error("%s: %s has unknown type %u (supported: " GGML_SUPPORTED_LIST ")", r->name, what, type);
    }

    // Element count and bytes: quantised rows are whole blocks, so
    // nbytes = ne0/blk * block_bytes * ne1 * ne2 * ne3, every product checked.
    int64_t blk = ggml_type_block_elems(t->type), nel = t->ne[0];
    if (t->ne[0] % blk != 0)
        return as_error("%s: %s: row length %" PRId64 " is not a multiple of the %s block size %" PRId64, r->name,
                        what, t->ne[0], ggml_type_name(t->type), blk);
    for (int d = 1; d < GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(nel, t->ne[d], &nel))
            return as_error("%s: %s: element count of shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                            "] overflows int64",
                            r->name, what, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    size_t nbytes = ggml_type_block_bytes(t->type);
    if (__builtin_mul_overflow(nbytes, (size_t)(t->ne[0] / blk), &nbytes) ||
        __builtin_mul_overflow(nbytes, (size_t)(nel / t->ne[0]), &nbytes))
        return as_error("%s: %s: byte size overflows size_t", r->name, what);
    t->nbytes = nbytes;
    return AS_OK;
}

// Tensor data: offsets aligned, ranges inside the file, names unique, no overlap.
static int check_tensors(gguf_file *f) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return as_error("%s: tensor '%s' offset %" PRIu64 " is not a multiple of the alignment %zu", f->path,
                            PR(t->name), t->offset, f->alignment);
        size_t begin, end;
        if (f->data_offset > f->size || t->offset > f->size - f->data_offset ||
            __builtin_add_overflow(f->data_offset, (size_t)t->offset, &begin) ||
            __builtin_add_overflow(begin, t->nbytes, &end) || end > f->size)
            return as_error("%s: tensor '%s' data (offset %" PRIu64 ", %zu bytes, data section at %zu) lies beyond "
                            "the end of the file (%zu bytes)",
                            f->path, PR(t->name), t->offset, t->nbytes, f->data_offset, f->size);
        t->data = f->base + begin;
    }
    if (f->n_tensors < 2) return AS_OK;
    size_t n = (size_t)f->n_tensors;
    const gguf_tensor **v = as_malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = &f->tensors[i];
    int rc = AS_OK;
    qsort(v, n, sizeof *v, cmp_tensor_offset);
    for (size_t i = 1; i < n && rc == AS_OK; i++)
        if (v[i - 1]->offset + v[i - 1]->nbytes > v[i]->offset) // both < file size: no overflow
            rc = as_error("%s: tensors '%s' and '%s' overlap (bytes %" PRIu64 "..%" PRIu64 " and %" PRIu64 "..)",
                          f->path, PR(v[i - 1]->name), PR(v[i]->name), v[i - 1]->offset,
                          v[i - 1]->offset + v[i - 1]->nbytes, v[i]->offset);
    // Kept sorted by name for gguf_find_tensor's binary search.
    qsort(v, n, sizeof *v, cmp_tensor_name);
    for (size_t i = 1; i < n && rc == AS_OK; i++)
        if (gguf_str_cmp(v[i - 1]->name, v[i]->name) == 0)
            rc = as_error("%s: duplicate tensor name '%s'", f->path, PR(v[i]->name));
    f->tensors_by_name = v;
    return rc;
}

// Grows a table of `elem` bytes to hold at least `need` items (doubling), so
// memory follows what was actually parsed, not what a header claims.
static void *grow(void *p, uint64_t *cap, uint64_t need, size_t elem) {
    if (need <= *cap) return p;
    uint64_t c = *cap ? *cap * 2 : 16;
    if (c < need) c = need;
    p = as_realloc(p, (size_t)c * elem);
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(c - *cap) * elem);
    *cap = c;
    return p;
}

static int parse(gguf_file *f) {
    gguf_reader r = {.base = f->base, .size = f->size, .pos = 0, .name = f->path};
    if (f->size < 4 || memcmp(f->base, GGUF_MAGIC, 4) != 0) {
        if (f->size < 4) return as_error("%s: not a GGUF file (%zu bytes, too short for the magic)", f->path, f->size);
        return as_error("%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", f->path, f->base[0],
                        f->base[1], f->base[2], f->base[3]);
    }
    r.pos = 4;
    if (rd_u32(&r, &f->version, "the version")) return AS_FAIL;
    // A big-endian file (v3 allows them) has its version byte-swapped: 1..3 in the top byte.
    if ((f->version & 0x00ffffffu) == 0 && (f->version >> 24) >= 1 && (f->version >> 24) <= 3)
        return as_error("%s: big-endian GGUF file (version %u byte-swapped); only little-endian files are supported",
                        f->path, f->version >> 24);
    if (f->version == 1)
        return as_error("%s: GGUF version 1 is not supported (only v2 and v3; re-convert the model)", f->path);
    if (f->version != 2 && f->version != 3)
        return as_error("%s: unsupported GGUF version %u (only v2 and v3)", f->path, f->version);
    // f->n_kv and f->n_tensors count what has been parsed, so gguf_close frees exactly that.
    uint64_t n_tensors, n_kv;
    if (rd_u64(&r, &n_tensors, "the tensor count") || rd_u64(&r, &n_kv, "the key count")) return AS_FAIL;
    if (n_kv > rd_left(&r) / GGUF_MIN_KV_BYTES)
        return as_error("%s: n_kv %" PRIu64 " is impossible: the %zu bytes left in the file hold at most %zu keys",
                        f->path, n_kv, rd_left(&r), rd_left(&r) / GGUF_MIN_KV_BYTES);
    if (n_tensors > rd_left(&r) / GGUF_MIN_TENSOR_INFO_BYTES)
        return as_error("%s: n_tensors %" PRIu64 " is impossible: the %zu bytes left in the file hold at most %zu "
                        "tensor infos",
                        f->path, n_tensors, rd_left(&r), rd_left(&r) / GGUF_MIN_TENSOR_INFO_BYTES);

    uint64_t cap = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        f->kv = grow(f->kv, &cap, i + 1, sizeof *f->kv);
        f->n_kv = i + 1;
        if (read_kv(&r, &f->kv[i], i)) return AS_FAIL;
    }
    if (check_unique_keys(f) || read_alignment(f)) return AS_FAIL;

    cap = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->tensors = grow(f->tensors, &cap, i + 1, sizeof *f->tensors);
        f->n_tensors = i + 1;
        if (read_tensor_info(&r, &f->tensors[i], i)) return AS_FAIL;
    }
    // The data section starts at the end of the header rounded up to the alignment.
    size_t pad = (f->alignment - r.pos % f->alignment) % f->alignment;
    if (__builtin_add_overflow(r.pos, pad, &f->data_offset)) return as_error("%s: header size overflows", f->path);
    return check_tensors(f);
}

static gguf_file *file_new(const char *name) {
    gguf_file *f = as_calloc(1, sizeof *f);
    f->path = as_strdup(name);
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    return f;
}

int gguf_open_buffer(gguf_file **out, const void *buf, size_t size, const char *name) {
    *out = NULL;
    gguf_file *f = file_new(name ? name : "<buffer>");
    f->base = buf;
    f->size = size;
    if (parse(f)) {
        gguf_close(f);
        return AS_FAIL;
    }
    *out = f;
    return AS_OK;
}

int gguf_open_owned(gguf_file **out, void *buf, size_t size, const char *name) {
    if (gguf_open_buffer(out, buf, size, name)) {
        free(buf);
        return AS_FAIL;
    }
    (*out)->owns_base = true;
    return AS_OK;
}

int gguf_open(gguf_file **out, const char *path) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return as_error("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return as_error("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return as_error("%s: not a regular file", path);
    }
    if (st.st_size == 0) { // mmap cannot map an empty file
        close(fd);
        return as_error("%s: not a GGUF file (the file is empty)", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return as_error("%s: file too large to map", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); // the mapping keeps the file alive
    if (p == MAP_FAILED) return as_error("%s: cannot map: %s", path, strerror(e));
    gguf_file *f = file_new(path);
    f->base = p;
    f->size = (size_t)st.st_size;
    f->mapped = true;
    if (parse(f)) {
        gguf_close(f);
        return AS_FAIL;
    }
    *out = f;
    return AS_OK;
}

void gguf_own_tensor_data(gguf_file *f) {
    if (!f->mapped || f->tensor_store || f->data_offset >= f->size) return;
    const uint8_t *src = f->base + f->data_offset;
    const size_t n = f->size - f->data_offset, chunk = (size_t)4 << 20;
    uint8_t *dst = as_aligned_alloc(n);
    // In chunks, each chunk's file pages let go once copied (the whole pages
    // inside it), so that the process never holds both: peak RSS as with the
    // mapping alone.
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (size_t o = 0; o < n; o += chunk) {
        const size_t len = n - o < chunk ? n - o : chunk;
        memcpy(dst + o, src + o, len);
        const uintptr_t a = ((uintptr_t)(src + o) + page - 1) / page * page, b = (uintptr_t)(src + o + len) / page * page;
        if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) f->tensors[i].data = dst + ((const uint8_t *)f->tensors[i].data - src);
    f->tensor_store = dst;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    free(f->tensor_store);
    for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].str_offs);
    for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].cname);
    free(f->kv);
    free(f->tensors);
    free(f->tensors_by_name);
    if (f->mapped) munmap((void *)f->base, f->size);
    if (f->owns_base) free((void *)f->base);
    free(f->path);
    free(f);
}

// ---- lookup ----

int64_t gguf_find_key(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return (int64_t)i;
    return -1;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (f->n_tensors == 1) return strcmp(f->tensors[0].cname, name) == 0 ? &f->tensors[0] : NULL;
    if (!f->tensors_by_name) return NULL;
    size_t lo = 0, hi = (size_t)f->n_tensors;
    gguf_str s = {name, strlen(name)};
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = gguf_str_cmp(f->tensors_by_name[mid]->name, s);
        if (c == 0) return f->tensors_by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

// Integer value of a scalar KV of any integer type: signed in *iv or unsigned in *uv.
// Returns 0 if not an integer type, 1 for signed, 2 for unsigned.
static int kv_int(const gguf_kv *kv, int64_t *iv, uint64_t *uv) {
    const void *p = kv->data;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: { uint8_t v; memcpy(&v, p, 1); *uv = v; return 2; }
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); *uv = v; return 2; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); *uv = v; return 2; }
    case GGUF_TYPE_UINT64: { uint64_t v; memcpy(&v, p, 8); *uv = v; return 2; }
    case GGUF_TYPE_INT8: { int8_t v; memcpy(&v, p, 1); *iv = v; return 1; }
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); *iv = v; return 1; }
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); *iv = v; return 1; }
    case GGUF_TYPE_INT64: { int64_t v; memcpy(&v, p, 8); *iv = v; return 1; }
    default: return 0;
    }
}

static const gguf_kv *get_kv(const gguf_file *f, const char *key, const char *expected) {
    int64_t i = gguf_find_key(f, key);
    if (i < 0) {
        as_error("%s: key %s not found (expected %s)", f->path, key, expected);
        return NULL;
    }
    return &f->kv[i];
}

static int wrong_type(const gguf_file *f, const char *key, const char *expected, const gguf_kv *kv) {
    if (kv->type == GGUF_TYPE_ARRAY)
        return as_error("%s: key %s: expected %s, found array of %s", f->path, key, expected, gguf_type_name(kv->arr_type));
    return as_error("%s: key %s: expected %s, found %s", f->path, key, expected, gguf_type_name(kv->type));
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    const gguf_kv *kv = get_kv(f, key, "uint32");
    if (!kv) return AS_FAIL;
    int64_t iv = 0;
    uint64_t uv = 0;
    int k = kv_int(kv, &iv, &uv);
    if (k == 0) return wrong_type(f, key, "uint32", kv);
    if (k == 1 ? (iv < 0 || iv > UINT32_MAX) : uv > UINT32_MAX)
        return as_error("%s: key %s: value %s%" PRIu64 " does not fit in uint32", f->path, key,
                        k == 1 && iv < 0 ? "-" : "", k == 1 ? (iv < 0 ? -(uint64_t)iv : (uint64_t)iv) : uv);
    *out = k == 1 ? (uint32_t)iv : (uint32_t)uv;
    return AS_OK;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = get_kv(f, key, "integer");
    if (!kv) return AS_FAIL;
    int64_t iv = 0;
    uint64_t uv = 0;
    int k = kv_int(kv, &iv, &uv);
    if (k == 0) return wrong_type(f, key, "integer", kv);
    if (k == 2 && uv > INT64_MAX)
        return as_error("%s: key %s: value %" PRIu64 " does not fit in int64", f->path, key, uv);
    *out = k == 1 ? iv : (int64_t)uv;
    return AS_OK;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv = get_kv(f, key, "float32");
    if (!kv) return AS_FAIL;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->data, 4);
        return AS_OK;
    }
    if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->data, 8);
        *out = (float)d;
        return AS_OK;
    }
    // Integers are accepted too (some converters write e.g. rope.freq_base as one).
    int64_t iv = 0;
    uint64_t uv = 0;
    int k = kv_int(kv, &iv, &uv);
    if (k == 0) return wrong_type(f, key, "float32", kv);
    *out = k == 1 ? (float)iv : (float)uv;
    return AS_OK;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = get_kv(f, key, "bool");
    if (!kv) return AS_FAIL;
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(f, key, "bool", kv);
    *out = *(const uint8_t *)kv->data != 0;
    return AS_OK;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = get_kv(f, key, "string");
    if (!kv) return AS_FAIL;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(f, key, "string", kv);
    *out = kv->str;
    return AS_OK;
}

int gguf_opt_u32(const gguf_file *f, const char *key, uint32_t *out) {
    return gguf_find_key(f, key) < 0 ? AS_OK : gguf_get_u32(f, key, out);
}

int gguf_opt_f32(const gguf_file *f, const char *key, float *out) {
    return gguf_find_key(f, key) < 0 ? AS_OK : gguf_get_f32(f, key, out);
}

int gguf_opt_bool(const gguf_file *f, const char *key, bool *out) {
    return gguf_find_key(f, key) < 0 ? AS_OK : gguf_get_bool(f, key, out);
}

int gguf_get_arr(const gguf_file *f, const char *key, gguf_type *arr_type, uint64_t *n, int64_t *kv_index) {
    int64_t i = gguf_find_key(f, key);
    if (i < 0) return as_error("%s: key %s not found (expected array)", f->path, key);
    const gguf_kv *kv = &f->kv[i];
    if (kv->type != GGUF_TYPE_ARRAY) return wrong_type(f, key, "array", kv);
    if (arr_type) *arr_type = kv->arr_type;
    if (n) *n = kv->n;
    if (kv_index) *kv_index = i;
    return AS_OK;
}

gguf_str gguf_arr_str(const gguf_file *f, int64_t kv_index, uint64_t i) {
    const gguf_kv *kv = &f->kv[kv_index];
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING || i >= kv->n)
        as_die("gguf_arr_str: key '%s' element %" PRIu64 " is not a string array element", PR(kv->key), i);
    uint64_t off = kv->str_offs[i];
    gguf_str s;
    memcpy(&s.len, f->base + off, 8);
    s.ptr = (const char *)f->base + off + 8;
    return s;
}

double gguf_arr_num(const gguf_file *f, int64_t kv_index, uint64_t i) {
    const gguf_kv *kv = &f->kv[kv_index];
    if (kv->type != GGUF_TYPE_ARRAY || i >= kv->n || GGUF_TYPE_SIZE[kv->arr_type] == 0)
        as_die("gguf_arr_num: key '%s' element %" PRIu64 " is not a numeric array element", PR(kv->key), i);
    const uint8_t *p = (const uint8_t *)kv->data + i * GGUF_TYPE_SIZE[kv->arr_type];
    switch (kv->arr_type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_BOOL: return *p;
    case GGUF_TYPE_INT8: return (int8_t)*p;
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_TYPE_UINT64: { uint64_t v; memcpy(&v, p, 8); return (double)v; }
    case GGUF_TYPE_INT64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case GGUF_TYPE_FLOAT32: { float v; memcpy(&v, p, 4); return v; }
    case GGUF_TYPE_FLOAT64: { double v; memcpy(&v, p, 8); return v; }
    default: return 0; // unreachable: size 0 types rejected above
    }
}
