// JSON Lines (https://jsonlines.org): the one reader of every JSONL file
// alphaspin reads (SFT data, prompts, pairs, metrics, evaluation data).  One
// JSON object per line; blank lines (white space only: spaces, tabs, CR, VT,
// FF) are skipped but counted, so a line number in an error is the one an
// editor shows.  Every error is one line
// "<file>:<line>: <what is wrong>":
//   not valid JSON (column C)       the parser stopped at column C
//   not a JSON object (an array)    a value that is not {...}
//   text after the JSON object      anything but white space after the closing brace
//   cut off (no newline ...)        the last line has no newline and does not parse:
//                                   a write that was interrupted
//
//   as_jsonl r;
//   if (as_jsonl_open(&r, path)) return AS_FAIL;
//   cJSON *o;
//   int got;
//   while ((got = as_jsonl_next(&r, &o)) > 0) {
//       if (!cJSON_GetObjectItem(o, "x")) got = as_jsonl_error(&r, "x: missing");
//       cJSON_Delete(o);
//       if (got < 0) break;
//   }
//   as_jsonl_close(&r);
//   if (got < 0) return AS_FAIL;
#ifndef AS_JSONL_H
#define AS_JSONL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef struct as_jsonl {
    const char *path;   // as given to as_jsonl_open (not copied)
    char *text;         // the whole file
    size_t size, pos;   // pos: start of the next line
    int64_t line;       // 1-based number of the line as_jsonl_next returned last
} as_jsonl;

// Reads the file.  -1 + as_error when it cannot be read.
int as_jsonl_open(as_jsonl *r, const char *path);
// The next non-blank line as a JSON object in *obj (the caller's, to
// cJSON_Delete): returns 1, or 0 at the end of the file (*obj NULL), or -1 +
// as_error "<file>:<line>: ..." for a line that is not a JSON object.
int as_jsonl_next(as_jsonl *r, cJSON **obj);
// as_error with "<file>:<line>: " before the message, for the caller's checks
// of the line as_jsonl_next returned last.  Returns AS_FAIL.
int as_jsonl_error(const as_jsonl *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Every remaining object appended to arr (a cJSON array), in order: 0, or
// -1 + as_error as as_jsonl_next (the objects before the bad line stay in arr).
int as_jsonl_read_all(as_jsonl *r, cJSON *arr);
void as_jsonl_close(as_jsonl *r);

#endif
