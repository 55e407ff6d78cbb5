/* gemm_f16.h — many-token matrix products for the encoder (cpu_encoder.c): y = x · B + bias,
 * B an fp16 weight matrix repacked once into column panels (or any f32 matrix viewed as
 * panels, e.g. attention's keys and values), x many f32 activation rows. Register tiles of
 * several tokens share each converted weight vector (F16C), AVX-512 or AVX2+FMA chosen at run
 * time, a scalar path everywhere else.
 *
 * Panel layout (what cpu_gemm_pack_f16/_f32 write, and what a view must look like): output
 * column c lives in panel c / 16 at lane c % 16; within a panel, the 16 lanes of reduction
 * index k are contiguous, k_stride elements after those of k - 1. Every panel, the last one
 * included, must be readable for 16 lanes at every k (packing pads with zeros); outputs past
 * `cols` are never written.
 *
 * Arithmetic: y[t, c] = fma chain over k = 0, 1, ..., n - 1 starting from 0 (each product fused,
 * in that order), then + bias[c] rounded once. Every path (scalar, AVX2, AVX-512, any tile
 * position, any thread split) computes exactly this, so results are the same bits on every
 * CPU and a token's result does not depend on the other tokens of the call. This is not
 * llama.cpp's order: the decoder's F16 products stay on quant_matmul. */
#ifndef SERVAL_GEMM_F16_H
#define SERVAL_GEMM_F16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Lanes (output columns) per panel. */
#define CPU_GEMM_NR 16

typedef enum cpu_gemm_isa {
    CPU_GEMM_SCALAR = 0, /* plain C, any CPU */
    CPU_GEMM_AVX2 = 1,   /* AVX2 + FMA + F16C */
    CPU_GEMM_AVX512 = 2, /* AVX-512F (16-lane tiles of 12 tokens x 32 columns) */
} cpu_gemm_isa;

/* A B operand: n x cols, seen as panels (layout above). Borrowed pointers. */
typedef struct cpu_gemm_b {
    const void *data;  /* panel 0, k = 0, lane 0 */
    bool f16;          /* elements are IEEE fp16 (else f32) */
    int64_t n;         /* reduction length (>= 1) */
    int64_t cols;      /* output columns */
    int64_t k_stride;  /* elements from one k to the next within a panel (>= 16) */
    int64_t p_stride;  /* elements from one panel to the next */
} cpu_gemm_b;

/* The fastest path this CPU runs (probed once). SERVAL_GEMM_ISA=scalar|avx2|avx512 in the
 * environment caps it (benchmarks and tests compare paths on one machine). */
cpu_gemm_isa cpu_gemm_best_isa(void);
/* Whether this CPU can run isa. */
bool cpu_gemm_isa_supported(cpu_gemm_isa isa);
const char *cpu_gemm_isa_name(cpu_gemm_isa isa);

/* Elements a packed matrix of rows x n takes: panels(rows) * 16 * n. */
size_t cpu_gemm_packed_elems(int64_t rows, int64_t n);
/* Repacks W[rows, n] (row-major, row r of output column r; fp16 bits) into panels:
 * out[cpu_gemm_packed_elems(rows, n)] (caller-owned), k_stride 16, p_stride 16 * n. */
void cpu_gemm_pack_f16(const uint16_t *W, int64_t rows, int64_t n, uint16_t *out);
/* The same for f32 rows ld elements apart (attention's keys: rows = tokens, n = head size). */
void cpu_gemm_pack_f32(const float *W, int64_t ld, int64_t rows, int64_t n, float *out);
/* The B view of a packed matrix. */
cpu_gemm_b cpu_gemm_packed(const void *packed, bool f16, int64_t rows, int64_t n);

/* Floats of scratch cpu_gemm needs per calling thread for reduction length n. */
size_t cpu_gemm_scratch_floats(int64_t n);

/* y[t * ldy + c] = x[t, :] · B[:, c] (+ bias[c] when bias is non-NULL) for tokens t in [0, T)
 * and the columns of panels [p0, p1) (clipped to b->cols). x[t, k] is x[t * ldx + k * xks]
 * (xks 1: rows of a matrix; ldx 1: its columns, e.g. attention's values transposed).
 * scratch: cpu_gemm_scratch_floats(b->n) floats owned by the calling thread. isa must be
 * supported. Threads may share B, x and bias and write disjoint panel ranges of y. */
void cpu_gemm_run(cpu_gemm_isa isa, const cpu_gemm_b *b, int64_t p0, int64_t p1,
                  const float *x, int64_t ldx, int64_t xks, int64_t T, const float *bias,
                  float *y, int64_t ldy, float *scratch);

/* The reference: the same contract as three plain loops (what the tests hold the tiles to). */
void cpu_gemm_ref(const cpu_gemm_b *b, int64_t p0, int64_t p1, const float *x, int64_t ldx,
                  int64_t xks, int64_t T, const float *bias, float *y, int64_t ldy);

/* ---- the elementwise ops beside the products (AVX-512, AVX2 or scalar; the
 * same operations in the same order on every path, so the same bits) ------------------------ */

/* exp(x) for x <= 0, relative error ~1e-7 (x below -87 counts as -87: e^-87 ~ 1.6e-38). */
float cpu_gemm_exp_neg(float x);
/* mx[i] = max(mx[i], x[i]) for i < n. */
void cpu_gemm_max_into(cpu_gemm_isa isa, float *mx, const float *x, int64_t n);
/* x[i] = exp(scale * (x[i] - mx[i])) and sum[i] += x[i] for i < n (x[i] <= mx[i], scale > 0):
 * one key's row of a column-wise softmax. */
void cpu_gemm_exp_into(cpu_gemm_isa isa, float *x, const float *mx, float scale, float *sum,
                       int64_t n);
/* y[i] = GELU(y[i]) = y/2 (1 + erf(y / sqrt 2)) for i < n, erf by Abramowitz and Stegun 7.1.26
 * (absolute error under 1.5e-7): the exact (erf) GELU BERT models were trained with. */
void cpu_gemm_gelu_erf(cpu_gemm_isa isa, float *y, int64_t n);

#endif
