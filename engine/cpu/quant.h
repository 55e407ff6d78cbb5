/* quant.h — GGML block formats: fp16/bf16 conversion, (de)quantisation, and the quantised
 * dot products and matrix multiplies the CPU backend runs on weights that stay quantised.
 *
 * Byte layouts (GGML's, as stored in GGUF; all scales fp16 little-endian):
 *   Q4_0: 32 elems, 18 B = d | 16 B nibbles (low nibbles = elems 0..15, high = 16..31), x = d*(q-8)
 *   Q4_1: 32 elems, 20 B = d | m | 16 B nibbles,                                  x = d*q + m
 *   Q8_0: 32 elems, 34 B = d | 32 × int8,                                          x = d*q
 *   Q5_0: 32 elems, 22 B = d | qh[4] | 16 B nibbles; bit e of qh (u32) is bit 4 of elem e, x = d*(q-16)
 *   Q5_1: 32 elems, 24 B = d | m | qh[4] | 16 B nibbles,                            x = d*q + m
 *   Q4_K: 256 elems, 144 B = d | dmin | scales[12] (8 × 6-bit scale and min) | qs[128],
 *         x = d*sc*q - dmin*m per sub-block of 32
 *   Q5_K: 256 elems, 176 B = d | dmin | scales[12] | qh[32] | qs[128] (Q4_K plus a 5th bit)
 *   Q6_K: 256 elems, 210 B = ql[128] | qh[64] | scales[16] int8 | d (fp16)
 * Activations are quantised per row to the format each weight type multiplies against, as
 * llama.cpp does (so results agree with it): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 (d | s=d*sum(q) |
 * 32 × int8, 36 B) for Q4_1/Q5_1, Q8_K for Q4_K/Q5_K/Q6_K, plain f32 for F32/F16/BF16 weights. Activation quantisation
 * reproduces llama.cpp's x86 build (d = amax/127, q = round-half-even(x * 127/amax)); an
 * activation row holds those GGML blocks followed by float copies of their scales, so use
 * quant_act_row_bytes for its size and treat it as opaque.
 *
 * Weight rows must be 2-byte aligned (4 for F32), activation rows 4-byte aligned (malloc'd
 * buffers are). quant_matmul and quant_vec_dot run AVX2+FMA+F16C kernels when the CPU has
 * them (checked at run time; the library itself builds for baseline x86-64) and the scalar
 * reference (quant_ref_*) otherwise; on quantised weights both give the same bits. Within the
 * AVX2 kernels, the prompt tiles (two tokens or more) also use AVX-VNNI and AVX-512 VNNI where
 * the CPU has them, with the same bits; SERVAL_QUANT_NO_VNNI=1 and SERVAL_QUANT_NO_AVX512=1 in
 * the environment turn those off (tests, benchmarks). */
#ifndef SERVAL_QUANT_H
#define SERVAL_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f); /* round to nearest even */

/* Dequantises n elements (n a multiple of the block size) of `src` to f32. */
void quant_dequant_row(gguf_dtype t, const void *src, float *dst, int64_t n);

/* Quantises n floats to dtype t (any type above) with llama.cpp's quantize_row_*_ref. */
void quant_quantize_row(gguf_dtype t, const float *src, void *dst, int64_t n);

/* Bytes one activation row of n elements takes once quantised for weights of type t. */
size_t quant_act_row_bytes(gguf_dtype wtype, int64_t n);

/* Quantises an activation row x[n] into the format that weights of type `wtype` multiply. */
void quant_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n);

/* Dot product of one weight row (type wtype, n elems) with one quantised activation row;
 * bit-identical to quant_matmul's result for that row and token. */
float quant_vec_dot(gguf_dtype wtype, const void *wrow, const void *act, int64_t n);

/* y[t * ldy + r] = W[r] · x_t for rows r in [r0, r1) and tokens t in [0, n_tok).
 * W: [n_rows, n] of wtype, rows contiguous (row_bytes apart).
 * act: n_tok activation rows from quant_act_quantize, quant_act_row_bytes(wtype, n) apart.
 * Blocked over tokens so each weight row is read once per group of tokens; the result for a
 * token does not depend on n_tok (batched equals sequential bit for bit). */
void quant_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                  const void *act, int64_t n_tok, float *y, int64_t ldy);

/* Dequantises an activation row back to f32 (tests and debugging). */
void quant_act_dequant(gguf_dtype wtype, const void *act, float *dst, int64_t n);

/* Whether quant_matmul/quant_vec_dot/quant_act_quantize take the AVX2 path on this CPU. */
bool quant_cpu_has_avx2(void);

/* Scalar reference versions, the same on every CPU: what the tests hold the SIMD kernels to.
 * quant_ref_act_quantize produces the same bytes as quant_act_quantize. */
void quant_ref_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n);
float quant_ref_vec_dot(gguf_dtype wtype, const void *wrow, const void *act, int64_t n);
void quant_ref_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                      const void *act, int64_t n_tok, float *y, int64_t ldy);

#endif
