/* gemm_f16.c — the encoder's many-token products (gemm_f16.h): panel packing, the reference,
 * and register tiles in AVX2+FMA+F16C (6 tokens x 16 columns, 12 ymm accumulators) and
 * AVX-512F (12 tokens x 32 columns, 24 zmm accumulators), chosen at run time.
 *
 * Why this shape: the weight matrix is the operand that must be converted from fp16, so each
 * converted 16-column vector feeds one FMA per token of the tile (12 on AVX-512, 6 on AVX2)
 * while the tokens' activations arrive as broadcasts; accumulators hold whole output columns,
 * so there is no horizontal sum. A tile's tokens are first copied k-major into the thread's
 * scratch (one pointer with immediate offsets instead of twelve row streams), once per tile
 * of tokens for all of the thread's panels. */
#include "gemm_f16.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "status.h"

#if defined(__x86_64__) || defined(__i386__)
#define GEMM_X86 1
#include <immintrin.h>
#endif

/* Tokens per tile. */
#define MR_512 12
#define MR_256 6

static float b_elem(const cpu_gemm_b *b, int64_t k, int64_t c)
{
    const size_t i = (size_t)(c / CPU_GEMM_NR) * (size_t)b->p_stride +
                     (size_t)k * (size_t)b->k_stride + (size_t)(c % CPU_GEMM_NR);
    if (b->f16)
        return quant_f16_to_f32(((const uint16_t *)b->data)[i]);
    return ((const float *)b->data)[i];
}

void cpu_gemm_ref(const cpu_gemm_b *b, int64_t p0, int64_t p1, const float *x, int64_t ldx,
                  int64_t xks, int64_t T, const float *bias, float *y, int64_t ldy)
{
    int64_t c1 = p1 * CPU_GEMM_NR;
    if (c1 > b->cols)
        c1 = b->cols;
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = p0 * CPU_GEMM_NR; c < c1; c++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < b->n; k++)
                acc = fmaf(b_elem(b, k, c), x[t * ldx + k * xks], acc);
            y[t * ldy + c] = bias ? acc + bias[c] : acc;
        }
}

size_t cpu_gemm_packed_elems(int64_t rows, int64_t n)
{
    return (size_t)((rows + CPU_GEMM_NR - 1) / CPU_GEMM_NR) * CPU_GEMM_NR * (size_t)n;
}

void cpu_gemm_pack_f16(const uint16_t *W, int64_t rows, int64_t n, uint16_t *out)
{
    const int64_t np = (rows + CPU_GEMM_NR - 1) / CPU_GEMM_NR;
    for (int64_t p = 0; p < np; p++) {
        uint16_t *o = out + (size_t)p * CPU_GEMM_NR * (size_t)n;
        for (int l = 0; l < CPU_GEMM_NR; l++) {
            const int64_t r = p * CPU_GEMM_NR + l;
            for (int64_t k = 0; k < n; k++)
                o[(size_t)k * CPU_GEMM_NR + (size_t)l] = r < rows ? W[(size_t)r * (size_t)n + (size_t)k] : 0;
        }
    }
}

void cpu_gemm_pack_f32(const float *W, int64_t ld, int64_t rows, int64_t n, float *out)
{
    const int64_t np = (rows + CPU_GEMM_NR - 1) / CPU_GEMM_NR;
    for (int64_t p = 0; p < np; p++) {
        float *o = out + (size_t)p * CPU_GEMM_NR * (size_t)n;
        for (int l = 0; l < CPU_GEMM_NR; l++) {
            const int64_t r = p * CPU_GEMM_NR + l;
            for (int64_t k = 0; k < n; k++)
                o[(size_t)k * CPU_GEMM_NR + (size_t)l] = r < rows ? W[(size_t)r * (size_t)ld + (size_t)k] : 0.0f;
        }
    }
}

cpu_gemm_b cpu_gemm_packed(const void *packed, bool f16, int64_t rows, int64_t n)
{
    return (cpu_gemm_b){packed, f16, n, rows, CPU_GEMM_NR, CPU_GEMM_NR * n};
}

size_t cpu_gemm_scratch_floats(int64_t n) { return (size_t)MR_512 * (size_t)n; }

/* x rows [t0, t0 + M) copied k-major: xp[k * M + m] = x[(t0 + m) * ldx + k * xks]. */
static void pack_x(const float *x, int64_t ldx, int64_t xks, int64_t n, int M, float *xp)
{
    /* writes in order (reads from M rows hit L1 again for the next 15 k) */
    for (int64_t k = 0; k < n; k++)
        for (int m = 0; m < M; m++)
            xp[k * M + m] = x[m * ldx + k * xks];
}

/* ---- dispatch ---------------------------------------------------------------------------- */

bool cpu_gemm_isa_supported(cpu_gemm_isa isa)
{
    if (isa == CPU_GEMM_SCALAR)
        return true;
#if defined(GEMM_X86)
    if (!quant_cpu_has_avx2()) /* AVX2 + FMA + F16C */
        return false;
    if (isa == CPU_GEMM_AVX2)
        return true;
    __builtin_cpu_init();
    return isa == CPU_GEMM_AVX512 && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

const char *cpu_gemm_isa_name(cpu_gemm_isa isa)
{
    switch (isa) {
    case CPU_GEMM_SCALAR: return "scalar";
    case CPU_GEMM_AVX2: return "avx2";
    case CPU_GEMM_AVX512: return "avx512";
    }
    return "?";
}

cpu_gemm_isa cpu_gemm_best_isa(void)
{
    /* 0 = not probed yet, else isa + 1; probing twice is harmless */
    static atomic_int cached;
    int c = atomic_load_explicit(&cached, memory_order_relaxed);
    if (c == 0) {
        cpu_gemm_isa best = CPU_GEMM_AVX512;
        const char *cap = getenv("SERVAL_GEMM_ISA");
        if (cap && strcmp(cap, "scalar") == 0)
            best = CPU_GEMM_SCALAR;
        else if (cap && strcmp(cap, "avx2") == 0)
            best = CPU_GEMM_AVX2;
        while (best > CPU_GEMM_SCALAR && !cpu_gemm_isa_supported(best))
            best = (cpu_gemm_isa)(best - 1);
        c = (int)best + 1;
        atomic_store_explicit(&cached, c, memory_order_relaxed);
    }
    return (cpu_gemm_isa)(c - 1);
}

#if defined(GEMM_X86)

#define T256 __attribute__((target("avx2,fma,f16c")))
#define T256_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define T512 __attribute__((target("avx2,fma,f16c,avx512f")))
#define T512_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c,avx512f")))

/* ---- AVX2: M tokens (1..6) x 16 columns ---------------------------------------------------- */

T256_INLINE void tile256(const int M, const bool f16, const uint8_t *bp, size_t ks, int64_t n,
                         const float *xp, const float *bias, int valid, float *y, int64_t ldy)
{
    __m256 acc[MR_256][2];
#pragma GCC unroll 6
    for (int m = 0; m < M; m++)
        acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n; k++, bp += ks, xp += M) {
        __m256 w0, w1;
        if (f16) {
            w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bp));
            w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bp + 16)));
        } else {
            w0 = _mm256_loadu_ps((const float *)bp);
            w1 = _mm256_loadu_ps((const float *)bp + 8);
        }
#pragma GCC unroll 6
        for (int m = 0; m < M; m++) {
            const __m256 xb = _mm256_broadcast_ss(xp + m);
            acc[m][0] = _mm256_fmadd_ps(w0, xb, acc[m][0]);
            acc[m][1] = _mm256_fmadd_ps(w1, xb, acc[m][1]);
        }
    }
    float tmp[CPU_GEMM_NR];
#pragma GCC unroll 6
    for (int m = 0; m < M; m++) {
        float *o = valid == CPU_GEMM_NR ? y + m * ldy : tmp;
        __m256 v0 = acc[m][0], v1 = acc[m][1];
        if (bias && valid == CPU_GEMM_NR) {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias + 8));
        }
        _mm256_storeu_ps(o, v0);
        _mm256_storeu_ps(o + 8, v1);
        if (valid != CPU_GEMM_NR)
            for (int l = 0; l < valid; l++)
                y[m * ldy + l] = bias ? tmp[l] + bias[l] : tmp[l];
    }
}

typedef void (*tile256_fn)(bool f16, const uint8_t *bp, size_t ks, int64_t n, const float *xp,
                           const float *bias, int valid, float *y, int64_t ldy);
#define DEF256(M)                                                                               \
    T256 static void tile256_##M(bool f16, const uint8_t *bp, size_t ks, int64_t n,             \
                                 const float *xp, const float *bias, int valid, float *y,       \
                                 int64_t ldy)                                                   \
    {                                                                                           \
        if (f16)                                                                                \
            tile256(M, true, bp, ks, n, xp, bias, valid, y, ldy);                              \
        else                                                                                    \
            tile256(M, false, bp, ks, n, xp, bias, valid, y, ldy);                             \
    }
DEF256(1)
DEF256(2)
DEF256(3)
DEF256(4)
DEF256(5)
DEF256(6)
static const tile256_fn tiles256[MR_256 + 1] = {NULL, tile256_1, tile256_2, tile256_3,
                                                tile256_4, tile256_5, tile256_6};

/* ---- AVX-512: M tokens (1..12) x P panels (1..2) ------------------------------------------- */

T512_INLINE __m512 load16(bool f16, const uint8_t *p)
{
    if (f16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_loadu_ps((const float *)p);
}

T512_INLINE void tile512(const int M, const int P, const bool f16, const uint8_t *bp, size_t ks,
                         size_t ps, int64_t n, const float *xp, const float *bias, int valid,
                         float *y, int64_t ldy)
{
    __m512 acc[MR_512][2];
#pragma GCC unroll 12
    for (int m = 0; m < M; m++)
        acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k++, bp += ks, xp += M) {
        const __m512 w0 = load16(f16, bp);
        const __m512 w1 = P == 2 ? load16(f16, bp + ps) : w0;
#pragma GCC unroll 12
        for (int m = 0; m < M; m++) {
            const __m512 xb = _mm512_set1_ps(xp[m]);
            acc[m][0] = _mm512_fmadd_ps(w0, xb, acc[m][0]);
            if (P == 2)
                acc[m][1] = _mm512_fmadd_ps(w1, xb, acc[m][1]);
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) {
        int v = valid - p * CPU_GEMM_NR;
        if (v > CPU_GEMM_NR)
            v = CPU_GEMM_NR;
        if (v <= 0)
            break;
        const __mmask16 mask = (__mmask16)((1u << v) - 1u);
        const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + p * CPU_GEMM_NR)
                              : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int m = 0; m < M; m++) {
            const __m512 r = bias ? _mm512_add_ps(acc[m][p], b) : acc[m][p];
            _mm512_mask_storeu_ps(y + m * ldy + p * CPU_GEMM_NR, mask, r);
        }
    }
}

typedef void (*tile512_fn)(bool f16, const uint8_t *bp, size_t ks, size_t ps, int64_t n,
                           const float *xp, const float *bias, int valid, float *y, int64_t ldy);
#define DEF512(M, P)                                                                            \
    T512 static void tile512_##M##_##P(bool f16, const uint8_t *bp, size_t ks, size_t ps,       \
                                       int64_t n, const float *xp, const float *bias,           \
                                       int valid, float *y, int64_t ldy)                        \
    {                                                                                           \
        if (f16)                                                                                \
            tile512(M, P, true, bp, ks, ps, n, xp, bias, valid, y, ldy);                       \
        else                                                                                    \
            tile512(M, P, false, bp, ks, ps, n, xp, bias, valid, y, ldy);                      \
    }
#define DEF512_M(M) DEF512(M, 1) DEF512(M, 2)
DEF512_M(1)
DEF512_M(2)
DEF512_M(3)
DEF512_M(4)
DEF512_M(5)
DEF512_M(6)
DEF512_M(7)
DEF512_M(8)
DEF512_M(9)
DEF512_M(10)
DEF512_M(11)
DEF512_M(12)
#define ROW512(M) {tile512_##M##_1, tile512_##M##_2}
static const tile512_fn tiles512[MR_512 + 1][2] = {
    {NULL, NULL}, ROW512(1), ROW512(2), ROW512(3), ROW512(4),  ROW512(5), ROW512(6),
    ROW512(7),    ROW512(8), ROW512(9), ROW512(10), ROW512(11), ROW512(12)};

#endif /* GEMM_X86 */

/* The scalar tile: M tokens x one panel, each weight converted once per k for all M tokens
 * (what a CPU without F16C runs; loops the compiler may vectorise where it can). */
static void tile_scalar(int M, bool f16, const uint8_t *bp, size_t ks, int64_t n,
                        const float *xp, const float *bias, int valid, float *y, int64_t ldy)
{
    float acc[MR_512][CPU_GEMM_NR];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < n; k++, bp += ks, xp += M) {
        float w[CPU_GEMM_NR];
        for (int l = 0; l < CPU_GEMM_NR; l++) {
            if (f16) {
                uint16_t h;
                memcpy(&h, bp + 2 * l, sizeof h);
                w[l] = quant_f16_to_f32(h);
            } else {
                memcpy(&w[l], bp + 4 * l, sizeof w[l]);
            }
        }
        for (int m = 0; m < M; m++)
            for (int l = 0; l < CPU_GEMM_NR; l++)
                acc[m][l] = fmaf(w[l], xp[m], acc[m][l]);
    }
    for (int m = 0; m < M; m++)
        for (int l = 0; l < valid; l++)
            y[m * ldy + l] = bias ? acc[m][l] + bias[l] : acc[m][l];
}

void cpu_gemm_run(cpu_gemm_isa isa, const cpu_gemm_b *b, int64_t p0, int64_t p1,
                  const float *x, int64_t ldx, int64_t xks, int64_t T, const float *bias,
                  float *y, int64_t ldy, float *scratch)
{
    ENG_ASSERT(b->n >= 1 && b->k_stride >= CPU_GEMM_NR);
    if (p0 >= p1 || T <= 0)
        return;
    const size_t es = b->f16 ? 2 : 4;
    const size_t ks = (size_t)b->k_stride * es, ps = (size_t)b->p_stride * es;
    const int mr = isa == CPU_GEMM_AVX2 ? MR_256 : MR_512;
    const int np = isa == CPU_GEMM_AVX512 ? 2 : 1; /* panels per tile */
    for (int64_t t0 = 0; t0 < T; t0 += mr) {
        const int M = (int)(T - t0 < mr ? T - t0 : mr);
        pack_x(x + t0 * ldx, ldx, xks, b->n, M, scratch);
        for (int64_t p = p0; p < p1; p += np) {
            const int P = (int)(p1 - p < np ? p1 - p : np);
            int64_t valid = b->cols - p * CPU_GEMM_NR;
            if (valid > P * CPU_GEMM_NR)
                valid = P * CPU_GEMM_NR;
            if (valid <= 0)
                break;
            const uint8_t *bp = (const uint8_t *)b->data + (size_t)p * ps;
            const float *bb = bias ? bias + p * CPU_GEMM_NR : NULL;
            float *yy = y + t0 * ldy + p * CPU_GEMM_NR;
#if defined(GEMM_X86)
            if (isa == CPU_GEMM_AVX512) {
                tiles512[M][P - 1](b->f16, bp, ks, ps, b->n, scratch, bb, (int)valid, yy, ldy);
                continue;
            }
            if (isa == CPU_GEMM_AVX2) {
                tiles256[M](b->f16, bp, ks, b->n, scratch, bb, (int)valid, yy, ldy);
                continue;
            }
#endif
            tile_scalar(M, b->f16, bp, ks, b->n, scratch, bb, (int)valid, yy, ldy);
        }
    }
}

/* ---- elementwise ops ---------------------------------------------------------------------- */

/* x = k ln2 + r, |r| <= ln2/2 (k rounded half away from zero: x <= 0), e^r by its degree-7
 * Taylor polynomial, 2^k put in the exponent bits. Products and sums stay separate roundings
 * (no fma), as in the AVX2 version below. */
float cpu_gemm_exp_neg(float x)
{
    x = x < -87.0f ? -87.0f : x;
    const int32_t k = (int32_t)(x * 1.44269504088896341f - 0.5f);
    const float kf = (float)k;
    const float r = (x - kf * 0.693145751953125f) - kf * 1.42860682030941723e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const uint32_t bits = (uint32_t)(k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

static float gelu_erf1(float x)
{
    const float z = fabsf(x) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.3275911f * z);
    float p = 1.061405429f;
    p = p * t + -1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t + -0.284496736f;
    p = p * t + 0.254829592f;
    const float erf_z = 1.0f - p * t * cpu_gemm_exp_neg(-(z * z));
    return 0.5f * x * (1.0f + copysignf(erf_z, x));
}

#if defined(GEMM_X86)
T256_INLINE __m256 exp_neg8(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256i k = _mm256_cvttps_epi32(
        _mm256_sub_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f)));
    const __m256 kf = _mm256_cvtepi32_ps(k);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(kf, _mm256_set1_ps(0.693145751953125f))),
                                   _mm256_mul_ps(kf, _mm256_set1_ps(1.42860682030941723e-6f)));
    static const float c[] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    for (int i = 0; i < 7; i++)
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c[i]));
    const __m256 two_k = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(p, two_k);
}

T256 static void max_into8(float *mx, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 a = _mm256_loadu_ps(mx + i), v = _mm256_loadu_ps(x + i);
        /* x > mx ? x : mx, as the scalar loop */
        _mm256_storeu_ps(mx + i, _mm256_blendv_ps(a, v, _mm256_cmp_ps(v, a, _CMP_GT_OQ)));
    }
    for (; i < n; i++)
        mx[i] = x[i] > mx[i] ? x[i] : mx[i];
}

T256 static void exp_into8(float *x, const float *mx, float scale, float *sum, int64_t n)
{
    int64_t i = 0;
    const __m256 sc = _mm256_set1_ps(scale);
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp_neg8(
            _mm256_mul_ps(sc, _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(mx + i))));
        _mm256_storeu_ps(x + i, e);
        _mm256_storeu_ps(sum + i, _mm256_add_ps(_mm256_loadu_ps(sum + i), e));
    }
    for (; i < n; i++) {
        x[i] = cpu_gemm_exp_neg(scale * (x[i] - mx[i]));
        sum[i] += x[i];
    }
}

T256 static void gelu8(float *y, int64_t n)
{
    int64_t i = 0;
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    static const float c[] = {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f};
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(y + i);
        const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.70710678118654752f));
        const __m256 t = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(_mm256_set1_ps(0.3275911f), z)));
        __m256 p = _mm256_set1_ps(1.061405429f);
        for (int j = 0; j < 4; j++)
            p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(c[j]));
        const __m256 e = exp_neg8(_mm256_xor_ps(_mm256_mul_ps(z, z), sign));
        const __m256 erf_z = _mm256_sub_ps(one, _mm256_mul_ps(_mm256_mul_ps(p, t), e));
        const __m256 erf_x = _mm256_or_ps(erf_z, _mm256_and_ps(x, sign)); /* erf_z >= 0 */
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x),
                                              _mm256_add_ps(one, erf_x)));
    }
    for (; i < n; i++)
        y[i] = gelu_erf1(y[i]);
}

/* The same operations 16 lanes wide (AVX-512F): the same bits as the 8-lane and scalar code. */
T512_INLINE __m512 exp_neg16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512i k = _mm512_cvttps_epi32(
        _mm512_sub_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(0.5f)));
    const __m512 kf = _mm512_cvtepi32_ps(k);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(kf, _mm512_set1_ps(0.693145751953125f))),
                                   _mm512_mul_ps(kf, _mm512_set1_ps(1.42860682030941723e-6f)));
    static const float c[] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    for (int i = 0; i < 7; i++)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c[i]));
    const __m512 two_k = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(k, _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, two_k);
}

T512 static void exp_into16(float *x, const float *mx, float scale, float *sum, int64_t n)
{
    int64_t i = 0;
    const __m512 sc = _mm512_set1_ps(scale);
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp_neg16(
            _mm512_mul_ps(sc, _mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(mx + i))));
        _mm512_storeu_ps(x + i, e);
        _mm512_storeu_ps(sum + i, _mm512_add_ps(_mm512_loadu_ps(sum + i), e));
    }
    exp_into8(x + i, mx + i, scale, sum + i, n - i);
}

T512 static void gelu16(float *y, int64_t n)
{
    int64_t i = 0;
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512 one = _mm512_set1_ps(1.0f);
    static const float c[] = {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f};
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(y + i);
        const __m512i xi = _mm512_castps_si512(x);
        const __m512 z = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_andnot_si512(sign, xi)),
                                       _mm512_set1_ps(0.70710678118654752f));
        const __m512 t = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(_mm512_set1_ps(0.3275911f), z)));
        __m512 p = _mm512_set1_ps(1.061405429f);
        for (int j = 0; j < 4; j++)
            p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(c[j]));
        const __m512 zz = _mm512_mul_ps(z, z);
        const __m512 e = exp_neg16(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(zz), sign)));
        const __m512 erf_z = _mm512_sub_ps(one, _mm512_mul_ps(_mm512_mul_ps(p, t), e));
        const __m512 erf_x = _mm512_castsi512_ps(
            _mm512_or_si512(_mm512_castps_si512(erf_z), _mm512_and_si512(xi, sign)));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x),
                                              _mm512_add_ps(one, erf_x)));
    }
    gelu8(y + i, n - i);
}
#endif

void cpu_gemm_max_into(cpu_gemm_isa isa, float *mx, const float *x, int64_t n)
{
#if defined(GEMM_X86)
    if (isa != CPU_GEMM_SCALAR) {
        max_into8(mx, x, n);
        return;
    }
#endif
    (void)isa;
    for (int64_t i = 0; i < n; i++)
        mx[i] = x[i] > mx[i] ? x[i] : mx[i];
}

void cpu_gemm_exp_into(cpu_gemm_isa isa, float *x, const float *mx, float scale, float *sum,
                       int64_t n)
{
#if defined(GEMM_X86)
    if (isa == CPU_GEMM_AVX512) {
        exp_into16(x, mx, scale, sum, n);
        return;
    }
    if (isa != CPU_GEMM_SCALAR) {
        exp_into8(x, mx, scale, sum, n);
        return;
    }
#endif
    (void)isa;
    for (int64_t i = 0; i < n; i++) {
        x[i] = cpu_gemm_exp_neg(scale * (x[i] - mx[i]));
        sum[i] += x[i];
    }
}

void cpu_gemm_gelu_erf(cpu_gemm_isa isa, float *y, int64_t n)
{
#if defined(GEMM_X86)
    if (isa == CPU_GEMM_AVX512) {
        gelu16(y, n);
        return;
    }
    if (isa != CPU_GEMM_SCALAR) {
        gelu8(y, n);
        return;
    }
#endif
    (void)isa;
    for (int64_t i = 0; i < n; i++)
        y[i] = gelu_erf1(y[i]);
}
