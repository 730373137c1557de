// The one training loop (see loop.h).
#include "train/loop.h"

#include <string.h>
#include <unistd.h>

#include "train/checkpoint.h"
#include "util/common.h"

int train_loop_init(train_loop *l, train_model *m, const train_loop_config *c, as_rng *order) {
    memset(l, 0, sizeof *l);
    l->c = *c, l->m = m, l->order = order;
    if (c->n_items > 0) {
        if (c->step_items < 1 || c->micro_items < 1 || c->epochs < 1 || !order)
            return as_error("train loop: step_items, micro_items and epochs must be >= 1, with a data-order stream");
        l->steps_per_epoch = (c->n_items + c->step_items - 1) / c->step_items;
        l->total = l->steps_per_epoch * c->epochs;
        if (c->max_steps > 0) l->total = AS_MIN(l->total, c->max_steps);
    } else {
        l->total = c->max_steps;
    }
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    const size_t n_params = train_trainable(m, &params, &grads, &segs, &n_segs);
    optim_config oc = c->optim;
    oc.total_steps = l->total;
    if (optim_init(&l->o, &oc, n_params)) return AS_FAIL;
    if (!c->resume) return AS_OK;
    // The trainable weights, optimizer moments and step, and both streams come back.
    if (!c->state_path || access(c->state_path, F_OK)) return as_error("%s: no training state to resume from", c->state_path ? c->state_path : "(none)");
    if (train_state_load(m, l->o, order, c->state_path)) return AS_FAIL;
    l->step = l->o->step;
    if (l->step > l->total)
        return as_error("%s: the state is at step %lld, past this run's %lld steps (other options than the run's?)", c->state_path,
                        (long long)l->step, (long long)l->total);
    return AS_OK;
}

void train_loop_free(train_loop *l) {
    optim_free(l->o);
    l->o = NULL;
}

// Outputs, then the state.  Mid-epoch, the data-order stream saved is the one
// the epoch began with (a resumed run draws the epoch's permutation again);
// after an epoch's last step the stream is already where the next one starts.
static int save(train_loop *l, const train_loop_fns *f, const train_loop_step *s, const as_rng *epoch_rng) {
    if (f->save && f->save(f->user, s)) return AS_FAIL;
    const as_rng *data_rng = l->c.n_items == 0 ? NULL : l->step % l->steps_per_epoch ? epoch_rng : l->order;
    if (train_state_save(l->m, l->o, data_rng, l->c.state_path)) return AS_FAIL;
    if (f->saved) f->saved(f->user, s);
    return AS_OK;
}

int train_loop_run(train_loop *l, const train_loop_fns *f) {
    const train_loop_config *c = &l->c;
    const int64_t n = c->n_items, spe = l->steps_per_epoch;
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    train_loop_step s = {.total = l->total, .first_step = l->step, .steps_per_epoch = spe, .epoch = 1};
    as_rng epoch_rng = {0};
    const double t0 = as_time();
    int rc = AS_OK;
    while (l->step < l->total && rc == AS_OK) {
        // An epoch (without items: one step), from the step the loop is at.
        int64_t first = 0, end = 1;
        if (n > 0) {
            s.epoch = (int32_t)(l->step / spe) + 1;
            epoch_rng = *l->order;
            train_shuffle(perm, n, l->order);
            first = l->step % spe, end = spe;
        }
        for (int64_t i = first; i < end && l->step < l->total && rc == AS_OK; i++) {
            s.step = l->step + 1;
            s.items = n > 0 ? perm + i * c->step_items : NULL;
            s.n_items = n > 0 ? AS_MIN((int64_t)c->step_items, n - i * c->step_items) : 0;
            train_zero_grad(l->m);
            if (n == 0) rc = f->micro(f->user, &s, NULL, 0);
            for (int64_t j = 0; j < s.n_items && rc == AS_OK; j += c->micro_items)
                rc = f->micro(f->user, &s, s.items + j, (int32_t)AS_MIN((int64_t)c->micro_items, s.n_items - j));
            if (rc) break;
            train_optim_step(l->m, l->o, &s.grad_norm, &s.lr);
            l->step++;
            s.elapsed_s = as_time() - t0;
            s.eta_s = s.elapsed_s / (double)(l->step - s.first_step) * (double)(l->total - l->step);
            if (f->step_done && (rc = f->step_done(f->user, &s))) break;
            const bool due = (c->save_every > 0 && l->step % c->save_every == 0) || (c->save_each_epoch && n > 0 && l->step % spe == 0) ||
                             l->step == l->total;
            if (c->state_path && due) rc = save(l, f, &s, &epoch_rng);
        }
    }
    free(perm);
    return rc;
}
