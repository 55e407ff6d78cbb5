/* quant_avx2.c — AVX2+FMA+F16C kernels for quant.c (placeholder: forwards to the reference). */
#include "quant.h"
#include "quant_impl.h"

#if defined(SERVAL_QUANT_X86)
void quant_avx2_matmul(gguf_dtype wtype, const void *W, int64_t n, int64_t r0, int64_t r1,
                       const void *act, int64_t n_tok, float *y, int64_t ldy)
{
    quant_ref_matmul(wtype, W, n, r0, r1, act, n_tok, y, ldy);
}

void quant_avx2_act_quantize(gguf_dtype wtype, const float *x, void *act, int64_t n)
{
    quant_ref_act_quantize(wtype, x, act, n);
}
#else
typedef int quant_avx2_unused;
#endif
