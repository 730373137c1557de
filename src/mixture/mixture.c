// The token-by-token engine behind every sampler of mixture.h: a chunk of up
// to batch_size answers advances one token per step, each adapter setting
// with its own KV cache and one model_forward call per step.
#include "mixture/mixture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/backend.h"
#include "util/common.h"
#include "util/rng.h"

void mixture_sample_free(mixture_sample *s) {
    if (!s) return;
    free(s->ids);
    memset(s, 0, sizeof *s);
}

int mixture_config_check(const mixture_config *c, int32_t n_vocab) {
    if (!(c->alpha >= 0.0f && c->alpha <= 1.0f)) return as_error("mixture: alpha %g outside [0, 1]", c->alpha);
    if (c->max_new_tokens < 1) return as_error("mixture: max_new_tokens %d: expected >= 1", c->max_new_tokens);
    if (c->batch_size < 1) return as_error("mixture: batch_size %d: expected >= 1", c->batch_size);
    if (c->first_index < 0) return as_error("mixture: first_index %lld: expected >= 0", (long long)c->first_index);
    if (c->n_end_ids < 1 || !c->end_ids) return as_error("mixture: no end token");
    for (int32_t i = 0; i < c->n_end_ids; i++)
        if (c->end_ids[i] < 0 || c->end_ids[i] >= n_vocab)
            return as_error("mixture: end token %d outside the vocabulary [0, %d)", c->end_ids[i], n_vocab);
    return AS_OK;
}

double mixture_ess(const double *log_w, int64_t n) {
    double mx = -INFINITY, s = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, log_w[i]);
    if (!isfinite(mx)) return 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double w = exp(log_w[i] - mx);
        s += w, s2 += w * w;
    }
    return s * s / s2;
}

// Answer i's stream: independent of the batch it runs in.
static void seed_stream(as_rng *r, uint64_t seed, int64_t i) { as_rng_seed(r, seed ^ ((uint64_t)i * 0xD1B54A32D192ED03ull + 0x2545F4914F6CDD1Dull)); }

// log sum_j e^(scale z_j) of a row of host logits: the host (CPU) backend's logsumexp.
static double log_sum_exp_f(const float *z, int64_t V, float scale) { return as_backend_cpu.logsumexp(z, V, scale); }

typedef struct engine {
    model *m;
    int n_pol;                   // 2: the geometric mixture of pol[0] (pi_t) and pol[1] (pi_0); 1: one policy
    model_lora lora[2];          // rank 0: the base
    float alpha, temp;
    const mixture_config *c;
    kv_cache *kv[2];
    float *logits[2];            // (batch_size, V) the next-token logits of every slot
    int32_t *tok, *seq, *pos;    // model_batch scratch
    bool *want;
    int32_t *slot_of_row;        // which slot a logits row belongs to
} engine;

// Sets the model's adapters to policy k.
static int engine_use(engine *e, int k) { return model_set_lora(e->m, e->lora[k].rank ? &e->lora[k] : NULL); }

// Runs one forward per policy over the batch built in e->tok/seq/pos/want (n
// tokens, n_out rows wanted), rows written to the slots of slot_of_row.
static int engine_forward(engine *e, int32_t n, int32_t n_out, float *tmp) {
    const int64_t V = e->m->cfg.n_vocab;
    model_batch b = {.n_tokens = n, .token = e->tok, .seq = e->seq, .pos = e->pos, .want_logits = e->want};
    for (int k = 0; k < e->n_pol; k++) {
        if (engine_use(e, k) || model_forward(e->m, e->kv[k], &b, tmp)) return AS_FAIL;
        for (int32_t r = 0; r < n_out; r++) memcpy(e->logits[k] + (int64_t)e->slot_of_row[r] * V, tmp + (int64_t)r * V, sizeof(float) * (size_t)V);
    }
    return AS_OK;
}

static bool is_end(const mixture_config *c, int32_t t) {
    for (int32_t i = 0; i < c->n_end_ids; i++)
        if (c->end_ids[i] == t) return true;
    return false;
}

// One draw for slot s from its logits: the token, and (mixtures) log Z_s,
// log q(v|s), log pi_t(v|s), log pi_0(v|s).  Three passes over the
// vocabulary recompute a_v = (1-alpha) log pi_t(v|s) + alpha log pi_0(v|s)
// instead of storing it: log Z_s = logsumexp_v a_v and q(v|s) = exp(a_v - log Z_s).
static int32_t engine_draw(const engine *e, int64_t s, as_rng *rng, double *log_z, double *lq, double *lt, double *l0) {
    const int64_t V = e->m->cfg.n_vocab;
    const float *zt = e->logits[0] + s * V, *z0 = e->n_pol > 1 ? e->logits[1] + s * V : NULL;
    const double wt = e->n_pol > 1 ? 1.0 - e->alpha : 1.0 / e->temp, w0 = e->n_pol > 1 ? e->alpha : 0.0;
    // a_v = wt * (zt_v - lse_t) + w0 * (z0_v - lse_0); for one policy lse_t is folded into log Z.
    const double lse_t = e->n_pol > 1 ? log_sum_exp_f(zt, V, 1.0f) : 0.0, lse_0 = z0 ? log_sum_exp_f(z0, V, 1.0f) : 0.0;
#define A(v) (wt * ((double)zt[v] - lse_t) + (z0 ? w0 * ((double)z0[v] - lse_0) : 0.0))
    double amax = -INFINITY;
    for (int64_t v = 0; v < V; v++) amax = fmax(amax, A(v));
    double sum = 0.0;
    for (int64_t v = 0; v < V; v++) sum += exp(A(v) - amax);
    const double target = as_rng_uniform(rng) * sum;
    double acc = 0.0;
    int64_t pick = -1;
    for (int64_t v = 0; v < V; v++) {
        const double p = exp(A(v) - amax);
        if (p > 0.0) pick = v; // the last token of non-zero mass, should rounding leave target unreached
        acc += p;
        if (acc > target && p > 0.0) break;
    }
    const double lz = amax + log(sum);
    *log_z = lz;
    *lq = A(pick) - lz;
    *lt = e->n_pol > 1 ? (double)zt[pick] - lse_t : 0.0;
    *l0 = z0 ? (double)z0[pick] - lse_0 : 0.0;
#undef A
    return (int32_t)pick;
}

// Answers first .. first+n-1 (n <= batch_size), one per slot.
static int engine_chunk(engine *e, const int32_t *const *prompt, const int64_t *n_prompt, int64_t first, int64_t n, mixture_sample *out,
                        float *tmp) {
    const mixture_config *c = e->c;
    for (int64_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].ids = as_malloc(sizeof(int32_t) * (size_t)c->max_new_tokens);
    }
    for (int k = 0; k < e->n_pol; k++)
        for (int32_t s = 0; s < e->kv[k]->n_seq; s++) kv_cache_clear_seq(e->kv[k], s);
    // Prefill each distinct prompt once (runs of the same prompt share it).
    int32_t nt = 0, n_out = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && prompt[i] == prompt[i - 1] && n_prompt[i] == n_prompt[i - 1]) continue;
        for (int64_t j = 0; j < n_prompt[i]; j++, nt++) {
            e->tok[nt] = prompt[i][j], e->seq[nt] = (int32_t)i, e->pos[nt] = (int32_t)j;
            e->want[nt] = j == n_prompt[i] - 1;
            if (e->want[nt]) e->slot_of_row[n_out++] = (int32_t)i;
        }
    }
    if (engine_forward(e, nt, n_out, tmp)) return AS_FAIL;
    const int64_t V = e->m->cfg.n_vocab;
    for (int64_t i = 1; i < n; i++)
        if (prompt[i] == prompt[i - 1] && n_prompt[i] == n_prompt[i - 1])
            for (int k = 0; k < e->n_pol; k++) {
                kv_cache_copy_seq(e->kv[k], (int32_t)i, (int32_t)(i - 1));
                memcpy(e->logits[k] + i * V, e->logits[k] + (i - 1) * V, sizeof(float) * (size_t)V);
            }

    as_rng *rng = as_malloc(sizeof(as_rng) * (size_t)n);
    bool *active = as_malloc(sizeof(bool) * (size_t)n);
    int32_t *next = as_malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        seed_stream(&rng[i], c->seed, c->first_index + first + i);
        active[i] = true;
    }
    int rc = AS_OK;
    for (int32_t step = 0; step < c->max_new_tokens; step++) {
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
        for (int64_t i = 0; i < n; i++) {
            if (!active[i]) continue;
            double lz, lq, lt, l0;
            const int32_t v = engine_draw(e, i, &rng[i], &lz, &lq, &lt, &l0);
            mixture_sample *o = &out[i];
            o->ids[o->n_ids++] = v;
            o->log_w += lz, o->logq += lq, o->logp_t += lt, o->logp_0 += l0;
            if (is_end(c, v)) o->ended = true, active[i] = false;
            next[i] = v;
        }
        if (step + 1 == c->max_new_tokens) break;
        nt = 0;
        for (int64_t i = 0; i < n; i++) {
            if (!active[i]) continue;
            e->tok[nt] = next[i], e->seq[nt] = (int32_t)i, e->pos[nt] = (int32_t)(n_prompt[i] + out[i].n_ids - 1), e->want[nt] = true;
            e->slot_of_row[nt] = (int32_t)i;
            nt++;
        }
        if (!nt) break;
        if ((rc = engine_forward(e, nt, nt, tmp))) break;
    }
    if (e->n_pol == 1)
        for (int64_t i = 0; i < n; i++) out[i].log_w = 0.0;
    free(rng), free(active), free(next);
    return rc;
}

static int engine_run(engine *e, const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out) {
    model *m = e->m;
    const mixture_config *c = e->c;
    if (mixture_config_check(c, m->cfg.n_vocab)) return AS_FAIL;
    int64_t max_prompt = 0, sum_chunk = 0;
    for (int64_t i = 0; i < n; i++) {
        if (n_prompt[i] < 1 || !prompt[i]) return as_error("mixture: prompt %lld is empty", (long long)i);
        for (int64_t j = 0; j < n_prompt[i]; j++)
            if (prompt[i][j] < 0 || prompt[i][j] >= m->cfg.n_vocab)
                return as_error("mixture: prompt %lld token %lld: id %d outside the vocabulary", (long long)i, (long long)j, prompt[i][j]);
        max_prompt = AS_MAX(max_prompt, n_prompt[i]);
    }
    if (max_prompt + c->max_new_tokens > INT32_MAX / 2) return as_error("mixture: prompt of %lld tokens is too long", (long long)max_prompt);
    const int32_t B = (int32_t)AS_MIN((int64_t)c->batch_size, AS_MAX(n, (int64_t)1));
    const int32_t n_ctx = (int32_t)(max_prompt + c->max_new_tokens);
    sum_chunk = (int64_t)B * max_prompt + B; // tokens of the largest forward call (prefill of B prompts)
    const int64_t V = m->cfg.n_vocab;
    const model_lora saved = m->lora;
    int rc = AS_OK;
    for (int k = 0; k < e->n_pol; k++) {
        e->kv[k] = model_kv_cache(m, B, n_ctx, c->precision);
        if (!e->kv[k]) rc = AS_FAIL;
        e->logits[k] = as_malloc(sizeof(float) * (size_t)(B * V));
    }
    e->tok = as_malloc(sizeof(int32_t) * (size_t)sum_chunk);
    e->seq = as_malloc(sizeof(int32_t) * (size_t)sum_chunk);
    e->pos = as_malloc(sizeof(int32_t) * (size_t)sum_chunk);
    e->want = as_malloc(sizeof(bool) * (size_t)sum_chunk);
    e->slot_of_row = as_malloc(sizeof(int32_t) * (size_t)B);
    float *tmp = as_malloc(sizeof(float) * (size_t)(B * V));
    for (int64_t i0 = 0; rc == AS_OK && i0 < n; i0 += B) {
        const int64_t nc = AS_MIN((int64_t)B, n - i0);
        rc = engine_chunk(e, prompt + i0, n_prompt + i0, i0, nc, out + i0, tmp);
        if (rc)
            for (int64_t i = 0; i < i0 + nc; i++) mixture_sample_free(&out[i]);
    }
    model_set_lora(m, saved.rank ? &saved : NULL);
    for (int k = 0; k < e->n_pol; k++) kv_cache_free(e->kv[k]), free(e->logits[k]);
    free(e->tok), free(e->seq), free(e->pos), free(e->want), free(e->slot_of_row), free(tmp);
    return rc;
}

int mixture_sample_token(model *m, const model_lora *lora_t, const model_lora *lora_0, const mixture_config *c,
                         const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out) {
    engine e = {.m = m, .n_pol = 2, .alpha = c->alpha, .temp = 1.0f, .c = c};
    if (lora_t) e.lora[0] = *lora_t;
    if (lora_0) e.lora[1] = *lora_0;
    return engine_run(&e, prompt, n_prompt, n, out);
}

int mixture_sample_policy(model *m, const model_lora *lora, float temperature, const mixture_config *c,
                          const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out) {
    if (!(temperature > 0.0f) || !isfinite(temperature)) return as_error("mixture: temperature %g: expected > 0", temperature);
    engine e = {.m = m, .n_pol = 1, .alpha = 0.0f, .temp = temperature, .c = c};
    if (lora) e.lora[0] = *lora;
    return engine_run(&e, prompt, n_prompt, n, out);
}

int mixture_sample_sir(model *m, const model_lora *lora_t, const model_lora *lora_0, const mixture_config *c, int32_t K,
                       const int32_t *const *prompt, const int64_t *n_prompt, int64_t n, mixture_sample *out, double *ess) {
    if (K < 1) return as_error("mixture: sir with K = %d candidates: expected >= 1", K);
    const int64_t nk = n * K;
    const int32_t **rep = as_malloc(sizeof(int32_t *) * (size_t)AS_MAX(nk, (int64_t)1));
    int64_t *nrep = as_malloc(sizeof(int64_t) * (size_t)AS_MAX(nk, (int64_t)1));
    for (int64_t i = 0; i < n; i++)
        for (int32_t j = 0; j < K; j++) rep[i * K + j] = prompt[i], nrep[i * K + j] = n_prompt[i];
    mixture_sample *cand = as_calloc((size_t)AS_MAX(nk, (int64_t)1), sizeof *cand);
    mixture_config ck = *c; // prompt i's candidates are answers i K .. i K + K - 1 of the token-level job
    ck.first_index = c->first_index * K;
    int rc = mixture_sample_token(m, lora_t, lora_0, &ck, rep, nrep, nk, cand);
    if (rc == AS_OK) {
        double *lw = as_malloc(sizeof(double) * (size_t)K);
        for (int64_t i = 0; i < n; i++) {
            mixture_sample *ci = cand + i * K;
            double mx = -INFINITY, sum = 0.0;
            for (int32_t j = 0; j < K; j++) lw[j] = ci[j].log_w, mx = fmax(mx, lw[j]);
            for (int32_t j = 0; j < K; j++) sum += exp(lw[j] - mx);
            // The resampling draw has a stream of its own, after all candidates'.
            as_rng r;
            seed_stream(&r, c->seed ^ 0x5151515151515151ull, c->first_index + i);
            const double target = as_rng_uniform(&r) * sum;
            double acc = 0.0;
            int32_t pick = K - 1;
            for (int32_t j = 0; j < K; j++) {
                acc += exp(lw[j] - mx);
                if (acc > target) {
                    pick = j;
                    break;
                }
            }
            if (ess) ess[i] = mixture_ess(lw, K);
            out[i] = ci[pick];
            memset(&ci[pick], 0, sizeof ci[pick]);
            for (int32_t j = 0; j < K; j++) mixture_sample_free(&ci[j]);
        }
        free(lw);
    }
    free(cand), free(rep), free(nrep);
    return rc;
}
