/* dequant.c — reference dequantisation of GGML blocks (Q4_0, Q4_1, Q8_0, Q6_K, F16, BF16,
 * F32), byte by byte from the packed layout described in engine/cpu/quant.h. */
#include <string.h>

#include "ref.h"

static float half_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return kn_ref_f16_to_f32(h);
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
