/* quant_write.c — weight quantisers (llama.cpp's quantize_row_*_ref): float rows to Q4_0, Q4_1,
 * Q8_0, Q6_K, F16, BF16, F32. Used by the synthetic-model writer and the tests; the forward pass
 * never quantises weights. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "quant_impl.h"
#include "status.h"

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
        y[i].d = quant_f2h(d);
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
        y[i].d = quant_f2h(d);
        y[i].m = quant_f2h(min);
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
        y[i].d = quant_f2h(d);
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
            int l = quant_nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        /* sumlx^2/suml2 is the error reduction of the least-squares scale sumlx/suml2 */
        if (suml2 > 0 && (best < 0 || sumlx * sumlx > best * suml2)) {
            for (int i = 0; i < n; i++) {
                int l = quant_nearest_int(iscale * x[i]);
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
        y[i].d = quant_f2h(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) {
            int s = quant_nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(s < 127 ? s : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = quant_h2f(y[i].d) * y[i].scales[j];
            if (d == 0.0f)
                continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = quant_nearest_int(x[16 * j + ii] / d);
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
    quant_check_row(t, n);
    const int64_t nb = n / quant_block_elems(t);
    switch (t) {
    case GGUF_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: {
        uint8_t *p = dst;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t == GGUF_DTYPE_F16 ? quant_f2h(src[i]) : quant_f32_to_bf16(src[i]);
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
