/* bias_add.h — adds an fp32 bias vector to every row of a matrix in place (C interface). */
#ifndef SERVAL_KN_BIAS_ADD_H
#define SERVAL_KN_BIAS_ADD_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x[i, j] = round_dt(x[i, j] + bias[j]) for i < n, j < width; x: F16/BF16 rows `stride`
 * elements apart (e.g. a fused QKV GEMM output with bq|bk|bv concatenated), bias: [width]
 * fp32. The columns past width are untouched. Device memory. */
kn_status kn_bias_add(kn_dtype dt, void *x, int64_t stride, const float *bias, int64_t n,
                      int64_t width, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
