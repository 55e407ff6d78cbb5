/* swiglu.h — SwiGLU activation: silu(gate) * up (C interface). */
#ifndef SERVAL_KN_SWIGLU_H
#define SERVAL_KN_SWIGLU_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i, j] = silu(gate[i, j]) * up[i, j], dt F16/BF16. gate, up: [n, ff] rows in_stride
 * elements apart (a fused gate|up GEMM output is gate = buf, up = buf + ff, in_stride 2*ff);
 * out: [n, ff] rows out_stride apart, may be gate itself. Device memory. */
kn_status kn_swiglu(kn_dtype dt, const void *gate, const void *up, int64_t in_stride, void *out,
                    int64_t out_stride, int64_t n, int64_t ff, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
