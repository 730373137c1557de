#include "dist/dist_generate.h"

#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "util/common.h"

typedef struct share_cb {
    const generate_options *opt;
    int64_t first, n_share, n_all;
} share_cb;

static void on_token(void *user, int64_t request, int32_t token, const char *text, size_t len) {
    const share_cb *s = user;
    s->opt->on_token(s->opt->user, s->first + request, token, text, len);
}

// Rank 0's progress stands for the job's: its share's fraction of the whole.
static void on_progress(void *user, const generate_progress *p) {
    const share_cb *s = user;
    generate_progress q = *p;
    q.total = s->n_all;
    q.done = p->done == p->total ? (p->done * s->n_all + s->n_share - 1) / s->n_share : p->done * s->n_all / s->n_share;
    if (q.done > q.total) q.done = q.total;
    s->opt->on_progress(s->opt->user, &q);
}

static void put(as_sbuf *b, const void *p, size_t n) {
    if (n) as_sb_add(b, p, n); // p may be NULL when n is 0
}

static const char *get(const char *p, void *dst, size_t n) {
    memcpy(dst, p, n);
    return p + n;
}

// A result: n_ids, finish, logprob_sum, text length (-1: none), ids, logprobs, text bytes.
static void put_result(void *user, int64_t i, as_sbuf *buf) {
    const generate_result *r = (const generate_result *)user + i;
    const int32_t fin = (int32_t)r->finish;
    const int64_t tl = r->text ? (int64_t)strlen(r->text) : -1;
    put(buf, &r->n_ids, sizeof r->n_ids);
    put(buf, &fin, sizeof fin);
    put(buf, &r->logprob_sum, sizeof r->logprob_sum);
    put(buf, &tl, sizeof tl);
    if (r->n_ids) put(buf, r->ids, sizeof *r->ids * (size_t)r->n_ids), put(buf, r->logprobs, sizeof *r->logprobs * (size_t)r->n_ids);
    if (tl > 0) put(buf, r->text, (size_t)tl);
}

static const char *get_result(void *user, int64_t i, const char *p) {
    generate_result *g = (generate_result *)user + i;
    memset(g, 0, sizeof *g);
    int32_t fin;
    int64_t tl;
    p = get(p, &g->n_ids, sizeof g->n_ids);
    p = get(p, &fin, sizeof fin);
    p = get(p, &g->logprob_sum, sizeof g->logprob_sum);
    p = get(p, &tl, sizeof tl);
    g->finish = (generate_finish)fin;
    g->ids = as_malloc(sizeof *g->ids * (size_t)(g->n_ids ? g->n_ids : 1));
    g->logprobs = as_malloc(sizeof *g->logprobs * (size_t)(g->n_ids ? g->n_ids : 1));
    p = get(p, g->ids, sizeof *g->ids * (size_t)g->n_ids);
    p = get(p, g->logprobs, sizeof *g->logprobs * (size_t)g->n_ids);
    if (tl >= 0) {
        g->text = as_malloc((size_t)tl + 1);
        p = get(p, g->text, (size_t)tl);
        g->text[tl] = 0;
    }
    return p;
}

int dist_generate_run(model *m, const tokenizer *tok, const generate_request *reqs, int64_t n_reqs, const generate_options *opt,
                      generate_result *out) {
    if (dist_size() == 1) return generate_run(m, tok, reqs, n_reqs, opt, out);
    int64_t b, e;
    dist_share(n_reqs, &b, &e);
    share_cb cb = {.opt = opt, .first = b, .n_share = e - b, .n_all = n_reqs};
    generate_options o = *opt;
    o.user = &cb;
    o.on_token = opt->on_token ? on_token : NULL;
    o.on_progress = opt->on_progress && dist_rank() == 0 ? on_progress : NULL;
    if (o.batch_size > e - b && e > b) o.batch_size = (int32_t)(e - b);
    const int rc = e > b ? generate_run(m, tok, reqs + b, e - b, &o, out + b) : AS_OK;
    if (dist_gather_shares(n_reqs, rc == AS_OK, put_result, get_result, out)) {
        for (int64_t i = b; i < e; i++) generate_result_free(&out[i]);
        return AS_FAIL;
    }
    return AS_OK;
}
