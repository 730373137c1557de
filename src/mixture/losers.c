// alpha-SPIN losers from the geometric mixture (see losers.h).
#include "mixture/losers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "mixture/mixture.h"
#include "train/checkpoint.h"
#include "util/common.h"

int mixture_sampler_from_name(const char *name) {
    if (!strcmp(name, "token-geometric")) return MIXTURE_SAMPLER_TOKEN;
    if (!strcmp(name, "sir")) return MIXTURE_SAMPLER_SIR;
    if (!strcmp(name, "gflownet")) return MIXTURE_SAMPLER_GFLOWNET;
    return -1;
}

typedef struct gfn_last {
    double loss;
    const mixture_losers_config *c;
} gfn_last;

static void on_gfn_step(void *user, const gfn_step_stats *s) {
    gfn_last *l = user;
    l->loss = s->loss;
    if (l->c->gfn_on_step) l->c->gfn_on_step(l->c->gfn_user, s);
}

// The sampler of the kind: gflownet's adapters into *out (read from
// c->gfn_adapter, or trained now on the n prompts, st's gfn fields set);
// NULL for the others.
static int losers_prepare(model *inf, train_model *tm, const model_lora *lora_t, const mixture_losers_config *c, const int32_t *const *prompt,
                          const int64_t *n_prompt, int64_t n, train_lora **out, mixture_losers_stats *st) {
    *out = NULL;
    if (c->kind != MIXTURE_SAMPLER_GFLOWNET) return AS_OK;
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
    gfn_last last = {NAN, c};
    const double t0 = as_time();
    int rc = gfn_train(inf, tm, lora_t, NULL, &g, prompt, n_prompt, n, c->gfn_ck, on_gfn_step, &last);
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

// Answers first .. first + n - 1 of the job (prompt[0] is answer first's):
// ids and n_ids as mixture_losers; ess[i]: SIR's effective sample size of
// answer first + i (1 for the other kinds).  Each answer has its own stream,
// so any split of the job gives the same answers.
static int losers_draw(model *inf, const model_lora *lora_t, const train_lora *sampler, const mixture_losers_config *c,
                       const int32_t *const *prompt, const int64_t *n_prompt, int64_t first, int64_t n, int32_t **ids, int64_t *n_ids,
                       double *ess) {
    mixture_config mc = {.precision = c->precision, .alpha = c->alpha, .max_new_tokens = c->max_new_tokens, .end_ids = &c->end_id,
                         .n_end_ids = 1, .batch_size = c->batch, .seed = c->seed, .first_index = first};
    mixture_sample *s = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *s);
    int rc;
    switch (c->kind) {
    case MIXTURE_SAMPLER_TOKEN: rc = mixture_sample_token(inf, lora_t, NULL, &mc, prompt, n_prompt, n, s); break;
    case MIXTURE_SAMPLER_SIR: rc = mixture_sample_sir(inf, lora_t, NULL, &mc, c->sir_k, prompt, n_prompt, n, s, ess); break;
    case MIXTURE_SAMPLER_GFLOWNET:
        if (!sampler) {
            rc = as_error("mixture_losers: gflownet without its sampler");
            break;
        }
        model_lora v;
        train_lora_view(sampler, &v);
        rc = mixture_sample_policy(inf, &v, 1.0f, &mc, prompt, n_prompt, n, s);
        break;
    default: rc = as_error("mixture_losers: unknown sampler %d", (int)c->kind);
    }
    for (int64_t i = 0; i < n; i++) {
        if (rc == AS_OK) {
            n_ids[i] = s[i].ended ? s[i].n_ids - 1 : s[i].n_ids;
            ids[i] = s[i].ids, s[i].ids = NULL;
            if (c->kind != MIXTURE_SAMPLER_SIR) ess[i] = 1.0;
        }
        mixture_sample_free(&s[i]);
    }
    free(s);
    return rc;
}

// st's mean_len, ess_mean and ess_min (sir) from the job's n answers.
static void losers_summarize(const mixture_losers_config *c, const int64_t *n_ids, const double *ess, int64_t n, mixture_losers_stats *st) {
    st->mean_len = st->ess_mean = st->ess_min = 0.0;
    for (int64_t i = 0; i < n; i++) st->mean_len += (double)n_ids[i] / (double)n;
    if (c->kind == MIXTURE_SAMPLER_SIR && ess && n > 0) {
        st->ess_min = INFINITY;
        for (int64_t i = 0; i < n; i++) st->ess_mean += ess[i] / (double)n, st->ess_min = fmin(st->ess_min, ess[i]);
    }
}

// The job's answers, for dist_gather_shares: n_ids, ess and tokens of each.
typedef struct answers {
    int32_t **ids;
    int64_t *n_ids;
    double *ess;
} answers;

static void put_answer(void *user, int64_t i, as_sbuf *buf) {
    const answers *a = user;
    as_sb_add(buf, (const char *)&a->n_ids[i], sizeof a->n_ids[i]);
    as_sb_add(buf, (const char *)&a->ess[i], sizeof a->ess[i]);
    if (a->n_ids[i]) as_sb_add(buf, (const char *)a->ids[i], sizeof(int32_t) * (size_t)a->n_ids[i]);
}

static const char *get_answer(void *user, int64_t i, const char *p) {
    const answers *a = user;
    memcpy(&a->n_ids[i], p, sizeof a->n_ids[i]), p += sizeof a->n_ids[i];
    memcpy(&a->ess[i], p, sizeof a->ess[i]), p += sizeof a->ess[i];
    a->ids[i] = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(a->n_ids[i], (int64_t)1));
    memcpy(a->ids[i], p, sizeof(int32_t) * (size_t)a->n_ids[i]);
    return p + sizeof(int32_t) * (size_t)a->n_ids[i];
}

int mixture_losers(model *inf, train_model *tm, const model_lora *lora_t, const mixture_losers_config *c, const int32_t *const *prompt,
                   const int64_t *n_prompt, int64_t n, int32_t **ids, int64_t *n_ids, mixture_losers_stats *st) {
    memset(st, 0, sizeof *st);
    const double t0 = as_time();
    train_lora *sampler = NULL;
    double *ess = as_malloc(sizeof(double) * (size_t)AS_MAX(n, (int64_t)1));
    int64_t b = 0, e = n;
    dist_share(n, &b, &e);
    int rc = losers_prepare(inf, tm, lora_t, c, prompt, n_prompt, n, &sampler, st);
    if (rc == AS_OK && e > b) rc = losers_draw(inf, lora_t, sampler, c, prompt + b, n_prompt + b, b, e - b, ids + b, n_ids + b, ess + b);
    train_lora_free(sampler);
    answers a = {ids, n_ids, ess};
    rc = dist_gather_shares(n, rc == AS_OK, put_answer, get_answer, &a);
    if (rc == AS_OK) losers_summarize(c, n_ids, ess, n, st);
    free(ess);
    st->seconds = as_time() - t0;
    return rc;
}
