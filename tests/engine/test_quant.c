/* test_quant.c — GGML block formats: exact fp16/bf16 conversion, quantisers bit-exact with
 * llama.cpp's reference, activation quantisation as llama.cpp's x86 build, AVX2 kernels against
 * the scalar reference (bit for bit on quantised types) and a float reference, llama.cpp's
 * 8-lane accumulation order pinned by hand-computed cases, batched == sequential, and rows of
 * the default model. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_forward.h"
#include "gguf.h"
#include "gguf_write.h"
#include "model.h"
#include "quant.h"
#include "testutil.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1), never 0. */
static double rng_unit(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53; }

/* Roughly normal values times `scale`, none exactly zero. */
static void fill_normal(float *x, int64_t n, float scale, uint64_t seed)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        double g = sqrt(-2.0 * log(rng_unit(&s))) * cos(6.283185307179586 * rng_unit(&s));
        float v = (float)(g * scale);
        x[i] = v != 0.0f ? v : scale * 1e-3f;
    }
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float ffrom(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int64_t blk_elems(gguf_dtype t)
{
    return t == GGUF_DTYPE_Q6_K || t == GGUF_DTYPE_Q4_K || t == GGUF_DTYPE_Q5_K ? 256
           : (t == GGUF_DTYPE_F32 || t == GGUF_DTYPE_F16 || t == GGUF_DTYPE_BF16) ? 1 : 32;
}

static size_t wrow_bytes(gguf_dtype t, int64_t n)
{
    switch (t) {
    case GGUF_DTYPE_F32: return (size_t)n * 4;
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return (size_t)n * 2;
    case GGUF_DTYPE_Q4_0: return (size_t)n / 32 * 18;
    case GGUF_DTYPE_Q4_1: return (size_t)n / 32 * 20;
    case GGUF_DTYPE_Q8_0: return (size_t)n / 32 * 34;
    case GGUF_DTYPE_Q6_K: return (size_t)n / 256 * 210;
    case GGUF_DTYPE_Q5_0: return (size_t)n / 32 * 22;
    case GGUF_DTYPE_Q5_1: return (size_t)n / 32 * 24;
    case GGUF_DTYPE_Q4_K: return (size_t)n / 256 * 144;
    case GGUF_DTYPE_Q5_K: return (size_t)n / 256 * 176;
    }
    return 0;
}

static bool is_quantized(gguf_dtype t) { return blk_elems(t) > 1; }

static const gguf_dtype ALL_TYPES[] = {GGUF_DTYPE_F32, GGUF_DTYPE_F16, GGUF_DTYPE_BF16, GGUF_DTYPE_Q4_0,
                                       GGUF_DTYPE_Q4_1, GGUF_DTYPE_Q8_0, GGUF_DTYPE_Q6_K, GGUF_DTYPE_Q5_0,
                                       GGUF_DTYPE_Q5_1, GGUF_DTYPE_Q4_K, GGUF_DTYPE_Q5_K};
#define N_TYPES (sizeof ALL_TYPES / sizeof ALL_TYPES[0])

static const char *tname(gguf_dtype t)
{
    switch (t) {
    case GGUF_DTYPE_F32: return "F32";
    case GGUF_DTYPE_F16: return "F16";
    case GGUF_DTYPE_BF16: return "BF16";
    case GGUF_DTYPE_Q4_0: return "Q4_0";
    case GGUF_DTYPE_Q4_1: return "Q4_1";
    case GGUF_DTYPE_Q8_0: return "Q8_0";
    case GGUF_DTYPE_Q6_K: return "Q6_K";
    case GGUF_DTYPE_Q5_0: return "Q5_0";
    case GGUF_DTYPE_Q5_1: return "Q5_1";
    case GGUF_DTYPE_Q4_K: return "Q4_K";
    case GGUF_DTYPE_Q5_K: return "Q5_K";
    }
    return "?";
}

/* ---- fp16 / bf16 ------------------------------------------------------------------------- */

Test(quant_f16, known_bit_patterns)
{
    static const struct { uint16_t h; float f; } k[] = {
        {0x0000, 0.0f},      {0x3c00, 1.0f},         {0xc000, -2.0f},     {0x3555, 0.333251953125f},
        {0x7bff, 65504.0f},  {0x0400, 0x1p-14f},     {0x0001, 0x1p-24f},  {0x03ff, 0x1.ff8p-15f},
        {0x8001, -0x1p-24f}, {0x7c00, INFINITY},     {0xfc00, -INFINITY}, {0x3c01, 1.0009765625f},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        cr_expect_eq(fbits(quant_f16_to_f32(k[i].h)), fbits(k[i].f), "f16 %04x", k[i].h);
        cr_expect_eq(quant_f32_to_f16(k[i].f), k[i].h, "f32 %a", (double)k[i].f);
    }
    cr_expect_eq(fbits(quant_f16_to_f32(0x8000)), 0x80000000u);
    cr_expect_eq(quant_f32_to_f16(-0.0f), 0x8000);
    cr_expect(isnan(quant_f16_to_f32(0x7e00)));
    cr_expect(isnan(quant_f16_to_f32(0x7c01))); /* signalling NaN stays NaN */
    cr_expect_eq(quant_f32_to_f16(NAN) & 0x7e00, 0x7e00);
    /* rounding: ties to even, overflow, underflow */
    cr_expect_eq(quant_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie, to even */
    cr_expect_eq(quant_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    cr_expect_eq(quant_f32_to_f16(65519.0f), 0x7bff);
    cr_expect_eq(quant_f32_to_f16(65520.0f), 0x7c00);
    cr_expect_eq(quant_f32_to_f16(1e10f), 0x7c00);
    cr_expect_eq(quant_f32_to_f16(0x1p-25f), 0x0000); /* tie between 0 and 2^-24 */
    cr_expect_eq(quant_f32_to_f16(0x1.000002p-25f), 0x0001);
    cr_expect_eq(quant_f32_to_f16(3 * 0x1p-25f), 0x0002); /* tie, to even */
    cr_expect_eq(quant_f32_to_f16(0x1.ffcp-15f), 0x0400);  /* subnormal rounding up to normal */
    cr_expect_eq(quant_f32_to_f16(1e-9f), 0x0000);
}

Test(quant_f16, all_halves_round_trip_and_every_rounding_boundary)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = quant_f16_to_f32((uint16_t)h);
        uint16_t back = quant_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            cr_assert(isnan(f), "%04x should be NaN", h);
            cr_assert_eq(back, (uint16_t)(h | 0x200), "NaN %04x comes back quiet", h);
            continue;
        }
        cr_assert_eq(back, h, "round trip of %04x gave %04x", h, back);
        /* the midpoint to the next half up rounds to the even one; one ulp either side
         * rounds to the nearer one */
        if ((h & 0x7fff) < 0x7bff) {
            float up = quant_f16_to_f32((uint16_t)(h + 1));
            float mid = (float)(((double)f + (double)up) / 2);
            cr_assert_eq((double)mid, ((double)f + (double)up) / 2, "midpoint exact");
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            cr_assert_eq(quant_f32_to_f16(mid), even, "tie above %04x", h);
            cr_assert_eq(quant_f32_to_f16(nextafterf(mid, 0)), h, "below tie of %04x", h);
            cr_assert_eq(quant_f32_to_f16(nextafterf(mid, h & 0x8000 ? -INFINITY : INFINITY)),
                         (uint16_t)(h + 1), "above tie of %04x", h);
        }
    }
}

#if defined(HAVE_X86)
__attribute__((target("f16c"))) static uint16_t hw_f2h(float f) { return (uint16_t)_cvtss_sh(f, 0); }
__attribute__((target("f16c"))) static float hw_h2f(uint16_t h) { return _cvtsh_ss(h); }

Test(quant_f16, matches_f16c_hardware)
{
    if (!__builtin_cpu_supports("avx2"))
        cr_skip("no F16C/AVX2 on this CPU");
    for (uint32_t h = 0; h < 65536; h++)
        cr_assert_eq(fbits(quant_f16_to_f32((uint16_t)h)), fbits(hw_h2f((uint16_t)h)), "h %04x", h);
    /* a stride through every float (odd stride: all exponents and low mantissa bits) */
    for (uint64_t u = 0; u <= 0xffffffffull; u += 251) {
        float f = ffrom((uint32_t)u);
        cr_assert_eq(quant_f32_to_f16(f), hw_f2h(f), "f %08x", (unsigned)u);
    }
}
#endif

Test(quant_bf16, known_patterns_rounding_and_sweep)
{
    cr_expect_eq(quant_f32_to_bf16(1.0f), 0x3f80);
    cr_expect_eq(quant_f32_to_bf16(-2.0f), 0xc000);
    cr_expect_eq(quant_f32_to_bf16(ffrom(0x3f808000u)), 0x3f80); /* tie, to even */
    cr_expect_eq(quant_f32_to_bf16(ffrom(0x3f818000u)), 0x3f82); /* tie, to even (up) */
    cr_expect_eq(quant_f32_to_bf16(ffrom(0x3f808001u)), 0x3f81);
    cr_expect_eq(quant_f32_to_bf16(ffrom(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
    cr_expect_eq(quant_f32_to_bf16(INFINITY), 0x7f80);
    cr_expect_eq(quant_f32_to_bf16(ffrom(0x00018000u)), 0x0002); /* subnormal kept, tie even */
    cr_expect_eq(quant_f32_to_bf16(ffrom(0x7f800001u)) & 0x7fc0, 0x7fc0); /* sNaN made quiet */
    cr_expect_eq(fbits(quant_bf16_to_f32(0x3f80)), fbits(1.0f));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = quant_bf16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        cr_assert_eq(quant_f32_to_bf16(f), h, "bf16 %04x", h);
        if (isinf(f))
            continue;
        /* the dropped half-word decides: below half, exactly half (to even), above half */
        uint32_t b = fbits(f);
        cr_assert_eq(quant_f32_to_bf16(ffrom(b | 0x7fffu)), h, "below half above %04x", h);
        cr_assert_eq(quant_f32_to_bf16(ffrom(b | 0x8000u)), (h & 1) ? h + 1 : h, "tie above %04x", h);
        cr_assert_eq(quant_f32_to_bf16(ffrom(b | 0x8001u)), h + 1, "above half above %04x", h);
    }
}

/* ---- quantisers: bit-exact with llama.cpp's quantize_row_*_ref ---------------------------- */

/* Expected bytes from ggml's reference quantisers (via gguf-py's bit-exact port). */
static const float gold_x[64] = {
    0.00100000005f, 0.149000004f, -0.136999995f, -0.444999993f, -0.226999998f, 1.25800002f,
    0.0299999993f, 0.670000017f, -0.246000007f, -0.310000002f, 0.245000005f, 0.178000003f,
    0.0529999994f, -0.465000004f, -0.0149999997f, 0.34799999f, -0.671999991f, -0.229000002f,
    -0.950999975f, -0.644999981f, -0.921000004f, -0.118000001f, -0.634000003f, 0.136000007f,
    0.0780000016f, -0.0930000022f, -1.25800002f, -0.268999994f, -0.0240000002f, 0.057f,
    -0.764999986f, -0.238999993f, -2.93600011f, -2.42700005f, 3.18300009f, -2.4230001f,
    -0.0979999974f, 2.65300012f, -1.75100005f, -0.335000008f, 0.331f, 0.191f,
    -3.67499995f, 0.228f, 4.07600021f, -4.64099979f, 2.57800007f, 0.35800001f,
    -1.92400002f, 6.00099993f, 2.28699994f, -3.59800005f, 0.224000007f, 1.73000002f,
    -0.565999985f, 2.04900002f, -0.200000003f, 2.00200009f, 4.31599998f, -2.02699995f,
    0.609000027f, -1.38999999f, 0.381999999f, -3.56200004f
};
static const uint8_t gold_q4_0[36] = {
    0x08, 0xb1, 0xc8, 0x97, 0xe9, 0xcb, 0xe9, 0x90, 0xc8, 0x74, 0x8a, 0x9a,
    0xf6, 0xa7, 0x88, 0x8b, 0xd8, 0xa6, 0x00, 0xba, 0xbc, 0x0b, 0x54, 0xdb,
    0x88, 0x64, 0x9a, 0x58, 0x88, 0x58, 0x2d, 0xb8, 0x73, 0xae, 0x75, 0xd8
};
static const uint8_t gold_q4_1[40] = {
    0x5e, 0x31, 0x08, 0xbd, 0x38, 0x68, 0x27, 0x45, 0x26, 0x7f, 0x48, 0x8b,
    0x86, 0x76, 0x09, 0x69, 0x78, 0x85, 0x37, 0x6a, 0xad, 0x39, 0xa4, 0xc4,
    0x42, 0xf3, 0xab, 0x13, 0x76, 0x9a, 0x64, 0x96, 0x67, 0x97, 0xd1, 0x47,
    0x7c, 0x50, 0x7a, 0x27
};
static const uint8_t gold_q8_0[68] = {
    0x12, 0x21, 0x00, 0x0f, 0xf2, 0xd3, 0xe9, 0x7f, 0x03, 0x44, 0xe7, 0xe1,
    0x19, 0x12, 0x05, 0xd1, 0xfe, 0x23, 0xbc, 0xe9, 0xa0, 0xbf, 0xa3, 0xf4,
    0xc0, 0x0e, 0x08, 0xf7, 0x81, 0xe5, 0xfe, 0x06, 0xb3, 0xe8, 0x0c, 0x2a,
    0xc2, 0xcd, 0x43, 0xcd, 0xfe, 0x38, 0xdb, 0xf9, 0x07, 0x04, 0xb2, 0x05,
    0x56, 0x9e, 0x37, 0x08, 0xd7, 0x7f, 0x30, 0xb4, 0x05, 0x25, 0xf4, 0x2b,
    0xfc, 0x2a, 0x5b, 0xd5, 0x0d, 0xe3, 0x08, 0xb5
};

Test(quant_quantize, bit_exact_with_ggml_reference)
{
    uint8_t out[68];
    quant_quantize_row(GGUF_DTYPE_Q4_0, gold_x, out, 64);
    cr_expect_arr_eq(out, gold_q4_0, sizeof gold_q4_0, "Q4_0 bytes");
    quant_quantize_row(GGUF_DTYPE_Q4_1, gold_x, out, 64);
    cr_expect_arr_eq(out, gold_q4_1, sizeof gold_q4_1, "Q4_1 bytes");
    quant_quantize_row(GGUF_DTYPE_Q8_0, gold_x, out, 64);
    cr_expect_arr_eq(out, gold_q8_0, sizeof gold_q8_0, "Q8_0 bytes");
}

/* A random Q6_K block and values from ggml's dequantize_row_q6_K. */
static const uint8_t gold_q6_K[210] = {
    0x10, 0x97, 0xa5, 0x5b, 0x55, 0x10, 0x54, 0x3d, 0x27, 0xed, 0x60, 0x0d,
    0xe3, 0x20, 0x0a, 0x67, 0x49, 0x30, 0x7f, 0xd3, 0x78, 0x99, 0xc1, 0x18,
    0x81, 0x9a, 0xf6, 0x67, 0x43, 0x94, 0xc3, 0xf7, 0xaa, 0x5f, 0x93, 0xf3,
    0x2c, 0x81, 0x0a, 0x37, 0xca, 0x7b, 0xf1, 0x01, 0x3c, 0xcd, 0xf8, 0xab,
    0x8a, 0xb4, 0xa6, 0x03, 0x99, 0x54, 0xe8, 0x4c, 0xbe, 0x3b, 0x3f, 0x7f,
    0x11, 0x83, 0xc3, 0xdf, 0x83, 0x75, 0xc5, 0x17, 0xb4, 0xe7, 0x86, 0xa9,
    0xaa, 0xdf, 0x74, 0x88, 0xf8, 0x92, 0xb1, 0x21, 0x91, 0x38, 0x7a, 0xd8,
    0x6a, 0xca, 0x56, 0xd8, 0x53, 0x1c, 0x92, 0x7b, 0x93, 0x1f, 0xe8, 0xf1,
    0x6e, 0x79, 0x5b, 0x9b, 0x33, 0x17, 0x67, 0xe7, 0x12, 0xdb, 0xe8, 0xf5,
    0x33, 0x1d, 0xd9, 0x91, 0x7f, 0x01, 0xe6, 0x47, 0x10, 0xdd, 0x3c, 0x25,
    0xf4, 0xd2, 0x16, 0x90, 0xa0, 0x49, 0x45, 0x31, 0x35, 0x55, 0x0e, 0xc0,
    0x19, 0x3a, 0x8b, 0xed, 0x17, 0x83, 0xd5, 0x3e, 0xc9, 0x44, 0x65, 0x8d,
    0x1d, 0x28, 0x96, 0x0c, 0x44, 0xb0, 0x38, 0x2e, 0x93, 0x43, 0x8e, 0x60,
    0x78, 0x8d, 0x51, 0xe2, 0x79, 0xa1, 0x31, 0xf8, 0x13, 0x0b, 0x3e, 0xa4,
    0xbd, 0x2f, 0x5d, 0x95, 0xe5, 0x7b, 0xd7, 0x91, 0x43, 0x6d, 0x84, 0x0f,
    0x4e, 0x66, 0x54, 0x60, 0x81, 0x35, 0xbb, 0xfb, 0x88, 0x5d, 0x34, 0x69,
    0x59, 0xa4, 0x9b, 0x36, 0x40, 0x2a, 0x4f, 0x3d, 0xcc, 0x48, 0x9f, 0xb6,
    0x51, 0x1f, 0xbe, 0x09, 0x4c, 0x22
};
static const int gold_q6_K_idx[14] = {0, 1, 15, 16, 31, 32, 63, 64, 100, 127, 128, 160, 200, 255};
static const float gold_q6_K_val[14] = {
    -17.5131836f, -9.85116577f, -9.85116577f, 7.92028809f, -7.92028809f, 7.45294189f,
    -11.2901001f, 13.3808594f, -29.147644f, 21.7561951f, 8.31384277f, -16.7014771f,
    25.9008179f, -1.43893433f
};

Test(quant_dequant, q6_K_matches_ggml)
{
    float y[256];
    quant_dequant_row(GGUF_DTYPE_Q6_K, gold_q6_K, y, 256);
    for (int i = 0; i < 14; i++)
        cr_expect_eq(fbits(y[gold_q6_K_idx[i]]), fbits(gold_q6_K_val[i]), "elem %d: %g vs %g", gold_q6_K_idx[i],
                     (double)y[gold_q6_K_idx[i]], (double)gold_q6_K_val[i]);
}

/* Round trip on random data, with per-type bounds on the relative RMS error and, for the
 * 32-blocks, the worst element against the block's step. */
Test(quant_quantize, round_trip_error_bounds)
{
    static const double max_rel_rms[] = {0.0, 3e-4, 2.5e-3, 0.12, 0.09, 0.006, 0.025,
                                         0.06, 0.05, 0.09, 0.045}; /* ALL_TYPES order */
    const int64_t n = 256 * 24;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    uint8_t *q = malloc(wrow_bytes(GGUF_DTYPE_F32, n));
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        gguf_dtype t = ALL_TYPES[ti];
        for (int trial = 0; trial < 3; trial++) {
            fill_normal(x, n, trial == 0 ? 1.0f : trial == 1 ? 0.01f : 300.0f, 100 + ti * 10 + (uint64_t)trial);
            quant_quantize_row(t, x, q, n);
            for (int64_t i = 0; i < n; i++)
                y[i] = NAN;
            quant_dequant_row(t, q, y, n);
            double se = 0, sx = 0;
            for (int64_t i = 0; i < n; i++) {
                cr_assert(isfinite(y[i]), "%s elem %ld not written", tname(t), (long)i);
                se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                sx += (double)x[i] * x[i];
            }
            double rel = sqrt(se / sx);
            cr_expect(rel <= max_rel_rms[ti] + 1e-12, "%s trial %d: relative RMS error %g > %g", tname(t), trial,
                      rel, max_rel_rms[ti]);
            if (blk_elems(t) != 32)
                continue;
            for (int64_t b = 0; b < n / 32; b++) {
                float lo = x[b * 32], hi = x[b * 32], amax = 0;
                for (int j = 0; j < 32; j++) {
                    float v = x[b * 32 + j];
                    lo = fminf(lo, v);
                    hi = fmaxf(hi, v);
                    amax = fmaxf(amax, fabsf(v));
                }
                /* Q4_0's far side can clamp by a full step */
                double step = t == GGUF_DTYPE_Q8_0   ? amax / 127.0
                              : t == GGUF_DTYPE_Q4_1 ? (hi - lo) / 15.0
                              : t == GGUF_DTYPE_Q5_1 ? (hi - lo) / 31.0
                              : t == GGUF_DTYPE_Q5_0 ? amax / 16.0
                                                     : amax / 8.0;
                /* Q4_0's and Q5_0's far side can clamp by a full step */
                double bound = (t == GGUF_DTYPE_Q4_0 || t == GGUF_DTYPE_Q5_0 ? 1.0 : 0.5) * step * 1.01 + amax * 2e-3;
                for (int j = 0; j < 32; j++)
                    cr_assert(fabs((double)y[b * 32 + j] - x[b * 32 + j]) <= bound, "%s block %ld elem %d: %g vs %g",
                              tname(t), (long)b, j, (double)y[b * 32 + j], (double)x[b * 32 + j]);
            }
        }
    }
    free(x);
    free(y);
    free(q);
}

/* ---- activation quantisation ------------------------------------------------------------- */

/* llama.cpp's x86 activation quantiser rounds half to even (vroundps), unlike roundf: with
 * amax = 127 the scale is exactly 1 and the ties show. */
Test(quant_act, q8_rounds_half_to_even_like_llama_cpp_x86)
{
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j % 8) - 3.5f; /* -3.5 .. 3.5 in steps of 1: all ties */
    x[31] = 127.0f;
    uint8_t act[64];
    quant_act_quantize(GGUF_DTYPE_Q8_0, x, act, 32);
    uint16_t d;
    memcpy(&d, act, 2);
    cr_assert_eq(d, quant_f32_to_f16(1.0f));
    const int8_t *qs = (const int8_t *)act + 2;
    static const int8_t want[8] = {-4, -2, -2, 0, 0, 2, 2, 4};
    for (int j = 0; j < 31; j++)
        cr_expect_eq(qs[j], want[j % 8], "elem %d (%g) -> %d", j, (double)x[j], qs[j]);
    cr_expect_eq(qs[31], 127);
}

Test(quant_act, simd_and_reference_produce_the_same_bytes)
{
    const gguf_dtype wt[] = {GGUF_DTYPE_Q4_0, GGUF_DTYPE_Q8_0, GGUF_DTYPE_Q4_1, GGUF_DTYPE_Q6_K, GGUF_DTYPE_F16,
                             GGUF_DTYPE_Q5_0, GGUF_DTYPE_Q5_1, GGUF_DTYPE_Q4_K, GGUF_DTYPE_Q5_K};
    const int64_t n = 256 * 17;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < sizeof wt / sizeof wt[0]; i++) {
        size_t rb = quant_act_row_bytes(wt[i], n);
        uint8_t *a = malloc(rb), *b = malloc(rb);
        for (int trial = 0; trial < 6; trial++) {
            fill_normal(x, n, trial == 3 ? 1e-3f : 2.0f, 500 + i * 7 + (uint64_t)trial);
            if (trial == 2)
                for (int64_t j = 0; j < n; j++)
                    x[j] = nearbyintf(x[j] * 20) / 20 + 0.025f; /* many exact halves after scaling */
            if (trial == 4) { /* the largest magnitude twice with both signs: the first one sets the scale */
                for (int64_t k = 0; k + 256 <= n; k += 256) {
                    x[k + (k / 256 * 37) % 256] = (k / 256) % 2 ? 9.5f : -9.5f;
                    x[k + 255 - (k / 256 * 11) % 128] = (k / 256) % 2 ? -9.5f : 9.5f;
                }
            }
            if (trial == 5) { /* an all-zero block, and blocks whose largest element is their last */
                memset(x, 0, 256 * sizeof *x);
                for (int64_t k = 256; k + 256 <= n; k += 256)
                    x[k + 255] = -20.f;
            }
            memset(a, 0xAB, rb);
            memset(b, 0xCD, rb);
            quant_act_quantize(wt[i], x, a, n);
            quant_ref_act_quantize(wt[i], x, b, n);
            cr_assert_arr_eq(a, b, rb, "%s activation bytes differ (trial %d)", tname(wt[i]), trial);
        }
        free(a);
        free(b);
    }
    free(x);
}

/* ---- dot products ------------------------------------------------------------------------ */

/* Dequantised weights · dequantised activation, in double. Also returns sum |w_i a_i|, the
 * scale errors are measured against. */
static double float_dot(gguf_dtype t, const void *w, const void *act, int64_t n, double *mag)
{
    float *wf = malloc(n * sizeof *wf), *af = malloc(n * sizeof *af);
    quant_dequant_row(t, w, wf, n);
    quant_act_dequant(t, act, af, n);
    double s = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)wf[i] * af[i];
        m += fabs((double)wf[i] * af[i]);
    }
    free(wf);
    free(af);
    *mag = m;
    return s;
}

/* Allowed |error| / sum|w a| against the float reference. Q4_1's m*s term uses s rounded to
 * fp16 (as llama.cpp does), hence its looser bound. */
static double dot_tol(gguf_dtype t) { return t == GGUF_DTYPE_Q4_1 || t == GGUF_DTYPE_Q5_1 ? 2e-3 : 2e-5; }

Test(quant_dot, simd_vs_scalar_vs_float_reference)
{
    static const int64_t sizes32[] = {32, 64, 96, 576, 1536, 4096 + 32};
    static const int64_t sizes256[] = {256, 512, 2304, 4096 + 256};
    static const int64_t sizes1[] = {1, 7, 8, 9, 31, 576, 4096 + 3};
    if (!quant_cpu_has_avx2())
        cr_log_warn("no AVX2: the SIMD path is the scalar one here");
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        gguf_dtype t = ALL_TYPES[ti];
        const int64_t *sizes = blk_elems(t) == 256 ? sizes256 : blk_elems(t) == 32 ? sizes32 : sizes1;
        size_t ns = blk_elems(t) == 256 ? 4 : blk_elems(t) == 32 ? 6 : 7;
        for (size_t si = 0; si < ns; si++) {
            const int64_t n = sizes[si];
            float *w = malloc(n * sizeof *w), *x = malloc(n * sizeof *x);
            uint8_t *wq = malloc(wrow_bytes(t, n)), *aq = malloc(quant_act_row_bytes(t, n));
            for (int trial = 0; trial < 3; trial++) {
                fill_normal(w, n, 0.05f, 1000 + ti * 100 + si * 10 + (uint64_t)trial);
                fill_normal(x, n, 3.0f, 2000 + ti * 100 + si * 10 + (uint64_t)trial);
                if (trial == 1) /* a bias so Q4_1's min matters and sums don't cancel */
                    for (int64_t i = 0; i < n; i++)
                        w[i] += 0.03f, x[i] = fabsf(x[i]);
                quant_quantize_row(t, w, wq, n);
                quant_act_quantize(t, x, aq, n);
                double mag;
                double fr = float_dot(t, wq, aq, n, &mag);
                float ref = quant_ref_vec_dot(t, wq, aq, n);
                float simd = quant_vec_dot(t, wq, aq, n);
                cr_assert(mag > 0);
                cr_expect(fabs(ref - fr) / mag < dot_tol(t), "%s n=%ld: scalar %g vs float %g (rel %g)", tname(t),
                          (long)n, (double)ref, fr, fabs(ref - fr) / mag);
                cr_expect(fabs(simd - fr) / mag < dot_tol(t), "%s n=%ld: simd %g vs float %g (rel %g)", tname(t),
                          (long)n, (double)simd, fr, fabs(simd - fr) / mag);
                if (is_quantized(t)) /* one defined accumulation order: the same bits on every path */
                    cr_expect_eq(fbits(simd), fbits(ref), "%s n=%ld: simd %a vs scalar %a", tname(t), (long)n,
                                 (double)simd, (double)ref);
                else
                    cr_expect(fabs((double)simd - ref) / mag < 1e-5, "%s n=%ld: simd %g vs scalar %g", tname(t),
                              (long)n, (double)simd, (double)ref);
            }
            free(w);
            free(x);
            free(wq);
            free(aq);
        }
    }
}

/* Extreme quants: all weights at a block's limits and activations at +-127 must not
 * overflow the int16 pair sums of maddubs. */
Test(quant_dot, extreme_values_do_not_overflow)
{
    for (size_t ti = 3; ti < N_TYPES; ti++) {
        gguf_dtype t = ALL_TYPES[ti];
        const int64_t n = 512;
        float w[512], x[512];
        for (int i = 0; i < n; i++) {
            w[i] = (i % 32 == 0) ? -1.0f : (i & 1 ? 1.0f : -1.0f) * (t == GGUF_DTYPE_Q4_1 && i % 32 == 1 ? 0.999f : 1.0f);
            x[i] = (i & 1) ? 5.0f : -5.0f;
        }
        uint8_t wq[1024], aq[2048];
        quant_quantize_row(t, w, wq, n);
        quant_act_quantize(t, x, aq, n);
        double mag, fr = float_dot(t, wq, aq, n, &mag);
        float simd = quant_vec_dot(t, wq, aq, n), ref = quant_ref_vec_dot(t, wq, aq, n);
        cr_expect(fabs(simd - fr) / mag < dot_tol(t), "%s: simd %g vs float %g", tname(t), (double)simd, fr);
        cr_expect(fabs(ref - fr) / mag < dot_tol(t), "%s: scalar %g vs float %g", tname(t), (double)ref, fr);
    }
}

/* ---- llama.cpp's accumulation order, pinned by hand ---------------------------------------- */

/* Blocks with d_w = d_a = 1 + 2^-10 (fp16 0x3c01; activations x = q * (1 + 2^-10) with amax
 * 127 * (1 + 2^-10) quantise to exactly q and that d), so d = d_w*d_a = 1050625 / 2^20 exactly
 * and only the f32 roundings of the accumulation remain. Only lane 0 (elements 0..3) and lane 4
 * (elements 16..19) are nonzero, with exact integer sums p0 and p4 per block.
 *
 * llama.cpp's AVX2 kernels keep eight f32 lanes, acc_j = fma(p_j, d, acc_j) block by block, and
 * finish with hsum_float_8: with only lanes 0 and 4 set that is fl(acc4 + acc0), plus m*s for
 * Q4_1. One fma chain over the block sums (Serval's earlier order) gives fl((p0 + p4) * d):
 *   Q4_1: p0 = 15*(127+35) = 2430, p4 = 1*2 = 2, m = 1, s = fp16(d_a * 164) = 164.125:
 *         acc0 = fl(2434.7484111..) = 2434.748291015625, acc4 = 2*d = 2.00390815..,
 *         fl(acc4 + acc0) = 2436.752197265625, + 164.125 = 2600.877197265625 (0x45228e09);
 *         one chain: fl(2432 d) = 2436.75244140625, + 164.125 = 2600.87744140625 (0x45228e0a).
 *   Q4_0: p0 = 7*(3*127+76) = 3199, p4 = (9-8)*2 = 2:
 *         acc0 = fl(3205.2510976..) = 3205.2509765625, + 2.00390815.. = 3207.2548828125
 *         (0x45487414); one chain: fl(3201 d) = 3207.255126953125 (0x45487415). Q4_0 is the
 *         other way round: llama.cpp's x86 build repacks Q4_0 matrices (rows a multiple of 8)
 *         and its ggml_gemv/gemm_q4_0_8x8_q8_0 run one chain per (row, token), so "want" is
 *         the chain and the lanes are what must not come out.
 *   Q8_0, two blocks (p0, p4) = (127*322, 3) and (127*128, 117), so lanes carry across blocks:
 *         lanes then hsum = 57381.91015625 (0x476025e9); an hsum per block, then summed:
 *         57381.9140625 (0x476025ea); one chain: 57381.90625 (0x476025e8). */
typedef struct pin_case {
    gguf_dtype t;
    int nblk;
    uint8_t w[2][34];   /* weight blocks as stored in GGUF */
    int8_t q[2][32];    /* activation quants (scaled by 1 + 2^-10 into x) */
    uint32_t want, chain;
} pin_case;

Test(quant_dot, llama_cpp_lane_order_pinned)
{
    static const pin_case cases[] = {
        {GGUF_DTYPE_Q4_1, 1,
         {{0x01, 0x3c, 0x00, 0x3c, 0x1f, 0x0f}}, /* d, m = 1; elem 0 = 15 | elem 16 = 1, elem 1 = 15 */
         {{127, 35, [16] = 2}},
         0x45228e09u, 0x45228e0au},
        {GGUF_DTYPE_Q4_0, 1,
         {{0x01, 0x3c, 0x9f, 0x8f, 0x8f, 0x8f, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88,
           0x88}}, /* elems 0..3 = 15-8, elem 16 = 9-8, the rest 8-8 */
         {{127, 127, 127, 76, [16] = 2}},
         0x45487415u, 0x45487414u},
        {GGUF_DTYPE_Q8_0, 2,
         {{0x01, 0x3c, 127, 127, 127, 127, [18] = 1}, {0x01, 0x3c, 127, 127, 127, 127, [18] = 1}},
         {{127, 127, 68, 0, [16] = 3}, {127, 1, 0, 0, [16] = 117}},
         0x476025e9u, 0x476025e8u},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const pin_case *c = &cases[ci];
        const gguf_dtype t = c->t;
        const int64_t n = 32 * c->nblk;
        const size_t wb = wrow_bytes(t, 32);
        uint8_t w[68];
        for (int b = 0; b < c->nblk; b++)
            memcpy(w + wb * (size_t)b, c->w[b], wb);
        float x[64], back[64];
        for (int64_t i = 0; i < n; i++)
            x[i] = (float)c->q[i / 32][i % 32] * (1.0f + 0x1p-10f);
        enum { NT = 5 }; /* four tokens through the prompt tile, one through the single-token one */
        const size_t arow = quant_act_row_bytes(t, n);
        uint8_t *act = malloc(arow * NT);
        for (int k = 0; k < NT; k++)
            quant_act_quantize(t, x, act + arow * (size_t)k, n);
        quant_act_dequant(t, act, back, n);
        cr_assert_arr_eq(back, x, sizeof(float) * (size_t)n, "%s: activations are not exactly q * 0x3c01", tname(t));

        cr_assert_neq(c->want, c->chain);
        float ref = quant_ref_vec_dot(t, w, act, n), simd = quant_vec_dot(t, w, act, n);
        cr_expect_eq(fbits(ref), c->want, "%s scalar reference: %a (%08x), want %a (the other order gives %a)", tname(t),
                     (double)ref, fbits(ref), (double)ffrom(c->want), (double)ffrom(c->chain));
        cr_expect_eq(fbits(simd), c->want, "%s SIMD: %a, want %a", tname(t), (double)simd, (double)ffrom(c->want));
        float y[NT];
        quant_matmul(t, w, n, 0, 1, act, NT, y, 1);
        for (int k = 0; k < NT; k++)
            cr_expect_eq(fbits(y[k]), c->want, "%s matmul token %d: %a, want %a", tname(t), k, (double)y[k],
                         (double)ffrom(c->want));
        free(act);
    }
}

/* ---- matmul ------------------------------------------------------------------------------ */

/* A [rows × n] random weight matrix of type t and n_tok activation rows. */
typedef struct mm_case {
    gguf_dtype t;
    int64_t n, rows, n_tok;
    uint8_t *W, *act;
    size_t arow;
} mm_case;

static void mm_setup(mm_case *c, gguf_dtype t, int64_t n, int64_t rows, int64_t n_tok, uint64_t seed)
{
    c->t = t;
    c->n = n;
    c->rows = rows;
    c->n_tok = n_tok;
    size_t wr = wrow_bytes(t, n);
    c->arow = quant_act_row_bytes(t, n);
    c->W = malloc(wr * (size_t)rows);
    c->act = malloc(c->arow * (size_t)n_tok);
    float *tmp = malloc(n * sizeof *tmp);
    for (int64_t r = 0; r < rows; r++) {
        fill_normal(tmp, n, 0.05f, seed + (uint64_t)r);
        quant_quantize_row(t, tmp, c->W + wr * (size_t)r, n);
    }
    for (int64_t i = 0; i < n_tok; i++) {
        fill_normal(tmp, n, 1.5f, seed + 7777 + (uint64_t)i);
        quant_act_quantize(t, tmp, c->act + c->arow * (size_t)i, n);
    }
    free(tmp);
}

static void mm_free(mm_case *c)
{
    free(c->W);
    free(c->act);
}

static float *nan_buf(size_t n)
{
    float *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = NAN;
    return y;
}

Test(quant_matmul, batched_equals_sequential_bit_for_bit)
{
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        gguf_dtype t = ALL_TYPES[ti];
        const int64_t n = blk_elems(t) == 256 ? 512 : blk_elems(t) == 32 ? 96 : 77;
        const int64_t rows = 37;
        static const int64_t ntoks[] = {7, 70};
        for (int k = 0; k < 2; k++) {
            const int64_t nt = ntoks[k], ldy = rows + 3;
            mm_case c;
            mm_setup(&c, t, n, rows, nt, 77 + ti);
            float *yb = nan_buf((size_t)(ldy * nt)), *ys = nan_buf((size_t)(ldy * nt));
            float *yr = nan_buf((size_t)(ldy * nt));
            quant_matmul(t, c.W, n, 0, rows, c.act, nt, yb, ldy);
            for (int64_t i = 0; i < nt; i++) { /* one token at a time, rows split as two threads would */
                quant_matmul(t, c.W, n, 0, 19, c.act + c.arow * (size_t)i, 1, ys + i * ldy, ldy);
                quant_matmul(t, c.W, n, 19, rows, c.act + c.arow * (size_t)i, 1, ys + i * ldy, ldy);
            }
            quant_ref_matmul(t, c.W, n, 0, rows, c.act, nt, yr, ldy);
            for (int64_t i = 0; i < nt; i++) {
                for (int64_t r = 0; r < ldy; r++) {
                    float b = yb[i * ldy + r], s = ys[i * ldy + r];
                    if (r >= rows) {
                        cr_assert(isnan(b) && isnan(s), "%s wrote past its rows", tname(t));
                        continue;
                    }
                    cr_assert_eq(fbits(b), fbits(s), "%s n_tok=%ld tok %ld row %ld: batched %a vs sequential %a",
                                 tname(t), (long)nt, (long)i, (long)r, (double)b, (double)s);
                    float v = quant_vec_dot(t, c.W + wrow_bytes(t, n) * (size_t)r, c.act + c.arow * (size_t)i, n);
                    cr_assert_eq(fbits(v), fbits(b), "%s: vec_dot differs from matmul", tname(t));
                    double mag = 0;
                    float_dot(t, c.W + wrow_bytes(t, n) * (size_t)r, c.act + c.arow * (size_t)i, n, &mag);
                    if (is_quantized(t))
                        cr_assert_eq(fbits(b), fbits(yr[i * ldy + r]), "%s tok %ld row %ld: %a vs ref %a", tname(t),
                                     (long)i, (long)r, (double)b, (double)yr[i * ldy + r]);
                    else
                        cr_assert(fabs((double)b - yr[i * ldy + r]) / mag < 1e-5, "%s tok %ld row %ld: %g vs ref %g",
                                  tname(t), (long)i, (long)r, (double)b, (double)yr[i * ldy + r]);
                }
            }
            free(yb);
            free(ys);
            free(yr);
            mm_free(&c);
        }
    }
}

/* ---- the default model's real tensors ---------------------------------------------------- */

/* First elements of rows 0, 1 and 100 as ggml's dequantisers give them (via gguf-py). */
static const float emb_rows[3][8] = {
    {-0.106544495f, 0.0329780579f, 0.0481987f, -0.0228309631f,
     -0.0684928894f, -0.0456619263f, 0.0202941895f, -0.121765137f},
    {-0.0238037109f, -0.0158691406f, -0.0396728516f, 0.0158691406f,
     -0.111083984f, -0.00793457031f, -0.0634765625f, 0.0714111328f},
    {0.0190525055f, -0.0843753815f, -0.166028976f, -0.1007061f,
     0.171472549f, -0.0027217865f, -0.1007061f, -0.032661438f}};
static const float q_rows[3][8] = {
    {-0.0963134766f, 0.157348633f, -0.0963134766f, -0.73046875f,
     1.17199707f, -0.0963134766f, 0.0305175781f, 0.664672852f},
    {-0.11730957f, -0.11730957f, -0.192810059f, 0.260192871f,
     -0.494812012f, 0.184692383f, -0.041809082f, -0.041809082f},
    {-0.226196289f, -0.0988769531f, 0.0921020508f, 0.537719727f,
     0.601379395f, -0.289855957f, 0.0921020508f, -0.0988769531f}};

Test(quant_model, real_q4_1_and_q8_0_rows)
{
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(tu_default_model(), &f, &err), ENG_OK, "%s", err.msg);
    const gguf_tensor *emb = gguf_tensor_find(f, "token_embd.weight");
    const gguf_tensor *wq = gguf_tensor_find(f, "blk.0.attn_q.weight");
    cr_assert(emb && wq);
    cr_assert_eq(emb->dtype, GGUF_DTYPE_Q8_0);
    cr_assert_eq(wq->dtype, GGUF_DTYPE_Q4_1);
    const int64_t d = emb->ne[0], vocab = emb->ne[1];
    cr_assert_eq(d, 576);
    static const int64_t rows[3] = {0, 1, 100};
    float *e = malloc(d * sizeof *e);
    for (int k = 0; k < 3; k++) {
        quant_dequant_row(GGUF_DTYPE_Q8_0, (const uint8_t *)emb->data + wrow_bytes(GGUF_DTYPE_Q8_0, d) * rows[k], e, d);
        cr_expect_arr_eq(e, emb_rows[k], sizeof emb_rows[k], "token_embd row %ld", (long)rows[k]);
        quant_dequant_row(GGUF_DTYPE_Q4_1, (const uint8_t *)wq->data + wrow_bytes(GGUF_DTYPE_Q4_1, d) * rows[k], e, d);
        cr_expect_arr_eq(e, q_rows[k], sizeof q_rows[k], "attn_q row %ld", (long)rows[k]);
    }

    /* Real inputs: embeddings of three tokens through attn_q (Q4_1) and the tied output head
     * (Q8_0): SIMD vs scalar vs float reference, and the head's argmax agrees with the float
     * reference's. */
    static const int64_t toks[3] = {504, 1789, 30000};
    struct { const gguf_tensor *w; int64_t nrows; } mats[2] = {{wq, wq->ne[1]}, {emb, vocab}};
    for (int m = 0; m < 2; m++) {
        gguf_dtype t = mats[m].w->dtype;
        const int64_t nr = mats[m].nrows;
        size_t arow = quant_act_row_bytes(t, d), wr = wrow_bytes(t, d);
        uint8_t *act = malloc(arow * 3);
        for (int k = 0; k < 3; k++) {
            quant_dequant_row(GGUF_DTYPE_Q8_0, (const uint8_t *)emb->data + wrow_bytes(GGUF_DTYPE_Q8_0, d) * toks[k], e, d);
            for (int64_t i = 0; i < d; i++)
                e[i] *= 10.0f; /* about the scale of a normed hidden state */
            quant_act_quantize(t, e, act + arow * k, d);
        }
        float *y = nan_buf((size_t)(nr * 3)), *yr = nan_buf((size_t)(nr * 3));
        quant_matmul(t, mats[m].w->data, d, 0, nr, act, 3, y, nr);
        quant_ref_matmul(t, mats[m].w->data, d, 0, nr, act, 3, yr, nr);
        for (int k = 0; k < 3; k++) {
            int64_t best = 0, best_f = 0;
            double bv = -1e30, bvf = -1e30, worst = 0;
            for (int64_t r = 0; r < nr; r++) {
                double mag, fr = float_dot(t, (const uint8_t *)mats[m].w->data + wr * r, act + arow * k, d, &mag);
                double v = y[k * nr + r];
                worst = fmax(worst, fabs(v - fr) / mag);
                cr_assert_eq(fbits(y[k * nr + r]), fbits(yr[k * nr + r]), "row %ld: simd %g vs scalar %g", (long)r,
                             v, (double)yr[k * nr + r]);
                if (v > bv)
                    bv = v, best = r;
                if (fr > bvf)
                    bvf = fr, best_f = r;
            }
            cr_expect(worst < dot_tol(t), "%s: worst relative error %g", tname(t), worst);
            cr_expect_eq(best, best_f, "%s token %ld: argmax %ld vs float %ld", tname(t), (long)toks[k], (long)best,
                         (long)best_f);
            if (t == GGUF_DTYPE_Q8_0)
                cr_expect_eq(best, toks[k], "tied head maps an embedding back to its token");
        }
        free(y);
        free(yr);
        free(act);
    }
    free(e);
    gguf_free(f);
}

/* ---- Q5_0, Q5_1, Q4_K, Q5_K ---------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Row sizes: the quantiser's, GGUF's table and GGML's block sizes agree. */
Test(quant_new_types, row_bytes_match_gguf_and_ggml)
{
    static const struct { gguf_dtype t; int64_t blk; size_t bytes; } k[] = {
        {GGUF_DTYPE_Q5_0, 32, 22}, {GGUF_DTYPE_Q5_1, 32, 24}, {GGUF_DTYPE_Q4_K, 256, 144}, {GGUF_DTYPE_Q5_K, 256, 176}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        cr_expect_eq(gguf_dtype_block_elems(k[i].t), k[i].blk, "%s", tname(k[i].t));
        cr_expect_eq(gguf_dtype_block_bytes(k[i].t), k[i].bytes, "%s", tname(k[i].t));
        for (int64_t m = 1; m <= 9; m += 4) {
            const int64_t n = k[i].blk * m;
            cr_expect_eq(gguf_dtype_row_bytes(k[i].t, n), (size_t)m * k[i].bytes, "%s n=%ld", tname(k[i].t), (long)n);
            cr_expect_eq(wrow_bytes(k[i].t, n), (size_t)m * k[i].bytes);
        }
        cr_expect_str_eq(gguf_dtype_name(k[i].t), tname(k[i].t));
    }
    /* activation formats: Q8_0 with Q4_0's lane offsets for Q5_0, Q8_1 (36 B + 2 f32) for Q5_1,
     * Q8_K (292 B) for the K-quants */
    cr_expect_eq(quant_act_row_bytes(GGUF_DTYPE_Q5_0, 64), quant_act_row_bytes(GGUF_DTYPE_Q4_0, 64));
    cr_expect_eq(quant_act_row_bytes(GGUF_DTYPE_Q5_1, 64), 2 * (36 + 8));
    cr_expect_eq(quant_act_row_bytes(GGUF_DTYPE_Q4_K, 512), 2 * 292);
    cr_expect_eq(quant_act_row_bytes(GGUF_DTYPE_Q5_K, 512), 2 * 292);
}

/* Q5_0 and Q5_1 blocks built by hand: element e's low 4 bits are nibble e (low nibbles 0..15,
 * high 16..31), its bit 4 is bit e of the little-endian u32 qh. */
Test(quant_new_types, q5_0_and_q5_1_hand_built_blocks)
{
    int q[32];
    uint8_t qs[16];
    uint32_t qh = 0;
    for (int e = 0; e < 32; e++)
        q[e] = (e * 7 + 3) % 32; /* every value 0..31 once */
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
    for (int e = 0; e < 32; e++)
        qh |= (uint32_t)(q[e] >> 4) << e;
    uint8_t b0[22], b1[24];
    put16(b0, 0x3800); /* d = 0.5 */
    memcpy(b0 + 2, &qh, 4);
    memcpy(b0 + 6, qs, 16);
    put16(b1, 0x3400);  /* d = 0.25 */
    put16(b1 + 2, 0xc000); /* m = -2 */
    memcpy(b1 + 4, &qh, 4);
    memcpy(b1 + 8, qs, 16);
    float y0[32], y1[32];
    quant_dequant_row(GGUF_DTYPE_Q5_0, b0, y0, 32);
    quant_dequant_row(GGUF_DTYPE_Q5_1, b1, y1, 32);
    for (int e = 0; e < 32; e++) {
        cr_expect_eq(y0[e], 0.5f * (float)(q[e] - 16), "Q5_0 elem %d: %g", e, (double)y0[e]);
        cr_expect_eq(y1[e], 0.25f * (float)q[e] - 2.0f, "Q5_1 elem %d: %g", e, (double)y1[e]);
    }
}

/* The 12 scale bytes of a K-quant super-block from 8 six-bit scales and mins (GGML's packing:
 * j < 4 in the low 6 bits of bytes j and j+4, j >= 4 split into nibbles of byte j+4 plus the
 * top two bits of bytes j-4 and j). */
static void pack_k_scales(const int sc[8], const int mn[8], uint8_t out[12])
{
    memset(out, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            out[j] = (uint8_t)sc[j];
            out[j + 4] = (uint8_t)mn[j];
        } else {
            out[j + 4] = (uint8_t)((sc[j] & 15) | (mn[j] & 15) << 4);
            out[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            out[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* Q4_K / Q5_K blocks with all sixteen 6-bit scales and mins distinct (and the top two bits of
 * several set, so the split packing of sub-blocks 4..7 shows): x = d*sc*q - dmin*m. */
Test(quant_new_types, q4_K_and_q5_K_hand_built_blocks)
{
    static const int sc[8] = {1, 63, 17, 34, 50, 5, 48, 29}, mn[8] = {62, 3, 33, 16, 9, 60, 21, 47};
    int q[256];
    for (int e = 0; e < 256; e++)
        q[e] = (e * 13 + e / 32) % 32;
    uint8_t b4[144], b5[176];
    put16(b4, 0x3c00);     /* d = 1 */
    put16(b4 + 2, 0x3800); /* dmin = 0.5 */
    pack_k_scales(sc, mn, b4 + 4);
    memcpy(b5, b4, 16);
    uint8_t *qs4 = b4 + 16, *qh5 = b5 + 16, *qs5 = b5 + 48;
    memset(qh5, 0, 32);
    for (int g = 0; g < 4; g++) /* 64 elements per 32 bytes: low nibbles first */
        for (int l = 0; l < 32; l++) {
            const int lo = q[64 * g + l], hi = q[64 * g + 32 + l];
            qs4[32 * g + l] = (uint8_t)((lo & 15) | (hi & 15) << 4);
            qs5[32 * g + l] = qs4[32 * g + l];
            qh5[l] |= (uint8_t)((lo >> 4) << (2 * g) | (hi >> 4) << (2 * g + 1));
        }
    float y4[256], y5[256];
    quant_dequant_row(GGUF_DTYPE_Q4_K, b4, y4, 256);
    quant_dequant_row(GGUF_DTYPE_Q5_K, b5, y5, 256);
    for (int e = 0; e < 256; e++) {
        const int s = e / 32;
        const float w4 = (float)sc[s] * (float)(q[e] & 15) - 0.5f * (float)mn[s];
        const float w5 = (float)sc[s] * (float)q[e] - 0.5f * (float)mn[s];
        cr_expect_eq(y4[e], w4, "Q4_K elem %d (sub-block %d): %g, want %g", e, s, (double)y4[e], (double)w4);
        cr_expect_eq(y5[e], w5, "Q5_K elem %d (sub-block %d): %g, want %g", e, s, (double)y5[e], (double)w5);
    }
    /* the quantiser packs the same way: quantise what we just built and get it back closely */
    uint8_t r4[144], r5[176];
    float z4[256], z5[256];
    quant_quantize_row(GGUF_DTYPE_Q4_K, y4, r4, 256);
    quant_quantize_row(GGUF_DTYPE_Q5_K, y5, r5, 256);
    quant_dequant_row(GGUF_DTYPE_Q4_K, r4, z4, 256);
    quant_dequant_row(GGUF_DTYPE_Q5_K, r5, z5, 256);
    double e4 = 0, e5 = 0, s4 = 0, s5 = 0;
    for (int e = 0; e < 256; e++) {
        e4 += ((double)z4[e] - y4[e]) * ((double)z4[e] - y4[e]);
        e5 += ((double)z5[e] - y5[e]) * ((double)z5[e] - y5[e]);
        s4 += (double)y4[e] * y4[e];
        s5 += (double)y5[e] * y5[e];
    }
    cr_expect(sqrt(e4 / s4) < 0.05 && sqrt(e5 / s5) < 0.03, "requantised: %g %g", sqrt(e4 / s4), sqrt(e5 / s5));
}

/* Every token-group shape the matmul takes (1..15 tokens: the 8-token groups, the few-token
 * kernels' groups of 2, 3 and 4 and the single-token tails after them, and a second 64-token
 * block) gives, for every (row, token), exactly the scalar reference's bits; and the scalar
 * reference is within the float64 bound of the dequantised rows' dot product. */
static void check_every_token_group(void)
{
    static const gguf_dtype ts[] = {GGUF_DTYPE_Q5_0, GGUF_DTYPE_Q5_1, GGUF_DTYPE_Q4_K, GGUF_DTYPE_Q5_K,
                                    GGUF_DTYPE_Q4_0, GGUF_DTYPE_Q4_1, GGUF_DTYPE_Q8_0, GGUF_DTYPE_Q6_K};
    static const int64_t ntoks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 26, 40, 56, 58, 67};
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        const gguf_dtype t = ts[ti];
        const int64_t n = blk_elems(t) == 256 ? 768 : 160, rows = 11;
        for (size_t k = 0; k < sizeof ntoks / sizeof ntoks[0]; k++) {
            const int64_t nt = ntoks[k], ldy = rows + 1;
            mm_case c;
            mm_setup(&c, t, n, rows, nt, 9000 + ti * 31 + (uint64_t)k);
            float *ys = nan_buf((size_t)(ldy * nt)), *yr = nan_buf((size_t)(ldy * nt));
            quant_matmul(t, c.W, n, 0, rows, c.act, nt, ys, ldy);
            quant_ref_matmul(t, c.W, n, 0, rows, c.act, nt, yr, ldy);
            for (int64_t i = 0; i < nt; i++)
                for (int64_t r = 0; r < rows; r++) {
                    const float a = ys[i * ldy + r], b = yr[i * ldy + r];
                    cr_assert_eq(fbits(a), fbits(b), "%s n_tok=%ld tok %ld row %ld: simd %a vs scalar %a", tname(t),
                                 (long)nt, (long)i, (long)r, (double)a, (double)b);
                    double mag;
                    const double fr = float_dot(t, c.W + wrow_bytes(t, n) * (size_t)r, c.act + c.arow * (size_t)i, n, &mag);
                    cr_assert(fabs(b - fr) / mag < dot_tol(t), "%s: scalar %g vs float64 %g (rel %g)", tname(t),
                              (double)b, fr, fabs(b - fr) / mag);
                }
            free(ys);
            free(yr);
            mm_free(&c);
        }
    }
}

Test(quant_new_types, simd_equals_scalar_for_every_token_group) { check_every_token_group(); }

/* The prompt tiles use AVX-512 VNNI (Q4_1, Q5_0, Q5_1; Q4_K and Q6_K in groups of 16 tokens, 1-4
 * groups a block, the last one padded when it has 10-15: the 10-16, 26, 40, 56, 58 and 67-token
 * cases) and AVX-VNNI where the CPU has them and
 * 256-bit maddubs + madd where it does not (CI machines may lack both): with each turned off
 * the bits are the same. */
Test(quant_new_types, simd_equals_scalar_for_every_token_group_without_avx512)
{
    cr_assert_eq(setenv("SERVAL_QUANT_NO_AVX512", "1", 1), 0);
    check_every_token_group();
}

Test(quant_new_types, simd_equals_scalar_for_every_token_group_without_avx512_or_avx_vnni)
{
    cr_assert_eq(setenv("SERVAL_QUANT_NO_AVX512", "1", 1), 0);
    cr_assert_eq(setenv("SERVAL_QUANT_NO_VNNI", "1", 1), 0);
    check_every_token_group();
}

/* Decoding runs the K-quants in tiles of eight rows, interleaving their weight streams against
 * one activation: every row count and start (tails of 1..7 rows, a tile cut by the threads'
 * split) must give each row exactly its own scalar-reference result and write nothing else. */
Test(quant_new_types, single_token_row_tiles_equal_the_scalar_reference_for_every_row_count)
{
    static const gguf_dtype ts[] = {GGUF_DTYPE_Q4_K, GGUF_DTYPE_Q6_K, GGUF_DTYPE_Q5_K};
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        const gguf_dtype t = ts[ti];
        const int64_t n = 512, rows = 21;
        mm_case c;
        mm_setup(&c, t, n, rows, 1, 4200 + ti);
        float *yr = nan_buf((size_t)rows);
        quant_ref_matmul(t, c.W, n, 0, rows, c.act, 1, yr, rows);
        for (int64_t r0 = 0; r0 < 4; r0++) {
            for (int64_t r1 = r0 + 1; r1 <= rows; r1++) {
                float *y = nan_buf((size_t)rows);
                quant_matmul(t, c.W, n, r0, r1, c.act, 1, y, rows);
                for (int64_t r = 0; r < rows; r++) {
                    if (r < r0 || r >= r1) {
                        cr_assert(isnan(y[r]), "%s rows [%ld, %ld): row %ld written", tname(t), (long)r0,
                                  (long)r1, (long)r);
                        continue;
                    }
                    cr_assert_eq(fbits(y[r]), fbits(yr[r]), "%s rows [%ld, %ld) row %ld: %a vs scalar %a",
                                 tname(t), (long)r0, (long)r1, (long)r, (double)y[r], (double)yr[r]);
                }
                free(y);
            }
        }
        free(yr);
        mm_free(&c);
    }
}

/* A decode step with 2-7 requests runs the few-token kernels (rows in tiles of 2, 4 or 8 against
 * 2, 3 or 4 tokens): every row count and start (tile tails, a tile cut by the threads' split)
 * must give each (row, token) exactly its scalar-reference bits, the same as that token alone,
 * and write nothing else. */
Test(quant_new_types, few_token_row_tiles_equal_the_scalar_reference_for_every_row_count)
{
    static const gguf_dtype ts[] = {GGUF_DTYPE_Q4_0, GGUF_DTYPE_Q4_1, GGUF_DTYPE_Q8_0, GGUF_DTYPE_Q4_K,
                                    GGUF_DTYPE_Q6_K};
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        const gguf_dtype t = ts[ti];
        const int64_t n = blk_elems(t) == 256 ? 512 : 96, rows = 19;
        for (int64_t nt = 2; nt <= 7; nt++) {
            mm_case c;
            mm_setup(&c, t, n, rows, nt, 5100 + ti * 7 + (uint64_t)nt);
            float *yr = nan_buf((size_t)(rows * nt)), *y1 = nan_buf((size_t)rows);
            quant_ref_matmul(t, c.W, n, 0, rows, c.act, nt, yr, rows);
            for (int64_t i = 0; i < nt; i++) { /* each token alone: the single-token tiles */
                quant_matmul(t, c.W, n, 0, rows, c.act + c.arow * (size_t)i, 1, y1, rows);
                for (int64_t r = 0; r < rows; r++)
                    cr_assert_eq(fbits(y1[r]), fbits(yr[i * rows + r]), "%s token %ld alone row %ld", tname(t),
                                 (long)i, (long)r);
            }
            for (int64_t r0 = 0; r0 < 4; r0++) {
                for (int64_t r1 = r0 + 1; r1 <= rows; r1 += r1 < 10 ? 1 : 3) {
                    float *y = nan_buf((size_t)(rows * nt));
                    quant_matmul(t, c.W, n, r0, r1, c.act, nt, y, rows);
                    for (int64_t i = 0; i < nt; i++)
                        for (int64_t r = 0; r < rows; r++) {
                            const float v = y[i * rows + r];
                            if (r < r0 || r >= r1) {
                                cr_assert(isnan(v), "%s n_tok %ld rows [%ld, %ld): token %ld row %ld written",
                                          tname(t), (long)nt, (long)r0, (long)r1, (long)i, (long)r);
                                continue;
                            }
                            cr_assert_eq(fbits(v), fbits(yr[i * rows + r]),
                                         "%s n_tok %ld rows [%ld, %ld) token %ld row %ld: %a vs scalar %a", tname(t),
                                         (long)nt, (long)r0, (long)r1, (long)i, (long)r, (double)v,
                                         (double)yr[i * rows + r]);
                        }
                    free(y);
                }
            }
            free(yr);
            free(y1);
            mm_free(&c);
        }
    }
}

/* ---- a tiny model in each new type --------------------------------------------------------- */

typedef struct tiny_tensor {
    char name[64];
    int64_t ne[2];
    bool vec;
    void *q;   /* weights in the tested type (or F32 for vectors) */
    float *f;  /* the same weights dequantised: the F32 twin */
} tiny_tensor;

/* The default model's metadata (tokenizer, llama hyper-parameters) resized to 2 layers,
 * d 256, 4 heads of 64, 2 KV heads, ffn 512 so every matrix row is a whole number of 256
 * blocks; tensors random, matrices in `t`, norms F32; the head is tied to token_embd. Writes
 * the model in t to *qpath and its exact F32 twin (the dequantised weights) to *fpath. */
static void write_tiny_pair(gguf_dtype t, char **qpath, char **fpath)
{
    enum { D = 256, FF = 512, KV = 128, NL = 2 };
    gguf_file *src = NULL;
    cr_assert_eq(gguf_open(tu_default_model(), &src, NULL), ENG_OK);
    gguf_str arch;
    cr_assert_eq(gguf_get_str(src, "general.architecture", &arch, NULL), ENG_OK);
    cr_assert(gguf_str_eq(arch, "llama"), "the default model is not llama");
    gguf_arr toks;
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.tokens", &toks, NULL), ENG_OK);
    const int64_t V = (int64_t)toks.n;
    tiny_tensor tt[2 + 9 * NL];
    int nt = 0;
#define TT(nm, a, b, v)                                                                                     \
    (snprintf(tt[nt].name, sizeof tt[nt].name, "%s", nm), tt[nt].ne[0] = (a), tt[nt].ne[1] = (b),            \
     tt[nt].vec = (v), nt++)
    TT("token_embd.weight", D, V, false);
    TT("output_norm.weight", D, 1, true);
    for (int il = 0; il < NL; il++) {
        static const struct { const char *n; int64_t a, b; bool v; } L[] = {
            {"attn_norm.weight", D, 1, true},   {"attn_q.weight", D, D, false},   {"attn_k.weight", D, KV, false},
            {"attn_v.weight", D, KV, false},    {"attn_output.weight", D, D, false}, {"ffn_norm.weight", D, 1, true},
            {"ffn_gate.weight", D, FF, false},  {"ffn_up.weight", D, FF, false},  {"ffn_down.weight", FF, D, false}};
        for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.%s", il, L[k].n);
            TT(nm, L[k].a, L[k].b, L[k].v);
        }
    }
#undef TT
    gguf_writer *wq = gguf_writer_create(), *wf = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(wq, src, ""), ENG_OK);
    cr_assert_eq(gguf_writer_copy_kv(wf, src, ""), ENG_OK);
    static const struct { const char *k; uint32_t v; } hp[] = {
        {"llama.block_count", NL},         {"llama.embedding_length", D},   {"llama.feed_forward_length", FF},
        {"llama.attention.head_count", 4}, {"llama.attention.head_count_kv", 2}, {"llama.rope.dimension_count", 64}};
    for (size_t k = 0; k < sizeof hp / sizeof hp[0]; k++) {
        cr_assert_eq(gguf_writer_set_u32(wq, hp[k].k, hp[k].v), ENG_OK);
        cr_assert_eq(gguf_writer_set_u32(wf, hp[k].k, hp[k].v), ENG_OK);
    }
    for (int i = 0; i < nt; i++) {
        tiny_tensor *x = &tt[i];
        const int64_t n = x->ne[0], rows = x->ne[1];
        const gguf_dtype dt = x->vec ? GGUF_DTYPE_F32 : t;
        const size_t rb = gguf_dtype_row_bytes(dt, n);
        x->q = malloc(rb * (size_t)rows);
        x->f = malloc(sizeof(float) * (size_t)(n * rows));
        cr_assert(x->q && x->f);
        fill_normal(x->f, n * rows, x->vec ? 0.1f : (i == 0 ? 0.5f : 0.06f), 4242 + (uint64_t)i * 17 + (uint64_t)t);
        if (x->vec)
            for (int64_t j = 0; j < n; j++)
                x->f[j] += 1.0f;
        for (int64_t r = 0; r < rows; r++) {
            quant_quantize_row(dt, x->f + r * n, (uint8_t *)x->q + rb * (size_t)r, n);
            quant_dequant_row(dt, (uint8_t *)x->q + rb * (size_t)r, x->f + r * n, n);
        }
        const uint32_t nd = x->vec ? 1 : 2;
        cr_assert_eq(gguf_writer_add_tensor(wq, x->name, dt, nd, x->ne, x->q, rb * (size_t)rows), ENG_OK);
        cr_assert_eq(gguf_writer_add_tensor(wf, x->name, GGUF_DTYPE_F32, nd, x->ne, x->f,
                                            sizeof(float) * (size_t)(n * rows)),
                     ENG_OK);
    }
    *qpath = tu_temp_path(".gguf");
    *fpath = tu_temp_path(".gguf");
    eng_err err = {{0}};
    cr_assert_eq(gguf_writer_write(wq, *qpath, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(gguf_writer_write(wf, *fpath, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(wq);
    gguf_writer_free(wf);
    for (int i = 0; i < nt; i++) {
        free(tt[i].q);
        free(tt[i].f);
    }
    gguf_free(src);
}

/* A 2-layer llama with every matrix in Q5_0, Q5_1, Q4_K or Q5_K (Q4_0 and Q6_K as controls)
 * loads and runs on the CPU backend, and its logits agree with its exact F32 twin: the only
 * differences are the activations' 8-bit quantisation (as llama.cpp does it) and the summation
 * order. Bound: RMS(logits - f32 logits) <= 3% of RMS(f32 logits) for Q8_0/Q8_1 activations
 * (one scale per 32), 5% for Q8_K ones (one per 256: coarser, measured 2-3.5% here, as for
 * Q6_K); and the F32 model's top token scores within 4 RMS(difference) of the top. */
Test(quant_new_types, tiny_model_logits_match_its_f32_twin, .timeout = 120)
{
    static const gguf_dtype ts[] = {GGUF_DTYPE_Q5_0, GGUF_DTYPE_Q5_1, GGUF_DTYPE_Q4_K, GGUF_DTYPE_Q5_K,
                                    GGUF_DTYPE_Q4_0, GGUF_DTYPE_Q6_K};
    static const int32_t prompt[6] = {1, 500, 1234, 77, 9000, 31};
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        char *qp, *fp;
        write_tiny_pair(ts[ti], &qp, &fp);
        eng_model *mq = NULL, *mf = NULL;
        eng_err err = {{0}};
        cr_assert_eq(eng_model_load(qp, &mq, &err), ENG_OK, "%s: %s", tname(ts[ti]), err.msg);
        cr_assert_eq(eng_model_load(fp, &mf, &err), ENG_OK, "F32 twin: %s", err.msg);
        cr_assert_eq(mq->layers[0].wq.dtype, ts[ti]);
        cr_assert_eq(mq->tok_embd.dtype, ts[ti]);
        const int32_t nv = mq->hp.n_vocab;
        float *lq = malloc(sizeof(float) * (size_t)nv * 6), *lf = malloc(sizeof(float) * (size_t)nv * 6);
        eng_cpu_ctx *cq = NULL, *cf = NULL;
        cr_assert_eq(eng_cpu_ctx_create(mq, 16, 2, &cq, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(eng_cpu_ctx_create(mf, 16, 2, &cf, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(eng_cpu_ctx_eval(cq, prompt, 6, lq, true, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(eng_cpu_ctx_eval(cf, prompt, 6, lf, true, &err), ENG_OK, "%s", err.msg);
        for (int k = 0; k < 6; k++) {
            const float *a = lq + (size_t)k * nv, *b = lf + (size_t)k * nv;
            double se = 0, sf = 0;
            int32_t am = 0, bm = 0;
            for (int32_t v = 0; v < nv; v++) {
                cr_assert(isfinite(a[v]));
                se += ((double)a[v] - b[v]) * ((double)a[v] - b[v]);
                sf += (double)b[v] * b[v];
                am = a[v] > a[am] ? v : am;
                bm = b[v] > b[bm] ? v : bm;
            }
            const double rel = sqrt(se / sf), bound = blk_elems(ts[ti]) == 256 ? 0.05 : 0.03;
            cr_expect(sf > 0 && rel <= bound, "%s token %d: logits differ from F32 by %g RMS", tname(ts[ti]), k, rel);
            cr_expect(a[am] - a[bm] <= 4 * sqrt(se / nv), "%s token %d: top token %d, F32's %d scores %g below it",
                      tname(ts[ti]), k, am, bm, (double)(a[am] - a[bm]));
            if (k == 5)
                cr_log_info("%s: last token's logits within %.3g RMS of the F32 twin", tname(ts[ti]), rel);
        }
        eng_cpu_ctx_free(cq);
        eng_cpu_ctx_free(cf);
        eng_model_free(mq);
        eng_model_free(mf);
        free(lq);
        free(lf);
        unlink(qp);
        unlink(fp);
        free(qp);
        free(fp);
    }
}

/* The largest K-quant blocks (every 6-bit scale and min 63, every quant 15 or 31) against
 * activations at +-127: maddubs' int16 pairs (2 * 31 * 127) and the int32 lane sums stay in
 * range, so SIMD, scalar and the float64 dot of the dequantised rows agree. */
Test(quant_new_types, k_quants_at_their_limits_do_not_overflow)
{
    const int sc[8] = {63, 63, 63, 63, 63, 63, 63, 63};
    for (int five = 0; five < 2; five++) {
        const gguf_dtype t = five ? GGUF_DTYPE_Q5_K : GGUF_DTYPE_Q4_K;
        const size_t bb = five ? 176 : 144;
        uint8_t w[2 * 176];
        for (int b = 0; b < 2; b++) {
            uint8_t *x = w + bb * (size_t)b;
            put16(x, 0x3c00);
            put16(x + 2, b ? 0x0000 : 0x3c00); /* second block: no min, so the sums don't cancel */
            pack_k_scales(sc, sc, x + 4);
            memset(x + 16, 0xFF, bb - 16);  /* qh (Q5_K) and qs: every quant at its maximum */
        }
        float xs[512];
        for (int i = 0; i < 512; i++)
            xs[i] = (i & 1) ? 127.0f : (i % 4 == 0 ? 127.0f : -127.0f);
        const size_t arow = quant_act_row_bytes(t, 512);
        uint8_t *act = malloc(arow);
        quant_act_quantize(t, xs, act, 512);
        double mag, fr = float_dot(t, w, act, 512, &mag);
        const float ref = quant_ref_vec_dot(t, w, act, 512), simd = quant_vec_dot(t, w, act, 512);
        cr_expect_eq(fbits(simd), fbits(ref), "%s: simd %a vs scalar %a", tname(t), (double)simd, (double)ref);
        cr_expect(fabs(ref - fr) / mag < dot_tol(t), "%s: scalar %g vs float64 %g", tname(t), (double)ref, fr);
        free(act);
    }
}
