/* layernorm.h — LayerNorm with the residual add fused in (C interface): StarCoder's and
 * StarCoder2's norms (the CUDA backend picks it from the model's descriptor). */
#ifndef SERVAL_KN_LAYERNORM_H
#define SERVAL_KN_LAYERNORM_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* resid += add (add may be NULL), then out = (resid - mean) * rsqrt(var + eps) * weight + bias.
 * resid: [n, d] fp32, in place; add, out: [n, d] of dt (F16/BF16); weight, bias: [d] of dt.
 * All device memory, owned by the caller. */
kn_status kn_layernorm(kn_dtype dt, float *resid, const void *add, const void *weight,
                       const void *bias, void *out, int64_t n, int64_t d, float eps,
                       cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
