// The training model through its public interface (src/train/train.h):
//  * its log-probabilities equal the inference engine's (model_forward at
//    KERNEL_PRECISION_F32) and tools/ref_model.py's NumPy logits on the tiny
//    models of tests/vectors/model_*.json, F32 and F16 files;
//  * packing/padding invariance of the per-sequence answer log-probabilities;
//  * full-model gradients against finite differences for tiny random llama
//    (GQA, untied, partial RoPE) and gemma (MQA, head_dim != C/H, tied, GeGLU)
//    models, without and with LoRA (dropout off and on), for an arbitrary
//    upstream gradient on the per-sequence sums;
//  * adapters off == base model, without a copy; LoRA leaves the base frozen;
//  * gradient accumulation == one big batch; bitwise determinism of training
//    steps for the same seed and thread count; bad input gives one error line.
#include "train_test_util.h"
#include "train_vectors.h"

#include "model/model.h"
#include "train/train.h"
#include "util/common.h"

// ---- tiny random models ----

static void tiny_config(model_config *c, bool gemma) {
    memset(c, 0, sizeof *c);
    c->arch = gemma ? MODEL_ARCH_GEMMA : MODEL_ARCH_LLAMA;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", gemma ? "gemma" : "llama");
    c->n_vocab = 37;
    c->n_embd = 16;
    c->n_layer = 2;
    c->n_head = gemma ? 2 : 4;
    c->n_head_kv = gemma ? 1 : 2;   // MQA / GQA
    c->head_dim = gemma ? 12 : 4;   // gemma: != C / H
    c->n_ff = 24;
    c->n_ctx_train = 64;
    c->n_rot = gemma ? 12 : 2;      // llama: partial rotation
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_neox = gemma;
    c->gelu = gemma;
    c->emb_scale = gemma ? 4.0f : 1.0f; // sqrt(C)
    c->tied_output = gemma;
}

static train_model *tiny_model(bool gemma, uint64_t seed) {
    model_config c;
    tiny_config(&c, gemma);
    train_model *m;
    assert_int_equal(train_model_init(&m, &c), AS_OK);
    as_rng r;
    as_rng_seed(&r, seed);
    float **slots = (float **)&m->params;
    for (int i = 0; i < TRAIN_N_PARAMS; i++) {
        if (!slots[i]) continue;
        const char *name = TRAIN_PARAM_NAMES[i];
        const int64_t n = (int64_t)m->param_sizes[i];
        if (strstr(name, "norm")) {
            fill_normal(slots[i], n, 0.2f, &r);
            for (int64_t j = 0; j < n; j++) slots[i][j] += 1.0f;
        } else {
            // 1/sqrt(fan-in) keeps activations O(1); the embedding is unit normal.
            const int64_t fan_in = !strcmp(name, "w_down") ? c.n_ff : !strcmp(name, "wo") ? (int64_t)c.n_head * c.head_dim : c.n_embd;
            fill_normal(slots[i], n, !strcmp(name, "tok_embd") ? (gemma ? 0.5f : 1.0f) : (float)(1.0 / sqrt((double)fan_in)), &r);
        }
    }
    train_set_threads(m, 2);
    return m;
}

// Four sequences padded to 8: different lengths, prompts, one empty answer.
#define NB 4
#define NT 8
static const int32_t BATCH_TOK[NB * NT] = {5, 17, 3, 30, 2, 2, 9, 11, /**/ 1, 36, 4, 8, 0, 0, 0, 0,
                                           7, 7, 12, 19, 25, 6, 0, 0, /**/ 33, 14, 0, 0, 0, 0, 0, 0};
static const int32_t BATCH_LEN[NB] = {8, 4, 6, 2};
static const int32_t BATCH_PROMPT[NB] = {3, 1, 5, 2};
static const float UPSTREAM[NB] = {0.7f, -1.3f, 2.0f, 0.5f}; // any dL/dlogp_sum, negative included

static train_batch the_batch(void) {
    return (train_batch){.n_seq = NB, .n_ctx = NT, .tokens = BATCH_TOK, .len = BATCH_LEN, .prompt_len = BATCH_PROMPT};
}

// L = sum_b w_b logp_b from the per-token log-probabilities, summed in double.
typedef struct loss_ctx {
    train_model *m;
    train_batch b;
    const float *w;
    as_rng rng; // restored before each forward: the same dropout masks every time
} loss_ctx;

static double model_loss(void *p) {
    loss_ctx *c = p;
    c->m->rng = c->rng;
    float sums[16];
    int32_t cnt[16];
    if (train_forward(c->m, &c->b, sums, cnt)) fail_msg("%s", as_last_error());
    float tok[256];
    const int64_t n = train_token_logprobs(c->m, tok);
    double L = 0.0;
    int64_t r = 0;
    for (int32_t s = 0; s < c->b.n_seq; s++)
        for (int32_t i = 0; i < cnt[s]; i++) L += (double)c->w[s] * tok[r++];
    assert_int_equal(r, n);
    return L;
}

// Analytic gradient (forward + backward with upstream w) into the model's grads.
static void analytic_grads(loss_ctx *c) {
    train_zero_grad(c->m);
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    train_trainable(c->m, &params, &grads, &segs, &n_segs); // allocates full grads
    model_loss(c);
    if (train_backward(c->m, c->w)) fail_msg("%s", as_last_error());
}

#define FD_H 1e-2
#define FD_TOL 1e-2

// Every trainable segment: elements spread over it, plus a random direction
// over the whole segment (sum_i g_i u_i against the derivative along u).
static void check_all_segments(loss_ctx *c, const char *what) {
    analytic_grads(c);
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    const size_t n = train_trainable(c->m, &params, &grads, &segs, &n_segs);
    float *g = as_malloc(sizeof(float) * n);
    memcpy(g, grads, sizeof(float) * n);
    as_rng r;
    as_rng_seed(&r, 99);
    double worst_el = 0, worst_dir = 0;
    for (int s = 0; s < n_segs; s++) {
        char label[128];
        snprintf(label, sizeof label, "%s: %s (%s)", what, segs[s].name, segs[s].decay ? "weights" : "norm");
        float *x = params + segs[s].offset;
        const float *gs = g + segs[s].offset;
        const int64_t ns = (int64_t)segs[s].n;
        double gmax = 0.0;
        for (int64_t i = 0; i < ns; i++) gmax = fmax(gmax, fabs((double)gs[i]));
        if (!(gmax > 1e-6)) fail_msg("%s: gradient is identically zero (nothing checked)", label);
        const double e_el = fd_check(label, x, gs, ns, model_loss, c, FD_H, FD_TOL, 1e-4, 24);
        // Directional: theta + e u for a random unit u restricted to this segment.
        float *u = as_malloc(sizeof(float) * (size_t)ns), *x0 = as_malloc(sizeof(float) * (size_t)ns);
        fill_normal(u, ns, 1.0f, &r);
        double un = 0, gu = 0;
        for (int64_t i = 0; i < ns; i++) un += (double)u[i] * u[i];
        un = sqrt(un);
        for (int64_t i = 0; i < ns; i++) u[i] = (float)(u[i] / un), gu += (double)gs[i] * u[i];
        memcpy(x0, x, sizeof(float) * (size_t)ns);
        const double e = 2e-2;
        double f[4];
        const double st[4] = {-2, -1, 1, 2};
        for (int k = 0; k < 4; k++) {
            for (int64_t i = 0; i < ns; i++) x[i] = x0[i] + (float)(st[k] * e) * u[i];
            f[k] = model_loss(c);
        }
        memcpy(x, x0, sizeof(float) * (size_t)ns);
        const double fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * e);
        worst_el = fmax(worst_el, e_el);
        worst_dir = fmax(worst_dir, fabs(fd - gu) / fmax(fabs(gu), gmax));
        if (!(fabs(fd - gu) <= FD_TOL * fmax(fabs(gu), gmax)))
            fail_msg("%s: directional derivative %.8g, analytic %.8g", label, fd, gu);
        free(u), free(x0);
    }
    printf("  %s: %d tensors, worst element error %.2e, worst directional error %.2e (of max |g|)\n", what, n_segs, worst_el, worst_dir);
    free(g);
}

static void grad_full(bool gemma) {
    train_model *m = tiny_model(gemma, gemma ? 21 : 20);
    loss_ctx c = {m, the_batch(), UPSTREAM, m->rng};
    check_all_segments(&c, gemma ? "gemma full" : "llama full");
    train_model_free(m);
}

static void test_grad_full_llama(void **state) {
    (void)state;
    grad_full(false);
}

static void test_grad_full_gemma(void **state) {
    (void)state;
    grad_full(true);
}

// LoRA on every target with random B (B = 0 would make dA vanish).
static train_model *tiny_lora_model(bool gemma, float dropout, uint32_t targets) {
    train_model *m = tiny_model(gemma, gemma ? 31 : 30);
    train_lora_config lc = {.rank = 2, .alpha = 3.0f, .dropout = dropout, .targets = targets, .seed = 5};
    assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    as_rng r;
    as_rng_seed(&r, 77);
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
        if (m->lora->b[t]) fill_normal(m->lora->b[t], m->cfg.n_layer * m->lora->out[t] * lc.rank, 0.3f, &r);
    return m;
}

// backward: the batch is marked for a backward pass (the forward keeps the
// vocabulary projection's gradient instead of the backward recomputing it).
static void grad_lora(bool gemma, float dropout, bool backward) {
    train_model *m = tiny_lora_model(gemma, dropout, 0);
    loss_ctx c = {m, the_batch(), UPSTREAM, m->rng};
    c.b.backward = backward;
    char what[80];
    snprintf(what, sizeof what, "%s LoRA dropout %.1f%s", gemma ? "gemma" : "llama", (double)dropout, backward ? ", backward marked" : "");
    check_all_segments(&c, what);
    assert_null(m->grads_memory); // the base is frozen: no gradient buffer at all
    train_model_free(m);
}

static void test_grad_lora_llama(void **state) {
    (void)state;
    grad_lora(false, 0.0f, false);
    grad_lora(false, 0.3f, true);
}

static void test_grad_lora_gemma(void **state) {
    (void)state;
    grad_lora(true, 0.0f, true);
    grad_lora(true, 0.3f, false);
}

// ---- adapters ----

static void test_adapters(void **state) {
    (void)state;
    train_batch b = the_batch();
    float base[NB], on[NB], off[NB], fresh[NB];
    // Base log-probabilities before any adapter exists.
    train_model *m = tiny_model(false, 30);
    assert_int_equal(train_forward(m, &b, base, NULL), AS_OK);
    // Freshly attached adapters have B = 0: the model is unchanged.
    train_lora_config lc = {.rank = 4, .alpha = 8.0f, .dropout = 0.0f, .targets = (1u << TRAIN_LORA_Q) | (1u << TRAIN_LORA_DOWN), .seed = 1};
    assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    assert_non_null(m->lora->a[TRAIN_LORA_Q]);
    assert_null(m->lora->a[TRAIN_LORA_K]); // not targeted
    assert_int_equal(train_forward(m, &b, fresh, NULL), AS_OK);
    for (int s = 0; s < NB; s++) assert_true(fresh[s] == base[s]);
    // Trained adapters change the log-probabilities; switched off they give the base exactly.
    as_rng r;
    as_rng_seed(&r, 3);
    fill_normal(m->lora->b[TRAIN_LORA_Q], m->cfg.n_layer * m->lora->out[TRAIN_LORA_Q] * 4, 0.5f, &r);
    fill_normal(m->lora->b[TRAIN_LORA_DOWN], m->cfg.n_layer * m->lora->out[TRAIN_LORA_DOWN] * 4, 0.5f, &r);
    assert_int_equal(train_forward(m, &b, on, NULL), AS_OK);
    train_set_adapters(m, false);
    assert_int_equal(train_forward(m, &b, off, NULL), AS_OK);
    for (int s = 0; s < NB - 1; s++) assert_true(fabsf(on[s] - base[s]) > 1e-3f);
    for (int s = 0; s < NB; s++) assert_true(off[s] == base[s]);
    // Nothing to train after an adapters-off forward.
    assert_int_equal(train_backward(m, UPSTREAM), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "adapters off"));
    train_set_adapters(m, true);
    // Dropout only in training mode: evaluation is deterministic and equals dropout 0.
    train_model_free(m);
    m = tiny_model(false, 30);
    lc.dropout = 0.5f;
    assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    as_rng_seed(&r, 3);
    fill_normal(m->lora->b[TRAIN_LORA_Q], m->cfg.n_layer * m->lora->out[TRAIN_LORA_Q] * 4, 0.5f, &r);
    fill_normal(m->lora->b[TRAIN_LORA_DOWN], m->cfg.n_layer * m->lora->out[TRAIN_LORA_DOWN] * 4, 0.5f, &r);
    float ev[NB], tr1[NB], tr2[NB];
    train_set_training(m, false);
    assert_int_equal(train_forward(m, &b, ev, NULL), AS_OK);
    for (int s = 0; s < NB; s++) assert_true(ev[s] == on[s]);
    train_set_training(m, true);
    assert_int_equal(train_forward(m, &b, tr1, NULL), AS_OK);
    assert_int_equal(train_forward(m, &b, tr2, NULL), AS_OK);
    assert_true(tr1[0] != ev[0] && tr1[0] != tr2[0]); // a new mask each step
    // Bad configurations.
    assert_int_equal(train_lora_attach(m, &lc), AS_FAIL); // twice
    train_model_free(m);
    m = tiny_model(false, 30);
    train_lora_config bad[] = {{.rank = 0, .alpha = 1}, {.rank = 2, .alpha = 0}, {.rank = 2, .alpha = 1, .dropout = 1.0f},
                               {.rank = 2, .alpha = 1, .targets = 1u << 9}};
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        assert_int_equal(train_lora_attach(m, &bad[i]), AS_FAIL);
        assert_non_null(strstr(as_last_error(), "LoRA"));
    }
    train_model_free(m);
}

// ---- log-probabilities against the inference engine ----

// log softmax(logits)[tok] in double.
static double logp_of(const float *z, int64_t V, int32_t tok) {
    double mx = z[0];
    for (int64_t j = 1; j < V; j++) mx = fmax(mx, z[j]);
    double s = 0;
    for (int64_t j = 0; j < V; j++) s += exp(z[j] - mx);
    return z[tok] - mx - log(s);
}

static void cross_check(const char *variant, bool f16) {
    char name[64];
    snprintf(name, sizeof name, "model_%s.json", variant);
    cJSON *doc = tv_load_json(name);
    char *dir = as_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    tv_write_gguf(doc, path, f16);
    model *inf;
    if (model_load(&inf, path)) fail_msg("%s", as_last_error());
    train_model *m;
    if (train_model_from_model(&m, inf)) fail_msg("%s", as_last_error());
    train_set_threads(m, 2);
    const int64_t V = inf->cfg.n_vocab;
    // All sequences of the file in one padded batch, every token after the first scored.
    const cJSON *seqs = cJSON_GetObjectItem(doc, "sequences");
    const int32_t B = cJSON_GetArraySize(seqs);
    int32_t T = 0, len[16], prompt[16], total = 0;
    assert_true(B <= 16);
    for (int32_t s = 0; s < B; s++) {
        len[s] = cJSON_GetArraySize(cJSON_GetArrayItem(seqs, s));
        T = AS_MAX(T, len[s]);
        prompt[s] = 1;
        total += len[s];
    }
    int32_t *tok = as_calloc((size_t)(B * T), sizeof(int32_t));
    for (int32_t s = 0; s < B; s++)
        for (int32_t i = 0; i < len[s]; i++) tok[s * T + i] = cJSON_GetArrayItem(cJSON_GetArrayItem(seqs, s), i)->valueint;
    train_batch b = {.n_seq = B, .n_ctx = T, .tokens = tok, .len = len, .prompt_len = prompt};
    float sums[16], *tlp = as_malloc(sizeof(float) * (size_t)total);
    int32_t cnt[16];
    assert_int_equal(train_forward(m, &b, sums, cnt), AS_OK);
    assert_int_equal(train_token_logprobs(m, tlp), total - B);
    // The NumPy reference logits (float64 math, F32 weights) of the file.
    size_t nref;
    float *ref = tv_floats(doc, f16 ? "logits_lowp" : "logits", 0);
    float *logits = as_malloc(sizeof(float) * (size_t)(T * V));
    double worst_engine = 0, worst_ref = 0, max_abs = 0;
    int64_t r = 0, ref_off = 0;
    nref = 0;
    for (int32_t s = 0; s < B; s++) {
        kv_cache *kv = kv_cache_init(&inf->cfg, 1, T, KERNEL_PRECISION_F32);
        int32_t sq[64], pos[64];
        for (int32_t i = 0; i < len[s]; i++) sq[i] = 0, pos[i] = i;
        model_batch mb = {.n_tokens = len[s], .token = tok + s * T, .seq = sq, .pos = pos};
        assert_int_equal(model_forward(inf, kv, &mb, logits), AS_OK);
        double sum = 0;
        for (int32_t i = 1; i < len[s]; i++, r++) {
            const double e = logp_of(logits + (int64_t)(i - 1) * V, V, tok[s * T + i]);
            const double q = logp_of(ref + (ref_off + i - 1) * V, V, tok[s * T + i]);
            // Relative to 1 + |logp|: float logits of magnitude ~10 round at ~1e-6.
            worst_engine = fmax(worst_engine, fabs(e - tlp[r]) / (1.0 + fabs(e)));
            worst_ref = fmax(worst_ref, fabs(q - tlp[r]) / (1.0 + fabs(q)));
            max_abs = fmax(max_abs, fabs(q));
            sum += tlp[r];
            nref++;
        }
        assert_int_equal(cnt[s], len[s] - 1);
        assert_true(fabs(sum - sums[s]) <= 1e-5 * (1 + fabs(sum)));
        ref_off += len[s];
        kv_cache_free(kv);
    }
    printf("  %s%s: %zu log-probs (max |logp| %.1f), max |train - engine| / (1 + |logp|) %.2e, vs NumPy %.2e\n", variant,
           f16 ? " (F16/BF16 file)" : "", nref, max_abs, worst_engine, worst_ref);
    if (!(worst_engine <= 1e-5)) fail_msg("%s: train vs inference log-prob differ by %.3g (1 + |logp|) > 1e-5", variant, worst_engine);
    if (!(worst_ref <= 1e-5)) fail_msg("%s: train vs NumPy reference log-prob differ by %.3g (1 + |logp|) > 1e-5", variant, worst_ref);
    free(logits), free(ref), free(tlp), free(tok);
    train_model_free(m);
    model_free(inf);
    unlink(path);
    rmdir(dir);
    cJSON_Delete(doc);
}

static void test_logprobs_match_inference(void **state) {
    (void)state;
    const char *variants[] = {"llama_tied", "llama_untied", "gemma"};
    for (size_t i = 0; i < AS_ARRAY_LEN(variants); i++) {
        cross_check(variants[i], false);
        cross_check(variants[i], true);
    }
}

// A sequence's answer log-probability does not depend on its batch mates or
// on how much padding the batch has; explicit masks equal prompt lengths.
static void test_packing_invariance(void **state) {
    (void)state;
    train_model *m = tiny_model(true, 8);
    train_batch b = the_batch();
    float all[NB];
    int32_t cnt[NB];
    assert_int_equal(train_forward(m, &b, all, cnt), AS_OK);
    const int32_t expect_cnt[NB] = {5, 3, 1, 0};
    for (int s = 0; s < NB; s++) assert_int_equal(cnt[s], expect_cnt[s]);
    assert_true(all[3] == 0.0f); // empty answer
    for (int s = 0; s < NB; s++) {
        int32_t tok[3 * NT] = {0}, len = BATCH_LEN[s], pl = BATCH_PROMPT[s];
        memcpy(tok, BATCH_TOK + s * NT, sizeof(int32_t) * (size_t)len);
        train_batch one = {.n_seq = 1, .n_ctx = 3 * NT, .tokens = tok, .len = &len, .prompt_len = &pl};
        float lp;
        assert_int_equal(train_forward(m, &one, &lp, NULL), AS_OK);
        assert_true(fabsf(lp - all[s]) <= 1e-5f * (1.0f + fabsf(lp)));
    }
    uint8_t mask[NB * NT] = {0};
    for (int s = 0; s < NB; s++)
        for (int i = BATCH_PROMPT[s]; i < BATCH_LEN[s]; i++) mask[s * NT + i] = 1;
    mask[NT * 3 + 7] = 1; // past len: ignored
    b.loss_mask = mask;
    b.prompt_len = NULL;
    float masked[NB];
    assert_int_equal(train_forward(m, &b, masked, NULL), AS_OK);
    for (int s = 0; s < NB; s++) assert_true(masked[s] == all[s]);
    train_model_free(m);
}

// ---- gradient accumulation and determinism ----

static void test_grad_accumulation(void **state) {
    (void)state;
    train_model *m = tiny_model(false, 12);
    train_batch b = the_batch();
    float sums[NB];
    float *params, *grads;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable(m, &params, &grads, &segs, &ns);
    train_zero_grad(m);
    assert_int_equal(train_forward(m, &b, sums, NULL), AS_OK);
    assert_int_equal(train_backward(m, UPSTREAM), AS_OK);
    float *whole = as_malloc(sizeof(float) * n);
    memcpy(whole, grads, sizeof(float) * n);
    // Two micro-batches of two sequences each, gradients accumulated.
    train_zero_grad(m);
    for (int half = 0; half < 2; half++) {
        train_batch h = {.n_seq = 2, .n_ctx = NT, .tokens = BATCH_TOK + half * 2 * NT, .len = BATCH_LEN + half * 2,
                         .prompt_len = BATCH_PROMPT + half * 2};
        assert_int_equal(train_forward(m, &h, sums, NULL), AS_OK);
        assert_int_equal(train_backward(m, UPSTREAM + half * 2), AS_OK);
    }
    double gmax = 0, err = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(whole[i])), err = fmax(err, fabs(whole[i] - grads[i]));
    assert_true(gmax > 0.1);
    if (!(err <= 1e-5 * gmax)) fail_msg("accumulated gradients differ from the whole batch's by %.3g (max |g| %.3g)", err, gmax);
    free(whole);
    train_model_free(m);
}

// Three optimizer steps (cosine schedule, warm-up, clipping, LoRA dropout);
// returns the trainable parameters after them.
static float *train_three_steps(bool lora, uint64_t lora_seed, int threads, size_t *n_out) {
    train_model *m = tiny_model(true, 40);
    if (lora) {
        train_lora_config lc = {.rank = 2, .alpha = 4.0f, .dropout = 0.2f, .seed = lora_seed};
        assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    }
    train_set_threads(m, threads);
    float *params, *grads;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable(m, &params, &grads, &segs, &ns);
    optim_config oc;
    optim_config_default(&oc, OPTIM_ADAMW);
    oc.lr = 1e-2f, oc.schedule = OPTIM_SCHEDULE_COSINE, oc.warmup_ratio = 0.2f, oc.total_steps = 5, oc.max_grad_norm = 0.5f;
    optim *o;
    assert_int_equal(optim_init(&o, &oc, n), AS_OK);
    train_batch b = the_batch();
    float sums[NB];
    for (int step = 0; step < 3; step++) {
        train_zero_grad(m);
        assert_int_equal(train_forward(m, &b, sums, NULL), AS_OK);
        assert_int_equal(train_backward(m, UPSTREAM), AS_OK);
        double norm, lr;
        train_optim_step(m, o, &norm, &lr);
        assert_true(norm > 0.5); // clipping active
    }
    float *out = as_malloc(sizeof(float) * n);
    memcpy(out, params, sizeof(float) * n);
    *n_out = n;
    optim_free(o);
    train_model_free(m);
    return out;
}

static void test_determinism(void **state) {
    (void)state;
    for (int lora = 0; lora < 2; lora++) {
        size_t n1, n2, n3;
        float *a = train_three_steps(lora, 7, 2, &n1), *b = train_three_steps(lora, 7, 2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(a, b, sizeof(float) * n1);
        if (lora) { // another seed: other A init and dropout masks
            float *c = train_three_steps(lora, 8, 2, &n3);
            assert_int_equal(n1, n3);
            assert_true(memcmp(a, c, sizeof(float) * n1) != 0);
            free(c);
        }
        free(a), free(b);
    }
}

// The trainable gradients (allocated for full fine-tuning), zeroed; *n floats.
static const float *fresh_grads(train_model *m, size_t *n) {
    float *params, *grads;
    const optim_segment *segs;
    int ns;
    *n = train_trainable(m, &params, &grads, &segs, &ns);
    train_zero_grad(m);
    return grads;
}

static float *dup_floats(const float *p, size_t n) {
    float *q = as_malloc(sizeof(float) * n);
    memcpy(q, p, sizeof(float) * n);
    return q;
}

// Activation checkpointing: the same log-probabilities and bitwise the same
// gradients with far less activation memory (full and LoRA with dropout).
static void checkpoint_case(bool gemma, bool lora, bool backward) {
    float lp[2][NB];
    float *g[2];
    size_t n = 0, bytes[2];
    for (int ck = 0; ck < 2; ck++) {
        train_model *m = lora ? tiny_lora_model(gemma, 0.3f, 0) : tiny_model(gemma, 50);
        train_set_checkpointing(m, ck == 1);
        const float *grads = fresh_grads(m, &n);
        train_batch b = the_batch();
        b.backward = backward;
        assert_int_equal(train_forward(m, &b, lp[ck], NULL), AS_OK);
        assert_int_equal(train_backward(m, UPSTREAM), AS_OK);
        g[ck] = dup_floats(grads, n);
        bytes[ck] = train_activation_bytes(m);
        train_model_free(m);
    }
    assert_memory_equal(lp[0], lp[1], sizeof lp[0]);
    assert_memory_equal(g[0], g[1], sizeof(float) * n);
    assert_true(bytes[1] < bytes[0]);
    printf("  %s%s: activation memory %zu -> %zu bytes with checkpointing, gradients identical\n", gemma ? "gemma" : "llama",
           lora ? " LoRA" : " full", bytes[0], bytes[1]);
    free(g[0]), free(g[1]);
}

static void test_checkpointing(void **state) {
    (void)state;
    checkpoint_case(false, false, false);
    checkpoint_case(true, true, false);
    checkpoint_case(false, true, true);
    // And against finite differences directly.
    train_model *m = tiny_lora_model(true, 0.3f, 0);
    train_set_checkpointing(m, true);
    loss_ctx c = {m, the_batch(), UPSTREAM, m->rng};
    check_all_segments(&c, "gemma LoRA dropout 0.3, checkpointing");
    train_model_free(m);
}

// The two ways to the vocabulary projection's input gradient (the backward
// recomputing the logits, or a forward marked for a backward keeping e =
// (onehot - softmax) W per row): the same log-probabilities (bitwise) and the
// same LoRA gradients up to rounding, through train_backward and through
// train_backward_tokens with second targets (whose g2 moves the onehot).
static void test_vocab_grad_paths(void **state) {
    (void)state;
    int32_t t2[NB * NT];
    for (int i = 0; i < NB * NT; i++) t2[i] = (BATCH_TOK[i] * 7 + i) % 37;
    float gt[64], gt2[64];
    for (int i = 0; i < 64; i++) gt[i] = 0.3f * (float)((i * 5) % 7) - 0.9f, gt2[i] = 0.2f * (float)((i * 3) % 5) - 0.4f;
    for (int tokens = 0; tokens < 2; tokens++) {
        float lp[2][NB], tl[2][64] = {{0}}, tl2[2][64] = {{0}};
        float *g[2];
        size_t n = 0;
        for (int marked = 0; marked < 2; marked++) {
            train_model *m = tiny_lora_model(false, 0.3f, 0);
            const float *grads = fresh_grads(m, &n);
            train_batch b = the_batch();
            b.backward = marked;
            if (tokens) b.target2 = t2;
            assert_int_equal(train_forward(m, &b, lp[marked], NULL), AS_OK);
            const int64_t nr = train_token_logprobs(m, tl[marked]);
            assert_true(nr > 0 && nr <= 64);
            if (tokens) {
                assert_int_equal(train_token_logprobs2(m, tl2[marked]), nr);
                assert_int_equal(train_backward_tokens(m, gt, gt2), AS_OK);
            }
            else assert_int_equal(train_backward(m, UPSTREAM), AS_OK);
            g[marked] = dup_floats(grads, n);
            train_model_free(m);
        }
        assert_memory_equal(lp[0], lp[1], sizeof lp[0]);
        assert_memory_equal(tl[0], tl[1], sizeof tl[0]);
        if (tokens) assert_memory_equal(tl2[0], tl2[1], sizeof tl2[0]);
        double d2 = 0, n2 = 0;
        for (size_t i = 0; i < n; i++) d2 += ((double)g[0][i] - g[1][i]) * ((double)g[0][i] - g[1][i]), n2 += (double)g[0][i] * g[0][i];
        const double rel = sqrt(d2 / n2);
        printf("  %s: gradients with the backward marked vs not: relative L2 difference %.2e\n",
               tokens ? "per-token upstream, second targets" : "per-sequence upstream", rel);
        assert_true(n2 > 0);
        if (!(rel <= 1e-5)) fail_msg("vocabulary gradient paths differ: relative L2 %.3g", rel);
        free(g[0]), free(g[1]);
    }
}

// Data order: a permutation, reproducible from the seed, different for another.
static void test_shuffle(void **state) {
    (void)state;
    enum { N = 1000 };
    int64_t a[N], b[N], c[N];
    as_rng r1, r2, r3;
    as_rng_seed(&r1, 42), as_rng_seed(&r2, 42), as_rng_seed(&r3, 43);
    train_shuffle(a, N, &r1);
    train_shuffle(b, N, &r2);
    train_shuffle(c, N, &r3);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    bool seen[N] = {false};
    int64_t fixed = 0;
    for (int i = 0; i < N; i++) {
        assert_true(a[i] >= 0 && a[i] < N && !seen[a[i]]);
        seen[a[i]] = true;
        fixed += a[i] == i;
    }
    assert_true(fixed < 10); // a uniform permutation has ~1 fixed point
    // Uniformity: where element 0 lands over many shuffles of 4 (each place ~1/4).
    int count[4] = {0};
    int64_t p4[4];
    for (int k = 0; k < 4000; k++) {
        train_shuffle(p4, 4, &r1);
        for (int i = 0; i < 4; i++) count[i] += p4[i] == 0;
    }
    for (int i = 0; i < 4; i++) assert_true(count[i] > 880 && count[i] < 1120);
}

// ---- errors ----

static void test_errors(void **state) {
    (void)state;
    train_model *m = tiny_model(false, 1);
    assert_int_equal(train_backward(m, UPSTREAM), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "no forward"));
    int32_t tok[4] = {1, 2, 3, 4}, len = 4, pl = 2;
    float s;
    struct {
        int32_t tok2, len, pl;
        const char *needle;
    } cases[] = {{37, 4, 2, "outside the vocabulary"}, {-2, 4, 2, "outside the vocabulary"}, {3, 5, 2, "length 5 outside [1, 4]"},
                 {3, 0, 1, "length 0"}, {3, 4, 0, "prompt length 0"}, {3, 4, 5, "prompt length 5"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(cases); i++) {
        tok[2] = cases[i].tok2, len = cases[i].len, pl = cases[i].pl;
        train_batch b = {.n_seq = 1, .n_ctx = 4, .tokens = tok, .len = &len, .prompt_len = &pl};
        assert_int_equal(train_forward(m, &b, &s, NULL), AS_FAIL);
        const char *msg = as_last_error();
        if (!strstr(msg, cases[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, msg, cases[i].needle);
        assert_null(strchr(msg, '\n'));
    }
    tok[2] = 3, len = 4;
    uint8_t mask[4] = {1, 0, 1, 1};
    train_batch bm = {.n_seq = 1, .n_ctx = 4, .tokens = tok, .len = &len, .loss_mask = mask};
    assert_int_equal(train_forward(m, &bm, &s, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "token 0"));
    model_config c = m->cfg;
    c.n_head_kv = 3;
    train_model *bad;
    assert_int_equal(train_model_init(&bad, &c), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "n_head_kv"));
    assert_int_equal(train_model_load(&bad, "/nonexistent/m.gguf"), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "/nonexistent/m.gguf"));
    train_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logprobs_match_inference),
        cmocka_unit_test(test_packing_invariance),
        cmocka_unit_test(test_grad_full_llama),
        cmocka_unit_test(test_grad_full_gemma),
        cmocka_unit_test(test_grad_lora_llama),
        cmocka_unit_test(test_grad_lora_gemma),
        cmocka_unit_test(test_adapters),
        cmocka_unit_test(test_grad_accumulation),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_shuffle),
        cmocka_unit_test(test_checkpointing),
        cmocka_unit_test(test_vocab_grad_paths),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
