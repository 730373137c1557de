#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dist/dist.h"
#include "util/common.h"

const char *cli_home(void) {
    static char path[4096];
    const char *home = getenv("ALPHASPIN_HOME");
    if (home && *home) snprintf(path, sizeof path, "%s", home);
    else snprintf(path, sizeof path, "%s/.cache/alphaspin", getenv("HOME") ? getenv("HOME") : ".");
    return path;
}

const char *cli_default_model(void) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", cli_home());
    return path;
}

int cli_fail(const char *cmd) {
    fprintf(stderr, "alphaspin %s: %s\n", cmd, *as_last_error() ? as_last_error() : "failed");
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "alphaspin %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see `alphaspin %s --help`)\n", cmd);
    return 2;
}

bool cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cli_usage_error(cmd, "%s expects an integer in [%ld, %ld], got '%s'", opt, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        cli_usage_error(cmd, "%s expects a number in [%g, %g], got '%s'", opt, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

int cli_train_precision_env(train_precision *p) {
    const char *v = getenv("ALPHASPIN_TRAIN_PRECISION");
    if (!v || !*v) return AS_OK;
    if (train_precision_parse(v, p)) return as_error("ALPHASPIN_TRAIN_PRECISION: '%s' (expected f32 or bf16)", v);
    return AS_OK;
}

static const char *g_device;

void cli_set_device(const char *spec) { g_device = spec; }

int cli_load_model(const char *path, model **m, tokenizer **tok) {
    const as_backend *be = NULL;
    // Under mpirun, device cuda is the GPU of each process's local rank (dist/dist.h).
    if (g_device && !(be = dist_open_device(g_device))) return AS_FAIL;
    if (!path) {
        path = cli_default_model();
        if (access(path, R_OK) != 0)
            return as_error("default model %s not found; run `alphaspin fetch-model` first, or pass --model FILE.gguf or a Hugging Face folder", path);
    }
    if (model_load(m, path) != AS_OK) return AS_FAIL;
    if (be && model_use_backend(*m, be) != AS_OK) {
        model_free(*m);
        *m = NULL;
        return AS_FAIL;
    }
    if (tok && tokenizer_load(tok, (*m)->file) != AS_OK) {
        model_free(*m);
        *m = NULL;
        return AS_FAIL;
    }
    return AS_OK;
}

int cli_read_file_text(const char *path, char **out, size_t *len) {
    if (strcmp(path, "-") != 0) return as_read_file(path, out, len);
    // /dev/stdin reads a pipe, a file or a terminal alike; the error names what the user typed.
    if (as_read_file("/dev/stdin", out, len) != AS_OK) return as_error("--file -: cannot read standard input");
    return AS_OK;
}
