// Seed corpus for fuzz_gguf: small valid GGUFs from the writer, one per
// layout worth mutating (empty, metadata only, tensors at 32- and 64-byte
// alignment, one tensor).  Usage: seed_gguf OUTDIR
#include <stdio.h>
#include <stdlib.h>

#include "gguf/gguf.h"
#include "gguf/gguf_sample.h"
#include "util/common.h"

static int save(gguf_writer *w, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = gguf_writer_save(w, path);
    gguf_writer_free(w);
    if (rc) fprintf(stderr, "seed_gguf: %s\n", as_last_error());
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    if (as_mkdir_p(dir)) {
        fprintf(stderr, "seed_gguf: %s\n", as_last_error());
        return 1;
    }
    int rc = 0;
    gguf_writer *w = gguf_writer_init();
    rc |= save(w, dir, "empty.gguf");

    w = gguf_writer_init();
    sample_fill(w, false);
    rc |= save(w, dir, "kv_only.gguf");

    w = gguf_writer_init();
    sample_fill(w, true);
    rc |= save(w, dir, "all_types.gguf");

    w = gguf_writer_init();
    gguf_writer_set_alignment(w, 64);
    sample_fill(w, true);
    rc |= save(w, dir, "all_types_align64.gguf");

    w = gguf_writer_init();
    const int64_t ne[2] = {32, 2};
    uint8_t q8[2 * 34] = {0};
    gguf_write_u32(w, "llama.block_count", 1);
    gguf_write_tensor(w, "token_embd.weight", GGML_TYPE_Q8_0, 2, ne, q8, sizeof q8);
    rc |= save(w, dir, "one_tensor.gguf");
    return rc ? 1 : 0;
}
