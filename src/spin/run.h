// The alpha-SPIN self-play loop (`alphaspin run`): T iterations of
//   generate losers from the window's iterates -> score the references of pi_t
//   and pi_0 once -> train with the preference loss -> checkpoint -> evaluate
// into the run folder of docs/RUN_FOLDER.md, resumable after a kill at any
// moment with bitwise-identical final iterates (same seed and thread count).
// The iterate is saved before it is evaluated: evaluation then runs on the
// saved bytes (full fine-tuning needs a GGUF for the inference engine anyway),
// and a kill during a long evaluation never loses the trained iterate;
// summary.json, written last, still marks the iteration complete.
#ifndef AS_SPIN_RUN_H
#define AS_SPIN_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "spin/config.h"
#include "spin/loss.h"
#include "spin/pairs.h"
#include "train/train.h"

typedef struct spin_run_options {
    const char *out_dir;   // RUN (required)
    bool quiet;            // no progress lines on stderr
    // Called (when not NULL) after each phase of iteration k, once its files are
    // written; phases in order: generate, references, epoch<e> (e = 1, 2, ...),
    // train, checkpoint, evaluate, summary.  A resumed iteration reports only
    // the phases it runs.  The command line installs one that kills the process
    // for the resume tests (ALPHASPIN_TEST_ABORT_AFTER, src/cli/cmd_run.c).
    void (*on_phase)(void *user, int32_t k, const char *phase);
    void *user;
} spin_run_options;

// Runs (or resumes) the experiment of c in o->out_dir.  RUN/config.yaml must
// be absent or equal to c's resolved YAML (a different configuration is an
// error, not a silent mix).  -1 + as_error on failure.
int spin_run(const spin_config *c, const spin_run_options *o);

// ---- pieces the loop is made of (public for the tests) ----

// Log-probabilities of pi_t and pi_0 for every pair's winner and loser, in
// micro-batches of `micro` sequences with dropout off.  pi_t is m as it is;
// pi_0 is m0, or m with its adapters switched off when m0 is NULL.  With
// alpha = 0 only pi_t is run, with alpha = 1 only pi_0 (the other stays NAN).
int spin_score_references(train_model *m, train_model *m0, spin_pairs *ps, double alpha, int32_t micro);

// Forward and backward of one micro-batch of n pairs (one train_forward over
// the n winners then the n losers) with the cached references: accumulates
// scale * d(mean loss)/d(params) into m's gradients and returns the batch's
// metrics in *met.  lc carries the reference mode and alpha.
int spin_train_microbatch(train_model *m, const spin_loss_config *lc, spin_pair *const *pairs, int32_t n, double scale,
                          spin_loss_metrics *met);

#endif
