/* ref.h — plain-C reference implementations of every kernel in kernels/: the same layouts
 * and arguments as the launchers, on host memory, written for clarity, not speed. The GPU
 * tests hold each kernel to these; tests/kernels/test_ref_*.c check the non-trivial ones
 * against independent naive versions. Caller owns every buffer. */
#ifndef SERVAL_KN_REF_H
#define SERVAL_KN_REF_H

#include <stddef.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" { /* bench/kernels (C++) calls them too */
#endif

/* ---- element access (convert.c) --------------------------------------------------------- */
float kn_ref_f16_to_f32(uint16_t h);
uint16_t kn_ref_f32_to_f16(float f);  /* round to nearest even */
float kn_ref_bf16_to_f32(uint16_t h);
uint16_t kn_ref_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
/* Element i of an array of dtype t, as float / stored from a float (rounded). */
float kn_ref_load(kn_dtype t, const void *p, size_t i);
void kn_ref_store(kn_dtype t, void *p, size_t i, float v);
/* v rounded through dtype t. */
float kn_ref_round(kn_dtype t, float v);

/* ---- ops ------------------------------------------------------------------------------- */
/* out[i, :] = table[tokens[i], :]; rows of a token outside [0, n_vocab) are zero.
 * table: [n_vocab, d] of tdt; out: [n, d] of odt. */
void kn_ref_embed(kn_dtype tdt, const void *table, int64_t n_vocab, int64_t d,
                  const int32_t *tokens, int64_t n, kn_dtype odt, void *out);
/* out[i, :] += table[idx[i], :] in fp32; an index outside [0, n_rows) adds nothing.
 * table: [n_rows, d] of tdt; out: [n, d] fp32. */
void kn_ref_embed_add(kn_dtype tdt, const void *table, int64_t n_rows, int64_t d,
                      const int32_t *idx, int64_t n, float *out);

/* resid += add (when add is non-NULL), then out = resid / rms(resid) * weight.
 * resid: [n, d] fp32 (the residual stream); add, out: [n, d] of dt; weight: [d] of dt. */
void kn_ref_rmsnorm(kn_dtype dt, float *resid, const void *add, const void *weight, void *out,
                    int64_t n, int64_t d, float eps);
/* Same, with LayerNorm: out = (resid - mean) / sqrt(var + eps) * weight + bias. */
void kn_ref_layernorm(kn_dtype dt, float *resid, const void *add, const void *weight,
                      const void *bias, void *out, int64_t n, int64_t d, float eps);

/* inv_freq[i] = base^(-2i/head_dim) / freq_factors[i] * freq_scale (factors may be NULL),
 * i < head_dim/2: linear scaling multiplies positions by freq_scale, the same as scaling the
 * frequencies. The launcher computes the same table on the host the same way. */
void kn_ref_rope_inv_freq(int32_t head_dim, float base, float freq_scale,
                          const float *freq_factors, float *inv_freq);
/* In place: x [n_tok, n_heads, head_dim], rows row_stride elements apart; token t rotates by
 * angle pos[t] * inv_freq[i]. */
void kn_ref_rope(kn_dtype dt, void *x, int64_t row_stride, const int32_t *pos, int64_t n_tok,
                 int32_t n_heads, int32_t head_dim, float base, float freq_scale,
                 const float *freq_factors, kn_rope_mode mode);

/* k_cache[slots[t], :] = k[t, :], same for v; slots[t] < 0 skips token t.
 * k, v: [n_tok, kv_dim] of sdt, rows src_stride apart; caches: [n_slots, kv_dim] of cdt. */
void kn_ref_kv_write(kn_dtype sdt, const void *k, const void *v, int64_t src_stride,
                     const int32_t *slots, int64_t n_tok, int64_t kv_dim, kn_dtype cdt,
                     void *k_cache, void *v_cache);

/* Paged attention (decode and prefill alike): see kn_attn_args. fp32 math, output rounded. */
void kn_ref_paged_attention(const kn_attn_args *a);

/* out[i, j] = silu(gate[i, j]) * up[i, j]. gate, up: [n, ff] rows in_stride apart;
 * out: [n, ff] rows out_stride apart (may alias gate). */
void kn_ref_swiglu(kn_dtype dt, const void *gate, const void *up, int64_t in_stride, void *out,
                   int64_t out_stride, int64_t n, int64_t ff);
/* out[i] = sum over q < n of in[q][i] in fp32, in rank order, rounded once to dt (the p2p
 * all-reduce's sum, allreduce.c). out may be one of the inputs (element i is read first). */
void kn_ref_sum_ranks(kn_dtype dt, const void *const *in, int n, void *out, int64_t count);

/* x[i, j] = round(x[i, j] + bias[j]) for i < n, j < width; x rows stride apart, bias fp32. */
void kn_ref_bias_add(kn_dtype dt, void *x, int64_t stride, const float *bias, int64_t n,
                     int64_t width);
/* out = gelu(x) with the tanh approximation (GPT-2, StarCoder, ggml_gelu). x, out: [n]. */
void kn_ref_gelu(kn_dtype dt, const void *x, void *out, int64_t n);
/* out = 0.5 x (1 + erf(x / sqrt 2)), the exact GELU (BERT). x, out: [n]. */
void kn_ref_gelu_erf(kn_dtype dt, const void *x, void *out, int64_t n);

/* out[s, :] = v / |v| (v when |v| = 0), v the mean of x's rows seq_off[s] .. + seq_len[s]
 * (cls != 0: the first of them; no rows: zeros), for s < n_seq (kn_pool_l2). x: [n_tok, d] of
 * dt, rows stride apart; out: [n_seq, d] fp32. */
void kn_ref_pool_l2(kn_dtype dt, const void *x, int64_t stride, int64_t d,
                    const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int cls,
                    float *out);

/* Dequantises one row of n elements (a whole number of blocks) of type t to fp32, in the
 * same operation order as engine/cpu/quant.c's quant_dequant_row. */
void kn_ref_dequant_row(kn_qtype t, const void *src, float *dst, int64_t n);
/* dst [n_rows, n_cols] of odt (F16/BF16/F32) = dequantised src rows (packed, no padding). */
void kn_ref_dequant(kn_qtype t, const void *src, int64_t n_rows, int64_t n_cols, kn_dtype odt,
                    void *dst);

/* Picks a token from logits[n_vocab] as the GPU sampler does (see kn_sample_params):
 * sorts, so it is independent of the GPU's threshold search. *u_out (may be NULL) gets the
 * draw scaled to the kept mass, *mass_out (may be NULL) the kept mass. */
int32_t kn_ref_sample(const float *logits, int32_t n_vocab, const kn_sample_params *p,
                      float *u_out, float *mass_out);

/* C[m, n] = alpha * X[m, k] · W[n, k]^T + beta * C (all row-major). X, W of idt; C of odt. */
void kn_ref_gemm(kn_dtype idt, const void *X, const void *W, kn_dtype odt, void *C, int64_t m,
                 int64_t n, int64_t k, float alpha, float beta);

#ifdef __cplusplus
}
#endif

#endif
