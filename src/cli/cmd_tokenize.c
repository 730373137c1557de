#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/model_hf.h"
#include "gguf/gguf.h"
#include "util/common.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin tokenize [--model FILE.gguf] [--special] [--add-special] TEXT\n\n"
            "Prints the token ids of TEXT, separated by spaces.\n\n"
            "  --model FILE|DIR   GGUF file or Hugging Face folder whose tokenizer to use (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --special          recognise special tokens written in TEXT (e.g. <|im_start|>)\n"
            "  --add-special      add BOS/EOS as the model's metadata asks\n"
            "  --pieces           print each token's text too, as id:'piece'\n"
            "  --help             this text\n");
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"special", no_argument, 0, 's'},
                                         {"add-special", no_argument, 0, 'a'}, {"pieces", no_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model_path = NULL;
    bool special = false, add_special = false, pieces = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 's': special = true; break;
        case 'a': add_special = true; break;
        case 'p': pieces = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("tokenize", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("tokenize", "expects exactly one TEXT argument");
    const char *text = argv[optind];

    // Only the tokenizer is needed: open the GGUF without binding the weights.
    char path_buf[4200];
    if (!model_path) {
        snprintf(path_buf, sizeof path_buf, "%s", cli_default_model());
        model_path = path_buf;
    }
    gguf_file *f;
    tokenizer *tok;
    if (model_open_meta(&f, model_path) != AS_OK) { // a GGUF file, or a Hugging Face folder without its weights
        if (model_path == path_buf) as_error("default model %s not found or unreadable; run `alphaspin fetch-model` first (%s)", path_buf, as_last_error());
        return cli_fail("tokenize");
    }
    if (tokenizer_load(&tok, f) != AS_OK) {
        gguf_close(f);
        return cli_fail("tokenize");
    }
    int32_t *ids;
    size_t n;
    int rc = tokenizer_encode(tok, text, strlen(text), add_special, special, &ids, &n);
    if (rc == AS_OK) {
        for (size_t i = 0; i < n; i++) {
            if (pieces) {
                char *piece = tokenizer_decode(tok, &ids[i], 1, true);
                printf("%s%d:'%s'", i ? " " : "", ids[i], piece);
                free(piece);
            } else {
                printf("%s%d", i ? " " : "", ids[i]);
            }
        }
        printf("\n");
        free(ids);
    }
    tokenizer_free(tok);
    gguf_close(f);
    return rc == AS_OK ? 0 : cli_fail("tokenize");
}
