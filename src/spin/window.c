#include "spin/window.h"

#include <string.h>

const char *spin_mixing_name(spin_mixing m) { return m == SPIN_MIX_CONCAT ? "concat" : "sample"; }

int spin_mixing_parse(const char *s, spin_mixing *out) {
    if (strcmp(s, "sample") == 0) { *out = SPIN_MIX_SAMPLE; return 0; }
    if (strcmp(s, "concat") == 0) { *out = SPIN_MIX_CONCAT; return 0; }
    return -1;
}

int32_t spin_window_first(int32_t t, int32_t tau) {
    if (tau == SPIN_TAU_INF || tau > t) return 0;
    return t - tau + 1;
}

int64_t spin_window_counts(spin_mixing mix, int32_t t, int32_t tau, int64_t n, int64_t *counts) {
    const int32_t first = spin_window_first(t, tau), size = t - first + 1;
    int64_t total = 0;
    for (int32_t i = 0; i < size; i++) {
        if (mix == SPIN_MIX_CONCAT) counts[i] = n;
        else counts[i] = n / size + (i >= size - (int32_t)(n % size) ? 1 : 0); // remainder to the newest
        total += counts[i];
    }
    return total;
}

int64_t spin_window_fresh(spin_mixing mix, int32_t t, int32_t tau, int64_t n, int32_t j) {
    const int32_t first = spin_window_first(t, tau);
    if (j < first || j > t) return 0;
    if (mix == SPIN_MIX_CONCAT) return j == t ? n : 0;
    const int32_t size = t - first + 1, i = j - first;
    return n / size + (i >= size - (int32_t)(n % size) ? 1 : 0);
}
