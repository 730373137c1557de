// Losers for alpha-SPIN drawn from the geometric mixture pi_t^(1-alpha) pi_0^alpha
// (the loss's reference), the seam `alphaspin run` calls for
// sampler: token-geometric | sir | gflownet (sampler: mixture, the tau-window
// arithmetic mixture, stays in src/spin).  pi_t is the base with the
// iterate's adapters, pi_0 the base.  The samplers draw at temperature 1 from
// the full vocabulary (generation.temperature/top_p/top_k do not apply: the
// mixture is defined on the models' own distributions).
#ifndef AS_MIXTURE_LOSERS_H
#define AS_MIXTURE_LOSERS_H

#include <stdint.h>

#include "mixture/gfn.h"
#include "model/model.h"
#include "train/train.h"

typedef enum mixture_sampler_kind {
    MIXTURE_SAMPLER_TOKEN = 0, // token-geometric: the (biased) token-level mixture
    MIXTURE_SAMPLER_SIR,       // sir: importance resampling of K token-level candidates
    MIXTURE_SAMPLER_GFLOWNET,  // gflownet: a LoRA sampler trained with gfn_train (or read from a PEFT folder)
} mixture_sampler_kind;

// "token-geometric" | "sir" | "gflownet" -> kind; -1 for another name.
int mixture_sampler_from_name(const char *name);

typedef struct mixture_losers_config {
    mixture_sampler_kind kind;
    kernel_precision precision; // of the inference model's forward passes (sampling, rewards)
    float alpha;
    int32_t max_new_tokens;
    int32_t end_id;           // the end-of-turn token (stripped from the answers)
    int32_t batch;            // sequences per forward
    uint64_t seed;
    int32_t sir_k;            // sir: candidates per prompt
    const char *gfn_adapter;  // gflownet: a trained sampler (PEFT folder); NULL or "": train one now
    gfn_config gfn;           // gflownet, when training (precision, alpha, max_new_tokens, end_id, seed are overwritten)
    train_lora_config gfn_lora; // gflownet: the new sampler's adapters
    const char *gfn_save_dir; // gflownet: where a sampler trained now is written (PEFT; NULL: not saved)
    const gfn_checkpoint *gfn_ck; // gflownet trained now: its training state, saved and resumed (gfn.h; NULL: none)
    gfn_step_fn gfn_on_step;  // ... after each of its steps (may be NULL), with gfn_user
    void *gfn_user;
} mixture_losers_config;

typedef struct mixture_losers_stats {
    double seconds;
    double ess_mean, ess_min;   // sir (0 otherwise)
    double gfn_train_seconds;   // gflownet trained now
    double gfn_last_loss;
    double mean_len;            // answer tokens (END excluded)
} mixture_losers_stats;

// One answer per prompt: ids[i] (heap, n_ids[i] tokens, the end token
// removed).  tm (LoRA, may be NULL unless a gflownet is trained) lends its
// base to train the sampler; its own adapters are put back.  Under mpirun
// (dist/dist.h) every process prepares the sampler from all the prompts (a
// GFlowNet's training shares its steps: gfn.h), draws a contiguous share of
// the answers, and every process gets every answer: each answer has its own
// stream, and at q8 and bf16 a token's logits do not depend on the batch, so
// they are one process's answers.
int mixture_losers(model *inf, train_model *tm, const model_lora *lora_t, const mixture_losers_config *c, const int32_t *const *prompt,
                   const int64_t *n_prompt, int64_t n, int32_t **ids, int64_t *n_ids, mixture_losers_stats *st);

#endif
