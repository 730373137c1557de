// Reading the reference tools' JSON test vectors: float32 tensors are stored as
// base64 of their little-endian bytes (tools/ref_model.py, tools/ref_train.py).
#ifndef AS_TEST_VECTORS_H
#define AS_TEST_VECTORS_H

#include "test_common.h"

#include "util/common.h"

static inline int as_test_b64_val(char ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

// Base64 little-endian float32 -> heap array (free()); *n_out = number of floats.
static inline float *as_test_b64_floats(const char *s, size_t *n_out) {
    const size_t len = strlen(s);
    uint8_t *buf = as_malloc(len / 4 * 3 + 8);
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && s[i] != '='; i++) {
        const int v = as_test_b64_val(s[i]);
        assert_true(v >= 0);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (uint8_t)(acc >> bits);
        }
    }
    assert_int_equal(n % 4, 0);
    *n_out = n / 4;
    float *f = as_malloc(n + 4);
    memcpy(f, buf, n);
    free(buf);
    return f;
}

#endif
