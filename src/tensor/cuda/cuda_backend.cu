// The CUDA backend (issue 22, first step): every op of as_backend
// (tensor/backend.h) on one NVIDIA GPU, built as the plugin
// libalphaspin_cuda.so that backend.c dlopens.  Only the entry point
// alphaspin_cuda_backend is exported; cudart is linked in statically, cuBLAS
// and cuBLASLt dynamically.
//
// NOT YET RUN ON A GPU: this was written and compiled on machines without one
// (issue 22); scripts/device_check.sh runs its tests where there is a device.
// It provides every op of the table, so a model can run on it (generate,
// logprobs, chat, eval --device cuda), untried.
//
// The table's convention is host pointers, so every op copies its inputs to
// the device and its outputs back (cudaMemcpy on the legacy default stream,
// synchronous): correct, and slow.  What stays resident on the device: the
// weight groups (weights_new: each group's parts stacked and dequantised once,
// bf16, plus fp32 made by the first F32 product) and the KV cache (kv_init:
// kernel_kv's k and v are device pointers, the CPU's fp32 layout); the
// activations, logits and LoRA factors travel per call.  Ops are serialised
// by one mutex (the model calls them from OpenMP threads).
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
// get_row dequantises the one row on the device (exact).
// add and scale round once per element (exact, as the CPU); logprob runs on
// the device too: one block, the fp32 max and the sum of e^(z - max) in
// double, both fixed-order trees.
//
// Determinism: reductions are fixed-order block trees (no floating-point
// atomics); cuBLASLt is asked for algorithms without split-K reductions.  One
// device per process (the table's functions carry no context): the first
// alphaspin_cuda_backend call that succeeds binds the process to its device.
//
// Errors: a failing CUDA or cuBLAS call prints one line naming the op and the
// error, and aborts (the ops return void).  So do weights_new's and kv_init's
// errors (bad parts or sizes, no device memory), whose contract is NULL /
// AS_FAIL + as_error: the plugin links nothing of alphaspin, so it cannot set
// as_error, and a caller would print a stale message.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "tensor/backend.h"
}

#define CU_OK 0
#define CU_FAIL (-1)

// ---- errors ----

static void die(const char *op, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "alphaspin: cuda backend: %s: %s\n", op, msg);
    fflush(stderr);
    abort();
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

static void *dmalloc(size_t bytes, const char *op) {
    void *p = NULL;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
        die(op, "cudaMalloc(%zu bytes): %s (weights hold %zu bytes, KV caches %zu; nothing is evicted yet)", bytes, cudaGetErrorString(e),
            g_weight_bytes, g_kv_bytes);
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

struct lock_guard {
    explicit lock_guard(const char *op) {
        pthread_mutex_lock(&g_lock);
        CK(cudaSetDevice(g_device)); // the calling thread's current device may be another
    }
    ~lock_guard() { pthread_mutex_unlock(&g_lock); }
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
__host__ __device__ static inline float bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
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

static void lt_matmul_bf16(const __nv_bfloat16 *W, const __nv_bfloat16 *X, float *Y, int64_t rows, int64_t cols, int64_t n, const char *op) {
    // Column-major view: Y (rows x n) = W^T (W stored cols x rows) * X (cols x n).
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulPreference_t pref;
    CKB(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    CKB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
    CKB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
    CKB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)cols, (uint64_t)rows, cols));
    CKB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)cols, (uint64_t)n, cols));
    CKB(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, (uint64_t)rows, (uint64_t)n, rows));
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
                         CUDA_R_32F, (int)rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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
        lt_matmul_bf16(e->bf16, dxb, dy, rows, cols, n_tokens, op);
    }
    CK(cudaMemcpy2D(out, sizeof(float) * (size_t)ldo, dy, sizeof(float) * (size_t)rows, sizeof(float) * (size_t)rows, (size_t)n_tokens,
                    cudaMemcpyDeviceToHost));
}

static void cu_get_row(const as_matrix *w, int64_t r, float *out) {
    const char *op = "get_row";
    check_matrix(w, op);
    if (r < 0 || r >= w->rows) die(op, "row %lld of %lld", (long long)r, (long long)w->rows);
    lock_guard g(op);
    float *d = (float *)grow(&b_a, sizeof(float) * (size_t)w->cols, op);
    dequant_rows(w, r, 1, d, op);
    CK(cudaMemcpy(out, d, sizeof(float) * (size_t)w->cols, cudaMemcpyDeviceToHost));
}

// C = alpha op(A) op(B) + beta C, row-major: in cuBLAS's column-major terms
// C^T = alpha op(B)^T op(A)^T + beta C^T.  Operands are copied compact.
static void cu_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                     float beta, float *C, int64_t ldc, int nth) {
    const char *op = "sgemm";
    (void)nth;
    if (M <= 0 || N <= 0) return;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) die(op, "matrix too large");
    lock_guard g(op);
    const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    float *dA = (float *)grow(&b_a, sizeof(float) * (size_t)(ar * ac > 0 ? ar * ac : 1), op);
    float *dB = (float *)grow(&b_b, sizeof(float) * (size_t)(br * bc > 0 ? br * bc : 1), op);
    float *dC = (float *)grow(&b_c, sizeof(float) * (size_t)(M * N), op);
    if (K > 0) {
        CK(cudaMemcpy2D(dA, sizeof(float) * (size_t)ac, A, sizeof(float) * (size_t)lda, sizeof(float) * (size_t)ac, (size_t)ar, cudaMemcpyHostToDevice));
        CK(cudaMemcpy2D(dB, sizeof(float) * (size_t)bc, B, sizeof(float) * (size_t)ldb, sizeof(float) * (size_t)bc, (size_t)br, cudaMemcpyHostToDevice));
    }
    if (beta != 0.0f)
        CK(cudaMemcpy2D(dC, sizeof(float) * (size_t)N, C, sizeof(float) * (size_t)ldc, sizeof(float) * (size_t)N, (size_t)M, cudaMemcpyHostToDevice));
    else CK(cudaMemset(dC, 0, sizeof(float) * (size_t)(M * N))); // beta 0: C is not read (it may hold NaN)
    CKB(cublasSgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, dB, (int)(bc > 0 ? bc : 1), dA,
                    (int)(ac > 0 ? ac : 1), &beta, dC, (int)N));
    CK(cudaMemcpy2D(C, sizeof(float) * (size_t)ldc, dC, sizeof(float) * (size_t)N, sizeof(float) * (size_t)N, (size_t)M, cudaMemcpyDeviceToHost));
}

// ---- row ops ----

__global__ void k_rmsnorm(float *out, const float *x, const float *w, int64_t C, float eps) {
    __shared__ double sh[RED_THREADS];
    double s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += (double)x[i] * x[i];
    s = block_reduce(sh, s, op_add_d());
    const float inv = (float)(1.0 / sqrt(s / (double)C + (double)eps));
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) out[i] = __fmul_rn(__fmul_rn(x[i], inv), w[i]);
}

__global__ void k_glu(float *out, const float *g, const float *u, int64_t n, bool gelu) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float x = g[i];
        const float a = gelu ? 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) : x / (1.0f + expf(-x));
        out[i] = a * u[i];
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

__global__ void k_max(const float *x, int64_t n, float *out) {
    __shared__ float sh[RED_THREADS];
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = x[i] > m ? x[i] : m;
    m = block_reduce(sh, m, op_max_f());
    if (threadIdx.x == 0) *out = m;
}

__global__ void k_exp_shift_sum(float *x, int64_t n, float shift, double *out) {
    __shared__ double sh[RED_THREADS];
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float e = expf(x[i] - shift);
        x[i] = e, s += e;
    }
    s = block_reduce(sh, s, op_add_d());
    if (threadIdx.x == 0) *out = s;
}

__global__ void k_neg_scaled_exp(float *dz, const float *z, int64_t n, float g, float l) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dz[i] = -g * expf(z[i] - l);
}

__global__ void k_silu_fwd(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float s = 1.0f / (1.0f + expf(-g[i]));
        h[i] = g[i] * s * u[i];
    }
}

__global__ void k_silu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float s = 1.0f / (1.0f + expf(-g[i]));
        dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] = dh[i] * g[i] * s;
    }
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

static void cu_rmsnorm(float *out, const float *x, const float *w, int64_t C, float eps) {
    const char *op = "rmsnorm";
    if (C <= 0) return;
    lock_guard g(op);
    float *dx = upload(&b_a, x, C, op), *dw = upload(&b_b, w, C, op), *dy = (float *)grow(&b_c, sizeof(float) * (size_t)C, op);
    k_rmsnorm<<<1, RED_THREADS>>>(dy, dx, dw, C, eps);
    CK_LAUNCH();
    download(out, dy, C, op);
}

static void cu_glu(float *out, const float *gg, const float *u, int64_t n, bool gelu) {
    const char *op = "glu";
    if (n <= 0) return;
    lock_guard g(op);
    float *dg = upload(&b_a, gg, n, op), *du = upload(&b_b, u, n, op), *dy = (float *)grow(&b_c, sizeof(float) * (size_t)n, op);
    k_glu<<<grid_for(n, 256), 256>>>(dy, dg, du, n, gelu);
    CK_LAUNCH();
    download(out, dy, n, op);
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
    k_max<<<1, RED_THREADS>>>(d, n, dm);
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
    k_exp_shift_sum<<<1, RED_THREADS>>>(d, n, shift, ds);
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

static void cu_add(float *y, const float *x, int64_t n) {
    const char *op = "add";
    if (n <= 0) return;
    lock_guard g(op);
    float *dy = upload(&b_a, y, n, op), *dx = upload(&b_b, x, n, op);
    k_add<<<grid_for(n, 256), 256>>>(dy, dx, n);
    CK_LAUNCH();
    download(y, dy, n, op);
}

static void cu_scale(float *x, int64_t n, float s) {
    const char *op = "scale";
    if (n <= 0) return;
    lock_guard g(op);
    float *d = upload(&b_a, x, n, op);
    k_scale<<<grid_for(n, 256), 256>>>(d, n, s);
    CK_LAUNCH();
    download(x, d, n, op);
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
static void *stack_of(as_weights *w, bool bf16, const char *op) {
    void **at = bf16 ? (void **)&w->bf16 : (void **)&w->f32;
    if (*at || w->rows == 0) return *at;
    const size_t eb = bf16 ? sizeof(__nv_bfloat16) : sizeof(float), bytes = eb * (size_t)w->rows * (size_t)w->cols;
    uint8_t *d = (uint8_t *)dmalloc(bytes, op);
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
    stack_of(w, true, op);
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
static void cu_weights_matmul(as_weights *w, float *out, int64_t ldo, const float *x, int64_t n_tokens, kernel_precision p) {
    const char *op = "weights_matmul";
    if (ldo < w->rows) die(op, "ldo %lld < rows %lld", (long long)ldo, (long long)w->rows);
    if (n_tokens <= 0 || w->rows == 0) return;
    if (n_tokens > INT32_MAX) die(op, "%lld tokens: too many for one product", (long long)n_tokens);
    lock_guard g(op);
    const int64_t rows = w->rows, cols = w->cols;
    const bool bf16 = p != KERNEL_PRECISION_F32;
    const void *W = stack_of(w, bf16, op);
    float *dx = (float *)grow(&b_a, sizeof(float) * (size_t)(n_tokens * cols), op);
    float *dy = (float *)grow(&b_c, sizeof(float) * (size_t)(n_tokens * rows), op);
    CK(cudaMemcpy(dx, x, sizeof(float) * (size_t)(n_tokens * cols), cudaMemcpyHostToDevice));
    if (!bf16) {
        const float one = 1.0f, zero = 0.0f;
        CKB(cublasSgemm(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n_tokens, (int)cols, &one, (const float *)W, (int)cols, dx, (int)cols, &zero, dy,
                        (int)rows));
    } else {
        __nv_bfloat16 *dxb = (__nv_bfloat16 *)grow(&b_b, sizeof(__nv_bfloat16) * (size_t)(n_tokens * cols), op);
        k_to_bf16<<<grid_for(n_tokens * cols, 256), 256>>>(dx, dxb, n_tokens * cols);
        CK_LAUNCH();
        lt_matmul_bf16((const __nv_bfloat16 *)W, dxb, dy, rows, cols, n_tokens, op);
    }
    CK(cudaMemcpy2D(out, sizeof(float) * (size_t)ldo, dy, sizeof(float) * (size_t)rows, sizeof(float) * (size_t)rows, (size_t)n_tokens,
                    cudaMemcpyDeviceToHost));
}

// ---- RoPE (rope.h): n_heads vectors of d, pairs (i, i + n_rot/2) (neox) or (2i, 2i+1) ----

__global__ void k_rope(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    const int half = n_rot / 2, h = blockIdx.x;
    if (h >= n_heads) return;
    float *x = v + (int64_t)h * d;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const float c = cs[i], s = sign * sn[i], a = x[i0], b = x[i1];
        x[i0] = a * c - b * s, x[i1] = a * s + b * c;
    }
}

static void cu_rope(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign) {
    const char *op = "rope";
    if (n_heads <= 0 || d <= 0 || n_rot < 2) return;
    if (n_rot > d) die(op, "n_rot %d > d %d", n_rot, d);
    lock_guard g(op);
    const int64_t n = (int64_t)n_heads * d;
    float *dv = upload(&b_a, v, n, op), *dc = upload(&b_b, cs, n_rot / 2, op), *ds = upload(&b_c, sn, n_rot / 2, op);
    k_rope<<<n_heads, 128>>>(dv, n_heads, d, n_rot, neox, dc, ds, sign);
    CK_LAUNCH();
    download(v, dv, n, op);
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

template <bool F16>
__global__ void k_attention(const float *q, int64_t q_stride, int n_heads, int d, const int32_t *n_keys, const void *k, int64_t k_tile_stride,
                            const void *v, int64_t v_stride, float scale, float *out, int64_t out_stride, float *scores, int64_t s_stride) {
    __shared__ float qs[256];
    __shared__ float red[ATT_THREADS];
    const int r = blockIdx.x / n_heads, h = blockIdx.x % n_heads, t = threadIdx.x;
    const int nk = n_keys[r];
    const float *qr = q + r * q_stride + (int64_t)h * d;
    float *s = scores + (int64_t)blockIdx.x * s_stride;
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
    float *o = out + r * out_stride + (int64_t)h * d;
    for (int e = t; e < d; e += ATT_THREADS) {
        float a = 0.0f;
        for (int j = 0; j < nk; j++) a = fmaf(s[j], kv_at<F16>(v, (int64_t)j * v_stride + e), a);
        o[e] = a * inv;
    }
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

// One position's key (kvd floats at src) into its tile column (dst: the key's
// first element; elements 16 apart).
__global__ void k_kv_store_key(float *dst, const float *src, int64_t kvd) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < kvd; e += (int64_t)gridDim.x * blockDim.x) dst[e * KERNEL_KV_TILE] = src[e];
}

// Size errors abort with one line (the plugin cannot set as_error, as weights_new).
static int cu_kv_init(kernel_kv *kv, int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim) {
    const char *op = "kv_init";
    memset(kv, 0, sizeof *kv);
    if (n_layer < 1 || n_seq < 1 || n_ctx < 1 || n_head_kv < 1 || head_dim < 1)
        die(op, "expected positive sizes, found %d layers, %d sequences, %d positions, %d x %d", n_layer, n_seq, n_ctx, n_head_kv, head_dim);
    if (head_dim > 256) die(op, "head size %d (at most 256)", head_dim);
    const size_t ctx_pad = ((size_t)n_ctx + KERNEL_KV_CHUNK - 1) / KERNEL_KV_CHUNK * KERNEL_KV_CHUNK;
    size_t n, bytes;
    if (ctx_pad > (size_t)INT32_MAX || __builtin_mul_overflow((size_t)n_layer * (size_t)n_seq, ctx_pad, &n) ||
        __builtin_mul_overflow(n, (size_t)n_head_kv * (size_t)head_dim, &n) || __builtin_mul_overflow(n, sizeof(float), &bytes))
        die(op, "%d sequences x %d positions overflow the address space", n_seq, n_ctx);
    kv->n_layer = n_layer, kv->n_seq = n_seq, kv->n_ctx = n_ctx, kv->n_head_kv = n_head_kv, kv->head_dim = head_dim;
    kv->kv_dim = n_head_kv * head_dim;
    kv->ctx_pad = (int32_t)ctx_pad;
    kv->seq_stride = ctx_pad * (size_t)kv->kv_dim;
    lock_guard g(op);
    kv->k = dmalloc(bytes, op);
    g_kv_bytes += bytes;
    kv->v = dmalloc(bytes, op);
    g_kv_bytes += bytes;
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

static void cu_kv_store(kernel_kv *kv, int32_t l, int32_t seq, int64_t pos, const float *ki, const float *vi) {
    const char *op = "kv_store";
    if (kv->elem_bytes != 4) die(op, "store before the cache's first kv_begin");
    if (l < 0 || l >= kv->n_layer || seq < 0 || seq >= kv->n_seq || pos < 0 || pos >= kv->n_ctx)
        die(op, "layer %d, sequence %d, position %lld outside the cache (%d, %d, %d)", (int)l, (int)seq, (long long)pos, (int)kv->n_layer,
            (int)kv->n_seq, (int)kv->n_ctx);
    lock_guard g(op);
    const int64_t kvd = kv->kv_dim;
    const size_t at = ((size_t)l * kv->n_seq + (size_t)seq) * kv->seq_stride, p = (size_t)pos;
    float *K = (float *)kv->k + at + p / KERNEL_KV_TILE * KERNEL_KV_TILE * (size_t)kvd + p % KERNEL_KV_TILE, *V = (float *)kv->v + at + p * (size_t)kvd;
    const float *dk = upload(&b_a, ki, kvd, op);
    k_kv_store_key<<<grid_for(kvd, 256), 256>>>(K, dk, kvd);
    CK_LAUNCH();
    CK(cudaMemcpy(V, vi, sizeof(float) * (size_t)kvd, cudaMemcpyHostToDevice));
}

// k_attention over the device cache: q and n_keys in, out back (host
// pointers, strided); a->scores (host scratch) is not used, the scores live
// in device scratch.
static void cu_kv_attention(const kernel_kv_attn *a) {
    const char *op = "kv_attention";
    const kernel_kv *kv = a->kv;
    if (a->n_rows <= 0 || a->n_heads <= 0) return;
    if (kv->elem_bytes != 4) die(op, "attention before the cache's first kv_begin");
    if (a->layer < 0 || a->layer >= kv->n_layer || a->seq < 0 || a->seq >= kv->n_seq || a->g < 0 || a->g >= kv->n_head_kv)
        die(op, "layer %d, sequence %d, KV head %d outside the cache", (int)a->layer, (int)a->seq, (int)a->g);
    const int R = a->n_rows, G = a->n_heads, d = kv->head_dim;
    int32_t maxk = 0;
    for (int r = 0; r < R; r++) {
        if (a->n_keys[r] < 1 || a->n_keys[r] > kv->n_ctx) die(op, "row %d has %d keys (cache of %d positions)", r, (int)a->n_keys[r], (int)kv->n_ctx);
        maxk = a->n_keys[r] > maxk ? a->n_keys[r] : maxk;
    }
    lock_guard g(op);
    const int64_t qw = (int64_t)G * d, kvd = kv->kv_dim; // floats of one row read and written
    const size_t base = ((size_t)a->layer * kv->n_seq + (size_t)a->seq) * kv->seq_stride;
    const float *dk = (const float *)kv->k + base + (size_t)a->g * (size_t)d * KERNEL_KV_TILE, *dv = (const float *)kv->v + base + (size_t)a->g * (size_t)d;
    float *dq = (float *)grow(&b_a, sizeof(float) * (size_t)(R * qw), op);
    float *dout = (float *)grow(&b_d, sizeof(float) * (size_t)(R * qw), op);
    float *ds = (float *)grow(&b_e, sizeof(float) * (size_t)R * G * (size_t)maxk, op);
    int32_t *dnk = (int32_t *)grow(&b_f, sizeof(int32_t) * (size_t)R, op);
    CK(cudaMemcpy2D(dq, sizeof(float) * (size_t)qw, a->q, sizeof(float) * (size_t)a->q_stride, sizeof(float) * (size_t)qw, (size_t)R, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dnk, a->n_keys, sizeof(int32_t) * (size_t)R, cudaMemcpyHostToDevice));
    k_attention<false><<<R * G, ATT_THREADS>>>(dq, qw, G, d, dnk, dk, KERNEL_KV_TILE * kvd, dv, kvd, a->scale, dout, qw, ds, maxk);
    CK_LAUNCH();
    CK(cudaMemcpy2D(a->out, sizeof(float) * (size_t)a->out_stride, dout, sizeof(float) * (size_t)qw, sizeof(float) * (size_t)qw, (size_t)R,
                    cudaMemcpyDeviceToHost));
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
    g_table.get_row = cu_get_row;
    g_table.rmsnorm = cu_rmsnorm;
    g_table.glu = cu_glu;
    g_table.rope = cu_rope;
    g_table.attention_rows = cu_attention_rows;
    g_table.exp = cu_exp;
    g_table.argmax = cu_argmax;
    g_table.logprob = cu_logprob;
    g_table.add = cu_add;
    g_table.scale = cu_scale;
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
    g_table.sgemm = cu_sgemm;
    g_table.exp_shift_sum = cu_exp_shift_sum;
    g_table.max = cu_max;
    g_table.neg_scaled_exp = cu_neg_scaled_exp;
    g_table.silu_glu_forward = cu_silu_glu_forward;
    g_table.silu_glu_backward = cu_silu_glu_backward;
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
