/* rmsnorm.h — RMSNorm with the residual add fused in (C interface). */
#ifndef SERVAL_KN_RMSNORM_H
#define SERVAL_KN_RMSNORM_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* resid += add (add may be NULL), then out = resid * rsqrt(mean(resid^2) + eps) * weight.
 * resid: [n, d] fp32 residual stream, updated in place; add, out: [n, d] of dt (F16/BF16);
 * weight: [d] of dt. All device memory, owned by the caller; out must not alias resid. */
kn_status kn_rmsnorm(kn_dtype dt, float *resid, const void *add, const void *weight, void *out,
                     int64_t n, int64_t d, float eps, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
