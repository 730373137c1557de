// Python's text forms that lm-evaluation-harness's sample logs contain, so
// alphaspin's --log-samples can be compared with lm-eval's line by line:
// str(float) (the shortest repr that reads back), json.dumps(doc, indent=2,
// ensure_ascii=False) for doc_hash, and hashlib.sha256(s).hexdigest().
#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_internal.h"
#include "util/common.h"

void eval_py_float(double x, char out[32]) {
    if (isnan(x)) { strcpy(out, "nan"); return; }
    if (isinf(x)) { strcpy(out, x > 0 ? "inf" : "-inf"); return; }
    if (x == 0) { strcpy(out, signbit(x) ? "-0.0" : "0.0"); return; }
    // The fewest significant digits that read back as x (repr's rule).
    char buf[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x) break;
    }
    // buf = "[-]d.ddde[+-]XX": digits and decimal exponent.
    char digits[24];
    int nd = 0;
    const char *p = buf;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    const int e = atoi(p + 1);
    char *o = out;
    if (neg) *o++ = '-';
    // Python: positional for -4 <= exponent < 16, else d.ddde+XX.
    if (e >= -4 && e < 16) {
        if (e < 0) {
            o += sprintf(o, "0.");
            for (int i = 0; i < -e - 1; i++) *o++ = '0';
            o += sprintf(o, "%s", digits);
        } else if (nd <= e + 1) {
            o += sprintf(o, "%s", digits);
            for (int i = nd; i < e + 1; i++) *o++ = '0';
            o += sprintf(o, ".0");
        } else {
            o += sprintf(o, "%.*s.%s", e + 1, digits, digits + e + 1);
        }
    } else {
        *o++ = digits[0];
        if (nd > 1) o += sprintf(o, ".%s", digits + 1);
        o += sprintf(o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    *o = 0;
}

static void dump_string(as_sbuf *b, const char *s) {
    as_sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': as_sb_puts(b, "\\\""); break;
        case '\\': as_sb_puts(b, "\\\\"); break;
        case '\n': as_sb_puts(b, "\\n"); break;
        case '\r': as_sb_puts(b, "\\r"); break;
        case '\t': as_sb_puts(b, "\\t"); break;
        case '\b': as_sb_puts(b, "\\b"); break;
        case '\f': as_sb_puts(b, "\\f"); break;
        default:
            if (*p < 0x20) as_sb_printf(b, "\\u%04x", *p);
            else as_sb_add(b, (const char *)p, 1);
        }
    }
    as_sb_add(b, "\"", 1);
}

static void dump(as_sbuf *b, const cJSON *v, int depth) {
    if (cJSON_IsNull(v)) as_sb_puts(b, "null");
    else if (cJSON_IsTrue(v)) as_sb_puts(b, "true");
    else if (cJSON_IsFalse(v)) as_sb_puts(b, "false");
    else if (cJSON_IsString(v)) dump_string(b, v->valuestring);
    else if (cJSON_IsNumber(v)) {
        // JSON integers stay integers (cJSON keeps no int/float mark: an
        // integral value below 2^53 is taken for an int).
        const double x = v->valuedouble;
        if (x == floor(x) && fabs(x) < 9007199254740992.0) as_sb_printf(b, "%.0f", x);
        else {
            char f[32];
            eval_py_float(x, f);
            as_sb_puts(b, f);
        }
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        const bool obj = cJSON_IsObject(v);
        if (!v->child) { as_sb_puts(b, obj ? "{}" : "[]"); return; }
        as_sb_puts(b, obj ? "{" : "[");
        const cJSON *e;
        bool first = true;
        cJSON_ArrayForEach(e, v) {
            as_sb_puts(b, first ? "\n" : ",\n");
            first = false;
            for (int i = 0; i < 2 * (depth + 1); i++) as_sb_add(b, " ", 1);
            if (obj) {
                dump_string(b, e->string);
                as_sb_puts(b, ": ");
            }
            dump(b, e, depth + 1);
        }
        as_sb_add(b, "\n", 1);
        for (int i = 0; i < 2 * depth; i++) as_sb_add(b, " ", 1);
        as_sb_puts(b, obj ? "}" : "]");
    }
}

char *eval_py_json_dumps(const cJSON *v) {
    as_sbuf b = {0};
    as_sb_add(&b, "", 0);
    dump(&b, v, 0);
    return b.s;
}

void eval_sha256_hex(const char *s, char out[65]) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) sprintf(out + 2 * i, "%02x", d[i]);
    out[64] = 0;
}
