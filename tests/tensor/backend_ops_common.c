// The helpers of backend_ops_common.h.
#include "backend_ops_common.h"

#include <math.h>

#include "util/common.h"

as_rng g_rng;
const char *g_only;

void fill(float *x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * as_rng_uniform(&g_rng));
}

double norm_err(const float *y, const double *ref, int64_t n) {
    double e = 0, r = 0;
    for (int64_t i = 0; i < n; i++) e += (y[i] - ref[i]) * (y[i] - ref[i]), r += ref[i] * ref[i];
    return sqrt(e) / fmax(sqrt(r), 1e-30);
}

double elem_err(const float *y, const double *ref, int64_t n) {
    double w = 0;
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs(y[i] - ref[i]) / fmax(1.0, fabs(ref[i])));
    return w;
}

// The worst error seen per op (and precision), printed at the end: how close to its tolerance each op runs.
int g_checks;
static struct { char op[48]; double err, tol; } g_worst[128];
static int g_n_worst;

void expect(double err, double tol, const as_backend *b, int v, const char *op, const char *what) {
    g_checks++;
    char key[48];
    const char *prec = strrchr(what, ',');
    snprintf(key, sizeof key, "%s%s", op, (!strcmp(op, "matmul") || !strcmp(op, "weights_matmul")) && prec ? prec : "");
    int i = 0;
    while (i < g_n_worst && strcmp(g_worst[i].op, key)) i++;
    if (i == g_n_worst && g_n_worst < (int)AS_ARRAY_LEN(g_worst)) snprintf(g_worst[g_n_worst++].op, sizeof g_worst[0].op, "%s", key);
    if (i < g_n_worst && err >= g_worst[i].err) g_worst[i].err = err, g_worst[i].tol = tol;
    if (!(err <= tol)) fail_msg("%s/%s %s (%s): error %.3g > tolerance %.3g", b->name, b->variant_name(v), op, what, err, tol);
}

void for_each(op_test fn) { for_each_in(AS_BACKEND_INFERENCE | AS_BACKEND_TRAINING, fn); }

void for_each_in(unsigned groups, op_test fn) {
    for (int i = 0; i < as_backend_count(); i++) {
        const as_backend *b = as_backend_at(i);
        if (g_only && strcmp(b->name, g_only)) continue;
        const char *missing = as_backend_missing(b, groups);
        if (missing) {
            fprintf(stderr, "backend %s: not tested here, it has no %s op yet\n", b->name, missing);
            continue;
        }
        int ran = 0;
        for (int v = 0; v < b->n_variants(); v++) {
            if (b->use_variant(v) != AS_OK) continue;
            fn(b, v);
            ran++;
        }
        b->use_variant(-1);
        assert_true(ran > 0);
    }
}

int report(void **st) {
    (void)st;
    fprintf(stderr, "%d checks against the double-precision references; worst error per op (tolerance):\n", g_checks);
    for (int i = 0; i < g_n_worst; i++) fprintf(stderr, "  %-28s %.3g (%.3g)\n", g_worst[i].op, g_worst[i].err, g_worst[i].tol);
    return 0;
}
