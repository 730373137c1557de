// Causal attention of a few query rows of one sequence against one KV head of
// that sequence's cache (the model's KV cache, whose layout model.h states):
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
