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
// the model's backend (m->be, tensor/backend.h: the seam), which also owns the
// weights' layouts and the KV cache's; this file owns the data flow, the
// cache's positions and the threading.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_internal.h"
#include "tensor/tuner.h"
#include "util/common.h"

// Consecutive batch rows of one sequence are handled by one attention work
// item (per head) so that the rows share the sequence's K/V in cache, at most
// the backend's block_rows (kernel_kv_pass); no block length changes a
// number (tensor/attention.h).
#define ATTN_BLOCK_MAX 64
// Fewest rows for which the element-wise loops (norms, RoPE, residual adds;
// the GLU) are split over threads.
#define ELEM_PAR_ROWS 64
#define GLU_PAR_ROWS 16

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

typedef struct model_scratch {
    int64_t cap;                      // token rows the buffers below hold
    float *x, *xb;                    // (cap, C): residual stream, normed / matmul output
    float *att;                       // (cap, n_head * head_dim)
    float *hb;                        // (cap, n_ff)
    float *rope_cos, *rope_sin;       // (cap, n_rot / 2)
    int32_t *blk_start, *blk_len;     // attention blocks of consecutive same-sequence rows
    int32_t *out_rows;                // rows whose logits are wanted
    int32_t n_blocks;
    double *inv_freq;                 // (n_rot / 2): theta^(-2i / n_rot) / rope_freqs[i]
    int32_t cap_seq;
    int32_t *next_pos;                // (cap_seq): validation of positions
    int nth;                          // threads the score rows are sized for
    int64_t cap_keys;
    float *scores;                    // (nth, KERNEL_ATTN_SCORE_ROWS * cap_keys)
    int64_t cap_lora;
    float *lora_u;                    // (cap, rank): A x of one adapter
    float *qkv, *gu;                  // (cap, qd + 2 kvd), (cap, 2 n_ff): rows of q|k|v, of gate|up
} model_scratch;

// ---- scratch ----

void model_scratch_free(model_scratch *s) {
    if (!s) return;
    free(s->x), free(s->xb), free(s->att), free(s->hb);
    free(s->rope_cos), free(s->rope_sin), free(s->blk_start), free(s->blk_len), free(s->out_rows);
    free(s->inv_freq), free(s->next_pos), free(s->scores), free(s->lora_u), free(s->qkv), free(s->gu);
    free(s);
}

// Rows of gate|up: 2 n_ff floats and 16 more, so that consecutive rows do not
// start 4 KiB apart (2 x 1536 floats is 3 x 4 KiB: the 32 rows of a batched
// decoding step then fell into one L1 set, and 2-thread f32 decoding at batch
// 32 ran 20% slower than with gate and up in separate buffers).
static int64_t gu_stride(const model_config *c) { return 2 * (int64_t)c->n_ff + 16; }

static float *alloc_rows(int64_t rows, int64_t cols) { return as_aligned_alloc(sizeof(float) * (size_t)rows * (size_t)AS_MAX(cols, 1)); }

// Buffers are sized once for the largest batch / context seen and grow when a
// bigger one comes: the layer loop itself never allocates.
static model_scratch *scratch_reserve(model *m, int64_t n_tokens, int32_t n_seq, int64_t n_keys, int nth) {
    const model_config *c = &m->cfg;
    model_scratch *s = m->scratch;
    if (!s) {
        s = m->scratch = as_calloc(1, sizeof *s);
        const int half = c->n_rot / 2;
        s->inv_freq = as_malloc(sizeof(double) * (size_t)AS_MAX(half, 1));
        for (int i = 0; i < half; i++)
            s->inv_freq[i] = pow((double)c->rope_theta, -2.0 * i / c->n_rot) / (m->rope_freqs ? m->rope_freqs[i] : 1.0);
    }
    if (n_tokens > s->cap) {
        int64_t cap = AS_MAX(n_tokens, 2 * s->cap);
        const int64_t C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
        free(s->x), free(s->xb), free(s->att), free(s->hb);
        free(s->rope_cos), free(s->rope_sin), free(s->blk_start), free(s->blk_len), free(s->out_rows), free(s->qkv), free(s->gu);
        s->qkv = alloc_rows(cap, qd + 2 * kvd);
        s->gu = alloc_rows(cap, gu_stride(c));
        s->x = alloc_rows(cap, C);
        s->xb = alloc_rows(cap, C);
        s->att = alloc_rows(cap, qd);
        s->hb = alloc_rows(cap, c->n_ff);
        s->rope_cos = alloc_rows(cap, c->n_rot / 2);
        s->rope_sin = alloc_rows(cap, c->n_rot / 2);
        s->blk_start = as_malloc(sizeof(int32_t) * (size_t)cap);
        s->blk_len = as_malloc(sizeof(int32_t) * (size_t)cap);
        s->out_rows = as_malloc(sizeof(int32_t) * (size_t)cap);
        s->cap = cap;
    }
    if (n_seq > s->cap_seq) {
        free(s->next_pos);
        s->next_pos = as_malloc(sizeof(int32_t) * (size_t)n_seq);
        s->cap_seq = n_seq;
    }
    if (n_keys > s->cap_keys || nth > s->nth) {
        free(s->scores);
        s->cap_keys = AS_MAX(n_keys, s->cap_keys);
        s->nth = AS_MAX(nth, s->nth);
        // Rows padded to 64 bytes so threads never share a cache line.
        s->cap_keys = (s->cap_keys + 15) & ~(int64_t)15;
        s->scores = alloc_rows(s->nth, KERNEL_ATTN_SCORE_ROWS * s->cap_keys);
    }
    return s;
}

// ---- attention ----

// First the batch's rows' queries and keys rotated (RoPE) and their keys and
// values stored in the cache (q, k, v: row stride qs), then att[i, h] =
// softmax(q[i, h] K^T / sqrt(d)) V over positions 0..pos[i] of seq[i]'s cache
// in this layer, all in one parallel region: the cache writes (in decoding
// mostly cache misses, the lines evicted since the last step) run on all
// threads without a fork of their own.  The rows of one chunk of KV_CHUNK
// positions of a sequence are stored by one thread, in order (kernel_kv_store);
// a prompt's chunks alternate between threads (by whole sequences instead, a
// 512-token prefill's stores ran on one thread while the other waited).  Work
// items are (block of consecutive rows of one sequence) x (KV head): the
// block's rows and the group's heads share the K/V they read.
static void attention_forward(const as_backend *be, model_scratch *s, const model_config *c, kv_cache *kv, const kernel_kv_pass *pass,
                              int32_t l, const model_batch *b, float *q, float *k, const float *v, int64_t qs, int nth) {
    const int H = c->n_head, d = c->head_dim, Hkv = c->n_head_kv, group = H / Hkv, half = c->n_rot / 2;
    const int64_t qd = (int64_t)H * d, n_items = (int64_t)s->n_blocks * Hkv;
    const float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel num_threads(nth)
    {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b->n_tokens; i++) {
        const float *cs = s->rope_cos + i * half, *sn = s->rope_sin + i * half;
        be->rope(q + i * qs, H, d, c->n_rot, c->rope_neox, cs, sn, 1.0f);
        be->rope(k + i * qs, Hkv, d, c->n_rot, c->rope_neox, cs, sn, 1.0f);
    }
    for (int64_t i = 0; i < b->n_tokens; i++)
        if ((b->seq[i] + b->pos[i] / KV_CHUNK) % nt == tid) be->kv_store(&kv->mem, l, b->seq[i], b->pos[i], k + i * qs, v + i * qs);
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; it++) {
        const int32_t blk = (int32_t)(it / Hkv), t0 = s->blk_start[blk];
        const int g = (int)(it % Hkv);
        int32_t n_keys[ATTN_BLOCK_MAX];
        for (int32_t r = 0; r < s->blk_len[blk]; r++) n_keys[r] = b->pos[t0 + r] + 1; // causal: keys 0..pos
        be->kv_attention(&(kernel_kv_attn){
            .kv = &kv->mem, .pass = pass, .layer = l, .seq = b->seq[t0], .g = g, .q = q + t0 * qs + (int64_t)g * group * d, .q_stride = qs,
            .n_heads = group, .n_rows = s->blk_len[blk], .n_keys = n_keys, .scale = scale, .out = s->att + t0 * qd + (int64_t)g * group * d,
            .out_stride = qd, .scores = s->scores + (int64_t)omp_get_thread_num() * KERNEL_ATTN_SCORE_ROWS * s->cap_keys,
            .scores_stride = s->cap_keys,
        });
    }
    }
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
        free(s->lora_u);
        s->lora_u = as_malloc(sizeof(float) * (size_t)(n * r));
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

// The attention blocks by decreasing cost (rows x keys of the last row; ties
// by position in the batch), so that the threads, which take them one at a
// time, end together: in a long prefill the cost grows with the block's
// position, and taken in batch order the most expensive block came last
// while the other thread waited.  Outputs do not depend on the order.
static int64_t block_cost(const model_scratch *s, const model_batch *b, int32_t i) {
    return (int64_t)s->blk_len[i] * (b->pos[s->blk_start[i] + s->blk_len[i] - 1] + 1);
}
static void sort_blocks(model_scratch *s, const model_batch *b) {
    for (int32_t i = 1; i < s->n_blocks; i++) { // insertion sort: usually few blocks, often in order already
        const int32_t st = s->blk_start[i], ln = s->blk_len[i];
        const int64_t c = block_cost(s, b, i);
        int32_t j = i;
        for (; j > 0; j--) {
            const int64_t cj = block_cost(s, b, j - 1);
            if (cj > c || (cj == c && s->blk_start[j - 1] < st)) break;
            s->blk_start[j] = s->blk_start[j - 1], s->blk_len[j] = s->blk_len[j - 1];
        }
        s->blk_start[j] = st, s->blk_len[j] = ln;
    }
}

static int forward_run(model *m, kv_cache *kv, const model_batch *b, float *logits) {
    const model_config *c = &m->cfg;
    const as_backend *be = m->be;
    const int64_t n = b->n_tokens;
    if (n < 0) return as_error("model_forward: n_tokens %lld is negative", (long long)n);
    if (n == 0) return AS_OK;
    if (!b->token || !b->seq || !b->pos) return as_error("model_forward: batch without token, seq or pos arrays");
    if (kv->be != be) return as_error("model_forward: KV cache made on backend %s, the model runs on %s", kv->be->name, be->name);
    int64_t max_keys = 1;
    for (int64_t i = 0; i < n; i++) max_keys = AS_MAX(max_keys, (int64_t)b->pos[i] + 1);
    const int nth = AS_MAX(kernel_get_threads(), 1);
    const kernel_precision prec = kv->precision;
    model_scratch *s = scratch_reserve(m, n, kv->n_seq, AS_MIN(max_keys, (int64_t)kv->n_ctx), nth);
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
#pragma omp parallel for num_threads(nth) if (n > 1)
    for (int64_t i = 0; i < n; i++) {
        float *x = s->x + i * C;
        be->get_row(&m->tok_embd, b->token[i], x);
        if (c->emb_scale != 1.0f) be->scale(x, C, c->emb_scale);
        for (int j = 0; j < half; j++) {
            const double a = (double)b->pos[i] * s->inv_freq[j];
            s->rope_cos[i * half + j] = (float)cos(a);
            s->rope_sin[i * half + j] = (float)sin(a);
        }
    }
    // Attention blocks: runs of consecutive rows of one sequence, at most the backend's block_rows long.
    const int32_t blk_max = AS_MIN(pass.block_rows, ATTN_BLOCK_MAX);
    s->n_blocks = 0;
    for (int32_t i = 0; i < (int32_t)n; i++) {
        const int32_t nb = s->n_blocks;
        if (nb > 0 && b->seq[i] == b->seq[s->blk_start[nb - 1]] && s->blk_len[nb - 1] < blk_max) {
            s->blk_len[nb - 1]++;
        } else {
            s->blk_start[nb] = i;
            s->blk_len[nb] = 1;
            s->n_blocks++;
        }
    }
    sort_blocks(s, b);
    PROF(PR_EMB);

    // Element-wise loops run on one thread below ELEM_PAR_ROWS rows (decode):
    // there a fork/join costs more than the work, and far more when the
    // cores are busy with other work.
    const bool par_rows = n >= ELEM_PAR_ROWS, par_glu = n >= GLU_PAR_ROWS;
    const int64_t qkvd = qd + 2 * kvd, gus = gu_stride(c);
    // Rows of q|k|v and of gate|up, as the weight groups write them.
    float *q = s->qkv, *k = s->qkv + qd, *v = s->qkv + qd + kvd, *g = s->gu, *u = s->gu + F;
    for (int32_t l = 0; l < c->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        // The previous layer's FFN output joins the residual stream here, in
        // the same pass as this layer's norm.
#pragma omp parallel for num_threads(nth) if (par_rows)
        for (int64_t i = 0; i < n; i++) {
            float *x = s->x + i * C, *o = s->xb + i * C;
            if (l > 0) be->add(x, o, C);
            be->rmsnorm(o, x, L->attn_norm, C, c->rms_eps);
        }
        PROF(PR_NORM);
        be->weights_matmul(L->qkv, s->qkv, qkvd, s->xb, n, prec);
        lora_apply(m, s, l, 0, q, qkvd, s->xb, C, qd, n);
        lora_apply(m, s, l, 1, k, qkvd, s->xb, C, kvd, n);
        lora_apply(m, s, l, 2, v, qkvd, s->xb, C, kvd, n);
        PROF(PR_QKV);
        attention_forward(be, s, c, kv, &pass, l, b, q, k, v, qkvd, nth);
        PROF(PR_ATT);
        be->weights_matmul(L->o, s->xb, C, s->att, n, prec);
        lora_apply(m, s, l, 3, s->xb, C, s->att, qd, C, n);
        PROF(PR_O);
#pragma omp parallel for num_threads(nth) if (par_rows)
        for (int64_t i = 0; i < n; i++) {
            float *x = s->x + i * C, *o = s->xb + i * C;
            be->add(x, o, C);
            be->rmsnorm(o, x, L->ffn_norm, C, c->rms_eps);
        }
        PROF(PR_NORM);
        be->weights_matmul(L->gate_up, s->gu, gus, s->xb, n, prec);
        lora_apply(m, s, l, 4, g, gus, s->xb, C, F, n);
        lora_apply(m, s, l, 5, u, gus, s->xb, C, F, n);
        PROF(PR_GATEUP);
#pragma omp parallel for num_threads(nth) if (par_glu)
        for (int64_t i = 0; i < n; i++) be->glu(s->hb + i * F, g + i * gus, u + i * gus, F, c->gelu);
        PROF(PR_GLU);
        be->weights_matmul(L->down, s->xb, C, s->hb, n, prec);
        lora_apply(m, s, l, 6, s->xb, C, s->hb, F, C, n);
        PROF(PR_DOWN);
    }
#pragma omp parallel for num_threads(nth) if (par_rows)
    for (int64_t i = 0; i < n; i++) be->add(s->x + i * C, s->xb + i * C, C);
    PROF(PR_ADD);
    for (int64_t i = 0; i < n; i++) kv->len[b->seq[i]]++;

    // Final norm and the vocabulary projection only for the rows asked for.
    int64_t n_out = 0;
    for (int64_t i = 0; i < n; i++)
        if (!b->want_logits || b->want_logits[i]) s->out_rows[n_out++] = (int32_t)i;
    if (n_out == 0) return AS_OK;
    for (int64_t o = 0; o < n_out; o++) be->rmsnorm(s->xb + o * C, s->x + (int64_t)s->out_rows[o] * C, m->output_norm, C, c->rms_eps);
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
    tuner_end(&t);
    pthread_mutex_unlock(&m->lock);
    return rc;
}
