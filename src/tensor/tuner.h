// The thread tuner: how many threads a short, repeated step (a decoding step
// of the model) runs on, chosen by measuring.
//
// On a quiet machine every core helps, but when another busy process shares
// the cores, a step split over all of them waits at each of its barriers for
// the thread the OS has descheduled (a few ms each, dozens of barriers a step):
// batch-1 decoding on 2 cores with one busy process fell to 10-25% of its
// quiet speed, whatever OpenMP's wait policy.  Run on fewer threads, the step
// has no thread to wait for and keeps the cores it gets.  The tuner keeps two
// arms, all threads (kernel_get_threads(): a caller's own cap
// counts) and half of them, and measures:
//
//   each step runs on the current arm; its seconds per token feed that arm's
//   running mean (per size class of the step: 1, 2-3, 4-7, ... tokens);
//   the second step of a class and then every `interval` steps, one step runs
//   on the other arm; if it beats the current arm's mean by 10%, its arm
//   becomes current; the interval doubles (quadruples when the other arm took
//   more than twice as long) from 32 up to 512 steps while the current arm
//   keeps winning, and returns to 32 when it loses or when, on all threads,
//   two steps in a row take twice the mean (the load changed).
//
// Results do not depend on it: every kernel gives the same bits at any thread
// count (kernel_cap_threads), so only speed changes.  Steps of more than
// TUNER_MAX_TOKENS tokens (prefill) always use all threads.  ALPHASPIN_THREAD_TUNER=0
// turns it off (every step on all threads); =alternate switches arms on every
// step (tests: results must not change).  Safe to use from several threads.
#ifndef AS_TENSOR_TUNER_H
#define AS_TENSOR_TUNER_H

#include <stdint.h>

#define TUNER_MAX_TOKENS 64

typedef struct tuner_step {
    int cls;        // size class (-1: not tuned)
    int arm;        // 0: all threads, 1: half
    int old_cap;    // the caller's cap, restored by tuner_end
    double t0;      // start time
    int64_t tokens; // tokens of the step
} tuner_step;

// Chooses the step's threads and caps this thread's kernels at that number.
void tuner_begin(tuner_step *s, int64_t n_tokens);
// Records the step's time and restores the cap.
void tuner_end(tuner_step *s);
// tuner_end with the step's duration given (tests: decisions without clocks).
void tuner_record(tuner_step *s, double seconds);
// Forgets every measurement and sets the mode as ALPHASPIN_THREAD_TUNER would
// ("1" or NULL: on, "0": off, "alternate"); for tests.
void tuner_reset(const char *mode);

#endif
