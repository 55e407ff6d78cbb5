/* quant_avx2.c — AVX2+FMA+F16C kernels behind quant_matmul, quant_vec_dot and
 * quant_act_quantize. Built for baseline x86-64 (per-function target attributes), so quant.c
 * calls these only after checking the CPU.
 *
 * The per-(row, token) arithmetic of every type is quant_impl.h's (llama.cpp's x86 batch path).
 *
 * Q4_0, Q4_1, Q8_0, Q5_0, Q5_1: every (row, token) pair has its own eight f32 lanes, one __m256;
 * per block, a u8×s8 dot product of 4-byte groups (vpdpbusd where the CPU has AVX-VNNI, maddubs
 * + madd otherwise) gives the eight exact int32 lane sums, one cvt and one fma with d_w*d_a fold
 * them in; hsum_float_8's order finishes. Q4_0 adds each pair's lanes up to the block's exact sum
 * first and keeps one chain. Two tokens or more: the tokens are packed once per 64 (groups of 8,
 * 4, 2: quants interleaved 32 bytes a token, scales as vectors) and each row runs against a
 * group, its weight block unpacked once for the group (with AVX-512 VNNI, Q4_1 / Q5_0 / Q5_1 put
 * two tokens' pairs in each 512-bit vector). One token: 4 rows × 1 token (Q4_0: 128-bit halves).
 * The 4-token tiles of 128-bit halves (q_tok4) remain for when the pack buffer cannot be
 * allocated. Q5_0 / Q5_1 or the fifth bit into the unpacked weights (Q5_0's -16 taken back
 * through the activation's lane offsets, twice Q4_0's). Every tile of every type runs the same
 * per-pair operations as the scalar reference, so all agree bit for bit whatever the batch shape.
 *
 * Q4_K prompts: the packed group interleaves the activations' 4-byte groups by token, so a
 * broadcast weight group dotted with one vector gives all eight tokens' partial sums in the lanes
 * (no horizontal reductions); llama.cpp's per-chunk float chains run in the lanes.
 * Q5_K: one row × 4 tokens for prompts (weights unpacked once per four tokens), 4 rows × 1
 * token for decoding; eight int32 lanes per pair, reduced four pairs at a time to exact sums
 * per super-block, then the float chains on those four-pair vectors (Q4_K's 4-token tile is the
 * same with per-chunk sums).
 *
 * Q4_K and Q6_K decoding (one token): tiles of 8 rows whose float chains run in the 8 lanes of
 * one __m256 (lane r = row r), each activation group loaded once per 8 rows, each row's exact
 * int32 sums reduced with hadd trees and transposed into the lanes; each row's stream prefetched
 * PF_BLOCKS super-blocks ahead.
 *
 * With AVX-512 VNNI, Q4_K and Q6_K prompts go to quant_k512.c in groups of 16 tokens (the hook
 * in quant_avx2_matmul); the tiles below take the tokens left and CPUs without it.
 *
 * Q6_K prompts: each SIMD lane is one (row, token) pair running one per-block chain (exact int32
 * block sum S, r = d_w*S, acc = fma(r, d_a, acc)); the partial sums of four pairs are reduced
 * together (unpacks and adds) so one cvt, one mul and one fma serve four pairs.
 *
 * Float types (F32/F16/BF16 × f32) use R rows × T tokens tiles of 8-lane partial sums: a
 * result depends only on its (row, token) pair's own accumulator, so it too is independent of
 * the batch shape (but not bit-equal to the scalar reference). */
#include "quant_impl.h"

#if defined(SERVAL_QUANT_X86)

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_fewtok.h"
#include "status.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Rows of the single-token tiles (prompt tiles are one row × four tokens). */
#define ROW_LANES 4

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

AVX2_INLINE float h2f(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

AVX2_INLINE __m128i load_u16(const void *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _mm_cvtsi32_si128(h);
}

AVX2_INLINE __m128i load_u32(const void *p)
{
    uint32_t u;
    memcpy(&u, p, sizeof u);
    return _mm_cvtsi32_si128((int)u);
}

AVX2_INLINE __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
AVX2_INLINE __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* [s0, s1, s2, s3] from the two halves' sums u01 = [s0a, s0b, s1a, s1b], u23 likewise. */
AVX2_INLINE __m128i pairs_to_4(__m128i u01, __m128i u23)
{
    const __m128 a = _mm_castsi128_ps(u01), b = _mm_castsi128_ps(u23);
    return _mm_add_epi32(_mm_castps_si128(_mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
                         _mm_castps_si128(_mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))));
}

/* Four pairs' int32 partial sums to their totals. */
AVX2_INLINE __m128i reduce4_i32(__m128i s0, __m128i s1, __m128i s2, __m128i s3)
{
    const __m128i u01 = _mm_add_epi32(_mm_unpacklo_epi64(s0, s1), _mm_unpackhi_epi64(s0, s1));
    const __m128i u23 = _mm_add_epi32(_mm_unpacklo_epi64(s2, s3), _mm_unpackhi_epi64(s2, s3));
    return pairs_to_4(u01, u23);
}

/* The totals of four 8-lane int32 vectors: lane k of the result is the sum of v_k's lanes. */
AVX2_INLINE __m128i reduce4_i32_256(__m256i v0, __m256i v1, __m256i v2, __m256i v3)
{
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

AVX2_INLINE __m128i fold_i32(__m256i v)
{
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

/* The fp16 scales at four addresses, widened: [d0, d1, d2, d3]. */
AVX2_INLINE __m128 gather_d4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3)
{
    const __m128i a = _mm_unpacklo_epi16(load_u16(p0), load_u16(p1));
    const __m128i b = _mm_unpacklo_epi16(load_u16(p2), load_u16(p3));
    return _mm_cvtph_ps(_mm_unpacklo_epi32(a, b));
}

/* The fp16 (d, m) pairs at four addresses, widened into d4 and m4. */
AVX2_INLINE void gather_dm4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3, __m128 *d4,
                            __m128 *m4)
{
    const __m128i a = _mm_unpacklo_epi32(load_u32(p0), load_u32(p1));
    const __m128i b = _mm_unpacklo_epi32(load_u32(p2), load_u32(p3));
    const __m128 lo = _mm_cvtph_ps(a); /* d0 m0 d1 m1 */
    const __m128 hi = _mm_cvtph_ps(b); /* d2 m2 d3 m3 */
    *d4 = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    *m4 = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
}

/* Single-token tiles stream weights from DRAM faster than the hardware prefetcher runs ahead
 * of several interleaved row streams. Each tile therefore prefetches the next tile's bytes
 * (rows are contiguous, ROW_LANES * wblk of them per block), spread evenly over its block
 * loop: `lines` cache lines from pf + step*b while it works on block b. */
typedef struct prefetch_plan {
    const uint8_t *pf;
    size_t step, last; /* bytes per block; offset of the last byte (len - 1) */
    int lines;         /* 0: no next tile */
} prefetch_plan;

AVX2_INLINE void prefetch_step(const prefetch_plan *pp, int64_t b)
{
    const size_t o = pp->step * (size_t)b;
    for (int k = 0; k < pp->lines; k++) {
        const size_t ok = o + 64 * (size_t)k;
        _mm_prefetch((const char *)(pp->pf + (ok < pp->last ? ok : pp->last)), _MM_HINT_T0);
    }
}

/* Writes lanes [0, n) of v to p[0], p[stride], ... */
AVX2_INLINE void store_lanes(__m128 v, float *p, int64_t stride, int n)
{
    float tmp[4];
    _mm_storeu_ps(tmp, v);
    for (int i = 0; i < n; i++)
        p[i * stride] = tmp[i];
}

/* ---- Q4_0 / Q4_1 / Q8_0 weights × Q8_0 / Q8_1 activations: llama.cpp's 8-lane order ------- */

/* Every (row, token) pair keeps its eight f32 lanes (quant_impl.h) in two __m128: lanes 0..3
 * (elements 0..15: for 4-bit weights the low nibbles) and lanes 4..7 (elements 16..31). Per
 * block, maddubs + madd over each 16-byte half leave the four int32 lane sums p_j of that half
 * (exact), one cvt and one fma with the broadcast d_w*d_a fold them in. 128-bit halves rather
 * than 256-bit vectors: the same work on Zen 1's 128-bit units, and one broadcast of d serves
 * both halves. */
enum { K_Q4_0, K_Q4_1, K_Q8_0, K_Q5_0, K_Q5_1, K_Q4_K /* the packed-group tiles only */ };

/* Kinds whose blocks carry a min (d | m | ...) and whose activations are Q8_1. */
#define HAS_MIN(k) ((k) == K_Q4_1 || (k) == K_Q5_1)
/* Kinds whose weights are signed bytes (|w| to maddubs, the sign moved onto the activation). */
#define SIGNED_W(k) ((k) == K_Q8_0)
/* Kinds whose offset (-8, -16) comes back through the activation's lane offsets. */
#define LANE_OFF(k) ((k) == K_Q4_0 || (k) == K_Q5_0)

typedef struct q_geom {
    size_t wblk, wqs; /* weight block bytes, offset of its quants */
    size_t ablk, aqs; /* activation block bytes, offset of its quants */
} q_geom;

#define Q_GEOM(k)                                                                                      \
    ((k) == K_Q5_0   ? (q_geom){sizeof(block_q5_0), offsetof(block_q5_0, qs), sizeof(block_q8_0),      \
                                offsetof(block_q8_0, qs)}                                              \
     : (k) == K_Q5_1 ? (q_geom){sizeof(block_q5_1), offsetof(block_q5_1, qs), sizeof(block_q8_1),      \
                                offsetof(block_q8_1, qs)}                                              \
     : (k) == K_Q4_1 ? (q_geom){sizeof(block_q4_1), offsetof(block_q4_1, qs), sizeof(block_q8_1),      \
                              offsetof(block_q8_1, qs)}                                                \
     : (k) == K_Q4_0 ? (q_geom){sizeof(block_q4_0), offsetof(block_q4_0, qs), sizeof(block_q8_0),      \
                                offsetof(block_q8_0, qs)}                                              \
                     : (q_geom){sizeof(block_q8_0), offsetof(block_q8_0, qs), sizeof(block_q8_0),      \
                                offsetof(block_q8_0, qs)})

/* One weight block as maddubs' unsigned operands for elements 0..15 (lo) and 16..31 (hi): the
 * nibbles for Q4_0 / Q4_1, the 5-bit values for Q5_0 / Q5_1 (Q4_0's -8 and Q5_0's -16 come
 * back through the activation's lane offsets), |w| for Q8_0 with the signs left in slo / shi
 * for the activations, as llama.cpp does. */
typedef struct wprep {
    __m128i lo, hi, slo, shi;
} wprep;

AVX2_INLINE wprep wprepare(const int kind, const uint8_t *x)
{
    const q_geom g = Q_GEOM(kind);
    wprep p;
    if (kind == K_Q8_0) {
        p.slo = load128(x + g.wqs);
        p.shi = load128(x + g.wqs + 16);
    } else if (kind == K_Q5_0 || kind == K_Q5_1) {
        /* bit e of qh to byte e: 0xFF where set (llama.cpp's bytes_from_bits_32, per half) */
        const __m128i qh = load_u32(x + g.wqs - 4), bm = _mm_set1_epi64x((long long)0x8040201008040201ULL);
        const __m128i blo = _mm_cmpeq_epi8(
            _mm_and_si128(_mm_shuffle_epi8(qh, _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)), bm), bm);
        const __m128i bhi = _mm_cmpeq_epi8(
            _mm_and_si128(_mm_shuffle_epi8(qh, _mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)), bm), bm);
        const __m128i q = load128(x + g.wqs), m = _mm_set1_epi8(0x0F);
        const __m128i nlo = _mm_and_si128(q, m), nhi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
        const __m128i b4 = _mm_set1_epi8(0x10);
        p.lo = _mm_or_si128(nlo, _mm_and_si128(blo, b4));
        p.hi = _mm_or_si128(nhi, _mm_and_si128(bhi, b4));
        p.slo = p.shi = _mm_setzero_si128();
        return p;
    } else {
        const __m128i q = load128(x + g.wqs), m = _mm_set1_epi8(0x0F);
        p.lo = _mm_and_si128(q, m);
        p.hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
        p.slo = p.shi = _mm_setzero_si128();
        return p;
    }
    p.lo = _mm_abs_epi8(p.slo);
    p.hi = _mm_abs_epi8(p.shi);
    return p;
}

/* The lane sums of a prepared weight block with the activation quants at aq, as floats:
 * lanes 0..3 in *plo, 4..7 in *phi. Q4_0: off is the block's lane offsets (8 x i32). */
AVX2_INLINE void lane_sums(const int kind, const wprep *p, const uint8_t *aq, const uint8_t *off, __m128 *plo,
                           __m128 *phi)
{
    __m128i alo = load128(aq), ahi = load128(aq + 16);
    if (SIGNED_W(kind)) {
        alo = _mm_sign_epi8(alo, p->slo);
        ahi = _mm_sign_epi8(ahi, p->shi);
    }
    const __m128i ones = _mm_set1_epi16(1);
    __m128i slo = _mm_madd_epi16(_mm_maddubs_epi16(p->lo, alo), ones);
    __m128i shi = _mm_madd_epi16(_mm_maddubs_epi16(p->hi, ahi), ones);
    if (kind == K_Q4_0) {
        slo = _mm_sub_epi32(slo, load128(off));
        shi = _mm_sub_epi32(shi, load128(off + 16));
    } else if (kind == K_Q5_0) { /* -16 = twice Q4_0's -8 */
        slo = _mm_sub_epi32(slo, _mm_slli_epi32(load128(off), 1));
        shi = _mm_sub_epi32(shi, _mm_slli_epi32(load128(off + 16), 1));
    }
    *plo = _mm_cvtepi32_ps(slo);
    *phi = _mm_cvtepi32_ps(shi);
}

/* A prepared Q4_0 block's exact sum with the activation quants at aq, spread over four int32
 * lanes (lane j: elements 4j..4j+3 and 16+4j..16+4j+3), offsets included. */
AVX2_INLINE __m128i lane_isums_q4_0(const wprep *p, const uint8_t *aq, const uint8_t *off)
{
    const __m128i ones = _mm_set1_epi16(1);
    const __m128i slo = _mm_madd_epi16(_mm_maddubs_epi16(p->lo, load128(aq)), ones);
    const __m128i shi = _mm_madd_epi16(_mm_maddubs_epi16(p->hi, load128(aq + 16)), ones);
    return _mm_sub_epi32(_mm_add_epi32(slo, shi), _mm_add_epi32(load128(off), load128(off + 16)));
}

/* hsum_float_8 of four pairs at once from r_k = hi_k + lo_k (r_k lane i = acc[i+4] + acc[i]):
 * lane k of the result is (r_k0 + r_k2) + (r_k1 + r_k3), added in exactly that order. */
AVX2_INLINE __m128 hsum_r4(__m128 r0, __m128 r1, __m128 r2, __m128 r3)
{
    const __m128 ab = _mm_add_ps(_mm_unpacklo_ps(r0, r1), _mm_unpackhi_ps(r0, r1)); /* s0 s0 s1 s1 */
    const __m128 cd = _mm_add_ps(_mm_unpacklo_ps(r2, r3), _mm_unpackhi_ps(r2, r3));
    return _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab)); /* s0 + s1 */
}

/* Lane k of v broadcast. */
#define BCAST4(v, k) _mm_permute_ps((v), (k) * 0x55)

/* The activation scales of four token rows, block by block: sc[8b..8b+3] = d_a of tokens
 * 0..3, sc[8b+4..8b+7] = s_a (Q8_1). */
AVX2_INLINE void act_scales4(const int kind, const uint8_t *const t[4], int64_t nb, float *sc)
{
    for (int64_t b = 0; b < nb; b++) {
        for (int k = 0; k < 4; k++) {
            if (HAS_MIN(kind)) {
                memcpy(sc + 8 * b + k, t[k] + 8 * b, sizeof(float));
                memcpy(sc + 8 * b + 4 + k, t[k] + 8 * b + 4, sizeof(float));
            } else {
                memcpy(sc + 8 * b + k, t[k] + 4 * b, sizeof(float));
            }
        }
    }
}

/* One row × 4 tokens (a[]: activation rows, padded with repeats; results for the first T);
 * sc from act_scales4. Each weight block is unpacked once for the four tokens. */
AVX2_INLINE void q_tok4(const int kind, const uint8_t *w, int64_t nb, const uint8_t *const a[4], const float *sc,
                        int T, float *y, int64_t ldy)
{
    const q_geom g = Q_GEOM(kind);
    const size_t lo_off = LANE_OFF(kind) ? quant_q4_0_lane_off(nb) : 0;
    __m128 lo0 = _mm_setzero_ps(), lo1 = lo0, lo2 = lo0, lo3 = lo0, hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
    __m128 summs = lo0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + g.wblk * (size_t)b;
        const size_t ao = g.ablk * (size_t)b + g.aqs;
        const wprep p = wprepare(kind, x);
        const __m128 dm = _mm_cvtph_ps(HAS_MIN(kind) ? load_u32(x) : load_u16(x)); /* d_w, m_w */
        const __m128 dd = _mm_mul_ps(_mm_broadcastss_ps(dm), _mm_loadu_ps(sc + 8 * b)); /* d_w*d_a per token */
        if (kind == K_Q4_0) { /* one chain per pair (lo0's lanes are the tokens) */
            const __m128i S = reduce4_i32(
                lane_isums_q4_0(&p, a[0] + ao, a[0] + lo_off + 32 * (size_t)b),
                lane_isums_q4_0(&p, a[1] + ao, a[1] + lo_off + 32 * (size_t)b),
                lane_isums_q4_0(&p, a[2] + ao, a[2] + lo_off + 32 * (size_t)b),
                lane_isums_q4_0(&p, a[3] + ao, a[3] + lo_off + 32 * (size_t)b));
            lo0 = _mm_fmadd_ps(_mm_cvtepi32_ps(S), dd, lo0);
            continue;
        }
        if (HAS_MIN(kind))
            summs = _mm_fmadd_ps(_mm_permute_ps(dm, 0x55), _mm_loadu_ps(sc + 8 * b + 4), summs);
        __m128 pl, ph, d;
        lane_sums(kind, &p, a[0] + ao, a[0] + lo_off + 32 * (size_t)b, &pl, &ph);
        d = BCAST4(dd, 0);
        lo0 = _mm_fmadd_ps(pl, d, lo0);
        hi0 = _mm_fmadd_ps(ph, d, hi0);
        lane_sums(kind, &p, a[1] + ao, a[1] + lo_off + 32 * (size_t)b, &pl, &ph);
        d = BCAST4(dd, 1);
        lo1 = _mm_fmadd_ps(pl, d, lo1);
        hi1 = _mm_fmadd_ps(ph, d, hi1);
        lane_sums(kind, &p, a[2] + ao, a[2] + lo_off + 32 * (size_t)b, &pl, &ph);
        d = BCAST4(dd, 2);
        lo2 = _mm_fmadd_ps(pl, d, lo2);
        hi2 = _mm_fmadd_ps(ph, d, hi2);
        lane_sums(kind, &p, a[3] + ao, a[3] + lo_off + 32 * (size_t)b, &pl, &ph);
        d = BCAST4(dd, 3);
        lo3 = _mm_fmadd_ps(pl, d, lo3);
        hi3 = _mm_fmadd_ps(ph, d, hi3);
    }
    if (kind == K_Q4_0) {
        store_lanes(lo0, y, ldy, T);
        return;
    }
    __m128 res = hsum_r4(_mm_add_ps(hi0, lo0), _mm_add_ps(hi1, lo1), _mm_add_ps(hi2, lo2), _mm_add_ps(hi3, lo3));
    if (HAS_MIN(kind))
        res = _mm_add_ps(res, summs);
    store_lanes(res, y, ldy, T);
}

/* ROW_LANES (4) rows (row pointers, repeats allowed) × 1 token; lane k of the result is row k. */
AVX2_INLINE __m128 q_row4(const int kind, const uint8_t *const wr[ROW_LANES], const prefetch_plan *pp, int64_t nb,
                          const uint8_t *a, size_t tail_off)
{
    const q_geom g = Q_GEOM(kind);
    const uint8_t *tail = a + tail_off;
    const size_t tstride = HAS_MIN(kind) ? 8 : 4;
    const uint8_t *lanes = a + (LANE_OFF(kind) ? quant_q4_0_lane_off(nb) : 0);
    __m128 lo0 = _mm_setzero_ps(), lo1 = lo0, lo2 = lo0, lo3 = lo0, hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
    __m128 summs = lo0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *aq = a + g.ablk * (size_t)b + g.aqs, *off = lanes + 32 * (size_t)b;
        const float *ts = (const float *)(tail + tstride * (size_t)b);
        const size_t wo = g.wblk * (size_t)b;
        prefetch_step(pp, b);
        __m128 d4, m4 = _mm_setzero_ps();
        if (HAS_MIN(kind))
            gather_dm4(wr[0] + wo, wr[1] + wo, wr[2] + wo, wr[3] + wo, &d4, &m4);
        else
            d4 = gather_d4(wr[0] + wo, wr[1] + wo, wr[2] + wo, wr[3] + wo);
        const __m128 dd = _mm_mul_ps(d4, _mm_broadcast_ss(ts)); /* d_w*d_a per row */
        if (HAS_MIN(kind))
            summs = _mm_fmadd_ps(m4, _mm_broadcast_ss(ts + 1), summs);
        __m128 pl, ph, d;
        wprep p = wprepare(kind, wr[0] + wo);
        if (kind == K_Q4_0) { /* one chain per pair (lo0's lanes are the rows) */
            const __m128i i0 = lane_isums_q4_0(&p, aq, off);
            p = wprepare(kind, wr[1] + wo);
            const __m128i i1 = lane_isums_q4_0(&p, aq, off);
            p = wprepare(kind, wr[2] + wo);
            const __m128i i2 = lane_isums_q4_0(&p, aq, off);
            p = wprepare(kind, wr[3] + wo);
            const __m128i i3 = lane_isums_q4_0(&p, aq, off);
            lo0 = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4_i32(i0, i1, i2, i3)), dd, lo0);
            continue;
        }
        lane_sums(kind, &p, aq, off, &pl, &ph);
        d = BCAST4(dd, 0);
        lo0 = _mm_fmadd_ps(pl, d, lo0);
        hi0 = _mm_fmadd_ps(ph, d, hi0);
        p = wprepare(kind, wr[1] + wo);
        lane_sums(kind, &p, aq, off, &pl, &ph);
        d = BCAST4(dd, 1);
        lo1 = _mm_fmadd_ps(pl, d, lo1);
        hi1 = _mm_fmadd_ps(ph, d, hi1);
        p = wprepare(kind, wr[2] + wo);
        lane_sums(kind, &p, aq, off, &pl, &ph);
        d = BCAST4(dd, 2);
        lo2 = _mm_fmadd_ps(pl, d, lo2);
        hi2 = _mm_fmadd_ps(ph, d, hi2);
        p = wprepare(kind, wr[3] + wo);
        lane_sums(kind, &p, aq, off, &pl, &ph);
        d = BCAST4(dd, 3);
        lo3 = _mm_fmadd_ps(pl, d, lo3);
        hi3 = _mm_fmadd_ps(ph, d, hi3);
    }
    if (kind == K_Q4_0)
        return lo0;
    __m128 res = hsum_r4(_mm_add_ps(hi0, lo0), _mm_add_ps(hi1, lo1), _mm_add_ps(hi2, lo2), _mm_add_ps(hi3, lo3));
    if (HAS_MIN(kind))
        res = _mm_add_ps(res, summs);
    return res;
}

/* Eight 8-lane int32 vectors to their totals: lane r of the result is the sum of v[r]'s lanes. */
AVX2_INLINE __m256i reduce8_i32(const __m256i v[8])
{
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    /* h0 = [v0..v3 low-half sums | v0..v3 high-half sums], h1 likewise for v4..v7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}

/* ---- prompt tiles of the 32-element types: one row × 8 tokens, 256-bit ---------------------- */

/* Each (row, token) pair's eight f32 lanes (quant_impl.h) are the eight lanes of one __m256:
 * with the weight block as 32 unsigned bytes in element order (4-bit kinds: low nibbles in the
 * low half) and the activation quants as 32 signed bytes, one u8×s8 dot product of 4-byte
 * groups (vpdpbusd where the CPU has AVX-VNNI, maddubs + madd otherwise: both exact, as no
 * pair of products reaches int16's range) leaves lane j = p_j, then one cvt and one fma with
 * d_w*d_a fold the block in. The weight block is unpacked once for the eight tokens, and
 * d_w*d_a of the eight tokens is formed with one multiply and read back as broadcasts from
 * memory (load ports, not shuffles). Q4_1 / Q5_1's summs chain runs with the tokens in the
 * lanes; Q4_0's one chain per pair reduces the eight pairs' int32 lanes to their exact block
 * sums first (lane = token). Same per-pair operations as the scalar reference. */

/* Tokens per prompt tile. */
#define TOK8 8

/* Tokens per outer block: their activations stay in L2 while each weight chunk (about
 * WCHUNK_BYTES, so L1-resident) is reused by every group of them. */
#define TOK_BLOCK 64
#define WCHUNK_BYTES 16384

/* u8 × s8 dot products of 4-byte groups added to init, exact in int32. */
AVX2_INLINE __m256i dot_u8s8(const int vnni, __m256i init, __m256i u, __m256i s)
{
    if (vnni) {
        /* AVX-VNNI (VEX-encoded, so CPUs without AVX-512 run it too); asm, because this file
         * is built for baseline x86-64 and the caller checked the CPU */
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(init) : "x"(u), "xm"(s));
        return init;
    }
    return _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

/* A weight block as 32 unsigned bytes in element order (|w| for Q8_0, its signs in *sgn). */
AVX2_INLINE __m256i wprep256(const int kind, const uint8_t *x, __m256i *sgn)
{
    const q_geom g = Q_GEOM(kind);
    if (kind == K_Q8_0) {
        *sgn = load256(x + g.wqs);
        return _mm256_abs_epi8(*sgn);
    }
    if (kind == K_Q5_0 || kind == K_Q5_1) {
        const wprep p = wprepare(kind, x);
        return _mm256_set_m128i(p.hi, p.lo);
    }
    const __m128i q = load128(x + g.wqs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
}

/* A group of up to TOK8 tokens packed for the tile, per block b (nb blocks):
 *   da[8b + t] = d_a, sa[8b + t] = s_a (Q8_1 kinds) or ot[8b + t] = Q4_0's offset total (the
 *   sum of the block's eight lane offsets, 8 * sum(q_a));
 *   qs[256b + 32t ..] = token t's 32 quants (one pointer and constant offsets for the tile);
 *   Q5_0 only: no[256b + 32t ..] = minus twice token t's eight lane offsets (int32), the
 *   dot product's starting value.
 * Lanes t >= NT are zeros. */
typedef struct tok_pack {
    float *da, *sa;
    int32_t *ot;
    uint8_t *qs, *no;
} tok_pack;

/* Bytes of one packed group of nb blocks. */
static inline size_t tok_pack_bytes(int kind, int64_t nb)
{
    if (kind == K_Q4_K) /* per super-block: 64 groups x 8 tokens x 4 bytes | 8 d_a | 4 x 8 sum pairs */
        return (size_t)nb * (2048 + 32 + 128);
    return (size_t)nb * (64 + 256 + (kind == K_Q5_0 ? 256 : 0));
}

/* Lays a packed group out in buf (32-byte aligned, tok_pack_bytes long). */
static inline tok_pack tok_pack_at(int kind, uint8_t *buf, int64_t nb)
{
    tok_pack tp;
    tp.qs = buf;
    if (kind == K_Q4_K) {
        tp.no = NULL;
        tp.da = (float *)(buf + 2048 * (size_t)nb);
        tp.sa = NULL;
        tp.ot = (int32_t *)(buf + 2080 * (size_t)nb);
        return tp;
    }
    tp.no = kind == K_Q5_0 ? buf + 256 * (size_t)nb : NULL;
    uint8_t *sc = buf + (kind == K_Q5_0 ? 512 : 256) * (size_t)nb;
    tp.da = (float *)sc;
    tp.sa = (float *)(sc + 32 * (size_t)nb);
    tp.ot = (int32_t *)(sc + 32 * (size_t)nb);
    return tp;
}

/* Packs NT activation rows (a[t] = row t) into tp. */
AVX2_INLINE void tok_pack_rows(const int kind, const uint8_t *const a[TOK8], int NT, size_t tail_off, int64_t nb,
                               const tok_pack *tp)
{
    const q_geom g = Q_GEOM(kind);
    const size_t lo_off = LANE_OFF(kind) ? quant_q4_0_lane_off(nb) : 0;
    if (NT < TOK8) {
        memset(tp->qs, 0, 256 * (size_t)nb);
        memset(tp->da, 0, 64 * (size_t)nb); /* da, sa or ot */
        if (tp->no)
            memset(tp->no, 0, 256 * (size_t)nb);
    }
    for (int t = 0; t < NT; t++) {
        const uint8_t *tl = a[t] + tail_off;
        for (int64_t b = 0; b < nb; b++) {
            memcpy(tp->qs + 256 * (size_t)b + 32 * (size_t)t, a[t] + g.ablk * (size_t)b + g.aqs, 32);
            if (HAS_MIN(kind)) {
                memcpy(tp->da + 8 * b + t, tl + 8 * b, sizeof(float));
                memcpy(tp->sa + 8 * b + t, tl + 8 * b + 4, sizeof(float));
            } else {
                memcpy(tp->da + 8 * b + t, tl + 4 * b, sizeof(float));
            }
            if (LANE_OFF(kind)) {
                int32_t off[8];
                memcpy(off, a[t] + lo_off + 32 * (size_t)b, sizeof off);
                if (kind == K_Q4_0) {
                    tp->ot[8 * b + t] = off[0] + off[1] + off[2] + off[3] + off[4] + off[5] + off[6] + off[7];
                } else {
                    for (int j = 0; j < 8; j++)
                        off[j] = -2 * off[j];
                    memcpy(tp->no + 256 * (size_t)b + 32 * (size_t)t, off, sizeof off);
                }
            }
        }
    }
}

/* One row × NT (<= TOK8) tokens of a packed group; y points at token 0 of this row (tokens
 * ldy apart). */
AVX2_INLINE void q_tokn(const int kind, const int vnni, const int NT, const uint8_t *w, int64_t nb,
                        const tok_pack *tp, float *y, int64_t ldy)
{
    const q_geom g = Q_GEOM(kind);
    __m256 acc[TOK8];
    for (int t = 0; t < TOK8; t++)
        acc[t] = _mm256_setzero_ps();
    __m256 summs = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + g.wblk * (size_t)b;
        const uint8_t *aq = tp->qs + 256 * (size_t)b;
        __m256i sgn = _mm256_setzero_si256();
        const __m256i wv = wprep256(kind, x, &sgn);
        const __m128 dm = _mm_cvtph_ps(HAS_MIN(kind) ? load_u32(x) : load_u16(x)); /* d_w, m_w */
        const __m256 dd = _mm256_mul_ps(_mm256_broadcastss_ps(dm), _mm256_load_ps(tp->da + 8 * b));
        if (HAS_MIN(kind))
            summs = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), _mm256_load_ps(tp->sa + 8 * b),
                                    summs);
        if (kind == K_Q4_0) { /* one chain per pair: acc[0]'s lanes are the tokens */
            __m256i s[TOK8];
#pragma GCC unroll 8
            for (int t = 0; t < TOK8; t++)
                s[t] = t < NT ? dot_u8s8(vnni, _mm256_setzero_si256(), wv, load256(aq + 32 * t))
                              : _mm256_setzero_si256();
            const __m256i S =
                _mm256_sub_epi32(reduce8_i32(s), _mm256_load_si256((const __m256i *)(tp->ot + 8 * b)));
            acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), dd, acc[0]);
            continue;
        }
        _Alignas(32) float ddm[TOK8];
        _mm256_store_ps(ddm, dd);
        /* read back from memory: broadcast loads use the load ports, not the shuffle port */
        __asm__("" : "+m"(ddm));
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m256i av = load256(aq + 32 * t);
            if (SIGNED_W(kind))
                av = _mm256_sign_epi8(av, sgn);
            /* Q5_0: -16 = twice Q4_0's -8 per lane, the starting value */
            const __m256i init = kind == K_Q5_0 ? load256(tp->no + 256 * (size_t)b + 32 * (size_t)t)
                                                : _mm256_setzero_si256();
            const __m256i p = dot_u8s8(vnni, init, wv, av);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(ddm + t), acc[t]);
        }
    }
    _Alignas(32) float res[TOK8];
    if (kind == K_Q4_0) {
        _mm256_store_ps(res, acc[0]);
    } else {
        __m128 r[TOK8];
        for (int t = 0; t < TOK8; t++)
            r[t] = _mm_add_ps(_mm256_extractf128_ps(acc[t], 1), _mm256_castps256_ps128(acc[t]));
        __m128 lo = hsum_r4(r[0], r[1], r[2], r[3]), hi = hsum_r4(r[4], r[5], r[6], r[7]);
        if (HAS_MIN(kind)) {
            lo = _mm_add_ps(lo, _mm256_castps256_ps128(summs));
            hi = _mm_add_ps(hi, _mm256_extractf128_ps(summs, 1));
        }
        _mm_store_ps(res, lo);
        _mm_store_ps(res + 4, hi);
    }
    for (int t = 0; t < NT; t++)
        y[t * ldy] = res[t];
}

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define AVX512_INLINE \
    static inline __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/* q_tokn with two tokens' pairs in each 512-bit vector (tokens 2k and 2k+1 are adjacent in the
 * packed group): one vpdpbusd, cvt and fma serve two pairs, d_w*d_a of the eight tokens formed
 * once per block and spread to the pairs with one permute. The same per-pair operations (d_w*d_a is exact, however it is formed). For the
 * unsigned-weight kinds of the 8-lane order (Q4_1, Q5_0, Q5_1); NT even. */
AVX512_INLINE void q_tokn512(const int kind, const int NT, const uint8_t *w, int64_t nb, const tok_pack *tp, float *y,
                             int64_t ldy)
{
    const q_geom g = Q_GEOM(kind);
    __m512 acc[TOK8 / 2];
    for (int k = 0; k < TOK8 / 2; k++)
        acc[k] = _mm512_setzero_ps();
    __m256 summs = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + g.wblk * (size_t)b;
        const uint8_t *aq = tp->qs + 256 * (size_t)b;
        __m256i sgn;
        const __m512i w5 = _mm512_broadcast_i64x4(wprep256(kind, x, &sgn));
        const __m128 dm = _mm_cvtph_ps(HAS_MIN(kind) ? load_u32(x) : load_u16(x)); /* d_w, m_w */
        /* d_w*d_a of the eight tokens, then spread: pair k's vector is [dd[2k] x 8 | dd[2k+1] x 8] */
        const __m512 dd8 =
            _mm512_castps256_ps512(_mm256_mul_ps(_mm256_broadcastss_ps(dm), _mm256_load_ps(tp->da + 8 * b)));
        if (HAS_MIN(kind))
            summs = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), _mm256_load_ps(tp->sa + 8 * b),
                                    summs);
#pragma GCC unroll 4
        for (int k = 0; k < NT / 2; k++) {
            const __m512i init = kind == K_Q5_0 ? _mm512_loadu_si512(tp->no + 256 * (size_t)b + 64 * (size_t)k)
                                                : _mm512_setzero_si512();
            const __m512i p = _mm512_dpbusd_epi32(init, w5, _mm512_loadu_si512(aq + 64 * k));
            const __m512 dd = _mm512_permutexvar_ps(
                _mm512_set_epi32(2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1,
                                 2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k),
                dd8);
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), dd, acc[k]);
        }
    }
    __m128 r[TOK8];
    for (int t = 0; t < TOK8; t++) {
        const __m256 a = t & 1 ? _mm512_extractf32x8_ps(acc[t / 2], 1) : _mm512_castps512_ps256(acc[t / 2]);
        r[t] = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
    }
    __m128 lo = hsum_r4(r[0], r[1], r[2], r[3]), hi = hsum_r4(r[4], r[5], r[6], r[7]);
    if (HAS_MIN(kind)) {
        lo = _mm_add_ps(lo, _mm256_castps256_ps128(summs));
        hi = _mm_add_ps(hi, _mm256_extractf128_ps(summs, 1));
    }
    _Alignas(32) float res[TOK8];
    _mm_store_ps(res, lo);
    _mm_store_ps(res + 4, hi);
    for (int t = 0; t < NT; t++)
        y[t * ldy] = res[t];
}

/* ROW_LANES rows × 1 token like q_row4, each (row, token) pair's eight lanes in one __m256 as in
 * the prompt tiles: the activation block is loaded once for the four rows, d_w*d_a of the four
 * read back as broadcasts from memory. Not for Q4_0 (q_row4's one chain). */
AVX2_INLINE __m128 q_row4_256(const int kind, const int vnni, const uint8_t *const wr[ROW_LANES],
                              const prefetch_plan *pp, int64_t nb, const uint8_t *a, size_t tail_off)
{
    const q_geom g = Q_GEOM(kind);
    const uint8_t *tail = a + tail_off;
    const size_t tstride = HAS_MIN(kind) ? 8 : 4;
    const uint8_t *lanes = a + (kind == K_Q5_0 ? quant_q4_0_lane_off(nb) : 0);
    __m256 acc[ROW_LANES];
    for (int k = 0; k < ROW_LANES; k++)
        acc[k] = _mm256_setzero_ps();
    __m128 summs = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const float *ts = (const float *)(tail + tstride * (size_t)b);
        const size_t wo = g.wblk * (size_t)b;
        prefetch_step(pp, b);
        __m128 d4, m4 = _mm_setzero_ps();
        if (HAS_MIN(kind))
            gather_dm4(wr[0] + wo, wr[1] + wo, wr[2] + wo, wr[3] + wo, &d4, &m4);
        else
            d4 = gather_d4(wr[0] + wo, wr[1] + wo, wr[2] + wo, wr[3] + wo);
        if (HAS_MIN(kind))
            summs = _mm_fmadd_ps(m4, _mm_broadcast_ss(ts + 1), summs);
        _Alignas(16) float ddm[ROW_LANES];
        _mm_store_ps(ddm, _mm_mul_ps(d4, _mm_broadcast_ss(ts))); /* d_w*d_a per row */
        __asm__("" : "+m"(ddm));
        const __m256i av = load256(a + g.ablk * (size_t)b + g.aqs);
        /* Q5_0: -16 = twice Q4_0's -8 per lane, the starting value */
        const __m256i init = kind == K_Q5_0
                                 ? _mm256_sub_epi32(_mm256_setzero_si256(),
                                                    _mm256_slli_epi32(load256(lanes + 32 * (size_t)b), 1))
                                 : _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int k = 0; k < ROW_LANES; k++) {
            __m256i sgn = _mm256_setzero_si256();
            const __m256i wv = wprep256(kind, wr[k] + wo, &sgn);
            const __m256i p = dot_u8s8(vnni, init, wv, SIGNED_W(kind) ? _mm256_sign_epi8(av, sgn) : av);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(ddm + k), acc[k]);
        }
    }
    __m128 r[ROW_LANES];
    for (int k = 0; k < ROW_LANES; k++)
        r[k] = _mm_add_ps(_mm256_extractf128_ps(acc[k], 1), _mm256_castps256_ps128(acc[k]));
    __m128 res = hsum_r4(r[0], r[1], r[2], r[3]);
    if (HAS_MIN(kind))
        res = _mm_add_ps(res, summs);
    return res;
}

/* ---- Q6_K weights × Q8_K activations ------------------------------------------------------ */

/* The 32 unsigned 6-bit quants (0..63) of group g (elements 32g..32g+31) of a Q6_K block. */
AVX2_INLINE __m256i q6_group(const block_q6_K *x, int g)
{
    const int h = g / 4, k = g % 4;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
    const __m256i l = load256(x->ql + 64 * h + 32 * (k & 1));
    const __m256i low = k < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(load256(x->qh + 32 * h), 2 * k), m3);
    return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
}

/* Scales 2g (elements 32g..32g+15) and 2g+1 as int16 lanes matching maddubs' output. */
AVX2_INLINE __m256i q6_scales(__m128i sc8, int g)
{
    const __m128i pick = _mm_set_epi64x((long long)(0x0101010101010101ULL * (uint64_t)(2 * g + 1)),
                                        (long long)(0x0101010101010101ULL * (uint64_t)(2 * g)));
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
}

/* The -32 offset of every quant, taken back through the activation's per-16 sums. */
AVX2_INLINE __m256i q6_offset(__m128i sc8, const block_q8_K *y)
{
    const __m256i bs = load256(y->bsums);
    return _mm256_slli_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bs), 5);
}

/* One row × 4 tokens, lanes are tokens; the weights are unpacked once for the four. */
AVX2_INLINE void q6_tok4(const uint8_t *w, int64_t nb, const uint8_t *const a[4], int T, float *y, int64_t ldy)
{
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const block_q6_K *x = (const block_q6_K *)w + b;
        const block_q8_K *ya[4];
        for (int t = 0; t < 4; t++)
            ya[t] = (const block_q8_K *)a[t] + b;
        const __m128i sc8 = load128(x->scales);
        __m256i sum[4];
        for (int t = 0; t < 4; t++)
            sum[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const __m256i q = q6_group(x, g), sc = q6_scales(sc8, g);
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                const __m256i p = _mm256_maddubs_epi16(q, load256(ya[t]->qs + 32 * g));
                sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, sc));
            }
        }
        __m128i s[4];
        for (int t = 0; t < 4; t++)
            s[t] = fold_i32(_mm256_sub_epi32(sum[t], q6_offset(sc8, ya[t])));
        const __m128i S = reduce4_i32(s[0], s[1], s[2], s[3]);
        const __m128 da4 = _mm_setr_ps(ya[0]->d, ya[1]->d, ya[2]->d, ya[3]->d);
        const __m128 r = _mm_mul_ps(_mm_set1_ps(h2f(x->d)), _mm_cvtepi32_ps(S));
        acc = _mm_fmadd_ps(r, da4, acc);
    }
    store_lanes(acc, y, ldy, T);
}

/* ---- Q4_K / Q5_K weights × Q8_K activations ------------------------------------------------ */

/* NR rows × NT tokens (NR * NT <= 4: one row × 4 tokens for prompts, 4 rows × 1 token for
 * decoding; wr[] and a[] may repeat) in llama.cpp's orders (quant_impl.h). Per super-block and
 * (row, token) pair p, eight int32 lanes (maddubs, then madd with the sub-block's scale) are
 * reduced to exact sums four pairs to a vector (lane p), and the float chains run on those
 * vectors: Q4_K folds each 64-element chunk c in (S1_c = sc*P of sub-blocks 2c and 2c+1,
 * S2_c = m*S of the same, both exact); Q5_K the whole super-block. Each weight sub-block is
 * unpacked once for the NT tokens, each activation group loaded once for the NR rows.
 * out[r * NT + t] gets pair (r, t)'s result. */
AVX2_INLINE void k_tile(const int five, const int NR, const int NT, const uint8_t *const wr[4], int64_t nb,
                        const uint8_t *const a[4], float *out)
{
    const size_t bsize = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m128 acc = _mm_setzero_ps(), accm = _mm_setzero_ps(); /* lane p: pair p */
    for (int64_t b = 0; b < nb; b++) {
        float dw[4], mw[4];
        _Alignas(16) uint8_t scb[4][16]; /* 8 scales | 8 mins per row */
        const uint8_t *qs[4];
        __m256i hb[4];
        for (int r = 0; r < NR; r++) {
            const uint8_t *x = wr[r] + bsize * (size_t)b;
            uint16_t dh, mh;
            memcpy(&dh, x, 2);
            memcpy(&mh, x + 2, 2);
            dw[r] = h2f(dh);
            mw[r] = h2f(mh);
            /* the 12 scale bytes to 8 scales | 8 mins (llama.cpp's utmp shuffle) */
            uint32_t utmp[4];
            memcpy(utmp, x + 4, K_SCALE_SIZE);
            utmp[3] = ((utmp[2] >> 4) & 0x0f0f0f0fu) | (((utmp[1] >> 6) & 0x03030303u) << 4);
            const uint32_t uaux = utmp[1] & 0x3f3f3f3fu;
            utmp[1] = (utmp[2] & 0x0f0f0f0fu) | (((utmp[0] >> 6) & 0x03030303u) << 4);
            utmp[2] = uaux;
            utmp[0] &= 0x3f3f3f3fu;
            memcpy(scb[r], utmp, 16);
            const uint8_t *qh = x + 4 + K_SCALE_SIZE;
            qs[r] = five ? qh + QK_K / 8 : qh;
            hb[r] = five ? load256(qh) : _mm256_setzero_si256();
        }
        const block_q8_K *ya[4];
        _Alignas(16) float dwp[4] = {0}, mwp[4] = {0}, dap[4] = {0};
        for (int t = 0; t < NT; t++)
            ya[t] = (const block_q8_K *)a[t] + b;
        for (int r = 0; r < NR; r++) {
            for (int t = 0; t < NT; t++) {
                dwp[r * NT + t] = dw[r];
                mwp[r * NT + t] = mw[r];
                dap[r * NT + t] = ya[t]->d;
            }
        }
        const __m128 dw4 = _mm_load_ps(dwp), mw4 = _mm_load_ps(mwp), da4 = _mm_load_ps(dap);
        const __m128 dd4 = _mm_mul_ps(dw4, da4); /* Q4_K: d_w*d_a per pair */
        __m256i sumi[4];
        for (int p = 0; p < 4; p++)
            sumi[p] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m256i q[4], sc[4];
            for (int r = 0; r < NR; r++) {
                const __m256i l = load256(qs[r] + 32 * (s / 2));
                q[r] = (s & 1) ? _mm256_and_si256(_mm256_srli_epi16(l, 4), m4) : _mm256_and_si256(l, m4);
                if (five) {
                    const __m256i h = _mm256_and_si256(_mm256_srl_epi16(hb[r], _mm_cvtsi32_si128(s)), one);
                    q[r] = _mm256_or_si256(q[r], _mm256_slli_epi16(h, 4));
                }
                sc[r] = _mm256_set1_epi16((short)scb[r][s]);
            }
            for (int t = 0; t < NT; t++) {
                const __m256i av = load256(ya[t]->qs + 32 * s);
                for (int r = 0; r < NR; r++) {
                    const __m256i pr = _mm256_maddubs_epi16(q[r], av);
                    sumi[r * NT + t] = _mm256_add_epi32(sumi[r * NT + t], _mm256_madd_epi16(pr, sc[r]));
                }
            }
            if (!five && (s & 1)) { /* end of chunk s/2: fold it into Q4_K's chain */
                const __m128i S1 = reduce4_i32_256(sumi[0], sumi[1], sumi[2], sumi[3]);
                acc = _mm_fmadd_ps(_mm_cvtepi32_ps(S1), dd4, acc);
                for (int p = 0; p < 4; p++)
                    sumi[p] = _mm256_setzero_si256();
            }
        }
        /* The mins: lane c of m2[p] = m[2c]*S[2c] + m[2c+1]*S[2c+1] for pair p. */
        __m128i m2[4];
        for (int p = NR * NT; p < 4; p++)
            m2[p] = _mm_setzero_si128();
        for (int t = 0; t < NT; t++) {
            const __m256i bs = load256(ya[t]->bsums);
            const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            for (int r = 0; r < NR; r++) {
                const __m128i mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(scb[r] + 8)));
                m2[r * NT + t] = _mm_madd_epi16(mins16, q8s);
            }
        }
        if (five) {
            const __m128 S1 = _mm_cvtepi32_ps(reduce4_i32_256(sumi[0], sumi[1], sumi[2], sumi[3]));
            const __m128 S2 = _mm_cvtepi32_ps(reduce4_i32(m2[0], m2[1], m2[2], m2[3]));
            const __m128 r = _mm_fnmadd_ps(mw4, S2, _mm_mul_ps(dw4, S1));
            acc = _mm_fmadd_ps(r, da4, acc);
        } else {
            /* transpose: chunk c's vector holds the four pairs' lane c */
            __m128 c0 = _mm_castsi128_ps(m2[0]), c1 = _mm_castsi128_ps(m2[1]);
            __m128 c2 = _mm_castsi128_ps(m2[2]), c3 = _mm_castsi128_ps(m2[3]);
            _MM_TRANSPOSE4_PS(c0, c1, c2, c3);
            const __m128 dm4 = _mm_mul_ps(mw4, da4);
            accm = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_castps_si128(c0)), dm4, accm);
            accm = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_castps_si128(c1)), dm4, accm);
            accm = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_castps_si128(c2)), dm4, accm);
            accm = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_castps_si128(c3)), dm4, accm);
        }
    }
    _Alignas(16) float res[4];
    _mm_store_ps(res, five ? acc : _mm_sub_ps(acc, accm));
    for (int p = 0; p < NR * NT; p++)
        out[p] = res[p];
}

/* ---- Q4_K decoding: 8 rows × 1 token, lanes are rows ---------------------------------------- */

/* Rows of the Q4_K single-token tile. */
#define Q4K_ROWS 8

/* The 8-row K-quant tiles prefetch each row's super-block this many ahead: eight interleaved
 * row streams outrun the hardware prefetcher; measured on this Xeon (one thread, weights
 * streamed from DRAM) Q4_K 6.2 -> 7.0-8.6 GB/s and Q6_K 7.1 -> 7.9-8.4 GB/s, where prefetching
 * the next whole tile (the Q8_0 tiles' scheme) gained nothing and 1 or 8 blocks ahead lost. */
#define PF_BLOCKS 2

/* The 8 scales | 8 mins of a Q4_K / Q5_K super-block as 16 bytes (get_scale_min_k4 for
 * j = 0..7), from the 12 scale bytes at p (16 bytes are read; the block goes on after them). */
AVX2_INLINE __m128i k_scales_mins(const uint8_t *p)
{
    const __m128i u = load128(p); /* u0 u1 u2 (junk) */
    const __m128i A = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0)); /* u0 u2 u1 u2 */
    const __m128i B = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0)); /* u0 u0 u1 u1 */
    const __m128i lo6 = _mm_and_si128(_mm_srlv_epi32(A, _mm_setr_epi32(0, 0, 0, 4)),
                                      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i hi2 = _mm_and_si128(_mm_srli_epi32(B, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo6, hi2);
}

/* In-lane 4×4 transpose of four 8-lane int32 vectors, to floats: out[c] lane k = in[k] lane c
 * (for each 128-bit half). */
AVX2_INLINE void transpose4_cvt(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256 out[4])
{
    const __m256i t0 = _mm256_unpacklo_epi32(v0, v1), t1 = _mm256_unpacklo_epi32(v2, v3);
    const __m256i t2 = _mm256_unpackhi_epi32(v0, v1), t3 = _mm256_unpackhi_epi32(v2, v3);
    out[0] = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(t0, t1));
    out[1] = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(t0, t1));
    out[2] = _mm256_cvtepi32_ps(_mm256_unpacklo_epi64(t2, t3));
    out[3] = _mm256_cvtepi32_ps(_mm256_unpackhi_epi64(t2, t3));
}

/* Q4_K_ROWS rows (pointers, repeats allowed) × one token in quant_impl.h's Q4_K order; lane r
 * of the result is row r. Per super-block and row, the four chunk sums S1_c (sc*P of
 * sub-blocks 2c and 2c+1) come out of one hadd tree and the four min sums S2_c out of one madd
 * with the activation's sub-block sums; both are transposed so lane r is row r, and the eight
 * rows' float chains run together: acc = fma(S1_c, d_w*d_a, acc), accm = fma(S2_c,
 * dmin_w*d_a, accm) for c = 0..3, result acc - accm. Each row prefetches its own stream. */
AVX2_INLINE __m256 q4k_rows8(const uint8_t *const wr[Q4K_ROWS], int64_t nb, const uint8_t *a)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const block_q8_K *ya = (const block_q8_K *)a + b;
        const size_t wo = sizeof(block_q4_K) * (size_t)b;
        const __m256i bs = load256(ya->bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        __m256i S[Q4K_ROWS / 2], M[Q4K_ROWS / 2]; /* [row r | row r+4] */
        uint32_t dm[Q4K_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < Q4K_ROWS; r++) {
            const uint8_t *x = wr[r] + wo;
            if (b + PF_BLOCKS < nb) { /* this row's super-block PF_BLOCKS ahead */
                const char *pf = (const char *)(x + PF_BLOCKS * sizeof(block_q4_K));
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
                _mm_prefetch(pf + sizeof(block_q4_K) - 1, _MM_HINT_T0);
            }
            memcpy(&dm[r], x, 4);
            const __m128i sm = k_scales_mins(x + 4);
            const __m128i Mr = _mm_madd_epi16(_mm_unpackhi_epi8(sm, _mm_setzero_si128()), q8s);
            /* scale s as the int16 pair (sc, sc) in one int32, broadcast per sub-block */
            const __m256i sc32 = _mm256_cvtepu8_epi32(sm);
            _Alignas(32) int32_t scw[8];
            _mm256_store_si256((__m256i *)scw, _mm256_or_si256(sc32, _mm256_slli_epi32(sc32, 16)));
            /* read back from memory: a broadcast load is a load-port uop, a broadcast from a
             * register (what the compiler would make of it) a shuffle-port one */
            __asm__("" : "+m"(scw));
            const uint8_t *qs = x + 4 + K_SCALE_SIZE;
            __m256i C[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                const __m256i q = load256(qs + 32 * c);
                const __m256i pl = _mm256_maddubs_epi16(_mm256_and_si256(q, m4), load256(ya->qs + 64 * c));
                const __m256i ph = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                                        load256(ya->qs + 64 * c + 32));
                C[c] = _mm256_add_epi32(_mm256_madd_epi16(pl, _mm256_set1_epi32(scw[2 * c])),
                                        _mm256_madd_epi16(ph, _mm256_set1_epi32(scw[2 * c + 1])));
            }
            /* lane c: chunk c's sum over the half's four lanes; the halves added */
            const __m256i H = _mm256_hadd_epi32(_mm256_hadd_epi32(C[0], C[1]), _mm256_hadd_epi32(C[2], C[3]));
            const __m128i Sr = _mm_add_epi32(_mm256_castsi256_si128(H), _mm256_extracti128_si256(H, 1));
            if (r < Q4K_ROWS / 2) {
                S[r] = _mm256_castsi128_si256(Sr);
                M[r] = _mm256_castsi128_si256(Mr);
            } else {
                S[r - 4] = _mm256_inserti128_si256(S[r - 4], Sr, 1);
                M[r - 4] = _mm256_inserti128_si256(M[r - 4], Mr, 1);
            }
        }
        /* d and dmin of the eight rows: fp16 pairs to [d0..d3 m0..m3 | d4..d7 m4..m7] */
        const __m256i dmv = _mm256_setr_epi32((int)dm[0], (int)dm[1], (int)dm[2], (int)dm[3], (int)dm[4],
                                              (int)dm[5], (int)dm[6], (int)dm[7]);
        const __m256i dmp = _mm256_packus_epi32(_mm256_and_si256(dmv, _mm256_set1_epi32(0xffff)),
                                                _mm256_srli_epi32(dmv, 16));
        /* rows 0..3 sit in the low half, 4..7 in the high half of each chunk vector: order the
         * scales the same way ([r0..r3 | r4..r7] is the natural order) */
        const __m256i dq = _mm256_permute4x64_epi64(dmp, _MM_SHUFFLE(3, 1, 2, 0)); /* d0..7 | m0..7 */
        const __m256 da = _mm256_set1_ps(ya->d);
        const __m256 dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(dq)), da);
        const __m256 dmn = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(dq, 1)), da);
        __m256 Sc[4], Mc[4];
        transpose4_cvt(S[0], S[1], S[2], S[3], Sc);
        transpose4_cvt(M[0], M[1], M[2], M[3], Mc);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            acc = _mm256_fmadd_ps(Sc[c], dd, acc);
            accm = _mm256_fmadd_ps(Mc[c], dmn, accm);
        }
    }
    return _mm256_sub_ps(acc, accm);
}

/* ---- Q4_K prompt tiles: one row × 8 tokens, lanes are tokens ------------------------------ */

/* The packed group of a Q8_K activation (tok_pack_at for K_Q4_K), per super-block b:
 *   qs[2048b + 32g + 4t ..] = token t's quants 4g..4g+3 (the 64 four-byte groups interleaved by
 *   token, so one vector holds a group for all eight tokens); da[8b + t] = d_a;
 *   ot[32b + 8c + t] = token t's sub-block sums S[2c] | S[2c+1] << 16 (int16 pairs from bsums). */
AVX2_INLINE void q4k_pack_rows(const uint8_t *const a[TOK8], int NT, int64_t nb, const tok_pack *tp)
{
    if (NT < TOK8)
        memset(tp->qs, 0, tok_pack_bytes(K_Q4_K, nb));
    for (int t = 0; t < NT; t++) {
        for (int64_t b = 0; b < nb; b++) {
            const block_q8_K *ya = (const block_q8_K *)a[t] + b;
            uint8_t *q = tp->qs + 2048 * (size_t)b + 4 * (size_t)t;
            for (int g = 0; g < 64; g++)
                memcpy(q + 32 * g, ya->qs + 4 * g, 4);
            tp->da[8 * b + t] = ya->d;
            for (int c = 0; c < 4; c++) {
                const int16_t s0 = (int16_t)(ya->bsums[4 * c] + ya->bsums[4 * c + 1]);
                const int16_t s1 = (int16_t)(ya->bsums[4 * c + 2] + ya->bsums[4 * c + 3]);
                tp->ot[32 * b + 8 * c + t] = (int32_t)(uint16_t)s0 | (int32_t)((uint32_t)(uint16_t)s1 << 16);
            }
        }
    }
}

/* One Q4_K row × NT tokens of a packed group in quant_impl.h's Q4_K order, the eight tokens'
 * chains in the lanes of one __m256: per sub-block the exact sums P of all eight tokens come out
 * of eight u8×s8 dot products of a broadcast four-byte weight group with the interleaved
 * activation groups (no horizontal reductions); S1_c = sc[2c]*P[2c] + sc[2c+1]*P[2c+1] and the
 * min sums (one madd of the packed int16 sub-block sums) follow, then acc = fma(S1_c, d_w*d_a,
 * acc), accm = fma(S2_c, dmin_w*d_a, accm) for c = 0..3. */
AVX2_INLINE void q4k_tokn(const int vnni, const int NT, const uint8_t *w, int64_t nb, const tok_pack *tp, float *y,
                          int64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = w + sizeof(block_q4_K) * (size_t)b;
        const uint8_t *aq = tp->qs + 2048 * (size_t)b;
        const __m128 dmw = _mm_cvtph_ps(load_u32(x)); /* d_w, dmin_w */
        const __m256 da = _mm256_load_ps(tp->da + 8 * b);
        const __m256 dd = _mm256_mul_ps(_mm256_broadcastss_ps(dmw), da);
        const __m256 dm = _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dmw)), da);
        _Alignas(16) uint8_t scm[16]; /* 8 scales | 8 mins */
        _mm_store_si128((__m128i *)scm, k_scales_mins(x + 4));
        const uint8_t *qs = x + 4 + K_SCALE_SIZE;
#pragma GCC unroll 1
        for (int c = 0; c < 4; c++) {
            const __m256i q = load256(qs + 32 * c);
            /* the unpacked sub-blocks go through memory: a four-byte broadcast from memory is a
             * load-port uop, from a register a shuffle */
            _Alignas(32) uint8_t u[64];
            _mm256_store_si256((__m256i *)u, _mm256_and_si256(q, m4));
            _mm256_store_si256((__m256i *)(u + 32), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
            __asm__("" : "+m"(u));
            __m256i P0 = _mm256_setzero_si256(), P1 = _mm256_setzero_si256();
            const uint8_t *ag = aq + 32 * 16 * (size_t)c;
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                int32_t w0, w1;
                memcpy(&w0, u + 4 * g, 4);
                memcpy(&w1, u + 32 + 4 * g, 4);
                P0 = dot_u8s8(vnni, P0, _mm256_set1_epi32(w0), load256(ag + 32 * g));
                P1 = dot_u8s8(vnni, P1, _mm256_set1_epi32(w1), load256(ag + 32 * (8 + g)));
            }
            const __m256i S1 = _mm256_add_epi32(_mm256_mullo_epi32(P0, _mm256_set1_epi32(scm[2 * c])),
                                                _mm256_mullo_epi32(P1, _mm256_set1_epi32(scm[2 * c + 1])));
            const __m256i S2 = _mm256_madd_epi16(load256(tp->ot + 32 * b + 8 * c),
                                                 _mm256_set1_epi32(scm[8 + 2 * c] | scm[8 + 2 * c + 1] << 16));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S1), dd, acc);
            accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S2), dm, accm);
        }
    }
    _Alignas(32) float res[TOK8];
    _mm256_store_ps(res, _mm256_sub_ps(acc, accm));
    for (int t = 0; t < NT; t++)
        y[t * ldy] = res[t];
}

/* ---- row drivers for the quantised types -------------------------------------------------- */

/* Rows [ra, rb) of W against four activation rows (repeats allowed), results for the first T
 * tokens; y points at token 0, row 0. */
typedef void (*tok4_fn)(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,
                        const uint8_t *const a[4], size_t tail_off, int T, float *y, int64_t ldy);
/* Rows [ra, rb) of W against one activation row; y points at that token's row 0. */
typedef void (*row_fn)(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const uint8_t *a,
                       size_t tail_off, float *y);

/* Row pointers for lanes starting at row r, the last valid row repeated past rb. */
static inline void lane_rows(const uint8_t *W, size_t wrow, int64_t r, int64_t rb, int n, const uint8_t **wr)
{
    for (int j = 0; j < n; j++)
        wr[j] = W + (size_t)(r + j < rb ? r + j : rb - 1) * wrow;
}

/* Scale buffer for act_scales4: blocks per stack chunk (rows longer than this fall back to a
 * heap buffer, or to the single-token path if that fails). */
#define SC_STACK_BLOCKS 256

#define DEFINE_Q_TOK4(name, kind)                                                                 \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,       \
                          const uint8_t *const a[4], size_t tail_off, int T, float *y, int64_t ldy)  \
    {                                                                                              \
        _Alignas(32) float stack_sc[8 * SC_STACK_BLOCKS];                                          \
        float *sc = nb <= SC_STACK_BLOCKS ? stack_sc : malloc(sizeof(float) * 8 * (size_t)nb);     \
        if (!sc) {                                                                                 \
            for (int t = 0; t < T; t++)                                                            \
                name##_row1(W, wrow, nb, ra, rb, a[t], tail_off, y + t * ldy);                     \
            return;                                                                                \
        }                                                                                          \
        const uint8_t *tl[4] = {a[0] + tail_off, a[1] + tail_off, a[2] + tail_off, a[3] + tail_off}; \
        act_scales4(kind, tl, nb, sc);                                                             \
        for (int64_t r = ra; r < rb; r++)                                                          \
            q_tok4(kind, W + (size_t)r * wrow, nb, a, sc, T, y + r, ldy);                          \
        if (sc != stack_sc)                                                                        \
            free(sc);                                                                              \
    }

AVX2 static void tok4_q6_K(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,
                           const uint8_t *const a[4], size_t tail_off, int T, float *y, int64_t ldy)
{
    (void)tail_off;
    for (int64_t r = ra; r < rb; r++)
        q6_tok4(W + (size_t)r * wrow, nb, a, T, y + r, ldy);
}

/* The prefetch plan for the tile after the one at row r. */
static inline prefetch_plan next_tile(const uint8_t *W, size_t wrow, int64_t nb, int64_t r, int64_t rb)
{
    const int64_t n = rb - r - ROW_LANES < ROW_LANES ? rb - r - ROW_LANES : ROW_LANES;
    if (n <= 0 || nb <= 0)
        return (prefetch_plan){W, 0, 0, 0};
    const size_t step = (size_t)ROW_LANES * (wrow / (size_t)nb);
    return (prefetch_plan){W + (size_t)(r + ROW_LANES) * wrow, step, (size_t)n * wrow - 1, (int)((step + 63) / 64)};
}

/* Stores the lanes of an 8-row tile that are real rows. */
AVX2_INLINE void store_rows8(__m256 acc, float *y, int64_t r, int64_t rb)
{
    if (r + 8 <= rb) {
        _mm256_storeu_ps(y + r, acc);
        return;
    }
    _Alignas(32) float out[8];
    _mm256_store_ps(out, acc);
    for (int k = 0; r + k < rb; k++)
        y[r + k] = out[k];
}

/* Stores the lanes of a row tile that are real rows. */
AVX2_INLINE void store_rows(const __m128 *acc, int nvec, float *y, int64_t r, int64_t rb)
{
    if (r + 4 * nvec <= rb) {
        for (int h = 0; h < nvec; h++)
            _mm_storeu_ps(y + r + 4 * h, acc[h]);
        return;
    }
    for (int h = 0; h < nvec; h++)
        if (r + 4 * h < rb)
            store_lanes(acc[h], y + r + 4 * h, 1, (int)(rb - r - 4 * h < 4 ? rb - r - 4 * h : 4));
}

#define DEFINE_Q_ROW(name, kind)                                                                 \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,      \
                          const uint8_t *a, size_t tail_off, float *y)                            \
    {                                                                                             \
        const bool vnni = quant_cpu_has_avx_vnni();                                               \
        for (int64_t r = ra; r < rb; r += ROW_LANES) {                                            \
            const uint8_t *wr[ROW_LANES];                                                         \
            lane_rows(W, wrow, r, rb, ROW_LANES, wr);                                             \
            const prefetch_plan pp = next_tile(W, wrow, nb, r, rb);                               \
            const __m128 acc = kind == K_Q4_0 ? q_row4(kind, wr, &pp, nb, a, tail_off)            \
                               : vnni         ? q_row4_256(kind, 1, wr, &pp, nb, a, tail_off)     \
                                              : q_row4_256(kind, 0, wr, &pp, nb, a, tail_off);    \
            store_rows(&acc, 1, y, r, rb);                                                        \
        }                                                                                         \
    }

DEFINE_Q_ROW(row_q4_0, K_Q4_0)
DEFINE_Q_ROW(row_q4_1, K_Q4_1)
DEFINE_Q_ROW(row_q8_0, K_Q8_0)

#define tok4_q4_0_row1 row_q4_0
#define tok4_q4_1_row1 row_q4_1
#define tok4_q8_0_row1 row_q8_0
DEFINE_Q_TOK4(tok4_q4_0, K_Q4_0)
DEFINE_Q_TOK4(tok4_q4_1, K_Q4_1)
DEFINE_Q_TOK4(tok4_q8_0, K_Q8_0)

/* The packed-group tiles of one kind: pack NT (8, 4 or 2) tokens, and rows [ra, rb) against
 * a packed group; y points at token 0, row 0. */
typedef struct tokn_kind {
    int kind;
    void (*pack)(const uint8_t *const a[TOK8], int NT, size_t tail_off, int64_t nb, const tok_pack *tp);
    void (*rows)(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const tok_pack *tp, int NT,
                 float *y, int64_t ldy);
} tokn_kind;

#define DEFINE_TOKN_ROWS(name, kind, vnni)                                                         \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,        \
                          const tok_pack *tp, int NT, float *y, int64_t ldy)                        \
    {                                                                                               \
        for (int64_t r = ra; r < rb; r++) {                                                         \
            if (NT == 8)                                                                            \
                q_tokn(kind, vnni, 8, W + (size_t)r * wrow, nb, tp, y + r, ldy);                    \
            else if (NT == 4)                                                                       \
                q_tokn(kind, vnni, 4, W + (size_t)r * wrow, nb, tp, y + r, ldy);                    \
            else                                                                                    \
                q_tokn(kind, vnni, 2, W + (size_t)r * wrow, nb, tp, y + r, ldy);                    \
        }                                                                                           \
    }
#define DEFINE_TOKN_ROWS512(name, kind)                                                             \
    AVX512 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,      \
                            const tok_pack *tp, int NT, float *y, int64_t ldy)                      \
    {                                                                                               \
        for (int64_t r = ra; r < rb; r++) {                                                         \
            if (NT == 8)                                                                            \
                q_tokn512(kind, 8, W + (size_t)r * wrow, nb, tp, y + r, ldy);                       \
            else if (NT == 4)                                                                       \
                q_tokn512(kind, 4, W + (size_t)r * wrow, nb, tp, y + r, ldy);                       \
            else                                                                                    \
                q_tokn512(kind, 2, W + (size_t)r * wrow, nb, tp, y + r, ldy);                       \
        }                                                                                           \
    }
#define DEFINE_TOKN512(name, kind)            \
    DEFINE_TOKN_ROWS512(name##_rows512, kind) \
    static const tokn_kind name##_512 = {kind, name##_pack, name##_rows512};
#define DEFINE_TOKN(name, kind)                                                                    \
    AVX2 static void name##_pack(const uint8_t *const a[TOK8], int NT, size_t tail_off, int64_t nb, \
                                 const tok_pack *tp)                                                \
    {                                                                                               \
        tok_pack_rows(kind, a, NT, tail_off, nb, tp);                                               \
    }                                                                                               \
    DEFINE_TOKN_ROWS(name##_rows, kind, 0)                                                          \
    DEFINE_TOKN_ROWS(name##_rows_vnni, kind, 1)                                                     \
    static const tokn_kind name = {kind, name##_pack, name##_rows};                                 \
    static const tokn_kind name##_vnni = {kind, name##_pack, name##_rows_vnni};

DEFINE_TOKN(tokn_q4_0, K_Q4_0)
DEFINE_TOKN(tokn_q4_1, K_Q4_1)
DEFINE_TOKN(tokn_q8_0, K_Q8_0)
DEFINE_TOKN(tokn_q5_0, K_Q5_0)
DEFINE_TOKN(tokn_q5_1, K_Q5_1)
#define DEFINE_TOKN_Q4K(name, vnni)                                                               \
    AVX2 static void name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,        \
                          const tok_pack *tp, int NT, float *y, int64_t ldy)                        \
    {                                                                                               \
        for (int64_t r = ra; r < rb; r++)                                                           \
            q4k_tokn(vnni, NT, W + (size_t)r * wrow, nb, tp, y + r, ldy);                           \
    }
AVX2 static void tokn_q4_K_pack(const uint8_t *const a[TOK8], int NT, size_t tail_off, int64_t nb, const tok_pack *tp)
{
    (void)tail_off;
    q4k_pack_rows(a, NT, nb, tp);
}
DEFINE_TOKN_Q4K(tokn_q4_K_rows, 0)
DEFINE_TOKN_Q4K(tokn_q4_K_rows_vnni, 1)
static const tokn_kind tokn_q4_K = {K_Q4_K, tokn_q4_K_pack, tokn_q4_K_rows};
static const tokn_kind tokn_q4_K_vnni = {K_Q4_K, tokn_q4_K_pack, tokn_q4_K_rows_vnni};

DEFINE_TOKN512(tokn_q4_1, K_Q4_1)
DEFINE_TOKN512(tokn_q5_0, K_Q5_0)
DEFINE_TOKN512(tokn_q5_1, K_Q5_1)

/* Tokens [t0, t1) of W's rows [r0, r1) through the packed-group tiles: per TOK_BLOCK tokens,
 * groups of 8 tokens are packed once and every weight chunk (L1-resident) is run against each
 * group; the 1-7 tokens left take the few-token kernels (quant_fewtok_avx2.c: 2-4 tokens per
 * pass over the weights, unpacked once) where the type has one, else the single-token row tile
 * one at a time. Packed groups of 2 or 4 were slower per token than the row tile (decode at
 * batch 2: 110 -> 148 tok/s and batch 4: 138 -> 169 tok/s on SmolLM2-135M Q4_1 without them;
 * bench/RESULTS.md), and every path computes llama.cpp's bits, so the choice changes speed
 * only. False (nothing written) when the pack buffer cannot be allocated. */
AVX2 static bool matmul_tokn(const tokn_kind *tk, row_fn row, quant_fewtok_fn few, const uint8_t *W, size_t wrow,
                             int64_t nb, int64_t r0, int64_t r1, int64_t chunk, const uint8_t *act, size_t arow,
                             size_t tail_off, int64_t n_tok, float *y, int64_t ldy)
{
    enum { MAX_GROUPS = TOK_BLOCK / TOK8 };
    const size_t gb = (tok_pack_bytes(tk->kind, nb) + 31) & ~(size_t)31;
    const int64_t ngmax = (n_tok < TOK_BLOCK ? n_tok : TOK_BLOCK) / TOK8;
    uint8_t *buf = NULL; /* none for a decode step's 2-7 tokens: they need no packing */
    if (ngmax > 0 && !(buf = aligned_alloc(32, gb * (size_t)ngmax)))
        return false;
    for (int64_t tb = 0; tb < n_tok; tb += TOK_BLOCK) {
        const int64_t te = tb + TOK_BLOCK < n_tok ? tb + TOK_BLOCK : n_tok;
        tok_pack tp[MAX_GROUPS];
        int64_t gt[MAX_GROUPS];
        int gn[MAX_GROUPS], ng = 0;
        int64_t t = tb;
        while (te - t >= TOK8) {
            const int NT = TOK8;
            const uint8_t *a[TOK8];
            for (int k = 0; k < NT; k++)
                a[k] = act + (size_t)(t + k) * arow;
            tp[ng] = tok_pack_at(tk->kind, buf + gb * (size_t)ng, nb);
            tk->pack(a, NT, tail_off, nb, &tp[ng]);
            gt[ng] = t;
            gn[ng++] = NT;
            t += NT;
        }
        for (int64_t rc = r0; rc < r1; rc += chunk) {
            const int64_t re = rc + chunk < r1 ? rc + chunk : r1;
            for (int g = 0; g < ng; g++)
                tk->rows(W, wrow, nb, rc, re, &tp[g], gn[g], y + gt[g] * ldy, ldy);
            /* the 1-7 tokens left: the few-token kernels (quant_fewtok_avx2.c), then the row tile */
            int64_t u = few ? quant_fewtok_avx2_run(few, W, wrow, nb, rc, re, act, arow, tail_off, t, te, y, ldy) : t;
            for (; u < te; u++)
                row(W, wrow, nb, rc, re, act + (size_t)u * arow, tail_off, y + u * ldy);
        }
    }
    free(buf);
    return true;
}

/* Rows of the Q6_K single-token tile. */
#define Q6K_ROWS 8

/* Q6K_ROWS rows (pointers, repeats allowed) × one token, lanes are rows: per super-block and
 * row the exact int32 sum S (the -32 taken back through the activation's sub-block sums), then
 * r = d_w * S, acc = fma(r, d_a, acc) for the eight rows at once (quant_impl.h's Q6_K order).
 * Each row prefetches its own stream. */
AVX2_INLINE __m256 q6_rows8(const uint8_t *const wr[Q6K_ROWS], int64_t nb, const uint8_t *a)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    /* pshufb masks: int16 scale 2g' in the low half, 2g'+1 in the high half (g' = g % 4) */
    __m256i pick[4];
    for (int g = 0; g < 4; g++) {
        const int lo = 2 * (2 * g), hi = 2 * (2 * g + 1);
        pick[g] = _mm256_setr_epi8(lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo,
                                   lo + 1, lo, lo + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1,
                                   hi, hi + 1, hi, hi + 1, hi, hi + 1);
    }
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const block_q8_K *ya = (const block_q8_K *)a + b;
        const __m256i bs = load256(ya->bsums);
        __m256i T[Q6K_ROWS];
        uint16_t dh[Q6K_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < Q6K_ROWS; r++) {
            const block_q6_K *x = (const block_q6_K *)wr[r] + b;
            if (b + PF_BLOCKS < nb) { /* this row's super-block PF_BLOCKS ahead */
                const char *pf = (const char *)(x + PF_BLOCKS);
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
                _mm_prefetch(pf + 128, _MM_HINT_T0);
                _mm_prefetch(pf + sizeof(block_q6_K) - 1, _MM_HINT_T0);
            }
            memcpy(&dh[r], &x->d, 2);
            const __m256i sc16 = _mm256_cvtepi8_epi16(load128(x->scales));
            const __m256i scA = _mm256_permute2x128_si256(sc16, sc16, 0x00); /* scales 0..7 twice */
            const __m256i scB = _mm256_permute2x128_si256(sc16, sc16, 0x11); /* scales 8..15 twice */
            __m256i sum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5); /* the -32 offsets */
            sum = _mm256_sub_epi32(_mm256_setzero_si256(), sum);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i l0 = load256(x->ql + 64 * h), l1 = load256(x->ql + 64 * h + 32);
                const __m256i qh = load256(x->qh + 32 * h);
                const __m256i sch = h ? scB : scA;
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const __m256i l = k & 1 ? l1 : l0;
                    const __m256i low = k < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
                    /* bits 2k, 2k+1 of qh moved to bits 4, 5 with one shift (none for k = 2) */
                    const __m256i hs = k == 0   ? _mm256_slli_epi16(qh, 4)
                                       : k == 1 ? _mm256_slli_epi16(qh, 2)
                                       : k == 2 ? qh
                                                : _mm256_srli_epi16(qh, 2);
                    const __m256i q = _mm256_or_si256(low, _mm256_and_si256(hs, m30));
                    const __m256i p = _mm256_maddubs_epi16(q, load256(ya->qs + 32 * (4 * h + k)));
                    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(sch, pick[k])));
                }
            }
            T[r] = sum;
        }
        const __m256i S = reduce8_i32(T);
        const __m128i d8 = _mm_setr_epi16((short)dh[0], (short)dh[1], (short)dh[2], (short)dh[3], (short)dh[4],
                                          (short)dh[5], (short)dh[6], (short)dh[7]);
        const __m256 r = _mm256_mul_ps(_mm256_cvtph_ps(d8), _mm256_cvtepi32_ps(S));
        acc = _mm256_fmadd_ps(r, _mm256_set1_ps(ya->d), acc);
    }
    return acc;
}

/* Q6_K, one token: tiles of Q6K_ROWS rows (the last one repeats its last row). */
AVX2 static void row_q6_K(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const uint8_t *a,
                          size_t tail_off, float *y)
{
    (void)tail_off;
    for (int64_t r = ra; r < rb; r += Q6K_ROWS) {
        const uint8_t *wr[Q6K_ROWS];
        lane_rows(W, wrow, r, rb, Q6K_ROWS, wr);
        store_rows8(q6_rows8(wr, nb, a), y, r, rb);
    }
}

DEFINE_Q_ROW(row_q5_0, K_Q5_0)
DEFINE_Q_ROW(row_q5_1, K_Q5_1)
#define tok4_q5_0_row1 row_q5_0
#define tok4_q5_1_row1 row_q5_1
DEFINE_Q_TOK4(tok4_q5_0, K_Q5_0)
DEFINE_Q_TOK4(tok4_q5_1, K_Q5_1)

#define DEFINE_K(name, five)                                                                      \
    AVX2 static void tok4_##name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, \
                                 const uint8_t *const a[4], size_t tail_off, int T, float *y,       \
                                 int64_t ldy)                                                       \
    {                                                                                               \
        (void)tail_off;                                                                             \
        for (int64_t r = ra; r < rb; r++) {                                                         \
            const uint8_t *const wr[4] = {W + (size_t)r * wrow, NULL, NULL, NULL};                  \
            float out[4];                                                                           \
            k_tile(five, 1, 4, wr, nb, a, out);                                                     \
            for (int t = 0; t < T; t++)                                                             \
                y[t * ldy + r] = out[t];                                                            \
        }                                                                                           \
    }

#define DEFINE_K_ROW(name, five)                                                                    \
    AVX2 static void row_##name(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,  \
                                const uint8_t *a, size_t tail_off, float *y)                        \
    {                                                                                               \
        (void)tail_off;                                                                             \
        const uint8_t *const aa[4] = {a, a, a, a};                                                  \
        for (int64_t r = ra; r < rb; r += 4) {                                                      \
            const uint8_t *wr[4];                                                                   \
            lane_rows(W, wrow, r, rb, 4, wr);                                                       \
            float out[4];                                                                           \
            k_tile(five, 4, 1, wr, nb, aa, out);                                                    \
            for (int k = 0; k < 4 && r + k < rb; k++)                                               \
                y[r + k] = out[k];                                                                  \
        }                                                                                           \
    }

DEFINE_K(q4_K, 0)
DEFINE_K(q5_K, 1)
DEFINE_K_ROW(q5_K, 1)

/* Q4_K, one token: tiles of Q4K_ROWS rows (the last one repeats its last row). */
AVX2 static void row_q4_K(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const uint8_t *a,
                          size_t tail_off, float *y)
{
    (void)tail_off;
    for (int64_t r = ra; r < rb; r += Q4K_ROWS) {
        const uint8_t *wr[Q4K_ROWS];
        lane_rows(W, wrow, r, rb, Q4K_ROWS, wr);
        store_rows8(q4k_rows8(wr, nb, a), y, r, rb);
    }
}

/* ---- F32 / F16 / BF16 × f32 -------------------------------------------------------------- */

/* Rows per float tile for T tokens: enough accumulators to hide FMA latency, few enough to
 * stay in the 16 vector registers. */
#define FLOAT_ROWS(T) ((T) == 1 ? 4 : 2)

AVX2_INLINE __m256 load8(gguf_dtype t, const uint8_t *p)
{
    if (t == GGUF_DTYPE_F32)
        return _mm256_loadu_ps((const float *)p);
    const __m128i h = load128(p);
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

AVX2_INLINE void tile_float(const gguf_dtype wt, const int R, const int T, const uint8_t *w, size_t wrow, int64_t n,
                            const uint8_t *act, size_t arow, float *y, int64_t ldy)
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
        /* each x loaded once for all R rows (256-bit loads are two uops on Zen); the empty
         * asm keeps the compiler from folding the load back into every fma */
        __m256 xv[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            xv[t] = _mm256_loadu_ps(x[t] + i);
            if (R > 1)
                __asm__("" : "+x"(xv[t]));
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 wv = load8(wt, w + (size_t)r * wrow + (size_t)i * es);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
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

typedef void (*float_rows_fn)(gguf_dtype wt, const uint8_t *W, size_t wrow, int64_t n, int64_t ra, int64_t rb,
                              const uint8_t *act, size_t arow, float *y, int64_t ldy);

#define DEFINE_FLOAT_ROWS(T)                                                                    \
    AVX2 static void float_rows_##T(gguf_dtype wt, const uint8_t *W, size_t wrow, int64_t n,    \
                                    int64_t ra, int64_t rb, const uint8_t *act, size_t arow,    \
                                    float *y, int64_t ldy)                                      \
    {                                                                                           \
        int64_t r = ra;                                                                         \
        for (; r + FLOAT_ROWS(T) <= rb; r += FLOAT_ROWS(T)) {                                   \
            if (wt == GGUF_DTYPE_F16)                                                           \
                tile_float(GGUF_DTYPE_F16, FLOAT_ROWS(T), T, W + (size_t)r * wrow, wrow, n, act, \
                           arow, y + r, ldy);                                                   \
            else if (wt == GGUF_DTYPE_BF16)                                                     \
                tile_float(GGUF_DTYPE_BF16, FLOAT_ROWS(T), T, W + (size_t)r * wrow, wrow, n,    \
                           act, arow, y + r, ldy);                                              \
            else                                                                                \
                tile_float(GGUF_DTYPE_F32, FLOAT_ROWS(T), T, W + (size_t)r * wrow, wrow, n, act, \
                           arow, y + r, ldy);                                                   \
        }                                                                                       \
        for (; r < rb; r++) {                                                                   \
            if (wt == GGUF_DTYPE_F16)                                                           \
                tile_float(GGUF_DTYPE_F16, 1, T, W + (size_t)r * wrow, wrow, n, act, arow,      \
                           y + r, ldy);                                                         \
            else if (wt == GGUF_DTYPE_BF16)                                                     \
                tile_float(GGUF_DTYPE_BF16, 1, T, W + (size_t)r * wrow, wrow, n, act, arow,     \
                           y + r, ldy);                                                         \
            else                                                                                \
                tile_float(GGUF_DTYPE_F32, 1, T, W + (size_t)r * wrow, wrow, n, act, arow,      \
                           y + r, ldy);                                                         \
        }                                                                                       \
    }

DEFINE_FLOAT_ROWS(1)
DEFINE_FLOAT_ROWS(2)
DEFINE_FLOAT_ROWS(3)
DEFINE_FLOAT_ROWS(4)
static const float_rows_fn float_rows[4] = {float_rows_1, float_rows_2, float_rows_3, float_rows_4};

/* ---- matmul ------------------------------------------------------------------------------ */


AVX2 void quant_avx2_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                            const void *act, int64_t n_tok, float *y, int64_t ldy)
{
    tok4_fn tok4 = NULL;
    const tokn_kind *tokn = NULL;
    row_fn row = NULL;
    const bool vnni = quant_cpu_has_avx_vnni(), avx512 = quant_cpu_has_avx512_vnni();
    int64_t nb = n;
    size_t tail_off = 0;
    switch (wtype) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: break;
    case GGUF_DTYPE_Q4_0:
        tok4 = tok4_q4_0, tokn = vnni ? &tokn_q4_0_vnni : &tokn_q4_0, row = row_q4_0, nb = n / QK4_0, tail_off = quant_q8_0_tail_off(nb);
        break;
    case GGUF_DTYPE_Q4_1:
        tok4 = tok4_q4_1, tokn = avx512 ? &tokn_q4_1_512 : vnni ? &tokn_q4_1_vnni : &tokn_q4_1, row = row_q4_1, nb = n / QK4_1, tail_off = quant_q8_1_tail_off(nb);
        break;
    case GGUF_DTYPE_Q8_0:
        tok4 = tok4_q8_0, tokn = vnni ? &tokn_q8_0_vnni : &tokn_q8_0, row = row_q8_0, nb = n / QK8_0, tail_off = quant_q8_0_tail_off(nb);
        break;
    case GGUF_DTYPE_Q6_K: tok4 = tok4_q6_K, row = row_q6_K, nb = n / QK_K; break;
    case GGUF_DTYPE_Q5_0:
        tok4 = tok4_q5_0, tokn = avx512 ? &tokn_q5_0_512 : vnni ? &tokn_q5_0_vnni : &tokn_q5_0, row = row_q5_0, nb = n / QK5_0, tail_off = quant_q8_0_tail_off(nb);
        break;
    case GGUF_DTYPE_Q5_1:
        tok4 = tok4_q5_1, tokn = avx512 ? &tokn_q5_1_512 : vnni ? &tokn_q5_1_vnni : &tokn_q5_1, row = row_q5_1, nb = n / QK5_1, tail_off = quant_q8_1_tail_off(nb);
        break;
    case GGUF_DTYPE_Q4_K:
        tok4 = tok4_q4_K, tokn = vnni ? &tokn_q4_K_vnni : &tokn_q4_K, row = row_q4_K, nb = n / QK_K;
        break;
    case GGUF_DTYPE_Q5_K: tok4 = tok4_q5_K, row = row_q5_K, nb = n / QK_K; break;
    }
    if (avx512 && n_tok >= 10) { /* groups of 16 tokens (the last may be 10-15) through quant_k512.c */
        const int64_t done = quant_k512_matmul(wtype, W, n, r0, r1, act, n_tok, y, ldy);
        act = (const uint8_t *)act + (size_t)done * quant_act_row_bytes(wtype, n);
        y += done * ldy;
        n_tok -= done;
        if (n_tok == 0)
            return;
    }
    const size_t wrow = quant_weight_row_bytes(wtype, n);
    const size_t arow = quant_act_row_bytes(wtype, n);
    int64_t chunk = wrow ? (int64_t)(WCHUNK_BYTES / wrow) : 0;
    chunk = chunk < 8 ? 8 : chunk & ~(int64_t)7;
    const uint8_t *w8 = W, *a8 = act;
    /* two tokens or more: groups of 8 through the packed-group tiles, the rest row by row (the
     * 4-token tiles below if out of memory) */
    const quant_fewtok_fn few = n_tok >= 2 ? quant_fewtok_avx2_pick(wtype) : NULL;
    if (tokn && n_tok >= 2 && matmul_tokn(tokn, row, few, w8, wrow, nb, r0, r1, chunk, a8, arow, tail_off, n_tok, y, ldy))
        return;
    for (int64_t tb = 0; tb < n_tok; tb += TOK_BLOCK) {
        const int64_t te = tb + TOK_BLOCK < n_tok ? tb + TOK_BLOCK : n_tok;
        for (int64_t rc = r0; rc < r1; rc += chunk) {
            const int64_t re = rc + chunk < r1 ? rc + chunk : r1;
            int64_t t = tb;
            if (!tok4) { /* float weights */
                for (; t < te; t += 4) {
                    const int T = te - t < 4 ? (int)(te - t) : 4;
                    float_rows[T - 1](wtype, w8, wrow, n, rc, re, a8 + (size_t)t * arow, arow, y + t * ldy, ldy);
                }
                continue;
            }
            for (; t + 4 <= te; t += 4) {
                const uint8_t *a[4];
                for (int k = 0; k < 4; k++)
                    a[k] = a8 + (size_t)(t + k) * arow;
                tok4(w8, wrow, nb, rc, re, a, tail_off, 4, y + t * ldy, ldy);
            }
            if (few) /* Q6_K: 2 or 3 tokens left, the few-token kernel (its 4 lost to q6_tok4) */
                t = quant_fewtok_avx2_run(few, w8, wrow, nb, rc, re, a8, arow, tail_off, t, te, y, ldy);
            /* one to three tokens left: rows in the lanes, one token at a time */
            for (; t < te; t++)
                row(w8, wrow, nb, rc, re, a8 + (size_t)t * arow, tail_off, y + t * ldy);
        }
    }
}

/* ---- activation quantisation ------------------------------------------------------------- */

#define Q8_ROUND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* round half to even */

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
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), Q8_ROUND));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), Q8_ROUND));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), Q8_ROUND));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), Q8_ROUND));
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

/* llama.cpp's quantize_row_q8_K_ref for one block of 256 (quant.c's act_q8_K): the element of
 * largest magnitude (the first one on ties) sets iscale = -127 / x_max, q = min(round-half-even
 * (iscale * x), 127), bsums per 16, d = 1 / iscale. Returns false (block untouched) for a block
 * with a NaN or infinity, which the scalar code then quantises. */
AVX2_INLINE bool q8_K_block_avx2(const float *x, block_q8_K *y)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int j = 0; j < QK_K; j += 8)
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    if (!(amax <= 3.4e38f)) /* NaN (max_ps may drop it, see the scan below) or infinity */
        return false;
    if (amax == 0.0f) {
        memset(y, 0, sizeof *y);
        return true;
    }
    int first = -1;
    const __m256 am = _mm256_set1_ps(amax);
    for (int j = 0; j < QK_K && first < 0; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        const int unordered = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        if (unordered)
            return false;
        const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), am, _CMP_EQ_OQ));
        if (hit)
            first = j + __builtin_ctz((unsigned)hit);
    }
    for (int j = first + 8 - first % 8; j < QK_K; j += 8) { /* the rest: NaNs only */
        const __m256 v = _mm256_loadu_ps(x + j);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
            return false;
    }
    const float iscale = -127.f / x[first];
    const __m256 mul = _mm256_set1_ps(iscale);
    const __m256i top = _mm256_set1_epi32(127);
    for (int j = 0; j < QK_K; j += 32) {
        __m256i i0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j), mul)), top);
        __m256i i1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), mul)), top);
        __m256i i2 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 16), mul)), top);
        __m256i i3 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 24), mul)), top);
        y->bsums[j / 16] = (int16_t)hsum_i32_256(_mm256_add_epi32(i0, i1));
        y->bsums[j / 16 + 1] = (int16_t)hsum_i32_256(_mm256_add_epi32(i2, i3));
        /* packs interleave 128-bit lanes; the permute puts elements back in order */
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(y->qs + j), i0);
    }
    y->d = 1 / iscale;
    return true;
}

AVX2 void quant_avx2_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n)
{
    uint8_t *a = act;
    switch (wtype) {
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q5_0:
    case GGUF_DTYPE_Q8_0: {
        const int64_t nb = n / QK8_0;
        block_q8_0 *y = act;
        uint8_t *tail = a + quant_q8_0_tail_off(nb), *lanes = a + quant_q4_0_lane_off(nb);
        for (int64_t i = 0; i < nb; i++) {
            float d;
            (void)q8_block_avx2(x + i * 32, y[i].qs, &d);
            const uint16_t dh = (uint16_t)_cvtss_sh(d, 0);
            y[i].d = dh;
            d = h2f(dh);
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
            const int sum = q8_block_avx2(x + i * 32, y[i].qs, &d);
            const uint16_t dh = (uint16_t)_cvtss_sh(d, 0);
            const uint16_t sh = (uint16_t)_cvtss_sh(d * (float)sum, 0);
            y[i].d = dh;
            y[i].s = sh;
            tail[2 * i] = h2f(dh);
            tail[2 * i + 1] = h2f(sh);
        }
        return;
    }
    case GGUF_DTYPE_Q4_K:
    case GGUF_DTYPE_Q5_K:
    case GGUF_DTYPE_Q6_K: {
        block_q8_K *y = act;
        for (int64_t i = 0; i < n / QK_K; i++)
            if (!q8_K_block_avx2(x + i * QK_K, y + i))
                quant_ref_act_quantize(wtype, x + i * QK_K, y + i, QK_K);
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
