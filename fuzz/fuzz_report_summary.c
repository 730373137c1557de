// libFuzzer target for the summary.json reader of `alphaspin report`
// (report_parse_summary: JSON, then the extraction of eval metrics, category
// sets, held-out and train metrics).  It must succeed or fail with a one-line
// message naming the file, never crash or leak.
// fuzz-libs: as_report as_util
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "util/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int iteration = 0;
    char *variant = NULL;
    if (report_parse_summary((const char *)data, size, "fuzz.json", &iteration, &variant) == AS_OK) {
        if (iteration < -1) abort();
        free(variant);
    } else {
        const char *e = as_last_error();
        if (strncmp(e, "fuzz.json: ", 11) || strchr(e, '\n')) {
            fprintf(stderr, "fuzz_report_summary: bad error line '%s'\n", e);
            abort();
        }
    }
    return 0;
}
