// alphaspin sft: supervised fine-tuning (LoRA or full) on a JSONL file of
// conversations, loss on the answer tokens only.  The run itself is
// sft_train() in src/train/sft.c; this file only turns options into its config
// (and installs the resume tests' kill hook).
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "train/sft.h"
#include "util/common.h"

// For the resume tests (tests/cli/test_cli.sh): with ALPHASPIN_TEST_SFT_KILL_AFTER=<step> in the
// environment the process kills itself as kill -9 would, once that step's outputs and state are saved.
static void test_kill_after(void *want, int64_t step) {
    if (atoll(want) == step) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

static void usage(FILE *out) {
    sft_config d;
    sft_config_default(&d);
    fprintf(out,
            "usage: alphaspin sft [--model FILE.gguf|DIR] --data FILE.jsonl --out DIR [options]\n\n"
            "Supervised fine-tuning with the model's chat template, loss on the answer tokens only.\n"
            "Data: JSONL lines {\"messages\": [{role, content}, ...]}, {\"prompt\", \"response\"} or\n"
            "{\"question\", \"answer\"}.  Writes to DIR: the adapter (adapter_model.safetensors +\n"
            "adapter_config.json, PEFT's layout) or, with --full, model.gguf; log.jsonl (metrics per step);\n"
            "the training state.  A progress line shows step, loss, tokens/s and ETA.\n\n"
            "  --model FILE|DIR     base model, GGUF file or Hugging Face folder (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --data FILE          training data (JSONL)\n"
            "  --out DIR            output folder\n"
            "  --full               full fine-tuning instead of LoRA\n"
            "  --lora-rank R        default %d\n"
            "  --lora-alpha A       default %g\n"
            "  --lora-dropout P     default %g\n"
            "  --lora-targets LIST  comma-separated of q,k,v,o,gate,up,down (default: all)\n"
            "  --optimizer O        adamw (default) | rmsprop | sgd\n"
            "  --lr LR              peak learning rate (default %g)\n"
            "  --weight-decay W     default %g\n"
            "  --schedule S         constant | linear (default) | cosine\n"
            "  --warmup-ratio R     default %g\n"
            "  --max-grad-norm N    default %g (0: no clipping)\n"
            "  --epochs N           default %d\n"
            "  --max-steps N        stop after N optimizer steps (default: all epochs)\n"
            "  --batch-size N       sequences per optimizer step (default %d)\n"
            "  --micro-batch N      sequences per forward/backward, gradients accumulate (default %d)\n"
            "  --max-len N          tokens per sequence (default %d)\n"
            "  --eval-fraction F    held-out share for the evaluation loss (default %g)\n"
            "  --eval-every N       optimizer steps between evaluations (default: at the end)\n"
            "  --chat-template T    chatml | gemma | llama3, when the model's template is not recognised\n"
            "  --precision P        f32 (default: fp32 products, exact gradients) | bf16 (bf16 operands, fp32 sums\n"
            "                       and master weights; fastest on CPUs with AMX-BF16).  The environment's\n"
            "                       ALPHASPIN_TRAIN_PRECISION, when set, replaces the default (not this option)\n"
            "  --save-every N       write the adapter (or model) and training state every N steps (default: at the end)\n"
            "  --resume             continue the run in --out from its training state (same data and options);\n"
            "                       the result is bitwise that of an uninterrupted run\n"
            "  --seed S             default %llu\n"
            "  --threads N          threads (default: all cores)\n"
            "  --device D           " CLI_DEVICE_HELP "\n"
            "  --help               this text\n",
            d.lora_cfg.rank, d.lora_cfg.alpha, d.lora_cfg.dropout, d.optim.lr, d.optim.weight_decay, d.optim.warmup_ratio,
            d.optim.max_grad_norm, d.epochs, d.batch_size, d.micro_batch, d.max_len, d.eval_fraction,
            (unsigned long long)d.seed);
}

static bool parse_targets(const char *cmd, const char *s, uint32_t *out) {
    uint32_t mask = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < TRAIN_LORA_N_TARGETS; i++)
            if (!strcmp(t, TRAIN_LORA_TARGET_NAMES[i])) found = i;
        if (found < 0) {
            cli_usage_error(cmd, "--lora-targets: unknown matrix '%s' (expected q,k,v,o,gate,up,down)", t);
            return false;
        }
        mask |= 1u << found;
    }
    if (!mask) {
        cli_usage_error(cmd, "--lora-targets is empty");
        return false;
    }
    *out = mask;
    return true;
}

int cmd_sft(int argc, char **argv) {
    enum { O_MODEL = 1, O_DATA, O_OUT, O_FULL, O_RANK, O_ALPHA, O_DROP, O_TARGETS, O_OPT, O_LR, O_WD, O_SCHED, O_WARM,
           O_CLIP, O_EPOCHS, O_STEPS, O_BATCH, O_MICRO, O_MAXLEN, O_EVALF, O_EVALN, O_TMPL, O_SEED, O_THREADS, O_HELP, O_SAVE, O_RESUME,
           O_PREC, O_DEVICE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},          {"data", required_argument, 0, O_DATA},
        {"out", required_argument, 0, O_OUT},              {"full", no_argument, 0, O_FULL},
        {"lora-rank", required_argument, 0, O_RANK},       {"lora-alpha", required_argument, 0, O_ALPHA},
        {"lora-dropout", required_argument, 0, O_DROP},    {"lora-targets", required_argument, 0, O_TARGETS},
        {"optimizer", required_argument, 0, O_OPT},        {"lr", required_argument, 0, O_LR},
        {"weight-decay", required_argument, 0, O_WD},      {"schedule", required_argument, 0, O_SCHED},
        {"warmup-ratio", required_argument, 0, O_WARM},    {"max-grad-norm", required_argument, 0, O_CLIP},
        {"epochs", required_argument, 0, O_EPOCHS},        {"max-steps", required_argument, 0, O_STEPS},
        {"batch-size", required_argument, 0, O_BATCH},     {"micro-batch", required_argument, 0, O_MICRO},
        {"max-len", required_argument, 0, O_MAXLEN},       {"eval-fraction", required_argument, 0, O_EVALF},
        {"eval-every", required_argument, 0, O_EVALN},     {"chat-template", required_argument, 0, O_TMPL},
        {"seed", required_argument, 0, O_SEED},            {"threads", required_argument, 0, O_THREADS},
        {"help", no_argument, 0, O_HELP},                  {"save-every", required_argument, 0, O_SAVE},
        {"resume", no_argument, 0, O_RESUME},              {"precision", required_argument, 0, O_PREC},
        {"device", required_argument, 0, O_DEVICE},        {0, 0, 0, 0}};
    const char *cmd = "sft";
    sft_config c;
    sft_config_default(&c);
    bool prec_given = false;
    long l;
    double d;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_MODEL: c.model_path = optarg; break;
        case O_DATA: c.data_path = optarg; break;
        case O_OUT: c.out_dir = optarg; break;
        case O_FULL: c.lora = false; break;
        case O_RANK: if (!cli_parse_int(cmd, "--lora-rank", optarg, 1, 4096, &l)) return 2; c.lora_cfg.rank = (int32_t)l; break;
        case O_ALPHA: if (!cli_parse_float(cmd, "--lora-alpha", optarg, 1e-6, 1e6, &d)) return 2; c.lora_cfg.alpha = (float)d; break;
        case O_DROP: if (!cli_parse_float(cmd, "--lora-dropout", optarg, 0, 0.999, &d)) return 2; c.lora_cfg.dropout = (float)d; break;
        case O_TARGETS: if (!parse_targets(cmd, optarg, &c.lora_cfg.targets)) return 2; break;
        case O_OPT:
            if (!strcmp(optarg, "adamw")) c.optim.kind = OPTIM_ADAMW;
            else if (!strcmp(optarg, "rmsprop")) c.optim.kind = OPTIM_RMSPROP;
            else if (!strcmp(optarg, "sgd")) c.optim.kind = OPTIM_SGD;
            else return cli_usage_error(cmd, "--optimizer must be adamw, rmsprop or sgd, got '%s'", optarg);
            break;
        case O_LR: if (!cli_parse_float(cmd, "--lr", optarg, 0, 10, &d)) return 2; c.optim.lr = (float)d; break;
        case O_WD: if (!cli_parse_float(cmd, "--weight-decay", optarg, 0, 10, &d)) return 2; c.optim.weight_decay = (float)d; break;
        case O_SCHED:
            if (!strcmp(optarg, "constant")) c.optim.schedule = OPTIM_SCHEDULE_CONSTANT;
            else if (!strcmp(optarg, "linear")) c.optim.schedule = OPTIM_SCHEDULE_LINEAR;
            else if (!strcmp(optarg, "cosine")) c.optim.schedule = OPTIM_SCHEDULE_COSINE;
            else return cli_usage_error(cmd, "--schedule must be constant, linear or cosine, got '%s'", optarg);
            break;
        case O_WARM: if (!cli_parse_float(cmd, "--warmup-ratio", optarg, 0, 1, &d)) return 2; c.optim.warmup_ratio = d; break;
        case O_CLIP: if (!cli_parse_float(cmd, "--max-grad-norm", optarg, 0, 1e9, &d)) return 2; c.optim.max_grad_norm = (float)d; break;
        case O_EPOCHS: if (!cli_parse_int(cmd, "--epochs", optarg, 1, 1000000, &l)) return 2; c.epochs = (int32_t)l; break;
        case O_STEPS: if (!cli_parse_int(cmd, "--max-steps", optarg, 1, __LONG_MAX__, &l)) return 2; c.max_steps = l; break;
        case O_BATCH: if (!cli_parse_int(cmd, "--batch-size", optarg, 1, 1 << 20, &l)) return 2; c.batch_size = (int32_t)l; break;
        case O_MICRO: if (!cli_parse_int(cmd, "--micro-batch", optarg, 1, 1 << 20, &l)) return 2; c.micro_batch = (int32_t)l; break;
        case O_MAXLEN: if (!cli_parse_int(cmd, "--max-len", optarg, 2, 1 << 20, &l)) return 2; c.max_len = (int32_t)l; break;
        case O_EVALF: if (!cli_parse_float(cmd, "--eval-fraction", optarg, 0, 0.9, &d)) return 2; c.eval_fraction = d; break;
        case O_EVALN: if (!cli_parse_int(cmd, "--eval-every", optarg, 0, __LONG_MAX__ >> 1, &l)) return 2; c.eval_every = (int32_t)l; break;
        case O_TMPL: c.chat_template = optarg; break;
        case O_SEED: if (!cli_parse_int(cmd, "--seed", optarg, 0, __LONG_MAX__, &l)) return 2; c.seed = (uint64_t)l; break;
        case O_THREADS: if (!cli_parse_int(cmd, "--threads", optarg, 1, 1024, &l)) return 2; c.threads = (int)l; break;
        case O_DEVICE: c.device = optarg; break;
        case O_SAVE: if (!cli_parse_int(cmd, "--save-every", optarg, 1, __LONG_MAX__, &l)) return 2; c.save_every = l; break;
        case O_RESUME: c.resume = true; break;
        case O_PREC:
            if (train_precision_parse(optarg, &c.precision)) return cli_usage_error(cmd, "--precision must be f32 or bf16, got '%s'", optarg);
            prec_given = true;
            break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!c.data_path || !c.out_dir) return cli_usage_error(cmd, "--data and --out are required");
    if (c.micro_batch > c.batch_size) return cli_usage_error(cmd, "--micro-batch (%d) exceeds --batch-size (%d)", c.micro_batch, c.batch_size);
    if (!prec_given && cli_train_precision_env(&c.precision)) return cli_fail(cmd);
    if (!c.model_path) c.model_path = cli_default_model();
    if (c.threads) kernel_set_threads(c.threads);
    const char *kill_after = getenv("ALPHASPIN_TEST_SFT_KILL_AFTER");
    if (kill_after) c.on_saved = test_kill_after, c.user = (void *)kill_after;
    sft_result r;
    if (sft_train(&c, &r) != AS_OK) return cli_fail(cmd);
    if (!as_files_writer()) return 0; // under mpirun rank 0 reports (dist/dist.h)
    fprintf(stderr, "sft: %lld steps, loss %.4f -> %.4f", (long long)r.steps, r.first_loss, r.last_loss);
    if (!isnan(r.eval_loss)) fprintf(stderr, ", held-out loss %.4f", r.eval_loss);
    fprintf(stderr, "; wrote %s\n", c.out_dir);
    return 0;
}
