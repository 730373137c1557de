// GGUF reader and writer: writer -> reader round trip for every value and
// tensor type, getters, and a corruption suite (every truncation, targeted
// field corruptions with the expected message, random byte flips).  The
// writer's output is checked independently by gguf-py in tools/check_gguf_writer.py.
#include "test_common.h"

#include <sys/stat.h>

#include "gguf/gguf.h"
#include "gguf/gguf_sample.h"
#include "gguf/gguf_walk.h"
#include "util/common.h"

#define NAME "corrupt.gguf"

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void build(uint32_t alignment, bool tensors, uint8_t **buf, size_t *n) {
    gguf_writer *w = gguf_writer_init();
    if (alignment) gguf_writer_set_alignment(w, alignment);
    sample_fill(w, tensors);
    assert_int_equal(gguf_writer_to_buffer(w, buf, n), 0);
    gguf_writer_free(w);
}

// An error must be one line that starts with the file name.
static void assert_error_line(const char *name) {
    const char *e = as_last_error();
    if (strncmp(e, name, strlen(name)) != 0 || strchr(e, '\n')) print_error("bad error line: '%s'\n", e);
    assert_int_equal(strncmp(e, name, strlen(name)), 0);
    assert_int_equal(e[strlen(name)], ':');
    assert_null(strchr(e, '\n'));
}

// Opens an exact-size copy (so ASan sees any read past the end) and expects failure mentioning `substr`.
static void expect_fail(const uint8_t *buf, size_t n, const char *substr) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, buf, n);
    gguf_file *f = (gguf_file *)copy; // must be reset to NULL on failure
    as_clear_error();
    int rc = gguf_open_buffer(&f, copy, n, NAME);
    if (rc == 0 || !strstr(as_last_error(), substr))
        print_error("expected failure with '%s', got rc %d, '%s'\n", substr, rc, as_last_error());
    if (rc == 0) gguf_close(f);
    assert_int_equal(rc, -1);
    assert_null(f);
    assert_error_line(NAME);
    assert_non_null(strstr(as_last_error(), substr));
    free(copy);
}

// ---- round trip ----

static void check_sample(const gguf_file *f, size_t alignment, bool tensors, bool alignment_key) {
    uint32_t u32;
    int64_t i64;
    float f32;
    bool b;
    gguf_str s;
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, alignment);
    assert_int_equal(f->n_kv, 27 + alignment_key); // 14 scalars, 13 arrays, general.alignment if set
    assert_int_equal(gguf_get_str(f, "general.architecture", &s), 0);
    assert_true(gguf_str_eq(s, "llama"));

    // Scalars: each type read back exactly; integer getters widen any integer type that fits.
    assert_int_equal(gguf_get_u32(f, "test.u8", &u32), 0);
    assert_int_equal(u32, 200);
    assert_int_equal(gguf_get_i64(f, "test.i8", &i64), 0);
    assert_int_equal(i64, -100);
    assert_int_equal(gguf_get_u32(f, "test.u16", &u32), 0);
    assert_int_equal(u32, 60000);
    assert_int_equal(gguf_get_i64(f, "test.i16", &i64), 0);
    assert_int_equal(i64, -30000);
    assert_int_equal(gguf_get_u32(f, "test.u32", &u32), 0);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(gguf_get_i64(f, "test.i32", &i64), 0);
    assert_int_equal(i64, -2000000000);
    assert_int_equal(gguf_get_f32(f, "test.f32", &f32), 0);
    assert_true(f32 == 1.5f);
    assert_int_equal(gguf_get_bool(f, "test.bool", &b), 0);
    assert_true(b);
    assert_int_equal(gguf_get_str(f, "test.str", &s), 0);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.ptr, "h\xc3\xa9llo", 6);
    assert_int_equal(gguf_get_i64(f, "test.u64", &i64), 0);
    assert_true((uint64_t)i64 == SAMPLE_U64);
    assert_int_equal(gguf_get_i64(f, "test.i64", &i64), 0);
    assert_true(i64 == SAMPLE_I64);
    assert_int_equal(gguf_get_f32(f, "test.f64", &f32), 0);
    assert_true(f32 == 3.25f);
    assert_int_equal(gguf_get_str(f, "test.empty_str", &s), 0);
    assert_int_equal(s.len, 0);
    int64_t k = gguf_find_key(f, "test.f64");
    assert_true(k >= 0);
    assert_int_equal(f->kv[k].type, GGUF_TYPE_FLOAT64);

    // Arrays: element type, count and every value.
    static const struct {
        const char *key;
        gguf_type type;
        uint64_t n;
        double v[3];
    } arrs[] = {
        {"test.arr.u8", GGUF_TYPE_UINT8, 3, {1, 2, 255}},
        {"test.arr.i8", GGUF_TYPE_INT8, 3, {-1, 0, 127}},
        {"test.arr.u16", GGUF_TYPE_UINT16, 2, {0, 65535}},
        {"test.arr.i16", GGUF_TYPE_INT16, 2, {-32768, 32767}},
        {"test.arr.u32", GGUF_TYPE_UINT32, 3, {0, 4294967295.0, 7}},
        {"test.arr.i32", GGUF_TYPE_INT32, 2, {-2147483648.0, 2147483647}},
        {"test.arr.f32", GGUF_TYPE_FLOAT32, 3, {0.5, -2, (double)1e30f}},
        {"test.arr.bool", GGUF_TYPE_BOOL, 3, {1, 0, 1}},
        {"test.arr.u64", GGUF_TYPE_UINT64, 2, {(double)SAMPLE_U64, 0}},
        {"test.arr.i64", GGUF_TYPE_INT64, 2, {(double)SAMPLE_I64, 1}},
        {"test.arr.f64", GGUF_TYPE_FLOAT64, 2, {-0.125, 1e300}},
        {"test.arr.empty", GGUF_TYPE_INT32, 0, {0}},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(arrs); i++) {
        gguf_type at;
        uint64_t n;
        int64_t ki;
        assert_int_equal(gguf_get_arr(f, arrs[i].key, &at, &n, &ki), 0);
        assert_int_equal(at, arrs[i].type);
        assert_int_equal(n, arrs[i].n);
        for (uint64_t j = 0; j < n; j++) assert_true(gguf_arr_num(f, ki, j) == arrs[i].v[j]);
    }
    gguf_type at;
    uint64_t n;
    int64_t ki;
    assert_int_equal(gguf_get_arr(f, "test.arr.str", &at, &n, &ki), 0);
    assert_int_equal(at, GGUF_TYPE_STRING);
    assert_int_equal(n, 3);
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 0), "a"));
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 1), ""));
    assert_true(gguf_str_eq(gguf_arr_str(f, ki, 2), "ccc"));
    char *dup = gguf_str_dup(gguf_arr_str(f, ki, 2));
    assert_string_equal(dup, "ccc");
    free(dup);

    // Tensors: shape, type, size, data bytes, alignment of every data pointer.
    assert_int_equal(f->n_tensors, tensors ? SAMPLE_N_TENSORS : 0);
    assert_int_equal(f->data_offset % alignment, 0);
    for (size_t i = 0; tensors && i < SAMPLE_N_TENSORS; i++) {
        const sample_tensor *st = &SAMPLE_TENSORS[i];
        const gguf_tensor *t = gguf_find_tensor(f, st->name);
        assert_non_null(t);
        assert_ptr_equal(t, &f->tensors[i]); // file order is the writer's order
        assert_string_equal(t->cname, st->name);
        assert_int_equal(t->type, st->type);
        assert_int_equal(t->n_dims, st->n_dims);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], st->ne[d]);
        assert_int_equal(t->nbytes, sample_tensor_nbytes(st));
        assert_int_equal(t->offset % alignment, 0);
        const uint8_t *td = t->data; // in the file, or in gguf_own_tensor_data's copy
        assert_int_equal((f->tensor_store ? (size_t)(td - f->tensor_store) + f->data_offset : (size_t)(td - f->base)) % alignment, 0);
        for (size_t j = 0; j < t->nbytes; j++) assert_int_equal(((const uint8_t *)t->data)[j], sample_tensor_byte(i, j));
    }
    assert_null(gguf_find_tensor(f, "t.missing"));
}

static void test_round_trip_buffer(void **state) {
    (void)state;
    const uint32_t aligns[] = {0, 64, 1, 256};
    for (size_t a = 0; a < AS_ARRAY_LEN(aligns); a++) {
        for (int tensors = 0; tensors <= 1; tensors++) {
            uint8_t *buf;
            size_t n;
            build(aligns[a], tensors, &buf, &n);
            gguf_file *f = NULL;
            int rc = gguf_open_buffer(&f, buf, n, "sample.gguf");
            if (rc) print_error("%s\n", as_last_error());
            assert_int_equal(rc, 0);
            assert_false(f->mapped);
            check_sample(f, aligns[a] ? aligns[a] : GGUF_DEFAULT_ALIGNMENT, tensors, aligns[a] != 0);
            gguf_close(f);
            // v2 has the same little-endian layout as v3 (v3 only added big-endian files).
            put_u32(buf + 4, 2);
            assert_int_equal(gguf_open_buffer(&f, buf, n, "v2.gguf"), 0);
            assert_int_equal(f->version, 2);
            assert_int_equal(f->n_tensors, tensors ? SAMPLE_N_TENSORS : 0);
            gguf_close(f);
            free(buf);
        }
    }
}

static void test_round_trip_file(void **state) {
    (void)state;
    char *dir = as_test_tmpdir();
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/sample.gguf", dir);
    gguf_writer *w = gguf_writer_init();
    sample_fill(w, true);
    assert_int_equal(gguf_writer_save(w, path), 0);
    uint8_t *buf;
    size_t n;
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &n), 0);
    gguf_writer_free(w);

    // The saved file is byte-identical to the in-memory serialisation.
    char *disk;
    size_t disk_n;
    assert_int_equal(as_read_file(path, &disk, &disk_n), 0);
    assert_int_equal(disk_n, n);
    assert_memory_equal(disk, buf, n);
    free(disk);
    free(buf);

    gguf_file *f = NULL;
    assert_int_equal(gguf_open(&f, path), 0);
    assert_true(f->mapped);
    assert_string_equal(f->path, path);
    check_sample(f, GGUF_DEFAULT_ALIGNMENT, true, false);
    // The tensor data copied out of the mapping: the same tensors, bytes and offsets.
    assert_null(f->tensor_store);
    gguf_own_tensor_data(f);
    assert_non_null(f->tensor_store);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        assert_true((const uint8_t *)f->tensors[i].data >= f->tensor_store &&
                    (const uint8_t *)f->tensors[i].data + f->tensors[i].nbytes <= f->tensor_store + (f->size - f->data_offset));
    check_sample(f, GGUF_DEFAULT_ALIGNMENT, true, false);
    gguf_close(f);

    // Saving into a missing folder fails with the path in the message.
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.gguf", dir);
    w = gguf_writer_init();
    assert_int_equal(gguf_writer_save(w, bad), -1);
    gguf_writer_free(w);
    assert_error_line(bad);

    // File-level failures of gguf_open.
    f = (gguf_file *)dir;
    assert_int_equal(gguf_open(&f, bad), -1);
    assert_null(f);
    assert_error_line(bad);
    assert_non_null(strstr(as_last_error(), "cannot open"));
    assert_int_equal(gguf_open(&f, dir), -1);
    assert_error_line(dir);
    assert_non_null(strstr(as_last_error(), "not a regular file"));
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(gguf_open(&f, path), -1);
    assert_error_line(path);
    assert_non_null(strstr(as_last_error(), "empty"));

    unlink(path);
    snprintf(path, sizeof path, "%s/sample.gguf", dir);
    unlink(path);
    rmdir(dir);
}

static void test_writer_replace_key_and_empty(void **state) {
    (void)state;
    gguf_writer *w = gguf_writer_init();
    gguf_write_u32(w, "a", 1);
    gguf_write_str(w, "b", "x");
    gguf_write_str(w, "a", "now a string"); // replaces in place, keeps position
    gguf_writer_set_alignment(w, 16);
    gguf_writer_set_alignment(w, 128);
    uint8_t *buf;
    size_t n;
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &n), 0);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, buf, n, "w.gguf"), 0);
    assert_int_equal(f->n_kv, 3);
    assert_true(gguf_str_eq(f->kv[0].key, "a"));
    assert_int_equal(f->kv[0].type, GGUF_TYPE_STRING);
    assert_int_equal(f->alignment, 128);
    gguf_close(f);
    free(buf);

    // An empty writer gives the 24-byte header padded to 32, which reads back.
    w = gguf_writer_init();
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &n), 0);
    gguf_writer_free(w);
    assert_int_equal(n, 32);
    assert_int_equal(gguf_open_buffer(&f, buf, n, "e.gguf"), 0);
    assert_int_equal(f->n_kv, 0);
    assert_int_equal(f->n_tensors, 0);
    gguf_close(f);
    free(buf);
}

static void test_getters(void **state) {
    (void)state;
    uint8_t *buf;
    size_t n;
    build(0, false, &buf, &n);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, buf, n, "g.gguf"), 0);
    uint32_t u32 = 5;
    int64_t i64;
    float x = 2;
    bool b = false;
    gguf_str s;

    assert_int_equal(gguf_get_u32(f, "test.str", &u32), -1);
    assert_error_line("g.gguf");
    assert_non_null(strstr(as_last_error(), "key test.str: expected uint32, found string"));
    assert_int_equal(gguf_get_u32(f, "test.u64", &u32), -1); // 2^40+7 does not fit
    assert_non_null(strstr(as_last_error(), "does not fit in uint32"));
    assert_int_equal(gguf_get_u32(f, "test.i8", &u32), -1); // negative
    assert_non_null(strstr(as_last_error(), "-100 does not fit"));
    assert_int_equal(u32, 5);
    assert_int_equal(gguf_get_u32(f, "no.such.key", &u32), -1);
    assert_error_line("g.gguf");
    assert_non_null(strstr(as_last_error(), "key no.such.key not found"));
    assert_int_equal(gguf_get_i64(f, "test.f32", &i64), -1);
    assert_non_null(strstr(as_last_error(), "expected integer, found float32"));
    assert_int_equal(gguf_get_f32(f, "test.arr.f32", &x), -1);
    assert_non_null(strstr(as_last_error(), "found array of float32"));
    assert_int_equal(gguf_get_f32(f, "test.u16", &x), 0);
    assert_true(x == 60000.0f);
    assert_int_equal(gguf_get_bool(f, "test.u8", &b), -1);
    assert_non_null(strstr(as_last_error(), "expected bool, found uint8"));
    assert_int_equal(gguf_get_str(f, "test.bool", &s), -1);
    assert_non_null(strstr(as_last_error(), "expected string, found bool"));
    assert_int_equal(gguf_get_arr(f, "test.u8", NULL, NULL, NULL), -1);
    assert_non_null(strstr(as_last_error(), "expected array, found uint8"));

    // Optional getters: absent leaves the default, present-but-wrong is still an error.
    u32 = 77, x = 0.25f, b = true;
    assert_int_equal(gguf_opt_u32(f, "absent", &u32), 0);
    assert_int_equal(gguf_opt_f32(f, "absent", &x), 0);
    assert_int_equal(gguf_opt_bool(f, "absent", &b), 0);
    assert_true(u32 == 77 && x == 0.25f && b);
    assert_int_equal(gguf_opt_u32(f, "test.u16", &u32), 0);
    assert_int_equal(u32, 60000);
    assert_int_equal(gguf_opt_bool(f, "test.str", &b), -1);
    assert_int_equal(gguf_find_key(f, "test"), -1); // prefix of a key is not the key
    gguf_close(f);
    free(buf);
}

static void test_type_traits(void **state) {
    (void)state;
    static const struct {
        ggml_type t;
        const char *name;
        int64_t elems;
        size_t bytes;
    } want[] = {
        {GGML_TYPE_F32, "F32", 1, 4},      {GGML_TYPE_F16, "F16", 1, 2},      {GGML_TYPE_BF16, "BF16", 1, 2},
        {GGML_TYPE_Q4_0, "Q4_0", 32, 18},  {GGML_TYPE_Q4_1, "Q4_1", 32, 20},  {GGML_TYPE_Q8_0, "Q8_0", 32, 34},
        {GGML_TYPE_Q4_K, "Q4_K", 256, 144}, {GGML_TYPE_Q6_K, "Q6_K", 256, 210},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(want); i++) {
        assert_true(ggml_type_supported(want[i].t));
        assert_string_equal(ggml_type_name(want[i].t), want[i].name);
        assert_int_equal(ggml_type_block_elems(want[i].t), want[i].elems);
        assert_int_equal(ggml_type_block_bytes(want[i].t), want[i].bytes);
    }
    // Names of types alphaspin does not read, as ggml names them.
    static const struct { int t; const char *name; } names[] = {
        {6, "Q5_0"}, {7, "Q5_1"}, {9, "Q8_1"}, {10, "Q2_K"}, {11, "Q3_K"}, {13, "Q5_K"}, {15, "Q8_K"},
        {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"},
        {22, "IQ2_S"}, {23, "IQ4_XS"}, {24, "I8"}, {25, "I16"}, {26, "I32"}, {27, "I64"}, {28, "F64"},
        {29, "IQ1_M"}, {34, "TQ1_0"}, {35, "TQ2_0"}, {39, "MXFP4"}, {4, "type 4"}, {31, "type 31"}, {40, "type 40"},
        {12345, "type 12345"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(names); i++) {
        assert_string_equal(ggml_type_name((ggml_type)names[i].t), names[i].name);
        assert_false(ggml_type_supported((ggml_type)names[i].t));
        assert_int_equal(ggml_type_block_bytes((ggml_type)names[i].t), 0);
    }
    assert_string_equal(gguf_type_name(GGUF_TYPE_FLOAT64), "float64");
    assert_int_equal(gguf_type_size(GGUF_TYPE_INT16), 2);
    assert_int_equal(gguf_type_size(GGUF_TYPE_FLOAT64), 8);
    assert_int_equal(gguf_type_size(GGUF_TYPE_BOOL), 1);
    assert_int_equal(gguf_type_size(GGUF_TYPE_STRING), 0);
    assert_int_equal(gguf_type_size((gguf_type)99), 0);
    assert_string_equal(gguf_type_name((gguf_type)99), "invalid");
}

// ---- corruption suite ----

// Every proper prefix fails cleanly, except those that only drop the padding
// after the last tensor's data, which (as in llama.cpp) is not required.
static void test_every_truncation(void **state) {
    (void)state;
    for (int tensors = 0; tensors <= 1; tensors++) {
        uint8_t *buf;
        size_t n;
        build(0, tensors, &buf, &n);
        gguf_file *f;
        assert_int_equal(gguf_open_buffer(&f, buf, n, NAME), 0);
        size_t need = 0; // bytes a valid file needs: end of the last KV/tensor info, or of the last tensor's data
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            size_t end = (size_t)((const uint8_t *)f->tensors[i].data - f->base) + f->tensors[i].nbytes;
            need = AS_MAX(need, end);
        }
        if (!tensors) {
            const gguf_kv *last = &f->kv[f->n_kv - 1]; // the empty int32 array: its count ends the header
            need = (size_t)((const uint8_t *)last->data - f->base);
        }
        gguf_close(f);
        assert_true(need > 0 && need <= n);
        for (size_t len = 0; len < n; len++) {
            if (len < need) {
                expect_fail(buf, len, len < 4 ? "not a GGUF file" : "");
                const char *e = as_last_error();
                // Cut inside the header: "truncated" or a length that now exceeds the file.
                assert_true(len < 4 || strstr(e, "truncated") || strstr(e, "exceeds") || strstr(e, "impossible") ||
                            strstr(e, "cannot fit") || strstr(e, "beyond the end"));
            } else {
                uint8_t *copy = malloc(len);
                memcpy(copy, buf, len);
                assert_int_equal(gguf_open_buffer(&f, copy, len, NAME), 0);
                gguf_close(f);
                free(copy);
            }
        }
        free(buf);
    }
}


// Offset of the bytes of string `s` stored as { u64 len | bytes } (unique in the sample).
static size_t str_at(const uint8_t *buf, size_t n, const char *s) {
    size_t len = strlen(s);
    for (size_t i = 8; i + len <= n; i++) {
        uint64_t l;
        memcpy(&l, buf + i - 8, 8);
        if (l == len && memcmp(buf + i, s, len) == 0) return i;
    }
    fail_msg("string '%s' not in the sample", s);
    return 0;
}

// Field positions of a KV's value (after the u32 type) and of a tensor info.
static size_t kv_type_at(const uint8_t *buf, size_t n, const char *key) { return str_at(buf, n, key) + strlen(key); }
static size_t kv_val_at(const uint8_t *buf, size_t n, const char *key) { return kv_type_at(buf, n, key) + 4; }
static size_t tensor_ndims_at(const uint8_t *buf, size_t n, const char *name) { return str_at(buf, n, name) + strlen(name); }
static size_t tensor_ne_at(const uint8_t *buf, size_t n, const char *name, int d) {
    return tensor_ndims_at(buf, n, name) + 4 + 8 * (size_t)d;
}
static size_t tensor_type_at(const uint8_t *buf, size_t n, const char *name) {
    uint32_t nd;
    memcpy(&nd, buf + tensor_ndims_at(buf, n, name), 4);
    return tensor_ne_at(buf, n, name, (int)nd);
}
static size_t tensor_offset_at(const uint8_t *buf, size_t n, const char *name) { return tensor_type_at(buf, n, name) + 4; }

typedef void (*patch_fn)(uint8_t *buf, size_t n);

static void corrupt(uint32_t alignment, patch_fn patch, const char *substr) {
    uint8_t *buf;
    size_t n;
    build(alignment, true, &buf, &n);
    patch(buf, n);
    expect_fail(buf, n, substr);
    free(buf);
}

static void p_magic(uint8_t *b, size_t n) { (void)n; b[0] = 'X'; }
static void p_version1(uint8_t *b, size_t n) { (void)n; put_u32(b + 4, 1); }
static void p_version4(uint8_t *b, size_t n) { (void)n; put_u32(b + 4, 4); }
static void p_big_endian(uint8_t *b, size_t n) { (void)n; b[4] = 0, b[5] = 0, b[6] = 0, b[7] = 3; }
static void p_huge_n_tensors(uint8_t *b, size_t n) { (void)n; put_u64(b + 8, (uint64_t)1 << 60); }
static void p_huge_n_kv(uint8_t *b, size_t n) { (void)n; put_u64(b + 16, UINT64_MAX); }
static void p_huge_str(uint8_t *b, size_t n) { put_u64(b + kv_val_at(b, n, "test.str"), (uint64_t)1 << 40); }
static void p_str_overflow(uint8_t *b, size_t n) { put_u64(b + kv_val_at(b, n, "test.str"), UINT64_MAX); }
static void p_key_len_overflow(uint8_t *b, size_t n) { put_u64(b + str_at(b, n, "test.u8") - 8, UINT64_MAX - 3); }
static void p_dup_key(uint8_t *b, size_t n) { memcpy(b + str_at(b, n, "test.i32"), "test.u32", 8); }
static void p_dup_tensor(uint8_t *b, size_t n) { memcpy(b + str_at(b, n, "t.q4_0"), "t.q8_0", 6); }
static void p_type_q5k(uint8_t *b, size_t n) { put_u32(b + tensor_type_at(b, n, "t.f32"), GGML_TYPE_Q5_K); }
static void p_type_iq2(uint8_t *b, size_t n) { put_u32(b + tensor_type_at(b, n, "t.q4_k"), 16); }
static void p_type_4(uint8_t *b, size_t n) { put_u32(b + tensor_type_at(b, n, "t.f16"), 4); }
static void p_type_huge(uint8_t *b, size_t n) { put_u32(b + tensor_type_at(b, n, "t.f16"), 0xfffffff0u); }
static void p_align_48(uint8_t *b, size_t n) { put_u32(b + kv_val_at(b, n, "general.alignment"), 48); }
static void p_align_0(uint8_t *b, size_t n) { put_u32(b + kv_val_at(b, n, "general.alignment"), 0); }
static void p_align_i32(uint8_t *b, size_t n) { put_u32(b + kv_type_at(b, n, "general.alignment"), GGUF_TYPE_INT32); }
static void p_misaligned(uint8_t *b, size_t n) {
    size_t at = tensor_offset_at(b, n, "t.q8_0");
    uint64_t off;
    memcpy(&off, b + at, 8);
    put_u64(b + at, off + 32); // aligned to 32, not to the file's 64
}
static void p_beyond_end(uint8_t *b, size_t n) { put_u64(b + tensor_offset_at(b, n, "t.q6_k"), (uint64_t)1 << 20); }
static void p_offset_overflow(uint8_t *b, size_t n) { put_u64(b + tensor_offset_at(b, n, "t.q6_k"), UINT64_MAX - 31); }
static void p_data_past_end(uint8_t *b, size_t n) {
    // The last tensor starting inside the file but running past its end.
    size_t at = tensor_offset_at(b, n, "t.q6_k");
    uint64_t off;
    memcpy(&off, b + at, 8);
    put_u64(b + at, off + 64);
}
static void p_overlap(uint8_t *b, size_t n) {
    uint64_t off;
    memcpy(&off, b + tensor_offset_at(b, n, "t.f32"), 8);
    put_u64(b + tensor_offset_at(b, n, "t.f16"), off + 32 * 0); // same start as t.f32
}
static void p_overlap_partial(uint8_t *b, size_t n) {
    // t.q8_0 is 136 bytes; t.q4_0 starts 32 bytes into it.
    uint64_t off;
    memcpy(&off, b + tensor_offset_at(b, n, "t.q8_0"), 8);
    put_u64(b + tensor_offset_at(b, n, "t.q4_0"), off + 32);
}
static void p_ndims5(uint8_t *b, size_t n) { put_u32(b + tensor_ndims_at(b, n, "t.f32"), 5); }
static void p_ne0(uint8_t *b, size_t n) { put_u64(b + tensor_ne_at(b, n, "t.f32", 1), 0); }
static void p_ne_negative(uint8_t *b, size_t n) { put_u64(b + tensor_ne_at(b, n, "t.f32", 0), (uint64_t)-4); }
static void p_ne_block(uint8_t *b, size_t n) { put_u64(b + tensor_ne_at(b, n, "t.q8_0", 0), 48); }
static void p_nel_overflow(uint8_t *b, size_t n) {
    put_u64(b + tensor_ne_at(b, n, "t.q6_k", 1), (uint64_t)1 << 40);
    put_u64(b + tensor_ne_at(b, n, "t.q6_k", 2), (uint64_t)1 << 40);
}
static void p_nbytes_overflow(uint8_t *b, size_t n) {
    put_u64(b + tensor_ne_at(b, n, "t.f32", 0), (uint64_t)1 << 62); // 2^62 elements fit int64, 2^64 bytes do not
    put_u64(b + tensor_ne_at(b, n, "t.f32", 1), 1);
}
static void p_name_nul(uint8_t *b, size_t n) { b[str_at(b, n, "t.bf16") + 2] = 0; }
static void p_kv_type(uint8_t *b, size_t n) { put_u32(b + kv_type_at(b, n, "test.u8"), 13); }
static void p_arr_of_arr(uint8_t *b, size_t n) { put_u32(b + kv_val_at(b, n, "test.arr.u8"), GGUF_TYPE_ARRAY); }
static void p_arr_type(uint8_t *b, size_t n) { put_u32(b + kv_val_at(b, n, "test.arr.u8"), 77); }
static void p_arr_count(uint8_t *b, size_t n) { put_u64(b + kv_val_at(b, n, "test.arr.u32") + 4, (uint64_t)1 << 62); }
static void p_arr_count_ovf(uint8_t *b, size_t n) { put_u64(b + kv_val_at(b, n, "test.arr.u64") + 4, (uint64_t)1 << 61); }
static void p_str_arr_count(uint8_t *b, size_t n) { put_u64(b + kv_val_at(b, n, "test.arr.str") + 4, (uint64_t)1 << 60); }
static void p_str_arr_elem(uint8_t *b, size_t n) { put_u64(b + str_at(b, n, "ccc") - 8, 1000000); }

static void test_corruptions(void **state) {
    (void)state;
    corrupt(0, p_magic, "not a GGUF file (magic 58 47 55 46");
    corrupt(0, p_version1, "GGUF version 1 is not supported");
    corrupt(0, p_version4, "unsupported GGUF version 4");
    corrupt(0, p_big_endian, "big-endian GGUF file");
    corrupt(0, p_huge_n_tensors, "n_tensors 1152921504606846976 is impossible");
    corrupt(0, p_huge_n_kv, "n_kv 18446744073709551615 is impossible");
    corrupt(0, p_huge_str, "key 'test.str': string length 1099511627776");
    corrupt(0, p_str_overflow, "key 'test.str': string length 18446744073709551615");
    corrupt(0, p_key_len_overflow, "string length 18446744073709551612");
    corrupt(0, p_dup_key, "duplicate key 'test.u32'");
    corrupt(0, p_dup_tensor, "duplicate tensor name 't.q8_0'");
    corrupt(0, p_type_q5k, "tensor 't.f32' has type Q5_K, which alphaspin does not read (supported: F32, F16, BF16, Q8_0, "
                           "Q4_0, Q4_1, Q4_K, Q6_K)");
    corrupt(0, p_type_iq2, "tensor 't.q4_k' has type IQ2_XXS, which alphaspin does not read");
    corrupt(0, p_type_4, "tensor 't.f16' has unknown type 4");
    corrupt(0, p_type_huge, "has unknown type 4294967280");
    corrupt(64, p_align_48, "general.alignment must be a power of two, found 48");
    corrupt(64, p_align_0, "general.alignment must be a power of two, found 0");
    corrupt(64, p_align_i32, "general.alignment must be of type uint32, found int32");
    corrupt(64, p_misaligned, "tensor 't.q8_0' offset");
    corrupt(64, p_misaligned, "is not a multiple of the alignment 64");
    corrupt(0, p_beyond_end, "tensor 't.q6_k' data (offset 1048576");
    corrupt(0, p_beyond_end, "lies beyond the end of the file");
    corrupt(0, p_offset_overflow, "lies beyond the end of the file");
    corrupt(0, p_data_past_end, "tensor 't.q6_k' data");
    corrupt(0, p_overlap, "tensors 't.f32' and 't.f16' overlap");
    corrupt(0, p_overlap_partial, "tensors 't.q8_0' and 't.q4_0' overlap");
    corrupt(0, p_ndims5, "tensor 't.f32' has 5 dimensions (at most 4)");
    corrupt(0, p_ne0, "tensor 't.f32': dimension 1 is 0 (each must be >= 1)");
    corrupt(0, p_ne_negative, "tensor 't.f32': dimension 0 is -4");
    corrupt(0, p_ne_block, "tensor 't.q8_0': row length 48 is not a multiple of the Q8_0 block size 32");
    corrupt(0, p_nel_overflow, "tensor 't.q6_k': element count of shape [256, 1099511627776, 1099511627776, 1] overflows int64");
    corrupt(0, p_nbytes_overflow, "tensor 't.f32': byte size overflows size_t");
    corrupt(0, p_name_nul, "name contains a NUL byte");
    corrupt(0, p_kv_type, "key 'test.u8' has value type 13, which is not a GGUF value type");
    corrupt(0, p_arr_of_arr, "key 'test.arr.u8': arrays of arrays are not supported");
    corrupt(0, p_arr_type, "key 'test.arr.u8': array element type 77");
    corrupt(0, p_arr_count, "key 'test.arr.u32': array of 4611686018427387904 uint32 values cannot fit");
    corrupt(0, p_arr_count_ovf, "key 'test.arr.u64': array of 2305843009213693952 uint64 values cannot fit");
    corrupt(0, p_str_arr_count, "key 'test.arr.str': array of 1152921504606846976 strings cannot fit");
    corrupt(0, p_str_arr_elem, "key 'test.arr.str': string length 1000000");
}

// A non-printable key appears escaped, keeping the error on one line.
static void test_error_escapes_names(void **state) {
    (void)state;
    gguf_writer *w = gguf_writer_init();
    gguf_write_u32(w, "bad\nkey", 1);
    gguf_write_u32(w, "bad\nkez", 2);
    uint8_t *buf;
    size_t n;
    assert_int_equal(gguf_writer_to_buffer(w, &buf, &n), 0);
    gguf_writer_free(w);
    memcpy(buf + str_at(buf, n, "bad\nkez"), "bad\nkey", 7);
    expect_fail(buf, n, "duplicate key 'bad\\x0akey'");
    free(buf);
}

// Every KV value and every tensor byte of an opened file is readable (ASan checks the bounds).
static uint64_t touch_all(const gguf_file *f) {
    uint64_t h = gguf_walk_values(f);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        assert_true((const uint8_t *)t->data >= f->base && (const uint8_t *)t->data + t->nbytes <= f->base + f->size);
        for (size_t j = 0; j < t->nbytes; j++) h += ((const uint8_t *)t->data)[j];
        assert_ptr_equal(gguf_find_tensor(f, t->cname), t);
    }
    return h;
}

// Random byte flips never crash: each open either fails with a proper error
// line or yields a file whose every value lies inside the buffer.
static void test_random_flips(void **state) {
    (void)state;
    uint8_t *buf;
    size_t n;
    build(64, true, &buf, &n);
    gguf_file *f;
    assert_int_equal(gguf_open_buffer(&f, buf, n, NAME), 0);
    size_t header = f->data_offset; // flips there exercise the parser; flips in data never fail
    gguf_close(f);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int n_fail = 0, n_ok = 0;
    uint8_t *copy = malloc(n);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(copy, buf, n);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; // xorshift64
            size_t at = (size_t)(rng % header);
            // Alternate between single-bit flips and whole random bytes.
            copy[at] = (rng >> 40) & 1 ? (uint8_t)(copy[at] ^ (1u << ((rng >> 32) & 7))) : (uint8_t)(rng >> 48);
        }
        if (gguf_open_buffer(&f, copy, n, NAME) == 0) {
            touch_all(f);
            gguf_close(f);
            n_ok++;
        } else {
            assert_error_line(NAME);
            n_fail++;
        }
    }
    // Both outcomes occur (a flip in a string's text is harmless, one in a length is not).
    assert_true(n_fail > 1000 && n_ok > 100);
    free(copy);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_buffer),
        cmocka_unit_test(test_round_trip_file),
        cmocka_unit_test(test_writer_replace_key_and_empty),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_type_traits),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_corruptions),
        cmocka_unit_test(test_error_escapes_names),
        cmocka_unit_test(test_random_flips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
