// The opponents of an iteration: the history window H_t and how the pairs are
// spread over its iterates (../shared/docs/ALPHA_SPIN.md, regularisation 2).
//
// Iteration k (k = 1..T) trains pi_k from pi_t, t = k - 1.  Its losers come
// from the iterates H_t = { max(0, t - tau + 1), ..., t } (tau = infinity:
// every iterate from pi_0 on, fictitious play; tau = 1: SPIN as written).
//
// Mixing modes, with N prompts per iteration:
//   sample  N pairs in all; iterate j of the window answers an equal share
//           floor(N / |H_t|) of the prompts, and the remainder N mod |H_t|
//           goes one each to the NEWEST iterates (t, t-1, ...), so the
//           current iterate is never short-changed.  Loser y' of a prompt is
//           thus drawn from the uniform mixture (1/|H_t|) sum_j pi_j up to
//           that rounding (the paper's scheme).
//   concat  the official SPIN code's: every iterate of the window brings the
//           N pairs it generated when it was current (iteration j + 1 stored
//           them), so |H_t| * N pairs; only pi_t generates anew.
#ifndef AS_SPIN_WINDOW_H
#define AS_SPIN_WINDOW_H

#include <stdint.h>

typedef enum spin_mixing { SPIN_MIX_SAMPLE = 0, SPIN_MIX_CONCAT = 1 } spin_mixing;
const char *spin_mixing_name(spin_mixing m); // "sample", "concat"
int spin_mixing_parse(const char *s, spin_mixing *out);

#define SPIN_TAU_INF 0 // tau value meaning infinity

// First iterate of H_t (the last is t).  tau >= 1 or SPIN_TAU_INF.
int32_t spin_window_first(int32_t t, int32_t tau);
// Pairs each iterate of H_t contributes: counts[j - first] for iterate j,
// first = spin_window_first(t, tau), t - first + 1 entries.  Returns the total.
int64_t spin_window_counts(spin_mixing mix, int32_t t, int32_t tau, int64_t n, int64_t *counts);
// Pairs that iterate j of H_t must generate in this iteration (sample: its
// share; concat: N for j = t, 0 for older iterates, whose pairs are reused).
int64_t spin_window_fresh(spin_mixing mix, int32_t t, int32_t tau, int64_t n, int32_t j);

#endif
