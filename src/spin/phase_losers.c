// Phase 1 of iteration k: the losers.  N prompts drawn afresh, and for each
// the answer of an iterate of the window max(0, t-tau+1) .. t (the opponent
// mixture; sampler: mixture), or of the geometric mixture (losers_geometric.c).
// Each answer is seeded by (seed, k, example), so it does not depend on the
// batch it was decoded in.
#include <stdio.h>
#include <string.h>

#include "spin/run_internal.h"
#include "spin/window.h"
#include "util/common.h"
#include "util/rng.h"

static sampler_params loser_sampling(const spin_config *c) {
    sampler_params sp = sampler_params_default();
    sp.temperature = c->gen_temperature;
    sp.top_k = c->gen_top_k;
    sp.top_p = c->gen_top_p;
    sp.min_p = 0.0f;
    sp.repeat_penalty = 1.0f;
    sp.repeat_last_n = 0;
    return sp;
}

// The sampler seam (config key `sampler`): the losers that "iterate j" contributes to
// iteration k for the prompts of training examples ex[0..n).  `mixture` samples
// pi_j itself (the window's uniform mixture is made by spin_phase_losers' shares).  Other
// samplers (e.g. of the geometric mixture pi_t^(1-alpha) pi_0^alpha) plug in here.
static int generate_losers(spin_ctx *x, int32_t k, int32_t j, const int64_t *ex, int64_t n, const sampler_params *sp, char **texts) {
    char phase[32];
    snprintf(phase, sizeof phase, "generate%d", j);
    return spin_generate_answers(x, k, phase, j, x->train, ex, n, sp, (uint64_t)k, SPIN_SALT_GENERATE, texts, NULL);
}

// The pairs of iteration k (t = k - 1): fresh losers from the window's
// iterates for N prompts drawn afresh, plus (concat) the pairs older iterates
// of the window generated when they were current.
int spin_phase_losers(spin_ctx *x, int32_t k, spin_pairs *ps) {
    const spin_config *c = x->c;
    const int32_t t = k - 1, first = spin_window_first(t, c->tau);
    // N prompts from a permutation of the pool seeded by (seed, k).
    const int64_t n = c->prompts > 0 && c->prompts < x->n_pool ? c->prompts : x->n_pool;
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)x->n_pool), *chosen = as_malloc(sizeof(int64_t) * (size_t)n);
    as_rng rng;
    as_rng_seed(&rng, spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_PROMPTS, 0));
    train_shuffle(perm, x->n_pool, &rng);
    for (int64_t i = 0; i < n; i++) chosen[i] = x->pool[perm[i]];
    free(perm);
    if (strcmp(c->sampler, "mixture") != 0) { // the geometric mixture itself
        const int rc = spin_losers_geometric(x, k, chosen, n, ps);
        free(chosen);
        return rc;
    }
    const sampler_params sp = loser_sampling(c);
    int rc = AS_OK;
    int64_t offset = 0; // sample mode: consecutive blocks of the drawn prompts go to consecutive iterates
    for (int32_t j = first; j <= t && rc == AS_OK; j++) {
        const int64_t fresh = spin_window_fresh(c->mixing, t, c->tau, n, j);
        if (c->mixing == SPIN_MIX_CONCAT && j < t) {
            // The official SPIN code's mixing: reuse what pi_j generated at iteration j + 1.
            char path[SPIN_PATH_LEN];
            snprintf(path, sizeof path, "%s/iter_%d/pairs_trl.jsonl", x->run, j + 1);
            rc = spin_pairs_read_trl(ps, path, j);
            continue;
        }
        char **texts = as_calloc((size_t)(fresh > 0 ? fresh : 1), sizeof *texts);
        const int64_t *ex = chosen + (c->mixing == SPIN_MIX_SAMPLE ? offset : 0);
        rc = generate_losers(x, k, j, ex, fresh, &sp, texts);
        for (int64_t i = 0; i < fresh; i++) {
            if (rc == AS_OK) {
                const sft_example *e = &x->train->ex[ex[i]];
                const int32_t a = spin_prompt_turns(e);
                spin_pairs_add(ps, e->msgs, a, e->msgs[a].content, texts[i], j);
            }
            free(texts[i]);
        }
        free(texts);
        offset += fresh;
    }
    free(chosen);
    return rc;
}
