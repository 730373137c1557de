// Next-token sampling, with llama.cpp's default chain and semantics:
//
//   penalties -> top_k -> top_p -> min_p -> temperature -> draw
//
//   repeat penalty: every distinct token among the last repeat_last_n tokens
//       of the sequence (prompt included, as llama-cli feeds it) has its logit
//       divided by the penalty if positive, multiplied if negative (CTRL's
//       rule with llama.cpp's fix for negative logits); once per token,
//       however often it occurred.
//   top_k: keep the k highest logits.
//   top_p: softmax of what is left (temperature 1); keep the smallest prefix,
//       in order of decreasing probability, whose mass is >= p (at least one).
//   min_p: keep tokens with p_i >= min_p * p_max, i.e. logit >= max + log(min_p).
//   temperature: logits / T, then softmax and one uniform draw.
//   temperature == 0 is greedy: the argmax of the penalised logits, ties to
//   the lowest id (the filters cannot change the argmax, so they are skipped).
//
// Ties in the ordering are broken by the lower token id, so the result is a
// function of (logits, history, params, RNG state) alone.  Each sampler has its
// own RNG seeded from params.seed and consumes exactly one uniform per sampled
// (non-greedy) token, so a request's output does not depend on what else is in
// the batch.
#ifndef AS_SAMPLER_H
#define AS_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/rng.h"

typedef struct sampler_params {
    float temperature;      // 0: greedy
    int32_t top_k;          // 0: off
    float top_p;            // 1: off
    float min_p;            // 0: off
    float repeat_penalty;   // 1: off
    int32_t repeat_last_n;  // tokens of history the penalty sees; 0: off, -1: all
    uint64_t seed;
} sampler_params;

// llama.cpp's defaults: T 0.8, top_k 40, top_p 0.95, min_p 0.05, no repeat penalty (window 64), seed 42.
sampler_params sampler_params_default(void);
// Greedy decoding, no penalty.
sampler_params sampler_params_greedy(void);
// -1 + as_error naming the bad field (negative temperature, top_p outside (0, 1], ...).
int sampler_params_check(const sampler_params *p);

typedef struct sampler_cand {
    int32_t id;
    float logit;
    float p;    // probability in the final distribution (after sampler_distribution)
} sampler_cand;

typedef struct sampler {
    sampler_params params;
    as_rng rng;
    int32_t n_vocab;
    sampler_cand *cand;     // (n_vocab) scratch; the first n_cand are the candidates
    int64_t n_cand;
    bool sorted;            // cand[0..n_cand) in decreasing logit order (ties: lower id first)
    uint8_t *penalised;     // (n_vocab) marks, cleared after each use
} sampler;

int sampler_init(sampler *s, const sampler_params *p, int32_t n_vocab);
void sampler_free(sampler *s);
// Restart with new params (and their seed), keeping the scratch buffers.
int sampler_reset(sampler *s, const sampler_params *p);

// Applies the chain up to (not including) the draw.  On return s->cand[0..n)
// (n returned) are the candidates the draw is made from, their .p summing to 1
// (greedy: one candidate).  `logits` is not modified.
// `history` holds the sequence so far, oldest first.
int64_t sampler_distribution(sampler *s, const float *logits, const int32_t *history, int64_t n_history);
// sampler_distribution followed by the draw: the next token.
int32_t sampler_sample(sampler *s, const float *logits, const int32_t *history, int64_t n_history);

// log softmax(logits)[token] in double precision: the token's log-probability
// under the model's own (temperature 1, unfiltered) distribution.
double sampler_logprob(const float *logits, int32_t n_vocab, int32_t token);
// Argmax, ties to the lowest id.
int32_t sampler_argmax(const float *logits, int32_t n_vocab);

#endif
