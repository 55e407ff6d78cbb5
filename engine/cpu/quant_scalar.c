/* quant_scalar.c — the scalar dot products and matrix multiply of quantised weights with
 * quantised activations, in exactly the order of llama.cpp's x86 AVX2 batch kernels
 * (quant_impl.h): the portable path on CPUs without AVX2 and the reference the tests hold the
 * SIMD kernels to. */
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

/* Q4_0 in the order of llama.cpp's repacked Q4_0 (ggml_gemv/gemm_q4_0_8x8_q8_0, what its x86
 * build runs for every matrix whose row count is a multiple of 8): one chain per (row, token),
 * acc = fma((float)S_b, d_w*d_a, acc) with S_b the block's exact sum. */
static float dot_q4_0_ref(const block_q4_0 *x, const block_q8_0 *y, int64_t nb)
{
    float acc = 0;
    for (int64_t i = 0; i < nb; i++) {
        /* Low nibbles then high nibbles, not nib(e) over 0..31: gcc 12 -O3 miscompiles that
         * loop (vectorised, wrong sums). The sum is exact, so the order does not matter. */
        int32_t S = 0;
        for (int j = 0; j < 16; j++)
            S += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        acc = fmaf((float)S, quant_h2f(x[i].d) * quant_h2f(y[i].d), acc);
    }
    return acc;
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

/* Q6_K in the order of llama.cpp's tiled K-quant matmul (ggml-cpu/tiled, AVX2 microtile): per
 * super-block r = d_w * (float)S (rounded), acc = fma(r, d_a, acc). */
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
        acc = fmaf(quant_h2f(x[i].d) * (float)sumi, y[i].d, acc);
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

/* Q4_K / Q5_K sums over the 64-element chunk c (sub-blocks 2c, 2c+1) of a super-block:
 * S1 = sum of sc[s] * (sum of q_w*q_a over sub-block s), S2 = sum of m[s] * (the activation
 * quants' sum over s, from bsums); both exact. */
static void k45_chunk_sums(const uint8_t *xb, bool five, const block_q8_K *y, int c, int32_t *S1, int32_t *S2)
{
    const uint8_t *scales = xb + 4, *qh = xb + 4 + K_SCALE_SIZE, *qs = five ? qh + QK_K / 8 : qh;
    int32_t s1 = 0, s2 = 0;
    for (int s = 2 * c; s < 2 * c + 2; s++) {
        uint8_t sc, m;
        quant_k_scale_min(s, scales, &sc, &m);
        const int hi = s & 1; /* which nibble of the chunk's 32 bytes */
        int32_t p = 0;
        for (int e = 0; e < 32; e++) {
            int q = hi ? qs[32 * c + e] >> 4 : qs[32 * c + e] & 0xF;
            if (five)
                q |= ((qh[e] >> s) & 1) << 4;
            p += q * y->qs[32 * s + e];
        }
        s1 += sc * p;
        s2 += m * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    }
    *S1 = s1;
    *S2 = s2;
}

/* Q4_K in the order of llama.cpp's repacked Q4_K for a batch (ggml_gemm_q4_K_8x8_q8_K: every
 * matrix whose row count is a multiple of 8, four tokens at a time): two chains, one step per
 * 64-element chunk, acc = fma(S1_c, d_w*d_a, acc) and accm = fma(S2_c, dmin_w*d_a, accm), result
 * acc - accm. (Its single-token ggml_gemv_q4_K_8x8_q8_K steps once per super-block instead.) */
static float dot_q4_K_ref(const block_q4_K *x, const block_q8_K *y, int64_t nb)
{
    float acc = 0, accm = 0;
    for (int64_t i = 0; i < nb; i++) {
        const float dd = quant_h2f(x[i].d) * y[i].d, dm = quant_h2f(x[i].dmin) * y[i].d;
        for (int c = 0; c < 4; c++) {
            int32_t S1, S2;
            k45_chunk_sums((const uint8_t *)&x[i], false, &y[i], c, &S1, &S2);
            acc = fmaf((float)S1, dd, acc);
            accm = fmaf((float)S2, dm, accm);
        }
    }
    return acc - accm;
}

/* Q5_K in the order of llama.cpp's tiled K-quant matmul: r = d_w * (float)S1 (rounded),
 * r = fma(-dmin_w, (float)S2, r), acc = fma(r, d_a, acc). */
static float dot_q5_K_ref(const block_q5_K *x, const block_q8_K *y, int64_t nb)
{
    float acc = 0;
    for (int64_t i = 0; i < nb; i++) {
        int32_t S1 = 0, S2 = 0;
        for (int c = 0; c < 4; c++) {
            int32_t s1, s2;
            k45_chunk_sums((const uint8_t *)&x[i], true, &y[i], c, &s1, &s2);
            S1 += s1;
            S2 += s2;
        }
        float r = quant_h2f(x[i].d) * (float)S1;
        r = fmaf(-quant_h2f(x[i].dmin), (float)S2, r);
        acc = fmaf(r, y[i].d, acc);
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
    case GGUF_DTYPE_Q4_K: return dot_q4_K_ref(wrow, act, n / QK_K);
    case GGUF_DTYPE_Q5_K: return dot_q5_K_ref(wrow, act, n / QK_K);
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
