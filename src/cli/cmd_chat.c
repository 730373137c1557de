// alphaspin chat: an interactive conversation.  Each turn renders the whole
// conversation with the model's chat template and generates the reply,
// streaming it; /reset forgets the conversation, /quit (or end of input) leaves.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "generate/generate.h"
#include "tokenizer/chat.h"
#include "util/common.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin chat [--model FILE.gguf] [options]\n\n"
            "Interactive chat on standard input; type /reset to start over, /quit or Ctrl-D to leave.\n\n"
            "  --model FILE|DIR     GGUF file or Hugging Face folder (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --system TEXT        system prompt (default: the chat template's own, if any)\n"
            "  --chat-template T    chatml | gemma | llama3, when the model's template is not recognised\n"
            "  --max-new-tokens N   per reply (default 512)\n"
            "  --temperature T      default 0.8 (0: greedy)\n"
            "  --seed S             default 42\n"
            "  --threads N          threads (default: all cores)\n"
            "  --device D           " CLI_DEVICE_HELP "\n"
            "  --help               this text\n");
}

static void stream_token(void *user, int64_t request, int32_t token, const char *text, size_t len) {
    (void)user, (void)request, (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

int cmd_chat(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},       {"system", required_argument, 0, 's'},
                                         {"chat-template", required_argument, 0, 'c'}, {"max-new-tokens", required_argument, 0, 'n'},
                                         {"temperature", required_argument, 0, 't'},   {"seed", required_argument, 0, 'S'},
                                         {"threads", required_argument, 0, 'j'},       {"help", no_argument, 0, 'h'},
                                         {"device", required_argument, 0, 'D'},
                                         {0, 0, 0, 0}};
    const char *cmd = "chat", *model_path = NULL, *system = NULL, *tmpl_name = NULL;
    sampler_params sp = sampler_params_default();
    long max_new = 512, l;
    double d;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 's': system = optarg; break;
        case 'c': tmpl_name = optarg; break;
        case 'n': if (!cli_parse_int(cmd, "--max-new-tokens", optarg, 1, 1 << 20, &max_new)) return 2; break;
        case 't': if (!cli_parse_float(cmd, "--temperature", optarg, 0, 100, &d)) return 2; sp.temperature = (float)d; break;
        case 'S': if (!cli_parse_int(cmd, "--seed", optarg, 0, __LONG_MAX__, &l)) return 2; sp.seed = (uint64_t)l; break;
        case 'j': if (!cli_parse_int(cmd, "--threads", optarg, 1, 1024, &l)) return 2; kernel_set_threads((int)l); break;
        case 'D': cli_set_device(optarg); break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);

    model *m;
    tokenizer *tok;
    chat_template ct;
    if (cli_load_model(model_path, &m, &tok) != AS_OK) return cli_fail(cmd);
    if (chat_template_init(&ct, m->file, tmpl_name) != AS_OK) {
        tokenizer_free(tok);
        model_free(m);
        return cli_fail(cmd);
    }
    bool tty = isatty(STDIN_FILENO);
    size_t cap = 16, n = 0;
    chat_message *msgs = as_malloc(cap * sizeof *msgs);
    if (system) msgs[n++] = (chat_message){"system", as_strdup(system)};
    size_t n_fixed = n;
    char *line = NULL;
    size_t line_cap = 0;
    int rc = AS_OK;
    uint64_t turn = 0;
    for (;;) {
        if (tty) fputs("> ", stdout), fflush(stdout);
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (!strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            for (size_t i = n_fixed; i < n; i++) free((char *)msgs[i].content);
            n = n_fixed;
            continue;
        }
        if (got == 0) continue;
        if (n + 2 > cap) msgs = as_realloc(msgs, (cap *= 2) * sizeof *msgs);
        msgs[n++] = (chat_message){"user", as_strdup(line)};
        char *text = chat_render(&ct, msgs, n, true);
        if (!text) {
            rc = AS_FAIL;
            break;
        }
        int32_t *ids;
        size_t n_ids;
        // The rendered template already holds BOS where the family wants one.
        rc = tokenizer_encode(tok, text, strlen(text), false, true, &ids, &n_ids);
        free(text);
        if (rc != AS_OK) break;
        if ((int64_t)n_ids + max_new > m->cfg.n_ctx_train) {
            free(ids);
            fprintf(stderr, "alphaspin chat: the conversation no longer fits the model's context; type /reset\n");
            free((char *)msgs[--n].content);
            continue;
        }
        generate_request req = {.prompt = ids, .n_prompt = (int64_t)n_ids, .sampling = sp, .max_new_tokens = (int32_t)max_new};
        req.sampling.seed = sp.seed + turn++;
        generate_options go = generate_options_default();
        go.precision = KERNEL_PRECISION_Q8; // interactive: speed first (see `generate --help`)
        go.batch_size = 1;
        go.on_token = stream_token;
        generate_result res;
        rc = generate_run(m, tok, &req, 1, &go, &res);
        free(ids);
        if (rc != AS_OK) break;
        fputc('\n', stdout);
        msgs[n++] = (chat_message){"assistant", as_strdup(res.text ? res.text : "")};
        generate_result_free(&res);
    }
    free(line);
    for (size_t i = 0; i < n; i++) free((char *)msgs[i].content);
    free(msgs);
    chat_template_free(&ct);
    tokenizer_free(tok);
    model_free(m);
    return rc == AS_OK ? 0 : cli_fail(cmd);
}
