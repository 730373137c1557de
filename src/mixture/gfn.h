// GFlowNet fine-tuning of a LoRA sampler of the geometric mixture (Hu et al.
// 2023, "Amortizing intractable inference in large language models"; the
// alpha-SPIN paper's Appendix A; ../shared/docs/ALPHA_SPIN.md).
//
// States are answer prefixes s_0 (empty) .. s_m; the sampler q (base + its
// adapters) moves s_i -> s_{i+1} by a token or ends with END.  The log-reward
// of a prefix, the geometric mixture of the sequence s + END:
//   logR(s) = [(1-alpha) (log pi_t(s) + log pi_t(END|s)) + alpha (log pi_0(s) + log pi_0(END|s))] / T
// with T the reward temperature.  Each transition contributes
//   delta_i = logR(s_i) + log q(s_{i+1}|s_i) + log q(END|s_{i+1}) - logR(s_{i+1}) - log q(END|s_i)
// and the modified sub-trajectory balance loss of a batch is
//   L = sum over trajectories and 0 <= i < j <= m of lambda^(j-i-1) (sum_{k=i}^{j-1} delta_k)^2
//       / sum of the same weights,
// zero exactly when q(y) is proportional to R of every complete answer.
// Trajectories stop at END (nothing after termination enters the loss).
//
// The finite tree of mixture.h: an answer that reaches max_new_tokens tokens
// without END is truncated, a leaf whose "termination" is forced.  For that
// last state s_m the reward has no END factor and log q(END|s_m) is taken as 0
// (probability 1), which makes the loss's fixed point the target of
// mixture.h on that tree (tested by enumeration).
//
// Tricks of the reference code, all here: the reward temperature annealed
// linearly from reward_temp_start to reward_temp_end over
// reward_temp_horizon steps (with T != 1 the fixed point is p^(1/T)); a
// per-prompt replay buffer of the highest-reward answers, from which a
// prompt's trajectories are drawn with probability replay_prob; tempered
// exploration, on-policy answers drawn at a temperature ~ U[low, high] with
// probability explore_prob.
#ifndef AS_MIXTURE_GFN_H
#define AS_MIXTURE_GFN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "train/optim.h"
#include "train/train.h"

typedef struct gfn_config {
    float alpha;                  // weight of pi_0 in the reward
    int32_t max_new_tokens;       // answer tokens at most (END included)
    int32_t end_id;               // END
    int32_t steps;                // optimizer steps
    int32_t prompts_per_step;     // prompts per step (cycling through a shuffled order)
    int32_t samples_per_prompt;   // trajectories per prompt and step
    int32_t micro_batch;          // sequences per training forward/backward (a step's micro-batches: a fixed tree, train/loop.h)
    int32_t sample_batch;         // sequences per sampling forward call
    float reward_temp_start, reward_temp_end;
    int32_t reward_temp_horizon;  // steps of the linear annealing (0: reward_temp_end from the start)
    float subtb_lambda;           // lambda > 0
    int32_t buffer_size;          // answers kept per prompt (0: no replay)
    float replay_prob;
    float explore_prob, explore_temp_low, explore_temp_high;
    optim_config optim;
    uint64_t seed;
    kernel_precision precision;   // of the inference model's forward passes (sampling, rewards; default f32)
} gfn_config;

// The reference code's settings where they apply (gfn-lm-tuning,
// next_sentence/configs/task/openwebtext_gpt2.yaml): lambda 1, reward
// temperature 1.0 -> 0.8 over 750 steps, buffer 50 with replay probability
// 0.25, exploration probability 0.666 at temperatures in [0.5, 2.0], lr 1e-4
// (AdamW here, clipping 1).  Ours for a CPU: alpha 0.1, 128 new tokens,
// 2 prompts x 8 answers per step (the reference: 20), micro-batch 4.
void gfn_config_default(gfn_config *c);
int gfn_config_check(const gfn_config *c, int32_t n_vocab);
// Every setting as "key=value" lines (floats to the last bit; the caller
// frees): what a resumed run must share with the one that saved the state.
char *gfn_config_text(const gfn_config *c);

// One trajectory: prompt, then m tokens that are not END; truncated when it
// stopped at max_new_tokens without END.
typedef struct gfn_traj {
    const int32_t *prompt;
    int64_t n_prompt;
    const int32_t *ids;      // (m)
    int32_t m;
    bool truncated;
    const double *logr;      // (m + 1) untempered log-rewards of s_0 .. s_m (gfn_prefix_rewards)
    bool replayed;           // drawn from the replay buffer (gfn_train)
} gfn_traj;

// The sub-trajectory balance sum of one trajectory with m transitions:
// returns sum_{0<=i<j<=m} lambda^(j-i-1) S_ij^2 (S_ij = delta_i + .. + delta_{j-1}),
// sets *weight = sum of the lambda^(j-i-1), and ADDS its gradient with respect
// to logpf[k] (k < m) to g_pf and with respect to logpt[i] (i <= m) to g_pt.
// logr (m + 1) is already divided by the temperature.
double gfn_subtb(int32_t m, const double *logr, const double *logpf, const double *logpt, double lambda, double *weight, double *g_pf,
                 double *g_pt);

// Untempered log-rewards of every prefix of each trajectory (fills a new
// array of m + 1 per trajectory into logr_out[i]), from the inference model at
// precision prec with pi_t's and pi_0's adapters (NULL: the base).  Restores
// the model's adapters.
int gfn_prefix_rewards(model *m, kernel_precision prec, const model_lora *lora_t, const model_lora *lora_0, float alpha, int32_t end_id,
                       const gfn_traj *t, int64_t n, double **logr_out);

// The batch loss for the sampler in tm (adapters attached and on); with
// backward, ACCUMULATES its gradient into the adapters' gradients.  Runs
// micro_batch sequences per forward.
int gfn_loss(train_model *tm, const gfn_traj *t, int64_t n, int32_t end_id, double reward_temp, double lambda, int32_t micro_batch,
             bool backward, double *loss);

typedef struct gfn_step_stats {
    int64_t step;              // 1-based
    double loss, grad_norm, lr;
    double reward_temp, explore_temp;
    double mean_log_reward;    // untempered log R of the batch's complete answers
    double mean_len;           // answer tokens
    int64_t n_replayed;        // trajectories of this step from the buffer
    int64_t buffer_total;      // answers in all buffers
    double elapsed_s, eta_s;   // since training began; remaining (train/loop.h)
} gfn_step_stats;
typedef void (*gfn_step_fn)(void *user, const gfn_step_stats *s);

// Saving and resuming.  The state (ck->path) is train/checkpoint.h's training
// state, whose data-order stream is gfn's own (prompt order, replay,
// exploration and sampling seeds), with beside it under the same checksum: the
// prompt order and the position in it, every replay buffer (answers and their
// untempered log-rewards, slot by slot), and `options`.  Saved after every
// `every` steps and after the last; a resumed run continues bitwise as the
// uninterrupted one (for a thread count).
typedef struct gfn_checkpoint {
    const char *path;
    int64_t every;       // steps between saves (0: only after the last step)
    bool resume;         // continue from path, which must exist
    // What the run depends on beyond gfn_config_text (model, data, adapters),
    // as "key=value" lines; the state keeps both, and a resume whose lines
    // differ is refused naming the first that does.
    const char *options;
    // Before the first step this process runs (first_step steps are done), once
    // the state is read back: where the caller opens (or cuts back) its log.
    int (*started)(void *user, int64_t first_step);
    // The outputs the state goes with, written before it (may be NULL).
    int (*save)(void *user, int64_t step);
    // After the state is written (may be NULL): the resume tests' kill switch.
    void (*saved)(void *user, int64_t step);
    void *user;
} gfn_checkpoint;

// Trains the adapters attached to tm (the sampler; tm's base must be the
// same weights as m's) to sample the geometric mixture of pi_t (m with
// lora_t) and pi_0 (m with lora_0) for these prompts, c->steps optimizer
// steps of the training loop (train/loop.h), saving and resuming as ck says
// (NULL: no state).  on_step (may be NULL) after every step.
int gfn_train(model *m, train_model *tm, const model_lora *lora_t, const model_lora *lora_0, const gfn_config *c,
              const int32_t *const *prompt, const int64_t *n_prompt, int64_t n_prompts, const gfn_checkpoint *ck, gfn_step_fn on_step,
              void *user);

#endif
