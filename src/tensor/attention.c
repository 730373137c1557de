// Causal attention over the KV cache (attention.h): the generic C code, which
// spells out the order of every operation the AVX-512 (attention_avx512.c),
// AVX2 (attention_avx2.c) and AMX-BF16 (attention_amx.c) codes keep, and the
// choice among them.
//
// Every number is computed in an order fixed by its own row and key only:
// score (row, j) = fused multiply-add chain over dimensions 0..d-1 from 0,
// times the scale; softmax over the row's own n keys: m = max, p_j =
// as_exp(s_j - m), sum = the p_j in attn_sum16's order (16 interleaved
// partial sums, one fixed tree); output element = fused multiply-add chain
// p_j V_j over keys 0..n-1 from 0, times 1 / sum.  How rows and heads are
// grouped into calls or registers never changes a bit, so a token's attention
// is the same in any batch, in prefill or in decode (the Q8 path's batch
// invariance rests on it), and the generic C, AVX2 and AVX-512 codes give the
// same bits (fmaf where the vectors fuse; vexp.h's one exp).  K and V are fp32
// or fp16 (converted exactly as they load).
#include <math.h>

#include "tensor/attention_impl.h"
#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/vexp.h"

// ---- generic C: the definition ----

static inline float kv_at(const void *p, int64_t i, bool f16) {
    return f16 ? as_fp16_to_f32(((const as_fp16 *)p)[i]) : ((const float *)p)[i];
}

void kernel_attention_rows_c(const kernel_attn_args *a) {
    const int d = a->d;
    for (int r = 0; r < a->n_rows; r++) {
        const int32_t n = a->n_keys[r];
        for (int h = 0; h < a->n_heads; h++) {
            const float *q = a->q + (int64_t)r * a->q_stride + (int64_t)h * d;
            float *s = a->scores, *out = a->out + (int64_t)r * a->out_stride + (int64_t)h * d;
            float mx = -INFINITY;
            for (int32_t j = 0; j < n; j++) {
                const int64_t kt = (int64_t)(j / KERNEL_KV_TILE) * a->k_tile_stride + j % KERNEL_KV_TILE;
                float acc = 0.0f;
                for (int e = 0; e < d; e++) acc = fmaf(q[e], kv_at(a->k, kt + e * KERNEL_KV_TILE, a->f16), acc);
                s[j] = acc * a->scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            float part[16] = {0};
            for (int32_t j = 0; j < n; j++) part[j % 16] += s[j] = as_expf(s[j] - mx);
            const float inv = 1.0f / attn_sum16(part);
            for (int e = 0; e < d; e++) {
                float acc = 0.0f;
                for (int32_t j = 0; j < n; j++) acc = fmaf(s[j], kv_at(a->v, (int64_t)j * a->v_stride + e, a->f16), acc);
                out[e] = acc * inv;
            }
        }
    }
}

// ---- the choice ----

bool kernel_attention_avx512_usable(int d) {
#if defined(__x86_64__)
    return d % 16 == 0 && d <= ATTN_D_MAX && kernel_vec_level() == KERNEL_VEC_AVX512;
#else
    (void)d;
    return false;
#endif
}

bool kernel_attention_avx2_usable(int d) {
#if defined(__x86_64__)
    return d % 16 == 0 && d <= ATTN_D_MAX && kernel_vec_level() >= KERNEL_VEC_AVX2; // (AVX2, FMA, F16C)
#else
    (void)d;
    return false;
#endif
}

bool kernel_attention_amx_usable(int d) {
#if defined(__x86_64__)
    return d % 32 == 0 && kernel_gemm_bf16_amx();
#else
    (void)d;
    return false;
#endif
}

// The AMX code also needs a head size the vector codes take (the bf16 cache
// is made only where the fp32 attention has them).
bool kernel_attention_bf16_tiles(int d) {
    return (kernel_attention_avx512_usable(d) || kernel_attention_avx2_usable(d)) && kernel_attention_amx_usable(d);
}

void kernel_attention_rows(const kernel_attn_args *a) {
#if defined(__x86_64__)
    if (a->bf16) { // the caller checked kernel_attention_bf16_tiles, once per pass (it reads the environment)
        kernel_attention_rows_amx(a);
        return;
    }
    if (kernel_attention_avx512_usable(a->d)) {
        kernel_attention_rows_avx512(a);
        return;
    }
    if (kernel_attention_avx2_usable(a->d)) {
        kernel_attention_rows_avx2(a);
        return;
    }
#endif
    kernel_attention_rows_c(a);
}
