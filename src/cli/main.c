// alphaspin: regularised self-play fine-tuning (alpha-SPIN) in one C program.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command commands[] = {
    {"fetch-model", cmd_fetch_model, "download the default model (SmolLM2-135M-Instruct Q4_1) into the cache"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"logprobs", cmd_logprobs, "print the log-probability of every token of a text (JSON lines)"},
    {"generate", cmd_generate, "continue a prompt, or a file of prompts in batches"},
    {"chat", cmd_chat, "interactive chat with the model"},
    {"sft", cmd_sft, "supervised fine-tuning (LoRA or full) on a JSONL file of conversations"},
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin <command> [options]\n\n"
            "alphaspin loads Llama-family models (GGUF), generates, and (in later versions) runs\n"
            "regularised self-play fine-tuning (alpha-SPIN).\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`alphaspin <command> --help` describes each command's options.\n"
                 "Models and downloads are cached in $ALPHASPIN_HOME (default ~/.cache/alphaspin).\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "alphaspin: unknown command '%s' (see `alphaspin --help`)\n", argv[1]);
    return 2;
}
