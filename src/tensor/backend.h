// The backend interface: the operations a compute backend provides, as one
// table of function pointers, and the registry of the backends compiled in.
//
// The CPU backend (backend.c: the kernels of src/tensor, every ISA path
// behind kernel_force_isa) is the first entry; the CUDA backend (issue 22,
// src/tensor/cuda, a dlopened plugin; not yet run on a GPU) the second where
// it loads.  A new backend fills an as_backend with its own functions and
// adds it to the registry in backend.c; tests/tensor/test_backend_ops.c then runs every op
// of it, each variant (for the CPU: each ISA the machine has) against a
// double-precision reference with a tolerance per op and precision, with no
// new test code (the manner of ggml's test-backend-ops).
//
// Conventions: row-major fp32 arrays with explicit strides where the op has
// them; a backend's functions take host pointers or memory from its own
// buf_alloc (a device backend copies the former and uses the latter in place;
// weight buffers are as_matrix's); each op is
// documented where the CPU backend declares it (kernels.h, ops.h, rope.h,
// attention.h, gemm.h, train_ops.h, train_graph.h), which is the contract
// every backend meets.
//
// Everything above src/tensor computes through this table: the model
// (model.h's `be`: every op of the forward pass, over weight groups and a KV
// cache whose memory and layouts the backend owns), training (train.h's
// `be`: the training-graph block) and the host-side row ops of sampling and
// scoring (the CPU's table; generation samples through the model's backend
// when it has the optional sample_rows).  .ci/check_seam.sh fails on a direct
// call of the CPU backend's functions above the seam.  The forward pass's rows
// are buf_alloc memory and each of its ops takes the whole batch, and so are
// the training model's weights, gradients, adapters, activations and
// optimizer moments; what is still host memory: the logits the forward pass
// returns and small index arrays (docs/ARCHITECTURE.md, "Adding a backend").
#ifndef AS_TENSOR_BACKEND_H
#define AS_TENSOR_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/attention.h"
#include "tensor/kernels.h"
#include "tensor/weights.h"
#include "tensor/train_graph.h"
#include "util/rng.h"

// A backend's communicator between processes (the collectives below).
typedef struct as_comm as_comm;

// One row of sample_rows: sampler_params's fields (checked by the caller:
// sampler_params_check), the row's sequence so far (oldest first: the
// repetition penalty's history) and its RNG, advanced in place.
typedef struct as_sample_row {
    float temperature, top_p, min_p, repeat_penalty;
    int32_t top_k, repeat_last_n;
    const int32_t *history;
    int64_t n_history;
    as_rng rng;
} as_sample_row;

typedef struct as_backend {
    const char *name;
    // Code paths of this backend on this machine (the CPU: its ISAs, best
    // last), selected one at a time for tests; use_variant(-1): the default.
    int (*n_variants)(void);
    const char *(*variant_name)(int i);
    int (*use_variant)(int i); // AS_OK, or AS_FAIL when not available here

    // ---- inference ----
    // The forward pass's ops take the batch: n rows, row-major, each op one
    // call for all of them (a device backend: one launch), rows over the
    // threads as the backend sees fit.  The rows live in buffers from
    // buf_alloc (below) or anywhere in host memory.
    // out[t * ldo + r] = sum_c w[r][c] x[t * cols + c] at precision p (kernels.h).
    void (*matmul)(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, kernel_precision p);
    // Rows ids[0..n) of w, dequantised exactly, into out (n x cols): the embedding lookup.
    void (*get_rows)(const as_matrix *w, const int32_t *ids, int64_t n, float *out);
    // Row o of out (n x C) = row rows[o] of x (o when rows is NULL) / sqrt(mean(x^2) + eps) * w (ops.h).
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t n, int64_t C, float eps, const int32_t *rows);
    // SiLU(g) * u, or tanh-GELU(g) * u (ops.h), F elements of each of n rows:
    // g and u rows ldg apart, out rows ldo apart.
    void (*glu)(float *out, int64_t ldo, const float *g, const float *u, int64_t ldg, int64_t n, int64_t F, bool gelu);
    // Rotary embedding in place (rope.h) of n rows, ld apart, of n_heads
    // vectors of d; row r's angles are cs, sn + r * (n_rot / 2).
    void (*rope)(float *v, int64_t ld, int64_t n, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign);
    // Causal attention of query rows against one KV head's keys and values (attention.h).
    void (*attention_rows)(const kernel_attn_args *a);
    // e^x in place; first index of the maximum (ops.h).
    void (*exp)(float *x, int64_t n);
    int32_t (*argmax)(const float *x, int32_t n);
    // log softmax(z)[t] in double (ops.h): a token's log-probability.
    double (*logprob)(const float *z, int32_t n, int32_t t);
    // log sum e^(s z) in double (ops.h): the mixture samplers' normalisers.
    double (*logsumexp)(const float *z, int64_t n, float s);
    // y += x; x *= s over n elements (the residual stream, Gemma's embedding scale).
    void (*add)(float *y, const float *x, int64_t n);
    void (*scale)(float *x, int64_t n, float s);
    // Activation memory: buffers for the batch's rows that every op reads
    // and writes in place (a device backend's: memory its device and the
    // host both address, so that rows stay on the device from op to op);
    // 64-byte aligned, never NULL (the CPU's aborts when memory runs out).
    void *(*buf_alloc)(size_t bytes);
    void (*buf_free)(void *p);
    // Waits for the work the ops above queued (a device backend may return
    // before its kernels end when every operand is buf_alloc memory); the
    // host reads or writes buf_alloc memory only after it.  The CPU: nothing.
    void (*sync)(void);
    // Weight groups the backend lays out (weights.h): GGUF matrices multiplied
    // by the same activations (Q|K|V, gate|up, one matrix), stacked by rows;
    // the packed / fused / bf16 copies each precision wants are the backend's.
    as_weights *(*weights_new)(const as_matrix *const *parts, int n_parts);
    void (*weights_free)(as_weights *w);
    void (*weights_matmul)(as_weights *w, float *out, int64_t ldo, const float *x, int64_t n_tokens, kernel_precision p);
    size_t (*weights_bytes)(const as_weights *w);
    // The KV cache, memory and layout the backend's (attention.h, kernel_kv):
    // allocate, lay out for a pass, store the batch's keys and values, attend,
    // copy a prefix.
    int (*kv_init)(kernel_kv *kv, int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim);
    void (*kv_release)(kernel_kv *kv);
    int (*kv_begin)(kernel_kv *kv, kernel_precision p, kernel_kv_pass *pass);
    // Row i < n: kv_dim keys at k + i * ld and values at v + i * ld, stored at
    // position pos[i] of sequence seq[i] in layer l.
    void (*kv_store)(kernel_kv *kv, int32_t l, int64_t n, const int32_t *seq, const int32_t *pos, const float *k, const float *v, int64_t ld);
    // The batch's causal attention over the cache in one layer (kernel_kv_rows).
    void (*kv_attention)(const kernel_kv_rows *a);
    void (*kv_copy_prefix)(kernel_kv *kv, int32_t dst, int32_t src, int32_t n_pos);
    // Optional: why the last weights_new returning NULL or kv_init returning
    // AS_FAIL failed, for a backend that cannot set as_error (the CUDA plugin
    // links nothing of alphaspin); NULL where the backend sets as_error itself
    // (the CPU).  Callers go through as_backend_error.
    const char *(*last_error)(void);
    // Optional (as_backend_missing does not ask for it; the CPU leaves it
    // NULL and generation then samples on the host, generate/sampler.c):
    // one token per row of logits, tok[r] from logits + r * ld (n_vocab
    // each), with rows[r]'s params, history and RNG.  The contract is
    // sampler_sample's (generate/sampler.h: its chain, ties to the lower id,
    // one uniform per non-greedy token): the same token and the same RNG
    // state after it, bit for bit, for the same logits, history, params and
    // RNG state.  Rows are independent; rows[r].rng is advanced in place.
    void (*sample_rows)(int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, as_sample_row *rows);
    // Optional, with sample_rows: out[r] = log softmax(logits + r * ld)[tok[r]]
    // (n_vocab each), logprob's meaning (the largest logit, NaNs skipped, and
    // the sum of e^(z - max) in double), its sum in the backend's own fixed
    // order (the same bits run to run; within rounding of the CPU's).  With
    // both, generation keeps its logits in buf_alloc memory and never reads
    // them on the host.
    void (*logprob_rows)(float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, const int32_t *tok);

    // ---- training ----
    // C = alpha op(A) op(B) + beta C, fp32 (gemm.h), nth threads.
    void (*sgemm)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc, int nth);
    // Softmax pieces (train_ops.h): x <- e^(x - shift), returns the sum; max.
    double (*exp_shift_sum)(float *x, int64_t n, float shift);
    float (*max)(const float *x, int64_t n);
    // The log-softmax backward's dz = -g e^(z - l) (train_ops.h).
    void (*neg_scaled_exp)(float *dz, const float *z, int64_t n, float g, float l);
    // SwiGLU forward and backward (train_ops.h).
    void (*silu_glu_forward)(float *h, const float *g, const float *u, int64_t n);
    void (*silu_glu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);

    // ---- training graph (forward/backward pairs, LoRA, dropout, optimizer) ----
    // What the training model (train/train.c, optim.c) runs, each entry as
    // train_graph.h declares its CPU function: llm.c's forward/backward pairs
    // with the same argument order, every backward accumulating (+=) into its
    // gradients (NULL: not wanted) unless documented otherwise; nth threads.
    void (*embedding_forward)(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale);
    void (*embedding_backward)(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale);
    void (*linear_forward)(float *out, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim, int nth);
    void (*linear_backward)(float *dx, float *dW, const float *dout, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim,
                            int nth);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth);
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N, int64_t C,
                             int nth);
    void (*rope_forward)(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth);
    void (*rope_backward)(float *dx, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth);
    void (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off,
                              const int32_t *seq_len, int32_t n_seq, int H, int Hkv, int d, float *scratch, int64_t max_len, int nth);
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int H, int Hkv,
                               int d, int nth);
    void (*glu_forward)(float *h, const float *g, const float *u, int64_t n, bool gelu, int nth);
    void (*glu_backward)(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu, int nth); // writes
    void (*logsoftmax_forward)(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth);
    void (*logsoftmax_backward)(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target, int64_t rows,
                                int64_t V, int nth); // writes
    void (*residual_forward)(float *out, const float *a, const float *b, int64_t n, int nth);
    // x[0..n) = 0; dst row i = src row rows[i] (C floats each; rows NULL: row i): the training
    // model's clearing and gathering of its buffers, which on a device would
    // otherwise move them to the host and back (train_graph.h).
    void (*zero)(float *x, size_t n);
    void (*gather_rows)(float *dst, const float *src, const int32_t *rows, int64_t n, int64_t C);
    // dst row rows[i] = scale[i] * src row i, i < n (rows distinct; scale host
    // memory): a LoRA backward's dx of the vocabulary projection, each scored
    // row's upstream gradient times its (onehot - softmax) W.
    void (*scale_rows)(float *dst, const float *src, const int32_t *rows, const float *scale, int64_t n, int64_t C);
    // Adapter dropout (as_dropout: the probability, hash counter, keep bits).
    void (*dropout_forward)(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
    void (*dropout_backward)(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth);
    // The LoRA products of one adapter, fp32, dropout inside (drop NULL: none).
    void (*lora_forward)(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r, int64_t out,
                         float scale, const as_dropout *drop, int nth);
    void (*lora_backward)(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A, const float *B,
                          int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du, int nth);
    // Training's bf16 products (gemm.h's kernel_gemm_bf16): sgemm's contract
    // with bf16-rounded operands; op(B) packed once into a buffer the backend owns.
    void (*gemm_bf16)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                      int64_t ldb, float beta, float *C, int64_t ldc, int nth);
    as_bf16_packed *(*bf16_pack_b)(bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth);
    void (*bf16_packed_free)(as_bf16_packed *p);
    void (*gemm_bf16_packed)(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const as_bf16_packed *P, float beta, float *C,
                             int64_t ldc, int nth);
    // Optimizer arithmetic: the gradient norm's sum of squares (double, fixed
    // blocks), scaling, and torch.optim's AdamW / RMSprop / SGD element updates.
    double (*sum_squares)(const float *x, size_t n, int nth);
    void (*grad_scale)(float *x, size_t n, float c, int nth);
    void (*adamw_update)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                         int64_t t, int nth);
    void (*rmsprop_update)(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth);
    void (*sgd_update)(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth);

    // ---- collectives between processes (optional: as_backend_missing asks for none of them) ----
    // The device's own collective library, which src/dist can carry its
    // gathers' payload over (dist_use_transport): the CUDA backend's NCCL
    // (issue 23).  The CPU leaves these NULL (src/dist then uses MPI alone).
    // One communicator over nranks processes, bootstrapped as llm.c does:
    // rank 0 makes a unique id, MPI broadcasts it, every rank calls comm_init
    // with it (collective: it returns when all have joined).  Errors: AS_FAIL /
    // NULL and one line in err (a plugin cannot set as_error).
    // NULL when the entries below can be used, else why not (e.g. "built without NCCL").
    const char *(*comm_status)(void);
    // AS_COMM_ID_BYTES bytes of a new communicator's id, on one rank.
    int (*comm_unique_id)(void *id, char *err, size_t n);
    // This process's member of the communicator `id` names, as `rank` of `nranks`.
    as_comm *(*comm_init)(const void *id, int nranks, int rank, char *err, size_t n);
    // Every rank's `block` bytes at send, into recv (nranks * block bytes, in
    // rank order), all ranks calling with the same block; host pointers (the
    // backend stages them through its device).  A byte copy: no arithmetic.
    int (*comm_allgather)(as_comm *c, const void *send, void *recv, size_t block, char *err, size_t n);
    void (*comm_destroy)(as_comm *c);
} as_backend;

// The size of a communicator id (NCCL's ncclUniqueId).
#define AS_COMM_ID_BYTES 128

// The backends available in this process (the CPU first, then CUDA when its
// plugin loads and finds a device).  The first call of any of these three
// tries to load the CUDA plugin, once (see as_backend_open).
int as_backend_count(void);
const as_backend *as_backend_at(int i);
// By name ("cpu", "cuda"); NULL if not available here.
const as_backend *as_backend_find(const char *name);

// The backend a device spec names: "cpu", "cuda" (the default CUDA device)
// or "cuda:N"; NULL + as_error (one line: the spec and why) when the spec is
// malformed or that device cannot be used here.  What a `--device` flag calls.
//
// The CUDA backend is a plugin, libalphaspin_cuda.so, dlopened on first use
// from $ALPHASPIN_CUDA_PLUGIN, else the executable's folder, else the build
// folder it was configured in; nothing else links CUDA, so the same binary
// runs where there is no GPU, driver or CUDA library.  One CUDA device per
// process: after "cuda:N" succeeds, another index fails.
const as_backend *as_backend_open(const char *spec);
// NULL when the CUDA backend is available, else why not (one line, e.g. "no
// CUDA device: cudaGetDeviceCount: ..." or "plugin not built ...").
const char *as_backend_cuda_status(void);
// The name of the first op of the given groups that be leaves NULL (a
// backend still being written), or NULL when it provides them all: callers
// refuse such a backend with one line instead of calling through a NULL
// pointer (the model asks for the inference ops, the training model for both).
#define AS_BACKEND_INFERENCE 1u // the variants, matmul ... kv_copy_prefix: what model_forward and the sampler call
#define AS_BACKEND_TRAINING 2u  // sgemm ... sgd_update: what the training model and its optimizer call
const char *as_backend_missing(const as_backend *be, unsigned groups);

// The backend whose buf_alloc memory be's ops take in place: be itself, or
// the CPU when be (NULL: the CPU) has no buf_alloc / buf_free.
const as_backend *as_backend_mem(const as_backend *be);
// Whether a and b allocate buffers alike (memory of one serves the other).
bool as_backend_same_mem(const as_backend *a, const as_backend *b);
// `bytes` at p, as_backend_mem(from)'s buffer, moved into a new buffer of
// as_backend_mem(to) (from's queued work waited for; p freed); p itself when
// they allocate alike or p is NULL.
void *as_buf_move(const as_backend *from, const as_backend *to, void *p, size_t bytes);

// After a failed weights_new / kv_init of be: AS_FAIL, with as_error set to
// "<what>: <the backend's reason>" when be reports through last_error (else
// the backend set as_error itself, which stays).
int as_backend_error(const as_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

extern const as_backend as_backend_cpu;

#endif
