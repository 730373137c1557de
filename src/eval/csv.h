// RFC 4180 CSV: fields separated by commas, records by LF or CRLF; a field in
// double quotes may hold commas, newlines and "" (one literal quote).  The
// first record is the header; every record must have its number of fields.
// Lenient where Python's csv module is: a quote inside an unquoted field is
// literal, a UTF-8 BOM is skipped, blank lines between records are skipped.
#ifndef AS_EVAL_CSV_H
#define AS_EVAL_CSV_H

#include <stddef.h>
#include <stdint.h>

typedef struct csv_table {
    int32_t n_cols;
    int64_t n_rows;   // records after the header
    char **header;    // (n_cols)
    char **cells;     // (n_rows, n_cols) row-major, NUL-terminated (a field may contain NUL bytes: then truncated)
} csv_table;

// Parses len bytes; `name` (the file) is used in error messages, which name
// the line where the record starts: "<name>:<line>: ...".
int csv_parse(const char *data, size_t len, const char *name, csv_table *out);
int csv_read_file(const char *path, csv_table *out);
void csv_free(csv_table *t);
// Column index of a header name, or -1.
int32_t csv_column(const csv_table *t, const char *name);
static inline const char *csv_cell(const csv_table *t, int64_t row, int32_t col) {
    return t->cells[row * t->n_cols + col];
}

#endif
