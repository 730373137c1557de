// Samplers of the sequence-level geometric mixture
//
//   p(y|x) = pi_t(y|x)^(1-alpha) pi_0(y|x)^alpha / Z(x)
//
// where pi_t and pi_0 share one base model and differ by LoRA adapters
// (model_set_lora; NULL adapters: the base itself).  See
// ../shared/docs/ALPHA_SPIN.md, Appendix A.
//
// The sample space.  An answer is drawn token by token for at most
// max_new_tokens tokens: it ends with an end token (which belongs to it) or is
// truncated after max_new_tokens tokens without one.  log pi(y) sums the
// log-probabilities of the tokens present (as the alpha-SPIN loss does), so
// the target on this finite tree is ptilde(y) = exp((1-alpha) log pi_t(y) +
// alpha log pi_0(y)), normalised over all its leaves.  Every sampler here
// targets that same distribution, which a test enumerates exactly.
//
// token-geometric: at each prefix s, q(v|s) = pi_t(v|s)^(1-alpha) pi_0(v|s)^alpha / Z_s.
//     It is NOT the sequence-level mixture: q(y) = ptilde(y) / prod_s Z_s and
//     the product of the token normalisers depends on y.
// sir: K candidates from q; weight w(y) = ptilde(y) / q(y) = prod over the
//     candidate's steps of Z_s (the end step included); one resampled in
//     proportion to w.  Exact as K grows; the effective sample size
//     (sum w)^2 / sum w^2 says how far from it a prompt is.
// policy: plain sampling from one adapter setting at a temperature (the
//     GFlowNet sampler is the base plus its own adapters, gfn.h).
//
// All samplers draw at temperature 1 from the full vocabulary (no top-k/p):
// the mixture is defined on the models' own distributions.  Each answer has
// its own RNG stream (seed, answer index), so results do not depend on the
// batch size, nor on how a job's answers are split into calls (first_index).
// Two forward passes per step for the mixtures (one per adapter setting, each
// with its own KV cache), one for a policy.
#ifndef AS_MIXTURE_H
#define AS_MIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

typedef struct mixture_config {
    kernel_precision precision; // of the forward passes (their KV caches; default f32)
    float alpha;              // weight of pi_0, in [0, 1]
    int32_t max_new_tokens;   // answer tokens at most (>= 1)
    const int32_t *end_ids;   // tokens that end an answer (>= 1 of them)
    int32_t n_end_ids;
    int32_t batch_size;       // sequences per forward call (>= 1)
    uint64_t seed;
    int64_t first_index;      // the stream of answer i is that of answer first_index + i of the whole job (0;
                              // a share of a job split over processes passes its offset: the same answers)
} mixture_config;

typedef struct mixture_sample {
    int32_t *ids;     // answer tokens, the end token included when one ended it
    int64_t n_ids;
    bool ended;       // false: truncated at max_new_tokens
    double log_w;     // sum of log Z_s over the steps = log ptilde(y) - log q(y) (mixtures; 0 for a policy)
    double logq;      // log q(y) under the distribution it was drawn from
    double logp_t;    // log pi_t(y) (mixtures; 0 for a policy)
    double logp_0;    // log pi_0(y)
} mixture_sample;
void mixture_sample_free(mixture_sample *s);

// -1 + as_error naming the bad field.
int mixture_config_check(const mixture_config *c, int32_t n_vocab);

// n answers from the token-level geometric mixture, answer i continuing
// prompt[i] (n_prompt[i] >= 1 tokens; equal prompt pointers next to each
// other are prefilled once).  The model's adapters are restored on return.
int mixture_sample_token(model *m, const model_lora *lora_t, const model_lora *lora_0, const mixture_config *c,
                         const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out);

// Importance resampling: for each of the n prompts, K candidates from the
// token-level mixture and one of them kept with probability w_j / sum w.
// ess[i] (may be NULL) receives prompt i's effective sample size, in [1, K].
int mixture_sample_sir(model *m, const model_lora *lora_t, const model_lora *lora_0, const mixture_config *c, int32_t K,
                       const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out, double *ess);

// Plain sampling from base + lora (NULL: the base) with logits / temperature;
// alpha is not used.
int mixture_sample_policy(model *m, const model_lora *lora, float temperature, const mixture_config *c,
                          const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out);

// Effective sample size (sum w)^2 / sum w^2 of log-weights (n >= 1).
double mixture_ess(const double *log_w, int64_t n);

#endif
