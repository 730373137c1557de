// The batched forward pass: tokens of several sequences at once, each
// attending causally over its own KV cache.
//
// Per layer, for the batch x[n, C] (pre-norm residual stream):
//   a = RMSNorm(x) * w_attn                      (w already holds 1 + w_hf for Gemma)
//   q = a Wq^T, k = a Wk^T, v = a Wv^T           kernel_matmul
//   q, k <- RoPE(pos);  k, v -> cache[layer][seq][pos]
//   o_h = softmax(q_h K_g^T / sqrt(d)) V_g       over the sequence's cache, g = h / (H / H_kv)
//   x += o Wo^T
//   f = RMSNorm(x) * w_ffn
//   x += (act(f Wg^T) * (f Wu^T)) Wd^T           act = SiLU (llama) or tanh-GELU (gemma)
// and at the end logits = (RMSNorm(x) * w_out) Wout^T, only for the rows asked for.
//
// Every product, norm, GLU, rotation, residual add and attention goes through
// the model's backend (m->be, tensor/backend.h: the seam), one call for the
// whole batch, on buffers the backend allocated; the backend also owns the
// weights' layouts, the KV cache's and the threading.  This file owns the
// data flow and the cache's positions.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_internal.h"
#include "tensor/kernels.h"
#include "tensor/tuner.h"
#include "util/common.h"

// -DAS_PROFILE: process CPU time per phase of model_forward, printed at exit
// (profile with one thread: then waiting for a busy core does not count).
#ifdef AS_PROFILE
#include <stdio.h>
// (rope and the cache writes count in attn.)
enum { PR_EMB, PR_NORM, PR_QKV, PR_ATT, PR_O, PR_GATEUP, PR_GLU, PR_DOWN, PR_ADD, PR_LOGITS, PR_N };
static const char *const prof_name[PR_N] = {"emb", "norm", "qkv", "attn", "o", "gate_up", "glu", "down", "add", "logits"};
static double prof_t[PR_N], prof_last;
static void prof_print(void) {
    double tot = 0;
    for (int i = 0; i < PR_N; i++) tot += prof_t[i];
    for (int i = 0; i < PR_N; i++) fprintf(stderr, "prof %-8s %8.3f s %5.1f%%\n", prof_name[i], prof_t[i], 100 * prof_t[i] / tot);
}
#include <time.h>
static double prof_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#define PROF_START() (prof_last = prof_now())
#define PROF(i) (prof_t[i] += prof_now() - prof_last, prof_last = prof_now())
#else
#define PROF_START() ((void)0)
#define PROF(i) ((void)0)
#endif

// The batch's rows (buffers from the backend's buf_alloc: on a device they
// stay there from op to op) and the host's bookkeeping.
typedef struct model_scratch {
    const as_backend *be;             // whose buffers these are
    int64_t cap;                      // token rows the buffers below hold
    float *x, *xb;                    // (cap, C): residual stream, normed / matmul output
    float *att;                       // (cap, n_head * head_dim)
    float *hb;                        // (cap, n_ff)
    float *rope_cos, *rope_sin;       // (cap, n_rot / 2)
    float *qkv, *gu;                  // (cap, qd + 2 kvd), (cap, 2 n_ff): rows of q|k|v, of gate|up
    int64_t cap_lora;
    float *lora_u;                    // (cap, rank): A x of one adapter
    int32_t *out_rows;                // rows whose logits are wanted
    double *inv_freq;                 // (n_rot / 2): theta^(-2i / n_rot) / rope_freqs[i]
    int32_t cap_seq;
    int32_t *next_pos;                // (cap_seq): validation of positions
} model_scratch;

// ---- scratch ----

static void rows_free(model_scratch *s) {
    float **bufs[] = {&s->x, &s->xb, &s->att, &s->hb, &s->rope_cos, &s->rope_sin, &s->qkv, &s->gu};
    for (size_t i = 0; i < AS_ARRAY_LEN(bufs); i++)
        if (*bufs[i]) s->be->buf_free(*bufs[i]), *bufs[i] = NULL;
    free(s->out_rows);
    s->out_rows = NULL;
}

void model_scratch_free(model_scratch *s) {
    if (!s) return;
    rows_free(s);
    if (s->lora_u) s->be->buf_free(s->lora_u);
    free(s->inv_freq), free(s->next_pos);
    free(s);
}

// Rows of gate|up: 2 n_ff floats and 16 more, so that consecutive rows do not
// start 4 KiB apart (2 x 1536 floats is 3 x 4 KiB: the 32 rows of a batched
// decoding step then fell into one L1 set, and 2-thread f32 decoding at batch
// 32 ran 20% slower than with gate and up in separate buffers).
static int64_t gu_stride(const model_config *c) { return 2 * (int64_t)c->n_ff + 16; }

static float *alloc_rows(const as_backend *be, int64_t rows, int64_t cols) {
    return be->buf_alloc(sizeof(float) * (size_t)rows * (size_t)AS_MAX(cols, 1));
}

// Buffers are sized once for the largest batch seen and grow when a bigger
// one comes: the layer loop itself never allocates.
static model_scratch *scratch_reserve(model *m, int64_t n_tokens, int32_t n_seq) {
    const model_config *c = &m->cfg;
    model_scratch *s = m->scratch;
    if (!s) {
        s = m->scratch = as_calloc(1, sizeof *s);
        s->be = m->be;
        const int half = c->n_rot / 2;
        s->inv_freq = as_malloc(sizeof(double) * (size_t)AS_MAX(half, 1));
        for (int i = 0; i < half; i++)
            s->inv_freq[i] = pow((double)c->rope_theta, -2.0 * i / c->n_rot) / (m->rope_freqs ? m->rope_freqs[i] : 1.0);
    }
    if (n_tokens > s->cap) {
        const as_backend *be = s->be;
        int64_t cap = AS_MAX(n_tokens, 2 * s->cap);
        const int64_t C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
        rows_free(s);
        s->qkv = alloc_rows(be, cap, qd + 2 * kvd);
        s->gu = alloc_rows(be, cap, gu_stride(c));
        s->x = alloc_rows(be, cap, C);
        s->xb = alloc_rows(be, cap, C);
        s->att = alloc_rows(be, cap, qd);
        s->hb = alloc_rows(be, cap, c->n_ff);
        s->rope_cos = alloc_rows(be, cap, c->n_rot / 2);
        s->rope_sin = alloc_rows(be, cap, c->n_rot / 2);
        s->out_rows = as_malloc(sizeof(int32_t) * (size_t)cap);
        s->cap = cap;
    }
    if (n_seq > s->cap_seq) {
        free(s->next_pos);
        s->next_pos = as_malloc(sizeof(int32_t) * (size_t)n_seq);
        s->cap_seq = n_seq;
    }
    return s;
}

// ---- LoRA ----

int model_set_lora(model *m, const model_lora *l) {
    if (!l) {
        memset(&m->lora, 0, sizeof m->lora);
        return AS_OK;
    }
    if (l->rank < 1) return as_error("model_set_lora: rank %d: expected >= 1", l->rank);
    if (!isfinite(l->scale)) return as_error("model_set_lora: scale is not finite");
    m->lora = *l;
    return AS_OK;
}

// y (n, out; row stride ldy) += scale * (x A_l^T) B_l^T for target t, when set.
static void lora_apply(model *m, model_scratch *s, int32_t l, int t, float *y, int64_t ldy, const float *x, int64_t in, int64_t out,
                       int64_t n) {
    const model_lora *lo = &m->lora;
    if (lo->rank < 1 || !lo->a[t]) return;
    const int64_t r = lo->rank;
    if (s->cap_lora < n * r) {
        if (s->lora_u) s->be->buf_free(s->lora_u);
        s->lora_u = alloc_rows(s->be, n, r);
        s->cap_lora = n * r;
    }
    const float *A = lo->a[t] + (int64_t)l * r * in, *B = lo->b[t] + (int64_t)l * out * r;
    m->be->sgemm(false, true, n, r, in, 1.0f, x, in, A, in, 0.0f, s->lora_u, r, kernel_get_threads());
    m->be->sgemm(false, true, n, out, r, lo->scale, s->lora_u, r, B, r, 1.0f, y, ldy, kernel_get_threads());
}

// ---- the forward pass ----

static int batch_check(const model *m, const kv_cache *kv, const model_batch *b, const float *logits, model_scratch *s) {
    const model_config *c = &m->cfg;
    if (kv->n_layer != c->n_layer || kv->kv_dim != c->n_head_kv * c->head_dim)
        return as_error("model_forward: KV cache built for %d layers x %d, model has %d x %d", kv->n_layer, kv->kv_dim, c->n_layer,
                        c->n_head_kv * c->head_dim);
    if (!logits) {
        for (int32_t i = 0; i < b->n_tokens; i++)
            if (!b->want_logits || b->want_logits[i]) return as_error("model_forward: token %d wants logits but no logits buffer was given", i);
    }
    memcpy(s->next_pos, kv->len, sizeof(int32_t) * (size_t)kv->n_seq);
    for (int32_t i = 0; i < b->n_tokens; i++) {
        const int32_t t = b->token[i], q = b->seq[i], p = b->pos[i];
        if (t < 0 || t >= c->n_vocab) return as_error("model_forward: token %d: id %d outside the vocabulary [0, %d)", i, t, c->n_vocab);
        if (q < 0 || q >= kv->n_seq) return as_error("model_forward: token %d: sequence %d outside the cache's [0, %d)", i, q, kv->n_seq);
        if (p != s->next_pos[q])
            return as_error("model_forward: token %d: sequence %d expects position %d next, found %d", i, q, s->next_pos[q], p);
        if (p >= kv->n_ctx) return as_error("model_forward: token %d: position %d past the cache's n_ctx %d", i, p, kv->n_ctx);
        s->next_pos[q]++;
    }
    return AS_OK;
}

static int forward_run(model *m, kv_cache *kv, const model_batch *b, float *logits) {
    const model_config *c = &m->cfg;
    const as_backend *be = m->be;
    const int64_t n = b->n_tokens;
    if (n < 0) return as_error("model_forward: n_tokens %lld is negative", (long long)n);
    if (n == 0) return AS_OK;
    if (!b->token || !b->seq || !b->pos) return as_error("model_forward: batch without token, seq or pos arrays");
    if (kv->be != be) return as_error("model_forward: KV cache made on backend %s, the model runs on %s", kv->be->name, be->name);
    const kernel_precision prec = kv->precision;
    model_scratch *s = scratch_reserve(m, n, kv->n_seq);
    if (batch_check(m, kv, b, logits, s)) return AS_FAIL;
    kernel_kv_pass pass; // the cache's layout is fixed by its first pass
    if (be->kv_begin(&kv->mem, prec, &pass)) return AS_FAIL;

    const int64_t C = c->n_embd, d = c->head_dim, qd = (int64_t)c->n_head * d, kvd = (int64_t)c->n_head_kv * d, F = c->n_ff;
    const int half = c->n_rot / 2;
#ifdef AS_PROFILE
    static bool prof_registered;
    if (!prof_registered) atexit(prof_print), prof_registered = true;
#endif
    PROF_START();

    // Embeddings (Gemma scales them by sqrt(C)) and the rotary angles, which
    // depend only on the position: computed once for all layers, in double so
    // that large positions keep their phase.
    be->get_rows(&m->tok_embd, b->token, n, s->x);
    if (c->emb_scale != 1.0f) be->scale(s->x, n * C, c->emb_scale);
#pragma omp parallel for num_threads(AS_MAX(kernel_get_threads(), 1)) if (n > 1)
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < half; j++) {
            const double a = (double)b->pos[i] * s->inv_freq[j];
            s->rope_cos[i * half + j] = (float)cos(a);
            s->rope_sin[i * half + j] = (float)sin(a);
        }
    }
    PROF(PR_EMB);

    const int64_t qkvd = qd + 2 * kvd, gus = gu_stride(c);
    // Rows of q|k|v and of gate|up, as the weight groups write them.
    float *q = s->qkv, *k = s->qkv + qd, *v = s->qkv + qd + kvd, *g = s->gu, *u = s->gu + F;
    const float att_scale = 1.0f / sqrtf((float)d);
    for (int32_t l = 0; l < c->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        // The previous layer's FFN output joins the residual stream here.
        if (l > 0) be->add(s->x, s->xb, n * C);
        be->rmsnorm(s->xb, s->x, L->attn_norm, n, C, c->rms_eps, NULL);
        PROF(PR_NORM);
        be->weights_matmul(L->qkv, s->qkv, qkvd, s->xb, n, prec);
        lora_apply(m, s, l, 0, q, qkvd, s->xb, C, qd, n);
        lora_apply(m, s, l, 1, k, qkvd, s->xb, C, kvd, n);
        lora_apply(m, s, l, 2, v, qkvd, s->xb, C, kvd, n);
        PROF(PR_QKV);
        // q, k rotated; k, v into the cache; each row attends over its
        // sequence's positions 0 .. pos.
        be->rope(q, qkvd, n, c->n_head, (int)d, c->n_rot, c->rope_neox, s->rope_cos, s->rope_sin, 1.0f);
        be->rope(k, qkvd, n, c->n_head_kv, (int)d, c->n_rot, c->rope_neox, s->rope_cos, s->rope_sin, 1.0f);
        be->kv_store(&kv->mem, l, n, b->seq, b->pos, k, v, qkvd);
        be->kv_attention(&(kernel_kv_rows){.kv = &kv->mem, .pass = &pass, .layer = l, .n_rows = n, .seq = b->seq, .pos = b->pos, .q = q,
                                           .q_stride = qkvd, .n_head = c->n_head, .scale = att_scale, .out = s->att, .out_stride = qd});
        PROF(PR_ATT);
        be->weights_matmul(L->o, s->xb, C, s->att, n, prec);
        lora_apply(m, s, l, 3, s->xb, C, s->att, qd, C, n);
        PROF(PR_O);
        be->add(s->x, s->xb, n * C);
        be->rmsnorm(s->xb, s->x, L->ffn_norm, n, C, c->rms_eps, NULL);
        PROF(PR_NORM);
        be->weights_matmul(L->gate_up, s->gu, gus, s->xb, n, prec);
        lora_apply(m, s, l, 4, g, gus, s->xb, C, F, n);
        lora_apply(m, s, l, 5, u, gus, s->xb, C, F, n);
        PROF(PR_GATEUP);
        be->glu(s->hb, F, g, u, gus, n, F, c->gelu);
        PROF(PR_GLU);
        be->weights_matmul(L->down, s->xb, C, s->hb, n, prec);
        lora_apply(m, s, l, 6, s->xb, C, s->hb, F, C, n);
        PROF(PR_DOWN);
    }
    be->add(s->x, s->xb, n * C);
    PROF(PR_ADD);
    for (int64_t i = 0; i < n; i++) kv->len[b->seq[i]]++;

    // Final norm and the vocabulary projection only for the rows asked for.
    int64_t n_out = 0;
    for (int64_t i = 0; i < n; i++)
        if (!b->want_logits || b->want_logits[i]) s->out_rows[n_out++] = (int32_t)i;
    if (n_out == 0) return AS_OK;
    be->rmsnorm(s->xb, s->x, m->output_norm, n_out, C, c->rms_eps, n_out == n ? NULL : s->out_rows);
    be->weights_matmul(m->out_w, logits, c->n_vocab, s->xb, n_out, prec);
    PROF(PR_LOGITS);
    return AS_OK;
}

// Decoding steps (a few tokens) run on the threads the tuner picks (tensor/tuner.h:
// all, or half when another process makes them wait); the bits are the same.
int model_forward(model *m, kv_cache *kv, const model_batch *b, float *logits) {
    pthread_mutex_lock(&m->lock); // one call at a time on a model (model.h)
    tuner_step t;
    tuner_begin(&t, b->n_tokens);
    const int rc = forward_run(m, kv, b, logits);
    m->be->sync(); // the batch's rows are the host's again
    tuner_end(&t);
    pthread_mutex_unlock(&m->lock);
    return rc;
}
