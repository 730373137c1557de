// The CPU backend's KV cache (attention.h, kernel_kv): allocation, the layout
// a precision wants, the stores of one position, attention over it, copies.
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/attention.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"
#include "util/common.h"

// The AMX attention converts a call's keys and values to bf16 tiles first, a
// cost per call: there longer blocks of rows (prefill 512: 30% less attention
// time than with 16 rows).
#define BLOCK_ROWS 16
#define BLOCK_ROWS_AMX 64

// The sizes are checked here; the memory comes with the first pass, which
// knows the element size (kernel_kv_begin): fp16 and bf16 caches need half of
// fp32's.
int kernel_kv_init(kernel_kv *kv, int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim) {
    memset(kv, 0, sizeof *kv);
    if (n_layer < 1 || n_seq < 1 || n_ctx < 1 || n_head_kv < 1 || head_dim < 1)
        return as_error("kv cache: expected positive sizes, found %d layers, %d sequences, %d positions, %d x %d", n_layer, n_seq, n_ctx,
                        n_head_kv, head_dim);
    size_t n, bytes;
    const size_t ctx_pad = ((size_t)n_ctx + KERNEL_KV_CHUNK - 1) / KERNEL_KV_CHUNK * KERNEL_KV_CHUNK;
    if (ctx_pad > (size_t)INT32_MAX || as_mul_overflow((size_t)n_layer * (size_t)n_seq, ctx_pad, &n) ||
        as_mul_overflow(n, (size_t)n_head_kv * (size_t)head_dim, &n) || as_mul_overflow(n, sizeof(float), &bytes))
        return as_error("kv cache: %d sequences x %d positions overflow the address space", n_seq, n_ctx);
    kv->n_layer = n_layer, kv->n_seq = n_seq, kv->n_ctx = n_ctx, kv->n_head_kv = n_head_kv, kv->head_dim = head_dim;
    kv->kv_dim = n_head_kv * head_dim;
    kv->ctx_pad = (int32_t)ctx_pad;
    kv->seq_stride = ctx_pad * (size_t)kv->kv_dim;
    return AS_OK;
}

void kernel_kv_release(kernel_kv *kv) {
    free(kv->k), free(kv->v), free(kv->scores), free(kv->blocks);
    kv->k = kv->v = NULL, kv->scores = NULL, kv->blocks = NULL;
    kv->scores_cap = 0, kv->blocks_cap = 0;
}

int kernel_kv_begin(kernel_kv *kv, kernel_precision p, kernel_kv_pass *pass) {
    const bool amx = p == KERNEL_PRECISION_BF16 && kernel_attention_bf16_tiles(kv->head_dim);
    if (!kv->elem_bytes) {
        const int eb = p == KERNEL_PRECISION_Q8 || amx ? 2 : 4;
        const size_t bytes = (size_t)eb * (size_t)kv->n_layer * (size_t)kv->n_seq * kv->seq_stride; // (kernel_kv_init checked it)
        // Not as_aligned_alloc, which aborts: a cache too big for memory is
        // the caller's error (--parallel, --ctx), one line.
        kv->k = as_aligned_try_alloc(bytes);
        kv->v = kv->k ? as_aligned_try_alloc(bytes) : NULL;
        if (!kv->v) {
            free(kv->k), kv->k = NULL;
            return as_error("kv cache: %d sequences x %d positions need 2 x %.1f MiB: out of memory", kv->n_seq, kv->n_ctx,
                            (double)bytes / 1048576.0);
        }
        kv->elem_bytes = eb;
        kv->bf16_tiles = amx;
    }
    if (kv->bf16_tiles && !amx)
        return as_error("kv cache: it holds the AMX attention's bf16 tiles, and the ISA in use "
                        "(capped since its first forward pass) has no AMX attention");
    pass->bf16 = amx;
    pass->block_rows = amx ? BLOCK_ROWS_AMX : BLOCK_ROWS;
    return AS_OK;
}

void kernel_kv_store(kernel_kv *kv, int32_t l, int32_t seq, int64_t pos, const float *ki, const float *vi) {
    const int64_t kvd = kv->kv_dim;
    const size_t eb = (size_t)kv->elem_bytes, at = ((size_t)l * kv->n_seq + (size_t)seq) * kv->seq_stride, p = (size_t)pos;
    if (kv->bf16_tiles) {
        kernel_attention_store_bf16_tiles((as_bf16 *)kv->k + at, (as_bf16 *)kv->v + at, kv->ctx_pad, kv->n_head_kv, kv->head_dim, pos, ki, vi);
        return;
    }
    const size_t kt = at + p / KERNEL_KV_TILE * KERNEL_KV_TILE * (size_t)kvd + p % KERNEL_KV_TILE, vt = at + p * (size_t)kvd;
    if (p % KERNEL_KV_TILE == 0) memset((uint8_t *)kv->k + (at + p * (size_t)kvd) * eb, 0, eb * KERNEL_KV_TILE * (size_t)kvd);
    if (eb == 2) {
        as_fp16 *K16 = kv->k, *V16 = kv->v;
        as_f32_to_fp16_n(K16 + kt, KERNEL_KV_TILE, ki, kvd);
        as_f32_to_fp16_n(V16 + vt, 1, vi, kvd);
    } else {
        float *K32 = kv->k, *V32 = kv->v;
        for (int64_t e = 0; e < kvd; e++) K32[kt + (size_t)e * KERNEL_KV_TILE] = ki[e];
        memcpy(V32 + vt, vi, sizeof(float) * (size_t)kvd);
    }
}

void kernel_kv_attention(const kernel_kv_attn *a) {
    const kernel_kv *kv = a->kv;
    const int d = kv->head_dim;
    const size_t eb = (size_t)kv->elem_bytes, base = ((size_t)a->layer * kv->n_seq + (size_t)a->seq) * kv->seq_stride;
    const size_t k_off = kv->bf16_tiles ? (size_t)a->g * (size_t)kv->ctx_pad * d : (size_t)a->g * d * KERNEL_KV_TILE;
    const size_t v_off = kv->bf16_tiles ? (size_t)a->g * (size_t)kv->ctx_pad * d : (size_t)a->g * d;
    const kernel_attn_args r = {
        .q = a->q, .q_stride = a->q_stride, .n_heads = a->n_heads, .d = d, .n_rows = a->n_rows, .n_keys = a->n_keys,
        .k = (const uint8_t *)kv->k + (base + k_off) * eb, .k_tile_stride = KERNEL_KV_TILE * (int64_t)kv->kv_dim,
        .v = (const uint8_t *)kv->v + (base + v_off) * eb, .v_stride = kv->kv_dim, .f16 = eb == 2 && !kv->bf16_tiles,
        .bf16 = a->pass->bf16, .tiled = kv->bf16_tiles, .v_panel = (int64_t)kv->ctx_pad / 2 * 16, .scale = a->scale, .out = a->out,
        .out_stride = a->out_stride, .scores = a->scores, .scores_stride = a->scores_stride,
    };
    kernel_attention_rows(&r);
}

void kernel_kv_copy_prefix(kernel_kv *kv, int32_t dst, int32_t src, int32_t n_pos) {
    if (src == dst || n_pos == 0 || !kv->elem_bytes) return;
    // K in whole tiles (the last one partly filled: its positions past n_pos are
    // src's values or zeros, finite, and attention ignores them), V in rows
    // (bf16 tiles: in whole chunks per panel, likewise); byte offsets.
    const size_t eb = (size_t)kv->elem_bytes, row = (size_t)kv->kv_dim * eb, seq_stride = kv->seq_stride * eb, n = (size_t)n_pos * row;
    const size_t nk = ((size_t)n_pos + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE * KERNEL_KV_TILE * row;
    uint8_t *K = kv->k, *V = kv->v;
    for (int32_t l = 0; l < kv->n_layer; l++) {
        size_t base = (size_t)l * kv->n_seq * seq_stride;
        uint8_t *kd = K + base + (size_t)dst * seq_stride, *vd = V + base + (size_t)dst * seq_stride;
        const uint8_t *ks = K + base + (size_t)src * seq_stride, *vs = V + base + (size_t)src * seq_stride;
        if (!kv->bf16_tiles) {
            memcpy(kd, ks, nk);
            memcpy(vd, vs, n);
            continue;
        }
        const size_t d = (size_t)kv->head_dim, head = (size_t)kv->ctx_pad * d * eb;
        const size_t nv = ((size_t)n_pos + KERNEL_KV_CHUNK - 1) / KERNEL_KV_CHUNK * KERNEL_KV_CHUNK * 16 * eb, panel = (size_t)kv->ctx_pad * 16 * eb;
        for (size_t g = 0; g < (size_t)kv->n_head_kv; g++) {
            memcpy(kd + g * head, ks + g * head, nk / (size_t)kv->n_head_kv);
            for (size_t c = 0; c < d / 16; c++) memcpy(vd + g * head + c * panel, vs + g * head + c * panel, nv);
        }
    }
}

// ---- the batch ----

// Consecutive batch rows of one sequence are one attention work item (per KV
// head), so that the rows share the sequence's keys and values in cache: at
// most the pass's block_rows and ATTN_BLOCK_MAX rows.  No block length
// changes a number (attention.h).
#define ATTN_BLOCK_MAX 64

// The rows of one KERNEL_KV_CHUNK chunk of a sequence are stored by one
// thread, in order (kernel_kv_store); a prompt's chunks alternate between
// threads (by whole sequences instead, a 512-token prefill's stores ran on
// one thread while the other waited).  In decoding the stores are mostly cache
// misses (lines evicted since the last step): all threads take part.
void kernel_kv_store_rows(kernel_kv *kv, int32_t l, int64_t n, const int32_t *seq, const int32_t *pos, const float *k, const float *v, int64_t ld) {
    const int nth = kernel_get_threads();
#pragma omp parallel num_threads(nth) if (n > 1 && nth > 1)
    {
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int64_t i = 0; i < n; i++)
            if ((seq[i] + pos[i] / KERNEL_KV_CHUNK) % nt == tid) kernel_kv_store(kv, l, seq[i], pos[i], k + i * ld, v + i * ld);
    }
}

// The blocks by decreasing cost (rows x keys of the last row; ties by
// position in the batch), so that the threads, which take them one at a time,
// end together: in a long prefill the cost grows with the block's position,
// and taken in batch order the most expensive block came last while the other
// thread waited.  Outputs do not depend on the order.
static int64_t block_cost(const int32_t *st, const int32_t *ln, const int32_t *pos, int32_t i) {
    return (int64_t)ln[i] * (pos[st[i] + ln[i] - 1] + 1);
}
static void sort_blocks(int32_t *st, int32_t *ln, int32_t nb, const int32_t *pos) {
    for (int32_t i = 1; i < nb; i++) { // insertion sort: usually few blocks, often in order already
        const int32_t s0 = st[i], l0 = ln[i];
        const int64_t c = block_cost(st, ln, pos, i);
        int32_t j = i;
        for (; j > 0; j--) {
            const int64_t cj = block_cost(st, ln, pos, j - 1);
            if (cj > c || (cj == c && st[j - 1] < s0)) break;
            st[j] = st[j - 1], ln[j] = ln[j - 1];
        }
        st[j] = s0, ln[j] = l0;
    }
}

// Work items are (block of consecutive rows of one sequence) x (KV head): the
// block's rows and the group's heads share the K/V they read.
void kernel_kv_attention_rows(const kernel_kv_rows *a) {
    kernel_kv *kv = a->kv;
    const int64_t n = a->n_rows;
    if (n <= 0) return;
    const int Hkv = kv->n_head_kv, group = a->n_head / Hkv, d = kv->head_dim;
    const int nth = AS_MAX(kernel_get_threads(), 1);
    // Scratch: score rows of the longest row's keys per thread (rows padded to
    // 64 bytes so that threads never share a cache line), and the blocks.
    int64_t keys = 1;
    for (int64_t i = 0; i < n; i++) keys = AS_MAX(keys, (int64_t)a->pos[i] + 1);
    keys = (keys + 15) & ~(int64_t)15;
    const size_t need = (size_t)nth * KERNEL_ATTN_SCORE_ROWS * (size_t)keys;
    if (need > kv->scores_cap) {
        free(kv->scores);
        kv->scores_cap = AS_MAX(need, 2 * kv->scores_cap);
        kv->scores = as_aligned_alloc(sizeof(float) * kv->scores_cap);
    }
    if (2 * n > kv->blocks_cap) {
        free(kv->blocks);
        kv->blocks_cap = AS_MAX(2 * n, 2 * kv->blocks_cap);
        kv->blocks = as_malloc(sizeof(int32_t) * (size_t)kv->blocks_cap);
    }
    int32_t *st = kv->blocks, *ln = kv->blocks + n, nb = 0;
    const int32_t blk_max = AS_MIN(a->pass->block_rows, ATTN_BLOCK_MAX);
    for (int32_t i = 0; i < (int32_t)n; i++) {
        if (nb > 0 && a->seq[i] == a->seq[st[nb - 1]] && ln[nb - 1] < blk_max) {
            ln[nb - 1]++;
        } else {
            st[nb] = i, ln[nb] = 1;
            nb++;
        }
    }
    sort_blocks(st, ln, nb, a->pos);
    const int64_t n_items = (int64_t)nb * Hkv, stride = keys * KERNEL_ATTN_SCORE_ROWS;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (n_items > 1)
    for (int64_t it = 0; it < n_items; it++) {
        const int32_t blk = (int32_t)(it / Hkv), t0 = st[blk];
        const int g = (int)(it % Hkv);
        int32_t n_keys[ATTN_BLOCK_MAX];
        for (int32_t r = 0; r < ln[blk]; r++) n_keys[r] = a->pos[t0 + r] + 1; // causal: keys 0..pos
        kernel_kv_attention(&(kernel_kv_attn){
            .kv = kv, .pass = a->pass, .layer = a->layer, .seq = a->seq[t0], .g = g, .q = a->q + t0 * a->q_stride + (int64_t)g * group * d,
            .q_stride = a->q_stride, .n_heads = group, .n_rows = ln[blk], .n_keys = n_keys, .scale = a->scale,
            .out = a->out + t0 * a->out_stride + (int64_t)g * group * d, .out_stride = a->out_stride,
            .scores = kv->scores + (int64_t)omp_get_thread_num() * stride, .scores_stride = keys,
        });
    }
}
