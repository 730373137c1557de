// Sampling chain (see sampler.h for the semantics, which follow llama.cpp).
//
// Cost for a 49152-token vocabulary: one copy of the logits, then top_k by
// heap selection (O(V log k)); top_p without top_k first selects the best 256
// and sorts everything only when those do not reach p; min_p and the draw are
// linear passes over what is left.
#include "generate/sampler.h"

#include <math.h>
#include <string.h>

#include "util/common.h"

sampler_params sampler_params_default(void) {
    return (sampler_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 42};
}

sampler_params sampler_params_greedy(void) {
    return (sampler_params){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

int sampler_params_check(const sampler_params *p) {
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return as_error("sampling: temperature %g: expected a finite value >= 0", p->temperature);
    if (p->top_k < 0) return as_error("sampling: top_k %d: expected >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return as_error("sampling: top_p %g: expected a value in (0, 1] (1 = off)", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return as_error("sampling: min_p %g: expected a value in [0, 1] (0 = off)", p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return as_error("sampling: repeat_penalty %g: expected a finite value > 0 (1 = off)", p->repeat_penalty);
    if (p->repeat_last_n < -1)
        return as_error("sampling: repeat_last_n %d: expected >= -1 (0 = off, -1 = whole sequence)", p->repeat_last_n);
    return 0;
}

int sampler_init(sampler *s, const sampler_params *p, int32_t n_vocab) {
    memset(s, 0, sizeof *s);
    if (n_vocab <= 0) return as_error("sampling: vocabulary size %d: expected > 0", n_vocab);
    s->n_vocab = n_vocab;
    s->cand = as_malloc((size_t)n_vocab * sizeof *s->cand);
    s->penalised = as_calloc((size_t)n_vocab, 1);
    if (sampler_reset(s, p)) {
        sampler_free(s);
        return -1;
    }
    return 0;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->penalised);
    memset(s, 0, sizeof *s);
}

int sampler_reset(sampler *s, const sampler_params *p) {
    if (sampler_params_check(p)) return -1;
    s->params = *p;
    as_rng_seed(&s->rng, p->seed);
    s->n_cand = 0;
    return 0;
}

// ---- ordering: decreasing logit, ties to the lower id ----

static inline int cand_better(const sampler_cand *a, const sampler_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const sampler_cand *a = pa, *b = pb;
    return cand_better(a, b) ? -1 : cand_better(b, a) ? 1 : 0;
}

static inline void cand_swap(sampler_cand *a, sampler_cand *b) {
    sampler_cand t = *a;
    *a = *b;
    *b = t;
}

// Heap of the m best seen so far with the WORST at the root: a newcomer only
// has to beat the root.
static void heap_sift_down(sampler_cand *h, int64_t m, int64_t i) {
    for (;;) {
        int64_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < m && cand_better(&h[worst], &h[l])) worst = l;
        if (r < m && cand_better(&h[worst], &h[r])) worst = r;
        if (worst == i) return;
        cand_swap(&h[i], &h[worst]);
        i = worst;
    }
}

// Permutes c[0..n) so that c[0..m) are the m best, sorted best first.  O(n log m).
static void cand_select_top(sampler_cand *c, int64_t n, int64_t m) {
    if (m >= n) {
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        return;
    }
    for (int64_t i = m / 2 - 1; i >= 0; i--) heap_sift_down(c, m, i);
    for (int64_t i = m; i < n; i++) {
        if (cand_better(&c[i], &c[0])) {
            cand_swap(&c[i], &c[0]);
            heap_sift_down(c, m, 0);
        }
    }
    // Heap sort: moving the root (worst) to the end leaves the best first.
    for (int64_t end = m - 1; end > 0; end--) {
        cand_swap(&c[0], &c[end]);
        heap_sift_down(c, end, 0);
    }
}

// ---- the chain ----

// CTRL's repetition penalty, once per distinct token of the window.
static void apply_penalty(sampler *s, const int32_t *history, int64_t n_history) {
    const sampler_params *p = &s->params;
    if (p->repeat_penalty == 1.0f || p->repeat_last_n == 0 || n_history <= 0) return;
    int64_t n = p->repeat_last_n < 0 ? n_history : AS_MIN(n_history, (int64_t)p->repeat_last_n);
    const int32_t *w = history + (n_history - n);
    for (int64_t i = 0; i < n; i++) {
        int32_t id = w[i];
        if (id < 0 || id >= s->n_vocab || s->penalised[id]) continue;
        s->penalised[id] = 1;
        float *l = &s->cand[id].logit; // cand is still in id order here
        *l = *l <= 0.0f ? *l * p->repeat_penalty : *l / p->repeat_penalty;
    }
    for (int64_t i = 0; i < n; i++)
        if (w[i] >= 0 && w[i] < s->n_vocab) s->penalised[w[i]] = 0;
}

static void apply_top_k(sampler *s) {
    int64_t k = s->params.top_k;
    if (k <= 0 || k >= s->n_cand) return;
    cand_select_top(s->cand, s->n_cand, k);
    s->n_cand = k;
    s->sorted = true;
}

// Softmax over the candidates into .p (accumulated in double).
static void cand_softmax(sampler_cand *c, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        c[i].p = expf(c[i].logit - mx);
        sum += c[i].p;
    }
    for (int64_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

static void apply_top_p(sampler *s) {
    double top_p = s->params.top_p;
    if (top_p >= 1.0) return;
    sampler_cand *c = s->cand;
    int64_t n = s->n_cand;
    cand_softmax(c, n);
    // Most of the time the mass p is reached within a few hundred tokens: sort
    // only those, and everything if they are not enough.
    int64_t have = n;
    if (!s->sorted) {
        have = AS_MIN(n, (int64_t)256);
        cand_select_top(c, n, have);
    }
    double cum = 0.0;
    int64_t keep = n;
    for (int64_t i = 0; i < n; i++) {
        if (i == have) {
            qsort(c, (size_t)n, sizeof *c, cand_cmp);
            have = n;
        }
        cum += c[i].p;
        if (cum >= top_p) {
            keep = i + 1;
            break;
        }
    }
    s->n_cand = keep;
    s->sorted = true;
}

// p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p).
static void apply_min_p(sampler *s) {
    if (s->params.min_p <= 0.0f) return;
    sampler_cand *c = s->cand;
    float mx = -INFINITY;
    for (int64_t i = 0; i < s->n_cand; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    float thr = mx + logf(s->params.min_p);
    int64_t k = 0;
    for (int64_t i = 0; i < s->n_cand; i++)
        if (c[i].logit >= thr) c[k++] = c[i]; // stable: keeps the order
    s->n_cand = k;
}

static void fill_candidates(sampler *s, const float *logits, const int32_t *history, int64_t n_history) {
    for (int32_t i = 0; i < s->n_vocab; i++) {
        float l = logits[i];
        s->cand[i] = (sampler_cand){.id = i, .logit = isnan(l) ? -INFINITY : l, .p = 0.0f};
    }
    s->n_cand = s->n_vocab;
    s->sorted = false;
    apply_penalty(s, history, n_history);
}

int64_t sampler_distribution(sampler *s, const float *logits, const int32_t *history, int64_t n_history) {
    fill_candidates(s, logits, history, n_history);
    if (s->params.temperature <= 0.0f) {
        int64_t best = 0;
        for (int64_t i = 1; i < s->n_cand; i++)
            if (s->cand[i].logit > s->cand[best].logit) best = i; // strict: ties stay on the lower id
        s->cand[0] = s->cand[best];
        s->cand[0].p = 1.0f;
        s->n_cand = 1;
        s->sorted = true;
        return 1;
    }
    apply_top_k(s);
    apply_top_p(s);
    apply_min_p(s);
    float inv_t = 1.0f / s->params.temperature;
    if (s->params.temperature != 1.0f)
        for (int64_t i = 0; i < s->n_cand; i++) s->cand[i].logit *= inv_t;
    cand_softmax(s->cand, s->n_cand);
    return s->n_cand;
}

int32_t sampler_sample(sampler *s, const float *logits, const int32_t *history, int64_t n_history) {
    int64_t n = sampler_distribution(s, logits, history, n_history);
    if (s->params.temperature <= 0.0f) return s->cand[0].id;
    // Inverse-CDF draw on unnormalised weights recomputed in double, so the
    // target u * sum is always below the final running sum and a zero-weight
    // candidate can never be chosen (strict >).
    const sampler_cand *c = s->cand;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += expf(c[i].logit - mx);
    double target = as_rng_uniform(&s->rng) * sum, run = 0.0;
    for (int64_t i = 0; i < n; i++) {
        run += expf(c[i].logit - mx);
        if (run > target) return c[i].id;
    }
    return c[n - 1].id; // unreachable: run == sum > target at the end
}

double sampler_logprob(const float *logits, int32_t n_vocab, int32_t token) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    return (double)logits[token] - mx - log(sum);
}

int32_t sampler_argmax(const float *logits, int32_t n_vocab) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}
