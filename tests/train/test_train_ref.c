// The training engine against PyTorch autograd (tools/ref_train.py, float64,
// written from the Hugging Face math): tiny llama (GQA, untied) and gemma
// (MQA, tied, head_dim != C/H) models loaded from a GGUF file written from
// tests/vectors/train_ref_<arch>.json, a DPO loss over two (chosen, rejected)
// pairs whose gradient reaches the model only as dL/dlogp per sequence.
// Compared: the answer log-probabilities, the loss, EVERY parameter gradient,
// and the weights after 3 AdamW steps with clipping and weight decay on the
// matrices -- for full fine-tuning and for LoRA on all seven targets.
// Also the optimizers alone (AdamW, RMSprop, SGD with momentum) and the
// learning-rate schedules against torch.optim / transformers
// (tests/vectors/train_ref_optim.json).
#include "train_test_util.h"
#include "train_vectors.h"

#include "train/optim.h"
#include "train/train.h"
#include "util/common.h"

#define LOGP_TOL 2e-5 // relative to 1 + |logp|: float32 against float64
#define GRAD_TOL 5e-5 // of the tensor's max |g|
#define W_TOL 1e-5    // absolute on weights of O(1) after 3 steps of lr 1e-2

typedef struct ref_case {
    cJSON *doc;
    train_batch b;
    int32_t *tokens, len[8], prompt[8];
    float beta, ref_logps[8];
    char dir[256], path[512];
} ref_case;

static void ref_open(ref_case *r, const char *arch) {
    char name[64];
    snprintf(name, sizeof name, "train_ref_%s.json", arch);
    r->doc = tv_load_json(name);
    const cJSON *b = cJSON_GetObjectItem(r->doc, "batch");
    const int32_t B = cJSON_GetArraySize(cJSON_GetObjectItem(b, "len")), T = cJSON_GetObjectItem(b, "n_ctx")->valueint;
    assert_true(B == 4);
    r->tokens = as_calloc((size_t)(B * T), sizeof(int32_t));
    for (int32_t s = 0; s < B; s++) {
        r->len[s] = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "len"), s)->valueint;
        r->prompt[s] = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "prompt_len"), s)->valueint;
        r->ref_logps[s] = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(r->doc, "ref_logps"), s)->valuedouble;
        for (int32_t i = 0; i < T; i++) r->tokens[s * T + i] = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "tokens"), s), i)->valueint;
    }
    r->b = (train_batch){.n_seq = B, .n_ctx = T, .tokens = r->tokens, .len = r->len, .prompt_len = r->prompt};
    r->beta = (float)cJSON_GetObjectItem(r->doc, "beta")->valuedouble;
    char *d = as_test_tmpdir();
    assert_non_null(d);
    snprintf(r->dir, sizeof r->dir, "%s", d);
    snprintf(r->path, sizeof r->path, "%s/m.gguf", r->dir);
    tv_write_gguf(r->doc, r->path, false);
}

static void ref_close(ref_case *r) {
    unlink(r->path);
    rmdir(r->dir);
    free(r->tokens);
    cJSON_Delete(r->doc);
}

// DPO over pairs (0, 1), (2, 3): loss = mean_i -log sigmoid(beta h_i),
// h_i = (lp_c - ref_c) - (lp_r - ref_r); dL/dlp_c = -beta sigmoid(-beta h) / n, dL/dlp_r = -dL/dlp_c.
static double dpo(const ref_case *r, const float *lp, float *dlp) {
    double loss = 0;
    for (int i = 0; i < 2; i++) {
        const double h = ((double)lp[2 * i] - r->ref_logps[2 * i]) - ((double)lp[2 * i + 1] - r->ref_logps[2 * i + 1]);
        const double z = r->beta * h;
        loss += (z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z))) / 2.0;
        const double d = -r->beta / (1.0 + exp(z)) / 2.0;
        dlp[2 * i] = (float)d;
        dlp[2 * i + 1] = (float)-d;
    }
    return loss;
}

// Compares tensors named in JSON list `key` of object o with get(name) -> (ptr, n).
typedef float *(*tensor_get)(void *ctx, const char *name, int64_t *n);

// Weights after AdamW steps: an element whose gradient is at float32 noise
// level (0 < |g| < 1e-5 max |g| of its tensor, e.g. the tied embedding row of a
// token seen only through the softmax) gets a step direction decided by
// rounding, since AdamW divides m by sqrt(v); such elements (`noisy`, from the
// reference gradients) are only held to the size of the steps, 2 lr per step.
static const cJSON *find_named(const cJSON *list, const char *name) {
    const cJSON *t;
    cJSON_ArrayForEach(t, list) if (!strcmp(cJSON_GetObjectItem(t, "name")->valuestring, name)) return t;
    return NULL;
}

static void compare_list(const cJSON *o, const char *key, tensor_get get, void *ctx, bool relative, double tol, const char *what,
                         const cJSON *noisy_grads, double step_bound) {
    const cJSON *t;
    int count = 0;
    int64_t n_noisy = 0;
    double worst = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(o, key)) {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        int64_t n = 0;
        const float *got = get(ctx, name, &n);
        if (!got) fail_msg("%s: tensor %s not found in the model", what, name);
        float *want = tv_floats(t, "data", (size_t)n);
        float *g0 = NULL;
        double gmax = 0;
        if (noisy_grads) {
            const cJSON *gt = find_named(noisy_grads, name);
            assert_non_null(gt);
            g0 = tv_floats(gt, "data", (size_t)n);
            for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)g0[i]));
        }
        double mx = 0, err = 0;
        int64_t at = 0;
        for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)want[i]));
        for (int64_t i = 0; i < n; i++) {
            const double e = fabs((double)got[i] - want[i]);
            if (g0 && g0[i] != 0.0f && fabs((double)g0[i]) < 1e-5 * gmax) {
                n_noisy++;
                if (!(e <= step_bound)) fail_msg("%s: %s[%lld] (gradient at noise level): moved %.3g from PyTorch, more than %.3g", what,
                                                 name, (long long)i, e, step_bound);
                continue;
            }
            if (e > err) err = e, at = i;
        }
        free(g0);
        const double rel = relative ? err / fmax(mx, 1e-12) : err;
        if (!(rel <= tol))
            fail_msg("%s: %s[%lld]: got %.8g, PyTorch %.8g (error %.3g > %.1e%s)", what, name, (long long)at, (double)got[at], (double)want[at],
                     rel, tol, relative ? " of max |ref|" : "");
        if (relative && !(mx > 0)) fail_msg("%s: %s: reference is all zero (nothing compared)", what, name);
        worst = fmax(worst, rel);
        free(want);
        count++;
    }
    assert_true(count > 0);
    printf("  %s: %d tensors, worst %s error %.2e", what, count, relative ? "relative" : "absolute", worst);
    if (noisy_grads) printf(" (%lld elements with a noise-level gradient held to %.1e)", (long long)n_noisy, step_bound);
    printf("\n");
}

typedef struct { train_model *m; const train_params *p; bool grad; } find_ctx; // p: params or grads of m

static float *find_param(void *ctx, const char *name, int64_t *n) {
    find_ctx *f = ctx;
    return train_params_find(f->m, f->p, name, n);
}

// "blk.<l>.lora_a.<target>" / "blk.<l>.lora_b.<target>" (their gradients when ctx->grad).
static float *find_lora(void *ctx, const char *name, int64_t *n) {
    find_ctx *f = ctx;
    const train_lora *lo = f->m->lora;
    int l;
    char ab, tname[16];
    if (sscanf(name, "blk.%d.lora_%c.%15s", &l, &ab, tname) != 3) return NULL;
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
        if (strcmp(tname, TRAIN_LORA_TARGET_NAMES[t])) continue;
        const int64_t r = lo->cfg.rank, sz = ab == 'a' ? r * lo->in[t] : lo->out[t] * r;
        float *base = ab == 'a' ? (f->grad ? lo->ga[t] : lo->a[t]) : (f->grad ? lo->gb[t] : lo->b[t]);
        *n = sz;
        return base + (int64_t)l * sz;
    }
    return NULL;
}

static void check_logps(const ref_case *r, const cJSON *o, const float *lp, const char *what) {
    for (int s = 0; s < 4; s++) {
        const double want = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "logps"), s)->valuedouble;
        if (!(fabs(lp[s] - want) <= LOGP_TOL * (1 + fabs(want)))) fail_msg("%s: logp[%d] %.8g, PyTorch %.8g", what, s, (double)lp[s], want);
    }
    (void)r;
}

// Forward, loss, backward; then 3 AdamW steps.  `o` is the JSON object with
// logps/loss/grads/losses/weights_after (the document or its "lora" member).
static void run_case(ref_case *r, train_model *m, const cJSON *o, tensor_get get, const char *what) {
    const cJSON *oc_j = cJSON_GetObjectItem(r->doc, "optimizer");
    float lp[4], dlp[4];
    char label[96];
    train_zero_grad(m);
    float *params, *grads;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable(m, &params, &grads, &segs, &ns);
    assert_int_equal(train_forward(m, &r->b, lp, NULL), AS_OK);
    check_logps(r, o, lp, what);
    const double loss = dpo(r, lp, dlp);
    const double want_loss = cJSON_GetObjectItem(o, "loss")->valuedouble;
    if (!(fabs(loss - want_loss) <= 1e-5 * (1 + fabs(want_loss)))) fail_msg("%s: loss %.8g, PyTorch %.8g", what, loss, want_loss);
    assert_int_equal(train_backward(m, dlp), AS_OK);
    find_ctx fc = {m, &m->grads, true};
    snprintf(label, sizeof label, "%s gradients", what);
    compare_list(o, "grads", get, &fc, true, GRAD_TOL, label, NULL, 0);

    optim_config oc;
    optim_config_default(&oc, OPTIM_ADAMW);
    oc.lr = (float)cJSON_GetObjectItem(oc_j, "lr")->valuedouble;
    oc.beta1 = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(oc_j, "betas"), 0)->valuedouble;
    oc.beta2 = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(oc_j, "betas"), 1)->valuedouble;
    oc.eps = (float)cJSON_GetObjectItem(oc_j, "eps")->valuedouble;
    oc.weight_decay = (float)cJSON_GetObjectItem(oc_j, "weight_decay")->valuedouble;
    oc.max_grad_norm = (float)cJSON_GetObjectItem(oc_j, "max_grad_norm")->valuedouble;
    optim *opt;
    assert_int_equal(optim_init(&opt, &oc, n), AS_OK);
    for (int step = 0; step < 3; step++) {
        train_zero_grad(m);
        assert_int_equal(train_forward(m, &r->b, lp, NULL), AS_OK);
        const double l = dpo(r, lp, dlp), want = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "losses"), step)->valuedouble;
        if (!(fabs(l - want) <= 1e-4 * (1 + fabs(want)))) fail_msg("%s: step %d loss %.8g, PyTorch %.8g", what, step, l, want);
        assert_int_equal(train_backward(m, dlp), AS_OK);
        train_optim_step(m, opt, NULL, NULL);
    }
    fc.p = &m->params, fc.grad = false;
    snprintf(label, sizeof label, "%s weights after 3 AdamW steps", what);
    compare_list(o, "weights_after", get, &fc, false, W_TOL, label, cJSON_GetObjectItem(o, "grads"), 2.0 * 3 * oc.lr);
    optim_free(opt);
}

static void ref_arch(const char *arch) {
    ref_case r;
    ref_open(&r, arch);
    train_model *m;
    if (train_model_load(&m, r.path)) fail_msg("%s", as_last_error());
    train_set_threads(m, 2);
    const cJSON *cfg = cJSON_GetObjectItem(r.doc, "config");
    assert_int_equal(m->cfg.head_dim, cJSON_GetObjectItem(cfg, "head_dim")->valueint);
    assert_int_equal(m->cfg.tied_output, cJSON_IsTrue(cJSON_GetObjectItem(cfg, "tied")));
    char what[64];
    snprintf(what, sizeof what, "%s full", arch);
    run_case(&r, m, r.doc, find_param, what);
    train_model_free(m);

    // LoRA on a fresh copy of the base, factors from the file.
    if (train_model_load(&m, r.path)) fail_msg("%s", as_last_error());
    train_set_threads(m, 2);
    const cJSON *lj = cJSON_GetObjectItem(r.doc, "lora");
    train_lora_config lc = {.rank = cJSON_GetObjectItem(lj, "rank")->valueint, .alpha = (float)cJSON_GetObjectItem(lj, "alpha")->valuedouble};
    assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    const cJSON *t;
    int n_loaded = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(lj, "tensors")) {
        find_ctx fc = {m, &m->params, false};
        int64_t n;
        float *dst = find_lora(&fc, cJSON_GetObjectItem(t, "name")->valuestring, &n);
        assert_non_null(dst);
        float *src = tv_floats(t, "data", (size_t)n);
        memcpy(dst, src, sizeof(float) * (size_t)n);
        free(src);
        n_loaded++;
    }
    assert_int_equal(n_loaded, 2 * TRAIN_LORA_N_TARGETS * m->cfg.n_layer);
    float *base_before = as_malloc(sizeof(float) * m->n_params);
    memcpy(base_before, m->params_memory, sizeof(float) * m->n_params);
    snprintf(what, sizeof what, "%s LoRA", arch);
    run_case(&r, m, lj, find_lora, what);
    assert_memory_equal(base_before, m->params_memory, sizeof(float) * m->n_params); // frozen base
    free(base_before);
    train_model_free(m);
    ref_close(&r);
}

static void test_ref_llama(void **state) {
    (void)state;
    ref_arch("llama");
}

static void test_ref_gemma(void **state) {
    (void)state;
    ref_arch("gemma");
}

// ---- optimizers and schedules alone ----

static void test_optimizers(void **state) {
    (void)state;
    cJSON *doc = tv_load_json("train_ref_optim.json");
    const size_t n = (size_t)cJSON_GetObjectItem(doc, "n")->valueint;
    float *p0 = tv_floats(doc, "params", n);
    float *g[3];
    for (int s = 0; s < 3; s++) g[s] = as_test_b64_floats(cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "grads"), s)->valuestring, &(size_t){0});
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const cJSON *cf = cJSON_GetObjectItem(c, "config");
        optim_config oc;
        const optim_kind kind = !strcmp(name, "adamw") ? OPTIM_ADAMW : !strcmp(name, "rmsprop") ? OPTIM_RMSPROP : OPTIM_SGD;
        optim_config_default(&oc, kind);
        oc.lr = (float)cJSON_GetObjectItem(cf, "lr")->valuedouble;
        oc.weight_decay = (float)cJSON_GetObjectItem(cf, "weight_decay")->valuedouble;
        if (kind == OPTIM_SGD) oc.momentum = (float)cJSON_GetObjectItem(cf, "momentum")->valuedouble;
        if (kind == OPTIM_RMSPROP) { // PyTorch's defaults are ours
            assert_float_equal(oc.alpha, cJSON_GetObjectItem(cf, "alpha")->valuedouble, 1e-9);
            assert_float_equal(oc.eps, cJSON_GetObjectItem(cf, "eps")->valuedouble, 1e-15);
        }
        optim *o;
        assert_int_equal(optim_init(&o, &oc, n), AS_OK);
        float *p = as_malloc(sizeof(float) * n);
        memcpy(p, p0, sizeof(float) * n);
        const optim_segment seg = {"all", 0, n, true};
        for (int s = 0; s < 3; s++) {
            const double lr = optim_step(o, p, g[s], &seg, 1, 2);
            assert_float_equal(lr, oc.lr, 1e-9);
            float *want = as_test_b64_floats(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "after"), s)->valuestring, &(size_t){0});
            for (size_t i = 0; i < n; i++)
                if (!(fabsf(p[i] - want[i]) <= 2e-6f * (1.0f + fabsf(want[i]))))
                    fail_msg("%s step %d element %zu: %.9g, torch.optim %.9g", name, s + 1, i, (double)p[i], (double)want[i]);
            free(want);
        }
        // Weight decay applies only to segments that ask for it.
        if (oc.weight_decay > 0) {
            optim *o2;
            assert_int_equal(optim_init(&o2, &oc, n), AS_OK);
            float *q = as_malloc(sizeof(float) * n), *z = as_calloc(n, sizeof(float));
            memcpy(q, p0, sizeof(float) * n);
            const optim_segment nodecay = {"norms", 0, n, false};
            optim_step(o2, q, z, &nodecay, 1, 1);
            assert_memory_equal(q, p0, sizeof(float) * n); // zero gradient, no decay: unchanged
            free(q), free(z);
            optim_free(o2);
        }
        free(p);
        optim_free(o);
        n_cases++;
    }
    assert_int_equal(n_cases, 3);
    for (int s = 0; s < 3; s++) free(g[s]);
    free(p0);
    cJSON_Delete(doc);
}

static void test_schedules(void **state) {
    (void)state;
    cJSON *doc = tv_load_json("train_ref_optim.json");
    const cJSON *s;
    int n = 0;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(doc, "schedules")) {
        const char *name = cJSON_GetObjectItem(s, "name")->valuestring;
        optim_config oc;
        optim_config_default(&oc, OPTIM_ADAMW);
        oc.schedule = !strncmp(name, "constant", 8) ? OPTIM_SCHEDULE_CONSTANT : !strcmp(name, "linear") ? OPTIM_SCHEDULE_LINEAR : OPTIM_SCHEDULE_COSINE;
        oc.warmup_ratio = cJSON_GetObjectItem(s, "warmup_ratio")->valuedouble;
        oc.total_steps = cJSON_GetObjectItem(s, "total_steps")->valueint;
        const cJSON *f = cJSON_GetObjectItem(s, "factors");
        assert_int_equal(cJSON_GetArraySize(f), oc.total_steps);
        for (int64_t k = 0; k < oc.total_steps; k++) {
            const double want = cJSON_GetArrayItem(f, (int)k)->valuedouble, got = optim_lr_factor(&oc, k);
            if (!(fabs(got - want) <= 1e-6)) fail_msg("%s (warm-up %.2f, %lld steps) step %lld: factor %.9g, transformers %.9g", name,
                                                      oc.warmup_ratio, (long long)oc.total_steps, (long long)k, got, want);
        }
        n++;
    }
    assert_int_equal(n, 6);
    cJSON_Delete(doc);
}

static void test_clipping(void **state) {
    (void)state;
    float g[2] = {3.0f, 4.0f};
    assert_float_equal(optim_clip_grad_norm(g, 2, 10.0f, 1), 5.0, 1e-12);
    assert_true(g[0] == 3.0f && g[1] == 4.0f); // under the limit: untouched
    assert_float_equal(optim_clip_grad_norm(g, 2, 1.0f, 1), 5.0, 1e-12);
    assert_float_equal(g[0], 0.6f, 1e-6f);
    assert_float_equal(g[1], 0.8f, 1e-6f);
    assert_float_equal(optim_clip_grad_norm(g, 2, 0.0f, 1), 1.0, 1e-6); // 0: report only
    // Many blocks: the same bits for 1 and 2 threads.
    const size_t n = 300000;
    float *a = as_malloc(sizeof(float) * n), *b = as_malloc(sizeof(float) * n);
    as_rng r;
    as_rng_seed(&r, 4);
    fill_normal(a, (int64_t)n, 1.0f, &r);
    memcpy(b, a, sizeof(float) * n);
    const double na = optim_clip_grad_norm(a, n, 1.0f, 1), nb = optim_clip_grad_norm(b, n, 1.0f, 2);
    assert_memory_equal(&na, &nb, sizeof na);
    assert_memory_equal(a, b, sizeof(float) * n);
    assert_float_equal(optim_clip_grad_norm(a, n, 0.0f, 2), 1.0, 1e-5);
    free(a), free(b);
}

static void test_config_errors(void **state) {
    (void)state;
    optim *o;
    optim_config c;
    optim_config_default(&c, OPTIM_ADAMW);
    c.lr = -1.0f;
    assert_int_equal(optim_init(&o, &c, 4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "learning rate"));
    optim_config_default(&c, OPTIM_ADAMW);
    c.beta2 = 1.0f;
    assert_int_equal(optim_init(&o, &c, 4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "betas"));
    optim_config_default(&c, OPTIM_ADAMW);
    c.schedule = OPTIM_SCHEDULE_LINEAR; // no total_steps
    assert_int_equal(optim_init(&o, &c, 4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "total_steps"));
    optim_config_default(&c, OPTIM_RMSPROP);
    c.warmup_ratio = 1.5f;
    assert_int_equal(optim_init(&o, &c, 4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "warm-up"));
    optim_config_default(&c, OPTIM_SGD);
    c.momentum = 1.0f;
    assert_int_equal(optim_init(&o, &c, 4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "momentum"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_llama), cmocka_unit_test(test_ref_gemma), cmocka_unit_test(test_optimizers),
        cmocka_unit_test(test_schedules), cmocka_unit_test(test_clipping),  cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
