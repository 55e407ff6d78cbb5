/* gelu.h — GELU activation, tanh approximation (C interface). Not called by the engine: the
 * models it serves (llama-style) use SwiGLU; kept, tested and benchmarked for GELU models
 * (StarCoder, GPT-2 style) when the CUDA backend gains them. */
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
