/* cuda_util.c — CUDA and kernel failures as eng_status, device allocation (cuda_util.h). */
#include "cuda_util.h"

eng_status cuda_fail(eng_err *err, const char *what, cudaError_t e)
{
    return eng_fail(err, e == cudaErrorMemoryAllocation ? ENG_ERR_NOMEM : ENG_ERR_CUDA,
                    "%s: %s", what, cudaGetErrorString(e));
}

eng_status cuda_kn_fail(eng_err *err, const char *what, kn_status s)
{
    return eng_fail(err, s == KN_ERR_NOMEM ? ENG_ERR_NOMEM : ENG_ERR_CUDA, "%s: %s (%s)", what,
                    kn_status_str(s), kn_last_error());
}

eng_status cuda_dev_alloc(void **p, size_t bytes, const char *what, eng_err *err)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        return eng_fail(err, ENG_ERR_NOMEM, "%s: allocating %zu bytes on the GPU: %s", what,
                        bytes, cudaGetErrorString(e));
    }
    return ENG_OK;
}
