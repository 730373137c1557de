// GFlowNet fine-tuning: the modified sub-trajectory balance loss, prefix
// rewards, the replay buffer and the steps of the training loop (see gfn.h).
#include "mixture/gfn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "mixture/mixture.h"
#include "tensor/backend.h"
#include "train/checkpoint.h"
#include "train/loop.h"
#include "util/common.h"
#include "util/rng.h"

void gfn_config_default(gfn_config *c) {
    memset(c, 0, sizeof *c);
    c->alpha = 0.1f;
    c->max_new_tokens = 128;
    c->end_id = -1;
    c->steps = 100;
    c->prompts_per_step = 2;
    c->samples_per_prompt = 8;
    c->micro_batch = 4;
    c->sample_batch = 16;
    c->reward_temp_start = 1.0f, c->reward_temp_end = 0.8f, c->reward_temp_horizon = 750;
    c->subtb_lambda = 1.0f;
    c->buffer_size = 50, c->replay_prob = 0.25f;
    c->explore_prob = 0.666f, c->explore_temp_low = 0.5f, c->explore_temp_high = 2.0f;
    optim_config_default(&c->optim, OPTIM_ADAMW);
    c->optim.lr = 1e-4f;
    c->optim.weight_decay = 0.0f;
    c->optim.max_grad_norm = 1.0f;
    c->seed = 42;
    c->precision = KERNEL_PRECISION_F32;
}

int gfn_config_check(const gfn_config *c, int32_t n_vocab) {
    if (!(c->alpha >= 0.0f && c->alpha <= 1.0f)) return as_error("gfn: alpha %g outside [0, 1]", c->alpha);
    if (c->max_new_tokens < 1) return as_error("gfn: max_new_tokens %d: expected >= 1", c->max_new_tokens);
    if (c->end_id < 0 || c->end_id >= n_vocab) return as_error("gfn: end token %d outside the vocabulary [0, %d)", c->end_id, n_vocab);
    if (c->steps < 0) return as_error("gfn: steps %d: expected >= 0", c->steps);
    if (c->prompts_per_step < 1 || c->samples_per_prompt < 1 || c->micro_batch < 1 || c->sample_batch < 1)
        return as_error("gfn: prompts_per_step, samples_per_prompt, micro_batch and sample_batch must be >= 1");
    if (!(c->reward_temp_start > 0.0f) || !(c->reward_temp_end > 0.0f) || c->reward_temp_horizon < 0)
        return as_error("gfn: reward temperatures must be > 0 and the horizon >= 0");
    if (!(c->subtb_lambda > 0.0f) || !isfinite(c->subtb_lambda)) return as_error("gfn: subtb_lambda %g: expected > 0", c->subtb_lambda);
    if (c->buffer_size < 0 || !(c->replay_prob >= 0.0f && c->replay_prob <= 1.0f))
        return as_error("gfn: buffer_size must be >= 0 and replay_prob in [0, 1]");
    if (!(c->explore_prob >= 0.0f && c->explore_prob <= 1.0f) || !(c->explore_temp_low > 0.0f) ||
        !(c->explore_temp_high >= c->explore_temp_low))
        return as_error("gfn: explore_prob must be in [0, 1] and 0 < explore_temp_low <= explore_temp_high");
    return AS_OK;
}

char *gfn_config_text(const gfn_config *c) {
    const optim_config *o = &c->optim;
    as_sbuf b = {0};
    as_sb_printf(&b, "alpha=%.9g\nmax-new-tokens=%d\nend-token=%d\nsteps=%d\nprompts-per-step=%d\nsamples-per-prompt=%d\n", (double)c->alpha,
                 c->max_new_tokens, c->end_id, c->steps, c->prompts_per_step, c->samples_per_prompt);
    as_sb_printf(&b, "micro-batch=%d\nsample-batch=%d\nreward-temp=%.9g:%.9g:%d\nlambda=%.9g\nbuffer-size=%d\nreplay-prob=%.9g\n", c->micro_batch,
                 c->sample_batch, (double)c->reward_temp_start, (double)c->reward_temp_end, c->reward_temp_horizon, (double)c->subtb_lambda,
                 c->buffer_size, (double)c->replay_prob);
    as_sb_printf(&b, "explore=%.9g:%.9g:%.9g\nseed=%llu\nprecision=%s\nlr=%.9g\n", (double)c->explore_prob, (double)c->explore_temp_low,
                 (double)c->explore_temp_high, (unsigned long long)c->seed, kernel_precision_name(c->precision), (double)o->lr);
    as_sb_printf(&b, "optimizer=%d betas=%.9g,%.9g eps=%.9g alpha=%.9g momentum=%.9g weight-decay=%.9g schedule=%d warmup=%.17g clip=%.9g\n",
                 (int)o->kind, (double)o->beta1, (double)o->beta2, (double)o->eps, (double)o->alpha, (double)o->momentum,
                 (double)o->weight_decay, (int)o->schedule, o->warmup_ratio, (double)o->max_grad_norm);
    return b.s;
}

// ---- the loss ----

double gfn_subtb(int32_t m, const double *logr, const double *logpf, const double *logpt, double lambda, double *weight, double *g_pf,
                 double *g_pt) {
    *weight = 0.0;
    if (m < 1) return 0.0;
    // D[j] = delta_0 + .. + delta_{j-1}, so S_ij = D[j] - D[i].
    double *D = as_malloc(sizeof(double) * (size_t)(m + 1)), *diff = as_calloc((size_t)m + 1, sizeof(double));
    double *pw = as_malloc(sizeof(double) * (size_t)m);
    D[0] = 0.0;
    for (int32_t k = 0; k < m; k++) D[k + 1] = D[k] + logr[k] + logpf[k] + logpt[k + 1] - logr[k + 1] - logpt[k];
    pw[0] = 1.0;
    for (int32_t d = 1; d < m; d++) pw[d] = pw[d - 1] * lambda;
    double loss = 0.0, W = 0.0;
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = i + 1; j <= m; j++) {
            const double w = pw[j - i - 1], S = D[j] - D[i];
            loss += w * S * S, W += w;
            // d(w S^2)/d delta_k = 2 w S for every i <= k < j: a difference array.
            diff[i] += 2.0 * w * S, diff[j] -= 2.0 * w * S;
        }
    double G = 0.0;
    for (int32_t k = 0; k < m; k++) {
        G += diff[k]; // dL/d delta_k
        g_pf[k] += G;
        g_pt[k + 1] += G;
        g_pt[k] -= G;
    }
    free(D), free(diff), free(pw);
    *weight = W;
    return loss;
}

// Sum of the weights of a trajectory with m transitions, without the deltas.
static double subtb_weight(int32_t m, double lambda) {
    double W = 0.0, p = 1.0;
    for (int32_t d = 1; d <= m; d++, p *= lambda) W += (double)(m - d + 1) * p;
    return W;
}

// ---- prefix rewards (inference model) ----

// log sum_j e^z_j of a row of host logits: the host (CPU) backend's logsumexp.
static double row_lse(const float *z, int64_t V) { return as_backend_cpu.logsumexp(z, V, 1.0f); }

// Trajectories per forward call of the rewards, and the logits rows (m + 1 per
// trajectory) one call may hold: a chunk of trajectories shares one call per
// policy, each trajectory a sequence of its own (at q8 and bf16 a row's logits
// do not depend on what else is in the call).
enum { GFN_REWARD_SEQS = 16, GFN_REWARD_ROWS = 256 };

// For trajectories t[0..nb) under the model's adapters: cum[b][i] = log pi(s_i)
// and end[b][i] = log pi(END|s_i), i = 0..m_b, from one forward call over all
// of them (kv: at least nb sequences, cleared here).
static int prefix_logps(model *m, kv_cache *kv, const gfn_traj *t, int64_t nb, int32_t end_id, double **cum, double **end) {
    const int64_t V = m->cfg.n_vocab;
    int64_t n = 0, rows = 0;
    for (int64_t b = 0; b < nb; b++) n += t[b].n_prompt + t[b].m, rows += t[b].m + 1;
    int32_t *tok = as_malloc(sizeof(int32_t) * (size_t)n), *seq = as_malloc(sizeof(int32_t) * (size_t)n);
    int32_t *pos = as_malloc(sizeof(int32_t) * (size_t)n);
    bool *want = as_malloc(sizeof(bool) * (size_t)n);
    for (int64_t b = 0, k = 0; b < nb; b++) {
        kv_cache_clear_seq(kv, (int32_t)b);
        const int64_t P = t[b].n_prompt;
        for (int64_t i = 0; i < P + t[b].m; i++, k++) {
            tok[k] = i < P ? t[b].prompt[i] : t[b].ids[i - P];
            seq[k] = (int32_t)b, pos[k] = (int32_t)i;
            want[k] = i >= P - 1;
        }
    }
    float *logits = as_malloc(sizeof(float) * (size_t)(rows * V));
    model_batch mb = {.n_tokens = (int32_t)n, .token = tok, .seq = seq, .pos = pos, .want_logits = want};
    const int rc = model_forward(m, kv, &mb, logits);
    for (int64_t b = 0, r = 0; rc == AS_OK && b < nb; b++) {
        cum[b][0] = 0.0;
        for (int32_t i = 0; i <= t[b].m; i++, r++) {
            const float *z = logits + r * V;
            const double lse = row_lse(z, V);
            end[b][i] = (double)z[end_id] - lse;
            if (i < t[b].m) cum[b][i + 1] = cum[b][i] + (double)z[t[b].ids[i]] - lse;
        }
    }
    free(tok), free(seq), free(pos), free(want), free(logits);
    return rc;
}

int gfn_prefix_rewards(model *m, kernel_precision prec, const model_lora *lora_t, const model_lora *lora_0, float alpha, int32_t end_id,
                       const gfn_traj *t, int64_t n, double **logr_out) {
    const model_lora saved = m->lora;
    for (int64_t i = 0; i < n; i++) logr_out[i] = NULL;
    int64_t n_ctx = 1;
    for (int64_t i = 0; i < n; i++) n_ctx = AS_MAX(n_ctx, t[i].n_prompt + t[i].m);
    if (n_ctx > INT32_MAX / 2) return as_error("gfn: a trajectory of %lld tokens is too long", (long long)n_ctx);
    const int32_t B = (int32_t)AS_MIN((int64_t)GFN_REWARD_SEQS, AS_MAX(n, (int64_t)1));
    kv_cache *kv = model_kv_cache(m, B, (int32_t)n_ctx, prec);
    if (!kv) return AS_FAIL;
    double *ct[GFN_REWARD_SEQS], *et[GFN_REWARD_SEQS], *c0[GFN_REWARD_SEQS], *e0[GFN_REWARD_SEQS];
    int rc = AS_OK;
    for (int64_t i0 = 0; i0 < n && rc == AS_OK;) {
        // The chunk: up to B trajectories and GFN_REWARD_ROWS rows of logits (at least one trajectory).
        int64_t nb = 0, rows = 0;
        while (i0 + nb < n && nb < B && (nb == 0 || rows + t[i0 + nb].m + 1 <= GFN_REWARD_ROWS)) rows += t[i0 + nb].m + 1, nb++;
        for (int64_t b = 0; b < nb; b++) {
            const size_t k = (size_t)(t[i0 + b].m + 1);
            ct[b] = as_malloc(sizeof(double) * k), et[b] = as_malloc(sizeof(double) * k);
            c0[b] = as_malloc(sizeof(double) * k), e0[b] = as_malloc(sizeof(double) * k);
        }
        rc = model_set_lora(m, lora_t);
        if (rc == AS_OK) rc = prefix_logps(m, kv, t + i0, nb, end_id, ct, et);
        if (rc == AS_OK) rc = model_set_lora(m, lora_0);
        if (rc == AS_OK) rc = prefix_logps(m, kv, t + i0, nb, end_id, c0, e0);
        for (int64_t b = 0; b < nb; b++) {
            const gfn_traj *tr = &t[i0 + b];
            if (rc == AS_OK) {
                double *r = logr_out[i0 + b] = as_malloc(sizeof(double) * (size_t)(tr->m + 1));
                for (int32_t k = 0; k <= tr->m; k++) {
                    // The truncated leaf has no END: its reward is the mixture of the tokens present.
                    const bool forced = tr->truncated && k == tr->m;
                    r[k] = (1.0 - alpha) * (ct[b][k] + (forced ? 0.0 : et[b][k])) + alpha * (c0[b][k] + (forced ? 0.0 : e0[b][k]));
                }
            }
            free(ct[b]), free(et[b]), free(c0[b]), free(e0[b]);
        }
        i0 += nb;
    }
    kv_cache_free(kv);
    model_set_lora(m, saved.rank ? &saved : NULL);
    if (rc)
        for (int64_t i = 0; i < n; i++) free(logr_out[i]), logr_out[i] = NULL;
    return rc;
}

// ---- the batch loss through the training model ----

// The loss's normaliser: the sum of the trajectories' sub-trajectory weights.
static double batch_weight(const gfn_traj *t, int64_t n, double lambda) {
    double W = 0.0;
    for (int64_t i = 0; i < n; i++) W += subtb_weight(t[i].m, lambda);
    return W;
}

// The loss of trajectories t[0..n) of a batch whose weights sum to W (> 0),
// micro_batch per forward; with backward its gradient accumulates.
static int loss_part(train_model *tm, const gfn_traj *t, int64_t n, double W, int32_t end_id, double reward_temp, double lambda,
                     int32_t micro_batch, bool backward, double *loss) {
    *loss = 0.0;
    int32_t max_len = 1, max_m = 0;
    for (int64_t i = 0; i < n; i++) {
        max_len = (int32_t)AS_MAX((int64_t)max_len, t[i].n_prompt + t[i].m + 1);
        max_m = AS_MAX(max_m, t[i].m);
    }
    const int32_t B = micro_batch, T = max_len;
    int32_t *tokens = as_calloc((size_t)B * T, sizeof(int32_t)), *target2 = as_malloc(sizeof(int32_t) * (size_t)B * T);
    int32_t *len = as_malloc(sizeof(int32_t) * (size_t)B), *plen = as_malloc(sizeof(int32_t) * (size_t)B);
    for (int64_t i = 0; i < (int64_t)B * T; i++) target2[i] = end_id;
    float *lp1 = as_malloc(sizeof(float) * (size_t)B * T), *lp2 = as_malloc(sizeof(float) * (size_t)B * T);
    float *g1 = as_malloc(sizeof(float) * (size_t)B * T), *g2 = as_malloc(sizeof(float) * (size_t)B * T);
    float *lsum = as_malloc(sizeof(float) * (size_t)B);
    double *lr = as_malloc(sizeof(double) * (size_t)(max_m + 1)), *pf = as_malloc(sizeof(double) * (size_t)(max_m + 1));
    double *pt = as_malloc(sizeof(double) * (size_t)(max_m + 1)), *gpf = as_malloc(sizeof(double) * (size_t)(max_m + 1));
    double *gpt = as_malloc(sizeof(double) * (size_t)(max_m + 1));
    int rc = AS_OK;
    for (int64_t i0 = 0; i0 < n && rc == AS_OK; i0 += B) {
        const int32_t nb = (int32_t)AS_MIN((int64_t)B, n - i0);
        // Sequence: prompt, the m tokens, END (for a truncated leaf END only pads: its row is not used).
        for (int32_t b = 0; b < nb; b++) {
            const gfn_traj *tr = &t[i0 + b];
            int32_t *row = tokens + (int64_t)b * T;
            memcpy(row, tr->prompt, sizeof(int32_t) * (size_t)tr->n_prompt);
            memcpy(row + tr->n_prompt, tr->ids, sizeof(int32_t) * (size_t)tr->m);
            row[tr->n_prompt + tr->m] = end_id;
            len[b] = (int32_t)(tr->n_prompt + tr->m + 1), plen[b] = (int32_t)tr->n_prompt;
        }
        train_batch tb = {.n_seq = nb, .n_ctx = T, .tokens = tokens, .len = len, .prompt_len = plen, .target2 = target2,
                          .backward = backward};
        if ((rc = train_forward(tm, &tb, lsum, NULL))) break;
        train_token_logprobs(tm, lp1);
        train_token_logprobs2(tm, lp2);
        int64_t r0 = 0;
        for (int32_t b = 0; b < nb; b++) {
            const gfn_traj *tr = &t[i0 + b];
            const int32_t M = tr->m;
            for (int32_t k = 0; k <= M; k++) {
                lr[k] = tr->logr[k] / reward_temp;
                pf[k] = k < M ? lp1[r0 + k] : 0.0;
                pt[k] = (tr->truncated && k == M) ? 0.0 : lp2[r0 + k]; // the forced stop has probability 1
                gpf[k] = gpt[k] = 0.0;
            }
            double w;
            *loss += gfn_subtb(M, lr, pf, pt, lambda, &w, gpf, gpt) / W;
            for (int32_t k = 0; k <= M; k++) {
                g1[r0 + k] = k < M ? (float)(gpf[k] / W) : 0.0f;
                g2[r0 + k] = (tr->truncated && k == M) ? 0.0f : (float)(gpt[k] / W);
            }
            r0 += M + 1;
        }
        if (backward) rc = train_backward_tokens(tm, g1, g2);
    }
    free(tokens), free(target2), free(len), free(plen), free(lp1), free(lp2), free(g1), free(g2), free(lsum);
    free(lr), free(pf), free(pt), free(gpf), free(gpt);
    return rc;
}

int gfn_loss(train_model *tm, const gfn_traj *t, int64_t n, int32_t end_id, double reward_temp, double lambda, int32_t micro_batch,
             bool backward, double *loss) {
    *loss = 0.0;
    const double W = batch_weight(t, n, lambda);
    if (W <= 0.0) return AS_OK; // no transitions at all: nothing to learn
    return loss_part(tm, t, n, W, end_id, reward_temp, lambda, micro_batch, backward, loss);
}

// ---- replay buffer: per prompt, the highest-reward distinct answers ----

typedef struct buf_entry {
    int32_t *ids;
    int32_t m;
    bool truncated;
    double *logr; // (m + 1) untempered
} buf_entry;

typedef struct buf {
    buf_entry *e;
    int32_t n;
} buf;

static bool buf_has(const buf *b, const int32_t *ids, int32_t m, bool truncated) {
    for (int32_t i = 0; i < b->n; i++)
        if (b->e[i].m == m && b->e[i].truncated == truncated && !memcmp(b->e[i].ids, ids, sizeof(int32_t) * (size_t)m)) return true;
    return false;
}

static void buf_add(buf *b, int32_t cap, const gfn_traj *t) {
    if (cap < 1 || buf_has(b, t->ids, t->m, t->truncated)) return;
    const double score = t->logr[t->m];
    int32_t slot = b->n;
    if (b->n == cap) { // replace the worst when better
        slot = 0;
        for (int32_t i = 1; i < b->n; i++)
            if (b->e[i].logr[b->e[i].m] < b->e[slot].logr[b->e[slot].m]) slot = i;
        if (!(score > b->e[slot].logr[b->e[slot].m])) return;
        free(b->e[slot].ids), free(b->e[slot].logr);
    } else {
        b->n++;
    }
    buf_entry *e = &b->e[slot];
    e->m = t->m, e->truncated = t->truncated;
    e->ids = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(t->m, 1));
    memcpy(e->ids, t->ids, sizeof(int32_t) * (size_t)t->m);
    e->logr = as_malloc(sizeof(double) * (size_t)(t->m + 1));
    memcpy(e->logr, t->logr, sizeof(double) * (size_t)(t->m + 1));
}

// ---- the training loop ----

// gfn_train through the training loop (train/loop.h), without items: each
// step draws its trajectories (gfn_draw), and micro-batches of micro_batch of
// them make its gradient, a fixed tree over them (under mpirun shared by the
// processes, as the sampling and scoring of its fresh answers are).
typedef struct gfn_run {
    model *m;
    train_model *tm;
    const model_lora *lora_t, *lora_0;
    const gfn_config *c;
    const int32_t *const *prompt;
    const int64_t *n_prompt;
    int64_t n_prompts;
    model_lora view;            // the sampler's adapters, for the inference model
    as_rng rng;                 // prompt order, replay, exploration, sampling seeds
    int64_t *order, cursor;     // the shuffled prompt order, the next position in it
    buf *bufs;                  // per prompt
    gfn_traj *traj;             // the step's trajectories (per_step of them)
    double **owned_logr;        // the fresh ones' rewards and tokens, owned until the step ends
    int32_t **owned_ids;
    const int32_t **sp;         // the fresh ones' prompts, for the sampler
    int64_t *snp, *sprompt;     // ... their lengths; every trajectory's prompt index
    mixture_sample *samples;
    int64_t nt, n_fresh, n_replay;
    double temp_r, temp_x, loss, sum_r, sum_len;
    double W;                   // the step's loss normaliser (sum of its trajectories' weights)
    gfn_step_fn on_step;
    void *user;
    const gfn_checkpoint *ck;
    char *options;              // gfn_config_text + ck->options: what the state must have been saved with
    // The buffers flattened for a save (gfn_state_write; freed after it or at the end).
    int32_t *flat_count, *flat_m, *flat_trunc, *flat_ids;
    double *flat_logr;
} gfn_run;

// A fresh answer, for dist_gather_shares: its token count, whether it ended,
// its tokens and its m + 1 log-rewards.
static void put_fresh(void *user, int64_t f, as_sbuf *buf) {
    const gfn_run *r = user;
    const mixture_sample *x = &r->samples[f];
    const int64_t head[2] = {x->n_ids, x->ended};
    const int32_t m = (int32_t)(x->ended ? x->n_ids - 1 : x->n_ids);
    as_sb_add(buf, (const char *)head, sizeof head);
    if (x->n_ids) as_sb_add(buf, (const char *)x->ids, sizeof(int32_t) * (size_t)x->n_ids);
    as_sb_add(buf, (const char *)r->owned_logr[f], sizeof(double) * (size_t)(m + 1));
}

static const char *get_fresh(void *user, int64_t f, const char *p) {
    gfn_run *r = user;
    mixture_sample *x = &r->samples[f];
    int64_t head[2];
    memcpy(head, p, sizeof head), p += sizeof head;
    memset(x, 0, sizeof *x);
    x->n_ids = head[0], x->ended = head[1] != 0;
    const int32_t m = (int32_t)(x->ended ? x->n_ids - 1 : x->n_ids);
    x->ids = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(x->n_ids, (int64_t)1));
    memcpy(x->ids, p, sizeof(int32_t) * (size_t)x->n_ids), p += sizeof(int32_t) * (size_t)x->n_ids;
    r->owned_logr[f] = as_malloc(sizeof(double) * (size_t)(m + 1));
    memcpy(r->owned_logr[f], p, sizeof(double) * (size_t)(m + 1));
    return p + sizeof(double) * (size_t)(m + 1);
}

// The fresh answers f in [b, e) of this process's share, sampled and scored
// (samples[f], owned_logr[f]); under mpirun every share is then gathered, so
// every process has them all: each answer has its own stream (mixture.h's
// first_index) and its rewards are forward passes of its own.
static int fresh_answers(gfn_run *r, const mixture_config *mc) {
    const gfn_config *c = r->c;
    const int64_t n = r->n_fresh;
    int64_t b = 0, e = n;
    dist_share(n, &b, &e);
    mixture_config ms = *mc;
    ms.first_index = b;
    int rc = e > b ? mixture_sample_policy(r->m, &r->view, (float)r->temp_x, &ms, r->sp + b, r->snp + b, e - b, r->samples + b) : AS_OK;
    if (rc == AS_OK && e > b) {
        gfn_traj *fresh = as_malloc(sizeof(gfn_traj) * (size_t)(e - b));
        for (int64_t f = b; f < e; f++) {
            const mixture_sample *x = &r->samples[f];
            fresh[f - b] = (gfn_traj){.prompt = r->sp[f], .n_prompt = r->snp[f], .ids = x->ids, .truncated = !x->ended,
                                      .m = (int32_t)(x->ended ? x->n_ids - 1 : x->n_ids)};
        }
        rc = gfn_prefix_rewards(r->m, c->precision, r->lora_t, r->lora_0, c->alpha, c->end_id, fresh, e - b, r->owned_logr + b);
        free(fresh);
    }
    return dist_gather_shares(n, rc == AS_OK, put_fresh, get_fresh, r);
}

// The step's trajectories, its items: replayed, or fresh from the tempered
// sampler with their prefix rewards (shared over the processes).
static int gfn_draw(void *user, const train_loop_step *s, int64_t *n_items) {
    gfn_run *r = user;
    const gfn_config *c = r->c;
    const double frac = c->reward_temp_horizon > 0 ? fmin(1.0, (double)(s->step - 1) / c->reward_temp_horizon) : 1.0;
    r->temp_r = c->reward_temp_start + (c->reward_temp_end - c->reward_temp_start) * frac;
    r->temp_x = as_rng_uniform(&r->rng) < c->explore_prob
                    ? c->explore_temp_low + (c->explore_temp_high - c->explore_temp_low) * as_rng_uniform(&r->rng)
                    : 1.0;
    // Choose the step's prompts and, per prompt, replay or fresh answers.
    gfn_traj *traj = r->traj;
    int64_t nt = 0, n_fresh = 0, n_replay = 0;
    for (int32_t p = 0; p < c->prompts_per_step; p++) {
        if (r->cursor == r->n_prompts) train_shuffle(r->order, r->n_prompts, &r->rng), r->cursor = 0;
        const int64_t pi = r->order[r->cursor++];
        const bool replay = r->bufs[pi].n > 0 && as_rng_uniform(&r->rng) < c->replay_prob;
        for (int32_t k = 0; k < c->samples_per_prompt; k++, nt++) {
            traj[nt] = (gfn_traj){.prompt = r->prompt[pi], .n_prompt = r->n_prompt[pi]};
            r->sprompt[nt] = pi;
            if (replay) {
                const buf_entry *e = &r->bufs[pi].e[as_rng_below(&r->rng, (uint64_t)r->bufs[pi].n)];
                traj[nt].ids = e->ids, traj[nt].m = e->m, traj[nt].truncated = e->truncated, traj[nt].logr = e->logr;
                traj[nt].replayed = true;
                n_replay++;
            } else {
                traj[nt].m = -1; // fresh: filled below
                r->sp[n_fresh] = r->prompt[pi], r->snp[n_fresh] = r->n_prompt[pi], n_fresh++;
            }
        }
    }
    r->nt = nt, r->n_fresh = n_fresh, r->n_replay = n_replay;
    // Fresh answers from the sampler (tempered) and their prefix rewards.
    if (n_fresh) {
        const mixture_config mc = {.alpha = 0.0f, .max_new_tokens = c->max_new_tokens, .end_ids = &c->end_id, .n_end_ids = 1,
                                   .batch_size = c->sample_batch, .precision = c->precision, .seed = as_rng_u64(&r->rng)};
        if (fresh_answers(r, &mc)) return AS_FAIL;
        for (int64_t i = 0, f = 0; i < nt; i++) {
            if (traj[i].m >= 0) continue;
            mixture_sample *ms = &r->samples[f];
            traj[i].ids = r->owned_ids[f] = ms->ids;
            ms->ids = NULL;
            traj[i].truncated = !ms->ended;
            traj[i].m = (int32_t)(ms->ended ? ms->n_ids - 1 : ms->n_ids);
            traj[i].logr = r->owned_logr[f++];
        }
    }
    r->sum_r = r->sum_len = 0.0;
    for (int64_t i = 0; i < nt; i++) r->sum_r += traj[i].logr[traj[i].m], r->sum_len += traj[i].m + (traj[i].truncated ? 0 : 1);
    r->W = batch_weight(traj, nt, c->subtb_lambda);
    *n_items = nt;
    return AS_OK;
}

// A micro-batch of the step's trajectories (contiguous: items are 0, 1, ...):
// its share of the loss (the step's normaliser) and of the gradient.
static int gfn_micro(void *user, const train_loop_step *s, const int64_t *items, int32_t n_items) {
    gfn_run *r = user;
    const gfn_config *c = r->c;
    double *loss = s->record;
    *loss = 0.0;
    if (r->W <= 0.0) return AS_OK; // no transitions at all: nothing to learn
    return loss_part(r->tm, r->traj + items[0], n_items, r->W, c->end_id, r->temp_r, c->subtb_lambda, c->micro_batch, true, loss);
}

static void gfn_combine(void *user, const train_loop_step *s, const void *records, int32_t n_micro) {
    (void)s;
    gfn_run *r = user;
    const double *loss = records;
    r->loss = 0.0;
    for (int32_t i = 0; i < n_micro; i++) r->loss += loss[i];
}

// After the update: the fresh answers into the buffers (only now: a replayed
// trajectory of this step may point into them), then the step's statistics.
static int gfn_step_done(void *user, const train_loop_step *s) {
    gfn_run *r = user;
    for (int64_t i = 0; i < r->nt; i++)
        if (!r->traj[i].replayed) buf_add(&r->bufs[r->sprompt[i]], r->c->buffer_size, &r->traj[i]);
    for (int64_t f = 0; f < r->n_fresh; f++) free(r->owned_ids[f]), free(r->owned_logr[f]), r->owned_ids[f] = NULL, r->owned_logr[f] = NULL;
    int64_t total = 0;
    for (int64_t i = 0; i < r->n_prompts; i++) total += r->bufs[i].n;
    if (r->on_step) {
        const gfn_step_stats st = {.step = s->step, .loss = r->loss, .grad_norm = s->grad_norm, .lr = s->lr, .reward_temp = r->temp_r,
                                   .explore_temp = r->temp_x, .mean_log_reward = r->sum_r / (double)r->nt,
                                   .mean_len = r->sum_len / (double)r->nt, .n_replayed = r->n_replay, .buffer_total = total,
                                   .elapsed_s = s->elapsed_s, .eta_s = s->eta_s};
        r->on_step(r->user, &st);
    }
    return AS_OK;
}

// ---- the state beside the training loop's (gfn.h, gfn_checkpoint) ----

// Tensors: the prompt order; per prompt its buffer's count; per entry, slot by
// slot, its length and truncation; the entries' tokens and log-rewards back to
// back.  Metadata: the position in the order and the options.
enum { GFN_STATE_TENSORS = 6 };

static void flat_free(gfn_run *r) {
    free(r->flat_count), free(r->flat_m), free(r->flat_trunc), free(r->flat_ids), free(r->flat_logr);
    r->flat_count = r->flat_m = r->flat_trunc = r->flat_ids = NULL, r->flat_logr = NULL;
}

static void gfn_state_write(void *user, st_writer *w) {
    gfn_run *r = user;
    flat_free(r);
    int64_t ne = 0, nid = 0;
    for (int64_t i = 0; i < r->n_prompts; i++)
        for (int32_t j = 0; j < r->bufs[i].n; j++) ne++, nid += r->bufs[i].e[j].m;
    r->flat_count = as_malloc(sizeof(int32_t) * (size_t)r->n_prompts);
    r->flat_m = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(ne, 1)), r->flat_trunc = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(ne, 1));
    r->flat_ids = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(nid, 1)), r->flat_logr = as_malloc(sizeof(double) * (size_t)AS_MAX(nid + ne, 1));
    int64_t e = 0, at = 0;
    for (int64_t i = 0; i < r->n_prompts; i++) {
        r->flat_count[i] = r->bufs[i].n;
        for (int32_t j = 0; j < r->bufs[i].n; j++, e++) {
            const buf_entry *b = &r->bufs[i].e[j];
            r->flat_m[e] = b->m, r->flat_trunc[e] = b->truncated;
            memcpy(r->flat_ids + at, b->ids, sizeof(int32_t) * (size_t)b->m);
            memcpy(r->flat_logr + at + e, b->logr, sizeof(double) * (size_t)(b->m + 1));
            at += b->m;
        }
    }
    st_writer_add(w, "gfn.order", ST_I64, 1, (int64_t[]){r->n_prompts}, r->order);
    st_writer_add(w, "gfn.buffer_count", ST_I32, 1, (int64_t[]){r->n_prompts}, r->flat_count);
    st_writer_add(w, "gfn.buffer_len", ST_I32, 1, (int64_t[]){ne}, r->flat_m);
    st_writer_add(w, "gfn.buffer_truncated", ST_I32, 1, (int64_t[]){ne}, r->flat_trunc);
    st_writer_add(w, "gfn.buffer_ids", ST_I32, 1, (int64_t[]){nid}, r->flat_ids);
    st_writer_add(w, "gfn.buffer_logr", ST_F64, 1, (int64_t[]){nid + ne}, r->flat_logr);
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)r->cursor);
    st_writer_set_metadata(w, "gfn.cursor", buf);
    st_writer_set_metadata(w, "gfn.options", r->options);
}

// A tensor of the state: dtype and length as expected, or one error line.
// Its bytes: a tensor after an odd number of floats is not 8-byte aligned,
// so elements are read with memcpy.
static const uint8_t *state_tensor(const st_file *f, const char *name, st_dtype dt, int64_t n) {
    const st_tensor *t = st_find(f, name);
    if (!t) return as_error("%s: tensor %s is missing", f->path, name), NULL;
    if (t->dtype != dt || t->n_dims != 1 || t->shape[0] != n)
        return as_error("%s: tensor %s: expected %lld values of its type", f->path, name, (long long)n), NULL;
    return t->data;
}

static int64_t i64_at(const uint8_t *p, int64_t i) {
    int64_t v;
    memcpy(&v, p + 8 * i, sizeof v);
    return v;
}

static int32_t i32_at(const uint8_t *p, int64_t i) {
    int32_t v;
    memcpy(&v, p + 4 * i, sizeof v);
    return v;
}

// The first line of `have` that `want` lacks, as "key=value" (into out).
static void first_difference(const char *have, const char *want, char *out, size_t n) {
    while (*have && *want) {
        const size_t lh = strcspn(have, "\n"), lw = strcspn(want, "\n");
        if (lh != lw || memcmp(have, want, lh)) break;
        have += lh + (have[lh] != 0), want += lw + (want[lw] != 0);
    }
    snprintf(out, n, "%.*s", (int)strcspn(have, "\n"), *have ? have : "(nothing)");
}

static int gfn_state_read(void *user, const st_file *f) {
    gfn_run *r = user;
    const char *opts = st_metadata(f, "gfn.options"), *cur = st_metadata(f, "gfn.cursor");
    if (!opts) return as_error("%s: not a gfn-train state (no gfn.options)", f->path);
    if (strcmp(opts, r->options)) {
        char was[256], now[256];
        first_difference(opts, r->options, was, sizeof was);
        first_difference(r->options, opts, now, sizeof now);
        return as_error("%s: saved by a run with %s, this one has %s (rerun with the same options, or remove the file to start over)", f->path,
                        was, now);
    }
    const int64_t np = r->n_prompts;
    char *end = NULL;
    const long long cursor = cur ? strtoll(cur, &end, 10) : -1;
    if (!cur || *end || cursor < 0 || cursor > np) return as_error("%s: metadata gfn.cursor missing or outside [0, %lld]", f->path, (long long)np);
    const uint8_t *order = state_tensor(f, "gfn.order", ST_I64, np), *count = state_tensor(f, "gfn.buffer_count", ST_I32, np);
    if (!order || !count) return AS_FAIL;
    // A permutation, and buffers within their capacity.
    bool *seen = as_calloc((size_t)np, sizeof(bool));
    int64_t ne = 0;
    int rc = AS_OK;
    for (int64_t i = 0; i < np && rc == AS_OK; i++) {
        const int64_t o = i64_at(order, i);
        const int32_t k = i32_at(count, i);
        if (o < 0 || o >= np || seen[o]) rc = as_error("%s: tensor gfn.order is not a permutation of the %lld prompts", f->path, (long long)np);
        else if (k < 0 || k > r->c->buffer_size) rc = as_error("%s: tensor gfn.buffer_count: %d answers for prompt %lld", f->path, k, (long long)i);
        else seen[o] = true, ne += k;
    }
    free(seen);
    if (rc) return AS_FAIL;
    const uint8_t *len = state_tensor(f, "gfn.buffer_len", ST_I32, ne), *trunc = len ? state_tensor(f, "gfn.buffer_truncated", ST_I32, ne) : NULL;
    if (!len || !trunc) return AS_FAIL;
    int64_t nid = 0;
    for (int64_t e = 0; e < ne; e++) {
        const int32_t m = i32_at(len, e), t = i32_at(trunc, e);
        if (m < 0 || m > r->c->max_new_tokens || (t != 0 && t != 1))
            return as_error("%s: tensor gfn.buffer_len/truncated: entry %lld is not an answer of at most %d tokens", f->path, (long long)e,
                            r->c->max_new_tokens);
        nid += m;
    }
    const uint8_t *ids = state_tensor(f, "gfn.buffer_ids", ST_I32, nid), *logr = ids ? state_tensor(f, "gfn.buffer_logr", ST_F64, nid + ne) : NULL;
    if (!ids || !logr) return AS_FAIL;
    for (int64_t i = 0; i < nid; i++) {
        const int32_t id = i32_at(ids, i);
        if (id < 0 || id >= r->m->cfg.n_vocab) return as_error("%s: tensor gfn.buffer_ids: token %d outside the vocabulary", f->path, id);
    }
    // All checked: the order, the position in it and the buffers are the file's.
    memcpy(r->order, order, sizeof(int64_t) * (size_t)np);
    r->cursor = cursor;
    int64_t e = 0, at = 0;
    for (int64_t i = 0; i < np; i++) {
        buf *b = &r->bufs[i];
        for (int32_t j = 0; j < b->n; j++) free(b->e[j].ids), free(b->e[j].logr);
        b->n = i32_at(count, i);
        for (int32_t j = 0; j < b->n; j++, e++) {
            buf_entry *x = &b->e[j];
            x->m = i32_at(len, e), x->truncated = i32_at(trunc, e) != 0;
            x->ids = as_malloc(sizeof(int32_t) * (size_t)AS_MAX(x->m, 1));
            memcpy(x->ids, ids + 4 * at, sizeof(int32_t) * (size_t)x->m);
            x->logr = as_malloc(sizeof(double) * (size_t)(x->m + 1));
            memcpy(x->logr, logr + 8 * (at + e), sizeof(double) * (size_t)(x->m + 1));
            at += x->m;
        }
    }
    return AS_OK;
}

// The loop's save hooks, passed on to the caller's.
static int gfn_save(void *user, const train_loop_step *s) {
    const gfn_run *r = user;
    return r->ck->save ? r->ck->save(r->ck->user, s->step) : AS_OK;
}

static void gfn_saved(void *user, const train_loop_step *s) {
    gfn_run *r = user;
    flat_free(r);
    if (r->ck->saved) r->ck->saved(r->ck->user, s->step);
}

int gfn_train(model *m, train_model *tm, const model_lora *lora_t, const model_lora *lora_0, const gfn_config *c,
              const int32_t *const *prompt, const int64_t *n_prompt, int64_t n_prompts, const gfn_checkpoint *ck, gfn_step_fn on_step,
              void *user) {
    if (gfn_config_check(c, m->cfg.n_vocab)) return AS_FAIL;
    if (!tm->lora) return as_error("gfn: the training model has no sampler adapters");
    if (n_prompts < 1) return as_error("gfn: no prompts");
    if (tm->cfg.n_vocab != m->cfg.n_vocab || tm->cfg.n_layer != m->cfg.n_layer || tm->cfg.n_embd != m->cfg.n_embd)
        return as_error("gfn: the training model and the inference model differ");
    train_set_adapters(tm, true);
    const int64_t per_step = (int64_t)c->prompts_per_step * c->samples_per_prompt;
    gfn_run r = {.m = m, .tm = tm, .lora_t = lora_t, .lora_0 = lora_0, .c = c, .prompt = prompt, .n_prompt = n_prompt,
                 .n_prompts = n_prompts, .on_step = on_step, .user = user, .ck = ck};
    train_lora_view(tm->lora, &r.view);
    as_rng_seed(&r.rng, c->seed);
    r.order = as_malloc(sizeof(int64_t) * (size_t)n_prompts);
    train_shuffle(r.order, n_prompts, &r.rng);
    r.bufs = as_calloc((size_t)n_prompts, sizeof(buf));
    for (int64_t i = 0; i < n_prompts; i++) r.bufs[i].e = as_calloc((size_t)AS_MAX(c->buffer_size, 1), sizeof(buf_entry));
    r.traj = as_calloc((size_t)per_step, sizeof(gfn_traj));
    r.owned_logr = as_calloc((size_t)per_step, sizeof(double *));
    r.owned_ids = as_calloc((size_t)per_step, sizeof(int32_t *));
    r.sp = as_malloc(sizeof(int32_t *) * (size_t)per_step);
    r.snp = as_malloc(sizeof(int64_t) * (size_t)per_step);
    r.sprompt = as_malloc(sizeof(int64_t) * (size_t)per_step);
    r.samples = as_calloc((size_t)per_step, sizeof(mixture_sample));
    // The loop over the sampler's adapters, with gfn's stream as its data-order
    // stream and the rest of gfn's state beside its own; resuming, all of it
    // comes back from the file.
    const train_state_extra extra = {.write = gfn_state_write, .read = gfn_state_read, .n_tensors = GFN_STATE_TENSORS, .user = &r};
    train_loop_config lc = {.n_items = 0, .max_steps = c->steps, .micro_items = c->micro_batch, .optim = c->optim};
    if (ck) {
        char *text = gfn_config_text(c);
        as_sbuf o = {0};
        as_sb_printf(&o, "%s%s", text, ck->options ? ck->options : "");
        free(text);
        r.options = o.s;
        lc.state_path = ck->path, lc.resume = ck->resume, lc.save_every = ck->every, lc.extra = &extra;
    }
    train_loop loop;
    int rc = train_loop_init(&loop, tm, &lc, &r.rng);
    if (rc == AS_OK && ck && ck->started) rc = ck->started(ck->user, loop.step);
    const train_loop_fns fns = {.draw = gfn_draw, .micro = gfn_micro, .record_size = sizeof(double), .combine = gfn_combine,
                                .step_done = gfn_step_done, .save = ck ? gfn_save : NULL, .saved = ck ? gfn_saved : NULL, .user = &r};
    if (rc == AS_OK) rc = train_loop_run(&loop, &fns);
    for (int64_t f = 0; f < per_step; f++) free(r.owned_ids[f]), free(r.owned_logr[f]), mixture_sample_free(&r.samples[f]);
    for (int64_t i = 0; i < n_prompts; i++) {
        for (int32_t j = 0; j < r.bufs[i].n; j++) free(r.bufs[i].e[j].ids), free(r.bufs[i].e[j].logr);
        free(r.bufs[i].e);
    }
    free(r.bufs), free(r.order), free(r.traj), free(r.owned_logr), free(r.owned_ids), free(r.sp), free(r.snp), free(r.sprompt);
    free(r.samples), free(r.options);
    flat_free(&r);
    train_loop_free(&loop);
    return rc;
}
