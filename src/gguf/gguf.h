// GGUF (v2, v3) reader and writer.
//
// The reader maps the file and validates it as strictly as ggml's own reader:
// every length, count and offset is checked against the file size and for
// overflow; duplicate keys and tensor names, bad alignment, unknown value or
// tensor types and impossible dimensions are errors naming the file.
// Nothing returned points outside the mapping; strings are NOT NUL-terminated
// inside the file, so they come as (ptr, len) pairs.
#ifndef AS_GGUF_H
#define AS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

// Tensor element types, numbered as ggml numbers them.  Only the ones listed
// in tensor/quant.h are supported for tensors; others are rejected by name.
typedef enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40
} ggml_type;

typedef struct gguf_str {
    const char *ptr; // not NUL-terminated
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    gguf_type type;      // value type
    gguf_type arr_type;  // element type when type == GGUF_TYPE_ARRAY
    uint64_t n;          // number of elements (1 for scalars)
    const void *data;    // scalars/arrays of numbers: little-endian values in the file
    gguf_str str;        // type == STRING
    uint64_t *str_offs;  // ARRAY of STRING: offset (from file start) of each element's length field
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    char *cname;            // NUL-terminated copy of name
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; // ne[0] is the contiguous (row) dimension; unused dims are 1
    ggml_type type;
    uint64_t offset;        // relative to the data section
    size_t nbytes;
    const void *data;       // inside the mapping
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    const uint8_t *base; // whole file (mmap or caller's buffer)
    size_t size;
    bool mapped;
    bool owns_base;      // base is a heap buffer that gguf_close frees (gguf_open_owned)
    uint8_t *tensor_store; // gguf_own_tensor_data's copy of the tensor data (freed by gguf_close)
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    size_t alignment;
    size_t data_offset;
    const gguf_tensor **tensors_by_name; // sorted by name, for gguf_find_tensor (private)
} gguf_file;

// Open and validate; on failure returns -1 with as_error() naming `path`.
int gguf_open(gguf_file **out, const char *path);
// Same, on a caller-owned buffer (which must outlive the gguf_file); `name` is used in errors.
int gguf_open_buffer(gguf_file **out, const void *buf, size_t size, const char *name);
// Same, taking ownership of a malloc'ed buffer (freed by gguf_close, or here on failure).
int gguf_open_owned(gguf_file **out, void *buf, size_t size, const char *name);
void gguf_close(gguf_file *f);
// For a mapped file, copies the tensor data into memory of the process's own
// (on huge pages where Linux gives them: as_aligned_alloc) and points every
// tensor's data at the copy, dropping the mapping's pages as it goes; else
// nothing.  Kernels that stream the weights (one-sequence decoding) run
// faster on it: this Linux gives file mappings no huge pages.
void gguf_own_tensor_data(gguf_file *f);

// Metadata lookup (-1 if absent).
int64_t gguf_find_key(const gguf_file *f, const char *key);
// Typed getters: return 0 and set *out, or -1 + as_error ("<file>: key K: expected T, found U")
// if the key is absent or of an incompatible type.  Integer getters accept any
// integer type whose value fits.
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
// Optional variants: return 0 and leave *out untouched if the key is absent.
int gguf_opt_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_opt_f32(const gguf_file *f, const char *key, float *out);
int gguf_opt_bool(const gguf_file *f, const char *key, bool *out);
// Arrays: element count and type; element access (i < n, checked by caller).
int gguf_get_arr(const gguf_file *f, const char *key, gguf_type *arr_type, uint64_t *n, int64_t *kv_index);
gguf_str gguf_arr_str(const gguf_file *f, int64_t kv_index, uint64_t i);
// Numeric array element converted to double (any numeric arr_type).
double gguf_arr_num(const gguf_file *f, int64_t kv_index, uint64_t i);
// Copies a gguf_str into a fresh NUL-terminated string.
char *gguf_str_dup(gguf_str s);
bool gguf_str_eq(gguf_str s, const char *c);

// Type traits of the tensor formats alphaspin reads (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q4_K, Q6_K): supported set, elements per block (1 for float types) and
// bytes per block (0 for unsupported types).
bool ggml_type_supported(ggml_type t);
int64_t ggml_type_block_elems(ggml_type t);
size_t ggml_type_block_bytes(ggml_type t);

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
const char *gguf_type_name(gguf_type t);
// Bytes of one value of a fixed-size metadata type; 0 for string, array and invalid types.
size_t gguf_type_size(gguf_type t);
const char *ggml_type_name(ggml_type t); // "Q4_1", or "type 17" style for unknown

// ---- writer (tests' synthetic models, exports) ----
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_init(void);
void gguf_writer_free(gguf_writer *w);
void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment); // also writes general.alignment
void gguf_write_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_write_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_write_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_write_f32(gguf_writer *w, const char *key, float v);
void gguf_write_bool(gguf_writer *w, const char *key, bool v);
void gguf_write_str(gguf_writer *w, const char *key, const char *v);
// Generic scalar/array of numbers: `data` holds n values of arr_type.
void gguf_write_val(gguf_writer *w, const char *key, gguf_type type, const void *data);
void gguf_write_arr(gguf_writer *w, const char *key, gguf_type arr_type, const void *data, uint64_t n);
void gguf_write_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
// Tensor: ne[0] is the row length; `data` is copied (nbytes from quant_row_size()).
void gguf_write_tensor(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes);
// Atomic write to path; -1 + as_error on failure.
int gguf_writer_save(gguf_writer *w, const char *path);
// Serialise to a heap buffer (for fuzz seeds and in-memory tests).
int gguf_writer_to_buffer(gguf_writer *w, uint8_t **out, size_t *out_len);

#endif
