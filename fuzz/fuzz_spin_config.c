// fuzz-libs: as_spin
// The run configuration's YAML reader (src/spin/config.c): any bytes must give
// a configuration or one error line, never a crash or a leak; an accepted
// configuration must write resolved YAML that parses again.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spin/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spin_config c;
    spin_config_default(&c);
    if (spin_config_parse(&c, (const char *)data, size, "fuzz.yaml") == 0) {
        char *y = spin_config_to_yaml(&c);
        spin_config d;
        spin_config_default(&d);
        if (spin_config_parse(&d, y, strlen(y), "resolved.yaml") != 0) abort();
        char *y2 = spin_config_to_yaml(&d);
        if (strcmp(y, y2) != 0) abort();
        free(y), free(y2);
        spin_config_free(&d);
    }
    spin_config_free(&c);
    return 0;
}
