/* bias_add.c — reference bias add: x[i, j] = round(x[i, j] + bias[j]), one fp32 add. */
#include "ref.h"

void kn_ref_bias_add(kn_dtype dt, void *x, int64_t stride, const float *bias, int64_t n,
                     int64_t width)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < width; j++) {
            const size_t k = (size_t)(i * stride + j);
            kn_ref_store(dt, x, k, kn_ref_load(dt, x, k) + bias[j]);
        }
}
