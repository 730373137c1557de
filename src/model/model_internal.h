// Private to src/model: what model.c, forward.c and attention.c share.
#ifndef AS_MODEL_INTERNAL_H
#define AS_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

struct model_scratch;
void model_scratch_free(struct model_scratch *s);

// Causal attention of n_rows query rows of one sequence, each with n_heads
// heads (of one KV group: they share K and V), against that sequence's cache
// of one layer and KV head (attention.c).
//   q[r * q_stride + h * d + e]                 query of row r, head h
//   k[(j / KV_TILE) * k_tile_stride + e * KV_TILE + j % KV_TILE]   key j (tile layout, model.h)
//   v[j * v_stride + e]                         value j
// (k and v elements fp32, or fp16 when f16; strides in elements)
//   out[r * out_stride + h * d + e] = sum_j softmax_j(scale q.k_j) v_j[e], j < n_keys[r]
// scores: scratch of 3 rows of scores_stride floats, scores_stride >= n_keys
// rounded up to a whole tile.  Each output depends only on its own row's
// query, keys and values, in a fixed order (bitwise the same whatever rows or
// heads share a call).  simd = false: the generic C code.
typedef struct model_attn_args {
    const float *q;
    int64_t q_stride;
    int n_heads, d, n_rows;
    const int32_t *n_keys;
    const void *k;
    int64_t k_tile_stride;
    const void *v;
    int64_t v_stride;
    bool f16;
    float scale;
    float *out;
    int64_t out_stride;
    float *scores;
    int64_t scores_stride;
} model_attn_args;
#define MODEL_ATTN_SCORE_ROWS 3
void model_attention_rows(const model_attn_args *a, bool simd);
bool model_attention_avx512_usable(int d); // this CPU and head size can take the AVX-512 code

#endif
