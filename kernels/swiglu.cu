// swiglu.cu — SwiGLU: out = silu(gate) * up, elementwise over a grid-stride loop.
#include "swiglu.h"

#include "common.cuh"

template <typename T>
static __global__ void swiglu_kernel(const T *gate, const T *up, int64_t in_stride, T *out,
                                     int64_t out_stride, int64_t n, int64_t ff)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * ff;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / ff, j = e % ff;
        const float g = kn_to_f32(gate[i * in_stride + j]), u = kn_to_f32(up[i * in_stride + j]);
        out[i * out_stride + j] = kn_from_f32<T>(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" kn_status kn_swiglu(kn_dtype dt, const void *gate, const void *up, int64_t in_stride,
                               void *out, int64_t out_stride, int64_t n, int64_t ff,
                               cudaStream_t st)
{
    KN_REQUIRE(gate && up && out, "swiglu: null pointer");
    KN_REQUIRE(n >= 0 && ff > 0 && in_stride >= ff && out_stride >= ff,
               "swiglu: bad shape n %lld ff %lld strides %lld %lld", (long long)n, (long long)ff,
               (long long)in_stride, (long long)out_stride);
    if (n == 0)
        return KN_OK;
    const int64_t total = n * ff;
    // grid: enough 256-thread CTAs to cover the elements, at most 64k (grid-stride beyond)
    const unsigned blocks = (unsigned)(total / 256 + 1 < 65536 ? total / 256 + 1 : 65536);
    if (dt == KN_DTYPE_F16)
        KN_LAUNCH(blocks, 256, 0, st, swiglu_kernel)(
            (const __half *)gate, (const __half *)up, in_stride, (__half *)out, out_stride, n, ff);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH(blocks, 256, 0, st, swiglu_kernel)(
            (const __nv_bfloat16 *)gate, (const __nv_bfloat16 *)up, in_stride, (__nv_bfloat16 *)out,
            out_stride, n, ff);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "swiglu: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
