#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/model_hf.h"
#include "gguf/gguf.h"
#include "util/common.h"
#include "util/json.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin tokenize [--model FILE.gguf] [options] (TEXT | --text TEXT | --file FILE)\n\n"
            "Prints the token ids of the text, separated by spaces.  A TEXT that begins with '-' needs\n"
            "--text TEXT or `--` before it (`alphaspin tokenize -- -42`).\n\n"
            "  --model FILE|DIR   GGUF file or Hugging Face folder whose tokenizer to use (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --text TEXT        the text to tokenize\n"
            "  --file FILE        tokenize the bytes of FILE (- : standard input)\n"
            "  --special          recognise special tokens written in the text (e.g. <|im_start|>)\n"
            "  --add-special      add BOS/EOS as the model's metadata asks\n"
            "  --pieces           print one JSON line per token instead: {\"id\", \"token\", \"bytes\"}, token\n"
            "                     being its text (U+FFFD where it ends inside a multi-byte character) and\n"
            "                     bytes its exact bytes\n"
            "  --                 end of the options: the next argument is TEXT, whatever it begins with\n"
            "  --help             this text\n");
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 't'},
                                         {"file", required_argument, 0, 'f'},  {"special", no_argument, 0, 's'},
                                         {"add-special", no_argument, 0, 'a'}, {"pieces", no_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_path = NULL, *text_opt = NULL, *file = NULL;
    bool special = false, add_special = false, pieces = false;
    int c;
    optind = 1;
    // getopt's own messages off: one line, naming the argument, with the hint a text like
    // "-42" needs (it reads as the options -4 and -2).
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 't': text_opt = optarg; break;
        case 'f': file = optarg; break;
        case 's': special = true; break;
        case 'a': add_special = true; break;
        case 'p': pieces = true; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("tokenize", "%s needs a value", argv[optind - 1]);
        default:
            if (optopt) return cli_usage_error("tokenize", "unknown option '-%c' (a TEXT that begins with '-' needs --text TEXT or `--` before it)", optopt);
            return cli_usage_error("tokenize", "unknown option '%s' (a TEXT that begins with '-' needs --text TEXT or `--` before it)", argv[optind - 1]);
        }
    }
    const int n_pos = argc - optind;
    if (n_pos > 1) return cli_usage_error("tokenize", "expects one TEXT argument, got %d (quote the text)", n_pos);
    if ((n_pos == 1) + (text_opt != NULL) + (file != NULL) != 1)
        return cli_usage_error("tokenize", "give exactly one of TEXT, --text and --file");
    char *text;
    size_t text_len;
    if (file) {
        if (cli_read_file_text(file, &text, &text_len) != AS_OK) return cli_fail("tokenize");
    } else {
        text = as_strdup(n_pos ? argv[optind] : text_opt);
        text_len = strlen(text);
    }

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
        free(text);
        return cli_fail("tokenize");
    }
    if (tokenizer_load(&tok, f) != AS_OK) {
        gguf_close(f);
        free(text);
        return cli_fail("tokenize");
    }
    int32_t *ids;
    size_t n;
    int rc = tokenizer_encode(tok, text, text_len, add_special, special, &ids, &n);
    if (rc == AS_OK && pieces) {
        // JSON lines like logprobs': a piece may end inside a UTF-8 character (a byte
        // token), so "token" is valid text and "bytes" the exact bytes.
        size_t cap = 64;
        char *piece = as_malloc(cap);
        for (size_t i = 0; i < n; i++) {
            size_t k = tokenizer_token_to_piece(tok, ids[i], true, piece, cap);
            if (k > cap) {
                piece = as_realloc(piece, cap = k);
                k = tokenizer_token_to_piece(tok, ids[i], true, piece, cap);
            }
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", ids[i]);
            as_json_add_bytes_text(o, "token", "bytes", piece, k);
            char *line = as_json_print(o, false);
            puts(line);
            free(line);
            cJSON_Delete(o);
        }
        free(piece);
    } else if (rc == AS_OK) {
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
    }
    if (rc == AS_OK) free(ids);
    free(text);
    tokenizer_free(tok);
    gguf_close(f);
    return rc == AS_OK ? 0 : cli_fail("tokenize");
}
