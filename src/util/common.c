#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_error[1024];

int as_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return AS_FAIL;
}

const char *as_last_error(void) { return g_error; }
void as_clear_error(void) { g_error[0] = 0; }

void as_die_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "alphaspin: fatal (%s:%d): ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *as_malloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) as_die_at(file, line, "out of memory allocating %zu bytes", n);
    return p;
}

void *as_calloc_at(size_t n, size_t sz, const char *file, int line) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) as_die_at(file, line, "out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

void *as_realloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) as_die_at(file, line, "out of memory reallocating %zu bytes", n);
    return q;
}

// Buffers of AS_HUGE_MIN bytes or more (packed weights, KV caches, training
// activations) start on a 2 MB boundary and ask for transparent huge pages
// (Linux's default THP mode is "madvise": nothing without the request).  The
// kernels stream them: with 4 KB pages every 4 KB of a stream costs a TLB miss
// and the hardware prefetchers stop at each page's end.  ALPHASPIN_HUGEPAGES=0
// turns the request off (A/B measurements).
#define AS_HUGE_MIN ((size_t)4 << 20)
#define AS_HUGE_ALIGN ((size_t)2 << 20)

// Read per call: such buffers are few, and a cached flag would be shared
// unsynchronised state between the threads that allocate.
static bool huge_wanted(void) {
    const char *e = getenv("ALPHASPIN_HUGEPAGES");
    return !(e && !strcmp(e, "0"));
}

void *as_aligned_try_alloc(size_t n) {
    void *p = NULL;
    const bool huge = n >= AS_HUGE_MIN && huge_wanted();
    if (posix_memalign(&p, huge ? AS_HUGE_ALIGN : 64, n ? n : 64) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, n, MADV_HUGEPAGE); // a hint: failure leaves 4 KB pages
#endif
    return p;
}

void *as_aligned_alloc_at(size_t n, const char *file, int line) {
    void *p = as_aligned_try_alloc(n);
    if (!p) as_die_at(file, line, "out of memory allocating %zu aligned bytes", n);
    return p;
}

char *as_strdup(const char *s) { return as_strndup(s, strlen(s)); }

char *as_strndup(const char *s, size_t n) {
    char *d = as_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

int as_read_file(const char *path, char **out, size_t *out_len) {
    FILE *f = fopen(path, "rb");
    if (!f) return as_error("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = as_malloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = as_realloc(buf, cap *= 2);
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return as_error("%s: read error", path);
    }
    buf[len] = 0;
    *out = buf;
    if (out_len) *out_len = len;
    return AS_OK;
}

static void fsync_parent_dir(const char *path) {
    char *copy = as_strdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

static int files_writer = 1;
void as_files_set_writer(int on) { files_writer = on; }
int as_files_writer(void) { return files_writer; }

int as_atomic_open(as_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    if (!files_writer) { // not the job's writer: the bytes go nowhere
        af->fp = fopen("/dev/null", "wb");
        if (!af->fp) return as_error("%s: cannot open /dev/null: %s", path, strerror(errno));
        return AS_OK;
    }
    size_t n = strlen(path) + 32;
    af->path = as_strdup(path);
    af->tmp_path = as_malloc(n);
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        int e = errno;
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return as_error("%s: cannot create temporary file: %s", path, strerror(e));
    }
    return AS_OK;
}

int as_atomic_commit(as_atomic_file *af) {
    int rc = AS_OK;
    if (!af->path) { // not the writer (as_atomic_open)
        fclose(af->fp);
        af->fp = NULL;
        return AS_OK;
    }
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0) rc = as_error("%s: write failed: %s", af->path, strerror(errno));
    if (fclose(af->fp) != 0 && rc == AS_OK) rc = as_error("%s: close failed: %s", af->path, strerror(errno));
    af->fp = NULL;
    if (rc == AS_OK && rename(af->tmp_path, af->path) != 0) rc = as_error("%s: rename failed: %s", af->path, strerror(errno));
    if (rc != AS_OK) unlink(af->tmp_path);
    else fsync_parent_dir(af->path);
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    return rc;
}

void as_atomic_abort(as_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

int as_write_file_atomic(const char *path, const void *data, size_t len) {
    as_atomic_file af;
    if (as_atomic_open(&af, path) != AS_OK) return AS_FAIL;
    if (len && fwrite(data, 1, len, af.fp) != len) {
        as_atomic_abort(&af);
        return as_error("%s: write failed", path);
    }
    return as_atomic_commit(&af);
}

int as_keep_lines(const char *path, int64_t n) {
    char *text;
    size_t len;
    if (access(path, F_OK)) return n == 0 ? AS_OK : as_error("%s: missing; the run to resume wrote one", path);
    if (as_read_file(path, &text, &len)) return AS_FAIL;
    size_t end = 0;
    for (int64_t k = 0; k < n; k++) {
        const char *nl = memchr(text + end, '\n', len - end);
        if (!nl) {
            free(text);
            return as_error("%s: %lld lines, the training state is at step %lld", path, (long long)k, (long long)n);
        }
        end = (size_t)(nl - text) + 1;
    }
    const int rc = as_write_file_atomic(path, text, end);
    free(text);
    return rc;
}

int as_mkdir_p(const char *path) {
    char *p = as_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return as_error("%s: cannot create folder: %s", path, strerror(e));
        }
        *s = '/';
    }
    int rc = mkdir(p, 0777);
    int e = errno;
    free(p);
    if (rc != 0 && e != EEXIST) return as_error("%s: cannot create folder: %s", path, strerror(e));
    return AS_OK;
}

double as_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void as_sb_add(as_sbuf *b, const char *s, size_t len) {
    if (b->len + len + 1 > b->cap) {
        b->cap = AS_MAX(2 * b->cap, b->len + len + 1);
        b->s = as_realloc(b->s, b->cap);
    }
    if (len) memcpy(b->s + b->len, s, len); // s may be NULL when len is 0
    b->len += len;
    b->s[b->len] = 0;
}

void as_sb_puts(as_sbuf *b, const char *s) { as_sb_add(b, s, strlen(s)); }

void as_sb_printf(as_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) as_die("vsnprintf failed");
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = as_realloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
