/* quant_avx2.c — AVX2+FMA+F16C kernels behind quant_matmul, quant_vec_dot and
 * quant_act_quantize. Built for baseline x86-64 (per-function target attributes), so quant.c
 * calls these only after checking the CPU.
 *
 * A kernel computes a tile of R weight rows × T tokens; every (row, token) pair owns one
 * accumulator that sees the same operations in the same order whatever the tile shape, which
 * is what makes a token's result independent of how many tokens share the call. Integer dot
 * products follow llama.cpp: unsigned×signed bytes with maddubs, pairs widened with madd, one
 * int32 sum per block scaled by d_w*d_a in float. */
#include "quant_impl.h"

#if defined(SERVAL_QUANT_X86)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Rows per tile for T tokens: enough accumulators to hide latency, few enough to stay in
 * the 16 vector registers. */
#define ROWS_FOR(T) ((T) == 1 ? 4 : 2)

/* ---- helpers ----------------------------------------------------------------------------- */

AVX2_INLINE float hsum128(__m128 v)
{
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_movehdup_ps(v));
    return _mm_cvtss_f32(v);
}

AVX2_INLINE float hsum256(__m256 v)
{
    return hsum128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

AVX2_INLINE int hsum_i32_256(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* The fp16 pair at p (d and the next half) widened to f32 lanes 0 and 1. */
AVX2_INLINE __m128 h2f_pair(const void *p)
{
    uint32_t u;
    memcpy(&u, p, sizeof u);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
}

AVX2_INLINE __m128 h2f_bcast128(const uint16_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _mm_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

AVX2_INLINE float h2f(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

/* ---- Q4_1 × Q8_1 ------------------------------------------------------------------------- */

/* 128-bit lanes: the low nibbles (elements 0..15) and high nibbles (16..31) of a block line up
 * with the two halves of the activation block, and their maddubs results can be added in
 * int16 before widening (|sum| <= 4*15*127), which saves a madd per block. The m*s term goes
 * into lane 0 of the same accumulator ([m,0,0,0] * [s,0,0,0] leaves the other lanes as they
 * are). */
AVX2_INLINE void tile_q4_1(const int R, const int T, const uint8_t *w, size_t wrow, int64_t nb,
                           const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i ones = _mm_set1_epi16(1);
    __m128 acc[4][4];
    const block_q8_1 *ab[4];
    const float *ad[4], *as[4];
    for (int t = 0; t < T; t++) {
        ab[t] = (const block_q8_1 *)(act + (size_t)t * arow);
        ad[t] = (const float *)(act + (size_t)t * arow + quant_q8_1_tail_off(nb));
        as[t] = ad[t] + nb;
        for (int r = 0; r < R; r++)
            acc[r][t] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const block_q4_1 *x = (const block_q4_1 *)(w + (size_t)r * wrow) + b;
            const __m128i q = _mm_loadu_si128((const __m128i *)x->qs);
            const __m128i lo = _mm_and_si128(q, m4);
            const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
            const __m128 dm = h2f_pair(&x->d);
            const __m128 dw = _mm_broadcastss_ps(dm);
            const __m128 mw = _mm_insert_ps(dm, dm, 0x4e); /* [m, 0, 0, 0] */
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const int8_t *aq = ab[t][b].qs;
                const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(lo, _mm_loadu_si128((const __m128i *)aq)),
                                                _mm_maddubs_epi16(hi, _mm_loadu_si128((const __m128i *)(aq + 16))));
                const __m128 f = _mm_cvtepi32_ps(_mm_madd_epi16(p, ones));
                const __m128 dd = _mm_mul_ps(dw, _mm_broadcast_ss(ad[t] + b));
                acc[r][t] = _mm_fmadd_ps(f, dd, acc[r][t]);
                acc[r][t] = _mm_fmadd_ps(mw, _mm_load_ss(as[t] + b), acc[r][t]); /* lane 0 only */
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = hsum128(acc[r][t]);
}

/* ---- Q4_0 × Q8_0 ------------------------------------------------------------------------- */

/* As Q4_1 with unsigned nibbles q; the -8 offset comes back exactly as 8*sum(a) per block
 * (kept in the activation row's tail), subtracted from the int32 sum before scaling. */
AVX2_INLINE void tile_q4_0(const int R, const int T, const uint8_t *w, size_t wrow, int64_t nb,
                           const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i ones = _mm_set1_epi16(1);
    __m128 acc[4][4];
    const block_q8_0 *ab[4];
    const float *ad[4];
    const int32_t *as8[4];
    for (int t = 0; t < T; t++) {
        ab[t] = (const block_q8_0 *)(act + (size_t)t * arow);
        ad[t] = (const float *)(act + (size_t)t * arow + quant_q8_0_tail_off(nb));
        as8[t] = (const int32_t *)(ad[t] + nb);
        for (int r = 0; r < R; r++)
            acc[r][t] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const block_q4_0 *x = (const block_q4_0 *)(w + (size_t)r * wrow) + b;
            const __m128i q = _mm_loadu_si128((const __m128i *)x->qs);
            const __m128i lo = _mm_and_si128(q, m4);
            const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
            const __m128 dw = h2f_bcast128(&x->d);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const int8_t *aq = ab[t][b].qs;
                const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(lo, _mm_loadu_si128((const __m128i *)aq)),
                                                _mm_maddubs_epi16(hi, _mm_loadu_si128((const __m128i *)(aq + 16))));
                __m128i s = _mm_madd_epi16(p, ones);
                s = _mm_sub_epi32(s, _mm_cvtsi32_si128(as8[t][b]));
                const __m128 dd = _mm_mul_ps(dw, _mm_broadcast_ss(ad[t] + b));
                acc[r][t] = _mm_fmadd_ps(_mm_cvtepi32_ps(s), dd, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = hsum128(acc[r][t]);
}

/* ---- Q8_0 × Q8_0 ------------------------------------------------------------------------- */

/* signed × signed via |w| and sign(a, w), as llama.cpp does; |w| is computed once per row. */
AVX2_INLINE void tile_q8_0(const int R, const int T, const uint8_t *w, size_t wrow, int64_t nb,
                           const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][4];
    const block_q8_0 *ab[4];
    const float *ad[4];
    for (int t = 0; t < T; t++) {
        ab[t] = (const block_q8_0 *)(act + (size_t)t * arow);
        ad[t] = (const float *)(act + (size_t)t * arow + quant_q8_0_tail_off(nb));
        for (int r = 0; r < R; r++)
            acc[r][t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const block_q8_0 *x = (const block_q8_0 *)(w + (size_t)r * wrow) + b;
            const __m256i q = _mm256_loadu_si256((const __m256i *)x->qs);
            const __m256i aq_w = _mm256_sign_epi8(q, q);
            const __m256 dw = _mm256_broadcastss_ps(h2f_bcast128(&x->d));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)ab[t][b].qs);
                const __m256i p = _mm256_maddubs_epi16(aq_w, _mm256_sign_epi8(a, q));
                const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                const __m256 dd = _mm256_mul_ps(dw, _mm256_broadcast_ss(ad[t] + b));
                acc[r][t] = _mm256_fmadd_ps(f, dd, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = hsum256(acc[r][t]);
}

/* ---- Q6_K × Q8_K ------------------------------------------------------------------------- */

/* Unsigned 6-bit quants (0..63) with maddubs, scaled per 16 elements with madd, the -32
 * offset taken back through the activation's per-16 sums. One row per tile. */
AVX2_INLINE void tile_q6_K(const int R, const int T, const uint8_t *w, size_t wrow, int64_t nb,
                           const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    (void)R; /* always 1 */
    (void)wrow;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m3 = _mm256_set1_epi8(0x03);
    __m256 acc[4];
    const block_q8_K *ab[4];
    for (int t = 0; t < T; t++) {
        ab[t] = (const block_q8_K *)(act + (size_t)t * arow);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const block_q6_K *x = (const block_q6_K *)w + b;
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)x->scales);
        const float dw = h2f(x->d);
        __m256i sumi[4];
        for (int t = 0; t < T; t++)
            sumi[t] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m256i lbits = _mm256_and_si256(k & 1 ? l1 : l0, m4);
                const __m256i low = k < 2 ? lbits : _mm256_and_si256(_mm256_srli_epi16(k & 1 ? l1 : l0, 4), m4);
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), m3);
                const __m256i q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                const int g = 4 * h + k; /* elements 32g..32g+31, scales 2g and 2g+1 */
                const __m128i pick = _mm_set_epi64x((long long)(0x0101010101010101ULL * (uint64_t)(2 * g + 1)),
                                                    (long long)(0x0101010101010101ULL * (uint64_t)(2 * g)));
                const __m256i scv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    const __m256i a = _mm256_loadu_si256((const __m256i *)(ab[t][b].qs + 32 * g));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), scv));
                }
            }
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        for (int t = 0; t < T; t++) {
            const __m256i bs = _mm256_loadu_si256((const __m256i *)ab[t][b].bsums);
            const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], corr));
            acc[t] = _mm256_fmadd_ps(f, _mm256_set1_ps(dw * ab[t][b].d), acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        y[t * ldy] = hsum256(acc[t]);
}

/* ---- F32 / F16 / BF16 × f32 -------------------------------------------------------------- */

AVX2_INLINE __m256 load8(gguf_dtype t, const uint8_t *p)
{
    if (t == GGUF_DTYPE_F32)
        return _mm256_loadu_ps((const float *)p);
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (t == GGUF_DTYPE_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2_INLINE float load1(gguf_dtype t, const uint8_t *p)
{
    if (t == GGUF_DTYPE_F32) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return t == GGUF_DTYPE_F16 ? h2f(h) : quant_bf16_to_f32(h);
}

AVX2_INLINE void tile_float(const gguf_dtype wt, const int R, const int T, const uint8_t *w, size_t wrow,
                            int64_t n, const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    const size_t es = wt == GGUF_DTYPE_F32 ? 4 : 2;
    __m256 acc[4][4];
    const float *x[4];
    for (int t = 0; t < T; t++) {
        x[t] = (const float *)(act + (size_t)t * arow);
        for (int r = 0; r < R; r++)
            acc[r][t] = _mm256_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 wv = load8(wt, w + (size_t)r * wrow + (size_t)i * es);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t] + i), acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < T; t++) {
            float s = hsum256(acc[r][t]);
            for (int64_t j = i; j < n; j++)
                s = fmaf(load1(wt, w + (size_t)r * wrow + (size_t)j * es), x[t][j], s);
            y[t * ldy + r] = s;
        }
    }
}

AVX2_INLINE void tile_f32(const int R, const int T, const uint8_t *w, size_t wrow, int64_t n,
                          const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    tile_float(GGUF_DTYPE_F32, R, T, w, wrow, n, act, arow, y, ldy);
}

AVX2_INLINE void tile_f16(const int R, const int T, const uint8_t *w, size_t wrow, int64_t n,
                          const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    tile_float(GGUF_DTYPE_F16, R, T, w, wrow, n, act, arow, y, ldy);
}

AVX2_INLINE void tile_bf16(const int R, const int T, const uint8_t *w, size_t wrow, int64_t n,
                           const uint8_t *act, size_t arow, float *y, int64_t ldy)
{
    tile_float(GGUF_DTYPE_BF16, R, T, w, wrow, n, act, arow, y, ldy);
}

/* ---- row drivers ------------------------------------------------------------------------- */

/* rows [ra, rb) × T tokens: tiles of R rows, then single rows. nb counts blocks (elements for
 * the float types); y points at token 0, row 0. */
typedef void (*rows_fn)(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,
                        const uint8_t *act, size_t arow, float *y, int64_t ldy);

#define DEFINE_ROWS(tile, T, R)                                                                 \
    AVX2 static void rows_##tile##_##T(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra,   \
                                       int64_t rb, const uint8_t *act, size_t arow, float *y,   \
                                       int64_t ldy)                                             \
    {                                                                                           \
        int64_t r = ra;                                                                         \
        for (; r + (R) <= rb; r += (R))                                                         \
            tile((R), (T), W + (size_t)r * wrow, wrow, nb, act, arow, y + r, ldy);              \
        for (; r < rb; r++)                                                                     \
            tile(1, (T), W + (size_t)r * wrow, wrow, nb, act, arow, y + r, ldy);                \
    }

#define DEFINE_KERNEL(tile, r1, r2, r3, r4)                                                     \
    DEFINE_ROWS(tile, 1, r1)                                                                    \
    DEFINE_ROWS(tile, 2, r2)                                                                    \
    DEFINE_ROWS(tile, 3, r3)                                                                    \
    DEFINE_ROWS(tile, 4, r4)                                                                    \
    static const rows_fn kernel_##tile[4] = {rows_##tile##_1, rows_##tile##_2, rows_##tile##_3,  \
                                             rows_##tile##_4};

DEFINE_KERNEL(tile_q4_0, ROWS_FOR(1), ROWS_FOR(2), ROWS_FOR(3), ROWS_FOR(4))
DEFINE_KERNEL(tile_q4_1, ROWS_FOR(1), ROWS_FOR(2), ROWS_FOR(3), ROWS_FOR(4))
DEFINE_KERNEL(tile_q8_0, ROWS_FOR(1), ROWS_FOR(2), ROWS_FOR(3), ROWS_FOR(4))
DEFINE_KERNEL(tile_q6_K, 1, 1, 1, 1)
DEFINE_KERNEL(tile_f32, ROWS_FOR(1), ROWS_FOR(2), ROWS_FOR(3), ROWS_FOR(4))
DEFINE_KERNEL(tile_f16, ROWS_FOR(1), ROWS_FOR(2), ROWS_FOR(3), ROWS_FOR(4))
DEFINE_KERNEL(tile_bf16, ROWS_FOR(1), ROWS_FOR(2), ROWS_FOR(3), ROWS_FOR(4))

/* Tokens per outer block: their activations stay in L2 while each weight chunk (about
 * WCHUNK_BYTES, so L1-resident) is reused by every group of 4 of them. */
#define TOK_BLOCK 64
#define WCHUNK_BYTES 16384

AVX2 void quant_avx2_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                            const void *act, int64_t n_tok, float *y, int64_t ldy)
{
    const rows_fn *k = NULL;
    int64_t nb = n;
    switch (wtype) {
    case GGUF_DTYPE_F32: k = kernel_tile_f32; break;
    case GGUF_DTYPE_F16: k = kernel_tile_f16; break;
    case GGUF_DTYPE_BF16: k = kernel_tile_bf16; break;
    case GGUF_DTYPE_Q4_0: k = kernel_tile_q4_0; nb = n / QK4_0; break;
    case GGUF_DTYPE_Q4_1: k = kernel_tile_q4_1; nb = n / QK4_1; break;
    case GGUF_DTYPE_Q8_0: k = kernel_tile_q8_0; nb = n / QK8_0; break;
    case GGUF_DTYPE_Q6_K: k = kernel_tile_q6_K; nb = n / QK_K; break;
    }
    const size_t wrow = quant_weight_row_bytes(wtype, n);
    const size_t arow = quant_act_row_bytes(wtype, n);
    int64_t chunk = wrow ? (int64_t)(WCHUNK_BYTES / wrow) : 0;
    chunk = chunk < 4 ? 4 : chunk & ~(int64_t)3;
    const uint8_t *w8 = W, *a8 = act;
    for (int64_t tb = 0; tb < n_tok; tb += TOK_BLOCK) {
        const int64_t te = tb + TOK_BLOCK < n_tok ? tb + TOK_BLOCK : n_tok;
        for (int64_t rc = r0; rc < r1; rc += chunk) {
            const int64_t re = rc + chunk < r1 ? rc + chunk : r1;
            for (int64_t t = tb; t < te; t += 4) {
                const int64_t T = te - t < 4 ? te - t : 4;
                k[T - 1](w8, wrow, nb, rc, re, a8 + (size_t)t * arow, arow, y + t * ldy, ldy);
            }
        }
    }
}

/* ---- activation quantisation ------------------------------------------------------------- */

/* llama.cpp's AVX2 quantize_row_q8_0/q8_1 block; returns sum(q). quant.c's q8_block computes
 * the same bytes in scalar code. */
AVX2_INLINE int q8_block_avx2(const float *x, int8_t *qs, float *d_out)
{
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
    mx = _mm256_max_ps(mx, _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    const __m256 mul = _mm256_set1_ps(id);
    const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), rnd));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), rnd));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), rnd));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), rnd));
    const int sum = hsum_i32_256(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    /* packs interleave 128-bit lanes; the permute puts elements back in order */
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, i0);
    *d_out = amax / 127.f;
    return sum;
}

AVX2 void quant_avx2_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n)
{
    uint8_t *a = act;
    switch (wtype) {
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q8_0: {
        const int64_t nb = n / QK8_0;
        block_q8_0 *y = act;
        float *td = (float *)(a + quant_q8_0_tail_off(nb));
        int32_t *ts = (int32_t *)(td + nb);
        for (int64_t i = 0; i < nb; i++) {
            float d;
            const int sum = q8_block_avx2(x + i * 32, y[i].qs, &d);
            const uint16_t dh = (uint16_t)_cvtss_sh(d, 0);
            y[i].d = dh;
            td[i] = h2f(dh);
            ts[i] = 8 * sum;
        }
        return;
    }
    case GGUF_DTYPE_Q4_1: {
        const int64_t nb = n / QK8_1;
        block_q8_1 *y = act;
        float *td = (float *)(a + quant_q8_1_tail_off(nb));
        float *ts = td + nb;
        for (int64_t i = 0; i < nb; i++) {
            float d;
            const int sum = q8_block_avx2(x + i * 32, y[i].qs, &d);
            const uint16_t dh = (uint16_t)_cvtss_sh(d, 0);
            const uint16_t sh = (uint16_t)_cvtss_sh(d * (float)sum, 0);
            y[i].d = dh;
            y[i].s = sh;
            td[i] = h2f(dh);
            ts[i] = h2f(sh);
        }
        return;
    }
    default:
        quant_ref_act_quantize(wtype, x, act, n);
        return;
    }
}

#else
typedef int quant_avx2_empty_unit; /* ISO C wants at least one declaration */
#endif
