// The one training loop (see loop.h).
#include "train/loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
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
    if (train_state_load(m, l->o, order, c->extra, c->state_path)) return AS_FAIL;
    l->step = l->o->step;
    if (l->step > l->total)
        return as_error("%s: the state is at step %lld, past this run's %lld steps (other options than the run's?)", c->state_path,
                        (long long)l->step, (long long)l->total);
    return AS_OK;
}

void train_loop_free(train_loop *l) {
    optim_free(l->o);
    free(l->xsend), free(l->xrecv);
    l->o = NULL, l->xsend = l->xrecv = NULL, l->xsend_cap = l->xrecv_cap = 0;
}

// Outputs, then the state.  Mid-epoch, the data-order stream saved is the one
// the epoch began with (a resumed run draws the epoch's permutation again);
// after an epoch's last step the stream is already where the next one starts.
// Without items the caller's stream is saved as it is.
static int save(train_loop *l, const train_loop_fns *f, const train_loop_step *s, const as_rng *epoch_rng) {
    if (f->save && f->save(f->user, s)) return AS_FAIL;
    const as_rng *data_rng = l->c.n_items == 0 ? l->order : l->step % l->steps_per_epoch ? epoch_rng : l->order;
    if (train_state_save(l->m, l->o, data_rng, l->c.extra, l->c.state_path)) return AS_FAIL;
    if (f->saved) f->saved(f->user, s);
    return AS_OK;
}

// ---- the step's gradient: a fixed tree over its micro-batches (loop.h) ----

typedef struct grad_tree {
    train_loop *l;
    const train_loop_fns *f;
    train_loop_step *s;
    int32_t M;        // micro-batches of the step
    float *grads;     // the model's gradient buffer: backward accumulates there
    size_t n;         // its floats
    float *bufs[32];  // one per tree level (allocated on first use, the model backend's buf_alloc: resident on a device)
    char *records;    // M records
    as_rng r0;        // the dropout stream when the step began
    int draws;        // dropout seeds each micro-batch draws
} grad_tree;

static as_rng rng_after(as_rng r, int64_t k) {
    while (k-- > 0) as_rng_u64(&r);
    return r;
}

static float *level_buf(grad_tree *t, int32_t level) {
    if (level >= 32) as_die("train loop: gradient tree deeper than 32 levels");
    if (!t->bufs[level]) t->bufs[level] = t->l->m->be->buf_alloc(sizeof(float) * (t->n ? t->n : 1));
    return t->bufs[level];
}

// a += b, element by element (the thread count changes nothing), on the model's backend.
static void grads_add(const train_model *m, float *a, const float *b, size_t n) { m->be->residual_forward(a, a, b, (int64_t)n, m->n_threads); }

// Micro-batch i's gradient, computed from zero, into dst (NULL: left in the
// model's buffer), with the dropout stream where one process has it then.
static int leaf(grad_tree *t, int32_t i, float *dst) {
    train_loop_step *s = t->s;
    const int64_t mi = t->l->c.micro_items, j = (int64_t)i * mi;
    train_model *m = t->l->m;
    m->rng = rng_after(t->r0, (int64_t)i * t->draws);
    s->micro_index = i;
    s->record = t->f->record_size ? t->records + (size_t)i * t->f->record_size : NULL;
    train_zero_grad(m);
    if (t->f->micro(t->f->user, s, s->items + j, (int32_t)AS_MIN(mi, s->n_items - j))) return AS_FAIL;
    const as_rng want = rng_after(t->r0, (int64_t)(i + 1) * t->draws);
    if (memcmp(&want, &m->rng, sizeof want))
        return as_error("train loop: micro-batch %d of step %lld did not draw %d dropout seed(s) (one per training forward pass)", i,
                        (long long)s->step, t->draws);
    if (dst) m->be->gather_rows(dst, t->grads, NULL, 1, (int64_t)t->n);
    return AS_OK;
}

// The node over micro-batches [lo, min(lo + size, M)) (size a power of two)
// into dst, the buffer of `level`; its right child goes one level down.  A
// node whose right half is past M is its left child.
static int node(grad_tree *t, int32_t lo, int32_t size, float *dst, int32_t level) {
    if (size == 1) return leaf(t, lo, dst);
    const int32_t half = size / 2;
    if (lo + half >= t->M) return node(t, lo, half, dst, level);
    if (node(t, lo, half, dst, level)) return AS_FAIL;
    float *right = level_buf(t, level + 1);
    if (node(t, lo + half, half, right, level + 1)) return AS_FAIL;
    grads_add(t->l->m, dst, right, t->n);
    return AS_OK;
}

// The largest nodes inside this rank's micro-batches [b0, b1), each appended
// to out as (lo, hi, its gradient).
static int pieces(grad_tree *t, int32_t lo, int32_t size, int32_t b0, int32_t b1, as_sbuf *out) {
    const int32_t hi = AS_MIN(lo + size, t->M);
    if (hi <= b0 || lo >= b1) return AS_OK;
    if (b0 <= lo && hi <= b1) {
        float *g = level_buf(t, 0);
        if (node(t, lo, size, g, 0)) return AS_FAIL;
        const int32_t range[2] = {lo, hi};
        as_sb_add(out, (const char *)range, sizeof range);
        as_sb_add(out, (const char *)g, sizeof(float) * t->n);
        return AS_OK;
    }
    const int32_t half = size / 2;
    if (pieces(t, lo, half, b0, b1, out)) return AS_FAIL;
    return lo + half < t->M ? pieces(t, lo + half, half, b0, b1, out) : AS_OK;
}

typedef struct piece { int32_t lo, hi; const char *g; } piece;

// The node [lo, min(lo + size, M)) from the gathered pieces of every rank, as node() adds.
static void finish(grad_tree *t, const piece *p, int32_t np, int32_t lo, int32_t size, float *dst, int32_t level) {
    const int32_t hi = AS_MIN(lo + size, t->M);
    for (int32_t i = 0; i < np; i++)
        if (p[i].lo == lo && p[i].hi == hi) {
            memcpy(dst, p[i].g, sizeof(float) * t->n);
            return;
        }
    const int32_t half = size / 2;
    if (size == 1) as_die("train loop: micro-batch %d missing from the gathered gradients", lo);
    finish(t, p, np, lo, half, dst, level);
    if (lo + half >= t->M) return;
    float *right = level_buf(t, level + 1);
    finish(t, p, np, lo + half, half, right, level + 1);
    grads_add(t->l->m, dst, right, t->n);
}

// The step's gradient into the model's buffer, and combine's records.
static int step_gradient(train_loop *l, const train_loop_fns *f, train_loop_step *s) {
    train_model *m = l->m;
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    grad_tree t = {.l = l, .f = f, .s = s, .M = (int32_t)((s->n_items + l->c.micro_items - 1) / l->c.micro_items), .r0 = m->rng};
    t.n = train_trainable(m, &params, &grads, &segs, &n_segs);
    t.grads = grads;
    // train_forward draws one seed per forward pass with adapter dropout on.
    t.draws = m->lora && m->adapters_on && m->training && m->lora->cfg.dropout > 0.0f;
    const size_t rs = f->record_size;
    t.records = as_calloc((size_t)t.M, rs ? rs : 1);
    int32_t size = 1;
    while (size < t.M) size *= 2;
    int rc = AS_OK;
    if (dist_size() == 1) { // every micro-batch here: the root, straight into the model's buffer
        if (t.M == 1) rc = leaf(&t, 0, NULL);
        else if ((rc = node(&t, 0, size, level_buf(&t, 0), 0)) == AS_OK) m->be->gather_rows(grads, t.bufs[0], NULL, 1, (int64_t)t.n);
    } else { // this rank's share, then every rank's pieces and records
        int64_t b0, b1;
        dist_share(t.M, &b0, &b1);
        // Block: this rank's pieces (a rank may have no micro-batch), then its
        // records; in buffers kept from step to step (train_loop: xsend, xrecv).
        as_sbuf block = {.s = l->xsend, .len = 0, .cap = l->xsend_cap};
        rc = pieces(&t, 0, size, (int32_t)b0, (int32_t)b1, &block);
        if (b1 > b0) as_sb_add(&block, t.records + (size_t)b0 * rs, (size_t)(b1 - b0) * rs);
        l->xsend = block.s, l->xsend_cap = block.cap;
        size_t *off;
        // ALPHASPIN_DIST_STATS=1: what the exchange costs (BENCHMARKS.md), the
        // wait for the slowest rank (a barrier, only then) apart from the transfer.
        const bool stats = getenv("ALPHASPIN_DIST_STATS") != NULL;
        const double t0 = as_time();
        if (stats) dist_barrier();
        const double t1 = as_time();
        rc = dist_allgather_reuse(block.s, block.len, rc == AS_OK, &l->xrecv, &l->xrecv_cap, &off);
        const char *all = l->xrecv;
        if (rc == AS_OK && dist_rank() == 0 && stats)
            fprintf(stderr, "dist: step %lld: %d micro-batches, %zu bytes sent by rank 0, %zu gathered, waited %.1f ms, exchange %.1f ms over %s\n",
                    (long long)s->step, t.M, block.len, off[dist_size()], 1e3 * (t1 - t0), 1e3 * (as_time() - t1),
                    dist_transport_name() ? dist_transport_name() : "mpi");
        if (rc == AS_OK) {
            piece p[64 * 32];
            int32_t np = 0;
            for (int r = 0; r < dist_size(); r++) {
                int64_t r0, r1;
                dist_share_of(t.M, r, &r0, &r1);
                const size_t rec = off[r + 1] - (size_t)(r1 - r0) * rs; // its records, after its pieces
                memcpy(t.records + (size_t)r0 * rs, all + rec, (size_t)(r1 - r0) * rs);
                for (size_t at = off[r]; at < rec; at += 2 * sizeof(int32_t) + sizeof(float) * t.n) {
                    if (np == (int32_t)AS_ARRAY_LEN(p)) as_die("train loop: too many gradient pieces");
                    int32_t range[2];
                    memcpy(range, all + at, sizeof range);
                    p[np++] = (piece){range[0], range[1], all + at + sizeof range};
                }
            }
            finish(&t, p, np, 0, size, grads, 0);
            free(off);
        }
    }
    m->rng = rng_after(t.r0, (int64_t)t.M * t.draws);
    if (rc == AS_OK && f->combine) f->combine(f->user, s, t.records, t.M);
    s->record = NULL;
    for (int i = 0; i < 32; i++)
        if (t.bufs[i]) m->be->buf_free(t.bufs[i]);
    free(t.records);
    return rc;
}

int train_loop_run(train_loop *l, const train_loop_fns *f) {
    const train_loop_config *c = &l->c;
    const int64_t n = c->n_items, spe = l->steps_per_epoch;
    if (n == 0 && (!f->draw || c->micro_items < 1)) return as_error("train loop: without items, a draw callback and micro_items >= 1");
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1)), cap = n > 0 ? n : 1;
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
            if (n == 0) { // the step's own items: perm holds 0, 1, ...
                int64_t k = 0;
                if ((rc = f->draw(f->user, &s, &k))) break;
                if (k > cap) perm = as_realloc(perm, sizeof(int64_t) * (size_t)(cap = k));
                for (int64_t j = 0; j < k; j++) perm[j] = j;
                s.items = perm, s.n_items = k;
                if (k > 0) rc = step_gradient(l, f, &s);
                else train_zero_grad(l->m);
            } else {
                rc = step_gradient(l, f, &s);
            }
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
