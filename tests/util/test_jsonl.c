// util/jsonl: the one JSON Lines reader.  Objects come back in order with the
// line numbers an editor shows (blank lines skipped but counted); every kind
// of bad line gets its one-line error naming file:line; a last line without
// a newline is read when complete and reported as cut off when not.
#include "test_common.h"

#include <cjson/cJSON.h>

#include "util/common.h"
#include "util/jsonl.h"

static char path[300];

static void write_text(const char *s) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(s, 1, strlen(s), f);
    fclose(f);
}

// Reads the file; returns the objects' "i" values (and their line numbers) and the final status.
static int read_all(int64_t *vals, int64_t *lines, int *n) {
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return -2;
    cJSON *o;
    int got;
    *n = 0;
    while ((got = as_jsonl_next(&r, &o)) > 0) {
        const cJSON *v = cJSON_GetObjectItem(o, "i");
        vals[*n] = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
        lines[(*n)++] = r.line;
        cJSON_Delete(o);
    }
    assert_null(o);
    as_jsonl_close(&r);
    return got;
}

static void test_lines(void **state) {
    (void)state;
    int64_t v[8], l[8];
    int n;
    write_text("{\"i\": 1}\n\n  \t\r\v\f\n{\"i\": 2}\r\n {\"i\": 3} \f\n");
    assert_int_equal(read_all(v, l, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(v[0], 1), assert_int_equal(l[0], 1);
    assert_int_equal(v[1], 2), assert_int_equal(l[1], 4);
    assert_int_equal(v[2], 3), assert_int_equal(l[2], 5);
    // A complete last line without a newline is read; an empty file has no lines.
    write_text("{\"i\": 7}\n{\"i\": 8}");
    assert_int_equal(read_all(v, l, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[1], 8), assert_int_equal(l[1], 2);
    write_text("");
    assert_int_equal(read_all(v, l, &n), 0);
    assert_int_equal(n, 0);
}

static void expect_error(const char *text, int n_good, const char *msg) {
    int64_t v[8], l[8];
    int n;
    write_text(text);
    assert_int_equal(read_all(v, l, &n), AS_FAIL);
    assert_int_equal(n, n_good);
    char want[512];
    snprintf(want, sizeof want, "%s:%s", path, msg);
    if (strcmp(as_last_error(), want) != 0) fail_msg("got '%s', expected '%s'", as_last_error(), want);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("{\"i\": 1}\n{\"i\": \n", 1, "2: not valid JSON (column 6)");
    expect_error("{\"i\": 1}\n\n[1, 2]\n", 1, "3: not a JSON object (an array)");
    expect_error("\"x\"\n", 0, "1: not a JSON object (a string)");
    expect_error("{\"i\": 1} {\"i\": 2}\n", 0, "1: text after the JSON object (column 10)");
    expect_error("{\"i\": 1}\n{\"i\": 2, \"s\": \"ab", 1, "2: cut off: the last line has no newline and is not complete JSON (an interrupted write?)");
    // The caller's own checks name the line the same way.
    write_text("\n{\"i\": 1}\n");
    as_jsonl r;
    assert_int_equal(as_jsonl_open(&r, path), 0);
    cJSON *o;
    assert_int_equal(as_jsonl_next(&r, &o), 1);
    cJSON_Delete(o);
    assert_int_equal(as_jsonl_error(&r, "x: expected %s", "a string"), AS_FAIL);
    as_jsonl_close(&r);
    char want[512];
    snprintf(want, sizeof want, "%s:2: x: expected a string", path);
    assert_string_equal(as_last_error(), want);
    // A missing file: as_read_file's error.
    snprintf(want, sizeof want, "%s.missing", path);
    assert_int_equal(as_jsonl_open(&r, want), AS_FAIL);
    assert_non_null(strstr(as_last_error(), ".missing"));
}

// as_jsonl_read_all: the objects appended in order; on a bad line, the ones before it.
static void test_read_all(void **state) {
    (void)state;
    write_text("{\"i\": 1}\n\n{\"i\": 2}\n");
    as_jsonl r;
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(as_jsonl_open(&r, path), 0);
    assert_int_equal(as_jsonl_read_all(&r, arr), 0);
    as_jsonl_close(&r);
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "i")->valueint, 2);
    write_text("{\"i\": 3}\n[]\n{\"i\": 4}\n");
    assert_int_equal(as_jsonl_open(&r, path), 0);
    assert_int_equal(as_jsonl_read_all(&r, arr), AS_FAIL);
    as_jsonl_close(&r);
    assert_int_equal(cJSON_GetArraySize(arr), 3);
    assert_non_null(strstr(as_last_error(), ":2: not a JSON object (an array)"));
    cJSON_Delete(arr);
}

int main(void) {
    char *dir = as_test_tmpdir();
    snprintf(path, sizeof path, "%s/t.jsonl", dir);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lines), cmocka_unit_test(test_errors), cmocka_unit_test(test_read_all)};
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(path);
    rmdir(dir);
    return rc;
}
