// The report of one or more runs of `alphaspin run`: a Markdown table like
// the paper's Table 1 and SVG charts, from RUN/iter_*/summary.json only (the
// run-folder contract; see `alphaspin report --help`).
//
// What is read from each summary.json:
//   "variant" (default: the run folder's basename), "iteration" (must match
//   the folder iter_<k>), "eval": {"<task>": {"<metric>": number, ...}, ...}
//   (or lm-evaluation-harness's {"results": {...}} around it), "heldout",
//   "train": {"<metric>": number, ...}.  Null values count as missing.
//
// How evaluation results become table columns and category sets:
//   - a metric "<m>,none" is named "<m>" (lm-evaluation-harness's filter
//     suffix); other filters stay ("exact_match,strict-match"); "alias",
//     strings, "*_stderr*" entries and counts (n_subsets, n_samples,
//     num_fewshot, sample_len) are skipped;
//   - every other number is a column "<task>/<metric>";
//   - categories (radar charts) come from: a nested object of numbers
//     ("mt_bench": {"categories": {"writing": 8.1, ...}}); metrics
//     "<m>_<category>" beside a metric "<m>" of the same task (MT-Bench's
//     "score_writing,none" beside "score,none"); MT-Bench's eight category
//     names as metrics of a task named mt_bench*; and tasks "<task>_<sub>" or
//     "<task>/<sub>" beside a task "<task>" (lm-eval's "mmlu_anatomy" beside
//     "mmlu"), scored by their primary metric.  MMLU's 57 subjects are grouped
//     into lm-evaluation-harness's four categories (stem, humanities,
//     social_sciences, other), the mean of the subjects present;
//   - the primary metric of a task is the first present of acc_norm, mc2,
//     exact_match,strict-match, exact_match, acc, mc1, score, else its first
//     column; "average" is the mean of the primary metrics of every task
//     except MT-Bench's (the Open LLM Leaderboard's average), shown for a row
//     that has all of them.
#ifndef AS_REPORT_H
#define AS_REPORT_H

#include <stddef.h>
#include <stdint.h>

typedef enum report_metric_kind {
    REPORT_EVAL = 0,   // "eval/<task>/<metric>"
    REPORT_AVERAGE,    // "average"
    REPORT_HELDOUT,    // "heldout/<metric>"
    REPORT_TRAIN,      // "train/<metric>"
} report_metric_kind;

typedef struct report_metric {
    report_metric_kind kind;
    char *name;        // "arc_challenge/acc_norm", "average", "nll_per_token", "rewards/margins"
    char *task;        // REPORT_EVAL: the task; else NULL
    int primary;       // REPORT_EVAL: the task's primary metric (enters the average)
} report_metric;

typedef struct report_catset {
    char *name;        // "mt_bench", "mmlu"
    int n_cat;
    char **cats;       // category names (axes of the radar chart)
    double *values;    // (n_rows, n_cat), NAN where missing
} report_catset;

typedef struct report_row {
    int run;           // index into runs
    int iteration;
} report_row;

typedef struct report {
    int n_runs;
    char **run_paths;
    char **variants;   // per run (made distinct: "name (2)" for a repeated name)
    int n_rows;
    report_row *rows;  // run by run, iterations ascending
    int n_metrics;
    report_metric *metrics; // eval columns, average, held-out, train (in that order)
    double *values;    // (n_rows, n_metrics), NAN where missing
    int n_catsets;
    report_catset *catsets;
    int n_notes;
    char **notes;      // skipped iterations, one line each ("RUN/iter_3: ... skipped")
    int n_avg_tasks;   // tasks in the average (0: no average column)
} report;

// Reads runs[0..n_runs-1].  An iteration folder without summary.json is
// skipped with a note (the run is in progress or was interrupted); a
// malformed summary.json, a run folder that cannot be read or a run with no
// complete iteration is an error: -1 + as_error naming the file (and field).
int report_load(report **out, const char *const *runs, int n_runs);
void report_free(report *r);

// Parses one summary.json text and extracts its metrics and categories with
// the checks report_load makes (exposed for tests and the fuzzer).  Sets
// *iteration (-1 when absent) and *variant (heap string, NULL when absent;
// variant may be NULL).  -1 + as_error naming `path` and the field.
int report_parse_summary(const char *text, size_t len, const char *path, int *iteration, char **variant);

// The Markdown table (header, alignment row, one row per iteration, then a
// line saying what the average is), heap string.
char *report_table_markdown(const report *r);

// Writes out_dir/report.md and out_dir/charts/*.svg (atomically, file by
// file); out_dir is created if needed.
int report_write(const report *r, const char *out_dir);

// ---- SVG (svg.c) ----

// A line chart: series i has n[i] points (x[i][k], y[i][k]); NAN y values are
// left out.  Heap string, a complete standalone SVG document.
char *report_svg_line(const char *title, const char *x_label, const char *y_label, int n_series, const char *const *names,
                      const int *n, const double *const *x, const double *const *y);
// A radar chart over n_axes >= 3 axes from 0 (centre) to max (rim); series i
// has values[i * n_axes + a] (NAN: drawn at 0 and said in the title tooltip).
char *report_svg_radar(const char *title, int n_axes, const char *const *axes, int n_series, const char *const *names,
                       const double *values, double max);

#endif
