/* embed.h — embedding gathers: token embeddings, and learned position embeddings added to the
 * residual stream (C interface). */
#ifndef SERVAL_KN_EMBED_H
#define SERVAL_KN_EMBED_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i, :] = table[tokens[i], :] for i < n; a token outside [0, n_vocab) gives a zero row
 * (the engine validates ids before they reach the GPU). table: [n_vocab, d] of tdt (F32, F16,
 * BF16), device; tokens: [n] int32, device; out: [n, d] of odt (F32 for the residual stream,
 * or F16/BF16), device. Caller owns all buffers. */
kn_status kn_embed(kn_dtype tdt, const void *table, int64_t n_vocab, int64_t d,
                   const int32_t *tokens, int64_t n, kn_dtype odt, void *out, cudaStream_t st);

/* out[i, :] += table[idx[i], :] for i < n, in fp32 (StarCoder's learned positions: idx = the
 * tokens' positions, out = the residual stream after kn_embed); an index outside
 * [0, n_rows) adds nothing. table: [n_rows, d] of tdt (F32, F16, BF16), device; idx: [n]
 * int32, device; out: [n, d] fp32, device. Caller owns all buffers. */
kn_status kn_embed_add(kn_dtype tdt, const void *table, int64_t n_rows, int64_t d,
                       const int32_t *idx, int64_t n, float *out, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
