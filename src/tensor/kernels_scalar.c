// Portable C implementations of the kernel primitives (kernels_impl.h): the
// fallback for CPUs without AVX2, and the readable statement of what each SIMD
// version computes.
#include <math.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "util/common.h"

size_t kernel_act_row_size(ggml_type wtype, int64_t n) {
    switch (wtype) {
    // Whole groups of 4 blocks: the AVX-512 layout pads the last group.
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q8_0: return (size_t)((n / QK8_1 + 3) / 4 * 4) * sizeof(block_q8_1_f32);
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

// Q4_K . Q8_K: sub-block j (32 values) contributes
// d_a * (d_w*sc_j*sum(q*a) - dmin_w*m_j*sum(a)); sum(a) comes from bsums.
float kernel_vec_dot_q4_K_scalar(const block_q4_K *x, const block_q8_K *y, int64_t n) {
    float sumf = 0;
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
        sumf += y[i].d * (as_fp16_to_f32(x[i].d) * (float)sumi - as_fp16_to_f32(x[i].dmin) * (float)summ);
    }
    return sumf;
}

// Q6_K . Q8_K: d_w*d_a * sum over 16-value sub-blocks of sc * sum((q-32)*a).
float kernel_vec_dot_q6_K_scalar(const block_q6_K *x, const block_q8_K *y, int64_t n) {
    float sumf = 0;
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
        sumf += as_fp16_to_f32(x[i].d) * y[i].d * (float)sumi;
    }
    return sumf;
}

static float vec_dot_scalar(ggml_type wtype, const void *w, const void *act, int64_t n) {
    const block_q8_1_f32 *y = act;
    float sumf = 0;
    switch (wtype) {
    case GGML_TYPE_Q4_0: {
        const block_q4_0 *x = w;
        for (int64_t i = 0; i < n / QK4_0; i++) {
            int32_t s = 0;
            for (int j = 0; j < QK4_0 / 2; j++)
                s += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
            sumf += as_fp16_to_f32(x[i].d) * y[i].d * (float)s;
        }
        return sumf;
    }
    case GGML_TYPE_Q4_1: {
        const block_q4_1 *x = w;
        for (int64_t i = 0; i < n / QK4_1; i++) {
            int32_t s = 0;
            for (int j = 0; j < QK4_1 / 2; j++) s += (x[i].qs[j] & 0xF) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
            sumf += as_fp16_to_f32(x[i].d) * y[i].d * (float)s + as_fp16_to_f32(x[i].m) * y[i].s;
        }
        return sumf;
    }
    case GGML_TYPE_Q8_0: {
        const block_q8_0 *x = w;
        for (int64_t i = 0; i < n / QK8_0; i++) {
            int32_t s = 0;
            for (int j = 0; j < QK8_0; j++) s += x[i].qs[j] * y[i].qs[j];
            sumf += as_fp16_to_f32(x[i].d) * y[i].d * (float)s;
        }
        return sumf;
    }
    case GGML_TYPE_Q4_K: return kernel_vec_dot_q4_K_scalar(w, act, n);
    case GGML_TYPE_Q6_K: return kernel_vec_dot_q6_K_scalar(w, act, n);
    default: as_die("vec_dot: no 8-bit path for type %d", (int)wtype);
    }
}

static float dot_f32_scalar(const float *a, const float *b, int64_t n) {
    // Four partial sums: shorter dependency chains, and a smaller rounding error
    // growth than one running sum.
    float s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += a[i + k] * b[i + k];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

const kernel_ops kernel_ops_scalar = {
    .name = "scalar",
    .dequant_row = quant_dequantize_row,
    .dot_f32 = dot_f32_scalar,
    .quantize_act = quantize_act_scalar,
    .vec_dot = vec_dot_scalar,
};
