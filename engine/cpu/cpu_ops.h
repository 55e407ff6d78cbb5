/* cpu_ops.h — the row-wise ops of the CPU forward pass that are not products or attention:
 * RMSNorm, LayerNorm and GELU, each in the arithmetic of llama.cpp's AVX2 CPU build (ggml-cpu's
 * ggml_compute_forward_rms_norm / _norm, ggml_vec_gelu_f32 with GGML_GELU_FP16), so that a
 * family using them can agree with llama.cpp bit for bit. Pure functions of their arguments;
 * no allocation. */
#ifndef SERVAL_CPU_OPS_H
#define SERVAL_CPU_OPS_H

#include <stdint.h>

/* Entries of the GELU table: one per fp16 bit pattern. */
enum { CPU_GELU_TABLE_SIZE = 1 << 16 };

/* Sum of 8 floats in the order of an AVX 256-bit horizontal add (high half + low half, then
 * pairs): how ggml and tinyBLAS reduce one 8-lane accumulator. */
static inline float cpu_hsum8(const float v[8])
{
    const float t0 = v[4] + v[0], t1 = v[5] + v[1], t2 = v[6] + v[2], t3 = v[7] + v[3];
    return (t0 + t2) + (t1 + t3);
}

/* out[0..n) = x / rms(x) * w (Llama's RMSNorm; the sum of squares in double). out may not
 * alias x. */
void cpu_rmsnorm_row(float *out, const float *x, const float *w, int n, float eps);

/* out[0..n) = (x - mean) / sqrt(var + eps) * w + b (LayerNorm, StarCoder): the mean from a
 * double sum rounded to float, the variance of x - mean summed 8 lanes at a time (each group
 * reduced in float, the groups in double), then the weight and the bias as two separate
 * roundings (llama.cpp's ggml_norm, ggml_mul, ggml_add). out may not alias x. */
void cpu_layernorm_row(float *out, const float *x, const float *w, const float *b, int n,
                       float eps);

/* Fills tab[CPU_GELU_TABLE_SIZE] (caller-owned) with GELU (the tanh approximation) of every
 * fp16 value, rounded to fp16 and widened back to float: ggml's ggml_table_gelu_f16, computed
 * with the same fused multiply-add its build contracts (checked equal to the table of
 * llama-cpp-python 0.3.36 for every non-NaN input). Once per runner: 65,536 tanhf calls. */
void cpu_gelu_table_fill(float *tab);

/* x[0..n) = gelu(x) in place through the table: x <= -10 gives 0, x >= 10 gives x, anything
 * else is rounded to fp16 and looked up (ggml_vec_gelu_f32 with GGML_GELU_FP16). */
void cpu_gelu_row(float *x, int64_t n, const float *tab);

#endif
