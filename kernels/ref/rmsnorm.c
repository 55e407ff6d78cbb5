/* rmsnorm.c — reference RMSNorm with the residual add fused in front of it. */
#include <math.h>

#include "ref.h"

void kn_ref_rmsnorm(kn_dtype dt, float *resid, const void *add, const void *weight, void *out,
                    int64_t n, int64_t d, float eps)
{
    for (int64_t i = 0; i < n; i++) {
        float *x = resid + i * d;
        double ss = 0.0;
        for (int64_t j = 0; j < d; j++) {
            if (add)
                x[j] += kn_ref_load(dt, add, (size_t)(i * d + j));
            ss += (double)x[j] * x[j];
        }
        const float r = (float)(1.0 / sqrt(ss / (double)d + eps));
        for (int64_t j = 0; j < d; j++)
            kn_ref_store(dt, out, (size_t)(i * d + j), x[j] * r * kn_ref_load(dt, weight, (size_t)j));
    }
}
