// The training model: fp32 master weights, the packed-batch forward pass that
// keeps its activations, the backward pass, LoRA, and the trainable view the
// optimizer updates.
//
// A batch of B padded sequences is packed into N = sum(len) token rows (no
// work on padding).  Per layer l, for the residual stream x (N, C):
//   a = RMSNorm(x) w_attn                      (GGUF gemma norms already hold 1 + w)
//   q, k, v = a Wq^T, a Wk^T, a Wv^T  (+ LoRA)  then RoPE on q, k
//   o = causal softmax(q k^T / sqrt(d)) v per sequence and head (GQA/MQA)
//   x_mid = x + o Wo^T (+ LoRA)
//   f = RMSNorm(x_mid) w_ffn
//   x' = x_mid + (act(f Wg^T) * f Wu^T) Wd^T    act: SiLU (llama), tanh-GELU (gemma)
// and logp[t] = log_softmax(RMSNorm(x_L) w_out Wout^T)[token t+1] only for the
// rows whose next token is scored; the vocabulary logits are computed in
// chunks of rows and never stored.  The backward pass needs them only through
// dlogits = g (onehot(target) - softmax) per scored row, g its upstream
// gradient: with LoRA and a batch marked for a backward pass (train_batch.
// backward) the forward keeps e = (onehot(target) - softmax) Wout per row and
// the backward adds g e; otherwise (and always for full fine-tuning, which
// also needs dWout) the backward recomputes the logits chunk by chunk.
#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/backend.h"
#include "tensor/quant.h"
#include "util/common.h"

const char *const TRAIN_PARAM_NAMES[TRAIN_N_PARAMS] = {"tok_embd", "output", "output_norm", "attn_norm", "wq",     "wk",
                                                       "wv",       "wo",     "ffn_norm",    "w_gate",    "w_up",   "w_down"};
const char *const TRAIN_LORA_TARGET_NAMES[TRAIN_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};

// Rows of vocabulary logits materialised at once.
#define LOGIT_CHUNK 64

// ---- activations ----

typedef struct train_acts {
    int64_t cap_tok, cap_len;   // token rows / longest sequence the buffers hold
    int32_t cap_seq;
    size_t bytes;               // size of memory
    int nth;
    float *memory;              // everything below, one allocation
    float *resid;               // (L+1, N, C) residual stream at each layer input; [L] feeds the final norm
    float *resid_mid;           // (L, N, C) after the attention block (every layer, checkpointing too)
    float *ln1, *ln2;           // (L, N, C) normed inputs of attention / FFN
    float *rstd1, *rstd2;       // (L, N)
    float *q;                   // (L, N, H*d) after RoPE
    float *k, *v;               // (L, N, Hkv*d) k after RoPE
    float *lse;                 // (L, N, H) attention log-sum-exp per row and head
    float *att;                 // (L, N, H*d) attention output
    float *gate, *up, *hact;    // (L, N, F) gate and up pre-activations, act(gate) * up
    float *lnf;                 // (N, C) final normed stream
    float *vgrad;               // (N, C) e = (onehot(target) - softmax) Wout per scored row (when has_vgrad)
    float *rstdf;               // (N)
    float *lora_u;              // (L, 7, N, r) A drop(x) per target
    uint16_t *drop_keep;        // LoRA dropout keep masks, per (layer, target) N rows of ceil(in / 16) words (drop_off)
    int64_t drop_off[TRAIN_LORA_N_TARGETS + 1]; // word offsets of the targets within a layer, per row; [7]: a layer's words per row
    bool drop_replay;           // masks of this forward are stored: apply them instead of hashing
    float *rope_cos, *rope_sin; // (N, n_rot/2)
    float *tmp;                 // (N, max(C, H*d)) forward temporary
    // backward scratch
    float *dresid, *dln;        // (N, C)
    float *dq, *datt;           // (N, H*d)
    float *dk, *dv;             // (N, Hkv*d)
    float *dgate, *dup, *dh;    // (N, F)
    float *du;                  // (N, r)
    float *logits, *dlogits;    // (LOGIT_CHUNK, V)
    float *xchunk, *dxchunk;    // (LOGIT_CHUNK, C)
    float *scores;              // (nth, cap_len)
    float *logp_tok, *lse_out;  // (N) per scored row
    int32_t *tokens;            // (N) packed
    int32_t *seq_off, *seq_len; // (B)
    int32_t *row, *target, *row_seq; // (N) scored rows: packed row, next token, sequence
    int32_t *target2;           // (cap_t2) second target per scored row (train_batch.target2), own allocation
    float *logp_tok2;           // (cap_t2) its log-probability
    int64_t cap_t2;
    bool has_target2;           // the last forward had second targets
    // the last forward
    int64_t n_tok, n_rows;
    int32_t n_seq;
    bool valid, with_adapters, dropout_on;
    bool has_vgrad;             // vgrad holds this forward's rows
    bool checkpoint;            // per-layer buffers hold one layer (recomputed in the backward pass)
    uint64_t dropout_seed;
    const as_backend *mem;      // whose buf_alloc made memory
} train_acts;

// A model's big buffers are the buf_alloc memory of its backend
// (as_backend_mem: a device backend's ops use them in place, so they stay
// resident), freed by the backend that made them.
static float *buf_new(const as_backend *be, size_t n) { return as_backend_mem(be)->buf_alloc(sizeof(float) * AS_MAX(n, (size_t)16)); }
static void buf_del(const as_backend *be, float *p) {
    if (p) as_backend_mem(be)->buf_free(p);
}
// n floats at p (from `from`) moved into `to`'s buffers.
static float *buf_move(const as_backend *from, const as_backend *to, float *p, size_t n) {
    return as_buf_move(from, to, p, sizeof(float) * AS_MAX(n, (size_t)16));
}

// l's factors and gradients moved into be's buffers (the pointers into them follow).
static void lora_move(train_lora *l, const as_backend *be) {
    if (as_backend_same_mem(l->be, be)) return;
    float **ptrs[4] = {l->a, l->b, l->ga, l->gb};
    ptrdiff_t off[4][TRAIN_LORA_N_TARGETS] = {{0}};
    for (int k = 0; k < 4; k++)
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
            if (ptrs[k][t]) off[k][t] = ptrs[k][t] - (k < 2 ? l->memory : l->grad_memory);
    l->memory = buf_move(l->be, be, l->memory, l->n);
    l->grad_memory = buf_move(l->be, be, l->grad_memory, l->n);
    l->be = as_backend_mem(be);
    for (int k = 0; k < 4; k++)
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
            if (ptrs[k][t]) ptrs[k][t] = (k < 2 ? l->memory : l->grad_memory) + off[k][t];
}

// Storage slot of layer l's activations.
static inline int64_t slot(const train_acts *a, int64_t l) { return a->checkpoint ? 0 : l; }

static void acts_free(train_acts *a) {
    if (!a) return;
    free(a->target2), free(a->logp_tok2);
    buf_del(a->mem, a->memory);
    free(a->tokens), free(a->seq_off), free(a->seq_len), free(a->row), free(a->target), free(a->row_seq);
    free(a);
}

// Sizes the buffers for n_tok rows, sequences up to max_len and n_seq sequences.
static train_acts *acts_reserve(train_model *m, int64_t n_tok, int64_t max_len, int32_t n_seq) {
    train_acts *a = m->acts;
    if (!a) a = m->acts = as_calloc(1, sizeof *a);
    if (n_tok <= a->cap_tok && max_len <= a->cap_len && n_seq <= a->cap_seq && m->n_threads <= a->nth && a->checkpoint == m->checkpointing)
        return a;
    const int64_t N = AS_MAX(n_tok, a->cap_tok), T = AS_MAX(max_len, a->cap_len);
    const int32_t B = AS_MAX(n_seq, a->cap_seq);
    const int nth = AS_MAX(m->n_threads, a->nth);
    const model_config *c = &m->cfg;
    const int64_t L = c->n_layer, C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    const int64_t F = c->n_ff, H = c->n_head, half = c->n_rot / 2, V = c->n_vocab;
    const int64_t r = m->lora ? m->lora->cfg.rank : 0;
    const int64_t Ls = m->checkpointing ? 1 : L; // layers of stored activations
    // Dropout keep masks for every layer (checkpointing too: the recomputed
    // forward and the backward apply them instead of hashing again).
    memset(a->drop_off, 0, sizeof a->drop_off);
    if (m->lora && m->lora->cfg.dropout > 0.0f)
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
            a->drop_off[t + 1] = a->drop_off[t] + ((m->lora->cfg.targets >> t & 1) ? (m->lora->in[t] + 15) / 16 : 0);
    buf_del(a->mem, a->memory);
    free(a->tokens), free(a->seq_off), free(a->seq_len), free(a->row), free(a->target), free(a->row_seq);
    float **ptrs[] = {&a->resid, &a->resid_mid, &a->ln1, &a->ln2, &a->rstd1, &a->rstd2, &a->q, &a->k, &a->v, &a->lse, &a->att,
                      &a->gate, &a->up, &a->hact, &a->lnf, &a->vgrad, &a->rstdf, &a->lora_u, &a->rope_cos, &a->rope_sin, &a->tmp,
                      &a->dresid, &a->dln, &a->dq, &a->datt, &a->dk, &a->dv, &a->dgate, &a->dup, &a->dh, &a->du,
                      &a->logits, &a->dlogits, &a->xchunk, &a->dxchunk, &a->scores, &a->logp_tok, &a->lse_out, (float **)&a->drop_keep};
    const int64_t sizes[] = {(L + 1) * N * C, L * N * C, Ls * N * C, Ls * N * C, Ls * N, Ls * N, Ls * N * qd, Ls * N * kvd, Ls * N * kvd,
                             Ls * N * H, Ls * N * qd, Ls * N * F, Ls * N * F, Ls * N * F, N * C, m->lora ? N * C : 0, N, Ls * TRAIN_LORA_N_TARGETS * N * r,
                             N * half, N * half, N * AS_MAX(C, qd),
                             N * C, N * C, N * qd, N * qd, N * kvd, N * kvd, N * F, N * F, N * F, N * r,
                             LOGIT_CHUNK * V, LOGIT_CHUNK * V, LOGIT_CHUNK * C, LOGIT_CHUNK * C, (int64_t)nth * T, N, N,
                             (L * N * a->drop_off[TRAIN_LORA_N_TARGETS] + 1) / 2};
    size_t total = 0;
    for (size_t i = 0; i < AS_ARRAY_LEN(sizes); i++) total += ((size_t)sizes[i] + 15) & ~(size_t)15; // 64-byte aligned pieces
    a->memory = buf_new(m->be, total);
    a->mem = as_backend_mem(m->be);
    float *p = a->memory;
    for (size_t i = 0; i < AS_ARRAY_LEN(sizes); i++) {
        *ptrs[i] = p;
        p += ((size_t)sizes[i] + 15) & ~(size_t)15;
    }
    a->tokens = as_malloc(sizeof(int32_t) * (size_t)N);
    a->row = as_malloc(sizeof(int32_t) * (size_t)N);
    a->target = as_malloc(sizeof(int32_t) * (size_t)N);
    a->row_seq = as_malloc(sizeof(int32_t) * (size_t)N);
    a->seq_off = as_malloc(sizeof(int32_t) * (size_t)B);
    a->seq_len = as_malloc(sizeof(int32_t) * (size_t)B);
    a->cap_tok = N, a->cap_len = T, a->cap_seq = B, a->nth = nth;
    a->checkpoint = m->checkpointing;
    a->bytes = sizeof(float) * total;
    a->valid = false;
    return a;
}

// ---- construction ----

static int config_check(const model_config *c) {
    if (c->n_vocab < 1 || c->n_embd < 1 || c->n_layer < 1 || c->n_head < 1 || c->n_head_kv < 1 || c->head_dim < 1 || c->n_ff < 1)
        return as_error("train: model config: every size must be >= 1 (vocab %d, embd %d, layers %d, heads %d/%d, head_dim %d, ff %d)",
                        c->n_vocab, c->n_embd, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, c->n_ff);
    if (c->n_head % c->n_head_kv) return as_error("train: model config: n_head %d is not a multiple of n_head_kv %d", c->n_head, c->n_head_kv);
    if (c->n_rot < 0 || c->n_rot > c->head_dim || c->n_rot % 2)
        return as_error("train: model config: n_rot %d: expected an even number <= head_dim %d", c->n_rot, c->head_dim);
    if (!(c->rms_eps > 0.0f) || !(c->rope_theta > 0.0f) || !(c->emb_scale > 0.0f))
        return as_error("train: model config: rms_eps, rope_theta and emb_scale must be > 0");
    return AS_OK;
}

static void params_sizes(const model_config *c, size_t *s) {
    const size_t L = (size_t)c->n_layer, C = (size_t)c->n_embd, V = (size_t)c->n_vocab, F = (size_t)c->n_ff;
    const size_t qd = (size_t)c->n_head * (size_t)c->head_dim, kvd = (size_t)c->n_head_kv * (size_t)c->head_dim;
    const size_t v[TRAIN_N_PARAMS] = {V * C, c->tied_output ? 0 : V * C, C, L * C, L * qd * C, L * kvd * C,
                                      L * kvd * C, L * C * qd, L * C, L * F * C, L * F * C, L * C * F};
    memcpy(s, v, sizeof v);
}

// Points the tensors of p into mem (a tensor of size 0 gets NULL).
static void params_point(train_params *p, float *mem, const size_t *sizes) {
    float **slots = (float **)p; // train_params is TRAIN_N_PARAMS float pointers in order
    for (int i = 0; i < TRAIN_N_PARAMS; i++) {
        slots[i] = sizes[i] ? mem : NULL;
        mem += sizes[i];
    }
}

void train_set_threads(train_model *m, int n) { m->n_threads = AS_MAX(n, 1); }
void train_set_precision(train_model *m, train_precision p) { m->precision = p; }
int train_set_backend(train_model *m, const as_backend *be) {
    if (!be) be = &as_backend_cpu;
    const char *missing = as_backend_missing(be, AS_BACKEND_TRAINING);
    if (missing) return as_error("backend %s cannot train yet: it has no %s op", be->name, missing);
    if (!as_backend_same_mem(m->be, be)) { // the buffers move to the new backend's memory
        m->params_memory = buf_move(m->be, be, m->params_memory, m->n_params);
        params_point(&m->params, m->params_memory, m->param_sizes);
        if (m->grads_memory) {
            m->grads_memory = buf_move(m->be, be, m->grads_memory, m->n_params);
            params_point(&m->grads, m->grads_memory, m->param_sizes);
        }
        if (m->lora) lora_move(m->lora, be);
        acts_free(m->acts); // reallocated by the next forward (a pending backward is lost)
        m->acts = NULL;
    }
    m->be = be;
    return AS_OK;
}

const char *train_precision_name(train_precision p) { return p == TRAIN_PRECISION_BF16 ? "bf16" : "f32"; }

int train_precision_parse(const char *s, train_precision *p) {
    if (s && !strcmp(s, "f32")) *p = TRAIN_PRECISION_F32;
    else if (s && !strcmp(s, "bf16")) *p = TRAIN_PRECISION_BF16;
    else return -1;
    return 0;
}

int train_model_init(train_model **out, const model_config *cfg) {
    *out = NULL;
    if (config_check(cfg)) return AS_FAIL;
    train_model *m = as_calloc(1, sizeof *m);
    m->cfg = *cfg;
    params_sizes(cfg, m->param_sizes);
    for (int i = 0; i < TRAIN_N_PARAMS; i++) m->n_params += m->param_sizes[i];
    m->params_memory = buf_new(&as_backend_cpu, m->n_params);
    memset(m->params_memory, 0, sizeof(float) * m->n_params);
    params_point(&m->params, m->params_memory, m->param_sizes);
    m->adapters_on = true;
    m->training = true;
    m->be = &as_backend_cpu;
    as_rng_seed(&m->rng, 0);
    train_set_threads(m, kernel_get_threads());
    *out = m;
    return AS_OK;
}

static void dequant_matrix(const as_matrix *w, float *dst) {
    for (int64_t r = 0; r < w->rows; r++) quant_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes, dst + r * w->cols, w->cols);
}

int train_model_from_model(train_model **out, const model *src) {
    if (train_model_init(out, &src->cfg)) return AS_FAIL;
    train_model *m = *out;
    const model_config *c = &src->cfg;
    const int64_t C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    train_params *p = &m->params;
    dequant_matrix(&src->tok_embd, p->tok_embd);
    if (!c->tied_output) dequant_matrix(&src->output, p->output);
    memcpy(p->output_norm, src->output_norm, sizeof(float) * (size_t)C);
    if (src->rope_freqs) {
        m->rope_freqs = as_malloc(sizeof(float) * (size_t)AS_MAX(c->n_rot / 2, 1));
        memcpy(m->rope_freqs, src->rope_freqs, sizeof(float) * (size_t)(c->n_rot / 2));
    }
    for (int32_t l = 0; l < c->n_layer; l++) {
        const model_layer *L = &src->layers[l];
        memcpy(p->attn_norm + l * C, L->attn_norm, sizeof(float) * (size_t)C);
        memcpy(p->ffn_norm + l * C, L->ffn_norm, sizeof(float) * (size_t)C);
        dequant_matrix(&L->wq, p->wq + l * qd * C);
        dequant_matrix(&L->wk, p->wk + l * kvd * C);
        dequant_matrix(&L->wv, p->wv + l * kvd * C);
        dequant_matrix(&L->wo, p->wo + l * C * qd);
        dequant_matrix(&L->w_gate, p->w_gate + l * F * C);
        dequant_matrix(&L->w_up, p->w_up + l * F * C);
        dequant_matrix(&L->w_down, p->w_down + l * C * F);
    }
    if (train_set_backend(m, src->be)) { // the inference model's backend
        train_model_free(m);
        *out = NULL;
        return AS_FAIL;
    }
    return AS_OK;
}

int train_model_load(train_model **out, const char *gguf_path) {
    *out = NULL;
    model *src;
    if (model_load(&src, gguf_path)) return AS_FAIL;
    int rc = train_model_from_model(out, src);
    model_free(src);
    return rc;
}

static void lora_free(train_lora *l) {
    if (!l) return;
    buf_del(l->be, l->memory);
    buf_del(l->be, l->grad_memory);
    free(l);
}

void train_model_free(train_model *m) {
    if (!m) return;
    buf_del(m->be, m->params_memory);
    free(m->rope_freqs);
    buf_del(m->be, m->grads_memory);
    lora_free(m->lora);
    acts_free(m->acts);
    free(m);
}

// ---- LoRA ----

// Adapters whose factors and gradients are be's buffers.
static train_lora *lora_new(const as_backend *be, const model_config *c, const train_lora_config *cfg) {
    if (cfg->rank < 1) return as_error("train: LoRA rank %d: expected >= 1", cfg->rank), NULL;
    if (!(cfg->alpha > 0.0f) || !isfinite(cfg->alpha)) return as_error("train: LoRA alpha %g: expected a finite value > 0", (double)cfg->alpha), NULL;
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f)) return as_error("train: LoRA dropout %g: expected a value in [0, 1)", (double)cfg->dropout), NULL;
    if (cfg->targets >> TRAIN_LORA_N_TARGETS) return as_error("train: LoRA target mask 0x%x has unknown bits", cfg->targets), NULL;
    const int64_t L = c->n_layer, C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    const int64_t r = cfg->rank;
    train_lora *lo = as_calloc(1, sizeof *lo);
    lo->cfg = *cfg;
    if (!lo->cfg.targets) lo->cfg.targets = (1u << TRAIN_LORA_N_TARGETS) - 1;
    lo->scale = cfg->alpha / (float)cfg->rank;
    lo->n_layer = c->n_layer;
    const int64_t ins[TRAIN_LORA_N_TARGETS] = {C, C, C, qd, C, C, F}, outs[TRAIN_LORA_N_TARGETS] = {qd, kvd, kvd, C, F, F, C};
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
        lo->in[t] = ins[t], lo->out[t] = outs[t];
        if (lo->cfg.targets & (1u << t)) lo->n += (size_t)(L * r * (ins[t] + outs[t]));
    }
    lo->be = as_backend_mem(be);
    lo->memory = buf_new(be, lo->n);
    lo->grad_memory = buf_new(be, lo->n);
    memset(lo->memory, 0, sizeof(float) * lo->n);
    memset(lo->grad_memory, 0, sizeof(float) * lo->n);
    as_rng rng;
    as_rng_seed(&rng, cfg->seed);
    size_t off = 0;
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
        if (!(lo->cfg.targets & (1u << t))) continue;
        lo->a[t] = lo->memory + off, lo->ga[t] = lo->grad_memory + off;
        off += (size_t)(L * r * ins[t]);
        lo->b[t] = lo->memory + off, lo->gb[t] = lo->grad_memory + off;
        off += (size_t)(L * outs[t] * r);
        const double bound = 1.0 / sqrt((double)ins[t]);
        for (int64_t i = 0; i < L * r * ins[t]; i++) lo->a[t][i] = (float)((2.0 * as_rng_uniform(&rng) - 1.0) * bound);
    }
    lo->dropout_seed = as_rng_u64(&rng); // the dropout stream continues from the init stream
    return lo;
}

train_lora *train_lora_new(const model_config *c, const train_lora_config *cfg) { return lora_new(&as_backend_cpu, c, cfg); }

void train_lora_free(train_lora *l) { lora_free(l); }

void train_lora_copy(train_lora *dst, const train_lora *src) {
    if (dst->n == src->n) memcpy(dst->memory, src->memory, sizeof(float) * src->n);
}

train_lora *train_lora_set(train_model *m, train_lora *l) {
    train_lora *old = m->lora;
    m->lora = l;
    if (l) lora_move(l, m->be);
    if (l && !old) { // the base is frozen now: no gradient buffer for it
        buf_del(m->be, m->grads_memory);
        m->grads_memory = NULL;
        memset(&m->grads, 0, sizeof m->grads);
    }
    if (l) as_rng_seed(&m->rng, l->dropout_seed);
    acts_free(m->acts); // buffers now need (other) adapter parts
    m->acts = NULL;
    return old;
}

int train_lora_attach(train_model *m, const train_lora_config *cfg) {
    if (m->lora) return as_error("train: LoRA adapters are attached already");
    train_lora *lo = lora_new(m->be, &m->cfg, cfg);
    if (!lo) return AS_FAIL;
    train_lora_set(m, lo);
    return AS_OK;
}

void train_lora_view(const train_lora *l, model_lora *out) {
    memset(out, 0, sizeof *out);
    if (!l) return;
    out->rank = l->cfg.rank;
    out->scale = l->scale;
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) out->a[t] = l->a[t], out->b[t] = l->b[t];
}

void train_lora_detach(train_model *m) {
    lora_free(m->lora);
    m->lora = NULL;
    acts_free(m->acts);
    m->acts = NULL;
}

void train_set_adapters(train_model *m, bool on) { m->adapters_on = on; }
void train_set_checkpointing(train_model *m, bool on) { m->checkpointing = on; }
size_t train_activation_bytes(const train_model *m) { return m->acts ? m->acts->bytes : 0; }
void train_set_training(train_model *m, bool on) { m->training = on; }

// Inverted dropout from a counter-based hash of (seed, layer, target, element)
// (as_dropout, tensor/train_graph.h): the mask does not depend on the thread
// count.  The first forward of a batch hashes and stores the masks
// (a->drop_keep); the recomputed forward and the backward apply the stored
// ones (the same numbers, ~3x cheaper; the backward's products apply them on
// the fly).
static inline uint64_t dropout_base(uint64_t seed, int l, int t) { return seed + ((uint64_t)(l * TRAIN_LORA_N_TARGETS + t) << 42); }

// The keep mask of (layer l, target t): N rows of ceil(in / 16) words.
static uint16_t *drop_keep_of(const train_acts *a, int64_t N, int l, int t) {
    return a->drop_keep + (int64_t)l * N * a->drop_off[TRAIN_LORA_N_TARGETS] + a->drop_off[t] * N;
}

// The dropout of (layer l, target t) in this pass, or NULL when off.
static const as_dropout *dropout_of(const train_model *m, int l, int t, int64_t N, as_dropout *d) {
    const train_acts *a = m->acts;
    if (!a->dropout_on) return NULL;
    *d = (as_dropout){m->lora->cfg.dropout, dropout_base(a->dropout_seed, l, t), drop_keep_of(a, N, l, t), a->drop_replay};
    return d;
}

// ---- products at the model's precision ----

static void gemm(const train_model *m, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (m->precision == TRAIN_PRECISION_BF16) m->be->gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, m->n_threads);
    else m->be->sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, m->n_threads);
}

// out = x W^T (the backend's linear_forward at the model's precision).
static void lin_fwd(const train_model *m, float *out, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim) {
    gemm(m, false, true, N, out_dim, in, 1.0f, x, in, W, in, 0.0f, out, out_dim);
}

// dx = dout W + beta dx (beta 0: dx is not read, so the caller need not zero
// it; 1: the backend's linear_backward accumulation);  dW += dout^T x; at the model's precision.
static void lin_bwd(const train_model *m, float *dx, float beta, float *dW, const float *dout, const float *x, const float *W, int64_t N,
                    int64_t in, int64_t out_dim) {
    if (N == 0) return;
    if (dx) gemm(m, false, false, N, in, out_dim, 1.0f, dout, out_dim, W, in, beta, dx, in);
    if (dW) gemm(m, true, false, out_dim, in, N, 1.0f, dout, out_dim, x, in, 1.0f, dW, in);
}

// Vocabulary logits of nc rows: x W^T, from the packed W^T in bf16.
static void logits_fwd(const train_model *m, const as_bf16_packed *Wp, float *logits, const float *x, const float *W, int64_t nc) {
    const int64_t C = m->cfg.n_embd, V = m->cfg.n_vocab;
    if (m->precision == TRAIN_PRECISION_BF16) m->be->gemm_bf16_packed(false, nc, 1.0f, x, C, Wp, 0.0f, logits, V, m->n_threads);
    else lin_fwd(m, logits, x, W, nc, C, V);
}

// dx (nc, C) = dlogits W, from the packed W in bf16.
static void logits_dx(const train_model *m, const as_bf16_packed *Wb, float *dx, const float *dlogits, const float *W, int64_t nc) {
    const int64_t C = m->cfg.n_embd, V = m->cfg.n_vocab;
    if (m->precision == TRAIN_PRECISION_BF16) m->be->gemm_bf16_packed(false, nc, 1.0f, dlogits, V, Wb, 0.0f, dx, C, m->n_threads);
    else gemm(m, false, false, nc, C, V, 1.0f, dlogits, V, W, C, 0.0f, dx, C);
}

static bool lora_active(const train_model *m, int t) { return m->lora && m->adapters_on && (m->lora->cfg.targets & (1u << t)); }

// y (N, out) += s (drop(x) A^T) B^T;  u = drop(x) A^T is kept for the
// backward pass.  y NULL: only u (a recomputed forward whose output the
// backward does not need).  fp32 at every precision (tensor/train_graph.h).
static void lora_forward(train_model *m, int l, int t, float *y, const float *x, int64_t N) {
    if (!lora_active(m, t)) return;
    train_lora *lo = m->lora;
    train_acts *a = m->acts;
    const int64_t r = lo->cfg.rank, in = lo->in[t], out = lo->out[t];
    float *u = a->lora_u + (slot(a, l) * TRAIN_LORA_N_TARGETS + t) * N * r;
    as_dropout d;
    m->be->lora_forward(y, u, x, lo->a[t] + l * r * in, lo->b[t] + l * out * r, N, in, r, out, lo->scale, dropout_of(m, l, t, N, &d),
                        m->n_threads);
}

// dB += s dy^T u;  du = s dy B;  dA += du^T drop(x);  dx += drop'(du A)
// (the products apply the forward's stored dropout masks on the fly).
static void lora_backward(train_model *m, int l, int t, float *dx, const float *dy, const float *x, int64_t N) {
    if (!lora_active(m, t)) return;
    train_lora *lo = m->lora;
    train_acts *a = m->acts;
    const int64_t r = lo->cfg.rank, in = lo->in[t], out = lo->out[t];
    const float *u = a->lora_u + (slot(a, l) * TRAIN_LORA_N_TARGETS + t) * N * r;
    as_dropout d;
    const as_dropout *drop = dropout_of(m, l, t, N, &d);
    if (drop) d.replay = true; // the forward stored the masks
    m->be->lora_backward(dx, lo->ga[t] + l * r * in, lo->gb[t] + l * out * r, dy, x, u, lo->a[t] + l * r * in, lo->b[t] + l * out * r, N, in,
                         r, out, lo->scale, drop, a->du, m->n_threads);
}

// ---- forward ----

static int batch_check(const train_model *m, const train_batch *b, int64_t *n_tok, int64_t *max_len) {
    if (b->n_seq < 1 || b->n_ctx < 1) return as_error("train_forward: batch of %d sequences x %d tokens: expected both >= 1", b->n_seq, b->n_ctx);
    if (!b->tokens || !b->len || (!b->prompt_len && !b->loss_mask))
        return as_error("train_forward: batch without tokens, len, or prompt_len/loss_mask");
    int64_t n = 0, mx = 0;
    for (int32_t s = 0; s < b->n_seq; s++) {
        const int32_t len = b->len[s];
        if (len < 1 || len > b->n_ctx) return as_error("train_forward: sequence %d: length %d outside [1, %d]", s, len, b->n_ctx);
        if (!b->loss_mask && (b->prompt_len[s] < 1 || b->prompt_len[s] > len))
            return as_error("train_forward: sequence %d: prompt length %d outside [1, %d] (the first token has no prediction)", s,
                            b->prompt_len[s], len);
        if (b->loss_mask && b->loss_mask[(int64_t)s * b->n_ctx])
            return as_error("train_forward: sequence %d: loss mask set on token 0, which has no prediction", s);
        for (int32_t i = 0; i < len; i++) {
            const int32_t t = b->tokens[(int64_t)s * b->n_ctx + i];
            if (t < 0 || t >= m->cfg.n_vocab)
                return as_error("train_forward: sequence %d token %d: id %d outside the vocabulary [0, %d)", s, i, t, m->cfg.n_vocab);
        }
        for (int32_t i = 1; b->target2 && i < len; i++) {
            const int32_t t = b->target2[(int64_t)s * b->n_ctx + i];
            const bool sc = b->loss_mask ? b->loss_mask[(int64_t)s * b->n_ctx + i] != 0 : i >= b->prompt_len[s];
            if (sc && (t < 0 || t >= m->cfg.n_vocab))
                return as_error("train_forward: sequence %d token %d: second target %d outside the vocabulary [0, %d)", s, i, t, m->cfg.n_vocab);
        }
        n += len;
        mx = AS_MAX(mx, (int64_t)len);
    }
    if (n > INT32_MAX) return as_error("train_forward: %lld tokens in one batch (at most %d)", (long long)n, INT32_MAX);
    *n_tok = n, *max_len = mx;
    return AS_OK;
}

static inline bool scored(const train_batch *b, int32_t s, int32_t t) {
    return b->loss_mask ? b->loss_mask[(int64_t)s * b->n_ctx + t] != 0 : t >= b->prompt_len[s];
}

// The output matrix (tok_embd when tied).
static const float *output_matrix(const train_model *m) { return m->cfg.tied_output ? m->params.tok_embd : m->params.output; }

// Layer l's forward pass from resid[l] to resid[l+1], keeping its activations
// in storage slot ls (l, or 0 when checkpointing: then the backward pass calls
// this again for each layer, and the recomputation is bit-identical because
// every op, dropout mask included, is deterministic).  The recomputation
// (recompute) skips what the backward does not read: x_mid, stored for every
// layer, with the output projection that made it, and the down projection
// and resid[l+1]; of those products' adapters it computes only u.
static void layer_forward(train_model *m, int64_t l, bool recompute) {
    train_acts *a = m->acts;
    const model_config *c = &m->cfg;
    const train_params *p = &m->params;
    const as_backend *be = m->be;
    const int nth = m->n_threads;
    const int64_t N = a->n_tok, C = c->n_embd, H = c->n_head, Hkv = c->n_head_kv, d = c->head_dim;
    const int64_t qd = H * d, kvd = Hkv * d, F = c->n_ff, ls = slot(a, l);
    const float *x = a->resid + l * N * C;
    float *ln1 = a->ln1 + ls * N * C, *ln2 = a->ln2 + ls * N * C, *xm = a->resid_mid + l * N * C;
    float *q = a->q + ls * N * qd, *k = a->k + ls * N * kvd, *v = a->v + ls * N * kvd, *att = a->att + ls * N * qd;
    float *gate = a->gate + ls * N * F, *up = a->up + ls * N * F, *hact = a->hact + ls * N * F;
    be->rmsnorm_forward(ln1, a->rstd1 + ls * N, x, p->attn_norm + l * C, N, C, c->rms_eps, nth);
    lin_fwd(m, q, ln1, p->wq + l * qd * C, N, C, qd);
    lora_forward(m, (int)l, TRAIN_LORA_Q, q, ln1, N);
    lin_fwd(m, k, ln1, p->wk + l * kvd * C, N, C, kvd);
    lora_forward(m, (int)l, TRAIN_LORA_K, k, ln1, N);
    lin_fwd(m, v, ln1, p->wv + l * kvd * C, N, C, kvd);
    lora_forward(m, (int)l, TRAIN_LORA_V, v, ln1, N);
    be->rope_forward(q, N, (int)H, (int)d, c->n_rot, c->rope_neox, a->rope_cos, a->rope_sin, nth);
    be->rope_forward(k, N, (int)Hkv, (int)d, c->n_rot, c->rope_neox, a->rope_cos, a->rope_sin, nth);
    be->attention_forward(att, a->lse + ls * N * H, q, k, v, a->seq_off, a->seq_len, a->n_seq, (int)H, (int)Hkv, (int)d, a->scores,
                            a->cap_len, nth);
    if (recompute) lora_forward(m, (int)l, TRAIN_LORA_O, NULL, att, N);
    else {
        lin_fwd(m, a->tmp, att, p->wo + l * C * qd, N, qd, C);
        lora_forward(m, (int)l, TRAIN_LORA_O, a->tmp, att, N);
        be->residual_forward(xm, x, a->tmp, N * C, nth);
    }
    be->rmsnorm_forward(ln2, a->rstd2 + ls * N, xm, p->ffn_norm + l * C, N, C, c->rms_eps, nth);
    lin_fwd(m, gate, ln2, p->w_gate + l * F * C, N, C, F);
    lora_forward(m, (int)l, TRAIN_LORA_GATE, gate, ln2, N);
    lin_fwd(m, up, ln2, p->w_up + l * F * C, N, C, F);
    lora_forward(m, (int)l, TRAIN_LORA_UP, up, ln2, N);
    be->glu_forward(hact, gate, up, N * F, c->gelu, nth);
    if (recompute) {
        lora_forward(m, (int)l, TRAIN_LORA_DOWN, NULL, hact, N);
        return;
    }
    lin_fwd(m, a->tmp, hact, p->w_down + l * C * F, N, F, C);
    lora_forward(m, (int)l, TRAIN_LORA_DOWN, a->tmp, hact, N);
    float *xn = a->resid + (l + 1) * N * C;
    be->residual_forward(xn, xm, a->tmp, N * C, nth);
}

int train_forward(train_model *m, const train_batch *b, float *logp_sum, int32_t *n_scored) {
    int64_t N = 0, max_len = 0;
    if (batch_check(m, b, &N, &max_len)) return AS_FAIL;
    train_acts *a = acts_reserve(m, N, max_len, b->n_seq);
    const model_config *c = &m->cfg;
    const train_params *p = &m->params;
    const as_backend *be = m->be;
    const int nth = m->n_threads;
    const int64_t L = c->n_layer, C = c->n_embd, V = c->n_vocab;
    const int half = c->n_rot / 2;

    // Pack the sequences and list the rows whose next token is scored.
    a->n_seq = b->n_seq;
    a->has_target2 = b->target2 != NULL;
    if (a->has_target2 && a->cap_t2 < N) {
        free(a->target2), free(a->logp_tok2);
        a->target2 = as_malloc(sizeof(int32_t) * (size_t)N), a->logp_tok2 = as_malloc(sizeof(float) * (size_t)N);
        a->cap_t2 = N;
    }
    int64_t off = 0, nr = 0;
    for (int32_t s = 0; s < b->n_seq; s++) {
        a->seq_off[s] = (int32_t)off;
        a->seq_len[s] = b->len[s];
        for (int32_t i = 0; i < b->len[s]; i++) {
            a->tokens[off + i] = b->tokens[(int64_t)s * b->n_ctx + i];
            if (i >= 1 && scored(b, s, i)) {
                if (b->target2) a->target2[nr] = b->target2[(int64_t)s * b->n_ctx + i];
                a->row[nr] = (int32_t)(off + i - 1);
                a->target[nr] = b->tokens[(int64_t)s * b->n_ctx + i];
                a->row_seq[nr] = s;
                nr++;
            }
        }
        off += b->len[s];
    }
    a->n_tok = N, a->n_rows = nr;
    a->with_adapters = m->lora && m->adapters_on;
    a->dropout_on = a->with_adapters && m->training && m->lora->cfg.dropout > 0.0f;
    if (a->dropout_on) a->dropout_seed = as_rng_u64(&m->rng);

    // Rotary angles in double (as src/model/forward.c), per packed row:
    // position * theta^(-2j / n_rot), the frequency divided by Llama-3's factor when present.
    for (int32_t s = 0; s < b->n_seq; s++)
        for (int32_t i = 0; i < b->len[s]; i++)
            for (int j = 0; j < half; j++) {
                const double inv = pow((double)c->rope_theta, -2.0 * j / c->n_rot) / (m->rope_freqs ? (double)m->rope_freqs[j] : 1.0);
                const double ang = (double)i * inv;
                a->rope_cos[(a->seq_off[s] + i) * half + j] = (float)cos(ang);
                a->rope_sin[(a->seq_off[s] + i) * half + j] = (float)sin(ang);
            }

    be->embedding_forward(a->resid, a->tokens, p->tok_embd, N, C, c->emb_scale);
    a->drop_replay = false;
    for (int64_t l = 0; l < L; l++) layer_forward(m, l, false);
    a->drop_replay = true; // the masks of every layer are stored now
    be->rmsnorm_forward(a->lnf, a->rstdf, a->resid + L * N * C, p->output_norm, N, C, c->rms_eps, nth);

    const float *W = output_matrix(m);
    a->has_vgrad = b->backward && a->with_adapters; // LoRA: the backward then needs no dWout, only dx
    as_bf16_packed *Wp = NULL, *Wb = NULL; // bf16: W^T (and W) packed once for all chunks
    if (m->precision == TRAIN_PRECISION_BF16) {
        Wp = be->bf16_pack_b(true, C, V, W, C, nth);
        if (a->has_vgrad) Wb = be->bf16_pack_b(false, V, C, W, C, nth);
    }
    float ones[LOGIT_CHUNK];
    for (int i = 0; i < LOGIT_CHUNK; i++) ones[i] = 1.0f;
    for (int64_t r0 = 0; r0 < nr; r0 += LOGIT_CHUNK) {
        const int64_t nc = AS_MIN((int64_t)LOGIT_CHUNK, nr - r0);
        be->gather_rows(a->xchunk, a->lnf, a->row + r0, nc, C);
        logits_fwd(m, Wp, a->logits, a->xchunk, W, nc);
        be->logsoftmax_forward(a->logp_tok + r0, a->lse_out + r0, a->logits, a->target + r0, nc, V, nth);
        if (a->has_target2)
            for (int64_t i = 0; i < nc; i++) a->logp_tok2[r0 + i] = a->logits[i * V + a->target2[r0 + i]] - a->lse_out[r0 + i];
        if (a->has_vgrad) { // e = (onehot(target) - softmax) W
            be->logsoftmax_backward(a->dlogits, ones, a->logits, a->lse_out + r0, a->target + r0, nc, V, nth);
            logits_dx(m, Wb, a->vgrad + r0 * C, a->dlogits, W, nc);
        }
    }
    be->bf16_packed_free(Wp);
    be->bf16_packed_free(Wb);
    // Sums in double, in row order.
    for (int32_t s = 0; s < b->n_seq; s++) {
        double sum = 0.0;
        int32_t cnt = 0;
        for (int64_t r = 0; r < nr; r++)
            if (a->row_seq[r] == s) sum += a->logp_tok[r], cnt++;
        logp_sum[s] = (float)sum;
        if (n_scored) n_scored[s] = cnt;
    }
    a->valid = true;
    return AS_OK;
}

int64_t train_token_logprobs2(const train_model *m, float *out) {
    if (!m->acts || !m->acts->valid || !m->acts->has_target2) return 0;
    memcpy(out, m->acts->logp_tok2, sizeof(float) * (size_t)m->acts->n_rows);
    return m->acts->n_rows;
}

int64_t train_token_logprobs(const train_model *m, float *out) {
    if (!m->acts || !m->acts->valid) return 0;
    memcpy(out, m->acts->logp_tok, sizeof(float) * (size_t)m->acts->n_rows);
    return m->acts->n_rows;
}

// ---- backward ----

static void grads_ensure(train_model *m) {
    if (m->grads_memory) return;
    m->grads_memory = buf_new(m->be, m->n_params);
    m->be->zero(m->grads_memory, m->n_params);
    params_point(&m->grads, m->grads_memory, m->param_sizes);
}

// Scored row r's upstream gradient on its logits' log-softmax: its sequence's
// (dlogp_sum), or its own (dlogp_tok) plus that on its second target's
// (dlogp_tok2, may be NULL), whose onehot the caller then moves.
static inline float row_upstream(const train_acts *a, const float *dlogp_sum, const float *dlogp_tok, const float *dlogp_tok2, int64_t r) {
    return dlogp_tok ? dlogp_tok[r] + (dlogp_tok2 ? dlogp_tok2[r] : 0.0f) : dlogp_sum[a->row_seq[r]];
}

// Upstream gradient per sequence (dlogp_sum) or per scored row (dlogp_tok, and
// dlogp_tok2 on the second targets, may be NULL).
static int backward_impl(train_model *m, const float *dlogp_sum, const float *dlogp_tok, const float *dlogp_tok2) {
    train_acts *a = m->acts;
    if (!a || !a->valid) return as_error("train_backward: no forward pass to differentiate");
    if (m->lora && !a->with_adapters) return as_error("train_backward: the forward pass ran with the adapters off (nothing to train)");
    const bool full = !m->lora;
    if (full) grads_ensure(m);
    const model_config *c = &m->cfg;
    const train_params *p = &m->params;
    const train_params *g = full ? &m->grads : NULL;
    const as_backend *be = m->be;
    const int nth = m->n_threads;
    const int64_t N = a->n_tok, nr = a->n_rows, L = c->n_layer, C = c->n_embd, H = c->n_head, Hkv = c->n_head_kv, d = c->head_dim;
    const int64_t qd = H * d, kvd = Hkv * d, F = c->n_ff, V = c->n_vocab;
#define G(field, off) (g ? g->field + (off) : NULL)

    // Vocabulary projection and log-softmax: dlogits = g (onehot(target) -
    // softmax) per scored row (g the row's upstream gradient; with a second
    // target g2 on it, g1 + g2 and g2's onehot moved to target2).
    be->zero(a->dln, (size_t)(N * C));
    const float *W = output_matrix(m);
    float *dW = g ? (c->tied_output ? g->tok_embd : g->output) : NULL;
    if (a->has_vgrad) { // LoRA (no dW): dx = g e from the forward's e = (onehot(target) - softmax) W
        float *g = as_malloc(sizeof(float) * (size_t)AS_MAX(nr, (int64_t)1));
        for (int64_t r = 0; r < nr; r++) g[r] = row_upstream(a, dlogp_sum, dlogp_tok, dlogp_tok2, r);
        be->scale_rows(a->dln, a->vgrad, a->row, g, nr, C);
        free(g);
        // A second target's g2 moves its share of the onehot: + g2 (W[target2] - W[target]).
        for (int64_t r = 0; dlogp_tok2 && r < nr; r++) {
            const float g2 = dlogp_tok2[r];
            if (g2 == 0.0f) continue;
            const float *w1 = W + (int64_t)a->target[r] * C, *w2 = W + (int64_t)a->target2[r] * C;
            float *dst = a->dln + (int64_t)a->row[r] * C;
            for (int64_t j = 0; j < C; j++) dst[j] += g2 * (w2[j] - w1[j]);
        }
    }
    // Otherwise the logits are recomputed chunk by chunk.
    const int64_t n_recompute = a->has_vgrad ? 0 : nr;
    as_bf16_packed *Wp = NULL, *Wb = NULL; // bf16: W^T and W packed once for all chunks
    if (m->precision == TRAIN_PRECISION_BF16 && n_recompute) {
        Wp = be->bf16_pack_b(true, C, V, W, C, nth);
        Wb = be->bf16_pack_b(false, V, C, W, C, nth);
    }
    for (int64_t r0 = 0; r0 < n_recompute; r0 += LOGIT_CHUNK) {
        const int64_t nc = AS_MIN((int64_t)LOGIT_CHUNK, nr - r0);
        float dlogp[LOGIT_CHUNK];
        be->gather_rows(a->xchunk, a->lnf, a->row + r0, nc, C);
        for (int64_t i = 0; i < nc; i++) dlogp[i] = row_upstream(a, dlogp_sum, dlogp_tok, dlogp_tok2, r0 + i);
        logits_fwd(m, Wp, a->logits, a->xchunk, W, nc);
        be->logsoftmax_backward(a->dlogits, dlogp, a->logits, a->lse_out + r0, a->target + r0, nc, V, nth);
        // That was (g1 + g2) (onehot(target) - softmax); move g2's onehot to target2.
        if (dlogp_tok2)
            for (int64_t i = 0; i < nc; i++) {
                a->dlogits[i * V + a->target[r0 + i]] -= dlogp_tok2[r0 + i];
                a->dlogits[i * V + a->target2[r0 + i]] += dlogp_tok2[r0 + i];
            }
        if (m->precision == TRAIN_PRECISION_BF16) {
            be->gemm_bf16_packed(false, nc, 1.0f, a->dlogits, V, Wb, 0.0f, a->dxchunk, C, nth);
            lin_bwd(m, NULL, 1.0f, dW, a->dlogits, a->xchunk, W, nc, C, V);
        }
        else {
            lin_bwd(m, a->dxchunk, 0.0f, dW, a->dlogits, a->xchunk, W, nc, C, V);
        }
        // dln[row] += dxchunk: the embedding backward's scatter-add of rows (scale 1: exact).
        be->embedding_backward(a->dln, a->dxchunk, a->row + r0, nc, C, 1.0f);
    }
    be->bf16_packed_free(Wp);
    be->bf16_packed_free(Wb);
    be->zero(a->dresid, (size_t)(N * C));
    be->rmsnorm_backward(a->dresid, G(output_norm, 0), a->dln, a->resid + L * N * C, p->output_norm, a->rstdf, N, C, nth);

    for (int64_t l = L - 1; l >= 0; l--) {
        if (a->checkpoint) layer_forward(m, l, true); // recompute this layer's activations into slot 0
        const int64_t ls = slot(a, l);
        const float *x = a->resid + l * N * C, *xm = a->resid_mid + l * N * C;
        const float *ln1 = a->ln1 + ls * N * C, *ln2 = a->ln2 + ls * N * C;
        const float *q = a->q + ls * N * qd, *k = a->k + ls * N * kvd, *v = a->v + ls * N * kvd, *att = a->att + ls * N * qd;
        const float *gate = a->gate + ls * N * F, *up = a->up + ls * N * F, *hact = a->hact + ls * N * F;
        // x' = x_mid + W_down(h): dresid is d x' and becomes d x_mid.
        // The first product into each gradient buffer writes it (beta 0), the rest add.
        lin_bwd(m, a->dh, 0.0f, G(w_down, l * C * F), a->dresid, hact, p->w_down + l * C * F, N, F, C);
        lora_backward(m, (int)l, TRAIN_LORA_DOWN, a->dh, a->dresid, hact, N);
        be->glu_backward(a->dgate, a->dup, a->dh, gate, up, N * F, c->gelu, nth);
        lin_bwd(m, a->dln, 0.0f, G(w_gate, l * F * C), a->dgate, ln2, p->w_gate + l * F * C, N, C, F);
        lora_backward(m, (int)l, TRAIN_LORA_GATE, a->dln, a->dgate, ln2, N);
        lin_bwd(m, a->dln, 1.0f, G(w_up, l * F * C), a->dup, ln2, p->w_up + l * F * C, N, C, F);
        lora_backward(m, (int)l, TRAIN_LORA_UP, a->dln, a->dup, ln2, N);
        be->rmsnorm_backward(a->dresid, G(ffn_norm, l * C), a->dln, xm, p->ffn_norm + l * C, a->rstd2 + ls * N, N, C, nth);
        // x_mid = x + W_o(att): dresid becomes d x.
        lin_bwd(m, a->datt, 0.0f, G(wo, l * C * qd), a->dresid, att, p->wo + l * C * qd, N, qd, C);
        lora_backward(m, (int)l, TRAIN_LORA_O, a->datt, a->dresid, att, N);
        be->zero(a->dq, (size_t)(N * qd));
        be->zero(a->dk, (size_t)(N * kvd));
        be->zero(a->dv, (size_t)(N * kvd));
        be->attention_backward(a->dq, a->dk, a->dv, a->datt, att, a->lse + ls * N * H, q, k, v, a->seq_off, a->seq_len, a->n_seq, (int)H,
                                 (int)Hkv, (int)d, nth);
        be->rope_backward(a->dq, N, (int)H, (int)d, c->n_rot, c->rope_neox, a->rope_cos, a->rope_sin, nth);
        be->rope_backward(a->dk, N, (int)Hkv, (int)d, c->n_rot, c->rope_neox, a->rope_cos, a->rope_sin, nth);
        lin_bwd(m, a->dln, 0.0f, G(wq, l * qd * C), a->dq, ln1, p->wq + l * qd * C, N, C, qd);
        lora_backward(m, (int)l, TRAIN_LORA_Q, a->dln, a->dq, ln1, N);
        lin_bwd(m, a->dln, 1.0f, G(wk, l * kvd * C), a->dk, ln1, p->wk + l * kvd * C, N, C, kvd);
        lora_backward(m, (int)l, TRAIN_LORA_K, a->dln, a->dk, ln1, N);
        lin_bwd(m, a->dln, 1.0f, G(wv, l * kvd * C), a->dv, ln1, p->wv + l * kvd * C, N, C, kvd);
        lora_backward(m, (int)l, TRAIN_LORA_V, a->dln, a->dv, ln1, N);
        be->rmsnorm_backward(a->dresid, G(attn_norm, l * C), a->dln, x, p->attn_norm + l * C, a->rstd1 + ls * N, N, C, nth);
    }
    if (g) be->embedding_backward(g->tok_embd, a->dresid, a->tokens, N, C, c->emb_scale);
#undef G
    return AS_OK;
}

int train_backward(train_model *m, const float *dlogp_sum) { return backward_impl(m, dlogp_sum, NULL, NULL); }

int train_backward_tokens(train_model *m, const float *dlogp_tok, const float *dlogp_tok2) {
    if (dlogp_tok2 && m->acts && m->acts->valid && !m->acts->has_target2)
        return as_error("train_backward_tokens: gradients for second targets, but the forward pass had none");
    return backward_impl(m, NULL, dlogp_tok, dlogp_tok2);
}

// ---- the trainable view ----

size_t train_trainable(train_model *m, float **params, float **grads, const optim_segment **segs, int *n_segs) {
    m->n_segs = 0;
    if (m->lora) {
        train_lora *lo = m->lora;
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
            if (!lo->a[t]) continue;
            const size_t na = (size_t)(m->cfg.n_layer * lo->cfg.rank * lo->in[t]), nb = (size_t)(m->cfg.n_layer * lo->out[t] * lo->cfg.rank);
            m->segs[m->n_segs++] = (optim_segment){TRAIN_LORA_TARGET_NAMES[t], (size_t)(lo->a[t] - lo->memory), na, true};
            m->segs[m->n_segs++] = (optim_segment){TRAIN_LORA_TARGET_NAMES[t], (size_t)(lo->b[t] - lo->memory), nb, true};
        }
        *params = lo->memory, *grads = lo->grad_memory;
        *segs = m->segs, *n_segs = m->n_segs;
        return lo->n;
    }
    grads_ensure(m);
    size_t off = 0;
    for (int i = 0; i < TRAIN_N_PARAMS; i++) {
        const bool norm = !strcmp(TRAIN_PARAM_NAMES[i], "output_norm") || !strcmp(TRAIN_PARAM_NAMES[i], "attn_norm") ||
                          !strcmp(TRAIN_PARAM_NAMES[i], "ffn_norm");
        if (m->param_sizes[i]) m->segs[m->n_segs++] = (optim_segment){TRAIN_PARAM_NAMES[i], off, m->param_sizes[i], !norm};
        off += m->param_sizes[i];
    }
    *params = m->params_memory, *grads = m->grads_memory;
    *segs = m->segs, *n_segs = m->n_segs;
    return m->n_params;
}

void train_zero_grad(train_model *m) {
    if (m->lora) m->be->zero(m->lora->grad_memory, m->lora->n);
    else if (m->grads_memory) m->be->zero(m->grads_memory, m->n_params);
}

void train_optim_step(train_model *m, optim *o, double *grad_norm, double *lr) {
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    const size_t n = train_trainable(m, &params, &grads, &segs, &n_segs);
    if (n != o->n) as_die("train_optim_step: optimizer built for %zu parameters, model trains %zu", o->n, n);
    optim_set_backend(o, m->be);
    const double norm = optim_clip_grad_norm_on(m->be, grads, n, o->cfg.max_grad_norm, m->n_threads);
    const double used = optim_step(o, params, grads, segs, n_segs, m->n_threads);
    if (grad_norm) *grad_norm = norm;
    if (lr) *lr = used;
}

float *train_params_find(const train_model *m, const train_params *p, const char *name, int64_t *n) {
    const model_config *c = &m->cfg;
    const int64_t C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    const int64_t V = c->n_vocab;
    if (!strcmp(name, "token_embd.weight")) return *n = V * C, p->tok_embd;
    if (!strcmp(name, "output.weight")) return p->output ? (*n = V * C, p->output) : NULL;
    if (!strcmp(name, "output_norm.weight")) return *n = C, p->output_norm;
    int l = -1, used = 0;
    char rest[32];
    if (sscanf(name, "blk.%d.%31[a-z_].weight%n", &l, rest, &used) != 2 || name[used] || l < 0 || l >= c->n_layer) return NULL;
    static const struct { const char *gguf; int slot; int64_t rows_id, cols_id; } map[] = {
        {"attn_norm", 3, 0, 1}, {"attn_q", 4, 2, 1}, {"attn_k", 5, 3, 1}, {"attn_v", 6, 3, 1}, {"attn_output", 7, 1, 2},
        {"ffn_norm", 8, 0, 1},  {"ffn_gate", 9, 4, 1}, {"ffn_up", 10, 4, 1}, {"ffn_down", 11, 1, 4}};
    const int64_t dims[5] = {1, C, qd, kvd, F}; // indexed by rows_id / cols_id
    for (size_t i = 0; i < AS_ARRAY_LEN(map); i++) {
        if (strcmp(rest, map[i].gguf)) continue;
        const int64_t per_layer = dims[map[i].rows_id] * dims[map[i].cols_id];
        float *base = ((float *const *)p)[map[i].slot];
        if (!base) return NULL;
        *n = per_layer;
        return base + (int64_t)l * per_layer;
    }
    return NULL;
}

void train_shuffle(int64_t *perm, int64_t n, as_rng *rng) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)as_rng_below(rng, (uint64_t)i + 1);
        const int64_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
}
