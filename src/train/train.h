// The training engine: fp32 master weights of a llama/gemma model, a batched
// forward pass that returns per-sequence answer log-probabilities, the exact
// backward pass for any upstream gradient on them, LoRA adapters, and the
// bridge to the optimizers of optim.h.
//
// Layout (llm.c): parameters, gradients and activations each live in ONE
// contiguous buffer with a table of named pointers into it; the optimizer sees
// the trainable buffer as one flat array.
//
// The primitive every loss is built on (SFT, DPO/SPIN, IPO...):
//   logp_sum[b] = sum over scored tokens t of sequence b of log p(tok[t] | tok[<t])
// where the scored tokens are the answer (positions prompt_len[b] .. len[b]-1;
// prompt and padding masked out) or those set in an explicit loss mask.  A loss
// L(logp_sum) is trained by passing dL/dlogp_sum to train_backward; the mean
// per-token log-probability is logp_sum[b] / n_scored[b].
#ifndef AS_TRAIN_H
#define AS_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "tensor/backend.h"
#include "train/optim.h"
#include "util/rng.h"

// ---- parameters ----

#define TRAIN_N_PARAMS 12
typedef struct train_params {
    float *tok_embd;    // (V, C)
    float *output;      // (V, C); NULL when tied (the output matrix is tok_embd)
    float *output_norm; // (C)
    float *attn_norm;   // (L, C)
    float *wq;          // (L, H*d, C)     GGUF row order (llama: rotary pairs adjacent)
    float *wk;          // (L, Hkv*d, C)
    float *wv;          // (L, Hkv*d, C)
    float *wo;          // (L, C, H*d)
    float *ffn_norm;    // (L, C)
    float *w_gate;      // (L, F, C)
    float *w_up;        // (L, F, C)
    float *w_down;      // (L, C, F)
} train_params;

// Names of the tensors of train_params, in order ("tok_embd", ...).
extern const char *const TRAIN_PARAM_NAMES[TRAIN_N_PARAMS];

// ---- LoRA ----

typedef enum train_lora_target {
    TRAIN_LORA_Q = 0, TRAIN_LORA_K, TRAIN_LORA_V, TRAIN_LORA_O, TRAIN_LORA_GATE, TRAIN_LORA_UP, TRAIN_LORA_DOWN,
    TRAIN_LORA_N_TARGETS
} train_lora_target;
extern const char *const TRAIN_LORA_TARGET_NAMES[TRAIN_LORA_N_TARGETS]; // "q", "k", "v", "o", "gate", "up", "down"

typedef struct train_lora_config {
    int32_t rank;       // r >= 1
    float alpha;        // scaling = alpha / r (PEFT's lora_alpha)
    float dropout;      // on the adapter input, in [0, 1)
    uint32_t targets;   // bit (1 << train_lora_target); 0 = all seven
    uint64_t seed;      // initialisation of A and the dropout stream
} train_lora_config;
// The adapters alphaspin's fine-tuning uses unless told otherwise (SFT and
// SPIN alike, as the SPIN recipe): rank 16, alpha 32, dropout 0.05, all targets.
#define TRAIN_LORA_CONFIG_DEFAULT ((train_lora_config){.rank = 16, .alpha = 32.0f, .dropout = 0.05f, .targets = 0, .seed = 0})

// W x + (alpha / r) B A drop(x) for each targeted matrix W (out x in).
typedef struct train_lora {
    train_lora_config cfg;
    float scale;                          // alpha / r
    int64_t in[TRAIN_LORA_N_TARGETS];     // input features per target
    int64_t out[TRAIN_LORA_N_TARGETS];    // output features per target
    float *a[TRAIN_LORA_N_TARGETS];       // (L, r, in); NULL when not targeted
    float *b[TRAIN_LORA_N_TARGETS];       // (L, out, r)
    float *ga[TRAIN_LORA_N_TARGETS];      // gradients, same shapes
    float *gb[TRAIN_LORA_N_TARGETS];
    float *memory, *grad_memory;          // A, B of every target, in target order (be's buf_alloc)
    const as_backend *be;                 // whose buffers they are: train_lora_new the CPU's; train_lora_set moves them to the model's
    size_t n;                             // floats in memory
    int32_t n_layer;
    uint64_t dropout_seed;                // seeds the model's dropout stream when attached
} train_lora;

// ---- the model ----

// Arithmetic of the matrix products (the master weights, gradients and
// optimizer state stay fp32 either way).
typedef enum train_precision {
    TRAIN_PRECISION_F32 = 0,  // fp32 products: exact gradients, bitwise reproducible for a thread count
    TRAIN_PRECISION_BF16 = 1, // operands rounded to bf16, fp32 accumulation, on AMX-BF16 tiles (AVX-512 BF16's
                              // VDPBF16PS, or fp32 fmas where absent: gemm.h); also reproducible for a thread count
} train_precision;
// "f32", "bf16": the spelling of train.precision, `sft --precision` and
// ALPHASPIN_TRAIN_PRECISION.  parse: 0, or -1 for any other string.
const char *train_precision_name(train_precision p);
int train_precision_parse(const char *s, train_precision *p);

struct train_acts;

typedef struct train_model {
    model_config cfg;
    train_params params;                  // fp32 master weights
    size_t param_sizes[TRAIN_N_PARAMS];
    size_t n_params;
    float *params_memory;                 // be's buf_alloc memory, as grads_memory
    float *rope_freqs;                    // (n_rot/2) Llama-3 divisors of the RoPE frequencies, or NULL (fixed, not trained)
    train_params grads;                   // full fine-tuning only (allocated on first need)
    float *grads_memory;
    train_lora *lora;                     // NULL without adapters; with them the base is frozen
    bool adapters_on;                     // apply the adapters in the forward pass (default true)
    bool training;                        // dropout active (default true)
    bool checkpointing;                   // keep one layer of activations, recompute in backward (default false)
    as_rng rng;                           // dropout stream
    int n_threads;
    train_precision precision;            // default TRAIN_PRECISION_F32
    optim_segment segs[2 * TRAIN_LORA_N_TARGETS]; // table returned by train_trainable
    int n_segs;
    struct train_acts *acts;              // activations of the last forward (train.c)
    const as_backend *be;                 // every piece of arithmetic runs here (default &as_backend_cpu)
} train_model;

// A batch of B sequences padded to n_ctx tokens.
typedef struct train_batch {
    int32_t n_seq;                // B
    int32_t n_ctx;                // T: row stride of tokens and loss_mask
    const int32_t *tokens;        // (B, T); entries past len[b] are ignored
    const int32_t *len;           // (B) tokens of each sequence, 1 .. T
    const int32_t *prompt_len;    // (B) the answer is tokens prompt_len[b] .. len[b]-1 (1 <= prompt_len <= len)
    const uint8_t *loss_mask;     // (B, T) or NULL: when given, token t of sequence b is scored iff
                                  // mask[b, t] != 0 (t >= 1, t < len); prompt_len is then ignored
    const int32_t *target2;       // (B, T) or NULL: a second target for every scored token t: log p(target2[b, t] | tok[<t])
                                  // is computed too (e.g. the end token after every prefix, for GFlowNet losses)
    bool backward;                // a backward pass of this forward follows: with LoRA adapters the forward then
                                  // also differentiates the vocabulary projection (one product the size of the
                                  // logits' own) so that the backward need not recompute the logits.  Only speed
                                  // depends on it: without it the backward recomputes them.
} train_batch;

// Zero-initialised parameters for `cfg` (tests fill them); -1 + as_error for a bad config.
int train_model_init(train_model **out, const model_config *cfg);
// fp32 master copy of an inference model (every stored type dequantised).
int train_model_from_model(train_model **out, const model *src);
// model_load + train_model_from_model.
int train_model_load(train_model **out, const char *gguf_path);
// A Hugging Face folder (config.json with model_type llama or gemma, and
// model.safetensors or the shards of model.safetensors.index.json; F32, F16
// or BF16), brought into the GGUF layout (llama q/k rows permuted, Gemma
// norms + 1) by model_load_hf (model/model_hf.h; train_model_load does the
// same for a folder).  -1 + as_error naming the file and field.
int train_model_load_hf(train_model **out, const char *dir);
void train_model_free(train_model *m);

// Threads for all work (OpenMP; the products run single-threaded OpenBLAS
// calls on them).  Default kernel_get_threads().  Results are bitwise
// reproducible for a given thread count.
void train_set_threads(train_model *m, int n);
// Arithmetic of the matrix products (default TRAIN_PRECISION_F32).  The
// commands take it from the run config's train.precision (`run`) or
// --precision (`sft`); ALPHASPIN_TRAIN_PRECISION, read by the command line
// only, overrides the configured value (src/cli/cli.h).
void train_set_precision(train_model *m, train_precision p);
// The backend the forward, backward and optimizer steps run on (tensor/
// backend.h; NULL: the CPU's, the default; train_model_from_model takes the
// inference model's).  The big buffers (weights, gradients, adapters,
// activations) are be's buf_alloc memory, so a device backend keeps them
// resident: a change of backend moves them (and drops the last forward).  -1 + as_error (the model
// unchanged) when be lacks a training op (as_backend_missing).
int train_set_backend(train_model *m, const as_backend *be);

// Adds LoRA adapters (A ~ U(-1/sqrt(in), 1/sqrt(in)) as PEFT's default
// kaiming_uniform(a=sqrt(5)), B = 0, so the model is unchanged at first) and
// freezes the base.  -1 + as_error for a bad configuration or if present already.
int train_lora_attach(train_model *m, const train_lora_config *cfg);
// Removes the adapters (the base becomes trainable again).
void train_lora_detach(train_model *m);

// Adapters as objects of their own, for keeping several iterates over one base:
// train_lora_new initialises them as train_lora_attach does (NULL + as_error
// for a bad configuration); train_lora_set swaps them into m (NULL: none;
// the base is frozen while any are set) and returns the previous ones, which
// the caller then owns.  train_lora_copy copies the factors between adapters
// of the same shape.  train_lora_view gives the inference model's view of them
// (model_set_lora), pointing into l.
train_lora *train_lora_new(const model_config *cfg, const train_lora_config *lc);
void train_lora_free(train_lora *l);
train_lora *train_lora_set(train_model *m, train_lora *l);
void train_lora_copy(train_lora *dst, const train_lora *src);
void train_lora_view(const train_lora *l, model_lora *out);
// Adapters off: the forward pass is the base model's (no copy of the weights).
void train_set_adapters(train_model *m, bool on);
// Training mode enables adapter dropout; evaluation mode disables it.
void train_set_training(train_model *m, bool on);
// Activation checkpointing: the forward pass keeps only the residual stream
// (each layer's input and its value after the attention block) and one
// layer's worth of activations; the backward pass recomputes each layer
// before differentiating it (about 3/4 of a forward pass of work: not the
// output and down projections; on the default model at 2048 tokens 0.46
// instead of 2.1 GB of activations).
// Gradients are bitwise identical either way.
void train_set_checkpointing(train_model *m, bool on);
// Bytes of activation memory currently allocated.
size_t train_activation_bytes(const train_model *m);

// Forward pass: logp_sum (B) and n_scored (B, may be NULL).  Keeps the
// activations for train_backward.  -1 + as_error for a bad batch.
int train_forward(train_model *m, const train_batch *b, float *logp_sum, int32_t *n_scored);
// Backward pass of the last forward for upstream gradient dlogp_sum (B):
// ACCUMULATES the gradient of sum_b dlogp_sum[b] * logp_sum[b] into the
// trainable gradients (LoRA factors when adapters are attached, else all
// weights).  -1 + as_error if there is no forward to differentiate or it ran
// with the adapters off.
int train_backward(train_model *m, const float *dlogp_sum);
// Backward pass for upstream gradients per scored token (batch order, as
// train_token_logprobs): dlogp_tok on the tokens' log-probabilities and
// dlogp_tok2 (may be NULL) on those of the second targets.  Accumulates as
// train_backward; -1 + as_error as train_backward, or for dlogp_tok2 after a
// forward without second targets.
int train_backward_tokens(train_model *m, const float *dlogp_tok, const float *dlogp_tok2);
// log p(target2 | prefix) of each scored token of the last forward, as
// train_token_logprobs; 0 when the batch had no second targets.
int64_t train_token_logprobs2(const train_model *m, float *out);
// Log-probability of each scored token of the last forward, in batch order
// (sequence, then position): out has sum(n_scored) entries.  Returns their count.
int64_t train_token_logprobs(const train_model *m, float *out);

// The trainable parameters as one flat array: returns their count and sets the
// buffers and the segment table (weight decay on matrices and LoRA factors,
// not on norm weights).  Allocates the full gradients on first use.
size_t train_trainable(train_model *m, float **params, float **grads, const optim_segment **segs, int *n_segs);
void train_zero_grad(train_model *m);
// Clip (cfg.max_grad_norm) and update the trainable parameters; grad_norm
// (before clipping) and lr may be NULL.
void train_optim_step(train_model *m, optim *o, double *grad_norm, double *lr);

// The tensor of p (m->params or m->grads) that a GGUF file names `name`
// ("token_embd.weight", "output.weight", "output_norm.weight",
// "blk.<l>.attn_q.weight", ...): its first element and count, or NULL when
// the name is not a tensor of this model (output.weight of a tied model).
float *train_params_find(const train_model *m, const train_params *p, const char *name, int64_t *n);

// Fisher-Yates permutation of 0 .. n-1 from rng (data order).
void train_shuffle(int64_t *perm, int64_t n, as_rng *rng);

#endif
