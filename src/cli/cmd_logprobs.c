#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/common.h"
#include "util/json.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin logprobs [--model FILE.gguf] (--text TEXT | --file FILE) [options]\n\n"
            "Prints one JSON line per token of TEXT: {\"id\", \"token\", \"bytes\", \"logprob\"}, where logprob is\n"
            "log p(token | the tokens before it) in nats (null for the first token, which has no context),\n"
            "token is the token's text (U+FFFD where it ends inside a multi-byte character) and bytes its\n"
            "exact bytes.\n\n"
            "  --model FILE|DIR   GGUF file or Hugging Face folder (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --text TEXT        the text to score\n"
            "  --file FILE        score the bytes of FILE (- : standard input)\n"
            "  --special          recognise special tokens written in TEXT\n"
            "  --precision P      f32 (default: fp32 activations, matches an fp32 reference) or q8\n"
            "                     (8-bit activations like llama.cpp: faster, slightly less exact) or bf16\n"
            "                     (bf16 operands, fp32 sums: fastest on CPUs with AMX)\n"
            "  --threads N        threads (default: all cores)\n"
            "  --device D         " CLI_DEVICE_HELP "\n"
            "  --help             this text\n");
}

int cmd_logprobs(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 't'},
                                         {"special", no_argument, 0, 's'},      {"precision", required_argument, 0, 'p'},
                                         {"threads", required_argument, 0, 'j'}, {"file", required_argument, 0, 'f'}, {"device", required_argument, 0, 'D'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *model_path = NULL, *text_opt = NULL, *file = NULL;
    bool special = false;
    kernel_precision prec = KERNEL_PRECISION_F32;
    long threads = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 't': text_opt = optarg; break;
        case 'f': file = optarg; break;
        case 's': special = true; break;
        case 'D': cli_set_device(optarg); break;
        case 'p':
            if (kernel_precision_parse(optarg, &prec)) return cli_usage_error("logprobs", "--precision must be f32, q8 or bf16, got '%s'", optarg);
            break;
        case 'j':
            if (!cli_parse_int("logprobs", "--threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("logprobs", "unknown option");
        }
    }
    if (!text_opt && !file) return cli_usage_error("logprobs", "--text or --file is required");
    if (text_opt && file) return cli_usage_error("logprobs", "give one of --text and --file");
    if (optind < argc) return cli_usage_error("logprobs", "unexpected argument '%s'", argv[optind]);
    if (threads) kernel_set_threads((int)threads);

    char *text;
    size_t text_len;
    if (file) {
        if (cli_read_file_text(file, &text, &text_len) != AS_OK) return cli_fail("logprobs");
    } else {
        text = as_strdup(text_opt);
        text_len = strlen(text);
    }
    const char *what = file ? file : "--text";
    model *m;
    tokenizer *tok;
    if (cli_load_model(model_path, &m, &tok) != AS_OK) {
        free(text);
        return cli_fail("logprobs");
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenizer_encode(tok, text, text_len, true, special, &ids, &n);
    free(text);
    if (rc == AS_OK && n == 0) rc = as_error("%s: the text has no tokens", what);
    if (rc == AS_OK && n > (size_t)m->cfg.n_ctx_train)
        rc = as_error("%s: %zu tokens exceed the model's context of %d", what, n, m->cfg.n_ctx_train);
    float *logits = NULL;
    kv_cache *kv = NULL;
    if (rc == AS_OK) {
        int32_t nv = m->cfg.n_vocab;
        kv = model_kv_cache(m, 1, (int32_t)n, prec);
        if (!kv) rc = AS_FAIL;
        int32_t *seq = as_calloc(n, sizeof *seq), *pos = as_malloc(n * sizeof *pos);
        for (size_t i = 0; i < n; i++) pos[i] = (int32_t)i;
        logits = as_malloc(n * (size_t)nv * sizeof *logits);
        model_batch b = {.n_tokens = (int32_t)n, .token = ids, .seq = seq, .pos = pos, .want_logits = NULL};
        if (rc == AS_OK) rc = model_forward(m, kv, &b, logits);
        size_t piece_cap = 64;
        char *piece = as_malloc(piece_cap);
        for (size_t i = 0; rc == AS_OK && i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", ids[i]);
            // The token's own bytes (not a decode, which would drop an SPM leading space):
            // valid text in "token", the exact bytes in "bytes" (a piece can end inside a character).
            size_t k = tokenizer_token_to_piece(tok, ids[i], true, piece, piece_cap);
            if (k > piece_cap) {
                piece = as_realloc(piece, piece_cap = k);
                k = tokenizer_token_to_piece(tok, ids[i], true, piece, piece_cap);
            }
            as_json_add_bytes_text(o, "token", "bytes", piece, k);
            if (i == 0) {
                cJSON_AddNullToObject(o, "logprob");
            } else {
                // log_softmax of the previous position's logits, in double for the normaliser.
                const float *l = logits + (i - 1) * (size_t)nv;
                float mx = l[0];
                for (int32_t v = 1; v < nv; v++) mx = l[v] > mx ? l[v] : mx;
                double z = 0;
                for (int32_t v = 0; v < nv; v++) z += exp((double)l[v] - mx);
                cJSON_AddNumberToObject(o, "logprob", (double)l[ids[i]] - mx - log(z));
            }
            char *line = as_json_print(o, false);
            puts(line);
            free(line);
            cJSON_Delete(o);
        }
        free(piece);
        free(seq);
        free(pos);
    }
    free(logits);
    free(ids);
    kv_cache_free(kv);
    tokenizer_free(tok);
    model_free(m);
    return rc == AS_OK ? 0 : cli_fail("logprobs");
}
