// lm-evaluation-harness's answer filters (lm_eval/filters) and its exact_match
// (HF evaluate's, with regexes_to_ignore, ignore_case, ignore_punctuation,
// ignore_numbers), for generate_until tasks.  Python's `re` patterns run on
// PCRE2 with UTF and Unicode properties (\d, \w, \s as Python 3 sees them);
// the syntax lm-eval's task files use (classes, groups, (?s), (?:...),
// (?P<name>...), lazy quantifiers, {m,n}) means the same in both.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "eval/eval_internal.h"
#include "util/common.h"

int eval_regex_compile(const char *pattern, const char *what, eval_regex **out) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return as_error("%s: bad regular expression '%s' at offset %zu: %s", what, pattern, (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // optional: the interpreter is the fallback
    *out = (eval_regex *)re;
    return AS_OK;
}

void eval_regex_free(eval_regex *re) { pcre2_code_free((pcre2_code *)re); }

// Python's re.findall(pattern, s)[group_select] (negative: from the end), as
// lm-eval's RegexFilter takes it: with groups, the first non-empty group of
// the match (a pattern of one group: that group).  Heap string, or NULL when
// there is no such match.  Empty matches advance one character, as findall.
char *eval_regex_findall_pick(const eval_regex *rex, const char *s, int32_t group_select) {
    const pcre2_code *re = (const pcre2_code *)rex;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    uint32_t n_groups = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n_groups);
    const size_t n = strlen(s);
    char **found = NULL;
    size_t n_found = 0;
    size_t at = 0;
    while (at <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        const char *v = "";
        size_t vn = 0;
        if (n_groups == 0) v = s + ov[0], vn = ov[1] - ov[0];
        else
            for (uint32_t g = 1; g <= n_groups; g++)
                if ((int)g < rc && ov[2 * g] != PCRE2_UNSET && ov[2 * g + 1] > ov[2 * g]) {
                    v = s + ov[2 * g], vn = ov[2 * g + 1] - ov[2 * g];
                    break;
                }
        found = as_realloc(found, (n_found + 1) * sizeof *found);
        found[n_found++] = as_strndup(v, vn);
        if (ov[1] > ov[0]) at = ov[1];
        else {
            // An empty match: step over one whole UTF-8 character.
            at = ov[1] + 1;
            while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80) at++;
        }
    }
    pcre2_match_data_free(md);
    char *pick = NULL;
    int64_t k = group_select < 0 ? (int64_t)n_found + group_select : group_select;
    if (k >= 0 && k < (int64_t)n_found) pick = found[k], found[k] = NULL;
    for (size_t i = 0; i < n_found; i++) free(found[i]);
    free(found);
    return pick;
}

// re.sub(pattern, "", s): every match removed.
char *eval_regex_remove(const eval_regex *rex, const char *s) {
    const pcre2_code *re = (const pcre2_code *)rex;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    const size_t n = strlen(s);
    as_sbuf b = {0};
    as_sb_add(&b, "", 0);
    size_t at = 0, copied = 0;
    while (at <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        as_sb_add(&b, s + copied, ov[0] - copied);
        copied = ov[1];
        if (ov[1] > ov[0]) at = ov[1];
        else {
            at = ov[1] + 1;
            while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80) at++;
        }
    }
    as_sb_add(&b, s + copied, n - copied);
    pcre2_match_data_free(md);
    return b.s;
}

// Python's re.sub(pattern, repl, s, count) (count 0: all): repl's \\1..\\99,
// \\g<n>, \\g<name> (an unmatched group gives ""), \\n \\t \\r \\f \\v \\a
// \\\\; another escaped ASCII letter is an error, any other escaped character
// stays as written.  Empty matches next to a previous match are replaced
// (Python 3.7+).  Heap string, or NULL + as_error "<what>: ...".
char *eval_regex_sub(const eval_regex *rex, const char *s, const char *repl, int64_t count, const char *what) {
    const pcre2_code *re = (const pcre2_code *)rex;
    uint32_t n_groups = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n_groups);
    // Check the template once.
    for (const char *r = repl; *r; r++) {
        if (*r != '\\') continue;
        char e = *++r;
        if (!e) { as_error("%s: bad escape (end of pattern) in the replacement", what); return NULL; }
        if (e >= '0' && e <= '9') {
            int g = e - '0';
            if (r[1] >= '0' && r[1] <= '9') g = g * 10 + (*++r - '0');
            if (g == 0 || (uint32_t)g > n_groups) { as_error("%s: invalid group reference %d in the replacement", what, g); return NULL; }
        } else if (e == 'g') {
            const char *close = r[1] == '<' ? strchr(r, '>') : NULL;
            if (!close || close == r + 2) { as_error("%s: bad \\g<...> in the replacement", what); return NULL; }
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(close - r - 2), r + 2);
            char *end;
            long g = strtol(name, &end, 10);
            if (*end ? pcre2_substring_number_from_name(re, (PCRE2_SPTR)name) < 0 : (g < 0 || (uint32_t)g > n_groups)) {
                as_error("%s: unknown group '%s' in the replacement", what, name);
                return NULL;
            }
            r = close;
        } else if (((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) && !strchr("ntrfvab", e)) {
            as_error("%s: bad escape \\%c in the replacement", what, e);
            return NULL;
        }
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    const size_t n = strlen(s);
    as_sbuf b = {0};
    as_sb_add(&b, "", 0);
    size_t at = 0, copied = 0;
    int64_t done = 0;
    bool last_empty = false;
    while (at <= n && (count <= 0 || done < count)) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, last_empty ? PCRE2_NOTEMPTY_ATSTART : 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        as_sb_add(&b, s + copied, ov[0] - copied);
        for (const char *r = repl; *r; r++) {
            if (*r != '\\') { as_sb_add(&b, r, 1); continue; }
            char e = *++r;
            long g = -1;
            if (e >= '0' && e <= '9') {
                g = e - '0';
                if (r[1] >= '0' && r[1] <= '9') g = g * 10 + (*++r - '0');
            } else if (e == 'g') {
                const char *close = strchr(r, '>');
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(close - r - 2), r + 2);
                char *end;
                g = strtol(name, &end, 10);
                if (*end) g = pcre2_substring_number_from_name(re, (PCRE2_SPTR)name);
                r = close;
            } else {
                const char *esc = strchr("ntrfvab", e);
                if (esc) as_sb_add(&b, &"\n\t\r\f\v\a\b"[esc - "ntrfvab"], 1);
                else if (e == '\\') as_sb_add(&b, "\\", 1);
                else as_sb_add(&b, r - 1, 2);
                continue;
            }
            if (g >= 0 && g < rc && ov[2 * g] != PCRE2_UNSET) as_sb_add(&b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        }
        copied = ov[1];
        done++;
        last_empty = ov[0] == ov[1];
        at = ov[1];
    }
    as_sb_add(&b, s + copied, n - copied);
    pcre2_match_data_free(md);
    return b.s;
}

// ---- filters ----

typedef enum filter_kind {
    FILTER_REGEX = 0,
    FILTER_TAKE_FIRST,
    FILTER_REMOVE_WHITESPACE, // lstrip
    FILTER_STRIP,             // alphaspin's: both ends
    FILTER_LOWERCASE,
    FILTER_UPPERCASE,
    FILTER_MAP,
} filter_kind;

struct eval_filter_step {
    filter_kind kind;
    eval_regex *re;
    int32_t group_select;
    const char *fallback;
    const cJSON *map;          // FILTER_MAP: {from: to}
    const char *map_default;   // NULL: None (written as "None", as Python's str(None))
};

static const char *const FILTER_NAMES[] = {"regex", "take_first", "remove_whitespace", "strip", "lowercase", "uppercase", "map"};

static int step_parse(const cJSON *f, const char *what, eval_filter_step *st) {
    memset(st, 0, sizeof *st);
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(f, "function");
    if (!cJSON_IsObject(f) || !cJSON_IsString(fn))
        return as_error("%s: each filter step is a mapping with a 'function'", what);
    size_t k = 0;
    while (k < AS_ARRAY_LEN(FILTER_NAMES) && strcmp(FILTER_NAMES[k], fn->valuestring)) k++;
    if (k == AS_ARRAY_LEN(FILTER_NAMES))
        return as_error("%s: function '%s' is not one this C port runs (regex, take_first, remove_whitespace, strip, "
                        "lowercase, uppercase, map)", what, fn->valuestring);
    st->kind = (filter_kind)k;
    st->fallback = "[invalid]";
    const char *pattern = "#### (\\-?[0-9\\.\\,]+)";
    const cJSON *a;
    cJSON_ArrayForEach(a, f) {
        const char *key = a->string;
        if (!strcmp(key, "function")) continue;
        bool ok = false;
        if (st->kind == FILTER_REGEX && !strcmp(key, "regex_pattern") && cJSON_IsString(a)) pattern = a->valuestring, ok = true;
        else if (st->kind == FILTER_REGEX && !strcmp(key, "fallback") && cJSON_IsString(a)) st->fallback = a->valuestring, ok = true;
        else if (st->kind == FILTER_REGEX && !strcmp(key, "group_select") && cJSON_IsString(a)) {
            char *end;
            long g = strtol(a->valuestring, &end, 10);
            if (end == a->valuestring || *end || g < -100000 || g > 100000)
                return as_error("%s: regex: group_select: expected an integer, got '%s'", what, a->valuestring);
            st->group_select = (int32_t)g, ok = true;
        } else if (st->kind == FILTER_MAP && !strcmp(key, "mapping_dict") && cJSON_IsObject(a)) st->map = a, ok = true;
        else if (st->kind == FILTER_MAP && !strcmp(key, "default_value") && cJSON_IsString(a)) st->map_default = a->valuestring, ok = true;
        if (!ok) return as_error("%s: %s: unknown or malformed argument '%s'", what, fn->valuestring, key);
    }
    if (st->kind == FILTER_REGEX) {
        char w[600];
        snprintf(w, sizeof w, "%.500s: regex: regex_pattern", what);
        return eval_regex_compile(pattern, w, &st->re);
    }
    return AS_OK;
}

int eval_filters_parse(const cJSON *list, const char *what, eval_filter **out, int32_t *n_out) {
    *out = NULL, *n_out = 0;
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) return as_error("%s: filter_list: expected a non-empty list", what);
    const int32_t n = cJSON_GetArraySize(list);
    eval_filter *fs = as_calloc((size_t)n, sizeof *fs);
    int rc = AS_OK;
    for (int32_t i = 0; i < n && rc == AS_OK; i++) {
        const cJSON *e = cJSON_GetArrayItem(list, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name"), *steps = cJSON_GetObjectItemCaseSensitive(e, "filter");
        if (!cJSON_IsObject(e) || !cJSON_IsString(name) || !cJSON_IsArray(steps) || cJSON_GetArraySize(steps) == 0) {
            rc = as_error("%s: filter_list: entry %d: expected {name: ..., filter: [{function: ...}, ...]}", what, i);
            break;
        }
        const cJSON *k;
        cJSON_ArrayForEach(k, e) if (strcmp(k->string, "name") && strcmp(k->string, "filter")) {
            rc = as_error("%s: filter_list: %s: unknown key '%s'", what, name->valuestring, k->string);
            break;
        }
        for (int32_t j = 0; j < i && rc == AS_OK; j++)
            if (!strcmp(fs[j].name, name->valuestring)) rc = as_error("%s: filter_list: duplicate name '%s'", what, name->valuestring);
        if (rc != AS_OK) break;
        fs[i].name = name->valuestring;
        fs[i].n_steps = cJSON_GetArraySize(steps);
        fs[i].steps = as_calloc((size_t)fs[i].n_steps, sizeof *fs[i].steps);
        char w[512];
        snprintf(w, sizeof w, "%s: filter_list: %s", what, name->valuestring);
        for (int32_t j = 0; j < fs[i].n_steps && rc == AS_OK; j++) rc = step_parse(cJSON_GetArrayItem(steps, j), w, &fs[i].steps[j]);
    }
    if (rc != AS_OK) { eval_filters_free(fs, n); return AS_FAIL; }
    *out = fs, *n_out = n;
    return AS_OK;
}

void eval_filters_free(eval_filter *fs, int32_t n) {
    for (int32_t i = 0; fs && i < n; i++) {
        for (int32_t j = 0; j < fs[i].n_steps; j++) eval_regex_free(fs[i].steps[j].re);
        free(fs[i].steps);
    }
    free(fs);
}

static char *ascii_case(const char *s, bool upper) {
    char *r = as_strdup(s);
    for (char *p = r; *p; p++) *p = (char)(upper ? toupper((unsigned char)*p) : tolower((unsigned char)*p));
    return r;
}

char *eval_filter_apply(const eval_filter *f, const char *output) {
    char *cur = as_strdup(output);
    for (int32_t j = 0; j < f->n_steps; j++) {
        const eval_filter_step *st = &f->steps[j];
        char *next = NULL;
        switch (st->kind) {
        case FILTER_REGEX: {
            char *m = eval_regex_findall_pick(st->re, cur, st->group_select);
            if (!m) next = as_strdup(st->fallback);
            else {
                // match.strip()
                size_t n = strlen(m), a = eval_py_lstrip_len(m, n), e = eval_py_rstrip_len(m, n);
                next = as_strndup(m + a, e > a ? e - a : 0);
                free(m);
            }
            break;
        }
        case FILTER_TAKE_FIRST: next = as_strdup(cur); break; // one response per request (repeats 1)
        case FILTER_REMOVE_WHITESPACE: next = as_strdup(cur + eval_py_lstrip_len(cur, strlen(cur))); break;
        case FILTER_STRIP: {
            size_t n = strlen(cur), a = eval_py_lstrip_len(cur, n), e = eval_py_rstrip_len(cur, n);
            next = as_strndup(cur + a, e > a ? e - a : 0);
            break;
        }
        case FILTER_LOWERCASE: next = ascii_case(cur, false); break;
        case FILTER_UPPERCASE: next = ascii_case(cur, true); break;
        case FILTER_MAP: {
            const cJSON *v = st->map ? cJSON_GetObjectItemCaseSensitive(st->map, cur) : NULL;
            next = as_strdup(cJSON_IsString(v) ? v->valuestring : st->map_default ? st->map_default : "None");
            break;
        }
        }
        free(cur);
        cur = next;
    }
    return cur;
}

// ---- exact match ----

int eval_exact_match_parse(const cJSON *metric, const char *what, eval_exact_match *em) {
    memset(em, 0, sizeof *em);
    const cJSON *a;
    cJSON_ArrayForEach(a, metric) {
        const char *k = a->string;
        if (!strcmp(k, "metric") || !strcmp(k, "aggregation") || !strcmp(k, "higher_is_better")) continue;
        bool *flag = !strcmp(k, "ignore_case") ? &em->ignore_case : !strcmp(k, "ignore_punctuation") ? &em->ignore_punctuation
                     : !strcmp(k, "ignore_numbers") ? &em->ignore_numbers : NULL;
        if (flag) {
            if (!cJSON_IsString(a) || (strcmp(a->valuestring, "true") && strcmp(a->valuestring, "false") &&
                                       strcmp(a->valuestring, "True") && strcmp(a->valuestring, "False")))
                return as_error("%s: metric_list: exact_match: %s: expected true or false", what, k);
            *flag = a->valuestring[0] == 't' || a->valuestring[0] == 'T';
        } else if (!strcmp(k, "regexes_to_ignore")) {
            if (!cJSON_IsArray(a)) return as_error("%s: metric_list: exact_match: regexes_to_ignore: expected a list", what);
            const cJSON *r;
            cJSON_ArrayForEach(r, a) {
                if (!cJSON_IsString(r)) return as_error("%s: metric_list: exact_match: regexes_to_ignore: expected strings", what);
                em->ignore = as_realloc(em->ignore, (size_t)(em->n_ignore + 1) * sizeof *em->ignore);
                char w[512];
                snprintf(w, sizeof w, "%s: metric_list: exact_match: regexes_to_ignore", what);
                if (eval_regex_compile(r->valuestring, w, &em->ignore[em->n_ignore]) != AS_OK) return AS_FAIL;
                em->n_ignore++;
            }
        } else {
            return as_error("%s: metric_list: exact_match: unknown option '%s' (regexes_to_ignore, ignore_case, "
                            "ignore_punctuation, ignore_numbers)", what, k);
        }
    }
    return AS_OK;
}

void eval_exact_match_free(eval_exact_match *em) {
    for (int32_t i = 0; i < em->n_ignore; i++) eval_regex_free(em->ignore[i]);
    free(em->ignore);
    memset(em, 0, sizeof *em);
}

char *eval_exact_match_normalise(const eval_exact_match *em, const char *s) {
    char *cur = as_strdup(s);
    for (int32_t i = 0; i < em->n_ignore; i++) {
        char *next = eval_regex_remove(em->ignore[i], cur);
        free(cur);
        cur = next;
    }
    if (em->ignore_case) {
        char *next = ascii_case(cur, false);
        free(cur);
        cur = next;
    }
    if (em->ignore_punctuation || em->ignore_numbers) {
        // string.punctuation / string.digits removed (ASCII, as Python's).
        char *w = cur;
        for (const char *p = cur; *p; p++) {
            const bool drop = (em->ignore_punctuation && ispunct((unsigned char)*p)) || (em->ignore_numbers && isdigit((unsigned char)*p));
            if (!drop) *w++ = *p;
        }
        *w = 0;
    }
    return cur;
}

bool eval_exact_match_equal(const eval_exact_match *em, const char *pred, const char *gold) {
    char *a = eval_exact_match_normalise(em, pred), *b = eval_exact_match_normalise(em, gold);
    bool eq = !strcmp(a, b);
    free(a), free(b);
    return eq;
}
