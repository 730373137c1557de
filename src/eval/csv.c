#include "eval/csv.h"

#include <stdbool.h>
#include <string.h>

#include "util/common.h"

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static void sb_put(strbuf *b, char c) {
    if (b->n + 1 >= b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->p = as_realloc(b->p, b->cap);
    }
    b->p[b->n++] = c;
}

typedef struct cell_list {
    char **v;
    size_t n, cap;
} cell_list;

static void cl_push(cell_list *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = as_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

int csv_parse(const char *data, size_t len, const char *name, csv_table *out) {
    memset(out, 0, sizeof *out);
    size_t i = 0;
    int64_t line = 1;
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) i = 3;
    cell_list cells = {0};
    strbuf field = {0};
    int64_t n_cols = -1, rec_fields = 0, n_records = 0, rec_line = 1;
    int rc = AS_OK;
    while (i < len) {
        // Start of a record: skip blank lines.
        if (rec_fields == 0) {
            if (data[i] == '\n') { i++, line++; continue; }
            if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') { i += 2, line++; continue; }
            rec_line = line;
        }
        // One field.
        field.n = 0;
        bool end_record = false;
        if (data[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) {
                    rc = as_error("%s:%lld: quoted field not closed before the end of the file", name, (long long)rec_line);
                    goto done;
                }
                char c = data[i++];
                if (c == '"') {
                    if (i < len && data[i] == '"') { sb_put(&field, '"'); i++; continue; }
                    break;
                }
                if (c == '\n') line++;
                sb_put(&field, c);
            }
            if (i < len && data[i] == ',') i++;
            else if (i < len && data[i] == '\n') i++, line++, end_record = true;
            else if (i + 1 < len && data[i] == '\r' && data[i + 1] == '\n') i += 2, line++, end_record = true;
            else if (i >= len) end_record = true;
            else {
                rc = as_error("%s:%lld: a closing quote must be followed by a comma or the end of the line", name,
                              (long long)line);
                goto done;
            }
        } else {
            for (;;) {
                if (i >= len) { end_record = true; break; }
                char c = data[i];
                if (c == ',') { i++; break; }
                if (c == '\n') { i++, line++, end_record = true; break; }
                if (c == '\r' && i + 1 < len && data[i + 1] == '\n') { i += 2, line++, end_record = true; break; }
                sb_put(&field, c);
                i++;
            }
        }
        cl_push(&cells, as_strndup(field.p ? field.p : "", field.n));
        rec_fields++;
        // A comma at the very end of the data still opens an (empty) last field.
        if (!end_record && i >= len) {
            cl_push(&cells, as_strdup(""));
            rec_fields++;
            end_record = true;
        }
        if (end_record) {
            if (n_cols < 0) n_cols = rec_fields;
            else if (rec_fields != n_cols) {
                rc = as_error("%s:%lld: record has %lld fields, the header has %lld", name, (long long)rec_line,
                              (long long)rec_fields, (long long)n_cols);
                goto done;
            }
            n_records++;
            rec_fields = 0;
        }
    }
    if (n_cols < 0) rc = as_error("%s: empty CSV (no header)", name);
done:
    free(field.p);
    if (rc != AS_OK) {
        for (size_t k = 0; k < cells.n; k++) free(cells.v[k]);
        free(cells.v);
        return rc;
    }
    out->n_cols = (int32_t)n_cols;
    out->n_rows = n_records - 1;
    out->header = cells.v;
    out->cells = cells.v + n_cols;
    return AS_OK;
}

int csv_read_file(const char *path, csv_table *out) {
    char *data;
    size_t len;
    if (as_read_file(path, &data, &len) != AS_OK) return AS_FAIL;
    int rc = csv_parse(data, len, path, out);
    free(data);
    return rc;
}

void csv_free(csv_table *t) {
    if (!t->header) return;
    size_t n = (size_t)t->n_cols * (size_t)(t->n_rows + 1);
    for (size_t k = 0; k < n; k++) free(t->header[k]);
    free(t->header);
    memset(t, 0, sizeof *t);
}

int32_t csv_column(const csv_table *t, const char *name) {
    for (int32_t c = 0; c < t->n_cols; c++)
        if (!strcmp(t->header[c], name)) return c;
    return -1;
}
