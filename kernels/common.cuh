// common.cuh — what every kernel shares: the CUDA/cuBLAS checking macros, argument checks,
// fp16/bf16 <-> fp32 conversion, 16-byte vector loads, and warp/block reductions.
#ifndef SERVAL_KN_COMMON_CUH
#define SERVAL_KN_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kn_status.h"

// Record a failure in the thread's last-error buffer (status.cu) and return the status.
kn_status kn_record_cuda(cudaError_t e, const char *expr, const char *file, int line);
kn_status kn_record_cublas(cublasStatus_t e, const char *expr, const char *file, int line);
kn_status kn_record(kn_status s, const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

// The one CUDA check: records expression, file, line and device, returns from the launcher.
#define KN_CUDA_CHECK(expr)                                                                  \
    do {                                                                                     \
        cudaError_t kn_e_ = (expr);                                                          \
        if (kn_e_ != cudaSuccess)                                                            \
            return kn_record_cuda(kn_e_, #expr, __FILE__, __LINE__);                         \
    } while (0)
// Launches `kernel` (the last argument, so template arguments may hold commas) with a grid,
// block, dynamic shared memory size and stream; the call's arguments follow:
//     KN_LAUNCH(grid, 256, 0, st, my_kernel<T>)(x, n);
// One spelling for nvcc (a <<<>>> launch) and the CPU emulator (kernels/emu/cuda_emu.h,
// force-included in SERVAL_CUDA_EMU builds, whose host compiler cannot parse <<<>>>).
#ifdef SERVAL_CUDA_EMU
#define KN_LAUNCH(grid, block, smem, stream, ...)                                            \
    kn_emu::make_launcher([](auto &...kn_a_) { __VA_ARGS__(kn_a_...); }, grid, block, smem,   \
                          stream, #__VA_ARGS__, __FILE__, __LINE__)
// Dynamic shared memory: `extern __shared__` under nvcc, the launch's buffer in the emulator.
#define KN_DYN_SMEM(type, name) type *const name = (type *)kn_emu::dyn_smem()
#else
#define KN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define KN_DYN_SMEM(type, name) extern __shared__ __align__(16) type name[]
#endif
// After every kernel launch: catches bad launch configurations at once.
#define KN_LAUNCH_CHECK() KN_CUDA_CHECK(cudaGetLastError())
#define KN_CUBLAS_CHECK(expr)                                                                \
    do {                                                                                     \
        cublasStatus_t kn_e_ = (expr);                                                       \
        if (kn_e_ != CUBLAS_STATUS_SUCCESS)                                                  \
            return kn_record_cublas(kn_e_, #expr, __FILE__, __LINE__);                       \
    } while (0)
// Argument checks in launchers: what came from the caller is validated, never asserted.
#define KN_REQUIRE(cond, ...)                                                                \
    do {                                                                                     \
        if (!(cond))                                                                         \
            return kn_record(KN_ERR_INVALID, __FILE__, __LINE__, __VA_ARGS__);               \
    } while (0)
#define KN_ALIGNED(p, n) ((((uintptr_t)(p)) % (n)) == 0)

// ---- element conversion ------------------------------------------------------------------
__device__ __forceinline__ float kn_to_f32(float x) { return x; }
__device__ __forceinline__ float kn_to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float kn_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T kn_from_f32(float x);
template <> __device__ __forceinline__ float kn_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half kn_from_f32<__half>(float x)
{
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 kn_from_f32<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

// Loads 8 consecutive 16-bit elements (one 16-byte access; p must be 16-byte aligned).
template <typename T> __device__ __forceinline__ void kn_load8(const T *p, float out[8])
{
    static_assert(sizeof(T) == 2, "kn_load8 takes 16-bit elements");
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const T *e = reinterpret_cast<const T *>(&u);
#pragma unroll
    for (int i = 0; i < 8; i++)
        out[i] = kn_to_f32(e[i]);
}

// Stores 8 values as 16-bit elements in one 16-byte access.
template <typename T> __device__ __forceinline__ void kn_store8(T *p, const float in[8])
{
    static_assert(sizeof(T) == 2, "kn_store8 takes 16-bit elements");
    uint4 u;
    T *e = reinterpret_cast<T *>(&u);
#pragma unroll
    for (int i = 0; i < 8; i++)
        e[i] = kn_from_f32<T>(in[i]);
    *reinterpret_cast<uint4 *>(p) = u;
}

// Threads for a kernel with one CTA per row of d elements: d rounded up to a whole warp, at
// most 256 (small rows, e.g. the tiny test models' 64, leave no idle warps in a block sum).
static inline unsigned kn_row_threads(int64_t d)
{
    return d >= 256 ? 256u : (unsigned)((d + 31) / 32 * 32);
}

// ---- reductions --------------------------------------------------------------------------
// Over `width` consecutive lanes (a power of two ≤ 32); every lane gets the result.
template <int width = 32> __device__ __forceinline__ float kn_warp_sum(float v)
{
#pragma unroll
    for (int o = width / 2; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o, width);
    return v;
}

template <int width = 32> __device__ __forceinline__ float kn_warp_max(float v)
{
#pragma unroll
    for (int o = width / 2; o > 0; o /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o, width));
    return v;
}

// Block-wide sum/max; blockDim.x a multiple of 32 (≤ 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory, reusable after the call returns.
__device__ __forceinline__ float kn_block_sum(float v, float *scratch)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = kn_warp_sum(v);
    __syncthreads(); // the previous use of scratch is over
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.0f;
    return kn_warp_sum(v);
}

__device__ __forceinline__ float kn_block_max(float v, float *scratch)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = kn_warp_max(v);
    __syncthreads();
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : -INFINITY;
    return kn_warp_max(v);
}

// Number of multiprocessors of the current device (launchers size split-K grids with it).
static inline int kn_sm_count(void)
{
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        cudaGetLastError();
        return 132;
    }
    return n;
}

#endif
