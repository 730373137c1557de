// alphaspin run: the alpha-SPIN self-play experiment of a YAML configuration.
// The loop is spin_run() in src/spin/run.c; this file reads the options (and
// installs the resume tests' kill hook).
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dist/dist.h"
#include "spin/config.h"
#include "spin/run.h"
#include "util/common.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin run --config FILE.yaml [--set key.sub=value ...] [--train-precision P] [--device D] [--out RUN]\n\n"
            "Runs T iterations of alpha-SPIN self-play fine-tuning: generate losers from the\n"
            "window's iterates, score the references of pi_t and pi_0 once, train with the\n"
            "preference loss, checkpoint, evaluate.  configs/alphaspin.yaml documents every key.\n"
            "Writes RUN/config.yaml (resolved), RUN/iter_0 (the base) and RUN/iter_k: the adapter\n"
            "(or model.gguf), pairs.jsonl (SPIN layout), pairs_trl.jsonl (TRL layout with the\n"
            "cached reference log-probs), metrics.jsonl (TRL names), eval.json, summary.json.\n"
            "Killed at any moment, the same command resumes where it stopped.  At the end the table\n"
            "of `alphaspin report RUN` is printed (and RUN/report.md, RUN/charts/ written).\n\n"
            "  --config FILE   YAML configuration\n"
            "  --set K=V       override a key (e.g. --set alpha=0 --set loss.beta=0.2; lists comma-separated)\n"
            "  --train-precision P  f32 | bf16: the training products (--set train.precision=P); without it or\n"
            "                  --set train.precision, the environment's ALPHASPIN_TRAIN_PRECISION, when set,\n"
            "                  overrides the file's train.precision\n"
            "  --device D      cpu | cuda[:N]: the backend every phase runs on (--set device=D; README, \"Devices\")\n"
            "  --out RUN       run folder (default: runs/<name>, or runs/<config file's basename>)\n"
            "  --quiet         no progress lines and no report at the end\n"
            "  --help          this text\n");
}

// For the resume tests (tests/spin/test_spin_run.c): with ALPHASPIN_TEST_ABORT_AFTER=<k>:<phase>
// in the environment the process kills itself as kill -9 would, right after that phase
// (under mpirun every rank, or only rank r with ALPHASPIN_TEST_ABORT_RANK=r: tests/dist).
static void test_abort_after(void *want, int32_t k, const char *phase) {
    char got[64];
    snprintf(got, sizeof got, "%d:%s", k, phase);
    const char *rank = getenv("ALPHASPIN_TEST_ABORT_RANK");
    if (strcmp(got, want) == 0 && (!rank || !*rank || atoi(rank) == dist_rank())) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

int cmd_run(int argc, char **argv) {
    enum { O_CONFIG = 1, O_SET, O_OUT, O_QUIET, O_HELP, O_TPREC, O_DEVICE };
    static const struct option opts[] = {{"config", required_argument, 0, O_CONFIG}, {"set", required_argument, 0, O_SET},
                                         {"out", required_argument, 0, O_OUT},       {"quiet", no_argument, 0, O_QUIET},
                                         {"help", no_argument, 0, O_HELP},           {"train-precision", required_argument, 0, O_TPREC},
                                         {"device", required_argument, 0, O_DEVICE},  {0, 0, 0, 0}};
    static char device_set[128];
    const char *cmd = "run", *config = NULL, *out = NULL;
    const char *sets[256];
    int n_sets = 0, ch;
    bool quiet = false, tprec_given = false;
    train_precision tp;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_CONFIG: config = optarg; break;
        case O_SET:
            if (n_sets == (int)AS_ARRAY_LEN(sets)) return cli_usage_error(cmd, "too many --set options");
            sets[n_sets++] = optarg;
            tprec_given |= strncmp(optarg, "train.precision=", 16) == 0;
            break;
        case O_TPREC:
            if (train_precision_parse(optarg, &tp))
                return cli_usage_error(cmd, "--train-precision must be f32 or bf16, got '%s'", optarg);
            if (n_sets == (int)AS_ARRAY_LEN(sets)) return cli_usage_error(cmd, "too many --set options");
            sets[n_sets++] = tp == TRAIN_PRECISION_BF16 ? "train.precision=bf16" : "train.precision=f32";
            tprec_given = true;
            break;
        case O_DEVICE:
            if (n_sets == (int)AS_ARRAY_LEN(sets)) return cli_usage_error(cmd, "too many --set options");
            if (snprintf(device_set, sizeof device_set, "device=%s", optarg) >= (int)sizeof device_set)
                return cli_usage_error(cmd, "--device: '%s' is too long", optarg);
            sets[n_sets++] = device_set;
            break;
        case O_OUT: out = optarg; break;
        case O_QUIET: quiet = true; break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!config) return cli_usage_error(cmd, "--config is required");
    spin_config c;
    spin_config_default(&c);
    int rc = 1;
    if (spin_config_load(&c, config)) goto done;
    if (!tprec_given && cli_train_precision_env(&c.train_prec)) goto done;
    for (int i = 0; i < n_sets; i++)
        if (spin_config_set(&c, sets[i])) goto done;
    if (!c.model_path[0]) {
        // The default model, resolved here so RUN/config.yaml names the file used.
        const char *m = cli_default_model();
        if (access(m, R_OK) != 0) {
            as_error("model.path: the default model %s is not fetched; run `alphaspin fetch-model` or set model.path", m);
            goto done;
        }
        free(c.model_path);
        c.model_path = as_strdup(m);
    }
    char out_buf[1200];
    if (!out) {
        const char *base = strrchr(config, '/');
        base = base ? base + 1 : config;
        const char *dot = strrchr(base, '.');
        if (c.name[0]) snprintf(out_buf, sizeof out_buf, "runs/%s", c.name);
        else snprintf(out_buf, sizeof out_buf, "runs/%.*s", (int)(dot ? dot - base : (long)strlen(base)), base);
        out = out_buf;
    }
    spin_run_options o = {.out_dir = out, .quiet = quiet};
    const char *abort_after = getenv("ALPHASPIN_TEST_ABORT_AFTER");
    if (abort_after) o.on_phase = test_abort_after, o.user = (void *)abort_after;
    if (spin_run(&c, &o)) goto done;
    rc = 0;
    if (!quiet) {
        // The experiment ends with its table (and RUN/report.md, RUN/charts/), as `alphaspin report RUN`.
        fprintf(stderr, "alphaspin run: done; results in %s\n", out);
        char *rargv[] = {"report", (char *)out, NULL};
        rc = cmd_report(2, rargv);
    }
done:
    if (rc) cli_fail(cmd);
    spin_config_free(&c);
    return rc;
}
