// libFuzzer target for the RFC 4180 CSV reader (src/eval/csv.c): any input
// parses or fails with a message, never crashes; on success every record has
// the header's field count and re-quoting the table parses back to the same cells.
// fuzz-libs: as_eval
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/csv.h"
#include "util/common.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_csv: property violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    csv_table t;
    if (csv_parse((const char *)data, size, "fuzz.csv", &t) != AS_OK) {
        check(as_last_error()[0] != 0, "failure without a message");
        return 0;
    }
    check(t.n_cols >= 1 && t.n_rows >= 0, "table shape");
    // Write every cell quoted (quotes doubled), parse again, compare.
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    for (int64_t r = -1; r < t.n_rows; r++)
        for (int32_t c = 0; c < t.n_cols; c++) {
            const char *s = r < 0 ? t.header[c] : csv_cell(&t, r, c);
            size_t need = n + 2 * strlen(s) + 4;
            if (need > cap) cap = 2 * need, out = realloc(out, cap);
            out[n++] = '"';
            for (const char *p = s; *p; p++) {
                if (*p == '"') out[n++] = '"';
                out[n++] = *p;
            }
            out[n++] = '"';
            out[n++] = c + 1 < t.n_cols ? ',' : '\n';
        }
    csv_table u;
    check(csv_parse(out, n, "requoted.csv", &u) == AS_OK, "re-quoted table parses");
    check(u.n_cols == t.n_cols && u.n_rows == t.n_rows, "re-quoted shape");
    for (int64_t k = 0; k < (int64_t)t.n_cols * (t.n_rows + 1); k++) check(!strcmp(t.header[k], u.header[k]), "re-quoted cells");
    csv_free(&u);
    csv_free(&t);
    free(out);
    return 0;
}
