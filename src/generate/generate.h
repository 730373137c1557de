// Batched generation with continuous batching.
//
// Up to batch_size requests run at once, each in its own slot (a sequence of
// one shared kv_cache).  Every step is ONE model_forward call holding the next
// token of every decoding slot plus prompt tokens of newly admitted requests
// (prompts of different lengths side by side, long ones in chunks); when a
// request finishes, its slot is cleared and refilled with the next pending one.
//
// Determinism: each request samples with its own sampler seeded from its
// params, so with the same seeds (and a model whose per-token results do not
// depend on what else is in the batch) the outputs are identical whatever
// batch_size or order of admission.
#ifndef AS_GENERATE_H
#define AS_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "generate/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef struct generate_request {
    const int32_t *prompt;   // token ids (at least one)
    int64_t n_prompt;
    sampler_params sampling;
    int32_t max_new_tokens;  // > 0
    const char *const *stop; // optional stop strings (need a tokenizer)
    int32_t n_stop;
} generate_request;

typedef enum generate_finish {
    GENERATE_FINISH_NONE = 0,
    GENERATE_FINISH_STOP,    // an end token or a stop string
    GENERATE_FINISH_LENGTH,  // max_new_tokens, or the context is full
} generate_finish;

typedef struct generate_result {
    int32_t *ids;        // sampled tokens, the end token included when one ended it
    int64_t n_ids;
    float *logprobs;     // (n_ids) log p(id) under the model's unmodified temperature-1 distribution
    double logprob_sum;  // sum of logprobs (double accumulation)
    char *text;          // generated text without end tokens and without the stop string
                         // (and what follows it); NULL without a tokenizer
    generate_finish finish;
} generate_result;
void generate_result_free(generate_result *r);

typedef struct generate_progress {
    int64_t done, total;     // requests
    int64_t n_generated;     // tokens sampled so far, all requests
    int64_t n_prompt;        // prompt tokens processed so far
    double elapsed_s, tokens_per_s, eta_s; // tokens_per_s: sampled tokens / elapsed
} generate_progress;

// Streaming: `text` is the newly final text of request i (bytes held back while
// they may still become a stop string or are an incomplete UTF-8 sequence, so
// the concatenation of all calls for i equals result.text).  `token` is the
// token just sampled (-1 on the final flush, when len may be > 0).
typedef void (*generate_token_fn)(void *user, int64_t request, int32_t token, const char *text, size_t len);
// Called after every request that finishes (done increases by one).
typedef void (*generate_progress_fn)(void *user, const generate_progress *p);

typedef struct generate_options {
    kernel_precision precision; // arithmetic of the forward passes (default f32; `generate` and `chat` use q8)
    int32_t batch_size;       // concurrent sequences (>= 1)
    int32_t n_ctx;            // positions per sequence; 0: the longest prompt + max_new_tokens, capped at n_ctx_train
    int32_t max_batch_tokens; // tokens per model_forward call (0: 512); long prompts are prefilled in chunks
    const int32_t *end_ids;   // extra end tokens besides tokenizer_is_end (e.g. without a tokenizer)
    int32_t n_end_ids;
    generate_token_fn on_token;
    generate_progress_fn on_progress;
    void *user;
} generate_options;

generate_options generate_options_default(void); // f32, batch 8, n_ctx 0, 512 tokens per call

// Runs all requests in one inference context (a KV cache at opt->precision)
// over m; out[i] receives request i's result (free each with
// generate_result_free).  `tok` may be NULL (no text, no stop strings).
// -1 + as_error on a bad request (naming its index and field) or a failing forward.
int generate_run(model *m, const tokenizer *tok, const generate_request *reqs, int64_t n_reqs,
                 const generate_options *opt, generate_result *out);

#endif
