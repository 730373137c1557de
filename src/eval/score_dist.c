// Log-likelihood requests over the processes of a job (dist/dist.h).
//
// eval_run_mc, eval_run_loglik and eval_run_rolling hand the scorer a chunk of
// items at a time and use its scores at once.  Under mpirun a task therefore
// runs twice (eval.c, score_on_ranks): the first run records every call the
// scorer gets, in order, and scores nothing; then call c goes to rank c mod N,
// which scores it with eval_model_loglik exactly as one process does, and the
// outputs are gathered to every rank; the second run replays them.  A call is
// the unit because its items are batched together (KV groups, shared prefixes,
// the tokens of each forward call): scored whole, it gives one process's bits
// at every precision.
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "eval/eval_internal.h"
#include "util/common.h"

enum { WANT_GREEDY = 1, WANT_TOKENS = 2, TOKEN_LEVEL = 4 };

static void put(as_sbuf *b, const void *p, size_t n) {
    if (n) as_sb_add(b, p, n); // p may be NULL when n is 0
}
static void put_i32(as_sbuf *b, int32_t v) { put(b, &v, sizeof v); }
static void put_str(as_sbuf *b, const char *s) {
    const uint64_t n = strlen(s);
    put(b, &n, sizeof n);
    put(b, s, n);
}

typedef struct reader { const char *p, *end; } reader;
static void get(reader *r, void *dst, size_t n) {
    if ((size_t)(r->end - r->p) < n) as_die("eval: a gathered record is shorter than its contents");
    memcpy(dst, r->p, n);
    r->p += n;
}
static int32_t get_i32(reader *r) {
    int32_t v;
    get(r, &v, sizeof v);
    return v;
}
static char *get_str(reader *r) {
    uint64_t n;
    get(r, &n, sizeof n);
    char *s = as_malloc(n + 1);
    get(r, s, n);
    s[n] = 0;
    return s;
}

// The requests of a call, as bytes (what the second run must ask again).
static void requests_put(as_sbuf *b, const eval_mc_item *items, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const eval_mc_item *it = &items[i];
        put_i32(b, it->n_choices);
        put_i32(b, (it->greedy ? WANT_GREEDY : 0) | (it->tokens ? WANT_TOKENS : 0) | (it->tok_full ? TOKEN_LEVEL : 0));
        for (int32_t c = 0; c < it->n_choices; c++) {
            if (it->tok_full) {
                put_i32(b, it->tok_n_full[c]);
                put_i32(b, it->tok_n_ctx[c]);
                put(b, it->tok_full[c], sizeof(int32_t) * (size_t)it->tok_n_full[c]);
            } else {
                put_str(b, it->ctx[c]);
                put_str(b, it->cont[c]);
            }
        }
    }
}

// The recorded requests back as items for eval_model_loglik (items_free).
static eval_mc_item *requests_get(reader *r, int64_t n) {
    eval_mc_item *items = as_calloc((size_t)(n > 0 ? n : 1), sizeof *items);
    for (int64_t i = 0; i < n; i++) {
        eval_mc_item *it = &items[i];
        const int32_t k = it->n_choices = get_i32(r), want = get_i32(r);
        const size_t nk = (size_t)(k > 0 ? k : 1);
        it->ll = as_calloc(nk, sizeof *it->ll);
        if (want & WANT_GREEDY) it->greedy = as_calloc(nk, sizeof *it->greedy);
        if (want & WANT_TOKENS) {
            it->tokens = as_calloc(nk, sizeof *it->tokens);
            it->n_tokens = as_calloc(nk, sizeof *it->n_tokens);
            it->n_ctx_tokens = as_calloc(nk, sizeof *it->n_ctx_tokens);
        }
        if (want & TOKEN_LEVEL) {
            it->tok_full = as_calloc(nk, sizeof *it->tok_full);
            it->tok_n_full = as_calloc(nk, sizeof *it->tok_n_full);
            it->tok_n_ctx = as_calloc(nk, sizeof *it->tok_n_ctx);
        } else {
            it->ctx = as_calloc(nk, sizeof *it->ctx);
            it->cont = as_calloc(nk, sizeof *it->cont);
        }
        for (int32_t c = 0; c < k; c++) {
            if (it->tok_full) {
                it->tok_n_full[c] = get_i32(r);
                it->tok_n_ctx[c] = get_i32(r);
                it->tok_full[c] = as_malloc(sizeof(int32_t) * (size_t)(it->tok_n_full[c] > 0 ? it->tok_n_full[c] : 1));
                get(r, it->tok_full[c], sizeof(int32_t) * (size_t)it->tok_n_full[c]);
            } else {
                it->ctx[c] = get_str(r);
                it->cont[c] = get_str(r);
            }
        }
    }
    return items;
}

static void items_free(eval_mc_item *items, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        eval_mc_item *it = &items[i];
        for (int32_t c = 0; c < it->n_choices; c++) {
            if (it->ctx) free(it->ctx[c]), free(it->cont[c]);
            if (it->tok_full) free(it->tok_full[c]);
            if (it->tokens) free(it->tokens[c]);
        }
        free(it->ctx), free(it->cont), free(it->tok_full), free(it->tok_n_full), free(it->tok_n_ctx);
        free(it->ll), free(it->greedy), free(it->tokens), free(it->n_tokens), free(it->n_ctx_tokens);
    }
    free(items);
}

// What the scorer gives back: per choice the log-likelihood, the greedy flag
// and the token ids when asked.
static void outputs_put(as_sbuf *b, const eval_mc_item *items, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const eval_mc_item *it = &items[i];
        for (int32_t c = 0; c < it->n_choices; c++) {
            put(b, &it->ll[c], sizeof it->ll[c]);
            if (it->greedy) put(b, &it->greedy[c], sizeof it->greedy[c]);
            if (it->tokens) {
                put_i32(b, it->n_tokens[c]);
                put_i32(b, it->n_ctx_tokens[c]);
                put(b, it->tokens[c], sizeof(int32_t) * (size_t)it->n_tokens[c]);
            }
        }
    }
}

static void outputs_get(reader *r, eval_mc_item *items, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        eval_mc_item *it = &items[i];
        for (int32_t c = 0; c < it->n_choices; c++) {
            get(r, &it->ll[c], sizeof it->ll[c]);
            if (it->greedy) get(r, &it->greedy[c], sizeof it->greedy[c]);
            if (it->tokens) {
                it->n_tokens[c] = get_i32(r);
                it->n_ctx_tokens[c] = get_i32(r);
                it->tokens[c] = as_malloc(sizeof(int32_t) * (size_t)(it->n_tokens[c] > 0 ? it->n_tokens[c] : 1));
                get(r, it->tokens[c], sizeof(int32_t) * (size_t)it->n_tokens[c]);
            }
        }
    }
}

int eval_dist_loglik(void *user, eval_mc_item *items, int64_t n) {
    eval_dist_scorer *d = user;
    as_sbuf req = {0};
    requests_put(&req, items, n);
    if (!d->replay) { // first run: record the call, answer with zeros
        if (d->n_calls == d->cap) {
            d->cap = d->cap ? 2 * d->cap : 64;
            d->req = as_realloc(d->req, sizeof *d->req * (size_t)d->cap);
            d->req_len = as_realloc(d->req_len, sizeof *d->req_len * (size_t)d->cap);
            d->n_items = as_realloc(d->n_items, sizeof *d->n_items * (size_t)d->cap);
        }
        d->req[d->n_calls] = req.s, d->req_len[d->n_calls] = req.len;
        d->n_items[d->n_calls++] = n;
        for (int64_t i = 0; i < n; i++)
            for (int32_t c = 0; c < items[i].n_choices; c++) {
                items[i].ll[c] = 0;
                if (items[i].greedy) items[i].greedy[c] = false;
                if (items[i].tokens) {
                    items[i].tokens[c] = as_malloc(sizeof(int32_t));
                    items[i].n_tokens[c] = items[i].n_ctx_tokens[c] = 0;
                }
            }
        return AS_OK;
    }
    // Second run: the same calls in the same order, answered from the gathered outputs.
    const int64_t k = d->next++;
    const bool same = k < d->n_calls && d->n_items[k] == n && d->req_len[k] == req.len && (req.len == 0 || !memcmp(d->req[k], req.s, req.len));
    free(req.s);
    if (!same) return as_error("eval: call %lld of the second run asks for other requests than the first (a nondeterministic task?)", (long long)k);
    reader r = {d->out[k], d->out[k] + d->out_len[k]};
    outputs_get(&r, items, n);
    return AS_OK;
}

int eval_dist_score(eval_dist_scorer *d, const char *task, bool progress) {
    const int size = dist_size(), rank = dist_rank();
    as_sbuf mine = {0};
    int rc = AS_OK;
    const double t0 = as_time();
    int64_t done = 0, share = 0;
    for (int64_t k = rank; k < d->n_calls; k += size) share++;
    for (int64_t k = rank; k < d->n_calls && rc == AS_OK; k += size) {
        reader r = {d->req[k], d->req[k] + d->req_len[k]};
        eval_mc_item *items = requests_get(&r, d->n_items[k]);
        rc = eval_model_loglik(d->inner, items, d->n_items[k]);
        if (rc == AS_OK) {
            const size_t at = mine.len;
            const uint64_t head[2] = {(uint64_t)k, 0};
            put(&mine, head, sizeof head);
            outputs_put(&mine, items, d->n_items[k]);
            const uint64_t len = mine.len - at - sizeof head;
            memcpy(mine.s + at + sizeof(uint64_t), &len, sizeof len);
        }
        items_free(items, d->n_items[k]);
        done++;
        if (progress) {
            const double el = as_time() - t0;
            fprintf(stderr, "\r%s: %lld/%lld batches of items on each of %d processes, elapsed %.0fs, ETA %.0fs   %s", task, (long long)done,
                    (long long)share, size, el, el / (double)done * (double)(share - done), done == share ? "\n" : "");
        }
    }
    size_t *off;
    rc = dist_allgather(mine.s, mine.len, rc == AS_OK, &d->all, &off);
    free(mine.s);
    if (rc != AS_OK) return AS_FAIL;
    d->out = as_calloc((size_t)(d->n_calls > 0 ? d->n_calls : 1), sizeof *d->out);
    d->out_len = as_calloc((size_t)(d->n_calls > 0 ? d->n_calls : 1), sizeof *d->out_len);
    for (int64_t at = 0; at < (int64_t)off[size];) {
        uint64_t head[2];
        memcpy(head, d->all + at, sizeof head);
        d->out[head[0]] = d->all + at + sizeof head;
        d->out_len[head[0]] = head[1];
        at += (int64_t)(sizeof head + head[1]);
    }
    free(off);
    d->replay = true;
    return AS_OK;
}

void eval_dist_free(eval_dist_scorer *d) {
    for (int64_t k = 0; k < d->n_calls; k++) free(d->req[k]);
    free(d->req), free(d->req_len), free(d->n_items), free(d->out), free(d->out_len), free(d->all);
    memset(d, 0, sizeof *d);
}
