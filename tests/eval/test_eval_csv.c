// The RFC 4180 CSV reader: quoted newlines, "" escapes, CRLF, BOM, and errors
// that name the line.
#include "test_common.h"

#include "eval/csv.h"
#include "util/common.h"

static void parse_ok(const char *text, csv_table *t) {
    int rc = csv_parse(text, strlen(text), "t.csv", t);
    if (rc) fprintf(stderr, "%s\n", as_last_error());
    assert_int_equal(rc, 0);
}

static void test_quoted_newlines_and_escapes(void **st) {
    (void)st;
    csv_table t;
    parse_ok("question,choice0,answer\n"
             "\"Statement 1 | a, b.\nStatement 2 | \"\"c\"\"\",\"True, True\",1\n"
             "plain,\"\",0\n",
             &t);
    assert_int_equal(t.n_cols, 3);
    assert_int_equal(t.n_rows, 2);
    assert_string_equal(t.header[1], "choice0");
    assert_string_equal(csv_cell(&t, 0, 0), "Statement 1 | a, b.\nStatement 2 | \"c\"");
    assert_string_equal(csv_cell(&t, 0, 1), "True, True");
    assert_string_equal(csv_cell(&t, 0, 2), "1");
    assert_string_equal(csv_cell(&t, 1, 0), "plain");
    assert_string_equal(csv_cell(&t, 1, 1), "");
    assert_int_equal(csv_column(&t, "answer"), 2);
    assert_int_equal(csv_column(&t, "nope"), -1);
    csv_free(&t);
}

static void test_crlf_bom_blank_lines_no_final_newline(void **st) {
    (void)st;
    csv_table t;
    parse_ok("\xEF\xBB\xBF" "a,b\r\n1,\"x\r\ny\"\r\n\r\n2,3", &t);
    assert_string_equal(t.header[0], "a");
    assert_int_equal(t.n_rows, 2);
    assert_string_equal(csv_cell(&t, 0, 1), "x\r\ny");
    assert_string_equal(csv_cell(&t, 1, 0), "2");
    assert_string_equal(csv_cell(&t, 1, 1), "3");
    csv_free(&t);
    // Empty trailing field, and a quote inside an unquoted field is literal (as Python's csv).
    parse_ok("a,b,c\n1,2,\nx\"y,\"\"\"\",z\n", &t);
    assert_string_equal(csv_cell(&t, 0, 2), "");
    assert_string_equal(csv_cell(&t, 1, 0), "x\"y");
    assert_string_equal(csv_cell(&t, 1, 1), "\"");
    csv_free(&t);
    parse_ok("only\n", &t);
    assert_int_equal(t.n_rows, 0);
    csv_free(&t);
}

static void expect_error(const char *text, const char *needle) {
    csv_table t;
    assert_int_equal(csv_parse(text, strlen(text), "bad.csv", &t), -1);
    if (!strstr(as_last_error(), needle)) fail_msg("error '%s' lacks '%s'", as_last_error(), needle);
}

static void test_errors_name_the_line(void **st) {
    (void)st;
    expect_error("a,b\n1,2\n3\n", "bad.csv:3: record has 1 fields, the header has 2");
    expect_error("a,b\n1,\"open\n\n", "bad.csv:2: quoted field not closed");
    expect_error("a,b\n\"q\"x,2\n", "bad.csv:2: a closing quote");
    // The line of a record after a quoted newline.
    expect_error("a,b\n\"1\n2\",3\n4,5,6\n", "bad.csv:4:");
    expect_error("", "empty CSV");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoted_newlines_and_escapes),
        cmocka_unit_test(test_crlf_bom_blank_lines_no_final_newline),
        cmocka_unit_test(test_errors_name_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
