/* dequant.h — dequantises GGML weight blocks to fp16/bf16 at load (C interface). */
#ifndef SERVAL_KN_DEQUANT_H
#define SERVAL_KN_DEQUANT_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst [n_rows, n_cols] of odt (F16/BF16/F32) = src rows of qtype t (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32), packed back to back as in GGUF; n_cols a multiple of the block size.
 * Same bits as kernels/ref (and engine/cpu/quant.c) before the final rounding. Device memory. */
kn_status kn_dequant(kn_qtype t, const void *src, int64_t n_rows, int64_t n_cols, kn_dtype odt,
                     void *dst, cudaStream_t st);
/* Whether kn_dequant takes qtype t. */
int kn_dequant_supported(kn_qtype t);

#ifdef __cplusplus
}
#endif

#endif
