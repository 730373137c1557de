// Portable C implementations of the kernel primitives (kernels_impl.h): the
// fallback for CPUs without AVX2, and the readable statement of what each SIMD
// version computes.
#include <math.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "util/common.h"

size_t kernel_act_row_size(ggml_type wtype, int64_t n) {
    switch (wtype) {
    // Whole groups of 4 blocks (the AVX-512 layout pads the last group), then
    // room for 3 more arrays of as many 4-byte values: the AVX2 code keeps the
    // blocks' code sums (its Q8_0 kernel's 128 sum(a) term) and their d and s
    // there, contiguous (kernels_avx2.c act_extra).
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q8_0:
        return (size_t)((n / QK8_1 + 3) / 4 * 4) * (sizeof(block_q8_1_f32) + 3 * sizeof(int32_t));
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K: return (size_t)(n / QK_K) * sizeof(block_q8_K);
    default: return 0;
    }
}

// Activation blocks of 32: d = amax/127, q = round(x/d), s = d*sum(q).  The sum
// lets affine weights (Q4_1: w = d_w*q_w + m) fold their offset in as m*s, and
// Q4_0's implicit -8 offset as -8*d_w*s, without touching the values again.
void kernel_quantize_q8_1_scalar(const float *x, block_q8_1_f32 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = AS_MAX(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = d;
        y[i].s = d * (float)sum;
    }
}

static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

// Q8_K (ggml quantize_row_q8_K_ref): one fp32 scale per 256 values, mapping the
// value of largest magnitude to -127, plus sums of each 16 quants (bsums) for
// the K formats' per-sub-block offsets.
void kernel_quantize_q8_K_scalar(const float *x, block_q8_K *y, int64_t n) {
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) y[i].qs[j] = (int8_t)AS_MIN(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

static void quantize_act_scalar(ggml_type wtype, const float *x, void *dst, int64_t n) {
    if (wtype == GGML_TYPE_Q4_K || wtype == GGML_TYPE_Q6_K) kernel_quantize_q8_K_scalar(x, dst, n);
    else kernel_quantize_q8_1_scalar(x, dst, n);
}

// The K formats' float steps, the same on every ISA (kernels_avx2.c, which
// the AVX-512 table shares): per super-block i of 256 values, the exact
// integer sums S_i (and M_i), then one fused multiply-add each into a
// running sum over i:
//   Q4_K: S_i = sum_j sc_j sum(q a), M_i = sum_j m_j sum(a) over its 8
//         sub-blocks of 32 (sum(a) from bsums); acc = fma(S_i, d_a d_w, acc),
//         accm = fma(M_i, d_a dmin_w, accm); result acc - accm.
//   Q6_K: S_i = sum_j sc_j sum((q - 32) a) over 16 sub-blocks of 16;
//         acc = fma(S_i, d_a d_w, acc).
// (Integer sums are exact whatever their order; S_i as a float rounds once.)
float kernel_vec_dot_q4_K_scalar(const block_q4_K *x, const block_q8_K *y, int64_t n) {
    float acc = 0.0f, accm = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        const uint8_t *s = x[i].scales;
        for (int j = 0; j < 8; j++) {
            if (j < 4) {
                sc[j] = s[j] & 63;
                mn[j] = s[j + 4] & 63;
            } else {
                sc[j] = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
                mn[j] = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
            }
        }
        int32_t sumi = 0, summ = 0;
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        for (int j = 0; j < 4; j++, q4 += 32, q8 += 64) {
            int32_t lo = 0, hi = 0;
            for (int l = 0; l < 32; l++) {
                lo += (q4[l] & 0xF) * q8[l];
                hi += (q4[l] >> 4) * q8[l + 32];
            }
            sumi += sc[2 * j] * lo + sc[2 * j + 1] * hi;
        }
        for (int j = 0; j < 8; j++) summ += mn[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        acc = fmaf((float)sumi, y[i].d * as_fp16_to_f32(x[i].d), acc);
        accm = fmaf((float)summ, y[i].d * as_fp16_to_f32(x[i].dmin), accm);
    }
    return acc - accm;
}

float kernel_vec_dot_q6_K_scalar(const block_q6_K *x, const block_q8_K *y, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int8_t q[QK_K];
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                q[j + l + 0] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                q[j + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                q[j + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                q[j + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int32_t sumi = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++) s += q[16 * j + l] * y[i].qs[16 * j + l];
            sumi += x[i].scales[j] * s;
        }
        acc = fmaf((float)sumi, y[i].d * as_fp16_to_f32(x[i].d), acc);
    }
    return acc;
}

// Q4_0 / Q4_1 / Q8_0 . Q8_1 in the float order of the AVX-512 kernels (the
// definition: kernels_avx512.c, kernels_amx.c; kernels_avx2.c keeps it too).
// Block i's exact integer sum P_i of unsigned weight codes u times the
// activation codes a -- u = q (0..15) for Q4_0 / Q4_1, u = q + 128 for Q8_0 --
// and m_w, the weight that u = 0 stands for: Q4_1's m, -8 d_w for Q4_0, -128
// d_w for Q8_0, which meets s_a = d_a sum(a).  For b = i % 4:
//   acc_b = fma(float(P_i), d_w d_a, acc_b),  accm_b = fma(m_w, s_a, accm_b)
// and the result is ((acc_0 + acc_2) + (acc_1 + acc_3)) + ((accm_0 + accm_2) + (accm_1 + accm_3)).
// A row's last group of fewer than 4 blocks leaves the other chains as they
// are (the vectors add exact zeros there: the same bits).
static float vec_dot_q32_scalar(ggml_type wtype, const void *w, const block_q8_1_f32 *y, int64_t n) {
    float acc[4] = {0, 0, 0, 0}, accm[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < n / 32; i++) {
        int32_t p = 0;
        float dw, mw;
        if (wtype == GGML_TYPE_Q8_0) {
            const block_q8_0 *x = (const block_q8_0 *)w + i;
            for (int j = 0; j < 32; j++) p += (x->qs[j] + 128) * y[i].qs[j];
            dw = as_fp16_to_f32(x->d), mw = dw * -128.0f;
        } else {
            const bool affine = wtype == GGML_TYPE_Q4_1;
            const uint8_t *qs = affine ? ((const block_q4_1 *)w + i)->qs : ((const block_q4_0 *)w + i)->qs;
            for (int j = 0; j < 16; j++) p += (qs[j] & 0xF) * y[i].qs[j] + (qs[j] >> 4) * y[i].qs[j + 16];
            if (affine) dw = as_fp16_to_f32(((const block_q4_1 *)w + i)->d), mw = as_fp16_to_f32(((const block_q4_1 *)w + i)->m);
            else dw = as_fp16_to_f32(((const block_q4_0 *)w + i)->d), mw = dw * -8.0f;
        }
        const int b = (int)(i % 4);
        acc[b] = fmaf((float)p, dw * y[i].d, acc[b]);
        accm[b] = fmaf(mw, y[i].s, accm[b]);
    }
    return ((acc[0] + acc[2]) + (acc[1] + acc[3])) + ((accm[0] + accm[2]) + (accm[1] + accm[3]));
}

static float vec_dot_scalar(ggml_type wtype, const void *w, const void *act, int64_t n) {
    switch (wtype) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q8_0: return vec_dot_q32_scalar(wtype, w, act, n);
    case GGML_TYPE_Q4_K: return kernel_vec_dot_q4_K_scalar(w, act, n);
    case GGML_TYPE_Q6_K: return kernel_vec_dot_q6_K_scalar(w, act, n);
    default: as_die("vec_dot: no 8-bit path for type %d", (int)wtype);
    }
}

// The F32 path's dot product, in the order of every ISA (the AVX-512
// kernels' registers: kernels_avx512.c dot_f32 / fused_dot_n): product c goes
// to lane c % 32 as a fused multiply-add chain in increasing c from +0 (a
// row's tail leaves the lanes past it untouched); then lanes l and l + 16 are
// added, and the 16 sums by one fixed tree: s8[i] = l[i] + l[i + 8], s4[i] =
// s8[i] + s8[i + 4], s2[i] = s4[i] + s4[i + 2], s2[0] + s2[1].
static float dot_f32_lanes(const float acc[32]) {
    float l[16], s8[8], s4[4], s2[2];
    for (int i = 0; i < 16; i++) l[i] = acc[i] + acc[i + 16];
    for (int i = 0; i < 8; i++) s8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

static float dot_f32_scalar(const float *a, const float *b, int64_t n) {
    float acc[32] = {0};
    for (int64_t i = 0; i < n; i++) acc[i % 32] = fmaf(a[i], b[i], acc[i % 32]);
    return dot_f32_lanes(acc);
}

const kernel_ops kernel_ops_scalar = {
    .name = "scalar",
    .dequant_row = quant_dequantize_row,
    .dot_f32 = dot_f32_scalar,
    .quantize_act = quantize_act_scalar,
    .vec_dot = vec_dot_scalar,
};
