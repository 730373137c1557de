// Continuous-batching generation (see generate.h).
//
// A slot moves through two states: PREFILL (prompt tokens still to feed;
// admitted prompts share forward calls with the decoding slots, long prompts
// take several calls) and DECODE (one token per call: the token sampled at the
// previous step).  Logits are requested only for the last prompt token and
// for decode tokens, so the logits buffer is (batch_size, n_vocab).
#include "generate/generate.h"

#include <string.h>

#include "util/common.h"

void generate_result_free(generate_result *r) {
    if (!r) return;
    free(r->ids);
    free(r->logprobs);
    free(r->text);
    memset(r, 0, sizeof *r);
}

generate_options generate_options_default(void) {
    return (generate_options){.precision = KERNEL_PRECISION_F32, .batch_size = 8, .n_ctx = 0, .max_batch_tokens = 512};
}

typedef struct gen_slot {
    int64_t req;            // request index, -1 when free
    int64_t n_past;         // positions already in the KV cache
    int32_t *seq;           // prompt then generated tokens: the penalty's history
    int64_t n_seq, cap_seq;
    int32_t next;           // sampled, to be fed at the next step (DECODE)
    int32_t logit_row;      // row of this step's logits, -1 if none
    sampler smp;
    char *text;             // generated text so far
    size_t text_len, text_cap, text_sent;
} gen_slot;

typedef struct gen_state {
    model *m;
    const tokenizer *tok;
    const generate_request *reqs;
    int64_t n_reqs;
    generate_options opt;
    generate_result *out;
    int32_t n_vocab, n_ctx, n_slot;
    gen_slot *slots;
    kv_cache *kv;
    int32_t *b_token, *b_seq, *b_pos; // batch arrays (max_batch_tokens)
    bool *b_want;
    float *logits;          // (n_slot, n_vocab)
    int32_t *smp_token;     // (n_slot) this step's samples
    float *smp_logprob;
    as_sample_row *smp_rows; // (n_slot) by logit row, when the backend samples (sample_rows)
    int32_t *smp_slot, *smp_row_token;
    float *smp_row_logprob;
    bool logits_on_be;      // logits are the backend's buf_alloc memory (it samples and scores them itself)
    int64_t next_req, n_done, n_generated, n_prompt_done;
    double t_start;
} gen_state;

// ---- request checks ----

static int check_request(const gen_state *g, int64_t i) {
    const generate_request *r = &g->reqs[i];
    if (!r->prompt || r->n_prompt <= 0) return as_error("generate: request %lld: empty prompt", (long long)i);
    for (int64_t t = 0; t < r->n_prompt; t++)
        if (r->prompt[t] < 0 || r->prompt[t] >= g->n_vocab)
            return as_error("generate: request %lld: prompt token %lld is %d, outside the vocabulary [0, %d)",
                            (long long)i, (long long)t, r->prompt[t], g->n_vocab);
    if (r->n_prompt > g->n_ctx)
        return as_error("generate: request %lld: prompt of %lld tokens does not fit the context of %d",
                        (long long)i, (long long)r->n_prompt, g->n_ctx);
    if (r->max_new_tokens <= 0)
        return as_error("generate: request %lld: max_new_tokens %d: expected > 0", (long long)i, r->max_new_tokens);
    if (sampler_params_check(&r->sampling)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", as_last_error());
        return as_error("generate: request %lld: %s", (long long)i, msg);
    }
    if (r->n_stop < 0 || (r->n_stop > 0 && !r->stop))
        return as_error("generate: request %lld: n_stop %d without stop strings", (long long)i, r->n_stop);
    if (r->n_stop > 0 && !g->tok)
        return as_error("generate: request %lld: stop strings need a tokenizer", (long long)i);
    for (int32_t s = 0; s < r->n_stop; s++)
        if (!r->stop[s] || !r->stop[s][0])
            return as_error("generate: request %lld: stop string %d is empty", (long long)i, s);
    return 0;
}

// ---- text, stop strings, streaming ----

static bool is_end_token(const gen_state *g, int32_t id) {
    if (g->tok && tokenizer_is_end(g->tok, id)) return true;
    for (int32_t i = 0; i < g->opt.n_end_ids; i++)
        if (g->opt.end_ids[i] == id) return true;
    return false;
}

static void text_append(gen_slot *s, const char *p, size_t n) {
    if (s->text_len + n + 1 > s->text_cap) {
        s->text_cap = AS_MAX(s->text_cap * 2, s->text_len + n + 64);
        s->text = as_realloc(s->text, s->text_cap);
    }
    memcpy(s->text + s->text_len, p, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
}

// Earliest occurrence of any stop string that ends in the bytes appended since
// `old_len`; returns its start or -1.
static int64_t find_stop(const generate_request *r, const gen_slot *s, size_t old_len) {
    int64_t best = -1;
    for (int32_t k = 0; k < r->n_stop; k++) {
        size_t sl = strlen(r->stop[k]);
        if (sl > s->text_len) continue;
        size_t from = old_len >= sl ? old_len - sl + 1 : 0;
        for (size_t p = from; p + sl <= s->text_len; p++) {
            if (memcmp(s->text + p, r->stop[k], sl) == 0) {
                if (best < 0 || (int64_t)p < best) best = (int64_t)p;
                break;
            }
        }
    }
    return best;
}

// Bytes of the text that can no longer change: not the start of a stop string
// that the next tokens could complete, and not an incomplete UTF-8 sequence.
static size_t safe_text_len(const generate_request *r, const gen_slot *s) {
    size_t n = s->text_len, hold = 0;
    for (int32_t k = 0; k < r->n_stop; k++) {
        size_t sl = strlen(r->stop[k]);
        for (size_t h = AS_MIN(sl - 1, n); h > hold; h--)
            if (memcmp(s->text + n - h, r->stop[k], h) == 0) {
                hold = h;
                break;
            }
    }
    // An incomplete multi-byte sequence at the end: a lead byte 110xxxxx,
    // 1110xxxx or 11110xxx followed by fewer continuation bytes than it needs.
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s->text[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        if (need > back) hold = AS_MAX(hold, back);
        break;
    }
    return n - hold;
}

static void stream_text(gen_state *g, gen_slot *s, int32_t token, size_t upto) {
    if (!g->opt.on_token) return;
    if (upto < s->text_sent) upto = s->text_sent;
    g->opt.on_token(g->opt.user, s->req, token, s->text ? s->text + s->text_sent : "", upto - s->text_sent);
    s->text_sent = upto;
}

// ---- slots ----

static void slot_admit(gen_state *g, int32_t si, int64_t req) {
    gen_slot *s = &g->slots[si];
    const generate_request *r = &g->reqs[req];
    s->req = req;
    s->n_past = 0;
    int64_t cap = r->n_prompt + r->max_new_tokens;
    if (cap > s->cap_seq) {
        s->seq = as_realloc(s->seq, (size_t)cap * sizeof *s->seq);
        s->cap_seq = cap;
    }
    memcpy(s->seq, r->prompt, (size_t)r->n_prompt * sizeof *s->seq);
    s->n_seq = r->n_prompt;
    s->next = -1;
    s->text_len = s->text_sent = 0;
    if (s->text) s->text[0] = '\0';
    sampler_reset(&s->smp, &r->sampling); // params were checked up front
    kv_cache_clear_seq(g->kv, si);
    generate_result *res = &g->out[req];
    res->ids = as_malloc((size_t)r->max_new_tokens * sizeof *res->ids);
    res->logprobs = as_malloc((size_t)r->max_new_tokens * sizeof *res->logprobs);
}

static void slot_finish(gen_state *g, gen_slot *s, generate_finish why) {
    generate_result *res = &g->out[s->req];
    res->finish = why;
    if (g->tok) {
        res->text = as_strndup(s->text ? s->text : "", s->text_len);
        stream_text(g, s, -1, s->text_len);
    }
    g->n_done++;
    if (g->opt.on_progress) {
        double el = as_time() - g->t_start;
        generate_progress p = {.done = g->n_done, .total = g->n_reqs, .n_generated = g->n_generated,
                               .n_prompt = g->n_prompt_done, .elapsed_s = el,
                               .tokens_per_s = el > 0 ? g->n_generated / el : 0.0,
                               .eta_s = el * (double)(g->n_reqs - g->n_done) / (double)g->n_done};
        g->opt.on_progress(g->opt.user, &p);
    }
    s->req = -1;
}

// Records the token sampled for slot s and decides whether the request goes on.
static void slot_accept(gen_state *g, gen_slot *s, int32_t token, float logprob) {
    const generate_request *r = &g->reqs[s->req];
    generate_result *res = &g->out[s->req];
    res->ids[res->n_ids] = token;
    res->logprobs[res->n_ids] = logprob;
    res->n_ids++;
    res->logprob_sum += logprob;
    s->seq[s->n_seq++] = token;
    g->n_generated++;
    if (is_end_token(g, token)) {
        slot_finish(g, s, GENERATE_FINISH_STOP);
        return;
    }
    if (g->tok) {
        char buf[256];
        size_t n = tokenizer_token_to_piece(g->tok, token, false, buf, sizeof buf);
        size_t old = s->text_len;
        if (n > sizeof buf) {
            char *big = as_malloc(n);
            tokenizer_token_to_piece(g->tok, token, false, big, n);
            text_append(s, big, n);
            free(big);
        } else {
            text_append(s, buf, n);
        }
        int64_t at = find_stop(r, s, old);
        if (at >= 0) {
            s->text_len = (size_t)at;
            s->text[at] = '\0';
            slot_finish(g, s, GENERATE_FINISH_STOP);
            return;
        }
        stream_text(g, s, token, safe_text_len(r, s));
    } else if (g->opt.on_token) {
        g->opt.on_token(g->opt.user, s->req, token, "", 0);
    }
    // The token is fed at position n_past next step; that needs a free position.
    if (res->n_ids >= r->max_new_tokens || s->n_past >= g->n_ctx) {
        slot_finish(g, s, GENERATE_FINISH_LENGTH);
        return;
    }
    s->next = token;
}

// ---- one step ----

// Fills the batch: decode tokens first (one per decoding slot), then prompt
// chunks in slot order while the token budget lasts.  Returns its size.
static int32_t build_batch(gen_state *g) {
    int32_t n = 0, budget = g->opt.max_batch_tokens;
    for (int32_t si = 0; si < g->n_slot; si++) {
        gen_slot *s = &g->slots[si];
        s->logit_row = -1;
        if (s->req < 0 || s->next < 0) continue;
        g->b_token[n] = s->next, g->b_seq[n] = si, g->b_pos[n] = (int32_t)s->n_past, g->b_want[n] = true;
        s->next = -1;
        s->n_past++;
        n++;
    }
    for (int32_t si = 0; si < g->n_slot && n < budget; si++) {
        gen_slot *s = &g->slots[si];
        const generate_request *r = s->req >= 0 ? &g->reqs[s->req] : NULL;
        if (!r || s->n_past >= r->n_prompt) continue;
        int64_t take = AS_MIN(r->n_prompt - s->n_past, (int64_t)(budget - n));
        for (int64_t t = 0; t < take; t++, n++) {
            g->b_token[n] = r->prompt[s->n_past], g->b_seq[n] = si, g->b_pos[n] = (int32_t)s->n_past;
            g->b_want[n] = s->n_past + 1 == r->n_prompt;
            s->n_past++;
        }
        g->n_prompt_done += take;
    }
    // Logit rows come back in batch order.
    int32_t row = 0;
    for (int32_t i = 0; i < n; i++)
        if (g->b_want[i]) g->slots[g->b_seq[i]].logit_row = row++;
    return n;
}

// The step's samples by the model's backend (as_backend's sample_rows: the
// same tokens and RNG states as sampler_sample, in one call for all rows),
// each slot's RNG advanced as its sampler's would be; the log-probabilities
// by its logprob_rows where it has one (then the logits, buf_alloc memory,
// never come to the host), else the host's.
static void sample_on_backend(gen_state *g) {
    int32_t n = 0;
    for (int32_t si = 0; si < g->n_slot; si++) {
        const gen_slot *s = &g->slots[si];
        if (s->logit_row < 0) continue;
        const sampler_params *p = &s->smp.params;
        g->smp_rows[s->logit_row] = (as_sample_row){.temperature = p->temperature, .top_p = p->top_p, .min_p = p->min_p,
                                                    .repeat_penalty = p->repeat_penalty, .top_k = p->top_k, .repeat_last_n = p->repeat_last_n,
                                                    .history = s->seq, .n_history = s->n_seq, .rng = s->smp.rng};
        g->smp_slot[s->logit_row] = si;
        n++;
    }
    const as_backend *be = g->m->be;
    be->sample_rows(g->smp_row_token, g->logits, g->n_vocab, n, g->n_vocab, g->smp_rows);
    if (be->logprob_rows) be->logprob_rows(g->smp_row_logprob, g->logits, g->n_vocab, n, g->n_vocab, g->smp_row_token);
#pragma omp parallel for schedule(dynamic, 1)
    for (int32_t r = 0; r < n; r++) {
        const int32_t si = g->smp_slot[r];
        g->slots[si].smp.rng = g->smp_rows[r].rng;
        g->smp_token[si] = g->smp_row_token[r];
        g->smp_logprob[si] = be->logprob_rows ? g->smp_row_logprob[r]
                                              : (float)sampler_logprob(g->logits + (size_t)r * g->n_vocab, g->n_vocab, g->smp_row_token[r]);
    }
}

static int generate_step(gen_state *g) {
    for (int32_t si = 0; si < g->n_slot && g->next_req < g->n_reqs; si++)
        if (g->slots[si].req < 0) slot_admit(g, si, g->next_req++);
    int32_t n = build_batch(g);
    if (n == 0) as_die("generate: nothing to run with %lld requests unfinished", (long long)(g->n_reqs - g->n_done));
    model_batch b = {.n_tokens = n, .token = g->b_token, .seq = g->b_seq, .pos = g->b_pos, .want_logits = g->b_want};
    if (model_forward(g->m, g->kv, &b, g->logits)) return -1;
    // Sampling is independent per slot (own sampler, own RNG): run the slots in
    // parallel, then record results in slot order so callbacks stay serial.
    int32_t *tok = g->smp_token;
    float *lp = g->smp_logprob;
    if (g->m->be->sample_rows) {
        sample_on_backend(g);
    } else {
#pragma omp parallel for schedule(dynamic, 1)
        for (int32_t si = 0; si < g->n_slot; si++) {
            gen_slot *s = &g->slots[si];
            if (s->logit_row < 0) continue;
            const float *row = g->logits + (size_t)s->logit_row * g->n_vocab;
            tok[si] = sampler_sample(&s->smp, row, s->seq, s->n_seq);
            lp[si] = (float)sampler_logprob(row, g->n_vocab, tok[si]);
        }
    }
    for (int32_t si = 0; si < g->n_slot; si++)
        if (g->slots[si].logit_row >= 0) slot_accept(g, &g->slots[si], tok[si], lp[si]);
    return 0;
}

// ---- driver ----

int generate_run(model *m, const tokenizer *tok, const generate_request *reqs, int64_t n_reqs,
                 const generate_options *opt, generate_result *out) {
    generate_options o = opt ? *opt : generate_options_default();
    if (o.batch_size <= 0) return as_error("generate: batch_size %d: expected >= 1", o.batch_size);
    if (o.max_batch_tokens == 0) o.max_batch_tokens = 512;
    if (o.max_batch_tokens < o.batch_size)
        return as_error("generate: max_batch_tokens %d: expected >= batch_size %d", o.max_batch_tokens, o.batch_size);
    if (o.n_ctx < 0) return as_error("generate: n_ctx %d: expected >= 0", o.n_ctx);
    if (o.n_end_ids > 0 && !o.end_ids) return as_error("generate: n_end_ids %d without end_ids", o.n_end_ids);
    if (n_reqs < 0 || (n_reqs > 0 && (!reqs || !out))) return as_error("generate: no requests or no output array");
    for (int64_t i = 0; i < n_reqs; i++) memset(&out[i], 0, sizeof out[i]);
    if (n_reqs == 0) return 0;

    gen_state g = {.m = m, .tok = tok, .reqs = reqs, .n_reqs = n_reqs, .opt = o, .out = out};
    g.n_vocab = m->cfg.n_vocab;
    if (tok && tokenizer_n_vocab(tok) > g.n_vocab)
        return as_error("generate: tokenizer has %d tokens but the model only %d", tokenizer_n_vocab(tok), g.n_vocab);
    if (o.n_ctx > 0) {
        g.n_ctx = o.n_ctx;
    } else {
        int64_t need = 0;
        for (int64_t i = 0; i < n_reqs; i++)
            need = AS_MAX(need, reqs[i].n_prompt + (int64_t)AS_MAX(reqs[i].max_new_tokens, 0));
        if (m->cfg.n_ctx_train > 0) need = AS_MIN(need, (int64_t)m->cfg.n_ctx_train);
        g.n_ctx = (int32_t)AS_MIN(need, (int64_t)INT32_MAX);
    }
    for (int64_t i = 0; i < n_reqs; i++)
        if (check_request(&g, i)) return -1;

    g.n_slot = (int32_t)AS_MIN((int64_t)o.batch_size, n_reqs);
    g.kv = model_kv_cache(m, g.n_slot, g.n_ctx, o.precision);
    if (!g.kv) return -1; // kv_cache_init said why
    g.slots = as_calloc((size_t)g.n_slot, sizeof *g.slots);
    for (int32_t si = 0; si < g.n_slot; si++) {
        g.slots[si].req = -1;
        sampler_init(&g.slots[si].smp, &reqs[0].sampling, g.n_vocab); // reset on admission
    }
    size_t nb = (size_t)o.max_batch_tokens;
    g.b_token = as_malloc(nb * sizeof *g.b_token);
    g.b_seq = as_malloc(nb * sizeof *g.b_seq);
    g.b_pos = as_malloc(nb * sizeof *g.b_pos);
    g.b_want = as_malloc(nb * sizeof *g.b_want);
    g.logits_on_be = m->be->sample_rows && m->be->logprob_rows;
    const size_t logits_bytes = (size_t)g.n_slot * g.n_vocab * sizeof *g.logits;
    g.logits = g.logits_on_be ? m->be->buf_alloc(logits_bytes) : as_malloc(logits_bytes);
    g.smp_token = as_malloc((size_t)g.n_slot * sizeof *g.smp_token);
    g.smp_logprob = as_malloc((size_t)g.n_slot * sizeof *g.smp_logprob);
    g.smp_rows = as_malloc((size_t)g.n_slot * sizeof *g.smp_rows);
    g.smp_slot = as_malloc((size_t)g.n_slot * sizeof *g.smp_slot);
    g.smp_row_token = as_malloc((size_t)g.n_slot * sizeof *g.smp_row_token);
    g.smp_row_logprob = as_malloc((size_t)g.n_slot * sizeof *g.smp_row_logprob);
    g.t_start = as_time();

    int rc = 0;
    while (g.n_done < n_reqs) {
        if (generate_step(&g)) {
            rc = -1;
            break;
        }
    }

    for (int32_t si = 0; si < g.n_slot; si++) {
        sampler_free(&g.slots[si].smp);
        free(g.slots[si].seq);
        free(g.slots[si].text);
    }
    free(g.slots);
    free(g.b_token);
    free(g.b_seq);
    free(g.b_pos);
    free(g.b_want);
    if (g.logits_on_be) m->be->buf_free(g.logits);
    else free(g.logits);
    free(g.smp_token);
    free(g.smp_logprob);
    free(g.smp_rows);
    free(g.smp_slot);
    free(g.smp_row_token);
    free(g.smp_row_logprob);
    kv_cache_free(g.kv);
    if (rc) {
        for (int64_t i = 0; i < n_reqs; i++) generate_result_free(&out[i]);
    }
    return rc;
}
