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
// Every product, norm, GLU, rotation and attention goes through the tensor
// backend (kernel_matmul, kernel_rmsnorm, kernel_glu, kernel_rope,
// kernel_attention_rows: the speed seam); this file owns the data flow, the
// residual adds, the KV cache's bookkeeping and the threading.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_internal.h"
#include "tensor/attention.h"
#include "tensor/gemm.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/rope.h"
#include "tensor/tuner.h"
#include "util/common.h"

// The cache layout model.h describes is the one the attention kernels read.
_Static_assert(KV_TILE == KERNEL_KV_TILE && KV_CHUNK == KERNEL_KV_CHUNK, "model.h's KV cache tiles differ from tensor/attention.h's");

// Consecutive batch rows of one sequence are handled by one attention work
// item (per head) so that the rows share the sequence's K/V in cache.  The
// AMX attention converts the item's keys and values to bf16 tiles first, a
// cost per item: there longer blocks (prefill 512: 30% less attention time
// than with 16 rows).  Neither changes a number (tensor/attention.h).
#define ATTN_BLOCK 16
#define ATTN_BLOCK_AMX 64
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
    float *q, *att;                   // (cap, n_head * head_dim)
    float *k, *v;                     // (cap, n_head_kv * head_dim): this call's new keys / values
    float *hb, *hb2;                  // (cap, n_ff)
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
    float *qkv, *gu;                  // (cap, qd + 2 kvd), (cap, 2 n_ff): outputs of the fused matmuls
} model_scratch;

// ---- scratch ----

void model_scratch_free(model_scratch *s) {
    if (!s) return;
    free(s->x), free(s->xb), free(s->q), free(s->att), free(s->k), free(s->v), free(s->hb), free(s->hb2);
    free(s->rope_cos), free(s->rope_sin), free(s->blk_start), free(s->blk_len), free(s->out_rows);
    free(s->inv_freq), free(s->next_pos), free(s->scores), free(s->lora_u), free(s->qkv), free(s->gu);
    free(s);
}

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
        free(s->x), free(s->xb), free(s->q), free(s->att), free(s->k), free(s->v), free(s->hb), free(s->hb2);
        free(s->rope_cos), free(s->rope_sin), free(s->blk_start), free(s->blk_len), free(s->out_rows), free(s->qkv), free(s->gu);
        s->qkv = alloc_rows(cap, qd + 2 * kvd);
        s->gu = alloc_rows(cap, 2 * (int64_t)c->n_ff);
        s->x = alloc_rows(cap, C);
        s->xb = alloc_rows(cap, C);
        s->q = alloc_rows(cap, qd);
        s->att = alloc_rows(cap, qd);
        s->k = alloc_rows(cap, kvd);
        s->v = alloc_rows(cap, kvd);
        s->hb = alloc_rows(cap, c->n_ff);
        s->hb2 = alloc_rows(cap, c->n_ff);
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

// Row i of the batch: the rotary embedding of its queries and keys.
static void rope_row(const model_scratch *s, const model_config *c, int64_t i, float *q, int64_t qs, float *k, int64_t ks) {
    const int half = c->n_rot / 2;
    const float *cs = s->rope_cos + i * half, *sn = s->rope_sin + i * half;
    kernel_rope(q + i * qs, c->n_head, c->head_dim, c->n_rot, c->rope_neox, cs, sn, 1.0f);
    kernel_rope(k + i * ks, c->n_head_kv, c->head_dim, c->n_rot, c->rope_neox, cs, sn, 1.0f);
}

// Row i's key and value into the cache, in the cache's layout (model.h).  A
// key tile's first position zeroes the tile (attention reads whole tiles),
// in the bf16 tiles a chunk of values likewise; a sequence's rows come in
// position order, so the later positions of the tile are written after.
static void store_row(const model_config *c, kv_cache *kv, int32_t l, const model_batch *b, int64_t i, const float *k, const float *v,
                      int64_t ks) {
    const int64_t kvd = kv->kv_dim;
    const size_t eb = (size_t)kv->elem_bytes, seq_stride = kv->seq_stride, layer_stride = (size_t)kv->n_seq * seq_stride;
    const size_t at = (size_t)l * layer_stride + (size_t)b->seq[i] * seq_stride, p = (size_t)b->pos[i];
    const size_t kt = at + p / KV_TILE * KV_TILE * (size_t)kvd + p % KV_TILE, vt = at + p * (size_t)kvd;
    const float *ki = k + i * ks, *vi = v + i * ks;
    if (kv->bf16_tiles) {
        kernel_attention_store_bf16_tiles((as_bf16 *)kv->k + at, (as_bf16 *)kv->v + at, kv->ctx_pad, kv->n_head_kv, c->head_dim, (int64_t)p, ki,
                                          vi);
        return;
    }
    if (p % KV_TILE == 0) memset((uint8_t *)kv->k + (at + p * (size_t)kvd) * eb, 0, eb * KV_TILE * (size_t)kvd);
    if (eb == 2) {
        as_fp16 *K16 = kv->k, *V16 = kv->v;
        as_f32_to_fp16_n(K16 + kt, KV_TILE, ki, kvd);
        as_f32_to_fp16_n(V16 + vt, 1, vi, kvd);
    } else {
        float *K32 = kv->k, *V32 = kv->v;
        for (int64_t e = 0; e < kvd; e++) K32[kt + (size_t)e * KV_TILE] = ki[e];
        memcpy(V32 + vt, vi, sizeof(float) * (size_t)kvd);
    }
}

// First the batch's rows through rope_row and store_row (q, k, v: row
// strides q_stride, ks), then att[i, h] = softmax(q[i, h] K^T / sqrt(d)) V
// over positions 0..pos[i] of seq[i]'s cache in this layer, all in one
// parallel region: the cache writes (in decoding mostly cache misses, the
// lines evicted since the last step) run on all threads without a fork of
// their own.  The rows of one chunk of KV_CHUNK positions of a sequence are
// stored by one thread, in order (the chunk's first position clears its
// tiles, and two positions share the 32-bit words of the bf16 value tiles);
// a prompt's chunks alternate between threads (by whole sequences instead, a
// 512-token prefill's stores ran on one thread while the other waited).
// Work items are (block of consecutive rows of one sequence) x (KV head): the
// block's rows and the group's heads share the K/V they read (tensor/attention.h).
static void attention_forward(model_scratch *s, const model_config *c, kv_cache *kv, int32_t l, const model_batch *b, float *q,
                              int64_t q_stride, float *k, const float *v, int64_t ks, bool bf16, int nth) {
    const int H = c->n_head, d = c->head_dim, Hkv = c->n_head_kv, group = H / Hkv;
    const int64_t qd = (int64_t)H * d, kvd = kv->kv_dim, n_items = (int64_t)s->n_blocks * Hkv;
    const float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel num_threads(nth)
    {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < b->n_tokens; i++) rope_row(s, c, i, q, q_stride, k, ks);
    for (int64_t i = 0; i < b->n_tokens; i++)
        if ((b->seq[i] + b->pos[i] / KV_CHUNK) % nt == tid) store_row(c, kv, l, b, i, k, v, ks);
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; it++) {
        const int32_t blk = (int32_t)(it / Hkv);
        const int g = (int)(it % Hkv);
        const int32_t t0 = s->blk_start[blk];
        int32_t n_keys[ATTN_BLOCK_AMX];
        for (int32_t r = 0; r < s->blk_len[blk]; r++) n_keys[r] = b->pos[t0 + r] + 1; // causal: keys 0..pos
        const size_t eb = (size_t)kv->elem_bytes, base = ((size_t)l * kv->n_seq + (size_t)b->seq[t0]) * kv->seq_stride;
        const size_t k_off = kv->bf16_tiles ? (size_t)g * (size_t)kv->ctx_pad * d : (size_t)g * d * KV_TILE;
        const size_t v_off = kv->bf16_tiles ? (size_t)g * (size_t)kv->ctx_pad * d : (size_t)g * d;
        const kernel_attn_args a = {
            .q = q + t0 * q_stride + (int64_t)g * group * d, .q_stride = q_stride, .n_heads = group, .d = d, .n_rows = s->blk_len[blk],
            .n_keys = n_keys, .k = (const uint8_t *)kv->k + (base + k_off) * eb, .k_tile_stride = KV_TILE * kvd,
            .v = (const uint8_t *)kv->v + (base + v_off) * eb, .v_stride = kvd, .f16 = eb == 2 && !kv->bf16_tiles, .bf16 = bf16,
            .tiled = kv->bf16_tiles, .v_panel = (int64_t)kv->ctx_pad / 2 * 16, .scale = scale,
            .out = s->att + t0 * qd + (int64_t)g * group * d, .out_stride = qd,
            .scores = s->scores + (int64_t)omp_get_thread_num() * KERNEL_ATTN_SCORE_ROWS * s->cap_keys, .scores_stride = s->cap_keys,
        };
        kernel_attention_rows(&a);
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
    kernel_sgemm(false, true, n, r, in, 1.0f, x, in, A, in, 0.0f, s->lora_u, r, kernel_get_threads());
    kernel_sgemm(false, true, n, out, r, lo->scale, s->lora_u, r, B, r, 1.0f, y, ldy, kernel_get_threads());
}

// ---- packed weights ----

// Matrix i of the model's list: 7 per layer, then the output matrix.
static as_matrix *model_matrix(model *m, int64_t i) {
    if (i == (int64_t)m->cfg.n_layer * 7) return &m->output;
    model_layer *L = &m->layers[i / 7];
    as_matrix *const lw[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return lw[i % 7];
}

// *out = the n matrices stacked by rows, when their packed copies are
// adjacent and kernel_pack_size of the stack equals the sum of theirs (same
// type and columns, whole row tiles); else out->rows = 0.  The stack is only
// used through its packed copy (its data field is the first matrix's).
static void fuse_packed(as_matrix *out, const as_matrix *const *w, int n) {
    memset(out, 0, sizeof *out);
    as_matrix f = *w[0];
    size_t sum = kernel_pack_size(w[0]);
    for (int i = 1; i < n; i++) {
        const size_t sz = kernel_pack_size(w[i]);
        if (!w[i]->packed || !w[0]->packed || w[i]->type != f.type || w[i]->cols != f.cols || !sz ||
            (const uint8_t *)w[i]->packed != (const uint8_t *)w[0]->packed + sum)
            return;
        f.rows += w[i]->rows;
        sum += sz;
    }
    if (kernel_pack_size(&f) != sum) return;
    *out = f;
}

// Every weight matrix in the kernels' packed layout (kernel_pack), in one
// allocation; the tied output matrix is packed as `output` (`tok_embd` only
// serves row lookups).  Done once; a matrix without a packed layout (float
// types, no AMX) stays as it is.
static void model_pack(model *m) {
    m->packed_tried = true;
    const char *env = getenv("ALPHASPIN_PACK");
    if (env && !strcmp(env, "0")) return;
    const int64_t n_mats = (int64_t)m->cfg.n_layer * 7 + 1;
    size_t total = 0;
    for (int64_t i = 0; i < n_mats; i++) total += (kernel_pack_size(model_matrix(m, i)) + 63) & ~(size_t)63;
    if (total == 0) return;
    uint8_t *store = as_aligned_alloc(total);
    size_t off = 0;
    for (int64_t i = 0; i < n_mats; i++) {
        as_matrix *w = model_matrix(m, i);
        const size_t sz = kernel_pack_size(w);
        if (!sz) continue;
        kernel_pack(w, store + off);
        off += (sz + 63) & ~(size_t)63;
    }
    m->packed_store = store;
    // Consecutive packed matrices of one type and row tiles are one packed
    // matrix: Q/K/V and gate/up then take one kernel call each.
    for (int32_t l = 0; l < m->cfg.n_layer; l++) {
        model_layer *L = &m->layers[l];
        fuse_packed(&L->wqkv, (const as_matrix *[]){&L->wq, &L->wk, &L->wv}, 3);
        fuse_packed(&L->w_gate_up, (const as_matrix *[]){&L->w_gate, &L->w_up}, 2);
    }
}

// Every matrix rounded to bf16 in the BF16 path's layout (kernel_bf16_pack_matrix),
// once, by the first BF16 forward pass.  Q/K/V and gate/up are packed as one
// stack each (one product each) where their rows allow it.
static void model_pack_bf16(model *m) {
    const int32_t nl = m->cfg.n_layer;
    m->bf16_store = as_calloc((size_t)nl * 7 + 1, sizeof *m->bf16_store);
    kernel_bf16_packed *p = m->bf16_store;
    for (int32_t l = 0; l < nl; l++) {
        model_layer *L = &m->layers[l];
        as_matrix *const qkv[] = {&L->wq, &L->wk, &L->wv}, *const gu[] = {&L->w_gate, &L->w_up};
        as_matrix *const *parts[] = {qkv, gu}, *stacks[] = {&L->wqkv_bf16, &L->w_gate_up_bf16};
        for (int s = 0; s < 2; s++) {
            as_matrix *const *w = parts[s];
            const int nw = s == 0 ? 3 : 2;
            bool stackable = true;
            int64_t rows = 0;
            for (int i = 0; i < nw; i++) stackable &= w[i]->cols == w[0]->cols && (i == nw - 1 || w[i]->rows % 16 == 0), rows += w[i]->rows;
            if (!stackable) { // one product per matrix
                for (int i = 0; i < nw; i++) kernel_bf16_pack_matrix(p, w[i]), w[i]->bf16 = p++;
                continue;
            }
            kernel_bf16_pack_matrices(p, (const as_matrix *const *)w, nw);
            *stacks[s] = *w[0];
            stacks[s]->rows = rows, stacks[s]->packed = NULL, stacks[s]->bf16 = p++;
        }
        kernel_bf16_pack_matrix(p, &L->wo), L->wo.bf16 = p++;
        kernel_bf16_pack_matrix(p, &L->w_down), L->w_down.bf16 = p++;
    }
    kernel_bf16_pack_matrix(p, &m->output), m->output.bf16 = p++;
    m->n_bf16 = (int32_t)(p - m->bf16_store);
}

// The stacked matrix (Q|K|V or gate|up) for this call, or NULL for one product
// per matrix: the BF16 path's stack whenever it was packed, the Q8 path's for
// >= KERNEL_PACK_MIN_TOKENS tokens when its packed copies are adjacent.
static const as_matrix *fused_stack(kernel_precision prec, int64_t n, const as_matrix *q8_stack, const as_matrix *bf16_stack) {
    if (prec == KERNEL_PRECISION_BF16) return bf16_stack->bf16 ? bf16_stack : NULL;
    const bool q8 = prec == KERNEL_PRECISION_Q8 && n >= KERNEL_PACK_MIN_TOKENS && q8_stack->rows > 0 && kernel_pack_size(q8_stack) > 0;
    return q8 ? q8_stack : NULL;
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
    const int64_t n = b->n_tokens;
    if (n < 0) return as_error("model_forward: n_tokens %lld is negative", (long long)n);
    if (n == 0) return AS_OK;
    if (!b->token || !b->seq || !b->pos) return as_error("model_forward: batch without token, seq or pos arrays");
    int64_t max_keys = 1;
    for (int64_t i = 0; i < n; i++) max_keys = AS_MAX(max_keys, (int64_t)b->pos[i] + 1);
    const int nth = AS_MAX(kernel_get_threads(), 1);
    const kernel_precision prec = kv->precision;
    // The weight layouts of this precision, once (under m->lock); the other
    // precisions' paths never read them, so what a cache gives does not
    // depend on which precisions ran before it.
    if (!m->packed_tried && prec == KERNEL_PRECISION_Q8 && n >= KERNEL_PACK_MIN_TOKENS) model_pack(m);
    if (!m->bf16_store && prec == KERNEL_PRECISION_BF16) model_pack_bf16(m);
    model_scratch *s = scratch_reserve(m, n, kv->n_seq, AS_MIN(max_keys, (int64_t)kv->n_ctx), nth);
    if (batch_check(m, kv, b, logits, s)) return AS_FAIL;

    const int64_t C = c->n_embd, d = c->head_dim, qd = (int64_t)c->n_head * d, kvd = (int64_t)c->n_head_kv * d, F = c->n_ff;
    const int half = c->n_rot / 2;
    const bool attn_amx = prec == KERNEL_PRECISION_BF16 && kernel_attention_bf16_tiles(c->head_dim);
    // The cache's layout is fixed by its first use (model.h).
    if (!kv->elem_bytes) {
        kv->elem_bytes = prec == KERNEL_PRECISION_Q8 || attn_amx ? 2 : 4;
        kv->bf16_tiles = attn_amx;
    }
    if (kv->bf16_tiles && !attn_amx)
        return as_error("model_forward: the KV cache holds the AMX attention's bf16 tiles, and the ISA in use "
                        "(capped since its first forward pass) has no AMX attention");
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
        kernel_get_row(&m->tok_embd, b->token[i], x);
        if (c->emb_scale != 1.0f)
            for (int64_t j = 0; j < C; j++) x[j] *= c->emb_scale;
        for (int j = 0; j < half; j++) {
            const double a = (double)b->pos[i] * s->inv_freq[j];
            s->rope_cos[i * half + j] = (float)cos(a);
            s->rope_sin[i * half + j] = (float)sin(a);
        }
    }
    // Attention blocks: runs of consecutive rows of one sequence, at most ATTN_BLOCK(_AMX) long.
    const int32_t blk_max = attn_amx ? ATTN_BLOCK_AMX : ATTN_BLOCK;
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
    const int64_t qkvd = qd + 2 * kvd;
    for (int32_t l = 0; l < c->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        // The previous layer's FFN output joins the residual stream here, in
        // the same pass as this layer's norm.
#pragma omp parallel for num_threads(nth) if (par_rows)
        for (int64_t i = 0; i < n; i++) {
            float *x = s->x + i * C, *o = s->xb + i * C;
            if (l > 0)
                for (int64_t j = 0; j < C; j++) x[j] += o[j];
            kernel_rmsnorm(o, x, L->attn_norm, C, c->rms_eps);
        }
        PROF(PR_NORM);
        // Q/K/V in one call when the packed copies allow it (then rows of q|k|v).
        const as_matrix *wqkv = fused_stack(prec, n, &L->wqkv, &L->wqkv_bf16);
        const bool fused = wqkv != NULL;
        float *q = fused ? s->qkv : s->q, *k = fused ? s->qkv + qd : s->k, *v = fused ? s->qkv + qd + kvd : s->v;
        const int64_t qs = fused ? qkvd : qd, ks = fused ? qkvd : kvd;
        if (fused) kernel_matmul(s->qkv, qkvd, s->xb, n, wqkv, prec);
        else {
            kernel_matmul(q, qd, s->xb, n, &L->wq, prec);
            kernel_matmul(k, kvd, s->xb, n, &L->wk, prec);
            kernel_matmul(v, kvd, s->xb, n, &L->wv, prec);
        }
        lora_apply(m, s, l, 0, q, qs, s->xb, C, qd, n);
        lora_apply(m, s, l, 1, k, ks, s->xb, C, kvd, n);
        lora_apply(m, s, l, 2, v, ks, s->xb, C, kvd, n);
        PROF(PR_QKV);
        attention_forward(s, c, kv, l, b, q, qs, k, v, ks, attn_amx, nth);
        PROF(PR_ATT);
        kernel_matmul(s->xb, C, s->att, n, &L->wo, prec);
        lora_apply(m, s, l, 3, s->xb, C, s->att, qd, C, n);
        PROF(PR_O);
#pragma omp parallel for num_threads(nth) if (par_rows)
        for (int64_t i = 0; i < n; i++) {
            float *x = s->x + i * C, *o = s->xb + i * C;
            for (int64_t j = 0; j < C; j++) x[j] += o[j];
            kernel_rmsnorm(o, x, L->ffn_norm, C, c->rms_eps);
        }
        PROF(PR_NORM);
        const as_matrix *wgu = fused_stack(prec, n, &L->w_gate_up, &L->w_gate_up_bf16);
        const bool fused_gu = wgu != NULL;
        float *g = fused_gu ? s->gu : s->hb, *u = fused_gu ? s->gu + F : s->hb2;
        const int64_t gs = fused_gu ? 2 * F : F;
        if (fused_gu) kernel_matmul(s->gu, 2 * F, s->xb, n, wgu, prec);
        else {
            kernel_matmul(g, F, s->xb, n, &L->w_gate, prec);
            kernel_matmul(u, F, s->xb, n, &L->w_up, prec);
        }
        lora_apply(m, s, l, 4, g, gs, s->xb, C, F, n);
        lora_apply(m, s, l, 5, u, gs, s->xb, C, F, n);
        PROF(PR_GATEUP);
#pragma omp parallel for num_threads(nth) if (par_glu)
        for (int64_t i = 0; i < n; i++) kernel_glu(s->hb + i * F, g + i * gs, u + i * gs, F, c->gelu);
        PROF(PR_GLU);
        kernel_matmul(s->xb, C, s->hb, n, &L->w_down, prec);
        lora_apply(m, s, l, 6, s->xb, C, s->hb, F, C, n);
        PROF(PR_DOWN);
    }
#pragma omp parallel for num_threads(nth) if (par_rows)
    for (int64_t i = 0; i < n; i++) {
        float *x = s->x + i * C, *o = s->xb + i * C;
        for (int64_t j = 0; j < C; j++) x[j] += o[j];
    }
    PROF(PR_ADD);
    for (int64_t i = 0; i < n; i++) kv->len[b->seq[i]]++;

    // Final norm and the vocabulary projection only for the rows asked for.
    int64_t n_out = 0;
    for (int64_t i = 0; i < n; i++)
        if (!b->want_logits || b->want_logits[i]) s->out_rows[n_out++] = (int32_t)i;
    if (n_out == 0) return AS_OK;
    for (int64_t o = 0; o < n_out; o++) kernel_rmsnorm(s->xb + o * C, s->x + (int64_t)s->out_rows[o] * C, m->output_norm, C, c->rms_eps);
    kernel_matmul(logits, c->n_vocab, s->xb, n_out, &m->output, prec);
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
