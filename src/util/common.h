// Shared conventions of alphaspin.
//
// Errors: library functions return 0 on success and -1 on failure, after
// recording ONE line that names the file/field and what was expected with
// as_error().  Only the command line prints it (as_last_error()) and exits.
// Allocation failure and programmer errors die at once with file:line.
#ifndef AS_COMMON_H
#define AS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define AS_OK 0
#define AS_FAIL (-1)

// Records the error message (printf-style) for this thread; returns AS_FAIL so
// callers can write `return as_error("%s: bad magic", path);`.
int as_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The last recorded message of this thread ("" if none).
const char *as_last_error(void);
void as_clear_error(void);

// Die with file:line.  For impossible states and out-of-memory only.
#define as_die(...) as_die_at(__FILE__, __LINE__, __VA_ARGS__)
void as_die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

// Checked allocation (dies with file:line on failure).
#define as_malloc(n) as_malloc_at((n), __FILE__, __LINE__)
#define as_calloc(n, sz) as_calloc_at((n), (sz), __FILE__, __LINE__)
#define as_realloc(p, n) as_realloc_at((p), (n), __FILE__, __LINE__)
// 64-byte aligned, for SIMD kernels; free with free().
#define as_aligned_alloc(n) as_aligned_alloc_at((n), __FILE__, __LINE__)
void *as_malloc_at(size_t n, const char *file, int line);
void *as_calloc_at(size_t n, size_t sz, const char *file, int line);
void *as_realloc_at(void *p, size_t n, const char *file, int line);
void *as_aligned_alloc_at(size_t n, const char *file, int line);
// as_aligned_alloc's memory (64-byte aligned; huge pages asked for from 4 MB),
// or NULL when there is none, for callers that report it themselves.
void *as_aligned_try_alloc(size_t n);
char *as_strdup(const char *s);
char *as_strndup(const char *s, size_t n);

// A growing NUL-terminated string: as_sb_add / as_sb_puts append bytes,
// as_sb_printf formatted text ({0} is an empty buffer, whose s stays NULL
// until something, even "", is appended; the caller frees s).
typedef struct as_sbuf {
    char *s;
    size_t len, cap;
} as_sbuf;
void as_sb_printf(as_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void as_sb_add(as_sbuf *b, const char *s, size_t len);
void as_sb_puts(as_sbuf *b, const char *s);

// Reads a whole file into a NUL-terminated heap buffer.  -1 + as_error on failure.
int as_read_file(const char *path, char **out, size_t *out_len);
// Atomic write: temporary file in the same folder, fsync, rename, fsync dir.
// An existing file at `path` is never left half-written.
int as_write_file_atomic(const char *path, const void *data, size_t len);
// Streaming variant: as_atomic_open gives a FILE* to a temp file; commit
// fsyncs and renames it over `path`; abort removes the temp file.
typedef struct as_atomic_file {
    FILE *fp;
    char *path;
    char *tmp_path;
} as_atomic_file;
int as_atomic_open(as_atomic_file *af, const char *path);
int as_atomic_commit(as_atomic_file *af);
void as_atomic_abort(as_atomic_file *af);
// mkdir -p
int as_mkdir_p(const char *path);
// Keeps the first n lines of a log (rewritten atomically): a resumed run
// rewrites what came after its saved state.  A missing file is an empty one;
// -1 + as_error when it has fewer lines.
int as_keep_lines(const char *path, int64_t n);
// Whether this process writes files (default yes).  In a job of several
// processes only rank 0 does (dist/dist.h): on the others the atomic writes
// above succeed and their bytes go nowhere, so every rank runs the same code.
void as_files_set_writer(int on);
int as_files_writer(void);

// Monotonic wall-clock seconds.
double as_time(void);

// Checked size arithmetic: return 0 and set *out, or -1 on overflow.
static inline int as_mul_overflow(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }
static inline int as_add_overflow(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out) ? -1 : 0; }

#define AS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define AS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
