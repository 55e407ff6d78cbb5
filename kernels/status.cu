// status.cu — the per-thread record of the last failing launcher (kn_last_error) and the CUDA/cuBLAS check helpers.
#include "common.cuh"

#include <stdarg.h>
#include <stdio.h>

// Thread-local like errno: launchers run on the engine's step thread, tests in forked workers.
static thread_local char kn_err_buf[512];

/* kn_status_str and kn_dtype_size are plain C (kernels/kn_status.c): CPU-only builds use them. */

extern "C" const char *kn_last_error(void) { return kn_err_buf; }

kn_status kn_record_cuda(cudaError_t e, const char *expr, const char *file, int line)
{
    int dev = -1;
    cudaGetDevice(&dev);
    snprintf(kn_err_buf, sizeof kn_err_buf, "%s:%d: device %d: %s: %s (%d)", file, line, dev,
             expr, cudaGetErrorString(e), (int)e);
    return e == cudaErrorMemoryAllocation ? KN_ERR_NOMEM : KN_ERR_CUDA;
}

kn_status kn_record_cublas(cublasStatus_t e, const char *expr, const char *file, int line)
{
    int dev = -1;
    cudaGetDevice(&dev);
    snprintf(kn_err_buf, sizeof kn_err_buf, "%s:%d: device %d: %s: %s (%d)", file, line, dev,
             expr, cublasGetStatusString(e), (int)e);
    return e == CUBLAS_STATUS_ALLOC_FAILED ? KN_ERR_NOMEM : KN_ERR_CUDA;
}

kn_status kn_record(kn_status s, const char *file, int line, const char *fmt, ...)
{
    int n = snprintf(kn_err_buf, sizeof kn_err_buf, "%s:%d: ", file, line);
    if (n < 0 || (size_t)n >= sizeof kn_err_buf)
        return s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kn_err_buf + n, sizeof kn_err_buf - (size_t)n, fmt, ap);
    va_end(ap);
    return s;
}
