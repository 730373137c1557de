// alphaspin merge: folds a PEFT LoRA adapter into its base model and writes
// the result as GGUF (llama.cpp) or as a Hugging Face folder (transformers);
// without --adapter it converts the base between the two.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "util/common.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin merge [--model FILE.gguf|DIR] [--adapter DIR] --out OUT [options]\n\n"
            "Folds a LoRA adapter (PEFT folder: adapter_model.safetensors + adapter_config.json, as\n"
            "`alphaspin sft` writes it) into the base model, W += (alpha / r) B A, and writes the result.\n"
            "OUT ending in .gguf: a GGUF model for llama.cpp (all metadata of the base kept, tokenizer and\n"
            "chat template included).  Otherwise OUT is a Hugging Face folder: config.json,\n"
            "model.safetensors (float32), tokenizer.json, tokenizer_config.json, generation_config.json.\n"
            "Without --adapter the base model is converted as it is.\n\n"
            "  --model M        base model: GGUF file or Hugging Face folder (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --adapter DIR    PEFT LoRA adapter folder\n"
            "  --out OUT        OUT.gguf or a folder\n"
            "  --type T         GGUF tensor type: f32 (default), f16 or q8_0 (norm vectors stay f32)\n"
            "  --threads N      threads (default: all cores)\n"
            "  --help           this text\n");
}

static bool ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

int cmd_merge(int argc, char **argv) {
    enum { O_MODEL = 1, O_ADAPTER, O_OUT, O_TYPE, O_THREADS, O_HELP };
    static const struct option opts[] = {{"model", required_argument, 0, O_MODEL}, {"adapter", required_argument, 0, O_ADAPTER},
                                         {"out", required_argument, 0, O_OUT},     {"type", required_argument, 0, O_TYPE},
                                         {"threads", required_argument, 0, O_THREADS}, {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *cmd = "merge", *model_path = NULL, *adapter = NULL, *out = NULL, *type_name = NULL;
    int threads = 0, ch;
    long l;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_MODEL: model_path = optarg; break;
        case O_ADAPTER: adapter = optarg; break;
        case O_OUT: out = optarg; break;
        case O_TYPE: type_name = optarg; break;
        case O_THREADS:
            if (!cli_parse_int(cmd, "--threads", optarg, 1, 1024, &l)) return 2;
            threads = (int)l;
            break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error(cmd, "--out is required");
    const bool gguf = ends_with(out, ".gguf");
    ggml_type type = GGML_TYPE_F32;
    if (type_name) {
        if (!gguf) return cli_usage_error(cmd, "--type applies to a .gguf output; a Hugging Face folder is written in f32");
        if (!strcasecmp(type_name, "f32")) type = GGML_TYPE_F32;
        else if (!strcasecmp(type_name, "f16")) type = GGML_TYPE_F16;
        else if (!strcasecmp(type_name, "q8_0")) type = GGML_TYPE_Q8_0;
        else return cli_usage_error(cmd, "--type must be f32, f16 or q8_0, got '%s'", type_name);
    }
    if (!model_path) {
        model_path = cli_default_model();
        if (access(model_path, R_OK) != 0) {
            as_error("default model %s not found; run `alphaspin fetch-model` first, or pass --model", model_path);
            return cli_fail(cmd);
        }
    }
    if (threads) kernel_set_threads(threads);
    train_model *m = NULL;
    if (train_model_load(&m, model_path)) return cli_fail(cmd);
    train_set_threads(m, threads ? threads : kernel_get_threads());
    int rc = AS_FAIL;
    if (adapter && (train_lora_load_peft(m, adapter) || train_lora_merge(m))) goto done;
    rc = gguf ? train_export_gguf(m, model_path, out, type) : train_export_hf(m, model_path, out);
done:
    train_model_free(m);
    if (rc) return cli_fail(cmd);
    fprintf(stderr, "merge: %s%s%s -> %s (%s)\n", model_path, adapter ? " + " : "", adapter ? adapter : "", out,
            gguf ? ggml_type_name(type) : "Hugging Face folder, F32");
    return 0;
}
