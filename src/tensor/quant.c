// Tensor element formats: ggml's block layouts, bit for bit.
//
// Dequantisers follow ggml-quants.c (dequantize_row_*) operation by operation,
// in the same order, so that results are bit-identical: e.g. Q4_1 is
// `q*d + m` (one rounding after the product, one after the sum) and Q6_K is
// `(d*sc)*q`.  This file is compiled with -ffp-contract=off so the compiler
// cannot fuse those into FMAs and change the last bit.
//
// The quantisers are ggml's *_ref algorithms (the ones its converter uses for
// deterministic model files), including the iterative scale search of the K
// types (make_qkx2_quants for Q4_K, make_qx_quants for Q6_K).
#include "tensor/quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "tensor/kernels.h"
#include "util/common.h"

_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");

// The block traits (elements, bytes) live with the file format in gguf.c.
size_t quant_row_size(ggml_type t, int64_t n) {
    if (!ggml_type_supported(t)) return 0;
    const int64_t be = ggml_type_block_elems(t);
    if (be <= 0 || n < 0 || n % be != 0) return 0;
    size_t out;
    if (as_mul_overflow((size_t)(n / be), ggml_type_block_bytes(t), &out)) return 0;
    return out;
}

// ---- scalar conversions -------------------------------------------------------

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// Half -> single is exact.  Normal halves: shift exponent+mantissa into place
// and rebias by multiplying with 2^-112 (the exponent difference 127-15 =
// 112).  Subnormal halves: build 0.5 + m*2^-24 in the float's mantissa and
// subtract 0.5, which is exact.  Inf/NaN come out of the normal branch because
// 2^-112 * (exponent 0xFF...) stays Inf/NaN.
float as_fp16_to_f32(as_fp16 h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t result = sign | (two_w < (1u << 27) ? f32_bits(denormalized) : f32_bits(normalized));
    return f32_from_bits(result);
}

// Single -> half, round to nearest even (the F16C/IEEE result).  Scaling |f|
// by 2^112 then 2^-110 saturates overflow to Inf; adding a power of two
// `bias` aligned with f's exponent makes the float adder round the mantissa to
// 10 bits (RNE) for us; the rounded bits are then read back out.
as_fp16 as_f32_to_fp16(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = f32_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (as_fp16)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f32_to_fp16_f16c(as_fp16 *y, int64_t stride, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        if (stride == 1) _mm_storeu_si128((__m128i *)(y + i), h);
        else {
            _Alignas(16) as_fp16 t[8];
            _mm_store_si128((__m128i *)t, h);
            for (int j = 0; j < 8; j++) y[(i + j) * stride] = t[j];
        }
    }
    for (; i < n; i++) y[i * stride] = as_f32_to_fp16(x[i]);
}
#endif

void as_f32_to_fp16_n(as_fp16 *y, int64_t stride, const float *x, int64_t n) {
#if defined(__x86_64__)
    if (cpu_get_features()->f16c) {
        f32_to_fp16_f16c(y, stride, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i * stride] = as_f32_to_fp16(x[i]);
}

float as_bf16_to_f32(as_bf16 h) { return f32_from_bits((uint32_t)h << 16); }

// Round to nearest even on the upper 16 bits; NaNs are forced quiet so that
// truncation cannot turn a NaN into Inf.
as_bf16 as_f32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (as_bf16)((u >> 16) | 64);
    return (as_bf16)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

// ---- dequantisation -------------------------------------------------------------

static void dequantize_row_q4_0(const block_q4_0 *x, float *y, int64_t k) {
    const int64_t nb = k / QK4_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = as_fp16_to_f32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            y[i * QK4_0 + j] = x0 * d;
            y[i * QK4_0 + j + QK4_0 / 2] = x1 * d;
        }
    }
}

static void dequantize_row_q4_1(const block_q4_1 *x, float *y, int64_t k) {
    const int64_t nb = k / QK4_1;
    for (int64_t i = 0; i < nb; i++) {
        const float d = as_fp16_to_f32(x[i].d);
        const float m = as_fp16_to_f32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            const int x0 = x[i].qs[j] & 0x0F;
            const int x1 = x[i].qs[j] >> 4;
            y[i * QK4_1 + j] = x0 * d + m;
            y[i * QK4_1 + j + QK4_1 / 2] = x1 * d + m;
        }
    }
}

static void dequantize_row_q8_0(const block_q8_0 *x, float *y, int64_t k) {
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = as_fp16_to_f32(x[i].d);
        for (int j = 0; j < QK8_0; ++j) y[i * QK8_0 + j] = x[i].qs[j] * d;
    }
}

// Q4_K packs 8 (scale, min) pairs of 6 bits into 12 bytes:
//   bytes 0-3: scales 0-3 (low 6 bits), top 2 bits = high bits of scales 4-7
//   bytes 4-7: mins 0-3 (low 6 bits),   top 2 bits = high bits of mins 4-7
//   bytes 8-11: low nibble = low 4 bits of scales 4-7, high nibble = of mins 4-7
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

// Q4_K super-block of 256 = 8 sub-blocks of 32: x = d*sc_j*q - dmin*m_j.  The
// 4-bit values of sub-blocks 2i and 2i+1 share 32 bytes (low, high nibble).
static void dequantize_row_q4_K(const block_q4_K *x, float *y, int64_t k) {
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = as_fp16_to_f32(x[i].d);
        const float min = as_fp16_to_f32(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < QK_K; j += 64) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

// Q6_K super-block of 256 = 16 sub-blocks of 16 with int8 scales:
// x = d*sc*(q - 32), q = 4 low bits from ql | 2 high bits from qh.  Per 128
// values: ql[0..31] holds values 0-31 (low nibble) and 64-95 (high nibble),
// ql[32..63] values 32-63 and 96-127; qh[l] holds the 2 high bits of values
// l, l+32, l+64, l+96.
static void dequantize_row_q6_K(const block_q6_K *x, float *y, int64_t k) {
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = as_fp16_to_f32(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

void quant_dequantize_row(ggml_type t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case GGML_TYPE_F16: {
        const as_fp16 *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = as_fp16_to_f32(s[i]);
        break;
    }
    case GGML_TYPE_BF16: {
        const as_bf16 *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = as_bf16_to_f32(s[i]);
        break;
    }
    case GGML_TYPE_Q4_0: dequantize_row_q4_0(src, dst, n); break;
    case GGML_TYPE_Q4_1: dequantize_row_q4_1(src, dst, n); break;
    case GGML_TYPE_Q8_0: dequantize_row_q8_0(src, dst, n); break;
    case GGML_TYPE_Q4_K: dequantize_row_q4_K(src, dst, n); break;
    case GGML_TYPE_Q6_K: dequantize_row_q6_K(src, dst, n); break;
    default: as_die("quant_dequantize_row: unsupported type %d", (int)t);
    }
}

// ---- reference quantisers -------------------------------------------------------

// Q4_0: d = (value of largest magnitude) / -8, so that value maps to q = 0
// exactly and the rest round into [0, 15] via trunc(x/d + 8.5).
static void quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t k) {
    const int64_t nb = k / QK4_0;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++) {
            const float v = x[i * QK4_0 + j];
            if (amax < fabsf(v)) { amax = fabsf(v); max = v; }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = as_f32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const float x0 = x[i * QK4_0 + j] * id;
            const float x1 = x[i * QK4_0 + QK4_0 / 2 + j] * id;
            const uint8_t xi0 = (uint8_t)AS_MIN(15, (int8_t)(x0 + 8.5f));
            const uint8_t xi1 = (uint8_t)AS_MIN(15, (int8_t)(x1 + 8.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

// Q4_1: affine, d = (max - min)/15, m = min, q = trunc((x - min)/d + 0.5).
static void quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t k) {
    const int64_t nb = k / QK4_1;
    for (int64_t i = 0; i < nb; i++) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            const float v = x[i * QK4_1 + j];
            if (v < min) min = v;
            if (v > max) max = v;
        }
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = as_f32_to_fp16(d);
        y[i].m = as_f32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            const float x0 = (x[i * QK4_1 + j] - min) * id;
            const float x1 = (x[i * QK4_1 + QK4_1 / 2 + j] - min) * id;
            const uint8_t xi0 = (uint8_t)AS_MIN(15, (int8_t)(x0 + 0.5f));
            const uint8_t xi1 = (uint8_t)AS_MIN(15, (int8_t)(x1 + 0.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

// Q8_0: symmetric, d = amax/127, q = round-half-away(x/d).
static void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t k) {
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = AS_MAX(amax, fabsf(x[i * QK8_0 + j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = as_f32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = (int8_t)roundf(x[i * QK8_0 + j] * id);
    }
}

#define GROUP_MAX_EPS 1e-15f

// Round to nearest (ties to even) for |fval| < 2^22 by adding 1.5*2^23: the
// float adder then drops the fraction, and the integer sits in the mantissa.
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

// Symmetric scale search for n values into [-nmax, nmax-1] (stored +nmax):
// start from iscale = -nmax/max, then try 18 nearby scales and keep the one
// with the best weighted least-squares fit sum(w*x*l)^2 / sum(w*l*l).
// rmse_type 1 weights each value by x^2.  (ggml make_qx_quants, qw == NULL.)
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            L[i] = (int8_t)(nmax + AS_MAX(-nmax, AS_MIN(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = AS_MAX(-nmax, AS_MIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i]));
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = AS_MAX(-nmax, AS_MIN(nmax - 1, l));
            float w = rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i]));
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + AS_MAX(-nmax, AS_MIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Affine scale+min search for n values into [0, nmax]: x ~ scale*l - the_min.
// For nstep+1 candidate scales (nmax + rmin + rdelta*is)/(max - min), quantise,
// solve the 2x2 weighted least-squares problem for (scale, min) in closed form,
// and keep the candidate with the lowest weighted squared error.
// (ggml make_qkx2_quants with use_mad = false.)
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)AS_MAX(0, AS_MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = AS_MAX(0, AS_MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * diff * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// Q4_K: per 32-value sub-block fit (scale, min) with weights |x| + rms(x),
// quantise the 8 scales and 8 mins to 6 bits against the super-block's
// d = max_scale/63 and dmin = max_min/63, then requantise the values with the
// rounded scales.
static void quantize_row_q4_K(const float *x, block_q4_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    uint8_t L[QK_K], Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    for (int64_t i = 0; i < nb; i++) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        memset(y[i].scales, 0, sizeof y[i].scales);
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
            ls = AS_MIN(63, ls);
            lm = AS_MIN(63, lm);
            if (j < 4) {
                y[i].scales[j] = ls;
                y[i].scales[j + 4] = lm;
            } else {
                y[i].scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
                y[i].scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
                y[i].scales[j - 0] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        y[i].d = as_f32_to_fp16(max_scale / 63.f);
        y[i].dmin = as_f32_to_fp16(max_min / 63.f);
        uint8_t sc, m;
        for (int j = 0; j < QK_K / 32; ++j) {
            get_scale_min_k4(j, y[i].scales, &sc, &m);
            const float d = as_fp16_to_f32(y[i].d) * sc;
            if (!d) continue;
            const float dm = as_fp16_to_f32(y[i].dmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((x[32 * j + ii] + dm) / d);
                L[32 * j + ii] = (uint8_t)AS_MAX(0, AS_MIN(15, l));
            }
        }
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
            q += 32;
        }
        x += QK_K;
    }
}

// Q6_K: per 16-value sub-block symmetric scale (make_qx_quants, x^2 weights),
// scales quantised to int8 against d = max_scale/-128, values requantised
// with the rounded scales into [-32, 31].
static void quantize_row_q6_K(const float *x, block_q6_K *y, int64_t k) {
    const int64_t nb = k / QK_K;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(block_q6_K));
            x += QK_K;
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = as_f32_to_fp16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib) y[i].scales[ib] = (int8_t)AS_MIN(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; ++j) {
            float d = as_fp16_to_f32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16 * j + ii] / d);
                l = AS_MAX(-32, AS_MIN(31, l));
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y[i].ql;
        uint8_t *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
        x += QK_K;
    }
}

void quant_quantize_row(ggml_type t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case GGML_TYPE_F16: {
        as_fp16 *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = as_f32_to_fp16(src[i]);
        break;
    }
    case GGML_TYPE_BF16: {
        as_bf16 *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = as_f32_to_bf16(src[i]);
        break;
    }
    case GGML_TYPE_Q4_0: quantize_row_q4_0(src, dst, n); break;
    case GGML_TYPE_Q4_1: quantize_row_q4_1(src, dst, n); break;
    case GGML_TYPE_Q8_0: quantize_row_q8_0(src, dst, n); break;
    case GGML_TYPE_Q4_K: quantize_row_q4_K(src, dst, n); break;
    case GGML_TYPE_Q6_K: quantize_row_q6_K(src, dst, n); break;
    default: as_die("quant_quantize_row: unsupported type %d", (int)t);
    }
}
