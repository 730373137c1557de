// The training model runs on the backend it is given (train_set_backend): a
// backend whose training-graph entries are the CPU's behind counting wrappers
// (what a second backend plugs in) trains a tiny llama and a tiny gemma, full
// fine-tuning and LoRA with dropout, at f32 and bf16, with activation
// checkpointing or not, to the same bits as the default backend, and each op
// the step needs was called through the table.  (That src/train calls nothing
// else is what the seam's grep checks: docs/ARCHITECTURE.md.)  The wrapper
// has its own buf_alloc too: the model's big buffers (weights, gradients,
// adapters, activations, optimizer moments) are that backend's, move to it
// and back with the backend, and are freed by the backend that made them.
#include "train_test_util.h"

#include "tensor/backend.h"
#include "train/train.h"
#include "util/common.h"

enum {
    OP_SGEMM, OP_GEMM_BF16, OP_PACK, OP_PACKED_FREE, OP_GEMM_PACKED, OP_EMB_F, OP_EMB_B, OP_RMS_F, OP_RMS_B, OP_ROPE_F, OP_ROPE_B, OP_ATT_F,
    OP_ATT_B, OP_GLU_F, OP_GLU_B, OP_LSM_F, OP_LSM_B, OP_RESID, OP_LORA_F, OP_LORA_B, OP_SUMSQ, OP_SCALE, OP_ADAMW, N_OPS
};
static const char *const OP_NAMES[N_OPS] = {"sgemm", "gemm_bf16", "bf16_pack_b", "bf16_packed_free", "gemm_bf16_packed", "embedding_forward",
                                            "embedding_backward", "rmsnorm_forward", "rmsnorm_backward", "rope_forward", "rope_backward",
                                            "attention_forward", "attention_backward", "glu_forward", "glu_backward", "logsoftmax_forward",
                                            "logsoftmax_backward", "residual_forward", "lora_forward", "lora_backward", "sum_squares", "scale",
                                            "adamw_update"};
static int g_calls[N_OPS];
#define CPU as_backend_cpu

static void w_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float al, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float be, float *C, int64_t ldc, int nth) {
    g_calls[OP_SGEMM]++, CPU.sgemm(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc, nth);
}
static void w_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float al, const float *A, int64_t lda, const float *B, int64_t ldb,
                        float be, float *C, int64_t ldc, int nth) {
    g_calls[OP_GEMM_BF16]++, CPU.gemm_bf16(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc, nth);
}
static as_bf16_packed *w_pack(bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth) {
    return g_calls[OP_PACK]++, CPU.bf16_pack_b(tb, K, N, B, ldb, nth);
}
static void w_packed_free(as_bf16_packed *p) { g_calls[OP_PACKED_FREE]++, CPU.bf16_packed_free(p); }
static void w_gemm_packed(bool ta, int64_t M, float al, const float *A, int64_t lda, const as_bf16_packed *P, float be, float *C, int64_t ldc,
                          int nth) {
    g_calls[OP_GEMM_PACKED]++, CPU.gemm_bf16_packed(ta, M, al, A, lda, P, be, C, ldc, nth);
}
static void w_emb_f(float *o, const int32_t *t, const float *E, int64_t N, int64_t C, float s) { g_calls[OP_EMB_F]++, CPU.embedding_forward(o, t, E, N, C, s); }
static void w_emb_b(float *dE, const float *d, const int32_t *t, int64_t N, int64_t C, float s) {
    g_calls[OP_EMB_B]++, CPU.embedding_backward(dE, d, t, N, C, s);
}
static void w_rms_f(float *o, float *r, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth) {
    g_calls[OP_RMS_F]++, CPU.rmsnorm_forward(o, r, x, w, N, C, eps, nth);
}
static void w_rms_b(float *dx, float *dw, const float *d, const float *x, const float *w, const float *r, int64_t N, int64_t C, int nth) {
    g_calls[OP_RMS_B]++, CPU.rmsnorm_backward(dx, dw, d, x, w, r, N, C, nth);
}
static void w_rope_f(float *x, int64_t N, int h, int d, int nr, bool neox, const float *cs, const float *sn, int nth) {
    g_calls[OP_ROPE_F]++, CPU.rope_forward(x, N, h, d, nr, neox, cs, sn, nth);
}
static void w_rope_b(float *x, int64_t N, int h, int d, int nr, bool neox, const float *cs, const float *sn, int nth) {
    g_calls[OP_ROPE_B]++, CPU.rope_backward(x, N, h, d, nr, neox, cs, sn, nth);
}
static void w_att_f(float *o, float *l, const float *q, const float *k, const float *v, const int32_t *so, const int32_t *sl, int32_t ns, int H,
                    int Hkv, int d, float *s, int64_t ml, int nth) {
    g_calls[OP_ATT_F]++, CPU.attention_forward(o, l, q, k, v, so, sl, ns, H, Hkv, d, s, ml, nth);
}
static void w_att_b(float *dq, float *dk, float *dv, const float *d, const float *o, const float *l, const float *q, const float *k,
                    const float *v, const int32_t *so, const int32_t *sl, int32_t ns, int H, int Hkv, int hd, int nth) {
    g_calls[OP_ATT_B]++, CPU.attention_backward(dq, dk, dv, d, o, l, q, k, v, so, sl, ns, H, Hkv, hd, nth);
}
static void w_glu_f(float *h, const float *g, const float *u, int64_t n, bool ge, int nth) { g_calls[OP_GLU_F]++, CPU.glu_forward(h, g, u, n, ge, nth); }
static void w_glu_b(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool ge, int nth) {
    g_calls[OP_GLU_B]++, CPU.glu_backward(dg, du, dh, g, u, n, ge, nth);
}
static void w_lsm_f(float *lp, float *lse, const float *z, const int32_t *t, int64_t R, int64_t V, int nth) {
    g_calls[OP_LSM_F]++, CPU.logsoftmax_forward(lp, lse, z, t, R, V, nth);
}
static void w_lsm_b(float *dz, const float *dlp, const float *z, const float *lse, const int32_t *t, int64_t R, int64_t V, int nth) {
    g_calls[OP_LSM_B]++, CPU.logsoftmax_backward(dz, dlp, z, lse, t, R, V, nth);
}
static void w_resid(float *o, const float *a, const float *b, int64_t n, int nth) { g_calls[OP_RESID]++, CPU.residual_forward(o, a, b, n, nth); }
static void w_lora_f(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r, int64_t out, float s,
                     const as_dropout *d, int nth) {
    g_calls[OP_LORA_F]++, CPU.lora_forward(y, u, x, A, B, N, in, r, out, s, d, nth);
}
static void w_lora_b(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A, const float *B, int64_t N,
                     int64_t in, int64_t r, int64_t out, float s, const as_dropout *d, float *du, int nth) {
    g_calls[OP_LORA_B]++, CPU.lora_backward(dx, dA, dB, dy, x, u, A, B, N, in, r, out, s, d, du, nth);
}
static double w_sumsq(const float *x, size_t n, int nth) { return g_calls[OP_SUMSQ]++, CPU.sum_squares(x, n, nth); }
static void w_scale(float *x, size_t n, float c, int nth) { g_calls[OP_SCALE]++, CPU.grad_scale(x, n, c, nth); }
static void w_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps, float wd, int64_t t, int nth) {
    g_calls[OP_ADAMW]++, CPU.adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, t, nth);
}

// The wrapper's buffers: the CPU's behind a table of the live ones.
#define MAX_BUFS 64
static void *g_bufs[MAX_BUFS];
static void *w_buf_alloc(size_t bytes) {
    void *p = CPU.buf_alloc(bytes);
    for (int i = 0; i < MAX_BUFS; i++)
        if (!g_bufs[i]) return g_bufs[i] = p;
    fail_msg("more than %d live buffers", MAX_BUFS);
    return NULL;
}
static void w_buf_free(void *p) {
    for (int i = 0; i < MAX_BUFS; i++)
        if (g_bufs[i] == p) {
            g_bufs[i] = NULL;
            CPU.buf_free(p);
            return;
        }
    fail_msg("buf_free(%p): not a buffer of the wrapped backend", p);
}
static bool owned(const void *p) {
    for (int i = 0; i < MAX_BUFS; i++)
        if (p && g_bufs[i] == p) return true;
    return false;
}
static int live_bufs(void) {
    int n = 0;
    for (int i = 0; i < MAX_BUFS; i++) n += g_bufs[i] != NULL;
    return n;
}

static as_backend counting(void) {
    as_backend b = as_backend_cpu;
    b.name = "counting-cpu";
    b.sgemm = w_sgemm, b.gemm_bf16 = w_gemm_bf16, b.bf16_pack_b = w_pack, b.bf16_packed_free = w_packed_free, b.gemm_bf16_packed = w_gemm_packed;
    b.embedding_forward = w_emb_f, b.embedding_backward = w_emb_b, b.rmsnorm_forward = w_rms_f, b.rmsnorm_backward = w_rms_b;
    b.rope_forward = w_rope_f, b.rope_backward = w_rope_b, b.attention_forward = w_att_f, b.attention_backward = w_att_b;
    b.glu_forward = w_glu_f, b.glu_backward = w_glu_b, b.logsoftmax_forward = w_lsm_f, b.logsoftmax_backward = w_lsm_b;
    b.residual_forward = w_resid, b.lora_forward = w_lora_f, b.lora_backward = w_lora_b;
    b.sum_squares = w_sumsq, b.grad_scale = w_scale, b.adamw_update = w_adamw;
    b.buf_alloc = w_buf_alloc, b.buf_free = w_buf_free;
    return b;
}

static train_model *tiny(bool gemma) {
    model_config c;
    memset(&c, 0, sizeof c);
    c.arch = gemma ? MODEL_ARCH_GEMMA : MODEL_ARCH_LLAMA;
    snprintf(c.arch_name, sizeof c.arch_name, "%s", gemma ? "gemma" : "llama");
    c.n_vocab = 37, c.n_embd = 16, c.n_layer = 2, c.n_head = gemma ? 2 : 4, c.n_head_kv = gemma ? 1 : 2, c.head_dim = gemma ? 12 : 4;
    c.n_ff = 24, c.n_ctx_train = 64, c.n_rot = gemma ? 12 : 2, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f, c.rope_neox = gemma;
    c.gelu = gemma, c.emb_scale = gemma ? 4.0f : 1.0f, c.tied_output = gemma;
    train_model *m;
    assert_int_equal(train_model_init(&m, &c), AS_OK);
    as_rng r;
    as_rng_seed(&r, 11);
    fill_normal(m->params_memory, (int64_t)m->n_params, 0.3f, &r);
    train_set_threads(m, 2);
    return m;
}

// Two optimizer steps of (forward, backward) on one batch; returns the trainable parameters (caller frees).
static float *train_two_steps(const as_backend *be, bool gemma, bool lora, train_precision prec, bool ckpt, size_t *n_out) {
    train_model *m = tiny(gemma);
    if (be) assert_int_equal(train_set_backend(m, be), AS_OK);
    train_set_precision(m, prec);
    train_set_checkpointing(m, ckpt);
    if (lora) {
        const train_lora_config lc = {.rank = 2, .alpha = 3.0f, .dropout = 0.25f, .targets = 0, .seed = 5};
        assert_int_equal(train_lora_attach(m, &lc), AS_OK);
        as_rng r;
        as_rng_seed(&r, 77);
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) fill_normal(m->lora->b[t], m->cfg.n_layer * m->lora->out[t] * lc.rank, 0.3f, &r);
    }
    static const int32_t tok[2 * 8] = {5, 17, 3, 30, 2, 2, 9, 11, /**/ 1, 36, 4, 8, 0, 0, 0, 0}, len[2] = {8, 4}, plen[2] = {3, 1};
    const train_batch b = {.n_seq = 2, .n_ctx = 8, .tokens = tok, .len = len, .prompt_len = plen, .backward = true};
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    const size_t n = train_trainable(m, &params, &grads, &segs, &n_segs);
    optim_config oc;
    optim_config_default(&oc, OPTIM_ADAMW);
    oc.max_grad_norm = 1e-3f; // clipped: the scaling runs too
    optim *o;
    assert_int_equal(optim_init(&o, &oc, n), AS_OK);
    for (int step = 0; step < 2; step++) {
        float lp[2];
        const float up[2] = {1.0f, -0.5f};
        train_zero_grad(m);
        assert_int_equal(train_forward(m, &b, lp, NULL), AS_OK);
        assert_int_equal(train_backward(m, up), AS_OK);
        train_optim_step(m, o, NULL, NULL);
    }
    if (be) { // the trainable tensors and the moments live in the backend's buffers
        assert_true(owned(params) && owned(grads) && owned(o->m) && owned(o->v));
        assert_true(lora || owned(m->params_memory));
    }
    float *out = as_malloc(sizeof(float) * n);
    memcpy(out, params, sizeof(float) * n);
    *n_out = n;
    optim_free(o);
    train_model_free(m);
    return out;
}

static void test_runs_on_given_backend(void **st) {
    (void)st;
    const as_backend wrap = counting();
    for (int gemma = 0; gemma < 2; gemma++)
        for (int lora = 0; lora < 2; lora++)
            for (int bf16 = 0; bf16 < 2; bf16++)
                for (int ckpt = 0; ckpt < 2; ckpt++) {
                    const train_precision p = bf16 ? TRAIN_PRECISION_BF16 : TRAIN_PRECISION_F32;
                    size_t n1, n2;
                    float *ref = train_two_steps(NULL, gemma, lora, p, ckpt, &n1);
                    memset(g_calls, 0, sizeof g_calls);
                    float *got = train_two_steps(&wrap, gemma, lora, p, ckpt, &n2);
                    assert_int_equal(n1, n2);
                    if (memcmp(ref, got, sizeof(float) * n1))
                        fail_msg("%s %s %s%s: parameters differ on the wrapped backend", gemma ? "gemma" : "llama", lora ? "LoRA" : "full",
                                 bf16 ? "bf16" : "f32", ckpt ? " checkpointing" : "");
                    for (int k = 0; k < N_OPS; k++) {
                        const bool expected = k == OP_SGEMM         ? !bf16
                                              : k == OP_GEMM_BF16   ? bf16
                                              : k == OP_PACK || k == OP_PACKED_FREE || k == OP_GEMM_PACKED ? bf16
                                              : k == OP_LORA_F || k == OP_LORA_B ? lora
                                              : k == OP_EMB_B       ? !lora // LoRA: no dWout, no logits recomputed
                                              : true;
                        if (expected && !g_calls[k])
                            fail_msg("%s %s %s: %s not called through the backend", gemma ? "gemma" : "llama", lora ? "LoRA" : "full",
                                     bf16 ? "bf16" : "f32", OP_NAMES[k]);
                    }
                    free(ref), free(got);
                    if (live_bufs()) fail_msg("%d buffers of the wrapped backend left after train_model_free", live_bufs());
                }
}

// Adapters made on the CPU (train_lora_new) and a model moved to another
// backend and back: their buffers follow (contents and the pointers into
// them), the adapters swapped out stay the caller's and are freed by the
// backend that holds them; the model trains to the CPU's bits after the moves.
static void test_buffers_follow_backend(void **st) {
    (void)st;
    const as_backend wrap = counting();
    const train_lora_config lc = {.rank = 2, .alpha = 3.0f, .dropout = 0.25f, .targets = 0, .seed = 5};
    train_model *m = tiny(false), *ref = tiny(false);
    assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    assert_int_equal(train_lora_attach(ref, &lc), AS_OK);
    static const int32_t tok[8] = {5, 17, 3, 30, 2, 2, 9, 11}, len[1] = {8}, plen[1] = {3};
    const train_batch b = {.n_seq = 1, .n_ctx = 8, .tokens = tok, .len = len, .prompt_len = plen, .backward = true};
    float lp, lp_ref;
    const float up = 1.0f;
    assert_int_equal(train_forward(m, &b, &lp, NULL), AS_OK); // activations on the CPU, dropped by the move
    const size_t n_params = m->n_params, n_lora = m->lora->n;
    float *keep_p = as_malloc(sizeof(float) * n_params), *keep_l = as_malloc(sizeof(float) * n_lora);
    memcpy(keep_p, m->params_memory, sizeof(float) * n_params), memcpy(keep_l, m->lora->memory, sizeof(float) * n_lora);
    const ptrdiff_t off_b = m->lora->b[2] - m->lora->memory, off_ga = m->lora->ga[3] - m->lora->grad_memory;

    assert_int_equal(train_set_backend(m, &wrap), AS_OK);
    assert_true(owned(m->params_memory) && owned(m->lora->memory) && owned(m->lora->grad_memory));
    assert_ptr_equal(m->lora->be, &wrap);
    assert_memory_equal(m->params_memory, keep_p, sizeof(float) * n_params);
    assert_memory_equal(m->lora->memory, keep_l, sizeof(float) * n_lora);
    assert_int_equal(m->lora->b[2] - m->lora->memory, off_b);
    assert_int_equal(m->lora->ga[3] - m->lora->grad_memory, off_ga);
    assert_ptr_equal(m->params.tok_embd, m->params_memory); // repointed into the new buffer

    // Adapters made on the CPU move in when set; the ones swapped out stay on the wrapper.
    train_lora *cpu = train_lora_new(&m->cfg, &lc);
    assert_ptr_equal(cpu->be, &as_backend_cpu);
    train_lora *own = train_lora_set(m, cpu);
    assert_true(owned(cpu->memory) && owned(own->memory));
    train_lora_set(m, own); // reseeds the dropout stream from own's seed
    train_lora_free(cpu);   // the wrapper's buf_free (it fails on a pointer not its own)
    assert_int_equal(train_forward(ref, &b, &lp_ref, NULL), AS_OK);
    train_lora_set(ref, ref->lora); // the same dropout stream as m's now

    // Trains on the wrapper as on the CPU, then moves back.
    train_zero_grad(m), train_zero_grad(ref);
    assert_int_equal(train_forward(m, &b, &lp, NULL), AS_OK);
    assert_int_equal(train_forward(ref, &b, &lp_ref, NULL), AS_OK);
    assert_memory_equal(&lp, &lp_ref, sizeof lp);
    assert_int_equal(train_backward(m, &up), AS_OK);
    assert_int_equal(train_backward(ref, &up), AS_OK);
    assert_memory_equal(m->lora->grad_memory, ref->lora->grad_memory, sizeof(float) * n_lora);
    assert_true(live_bufs() > 0);
    assert_int_equal(train_set_backend(m, NULL), AS_OK);
    assert_int_equal(live_bufs(), 0);
    assert_memory_equal(m->lora->grad_memory, ref->lora->grad_memory, sizeof(float) * n_lora);
    free(keep_p), free(keep_l);
    train_model_free(m), train_model_free(ref);
}

// A backend still being written (a training op left NULL) is refused with one
// line naming the op, and the model stays on its backend.
static void test_refuses_incomplete_backend(void **st) {
    (void)st;
    as_backend partial = as_backend_cpu;
    partial.name = "partial", partial.adamw_update = NULL;
    train_model *m = tiny(false);
    const as_backend *before = m->be;
    assert_int_equal(train_set_backend(m, &partial), AS_FAIL);
    assert_string_equal(as_last_error(), "backend partial cannot train yet: it has no adamw_update op");
    assert_ptr_equal(m->be, before);
    assert_int_equal(train_set_backend(m, NULL), AS_OK); // NULL: the CPU's
    assert_ptr_equal(m->be, &as_backend_cpu);
    train_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_runs_on_given_backend), cmocka_unit_test(test_buffers_follow_backend),
                                       cmocka_unit_test(test_refuses_incomplete_backend)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
