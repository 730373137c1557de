// The one training loop: `alphaspin sft`, the alpha-SPIN iterations of
// `alphaspin run` and GFlowNet fine-tuning (`alphaspin gfn-train`, sampler:
// gflownet) all train through it.  What differs between them, the loss, is a
// callback per micro-batch; the loop owns the rest:
//
//   for each epoch:  perm = a permutation of the n_items items, from the data-order stream
//     for each step: zero the gradients
//                    micro(items) for each micro-batch of the step's items   (forward + backward:
//                                                                             gradients ACCUMULATE)
//                    clip, update (optimizer; lr from the schedule over the total steps)
//                    step_done(step, grad_norm, lr, ...)                    (metrics, logs, progress)
//                    save, when due: the caller's outputs, then the training state
//
// The training state (train/checkpoint.h: trainable weights, optimizer moments
// and step, the dropout stream, and the data-order stream as it was when the
// current epoch began, so the epoch's permutation is drawn again) makes a
// resumed run bitwise the run that was not interrupted, for a thread count.
// Without items (n_items = 0) there is no data order: each step brings its own
// data, max_steps steps.  The draw callback (GFlowNet) begins each step by
// drawing its items (its trajectories), and micro-batches of micro_items of
// them make its gradient as a step's items do below (items[i] = i).  The
// stream `order`, when given, is the caller's own, saved and restored as it
// stands, and whatever else the caller needs to continue goes into the state
// through `extra`.
//
// The step's gradient is a fixed tree over its micro-batches: each micro-batch's
// gradient is computed from zero, and they are added pairwise, micro-batch i
// with i + 1, then pairs of pairs, and so on (the tree of a binary counter:
// ((g0 + g1) + (g2 + g3)) + g4 for five).  The tree depends only on the number
// of micro-batches, so under mpirun (dist/dist.h), where each rank computes a
// contiguous share of the micro-batches (the subtrees inside its share), the
// partial sums are gathered and every rank completes the same tree: the
// gradient, and so the trained weights and optimizer state, are one process's
// bits whatever the number of processes.  A step of one micro-batch is its
// gradient as computed.  Whatever a micro-batch reports besides its gradient
// (its loss, its metrics) goes through records: micro writes its record into
// s->record (record_size bytes), and combine receives every micro-batch's, in
// order, before step_done.  The dropout stream is positioned for each
// micro-batch as one process leaves it: one draw per training forward pass
// with dropout (train_forward), checked.
#ifndef AS_TRAIN_LOOP_H
#define AS_TRAIN_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/train.h"
#include "util/rng.h"

typedef struct train_loop_config {
    int64_t n_items;        // items of an epoch (examples, pairs); 0: none (see above)
    int32_t epochs;         // passes over the items
    int64_t max_steps;      // optimizer steps at most (0: every epoch); the steps when n_items = 0
    int32_t step_items;     // items per optimizer step (the last step of an epoch may have fewer)
    int32_t micro_items;    // items per micro-batch (one forward/backward; also of drawn items)
    optim_config optim;     // the loop sets total_steps
    const char *state_path; // the training state (NULL: none saved or resumed)
    bool resume;            // continue from state_path, which must exist
    int64_t save_every;     // save after every this many steps (0: no) ...
    bool save_each_epoch;   // ... and after the last step of each epoch; always after the last step
    const train_state_extra *extra; // the caller's own state, saved and resumed with the loop's (NULL: none)
} train_loop_config;

// Where the loop is, for the callbacks.
typedef struct train_loop_step {
    int64_t step;            // optimizer steps done, the current one included (1-based)
    int64_t total;           // steps of the run
    int64_t first_step;      // steps that were done when this process started (resume)
    int64_t steps_per_epoch; // 0 without items
    int32_t epoch;           // 1-based (1 without items)
    const int64_t *items;    // the step's items (indices into the caller's data), n_items of them
    int64_t n_items;
    int32_t micro_index;     // micro: which micro-batch of the step (0-based)
    void *record;            // micro: where it writes its record (NULL when record_size is 0)
    double grad_norm, lr;    // of the update (step_done)
    double elapsed_s, eta_s; // since train_loop_run began; remaining, at this process's pace (step_done)
} train_loop_step;

typedef struct train_loop_fns {
    // Without items (required then, else unused): draws the step's items (every
    // process alike, or shared and gathered: the same on every one) and says how many.
    int (*draw)(void *user, const train_loop_step *s, int64_t *n_items);
    // Forward and backward of items[0..n) (a slice of s->items): ACCUMULATES
    // the gradient of the step's loss into the model's.
    int (*micro)(void *user, const train_loop_step *s, const int64_t *items, int32_t n);
    // What each micro-batch reports, record_size bytes at s->record (0: nothing);
    // combine gets every micro-batch's record of the step in order, after its
    // gradient is complete and before the update (may be NULL).
    size_t record_size;
    void (*combine)(void *user, const train_loop_step *s, const void *records, int32_t n_micro);
    // After the update (may be NULL).
    int (*step_done)(void *user, const train_loop_step *s);
    // Writes the outputs the training state goes with, before it (may be NULL).
    int (*save)(void *user, const train_loop_step *s);
    // After the state is written (may be NULL): the resume tests' kill switch.
    void (*saved)(void *user, const train_loop_step *s);
    void *user;
} train_loop_fns;

typedef struct train_loop {
    train_loop_config c;
    train_model *m;
    optim *o;
    as_rng *order;            // the data-order stream (the caller's; NULL without items)
    int64_t step;             // optimizer steps done
    int64_t total, steps_per_epoch;
    // Under mpirun: the step's exchange of gradient pieces, its bytes sent and
    // received, kept from step to step (dist_allgather_reuse).
    char *xsend, *xrecv;
    size_t xsend_cap, xrecv_cap;
} train_loop;

// The optimizer over m's trainable parameters and, with c->resume, the state
// read back (l->step steps are then done).  order: the data-order stream
// (required with items; without, optional, see above).  -1 + as_error for a missing state
// or one past this run's steps.
int train_loop_init(train_loop *l, train_model *m, const train_loop_config *c, as_rng *order);
// Runs the remaining steps.  -1 when a callback fails (its as_error stands).
int train_loop_run(train_loop *l, const train_loop_fns *f);
void train_loop_free(train_loop *l);

#endif
