/* quant_fewtok_avx2.c — the few-token row kernels: R rows × T (2, 3, 4) tokens, each weight
 * block unpacked once into registers and dotted with every token's activations, for the decode
 * steps that carry several requests (2-7 tokens; quant_avx2_matmul runs 8-token groups through
 * the packed-group tiles and hands the rest here).
 *
 * Every (row, token) pair runs exactly the operations of the single-token tiles of
 * quant_avx2.c (quant_impl.h's llama.cpp order), so a token's result is the same bits whether
 * it runs alone, in a few-token group or in an 8-token group:
 *   Q4_1, Q8_0: the pair's eight f32 lanes in one __m256 (u8×s8 dot of 4-byte groups, cvt, fma
 *     with d_w*d_a), hsum_float_8's order at the end, Q4_1's summs chain in the lanes of the
 *     rows (R <= 4 rows per tile);
 *   Q4_0: one chain per pair, the exact block sum from a hadd tree over four rows (lanes: rows);
 *   Q4_K, Q6_K: 8 rows in the lanes of one __m256 per token (as q4k_rows8 / q6_rows8), each
 *     row's exact int32 sums reduced with hadd trees and transposed into the lanes.
 * Built for baseline x86-64 (per-function target attributes); quant_avx2.c calls in only after
 * checking the CPU. The small helpers below repeat quant_avx2.c's (static there). */
#include "quant_fewtok.h"

#include "quant_impl.h"

#if defined(SERVAL_QUANT_X86)

#include <immintrin.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* ---- helpers ----------------------------------------------------------------------------- */

AVX2_INLINE __m128i ld_u16(const void *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _mm_cvtsi32_si128(h);
}

AVX2_INLINE __m128i ld_u32(const void *p)
{
    uint32_t u;
    memcpy(&u, p, sizeof u);
    return _mm_cvtsi32_si128((int)u);
}

AVX2_INLINE __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
AVX2_INLINE __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* The fp16 scales at four addresses, widened: [d0, d1, d2, d3]. */
AVX2_INLINE __m128 few_d4(const uint8_t *const p[4], size_t o)
{
    const __m128i a = _mm_unpacklo_epi16(ld_u16(p[0] + o), ld_u16(p[1] + o));
    const __m128i b = _mm_unpacklo_epi16(ld_u16(p[2] + o), ld_u16(p[3] + o));
    return _mm_cvtph_ps(_mm_unpacklo_epi32(a, b));
}

/* The fp16 (d, m) pairs at four addresses, widened into d4 and m4. */
AVX2_INLINE void few_dm4(const uint8_t *const p[4], size_t o, __m128 *d4, __m128 *m4)
{
    const __m128i a = _mm_unpacklo_epi32(ld_u32(p[0] + o), ld_u32(p[1] + o));
    const __m128i b = _mm_unpacklo_epi32(ld_u32(p[2] + o), ld_u32(p[3] + o));
    const __m128 lo = _mm_cvtph_ps(a); /* d0 m0 d1 m1 */
    const __m128 hi = _mm_cvtph_ps(b); /* d2 m2 d3 m3 */
    *d4 = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    *m4 = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
}

/* hsum_float_8 of four pairs at once from r_k = hi_k + lo_k: lane k of the result is
 * (r_k0 + r_k2) + (r_k1 + r_k3), added in exactly that order (quant_avx2.c's hsum_r4). */
AVX2_INLINE __m128 few_hsum_r4(__m128 r0, __m128 r1, __m128 r2, __m128 r3)
{
    const __m128 ab = _mm_add_ps(_mm_unpacklo_ps(r0, r1), _mm_unpackhi_ps(r0, r1));
    const __m128 cd = _mm_add_ps(_mm_unpacklo_ps(r2, r3), _mm_unpackhi_ps(r2, r3));
    return _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab));
}

/* u8 × s8 dot products of 4-byte groups added to init, exact in int32 (vpdpbusd where the CPU
 * has AVX-VNNI, maddubs + madd otherwise; no pair of products reaches int16's range). */
AVX2_INLINE __m256i few_dot(const int vnni, __m256i init, __m256i u, __m256i s)
{
    if (vnni) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(init) : "x"(u), "xm"(s));
        return init;
    }
    return _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

/* Eight 8-lane int32 vectors to their totals: lane r of the result is the sum of v[r]'s lanes. */
AVX2_INLINE __m256i few_reduce8(const __m256i v[8])
{
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}

/* Row pointers for n lanes starting at row r, the last valid row repeated past rb. */
static inline void few_rows(const uint8_t *W, size_t wrow, int64_t r, int64_t rb, int n, const uint8_t **wr)
{
    for (int j = 0; j < n; j++)
        wr[j] = W + (size_t)(r + j < rb ? r + j : rb - 1) * wrow;
}

/* While a tile of R rows works on block b of nb, it prefetches the next tile's bytes (rows are
 * contiguous): `lines` cache lines from pf + step*b (as quant_avx2.c's single-token tiles). */
typedef struct few_pf {
    const uint8_t *pf;
    size_t step, last;
    int lines;
} few_pf;

static inline few_pf few_pf_next(const uint8_t *W, size_t wrow, int64_t nb, int64_t r, int64_t rb, int R)
{
    const int64_t n = rb - r - R < R ? rb - r - R : R;
    if (n <= 0 || nb <= 0)
        return (few_pf){W, 0, 0, 0};
    const size_t step = (size_t)R * (wrow / (size_t)nb);
    return (few_pf){W + (size_t)(r + R) * wrow, step, (size_t)n * wrow - 1, (int)((step + 63) / 64)};
}

AVX2_INLINE void few_pf_step(const few_pf *pp, int64_t b)
{
    const size_t o = pp->step * (size_t)b;
    for (int k = 0; k < pp->lines; k++) {
        const size_t ok = o + 64 * (size_t)k;
        _mm_prefetch((const char *)(pp->pf + (ok < pp->last ? ok : pp->last)), _MM_HINT_T0);
    }
}

/* Writes lanes [0, n) of v to p[0], p[1], ... */
AVX2_INLINE void few_store(__m128 v, float *p, int n)
{
    if (n == 4) {
        _mm_storeu_ps(p, v);
        return;
    }
    float tmp[4];
    _mm_storeu_ps(tmp, v);
    for (int i = 0; i < n; i++)
        p[i] = tmp[i];
}

AVX2_INLINE void few_store8(__m256 v, float *p, int n)
{
    if (n == 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (int i = 0; i < n; i++)
        p[i] = tmp[i];
}

/* ---- Q4_1 / Q8_0: R rows × T tokens, each pair's eight lanes in one __m256 ------------------ */

enum { FK_Q4_0, FK_Q4_1, FK_Q8_0 };

/* A weight block as 32 unsigned bytes in element order (|w| for Q8_0, its signs in *sgn). */
AVX2_INLINE __m256i few_wprep(const int kind, const uint8_t *x, __m256i *sgn)
{
    if (kind == FK_Q8_0) {
        *sgn = ld256(x + offsetof(block_q8_0, qs));
        return _mm256_abs_epi8(*sgn);
    }
    const __m128i q = ld128(x + (kind == FK_Q4_1 ? offsetof(block_q4_1, qs) : offsetof(block_q4_0, qs)));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
}

/* Rows wr[0..R) (4 pointers, repeats allowed) × tokens a[0..T); results of the first nr rows
 * to y[t*ldy + k]. Per block: the four rows' d_w (and m_w) gathered once, d_w*d_a of every pair
 * formed with one multiply per token and read back as broadcasts from memory; each row's block
 * unpacked once and dotted with the T tokens' quants. */
AVX2_INLINE void few_lane8(const int kind, const int vnni, const int R, const int T, const uint8_t *const wr[4],
                           const few_pf *pp, int64_t nb, const uint8_t *const a[4], size_t tail_off, int nr, float *y,
                           int64_t ldy)
{
    const int q41 = kind == FK_Q4_1;
    const size_t wblk = q41 ? sizeof(block_q4_1) : sizeof(block_q8_0);
    const size_t ablk = q41 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t aqs = q41 ? offsetof(block_q8_1, qs) : offsetof(block_q8_0, qs);
    const size_t tstride = q41 ? 8 : 4;
    __m256 acc[4][4];
    __m128 summs[4];
    for (int t = 0; t < 4; t++) {
        summs[t] = _mm_setzero_ps();
        for (int r = 0; r < 4; r++)
            acc[r][t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const size_t wo = wblk * (size_t)b, ao = ablk * (size_t)b + aqs;
        few_pf_step(pp, b);
        __m128 d4, m4 = _mm_setzero_ps();
        if (q41)
            few_dm4(wr, wo, &d4, &m4);
        else
            d4 = few_d4(wr, wo);
        _Alignas(16) float ddm[4][4]; /* [token][row]: d_w*d_a */
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const float *ts = (const float *)(a[t] + tail_off + tstride * (size_t)b);
            _mm_store_ps(ddm[t], _mm_mul_ps(d4, _mm_broadcast_ss(ts)));
            if (q41)
                summs[t] = _mm_fmadd_ps(m4, _mm_broadcast_ss(ts + 1), summs[t]);
        }
        /* read back from memory: broadcast loads use the load ports, not the shuffle port */
        __asm__("" : "+m"(ddm));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256i sgn = _mm256_setzero_si256();
            const __m256i wv = few_wprep(kind, wr[r] + wo, &sgn);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256i av = ld256(a[t] + ao);
                if (kind == FK_Q8_0)
                    av = _mm256_sign_epi8(av, sgn);
                const __m256i p = few_dot(vnni, _mm256_setzero_si256(), wv, av);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&ddm[t][r]), acc[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        __m128 rr[4];
        for (int r = 0; r < 4; r++)
            rr[r] = r < R ? _mm_add_ps(_mm256_extractf128_ps(acc[r][t], 1), _mm256_castps256_ps128(acc[r][t]))
                          : _mm_setzero_ps();
        __m128 res = few_hsum_r4(rr[0], rr[1], rr[2], rr[3]);
        if (q41)
            res = _mm_add_ps(res, summs[t]);
        few_store(res, y + (size_t)t * (size_t)ldy, nr);
    }
}

/* ---- Q4_0: 4 rows (lanes) × T tokens, one chain per pair ----------------------------------- */

/* Per block and pair the exact sum S (the -8 taken back by starting the dot product at minus
 * the token's lane offsets), four rows' sums out of one hadd tree per token, then
 * acc_t = fma(S, d_w*d_a, acc_t) with the rows in the lanes. */
AVX2_INLINE void few_q4_0(const int vnni, const int T, const uint8_t *const wr[4], const few_pf *pp, int64_t nb,
                          const uint8_t *const a[4], size_t tail_off, size_t lane_off, int nr, float *y, int64_t ldy)
{
    __m128 acc[4];
    for (int t = 0; t < 4; t++)
        acc[t] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t wo = sizeof(block_q4_0) * (size_t)b;
        const size_t ao = sizeof(block_q8_0) * (size_t)b + offsetof(block_q8_0, qs);
        few_pf_step(pp, b);
        const __m128 d4 = few_d4(wr, wo);
        __m256i neg[4], h[2][4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            neg[t] = _mm256_sub_epi32(_mm256_setzero_si256(), ld256(a[t] + lane_off + 32 * (size_t)b));
#pragma GCC unroll 2
        for (int rp = 0; rp < 2; rp++) {
            __m256i s0, s1;
            const __m256i w0 = few_wprep(FK_Q4_0, wr[2 * rp] + wo, &s0);
            const __m256i w1 = few_wprep(FK_Q4_0, wr[2 * rp + 1] + wo, &s1);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256i av = ld256(a[t] + ao);
                h[rp][t] = _mm256_hadd_epi32(few_dot(vnni, neg[t], w0, av), few_dot(vnni, neg[t], w1, av));
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256i H = _mm256_hadd_epi32(h[0][t], h[1][t]);
            const __m128i S = _mm_add_epi32(_mm256_castsi256_si128(H), _mm256_extracti128_si256(H, 1));
            const float *ts = (const float *)(a[t] + tail_off + 4 * (size_t)b);
            acc[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(S), _mm_mul_ps(d4, _mm_broadcast_ss(ts)), acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        few_store(acc[t], y + (size_t)t * (size_t)ldy, nr);
}

/* ---- Q4_K: 8 rows (lanes) × T tokens -------------------------------------------------------- */

/* The 8 scales | 8 mins of a Q4_K super-block as 16 bytes, from the 12 scale bytes at p (16
 * bytes are read; the block goes on after them). */
AVX2_INLINE __m128i few_k_scales_mins(const uint8_t *p)
{
    const __m128i u = ld128(p);
    const __m128i A = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0));
    const __m128i B = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));
    const __m128i lo6 = _mm_and_si128(_mm_srlv_epi32(A, _mm_setr_epi32(0, 0, 0, 4)),
                                      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i hi2 = _mm_and_si128(_mm_srli_epi32(B, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo6, hi2);
}

/* In-lane 4×4 transpose of four 8-lane int32 vectors, to floats: out[c] lane k = in[k] lane c. */
AVX2_INLINE void few_transpose4(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256 out[4])
{
    const __m256i t0 = _mm256_unpacklo_epi32(v0, v1), t1 = _mm256_unpacklo_epi32(v2, v3);
    const __m256i t2 = _mm256_unpackhi_epi32(v0, v1), t3 = _mm256_unpackhi_epi32(v2, v3);
    out[0] = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(t0, t1));
    out[1] = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(t0, t1));
    out[2] = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(t2, t3));
    out[3] = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(t2, t3));
}

#define FEW_PF_BLOCKS 2 /* super-blocks each row prefetches ahead (quant_avx2.c's PF_BLOCKS) */

/* quant_avx2.c's q4k_rows8 with T tokens: per super-block and row, the nibbles and the scales
 * are unpacked once; per token the four chunk sums S1_c come out of one hadd tree and the min
 * sums S2_c out of one madd with the token's sub-block sums; both are transposed so lane r is
 * row r and each token's eight chains run: acc = fma(S1_c, d_w*d_a, acc), accm = fma(S2_c,
 * dmin_w*d_a, accm), c = 0..3; result acc - accm. */
AVX2_INLINE void few_q4k(const int T, const uint8_t *const wr[8], int64_t nb, const uint8_t *const a[4], int nr,
                         float *y, int64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4], accm[4];
    for (int t = 0; t < 4; t++)
        acc[t] = accm[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const block_q8_K *ya[4];
        __m128i q8s[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            ya[t] = (const block_q8_K *)a[t] + b;
            const __m256i bs = ld256(ya[t]->bsums);
            q8s[t] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        }
        const size_t wo = sizeof(block_q4_K) * (size_t)b;
        __m256i S[4][4], M[4][4]; /* [token][row r | row r+4] */
        uint32_t dm[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const uint8_t *x = wr[r] + wo;
            if (b + FEW_PF_BLOCKS < nb) {
                const char *pf = (const char *)(x + FEW_PF_BLOCKS * sizeof(block_q4_K));
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
                _mm_prefetch(pf + sizeof(block_q4_K) - 1, _MM_HINT_T0);
            }
            memcpy(&dm[r], x, 4);
            const __m128i sm = few_k_scales_mins(x + 4);
            const __m128i mins16 = _mm_unpackhi_epi8(sm, _mm_setzero_si128());
            const __m256i sc32 = _mm256_cvtepu8_epi32(sm);
            _Alignas(32) int32_t scw[8];
            _mm256_store_si256((__m256i *)scw, _mm256_or_si256(sc32, _mm256_slli_epi32(sc32, 16)));
            __asm__("" : "+m"(scw));
            const uint8_t *qs = x + 4 + K_SCALE_SIZE;
            __m256i hp[2][4];
#pragma GCC unroll 2
            for (int cp = 0; cp < 2; cp++) {
                __m256i C[2][4];
#pragma GCC unroll 2
                for (int ci = 0; ci < 2; ci++) {
                    const int c = 2 * cp + ci;
                    const __m256i q = ld256(qs + 32 * c);
                    const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        const __m256i pl = _mm256_maddubs_epi16(lo, ld256(ya[t]->qs + 64 * c));
                        const __m256i ph = _mm256_maddubs_epi16(hi, ld256(ya[t]->qs + 64 * c + 32));
                        C[ci][t] = _mm256_add_epi32(_mm256_madd_epi16(pl, _mm256_set1_epi32(scw[2 * c])),
                                                    _mm256_madd_epi16(ph, _mm256_set1_epi32(scw[2 * c + 1])));
                    }
                }
#pragma GCC unroll 4
                for (int t = 0; t < T; t++)
                    hp[cp][t] = _mm256_hadd_epi32(C[0][t], C[1][t]);
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256i H = _mm256_hadd_epi32(hp[0][t], hp[1][t]);
                const __m128i Sr = _mm_add_epi32(_mm256_castsi256_si128(H), _mm256_extracti128_si256(H, 1));
                const __m128i Mr = _mm_madd_epi16(mins16, q8s[t]);
                if (r < 4) {
                    S[t][r] = _mm256_castsi128_si256(Sr);
                    M[t][r] = _mm256_castsi128_si256(Mr);
                } else {
                    S[t][r - 4] = _mm256_inserti128_si256(S[t][r - 4], Sr, 1);
                    M[t][r - 4] = _mm256_inserti128_si256(M[t][r - 4], Mr, 1);
                }
            }
        }
        const __m256i dmv = _mm256_setr_epi32((int)dm[0], (int)dm[1], (int)dm[2], (int)dm[3], (int)dm[4],
                                              (int)dm[5], (int)dm[6], (int)dm[7]);
        const __m256i dmp = _mm256_packus_epi32(_mm256_and_si256(dmv, _mm256_set1_epi32(0xffff)),
                                                _mm256_srli_epi32(dmv, 16));
        const __m256i dq = _mm256_permute4x64_epi64(dmp, _MM_SHUFFLE(3, 1, 2, 0)); /* d0..7 | m0..7 */
        const __m256 dw8 = _mm256_cvtph_ps(_mm256_castsi256_si128(dq));
        const __m256 mw8 = _mm256_cvtph_ps(_mm256_extracti128_si256(dq, 1));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256 da = _mm256_set1_ps(ya[t]->d);
            const __m256 dd = _mm256_mul_ps(dw8, da), dmn = _mm256_mul_ps(mw8, da);
            __m256 Sc[4], Mc[4];
            few_transpose4(S[t][0], S[t][1], S[t][2], S[t][3], Sc);
            few_transpose4(M[t][0], M[t][1], M[t][2], M[t][3], Mc);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                acc[t] = _mm256_fmadd_ps(Sc[c], dd, acc[t]);
                accm[t] = _mm256_fmadd_ps(Mc[c], dmn, accm[t]);
            }
        }
    }
    for (int t = 0; t < T; t++)
        few_store8(_mm256_sub_ps(acc[t], accm[t]), y + (size_t)t * (size_t)ldy, nr);
}

/* ---- Q6_K: 8 rows (lanes) × T tokens -------------------------------------------------------- */

/* quant_avx2.c's q6_rows8 with T tokens: per super-block and row, each 32-quant group and its
 * scales are unpacked once and dotted with every token; per token the eight rows' exact sums S
 * (the -32 taken back through the token's sub-block sums) come out of one hadd tree, then
 * r = d_w * S, acc = fma(r, d_a, acc). */
AVX2_INLINE void few_q6k(const int T, const uint8_t *const wr[8], int64_t nb, const uint8_t *const a[4], int nr,
                         float *y, int64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256i pick[4];
    for (int g = 0; g < 4; g++) {
        const int lo = 2 * (2 * g), hi = 2 * (2 * g + 1);
        pick[g] = _mm256_setr_epi8(lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo,
                                   lo + 1, lo, lo + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1,
                                   hi, hi + 1, hi, hi + 1, hi, hi + 1);
    }
    __m256 acc[4];
    for (int t = 0; t < 4; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const block_q8_K *ya[4];
        for (int t = 0; t < T; t++)
            ya[t] = (const block_q8_K *)a[t] + b;
        __m256i Tv[4][8];
        uint16_t dh[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const block_q6_K *x = (const block_q6_K *)wr[r] + b;
            if (b + FEW_PF_BLOCKS < nb) {
                const char *pf = (const char *)(x + FEW_PF_BLOCKS);
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
                _mm_prefetch(pf + 128, _MM_HINT_T0);
                _mm_prefetch(pf + sizeof(block_q6_K) - 1, _MM_HINT_T0);
            }
            memcpy(&dh[r], &x->d, 2);
            const __m256i sc16 = _mm256_cvtepi8_epi16(ld128(x->scales));
            const __m256i scA = _mm256_permute2x128_si256(sc16, sc16, 0x00);
            const __m256i scB = _mm256_permute2x128_si256(sc16, sc16, 0x11);
            __m256i sum[4];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                sum[t] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                          _mm256_slli_epi32(_mm256_madd_epi16(sc16, ld256(ya[t]->bsums)), 5));
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i l0 = ld256(x->ql + 64 * h), l1 = ld256(x->ql + 64 * h + 32);
                const __m256i qh = ld256(x->qh + 32 * h);
                const __m256i sch = h ? scB : scA;
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const __m256i l = k & 1 ? l1 : l0;
                    const __m256i low = k < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
                    const __m256i hs = k == 0   ? _mm256_slli_epi16(qh, 4)
                                       : k == 1 ? _mm256_slli_epi16(qh, 2)
                                       : k == 2 ? qh
                                                : _mm256_srli_epi16(qh, 2);
                    const __m256i q = _mm256_or_si256(low, _mm256_and_si256(hs, m30));
                    const __m256i sc = _mm256_shuffle_epi8(sch, pick[k]);
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        const __m256i p = _mm256_maddubs_epi16(q, ld256(ya[t]->qs + 32 * (4 * h + k)));
                        sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, sc));
                    }
                }
            }
            for (int t = 0; t < T; t++)
                Tv[t][r] = sum[t];
        }
        const __m128i d8 = _mm_setr_epi16((short)dh[0], (short)dh[1], (short)dh[2], (short)dh[3], (short)dh[4],
                                          (short)dh[5], (short)dh[6], (short)dh[7]);
        const __m256 dw8 = _mm256_cvtph_ps(d8);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256 rr = _mm256_mul_ps(dw8, _mm256_cvtepi32_ps(few_reduce8(Tv[t])));
            acc[t] = _mm256_fmadd_ps(rr, _mm256_set1_ps(ya[t]->d), acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        few_store8(acc[t], y + (size_t)t * (size_t)ldy, nr);
}

/* ---- drivers ------------------------------------------------------------------------------ */

/* Rows per tile of the 32-element types for T tokens: four (the rows' scales gathered in one
 * vector). For four tokens the 16 accumulators spill past AVX2's 16 registers, and still beat
 * two rows × four tokens (Q4_1, cache-resident, one thread: 2.2 vs 3.0 single-token passes). */
#define FEW_ROWS(T) 4

#define FEW_TOKS(a, act, arow, T)                                                   \
    const uint8_t *a[4];                                                           \
    for (int k_ = 0; k_ < 4; k_++)                                                 \
        a[k_] = (act) + (size_t)(k_ < (T) ? k_ : (T) - 1) * (arow)

#define DEFINE_FEW_LANE8(name, kind, vnni)                                                                     \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const uint8_t *act, \
                          size_t arow, int T, size_t tail_off, float *y, int64_t ldy)                          \
    {                                                                                                          \
        FEW_TOKS(a, act, arow, T);                                                                             \
        const int R = FEW_ROWS(T);                                                                             \
        for (int64_t r = ra; r < rb; r += R) {                                                                 \
            const uint8_t *wr[4];                                                                              \
            few_rows(W, wrow, r, rb, 4, wr);                                                                   \
            const few_pf pp = few_pf_next(W, wrow, nb, r, rb, R);                                              \
            const int nr = rb - r < R ? (int)(rb - r) : R;                                                     \
            if (T == 2)                                                                                        \
                few_lane8(kind, vnni, FEW_ROWS(2), 2, wr, &pp, nb, a, tail_off, nr, y + r, ldy);               \
            else if (T == 3)                                                                                   \
                few_lane8(kind, vnni, FEW_ROWS(3), 3, wr, &pp, nb, a, tail_off, nr, y + r, ldy);               \
            else                                                                                               \
                few_lane8(kind, vnni, FEW_ROWS(4), 4, wr, &pp, nb, a, tail_off, nr, y + r, ldy);               \
        }                                                                                                      \
    }

DEFINE_FEW_LANE8(few_q4_1_rows, FK_Q4_1, 0)
DEFINE_FEW_LANE8(few_q4_1_rows_vnni, FK_Q4_1, 1)
DEFINE_FEW_LANE8(few_q8_0_rows, FK_Q8_0, 0)
DEFINE_FEW_LANE8(few_q8_0_rows_vnni, FK_Q8_0, 1)

#define DEFINE_FEW_Q4_0(name, vnni)                                                                            \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const uint8_t *act, \
                          size_t arow, int T, size_t tail_off, float *y, int64_t ldy)                          \
    {                                                                                                          \
        FEW_TOKS(a, act, arow, T);                                                                             \
        const size_t lane_off = quant_q4_0_lane_off(nb);                                                       \
        for (int64_t r = ra; r < rb; r += 4) {                                                                 \
            const uint8_t *wr[4];                                                                              \
            few_rows(W, wrow, r, rb, 4, wr);                                                                   \
            const few_pf pp = few_pf_next(W, wrow, nb, r, rb, 4);                                              \
            const int nr = rb - r < 4 ? (int)(rb - r) : 4;                                                     \
            if (T == 2)                                                                                        \
                few_q4_0(vnni, 2, wr, &pp, nb, a, tail_off, lane_off, nr, y + r, ldy);                         \
            else if (T == 3)                                                                                   \
                few_q4_0(vnni, 3, wr, &pp, nb, a, tail_off, lane_off, nr, y + r, ldy);                         \
            else                                                                                               \
                few_q4_0(vnni, 4, wr, &pp, nb, a, tail_off, lane_off, nr, y + r, ldy);                         \
        }                                                                                                      \
    }

DEFINE_FEW_Q4_0(few_q4_0_rows, 0)
DEFINE_FEW_Q4_0(few_q4_0_rows_vnni, 1)

#define DEFINE_FEW_K(name, kern)                                                                               \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const uint8_t *act, \
                          size_t arow, int T, size_t tail_off, float *y, int64_t ldy)                          \
    {                                                                                                          \
        (void)tail_off;                                                                                        \
        FEW_TOKS(a, act, arow, T);                                                                             \
        for (int64_t r = ra; r < rb; r += 8) {                                                                 \
            const uint8_t *wr[8];                                                                              \
            few_rows(W, wrow, r, rb, 8, wr);                                                                   \
            const int nr = rb - r < 8 ? (int)(rb - r) : 8;                                                     \
            if (T == 2)                                                                                        \
                kern(2, wr, nb, a, nr, y + r, ldy);                                                            \
            else if (T == 3)                                                                                   \
                kern(3, wr, nb, a, nr, y + r, ldy);                                                            \
            else                                                                                               \
                kern(4, wr, nb, a, nr, y + r, ldy);                                                            \
        }                                                                                                      \
    }

DEFINE_FEW_K(few_q4_K_rows, few_q4k)
DEFINE_FEW_K(few_q6_K_rows, few_q6k)

/* ---- entry points ------------------------------------------------------------------------- */

static bool few_disabled(void)
{
    static atomic_int cached; /* 0 = not read yet, 1 = on, 2 = off */
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c == 0) {
        const char *off = getenv("SERVAL_QUANT_NO_FEWTOK");
        c = off && *off && strcmp(off, "0") != 0 ? 2 : 1;
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return c == 2;
}

quant_fewtok_fn quant_fewtok_avx2_pick(gguf_dtype wtype)
{
    if (few_disabled())
        return NULL;
    const bool vnni = quant_cpu_has_avx_vnni();
    switch (wtype) {
    case GGUF_DTYPE_Q4_0: return vnni ? few_q4_0_rows_vnni : few_q4_0_rows;
    case GGUF_DTYPE_Q4_1: return vnni ? few_q4_1_rows_vnni : few_q4_1_rows;
    case GGUF_DTYPE_Q8_0: return vnni ? few_q8_0_rows_vnni : few_q8_0_rows;
    case GGUF_DTYPE_Q4_K: return few_q4_K_rows;
    case GGUF_DTYPE_Q6_K: return few_q6_K_rows;
    default: return NULL;
    }
}

int64_t quant_fewtok_avx2_run(quant_fewtok_fn f, const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,
                              const uint8_t *act, size_t arow, size_t tail_off, int64_t t, int64_t te, float *y,
                              int64_t ldy)
{
    while (te - t >= 2) {
        const int64_t left = te - t;
        const int T = left == 5 || left == 6 ? 3 : left < 4 ? (int)left : 4;
        f(W, wrow, nb, ra, rb, act + (size_t)t * arow, arow, T, tail_off, y + t * ldy, ldy);
        t += T;
    }
    return t;
}

#else
typedef int quant_fewtok_avx2_empty_unit; /* ISO C wants at least one declaration */
#endif
