/* cuda_util.h — how engine/cuda/ turns a failed CUDA runtime call or kernels/ launcher into an
 * eng_status with a message, and allocates device memory: the one rule for which status a
 * failure is (an allocation that failed: ENG_ERR_NOMEM; anything else: ENG_ERR_CUDA), shared
 * by the backend (backend_cuda.c) and the encoder (encoder_cuda.c). Built only with
 * SERVAL_HAVE_CUDA. */
#ifndef SERVAL_CUDA_UTIL_H
#define SERVAL_CUDA_UTIL_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "kn_status.h"
#include "status.h"

/* Fills err with "<what>: <CUDA's text for e>" and returns ENG_ERR_NOMEM for
 * cudaErrorMemoryAllocation, ENG_ERR_CUDA otherwise. `what` names the step, and any prefix the
 * caller's messages carry ("encoder on GPU: uploading a bias"). */
eng_status cuda_fail(eng_err *err, const char *what, cudaError_t e);

/* Fills err with "<what>: <status name> (<kn_last_error()>)" and returns ENG_ERR_NOMEM for
 * KN_ERR_NOMEM, ENG_ERR_CUDA otherwise. */
eng_status cuda_kn_fail(eng_err *err, const char *what, kn_status s);

/* *p = a new device buffer of `bytes` on the current device (16 for 0, so every buffer is a
 * real pointer), owned by the caller (cudaFree). On failure *p = NULL and ENG_ERR_NOMEM with
 * "<what>: allocating <bytes> bytes on the GPU: <CUDA's text>". */
eng_status cuda_dev_alloc(void **p, size_t bytes, const char *what, eng_err *err);

/* In a function returning eng_status with `eng_err *err` in scope: returns cuda_fail (a CUDA
 * runtime call) or cuda_kn_fail (a kernels/ launcher) when `call` fails. */
#define CUDA_TRY(what, call)                                                                 \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return cuda_fail(err, what, e_);                                                 \
    } while (0)
#define KN_TRY(what, call)                                                                   \
    do {                                                                                     \
        kn_status s_ = (call);                                                               \
        if (s_ != KN_OK)                                                                     \
            return cuda_kn_fail(err, what, s_);                                              \
    } while (0)

#endif
