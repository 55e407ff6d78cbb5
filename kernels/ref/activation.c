/* activation.c — reference SwiGLU and GELU (tanh approximation and exact erf form). */
#include <math.h>

#include "ref.h"

void kn_ref_swiglu(kn_dtype dt, const void *gate, const void *up, int64_t in_stride, void *out,
                   int64_t out_stride, int64_t n, int64_t ff)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ff; j++) {
            const float g = kn_ref_load(dt, gate, (size_t)(i * in_stride + j));
            const float u = kn_ref_load(dt, up, (size_t)(i * in_stride + j));
            kn_ref_store(dt, out, (size_t)(i * out_stride + j), g / (1.0f + expf(-g)) * u);
        }
}

void kn_ref_gelu(kn_dtype dt, const void *x, void *out, int64_t n)
{
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        const float v = kn_ref_load(dt, x, (size_t)i);
        const float y = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
        kn_ref_store(dt, out, (size_t)i, y);
    }
}

void kn_ref_gelu_erf(kn_dtype dt, const void *x, void *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = kn_ref_load(dt, x, (size_t)i);
        kn_ref_store(dt, out, (size_t)i, 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}
