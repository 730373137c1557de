// Sampling chain (see sampler.h for the semantics, which follow llama.cpp).
//
// Cost for a 49152-token vocabulary: greedy is one pass over the logits; top_k
// is a heap selection straight from the logits (one comparison per token in
// the common case); without top_k, top_p finds its set by quickselect on
// probability mass (expected O(V), no sort); min_p and the draw are linear
// passes over what is left.
#include "generate/sampler.h"

#include <math.h>
#include <string.h>

#include "tensor/backend.h"
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

// ---- the chain ----

// Marks the distinct tokens of the penalty window (CTRL's repetition penalty
// applies once per token, however often it occurred); returns whether any.
static bool penalty_mark(sampler *s, const int32_t *history, int64_t n_history, bool on) {
    const sampler_params *p = &s->params;
    if (p->repeat_penalty == 1.0f || p->repeat_last_n == 0 || n_history <= 0) return false;
    int64_t n = p->repeat_last_n < 0 ? n_history : AS_MIN(n_history, (int64_t)p->repeat_last_n);
    for (const int32_t *w = history + (n_history - n); w < history + n_history; w++)
        if (*w >= 0 && *w < s->n_vocab) s->penalised[*w] = on;
    return true;
}

// The logit the filters see: NaN counts as -inf; a penalised positive logit is
// divided by the penalty, a negative one multiplied (llama.cpp's fix to CTRL).
static inline float chain_logit(const sampler *s, const float *logits, int32_t i) {
    float l = logits[i];
    if (isnan(l)) return -INFINITY;
    if (s->penalised[i]) l = l <= 0.0f ? l * s->params.repeat_penalty : l / s->params.repeat_penalty;
    return l;
}

// top_k straight from the logits: a heap of the k best with the worst at the
// root, so the common case (not better than the root) is one comparison.
static void select_top_k(sampler *s, const float *logits, int64_t k) {
    sampler_cand *c = s->cand;
    for (int32_t i = 0; i < k; i++) c[i] = (sampler_cand){.id = i, .logit = chain_logit(s, logits, i)};
    for (int64_t i = k / 2 - 1; i >= 0; i--) heap_sift_down(c, k, i);
    for (int32_t i = (int32_t)k; i < s->n_vocab; i++) {
        float l = chain_logit(s, logits, i);
        if (l > c[0].logit) { // ids grow, so on equal logits the root (lower id) wins
            c[0] = (sampler_cand){.id = i, .logit = l};
            heap_sift_down(c, k, 0);
        }
    }
    for (int64_t end = k - 1; end > 0; end--) { // heap sort: best first
        cand_swap(&c[0], &c[end]);
        heap_sift_down(c, end, 0);
    }
    s->n_cand = k;
    s->sorted = true;
}

// Logits are host memory (model_forward returns them there), so their row
// ops run on the host's backend, the CPU's.
static const as_backend *const host = &as_backend_cpu;

// e^(l - mx) of the candidates' logits, into w[0..n): the backend's exp, vexp.h's
// exp (the one of every softmax in alphaspin; libm's expf may differ between
// CPUs and library builds), the same bits on every ISA, so the same
// candidates, probabilities and draws; every other step of the chain is
// scalar code in a fixed order.  A logit of -inf (NaN, or a banned token) gets
// exactly 0, as with expf, rather than the approximation's e^-87 floor.
static void cand_exp(const sampler_cand *c, int64_t n, float mx, float *w) {
    for (int64_t i = 0; i < n; i++) w[i] = c[i].logit - mx;
    host->exp(w, n);
    for (int64_t i = 0; i < n; i++)
        if (c[i].logit == -INFINITY) w[i] = 0.0f;
}

#define CAND_EXP_CHUNK 256

// Softmax over the candidates into .p (accumulated in double).
static void cand_softmax(sampler_cand *c, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    double sum = 0.0;
    float w[CAND_EXP_CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CAND_EXP_CHUNK) {
        const int64_t m = AS_MIN((int64_t)CAND_EXP_CHUNK, n - i0);
        cand_exp(c + i0, m, mx, w);
        for (int64_t i = 0; i < m; i++) {
            c[i0 + i].p = w[i];
            sum += w[i];
        }
    }
    for (int64_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

// Median of three by the candidate order, as the partition pivot.
static sampler_cand pivot3(const sampler_cand *a, const sampler_cand *b, const sampler_cand *c) {
    if (cand_better(a, b)) return cand_better(b, c) ? *b : cand_better(a, c) ? *c : *a;
    return cand_better(a, c) ? *a : cand_better(b, c) ? *c : *b;
}

// Moves to the front the smallest set of best candidates whose mass reaches
// p (the set top_p keeps) and returns its size, without sorting: quickselect
// on the candidate order, descending into the side where the cut lies.
// Invariant: the cut k satisfies lo < k <= hi, c[0..lo) are the lo best with
// mass acc < p, c[lo..hi) the next ones in any order.  Expected O(n).
static int64_t select_top_mass(sampler_cand *c, int64_t n, double p) {
    int64_t lo = 0, hi = n;
    double acc = 0.0;
    while (hi - lo > 1) {
        sampler_cand pv = pivot3(&c[lo], &c[lo + (hi - lo) / 2], &c[hi - 1]);
        int64_t i = lo;
        double m = 0.0;
        for (int64_t j = lo; j < hi; j++)
            if (cand_better(&c[j], &pv)) {
                m += c[j].p;
                cand_swap(&c[i++], &c[j]);
            }
        if (acc + m >= p) { // the cut is among the better ones (i > lo, since acc < p)
            hi = i;
            continue;
        }
        acc += m;
        for (int64_t j = i; j < hi; j++) // the pivot is the best of the rest: put it at i
            if (c[j].id == pv.id) {
                cand_swap(&c[i], &c[j]);
                break;
            }
        acc += c[i].p;
        if (acc >= p) return i + 1;
        lo = i + 1;
    }
    return hi;
}

static void apply_top_p(sampler *s) {
    double top_p = s->params.top_p;
    if (top_p >= 1.0) return;
    sampler_cand *c = s->cand;
    cand_softmax(c, s->n_cand);
    if (!s->sorted) {
        s->n_cand = select_top_mass(c, s->n_cand, top_p);
        return;
    }
    double cum = 0.0;
    for (int64_t i = 0; i < s->n_cand; i++) {
        cum += c[i].p;
        if (cum >= top_p) {
            s->n_cand = i + 1;
            return;
        }
    }
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

int64_t sampler_distribution(sampler *s, const float *logits, const int32_t *history, int64_t n_history) {
    const sampler_params *p = &s->params;
    bool marked = penalty_mark(s, history, n_history, true);
    s->sorted = false;
    if (p->temperature <= 0.0f) {
        int32_t best = 0;
        float best_l = chain_logit(s, logits, 0);
        for (int32_t i = 1; i < s->n_vocab; i++) {
            float l = chain_logit(s, logits, i);
            if (l > best_l) best = i, best_l = l; // strict: ties stay on the lower id
        }
        s->cand[0] = (sampler_cand){.id = best, .logit = best_l, .p = 1.0f};
        s->n_cand = 1;
    } else {
        if (p->top_k > 0 && p->top_k < s->n_vocab) {
            select_top_k(s, logits, p->top_k);
        } else {
            for (int32_t i = 0; i < s->n_vocab; i++) s->cand[i] = (sampler_cand){.id = i, .logit = chain_logit(s, logits, i)};
            s->n_cand = s->n_vocab;
        }
        apply_top_p(s);
        apply_min_p(s);
        if (p->temperature != 1.0f) {
            float inv_t = 1.0f / p->temperature;
            for (int64_t i = 0; i < s->n_cand; i++) s->cand[i].logit *= inv_t;
        }
        cand_softmax(s->cand, s->n_cand);
    }
    if (marked) penalty_mark(s, history, n_history, false);
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
    float w[CAND_EXP_CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CAND_EXP_CHUNK) {
        const int64_t m = AS_MIN((int64_t)CAND_EXP_CHUNK, n - i0);
        cand_exp(c + i0, m, mx, w);
        for (int64_t i = 0; i < m; i++) sum += w[i];
    }
    double target = as_rng_uniform(&s->rng) * sum, run = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += CAND_EXP_CHUNK) {
        const int64_t m = AS_MIN((int64_t)CAND_EXP_CHUNK, n - i0);
        cand_exp(c + i0, m, mx, w);
        for (int64_t i = 0; i < m; i++) {
            run += w[i];
            if (run > target) return c[i0 + i].id;
        }
    }
    return c[n - 1].id; // unreachable: run == sum > target at the end
}

double sampler_logprob(const float *logits, int32_t n_vocab, int32_t token) { return host->logprob(logits, n_vocab, token); }

// The first index of the largest value, ties to the lowest id (the backend's
// argmax, ops.h: NaNs never win, a NaN at 0 returns 0).
int32_t sampler_argmax(const float *logits, int32_t n_vocab) { return host->argmax(logits, n_vocab); }
