// Generation over the processes of the job (dist.h): each rank generates a
// contiguous share of the requests, and every rank gets every result.
//
// A request's tokens are its own (per-request seeds; at --precision q8 and
// bf16 a token's logits do not depend on what else is in the batch), so the
// results are the bytes generate_run gives in one process.  At f32, calls of
// 1-4 tokens sum in another order than larger ones (tensor/kernels.h), and a
// share's batches are not one process's: results can then differ in the last
// bits of a logit, and a sampled token with them.
#ifndef AS_DIST_GENERATE_H
#define AS_DIST_GENERATE_H

#include "generate/generate.h"

// generate_run over the job.  Progress (opt->on_progress) is reported on rank
// 0 only, its share scaled to the whole; opt->on_token sees rank 0's requests.
int dist_generate_run(model *m, const tokenizer *tok, const generate_request *reqs, int64_t n_reqs, const generate_options *opt,
                      generate_result *out);

#endif
