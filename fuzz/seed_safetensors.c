// Seed corpus for fuzz_safetensors: files written by the project's own writer
// (model/safetensors.h), with every dtype, metadata, an empty tensor and none.
// Usage: seed_safetensors OUTDIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"
#include "util/common.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    const float f32[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    const uint16_t h16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    const double f64[3] = {1.0 / 3, -2e300, 0};
    const int32_t i32[4] = {1, -1, 2147483647, 0};
    const int64_t i64[2] = {-9, 1234567890123};
    char path[4096];
    int rc = 0;
    for (int k = 0; k < 3; k++) {
        st_writer *w = st_writer_init();
        if (k >= 1) {
            st_writer_add_f32(w, "a.weight", 2, (const int64_t[]){2, 3}, f32);
            st_writer_add(w, "b.f16", ST_F16, 1, (const int64_t[]){4}, h16);
            st_writer_add(w, "c.bf16", ST_BF16, 2, (const int64_t[]){2, 2}, h16);
            st_writer_add(w, "empty", ST_F32, 1, (const int64_t[]){0}, f32);
        }
        if (k == 2) {
            st_writer_add(w, "d.f64", ST_F64, 1, (const int64_t[]){3}, f64);
            st_writer_add(w, "e.i32", ST_I32, 1, (const int64_t[]){4}, i32);
            st_writer_add(w, "f.i64", ST_I64, 1, (const int64_t[]){2}, i64);
            st_writer_set_metadata(w, "format", "pt");
            st_writer_set_metadata(w, "note", "seed");
        }
        snprintf(path, sizeof path, "%s/seed%d.safetensors", argv[1], k);
        if (st_writer_save(w, path)) fprintf(stderr, "seed_safetensors: %s\n", as_last_error()), rc = 1;
        st_writer_free(w);
    }
    return rc;
}
