// Model configuration from GGUF metadata and weight binding.
//
// Nothing about an architecture is hard-coded beyond what differs between
// them in the math (see model_config in model.h): every size comes from the
// `<arch>.*` keys, the vocabulary size from token_embd's shape, and each
// tensor's shape is checked against the configuration before any pointer into
// the file is kept.  Matrices stay in the mapped file in their stored type
// (the backend's weight groups read them there, upload_weights); only the
// small norm vectors are copied to one fp32 buffer.
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model_hf.h"
#include "model/model_internal.h"
#include "tensor/quant.h"
#include "util/common.h"

// Sizes above this are treated as a corrupt file rather than a model.
#define MODEL_MAX_DIM (1 << 24)

typedef struct arch_traits {
    const char *name;
    model_arch arch;
    bool rope_neox, gelu, emb_scale_sqrt;
} arch_traits;

// llama: rotary pairs are adjacent because convert_hf_to_gguf permutes the Q/K
// rows (llama.cpp LLAMA_ROPE_TYPE_NORM).  gemma: no permutation, so the pairs
// are the HF halves (LLAMA_ROPE_TYPE_NEOX); GeGLU; embeddings scaled by sqrt(C).
static const arch_traits ARCHS[] = {
    {"llama", MODEL_ARCH_LLAMA, false, false, false},
    {"gemma", MODEL_ARCH_GEMMA, true, true, true},
};

static const char *model_path(const gguf_file *f) { return f->path ? f->path : "<buffer>"; }

static int read_dim(const gguf_file *f, const char *arch, const char *suffix, bool required, int32_t def, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v = (uint32_t)def;
    if (required ? gguf_get_u32(f, key, &v) : gguf_opt_u32(f, key, &v)) return AS_FAIL;
    if (v < 1 || v > MODEL_MAX_DIM)
        return as_error("%s: key %s: expected a value in [1, %d], found %u", model_path(f), key, MODEL_MAX_DIM, v);
    *out = (int32_t)v;
    return AS_OK;
}

static int read_config(const gguf_file *f, model_config *c) {
    const char *path = model_path(f);
    gguf_str s;
    if (gguf_get_str(f, "general.architecture", &s)) return AS_FAIL;
    const arch_traits *t = NULL;
    for (size_t i = 0; i < AS_ARRAY_LEN(ARCHS); i++)
        if (gguf_str_eq(s, ARCHS[i].name)) t = &ARCHS[i];
    if (!t) {
        int n = (int)AS_MIN(s.len, (uint64_t)64);
        return as_error("%s: general.architecture '%.*s' is not supported (supported: llama, gemma)", path, n, s.ptr);
    }
    memset(c, 0, sizeof *c);
    c->arch = t->arch;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", t->name);
    const char *a = t->name;
    if (read_dim(f, a, "embedding_length", true, 0, &c->n_embd) || read_dim(f, a, "block_count", true, 0, &c->n_layer) ||
        read_dim(f, a, "feed_forward_length", true, 0, &c->n_ff) || read_dim(f, a, "attention.head_count", true, 0, &c->n_head) ||
        read_dim(f, a, "attention.head_count_kv", false, c->n_head, &c->n_head_kv) ||
        read_dim(f, a, "context_length", true, 0, &c->n_ctx_train))
        return AS_FAIL;
    if (c->n_head % c->n_head_kv)
        return as_error("%s: %s.attention.head_count %d is not a multiple of head_count_kv %d", path, a, c->n_head, c->n_head_kv);
    // Head size: key_length when present (Gemma: 256 != C / n_head), else C / n_head.
    char key[128];
    snprintf(key, sizeof key, "%s.attention.key_length", a);
    if (gguf_find_key(f, key) < 0 && c->n_embd % c->n_head)
        return as_error("%s: %s.embedding_length %d is not a multiple of head_count %d and %s is absent", path, a, c->n_embd,
                        c->n_head, key);
    int32_t head_v;
    if (read_dim(f, a, "attention.key_length", false, c->n_embd / c->n_head, &c->head_dim) ||
        read_dim(f, a, "attention.value_length", false, c->head_dim, &head_v) ||
        read_dim(f, a, "rope.dimension_count", false, c->head_dim, &c->n_rot))
        return AS_FAIL;
    if (head_v != c->head_dim)
        return as_error("%s: %s.attention.value_length %d differs from key_length %d (not supported)", path, a, head_v, c->head_dim);
    if (c->n_rot > c->head_dim || c->n_rot % 2)
        return as_error("%s: %s.rope.dimension_count %d: expected an even number <= head size %d", path, a, c->n_rot, c->head_dim);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    if (gguf_get_f32(f, key, &c->rms_eps)) return AS_FAIL;
    if (!(c->rms_eps > 0.0f && c->rms_eps < 1.0f))
        return as_error("%s: %s: expected a value in (0, 1), found %g", path, key, (double)c->rms_eps);
    c->rope_theta = 10000.0f;
    snprintf(key, sizeof key, "%s.rope.freq_base", a);
    if (gguf_opt_f32(f, key, &c->rope_theta)) return AS_FAIL;
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
        return as_error("%s: %s: expected a finite value > 1, found %g", path, key, (double)c->rope_theta);
    // RoPE scaling by type (linear, YaRN) changes the frequencies in ways not
    // implemented here: refuse rather than produce subtly wrong logits.
    // (Llama-3's per-frequency factors, rope_freqs.weight, are supported.)
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    int64_t ki = gguf_find_key(f, key);
    if (ki >= 0) {
        gguf_str st;
        if (gguf_get_str(f, key, &st)) return AS_FAIL;
        if (!gguf_str_eq(st, "none"))
            return as_error("%s: %s '%.*s' is not supported (only unscaled RoPE)", path, key, (int)AS_MIN(st.len, (uint64_t)32), st.ptr);
    }
    c->rope_neox = t->rope_neox;
    c->gelu = t->gelu;
    c->norm_add_one = false; // GGUF gemma norms already hold 1 + w (see model.h)
    c->emb_scale = t->emb_scale_sqrt ? sqrtf((float)c->n_embd) : 1.0f;
    return AS_OK;
}

static void fmt_ne(char *buf, size_t n, const int64_t *ne, uint32_t n_dims) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < n_dims && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

// Checks that tensor `name` exists with exactly the shape `ne` (GGUF order:
// ne[0] is the row length).
static int find_shaped(const gguf_file *f, const char *name, uint32_t n_dims, const int64_t *ne, const gguf_tensor **out) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    char want[96], got[96];
    fmt_ne(want, sizeof want, ne, n_dims);
    if (!t) return as_error("%s: tensor %s is missing (expected shape %s)", model_path(f), name, want);
    bool ok = t->n_dims == n_dims;
    for (uint32_t i = 0; i < GGUF_MAX_DIMS && ok; i++) ok = t->ne[i] == (i < n_dims ? ne[i] : 1);
    if (!ok) {
        fmt_ne(got, sizeof got, t->ne, t->n_dims);
        return as_error("%s: tensor %s: expected shape %s, found %s", model_path(f), name, want, got);
    }
    *out = t;
    return AS_OK;
}

static int bind_matrix(const gguf_file *f, const char *name, int64_t rows, int64_t cols, as_matrix *m) {
    const int64_t ne[2] = {cols, rows};
    const gguf_tensor *t;
    if (find_shaped(f, name, 2, ne, &t)) return AS_FAIL;
    size_t row_bytes = quant_row_size(t->type, cols);
    if (!ggml_type_supported(t->type) || row_bytes == 0)
        return as_error("%s: tensor %s: type %s is not supported for a weight matrix", model_path(f), name, ggml_type_name(t->type));
    m->data = t->data;
    m->type = t->type;
    m->rows = rows;
    m->cols = cols;
    m->row_bytes = row_bytes;
    return AS_OK;
}

// Norm vectors (and RoPE factors) are tiny: convert whatever float type they are stored in.
static int bind_norm(const gguf_file *f, const char *name, int64_t n, bool add_one, float *dst) {
    const gguf_tensor *t;
    if (find_shaped(f, name, 1, &n, &t)) return AS_FAIL;
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16)
        return as_error("%s: tensor %s: expected type F32, F16 or BF16, found %s", model_path(f), name, ggml_type_name(t->type));
    quant_dequantize_row(t->type, t->data, dst, n);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(dst[i])) return as_error("%s: tensor %s: element %lld is not finite", model_path(f), name, (long long)i);
        if (add_one) dst[i] += 1.0f;
    }
    return AS_OK;
}

// ---- the weights on the backend ----

static void release_weights(model *m) {
    if (!m->be) return;
    for (int32_t l = 0; m->layers && l < m->cfg.n_layer; l++) {
        model_layer *L = &m->layers[l];
        as_weights **g[] = {&L->qkv, &L->o, &L->gate_up, &L->down};
        for (size_t i = 0; i < AS_ARRAY_LEN(g); i++) m->be->weights_free(*g[i]), *g[i] = NULL;
    }
    m->be->weights_free(m->out_w), m->out_w = NULL;
}

// The layers' matrices handed to be, grouped by the activations they
// multiply; AS_FAIL + as_error (what the backend said) when it cannot hold
// them, with the groups made so far released.
static int upload_weights(model *m, const as_backend *be) {
    m->be = be;
    for (int32_t l = 0; l < m->cfg.n_layer; l++) {
        model_layer *L = &m->layers[l];
        L->qkv = be->weights_new((const as_matrix *[]){&L->wq, &L->wk, &L->wv}, 3);
        L->o = be->weights_new((const as_matrix *[]){&L->wo}, 1);
        L->gate_up = be->weights_new((const as_matrix *[]){&L->w_gate, &L->w_up}, 2);
        L->down = be->weights_new((const as_matrix *[]){&L->w_down}, 1);
        if (!L->qkv || !L->o || !L->gate_up || !L->down) {
            as_backend_error(be, "model: layer %d's weights on %s", (int)l, be->name);
            release_weights(m);
            return AS_FAIL;
        }
    }
    m->out_w = be->weights_new((const as_matrix *[]){&m->output}, 1);
    if (!m->out_w) {
        as_backend_error(be, "model: output weights on %s", be->name);
        release_weights(m);
        return AS_FAIL;
    }
    return AS_OK;
}

int model_from_gguf(model **out, gguf_file *f) {
    *out = NULL;
    // The weights in memory of the process's own, on huge pages: batch-1 q8
    // decoding of the default model, alternating with ALPHASPIN_GGUF_COPY=0
    // (which keeps reading the file's mapping): medians 161 -> 189 tok/s
    // (8 pairs, 6 faster) and, reading the whole file instead, 130 -> 147
    // (8 pairs, 7 faster) and 122 -> 131 (6, all faster); same peak RSS.
    const char *copy = getenv("ALPHASPIN_GGUF_COPY");
    if (!(copy && !strcmp(copy, "0"))) gguf_own_tensor_data(f);
    model *m = as_calloc(1, sizeof *m);
    m->file = f;
    pthread_mutex_init(&m->lock, NULL);
    model_config *c = &m->cfg;
    const char *path = model_path(f);
    if (read_config(f, c)) goto fail;

    const int64_t C = c->n_embd, q_dim = (int64_t)c->n_head * c->head_dim, kv_dim = (int64_t)c->n_head_kv * c->head_dim;
    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    if (!te) {
        as_error("%s: tensor token_embd.weight is missing", path);
        goto fail;
    }
    if (te->n_dims != 2 || te->ne[0] != C || te->ne[1] < 1 || te->ne[1] > INT32_MAX) {
        char got[96];
        fmt_ne(got, sizeof got, te->ne, te->n_dims);
        as_error("%s: tensor token_embd.weight: expected shape [%lld, n_vocab], found %s", path, (long long)C, got);
        goto fail;
    }
    c->n_vocab = (int32_t)te->ne[1];
    if (bind_matrix(f, "token_embd.weight", c->n_vocab, C, &m->tok_embd)) goto fail;
    c->tied_output = gguf_find_tensor(f, "output.weight") == NULL;
    if (c->tied_output) m->output = m->tok_embd;
    else if (bind_matrix(f, "output.weight", c->n_vocab, C, &m->output)) goto fail;

    // fp32 store: per layer attn_norm and ffn_norm, then output_norm, then rope_freqs.
    m->f32_store = as_malloc(sizeof(float) * ((size_t)C * (2 * (size_t)c->n_layer + 1) + (size_t)c->n_rot / 2 + 1));
    float *st = m->f32_store;
    m->output_norm = st + (size_t)2 * c->n_layer * C;
    if (bind_norm(f, "output_norm.weight", C, c->norm_add_one, (float *)m->output_norm)) goto fail;
    // Llama-3 style RoPE scaling: llama.cpp's converter stores one factor per
    // frequency, and theta_i becomes theta_i / factor_i.
    if (gguf_find_tensor(f, "rope_freqs.weight")) {
        float *rf = (float *)m->output_norm + C;
        if (bind_norm(f, "rope_freqs.weight", c->n_rot / 2, false, rf)) goto fail;
        for (int32_t i = 0; i < c->n_rot / 2; i++)
            if (!(rf[i] > 0.0f)) {
                as_error("%s: tensor rope_freqs.weight: element %d is %g, expected > 0", path, (int)i, (double)rf[i]);
                goto fail;
            }
        m->rope_freqs = rf;
    }
    m->layers = as_calloc((size_t)c->n_layer, sizeof *m->layers);
    for (int32_t l = 0; l < c->n_layer; l++) {
        model_layer *L = &m->layers[l];
        char name[96];
#define BLK(suffix) (snprintf(name, sizeof name, "blk.%d." suffix ".weight", (int)l), name)
        float *an = st + (size_t)2 * l * C, *fn = an + C;
        L->attn_norm = an;
        L->ffn_norm = fn;
        if (bind_norm(f, BLK("attn_norm"), C, c->norm_add_one, an) || bind_norm(f, BLK("ffn_norm"), C, c->norm_add_one, fn) ||
            bind_matrix(f, BLK("attn_q"), q_dim, C, &L->wq) || bind_matrix(f, BLK("attn_k"), kv_dim, C, &L->wk) ||
            bind_matrix(f, BLK("attn_v"), kv_dim, C, &L->wv) || bind_matrix(f, BLK("attn_output"), C, q_dim, &L->wo) ||
            bind_matrix(f, BLK("ffn_gate"), c->n_ff, C, &L->w_gate) || bind_matrix(f, BLK("ffn_up"), c->n_ff, C, &L->w_up) ||
            bind_matrix(f, BLK("ffn_down"), C, c->n_ff, &L->w_down))
            goto fail;
#undef BLK
    }
    if (upload_weights(m, &as_backend_cpu)) as_die("%s", as_last_error()); // (the CPU's groups only reference the GGUF's blocks)
    *out = m;
    return AS_OK;
fail:
    model_free(m);
    return AS_FAIL;
}

int model_load(model **out, const char *path) {
    *out = NULL;
    if (model_path_is_dir(path)) return model_load_hf(out, path); // a Hugging Face folder (model_hf.h)
    gguf_file *f;
    if (gguf_open(&f, path)) return AS_FAIL;
    return model_from_gguf(out, f);
}

int model_use_backend(model *m, const as_backend *be) {
    const char *missing = as_backend_missing(be, AS_BACKEND_INFERENCE);
    if (missing) return as_error("backend %s cannot run a model yet: it has no %s op", be->name, missing);
    if (be == m->be) return AS_OK;
    pthread_mutex_lock(&m->lock);
    release_weights(m);
    const int rc = upload_weights(m, be);
    // Failed: back on the CPU, usable and freeable (a success there sets no
    // error, so the backend's stays).
    if (rc && upload_weights(m, &as_backend_cpu)) as_die("%s", as_last_error());
    pthread_mutex_unlock(&m->lock);
    return rc;
}

size_t model_layout_bytes(const model *m) {
    size_t n = m->be->weights_bytes(m->out_w);
    for (int32_t l = 0; l < m->cfg.n_layer; l++) {
        const model_layer *L = &m->layers[l];
        n += m->be->weights_bytes(L->qkv) + m->be->weights_bytes(L->o) + m->be->weights_bytes(L->gate_up) + m->be->weights_bytes(L->down);
    }
    return n;
}

void model_free(model *m) {
    if (!m) return;
    model_scratch_free(m->scratch);
    release_weights(m);
    free(m->layers);
    free(m->f32_store);
    gguf_close(m->file);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

// ---- KV cache ----

kv_cache *kv_cache_init_on(const as_backend *be, const model_config *cfg, int32_t n_seq, int32_t n_ctx, kernel_precision precision) {
    if (n_seq < 1 || n_ctx < 1) {
        as_error("kv_cache_init: expected n_seq >= 1 and n_ctx >= 1, found %d and %d", n_seq, n_ctx);
        return NULL;
    }
    if (precision != KERNEL_PRECISION_F32 && precision != KERNEL_PRECISION_Q8 && precision != KERNEL_PRECISION_BF16) {
        as_error("kv_cache_init: precision %d: expected f32, q8 or bf16", (int)precision);
        return NULL;
    }
    kv_cache *kv = as_calloc(1, sizeof *kv);
    if (be->kv_init(&kv->mem, cfg->n_layer, n_seq, n_ctx, cfg->n_head_kv, cfg->head_dim)) {
        as_backend_error(be, "kv cache of %d sequences x %d positions on %s", n_seq, n_ctx, be->name);
        free(kv);
        return NULL;
    }
    kv->be = be;
    kv->precision = precision;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->n_layer = cfg->n_layer;
    kv->kv_dim = cfg->n_head_kv * cfg->head_dim;
    kv->n_head_kv = cfg->n_head_kv;
    kv->len = as_calloc((size_t)n_seq, sizeof *kv->len);
    return kv;
}

kv_cache *kv_cache_init(const model_config *cfg, int32_t n_seq, int32_t n_ctx, kernel_precision precision) {
    return kv_cache_init_on(&as_backend_cpu, cfg, n_seq, n_ctx, precision);
}

kv_cache *model_kv_cache(const model *m, int32_t n_seq, int32_t n_ctx, kernel_precision precision) {
    return kv_cache_init_on(m->be, &m->cfg, n_seq, n_ctx, precision);
}

void kv_cache_free(kv_cache *kv) {
    if (!kv) return;
    kv->be->kv_release(&kv->mem);
    free(kv->len);
    free(kv);
}

void kv_cache_clear_seq(kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->n_seq) as_die("kv_cache_clear_seq: sequence %d outside [0, %d)", seq, kv->n_seq);
    kv->len[seq] = 0;
}

void kv_cache_truncate_seq(kv_cache *kv, int32_t seq, int32_t len) {
    if (seq < 0 || seq >= kv->n_seq || len < 0) as_die("kv_cache_truncate_seq: sequence %d / length %d invalid", seq, len);
    if (len < kv->len[seq]) kv->len[seq] = len;
}

void kv_cache_copy_prefix(kv_cache *kv, int32_t dst, int32_t src, int32_t n_pos) {
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq || n_pos < 0 || n_pos > kv->len[src])
        as_die("kv_cache_copy_prefix: sequence %d -> %d, %d positions invalid", src, dst, n_pos);
    kv->be->kv_copy_prefix(&kv->mem, dst, src, n_pos);
    kv->len[dst] = n_pos;
}

void kv_cache_copy_seq(kv_cache *kv, int32_t dst, int32_t src) {
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq) as_die("kv_cache_copy_seq: sequence %d -> %d invalid", src, dst);
    kv_cache_copy_prefix(kv, dst, src, kv->len[src]);
}
