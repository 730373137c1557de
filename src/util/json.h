// JSON that strict parsers read: every JSON or JSONL file and line alphaspin
// writes goes through these helpers.
//
// JSON text must be UTF-8 (RFC 8259 section 8.1), but the strings alphaspin
// writes are arbitrary bytes: a token may end inside a multi-byte character
// (its piece is a lone 0xC3), a generated answer may stop there, and an input
// file may hold Latin-1.  libcjson prints a string's bytes unchanged, so its
// output can be invalid UTF-8, which Python's json, jq or serde reject.
// Ill-formed sequences become U+FFFD, one per maximal subpart (Unicode 15,
// section 3.9, "U+FFFD Substitution of Maximal Subparts", the practice of
// WHATWG's decoder and Python's errors="replace"); valid UTF-8 is kept as is.
// Where the exact bytes matter (a token's piece), writers add them as a
// "bytes" array of integers, as OpenAI-style log-prob APIs do.
#ifndef AS_JSON_H
#define AS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util/common.h"

#define AS_UTF8_REPLACEMENT "\xEF\xBF\xBD" // U+FFFD

// The UTF-8 sequence at s[0..n) (n >= 1): returns its length (1..4) and sets
// *cp to its code point, or, when it is ill-formed, returns the length of its
// maximal subpart (1..3 bytes, to be replaced by ONE U+FFFD) and sets *cp = -1.
size_t as_utf8_next(const unsigned char *s, size_t n, int32_t *cp);
// True when s[0..n) is well-formed UTF-8 (NUL bytes included: they are U+0000).
bool as_utf8_valid(const char *s, size_t n);
// Appends s[0..n) with each ill-formed subsequence replaced by U+FFFD.
void as_sb_utf8(as_sbuf *b, const char *s, size_t n);
// Appends s[0..n) as a JSON string literal, quotes included: valid UTF-8 (as
// as_sb_utf8), '"' and '\\' escaped, control characters (NUL too) escaped as
// \b \f \n \r \t or \u00XX.  Any bytes give valid JSON.
void as_sb_json_string(as_sbuf *b, const char *s, size_t n);
// Appends v as printf's "%.*g" with `digits` significant digits, or null when v
// is NaN or infinite (JSON has no such numbers; printf would write "nan").
void as_sb_json_num(as_sbuf *b, int digits, double v);
// Appends s[0..n) as a JSON array of byte values: [72, 195].
void as_sb_json_bytes(as_sbuf *b, const void *s, size_t n);

// cJSON_Print (formatted) or cJSON_PrintUnformatted, made valid UTF-8: the
// ill-formed sequences that libcjson copied from strings become U+FFFD.  Bytes
// outside strings are ASCII and a maximal subpart never includes an ASCII byte,
// so the structure is unchanged.  Heap string (free()); dies when out of memory.
char *as_json_print(const cJSON *item, bool formatted);
// Adds {key: <string literal of s[0..n)>, key_bytes: [...]}: the text of a
// token or piece (valid, NUL-safe: as_sb_json_string) and, under bytes_key
// (NULL: none), its exact bytes.  As cJSON raw items, printed verbatim.
void as_json_add_bytes_text(cJSON *o, const char *key, const char *bytes_key, const char *s, size_t n);

#endif
