/* gelu.h — GELU activation (C interface): the tanh approximation (ggml_gelu's), the FFN of
 * StarCoder and StarCoder2 (up, GELU, down; no gate); and the exact erf form, BERT's. */
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
/* The same with the exact form, 0.5 x (1 + erf(x / sqrt 2)): HF's "gelu", what BERT encoders
 * were trained with (engine/cpu/cpu_encoder.c computes the same in fp32). */
kn_status kn_gelu_erf(kn_dtype dt, const void *x, void *out, int64_t n, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
