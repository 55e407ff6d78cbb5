/* layernorm.c — reference LayerNorm with the residual add fused in front of it. */
#include <math.h>

#include "ref.h"

void kn_ref_layernorm(kn_dtype dt, float *resid, const void *add, const void *weight,
                      const void *bias, void *out, int64_t n, int64_t d, float eps)
{
    for (int64_t i = 0; i < n; i++) {
        float *x = resid + i * d;
        double s = 0.0;
        for (int64_t j = 0; j < d; j++) {
            if (add)
                x[j] += kn_ref_load(dt, add, (size_t)(i * d + j));
            s += x[j];
        }
        const double mean = s / (double)d;
        double var = 0.0;
        for (int64_t j = 0; j < d; j++)
            var += ((double)x[j] - mean) * ((double)x[j] - mean);
        const float r = (float)(1.0 / sqrt(var / (double)d + eps));
        for (int64_t j = 0; j < d; j++) {
            const float y = ((float)(x[j] - mean)) * r * kn_ref_load(dt, weight, (size_t)j) +
                            kn_ref_load(dt, bias, (size_t)j);
            kn_ref_store(dt, out, (size_t)(i * d + j), y);
        }
    }
}
