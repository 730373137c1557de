// GFlowNet fine-tuning (src/mixture/gfn.h): the modified sub-trajectory
// balance loss against a direct triple sum and its gradient against finite
// differences (alone and through the training model's LoRA factors, which
// also checks train_batch.target2 and train_backward_tokens), and training
// on the enumerable tiny model: the sampler's exact distance to the
// geometric mixture against its training steps.
#include "tiny_mix.h"
#include "train/train_test_util.h"

#include "mixture/gfn.h"
#include "mixture/losers.h"
#include "mixture/mixture.h"

// The loss by its definition: sum over i < j of lambda^(j-i-1) (sum_{k=i}^{j-1} delta_k)^2.
static double subtb_direct(int m, const double *lr, const double *pf, const double *pt, double lambda, double *W) {
    double L = 0;
    *W = 0;
    for (int i = 0; i < m; i++)
        for (int j = i + 1; j <= m; j++) {
            double S = 0;
            for (int k = i; k < j; k++) S += lr[k] + pf[k] + pt[k + 1] - lr[k + 1] - pt[k];
            L += pow(lambda, j - i - 1) * S * S, *W += pow(lambda, j - i - 1);
        }
    return L;
}

static void test_subtb_formula_and_gradient(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 3);
    enum { M = 7 };
    double lr[M + 1], pf[M + 1], pt[M + 1], gpf[M + 1] = {0}, gpt[M + 1] = {0}, W, Wd;
    for (int i = 0; i <= M; i++) lr[i] = -3 * as_rng_uniform(&r) - i, pf[i] = -2 * as_rng_uniform(&r), pt[i] = -4 * as_rng_uniform(&r);
    const double lambda = 0.9;
    const double L = gfn_subtb(M, lr, pf, pt, lambda, &W, gpf, gpt);
    const double Ld = subtb_direct(M, lr, pf, pt, lambda, &Wd);
    assert_true(fabs(L - Ld) <= 1e-12 * fmax(1, fabs(Ld)) && fabs(W - Wd) < 1e-12);
    double worst = 0;
    for (int which = 0; which < 2; which++)
        for (int k = 0; k <= M; k++) {
            if (which == 0 && k == M) continue; // logpf has m entries
            double *x = which ? pt : pf;
            const double x0 = x[k], h = 1e-5;
            x[k] = x0 + h;
            const double lp = subtb_direct(M, lr, pf, pt, lambda, &Wd);
            x[k] = x0 - h;
            const double lm = subtb_direct(M, lr, pf, pt, lambda, &Wd);
            x[k] = x0;
            const double fd = (lp - lm) / (2 * h), g = which ? gpt[k] : gpf[k];
            worst = fmax(worst, fabs(fd - g) / fmax(1, fabs(fd)));
        }
    printf("  SubTB loss = direct sum; gradient vs central differences: %.1e\n", worst);
    assert_true(worst < 1e-6);
    // m = 0 (END at once): no transitions, no loss, no weight.
    assert_true(gfn_subtb(0, lr, pf, pt, lambda, &W, gpf, gpt) == 0 && W == 0);
}

typedef struct fd_ctx {
    train_model *tm;
    const gfn_traj *t;
    int64_t n;
} fd_ctx;

static double loss_of(void *p) {
    fd_ctx *c = p;
    double L;
    if (gfn_loss(c->tm, c->t, c->n, MIX_END, 0.7, 0.8, 2, false, &L)) fail_msg("%s", as_last_error());
    return L;
}

// The batch loss through the training model: gradient on the sampler's LoRA
// factors vs finite differences; the sampler's log q(END|s) from the second
// targets equals the inference engine's.
static void test_gfn_loss_gradient(void **state) {
    (void)state;
    char *dir = as_test_tmpdir(), path[300];
    snprintf(path, sizeof path, "%s/mix.gguf", dir);
    mix_write_model(path, 7, 6.0);
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    train_model *tm;
    if (train_model_from_model(&tm, m)) fail_msg("%s", as_last_error());
    train_set_threads(tm, 1);
    train_lora *sampler = mix_random_lora(&m->cfg, 2, 0.5, 21), *lt = mix_random_lora(&m->cfg, 2, 1.0, 11);
    train_lora_set(tm, sampler);
    model_lora vt;
    train_lora_view(lt, &vt);
    const int32_t prompt[3] = {0, 2, 1}, prompt2[2] = {1, 1};
    const int32_t a1[3] = {1, 0, 2}, a2[1] = {2}, a3[3] = {2, 2, 0};
    // ended after 3 tokens, ended after 1, truncated (m = max), ended at once (m = 0)
    gfn_traj t[4] = {{.prompt = prompt, .n_prompt = 3, .ids = a1, .m = 3},
                     {.prompt = prompt2, .n_prompt = 2, .ids = a2, .m = 1},
                     {.prompt = prompt, .n_prompt = 3, .ids = a3, .m = 3, .truncated = true},
                     {.prompt = prompt2, .n_prompt = 2, .ids = a2, .m = 0}};
    double *logr[4];
    assert_int_equal(gfn_prefix_rewards(m, KERNEL_PRECISION_F32, &vt, NULL, 0.3f, MIX_END, t, 4, logr), AS_OK);
    for (int i = 0; i < 4; i++) t[i].logr = logr[i];
    // Rewards against the independent log-softmax of the test: prefix + END, both models.
    {
        double lpt[8][MIX_V], lp0[8][MIX_V];
        model_set_lora(m, &vt);
        mix_logsoftmax_rows(m, prompt, 3, a1, 3, lpt);
        model_set_lora(m, NULL);
        mix_logsoftmax_rows(m, prompt, 3, a1, 3, lp0);
        double ct = 0, c0 = 0;
        for (int i = 0; i <= 3; i++) {
            const double want = 0.7 * (ct + lpt[i][MIX_END]) + 0.3 * (c0 + lp0[i][MIX_END]);
            assert_true(fabs(logr[0][i] - want) < 1e-4);
            if (i < 3) ct += lpt[i][a1[i]], c0 += lp0[i][a1[i]];
        }
        // The truncated leaf: the mixture of its tokens, no END factor.
        model_set_lora(m, &vt);
        mix_logsoftmax_rows(m, prompt, 3, a3, 3, lpt);
        model_set_lora(m, NULL);
        mix_logsoftmax_rows(m, prompt, 3, a3, 3, lp0);
        ct = c0 = 0;
        for (int i = 0; i < 3; i++) ct += lpt[i][a3[i]], c0 += lp0[i][a3[i]];
        assert_true(fabs(logr[2][3] - (0.7 * ct + 0.3 * c0)) < 1e-4);
    }
    // Batched as they come (chunks of up to 16 trajectories per forward call): 40
    // trajectories, the four above ten times over, each as scored alone.
    {
        enum { NT = 40 };
        gfn_traj many[NT];
        double *lm[NT];
        for (int i = 0; i < NT; i++) many[i] = t[i % 4];
        assert_int_equal(gfn_prefix_rewards(m, KERNEL_PRECISION_F32, &vt, NULL, 0.3f, MIX_END, many, NT, lm), AS_OK);
        double worst = 0;
        for (int i = 0; i < NT; i++) {
            double *one;
            assert_int_equal(gfn_prefix_rewards(m, KERNEL_PRECISION_F32, &vt, NULL, 0.3f, MIX_END, &t[i % 4], 1, &one), AS_OK);
            for (int k = 0; k <= t[i % 4].m; k++) worst = fmax(worst, fabs(lm[i][k] - one[k]));
            free(one), free(lm[i]);
        }
        printf("  rewards of 40 trajectories in chunks vs each alone: within %.1e\n", worst);
        assert_true(worst < 1e-5);
    }
    // log q(END | s_i) of the training model's second targets vs the engine with the sampler's adapters.
    {
        int32_t toks[8] = {0, 2, 1, 1, 0, 2, MIX_END}, t2[8], len = 7, plen = 3;
        for (int i = 0; i < 8; i++) t2[i] = MIX_END;
        train_batch b = {.n_seq = 1, .n_ctx = 8, .tokens = toks, .len = &len, .prompt_len = &plen, .target2 = t2};
        float ls, l1[8], l2[8];
        assert_int_equal(train_forward(tm, &b, &ls, NULL), AS_OK);
        assert_int_equal(train_token_logprobs(tm, l1), 4);
        assert_int_equal(train_token_logprobs2(tm, l2), 4);
        model_lora vs;
        train_lora_view(sampler, &vs);
        model_set_lora(m, &vs);
        double lp[8][MIX_V];
        mix_logsoftmax_rows(m, prompt, 3, a1, 3, lp);
        for (int i = 0; i < 4; i++) assert_true(fabs(l2[i] - lp[i][MIX_END]) < 1e-4 && fabs(l1[i] - lp[i][toks[3 + i]]) < 1e-4);
        model_set_lora(m, NULL);
        b.target2 = NULL;
        assert_int_equal(train_forward(tm, &b, &ls, NULL), AS_OK);
        assert_int_equal(train_token_logprobs2(tm, l2), 0);
        float g[4] = {0};
        assert_int_equal(train_backward_tokens(tm, g, g), AS_FAIL); // second-target gradients without second targets
    }
    double L;
    train_zero_grad(tm);
    assert_int_equal(gfn_loss(tm, t, 4, MIX_END, 0.7, 0.8, 2, true, &L), AS_OK);
    fd_ctx ctx = {tm, t, 4};
    assert_true(fabs(L - loss_of(&ctx)) < 1e-9 * fmax(1, L));
    assert_true(L > 1e-3);
    double worst = 0;
    for (int k = 0; k < TRAIN_LORA_N_TARGETS; k++) {
        const int64_t na = (int64_t)m->cfg.n_layer * 2 * sampler->in[k], nb = (int64_t)m->cfg.n_layer * sampler->out[k] * 2;
        char what[64];
        snprintf(what, sizeof what, "lora %s A", TRAIN_LORA_TARGET_NAMES[k]);
        worst = fmax(worst, fd_check(what, sampler->a[k], sampler->ga[k], na, loss_of, &ctx, 1e-2, 2e-2, 1e-3, 12));
        snprintf(what, sizeof what, "lora %s B", TRAIN_LORA_TARGET_NAMES[k]);
        worst = fmax(worst, fd_check(what, sampler->b[k], sampler->gb[k], nb, loss_of, &ctx, 1e-2, 2e-2, 1e-3, 12));
    }
    printf("  GFlowNet batch loss %.4f; LoRA gradients vs finite differences: worst %.1e of max |g|\n", L, worst);
    for (int i = 0; i < 4; i++) free(logr[i]);
    train_lora_set(tm, NULL);
    train_lora_free(sampler), train_lora_free(lt);
    train_model_free(tm);
    model_free(m);
    unlink(path), rmdir(dir);
}

typedef struct train_ctx {
    model *m;
    train_model *tm;
    const double *p; // exact target
    const int32_t *prompt;
    int every;
    double tv_first, tv_last;
} train_ctx;

// Exact distribution of the sampler (base + its adapters) over the leaves.
static double sampler_tv(train_ctx *c) {
    model_lora vs;
    train_lora_view(c->tm->lora, &vs);
    model_set_lora(c->m, &vs);
    double q[MIX_LEAVES];
    mix_leaf_logps(c->m, c->prompt, 3, q);
    for (int i = 0; i < MIX_LEAVES; i++) q[i] = exp(q[i]);
    model_set_lora(c->m, NULL);
    return mix_tv(q, c->p, MIX_LEAVES);
}

static void on_step(void *user, const gfn_step_stats *s) {
    train_ctx *c = user;
    if (s->step % c->every) return;
    c->tv_last = sampler_tv(c);
    printf("  step %4lld  loss %.4f  TV(sampler, p) %.4f  buffer %lld\n", (long long)s->step, s->loss, c->tv_last, (long long)s->buffer_total);
}

// Training the sampler on the tiny model brings its exact distribution close
// to the geometric mixture (reward temperature 1 throughout, so the target is p itself).
static void test_gfn_train_tv(void **state) {
    (void)state;
    char *dir = as_test_tmpdir(), path[300];
    snprintf(path, sizeof path, "%s/mix.gguf", dir);
    mix_write_model(path, 7, 6.0);
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    train_model *tm;
    if (train_model_from_model(&tm, m)) fail_msg("%s", as_last_error());
    train_set_threads(tm, 1);
    train_lora *lt = mix_random_lora(&m->cfg, 2, 1.2, 11);
    model_lora vt;
    train_lora_view(lt, &vt);
    const int32_t prompt[3] = {0, 2, 1};
    // Exact target at alpha 0.5.
    const double alpha = 0.5;
    double p[MIX_LEAVES], l0[MIX_LEAVES], ltl[MIX_LEAVES], mx = -INFINITY, s = 0;
    model_set_lora(m, &vt);
    mix_leaf_logps(m, prompt, 3, ltl);
    model_set_lora(m, NULL);
    mix_leaf_logps(m, prompt, 3, l0);
    for (int i = 0; i < MIX_LEAVES; i++) p[i] = (1 - alpha) * ltl[i] + alpha * l0[i], mx = fmax(mx, p[i]);
    for (int i = 0; i < MIX_LEAVES; i++) p[i] = exp(p[i] - mx), s += p[i];
    for (int i = 0; i < MIX_LEAVES; i++) p[i] /= s;

    train_lora_config lc = {.rank = 4, .alpha = 4, .dropout = 0, .targets = 0, .seed = 5};
    assert_int_equal(train_lora_attach(tm, &lc), AS_OK);
    gfn_config c;
    gfn_config_default(&c);
    c.alpha = (float)alpha, c.max_new_tokens = MIX_N, c.end_id = MIX_END;
    c.steps = 300, c.prompts_per_step = 1, c.samples_per_prompt = 16, c.micro_batch = 16;
    c.reward_temp_start = c.reward_temp_end = 1.0f;
    c.buffer_size = 16;
    c.optim.lr = 1e-2f, c.optim.schedule = OPTIM_SCHEDULE_LINEAR; // decaying to 0: the last steps settle
    c.seed = 1;
    const int32_t *pr[1] = {prompt};
    const int64_t np[1] = {3};
    train_ctx ctx = {.m = m, .tm = tm, .p = p, .prompt = prompt, .every = 50};
    ctx.tv_first = sampler_tv(&ctx);
    printf("  step    0  TV(sampler, p) %.4f (the base, pi_0)\n", ctx.tv_first);
    assert_int_equal(gfn_train(m, tm, &vt, NULL, &c, pr, np, 1, NULL, on_step, &ctx), AS_OK);
    // Empirical distance of the trained sampler's own draws.
    const int64_t n = 20000;
    const int32_t **prs = as_malloc(sizeof(int32_t *) * n);
    int64_t *nps = as_malloc(sizeof(int64_t) * n);
    for (int64_t i = 0; i < n; i++) prs[i] = prompt, nps[i] = 3;
    mixture_config mc = {.max_new_tokens = MIX_N, .end_ids = &c.end_id, .n_end_ids = 1, .batch_size = 256, .seed = 77};
    mixture_sample *smp = as_calloc(n, sizeof *smp);
    model_lora vs;
    train_lora_view(tm->lora, &vs);
    assert_int_equal(mixture_sample_policy(m, &vs, 1.0f, &mc, prs, nps, n, smp), AS_OK);
    double h[MIX_LEAVES] = {0};
    for (int64_t i = 0; i < n; i++) h[mix_leaf_index(smp[i].ids, smp[i].n_ids, smp[i].ended)] += 1.0 / n, mixture_sample_free(&smp[i]);
    const double tv_emp = mix_tv(h, p, MIX_LEAVES);
    printf("  trained sampler: exact TV %.4f, empirical TV %.4f (%lld draws); untrained %.4f\n", ctx.tv_last, tv_emp, (long long)n,
           ctx.tv_first);
    assert_true(ctx.tv_last < 0.5 * ctx.tv_first);
    assert_true(ctx.tv_last < 0.05);
    // Bad configurations are refused.
    c.subtb_lambda = 0;
    assert_int_equal(gfn_train(m, tm, &vt, NULL, &c, pr, np, 1, NULL, NULL, NULL), AS_FAIL);
    free(smp), free(prs), free(nps);
    train_lora_free(lt);
    train_model_free(tm);
    model_free(m);
    unlink(path), rmdir(dir);
}

// The seam of `alphaspin run`: one loser per prompt from each sampler, END
// stripped; a gflownet trained on the spot is saved and can be read back; the
// training model's own adapters are put back.
static void test_losers(void **state) {
    (void)state;
    char *dir = as_test_tmpdir(), path[300], save[320];
    snprintf(path, sizeof path, "%s/mix.gguf", dir);
    snprintf(save, sizeof save, "%s/sampler", dir);
    mix_write_model(path, 7, 6.0);
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    train_model *tm;
    if (train_model_from_model(&tm, m)) fail_msg("%s", as_last_error());
    train_set_threads(tm, 1);
    train_lora *own = mix_random_lora(&m->cfg, 2, 0.3, 9), *lt = mix_random_lora(&m->cfg, 2, 1.2, 11);
    train_lora_set(tm, own);
    model_lora vt;
    train_lora_view(lt, &vt);
    const int32_t p1[3] = {0, 2, 1}, p2[2] = {1, 1};
    const int32_t *pr[2] = {p1, p2};
    const int64_t np[2] = {3, 2};
    mixture_losers_config c = {.alpha = 0.5f, .max_new_tokens = MIX_N, .end_id = MIX_END, .batch = 8, .seed = 3, .sir_k = 4,
                               .gfn_save_dir = save};
    gfn_config_default(&c.gfn);
    c.gfn.steps = 5, c.gfn.prompts_per_step = 2, c.gfn.samples_per_prompt = 4, c.gfn.micro_batch = 8, c.gfn.optim.lr = 1e-2f;
    c.gfn_lora = (train_lora_config){.rank = 2, .alpha = 2, .seed = 4};
    assert_int_equal(mixture_sampler_from_name("sir"), MIXTURE_SAMPLER_SIR);
    assert_int_equal(mixture_sampler_from_name("mixture"), -1);
    for (int kind = 0; kind < 4; kind++) {
        c.kind = kind < 3 ? (mixture_sampler_kind)kind : MIXTURE_SAMPLER_GFLOWNET;
        c.gfn_adapter = kind == 3 ? save : NULL; // 3: the sampler trained by pass 2, read back
        int32_t *ids[2];
        int64_t n_ids[2];
        mixture_losers_stats st;
        if (mixture_losers(m, tm, &vt, &c, pr, np, 2, ids, n_ids, &st)) fail_msg("%s", as_last_error());
        for (int i = 0; i < 2; i++) {
            assert_true(n_ids[i] >= 0 && n_ids[i] <= MIX_N);
            for (int64_t j = 0; j < n_ids[i]; j++) assert_true(ids[i][j] >= 0 && ids[i][j] < MIX_END);
            free(ids[i]);
        }
        if (kind == MIXTURE_SAMPLER_SIR) assert_true(st.ess_min >= 1 && st.ess_mean <= 4 + 1e-9);
        if (kind == 2) assert_true(isfinite(st.gfn_last_loss) && st.gfn_train_seconds > 0);
        assert_true(tm->lora == own && m->lora.rank == 0);
    }
    // One prompt drawn several times per step with a small buffer: replayed and fresh
    // trajectories of the same prompt in one step (the buffer changes only after the step).
    {
        train_lora *samp = train_lora_new(&m->cfg, &c.gfn_lora), *prev = train_lora_set(tm, samp);
        gfn_config g = c.gfn;
        g.alpha = 0.5f, g.max_new_tokens = MIX_N, g.end_id = MIX_END, g.prompts_per_step = 3, g.samples_per_prompt = 2;
        g.buffer_size = 2, g.replay_prob = 0.5f, g.steps = 8;
        assert_int_equal(gfn_train(m, tm, &vt, NULL, &g, pr, np, 1, NULL, NULL, NULL), AS_OK);
        assert_true(train_lora_set(tm, prev) == samp);
        train_lora_free(samp);
    }
    char cfgp[400];
    snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", save);
    assert_int_equal(access(cfgp, R_OK), 0);
    train_lora_set(tm, NULL);
    train_lora_free(own), train_lora_free(lt);
    train_model_free(tm);
    model_free(m);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

// The save/load round trip of gfn_train's state (gfn.h, gfn_checkpoint): a run
// of 8 steps saving every 2, and a second run resumed from a copy of the first's
// state at step 4, end with the same sampler and the same state file, byte for
// byte (the optimizer, the stream, the prompt order and the replay buffers all
// came back); other options and a cut file are refused naming the file.
typedef struct ck_ctx {
    const char *state, *snapshot; // copy the state at snap_step to snapshot
    int64_t snap_step, started, saves, buffer_at_snap;
} ck_ctx;

static int ck_started(void *user, int64_t first_step) {
    ((ck_ctx *)user)->started = first_step;
    return AS_OK;
}

static void ck_saved(void *user, int64_t step) {
    ck_ctx *x = user;
    x->saves++;
    if (step != x->snap_step) return;
    char *bytes;
    size_t n;
    if (as_read_file(x->state, &bytes, &n) || as_write_file_atomic(x->snapshot, bytes, n)) fail_msg("%s", as_last_error());
    free(bytes);
}

static void ck_step(void *user, const gfn_step_stats *s) {
    ck_ctx *x = user;
    if (s->step == x->snap_step) x->buffer_at_snap = s->buffer_total;
}

// One run on a fresh sampler; its final adapters into params (n floats).
static int ck_run(model *m, const model_lora *vt, const gfn_config *g, const gfn_checkpoint *ck, ck_ctx *x, float **params, size_t *n) {
    train_model *tm;
    if (train_model_from_model(&tm, m)) fail_msg("%s", as_last_error());
    train_set_threads(tm, 1);
    const train_lora_config lc = {.rank = 2, .alpha = 2, .seed = 4};
    assert_int_equal(train_lora_attach(tm, &lc), AS_OK);
    const int32_t p1[3] = {0, 2, 1}, p2[2] = {1, 1}, p3[1] = {2};
    const int32_t *pr[3] = {p1, p2, p3};
    const int64_t np[3] = {3, 2, 1};
    const int rc = gfn_train(m, tm, vt, NULL, g, pr, np, 3, ck, ck_step, x);
    *n = tm->lora->n;
    *params = as_malloc(sizeof(float) * *n);
    memcpy(*params, tm->lora->memory, sizeof(float) * *n);
    train_model_free(tm);
    return rc;
}

static void test_gfn_resume(void **state) {
    (void)state;
    char *dir = as_test_tmpdir(), path[300], st1[320], st2[320], snap[320];
    snprintf(path, sizeof path, "%s/mix.gguf", dir);
    snprintf(st1, sizeof st1, "%s/a.safetensors", dir);
    snprintf(st2, sizeof st2, "%s/b.safetensors", dir);
    snprintf(snap, sizeof snap, "%s/snap.safetensors", dir);
    mix_write_model(path, 7, 6.0);
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    train_lora *lt = mix_random_lora(&m->cfg, 2, 1.2, 11);
    model_lora vt;
    train_lora_view(lt, &vt);
    gfn_config g;
    gfn_config_default(&g);
    g.alpha = 0.5f, g.max_new_tokens = MIX_N, g.end_id = MIX_END, g.steps = 8, g.prompts_per_step = 2, g.samples_per_prompt = 3;
    g.micro_batch = 2, g.buffer_size = 2, g.replay_prob = 0.5f, g.optim.lr = 1e-2f, g.seed = 9;
    // Straight through, the state copied at step 4.
    ck_ctx x1 = {.state = st1, .snapshot = snap, .snap_step = 4, .started = -1};
    gfn_checkpoint ck = {.path = st1, .every = 2, .options = "data=test\n", .started = ck_started, .saved = ck_saved, .user = &x1};
    float *p1, *p2;
    size_t n1, n2;
    if (ck_run(m, &vt, &g, &ck, &x1, &p1, &n1)) fail_msg("%s", as_last_error());
    assert_int_equal(x1.started, 0);
    assert_int_equal(x1.saves, 4); // steps 2, 4, 6, 8
    assert_true(x1.buffer_at_snap > 0);
    // From the copy: steps 5..8.
    char *bytes;
    size_t len;
    assert_int_equal(as_read_file(snap, &bytes, &len), AS_OK);
    assert_int_equal(as_write_file_atomic(st2, bytes, len), AS_OK);
    ck_ctx x2 = {.state = st2, .snapshot = snap, .snap_step = -1, .started = -1};
    ck.path = st2, ck.resume = true, ck.user = &x2;
    if (ck_run(m, &vt, &g, &ck, &x2, &p2, &n2)) fail_msg("%s", as_last_error());
    assert_int_equal(x2.started, 4);
    assert_int_equal(x2.saves, 2);
    assert_int_equal(n1, n2);
    assert_memory_equal(p1, p2, sizeof(float) * n1);
    char *b1, *b2;
    size_t l1, l2;
    assert_int_equal(as_read_file(st1, &b1, &l1), AS_OK);
    assert_int_equal(as_read_file(st2, &b2, &l2), AS_OK);
    assert_true(l1 == l2 && memcmp(b1, b2, l1) == 0);
    free(b1), free(b2), free(p2);
    printf("  resumed at step 4 of 8 (%lld buffered answers): the same sampler and state, byte for byte\n", (long long)x1.buffer_at_snap);
    // Other settings, or other caller options: refused, naming the file and the first difference.
    assert_int_equal(as_write_file_atomic(st2, bytes, len), AS_OK);
    gfn_config g2 = g;
    g2.seed = 10;
    assert_int_equal(ck_run(m, &vt, &g2, &ck, &x2, &p2, &n2), AS_FAIL);
    free(p2);
    assert_non_null(strstr(as_last_error(), st2));
    assert_non_null(strstr(as_last_error(), "saved by a run with seed=9, this one has seed=10"));
    ck.options = "data=other\n";
    assert_int_equal(ck_run(m, &vt, &g, &ck, &x2, &p2, &n2), AS_FAIL);
    free(p2);
    assert_non_null(strstr(as_last_error(), "data=test, this one has data=other"));
    // A cut state: one line naming it, whatever the cut.
    ck.options = "data=test\n";
    for (size_t cut = 0; cut < len; cut += len / 7 + 1) {
        assert_int_equal(as_write_file_atomic(st2, bytes, cut), AS_OK);
        assert_int_equal(ck_run(m, &vt, &g, &ck, &x2, &p2, &n2), AS_FAIL);
        free(p2);
        assert_non_null(strstr(as_last_error(), st2));
        assert_null(strchr(as_last_error(), '\n'));
    }
    free(bytes), free(p1);
    train_lora_free(lt);
    model_free(m);
    unlink(st1), unlink(st2), unlink(snap), unlink(path), rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_subtb_formula_and_gradient), cmocka_unit_test(test_gfn_loss_gradient),
                                       cmocka_unit_test(test_gfn_train_tv), cmocka_unit_test(test_losers),
                                       cmocka_unit_test(test_gfn_resume)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
