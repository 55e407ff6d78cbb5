/* cpu_ops.c — RMSNorm, LayerNorm and GELU rows for the CPU forward pass, in llama.cpp's CPU
 * arithmetic (see cpu_ops.h). */
#include "cpu_ops.h"

#include <math.h>

#include "quant.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

static inline uint16_t to_f16(float f)
{
#if defined(__F16C__)
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    return quant_f32_to_f16(f);
#endif
}

void cpu_rmsnorm_row(float *out, const float *x, const float *w, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        out[i] = (x[i] * scale) * w[i];
}

void cpu_layernorm_row(float *out, const float *x, const float *w, const float *b, int n,
                       float eps)
{
    /* ggml_vec_sum_f32: a double sum, stored as float; the mean divides in float. */
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += (double)x[i];
    const float sum = (float)s;
    const float mean = sum / (float)n;
    /* ggml_vec_cvar_f32 (AVX2 branch): out = x - mean; squares 8 at a time, each group
     * reduced as one 256-bit register, the groups and the tail added in double. */
    double var = 0.0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float sq[8];
        for (int l = 0; l < 8; l++) {
            const float v = x[i + l] - mean;
            out[i + l] = v;
            sq[l] = v * v;
        }
        var += (double)cpu_hsum8(sq);
    }
    for (; i < n; i++) {
        const float v = x[i] - mean;
        out[i] = v;
        var += (double)(v * v);
    }
    const float variance = (float)(var / n);
    const float scale = 1.0f / sqrtf(variance + eps);
    /* ggml_vec_scale_f32, then ggml_mul by the weight, then ggml_add of the bias: three
     * roundings (this file is compiled without floating-point contraction). */
    for (i = 0; i < n; i++)
        out[i] = (out[i] * scale) * w[i] + b[i];
}

/* ggml_gelu_f32 as ggml's build computes it: its compiler contracts 1 + a*x*x into one fused
 * multiply-add (without it, one entry of the table differs). */
static float gelu_f32(float x)
{
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    const float coef_a = 0.044715f;
    return (0.5f * x) * (1.0f + tanhf((sqrt_2_over_pi * x) * fmaf(coef_a * x, x, 1.0f)));
}

void cpu_gelu_table_fill(float *tab)
{
    for (int i = 0; i < CPU_GELU_TABLE_SIZE; i++) {
        const float f = quant_f16_to_f32((uint16_t)i);
        tab[i] = quant_f16_to_f32(to_f16(gelu_f32(f)));
    }
}

void cpu_gelu_row(float *x, int64_t n, const float *tab)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        if (v <= -10.0f)
            x[i] = 0.0f;
        else if (!(v >= 10.0f)) /* NaN too is looked up, as in ggml */
            x[i] = tab[to_f16(v)];
    }
}
