// Writes the generation tests' tiny random llama (tests/generate/tiny_llama.h) to a
// file, for the command-line tests: a byte-level BPE vocabulary of printable ASCII,
// " the", "ing", ... and the two halves of "é" as separate byte tokens (a text with
// "é" tokenizes into pieces that end inside the character).
//   write_tiny_model PATH [--wtype f32|q4_1] [--ctx N] [--seed S] [--embd N] [--ff N] [--heads N] [--kv-heads N] [--layers N] [--vocab N]
// (defaults: tiny_llama_default(); for Q4_1, --embd and --ff must be multiples of 32).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate/tiny_llama.h"
#include "util/common.h"

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: write_tiny_model PATH [--wtype f32|q4_1] [--ctx N] [--seed S] [--embd N] [--ff N] [--heads N] [--kv-heads N] [--layers N] [--vocab N]\n");
        return 2;
    }
    tiny_llama_cfg c = tiny_llama_default();
    for (int i = 2; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "write_tiny_model: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--wtype") && !strcmp(v, "f32")) c.wtype = GGML_TYPE_F32;
        else if (!strcmp(argv[i], "--wtype") && !strcmp(v, "q4_1")) c.wtype = GGML_TYPE_Q4_1;
        else if (!strcmp(argv[i], "--ctx") && atoi(v) >= 16) c.n_ctx = atoi(v);
        else if (!strcmp(argv[i], "--seed")) c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(argv[i], "--embd") && atoi(v) > 0) c.n_embd = atoi(v);
        else if (!strcmp(argv[i], "--ff") && atoi(v) > 0) c.n_ff = atoi(v);
        else if (!strcmp(argv[i], "--heads") && atoi(v) > 0) c.n_head = atoi(v);
        else if (!strcmp(argv[i], "--kv-heads") && atoi(v) > 0) c.n_head_kv = atoi(v);
        else if (!strcmp(argv[i], "--layers") && atoi(v) > 0) c.n_layer = atoi(v);
        else if (!strcmp(argv[i], "--vocab") && atoi(v) > 0) c.n_vocab = atoi(v); // padded with unused control tokens
        else {
            fprintf(stderr, "write_tiny_model: bad option %s %s\n", argv[i], v);
            return 2;
        }
        i++;
    }
    if (c.n_embd % c.n_head || c.n_head % c.n_head_kv) {
        fprintf(stderr, "write_tiny_model: --embd must be a multiple of --heads, and --heads of --kv-heads\n");
        return 2;
    }
    if (tiny_llama_write(argv[1], &c, NULL) != AS_OK) {
        fprintf(stderr, "write_tiny_model: %s\n", as_last_error());
        return 1;
    }
    return 0;
}
