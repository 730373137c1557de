// What the loop of run.c and its phases (phase_*.c) share: the state of a run
// and one function per phase.  Not for other modules: they call spin_run (run.h).
//
// Iteration k (t = k - 1) calls, in this order (run.c, run_iteration):
//   spin_iterate_policy      pi_t into the training model                        iterates.c
//   spin_phase_losers        prompts drawn, losers generated                     phase_losers.c (losers_geometric.c)
//   spin_phase_references    log pi_t, log pi_0 of winners and losers; pair files phase_references.c
//   spin_phase_train         pi_t -> pi_k with the preference loss               phase_train.c (metrics.c)
//   spin_phase_checkpoint    pi_k saved and read back                            iterates.c
//   spin_phase_measure       held-out measurements                               phase_measure.c
//   spin_phase_evaluate      benchmark tasks (eval.json)                         phase_evaluate.c
//   spin_phase_summary       summary.json, which marks the iteration complete    phase_summary.c
// Setup (models, data, run folder) is run_setup.c; scoring sequences score.c.
//
// Reproducibility: every random stream of iteration k is seeded from
// (seed, k, purpose) by spin_derive_seed, never carried over from an earlier
// iteration, and everything an iteration consumes from earlier ones (the
// iterates' adapters or weights, its own pairs) is read back from the run
// folder, so a run resumed after a kill computes on exactly the bytes an
// uninterrupted run does.
#ifndef AS_SPIN_RUN_INTERNAL_H
#define AS_SPIN_RUN_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "generate/sampler.h"
#include "model/model.h"
#include "spin/run.h"
#include "train/sft.h"

#define SPIN_PATH_LEN 4096
// RUN/iter_k's training states while the iteration is in progress (removed when it completes).
#define SPIN_TRAIN_STATE "train_state.safetensors"
#define SPIN_GFN_STATE "gfn_state.safetensors" // sampler gflownet's training (losers_geometric.c)

// Purposes of the derived seeds.
enum { SPIN_SALT_PROMPTS = 1, SPIN_SALT_GENERATE, SPIN_SALT_ORDER, SPIN_SALT_DROPOUT, SPIN_SALT_LORA, SPIN_SALT_HELDOUT, SPIN_SALT_SPLIT };
uint64_t spin_derive_seed(uint64_t seed, uint64_t k, uint64_t salt, uint64_t i);

typedef struct spin_ctx {
    const spin_config *c;
    const spin_run_options *o;
    const char *run;
    char base_gguf[SPIN_PATH_LEN]; // pi_0: a GGUF file or a Hugging Face folder
    bool quiet;
    int threads;
    model *inf;               // inference engine on the base (LoRA: adapters switched per iterate)
    model *gen_full;          // full fine-tuning: the inference model of gen_full_k
    int32_t gen_full_k;
    tokenizer *tok;
    gguf_file *tok_file;      // model.tokenizer, when given
    chat_template tpl;
    train_model *tm;          // the policy: LoRA over the shared base, or all weights
    int32_t tm_iterate;       // full fine-tuning: the iterate whose weights tm holds
    train_model *tm0;         // full fine-tuning: pi_0, frozen
    train_lora *lora_init;    // LoRA: the adapters training starts from at iteration 1 (B = 0: pi_0)
    train_lora **iterates;    // LoRA: adapters of pi_1 .. pi_T as read back from RUN/iter_k/adapter
    sft_data *train, *held;   // held may alias train (split)
    int64_t *pool, n_pool;    // training examples usable as prompts
    int64_t *held_idx, n_held;
    int32_t micro;            // sequences per forward when only scoring
} spin_ctx;

// What the phases hand to the summary.
typedef struct spin_step_metrics {
    int64_t step;
    double epoch, loss, grad_norm, lr;
    spin_loss_metrics m;
} spin_step_metrics;
typedef struct spin_heldout {
    double nll_per_token, kl_to_base, len_mean, len_std, task_accuracy; // task_accuracy NAN when not applicable
} spin_heldout;
typedef struct spin_phase_times { double generate, references, train, evaluate, checkpoint; } spin_phase_times;

// ---- helpers (iterates.c) ----

bool spin_file_exists(const char *path);
// Index of the last assistant turn of e, the winner; the turns before it are the prompt.
int32_t spin_prompt_turns(const sft_example *e);
// Tells o->on_phase (if any) that `phase` of iteration k is done and its files are written.
void spin_phase_done(spin_ctx *x, int32_t k, const char *phase);
// The progress line on stderr (unless quiet), with the ETA.
void spin_progress(const spin_ctx *x, int32_t k, const char *phase, int64_t done, int64_t total, double t0, const char *extra);
// The inference model answering as iterate j (LoRA: the base with j's adapters; full: RUN/iter_j/model.gguf).
model *spin_iterate_model(spin_ctx *x, int32_t j);
// Answers of iterate j to the prompts of examples ex[0..n) of d; request i is
// seeded by (seed, seed_k, salt, ex[i]), so an answer does not depend on its batch.
// n_tokens (may be NULL) receives the answers' token counts.
int spin_generate_answers(spin_ctx *x, int32_t k, const char *phase, int32_t j, const sft_data *d, const int64_t *ex, int64_t n,
                          const sampler_params *sp, uint64_t seed_k, uint64_t salt, char **texts, int32_t *n_tokens);
// Makes the training model pi_t at the start of iteration t + 1.
int spin_iterate_policy(spin_ctx *x, int32_t t);

// ---- scoring (score.c) ----

// Sequences padded into one train_batch (loss mask: the answers).
typedef struct spin_seq_batch {
    int32_t *tokens, *len;
    uint8_t *mask;
    train_batch b;
} spin_seq_batch;
void spin_seq_batch_build(spin_seq_batch *sb, spin_seq *const *seqs, int32_t n);
void spin_seq_batch_free(spin_seq_batch *sb);
// log pi(seq) of n sequences in micro-batches, dropout off; a progress line when phase is not NULL.
int spin_score_seqs(train_model *m, spin_seq *const *seqs, int64_t n, int32_t micro, float *out, const spin_ctx *x, int32_t k,
                    const char *phase);

// ---- the phases ----

int spin_phase_losers(spin_ctx *x, int32_t k, spin_pairs *ps);                       // phase_losers.c
int spin_losers_geometric(spin_ctx *x, int32_t k, const int64_t *ex, int64_t n, spin_pairs *ps); // losers_geometric.c
int spin_phase_references(spin_ctx *x, int32_t k, spin_pairs *ps, const char *spin_path, const char *trl_path);
int spin_phase_train(spin_ctx *x, int32_t k, spin_pairs *ps, spin_step_metrics *mean);
int spin_phase_checkpoint(spin_ctx *x, int32_t k);                                   // iterates.c
int spin_phase_measure(spin_ctx *x, int32_t k, spin_heldout *h);
int spin_phase_evaluate(spin_ctx *x, int32_t k, cJSON *summary_eval);
int spin_phase_summary(spin_ctx *x, int32_t k, const spin_step_metrics *train, const spin_heldout *h, cJSON *eval,
                       const spin_phase_times *pt, double total);

// ---- metrics.jsonl (metrics.c) ----

int spin_metrics_write(const char *path, const spin_step_metrics *s, int64_t n);
// The first n lines of a metrics.jsonl written by spin_metrics_write.
int spin_metrics_read(const char *path, spin_step_metrics *s, int64_t n);
// TRL-style summary: means of steps [from, to) (the last epoch); the step count, epochs and final lr.
void spin_metrics_mean(const spin_step_metrics *s, int64_t from, int64_t to, int32_t epochs, spin_step_metrics *mean);

// ---- setup (run_setup.c) ----

int spin_setup_models(spin_ctx *x);
int spin_setup_data(spin_ctx *x);
// RUN/config.yaml: written first; an existing one must be this configuration.
int spin_setup_config(const char *run, const spin_config *c);
void spin_ctx_free(spin_ctx *x);

#endif
