// alphaspin make-data: data sets written by the project itself (verifiable
// tasks), so an experiment needs nothing downloaded.  Generators: arith
// (src/data/arith.h).
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "data/arith.h"
#include "util/common.h"

static void usage(FILE *out) {
    data_arith_config d;
    data_arith_config_default(&d);
    fprintf(out,
            "usage: alphaspin make-data arith --out FILE.jsonl [--n N] [--seed S] [--level L] [--style S]\n\n"
            "Writes N arithmetic questions with worked answers as JSONL {\"question\", \"answer\"} (an SFT\n"
            "layout that `alphaspin sft` and `alphaspin run` read).  Each answer works the problem out one\n"
            "operation per line and ends with \"#### <n>\", GSM8K's convention, so GSM8K's answer\n"
            "extraction scores generated answers.  The same seed gives the same file; the first K items of\n"
            "a larger N are the same K items, and the questions of one file are distinct.\n\n"
            "  --n N        items (default %lld)\n"
            "  --seed S     default %llu\n"
            "  --level L    1: two operands, + and -, up to 20;  2: two or three operands, +, -, *,\n"
            "               up to 50 (multipliers up to 9);  3: three operands up to 100, multipliers\n"
            "               up to 12 (default %d)\n"
            "  --style S    word (short stories) | plain (\"What is (7 + 5) * 3?\") | mixed (default %s)\n"
            "  --out FILE   output JSONL (written atomically)\n"
            "  --help       this text\n",
            (long long)d.n, (unsigned long long)d.seed, d.level, data_arith_style_name(d.style));
}

int cmd_make_data(int argc, char **argv) {
    const char *cmd = "make-data";
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') return cli_usage_error(cmd, "name a generator (arith)");
    if (strcmp(argv[1], "arith") != 0) return cli_usage_error(cmd, "unknown generator '%s' (expected arith)", argv[1]);
    enum { O_N = 1, O_SEED, O_LEVEL, O_STYLE, O_OUT, O_HELP };
    static const struct option opts[] = {{"n", required_argument, 0, O_N},         {"seed", required_argument, 0, O_SEED},
                                         {"level", required_argument, 0, O_LEVEL}, {"style", required_argument, 0, O_STYLE},
                                         {"out", required_argument, 0, O_OUT},     {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    data_arith_config c;
    data_arith_config_default(&c);
    const char *out = NULL;
    long l;
    int ch;
    optind = 1;
    argc--, argv++; // past the generator's name
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_N: if (!cli_parse_int(cmd, "--n", optarg, 1, 1L << 28, &l)) return 2; c.n = l; break;
        case O_SEED: if (!cli_parse_int(cmd, "--seed", optarg, 0, __LONG_MAX__, &l)) return 2; c.seed = (uint64_t)l; break;
        case O_LEVEL: if (!cli_parse_int(cmd, "--level", optarg, 1, 3, &l)) return 2; c.level = (int)l; break;
        case O_STYLE: {
            const int s = data_arith_style_parse(optarg);
            if (s < 0) return cli_usage_error(cmd, "--style must be word, plain or mixed, got '%s'", optarg);
            c.style = (data_arith_style)s;
            break;
        }
        case O_OUT: out = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error(cmd, "--out is required");
    data_arith_item *items;
    if (data_arith_generate(&c, &items) != AS_OK) return cli_fail(cmd);
    const int rc = data_arith_write_jsonl(out, items, c.n);
    data_arith_free(items, c.n);
    if (rc != AS_OK) return cli_fail(cmd);
    fprintf(stderr, "make-data: %lld arith questions (level %d, %s, seed %llu) -> %s\n", (long long)c.n, c.level,
            data_arith_style_name(c.style), (unsigned long long)c.seed, out);
    return 0;
}
