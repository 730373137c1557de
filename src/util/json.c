#include "util/json.h"

#include <math.h>
#include <string.h>

// Well-formed UTF-8 (Unicode 15, table 3-7): after the lead byte, the second
// byte's range depends on the lead (E0: A0..BF excludes overlong forms, ED:
// 80..9F excludes the surrogates, F0: 90..BF overlong, F4: 80..8F above
// U+10FFFF); every later byte is 80..BF.  C0, C1 and F5..FF never occur.  A
// maximal subpart is the longest prefix of a well-formed sequence, so the
// scan stops at the first byte out of range and replaces what it read.
size_t as_utf8_next(const unsigned char *s, size_t n, int32_t *cp) {
    const unsigned c = s[0];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    int32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = (int32_t)(c & 0x1F);
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = (int32_t)(c & 0x0F);
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = (int32_t)(c & 0x07);
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *cp = -1;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *cp = -1;
            return i;
        }
        v = (v << 6) | (int32_t)(s[i] & 0x3F);
        lo = 0x80, hi = 0xBF;
    }
    *cp = v;
    return len;
}

bool as_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) { // ASCII runs are most of every text
            i++;
            continue;
        }
        int32_t cp;
        i += as_utf8_next(u + i, n - i, &cp);
        if (cp < 0) return false;
    }
    return true;
}

void as_sb_utf8(as_sbuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0; // start of the pending run of valid bytes
    for (size_t i = 0; i < n;) {
        int32_t cp = 0;
        const size_t k = u[i] < 0x80 ? 1 : as_utf8_next(u + i, n - i, &cp);
        if (u[i] >= 0x80 && cp < 0) {
            as_sb_add(b, s + run, i - run);
            as_sb_add(b, AS_UTF8_REPLACEMENT, 3);
            run = i + k;
        }
        i += k;
    }
    as_sb_add(b, s + run, n - run);
}

void as_sb_json_string(as_sbuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    as_sb_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        const size_t k = as_utf8_next(u + i, n - i, &cp);
        if (cp >= 0x20 && cp != '"' && cp != '\\') {
            i += k;
            continue;
        }
        as_sb_add(b, s + run, i - run);
        switch (cp) {
        case -1: as_sb_add(b, AS_UTF8_REPLACEMENT, 3); break;
        case '"': as_sb_add(b, "\\\"", 2); break;
        case '\\': as_sb_add(b, "\\\\", 2); break;
        case '\b': as_sb_add(b, "\\b", 2); break;
        case '\f': as_sb_add(b, "\\f", 2); break;
        case '\n': as_sb_add(b, "\\n", 2); break;
        case '\r': as_sb_add(b, "\\r", 2); break;
        case '\t': as_sb_add(b, "\\t", 2); break;
        default: as_sb_printf(b, "\\u%04x", (unsigned)cp); break;
        }
        i += k;
        run = i;
    }
    as_sb_add(b, s + run, n - run);
    as_sb_add(b, "\"", 1);
}

void as_sb_json_num(as_sbuf *b, int digits, double v) {
    if (isfinite(v)) as_sb_printf(b, "%.*g", digits, v);
    else as_sb_add(b, "null", 4);
}

void as_sb_json_bytes(as_sbuf *b, const void *s, size_t n) {
    const unsigned char *u = s;
    as_sb_add(b, "[", 1);
    for (size_t i = 0; i < n; i++) as_sb_printf(b, i ? ", %u" : "%u", (unsigned)u[i]);
    as_sb_add(b, "]", 1);
}

char *as_json_print(const cJSON *item, bool formatted) {
    char *s = formatted ? cJSON_Print(item) : cJSON_PrintUnformatted(item);
    if (!s) as_die("out of memory printing JSON");
    const size_t n = strlen(s);
    if (as_utf8_valid(s, n)) return s;
    as_sbuf b = {0};
    as_sb_utf8(&b, s, n);
    free(s);
    return b.s;
}

void as_json_add_bytes_text(cJSON *o, const char *key, const char *bytes_key, const char *s, size_t n) {
    as_sbuf b = {0};
    as_sb_json_string(&b, s, n);
    if (!cJSON_AddRawToObject(o, key, b.s)) as_die("out of memory building JSON");
    if (bytes_key) {
        b.len = 0;
        as_sb_json_bytes(&b, s, n);
        if (!cJSON_AddRawToObject(o, bytes_key, b.s)) as_die("out of memory building JSON");
    }
    free(b.s);
}
