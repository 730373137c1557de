// Llama-family models read from GGUF: configuration from metadata, weights
// bound in place inside the mapped file, and a batched forward pass with a KV
// cache (prefill many tokens at once, then decode), several sequences of
// different lengths in one batch.
#ifndef AS_MODEL_H
#define AS_MODEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "tensor/backend.h"

typedef enum model_arch { MODEL_ARCH_LLAMA = 0, MODEL_ARCH_GEMMA = 1 } model_arch;

typedef struct model_config {
    model_arch arch;
    char arch_name[32];
    int32_t n_vocab;
    int32_t n_embd;      // hidden size C
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;   // grouped-query (n_head_kv < n_head), multi-query (1)
    int32_t head_dim;    // key/value length per head (Gemma: 256)
    int32_t n_ff;
    int32_t n_ctx_train;
    int32_t n_rot;       // rotary dimensions (<= head_dim)
    float rms_eps;
    float rope_theta;
    bool rope_neox;      // false: GGUF llama pairing (x[2i], x[2i+1]); true: halves (x[i], x[i+d/2]) as Gemma
    // Gemma's RMSNorm multiplies by (1 + w_hf), but llama.cpp's converter
    // (convert_hf_to_gguf.py, GemmaModel) already stores w_gguf = w_hf + 1, so
    // the forward pass multiplies by the stored weight for both architectures
    // and the GGUF loader leaves this false.  It is there for a loader of
    // HF-convention weights, which would set it so that bind_norm adds the 1
    // (tested: adding it to a GGUF gemma breaks the reference match).
    bool norm_add_one;
    bool gelu;           // Gemma: GeGLU (tanh-approx GELU); llama: SwiGLU
    float emb_scale;     // Gemma: sqrt(n_embd); llama: 1
    bool tied_output;    // output matrix is the token embedding
} model_config;

typedef struct model_layer {
    const float *attn_norm; // (C)
    as_matrix wq;           // (n_head*head_dim, C)
    as_matrix wk, wv;       // (n_head_kv*head_dim, C)
    as_matrix wo;           // (C, n_head*head_dim)
    const float *ffn_norm;  // (C)
    as_matrix w_gate, w_up; // (n_ff, C)
    as_matrix w_down;       // (C, n_ff)
    // The same matrices as the backend holds them (backend.h, weights.h), by
    // the activations they multiply: Q|K|V, O, gate|up, down.
    as_weights *qkv, *o, *gate_up, *down;
} model_layer;

// LoRA adapters applied by the forward pass: for each targeted matrix W,
// y = W x + scale * B (A x).  Targets in the order q, k, v, o, gate, up, down
// (train.h's); factors fp32 in GGUF row order, a[t] (n_layer, rank, in) and
// b[t] (n_layer, out, rank), NULL for a matrix that is not targeted.  Not
// owned by the model: switching adapters is setting other pointers.
#define MODEL_LORA_N_TARGETS 7
typedef struct model_lora {
    int32_t rank;
    float scale;
    const float *a[MODEL_LORA_N_TARGETS];
    const float *b[MODEL_LORA_N_TARGETS];
} model_lora;

typedef struct model {
    model_config cfg;
    gguf_file *file;        // owns the mapping the weights point into
    as_matrix tok_embd;     // (n_vocab, C)
    as_matrix output;       // (n_vocab, C): == tok_embd when tied
    const float *output_norm; // (C)
    const float *rope_freqs;  // (n_rot/2): per-frequency divisors of RoPE's theta_i (Llama-3 scaling), or NULL
    model_layer *layers;
    float *f32_store;       // all norm vectors, converted to fp32 (from F32, F16 or BF16)
    model_lora lora;        // adapters in use (rank 0: none); see model_set_lora
    // model_forward holds this for the whole call: calls on one model run one
    // at a time, whatever their caches (they share the scratch buffers below,
    // and the first call at a precision builds its weight layouts).
    pthread_mutex_t lock;
    struct model_scratch *scratch; // forward-pass buffers (forward.c), grown on demand
    // The backend every forward pass runs on (the CPU's unless
    // model_use_backend chose another), and the output matrix as it holds it
    // (the layers' groups are in model_layer).  Its weight layouts for a
    // precision (the CPU's: Q8's packed tiles, BF16's rounded copies) are made
    // by the first forward pass at that precision, under the lock.
    const as_backend *be;
    as_weights *out_w;
} model;

// Loads a GGUF model (arch `llama` or `gemma`); -1 + as_error naming the file,
// key or tensor that is missing or has the wrong shape/type.
int model_load(model **out, const char *path);
// Binds a model to an already-open GGUF file (takes ownership of `f`: it is
// closed on failure too).
int model_from_gguf(model **out, gguf_file *f);
void model_free(model *m);
// Writes c as llama.cpp's <arch>.* keys (context_length ... rope.dimension_count;
// not general.architecture, file_type or vocab_size, which callers choose).
void model_config_write_gguf(gguf_writer *w, const model_config *c);
// Uses these adapters in every later forward pass (NULL: the base model).
// The factors are not copied and must outlive their use; the adapters
// apply in fp32 whatever the base's precision.  A KV cache filled under other
// adapters is stale: clear it.  -1 + as_error for a rank < 1 or a non-finite scale.
int model_set_lora(model *m, const model_lora *l);
// Runs every later forward pass on be: the weight groups move to it (their
// layouts are made again by the first pass at each precision).  KV caches
// made for the previous backend are refused by model_forward.  -1 + as_error
// (the model unchanged) when be lacks an op (as_backend_missing).
int model_use_backend(model *m, const as_backend *be);
// Bytes of weight layouts the backend made for this model so far.
size_t model_layout_bytes(const model *m);

// KV cache for up to n_seq sequences of up to n_ctx positions each: the state
// of one inference context over a model.  Its precision, fixed at
// kv_cache_init, is the arithmetic of every forward pass over it (how
// kernel_matmul treats activations, kernel_precision) and decides the type of
// its elements; the weights are shared, so caches of different precisions
// over one model can be used in any order (each gives what a model used at its
// precision alone gives).  Its memory and layout are the backend's
// (tensor/attention.h, kernel_kv: keys in tiles of KV_TILE positions, fp32,
// fp16 or AMX bf16 tiles), laid out by the first forward pass over it.
#define KV_TILE KERNEL_KV_TILE
#define KV_CHUNK KERNEL_KV_CHUNK
typedef struct kv_cache {
    kernel_precision precision; // of every forward pass over this cache
    int32_t n_seq, n_ctx, n_layer, kv_dim, n_head_kv;
    const as_backend *be; // whose memory mem is (the CPU's: kv_cache_init)
    kernel_kv mem;
    int32_t *len;      // positions filled per sequence
} kv_cache;

// NULL + as_error for non-positive or overflowing sizes or an unknown
// precision.  On the CPU backend; a model on another backend wants
// kv_cache_init_on(m->be, ...).
kv_cache *kv_cache_init_on(const as_backend *be, const model_config *cfg, int32_t n_seq, int32_t n_ctx, kernel_precision precision);
kv_cache *kv_cache_init(const model_config *cfg, int32_t n_seq, int32_t n_ctx, kernel_precision precision);
// A cache for m, on m's backend: what callers that hold the model use.
kv_cache *model_kv_cache(const model *m, int32_t n_seq, int32_t n_ctx, kernel_precision precision);
void kv_cache_free(kv_cache *kv);
void kv_cache_clear_seq(kv_cache *kv, int32_t seq); // forget a sequence (len = 0)
// Keep only the first `len` positions of a sequence (len >= current: no-op).
void kv_cache_truncate_seq(kv_cache *kv, int32_t seq, int32_t len);
// dst becomes a copy of src (all layers, src's len positions): a prompt
// prefilled once can then be continued as several samples.
void kv_cache_copy_seq(kv_cache *kv, int32_t dst, int32_t src);
// dst becomes a copy of src's first n_pos positions (n_pos <= src's len; dst's
// len = n_pos): items that start with the same tokens (few-shot examples) run
// them once and each continues from its own copy.
void kv_cache_copy_prefix(kv_cache *kv, int32_t dst, int32_t src, int32_t n_pos);

// One forward call over tokens of possibly many sequences.  Token i belongs to
// sequence seq[i] at position pos[i]; positions of one sequence must be
// contiguous and start at kv->len[seq]. Logits are written for tokens with
// want_logits[i] (or all, if want_logits is NULL), in order, into
// logits[n_out, n_vocab].
typedef struct model_batch {
    int32_t n_tokens;
    const int32_t *token;
    const int32_t *seq;
    const int32_t *pos;
    const bool *want_logits;
} model_batch;

// At kv's precision.  Returns -1 + as_error (and leaves the cache untouched)
// for a bad batch: token id out of range, unknown sequence, position not
// contiguous or past n_ctx, or a cache built for another model or backend.  Calls on one
// model from several threads are safe and run one after the other (m->lock);
// the work inside each is threaded with OpenMP.  The weight layouts a
// precision wants are made by its first call and then only read.
int model_forward(model *m, kv_cache *kv, const model_batch *b, float *logits);

#endif
