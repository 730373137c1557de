// Phase 3 of iteration k: pi_t -> pi_k with the preference loss over the
// iteration's pairs, their references cached (phase_references.c).  Epochs
// over the pairs shuffled with a stream seeded by (seed, k); micro-batches of
// batch_size pairs, grad_accum of them per optimizer step.  After every epoch
// metrics.jsonl and then the training state are written (the state's step
// count says how many metric lines are valid), and a saved state is resumed.
#include <stdio.h>
#include <string.h>

#include "spin/run_internal.h"
#include "train/checkpoint.h"
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

int spin_phase_train(spin_ctx *x, int32_t k, spin_pairs *ps, spin_step_metrics *mean) {
    const spin_config *c = x->c;
    train_model *m = x->tm;
    const int64_t n = ps->n, per_step = (int64_t)c->batch_size * c->grad_accum;
    if (n == 0) return as_error("iteration %d: no pairs to train on", k);
    const int64_t steps_per_epoch = (n + per_step - 1) / per_step, total = steps_per_epoch * c->epochs;
    char state_path[SPIN_PATH_LEN], metrics_path[SPIN_PATH_LEN];
    snprintf(state_path, sizeof state_path, "%s/iter_%d/train_state.safetensors", x->run, k);
    snprintf(metrics_path, sizeof metrics_path, "%s/iter_%d/metrics.jsonl", x->run, k);
    float *params, *grads;
    const optim_segment *segs;
    int nsegs;
    const size_t n_params = train_trainable(m, &params, &grads, &segs, &nsegs);
    optim_config oc = c->optim;
    oc.total_steps = total;
    optim *o = NULL;
    if (optim_init(&o, &oc, n_params)) return AS_FAIL;
    as_rng order;
    as_rng_seed(&order, spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_ORDER, 0));
    as_rng_seed(&m->rng, spin_derive_seed(c->seed, (uint64_t)k, SPIN_SALT_DROPOUT, 0));
    spin_step_metrics *hist = as_calloc((size_t)(total > 0 ? total : 1), sizeof *hist);
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    spin_pair **mb = as_malloc(sizeof *mb * (size_t)c->batch_size);
    int rc = AS_FAIL;
    if (spin_file_exists(state_path)) {
        if (train_state_load(m, o, &order, state_path)) goto done;
        if (o->step % steps_per_epoch || o->step > total) {
            as_error("%s: the state is at step %lld, not at the end of one of this iteration's %d epochs of %lld steps", state_path,
                     (long long)o->step, c->epochs, (long long)steps_per_epoch);
            goto done;
        }
        if (spin_metrics_read(metrics_path, hist, o->step)) goto done;
    }
    train_set_training(m, true);
    const double t0 = as_time();
    const int64_t resumed = o->step;
    for (int64_t step = o->step; step < total;) {
        const int32_t ep = (int32_t)(step / steps_per_epoch);
        train_shuffle(perm, n, &order);
        for (int64_t s = 0; s < steps_per_epoch; s++, step++) {
            const int64_t i0 = s * per_step, ns = AS_MIN(per_step, n - i0);
            spin_loss_metrics acc = {0};
            train_zero_grad(m);
            for (int64_t j0 = i0; j0 < i0 + ns; j0 += c->batch_size) {
                const int32_t nb = (int32_t)AS_MIN((int64_t)c->batch_size, i0 + ns - j0);
                for (int32_t b = 0; b < nb; b++) mb[b] = &ps->p[perm[j0 + b]];
                spin_loss_metrics met;
                // The step's loss is the mean over its pairs: each micro-batch weighs nb / ns.
                if (spin_train_microbatch(m, &c->loss, mb, nb, (double)nb / (double)ns, &met)) goto done;
                const double w = (double)nb / (double)ns;
                acc.loss += w * met.loss, acc.rewards_real += w * met.rewards_real, acc.rewards_generated += w * met.rewards_generated;
                acc.rewards_margins += w * met.rewards_margins, acc.rewards_accuracies += w * met.rewards_accuracies;
                acc.logps_real += w * met.logps_real, acc.logps_generated += w * met.logps_generated, acc.n += met.n;
            }
            double gn, lr;
            train_optim_step(m, o, &gn, &lr);
            hist[step] = (spin_step_metrics){.step = step + 1, .epoch = (double)(step + 1) / (double)steps_per_epoch, .loss = acc.loss,
                                             .grad_norm = gn, .lr = lr, .m = acc};
            char extra[96];
            snprintf(extra, sizeof extra, "loss %.4f  margin %.3f", acc.loss, acc.rewards_margins);
            if (!x->quiet) {
                const double el = as_time() - t0, done = (double)(step + 1 - resumed);
                fprintf(stderr, "\ralphaspin run: iter %d/%d train      step %lld/%lld  %s  %.0fs elapsed, ETA %.0fs   %s", k, c->iterations,
                        (long long)step + 1, (long long)total, extra, el, el / done * (double)(total - step - 1),
                        step + 1 == total ? "\n" : "");
            }
        }
        if (spin_metrics_write(metrics_path, hist, step) || train_state_save(m, o, &order, state_path)) goto done;
        char phase[32];
        snprintf(phase, sizeof phase, "epoch%d", ep + 1);
        spin_phase_done(x, k, phase);
    }
    // TRL-style summary: means over the last epoch's steps.
    spin_metrics_mean(hist, total - steps_per_epoch, total, c->epochs, mean);
    rc = AS_OK;
done:
    train_set_training(m, false);
    free(hist), free(perm), free(mb);
    optim_free(o);
    return rc;
}
