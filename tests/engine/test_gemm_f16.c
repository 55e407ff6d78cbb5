/* test_gemm_f16.c — the encoder's many-token products (engine/cpu/gemm_f16.c): the packing
 * layout, the reference against double-precision sums, and every tile path this CPU runs
 * (scalar, AVX2, AVX-512) equal to the reference bit for bit on odd shapes (token, column and
 * panel tails, reductions of 1 to 1537), strided views, thread splits and batch independence. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_f16.h"
#include "quant.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1), never exactly 0. */
static float rng_f(uint64_t *s)
{
    float v = (float)((double)(rng_next(s) >> 11) * 0x1p-52 - 1.0);
    return v != 0.0f ? v : 0.5f;
}

static const float POISON = -12345.678f;

/* A random fp16 matrix W[rows, n] (row-major) and its packed panels; caller frees both. */
static void make_f16(int64_t rows, int64_t n, uint64_t seed, uint16_t **w, uint16_t **packed)
{
    *w = malloc(sizeof(uint16_t) * (size_t)(rows * n));
    *packed = malloc(sizeof(uint16_t) * cpu_gemm_packed_elems(rows, n));
    cr_assert(*w && *packed);
    for (int64_t i = 0; i < rows * n; i++)
        (*w)[i] = quant_f32_to_f16(rng_f(&seed) * 0.25f);
    cpu_gemm_pack_f16(*w, rows, n, *packed);
}

static float *make_x(int64_t T, int64_t ld, uint64_t seed)
{
    float *x = malloc(sizeof(float) * (size_t)(T * ld));
    for (int64_t i = 0; i < T * ld; i++)
        x[i] = rng_f(&seed);
    return x;
}

static float *poisoned(size_t n)
{
    float *y = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        y[i] = POISON;
    return y;
}

/* Runs isa and the reference on the same case; every written value the same bits, every value
 * outside the columns of [p0, p1) still the poison. */
static void check_isa(cpu_gemm_isa isa, const cpu_gemm_b *b, int64_t p0, int64_t p1,
                      const float *x, int64_t ldx, int64_t xks, int64_t T, const float *bias,
                      const char *what)
{
    const int64_t ldy = b->cols + 3;
    float *want = poisoned((size_t)(T * ldy)), *got = poisoned((size_t)(T * ldy));
    float *scratch = malloc(sizeof(float) * cpu_gemm_scratch_floats(b->n));
    cpu_gemm_ref(b, p0, p1, x, ldx, xks, T, bias, want, ldy);
    cpu_gemm_run(isa, b, p0, p1, x, ldx, xks, T, bias, got, ldy, scratch);
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < ldy; c++) {
            const float g = got[t * ldy + c], w = want[t * ldy + c];
            const bool inside = c >= p0 * CPU_GEMM_NR && c < p1 * CPU_GEMM_NR && c < b->cols;
            cr_assert(memcmp(&g, &w, sizeof g) == 0,
                      "%s, %s: T %lld, cols %lld, n %lld, panels [%lld, %lld): y[%lld, %lld] = "
                      "%.9g, the reference %.9g", cpu_gemm_isa_name(isa), what, (long long)T,
                      (long long)b->cols, (long long)b->n, (long long)p0, (long long)p1,
                      (long long)t, (long long)c, g, w);
            if (!inside)
                cr_assert_eq(g, POISON, "%s: y[%lld, %lld] outside the panels was written",
                             what, (long long)t, (long long)c);
        }
    free(want), free(got), free(scratch);
}

static void check_all_isas(const cpu_gemm_b *b, int64_t p0, int64_t p1, const float *x,
                           int64_t ldx, int64_t xks, int64_t T, const float *bias,
                           const char *what)
{
    for (int i = CPU_GEMM_SCALAR; i <= CPU_GEMM_AVX512; i++)
        if (cpu_gemm_isa_supported((cpu_gemm_isa)i))
            check_isa((cpu_gemm_isa)i, b, p0, p1, x, ldx, xks, T, bias, what);
}

Test(gemm_f16, packing_puts_column_c_at_lane_c_mod_16_of_panel_c_div_16_and_pads_with_zeros)
{
    uint16_t *w, *p;
    make_f16(37, 5, 1, &w, &p);
    cr_assert_eq(cpu_gemm_packed_elems(37, 5), (size_t)3 * 16 * 5);
    for (int64_t c = 0; c < 48; c++)
        for (int64_t k = 0; k < 5; k++) {
            const uint16_t got = p[(size_t)(c / 16) * 80 + (size_t)k * 16 + (size_t)(c % 16)];
            cr_assert_eq(got, c < 37 ? w[c * 5 + k] : 0, "column %lld, k %lld", (long long)c,
                         (long long)k);
        }
    free(w), free(p);
}

Test(gemm_f16, the_reference_agrees_with_double_precision_sums)
{
    const int64_t rows = 50, n = 300, T = 7;
    uint16_t *w, *p;
    make_f16(rows, n, 2, &w, &p);
    float *x = make_x(T, n, 3), *bias = make_x(1, rows, 4), y[7 * 50];
    const cpu_gemm_b b = cpu_gemm_packed(p, true, rows, n);
    cpu_gemm_ref(&b, 0, 4, x, n, 1, T, bias, y, rows);
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < n; k++) {
                const double prod = (double)quant_f16_to_f32(w[r * n + k]) * x[t * n + k];
                s += prod, mag += fabs(prod);
            }
            s += bias[r];
            cr_assert(fabs(y[t * rows + r] - s) <= 1e-5 * (mag + fabs(bias[r])),
                      "y[%lld, %lld] = %.9g, double %.9g", (long long)t, (long long)r,
                      y[t * rows + r], s);
        }
    free(w), free(p), free(x), free(bias);
}

/* Shapes around every tail: tokens around the 6- and 12-token tiles, columns around 16 and 32,
 * reductions from 1 up past MiniLM's 1536. */
Test(gemm_f16, every_path_equals_the_reference_bit_for_bit_on_odd_shapes_f16)
{
    const int64_t Ts[] = {1, 5, 6, 7, 11, 12, 13, 25};
    const int64_t cols[] = {1, 15, 16, 17, 33, 48, 70};
    const int64_t ns[] = {1, 3, 17, 64, 385};
    uint64_t seed = 10;
    for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            uint16_t *w, *p;
            make_f16(cols[ci], ns[ni], seed++, &w, &p);
            const cpu_gemm_b b = cpu_gemm_packed(p, true, cols[ci], ns[ni]);
            const int64_t np = (cols[ci] + 15) / 16;
            float *bias = make_x(1, cols[ci], seed++);
            for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                const int64_t ldx = ns[ni] + 2; /* rows not back to back */
                float *x = make_x(Ts[ti], ldx, seed++);
                check_all_isas(&b, 0, np, x, ldx, 1, Ts[ti], ti % 2 ? bias : NULL, "f16");
                free(x);
            }
            free(w), free(p), free(bias);
        }
    /* MiniLM's shapes (37 tokens: three 12-token tiles and a tail, six 6-token tiles and one) */
    const int64_t big[][2] = {{384, 384}, {1536, 384}, {384, 1537}};
    for (size_t i = 0; i < 3; i++) {
        uint16_t *w, *p;
        make_f16(big[i][0], big[i][1], seed++, &w, &p);
        const cpu_gemm_b b = cpu_gemm_packed(p, true, big[i][0], big[i][1]);
        float *x = make_x(37, big[i][1], seed++), *bias = make_x(1, big[i][0], seed++);
        check_all_isas(&b, 0, (big[i][0] + 15) / 16, x, big[i][1], 1, 37, bias, "f16 MiniLM");
        free(w), free(p), free(x), free(bias);
    }
}

Test(gemm_f16, every_path_equals_the_reference_on_f32_panels_and_strided_views)
{
    /* attention's S^T = K Q^T: 23 queries packed as f32 panels (head size 32 at column 32 of
     * rows 96 wide), the keys' rows as tokens */
    const int64_t n = 23, hd = 32, d = 96, lds = 48;
    float *q = make_x(n, d, 20), *k = make_x(n, d, 21);
    float *qp = malloc(sizeof(float) * cpu_gemm_packed_elems(n, hd));
    cpu_gemm_pack_f32(q + 32, d, n, hd, qp);
    const cpu_gemm_b Q = cpu_gemm_packed(qp, false, n, hd);
    check_all_isas(&Q, 0, 2, k + 32, d, 1, n, NULL, "f32 packed queries");
    /* O^T = V^T P: S^T's rows (lds apart) read in place as panels, V's columns as the tokens
     * (x[t, k] = v[k * d + t]: the transposed pack) */
    float *st = make_x(n, lds, 22), *v = make_x(n, d, 23);
    const cpu_gemm_b P = {st, false, n, n, lds, 16};
    check_all_isas(&P, 0, 2, v + 32, 1, d, hd, NULL, "f32 view, transposed x");
    free(q), free(k), free(qp), free(st), free(v);
}

/* Threads take disjoint panel ranges, even and odd, and together write what one call writes;
 * and a token's result does not depend on which other tokens share the call. */
Test(gemm_f16, panel_ranges_and_batches_do_not_change_a_result)
{
    const int64_t rows = 100, n = 77, T = 29; /* 7 panels, the last one partial */
    uint16_t *w, *p;
    make_f16(rows, n, 30, &w, &p);
    const cpu_gemm_b b = cpu_gemm_packed(p, true, rows, n);
    float *x = make_x(T, n, 31), *bias = make_x(1, rows, 32);
    const int64_t splits[][2] = {{0, 1}, {1, 4}, {3, 6}, {5, 7}, {6, 7}};
    for (size_t s = 0; s < 5; s++)
        check_all_isas(&b, splits[s][0], splits[s][1], x, n, 1, T, bias, "panel range");
    float *scratch = malloc(sizeof(float) * cpu_gemm_scratch_floats(n));
    float *all = malloc(sizeof(float) * (size_t)(T * rows)), one[100];
    for (int i = CPU_GEMM_SCALAR; i <= CPU_GEMM_AVX512; i++) {
        const cpu_gemm_isa isa = (cpu_gemm_isa)i;
        if (!cpu_gemm_isa_supported(isa))
            continue;
        cpu_gemm_run(isa, &b, 0, 7, x, n, 1, T, bias, all, rows, scratch);
        for (int64_t t = 0; t < T; t++) {
            cpu_gemm_run(isa, &b, 0, 7, x + t * n, n, 1, 1, bias, one, rows, scratch);
            cr_assert(memcmp(one, all + t * rows, sizeof one) == 0,
                      "%s: token %lld alone differs from the batch of %lld",
                      cpu_gemm_isa_name(isa), (long long)t, (long long)T);
        }
    }
    free(w), free(p), free(x), free(bias), free(scratch), free(all);
}

Test(gemm_f16, the_best_path_is_one_this_cpu_supports)
{
    const cpu_gemm_isa best = cpu_gemm_best_isa();
    cr_assert(cpu_gemm_isa_supported(best), "%s", cpu_gemm_isa_name(best));
    cr_assert(cpu_gemm_isa_supported(CPU_GEMM_SCALAR));
    if (quant_cpu_has_avx2())
        cr_assert(cpu_gemm_isa_supported(CPU_GEMM_AVX2));
    else
        cr_assert_eq(best, CPU_GEMM_SCALAR);
}

/* The elementwise ops against libm: exp on softmax's range, the erf GELU over the values an
 * FFN produces, every path the same bits. */
Test(gemm_f16, exp_and_the_erf_gelu_agree_with_libm_on_every_path)
{
    enum { N = 4099 }; /* a tail past the 8-lane blocks */
    static float x[N], mx[N], sum[N], ref_sum[N], y[N], g[N], g0[N];
    for (int i = 0; i < N; i++) {
        x[i] = -90.0f * (float)i / N;  /* 0 down to -90: past the -87 floor */
        g0[i] = -12.0f + 24.0f * (float)i / (N - 1);
    }
    for (int i = CPU_GEMM_SCALAR; i <= CPU_GEMM_AVX512; i++) {
        const cpu_gemm_isa isa = (cpu_gemm_isa)i;
        if (!cpu_gemm_isa_supported(isa))
            continue;
        for (int j = 0; j < N; j++)
            y[j] = x[j], mx[j] = 0.0f, sum[j] = 1.0f;
        cpu_gemm_exp_into(isa, y, mx, 1.0f, sum, N);
        for (int j = 0; j < N; j++) {
            const double want = exp((double)x[j] < -87.0 ? -87.0 : (double)x[j]);
            cr_assert(fabs(y[j] - want) <= 3e-7 * want, "%s: exp(%.7g) = %.9g, libm %.9g",
                      cpu_gemm_isa_name(isa), x[j], y[j], want);
            cr_assert_eq(sum[j], 1.0f + y[j]);
            cr_assert_eq(y[j], cpu_gemm_exp_neg(x[j]), "%s: exp(%.7g) differs from the scalar",
                         cpu_gemm_isa_name(isa), x[j]);
        }
        memcpy(g, g0, sizeof g);
        cpu_gemm_gelu_erf(isa, g, N);
        for (int j = 0; j < N; j++) {
            const double v = g0[j], want = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
            cr_assert(fabs(g[j] - want) <= 2e-7 * (1.0 + fabs(v)), "%s: gelu(%.7g) = %.9g, "
                      "libm %.9g", cpu_gemm_isa_name(isa), v, g[j], want);
            if (i == CPU_GEMM_SCALAR)
                ref_sum[j] = g[j];
            else
                cr_assert_eq(g[j], ref_sum[j], "%s: gelu(%.7g) differs from the scalar path",
                             cpu_gemm_isa_name(isa), v);
        }
    }
    float m2[3] = {-INFINITY, 1.0f, 5.0f};
    const float v2[3] = {-3.0f, 2.0f, 4.0f};
    cpu_gemm_max_into(cpu_gemm_best_isa(), m2, v2, 3);
    cr_assert(m2[0] == -3.0f && m2[1] == 2.0f && m2[2] == 5.0f);
}
