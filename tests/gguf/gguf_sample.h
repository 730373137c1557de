// A small GGUF holding every metadata value type, every array element type and
// one tensor of each supported tensor type.  Shared by the round-trip test, the
// fuzz seed generator and (through the seed generator's output)
// tools/check_gguf_writer.py, which reads it with gguf-py and checks the same
// values listed here.
#ifndef AS_GGUF_SAMPLE_H
#define AS_GGUF_SAMPLE_H

#include <string.h>

#include "gguf/gguf.h"

#define SAMPLE_U64 ((uint64_t)1 << 40 | 7)
#define SAMPLE_I64 (-((int64_t)1 << 40) - 7)

typedef struct sample_tensor {
    const char *name;
    ggml_type type;
    uint32_t n_dims;
    int64_t ne[4];
} sample_tensor;

static const sample_tensor SAMPLE_TENSORS[] = {
    {"t.f32", GGML_TYPE_F32, 2, {4, 3, 1, 1}},      {"t.f16", GGML_TYPE_F16, 2, {8, 2, 1, 1}},
    {"t.bf16", GGML_TYPE_BF16, 1, {5, 1, 1, 1}},    {"t.q8_0", GGML_TYPE_Q8_0, 2, {64, 2, 1, 1}},
    {"t.q4_0", GGML_TYPE_Q4_0, 2, {32, 3, 1, 1}},   {"t.q4_1", GGML_TYPE_Q4_1, 3, {32, 1, 2, 1}},
    {"t.q4_k", GGML_TYPE_Q4_K, 2, {256, 1, 1, 1}},  {"t.q6_k", GGML_TYPE_Q6_K, 4, {256, 2, 1, 1}},
};
#define SAMPLE_N_TENSORS (sizeof SAMPLE_TENSORS / sizeof SAMPLE_TENSORS[0])

static inline size_t sample_tensor_nbytes(const sample_tensor *t) {
    size_t n = (size_t)(t->ne[0] / ggml_type_block_elems(t->type)) * ggml_type_block_bytes(t->type);
    return n * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

// Tensor i's data: byte j is (31 i + 7 j) mod 256, so a misplaced range shows.
static inline uint8_t sample_tensor_byte(size_t i, size_t j) { return (uint8_t)(31 * i + 7 * j); }

// Every value type as a scalar and as an array, plus tensors of all 8 types.
static inline void sample_fill(gguf_writer *w, bool with_tensors) {
    gguf_write_str(w, "general.architecture", "llama");
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = SAMPLE_I64;
    double f64 = 3.25;
    gguf_write_val(w, "test.u8", GGUF_TYPE_UINT8, &u8);
    gguf_write_val(w, "test.i8", GGUF_TYPE_INT8, &i8);
    gguf_write_val(w, "test.u16", GGUF_TYPE_UINT16, &u16);
    gguf_write_val(w, "test.i16", GGUF_TYPE_INT16, &i16);
    gguf_write_u32(w, "test.u32", 4000000000u);
    gguf_write_i32(w, "test.i32", -2000000000);
    gguf_write_f32(w, "test.f32", 1.5f);
    gguf_write_bool(w, "test.bool", true);
    gguf_write_str(w, "test.str", "h\xc3\xa9llo"); // "héllo": UTF-8 passes through untouched
    gguf_write_u64(w, "test.u64", SAMPLE_U64);
    gguf_write_val(w, "test.i64", GGUF_TYPE_INT64, &i64);
    gguf_write_val(w, "test.f64", GGUF_TYPE_FLOAT64, &f64);
    gguf_write_str(w, "test.empty_str", "");

    const uint8_t a_u8[] = {1, 2, 255};
    const int8_t a_i8[] = {-1, 0, 127};
    const uint16_t a_u16[] = {0, 65535};
    const int16_t a_i16[] = {-32768, 32767};
    const uint32_t a_u32[] = {0, 4294967295u, 7};
    const int32_t a_i32[] = {-2147483647 - 1, 2147483647};
    const float a_f32[] = {0.5f, -2.0f, 1e30f};
    const uint8_t a_bool[] = {1, 0, 1};
    const uint64_t a_u64[] = {SAMPLE_U64, 0};
    const int64_t a_i64[] = {SAMPLE_I64, 1};
    const double a_f64[] = {-0.125, 1e300};
    const char *const a_str[] = {"a", "", "ccc"};
    gguf_write_arr(w, "test.arr.u8", GGUF_TYPE_UINT8, a_u8, 3);
    gguf_write_arr(w, "test.arr.i8", GGUF_TYPE_INT8, a_i8, 3);
    gguf_write_arr(w, "test.arr.u16", GGUF_TYPE_UINT16, a_u16, 2);
    gguf_write_arr(w, "test.arr.i16", GGUF_TYPE_INT16, a_i16, 2);
    gguf_write_arr(w, "test.arr.u32", GGUF_TYPE_UINT32, a_u32, 3);
    gguf_write_arr(w, "test.arr.i32", GGUF_TYPE_INT32, a_i32, 2);
    gguf_write_arr(w, "test.arr.f32", GGUF_TYPE_FLOAT32, a_f32, 3);
    gguf_write_arr(w, "test.arr.bool", GGUF_TYPE_BOOL, a_bool, 3);
    gguf_write_arr(w, "test.arr.u64", GGUF_TYPE_UINT64, a_u64, 2);
    gguf_write_arr(w, "test.arr.i64", GGUF_TYPE_INT64, a_i64, 2);
    gguf_write_arr(w, "test.arr.f64", GGUF_TYPE_FLOAT64, a_f64, 2);
    gguf_write_arr_str(w, "test.arr.str", a_str, 3);
    gguf_write_arr(w, "test.arr.empty", GGUF_TYPE_INT32, NULL, 0);

    if (!with_tensors) return;
    for (size_t i = 0; i < SAMPLE_N_TENSORS; i++) {
        const sample_tensor *t = &SAMPLE_TENSORS[i];
        size_t nb = sample_tensor_nbytes(t);
        uint8_t *d = malloc(nb);
        for (size_t j = 0; j < nb; j++) d[j] = sample_tensor_byte(i, j);
        gguf_write_tensor(w, t->name, t->type, t->n_dims, t->ne, d, nb);
        free(d);
    }
}

#endif
