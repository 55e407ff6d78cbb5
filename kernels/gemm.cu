// gemm.cu — activations × weightsᵀ through cuBLAS (cublasGemmEx, which dispatches to
// cuBLASLt's kernels) in bf16/fp16 with fp32 accumulation; the handle owns its workspace so
// products can be captured in CUDA graphs.
#include "gemm.h"

#include <stdlib.h>

#include "common.cuh"

enum { GEMM_WORKSPACE_BYTES = 32 << 20 }; // what cuBLAS asks for on Hopper

struct kn_gemm {
    cublasHandle_t handle;
    void *workspace;    // [GEMM_WORKSPACE_BYTES] device
    cudaStream_t bound; // the stream the handle is set to (with our workspace)
    bool bound_once;
};

extern "C" kn_status kn_gemm_create(kn_gemm **out)
{
    KN_REQUIRE(out, "gemm_create: null out");
    *out = NULL;
    kn_gemm *g = (kn_gemm *)calloc(1, sizeof *g);
    if (!g)
        return kn_record(KN_ERR_NOMEM, __FILE__, __LINE__, "gemm_create: out of host memory");
    kn_status s = KN_OK;
    cublasStatus_t cs = cublasCreate(&g->handle);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        s = kn_record_cublas(cs, "cublasCreate(&g->handle)", __FILE__, __LINE__);
        g->handle = NULL;
        goto fail;
    }
    {
        cudaError_t e = cudaMalloc(&g->workspace, GEMM_WORKSPACE_BYTES);
        if (e != cudaSuccess) {
            s = kn_record_cuda(e, "cudaMalloc(&g->workspace)", __FILE__, __LINE__);
            g->workspace = NULL;
            goto fail;
        }
    }
    cs = cublasSetWorkspace(g->handle, g->workspace, GEMM_WORKSPACE_BYTES);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        s = kn_record_cublas(cs, "cublasSetWorkspace", __FILE__, __LINE__);
        goto fail;
    }
    *out = g;
    return KN_OK;
fail:
    kn_gemm_free(g);
    return s;
}

extern "C" void kn_gemm_free(kn_gemm *g)
{
    if (!g)
        return;
    if (g->handle)
        cublasDestroy(g->handle);
    cudaFree(g->workspace);
    free(g);
}

static cudaDataType_t cuda_type(kn_dtype t)
{
    return t == KN_DTYPE_F16 ? CUDA_R_16F : t == KN_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

extern "C" kn_status kn_gemm_run(kn_gemm *g, cudaStream_t st, kn_dtype idt, const void *X,
                                 int64_t ldx, const void *W, int64_t ldw, kn_dtype odt, void *C,
                                 int64_t ldc, int64_t m, int64_t n, int64_t k, float alpha,
                                 float beta)
{
    KN_REQUIRE(g && X && W && C, "gemm: null pointer");
    KN_REQUIRE(idt == KN_DTYPE_F16 || idt == KN_DTYPE_BF16, "gemm: input dtype %d", (int)idt);
    KN_REQUIRE(odt == idt || odt == KN_DTYPE_F32, "gemm: output dtype %d for input %d", (int)odt,
               (int)idt);
    KN_REQUIRE(m >= 0 && n > 0 && k > 0 && m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX,
               "gemm: shape m %lld n %lld k %lld", (long long)m, (long long)n, (long long)k);
    KN_REQUIRE(ldx >= k && ldw >= k && ldc >= n && ldx <= INT32_MAX && ldw <= INT32_MAX &&
                   ldc <= INT32_MAX,
               "gemm: strides ldx %lld ldw %lld ldc %lld", (long long)ldx, (long long)ldw,
               (long long)ldc);
    if (m == 0)
        return KN_OK;
    // cublasSetStream also puts the handle back on cuBLAS's default workspace pool, which may
    // allocate; a graph capture must not: rebind our workspace whenever the stream changes
    if (!g->bound_once || g->bound != st) {
        KN_CUBLAS_CHECK(cublasSetStream(g->handle, st));
        KN_CUBLAS_CHECK(cublasSetWorkspace(g->handle, g->workspace, GEMM_WORKSPACE_BYTES));
        g->bound = st;
        g->bound_once = true;
    }
    // Row-major C[m, n] = X[m, k] · W[n, k]^T is column-major C^T[n, m] = W^T... i.e. cuBLAS
    // sees W as a k×n column-major matrix to transpose and X as k×m untransposed.
    KN_CUBLAS_CHECK(cublasGemmEx(g->handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k,
                                 &alpha, W, cuda_type(idt), (int)ldw, X, cuda_type(idt), (int)ldx,
                                 &beta, C, cuda_type(odt), (int)ldc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
    return KN_OK;
}
