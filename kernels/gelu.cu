// gelu.cu — GELU, elementwise: the tanh approximation (GPT-2/StarCoder's, ggml_gelu's) and the
// exact erf form (BERT's, HF's "gelu"), one kernel with the form as a template flag.
#include "gelu.h"

#include "common.cuh"

template <typename T, bool EXACT> static __global__ void gelu_kernel(const T *x, T *out, int64_t n)
{
    const float c = 0.7978845608028654f; // sqrt(2/pi)
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = kn_to_f32(x[i]);
        const float y = EXACT ? 0.5f * v * (1.0f + erff(v * 0.70710678118654752f))
                              : 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
        out[i] = kn_from_f32<T>(y);
    }
}

template <bool EXACT>
static kn_status gelu_launch(kn_dtype dt, const void *x, void *out, int64_t n, cudaStream_t st)
{
    KN_REQUIRE(x && out, "gelu: null pointer");
    KN_REQUIRE(n >= 0, "gelu: n %lld", (long long)n);
    if (n == 0)
        return KN_OK;
    // grid: enough 256-thread CTAs to cover n, at most 64k (grid-stride beyond)
    const unsigned blocks = (unsigned)(n / 256 + 1 < 65536 ? n / 256 + 1 : 65536);
    if (dt == KN_DTYPE_F16)
        KN_LAUNCH(blocks, 256, 0, st, gelu_kernel<__half, EXACT>)(
            (const __half *)x, (__half *)out, n);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH(blocks, 256, 0, st, gelu_kernel<__nv_bfloat16, EXACT>)(
            (const __nv_bfloat16 *)x, (__nv_bfloat16 *)out, n);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "gelu: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}

extern "C" kn_status kn_gelu(kn_dtype dt, const void *x, void *out, int64_t n, cudaStream_t st)
{
    return gelu_launch<false>(dt, x, out, n, st);
}

extern "C" kn_status kn_gelu_erf(kn_dtype dt, const void *x, void *out, int64_t n,
                                 cudaStream_t st)
{
    return gelu_launch<true>(dt, x, out, n, st);
}
