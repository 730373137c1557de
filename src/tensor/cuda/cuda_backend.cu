// The CUDA backend (issue 22, first step): every op of as_backend
// (tensor/backend.h) on one NVIDIA GPU, built as the plugin
// libalphaspin_cuda.so that backend.c dlopens.  Only the entry point
// alphaspin_cuda_backend is exported; cudart is linked in statically, cuBLAS
// and cuBLASLt dynamically.
//
// NOT YET RUN ON A GPU: this was written and compiled on machines without one
// (issue 22); scripts/device_check.sh runs its tests where there is a device.
// It provides every op of the table, inference and training
// (as_backend_missing is NULL for both groups), so a model can run on it
// (generate, logprobs, chat, eval --device cuda) and so can training (sft,
// gfn-train, run --device cuda), all untried: no kernel, launch
// configuration, cuBLAS call or copy here has ever executed.  What has run is
// only host code: the dequantiser's element code (test_cuda_dequant) and the
// training ops but linear and the bf16 products (test_cuda_train_host: the
// same kernel bodies looped on the host, bit for bit against the CPU backend),
// and the sampler (test_cuda_sample_host: sample_rows's blocks looped on the
// host, token and RNG state against generate/sampler.c).
// The training ops are in section "training" below (their own header comment),
// the sampler in section "sampling".
//
// Operands: the forward pass's rows are buf_alloc memory (managed, section
// "activation buffers"), which the inference ops use in place and queue
// kernels on without waiting (the legacy default stream; `sync` waits); any
// other pointer is host memory, copied to the device and back per call
// (cudaMemcpy, synchronous): correct, and slow.  The training model's
// weights, gradients, LoRA factors, activations and optimizer moments are
// buf_alloc memory too (src/train), which the training ops and products
// (sgemm, linear, the bf16 products and packing) use in place, so they stay
// resident from op to op; the training ops remain synchronous (one that used
// managed memory waits for its kernels before returning: lock_guard).
// Still copied per call: the host's small index arrays (tokens, rows,
// sequence offsets, tiles), the embedding backward's distinct-token list,
// and any operand from plain host memory.  Also resident: the weight
// groups (weights_new: each group's parts stacked and dequantised once, bf16,
// plus fp32 made by the first F32 product) and the KV cache (kv_init:
// kernel_kv's k and v are device pointers, the CPU's fp32 layout).  Ops are
// serialised by one mutex.
//
// Weights: matmul dequantises a matrix on the device once, exactly (the same
// fp32 values as quant_dequantize_row: no fused multiply-add in the
// dequantisers), and keeps it in a table keyed by the as_matrix's data pointer
// (with its type, shape and a fingerprint of its bytes, so a freed and reused
// pointer is noticed).  Weights must not change after their first product
// (as with kernel_pack).  Nothing is evicted yet: running out of device
// memory is an error naming the bytes the table holds.  Precision:
//   F32:  fp32 weights x fp32 activations, cublasSgemm with fp32 math (no
//         TF32): meets the fp32 tolerance of test_backend_ops.
//   BF16: weights and activations rounded to bf16 (nearest even), fp32
//         accumulation and output, on cuBLASLt.
//   Q8:   as BF16 (the GPU has no reason to quantise activations to 8 bits;
//         bf16's error is below Q8's documented one).
// The model's products go through weight groups instead (weights_matmul:
// one GEMM per group and call, same precisions; section "weight groups").
// get_rows gathers the rows' GGUF blocks on the host and dequantises them on
// the device (exact).
// add and scale round once per element (exact, as the CPU); logprob runs on
// the device too: one block, the fp32 max and the sum of e^(z - max) in
// double, both fixed-order trees.
//
// Determinism: reductions are fixed-order block trees or per-thread chains
// (no floating-point atomics); cuBLASLt is asked for algorithms without
// split-K reductions; the whole plugin is compiled with --fmad=false.  One
// device per process (the table's functions carry no context): the first
// alphaspin_cuda_backend call that succeeds binds the process to its device.
//
// Errors: a failing CUDA or cuBLAS call prints one line naming the op and the
// error, and aborts (the ops return void).  What a user can cause and change
// is an error instead: weights_new returns NULL when the device has no room
// for the weights, kv_init AS_FAIL for a cache it cannot hold (or bad sizes),
// with the reason in last_error (the plugin links nothing of alphaspin, so it
// cannot set as_error; callers go through as_backend_error).  Bad weight
// parts are the caller's bug and abort.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#ifdef ALPHASPIN_HAVE_NCCL
#include <nccl.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "tensor/backend.h"
#include "tensor/cuda/cuda_host_check.h"
}

#define CU_OK 0
#define CU_FAIL (-1)

// ---- errors ----

// The reason of the last weights_new / kv_init that failed (last_error), and
// of an abort: "cuda backend: OP: MESSAGE".
static char g_err[512];
static void vfail(const char *op, const char *fmt, va_list ap) {
    char msg[400];
    vsnprintf(msg, sizeof msg, fmt, ap);
    snprintf(g_err, sizeof g_err, "cuda backend: %s: %s", op, msg);
}
static void fail(const char *op, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(op, fmt, ap);
    va_end(ap);
}
static const char *cu_last_error(void) { return g_err; }

// g_err on stderr, then abort.
static void die_err(void) {
    fprintf(stderr, "alphaspin: %s\n", g_err);
    fflush(stderr);
    abort();
}

static void die(const char *op, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(op, fmt, ap);
    va_end(ap);
    die_err();
}

#define CK(call)                                                                                                                           \
    do {                                                                                                                                   \
        const cudaError_t e_ = (call);                                                                                                     \
        if (e_ != cudaSuccess) die(op, "%s: %s", #call, cudaGetErrorString(e_));                                                           \
    } while (0)
#define CKB(call)                                                                                                                          \
    do {                                                                                                                                   \
        const cublasStatus_t s_ = (call);                                                                                                  \
        if (s_ != CUBLAS_STATUS_SUCCESS) die(op, "%s: %s", #call, cublasGetStatusString(s_));                                              \
    } while (0)
#define CK_LAUNCH() CK(cudaGetLastError())

// ---- state ----

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_device = -1; // bound device, -1 before the first successful entry call
static char g_variant[320];
static cublasHandle_t g_blas;
static cublasLtHandle_t g_lt;
static void *g_lt_ws;
static const size_t g_lt_ws_bytes = (size_t)32 << 20;

// Scratch device buffers, grown as needed and kept.
typedef struct { void *p; size_t cap; } dbuf;
static dbuf b_a, b_b, b_c, b_d, b_e, b_f;

static size_t g_weight_bytes; // device bytes held by the weight table and the weight groups
static size_t g_kv_bytes;     // device bytes held by KV caches
static size_t g_packed_bytes; // device bytes held by bf16_pack_b's operands (training)
static size_t g_act_bytes;    // managed bytes held by buf_alloc's activation buffers

// Device memory, or NULL and the reason in g_err (what the user can change:
// a smaller model, batch or context).
static void *try_dmalloc(size_t bytes, const char *op) {
    void *p = NULL;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaSuccess) return p;
    (void)cudaGetLastError(); // clear it
    fail(op, "cudaMalloc(%zu MiB): %s (weights hold %zu MiB, KV caches %zu MiB, activations %zu MiB, packed bf16 operands %zu MiB; nothing is evicted)",
         bytes >> 20, cudaGetErrorString(e), g_weight_bytes >> 20, g_kv_bytes >> 20, g_act_bytes >> 20, g_packed_bytes >> 20);
    return NULL;
}

// Device memory, or an abort with try_dmalloc's reason (scratch and the ops' own buffers).
static void *dmalloc(size_t bytes, const char *op) {
    void *p = try_dmalloc(bytes, op);
    if (!p) die_err();
    return p;
}

static void *grow(dbuf *b, size_t bytes, const char *op) {
    if (bytes <= b->cap) return b->p;
    if (b->p) CK(cudaFree(b->p));
    b->p = NULL, b->cap = 0;
    const size_t cap = bytes < 4096 ? 4096 : bytes + bytes / 4;
    b->p = dmalloc(cap, op);
    b->cap = cap;
    return b->p;
}

// ---- activation buffers (backend.h's buf_alloc): CUDA managed memory ----
//
// The forward pass keeps its batch rows in memory from buf_alloc, which the
// device and the host both address (cudaMallocManaged, preferred on the
// device): the ops below use such operands in place, so the rows stay on the
// device from op to op, and launch without waiting; `sync` waits before the
// host touches them (model_forward's end).  Any other pointer is host memory,
// staged through device scratch as before.  The table of allocations tells
// the two apart.

typedef struct { const char *p; size_t n; } mrange;
static mrange *g_managed;
static int g_n_managed, g_cap_managed;

static bool is_managed(const void *p) {
    const char *c = (const char *)p;
    for (int i = 0; i < g_n_managed; i++)
        if (c >= g_managed[i].p && c < g_managed[i].p + g_managed[i].n) return true;
    return false;
}

// Set by a training op that used buf_alloc memory in place (read or
// written): its guard's end waits for its kernels, since the training ops are
// synchronous (the caller reads and writes the results on the host between
// ops, and a copy back, which would have waited, is not made).
static bool g_tr_wait;

struct lock_guard {
    const char *op;
    explicit lock_guard(const char *op_) : op(op_) {
        pthread_mutex_lock(&g_lock);
        CK(cudaSetDevice(g_device)); // the calling thread's current device may be another
    }
    ~lock_guard() {
        if (g_tr_wait) {
            g_tr_wait = false;
            CK(cudaDeviceSynchronize());
        }
        pthread_mutex_unlock(&g_lock);
    }
};

static unsigned grid_for(int64_t n, unsigned threads) {
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    if (g > 65535 * 8) g = 65535 * 8; // grid-stride loops cover the rest
    return (unsigned)g;
}

// ---- block reductions in a fixed order (blockDim.x a power of two) ----

template <typename T, typename F> __device__ T block_reduce(T *sh, T v, F op) {
    const unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = op(sh[t], sh[t + s]);
        __syncthreads();
    }
    const T r = sh[0];
    __syncthreads();
    return r;
}

struct op_add_d { __device__ double operator()(double a, double b) const { return a + b; } };
struct op_add_f { __device__ float operator()(float a, float b) const { return a + b; } };
struct op_max_f { __device__ float operator()(float a, float b) const { return b > a ? b : a; } };

#define RED_THREADS 1024

static void *cu_buf_alloc(size_t bytes) {
    const char *op = "buf_alloc";
    lock_guard g(op);
    if (bytes < 64) bytes = 64;
    void *p = NULL;
    const cudaError_t e = cudaMallocManaged(&p, bytes, cudaMemAttachGlobal);
    if (e != cudaSuccess)
        die(op, "cudaMallocManaged(%zu bytes): %s (weights hold %zu bytes, KV caches %zu, activations %zu)", bytes, cudaGetErrorString(e), g_weight_bytes,
            g_kv_bytes, g_act_bytes);
    cudaMemLocation loc = {};
    loc.type = cudaMemLocationTypeDevice;
    loc.id = g_device;
    CK(cudaMemAdvise(p, bytes, cudaMemAdviseSetPreferredLocation, loc));
    if (g_n_managed == g_cap_managed) {
        g_cap_managed = g_cap_managed ? 2 * g_cap_managed : 32;
        g_managed = (mrange *)realloc(g_managed, sizeof(mrange) * (size_t)g_cap_managed);
        if (!g_managed) die(op, "out of host memory");
    }
    g_managed[g_n_managed++] = mrange{(const char *)p, bytes};
    g_act_bytes += bytes;
    return p;
}

static void cu_buf_free(void *p) {
    const char *op = "buf_free";
    if (!p) return;
    lock_guard g(op);
    for (int i = 0; i < g_n_managed; i++)
        if (g_managed[i].p == (const char *)p) {
            CK(cudaFree(p)); // waits for the work queued on it
            g_act_bytes -= g_managed[i].n;
            g_managed[i] = g_managed[--g_n_managed];
            return;
        }
    die(op, "%p is not a buffer of buf_alloc", p);
}

static void cu_sync(void) {
    const char *op = "sync";
    lock_guard g(op);
    CK(cudaDeviceSynchronize());
}

// An operand of `bytes` at x: x itself when it is buf_alloc memory, else a
// copy in scratch b.
static const void *in_dev(dbuf *b, const void *x, size_t bytes, const char *op) {
    if (is_managed(x)) return x;
    void *d = grow(b, bytes ? bytes : 1, op);
    if (bytes) CK(cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice));
    return d;
}
// Where an op writes the `bytes` meant for x: x itself when it is buf_alloc
// memory, else scratch b, which out_host then copies to x.
static void *out_dev(dbuf *b, void *x, size_t bytes, const char *op) { return is_managed(x) ? x : grow(b, bytes ? bytes : 1, op); }
static void out_host(void *x, const void *d, size_t bytes, const char *op) {
    if (d != x && bytes) CK(cudaMemcpy(x, d, bytes, cudaMemcpyDeviceToHost));
}
// An operand read and written in place: in_dev, then out_host after the kernels.
static void *inout_dev(dbuf *b, void *x, size_t bytes, const char *op) { return (void *)in_dev(b, x, bytes, op); }
// Index operands (a batch's sequences, positions, row lists): the forward
// pass hands every layer the same arrays, so each slot keeps its last upload
// with a host copy and reuses it while the contents are the same: one upload
// per forward pass instead of one per layer and op (a cudaMemcpy from
// pageable memory waits for the kernels queued before it).
typedef struct { dbuf d; int32_t *h; int64_t n, cap; } ibuf;
// The rows a row list of n entries reaches (largest entry + 1); a negative entry is fatal.
static int64_t rows_span(const int32_t *rows, int64_t n, const char *op) {
    int64_t span = 0;
    for (int64_t i = 0; i < n; i++) {
        if (rows[i] < 0) die(op, "row list entry %lld is %d", (long long)i, (int)rows[i]);
        span = rows[i] + 1 > span ? rows[i] + 1 : span;
    }
    return span;
}
static ibuf g_seq, g_pos, g_rows;
static const int32_t *in_idx(ibuf *b, const int32_t *x, int64_t n, const char *op) {
    if (is_managed(x)) return x;
    const size_t bytes = sizeof(int32_t) * (size_t)(n > 0 ? n : 1);
    if (b->h && b->n == n && !memcmp(b->h, x, bytes)) return (const int32_t *)b->d.p;
    if (n > b->cap) {
        free(b->h);
        b->h = (int32_t *)malloc(bytes);
        if (!b->h) die(op, "out of host memory");
        b->cap = n;
    }
    memcpy(b->h, x, bytes);
    b->n = n;
    void *d = grow(&b->d, bytes, op);
    CK(cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice));
    return (const int32_t *)d;
}

// The floats a strided block of n rows of w floats, ld apart, spans.
static size_t span_bytes(int64_t n, int64_t w, int64_t ld) { return n > 0 ? sizeof(float) * (size_t)((n - 1) * ld + w) : 0; }

// ---- training (backend.h's training-graph block) ----
//
// Every entry of train_graph.h, with the CPU's contracts: every backward
// ACCUMULATES (+=) into its gradients (NULL: not wanted) except glu_backward
// and logsoftmax_backward, which write.  Correctness first: host pointers in
// and out, every operand copied per call (performance is a later step: keep
// activations and gradients resident, fuse, and use cuBLAS for the LoRA
// products and tensor cores for attention).
//
// Each output element is computed by one thread in a fixed order, mostly the
// CPU's own order and operations (train_graph.c, train_ops.c, lora_gemm.h,
// train_optim.c), so that a GPU run can be compared bit for bit with the CPU:
//   - products of a single fused multiply-add chain in k order, then alpha,
//     then + old (kernel_sgemm's element, gemm.h): the LoRA products (f_chain);
//   - the softmaxes' sums and maxima in train_ops.h's 16 lanes (lane l: the
//     elements i = l mod 16 in increasing i, folded in lane order);
//   - the reductions over rows (embedding's dE, rmsnorm's dw, LoRA's dA and
//     dB) sequential per output element, in the CPU's row order; sum_squares
//     by blocks of 65536 as train_sum_squares.
// Attention is the exception: tiled in shared memory with an online softmax
// (O(T) memory per head, "training attention" below), its own fixed order,
// equal to the CPU's to fp32 rounding, not bitwise.
// No floating-point atomics anywhere, so the same inputs give the same bits
// run to run.  The fp32 linear products and the bf16 products are cuBLAS's
// (deterministic for a given GPU and toolkit: no atomics mode), whose
// summation order is not the CPU's.  The e^x is vexp.h's as_expf (tr_expf),
// the libm functions the device's own (tanhf of GELU, log of a log-sum-exp).
// The whole plugin is compiled with --fmad=false: no multiply-add is fused
// unless written as fmaf, as the CPU's -ffp-contract=off.
//
// So a host run of the same code gives the CPU's bits (attention: within
// test_cuda_train_host's tolerance), which that test checks on machines
// without a GPU: the element arithmetic that is more than one rounding lives
// in the __host__ __device__ functions below, the kernels are functors over
// them ("training kernels"), and every op but the cuBLAS ones (linear, the
// bf16 products) can run its functors on the host (alphaspin_cuda_train_host,
// cuda_host_check.h).  On a GPU the bits should be the host run's too
// wherever no libm function is involved (GELU's tanhf and the log of the
// log-sum-exps are the device's); that is
// for test_cuda_backend to confirm (it checks tolerances, not bits).

#define HD __host__ __device__ static inline

HD float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
HD float sqrt_rn(float a) {
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(a);
#else
    return sqrtf(a);
#endif
}
__host__ __device__ static inline float bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

// vexp.h's as_expf, operation for operation (rintf: nearbyintf's rounding to
// nearest even; the clamps turn NaN into AS_EXP_LO as there).
HD float tr_expf(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
#ifdef __CUDA_ARCH__
    const float n = rintf(x * 1.44269504088896341f);
#else
    const float n = nearbyintf(x * 1.44269504088896341f);
#endif
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    return p * bits_f32((uint32_t)((int32_t)n + 127) << 23);
}

// train_ops.h's 16 lanes: lane l of a sum of e^(x - shift) (also storing the
// terms in dst when not NULL) and of a maximum (every lane starts at x[0]).
#define TR_LANES 16
HD float lane_exp_sum(const float *x, int64_t n, float shift, int l, float *dst) {
    float acc = 0.0f;
    for (int64_t i = l; i < n; i += TR_LANES) {
        const float e = tr_expf(x[i] - shift);
        if (dst) dst[i] = e;
        acc = acc + e;
    }
    return acc;
}
HD float lane_max(const float *x, int64_t n, int l) {
    float acc = x[0];
    for (int64_t i = l; i < n; i += TR_LANES) acc = acc > x[i] ? acc : x[i];
    return acc;
}
HD double fold_sum(const float *lanes) {
    double s = 0.0;
    for (int l = 0; l < TR_LANES; l++) s += (double)lanes[l];
    return s;
}
HD float fold_max(const float *lanes) {
    float m = lanes[0];
    for (int l = 1; l < TR_LANES; l++) m = m > lanes[l] ? m : lanes[l];
    return m;
}

// SwiGLU (train_ops.c: silu_fwd_c, silu_bwd_c) and GeGLU (train_graph.c).
#define TR_GELU_K 0.7978845608028654f
HD float silu_sigmoid(float x) { return div_rn(1.0f, 1.0f + tr_expf(0.0f - x)); }
HD float glu_fwd_elem(float x, float u, bool gelu) {
    if (gelu) return 0.5f * x * (1.0f + tanhf(TR_GELU_K * (x + 0.044715f * x * x * x))) * u;
    const float s = silu_sigmoid(x);
    return (x * s) * u;
}
HD void glu_bwd_elem(float *dg, float *du, float d, float x, float u, bool gelu) {
    if (gelu) {
        const float t = tanhf(TR_GELU_K * (x + 0.044715f * x * x * x));
        const float a = 0.5f * x * (1.0f + t);
        const float da = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * TR_GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        *dg = d * u * da;
        *du = d * a;
        return;
    }
    const float s = silu_sigmoid(x);
    const float da = s * (1.0f + x * (1.0f - s));
    *dg = (d * u) * da;
    *du = d * (x * s);
}

// The log-softmax backward's dz = fmaf(-g, e^(z - l), 0) (train_ops.h).
HD float neg_scaled_exp_elem(float z, float g, float l) { return fmaf(-g, tr_expf(z - l), 0.0f); }

// One RoPE pair of a head x (rope.c's rope_c: products rounded before the sum).
HD void rope_pair(float *x, int i, int half, bool neox, float c, float sn, float sign) {
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float x0 = x[i0], x1 = x[i1], s = sign * sn;
    const float a = x0 * c, b = x1 * s, e = x0 * s, f = x1 * c;
    x[i0] = a - b;
    x[i1] = e + f;
}

// Adapter dropout (train_ops.c's drop_hash, dropout_c and dropout_mask_c):
// element j of a row whose counter is k0 is kept when lowbias32 of k0 + j,
// folded to 32 bits, is >= p 2^32.
HD uint32_t drop_hash(uint64_t k) {
    uint32_t h = (uint32_t)k ^ (uint32_t)(k >> 32);
    h ^= h >> 16, h *= 0x7feb352dU, h ^= h >> 15, h *= 0x846ca68bU, h ^= h >> 16;
    return h;
}
HD uint32_t drop_thresh(float p) { return (uint32_t)((double)p * 4294967296.0); }
// The keep bits of the 16 elements j0 .. j0+15 (< n) of a row: hashed, or the stored word.
HD uint16_t drop_word(uint64_t k0, int64_t j0, int64_t n, uint32_t thresh) {
    uint16_t w = 0;
    for (int64_t j = j0; j < j0 + 16 && j < n; j++) w |= (uint16_t)((drop_hash(k0 + (uint64_t)j) >= thresh) << (j % 16));
    return w;
}
// d = x f, or fmaf(x, f, d) (add), f = keep ? keep_scale : 0.
HD float drop_apply(float x, bool keep, float keep_scale, float d, bool add) {
    const float f = keep ? keep_scale : 0.0f;
    return add ? fmaf(x, f, d) : x * f;
}

// The optimizers' element updates (train_optim.c), their per-step constants
// computed on the host as there.
typedef struct { float lr, b1, b2, eps, wd, step_size, bc2s; } adamw_k;
static adamw_k adamw_consts(float lr, float beta1, float beta2, float eps, float wd, int64_t t) {
    adamw_k k;
    k.lr = lr, k.b1 = beta1, k.b2 = beta2, k.eps = eps, k.wd = wd;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    k.bc2s = (float)sqrt(1.0 - pow((double)beta2, (double)t));
    k.step_size = lr / bc1;
    return k;
}
HD void adamw_elem(float *p, float g, float *m, float *v, const adamw_k k) {
    const float pi = *p * (1.0f - k.lr * k.wd);
    *m = k.b1 * *m + (1.0f - k.b1) * g;
    *v = k.b2 * *v + (1.0f - k.b2) * g * g;
    *p = pi - div_rn(k.step_size * *m, div_rn(sqrt_rn(*v), k.bc2s) + k.eps);
}
HD void rmsprop_elem(float *p, float g, float *v, float lr, float a, float eps, float wd) {
    const float gi = g + wd * *p;
    *v = a * *v + (1.0f - a) * gi * gi;
    *p -= div_rn(lr * gi, sqrt_rn(*v) + eps);
}
HD void sgd_elem(float *p, float g, float *m, float lr, float mu, float wd, int64_t t) {
    float gi = g + wd * *p;
    if (m) {
        *m = t == 1 ? gi : mu * *m + gi;
        gi = *m;
    }
    *p -= lr * gi;
}

// train_sum_squares's blocks: block b of 65536 elements summed in order, in double.
#define TR_NORM_BLOCK 65536
HD double sumsq_block(const float *x, size_t n, size_t b) {
    const size_t i1 = (b + 1) * TR_NORM_BLOCK < n ? (b + 1) * TR_NORM_BLOCK : n;
    double s = 0.0;
    for (size_t i = b * TR_NORM_BLOCK; i < i1; i++) s += (double)x[i] * x[i];
    return s;
}


// ---- dequantisation (quant.c's operations, one output element per thread) ----

// The dequantiser is compiled for the host too (alphaspin_cuda_dequant_host,
// which tests/tensor/test_cuda_dequant.c checks bit for bit against quant.c on
// machines without a GPU).  Products and sums are rounded one at a time, never
// contracted to a fused multiply-add (the host side is built with
// -ffp-contract=off), so the bits are quant.c's.
__host__ __device__ static inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
__host__ __device__ static inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
__host__ __device__ static inline float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

// IEEE half -> float, exact (quant.c's as_fp16_to_f32: 2^-112 rebias, subnormals by subtraction).
__host__ __device__ static inline float fp16_at(const uint8_t *p) {
    const uint32_t w = (uint32_t)(p[0] | (p[1] << 8)) << 16;
    const uint32_t sign = w & 0x80000000u, two_w = w + w;
    const float normalized = mul_rn(bits_f32((two_w >> 4) + (0xE0u << 23)), 0x1.0p-112f);
    const float denormalized = sub_rn(bits_f32((two_w >> 17) | (126u << 23)), 0.5f);
    float r = two_w < (1u << 27) ? denormalized : normalized;
    uint32_t u;
#ifdef __CUDA_ARCH__
    u = __float_as_uint(r);
#else
    memcpy(&u, &r, 4);
#endif
    return bits_f32(sign | u);
}

__host__ __device__ static inline void scale_min_k4(int j, const uint8_t *q, int *d, int *m) {
    if (j < 4) *d = q[j] & 63, *m = q[j + 4] & 63;
    else *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
}

// Element c of a row at `row` (type t), as quant_dequantize_row gives it.
__host__ __device__ static float dequant_elem(int t, const uint8_t *row, int64_t c) {
    switch (t) {
    case GGML_TYPE_F32: return bits_f32((uint32_t)row[4 * c] | ((uint32_t)row[4 * c + 1] << 8) | ((uint32_t)row[4 * c + 2] << 16) | ((uint32_t)row[4 * c + 3] << 24));
    case GGML_TYPE_F16: return fp16_at(row + 2 * c);
    case GGML_TYPE_BF16: return bits_f32((uint32_t)(row[2 * c] | (row[2 * c + 1] << 8)) << 16);
    case GGML_TYPE_Q4_0: {
        const uint8_t *b = row + (c / 32) * 18;
        const int j = (int)(c % 32);
        const int x = j < 16 ? (b[2 + j] & 0x0F) - 8 : (b[2 + j - 16] >> 4) - 8;
        return mul_rn((float)x, fp16_at(b));
    }
    case GGML_TYPE_Q4_1: {
        const uint8_t *b = row + (c / 32) * 20;
        const int j = (int)(c % 32);
        const int x = j < 16 ? (b[4 + j] & 0x0F) : (b[4 + j - 16] >> 4);
        return add_rn(mul_rn((float)x, fp16_at(b)), fp16_at(b + 2));
    }
    case GGML_TYPE_Q8_0: {
        const uint8_t *b = row + (c / 32) * 34;
        return mul_rn((float)(int8_t)b[2 + c % 32], fp16_at(b));
    }
    case GGML_TYPE_Q4_K: { // d, dmin, scales[12], qs[128]
        const uint8_t *b = row + (c / 256) * 144;
        const int l = (int)(c % 256), j = l / 64, hi = (l % 64) / 32, lane = l % 32;
        int sc, m;
        scale_min_k4(2 * j + hi, b + 4, &sc, &m);
        const float d1 = mul_rn(fp16_at(b), (float)sc), m1 = mul_rn(fp16_at(b + 2), (float)m);
        const uint8_t q = b[16 + j * 32 + lane];
        return sub_rn(mul_rn(d1, (float)(hi ? q >> 4 : q & 0xF)), m1);
    }
    case GGML_TYPE_Q6_K: { // ql[128], qh[64], scales[16], d
        const uint8_t *b = row + (c / 256) * 210;
        const int l = (int)(c % 256), n = l / 128, k = l % 128, quarter = k / 32, lane = k % 32, is = lane / 16;
        const uint8_t *ql = b + n * 64, *qh = b + 128 + n * 32;
        const int8_t *sc = (const int8_t *)(b + 192) + n * 8;
        const int lo = quarter & 1 ? ql[lane + 32] : ql[lane];
        const int q = ((quarter < 2 ? lo & 0xF : lo >> 4) | (((qh[lane] >> (2 * quarter)) & 3) << 4)) - 32;
        return mul_rn(mul_rn(fp16_at(b + 208), (float)sc[is + 2 * quarter]), (float)q);
    }
    default: return 0.0f; // validated on the host
    }
}

__global__ void k_dequant(const uint8_t *raw, int t, int64_t rows, int64_t cols, size_t row_bytes, float *out) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        out[i] = dequant_elem(t, raw + r * row_bytes, c);
    }
}

// As k_dequant, rounded to bf16 (nearest even): the values k_to_bf16 makes of k_dequant's.
__global__ void k_dequant_bf16(const uint8_t *raw, int t, int64_t rows, int64_t cols, size_t row_bytes, __nv_bfloat16 *out) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        out[i] = __float2bfloat16_rn(dequant_elem(t, raw + r * row_bytes, c));
    }
}

__global__ void k_to_bf16(const float *x, __nv_bfloat16 *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = __float2bfloat16_rn(x[i]);
}

static int64_t block_elems(ggml_type t) {
    switch (t) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: return 1;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q8_0: return 32;
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K: return 256;
    default: return 0;
    }
}

static size_t block_bytes(ggml_type t) {
    switch (t) {
    case GGML_TYPE_F32: return 4;
    case GGML_TYPE_F16: case GGML_TYPE_BF16: return 2;
    case GGML_TYPE_Q4_0: return 18;
    case GGML_TYPE_Q4_1: return 20;
    case GGML_TYPE_Q8_0: return 34;
    case GGML_TYPE_Q4_K: return 144;
    case GGML_TYPE_Q6_K: return 210;
    default: return 0;
    }
}

static void check_matrix(const as_matrix *w, const char *op) {
    const int64_t be = block_elems(w->type);
    if (!be) die(op, "unsupported weight type %d", (int)w->type);
    if (w->rows < 0 || w->cols <= 0 || w->cols % be) die(op, "bad matrix shape %lldx%lld for type %d", (long long)w->rows, (long long)w->cols, (int)w->type);
    if (w->row_bytes < (size_t)(w->cols / be) * block_bytes(w->type)) die(op, "row_bytes %zu too small", w->row_bytes);
}

// The device dequantiser's code run on the host, for tests on machines
// without a GPU: row (cols elements of type t) into out; -1 for an
// unsupported type or a width that is not whole blocks.
extern "C" __attribute__((visibility("default"))) int alphaspin_cuda_dequant_host(int t, const void *row, int64_t cols, float *out) {
    const int64_t be = block_elems((ggml_type)t);
    if (!be || cols <= 0 || cols % be) return -1;
    for (int64_t c = 0; c < cols; c++) out[c] = dequant_elem(t, (const uint8_t *)row, c);
    return 0;
}

// Dequantises rows [r0, r0 + n) of w into dst (device, n * cols floats), exactly.
static void dequant_rows(const as_matrix *w, int64_t r0, int64_t n, float *dst, const char *op) {
    const size_t bytes = (size_t)n * w->row_bytes;
    uint8_t *raw = (uint8_t *)grow(&b_f, bytes, op);
    CK(cudaMemcpy(raw, (const uint8_t *)w->data + (size_t)r0 * w->row_bytes, bytes, cudaMemcpyHostToDevice));
    k_dequant<<<grid_for(n * w->cols, 256), 256>>>(raw, (int)w->type, n, w->cols, w->row_bytes, dst);
    CK_LAUNCH();
}

// ---- the weight table ----

typedef struct {
    const void *data;
    int type;
    int64_t rows, cols;
    size_t row_bytes;
    uint64_t fp;
    float *f32;           // exact fp32 weights (precision F32)
    __nv_bfloat16 *bf16;  // bf16-rounded (precisions BF16, Q8)
} wentry;
static wentry *g_w;
static int g_nw, g_capw;

// FNV-1a over up to 256 bytes at the start, middle and end of the matrix.
static uint64_t fingerprint(const as_matrix *w) {
    const uint8_t *p = (const uint8_t *)w->data;
    const size_t n = (size_t)w->rows * w->row_bytes, k = n < 256 ? n : 256;
    const size_t at[3] = {0, n / 2 - (n / 2 < k / 2 ? n / 2 : k / 2), n - k};
    uint64_t h = 1469598103934665603ull;
    for (int s = 0; s < 3; s++)
        for (size_t i = 0; i < k && at[s] + i < n; i++) h = (h ^ p[at[s] + i]) * 1099511628211ull;
    return h;
}

static void free_entry(wentry *e) {
    const int64_t n = e->rows * e->cols;
    if (e->f32) cudaFree(e->f32), g_weight_bytes -= sizeof(float) * (size_t)n;
    if (e->bf16) cudaFree(e->bf16), g_weight_bytes -= sizeof(__nv_bfloat16) * (size_t)n;
    e->f32 = NULL, e->bf16 = NULL;
}

// The table's entry of w (made on first use), with the fp32 or bf16 copy made.
static const wentry *weights(const as_matrix *w, bool want_bf16, const char *op) {
    const uint64_t fp = fingerprint(w);
    int i = 0;
    while (i < g_nw && g_w[i].data != w->data) i++;
    if (i < g_nw && (g_w[i].type != (int)w->type || g_w[i].rows != w->rows || g_w[i].cols != w->cols || g_w[i].row_bytes != w->row_bytes ||
                     g_w[i].fp != fp)) {
        free_entry(&g_w[i]); // the pointer was freed and reused for another matrix
        g_w[i] = g_w[--g_nw];
        i = g_nw;
    }
    if (i == g_nw) {
        if (g_nw == g_capw) {
            g_capw = g_capw ? 2 * g_capw : 64;
            g_w = (wentry *)realloc(g_w, sizeof(wentry) * (size_t)g_capw);
            if (!g_w) die(op, "out of host memory");
        }
        wentry e = {w->data, (int)w->type, w->rows, w->cols, w->row_bytes, fp, NULL, NULL};
        g_w[g_nw++] = e;
    }
    wentry *e = &g_w[i];
    const int64_t n = w->rows * w->cols;
    if (want_bf16 && !e->bf16) {
        e->bf16 = (__nv_bfloat16 *)dmalloc(sizeof(__nv_bfloat16) * (size_t)n, op);
        g_weight_bytes += sizeof(__nv_bfloat16) * (size_t)n;
        float *tmp = e->f32 ? e->f32 : (float *)grow(&b_e, sizeof(float) * (size_t)n, op);
        if (!e->f32) dequant_rows(w, 0, w->rows, tmp, op);
        k_to_bf16<<<grid_for(n, 256), 256>>>(tmp, e->bf16, n);
        CK_LAUNCH();
    } else if (!want_bf16 && !e->f32) {
        e->f32 = (float *)dmalloc(sizeof(float) * (size_t)n, op);
        g_weight_bytes += sizeof(float) * (size_t)n;
        dequant_rows(w, 0, w->rows, e->f32, op);
    }
    return e;
}

// ---- matrix products ----

static void lt_matmul_bf16(const __nv_bfloat16 *W, const __nv_bfloat16 *X, float *Y, int64_t ldy, int64_t rows, int64_t cols, int64_t n,
                           const char *op) {
    // Column-major view: Y (rows x n, columns ldy apart) = W^T (W stored cols x rows) * X (cols x n).
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulPreference_t pref;
    CKB(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    CKB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
    CKB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
    CKB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)cols, (uint64_t)rows, cols));
    CKB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)cols, (uint64_t)n, cols));
    CKB(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, (uint64_t)rows, (uint64_t)n, ldy));
    CKB(cublasLtMatmulPreferenceCreate(&pref));
    CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g_lt_ws_bytes, sizeof g_lt_ws_bytes));
    const uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE; // no split-K: one order of summation per output
    CKB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(g_lt, desc, la, lb, ld, ld, pref, 1, &res, &nres);
    const float one = 1.0f, zero = 0.0f;
    if (hs == CUBLAS_STATUS_SUCCESS && nres > 0) {
        CKB(cublasLtMatmul(g_lt, desc, &one, W, la, X, lb, &zero, Y, ld, Y, ld, &res.algo, g_lt_ws, g_lt_ws_bytes, 0));
    } else { // no cuBLASLt algorithm for this shape: the same product through cublasGemmEx
        CKB(cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n, (int)cols, &one, W, CUDA_R_16BF, (int)cols, X, CUDA_R_16BF, (int)cols, &zero, Y,
                         CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(desc);
}

static void cu_matmul(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, kernel_precision p) {
    const char *op = "matmul";
    check_matrix(w, op);
    if (ldo < w->rows) die(op, "ldo %lld < rows %lld", (long long)ldo, (long long)w->rows);
    if (n_tokens <= 0 || w->rows == 0) return;
    if (w->rows > INT32_MAX || w->cols > INT32_MAX || n_tokens > INT32_MAX) die(op, "matrix too large for one product");
    lock_guard g(op);
    const int64_t rows = w->rows, cols = w->cols;
    const bool bf16 = p != KERNEL_PRECISION_F32;
    const wentry *e = weights(w, bf16, op);
    float *dx = (float *)grow(&b_a, sizeof(float) * (size_t)(n_tokens * cols), op);
    float *dy = (float *)grow(&b_c, sizeof(float) * (size_t)(n_tokens * rows), op);
    CK(cudaMemcpy(dx, x, sizeof(float) * (size_t)(n_tokens * cols), cudaMemcpyHostToDevice));
    if (!bf16) {
        const float one = 1.0f, zero = 0.0f;
        CKB(cublasSgemm(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n_tokens, (int)cols, &one, e->f32, (int)cols, dx, (int)cols, &zero, dy, (int)rows));
    } else {
        __nv_bfloat16 *dxb = (__nv_bfloat16 *)grow(&b_b, sizeof(__nv_bfloat16) * (size_t)(n_tokens * cols), op);
        k_to_bf16<<<grid_for(n_tokens * cols, 256), 256>>>(dx, dxb, n_tokens * cols);
        CK_LAUNCH();
        lt_matmul_bf16(e->bf16, dxb, dy, rows, rows, cols, n_tokens, op);
    }
    CK(cudaMemcpy2D(out, sizeof(float) * (size_t)ldo, dy, sizeof(float) * (size_t)rows, sizeof(float) * (size_t)rows, (size_t)n_tokens,
                    cudaMemcpyDeviceToHost));
}

// The rows' GGUF blocks gathered on the host, copied once, dequantised on the device.
static void cu_get_rows(const as_matrix *w, const int32_t *ids, int64_t n, float *out) {
    const char *op = "get_rows";
    check_matrix(w, op);
    if (n <= 0) return;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->rows) die(op, "row %d of %lld", (int)ids[i], (long long)w->rows);
    lock_guard g(op);
    const size_t rb = w->row_bytes, bytes = sizeof(float) * (size_t)(n * w->cols);
    uint8_t *host = (uint8_t *)malloc(rb * (size_t)n);
    if (!host) die(op, "out of host memory");
    for (int64_t i = 0; i < n; i++) memcpy(host + (size_t)i * rb, (const uint8_t *)w->data + (size_t)ids[i] * rb, rb);
    uint8_t *raw = (uint8_t *)grow(&b_f, rb * (size_t)n, op);
    CK(cudaMemcpy(raw, host, rb * (size_t)n, cudaMemcpyHostToDevice));
    free(host);
    float *d = (float *)out_dev(&b_a, out, bytes, op);
    k_dequant<<<grid_for(n * w->cols, 256), 256>>>(raw, (int)w->type, n, w->cols, rb, d);
    CK_LAUNCH();
    out_host(out, d, bytes, op);
}

// C = alpha op(A) op(B) + beta C, row-major: in cuBLAS's column-major terms
// C^T = alpha op(B)^T op(A)^T + beta C^T.  buf_alloc operands are used in
// place with their leading dimensions (C too: written there, then waited
// for); any other is copied compact.
static void cu_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                     float beta, float *C, int64_t ldc, int nth) {
    const char *op = "sgemm";
    (void)nth;
    if (M <= 0 || N <= 0) return;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) die(op, "matrix too large");
    lock_guard g(op);
    const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    const bool rA = K > 0 && is_managed(A), rB = K > 0 && is_managed(B), rC = is_managed(C);
    const float *dA = rA ? A : (const float *)grow(&b_a, sizeof(float) * (size_t)(ar * ac > 0 ? ar * ac : 1), op);
    const float *dB = rB ? B : (const float *)grow(&b_b, sizeof(float) * (size_t)(br * bc > 0 ? br * bc : 1), op);
    float *dC = rC ? C : (float *)grow(&b_c, sizeof(float) * (size_t)(M * N), op);
    const int64_t la = rA ? lda : ac, lb = rB ? ldb : bc, lc = rC ? ldc : N;
    if (rA || rB || rC) g_tr_wait = true;
    if (K > 0) {
        if (!rA)
            CK(cudaMemcpy2D((void *)dA, sizeof(float) * (size_t)ac, A, sizeof(float) * (size_t)lda, sizeof(float) * (size_t)ac, (size_t)ar,
                            cudaMemcpyHostToDevice));
        if (!rB)
            CK(cudaMemcpy2D((void *)dB, sizeof(float) * (size_t)bc, B, sizeof(float) * (size_t)ldb, sizeof(float) * (size_t)bc, (size_t)br,
                            cudaMemcpyHostToDevice));
    }
    if (beta == 0.0f) // C is not read (it may hold NaN)
        CK(cudaMemset2D(dC, sizeof(float) * (size_t)lc, 0, sizeof(float) * (size_t)N, (size_t)M));
    else if (!rC)
        CK(cudaMemcpy2D(dC, sizeof(float) * (size_t)N, C, sizeof(float) * (size_t)ldc, sizeof(float) * (size_t)N, (size_t)M, cudaMemcpyHostToDevice));
    if (lc > INT32_MAX || (rA && la > INT32_MAX) || (rB && lb > INT32_MAX)) die(op, "leading dimension too large");
    CKB(cublasSgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, dB, (int)(lb > 0 ? lb : 1), dA,
                    (int)(la > 0 ? la : 1), &beta, dC, (int)lc));
    if (!rC)
        CK(cudaMemcpy2D(C, sizeof(float) * (size_t)ldc, dC, sizeof(float) * (size_t)N, sizeof(float) * (size_t)N, (size_t)M, cudaMemcpyDeviceToHost));
}

// ---- row ops ----

// One block per output row o, of x's row rows[o] (rows NULL: o).
__global__ void k_rmsnorm(float *out, const float *x, const float *w, int64_t C, float eps, const int32_t *rows) {
    __shared__ double sh[RED_THREADS];
    const int64_t o = blockIdx.x;
    x += (rows ? rows[o] : o) * C, out += o * C;
    double s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += (double)x[i] * x[i];
    s = block_reduce(sh, s, op_add_d());
    const float inv = (float)(1.0 / sqrt(s / (double)C + (double)eps));
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) out[i] = __fmul_rn(__fmul_rn(x[i], inv), w[i]);
}

// Element i of n rows x F: row i / F, column i % F.
__global__ void k_glu(float *out, int64_t ldo, const float *g, const float *u, int64_t ldg, int64_t n, int64_t F, bool gelu) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * F; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / F, j = i % F;
        const float x = g[r * ldg + j];
        const float a = gelu ? 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) : x / (1.0f + expf(-x));
        out[r * ldo + j] = a * u[r * ldg + j];
    }
}

__global__ void k_exp(float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) x[i] = expf(x[i]);
}

// One block: the first index of the largest value.
__global__ void k_argmax(const float *x, int32_t n, int32_t *out) {
    __shared__ float sv[RED_THREADS];
    __shared__ int32_t si[RED_THREADS];
    float bv = -INFINITY;
    int32_t bi = -1;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
        if (bi < 0 || x[i] > bv) bv = x[i], bi = i;
    const unsigned t = threadIdx.x;
    sv[t] = bv, si[t] = bi;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) {
            const float v2 = sv[t + s];
            const int32_t i2 = si[t + s];
            if (i2 >= 0 && (si[t] < 0 || v2 > sv[t] || (v2 == sv[t] && i2 < si[t]))) sv[t] = v2, si[t] = i2;
        }
        __syncthreads();
    }
    if (t == 0) *out = si[0] < 0 ? 0 : si[0];
}

// The softmax pieces in train_ops.h's 16 lanes (threads 0 .. 15 of the
// block, each a lane in increasing i, folded in lane order: the CPU's bits
// with vexp.h's e^x, tr_expf); n >= 1.
__global__ void k_max(const float *x, int64_t n, float *out) {
    __shared__ float lanes[TR_LANES];
    if (threadIdx.x < TR_LANES) lanes[threadIdx.x] = lane_max(x, n, threadIdx.x);
    __syncthreads();
    if (threadIdx.x == 0) *out = fold_max(lanes);
}

__global__ void k_exp_shift_sum(float *x, int64_t n, float shift, double *out) {
    __shared__ float lanes[TR_LANES];
    if (threadIdx.x < TR_LANES) lanes[threadIdx.x] = lane_exp_sum(x, n, shift, threadIdx.x, x);
    __syncthreads();
    if (threadIdx.x == 0) *out = fold_sum(lanes);
}

// The element functions of train_ops.h (section "training", above).
__global__ void k_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dz[i] = neg_scaled_exp_elem(z[i], g, l);
}

__global__ void k_silu_fwd(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) h[i] = glu_fwd_elem(g[i], u[i], false);
}

__global__ void k_silu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        glu_bwd_elem(&dg[i], &du[i], dh[i], g[i], u[i], false);
}

// Copies n floats in, returns the device pointer (scratch b).
static float *upload(dbuf *b, const float *x, int64_t n, const char *op) {
    float *d = (float *)grow(b, sizeof(float) * (size_t)(n > 0 ? n : 1), op);
    if (n > 0) CK(cudaMemcpy(d, x, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice));
    return d;
}

static void download(float *x, const float *d, int64_t n, const char *op) {
    if (n > 0) CK(cudaMemcpy(x, d, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost));
}

static void cu_rmsnorm(float *out, const float *x, const float *w, int64_t n, int64_t C, float eps, const int32_t *rows) {
    const char *op = "rmsnorm";
    if (C <= 0 || n <= 0) return;
    if (n > INT32_MAX) die(op, "%lld rows", (long long)n);
    lock_guard g(op);
    const int64_t n_in = rows ? rows_span(rows, n, op) : n; // rows of x read
    const float *dx = (const float *)in_dev(&b_a, x, sizeof(float) * (size_t)(n_in * C), op), *dw = (const float *)in_dev(&b_b, w, sizeof(float) * (size_t)C, op);
    const int32_t *dr = rows ? in_idx(&g_rows, rows, n, op) : NULL;
    float *dy = (float *)out_dev(&b_c, out, sizeof(float) * (size_t)(n * C), op);
    k_rmsnorm<<<(unsigned)n, RED_THREADS>>>(dy, dx, dw, C, eps, dr);
    CK_LAUNCH();
    out_host(out, dy, sizeof(float) * (size_t)(n * C), op);
}

static void cu_glu(float *out, int64_t ldo, const float *gg, const float *u, int64_t ldg, int64_t n, int64_t F, bool gelu) {
    const char *op = "glu";
    if (n <= 0 || F <= 0) return;
    lock_guard g(op);
    const size_t gb = span_bytes(n, F, ldg), ob = span_bytes(n, F, ldo);
    const float *dg = (const float *)in_dev(&b_a, gg, gb, op), *du = (const float *)in_dev(&b_b, u, gb, op);
    float *dy = (float *)out_dev(&b_c, out, ob, op);
    if (dy != out && ldo > F) CK(cudaMemcpy(dy, out, ob, cudaMemcpyHostToDevice)); // keep the gaps between rows
    k_glu<<<grid_for(n * F, 256), 256>>>(dy, ldo, dg, du, ldg, n, F, gelu);
    CK_LAUNCH();
    out_host(out, dy, ob, op);
}

static void cu_exp(float *x, int64_t n) {
    const char *op = "exp";
    if (n <= 0) return;
    lock_guard g(op);
    float *d = upload(&b_a, x, n, op);
    k_exp<<<grid_for(n, 256), 256>>>(d, n);
    CK_LAUNCH();
    download(x, d, n, op);
}

static int32_t cu_argmax(const float *x, int32_t n) {
    const char *op = "argmax";
    if (n <= 0) return 0;
    lock_guard g(op);
    float *d = upload(&b_a, x, n, op);
    int32_t *di = (int32_t *)grow(&b_b, sizeof(int32_t), op), r = 0;
    k_argmax<<<1, RED_THREADS>>>(d, n, di);
    CK_LAUNCH();
    CK(cudaMemcpy(&r, di, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}

static float cu_max(const float *x, int64_t n) {
    const char *op = "max";
    if (n <= 0) return -INFINITY;
    lock_guard g(op);
    float *d = upload(&b_a, x, n, op), *dm = (float *)grow(&b_b, sizeof(float), op), r = 0;
    k_max<<<1, 32>>>(d, n, dm);
    CK_LAUNCH();
    CK(cudaMemcpy(&r, dm, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}

static double cu_exp_shift_sum(float *x, int64_t n, float shift) {
    const char *op = "exp_shift_sum";
    if (n <= 0) return 0.0;
    lock_guard g(op);
    float *d = upload(&b_a, x, n, op);
    double *ds = (double *)grow(&b_b, sizeof(double), op), r = 0;
    k_exp_shift_sum<<<1, 32>>>(d, n, shift, ds);
    CK_LAUNCH();
    download(x, d, n, op);
    CK(cudaMemcpy(&r, ds, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}

static void cu_neg_scaled_exp(float *dz, const float *z, int64_t n, float gg, float l) {
    const char *op = "neg_scaled_exp";
    if (n <= 0) return;
    lock_guard g(op);
    float *d = upload(&b_a, z, n, op), *dy = (float *)grow(&b_b, sizeof(float) * (size_t)n, op);
    k_neg_scaled_exp<<<grid_for(n, 256), 256>>>(dy, d, n, gg, l);
    CK_LAUNCH();
    download(dz, dy, n, op);
}

static void cu_silu_glu_forward(float *h, const float *gg, const float *u, int64_t n) {
    const char *op = "silu_glu_forward";
    if (n <= 0) return;
    lock_guard g(op);
    float *dg = upload(&b_a, gg, n, op), *du = upload(&b_b, u, n, op), *dh = (float *)grow(&b_c, sizeof(float) * (size_t)n, op);
    k_silu_fwd<<<grid_for(n, 256), 256>>>(dh, dg, du, n);
    CK_LAUNCH();
    download(h, dh, n, op);
}

static void cu_silu_glu_backward(float *dgo, float *duo, const float *dh, const float *gg, const float *u, int64_t n) {
    const char *op = "silu_glu_backward";
    if (n <= 0) return;
    lock_guard g(op);
    float *ddh = upload(&b_a, dh, n, op), *dg = upload(&b_b, gg, n, op), *du = upload(&b_c, u, n, op);
    float *o = (float *)grow(&b_d, sizeof(float) * (size_t)(2 * n), op);
    k_silu_bwd<<<grid_for(n, 256), 256>>>(o, o + n, ddh, dg, du, n);
    CK_LAUNCH();
    download(dgo, o, n, op);
    download(duo, o + n, n, op);
}

// ---- the residual add, the embedding scale, a token's log-probability (ops.h) ----

// One rounding per element, as the CPU's loops (no contraction: __fadd_rn / __fmul_rn).
__global__ void k_add(float *y, const float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = __fadd_rn(y[i], x[i]);
}

__global__ void k_scale(float *x, int64_t n, float s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) x[i] = __fmul_rn(x[i], s);
}

// One block: log softmax(z)[t] in double, as kernel_logprob: the fp32 maximum
// (a fixed tree), the sum of e^(z - max) in double (per-thread strided sums
// folded by a fixed tree), then z[t] - max - log(sum).
__global__ void k_logprob(const float *z, int32_t n, int32_t t, double *out) {
    __shared__ float shf[RED_THREADS];
    __shared__ double shd[RED_THREADS];
    float mx = -INFINITY;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x) mx = z[i] > mx ? z[i] : mx;
    mx = block_reduce(shf, mx, op_max_f());
    double s = 0;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x) s += exp((double)z[i] - (double)mx);
    s = block_reduce(shd, s, op_add_d());
    if (threadIdx.x == 0) *out = (double)z[t] - (double)mx - log(s);
}

// One block: log sum e^(s z) in double, as kernel_logsumexp: the fp32
// maximum of s z (fmaxf, a fixed tree), the sum of e^(s z - max) in double
// (per-thread strided sums folded by a fixed tree), then max + log(sum).
struct op_fmax_f { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };
__global__ void k_logsumexp(const float *z, int64_t n, float s, double *out) {
    __shared__ float shf[RED_THREADS];
    __shared__ double shd[RED_THREADS];
    float mx = z[0] * s;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, z[i] * s);
    mx = block_reduce(shf, mx, op_fmax_f());
    double sum = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += exp((double)(z[i] * s - mx));
    sum = block_reduce(shd, sum, op_add_d());
    if (threadIdx.x == 0) *out = (double)mx + log(sum);
}

static double cu_logsumexp(const float *z, int64_t n, float s) {
    const char *op = "logsumexp";
    if (n <= 0) return -INFINITY;
    lock_guard g(op);
    float *d = upload(&b_a, z, n, op);
    double *dr = (double *)grow(&b_b, sizeof(double), op), r = 0;
    k_logsumexp<<<1, RED_THREADS>>>(d, n, s, dr);
    CK_LAUNCH();
    CK(cudaMemcpy(&r, dr, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}

static void cu_add(float *y, const float *x, int64_t n) {
    const char *op = "add";
    if (n <= 0) return;
    lock_guard g(op);
    const size_t bytes = sizeof(float) * (size_t)n;
    float *dy = (float *)inout_dev(&b_a, y, bytes, op);
    const float *dx = (const float *)in_dev(&b_b, x, bytes, op);
    k_add<<<grid_for(n, 256), 256>>>(dy, dx, n);
    CK_LAUNCH();
    out_host(y, dy, bytes, op);
}

static void cu_scale(float *x, int64_t n, float s) {
    const char *op = "scale";
    if (n <= 0) return;
    lock_guard g(op);
    const size_t bytes = sizeof(float) * (size_t)n;
    float *d = (float *)inout_dev(&b_a, x, bytes, op);
    k_scale<<<grid_for(n, 256), 256>>>(d, n, s);
    CK_LAUNCH();
    out_host(x, d, bytes, op);
}

static double cu_logprob(const float *z, int32_t n, int32_t t) {
    const char *op = "logprob";
    if (n <= 0 || t < 0 || t >= n) die(op, "token %d of %d logits", (int)t, (int)n);
    lock_guard g(op);
    float *d = upload(&b_a, z, n, op);
    double *dr = (double *)grow(&b_b, sizeof(double), op), r = 0;
    k_logprob<<<1, RED_THREADS>>>(d, n, t, dr);
    CK_LAUNCH();
    CK(cudaMemcpy(&r, dr, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}

// ---- weight groups (weights.h), resident on the device ----
//
// A group's parts (Q|K|V, gate|up, or one matrix) become one row-major
// matrix on the device, the parts' rows stacked in order, so that a product
// is one GEMM whatever the parts:
//   bf16 [rows][cols], made by weights_new: precisions BF16 and Q8, as matmul
//        (the GGUF blocks dequantised on the device, exactly, then rounded
//        to nearest even; bf16 x bf16 -> fp32 on cuBLASLt);
//   fp32 [rows][cols], made by the first F32 product (from the GGUF bytes
//        again: they outlive the group, weights.h): cublasSgemm, no TF32.
// Nothing but the stacks stays on the device; the GGUF bytes travel in
// chunks of at most DEQUANT_CHUNK_BYTES through scratch.

struct as_weights {
    int n;
    as_matrix part[KERNEL_WEIGHTS_MAX_PARTS];
    int64_t rows, cols; // of the stack
    __nv_bfloat16 *bf16;
    float *f32;
};

#define DEQUANT_CHUNK_BYTES ((size_t)64 << 20)

// All rows of w, dequantised (exactly) into dst (device, rows * cols elements),
// as fp32 or rounded to bf16.
static void dequant_matrix(const as_matrix *w, void *dst, bool bf16, const char *op) {
    const int64_t step = (int64_t)(DEQUANT_CHUNK_BYTES / w->row_bytes > 0 ? DEQUANT_CHUNK_BYTES / w->row_bytes : 1);
    for (int64_t r0 = 0; r0 < w->rows; r0 += step) {
        const int64_t n = w->rows - r0 < step ? w->rows - r0 : step;
        const size_t bytes = (size_t)n * w->row_bytes;
        uint8_t *raw = (uint8_t *)grow(&b_f, bytes, op);
        CK(cudaMemcpy(raw, (const uint8_t *)w->data + (size_t)r0 * w->row_bytes, bytes, cudaMemcpyHostToDevice));
        if (bf16)
            k_dequant_bf16<<<grid_for(n * w->cols, 256), 256>>>(raw, (int)w->type, n, w->cols, w->row_bytes, (__nv_bfloat16 *)dst + r0 * w->cols);
        else k_dequant<<<grid_for(n * w->cols, 256), 256>>>(raw, (int)w->type, n, w->cols, w->row_bytes, (float *)dst + r0 * w->cols);
        CK_LAUNCH();
    }
}

// The stack of w's parts at fp32 or bf16 (made here when missing).
// The stack at a precision, made on first use; NULL (g_err) when `may_fail`
// and the device has no room, else out of memory aborts.
static void *stack_of(as_weights *w, bool bf16, const char *op, bool may_fail = false) {
    void **at = bf16 ? (void **)&w->bf16 : (void **)&w->f32;
    if (*at || w->rows == 0) return *at;
    const size_t eb = bf16 ? sizeof(__nv_bfloat16) : sizeof(float), bytes = eb * (size_t)w->rows * (size_t)w->cols;
    uint8_t *d = (uint8_t *)(may_fail ? try_dmalloc(bytes, op) : dmalloc(bytes, op));
    if (!d) return NULL;
    g_weight_bytes += bytes;
    int64_t r0 = 0;
    for (int i = 0; i < w->n; i++) {
        if (w->part[i].rows > 0) dequant_matrix(&w->part[i], d + eb * (size_t)r0 * (size_t)w->cols, bf16, op);
        r0 += w->part[i].rows;
    }
    *at = d;
    return d;
}

// Bad parts are the caller's bug: the plugin cannot set as_error (it links
// nothing of alphaspin), so they abort with one line, as every failure here.
static as_weights *cu_weights_new(const as_matrix *const *parts, int n_parts) {
    const char *op = "weights_new";
    if (n_parts < 1 || n_parts > KERNEL_WEIGHTS_MAX_PARTS) die(op, "%d parts: expected 1 to %d", n_parts, KERNEL_WEIGHTS_MAX_PARTS);
    as_weights *w = (as_weights *)calloc(1, sizeof *w);
    if (!w) die(op, "out of host memory");
    w->n = n_parts;
    w->cols = parts[0]->cols;
    for (int i = 0; i < n_parts; i++) {
        check_matrix(parts[i], op);
        if (parts[i]->cols != w->cols) die(op, "part %d has %lld columns, part 0 %lld", i, (long long)parts[i]->cols, (long long)w->cols);
        w->part[i] = *parts[i];
        w->part[i].packed = NULL, w->part[i].bf16 = NULL;
        w->rows += parts[i]->rows;
    }
    if (w->rows > INT32_MAX || w->cols > INT32_MAX) die(op, "a %lldx%lld stack is too large for one product", (long long)w->rows, (long long)w->cols);
    lock_guard g(op);
    if (w->rows > 0 && !stack_of(w, true, op, true)) {
        free(w);
        return NULL;
    }
    return w;
}

static void cu_weights_free(as_weights *w) {
    const char *op = "weights_free";
    if (!w) return;
    {
        lock_guard g(op);
        const size_t n = (size_t)w->rows * (size_t)w->cols;
        if (w->bf16) {
            CK(cudaFree(w->bf16));
            g_weight_bytes -= sizeof(__nv_bfloat16) * n;
        }
        if (w->f32) {
            CK(cudaFree(w->f32));
            g_weight_bytes -= sizeof(float) * n;
        }
    }
    free(w);
}

static size_t cu_weights_bytes(const as_weights *w) {
    const size_t n = (size_t)w->rows * (size_t)w->cols;
    return (w->bf16 ? sizeof(__nv_bfloat16) * n : 0) + (w->f32 ? sizeof(float) * n : 0);
}

// out[t * ldo + r] = sum_c W[r][c] x[t * cols + c] over the stack's rows: x in,
// one GEMM (matmul's, on the stack), the rows out into the strided host out.
// x and out in place when they are buf_alloc memory (out written with its
// own row stride), else staged.
static void cu_weights_matmul(as_weights *w, float *out, int64_t ldo, const float *x, int64_t n_tokens, kernel_precision p) {
    const char *op = "weights_matmul";
    if (ldo < w->rows) die(op, "ldo %lld < rows %lld", (long long)ldo, (long long)w->rows);
    if (n_tokens <= 0 || w->rows == 0) return;
    if (n_tokens > INT32_MAX || ldo > INT32_MAX) die(op, "%lld tokens (row stride %lld): too many for one product", (long long)n_tokens, (long long)ldo);
    lock_guard g(op);
    const int64_t rows = w->rows, cols = w->cols;
    const bool bf16 = p != KERNEL_PRECISION_F32, direct = is_managed(out);
    const void *W = stack_of(w, bf16, op);
    const float *dx = (const float *)in_dev(&b_a, x, sizeof(float) * (size_t)(n_tokens * cols), op);
    float *dy = direct ? out : (float *)grow(&b_c, sizeof(float) * (size_t)(n_tokens * rows), op);
    const int64_t ldy = direct ? ldo : rows;
    if (!bf16) {
        const float one = 1.0f, zero = 0.0f;
        CKB(cublasSgemm(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n_tokens, (int)cols, &one, (const float *)W, (int)cols, dx, (int)cols, &zero, dy,
                        (int)ldy));
    } else {
        __nv_bfloat16 *dxb = (__nv_bfloat16 *)grow(&b_b, sizeof(__nv_bfloat16) * (size_t)(n_tokens * cols), op);
        k_to_bf16<<<grid_for(n_tokens * cols, 256), 256>>>(dx, dxb, n_tokens * cols);
        CK_LAUNCH();
        lt_matmul_bf16((const __nv_bfloat16 *)W, dxb, dy, ldy, rows, cols, n_tokens, op);
    }
    if (!direct)
        CK(cudaMemcpy2D(out, sizeof(float) * (size_t)ldo, dy, sizeof(float) * (size_t)rows, sizeof(float) * (size_t)rows, (size_t)n_tokens,
                        cudaMemcpyDeviceToHost));
}

// ---- RoPE (rope.h): n_heads vectors of d, pairs (i, i + n_rot/2) (neox) or (2i, 2i+1) ----

// One block per (row, head): row r = block / n_heads, its angles cs, sn + r * half.
__global__ void k_rope(float *v, int64_t ld, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    const int half = n_rot / 2, h = blockIdx.x % n_heads;
    const int64_t r = blockIdx.x / n_heads;
    float *x = v + r * ld + (int64_t)h * d;
    cs += r * half, sn += r * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const float c = cs[i], s = sign * sn[i], a = x[i0], b = x[i1];
        x[i0] = a * c - b * s, x[i1] = a * s + b * c;
    }
}

static void cu_rope(float *v, int64_t ld, int64_t n, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    const char *op = "rope";
    if (n <= 0 || n_heads <= 0 || d <= 0 || n_rot < 2) return;
    if (n_rot > d) die(op, "n_rot %d > d %d", n_rot, d);
    if (n * n_heads > INT32_MAX) die(op, "%lld rows of %d heads", (long long)n, n_heads);
    lock_guard g(op);
    const int64_t half = n_rot / 2;
    const size_t vb = span_bytes(n, (int64_t)n_heads * d, ld), ab = sizeof(float) * (size_t)(n * half);
    float *dv = (float *)inout_dev(&b_a, v, vb, op);
    const float *dc = (const float *)in_dev(&b_b, cs, ab, op), *ds = (const float *)in_dev(&b_c, sn, ab, op);
    k_rope<<<(unsigned)(n * n_heads), 128>>>(dv, ld, n_heads, d, n_rot, neox, dc, ds, sign);
    CK_LAUNCH();
    out_host(v, dv, vb, op);
}

// ---- attention (attention.h's layout: keys in tiles of 16, transposed) ----
// One block per (row, head): scores by one thread per key (a fixed chain over
// the dimensions), softmax with a fixed-order block max and sum, then each
// output dimension by one thread (a fixed chain over the keys).  Each output
// depends on its own row's query, keys and values only.

#define ATT_THREADS 128

template <bool F16> __device__ static inline float kv_at(const void *p, int64_t i) {
    if (F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

// One (row, head): scores by one thread per key (a fixed chain over the
// dimensions), softmax with a fixed-order block max and sum, then each
// output dimension by one thread (a fixed chain over the keys).  qs: the
// block's shared copy of the query; s: nk floats of scratch.
template <bool F16>
__device__ static void attend_one(const float *qr, int d, int nk, const void *k, int64_t k_tile_stride, const void *v, int64_t v_stride, float scale,
                                  float *o, float *s, float *qs, float *red) {
    const int t = threadIdx.x;
    for (int e = t; e < d; e += ATT_THREADS) qs[e] = qr[e];
    __syncthreads();
    float mx = -INFINITY;
    for (int j = t; j < nk; j += ATT_THREADS) {
        const int64_t base = (int64_t)(j / KERNEL_KV_TILE) * k_tile_stride + j % KERNEL_KV_TILE;
        float a = 0.0f;
        for (int e = 0; e < d; e++) a = fmaf(qs[e], kv_at<F16>(k, base + (int64_t)e * KERNEL_KV_TILE), a);
        a *= scale;
        s[j] = a;
        mx = a > mx ? a : mx;
    }
    mx = block_reduce(red, mx, op_max_f());
    float sum = 0.0f;
    for (int j = t; j < nk; j += ATT_THREADS) {
        const float p = expf(s[j] - mx);
        s[j] = p, sum += p;
    }
    sum = block_reduce(red, sum, op_add_f()); // also orders the writes of s before the reads below
    const float inv = 1.0f / sum;
    for (int e = t; e < d; e += ATT_THREADS) {
        float a = 0.0f;
        for (int j = 0; j < nk; j++) a = fmaf(s[j], kv_at<F16>(v, (int64_t)j * v_stride + e), a);
        o[e] = a * inv;
    }
}

// One block per (row, head) of one KV head's rows (attention_rows).
template <bool F16>
__global__ void k_attention(const float *q, int64_t q_stride, int n_heads, int d, const int32_t *n_keys, const void *k, int64_t k_tile_stride,
                            const void *v, int64_t v_stride, float scale, float *out, int64_t out_stride, float *scores, int64_t s_stride) {
    __shared__ float qs[256];
    __shared__ float red[ATT_THREADS];
    const int r = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
    attend_one<F16>(q + r * q_stride + (int64_t)h * d, d, n_keys[r], k, k_tile_stride, v, v_stride, scale, out + r * out_stride + (int64_t)h * d,
                    scores + (int64_t)blockIdx.x * s_stride, qs, red);
}

static void cu_attention_rows(const kernel_attn_args *a) {
    const char *op = "attention_rows";
    if (a->n_rows <= 0 || a->n_heads <= 0) return;
    if (a->tiled) die(op, "the CPU's bf16 key/value tiles (tiled) are not supported by the CUDA backend");
    if (a->d <= 0 || a->d > 256) die(op, "head size %d (at most 256)", a->d);
    lock_guard g(op);
    const int R = a->n_rows, G = a->n_heads, d = a->d;
    int32_t maxk = 0;
    for (int r = 0; r < R; r++) {
        if (a->n_keys[r] < 1) die(op, "row %d has %d keys", r, (int)a->n_keys[r]);
        maxk = a->n_keys[r] > maxk ? a->n_keys[r] : maxk;
    }
    const size_t eb = a->f16 ? 2 : 4;
    const int64_t tiles = (maxk + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE;
    const int64_t k_elems = (tiles - 1) * a->k_tile_stride + (int64_t)KERNEL_KV_TILE * d, v_elems = (int64_t)(maxk - 1) * a->v_stride + d;
    const int64_t qw = (int64_t)G * d; // floats of one row read and written
    float *dq = (float *)grow(&b_a, sizeof(float) * (size_t)(R * qw), op);
    void *dk = grow(&b_b, eb * (size_t)k_elems, op), *dv = grow(&b_c, eb * (size_t)v_elems, op);
    float *dout = (float *)grow(&b_d, sizeof(float) * (size_t)(R * qw), op);
    float *ds = (float *)grow(&b_e, sizeof(float) * (size_t)R * G * (size_t)maxk, op);
    int32_t *dnk = (int32_t *)grow(&b_f, sizeof(int32_t) * (size_t)R, op);
    CK(cudaMemcpy2D(dq, sizeof(float) * (size_t)qw, a->q, sizeof(float) * (size_t)a->q_stride, sizeof(float) * (size_t)qw, (size_t)R, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dk, a->k, eb * (size_t)k_elems, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, a->v, eb * (size_t)v_elems, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dnk, a->n_keys, sizeof(int32_t) * (size_t)R, cudaMemcpyHostToDevice));
    if (a->f16)
        k_attention<true><<<R * G, ATT_THREADS>>>(dq, qw, G, d, dnk, dk, a->k_tile_stride, dv, a->v_stride, a->scale, dout, qw, ds, maxk);
    else k_attention<false><<<R * G, ATT_THREADS>>>(dq, qw, G, d, dnk, dk, a->k_tile_stride, dv, a->v_stride, a->scale, dout, qw, ds, maxk);
    CK_LAUNCH();
    CK(cudaMemcpy2D(a->out, sizeof(float) * (size_t)a->out_stride, dout, sizeof(float) * (size_t)qw, sizeof(float) * (size_t)qw, (size_t)R,
                    cudaMemcpyDeviceToHost));
}

// ---- the KV cache (attention.h, kernel_kv) in device memory ----
//
// kernel_kv's fields mean what they mean for the CPU backend, except that k
// and v are DEVICE pointers (cudaMalloc'd by kv_init, freed by kv_release):
// nothing on the host may read them.  The layout is the CPU's fp32 one at
// every precision: [layer][seq] blocks of seq_stride = ctx_pad * kv_dim
// floats; key (p, e) of a block at (p / 16) * 16 * kv_dim + e * 16 + p % 16
// (tiles of 16 keys, transposed: k_attention's threads, one per key, read 16
// consecutive floats), value (p, e) at p * kv_dim + e.  elem_bytes 4,
// bf16_tiles false, pass->bf16 false: the attention is k_attention's fp32
// (exact inputs, no fp16 cache under Q8 as on the CPU), so test_backend_ops'
// 2e-6 holds at every precision.  The cache is zeroed once by kv_init; a
// position is read only after it was stored.

// Bad sizes and no room on the device: CU_FAIL, the reason in last_error.
static int cu_kv_init(kernel_kv *kv, int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim) {
    const char *op = "kv_init";
    memset(kv, 0, sizeof *kv);
    if (n_layer < 1 || n_seq < 1 || n_ctx < 1 || n_head_kv < 1 || head_dim < 1)
        return fail(op, "expected positive sizes, found %d layers, %d sequences, %d positions, %d x %d", n_layer, n_seq, n_ctx, n_head_kv, head_dim),
               CU_FAIL;
    if (head_dim > 256) return fail(op, "head size %d (at most 256)", head_dim), CU_FAIL;
    const size_t ctx_pad = ((size_t)n_ctx + KERNEL_KV_CHUNK - 1) / KERNEL_KV_CHUNK * KERNEL_KV_CHUNK;
    size_t n, bytes;
    if (ctx_pad > (size_t)INT32_MAX || __builtin_mul_overflow((size_t)n_layer * (size_t)n_seq, ctx_pad, &n) ||
        __builtin_mul_overflow(n, (size_t)n_head_kv * (size_t)head_dim, &n) || __builtin_mul_overflow(n, sizeof(float), &bytes))
        return fail(op, "%d sequences x %d positions overflow the address space", n_seq, n_ctx), CU_FAIL;
    kv->n_layer = n_layer, kv->n_seq = n_seq, kv->n_ctx = n_ctx, kv->n_head_kv = n_head_kv, kv->head_dim = head_dim;
    kv->kv_dim = n_head_kv * head_dim;
    kv->ctx_pad = (int32_t)ctx_pad;
    kv->seq_stride = ctx_pad * (size_t)kv->kv_dim;
    lock_guard g(op);
    kv->k = try_dmalloc(bytes, op);
    kv->v = kv->k ? try_dmalloc(bytes, op) : NULL;
    if (!kv->v) {
        if (kv->k) CK(cudaFree(kv->k));
        kv->k = NULL;
        return CU_FAIL;
    }
    g_kv_bytes += 2 * bytes;
    CK(cudaMemset(kv->k, 0, bytes));
    CK(cudaMemset(kv->v, 0, bytes));
    return CU_OK;
}

static void cu_kv_release(kernel_kv *kv) {
    const char *op = "kv_release";
    if (!kv->k && !kv->v) return;
    lock_guard g(op);
    const size_t bytes = sizeof(float) * (size_t)kv->n_layer * (size_t)kv->n_seq * kv->seq_stride;
    if (kv->k) {
        CK(cudaFree(kv->k));
        g_kv_bytes -= bytes;
    }
    if (kv->v) {
        CK(cudaFree(kv->v));
        g_kv_bytes -= bytes;
    }
    kv->k = kv->v = NULL;
}

// Every precision: the fp32 layout above; rows per attention call: the
// model's most (forward.c caps them), each call being a few copies.
static int cu_kv_begin(kernel_kv *kv, kernel_precision p, kernel_kv_pass *pass) {
    (void)p;
    kv->elem_bytes = 4;
    kv->bf16_tiles = false;
    pass->bf16 = false;
    pass->block_rows = 64;
    return CU_OK;
}

// One block per row: its key into its tile column, its value into its row.
__global__ void k_kv_store(float *K, float *V, size_t layer_at, size_t seq_stride, int64_t kvd, const int32_t *seq, const int32_t *pos, const float *k,
                           const float *v, int64_t ld) {
    const int64_t i = blockIdx.x;
    const size_t at = layer_at + (size_t)seq[i] * seq_stride, p = (size_t)pos[i];
    float *Kd = K + at + p / KERNEL_KV_TILE * KERNEL_KV_TILE * (size_t)kvd + p % KERNEL_KV_TILE, *Vd = V + at + p * (size_t)kvd;
    for (int64_t e = threadIdx.x; e < kvd; e += blockDim.x) Kd[e * KERNEL_KV_TILE] = k[i * ld + e], Vd[e] = v[i * ld + e];
}

static void kv_check_rows(const kernel_kv *kv, int32_t l, int64_t n, const int32_t *seq, const int32_t *pos, const char *op) {
    if (kv->elem_bytes != 4) die(op, "used before the cache's first kv_begin");
    if (l < 0 || l >= kv->n_layer) die(op, "layer %d outside the cache's %d", (int)l, (int)kv->n_layer);
    if (n > INT32_MAX) die(op, "%lld rows", (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (seq[i] < 0 || seq[i] >= kv->n_seq || pos[i] < 0 || pos[i] >= kv->n_ctx)
            die(op, "row %lld: sequence %d, position %d outside the cache (%d, %d)", (long long)i, (int)seq[i], (int)pos[i], (int)kv->n_seq,
                (int)kv->n_ctx);
}

static void cu_kv_store(kernel_kv *kv, int32_t l, int64_t n, const int32_t *seq, const int32_t *pos, const float *ki, const float *vi, int64_t ld) {
    const char *op = "kv_store";
    if (n <= 0) return;
    kv_check_rows(kv, l, n, seq, pos, op);
    lock_guard g(op);
    const int64_t kvd = kv->kv_dim;
    const size_t rb = span_bytes(n, kvd, ld);
    const float *dk = (const float *)in_dev(&b_a, ki, rb, op), *dv = (const float *)in_dev(&b_b, vi, rb, op);
    const int32_t *dseq = in_idx(&g_seq, seq, n, op), *dpos = in_idx(&g_pos, pos, n, op);
    k_kv_store<<<(unsigned)n, 256>>>((float *)kv->k, (float *)kv->v, (size_t)l * kv->n_seq * kv->seq_stride, kv->seq_stride, kvd, dseq, dpos, dk, dv, ld);
    CK_LAUNCH();
}

// One block per (row, query head): head h reads KV head h / group of its
// row's sequence, keys 0 .. pos; scores in s_stride floats of scratch each.
__global__ void k_kv_attention(const float *K, const float *V, size_t layer_at, size_t seq_stride, int kvd, int d, int n_head, int group,
                               const int32_t *seq, const int32_t *pos, const float *q, int64_t q_stride, float scale, float *out, int64_t out_stride,
                               float *scores, int64_t s_stride) {
    __shared__ float qs[256];
    __shared__ float red[ATT_THREADS];
    const int64_t r = blockIdx.x / n_head;
    const int h = blockIdx.x % n_head, kh = h / group;
    const size_t at = layer_at + (size_t)seq[r] * seq_stride;
    attend_one<false>(q + r * q_stride + (int64_t)h * d, d, pos[r] + 1, K + at + (size_t)kh * d * KERNEL_KV_TILE, (int64_t)KERNEL_KV_TILE * kvd,
                      V + at + (size_t)kh * d, kvd, scale, out + r * out_stride + (int64_t)h * d, scores + (int64_t)blockIdx.x * s_stride, qs, red);
}

// The batch's rows in one launch; q and out in place when they are buf_alloc
// memory.
static void cu_kv_attention(const kernel_kv_rows *a) {
    const char *op = "kv_attention";
    const kernel_kv *kv = a->kv;
    const int64_t n = a->n_rows;
    if (n <= 0) return;
    kv_check_rows(kv, a->layer, n, a->seq, a->pos, op);
    if (a->n_head < 1 || a->n_head % kv->n_head_kv) die(op, "%d query heads for %d KV heads", a->n_head, (int)kv->n_head_kv);
    if (n * a->n_head > INT32_MAX) die(op, "%lld rows of %d heads", (long long)n, a->n_head);
    int32_t maxk = 0;
    for (int64_t i = 0; i < n; i++) maxk = a->pos[i] + 1 > maxk ? a->pos[i] + 1 : maxk;
    lock_guard g(op);
    const int d = kv->head_dim, H = a->n_head;
    const int64_t qw = (int64_t)H * d;
    const size_t ob = span_bytes(n, qw, a->out_stride);
    const float *dq = (const float *)in_dev(&b_a, a->q, span_bytes(n, qw, a->q_stride), op);
    float *dout = (float *)out_dev(&b_d, a->out, ob, op);
    if (dout != a->out && a->out_stride > qw) CK(cudaMemcpy(dout, a->out, ob, cudaMemcpyHostToDevice)); // keep the gaps between rows
    float *ds = (float *)grow(&b_e, sizeof(float) * (size_t)(n * H) * (size_t)maxk, op);
    const int32_t *dseq = in_idx(&g_seq, a->seq, n, op), *dpos = in_idx(&g_pos, a->pos, n, op);
    k_kv_attention<<<(unsigned)(n * H), ATT_THREADS>>>((const float *)kv->k, (const float *)kv->v, (size_t)a->layer * kv->n_seq * kv->seq_stride,
                                                       kv->seq_stride, kv->kv_dim, d, H, H / kv->n_head_kv, dseq, dpos, dq, a->q_stride, a->scale, dout,
                                                       a->out_stride, ds, maxk);
    CK_LAUNCH();
    out_host(a->out, dout, ob, op);
}

// dst's first n_pos positions of every layer become src's, device to device:
// K in whole tiles (the last one's positions past n_pos are src's or zeros,
// never read), V in rows; one copy per layer and array (a strided copy over
// the layers would need pitches of a whole layer, which cudaMemcpy2D caps).
static void cu_kv_copy_prefix(kernel_kv *kv, int32_t dst, int32_t src, int32_t n_pos) {
    const char *op = "kv_copy_prefix";
    if (src == dst || n_pos == 0 || !kv->elem_bytes) return;
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq || n_pos < 0 || n_pos > kv->n_ctx)
        die(op, "sequence %d -> %d, %d positions invalid", (int)src, (int)dst, (int)n_pos);
    lock_guard g(op);
    const size_t row = sizeof(float) * (size_t)kv->kv_dim, seq = sizeof(float) * kv->seq_stride, layer = seq * (size_t)kv->n_seq;
    const size_t nk = ((size_t)n_pos + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE * KERNEL_KV_TILE * row, nv = (size_t)n_pos * row;
    uint8_t *K = (uint8_t *)kv->k, *V = (uint8_t *)kv->v;
    for (int32_t l = 0; l < kv->n_layer; l++) {
        const size_t at = (size_t)l * layer;
        CK(cudaMemcpy(K + at + (size_t)dst * seq, K + at + (size_t)src * seq, nk, cudaMemcpyDeviceToDevice));
        CK(cudaMemcpy(V + at + (size_t)dst * seq, V + at + (size_t)src * seq, nv, cudaMemcpyDeviceToDevice));
    }
}

// ---- training kernels: bodies written once for the device and the host ----
//
// The training ops' kernels are functors: an element-wise one is f(i) for
// i in [0, n) (k_each: a grid-stride loop; on the host a plain loop); a
// block-cooperative one is f(exec, block, shared), a sequence of phases
// (exec.phase), each run by every thread of the block and followed by a
// barrier (tr_dev_exec: the thread's share, then __syncthreads(); on the host
// tr_host_exec runs the threads one after another, which is the same
// computation: within a phase the threads write disjoint elements and read
// only what earlier phases wrote).  Each op's code (below) runs either on
// the device (host false: operands copied to device scratch, kernels
// launched) or, for tests, on the host (host true: the caller's arrays used
// in place, the same functors looped): alphaspin_cuda_train_host's entries
// are these host runs, so the op's index arithmetic, operand layout and
// composition are tested on machines without a GPU; what only a GPU can
// check is the launches, the copies, cuBLAS, and the device's libm.

#define EW_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

template <class F> __global__ void k_each(int64_t n, F f) {
    EW_LOOP(i, n) f(i);
}

struct tr_shared { // a block's shared scratch
    float lanes[TR_LANES];
    float a, b;
};
struct tr_dev_exec {
    int tid, nt;
    template <class F> __host__ __device__ void phase(F f) const {
        f(tid, nt);
#ifdef __CUDA_ARCH__
        __syncthreads();
#endif
    }
};
struct tr_host_exec {
    int nt;
    template <class F> __host__ __device__ void phase(F f) const {
        for (int t = 0; t < nt; t++) f(t, nt);
    }
};

template <class F> __global__ void k_blocks(F f) {
    __shared__ tr_shared sh;
    f(tr_dev_exec{(int)threadIdx.x, (int)blockDim.x}, (int64_t)blockIdx.x, &sh);
}

template <class F> static void run_each(bool host, int64_t n, const F &f, const char *op) {
    if (n <= 0) return;
    if (host) {
        for (int64_t i = 0; i < n; i++) f(i);
        return;
    }
    k_each<<<grid_for(n, 256), 256>>>(n, f);
    CK_LAUNCH();
}

template <class F> static void run_blocks(bool host, int64_t nb, int threads, const F &f, const char *op) {
    if (nb <= 0) return;
    if (host) {
        tr_shared sh;
        for (int64_t b = 0; b < nb; b++) f(tr_host_exec{threads}, b, &sh);
        return;
    }
    if (nb > INT32_MAX) die(op, "%lld blocks", (long long)nb);
    k_blocks<<<(unsigned)nb, threads>>>(f);
    CK_LAUNCH();
}

// A block body over dynamic shared memory (smem bytes; the tiled attention):
// f(exec, block, floats).  On the host one buffer serves the blocks in turn.
template <class F> __global__ void k_tiles(F f) {
    extern __shared__ float tr_dyn[];
    f(tr_dev_exec{(int)threadIdx.x, (int)blockDim.x}, (int64_t)blockIdx.x, tr_dyn);
}

template <class F> static void run_tiles(bool host, int64_t nb, int threads, size_t smem, const F &f, const char *op) {
    if (nb <= 0) return;
    if (host) {
        float *sm = (float *)malloc(smem);
        if (!sm) die(op, "out of host memory");
        for (int64_t b = 0; b < nb; b++) f(tr_host_exec{threads}, b, sm);
        free(sm);
        return;
    }
    if (nb > INT32_MAX) die(op, "%lld blocks", (long long)nb);
    // Past 48 KiB a kernel must opt in (att_bt keeps smem within the device's opt-in limit).
    CK(cudaFuncSetAttribute(k_tiles<F>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    k_tiles<<<(unsigned)nb, threads, smem>>>(f);
    CK_LAUNCH();
}

#define HDF __host__ __device__ void operator()

// A block's softmax statistics over x[0..n) in train_ops.h's lanes: sh->a =
// the max, sh->lanes[l] = lane l's sum of e^(x - max) (e^(x - max) written to
// dst too, unless NULL).  Three phases; the caller folds the sums.
template <class X> __host__ __device__ static inline void tr_max_exp_sum(const X &ex, tr_shared *sh, const float *x, int64_t n, float *dst) {
    ex.phase([&](int l, int) {
        if (l < TR_LANES) sh->lanes[l] = lane_max(x, n, l);
    });
    ex.phase([&](int l, int) {
        if (l == 0) sh->a = fold_max(sh->lanes);
    });
    ex.phase([&](int l, int) {
        if (l < TR_LANES) sh->lanes[l] = lane_exp_sum(x, n, sh->a, l, dst);
    });
}

// out[i] = scale x[i] (the embedding's gathered rows).
struct f_scale_copy {
    float *out;
    const float *x;
    float scale;
    HDF(int64_t i) const { out[i] = scale * x[i]; }
};

// Rows ids[i / C] of E (C wide), times scale, into out: the embedding lookup on
// the device when the table is resident (the same product as f_scale_copy).
struct f_embed_gather {
    float *out;
    const float *E;
    const int32_t *ids;
    int64_t C;
    float scale;
    HDF(int64_t i) const { out[i] = scale * E[(int64_t)ids[i / C] * C + i % C]; }
};

// Row s of rows (C wide) to or from row ids[s] of E: gathers (to_rows) or
// scatters back the rows of distinct ids.
struct f_rows_move {
    float *rows, *E;
    const int32_t *ids;
    int64_t C;
    bool to_rows;
    HDF(int64_t i) const {
        float *e = E + (int64_t)ids[i / C] * C + i % C;
        if (to_rows) rows[i] = *e;
        else *e = rows[i];
    }
};

// Embedding backward: rows (U x C) of dE, one per distinct token; slot s adds
// scale * dout[t] for its tokens t (list[first[s] .. first[s+1]), increasing t) in order.
struct f_embed_bwd {
    float *rows;
    const float *dout;
    const int32_t *first, *list;
    int64_t C;
    float scale;
    HDF(int64_t idx) const {
        const int64_t s = idx / C, j = idx % C;
        float v = rows[idx];
        for (int32_t q = first[s]; q < first[s + 1]; q++) v += scale * dout[(int64_t)list[q] * C + j];
        rows[idx] = v;
    }
};

// RMSNorm forward, one block per row: the sum of squares in double in column
// order by one thread (train_rmsnorm_forward's), then the row.
struct f_rmsnorm_fwd {
    float *out, *rstd;
    const float *x, *w;
    int64_t C;
    float eps;
    template <class X> HDF(const X &ex, int64_t t, tr_shared *sh) const {
        const float *xt = x + t * C;
        ex.phase([&](int tid, int) {
            if (tid) return;
            double ss = 0.0;
            for (int64_t j = 0; j < C; j++) ss += (double)xt[j] * xt[j];
            sh->a = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
            rstd[t] = sh->a;
        });
        ex.phase([&](int tid, int nt) {
            const float r = sh->a;
            for (int64_t j = tid; j < C; j += nt) out[t * C + j] = xt[j] * r * w[j];
        });
    }
};

// dx_j += r dy_j w_j - c x_j, c = r^3 / C sum_k dy_k w_k x_k (the dot in double, in order), a block per row.
struct f_rmsnorm_bwd_dx {
    float *dx;
    const float *dout, *x, *w, *rstd;
    int64_t C;
    template <class X> HDF(const X &ex, int64_t t, tr_shared *sh) const {
        const float *xt = x + t * C, *dy = dout + t * C;
        const float r = rstd[t];
        ex.phase([&](int tid, int) {
            if (tid) return;
            double dot = 0.0;
            for (int64_t j = 0; j < C; j++) dot += (double)dy[j] * w[j] * xt[j];
            sh->a = (float)(dot * (double)r * r * r / (double)C);
        });
        ex.phase([&](int tid, int nt) {
            const float c = sh->a;
            for (int64_t j = tid; j < C; j += nt) dx[t * C + j] += r * dy[j] * w[j] - c * xt[j];
        });
    }
};

// dw_j += sum_t dy_j x_j r: column j's rows summed in order from 0, then added
// (train_rmsnorm_backward's float acc).
struct f_rmsnorm_bwd_dw {
    float *dw;
    const float *dout, *x, *rstd;
    int64_t N, C;
    HDF(int64_t j) const {
        float acc = 0.0f;
        for (int64_t t = 0; t < N; t++) acc += dout[t * C + j] * x[t * C + j] * rstd[t];
        dw[j] += acc;
    }
};

// One RoPE pair (row t, head h, pair i) of x (N, n_heads * d).
struct f_rope {
    float *x;
    const float *cs, *sn;
    int n_heads, d, half;
    bool neox;
    float sign;
    HDF(int64_t idx) const {
        const int64_t t = idx / ((int64_t)n_heads * half);
        const int h = (int)(idx / half % n_heads), i = (int)(idx % half);
        rope_pair(x + (t * n_heads + h) * d, i, half, neox, cs[t * half + i], sn[t * half + i], sign);
    }
};

struct f_glu_fwd {
    float *h;
    const float *g, *u;
    bool gelu;
    HDF(int64_t i) const { h[i] = glu_fwd_elem(g[i], u[i], gelu); }
};

struct f_glu_bwd {
    float *dg, *du;
    const float *dh, *g, *u;
    bool gelu;
    HDF(int64_t i) const { glu_bwd_elem(&dg[i], &du[i], dh[i], g[i], u[i], gelu); }
};

// One block of TR_LANES threads per row: lse = max + log(sum e^(z - max)) in
// train_ops.h's lanes (train_logsoftmax_forward), logp = z[target] - lse.
struct f_lsm_fwd {
    float *logp, *lse;
    const float *z;
    const int32_t *tgt;
    int64_t V;
    template <class X> HDF(const X &ex, int64_t r, tr_shared *sh) const {
        const float *zr = z + r * V;
        tr_max_exp_sum(ex, sh, zr, V, NULL);
        ex.phase([&](int l, int) {
            if (l) return;
            const float L = sh->a + (float)log(fold_sum(sh->lanes));
            lse[r] = L;
            logp[r] = zr[tgt[r]] - L;
        });
    }
};

// dz = fmaf(-g, e^(z - lse), 0), then + g at the target (written).
struct f_lsm_bwd {
    float *dz;
    const float *dlogp, *z, *lse;
    const int32_t *tgt;
    int64_t V;
    HDF(int64_t idx) const {
        const int64_t r = idx / V, j = idx % V;
        float v = neg_scaled_exp_elem(z[idx], dlogp[r], lse[r]);
        if (j == tgt[r]) v += dlogp[r];
        dz[idx] = v;
    }
};

struct f_add {
    float *out;
    const float *a, *b;
    HDF(int64_t i) const { out[i] = a[i] + b[i]; }
};

struct f_scale {
    float *x;
    float c;
    HDF(int64_t i) const { x[i] *= c; }
};

// Dropout, one 16-element word of a row per index (row i's counter base + i
// cols): hashes (storing keep) or replays keep; out = x f, or fmaf(x, f, out) (add).
struct f_dropout {
    float *out;
    const float *x;
    uint16_t *keep;
    int64_t cols;
    uint64_t base;
    uint32_t thresh;
    float keep_scale;
    bool replay, add;
    HDF(int64_t idx) const {
        const int64_t w = (cols + 15) / 16, i = idx / w, j0 = idx % w * 16;
        const uint16_t bits = replay ? keep[idx] : drop_word(base + (uint64_t)(i * cols), j0, cols, thresh);
        if (!replay) keep[idx] = bits;
        for (int64_t j = j0; j < j0 + 16 && j < cols; j++)
            out[i * cols + j] = drop_apply(x[i * cols + j], (bits >> (j % 16)) & 1, keep_scale, out[i * cols + j], add);
    }
};

// C (M x Nc, contiguous) from a fused multiply-add chain per element,
// kernel_sgemm's (gemm.h): acc = fmaf(a(i,k), b(k,j), acc) for k = 0 .. K-1
// from 0, t = alpha acc (alpha 1: acc); mode 0: C = t; 1: C = C + t (fmaf(1,
// C, t)); 2: C = fmaf(t, keep(i,j) ? kscale : 0, C) (lora_gemm.h's dropout of
// rows_wide).  a(i,k) = A[i ai + k ak], b(k,j) = B[k bk + j bj].
typedef struct { int64_t M, Nc, K, ai, ak, bk, bj; } chain_shape;
struct f_chain {
    chain_shape s;
    const float *A, *B;
    float alpha;
    int mode;
    const uint16_t *keep;
    float kscale;
    float *C;
    HDF(int64_t idx) const {
        const int64_t i = idx / s.Nc, j = idx % s.Nc;
        const float *a = A + i * s.ai, *b = B + j * s.bj;
        float acc = 0.0f;
        for (int64_t k = 0; k < s.K; k++) acc = fmaf(a[k * s.ak], b[k * s.bk], acc);
        const float t = alpha == 1.0f ? acc : alpha * acc;
        if (mode == 0) C[idx] = t;
        else if (mode == 1) C[idx] = C[idx] + t;
        else C[idx] = fmaf(t, (keep[i * ((s.Nc + 15) / 16) + j / 16] >> (j % 16)) & 1 ? kscale : 0.0f, C[idx]);
    }
};

// ---- training attention: flash-style tiles, O(T) memory per head ----
//
// A sequence's rows are cut into tiles of bt rows (the last one short); a
// block holds one query tile (forward, dq) or one key tile (dk, dv) of one
// head in shared memory and walks the tiles of the other side, so no score
// matrix exists beyond a bt x bt block.  Rows of d floats are padded to
// d + 1 in shared memory: the threads of a warp walk keys c with stride
// d + 1 (distinct banks) and read one query row (a broadcast).
//   forward: online softmax over key tiles (running max m and sum l per row,
//     O rescaled by e^(m_old - m_new)), then out = O / l, lse = m + log l;
//   backward: D_i = dO_i.O_i (f_att_d), P_ij = e^(s_ij - lse_i) recomputed,
//     dS_ij = P_ij (dO_i.v_j - D_i) scale; dq per query tile over its key
//     tiles; dk and dv per key tile over the query tiles at and after it,
//     for each head of the K/V group in head order (so no atomics).
// Every element is one thread's chain in a fixed order (the host run gives
// the device's bits, libm's log aside), but not the CPU's order: the CPU
// normalises p before P V and sums e^x in double, so the two agree to fp32
// rounding, not bitwise (test_cuda_train_host's tolerance).

#define TR_ATT_THREADS 128

// Per tile: the sequence's first row, its length, the tile's first row in it.
struct att_tile { int32_t t0, T, i0; };

HD int att_ld(int d) { return d + 1; }
// Shared floats of each kernel (f_att_fwd, f_att_dq, f_att_dkv's layouts).
HD int64_t att_fwd_floats(int bt, int d) { return 3 * (int64_t)bt * att_ld(d) + (int64_t)bt * bt + (int64_t)bt * d + 3 * bt; }
HD int64_t att_dq_floats(int bt, int d) { return 4 * (int64_t)bt * att_ld(d) + (int64_t)bt * bt + (int64_t)bt * d + 2 * bt; }
HD int64_t att_dkv_floats(int bt, int d) { return 4 * (int64_t)bt * att_ld(d) + 2 * (int64_t)bt * bt + 2 * (int64_t)bt * d + 2 * bt; }

// Thread tid's share of copying n rows of d floats (stride ld_src) into shared rows of att_ld(d).
HD void att_load(int tid, int nt, float *dst, const float *src, int64_t ld_src, int n, int d) {
    for (int x = tid; x < n * d; x += nt) dst[(x / d) * att_ld(d) + x % d] = src[(int64_t)(x / d) * ld_src + x % d];
}

// a.b over d floats, one fused multiply-add chain in order.
HD float att_dot(const float *a, const float *b, int d) {
    float acc = 0.0f;
    for (int e = 0; e < d; e++) acc = fmaf(a[e], b[e], acc);
    return acc;
}

// Forward, one block per (query tile, head): blk = tile * H + h.
struct f_att_fwd {
    float *out, *lse;
    const float *q, *k, *v;
    const att_tile *tiles;
    int H, group, d, bt;
    float scale;
    template <class X> HDF(const X &ex, int64_t blk, float *sm) const {
        const att_tile tl = tiles[blk / H];
        const int h = (int)(blk % H), g = h / group, ld = att_ld(d);
        const int nq = tl.T - tl.i0 < bt ? tl.T - tl.i0 : bt;
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)(H / group) * d, r0 = (int64_t)tl.t0 + tl.i0;
        const float *K = k + (int64_t)tl.t0 * kvd + (int64_t)g * d, *Vv = v + (int64_t)tl.t0 * kvd + (int64_t)g * d;
        float *Qs = sm, *Ks = Qs + bt * ld, *Vs = Ks + bt * ld, *S = Vs + bt * ld, *O = S + bt * bt, *m = O + bt * d, *l = m + bt, *al = l + bt;
        ex.phase([&](int tid, int nt) {
            att_load(tid, nt, Qs, q + r0 * qd + (int64_t)h * d, qd, nq, d);
            for (int x = tid; x < nq * d; x += nt) O[x] = 0.0f;
            for (int r = tid; r < nq; r += nt) m[r] = -INFINITY, l[r] = 0.0f;
        });
        for (int j0 = 0; j0 < tl.i0 + nq; j0 += bt) { // the key tiles some row of the tile sees
            const int nk = tl.i0 + nq - j0 < bt ? tl.i0 + nq - j0 : bt;
            ex.phase([&](int tid, int nt) {
                att_load(tid, nt, Ks, K + (int64_t)j0 * kvd, kvd, nk, d);
                att_load(tid, nt, Vs, Vv + (int64_t)j0 * kvd, kvd, nk, d);
            });
            ex.phase([&](int tid, int nt) { // scores of the visible keys j0 + c <= i0 + r
                for (int x = tid; x < nq * bt; x += nt) {
                    const int r = x / bt, c = x % bt;
                    if (c < nk && j0 + c <= tl.i0 + r) S[x] = scale * att_dot(Qs + r * ld, Ks + c * ld, d);
                }
            });
            ex.phase([&](int tid, int nt) { // per row: new max, p = e^(s - m), rescale of the old sum
                for (int r = tid; r < nq; r += nt) {
                    float *s = S + r * bt;
                    const int w = tl.i0 + r - j0 + 1 < nk ? tl.i0 + r - j0 + 1 : nk; // visible keys of this tile
                    float mx = m[r];
                    for (int c = 0; c < w; c++) mx = s[c] > mx ? s[c] : mx;
                    float sum = 0.0f;
                    for (int c = 0; c < nk; c++) {
                        s[c] = c < w ? tr_expf(s[c] - mx) : 0.0f;
                        sum += s[c];
                    }
                    // e^(-inf) is 0, not tr_expf's clamped 1e-38; w <= 0 leaves the row as it was.
                    const float a = w <= 0 ? 1.0f : m[r] == -INFINITY ? 0.0f : tr_expf(m[r] - mx);
                    l[r] = l[r] * a + sum, m[r] = w <= 0 ? m[r] : mx, al[r] = a;
                }
            });
            ex.phase([&](int tid, int nt) { // O = a O + P V
                for (int x = tid; x < nq * d; x += nt) {
                    const int r = x / d, e = x % d;
                    float acc = 0.0f;
                    for (int c = 0; c < nk; c++) acc = fmaf(S[r * bt + c], Vs[c * ld + e], acc);
                    O[x] = O[x] * al[r] + acc;
                }
            });
        }
        ex.phase([&](int tid, int nt) {
            for (int x = tid; x < nq * d; x += nt) out[(r0 + x / d) * qd + (int64_t)h * d + x % d] = div_rn(O[x], l[x / d]);
            for (int r = tid; r < nq; r += nt) lse[(r0 + r) * H + h] = m[r] + (float)log((double)l[r]);
        });
    }
};

// D[t * H + h] = dO.O of row t, head h (a float chain, train_graph.c's dot_f).
struct f_att_d {
    float *D;
    const float *dO, *O;
    int d;
    HDF(int64_t idx) const {
        const float *a = dO + idx * d, *b = O + idx * d;
        float s = 0.0f;
        for (int e = 0; e < d; e++) s += a[e] * b[e];
        D[idx] = s;
    }
};

// P_rc and dS_rc of a query row (q, dO, its lse L and D) and a key (k, v).
HD void att_p_ds(float *p, float *ds, const float *qr, const float *dor, const float *kc, const float *vc, float L, float D, int d, float scale) {
    const float pp = tr_expf(scale * att_dot(qr, kc, d) - L);
    *p = pp, *ds = pp * (att_dot(dor, vc, d) - D) * scale;
}

// dq, one block per (query tile, head): blk = tile * H + h.
struct f_att_dq {
    float *dq;
    const float *q, *k, *v, *dO, *lse, *D;
    const att_tile *tiles;
    int H, group, d, bt;
    float scale;
    template <class X> HDF(const X &ex, int64_t blk, float *sm) const {
        const att_tile tl = tiles[blk / H];
        const int h = (int)(blk % H), g = h / group, ld = att_ld(d);
        const int nq = tl.T - tl.i0 < bt ? tl.T - tl.i0 : bt;
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)(H / group) * d, r0 = (int64_t)tl.t0 + tl.i0;
        const float *K = k + (int64_t)tl.t0 * kvd + (int64_t)g * d, *Vv = v + (int64_t)tl.t0 * kvd + (int64_t)g * d;
        float *Qs = sm, *dOs = Qs + bt * ld, *Ks = dOs + bt * ld, *Vs = Ks + bt * ld, *dS = Vs + bt * ld, *dQ = dS + bt * bt;
        float *Ls = dQ + bt * d, *Ds = Ls + bt;
        ex.phase([&](int tid, int nt) {
            att_load(tid, nt, Qs, q + r0 * qd + (int64_t)h * d, qd, nq, d);
            att_load(tid, nt, dOs, dO + r0 * qd + (int64_t)h * d, qd, nq, d);
            for (int x = tid; x < nq * d; x += nt) dQ[x] = 0.0f;
            for (int r = tid; r < nq; r += nt) Ls[r] = lse[(r0 + r) * H + h], Ds[r] = D[(r0 + r) * H + h];
        });
        for (int j0 = 0; j0 < tl.i0 + nq; j0 += bt) {
            const int nk = tl.i0 + nq - j0 < bt ? tl.i0 + nq - j0 : bt;
            ex.phase([&](int tid, int nt) {
                att_load(tid, nt, Ks, K + (int64_t)j0 * kvd, kvd, nk, d);
                att_load(tid, nt, Vs, Vv + (int64_t)j0 * kvd, kvd, nk, d);
            });
            ex.phase([&](int tid, int nt) {
                for (int x = tid; x < nq * bt; x += nt) {
                    const int r = x / bt, c = x % bt;
                    float p = 0.0f, ds = 0.0f;
                    if (c < nk && j0 + c <= tl.i0 + r)
                        att_p_ds(&p, &ds, Qs + r * ld, dOs + r * ld, Ks + c * ld, Vs + c * ld, Ls[r], Ds[r], d, scale);
                    dS[x] = ds;
                }
            });
            ex.phase([&](int tid, int nt) { // dQ += dS K
                for (int x = tid; x < nq * d; x += nt) {
                    const int r = x / d, e = x % d;
                    float acc = 0.0f;
                    for (int c = 0; c < nk; c++) acc = fmaf(dS[r * bt + c], Ks[c * ld + e], acc);
                    dQ[x] = dQ[x] + acc;
                }
            });
        }
        ex.phase([&](int tid, int nt) {
            for (int x = tid; x < nq * d; x += nt) {
                float *o = dq + (r0 + x / d) * qd + (int64_t)h * d + x % d;
                *o = *o + dQ[x];
            }
        });
    }
};

// dk and dv, one block per (key tile, K/V head): blk = tile * Hkv + g.  The
// heads of the group in order, each over the query tiles from this one on
// (earlier queries do not see these keys).
struct f_att_dkv {
    float *dk, *dv;
    const float *q, *k, *v, *dO, *lse, *D;
    const att_tile *tiles;
    int H, group, d, bt;
    float scale;
    template <class X> HDF(const X &ex, int64_t blk, float *sm) const {
        const int Hkv = H / group;
        const att_tile tl = tiles[blk / Hkv];
        const int g = (int)(blk % Hkv), ld = att_ld(d), j0 = tl.i0;
        const int nk = tl.T - tl.i0 < bt ? tl.T - tl.i0 : bt;
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d, k0 = (int64_t)tl.t0 + j0;
        float *Ks = sm, *Vs = Ks + bt * ld, *Qs = Vs + bt * ld, *dOs = Qs + bt * ld, *P = dOs + bt * ld, *dS = P + bt * bt;
        float *dK = dS + bt * bt, *dV = dK + bt * d, *Ls = dV + bt * d, *Ds = Ls + bt;
        ex.phase([&](int tid, int nt) {
            att_load(tid, nt, Ks, k + k0 * kvd + (int64_t)g * d, kvd, nk, d);
            att_load(tid, nt, Vs, v + k0 * kvd + (int64_t)g * d, kvd, nk, d);
            for (int x = tid; x < nk * d; x += nt) dK[x] = dV[x] = 0.0f;
        });
        for (int h = g * group; h < (g + 1) * group; h++)
            for (int i0 = j0; i0 < tl.T; i0 += bt) {
                const int nq = tl.T - i0 < bt ? tl.T - i0 : bt;
                const int64_t r0 = (int64_t)tl.t0 + i0;
                ex.phase([&](int tid, int nt) {
                    att_load(tid, nt, Qs, q + r0 * qd + (int64_t)h * d, qd, nq, d);
                    att_load(tid, nt, dOs, dO + r0 * qd + (int64_t)h * d, qd, nq, d);
                    for (int r = tid; r < nq; r += nt) Ls[r] = lse[(r0 + r) * H + h], Ds[r] = D[(r0 + r) * H + h];
                });
                ex.phase([&](int tid, int nt) {
                    for (int x = tid; x < nq * bt; x += nt) {
                        const int r = x / bt, c = x % bt;
                        float p = 0.0f, ds = 0.0f;
                        if (c < nk && j0 + c <= i0 + r)
                            att_p_ds(&p, &ds, Qs + r * ld, dOs + r * ld, Ks + c * ld, Vs + c * ld, Ls[r], Ds[r], d, scale);
                        P[x] = p, dS[x] = ds;
                    }
                });
                ex.phase([&](int tid, int nt) { // dK += dS^T Q, dV += P^T dO
                    for (int x = tid; x < nk * d; x += nt) {
                        const int c = x / d, e = x % d;
                        float ak = 0.0f, av = 0.0f;
                        for (int r = 0; r < nq; r++) {
                            ak = fmaf(dS[r * bt + c], Qs[r * ld + e], ak);
                            av = fmaf(P[r * bt + c], dOs[r * ld + e], av);
                        }
                        dK[x] = dK[x] + ak, dV[x] = dV[x] + av;
                    }
                });
            }
        ex.phase([&](int tid, int nt) {
            for (int x = tid; x < nk * d; x += nt) {
                const int64_t o = (k0 + x / d) * kvd + (int64_t)g * d + x % d;
                dk[o] = dk[o] + dK[x], dv[o] = dv[o] + dV[x];
            }
        });
    }
};

struct f_adamw {
    float *p, *m, *v;
    const float *g;
    adamw_k k;
    HDF(int64_t i) const { adamw_elem(&p[i], g[i], &m[i], &v[i], k); }
};
struct f_rmsprop {
    float *p, *v;
    const float *g;
    float lr, a, eps, wd;
    HDF(int64_t i) const { rmsprop_elem(&p[i], g[i], &v[i], lr, a, eps, wd); }
};
struct f_sgd {
    float *p, *m;
    const float *g;
    float lr, mu, wd;
    int64_t t;
    HDF(int64_t i) const { sgd_elem(&p[i], g[i], m ? &m[i] : NULL, lr, mu, wd, t); }
};
struct f_sumsq {
    double *part;
    const float *x;
    size_t n;
    HDF(int64_t b) const { part[b] = sumsq_block(x, n, (size_t)b); }
};

// ---- training ops ----
//
// Each op's body takes `host`: false on the device (the cu_ entry, under the
// lock: buf_alloc operands used in place, others copied to device scratch,
// kernels launched, results written in place or copied back; an op that used
// managed memory waits for its kernels at its end, g_tr_wait), true on the
// host for tests (the caller's arrays used in place and host scratch, the
// same functors looped; see cuda_host_check.h).  t_in: an operand read or
// accumulated into; t_dst: one written whole; t_tmp: real scratch only.

// Scratch of the training ops, grown as needed and kept (one slot per
// operand): device buffers, and host ones for the host runs.
static dbuf g_tr[12];
static void *g_htr[12];
static size_t g_htr_cap[12];

#define FB(n) (sizeof(float) * (size_t)(n))

// An operand read (or accumulated into): on the device x itself when it is
// buf_alloc memory (resident), else its copy in scratch; on the host the array itself.
static void *t_in(bool host, int slot, const void *x, size_t bytes, const char *op) {
    if (host) return (void *)x;
    if (is_managed(x)) return g_tr_wait = true, (void *)x;
    void *d = grow(&g_tr[slot], bytes > 0 ? bytes : 4, op);
    if (bytes > 0) CK(cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice));
    return d;
}
// Scratch of `bytes` (contents undefined).
static void *t_tmp(bool host, int slot, size_t bytes, const char *op) {
    if (!host) return grow(&g_tr[slot], bytes > 0 ? bytes : 4, op);
    if (bytes > g_htr_cap[slot]) {
        free(g_htr[slot]);
        g_htr[slot] = malloc(bytes);
        if (!g_htr[slot]) die(op, "out of host memory");
        g_htr_cap[slot] = bytes;
    }
    return g_htr[slot];
}
// Where an op writes all `bytes` of x: on the device x itself when it is
// buf_alloc memory, else scratch (t_tmp's), which t_out then copies to x.
static void *t_dst(bool host, int slot, void *x, size_t bytes, const char *op) {
    if (!host && x && is_managed(x)) return g_tr_wait = true, x;
    return t_tmp(host, slot, bytes, op);
}
// A result back into x (from a copy or scratch; nothing when it is x itself).
static void t_out(bool host, void *x, const void *d, size_t bytes, const char *op) {
    if (bytes == 0 || x == d) return;
    if (host) memcpy(x, d, bytes);
    else CK(cudaMemcpy(x, d, bytes, cudaMemcpyDeviceToHost));
}

static void check_int(int64_t v, const char *what, const char *op) {
    if (v < 0 || v > INT32_MAX) die(op, "%s %lld: outside a cuBLAS int", what, (long long)v);
}

// C = alpha op(A) op(B) + beta C on device operands, row-major with leading
// dimensions (cuBLAS's column-major C^T = op(B)^T op(A)^T).  beta 0: C is not read.
static void dev_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                      float beta, float *C, int64_t ldc, const char *op) {
    check_int(M, "M", op), check_int(N, "N", op), check_int(K, "K", op);
    check_int(lda, "lda", op), check_int(ldb, "ldb", op), check_int(ldc, "ldc", op);
    CKB(cublasSgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B,
                    (int)(ldb > 0 ? ldb : 1), A, (int)(lda > 0 ? lda : 1), &beta, C, (int)(ldc > 0 ? ldc : 1)));
}

// The table's row count is not passed (V unknown): the N rows of E are
// gathered on the host and uploaded together.
static void embedding_forward_run(bool host, float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale) {
    const char *op = "embedding_forward";
    if (!host && is_managed(E)) { // a resident table: gathered on the device
        const int32_t *dt = (const int32_t *)t_in(host, 0, tok, sizeof(int32_t) * (size_t)N, op);
        float *o = (float *)t_dst(host, 1, out, FB(N * C), op);
        g_tr_wait = true; // E is read in place
        run_each(host, N * C, f_embed_gather{o, E, dt, C, scale}, op);
        t_out(host, out, o, FB(N * C), op);
        return;
    }
    float *rows = (float *)malloc(FB(N * C));
    if (!rows) die(op, "out of host memory");
    for (int64_t t = 0; t < N; t++) memcpy(rows + t * C, E + (int64_t)tok[t] * C, FB(C));
    float *d = (float *)t_in(host, 0, rows, FB(N * C), op), *o = (float *)t_dst(host, 1, out, FB(N * C), op);
    run_each(host, N * C, f_scale_copy{o, d, scale}, op);
    t_out(host, out, o, FB(N * C), op);
    free(rows);
}

// dE's rows of the distinct tokens travel (V is not passed; gathered into
// scratch and scattered back on the device when dE is resident); each adds
// its tokens' rows of dout in token order, as the CPU's serial loop.
static void embedding_backward_run(bool host, float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale) {
    const char *op = "embedding_backward";
    if (N > INT32_MAX) die(op, "%lld rows", (long long)N);
    // Distinct tokens (slots, in order of first use) and, per slot, its rows in increasing order.
    int32_t *slot_tok = (int32_t *)malloc(sizeof(int32_t) * (size_t)N), *slot_of = (int32_t *)malloc(sizeof(int32_t) * (size_t)N);
    int32_t *first = (int32_t *)calloc((size_t)N + 2, sizeof(int32_t)), *list = (int32_t *)malloc(sizeof(int32_t) * (size_t)N);
    int32_t *fill_at = (int32_t *)malloc(sizeof(int32_t) * ((size_t)N + 1));
    if (!slot_tok || !slot_of || !first || !list || !fill_at) die(op, "out of host memory");
    int64_t U = 0;
    for (int64_t t = 0; t < N; t++) { // quadratic in the distinct tokens, but N is a batch's rows
        int64_t s = 0;
        while (s < U && slot_tok[s] != tok[t]) s++;
        if (s == U) slot_tok[U++] = tok[t];
        slot_of[t] = (int32_t)s;
        first[s + 1]++;
    }
    for (int64_t s = 0; s < U; s++) first[s + 1] += first[s];
    for (int64_t s = 0; s <= U; s++) fill_at[s] = first[s];
    for (int64_t t = 0; t < N; t++) list[fill_at[slot_of[t]]++] = (int32_t)t;
    const bool resident = !host && is_managed(dE);
    float *rows = NULL, *dr;
    const int32_t *dids = NULL;
    if (resident) {
        dr = (float *)t_tmp(host, 0, FB(U * C), op);
        dids = (const int32_t *)t_in(host, 4, slot_tok, sizeof(int32_t) * (size_t)U, op);
        g_tr_wait = true;
        run_each(host, U * C, f_rows_move{dr, dE, dids, C, true}, op);
    }
    else {
        rows = (float *)malloc(FB(U * C));
        if (!rows) die(op, "out of host memory");
        for (int64_t s = 0; s < U; s++) memcpy(rows + s * C, dE + (int64_t)slot_tok[s] * C, FB(C));
        dr = (float *)t_in(host, 0, rows, FB(U * C), op);
    }
    float *dd = (float *)t_in(host, 1, dout, FB(N * C), op);
    int32_t *df = (int32_t *)t_in(host, 2, first, sizeof(int32_t) * (size_t)(U + 1), op);
    int32_t *dl = (int32_t *)t_in(host, 3, list, sizeof(int32_t) * (size_t)N, op);
    run_each(host, U * C, f_embed_bwd{dr, dd, df, dl, C, scale}, op);
    if (resident) run_each(host, U * C, f_rows_move{dr, dE, dids, C, false}, op);
    else {
        t_out(host, rows, dr, FB(U * C), op);
        for (int64_t s = 0; s < U; s++) memcpy(dE + (int64_t)slot_tok[s] * C, rows + s * C, FB(C));
    }
    free(rows), free(slot_tok), free(slot_of), free(first), free(list), free(fill_at);
}

static void rmsnorm_forward_run(bool host, float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps) {
    const char *op = "rmsnorm_forward";
    float *dx = (float *)t_in(host, 0, x, FB(N * C), op), *dw = (float *)t_in(host, 1, w, FB(C), op);
    float *dy = (float *)t_dst(host, 2, out, FB(N * C), op), *dr = (float *)t_dst(host, 3, rstd, FB(N), op);
    run_blocks(host, N, 256, f_rmsnorm_fwd{dy, dr, dx, dw, C, eps}, op);
    t_out(host, out, dy, FB(N * C), op);
    t_out(host, rstd, dr, FB(N), op);
}

static void rmsnorm_backward_run(bool host, float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N,
                                 int64_t C) {
    const char *op = "rmsnorm_backward";
    float *ddo = (float *)t_in(host, 0, dout, FB(N * C), op), *dxx = (float *)t_in(host, 1, x, FB(N * C), op);
    float *dr = (float *)t_in(host, 2, rstd, FB(N), op);
    if (dx) {
        float *dww = (float *)t_in(host, 3, w, FB(C), op), *ddx = (float *)t_in(host, 4, dx, FB(N * C), op);
        run_blocks(host, N, 256, f_rmsnorm_bwd_dx{ddx, ddo, dxx, dww, dr, C}, op);
        t_out(host, dx, ddx, FB(N * C), op);
    }
    if (dw) {
        float *ddw = (float *)t_in(host, 5, dw, FB(C), op);
        run_each(host, C, f_rmsnorm_bwd_dw{ddw, ddo, dxx, dr, N, C}, op);
        t_out(host, dw, ddw, FB(C), op);
    }
}

static void rope_run(bool host, float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign,
                     const char *op) {
    if (n_rot > d) die(op, "n_rot %d > d %d", n_rot, d);
    const int64_t n = N * n_heads * d, half = n_rot / 2;
    float *dx = (float *)t_in(host, 0, x, FB(n), op), *dc = (float *)t_in(host, 1, cs, FB(N * half), op);
    float *ds = (float *)t_in(host, 2, sn, FB(N * half), op);
    run_each(host, N * n_heads * half, f_rope{dx, dc, ds, n_heads, d, (int)half, neox, sign}, op);
    t_out(host, x, dx, FB(n), op);
}

// The tiles of the sequences (each cut into tiles of bt rows, the last one
// short; malloc'd) and n_rows, the end of the last sequence.
static att_tile *att_tiles_of(const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int bt, int64_t *n_tiles, int64_t *n_rows,
                              const char *op) {
    *n_tiles = 0, *n_rows = 0;
    for (int32_t b = 0; b < n_seq; b++) {
        if (seq_off[b] < 0 || seq_len[b] < 0) die(op, "sequence %d: offset %d, length %d", (int)b, (int)seq_off[b], (int)seq_len[b]);
        const int64_t end = (int64_t)seq_off[b] + seq_len[b];
        *n_rows = end > *n_rows ? end : *n_rows;
        *n_tiles += (seq_len[b] + bt - 1) / bt;
    }
    att_tile *t = (att_tile *)malloc(sizeof(att_tile) * (size_t)(*n_tiles > 0 ? *n_tiles : 1));
    if (!t) die(op, "out of host memory");
    int64_t n = 0;
    for (int32_t b = 0; b < n_seq; b++)
        for (int32_t i0 = 0; i0 < seq_len[b]; i0 += bt) t[n++] = att_tile{seq_off[b], seq_len[b], i0};
    return t;
}

// Rows per tile: 32, or 16 past head_dim 128 (shared memory grows as bt d:
// about 105 KB for f_att_dkv at d 128 and at d 256), halved while f_att_dkv,
// the largest, exceeds what the device lets a block opt in to.  The host run
// takes the same rule (no limit), so it follows a GPU's order wherever the
// rule fits (sm_80 and later).
static int att_bt(bool host, int d, const char *op) {
    int bt = d <= 128 ? 32 : 16;
    if (host) return bt;
    int dev, lim;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&lim, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    while (bt > 1 && FB(att_dkv_floats(bt, d)) > (size_t)lim) bt /= 2;
    if (FB(att_dkv_floats(bt, d)) > (size_t)lim)
        die(op, "head_dim %d: a 1-row tile needs %zu bytes of shared memory, the device allows %d", d, FB(att_dkv_floats(1, d)), lim);
    return bt;
}

static void attention_forward_run(bool host, float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off,
                                  const int32_t *seq_len, int32_t n_seq, int H, int Hkv, int d) {
    const char *op = "attention_forward";
    if (H <= 0 || Hkv <= 0 || H % Hkv || d <= 0) die(op, "%d heads over %d KV heads of %d", H, Hkv, d);
    const int bt = att_bt(host, d, op);
    int64_t n_tiles, n_rows;
    att_tile *tiles = att_tiles_of(seq_off, seq_len, n_seq, bt, &n_tiles, &n_rows, op);
    if (n_tiles > 0) {
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d;
        float *dq = (float *)t_in(host, 0, q, FB(n_rows * qd), op), *dk = (float *)t_in(host, 1, k, FB(n_rows * kvd), op);
        float *dv = (float *)t_in(host, 2, v, FB(n_rows * kvd), op);
        // out and lse in place (rows outside every sequence keep their values).
        float *dout = (float *)t_in(host, 3, out, FB(n_rows * qd), op), *dl = (float *)t_in(host, 4, lse, FB(n_rows * H), op);
        const att_tile *dt = (const att_tile *)t_in(host, 5, tiles, sizeof(att_tile) * (size_t)n_tiles, op);
        run_tiles(host, n_tiles * H, TR_ATT_THREADS, FB(att_fwd_floats(bt, d)),
                  f_att_fwd{dout, dl, dq, dk, dv, dt, H, H / Hkv, d, bt, 1.0f / sqrtf((float)d)}, op);
        t_out(host, out, dout, FB(n_rows * qd), op);
        t_out(host, lse, dl, FB(n_rows * H), op);
    }
    free(tiles);
}

// D for every row (gap rows too: unread), then dq by query tiles, then dk
// and dv by key tiles; beyond the operands, O(T) memory (D and the tiles).
static void attention_backward_run(bool host, float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                   const float *q, const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len,
                                   int32_t n_seq, int H, int Hkv, int d) {
    const char *op = "attention_backward";
    if (H <= 0 || Hkv <= 0 || H % Hkv || d <= 0) die(op, "%d heads over %d KV heads of %d", H, Hkv, d);
    const int bt = att_bt(host, d, op);
    int64_t n_tiles, n_rows;
    att_tile *tiles = att_tiles_of(seq_off, seq_len, n_seq, bt, &n_tiles, &n_rows, op);
    if (n_tiles > 0) {
        const int64_t qd = (int64_t)H * d, kvd = (int64_t)Hkv * d;
        const float scale = 1.0f / sqrtf((float)d);
        float *Dq = (float *)t_in(host, 0, q, FB(n_rows * qd), op), *Dk = (float *)t_in(host, 1, k, FB(n_rows * kvd), op);
        float *Dv = (float *)t_in(host, 2, v, FB(n_rows * kvd), op), *DdO = (float *)t_in(host, 3, dout, FB(n_rows * qd), op);
        float *DO = (float *)t_in(host, 4, out, FB(n_rows * qd), op), *Dl = (float *)t_in(host, 5, lse, FB(n_rows * H), op);
        float *Ddq = (float *)t_in(host, 6, dq, FB(n_rows * qd), op), *Ddk = (float *)t_in(host, 7, dk, FB(n_rows * kvd), op);
        float *Ddv = (float *)t_in(host, 8, dv, FB(n_rows * kvd), op);
        const att_tile *dt = (const att_tile *)t_in(host, 9, tiles, sizeof(att_tile) * (size_t)n_tiles, op);
        float *D = (float *)t_tmp(host, 10, FB(n_rows * H), op);
        run_each(host, n_rows * H, f_att_d{D, DdO, DO, d}, op);
        run_tiles(host, n_tiles * H, TR_ATT_THREADS, FB(att_dq_floats(bt, d)),
                  f_att_dq{Ddq, Dq, Dk, Dv, DdO, Dl, D, dt, H, H / Hkv, d, bt, scale}, op);
        run_tiles(host, n_tiles * Hkv, TR_ATT_THREADS, FB(att_dkv_floats(bt, d)),
                  f_att_dkv{Ddk, Ddv, Dq, Dk, Dv, DdO, Dl, D, dt, H, H / Hkv, d, bt, scale}, op);
        t_out(host, dq, Ddq, FB(n_rows * qd), op);
        t_out(host, dk, Ddk, FB(n_rows * kvd), op);
        t_out(host, dv, Ddv, FB(n_rows * kvd), op);
    }
    free(tiles);
}

static void glu_forward_run(bool host, float *h, const float *gg, const float *u, int64_t n, bool gelu) {
    const char *op = "glu_forward";
    float *dg = (float *)t_in(host, 0, gg, FB(n), op), *du = (float *)t_in(host, 1, u, FB(n), op), *dh = (float *)t_dst(host, 2, h, FB(n), op);
    run_each(host, n, f_glu_fwd{dh, dg, du, gelu}, op);
    t_out(host, h, dh, FB(n), op);
}

static void glu_backward_run(bool host, float *dgo, float *duo, const float *dh, const float *gg, const float *u, int64_t n, bool gelu) {
    const char *op = "glu_backward";
    float *ddh = (float *)t_in(host, 0, dh, FB(n), op), *dg = (float *)t_in(host, 1, gg, FB(n), op), *du = (float *)t_in(host, 2, u, FB(n), op);
    float *og = (float *)t_dst(host, 3, dgo, FB(n), op), *ou = (float *)t_dst(host, 4, duo, FB(n), op);
    run_each(host, n, f_glu_bwd{og, ou, ddh, dg, du, gelu}, op);
    t_out(host, dgo, og, FB(n), op);
    t_out(host, duo, ou, FB(n), op);
}

static void logsoftmax_forward_run(bool host, float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V) {
    const char *op = "logsoftmax_forward";
    float *dz = (float *)t_in(host, 0, logits, FB(rows * V), op);
    int32_t *dt = (int32_t *)t_in(host, 1, target, sizeof(int32_t) * (size_t)rows, op);
    float *olp = (float *)t_dst(host, 2, logp, FB(rows), op), *ol = (float *)t_dst(host, 3, lse, FB(rows), op);
    run_blocks(host, rows, TR_LANES, f_lsm_fwd{olp, ol, dz, dt, V}, op);
    t_out(host, logp, olp, FB(rows), op);
    t_out(host, lse, ol, FB(rows), op);
}

static void logsoftmax_backward_run(bool host, float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target,
                                    int64_t rows, int64_t V) {
    const char *op = "logsoftmax_backward";
    float *dz = (float *)t_in(host, 0, logits, FB(rows * V), op), *dg = (float *)t_in(host, 1, dlogp, FB(rows), op);
    float *dl = (float *)t_in(host, 2, lse, FB(rows), op);
    int32_t *dt = (int32_t *)t_in(host, 3, target, sizeof(int32_t) * (size_t)rows, op);
    float *o = (float *)t_dst(host, 4, dlogits, FB(rows * V), op);
    run_each(host, rows * V, f_lsm_bwd{o, dg, dz, dl, dt, V}, op);
    t_out(host, dlogits, o, FB(rows * V), op);
}

static void residual_forward_run(bool host, float *out, const float *a, const float *b, int64_t n) {
    const char *op = "residual_forward";
    float *da = (float *)t_in(host, 0, a, FB(n), op), *db = (float *)t_in(host, 1, b, FB(n), op), *o = (float *)t_dst(host, 2, out, FB(n), op);
    run_each(host, n, f_add{o, da, db}, op); // out may be a: one element each, in place
    t_out(host, out, o, FB(n), op);
}

static float keep_scale_of(const as_dropout *drop) { return 1.0f / (1.0f - drop->p); }

// drop(x) of rows x cols into dst (x and dst device memory, or host on a host
// run): hashes (storing the keep bits, copied back to drop->keep) or replays
// them.  Returns the bits' device copy (or drop->keep on the host).
static uint16_t *dropout_into(bool host, float *dst, const float *dx, int64_t rows, int64_t cols, const as_dropout *drop, bool replay, bool add,
                              int keep_slot, const char *op) {
    const int64_t w = (cols + 15) / 16;
    const size_t kb = sizeof(uint16_t) * (size_t)(rows * w);
    uint16_t *dk = replay || host ? (uint16_t *)t_in(host, keep_slot, drop->keep, kb, op) : (uint16_t *)t_dst(host, keep_slot, drop->keep, kb, op);
    run_each(host, rows * w, f_dropout{dst, dx, dk, cols, drop->base, drop_thresh(drop->p), keep_scale_of(drop), replay, add}, op);
    if (!replay) t_out(host, drop->keep, dk, kb, op);
    return dk;
}

static void dropout_forward_run(bool host, float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop) {
    const char *op = "dropout_forward";
    float *dx = (float *)t_in(host, 0, x, FB(rows * cols), op), *o = (float *)t_dst(host, 1, out, FB(rows * cols), op);
    dropout_into(host, o, dx, rows, cols, drop, drop->replay, false, 2, op);
    t_out(host, out, o, FB(rows * cols), op);
}

// dx += drop'(dout) = fmaf(dout, keep ? scale : 0, dx), from the stored bits.
static void dropout_backward_run(bool host, float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop) {
    const char *op = "dropout_backward";
    float *dd = (float *)t_in(host, 0, dout, FB(rows * cols), op), *ddx = (float *)t_in(host, 1, dx, FB(rows * cols), op);
    dropout_into(host, ddx, dd, rows, cols, drop, true, true, 2, op);
    t_out(host, dx, ddx, FB(rows * cols), op);
}

// The six LoRA products as chains (lora_gemm.h's elements), x (N, in), A (r, in), B (out, r):
enum { LORA_U, LORA_Y, LORA_DB, LORA_DU, LORA_DA, LORA_DX };
static chain_shape lora_shape(int which, int64_t N, int64_t in, int64_t r, int64_t out) {
    switch (which) {
    case LORA_U: return chain_shape{N, r, in, in, 1, 1, in};   // u (N x r) = z A^T: z(t, i), A(k, i)
    case LORA_Y: return chain_shape{N, out, r, r, 1, 1, r};    // y (N x out) += s u B^T: u(t, k), B(o, k)
    case LORA_DB: return chain_shape{out, r, N, 1, out, r, 1}; // dB (out x r) += s dy^T u: dy(t, o), u(t, k)
    case LORA_DU: return chain_shape{N, r, out, out, 1, r, 1}; // du (N x r) = s dy B: dy(t, o), B(o, k)
    case LORA_DA: return chain_shape{r, in, N, 1, r, in, 1};   // dA (r x in) += du^T z: du(t, k), z(t, i)
    default: return chain_shape{N, in, r, r, 1, in, 1};        // dx (N x in) += drop'(du A): du(t, k), A(k, i)
    }
}

static void chain_run(bool host, chain_shape s, const float *A, const float *B, float alpha, int mode, const uint16_t *keep, float kscale, float *C,
                      const char *op) {
    if (s.M <= 0 || s.Nc <= 0) return;
    run_each(host, s.M * s.Nc, f_chain{s, A, B, alpha, mode, keep, kscale, C}, op);
}

// u = drop(x) A^T; y += scale u B^T.
static void lora_forward_run(bool host, float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r,
                             int64_t out, float scale, const as_dropout *drop) {
    const char *op = "lora_forward";
    const float *z = (float *)t_in(host, 0, x, FB(N * in), op);
    if (drop) {
        float *dz = (float *)t_tmp(host, 1, FB(N * in), op);
        dropout_into(host, dz, z, N, in, drop, drop->replay, false, 2, op);
        z = dz;
    }
    float *dA = (float *)t_in(host, 3, A, FB(r * in), op), *du = (float *)t_dst(host, 4, u, FB(N * r), op);
    chain_run(host, lora_shape(LORA_U, N, in, r, out), z, dA, 1.0f, 0, NULL, 0.0f, du, op);
    t_out(host, u, du, FB(N * r), op);
    if (!y || out <= 0) return;
    float *dB = (float *)t_in(host, 5, B, FB(out * r), op), *dy = (float *)t_in(host, 6, y, FB(N * out), op);
    chain_run(host, lora_shape(LORA_Y, N, in, r, out), du, dB, scale, 1, NULL, 0.0f, dy, op);
    t_out(host, y, dy, FB(N * out), op);
}

// dB += s dy^T u;  du = s dy B;  dA += du^T z;  dx += drop'(du A)   (z = drop(x), replayed).
// dx, dA, dB NULL: not wanted (the CPU's needs all three).
static void lora_backward_run(bool host, float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A,
                              const float *B, int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du) {
    const char *op = "lora_backward";
    float *ddy = (float *)t_in(host, 0, dy, FB(N * out), op), *dBm = (float *)t_in(host, 1, B, FB(out * r), op);
    if (dB && out > 0) {
        float *du_ = (float *)t_in(host, 2, u, FB(N * r), op), *ddB = (float *)t_in(host, 3, dB, FB(out * r), op);
        chain_run(host, lora_shape(LORA_DB, N, in, r, out), ddy, du_, scale, 1, NULL, 0.0f, ddB, op);
        t_out(host, dB, ddB, FB(out * r), op);
    }
    float *ddu = (float *)t_dst(host, 4, du, FB(N * r), op); // scratch when du is NULL
    chain_run(host, lora_shape(LORA_DU, N, in, r, out), ddy, dBm, scale, 0, NULL, 0.0f, ddu, op); // out 0: a chain of no terms, 0
    if (du) t_out(host, du, ddu, FB(N * r), op);
    if (in <= 0 || (!dA && !dx)) return;
    const int64_t w = (in + 15) / 16;
    const float ks = drop ? keep_scale_of(drop) : 1.0f;
    uint16_t *dk = drop ? (uint16_t *)t_in(host, 5, drop->keep, sizeof(uint16_t) * (size_t)(N * w), op) : NULL;
    if (dA) {
        const float *z = (float *)t_in(host, 6, x, FB(N * in), op);
        if (drop) { // z = x (keep ? scale : 0), rounded (the stored bits)
            float *dz = (float *)t_tmp(host, 7, FB(N * in), op);
            run_each(host, N * w, f_dropout{dz, z, dk, in, drop->base, drop_thresh(drop->p), ks, true, false}, op);
            z = dz;
        }
        float *ddA = (float *)t_in(host, 8, dA, FB(r * in), op);
        chain_run(host, lora_shape(LORA_DA, N, in, r, out), ddu, z, 1.0f, 1, NULL, 0.0f, ddA, op);
        t_out(host, dA, ddA, FB(r * in), op);
    }
    if (dx) {
        float *dAm = (float *)t_in(host, 9, A, FB(r * in), op), *ddx = (float *)t_in(host, 10, dx, FB(N * in), op);
        chain_run(host, lora_shape(LORA_DX, N, in, r, out), ddu, dAm, 1.0f, drop ? 2 : 1, dk, ks, ddx, op);
        t_out(host, dx, ddx, FB(N * in), op);
    }
}

// train_sum_squares's blocks, one thread each (a block's sum in order), the
// block sums added in order on the host: its bits.
static double sum_squares_run(bool host, const float *x, size_t n) {
    const char *op = "sum_squares";
    const size_t nb = (n + TR_NORM_BLOCK - 1) / TR_NORM_BLOCK;
    float *dx = (float *)t_in(host, 0, x, FB(n), op);
    double *dp = (double *)t_tmp(host, 1, sizeof(double) * nb, op);
    run_each(host, (int64_t)nb, f_sumsq{dp, dx, n}, op);
    double *part = (double *)malloc(sizeof(double) * nb);
    if (!part) die(op, "out of host memory");
    t_out(host, part, dp, sizeof(double) * nb, op);
    double ss = 0.0;
    for (size_t b = 0; b < nb; b++) ss += part[b];
    free(part);
    return ss;
}

static void grad_scale_run(bool host, float *x, size_t n, float c) {
    const char *op = "grad_scale";
    float *dx = (float *)t_in(host, 0, x, FB(n), op);
    run_each(host, (int64_t)n, f_scale{dx, c}, op);
    t_out(host, x, dx, FB(n), op);
}

static void adamw_update_run(bool host, float *p, const float *gr, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps,
                             float wd, int64_t t) {
    const char *op = "adamw_update";
    float *dp = (float *)t_in(host, 0, p, FB(n), op), *dg = (float *)t_in(host, 1, gr, FB(n), op), *dm = (float *)t_in(host, 2, m, FB(n), op);
    float *dv = (float *)t_in(host, 3, v, FB(n), op);
    run_each(host, (int64_t)n, f_adamw{dp, dm, dv, dg, adamw_consts(lr, beta1, beta2, eps, wd, t)}, op);
    t_out(host, p, dp, FB(n), op), t_out(host, m, dm, FB(n), op), t_out(host, v, dv, FB(n), op);
}

static void rmsprop_update_run(bool host, float *p, const float *gr, float *v, size_t n, float lr, float alpha, float eps, float wd) {
    const char *op = "rmsprop_update";
    float *dp = (float *)t_in(host, 0, p, FB(n), op), *dg = (float *)t_in(host, 1, gr, FB(n), op), *dv = (float *)t_in(host, 2, v, FB(n), op);
    run_each(host, (int64_t)n, f_rmsprop{dp, dv, dg, lr, alpha, eps, wd}, op);
    t_out(host, p, dp, FB(n), op), t_out(host, v, dv, FB(n), op);
}

static void sgd_update_run(bool host, float *p, const float *gr, float *m, size_t n, float lr, float momentum, float wd, int64_t t) {
    const char *op = "sgd_update";
    float *dp = (float *)t_in(host, 0, p, FB(n), op), *dg = (float *)t_in(host, 1, gr, FB(n), op);
    float *dm = m ? (float *)t_in(host, 2, m, FB(n), op) : NULL;
    run_each(host, (int64_t)n, f_sgd{dp, dm, dg, lr, momentum, wd, t}, op);
    t_out(host, p, dp, FB(n), op);
    if (m) t_out(host, m, dm, FB(n), op);
}

// ---- linear: fp32 products on cublasSgemm ----

static void cu_linear_forward(float *out, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim, int nth) {
    const char *op = "linear_forward";
    (void)nth;
    if (N <= 0 || out_dim <= 0) return;
    lock_guard g(op);
    float *dx = (float *)t_in(false, 0, x, FB(N * in), op), *dW = (float *)t_in(false, 1, W, FB(out_dim * in), op);
    float *dy = (float *)t_dst(false, 2, out, FB(N * out_dim), op);
    if (in <= 0) CK(cudaMemset(dy, 0, FB(N * out_dim)));
    else dev_sgemm(false, true, N, out_dim, in, 1.0f, dx, in, dW, in, 0.0f, dy, out_dim, op);
    t_out(false, out, dy, FB(N * out_dim), op);
}

// dx += dout W;  dW += dout^T x.
static void cu_linear_backward(float *dx, float *dW, const float *dout, const float *x, const float *W, int64_t N, int64_t in, int64_t out_dim,
                               int nth) {
    const char *op = "linear_backward";
    (void)nth;
    if (N <= 0 || in <= 0 || out_dim <= 0 || (!dx && !dW)) return;
    lock_guard g(op);
    float *ddo = (float *)t_in(false, 0, dout, FB(N * out_dim), op);
    if (dx) {
        float *dW_ = (float *)t_in(false, 1, W, FB(out_dim * in), op), *ddx = (float *)t_in(false, 2, dx, FB(N * in), op);
        dev_sgemm(false, false, N, in, out_dim, 1.0f, ddo, out_dim, dW_, in, 1.0f, ddx, in, op);
        t_out(false, dx, ddx, FB(N * in), op);
    }
    if (dW) {
        float *dxx = (float *)t_in(false, 1, x, FB(N * in), op), *ddW = (float *)t_in(false, 2, dW, FB(out_dim * in), op);
        dev_sgemm(true, false, out_dim, in, N, 1.0f, ddo, out_dim, dxx, in, 1.0f, ddW, in, op);
        t_out(false, dW, ddW, FB(out_dim * in), op);
    }
}


// ---- training's bf16 products: operands rounded to bf16 (nearest even), fp32 accumulation (cublasGemmEx) ----

// The packed right operand: op(B) rounded to bf16 and kept on the device
// (the vocabulary matrix against chunks of rows).  Owned by this backend: a
// handle of another (the CPU's) is refused by its tag.
#define AS_CUDA_PACKED_MAGIC 0x31414455435f5341ull // "AS_CUDA1"
struct as_bf16_packed {
    uint64_t magic;
    bool tb;          // stored as B (N x K) whose transpose is op(B), else op(B) itself (K x N)
    int64_t K, N;
    __nv_bfloat16 *d; // compact, row-major
};

// Row-major C = alpha op(A) op(B) + beta C on bf16 device operands (compact:
// leading dimensions their widths), fp32 C (row stride ldc).
static void gemm_ex_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const __nv_bfloat16 *A, const __nv_bfloat16 *B, float beta,
                         float *C, int64_t ldc, const char *op) {
    check_int(M, "M", op), check_int(N, "N", op), check_int(K, "K", op), check_int(ldc, "ldc", op);
    const int64_t ac = ta ? M : K, bc = tb ? K : N;
    CKB(cublasGemmEx(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_16BF,
                     (int)(bc > 0 ? bc : 1), A, CUDA_R_16BF, (int)(ac > 0 ? ac : 1), &beta, C, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT));
}

// rows x cols at X (row stride ld) -> compact bf16 on the device (host X via
// fp32 scratch slot fs; buf_alloc X converted in place when compact, else
// gathered compact on the device).
static __nv_bfloat16 *up_bf16(int fs, int bs, const float *X, int64_t rows, int64_t cols, int64_t ld, const char *op) {
    const int64_t n = rows * cols;
    __nv_bfloat16 *b = (__nv_bfloat16 *)t_tmp(false, bs, sizeof(__nv_bfloat16) * (size_t)(n > 0 ? n : 1), op);
    if (n <= 0) return b;
    const bool res = is_managed(X);
    const float *f = X;
    if (res) g_tr_wait = true;
    if (!res || ld != cols) {
        f = (const float *)t_tmp(false, fs, FB(n), op);
        CK(cudaMemcpy2D((void *)f, FB(cols), X, FB(ld), FB(cols), (size_t)rows, res ? cudaMemcpyDefault : cudaMemcpyHostToDevice));
    }
    k_to_bf16<<<grid_for(n, 256), 256>>>(f, b, n);
    CK_LAUNCH();
    return b;
}

// C (M x N, row stride ldc) = alpha op(A) B' + beta C: in place when C is
// buf_alloc memory, else through device scratch and back.
static void gemm_bf16_into(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const __nv_bfloat16 *dB,
                           float beta, float *C, int64_t ldc, const char *op) {
    const __nv_bfloat16 *dA = up_bf16(0, 1, A, ta ? K : M, ta ? M : K, lda, op);
    const bool res = is_managed(C);
    float *dC = res ? C : (float *)t_tmp(false, 4, FB(M * N), op);
    const int64_t lc = res ? ldc : N;
    if (res) g_tr_wait = true;
    if (beta == 0.0f) CK(cudaMemset2D(dC, FB(lc), 0, FB(N), (size_t)M)); // C is not read (it may hold NaN)
    else if (!res) CK(cudaMemcpy2D(dC, FB(N), C, FB(ldc), FB(N), (size_t)M, cudaMemcpyHostToDevice));
    gemm_ex_bf16(ta, tb, M, N, K, alpha, dA, dB, beta, dC, lc, op);
    if (!res) CK(cudaMemcpy2D(C, FB(ldc), dC, FB(N), FB(N), (size_t)M, cudaMemcpyDeviceToHost));
}

static void cu_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                         float beta, float *C, int64_t ldc, int nth) {
    const char *op = "gemm_bf16";
    (void)nth;
    if (M <= 0 || N <= 0) return;
    lock_guard g(op);
    const __nv_bfloat16 *dB = up_bf16(2, 3, B, tb ? N : K, tb ? K : N, ldb, op);
    gemm_bf16_into(ta, tb, M, N, K, alpha, A, lda, dB, beta, C, ldc, op);
}

static as_bf16_packed *cu_bf16_pack_b(bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth) {
    const char *op = "bf16_pack_b";
    (void)nth;
    if (K < 0 || N < 0) die(op, "shape %lld x %lld", (long long)K, (long long)N);
    as_bf16_packed *p = (as_bf16_packed *)calloc(1, sizeof *p);
    if (!p) die(op, "out of host memory");
    p->magic = AS_CUDA_PACKED_MAGIC, p->tb = tb, p->K = K, p->N = N;
    const int64_t n = K * N;
    lock_guard g(op);
    p->d = (__nv_bfloat16 *)dmalloc(sizeof(__nv_bfloat16) * (size_t)(n > 0 ? n : 1), op);
    g_packed_bytes += sizeof(__nv_bfloat16) * (size_t)(n > 0 ? n : 1);
    if (n > 0) {
        const int64_t rows = tb ? N : K, cols = tb ? K : N;
        const bool res = is_managed(B); // a resident B is read in place when compact
        const float *f = B;
        if (res) g_tr_wait = true;
        if (!res || ldb != cols) {
            f = (const float *)t_tmp(false, 0, FB(n), op);
            CK(cudaMemcpy2D((void *)f, FB(cols), B, FB(ldb), FB(cols), (size_t)rows, res ? cudaMemcpyDefault : cudaMemcpyHostToDevice));
        }
        k_to_bf16<<<grid_for(n, 256), 256>>>(f, p->d, n);
        CK_LAUNCH();
    }
    return p;
}

static void check_packed(const as_bf16_packed *p, const char *op) {
    if (p->magic != AS_CUDA_PACKED_MAGIC) die(op, "a packed operand not made by the CUDA backend's bf16_pack_b");
}

static void cu_bf16_packed_free(as_bf16_packed *p) {
    const char *op = "bf16_packed_free";
    if (!p) return;
    check_packed(p, op);
    lock_guard g(op);
    const int64_t n = p->K * p->N;
    CK(cudaFree(p->d));
    g_packed_bytes -= sizeof(__nv_bfloat16) * (size_t)(n > 0 ? n : 1);
    p->magic = 0;
    free(p);
}

static void cu_gemm_bf16_packed(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const as_bf16_packed *P, float beta, float *C,
                                int64_t ldc, int nth) {
    const char *op = "gemm_bf16_packed";
    (void)nth;
    check_packed(P, op);
    if (M <= 0 || P->N <= 0) return;
    lock_guard g(op);
    gemm_bf16_into(ta, P->tb, M, P->N, P->K, alpha, A, lda, P->d, beta, C, ldc, op);
}


// ---- the training entries of the table (device runs, under the lock) ----

static void cu_embedding_forward(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale) {
    if (N <= 0 || C <= 0) return;
    lock_guard g("embedding_forward");
    embedding_forward_run(false, out, tok, E, N, C, scale);
}

static void cu_embedding_backward(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale) {
    if (N <= 0 || C <= 0) return;
    lock_guard g("embedding_backward");
    embedding_backward_run(false, dE, dout, tok, N, C, scale);
}

static void cu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth) {
    (void)nth;
    if (N <= 0 || C <= 0) return;
    lock_guard g("rmsnorm_forward");
    rmsnorm_forward_run(false, out, rstd, x, w, N, C, eps);
}

static void cu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N, int64_t C,
                                int nth) {
    (void)nth;
    if (N <= 0 || C <= 0 || (!dx && !dw)) return;
    lock_guard g("rmsnorm_backward");
    rmsnorm_backward_run(false, dx, dw, dout, x, w, rstd, N, C);
}

static void cu_rope_forward(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth) {
    (void)nth;
    if (N <= 0 || n_heads <= 0 || d <= 0 || n_rot < 2) return;
    lock_guard g("rope_forward");
    rope_run(false, x, N, n_heads, d, n_rot, neox, cs, sn, 1.0f, "rope_forward");
}

static void cu_rope_backward(float *dx, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth) {
    (void)nth;
    if (N <= 0 || n_heads <= 0 || d <= 0 || n_rot < 2) return;
    lock_guard g("rope_backward");
    rope_run(false, dx, N, n_heads, d, n_rot, neox, cs, sn, -1.0f, "rope_backward");
}

// scratch and max_len unused: the tiled kernels keep no score matrix.
static void cu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off,
                                 const int32_t *seq_len, int32_t n_seq, int H, int Hkv, int d, float *scratch, int64_t max_len, int nth) {
    (void)scratch, (void)max_len, (void)nth;
    lock_guard g("attention_forward");
    attention_forward_run(false, out, lse, q, k, v, seq_off, seq_len, n_seq, H, Hkv, d);
}

static void cu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
                                  const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int H, int Hkv,
                                  int d, int nth) {
    (void)nth;
    lock_guard g("attention_backward");
    attention_backward_run(false, dq, dk, dv, dout, out, lse, q, k, v, seq_off, seq_len, n_seq, H, Hkv, d);
}

static void cu_glu_forward(float *h, const float *gg, const float *u, int64_t n, bool gelu, int nth) {
    (void)nth;
    if (n <= 0) return;
    lock_guard g("glu_forward");
    glu_forward_run(false, h, gg, u, n, gelu);
}

static void cu_glu_backward(float *dgo, float *duo, const float *dh, const float *gg, const float *u, int64_t n, bool gelu, int nth) {
    (void)nth;
    if (n <= 0) return;
    lock_guard g("glu_backward");
    glu_backward_run(false, dgo, duo, dh, gg, u, n, gelu);
}

static void cu_logsoftmax_forward(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth) {
    (void)nth;
    if (rows <= 0 || V <= 0) return;
    lock_guard g("logsoftmax_forward");
    logsoftmax_forward_run(false, logp, lse, logits, target, rows, V);
}

static void cu_logsoftmax_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target, int64_t rows,
                                   int64_t V, int nth) {
    (void)nth;
    if (rows <= 0 || V <= 0) return;
    lock_guard g("logsoftmax_backward");
    logsoftmax_backward_run(false, dlogits, dlogp, logits, lse, target, rows, V);
}

// ---- the training model's clearing and gathering (zero, gather_rows) ----
// On buf_alloc memory these run on the device (without them the host's memset
// or memcpy would move the pages to the host and back every layer); on host
// memory they are the host's memset / memcpy.  Synchronous, as the training
// ops (g_tr_wait).

// Element i of n rows x C: row i / C of dst from row rows[i / C] (rows NULL: i / C) of src.
__global__ void k_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n, int64_t C) {
    EW_LOOP(i, n * C) {
        const int64_t r = i / C;
        dst[i] = src[(rows ? rows[r] : r) * C + i % C];
    }
}

static void cu_zero(float *x, size_t n) {
    const char *op = "zero";
    if (!n) return;
    lock_guard g(op);
    if (!is_managed(x)) {
        memset(x, 0, sizeof(float) * n);
        return;
    }
    CK(cudaMemsetAsync(x, 0, sizeof(float) * n, 0));
    g_tr_wait = true;
}

static void cu_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n, int64_t C) {
    const char *op = "gather_rows";
    if (n <= 0 || C <= 0) return;
    lock_guard g(op);
    const bool md = is_managed(dst), ms = is_managed(src);
    if (!md && !ms) {
        for (int64_t i = 0; i < n; i++) memcpy(dst + i * C, src + (rows ? (int64_t)rows[i] : i) * C, sizeof(float) * (size_t)C);
        return;
    }
    const size_t out = sizeof(float) * (size_t)(n * C);
    if (!rows) {
        CK(cudaMemcpyAsync(dst, src, out, cudaMemcpyDefault, 0));
        g_tr_wait = true;
        return;
    }
    const int64_t n_src = rows_span(rows, n, op); // rows of src read
    const float *ds = (const float *)in_dev(&b_a, src, sizeof(float) * (size_t)(n_src * C), op);
    float *dd = (float *)out_dev(&b_c, dst, out, op);
    k_gather_rows<<<grid_for(n * C, 256), 256>>>(dd, ds, in_idx(&g_rows, rows, n, op), n, C);
    CK_LAUNCH();
    out_host(dst, dd, out, op);
    g_tr_wait = true;
}

// Element i of n rows x C: row rows[i / C] of dst = scale[i / C] * row i / C of src.
__global__ void k_scale_rows(float *dst, const float *src, const int32_t *rows, const float *scale, int64_t n, int64_t C) {
    EW_LOOP(i, n * C) {
        const int64_t r = i / C;
        dst[(int64_t)rows[r] * C + i % C] = scale[r] * src[i];
    }
}

static void cu_scale_rows(float *dst, const float *src, const int32_t *rows, const float *scale, int64_t n, int64_t C) {
    const char *op = "scale_rows";
    if (n <= 0 || C <= 0) return;
    lock_guard g(op);
    if (!is_managed(dst) && !is_managed(src)) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < C; j++) dst[(int64_t)rows[i] * C + j] = scale[i] * src[i * C + j];
        return;
    }
    const int64_t n_dst = rows_span(rows, n, op); // rows of dst written
    const float *ds = (const float *)in_dev(&b_a, src, sizeof(float) * (size_t)(n * C), op);
    const float *dsc = (const float *)in_dev(&b_b, scale, sizeof(float) * (size_t)n, op);
    float *dd = (float *)inout_dev(&b_c, dst, sizeof(float) * (size_t)(n_dst * C), op);
    k_scale_rows<<<grid_for(n * C, 256), 256>>>(dd, ds, in_idx(&g_rows, rows, n, op), dsc, n, C);
    CK_LAUNCH();
    out_host(dst, dd, sizeof(float) * (size_t)(n_dst * C), op);
    g_tr_wait = true;
}

static void cu_residual_forward(float *out, const float *a, const float *b, int64_t n, int nth) {
    (void)nth;
    if (n <= 0) return;
    lock_guard g("residual_forward");
    residual_forward_run(false, out, a, b, n);
}

static void cu_dropout_forward(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth) {
    (void)nth;
    if (rows <= 0 || cols <= 0) return;
    lock_guard g("dropout_forward");
    dropout_forward_run(false, out, x, rows, cols, drop);
}

static void cu_dropout_backward(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth) {
    (void)nth;
    if (rows <= 0 || cols <= 0) return;
    lock_guard g("dropout_backward");
    dropout_backward_run(false, dx, dout, rows, cols, drop);
}

static void cu_lora_forward(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r, int64_t out,
                            float scale, const as_dropout *drop, int nth) {
    (void)nth;
    if (N <= 0 || r <= 0) return;
    lock_guard g("lora_forward");
    lora_forward_run(false, y, u, x, A, B, N, in, r, out, scale, drop);
}

static void cu_lora_backward(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A, const float *B,
                             int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du, int nth) {
    (void)nth;
    if (N <= 0 || r <= 0) return;
    lock_guard g("lora_backward");
    lora_backward_run(false, dx, dA, dB, dy, x, u, A, B, N, in, r, out, scale, drop, du);
}

static double cu_sum_squares(const float *x, size_t n, int nth) {
    (void)nth;
    if (n == 0) return 0.0;
    lock_guard g("sum_squares");
    return sum_squares_run(false, x, n);
}

static void cu_grad_scale(float *x, size_t n, float c, int nth) {
    (void)nth;
    if (n == 0) return;
    lock_guard g("grad_scale");
    grad_scale_run(false, x, n, c);
}

static void cu_adamw_update(float *p, const float *gr, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd, int64_t t,
                            int nth) {
    (void)nth;
    if (n == 0) return;
    lock_guard g("adamw_update");
    adamw_update_run(false, p, gr, m, v, n, lr, beta1, beta2, eps, wd, t);
}

static void cu_rmsprop_update(float *p, const float *gr, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth) {
    (void)nth;
    if (n == 0) return;
    lock_guard g("rmsprop_update");
    rmsprop_update_run(false, p, gr, v, n, lr, alpha, eps, wd);
}

static void cu_sgd_update(float *p, const float *gr, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth) {
    (void)nth;
    if (n == 0) return;
    lock_guard g("sgd_update");
    sgd_update_run(false, p, gr, m, n, lr, momentum, wd, t);
}

// ---- sampling (backend.h's sample_rows: generate/sampler.c on the device) ----
//
// One block per row runs sampler.c's chain (penalties -> top_k -> top_p ->
// min_p -> temperature -> draw) with its operations in its order, so that the
// token and the RNG state after it are the host sampler's, bit for bit.  The
// block's threads share the work whose result does not depend on the order:
// the penalty marks, the chain logits, every e^x (elementwise: vexp.h's, as
// the CPU's exp at every ISA, tr_expf), the scalings, and the maxima and the
// greedy argmax (block trees over (value, index) keeping the lower index on
// equal values: the first index of the largest value, which is what the
// CPU's sequential scans keep, so even a zero's sign is the same).  Thread 0
// does, in the CPU's order, what the bits depend on: the sums in double, top_p's
// cumulative cut and its quickselect (whose permutation is the candidates'
// order, hence the draw's), min_p's stable compaction and the inverse-CDF walk.
// top_k's sorted k best are one list however found: up to SMP_SORT_MAX (and
// half the vocabulary) a parallel radix select and rank sort finds them,
// above that thread 0 runs sampler.c's heap.
// Two constants are the host's: 1/T (the same float division as sampler.c)
// and log(min_p) (the host's logf, which sampler.c calls: the device's may
// round differently).  sampler_distribution's final softmax is skipped: the
// draw recomputes its weights and never reads it.  What is sequential costs
// O(vocab) per row on one GPU thread (without top_k: the sum of e^x and the
// quickselect), the rows running side by side.  The logits are host memory
// (the table's convention), so each call copies the rows in; with logits
// resident on the device that copy goes.  Not yet run on a GPU: the host
// run is what test_cuda_sample_host checks, test_cuda_sample the device's.

struct smp_cand { // sampler.h's sampler_cand
    int32_t id;
    float logit, p;
};
struct smp_par { // one row: params, host constants, its penalty window in win[], its RNG
    float temperature, top_p, min_p, penalty, inv_t, log_min_p;
    int32_t top_k;
    int64_t win0, n_win;
    uint64_t rng[4];
};
#define SMP_THREADS 256 // = SMP_BINS: one bin per thread where the histogram is cleared
#define SMP_BINS 256
#define SMP_SORT_MAX 1024 // top_k up to this (and half the vocabulary) is selected in parallel
struct smp_shared { // a block's shared scratch
    float v[SMP_THREADS];
    int32_t i[SMP_THREADS];
    uint32_t hist[SMP_BINS];           // top_k's radix select
    int64_t gt[SMP_THREADS], eq[SMP_THREADS]; // per-thread counts, then offsets
    uint32_t prefix;
    int64_t need;
    double sum;
    double ds[SMP_THREADS]; // logprob_rows' per-thread sums
    int64_t n;   // candidates
    bool sorted; // cand[0..n) in decreasing logit order (top_k ran)
};

// util/rng.h's xoshiro256** and its 53-bit uniform.
HD uint64_t smp_rng_u64(uint64_t *s) {
    const uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}
HD double smp_uniform(uint64_t *s) { return (double)(smp_rng_u64(s) >> 11) * 0x1.0p-53; }

// sampler.c's chain_logit: NaN is -inf; a penalised logit divided by the penalty if positive, multiplied if not.
HD float smp_chain_logit(float l, bool pen, float penalty) {
    if (isnan(l)) return -INFINITY;
    if (pen) l = l <= 0.0f ? l * penalty : div_rn(l, penalty);
    return l;
}
// A candidate's unnormalised weight e^(l - mx) (cand_exp: exactly 0 for -inf).
HD float smp_weight(float l, float mx) { return l == -INFINITY ? 0.0f : tr_expf(l - mx); }

HD bool smp_better(const smp_cand *a, const smp_cand *b) { return a->logit > b->logit || (a->logit == b->logit && a->id < b->id); }
HD void smp_swap(smp_cand *a, smp_cand *b) {
    const smp_cand t = *a;
    *a = *b;
    *b = t;
}
HD void smp_sift_down(smp_cand *h, int64_t m, int64_t i) {
    for (;;) {
        int64_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < m && smp_better(&h[worst], &h[l])) worst = l;
        if (r < m && smp_better(&h[worst], &h[r])) worst = r;
        if (worst == i) return;
        smp_swap(&h[i], &h[worst]);
        i = worst;
    }
}
// select_top_k over c[0..V) already holding (i, chain logit i): the k best
// into c[0..k), best first.  The heap lives in c[0..k), so c[k..V) is read intact.
HD void smp_top_k(smp_cand *c, int64_t V, int64_t k) {
    for (int64_t i = k / 2 - 1; i >= 0; i--) smp_sift_down(c, k, i);
    for (int64_t i = k; i < V; i++)
        if (c[i].logit > c[0].logit) {
            c[0] = c[i];
            smp_sift_down(c, k, 0);
        }
    for (int64_t end = k - 1; end > 0; end--) {
        smp_swap(&c[0], &c[end]);
        smp_sift_down(c, end, 0);
    }
}
HD smp_cand smp_pivot3(const smp_cand *a, const smp_cand *b, const smp_cand *c) {
    if (smp_better(a, b)) return smp_better(b, c) ? *b : smp_better(a, c) ? *c : *a;
    return smp_better(a, c) ? *a : smp_better(b, c) ? *c : *b;
}
// select_top_mass, step for step (its permutation is the candidates' order from here on).
HD int64_t smp_top_mass(smp_cand *c, int64_t n, double p) {
    int64_t lo = 0, hi = n;
    double acc = 0.0;
    while (hi - lo > 1) {
        const smp_cand pv = smp_pivot3(&c[lo], &c[lo + (hi - lo) / 2], &c[hi - 1]);
        int64_t i = lo;
        double m = 0.0;
        for (int64_t j = lo; j < hi; j++)
            if (smp_better(&c[j], &pv)) {
                m += c[j].p;
                smp_swap(&c[i++], &c[j]);
            }
        if (acc + m >= p) {
            hi = i;
            continue;
        }
        acc += m;
        for (int64_t j = i; j < hi; j++)
            if (c[j].id == pv.id) {
                smp_swap(&c[i], &c[j]);
                break;
            }
        acc += c[i].p;
        if (acc >= p) return i + 1;
        lo = i + 1;
    }
    return hi;
}

// A float's order as an unsigned key: a > b <=> key(a) > key(b), -0 and +0
// one key (NaN-free: chain logits).
HD uint32_t smp_key(float l) {
    if (l == 0.0f) l = 0.0f;
    uint32_t u;
#ifdef __CUDA_ARCH__
    u = __float_as_uint(l);
#else
    memcpy(&u, &l, 4);
#endif
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}
HD void smp_count(uint32_t *h) {
#ifdef __CUDA_ARCH__
    atomicAdd(h, 1u); // an integer count: the same whatever the order
#else
    (*h)++;
#endif
}

// select_top_k's result by other means, in parallel (the k best by (logit
// desc, id asc) sorted are one list, however found): the k-th largest key T by
// a radix select (4 passes of 8 bits, block histograms), then every candidate
// with key > T and the lowest ids with key == T gathered by contiguous id
// chunks into c[k..2k), then ranked into c[0..k) (each one's rank: how many
// beat it).  Needs 2k <= V; lg(i) is token i's chain logit.
template <class X, class L> __host__ __device__ static inline void smp_top_k_par(const X &ex, smp_shared *sh, smp_cand *c, int64_t V, int64_t k, const L &lg) {
    ex.phase([&](int t, int) {
        if (t == 0) sh->prefix = 0, sh->need = k;
    });
    for (int shift = 24; shift >= 0; shift -= 8) {
        const uint32_t hi = shift == 24 ? 0u : 0xFFFFFFFFu << (shift + 8); // the bits already chosen
        ex.phase([&](int t, int) { sh->hist[t] = 0; });
        ex.phase([&](int t, int nt) {
            for (int64_t i = t; i < V; i += nt) {
                const uint32_t key = smp_key(lg(i));
                if ((key & hi) == sh->prefix) smp_count(&sh->hist[(key >> shift) & 255u]);
            }
        });
        ex.phase([&](int t, int) {
            if (t) return;
            int64_t need = sh->need;
            for (int b = SMP_BINS - 1; b >= 0; b--) {
                if ((int64_t)sh->hist[b] >= need) {
                    sh->prefix |= (uint32_t)b << shift;
                    break;
                }
                need -= sh->hist[b];
            }
            sh->need = need;
        });
    }
    const uint32_t T = sh->prefix;
    const int64_t need = sh->need, n_gt = k - need, chunk = (V + SMP_THREADS - 1) / SMP_THREADS;
    smp_cand *tmp = c + k;
    ex.phase([&](int t, int) {
        int64_t gt = 0, eq = 0;
        for (int64_t i = t * chunk; i < V && i < (t + 1) * chunk; i++) {
            const uint32_t key = smp_key(lg(i));
            gt += key > T, eq += key == T;
        }
        sh->gt[t] = gt, sh->eq[t] = eq;
    });
    ex.phase([&](int t, int nt) {
        if (t) return;
        int64_t g = 0, e = 0;
        for (int u = 0; u < nt; u++) {
            const int64_t a = sh->gt[u], b = sh->eq[u];
            sh->gt[u] = g, sh->eq[u] = e;
            g += a, e += b;
        }
    });
    ex.phase([&](int t, int) {
        int64_t g = sh->gt[t], e = sh->eq[t];
        for (int64_t i = t * chunk; i < V && i < (t + 1) * chunk; i++) {
            const float l = lg(i);
            const uint32_t key = smp_key(l);
            if (key > T) tmp[g++] = smp_cand{(int32_t)i, l, 0.0f};
            else if (key == T && e < need) tmp[n_gt + e++] = smp_cand{(int32_t)i, l, 0.0f};
        }
    });
    ex.phase([&](int t, int nt) {
        for (int64_t j = t; j < k; j += nt) {
            int64_t rank = 0;
            for (int64_t m = 0; m < k; m++) rank += smp_better(&tmp[m], &tmp[j]);
            c[rank] = tmp[j];
        }
    });
}

// The first index of the largest key(j), j in [0, n) (keys NaN-free; -1 when
// n == 0): strided scans per thread, then a tree keeping the lower index on
// equal values.  Ends with a barrier, so the caller may reuse sh.
template <class X, class K> __host__ __device__ static inline int32_t smp_first_max(const X &ex, smp_shared *sh, int64_t n, const K &key) {
    ex.phase([&](int t, int nt) {
        float bv = -INFINITY;
        int32_t bi = -1;
        for (int64_t j = t; j < n; j += nt) {
            const float v = key(j);
            if (bi < 0 || v > bv) bv = v, bi = (int32_t)j;
        }
        sh->v[t] = bv, sh->i[t] = bi;
    });
    for (int s = SMP_THREADS / 2; s > 0; s >>= 1)
        ex.phase([&](int t, int) {
            if (t >= s) return;
            const float v2 = sh->v[t + s];
            const int32_t i2 = sh->i[t + s];
            if (i2 >= 0 && (sh->i[t] < 0 || v2 > sh->v[t] || (v2 == sh->v[t] && i2 < sh->i[t]))) sh->v[t] = v2, sh->i[t] = i2;
        });
    const int32_t r = sh->i[0];
    ex.phase([](int, int) {}); // every thread has read it
    return r;
}

// The weights e^(l - max) of c[0..n) into .p in parallel, their sum in
// double in index order (thread 0) into sh->sum.
template <class X> __host__ __device__ static inline void smp_weights(const X &ex, smp_shared *sh, smp_cand *c, int64_t n) {
    const int32_t im = smp_first_max(ex, sh, n, [&](int64_t j) { return c[j].logit; });
    const float mx = c[im].logit;
    ex.phase([&](int t, int nt) {
        for (int64_t j = t; j < n; j += nt) c[j].p = smp_weight(c[j].logit, mx);
    });
    ex.phase([&](int t, int) {
        if (t) return;
        double s = 0.0;
        for (int64_t j = 0; j < n; j++) s += c[j].p;
        sh->sum = s;
    });
}

// cand_softmax over c[0..sh->n) into .p: smp_weights, then the divisions in parallel.
template <class X> __host__ __device__ static inline void smp_softmax(const X &ex, smp_shared *sh, smp_cand *c) {
    const int64_t n = sh->n;
    smp_weights(ex, sh, c, n);
    ex.phase([&](int t, int nt) {
        for (int64_t j = t; j < n; j += nt) c[j].p = (float)(c[j].p / sh->sum);
    });
}

// One block per row r: tok[r] and par[r].rng as sampler_sample leaves them.
// Per-row scratch: cand + r V, pen + r V.
struct f_sample {
    int32_t *tok;
    smp_par *par;
    const float *logits;
    int64_t ld;
    int32_t V;
    const int32_t *win;
    smp_cand *cand;
    uint8_t *pen;
    template <class X> HDF(const X &ex, int64_t r, smp_shared *sh) const {
        smp_par *p = par + r;
        const float *z = logits + r * ld;
        smp_cand *c = cand + r * V;
        uint8_t *pe = pen + r * V;
        const int32_t *w = win + p->win0;
        const int64_t nw = p->n_win, nv = V;
        const float penalty = p->penalty;
        // penalty_mark: the distinct tokens of the window (n_win 0: no penalty).
        if (nw > 0) {
            ex.phase([&](int t, int nt) {
                for (int64_t i = t; i < nv; i += nt) pe[i] = 0;
            });
            ex.phase([&](int t, int nt) {
                for (int64_t j = t; j < nw; j += nt)
                    if (w[j] >= 0 && w[j] < V) pe[w[j]] = 1;
            });
        }
        if (p->temperature <= 0.0f) { // greedy: the first argmax of the chain logits
            const int32_t best = smp_first_max(ex, sh, nv, [&](int64_t i) { return smp_chain_logit(z[i], nw > 0 && pe[i], penalty); });
            ex.phase([&](int t, int) {
                if (t == 0) tok[r] = best;
            });
            return;
        }
        const auto lg = [&](int64_t i) { return smp_chain_logit(z[i], nw > 0 && pe[i], penalty); };
        const int64_t k = p->top_k;
        const bool top_k = k > 0 && k < nv;
        if (top_k && k <= SMP_SORT_MAX && 2 * k <= nv) {
            smp_top_k_par(ex, sh, c, nv, k, lg);
        } else {
            ex.phase([&](int t, int nt) {
                for (int64_t i = t; i < nv; i += nt) c[i] = smp_cand{(int32_t)i, lg(i), 0.0f};
            });
            ex.phase([&](int t, int) {
                if (t == 0 && top_k) smp_top_k(c, nv, k);
            });
        }
        ex.phase([&](int t, int) {
            if (t == 0) sh->n = top_k ? k : nv, sh->sorted = top_k;
        });
        const double top_p = p->top_p;
        if (top_p < 1.0) {
            smp_softmax(ex, sh, c);
            ex.phase([&](int t, int) {
                if (t) return;
                if (!sh->sorted) {
                    sh->n = smp_top_mass(c, sh->n, top_p);
                    return;
                }
                double cum = 0.0;
                for (int64_t i = 0; i < sh->n; i++) {
                    cum += c[i].p;
                    if (cum >= top_p) {
                        sh->n = i + 1;
                        return;
                    }
                }
            });
        }
        if (p->min_p > 0.0f) { // logit >= max + log(min_p), stable
            const int32_t im = smp_first_max(ex, sh, sh->n, [&](int64_t i) { return c[i].logit; });
            ex.phase([&](int t, int) {
                if (t) return;
                const float thr = c[im].logit + p->log_min_p;
                int64_t m = 0;
                for (int64_t i = 0; i < sh->n; i++)
                    if (c[i].logit >= thr) c[m++] = c[i];
                sh->n = m;
            });
        }
        const int64_t n = sh->n;
        if (p->temperature != 1.0f) {
            const float inv_t = p->inv_t;
            ex.phase([&](int t, int nt) {
                for (int64_t i = t; i < n; i += nt) c[i].logit *= inv_t;
            });
        }
        // The draw (sampler_sample): weights e^(l - max) in .p, their sum in
        // double, then the first running sum above u * sum.
        smp_weights(ex, sh, c, n);
        ex.phase([&](int t, int) {
            if (t) return;
            const double target = smp_uniform(p->rng) * sh->sum;
            double run = 0.0;
            int32_t id = c[n - 1].id;
            for (int64_t i = 0; i < n; i++) {
                run += c[i].p;
                if (run > target) {
                    id = c[i].id;
                    break;
                }
            }
            tok[r] = id;
        });
    }
};

template <class F> __global__ void k_smp_blocks(F f) {
    __shared__ smp_shared sh;
    f(tr_dev_exec{(int)threadIdx.x, (int)blockDim.x}, (int64_t)blockIdx.x, &sh);
}

// Host staging of the rows' params and penalty windows, grown as needed and kept.
static smp_par *g_smp_par;
static int32_t *g_smp_win;
static size_t g_smp_par_cap, g_smp_win_cap;

static void *hgrow(void *p, size_t *cap, size_t bytes, const char *op) {
    if (bytes <= *cap) return p;
    free(p);
    p = malloc(bytes);
    if (!p) die(op, "out of host memory (%zu bytes)", bytes);
    *cap = bytes;
    return p;
}

static void sample_rows_run(bool host, int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t V, as_sample_row *rows) {
    const char *op = "sample_rows";
    if (n_rows <= 0) return;
    if (V <= 0 || ld < V) die(op, "%d logits per row with a stride of %lld", (int)V, (long long)ld);
    if (n_rows > INT32_MAX) die(op, "%lld rows", (long long)n_rows);
    int64_t n_win = 0;
    for (int64_t r = 0; r < n_rows; r++) { // penalty_mark's window: none when the penalty is off
        const as_sample_row *s = &rows[r];
        if (s->repeat_penalty != 1.0f && s->repeat_last_n != 0 && s->n_history > 0)
            n_win += s->repeat_last_n < 0 || s->n_history < s->repeat_last_n ? s->n_history : s->repeat_last_n;
    }
    g_smp_par = (smp_par *)hgrow(g_smp_par, &g_smp_par_cap, sizeof(smp_par) * (size_t)n_rows, op);
    g_smp_win = (int32_t *)hgrow(g_smp_win, &g_smp_win_cap, sizeof(int32_t) * (size_t)(n_win > 0 ? n_win : 1), op);
    int64_t w0 = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        const as_sample_row *s = &rows[r];
        smp_par *p = &g_smp_par[r];
        p->temperature = s->temperature, p->top_p = s->top_p, p->min_p = s->min_p, p->penalty = s->repeat_penalty, p->top_k = s->top_k;
        p->inv_t = s->temperature > 0.0f ? 1.0f / s->temperature : 0.0f;
        p->log_min_p = s->min_p > 0.0f ? logf(s->min_p) : 0.0f;
        int64_t nw = 0;
        if (s->repeat_penalty != 1.0f && s->repeat_last_n != 0 && s->n_history > 0)
            nw = s->repeat_last_n < 0 || s->n_history < s->repeat_last_n ? s->n_history : s->repeat_last_n;
        if (nw > 0) memcpy(g_smp_win + w0, s->history + (s->n_history - nw), sizeof(int32_t) * (size_t)nw);
        p->win0 = w0, p->n_win = nw;
        w0 += nw;
        memcpy(p->rng, s->rng.s, sizeof p->rng);
    }
    const size_t pb = sizeof(smp_par) * (size_t)n_rows, cb = sizeof(smp_cand) * (size_t)(n_rows * V);
    float *dz = (float *)t_in(host, 0, logits, FB((n_rows - 1) * ld + V), op);
    smp_par *dp = (smp_par *)t_in(host, 1, g_smp_par, pb, op);
    int32_t *dw = (int32_t *)t_in(host, 2, g_smp_win, sizeof(int32_t) * (size_t)n_win, op);
    int32_t *dt = (int32_t *)t_tmp(host, 3, sizeof(int32_t) * (size_t)n_rows, op);
    smp_cand *dc = (smp_cand *)t_tmp(host, 4, cb, op);
    uint8_t *de = (uint8_t *)t_tmp(host, 5, (size_t)(n_rows * V), op);
    const f_sample f{dt, dp, dz, ld, V, dw, dc, de};
    if (host) {
        smp_shared sh;
        for (int64_t r = 0; r < n_rows; r++) f(tr_host_exec{SMP_THREADS}, r, &sh);
    } else {
        k_smp_blocks<<<(unsigned)n_rows, SMP_THREADS>>>(f);
        CK_LAUNCH();
    }
    t_out(host, tok, dt, sizeof(int32_t) * (size_t)n_rows, op);
    t_out(host, g_smp_par, dp, pb, op);
    for (int64_t r = 0; r < n_rows; r++) memcpy(rows[r].rng.s, g_smp_par[r].rng, sizeof rows[r].rng.s);
}

// One block per row r: out[r] = log softmax(z)[tok[r]]: m the largest logit
// (NaNs skipped: no comparison with one is true), the sum of e^(z - m) in
// double as per-thread partial sums (thread t: elements t, t + nt, ...)
// folded in thread order, a fixed order (kernel_logprob sums in index order:
// the bits may differ by rounding).
struct f_logprob {
    float *out;
    const float *logits;
    int64_t ld;
    int32_t V;
    const int32_t *tok;
    template <class X> HDF(const X &ex, int64_t r, smp_shared *sh) const {
        const float *z = logits + r * ld;
        const int64_t nv = V;
        ex.phase([&](int t, int nt) {
            float m = -INFINITY;
            for (int64_t j = t; j < nv; j += nt)
                if (z[j] > m) m = z[j];
            sh->v[t] = m;
        });
        ex.phase([&](int t, int nt) {
            if (t) return;
            float m = -INFINITY;
            for (int i = 0; i < nt; i++)
                if (sh->v[i] > m) m = sh->v[i];
            sh->v[0] = m;
        });
        ex.phase([&](int t, int nt) {
            const double m = sh->v[0];
            double s = 0.0;
            for (int64_t j = t; j < nv; j += nt) s += exp((double)z[j] - m);
            sh->ds[t] = s;
        });
        ex.phase([&](int t, int nt) {
            if (t) return;
            double s = 0.0;
            for (int i = 0; i < nt; i++) s += sh->ds[i];
            out[r] = (float)(((double)z[tok[r]] - (double)sh->v[0]) - log(s));
        });
    }
};

static void logprob_rows_run(bool host, float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t V, const int32_t *tok) {
    const char *op = "logprob_rows";
    if (n_rows <= 0) return;
    if (V <= 0 || ld < V) die(op, "%d logits per row with a stride of %lld", (int)V, (long long)ld);
    if (n_rows > INT32_MAX) die(op, "%lld rows", (long long)n_rows);
    for (int64_t r = 0; r < n_rows; r++)
        if (tok[r] < 0 || tok[r] >= V) die(op, "row %lld: token %d outside the vocabulary of %d", (long long)r, (int)tok[r], (int)V);
    const float *dz = (const float *)t_in(host, 0, logits, FB((n_rows - 1) * ld + V), op);
    const int32_t *dt = (const int32_t *)t_in(host, 3, tok, sizeof(int32_t) * (size_t)n_rows, op);
    float *dout = (float *)t_tmp(host, 4, FB(n_rows), op);
    const f_logprob f{dout, dz, ld, V, dt};
    if (host) {
        smp_shared sh;
        for (int64_t r = 0; r < n_rows; r++) f(tr_host_exec{SMP_THREADS}, r, &sh);
    } else {
        k_smp_blocks<<<(unsigned)n_rows, SMP_THREADS>>>(f);
        CK_LAUNCH();
    }
    t_out(host, out, dout, FB(n_rows), op);
}

static void cu_logprob_rows(float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, const int32_t *tok) {
    lock_guard g("logprob_rows");
    logprob_rows_run(false, out, logits, ld, n_rows, n_vocab, tok);
}

static void cu_sample_rows(int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, as_sample_row *rows) {
    lock_guard g("sample_rows");
    sample_rows_run(false, tok, logits, ld, n_rows, n_vocab, rows);
}

// ---- the host runs (cuda_host_check.h: tests without a GPU) ----

static float h_expf(float x) { return tr_expf(x); }
static double h_exp_sum(const float *x, int64_t n, float shift) {
    float lanes[TR_LANES];
    for (int l = 0; l < TR_LANES; l++) lanes[l] = lane_exp_sum(x, n, shift, l, NULL);
    return fold_sum(lanes);
}
static float h_max(const float *x, int64_t n) {
    float lanes[TR_LANES];
    for (int l = 0; l < TR_LANES; l++) lanes[l] = lane_max(x, n, l);
    return fold_max(lanes);
}
static void h_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l) {
    for (int64_t i = 0; i < n; i++) dz[i] = neg_scaled_exp_elem(z[i], g, l);
}
static void h_embedding_forward(float *out, const int32_t *tok, const float *E, int64_t N, int64_t C, float scale) {
    if (N > 0 && C > 0) embedding_forward_run(true, out, tok, E, N, C, scale);
}
static void h_embedding_backward(float *dE, const float *dout, const int32_t *tok, int64_t N, int64_t C, float scale) {
    if (N > 0 && C > 0) embedding_backward_run(true, dE, dout, tok, N, C, scale);
}
static void h_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps, int nth) {
    (void)nth;
    if (N > 0 && C > 0) rmsnorm_forward_run(true, out, rstd, x, w, N, C, eps);
}
static void h_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd, int64_t N, int64_t C,
                               int nth) {
    (void)nth;
    if (N > 0 && C > 0 && (dx || dw)) rmsnorm_backward_run(true, dx, dw, dout, x, w, rstd, N, C);
}
static void h_rope_forward(float *x, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth) {
    (void)nth;
    if (N > 0 && n_heads > 0 && d > 0 && n_rot >= 2) rope_run(true, x, N, n_heads, d, n_rot, neox, cs, sn, 1.0f, "rope_forward");
}
static void h_rope_backward(float *dx, int64_t N, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, int nth) {
    (void)nth;
    if (N > 0 && n_heads > 0 && d > 0 && n_rot >= 2) rope_run(true, dx, N, n_heads, d, n_rot, neox, cs, sn, -1.0f, "rope_backward");
}
static void h_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len,
                                int32_t n_seq, int H, int Hkv, int d, float *scratch, int64_t max_len, int nth) {
    (void)scratch, (void)max_len, (void)nth;
    attention_forward_run(true, out, lse, q, k, v, seq_off, seq_len, n_seq, H, Hkv, d);
}
static void h_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int H, int Hkv,
                                 int d, int nth) {
    (void)nth;
    attention_backward_run(true, dq, dk, dv, dout, out, lse, q, k, v, seq_off, seq_len, n_seq, H, Hkv, d);
}
static void h_glu_forward(float *h, const float *g, const float *u, int64_t n, bool gelu, int nth) {
    (void)nth;
    if (n > 0) glu_forward_run(true, h, g, u, n, gelu);
}
static void h_glu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, bool gelu, int nth) {
    (void)nth;
    if (n > 0) glu_backward_run(true, dg, du, dh, g, u, n, gelu);
}
static void h_logsoftmax_forward(float *logp, float *lse, const float *logits, const int32_t *target, int64_t rows, int64_t V, int nth) {
    (void)nth;
    if (rows > 0 && V > 0) logsoftmax_forward_run(true, logp, lse, logits, target, rows, V);
}
static void h_logsoftmax_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse, const int32_t *target, int64_t rows,
                                  int64_t V, int nth) {
    (void)nth;
    if (rows > 0 && V > 0) logsoftmax_backward_run(true, dlogits, dlogp, logits, lse, target, rows, V);
}
static void h_residual_forward(float *out, const float *a, const float *b, int64_t n, int nth) {
    (void)nth;
    if (n > 0) residual_forward_run(true, out, a, b, n);
}
static void h_dropout_forward(float *out, const float *x, int64_t rows, int64_t cols, const as_dropout *drop, int nth) {
    (void)nth;
    if (rows > 0 && cols > 0) dropout_forward_run(true, out, x, rows, cols, drop);
}
static void h_dropout_backward(float *dx, const float *dout, int64_t rows, int64_t cols, const as_dropout *drop, int nth) {
    (void)nth;
    if (rows > 0 && cols > 0) dropout_backward_run(true, dx, dout, rows, cols, drop);
}
static void h_lora_forward(float *y, float *u, const float *x, const float *A, const float *B, int64_t N, int64_t in, int64_t r, int64_t out,
                           float scale, const as_dropout *drop, int nth) {
    (void)nth;
    if (N > 0 && r > 0) lora_forward_run(true, y, u, x, A, B, N, in, r, out, scale, drop);
}
static void h_lora_backward(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *u, const float *A, const float *B,
                            int64_t N, int64_t in, int64_t r, int64_t out, float scale, const as_dropout *drop, float *du, int nth) {
    (void)nth;
    if (N > 0 && r > 0) lora_backward_run(true, dx, dA, dB, dy, x, u, A, B, N, in, r, out, scale, drop, du);
}
static double h_sum_squares(const float *x, size_t n, int nth) {
    (void)nth;
    return n ? sum_squares_run(true, x, n) : 0.0;
}
static void h_grad_scale(float *x, size_t n, float c, int nth) {
    (void)nth;
    if (n) grad_scale_run(true, x, n, c);
}
static void h_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd, int64_t t,
                           int nth) {
    (void)nth;
    if (n) adamw_update_run(true, p, g, m, v, n, lr, beta1, beta2, eps, wd, t);
}
static void h_rmsprop_update(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth) {
    (void)nth;
    if (n) rmsprop_update_run(true, p, g, v, n, lr, alpha, eps, wd);
}
static void h_sgd_update(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth) {
    (void)nth;
    if (n) sgd_update_run(true, p, g, m, n, lr, momentum, wd, t);
}

static void h_logprob_rows(float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, const int32_t *tok) {
    logprob_rows_run(true, out, logits, ld, n_rows, n_vocab, tok);
}
static void h_sample_rows(int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, as_sample_row *rows) {
    sample_rows_run(true, tok, logits, ld, n_rows, n_vocab, rows);
}

static as_cuda_train_host g_train_host;

extern "C" __attribute__((visibility("default"))) const as_cuda_train_host *alphaspin_cuda_train_host(void) {
    as_cuda_train_host *h = &g_train_host;
    h->version = AS_CUDA_TRAIN_HOST_VERSION;
    h->expf_ = h_expf, h->exp_sum = h_exp_sum, h->max = h_max, h->neg_scaled_exp = h_neg_scaled_exp;
    h->ops.embedding_forward = h_embedding_forward, h->ops.embedding_backward = h_embedding_backward;
    h->ops.rmsnorm_forward = h_rmsnorm_forward, h->ops.rmsnorm_backward = h_rmsnorm_backward;
    h->ops.rope_forward = h_rope_forward, h->ops.rope_backward = h_rope_backward;
    h->ops.attention_forward = h_attention_forward, h->ops.attention_backward = h_attention_backward;
    h->ops.glu_forward = h_glu_forward, h->ops.glu_backward = h_glu_backward;
    h->ops.logsoftmax_forward = h_logsoftmax_forward, h->ops.logsoftmax_backward = h_logsoftmax_backward;
    h->ops.residual_forward = h_residual_forward;
    h->ops.dropout_forward = h_dropout_forward, h->ops.dropout_backward = h_dropout_backward;
    h->ops.lora_forward = h_lora_forward, h->ops.lora_backward = h_lora_backward;
    h->ops.sum_squares = h_sum_squares, h->ops.grad_scale = h_grad_scale;
    h->ops.adamw_update = h_adamw_update, h->ops.rmsprop_update = h_rmsprop_update, h->ops.sgd_update = h_sgd_update;
    h->ops.sample_rows = h_sample_rows;
    h->ops.logprob_rows = h_logprob_rows;
    return h;
}

// ---- collectives: NCCL (issue 23) ----
//
// The optional comm_* group of as_backend (backend.h), over which src/dist
// carries the payload of its gathers when several processes train with
// device cuda: one communicator per process, each process on its own GPU
// (the GPU of its local rank), bootstrapped over MPI by src/dist (rank 0's
// ncclGetUniqueId, broadcast; ncclCommInitRank on every rank).  The one
// collective is ncclAllGather of equal-size byte blocks (ncclUint8): the
// training loop exchanges the gradient pieces of its fixed summation tree
// (train/loop.c) and every rank finishes the tree in the same order, so N
// processes keep one process's bits.  ncclAllReduce is not used: it would sum
// in an order that depends on the number of ranks and the topology.
//
// NOT YET RUN ON A GPU (compiled against nccl.h, and libnccl loaded and its
// version read, on machines without one: test_cuda_nccl_load);
// scripts/device_check.sh runs test_cuda_nccl on one GPU with a one-rank
// communicator.  Built without NCCL (CMake found no nccl.h), every entry says
// so through comm_status.
//
// libnccl.so.2 is dlopened on first use (nccl_load), not linked: a GPU
// machine without NCCL still loads the plugin and runs everything but these
// collectives (comm_status then says why), and single-process jobs never
// touch it.  It is looked for as the dynamic loader does (LD_LIBRARY_PATH,
// this plugin's RUNPATH, which holds the folder CMake found it in, the
// system's folders), then at that folder by its full path.
//
// The blocks are host memory (the table's convention): each call copies this
// rank's block to the device, gathers in chunks of at most COMM_CHUNK bytes
// per rank on the communicator's own stream, and copies each rank's chunk back
// to its place in recv (r * block + offset), then waits for the stream.
struct as_comm {
#ifdef ALPHASPIN_HAVE_NCCL
    ncclComm_t nccl;
    cudaStream_t stream;
    int nranks, rank;
    dbuf send, recv;
#else
    int unused;
#endif
};

static int comm_fail(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return CU_FAIL;
}

#ifdef ALPHASPIN_HAVE_NCCL
static_assert(sizeof(ncclUniqueId) == AS_COMM_ID_BYTES, "AS_COMM_ID_BYTES is NCCL's unique id size");
#define COMM_CHUNK ((size_t)64 << 20)

// The NCCL functions used, resolved from libnccl.so.2 once.
static struct {
    ncclResult_t (*GetVersion)(int *);
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*AllGather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    const char *(*GetErrorString)(ncclResult_t);
    const char *(*GetLastError)(ncclComm_t);
} nccl;
static pthread_once_t nccl_once = PTHREAD_ONCE_INIT;
static char nccl_why[512]; // empty when loaded

static void nccl_load_once(void) {
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
#ifdef ALPHASPIN_NCCL_DIR
    if (!h) h = dlopen(ALPHASPIN_NCCL_DIR "/libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
#endif
    if (!h) {
        snprintf(nccl_why, sizeof nccl_why, "NCCL is not installed here (dlopen libnccl.so.2: %s)", dlerror());
        return;
    }
    struct { void **fn; const char *name; } syms[] = {
        {(void **)&nccl.GetVersion, "ncclGetVersion"},     {(void **)&nccl.GetUniqueId, "ncclGetUniqueId"},
        {(void **)&nccl.CommInitRank, "ncclCommInitRank"}, {(void **)&nccl.AllGather, "ncclAllGather"},
        {(void **)&nccl.CommDestroy, "ncclCommDestroy"},   {(void **)&nccl.GetErrorString, "ncclGetErrorString"},
        {(void **)&nccl.GetLastError, "ncclGetLastError"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].fn = dlsym(h, syms[i].name))) {
            snprintf(nccl_why, sizeof nccl_why, "libnccl.so.2 has no %s (too old an NCCL)", syms[i].name);
            return;
        }
}

// NULL when NCCL is usable, else why not.
static const char *nccl_load(void) {
    pthread_once(&nccl_once, nccl_load_once);
    return nccl_why[0] ? nccl_why : NULL;
}

static const char *cu_comm_status(void) { return nccl_load(); }

// For tests on machines without a GPU (test_cuda_nccl_load): loads libnccl
// and returns ncclGetVersion's code (e.g. 22805 for 2.28.5), or -1 with why in err.
extern "C" __attribute__((visibility("default"))) int alphaspin_cuda_nccl_version_host(char *err, size_t n) {
    const char *why = nccl_load();
    int v = 0;
    if (!why && nccl.GetVersion(&v) != ncclSuccess) why = "ncclGetVersion failed";
    if (why) return snprintf(err, n, "%s", why), -1;
    return v;
}

static int cu_comm_unique_id(void *id, char *err, size_t n) {
    if (const char *why = nccl_load()) return comm_fail(err, n, "%s", why);
    ncclUniqueId u;
    const ncclResult_t r = nccl.GetUniqueId(&u);
    if (r != ncclSuccess) return comm_fail(err, n, "ncclGetUniqueId: %s", nccl.GetErrorString(r));
    memcpy(id, &u, sizeof u);
    return CU_OK;
}

static as_comm *cu_comm_init(const void *id, int nranks, int rank, char *err, size_t n) {
    const char *op = "comm_init";
    if (const char *why = nccl_load()) return comm_fail(err, n, "%s", why), (as_comm *)NULL;
    lock_guard g(op); // binds this thread to the process's device: the communicator's GPU
    as_comm *c = (as_comm *)calloc(1, sizeof *c);
    if (!c) return comm_fail(err, n, "out of memory"), (as_comm *)NULL;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        free(c);
        return comm_fail(err, n, "cuda:%d: cudaStreamCreate: %s", g_device, cudaGetErrorString(e)), (as_comm *)NULL;
    }
    const ncclResult_t r = nccl.CommInitRank(&c->nccl, nranks, u, rank);
    if (r != ncclSuccess) {
        cudaStreamDestroy(c->stream);
        free(c);
        return comm_fail(err, n, "cuda:%d: ncclCommInitRank(%d ranks, rank %d): %s%s%s", g_device, nranks, rank, nccl.GetErrorString(r),
                         *nccl.GetLastError(NULL) ? ": " : "", nccl.GetLastError(NULL)),
               (as_comm *)NULL;
    }
    c->nranks = nranks, c->rank = rank;
    return c;
}

static int cu_comm_allgather(as_comm *c, const void *send, void *recv, size_t block, char *err, size_t n) {
    const char *op = "comm_allgather";
    lock_guard g(op);
    const size_t chunk = block < COMM_CHUNK ? block : COMM_CHUNK;
    if (!chunk) return CU_OK;
    char *ds = (char *)grow(&c->send, chunk, op), *dr = (char *)grow(&c->recv, chunk * (size_t)c->nranks, op);
    for (size_t off = 0; off < block; off += chunk) {
        const size_t k = block - off < chunk ? block - off : chunk;
        cudaError_t e = cudaMemcpyAsync(ds, (const char *)send + off, k, cudaMemcpyHostToDevice, c->stream);
        if (e != cudaSuccess) return comm_fail(err, n, "cuda:%d: cudaMemcpyAsync: %s", g_device, cudaGetErrorString(e));
        const ncclResult_t r = nccl.AllGather(ds, dr, k, ncclUint8, c->nccl, c->stream);
        if (r != ncclSuccess)
            return comm_fail(err, n, "cuda:%d: ncclAllGather(%zu bytes per rank): %s%s%s", g_device, k, nccl.GetErrorString(r),
                             *nccl.GetLastError(c->nccl) ? ": " : "", nccl.GetLastError(c->nccl));
        // Rank r's k bytes land at r * k on the device, at r * block + off in recv (one
        // copy per rank: cudaMemcpy2D's pitch, block, could pass its limit, memPitch).
        for (int r = 0; r < c->nranks && e == cudaSuccess; r++)
            e = cudaMemcpyAsync((char *)recv + (size_t)r * block + off, dr + (size_t)r * k, k, cudaMemcpyDeviceToHost, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) return comm_fail(err, n, "cuda:%d: gathering %zu bytes per rank: %s", g_device, k, cudaGetErrorString(e));
    }
    return CU_OK;
}

static void cu_comm_destroy(as_comm *c) {
    if (!c) return;
    const char *op = "comm_destroy";
    lock_guard g(op);
    nccl.CommDestroy(c->nccl);
    if (c->send.p) cudaFree(c->send.p);
    if (c->recv.p) cudaFree(c->recv.p);
    cudaStreamDestroy(c->stream);
    free(c);
}
#else
static const char *cu_comm_status(void) {
    return "the CUDA plugin was built without NCCL (CMake found no nccl.h; see README, \"Devices\")";
}
extern "C" __attribute__((visibility("default"))) int alphaspin_cuda_nccl_version_host(char *err, size_t n) {
    return snprintf(err, n, "%s", cu_comm_status()), -1;
}
static int cu_comm_unique_id(void *id, char *err, size_t n) { return (void)id, comm_fail(err, n, "%s", cu_comm_status()); }
static as_comm *cu_comm_init(const void *id, int nranks, int rank, char *err, size_t n) {
    (void)id, (void)nranks, (void)rank;
    return comm_fail(err, n, "%s", cu_comm_status()), (as_comm *)NULL;
}
static int cu_comm_allgather(as_comm *c, const void *send, void *recv, size_t block, char *err, size_t n) {
    (void)c, (void)send, (void)recv, (void)block;
    return comm_fail(err, n, "%s", cu_comm_status());
}
static void cu_comm_destroy(as_comm *c) { (void)c; }
#endif

// ---- the table ----

static int cu_n_variants(void) { return 1; }
static const char *cu_variant_name(int i) { return i == 0 ? g_variant : "default"; }
static int cu_use_variant(int i) { return i == -1 || i == 0 ? CU_OK : CU_FAIL; }

static as_backend g_table;

static void fill_table(void) {
    g_table.name = "cuda";
    g_table.n_variants = cu_n_variants;
    g_table.variant_name = cu_variant_name;
    g_table.use_variant = cu_use_variant;
    g_table.matmul = cu_matmul;
    g_table.get_rows = cu_get_rows;
    g_table.rmsnorm = cu_rmsnorm;
    g_table.glu = cu_glu;
    g_table.rope = cu_rope;
    g_table.attention_rows = cu_attention_rows;
    g_table.exp = cu_exp;
    g_table.argmax = cu_argmax;
    g_table.logprob = cu_logprob;
    g_table.add = cu_add;
    g_table.scale = cu_scale;
    g_table.buf_alloc = cu_buf_alloc;
    g_table.buf_free = cu_buf_free;
    g_table.sync = cu_sync;
    g_table.weights_new = cu_weights_new;
    g_table.weights_free = cu_weights_free;
    g_table.weights_matmul = cu_weights_matmul;
    g_table.weights_bytes = cu_weights_bytes;
    g_table.kv_init = cu_kv_init;
    g_table.kv_release = cu_kv_release;
    g_table.kv_begin = cu_kv_begin;
    g_table.kv_store = cu_kv_store;
    g_table.kv_attention = cu_kv_attention;
    g_table.kv_copy_prefix = cu_kv_copy_prefix;
    g_table.last_error = cu_last_error;
    g_table.sample_rows = cu_sample_rows;
    g_table.logprob_rows = cu_logprob_rows;
    g_table.sgemm = cu_sgemm;
    g_table.exp_shift_sum = cu_exp_shift_sum;
    g_table.max = cu_max;
    g_table.neg_scaled_exp = cu_neg_scaled_exp;
    g_table.silu_glu_forward = cu_silu_glu_forward;
    g_table.silu_glu_backward = cu_silu_glu_backward;
    g_table.logsumexp = cu_logsumexp;
    g_table.embedding_forward = cu_embedding_forward;
    g_table.embedding_backward = cu_embedding_backward;
    g_table.linear_forward = cu_linear_forward;
    g_table.linear_backward = cu_linear_backward;
    g_table.rmsnorm_forward = cu_rmsnorm_forward;
    g_table.rmsnorm_backward = cu_rmsnorm_backward;
    g_table.rope_forward = cu_rope_forward;
    g_table.rope_backward = cu_rope_backward;
    g_table.attention_forward = cu_attention_forward;
    g_table.attention_backward = cu_attention_backward;
    g_table.glu_forward = cu_glu_forward;
    g_table.glu_backward = cu_glu_backward;
    g_table.logsoftmax_forward = cu_logsoftmax_forward;
    g_table.logsoftmax_backward = cu_logsoftmax_backward;
    g_table.residual_forward = cu_residual_forward;
    g_table.zero = cu_zero;
    g_table.gather_rows = cu_gather_rows;
    g_table.scale_rows = cu_scale_rows;
    g_table.dropout_forward = cu_dropout_forward;
    g_table.dropout_backward = cu_dropout_backward;
    g_table.lora_forward = cu_lora_forward;
    g_table.lora_backward = cu_lora_backward;
    g_table.gemm_bf16 = cu_gemm_bf16;
    g_table.bf16_pack_b = cu_bf16_pack_b;
    g_table.bf16_packed_free = cu_bf16_packed_free;
    g_table.gemm_bf16_packed = cu_gemm_bf16_packed;
    g_table.sum_squares = cu_sum_squares;
    g_table.grad_scale = cu_grad_scale;
    g_table.adamw_update = cu_adamw_update;
    g_table.rmsprop_update = cu_rmsprop_update;
    g_table.sgd_update = cu_sgd_update;
    g_table.comm_status = cu_comm_status;
    g_table.comm_unique_id = cu_comm_unique_id;
    g_table.comm_init = cu_comm_init;
    g_table.comm_allgather = cu_comm_allgather;
    g_table.comm_destroy = cu_comm_destroy;
}

static const as_backend *fail(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

// The plugin's entry point (backend.c): the backend on CUDA device `device`
// (-1: the one already bound, else 0), or NULL with one line in err saying why.
extern "C" __attribute__((visibility("default"))) const as_backend *alphaspin_cuda_backend(int device, char *err, size_t n) {
    pthread_mutex_lock(&g_lock);
    const as_backend *r = NULL;
    int count = 0;
    cudaError_t e;
    if (g_device >= 0) {
        r = device < 0 || device == g_device ? &g_table
                                             : fail(err, n, "cuda:%d: this process already uses cuda:%d (one CUDA device per process)", device, g_device);
        goto out;
    }
    if (device < 0) device = 0;
    e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        // Without a driver the runtime says "driver version is insufficient": say which it is.
        void *drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (drv) dlclose(drv);
        r = fail(err, n, "no CUDA device: cudaGetDeviceCount: %s%s", cudaGetErrorString(e),
                 drv ? "" : " (no NVIDIA driver here: libcuda.so.1 not found)");
        goto out;
    }
    if (count == 0) {
        r = fail(err, n, "no CUDA device: cudaGetDeviceCount found none");
        goto out;
    }
    if (device >= count) {
        r = fail(err, n, "cuda:%d: no such device (%d CUDA device%s)", device, count, count == 1 ? "" : "s");
        goto out;
    }
    {
        cudaDeviceProp prop;
        if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess || (e = cudaSetDevice(device)) != cudaSuccess) {
            r = fail(err, n, "cuda:%d: %s", device, cudaGetErrorString(e));
            goto out;
        }
        if (prop.major < 9) {
            r = fail(err, n, "cuda:%d is %s (compute capability %d.%d): this build has code for sm_90 and later only", device, prop.name, prop.major,
                     prop.minor);
            goto out;
        }
        cublasStatus_t s = cublasCreate(&g_blas);
        if (s != CUBLAS_STATUS_SUCCESS) {
            r = fail(err, n, "cuda:%d: cublasCreate: %s", device, cublasGetStatusString(s));
            goto out;
        }
        // fp32 products in fp32: no TF32, no reduced-precision reductions.
        cublasSetMathMode(g_blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
        if ((s = cublasLtCreate(&g_lt)) != CUBLAS_STATUS_SUCCESS) {
            cublasDestroy(g_blas);
            r = fail(err, n, "cuda:%d: cublasLtCreate: %s", device, cublasGetStatusString(s));
            goto out;
        }
        if ((e = cudaMalloc(&g_lt_ws, g_lt_ws_bytes)) != cudaSuccess) {
            cublasLtDestroy(g_lt), cublasDestroy(g_blas);
            r = fail(err, n, "cuda:%d: cudaMalloc: %s", device, cudaGetErrorString(e));
            goto out;
        }
        snprintf(g_variant, sizeof g_variant, "%s (sm_%d%d)", prop.name, prop.major, prop.minor);
        g_device = device;
        fill_table();
        r = &g_table;
    }
out:
    pthread_mutex_unlock(&g_lock);
    return r;
}
