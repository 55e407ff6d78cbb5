/* quant_scalar.c — the scalar dot products and matrix multiply of quantised weights with
 * quantised activations, in exactly the lane order of llama.cpp's AVX2 kernels (quant_impl.h):
 * the portable path on CPUs without AVX2 and the reference the tests hold the SIMD kernels to. */
#include <math.h>
#include <string.h>

#include "quant.h"
#include "quant_impl.h"
#include "status.h"

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
        lanes_fma(acc, p, quant_h2f(x[i].d) * quant_h2f(y[i].d));
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
        summs = fmaf(quant_h2f(x[i].m), quant_h2f(y[i].s), summs);
        int p[8];
        for (int j = 0; j < 8; j++) {
            p[j] = 0;
            for (int e = 4 * j; e < 4 * j + 4; e++)
                p[j] += nib(x[i].qs, e) * y[i].qs[e];
        }
        lanes_fma(acc, p, quant_h2f(x[i].d) * quant_h2f(y[i].d));
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
        lanes_fma(acc, p, quant_h2f(x[i].d) * quant_h2f(y[i].d));
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
        acc = fmaf((float)sumi, quant_h2f(x[i].d) * y[i].d, acc);
    }
    return acc;
}

/* Element e (0..31) of a 5-bit block: nibble as for 4 bits, bit 4 from bit e of qh. */
static inline int q5_elem(const uint8_t *qs, uint32_t qh, int e) { return nib(qs, e) | (int)(((qh >> e) & 1) << 4); }

/* Q5_0: the 8-lane order of Q4_0 (ggml_vec_dot_q5_0_q8_0), values q - 16. */
static float dot_q5_0_ref(const block_q5_0 *x, const block_q8_0 *y, int64_t nb)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        int p[8];
        for (int j = 0; j < 8; j++) {
            p[j] = 0;
            for (int e = 4 * j; e < 4 * j + 4; e++)
                p[j] += (q5_elem(x[i].qs, qh, e) - 16) * y[i].qs[e];
        }
        lanes_fma(acc, p, quant_h2f(x[i].d) * quant_h2f(y[i].d));
    }
    return lanes_hsum(acc);
}

/* Q5_1: the order of Q4_1 (ggml_vec_dot_q5_1_q8_1), min term in its own fma chain. */
static float dot_q5_1_ref(const block_q5_1 *x, const block_q8_1 *y, int64_t nb)
{
    float acc[8] = {0}, summs = 0;
    for (int64_t i = 0; i < nb; i++) {
        summs = fmaf(quant_h2f(x[i].m), quant_h2f(y[i].s), summs);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        int p[8];
        for (int j = 0; j < 8; j++) {
            p[j] = 0;
            for (int e = 4 * j; e < 4 * j + 4; e++)
                p[j] += q5_elem(x[i].qs, qh, e) * y[i].qs[e];
        }
        lanes_fma(acc, p, quant_h2f(x[i].d) * quant_h2f(y[i].d));
    }
    return lanes_hsum(acc) + summs;
}

/* Q4_K / Q5_K (qh == NULL for Q4_K) × Q8_K in ggml_vec_dot_q4_K_q8_K / _q5_K_q8_K's order
 * (quant_impl.h): eight int32 lanes of scaled sums per super-block, one fma per lane; the mins
 * as four lanes (Q4_K) or one exact int32 sum per block (Q5_K). */
static float dot_k45_ref(const uint8_t *xb, size_t bsize, bool five, const block_q8_K *y, int64_t nb)
{
    float acc[8] = {0}, accm[4] = {0}, summs = 0;
    for (int64_t i = 0; i < nb; i++, xb += bsize) {
        uint16_t dh, mh;
        memcpy(&dh, xb, 2);
        memcpy(&mh, xb + 2, 2);
        const uint8_t *scales = xb + 4, *qh = xb + 4 + K_SCALE_SIZE, *qs = five ? qh + QK_K / 8 : qh;
        uint8_t sc[8], m[8];
        for (int s = 0; s < 8; s++)
            quant_k_scale_min(s, scales, &sc[s], &m[s]);
        int32_t sumi[8] = {0};
        for (int s = 0; s < 8; s++) {
            const int g = s / 2, hi = s & 1; /* 64-element group, which nibble */
            for (int j = 0; j < 8; j++) {
                int32_t p = 0;
                for (int e = 4 * j; e < 4 * j + 4; e++) {
                    int q = hi ? qs[32 * g + e] >> 4 : qs[32 * g + e] & 0xF;
                    if (five)
                        q |= ((qh[e] >> s) & 1) << 4;
                    p += q * y[i].qs[32 * s + e];
                }
                sumi[j] += sc[s] * p;
            }
        }
        const float d = y[i].d * quant_h2f(dh);
        const float dmin = -y[i].d * quant_h2f(mh);
        for (int j = 0; j < 8; j++)
            acc[j] = fmaf(d, (float)sumi[j], acc[j]);
        int32_t S[8];
        for (int s = 0; s < 8; s++)
            S[s] = y[i].bsums[2 * s] + y[i].bsums[2 * s + 1];
        if (five) {
            int32_t M = 0;
            for (int s = 0; s < 8; s++)
                M += m[s] * S[s];
            summs = fmaf(dmin, (float)M, summs);
        } else {
            for (int k = 0; k < 4; k++)
                accm[k] = fmaf(dmin, (float)(m[2 * k] * S[2 * k] + m[2 * k + 1] * S[2 * k + 1]), accm[k]);
        }
    }
    if (five)
        return lanes_hsum(acc) + summs;
    return lanes_hsum(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]));
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
            wi = t == GGUF_DTYPE_F16 ? quant_h2f(h) : quant_bf16_to_f32(h);
        }
        sum += wi * a[i];
    }
    return sum;
}

float quant_ref_vec_dot(gguf_dtype wtype, const void *wrow, const void *act, int64_t n)
{
    quant_check_row(wtype, n);
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return dot_f32_ref(wtype, wrow, act, n);
    case GGUF_DTYPE_Q4_0: return dot_q4_0_ref(wrow, act, n / QK4_0);
    case GGUF_DTYPE_Q4_1: return dot_q4_1_ref(wrow, act, n / QK4_1);
    case GGUF_DTYPE_Q8_0: return dot_q8_0_ref(wrow, act, n / QK8_0);
    case GGUF_DTYPE_Q6_K: return dot_q6_K_ref(wrow, act, n / QK_K);
    case GGUF_DTYPE_Q5_0: return dot_q5_0_ref(wrow, act, n / QK5_0);
    case GGUF_DTYPE_Q5_1: return dot_q5_1_ref(wrow, act, n / QK5_1);
    case GGUF_DTYPE_Q4_K: return dot_k45_ref(wrow, sizeof(block_q4_K), false, act, n / QK_K);
    case GGUF_DTYPE_Q5_K: return dot_k45_ref(wrow, sizeof(block_q5_K), true, act, n / QK_K);
    }
    return 0;
}

void quant_ref_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                      const void *act, int64_t n_tok, float *y, int64_t ldy)
{
    quant_check_row(wtype, n);
    const size_t wrow = quant_weight_row_bytes(wtype, n);
    const size_t arow = quant_act_row_bytes(wtype, n);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = (const uint8_t *)W + (size_t)r * wrow;
        for (int64_t t = 0; t < n_tok; t++)
            y[t * ldy + r] = quant_ref_vec_dot(wtype, w, (const uint8_t *)act + (size_t)t * arow, n);
    }
}
