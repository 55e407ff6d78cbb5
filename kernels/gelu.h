/* gelu.h — GELU activation, tanh approximation (ggml_gelu's; C interface): the FFN of
 * StarCoder and StarCoder2 (up, GELU, down; no gate). */
#ifndef SERVAL_KN_GELU_H
#define SERVAL_KN_GELU_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = gelu(x[i]) for i < n, dt F16/BF16; out may be x. Device memory. */
kn_status kn_gelu(kn_dtype dt, const void *x, void *out, int64_t n, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
