// Phase 3 of iteration k: pi_t -> pi_k with the preference loss over the
// iteration's pairs, their references cached (phase_references.c), through
// the training loop (train/loop.h): epochs over the pairs shuffled with a
// stream seeded by (seed, k); micro-batches of batch_size pairs, grad_accum of
// them per optimizer step.  After every epoch metrics.jsonl and then the
// training state are written, and a saved state is resumed.
#include <stdio.h>
#include <string.h>

#include "spin/run_internal.h"
#include "train/loop.h"
#include "util/common.h"

int spin_train_microbatch(train_model *m, const spin_loss_config *lc, spin_pair *const *pairs, int32_t n, double scale,
                          spin_loss_metrics *met) {
    spin_seq **seqs = as_malloc(sizeof *seqs * (size_t)(2 * n));
    for (int32_t i = 0; i < n; i++) seqs[i] = &pairs[i]->w, seqs[n + i] = &pairs[i]->l;
    spin_seq_batch sb;
    spin_seq_batch_build(&sb, seqs, 2 * n);
    sb.b.backward = true;
    float *pol = as_malloc(sizeof(float) * (size_t)(2 * n)), *grad = as_malloc(sizeof(float) * (size_t)(2 * n));
    spin_pair_logps *pl = as_malloc(sizeof *pl * (size_t)n);
    int32_t *cnt = as_malloc(sizeof(int32_t) * (size_t)(2 * n));
    int rc = train_forward(m, &sb.b, pol, cnt);
    if (rc == AS_OK) {
        for (int32_t i = 0; i < n; i++) {
            const spin_pair *p = pairs[i];
            pl[i] = (spin_pair_logps){
                .pol_w = pol[i], .pol_l = pol[n + i],
                .ref_w = spin_ref_logp(lc->ref, lc->alpha, p->ref_t_w, p->ref_0_w),
                .ref_l = spin_ref_logp(lc->ref, lc->alpha, p->ref_t_l, p->ref_0_l),
                .n_w = cnt[i], .n_l = cnt[n + i],
            };
        }
        spin_loss_batch(lc, pl, n, scale, grad, grad + n, met);
        rc = train_backward(m, grad);
    }
    spin_seq_batch_free(&sb);
    free(seqs), free(pol), free(grad), free(pl), free(cnt);
    return rc;
}

// What the training loop's callbacks need.
typedef struct pairs_run {
    spin_ctx *x;
    int32_t k;
    spin_pairs *ps;
    spin_pair **mb;           // a micro-batch's pairs
    spin_loss_metrics acc;    // the step's metrics, accumulated over its micro-batches
    spin_step_metrics *hist;  // every step's metrics (metrics.jsonl)
    const char *metrics_path;
} pairs_run;

// What a micro-batch reports: its weight in the step and its metrics (the
// training loop gathers them from every process, train/loop.h).
typedef struct pairs_record {
    double w;
    spin_loss_metrics met;
} pairs_record;

// The step's loss is the mean over its pairs: a micro-batch of n of its pairs weighs n / (pairs of the step).
static int pairs_micro(void *user, const train_loop_step *s, const int64_t *items, int32_t n) {
    pairs_run *r = user;
    for (int32_t b = 0; b < n; b++) r->mb[b] = &r->ps->p[items[b]];
    pairs_record *rec = s->record;
    rec->w = (double)n / (double)s->n_items;
    return spin_train_microbatch(r->x->tm, &r->x->c->loss, r->mb, n, rec->w, &rec->met);
}

// The step's metrics, its micro-batches' in order.
static void pairs_combine(void *user, const train_loop_step *s, const void *records, int32_t n_micro) {
    pairs_run *r = user;
    (void)s;
    const pairs_record *rec = records;
    spin_loss_metrics *acc = &r->acc;
    for (int32_t i = 0; i < n_micro; i++) {
        const double w = rec[i].w;
        const spin_loss_metrics *met = &rec[i].met;
        acc->loss += w * met->loss, acc->rewards_real += w * met->rewards_real, acc->rewards_generated += w * met->rewards_generated;
        acc->rewards_margins += w * met->rewards_margins, acc->rewards_accuracies += w * met->rewards_accuracies;
        acc->logps_real += w * met->logps_real, acc->logps_generated += w * met->logps_generated, acc->n += met->n;
    }
}

static int pairs_step_done(void *user, const train_loop_step *s) {
    pairs_run *r = user;
    r->hist[s->step - 1] = (spin_step_metrics){.step = s->step, .epoch = (double)s->step / (double)s->steps_per_epoch, .loss = r->acc.loss,
                                               .grad_norm = s->grad_norm, .lr = s->lr, .m = r->acc};
    if (!r->x->quiet)
        fprintf(stderr, "\ralphaspin run: iter %d/%d train      step %lld/%lld  loss %.4f  margin %.3f  %.0fs elapsed, ETA %.0fs   %s", r->k,
                r->x->c->iterations, (long long)s->step, (long long)s->total, r->acc.loss, r->acc.rewards_margins, s->elapsed_s, s->eta_s,
                s->step == s->total ? "\n" : "");
    memset(&r->acc, 0, sizeof r->acc);
    return AS_OK;
}

// metrics.jsonl before the training state: the state's step count says how many lines are valid.
static int pairs_save(void *user, const train_loop_step *s) {
    const pairs_run *r = user;
    return spin_metrics_write(r->metrics_path, r->hist, s->step);
}

static void pairs_saved(void *user, const train_loop_step *s) {
    pairs_run *r = user;
    char phase[32];
    snprintf(phase, sizeof phase, "epoch%d", s->epoch);
    spin_phase_done(r->x, r->k, phase);
}

int spin_phase_train(spin_ctx *x, int32_t k, spin_pairs *ps, spin_step_metrics *mean) {
    const spin_config *c = x->c;
    train_model *m = x->tm;
    const int64_t n = ps->n;
    if (n == 0) return as_error("iteration %d: no pairs to train on", k);
    char state_path[SPIN_PATH_LEN], metrics_path[SPIN_PATH_LEN];
    snprintf(state_path, sizeof state_path, "%s/iter_%d/" SPIN_TRAIN_STATE, x->run, k);
    snprintf(metrics_path, sizeof metrics_path, "%s/iter_%d/metrics.jsonl", x->run, k);
    as_rng order;
    as_rng_seed(&order, spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_ORDER, 0));
    as_rng_seed(&m->rng, spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_DROPOUT, 0));
    const train_loop_config lc = {.n_items = n, .epochs = c->epochs, .step_items = c->batch_size * c->grad_accum,
                                  .micro_items = c->batch_size, .optim = c->optim, .state_path = state_path,
                                  .resume = spin_file_exists(state_path), .save_each_epoch = true};
    train_loop loop;
    pairs_run r = {.x = x, .k = k, .ps = ps, .metrics_path = metrics_path};
    int rc = AS_FAIL;
    if (train_loop_init(&loop, m, &lc, &order)) goto done;
    r.hist = as_calloc((size_t)(loop.total > 0 ? loop.total : 1), sizeof *r.hist);
    r.mb = as_malloc(sizeof *r.mb * (size_t)c->batch_size);
    if (loop.step > 0 && spin_metrics_read(metrics_path, r.hist, loop.step)) goto done;
    train_set_training(m, true);
    const train_loop_fns fns = {.micro = pairs_micro, .record_size = sizeof(pairs_record), .combine = pairs_combine, .step_done = pairs_step_done,
                                .save = pairs_save, .saved = pairs_saved, .user = &r};
    if (train_loop_run(&loop, &fns)) goto done;
    // TRL-style summary: means over the last epoch's steps.
    spin_metrics_mean(r.hist, loop.total - loop.steps_per_epoch, loop.total, c->epochs, mean);
    rc = AS_OK;
done:
    train_set_training(m, false);
    free(r.hist), free(r.mb);
    train_loop_free(&loop);
    return rc;
}
