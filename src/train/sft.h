// Supervised fine-tuning data: the SFT layouts of ../shared/data/README.md
// read into conversations, and conversations turned into token sequences with
// a loss mask through the model's chat template.
//
// Layouts (JSONL, one example per line; blank lines skipped):
//   {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}   (UltraChat 200k;
//        an extra "prompt" field is ignored)
//   {"prompt": str, "response": str}
//   {"question": str, "answer": str}
// The last two become one user turn and one assistant turn.
#ifndef AS_TRAIN_SFT_H
#define AS_TRAIN_SFT_H

#include <stdint.h>

#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

typedef struct sft_example {
    chat_message *msgs;   // roles and contents (owned)
    size_t n_msgs;
} sft_example;

typedef struct sft_data {
    sft_example *ex;
    int64_t n;
} sft_data;

// -1 + as_error "<path>:<line>: ..." for a line that is not one of the
// layouts (bad JSON, missing field, unknown role, no assistant turn).
int sft_data_load(sft_data **out, const char *path);
void sft_data_free(sft_data *d);

// Tokens of the rendered conversation and the loss mask: 1 on every
// assistant turn's tokens and the end-of-turn token that closes it (what the
// model generates), 0 on everything else (system, user, template text).
// Sequences longer than max_len (> 0) are cut to max_len.  *tokens and *mask
// are heap arrays of *len entries.  -1 + as_error when the template cannot
// render the conversation or the answer does not end in an end-of-turn token.
int sft_encode(const tokenizer *tok, const chat_template *tpl, const sft_example *ex, int32_t max_len, int32_t **tokens,
               uint8_t **mask, int32_t *len);

// ---- the training run (what `alphaspin sft` runs) ----

#include "train/optim.h"
#include "train/train.h"

typedef struct sft_config {
    const char *model_path;     // GGUF file or Hugging Face folder (tokenizer and chat template come from it)
    const char *data_path;      // JSONL in one of the layouts above
    const char *out_dir;        // adapter (PEFT folder) or model (model.gguf), log.jsonl, train_state.safetensors
    const char *chat_template;  // family override ("chatml", "gemma", "llama3") or NULL
    bool lora;                  // LoRA (default) or full fine-tuning
    train_lora_config lora_cfg; // default rank 16, alpha 32, dropout 0.05, all targets
    optim_config optim;         // default AdamW lr 2e-4, linear schedule, 10% warm-up, clip 1.0
    int32_t epochs;             // passes over the training split (default 1)
    int64_t max_steps;          // stop after this many optimizer steps (0: all epochs)
    int32_t batch_size;         // sequences per optimizer step (default 8)
    int32_t micro_batch;        // sequences per forward/backward; gradients accumulate (default 4)
    int32_t max_len;            // tokens per sequence, longer ones cut (default 1024)
    double eval_fraction;       // held-out share for the evaluation loss (default 0.05)
    int32_t eval_every;         // optimizer steps between evaluations (0: only at the end)
    uint64_t seed;              // data split and order, adapter init, dropout
    int threads;                // 0: kernel_get_threads()
    const char *device;         // NULL or "cpu": the CPU; "cuda[:N]": the backend to train on (tensor/backend.h)
    bool checkpointing;         // activation checkpointing
    train_precision precision;  // of the matrix products: f32 (default) or bf16 (train.h)
    bool quiet;                 // no progress line on stderr
    int64_t save_every;         // optimizer steps between checkpoints of the outputs and training state (0: only at the end)
    bool resume;                // continue from out_dir/train_state.safetensors (same data and options): bitwise
                                // the weights an uninterrupted run gives
    void (*on_saved)(void *user, int64_t step); // after the outputs and training state of a step are written (may be
    void *user;                                 // NULL; the resume tests' kill switch, src/cli/cmd_sft.c)
} sft_config;

typedef struct sft_result {
    int64_t steps;
    double first_loss, last_loss; // mean token NLL of the first and last optimizer step
    double eval_loss;             // mean token NLL on the held-out split (NAN without one)
    int64_t train_examples, eval_examples, tokens_trained;
} sft_result;

void sft_config_default(sft_config *c);
// Runs supervised fine-tuning: loss = mean negative log-likelihood of the
// answer tokens of each optimizer batch.  Writes a progress line (step, loss,
// lr, tokens/s, ETA) to stderr, one JSON line of metrics per step to
// out_dir/log.jsonl, and at the end the adapters (PEFT layout) or the model
// (out_dir/model.gguf, F32) plus the training state (also every save_every
// steps; with resume the run continues from that state, the log keeping the
// lines of the steps it holds).
int sft_train(const sft_config *c, sft_result *res);

#endif
