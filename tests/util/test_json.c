// util/json: arbitrary bytes become JSON that strict parsers read.
//  - Unicode's own example of "U+FFFD substitution of maximal subparts" (table
//    3-8) and the edge cases around it (overlongs, surrogates, > U+10FFFF,
//    sequences cut at the end);
//  - property tests on random byte strings: the output is well-formed UTF-8 by a
//    validator written here from the definition (not the library's decoder), the
//    replacement equals a reference built from that validator, the string literal
//    passes a strict JSON string grammar and cJSON reads it back;
//  - valid UTF-8 round-trips unchanged; cJSON trees print as cJSON prints them
//    when their strings are valid, and as valid UTF-8 when they are not.
#include "test_common.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "util/common.h"
#include "util/json.h"
#include "util/rng.h"

// ---- an independent validator: decode by the lead byte's bit pattern, then
// reject overlong forms, surrogates and code points above U+10FFFF ----

static size_t strict_seq(const unsigned char *s, size_t n) { // length of the valid sequence at s, 0 if none
    const unsigned c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
    return len;
}

static bool strict_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = strict_seq(u + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

// Reference replacement: where no valid sequence starts, the maximal subpart is the
// longest prefix (2 or 3 bytes) that some well-formed sequence starts with -- found
// by padding the prefix with continuation bytes -- or else the one byte.
static char *reference_replace(const char *s, size_t n, size_t *out_len) {
    const unsigned char *u = (const unsigned char *)s;
    char *out = malloc(3 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = strict_seq(u + i, n - i);
        if (k) {
            memcpy(out + o, s + i, k), o += k, i += k;
            continue;
        }
        size_t sub = 1;
        for (size_t p = 2; p <= 3 && p <= n - i; p++) {
            for (size_t L = p + 1; L <= 4; L++) {
                unsigned char t[4];
                memcpy(t, u + i, p);
                memset(t + p, 0x80, L - p);
                if (strict_seq(t, L) == L) sub = p;
            }
        }
        memcpy(out + o, "\xEF\xBF\xBD", 3), o += 3, i += sub;
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F)), o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// RFC 8259's string grammar, strictly: the whole of s[0..n) is one literal, no raw
// byte below 0x20, only the listed escapes, \u surrogates in pairs.  Decodes into
// out (n bytes suffice); returns false on any violation.
static bool strict_json_string(const char *s, size_t n, char *out, size_t *out_len) {
    if (n < 2 || s[0] != '"' || s[n - 1] != '"' || !strict_utf8(s, n)) return false;
    size_t o = 0;
    for (size_t i = 1; i < n - 1; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"') return false;
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (++i >= n - 1) return false;
        const char *simple = strchr("\"\\/bfnrt", s[i]);
        if (s[i] && simple) {
            out[o++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (s[i] != 'u' || i + 4 >= n - 1) return false;
        uint32_t cp = 0;
        for (int k = 1; k <= 4; k++) {
            int h = hexval(s[i + k]);
            if (h < 0) return false;
            cp = cp << 4 | (uint32_t)h;
        }
        i += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 6 >= n - 1 || s[i + 1] != '\\' || s[i + 2] != 'u') return false;
            uint32_t lo = 0;
            for (int k = 3; k <= 6; k++) {
                int h = hexval(s[i + k]);
                if (h < 0) return false;
                lo = lo << 4 | (uint32_t)h;
            }
            if (lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        o += put_utf8(out + o, cp);
    }
    *out_len = o;
    return true;
}

static char *utf8_of(const char *s, size_t n, size_t *len) {
    as_sbuf b = {0};
    as_sb_utf8(&b, s, n);
    *len = b.len;
    return b.s;
}

static void check_replace(const char *in, size_t n, const char *want) {
    size_t len;
    char *got = utf8_of(in, n, &len);
    if (len != strlen(want) || memcmp(got, want, len) != 0) fail_msg("replacement of %zu bytes: got '%s', want '%s'", n, got, want);
    free(got);
    assert_int_equal(as_utf8_valid(in, n), strcmp(in, want) == 0 && strlen(in) == n);
}

#define R "\xEF\xBF\xBD"

static void test_maximal_subparts(void **state) {
    (void)state;
    // Unicode 15, table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
    check_replace("a\xF1\x80\x80\xE1\x80\xC2" "b\x80" "c\x80\xBF" "d", 13, "a" R R R "b" R "c" R R "d");
    check_replace("\xC0\xAF", 2, R R);                  // overlong '/': C0 is never a lead
    check_replace("\xE0\x80\xAF", 3, R R R);            // overlong: E0 needs A0..BF next
    check_replace("\xED\xA0\x80", 3, R R R);            // a surrogate (U+D800)
    check_replace("\xF4\x90\x80\x80", 4, R R R R);      // U+110000
    check_replace("\xF5\x80", 2, R R);                  // F5 is never a lead
    check_replace("\xD8", 1, R);                        // a lone lead, as a token that ends inside a character
    check_replace("x\xE2\x82", 3, "x" R);               // cut at the end: one U+FFFD for the subpart
    check_replace("\xE2\x82(", 3, R "(");               // the ASCII byte is never swallowed
    check_replace("\xF0\x9F\x98", 3, R);
    check_replace("\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80"); // U+1F600, kept
    check_replace("\xF4\x8F\xBF\xBF", 4, "\xF4\x8F\xBF\xBF"); // U+10FFFF, kept
    check_replace("\xED\x9F\xBF", 3, "\xED\x9F\xBF");         // U+D7FF, kept
    check_replace("\xC3\xA9", 2, "\xC3\xA9");
    check_replace("\xC3", 1, R);
    check_replace("\xA9", 1, R);
    check_replace("", 0, "");
    // NUL is U+0000: valid UTF-8, and escaped in a JSON string.
    as_sbuf b = {0};
    as_sb_json_string(&b, "a\0\x01\x1F\"\\\n\t\r\b\f\x7F" "\xC3", 13);
    assert_string_equal(b.s, "\"a\\u0000\\u0001\\u001f\\\"\\\\\\n\\t\\r\\b\\f\x7F" R "\"");
    free(b.s);
}

// Bytes drawn to hit the interesting classes often: ASCII (quotes, backslash,
// controls, NUL), continuation bytes, every kind of lead byte, never-valid bytes.
static unsigned char random_byte(as_rng *r) {
    static const unsigned char special[] = {0x00, 0x01, 0x0A, 0x1F, '"', '\\', '/', 'a', 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                            0xC1, 0xC2, 0xC3, 0xD8, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
    return as_rng_below(r, 2) ? special[as_rng_below(r, sizeof special)] : (unsigned char)as_rng_below(r, 256);
}

static void test_random_bytes(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 20);
    char in[64], dec[512];
    for (int it = 0; it < 50000; it++) {
        const size_t n = (size_t)as_rng_below(&r, sizeof in);
        for (size_t i = 0; i < n; i++) in[i] = (char)random_byte(&r);
        // Replacement: well-formed, equal to the reference, unchanged iff the input was valid.
        size_t len, rlen;
        char *got = utf8_of(in, n, &len), *want = reference_replace(in, n, &rlen);
        if (len != rlen || memcmp(got, want, len) != 0) fail_msg("iteration %d: replacement differs from the reference", it);
        assert_true(strict_utf8(got, len));
        assert_int_equal(as_utf8_valid(in, n), strict_utf8(in, n));
        if (strict_utf8(in, n)) assert_true(len == n && memcmp(got, in, n) == 0);
        // String literal: strict grammar, decodes to the replaced text (NULs included).
        as_sbuf b = {0};
        as_sb_json_string(&b, in, n);
        size_t dlen;
        if (!strict_json_string(b.s, b.len, dec, &dlen)) fail_msg("iteration %d: not a strict JSON string: %s", it, b.s);
        assert_true(dlen == len && memcmp(dec, got, len) == 0);
        // cJSON reads it (its strings stop at a NUL, so compare up to the first one).
        cJSON *j = cJSON_ParseWithLength(b.s, b.len);
        assert_true(cJSON_IsString(j));
        assert_true(strlen(j->valuestring) == strnlen(got, len) && memcmp(j->valuestring, got, strlen(j->valuestring)) == 0);
        cJSON_Delete(j);
        // The exact bytes.
        b.len = 0;
        as_sb_json_bytes(&b, in, n);
        j = cJSON_Parse(b.s);
        assert_true(cJSON_IsArray(j));
        assert_int_equal(cJSON_GetArraySize(j), n);
        for (size_t i = 0; i < n; i++) assert_int_equal(cJSON_GetArrayItem(j, (int)i)->valueint, (unsigned char)in[i]);
        cJSON_Delete(j);
        free(b.s), free(got), free(want);
    }
}

// Random valid UTF-8 (every length class, the edges of each range, no surrogates)
// passes through unchanged.
static void test_valid_roundtrip(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 21);
    static const uint32_t lo[] = {0x01, 0x80, 0x800, 0xE000, 0x10000}, hi[] = {0x7F, 0x7FF, 0xD7FF, 0xFFFF, 0x10FFFF};
    char in[256], dec[1024];
    for (int it = 0; it < 20000; it++) {
        size_t n = 0;
        const int k = (int)as_rng_below(&r, 40);
        for (int c = 0; c < k; c++) {
            const int cls = (int)as_rng_below(&r, 5);
            const uint32_t span = hi[cls] - lo[cls] + 1, pick = (uint32_t)as_rng_below(&r, 4);
            const uint32_t cp = pick == 0 ? lo[cls] : pick == 1 ? hi[cls] : lo[cls] + (uint32_t)as_rng_below(&r, span);
            n += put_utf8(in + n, cp);
        }
        assert_true(strict_utf8(in, n));
        assert_true(as_utf8_valid(in, n));
        size_t len;
        char *got = utf8_of(in, n, &len);
        assert_true(len == n && memcmp(got, in, n) == 0);
        free(got);
        as_sbuf b = {0};
        as_sb_json_string(&b, in, n);
        size_t dlen;
        assert_true(strict_json_string(b.s, b.len, dec, &dlen));
        assert_true(dlen == n && memcmp(dec, in, n) == 0);
        free(b.s);
    }
}

static void random_cstring(as_rng *r, char *s, size_t cap) { // no NUL: cJSON's strings are C strings
    const size_t n = (size_t)as_rng_below(r, cap);
    for (size_t i = 0; i < n; i++) {
        unsigned char c;
        while ((c = random_byte(r)) == 0) {}
        s[i] = (char)c;
    }
    s[n] = 0;
}

static bool strings_match(const cJSON *a, const cJSON *b, bool exact) { // b's strings = a's, replaced
    if (a->type != b->type) return false;
    char *want = NULL;
    size_t len;
    if (a->string) {
        want = exact ? as_strdup(a->string) : utf8_of(a->string, strlen(a->string), &len);
        const bool ok = b->string && !strcmp(want, b->string);
        free(want);
        if (!ok) return false;
    }
    if (cJSON_IsString(a)) {
        want = exact ? as_strdup(a->valuestring) : utf8_of(a->valuestring, strlen(a->valuestring), &len);
        const bool ok = !strcmp(want, b->valuestring);
        free(want);
        return ok;
    }
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next)
        if (!strings_match(x, y, exact)) return false;
    return !x && !y;
}

static void test_print_trees(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 22);
    for (int it = 0; it < 3000; it++) {
        cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        char key[24], val[48];
        bool valid = true;
        for (int k = 0; k < 4; k++) {
            random_cstring(&r, key, sizeof key);
            random_cstring(&r, val, sizeof val);
            valid = valid && strict_utf8(key, strlen(key)) && strict_utf8(val, strlen(val));
            cJSON_AddItemToObject(o, key, cJSON_CreateString(val));
            cJSON_AddItemToArray(arr, cJSON_CreateString(val));
        }
        cJSON_AddNumberToObject(o, "n", (double)it / 7);
        cJSON_AddItemToObject(o, "list", arr);
        cJSON_AddNullToObject(o, "nothing");
        for (int fmt = 0; fmt < 2; fmt++) {
            char *s = as_json_print(o, fmt), *plain = fmt ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
            assert_true(strict_utf8(s, strlen(s)));
            if (valid) assert_string_equal(s, plain); // valid trees print exactly as cJSON prints them
            cJSON *back = cJSON_Parse(s);
            assert_non_null(back);
            assert_true(strings_match(o, back, false));
            cJSON_Delete(back);
            free(s), free(plain);
        }
        cJSON_Delete(o);
    }
}

static void test_bytes_text_and_numbers(void **state) {
    (void)state;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", 99);
    as_json_add_bytes_text(o, "token", "bytes", "\0\xC3", 2);
    char *s = as_json_print(o, false);
    assert_string_equal(s, "{\"id\":99,\"token\":\"\\u0000" R "\",\"bytes\":[0, 195]}");
    cJSON *back = cJSON_Parse(s);
    assert_non_null(back);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(back, "bytes")), 2);
    cJSON_Delete(back), cJSON_Delete(o), free(s);
    as_sbuf b = {0};
    as_sb_json_num(&b, 9, 1.5);
    as_sb_add(&b, " ", 1);
    as_sb_json_num(&b, 9, NAN);
    as_sb_add(&b, " ", 1);
    as_sb_json_num(&b, 6, -INFINITY);
    assert_string_equal(b.s, "1.5 null null");
    free(b.s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maximal_subparts),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_valid_roundtrip),
        cmocka_unit_test(test_print_trees),
        cmocka_unit_test(test_bytes_text_and_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
