// Matrix multiplication of fp32 activations by GGUF weights, in two precisions
// (kernels.h), built on the per-ISA primitives of kernels_impl.h.
//
// F32 precision: weights are dequantised exactly (bit-identical to
// quant_dequantize_row) and multiplied in fp32.
//   n_tokens <= 4 (decode): each weight row is dequantised once and dotted
//     with every token, in registers where the ISA has a fused kernel
//     (fused_dot_n), else through a small per-thread L1-resident buffer.
//   more tokens (prefill, training): each thread dequantises tiles of rows
//     and multiplies them by the project's own fp32 product (kernel_sgemm,
//     sgemm.c): one fused multiply-add chain per output over the columns in
//     order, the same bits at every batch size above 4 and thread count.
//   Both regimes give the same bits on every ISA.
// Q8 precision (like llama.cpp): every token's activations are quantised to
// 8 bits once (block_q8_1_f32 for Q4_0/Q4_1/Q8_0 weights, block_q8_K for
// Q4_K/Q6_K) and each output is an integer dot product with per-block fp32
// scales.  A token's outputs are bitwise the same whatever else is in the
// batch.  Float weight types always take the F32 path.  Q4_0/Q4_1/Q8_0
// calls of several tokens go to the tile kernels of kernels_amx.c
// (kernel_ops.matmul_q8, which gives the same bits): with the "amx" ISA the
// AMX kernel from KERNEL_AMX_MIN_TOKENS tokens and its VNNI variant from
// KERNEL_VNNI_TILE_MIN_TOKENS, with the "avx512" ISA the VNNI variant, with
// the "avx2" ISA its tile kernel (kernels_avx2.c).
//
// The f32 path's threads take output rows in chunks of 16 from a shared
// counter (dynamic schedule): on a busy machine a descheduled thread then
// delays a call by its current chunk, not by its whole static share (an
// earlier session measured single calls waiting for whole scheduler ticks,
// 4-8 ms, with static shares).  The Q8 row kernel takes static shares: its
// 8 KB prefetch ahead in the rows needs each thread's rows contiguous
// (batch 1 +16-30%), and with one core kept busy by another process batch-1
// decoding ran alike either way (32-42 tok/s, dynamic 32-36; 2026-11-27).
// Each output is computed by one thread in a fixed order, so results do not
// depend on the schedule.  Each thread owns its scratch, which grows once and is then
// reused, so the hot loop never allocates.
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "util/common.h"

static int kernel_n_threads; // 0: omp_get_max_threads()
static const kernel_ops *kernel_ops_active;
static kernel_isa kernel_isa_active = KERNEL_ISA_SCALAR;
static kernel_vec kernel_vec_active = KERNEL_VEC_C;
static pthread_once_t kernel_once = PTHREAD_ONCE_INIT;

static const kernel_ops *const kernel_ops_table[KERNEL_ISA_COUNT] = {&kernel_ops_scalar, &kernel_ops_avx2, &kernel_ops_avx512, &kernel_ops_amx};

const char *kernel_isa_name(kernel_isa isa) {
    return isa >= 0 && isa < KERNEL_ISA_COUNT ? kernel_ops_table[isa]->name : "auto";
}

bool kernel_isa_available(kernel_isa isa) {
    const cpu_features *f = cpu_get_features();
    const bool avx2 = f->avx2 && f->fma && f->f16c;
    switch (isa) {
    case KERNEL_ISA_SCALAR: return true;
    case KERNEL_ISA_AVX2: return avx2;
    case KERNEL_ISA_AVX512: return avx2 && f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni;
    case KERNEL_ISA_AMX: return kernel_isa_available(KERNEL_ISA_AVX512) && kernel_amx_permitted();
    default: return false;
    }
}

static kernel_isa kernel_best_isa(void) {
    for (int isa = KERNEL_ISA_COUNT - 1; isa > KERNEL_ISA_SCALAR; isa--)
        if (kernel_isa_available((kernel_isa)isa)) return (kernel_isa)isa;
    return KERNEL_ISA_SCALAR;
}

// ALPHASPIN_KERNEL_ISA=scalar|avx2|avx512|amx caps the choice (debugging, and
// comparing against the fallbacks on a fast machine; avx512 turns AMX off).
// It also caps kernel_force_isa(KERNEL_ISA_AUTO).
static kernel_isa kernel_auto_isa(void) {
    kernel_isa isa = kernel_best_isa();
    const char *env = getenv("ALPHASPIN_KERNEL_ISA");
    if (env && *env) {
        for (int i = 0; i < KERNEL_ISA_COUNT; i++)
            if (strcmp(env, kernel_ops_table[i]->name) == 0 && kernel_isa_available((kernel_isa)i) && i < (int)isa) isa = (kernel_isa)i;
    }
    return isa;
}

// AVX-512 F is enough for such code: on a CPU without VNNI (best ISA AVX2)
// it counts as active unless ALPHASPIN_KERNEL_ISA capped the choice.
static bool kernel_avx512_active_for(kernel_isa isa) {
    return cpu_get_features()->avx512f && (isa >= KERNEL_ISA_AVX512 || isa == kernel_best_isa());
}

static void kernel_isa_set(kernel_isa isa) {
    kernel_isa_active = isa;
    kernel_ops_active = kernel_ops_table[isa];
    kernel_vec_active = kernel_avx512_active_for(isa) ? KERNEL_VEC_AVX512 : isa >= KERNEL_ISA_AVX2 ? KERNEL_VEC_AVX2 : KERNEL_VEC_C;
}

static void kernel_init_once(void) { kernel_isa_set(kernel_auto_isa()); }

void kernel_init(void) { pthread_once(&kernel_once, kernel_init_once); }

static const kernel_ops *kernel_ops_get(void) {
    pthread_once(&kernel_once, kernel_init_once);
    return kernel_ops_active;
}

int kernel_force_isa(kernel_isa isa) {
    pthread_once(&kernel_once, kernel_init_once);
    if (isa == KERNEL_ISA_AUTO) isa = kernel_auto_isa();
    if (!kernel_isa_available(isa)) return AS_FAIL;
    kernel_isa_set(isa);
    return AS_OK;
}

kernel_isa kernel_current_isa(void) {
    pthread_once(&kernel_once, kernel_init_once);
    return kernel_isa_active;
}

bool kernel_avx512_active(void) { return kernel_vec_level() == KERNEL_VEC_AVX512; }

kernel_vec kernel_vec_level(void) {
    pthread_once(&kernel_once, kernel_init_once);
    return kernel_vec_active;
}

// Both also run the one-time initialisation (the ISA choice), so a program
// that sets its thread count first has that done before it starts any
// threads of its own.
void kernel_set_threads(int n) {
    pthread_once(&kernel_once, kernel_init_once);
    kernel_n_threads = n > 0 ? n : 0;
}

// The calling thread's cap (kernel_cap_threads; 0: none).
static _Thread_local int kernel_thread_cap;

int kernel_get_threads(void) {
    pthread_once(&kernel_once, kernel_init_once);
    const int n = kernel_n_threads > 0 ? kernel_n_threads : omp_get_max_threads();
    return kernel_thread_cap > 0 && kernel_thread_cap < n ? kernel_thread_cap : n;
}

int kernel_cap_threads(int n) {
    const int old = kernel_thread_cap;
    kernel_thread_cap = n > 0 ? n : 0;
    return old;
}

// Per-thread scratch, grown on demand and kept for the thread's lifetime
// (OpenMP reuses its worker threads, so after the first call of the largest
// shape there is no allocation).  One slot per user (kernels_impl.h).  A
// pthread key frees a thread's buffers when it exits (e.g. when the team
// shrinks after kernel_set_threads, or a nested team ends).
typedef struct kernel_scratch_set {
    void *ptr[SCRATCH_N];
    size_t cap[SCRATCH_N];
} kernel_scratch_set;
static _Thread_local kernel_scratch_set *kernel_scratch_tls;
static pthread_key_t kernel_scratch_key;
static pthread_once_t kernel_scratch_once = PTHREAD_ONCE_INIT;

static void kernel_scratch_free(void *p) {
    kernel_scratch_set *s = p;
    for (int i = 0; i < SCRATCH_N; i++) free(s->ptr[i]);
    free(s);
}

static void kernel_scratch_key_init(void) {
    if (pthread_key_create(&kernel_scratch_key, kernel_scratch_free) != 0) as_die("pthread_key_create failed");
}

void *kernel_scratch(int slot, size_t bytes) {
    kernel_scratch_set *s = kernel_scratch_tls;
    if (!s) {
        pthread_once(&kernel_scratch_once, kernel_scratch_key_init);
        s = kernel_scratch_tls = as_calloc(1, sizeof *s);
        pthread_setspecific(kernel_scratch_key, s);
    }
    if (bytes > s->cap[slot]) {
        free(s->ptr[slot]);
        s->cap[slot] = bytes + bytes / 4; // headroom: shapes that grow a little do not reallocate each call
        s->ptr[slot] = as_aligned_alloc(s->cap[slot]);
    }
    return s->ptr[slot];
}

static bool kernel_type_has_q8(ggml_type t) {
    return t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_1 || t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q6_K;
}

// n_tokens <= KERNEL_F32_FUSED_MAX_TOKENS (decode): each weight row dequantised
// once (in registers where the ISA has fused_dot_n) and dotted with each
// token by the ISA's dot product, whose order is the same on every ISA
// (kernels_impl.h: dot_f32) but not the tiles' single chain: a token's
// outputs in a call of 1-4 tokens may differ in the last bits from the same
// token's in a larger call.  (The tiles' chain order at one token needs each
// tile transposed, measured ~4x slower for batch-1 decoding.)
static void matmul_f32_fused(const kernel_ops *ops, float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    const int64_t cols = w->cols;
    const bool is_f32 = w->type == GGML_TYPE_F32;
#pragma omp parallel num_threads(nth)
    {
        float *row = is_f32 ? NULL : kernel_scratch(SCRATCH_WORK, (size_t)cols * sizeof(float));
#pragma omp for schedule(dynamic, 16)
        for (int64_t r = 0; r < w->rows; r++) {
            const void *src = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            float o[KERNEL_DOT_MAX_ACT];
            if (ops->fused_dot_n && ops->fused_dot_n(w->type, src, x, (size_t)cols, (int)n_tokens, cols, o)) {
                for (int64_t t = 0; t < n_tokens; t++) out[t * ldo + r] = o[t];
                continue;
            }
            const float *wr = src;
            if (!is_f32) {
                ops->dequant_row(w->type, src, row, cols);
                wr = row;
            }
            for (int64_t t = 0; t < n_tokens; t++) out[t * ldo + r] = ops->dot_f32(wr, x + t * cols, cols);
        }
    }
}

// Tiles of W (at most KERNEL_F32_TILE_ROWS rows, at least two per thread),
// each dequantised exactly 16 rows at a time and stored transposed (column c
// of the tile is row c of tt), then multiplied by one single-threaded
// kernel_sgemm: out[t][r] = sum_c x[t][c] tt[c][r], the tokens broadcast and
// the tile's rows in the vector lanes, which suits one token as well as
// hundreds.  Every output is one fused multiply-add chain over the columns in
// order, so a token's outputs do not depend on the other tokens, the thread
// count or the ISA (the same bits at every batch size and on every CPU).
static void matmul_f32_tiled(const kernel_ops *ops, float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    const int64_t cols = w->cols;
    int64_t n_tiles = AS_MAX((int64_t)nth * 2, (w->rows + KERNEL_F32_TILE_ROWS - 1) / KERNEL_F32_TILE_ROWS);
    n_tiles = (n_tiles + nth - 1) / nth * nth;
    int64_t tile_rows = (w->rows + n_tiles - 1) / n_tiles;
    tile_rows = (tile_rows + 15) / 16 * 16;
    n_tiles = (w->rows + tile_rows - 1) / tile_rows;
#pragma omp parallel num_threads(nth) if (n_tiles > 1)
    {
        float *blk = kernel_scratch(SCRATCH_WORK, (size_t)(tile_rows + 16) * cols * sizeof(float)), *tt = blk + 16 * cols;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n_tiles; i++) {
            const int64_t r0 = i * tile_rows, nr = AS_MIN(tile_rows, w->rows - r0);
            for (int64_t b = 0; b < nr; b += 16) {
                const int64_t nb = AS_MIN((int64_t)16, nr - b);
                for (int64_t r = 0; r < nb; r++)
                    ops->dequant_row(w->type, (const uint8_t *)w->data + (size_t)(r0 + b + r) * w->row_bytes, blk + r * cols, cols);
                for (int64_t c = 0; c < cols; c++)
                    for (int64_t r = 0; r < nb; r++) tt[c * nr + b + r] = blk[r * cols + c];
            }
            kernel_sgemm(false, false, n_tokens, nr, cols, 1.0f, x, cols, tt, nr, 0.0f, out + r0, ldo, 1);
        }
    }
}

// Work items are (token chunk, row group) pairs: 64 tokens x 16 rows.  The
// group's weights stay in L1 while the chunk's tokens pass, the chunk's
// activations (46 KB for 576 columns) stay in L2 across groups, and each
// token's 16 outputs fill one 64-byte line of `out`.  Tokens go
// KERNEL_DOT_MAX_ACT at a time through vec_dot_n, which unpacks each weight
// block once for all of them.  Each output depends only on its own token and
// row (batch invariance).
#define Q8_ROW_GROUP 16
#define Q8_TOKEN_CHUNK 64

static void matmul_q8(const kernel_ops *ops, float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    const int64_t cols = w->cols;
    const size_t act_bytes = kernel_act_row_size(w->type, cols);
    uint8_t *act = kernel_scratch(SCRATCH_ACT, act_bytes * (size_t)n_tokens);
    const int64_t n_groups = (w->rows + Q8_ROW_GROUP - 1) / Q8_ROW_GROUP;
    const int64_t n_chunks = (n_tokens + Q8_TOKEN_CHUNK - 1) / Q8_TOKEN_CHUNK;
    // A few tokens quantise faster than a barrier costs: do them here.
    const bool quantize_here = n_tokens <= KERNEL_DOT_MAX_ACT;
    if (quantize_here)
        for (int64_t t = 0; t < n_tokens; t++) ops->quantize_act(w->type, x + t * cols, act + (size_t)t * act_bytes, cols);
#pragma omp parallel num_threads(nth)
    {
        if (!quantize_here) {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < n_tokens; t++) ops->quantize_act(w->type, x + t * cols, act + (size_t)t * act_bytes, cols);
        }
        // Contiguous ranges of items per thread (static): the decode kernels
        // prefetch the weights KERNEL_PREFETCH_BYTES ahead in the row stream,
        // i.e. into the next row groups, which with items handed out one by
        // one (dynamic) mostly went to the other core.  Batch-1 q8 decoding,
        // two threads: all of 10 alternating runs faster, medians +16% (92
        // -> 107 tok/s, 6 runs) and +30% (4 runs).
#pragma omp for schedule(static)
        for (int64_t item = 0; item < n_chunks * n_groups; item++) {
            const int64_t c = item / n_groups, g = item % n_groups;
            const int64_t r0 = g * Q8_ROW_GROUP, r1 = AS_MIN(r0 + Q8_ROW_GROUP, w->rows);
            const int64_t t_end = AS_MIN((c + 1) * Q8_TOKEN_CHUNK, n_tokens);
            for (int64_t t0 = c * Q8_TOKEN_CHUNK; t0 < t_end; t0 += KERNEL_DOT_MAX_ACT) {
                const int nt = (int)AS_MIN((int64_t)KERNEL_DOT_MAX_ACT, t_end - t0);
                const uint8_t *a = act + (size_t)t0 * act_bytes;
                for (int64_t r = r0; r < r1; r++) {
                    const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
                    float o[KERNEL_DOT_MAX_ACT];
                    if (ops->vec_dot_n) ops->vec_dot_n(w->type, wr, a, act_bytes, nt, cols, o);
                    else
                        for (int j = 0; j < nt; j++) o[j] = ops->vec_dot(w->type, wr, a + (size_t)j * act_bytes, cols);
                    for (int j = 0; j < nt; j++) out[(t0 + j) * ldo + r] = o[j];
                }
            }
        }
    }
}

void kernel_matmul_q8_rows(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth) {
    matmul_q8(kernel_ops_get(), out, ldo, x, n_tokens, w, nth);
}

// ---- BF16 precision: gemm.h's products on the packed copy ----

// Rows dequantised this many at a time while packing (a multiple of 16).
#define BF16_PACK_CHUNK 512

void kernel_bf16_pack_matrices(kernel_bf16_packed *dst, const as_matrix *const *w, int n) {
    const int nth = kernel_get_threads();
    const kernel_ops *ops = kernel_ops_get();
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        if (w[i]->cols != w[0]->cols || (i < n - 1 && w[i]->rows % 16))
            as_die("kernel_bf16_pack_matrices: matrix %d (%lld x %lld) does not stack", i, (long long)w[i]->rows, (long long)w[i]->cols);
        rows += w[i]->rows;
    }
    const int64_t K = w[0]->cols;
    kernel_bf16_pack_init(dst, K, rows);
    float *buf = as_aligned_alloc(sizeof(float) * (size_t)(AS_MIN(rows, (int64_t)BF16_PACK_CHUNK) * K));
    int64_t at = 0; // first row of matrix i in the stack
    for (int i = 0; i < n; at += w[i]->rows, i++)
        for (int64_t r0 = 0; r0 < w[i]->rows; r0 += BF16_PACK_CHUNK) {
            const int64_t nr = AS_MIN((int64_t)BF16_PACK_CHUNK, w[i]->rows - r0);
            const uint8_t *src = (const uint8_t *)w[i]->data + (size_t)r0 * w[i]->row_bytes;
#pragma omp parallel for schedule(static) num_threads(nth) if (nr > 16)
            for (int64_t r = 0; r < nr; r++) ops->dequant_row(w[i]->type, src + (size_t)r * w[i]->row_bytes, buf + r * K, K);
            kernel_bf16_pack_rows(dst, at + r0, nr, buf, K, nth);
        }
    free(buf);
}

void kernel_bf16_pack_matrix(kernel_bf16_packed *dst, const as_matrix *w) { kernel_bf16_pack_matrices(dst, &w, 1); }

static void matmul_bf16(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w) {
    const int nth = kernel_get_threads();
    if (w->bf16) {
        kernel_gemm_bf16_packed(false, n_tokens, 1.0f, x, w->cols, w->bf16, 0.0f, out, ldo, nth);
        return;
    }
    kernel_bf16_packed tmp;
    kernel_bf16_pack_matrix(&tmp, w);
    kernel_gemm_bf16_packed(false, n_tokens, 1.0f, x, w->cols, &tmp, 0.0f, out, ldo, nth);
    kernel_bf16_packed_free(&tmp);
}

const char *kernel_precision_name(kernel_precision p) {
    return p == KERNEL_PRECISION_Q8 ? "q8" : p == KERNEL_PRECISION_BF16 ? "bf16" : "f32";
}

int kernel_precision_parse(const char *s, kernel_precision *p) {
    for (int i = 0; i <= KERNEL_PRECISION_BF16; i++)
        if (s && !strcmp(s, kernel_precision_name((kernel_precision)i))) {
            *p = (kernel_precision)i;
            return 0;
        }
    return -1;
}

void kernel_matmul(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, kernel_precision p) {
    const kernel_ops *ops = kernel_ops_get();
    if (n_tokens <= 0 || w->rows <= 0) return;
    if (quant_row_size(w->type, w->cols) == 0 || w->row_bytes < quant_row_size(w->type, w->cols) || ldo < w->rows)
        as_die("kernel_matmul: bad matrix (type %d, %lld x %lld, ldo %lld)", (int)w->type, (long long)w->rows, (long long)w->cols, (long long)ldo);
    if (p == KERNEL_PRECISION_BF16) {
        matmul_bf16(out, ldo, x, n_tokens, w);
        return;
    }
    const int nth = (int)AS_MAX(1, AS_MIN((int64_t)kernel_get_threads(), w->rows));
    if (p == KERNEL_PRECISION_Q8 && kernel_type_has_q8(w->type)) {
        if (!ops->matmul_q8 || !ops->matmul_q8(out, ldo, x, n_tokens, w, nth)) matmul_q8(ops, out, ldo, x, n_tokens, w, nth);
    }
    else if (n_tokens <= KERNEL_F32_FUSED_MAX_TOKENS) matmul_f32_fused(ops, out, ldo, x, n_tokens, w, nth);
    else matmul_f32_tiled(ops, out, ldo, x, n_tokens, w, nth);
}

size_t kernel_pack_size(const as_matrix *w) {
    const kernel_isa isa = kernel_current_isa();
    return isa == KERNEL_ISA_AMX || isa == KERNEL_ISA_AVX512 ? kernel_amx_pack_size(w) : 0;
}

void kernel_pack(as_matrix *w, void *dst) {
    if (!kernel_pack_size(w)) as_die("kernel_pack: no packed layout for this matrix (type %d) on ISA %s", (int)w->type, kernel_isa_name(kernel_current_isa()));
    kernel_amx_pack(w, dst, kernel_get_threads());
    w->packed = dst;
}

void kernel_get_row(const as_matrix *w, int64_t r, float *out) {
    if (r < 0 || r >= w->rows) as_die("kernel_get_row: row %lld outside [0, %lld)", (long long)r, (long long)w->rows);
    kernel_ops_get()->dequant_row(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes, out, w->cols);
}
