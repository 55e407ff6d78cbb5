/* pool_l2.h — an encoder's sentence embeddings (C interface): each text's rows pooled (mean
 * over its tokens, or its first row: BERT's CLS) and L2-normalised, fp32 out. */
#ifndef SERVAL_KN_POOL_L2_H
#define SERVAL_KN_POOL_L2_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kn_pool_mode {
    KN_POOL_MODE_MEAN = 0, /* the mean of the text's rows (sentence-transformers' default) */
    KN_POOL_MODE_CLS = 1,  /* the text's first row */
} kn_pool_mode;

/* For s < n_seq: v = pool(x[seq_off[s] .. seq_off[s] + seq_len[s]), :]) in fp32, then
 * out[s, :] = v / |v| (v itself when |v| = 0; a text of no rows gives a zero row).
 * x: [n_tok, d] of dt (F32/F16/BF16), rows `stride` elements apart; seq_off, seq_len: [n_seq]
 * int32, every range inside x (not checked: device memory); out: [n_seq, d] fp32, written
 * whole. Device memory; one CTA per text. */
kn_status kn_pool_l2(kn_dtype dt, const void *x, int64_t stride, int64_t d,
                     const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq,
                     kn_pool_mode mode, float *out, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
