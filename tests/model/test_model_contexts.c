// Inference contexts at different precisions over one loaded model (model.h:
// the precision is the KV cache's, the weights are shared).  A session -- a
// prefill of two sequences (19 and 23 tokens) and 6 batched greedy decoding
// steps of both -- is run at q8, f32 and bf16, each on a model loaded for it
// alone; then the three sessions run over ONE model, their calls interleaved
// (in two orders, so that each precision's weight layouts are made at another
// point of the others' sessions), and from three threads at once.  Every
// logit of every call must be bitwise the one the precision gives alone.
// Tiny random llamas (tests/generate/tiny_llama.h) with Q4_1 and Q8_0
// matrices: both have a q8 path (and a packed layout on AVX-512) and differ
// between the precisions.
#include "test_common.h"

#include <pthread.h>

#include "../generate/tiny_llama.h"
#include "model/model.h"
#include "util/common.h"
#include "util/rng.h"

enum { P0 = 19, P1 = 23, STEPS = 6, N_ROWS = P0 + P1 + 2 * STEPS, N_PREC = 3 };
static const kernel_precision PRECS[N_PREC] = {KERNEL_PRECISION_Q8, KERNEL_PRECISION_F32, KERNEL_PRECISION_BF16};

typedef struct session {
    kernel_precision prec;
    kv_cache *kv;
    int V;
    float *logits;  // (N_ROWS, V): the rows of every call, in order
    int64_t n_out;
    int step;       // next: 0 the prefill, 1..STEPS the decoding steps
    char error[256];
} session;

static void session_init(session *s, const model *m, kernel_precision p) {
    memset(s, 0, sizeof *s);
    s->prec = p;
    s->V = m->cfg.n_vocab;
    s->kv = kv_cache_init(&m->cfg, 2, 64, p);
    if (!s->kv) fail_msg("%s", as_last_error());
    s->logits = as_malloc(sizeof(float) * (size_t)N_ROWS * (size_t)s->V);
}

static void session_free(session *s) {
    kv_cache_free(s->kv);
    free(s->logits);
}

static int32_t argmax(const float *l, int n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

// One forward call of the session: the prefill (the same tokens at every
// precision), or a decoding step feeding both sequences their argmax.
// AS_OK, or AS_FAIL with the error in `s->error` (a thread cannot fail the test).
static int session_step(session *s, model *m) {
    const int V = s->V;
    if (s->step == 0) {
        int32_t tok[P0 + P1], seq[P0 + P1], pos[P0 + P1];
        as_rng r;
        as_rng_seed(&r, 31);
        for (int i = 0; i < P0 + P1; i++) {
            tok[i] = (int32_t)as_rng_below(&r, (uint64_t)V);
            seq[i] = i < P0 ? 0 : 1, pos[i] = i < P0 ? i : i - P0;
        }
        if (model_forward(m, s->kv, &(model_batch){P0 + P1, tok, seq, pos, NULL}, s->logits)) goto fail;
        s->n_out = P0 + P1;
    } else {
        const int k = s->step - 1;
        const float *last0 = s->logits + (s->n_out - (k == 0 ? P1 + 1 : 2)) * V, *last1 = s->logits + (s->n_out - 1) * V;
        int32_t t2[2] = {argmax(last0, V), argmax(last1, V)}, q2[2] = {0, 1}, p2[2] = {P0 + k, P1 + k};
        if (model_forward(m, s->kv, &(model_batch){2, t2, q2, p2, NULL}, s->logits + s->n_out * V)) goto fail;
        s->n_out += 2;
    }
    s->step++;
    return AS_OK;
fail:
    snprintf(s->error, sizeof s->error, "%s", as_last_error());
    return AS_FAIL;
}

static void step_or_fail(session *s, model *m) {
    if (session_step(s, m)) fail_msg("%s: %s", kernel_precision_name(s->prec), s->error);
}

// The session at precision p on a model of its own; *V: the vocabulary's size.
static float *alone(const char *path, kernel_precision p, int *V) {
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    *V = m->cfg.n_vocab;
    session s;
    session_init(&s, m, p);
    while (s.step <= STEPS) step_or_fail(&s, m);
    float *out = s.logits;
    s.logits = NULL;
    session_free(&s);
    model_free(m);
    return out;
}

static void expect_alone(const session *s, float *const ref[N_PREC], const char *how) {
    for (int i = 0; i < N_PREC; i++)
        if (PRECS[i] == s->prec && memcmp(s->logits, ref[i], sizeof(float) * (size_t)N_ROWS * (size_t)s->V) != 0)
            fail_msg("%s: the %s context's logits differ from the %s session alone", how, kernel_precision_name(s->prec),
                     kernel_precision_name(s->prec));
}

typedef struct thread_arg {
    session *s;
    model *m;
    int rc;
} thread_arg;

static void *run_thread(void *p) {
    thread_arg *a = p;
    while (a->rc == AS_OK && a->s->step <= STEPS) a->rc = session_step(a->s, a->m);
    return NULL;
}

static void check_model(const char *path, const char *name) {
    float *ref[N_PREC];
    int V;
    for (int i = 0; i < N_PREC; i++) ref[i] = alone(path, PRECS[i], &V);
    // The precisions really differ, or the comparisons below prove nothing.
    const size_t bytes = sizeof(float) * (size_t)N_ROWS * (size_t)V;
    assert_true(memcmp(ref[0], ref[1], bytes) != 0 && memcmp(ref[1], ref[2], bytes) != 0 && memcmp(ref[0], ref[2], bytes) != 0);

    // Interleaved on one model, call by call, in two orders.
    static const int ORDERS[2][N_PREC] = {{0, 1, 2}, {2, 1, 0}};
    for (int o = 0; o < 2; o++) {
        model *m;
        if (model_load(&m, path)) fail_msg("%s", as_last_error());
        session s[N_PREC];
        for (int i = 0; i < N_PREC; i++) session_init(&s[i], m, PRECS[i]);
        for (int step = 0; step <= STEPS; step++)
            for (int i = 0; i < N_PREC; i++) step_or_fail(&s[ORDERS[o][i]], m);
        for (int i = 0; i < N_PREC; i++) expect_alone(&s[i], ref, o == 0 ? "interleaved q8, f32, bf16" : "interleaved bf16, f32, q8");
        for (int i = 0; i < N_PREC; i++) session_free(&s[i]);
        model_free(m);
    }

    // From three threads at once (model_forward serialises the calls on one model).
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    session s[N_PREC];
    pthread_t th[N_PREC];
    thread_arg args[N_PREC];
    for (int i = 0; i < N_PREC; i++) session_init(&s[i], m, PRECS[i]);
    for (int i = 0; i < N_PREC; i++) {
        args[i] = (thread_arg){&s[i], m, AS_OK};
        assert_int_equal(pthread_create(&th[i], NULL, run_thread, &args[i]), 0);
    }
    for (int i = 0; i < N_PREC; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < N_PREC; i++)
        if (args[i].rc) fail_msg("thread %s: %s", kernel_precision_name(s[i].prec), s[i].error);
    for (int i = 0; i < N_PREC; i++) expect_alone(&s[i], ref, "three threads");
    fprintf(stderr, "  %s: q8, f32 and bf16 contexts on one model (interleaved both ways, and threaded): each bitwise as alone (%.1f MB of weight layouts made)\n",
            name, (double)model_layout_bytes(m) / 1e6);
    for (int i = 0; i < N_PREC; i++) session_free(&s[i]);

    // A backend that lacks an inference op is refused with one line, the model
    // unchanged; a KV cache of another backend is refused by model_forward.
    as_backend partial = as_backend_cpu;
    partial.name = "partial", partial.kv_store = NULL;
    assert_int_equal(model_use_backend(m, &partial), AS_FAIL);
    assert_string_equal(as_last_error(), "backend partial cannot run a model yet: it has no kv_store op");
    assert_ptr_equal(m->be, &as_backend_cpu);
    partial.kv_store = as_backend_cpu.kv_store;
    kv_cache *kv = model_kv_cache(m, 1, 8, KERNEL_PRECISION_F32);
    assert_int_equal(model_use_backend(m, &partial), AS_OK); // the weights move to `partial` (the CPU's functions)
    const int32_t tok = 3, seq = 0, pos = 0;
    float *logits = as_malloc(sizeof(float) * (size_t)m->cfg.n_vocab);
    assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = 1, .token = &tok, .seq = &seq, .pos = &pos}, logits), AS_FAIL);
    assert_string_equal(as_last_error(), "model_forward: KV cache made on backend cpu, the model runs on partial");
    kv_cache_free(kv);
    kv = model_kv_cache(m, 1, 8, KERNEL_PRECISION_F32);
    assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = 1, .token = &tok, .seq = &seq, .pos = &pos}, logits), AS_OK);
    kv_cache_free(kv);
    free(logits);
    model_free(m);
    for (int i = 0; i < N_PREC; i++) free(ref[i]);
}

static void test_contexts(void **state) {
    (void)state;
    char *dir = as_test_tmpdir();
    assert_non_null(dir);
    static const struct { ggml_type t; const char *name; } types[] = {{GGML_TYPE_Q4_1, "Q4_1"}, {GGML_TYPE_Q8_0, "Q8_0"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(types); i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/tiny_%s.gguf", dir, types[i].name);
        tiny_llama_cfg c = tiny_llama_default();
        c.wtype = types[i].t;
        if (tiny_llama_write(path, &c, NULL)) fail_msg("%s", as_last_error());
        check_model(path, types[i].name);
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_contexts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
