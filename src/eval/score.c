// Log-likelihood of continuations, lm-evaluation-harness's loglikelihood
// requests, on the model: the tokens an item's choices share (its context) are
// run once into one KV sequence, copied to one sequence per choice, and every
// choice continues from there (a choice of one token, MMLU's letters, is scored
// from the shared row and takes no sequence); several items go into the same
// forward calls.
// Across items of one KV group, an item whose shared tokens start with >= 16
// tokens of an earlier item's (the few-shot examples of a subject, fixed) copies
// those positions from that item's sequence and runs only the rest: the same
// tokens at the same positions, so the same scores up to the summation order
// of kernels over a different number of tokens per call.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_internal.h"
#include "tensor/backend.h"
#include "util/common.h"

typedef struct choice_toks {
    int32_t *full;   // context tokens ++ continuation tokens
    int32_t n_full, n_ctx;
    int32_t seq;     // its KV sequence, when it runs tokens past the shared ones
} choice_toks;

typedef struct item_plan {
    choice_toks *ch;
    int32_t n_choices;
    int32_t shared;  // P: tokens run once (the common prefix of every choice's input, <= each context)
    int32_t n_inp;   // longest input (n_full - 1) among choices
    int32_t seq0;    // first KV sequence of the item
    int32_t n_seq;   // sequences it needs: one per choice that runs tokens past `shared` (at least one)
    int64_t leader;  // item whose shared KV positions [0, reuse) this one copies, or -1
    int32_t reuse;
} item_plan;

static int32_t *encode(const tokenizer *tok, const char *s, size_t n, int32_t *len) {
    int32_t *ids = NULL;
    size_t k = 0;
    if (tokenizer_encode(tok, s, n, false, false, &ids, &k) != AS_OK) return NULL;
    *len = (int32_t)k;
    if (!ids) ids = as_malloc(sizeof *ids);
    return ids;
}

// lm-eval's _encode_pair: all trailing whitespace of the context (Python's
// context.rstrip(): spaces, "\n", "\t", and the Unicode spaces) moves to the
// start of the continuation; the continuation's tokens are those of
// encode(ctx + cont) after the first len(encode(ctx)) tokens.
static int encode_pair(const eval_model_scorer *s, const char *ctx, const char *cont, int32_t bos, choice_toks *out) {
    size_t ncont = strlen(cont), nc = eval_py_rstrip_len(ctx, strlen(ctx));
    size_t sp = strlen(ctx) - nc;
    char *whole = as_malloc(nc + sp + ncont + 1);
    memcpy(whole, ctx, nc + sp);
    memcpy(whole + nc + sp, cont, ncont + 1);
    int32_t n_ctx, n_whole;
    int32_t *c = encode(s->tok, ctx, nc, &n_ctx);
    int32_t *w = c ? encode(s->tok, whole, nc + sp + ncont, &n_whole) : NULL;
    free(whole);
    if (!c || !w) { free(c); return AS_FAIL; }
    int32_t n_cont = AS_MAX(n_whole - n_ctx, 0);
    int32_t pre = (bos >= 0 || n_ctx == 0) ? 1 : 0; // a BOS, or lm-eval's prefix token for an empty context
    out->n_ctx = n_ctx + pre;
    out->n_full = out->n_ctx + n_cont;
    out->full = as_malloc((size_t)AS_MAX(out->n_full, 1) * sizeof *out->full);
    if (pre) out->full[0] = bos >= 0 ? bos : eval_prefix_token(s->tok);
    memcpy(out->full + pre, c, (size_t)n_ctx * sizeof *c);
    memcpy(out->full + out->n_ctx, w + n_ctx, (size_t)n_cont * sizeof *w);
    free(c), free(w);
    // Left-truncate to the model's context, as lm-eval (inp[-(max_length + 1):]).
    const int32_t max = s->m->cfg.n_ctx_train > 0 ? s->m->cfg.n_ctx_train : 2048;
    if (out->n_full - 1 > max) {
        int32_t drop = out->n_full - 1 - max;
        memmove(out->full, out->full + drop, (size_t)(out->n_full - drop) * sizeof *out->full);
        out->n_full -= drop;
        out->n_ctx = AS_MAX(out->n_ctx - drop, 1);
    }
    return AS_OK;
}

int32_t eval_prefix_token(const tokenizer *tok) {
    const int32_t bos = tokenizer_bos(tok);
    return bos >= 0 ? bos : tokenizer_eos(tok);
}

static void plan_free(item_plan *p) {
    for (int32_t c = 0; c < p->n_choices; c++) free(p->ch[c].full);
    free(p->ch);
}

static int plan_item(const eval_model_scorer *s, const eval_mc_item *it, int32_t bos, item_plan *p) {
    memset(p, 0, sizeof *p);
    p->n_choices = it->n_choices;
    p->ch = as_calloc((size_t)it->n_choices, sizeof *p->ch);
    for (int32_t c = 0; c < it->n_choices; c++) {
        if (it->tok_full) {
            choice_toks *ch = &p->ch[c];
            ch->n_full = it->tok_n_full[c], ch->n_ctx = it->tok_n_ctx[c];
            ch->full = as_malloc((size_t)AS_MAX(ch->n_full, 1) * sizeof *ch->full);
            memcpy(ch->full, it->tok_full[c], (size_t)ch->n_full * sizeof *ch->full);
        } else if (encode_pair(s, it->ctx[c], it->cont[c], bos, &p->ch[c]) != AS_OK) {
            plan_free(p);
            return AS_FAIL;
        }
        if (it->tokens) {
            const choice_toks *ch = &p->ch[c];
            it->tokens[c] = as_malloc((size_t)AS_MAX(ch->n_full, 1) * sizeof *ch->full);
            memcpy(it->tokens[c], ch->full, (size_t)ch->n_full * sizeof *ch->full);
            it->n_tokens[c] = ch->n_full, it->n_ctx_tokens[c] = ch->n_ctx;
        }
    }
    int32_t P = p->ch[0].n_ctx;
    for (int32_t c = 0; c < it->n_choices; c++) {
        const choice_toks *a = &p->ch[c], *b = &p->ch[0];
        P = AS_MIN(P, a->n_ctx);
        int32_t k = 0;
        while (k < P && k < a->n_full - 1 && k < b->n_full - 1 && a->full[k] == b->full[k]) k++;
        P = AS_MIN(P, k);
        p->n_inp = AS_MAX(p->n_inp, a->n_full - 1);
    }
    p->shared = P;
    // A choice whose input is the shared tokens (MMLU's one-token letters) is
    // scored from the shared row and needs no sequence of its own.
    for (int32_t c = 0; c < it->n_choices; c++) p->n_seq += p->ch[c].n_full - 1 > P;
    p->n_seq = AS_MAX(p->n_seq, 1);
    return AS_OK;
}

// Where a wanted logit row goes: item, choice (-1: the shared row, used by every
// choice whose context ends there) and position.
typedef struct row_dst { int32_t item, choice, pos; } row_dst;

typedef struct fwd_batch {
    int32_t n, cap;
    int32_t *token, *seq, *pos;
    bool *want;
    row_dst *dst;
    int32_t n_rows;
} fwd_batch;

static void fb_push(fwd_batch *b, int32_t token, int32_t seq, int32_t pos, bool want, row_dst d) {
    b->token[b->n] = token, b->seq[b->n] = seq, b->pos[b->n] = pos, b->want[b->n] = want;
    if (want) b->dst[b->n_rows++] = d;
    b->n++;
}

// log softmax(l)[t] (the host backend's logprob, in double); *greedy: t is
// the argmax (the first of equal maxima, as torch's argmax).
static double log_prob(const float *l, int32_t nv, int32_t t, bool *greedy) {
    *greedy = as_backend_cpu.argmax(l, nv) == t;
    return as_backend_cpu.logprob(l, nv, t);
}

static int fb_run(eval_model_scorer *s, kv_cache *kv, fwd_batch *b, float *logits, const item_plan *plans,
                  eval_mc_item *items) {
    if (b->n == 0) return AS_OK;
    model_batch mb = {.n_tokens = b->n, .token = b->token, .seq = b->seq, .pos = b->pos, .want_logits = b->want};
    if (model_forward(s->m, kv, &mb, logits) != AS_OK) return AS_FAIL;
    s->n_forward_calls++;
    s->n_tokens_run += b->n;
    const int32_t nv = s->m->cfg.n_vocab;
    for (int32_t r = 0; r < b->n_rows; r++) {
        const row_dst *d = &b->dst[r];
        const item_plan *p = &plans[d->item];
        const float *l = logits + (size_t)r * (size_t)nv;
        // Logits at position pos predict token pos + 1 of a choice whose
        // continuation starts at or before pos + 1.
        for (int32_t c = d->choice < 0 ? 0 : d->choice; c < (d->choice < 0 ? p->n_choices : d->choice + 1); c++) {
            const choice_toks *ch = &p->ch[c];
            if (d->pos + 1 >= ch->n_ctx && d->pos + 1 < ch->n_full) {
                bool g;
                items[d->item].ll[c] += log_prob(l, nv, ch->full[d->pos + 1], &g);
                if (items[d->item].greedy) items[d->item].greedy[c] &= g;
            }
        }
    }
    b->n = b->n_rows = 0;
    return AS_OK;
}

// Leaders and followers of items [i0, i1): an item becomes a follower of the
// latest leader when their shared tokens agree on >= min_share tokens, else it
// leads.  The follower keeps at least its last shared token to run, whose
// logits its choices need.  One pass, one comparison per item.
static void plan_prefix_sharing(item_plan *plans, int64_t i0, int64_t i1, int32_t min_share) {
    int64_t lead = -1;
    for (int64_t i = i0; i < i1; i++) {
        item_plan *p = &plans[i];
        p->leader = -1, p->reuse = 0;
        if (min_share <= 0) continue;
        int32_t k = 0;
        if (lead >= 0) {
            const item_plan *q = &plans[lead];
            const int32_t lim = AS_MIN(q->shared, p->shared - 1);
            while (k < lim && q->ch[0].full[k] == p->ch[0].full[k]) k++;
        }
        if (k >= min_share) p->leader = lead, p->reuse = k;
        else lead = i;
    }
}

// The shared tokens [from, p->shared) of item i into its first sequence.
static int push_shared(eval_model_scorer *s, kv_cache *kv, fwd_batch *b, float *logits, item_plan *plans,
                       eval_mc_item *items, int64_t i, int32_t from) {
    const item_plan *p = &plans[i];
    for (int32_t k = from; k < p->shared; k++) {
        if (b->n == b->cap && fb_run(s, kv, b, logits, plans, items) != AS_OK) return AS_FAIL;
        fb_push(b, p->ch[0].full[k], p->seq0, k, k == p->shared - 1, (row_dst){(int32_t)i, -1, k});
    }
    return AS_OK;
}

int eval_model_loglik(void *user, eval_mc_item *items, int64_t n) {
    eval_model_scorer *s = user;
    // ALPHASPIN_EVAL_PREFIX_SHARE=0 turns sharing across items off (a check of its scores).
    const char *env = getenv("ALPHASPIN_EVAL_PREFIX_SHARE");
    const int32_t min_share = (env && !strcmp(env, "0")) ? 0 : s->prefix_share_min == 0 ? 16 : s->prefix_share_min;
    const model_config *cfg = &s->m->cfg;
    const int32_t T = s->max_batch_tokens > 0 ? s->max_batch_tokens : 512;
    const size_t budget = s->kv_budget_bytes ? s->kv_budget_bytes : ((size_t)1 << 30);
    const size_t per_pos = 2 * (size_t)cfg->n_layer * (size_t)cfg->n_head_kv * (size_t)cfg->head_dim * sizeof(float);
    // BOS when the tokenizer adds one (add_bos_token), as the model was trained.
    int32_t bos = -1;
    {
        int32_t *ids = NULL;
        size_t k = 0;
        if (tokenizer_encode(s->tok, "", 0, true, false, &ids, &k) != AS_OK) return AS_FAIL;
        if (k > 0 && ids[0] == tokenizer_bos(s->tok)) bos = ids[0];
        free(ids);
    }
    item_plan *plans = as_calloc((size_t)AS_MAX(n, 1), sizeof *plans);
    int rc = AS_OK;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        for (int32_t c = 0; c < items[i].n_choices; c++) {
            items[i].ll[c] = 0;
            if (items[i].greedy) items[i].greedy[c] = true;
        }
        rc = plan_item(s, &items[i], bos, &plans[i]);
    }
    fwd_batch b = {.cap = T};
    b.token = as_malloc((size_t)T * sizeof *b.token), b.seq = as_malloc((size_t)T * sizeof *b.seq);
    b.pos = as_malloc((size_t)T * sizeof *b.pos), b.want = as_malloc((size_t)T * sizeof *b.want);
    b.dst = as_malloc((size_t)T * sizeof *b.dst);
    float *logits = as_malloc((size_t)T * (size_t)cfg->n_vocab * sizeof *logits);
    for (int64_t i0 = 0; i0 < n && rc == AS_OK;) {
        // A group of items whose sequences fit the KV budget (at least one item).
        int64_t i1 = i0;
        int32_t n_seq = 0, n_ctx = 1;
        while (i1 < n) {
            int32_t ns = n_seq + plans[i1].n_seq, nc = AS_MAX(n_ctx, plans[i1].n_inp);
            if (i1 > i0 && (size_t)ns * (size_t)nc * per_pos > budget) break;
            n_seq = ns, n_ctx = nc;
            plans[i1].seq0 = ns - plans[i1].n_seq;
            i1++;
        }
        kv_cache *kv = model_kv_cache(s->m, n_seq, AS_MAX(n_ctx, 1), s->precision);
        if (!kv) { rc = AS_FAIL; break; }
        // 1. The shared tokens of every leader, once, into the item's first sequence;
        // then each follower copies its leader's first `reuse` positions and runs the rest.
        plan_prefix_sharing(plans, i0, i1, min_share);
        for (int64_t i = i0; i < i1 && rc == AS_OK; i++)
            if (plans[i].leader < 0) rc = push_shared(s, kv, &b, logits, plans, items, i, 0);
        if (rc == AS_OK) rc = fb_run(s, kv, &b, logits, plans, items);
        for (int64_t i = i0; i < i1 && rc == AS_OK; i++) {
            const item_plan *p = &plans[i];
            if (p->leader < 0) continue;
            kv_cache_copy_prefix(kv, p->seq0, plans[p->leader].seq0, p->reuse);
            s->n_tokens_reused += p->reuse;
            rc = push_shared(s, kv, &b, logits, plans, items, i, p->reuse);
        }
        if (rc == AS_OK) rc = fb_run(s, kv, &b, logits, plans, items);
        // 2. Each choice that runs tokens continues from a copy of that cache.
        for (int64_t i = i0; i < i1 && rc == AS_OK; i++) {
            const item_plan *p = &plans[i];
            // The first choice that runs tokens continues in seq0, the others in copies.
            for (int32_t c = 0, next = p->seq0; c < p->n_choices; c++) {
                choice_toks *ch = &p->ch[c];
                if (ch->n_full - 1 <= p->shared) continue;
                ch->seq = next++;
                if (ch->seq != p->seq0) kv_cache_copy_seq(kv, ch->seq, p->seq0);
            }
            for (int32_t c = 0; c < p->n_choices && rc == AS_OK; c++) {
                const choice_toks *ch = &p->ch[c];
                for (int32_t k = p->shared; k < ch->n_full - 1 && rc == AS_OK; k++) {
                    if (b.n == T) rc = fb_run(s, kv, &b, logits, plans, items);
                    fb_push(&b, ch->full[k], ch->seq, k, k + 1 >= ch->n_ctx, (row_dst){(int32_t)i, c, k});
                }
            }
        }
        if (rc == AS_OK) rc = fb_run(s, kv, &b, logits, plans, items);
        kv_cache_free(kv);
        i0 = i1;
    }
    for (int64_t i = 0; i < n; i++) plan_free(&plans[i]);
    free(plans);
    free(b.token), free(b.seq), free(b.pos), free(b.want), free(b.dst), free(logits);
    return rc;
}

int32_t eval_rolling_windows(const int32_t *tokens, int32_t n, int32_t prefix, int32_t max_len, int32_t ***full,
                             int32_t **n_full, int32_t **n_ctx) {
    *full = NULL, *n_full = NULL, *n_ctx = NULL;
    if (n <= 0 || max_len < 1) return 0;
    // context_len 1: each window after the first predicts up to max_len new
    // tokens; its disjoint context is what precedes them in the max_len + 1
    // tokens ending at the last one predicted.
    const int32_t pred_len = max_len;
    int32_t nw = 1 + (n > max_len ? (n - max_len + pred_len - 1) / pred_len : 0);
    *full = as_calloc((size_t)nw, sizeof **full);
    *n_full = as_calloc((size_t)nw, sizeof **n_full);
    *n_ctx = as_calloc((size_t)nw, sizeof **n_ctx);
    // First window: [prefix] + tokens[:L - 1] in, tokens[:L] scored.
    const int32_t L = AS_MIN(max_len, n);
    (*full)[0] = as_malloc((size_t)(L + 1) * sizeof ***full);
    (*full)[0][0] = prefix;
    memcpy((*full)[0] + 1, tokens, (size_t)L * sizeof *tokens);
    (*n_full)[0] = L + 1, (*n_ctx)[0] = 1;
    int32_t w = 1;
    for (int32_t predicted = L; predicted < n; w++) {
        const int32_t wpl = AS_MIN(n - predicted, pred_len), end = predicted + wpl, start = end - max_len - 1;
        (*full)[w] = as_malloc((size_t)(max_len + 1) * sizeof ***full);
        memcpy((*full)[w], tokens + start, (size_t)(max_len + 1) * sizeof *tokens);
        (*n_full)[w] = max_len + 1, (*n_ctx)[w] = max_len + 1 - wpl;
        predicted = end;
    }
    return w;
}
