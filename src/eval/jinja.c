// A Jinja2 subset for task templates, evaluated as jinja2 with
// undefined=StrictUndefined and keep_trailing_newline=True (lm-eval's
// environment).  See jinja.h for what is covered.
//
// A template is compiled once into statements and expression trees (their
// memory in the template's arena); a render evaluates them over Python-like
// values allocated in a per-render arena.  Errors unwind with longjmp to the
// entry point, which frees the arena: no value is ever freed on its own.
#include "eval/jinja.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_internal.h"
#include "util/common.h"
#include "util/json.h"

// ---- arena ----

typedef struct ablk {
    struct ablk *next;
    size_t used, cap;
    max_align_t data[];
} ablk;
typedef struct arena { ablk *head; } arena;

static void *ar_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 16384 ? n : 16384;
        ablk *b = as_malloc(sizeof *b + cap);
        b->next = a->head, b->used = 0, b->cap = cap;
        a->head = b;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}
static void *ar_zalloc(arena *a, size_t n) { return memset(ar_alloc(a, n), 0, n); }
static void ar_free(arena *a) {
    while (a->head) {
        ablk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}
static char *ar_strndup(arena *a, const char *s, size_t n) {
    char *p = ar_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

// A growing string in an arena.
typedef struct astr { arena *ar; char *p; size_t n, cap; } astr;
static void as_add(astr *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = AS_MAX(b->cap * 2, b->n + n + 32);
        char *p = ar_alloc(b->ar, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void as_adds(astr *b, const char *s) { as_add(b, s, strlen(s)); }
static void as_addc(astr *b, char ch) { as_add(b, &ch, 1); }
static void as_add_cp(astr *b, int32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)), u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    as_add(b, u, n);
}

// ---- UTF-8 and Python's character classes ----

static size_t u8_next(const char *s, size_t n, int32_t *cp) {
    size_t k = as_utf8_next((const unsigned char *)s, n, cp);
    if (*cp < 0) *cp = 0xFFFD;
    return k;
}
static int64_t u8_len(const char *s, size_t n) {
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}
// Byte offset of code point k (k <= length).
static size_t u8_off(const char *s, size_t n, int64_t k) {
    size_t i = 0;
    for (; i < n && k > 0; k--) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}
static bool py_space(int32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
// Case mappings: ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic.
static int32_t cp_lower(int32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0xC0) return c;
    if (c <= 0xDE && c != 0xD7) return c + 32;
    if (c >= 0x100 && c <= 0x137) return c | 1;
    if (c >= 0x139 && c <= 0x148) return (c & 1) ? c + 1 : c;
    if (c >= 0x14A && c <= 0x177) return c | 1;
    if (c == 0x178) return 0xFF;
    if (c >= 0x179 && c <= 0x17E) return (c & 1) ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}
static int32_t cp_upper(int32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0xE0) return c;
    if (c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c >= 0x100 && c <= 0x137) return c & ~1;
    if (c >= 0x139 && c <= 0x148) return (c & 1) ? c : c - 1;
    if (c >= 0x14A && c <= 0x177) return c & ~1;
    if (c >= 0x179 && c <= 0x17E) return (c & 1) ? c : c - 1;
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}
static bool cp_is_upper(int32_t c) { return cp_lower(c) != c; }
static bool cp_is_lower(int32_t c) { return cp_upper(c) != c || c == 0xDF; }
static bool cp_cased(int32_t c) { return cp_is_upper(c) || cp_is_lower(c); }
static bool cp_digit(int32_t c) { return c >= '0' && c <= '9'; }
static bool cp_alpha(int32_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == 0xAA || c == 0xB5 || c == 0xBA ||
           (c >= 0xC0 && c != 0xD7 && c != 0xF7 && !py_space(c) && !(c >= 0x2000 && c <= 0x2BFF) && !(c >= 0x3000 && c <= 0x303F));
}
static bool cp_word(int32_t c) { return cp_alpha(c) || cp_digit(c) || c == '_'; }
// Characters repr() writes as escapes (str.isprintable is false).
static bool cp_unprintable(int32_t c) {
    return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad || c == 0x1680 || (c >= 0x2000 && c <= 0x200f) ||
           (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) || c == 0x3000 || c == 0xfeff ||
           (c >= 0xd800 && c <= 0xdfff) || (c >= 0xe000 && c <= 0xf8ff) || c == 0xfff9 || c == 0xfffa || c == 0xfffb;
}

// ---- values ----

typedef enum vtype { T_UNDEF, T_NONE, T_BOOL, T_INT, T_FLOAT, T_STR, T_LIST, T_TUPLE, T_DICT, T_METHOD, T_FUNC } vtype;

typedef struct jv jv;
struct jv {
    vtype t;
    bool b;
    int64_t i;
    double f;
    const char *s; // STR: n bytes of UTF-8; UNDEF: the message; METHOD, FUNC: the name
    size_t n;
    jv **a;        // LIST, TUPLE: items; DICT: keys
    jv **vals;     // DICT: values
    int64_t len;   // LIST, TUPLE, DICT
    jv *self;      // METHOD: the object
};

static jv V_NONE = {.t = T_NONE}, V_TRUE = {.t = T_BOOL, .b = true}, V_FALSE = {.t = T_BOOL, .b = false};

static const char *type_name(const jv *v) {
    switch (v->t) {
    case T_UNDEF: return "Undefined";
    case T_NONE: return "NoneType";
    case T_BOOL: return "bool";
    case T_INT: return "int";
    case T_FLOAT: return "float";
    case T_STR: return "str";
    case T_LIST: return "list";
    case T_TUPLE: return "tuple";
    case T_DICT: return "dict";
    case T_METHOD: return "builtin_function_or_method";
    case T_FUNC: return "function";
    }
    return "?";
}

// ---- templates: expression trees and statements ----

typedef enum nkind {
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_BIN, N_NEG, N_POS, N_NOT, N_AND, N_OR, N_COND,
    N_LIST, N_TUPLE, N_DICT, N_CONCAT, N_CMP
} nkind;

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

typedef struct node node;
struct node {
    nkind k;
    int32_t pos;       // byte offset in the template source
    int op;            // N_BIN
    const char *name;  // N_NAME, N_ATTR, N_FILTER, N_TEST
    jv *lit;           // N_LIT
    node *a, *b, *c;   // operands (N_SLICE: a[b:c:step=args[0]]; N_COND: a if b else c)
    node **args;       // call/filter/test arguments, list/tuple items, dict keys, N_CMP operands
    const char **kw;   // keyword names (NULL: positional), parallel to args
    node **vals;       // N_DICT values
    int *ops;          // N_CMP operators
    int32_t nargs;
    bool negate;       // N_TEST: `is not`
};

typedef enum skind { S_TEXT, S_OUT, S_IF, S_FOR, S_SET } skind;
typedef struct stmt stmt;
typedef struct body { stmt **s; int32_t n; } body;
struct stmt {
    skind k;
    int32_t pos;
    const char *text;      // S_TEXT
    size_t tn;
    node *e;               // S_OUT, S_SET value, S_FOR iterable
    node **conds;          // S_IF: n conditions with their bodies
    body *bodies;
    int32_t n;
    body els;              // S_IF, S_FOR: else
    const char *t1, *t2;   // S_FOR targets, S_SET name
    node *filt;            // S_FOR: `if` filter
    body loop;             // S_FOR
};

struct jinja_tpl {
    arena ar;
    char *src;
    body top;
};

// ---- lexer ----

typedef enum tkind { K_EOF, K_NAME, K_INT, K_FLOAT, K_STR, K_OP } tkind;
typedef struct tok {
    tkind k;
    int32_t pos;
    const char *s; // NAME/OP: text; STR: unescaped value
    size_t n;
    int64_t iv;
    double fv;
} tok;

typedef struct parser {
    arena *ar;
    const char *src;
    size_t len;
    const char *what;
    jmp_buf jb;
    tok *t;
    int32_t nt, at;
    bool literal; // jinja_literal_eval: Python literals only
} parser;

static int32_t cp_pos(const char *src, int32_t byte) { return (int32_t)u8_len(src, (size_t)byte) + 1; }

static _Noreturn __attribute__((format(printf, 3, 4))) void pfail(parser *p, int32_t pos, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    as_error("%s: position %d: %s", p->what, cp_pos(p->src, pos), msg);
    longjmp(p->jb, 1);
}

// Python's unicode-escape of a string literal's body (as jinja2's lexer).
static const char *unescape(parser *p, const char *s, size_t n, int32_t pos, size_t *out_n) {
    astr b = {.ar = p->ar};
    as_add(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) { as_addc(&b, s[i]); continue; }
        char e = s[++i];
        int hex = 0;
        switch (e) {
        case '\n': break;
        case '\\': as_addc(&b, '\\'); break;
        case '\'': as_addc(&b, '\''); break;
        case '"': as_addc(&b, '"'); break;
        case 'a': as_addc(&b, '\a'); break;
        case 'b': as_addc(&b, '\b'); break;
        case 'f': as_addc(&b, '\f'); break;
        case 'n': as_addc(&b, '\n'); break;
        case 'r': as_addc(&b, '\r'); break;
        case 't': as_addc(&b, '\t'); break;
        case 'v': as_addc(&b, '\v'); break;
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                int v = e - '0', k = 1;
                while (k < 3 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7') v = v * 8 + (s[++i] - '0'), k++;
                as_add_cp(&b, v);
            } else {
                as_addc(&b, '\\'), as_addc(&b, e);
            }
        }
        if (hex) {
            int32_t v = 0;
            for (int k = 0; k < hex; k++) {
                char h = i + 1 < n ? s[i + 1] : 0;
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0) pfail(p, pos, "truncated \\%c escape in a string", e);
                v = v * 16 + d, i++;
            }
            if (v > 0x10FFFF) pfail(p, pos, "illegal Unicode character in a string");
            as_add_cp(&b, v);
        }
    }
    *out_n = b.n;
    return b.p;
}

static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

// Lexes the tokens of a tag from p->src[i]; `end` is "}}" or "%}" (NULL: to
// the end of the text, jinja_literal_eval).  Sets *after to the byte after the
// end marker and *strip when it was "-}}"/"-%}".
static void lex(parser *p, size_t i, const char *end, int32_t tag_pos, size_t *after, bool *strip) {
    int32_t cap = 16, depth = 0;
    p->t = ar_alloc(p->ar, (size_t)cap * sizeof *p->t), p->nt = 0, p->at = 0;
    *strip = false;
    for (;;) {
        while (i < p->len && (p->src[i] == ' ' || p->src[i] == '\t' || p->src[i] == '\n' || p->src[i] == '\r')) i++;
        if (p->nt + 1 >= cap) {
            tok *t = ar_alloc(p->ar, (size_t)cap * 2 * sizeof *t);
            memcpy(t, p->t, (size_t)p->nt * sizeof *t);
            p->t = t, cap *= 2;
        }
        tok *t = &p->t[p->nt];
        memset(t, 0, sizeof *t);
        t->pos = (int32_t)i;
        const char *s = p->src + i;
        const size_t rest = p->len - i;
        if (i >= p->len) {
            if (end) pfail(p, tag_pos, "'%s' without '%s'", end[0] == '}' ? "{{" : "{%", end);
            t->k = K_EOF;
            p->nt++;
            *after = i;
            return;
        }
        if (end && depth == 0) {
            size_t m = 0;
            if ((s[0] == '-' || (s[0] == '+' && end[0] == '%')) && rest >= 3 && !memcmp(s + 1, end, 2)) m = 3, *strip = s[0] == '-';
            else if (rest >= 2 && !memcmp(s, end, 2)) m = 2;
            if (m) {
                t->k = K_EOF;
                p->nt++;
                *after = i + m;
                return;
            }
        }
        if (s[0] >= '0' && s[0] <= '9') {
            size_t j = 0;
            char num[64];
            size_t k = 0;
            bool is_float = false, too_long = false;
            // Appends one character of the literal; one longer than the buffer is an error, not a truncation.
#define NUM_PUT(c) (k < sizeof num - 1 ? (void)(num[k++] = (c)) : (void)(too_long = true))
            while (j < rest && ((s[j] >= '0' && s[j] <= '9') || (s[j] == '_' && j + 1 < rest && s[j + 1] >= '0' && s[j + 1] <= '9'))) {
                if (s[j] != '_') NUM_PUT(s[j]);
                j++;
            }
            if (j + 1 < rest && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9' && !(i > 0 && p->src[i - 1] == '.')) {
                is_float = true;
                NUM_PUT('.'), j++;
                while (j < rest && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
                    if (s[j] != '_') NUM_PUT(s[j]);
                    j++;
                }
            }
            if (j < rest && (s[j] == 'e' || s[j] == 'E') && !(i > 0 && p->src[i - 1] == '.')) {
                size_t q = j + 1;
                if (q < rest && (s[q] == '+' || s[q] == '-')) q++;
                if (q < rest && s[q] >= '0' && s[q] <= '9') {
                    is_float = true;
                    NUM_PUT('e');
                    for (size_t r = j + 1; r < q; r++) NUM_PUT(s[r]);
                    j = q;
                    while (j < rest && s[j] >= '0' && s[j] <= '9') {
                        NUM_PUT(s[j]);
                        j++;
                    }
                }
            }
#undef NUM_PUT
            num[k] = 0;
            if (too_long) pfail(p, (int32_t)i, "numeric literal longer than %zu characters", sizeof num - 1);
            if (is_float) t->k = K_FLOAT, t->fv = strtod(num, NULL);
            else {
                errno = 0;
                unsigned long long v = strtoull(num, NULL, 10);
                if (errno || v > INT64_MAX) pfail(p, (int32_t)i, "integer %s too large", num);
                t->k = K_INT, t->iv = (int64_t)v;
                if (p->literal && num[0] == '0' && v != 0) pfail(p, (int32_t)i, "leading zeros in decimal integer literals are not permitted");
            }
            t->s = s, t->n = j;
            i += j;
        } else if (is_name_start(s[0])) {
            size_t j = 1;
            while (j < rest && is_name_char(s[j])) j++;
            t->k = K_NAME, t->s = s, t->n = j;
            i += j;
        } else if (s[0] == '\'' || s[0] == '"') {
            size_t j = 1;
            while (j < rest && s[j] != s[0]) j += s[j] == '\\' ? 2 : 1;
            if (j >= rest) pfail(p, (int32_t)i, "unterminated string");
            t->k = K_STR;
            t->s = unescape(p, s + 1, j - 1, (int32_t)i, &t->n);
            i += j + 1;
        } else {
            static const char *const OPS2[] = {"//", "**", "==", "!=", "<=", ">="};
            size_t m = 0;
            for (size_t o = 0; o < AS_ARRAY_LEN(OPS2); o++)
                if (rest >= 2 && !memcmp(s, OPS2[o], 2)) m = 2;
            if (!m && strchr("+-*/%~()[]{}.,:|=<>", s[0])) m = 1;
            if (!m) pfail(p, (int32_t)i, "unexpected character '%c'", s[0]);
            if (m == 1 && strchr("([{", s[0])) depth++;
            if (m == 1 && strchr(")]}", s[0])) {
                if (depth == 0) pfail(p, (int32_t)i, "unexpected '%c'", s[0]);
                depth--;
            }
            t->k = K_OP, t->s = s, t->n = m;
            i += m;
        }
        p->nt++;
    }
}

// ---- parser ----

static tok *cur(parser *p) { return &p->t[p->at]; }
static bool is_op(const tok *t, const char *op) { return t->k == K_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n); }
static bool is_name(const tok *t, const char *name) { return t->k == K_NAME && t->n == strlen(name) && !memcmp(t->s, name, t->n); }
static bool accept_op(parser *p, const char *op) {
    if (!is_op(cur(p), op)) return false;
    p->at++;
    return true;
}
static bool accept_name(parser *p, const char *name) {
    if (!is_name(cur(p), name)) return false;
    p->at++;
    return true;
}
static const char *tok_desc(parser *p, const tok *t) {
    if (t->k == K_EOF) return "end of tag";
    char *d = ar_alloc(p->ar, 80);
    snprintf(d, 80, "'%.*s'", (int)AS_MIN(t->n, (size_t)60), t->s);
    return d;
}
static void expect_op(parser *p, const char *op) {
    if (!accept_op(p, op)) pfail(p, cur(p)->pos, "expected '%s', got %s", op, tok_desc(p, cur(p)));
}
static const char *expect_name(parser *p) {
    tok *t = cur(p);
    if (t->k != K_NAME) pfail(p, t->pos, "expected a name, got %s", tok_desc(p, t));
    p->at++;
    return ar_strndup(p->ar, t->s, t->n);
}

static node *mknode(parser *p, nkind k, int32_t pos) {
    node *n = ar_zalloc(p->ar, sizeof *n);
    n->k = k, n->pos = pos;
    return n;
}
static jv *lit_new(parser *p, vtype t) {
    jv *v = ar_zalloc(p->ar, sizeof *v);
    v->t = t;
    return v;
}

// A growing node array in the parser's arena.
typedef struct nvec { node **a; const char **kw; int32_t n, cap; } nvec;
static void nv_push(parser *p, nvec *v, node *x, const char *kw) {
    if (v->n == v->cap) {
        int32_t cap = v->cap ? v->cap * 2 : 4;
        node **a = ar_alloc(p->ar, (size_t)cap * sizeof *a);
        const char **k = ar_alloc(p->ar, (size_t)cap * sizeof *k);
        if (v->n) memcpy(a, v->a, (size_t)v->n * sizeof *a), memcpy(k, v->kw, (size_t)v->n * sizeof *k);
        v->a = a, v->kw = k, v->cap = cap;
    }
    v->a[v->n] = x, v->kw[v->n] = kw;
    v->n++;
}

static node *p_expr(parser *p, bool with_cond);
static node *p_unary(parser *p, bool with_filter);
static node *p_or(parser *p);

// Filters and tests known at compile time (jinja2 refuses unknown ones then).
static const char *const FILTERS[] = {
    "abs", "capitalize", "count", "d", "default", "first", "float", "int", "items", "join", "last", "length", "list",
    "lower", "max", "min", "regex_replace", "replace", "reverse", "round", "safe", "sort", "string", "sum", "title",
    "trim", "upper", "wordcount"};
static const char *const TESTS[] = {
    "boolean", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "gt", "in", "integer",
    "iterable", "le", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sequence", "string", "true",
    "undefined", "upper", "==", "!=", "<", "<=", ">", ">=", "greaterthan", "lessthan", "callable"};
static bool in_list(const char *const *l, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(l[i], s)) return true;
    return false;
}

static void p_call_args(parser *p, node *n) {
    // After '(': positional and name=value arguments, then ')'.
    nvec v = {0};
    bool kw_seen = false;
    while (!is_op(cur(p), ")")) {
        if (v.n) expect_op(p, ",");
        if (is_op(cur(p), ")")) break;
        if (is_op(cur(p), "*") || is_op(cur(p), "**")) pfail(p, cur(p)->pos, "*args and **kwargs are not supported");
        const char *kw = NULL;
        if (cur(p)->k == K_NAME && is_op(&p->t[p->at + 1], "=")) {
            kw = expect_name(p);
            p->at++;
            kw_seen = true;
        } else if (kw_seen) {
            pfail(p, cur(p)->pos, "a positional argument follows a keyword argument");
        }
        nv_push(p, &v, p_expr(p, true), kw);
    }
    expect_op(p, ")");
    n->args = v.a, n->kw = v.kw, n->nargs = v.n;
}

static node *p_subscript(parser *p, node *obj) {
    tok *t = cur(p);
    if (accept_op(p, ".")) {
        tok *a = cur(p);
        if (a->k == K_NAME) {
            node *n = mknode(p, N_ATTR, t->pos);
            n->a = obj, n->name = expect_name(p);
            return n;
        }
        if (a->k == K_INT) {
            p->at++;
            node *n = mknode(p, N_ITEM, t->pos), *k = mknode(p, N_LIT, a->pos);
            k->lit = lit_new(p, T_INT), k->lit->i = a->iv;
            n->a = obj, n->b = k;
            return n;
        }
        pfail(p, a->pos, "expected a name after '.', got %s", tok_desc(p, a));
    }
    expect_op(p, "[");
    node *parts[3] = {0};
    int np = 0;
    bool slice = false;
    for (;;) {
        if (is_op(cur(p), ":")) {
            p->at++;
            slice = true;
            if (++np > 2) pfail(p, t->pos, "a slice has at most three parts");
            continue;
        }
        if (is_op(cur(p), "]")) break;
        if (parts[np]) pfail(p, cur(p)->pos, "expected ']' or ':', got %s", tok_desc(p, cur(p)));
        if (is_op(cur(p), ",")) pfail(p, cur(p)->pos, "tuple subscripts are not supported");
        parts[np] = p_expr(p, true);
    }
    expect_op(p, "]");
    if (!slice) {
        if (!parts[0]) pfail(p, t->pos, "empty subscript");
        node *n = mknode(p, N_ITEM, t->pos);
        n->a = obj, n->b = parts[0];
        return n;
    }
    node *n = mknode(p, N_SLICE, t->pos);
    n->a = obj, n->b = parts[0], n->c = parts[1];
    n->args = ar_alloc(p->ar, sizeof *n->args);
    n->args[0] = parts[2];
    n->nargs = 1;
    return n;
}

static node *p_primary(parser *p) {
    tok *t = cur(p);
    node *n;
    if (t->k == K_NAME) {
        p->at++;
        static const struct { const char *name; jv *v; } CONSTS[] = {
            {"true", &V_TRUE}, {"True", &V_TRUE}, {"false", &V_FALSE}, {"False", &V_FALSE}, {"none", &V_NONE}, {"None", &V_NONE}};
        for (size_t i = 0; i < AS_ARRAY_LEN(CONSTS); i++)
            if (t->n == strlen(CONSTS[i].name) && !memcmp(t->s, CONSTS[i].name, t->n)) {
                if (p->literal && CONSTS[i].name[0] >= 'a') pfail(p, t->pos, "'%s' is not a Python literal", CONSTS[i].name);
                n = mknode(p, N_LIT, t->pos);
                n->lit = CONSTS[i].v;
                return n;
            }
        if (p->literal) pfail(p, t->pos, "'%.*s' is not a Python literal", (int)t->n, t->s);
        n = mknode(p, N_NAME, t->pos);
        n->name = ar_strndup(p->ar, t->s, t->n);
        return n;
    }
    if (t->k == K_STR) {
        // Adjacent strings concatenate.
        astr b = {.ar = p->ar};
        as_add(&b, "", 0);
        while (cur(p)->k == K_STR) as_add(&b, cur(p)->s, cur(p)->n), p->at++;
        n = mknode(p, N_LIT, t->pos);
        n->lit = lit_new(p, T_STR), n->lit->s = b.p, n->lit->n = b.n;
        return n;
    }
    if (t->k == K_INT || t->k == K_FLOAT) {
        p->at++;
        n = mknode(p, N_LIT, t->pos);
        if (t->k == K_INT) n->lit = lit_new(p, T_INT), n->lit->i = t->iv;
        else n->lit = lit_new(p, T_FLOAT), n->lit->f = t->fv;
        return n;
    }
    if (accept_op(p, "(")) {
        nvec v = {0};
        bool comma = false;
        while (!is_op(cur(p), ")")) {
            if (v.n) expect_op(p, ","), comma = true;
            if (is_op(cur(p), ")")) break;
            nv_push(p, &v, p_expr(p, true), NULL);
        }
        expect_op(p, ")");
        if (v.n == 1 && !comma) return v.a[0];
        n = mknode(p, N_TUPLE, t->pos);
        n->args = v.a, n->nargs = v.n;
        return n;
    }
    if (accept_op(p, "[")) {
        nvec v = {0};
        while (!is_op(cur(p), "]")) {
            if (v.n) expect_op(p, ",");
            if (is_op(cur(p), "]")) break;
            nv_push(p, &v, p_expr(p, true), NULL);
        }
        expect_op(p, "]");
        n = mknode(p, N_LIST, t->pos);
        n->args = v.a, n->nargs = v.n;
        return n;
    }
    if (accept_op(p, "{")) {
        nvec k = {0}, v = {0};
        while (!is_op(cur(p), "}")) {
            if (k.n) expect_op(p, ",");
            if (is_op(cur(p), "}")) break;
            nv_push(p, &k, p_expr(p, true), NULL);
            expect_op(p, ":");
            nv_push(p, &v, p_expr(p, true), NULL);
        }
        expect_op(p, "}");
        n = mknode(p, N_DICT, t->pos);
        n->args = k.a, n->vals = v.a, n->nargs = k.n;
        return n;
    }
    pfail(p, t->pos, "unexpected %s", tok_desc(p, t));
}

static node *p_postfix(parser *p, node *n) {
    for (;;) {
        if (is_op(cur(p), ".") || is_op(cur(p), "[")) {
            if (p->literal) pfail(p, cur(p)->pos, "not a Python literal");
            n = p_subscript(p, n);
        } else if (is_op(cur(p), "(")) {
            if (p->literal) pfail(p, cur(p)->pos, "not a Python literal");
            node *c = mknode(p, N_CALL, cur(p)->pos);
            p->at++;
            c->a = n;
            p_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static node *p_filter_expr(parser *p, node *n) {
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, "|")) {
            if (p->literal) pfail(p, t->pos, "not a Python literal");
            p->at++;
            tok *nt = cur(p);
            const char *name = expect_name(p);
            if (!in_list(FILTERS, AS_ARRAY_LEN(FILTERS), name)) pfail(p, nt->pos, "no filter named '%s'", name);
            node *f = mknode(p, N_FILTER, nt->pos);
            f->name = name, f->a = n;
            if (accept_op(p, "(")) p_call_args(p, f);
            n = f;
        } else if (is_name(t, "is")) {
            if (p->literal) pfail(p, t->pos, "not a Python literal");
            p->at++;
            bool neg = accept_name(p, "not");
            tok *nt = cur(p);
            const char *name;
            if (nt->k == K_NAME) name = expect_name(p);
            else if (nt->k == K_OP && (is_op(nt, "==") || is_op(nt, "!=") || is_op(nt, "<") || is_op(nt, "<=") || is_op(nt, ">") || is_op(nt, ">=")))
                name = ar_strndup(p->ar, nt->s, nt->n), p->at++;
            else pfail(p, nt->pos, "expected a test name after 'is', got %s", tok_desc(p, nt));
            if (!in_list(TESTS, AS_ARRAY_LEN(TESTS), name)) pfail(p, nt->pos, "no test named '%s'", name);
            node *f = mknode(p, N_TEST, nt->pos);
            f->name = name, f->a = n, f->negate = neg;
            tok *a = cur(p);
            if (accept_op(p, "(")) p_call_args(p, f);
            else if ((a->k == K_NAME || a->k == K_STR || a->k == K_INT || a->k == K_FLOAT || is_op(a, "[") || is_op(a, "{")) &&
                     !is_name(a, "else") && !is_name(a, "or") && !is_name(a, "and") && !is_name(a, "if")) {
                if (is_name(a, "is")) pfail(p, a->pos, "tests cannot be chained with 'is'");
                node *arg = p_postfix(p, p_primary(p));
                f->args = ar_alloc(p->ar, sizeof *f->args), f->kw = ar_zalloc(p->ar, sizeof *f->kw);
                f->args[0] = arg, f->nargs = 1;
            }
            n = f;
        } else if (is_op(t, "(")) {
            if (p->literal) pfail(p, t->pos, "not a Python literal");
            node *c = mknode(p, N_CALL, t->pos);
            p->at++;
            c->a = n;
            p_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static node *p_unary(parser *p, bool with_filter) {
    tok *t = cur(p);
    node *n;
    if (accept_op(p, "-")) n = mknode(p, N_NEG, t->pos), n->a = p_unary(p, false);
    else if (accept_op(p, "+")) n = mknode(p, N_POS, t->pos), n->a = p_unary(p, false);
    else n = p_postfix(p, p_primary(p));
    if (p->literal && (n->k == N_NEG || n->k == N_POS) && !(n->a->k == N_LIT && (n->a->lit->t == T_INT || n->a->lit->t == T_FLOAT)))
        pfail(p, t->pos, "not a Python literal");
    if (with_filter) n = p_filter_expr(p, n);
    return n;
}

static node *bin(parser *p, int op, int32_t pos, node *a, node *b) {
    if (p->literal) pfail(p, pos, "not a Python literal");
    node *n = mknode(p, N_BIN, pos);
    n->op = op, n->a = a, n->b = b;
    return n;
}

static node *p_pow(parser *p) {
    node *n = p_unary(p, true);
    while (is_op(cur(p), "**")) {
        int32_t pos = cur(p)->pos;
        p->at++;
        n = bin(p, OP_POW, pos, n, p_unary(p, true));
    }
    return n;
}

static node *p_math2(parser *p) {
    node *n = p_pow(p);
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV : is_op(t, "%") ? OP_MOD : 0;
        if (!op) return n;
        p->at++;
        n = bin(p, op, t->pos, n, p_pow(p));
    }
}

static node *p_concat(parser *p) {
    node *n = p_math2(p);
    if (!is_op(cur(p), "~")) return n;
    if (p->literal) pfail(p, cur(p)->pos, "not a Python literal");
    nvec v = {0};
    nv_push(p, &v, n, NULL);
    int32_t pos = cur(p)->pos;
    while (accept_op(p, "~")) nv_push(p, &v, p_math2(p), NULL);
    node *c = mknode(p, N_CONCAT, pos);
    c->args = v.a, c->nargs = v.n;
    return c;
}

static node *p_math1(parser *p) {
    node *n = p_concat(p);
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : 0;
        if (!op) return n;
        p->at++;
        n = bin(p, op, t->pos, n, p_concat(p));
    }
}

static node *p_compare(parser *p) {
    node *first = p_math1(p);
    nvec v = {0};
    int ops[64], no = 0;
    int32_t pos = cur(p)->pos;
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT : is_op(t, "<=") ? OP_LE
               : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE : is_name(t, "in") ? OP_IN : 0;
        if (!op && is_name(t, "not") && is_name(&p->t[p->at + 1], "in")) op = OP_NOTIN, p->at++;
        if (!op) break;
        if (p->literal) pfail(p, t->pos, "not a Python literal");
        if (no == 64) pfail(p, t->pos, "too many comparisons in a row");
        p->at++;
        ops[no++] = op;
        nv_push(p, &v, p_math1(p), NULL);
    }
    if (!no) return first;
    node *n = mknode(p, N_CMP, pos);
    n->a = first, n->args = v.a, n->nargs = v.n;
    n->ops = ar_alloc(p->ar, (size_t)no * sizeof *n->ops);
    memcpy(n->ops, ops, (size_t)no * sizeof *ops);
    return n;
}

static node *p_not(parser *p) {
    tok *t = cur(p);
    if (is_name(t, "not")) {
        if (p->literal) pfail(p, t->pos, "not a Python literal");
        p->at++;
        node *n = mknode(p, N_NOT, t->pos);
        n->a = p_not(p);
        return n;
    }
    return p_compare(p);
}

static node *p_and(parser *p) {
    node *n = p_not(p);
    while (is_name(cur(p), "and")) {
        if (p->literal) pfail(p, cur(p)->pos, "not a Python literal");
        node *a = mknode(p, N_AND, cur(p)->pos);
        p->at++;
        a->a = n, a->b = p_not(p);
        n = a;
    }
    return n;
}

static node *p_or(parser *p) {
    node *n = p_and(p);
    while (is_name(cur(p), "or")) {
        if (p->literal) pfail(p, cur(p)->pos, "not a Python literal");
        node *o = mknode(p, N_OR, cur(p)->pos);
        p->at++;
        o->a = n, o->b = p_and(p);
        n = o;
    }
    return n;
}

static node *p_condexpr(parser *p) {
    node *n = p_or(p);
    while (is_name(cur(p), "if")) {
        if (p->literal) pfail(p, cur(p)->pos, "not a Python literal");
        node *c = mknode(p, N_COND, cur(p)->pos);
        p->at++;
        c->a = n, c->b = p_or(p);
        if (accept_name(p, "else")) c->c = p_condexpr(p);
        n = c;
    }
    return n;
}

static node *p_expr(parser *p, bool with_cond) { return with_cond ? p_condexpr(p) : p_or(p); }

// An expression or a bare tuple `a, b` (what {{ }} and literal_eval take).
static node *p_tuple(parser *p, bool with_cond) {
    int32_t pos = cur(p)->pos;
    node *first = p_expr(p, with_cond);
    if (!is_op(cur(p), ",")) return first;
    nvec v = {0};
    nv_push(p, &v, first, NULL);
    while (accept_op(p, ",")) {
        if (cur(p)->k == K_EOF) break;
        nv_push(p, &v, p_expr(p, with_cond), NULL);
    }
    node *n = mknode(p, N_TUPLE, pos);
    n->args = v.a, n->nargs = v.n;
    return n;
}

static void expect_end(parser *p) {
    if (cur(p)->k != K_EOF) pfail(p, cur(p)->pos, "unexpected %s", tok_desc(p, cur(p)));
}

// ---- template structure ----

typedef struct part {
    int kind; // 0 text, 1 {{ }}, 2 {% %}
    int32_t pos;
    const char *text;
    size_t n;
    tok *t;
    int32_t nt;
} part;

typedef struct tparser {
    parser *p;
    part *parts;
    int32_t n, at;
} tparser;

static void stmt_push(parser *p, body *b, int32_t *cap, stmt *s) {
    if (b->n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        stmt **a = ar_alloc(p->ar, (size_t)*cap * sizeof *a);
        if (b->n) memcpy(a, b->s, (size_t)b->n * sizeof *a);
        b->s = a;
    }
    b->s[b->n++] = s;
}

static void use_part(tparser *tp, part *pt) {
    tp->p->t = pt->t, tp->p->nt = pt->nt, tp->p->at = 0;
}

// Parses statements until a block tag named in `ends` (returned, consumed) or
// the end of the template (NULL; an error when `ends` is given).
static const char *parse_body(tparser *tp, body *out, const char *const *ends, int n_ends, int32_t open_pos, const char *open) {
    parser *p = tp->p;
    int32_t cap = 0;
    memset(out, 0, sizeof *out);
    while (tp->at < tp->n) {
        part *pt = &tp->parts[tp->at++];
        stmt *s = ar_zalloc(p->ar, sizeof *s);
        s->pos = pt->pos;
        if (pt->kind == 0) {
            s->k = S_TEXT, s->text = pt->text, s->tn = pt->n;
            stmt_push(p, out, &cap, s);
            continue;
        }
        use_part(tp, pt);
        if (pt->kind == 1) {
            s->k = S_OUT;
            s->e = p_tuple(p, true);
            expect_end(p);
            stmt_push(p, out, &cap, s);
            continue;
        }
        tok *t = cur(p);
        if (t->k != K_NAME) pfail(p, t->pos, "expected a tag name, got %s", tok_desc(p, t));
        const char *name = expect_name(p);
        for (int i = 0; i < n_ends; i++)
            if (!strcmp(name, ends[i])) return ends[i];
        if (!strcmp(name, "if")) {
            s->k = S_IF;
            node *conds[64];
            body bodies[64];
            int32_t n = 0;
            static const char *const IF_ENDS[] = {"elif", "else", "endif"};
            for (;;) {
                if (n == 64) pfail(p, pt->pos, "too many elif branches");
                conds[n] = p_tuple(p, true);
                expect_end(p);
                const char *e = parse_body(tp, &bodies[n], IF_ENDS, 3, pt->pos, "if");
                n++;
                if (!strcmp(e, "elif")) continue;
                if (!strcmp(e, "else")) {
                    expect_end(p);
                    static const char *const ELSE_ENDS[] = {"endif"};
                    parse_body(tp, &s->els, ELSE_ENDS, 1, pt->pos, "if");
                }
                expect_end(p);
                break;
            }
            s->n = n;
            s->conds = ar_alloc(p->ar, (size_t)n * sizeof *s->conds);
            s->bodies = ar_alloc(p->ar, (size_t)n * sizeof *s->bodies);
            memcpy(s->conds, conds, (size_t)n * sizeof *conds);
            memcpy(s->bodies, bodies, (size_t)n * sizeof *bodies);
        } else if (!strcmp(name, "for")) {
            s->k = S_FOR;
            s->t1 = expect_name(p);
            if (accept_op(p, ",")) s->t2 = expect_name(p);
            if (!accept_name(p, "in")) pfail(p, cur(p)->pos, "expected 'in', got %s", tok_desc(p, cur(p)));
            s->e = p_expr(p, false);
            if (accept_name(p, "if")) s->filt = p_expr(p, true);
            if (accept_name(p, "recursive")) pfail(p, pt->pos, "recursive loops are not supported");
            expect_end(p);
            static const char *const FOR_ENDS[] = {"else", "endfor"};
            const char *e = parse_body(tp, &s->loop, FOR_ENDS, 2, pt->pos, "for");
            if (!strcmp(e, "else")) {
                expect_end(p);
                static const char *const ELSE_ENDS[] = {"endfor"};
                parse_body(tp, &s->els, ELSE_ENDS, 1, pt->pos, "for");
            }
            expect_end(p);
        } else if (!strcmp(name, "set")) {
            s->k = S_SET;
            s->t1 = expect_name(p);
            if (!accept_op(p, "=")) pfail(p, cur(p)->pos, "expected '=' (block set and tuple targets are not supported)");
            s->e = p_tuple(p, true);
            expect_end(p);
        } else {
            pfail(p, t->pos, "unsupported tag '%s' (if, elif, else, endif, for, endfor, set)", name);
        }
        stmt_push(p, out, &cap, s);
    }
    if (n_ends) pfail(p, open_pos, "'%s' without '%s'", open, ends[n_ends - 1]);
    return NULL;
}

static void split_parts(parser *p, part **out, int32_t *n_out) {
    int32_t cap = 8, n = 0;
    part *parts = ar_alloc(p->ar, (size_t)cap * sizeof *parts);
    size_t i = 0;
    bool strip_next = false;
    while (i <= p->len) {
        size_t j = i;
        int kind = 0;
        for (; j + 1 < p->len; j++)
            if (p->src[j] == '{' && (p->src[j + 1] == '{' || p->src[j + 1] == '%' || p->src[j + 1] == '#')) {
                kind = p->src[j + 1];
                break;
            }
        if (!kind) j = p->len;
        const char *text = p->src + i;
        size_t tn = j - i;
        if (strip_next) {
            size_t k = eval_py_lstrip_len(text, tn);
            text += k, tn -= k;
        }
        if (kind && j + 2 < p->len && p->src[j + 2] == '-') tn = eval_py_rstrip_len(text, tn);
        if (n + 2 >= cap) {
            part *np = ar_alloc(p->ar, (size_t)cap * 2 * sizeof *np);
            memcpy(np, parts, (size_t)n * sizeof *np);
            parts = np, cap *= 2;
        }
        if (tn) parts[n++] = (part){.kind = 0, .pos = (int32_t)(text - p->src), .text = text, .n = tn};
        if (!kind) break;
        size_t start = j + 2;
        if (start < p->len && (p->src[start] == '-' || p->src[start] == '+')) start++;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t k = start; k + 1 < p->len; k++)
                if (p->src[k] == '#' && p->src[k + 1] == '}') { e = p->src + k; break; }
            if (!e) pfail(p, (int32_t)j, "'{#' without '#}'");
            strip_next = e > p->src + start && e[-1] == '-';
            i = (size_t)(e - p->src) + 2;
            continue;
        }
        size_t after;
        bool strip;
        lex(p, start, kind == '{' ? "}}" : "%}", (int32_t)j, &after, &strip);
        parts[n++] = (part){.kind = kind == '{' ? 1 : 2, .pos = (int32_t)j, .t = p->t, .nt = p->nt};
        strip_next = strip;
        i = after;
    }
    *out = parts, *n_out = n;
}

int jinja_compile(const char *src, const char *what, jinja_tpl **out) {
    *out = NULL;
    jinja_tpl *t = as_calloc(1, sizeof *t);
    t->src = as_strdup(src);
    parser p = {.ar = &t->ar, .src = t->src, .len = strlen(src), .what = what};
    if (setjmp(p.jb)) {
        jinja_free(t);
        return AS_FAIL;
    }
    tparser tp = {.p = &p};
    split_parts(&p, &tp.parts, &tp.n);
    parse_body(&tp, &t->top, NULL, 0, 0, NULL);
    *out = t;
    return AS_OK;
}

void jinja_free(jinja_tpl *t) {
    if (!t) return;
    ar_free(&t->ar);
    free(t->src);
    free(t);
}

bool jinja_is_single_expr(const jinja_tpl *t) { return t->top.n == 1 && t->top.s[0]->k == S_OUT; }

// ---- evaluation ----

typedef struct frame {
    struct frame *up;
    const char **names;
    jv **vals;
    int32_t n, cap;
} frame;

typedef struct ctx {
    arena ar;
    jmp_buf jb;
    const char *what, *src;
    const cJSON *vars;
    frame *top;
    int depth;
} ctx;

static _Noreturn __attribute__((format(printf, 3, 4))) void efail(ctx *c, int32_t pos, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->src) as_error("%s: position %d: %s", c->what, cp_pos(c->src, pos), msg);
    else as_error("%s: %s", c->what, msg);
    longjmp(c->jb, 1);
}

static jv *mk(ctx *c, vtype t) {
    jv *v = ar_zalloc(&c->ar, sizeof *v);
    v->t = t;
    return v;
}
static jv *mk_int(ctx *c, int64_t i) {
    jv *v = mk(c, T_INT);
    v->i = i;
    return v;
}
static jv *mk_float(ctx *c, double f) {
    jv *v = mk(c, T_FLOAT);
    v->f = f;
    return v;
}
static jv *mk_bool(bool b) { return b ? &V_TRUE : &V_FALSE; }
static jv *mk_str(ctx *c, const char *s, size_t n) {
    jv *v = mk(c, T_STR);
    v->s = s, v->n = n;
    return v;
}
static jv *mk_strc(ctx *c, const char *s, size_t n) { return mk_str(c, ar_strndup(&c->ar, s, n), n); }
static jv *mk_undef(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static jv *mk_undef(ctx *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jv *v = mk(c, T_UNDEF);
    v->s = ar_strndup(&c->ar, msg, strlen(msg));
    return v;
}
static jv *mk_seq(ctx *c, vtype t, int64_t n) {
    jv *v = mk(c, t);
    v->len = n;
    v->a = ar_alloc(&c->ar, (size_t)AS_MAX(n, 1) * sizeof *v->a);
    return v;
}

// A growing list value.
static void seq_push(ctx *c, jv *l, int64_t *cap, jv *x) {
    if (l->len == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        jv **a = ar_alloc(&c->ar, (size_t)*cap * sizeof *a);
        if (l->len) memcpy(a, l->a, (size_t)l->len * sizeof *a);
        l->a = a;
    }
    l->a[l->len++] = x;
}

static jv *from_json(ctx *c, const cJSON *j) {
    if (cJSON_IsNull(j)) return &V_NONE;
    if (cJSON_IsBool(j)) return mk_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double x = j->valuedouble;
        if (x == floor(x) && fabs(x) < 9007199254740992.0) return mk_int(c, (int64_t)x);
        return mk_float(c, x);
    }
    if (cJSON_IsString(j)) return mk_str(c, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j)) {
        jv *l = mk_seq(c, T_LIST, cJSON_GetArraySize(j));
        int64_t k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) l->a[k++] = from_json(c, e);
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv *d = mk_seq(c, T_DICT, cJSON_GetArraySize(j));
        d->vals = ar_alloc(&c->ar, (size_t)AS_MAX(d->len, 1) * sizeof *d->vals);
        int64_t k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            d->a[k] = mk_str(c, e->string, strlen(e->string));
            d->vals[k++] = from_json(c, e);
        }
        return d;
    }
    return &V_NONE;
}

static void undef_fail(ctx *c, int32_t pos, const jv *v) { efail(c, pos, "%s", v->s); }
static const jv *need(ctx *c, int32_t pos, const jv *v) {
    if (v->t == T_UNDEF) undef_fail(c, pos, v);
    return v;
}

static bool is_num(const jv *v) { return v->t == T_BOOL || v->t == T_INT || v->t == T_FLOAT; }
static bool is_seq(const jv *v) { return v->t == T_LIST || v->t == T_TUPLE; }
static int64_t ival(const jv *v) { return v->t == T_BOOL ? v->b : v->i; }
static double fval(const jv *v) { return v->t == T_FLOAT ? v->f : (double)ival(v); }

// ---- str() and repr() ----

static void put_repr(ctx *c, astr *b, const jv *v, int32_t pos);

static void put_str(ctx *c, astr *b, const jv *v, int32_t pos) {
    char buf[40];
    switch (v->t) {
    case T_UNDEF: undef_fail(c, pos, v); break;
    case T_NONE: as_adds(b, "None"); break;
    case T_BOOL: as_adds(b, v->b ? "True" : "False"); break;
    case T_INT: snprintf(buf, sizeof buf, "%lld", (long long)v->i), as_adds(b, buf); break;
    case T_FLOAT: eval_py_float(v->f, buf), as_adds(b, buf); break;
    case T_STR: as_add(b, v->s, v->n); break;
    case T_LIST:
    case T_TUPLE:
        as_addc(b, v->t == T_LIST ? '[' : '(');
        for (int64_t i = 0; i < v->len; i++) {
            if (i) as_adds(b, ", ");
            put_repr(c, b, v->a[i], pos);
        }
        if (v->t == T_TUPLE && v->len == 1) as_addc(b, ',');
        as_addc(b, v->t == T_LIST ? ']' : ')');
        break;
    case T_DICT:
        as_addc(b, '{');
        for (int64_t i = 0; i < v->len; i++) {
            if (i) as_adds(b, ", ");
            put_repr(c, b, v->a[i], pos);
            as_adds(b, ": ");
            put_repr(c, b, v->vals[i], pos);
        }
        as_addc(b, '}');
        break;
    case T_METHOD: as_adds(b, "<built-in method "), as_adds(b, v->s), as_adds(b, ">"); break;
    case T_FUNC: as_adds(b, "<function "), as_adds(b, v->s), as_adds(b, ">"); break;
    }
}

static void put_repr(ctx *c, astr *b, const jv *v, int32_t pos) {
    if (v->t != T_STR) { put_str(c, b, v, pos); return; }
    bool sq = memchr(v->s, '\'', v->n) != NULL, dq = memchr(v->s, '"', v->n) != NULL;
    const char q = sq && !dq ? '"' : '\'';
    as_addc(b, q);
    for (size_t i = 0; i < v->n;) {
        int32_t cp;
        size_t k = u8_next(v->s + i, v->n - i, &cp);
        char e[16];
        if (cp == q || cp == '\\') as_addc(b, '\\'), as_addc(b, (char)cp);
        else if (cp == '\n') as_adds(b, "\\n");
        else if (cp == '\r') as_adds(b, "\\r");
        else if (cp == '\t') as_adds(b, "\\t");
        else if (cp_unprintable(cp)) {
            snprintf(e, sizeof e, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)cp);
            as_adds(b, e);
        } else as_add(b, v->s + i, k);
        i += k;
    }
    as_addc(b, q);
}

static jv *to_str(ctx *c, const jv *v, int32_t pos) {
    if (v->t == T_STR) return (jv *)v;
    astr b = {.ar = &c->ar};
    as_add(&b, "", 0);
    put_str(c, &b, v, pos);
    return mk_str(c, b.p, b.n);
}

// ---- truth, equality, order ----

static bool truthy(ctx *c, const jv *v, int32_t pos) {
    switch (v->t) {
    case T_UNDEF: undef_fail(c, pos, v); return false;
    case T_NONE: return false;
    case T_BOOL: return v->b;
    case T_INT: return v->i != 0;
    case T_FLOAT: return v->f != 0;
    case T_STR: return v->n > 0;
    case T_LIST:
    case T_TUPLE:
    case T_DICT: return v->len > 0;
    default: return true;
    }
}

static bool py_eq(ctx *c, const jv *a, const jv *b, int32_t pos) {
    need(c, pos, a), need(c, pos, b);
    if (is_num(a) && is_num(b)) {
        if (a->t == T_FLOAT || b->t == T_FLOAT) return fval(a) == fval(b);
        return ival(a) == ival(b);
    }
    if (a->t != b->t) return false;
    switch (a->t) {
    case T_NONE: return true;
    case T_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case T_LIST:
    case T_TUPLE:
        if (a->len != b->len) return false;
        for (int64_t i = 0; i < a->len; i++)
            if (!py_eq(c, a->a[i], b->a[i], pos)) return false;
        return true;
    case T_DICT:
        if (a->len != b->len) return false;
        for (int64_t i = 0; i < a->len; i++) {
            bool found = false;
            for (int64_t j = 0; j < b->len && !found; j++)
                if (py_eq(c, a->a[i], b->a[j], pos)) {
                    if (!py_eq(c, a->vals[i], b->vals[j], pos)) return false;
                    found = true;
                }
            if (!found) return false;
        }
        return true;
    default: return a == b;
    }
}

// <0, 0, >0; a TypeError for types Python does not order.
static int py_cmp(ctx *c, const jv *a, const jv *b, int32_t pos, const char *op) {
    need(c, pos, a), need(c, pos, b);
    if (is_num(a) && is_num(b)) {
        if (a->t == T_FLOAT || b->t == T_FLOAT) {
            double x = fval(a), y = fval(b);
            return x < y ? -1 : x > y ? 1 : 0;
        }
        int64_t x = ival(a), y = ival(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a->t == T_STR && b->t == T_STR) {
        int r = memcmp(a->s, b->s, AS_MIN(a->n, b->n));
        return r ? r : a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
    }
    if (a->t == b->t && is_seq(a)) {
        for (int64_t i = 0; i < a->len && i < b->len; i++)
            if (!py_eq(c, a->a[i], b->a[i], pos)) return py_cmp(c, a->a[i], b->a[i], pos, op);
        return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
    }
    efail(c, pos, "'%s' not supported between instances of '%s' and '%s'", op, type_name(a), type_name(b));
}

static bool contains(ctx *c, const jv *hay, const jv *x, int32_t pos) {
    need(c, pos, hay), need(c, pos, x);
    if (hay->t == T_STR) {
        if (x->t != T_STR) efail(c, pos, "'in <string>' requires string as left operand, not %s", type_name(x));
        if (x->n == 0) return true;
        for (size_t i = 0; i + x->n <= hay->n; i++)
            if (!memcmp(hay->s + i, x->s, x->n)) return true;
        return false;
    }
    if (is_seq(hay) || hay->t == T_DICT) {
        for (int64_t i = 0; i < hay->len; i++)
            if (py_eq(c, hay->a[i], x, pos)) return true;
        return false;
    }
    efail(c, pos, "argument of type '%s' is not iterable", type_name(hay));
}

// ---- arithmetic ----

static const char *OP_SYM[] = {"", "+", "-", "*", "/", "//", "%", "**"};

static jv *repeat(ctx *c, const jv *s, int64_t k) {
    if (k < 0) k = 0;
    if (s->t == T_STR) {
        if (k && s->n > ((size_t)1 << 28) / (size_t)k) efail(c, 0, "repetition too large");
        astr b = {.ar = &c->ar};
        as_add(&b, "", 0);
        for (int64_t i = 0; i < k; i++) as_add(&b, s->s, s->n);
        return mk_str(c, b.p, b.n);
    }
    if (k && s->len > (1 << 24) / k) efail(c, 0, "repetition too large");
    jv *l = mk_seq(c, s->t, s->len * k);
    for (int64_t i = 0; i < k; i++) memcpy(l->a + i * s->len, s->a, (size_t)s->len * sizeof *l->a);
    return l;
}

static jv *arith(ctx *c, int op, const jv *a, const jv *b, int32_t pos) {
    need(c, pos, a), need(c, pos, b);
    if (is_num(a) && is_num(b)) {
        if (a->t != T_FLOAT && b->t != T_FLOAT && op != OP_DIV) {
            int64_t x = ival(a), y = ival(b), r = 0;
            switch (op) {
            case OP_ADD: if (__builtin_add_overflow(x, y, &r)) goto big; return mk_int(c, r);
            case OP_SUB: if (__builtin_sub_overflow(x, y, &r)) goto big; return mk_int(c, r);
            case OP_MUL: if (__builtin_mul_overflow(x, y, &r)) goto big; return mk_int(c, r);
            case OP_FLOORDIV:
            case OP_MOD: {
                if (y == 0) efail(c, pos, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) goto big;
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) q--, m += y;
                return mk_int(c, op == OP_MOD ? m : q);
            }
            case OP_POW:
                if (y >= 0) {
                    r = 1;
                    for (int64_t i = 0; i < y; i++)
                        if (__builtin_mul_overflow(r, x, &r)) goto big;
                    return mk_int(c, r);
                }
                return mk_float(c, pow((double)x, (double)y));
            }
        big:
            efail(c, pos, "integer overflow in '%s'", OP_SYM[op]);
        }
        double x = fval(a), y = fval(b);
        switch (op) {
        case OP_ADD: return mk_float(c, x + y);
        case OP_SUB: return mk_float(c, x - y);
        case OP_MUL: return mk_float(c, x * y);
        case OP_DIV:
            if (y == 0) efail(c, pos, "division by zero");
            return mk_float(c, x / y);
        case OP_FLOORDIV:
            if (y == 0) efail(c, pos, "float floor division by zero");
            return mk_float(c, floor(x / y));
        case OP_MOD: {
            if (y == 0) efail(c, pos, "float modulo");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return mk_float(c, m);
        }
        case OP_POW: return mk_float(c, pow(x, y));
        }
    }
    if (op == OP_ADD && a->t == T_STR && b->t == T_STR) {
        char *s = ar_alloc(&c->ar, a->n + b->n + 1);
        memcpy(s, a->s, a->n), memcpy(s + a->n, b->s, b->n), s[a->n + b->n] = 0;
        return mk_str(c, s, a->n + b->n);
    }
    if (op == OP_ADD && a->t == b->t && is_seq(a)) {
        jv *l = mk_seq(c, a->t, a->len + b->len);
        memcpy(l->a, a->a, (size_t)a->len * sizeof *l->a);
        memcpy(l->a + a->len, b->a, (size_t)b->len * sizeof *l->a);
        return l;
    }
    if (op == OP_ADD && (a->t == T_STR || is_seq(a)))
        efail(c, pos, "can only concatenate %s (not \"%s\") to %s", type_name(a), type_name(b), type_name(a));
    if (op == OP_MUL && (a->t == T_STR || is_seq(a)) && (b->t == T_INT || b->t == T_BOOL)) return repeat(c, a, ival(b));
    if (op == OP_MUL && (b->t == T_STR || is_seq(b)) && (a->t == T_INT || a->t == T_BOOL)) return repeat(c, b, ival(a));
    efail(c, pos, "unsupported operand type(s) for %s: '%s' and '%s'", OP_SYM[op], type_name(a), type_name(b));
}

// ---- attributes, items, slices ----

static const char *const STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "replace", "lower", "upper", "capitalize", "title",
    "startswith", "endswith", "find", "rfind", "index", "rindex", "count", "join", "isdigit", "isalpha", "isalnum",
    "isspace", "isupper", "islower", "isnumeric", "isdecimal"};
static const char *const LIST_METHODS[] = {"index", "count"};
static const char *const DICT_METHODS[] = {"get", "keys", "values", "items", "clear", "copy", "fromkeys", "pop", "popitem", "setdefault", "update"};

static jv *method(ctx *c, const jv *self, const char *name) {
    jv *m = mk(c, T_METHOD);
    m->self = (jv *)self, m->s = name;
    return m;
}

static const char *obj_repr(const jv *v) {
    switch (v->t) {
    case T_NONE: return "None";
    case T_BOOL: return "bool object";
    case T_INT: return "int object";
    case T_FLOAT: return "float object";
    case T_STR: return "str object";
    case T_LIST: return "list object";
    case T_TUPLE: return "tuple object";
    case T_DICT: return "dict object";
    default: return "object";
    }
}

static jv *dict_lookup(ctx *c, const jv *d, const jv *key, int32_t pos) {
    for (int64_t i = 0; i < d->len; i++)
        if (py_eq(c, d->a[i], key, pos)) return d->vals[i];
    return NULL;
}

// jinja2's getattr: the attribute (a method), else the item.
static jv *get_attr(ctx *c, const jv *obj, const char *name, int32_t pos) {
    need(c, pos, obj);
    if (obj->t == T_STR && in_list(STR_METHODS, AS_ARRAY_LEN(STR_METHODS), name)) return method(c, obj, name);
    if (is_seq(obj) && in_list(LIST_METHODS, AS_ARRAY_LEN(LIST_METHODS), name)) return method(c, obj, name);
    if (obj->t == T_DICT) {
        if (in_list(DICT_METHODS, AS_ARRAY_LEN(DICT_METHODS), name)) return method(c, obj, name);
        jv key = {.t = T_STR, .s = name, .n = strlen(name)};
        jv *v = dict_lookup(c, obj, &key, pos);
        if (v) return v;
    }
    return mk_undef(c, "'%s' has no attribute '%s'", obj_repr(obj), name);
}

// Python's index i of a sequence of n: negative from the end; -1 when out of range.
static int64_t norm_index(int64_t i, int64_t n) {
    if (i < 0) i += n;
    return i < 0 || i >= n ? -1 : i;
}

// jinja2's getitem: the item, else (a string key) the attribute.
static jv *get_item(ctx *c, const jv *obj, const jv *key, int32_t pos) {
    need(c, pos, obj), need(c, pos, key);
    if (obj->t == T_DICT) {
        jv *v = dict_lookup(c, obj, key, pos);
        if (v) return v;
    } else if ((is_seq(obj) || obj->t == T_STR) && (key->t == T_INT || key->t == T_BOOL)) {
        int64_t n = obj->t == T_STR ? u8_len(obj->s, obj->n) : obj->len;
        int64_t i = norm_index(ival(key), n);
        if (i >= 0) {
            if (obj->t != T_STR) return obj->a[i];
            size_t o = u8_off(obj->s, obj->n, i), e = u8_off(obj->s, obj->n, i + 1);
            return mk_str(c, obj->s + o, e - o);
        }
        return mk_undef(c, "%s has no element %lld", obj_repr(obj), (long long)ival(key));
    }
    if (key->t == T_STR) {
        char *name = ar_strndup(&c->ar, key->s, key->n);
        return get_attr(c, obj, name, pos);
    }
    astr b = {.ar = &c->ar};
    as_add(&b, "", 0);
    put_repr(c, &b, key, pos);
    return mk_undef(c, "%s has no element %s", obj_repr(obj), b.p);
}

// Python's slice.indices().
static void slice_indices(ctx *c, int64_t n, const jv *a, const jv *b, const jv *s, int32_t pos, int64_t *start, int64_t *stop, int64_t *step) {
    for (int k = 0; k < 3; k++) {
        const jv *v = k == 0 ? a : k == 1 ? b : s;
        if (v && v->t != T_NONE && v->t != T_INT && v->t != T_BOOL)
            efail(c, pos, "slice indices must be integers or None, not %s", type_name(v));
    }
    *step = s && s->t != T_NONE ? ival(s) : 1;
    if (*step == 0) efail(c, pos, "slice step cannot be zero");
    const int64_t lo = *step < 0 ? -1 : 0, hi = *step < 0 ? n - 1 : n;
    for (int k = 0; k < 2; k++) {
        const jv *v = k == 0 ? a : b;
        int64_t *out = k == 0 ? start : stop;
        if (!v || v->t == T_NONE) *out = k == 0 ? (*step < 0 ? hi : lo) : (*step < 0 ? lo : hi);
        else {
            int64_t x = ival(v);
            if (x < 0) x = AS_MAX(x + n, lo);
            else x = AS_MIN(x, hi);
            *out = x;
        }
    }
}

static jv *get_slice(ctx *c, const jv *obj, const jv *a, const jv *b, const jv *s, int32_t pos) {
    need(c, pos, obj);
    if (obj->t != T_STR && !is_seq(obj)) efail(c, pos, "'%s' object is not subscriptable with a slice", type_name(obj));
    const int64_t n = obj->t == T_STR ? u8_len(obj->s, obj->n) : obj->len;
    int64_t start, stop, step;
    slice_indices(c, n, a, b, s, pos, &start, &stop, &step);
    if (obj->t == T_STR) {
        if (step == 1) {
            if (stop <= start) return mk_str(c, "", 0);
            size_t o = u8_off(obj->s, obj->n, start), e = u8_off(obj->s, obj->n, stop);
            return mk_str(c, obj->s + o, e - o);
        }
        astr r = {.ar = &c->ar};
        as_add(&r, "", 0);
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            size_t o = u8_off(obj->s, obj->n, i), e = u8_off(obj->s, obj->n, i + 1);
            as_add(&r, obj->s + o, e - o);
        }
        return mk_str(c, r.p, r.n);
    }
    jv *l = mk_seq(c, obj->t, 0);
    int64_t cap = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) seq_push(c, l, &cap, obj->a[i]);
    return l;
}

// ---- iteration ----

// The items a for loop or a filter sees: a list's items, a string's
// characters, a dict's keys.
static jv *iter_list(ctx *c, const jv *v, int32_t pos) {
    need(c, pos, v);
    if (is_seq(v) || v->t == T_DICT) {
        jv *l = mk_seq(c, T_LIST, v->len);
        memcpy(l->a, v->a, (size_t)v->len * sizeof *l->a);
        return l;
    }
    if (v->t == T_STR) {
        jv *l = mk_seq(c, T_LIST, u8_len(v->s, v->n));
        int64_t k = 0;
        for (size_t i = 0; i < v->n;) {
            int32_t cp;
            size_t n = u8_next(v->s + i, v->n - i, &cp);
            l->a[k++] = mk_str(c, v->s + i, n);
            i += n;
        }
        l->len = k;
        return l;
    }
    efail(c, pos, "'%s' object is not iterable", type_name(v));
}

static int64_t py_len(ctx *c, const jv *v, int32_t pos) {
    need(c, pos, v);
    if (v->t == T_STR) return u8_len(v->s, v->n);
    if (is_seq(v) || v->t == T_DICT) return v->len;
    efail(c, pos, "object of type '%s' has no len()", type_name(v));
}

// ---- string helpers ----

static jv *strip_chars(ctx *c, const jv *s, const jv *chars, bool left, bool right, int32_t pos) {
    size_t a = 0, b = s->n;
    if (!chars || chars->t == T_NONE) {
        if (left) a = eval_py_lstrip_len(s->s, s->n);
        if (right && b > a) b = a + eval_py_rstrip_len(s->s + a, s->n - a);
        return mk_str(c, s->s + a, b - a);
    }
    if (chars->t != T_STR) efail(c, pos, "strip arg must be None or str");
    while (left && a < b) {
        int32_t cp;
        size_t k = u8_next(s->s + a, b - a, &cp);
        bool in = false;
        for (size_t i = 0; i < chars->n && !in;) {
            int32_t x;
            i += u8_next(chars->s + i, chars->n - i, &x);
            in = x == cp;
        }
        if (!in) break;
        a += k;
    }
    while (right && b > a) {
        size_t q = b - 1;
        while (q > a && ((unsigned char)s->s[q] & 0xC0) == 0x80) q--;
        int32_t cp;
        u8_next(s->s + q, b - q, &cp);
        bool in = false;
        for (size_t i = 0; i < chars->n && !in;) {
            int32_t x;
            i += u8_next(chars->s + i, chars->n - i, &x);
            in = x == cp;
        }
        if (!in) break;
        b = q;
    }
    return mk_str(c, s->s + a, b - a);
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0) return h;
    for (size_t i = 0; i + nn <= hn; i++)
        if (!memcmp(h + i, n, nn)) return h + i;
    return NULL;
}

static jv *str_replace(ctx *c, const jv *s, const jv *old, const jv *new_, int64_t count) {
    astr b = {.ar = &c->ar};
    as_add(&b, "", 0);
    if (old->n == 0) {
        int64_t done = 0;
        size_t i = 0;
        for (;;) {
            if (count < 0 || done < count) as_add(&b, new_->s, new_->n), done++;
            if (i >= s->n) break;
            int32_t cp;
            size_t k = u8_next(s->s + i, s->n - i, &cp);
            as_add(&b, s->s + i, k);
            i += k;
        }
        return mk_str(c, b.p, b.n);
    }
    size_t i = 0;
    int64_t done = 0;
    while (i <= s->n) {
        const char *f = (count < 0 || done < count) ? find_bytes(s->s + i, s->n - i, old->s, old->n) : NULL;
        if (!f) break;
        as_add(&b, s->s + i, (size_t)(f - (s->s + i)));
        as_add(&b, new_->s, new_->n);
        i = (size_t)(f - s->s) + old->n;
        done++;
    }
    as_add(&b, s->s + i, s->n - i);
    return mk_str(c, b.p, b.n);
}

static jv *str_map(ctx *c, const jv *s, int mode) { // 0 lower, 1 upper, 2 capitalize, 3 Python title
    astr b = {.ar = &c->ar};
    as_add(&b, "", 0);
    bool first = true, prev_cased = false;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        size_t k = u8_next(s->s + i, s->n - i, &cp);
        int32_t o = mode == 0 ? cp_lower(cp) : mode == 1 ? cp_upper(cp) : mode == 2 ? (first ? cp_upper(cp) : cp_lower(cp))
                  : (prev_cased ? cp_lower(cp) : cp_upper(cp));
        if (o == cp) as_add(&b, s->s + i, k);
        else as_add_cp(&b, o);
        prev_cased = cp_cased(cp);
        first = false;
        i += k;
    }
    return mk_str(c, b.p, b.n);
}

// jinja2's title filter: each piece between [-\s({\[<]+ runs capitalised.
static jv *jinja_title(ctx *c, const jv *s) {
    astr b = {.ar = &c->ar};
    as_add(&b, "", 0);
    bool start = true;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        size_t k = u8_next(s->s + i, s->n - i, &cp);
        bool sep = py_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
        int32_t o = sep ? cp : start ? cp_upper(cp) : cp_lower(cp);
        if (o == cp) as_add(&b, s->s + i, k);
        else as_add_cp(&b, o);
        start = sep;
        i += k;
    }
    return mk_str(c, b.p, b.n);
}

static jv *str_split(ctx *c, const jv *s, const jv *sep, int64_t maxsplit, bool from_right, int32_t pos) {
    jv *l = mk_seq(c, T_LIST, 0);
    int64_t cap = 0;
    if (sep && sep->t != T_NONE) {
        if (sep->t != T_STR) efail(c, pos, "must be str or None, not %s", type_name(sep));
        if (sep->n == 0) efail(c, pos, "empty separator");
        if (!from_right) {
            size_t i = 0;
            int64_t done = 0;
            for (;;) {
                const char *f = (maxsplit < 0 || done < maxsplit) ? find_bytes(s->s + i, s->n - i, sep->s, sep->n) : NULL;
                if (!f) { seq_push(c, l, &cap, mk_str(c, s->s + i, s->n - i)); break; }
                seq_push(c, l, &cap, mk_str(c, s->s + i, (size_t)(f - s->s) - i));
                i = (size_t)(f - s->s) + sep->n;
                done++;
            }
            return l;
        }
        // rsplit: collect from the right, then reverse.
        size_t e = s->n;
        int64_t done = 0;
        for (;;) {
            const char *f = NULL;
            if ((maxsplit < 0 || done < maxsplit) && e >= sep->n)
                for (size_t q = e - sep->n + 1; q-- > 0;)
                    if (!memcmp(s->s + q, sep->s, sep->n)) { f = s->s + q; break; }
            if (!f) { seq_push(c, l, &cap, mk_str(c, s->s, e)); break; }
            size_t q = (size_t)(f - s->s);
            seq_push(c, l, &cap, mk_str(c, s->s + q + sep->n, e - q - sep->n));
            e = q;
            done++;
        }
        for (int64_t i = 0; i < l->len / 2; i++) {
            jv *t = l->a[i];
            l->a[i] = l->a[l->len - 1 - i], l->a[l->len - 1 - i] = t;
        }
        return l;
    }
    // Runs of whitespace; no empty strings.
    typedef struct { size_t a, b; } span;
    span *sp = NULL;
    size_t nsp = 0, csp = 0;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        size_t k = u8_next(s->s + i, s->n - i, &cp);
        if (py_space(cp)) { i += k; continue; }
        size_t a = i;
        while (i < s->n) {
            k = u8_next(s->s + i, s->n - i, &cp);
            if (py_space(cp)) break;
            i += k;
        }
        if (nsp == csp) {
            csp = csp ? csp * 2 : 8;
            span *np = ar_alloc(&c->ar, csp * sizeof *np);
            if (nsp) memcpy(np, sp, nsp * sizeof *np);
            sp = np;
        }
        sp[nsp++] = (span){a, i};
    }
    if (maxsplit < 0 || (size_t)maxsplit >= nsp) {
        for (size_t i = 0; i < nsp; i++) seq_push(c, l, &cap, mk_str(c, s->s + sp[i].a, sp[i].b - sp[i].a));
        return l;
    }
    if (!from_right) {
        for (int64_t i = 0; i < maxsplit; i++) seq_push(c, l, &cap, mk_str(c, s->s + sp[i].a, sp[i].b - sp[i].a));
        // The rest: from the next word to the end, trailing whitespace kept.
        size_t a = sp[maxsplit].a;
        seq_push(c, l, &cap, mk_str(c, s->s + a, s->n - a));
        return l;
    }
    size_t first = nsp - (size_t)maxsplit;
    seq_push(c, l, &cap, mk_str(c, s->s, sp[first - 1].b));
    for (size_t i = first; i < nsp; i++) seq_push(c, l, &cap, mk_str(c, s->s + sp[i].a, sp[i].b - sp[i].a));
    return l;
}

static jv *str_splitlines(ctx *c, const jv *s) {
    jv *l = mk_seq(c, T_LIST, 0);
    int64_t cap = 0;
    size_t a = 0;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        size_t k = u8_next(s->s + i, s->n - i, &cp);
        bool br = cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || cp == 0x1c || cp == 0x1d || cp == 0x1e ||
                  cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (br) {
            seq_push(c, l, &cap, mk_str(c, s->s + a, i - a));
            if (cp == '\r' && i + 1 < s->n && s->s[i + 1] == '\n') k++;
            a = i + k;
        }
        i += k;
    }
    if (a < s->n) seq_push(c, l, &cap, mk_str(c, s->s + a, s->n - a));
    return l;
}

// Code-point index of a byte offset.
static int64_t cp_index(const jv *s, size_t byte) { return u8_len(s->s, byte); }

static jv *str_find(ctx *c, const jv *s, const jv *sub, bool from_right, int32_t pos) {
    if (sub->t != T_STR) efail(c, pos, "must be str, not %s", type_name(sub));
    const char *f = NULL;
    if (!from_right) f = find_bytes(s->s, s->n, sub->s, sub->n);
    else if (sub->n <= s->n)
        for (size_t q = s->n - sub->n + 1; q-- > 0;)
            if (!memcmp(s->s + q, sub->s, sub->n)) { f = s->s + q; break; }
    return mk_int(c, f ? cp_index(s, (size_t)(f - s->s)) : -1);
}

static bool str_all(const jv *s, bool (*pred)(int32_t)) {
    if (s->n == 0) return false;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        i += u8_next(s->s + i, s->n - i, &cp);
        if (!pred(cp)) return false;
    }
    return true;
}
static bool cp_alnum(int32_t c) { return cp_alpha(c) || cp_digit(c); }

// str.isupper / islower: at least one cased character, none of the other case.
static bool str_case(const jv *s, bool upper) {
    bool any = false;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        i += u8_next(s->s + i, s->n - i, &cp);
        if (upper ? cp_is_lower(cp) : cp_is_upper(cp)) return false;
        any |= upper ? cp_is_upper(cp) : cp_is_lower(cp);
    }
    return any;
}

// ---- calls ----

typedef struct args {
    jv **pos;
    int32_t npos;
    const char **kwn;
    jv **kwv;
    int32_t nkw;
} args;

// Binds arguments to names (Python's rules); defaults are NULL when absent.
static void bind(ctx *c, const char *fn, const args *a, int32_t pos, const char *const *names, int nn, int required, jv **out) {
    for (int i = 0; i < nn; i++) out[i] = NULL;
    if (a->npos > nn) efail(c, pos, "%s() takes at most %d argument%s (%d given)", fn, nn, nn == 1 ? "" : "s", a->npos);
    for (int i = 0; i < a->npos; i++) out[i] = a->pos[i];
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < nn && strcmp(names[i], a->kwn[k])) i++;
        if (i == nn) efail(c, pos, "%s() got an unexpected keyword argument '%s'", fn, a->kwn[k]);
        if (out[i]) efail(c, pos, "%s() got multiple values for argument '%s'", fn, a->kwn[k]);
        out[i] = a->kwv[k];
    }
    for (int i = 0; i < required; i++)
        if (!out[i]) efail(c, pos, "%s() missing required argument '%s'", fn, names[i]);
    for (int i = 0; i < nn; i++)
        if (out[i]) need(c, pos, out[i]);
}

static int64_t int_arg(ctx *c, const jv *v, int64_t def, const char *what, int32_t pos) {
    if (!v || v->t == T_NONE) return def;
    if (v->t != T_INT && v->t != T_BOOL) efail(c, pos, "%s must be an integer, not %s", what, type_name(v));
    return ival(v);
}
static const jv *str_arg(ctx *c, const jv *v, const char *what, int32_t pos) {
    if (v->t != T_STR) efail(c, pos, "%s must be str, not %s", what, type_name(v));
    return v;
}

static jv *call_method(ctx *c, const jv *m, const args *a, int32_t pos) {
    const jv *self = m->self;
    const char *name = m->s;
    jv *x[3];
    if (self->t == T_STR) {
        if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
            static const char *const N[] = {"chars"};
            bind(c, name, a, pos, N, 1, 0, x);
            return strip_chars(c, self, x[0], name[0] != 'r', name[0] != 'l', pos);
        }
        if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
            static const char *const N[] = {"sep", "maxsplit"};
            bind(c, name, a, pos, N, 2, 0, x);
            return str_split(c, self, x[0], int_arg(c, x[1], -1, "maxsplit", pos), name[0] == 'r', pos);
        }
        if (!strcmp(name, "splitlines")) {
            bind(c, name, a, pos, NULL, 0, 0, x);
            return str_splitlines(c, self);
        }
        if (!strcmp(name, "replace")) {
            static const char *const N[] = {"old", "new", "count"};
            bind(c, name, a, pos, N, 3, 2, x);
            return str_replace(c, self, str_arg(c, x[0], "replace() argument 1", pos), str_arg(c, x[1], "replace() argument 2", pos),
                               int_arg(c, x[2], -1, "count", pos));
        }
        if (!strcmp(name, "lower") || !strcmp(name, "upper") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
            bind(c, name, a, pos, NULL, 0, 0, x);
            return str_map(c, self, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 'c' ? 2 : 3);
        }
        if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
            static const char *const N[] = {"prefix"};
            bind(c, name, a, pos, N, 1, 1, x);
            const jv *p = x[0];
            int64_t np = p->t == T_TUPLE ? p->len : 1;
            for (int64_t i = 0; i < np; i++) {
                const jv *q = p->t == T_TUPLE ? p->a[i] : p;
                if (q->t != T_STR) efail(c, pos, "%s first arg must be str or a tuple of str, not %s", name, type_name(q));
                if (q->n <= self->n && !memcmp(name[0] == 's' ? self->s : self->s + self->n - q->n, q->s, q->n)) return &V_TRUE;
            }
            return &V_FALSE;
        }
        if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "index") || !strcmp(name, "rindex")) {
            static const char *const N[] = {"sub"};
            bind(c, name, a, pos, N, 1, 1, x);
            jv *r = str_find(c, self, x[0], name[0] == 'r', pos);
            if (r->i < 0 && strstr(name, "index")) efail(c, pos, "%s(): substring not found", name);
            return r;
        }
        if (!strcmp(name, "count")) {
            static const char *const N[] = {"sub"};
            bind(c, name, a, pos, N, 1, 1, x);
            const jv *sub = str_arg(c, x[0], "count() argument", pos);
            if (sub->n == 0) return mk_int(c, u8_len(self->s, self->n) + 1);
            int64_t k = 0;
            for (const char *f = self->s; (f = find_bytes(f, self->n - (size_t)(f - self->s), sub->s, sub->n)); f += sub->n) k++;
            return mk_int(c, k);
        }
        if (!strcmp(name, "join")) {
            static const char *const N[] = {"iterable"};
            bind(c, name, a, pos, N, 1, 1, x);
            jv *l = iter_list(c, x[0], pos);
            astr b = {.ar = &c->ar};
            as_add(&b, "", 0);
            for (int64_t i = 0; i < l->len; i++) {
                if (l->a[i]->t != T_STR)
                    efail(c, pos, "sequence item %lld: expected str instance, %s found", (long long)i, type_name(l->a[i]));
                if (i) as_add(&b, self->s, self->n);
                as_add(&b, l->a[i]->s, l->a[i]->n);
            }
            return mk_str(c, b.p, b.n);
        }
        bind(c, name, a, pos, NULL, 0, 0, x);
        if (!strcmp(name, "isdigit") || !strcmp(name, "isnumeric") || !strcmp(name, "isdecimal")) return mk_bool(str_all(self, cp_digit));
        if (!strcmp(name, "isalpha")) return mk_bool(str_all(self, cp_alpha));
        if (!strcmp(name, "isalnum")) return mk_bool(str_all(self, cp_alnum));
        if (!strcmp(name, "isspace")) return mk_bool(str_all(self, py_space));
        if (!strcmp(name, "isupper")) return mk_bool(str_case(self, true));
        if (!strcmp(name, "islower")) return mk_bool(str_case(self, false));
    } else if (is_seq(self)) {
        static const char *const N[] = {"value"};
        bind(c, name, a, pos, N, 1, 1, x);
        int64_t k = 0;
        for (int64_t i = 0; i < self->len; i++)
            if (py_eq(c, self->a[i], x[0], pos)) {
                if (!strcmp(name, "index")) return mk_int(c, i);
                k++;
            }
        if (!strcmp(name, "count")) return mk_int(c, k);
        astr b = {.ar = &c->ar};
        as_add(&b, "", 0);
        put_repr(c, &b, x[0], pos);
        efail(c, pos, "%s is not in %s", b.p, type_name(self));
    } else if (self->t == T_DICT) {
        if (!strcmp(name, "get")) {
            static const char *const N[] = {"key", "default"};
            bind(c, name, a, pos, N, 2, 1, x);
            jv *v = dict_lookup(c, self, x[0], pos);
            return v ? v : x[1] ? x[1] : &V_NONE;
        }
        if (!strcmp(name, "keys") || !strcmp(name, "values") || !strcmp(name, "items")) {
            bind(c, name, a, pos, NULL, 0, 0, x);
            jv *l = mk_seq(c, T_LIST, self->len);
            for (int64_t i = 0; i < self->len; i++) {
                if (name[0] == 'k') l->a[i] = self->a[i];
                else if (name[0] == 'v') l->a[i] = self->vals[i];
                else {
                    jv *t = mk_seq(c, T_TUPLE, 2);
                    t->a[0] = self->a[i], t->a[1] = self->vals[i];
                    l->a[i] = t;
                }
            }
            return l;
        }
    }
    efail(c, pos, "%s.%s() is not supported", type_name(self), name);
}

// ---- filters ----

static jv *f_int(ctx *c, const jv *v, const jv *def, const jv *base, int32_t pos) {
    jv *d = def ? (jv *)def : mk_int(c, 0);
    const int64_t b = int_arg(c, base, 10, "base", pos);
    if (v->t == T_INT) return (jv *)v;
    if (v->t == T_BOOL) return mk_int(c, v->b);
    if (v->t == T_FLOAT) {
        if (!isfinite(v->f)) efail(c, pos, "cannot convert float %s to integer", isnan(v->f) ? "NaN" : "infinity");
        if (fabs(v->f) >= 9.2e18) efail(c, pos, "integer overflow");
        return mk_int(c, (int64_t)v->f);
    }
    if (v->t != T_STR) return d;
    // int(s, base): whitespace, a sign, digits with single underscores between.
    char *s = ar_strndup(&c->ar, v->s, v->n);
    size_t a = eval_py_lstrip_len(s, v->n), e = a + eval_py_rstrip_len(s + a, v->n - a);
    s[e] = 0;
    char clean[128];
    size_t k = 0;
    bool ok = e > a && e - a < sizeof clean;
    for (size_t i = a; ok && i < e; i++) {
        if (s[i] == '_') {
            ok = i > a && i + 1 < e && s[i - 1] != '_' && s[i - 1] != '+' && s[i - 1] != '-';
            continue;
        }
        clean[k++] = s[i];
    }
    clean[k] = 0;
    if (ok && k) {
        char *end;
        errno = 0;
        long long x = strtoll(clean, &end, (int)b);
        bool digits = clean[0] != ' ' && !(clean[0] == '0' && (clean[1] == 'x' || clean[1] == 'X') && b != 16);
        if (!*end && !errno && end != clean && digits) return mk_int(c, x);
    }
    // int(float(s)).
    char *end;
    const char *t = s + a;
    double f = strtod(t, &end);
    bool hex = (t[0] == '0' || ((t[0] == '-' || t[0] == '+') && t[1] == '0')) && strpbrk(t, "xX");
    if (end != t && !*end && !hex && isfinite(f) && fabs(f) < 9.2e18) return mk_int(c, (int64_t)f);
    if (end != t && !*end && !hex) efail(c, pos, "cannot convert float infinity to integer");
    return d;
}

static jv *f_float(ctx *c, const jv *v, const jv *def) {
    if (v->t == T_FLOAT) return (jv *)v;
    if (v->t == T_INT || v->t == T_BOOL) return mk_float(c, (double)ival(v));
    if (v->t == T_STR) {
        char *s = ar_strndup(&c->ar, v->s, v->n);
        size_t a = eval_py_lstrip_len(s, v->n), e = a + eval_py_rstrip_len(s + a, v->n - a);
        s[e] = 0;
        char *end;
        const char *t = s + a;
        double f = strtod(t, &end);
        if (end != t && !*end && !strpbrk(t, "xXpP")) return mk_float(c, f);
    }
    return def ? (jv *)def : mk_float(c, 0);
}

// Python's round(x, ndigits) on a float: correctly rounded, half to even.
static double py_round(double x, int64_t nd) {
    if (!isfinite(x)) return x;
    if (nd > 300) return x;
    if (nd < -300) return 0 * x;
    if (nd == 0) return nearbyint(x);
    char buf[400];
    if (nd > 0) {
        snprintf(buf, sizeof buf, "%.*f", (int)nd, x);
        return strtod(buf, NULL);
    }
    double p = pow(10.0, (double)-nd);
    return nearbyint(x / p) * p;
}

static int cmp_for_sort(ctx *c, const jv *a, const jv *b, bool case_sensitive, int32_t pos) {
    if (!case_sensitive && a->t == T_STR && b->t == T_STR) {
        jv *x = str_map(c, a, 0), *y = str_map(c, b, 0);
        return py_cmp(c, x, y, pos, "<");
    }
    return py_cmp(c, a, b, pos, "<");
}

static jv *call_filter(ctx *c, const char *name, const jv *v, const args *a, int32_t pos) {
    jv *x[4];
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        static const char *const N[] = {"default_value", "boolean"};
        bind(c, name, a, pos, N, 2, 0, x);
        bool use = v->t == T_UNDEF || (x[1] && truthy(c, x[1], pos) && !truthy(c, v, pos));
        return use ? (x[0] ? x[0] : mk_str(c, "", 0)) : (jv *)v;
    }
    need(c, pos, v);
    if (!strcmp(name, "regex_replace")) {
        static const char *const N[] = {"pattern", "repl", "count"};
        bind(c, name, a, pos, N, 3, 2, x);
        if (v->t != T_STR) efail(c, pos, "regex_replace: expected a string, got %s", type_name(v));
        const jv *pat = str_arg(c, x[0], "pattern", pos), *repl = str_arg(c, x[1], "repl", pos);
        char *ps = ar_strndup(&c->ar, pat->s, pat->n), *ss = ar_strndup(&c->ar, v->s, v->n), *rs = ar_strndup(&c->ar, repl->s, repl->n);
        eval_regex *re;
        char w[600];
        snprintf(w, sizeof w, "%s: position %d: regex_replace", c->what, cp_pos(c->src, pos));
        if (eval_regex_compile(ps, w, &re) != AS_OK) longjmp(c->jb, 1);
        char *out = eval_regex_sub(re, ss, rs, int_arg(c, x[2], 0, "count", pos), w);
        eval_regex_free(re);
        if (!out) longjmp(c->jb, 1);
        jv *r = mk_strc(c, out, strlen(out));
        free(out);
        return r;
    }
    if (!strcmp(name, "replace")) {
        static const char *const N[] = {"old", "new", "count"};
        bind(c, name, a, pos, N, 3, 2, x);
        return str_replace(c, to_str(c, v, pos), to_str(c, x[0], pos), to_str(c, x[1], pos), int_arg(c, x[2], -1, "count", pos));
    }
    if (!strcmp(name, "trim")) {
        static const char *const N[] = {"chars"};
        bind(c, name, a, pos, N, 1, 0, x);
        return strip_chars(c, to_str(c, v, pos), x[0], true, true, pos);
    }
    if (!strcmp(name, "int")) {
        static const char *const N[] = {"default", "base"};
        bind(c, name, a, pos, N, 2, 0, x);
        return f_int(c, v, x[0], x[1], pos);
    }
    if (!strcmp(name, "float")) {
        static const char *const N[] = {"default"};
        bind(c, name, a, pos, N, 1, 0, x);
        return f_float(c, v, x[0]);
    }
    if (!strcmp(name, "join")) {
        static const char *const N[] = {"d", "attribute"};
        bind(c, name, a, pos, N, 2, 0, x);
        if (x[1]) efail(c, pos, "join: attribute= is not supported");
        jv *l = iter_list(c, v, pos);
        jv *d = x[0] ? to_str(c, x[0], pos) : mk_str(c, "", 0);
        astr b = {.ar = &c->ar};
        as_add(&b, "", 0);
        for (int64_t i = 0; i < l->len; i++) {
            if (i) as_add(&b, d->s, d->n);
            put_str(c, &b, l->a[i], pos);
        }
        return mk_str(c, b.p, b.n);
    }
    if (!strcmp(name, "round")) {
        static const char *const N[] = {"precision", "method"};
        bind(c, name, a, pos, N, 2, 0, x);
        int64_t prec = int_arg(c, x[0], 0, "precision", pos);
        const char *method = x[1] ? str_arg(c, x[1], "method", pos)->s : "common";
        if (!is_num(v)) efail(c, pos, "round: expected a number, got %s", type_name(v));
        if (!strcmp(method, "common")) {
            if (v->t != T_FLOAT) return mk_int(c, ival(v)); // round(int, n >= 0) is the int
            return mk_float(c, py_round(v->f, prec));
        }
        if (strcmp(method, "ceil") && strcmp(method, "floor")) efail(c, pos, "method must be 'common', 'ceil' or 'floor'");
        double p = pow(10.0, (double)prec), y = fval(v) * p;
        return mk_float(c, (method[0] == 'c' ? ceil(y) : floor(y)) / p);
    }
    if (!strcmp(name, "sum")) {
        static const char *const N[] = {"attribute", "start"};
        bind(c, name, a, pos, N, 2, 0, x);
        if (x[0]) efail(c, pos, "sum: attribute= is not supported");
        jv *l = iter_list(c, v, pos), *acc = x[1] ? x[1] : mk_int(c, 0);
        for (int64_t i = 0; i < l->len; i++) acc = arith(c, OP_ADD, acc, l->a[i], pos);
        return acc;
    }
    if (!strcmp(name, "max") || !strcmp(name, "min")) {
        static const char *const N[] = {"case_sensitive", "attribute"};
        bind(c, name, a, pos, N, 2, 0, x);
        if (x[1]) efail(c, pos, "%s: attribute= is not supported", name);
        jv *l = iter_list(c, v, pos);
        if (l->len == 0) return mk_undef(c, "No aggregated item, sequence was empty.");
        bool cs = x[0] && truthy(c, x[0], pos);
        jv *best = l->a[0];
        for (int64_t i = 1; i < l->len; i++) {
            int r = cmp_for_sort(c, l->a[i], best, cs, pos);
            if (name[1] == 'a' ? r > 0 : r < 0) best = l->a[i];
        }
        return best;
    }
    if (!strcmp(name, "sort")) {
        static const char *const N[] = {"reverse", "case_sensitive", "attribute"};
        bind(c, name, a, pos, N, 3, 0, x);
        if (x[2]) efail(c, pos, "sort: attribute= is not supported");
        jv *l = iter_list(c, v, pos);
        bool rev = x[0] && truthy(c, x[0], pos), cs = x[1] && truthy(c, x[1], pos);
        // Stable insertion sort (lists in templates are short).
        for (int64_t i = 1; i < l->len; i++) {
            jv *k = l->a[i];
            int64_t j = i;
            while (j > 0) {
                int r = cmp_for_sort(c, l->a[j - 1], k, cs, pos);
                if (rev ? r >= 0 : r <= 0) break;
                l->a[j] = l->a[j - 1], j--;
            }
            l->a[j] = k;
        }
        return l;
    }
    bind(c, name, a, pos, NULL, 0, 0, x);
    if (!strcmp(name, "lower")) return str_map(c, to_str(c, v, pos), 0);
    if (!strcmp(name, "upper")) return str_map(c, to_str(c, v, pos), 1);
    if (!strcmp(name, "capitalize")) return str_map(c, to_str(c, v, pos), 2);
    if (!strcmp(name, "title")) return jinja_title(c, to_str(c, v, pos));
    if (!strcmp(name, "string") || !strcmp(name, "safe")) return to_str(c, v, pos);
    if (!strcmp(name, "length") || !strcmp(name, "count")) return mk_int(c, py_len(c, v, pos));
    if (!strcmp(name, "abs")) {
        if (v->t == T_FLOAT) return mk_float(c, fabs(v->f));
        if (v->t == T_INT || v->t == T_BOOL) return mk_int(c, ival(v) < 0 ? -ival(v) : ival(v));
        efail(c, pos, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        jv *l = iter_list(c, v, pos);
        if (l->len == 0) return mk_undef(c, "No %s item, sequence was empty.", name);
        return l->a[name[0] == 'f' ? 0 : l->len - 1];
    }
    if (!strcmp(name, "list")) return iter_list(c, v, pos);
    if (!strcmp(name, "reverse")) {
        if (v->t == T_STR) {
            jv *l = iter_list(c, v, pos);
            astr b = {.ar = &c->ar};
            as_add(&b, "", 0);
            for (int64_t i = l->len; i-- > 0;) as_add(&b, l->a[i]->s, l->a[i]->n);
            return mk_str(c, b.p, b.n);
        }
        jv *l = iter_list(c, v, pos);
        for (int64_t i = 0; i < l->len / 2; i++) {
            jv *t = l->a[i];
            l->a[i] = l->a[l->len - 1 - i], l->a[l->len - 1 - i] = t;
        }
        return l;
    }
    if (!strcmp(name, "items")) {
        if (v->t != T_DICT) efail(c, pos, "items: can only get item pairs from a mapping, not %s", type_name(v));
        args none = {0};
        return call_method(c, method(c, v, "items"), &none, pos);
    }
    if (!strcmp(name, "wordcount")) {
        jv *s = to_str(c, v, pos);
        int64_t k = 0;
        bool in = false;
        for (size_t i = 0; i < s->n;) {
            int32_t cp;
            i += u8_next(s->s + i, s->n - i, &cp);
            bool w = cp_word(cp);
            k += w && !in;
            in = w;
        }
        return mk_int(c, k);
    }
    efail(c, pos, "no filter named '%s'", name);
}

static bool call_test(ctx *c, const char *name, const jv *v, const args *a, int32_t pos) {
    jv *x[1];
    if (!strcmp(name, "defined") || !strcmp(name, "undefined")) {
        bind(c, name, a, pos, NULL, 0, 0, x);
        return (v->t != T_UNDEF) == (name[0] == 'd');
    }
    static const char *const CMP1[] = {"eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "divisibleby"};
    if (in_list(CMP1, AS_ARRAY_LEN(CMP1), name)) {
        static const char *const N[] = {"other"};
        bind(c, name, a, pos, N, 1, 1, x);
        need(c, pos, v);
        const char *n = name;
        if (!strcmp(n, "eq") || !strcmp(n, "equalto") || !strcmp(n, "==")) return py_eq(c, v, x[0], pos);
        if (!strcmp(n, "ne") || !strcmp(n, "!=")) return !py_eq(c, v, x[0], pos);
        if (!strcmp(n, "lt") || !strcmp(n, "lessthan") || !strcmp(n, "<")) return py_cmp(c, v, x[0], pos, "<") < 0;
        if (!strcmp(n, "le") || !strcmp(n, "<=")) return py_cmp(c, v, x[0], pos, "<=") <= 0;
        if (!strcmp(n, "gt") || !strcmp(n, "greaterthan") || !strcmp(n, ">")) return py_cmp(c, v, x[0], pos, ">") > 0;
        if (!strcmp(n, "ge") || !strcmp(n, ">=")) return py_cmp(c, v, x[0], pos, ">=") >= 0;
        if (!strcmp(n, "in")) return contains(c, x[0], v, pos);
        jv *m = arith(c, OP_MOD, v, x[0], pos);
        return fval(m) == 0;
    }
    bind(c, name, a, pos, NULL, 0, 0, x);
    if (!strcmp(name, "none")) return v->t == T_NONE;
    if (!strcmp(name, "boolean")) return v->t == T_BOOL;
    if (!strcmp(name, "true")) return v->t == T_BOOL && v->b;
    if (!strcmp(name, "false")) return v->t == T_BOOL && !v->b;
    if (!strcmp(name, "string")) return v->t == T_STR;
    if (!strcmp(name, "number")) return is_num(v);
    if (!strcmp(name, "integer")) return v->t == T_INT;
    if (!strcmp(name, "float")) return v->t == T_FLOAT;
    if (!strcmp(name, "mapping")) return v->t == T_DICT;
    if (!strcmp(name, "sequence") || !strcmp(name, "iterable")) return v->t == T_STR || is_seq(v) || v->t == T_DICT;
    if (!strcmp(name, "callable")) return v->t == T_METHOD || v->t == T_FUNC;
    need(c, pos, v);
    if (!strcmp(name, "even") || !strcmp(name, "odd")) {
        if (v->t != T_INT && v->t != T_BOOL) efail(c, pos, "%s: expected an integer, got %s", name, type_name(v));
        return (ival(v) % 2 == 0) == (name[0] == 'e');
    }
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        jv *s = to_str(c, v, pos);
        return str_case(s, name[0] == 'u');
    }
    efail(c, pos, "no test named '%s'", name);
}

// ---- expressions ----

static jv *eval(ctx *c, const node *n);

static jv *lookup_name(ctx *c, const char *name) {
    for (frame *f = c->top; f; f = f->up)
        for (int32_t i = f->n; i-- > 0;)
            if (!strcmp(f->names[i], name)) return f->vals[i];
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->vars, name);
    if (j) return from_json(c, j);
    if (!strcmp(name, "range")) {
        jv *f = mk(c, T_FUNC);
        f->s = "range";
        return f;
    }
    return mk_undef(c, "'%s' is undefined", name);
}

static void eval_args(ctx *c, const node *n, args *a) {
    memset(a, 0, sizeof *a);
    a->pos = ar_alloc(&c->ar, (size_t)AS_MAX(n->nargs, 1) * sizeof *a->pos);
    a->kwv = ar_alloc(&c->ar, (size_t)AS_MAX(n->nargs, 1) * sizeof *a->kwv);
    a->kwn = ar_alloc(&c->ar, (size_t)AS_MAX(n->nargs, 1) * sizeof *a->kwn);
    for (int32_t i = 0; i < n->nargs; i++) {
        jv *v = eval(c, n->args[i]);
        if (n->kw && n->kw[i]) a->kwn[a->nkw] = n->kw[i], a->kwv[a->nkw++] = v;
        else a->pos[a->npos++] = v;
    }
}

static jv *call_range(ctx *c, const args *a, int32_t pos) {
    if (a->nkw || a->npos < 1 || a->npos > 3) efail(c, pos, "range() takes 1 to 3 positional arguments");
    int64_t start = 0, stop, step = 1;
    for (int32_t i = 0; i < a->npos; i++) need(c, pos, a->pos[i]), int_arg(c, a->pos[i], 0, "range() argument", pos);
    if (a->npos == 1) stop = ival(a->pos[0]);
    else start = ival(a->pos[0]), stop = ival(a->pos[1]);
    if (a->npos == 3) step = ival(a->pos[2]);
    if (step == 0) efail(c, pos, "range() arg 3 must not be zero");
    jv *l = mk_seq(c, T_LIST, 0);
    int64_t cap = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (l->len >= 100000) efail(c, pos, "range too big (at most 100000 items)");
        seq_push(c, l, &cap, mk_int(c, i));
    }
    return l;
}

static jv *eval(ctx *c, const node *n) {
    if (++c->depth > 200) efail(c, n->pos, "expression nested too deeply");
    jv *r = NULL;
    switch (n->k) {
    case N_LIT: r = n->lit; break;
    case N_NAME: r = lookup_name(c, n->name); break;
    case N_ATTR: r = get_attr(c, eval(c, n->a), n->name, n->pos); break;
    case N_ITEM: {
        jv *o = eval(c, n->a);
        r = get_item(c, o, eval(c, n->b), n->pos);
        break;
    }
    case N_SLICE: {
        jv *o = eval(c, n->a);
        jv *a = n->b ? eval(c, n->b) : NULL, *b = n->c ? eval(c, n->c) : NULL, *s = n->args[0] ? eval(c, n->args[0]) : NULL;
        r = get_slice(c, o, a, b, s, n->pos);
        break;
    }
    case N_CALL: {
        jv *f = eval(c, n->a);
        need(c, n->pos, f);
        args a;
        eval_args(c, n, &a);
        if (f->t == T_METHOD) r = call_method(c, f, &a, n->pos);
        else if (f->t == T_FUNC) r = call_range(c, &a, n->pos);
        else efail(c, n->pos, "'%s' object is not callable", type_name(f));
        break;
    }
    case N_FILTER: {
        jv *v = eval(c, n->a);
        args a;
        eval_args(c, n, &a);
        r = call_filter(c, n->name, v, &a, n->pos);
        break;
    }
    case N_TEST: {
        jv *v = eval(c, n->a);
        args a;
        eval_args(c, n, &a);
        r = mk_bool(call_test(c, n->name, v, &a, n->pos) != n->negate);
        break;
    }
    case N_BIN: {
        jv *a = eval(c, n->a);
        r = arith(c, n->op, a, eval(c, n->b), n->pos);
        break;
    }
    case N_NEG:
    case N_POS: {
        jv *v = eval(c, n->a);
        need(c, n->pos, v);
        if (v->t == T_FLOAT) r = mk_float(c, n->k == N_NEG ? -v->f : v->f);
        else if (v->t == T_INT || v->t == T_BOOL) {
            if (n->k == N_NEG && ival(v) == INT64_MIN) efail(c, n->pos, "integer overflow");
            r = mk_int(c, n->k == N_NEG ? -ival(v) : ival(v));
        } else efail(c, n->pos, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+', type_name(v));
        break;
    }
    case N_NOT: r = mk_bool(!truthy(c, eval(c, n->a), n->pos)); break;
    case N_AND: {
        jv *a = eval(c, n->a);
        r = truthy(c, a, n->pos) ? eval(c, n->b) : a;
        break;
    }
    case N_OR: {
        jv *a = eval(c, n->a);
        r = truthy(c, a, n->pos) ? a : eval(c, n->b);
        break;
    }
    case N_COND:
        if (truthy(c, eval(c, n->b), n->b->pos)) r = eval(c, n->a);
        else if (n->c) r = eval(c, n->c);
        else r = mk_str(c, "", 0); // jinja2: a lenient Undefined, which prints as ""

        break;
    case N_LIST:
    case N_TUPLE:
        r = mk_seq(c, n->k == N_LIST ? T_LIST : T_TUPLE, n->nargs);
        for (int32_t i = 0; i < n->nargs; i++) r->a[i] = eval(c, n->args[i]);
        break;
    case N_DICT:
        r = mk_seq(c, T_DICT, 0);
        r->vals = ar_alloc(&c->ar, (size_t)AS_MAX(n->nargs, 1) * sizeof *r->vals);
        r->a = ar_alloc(&c->ar, (size_t)AS_MAX(n->nargs, 1) * sizeof *r->a);
        for (int32_t i = 0; i < n->nargs; i++) {
            jv *k = eval(c, n->args[i]), *v = eval(c, n->vals[i]);
            need(c, n->args[i]->pos, k);
            if (is_seq(k) || k->t == T_DICT) efail(c, n->args[i]->pos, "unhashable type: '%s'", type_name(k));
            int64_t j = 0;
            while (j < r->len && !py_eq(c, r->a[j], k, n->pos)) j++;
            if (j == r->len) r->a[r->len++] = k;
            r->vals[j] = v;
        }
        break;
    case N_CONCAT: {
        astr b = {.ar = &c->ar};
        as_add(&b, "", 0);
        for (int32_t i = 0; i < n->nargs; i++) put_str(c, &b, eval(c, n->args[i]), n->args[i]->pos);
        r = mk_str(c, b.p, b.n);
        break;
    }
    case N_CMP: {
        jv *left = eval(c, n->a);
        r = &V_TRUE;
        for (int32_t i = 0; i < n->nargs; i++) {
            jv *right = eval(c, n->args[i]);
            bool ok;
            switch (n->ops[i]) {
            case OP_EQ: ok = py_eq(c, left, right, n->pos); break;
            case OP_NE: ok = !py_eq(c, left, right, n->pos); break;
            case OP_LT: ok = py_cmp(c, left, right, n->pos, "<") < 0; break;
            case OP_LE: ok = py_cmp(c, left, right, n->pos, "<=") <= 0; break;
            case OP_GT: ok = py_cmp(c, left, right, n->pos, ">") > 0; break;
            case OP_GE: ok = py_cmp(c, left, right, n->pos, ">=") >= 0; break;
            case OP_IN: ok = contains(c, right, left, n->pos); break;
            default: ok = !contains(c, right, left, n->pos); break;
            }
            if (!ok) { r = &V_FALSE; break; }
            left = right;
        }
        break;
    }
    }
    c->depth--;
    return r;
}

// ---- statements ----

static void frame_set(ctx *c, frame *f, const char *name, jv *v) {
    for (int32_t i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) { f->vals[i] = v; return; }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        const char **nn = ar_alloc(&c->ar, (size_t)f->cap * sizeof *nn);
        jv **nv = ar_alloc(&c->ar, (size_t)f->cap * sizeof *nv);
        if (f->n) memcpy(nn, f->names, (size_t)f->n * sizeof *nn), memcpy(nv, f->vals, (size_t)f->n * sizeof *nv);
        f->names = nn, f->vals = nv;
    }
    f->names[f->n] = name, f->vals[f->n++] = v;
}

static jv *loop_dict(ctx *c, int64_t i, int64_t n) {
    static const char *const K[] = {"index", "index0", "revindex", "revindex0", "first", "last", "length"};
    jv *d = mk_seq(c, T_DICT, 7);
    d->vals = ar_alloc(&c->ar, 7 * sizeof *d->vals);
    for (int k = 0; k < 7; k++) d->a[k] = mk_str(c, K[k], strlen(K[k]));
    d->vals[0] = mk_int(c, i + 1), d->vals[1] = mk_int(c, i), d->vals[2] = mk_int(c, n - i), d->vals[3] = mk_int(c, n - i - 1);
    d->vals[4] = mk_bool(i == 0), d->vals[5] = mk_bool(i == n - 1), d->vals[6] = mk_int(c, n);
    return d;
}

static void run_body(ctx *c, const body *b, astr *out);

static void unpack(ctx *c, frame *f, const stmt *s, jv *item) {
    if (!s->t2) { frame_set(c, f, s->t1, item); return; }
    need(c, s->pos, item);
    jv *l = iter_list(c, item, s->pos);
    if (l->len != 2) efail(c, s->pos, "cannot unpack %lld values into 2 loop variables", (long long)l->len);
    frame_set(c, f, s->t1, l->a[0]);
    frame_set(c, f, s->t2, l->a[1]);
}

static void run_stmt(ctx *c, const stmt *s, astr *out) {
    switch (s->k) {
    case S_TEXT: as_add(out, s->text, s->tn); break;
    case S_OUT: put_str(c, out, eval(c, s->e), s->e->pos); break;
    case S_IF:
        for (int32_t i = 0; i < s->n; i++)
            if (truthy(c, eval(c, s->conds[i]), s->conds[i]->pos)) { run_body(c, &s->bodies[i], out); return; }
        run_body(c, &s->els, out);
        break;
    case S_SET: frame_set(c, c->top, s->t1, eval(c, s->e)); break;
    case S_FOR: {
        jv *all = iter_list(c, eval(c, s->e), s->e->pos);
        frame f = {.up = c->top};
        c->top = &f;
        jv *items = all;
        if (s->filt) {
            items = mk_seq(c, T_LIST, 0);
            int64_t cap = 0;
            for (int64_t i = 0; i < all->len; i++) {
                f.n = 0;
                unpack(c, &f, s, all->a[i]);
                if (truthy(c, eval(c, s->filt), s->filt->pos)) seq_push(c, items, &cap, all->a[i]);
            }
        }
        for (int64_t i = 0; i < items->len; i++) {
            f.n = 0;
            unpack(c, &f, s, items->a[i]);
            frame_set(c, &f, "loop", loop_dict(c, i, items->len));
            run_body(c, &s->loop, out);
        }
        c->top = f.up;
        if (items->len == 0) run_body(c, &s->els, out);
        break;
    }
    }
}

static void run_body(ctx *c, const body *b, astr *out) {
    if (++c->depth > 200) efail(c, 0, "templates nested too deeply");
    for (int32_t i = 0; i < b->n; i++) run_stmt(c, b->s[i], out);
    c->depth--;
}

char *jinja_render(const jinja_tpl *t, const cJSON *vars, const char *what) {
    ctx c = {.what = what, .src = t->src, .vars = vars};
    frame root = {0};
    c.top = &root;
    if (setjmp(c.jb)) {
        ar_free(&c.ar);
        return NULL;
    }
    astr out = {.ar = &c.ar};
    as_add(&out, "", 0);
    run_body(&c, &t->top, &out);
    char *r = as_strndup(out.p, out.n);
    ar_free(&c.ar);
    return r;
}

// Fails on what JSON cannot hold (undefined values, methods), so that
// to_json never unwinds while it owns cJSON nodes.
static void check_json(ctx *c, const jv *v, int32_t pos) {
    if (v->t == T_UNDEF) undef_fail(c, pos, v);
    if (v->t == T_METHOD || v->t == T_FUNC) efail(c, pos, "a %s has no JSON form", type_name(v));
    if (is_seq(v) || v->t == T_DICT)
        for (int64_t i = 0; i < v->len; i++) check_json(c, v->t == T_DICT ? v->vals[i] : v->a[i], pos);
}

static cJSON *to_json(ctx *c, const jv *v, int32_t pos) {
    switch (v->t) {
    case T_NONE: return cJSON_CreateNull();
    case T_BOOL: return cJSON_CreateBool(v->b);
    case T_INT: return cJSON_CreateNumber((double)v->i);
    case T_FLOAT: return cJSON_CreateNumber(v->f);
    case T_STR: return cJSON_CreateString(ar_strndup(&c->ar, v->s, v->n));
    case T_LIST:
    case T_TUPLE: {
        cJSON *a = cJSON_CreateArray();
        for (int64_t i = 0; i < v->len; i++) cJSON_AddItemToArray(a, to_json(c, v->a[i], pos));
        return a;
    }
    case T_DICT: {
        cJSON *o = cJSON_CreateObject();
        for (int64_t i = 0; i < v->len; i++) {
            jv *k = to_str(c, v->a[i], pos);
            cJSON_AddItemToObject(o, ar_strndup(&c->ar, k->s, k->n), to_json(c, v->vals[i], pos));
        }
        return o;
    }
    default: return cJSON_CreateNull(); // excluded by check_json
    }
}

int jinja_eval_json(const jinja_tpl *t, const cJSON *vars, const char *what, cJSON **out) {
    *out = NULL;
    if (!jinja_is_single_expr(t)) return as_error("%s: expected one {{ expression }}", what);
    ctx c = {.what = what, .src = t->src, .vars = vars};
    frame root = {0};
    c.top = &root;
    if (setjmp(c.jb)) {
        ar_free(&c.ar);
        return AS_FAIL;
    }
    const node *e = t->top.s[0]->e;
    jv *v = eval(&c, e);
    check_json(&c, v, e->pos);
    cJSON *r = to_json(&c, v, e->pos);
    ar_free(&c.ar);
    *out = r;
    return AS_OK;
}

static int literal_eval(const char *text, const char *what, cJSON **out) {
    arena ar = {0};
    parser p = {.ar = &ar, .src = text, .len = strlen(text), .what = what, .literal = true};
    if (setjmp(p.jb)) {
        ar_free(&ar);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", as_last_error());
        return as_error("%s (ast.literal_eval of '%.80s%s')", msg, text, strlen(text) > 80 ? "..." : "");
    }
    size_t after;
    bool strip;
    lex(&p, 0, NULL, 0, &after, &strip);
    if (p.t[0].k == K_EOF) pfail(&p, 0, "empty text is not a Python literal");
    node *n = p_tuple(&p, false);
    expect_end(&p);
    ctx c = {.what = what, .src = text};
    frame root = {0};
    c.top = &root;
    if (setjmp(c.jb)) {
        ar_free(&c.ar);
        ar_free(&ar);
        return AS_FAIL;
    }
    jv *v = eval(&c, n);
    check_json(&c, v, n->pos);
    cJSON *r = to_json(&c, v, n->pos);
    ar_free(&c.ar);
    ar_free(&ar);
    *out = r;
    return AS_OK;
}

int jinja_literal_eval(const char *text, const char *what, cJSON **out) {
    *out = NULL;
    // ast.literal_eval strips leading spaces and tabs.
    while (*text == ' ' || *text == '\t') text++;
    return literal_eval(text, what, out);
}

char *jinja_json_str(const cJSON *v) {
    ctx c = {.what = "str()"};
    frame root = {0};
    c.top = &root;
    if (setjmp(c.jb)) {
        ar_free(&c.ar);
        return as_strdup("");
    }
    astr b = {.ar = &c.ar};
    as_add(&b, "", 0);
    put_str(&c, &b, from_json(&c, v), 0);
    char *r = as_strndup(b.p, b.n);
    ar_free(&c.ar);
    return r;
}
