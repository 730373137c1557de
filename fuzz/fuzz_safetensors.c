// libFuzzer target for the safetensors reader (model/safetensors.h): the
// input is a whole file.  st_open either fails with a message naming the
// file, or gives tensors whose bytes lie inside the file's data section, at
// their dtype's size times their element count, without overlaps, and whose
// first and last elements read (st_get) without a crash; its metadata keys
// look up to their values.
// fuzz-libs: as_model as_util
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "util/common.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_safetensors: property violated: %s\n", what);
        abort();
    }
}

static char g_path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_path[0]) snprintf(g_path, sizeof g_path, "/tmp/fuzz_safetensors.%d", (int)getpid());
    FILE *fp = fopen(g_path, "wb");
    if (!fp) return 0;
    const size_t wrote = size ? fwrite(data, 1, size, fp) : 0;
    fclose(fp);
    if (wrote != size) return 0;
    st_file *f = NULL;
    if (st_open(&f, g_path) != 0) {
        check(strstr(as_last_error(), g_path) != NULL, "the error names the file");
        return 0;
    }
    const uint8_t *lo = f->data, *hi = f->data + f->data_size;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        const size_t bytes = (size_t)t->n_elems * st_dtype_size(t->dtype);
        check(t->n_elems >= 0 && t->n_dims >= 0 && t->n_dims <= ST_MAX_DIMS, "shape in range");
        check(bytes == 0 || ((const uint8_t *)t->data >= lo && (const uint8_t *)t->data + bytes <= hi), "bytes inside the data section");
        check(st_find(f, t->name) == t, "the name finds the tensor");
        if (t->n_elems > 0) {
            volatile float a = st_get(t, 0), b = st_get(t, t->n_elems - 1);
            (void)a, (void)b;
        }
    }
    for (int i = 0; i < f->n_meta; i++) check(st_metadata(f, f->meta_keys[i]) != NULL, "metadata keys look up");
    st_close(f);
    return 0;
}
