// Arithmetic questions with worked answers (see arith.h).
#include "data/arith.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/common.h"
#include "util/json.h"
#include "util/rng.h"

// ---- a growing string ----

// ---- configuration ----

void data_arith_config_default(data_arith_config *c) {
    memset(c, 0, sizeof *c);
    c->n = 1000;
    c->seed = 0;
    c->level = 2;
    c->style = DATA_ARITH_MIXED;
}

static const char *const STYLE_NAMES[] = {"mixed", "word", "plain"};

int data_arith_style_parse(const char *name) {
    for (int i = 0; i < (int)AS_ARRAY_LEN(STYLE_NAMES); i++)
        if (!strcmp(name, STYLE_NAMES[i])) return i;
    return -1;
}

const char *data_arith_style_name(data_arith_style s) {
    return (unsigned)s < AS_ARRAY_LEN(STYLE_NAMES) ? STYLE_NAMES[s] : "?";
}

typedef struct level_params {
    int min_operands, max_operands;
    int64_t add_max;   // addends and the first operand: 1 .. add_max
    int64_t mul_max;   // multipliers: 2 .. mul_max (0: no multiplication)
    int64_t mul_cap;   // multiply only while total * multiplier <= mul_cap
} level_params;

static const level_params LEVELS[3] = {
    {2, 2, 20, 0, 0},
    {2, 3, 50, 9, 500},
    {3, 3, 100, 12, 1200},
};

// ---- one problem: operands and operators ----

static int64_t uniform_in(as_rng *r, int64_t lo, int64_t hi) { return lo + (int64_t)as_rng_below(r, (uint64_t)(hi - lo + 1)); }

static int64_t apply_op(int64_t t, char op, int64_t b) { return op == '+' ? t + b : op == '-' ? t - b : t * b; }

static void draw_problem(const level_params *lp, as_rng *r, data_arith_item *it) {
    it->n_operands = (int)uniform_in(r, lp->min_operands, lp->max_operands);
    int64_t t = uniform_in(r, 1, lp->add_max);
    it->operands[0] = t;
    for (int k = 1; k < it->n_operands; k++) {
        // +, - and * in proportions 2:2:1 where each is possible.
        char op;
        for (;;) {
            const uint64_t u = as_rng_below(r, lp->mul_max ? 5 : 4);
            op = u < 2 ? '+' : u < 4 ? '-' : '*';
            if (op == '-' && t < 1) continue;
            if (op == '*' && (t < 1 || t * 2 > lp->mul_cap)) continue;
            break;
        }
        int64_t b;
        if (op == '+') b = uniform_in(r, 1, lp->add_max);
        else if (op == '-') b = uniform_in(r, 1, AS_MIN(lp->add_max, t));
        else b = uniform_in(r, 2, AS_MIN(lp->mul_max, lp->mul_cap / t));
        it->ops[k - 1] = op;
        it->operands[k] = b;
        t = apply_op(t, op, b);
    }
    it->value = t;
}

// ---- the two styles ----

typedef struct person {
    const char *name, *subj, *obj; // "Mia", "she", "her"
} person;

static const person PEOPLE[] = {
    {"Mia", "she", "her"},  {"Tom", "he", "him"},  {"Ava", "she", "her"},  {"Leo", "he", "him"},
    {"Zoe", "she", "her"},  {"Sam", "he", "him"},  {"Lily", "she", "her"}, {"Ben", "he", "him"},
    {"Emma", "she", "her"}, {"Noah", "he", "him"}, {"Ella", "she", "her"}, {"Max", "he", "him"},
};
static const char *const THINGS[] = {"apples", "marbles", "stickers", "books", "coins",
                                     "pencils", "cookies", "cards", "stamps", "shells"};

// Per operator: the sentence of the question and the head of its line in the
// worked answer; {S} subject pronoun, {O} object pronoun, {T} things, {B} operand.
typedef struct op_template {
    const char *question, *step;
} op_template;

static const op_template ADD_T[] = {
    {"{S} buys {B} more {T}.", "{S} buys {B} more"},
    {"{S} finds {B} more {T}.", "{S} finds {B} more"},
    {"a friend gives {O} {B} {T}.", "A friend gives {O} {B}"},
};
static const op_template SUB_T[] = {
    {"{S} gives {B} {T} to a friend.", "{S} gives away {B}"},
    {"{S} loses {B} {T}.", "{S} loses {B}"},
    {"{S} uses {B} {T}.", "{S} uses {B}"},
};
static const op_template MUL_T[] = {
    {"{S} gets enough {T} to have {B} times as many.", "{S} has {B} times as many"},
    {"the number of {T} {S} has becomes {B} times as large.", "The number becomes {B} times as large"},
};
static const char *const PLAIN_Q[] = {"What is %s?", "Compute %s.", "Calculate %s.", "How much is %s?"};

// Expands the {S} {O} {T} {B} placeholders of a template into out.
static void fill_template(char *out, size_t cap, const char *tpl, const person *p, const char *things, long long b) {
    size_t n = 0;
    char num[32];
    snprintf(num, sizeof num, "%lld", b);
    for (const char *s = tpl; *s && n + 1 < cap; s++) {
        const char *sub = NULL;
        if (s[0] == '{' && s[1] && s[2] == '}') {
            sub = s[1] == 'S' ? p->subj : s[1] == 'O' ? p->obj : s[1] == 'T' ? things : s[1] == 'B' ? num : NULL;
            if (!sub) as_die("arith: bad template %s", tpl);
            s += 2;
        }
        if (sub) {
            for (; *sub && n + 1 < cap; sub++) out[n++] = *sub;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = 0;
}

static void capitalize(char *s) {
    if (*s) *s = (char)toupper((unsigned char)*s);
}

static void write_word(const data_arith_item *it, as_rng *r, as_sbuf *q, as_sbuf *a) {
    const person *p = &PEOPLE[as_rng_below(r, AS_ARRAY_LEN(PEOPLE))];
    const char *things = THINGS[as_rng_below(r, AS_ARRAY_LEN(THINGS))];
    as_sb_printf(q, "%s has %lld %s.", p->name, (long long)it->operands[0], things);
    as_sb_printf(a, "%s starts with %lld %s.\n", p->name, (long long)it->operands[0], things);
    int64_t t = it->operands[0];
    for (int k = 1; k < it->n_operands; k++) {
        const char op = it->ops[k - 1];
        const long long b = (long long)it->operands[k];
        const op_template *tpl = op == '+'   ? &ADD_T[as_rng_below(r, AS_ARRAY_LEN(ADD_T))]
                                 : op == '-' ? &SUB_T[as_rng_below(r, AS_ARRAY_LEN(SUB_T))]
                                             : &MUL_T[as_rng_below(r, AS_ARRAY_LEN(MUL_T))];
        char sentence[256], step[256];
        fill_template(sentence, sizeof sentence, tpl->question, p, things, b);
        fill_template(step, sizeof step, tpl->step, p, things, b);
        capitalize(step);
        if (k == 1) {
            capitalize(sentence);
            as_sb_printf(q, " %s", sentence);
        } else {
            as_sb_printf(q, " Then %s", sentence);
        }
        const int64_t nt = apply_op(t, op, it->operands[k]);
        as_sb_printf(a, "%s: %lld %c %lld = %lld.\n", step, (long long)t, op, b, (long long)nt);
        t = nt;
    }
    as_sb_printf(q, " How many %s does %s have now?", things, p->name);
    as_sb_printf(a, "#### %lld", (long long)it->value);
}

static void write_plain(const data_arith_item *it, as_rng *r, as_sbuf *q, as_sbuf *a) {
    // The expression reads left to right: an additive left side is put in
    // parentheses before it is multiplied.
    as_sbuf e = {0};
    as_sb_printf(&e, "%lld", (long long)it->operands[0]);
    bool additive = false;
    int64_t t = it->operands[0];
    for (int k = 1; k < it->n_operands; k++) {
        const char op = it->ops[k - 1];
        const int64_t b = it->operands[k];
        if (op == '*' && additive) {
            as_sbuf w = {0};
            as_sb_printf(&w, "(%s) * %lld", e.s, (long long)b);
            free(e.s);
            e = w;
        } else {
            as_sb_printf(&e, " %c %lld", op, (long long)b);
        }
        additive = op != '*';
        const int64_t nt = apply_op(t, op, b);
        as_sb_printf(a, "%lld %c %lld = %lld\n", (long long)t, op, (long long)b, (long long)nt);
        t = nt;
    }
    const char *fmt = PLAIN_Q[as_rng_below(r, AS_ARRAY_LEN(PLAIN_Q))];
    const char *hole = strstr(fmt, "%s");
    as_sb_printf(q, "%.*s%s%s", (int)(hole - fmt), fmt, e.s, hole + 2);
    as_sb_printf(a, "#### %lld", (long long)it->value);
    free(e.s);
}

// ---- distinct questions: an open-addressing set of string hashes + strings ----

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

// Returns true when q was already present; else inserts it.
static bool set_insert(const char **slots, size_t cap, const char *q) {
    for (size_t i = fnv1a(q) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (!slots[i]) {
            slots[i] = q;
            return false;
        }
        if (!strcmp(slots[i], q)) return true;
    }
}

int data_arith_generate(const data_arith_config *c, data_arith_item **out) {
    *out = NULL;
    if (c->n < 1 || c->n > (int64_t)1 << 28) return as_error("arith: n must be in 1 .. 2^28, got %lld", (long long)c->n);
    if (c->level < 1 || c->level > 3) return as_error("arith: level must be 1, 2 or 3, got %d", c->level);
    if ((unsigned)c->style > DATA_ARITH_PLAIN) return as_error("arith: unknown style %d", (int)c->style);
    const level_params *lp = &LEVELS[c->level - 1];
    data_arith_item *items = as_calloc((size_t)c->n, sizeof *items);
    size_t cap = 16;
    while (cap < 2 * (size_t)c->n) cap *= 2;
    const char **slots = as_calloc(cap, sizeof *slots);
    // Item i's stream: a hash of (seed, level, style, i, attempt); a repeated
    // question takes the next attempt, so earlier items never change.
    uint64_t base = c->seed;
    base = as_splitmix64(&base) ^ ((uint64_t)c->level << 56) ^ ((uint64_t)c->style << 60);
    const int max_attempts = 1000;
    for (int64_t i = 0; i < c->n; i++) {
        int attempt = 0;
        for (;; attempt++) {
            if (attempt == max_attempts) {
                for (int64_t j = 0; j < i; j++) free(items[j].question), free(items[j].answer);
                free(items);
                free(slots);
                return as_error("arith: level %d has too few distinct %s questions for n = %lld (ran out after %lld)", c->level,
                                data_arith_style_name(c->style), (long long)c->n, (long long)i);
            }
            uint64_t s = base + (uint64_t)i * 0x9E3779B97F4A7C15ull + (uint64_t)attempt * 0xD1B54A32D192ED03ull;
            as_rng r;
            as_rng_seed(&r, as_splitmix64(&s));
            data_arith_item it = {0};
            draw_problem(lp, &r, &it);
            const bool word = c->style == DATA_ARITH_WORD || (c->style == DATA_ARITH_MIXED && (as_rng_u64(&r) >> 63));
            as_sbuf q = {0}, a = {0};
            if (word) write_word(&it, &r, &q, &a);
            else write_plain(&it, &r, &q, &a);
            if (set_insert(slots, cap, q.s)) {
                free(q.s);
                free(a.s);
                continue;
            }
            it.question = q.s;
            it.answer = a.s;
            items[i] = it;
            break;
        }
    }
    free(slots);
    *out = items;
    return AS_OK;
}

void data_arith_free(data_arith_item *items, int64_t n) {
    if (!items) return;
    for (int64_t i = 0; i < n; i++) free(items[i].question), free(items[i].answer);
    free(items);
}

int data_arith_write_jsonl(const char *path, const data_arith_item *items, int64_t n) {
    as_atomic_file af;
    if (as_atomic_open(&af, path) != AS_OK) return AS_FAIL;
    for (int64_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "question", items[i].question);
        cJSON_AddStringToObject(o, "answer", items[i].answer);
        char *line = as_json_print(o, false);
        cJSON_Delete(o);
        const int bad = fputs(line, af.fp) < 0 || fputc('\n', af.fp) == EOF;
        free(line);
        if (bad) {
            as_atomic_abort(&af);
            return as_error("%s: write failed", path);
        }
    }
    return as_atomic_commit(&af);
}

// ---- answer extraction ----

// Parses -?[0-9][0-9,]*(\.[0-9]+)? at s (s points at '-' or a digit); the
// fractional part must be zeros.  Returns 0 / -1.
static int parse_number(const char *s, int64_t *value) {
    bool neg = false;
    if (*s == '-') neg = true, s++;
    if (!isdigit((unsigned char)*s)) return -1;
    int64_t v = 0;
    for (; isdigit((unsigned char)*s) || (*s == ',' && isdigit((unsigned char)s[1])); s++) {
        if (*s == ',') continue;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
    }
    if (*s == '.' && isdigit((unsigned char)s[1])) {
        for (s++; isdigit((unsigned char)*s); s++)
            if (*s != '0') return -1;
    }
    *value = neg ? -v : v;
    return 0;
}

int data_arith_extract(const char *text, int flexible, int64_t *value) {
    const char *mark = NULL;
    for (const char *p = strstr(text, "####"); p; p = strstr(p + 1, "####")) mark = p;
    if (mark) {
        const char *s = mark + 4;
        while (*s == ' ' || *s == '\t' || *s == '$') s++;
        if (parse_number(s, value) == 0) return 0;
        if (!flexible) return -1;
    } else if (!flexible) {
        return -1;
    }
    // The start of the last number: the last digit, back over digits and
    // commas between digits, and one '-' right before.
    const char *last = NULL;
    for (const char *p = text; *p; p++)
        if (isdigit((unsigned char)*p)) last = p;
    if (!last) return -1;
    const char *s = last;
    for (;;) {
        while (s > text && isdigit((unsigned char)s[-1])) s--;
        if (s - text >= 2 && s[-1] == ',' && isdigit((unsigned char)s[-2])) {
            s--;
            continue;
        }
        if (s - text >= 2 && s[-1] == '.' && isdigit((unsigned char)s[-2])) { // a decimal: start at its integer part
            s--;
            continue;
        }
        break;
    }
    if (s > text && s[-1] == '-') s--;
    return parse_number(s, value);
}
