/* quant_impl.h — private to quant*.c: GGML block structs, the activation row
 * layouts (GGML blocks followed by float copies of their scales), and the AVX2 entry points.
 *
 * Byte layouts (GGML's; see quant.h): block structs below are exactly GGML's, checked by size.
 * An activation row of n elements for weight type t is laid out as:
 *   Q8_0 act (Q8_0 weights):       nb × block_q8_0 | pad to 4 | nb × f32 d
 *   Q8_0 act (Q4_0, Q5_0 weights): nb × block_q8_0 | pad to 4 | nb × f32 d | nb × i32 off[8]
 *   Q8_1 act (Q4_1, Q5_1 weights): nb × block_q8_1 | nb × {f32 d, f32 s}
 *   Q8_K act (Q4_K, Q5_K, Q6_K):   nb × block_q8_K
 *   f32 act  (F32, F16, BF16):     n × f32
 * The tails repeat what the blocks hold (d and s widened from fp16 exactly), so the SIMD
 * kernels load a scale with one load instead of converting fp16 per row; off[j] = 8 * (the sum
 * of the block's quants 4j..4j+3) takes Q4_0's -8 back from lane j's sum (2 * off[j]: Q5_0's -16).
 *
 * Every dot product follows what llama.cpp's x86 AVX2 build (no AVX-512, no AMX) runs for a
 * batch of tokens, checked bit for bit against it (tests/engine/test_families.c with
 * tests/fixtures/families/, written by tools/gen_family_fixtures.py). Below, d_w and m_w are
 * the weight block's fp16 scale and min widened to f32, d_a (s_a) the activation block's, and
 * S an exact int32 sum of q_w*q_a.
 *
 * Q4_1, Q8_0, Q5_0, Q5_1: the 8-lane order of ggml_vec_dot_q4_1_q8_1 / _q8_0_q8_0 /
 * _q5_0_q8_0 / _q5_1_q8_1 and of tinyBLAS's Q8_0 / Q5_0 tiles (llamafile's sgemm, which llama.cpp
 * runs for two tokens or more; same bits). Per (row, token), eight f32 lanes from 0: for block b,
 * lane j takes the exact int32 p_j = sum of q_w*q_a over elements 4j..4j+3 (Q5_0's -16
 * included; 4-bit elements 0..15 are the low nibbles, 16..31 the high; bit e of a Q5 block's qh
 * is bit 4 of element e), and
 *   d = d_w * d_a;   acc[j] = fma((float)p_j, d, acc[j]);
 * then r_i = acc[i+4] + acc[i] (i < 4), result = (r0 + r2) + (r1 + r3) (hsum_float_8).
 * Q4_1 and Q5_1 also run summs = fma(m_w, s_a, summs) over the blocks and return result + summs.
 * (d_w*d_a and m_w*s_a multiply two fp16 values, so they are exact in f32.)
 *
 * Q4_0: llama.cpp repacks Q4_0 matrices whose row count is a multiple of 8 (every real model's)
 * and runs ggml_gemv/gemm_q4_0_8x8_q8_0 (same arithmetic for one token or four): one chain,
 *   acc = fma((float)S_b, d_w*d_a, acc)    (S_b: block b's 32 products, the -8 included)
 *
 * Q4_K: repacked too (ggml_gemm_q4_K_8x8_q8_K, four tokens at a time): per super-block, for each
 * 64-element chunk c (sub-blocks 2c, 2c+1, 6-bit scales sc and mins m from get_scale_min_k4,
 * S_s the activation quants' sum over sub-block s from bsums):
 *   acc  = fma((float)(sc[2c]*P[2c] + sc[2c+1]*P[2c+1]), d_w*d_a,    acc)
 *   accm = fma((float)(m[2c]*S[2c]  + m[2c+1]*S[2c+1]),  dmin_w*d_a, accm)
 * result acc - accm (P[s]: sub-block s's S). llama.cpp's single-token ggml_gemv_q4_K_8x8_q8_K
 * (also the tokens left over when a batch is not a multiple of four) steps once per
 * super-block instead, so its decode rounds differently from its own prompt path; Serval,
 * whose results never depend on the batch, follows the prompt path.
 *
 * Q5_K, Q6_K: llama.cpp's tiled K-quant matmul (ggml-cpu/tiled, AVX2 microtile; it runs for
 * eight tokens or more, ggml_vec_dot_* below that): per super-block
 *   Q5_K: r = d_w * (float)S1;  r = fma(-dmin_w, (float)S2, r);  acc = fma(r, d_a, acc)
 *   Q6_K: r = d_w * (float)S1;                                   acc = fma(r, d_a, acc)
 * with S1 = sum over sub-blocks of sc * P (Q6_K: the -32 included, int8 scales per 16) and
 * S2 = sum of m * S. (Serval's earlier 8-lane vec_dot order for these and Q4_K, read from the
 * kernels without a llama.cpp binary to compare with, is what llama.cpp runs for fewer than
 * eight tokens on matrices it does not repack; on a prompt it differed in the last bits.)
 *
 * The scalar reference and every SIMD tile compute exactly this per (row, token), so all
 * paths agree bit for bit whatever the batch shape. */
#ifndef SERVAL_QUANT_IMPL_H
#define SERVAL_QUANT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "status.h"

#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK8_1 32
#define QK5_0 32
#define QK5_1 32
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

typedef struct block_q5_0 {
    uint16_t d;             /* fp16 scale */
    uint8_t qh[4];          /* bit e (little-endian u32) = bit 4 of element e */
    uint8_t qs[QK5_0 / 2];  /* low 4 bits: low nibbles = elems 0..15, high = 16..31 */
} block_q5_0;

typedef struct block_q5_1 {
    uint16_t d; /* fp16 scale */
    uint16_t m; /* fp16 min */
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;

/* K-quant 6-bit scales and mins of 8 sub-blocks in 12 bytes (get_scale_min_k4):
 * j < 4: sc = s[j] & 63, m = s[j+4] & 63;
 * j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4, m = (s[j+4] >> 4) | (s[j] >> 6) << 4. */
#define K_SCALE_SIZE 12

typedef struct block_q4_K {
    uint16_t d;                     /* fp16 super-block scale of the scales */
    uint16_t dmin;                  /* fp16 super-block scale of the mins */
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];           /* per 64 elems: 32 bytes, low nibbles = first 32 */
} block_q4_K;

typedef struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];           /* bit 2i / 2i+1 of qh[l]: bit 4 of elem 64i+l / 64i+32+l */
    uint8_t qs[QK_K / 2];           /* as Q4_K */
} block_q5_K;

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
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");

/* Scale and min of sub-block j (0..7) of a K-quant super-block (GGML's get_scale_min_k4). */
static inline void quant_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Offsets of the tails inside a Q8_0 / Q8_1 activation row of nb blocks (4 / 8 bytes a block),
 * and of Q4_0's lane offsets (32 bytes a block). */
static inline size_t quant_q8_0_tail_off(int64_t nb) { return ((size_t)nb * sizeof(block_q8_0) + 3) & ~(size_t)3; }
static inline size_t quant_q8_1_tail_off(int64_t nb) { return (size_t)nb * sizeof(block_q8_1); }
static inline size_t quant_q4_0_lane_off(int64_t nb) { return quant_q8_0_tail_off(nb) + (size_t)nb * 4; }

/* Q4_0's lane offsets of one activation block: off[j] = 8 * (qs[4j] + ... + qs[4j+3]). */
static inline void quant_q4_0_lane_offsets(const int8_t *qs, int32_t off[8])
{
    for (int j = 0; j < 8; j++)
        off[j] = 8 * (qs[4 * j] + qs[4 * j + 1] + qs[4 * j + 2] + qs[4 * j + 3]);
}

/* Bytes of one weight row of n elements (n a multiple of the block size). */
size_t quant_weight_row_bytes(gguf_dtype t, int64_t n);

/* ---- helpers shared by quant.c, quant_write.c and quant_scalar.c ------------------------- */

static inline int64_t quant_block_elems(gguf_dtype t)
{
    switch (t) {
    case GGUF_DTYPE_F32:
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return 1;
    case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q4_1:
    case GGUF_DTYPE_Q5_0:
    case GGUF_DTYPE_Q5_1:
    case GGUF_DTYPE_Q8_0: return 32;
    case GGUF_DTYPE_Q4_K:
    case GGUF_DTYPE_Q5_K:
    case GGUF_DTYPE_Q6_K: return QK_K;
    }
    return 0;
}

/* Internal invariant: callers pass a supported type and a whole number of blocks. */
static inline void quant_check_row(gguf_dtype t, int64_t n)
{
    int64_t be = quant_block_elems(t);
    ENG_ASSERT(be > 0);
    ENG_ASSERT(n >= 0 && n % be == 0);
}

/* Round to nearest, ties to even, for |f| < 2^22 (GGML's nearest_int). */
static inline int quant_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline float quant_h2f(uint16_t h) { return quant_f16_to_f32(h); }
static inline uint16_t quant_f2h(float f) { return quant_f32_to_f16(f); }

#if defined(__x86_64__) || defined(__i386__)
#define SERVAL_QUANT_X86 1
/* quant_avx2.c; only call when quant_cpu_has_avx2(). Same contracts as the public
 * functions in quant.h, for wtype already validated. */
void quant_avx2_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                       const void *act, int64_t n_tok, float *y, int64_t ldy);
void quant_avx2_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n);
/* Whether the CPU has AVX-VNNI (VEX vpdpbusd), which the AVX2 prompt tiles use when present
 * (same bits either way); SERVAL_QUANT_NO_VNNI=1 in the environment turns it off (tests and
 * benchmarks compare both paths on one machine). Probed once. */
bool quant_cpu_has_avx_vnni(void);
/* Whether the CPU has AVX-512 F/BW/VL/DQ and VNNI, which the Q4_1 / Q5_0 / Q5_1 prompt tiles
 * use when present (same bits); SERVAL_QUANT_NO_AVX512=1 turns it off. Probed once. */
bool quant_cpu_has_avx512_vnni(void);
/* quant_k512.c; only call when quant_cpu_has_avx512_vnni(). Runs quant_matmul's contract for
 * the first tokens of the types it has tiles for (Q4_K, Q6_K): whole groups of 16, and all of
 * them when the last group would have 10-15 (Q6_K: only in blocks of 64 with two groups or
 * more); returns how many it did (0 for other types, too few tokens, or no memory). */
int64_t quant_k512_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1, const void *act,
                          int64_t n_tok, float *y, int64_t ldy);
#endif

#endif
