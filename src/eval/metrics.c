// Per-item metrics (lm-evaluation-harness's process_results) and their aggregation.
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "eval/eval_internal.h"
#include "util/common.h"
#include "util/json.h"
#include "util/rng.h"

// Python's len(): Unicode code points of a UTF-8 string.
static double n_chars(const char *s) {
    double n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xC0) != 0x80;
    return n;
}

void eval_mc_metrics(const eval_doc *d, const double *ll, double *acc, double *acc_norm, double *mc2) {
    // np.argmax: the first of equal maxima.
    int32_t best = 0, best_norm = 0;
    double bn = -INFINITY;
    for (int32_t c = 0; c < d->n_choices; c++) {
        if (ll[c] > ll[best]) best = c;
        double len = n_chars(d->choices[c]);
        double v = ll[c] / (len > 0 ? len : 1);
        if (c == 0 || v > bn) bn = v, best_norm = c;
    }
    *acc = best == d->gold;
    *acc_norm = best_norm == d->gold;
    // truthfulqa_mc2: the normalised probability mass of the true choices.
    *mc2 = 0;
    if (d->n_true > 0) {
        double mx = ll[0];
        for (int32_t c = 1; c < d->n_choices; c++) mx = AS_MAX(mx, ll[c]);
        double pt = 0, pa = 0;
        for (int32_t c = 0; c < d->n_choices; c++) {
            double p = exp(ll[c] - mx);
            pa += p;
            if (c < d->n_true) pt += p;
        }
        *mc2 = pt / pa;
    }
}

void eval_mean_stderr(const double *x, int64_t n, double *mean, double *se) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    *mean = n ? s / (double)n : NAN;
    if (n < 2) { *se = NAN; return; }
    double v = 0;
    for (int64_t i = 0; i < n; i++) v += (x[i] - *mean) * (x[i] - *mean);
    // lm-eval's mean_stderr: sample_stddev / sqrt(n), sample_stddev with n - 1.
    *se = sqrt(v / (double)(n - 1)) / sqrt((double)n);
}

// Numbers as lm-eval's flexible-extract regex sees them, "-?[$0-9.,]{2,}|-?[0-9]+",
// normalised as its exact_match with regexes_to_ignore [",", "\$", "\.$"].
static char *normalise_number(const char *s, size_t n) {
    char *out = as_malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != ',' && s[i] != '$') out[k++] = s[i];
    while (k > 0 && out[k - 1] == '.') k--;
    out[k] = 0;
    return out;
}

static bool num_char(char c) { return isdigit((unsigned char)c) || c == '$' || c == '.' || c == ','; }

// The last match of -?[$0-9.,]{2,} or -?[0-9]+ in s (NULL if none); with
// `first` the first match instead.
static char *scan_number(const char *s, bool first) {
    char *last = NULL;
    for (const char *p = s; *p;) {
        const char *st = p;
        bool neg = *p == '-';
        const char *q = neg ? p + 1 : p;
        const char *e = q;
        while (*e && num_char(*e)) e++;
        size_t run = (size_t)(e - q);
        bool has_digit = false;
        for (const char *r = q; r < e; r++) has_digit |= isdigit((unsigned char)*r) != 0;
        if (run >= 2 || (run == 1 && isdigit((unsigned char)*q))) {
            if (has_digit || run >= 2) {
                free(last);
                last = normalise_number(st, (size_t)(e - st));
                if (first) return last;
            }
            p = e;
        } else {
            p++;
        }
    }
    return last;
}

char *eval_extract_answer(const char *text, bool strict) {
    // "#### n": the first number after the marker (lm-eval strict-match: "#### (\-?[0-9\.\,]+)").
    const char *m = strstr(text, "#### ");
    if (m) {
        const char *p = m + 5;
        const char *e = p;
        if (*e == '-') e++;
        const char *d = e;
        while (*e && (isdigit((unsigned char)*e) || *e == '.' || *e == ',')) e++;
        if (e > d) return normalise_number(p, (size_t)(e - p));
    }
    if (strict) return NULL;
    return scan_number(text, false);
}

// ---- Python's whitespace ----

static bool py_space_cp(int32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

size_t eval_py_lstrip_len(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int32_t cp;
        size_t k = as_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (!py_space_cp(cp)) break;
        i += k;
    }
    return i;
}

size_t eval_py_rstrip_len(const char *s, size_t n) {
    // Walk back over whole characters: a continuation byte belongs to the
    // sequence that starts at most 3 bytes before it.
    while (n > 0) {
        size_t st = n - 1;
        while (st > 0 && n - st < 4 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        int32_t cp;
        size_t k = as_utf8_next((const unsigned char *)s + st, n - st, &cp);
        if (k != n - st || !py_space_cp(cp)) break;
        n = st;
    }
    return n;
}

// ---- perplexities (lm-eval's aggregations) ----

int64_t eval_count_words(const char *s) {
    // len(re.split(r"\s+", s)): one more than the maximal runs of whitespace
    // (empty pieces at either end count, as Python's split gives them).
    const size_t n = strlen(s);
    int64_t runs = 0;
    bool in_run = false;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t k = as_utf8_next((const unsigned char *)s + i, n - i, &cp);
        const bool sp = py_space_cp(cp);
        runs += sp && !in_run;
        in_run = sp;
        i += k;
    }
    return runs + 1;
}

double eval_perplexity_bootstrap_stderr(const double *ll, int64_t n, int32_t iters) {
    // lm-eval's bootstrap_stderr(perplexity, xs, iters): `iters` resamples of
    // n items with replacement, in chunks of 1000 each seeded by its index;
    // the sample standard deviation of exp(-mean) over the resamples.  The
    // draws are this RNG's, not Python's: the estimate, not the digits, agrees.
    if (n < 2 || iters < 2) return NAN;
    double *res = as_malloc((size_t)iters * sizeof *res);
    const int32_t chunk = AS_MIN(1000, iters), n_chunks = iters / chunk;
#pragma omp parallel for schedule(dynamic, 1)
    for (int32_t c = 0; c < n_chunks; c++) {
        as_rng r;
        as_rng_seed(&r, (uint64_t)c);
        for (int32_t j = 0; j < chunk; j++) {
            double sum = 0;
            for (int64_t i = 0; i < n; i++) sum += ll[as_rng_below(&r, (uint64_t)n)];
            res[(size_t)c * (size_t)chunk + (size_t)j] = exp(-sum / (double)n);
        }
    }
    const int64_t m = (int64_t)n_chunks * chunk;
    double mean, se;
    eval_mean_stderr(res, m, &mean, &se);
    free(res);
    return se * sqrt((double)m); // sample standard deviation
}
