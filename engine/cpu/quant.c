/* quant.c — GGML block formats on the CPU: exact fp16/bf16 conversion, dequantisation,
 * activation quantisation as llama.cpp's x86 build does it, and the dispatch of dot products
 * to the AVX2 kernels (quant_avx2.c) or the portable scalar ones (quant_scalar.c). Weight
 * quantisers (for tools and tests) are in quant_write.c. */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
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
    case GGUF_DTYPE_Q5_0: return (size_t)(n / QK5_0) * sizeof(block_q5_0);
    case GGUF_DTYPE_Q5_1: return (size_t)(n / QK5_1) * sizeof(block_q5_1);
    case GGUF_DTYPE_Q4_K: return (size_t)(n / QK_K) * sizeof(block_q4_K);
    case GGUF_DTYPE_Q5_K: return (size_t)(n / QK_K) * sizeof(block_q5_K);
    }
    ENG_ASSERT(!"unknown dtype");
    return 0;
}

/* ---- dequantisation ---------------------------------------------------------------------- */

static void dequant_q6_K(const block_q6_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = quant_h2f(x[i].d);
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

/* Q5_0 (min == NULL: x = d*(q-16)) and Q5_1 (x = d*q + m) share the 5-bit packing. */
static void dequant_q5(const uint8_t *blk, size_t bsize, bool has_min, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, blk += bsize, y += 32) {
        uint16_t dh, mh = 0;
        memcpy(&dh, blk, 2);
        if (has_min)
            memcpy(&mh, blk + 2, 2);
        const uint8_t *p = blk + (has_min ? 4 : 2);
        uint32_t qh;
        memcpy(&qh, p, 4);
        const uint8_t *qs = p + 4;
        const float d = quant_h2f(dh), m = quant_h2f(mh);
        const int off = has_min ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            const int x0 = (int)((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - off;
            const int x1 = (int)((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - off;
            y[j] = has_min ? x0 * d + m : x0 * d;
            y[j + 16] = has_min ? x1 * d + m : x1 * d;
        }
    }
}

/* Q4_K and Q5_K (qh == NULL for Q4_K): x = d*sc*q - dmin*m per sub-block of 32. */
static void dequant_k45(const uint8_t *blk, size_t bsize, bool five, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, blk += bsize) {
        uint16_t dh, mh;
        memcpy(&dh, blk, 2);
        memcpy(&mh, blk + 2, 2);
        const float d = quant_h2f(dh), dmin = quant_h2f(mh);
        const uint8_t *scales = blk + 4;
        const uint8_t *qh = blk + 4 + K_SCALE_SIZE;
        const uint8_t *q = five ? qh + QK_K / 8 : qh;
        for (int g = 0; g < 4; g++, q += 32, y += 64) {
            uint8_t sc, m;
            quant_k_scale_min(2 * g, scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            quant_k_scale_min(2 * g + 1, scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) {
                const int h1 = five ? ((qh[l] >> (2 * g)) & 1) << 4 : 0;
                const int h2 = five ? ((qh[l] >> (2 * g + 1)) & 1) << 4 : 0;
                y[l] = d1 * ((q[l] & 0xF) + h1) - m1;
                y[l + 32] = d2 * ((q[l] >> 4) + h2) - m2;
            }
        }
    }
}

void quant_dequant_row(gguf_dtype t, const void *src, float *dst, int64_t n)
{
    quant_check_row(t, n);
    const int64_t nb = n / quant_block_elems(t);
    switch (t) {
    case GGUF_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_F16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = quant_h2f(h);
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
            const float d = quant_h2f(x[i].d);
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
            const float d = quant_h2f(x[i].d), m = quant_h2f(x[i].m);
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
            const float d = quant_h2f(x[i].d);
            for (int j = 0; j < 32; j++)
                dst[i * 32 + j] = x[i].qs[j] * d;
        }
        return;
    }
    case GGUF_DTYPE_Q6_K:
        dequant_q6_K(src, dst, nb);
        return;
    case GGUF_DTYPE_Q5_0: dequant_q5(src, sizeof(block_q5_0), false, dst, nb); return;
    case GGUF_DTYPE_Q5_1: dequant_q5(src, sizeof(block_q5_1), true, dst, nb); return;
    case GGUF_DTYPE_Q4_K: dequant_k45(src, sizeof(block_q4_K), false, dst, nb); return;
    case GGUF_DTYPE_Q5_K: dequant_k45(src, sizeof(block_q5_K), true, dst, nb); return;
    }
}
/* ---- activation quantisation ------------------------------------------------------------- */

size_t quant_act_row_bytes(gguf_dtype wtype, int64_t n)
{
    quant_check_row(wtype, n);
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return (size_t)n * sizeof(float);
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q5_0: return quant_q4_0_lane_off(n / QK8_0) + (size_t)(n / QK8_0) * 32;
    case GGUF_DTYPE_Q8_0: return quant_q8_0_tail_off(n / QK8_0) + (size_t)(n / QK8_0) * 4;
    case GGUF_DTYPE_Q5_1:
    case GGUF_DTYPE_Q4_1: return quant_q8_1_tail_off(n / QK8_1) + (size_t)(n / QK8_1) * 8;
    case GGUF_DTYPE_Q4_K:
    case GGUF_DTYPE_Q5_K:
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
        int q = quant_nearest_int(x[j] * id);
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
            int v = quant_nearest_int(iscale * x[j]);
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
    quant_check_row(wtype, n);
    uint8_t *a = act;
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16:
        memcpy(act, x, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q5_0:
    case GGUF_DTYPE_Q8_0: {
        const int64_t nb = n / QK8_0;
        block_q8_0 *y = act;
        uint8_t *tail = a + quant_q8_0_tail_off(nb), *lanes = a + quant_q4_0_lane_off(nb);
        for (int64_t i = 0; i < nb; i++) {
            float d;
            (void)q8_block(x + i * 32, y[i].qs, &d);
            y[i].d = quant_f2h(d);
            d = quant_h2f(y[i].d);
            memcpy(tail + 4 * i, &d, 4);
            if (wtype != GGUF_DTYPE_Q8_0) {
                int32_t off[8];
                quant_q4_0_lane_offsets(y[i].qs, off);
                memcpy(lanes + 32 * i, off, sizeof off);
            }
        }
        return;
    }
    case GGUF_DTYPE_Q4_1:
    case GGUF_DTYPE_Q5_1: {
        const int64_t nb = n / QK8_1;
        block_q8_1 *y = act;
        float *tail = (float *)(a + quant_q8_1_tail_off(nb));
        for (int64_t i = 0; i < nb; i++) {
            float d;
            int sum = q8_block(x + i * 32, y[i].qs, &d);
            y[i].d = quant_f2h(d);
            y[i].s = quant_f2h(d * (float)sum);
            tail[2 * i] = quant_h2f(y[i].d);
            tail[2 * i + 1] = quant_h2f(y[i].s);
        }
        return;
    }
    case GGUF_DTYPE_Q4_K:
    case GGUF_DTYPE_Q5_K:
    case GGUF_DTYPE_Q6_K:
        act_q8_K(x, act, n / QK_K);
        return;
    }
}

void quant_act_dequant(gguf_dtype wtype, const void *act, float *dst, int64_t n)
{
    quant_check_row(wtype, n);
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16:
        memcpy(dst, act, (size_t)n * sizeof(float));
        return;
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q5_0:
    case GGUF_DTYPE_Q8_0:
        quant_dequant_row(GGUF_DTYPE_Q8_0, act, dst, n);
        return;
    case GGUF_DTYPE_Q4_1:
    case GGUF_DTYPE_Q5_1: {
        const block_q8_1 *y = act;
        for (int64_t i = 0; i < n / 32; i++)
            for (int j = 0; j < 32; j++)
                dst[i * 32 + j] = y[i].qs[j] * quant_h2f(y[i].d);
        return;
    }
    case GGUF_DTYPE_Q4_K:
    case GGUF_DTYPE_Q5_K:
    case GGUF_DTYPE_Q6_K: {
        const block_q8_K *y = act;
        for (int64_t i = 0; i < n / QK_K; i++)
            for (int j = 0; j < QK_K; j++)
                dst[i * QK_K + j] = y[i].qs[j] * y[i].d;
        return;
    }
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

#if defined(SERVAL_QUANT_X86)
bool quant_cpu_has_avx_vnni(void)
{
    /* 0 = not probed yet, 1 = no, 2 = yes */
    static atomic_int cached;
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c == 0) {
        unsigned a = 0, b, cx, dx;
        /* CPUID.(EAX=7, ECX=1):EAX bit 4 = AVX-VNNI; its ymm state is what AVX2 needs */
        bool ok = quant_cpu_has_avx2() && __get_cpuid_max(0, NULL) >= 7 && __get_cpuid_count(7, 1, &a, &b, &cx, &dx) &&
                  (a & (1u << 4));
        const char *off = getenv("SERVAL_QUANT_NO_VNNI");
        if (off && *off && strcmp(off, "0") != 0)
            ok = false;
        c = ok ? 2 : 1;
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return c == 2;
}

bool quant_cpu_has_avx512_vnni(void)
{
    static atomic_int cached; /* 0 = not probed yet, 1 = no, 2 = yes */
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c == 0) {
        __builtin_cpu_init();
        /* libgcc also checks that the OS saves the AVX-512 state */
        bool ok = quant_cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vnni");
        const char *off = getenv("SERVAL_QUANT_NO_AVX512");
        if (off && *off && strcmp(off, "0") != 0)
            ok = false;
        c = ok ? 2 : 1;
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return c == 2;
}
#endif

void quant_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n)
{
#if defined(SERVAL_QUANT_X86)
    if (quant_cpu_has_avx2()) {
        quant_check_row(wtype, n);
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
        quant_check_row(wtype, n);
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
        quant_check_row(wtype, n);
        quant_avx2_matmul(wtype, wrow, n, 0, 1, act, 1, &y, 1);
        return y;
    }
#endif
    return quant_ref_vec_dot(wtype, wrow, act, n);
}
