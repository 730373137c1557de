// alpha-SPIN losers from the geometric mixture (see losers.h).
#include "mixture/losers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mixture/mixture.h"
#include "train/checkpoint.h"
#include "util/common.h"

int mixture_sampler_from_name(const char *name) {
    if (!strcmp(name, "token-geometric")) return MIXTURE_SAMPLER_TOKEN;
    if (!strcmp(name, "sir")) return MIXTURE_SAMPLER_SIR;
    if (!strcmp(name, "gflownet")) return MIXTURE_SAMPLER_GFLOWNET;
    return -1;
}

typedef struct gfn_last { double loss; } gfn_last;
static void on_gfn_step(void *user, const gfn_step_stats *s) { ((gfn_last *)user)->loss = s->loss; }

// The sampler's adapters: read from a PEFT folder, or trained now on these prompts over tm's base.
static int gflownet_sampler(model *inf, train_model *tm, const model_lora *lora_t, const mixture_losers_config *c,
                            const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, train_lora **out, mixture_losers_stats *st) {
    if (c->gfn_adapter && c->gfn_adapter[0]) return train_lora_read_peft(&inf->cfg, c->gfn_adapter, out);
    if (!tm || !tm->lora) return as_error("sampler gflownet: training a sampler needs the LoRA training model");
    train_lora *sampler = train_lora_new(&tm->cfg, &c->gfn_lora);
    if (!sampler) return AS_FAIL;
    gfn_config g = c->gfn;
    g.precision = c->precision;
    g.alpha = c->alpha, g.max_new_tokens = c->max_new_tokens, g.end_id = c->end_id, g.seed = c->seed ^ 0x6F6E;
    const bool was_training = tm->training, was_on = tm->adapters_on;
    train_lora *own = train_lora_set(tm, sampler);
    train_set_training(tm, false);
    gfn_last last = {NAN};
    const double t0 = as_time();
    int rc = gfn_train(inf, tm, lora_t, NULL, &g, prompt, n_prompt, n, NULL, on_gfn_step, &last);
    if (rc == AS_OK && c->gfn_save_dir) rc = train_lora_save_peft(tm, c->gfn_save_dir, NULL);
    st->gfn_train_seconds = as_time() - t0, st->gfn_last_loss = last.loss;
    train_lora_set(tm, own);
    train_set_training(tm, was_training);
    train_set_adapters(tm, was_on);
    if (rc) {
        train_lora_free(sampler);
        return AS_FAIL;
    }
    *out = sampler;
    return AS_OK;
}

int mixture_losers(model *inf, train_model *tm, const model_lora *lora_t, const mixture_losers_config *c, const int32_t *const *prompt,
                   const int64_t *n_prompt, int64_t n, int32_t **ids, int64_t *n_ids, mixture_losers_stats *st) {
    memset(st, 0, sizeof *st);
    const double t0 = as_time();
    mixture_config mc = {.precision = c->precision, .alpha = c->alpha, .max_new_tokens = c->max_new_tokens, .end_ids = &c->end_id,
                         .n_end_ids = 1, .batch_size = c->batch, .seed = c->seed};
    mixture_sample *s = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *s);
    double *ess = NULL;
    train_lora *sampler = NULL;
    int rc;
    switch (c->kind) {
    case MIXTURE_SAMPLER_TOKEN: rc = mixture_sample_token(inf, lora_t, NULL, &mc, prompt, n_prompt, n, s); break;
    case MIXTURE_SAMPLER_SIR:
        ess = as_malloc(sizeof(double) * (size_t)AS_MAX(n, (int64_t)1));
        rc = mixture_sample_sir(inf, lora_t, NULL, &mc, c->sir_k, prompt, n_prompt, n, s, ess);
        if (rc == AS_OK && n > 0) {
            st->ess_min = INFINITY;
            for (int64_t i = 0; i < n; i++) st->ess_mean += ess[i] / (double)n, st->ess_min = fmin(st->ess_min, ess[i]);
        }
        break;
    case MIXTURE_SAMPLER_GFLOWNET:
        rc = gflownet_sampler(inf, tm, lora_t, c, prompt, n_prompt, n, &sampler, st);
        if (rc == AS_OK) {
            model_lora v;
            train_lora_view(sampler, &v);
            rc = mixture_sample_policy(inf, &v, 1.0f, &mc, prompt, n_prompt, n, s);
        }
        break;
    default: rc = as_error("mixture_losers: unknown sampler %d", (int)c->kind);
    }
    for (int64_t i = 0; i < n; i++) {
        if (rc == AS_OK) {
            n_ids[i] = s[i].ended ? s[i].n_ids - 1 : s[i].n_ids;
            ids[i] = s[i].ids, s[i].ids = NULL;
            st->mean_len += (double)n_ids[i] / (double)n;
        }
        mixture_sample_free(&s[i]);
    }
    free(s), free(ess);
    train_lora_free(sampler);
    st->seconds = as_time() - t0;
    return rc;
}
