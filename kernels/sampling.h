/* sampling.h — token sampling on the GPU: greedy, temperature, top-k, top-p, per-row seeds (C interface). */
#ifndef SERVAL_KN_SAMPLING_H
#define SERVAL_KN_SAMPLING_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* tokens[r] = the token drawn from logits row r with params[r] (see kn_sample_params in
 * kn_args.h), for r < n_rows. One block per row: the top-k and top-p thresholds are found by
 * bisection over the float ordering (no sort), the draw eng_sample_uniform(seed, step) walks
 * the kept tokens in vocabulary order. logits: [n_rows, n_vocab] fp32 rows ld elements apart;
 * params: [n_rows]; tokens: [n_rows] int32; scratch: [n_rows, n_vocab] fp32, or NULL to have
 * the launcher allocate it stream-ordered (pass one when capturing graphs or in a hot loop).
 * Device memory, owned by the caller. */
kn_status kn_sample(const float *logits, int64_t ld, int32_t n_rows, int32_t n_vocab,
                    const kn_sample_params *params, int32_t *tokens, float *scratch,
                    cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
