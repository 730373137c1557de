// JSON Lines reader (see jsonl.h).
#include "util/jsonl.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

// isspace's set in the C locale, less the newline (cJSON skips all of them too).
static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

int as_jsonl_open(as_jsonl *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->path = path;
    return as_read_file(path, &r->text, &r->size);
}

void as_jsonl_close(as_jsonl *r) {
    free(r->text);
    r->text = NULL;
}

int as_jsonl_error(const as_jsonl *r, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return as_error("%s:%lld: %s", r->path, (long long)r->line, msg);
}

static const char *type_name(const cJSON *v) {
    return cJSON_IsArray(v) ? "an array" : cJSON_IsString(v) ? "a string" : cJSON_IsNumber(v) ? "a number" : cJSON_IsBool(v) ? "a boolean" : "null";
}

int as_jsonl_next(as_jsonl *r, cJSON **obj) {
    *obj = NULL;
    while (r->pos < r->size) {
        const char *s = r->text + r->pos, *nl = memchr(s, '\n', r->size - r->pos);
        const size_t len = nl ? (size_t)(nl - s) : r->size - r->pos;
        r->pos += len + 1;
        r->line++;
        size_t b = 0;
        while (b < len && is_blank(s[b])) b++;
        if (b == len) continue;
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithLengthOpts(s, len, &end, false);
        if (!o) {
            if (!nl) return as_jsonl_error(r, "cut off: the last line has no newline and is not complete JSON (an interrupted write?)");
            return as_jsonl_error(r, "not valid JSON (column %lld)", (long long)(end && end >= s ? end - s + 1 : 1));
        }
        if (!cJSON_IsObject(o)) {
            const char *t = type_name(o);
            cJSON_Delete(o);
            return as_jsonl_error(r, "not a JSON object (%s)", t);
        }
        size_t e = (size_t)(end - s);
        while (e < len && is_blank(s[e])) e++;
        if (e < len) {
            cJSON_Delete(o);
            return as_jsonl_error(r, "text after the JSON object (column %lld)", (long long)e + 1);
        }
        *obj = o;
        return 1;
    }
    return 0;
}

int as_jsonl_read_all(as_jsonl *r, cJSON *arr) {
    cJSON *o;
    int got;
    while ((got = as_jsonl_next(r, &o)) > 0) cJSON_AddItemToArray(arr, o);
    return got < 0 ? AS_FAIL : AS_OK;
}
