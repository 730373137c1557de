// The safetensors format (Hugging Face): an 8-byte little-endian header
// length n, n bytes of JSON {"name": {"dtype", "shape", "data_offsets":
// [begin, end]}, ..., "__metadata__": {str: str}}, then the tensor bytes
// (offsets relative to the end of the header).  Reader and writer for the
// model folders (src/model/model_hf.c) and the checkpoints of src/train.
#ifndef AS_SAFETENSORS_H
#define AS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

// The float types hold weights; the others a trainer's own state (train/checkpoint.h).
typedef enum st_dtype { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2, ST_F64 = 3, ST_I32 = 4, ST_I64 = 5 } st_dtype;
// Bytes per element.
size_t st_dtype_size(st_dtype t);

#define ST_MAX_DIMS 4

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    int64_t n_elems;
    const void *data;          // inside the file buffer
} st_tensor;

typedef struct st_file {
    char *path;
    uint8_t *buf;              // the whole file
    size_t size;
    st_tensor *tensors;
    int64_t n_tensors;
    char **meta_keys, **meta_values; // the string pairs of "__metadata__"
    int n_meta;
    const uint8_t *data;       // the data section (after the header)
    size_t data_size;
} st_file;

// Reads and validates a file: header length within the file, valid JSON,
// known dtypes, shapes whose byte size equals the offsets, offsets inside the
// data and not overlapping, no duplicate names.  -1 + as_error naming the
// file and the tensor otherwise.
int st_open(st_file **out, const char *path);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
// Value of a "__metadata__" key, or NULL.
const char *st_metadata(const st_file *f, const char *key);
// Element i of a tensor as float (any supported dtype; F64 and integers rounded).
float st_get(const st_tensor *t, int64_t i);

// Writer: tensors are referenced (not copied) until st_writer_save, which
// writes atomically (temporary file, fsync, rename).
typedef struct st_writer st_writer;
st_writer *st_writer_init(void);
void st_writer_free(st_writer *w);
void st_writer_add_f32(st_writer *w, const char *name, int n_dims, const int64_t *shape, const float *data);
void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int n_dims, const int64_t *shape, const void *data);
// The data section as it will be written, tensor by tensor in file order (a
// checksum of it goes into the metadata before the save).
void st_writer_data(const st_writer *w, void (*fn)(void *user, const void *data, size_t bytes), void *user);
void st_writer_set_metadata(st_writer *w, const char *key, const char *value);
int st_writer_save(st_writer *w, const char *path);

#endif
