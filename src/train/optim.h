// Optimizers over one flat parameter buffer: AdamW, RMSprop and SGD with
// PyTorch's update rules (torch.optim), learning-rate schedules with warm-up
// as Hugging Face transformers defines them (get_*_schedule_with_warmup), and
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_.
//
// The parameters are one contiguous buffer; `segments` say which ranges of it
// get weight decay (matrices and LoRA factors do, norm weights do not, as in
// the transformers Trainer).  Every update is element-wise and the one
// reduction (the gradient norm) is summed in fixed blocks in a fixed order, so
// results are bitwise identical for any thread count.
#ifndef AS_TRAIN_OPTIM_H
#define AS_TRAIN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/backend.h"

typedef enum optim_kind { OPTIM_ADAMW = 0, OPTIM_RMSPROP = 1, OPTIM_SGD = 2 } optim_kind;
typedef enum optim_schedule { OPTIM_SCHEDULE_CONSTANT = 0, OPTIM_SCHEDULE_LINEAR = 1, OPTIM_SCHEDULE_COSINE = 2 } optim_schedule;

typedef struct optim_config {
    optim_kind kind;
    float lr;             // peak learning rate
    float beta1, beta2;   // AdamW moment decay (0.9, 0.999)
    float eps;            // AdamW and RMSprop denominator guard (1e-8)
    float alpha;          // RMSprop smoothing (0.99)
    float momentum;       // SGD momentum (0: plain SGD)
    float weight_decay;   // AdamW: decoupled (p -= lr wd p); RMSprop/SGD: L2, g += wd p (PyTorch semantics)
    optim_schedule schedule;
    double warmup_ratio;  // warm-up steps = ceil(ratio * total_steps) (double, as Python computes it)
    int64_t total_steps;  // optimizer steps of the run (needed by linear/cosine and warm-up)
    float max_grad_norm;  // clip the global gradient norm to this (0: no clipping)
} optim_config;

// A range of the flat buffer.
typedef struct optim_segment {
    const char *name;
    size_t offset, n;
    bool decay;           // weight decay applies
} optim_segment;

typedef struct optim {
    optim_config cfg;
    int64_t step;         // optimizer steps taken
    size_t n;
    float *m;             // (n) AdamW first moment / SGD momentum buffer
    float *v;             // (n) AdamW second moment / RMSprop square average
    const as_backend *be; // where the updates run (optim_init: the CPU; train_optim_step: the model's)
    const as_backend *mem; // whose buf_alloc holds m and v (optim_set_backend moves them)
} optim;

// PyTorch's defaults for `kind` (lr 1e-3 for AdamW; 1e-2 for RMSprop; 1e-3 SGD),
// constant schedule, no warm-up, no clipping.
void optim_config_default(optim_config *c, optim_kind kind);
// The fine-tuning recipe of `alphaspin sft` and `alphaspin run` (the SPIN
// paper's): AdamW at `lr` without weight decay, linear decay after a 10%
// warm-up, gradients clipped to norm 1.
void optim_config_finetune(optim_config *c, float lr);
// -1 + as_error for an invalid configuration (negative rate, beta outside [0, 1), ...).
int optim_init(optim **out, const optim_config *cfg, size_t n_params);
void optim_free(optim *o);
// The updates run on be from now on, and the moments move into be's buf_alloc
// memory (a device backend keeps them resident); NULL: the CPU.
void optim_set_backend(optim *o, const as_backend *be);

// Multiplier of cfg->lr for the update after `step` completed steps (0-based),
// transformers' LambdaLR: linear warm-up from 0, then constant, linear decay
// to 0, or half a cosine to 0.
double optim_lr_factor(const optim_config *c, int64_t step);
// The global L2 norm of the gradients (in double); when max_norm > 0 and the
// norm exceeds it, the gradients are scaled by max_norm / (norm + 1e-6).
double optim_clip_grad_norm(float *grads, size_t n, float max_norm, int nth);
// The same on backend be (optim_clip_grad_norm: the CPU).
double optim_clip_grad_norm_on(const as_backend *be, float *grads, size_t n, float max_norm, int nth);
// One update of params from grads; returns the learning rate used.
double optim_step(optim *o, float *params, const float *grads, const optim_segment *segs, int n_segs, int nth);

#endif
