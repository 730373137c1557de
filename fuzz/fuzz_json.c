// libFuzzer target for util/json (the JSON every writer prints): for any bytes,
//  - as_sb_json_string gives one JSON string literal in well-formed UTF-8 that
//    cJSON reads back as the bytes with ill-formed sequences replaced;
//  - replacing is idempotent and keeps valid UTF-8 as is;
//  - when the input is JSON as cJSON reads it (cJSON lets raw invalid bytes into
//    its strings), as_json_print of the tree is well-formed UTF-8 that parses back.
// The validator here is written from the definition, not the library's decoder.
// fuzz-libs: as_util
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"
#include "util/json.h"

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_json: property violated: %s\n", what);
        abort();
    }
}

static int strict_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (len > n - i) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    as_sbuf fixed = {0}, again = {0}, lit = {0};
    as_sb_utf8(&fixed, in, size);
    check(strict_utf8((const unsigned char *)fixed.s, fixed.len), "replacement is well-formed");
    check(!strict_utf8(data, size) || (fixed.len == size && !memcmp(fixed.s, in, size)), "valid UTF-8 unchanged");
    check(as_utf8_valid(in, size) == strict_utf8(data, size), "as_utf8_valid agrees with the definition");
    as_sb_utf8(&again, fixed.s, fixed.len);
    check(again.len == fixed.len && !memcmp(again.s, fixed.s, fixed.len), "replacement is idempotent");

    as_sb_json_string(&lit, in, size);
    check(strict_utf8((const unsigned char *)lit.s, lit.len), "string literal is well-formed");
    for (size_t i = 0; i < lit.len; i++) check((unsigned char)lit.s[i] >= 0x20, "no raw control byte in a literal");
    cJSON *j = cJSON_ParseWithLength(lit.s, lit.len);
    check(cJSON_IsString(j), "cJSON reads the literal");
    const size_t upto = strnlen(fixed.s, fixed.len); // cJSON's strings end at a NUL (\u0000)
    check(strlen(j->valuestring) == upto && !memcmp(j->valuestring, fixed.s, upto), "literal decodes to the replaced bytes");
    cJSON_Delete(j);

    j = cJSON_ParseWithLength(in, size);
    if (j) {
        for (int fmt = 0; fmt < 2; fmt++) {
            char *s = as_json_print(j, fmt);
            check(strict_utf8((const unsigned char *)s, strlen(s)), "as_json_print is well-formed");
            cJSON *back = cJSON_Parse(s);
            check(back != NULL, "as_json_print parses back");
            cJSON_Delete(back);
            free(s);
        }
        cJSON_Delete(j);
    }
    free(fixed.s), free(again.s), free(lit.s);
    return 0;
}
