// The configuration of an alpha-SPIN run (`alphaspin run --config FILE.yaml`).
//
// YAML read with libyaml: nested mappings name the keys ("loss: {beta: 0.1}"
// is the key loss.beta), sequences are lists (eval.tasks, lora.targets).
// configs/alphaspin.yaml documents every key with its default and range.
// `--set key.sub=value` overrides a key after the file (lists: comma-separated).
// An unknown key, a value of the wrong type or out of range is an error that
// names the key, and the file and line when it comes from a file.
#ifndef AS_SPIN_CONFIG_H
#define AS_SPIN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "spin/loss.h"
#include "tensor/kernels.h"
#include "spin/window.h"
#include "train/optim.h"
#include "train/train.h"

#define SPIN_CONFIG_MAX_LIST 64

typedef struct spin_config {
    char *name;                 // variant name ("": the run folder's basename)
    // model
    char *model_path;           // GGUF or Hugging Face folder ("": the default model)
    char *tokenizer_path;       // GGUF whose tokenizer and chat template replace the model's ("": the model's)
    char *chat_template;        // "": from the model; else chatml | gemma | llama3
    // data
    char *train_path;           // JSONL in an SFT layout (train/sft.h)
    char *heldout_path;         // JSONL, or "": heldout_size examples split off train
    char *layout;               // auto | messages | prompt_response | question_answer
    char *generator;            // none | arith (the project's arithmetic tasks, written to RUN/data/)
    int64_t generator_items;    // training items the generator writes
    int32_t generator_level;    // 1..3
    char *generator_style;      // mixed | word | plain
    int64_t heldout_size;       // held-out examples for the per-iteration measurements
    // self-play
    int32_t iterations;         // T
    int64_t prompts;            // N prompts per iteration (0: every training example)
    int32_t tau;                // history length, SPIN_TAU_INF = inf
    spin_mixing mixing;
    char *sampler;              // mixture (the window's iterates) | token-geometric | sir | gflownet (src/mixture/losers.h)
    int32_t sir_k;              // sampler sir: candidates per prompt
    char *gfn_adapter;          // sampler gflownet: a trained sampler (PEFT folder); "": train one per iteration
    int32_t gfn_steps, gfn_rank, gfn_samples; // gflownet training: steps, adapter rank, answers per prompt and step
    int32_t gfn_save_every;     // ... its training state saved every this many steps (0: after the last only)
    float gfn_lr, gfn_reward_temp_end;        // learning rate, final reward temperature (annealed from 1)
    spin_loss_config loss;      // kind, beta, label_smoothing, delta, lambda, and the reference: its mode (key
                                // `reference`) and alpha (key `alpha`, the weight of pi_0), held here only
    // LoRA or full fine-tuning
    bool lora;
    train_lora_config lora_cfg; // rank, alpha, dropout, targets
    // optimisation
    optim_config optim;         // kind, lr, weight_decay, schedule, warmup_ratio, max_grad_norm
    int32_t epochs;
    int32_t batch_size;         // pairs per forward/backward (2 sequences each)
    int32_t grad_accum;         // micro-batches per optimizer step
    int32_t max_prompt_len;     // prompts longer than this (tokens) are not used
    int32_t max_answer_len;     // answers (winners and losers) cut to this many tokens
    bool checkpointing;         // activation checkpointing
    train_precision train_prec; // train.precision: of every training model's products (f32 default, or bf16)
    // generation of losers (and held-out answers)
    float gen_temperature;      // 0: greedy
    float gen_top_p;            // 1: off
    int32_t gen_top_k;          // 0: off
    int32_t max_new_tokens;
    int32_t gen_batch;
    kernel_precision gen_precision; // of the inference engine: q8 (default), f32 or bf16
    int32_t eval_precision;     // of eval.tasks: a kernel_precision, or -1 (default): gen_precision
    // evaluation
    char *eval_tasks[SPIN_CONFIG_MAX_LIST];
    int32_t n_eval_tasks;
    int64_t eval_limit;
    int32_t eval_shots;         // -1: each task's default
    // run
    uint64_t seed;
    int32_t threads;            // 0: all cores
    char *device;               // the backend everything runs on: cpu | cuda | cuda:N (tensor/backend.h, as_backend_open)
} spin_config;

// Defaults (documented in configs/alphaspin.yaml).
void spin_config_default(spin_config *c);
void spin_config_free(spin_config *c);
// Reads a YAML file over the current values.  -1 + as_error "<file>:<line>: <key>: <what>".
int spin_config_load(spin_config *c, const char *path);
// Parses YAML text (path names it in errors).  For the fuzz target and tests.
int spin_config_parse(spin_config *c, const char *text, size_t len, const char *path);
// One override "key.sub=value".  -1 + as_error "--set <key>: <what>".
int spin_config_set(spin_config *c, const char *assignment);
// Cross-key checks after all values are in (e.g. max_new_tokens <= max_answer_len).
int spin_config_check(const spin_config *c);
// The dotted names of every key, in the resolved YAML's order.
int spin_config_n_keys(void);
const char *spin_config_key(int i);
// The resolved configuration as YAML (every key), heap string.
char *spin_config_to_yaml(const spin_config *c);

#endif
