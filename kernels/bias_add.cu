// bias_add.cu — x[i, j] += bias[j] in place over a grid-stride loop: one fp32 add, rounded
// once to the row's dtype (bit-exact with kernels/ref/bias_add.c).
#include "bias_add.h"

#include "common.cuh"

template <typename T>
static __global__ void bias_add_kernel(T *x, int64_t stride, const float *bias, int64_t n,
                                       int64_t width)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * width;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / width, j = e % width;
        x[i * stride + j] = kn_from_f32<T>(__fadd_rn(kn_to_f32(x[i * stride + j]), bias[j]));
    }
}

extern "C" kn_status kn_bias_add(kn_dtype dt, void *x, int64_t stride, const float *bias,
                                 int64_t n, int64_t width, cudaStream_t st)
{
    KN_REQUIRE(x && bias, "bias_add: null pointer");
    KN_REQUIRE(n >= 0 && width > 0 && stride >= width && n <= INT64_MAX / stride,
               "bias_add: bad shape n %lld width %lld stride %lld", (long long)n,
               (long long)width, (long long)stride);
    if (n == 0)
        return KN_OK;
    const int64_t total = n * width;
    // grid: enough 256-thread CTAs to cover the elements, at most 64k (grid-stride beyond)
    const unsigned blocks = (unsigned)(total / 256 + 1 < 65536 ? total / 256 + 1 : 65536);
    if (dt == KN_DTYPE_F16)
        KN_LAUNCH(blocks, 256, 0, st, bias_add_kernel)((__half *)x, stride, bias, n, width);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH(blocks, 256, 0, st, bias_add_kernel)((__nv_bfloat16 *)x, stride, bias, n, width);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "bias_add: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
