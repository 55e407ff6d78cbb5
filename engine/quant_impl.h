/* quant_impl.h — private to quant.c and quant_avx2.c: GGML block structs, the activation row
 * layouts (GGML blocks followed by float copies of their scales), and the AVX2 entry points.
 *
 * Byte layouts (GGML's; see quant.h): block structs below are exactly GGML's, checked by size.
 * An activation row of n elements for weight type t is laid out as:
 *   Q8_0 act (Q4_0, Q8_0 weights): nb × block_q8_0 | pad to 4 | nb × {f32 d, i32 8*sum(q)}
 *   Q8_1 act (Q4_1 weights):       nb × block_q8_1 | nb × {f32 d, f32 s}
 *   Q8_K act (Q6_K weights):       nb × block_q8_K
 *   f32 act  (F32, F16, BF16):     n × f32
 * The tails repeat what the blocks hold (d and s widened from fp16 exactly), so the SIMD
 * kernels load a scale with one load instead of converting fp16 per row.
 *
 * The quantised dot product is defined per block b as one exact integer S_b = sum(q_w*q_a)
 * (the -8 of Q4_0 and the -32 of Q6_K included), then in f32
 *   acc = fma((float)S_b, d_w*d_a, acc);   and for Q4_1:  acc = fma(m_w, s_a, acc);
 * from acc = 0, blocks in order. The scalar reference and every SIMD tile compute exactly
 * this per (row, token), so all paths agree bit for bit whatever the batch shape. */
#ifndef SERVAL_QUANT_IMPL_H
#define SERVAL_QUANT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256

typedef struct block_q4_0 {
    uint16_t d;            /* fp16 scale */
    uint8_t qs[QK4_0 / 2]; /* low nibbles = elems 0..15, high nibbles = 16..31 */
} block_q4_0;

typedef struct block_q4_1 {
    uint16_t d; /* fp16 scale */
    uint16_t m; /* fp16 min */
    uint8_t qs[QK4_1 / 2];
} block_q4_1;

typedef struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
} block_q8_0;

typedef struct block_q8_1 {
    uint16_t d;
    uint16_t s; /* fp16 of d * sum(qs) */
    int8_t qs[QK8_1];
} block_q8_1;

typedef struct block_q6_K {
    uint8_t ql[QK_K / 2];      /* low 4 bits */
    uint8_t qh[QK_K / 4];      /* high 2 bits */
    int8_t scales[QK_K / 16];  /* one per 16 elements */
    uint16_t d;                /* fp16 super-block scale */
} block_q6_K;

typedef struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; /* sum of each 16 quants */
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

/* Offsets of the tails inside a Q8_0 / Q8_1 activation row of nb blocks (8 bytes a block). */
static inline size_t quant_q8_0_tail_off(int64_t nb) { return ((size_t)nb * sizeof(block_q8_0) + 3) & ~(size_t)3; }
static inline size_t quant_q8_1_tail_off(int64_t nb) { return (size_t)nb * sizeof(block_q8_1); }

/* Bytes of one weight row of n elements (n a multiple of the block size). */
size_t quant_weight_row_bytes(gguf_dtype t, int64_t n);

#if defined(__x86_64__) || defined(__i386__)
#define SERVAL_QUANT_X86 1
/* quant_avx2.c; only call when quant_cpu_has_avx2(). Same contracts as the public
 * functions in quant.h, for wtype already validated. */
void quant_avx2_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                       const void *act, int64_t n_tok, float *y, int64_t ldy);
void quant_avx2_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n);
#endif

#endif
