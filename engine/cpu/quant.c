/* quant.c — GGML block formats on the CPU: exact fp16/bf16 conversion, (de)quantisation of
 * weights as llama.cpp's reference quantisers do it, activation quantisation as llama.cpp's x86
 * build does it, the scalar reference dot products, and dispatch to the AVX2 kernels. */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "quant_impl.h"
#include "status.h"

#if defined(SERVAL_QUANT_X86)
#include <cpuid.h>
#endif

/* ---- fp16 / bf16 ------------------------------------------------------------------------ */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float quant_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in f32 */
        return f32_from_bits(sign | f32_bits((float)mant * 0x1p-24f));
    }
    if (exp == 31) /* inf, or NaN made quiet as the F16C instruction does */
        return f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t quant_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
    if (x >= 0x477ff000u) /* >= 65520 rounds to infinity (and inf stays inf) */
        return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) {
        /* Below the smallest normal half: adding 0.5 leaves the value's 2^-24 multiples in
         * the low mantissa bits, rounded to nearest even by the FPU. */
        float r = f32_from_bits(x) + 0.5f;
        return (uint16_t)(sign | (f32_bits(r) - 0x3f000000u));
    }
    /* normal: rebias the exponent and round the 13 dropped bits to nearest even */
    x += 0xc8000fffu + ((x >> 13) & 1u);
    return (uint16_t)(sign | (x >> 13));
}

float quant_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t quant_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: truncate, force quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* ---- sizes ------------------------------------------------------------------------------- */

static int64_t block_elems(gguf_dtype t)
{
    switch (t) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return 1;
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q4_1:
    case GGUF_DTYPE_Q8_0: return 32;
    case GGUF_DTYPE_Q6_K: return QK_K;
    }
    return 0;
}

size_t quant_weight_row_bytes(gguf_dtype t, int64_t n)
{
    switch (t) {
    case GGUF_DTYPE_F32: return (size_t)n * 4;
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return (size_t)n * 2;
    case GGUF_DTYPE_Q4_0: return (size_t)(n / QK4_0) * sizeof(block_q4_0);
    case GGUF_DTYPE_Q4_1: return (size_t)(n / QK4_1) * sizeof(block_q4_1);
    case GGUF_DTYPE_Q8_0: return (size_t)(n / QK8_0) * sizeof(block_q8_0);
    case GGUF_DTYPE_Q6_K: return (size_t)(n / QK_K) * sizeof(block_q6_K);
    }
    ENG_ASSERT(!"unknown dtype");
    return 0;
}

/* Internal invariant: callers pass a supported type and a whole number of blocks. */
static void check_row(gguf_dtype t, int64_t n)
{
    int64_t be = block_elems(t);
    ENG_ASSERT(be > 0);
    ENG_ASSERT(n >= 0 && n % be == 0);
}

/* ---- rounding helpers -------------------------------------------------------------------- */

/* Round to nearest, ties to even, for |f| < 2^22 (GGML's nearest_int). */
static inline int nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline float h2f(uint16_t h) { return quant_f16_to_f32(h); }
static inline uint16_t f2h(float f) { return quant_f32_to_f16(f); }

/* ---- dequantisation ---------------------------------------------------------------------- */

static void dequant_q6_K(const block_q6_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = h2f(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        float *out = y + i * QK_K;
        for (int half = 0; half < 2; half++) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = (int)((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * sc[is] * q1;
                out[l + 32] = d * sc[is + 2] * q2;
                out[l + 64] = d * sc[is + 4] * q3;
                out[l + 96] = d * sc[is + 6] * q4;
            }
            out += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

void quant_dequant_row(gguf_dtype t, const void *src, float *dst, int64_t n)
{
    check_row(t, n);
    const int64_t nb = n / block_elems(t);
    switch (t) {
    case GGUF_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_F16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = h2f(h);
        }
        return;
    }
    case GGUF_DTYPE_BF16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = quant_bf16_to_f32(h);
        }
        return;
    }
    case GGUF_DTYPE_Q4_0: {
        const block_q4_0 *x = src;
        for (int64_t i = 0; i < nb; i++) {
            const float d = h2f(x[i].d);
            for (int j = 0; j < 16; j++) {
                dst[i * 32 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
                dst[i * 32 + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
            }
        }
        return;
    }
    case GGUF_DTYPE_Q4_1: {
        const block_q4_1 *x = src;
        for (int64_t i = 0; i < nb; i++) {
            const float d = h2f(x[i].d), m = h2f(x[i].m);
            for (int j = 0; j < 16; j++) {
                dst[i * 32 + j] = (x[i].qs[j] & 0x0F) * d + m;
                dst[i * 32 + j + 16] = (x[i].qs[j] >> 4) * d + m;
            }
        }
        return;
    }
    case GGUF_DTYPE_Q8_0: {
        const block_q8_0 *x = src;
        for (int64_t i = 0; i < nb; i++) {
            const float d = h2f(x[i].d);
            for (int j = 0; j < 32; j++)
                dst[i * 32 + j] = x[i].qs[j] * d;
        }
        return;
    }
    case GGUF_DTYPE_Q6_K:
        dequant_q6_K(src, dst, nb);
        return;
    }
}

/* ---- weight quantisation (llama.cpp's quantize_row_*_ref) -------------------------------- */

static void quantize_q4_0(const float *x, block_q4_0 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0.0f, max = 0.0f; /* the value of largest magnitude, with its sign */
        for (int j = 0; j < 32; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)(x[j] * id + 8.5f);
            int q1 = (int8_t)(x[j + 16] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q4_1(const float *x, block_q4_1 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(min);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)((x[j] - min) * id + 0.5f);
            int q1 = (int8_t)((x[j + 16] - min) * id + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q8_0(const float *x, block_q8_0 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < 32; j++)
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* Best scale for n values on the grid [-nmax, nmax-1] (GGML's make_qx_quants, weighted by x^2):
 * start from the extreme value, then try nearby grid stretches and keep the least-squares best.
 * Writes L[i] in [0, 2*nmax) (offset by nmax). */
static float q6_sub_scale(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float best_scale = 0, best = -1;
    for (int is = -9; is <= 9; is++) {
        const float iscale = -(nmax + 0.1f * is) / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        /* sumlx^2/suml2 is the error reduction of the least-squares scale sumlx/suml2 */
        if (suml2 > 0 && (best < 0 || sumlx * sumlx > best * suml2)) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
                L[i] = (int8_t)(l + nmax);
            }
            best_scale = sumlx / suml2;
            best = best_scale * sumlx;
        }
    }
    return best_scale;
}

static void quantize_q6_K(const float *x, block_q6_K *y, int64_t nb)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, max_abs = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            scales[ib] = q6_sub_scale(16, 32, x + 16 * ib, L + 16 * ib);
            if (fabsf(scales[ib]) > max_abs) {
                max_abs = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        memset(&y[i], 0, sizeof y[i]);
        if (max_abs < 1e-15f)
            continue;
        const float iscale = -128.f / max_scale;
        y[i].d = f2h(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) {
            int s = nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(s < 127 ? s : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = h2f(y[i].d) * y[i].scales[j];
            if (d == 0.0f)
                continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = nearest_int(x[16 * j + ii] / d);
                l = l < -32 ? -32 : l > 31 ? 31 : l;
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; l++) {
                const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
                const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
    }
}

void quant_quantize_row(gguf_dtype t, const float *src, void *dst, int64_t n)
{
    check_row(t, n);
    const int64_t nb = n / block_elems(t);
    switch (t) {
    case GGUF_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: {
        uint8_t *p = dst;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t == GGUF_DTYPE_F16 ? f2h(src[i]) : quant_f32_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return;
    }
    case GGUF_DTYPE_Q4_0: quantize_q4_0(src, dst, nb); return;
    case GGUF_DTYPE_Q4_1: quantize_q4_1(src, dst, nb); return;
    case GGUF_DTYPE_Q8_0: quantize_q8_0(src, dst, nb); return;
    case GGUF_DTYPE_Q6_K: quantize_q6_K(src, dst, nb); return;
    }
}

/* ---- activation quantisation ------------------------------------------------------------- */

size_t quant_act_row_bytes(gguf_dtype wtype, int64_t n)
{
    check_row(wtype, n);
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return (size_t)n * sizeof(float);
    case GGUF_DTYPE_Q4_0: return quant_q4_0_lane_off(n / QK8_0) + (size_t)(n / QK8_0) * 32;
    case GGUF_DTYPE_Q8_0: return quant_q8_0_tail_off(n / QK8_0) + (size_t)(n / QK8_0) * 4;
    case GGUF_DTYPE_Q4_1: return quant_q8_1_tail_off(n / QK8_1) + (size_t)(n / QK8_1) * 8;
    case GGUF_DTYPE_Q6_K: return (size_t)(n / QK_K) * sizeof(block_q8_K);
    }
    return 0;
}

/* One 32-element block the way llama.cpp's x86 quantize_row_q8_0/q8_1 does it: d = amax/127,
 * q = round-half-even(x * (127/amax)). The AVX2 version computes the same bits. */
static int q8_block(const float *x, int8_t *qs, float *d_out)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        int q = nearest_int(x[j] * id);
        q = q < -128 ? -128 : q > 127 ? 127 : q;
        qs[j] = (int8_t)q;
        sum += q;
    }
    *d_out = amax / 127.f;
    return sum;
}

static void act_q8_K(const float *x, block_q8_K *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        memset(&y[i], 0, sizeof y[i]);
        if (amax == 0.0f)
            continue;
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void quant_ref_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n)
{
    check_row(wtype, n);
    uint8_t *a = act;
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16:
        memcpy(act, x, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q8_0: {
        const int64_t nb = n / QK8_0;
        block_q8_0 *y = act;
        uint8_t *tail = a + quant_q8_0_tail_off(nb), *lanes = a + quant_q4_0_lane_off(nb);
        for (int64_t i = 0; i < nb; i++) {
            float d;
            (void)q8_block(x + i * 32, y[i].qs, &d);
            y[i].d = f2h(d);
            d = h2f(y[i].d);
            memcpy(tail + 4 * i, &d, 4);
            if (wtype == GGUF_DTYPE_Q4_0) {
                int32_t off[8];
                quant_q4_0_lane_offsets(y[i].qs, off);
                memcpy(lanes + 32 * i, off, sizeof off);
            }
        }
        return;
    }
    case GGUF_DTYPE_Q4_1: {
        const int64_t nb = n / QK8_1;
        block_q8_1 *y = act;
        float *tail = (float *)(a + quant_q8_1_tail_off(nb));
        for (int64_t i = 0; i < nb; i++) {
            float d;
            int sum = q8_block(x + i * 32, y[i].qs, &d);
            y[i].d = f2h(d);
            y[i].s = f2h(d * (float)sum);
            tail[2 * i] = h2f(y[i].d);
            tail[2 * i + 1] = h2f(y[i].s);
        }
        return;
    }
    case GGUF_DTYPE_Q6_K:
        act_q8_K(x, act, n / QK_K);
        return;
    }
}

void quant_act_dequant(gguf_dtype wtype, const void *act, float *dst, int64_t n)
{
    check_row(wtype, n);
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16:
        memcpy(dst, act, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q8_0:
        quant_dequant_row(GGUF_DTYPE_Q8_0, act, dst, n);
        return;
    case GGUF_DTYPE_Q4_1: {
        const block_q8_1 *y = act;
        for (int64_t i = 0; i < n / 32; i++)
            for (int j = 0; j < 32; j++)
                dst[i * 32 + j] = y[i].qs[j] * h2f(y[i].d);
        return;
    }
    case GGUF_DTYPE_Q6_K: {
        const block_q8_K *y = act;
        for (int64_t i = 0; i < n / QK_K; i++)
            for (int j = 0; j < QK_K; j++)
                dst[i * QK_K + j] = y[i].qs[j] * y[i].d;
        return;
    }
    }
}

/* ---- scalar reference dot products ------------------------------------------------------- */

/* The 8-lane order of quant_impl.h (llama.cpp's AVX2 ggml_vec_dot_*): lane j of block i holds
 * the exact int32 sum of elements 4j..4j+3, and acc[j] = fma((float)p_j, d_w*d_a, acc[j]). */
static inline void lanes_fma(float acc[8], const int p[8], float d)
{
    for (int j = 0; j < 8; j++)
        acc[j] = fmaf((float)p[j], d, acc[j]);
}

/* hsum_float_8: (a4+a0, a5+a1, a6+a2, a7+a3), then (r0+r2) + (r1+r3). */
static inline float lanes_hsum(const float acc[8])
{
    const float r0 = acc[4] + acc[0], r1 = acc[5] + acc[1], r2 = acc[6] + acc[2], r3 = acc[7] + acc[3];
    const float s0 = r0 + r2, s1 = r1 + r3;
    return s0 + s1;
}

/* Element e of a 4-bit block: low nibbles are elements 0..15, high nibbles 16..31. */
static inline int nib(const uint8_t *qs, int e) { return e < 16 ? qs[e] & 0x0F : qs[e - 16] >> 4; }

static float dot_q4_0_ref(const block_q4_0 *x, const block_q8_0 *y, int64_t nb)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < nb; i++) {
        int p[8];
        for (int j = 0; j < 8; j++) {
            p[j] = 0;
            for (int e = 4 * j; e < 4 * j + 4; e++)
                p[j] += (nib(x[i].qs, e) - 8) * y[i].qs[e];
        }
        lanes_fma(acc, p, h2f(x[i].d) * h2f(y[i].d));
    }
    return lanes_hsum(acc);
}

/* Q4_1 adds the min term as a separate scalar chain, summs = fma(m_w, s_a, summs), and returns
 * hsum + summs: llama.cpp's `summs += m*s` (its gcc build contracts it to an fma; m*s, two fp16
 * values, is exact in f32, so fused or not gives the same bits). */
static float dot_q4_1_ref(const block_q4_1 *x, const block_q8_1 *y, int64_t nb)
{
    float acc[8] = {0}, summs = 0;
    for (int64_t i = 0; i < nb; i++) {
        summs = fmaf(h2f(x[i].m), h2f(y[i].s), summs);
        int p[8];
        for (int j = 0; j < 8; j++) {
            p[j] = 0;
            for (int e = 4 * j; e < 4 * j + 4; e++)
                p[j] += nib(x[i].qs, e) * y[i].qs[e];
        }
        lanes_fma(acc, p, h2f(x[i].d) * h2f(y[i].d));
    }
    return lanes_hsum(acc) + summs;
}

static float dot_q8_0_ref(const block_q8_0 *x, const block_q8_0 *y, int64_t nb)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < nb; i++) {
        int p[8];
        for (int j = 0; j < 8; j++) {
            p[j] = 0;
            for (int e = 4 * j; e < 4 * j + 4; e++)
                p[j] += x[i].qs[e] * y[i].qs[e];
        }
        lanes_fma(acc, p, h2f(x[i].d) * h2f(y[i].d));
    }
    return lanes_hsum(acc);
}

static float dot_q6_K_ref(const block_q6_K *x, const block_q8_K *y, int64_t nb)
{
    float acc = 0;
    int8_t q[QK_K];
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                q[j + l] = (int8_t)(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                q[j + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                q[j + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                q[j + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int32_t sumi = 0;
        for (int sb = 0; sb < QK_K / 16; sb++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++)
                s += q[sb * 16 + l] * y[i].qs[sb * 16 + l];
            sumi += x[i].scales[sb] * s;
        }
        acc = fmaf((float)sumi, h2f(x[i].d) * y[i].d, acc);
    }
    return acc;
}

static float dot_f32_ref(gguf_dtype t, const void *w, const float *a, int64_t n)
{
    const uint8_t *p = w;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float wi;
        if (t == GGUF_DTYPE_F32) {
            memcpy(&wi, p + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            wi = t == GGUF_DTYPE_F16 ? h2f(h) : quant_bf16_to_f32(h);
        }
        sum += wi * a[i];
    }
    return sum;
}

float quant_ref_vec_dot(gguf_dtype wtype, const void *wrow, const void *act, int64_t n)
{
    check_row(wtype, n);
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return dot_f32_ref(wtype, wrow, act, n);
    case GGUF_DTYPE_Q4_0: return dot_q4_0_ref(wrow, act, n / QK4_0);
    case GGUF_DTYPE_Q4_1: return dot_q4_1_ref(wrow, act, n / QK4_1);
    case GGUF_DTYPE_Q8_0: return dot_q8_0_ref(wrow, act, n / QK8_0);
    case GGUF_DTYPE_Q6_K: return dot_q6_K_ref(wrow, act, n / QK_K);
    }
    return 0;
}

void quant_ref_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                      const void *act, int64_t n_tok, float *y, int64_t ldy)
{
    check_row(wtype, n);
    const size_t wrow = quant_weight_row_bytes(wtype, n);
    const size_t arow = quant_act_row_bytes(wtype, n);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = (const uint8_t *)W + (size_t)r * wrow;
        for (int64_t t = 0; t < n_tok; t++)
            y[t * ldy + r] = quant_ref_vec_dot(wtype, w, (const uint8_t *)act + (size_t)t * arow, n);
    }
}

/* ---- dispatch ---------------------------------------------------------------------------- */

bool quant_cpu_has_avx2(void)
{
#if defined(SERVAL_QUANT_X86)
    /* 0 = not probed yet, 1 = no, 2 = yes; probing twice is harmless */
    static atomic_int cached;
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c == 0) {
        unsigned a, b, cx, dx;
        bool f16c = __get_cpuid(1, &a, &b, &cx, &dx) && (cx & bit_F16C);
        __builtin_cpu_init();
        bool ok = f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        c = ok ? 2 : 1;
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return c == 2;
#else
    return false;
#endif
}

void quant_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n)
{
#if defined(SERVAL_QUANT_X86)
    if (quant_cpu_has_avx2()) {
        check_row(wtype, n);
        quant_avx2_act_quantize(wtype, x, act, n);
        return;
    }
#endif
    quant_ref_act_quantize(wtype, x, act, n);
}

void quant_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                  const void *act, int64_t n_tok, float *y, int64_t ldy)
{
#if defined(SERVAL_QUANT_X86)
    if (quant_cpu_has_avx2()) {
        check_row(wtype, n);
        ENG_ASSERT(r0 <= r1 && n_tok >= 0);
        quant_avx2_matmul(wtype, W, n, r0, r1, act, n_tok, y, ldy);
        return;
    }
#endif
    quant_ref_matmul(wtype, W, n, r0, r1, act, n_tok, y, ldy);
}

float quant_vec_dot(gguf_dtype wtype, const void *wrow, const void *act, int64_t n)
{
#if defined(SERVAL_QUANT_X86)
    if (quant_cpu_has_avx2()) {
        float y;
        check_row(wtype, n);
        quant_avx2_matmul(wtype, wrow, n, 0, 1, act, 1, &y, 1);
        return y;
    }
#endif
    return quant_ref_vec_dot(wtype, wrow, act, n);
}
