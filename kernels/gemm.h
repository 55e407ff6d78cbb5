/* gemm.h — bf16/fp16 matrix products through cuBLAS with fp32 accumulation (C interface). */
#ifndef SERVAL_KN_GEMM_H
#define SERVAL_KN_GEMM_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_gemm kn_gemm;

/* Creates a cuBLAS handle with its own workspace (so products can be captured in CUDA
 * graphs). One thread at a time may use it (like the cuBLAS handle inside). *out is owned by
 * the caller: kn_gemm_free. */
kn_status kn_gemm_create(kn_gemm **out);
void kn_gemm_free(kn_gemm *g);

/* C[m, n] = alpha * X[m, k] · W[n, k]^T + beta * C: activations times a weight stored as
 * GGUF/PyTorch do ([out_features, in_features], row-major). X, W of idt (F16/BF16); C of
 * odt (idt, or F32 for logits). Row strides ldx, ldw, ldc in elements. Device memory. */
kn_status kn_gemm_run(kn_gemm *g, cudaStream_t st, kn_dtype idt, const void *X, int64_t ldx,
                      const void *W, int64_t ldw, kn_dtype odt, void *C, int64_t ldc,
                      int64_t m, int64_t n, int64_t k, float alpha, float beta);

#ifdef __cplusplus
}
#endif

#endif
