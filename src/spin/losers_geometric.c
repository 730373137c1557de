// Phase 1 with sampler: token-geometric | sir | gflownet: losers drawn from the
// geometric mixture pi_t^(1-alpha) pi_0^alpha, the loss's own reference.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mixture/losers.h"
#include "spin/run_internal.h"
#include "util/common.h"
#include "util/json.h"

// sampler gflownet trained here: a progress line per step, and the resume
// tests' kill switch after each training state ("<k>:gfn<step>").
typedef struct gfn_hooks {
    spin_ctx *x;
    int32_t k;
    double t0;
} gfn_hooks;

static void gfn_on_step(void *user, const gfn_step_stats *s) {
    const gfn_hooks *h = user;
    char extra[64];
    snprintf(extra, sizeof extra, "loss %.4f", s->loss);
    spin_progress(h->x, h->k, "gflownet", s->step, h->x->c->gfn_steps, h->t0, extra);
}

static int gfn_started(void *user, int64_t first_step) {
    const gfn_hooks *h = user;
    if (first_step > 0 && !h->x->quiet)
        fprintf(stderr, "alphaspin run: iter %d/%d gflownet: resuming the sampler's training at step %lld/%d (%s/iter_%d/" SPIN_GFN_STATE ")\n",
                h->k, h->x->c->iterations, (long long)first_step, h->x->c->gfn_steps, h->x->run, h->k);
    return AS_OK;
}

static void gfn_saved(void *user, int64_t step) {
    gfn_hooks *h = user;
    char phase[32];
    snprintf(phase, sizeof phase, "gfn%lld", (long long)step);
    spin_phase_done(h->x, h->k, phase);
}

// The "consistent" alpha-SPIN of the paper's Appendix A: losers drawn from
// the loss's own reference pi_t^(1-alpha) pi_0^alpha (src/mixture/losers.h),
// one per drawn prompt; the window (tau, mixing) does not apply, nor do the
// generation.temperature/top_p/top_k settings (the mixture is defined at
// temperature 1).  Writes RUN/iter_k/sampler.json (time, lengths, SIR's
// effective sample size, the GFlowNet's training) and, when a sampler is
// trained here, its adapters to RUN/iter_k/gfn_sampler.
int spin_losers_geometric(spin_ctx *x, int32_t k, const int64_t *ex, int64_t n, spin_pairs *ps) {
    const spin_config *c = x->c;
    const int32_t t = k - 1;
    if (!c->lora) return as_error("sampler %s: needs lora.enabled (pi_t and pi_0 are adapters over one base)", c->sampler);
    char dir[SPIN_PATH_LEN], save[SPIN_PATH_LEN + 16], state[SPIN_PATH_LEN + 32];
    snprintf(dir, sizeof dir, "%s/iter_%d", x->run, k);
    snprintf(save, sizeof save, "%s/gfn_sampler", dir);
    snprintf(state, sizeof state, "%s/" SPIN_GFN_STATE, dir);
    // A sampler trained here saves its training state as it goes; a rerun continues it.
    gfn_hooks hooks = {.x = x, .k = k, .t0 = as_time()};
    const gfn_checkpoint ck = {.path = state, .every = c->gfn_save_every, .resume = spin_file_exists(state), .started = gfn_started,
                               .saved = gfn_saved, .user = &hooks};
    mixture_losers_config mc = {.kind = (mixture_sampler_kind)mixture_sampler_from_name(c->sampler), .alpha = (float)c->loss.alpha,
                                .precision = c->gen_precision, .max_new_tokens = c->max_new_tokens, .batch = c->gen_batch,
                                .seed = spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_GENERATE, 0), .sir_k = c->sir_k,
                                .gfn_adapter = c->gfn_adapter, .gfn_save_dir = save, .gfn_ck = &ck, .gfn_on_step = gfn_on_step,
                                .gfn_user = &hooks};
    gfn_config_default(&mc.gfn);
    mc.gfn.steps = c->gfn_steps, mc.gfn.optim.lr = c->gfn_lr, mc.gfn.samples_per_prompt = c->gfn_samples;
    mc.gfn.reward_temp_end = c->gfn_reward_temp_end, mc.gfn.micro_batch = x->micro > 0 ? x->micro : 4;
    mc.gfn_lora = (train_lora_config){.rank = c->gfn_rank, .alpha = 2.0f * (float)c->gfn_rank, .dropout = 0.0f, .targets = 0,
                                      .seed = spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_LORA, 1)};
    {   // END: the token that closes an assistant turn.
        const char *te = chat_turn_end(&x->tpl);
        int32_t *e_ids = NULL;
        size_t ne = 0;
        if (tokenizer_encode(x->tok, te, strlen(te), false, true, &e_ids, &ne) || ne == 0) {
            free(e_ids);
            return as_error("sampler %s: the chat template's end of turn is not a token", c->sampler);
        }
        mc.end_id = e_ids[0];
        free(e_ids);
    }
    int32_t **prompt = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *prompt), **ids = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *ids);
    int64_t *n_prompt = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *n_prompt), *n_ids = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *n_ids);
    int rc = AS_OK;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const sft_example *e = &x->train->ex[ex[i]];
        char *pr = chat_render(&x->tpl, e->msgs, (size_t)spin_prompt_turns(e), true);
        size_t np = 0;
        rc = !pr || tokenizer_encode(x->tok, pr, strlen(pr), false, true, &prompt[i], &np) ? AS_FAIL : AS_OK;
        n_prompt[i] = (int64_t)np;
        free(pr);
    }
    model_lora vt;
    if (t > 0) train_lora_view(x->iterates[t], &vt);
    mixture_losers_stats st = {0};
    if (!x->quiet) fprintf(stderr, "alphaspin run: iter %d/%d generate   %lld losers from the geometric mixture (%s)...\n", k,
                           c->iterations, (long long)n, c->sampler);
    if (rc == AS_OK) rc = mixture_losers(x->inf, x->tm, t > 0 ? &vt : NULL, &mc, (const int32_t *const *)prompt, n_prompt, n, ids, n_ids, &st);
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        char *text = tokenizer_decode(x->tok, ids[i], (size_t)n_ids[i], false);
        const sft_example *e = &x->train->ex[ex[i]];
        const int32_t a = spin_prompt_turns(e);
        spin_pairs_add(ps, e->msgs, a, e->msgs[a].content, text ? text : "", t);
        free(text);
    }
    if (rc == AS_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "sampler", c->sampler);
        cJSON_AddNumberToObject(o, "losers", (double)n);
        cJSON_AddNumberToObject(o, "seconds", st.seconds);
        cJSON_AddNumberToObject(o, "mean_len", st.mean_len);
        if (mc.kind == MIXTURE_SAMPLER_SIR) {
            cJSON_AddNumberToObject(o, "k", c->sir_k);
            cJSON_AddNumberToObject(o, "ess_mean", st.ess_mean);
            cJSON_AddNumberToObject(o, "ess_min", st.ess_min);
        }
        if (mc.kind == MIXTURE_SAMPLER_GFLOWNET && !(c->gfn_adapter && c->gfn_adapter[0])) {
            cJSON_AddNumberToObject(o, "gfn_train_seconds", st.gfn_train_seconds);
            cJSON_AddNumberToObject(o, "gfn_last_loss", isfinite(st.gfn_last_loss) ? st.gfn_last_loss : -1);
        }
        char *js = as_json_print(o, false), path[SPIN_PATH_LEN + 16];
        snprintf(path, sizeof path, "%s/sampler.json", dir);
        rc = as_write_file_atomic(path, js, strlen(js));
        if (!x->quiet && mc.kind == MIXTURE_SAMPLER_SIR)
            fprintf(stderr, "alphaspin run: iter %d/%d sir K=%d: effective sample size mean %.2f, min %.2f\n", k, c->iterations, c->sir_k,
                    st.ess_mean, st.ess_min);
        free(js);
        cJSON_Delete(o);
    }
    for (int64_t i = 0; i < n; i++) free(prompt[i]), free(ids[i]);
    free(prompt), free(ids), free(n_prompt), free(n_ids);
    return rc;
}
