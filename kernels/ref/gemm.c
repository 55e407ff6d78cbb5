/* gemm.c — reference matrix product C = alpha * X · W^T + beta * C with fp32 accumulation. */
#include "ref.h"

void kn_ref_gemm(kn_dtype idt, const void *X, const void *W, kn_dtype odt, void *C, int64_t m,
                 int64_t n, int64_t k, float alpha, float beta)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t l = 0; l < k; l++)
                acc += kn_ref_load(idt, X, (size_t)(i * k + l)) *
                       kn_ref_load(idt, W, (size_t)(j * k + l));
            const size_t o = (size_t)(i * n + j);
            float c = alpha * acc;
            if (beta != 0.0f)
                c += beta * kn_ref_load(odt, C, o);
            kn_ref_store(odt, C, o, c);
        }
}
