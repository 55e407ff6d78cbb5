// layernorm.cu — LayerNorm with the residual add fused in: one CTA per row, two-pass
// (mean, then squared deviations) fp32 statistics.
#include "layernorm.h"

#include "common.cuh"

template <typename T>
static __global__ void layernorm_kernel(float *resid, const T *add, const T *weight,
                                        const T *bias, T *out, int64_t d, float eps)
{
    __shared__ float scratch[32];
    float *x = resid + blockIdx.x * d;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        float v = x[j];
        if (add) {
            v += kn_to_f32(add[blockIdx.x * d + j]);
            x[j] = v;
        }
        s += v;
    }
    const float mean = kn_block_sum(s, scratch) / (float)d;
    float var = 0.0f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
        var += (x[j] - mean) * (x[j] - mean);
    const float r = rsqrtf(kn_block_sum(var, scratch) / (float)d + eps);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
        out[blockIdx.x * d + j] =
            kn_from_f32<T>((x[j] - mean) * r * kn_to_f32(weight[j]) + kn_to_f32(bias[j]));
}

extern "C" kn_status kn_layernorm(kn_dtype dt, float *resid, const void *add, const void *weight,
                                  const void *bias, void *out, int64_t n, int64_t d, float eps,
                                  cudaStream_t st)
{
    KN_REQUIRE(resid && weight && bias && out, "layernorm: null pointer");
    KN_REQUIRE(n >= 0 && n < (1ll << 31) && d > 0, "layernorm: bad shape n %lld d %lld",
               (long long)n, (long long)d);
    if (n == 0)
        return KN_OK;
    // grid: one CTA per row, d rounded up to a warp but at most 256 threads
    if (dt == KN_DTYPE_F16)
        KN_LAUNCH((unsigned)n, kn_row_threads(d), 0, st, layernorm_kernel)(
            resid, (const __half *)add, (const __half *)weight, (const __half *)bias,
            (__half *)out, d, eps);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH((unsigned)n, kn_row_threads(d), 0, st, layernorm_kernel)(
            resid, (const __nv_bfloat16 *)add, (const __nv_bfloat16 *)weight,
            (const __nv_bfloat16 *)bias, (__nv_bfloat16 *)out, d, eps);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "layernorm: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
