/* dequant.c — reference dequantisation of GGML blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q4_K, Q5_K, Q6_K, F16, BF16, F32), byte by byte from the packed layout described in engine/cpu/quant.h. */
#include <string.h>

#include "ref.h"

static float half_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return kn_ref_f16_to_f32(h);
}

/* Scale and min of K-quant sub-block j (0..7): GGML's get_scale_min_k4. */
static void k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q5_0 (has_min 0: x = d*(q-16)) and Q5_1 (x = d*q + m): 5-bit quants, bit 4 in qh. */
static void dequant_q5(const uint8_t *b, int has_min, float *y)
{
    const float d = half_at(b), m = has_min ? half_at(b + 2) : 0.0f;
    const uint8_t *p = b + (has_min ? 4 : 2);
    const uint32_t qh = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    const uint8_t *qs = p + 4;
    const int off = has_min ? 0 : 16;
    for (int j = 0; j < 16; j++) {
        const int x0 = (int)((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - off;
        const int x1 = (int)((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - off;
        y[j] = has_min ? x0 * d + m : x0 * d;
        y[j + 16] = has_min ? x1 * d + m : x1 * d;
    }
}

/* Q4_K and Q5_K (five: the fifth bit from qh): x = (d*sc) * q - dmin*m per sub-block of 32. */
static void dequant_k45(const uint8_t *b, int five, float *y)
{
    const float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16;
    const uint8_t *q = five ? qh + 32 : qh;
    for (int g = 0; g < 4; g++, q += 32, y += 64) {
        uint8_t sc, m;
        k_scale_min(2 * g, scales, &sc, &m);
        const float d1 = d * sc, m1 = dmin * m;
        k_scale_min(2 * g + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) {
            const int h1 = five ? ((qh[l] >> (2 * g)) & 1) << 4 : 0;
            const int h2 = five ? ((qh[l] >> (2 * g + 1)) & 1) << 4 : 0;
            y[l] = d1 * ((q[l] & 0xF) + h1) - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) - m2;
        }
    }
}

static void dequant_block(kn_qtype t, const uint8_t *b, float *y)
{
    switch (t) {
    case KN_QTYPE_F32: memcpy(y, b, 4); return;
    case KN_QTYPE_F16: y[0] = half_at(b); return;
    case KN_QTYPE_BF16: {
        uint16_t h;
        memcpy(&h, b, 2);
        y[0] = kn_ref_bf16_to_f32(h);
        return;
    }
    case KN_QTYPE_Q4_0: {
        const float d = half_at(b);
        for (int j = 0; j < 16; j++) {
            y[j] = ((b[2 + j] & 0x0F) - 8) * d;
            y[j + 16] = ((b[2 + j] >> 4) - 8) * d;
        }
        return;
    }
    case KN_QTYPE_Q4_1: {
        const float d = half_at(b), m = half_at(b + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = (b[4 + j] & 0x0F) * d + m;
            y[j + 16] = (b[4 + j] >> 4) * d + m;
        }
        return;
    }
    case KN_QTYPE_Q5_0: dequant_q5(b, 0, y); return;
    case KN_QTYPE_Q5_1: dequant_q5(b, 1, y); return;
    case KN_QTYPE_Q4_K: dequant_k45(b, 0, y); return;
    case KN_QTYPE_Q5_K: dequant_k45(b, 1, y); return;
    case KN_QTYPE_Q8_0: {
        const float d = half_at(b);
        for (int j = 0; j < 32; j++)
            y[j] = (int8_t)b[2 + j] * d;
        return;
    }
    case KN_QTYPE_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = half_at(b + 208);
        for (int half = 0; half < 2; half++) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
        return;
    }
    }
}

void kn_ref_dequant_row(kn_qtype t, const void *src, float *dst, int64_t n)
{
    const int be = kn_qtype_block_elems(t), bb = kn_qtype_block_bytes(t);
    for (int64_t i = 0; i < n / be; i++)
        dequant_block(t, (const uint8_t *)src + i * bb, dst + i * be);
}

void kn_ref_dequant(kn_qtype t, const void *src, int64_t n_rows, int64_t n_cols, kn_dtype odt,
                    void *dst)
{
    const int be = kn_qtype_block_elems(t), bb = kn_qtype_block_bytes(t);
    const size_t row_bytes = (size_t)(n_cols / be) * (size_t)bb;
    float y[256];
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t c = 0; c < n_cols; c += be) {
            dequant_block(t, (const uint8_t *)src + (size_t)r * row_bytes + (size_t)(c / be) * (size_t)bb, y);
            for (int j = 0; j < be; j++)
                kn_ref_store(odt, dst, (size_t)(r * n_cols + c + j), y[j]);
        }
}
