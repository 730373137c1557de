// The KV cache as the CPU backend lays it out (kernel_kv, below), and causal
// attention of a few query rows of one sequence against one KV head of
// that sequence's cache:
//
//   out[r * out_stride + h * d + e] = sum_j softmax_j(scale q.k_j) v_j[e],  j < n_keys[r]
//
// for the n_rows rows and the n_heads query heads of one KV group (they share
// K and V).  The inputs:
//   q[r * q_stride + h * d + e]                 query of row r, head h
//   k[(j / KERNEL_KV_TILE) * k_tile_stride + e * KERNEL_KV_TILE + j % KERNEL_KV_TILE]   key j (tiles of 16 keys, transposed)
//   v[j * v_stride + e]                         value j
// (k and v elements fp32, or fp16 when f16; strides in elements), or, when
// tiled (precision bf16 where kernel_attention_bf16_tiles(d)), k and v point
// at the KV head's bf16 tiles (kernel_attention_store_bf16_tiles) and v_panel
// is the distance between its V panels (in pairs of bf16).
// scores: scratch of KERNEL_ATTN_SCORE_ROWS rows of scores_stride floats,
// scores_stride >= n_keys rounded up to a whole tile.
//
// Every number is computed in an order fixed by its own row and key only:
// score = fused multiply-add chain over dimensions 0..d-1 from 0, times the
// scale; softmax over the row's own keys with vexp.h's exp, the sum in 16
// interleaved lanes folded by one fixed tree; output = fused multiply-add
// chain p_j V_j over keys 0..n-1 from 0, times 1 / sum.  So each output
// depends only on its own row's query, keys and values (bitwise the same
// whatever rows or heads share a call: the Q8 path's batch invariance rests
// on it), and every ISA gives the same bits.  The bf16 attention (bf16 set)
// rounds q, K, V and the probabilities to bf16 and sums in fp32 on AMX-BF16
// tiles: row-independent too, and within ~2^-8 max |v| of the fp32 result.
#ifndef AS_TENSOR_ATTENTION_H
#define AS_TENSOR_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#define KERNEL_KV_TILE 16  // keys per tile of the fp32 / fp16 cache (model.h: KV_TILE)
#define KERNEL_KV_CHUNK 32 // positions per chunk of the bf16 tiles (model.h: KV_CHUNK)
#define KERNEL_ATTN_SCORE_ROWS 12

#include "tensor/kernels.h"

// ---- the KV cache: memory and layout owned by the backend ----
//
// One inference context's keys and values, [layer][seq] blocks of seq_stride
// elements.  Keys are stored transposed in tiles of KERNEL_KV_TILE positions
// (attention reads 16 keys' element e as one vector): key (pos p, element e)
// of a block at k[(p / 16) * 16 * kv_dim + e * 16 + p % 16]; values one row
// per position, v[p * kv_dim + e].  Elements are fp32, or fp16 (as
// llama.cpp's default cache: half the memory traffic of batched decoding),
// laid out by the first forward pass (kernel_kv_begin): fp16 under
// KERNEL_PRECISION_Q8, fp32 under F32 (which stays exact).
//
// Under KERNEL_PRECISION_BF16 on a CPU with AMX the cache holds bf16 in the
// layouts the AMX attention's tiles read, so decoding converts nothing: per
// (layer, seq), KV head g owns ctx_pad * head_dim elements at g * ctx_pad *
// head_dim (ctx_pad = n_ctx rounded up to KERNEL_KV_CHUNK); key (p, e) of the
// head at ((p / 16) * (d / 2) + e / 2) * 32 + (p % 16) * 2 + e % 2 (tiles of
// 16 keys, dimensions in pairs); value (p, e) at ((e / 16) * (ctx_pad / 2) + p
// / 2) * 32 + (e % 16) * 2 + p % 2 (panels of 16 dimensions, keys in pairs).
// A key tile is zeroed when its first position is written, a chunk of
// KERNEL_KV_CHUNK values likewise.  The values are those of the fp32 cache
// rounded to nearest even, as the AMX attention rounds them itself from the
// other layouts.  Memory is not zeroed: a position is only read after it was
// written (attention computes the scores of whole tiles, then ignores the
// positions past a row's keys).
typedef struct kernel_kv {
    void *k, *v;        // NULL until the first pass, which allocates them at its element size
    int32_t n_layer, n_seq, n_ctx, n_head_kv, head_dim, kv_dim;
    size_t seq_stride;  // elements per (layer, seq) block
    int32_t ctx_pad;    // n_ctx rounded up to KERNEL_KV_CHUNK
    int32_t elem_bytes; // 0 until the first forward pass, then 4 (fp32) or 2 (fp16 or bf16)
    bool bf16_tiles;    // the BF16 / AMX layout (elem_bytes 2)
    // The CPU's scratch of kernel_kv_attention_rows, grown as needed: score
    // rows per thread, the batch's attention blocks.
    float *scores;
    size_t scores_cap;
    int32_t *blocks;
    int64_t blocks_cap;
} kernel_kv;

// Sizes the cache (AS_FAIL + as_error when the sizes overflow); the memory
// comes with the first kernel_kv_begin.
int kernel_kv_init(kernel_kv *kv, int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim);
void kernel_kv_release(kernel_kv *kv);

// What one forward pass at a precision needs to know of the cache: whether
// its attention runs on bf16 tiles, and how many consecutive rows of a
// sequence one attention call should take (longer for the AMX attention,
// which converts a call's keys first).  Neither changes a number.
typedef struct kernel_kv_pass {
    bool bf16;
    int32_t block_rows;
} kernel_kv_pass;
// Lays the cache out for precision p on its first pass, allocating it (2
// bytes per element under Q8 and on bf16 tiles, else 4); AS_FAIL + as_error
// when that memory is not there, or when it was laid out for tiles the ISA
// now in use cannot read.  Reads the
// environment: once per forward pass.
int kernel_kv_begin(kernel_kv *kv, kernel_precision p, kernel_kv_pass *pass);
// Position pos of sequence seq in layer l: its keys and values (kv_dim floats
// each), in the layout above.  Positions of one KERNEL_KV_CHUNK chunk of a
// sequence must be stored in order by one thread; other stores may run at once.
void kernel_kv_store(kernel_kv *kv, int32_t l, int32_t seq, int64_t pos, const float *k, const float *v);
// The causal attention of n_rows consecutive rows of sequence seq (row r
// sees keys 0 .. n_keys[r] - 1) for KV head g's n_heads query heads, in layer
// l: kernel_attention_rows over this cache's layout.  scores as there.
typedef struct kernel_kv_attn {
    const kernel_kv *kv;
    const kernel_kv_pass *pass;
    int32_t layer, seq, g;
    const float *q;
    int64_t q_stride;
    int n_heads, n_rows;
    const int32_t *n_keys;
    float scale;
    float *out;
    int64_t out_stride;
    float *scores;
    int64_t scores_stride;
} kernel_kv_attn;
void kernel_kv_attention(const kernel_kv_attn *a);

// A batch's attention in one layer (as_backend's kv_attention): row i < n_rows
// of sequence seq[i] at position pos[i] sees that sequence's keys 0 .. pos[i]
// in the cache (stored already); its query heads (n_head, a multiple of the
// cache's n_head_kv: head h reads KV head h / (n_head / n_head_kv)) are q +
// i * q_stride, its outputs out + i * out_stride.  Scores scaled by scale.
typedef struct kernel_kv_rows {
    kernel_kv *kv;
    const kernel_kv_pass *pass;
    int32_t layer;
    int64_t n_rows;
    const int32_t *seq, *pos;
    const float *q;
    int64_t q_stride;
    int n_head;
    float scale;
    float *out;
    int64_t out_stride;
} kernel_kv_rows;
// The CPU's batched entries: kernel_kv_store and kernel_kv_attention over the
// batch's rows, on kernel_get_threads() threads.
void kernel_kv_store_rows(kernel_kv *kv, int32_t l, int64_t n, const int32_t *seq, const int32_t *pos, const float *k, const float *v, int64_t ld);
void kernel_kv_attention_rows(const kernel_kv_rows *a);
// dst's first n_pos positions (all layers) become src's.
void kernel_kv_copy_prefix(kernel_kv *kv, int32_t dst, int32_t src, int32_t n_pos);

typedef struct kernel_attn_args {
    const float *q;
    int64_t q_stride;
    int n_heads, d, n_rows;
    const int32_t *n_keys;
    const void *k;
    int64_t k_tile_stride;
    const void *v;
    int64_t v_stride;
    bool f16;
    bool bf16;  // precision bf16 on bf16 tiles: set only where kernel_attention_bf16_tiles(d)
    bool tiled; // k, v: the cache's bf16 tiles (requires bf16)
    int64_t v_panel;
    float scale;
    float *out;
    int64_t out_stride;
    float *scores;
    int64_t scores_stride;
} kernel_attn_args;

void kernel_attention_rows(const kernel_attn_args *a);

// Whether precision bf16's attention for head size d runs on bf16 tiles
// (AMX-BF16; reads the environment, so ask once per pass): then the cache
// holds keys and values as those tiles (model.h), written by
// kernel_attention_store_bf16_tiles.
bool kernel_attention_bf16_tiles(int d);

// Position p's keys and values (ki, vi: n_head_kv * d floats) rounded to
// bf16 (nearest even) into the tiles of one (layer, sequence) block of the
// cache, k and v its first elements: KV head g at g * ctx_pad * d; key (p, e)
// at ((p / 16) * (d / 2) + e / 2) * 32 + (p % 16) * 2 + e % 2, value (p, e) at
// ((e / 16) * (ctx_pad / 2) + p / 2) * 32 + (e % 16) * 2 + p % 2.  Position p
// % 16 == 0 zeroes its key tile first, p % KERNEL_KV_CHUNK == 0 its chunk of
// values; positions of a chunk are stored in order by one thread (two share
// the 32-bit units of the value tiles).  Only where kernel_attention_bf16_tiles.
void kernel_attention_store_bf16_tiles(void *k, void *v, int64_t ctx_pad, int n_head_kv, int d, int64_t p, const float *ki,
                                       const float *vi);

#endif
