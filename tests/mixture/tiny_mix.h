// A tiny random llama model whose answers can be enumerated: 4 tokens (0, 1, 2
// ordinary, 3 = END), one layer, F32 weights, written with gguf_writer; pi_t
// is the base plus random LoRA adapters (B != 0, so pi_t != pi_0 = the base).
// With answers of at most MIX_N tokens there are 1 + 3 + 9 answers ending
// with END and 27 truncated ones (MIX_N = 3): 40 leaves, enumerated by index.
#ifndef AS_TEST_TINY_MIX_H
#define AS_TEST_TINY_MIX_H

#include "test_common.h"

#include <math.h>

#include "gguf/gguf.h"
#include "model/model.h"
#include "train/train.h"
#include "util/common.h"
#include "util/rng.h"

#define MIX_V 4
#define MIX_END 3
#define MIX_N 3 // max_new_tokens
#define MIX_LEAVES 40

static inline double mix_normal(as_rng *r) {
    const double u1 = as_rng_uniform(r) + 1e-300, u2 = as_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline void mix_tensor(gguf_writer *w, as_rng *r, const char *name, int64_t cols, int64_t rows, double scale, double offset) {
    const size_t n = (size_t)cols * (size_t)(rows > 0 ? rows : 1);
    float *x = as_malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(offset + scale * mix_normal(r));
    int64_t ne[2] = {cols, rows};
    gguf_write_tensor(w, name, GGML_TYPE_F32, rows > 0 ? 2 : 1, ne, x, n * sizeof *x);
    free(x);
}

// out_scale sets how peaked the next-token distributions are.
static inline void mix_write_model(const char *path, uint64_t seed, double out_scale) {
    const int C = 16, F = 32, H = 2, Hkv = 1, hd = C / H;
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "general.architecture", "llama");
    gguf_write_u32(w, "llama.context_length", 64);
    gguf_write_u32(w, "llama.embedding_length", (uint32_t)C);
    gguf_write_u32(w, "llama.block_count", 1);
    gguf_write_u32(w, "llama.feed_forward_length", (uint32_t)F);
    gguf_write_u32(w, "llama.attention.head_count", (uint32_t)H);
    gguf_write_u32(w, "llama.attention.head_count_kv", (uint32_t)Hkv);
    gguf_write_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_write_f32(w, "llama.rope.freq_base", 10000.0f);
    as_rng r;
    as_rng_seed(&r, seed);
    const double s = 1.0 / sqrt((double)C);
    mix_tensor(w, &r, "token_embd.weight", C, MIX_V, 1.0, 0.0);
    mix_tensor(w, &r, "output_norm.weight", C, 0, 0.1, 1.0);
    mix_tensor(w, &r, "output.weight", C, MIX_V, out_scale * s, 0.0);
    mix_tensor(w, &r, "blk.0.attn_norm.weight", C, 0, 0.1, 1.0);
    mix_tensor(w, &r, "blk.0.attn_q.weight", C, C, 2.0 * s, 0.0);
    mix_tensor(w, &r, "blk.0.attn_k.weight", C, Hkv * hd, 2.0 * s, 0.0);
    mix_tensor(w, &r, "blk.0.attn_v.weight", C, Hkv * hd, s, 0.0);
    mix_tensor(w, &r, "blk.0.attn_output.weight", C, C, s, 0.0);
    mix_tensor(w, &r, "blk.0.ffn_norm.weight", C, 0, 0.1, 1.0);
    mix_tensor(w, &r, "blk.0.ffn_gate.weight", C, F, s, 0.0);
    mix_tensor(w, &r, "blk.0.ffn_up.weight", C, F, s, 0.0);
    mix_tensor(w, &r, "blk.0.ffn_down.weight", F, C, 1.0 / sqrt((double)F), 0.0);
    if (gguf_writer_save(w, path)) fail_msg("%s", as_last_error());
    gguf_writer_free(w);
}

// Adapters of rank r on every matrix with B ~ N(0, b_scale^2) (train_lora_new leaves B = 0).
static inline train_lora *mix_random_lora(const model_config *cfg, int32_t rank, double b_scale, uint64_t seed) {
    train_lora_config lc = {.rank = rank, .alpha = (float)rank, .dropout = 0.0f, .targets = 0, .seed = seed};
    train_lora *l = train_lora_new(cfg, &lc);
    if (!l) fail_msg("%s", as_last_error());
    as_rng r;
    as_rng_seed(&r, seed + 1);
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
        if (!l->b[t]) continue;
        const int64_t n = (int64_t)cfg->n_layer * l->out[t] * rank;
        for (int64_t i = 0; i < n; i++) l->b[t][i] = (float)(b_scale * mix_normal(&r));
    }
    return l;
}

// Leaf index of an answer: END-terminated answers with d ordinary tokens
// first (offsets 0, 1, 4 for d = 0, 1, 2), then the 27 truncated ones.
static inline int mix_leaf_index(const int32_t *ids, int64_t n_ids, bool ended) {
    const int d = ended ? (int)n_ids - 1 : (int)n_ids;
    int code = 0;
    for (int i = 0; i < d; i++) code = code * 3 + ids[i];
    if (ended) return (d == 0 ? 0 : d == 1 ? 1 : 4) + code;
    return 13 + code;
}

// The answer of a leaf: tokens (END appended when ended) and whether it ended.
static inline int mix_leaf_tokens(int leaf, int32_t *ids, bool *ended) {
    int d, code;
    if (leaf < 13) *ended = true, d = leaf == 0 ? 0 : leaf < 4 ? 1 : 2, code = leaf - (d == 0 ? 0 : d == 1 ? 1 : 4);
    else *ended = false, d = 3, code = leaf - 13;
    for (int i = d - 1; i >= 0; i--) ids[i] = code % 3, code /= 3;
    if (*ended) ids[d] = MIX_END;
    return *ended ? d + 1 : d;
}

// log-softmax of every position of prompt + ids under the model's current
// adapters (f32), independently of the library under test: lp[i][v] = log p(v | prompt, ids[<i]), i = 0..n.
static inline void mix_logsoftmax_rows(model *m, const int32_t *prompt, int np, const int32_t *ids, int n, double lp[][MIX_V]) {
    int32_t tok[32], seq[32], pos[32];
    bool want[32];
    const int total = np + n;
    for (int i = 0; i < total; i++) tok[i] = i < np ? prompt[i] : ids[i - np], seq[i] = 0, pos[i] = i, want[i] = i >= np - 1;
    kv_cache *kv = kv_cache_init(&m->cfg, 1, total, KERNEL_PRECISION_F32);
    float logits[32 * MIX_V];
    model_batch b = {.n_tokens = total, .token = tok, .seq = seq, .pos = pos, .want_logits = want};
    if (model_forward(m, kv, &b, logits)) fail_msg("%s", as_last_error());
    for (int i = 0; i <= n; i++) {
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < MIX_V; v++) mx = fmax(mx, logits[i * MIX_V + v]);
        for (int v = 0; v < MIX_V; v++) s += exp(logits[i * MIX_V + v] - mx);
        for (int v = 0; v < MIX_V; v++) lp[i][v] = logits[i * MIX_V + v] - mx - log(s);
    }
    kv_cache_free(kv);
}

// log pi(leaf) for every leaf under the model's current adapters.
static inline void mix_leaf_logps(model *m, const int32_t *prompt, int np, double *out) {
    for (int leaf = 0; leaf < MIX_LEAVES; leaf++) {
        int32_t ids[MIX_N + 1];
        bool ended;
        const int n = mix_leaf_tokens(leaf, ids, &ended);
        double lp[MIX_N + 2][MIX_V];
        mix_logsoftmax_rows(m, prompt, np, ids, n, lp);
        double s = 0;
        for (int i = 0; i < n; i++) s += lp[i][ids[i]];
        out[leaf] = s;
    }
}

static inline double mix_tv(const double *p, const double *q, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += fabs(p[i] - q[i]);
    return 0.5 * s;
}

#endif
