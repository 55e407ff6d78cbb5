/* quant_k512.c — AVX-512 VNNI prompt tiles for Q4_K and Q6_K weights: 16 tokens in the lanes of
 * a zmm, every 16-token group of a 64-token block served by one unpacking of each weight
 * super-block. quant_avx2_matmul hands its groups of 16 tokens here (k512_tokens says which) on
 * CPUs with AVX-512 F/BW/VL/DQ + VNNI (quant_cpu_has_avx512_vnni) and runs the tokens left on
 * its AVX2 tiles, so AMD machines without AVX-512 never reach this file.
 *
 * Per (row, token) the arithmetic is quant_impl.h's Q4_K order, exactly as the scalar reference
 * and the AVX2 tiles: per super-block and 64-element chunk c, P[s] = the exact int32 sum of q_w*q_a
 * over sub-block s (vpdpbusd of a broadcast four-byte weight group with the activation groups of
 * the 16 tokens, interleaved by token so one zmm holds a group for all of them), then
 *   acc  = fma((float)(sc[2c]*P[2c] + sc[2c+1]*P[2c+1]), d_w*d_a,    acc)
 *   accm = fma((float)(m[2c]*S[2c]  + m[2c+1]*S[2c+1]),  dmin_w*d_a, accm)
 * and the result acc - accm. The scaled sum is formed in float as fma(P0, sc0, P1*sc1): both
 * products and the sum are integers below 2^24 (|P| <= 32*15*128, sc <= 63), so every step is
 * exact and the value is the int32 sum's conversion, bit for bit, without vpmulld's two uops.
 * A tile is 2 rows x up to 4 groups: each weight broadcast serves the groups, each activation
 * load the two rows (the AVX2 tile, one row x 8 tokens, loads both per vpdpbusd), and each
 * vpdpbusd does 64 multiply-adds instead of 32.
 *
 * Q6_K, quant_impl.h's order: per super-block the exact int32 S = sum over sub-blocks of
 * sc * (sum of (q-32)*q_a), then r = d_w * (float)S and acc = fma(r, d_a, acc). Each row's
 * super-block is unpacked once to 256 int16 weights sc*(q-32) (|.| <= 128*32, so the scale and
 * the -32 are folded in exactly), and vpdpwssd of a broadcast weight pair with the 16 tokens'
 * int16 activation pairs sums it: no per-sub-block scale multiplies (what made the AVX2
 * tokens-in-lanes Q6_K tile lose). The unpacked super-block serves every packed group of the
 * 64-token block (up to 4 x 16 tokens), each activation load the tile's four rows. */
#include "quant_impl.h"

#if defined(SERVAL_QUANT_X86)

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define K512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define K512_INLINE \
    static inline __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

enum {
    T16 = 16,              /* tokens per packed group: the 16 lanes of a zmm */
    K512_ROWS = 4,         /* Q6_K rows per tile: one activation load serves them */
    K512_TOK_BLOCK = 64,   /* tokens per outer block (their packed groups stay in L2) */
};

/* A packed group of 16 tokens' Q8_K rows, per super-block b (nb of them):
 *   qs[4096b + 64g + 4t ..] = token t's quants 4g..4g+3 (g = 0..63);
 *   da[16b + t] = d_a;
 *   ss[64b + 16c + t] = token t's sub-block sums S[2c] | S[2c+1] << 16 (int16 pairs, from bsums). */
typedef struct k16_pack {
    uint8_t *qs;
    float *da;
    int32_t *ss;
    int nt; /* tokens packed (9..16); the lanes after them are zeros, their results not stored */
} k16_pack;

static size_t k16_pack_bytes(int64_t nb) { return (size_t)nb * (4096 + 64 + 256); }

static k16_pack k16_pack_at(uint8_t *buf, int64_t nb)
{
    return (k16_pack){buf, (float *)(buf + 4096 * (size_t)nb), (int32_t *)(buf + 4160 * (size_t)nb), T16};
}

/* Packs p->nt activation rows (arow bytes apart from a). */
static void k16_pack_rows(const uint8_t *a, size_t arow, int64_t nb, const k16_pack *p)
{
    if (p->nt < T16)
        memset(p->qs, 0, k16_pack_bytes(nb));
    for (int t = 0; t < p->nt; t++) {
        for (int64_t b = 0; b < nb; b++) {
            const block_q8_K *ya = (const block_q8_K *)(a + (size_t)t * arow) + b;
            uint8_t *q = p->qs + 4096 * (size_t)b + 4 * (size_t)t;
            for (int g = 0; g < 64; g++)
                memcpy(q + 64 * g, ya->qs + 4 * g, 4);
            p->da[16 * b + t] = ya->d;
            for (int c = 0; c < 4; c++) {
                const int16_t s0 = (int16_t)(ya->bsums[4 * c] + ya->bsums[4 * c + 1]);
                const int16_t s1 = (int16_t)(ya->bsums[4 * c + 2] + ya->bsums[4 * c + 3]);
                p->ss[64 * b + 16 * c + t] = (int32_t)(uint16_t)s0 | (int32_t)((uint32_t)(uint16_t)s1 << 16);
            }
        }
    }
}

/* The 8 scales | 8 mins of a Q4_K super-block (get_scale_min_k4 for j = 0..7) from its 12
 * scale bytes. */
static inline void k4_scales_mins(const uint8_t *q, uint8_t out[16])
{
    uint32_t u[4];
    memcpy(u, q, K_SCALE_SIZE);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const uint32_t aux = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = aux;
    u[0] &= 0x3f3f3f3fu;
    memcpy(out, u, 16);
}

/* ---- Q6_K ---------------------------------------------------------------------------------- */

/* A packed group of 16 tokens' Q8_K rows for Q6_K, per super-block b:
 *   qs[8192b + 64g + 4t ..] = token t's quants 2g, 2g+1 as two int16 (g = 0..127);
 *   da[16b + t] = d_a. */
typedef struct k6_pack {
    uint8_t *qs;
    float *da;
    int nt; /* as k16_pack's */
} k6_pack;

static size_t k6_pack_bytes(int64_t nb) { return (size_t)nb * (8192 + 64); }

static k6_pack k6_pack_at(uint8_t *buf, int64_t nb) { return (k6_pack){buf, (float *)(buf + 8192 * (size_t)nb), T16}; }

K512_INLINE void k6_pack_rows(const uint8_t *a, size_t arow, int64_t nb, const k6_pack *p)
{
    if (p->nt < T16)
        memset(p->qs, 0, k6_pack_bytes(nb));
    for (int t = 0; t < p->nt; t++) {
        for (int64_t b = 0; b < nb; b++) {
            const block_q8_K *ya = (const block_q8_K *)(a + (size_t)t * arow) + b;
            _Alignas(64) int16_t q16[QK_K];
            for (int k = 0; k < QK_K; k += 32)
                _mm512_store_si512((void *)(q16 + k),
                                   _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(ya->qs + k))));
            uint8_t *q = p->qs + 8192 * (size_t)b + 4 * (size_t)t;
            for (int g = 0; g < QK_K / 2; g++)
                memcpy(q + 64 * g, q16 + 2 * g, 4);
            p->da[16 * b + t] = ya->d;
        }
    }
}

/* Super-block x of a Q6_K row as 256 int16 sc[e/16] * (q[e] - 32), in element order. */
K512_INLINE void q6k_unpack16(const block_q6_K *x, int16_t *w16)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales)));
    /* lanes 0..15 pick scale 0, lanes 16..31 scale 1 (then + the group's first sub-block) */
    const __m512i pick = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1);
    const __m512i m32 = _mm512_set1_epi16(32);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i l = k & 1 ? l1 : l0;
            const __m256i low = k < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3);
            const __m256i q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4)); /* 0..63 */
            const __m512i q16 = _mm512_sub_epi16(_mm512_cvtepu8_epi16(q), m32);
            const __m512i s = _mm512_permutexvar_epi16(_mm512_add_epi16(pick, _mm512_set1_epi16((short)(8 * h + 2 * k))), sc);
            _mm512_store_si512((void *)(w16 + 128 * h + 32 * k), _mm512_mullo_epi16(q16, s));
        }
    }
}

/* R (1..4) consecutive rows × the G (1..4) packed groups of a token block (group k's tokens go
 * to yk[k], token 0 of row 0 there, tokens ldy apart). */
K512_INLINE void q6k_tile16(const int R, const int G, const uint8_t *w, size_t wrow, int64_t nb, const k6_pack *p,
                            float *const yk[4], int64_t ldy)
{
    _Alignas(64) float acc[K512_ROWS][4][T16];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < G; k++)
            _mm512_store_ps(acc[r][k], _mm512_setzero_ps());
    for (int64_t b = 0; b < nb; b++) {
        _Alignas(64) int16_t w16[K512_ROWS][QK_K];
        float dw[K512_ROWS];
        for (int r = 0; r < R; r++) {
            const block_q6_K *x = (const block_q6_K *)(w + (size_t)r * wrow) + b;
            q6k_unpack16(x, w16[r]);
            dw[r] = quant_h2f(x->d);
        }
        __asm__("" : "+m"(w16));
        __m512i S[K512_ROWS][4];
        for (int r = 0; r < R; r++)
            for (int k = 0; k < G; k++)
                S[r][k] = _mm512_setzero_si512();
        const uint8_t *aq[4];
        for (int k = 0; k < G; k++)
            aq[k] = p[k].qs + 8192 * (size_t)b;
#pragma GCC unroll 2
        for (int g = 0; g < QK_K / 2; g++) {
            __m512i a[4];
            for (int k = 0; k < G; k++)
                a[k] = _mm512_load_si512((const void *)(aq[k] + 64 * g));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int32_t wp;
                memcpy(&wp, w16[r] + 2 * g, 4);
                const __m512i wv = _mm512_set1_epi32(wp);
#pragma GCC unroll 4
                for (int k = 0; k < G; k++)
                    S[r][k] = _mm512_dpwssd_epi32(S[r][k], wv, a[k]);
            }
        }
        for (int k = 0; k < G; k++) {
            const __m512 da = _mm512_load_ps(p[k].da + 16 * b);
            for (int r = 0; r < R; r++) {
                const __m512 rr = _mm512_mul_ps(_mm512_set1_ps(dw[r]), _mm512_cvtepi32_ps(S[r][k]));
                _mm512_store_ps(acc[r][k], _mm512_fmadd_ps(rr, da, _mm512_load_ps(acc[r][k])));
            }
        }
    }
    for (int k = 0; k < G; k++)
        for (int r = 0; r < R; r++)
            for (int t = 0; t < p[k].nt; t++)
                yk[k][t * ldy + r] = acc[r][k][t];
}

#define Q6K_TILE_G(R)                                                                     \
    switch (G) {                                                                          \
    case 1: q6k_tile16(R, 1, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;          \
    case 2: q6k_tile16(R, 2, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;          \
    case 3: q6k_tile16(R, 3, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;          \
    default: q6k_tile16(R, 4, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;         \
    }

/* Rows [ra, rb) against the G packed groups of a token block; y points at the block's token 0,
 * row 0. */
K512 static void q6k_rows16(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const k6_pack *p,
                            int G, float *y, int64_t ldy)
{
    for (int64_t r = ra; r < rb;) {
        float *yr[4];
        for (int k = 0; k < G; k++)
            yr[k] = y + (int64_t)T16 * k * ldy + r;
        if (r + K512_ROWS <= rb) {
            Q6K_TILE_G(K512_ROWS)
            r += K512_ROWS;
        } else {
            Q6K_TILE_G(1)
            r++;
        }
    }
}

K512 static int64_t q6k_matmul16(const uint8_t *W, int64_t n, int64_t r0, int64_t r1, const uint8_t *act,
                                 int64_t ntk, float *y, int64_t ldy)
{
    const int64_t nb = n / QK_K;
    const size_t wrow = quant_weight_row_bytes(GGUF_DTYPE_Q6_K, n), arow = quant_act_row_bytes(GGUF_DTYPE_Q6_K, n);
    const size_t gb = (k6_pack_bytes(nb) + 63) & ~(size_t)63;
    enum { MAX_GROUPS = K512_TOK_BLOCK / T16 };
    const int64_t ngmax = (ntk + T16 - 1) / T16 < MAX_GROUPS ? (ntk + T16 - 1) / T16 : MAX_GROUPS;
    uint8_t *buf = aligned_alloc(64, gb * (size_t)ngmax);
    if (!buf)
        return 0;
    for (int64_t tb = 0; tb < ntk; tb += K512_TOK_BLOCK) {
        const int64_t te = tb + K512_TOK_BLOCK < ntk ? tb + K512_TOK_BLOCK : ntk;
        const int ng = (int)((te - tb + T16 - 1) / T16);
        k6_pack pk[MAX_GROUPS];
        for (int g = 0; g < ng; g++) {
            pk[g] = k6_pack_at(buf + gb * (size_t)g, nb);
            pk[g].nt = te - tb - T16 * g < T16 ? (int)(te - tb - T16 * g) : T16;
            k6_pack_rows(act + (size_t)(tb + T16 * g) * arow, arow, nb, &pk[g]);
        }
        q6k_rows16(W, wrow, nb, r0, r1, pk, ng, y + tb * ldy, ldy);
    }
    free(buf);
    return ntk;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

/* R (1..2) consecutive rows × the G (1..4) packed groups of a token block (group k's tokens
 * go to yk[k], token 0 of row 0 there, tokens ldy apart): each row's super-block is unpacked and
 * its scales read once for every group, each weight broadcast serves G groups and each
 * activation load R rows. The float chains live in memory (one load and store a chunk). */
K512_INLINE void q4k_tile16g(const int R, const int G, const uint8_t *w, size_t wrow, int64_t nb, const k16_pack *p,
                             float *const yk[4], int64_t ldy)
{
    enum { RG = 2 };
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    _Alignas(64) float acc[RG][4][T16], accm[RG][4][T16];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < G; k++) {
            _mm512_store_ps(acc[r][k], _mm512_setzero_ps());
            _mm512_store_ps(accm[r][k], _mm512_setzero_ps());
        }
    for (int64_t b = 0; b < nb; b++) {
        _Alignas(64) uint8_t u[RG][QK_K]; /* per chunk c: 32 bytes sub-block 2c, 32 bytes 2c+1 */
        _Alignas(64) float dd[RG][4][T16], dm[RG][4][T16], scf[RG][8];
        _Alignas(16) int32_t mp[RG][4];
        for (int r = 0; r < R; r++) {
            const uint8_t *x = w + (size_t)r * wrow + sizeof(block_q4_K) * (size_t)b;
            uint32_t dmh;
            memcpy(&dmh, x, 4);
            const __m128 dmw = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dmh)); /* d_w, dmin_w */
            for (int k = 0; k < G; k++) {
                const __m512 da = _mm512_load_ps(p[k].da + 16 * b);
                _mm512_store_ps(dd[r][k], _mm512_mul_ps(_mm512_broadcastss_ps(dmw), da));
                _mm512_store_ps(dm[r][k], _mm512_mul_ps(_mm512_broadcastss_ps(_mm_movehdup_ps(dmw)), da));
            }
            _Alignas(16) uint8_t sm[16];
            k4_scales_mins(x + 4, sm);
            const __m128i smv = _mm_load_si128((const __m128i *)sm);
            _mm256_store_ps(scf[r], _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(smv)));
            _mm_store_si128((__m128i *)mp[r], _mm_cvtepu8_epi16(_mm_srli_si128(smv, 8)));
            const uint8_t *qs = x + 4 + K_SCALE_SIZE;
            for (int c = 0; c < 4; c++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                _mm256_store_si256((__m256i *)(u[r] + 64 * c), _mm256_and_si256(q, m4));
                _mm256_store_si256((__m256i *)(u[r] + 64 * c + 32), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
            }
        }
        __asm__("" : "+m"(u), "+m"(dd), "+m"(dm), "+m"(scf), "+m"(mp));
#pragma GCC unroll 1
        for (int c = 0; c < 4; c++) {
            __m512i P0[RG][4], P1[RG][4];
            for (int r = 0; r < R; r++)
                for (int k = 0; k < G; k++)
                    P0[r][k] = P1[r][k] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                __m512i a0[4], a1[4];
                for (int k = 0; k < G; k++) {
                    const uint8_t *ag = p[k].qs + 4096 * (size_t)b + 64 * 16 * (size_t)c;
                    a0[k] = _mm512_load_si512((const void *)(ag + 64 * g));
                    a1[k] = _mm512_load_si512((const void *)(ag + 64 * (8 + g)));
                }
                for (int r = 0; r < R; r++) {
                    int32_t w0, w1;
                    memcpy(&w0, u[r] + 64 * c + 4 * g, 4);
                    memcpy(&w1, u[r] + 64 * c + 32 + 4 * g, 4);
                    const __m512i wv0 = _mm512_set1_epi32(w0), wv1 = _mm512_set1_epi32(w1);
                    for (int k = 0; k < G; k++) {
                        P0[r][k] = _mm512_dpbusd_epi32(P0[r][k], wv0, a0[k]);
                        P1[r][k] = _mm512_dpbusd_epi32(P1[r][k], wv1, a1[k]);
                    }
                }
            }
            for (int k = 0; k < G; k++) {
                const __m512i ssv = _mm512_load_si512((const void *)(p[k].ss + 64 * b + 16 * c));
                for (int r = 0; r < R; r++) {
                    /* exact: sc*P and their sum are integers below 2^24 */
                    const __m512 S1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(P0[r][k]), _mm512_set1_ps(scf[r][2 * c]),
                                                      _mm512_mul_ps(_mm512_cvtepi32_ps(P1[r][k]),
                                                                    _mm512_set1_ps(scf[r][2 * c + 1])));
                    const __m512i S2 = _mm512_madd_epi16(ssv, _mm512_set1_epi32(mp[r][c]));
                    _mm512_store_ps(acc[r][k], _mm512_fmadd_ps(S1, _mm512_load_ps(dd[r][k]), _mm512_load_ps(acc[r][k])));
                    _mm512_store_ps(accm[r][k], _mm512_fmadd_ps(_mm512_cvtepi32_ps(S2), _mm512_load_ps(dm[r][k]),
                                                                _mm512_load_ps(accm[r][k])));
                }
            }
        }
    }
    for (int k = 0; k < G; k++)
        for (int r = 0; r < R; r++) {
            _Alignas(64) float res[T16];
            _mm512_store_ps(res, _mm512_sub_ps(_mm512_load_ps(acc[r][k]), _mm512_load_ps(accm[r][k])));
            for (int t = 0; t < p[k].nt; t++)
                yk[k][t * ldy + r] = res[t];
        }
}

#define Q4K_TILE_G(R)                                                                     \
    switch (G) {                                                                          \
    case 1: q4k_tile16g(R, 1, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;         \
    case 2: q4k_tile16g(R, 2, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;         \
    case 3: q4k_tile16g(R, 3, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;         \
    default: q4k_tile16g(R, 4, W + (size_t)r * wrow, wrow, nb, p, yr, ldy); break;        \
    }

/* Rows [ra, rb) against the G packed groups of a token block; y points at the block's token 0,
 * row 0. */
K512 static void q4k_rows16g(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb, const k16_pack *p,
                             int G, float *y, int64_t ldy)
{
    for (int64_t r = ra; r < rb;) {
        float *yr[4];
        for (int k = 0; k < G; k++)
            yr[k] = y + (int64_t)T16 * k * ldy + r;
        if (r + 2 <= rb) {
            Q4K_TILE_G(2)
            r += 2;
        } else {
            Q4K_TILE_G(1)
            r++;
        }
    }
}

/* The tokens these tiles take of n_tok: whole groups of 16, and the last 10-15 as one padded
 * group (cheaper than the AVX2 path's 8-token group plus 2-7 tokens on the few-token tiles; 9 or
 * fewer are left to it). Q6_K: only blocks of two groups or more, since the unpacking of each
 * weight super-block pays only when two groups share it (1 thread, CPU time, 2048->8192:
 * Q6_K 16 tokens 90 vs the AVX2 tiles' 101 GFLOP/s, 32 tokens 153 vs 105; Q4_K 9 tokens 138 vs
 * 143, 12 tokens 173 vs 127, 16 tokens 221 vs 161). */
static int64_t k512_tokens(gguf_dtype wtype, int64_t n_tok)
{
    int64_t k = n_tok % T16 >= 10 ? n_tok : n_tok & ~(int64_t)(T16 - 1);
    if (wtype == GGUF_DTYPE_Q6_K && k > 0 && k - K512_TOK_BLOCK * ((k - 1) / K512_TOK_BLOCK) <= T16)
        k = K512_TOK_BLOCK * ((k - 1) / K512_TOK_BLOCK); /* the last block would be one group */
    return k;
}

K512 int64_t quant_k512_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1, const void *act,
                               int64_t n_tok, float *y, int64_t ldy)
{
    if ((wtype != GGUF_DTYPE_Q4_K && wtype != GGUF_DTYPE_Q6_K) || k512_tokens(wtype, n_tok) == 0 || r1 <= r0)
        return 0;
    if (wtype == GGUF_DTYPE_Q6_K)
        return q6k_matmul16(W, n, r0, r1, act, k512_tokens(wtype, n_tok), y, ldy);
    const int64_t nb = n / QK_K, ntk = k512_tokens(wtype, n_tok);
    const size_t wrow = quant_weight_row_bytes(wtype, n), arow = quant_act_row_bytes(wtype, n);
    const size_t gb = (k16_pack_bytes(nb) + 63) & ~(size_t)63;
    enum { MAX_GROUPS = K512_TOK_BLOCK / T16 };
    const int64_t ngmax = (ntk + T16 - 1) / T16 < MAX_GROUPS ? (ntk + T16 - 1) / T16 : MAX_GROUPS;
    uint8_t *buf = aligned_alloc(64, gb * (size_t)ngmax);
    if (!buf)
        return 0;
    const uint8_t *w8 = W, *a8 = act;
    for (int64_t tb = 0; tb < ntk; tb += K512_TOK_BLOCK) {
        const int64_t te = tb + K512_TOK_BLOCK < ntk ? tb + K512_TOK_BLOCK : ntk;
        const int ng = (int)((te - tb + T16 - 1) / T16);
        k16_pack pk[MAX_GROUPS];
        for (int g = 0; g < ng; g++) {
            pk[g] = k16_pack_at(buf + gb * (size_t)g, nb);
            pk[g].nt = te - tb - T16 * g < T16 ? (int)(te - tb - T16 * g) : T16;
            k16_pack_rows(a8 + (size_t)(tb + T16 * g) * arow, arow, nb, &pk[g]);
        }
        q4k_rows16g(w8, wrow, nb, r0, r1, pk, ng, y + tb * ldy, ldy);
    }
    free(buf);
    return ntk;
}

#else
typedef int quant_k512_empty_unit; /* ISO C wants at least one declaration */
#endif
