// Gradient checks of every training op on its own (src/train/ops.h): the
// analytic backward against fourth-order central finite differences of
// L = sum(out * R) (R random, accumulated in double), for every input element
// of small random shapes.  Also: that backward accumulates (+=) rather than
// overwrites, and negative controls (a wrong gradient is caught).
#include "train_test_util.h"

#include "train/ops.h"
#include "util/common.h"

#define TOL 3e-4
#define H_REL 1e-2

static double dot_d(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static float *randn(int64_t n, float sd, as_rng *r) {
    float *x = as_malloc(sizeof(float) * (size_t)AS_MAX(n, 1));
    fill_normal(x, n, sd, r);
    return x;
}

static float *zeros(int64_t n) { return as_calloc((size_t)AS_MAX(n, 1), sizeof(float)); }

// ---- embedding ----

typedef struct { int32_t tok[7]; float *E, *out, *R; int64_t V, C; float scale; } emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    train_embedding_forward(c->out, c->tok, c->E, 7, c->C, c->scale);
    return dot_d(c->out, c->R, 7 * c->C);
}

static void test_embedding(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 1);
    emb_ctx c = {{3, 1, 3, 0, 4, 3, 1}, NULL, NULL, NULL, 5, 4, 1.7f}; // repeated tokens accumulate
    c.E = randn(c.V * c.C, 1, &r), c.out = zeros(7 * c.C), c.R = randn(7 * c.C, 1, &r);
    float *dE = zeros(c.V * c.C);
    train_embedding_backward(dE, c.R, c.tok, 7, c.C, c.scale);
    fd_check("embedding dE", c.E, dE, c.V * c.C, emb_loss, &c, H_REL, TOL, 1e-3, 1000);
    // Row 2 (token 2) is never used: exactly zero.
    for (int j = 0; j < c.C; j++) assert_true(dE[2 * c.C + j] == 0.0f);
    free(c.E), free(c.out), free(c.R), free(dE);
}

// ---- linear ----

typedef struct { float *x, *W, *out, *R; int64_t N, in, out_dim; } lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    train_linear_forward(c->out, c->x, c->W, c->N, c->in, c->out_dim, 2);
    return dot_d(c->out, c->R, c->N * c->out_dim);
}

static void test_linear(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 2);
    lin_ctx c = {NULL, NULL, NULL, NULL, 3, 5, 4};
    c.x = randn(c.N * c.in, 1, &r), c.W = randn(c.out_dim * c.in, 1, &r), c.out = zeros(c.N * c.out_dim), c.R = randn(c.N * c.out_dim, 1, &r);
    float *dx = zeros(c.N * c.in), *dW = zeros(c.out_dim * c.in);
    train_linear_backward(dx, dW, c.R, c.x, c.W, c.N, c.in, c.out_dim, 2);
    fd_check("linear dx", c.x, dx, c.N * c.in, lin_loss, &c, H_REL, TOL, 1e-3, 1000);
    fd_check("linear dW", c.W, dW, c.out_dim * c.in, lin_loss, &c, H_REL, TOL, 1e-3, 1000);
    // Accumulation: a second backward doubles the gradients exactly.
    float *dx2 = zeros(c.N * c.in);
    memcpy(dx2, dx, sizeof(float) * (size_t)(c.N * c.in));
    train_linear_backward(dx2, NULL, c.R, c.x, c.W, c.N, c.in, c.out_dim, 2);
    for (int64_t i = 0; i < c.N * c.in; i++) assert_float_equal(dx2[i], 2.0f * dx[i], 1e-5f * (1.0f + fabsf(dx[i])));
    free(c.x), free(c.W), free(c.out), free(c.R), free(dx), free(dW), free(dx2);
}

// ---- RMSNorm ----

typedef struct { float *x, *w, *out, *rstd, *R; int64_t N, C; float eps; } rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    train_rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->C, c->eps, 1);
    return dot_d(c->out, c->R, c->N * c->C);
}

static void test_rmsnorm(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 3);
    rms_ctx c = {NULL, NULL, NULL, NULL, NULL, 3, 8, 1e-5f};
    c.x = randn(c.N * c.C, 1, &r), c.w = randn(c.C, 1, &r), c.out = zeros(c.N * c.C), c.rstd = zeros(c.N), c.R = randn(c.N * c.C, 1, &r);
    rms_loss(&c);
    float *dx = zeros(c.N * c.C), *dw = zeros(c.C);
    train_rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.rstd, c.N, c.C, 2);
    fd_check("rmsnorm dx", c.x, dx, c.N * c.C, rms_loss, &c, H_REL, TOL, 1e-3, 1000);
    fd_check("rmsnorm dw", c.w, dw, c.C, rms_loss, &c, H_REL, TOL, 1e-3, 1000);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.R), free(dx), free(dw);
}

// ---- rotary embedding ----

typedef struct { float *x, *y, *cs, *sn, *R; int64_t N; int heads, d, n_rot; bool neox; } rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    memcpy(c->y, c->x, sizeof(float) * (size_t)(c->N * c->heads * c->d));
    train_rope_forward(c->y, c->N, c->heads, c->d, c->n_rot, c->neox, c->cs, c->sn, 1);
    return dot_d(c->y, c->R, c->N * c->heads * c->d);
}

static void rope_case(bool neox, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    rope_ctx c = {NULL, NULL, NULL, NULL, NULL, 4, 2, 8, 6, neox}; // partial rotation: 6 of 8 dims
    const int64_t n = c.N * c.heads * c.d, half = c.n_rot / 2;
    c.x = randn(n, 1, &r), c.y = zeros(n), c.R = randn(n, 1, &r), c.cs = zeros(c.N * half), c.sn = zeros(c.N * half);
    for (int64_t i = 0; i < c.N * half; i++) {
        const double a = 6.0 * as_rng_uniform(&r);
        c.cs[i] = (float)cos(a), c.sn[i] = (float)sin(a);
    }
    float *dx = zeros(n);
    memcpy(dx, c.R, sizeof(float) * (size_t)n);
    train_rope_backward(dx, c.N, c.heads, c.d, c.n_rot, c.neox, c.cs, c.sn, 1);
    fd_check(neox ? "rope (neox) dx" : "rope (adjacent pairs) dx", c.x, dx, n, rope_loss, &c, H_REL, TOL, 1e-3, 1000);
    // Dims past n_rot pass through unchanged.
    rope_loss(&c);
    for (int64_t t = 0; t < c.N; t++)
        for (int h = 0; h < c.heads; h++)
            for (int i = c.n_rot; i < c.d; i++) assert_true(c.y[(t * c.heads + h) * c.d + i] == c.x[(t * c.heads + h) * c.d + i]);
    free(c.x), free(c.y), free(c.R), free(c.cs), free(c.sn), free(dx);
}

static void test_rope(void **state) {
    (void)state;
    rope_case(false, 4);
    rope_case(true, 5);
}

// ---- attention ----

typedef struct {
    float *q, *k, *v, *out, *lse, *R, *scratch;
    int32_t off[3], len[3];
    int32_t n_seq;
    int64_t N, max_len;
    int H, Hkv, d;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    train_attention_forward(c->out, c->lse, c->q, c->k, c->v, c->off, c->len, c->n_seq, c->H, c->Hkv, c->d, c->scratch, c->max_len, 2);
    return dot_d(c->out, c->R, c->N * c->H * c->d);
}

static void attention_case(int H, int Hkv, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    att_ctx c = {0};
    c.n_seq = 3;
    const int32_t lens[3] = {3, 5, 1};
    for (int s = 0, o = 0; s < 3; s++) c.off[s] = o, c.len[s] = lens[s], o += lens[s];
    c.N = 9, c.max_len = 5, c.H = H, c.Hkv = Hkv, c.d = 4;
    const int64_t qn = c.N * H * c.d, kn = c.N * Hkv * c.d;
    c.q = randn(qn, 1, &r), c.k = randn(kn, 1, &r), c.v = randn(kn, 1, &r), c.out = zeros(qn), c.lse = zeros(c.N * H);
    c.R = randn(qn, 1, &r), c.scratch = zeros(2 * c.max_len);
    att_loss(&c);
    float *dq = zeros(qn), *dk = zeros(kn), *dv = zeros(kn);
    train_attention_backward(dq, dk, dv, c.R, c.out, c.lse, c.q, c.k, c.v, c.off, c.len, c.n_seq, H, Hkv, c.d, 2);
    char what[64];
    snprintf(what, sizeof what, "attention H=%d Hkv=%d dq", H, Hkv);
    fd_check(what, c.q, dq, qn, att_loss, &c, H_REL, TOL, 1e-3, 1000);
    snprintf(what, sizeof what, "attention H=%d Hkv=%d dk", H, Hkv);
    fd_check(what, c.k, dk, kn, att_loss, &c, H_REL, TOL, 1e-3, 1000);
    snprintf(what, sizeof what, "attention H=%d Hkv=%d dv", H, Hkv);
    fd_check(what, c.v, dv, kn, att_loss, &c, H_REL, TOL, 1e-3, 1000);
    // Sequence isolation: the one-token sequence (row 8) attends only to
    // itself, so its output is its own value row.
    att_loss(&c);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < c.d; i++) assert_float_equal(c.out[(8 * H + h) * c.d + i], c.v[(8 * Hkv + h / (H / Hkv)) * c.d + i], 1e-6);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.lse), free(c.R), free(c.scratch), free(dq), free(dk), free(dv);
}

static void test_attention(void **state) {
    (void)state;
    attention_case(4, 2, 6); // grouped-query
    attention_case(2, 1, 7); // multi-query
    attention_case(2, 2, 8); // multi-head
}

// ---- gated linear unit ----

typedef struct { float *g, *u, *h, *R; int64_t n; bool gelu; } glu_ctx;

static double glu_loss(void *p) {
    glu_ctx *c = p;
    train_glu_forward(c->h, c->g, c->u, c->n, c->gelu, 1);
    return dot_d(c->h, c->R, c->n);
}

static void test_glu(void **state) {
    (void)state;
    for (int gelu = 0; gelu < 2; gelu++) {
        as_rng r;
        as_rng_seed(&r, 9 + gelu);
        glu_ctx c = {NULL, NULL, NULL, NULL, 24, gelu};
        c.g = randn(c.n, 2, &r), c.u = randn(c.n, 1, &r), c.h = zeros(c.n), c.R = randn(c.n, 1, &r);
        float *dg = zeros(c.n), *du = zeros(c.n);
        for (int64_t i = 0; i < c.n; i++) dg[i] = du[i] = NAN; // written, not accumulated
        train_glu_backward(dg, du, c.R, c.g, c.u, c.n, c.gelu, 1);
        fd_check(gelu ? "geglu dg" : "swiglu dg", c.g, dg, c.n, glu_loss, &c, H_REL, TOL, 1e-3, 1000);
        fd_check(gelu ? "geglu du" : "swiglu du", c.u, du, c.n, glu_loss, &c, H_REL, TOL, 1e-3, 1000);
        free(c.g), free(c.u), free(c.h), free(c.R), free(dg), free(du);
    }
}

// ---- log-softmax ----

typedef struct { float *z, *logp, *lse, *R; int32_t target[3]; int64_t rows, V; } ls_ctx;

static double ls_loss(void *p) {
    ls_ctx *c = p;
    train_logsoftmax_forward(c->logp, c->lse, c->z, c->target, c->rows, c->V, 1);
    return dot_d(c->logp, c->R, c->rows);
}

static void test_logsoftmax(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 11);
    ls_ctx c = {NULL, NULL, NULL, NULL, {2, 0, 6}, 3, 7};
    c.z = randn(c.rows * c.V, 3, &r), c.logp = zeros(c.rows), c.lse = zeros(c.rows), c.R = randn(c.rows, 1, &r);
    ls_loss(&c);
    // Probabilities sum to one: sum_j exp(z_j - lse) = 1.
    for (int64_t i = 0; i < c.rows; i++) {
        double s = 0;
        for (int64_t j = 0; j < c.V; j++) s += exp((double)c.z[i * c.V + j] - c.lse[i]);
        assert_true(fabs(s - 1.0) < 1e-5);
    }
    float *dz = zeros(c.rows * c.V);
    for (int64_t i = 0; i < c.rows * c.V; i++) dz[i] = NAN; // written, not accumulated
    train_logsoftmax_backward(dz, c.R, c.z, c.lse, c.target, c.rows, c.V, 1);
    fd_check("logsoftmax dz", c.z, dz, c.rows * c.V, ls_loss, &c, H_REL, TOL, 1e-3, 1000);
    free(c.z), free(c.logp), free(c.lse), free(c.R), free(dz);
}

// ---- negative control ----

// The checker must fail on a gradient that is slightly wrong.
static void test_fd_check_catches_errors(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 12);
    rms_ctx c = {NULL, NULL, NULL, NULL, NULL, 2, 6, 1e-5f};
    c.x = randn(c.N * c.C, 1, &r), c.w = randn(c.C, 1, &r), c.out = zeros(c.N * c.C), c.rstd = zeros(c.N), c.R = randn(c.N * c.C, 1, &r);
    rms_loss(&c);
    float *dx = zeros(c.N * c.C), *dw = zeros(c.C);
    train_rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.rstd, c.N, c.C, 1);
    double gmax = 0;
    for (int64_t i = 0; i < c.N * c.C; i++) gmax = fmax(gmax, fabs(dx[i]));
    dx[3] += (float)(0.01 * gmax); // a 1% error in one element
    double worst = 0.0;
    const int64_t n = c.N * c.C;
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(fd_derivative(c.x, i, rms_loss, &c, H_REL) - dx[i]) / gmax);
    assert_true(worst > TOL);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.R), free(dx), free(dw);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding), cmocka_unit_test(test_linear),    cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),      cmocka_unit_test(test_attention), cmocka_unit_test(test_glu),
        cmocka_unit_test(test_logsoftmax), cmocka_unit_test(test_fd_check_catches_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
