// rmsnorm.cu — RMSNorm with the residual add fused in: one CTA per row, fp32 statistics.
#include "rmsnorm.h"

#include "common.cuh"

template <typename T>
static __global__ void rmsnorm_kernel(float *resid, const T *add, const T *weight, T *out,
                                      int64_t d, float eps)
{
    __shared__ float scratch[32];
    float *x = resid + blockIdx.x * d;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        float v = x[j];
        if (add) {
            v += kn_to_f32(add[blockIdx.x * d + j]);
            x[j] = v; // the next pass reads back only what this thread wrote
        }
        ss += v * v;
    }
    ss = kn_block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)d + eps);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
        out[blockIdx.x * d + j] = kn_from_f32<T>(x[j] * r * kn_to_f32(weight[j]));
}

extern "C" kn_status kn_rmsnorm(kn_dtype dt, float *resid, const void *add, const void *weight,
                                void *out, int64_t n, int64_t d, float eps, cudaStream_t st)
{
    KN_REQUIRE(resid && weight && out, "rmsnorm: null pointer");
    KN_REQUIRE(n >= 0 && n < (1ll << 31) && d > 0, "rmsnorm: bad shape n %lld d %lld",
               (long long)n, (long long)d);
    if (n == 0)
        return KN_OK;
    // grid: one CTA per row, d rounded up to a warp but at most 256 threads
    if (dt == KN_DTYPE_F16)
        KN_LAUNCH((unsigned)n, kn_row_threads(d), 0, st, rmsnorm_kernel)(
            resid, (const __half *)add, (const __half *)weight, (__half *)out, d, eps);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH((unsigned)n, kn_row_threads(d), 0, st, rmsnorm_kernel)(
            resid, (const __nv_bfloat16 *)add, (const __nv_bfloat16 *)weight,
            (__nv_bfloat16 *)out, d, eps);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "rmsnorm: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
