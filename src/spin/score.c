// Scoring token sequences with the training model: padding into one batch,
// and log pi(seq) of many sequences in micro-batches with dropout off (the
// references, the held-out measurements).
#include <string.h>

#include "dist/dist.h"
#include "spin/run_internal.h"
#include "util/common.h"

void spin_seq_batch_build(spin_seq_batch *sb, spin_seq *const *seqs, int32_t n) {
    int32_t T = 1;
    for (int32_t i = 0; i < n; i++) T = AS_MAX(T, seqs[i]->len);
    sb->tokens = as_calloc((size_t)n * (size_t)T, sizeof(int32_t));
    sb->mask = as_calloc((size_t)n * (size_t)T, 1);
    sb->len = as_malloc(sizeof(int32_t) * (size_t)n);
    for (int32_t i = 0; i < n; i++) {
        memcpy(sb->tokens + (size_t)i * T, seqs[i]->tokens, sizeof(int32_t) * (size_t)seqs[i]->len);
        memcpy(sb->mask + (size_t)i * T, seqs[i]->mask, (size_t)seqs[i]->len);
        sb->len[i] = seqs[i]->len;
    }
    sb->b = (train_batch){.n_seq = n, .n_ctx = T, .tokens = sb->tokens, .len = sb->len, .prompt_len = NULL, .loss_mask = sb->mask};
}

void spin_seq_batch_free(spin_seq_batch *sb) { free(sb->tokens), free(sb->mask), free(sb->len); }

// Under mpirun each rank scores a contiguous share of the micro-batches (the
// very batches one process forms: the same padding, so the same bits) and the
// scores are gathered to every rank.
int spin_score_seqs(train_model *m, spin_seq *const *seqs, int64_t n, int32_t micro, float *out, const spin_ctx *x, int32_t k,
                    const char *phase) {
    const bool was = m->training;
    train_set_training(m, false);
    const double t0 = as_time();
    int64_t b0, b1;
    dist_share((n + micro - 1) / micro, &b0, &b1);
    const int64_t first = AS_MIN(b0 * micro, n), end = AS_MIN(b1 * micro, n);
    int rc = AS_OK;
    for (int64_t i0 = first; i0 < end && rc == AS_OK; i0 += micro) {
        const int32_t B = (int32_t)AS_MIN((int64_t)micro, end - i0);
        spin_seq_batch sb;
        spin_seq_batch_build(&sb, seqs + i0, B);
        rc = train_forward(m, &sb.b, out + i0, NULL);
        spin_seq_batch_free(&sb);
        if (phase) spin_progress(x, k, phase, (i0 + B - first) * n / AS_MAX(end - first, 1), n, t0, "sequences");
    }
    train_set_training(m, was);
    if (dist_size() > 1) {
        char *all;
        size_t *off;
        if (dist_allgather(out + first, sizeof(float) * (size_t)(end - first), rc == AS_OK, &all, &off)) return AS_FAIL;
        memcpy(out, all, off[dist_size()]);
        free(all), free(off);
    }
    return rc;
}
