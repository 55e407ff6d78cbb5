// emu_cublas.cpp — the cuBLAS subset Serval uses, for the CPU emulator: handles, stream and
// workspace, and cublasGemmEx with real column-major BLAS semantics (op(A) m×k, op(B) k×n,
// leading dimensions, alpha/beta, fp16/bf16/fp32 storage, fp32 accumulation in k order).
// Arguments are validated as cuBLAS does, and each matrix's extent must lie inside one device
// allocation, so a layout mistake in a caller fails here instead of reading neighbours.
// Not emulated: cuBLAS's algorithms, tensor cores and their summation order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <string.h>

#include "emu_impl.h"

struct cublasContext {
    cudaStream_t st = nullptr;
    void *ws = nullptr;
    size_t ws_bytes = 0;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
    cublasPointerMode_t pm = CUBLAS_POINTER_MODE_HOST;
};

using namespace kn_emu;
#define API_LOCK KN_EMU_API_LOCK

namespace {

size_t type_size(cudaDataType t)
{
    switch (t) {
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    case CUDA_R_32F: return 4;
    default: return 0;
    }
}

float load(cudaDataType t, const void *p, int64_t i)
{
    switch (t) {
    case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
    case CUDA_R_16BF: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

void store(cudaDataType t, void *p, int64_t i, float v)
{
    switch (t) {
    case CUDA_R_16F: ((__half *)p)[i] = __float2half_rn(v); break;
    case CUDA_R_16BF: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

// Does the column-major rows×cols matrix at p (leading dimension ld) lie in one allocation?
bool extent_ok(const char *name, const void *p, cudaDataType t, int rows, int cols, int ld)
{
    if (rows == 0 || cols == 0)
        return true;
    const size_t bytes = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * type_size(t);
    bool whole = true;
    if (p && mem_where(p, bytes, &whole) == MEM_DEVICE && whole)
        return true;
    say("cublasGemmEx: %s (%p, %d x %d, ld %d, %zu bytes) is not inside one device allocation",
        name, p, rows, cols, ld, bytes);
    return false;
}

struct gemm_args {
    bool ta, tb;
    int m, n, k, lda, ldb, ldc;
    const void *A, *B;
    void *C;
    cudaDataType at, bt, ct;
    float alpha, beta;
    const float *dalpha, *dbeta; // device pointer mode: read when the GEMM runs
};

// A row of op(A) or a column of op(B) as transa/transb lay it out: `step` elements apart
// along k, `next` elements to the following row (column).
struct strided {
    cudaDataType t;
    const void *p;
    int64_t step, next; // along k, and to the next row (op(A)) or column (op(B))
};

// fp16 -> fp32 for every bit pattern (the conversion dominates a GEMM over fp16 weights)
const float *f16_table()
{
    static const float *t = [] {
        float *v = new float[65536];
        for (uint32_t i = 0; i < 65536; i++) {
            __half_raw r;
            r.x = (unsigned short)i;
            v[i] = __half2float(__half(r));
        }
        return v;
    }();
    return t;
}

void fetch(const strided &s, int64_t row, int k, float *out)
{
    const int64_t base = row * s.next, st = s.step;
    switch (s.t) {
    case CUDA_R_32F: {
        const float *p = (const float *)s.p + base;
        for (int l = 0; l < k; l++)
            out[l] = p[l * st];
        break;
    }
    case CUDA_R_16BF: { // bf16 is fp32's top half
        const uint16_t *p = (const uint16_t *)s.p + base;
        for (int l = 0; l < k; l++) {
            const uint32_t u = (uint32_t)p[l * st] << 16;
            memcpy(&out[l], &u, 4);
        }
        break;
    }
    default: {
        const uint16_t *p = (const uint16_t *)s.p + base;
        const float *t = f16_table();
        for (int l = 0; l < k; l++)
            out[l] = t[p[l * st]];
        break;
    }
    }
}

// Eight partial sums in a fixed order: fp32 accumulation, like cuBLAS (whose order differs).
float dot(const float *x, const float *y, int k)
{
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int l = 0;
    for (; l + 8 <= k; l += 8)
        for (int u = 0; u < 8; u++)
            acc[u] += x[l + u] * y[l + u];
    for (; l < k; l++)
        acc[l % 8] += x[l] * y[l];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

cudaError_t gemm_run(const gemm_args &g)
{
    const float alpha = g.dalpha ? *g.dalpha : g.alpha, beta = g.dbeta ? *g.dbeta : g.beta;
    const strided sa{g.at, g.A, g.ta ? 1 : (int64_t)g.lda, g.ta ? (int64_t)g.lda : 1};
    const strided sb{g.bt, g.B, g.tb ? (int64_t)g.ldb : 1, g.tb ? 1 : (int64_t)g.ldb};
    // every column of op(B) once, then one row of op(A) at a time against all of them
    std::vector<float> b((size_t)g.n * g.k), a((size_t)g.k);
    for (int j = 0; j < g.n; j++)
        fetch(sb, j, g.k, &b[(size_t)j * g.k]);
    for (int i = 0; i < g.m; i++) {
        fetch(sa, i, g.k, a.data());
        for (int j = 0; j < g.n; j++) {
            const float acc = dot(a.data(), &b[(size_t)j * g.k], g.k);
            const int64_t c = (int64_t)j * g.ldc + i;
            // beta == 0: C is not read (it may hold NaN), as BLAS specifies
            store(g.ct, g.C, c, beta == 0.0f ? alpha * acc : alpha * acc + beta * load(g.ct, g.C, c));
        }
    }
    return cudaSuccess;
}

} // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
    if (!h)
        return CUBLAS_STATUS_INVALID_VALUE;
    *h = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    API_LOCK;
    flush(); // queued GEMMs do not use the handle, but cuBLAS synchronises here too
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t st)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    API_LOCK;
    if (!stream_of(st))
        return CUBLAS_STATUS_INVALID_VALUE;
    h->st = st;
    h->ws = nullptr; // as documented: back to cuBLAS's default workspace pool
    h->ws_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t h, cudaStream_t *st)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!st)
        return CUBLAS_STATUS_INVALID_VALUE;
    *st = h->st;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t bytes)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    API_LOCK;
    bool whole = true;
    if (bytes && (!ws || (uintptr_t)ws % 256 || mem_where(ws, bytes, &whole) != MEM_DEVICE || !whole)) {
        say("cublasSetWorkspace(%p, %zu): not 256-byte aligned device memory of that size", ws, bytes);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    h->ws = ws;
    h->ws_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t *mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return CUBLAS_STATUS_INVALID_VALUE;
    h->pm = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t *mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->pm;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
    }
    return "unknown error";
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb,
                            int m, int n, int k, const void *alpha, const void *A,
                            cudaDataType Atype, int lda, const void *B, cudaDataType Btype,
                            int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    API_LOCK;
    const bool ops_ok = (transa == CUBLAS_OP_N || transa == CUBLAS_OP_T || transa == CUBLAS_OP_C) &&
                        (transb == CUBLAS_OP_N || transb == CUBLAS_OP_T || transb == CUBLAS_OP_C);
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    if (m < 0 || n < 0 || k < 0 || !ops_ok || lda < (a_rows > 1 ? a_rows : 1) ||
        ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1) || !alpha || !beta) {
        say("cublasGemmEx: invalid value (m %d n %d k %d, trans %d/%d, lda %d ldb %d ldc %d; "
            "lda must be >= %d, ldb >= %d, ldc >= %d)", m, n, k, (int)transa, (int)transb, lda,
            ldb, ldc, a_rows, b_rows, m);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const bool half_in = (Atype == CUDA_R_16F || Atype == CUDA_R_16BF) && Btype == Atype &&
                         (Ctype == Atype || Ctype == CUDA_R_32F);
    const bool f32 = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
    const bool c32 = compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                     compute == CUBLAS_COMPUTE_32F_FAST_16F || compute == CUBLAS_COMPUTE_32F_FAST_16BF ||
                     compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    if (!(half_in || f32) || !c32) {
        say("cublasGemmEx: types A %d B %d C %d with compute type %d are not supported",
            (int)Atype, (int)Btype, (int)Ctype, (int)compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    gemm_args g{ta, tb, m, n, k, lda, ldb, ldc, A, B, C, Atype, Btype, Ctype, 0, 0, nullptr, nullptr};
    if (h->pm == CUBLAS_POINTER_MODE_HOST) { // host scalars are read now: a graph keeps them
        g.alpha = *(const float *)alpha;
        g.beta = *(const float *)beta;
    } else {
        g.dalpha = (const float *)alpha;
        g.dbeta = (const float *)beta;
    }
    op o{[g] { return gemm_run(g); }, "cublasGemmEx"};
    CUstream_st *cs = stream_of(h->st);
    static bool warned;
    if (cs && cs->cap && !h->ws && !warned) {
        say("cublasGemmEx captured with cuBLAS's default workspace (cublasSetStream resets the "
            "one cublasSetWorkspace set): real cuBLAS may allocate it inside the capture");
        warned = true;
    }
    if (!extent_ok("A", A, Atype, a_rows, a_cols, lda) || !extent_ok("B", B, Btype, b_rows, b_cols, ldb) ||
        !extent_ok("C", C, Ctype, m, n, ldc))
        o.run = [] { return cudaErrorIllegalAddress; }; // what the GPU would report
    return submit(h->st, std::move(o)) == cudaSuccess ? CUBLAS_STATUS_SUCCESS
                                                       : CUBLAS_STATUS_EXECUTION_FAILED;
}

} // extern "C"
