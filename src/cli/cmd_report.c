// alphaspin report: the table and charts of one or more runs (src/report/).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "report/report.h"
#include "util/common.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin report RUN [RUN ...] [--out DIR]\n\n"
            "Reads RUN/iter_<k>/summary.json of each run folder written by `alphaspin run` and writes\n"
            "DIR/report.md: a Markdown table like the paper's Table 1 (a row per variant and iteration;\n"
            "columns: every evaluation score as task/metric, their average, the held-out metrics) and\n"
            "SVG charts in DIR/charts/ (each metric across iterations, one line per run; a radar chart\n"
            "per category set, e.g. MT-Bench's eight categories or MMLU's subject groups).  The table\n"
            "is also printed.  Iterations without summary.json (in progress or interrupted) are skipped,\n"
            "and said so on stderr.\n\n"
            "  --out DIR   output folder (default: the first RUN)\n"
            "  --help      this text\n");
}

int cmd_report(int argc, char **argv) {
    const char *cmd = "report";
    enum { O_OUT = 1, O_HELP };
    static const struct option opts[] = {{"out", required_argument, 0, O_OUT}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    const char *out = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_OUT: out = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error(cmd, "name at least one run folder");
    const int n_runs = argc - optind;
    report *r;
    if (report_load(&r, (const char *const *)argv + optind, n_runs) != AS_OK) return cli_fail(cmd);
    for (int i = 0; i < r->n_notes; i++) fprintf(stderr, "alphaspin report: %s\n", r->notes[i]);
    if (!out) out = argv[optind];
    if (report_write(r, out) != AS_OK) {
        report_free(r);
        return cli_fail(cmd);
    }
    char *table = report_table_markdown(r);
    fputs(table, stdout);
    free(table);
    fprintf(stderr, "report: %d rows from %d run%s -> %s/report.md\n", r->n_rows, n_runs, n_runs == 1 ? "" : "s", out);
    report_free(r);
    return 0;
}
